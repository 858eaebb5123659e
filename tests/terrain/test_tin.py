"""twin.terrain.tin: the error guarantee, Delaunay property, kernels vs references,
nodata handling, georeferencing and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from twin.errors import InputError, ParameterError
from twin.terrain import _kernels, _reference
from twin.terrain.rtin import rtin_size
from twin.terrain.tin import tin, tin_errors

MODES = ["greedy", "rtin"]


def fractal(rows, cols, relief=20.0, hurst=0.9, seed=0):
    """A seeded fractal surface (spectral synthesis), heights 0..relief."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n = max(rows, cols)
    spec = np.fft.fft2(rng.standard_normal((n, n)))
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[0, 0] = 1.0
    amp = f ** -(hurst + 1.0)
    amp[0, 0] = 0.0
    z = np.fft.ifft2(spec * amp).real[:rows, :cols]
    z -= z.min()
    return z * (relief / z.max())


def grid_vertices(verts):
    """Output vertices (pixel units, transform=None) are already (col, row, z)."""
    return np.asarray(verts, dtype=np.float64)


def check_guarantee(verts, faces, heights, valid, max_error, reached):
    """Rasterise the TIN back with the NumPy reference: every valid sample within
    max_error, and the reported max equals the measured one."""
    herr = np.where(valid, heights, np.nan)
    err, _ = _reference.sample_errors_ref(grid_vertices(verts), faces, herr)
    measured = np.nanmax(err)
    assert np.isfinite(measured), "a valid sample is not covered by any triangle"
    assert measured <= max_error + 1e-9
    assert reached == pytest.approx(measured, abs=1e-9)
    return err


def check_mesh(verts, faces, transform_det_sign=1.0):
    """CCW seen from +z, no degenerate or duplicate triangles, no duplicate vertices,
    no unused vertices."""
    assert faces.dtype == np.uint32 and faces.ndim == 2 and faces.shape[1] == 3
    assert verts.dtype == np.float64 and verts.shape[1] == 3
    p = verts[faces.astype(np.int64)]
    area2 = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (
        p[:, 2, 0] - p[:, 0, 0]
    )
    assert (area2 > 0).all(), "a triangle is clockwise or degenerate"
    key = np.sort(faces, axis=1)
    assert len(np.unique(key, axis=0)) == len(faces), "duplicate triangles"
    assert len(np.unique(verts[:, :2], axis=0)) == len(verts), "duplicate vertices"
    assert np.array_equal(np.unique(faces), np.arange(len(verts))), "unused vertices"


# --------------------------------------------------------------------------------------
# the guarantee
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "shape,max_error,seed", [((65, 65), 1.0, 1), ((50, 37), 0.5, 2), ((129, 100), 2.0, 3)]
)
def test_guarantee_on_fractal_surfaces(mode, shape, max_error, seed):
    h = fractal(*shape, seed=seed)
    verts, faces, reached = tin(h, max_error, mode=mode)
    check_guarantee(verts, faces, h, np.ones(shape, bool), max_error, reached)
    check_mesh(verts, faces)
    # the TIN is much smaller than the grid, and refining further makes it bigger
    assert len(faces) < 2 * (shape[0] - 1) * (shape[1] - 1)  # fewer than the full grid mesh
    _, faces2, reached2 = tin(h, max_error / 4, mode=mode)
    assert len(faces2) > len(faces) and reached2 <= max_error / 4


@pytest.mark.parametrize("mode", MODES)
def test_guarantee_on_steps_and_cliffs(mode):
    y, x = np.mgrid[0:80, 0:90]
    h = np.where(x > 0.7 * y + 20, 50.0, 0.0) + 0.05 * x  # a diagonal 50 m cliff
    h[30:40, 60:70] += 20.0  # a block
    verts, faces, reached = tin(h, 0.25, mode=mode)
    check_guarantee(verts, faces, h, np.ones(h.shape, bool), 0.25, reached)
    check_mesh(verts, faces)
    # no overshoot anywhere: the surface stays within the heights' range
    assert verts[:, 2].min() >= h.min() and verts[:, 2].max() <= h.max()


