"""Ground filtering and LAS/LAZ I/O against the peers, in one run.

* Ground: ``twin.points.classify_ground`` (SMRF family, Numba) vs the official cloth
  simulation filter (PyPI ``cloth-simulation-filter``, module ``CSF``) with its
  default settings and with the best of a small grid of settings chosen against the
  truth (an upper bound for a tuned CSF; twin gets the same treatment, "twin_tuned"),
  on the same clouds: the synthetic test scene of ``twin.points.testing`` (exact
  labels), the simulator's "small" city (``twin.synth``, exact labels) when available,
  and the Delft AHN3 tile (AHN's own classes as the reference) when the data is there.
  Reported: total error, Cohen's kappa, type I/II errors, seconds.
* Buildings and vegetation: ``twin.points.classify.classify`` (ground filter, local
  covariance features, voxel regions, returns) on the same clouds: building and
  vegetation precision/recall, overall accuracy, kappa, seconds; with the footprints
  where the cloud has them, and for Delft the share of our building points inside the
  BGT footprints next to the share of AHN's own building points.
* I/O: points per second reading LAS and LAZ with twin (all fields and xyz only)
  vs plain laspy + lazrs doing the same work, and writing.

* Filters: ``twin.points.filters`` (statistical and radius outliers, voxel
  downsampling, normals) vs Open3D on a 1 M-point wavy surface with known normals
  and injected outliers: seconds, agreement, precision/recall, angle errors.

Usage: ``python benchmarks/points.py [--json PATH] [--quick]
[--only ground,classify,filters,io]``.
Needs ``CSF`` (``pip install cloth-simulation-filter``) for the peer columns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.points import io, metrics  # noqa: E402
from twin.points.ground import classify_ground  # noqa: E402
from twin.points.testing import make_scene  # noqa: E402

SHARED = Path(
    os.environ.get("TWIN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _clouds(quick: bool):
    """(name, xyz, truth ground bool, evaluation mask, cloud) for each test cloud."""
    out = []
    s = make_scene(extent=160.0 if quick else 220.0)
    out.append(("synthetic scene", s.cloud, s.truth == 2, np.ones(len(s.cloud), bool)))
    try:
        from twin.synth.city import make_city
        from twin.synth.lidar import simulate_lidar, write_lidar
        from twin.synth.params import PRESETS
        from twin.synth.truth import build_truth

        spec = PRESETS["small"]
        truth = build_truth(make_city(spec), spec)
        pts = simulate_lidar(truth, spec, np.random.Generator(np.random.PCG64(spec.seed)))
        with tempfile.TemporaryDirectory() as d:
            write_lidar(pts, truth.frame, spec.crs, Path(d) / "lidar.laz")
            c = io.read(Path(d) / "lidar.laz")
        cls = c.classification.copy()
        c.fields["classification"][:] = 1
        # Water (9) is a flat ground-level surface that no ground filter separates by
        # geometry: scored without it ("land") and as ground ("surface").
        out.append(("synth small city (land)", c, cls == 2, cls != 9))
        out.append(("synth small city (water = ground)", c, np.isin(cls, (2, 9)), None))
    except ImportError as exc:
        print(f"(simulator not available: {exc})")
    delft = SHARED / "delft" / "ahn3_cropped_2.laz"
    if delft.exists():
        c = io.read(delft, crs="EPSG:7415")
        cls = c.classification.copy()
        c.fields["classification"][:] = 1
        out.append(("Delft AHN3 (vs AHN classes)", c, cls == 2, None))
    return out


def _csf(xyz: np.ndarray, *, resolution=0.5, rigidness=3, slope_smooth=False, threshold=0.5):
    import CSF

    f = CSF.CSF()
    f.params.bSloopSmooth = slope_smooth
    f.params.cloth_resolution = resolution
    f.params.rigidness = rigidness
    f.params.class_threshold = threshold
    f.params.time_step = 0.65
    f.params.interations = 500
    centred = xyz - xyz.mean(axis=0)
    f.setPointCloud(centred)
    ground, rest = CSF.VecInt(), CSF.VecInt()
    with _quiet():  # CSF prints its progress on stdout
        f.do_filtering(ground, rest, False)
    out = np.zeros(len(xyz), dtype=bool)
    out[np.asarray(ground, dtype=np.int64)] = True
    return out


class _quiet:
    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.saved)
        os.close(self.null)


def _score(pred, truth, mask):
    if mask is not None:
        pred, truth = pred[mask], truth[mask]
    m = metrics.summary(pred, truth)
    return {k: m[k] for k in ("total_error", "kappa", "type1", "type2")}


def bench_ground(quick: bool) -> list[dict]:
    rows = []
    warm = make_scene(extent=60.0, density=2.0)
    t = time.perf_counter()
    classify_ground(warm.cloud)
    first_call = time.perf_counter() - t
    print(f"first call (Numba cache load or compile): {first_call:.2f} s")
    try:
        import CSF  # noqa: F401

        have_csf = True
    except ImportError:
        have_csf = False
        print("(CSF not installed: pip install cloth-simulation-filter)")
    csf_grid = [
        dict(resolution=r, rigidness=k, slope_smooth=s)
        for r in (0.5, 1.0, 2.0)
        for k in (1, 2, 3)
        for s in (False, True)
    ]
    twin_grid = [
        dict(threshold=t, scalar=k, slope=s)
        for t in (0.3, 0.5)
        for k in (0.5, 1.25)
        for s in (0.1, 0.15, 0.3)
    ]
    if quick:
        csf_grid = csf_grid[::3]
        twin_grid = twin_grid[::3]
    for name, cloud, truth, mask in _clouds(quick):
        row = {"cloud": name, "points": len(cloud)}
        t = time.perf_counter()
        g = classify_ground(cloud)
        row["twin"] = {**_score(g, truth, mask), "seconds": time.perf_counter() - t}
        best = None
        for p in twin_grid:
            t = time.perf_counter()
            g = classify_ground(cloud, **p)
            sc = {**_score(g, truth, mask), "seconds": time.perf_counter() - t, "params": p}
            if best is None or sc["kappa"] > best["kappa"]:
                best = sc
        row["twin_tuned"] = best
        if have_csf:
            t = time.perf_counter()
            g = _csf(cloud.xyz)
            row["csf_default"] = {**_score(g, truth, mask), "seconds": time.perf_counter() - t}
            best = None
            for p in csf_grid:
                t = time.perf_counter()
                g = _csf(cloud.xyz, **p)
                sc = {**_score(g, truth, mask), "seconds": time.perf_counter() - t, "params": p}
                if best is None or sc["kappa"] > best["kappa"]:
                    best = sc
            row["csf_tuned"] = best
        rows.append(row)
        _print_ground(row)
    return rows


def _print_ground(row):
    print(f"\n{row['cloud']} ({row['points']:,} points)")
    print(
        f"  {'method':<14}{'total err %':>12}{'kappa':>8}{'type I %':>10}{'type II %':>10}{'s':>8}"
    )
    for k in ("twin", "twin_tuned", "csf_default", "csf_tuned"):
        if k in row:
            r = row[k]
            print(
                f"  {k:<14}{100 * r['total_error']:>12.2f}{r['kappa']:>8.3f}"
                f"{100 * r['type1']:>10.2f}{100 * r['type2']:>10.2f}{r['seconds']:>8.2f}"
                + (f"  {r['params']}" if "params" in r else "")
            )


def _classify_clouds(quick: bool):
    """(name, cloud, truth classes, footprints or None, water detection on)."""
    import geopandas as gpd

    out = []
    s = make_scene(extent=160.0 if quick else 220.0)
    out.append(("synthetic scene", s.cloud, s.truth, None, False))
    try:
        from twin.synth.params import PRESETS
        from twin.synth.survey import generate

        with tempfile.TemporaryDirectory() as d:
            generate(Path(d) / "s", PRESETS["small"].with_(images=False, events=False))
            c = io.read(Path(d) / "s" / "lidar.laz")
            fp = gpd.read_file(Path(d) / "s" / "footprints.gpkg")
        truth = c.classification.copy()
        c.fields["classification"][:] = 1
        out.append(("synth small city", c, truth, None, True))
        out.append(("synth small city + footprints", c, truth, fp, True))
    except ImportError as exc:
        print(f"(simulator not available: {exc})")
    delft = SHARED / "delft" / "ahn3_cropped_2.laz"
    if delft.exists():
        c = io.read(delft, crs="EPSG:7415")
        truth = c.classification.copy()
        c.fields["classification"][:] = 1
        # AHN3 class 1 is "everything else": mostly trees here; scored as vegetation
        truth = np.where(truth == 1, 5, truth).astype(np.uint8)
        out.append(("Delft AHN3 (vs AHN classes)", c, truth, None, False))
    return out


def bench_classify(quick: bool) -> list[dict]:
    import geopandas as gpd

    from twin.points.classify import class_report, classify, footprint_index

    warm = make_scene(extent=60.0, density=2.0)
    classify(warm.cloud)  # Numba cache load / compile
    rows = []
    print("\nBuildings (6) and vegetation (3-5) vs truth (P = precision, R = recall, %)")
    print(
        f"  {'cloud':<32}{'points':>9}{'bld P':>8}{'bld R':>8}{'veg P':>8}{'veg R':>8}"
        f"{'OA':>8}{'kappa':>7}{'s':>7}"
    )
    for name, cloud, truth, fp, water in _classify_clouds(quick):
        t = time.perf_counter()
        pred = classify(cloud, footprints=fp, water=water)
        secs = time.perf_counter() - t
        r = {"cloud": name, "points": len(cloud), **class_report(pred, truth), "seconds": secs}
        if name.startswith("Delft"):
            bgt = SHARED / "delft" / "bgt_pand.sqlite"
            if bgt.exists():
                f = gpd.read_file(bgt)
                x0, y0, x1, y1 = f.total_bounds
                cov = (cloud.x >= x0) & (cloud.x <= x1) & (cloud.y >= y0) & (cloud.y <= y1)
                for who, b in (("twin", pred == 6), ("ahn", truth == 6)):
                    m = cov & b
                    r[f"in_footprints_{who}"] = float(
                        np.mean(footprint_index(cloud, f, mask=m)[m] >= 0)
                    )
        rows.append(r)
        print(
            f"  {name:<32}{len(cloud):>9,}{100 * r['building_precision']:>8.2f}"
            f"{100 * r['building_recall']:>8.2f}{100 * r['vegetation_precision']:>8.2f}"
            f"{100 * r['vegetation_recall']:>8.2f}{100 * r['overall_accuracy']:>8.2f}"
            f"{r['kappa']:>7.3f}{secs:>7.2f}"
        )
        if "in_footprints_twin" in r:
            print(
                f"    building points inside BGT footprints (where the layer covers): twin "
                f"{100 * r['in_footprints_twin']:.1f} %, AHN {100 * r['in_footprints_ahn']:.1f} %"
            )
    return rows


def bench_io(quick: bool) -> dict:
    import laspy

    s = make_scene(extent=160.0 if quick else 300.0, density=8.0)
    reps = 2 if quick else 4
    big = io.concat([s.cloud] * reps)
    for i in range(reps):  # shift the copies apart
        k = len(s.cloud)
        big.xyz[i * k : (i + 1) * k, 0] += i * 400.0
    big.fields["intensity"] = np.arange(len(big), dtype=np.uint16)
    big.fields["gps_time"] = np.linspace(0, 100, len(big))
    n = len(big)
    out = {"points": n}
    with tempfile.TemporaryDirectory() as d:
        for ext in ("las", "laz"):
            p = Path(d) / f"big.{ext}"
            t = time.perf_counter()
            io.write(big, p)
            tw = time.perf_counter() - t
            # plain laspy doing the same work: arrays -> LasData -> file
            t = time.perf_counter()
            h = laspy.LasHeader(point_format=6, version="1.4")
            h.scales = big.scales
            h.offsets = np.floor(big.xyz.min(axis=0))
            las = laspy.LasData(h)
            las.x, las.y, las.z = big.xyz[:, 0], big.xyz[:, 1], big.xyz[:, 2]
            for k, v in big.fields.items():
                las[k] = v
            las.write(Path(d) / f"plain.{ext}")
            tl = time.perf_counter() - t

            def laspy_all(p=p):
                las = laspy.read(p)
                xyz = np.asarray(las.xyz)
                for dim in las.point_format.dimension_names:
                    if dim not in ("X", "Y", "Z"):
                        np.array(las[dim])
                return xyz

            def laspy_xyz(p=p):
                return np.asarray(laspy.read(p).xyz)

            res = {}
            for label, ours, theirs in (
                ("all fields", lambda p=p: io.read(p), laspy_all),
                ("xyz only", lambda p=p: io.read(p, fields=[]), laspy_xyz),
            ):
                to, tt = [], []
                for _ in range(3):  # interleaved, best of 3: these machines are noisy
                    t = time.perf_counter()
                    ours()
                    to.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    theirs()
                    tt.append(time.perf_counter() - t)
                res[label] = {
                    "twin_mpts_s": n / min(to) / 1e6,
                    "laspy_mpts_s": n / min(tt) / 1e6,
                    "ratio": min(tt) / min(to),
                }
            res["write"] = {
                "twin_mpts_s": n / tw / 1e6,
                "laspy_mpts_s": n / tl / 1e6,
                "ratio": tl / tw,
            }
            out[ext] = res
            if ext == "las":
                out["dtm_memory"] = _dtm_memory(p, Path(d))
    print(f"\nI/O, {n:,} points (M points/s; ratio = twin speed / laspy speed)")
    for ext in ("las", "laz"):
        for k, r in out[ext].items():
            print(
                f"  {ext} {k:<11} twin {r['twin_mpts_s']:7.2f}  laspy {r['laspy_mpts_s']:7.2f}"
                f"  ratio {r['ratio']:.2f}"
            )
    return out


def _wavy(n: int, extent: float, seed: int = 0):
    """A wavy surface z = 2 sin(x/7) cos(y/9) with its true normals, plus 0.2 % of
    points scattered 3-30 m above or below it (the outliers)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    x, y = rng.uniform(0, extent, n), rng.uniform(0, extent, n)
    z = 2 * np.sin(x / 7) * np.cos(y / 9) + rng.normal(0, 0.01, n)
    nrm = np.column_stack(
        [-2 / 7 * np.cos(x / 7) * np.cos(y / 9), 2 / 9 * np.sin(x / 7) * np.sin(y / 9), np.ones(n)]
    )
    nrm /= np.linalg.norm(nrm, axis=1)[:, None]
    k = n // 500
    xo, yo = rng.uniform(0, extent, k), rng.uniform(0, extent, k)
    zo = rng.choice([-1, 1], k) * rng.uniform(3, 30, k)
    xyz = np.column_stack([np.r_[x, xo], np.r_[y, yo], np.r_[z, zo]])
    truth = np.r_[np.zeros(n, bool), np.ones(k, bool)]
    return xyz, nrm, truth


