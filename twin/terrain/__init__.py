"""twin.terrain: DEMs in any CRS, error-bounded TINs (Numba), terrain meshes.

* :func:`read_dem` -> :class:`Dem` (rasterio; nodata masks, custom WKT);
* :func:`tin` (greedy Delaunay refinement or RTIN, the error bound guaranteed;
  constraint edges, tiles in parallel with matching borders);
  :func:`twin.terrain.windowed.tin_file` for DEM files larger than memory (tiles
  from windowed reads, memory bounded by the tile size plus the output);
* :func:`footprint_base_heights`, :func:`seated_tin` (buildings on the ground),
  :func:`terrain_heights_at`;
* :func:`dem_to_mesh` (a regular-grid mesh in the local ENU frame);
* :func:`write_terrain_tiles` (quantized-mesh-1.0 pyramid + layer.json for CesiumJS),
  :func:`encode_tile` / :func:`decode_tile`.

``twin.terrain.tin`` is the function; the module is ``twin.terrain.tin`` for imports
(``from twin.terrain.tin import tin_errors``).
"""

from twin.terrain.dem import Dem, read_dem
from twin.terrain.gridmesh import dem_to_mesh
from twin.terrain.quantized_mesh import decode_tile, encode_tile
from twin.terrain.seating import footprint_base_heights, seated_tin, terrain_heights_at
from twin.terrain.tiling import tile_bounds, write_terrain_tiles
from twin.terrain.tin import tin, tin_errors

__all__ = [
    "Dem",
    "decode_tile",
    "dem_to_mesh",
    "encode_tile",
    "footprint_base_heights",
    "read_dem",
    "seated_tin",
    "terrain_heights_at",
    "tile_bounds",
    "tin",
    "tin_errors",
    "write_terrain_tiles",
]