def test_plane_needs_two_triangles():
    y, x = np.mgrid[0:101, 0:73]
    h = 3.0 + 0.2 * x - 0.7 * y
    verts, faces, reached = tin(h, 1e-6)
    assert len(faces) == 2 and len(verts) == 4
    assert reached < 1e-9
    v, f, _ = tin(h[:65, :65], 1e-6, mode="rtin")
    assert len(f) == 2 and len(v) == 4


@pytest.mark.parametrize("mode", MODES)
def test_max_error_reached_is_the_worst_sample(mode):
    h = fractal(40, 40, seed=7)
    verts, faces, reached = tin(h, 3.0, mode=mode)
    err, _ = _reference.sample_errors_ref(verts, faces, h)
    assert reached == pytest.approx(np.max(err), abs=1e-12)
    assert 0.5 * 3.0 < reached <= 3.0  # a useful TIN is close to its budget


# --------------------------------------------------------------------------------------
# greedy: Delaunay and against the reference implementation
# --------------------------------------------------------------------------------------


def test_greedy_output_is_delaunay():
    h = fractal(65, 65, seed=4)
    verts, faces, _ = tin(h, 0.5)
    pts = verts[:, :2].astype(np.int64)
    assert np.array_equal(pts, verts[:, :2])  # greedy vertices are grid samples
    tri = pts[faces.astype(np.int64)]
    rng = np.random.default_rng(0)
    sample = rng.choice(len(faces), size=min(400, len(faces)), replace=False)
    for k in sample:
        a, b, c = tri[k]
        d = pts - 0  # every vertex against this triangle's circumcircle (exact ints)
        m = np.stack([a - d, b - d, c - d], axis=1)  # (N, 3, 2)
        sq = (m**2).sum(axis=2)
        det = (
            m[:, 0, 0] * (m[:, 1, 1] * sq[:, 2] - sq[:, 1] * m[:, 2, 1])
            - m[:, 0, 1] * (m[:, 1, 0] * sq[:, 2] - sq[:, 1] * m[:, 2, 0])
            + sq[:, 0] * (m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0])
        )
        assert (det <= 0).all(), f"a vertex lies strictly inside triangle {k}'s circumcircle"


@pytest.mark.parametrize("shape,max_error,seed", [((17, 17), 0.3, 0), ((9, 14), 0.1, 1)])
def test_greedy_kernel_matches_reference(shape, max_error, seed):
    rng = np.random.default_rng(seed)
    h = np.cumsum(rng.normal(size=shape), axis=0) + rng.normal(scale=0.3, size=shape)
    corners = np.array([h[0, 0], h[0, -1], h[-1, -1], h[-1, 0]])
    px, py, pz, tri, terr = _kernels.greedy_refine(h, corners, max_error)
    pts_ref, tris_ref = _reference.greedy_refine_ref(h, corners, max_error)
    got_pts = {(int(x), int(y)) for x, y in zip(px, py, strict=True)}
    assert got_pts == {(p[0], p[1]) for p in pts_ref}
    # same triangles, as (x, y) node triples up to rotation
    key = [(int(x), int(y)) for x, y in zip(px, py, strict=True)]
    got = {_canon(tuple(key[i] for i in t)) for t in tri.reshape(-1, 3)}
    ref = {_canon(tuple((pts_ref[i][0], pts_ref[i][1]) for i in t)) for t in tris_ref}
    assert got == ref
    assert terr.max() <= max_error


def _canon(t):
    k = t.index(min(t))
    return t[k:] + t[:k]


def test_tri_worst_matches_reference():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(30, 40))
    h[5:9, 10:20] = np.nan
    for _ in range(200):
        xs = rng.integers(0, 40, 3)
        ys = rng.integers(0, 30, 3)
        zs = rng.normal(size=3)
        pts = [(int(xs[i]), int(ys[i]), float(zs[i])) for i in range(3)]
        err, idx = _kernels.tri_worst(
            xs[0], ys[0], zs[0], xs[1], ys[1], zs[1], xs[2], ys[2], zs[2], h
        )
        if (xs[1] - xs[0]) * (ys[2] - ys[0]) == (ys[1] - ys[0]) * (xs[2] - xs[0]):
            assert (err, idx) == (-1.0, -1)  # degenerate: nothing inside
            continue
        ref_err, q = _reference._worst((0, 1, 2), pts, h)
        assert err == pytest.approx(ref_err, abs=1e-12)
        assert idx == (-1 if q is None else q[1] * 40 + q[0])


