"""Terrain TIN benchmark: twin (greedy, RTIN) against pydelatin and pymartini.

    python benchmarks/terrain.py --json out.json [--size 1025] [--repeat 3]

On a seeded fractal DEM (``benchmarks/_dem.py``, 600 m relief) at max error 1 m and
5 m, on the real DEMs in ``../shared/data/dem`` and on a 0.5 m DTM that ``twin points
dtm`` makes from the Delft AHN3 tile: twin greedy (one triangulation), twin tiled
(greedy in tiles of ``TILE_SIZE`` samples on a thread pool, matching borders) and
twin RTIN against pydelatin and pymartini; triangle count, time (best of
``--repeat``; our first call in this process, and a cold Numba compile in a fresh
process, separately), the max error *measured* for every method with the same
rasteriser (:func:`twin.terrain.tin.tin_errors`, checked against a NumPy reference in
the tests) next to the requested one, and peak memory per input sample (peak RSS
growth of a fresh child process running the method once). Peers get nodata filled with the
nearest valid height (they cannot skip samples); errors are measured on valid samples
only. pymartini needs a (2**k+1)**2 grid: other rasters are edge-padded for it.
Prints a table and writes JSON. Times are CPU-noisy on shared machines: compare the
ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._dem import fractal_dem  # noqa: E402
from twin.terrain import _kernels  # noqa: E402
from twin.terrain.tin import tin, tin_errors  # noqa: E402

SHARED_DEM = ROOT.parent / "shared" / "data" / "dem"


# --------------------------------------------------------------------------------------
# methods: each returns grid-coordinate vertices (col, row, z) and faces
# --------------------------------------------------------------------------------------


#: tile side of the tiled greedy mode (samples; 129 measured fastest here: a tile's
#: grid and triangles stay in cache)
TILE_SIZE = 129


def run_twin(mode, tile_size=None):
    def f(h, valid, max_error):
        v, faces, _ = tin(h, max_error, mask=valid, mode=mode, tile_size=tile_size)
        return v, faces

    return f


def run_pydelatin(h, valid, max_error):
    from pydelatin import Delatin

    filled = _filled(h, valid).astype(np.float32)
    d = Delatin(filled, max_error=max_error)
    v = d.vertices.astype(np.float64)
    gv = np.column_stack([v[:, 0], (h.shape[0] - 1) - v[:, 1], v[:, 2]])  # it flips y
    return gv, d.triangles


def run_pymartini(h, valid, max_error):
    from pymartini import Martini

    rows, cols = h.shape
    s = 2
    while s + 1 < max(rows, cols):
        s *= 2
    s += 1
    filled = _filled(h, valid)
    padded = np.pad(filled, ((0, s - rows), (0, s - cols)), mode="edge").astype(np.float32)
    v, faces = Martini(s).create_tile(padded).get_mesh(max_error)
    v = v.astype(np.int64)
    gv = np.column_stack([v[:, 0], v[:, 1], padded[v[:, 1], v[:, 0]]]).astype(np.float64)
    return gv, faces


METHODS = {
    "twin-greedy": run_twin("greedy"),
    "twin-tiled": run_twin("greedy", TILE_SIZE),
    "twin-rtin": run_twin("rtin"),
    "pydelatin": run_pydelatin,
    "pymartini": run_pymartini,
}


def _filled(h, valid):
    if valid.all():
        return h
    return _kernels.fill_nearest(np.where(valid, h, np.nan), valid)


# --------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------


def _rss_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _mem_child(name, h, valid, max_error, q):
    sys.path.insert(0, str(ROOT))
    fn = METHODS[name]
    fn(h[:65, :65], valid[:65, :65], max_error)  # load compiled code / warm imports
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS
    except OSError:
        pass
    before = _rss_kib("VmRSS")
    fn(h, valid, max_error)
    q.put((_rss_kib("VmHWM") - before) * 1024)


def peak_memory(name, h, valid, max_error):
    ctx = mp.get_context("spawn")  # a fresh heap: freed pages of earlier runs don't hide growth
    q = ctx.Queue()
    p = ctx.Process(target=_mem_child, args=(name, h, valid, max_error, q))
    p.start()
    out = q.get(timeout=600)
    p.join()
    return out


def measure(name, h, valid, max_error, repeat, memory=True):
    fn = METHODS[name]
    t0 = time.perf_counter()
    gv, faces = fn(h, valid, max_error)
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        c0 = time.process_time()
        gv, faces = fn(h, valid, max_error)
        cpu.append(time.process_time() - c0)
        times.append(time.perf_counter() - t0)
    herr = np.where(valid, h, np.nan)
    err, _ = tin_errors(gv, np.asarray(faces, dtype=np.int64), herr)
    measured = float(np.nanmax(err))
    uncovered = int(np.isinf(err).sum())
    row = {
        "method": name,
        "max_error": max_error,
        "triangles": int(len(faces)),
        "vertices": int(len(gv)),
        "time_s": min(times),
        "cpu_s": min(cpu),
        "first_call_s": first,
        "measured_max_error": measured,
        "uncovered_samples": uncovered,
        "bound_holds": bool(measured <= max_error + 1e-9 and uncovered == 0),
    }
    if memory:
        row["peak_bytes_per_sample"] = peak_memory(name, h, valid, max_error) / h.size
    return row


def cold_compile_seconds():
    """First call of both modes in a fresh process with an empty Numba cache."""
    code = (
        "import time, numpy as np\n"
        "t = time.perf_counter()\n"
        "from twin.terrain.tin import tin\n"
        "h = np.random.default_rng(0).normal(size=(33, 33))\n"
        "tin(h, 0.5); tin(h, 0.5, mode='rtin')\n"
        "print(time.perf_counter() - t)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp, PYTHONPATH=str(ROOT))
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    return float(out.stdout.strip().splitlines()[-1])


def delft_dtm(tmp):
    """A 0.5 m DTM of the Delft AHN3 tile made by ``twin points dtm`` (None if the
    tile is missing)."""
    laz = SHARED_DEM.parent / "delft" / "ahn3_cropped_2.laz"
    if not laz.exists():
        return None
    out = Path(tmp) / "delft_dtm.tif"
    twin = Path(sys.executable).with_name("twin")
    cmd = [str(twin), "points", "dtm", str(laz), str(out), "--resolution", "0.5"]
    subprocess.run(cmd + ["--crs", "EPSG:7415"], check=True, capture_output=True)
    return out


def real_dems(extra=()):
    if not SHARED_DEM.exists():
        return []
    import rasterio

    out = []
    for path in [*sorted(SHARED_DEM.glob("*.tif")), *extra]:
        with rasterio.open(path) as ds:
            m = ds.read(1, masked=True)
        valid = ~np.ma.getmaskarray(m) & np.isfinite(m.data)
        out.append((path.name, np.asarray(m.data, dtype=np.float64), valid))
    return out


_LARGE_CHILD = """
import json, sys, time
from twin.terrain.windowed import tin_file

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

