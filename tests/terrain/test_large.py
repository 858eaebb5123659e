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
