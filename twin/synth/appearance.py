"""Procedural surface colour of the truth scene (linear RGB in [0, 1]).

:class:`Albedo` is a pure function of the ENU point and the face it lies on: no
image, no state, no randomness beyond integer hashing of lattice coordinates, so
the camera simulator, the texturing checks and the PLY writer all see the same
colours. Every surface has detail down to ~10 cm (value noise octaves), because
dense image matching needs texture everywhere:

* GROUND: grass and soil patches (4-20 m) with fine noise;
* ROAD: asphalt grain, dashed white centre line (3 m on / 3 m off) and solid
  edge lines 0.4 m inside each carriageway edge;
* WATER: dark blue-green with ripples;
* WALL: a façade colour per building; windows on every floor (a row per
  ``floor_height`` from the base, columns every 3 m along the wall, the wall's
  horizontal direction taken from the face normal), each window a slightly
  different glass shade; nothing above the eaves;
* ROOF: gravel for flat roofs, tile rows along the slope for gable/hip roofs,
  colour per building and roof type;
* TREE: crown greens; trunks brown.
"""

from __future__ import annotations

import numpy as np

from twin.synth.model import Surface

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_P1 = np.uint32(0x9E3779B1)
_P2 = np.uint32(0x85EBCA77)

FACADES = np.array(
    [
        [0.62, 0.55, 0.45],  # sandstone
        [0.55, 0.55, 0.53],  # concrete
        [0.45, 0.20, 0.13],  # brick
        [0.70, 0.64, 0.48],  # pale yellow
        [0.72, 0.71, 0.68],  # white plaster
        [0.40, 0.42, 0.46],  # blue-grey panels
        [0.58, 0.40, 0.30],  # terracotta render
    ]
)
TILES = np.array([[0.40, 0.12, 0.07], [0.13, 0.13, 0.14], [0.28, 0.16, 0.09], [0.30, 0.30, 0.27]])
ROOF_CODE = {"flat": 0, "gable": 1, "hip": 2}


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> float in [0, 1). Inputs are int64 arrays."""
    h = (
        ix.astype(np.uint32) * _P1
        ^ (iy.astype(np.uint32) * _P2)
        ^ np.uint32((int(seed) * 0x27D4EB2F) & 0xFFFFFFFF)
    )
    h ^= h >> np.uint32(16)
    h *= _M1
    h ^= h >> np.uint32(15)
    h *= _M2
    h ^= h >> np.uint32(16)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def value_noise(u: np.ndarray, v: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth 2D value noise in [0, 1] with lattice spacing ``cell`` (same units as u, v)."""
    qu = u / cell
    qv = v / cell
    iu = np.floor(qu)
    iv = np.floor(qv)
    fu = qu - iu
    fv = qv - iv
    fu = fu * fu * (3 - 2 * fu)
    fv = fv * fv * (3 - 2 * fv)
    iu = iu.astype(np.int64)
    iv = iv.astype(np.int64)
    a = hash2(iu, iv, seed)
    b = hash2(iu + 1, iv, seed)
    c = hash2(iu, iv + 1, seed)
    d = hash2(iu + 1, iv + 1, seed)
    return (a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv


def fbm(u: np.ndarray, v: np.ndarray, cells: tuple[float, ...], seed: int) -> np.ndarray:
    """Sum of value-noise octaves (equal weights), in [0, 1]."""
    out = np.zeros_like(u)
    for k, cell in enumerate(cells):
        out += value_noise(u, v, cell, seed + 101 * k)
    return out / len(cells)


class Albedo:
    """``albedo(points, face_ids) -> (N, 3)`` linear RGB in [0, 1].

    ``points`` are ENU metres (N, 3) lying on faces ``face_ids`` (N,) of the truth
    mesh. Per-face data (surface, building, unit normal, part) and per-building data
    (base and eave heights in ENU z, roof type, colours) are held as arrays; memory
    grows with the face count (about 30 bytes per face) and, per call, linearly with
    N. Throughput is several million points per second on one core.
    """

    def __init__(
        self,
        face_surface: np.ndarray,
        face_building: np.ndarray,
        face_normal: np.ndarray,
        face_part: np.ndarray,
        building_base: np.ndarray,
        building_eave: np.ndarray,
        building_roof: np.ndarray,
        floor_height: float,
        road_segments: np.ndarray,
        seed: int = 0,
    ):
        self.face_surface = np.asarray(face_surface, dtype=np.uint8)
        self.face_building = np.asarray(face_building, dtype=np.int32)
        self.face_normal = np.asarray(face_normal, dtype=np.float64)
        self.face_part = np.asarray(face_part, dtype=np.uint8)
        self.base = np.asarray(building_base, dtype=np.float64)
        self.eave = np.asarray(building_eave, dtype=np.float64)
        self.roof = np.asarray(building_roof, dtype=np.int64)
        self.floor_height = float(floor_height)
        # (K, 5): ax, ay, bx, by, width of each road centreline segment (ENU)
        self.roads = np.asarray(road_segments, dtype=np.float64).reshape(-1, 5)
        self.seed = int(seed) & 0xFFFF
        nb = len(self.base)
        idx = np.arange(nb, dtype=np.int64)
        self.facade = FACADES[(hash2(idx, np.full(nb, 7), self.seed) * len(FACADES)).astype(int)]
        self.facade = self.facade * (0.9 + 0.2 * hash2(idx, np.full(nb, 8), self.seed))[:, None]
        tile = TILES[(hash2(idx, np.full(nb, 9), self.seed) * len(TILES)).astype(int)]
        gravel = (
            np.array([0.24, 0.23, 0.22]) * (0.8 + 0.4 * hash2(idx, np.full(nb, 10), 0))[:, None]
        )
        self.roof_rgb = np.where((self.roof == 0)[:, None], gravel, tile)

    def __call__(self, points: np.ndarray, face_ids: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(face_ids, dtype=np.int64).reshape(-1)
        if len(p) != len(f):
            raise ValueError(f"{len(p)} points but {len(f)} face ids")
        out = np.zeros((len(p), 3))
        surf = self.face_surface[f]
        for code, fn in (
            (Surface.GROUND, self._ground),
            (Surface.ROAD, self._road),
            (Surface.WATER, self._water),
            (Surface.WALL, self._wall),
            (Surface.ROOF, self._roof),
            (Surface.TREE, self._tree),
        ):
            m = np.flatnonzero(surf == code)
            if m.size:
                out[m] = fn(p[m], f[m])
        return np.clip(out, 0.0, 1.0)

    # -- per surface ------------------------------------------------------------------
    def _ground(self, p, f):
        x, y = p[:, 0], p[:, 1]
        patch = value_noise(x, y, 14.0, self.seed + 1)
        mix = np.clip((patch - 0.35) * 3.0, 0, 1)[:, None]
        grass = np.array([0.10, 0.21, 0.06])
        soil = np.array([0.27, 0.20, 0.12])
        base = grass * (1 - mix) + soil * mix
        detail = fbm(x, y, (0.12, 0.45, 1.7), self.seed + 2)
        return base * (0.55 + 0.9 * detail)[:, None]

    def _road(self, p, f):
        x, y = p[:, 0], p[:, 1]
        grain = fbm(x, y, (0.08, 0.3, 2.5), self.seed + 3)
        rgb = np.repeat((0.06 + 0.07 * grain)[:, None], 3, axis=1)
        if len(self.roads):
            best = np.full(len(p), np.inf)
            along = np.zeros(len(p))
            across = np.zeros(len(p))
            width = np.zeros(len(p))
            for ax, ay, bx, by, w in self.roads:
                dx, dy = bx - ax, by - ay
                L = np.hypot(dx, dy)
                if L == 0:
                    continue
                ux, uy = dx / L, dy / L
                t = (x - ax) * ux + (y - ay) * uy
                n = -(x - ax) * uy + (y - ay) * ux
                inside = (t >= 0) & (t <= L) & (np.abs(n) <= w / 2 + 0.5)
                dist = np.where(inside, np.abs(n), np.inf)
                better = dist < best
                best = np.where(better, dist, best)
                along = np.where(better, t, along)
                across = np.where(better, n, across)
                width = np.where(better, w, width)
            has = np.isfinite(best)
            centre = has & (np.abs(across) < 0.08) & (np.mod(along, 6.0) < 3.0)
            edge = has & (np.abs(np.abs(across) - (width / 2 - 0.4)) < 0.08)
            paint = (centre | edge)[:, None]
            rgb = np.where(paint, np.array([0.75, 0.75, 0.72]) * (0.85 + 0.3 * grain[:, None]), rgb)
        return rgb

    def _water(self, p, f):
        x, y = p[:, 0], p[:, 1]
        ripple = fbm(x, y, (0.15, 0.6, 3.0), self.seed + 4)
        return np.array([0.03, 0.07, 0.08]) * (0.6 + 0.8 * ripple)[:, None]

    def _wall(self, p, f):
        b = self.face_building[f]
        n = self.face_normal[f]
        tx, ty = -n[:, 1], n[:, 0]
        th = np.hypot(tx, ty)
        ok = th > 1e-6
        tx = np.where(ok, tx / np.where(ok, th, 1), 1.0)
        ty = np.where(ok, ty / np.where(ok, th, 1), 0.0)
        s = p[:, 0] * tx + p[:, 1] * ty
        z = p[:, 2]
        bb = np.maximum(b, 0)
        zr = z - self.base[bb]
        col = self.facade[bb] * (0.8 + 0.4 * fbm(s, z, (0.07, 0.3, 1.5), self.seed + 5))[:, None]
        fz = np.mod(zr, self.floor_height) / self.floor_height
        fs = np.mod(s, 3.0) / 3.0
        win = (fz > 0.28) & (fz < 0.78) & (fs > 0.22) & (fs < 0.78) & (zr > 0.3)
        win &= z < self.base[bb] + self.eave[bb] - 0.4
        win &= ok
        wid = hash2(
            np.floor(s / 3.0).astype(np.int64),
            np.floor(zr / self.floor_height).astype(np.int64) + 1000 * bb,
            self.seed + 6,
        )
        glass = np.array([0.04, 0.06, 0.08]) + 0.1 * wid[:, None] * np.array([1.0, 0.95, 0.7])
        frame = (fz > 0.25) & (fz < 0.81) & (fs > 0.19) & (fs < 0.81) & ~win & ok
        frame &= (zr > 0.3) & (z < self.base[bb] + self.eave[bb] - 0.4)
        col = np.where(frame[:, None], col * 0.55, col)
        return np.where(win[:, None], glass, col)

    def _roof(self, p, f):
        b = np.maximum(self.face_building[f], 0)
        n = self.face_normal[f]
        x, y = p[:, 0], p[:, 1]
        col = self.roof_rgb[b]
        flat = self.roof[b] == 0
        grain = fbm(x, y, (0.05, 0.2, 1.2), self.seed + 7)
        hx, hy = n[:, 0], n[:, 1]
        hn = np.hypot(hx, hy)
        sl = hn > 1e-3
        hx = np.where(sl, hx / np.where(sl, hn, 1), 1.0)
        hy = np.where(sl, hy / np.where(sl, hn, 1), 0.0)
        down = x * hx + y * hy  # along the slope (m)
        across = -x * hy + y * hx
        row = np.floor(down / 0.33)
        joint = (np.mod(down, 0.33) < 0.05) | (np.mod(across + 0.12 * np.mod(row, 2), 0.24) < 0.03)
        shade = np.where(flat, 0.7 + 0.6 * grain, np.where(joint, 0.55, 0.85 + 0.3 * grain))
        return col * shade[:, None]

    def _tree(self, p, f):
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        leaf = fbm(x + 0.7 * z, y - 0.4 * z, (0.12, 0.5), self.seed + 8)
        crown = np.array([0.06, 0.15, 0.04]) * (0.5 + 1.0 * leaf)[:, None]
        trunk = np.array([0.16, 0.11, 0.07]) * (0.8 + 0.4 * leaf)[:, None]
        return np.where((self.face_part[f] == 1)[:, None], trunk, crown)


def linear_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] -> sRGB-encoded uint8 (for PLY colours and images)."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    s = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.round(s * 255.0).astype(np.uint8)
