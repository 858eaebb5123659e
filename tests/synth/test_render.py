"""The photo renderer against the analytic scene (and the real small city)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from tests.synth.test_lidar import BOX, BOX_TOP, GROUND_Z, analytic_scene
from twin.synth.camera import look_rotation, plan_flight, rig_sensors
from twin.synth.model import Surface
from twin.synth.params import PRESETS
from twin.synth.render import RenderResult, pixel_rays, render

SPEC = PRESETS["small"].with_(image_width=240, image_height=180, flight_height=60.0)


@pytest.fixture(scope="module")
def scene():
    return analytic_scene()


@pytest.fixture(scope="module")
def rig(scene):
    """For each rig camera, the shot that sees the box closest to its image centre."""
    shots = plan_flight((-40, -40, 40, 40), SPEC)
    target = np.array([[0.0, 0.0, (GROUND_Z + BOX_TOP) / 2]])

    def off(s):
        uv, z = s.project(target)
        return np.hypot(*(uv[0] - [s.sensor.cx, s.sensor.cy])) if z[0] > 0 else np.inf

    out = {n: min((s for s in shots if s.sensor.name == n), key=off) for n in rig_sensors(SPEC)}
    # the side-looking cameras of strips over this small area look past the box: move
    # them (same orientation) to where they look at it
    for n in ("left", "right"):
        s = out[n]
        axis = s.R[2]
        c = target[0] - axis * (s.centre[2] - target[0, 2]) / -axis[2]
        out[n] = replace(s, centre=c, t=-s.R @ c)
    return out


@pytest.fixture(scope="module")
def renders(scene, rig):
    out = {}
    for name, shot in rig.items():
        t0 = time.perf_counter()
        out[name] = render(scene, shot.sensor, shot)
        dt = time.perf_counter() - t0
        print(f"{name}: {out[name].rays} rays in {dt:.3f} s ({out[name].rays / dt / 1e6:.2f} M/s)")
    return out


def test_result_types(renders):
    r = renders["nadir"]
    assert isinstance(r, RenderResult)
    assert r.image.shape == (SPEC.image_height, SPEC.image_width, 3) and r.image.dtype == np.uint8
    assert r.depth.dtype == np.float32 and r.face_id.dtype == np.int32
    assert r.depth.shape == r.face_id.shape == (SPEC.image_height, SPEC.image_width)


def test_box_points_project_onto_pixels_showing_the_box(scene, rig, renders):
    x0, y0, x1, y1 = BOX
    box_faces = np.flatnonzero(scene.face_building == 0)
    roof = np.flatnonzero(scene.face_surface == Surface.ROOF)
    for name in ("nadir", "forward", "left"):
        shot, r = rig[name], renders[name]
        # the roof corners: the pixel they fall in (or a neighbour, within 1 px) sees the box
        corners = np.array([[x, y, BOX_TOP] for x in (x0, x1) for y in (y0, y1)])
        uv, z = shot.project(corners)
        inside = (uv[:, 0] >= 1) & (uv[:, 0] < shot.sensor.width - 1)
        inside &= (uv[:, 1] >= 1) & (uv[:, 1] < shot.sensor.height - 1) & (z > 0)
        assert inside.sum() >= 2, name
        for u, v in uv[inside]:
            i, j = int(u), int(v)
            patch = r.face_id[j - 1 : j + 2, i - 1 : i + 2]
            assert np.isin(patch, box_faces).any(), (name, u, v)
        # points inside the roof: exactly the roof face at their pixel
        g = np.random.default_rng(0)
        pts = np.column_stack(
            [g.uniform(x0 + 1, x1 - 1, 200), g.uniform(y0 + 1, y1 - 1, 200), np.full(200, BOX_TOP)]
        )
        uv, z = shot.project(pts)
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < shot.sensor.width)
        ok &= (uv[:, 1] >= 0) & (uv[:, 1] < shot.sensor.height)
        ids = r.face_id[uv[ok, 1].astype(int), uv[ok, 0].astype(int)]
        assert ok.sum() > 50
        assert np.isin(ids, roof).mean() > 0.97, name


def test_depth_is_the_distance_to_the_analytic_surface(scene, rig, renders):
    for name in ("nadir", "backward", "right"):
        shot, r = rig[name], renders[name]
        d = pixel_rays(shot.sensor, shot).reshape(r.depth.shape + (3,))
        zaxis = d @ shot.R[2]
        surf = np.where(r.face_id >= 0, scene.face_surface[np.maximum(r.face_id, 0)], 0)
        for label, height in ((Surface.GROUND, GROUND_Z), (Surface.ROOF, BOX_TOP)):
            m = surf == label
            if not m.any():
                continue
            t = (height - shot.centre[2]) / d[..., 2][m]
            expect = t * zaxis[m]
            assert np.abs(r.depth[m] - expect).max() < 1e-4 * expect.max(), (name, label)
        if name == "nadir":
            roof = surf == Surface.ROOF
            assert roof.any()
            assert np.allclose(r.depth[roof], shot.centre[2] - BOX_TOP, rtol=1e-6)


def test_sky_and_shadows(scene, rig, renders):
    # a camera looking at the horizon sees sky in the top rows: inf depth, -1 face, blue
    shot = rig["forward"]
    R = look_rotation(np.array([1.0, 0, -0.6]), [1, 0, 0])
    c = np.array([-40.0, 0.0, 72.0])
    level = replace(shot, name="level", R=R, centre=c, t=-R @ c)
    r = render(scene, level.sensor, level)
    assert (r.face_id[0] == -1).all() and np.isinf(r.depth[0]).all()
    top = r.image[0].astype(int)
    assert (top[:, 2] > top[:, 0]).all()
    assert (r.face_id[-1] >= 0).all() and np.isfinite(r.depth[-1]).all()
    # the box casts its shadow to the north-west (the sun is in the south-east)
    nadir, img = rig["nadir"], renders["nadir"].image.astype(float)
    x0, y0, x1, y1 = BOX
    pts = np.array([[x0 - 2, y1 + 2, GROUND_Z], [x0 - 2, y1 + 16, GROUND_Z]])  # same albedo
    uv, _ = nadir.project(pts)
    lum = [img[int(v), int(u)].mean() for u, v in uv]
    print(f"shadow {lum[0]:.0f} vs lit {lum[1]:.0f}")
    assert lum[0] < 0.7 * lum[1]


def test_supersampling_keeps_depth_and_ids(scene, rig, renders):
    shot = rig["left"]
    r2 = render(scene, shot.sensor, shot, supersample=2)
    r1 = renders["left"]
    assert np.array_equal(r2.face_id, r1.face_id)
    assert np.array_equal(r2.depth, r1.depth)
    diff = np.abs(r2.image.astype(int) - r1.image.astype(int))
    assert 0 < diff.mean() < 10  # edges are smoothed, flat areas unchanged


def test_real_small_city_nadir_and_oblique(small_truth, small_spec):
    # the low, dense flight this test was written for keeps the forward oblique on the city
    spec = small_spec.with_(
        image_width=160,
        image_height=120,
        flight_height=120.0,
        forward_overlap=0.8,
        side_overlap=0.65,
    )
    v = small_truth.vertices
    shots = plan_flight((*v[:, :2].min(0), *v[:, :2].max(0)), spec)
    mid = min(shots, key=lambda s: np.hypot(*s.centre[:2]))
    for shot in [s for s in shots if (s.strip, s.station) == (mid.strip, mid.station)][:2]:
        t0 = time.perf_counter()
        r = render(small_truth, shot.sensor, shot)
        dt = time.perf_counter() - t0
        print(f"city {shot.name}: {r.rays / dt / 1e6:.2f} M rays/s")
        hit = r.face_id >= 0
        assert hit.mean() > 0.6
        # the hit points reproject to their pixel centres, at the depth given
        d = pixel_rays(shot.sensor, shot).reshape(r.depth.shape + (3,))
        cosz = d @ shot.R[2]
        X = shot.centre + d[hit] * (r.depth[hit] / cosz[hit])[:, None]
        uv, z = shot.project(X)
        jj, ii = np.nonzero(hit)
        assert np.abs(uv - np.column_stack([ii + 0.5, jj + 0.5])).max() < 1e-3
        assert np.allclose(z, r.depth[hit], rtol=1e-6)
        assert r.image[hit].std() > 10  # textured, not flat
    assert set(rig_sensors(spec)) >= {"nadir", "forward"}
