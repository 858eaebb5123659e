"""Large DEMs: TINs from windowed reads, memory bounded by the tile size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from twin.errors import InputError, TwinError
from twin.terrain import read_dem, tin
from twin.terrain.dem import DemReader
from twin.terrain.tin import tin_errors
from twin.terrain.windowed import tin_file

NODATA = -9999.0


def _write(path, h, transform, block=64):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=h.shape[1],
        height=h.shape[0],
        count=1,
        dtype=h.dtype,
        crs="EPSG:32633",
        transform=transform,
        nodata=NODATA,
        tiled=True,
        blockxsize=block,
        blockysize=block,
    ) as ds:
        ds.write(h, 1)


def _rough(rows, cols, seed=3):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    h = 40 * np.sin(x / 23.0) * np.cos(y / 31.0) + 0.05 * x
    h += np.cumsum(np.cumsum(rng.normal(0, 0.05, (rows, cols)), 0), 1) * 0.02
    return h


def _triangle_set(v, f):
    return {tuple(sorted(map(tuple, v[t]))) for t in f}


def _open_edges(f):
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    cnt = Counter(map(tuple, e))
    return [k for k, c in cnt.items() if c == 1]


@pytest.fixture
def holey_dem(tmp_path):
    h = _rough(290, 300).astype(np.float32)
    h[100:130, 120:160] = NODATA  # a hole across a tile border line (x = 127)
    h[0:5, 0:5] = NODATA  # the raster corner is nodata
    h[200, 250] = NODATA  # a single missing sample
    p = tmp_path / "holey.tif"
    _write(p, h, from_origin(500000.0, 6000000.0, 2.0, 2.0))
    return p


@pytest.mark.parametrize("tile_size", [64, 100])
def test_file_tin_is_the_in_memory_tiled_tin(holey_dem, tile_size):
    d = read_dem(holey_dem)
    v1, f1, r1 = tin(d.heights, 0.5, transform=d.transform, mask=d.valid, tile_size=tile_size)
    stats = {}
    v2, f2, r2 = tin_file(holey_dem, 0.5, tile_size=tile_size, workers=2, stats=stats)
    assert r1 == r2 <= 0.5
    assert len(v1) == len(v2) and len(f1) == len(f2)
    assert _triangle_set(v1, f1) == _triangle_set(v2, f2)
    assert stats["valid_samples"] == int(d.valid.sum())
    # counter-clockwise seen from above in map coordinates
    a, b, c = v2[f2[:, 0]], v2[f2[:, 1]], v2[f2[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (cross > 0).all()


def test_file_tin_bound_and_nodata_holes(holey_dem):
    d = read_dem(holey_dem)
    v, f, reached = tin_file(holey_dem, 0.3, tile_size=64, workers=1)
    inv = ~d.transform
    col = np.rint(inv.a * v[:, 0] + inv.b * v[:, 1] + inv.c - 0.5)
    row = np.rint(inv.d * v[:, 0] + inv.e * v[:, 1] + inv.f - 0.5)
    gv = np.column_stack([col, row, v[:, 2]])
    err, _ = tin_errors(gv, f.astype(np.int64), d.heights)
    ok = d.valid
    assert np.isfinite(err[ok]).all() and err[ok].max() <= 0.3 + 1e-12
    assert reached == pytest.approx(err[ok].max())
    # every vertex is a valid sample with its own height, except raster or tile
    # corners on nodata, which take the height of the nearest valid sample: no
    # spike, no pit
    r, c = row.astype(int), col.astype(int)
    on_valid = d.valid[r, c]
    assert np.array_equal(v[on_valid, 2], d.heights[r[on_valid], c[on_valid]])
    lines = {0, 63, 126, 189, 252, 289, 299}
    for k in np.nonzero(~on_valid)[0]:
        assert r[k] in lines and c[k] in lines
        near = d.heights[max(r[k] - 30, 0) : r[k] + 31, max(c[k] - 30, 0) : c[k] + 31]
        assert v[k, 2] in near
    # tiles share their borders: the only open edges are on the raster's outline
    # (no crack, no T-junction inside)
    for e in _open_edges(f):
        pr, pc = row[list(e)], col[list(e)]
        assert (
            (pr == 0).all()
            or (pr == d.shape[0] - 1).all()
            or (pc == 0).all()
            or (pc == d.shape[1] - 1).all()
        ), e


def test_reader_windows_and_bad_input(holey_dem, tmp_path):
    r = DemReader(holey_dem)
    d = read_dem(holey_dem)
    np.testing.assert_array_equal(r.read(95, 135, 110, 170), d.heights[95:135, 110:170])
    assert r.nearest_valid(0, 0) == d.heights[0, 5] or r.nearest_valid(0, 0) == d.heights[5, 0]
    nod = tmp_path / "nodata.tif"
    _write(nod, np.full((40, 40), NODATA, np.float32), from_origin(0, 40, 1, 1))
    with pytest.raises(InputError, match="nodata"):
        tin_file(nod, 1.0, tile_size=16)
    row = tmp_path / "row.tif"
    _write(row, np.ones((1, 40), np.float32), from_origin(0, 1, 1, 1), block=16)
    with pytest.raises(InputError, match="2 rows"):
        tin_file(row, 1.0)
    with pytest.raises(TwinError, match="max_error"):
        tin_file(holey_dem, 0.0)
    with pytest.raises(TwinError, match="tile_size"):
        tin_file(holey_dem, 1.0, tile_size=8)
    with pytest.raises(InputError, match="not found"):
        tin_file(tmp_path / "missing.tif", 1.0)


def test_cli_uses_windowed_reads_for_a_large_raster(holey_dem, tmp_path, monkeypatch):
    from twin.cli import main
    from twin.terrain import windowed

    monkeypatch.setattr(windowed, "LARGE_SAMPLES", 10_000)  # holey_dem: 87,000 samples
    out = tmp_path / "t.ply"
    res = CliRunner().invoke(
        main, ["terrain", "tin", str(holey_dem), str(out), "--max-error", "0.5", "--json"]
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["windowed"] is True and s["tile_size"] == 257
    assert s["max_error_reached"] <= 0.5 and out.exists()
    res = CliRunner().invoke(
        main,
        ["terrain", "tin", str(holey_dem), str(out), "--max-error", "0.5", "--mode", "rtin"],
    )
    assert res.exit_code == 2 and "large raster" in res.output and "greedy" in res.output


_MEASURE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from twin.terrain.windowed import tin_file

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    tin_file(sys.argv[2], 1.0, tile_size=64, workers=2)  # warm: kernels loaded
    growth = []
    for _ in range(2):  # the first run also pays one-time library set-up
        base = status("VmRSS:")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current RSS
        v, f, reached = tin_file(sys.argv[1], 1.0, tile_size=257, workers=2)
        growth.append(status("VmHWM:") - base)
    np.save(sys.argv[3], v)
    np.save(sys.argv[4], f)
    print(json.dumps({"growth": growth, "reached": reached,
                      "out_bytes": int(v.nbytes + f.nbytes)}))
    """
)


