"""LAS/LAZ/COPC input and output (laspy + lazrs), streaming, CRS and reprojection.

Conventions
-----------
* Coordinates stay in the file's CRS and units (x/east, y/north, z/up), float64.
* The CRS comes from the file's WKT VLR (preferred) or GeoTIFF keys. When the file has
  none, or an unusable one (empty WKT, user-defined GeoKeys, text pyproj cannot parse),
  the cloud's ``crs`` is ``None`` and ``crs_reason`` says precisely why; an explicit
  ``crs=`` argument always wins. Operations that need a CRS raise
  :class:`~twin.errors.CRSError` with that reason.
* Every corrupt or inconsistent file raises :class:`~twin.errors.InputError` naming it.
* Writes go to a temporary name beside the target and are renamed on success.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import laspy
import numpy as np
import pyproj

from twin.crs import LocalFrame, crs_label, parse_crs, unit_factors
from twin.crs import transform as _transform
from twin.errors import CRSError, InputError, OutputError, ParameterError
from twin.fileio import atomic_path
from twin.points.cloud import PointCloud

_XYZ = ("X", "Y", "Z")
_CRS_VLRS = (
    "WktCoordinateSystemVlr",
    "GeoKeyDirectoryVlr",
    "GeoAsciiParamsVlr",
    "GeoDoubleParamsVlr",
)
_DROP_VLRS = ("LasZipVlr", "CopcInfoVlr", "CopcHierarchyVlr")


# ----------------------------------------------------------------------------- helpers


def _laz_backend():
    avail = laspy.LazBackend.detect_available()
    return avail[0] if avail else None


def _open(path: str | os.PathLike) -> laspy.LasReader:
    """Open a LAS/LAZ file and validate its header; InputError naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path=p)
    if p.is_dir():
        raise InputError("is a folder, not a LAS/LAZ file", path=p)
    try:
        reader = laspy.open(p, laz_backend=_laz_backend())
    except laspy.errors.PointFormatNotSupported as exc:
        raise InputError(
            f"unknown LAS point format {exc.args[0] if exc.args else '?'} (0-10 exist)", path=p
        ) from None
    except Exception as exc:  # laspy raises several types for bad headers
        raise InputError(f"not a readable LAS/LAZ file: {_why(exc)}", path=p) from None
    try:
        _check_header(p, reader.header)
    except InputError:
        reader.close()
        raise
    return reader


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _check_header(path: Path, h: laspy.LasHeader) -> None:
    scales = np.asarray(h.scales, dtype=np.float64)
    offsets = np.asarray(h.offsets, dtype=np.float64)
    if not np.all(np.isfinite(scales)) or np.any(scales == 0):
        raise InputError(f"the header's scale factors are unusable: {scales.tolist()}", path=path)
    if not np.all(np.isfinite(offsets)):
        raise InputError(f"the header's offsets are unusable: {offsets.tolist()}", path=path)
    if h.point_format.id not in range(11):
        raise InputError(f"unknown LAS point format {h.point_format.id}", path=path)
    compressed = _is_compressed(h)
    if not compressed:
        size = path.stat().st_size
        record = h.point_format.size
        start = h.offset_to_point_data
        expected = start + h.point_count * record
        evlr = int(getattr(h, "start_of_first_evlr", 0) or 0)
        if size < expected:
            held = max(size - start, 0) // record
            raise InputError(
                f"the header says {h.point_count} points but the file holds only {held} "
                "(truncated file, or a header whose point count is wrong)",
                path=path,
            )
        end = evlr if evlr and h.number_of_evlrs else size
        if end - expected >= record:
            held = (end - start) // record
            raise InputError(
                f"the header says {h.point_count} points but the file holds {held} "
                "(the header's point count is wrong)",
                path=path,
            )


def _is_compressed(h: laspy.LasHeader) -> bool:
    return bool(getattr(h, "are_points_compressed", False)) or any(
        type(v).__name__ == "LasZipVlr" for v in h.vlrs
    )


def _is_copc(h: laspy.LasHeader) -> bool:
    return any(type(v).__name__ == "CopcInfoVlr" for v in h.vlrs)


