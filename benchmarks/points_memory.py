"""Peak memory of ``twin points dtm`` on large synthetic clouds, streamed.

Writes an unclassified synthetic city (``twin.points.testing.write_city_las``: terrain,
box buildings, 10 points/m^2 by default) of each size to a temporary LAS file (chunk
by chunk, so the writer itself stays small), runs ``twin points dtm FILE OUT.tif
--resolution 1`` in a fresh process (the ground filter runs, since nothing is
classified), and reads that process's peak resident set size with
``resource.getrusage(RUSAGE_CHILDREN)``. Files are deleted after each size.

Usage: ``python benchmarks/points_memory.py [--points 50000000] [--density 10]
[--json PATH] [--tmp /tmp]``; several ``--points`` values may be given. Target: under
2 GiB at 50 M points.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.points.testing import write_city_las  # noqa: E402

GIB = 1024**3


def peak_rss(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of a command run in a fresh child process.

    Runs the command from a tiny Python parent so that RUSAGE_CHILDREN reflects this
    one command only (the calling process may have run others)."""
    probe = (
        "import resource, subprocess, sys, json\n"
        "r = subprocess.run(sys.argv[1:])\n"
        "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'rc': r.returncode, 'maxrss_kb': ru.ru_maxrss}))\n"
    )
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=False
    )
    secs = time.perf_counter() - t
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result from {cmd}: {out.stderr[-2000:]}")
    res = json.loads(lines[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{cmd} failed ({res['rc']}): {out.stderr[-2000:]}")
    return res["maxrss_kb"] * 1024, secs


def dtm_peak(n_points: int, density: float, tmp: Path, *, chunk_points=1_000_000) -> dict:
    """Write a cloud of ``n_points``, measure ``twin points dtm`` on it, clean up."""
    extent = math.sqrt(n_points / density)
    twin = Path(sys.executable).with_name("twin")
    with tempfile.TemporaryDirectory(dir=tmp, prefix="twin_points_memory_") as d:
        las = Path(d) / "city.las"
        t = time.perf_counter()
        size = write_city_las(las, n_points, extent, chunk_points=chunk_points)
        write_s = time.perf_counter() - t
        rss, secs = peak_rss(
            [str(twin), "points", "dtm", str(las), str(Path(d) / "dtm.tif"), "--resolution", "1",
             "--json"]
        )  # fmt: skip
    r = {
        "points": n_points,
        "extent_m": extent,
        "file_mb": size / 1e6,
        "write_s": write_s,
        "dtm_s": secs,
        "peak_rss_mb": rss / 2**20,
        "peak_rss_gib": rss / GIB,
    }
    print(
        f"{n_points / 1e6:6.1f} M points ({extent:.0f} m square, {size / 1e9:.2f} GB LAS): "
        f"twin points dtm peak RSS {rss / 2**20:7.0f} MiB, {secs:6.1f} s (file written in "
        f"{write_s:.0f} s)"
    )
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, action="append", help="cloud sizes (default 50 M)")
    ap.add_argument("--density", type=float, default=10.0, help="points per square metre")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    sizes = args.points or [50_000_000]
    rows = [dtm_peak(n, args.density, args.tmp) for n in sizes]
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "target_gib": 2.0,
        "dtm": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
