"""Reading meshes to texture and writing textured models.

Inputs: a binary PLY (the synthetic survey's ``truth/mesh.ply``, or any triangle
PLY), a GLB from :mod:`twin.tiles.gltf` (its ``extras.frame`` says which local
frame it is in), or OBJ/OFF/STL through trimesh. The mesh's local frame comes from
the GLB, from a ``labels.json`` beside a truth PLY, or from a ``georef.json`` beside
the file; when none is found the mesh is taken to be in the cameras' frame.

Output folder (written under a temporary name and renamed when complete):

``model.glb``
    glTF 2.0 binary, one mesh (node, primitive, material) per texture page, the page
    embedded as JPEG/WebP/PNG (PNG when KTX2 is asked for); glTF y-up frame
    ``(E, U, -N)``; ``extras.frame`` the local ENU frame.
``texture_<page>.ktx2`` (format ``ktx2``)
    The page as KTX 2.0 (RGBA8 sRGB, full mip chain, ZLIB supercompressed; see
    :mod:`twin.texture.ktx2`), beside the PNG the GLB and the OBJ use.
``model.obj``, ``model.mtl``, ``texture_<page>.<ext>``
    Wavefront OBJ in local ENU metres (x east, y north, z up) with one ``usemtl`` per
    page; texture coordinates with v pointing up (OBJ convention, ``1 - v_glTF``).
``georef.json``
    The local frame (origin lon/lat/h, ENU -> ECEF matrix), the survey CRS, the axes
    of each file and the texturing report (views used/skipped, unseen faces, seams).
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from twin.errors import InputError, OutputError, ParameterError

log = logging.getLogger(__name__)

FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
    "png": ("PNG", "image/png"),
    "ktx2": ("KTX2", "image/ktx2"),
}
GEOREF = "georef.json"


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, object]:
    """``(vertices (N, 3) float64, faces (M, 3) int64, frame or None)`` of a mesh file."""
    from twin.crs import LocalFrame

    p = Path(path)
    if not p.is_file():
        raise InputError("mesh file not found", path=p)
    frame = None
    suffix = p.suffix.lower()
    if suffix == ".glb":
        from twin.tiles.gltf import gltf_to_enu, read_glb, read_glb_json

        doc, _ = read_glb_json(p)
        prims = read_glb(p)
        if not prims:
            raise InputError("GLB has no triangle primitives", path=p)
        vs, fs, off = [], [], 0
        for pr in prims:
            vs.append(gltf_to_enu(np.asarray(pr["positions"], np.float64)))
            fs.append(np.asarray(pr["indices"], np.int64) + off)
            off += len(pr["positions"])
        v, f = np.vstack(vs), np.vstack(fs)
        fr = doc.get("extras", {}).get("frame")
        if fr:
            frame = LocalFrame.from_dict(fr)
    elif suffix == ".ply":
        from twin.synth.truth import read_truth_ply

        try:
            v, f, _, _ = read_truth_ply(p)
        except InputError as exc:
            if "non-triangle" in str(exc):
                raise
            v, f = _trimesh_load(p)
        labels = p.parent / "labels.json"
        if labels.is_file():
            try:
                frame = LocalFrame.from_dict(json.loads(labels.read_text())["frame"])
            except (KeyError, ValueError, TypeError):
                log.warning("%s has no usable frame; using the cameras' frame", labels)
    else:
        v, f = _trimesh_load(p)
    side = p.parent / GEOREF
    if frame is None and side.is_file():
        try:
            frame = LocalFrame.from_dict(json.loads(side.read_text())["frame"])
        except (KeyError, ValueError, TypeError):
            log.warning("%s has no usable frame; using the cameras' frame", side)
    if len(f) == 0:
        raise InputError("mesh has no faces", path=p)
    return v, f, frame


def _trimesh_load(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        m = trimesh.load(p, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise InputError(f"cannot read the mesh: {exc}", path=p) from None
    if not hasattr(m, "faces") or len(m.faces) == 0:
        raise InputError("not a triangle mesh (no faces)", path=p)
    return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def encode_image(page: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode an (H, W, 3) uint8 page as ``fmt`` ("jpg", "webp", "png" or "ktx2")."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ParameterError(f"texture format {fmt!r} must be one of {sorted(FORMATS)}")
    if fmt == "ktx2":
        from twin.texture.ktx2 import encode_ktx2

        return encode_ktx2(page)
    buf = io.BytesIO()
    kw = {} if fmt == "png" else {"quality": int(quality)}
    Image.fromarray(page).save(buf, FORMATS[fmt][0], **kw)
    return buf.getvalue()


def _obj_text(tm, name: str) -> str:
    """OBJ body: vertices, texture coordinates (shared indices), faces per page."""
    lines = [f"# twin texture: local ENU metres (x east, y north, z up)\nmtllib {name}.mtl\n"]
    buf = io.StringIO()
    np.savetxt(buf, tm.vertices, fmt="v %.4f %.4f %.4f")
    uv = np.column_stack([tm.uv[:, 0], 1.0 - tm.uv[:, 1]])
    np.savetxt(buf, uv, fmt="vt %.6f %.6f")
    lines.append(buf.getvalue())
    for p in range(len(tm.pages)):
        sel = tm.faces[tm.face_page == p] + 1
        if not len(sel):
            continue
        buf = io.StringIO()
        np.savetxt(buf, np.repeat(sel, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
        lines.append(f"usemtl page{p}\n" + buf.getvalue())
    return "".join(lines)


def write_textured(
    tm,
    out_dir: str | os.PathLike,
    *,
    frame=None,
    crs: dict | None = None,
    fmt: str = "jpg",
    quality: int = 90,
    overwrite: bool = False,
    extra: dict | None = None,
) -> dict:
    """Write ``tm`` (a :class:`~twin.texture.mapping.TexturedMesh`) into ``out_dir``
    (see the module docstring); returns the ``georef.json`` dict. Memory: the encoded
    pages and the OBJ text (~100 bytes per face)."""
    from twin.fileio import atomic_dir, write_json
    from twin.tiles.gltf import GltfMesh, write_glb

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", path=out)
    if out.exists() and any(out.iterdir()):
        if not (out / GEOREF).exists():
            raise OutputError(
                "folder exists and is not a textured model; not touching it", path=out
            )
        if not overwrite:
            raise OutputError("a textured model is already there (use --overwrite)", path=out)
    if fmt not in FORMATS:
        raise ParameterError(f"texture format {fmt!r} must be one of {sorted(FORMATS)}")
    ktx2 = fmt == "ktx2"
    ext = "png" if ktx2 else fmt  # glTF core and OBJ tools read PNG, not KTX2
    mime = FORMATS[ext][1]
    encoded = [encode_image(p, ext, quality) for p in tm.pages]
    files = {}
    with atomic_dir(out) as tmp:
        meshes = []
        for p, data in enumerate(encoded):
            sel = np.flatnonzero(tm.face_page == p)
            if not len(sel):
                continue
            used, inv = np.unique(tm.faces[sel], return_inverse=True)
            meshes.append(
                GltfMesh(
                    positions=tm.vertices[used],
                    indices=inv.reshape(-1, 3),
                    name=f"page{p}",
                    texcoords=tm.uv[used],
                    texture=data,
                    texture_mime=mime,
                )
            )
            (tmp / f"texture_{p}.{ext}").write_bytes(data)
            h, w = tm.pages[p].shape[:2]
            files[f"texture_{p}.{ext}"] = f"texture page {p} ({w}x{h})"
            if ktx2:
                (tmp / f"texture_{p}.ktx2").write_bytes(encode_image(tm.pages[p], "ktx2", 0))
                files[f"texture_{p}.ktx2"] = (
                    f"texture page {p} ({w}x{h}) as KTX2: RGBA8 sRGB, full mip chain, zlib"
                )
        fr = frame.to_dict() if frame is not None else None
        write_glb(tmp / "model.glb", meshes, extras={"frame": fr, "generator": "twin texture"})
        files["model.glb"] = "glTF 2.0 binary, y-up (E, U, -N), one textured mesh per page"
        mtl = "".join(
            f"newmtl page{p}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd texture_{p}.{ext}\n\n"
            for p in range(len(encoded))
        )
        (tmp / "model.mtl").write_text(mtl)
        (tmp / "model.obj").write_text(_obj_text(tm, "model"))
        files["model.obj"] = "Wavefront OBJ, local ENU metres (x east, y north, z up)"
        files["model.mtl"] = "OBJ materials, one per texture page"
        georef = {
            "frame": fr,
            "crs": crs,
            "heights": "ellipsoidal, metres",
            "axes": {
                "model.obj": "ENU: x east, y north, z up (metres from the frame origin)",
                "model.glb": "glTF y-up: (x, y, z) = (east, up, -north)",
            },
            "files": files,
            "report": tm.report,
        }
        if extra:
            georef.update(extra)
        write_json(tmp / GEOREF, georef)
    return georef
