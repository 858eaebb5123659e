"""Mesh storage benchmark: twin.mesh kernels side by side with meshoptimizer.

    python benchmarks/mesh_storage.py --json out.json [--size 1000000] [--repeat 3]

For each benchmark mesh (``benchmarks/_meshes.py``: a scan-like irregular noisy
terrain and a city-like grid + buildings mesh, both about ``--size`` triangles) it
measures, in one process:

- vertex cache order: ACMR and ATVR (FIFO, 16 entries, our simulation for both),
  best-of-``repeat`` wall and CPU time, and the first call (Numba compile or cache
  load) apart; also on the real mesh (``--real-mesh``, Delft);
- overdraw order after it (ours and meshoptimizer's ``optimize_overdraw``, both on
  our cache order, threshold 1.05): overdraw measured by ``measure_overdraw``
  (pixels shaded per pixel covered over six axis views), ACMR, ATVR, times;
- vertex fetch order: time;
- first-call cost of every function in fresh processes, with a cold Numba cache
  (compile) and a warm one (load from disk), apart from the timed runs;
- weld of the mesh's triangle soup (3 vertices per face, exact duplicates):
  output vertex count and time; meshoptimizer's equivalent is
  ``generate_vertex_remap`` + ``remap_index_buffer`` + ``remap_vertex_buffer``.

- simplification to 10 % and 1 % of the triangles (``--ratios``): ours
  (``twin.mesh.simplify``), meshoptimizer's ``simplify`` (positions only, target
  index count, no error limit), fast-simplification and Open3D's
  ``simplify_quadric_decimation``: best-of-``repeat`` time (first call apart for
  ours), output triangles, two-sided Hausdorff and mean distance measured
  independently (``benchmarks/_distance.py``: area-uniform samples plus vertices,
  exact point-to-triangle distance), the returned error against the measured
  Hausdorff (ours; meshoptimizer's relative error times its scale), and the rise
  of the peak RSS while the call runs (fresh process, bytes per input vertex). The
  RSS rise is an upper bound: glibc keeps freed mid-size blocks, so it can count
  transient arrays several times over (ours: 292 at 100 k triangles but ~550-2000
  at 1 M, against ~280 bytes counted live); compare methods with care.
  ``--no-simplify`` skips it. Times: best-of wall seconds as the machine runs
  them (our prange phases on every Numba thread) and best-of CPU seconds with one
  Numba thread (``cpu``: the work done, steadier on a shared machine); the real
  mesh (``--real-mesh``, Delft) is simplified too. ``--only-simplify`` runs just
  this part (no cache, overdraw, fetch, weld, codec or first-call probes),
  ``--meshes`` picks the meshes (``scan,city,delft``; ``delft`` is the real mesh)
  and ``--methods`` the simplifiers (``ours,meshopt``: the ratio's two sides).

Prints a table and writes JSON with the machine, the versions and every number,
including our/meshoptimizer ratios. Later rounds add codecs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._distance import surface_distance  # noqa: E402
from benchmarks._meshes import city_mesh, scan_mesh, soup  # noqa: E402
from twin.mesh.overdraw import measure_overdraw, optimize_overdraw  # noqa: E402
from twin.mesh.reorder import acmr, atvr, optimize_vertex_cache, optimize_vertex_fetch  # noqa: E402
from twin.mesh.weld import weld  # noqa: E402


def _timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first-call seconds, best of ``repeat`` later calls, last result)."""
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return first, best, out


def _meshopt():
    try:
        import meshoptimizer as mo
    except ImportError:
        return None
    return mo


