"""ETH3D-style scores of a point cloud against a truth mesh.

``accuracy(τ)``: share of reconstructed points within τ of the truth surface.
``completeness(τ)``: share of truth-surface samples (area-uniform, ``spacing`` apart
on average) seen by at least ``min_cameras`` cameras (in the image, in front, not
occluded) that have a reconstructed point within τ. ``F1`` is their harmonic mean.
Distances to the mesh use Open3D's ray-casting scene (exact point-to-triangle).
Memory grows with the samples and points (a few tens of bytes each).
"""

from __future__ import annotations

import numpy as np


def surface_samples(vertices, faces, spacing: float, seed: int = 0, *, with_faces: bool = False):
    """Area-uniform random points on a triangle mesh, one per ``spacing²`` m² (and the
    face of each when ``with_faces``)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    n = int(area.sum() / spacing**2)
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(f), n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    p = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
    return (p, tri) if with_faces else p


def _scene(vertices, faces):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(vertices, np.float32)),
        o3d.core.Tensor(np.asarray(faces, np.uint32)),
    )
    return scene


def visible_count(scene, points: np.ndarray, cameras: list[dict]) -> np.ndarray:
    """How many cameras (dicts with K, R, t, width, height) see each point unoccluded."""
    import open3d as o3d

    count = np.zeros(len(points), np.int32)
    for cam in cameras:
        R, t, K = (np.asarray(cam[k], float) for k in ("R", "t", "K"))
        x = points @ R.T + t
        z = x[:, 2]
        uv = (x @ K.T)[:, :2] / np.maximum(z, 1e-9)[:, None]
        inside = (
            (z > 0)
            & (uv[:, 0] >= 0)
            & (uv[:, 1] >= 0)
            & (uv[:, 0] < cam["width"])
            & (uv[:, 1] < cam["height"])
        )
        idx = np.flatnonzero(inside)
        if not len(idx):
            continue
        C = -R.T @ t
        d = points[idx] - C
        dist = np.linalg.norm(d, axis=1)
        rays = np.hstack([np.broadcast_to(C, d.shape), d / dist[:, None]]).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        count[idx[hit >= dist - np.maximum(0.02, 1e-4 * dist)]] += 1
    return count


def score(
    points: np.ndarray,
    vertices,
    faces,
    cameras: list[dict],
    taus: list[float],
    *,
    spacing: float,
    min_cameras: int = 2,
    region: tuple | None = None,
    face_labels: np.ndarray | None = None,
) -> dict:
    """Accuracy, completeness and F1 per τ (see the module docstring).

    ``region`` (xmin, ymin, xmax, ymax) limits truth samples and points to an area.
    ``face_labels`` (one integer per face) adds completeness per label
    (``completeness_by_label``: label -> {tau: share}) and ``by_label``: label ->
    {tau: accuracy, completeness, F1}, a point counting for the label of its nearest
    truth face and a truth sample for the label of its own face.
    """
    import open3d as o3d
    from scipy.spatial import cKDTree

    scene = _scene(vertices, faces)
    samples, tri = surface_samples(vertices, faces, spacing, with_faces=True)
    pts = np.asarray(points, np.float64)
    if region is not None:
        x0, y0, x1, y1 = region
        inr = lambda p: (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)  # noqa: E731
        keep = inr(samples)
        samples, tri = samples[keep], tri[keep]
        pts = pts[inr(pts)]
    seen = visible_count(scene, samples, cameras) >= min_cameras
    samples, tri = samples[seen], tri[seen]
    if len(pts):
        near = scene.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
        d_acc = np.linalg.norm(near["points"].numpy() - pts, axis=1)
        pt_face = near["primitive_ids"].numpy().astype(np.int64)
    else:
        d_acc, pt_face = np.zeros(0), np.zeros(0, np.int64)
    d_comp = cKDTree(pts).query(samples)[0] if len(pts) else np.full(len(samples), np.inf)
    out = {"points": int(len(pts)), "truth_samples": int(len(samples)), "by_tau": {}}
    for tau in taus:
        acc = float((d_acc <= tau).mean()) if len(pts) else 0.0
        comp = float((d_comp <= tau).mean()) if len(samples) else 0.0
        f1 = 2 * acc * comp / (acc + comp) if acc + comp > 0 else 0.0
        out["by_tau"][f"{tau:g}"] = {"accuracy": acc, "completeness": comp, "f1": f1}
    out["median_error_m"] = float(np.median(d_acc)) if len(pts) else None
    if face_labels is not None:
        labels = np.asarray(face_labels)
        lab = labels[tri]
        plab = labels[pt_face]
        out["completeness_by_label"] = {
            int(v): {
                "samples": int((lab == v).sum()),
                **{f"{t:g}": float((d_comp[lab == v] <= t).mean()) for t in taus},
            }
            for v in np.unique(lab)
        }
        by_label = {}
        for v in np.unique(np.concatenate([lab, plab])):
            cs, ps = lab == v, plab == v
            row = {"samples": int(cs.sum()), "points": int(ps.sum())}
            for t in taus:
                acc = float((d_acc[ps] <= t).mean()) if ps.any() else 0.0
                comp = float((d_comp[cs] <= t).mean()) if cs.any() else 0.0
                f1 = 2 * acc * comp / (acc + comp) if acc + comp > 0 else 0.0
                row[f"{t:g}"] = {"accuracy": acc, "completeness": comp, "f1": f1}
            by_label[int(v)] = row
        out["by_label"] = by_label
    return out