def file_crs(header: laspy.LasHeader, path=None) -> tuple[pyproj.CRS | None, str | None]:
    """The CRS recorded in a LAS header, or ``(None, reason)`` saying precisely why not.

    The WKT VLR is preferred over GeoTIFF keys when both are present (LAS 1.4 rule)."""
    names = [type(v).__name__ for v in header.vlrs] + [
        type(v).__name__ for v in getattr(header, "evlrs", None) or []
    ]
    has_wkt = "WktCoordinateSystemVlr" in names
    has_keys = "GeoKeyDirectoryVlr" in names
    if not has_wkt and not has_keys:
        return None, "the file has no CRS record (neither a WKT nor a GeoTIFF-keys VLR)"
    if has_wkt:
        vlr = _find_vlr(header, "WktCoordinateSystemVlr")
        text = (getattr(vlr, "string", "") or "").strip("\x00 \n\t")
        if text:
            try:
                return parse_crs(text, source=path), None
            except CRSError as exc:
                wkt_reason = f"the WKT CRS record cannot be parsed by pyproj ({exc.reason})"
        else:
            wkt_reason = "the WKT CRS record is empty"
        if not has_keys:
            return None, wkt_reason
    else:
        wkt_reason = None
    keys = {k.id: k for k in _find_vlr(header, "GeoKeyDirectoryVlr").geo_keys}
    for kid in (3072, 2048):  # ProjectedCSTypeGeoKey, GeographicTypeGeoKey
        if kid in keys and keys[kid].tiff_tag_location == 0:
            code = int(keys[kid].value_offset)
            if code == 32767:
                reason = "the GeoTIFF keys are user-defined (32767), which pyproj cannot use"
                return None, f"{wkt_reason}; {reason}" if wkt_reason else reason
            try:
                crs = parse_crs(f"EPSG:{code}", source=path)
            except CRSError:
                reason = f"the GeoTIFF keys name EPSG:{code}, which pyproj does not know"
                return None, f"{wkt_reason}; {reason}" if wkt_reason else reason
            vert = keys.get(4096)
            if vert is not None and vert.tiff_tag_location == 0 and vert.value_offset != 32767:
                try:
                    crs = pyproj.CRS.from_user_input(f"EPSG:{code}+{int(vert.value_offset)}")
                except pyproj.exceptions.CRSError:
                    pass
            return crs, None
    try:
        crs = header.parse_crs(prefer_wkt=False)
    except Exception as exc:
        crs = None
        reason = f"the GeoTIFF keys cannot be parsed ({_why(exc)})"
    else:
        reason = "the GeoTIFF keys name no projected or geographic CRS"
    if crs is not None:
        return crs, None
    return None, f"{wkt_reason}; {reason}" if wkt_reason else reason


def _find_vlr(header, name):
    for v in list(header.vlrs) + list(getattr(header, "evlrs", None) or []):
        if type(v).__name__ == name:
            return v
    return None


def _resolve_crs(header, path, crs) -> tuple[pyproj.CRS | None, str | None]:
    if crs is not None:
        return parse_crs(crs, source=path), None
    return file_crs(header, path)


def _dimension_names(header: laspy.LasHeader, fields: Sequence[str] | None) -> list[str]:
    names = [n for n in header.point_format.dimension_names if n not in _XYZ]
    if fields is None:
        return names
    unknown = [f for f in fields if f not in names]
    if unknown:
        raise ParameterError(f"unknown fields {unknown}; the file has {names}")
    return list(fields)


def _record_xyz(points, header) -> np.ndarray:
    """Scaled coordinates as an (N, 3) float64 view of a column-major block (each
    coordinate contiguous, as the Numba kernels and the grids want them)."""
    arr = points.array
    cols = np.empty((3, len(arr)), dtype=np.float64)
    for i, d in enumerate(_XYZ):
        np.multiply(arr[d], header.scales[i], out=cols[i])
        cols[i] += header.offsets[i]
    return cols.T


def _record_fields(points, names: list[str]) -> dict[str, np.ndarray]:
    return {n: np.array(points[n]) for n in names}


