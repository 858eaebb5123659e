"""Buildings on the ground: base heights from the terrain against the survey's truth,
and a seated terrain TIN that meets every wall bottom with no gap."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from twin.errors import ParameterError
from twin.terrain.seating import (
    _ring_points,
    footprint_base_heights,
    seated_tin,
    terrain_heights_at,
)
from twin.terrain.tin import tin_errors


@pytest.fixture(scope="module")
def survey_terrain(small_survey):
    import geopandas as gpd

    from twin.terrain.dem import read_dem

    dem = read_dem(small_survey / "dem.tif")
    fp = gpd.read_file(small_survey / "footprints.gpkg")
    assert len(fp) > 5
    return dem, fp


@pytest.mark.parametrize("stat", ["min", "median"])
def test_base_heights_match_the_survey_truth(survey_terrain, stat):
    dem, fp = survey_terrain
    base = footprint_base_heights(fp, dem, stat)
    # the synthetic terrain has a flat pad at each building's true base height
    assert np.abs(base - fp["base_height"].to_numpy()).max() < 0.01


def test_base_heights_from_a_tin_and_on_a_slope():
    h = np.add.outer(np.arange(50.0) * 0.2, np.arange(60.0) * 0.1)  # z = 0.2 row + 0.1 col
    sq = shapely.box(10.0, 10.0, 20.0, 30.0)  # grid units: x = col, y = row
    lo = footprint_base_heights([sq], h, "min")[0]
    med = footprint_base_heights([sq], h, "median")[0]
    assert lo == pytest.approx(0.1 * 10 + 0.2 * 10)
    assert med == pytest.approx(0.1 * 15 + 0.2 * 20, abs=0.05)
    verts = np.array([[0, 0, 0.0], [59, 0, 5.9], [59, 49, 15.7], [0, 49, 9.8]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    assert footprint_base_heights([sq], (verts, faces), "min")[0] == pytest.approx(3.0)
    z = terrain_heights_at(verts, faces, [10.0, 59.0, 70.0], [10.0, 49.0, 10.0])
    assert z[0] == pytest.approx(3.0) and z[1] == pytest.approx(15.7) and np.isnan(z[2])


@pytest.mark.parametrize("tile_size", [None, pytest.param(64, marks=pytest.mark.slow)])
def test_seated_terrain_meets_every_wall(survey_terrain, tile_size):
    dem, fp = survey_terrain
    max_error = 0.1
    verts, faces, reached, base = seated_tin(dem, fp, max_error, tile_size=tile_size)
    assert reached <= max_error
    truth = fp["base_height"].to_numpy()
    assert np.abs(base - truth).max() < 0.01
    for geom, b in zip(fp.geometry, base, strict=True):
        # walls stand on the rings from the base height: the terrain there is the base
        ring = _ring_points(geom, 0.05)
        z = terrain_heights_at(verts, faces, ring[:, 0], ring[:, 1])
        assert np.isfinite(z).all()
        assert np.abs(z - b).max() < 0.01
        # no terrain above the base inside the footprint (vertices and a dense grid)
        inside = shapely.contains_xy(geom, verts[:, 0], verts[:, 1])
        assert (verts[inside, 2] <= b + 1e-9).all()
        x0, y0, x1, y1 = geom.bounds
        gx, gy = np.meshgrid(np.linspace(x0, x1, 25), np.linspace(y0, y1, 25))
        m = shapely.contains_xy(geom, gx.ravel(), gy.ravel())
        zi = terrain_heights_at(verts, faces, gx.ravel()[m], gy.ravel()[m])
        assert np.abs(zi - b).max() < 1e-6
    # away from the footprints the bound to the DEM holds
    inv = ~dem.transform
    gv = np.column_stack(
        [
            inv.a * verts[:, 0] + inv.b * verts[:, 1] + inv.c - 0.5,
            inv.d * verts[:, 0] + inv.e * verts[:, 1] + inv.f - 0.5,
            verts[:, 2],
        ]
    )
    err, _ = tin_errors(gv, faces, dem.heights)
    rows, cols = np.nonzero(np.isfinite(err))
    px = dem.transform.c + (cols + 0.5) * dem.transform.a
    py = dem.transform.f + (rows + 0.5) * dem.transform.e
    covered = np.zeros(len(rows), bool)
    for geom in fp.geometry:
        covered |= shapely.dwithin(geom, shapely.points(px, py), 1e-6)
    assert err[rows[~covered], cols[~covered]].max() <= max_error + 1e-9


def test_seating_bad_input():
    h = np.zeros((20, 20))
    sq = shapely.box(2.0, 2.0, 6.0, 6.0)
    with pytest.raises(ParameterError, match="stat"):
        footprint_base_heights([sq], h, "mean")
    with pytest.raises(ParameterError, match="not a polygon"):
        footprint_base_heights([shapely.LineString([(0, 0), (1, 1)])], h)
    with pytest.raises(ParameterError, match="base heights"):
        seated_tin(h, [sq], 0.1, base_heights=[1.0, 2.0])
    # a footprint off the raster gets NaN (and is not seated), the rest still works
    far = shapely.box(100.0, 100.0, 110.0, 110.0)
    assert np.isnan(footprint_base_heights([far], h)[0])
    v, f, r, base = seated_tin(h + 1.0, [sq, far], 0.1, base_heights=[0.5, np.nan])
    on = shapely.intersects_xy(sq, v[:, 0], v[:, 1])  # the ring's corners
    assert on.sum() == 4 and np.all(v[on, 2] == 0.5)
    assert np.all(v[~on, 2] == 1.0)


def test_cli_seats_footprints_and_forces_constraints(small_survey, tmp_path):
    import json

    import geopandas as gpd
    from click.testing import CliRunner

    from twin.cli import main

    dem = str(small_survey / "dem.tif")
    fp = str(small_survey / "footprints.gpkg")
    out = tmp_path / "seated.ply"
    args = ["terrain", "tin", dem, str(out), "--max-error", "0.2", "--footprints", fp]
    res = CliRunner().invoke(main, [*args, "--tile-size", "64", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    truth = gpd.read_file(fp)["base_height"].to_numpy()
    assert np.abs(np.array(summary["base_heights"]) - truth).max() < 0.01
    assert summary["max_error_reached"] <= 0.2 and out.exists()
    res = CliRunner().invoke(
        main, ["terrain", "tin", dem, str(out), "--max-error", "0.2", "--constraints", "nope.gpkg"]
    )
    assert res.exit_code == 2 and "nope.gpkg" in res.output
