"""The :class:`PointCloud` type every point stage passes around.

A cloud is ``xyz`` (``(N, 3)`` float64, in its CRS's units: x/east, y/north, z/up),
a dict of named per-point fields (NumPy arrays of length N: ``classification``,
``intensity``, ``return_number``, ``gps_time``, ``red``, extra bytes, ...), the CRS
(a :class:`pyproj.CRS`, or ``None`` with ``crs_reason`` saying why), the LAS scales
and offsets, the LAS point format and, when it came from a file, the original
:class:`laspy.LasHeader` so that a write keeps the VLRs and fields the user did not
change. Memory grows with N times the number of fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from twin.errors import CRSError, InputError

if TYPE_CHECKING:
    import pyproj

    from twin.crs import LocalFrame


@dataclass
class PointCloud:
    """Points with named fields and a CRS.

    ``xyz``: ``(N, 3)`` float64 in the units of ``crs`` (z in the horizontal unit for
    a 2D projected CRS, the LAS convention), or local ENU metres when ``frame`` is set.
    ``fields``: name to array of length N. ``crs``: ``None`` when unknown; then
    ``crs_reason`` says why (shown by :meth:`require_crs`). ``scales``/``offsets``: the
    LAS integer grid used when writing. ``point_format``: LAS point format id (0-10).
    ``header``: the source file's laspy header (VLRs, version, extra bytes), or None.
    ``source``: the file it was read from (named in errors).
    """

    xyz: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    crs: pyproj.CRS | None = None
    scales: np.ndarray = field(default_factory=lambda: np.array([0.001, 0.001, 0.001]))
    offsets: np.ndarray | None = None
    point_format: int = 6
    header: Any = None
    source: str | None = None
    crs_reason: str | None = None
    frame: LocalFrame | None = None

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float64)
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise InputError(f"xyz must have shape (N, 3), got {self.xyz.shape}", path=self.source)
        n = len(self.xyz)
        for name, arr in self.fields.items():
            if len(arr) != n:
                raise InputError(
                    f"field {name!r} has {len(arr)} values for {n} points", path=self.source
                )
        self.scales = np.asarray(self.scales, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.xyz)

    def __repr__(self) -> str:
        crs = self.crs.name if self.crs is not None else ("local ENU" if self.frame else "no CRS")
        return f"PointCloud({len(self)} points, fields={sorted(self.fields)}, crs={crs!r})"

    def __getitem__(self, key) -> PointCloud:
        """A sub-cloud: ``cloud[mask]``, ``cloud[indices]`` or ``cloud[a:b]`` (copies)."""
        return replace(self, xyz=self.xyz[key], fields={k: v[key] for k, v in self.fields.items()})

    @property
    def x(self) -> np.ndarray:
        return self.xyz[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.xyz[:, 1]

    @property
    def z(self) -> np.ndarray:
        return self.xyz[:, 2]

    @property
    def classification(self) -> np.ndarray:
        """ASPRS classes (uint8); created as all 1 (unclassified) when missing."""
        if "classification" not in self.fields:
            self.fields["classification"] = np.ones(len(self), dtype=np.uint8)
        return self.fields["classification"]

    def require_crs(self) -> pyproj.CRS:
        """The CRS, or :class:`~twin.errors.CRSError` saying why the cloud has none."""
        if self.crs is None:
            why = self.crs_reason or "the cloud has no coordinate reference system"
            raise CRSError(f"{why}; pass crs= (e.g. crs='EPSG:28992')", path=self.source)
        return self.crs

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(mins, maxs) of xyz; NaN-free clouds only."""
        if len(self) == 0:
            raise InputError("the cloud has no points", path=self.source)
        return self.xyz.min(axis=0), self.xyz.max(axis=0)

    def to_open3d(self, colors: bool = True):
        """An :class:`open3d.geometry.PointCloud` (float64 points; RGB scaled to 0-1
        when the cloud has red/green/blue and ``colors``). Open3D copies the arrays."""
        import open3d as o3d

        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.xyz))
        if colors and all(c in self.fields for c in ("red", "green", "blue")):
            rgb = np.column_stack([self.fields[c] for c in ("red", "green", "blue")])
            top = 65535.0 if rgb.max(initial=0) > 255 else 255.0
            pc.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64) / top)
        if "normal_x" in self.fields:
            nrm = np.column_stack([self.fields[f"normal_{a}"] for a in "xyz"])
            pc.normals = o3d.utility.Vector3dVector(nrm.astype(np.float64))
        return pc

    @classmethod
    def from_open3d(cls, pc, crs=None) -> PointCloud:
        """A cloud from an :class:`open3d.geometry.PointCloud` (points, colors as 16-bit
        RGB fields, normals as ``normal_x/y/z`` float32 fields)."""
        from twin.crs import parse_crs

        xyz = np.asarray(pc.points, dtype=np.float64)
        fields: dict[str, np.ndarray] = {}
        if pc.has_colors():
            rgb = np.round(np.asarray(pc.colors) * 65535.0).astype(np.uint16)
            fields.update(red=rgb[:, 0].copy(), green=rgb[:, 1].copy(), blue=rgb[:, 2].copy())
        if pc.has_normals():
            nrm = np.asarray(pc.normals, dtype=np.float32)
            for i, a in enumerate("xyz"):
                fields[f"normal_{a}"] = nrm[:, i].copy()
        return cls(
            xyz=xyz,
            fields=fields,
            crs=parse_crs(crs) if crs is not None else None,
            point_format=7 if pc.has_colors() else 6,
        )
