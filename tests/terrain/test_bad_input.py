"""Every bad input the terrain stage can meet is a clear TwinError (one per case)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from twin.errors import CRSError, InputError, ParameterError
from twin.terrain import dem as dem_module
from twin.terrain.dem import read_dem
from twin.terrain.tin import tin

from .test_dem import plane_grid, write_dem


@pytest.mark.parametrize("fill", ["nan", "nodata"])
def test_nan_only_or_all_nodata_raster(tmp_path, fill):
    z = np.full((10, 12), np.nan if fill == "nan" else -9999.0)
    path = write_dem(tmp_path / f"{fill}.tif", z)
    with pytest.raises(InputError, match="every DEM cell") as exc:
        read_dem(path)
    assert str(path) in str(exc.value) or path.name in str(exc.value)
    with pytest.raises(InputError, match="no valid sample"):
        tin(np.full((10, 12), np.nan), 1.0)
    with pytest.raises(InputError, match="no valid sample"):
        tin(np.zeros((10, 12)), 1.0, mask=np.zeros((10, 12), bool), tile_size=32)


def test_single_row_raster(tmp_path):
    path = write_dem(tmp_path / "row.tif", plane_grid(1, 30))
    d = read_dem(path)
    for kwargs in ({}, {"mode": "rtin"}, {"tile_size": 32}):
        with pytest.raises(InputError, match="at least 2 rows"):
            tin(d.heights, 1.0, transform=d.transform, **kwargs)


def test_crs_pyproj_cannot_read(tmp_path):
    path = write_dem(tmp_path / "plane.tif", plane_grid())
    with pytest.raises(CRSError):
        read_dem(path, crs="not a coordinate reference system")
    with pytest.raises(CRSError):
        read_dem(path, crs="EPSG:999999")


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_zero_or_negative_max_error(bad):
    import shapely

    from twin.terrain.seating import seated_tin

    h = np.zeros((8, 8))
    for kwargs in ({}, {"mode": "rtin"}, {"tile_size": 16}):
        with pytest.raises(ParameterError, match="max_error"):
            tin(h, bad, **kwargs)
    with pytest.raises(ParameterError, match="max_error"):
        seated_tin(h, [shapely.box(1, 1, 3, 3)], bad)


def test_cli_reports_bad_max_error_in_one_line(tmp_path):
    from twin.cli import main

    path = write_dem(tmp_path / "plane.tif", plane_grid())
    res = CliRunner().invoke(
        main, ["terrain", "tin", str(path), str(tmp_path / "o.ply"), "--max-error", "0"]
    )
    assert res.exit_code == 2
    assert "max_error" in res.output and "Traceback" not in res.output


def test_raster_too_large_for_memory_without_tiling(tmp_path, monkeypatch):
    path = write_dem(tmp_path / "plane.tif", plane_grid(30, 40))
    monkeypatch.setattr(dem_module, "available_memory", lambda: 10_000)
    with pytest.raises(InputError, match="window") as exc:
        read_dem(path)
    assert "plane.tif" in str(exc.value)
    # a window that fits is read, with its own transform
    d = read_dem(path, window=(5, 10, 8, 9))
    full = plane_grid(30, 40)
    assert np.allclose(d.heights, full[5:13, 10:19], atol=1e-3)
    assert d.transform.c == pytest.approx(500_000.0 + 10 * 2.0)
    # triangulating at once is refused; tiles bound the memory
    h = full[:25, :25]
    with pytest.raises(InputError, match="tile_size"):
        tin(h, 0.1)
    v, f, r = tin(h, 0.1, tile_size=16)
    assert r <= 0.1 and len(f) >= 2
    with pytest.raises(ParameterError, match="window"):
        read_dem(path, window=(25, 0, 10, 10))
    with pytest.raises(ParameterError, match="tile_size"):
        tin(h, 0.1, tile_size=4)


def test_nodata_hole_never_a_spike_or_pit():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(60, 60)).cumsum(0).cumsum(1) * 0.05
    valid = np.ones(h.shape, bool)
    valid[20:35, 15:40] = False
    h_bad = np.where(valid, h, -9999.0)  # the nodata value itself in the grid
    for kwargs in ({}, {"mode": "rtin"}, {"tile_size": 24}):
        v, f, _ = tin(h_bad, 0.2, mask=valid, **kwargs)
        assert v[:, 2].min() >= h[valid].min() and v[:, 2].max() <= h[valid].max()
