"""Textured LOD tiles: every tile's UVs sample the true colours, parents' images are
downsampled per level with texels matched to the geometric error, 0 validator errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.tiles.test_lod import FRAME, SIZE, height, tiles_of
from twin.errors import InputError
from twin.tiles.lod import Layer, LodParams, read_tile, write_lod_tileset
from twin.tiles.validate import node_validator_path, validate_glb, validate_tileset

TEXEL = 0.5  # metres per texel of the source pages
CHART = 100.0  # metres: the terrain is cut into 4 x 4 charts of this size
MARGIN = 4  # texels of bleeding around each chart in its page
GRAD = 100.0 / 12.0  # largest colour gradient of truth() per metre (grey levels)


def truth(x, y):
    """The true colour (0..255) of the ground at ENU (x, y)."""
    return np.stack(
        [
            128 + 100 * np.sin(x / 15.0),
            128 + 100 * np.cos(y / 12.0),
            128 + 60 * np.sin((x + y) / 20.0),
        ],
        axis=-1,
    )


def textured_layers(n=80):
    """A height field over SIZE x SIZE metres cut into 16 charts (vertices split at
    chart borders), charts 0-7 on page 0 and 8-15 on page 1, each page 4 x 2 charts,
    painted with truth() (bleeding margins included)."""
    g = np.linspace(0.0, SIZE, n + 1)
    x, y = np.meshgrid(g, g)
    v = np.column_stack([x.ravel(), y.ravel(), height(x.ravel(), y.ravel())])
    i = np.arange(n)
    a = (i[None, :] + (n + 1) * i[:, None]).ravel()
    f = np.concatenate(
        [np.column_stack([a, a + 1, a + n + 2]), np.column_stack([a, a + n + 2, a + n + 1])]
    )
    cen = v[f].mean(axis=1)
    chart = np.minimum((cen[:, 0] // CHART), 3) + 4 * np.minimum((cen[:, 1] // CHART), 3)
    side = int(CHART / TEXEL) + 2 * MARGIN
    layers = []
    for page in range(2):
        w, h = 4 * side, 2 * side
        img = np.zeros((h, w, 3))
        verts, faces, uvs = [], [], []
        for c in range(8 * page, 8 * page + 8):
            cx, cy = c % 4, c // 4  # the chart's cell in the city
            slot = c - 8 * page
            ox, oy = (slot % 4) * side + MARGIN, (slot // 4) * side + MARGIN  # in the page
            # page texel centre (px, py) <-> world: x = cx*CHART + (px - ox) * TEXEL
            py, px = np.mgrid[oy - MARGIN : oy - MARGIN + side, ox - MARGIN : ox - MARGIN + side]
            wx = cx * CHART + (px + 0.5 - ox) * TEXEL
            wy = cy * CHART + (py + 0.5 - oy) * TEXEL
            img[py, px] = truth(wx, wy)
            sel = f[chart == c]
            used, inv = np.unique(sel, return_inverse=True)
            vv = v[used]
            uv = np.column_stack(
                [
                    (ox + (vv[:, 0] - cx * CHART) / TEXEL) / w,
                    (oy + (vv[:, 1] - cy * CHART) / TEXEL) / h,
                ]
            )
            base = sum(len(q) for q in verts)
            verts.append(vv)
            faces.append(inv.reshape(-1, 3) + base)
            uvs.append(uv)
        layers.append(
            Layer(
                f"page{page}",
                np.concatenate(verts),
                np.concatenate(faces).astype(np.uint32),
                texcoords=np.concatenate(uvs),
                texture=np.clip(np.rint(img), 0, 255).astype(np.uint8),
            )
        )
    return layers


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("textured") / "tiles"
    layers = textured_layers()
    summary = write_lod_tileset(out, layers, FRAME, params=LodParams(max_faces=3000))
    return out, layers, summary


def bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def tile_texel(p: dict, img: np.ndarray) -> float:
    """Median metres per texel of a tile primitive's faces in its image."""
    t = p["vertices"][p["faces"]]
    a3 = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    q = np.asarray(p["texcoords"], np.float64)[p["faces"]] * [img.shape[1], img.shape[0]]
    e1, e2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    apx = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    ok = apx > 1e-9
    return float(np.median(np.sqrt(a3[ok] / apx[ok])))


def test_tree_validates_and_glbs_are_clean(built):
    out, _, summary = built
    assert validate_tileset(out / "tileset.json") == []
    assert summary["levels"] >= 3
    if not node_validator_path().exists():
        pytest.skip("npm gltf-validator not installed")
    _, tiles = tiles_of(out)
    checked = set()
    for t, level in tiles:  # the root and one tile of every level
        if "content" in t and level not in checked:
            report = validate_glb(out / t["content"]["uri"])
            assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:3]
            checked.add(level)
    assert len(checked) == summary["levels"]