def _best(fn, reps: int = 2):
    best, out = np.inf, None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_filters(quick: bool) -> dict:
    """twin.points.filters vs Open3D on a 1 M-point wavy surface with outliers."""
    import open3d as o3d
    import pyproj

    from twin.points import filters as Fl
    from twin.points.cloud import PointCloud

    n = 200_000 if quick else 1_000_000
    extent = float(np.sqrt(n / 4.0))  # 4 points/m^2
    xyz, nrm_true, truth = _wavy(n, extent)
    cloud = PointCloud(xyz, crs=pyproj.CRS(32631))
    small = PointCloud(xyz[:5000], crs=pyproj.CRS(32631))
    for f in (Fl.statistical_outliers, Fl.radius_outliers, Fl.estimate_normals):
        f(small)  # Numba cache load
    Fl.voxel_downsample(small, 1.0)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz - xyz.min(axis=0)))
    out: dict = {"points": len(xyz)}

    def pr(pred):
        tp = np.count_nonzero(pred & truth)
        return tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)

    def o3d_mask(fn):
        _, kept = fn()
        m = np.ones(len(xyz), bool)
        m[np.asarray(kept)] = False
        return m

    t_tw, p_tw = _best(lambda: Fl.statistical_outliers(cloud, k=8, std_ratio=2.0))
    t_o3, p_o3 = _best(lambda: o3d_mask(lambda: pc.remove_statistical_outlier(9, 2.0)))
    out["statistical"] = {
        "twin_s": t_tw,
        "open3d_s": t_o3,
        "same_decisions": float(np.mean(p_tw == p_o3)),
        "twin_precision_recall": pr(p_tw),
        "open3d_precision_recall": pr(p_o3),
    }
    t_tw, p_tw = _best(lambda: Fl.radius_outliers(cloud, radius=1.5, min_neighbors=2))
    t_o3, p_o3 = _best(lambda: o3d_mask(lambda: pc.remove_radius_outlier(3, 1.5)))
    out["radius"] = {
        "twin_s": t_tw,
        "open3d_s": t_o3,
        "same_decisions": float(np.mean(p_tw == p_o3)),
        "twin_precision_recall": pr(p_tw),
        "open3d_precision_recall": pr(p_o3),
    }
    t_tw, v_tw = _best(lambda: Fl.voxel_downsample(cloud, 1.0))
    t_o3, v_o3 = _best(lambda: pc.voxel_down_sample(1.0))
    out["voxel"] = {
        "twin_s": t_tw,
        "open3d_s": t_o3,
        "twin_points": len(v_tw),
        "open3d_points": len(v_o3.points),
        "note": "twin carries every field; Open3D keeps colours/normals only",
    }
    surf = ~truth
    for method in ("numba", "open3d"):
        t, nrm = _best(lambda m=method: Fl.estimate_normals(cloud, k=16, method=m))
        ang = np.degrees(np.arccos(np.clip(np.abs(np.sum(nrm[surf] * nrm_true, 1)), 0, 1)))
        out[f"normals_{method}"] = {
            "seconds": t,
            "median_deg": float(np.median(ang)),
            "p95_deg": float(np.percentile(ang, 95)),
        }
    r = out
    print(f"\nFilters on {len(xyz):,} points (a wavy surface + 0.2 % outliers), best of 2 (s)")
    for k in ("statistical", "radius"):
        (pt, rt), (po, ro) = r[k]["twin_precision_recall"], r[k]["open3d_precision_recall"]
        print(
            f"  {k:<12} twin {r[k]['twin_s']:6.2f}  Open3D {r[k]['open3d_s']:6.2f}  "
            f"ratio {r[k]['twin_s'] / r[k]['open3d_s']:5.2f}  "
            f"same {100 * r[k]['same_decisions']:.3f} %"
            f"  P/R twin {pt:.3f}/{rt:.3f} Open3D {po:.3f}/{ro:.3f}"
        )
    v = r["voxel"]
    print(
        f"  {'voxel 1 m':<12} twin {v['twin_s']:6.2f}  Open3D {v['open3d_s']:6.2f}  ratio "
        f"{v['twin_s'] / v['open3d_s']:5.2f}  points {v['twin_points']:,} / {v['open3d_points']:,}"
    )
    a, b = r["normals_numba"], r["normals_open3d"]
    print(
        f"  {'normals k16':<12} twin {a['seconds']:6.2f}  Open3D {b['seconds']:6.2f}  ratio "
        f"{a['seconds'] / b['seconds']:5.2f}  angle error median/p95: twin "
        f"{a['median_deg']:.2f}/{a['p95_deg']:.2f} deg, "
        f"Open3D {b['median_deg']:.2f}/{b['p95_deg']:.2f}"
    )
    return out