@pytest.mark.slow
def test_6000_square_raster_in_bounded_memory(tmp_path, holey_dem):
    rows = cols = 6000
    path = tmp_path / "big.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=cols,
        height=rows,
        count=1,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(400000.0, 5800000.0, 1.0, 1.0),
        nodata=NODATA,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as ds:
        xs = np.arange(cols, dtype=np.float64)
        for r0 in range(0, rows, 500):
            y = np.arange(r0, r0 + 500, dtype=np.float64)[:, None]
            h = (
                80 * np.sin(xs / 900.0) * np.cos(y / 1100.0)
                + 0.004 * xs
                + 20 * np.sin((xs + y) / 300.0)
            )
            h = h.astype(np.float32)
            if r0 == 3000:
                h[100:300, 2500:2700] = NODATA  # a hole crossing tile lines
            ds.write(h, 1, window=rasterio.windows.Window(0, r0, cols, 500))
    raster_bytes = path.stat().st_size
    assert raster_bytes > 140e6
    vf, ff = tmp_path / "v.npy", tmp_path / "f.npy"
    pr = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(holey_dem), str(vf), str(ff)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pr.returncode == 0, pr.stderr[-2000:]
    m = json.loads(pr.stdout.strip().splitlines()[-1])
    # peak memory: well below the raster (4 bytes a sample, 151 MB). The first run
    # also pays GDAL's one-time set-up (about 35 MB measured); later runs hold a few
    # tiles' windows (0.5 MB each) and the output, plus allocator slack (0-27 MB
    # measured, varying run to run)
    first, steady = m["growth"]
    assert first < 0.5 * raster_bytes, m
    assert steady < 0.25 * raster_bytes, m
    assert m["reached"] <= 1.0
    v, f = np.load(vf), np.load(ff).astype(np.int64)
    # the bound, verified against every sample, and the hole bridged by its rim
    with rasterio.open(path) as ds:
        h = ds.read(1, masked=True)
    herr = np.ma.filled(h.astype(np.float64), np.nan)
    del h
    gv = np.column_stack([v[:, 0] - 400000.0 - 0.5, 5800000.0 - v[:, 1] - 0.5, v[:, 2]])
    assert np.array_equal(gv[:, :2], np.rint(gv[:, :2]))
    err, _ = tin_errors(gv, f, herr)
    ok = np.isfinite(herr)
    assert err[ok].max() <= 1.0 and np.isfinite(err[ok]).all()
    del err
    r, c = gv[:, 1].astype(int), gv[:, 0].astype(int)
    assert ok[r, c].all()  # every vertex a valid sample (its own height)
    assert np.array_equal(gv[:, 2], herr[r, c])
    # tiles share their border vertices: no duplicate position, open edges only on
    # the raster's outline
    assert len(np.unique(r * cols + c)) == len(v)
    for e in _open_edges(f):
        pr_, pc_ = r[list(e)], c[list(e)]
        assert (
            (pr_ == 0).all()
            or (pr_ == rows - 1).all()
            or (pc_ == 0).all()
            or (pc_ == cols - 1).all()
        ), e


