"""3D Tiles benchmark: the city as LOD tiles vs one uncompressed GLB, what a client
fetches from far and from the street, build speed, and py3dtiles in the same run.

    .venv/bin/python benchmarks/tiles.py --json tiles.json
    .venv/bin/python benchmarks/tiles.py --quick          # small city only

Cities (synthetic surveys, no sensors, built with ``twin build`` defaults):
``small`` (240 m, the demo's), ``default`` (600 m). Plus ``mesh-1M``: the 1 M-triangle
city-like mesh of ``benchmarks/_meshes.py`` tiled as one layer (build speed per
million triangles at scale).

Per input: triangles, one-GLB bytes (``model.glb``: float32, uncompressed), all
tile bytes and bytes per triangle (full-resolution leaves; geometry only), tiles,
levels, per-level geometric error, build seconds, bytes a client fetches (CesiumJS
defaults: max SSE 16, 1080 px, 60 degrees) from 2 x the city size away and from 2 m
above a street, and gltf-validator errors/warnings over every GLB.

Every city is tiled twice in the same run: EXT_meshopt_compression (the default)
and KHR_draco_mesh_compression (``--compression draco``, DracoPy level 7), the LOD
tree and quantisation bits the same. ``textured``: the small city with its oblique
photos, ``twin build --texture``; its ``tiles/textured`` LOD tileset (one layer per
atlas page) with geometry and texture bytes counted apart, texture bytes per level,
against ``textured/model.glb`` (the same model as one GLB with its JPEG pages).
Wall and CPU seconds of every build.

Peer: py3dtiles 12 writes the same leaf meshes (one feature per building, batch
ids) as b3dm through its glTF helpers; its bytes per triangle and validator
results over the GLBs inside the b3dm files.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.tiles.lod import Layer, LodParams, read_tile, select_tiles, write_lod_tileset  # noqa: E402


def _walk(tileset: Path):
    """(tile dict, folder, level) for every tile of a tileset and its external ones."""
    doc = json.loads(tileset.read_text())
    stack = [(doc["root"], tileset.parent, 0)]
    while stack:
        t, base, lv = stack.pop()
        uri = t.get("content", {}).get("uri")
        if uri and uri.endswith(".json"):
            sub = json.loads((base / uri).read_text())
            stack.append((sub["root"], (base / uri).parent, 0))
        else:
            yield t, base, lv
        for c in t.get("children", []) or []:
            stack.append((c, base, lv + 1))


def _validate_all(paths: list[Path], limit: int) -> dict:
    from twin.tiles.validate import validate_glb

    errors = warnings = 0
    checked = paths[:limit]
    for p in checked:
        r = validate_glb(p)
        errors += r["issues"]["numErrors"]
        warnings += r["issues"]["numWarnings"]
    return {"checked": len(checked), "of": len(paths), "errors": errors, "warnings": warnings}


def geometry_bytes(path: Path) -> int:
    """Bytes of a GLB's vertex and index data as stored (compressed where it is):
    no JSON, metadata tables or textures."""
    from twin.tiles.gltf import read_glb_json

    doc, _ = read_glb_json(path)
    n = 0
    for view in doc.get("bufferViews", []):
        if view.get("target") not in (34962, 34963):
            continue
        ext = view.get("extensions", {}).get("EXT_meshopt_compression")
        n += ext["byteLength"] if ext else view["byteLength"]
    for mesh in doc.get("meshes", []):  # KHR_draco_mesh_compression blobs (no target)
        for prim in mesh["primitives"]:
            draco = prim.get("extensions", {}).get("KHR_draco_mesh_compression")
            if draco is not None:
                n += doc["bufferViews"][draco["bufferView"]]["byteLength"]
    return n


def texture_bytes(path: Path) -> int:
    """Bytes of a GLB's embedded images."""
    from twin.tiles.gltf import read_glb_json

    doc, _ = read_glb_json(path)
    return sum(doc["bufferViews"][im["bufferView"]]["byteLength"] for im in doc.get("images", []))


def gzip_bytes(paths: list[Path]) -> int:
    """What the files weigh on the wire with ``Content-Encoding: gzip`` (level 6)."""
    import gzip

    return sum(len(gzip.compress(p.read_bytes(), 6)) for p in paths)


def _leaf_stats(tileset: Path) -> tuple[int, int, list[Path], list[Path]]:
    tris = nbytes = 0
    leaves, all_glb = [], []
    for t, base, _ in _walk(tileset):
        uri = t.get("content", {}).get("uri")
        if not uri:
            continue
        path = base / uri
        all_glb.append(path)
        if not t.get("children"):
            leaves.append(path)
            nbytes += path.stat().st_size
            tris += sum(len(p["faces"]) for p in read_tile(path))
    return tris, nbytes, leaves, all_glb


