"""One-call mesh storage optimisation: weld -> simplify -> cache -> overdraw -> fetch ->
quantise -> compress.

:func:`optimize` reads a mesh (arrays, a ``trimesh.Trimesh`` or a PLY/OBJ/GLB file),
and writes a GLB (``codec="meshopt"``: KHR_mesh_quantization + EXT_meshopt_compression;
``"draco"``: KHR_draco_mesh_compression, DracoPy level 7, no uncompressed fallback;
``"none"``: plain float32 GLB; all through :func:`twin.tiles.gltf.write_glb`) or our
own archive (``"twin"``: :func:`twin.mesh.encode`). Positions only: normals, UVs and
colours of the input are not carried (the output is for storage and streaming of the geometry).

Frames: arrays, PLY and OBJ are taken as z-up (ENU metres, twin's convention) and
written to glTF's y-up frame as :func:`twin.tiles.gltf.write_glb` does; GLB input
is y-up already and is turned to z-up on reading, so a GLB round trip keeps its
frame.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError, OutputError, ParameterError, TwinError
from twin.fileio import atomic_path

__all__ = ["CODECS", "OptimizeResult", "optimize", "read_mesh"]

log = logging.getLogger(__name__)

CODECS = ("meshopt", "draco", "twin", "none")
READ_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")


@dataclass
class OptimizeResult:
    """What :func:`optimize` did: counts and sizes before and after, and timings.

    ``input_bytes``: size of the input file (None for arrays); ``raw_bytes``: the
    input mesh as float32 positions + uint32 indices; ``output_bytes``: size of what
    was written (or would be). ``simplify_error``: the measured geometric error of
    the simplification in mesh units (0 without it); ``quantization_step``: the
    position grid step (half of it is the largest quantisation error).
    ``vertices``/``faces``: the optimised mesh before quantisation (not in JSON).
    """

    codec: str
    bits: int
    input_vertices: int
    input_faces: int
    output_vertices: int
    output_faces: int
    input_bytes: int | None
    raw_bytes: int
    output_bytes: int
    simplify_error: float
    quantization_step: float
    seconds: dict = field(default_factory=dict)
    path: str | None = None
    vertices: np.ndarray | None = field(default=None, repr=False)
    faces: np.ndarray | None = field(default=None, repr=False)
    data: bytes | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        """``raw_bytes / output_bytes``."""
        return self.raw_bytes / self.output_bytes if self.output_bytes else float("inf")

    def as_dict(self) -> dict:
        """JSON-ready summary (no arrays)."""
        d = asdict(self)
        for k in ("vertices", "faces", "data"):
            d.pop(k)
        d["bytes_per_triangle"] = self.output_bytes / max(self.output_faces, 1)
        d["ratio"] = self.ratio
        return d


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh file (PLY, OBJ, GLB/glTF, STL, OFF) with trimesh:
    ``(vertices float64 (N, 3) z-up, faces uint32 (M, 3))``; a scene's meshes are
    concatenated with their node transforms applied. A GLB with
    EXT_meshopt_compression or KHR_mesh_quantization content (what ``twin mesh
    optimize`` and gltfpack write) is decoded by twin's own glTF reader, and a twin
    mesh archive (:func:`twin.mesh.encode`, any file name) by :func:`decode`. Raises
    :class:`InputError` naming the file when it is missing, unreadable or has no
    triangles."""
    import trimesh

    path = Path(path)
    if not path.exists():
        raise InputError("mesh file not found", path=path)
    if _is_archive(path):  # twin's own archive (``--codec twin``), whatever its name
        from twin.mesh.codec import decode

        vertices, faces = decode(path)
        return vertices, faces
    suffix = path.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise InputError(
            f"unsupported mesh format {suffix or '(none)'}; use one of {', '.join(READ_SUFFIXES)}",
            path=path,
        )
    if suffix == ".glb" and _compressed_glb(path):
        vertices, faces = _read_compressed_glb(path)
    else:
        try:
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as exc:  # trimesh raises many kinds for a bad file
            raise InputError(f"cannot read mesh: {exc}", path=path) from None
        faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))))
        vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), np.float64)
    if faces.ndim != 2 or faces.shape[0] == 0 or faces.shape[1] != 3:
        raise InputError("the file holds no triangles", path=path)
    if suffix in (".glb", ".gltf"):
        from twin.tiles.gltf import gltf_to_enu

        vertices = gltf_to_enu(vertices)
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces, dtype=np.uint32)