def _dtm_memory(path: Path, d: Path) -> dict:
    """Peak traced (Python + NumPy) memory of a streamed DTM, and of reading it all."""
    import tracemalloc

    from twin.points import raster

    raster.dtm(path, d / "warm.tif", 2.0, ground="classify", chunk_points=200_000)
    tracemalloc.start()
    t = time.perf_counter()
    raster.dtm(path, d / "dtm.tif", 1.0, ground="classify", chunk_points=500_000)
    secs = time.perf_counter() - t
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    io.read(path)
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    r = {"dtm_peak_mb": streamed / 1e6, "read_all_peak_mb": whole / 1e6, "dtm_seconds": secs}
    print(
        f"\nDTM from a file, streamed (chunks of 500k points): peak {r['dtm_peak_mb']:.0f} MB"
        f" traced, vs {r['read_all_peak_mb']:.0f} MB to read the file whole; {secs:.1f} s"
    )
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="smaller clouds, fewer CSF settings")
    ap.add_argument(
        "--only", default="ground,classify,filters,io", help="comma-separated sections to run"
    )
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
    }
    sections = (
        ("ground", bench_ground),
        ("classify", bench_classify),
        ("filters", bench_filters),
        ("io", bench_io),
    )
    for name, fn in sections:
        if name in only:
            result[name] = fn(args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
