"""Constraint edges and tiled triangulation: every constraint segment is a chain of
TIN edges, tiles meet without cracks or T-junctions, and the error bound holds."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from twin.terrain import _kernels, _reference
from twin.terrain.tiled import tile_lines
from twin.terrain.tin import constraint_segments, tin, tin_errors

from .test_tin import check_guarantee, check_mesh, fractal


def edges_of(faces):
    f = np.asarray(faces, dtype=np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def uncovered_segments(verts, faces, pts, seg, tol=1e-6):
    """Segments (pts[i] -> pts[j], same units as verts) not fully covered by TIN edges
    whose both ends lie on them (within tol)."""
    e, _ = edges_of(faces)
    p = verts[:, :2]
    bad = []
    for i, j in seg:
        a, b = pts[i], pts[j]
        d = b - a
        length = float(np.hypot(*d))

        def on(q, a=a, d=d, length=length):
            cross = np.abs(d[0] * (q[:, 1] - a[1]) - d[1] * (q[:, 0] - a[0])) / length
            t = ((q[:, 0] - a[0]) * d[0] + (q[:, 1] - a[1]) * d[1]) / length**2
            return (cross < tol) & (t > -1e-9) & (t < 1 + 1e-9), t

        o0, t0 = on(p[e[:, 0]])
        o1, t1 = on(p[e[:, 1]])
        m = o0 & o1
        iv = np.sort(np.column_stack([t0[m], t1[m]]), axis=1)
        iv = iv[np.argsort(iv[:, 0])]
        end = 0.0
        for s0, s1 in iv:
            if s0 > end + 1e-9:
                break
            end = max(end, s1)
        if end < 1 - 1e-9:
            bad.append((i, j))
    return bad


def random_constraints(seed, size):
    rng = np.random.default_rng(seed)
    lines = [rng.uniform(-5, size + 5, size=(5, 2)) for _ in range(4)]
    polys = [
        shapely.Point(rng.uniform(10, size - 10, 2)).buffer(rng.uniform(3, 10), quad_segs=3)
        for _ in range(5)
    ]
    return lines + polys


@pytest.mark.parametrize("tile_size", [None, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_constraint_segments_become_tin_edges(seed, tile_size):
    h = fractal(97, 97, relief=30.0, seed=seed)
    cons = random_constraints(seed, 96)
    # axis-aligned lines through grid samples, crossing lines, and one on the border
    cons += [
        np.array([[3.0, 20.0], [90.0, 20.0]]),
        np.array([[50.0, 2.0], [50.0, 94.0]]),
        np.array([[0.0, 0.0], [96.0, 0.0]]),
    ]
    verts, faces, reached = tin(h, 0.5, constraints=cons, tile_size=tile_size)
    check_mesh(verts, faces)
    check_guarantee(verts, faces, h, np.ones(h.shape, bool), 0.5, reached)
    pts, seg = constraint_segments(cons, h.shape)
    assert len(seg) > 40
    assert uncovered_segments(verts, faces, pts, seg) == []
    # constraint vertices are TIN vertices, heights bilinear in the DEM
    key = {tuple(v) for v in np.round(verts[:, :2], 9).tolist()}
    assert all(tuple(p) in key for p in np.round(pts, 9).tolist())


def test_constraints_in_map_coordinates_with_a_transform():
    h = fractal(80, 120, relief=40.0, seed=3)
    transform = (0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)  # 0.5 m pixels, north up
    ring = shapely.Polygon([(1010.3, 1980.2), (1040.7, 1978.9), (1035.1, 1965.4), (1012.0, 1967.7)])
    road = shapely.LineString([(995.0, 1990.0), (1070.0, 1962.5)])  # leaves the raster
    verts, faces, reached = tin(h, 0.25, transform=transform, constraints=[ring, road])
    assert reached <= 0.25
    check_mesh(verts, faces)
    clipped = shapely.box(1000.25, 1960.25, 1059.75, 1999.75)  # pixel-centre extent
    for geom in (ring.exterior, road.intersection(clipped)):
        c = np.asarray(geom.coords)
        seg = np.column_stack([np.arange(len(c) - 1), np.arange(1, len(c))])
        assert uncovered_segments(verts, faces, c, seg, tol=1e-6) == []
    # the bound, back in grid units
    gv = np.column_stack([(verts[:, 0] - 1000.0) / 0.5 - 0.5, (2000.0 - verts[:, 1]) / 0.5 - 0.5])
    err, _ = tin_errors(np.column_stack([gv, verts[:, 2]]), faces, h)
    assert np.nanmax(err) <= 0.25 + 1e-9


def test_footprints_of_the_survey_as_constraints(small_survey):
    import geopandas as gpd

    from twin.terrain.dem import read_dem

    dem = read_dem(small_survey / "dem.tif")
    fp = gpd.read_file(small_survey / "footprints.gpkg")
    verts, faces, reached = tin(
        dem.heights, 0.2, transform=dem.transform, constraints=fp, tile_size=64
    )
    assert reached <= 0.2
    check_mesh(verts, faces)
    n = 0
    for geom in fp.geometry:
        for ring in [geom.exterior, *geom.interiors]:
            c = np.asarray(ring.coords)
            seg = np.column_stack([np.arange(len(c) - 1), np.arange(1, len(c))])
            assert uncovered_segments(verts, faces, c, seg, tol=1e-6) == []
            n += len(seg)
    assert n >= 4 * len(fp) > 0


def test_crossing_and_overlapping_constraints():
    h = fractal(41, 41, relief=10.0, seed=7)
    a = np.array([[2.0, 2.0], [38.0, 37.3]])
    b = np.array([[2.5, 37.0], [37.0, 3.1]])
    c = np.array([[10.0, 10.0], [30.0, 30.0]])  # overlaps nothing exactly
    d = np.array([[5.0, 5.0], [20.0, 20.0], [35.0, 35.0]])  # shares part of c
    verts, faces, reached = tin(h, 0.3, constraints=[a, b, c, d])
    check_mesh(verts, faces)
    pts, seg = constraint_segments([a, b, c, d], h.shape)
    assert uncovered_segments(verts, faces, pts, seg) == []
    assert reached <= 0.3


@pytest.mark.parametrize("tile_size", [17, 33, 50])
def test_tiles_meet_without_cracks_or_t_junctions(tile_size):
    h = fractal(129, 111, relief=40.0, seed=2)
    valid = np.ones(h.shape, bool)
    valid[40:60, 30:70] = False  # a nodata hole across tile borders
    verts, faces, reached = tin(h, 0.4, mask=valid, tile_size=tile_size)
    check_mesh(verts, faces)
    check_guarantee(verts, faces, h, valid, 0.4, reached)
    e, count = edges_of(faces)
    assert count.max() <= 2  # manifold: no edge in three triangles
    # every boundary edge lies on the raster border: tiles share every border edge
    # exactly (a crack or a T-junction would leave a boundary edge inside)
    pb = verts[e[count == 1]]
    rows, cols = h.shape
    on_border = (
        (pb[:, :, 0] == 0).all(1)
        | (pb[:, :, 0] == cols - 1).all(1)
        | (pb[:, :, 1] == 0).all(1)
        | (pb[:, :, 1] == rows - 1).all(1)
    )
    assert on_border.all()
    # one disk: V - E + F == 1
    assert len(verts) - len(e) + len(faces) == 1
    # no vertex lies inside another triangle's edge (T-junction) on the tile lines
    xs, ys = tile_lines(cols, tile_size), tile_lines(rows, tile_size)
    assert len(xs) > 2 and len(ys) > 2
    # the heights never leave the valid range (no spike or pit from the hole)
    assert verts[:, 2].min() >= h[valid].min() and verts[:, 2].max() <= h[valid].max()


def test_tiled_count_close_to_untiled_and_deterministic():
    h = fractal(200, 200, relief=60.0, seed=4)
    _, f1, _ = tin(h, 0.5)
    v2, f2, _ = tin(h, 0.5, tile_size=64, workers=2)
    v3, f3, _ = tin(h, 0.5, tile_size=64, workers=1)
    assert len(f2) <= 1.02 * len(f1)
    assert np.array_equal(v2, v3) and np.array_equal(f2, f3)


def test_refine_profile_matches_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        z = np.cumsum(rng.normal(size=50))
        z[rng.random(50) < 0.1] = np.nan
        z[0] = z[0] if np.isfinite(z[0]) else 0.0
        z[-1] = z[-1] if np.isfinite(z[-1]) else 0.0
        pos = np.array([0.0, 17.5, 49.0])
        zfix = np.array([z[0], 1.0, z[-1]])
        got = _kernels.refine_profile(z, pos, zfix, 0.7)
        ref = _reference.refine_profile_ref(z, pos, zfix, 0.7)
        assert np.array_equal(got.astype(bool), ref)
        # the bound holds along the polyline
        x = np.concatenate([pos, np.nonzero(got)[0]])
        y = np.concatenate([zfix, z[np.nonzero(got)[0]]])
        o = np.argsort(x)
        line = np.interp(np.arange(50), x[o], y[o])
        ok = np.isfinite(z)
        assert np.all(np.abs(line[ok] - z[ok]) <= 0.7 + 1e-12)