def _bbox_mask(xyz: np.ndarray, bbox) -> np.ndarray:
    xmin, ymin, xmax, ymax = bbox
    return (xyz[:, 0] >= xmin) & (xyz[:, 0] <= xmax) & (xyz[:, 1] >= ymin) & (xyz[:, 1] <= ymax)


def _check_bbox(bbox) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    b = tuple(float(v) for v in bbox)
    if len(b) != 4 or not all(np.isfinite(b)) or b[0] > b[2] or b[1] > b[3]:
        raise ParameterError(f"bbox must be (xmin, ymin, xmax, ymax), got {bbox}")
    return b


def _make_cloud(points, header, names, crs, reason, path, keep=None) -> PointCloud:
    xyz = _record_xyz(points, header)
    fields = _record_fields(points, names)
    if keep is not None:
        xyz = xyz[keep]
        fields = {k: v[keep] for k, v in fields.items()}
    return PointCloud(
        xyz=xyz,
        fields=fields,
        crs=crs,
        scales=np.array(header.scales, dtype=np.float64),
        offsets=np.array(header.offsets, dtype=np.float64),
        point_format=header.point_format.id,
        header=header,
        source=str(path),
        crs_reason=reason,
    )


# ----------------------------------------------------------------------------- reading


def iter_chunks(
    path: str | os.PathLike,
    chunk_points: int = 1_000_000,
    crs=None,
    *,
    bbox=None,
    fields: Sequence[str] | None = None,
) -> Iterator[PointCloud]:
    """Yield the file's points as :class:`PointCloud` chunks of at most ``chunk_points``.

    ``bbox`` (xmin, ymin, xmax, ymax in the file's units) keeps only points inside it
    (chunks may then be smaller or skipped). Peak memory grows with ``chunk_points``
    times the record size, not with the file. Raises InputError if the file is
    corrupt or ends before the header's point count (nothing is yielded past that).
    """
    if chunk_points < 1:
        raise ParameterError(f"chunk_points must be >= 1, got {chunk_points}")
    bbox = _check_bbox(bbox)
    path = Path(path)
    with _open(path) as reader:
        h = reader.header
        names = _dimension_names(h, fields)
        the_crs, reason = _resolve_crs(h, path, crs)
        total = int(h.point_count)
        if total == 0:
            raise InputError("the file has no points", path=path)
        done = 0
        it = reader.chunk_iterator(int(chunk_points))
        while True:
            try:
                points = next(it)
            except StopIteration:
                break
            except Exception as exc:
                raise InputError(
                    f"corrupt or truncated point data after {done} of {total} points: {_why(exc)}",
                    path=path,
                ) from None
            n = len(points)
            if n == 0:
                break
            done += n
            keep = None
            if bbox is not None:
                keep = _bbox_mask(_record_xyz(points, h), bbox)
                if not keep.any():
                    continue
            yield _make_cloud(points, h, names, the_crs, reason, path, keep)
        if done != total:
            raise InputError(
                f"the file ends after {done} of the header's {total} points "
                "(truncated, or the header's point count is wrong)",
                path=path,
            )