def _fetch(tileset: Path, eye) -> dict:
    sel = select_tiles(tileset, np.asarray(eye, float))
    return {"tiles": len(sel), "bytes": int(sum(b for _, b in sel))}


def py3dtiles_peer(leaves: list[Path], out: Path, validate: int) -> dict:
    """The same leaf meshes as b3dm via py3dtiles (one batch id per building)."""
    try:
        from py3dtiles.tileset.content.b3dm import B3dm
        from py3dtiles.tileset.content.batch_table import BatchTable
        from py3dtiles.tileset.content.gltf_utils import GltfMesh, GltfPrimitive, gltf_from_meshes
    except ImportError as exc:  # pragma: no cover
        return {"error": f"py3dtiles not importable: {exc}"}
    out.mkdir(parents=True, exist_ok=True)
    tris = nbytes = 0
    glbs, failures = [], []
    t0 = time.perf_counter()
    for i, leaf in enumerate(leaves):
        meshes, n = [], 1
        for prim in read_tile(leaf):
            v = prim["vertices"].astype(np.float32)
            f = prim["faces"].astype(np.uint32)
            ids = prim.get("feature_ids")
            batch = np.zeros(len(v), np.uint32) if ids is None else ids.astype(np.uint32)
            meshes.append(
                GltfMesh(points=v, primitives=[GltfPrimitive(triangles=f)], batchids=batch)
            )
            tris += len(f)
        try:
            gltf = gltf_from_meshes(meshes)
            bt = BatchTable()
            bt.add_property_as_json("id", list(range(n)))
            b3dm = B3dm.from_gltf(gltf, bt)
            data = b3dm.to_array().tobytes()
        except Exception as exc:  # the peer's own failure is a result, not a crash
            failures.append(f"{leaf.name}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        path = out / f"{i}.b3dm"
        path.write_bytes(data)
        nbytes += len(data)
        # the GLB inside the b3dm (28-byte header + feature/batch tables)
        ftj, ftb, btj, btb = np.frombuffer(data[12:28], "<u4")
        glb = out / f"{i}.glb"
        glb.write_bytes(data[28 + ftj + ftb + btj + btb :])
        glbs.append(glb)
    ours = sum(p.stat().st_size for p in leaves)
    ours_geometry = sum(geometry_bytes(p) for p in leaves)
    res = {
        "seconds": time.perf_counter() - t0,
        "twin_bytes_same_leaves": ours,
        "twin_bytes_per_triangle_same_leaves": ours / max(tris, 1),
        "twin_geometry_bytes_per_triangle_same_leaves": ours_geometry / max(tris, 1),
        "triangles": tris,
        "bytes": nbytes,
        "bytes_per_triangle": nbytes / max(tris, 1),
        "failures": failures,
    }
    res["validator"] = _validate_all(glbs, validate)
    return res


def bench_city(name: str, preset: str, work: Path, validate: int) -> dict:
    survey, model = work / f"{name}-survey", work / f"{name}-model"
    twin = [sys.executable, "-m", "twin.cli"]
    subprocess.run(
        [*twin, "synth", str(survey), "--preset", preset, "--no-images", "--no-lidar",
         "--no-events", "--overwrite"],
        check=True, capture_output=True,
    )  # fmt: skip
    from twin.pipeline import BuildParams, build

    t0, c0 = time.perf_counter(), time.process_time()
    m = build(survey, model, force=True)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = _city_stats(model, m, seconds, cpu, validate)
    res["input"] = f"twin synth --preset {preset} + twin build"
    res["py3dtiles"] = py3dtiles_peer(
        [p for p in res.pop("leaves") if "buildings" in p.parts], work / f"{name}-py3dtiles",
        validate,
    )  # fmt: skip
    # the same stages again (reused), tiles with Draco
    t0, c0 = time.perf_counter(), time.process_time()
    m = build(survey, model, params=BuildParams(tile_compression="draco"))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    res["draco"] = _city_stats(model, m, seconds, cpu, validate)
    res["draco"].pop("leaves")
    return res


def _city_stats(model: Path, m: dict, seconds: float, cpu: float, validate: int) -> dict:
    export = m["stages"]["export"]
    tileset = model / "tiles" / "tileset.json"
    tris, leaf_bytes, leaves, all_glb = _leaf_stats(tileset)
    total = sum(p.stat().st_size for p in all_glb)
    one = (model / "model.glb").stat().st_size
    size = json.loads((model / "tiles" / "terrain" / "tileset.json").read_text())
    half = np.asarray(size["root"]["boundingVolume"]["box"])[[3, 7]].max()
    res = {
        "triangles": tris,
        "build_seconds": seconds,
        "build_cpu_seconds": cpu,
        "export_seconds": export["seconds"],
        "one_glb_bytes": one,
        "tiles_bytes": total,
        "tiles_vs_one_glb": total / one,
        "leaf_bytes_per_triangle": leaf_bytes / max(tris, 1),
        "leaf_geometry_bytes_per_triangle": sum(geometry_bytes(p) for p in leaves) / max(tris, 1),
        "leaf_gzip_bytes_per_triangle": gzip_bytes(leaves) / max(tris, 1),
        "one_glb_bytes_per_triangle": one / max(tris, 1),
        "layers": export["tiles"],
        "fetch_far": _fetch(tileset, [0.0, -4 * half, 2 * half]),
        "fetch_street": _fetch(tileset, [0.0, 0.0, 20.0]),
        "validator": _validate_all(all_glb, validate),
        "leaves": leaves,
    }
    return res


def bench_textured(work: Path, validate: int, max_faces: int = 1000) -> dict:
    """The small city with photos, ``twin build --texture``: tiles/textured."""
    survey, model = work / "textured-survey", work / "textured-model"
    twin = [sys.executable, "-m", "twin.cli"]
    subprocess.run(
        [*twin, "synth", str(survey), "--preset", "small", "--no-lidar", "--no-events",
         "--overwrite"],
        check=True, capture_output=True,
    )  # fmt: skip
    from twin.pipeline import BuildParams, build

    t0, c0 = time.perf_counter(), time.process_time()
    params = BuildParams(texture=True, tile_max_faces=max_faces)
    m = build(survey, model, params=params, force=True)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    tileset = model / "tiles" / "textured" / "tileset.json"
    tris, leaf_bytes, leaves, all_glb = _leaf_stats(tileset)
    s = m["stages"]["export"]["tiles"]["textured"]
    one = model / "textured" / "model.glb"
    tex = sum(texture_bytes(p) for p in all_glb)
    half = np.asarray(json.loads(tileset.read_text())["root"]["boundingVolume"]["box"])[
        [3, 7]
    ].max()
    return {
        "input": "twin synth --preset small (photos 640x480) + twin build --texture "
        f"({max_faces} faces per tile)",
        "triangles": tris,
        "build_seconds": seconds,
        "build_cpu_seconds": cpu,
        "texture_stage_seconds": m["stages"]["texture"]["seconds"],
        "tiles": s["count"],
        "levels": s["levels"],
        "geometric_error_by_level": s["geometric_error_by_level"],
        "tiles_bytes": s["bytes"],
        "texture_bytes": tex,
        "texture_bytes_by_level": _texture_by_level(tileset),
        "one_glb_bytes": one.stat().st_size,
        "one_glb_texture_bytes": texture_bytes(one),
        "leaf_bytes_per_triangle": leaf_bytes / max(tris, 1),
        "leaf_geometry_bytes_per_triangle": sum(geometry_bytes(p) for p in leaves) / max(tris, 1),
        "leaf_texture_bytes": sum(texture_bytes(p) for p in leaves),
        "fetch_far": _fetch(model / "tiles" / "tileset.json", [0.0, -4 * half, 2 * half]),
        "fetch_street": _fetch(model / "tiles" / "tileset.json", [0.0, 0.0, 20.0]),
        "validator": _validate_all(all_glb, validate),
    }


def _texture_by_level(tileset: Path) -> list[int]:
    out: dict[int, int] = {}
    for t, base, lv in _walk(tileset):
        uri = t.get("content", {}).get("uri")
        if uri:
            out[lv] = out.get(lv, 0) + texture_bytes(base / uri)
    return [out[k] for k in sorted(out)]


def bench_mesh(work: Path, n: int, validate: int, compression: str = "meshopt") -> dict:
    from _meshes import city_mesh

    from twin.crs import LocalFrame

    v, f = city_mesh(n)
    v = v - np.r_[v[:, :2].mean(axis=0), 0.0]
    frame = LocalFrame(121.55, 29.87, 0.0)
    out = work / f"mesh-tiles-{compression}"
    t0, c0 = time.perf_counter(), time.process_time()
    params = LodParams(compression=compression)
    s = write_lod_tileset(out, [Layer("city", v, f)], frame, params=params)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    tris, leaf_bytes, leaves, all_glb = _leaf_stats(out / "tileset.json")
    half = float(np.ptp(v[:, :2], axis=0).max() / 2)
    return {
        "input": f"benchmarks/_meshes.py city_mesh({n})",
        "triangles": tris,
        "build_seconds": seconds,
        "build_cpu_seconds": cpu,
        "seconds_per_million_triangles": seconds / (tris / 1e6),
        "tiles": s["tiles"],
        "levels": s["levels"],
        "geometric_error_by_level": s["geometric_error_by_level"],
        "tiles_bytes": s["bytes"],
        "leaf_bytes_per_triangle": leaf_bytes / tris,
        "leaf_geometry_bytes_per_triangle": sum(geometry_bytes(p) for p in leaves) / tris,
        "leaf_gzip_bytes_per_triangle": gzip_bytes(leaves) / tris,
        "fetch_far": _fetch(out / "tileset.json", [0.0, -4 * half, 2 * half]),
        "fetch_street": _fetch(out / "tileset.json", [0.0, 0.0, 2.0]),
        "validator": _validate_all(all_glb, validate),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="the small city only")
    ap.add_argument("--mesh-triangles", type=int, default=1_000_000)
    ap.add_argument("--validate", type=int, default=40, help="GLBs validated per input")
    ap.add_argument("--only", choices=["cities", "textured", "mesh"], help="one part only")
    ap.add_argument("--textured-max-faces", type=int, default=1000)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cores": __import__("os").cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cities = (
            [("small", "small")] if args.quick else [("small", "small"), ("default", "default")]
        )
        for name, preset in cities if args.only in (None, "cities") else []:
            print(f"-- city {name}", flush=True)
            results["inputs"][name] = bench_city(name, preset, work, args.validate)
            results["inputs"][f"{name}-draco"] = results["inputs"][name].pop("draco")
        if args.only in (None, "textured"):
            print("-- textured city", flush=True)
            results["inputs"]["textured"] = bench_textured(
                work, args.validate, args.textured_max_faces
            )
        if not args.quick and args.only in (None, "mesh"):
            print("-- mesh", flush=True)
            results["inputs"]["mesh-1M"] = bench_mesh(work, args.mesh_triangles, args.validate)
            results["inputs"]["mesh-1M-draco"] = bench_mesh(
                work, args.mesh_triangles, args.validate, "draco"
            )
    print()
    print(f"{'input':<10}{'tris':>10}{'B/tri':>8}{'geom':>6}{'gzip':>6}{'tiles/GLB':>11}"
          f"{'far KB':>9}"
          f"{'street KB':>11}{'s/Mtri':>8}{'val.err':>9}{'py3dtiles B/tri':>17}"
          f"{'p3d err':>9}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for name, r in results["inputs"].items():
        if name == "textured":
            continue
        p3 = r.get("py3dtiles", {})
        spm = r.get("seconds_per_million_triangles", r["build_seconds"] / (r["triangles"] / 1e6))
        print(
            f"{name:<10}{r['triangles']:>10,}{r['leaf_bytes_per_triangle']:>8.2f}"
            f"{r['leaf_geometry_bytes_per_triangle']:>6.2f}"
            f"{r['leaf_gzip_bytes_per_triangle']:>6.2f}"
            f"{r.get('tiles_vs_one_glb', float('nan')):>11.2f}"
            f"{r['fetch_far']['bytes'] / 1e3:>9.1f}{r['fetch_street']['bytes'] / 1e3:>11.1f}"
            f"{spm:>8.1f}{r['validator']['errors']:>9}"
            f"{p3.get('bytes_per_triangle', float('nan')):>17.2f}"
            f"{p3.get('validator', {}).get('errors', '-'):>9}"
        )
    t = results["inputs"].get("textured")
    if t is None:
        return results
    print(
        f"\ntextured: {t['triangles']:,} triangles in {t['tiles']} tiles ({t['levels']} levels), "
        f"geometry {t['leaf_geometry_bytes_per_triangle']:.2f} B/tri, textures "
        f"{t['texture_bytes'] / 1e3:.0f} KB (by level {t['texture_bytes_by_level']}) vs "
        f"{t['one_glb_texture_bytes'] / 1e3:.0f} KB in textured/model.glb; "
        f"far {t['fetch_far']['bytes'] / 1e3:.0f} KB, street "
        f"{t['fetch_street']['bytes'] / 1e3:.0f} KB; validator errors "
        f"{t['validator']['errors']}"
    )
    return results


if __name__ == "__main__":
    main()
