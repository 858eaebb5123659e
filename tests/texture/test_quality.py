"""Texture quality against the synthetic truth: held-out photos and seams.

The truth mesh of a survey is textured from every other photo; the textured model,
rendered from the other (held-out) photos' poses, is compared with those photos
(PSNR, SSIM over the pixels showing textured faces). Seams are measured against the
truth: for adjacent near-coplanar faces, the jump between their mean texture colours
minus the jump between their true colours (albedo x the renderer's own sun, sky and
shadows), averaged over chart-boundary pairs and over pairs inside charts. Seams lie
where views stop seeing, next to buildings and trees where the true colour varies
more, so the raw jumps are not comparable; the excess over the truth is.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from twin.synth.truth import read_truth_ply
from twin.texture import TextureParams, read_views, render_textured, ssim, texture_mesh
from twin.texture.render import _FACE_SAMPLES, face_colours
from twin.texture.select import face_adjacency, face_normals
from twin.texture.views import load_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def truth(quality_survey):
    """Mesh, views, true mean colour per face, near-coplanar adjacent pairs."""
    from twin.synth.city import make_city
    from twin.synth.params import SurveySpec
    from twin.synth.render import linear_to_srgb8, shade
    from twin.synth.truth import build_truth

    v, f, _, _ = read_truth_ply(quality_survey / "truth" / "mesh.ply")
    views, _ = read_views(quality_survey / "cameras.json", quality_survey / "images")
    spec = SurveySpec.from_dict(
        json.loads((quality_survey / "survey.json").read_text())["parameters"]
    )
    scene = build_truth(make_city(spec), spec)
    assert np.array_equal(scene.faces, f)
    nrm = face_normals(v, f)
    pts = np.einsum("sk,mkc->msc", _FACE_SAMPLES, v[f]).reshape(-1, 3)
    fid = np.repeat(np.arange(len(f)), len(_FACE_SAMPLES))
    n = nrm[fid]
    # a ray along -normal from 1 m above each sample: the colour a photo would show
    rgb, _ = shade(scene, pts + n, -n, fid, np.ones(len(pts)))
    colour = linear_to_srgb8(rgb).astype(float).reshape(len(f), -1, 3).mean(axis=1)
    pairs, _, _ = face_adjacency(f, len(v))
    cosd = np.einsum("ij,ij->i", nrm[pairs[:, 0]], nrm[pairs[:, 1]])
    return v, f, views, colour, pairs[cosd > np.cos(np.radians(10))], quality_survey


def seam_excess(tm, colour, pairs) -> tuple[float, float]:
    """Mean (texture jump - true jump) over seam pairs and over interior pairs."""
    tc = face_colours(tm)
    lab = tm.labels
    p = pairs[(lab[pairs[:, 0]] >= 0) & (lab[pairs[:, 1]] >= 0)]
    jt = np.abs(tc[p[:, 0]] - tc[p[:, 1]]).mean(axis=1)
    jr = np.abs(colour[p[:, 0]] - colour[p[:, 1]]).mean(axis=1)
    same = lab[p[:, 0]] == lab[p[:, 1]]
    assert (~same).sum() > 200 and same.sum() > 1000
    return float((jt - jr)[~same].mean()), float((jt - jr)[same].mean())


def heldout(tm, views, save=None) -> tuple[float, float, float]:
    """Pooled PSNR, pixel-weighted SSIM and the share of compared pixels."""
    se = n = 0.0
    ss, npx, total = 0.0, 0, 0
    strips = []
    for hv in views:
        img, fid = render_textured(tm.vertices, tm.faces, tm.uv, tm.face_page, tm.pages, hv)
        photo = load_image(hv)
        m = (fid >= 0) & (tm.labels[np.maximum(fid, 0)] >= 0)
        d = (img.astype(float) - photo)[m]
        se += float((d * d).sum())
        n += d.size
        ss += ssim(img, photo, m) * m.sum()
        npx += int(m.sum())
        total += m.size
        if len(strips) < 2 and m.mean() > 0.5:
            strips.append(np.concatenate([img, photo], axis=1))
    if save is not None and strips:
        from PIL import Image

        Image.fromarray(np.concatenate(strips, axis=0)).save(save)
    return 10 * np.log10(255.0**2 / (se / n)), ss / npx, npx / total


def test_heldout_photos_and_seams(truth, tmp_path):
    v, f, views, colour, pairs, _ = truth
    train, held = views[::2], views[1::2]
    tm = texture_mesh(v, f, train)
    png = tmp_path / "heldout.png"  # rendered | photo, two held-out views
    p, s, share = heldout(tm, held, save=png)
    print(f"held-out: PSNR {p:.2f} dB, SSIM {s:.3f} over {share:.0%} of the pixels")
    assert p >= 28.0
    assert s >= 0.80
    assert share > 0.5
    seam, inner = seam_excess(tm, colour, pairs)
    print(f"jump over truth: seams {seam:.2f}, inside charts {inner:.2f} grey levels")
    assert seam - inner < 1.0
    sel = tm.report["selection"]
    assert sel["energy"] < 0.6 * sel["greedy_energy"]


def test_levelling_closes_exposure_steps(truth, tmp_path):
    """Photos with exposures 0.8x / 1x / 1.2x: without levelling every seam is a step;
    with it the seams are no worse than inside the charts (against the truth)."""
    from PIL import Image

    v, f, views, colour, pairs, survey = truth
    train = views[::2]
    folder = tmp_path / "exposed"
    folder.mkdir()
    for i, vw in enumerate(train):
        gain = (0.8, 1.0, 1.2)[i % 3]
        im = np.clip(load_image(vw).astype(float) * gain, 0, 255).astype(np.uint8)
        Image.fromarray(im).save(folder / f"{vw.name}.png")
    names = {vw.name for vw in train}
    exposed = [x for x in read_views(survey / "cameras.json", folder)[0] if x.name in names]
    raw = texture_mesh(v, f, exposed, TextureParams(levelling="none"))
    lev = texture_mesh(v, f, exposed)
    s0, i0 = seam_excess(raw, colour, pairs)
    s1, i1 = seam_excess(lev, colour, pairs)
    print(f"seam excess: {s0:.2f} -> {s1:.2f} (inside charts {i0:.2f} -> {i1:.2f})")
    assert s0 - i0 > 5.0
    assert s1 - i1 < 1.0
    assert (
        lev.report["levelling"]["seam_jump_after"]
        < 0.3 * lev.report["levelling"]["seam_jump_before"]
    )