#: glTF extensions whose content trimesh does not decode; twin's own reader does.
_TWIN_READS = ("EXT_meshopt_compression", "KHR_mesh_quantization")
#: Largest value of each normalised integer component type (glTF 2.0, 3.11).
_NORM = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0}


def _is_archive(path: Path) -> bool:
    from twin.mesh.codec import MAGIC

    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False  # read_mesh's other branches give the message


def _compressed_glb(path: Path) -> bool:
    from twin.tiles.gltf import read_glb_json

    try:
        doc, _ = read_glb_json(path)
    except TwinError:
        return False  # trimesh gives the message
    return any(e in doc.get("extensionsUsed", []) for e in _TWIN_READS)


def _node_matrix(node: dict) -> np.ndarray:
    """A glTF node's local transform (``matrix``, or T * R * S)."""
    if "matrix" in node:
        return np.array(node["matrix"], np.float64).reshape(4, 4).T  # column-major
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m = np.eye(4)
    m[:3, :3] = r * np.asarray(node.get("scale", [1.0, 1.0, 1.0]), np.float64)
    m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return m


def _read_compressed_glb(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of a GLB with EXT_meshopt_compression / KHR_mesh_quantization
    content, decoded by :func:`twin.tiles.gltf.read_glb`, with normalised positions
    scaled back and every node's world transform applied (glTF y-up frame)."""
    from twin.tiles.gltf import read_glb, read_glb_json

    doc, _ = read_glb_json(path)
    prims = read_glb(path)
    try:
        meshes = doc.get("meshes", [])
        first = np.cumsum([0] + [len(m["primitives"]) for m in meshes])
        nodes = doc.get("nodes", [])
        if doc.get("scenes"):
            roots = doc["scenes"][doc.get("scene", 0)].get("nodes", [])
        else:
            children = {c for n in nodes for c in n.get("children", [])}
            roots = [i for i in range(len(nodes)) if i not in children]
        verts, faces, count = [], [], 0
        stack = [(i, np.eye(4)) for i in roots]
        while stack:
            i, parent = stack.pop()
            world = parent @ _node_matrix(nodes[i])
            if "mesh" in nodes[i]:
                for k, prim in enumerate(meshes[nodes[i]["mesh"]]["primitives"]):
                    if prim.get("mode", 4) != 4:
                        continue  # points and lines carry no triangles
                    item = prims[first[nodes[i]["mesh"]] + k]
                    acc = doc["accessors"][prim["attributes"]["POSITION"]]
                    p = np.asarray(item["positions"], np.float64).reshape(-1, 3)
                    if acc.get("normalized"):
                        p = np.maximum(p / _NORM[acc["componentType"]], -1.0)
                    verts.append(p @ world[:3, :3].T + world[:3, 3])
                    faces.append(np.asarray(item["indices"], np.int64) + count)
                    count += len(p)
            stack.extend((c, world) for c in nodes[i].get("children", []))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError(f"cannot read mesh: malformed glTF ({exc})", path=path) from None
    if not faces:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    return np.concatenate(verts), np.concatenate(faces)


def _source(mesh_or_path) -> tuple[np.ndarray, np.ndarray, int | None, str | None]:
    if isinstance(mesh_or_path, str | os.PathLike):
        v, f = read_mesh(mesh_or_path)
        return v, f, Path(mesh_or_path).stat().st_size, os.fspath(mesh_or_path)
    # arrays are converted (and checked) by check_mesh, which names what is wrong
    if hasattr(mesh_or_path, "vertices") and hasattr(mesh_or_path, "faces"):
        return mesh_or_path.vertices, mesh_or_path.faces, None, None
    if isinstance(mesh_or_path, dict) and {"vertices", "faces"} <= mesh_or_path.keys():
        return mesh_or_path["vertices"], mesh_or_path["faces"], None, None
    if isinstance(mesh_or_path, tuple | list) and len(mesh_or_path) == 2:
        return mesh_or_path[0], mesh_or_path[1], None, None
    raise ParameterError(
        "optimize takes a mesh file path, a (vertices, faces) pair, a dict with "
        "'vertices' and 'faces' or a trimesh.Trimesh, "
        f"got {type(mesh_or_path).__name__}"
    )


def _check_options(simplify, bits, codec) -> tuple[float | None, int, str]:
    if codec not in CODECS:
        raise ParameterError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 16:
        raise ParameterError(f"bits must be an integer in 1..16, got {bits!r}")
    if simplify is not None:
        try:
            simplify = float(simplify)
        except (TypeError, ValueError):
            raise ParameterError(f"simplify must be a ratio in (0, 1], got {simplify!r}") from None
        if not 0.0 < simplify <= 1.0:
            raise ParameterError(f"simplify must be a ratio in (0, 1], got {simplify}")
    return simplify, int(bits), codec


def optimize(
    mesh_or_path,
    out: str | os.PathLike | None = None,
    *,
    simplify: float | None = None,
    bits: int = 14,
    codec: str = "meshopt",
    weld_tol: float = 0.0,
    lock_border: bool = False,
    overdraw: float | None = 1.05,
) -> OptimizeResult:
    """Weld, optionally simplify, reorder, quantise and compress a mesh.

    Parameters
    ----------
    mesh_or_path : a mesh file (PLY, OBJ, GLB, ...; see :func:`read_mesh`), a
        ``(vertices, faces)`` pair, a dict with ``"vertices"`` and ``"faces"`` or a
        ``trimesh.Trimesh`` (any object with ``.vertices`` and ``.faces``).
    out : where to write the result (GLB for ``meshopt``/``draco``/``none``, our
        archive for ``twin``), atomically; None computes the bytes only
        (``result.data``).
    simplify : keep this fraction of the triangles (0 < ratio <= 1) with
        :func:`twin.mesh.simplify`; None skips simplification.
    bits : position quantisation bits per axis (KHR_mesh_quantization grid for
        meshopt, Draco's quantisation, our archive's grid).
    codec : ``"meshopt"`` (EXT_meshopt_compression; CesiumJS, three.js and Babylon
        decode it), ``"draco"`` (KHR_draco_mesh_compression, level 7), ``"twin"``
        (our archive, :func:`twin.mesh.encode`) or ``"none"`` (float32 GLB).
    weld_tol : merge vertices closer than this (mesh units; 0 = bit-identical).
    lock_border : keep open borders fixed while simplifying (tiles that must meet).
    overdraw : for GLB output (``meshopt``, ``none``), reorder triangle clusters so
        outward-facing ones draw first (:func:`twin.mesh.optimize_overdraw`, ACMR at
        most this factor worse); None skips it. The ``twin`` and ``draco`` decoders
        choose their own triangle order, so it is skipped for them. Measured
        overdraw (:func:`twin.mesh.measure_overdraw`) of a 12 k-triangle city: 1.89 ->
        1.77 in a ``none`` GLB, 1.90 -> 1.73 as meshoptimizer decodes the ``meshopt``
        GLB (its writer re-runs the vertex-cache order, which keeps the cluster order
        between disconnected parts but not inside a connected one).

    Returns an :class:`OptimizeResult` with sizes before and after.
    Memory: a few times the input arrays (weld ~100 bytes per vertex, simplify
    ~300 bytes per vertex at peak, the encoders about twice their output).
    """
    from twin.mesh.reorder import optimize_vertex_cache, optimize_vertex_fetch
    from twin.mesh.simplify import simplify as run_simplify
    from twin.mesh.weld import weld

    simplify, bits, codec = _check_options(simplify, bits, codec)
    t = {}
    t0 = time.perf_counter()
    v, f, input_bytes, src = _source(mesh_or_path)
    t["read"] = time.perf_counter() - t0
    from twin.mesh.validate import check_mesh

    v, f = check_mesh(v, f, path=src)
    n_in, m_in = len(v), len(f)
    raw_bytes = 12 * n_in + 12 * m_in

    t0 = time.perf_counter()
    v, f = weld(v, f, tol=weld_tol)
    t["weld"] = time.perf_counter() - t0
    if len(f) == 0:
        raise InputError("no triangles left after welding (all degenerate)", path=src)
    error = 0.0
    if simplify is not None and simplify < 1.0:
        t0 = time.perf_counter()
        target = max(1, int(round(len(f) * simplify)))
        r = run_simplify(v, f, target_faces=target, lock_border=lock_border)
        v, f, error = r.vertices, r.faces, r.error
        t["simplify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = optimize_vertex_cache(f, len(v))
    t["vertex_cache"] = time.perf_counter() - t0
    if overdraw is not None and codec in ("meshopt", "none"):
        from twin.mesh.overdraw import optimize_overdraw

        t0 = time.perf_counter()
        f = optimize_overdraw(v, f, threshold=overdraw)
        t["overdraw"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v, f = optimize_vertex_fetch(v, f)
    t["vertex_fetch"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step = float(np.ptp(v, axis=0).max()) / (2**bits - 1)
    if codec == "twin":
        data = _encode_twin(v, f, bits)
    else:
        from twin.tiles.gltf import GltfMesh, glb_bytes

        if codec == "draco":
            _need_draco()
        data = glb_bytes([GltfMesh(v, f)], compression=codec, bits=bits, reorder=False)
        if codec == "none":
            step = 0.0
    t["encode"] = time.perf_counter() - t0
    path = None
    if out is not None:
        _check_suffix(out, codec)
        try:
            with atomic_path(out) as tmp:
                tmp.write_bytes(data)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=out) from None
        path = os.fspath(out)
    res = OptimizeResult(
        codec=codec,
        bits=bits,
        input_vertices=n_in,
        input_faces=m_in,
        output_vertices=len(v),
        output_faces=len(f),
        input_bytes=input_bytes,
        raw_bytes=raw_bytes,
        output_bytes=len(data),
        simplify_error=float(error),
        quantization_step=step,
        seconds=t,
        path=path,
        vertices=v,
        faces=f,
        data=data,
    )
    log.info("mesh optimize: %d -> %d bytes (%s)", raw_bytes, len(data), codec)
    return res


def _check_suffix(out, codec: str) -> None:
    suffix = Path(out).suffix.lower()
    glb = codec != "twin"
    if (glb and suffix in READ_SUFFIXES and suffix != ".glb") or (
        not glb and suffix in READ_SUFFIXES
    ):
        kind = "a binary glTF (.glb)" if glb else "a twin mesh archive, not a mesh format"
        log.warning("%s: codec %r writes %s despite the %s suffix", out, codec, kind, suffix)


def _encode_twin(v: np.ndarray, f: np.ndarray, bits: int) -> bytes:
    try:
        from twin.mesh.codec import encode
    except ImportError:
        raise TwinError(
            "codec 'twin' needs the archival codec twin.mesh.encode, not available in this "
            "version; use --codec meshopt or draco"
        ) from None
    return bytes(encode(v, f, bits=bits))


def _need_draco() -> None:
    try:
        import DracoPy  # noqa: F401
    except ImportError:
        raise TwinError("codec 'draco' needs the DracoPy package (pip install DracoPy)") from None
