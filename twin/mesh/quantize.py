"""Vertex quantisation compatible with glTF ``KHR_mesh_quantization``.

Positions become unsigned integers on a uniform grid over the mesh's bounding box:
``q = round((p - offset) / step)``, stored as ``UNSIGNED_SHORT`` (not normalised)
for ``bits <= 16``. The glTF node that holds the mesh carries ``translation =
offset`` and ``scale = [step, step, step]`` so a viewer draws ``p' = q * step +
offset`` without any shader change. The step is the same on all three axes (a
non-uniform node scale would skew normals), so the per-axis error is at most half a
step, ``step = max extent / (2**bits - 1)``.

Normals become normalised ``BYTE`` (``round(n * 127)``, decoded as ``max(q / 127,
-1)``); UVs become normalised ``UNSIGNED_SHORT`` over their bounding box, restored by
a ``KHR_texture_transform`` with ``offset = uv_offset`` and ``scale = uv_scale``
(identity when the UVs already lie in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.errors import InputError, ParameterError
from twin.mesh.validate import check_attributes, check_vertices

__all__ = ["Quantized", "dequantize", "quantize"]


@dataclass(frozen=True)
class Quantized:
    """Integer vertex attributes plus what restores them (see the module docstring).

    positions : (N, 3) uint16 (bits <= 16). offset : (3,) float64 metres (the node
    translation). step : grid step in metres (the node's uniform scale). bits : bits
    used per coordinate. normals : (N, 3) int8 normalised, or None. uvs : (N, 2)
    uint16 normalised, or None; uv_offset / uv_scale : (2,) the texture transform.
    """

    positions: np.ndarray
    offset: np.ndarray
    step: float
    bits: int
    normals: np.ndarray | None = None
    uvs: np.ndarray | None = None
    uv_offset: np.ndarray | None = None
    uv_scale: np.ndarray | None = None

    @property
    def max_error(self) -> float:
        """Largest per-axis position error quantisation can cause: half a step."""
        return 0.5 * self.step

    def _scale(self, normalized: bool) -> float:
        # a normalised UNSIGNED_SHORT accessor reads q / 65535: scale that back up
        return float(self.step) * (65535.0 if normalized else 1.0)

    def node_transform(self, normalized: bool = False) -> dict:
        """glTF node TRS that restores positions: ``{"translation", "scale"}``.

        ``normalized``: the position accessor is ``normalized: true`` (a viewer reads
        ``q / 65535``); the scale is then ``step * 65535``. Both variants are valid
        KHR_mesh_quantization and restore the same positions.
        """
        return {
            "translation": [float(x) for x in self.offset],
            "scale": [self._scale(normalized)] * 3,
        }

    def node_matrix(self, normalized: bool = False) -> list[float]:
        """The same transform as a glTF node ``matrix`` (16 floats, column-major)."""
        s = self._scale(normalized)
        tx, ty, tz = (float(x) for x in self.offset)
        return [s, 0.0, 0.0, 0.0, 0.0, s, 0.0, 0.0, 0.0, 0.0, s, 0.0, tx, ty, tz, 1.0]

    def texture_transform(self) -> dict | None:
        """``KHR_texture_transform`` ``{"offset", "scale"}`` for the UVs, or None."""
        if self.uvs is None:
            return None
        return {
            "offset": [float(x) for x in self.uv_offset],
            "scale": [float(x) for x in self.uv_scale],
        }


def quantize(vertices, bits: int = 14, normals=None, uvs=None) -> Quantized:
    """Quantise positions (and optionally normals and UVs) for glTF storage.

    ``vertices`` (N, 3) float in any frame (metres in a tile's local frame is the
    intended use: the step is relative to the bounding box, so a small box gives a
    fine grid). ``bits`` in [1, 16]. ``normals`` (N, 3) unit vectors; ``uvs`` (N, 2).
    Error: per axis at most half a step (``Quantized.max_error``); normals at most
    0.5/127 per component; UVs at most half a 1/65535 step of their box.
    Memory: O(N), the integer arrays plus one float64 temporary.
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 16:
        raise ParameterError(f"bits must be an integer in [1, 16], got {bits!r}")
    v = check_vertices(vertices)
    lo = v.min(axis=0)
    with np.errstate(over="ignore"):
        extent = float((v.max(axis=0) - lo).max())
    if not np.isfinite(extent):
        raise InputError(
            "vertices span more than float64 can hold (the bounding box's extent "
            "overflows); move the mesh to a local frame first"
        )
    levels = (1 << int(bits)) - 1
    step = extent / levels if extent > 0 else 1.0
    q = np.rint((v - lo) / step)
    np.clip(q, 0, levels, out=q)
    out_n = None
    if normals is not None:
        n = check_attributes(normals, v.shape[0], what="normals")
        if n.shape[1] != 3:
            raise InputError(f"normals must have shape (N, 3), got {n.shape}")
        if np.abs(n).max() > 1.0 + 1e-6:
            raise InputError("normals must be unit vectors (a component exceeds 1)")
        out_n = np.clip(np.rint(n * 127.0), -127, 127).astype(np.int8)
    out_uv = uv_off = uv_scale = None
    if uvs is not None:
        t = check_attributes(uvs, v.shape[0], what="uvs")
        if t.shape[1] != 2:
            raise InputError(f"uvs must have shape (N, 2), got {t.shape}")
        tmin = t.min(axis=0)
        tmax = t.max(axis=0)
        if tmin.min() >= 0.0 and tmax.max() <= 1.0:
            uv_off, uv_scale = np.zeros(2), np.ones(2)
        else:
            uv_off = tmin
            uv_scale = np.where(tmax > tmin, tmax - tmin, 1.0)
        out_uv = np.clip(np.rint((t - uv_off) / uv_scale * 65535.0), 0, 65535).astype(np.uint16)
    return Quantized(
        positions=q.astype(np.uint16),
        offset=lo,
        step=float(step),
        bits=int(bits),
        normals=out_n,
        uvs=out_uv,
        uv_offset=uv_off,
        uv_scale=uv_scale,
    )


def dequantize(q, offset=None, step=None) -> np.ndarray:
    """Restore float64 (N, 3) positions: ``positions * step + offset``.

    ``q``: a :class:`Quantized`, or the integer (N, 3) positions themselves with
    ``offset`` (3,) and ``step`` given (the node's translation and uniform scale).
    """
    if isinstance(q, Quantized):
        if offset is not None or step is not None:
            raise ParameterError("dequantize takes offset and step only with raw positions")
        return q.positions.astype(np.float64) * q.step + q.offset
    if offset is None or step is None:
        raise ParameterError(
            f"dequantize expects a Quantized, or positions with offset and step; got "
            f"{type(q).__name__}"
        )
    pos = np.asarray(q)
    if pos.ndim != 2 or pos.shape[1] != 3 or not np.issubdtype(pos.dtype, np.integer):
        raise InputError(f"quantized positions must be an integer (N, 3) array, got {pos.shape}")
    off = np.asarray(offset, np.float64)
    if off.shape != (3,) or not np.isfinite(off).all():
        raise ParameterError(f"offset must be 3 finite numbers, got {offset!r}")
    try:
        step = float(step)
    except (TypeError, ValueError):
        raise ParameterError(f"step must be a number, got {step!r}") from None
    if not (np.isfinite(step) and step > 0):
        raise ParameterError(f"step must be a finite number > 0, got {step}")
    return pos.astype(np.float64) * step + off


def dequantize_normals(q: Quantized) -> np.ndarray | None:
    """Restore float64 (N, 3) normals as a glTF viewer does: ``max(q / 127, -1)``."""
    if q.normals is None:
        return None
    return np.maximum(q.normals.astype(np.float64) / 127.0, -1.0)


def dequantize_uvs(q: Quantized) -> np.ndarray | None:
    """Restore float64 (N, 2) UVs: ``q / 65535 * uv_scale + uv_offset``."""
    if q.uvs is None:
        return None
    return q.uvs.astype(np.float64) / 65535.0 * q.uv_scale + q.uv_offset
