"""Deterministic benchmark meshes for the mesh-storage benchmark (and tests).

- :func:`scan_mesh`: a scan-like surface, irregular and noisy: a Delaunay
  triangulation of uniformly random points over hilly terrain with 2 cm Gaussian
  noise, vertices in random order (as a reconstruction would emit them).
- :func:`city_mesh`: a city-like mesh: a regular ground grid plus box buildings
  whose walls are subdivided into floor x window panels, each wall and roof with
  its own vertices (flat shading, so coincident positions on the box edges are
  separate vertices, as in real city models).
- :func:`soup`: the same mesh as an unindexed triangle soup (3 vertices per face),
  the input a weld benchmark starts from.

Memory of each generator grows linearly with the requested triangle count (about
100 bytes per triangle at peak, for the Delaunay step of :func:`scan_mesh`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _terrain_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (
        6.0 * np.sin(x / 37.0) * np.cos(y / 53.0)
        + 2.5 * np.sin(x / 11.0 + 1.3) * np.sin(y / 7.0)
        + 0.4 * np.cos(x / 2.3) * np.sin(y / 3.1 + 0.5)
    )


def scan_mesh(n_triangles: int = 1_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An irregular, noisy terrain scan of about ``n_triangles`` triangles.

    Returns ``(vertices float64 (N, 3) metres, faces uint32 (M, 3))`` with
    ``M ~= n_triangles`` (a planar Delaunay triangulation of N points has about
    2 N triangles). Point spacing is about 0.25 m.
    """
    rng = _rng(seed)
    n = max(4, n_triangles // 2 + 2)
    side = 0.25 * np.sqrt(n)
    xy = rng.uniform(0.0, side, size=(n, 2))
    faces = Delaunay(xy).simplices.astype(np.uint32)
    z = _terrain_height(xy[:, 0], xy[:, 1]) + rng.normal(0.0, 0.02, n)
    vertices = np.column_stack([xy, z])
    # Delaunay keeps input order for vertices; shuffle faces to mimic a scanner's
    # unordered output (the vertex order is already random).
    faces = faces[rng.permutation(faces.shape[0])]
    # consistent upward winding
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    flip = np.cross(b - a, c - a)[:, 2] < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return vertices, np.ascontiguousarray(faces)


def _grid(nx: int, ny: int, x0: float, y0: float, dx: float, dy: float):
    xs = x0 + dx * np.arange(nx)
    ys = y0 + dy * np.arange(ny)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    r, c = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    v00 = (r * nx + c).ravel()
    v01 = v00 + 1
    v10 = v00 + nx
    v11 = v10 + 1
    faces = np.concatenate(
        [np.column_stack([v00, v01, v11]), np.column_stack([v00, v11, v10])]
    ).reshape(2, -1, 3)
    faces = faces.transpose(1, 0, 2).reshape(-1, 3)  # the two triangles of a cell together
    return gx.ravel(), gy.ravel(), faces


def _panel(origin, u, v, nu: int, nv: int):
    """A planar (nu x nv)-panel quad grid spanned by vectors u, v from origin."""
    s = np.linspace(0.0, 1.0, nu + 1)
    t = np.linspace(0.0, 1.0, nv + 1)
    ss, tt = np.meshgrid(s, t, indexing="xy")
    pts = origin + ss.ravel()[:, None] * u + tt.ravel()[:, None] * v
    _, _, faces = _grid(nu + 1, nv + 1, 0, 0, 1, 1)
    return pts, faces


def city_mesh(n_triangles: int = 1_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A city-like mesh of about ``n_triangles`` triangles (ground grid + buildings).

    Half of the triangles go to a 1 m ground grid, half to box buildings on a block
    grid (walls split per 3 m floor and 4 m window bay; flat roofs). Returns
    ``(vertices float64 (N, 3) metres, faces uint32 (M, 3))``.
    """
    rng = _rng(seed)
    g = max(2, int(np.sqrt(n_triangles / 4)) + 1)
    gx, gy, gfaces = _grid(g, g, 0.0, 0.0, 1.0, 1.0)
    gz = 0.05 * _terrain_height(gx, gy)
    parts_v = [np.column_stack([gx, gy, gz])]
    parts_f = [gfaces]
    count_v = gx.size
    budget = n_triangles - gfaces.shape[0]
    extent = float(g - 1)
    while budget > 0:
        w, d = rng.uniform(8.0, 30.0, 2)
        floors = int(rng.integers(2, 25))
        h = 3.0 * floors
        x0, y0 = rng.uniform(0.0, max(1.0, extent - 30.0), 2)
        base = np.array([x0, y0, 0.0])
        corners = [base, base + [w, 0, 0], base + [w, d, 0], base + [0, d, 0]]
        for k in range(4):
            p0 = corners[k]
            p1 = corners[(k + 1) % 4]
            bays = max(1, int(np.linalg.norm(p1 - p0) / 4.0))
            pts, f = _panel(p0, p1 - p0, np.array([0, 0, h]), bays, floors)
            parts_v.append(pts)
            parts_f.append(f + count_v)
            count_v += pts.shape[0]
            budget -= f.shape[0]
        pts, f = _panel(base + [0, 0, h], np.array([w, 0, 0]), np.array([0, d, 0]), 1, 1)
        parts_v.append(pts)
        parts_f.append(f + count_v)
        count_v += pts.shape[0]
        budget -= f.shape[0]
    return np.concatenate(parts_v), np.concatenate(parts_f).astype(np.uint32)


def soup(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unindexed triangle soup of a mesh: vertex 3 t + k is corner k of face t."""
    v = vertices[faces.reshape(-1)]
    f = np.arange(v.shape[0], dtype=np.uint32).reshape(-1, 3)
    return v, f
