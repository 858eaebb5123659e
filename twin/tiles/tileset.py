"""A minimal 3D Tiles 1.1 tileset: :func:`write_tileset`.

Layout: the root tile carries ``transform`` = the local frame's ENU -> ECEF matrix
(column-major, ``frame.enu_to_ecef_matrix().T.ravel()``), so every bounding volume
below it is in ENU metres (z up) and GLB content (glTF y-up, see
:mod:`twin.tiles.gltf`) is placed by the standard y-up -> z-up rotation followed by
that transform. With one content the root holds it; with several, the root has one
leaf child per content (``geometricError`` 0 by default, ``refine`` "REPLACE" on
the root). Every tile has a tight oriented ``box`` (axis-aligned in ENU) around its
content's vertices, padded by :data:`BOX_PAD` to cover float32 rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.crs import LocalFrame
from twin.errors import ParameterError
from twin.fileio import write_json

BOX_PAD = 0.001  # metres added to every half-length (float32 content, flat tiles)


@dataclass
class TileContent:
    """One content file of a tileset: ``uri`` relative to ``tileset.json``; its vertices
    (N, 3) in the frame's ENU metres (for the bounding box); its geometric error (m)."""

    uri: str
    vertices: np.ndarray
    geometric_error: float = 0.0


def enu_box(vertices: np.ndarray, pad: float = BOX_PAD) -> list[float]:
    """3D Tiles ``box`` (12 numbers) of the axis-aligned ENU bounds of ``vertices``."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if len(v) == 0 or not np.all(np.isfinite(v)):
        raise ParameterError("a tile's vertices are empty or not finite")
    lo, hi = v.min(axis=0), v.max(axis=0)
    c = (lo + hi) / 2.0
    h = (hi - lo) / 2.0 + pad
    return [float(x) for x in (*c, h[0], 0, 0, 0, h[1], 0, 0, 0, h[2])]


def write_tileset(
    out_dir: str | os.PathLike,
    contents: list[TileContent],
    frame: LocalFrame,
    geometric_error: float,
    *,
    name: str = "tileset.json",
    extras: dict | None = None,
) -> Path:
    """Write ``out_dir/name`` (3D Tiles 1.1) for GLB ``contents`` already in ``out_dir``.

    ``geometric_error`` (m) is the root's (and the tileset's) error: the size of
    what disappears when nothing is drawn. Written to a temporary name, then
    renamed. Returns the path. Memory grows with the content vertex count (bounds).
    """
    from twin import __version__

    if not contents:
        raise ParameterError("a tileset needs at least one content")
    if not geometric_error >= 0:
        raise ParameterError(f"geometric_error must be >= 0, got {geometric_error!r}")
    for c in contents:
        if not 0 <= c.geometric_error <= geometric_error:
            raise ParameterError(
                f"content {c.uri}: geometric error {c.geometric_error} must be within "
                f"0..{geometric_error} (the root's)"
            )
    all_v = np.concatenate(
        [np.asarray(c.vertices, dtype=np.float64).reshape(-1, 3) for c in contents]
    )
    root: dict = {
        "transform": [float(x) for x in frame.enu_to_ecef_matrix().T.ravel()],
        "boundingVolume": {"box": enu_box(all_v)},
        "geometricError": float(geometric_error),
        "refine": "REPLACE",
    }
    if len(contents) == 1:
        root["content"] = {"uri": contents[0].uri}
    else:
        root["children"] = [
            {
                "boundingVolume": {"box": enu_box(c.vertices)},
                "geometricError": float(c.geometric_error),
                "content": {"uri": c.uri},
            }
            for c in contents
        ]
    meta = {
        "generator": f"twin {__version__}",
        "frame": frame.to_dict(),
        "content_frame": "glTF y-up of the ENU frame (x=E, y=U, z=-N)",
        "heights": "ellipsoidal",
    }
    meta.update(extras or {})
    doc = {
        "asset": {"version": "1.1", "extras": meta},
        "geometricError": float(geometric_error),
        "root": root,
    }
    path = Path(out_dir) / name
    write_json(path, doc)
    return path