def read(
    path: str | os.PathLike,
    crs=None,
    bbox=None,
    fields: Sequence[str] | None = None,
    *,
    level: int | range | None = None,
) -> PointCloud:
    """Read a LAS/LAZ/COPC file into a :class:`PointCloud`.

    ``crs`` overrides (or supplies) the CRS; ``bbox`` = (xmin, ymin, xmax, ymax) in
    the file's units keeps the points inside; ``fields`` limits the named fields read
    (``None``: all, ``[]``: xyz only). For a COPC file, ``bbox`` and ``level`` (an
    octree depth or a range of depths; 0 is the coarsest) are answered from the
    octree, reading only the nodes they touch. Memory grows with the points kept
    (plus one chunk while streaming a plain LAS/LAZ with a bbox).
    """
    path = Path(path)
    bbox = _check_bbox(bbox)
    reader = _open(path)
    with reader:
        h = reader.header
        if _is_copc(h) and (bbox is not None or level is not None):
            copc = True
        elif level is not None:
            raise ParameterError("level= needs a COPC file")
        elif bbox is None:
            names = _dimension_names(h, fields)
            the_crs, reason = _resolve_crs(h, path, crs)
            if h.point_count == 0:
                raise InputError("the file has no points", path=path)
            try:
                points = reader.read_points(-1)
            except Exception as exc:
                raise InputError(
                    f"corrupt or truncated point data: {_why(exc)}", path=path
                ) from None
            if len(points) != h.point_count:
                raise InputError(
                    f"the file ends after {len(points)} of the header's {h.point_count} "
                    "points (truncated, or the header's point count is wrong)",
                    path=path,
                )
            return _make_cloud(points, h, names, the_crs, reason, path)
        else:
            copc = False
    if copc:
        return _read_copc(path, crs, bbox, fields, level)
    parts = list(iter_chunks(path, 1_000_000, crs, bbox=bbox, fields=fields))
    if parts:
        return concat(parts)
    with _open(path) as reader:
        h = reader.header
        c, r = _resolve_crs(h, path, crs)
        names = _dimension_names(h, fields)
        none = reader.read_points(1)[:0]
        return _make_cloud(none, h, names, c, r, path)


def _read_copc(path: Path, crs, bbox, fields, level) -> PointCloud:
    from laspy.copc import Bounds

    try:
        reader = laspy.CopcReader.open(path)
    except Exception as exc:
        raise InputError(f"not a readable COPC file: {_why(exc)}", path=path) from None
    with reader:
        h = reader.header
        names = _dimension_names(h, fields)
        the_crs, reason = _resolve_crs(h, path, crs)
        bounds = None
        if bbox is not None:
            bounds = Bounds(mins=np.array(bbox[:2]), maxs=np.array(bbox[2:]))
        if isinstance(level, int):
            level = range(0, level + 1)
        try:
            points = reader.query(bounds=bounds, level=level)
        except Exception as exc:
            raise InputError(f"corrupt COPC data: {_why(exc)}", path=path) from None
        cloud = _make_cloud(points, h, names, the_crs, reason, path)
    if bbox is not None and len(cloud):
        cloud = cloud[_bbox_mask(cloud.xyz, bbox)]
    return cloud


def concat(clouds: Sequence[PointCloud]) -> PointCloud:
    """Concatenate clouds that share CRS and fields (those of the first are kept)."""
    if not clouds:
        raise ParameterError("nothing to concatenate")
    first = clouds[0]
    names = list(first.fields)
    return PointCloud(
        xyz=np.concatenate([c.xyz for c in clouds]),
        fields={n: np.concatenate([c.fields[n] for c in clouds]) for n in names},
        crs=first.crs,
        scales=first.scales,
        offsets=first.offsets,
        point_format=first.point_format,
        header=first.header,
        source=first.source,
        crs_reason=first.crs_reason,
        frame=first.frame,
    )


# ----------------------------------------------------------------------------- info