out = []
for _ in range(2):  # the first run also pays GDAL's one-time set-up
    base = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    t0, c0 = time.perf_counter(), time.process_time()
    v, f, reached = tin_file(sys.argv[1], 1.0, tile_size=257)
    out.append({"growth": status("VmHWM:") - base, "s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0})
print(json.dumps({"runs": out, "triangles": int(len(f)), "reached": reached,
                  "output_bytes": int(v.nbytes + f.nbytes)}))
"""


def large_raster(side):
    """Peak RSS growth of :func:`twin.terrain.windowed.tin_file` (max error 1 m,
    tiles of 257) on a ``side`` x ``side`` float32 tiled GeoTIFF of a smooth
    surface, in a fresh child process (kernels warmed on a small raster first)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "large.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=side,
            height=side,
            count=1,
            dtype="float32",
            crs="EPSG:32633",
            transform=from_origin(400000.0, 5800000.0, 1.0, 1.0),
            nodata=-9999.0,
            tiled=True,
            blockxsize=256,
            blockysize=256,
        ) as ds:
            xs = np.arange(side, dtype=np.float64)
            for r0 in range(0, side, 500):
                nr = min(500, side - r0)
                y = np.arange(r0, r0 + nr, dtype=np.float64)[:, None]
                hh = 80 * np.sin(xs / 900.0) * np.cos(y / 1100.0) + 0.004 * xs
                hh = hh + 20 * np.sin((xs + y) / 300.0)
                ds.write(hh.astype(np.float32), 1, window=Window(0, r0, side, nr))
        warm = Path(d) / "warm.tif"
        with rasterio.open(
            warm,
            "w",
            driver="GTiff",
            width=300,
            height=300,
            count=1,
            dtype="float32",
            crs="EPSG:32633",
            transform=from_origin(0.0, 300.0, 1.0, 1.0),
        ) as ds:
            ds.write(np.random.default_rng(0).random((300, 300), dtype=np.float32), 1)
        code = "from twin.terrain.windowed import tin_file\n"
        code += f"tin_file({str(warm)!r}, 0.5, tile_size=64)\n" + _LARGE_CHILD
        pr = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT
        )
        if pr.returncode:
            raise RuntimeError(pr.stderr[-2000:])
        row = json.loads(pr.stdout.strip().splitlines()[-1])
        row["side"] = side
        row["raster_bytes"] = path.stat().st_size
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--size", type=int, default=1025, help="fractal DEM side (samples)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--errors", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument("--real-errors", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument(
        "--dtm-errors",
        type=float,
        nargs="+",
        default=[0.05, 0.2],
        help="max errors for the Delft DTM (flat: heights -0.5..2.3 m NAP)",
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--no-memory", action="store_true", help="skip the forked memory runs")
    ap.add_argument(
        "--large",
        type=int,
        default=0,
        help="also triangulate a SIDE x SIDE float32 GeoTIFF from windowed reads "
        "(tin_file, 1 m) and report the peak RSS growth (e.g. 6000; 0: skip)",
    )
    ap.add_argument("--large-only", action="store_true", help="only the --large run")
    args = ap.parse_args(argv)
    if args.large_only:
        row = large_raster(args.large or 6000)
        print(json.dumps(row, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"large": row}, indent=2))
        return

    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cold_compile_s": cold_compile_seconds(),
        "runs": [],
    }
    # float32-representable heights, as DEMs are stored: pydelatin and pymartini
    # compute in float32 and would otherwise miss the bound by float rounding
    h = fractal_dem(args.size, relief=600.0).astype(np.float32).astype(np.float64)
    datasets = [
        (f"fractal {args.size}x{args.size}, 600 m relief", h, np.ones(h.shape, bool), args.errors)
    ]
    tmp = tempfile.TemporaryDirectory()
    dtm = delft_dtm(tmp.name)
    extra = [dtm] if dtm else []
    datasets += [
        (n, h, v, args.dtm_errors if n.startswith("delft") else args.real_errors)
        for n, h, v in real_dems(extra)
    ]

    header = (
        f"{'dataset':38} {'method':12} {'req':>5} {'triangles':>10} {'time s':>8} "
        f"{'cpu s':>7} {'1st s':>7} {'measured':>9} {'ok':>3} {'B/sample':>9}"
    )
    print(f"cold Numba compile (both modes): {results['cold_compile_s']:.1f} s")
    print(header)
    print("-" * len(header))
    for dname, h, valid, errors in datasets:
        for max_error in errors:
            for name in args.methods:
                row = measure(name, h, valid, max_error, args.repeat, not args.no_memory)
                row["dataset"] = dname
                row["samples"] = int(h.size)
                row["valid_samples"] = int(valid.sum())
                results["runs"].append(row)
                print(
                    f"{dname[:38]:38} {name:12} {max_error:5g} {row['triangles']:10d} "
                    f"{row['time_s']:8.3f} {row['cpu_s']:7.3f} {row['first_call_s']:7.3f} "
                    f"{row['measured_max_error']:9.4f} {'yes' if row['bound_holds'] else 'NO':>3} "
                    f"{row.get('peak_bytes_per_sample', float('nan')):9.1f}",
                    flush=True,
                )
    # ratios to the peers, same run
    ratios = []
    for r in results["runs"]:
        peer = {
            "twin-greedy": "pydelatin",
            "twin-tiled": "pydelatin",
            "twin-rtin": "pymartini",
        }.get(r["method"])
        if not peer:
            continue
        p = next(
            (
                q
                for q in results["runs"]
                if q["method"] == peer
                and q["dataset"] == r["dataset"]
                and q["max_error"] == r["max_error"]
            ),
            None,
        )
        if p:
            ratios.append(
                {
                    "dataset": r["dataset"],
                    "max_error": r["max_error"],
                    "method": r["method"],
                    "peer": peer,
                    "triangle_ratio": r["triangles"] / max(p["triangles"], 1),
                    "time_ratio": r["time_s"] / p["time_s"],
                    "cpu_ratio": r["cpu_s"] / p["cpu_s"],
                }
            )
    results["ratios"] = ratios
    if args.large:
        results["large"] = large_raster(args.large)
        print("\nlarge raster from windowed reads:", json.dumps(results["large"]))
    print("\nratios to the peer (same run):")
    for q in ratios:
        print(
            f"  {q['dataset'][:38]:38} {q['max_error']:4g} {q['method']:12} / {q['peer']:10} "
            f"triangles {q['triangle_ratio']:.4f}  time {q['time_ratio']:.2f}  "
            f"cpu {q['cpu_ratio']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
