"""A small synthetic airborne-LiDAR scene with known classes, for tests and benchmarks.

Not the project's oracle (that is :mod:`twin.synth`, which point stages never import):
a quick, self-contained scene to check the ground filter against exact labels, with
the hard cases on purpose: rolling hills, a steep hillside, box buildings up to a
large flat roof, trees with ground under them, wall points, low and high outliers.
Memory grows with the number of points (``extent**2 * density``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.points.cloud import PointCloud


@dataclass
class Scene:
    """The cloud (classification all 1: unclassified), its true ASPRS classes and the
    true terrain height function ``terrain(x, y)`` (metres)."""

    cloud: PointCloud
    truth: np.ndarray
    buildings: list[tuple[float, float, float, float, float]]
    seed: int
    origin: tuple[float, float] = (0.0, 0.0)

    def terrain(self, x, y):
        """True terrain height at map coordinates (the scene's CRS)."""
        ox, oy = self.origin
        return terrain_height(np.asarray(x, float) - ox, np.asarray(y, float) - oy)


def terrain_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rolling hills plus a steep hillside (slope up to ~0.45) along the east edge."""
    z = 40.0 + 6.0 * np.sin(x / 35.0) * np.cos(y / 47.0) + 0.04 * y
    z += 14.0 / (1.0 + np.exp(-(x - 185.0) / 8.0))  # logistic ramp, max slope 0.44
    return z


def make_scene(
    extent: float = 220.0,
    density: float = 6.0,
    noise: float = 0.04,
    seed: int = 7,
    crs: str | None = "EPSG:32631",
    origin: tuple[float, float] = (500_000.0, 5_700_000.0),
) -> Scene:
    """A square scene ``extent`` metres wide with ``density`` points per square metre
    (horizontal), Gaussian range noise ``noise`` metres, at ``origin`` in ``crs``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n = int(extent * extent * density)
    x = rng.uniform(0, extent, n)
    y = rng.uniform(0, extent, n)
    g = terrain_height(x, y)
    z = g.copy()
    cls = np.full(n, 2, dtype=np.uint8)

    # Buildings: (x0, y0, width, depth, height); one 34 m x 30 m flat roof.
    buildings = [(30.0, 30.0, 34.0, 30.0, 12.0)]
    for _ in range(400):  # up to 14 buildings, as many as fit
        if len(buildings) >= 14:
            break
        w, d = rng.uniform(8, 24, 2)
        bx, by = rng.uniform(5, extent - 45, 2)
        h = rng.uniform(4, 25)
        box = (float(bx), float(by), float(w), float(d), float(h))
        if all(
            bx + w + 4 < o[0] or o[0] + o[2] + 4 < bx or by + d + 4 < o[1] or o[1] + o[3] + 4 < by
            for o in buildings
        ):
            buildings.append(box)
    for bx, by, w, d, h in buildings:
        inside = (x >= bx) & (x <= bx + w) & (y >= by) & (y <= by + d)
        base = terrain_height(np.array([bx + w / 2]), np.array([by + d / 2]))[0]
        z[inside] = base + h
        cls[inside] = 6

    # Trees: crowns of radius 2-5 m, 60 % of pulses hit the crown.
    for _ in range(40):
        tx, ty = rng.uniform(0, extent, 2)
        r = rng.uniform(2, 5)
        th = rng.uniform(5, 14)
        near = ((x - tx) ** 2 + (y - ty) ** 2 < r * r) & (cls == 2)
        hit = near & (rng.random(n) < 0.6)
        z[hit] = g[hit] + th - rng.uniform(0, 0.6 * th, hit.sum())
        cls[hit] = 5

    # Wall points: 1 point per square metre of wall.
    wx, wy, wz = [], [], []
    for bx, by, w, d, h in buildings:
        base = terrain_height(np.array([bx + w / 2]), np.array([by + d / 2]))[0]
        per = 2 * (w + d)
        m = int(per * h)
        s = rng.uniform(0, per, m)
        t = rng.uniform(0, 1, m)
        px = np.where(
            s < w,
            bx + s,
            np.where(s < w + d, bx + w, np.where(s < 2 * w + d, bx + (s - w - d), bx)),
        )
        py = np.where(
            s < w,
            by,
            np.where(
                s < w + d, by + (s - w), np.where(s < 2 * w + d, by + d, by + (s - 2 * w - d))
            ),
        )
        gz = terrain_height(px, py)
        wx.append(px)
        wy.append(py)
        wz.append(gz + t * (base + h - gz))
    x = np.concatenate([x, *wx])
    y = np.concatenate([y, *wy])
    z = np.concatenate([z, *wz])
    cls = np.concatenate([cls, np.full(sum(len(a) for a in wx), 6, dtype=np.uint8)])

    z = z + rng.normal(0, noise, len(z))
    # Outliers: 0.05 % low (multipath), 0.05 % high (birds).
    k = len(z)
    low = rng.choice(k, k // 2000, replace=False)
    z[low] -= rng.uniform(3, 20, len(low))
    cls[low] = 7
    high = rng.choice(k, k // 2000, replace=False)
    z[high] += rng.uniform(30, 80, len(high))
    cls[high] = 7

    xyz = np.column_stack([x + origin[0], y + origin[1], z])
    order = rng.permutation(len(xyz))
    import pyproj

    cloud = PointCloud(
        xyz=xyz[order],
        fields={"classification": np.ones(len(xyz), dtype=np.uint8)},
        crs=pyproj.CRS.from_user_input(crs) if crs else None,
        point_format=6,
        source=f"synthetic scene (seed {seed})",
    )
    shifted = [(bx + origin[0], by + origin[1], w, d, h) for bx, by, w, d, h in buildings]
    return Scene(cloud=cloud, truth=cls[order], buildings=shifted, seed=seed, origin=origin)


def _mirror(v: np.ndarray, period: float = 220.0) -> np.ndarray:
    """A triangle wave 0 .. period .. 0: tiles a function continuously."""
    return period - np.abs(np.mod(v, 2 * period) - period)


def write_city_las(
    path,
    n_points: int,
    extent: float,
    *,
    chunk_points: int = 1_000_000,
    seed: int = 0,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (500_000.0, 5_700_000.0),
) -> int:
    """Write an unclassified airborne-LiDAR-like LAS file of ``n_points`` points over
    an ``extent`` x ``extent`` metre square, chunk by chunk (memory grows with
    ``chunk_points``, never with ``n_points``): the rolling terrain of
    :func:`terrain_height` mirrored every 220 m (continuous), 12-40 m box buildings on a 60 m grid
    (every third block empty), 4 cm noise. Point format 6 (30 bytes a point), 1 mm
    scales. Returns the file size in bytes."""
    import laspy
    import pyproj

    from twin.fileio import atomic_path

    rng = np.random.Generator(np.random.PCG64(seed))
    block = 60.0
    nb = int(np.ceil(extent / block))
    sizes = rng.uniform(12, 40, (nb, nb, 2))
    heights = rng.uniform(4, 25, (nb, nb))
    heights[rng.random((nb, nb)) < 1 / 3] = 0.0
    h = laspy.LasHeader(point_format=6, version="1.4")
    h.scales = [0.001, 0.001, 0.001]
    h.offsets = [origin[0], origin[1], 0.0]
    h.add_crs(pyproj.CRS.from_user_input(crs))
    with atomic_path(path) as tmp, laspy.open(tmp, mode="w", header=h) as w:
        done = 0
        while done < n_points:
            n = min(chunk_points, n_points - done)
            x = rng.uniform(0, extent, n)
            y = rng.uniform(0, extent, n)
            z = terrain_height(_mirror(x), _mirror(y))
            bi = np.minimum((x // block).astype(np.int64), nb - 1)
            bj = np.minimum((y // block).astype(np.int64), nb - 1)
            w_, d_ = sizes[bi, bj, 0], sizes[bi, bj, 1]
            inside = ((x % block) < w_) & ((y % block) < d_) & (heights[bi, bj] > 0)
            base = terrain_height(_mirror(bi * block + w_ / 2), _mirror(bj * block + d_ / 2))
            z = np.where(inside, base + heights[bi, bj], z) + rng.normal(0, 0.04, n)
            rec = laspy.ScaleAwarePointRecord.zeros(n, header=h)
            rec.x = x + origin[0]
            rec.y = y + origin[1]
            rec.z = z
            rec.classification = np.ones(n, np.uint8)
            rec.return_number = np.ones(n, np.uint8)
            rec.number_of_returns = np.ones(n, np.uint8)
            rec.gps_time = np.arange(done, done + n, dtype=np.float64)
            w.write_points(rec)
            done += n
    return Path(path).stat().st_size