def _edges_match(out, z, rng):
    """Neighbouring tiles of level z carry the same vertices along their shared
    edge (positions exactly, heights within the quantisation)."""
    from twin.terrain.quantized_mesh import QMAX, decode_tile
    from twin.terrain.tiling import tile_bounds

    x0, y0, x1, y1 = rng
    pairs = 0
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            a = decode_tile((out / f"{z}/{x}/{y}.terrain").read_bytes(), tile_bounds(z, x, y))
            for dx, dy, ea, eb in ((1, 0, "east", "west"), (0, 1, "north", "south")):
                if x + dx > x1 or y + dy > y1:
                    continue
                b = decode_tile(
                    (out / f"{z}/{x + dx}/{y + dy}.terrain").read_bytes(),
                    tile_bounds(z, x + dx, y + dy),
                )
                pa, pb = a["lonlat_h"][a[ea]], b["lonlat_h"][b[eb]]
                assert np.abs(pa[:, :2] - pb[:, :2]).max() < 1e-12
                tol = sum((t["max_height"] - t["min_height"]) / QMAX / 2 for t in (a, b))
                assert np.abs(pa[:, 2] - pb[:, 2]).max() <= tol + 1e-4
                pairs += 1
    return pairs


def test_tiles_of_a_large_raster_from_windows(tmp_path, monkeypatch):
    import pyproj

    from twin.cli import main
    from twin.terrain import tiling, windowed
    from twin.terrain.tiling import tile_range, write_terrain_tiles

    h = _rough(400, 500, seed=7).astype(np.float32) * 3
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(15.0, 45.0)
    path = tmp_path / "dem.tif"
    _write(path, h, from_origin(round(x0), round(y0), 10.0, 10.0))
    ref = write_terrain_tiles(path, tmp_path / "ref", max_error=1.0)
    monkeypatch.setattr(windowed, "LARGE_SAMPLES", 10_000)
    monkeypatch.setattr(tiling, "OVERVIEW_SIDE", 64)  # step 8: coarse levels sample it
    seen = []
    real = tiling.WindowedDemSampler._window_sample

    def spy(self, x, y):
        seen.append(len(x))
        return real(self, x, y)

    monkeypatch.setattr(tiling.WindowedDemSampler, "_window_sample", spy)
    out = tmp_path / "win"
    res = CliRunner().invoke(
        main, ["terrain", "tiles", str(path), str(out), "--max-error", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert seen and s["max_zoom"] == ref["max_zoom"] and s["tiles"] == ref["tiles"]
    zmax = s["max_zoom"]
    # full-resolution levels: the same samples, so the same tiles, byte for byte
    sampler = tiling.WindowedDemSampler(DemReader(path))
    fine = [z for z in range(zmax + 1) if not sampler.uses_overview(z)]
    coarse = [z for z in range(zmax + 1) if sampler.uses_overview(z)]
    assert fine and coarse
    # the overview: every 8th pixel of every 8th row, at its full-resolution place
    assert sampler.step == 8 and sampler.overview.shape == (50, 62)
    np.testing.assert_array_equal(sampler.overview.heights, h[4::8, 4::8])
    xs, ys = sampler.reader.transform @ (np.array([4.5, 100.5]), np.array([12.5, 396.5]))
    np.testing.assert_allclose(sampler.overview.sample(xs, ys), [h[12, 4], h[396, 100]], rtol=1e-12)
    for z in fine:
        for f in (tmp_path / "ref" / str(z)).rglob("*.terrain"):
            assert (out / f.relative_to(tmp_path / "ref")).read_bytes() == f.read_bytes()
    # every level, overview ones included: neighbours share their edges, and each
    # level holds its error bound against its own samples
    pairs = 0
    for z in range(1, zmax + 1):
        pairs += _edges_match(out, z, tile_range(s["bounds"], z))
    assert pairs >= 4
    for lv in s["levels"]:
        assert lv["max_error_reached"] <= lv["max_error"]


def test_tin_of_a_path_reads_windows(holey_dem):
    v1, f1, r1 = tin_file(holey_dem, 0.5, tile_size=100)
    v2, f2, r2 = tin(str(holey_dem), 0.5, tile_size=100)
    v3, f3, r3 = tin(DemReader(holey_dem), 0.5, tile_size=100, workers=1)
    assert r1 == r2 == r3 and np.array_equal(v1, v2) and np.array_equal(f1, f3)
    with pytest.raises(TwinError, match="greedy"):
        tin(holey_dem, 0.5, mode="rtin")
    with pytest.raises(TwinError, match="transform"):
        tin(holey_dem, 0.5, transform=(1, 0, 0, 0, -1, 0))
