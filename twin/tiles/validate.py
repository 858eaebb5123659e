"""Validators for what the tiles stage writes.

* :func:`validate_tileset`: the official 3D Tiles 1.1 JSON schemas (Draft 2020-12,
  found in ``<repo>/../shared/data/schemas/3d-tiles-1.1`` or ``$TWIN_SCHEMAS``) plus
  rules a schema cannot express: geometric error never increases from a tile to its
  children, every child's (and content's) bounding volume lies inside its parent
  tile's (boxes and spheres; regions are not checked), the root has ``refine`` and
  it is ``ADD`` or ``REPLACE``, local content files exist, GLB contents are 8-byte
  aligned (file length and BIN data start), external tilesets follow the same rules.
* :func:`validate_glb`: the Khronos glTF validator (npm ``gltf-validator``, installed
  into ``<repo>/node_modules`` by ``./dev setup`` or found in ``$TWIN_NODE_MODULES``),
  run by Node.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from twin.errors import InputError, TwinError

_BASE_URI = "https://twin.invalid/3d-tiles-1.1/"
_REPO = Path(__file__).resolve().parents[2]
_TOL = 1e-3  # metres: how far a child volume may poke out of its parent's


def schema_dir() -> Path:
    """Folder of the 3D Tiles 1.1 schemas (``$TWIN_SCHEMAS`` overrides)."""
    env = os.environ.get("TWIN_SCHEMAS")
    return Path(env) if env else _REPO.parent / "shared/data/schemas/3d-tiles-1.1"


@functools.lru_cache(maxsize=4)
def _validator(folder: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    root = Path(folder)
    if not (root / "tileset.schema.json").exists():
        raise InputError("3D Tiles schemas not found (set TWIN_SCHEMAS)", path=root)
    resources = []
    for f in sorted(root.rglob("*.schema.json")):
        contents = json.loads(f.read_text())
        uri = _BASE_URI + f.relative_to(root).as_posix()
        contents = dict(contents)
        contents["$id"] = uri  # the files' own ids are relative to their folder
        resources.append((uri, Resource.from_contents(contents, default_specification=DRAFT202012)))
    registry = Registry().with_resources(resources)
    return Draft202012Validator({"$ref": _BASE_URI + "tileset.schema.json"}, registry=registry)


def _box_corners(box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.asarray(box, dtype=np.float64)
    c, axes = b[:3], b[3:].reshape(3, 3)
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    return c + signs @ axes, c, axes


def _inside_box(points: np.ndarray, box) -> bool:
    """Whether every point lies in the (possibly flat) oriented box, within _TOL."""
    _, c, axes = _box_corners(box)
    d = points - c
    lengths = np.linalg.norm(axes, axis=1)
    for i in range(3):
        if lengths[i] > 1e-9:
            u, half = axes[i] / lengths[i], lengths[i]
        else:  # a flat box: the missing axis is normal to the other two
            u = np.cross(axes[(i + 1) % 3], axes[(i + 2) % 3])
            if np.linalg.norm(u) < 1e-12:
                continue
            u, half = u / np.linalg.norm(u), 0.0
        if np.any(np.abs(d @ u) > half + _TOL):
            return False
    return True


def _volume_points(bv: dict) -> np.ndarray | None:
    """Points whose hull contains a bounding volume (box corners, sphere box corners)."""
    if "box" in bv:
        return _box_corners(bv["box"])[0]
    if "sphere" in bv:
        c, r = np.asarray(bv["sphere"][:3], float), float(bv["sphere"][3])
        return _box_corners([*c, r, 0, 0, 0, r, 0, 0, 0, r])[0]
    return None


def _inside(child_pts: np.ndarray, parent_bv: dict) -> bool | None:
    if "box" in parent_bv:
        return _inside_box(child_pts, parent_bv["box"])
    if "sphere" in parent_bv:
        c, r = np.asarray(parent_bv["sphere"][:3], float), float(parent_bv["sphere"][3])
        return bool(np.all(np.linalg.norm(child_pts - c, axis=1) <= r + _TOL))
    return None  # regions: not checked here


def _check_glb_alignment(path: Path, where: str, out: list[str]) -> None:
    """3D Tiles asks binary content to be 8-byte aligned: the file length and the
    start of the BIN chunk's data are multiples of 8."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(20)
    size = path.stat().st_size
    if len(head) < 20:
        out.append(f"{where}: {path.name} is too short to be a GLB")
        return
    if size % 8:
        out.append(f"{where}: {path.name} is {size} bytes, not a multiple of 8")
    (json_len,) = struct.unpack_from("<I", head, 12)
    if (20 + json_len + 8) % 8 and 20 + json_len < size:
        out.append(f"{where}: {path.name}'s BIN chunk data does not start on 8 bytes")