def test_every_tile_samples_the_true_colours(built):
    out, _, _ = built
    _, tiles = tiles_of(out)
    leaves = parents = 0
    for t, _level in tiles:
        if "content" not in t:
            continue
        for p in read_tile(out / t["content"]["uri"]):
            img = np.asarray(Image.open(io.BytesIO(p["texture"])).convert("RGB"), np.float64)
            c = p["vertices"][p["faces"]].mean(axis=1)
            uv = np.asarray(p["texcoords"], np.float64)[p["faces"]].mean(axis=1)
            diff = np.abs(bilinear(img, uv) - truth(c[:, 0], c[:, 1])).max(axis=1)
            texel = tile_texel(p, img)
            # JPEG noise (~3 grey levels here) plus what averaging over a texel shifts
            # a colour by; UVs off by 2 texels give 8 at the leaves, 27 at the root
            tol = 5.0 + 0.5 * GRAD * (texel if "children" in t else 0.0)
            assert np.percentile(diff, 95) <= tol, (t["content"], np.percentile(diff, 95), tol)
            if "children" in t:
                parents += 1
            else:
                leaves += 1
                assert texel == pytest.approx(TEXEL, rel=0.05)  # full resolution (slopes: +1 %)
    assert leaves >= 4 and parents >= 2


def test_images_shrink_per_level_and_texels_follow_the_error(built):
    out, _, summary = built
    by_level = summary["texture_bytes_by_level"]
    assert all(b > 0 for b in by_level)
    assert all(by_level[i] < by_level[i + 1] for i in range(len(by_level) - 1)), by_level
    _, tiles = tiles_of(out)
    ratio = LodParams().texel_error_ratio
    for t, _level in tiles:
        if "content" not in t or "children" not in t:
            continue
        for p in read_tile(out / t["content"]["uri"]):
            img = np.asarray(Image.open(io.BytesIO(p["texture"])))
            texel = tile_texel(p, img)
            assert texel > TEXEL * 1.5  # downsampled
            # texel size matched to the tile's error (simplified faces: +-25 %)
            assert texel == pytest.approx(ratio * t["geometricError"], rel=0.25)
            child_errors = [c["geometricError"] for c in t["children"]]
            assert t["geometricError"] > max(child_errors)
        # and every parent's images weigh less than its children's together
        own = sum(len(p["texture"]) for p in read_tile(out / t["content"]["uri"]))
        kids = sum(
            len(p["texture"]) for c in t["children"] for p in read_tile(out / c["content"]["uri"])
        )
        assert own < 0.6 * kids, (t["content"], own, kids)


def test_leaf_images_are_cropped_to_their_charts(built):
    out, layers, _ = built
    _, tiles = tiles_of(out)
    page_px = sum(la.texture.shape[0] * la.texture.shape[1] for la in layers)
    leaf_px = 0
    for t, _ in tiles:
        if "content" in t and "children" not in t:
            for p in read_tile(out / t["content"]["uri"]):
                img = Image.open(io.BytesIO(p["texture"]))
                leaf_px += img.size[0] * img.size[1]
                assert p["texture_mime"] == "image/jpeg"
                assert np.asarray(p["texcoords"]).min() >= 0
                assert np.asarray(p["texcoords"]).max() <= 1
    # the leaves together hold the pages about once (crops plus their margins)
    assert page_px * 0.9 <= leaf_px <= page_px * 1.5


def test_webp_and_draco_textured_tiles(tmp_path):
    layers = textured_layers(40)
    params = LodParams(max_faces=1500, texture_format="webp", compression="draco")
    s = write_lod_tileset(tmp_path / "t", layers, FRAME, params=params)
    assert validate_tileset(tmp_path / "t" / "tileset.json") == []
    uri = s["written"][-1]  # the root
    doc = json.loads((tmp_path / "t" / "tileset.json").read_text())
    assert doc["root"]["content"]["uri"] == uri
    (p, *_) = read_tile(tmp_path / "t" / uri)
    assert p["texture"][8:12] == b"WEBP" and p["texture_mime"] == "image/webp"
    if node_validator_path().exists():
        assert validate_glb(tmp_path / "t" / uri)["issues"]["numErrors"] == 0


def test_bad_textured_layers(tmp_path):
    (la, _) = textured_layers(10)
    bad = Layer("x", la.vertices, la.faces, texture=la.texture)
    with pytest.raises(InputError, match="needs texcoords"):
        write_lod_tileset(tmp_path / "a", [bad], FRAME)
    bad = Layer("x", la.vertices, la.faces, texcoords=la.texcoords, texture=la.texture[..., 0])
    with pytest.raises(InputError, match="texture must be"):
        write_lod_tileset(tmp_path / "b", [bad], FRAME)
    bad = Layer("x", la.vertices, la.faces, texcoords=la.texcoords[:-1], texture=la.texture)
    with pytest.raises(InputError, match="texcoords must be"):
        write_lod_tileset(tmp_path / "c", [bad], FRAME)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