def test_rasteriser_matches_reference():
    h = fractal(33, 45, seed=5)
    h[10:14, 20:30] = np.nan
    verts, faces, _ = tin(h, 0.8)
    err, tri_err = tin_errors(verts, faces, h)
    err_ref, tri_ref = _reference.sample_errors_ref(verts, faces, h)
    np.testing.assert_allclose(err, err_ref, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(tri_err, tri_ref, atol=1e-9)
    # an uncovered valid sample is reported as infinite error
    err2, _ = tin_errors(verts, faces[1:], h)
    assert np.isinf(err2).sum() >= 1


# --------------------------------------------------------------------------------------
# RTIN: correct error propagation, kernel vs reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,max_error,seed", [(17, 0.4, 0), (33, 1.0, 1), (9, 0.05, 2)])
def test_rtin_kernel_matches_reference(size, max_error, seed):
    rng = np.random.default_rng(seed)
    h = np.cumsum(np.cumsum(rng.normal(size=(size, size)), 0), 1) * 0.2
    valid = np.ones(h.shape, bool)
    E = _kernels.rtin_errors(h, h, max_error)
    vid, tri = _kernels.rtin_extract(E, max_error)
    ys, xs = np.nonzero(vid >= 0)
    node = list(zip(xs.tolist(), ys.tolist(), strict=True))
    got = {_canon(tuple(node[i] for i in t)) for t in tri.reshape(-1, 3)}
    assert got == _reference.rtin_ref(h, h, max_error)
    # and the bound holds on every sample
    v, f, reached = tin(h, max_error, mode="rtin")
    check_guarantee(v, f, h, valid, max_error, reached)


def test_rtin_bound_holds_where_midpoint_errors_miss():
    """A bump that no hypotenuse midpoint sees: Martini-style midpoint errors call the
    coarse triangles exact; the full-sample errors must not."""
    s = 17
    h = np.zeros((s, s))
    h[5, 3] = 10.0  # off every coarse-level midpoint
    v, f, reached = tin(h, 1.0, mode="rtin")
    assert reached <= 1.0
    check_guarantee(v, f, h, np.ones(h.shape, bool), 1.0, reached)
    assert rtin_size(17, 17) == 17 and rtin_size(18, 5) == 33 and rtin_size(2, 2) == 2


# --------------------------------------------------------------------------------------
# nodata
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_nodata_holes_no_spikes(mode):
    h = fractal(97, 90, relief=50.0, seed=6) + 100.0
    yy, xx = np.mgrid[0:97, 0:90]
    hole = (yy - 40) ** 2 + (xx - 50) ** 2 < 12**2  # a round hole
    hole |= (yy < 10) & (xx < 15)  # a hole at the corner
    hole[60:63, :] = True  # a strip across the whole raster
    garbage = h.copy()
    garbage[hole] = -32768.0  # what a nodata value looks like
    verts, faces, reached = tin(garbage, 0.5, mask=~hole, mode=mode)
    check_guarantee(verts, faces, h, ~hole, 0.5, reached)
    check_mesh(verts, faces)
    valid_h = h[~hole]
    assert verts[:, 2].min() >= valid_h.min() and verts[:, 2].max() <= valid_h.max()
    # inside the hole the TIN interpolates the heights around it: no spike or pit
    zmin, zmax, _ = _reference.surface_ref(verts, faces, h.shape)
    ring = (yy - 40) ** 2 + (xx - 50) ** 2 < 40**2
    near = h[ring & ~hole]
    inside = hole & ring & np.isfinite(zmin)
    assert (zmin[inside] >= near.min() - 1e-9).all() and (zmax[inside] <= near.max() + 1e-9).all()
    # every triangle covers at least one valid sample; the big hole's middle is open
    _, tri_err = tin_errors(verts, faces, np.where(hole, np.nan, h))
    assert (tri_err >= 0).all()
    # the same result with NaN instead of a mask
    nan = h.copy()
    nan[hole] = np.nan
    v2, f2, r2 = tin(nan, 0.5, mode=mode)
    assert np.array_equal(v2, verts) and np.array_equal(f2, faces) and r2 == reached


def test_large_hole_greedy_bridges_rtin_opens():
    """Greedy: a hole is bridged by triangles whose vertices are all valid samples (a
    watertight surface). RTIN: grid nodes inside the hole take nearby valid heights and
    triangles with no valid sample are dropped, so a large hole opens."""
    h = fractal(129, 129, relief=50.0, seed=8)
    h[30:90, 40:100] = np.nan
    rim = np.isfinite(h[25:95, 35:105])
    rim_h = h[25:95, 35:105][rim]
    for mode in MODES:
        verts, faces, reached = tin(h, 0.5, mode=mode)
        assert reached <= 0.5
        zmin, zmax, _ = _reference.surface_ref(verts, faces, h.shape)
        assert np.isfinite(zmin[np.isfinite(h)]).all()  # every valid sample covered
        inside = zmin[30:90, 40:100]
        covered = np.isfinite(inside)
        assert (inside[covered] >= rim_h.min()).all()
        assert (zmax[30:90, 40:100][covered] <= rim_h.max()).all()
        if mode == "greedy":
            col = verts[:, 0].astype(int)
            row = verts[:, 1].astype(int)
            assert np.isfinite(h[row, col]).all()  # no vertex inside the hole
            assert covered.all()
        else:
            assert (~covered).mean() > 0.5  # mostly open


# --------------------------------------------------------------------------------------
# georeferencing, determinism
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_transform_places_vertices_at_pixel_centres(mode):
    from rasterio.transform import Affine

    h = fractal(40, 50, seed=9)
    aff = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 3300000.0)  # north-up, 10 m pixels
    v_pix, f_pix, r_pix = tin(h, 1.0, mode=mode)
    v, f, r = tin(h, 1.0, transform=aff, mode=mode)
    assert r == r_pix and len(f) == len(f_pix)
    np.testing.assert_allclose(v[:, 0], 500000.0 + 10.0 * (v_pix[:, 0] + 0.5))
    np.testing.assert_allclose(v[:, 1], 3300000.0 - 10.0 * (v_pix[:, 1] + 0.5))
    np.testing.assert_array_equal(v[:, 2], v_pix[:, 2])
    check_mesh(v, f)  # still CCW from above although the transform mirrors y
    # a 6-tuple in the same order gives the same result
    v6, f6, _ = tin(h, 1.0, transform=tuple(aff)[:6], mode=mode)
    assert np.array_equal(v6, v) and np.array_equal(f6, f)
    # vertex heights are the samples at those pixels (greedy: every vertex)
    if mode == "greedy":
        cols = v_pix[:, 0].astype(int)
        rows = v_pix[:, 1].astype(int)
        np.testing.assert_array_equal(v[:, 2], h[rows, cols])


