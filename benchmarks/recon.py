"""Dense matching benchmark: seconds per megapixel, peak memory per view, accuracy.

    .venv/bin/python benchmarks/recon.py --json recon.json
    .venv/bin/python benchmarks/recon.py --survey path/to/survey --views 8 --scale 0.5
    .venv/bin/python benchmarks/recon.py --views 0   # every photo a reference view

On a synthetic survey (generated into a temporary folder unless ``--survey`` is
given: the "small" preset, 640 x 480 photos, no LiDAR or events) the ``--views``
reference views nearest the block centre are matched against sources chosen among
all views, with the exact cameras of ``cameras.json`` (so SfM errors do not enter).
Per view: wall seconds, s/MP of reference image, and the peak resident-memory growth
while it ran (sampled every 10 ms: an upper bound of what the view needed). Then the
maps are fused and scored against the truth mesh (ETH3D-style accuracy,
completeness, F1 at 1, 2, 5 x GSD over surface seen by >= 2 of the reference views,
within their footprint).

Peer: COLMAP's PatchMatch stereo needs CUDA (pycolmap's CPU build has none), and no
CPU MVS peer (OpenMVS) is installed here, so no peer runs in the same process; the
issue quotes OpenMVS's CPU path at about 13 s/MP on 6 cores (60-80 s/MP on 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    def __enter__(self):
        self.base = _rss()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--survey", type=Path, default=None)
    ap.add_argument(
        "--views", type=int, default=6, help="reference views nearest the centre (0: all)"
    )
    ap.add_argument("--scale", type=float, default=1.0, help="image resize factor")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--max-cost", type=float, default=0.7, help="fusion cost bound")
    ap.add_argument("--cache", type=Path, default=None, help="keep depth maps here and reuse them")
    args = ap.parse_args()

    from twin.recon import evaluate, fuse, mvs
    from twin.synth.truth import read_truth_ply

    tmp = None
    survey = args.survey
    if survey is None:
        from twin.synth.params import PRESETS
        from twin.synth.survey import generate

        tmp = tempfile.TemporaryDirectory()
        survey = Path(tmp.name) / "survey"
        t0 = time.perf_counter()
        generate(survey, PRESETS["small"].with_(lidar=False, events=False))
        print(f"survey generated in {time.perf_counter() - t0:.1f} s")
    cams = json.loads((survey / "cameras.json").read_text())
    V, F, surface, _ = read_truth_ply(survey / "truth" / "mesh.ply")
    views = mvs.load_views(cams, survey / "images", scale=args.scale)
    C = np.array([v.centre for v in views])
    order = np.argsort(np.linalg.norm(C[:, :2] - np.median(C[:, :2], axis=0), axis=1))
    which = sorted(order[: args.views or len(views)].tolist())
    ranges = [mvs.depth_range(v, V[::5]) for v in views]
    opt = mvs.MvsOptions()
    # compile outside the timings (Numba caches it on disk afterwards)
    t0 = time.perf_counter()
    small = [
        mvs.View(v.name, np.diag([0.1, 0.1, 1.0]) @ v.K, v.R, v.t, v.rgb[::10, ::10].copy())
        for v in views
    ]
    srcs = mvs.select_sources(small, which[0], float(np.mean(ranges[which[0]])), opt)
    mvs.compute_depth_map(small, which[0], srcs, ranges[which[0]], opt)
    compile_s = time.perf_counter() - t0
    rows = []
    maps = []
    for i in which:
        srcs = mvs.select_sources(views, i, float(np.sqrt(np.prod(ranges[i]))), opt)
        cached = args.cache / f"{views[i].name}.npz" if args.cache else None
        if cached is not None and cached.exists():
            maps.append(mvs.DepthMap.load(cached))
            print(f"{views[i].name:24s} (cached)")
            continue
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            c0 = time.process_time()
            dm = mvs.compute_depth_map(views, i, srcs, ranges[i], opt)
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
        mp = views[i].shape[0] * views[i].shape[1] / 1e6
        rows.append(
            {
                "view": views[i].name,
                "megapixels": mp,
                "sources": len(srcs),
                "seconds": dt,
                "s_per_mp": dt / mp,
                "cpu_s": cpu,
                "cpu_s_per_mp": cpu / mp,
                "peak_rss_growth_mb": mem.growth_mb,
                "valid_share": float((dm.depth > 0).mean()),
            }
        )
        maps.append(dm)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            dm.save(cached)
        print(
            f"{views[i].name:24s} {mp:5.2f} MP  {len(srcs)} src  {dt:6.1f} s  "
            f"{dt / mp:6.1f} s/MP (CPU {cpu / mp:6.1f} s/MP)  +{mem.growth_mb:6.0f} MB  "
            f"valid {rows[-1]['valid_share']:.2f}"
        )
    gsd = cams["flight"]["nadir_gsd_m"] / args.scale
    t0 = time.perf_counter()
    cloud = fuse.fuse(views, maps, indices=which, voxel=0.5 * gsd, max_cost=args.max_cost)
    fuse_s = time.perf_counter() - t0
    camd = [
        dict(K=views[i].K, R=views[i].R, t=views[i].t, width=views[i].shape[1],
             height=views[i].shape[0])
        for i in which
    ]  # fmt: skip
    lo = np.percentile(cloud.xyz[:, :2], 1, axis=0)
    hi = np.percentile(cloud.xyz[:, :2], 99, axis=0)
    sc = evaluate.score(
        cloud.xyz, V, F, camd, [gsd, 2 * gsd, 5 * gsd], spacing=gsd, region=(*lo, *hi),
        face_labels=surface,
    )  # fmt: skip
    total_s = sum(r["seconds"] for r in rows)
    total_mp = max(sum(r["megapixels"] for r in rows), 1e-9)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count())),
        "load_average": os.getloadavg(),
        "survey": str(survey),
        "scale": args.scale,
        "max_cost": args.max_cost,
        "gsd_m": gsd,
        "compile_s": compile_s,
        "views": rows,
        "s_per_mp": total_s / total_mp,
        "cpu_s_per_mp": sum(r["cpu_s"] for r in rows) / total_mp,
        "peak_rss_growth_mb_max": max([r["peak_rss_growth_mb"] for r in rows], default=0.0),
        "fusion_s": fuse_s,
        "points": len(cloud),
        "score": sc,
    }
    print(
        f"\ndense matching: {result['s_per_mp']:.1f} s/MP wall, "
        f"{result['cpu_s_per_mp']:.1f} CPU-s/MP (target <= 30 s/MP on 2 cores), "
        f"load {os.getloadavg()}"
    )
    print(f"peak memory growth per view: {result['peak_rss_growth_mb_max']:.0f} MB")
    print(f"fused points: {len(cloud)} ({fuse_s:.1f} s)")
    print("tau (m)   accuracy  completeness  F1")
    for tau, s in sc["by_tau"].items():
        acc, comp, f1 = s["accuracy"], s["completeness"], s["f1"]
        print(f"{float(tau):7.3f}   {acc:.3f}     {comp:.3f}        {f1:.3f}")
    from twin.synth.model import Surface

    tau2 = f"{2 * gsd:g}"
    print(f"per truth label at tau = 2 x GSD ({2 * gsd:.3f} m):")
    print("label     samples  points   accuracy  completeness  F1")
    for lab, row in sc["by_label"].items():
        s = row[tau2]
        print(
            f"{Surface(lab).name.lower():8s} {row['samples']:8d} {row['points']:7d}   "
            f"{s['accuracy']:.3f}     {s['completeness']:.3f}        {s['f1']:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
