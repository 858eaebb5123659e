"""Surfaces and buildings benchmark: Poisson vs DSM reconstruction, LoD2 accuracy.

    python benchmarks/surfaces.py --json out.json [--survey DIR] [--skip-delft]

1. **Surfaces** on the LiDAR of the synthetic survey ("small" preset, 240 m, 6 pts/m²;
   generated into a temporary folder unless ``--survey`` is given), all in the survey's
   ENU frame: twin DSM (0.5 m, TIN 0.1 m; whole and in 60 m tiles), twin Poisson
   (density-trimmed, cropped) and, as the peer, plain Open3D screened Poisson at the
   same depth (normals from Open3D turned up, no trimming, cropped to the same box).
   Two-sided distance to the truth mesh (mean and 95th percentile): surface -> truth
   over area-uniform samples, truth -> surface over the *visible* truth (no buried
   floors or undersides, no terrain under roofs), both measured exactly with Open3D's
   BVH (``benchmarks/_distance.py``); faces and seconds.
2. **LoD2 from points** on the same survey: roof-plane slope error (degrees) and
   ridge-height error (m) against the synthetic truth, watertight solids, seconds; the
   footprint-attribute LoD2 (``twin.mesh.building_meshes``) is the timing baseline.
3. **Delft** (real AHN3 + BGT footprints, ``../shared/data/delft``): LoD counts and,
   per building, our median roof height, ridge and base minus the LoD1 reference
   ``delft.json`` (top and bottom of each building).

Prints a table and writes JSON. Times are noisy on shared machines: compare ratios
from one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._distance import point_to_mesh, sample_surface  # noqa: E402

DELFT = ROOT.parent / "shared" / "data" / "delft"
ROOF, TREE = 5, 6


def visible_truth(v, f, surf, bld):
    import shapely

    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    roofs = shapely.union_all([shapely.Polygon(t[:, :2]) for t in tri[surf == ROOF]]).buffer(0.01)
    cen = tri.mean(axis=1)
    under = (bld < 0) & (surf != TREE) & shapely.contains_xy(roofs, cen[:, 0], cen[:, 1])
    return (n[:, 2] > -0.1) & ~under


def distances(v, f, tv, tf, vis, area, n=200_000):
    x0, y0, x1, y1 = area
    pm = sample_surface(v, f, n, 1)
    dm = point_to_mesh(pm, tv, tf)
    pt = sample_surface(tv, tf[vis], 2 * n, 2)
    ins = (pt[:, 0] > x0 + 2) & (pt[:, 0] < x1 - 2) & (pt[:, 1] > y0 + 2) & (pt[:, 1] < y1 - 2)
    dt = point_to_mesh(pt[ins], v, f)
    return {
        "to_truth_mean": float(dm.mean()),
        "to_truth_p95": float(np.percentile(dm, 95)),
        "from_truth_mean": float(dt.mean()),
        "from_truth_p95": float(np.percentile(dt, 95)),
    }


def open3d_poisson(xyz, depth, area):
    import open3d as o3d

    c = xyz.mean(axis=0)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz - c))
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
    pc.orient_normals_to_align_with_direction([0.0, 0.0, 1.0])
    m, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pc, depth=depth)
    v = np.asarray(m.vertices) + c
    f = np.asarray(m.triangles)
    cen = v[f].mean(axis=1)
    x0, y0, x1, y1 = area
    keep = (cen[:, 0] >= x0) & (cen[:, 0] <= x1) & (cen[:, 1] >= y0) & (cen[:, 1] <= y1)
    return v, f[keep]


def bench_surfaces(survey: Path) -> list[dict]:
    from twin.crs import LocalFrame
    from twin.mesh.surface import local_points, reconstruct
    from twin.points import read
    from twin.synth.truth import read_truth_ply

    frame = LocalFrame.from_dict(json.loads((survey / "survey.json").read_text())["frame"])
    tv, tf, surf, bld = read_truth_ply(survey / "truth" / "mesh.ply")
    vis = visible_truth(tv, tf, surf, bld)
    cloud = read(survey / "lidar.laz", fields=["classification"])
    rows = []
    runs = [
        ("twin DSM 0.5 m, TIN 0.1 m", dict(method="dsm")),
        ("twin DSM, 60 m tiles", dict(method="dsm", tile_size=60.0)),
        ("twin DSM 1 m grid", dict(method="dsm", resolution=1.0, max_error=0.0)),
        ("twin Poisson (trimmed)", dict(method="poisson")),
        ("twin Poisson, 80 m tiles", dict(method="poisson", tile_size=80.0)),
    ]
    area = None
    depth = None
    for name, kw in runs:
        t = time.perf_counter()
        s = reconstruct(cloud, frame=frame, **kw)
        dt = time.perf_counter() - t
        area = s.info["area"]
        if kw["method"] == "poisson" and "tile_size" not in kw:
            depth = s.info["depth"][0]
        d = distances(s.vertices, s.faces.astype(np.int64), tv, tf, vis, area)
        rows.append(
            {"method": name, "faces": int(len(s.faces)), "seconds": dt, "holes": len(s.holes), **d}
        )
        print(f"  {name}: {dt:.1f} s", flush=True)
    xyz, _, _, _ = local_points(cloud, frame)
    t = time.perf_counter()
    v, f = open3d_poisson(xyz, depth, area)
    dt = time.perf_counter() - t
    d = distances(v, f, tv, tf, vis, area)
    rows.append(
        {
            "method": f"Open3D Poisson depth {depth} (peer)",
            "faces": int(len(f)),
            "seconds": dt,
            "holes": None,
            **d,
        }  # fmt: skip
    )
    return rows


def bench_lod2(survey: Path) -> dict:
    import geopandas as gpd
    import shapely
    import trimesh

    from twin.crs import LocalFrame
    from twin.mesh.buildings import building_meshes
    from twin.mesh.footprints import read_footprints
    from twin.mesh.roofs import buildings_from_points
    from twin.points import read
    from twin.terrain.dem import read_dem

    frame = LocalFrame.from_dict(json.loads((survey / "survey.json").read_text())["frame"])
    fp = read_footprints(survey / "footprints.gpkg")
    dem = read_dem(survey / "dem.tif")
    cloud = read(survey / "lidar.laz", fields=["classification"])
    t = time.perf_counter()
    res = buildings_from_points(cloud, fp.drop(columns=["base_height"]), dem, frame)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    building_meshes(fp, dem, frame, lod=2)
    dt_attr = time.perf_counter() - t
    truth = gpd.read_file(survey / "footprints.gpkg").set_index("building_id")
    slope_err, ridge_err, watertight, types_ok = [], [], 0, 0
    for b in res.buildings:
        row = truth.loc[b.id]
        a = b.attributes
        ridge_err.append(abs(a["ridge_z"] - (row.base_height + row.height)))
        m = trimesh.Trimesh(b.vertices, b.faces, process=False)
        watertight += bool(m.is_watertight and m.is_winding_consistent and m.volume > 0)
        types_ok += a["roof_type"] == row.roof_type
        if row.roof_type in ("gable", "hip"):
            c = np.asarray(shapely.minimum_rotated_rectangle(row.geometry).exterior.coords)
            short = np.hypot(*np.diff(c, axis=0).T)[:2].min()
            pitch = math.degrees(math.atan((row.height - row.eave_height) / (short / 2)))
            slope_err += [abs(p["slope_deg"] - pitch) for p in a["planes"]]
    return {
        "buildings": len(res.buildings),
        "sloped_planes": len(slope_err),
        "slope_err_max_deg": float(max(slope_err)),
        "slope_err_mean_deg": float(np.mean(slope_err)),
        "ridge_err_max_m": float(max(ridge_err)),
        "ridge_err_mean_m": float(np.mean(ridge_err)),
        "watertight": watertight,
        "roof_type_correct": types_ok,
        "seconds": dt,
        "seconds_attribute_lod2": dt_attr,
        "counts": res.counts,
    }


def bench_delft() -> dict:
    from twin.mesh.footprints import read_footprints
    from twin.mesh.roofs import buildings_from_points
    from twin.tiles.cityjson import read_cityjson_heights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = read_footprints(DELFT / "bgt_pand.sqlite")
        t = time.perf_counter()
        res = buildings_from_points(DELFT / "ahn3_cropped_2.laz", fp, crs="EPSG:28992")
        dt = time.perf_counter() - t
    ref = read_cityjson_heights(DELFT / "delft.json")
    per = []
    for b in res.buildings:
        a = b.attributes
        if a["source"] != "lidar" or b.id not in ref:
            continue
        r = ref[b.id]
        per.append(
            {
                "id": b.id,
                "lod": a["lod"],
                "roof_type": a["roof_type"],
                "points": a["points"],
                "d_median_roof": a["roof_median_z"] - r["zmax"],
                "d_ridge": a["ridge_z"] - r["zmax"],
                "d_base": a["base_height"] - r["zmin"],
            }
        )

    def stats(key, sel=None):
        x = np.asarray([p[key] for p in per if sel is None or sel(p)])
        if len(x) == 0:
            return None
        return {
            "n": int(len(x)),
            "median": float(np.median(x)),
            "p10": float(np.percentile(x, 10)),
            "p90": float(np.percentile(x, 90)),
        }

    def is_gable(p):
        return p["roof_type"] == "gable"

    return {
        "counts": res.counts,
        "seconds": dt,
        "median_roof_minus_ref_top": stats("d_median_roof"),
        "median_roof_minus_ref_top_gable": stats("d_median_roof", is_gable),
        "ridge_minus_ref_top": stats("d_ridge"),
        "base_minus_ref_bottom": stats("d_base"),
        "per_building": per,
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--survey", type=Path, default=None, help="an existing synthetic survey")
    ap.add_argument("--skip-delft", action="store_true")
    args = ap.parse_args(argv)
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    tmp = None
    survey = args.survey
    if survey is None:
        tmp = tempfile.TemporaryDirectory()
        survey = Path(tmp.name) / "survey"
        generate(survey, PRESETS["small"].with_(images=False, events=False))
    out = {
        "machine": platform.platform(),
        "surfaces": bench_surfaces(survey),
        "lod2": bench_lod2(survey),
    }
    if not args.skip_delft and DELFT.exists():
        out["delft"] = bench_delft()
    peer = out["surfaces"][-1]
    print(
        "\n| method | faces | s | ->truth mean / p95 (m) | truth-> mean / p95 (m) | time / peer |"
    )
    print("|---|---|---|---|---|---|")
    for r in out["surfaces"]:
        print(
            f"| {r['method']} | {r['faces']:,} | {r['seconds']:.1f} | "
            f"{r['to_truth_mean']:.3f} / {r['to_truth_p95']:.2f} | "
            f"{r['from_truth_mean']:.3f} / {r['from_truth_p95']:.2f} | "
            f"{r['seconds'] / peer['seconds']:.2f} |"
        )
    lod = out["lod2"]
    print(
        f"\nLoD2: {lod['buildings']} buildings, {lod['watertight']} watertight, roof type right "
        f"{lod['roof_type_correct']}; slope error max {lod['slope_err_max_deg']:.2f}° "
        f"(mean {lod['slope_err_mean_deg']:.2f}°, {lod['sloped_planes']} planes); ridge error "
        f"max {lod['ridge_err_max_m']:.3f} m; {lod['seconds']:.1f} s "
        f"({lod['seconds'] / lod['seconds_attribute_lod2']:.0f}x the attribute LoD2)"
    )
    if "delft" in out:
        d = out["delft"]
        print(f"Delft: {d['counts']} in {d['seconds']:.1f} s")
        for k in ("median_roof_minus_ref_top", "median_roof_minus_ref_top_gable",
                  "ridge_minus_ref_top", "base_minus_ref_bottom"):  # fmt: skip
            s = d[k]
            if s:
                print(
                    f"  {k}: n={s['n']} median {s['median']:+.2f} m "
                    f"(p10 {s['p10']:+.2f}, p90 {s['p90']:+.2f})"
                )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