def bench_mesh(name: str, v: np.ndarray, f: np.ndarray, repeat: int) -> dict:
    mo = _meshopt()
    nv, nf = len(v), len(f)
    res: dict = {"mesh": name, "vertices": nv, "triangles": nf}
    res["input"] = {"acmr": acmr(f, nv), "atvr": atvr(f, nv)}

    first, best, ours = _timed(lambda: optimize_vertex_cache(f, nv), repeat)
    res["cache_ours"] = {
        "acmr": acmr(ours, nv),
        "atvr": atvr(ours, nv),
        "time_s": best,
        "cpu_s": _best(lambda: optimize_vertex_cache(f, nv), repeat, time.process_time),
        "first_call_s": first,
    }
    # overdraw (after the cache order): pixels shaded per pixel covered, six axis views
    res["overdraw_input"] = {"overdraw": measure_overdraw(v, ours).ratio}
    first, best, od = _timed(lambda: optimize_overdraw(v, ours), repeat)
    res["overdraw_ours"] = {
        "acmr": acmr(od, nv),
        "atvr": atvr(od, nv),
        "overdraw": measure_overdraw(v, od).ratio,
        "time_s": best,
        "cpu_s": _best(lambda: optimize_overdraw(v, ours), repeat, time.process_time),
        "first_call_s": first,
    }
    first, best, fetched = _timed(lambda: optimize_vertex_fetch(v, ours), repeat)
    res["fetch_ours"] = {"time_s": best, "first_call_s": first}

    sv, sf = soup(v, f)
    first, best, welded = _timed(lambda: weld(sv, sf), repeat)
    res["weld_ours"] = {
        "input_vertices": len(sv),
        "vertices": len(welded[0]),
        "triangles": len(welded[1]),
        "time_s": best,
        "first_call_s": first,
    }

    if mo is not None:
        idx = np.ascontiguousarray(f.ravel(), dtype=np.uint32)

        def mo_cache():
            dst = np.empty_like(idx)
            mo.optimize_vertex_cache(dst, idx, idx.size, nv)
            return dst.reshape(-1, 3)

        first, best, theirs = _timed(mo_cache, repeat)
        res["cache_meshopt"] = {
            "acmr": acmr(theirs, nv),
            "atvr": atvr(theirs, nv),
            "time_s": best,
            "cpu_s": _best(mo_cache, repeat, time.process_time),
            "first_call_s": first,
        }
        v32p = np.ascontiguousarray(v, dtype=np.float32)
        oidx = np.ascontiguousarray(ours.ravel())

        def mo_overdraw():  # on our cache order, as ours
            dst = np.empty_like(oidx)
            mo.optimize_overdraw(dst, oidx, v32p, threshold=1.05)
            return dst.reshape(-1, 3)

        first, best, mod = _timed(mo_overdraw, repeat)
        res["overdraw_meshopt"] = {
            "acmr": acmr(mod, nv),
            "atvr": atvr(mod, nv),
            "overdraw": measure_overdraw(v, mod).ratio,
            "time_s": best,
            "cpu_s": _best(mo_overdraw, repeat, time.process_time),
            "first_call_s": first,
        }
        v32 = np.ascontiguousarray(v, dtype=np.float32)
        tidx = np.ascontiguousarray(theirs.ravel())

        def mo_fetch():
            dst = np.empty_like(v32)
            idx2 = tidx.copy()  # meshopt rewrites the indices in place
            mo.optimize_vertex_fetch(dst, idx2, v32, idx2.size, nv, 12)
            return dst

        _, best, _ = _timed(mo_fetch, repeat)
        res["fetch_meshopt"] = {"time_s": best}

        sv32 = np.ascontiguousarray(sv, dtype=np.float32)
        sidx = np.ascontiguousarray(sf.ravel())

        def mo_weld():
            # the wrapper passes index_count 0 for indices=None: give the soup's indices
            remap = np.empty(len(sv32), np.uint32)
            count = mo.generate_vertex_remap(remap, sidx, sidx.size, sv32, len(sv32), 12)
            out_i = np.empty(sidx.size, np.uint32)
            mo.remap_index_buffer(out_i, sidx, sidx.size, remap)
            out_v = np.empty((count, 3), np.float32)
            mo.remap_vertex_buffer(out_v, sv32, len(sv32), 12, remap)
            return count

        _, best, count = _timed(mo_weld, repeat)
        res["weld_meshopt"] = {"vertices": int(count), "time_s": best}

        res["ratios"] = {
            "cache_acmr": res["cache_ours"]["acmr"] / res["cache_meshopt"]["acmr"],
            "cache_time": res["cache_ours"]["time_s"] / res["cache_meshopt"]["time_s"],
            "cache_cpu": res["cache_ours"]["cpu_s"] / res["cache_meshopt"]["cpu_s"],
            "overdraw": res["overdraw_ours"]["overdraw"] / res["overdraw_meshopt"]["overdraw"],
            "overdraw_acmr": res["overdraw_ours"]["acmr"] / res["overdraw_meshopt"]["acmr"],
            "overdraw_cpu": res["overdraw_ours"]["cpu_s"] / res["overdraw_meshopt"]["cpu_s"],
            "fetch_time": res["fetch_ours"]["time_s"] / res["fetch_meshopt"]["time_s"],
            "weld_time": res["weld_ours"]["time_s"] / res["weld_meshopt"]["time_s"],
        }
    return res