def _check_tree(tile: dict, where: str, parent_error: float, base: Path, out: list[str]) -> None:
    err = tile.get("geometricError")
    if isinstance(err, (int, float)) and err > parent_error + 1e-9:
        out.append(f"{where}: geometricError {err} is larger than its parent's {parent_error}")
    refine = tile.get("refine")
    if refine is not None and refine not in ("ADD", "REPLACE"):
        out.append(f"{where}: refine {refine!r} is neither 'ADD' nor 'REPLACE'")
    elif refine is None and where == "root":
        out.append("root: refine is required on the root tile")
    bv = tile.get("boundingVolume", {})
    content = tile.get("content")
    if isinstance(content, dict):
        uri = content.get("uri")
        if isinstance(uri, str) and "://" not in uri and "{" not in uri:
            target = base / uri
            if not target.exists():
                out.append(f"{where}.content: file {uri!r} not found beside the tileset")
            elif target.suffix == ".glb":
                _check_glb_alignment(target, f"{where}.content", out)
            elif target.suffix == ".json":  # an external tileset: its own tree, same rules
                out.extend(f"{where}.content -> {m}" for m in validate_tileset(target))
        cbv = content.get("boundingVolume")
        pts = _volume_points(cbv) if isinstance(cbv, dict) else None
        if pts is not None and _inside(pts, bv) is False:
            out.append(f"{where}.content: boundingVolume is not inside the tile's")
    for i, child in enumerate(tile.get("children", []) or []):
        if not isinstance(child, dict):
            continue
        cbv = child.get("boundingVolume", {})
        pts = _volume_points(cbv) if isinstance(cbv, dict) else None
        if pts is not None:
            if "transform" in child:
                m = np.asarray(child["transform"], float).reshape(4, 4).T
                pts = pts @ m[:3, :3].T + m[:3, 3]
            if _inside(pts, bv) is False:
                out.append(f"{where}.children[{i}]: boundingVolume is not inside its parent's")
        _check_tree(
            child,
            f"{where}.children[{i}]",
            float(err) if isinstance(err, (int, float)) else np.inf,
            base,
            out,
        )


def validate_tileset(path: str | os.PathLike) -> list[str]:
    """Problems found in a ``tileset.json`` (empty list: valid).

    Each message names the JSON location. Raises :class:`InputError` when the file
    is missing or the schemas cannot be found. Memory grows with the tree size.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("tileset file not found", path=path)
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"not valid JSON: {exc}"]
    validator = _validator(str(schema_dir()))
    out = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        loc = "/".join(str(p) for p in e.absolute_path) or "(root)"
        out.append(f"schema: {loc}: {e.message}")
    if out or not isinstance(doc, dict):
        return out
    root = doc.get("root", {})
    top = doc.get("geometricError", np.inf)
    _check_tree(root, "root", float(top), path.parent, out)
    return out


_NODE_SCRIPT = r"""
const fs = require('fs');
const validator = require(process.argv[1]);
const data = fs.readFileSync(process.argv[2]);
validator.validateBytes(new Uint8Array(data), {uri: process.argv[3], maxIssues: 200})
  .then((r) => { process.stdout.write(JSON.stringify(r)); })
  .catch((e) => { process.stderr.write(String(e)); process.exit(2); });
"""


def node_validator_path() -> Path:
    """``node_modules/gltf-validator`` (``$TWIN_NODE_MODULES`` overrides the folder)."""
    env = os.environ.get("TWIN_NODE_MODULES")
    return (Path(env) if env else _REPO / "node_modules") / "gltf-validator"


def validate_glb(path: str | os.PathLike, timeout: float = 120.0) -> dict:
    """Run the Khronos glTF validator on a GLB/glTF file; return its JSON report
    (``report["issues"]["numErrors"]``, ``numWarnings``, ``messages``, ...).

    Raises :class:`InputError` for a missing file and :class:`TwinError` when Node
    or the npm package is missing (run ``./dev setup``) or the validator crashes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file to validate not found", path=path)
    node = shutil.which("node")
    if node is None:
        raise TwinError("Node.js is not installed: the glTF validator needs it (./dev setup)")
    pkg = node_validator_path()
    if not (pkg / "package.json").exists():
        raise TwinError(f"npm package gltf-validator not found in {pkg.parent} (./dev setup)")
    proc = subprocess.run(
        [node, "-e", _NODE_SCRIPT, str(pkg), str(path), path.name],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise TwinError(f"gltf-validator failed on {path}: {proc.stderr.strip()[:500]}")
    return json.loads(proc.stdout)