def info(path: str | os.PathLike, crs=None, *, classes: bool = True) -> dict[str, Any]:
    """A JSON-ready summary of a LAS/LAZ/COPC file.

    Keys: ``path``, ``count``, ``bounds`` (``min``/``max`` from the header, file units),
    ``crs`` (``label``, ``epsg``, ``wkt``, ``units``, ``source``: "file" or "argument")
    or ``crs: None`` with ``crs_reason``, ``point_format``, ``version``, ``compressed``,
    ``copc``, ``dimensions``, ``extra_dimensions``, ``scales``, ``offsets``, ``vlrs``,
    ``classes`` ({class: count}, read by streaming the classification: memory grows
    with one chunk), ``density`` (points per square metre of the header's xy bounds).
    """
    path = Path(path)
    with _open(path) as reader:
        h = reader.header
        the_crs, reason = _resolve_crs(h, path, crs)
        mins = np.asarray(h.mins, dtype=float)
        maxs = np.asarray(h.maxs, dtype=float)
        out: dict[str, Any] = {
            "path": str(path),
            "count": int(h.point_count),
            "bounds": {"min": mins.tolist(), "max": maxs.tolist()},
            "point_format": int(h.point_format.id),
            "version": str(h.version),
            "compressed": _is_compressed(h),
            "copc": _is_copc(h),
            "dimensions": list(h.point_format.dimension_names),
            "extra_dimensions": list(h.point_format.extra_dimension_names),
            "scales": np.asarray(h.scales, dtype=float).tolist(),
            "offsets": np.asarray(h.offsets, dtype=float).tolist(),
            "vlrs": [type(v).__name__ for v in h.vlrs],
            "software": str(h.generating_software).strip("\x00 "),
        }
    if the_crs is not None:
        hf, vf = unit_factors(the_crs)
        out["crs"] = {
            "label": crs_label(the_crs),
            "epsg": the_crs.to_epsg(min_confidence=90),
            "wkt": the_crs.to_wkt(),
            "horizontal_unit_m": hf,
            "vertical_unit_m": vf,
            "source": "argument" if crs is not None else "file",
        }
        out["crs_reason"] = None
    else:
        out["crs"] = None
        out["crs_reason"] = reason
    hf = unit_factors(the_crs)[0] if the_crs is not None else 1.0
    area = float((maxs[0] - mins[0]) * (maxs[1] - mins[1])) * hf * hf
    if the_crs is not None and the_crs.is_geographic:
        area = 0.0  # degrees: no honest area from the header alone
    out["density"] = out["count"] / area if area > 0 else None
    out["density_unit"] = "points per square metre (header xy bounds)"
    if classes and out["count"] > 0:
        counts = np.zeros(256, dtype=np.int64)
        for chunk in iter_chunks(path, 2_000_000, fields=["classification"]):
            counts += np.bincount(chunk.fields["classification"], minlength=256)[:256]
        out["classes"] = {int(c): int(counts[c]) for c in np.flatnonzero(counts)}
    return out


# ----------------------------------------------------------------------------- writing