def _simplifiers(mo, only: str | None = None):
    """name -> fn(v, f, target_faces) -> (vertices, faces, returned error or None);
    ``only`` imports just that one (for the memory probe)."""
    from twin.mesh.simplify import simplify

    out = {"ours": lambda v, f, t: simplify(v, f, target_faces=t)}
    if mo is not None:

        def mo_simplify(v, f, t):
            v32 = np.ascontiguousarray(v, dtype=np.float32)
            idx = np.ascontiguousarray(f.ravel(), dtype=np.uint32)
            dst = np.empty_like(idx)
            err = np.zeros(1, np.float32)
            k = mo.simplify(dst, idx, v32, target_index_count=3 * t, target_error=1e9,
                            result_error=err)  # fmt: skip
            return v, dst[:k].reshape(-1, 3), float(err[0]) * mo.simplify_scale(v32)

        out["meshopt"] = mo_simplify
    if only is not None and only not in ("fast-simplification", "open3d"):
        return out
    try:
        import fast_simplification

        def fs_simplify(v, f, t):
            pv, pf = fast_simplification.simplify(
                v.astype(np.float32), f.astype(np.int64), target_reduction=1.0 - t / len(f)
            )
            return pv, pf, None

        out["fast-simplification"] = fs_simplify
    except ImportError:
        pass
    try:
        import open3d as o3d

        def o3d_simplify(v, f, t):
            m = o3d.geometry.TriangleMesh(
                o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32))
            )
            s = m.simplify_quadric_decimation(target_number_of_triangles=t)
            return np.asarray(s.vertices), np.asarray(s.triangles), None

        out["open3d"] = o3d_simplify
    except ImportError:
        pass
    return out


_MEMORY_SNIPPET = """
import resource, sys
import numpy as np
sys.path.insert(0, {root!r})
from benchmarks.mesh_storage import _meshopt, _simplifiers
fn = _simplifiers(_meshopt() if {name!r} == "meshopt" else None, only={name!r})[{name!r}]
d = np.load({path!r})
v, f = d["v"], d["f"]
fn(v[:30], np.array([[i, i + 1, i + 2] for i in range(27)], np.uint32), 10)  # warm up
with open("/proc/self/statm") as fh:
    before = int(fh.read().split()[1]) * resource.getpagesize()
fn(v, f, {target})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
"""


