"""twin.terrain: DEMs in any CRS, error-bounded TINs (Numba), terrain meshes.

* :func:`read_dem` -> :class:`Dem` (rasterio; nodata masks, custom WKT);
* :func:`tin` (greedy Delaunay refinement or RTIN, the error bound guaranteed);
* :func:`dem_to_mesh` (a regular-grid mesh in the local ENU frame).

``twin.terrain.tin`` is the function; the module is ``twin.terrain.tin`` for imports
(``from twin.terrain.tin import tin_errors``).
"""

from twin.terrain.dem import Dem, read_dem
from twin.terrain.gridmesh import dem_to_mesh
from twin.terrain.tin import tin, tin_errors

__all__ = ["Dem", "dem_to_mesh", "read_dem", "tin", "tin_errors"]
