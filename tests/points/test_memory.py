"""Peak memory of ``twin points dtm`` follows the chunk and the grid, not the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from twin.points.testing import write_city_las

_PROBE = (
    "import resource, subprocess, sys, json\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': r.returncode, 'maxrss_kb': ru.ru_maxrss}))\n"
)


def _dtm_peak_mib(las: Path, out: Path) -> float:
    twin = Path(sys.executable).with_name("twin")
    cmd = [str(twin), "points", "dtm", str(las), str(out), "--resolution", "1", "--json"]
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *cmd], capture_output=True, text=True, check=True
    )
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["rc"] == 0 and out.exists()
    return r["maxrss_kb"] / 1024


@pytest.mark.slow
def test_dtm_peak_memory_does_not_grow_with_the_file(tmp_path):
    """The same 400 m square at 12.5 and 37.5 points/m^2 (2 M and 6 M points, two and
    six 1 M-point chunks): the DTM grid is the same, so the peak RSS is too."""
    small, big = tmp_path / "small.las", tmp_path / "big.las"
    write_city_las(small, 2_000_000, 400.0, seed=1)
    write_city_las(big, 6_000_000, 400.0, seed=1)
    peak_small = _dtm_peak_mib(small, tmp_path / "s.tif")
    peak_big = _dtm_peak_mib(big, tmp_path / "b.tif")
    # measured: 416 MiB and 392 MiB (the interpreter, Numba, GDAL: ~270 MiB of it);
    # reading the big file whole would add 6 M x 30 bytes of records + 144 MB of xyz.
    # (One chunk against several differs by ~70 MiB: freed chunks stay in the heap.)
    assert peak_big < peak_small + 60, (peak_small, peak_big)