def write(cloud: PointCloud, path: str | os.PathLike, *, compress: bool | None = None) -> Path:
    """Write a cloud as LAS or LAZ (by the extension, or ``compress``), atomically.

    A cloud read from a file keeps its version, point format, extra bytes and VLRs
    (CRS VLRs are rewritten only when the CRS changed). Fields not in the point format
    become extra bytes. Offsets are kept when the coordinates still fit the int32 grid,
    otherwise re-anchored at the floor of the minimum. Returns the path.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if compress is None:
        if ext not in (".las", ".laz"):
            raise OutputError("the file name must end in .las or .laz", path=path)
        compress = ext == ".laz"
    if len(cloud) == 0:
        raise OutputError("refusing to write a cloud with no points", path=path)
    if not np.all(np.isfinite(cloud.xyz)):
        raise OutputError("the cloud has NaN or infinite coordinates", path=path)
    header = _header_for(cloud, path)
    header.point_count = len(cloud)
    points = laspy.ScaleAwarePointRecord.zeros(len(cloud), header=header)
    raw = points.array
    for i, d in enumerate(_XYZ):
        raw[d] = np.round((cloud.xyz[:, i] - header.offsets[i]) / header.scales[i])
    dims = set(header.point_format.dimension_names)
    for name, arr in cloud.fields.items():
        if name in dims:
            points[name] = arr
    las = laspy.LasData(header, points=points)
    with atomic_path(path) as tmp:
        try:
            las.write(tmp, do_compress=compress, laz_backend=_laz_backend() if compress else None)
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror}", path=path) from None
    return path


def _header_for(cloud: PointCloud, path: Path) -> laspy.LasHeader:
    src = cloud.header
    if src is not None:
        h = laspy.LasHeader(version=src.version, point_format=src.point_format)
        h.vlrs = [v for v in src.vlrs if type(v).__name__ not in _DROP_VLRS]
        if getattr(src, "evlrs", None):
            h.evlrs = [v for v in src.evlrs if type(v).__name__ not in _DROP_VLRS]
        h.system_identifier = src.system_identifier
        h.generating_software = src.generating_software
        h.creation_date = src.creation_date
        h.global_encoding.wkt = src.global_encoding.wkt
        h.file_source_id = src.file_source_id
        old_crs = file_crs(src)[0]
    else:
        version = "1.4" if cloud.point_format >= 6 else "1.2"
        h = laspy.LasHeader(version=version, point_format=cloud.point_format)
        h.generating_software = "twin"
        h.creation_date = _dt.date(2000, 1, 1)  # deterministic bytes; no wall-clock dates
        old_crs = None
    pf_dims = set(h.point_format.dimension_names)
    for name, arr in cloud.fields.items():
        if name not in pf_dims:
            dt = np.asarray(arr).dtype
            if dt.kind not in "uif" or dt.itemsize > 8:
                raise OutputError(f"field {name!r} of dtype {dt} cannot be stored", path=path)
            h.add_extra_dim(laspy.ExtraBytesParams(name=name, type=dt))
    if cloud.crs is not None and (old_crs is None or old_crs != cloud.crs):
        try:
            h.add_crs(cloud.crs)
        except Exception:
            if h.version.minor < 4:
                raise OutputError(
                    f"LAS {h.version} with point format {h.point_format.id} can only store "
                    f"an EPSG-coded CRS as GeoTIFF keys; {cloud.crs.name} has none "
                    "(write point format 6 or later)",
                    path=path,
                ) from None
            h.add_crs(cloud.crs, keep_compatibility=False)
    h.scales = np.asarray(cloud.scales, dtype=np.float64)
    h.offsets = _fit_offsets(cloud, h.scales, path)
    return h


def _fit_offsets(cloud: PointCloud, scales: np.ndarray, path: Path) -> np.ndarray:
    mins = np.array([cloud.xyz[:, i].min() for i in range(3)])
    maxs = np.array([cloud.xyz[:, i].max() for i in range(3)])
    lim = 2**31 - 2

    def fits(off):
        return np.all(np.abs((mins - off) / scales) < lim) and np.all(
            np.abs((maxs - off) / scales) < lim
        )

    if cloud.offsets is not None and fits(np.asarray(cloud.offsets)):
        return np.asarray(cloud.offsets, dtype=np.float64)
    off = np.floor(mins)
    if not fits(off):
        raise OutputError(
            f"the cloud spans {maxs - mins} units, too wide for scales {scales.tolist()} "
            "(use larger scales)",
            path=path,
        )
    return off


# ----------------------------------------------------------------------------- CRS


def reproject(cloud: PointCloud, dst_crs, *, z_unit: str = "auto") -> PointCloud:
    """The cloud transformed to ``dst_crs`` (any CRS pyproj knows; see
    :func:`twin.crs.transform` for z units). Scales become 1 mm (or 1e-8 degree)."""
    src = cloud.require_crs()
    dst = parse_crs(dst_crs, source=cloud.source)
    xyz = _transform(cloud.xyz, src, dst, z_unit=z_unit)
    if dst.is_geographic:
        scales = np.array([1e-8, 1e-8, 0.001])
    else:
        hf, vf = unit_factors(dst)
        scales = np.array([0.001 / hf, 0.001 / hf, 0.001 / vf])
    out = PointCloud(
        xyz=xyz,
        fields=dict(cloud.fields),
        crs=dst,
        scales=scales,
        offsets=None,
        point_format=cloud.point_format,
        header=cloud.header,
        source=cloud.source,
    )
    return out


def to_local(cloud: PointCloud, frame: LocalFrame | None = None) -> PointCloud:
    """The cloud in a local ENU frame (metres; ``crs`` None, ``frame`` set).

    Without ``frame``, one is anchored at the centre of the cloud's bounds."""
    src = cloud.require_crs()
    if frame is None:
        mins, maxs = cloud.bounds()
        frame = LocalFrame.at(*((mins + maxs) / 2), crs=src)
    xyz = frame.from_crs(cloud.xyz, src)
    return PointCloud(
        xyz=xyz,
        fields=dict(cloud.fields),
        crs=None,
        scales=np.array([0.001, 0.001, 0.001]),
        offsets=None,
        point_format=cloud.point_format,
        header=None,
        source=cloud.source,
        crs_reason="local ENU frame (see .frame)",
        frame=frame,
    )