@pytest.mark.parametrize("mode", MODES)
def test_deterministic(mode):
    h = fractal(60, 70, seed=10)
    a = tin(h, 0.7, mode=mode)
    b = tin(h.copy(), 0.7, mode=mode)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_integer_and_float32_input():
    h = (fractal(33, 33, seed=11) * 10).astype(np.int16)
    v, f, r = tin(h, 5.0)
    check_guarantee(v, f, h.astype(float), np.ones(h.shape, bool), 5.0, r)
    v32, f32, r32 = tin(h.astype(np.float32), 5.0)
    assert np.array_equal(v32, v) and np.array_equal(f32, f)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "a lot"])
def test_bad_max_error(bad):
    with pytest.raises(ParameterError, match="max_error"):
        tin(np.zeros((4, 4)), bad)


@pytest.mark.parametrize(
    "heights,kwargs,match",
    [
        (np.full((5, 5), np.nan), {}, "no valid sample"),
        (np.zeros((5, 5)), {"mask": np.zeros((5, 5), bool)}, "no valid sample"),
        (np.zeros((1, 20)), {}, "at least 2 rows"),
        (np.zeros((20, 1)), {}, "at least 2 rows"),
        (np.zeros(20), {}, "2D"),
        (np.zeros((3, 3, 3)), {}, "2D"),
        (np.zeros((5, 5)), {"mask": np.ones((4, 5), bool)}, "mask shape"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_bad_heights(heights, kwargs, match, mode):
    with pytest.raises(InputError, match=match):
        tin(heights, 1.0, mode=mode, **kwargs)


def test_greedy_refuses_grids_beyond_exact_predicates():
    with pytest.raises(InputError, match="tiles"):
        tin(np.zeros((2, 2**14 + 2)), 1.0)


def test_bad_mode_transform_constraints():
    h = np.zeros((4, 4))
    with pytest.raises(ParameterError, match="mode"):
        tin(h, 1.0, mode="martini")
    with pytest.raises(ParameterError, match="transform"):
        tin(h, 1.0, transform=(1.0, 2.0))
    with pytest.raises(ParameterError, match="singular"):
        tin(h, 1.0, transform=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    line = np.array([[0.0, 0.0], [2.0, 2.0]])
    with pytest.raises(ParameterError, match="greedy"):
        tin(h, 1.0, constraints=[line], mode="rtin")
    with pytest.raises(ParameterError, match="greedy"):
        tin(h, 1.0, tile_size=64, mode="rtin")
    with pytest.raises(ParameterError, match="NaN"):
        tin(h, 1.0, constraints=[np.array([[0.0, 0.0], [np.nan, 2.0]])])
    with pytest.raises(ParameterError, match="shape"):
        tin(h, 1.0, constraints=[np.zeros((3, 4))])
    with pytest.raises(ParameterError, match="Point"):
        import shapely

        tin(h, 1.0, constraints=[shapely.Point(1.0, 1.0)])


# --------------------------------------------------------------------------------------
# real DEMs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["whiteboxR_DEM.tif", "stars_olinda_dem_utm25s.tif"])
@pytest.mark.parametrize("mode", MODES)
def test_real_dem(shared_data, name, mode):
    rasterio = pytest.importorskip("rasterio")
    path = shared_data / "dem" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    with rasterio.open(path) as ds:
        h = ds.read(1, masked=True)
        transform = ds.transform
    valid = ~np.ma.getmaskarray(h)
    heights = np.asarray(h.data, dtype=np.float64)
    verts, faces, reached = tin(heights, 10.0, transform=transform, mask=valid, mode=mode)
    assert reached <= 10.0
    check_mesh(verts, faces)
    # back to pixel coordinates, then the guarantee with the kernel rasteriser
    inv = ~transform
    cols = inv.a * verts[:, 0] + inv.b * verts[:, 1] + inv.c
    rows = inv.d * verts[:, 0] + inv.e * verts[:, 1] + inv.f
    gv = np.column_stack([cols - 0.5, rows - 0.5, verts[:, 2]])
    herr = np.where(valid, heights, np.nan)
    err, tri_err = tin_errors(gv, faces, herr)
    assert np.nanmax(err) <= 10.0 + 1e-9 and (tri_err >= 0).all()
    # inside the raster, vertex heights are real heights (never the nodata value)
    vh = heights[valid]
    assert verts[:, 2].min() >= vh.min() and verts[:, 2].max() <= vh.max()
    assert gv[:, 0].min() >= -1e-6 and gv[:, 0].max() <= heights.shape[1] - 1 + 1e-6
    assert gv[:, 1].min() >= -1e-6 and gv[:, 1].max() <= heights.shape[0] - 1 + 1e-6
    assert len(faces) < valid.sum()


@pytest.mark.parametrize("size,max_error,seed", [(33, 0.3, 3), (65, 1.0, 4), (129, 0.05, 5)])
def test_rtin_full_grid_kernel_matches_extraction_and_measures_exactly(size, max_error, seed):
    """The one-call RTIN of a full grid (finest level from chord errors, coarser
    triangles bounded from their children before any pass) gives the same triangles
    as the reference hierarchy and reports the worst error the rasteriser finds."""
    rng = np.random.default_rng(seed)
    h = np.cumsum(np.cumsum(rng.normal(size=(size, size)), 0), 1) * 0.2
    gv, faces, reached = _kernels.rtin_mesh(h, max_error)
    node = [(int(x), int(y)) for x, y in gv[:, :2]]
    got = {_canon(tuple(node[i] for i in t)) for t in faces}
    assert got == _reference.rtin_ref(h, h, max_error)
    err, _ = tin_errors(gv, faces.astype(np.int64), h)
    assert reached == pytest.approx(err.max(), abs=1e-12) and reached <= max_error
    v, f, r = tin(h, max_error, mode="rtin")  # the path tin() takes for a full grid
    assert r == reached and len(f) == len(faces)
