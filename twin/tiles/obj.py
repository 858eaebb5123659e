"""Plain Wavefront OBJ of a model for desktop tools (Blender, MeshLab, CloudCompare).

:func:`write_obj` writes one ``o`` object per mesh in local ENU metres (x east,
y north, z up), vertex colours as the widely read ``v x y z r g b`` extension, and a
header comment with the frame (origin longitude/latitude/height, ENU -> ECEF matrix)
so the file can be placed on the globe again. Written to a temporary name, then
renamed. Memory grows with the text of one mesh.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from twin.crs import LocalFrame
from twin.errors import ParameterError
from twin.fileio import atomic_path


def write_obj(path: str | os.PathLike, meshes: list, frame: LocalFrame | None = None) -> Path:
    """Write :class:`~twin.tiles.gltf.GltfMesh` es (ENU) as one OBJ file; returns it."""
    if not meshes:
        raise ParameterError("write_obj needs at least one mesh")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="ascii") as out:
        out.write("# twin model: local ENU metres (x east, y north, z up)\n")
        if frame is not None:
            out.write(f"# frame: {json.dumps(frame.to_dict(), separators=(',', ':'))}\n")
        base = 1
        for m in meshes:
            v = np.asarray(m.positions, np.float64)
            f = np.asarray(m.indices, np.int64).reshape(-1, 3)
            out.write(f"o {m.name}\n")
            buf = io.StringIO()
            if m.colors is not None:
                c = np.asarray(m.colors)
                c = c[:, :3].astype(np.float64) / (255.0 if c.dtype == np.uint8 else 1.0)
                np.savetxt(
                    buf, np.hstack([v, np.clip(c, 0, 1)]), fmt="v %.4f %.4f %.4f %.4f %.4f %.4f"
                )
            else:
                np.savetxt(buf, v, fmt="v %.4f %.4f %.4f")
            np.savetxt(buf, f + base, fmt="f %d %d %d")
            out.write(buf.getvalue())
            base += len(v)
    return path
