"""Small meshes with known geometry for the tiles tests."""

import numpy as np


def box_mesh(lo, hi):
    """A closed, outward axis-aligned box (8 vertices, 12 CCW triangles)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array(
        [[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])]
    )
    f = np.array(
        [
            [0, 2, 1],
            [1, 2, 3],
            [4, 5, 6],
            [5, 7, 6],
            [0, 1, 4],
            [1, 5, 4],
            [2, 6, 3],
            [3, 6, 7],
            [0, 4, 2],
            [2, 4, 6],
            [1, 3, 5],
            [3, 7, 5],
        ]
    )
    return v, f
