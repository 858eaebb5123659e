"""twin.terrain.tiling: the geodetic TMS scheme, tile meshes with forced borders, a
whole pyramid checked against the DEM (independently sampled with pyproj), crack-free
shared edges, layer.json, determinism, feet, and bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from twin.errors import CRSError, InputError, OutputError, ParameterError
from twin.terrain import tiling
from twin.terrain.dem import Dem, read_dem
from twin.terrain.quantized_mesh import QMAX, decode_tile
from twin.terrain.tiling import (
    level_errors,
    tile_bounds,
    tile_mesh,
    tile_range,
    tiles_at_level,
    write_terrain_tiles,
)
from twin.terrain.tin import tin_errors

GRID = 65


def fractal(rows, cols, relief=150.0, seed=0):
    rng = np.random.Generator(np.random.PCG64(seed))
    n = max(rows, cols)
    spec = np.fft.fft2(rng.standard_normal((n, n)))
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[0, 0] = 1.0
    amp = f**-1.9
    amp[0, 0] = 0.0
    z = np.fft.ifft2(spec * amp).real[:rows, :cols]
    z -= z.min()
    return z * (relief / z.max()) + 200.0


def write_tif(path, heights, transform, crs, nodata=-9999.0):
    data = np.where(np.isfinite(heights), heights, nodata).astype(np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.write(data, 1)
    return path


@pytest.fixture(scope="module")
def dem_path(tmp_path_factory):
    """120 x 100 pixels of 20 m in UTM 33N near 15E 45N, with a nodata hole."""
    h = fractal(100, 120)
    h[40:48, 60:70] = np.nan
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(15.0, 45.0)
    tr = Affine(20.0, 0.0, round(x0), 0.0, -20.0, round(y0))
    return write_tif(tmp_path_factory.mktemp("dem") / "dem.tif", h, tr, "EPSG:32633")


@pytest.fixture(scope="module")
def pyramid(dem_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles") / "terrain"
    summary = write_terrain_tiles(dem_path, out, max_error=0.5)
    return out, summary


def read_tile(out, z, x, y):
    b = tile_bounds(z, x, y)
    return decode_tile((out / f"{z}/{x}/{y}.terrain").read_bytes(), b), b


def reference_grid(dem: Dem, bounds, n=GRID):
    """DEM heights on a tile's n x n grid (row 0 south), sampled independently of
    twin.terrain.tiling: pyproj + Dem.sample on the unfilled DEM (NaN in holes and
    outside) and the mask of samples outside the raster."""
    w, s, e, nn = bounds
    lon, lat = np.meshgrid(np.linspace(w, e, n), np.linspace(s, nn, n))
    tr = pyproj.Transformer.from_crs(4326, dem.crs, always_xy=True)
    x, y = (np.asarray(v) for v in tr.transform(lon.ravel(), lat.ravel()))
    c, r = ~dem.transform @ (x, y)
    rows, cols = dem.shape
    outside = (c < 0) | (c > cols) | (r < 0) | (r > rows)
    return dem.sample(x, y).reshape(n, n), outside.reshape(n, n)


# ------------------------------------------------------------------------ scheme


def test_geodetic_tms_scheme():
    assert tiles_at_level(0) == (2, 1)
    assert tiles_at_level(3) == (16, 8)
    assert tile_bounds(0, 0, 0) == (-180.0, -90.0, 0.0, 90.0)
    assert tile_bounds(0, 1, 0) == (0.0, -90.0, 180.0, 90.0)
    assert tile_bounds(1, 3, 1) == (90.0, 0.0, 180.0, 90.0)  # y counts from the south
    assert tile_bounds(2, 0, 0) == (-180.0, -90.0, -135.0, -45.0)
    with pytest.raises(ParameterError):
        tile_bounds(1, 4, 0)
    assert tile_range((15.0, 45.0, 15.03, 45.02), 0) == (1, 0, 1, 0)
    assert tile_range((15.0, 45.0, 15.03, 45.02), 2) == (4, 3, 4, 3)  # 45N starts y=3
    # a rectangle ending exactly on a tile edge does not take the next tile
    assert tile_range((0.0, 0.0, 45.0, 45.0), 2) == (4, 2, 4, 2)
    assert level_errors(0.5, 3) == [4.0, 2.0, 1.0, 0.5]


def test_tile_mesh_keeps_every_border_sample_and_the_error_bound():
    h = fractal(GRID, GRID, relief=80.0, seed=3)
    for err in (0.5, 4.0, 40.0):
        cols, rows, faces, reached = tile_mesh(h, err)
        border = (cols == 0) | (cols == GRID - 1) | (rows == 0) | (rows == GRID - 1)
        assert border.sum() == 4 * (GRID - 1)  # all 256 border samples
        assert len(set(zip(cols.tolist(), rows.tolist(), strict=True))) == len(cols)
        gv = np.column_stack([cols, rows, h[rows, cols]]).astype(float)
        e, _ = tin_errors(gv, faces, h)
        assert np.nanmax(e) <= err and np.nanmax(e) == pytest.approx(reached)
        p = gv[:, :2]
        a = p[faces[:, 1]] - p[faces[:, 0]]
        b = p[faces[:, 2]] - p[faces[:, 0]]
        area2 = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
        assert np.all(area2 > 0)  # counter-clockwise, no degenerate triangle
        assert area2.sum() / 2 == pytest.approx((GRID - 1) ** 2)  # covers the tile once


# ----------------------------------------------------------------------- pyramid


def test_pyramid_files_layer_json_and_summary(pyramid):
    out, summary = pyramid
    layer = json.loads((out / "layer.json").read_text())
    assert layer["tilejson"] == "2.1.0"
    assert layer["format"] == "quantized-mesh-1.0"
    assert layer["scheme"] == "tms"
    assert layer["projection"] == "EPSG:4326"
    assert layer["tiles"] == ["{z}/{x}/{y}.terrain?v={version}"]
    assert layer["extensions"] == ["octvertexnormals"]
    zmax = summary["max_zoom"]
    # 20 m pixels: 64 samples of 180/2**14 deg = 0.011 deg are ~19 m apart
    assert zmax == 14
    assert layer["maxzoom"] == zmax and len(layer["available"]) == zmax + 1
    assert layer["available"][0] == [{"startX": 0, "startY": 0, "endX": 1, "endY": 0}]
    listed = set()
    for z, ranges in enumerate(layer["available"]):
        for r in ranges:
            for x in range(r["startX"], r["endX"] + 1):
                for y in range(r["startY"], r["endY"] + 1):
                    listed.add(f"{z}/{x}/{y}.terrain")
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.terrain")}
    assert listed == on_disk
    assert summary["tiles"] == len(on_disk)
    assert summary["bytes"] == sum((out / p).stat().st_size for p in on_disk)
    # every available child has its parent (CesiumJS walks down from level 0)
    for p in on_disk:
        z, x, y = (int(v) for v in p.removesuffix(".terrain").split("/"))
        if z:
            assert f"{z - 1}/{x // 2}/{y // 2}.terrain" in on_disk
    assert not list(out.parent.glob(".terrain.*"))  # no temporary folder left
    for lv in summary["levels"]:
        assert lv["max_error_reached"] <= lv["max_error"] == 0.5 * 2 ** (zmax - lv["level"])
    assert layer["twin"]["heights"].startswith("ellipsoidal")


def test_tiles_match_the_dem_within_the_level_error(pyramid, dem_path):
    out, summary = pyramid
    dem = read_dem(dem_path)
    zmax = summary["max_zoom"]
    checked = 0
    for z in (zmax - 2, zmax):
        err_z = 0.5 * 2 ** (zmax - z)
        x0, y0, x1, y1 = tile_range(summary["bounds"], z)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                t, b = read_tile(out, z, x, y)
                assert (out / f"{z}/{x}/{y}.terrain").read_bytes()[:2] == b"\x1f\x8b"
                half = (t["max_height"] - t["min_height"]) / QMAX / 2 + 1e-4
                ref, outside = reference_grid(dem, b)
                # vertices sit on grid samples: u, v are k/64 of the tile quantised
                col = t["u"] / QMAX * (GRID - 1)
                row = t["v"] / QMAX * (GRID - 1)
                assert np.abs(col - np.rint(col)).max() < 0.01
                assert np.abs(row - np.rint(row)).max() < 0.01
                col, row = np.rint(col).astype(int), np.rint(row).astype(int)
                at = ref[row, col]
                ok = np.isfinite(at)
                assert np.all(np.abs(t["heights"][ok] - at[ok]) <= half)
                out_v = outside[row, col]
                assert np.all(t["heights"][out_v] == 0.0)  # outside the DEM: fill height
                # the surface between the vertices, at every valid grid sample
                gv = np.column_stack([col, row, t["heights"]]).astype(float)
                e, _ = tin_errors(gv, t["faces"], ref)
                if np.isfinite(ref).any():  # (a tile in the 1% margin has no DEM)
                    assert np.nanmax(e) <= err_z + half
                # edge lists: every border sample, sorted along the edge
                for name, uv, val, along in (
                    ("west", "u", 0, "v"),
                    ("east", "u", QMAX, "v"),
                    ("south", "v", 0, "u"),
                    ("north", "v", QMAX, "u"),
                ):
                    idx = t[name]
                    assert len(idx) == GRID
                    assert set(idx.tolist()) == set(np.nonzero(t[uv] == val)[0].tolist())
                    assert np.all(np.diff(t[along][idx]) > 0)
                checked += 1
    assert checked >= 8


def test_nodata_hole_makes_no_spike_or_pit(pyramid, dem_path):
    out, summary = pyramid
    dem = read_dem(dem_path)
    h = dem.heights
    rim = h[38:50, 58:72]
    lo, hi = np.nanmin(rim), np.nanmax(rim)
    # the hole's centre in lon/lat
    cx, cy = dem.pixel_centres(np.array([44]), np.array([65]))
    lon, lat = pyproj.Transformer.from_crs(dem.crs, 4326, always_xy=True).transform(cx, cy)
    z = summary["max_zoom"]
    x0, y0, _, _ = tile_range((lon[0], lat[0], lon[0], lat[0]), z)
    t, b = read_tile(out, z, x0, y0)
    ll = t["lonlat_h"]
    tr = pyproj.Transformer.from_crs(4326, dem.crs, always_xy=True)
    px, py = tr.transform(ll[:, 0], ll[:, 1])
    c, r = ~dem.transform @ (np.asarray(px), np.asarray(py))
    inside = (r >= 40) & (r < 48) & (c >= 60) & (c < 70)
    assert inside.sum() > 0  # the tile has vertices over the hole
    assert lo - 0.01 <= t["heights"][inside].min() and t["heights"][inside].max() <= hi + 0.01


def test_neighbours_share_their_edges_exactly(pyramid):
    out, summary = pyramid
    z = summary["max_zoom"]
    x0, y0, x1, y1 = tile_range(summary["bounds"], z)
    assert x1 > x0 and y1 > y0
    pairs = 0
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            a, _ = read_tile(out, z, x, y)
            for dx, dy, ea, eb in ((1, 0, "east", "west"), (0, 1, "north", "south")):
                if x + dx > x1 or y + dy > y1:
                    continue
                b, _ = read_tile(out, z, x + dx, y + dy)
                ia, ib = a[ea], b[eb]
                assert len(ia) == len(ib) == GRID
                pa, pb = a["lonlat_h"][ia], b["lonlat_h"][ib]
                assert np.abs(pa[:, :2] - pb[:, :2]).max() < 1e-12  # same lon/lat
                tol = sum((t["max_height"] - t["min_height"]) / QMAX / 2 for t in (a, b))
                assert np.abs(pa[:, 2] - pb[:, 2]).max() <= tol + 1e-4  # quantisation only
                assert np.array_equal(a["oct_normals"][ia], b["oct_normals"][ib])
                pairs += 1
    assert pairs >= 4


def test_same_input_same_bytes(dem_path, pyramid, tmp_path):
    out, _ = pyramid
    out2 = tmp_path / "again"
    write_terrain_tiles(dem_path, out2, max_error=0.5)

    def digest(root):
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    assert digest(out) == digest(out2)
    write_terrain_tiles(dem_path, out2, max_error=0.5, max_zoom=3)  # replaces a pyramid
    assert json.loads((out2 / "layer.json").read_text())["maxzoom"] == 3
    assert not (out2 / "4").exists()


def test_dem_in_us_feet_gives_metres(tmp_path):
    """A flat 1000 ftUS DEM in NY Long Island (ftUS): tile heights 304.8006 m."""
    x0, y0 = pyproj.Transformer.from_crs(4326, 2263, always_xy=True).transform(-73.9, 40.75)
    tr = Affine(10.0, 0.0, x0, 0.0, -10.0, y0)
    path = write_tif(tmp_path / "ft.tif", np.full((60, 60), 1000.0), tr, "EPSG:2263")
    out = tmp_path / "t"
    summary = write_terrain_tiles(path, out, max_error=1.0)
    z = summary["max_zoom"]
    x, y, _, _ = tile_range(summary["bounds"], z)
    t, _ = read_tile(out, z, x, y)
    assert t["max_height"] == pytest.approx(1000.0 * 1200 / 3937, abs=1e-3)


# --------------------------------------------------------------------- bad input


def test_bad_input_gives_twin_errors(dem_path, tmp_path):
    for bad in (0, -1.0, float("nan"), "x"):
        with pytest.raises(ParameterError, match="max_error"):
            write_terrain_tiles(dem_path, tmp_path / "a", max_error=bad)
    with pytest.raises(ParameterError, match="max_zoom"):
        write_terrain_tiles(dem_path, tmp_path / "a", max_zoom=-1)
    # all nodata, as a file and as an array
    tr = Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 5000000.0)
    empty = write_tif(tmp_path / "empty.tif", np.full((10, 10), np.nan), tr, "EPSG:32633")
    with pytest.raises(InputError, match="nodata") as exc:
        write_terrain_tiles(empty, tmp_path / "b")
    assert "empty.tif" in str(exc.value)
    dem = Dem(np.full((10, 10), np.nan), tr, pyproj.CRS(32633), path=tmp_path / "mem.tif")
    with pytest.raises(InputError, match="nodata"):
        write_terrain_tiles(dem, tmp_path / "b")
    # a CRS pyproj cannot read
    with pytest.raises(CRSError, match="CRS") as exc:
        write_terrain_tiles(dem_path, tmp_path / "c", crs="EPSG:999999")
    assert "dem.tif" in str(exc.value)
    with pytest.raises(CRSError):
        write_terrain_tiles(dem_path, tmp_path / "c", crs="+proj=nonsense")
    # a CRS pyproj reads but cannot place on the Earth (a local engineering frame)
    local = pyproj.CRS.from_wkt(
        'ENGCRS["site",EDATUM["site"],CS[Cartesian,2],'
        'AXIS["x",east,ORDER[1],LENGTHUNIT["metre",1]],'
        'AXIS["y",north,ORDER[2],LENGTHUNIT["metre",1]]]'
    )
    flat = Dem(np.ones((10, 10)), tr, local, path=tmp_path / "site.tif")
    with pytest.raises(CRSError, match="WGS 84") as exc:
        write_terrain_tiles(flat, tmp_path / "c")
    assert "site.tif" in str(exc.value)
    # a folder that is not a pyramid is not replaced; a file is not a folder
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        write_terrain_tiles(dem_path, other)
    assert (other / "keep.txt").exists()
    with pytest.raises(OutputError, match="file"):
        write_terrain_tiles(dem_path, other / "keep.txt")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_failure_leaves_no_partial_pyramid(dem_path, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = tiling.make_tile

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiling, "make_tile", flaky)
    with pytest.raises(RuntimeError):
        write_terrain_tiles(dem_path, tmp_path / "out", max_error=1.0)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_city_cgcs2000_against_ground_truth(tmp_path):
    """The synthetic city's DEM (CGCS2000 Gauss-Kruger, 1 m): tile vertices at the
    finest level against the analytic terrain (the oracle), not the DEM."""
    from twin.synth.city import make_city
    from twin.synth.params import PRESETS
    from twin.synth.terrain import write_dem

    spec = PRESETS["small"]
    city = make_city(spec)
    dem_file = tmp_path / "dem.tif"
    write_dem(city, spec, dem_file)
    out = tmp_path / "tiles"
    summary = write_terrain_tiles(dem_file, out, max_error=0.25)
    z = summary["max_zoom"]
    assert z == 19  # 1 m pixels
    tr = pyproj.Transformer.from_crs(4326, city.crs, always_xy=True)
    x0, y0, x1, y1 = tile_range(summary["bounds"], z)
    bx0, by0, bx1, by1 = city.bounds
    dem = read_dem(dem_file)
    worst = 0.0
    sq = []
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            t, _ = read_tile(out, z, x, y)
            ll = t["lonlat_h"]
            px, py = (np.asarray(v) for v in tr.transform(ll[:, 0], ll[:, 1]))
            # inside the DEM's pixel centres (bilinear there, no edge clamping)
            inside = (px > bx0 + 0.5) & (px < bx1 - 0.5) & (py > by0 + 0.5) & (py < by1 - 0.5)
            truth = np.asarray(city.terrain(px[inside], py[inside]), dtype=float)
            interp = dem.sample(px[inside], py[inside])  # the DEM's own bilinear error
            half = (t["max_height"] - t["min_height"]) / QMAX / 2
            got = t["heights"][inside]
            extra = np.abs(got - truth) - np.abs(interp - truth) - half
            if extra.size:
                worst = max(worst, float(extra.max()))
                sq.append((got - truth) ** 2)
    sq = np.concatenate(sq)
    assert sq.size > 1000
    assert worst < 1e-3  # the tiles add nothing at the vertices beyond quantisation
    assert np.sqrt(sq.mean()) < 0.05  # RMSE vs the analytic terrain (measured 0.018 m)


def test_real_dem_with_a_custom_wkt(shared_data, tmp_path):
    """Olinda, 90 m, a UTM 25S WKT without an EPSG code: every finest-level vertex
    over the DEM matches it (pyproj + bilinear, independently) within quantisation."""
    path = shared_data / "dem" / "stars_olinda_dem_utm25s.tif"
    summary = write_terrain_tiles(path, tmp_path / "t", max_error=2.0)
    assert summary["max_zoom"] == 12  # 90 m pixels
    assert all(lv["max_error_reached"] <= lv["max_error"] for lv in summary["levels"])
    dem = read_dem(path)
    z = summary["max_zoom"]
    x0, y0, x1, y1 = tile_range(summary["bounds"], z)
    n = 0
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            t, b = read_tile(tmp_path / "t", z, x, y)
            ref, _ = reference_grid(dem, b)
            col = np.rint(t["u"] / QMAX * (GRID - 1)).astype(int)
            row = np.rint(t["v"] / QMAX * (GRID - 1)).astype(int)
            at = ref[row, col]
            ok = np.isfinite(at)
            half = (t["max_height"] - t["min_height"]) / QMAX / 2 + 1e-4
            assert np.all(np.abs(t["heights"][ok] - at[ok]) <= half)
            n += ok.sum()
    assert n > 500