def peak_memory(name: str, path: str, target: int) -> int | None:
    """Peak RSS during one simplifier call minus the RSS just before it (bytes), in a
    fresh process that imports only that simplifier, loads the input and warms the
    code up first. Includes the call's output arrays."""
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    code = _MEMORY_SNIPPET.format(root=root, name=name, path=path, target=target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"peak memory of {name} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return int(out.stdout.strip().splitlines()[-1])


def _cpu_one_thread(fn, repeat: int) -> float:
    """Best-of-``repeat`` CPU seconds (``time.process_time``) of ``fn`` with one Numba
    thread (our prange phases then run serially; the peers are single-threaded):
    the work done, whatever else shares the machine."""
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return _best(fn, repeat, time.process_time)
    finally:
        numba.set_num_threads(threads)


def bench_simplify(name, v, f, repeat: int, ratios, samples: int, methods=None) -> dict:
    """Simplification of one mesh to each ratio by every available simplifier (or
    those named in ``methods``)."""
    import tempfile

    mo = _meshopt()
    fns = _simplifiers(mo)
    if methods:
        fns = {k: fn for k, fn in fns.items() if k in methods}
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mesh.npz")
        np.savez(path, v=v, f=f)
        for ratio in ratios:
            target = max(4, int(len(f) * ratio))
            row: dict = {}
            for method, fn in fns.items():
                first, best, out = _timed(lambda fn=fn, t=target: fn(v, f, t), repeat)
                cpu = None  # the ratio's two sides only: the others take long
                if method in ("ours", "meshopt"):
                    cpu = _cpu_one_thread(lambda fn=fn, t=target: fn(v, f, t), repeat)
                ov, of, err = out[0], out[1], out[2]
                d = surface_distance(v, f, ov, of, n_samples=samples)
                mem = peak_memory(method, path, target)
                row[method] = {
                    "triangles": int(len(of)),
                    "time_s": best,
                    "cpu_s_one_thread": cpu,
                    "first_call_s": first,
                    **d,
                    "returned_error": err,
                    "error_over_hausdorff": (err / d["hausdorff"])
                    if err and d["hausdorff"]
                    else None,
                    "peak_bytes_per_vertex": mem / len(v) if mem is not None else None,
                }
            if "meshopt" in row and "ours" in row:
                row["ratios"] = {
                    "hausdorff": row["ours"]["hausdorff"] / row["meshopt"]["hausdorff"],
                    "mean": row["ours"]["mean"] / row["meshopt"]["mean"],
                    "time": row["ours"]["time_s"] / row["meshopt"]["time_s"],
                    "cpu": row["ours"]["cpu_s_one_thread"] / row["meshopt"]["cpu_s_one_thread"],
                }
            res[f"{ratio:g}"] = row
    return res


def print_simplify_table(results: list[dict]) -> None:
    head = (
        f"{'mesh':6} {'ratio':>5} {'method':20} {'tris':>8} {'time s':>7} {'CPU s':>7} "
        f"{'Hausdorff':>10} "
        f"{'mean':>9} {'err/H':>6} {'RSS B/v':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for ratio, row in r.get("simplify", {}).items():
            for method, d in row.items():
                if method == "ratios":
                    continue
                eh = d["error_over_hausdorff"]
                mem = d["peak_bytes_per_vertex"]
                eh_s = f"{eh:6.2f}" if eh else " " * 6
                mem_s = f"{mem:7.0f}" if mem is not None else " " * 7
                cpu = d.get("cpu_s_one_thread")
                cpu_s = f"{cpu:7.3f}" if cpu is not None else " " * 7
                print(
                    f"{r['mesh']:6} {ratio:>5} {method:20} {d['triangles']:8d} {d['time_s']:7.3f} "
                    f"{cpu_s} "
                    f"{d['hausdorff']:10.4f} {d['mean']:9.5f} "
                    f"{eh_s} {mem_s}"
                )
            if "ratios" in row:
                ratios = ", ".join(f"{k} {v:.3f}" for k, v in row["ratios"].items())
                print(f"{'':6} {ratio:>5} ours/meshopt: {ratios}")


# -- codecs: twin archive, Draco, EXT_meshopt ------------------------------------


def cityjson_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """Every surface of every city object in a CityJSON file as one indexed triangle
    mesh (real coordinates, the file's shared vertex list; rings of more than three
    vertices are fanned from their first vertex, holes ignored)."""
    doc = json.loads(Path(path).read_text())
    scale = np.asarray(doc.get("transform", {}).get("scale", [1, 1, 1]), float)
    shift = np.asarray(doc.get("transform", {}).get("translate", [0, 0, 0]), float)
    v = np.asarray(doc["vertices"], float) * scale + shift
    tris: list[list[int]] = []

    def walk(b):
        if b and isinstance(b[0], int):  # a ring
            tris.extend([b[0], b[k], b[k + 1]] for k in range(1, len(b) - 1))
        elif b and isinstance(b[0], list) and b[0] and isinstance(b[0][0], int):
            walk(b[0])  # a surface: its outer ring
        else:
            for x in b:
                walk(x)

    for obj in doc["CityObjects"].values():
        for g in obj.get("geometry", []):
            walk(g.get("boundaries", []))
    return v - v.min(axis=0), np.asarray(tris, np.uint32)


def _best(fn, repeat: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def _order_metrics(faces: np.ndarray, n_vertices: int) -> dict:
    """ACMR / ATVR (FIFO 16) of a decoder's triangle order: what a renderer of the
    decoded mesh pays."""
    f = np.asarray(faces).astype(np.uint32)
    return {"acmr": acmr(f, n_vertices), "atvr": atvr(f, n_vertices)}


def bench_codec(v: np.ndarray, f: np.ndarray, repeat: int, bits: int = 14) -> dict:
    """Bytes, bytes per triangle, encode time (best of ``repeat``), decode time (best
    of ``max(repeat, 10)``) and decode throughput (float32 positions + uint32
    indices out, per second) of twin's archive, Draco (DracoPy,
    ``compression_level=7``, ``quantization_bits=bits``) and the EXT_meshopt streams
    of our encoder (decoded by meshoptimizer's decoder, raw and with zlib level 9 on
    top as a gzip transport would add), and the ACMR / ATVR of each decoder's
    triangle order."""
    import zlib

    from twin.mesh.codec import decode, encode
    from twin.mesh.meshopt_codec import encode_meshopt

    out_bytes = 12 * len(v) + 12 * len(f)
    res: dict = {}
    dec_repeat = max(repeat, 10)  # decoding is quick: more runs steady its best time

    def row(size, enc_s, dec_s, dec_fn=None, **extra):
        # CPU time of the (single-threaded) decoders as well: on a loaded machine the
        # best wall time depends on scheduling luck, the CPU time much less
        cpu = _best(dec_fn, dec_repeat, time.process_time) if dec_fn else None
        return {
            "bytes": int(size),
            "bytes_per_triangle": size / len(f),
            "encode_s": enc_s,
            "decode_s": dec_s,
            "decode_cpu_s": cpu,
            "decode_mb_s": out_bytes / dec_s / 1e6 if dec_s else None,
            **extra,
        }

    first, enc_s, data = _timed(lambda: encode(v, f, bits=bits), repeat)
    t = time.perf_counter()
    dv, df = decode(data)
    first_dec = time.perf_counter() - t
    assert len(df) == len(f) and len(dv) == len(v)
    dec_s = _best(lambda: decode(data), dec_repeat)
    res["twin"] = row(
        len(data), enc_s, dec_s, lambda: decode(data),
        first_encode_s=first, first_decode_s=first_dec, **_order_metrics(df, len(dv)),
    )  # fmt: skip
    try:
        import DracoPy

        v32 = np.ascontiguousarray(v, dtype=np.float32)

        def draco_enc():
            return DracoPy.encode(
                v32, f, quantization_bits=bits, compression_level=7, preserve_order=False
            )

        _, enc_s, d = _timed(draco_enc, repeat)
        dm = DracoPy.decode(d)
        assert len(np.asarray(dm.faces)) == len(f)
        dec_s = _best(lambda: DracoPy.decode(d), dec_repeat)
        res["draco"] = row(
            len(d), enc_s, dec_s, lambda: DracoPy.decode(d),
            **_order_metrics(np.asarray(dm.faces).reshape(-1, 3), len(np.asarray(dm.points))),
        )  # fmt: skip
    except ImportError:
        pass
    mo = _meshopt()
    _, enc_s, m = _timed(lambda: encode_meshopt(v, f, bits=bits), repeat)
    pos, idx = m["positions"], m["indices"]
    size = len(pos["data"]) + len(idx["data"])
    gz = len(zlib.compress(pos["data"], 9)) + len(zlib.compress(idx["data"], 9))
    if mo is not None:

        def mo_dec():
            a = mo.decode_vertex_buffer(pos["count"], pos["byteStride"], pos["data"])
            b = mo.decode_index_buffer(idx["count"], idx["byteStride"], idx["data"])
            return a, b

        dec_s = _best(mo_dec, dec_repeat)
        ib = np.asarray(mo_dec()[1])
        if idx["byteStride"] == 2:  # the wrapper returns 16-bit indices in a uint32 array
            ib = ib.view(np.uint16)[: idx["count"]]
        order = _order_metrics(ib.reshape(-1, 3), int(m["n_vertices"]))
    else:
        dec_s = None
        order = {}
    res["meshopt"] = row(
        size, enc_s, dec_s, mo_dec if mo is not None else None,
        vertices_after_fetch=int(m["n_vertices"]), **order,
    )  # fmt: skip
    res["meshopt+zlib9"] = {"bytes": gz, "bytes_per_triangle": gz / len(f)}
    if "draco" in res:
        res["ratios"] = {
            "twin/draco bytes": res["twin"]["bytes"] / res["draco"]["bytes"],
            "draco/twin decode time": res["draco"]["decode_s"] / res["twin"]["decode_s"],
            "draco/twin decode cpu": res["draco"]["decode_cpu_s"] / res["twin"]["decode_cpu_s"],
            "twin/meshopt bytes": res["twin"]["bytes"] / res["meshopt"]["bytes"],
        }
    return res


def print_codec_table(results: list[dict]) -> None:
    head = (
        f"{'mesh':6} {'tris':>9} {'codec':14} {'bytes':>10} {'B/tri':>6} {'enc s':>7} "
        f"{'dec s':>7} {'cpu s':>7} {'dec MB/s':>8} {'ACMR':>6} {'ATVR':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for name, d in r.get("codec", {}).items():
            if name == "ratios":
                continue
            enc = f"{d['encode_s']:7.3f}" if d.get("encode_s") else " " * 7
            dec = f"{d['decode_s']:7.3f}" if d.get("decode_s") else " " * 7
            mbs = f"{d['decode_mb_s']:8.0f}" if d.get("decode_mb_s") else " " * 8
            cpu = f"{d['decode_cpu_s']:7.3f}" if d.get("decode_cpu_s") else " " * 7
            order = f" {d['acmr']:6.3f} {d['atvr']:6.3f}" if "acmr" in d else ""
            print(
                f"{r['mesh']:6} {r['triangles']:9d} {name:14} {d['bytes']:10d} "
                f"{d['bytes_per_triangle']:6.3f} {enc} {dec} {cpu} {mbs}{order}"
            )
        if "ratios" in r.get("codec", {}):
            ratios = ", ".join(f"{k} {v:.3f}" for k, v in r["codec"]["ratios"].items())
            print(f"{'':6} {ratios}")


_CODEC_COMPILE_SNIPPET = """
import time
import numpy as np
t0 = time.perf_counter()
from twin.mesh.codec import decode, encode
t1 = time.perf_counter()
v = np.random.default_rng(0).uniform(0, 1, (30, 3))
f = np.array([[i, i + 1, i + 2] for i in range(27)], np.uint32)
t = time.perf_counter()
data = encode(v, f)
t2 = time.perf_counter()
decode(data)
t3 = time.perf_counter()
print({"import": t1 - t0, "encode": t2 - t, "decode": t3 - t2})
"""


def codec_compile_times() -> dict:
    """First encode/decode call in fresh processes: cold Numba cache, then warm."""
    import ast
    import subprocess
    import tempfile

    res = {}
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(root))
        for label in ("cold_compile_s", "warm_cache_load_s"):
            out = subprocess.run(
                [sys.executable, "-c", _CODEC_COMPILE_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            res[label] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    return res


_COMPILE_SNIPPET = """
import time
import numpy as np
t0 = time.perf_counter()
from twin.mesh.overdraw import measure_overdraw, optimize_overdraw
from twin.mesh.reorder import acmr, optimize_vertex_cache, optimize_vertex_fetch
from twin.mesh.weld import weld
t1 = time.perf_counter()
v = np.random.default_rng(0).uniform(0, 1, (30, 3))
f = np.array([[i, i + 1, i + 2] for i in range(27)], np.uint32)
out = {}
for name, fn in [
    ("weld", lambda: weld(v, f)),
    ("weld_tol", lambda: weld(v, f, tol=0.01)),
    ("optimize_vertex_cache", lambda: optimize_vertex_cache(f, 30)),
    ("optimize_vertex_fetch", lambda: optimize_vertex_fetch(v, f)),
    ("acmr", lambda: acmr(f, 30)),
    ("optimize_overdraw", lambda: optimize_overdraw(v, f)),
    ("measure_overdraw", lambda: measure_overdraw(v, f)),
]:
    t = time.perf_counter()
    fn()
    out[name] = time.perf_counter() - t
out["import"] = t1 - t0
print(out)
"""


def compile_times() -> dict:
    """First-call seconds per function in fresh processes: with an empty Numba cache
    directory (compile) and again with that directory filled (load from disk)."""
    import ast
    import subprocess
    import tempfile

    res = {}
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(root))
        for label in ("cold_compile_s", "warm_cache_load_s"):
            out = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            res[label] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    return res


def print_table(results: list[dict]) -> None:
    head = (
        f"{'mesh':6} {'tris':>9} {'method':17} {'ACMR':>7} {'ATVR':>7} {'overdraw':>8} "
        f"{'time s':>8} {'CPU s':>7} {'1st s':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        rows = [("input order", r["input"])]
        rows += [
            (k.replace("_", " "), r[k])
            for k in r
            if k.startswith(("cache_", "overdraw_", "fetch_", "weld_"))
        ]
        for label, d in rows:
            a = f"{d['acmr']:7.4f}" if "acmr" in d else " " * 7
            t = f"{d['atvr']:7.4f}" if "atvr" in d else " " * 7
            o = f"{d['overdraw']:8.4f}" if "overdraw" in d else " " * 8
            s = f"{d['time_s']:8.3f}" if "time_s" in d else " " * 8
            u = f"{d['cpu_s']:7.3f}" if "cpu_s" in d else " " * 7
            c = f"{d['first_call_s']:7.3f}" if "first_call_s" in d else " " * 7
            extra = f"  -> {d['vertices']} verts" if "vertices" in d else ""
            print(f"{r['mesh']:6} {r['triangles']:9d} {label:17} {a} {t} {o} {s} {u} {c}{extra}")
        if "ratios" in r:
            ratios = ", ".join(f"{k} {v:.3f}" for k, v in r["ratios"].items())
            print(f"{'':6} ours/meshopt: {ratios}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--size", type=int, default=1_000_000, help="triangles per mesh")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-simplify", action="store_true", help="skip simplification")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--samples", type=int, default=200_000, help="distance samples per side")
    ap.add_argument("--no-codec", action="store_true", help="skip the codec comparison")
    ap.add_argument(
        "--only-simplify",
        action="store_true",
        help="simplification only (no cache, overdraw, fetch, weld, codec, first-call probes)",
    )
    ap.add_argument(
        "--meshes",
        default="scan,city,delft",
        help="comma-separated meshes: scan, city, delft (the --real-mesh)",
    )
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated simplifiers (ours, meshopt, fast-simplification, open3d)",
    )
    ap.add_argument(
        "--real-mesh",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/data/delft/delft.json",
        help="a CityJSON file for the codec comparison on real data",
    )
    args = ap.parse_args(argv)
    meshes = {m.strip() for m in args.meshes.split(",") if m.strip()}
    methods = {m.strip() for m in args.methods.split(",")} if args.methods else None
    only = args.only_simplify
    if only:
        args.no_simplify = False
        args.no_codec = True

    results = []
    for name, gen in (("scan", scan_mesh), ("city", city_mesh)):
        if name not in meshes:
            continue
        t = time.perf_counter()
        v, f = gen(args.size, seed=args.seed)
        gen_s = time.perf_counter() - t
        if only:
            r = {"mesh": name, "vertices": len(v), "triangles": len(f)}
        else:
            r = bench_mesh(name, v, f, args.repeat)
        r["generate_s"] = gen_s
        if not args.no_simplify:
            r["simplify"] = bench_simplify(
                name, v, f, args.repeat, args.ratios, args.samples, methods
            )
        if not args.no_codec:
            r["codec"] = bench_codec(v, f, args.repeat)
        results.append(r)
    real = "delft" in meshes and args.real_mesh.exists()
    simplify_real = None
    if not args.no_simplify and real:
        v, f = cityjson_mesh(args.real_mesh)
        simplify_real = {"mesh": args.real_mesh.stem[:6], "vertices": len(v), "triangles": len(f)}
        simplify_real["simplify"] = bench_simplify(
            simplify_real["mesh"], v, f, max(args.repeat, 5), args.ratios, args.samples, methods
        )
    cache_real = None
    if real and not only:
        v, f = cityjson_mesh(args.real_mesh)
        cache_real = bench_mesh(args.real_mesh.stem[:6], v, f, max(args.repeat, 5))
    codec_real = None
    if not args.no_codec and real:
        v, f = cityjson_mesh(args.real_mesh)
        codec_real = {"mesh": args.real_mesh.stem, "vertices": len(v), "triangles": len(f)}
        codec_real["codec"] = bench_codec(v, f, max(args.repeat, 5))
    if not only:
        print_table(results + ([cache_real] if cache_real else []))
    if not args.no_simplify:
        print()
        print_simplify_table(results + ([simplify_real] if simplify_real else []))
    if not args.no_codec:
        print()
        print_codec_table(results + ([codec_real] if codec_real else []))
    compiled = {} if only else compile_times()
    codec_compiled = None if args.no_codec else codec_compile_times()
    if codec_compiled:
        for label, times in codec_compiled.items():
            print(
                f"codec first call, {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items())
            )
    for label, times in compiled.items():
        print(f"first call, {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    mo = _meshopt()
    import numba

    doc = {
        "benchmark": "mesh_storage",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            "numpy": np.__version__,
            "numba": numba.__version__,
            "meshoptimizer": getattr(mo, "__version__", None) if mo else None,
        },
        "parameters": {
            "size": args.size,
            "repeat": args.repeat,
            "seed": args.seed,
            "cache": 16,
            "simplify_ratios": None if args.no_simplify else args.ratios,
            "meshes": sorted(meshes),
            "simplify_methods": sorted(methods) if methods else None,
            "only_simplify": only,
            "distance_samples": args.samples,
        },
        "results": results,
        "cache_real_mesh": cache_real,
        "codec_real_mesh": codec_real,
        "simplify_real_mesh": simplify_real,
        "first_call": compiled,
        "codec_first_call": codec_compiled,
    }
    if mo is not None and doc["versions"]["meshoptimizer"] is None:
        from importlib.metadata import version

        doc["versions"]["meshoptimizer"] = version("meshoptimizer")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
