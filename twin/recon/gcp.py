"""Ground control point files: OpenSfM JSON, OpenDroneMap ``gcp_list.txt`` and CSV.

Every reader returns the same list of dicts::

    {"id": str, "llh": [lon, lat, ellipsoidal height] | None,
     "observations": [{"image": name, "pixel": [u, v] | None, "projection": ...}]}

Accepted forms (:func:`read_gcps` picks by content, not by extension):

* OpenSfM ``ground_control_points.json``: ``points`` with ``position``
  {latitude, longitude, altitude} and ``observations`` of ``shot_id`` with
  ``projection`` (OpenSfM normalised image coordinates) or ``pixel`` [u, v].
* OpenDroneMap / COLMAP-style ``gcp_list.txt``: the first line is the CRS
  (``EPSG:4326``, ``EPSG:32651``, ``WGS84 UTM 51N``, a PROJ string), then one
  observation a line: ``x y z px py image [name]`` (x, y: easting, northing or
  longitude, latitude; px, py: pixels from the image's top-left corner). Lines of one
  point share its name (or, unnamed, its coordinates).
* CSV (comma, semicolon or tab separated) with a header naming at least
  ``name`` (or ``id``, ``label``), ``x``/``y``/``z`` (or ``easting``/``northing``,
  ``lon``/``lat``, ``alt``/``height``/``elevation``), optionally ``crs`` and, for image
  observations, ``image`` with ``px``/``py`` (or ``u``/``v``). Rows of one name add
  observations to one point; a row without an image only gives the position.

Coordinates without a CRS in the file are in ``crs`` (the survey CRS); lon/lat columns,
or x/y columns whose values can only be degrees (all within ±180, ±90), mean WGS 84
(EPSG:4979). Heights are ellipsoidal, like the EXIF GPS altitudes the rest
of the block uses. A point's position is converted to ``llh`` at reading time, so a
wrong CRS shows up as points far from the photos (:func:`check_gcps_against_block`).
Memory grows with the number of observations.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from twin.errors import CRSError, InputError

log = logging.getLogger(__name__)

_ALIASES = {
    "name": ("name", "id", "label", "gcp", "gcp_name", "point", "point_id"),
    "x": ("x", "easting", "east", "e", "geo_x"),
    "y": ("y", "northing", "north", "n", "geo_y"),
    "lon": ("lon", "long", "longitude", "lng"),
    "lat": ("lat", "latitude"),
    "z": ("z", "alt", "altitude", "height", "elevation", "h", "geo_z", "ellipsoidal_height"),
    "crs": ("crs", "epsg", "srs"),
    "image": ("image", "image_name", "shot_id", "file", "filename", "photo"),
    "px": ("px", "u", "pixel_x", "im_x", "col", "column", "image_x"),
    "py": ("py", "v", "pixel_y", "im_y", "row", "image_y"),
}


def read_gcps(path: str | os.PathLike, crs=None) -> list[dict]:
    """Read a ground control point file in any of the module's forms.

    ``crs``: the CRS of coordinates in a file that does not name one (a CSV without a
    ``crs`` column and with x/y rather than lon/lat columns). Raises
    :class:`~twin.errors.InputError` for a missing or malformed file (naming the line)
    and :class:`~twin.errors.CRSError` for a CRS it cannot use.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("no such GCP file", path=p) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a GCP file", path=p) from None
    except UnicodeDecodeError:
        raise InputError("not a ground control point file (not UTF-8 text)", path=p) from None
    stripped = text.lstrip()
    if not stripped:
        raise InputError("empty ground control point file", path=p)
    if stripped.startswith("{"):
        gcps = _read_json(text, p)
    else:
        first = stripped.splitlines()[0]
        if _looks_like_header(first):
            gcps = _read_csv(text, p, crs)
        else:
            gcps = _read_gcp_list(text, p)
    if not gcps:
        raise InputError("no ground control points in the file", path=p)
    return gcps


def _read_json(text: str, p: Path) -> list[dict]:
    try:
        d = json.loads(text)
        out = []
        for pt in d["points"]:
            pos = pt.get("position")
            obs = [
                {
                    "image": str(o["shot_id"]),
                    "projection": o.get("projection"),
                    "pixel": o.get("pixel"),
                }
                for o in pt.get("observations", [])
            ]
            llh = None
            if pos:
                llh = [
                    float(pos["longitude"]),
                    float(pos["latitude"]),
                    float(pos.get("altitude", 0.0)),
                ]
            out.append({"id": str(pt.get("id", len(out))), "llh": llh, "observations": obs})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a ground control point file: {exc!r}", path=p) from None
    return out


def _looks_like_header(line: str) -> bool:
    cells = [c.strip().strip('"').lower() for c in re.split(r"[,;\t]", line)]
    if len(cells) < 3:
        return False
    known = {a for al in _ALIASES.values() for a in al}
    return sum(c in known for c in cells) >= 3


def _parse_crs(value, p: Path, where: str):
    from twin.crs import parse_crs

    v = str(value).strip()
    m = re.fullmatch(r"(?i)wgs\s*84\s+utm\s+(\d{1,2})\s*([ns])", v)
    if m:
        zone, hemi = int(m.group(1)), m.group(2).upper()
        v = f"EPSG:{(32600 if hemi == 'N' else 32700) + zone}"
    elif re.fullmatch(r"\d{4,5}", v):
        v = f"EPSG:{v}"
    try:
        return parse_crs(v)
    except CRSError as exc:
        raise CRSError(f"{where}: {exc.reason}", path=p) from None


def _to_llh(xyz: np.ndarray, crs, p: Path) -> np.ndarray:
    from twin.crs import GEODETIC_3D, transform

    if crs.is_geographic:
        bad = (np.abs(xyz[:, 0]) > 180) | (np.abs(xyz[:, 1]) > 90)
        if bad.any():
            raise CRSError(
                f"coordinates {xyz[np.argmax(bad), :2].tolist()} are not longitude/latitude "
                f"degrees, yet the file's CRS is {crs.name}: wrong CRS?",
                path=p,
            )
    try:
        return transform(xyz, crs, GEODETIC_3D)
    except CRSError as exc:
        raise CRSError(f"GCP coordinates: {exc.reason}", path=p) from None


def _read_gcp_list(text: str, p: Path) -> list[dict]:
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(n, ln) for n, ln in lines if ln and not ln.startswith("#")]
    n0, head = lines[0]
    if len(head.split()) >= 6 and _is_number(head.split()[0]):
        raise InputError(
            "a gcp_list.txt must start with its CRS line (e.g. EPSG:4326 or "
            "'WGS84 UTM 51N'), found coordinates on line 1",
            path=p,
        )
    crs = _parse_crs(head, p, f"line {n0} (the CRS line)")
    rows, keys = [], []
    for n, ln in lines[1:]:
        parts = ln.split()
        if len(parts) < 6:
            raise InputError(
                f"line {n}: expected 'x y z px py image [name]', got {len(parts)} fields",
                path=p,
            )
        try:
            x, y, z, px, py = (float(v) for v in parts[:5])
        except ValueError:
            raise InputError(f"line {n}: the first five fields must be numbers", path=p) from None
        rows.append((x, y, z, px, py, parts[5]))
        keys.append(parts[6] if len(parts) > 6 else None)
    if not rows:
        raise InputError("no ground control point lines after the CRS line", path=p)
    xyz = np.array([r[:3] for r in rows], float)
    llh = _to_llh(xyz, crs, p)
    out: dict[str, dict] = {}
    for i, r in enumerate(rows):
        key = keys[i] if keys[i] is not None else f"{r[0]:.3f}_{r[1]:.3f}_{r[2]:.3f}"
        g = out.setdefault(key, {"id": key, "llh": llh[i].tolist(), "observations": []})
        g["observations"].append({"image": r[5], "pixel": [r[3], r[4]], "projection": None})
    return list(out.values())


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _column(header: list[str], role: str) -> int | None:
    for a in _ALIASES[role]:
        if a in header:
            return header.index(a)
    return None


def _read_csv(text: str, p: Path, crs) -> list[dict]:
    first = text.lstrip().splitlines()[0]
    delim = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text.lstrip()), delimiter=delim)
    header = [c.strip().strip('"').lower() for c in next(reader)]
    col = {r: _column(header, r) for r in _ALIASES}
    geographic = col["lon"] is not None and col["lat"] is not None
    cx, cy = (col["lon"], col["lat"]) if geographic else (col["x"], col["y"])
    if col["name"] is None or cx is None or cy is None:
        raise InputError(
            f"a GCP CSV needs name, x, y (or lon, lat) and z columns; the header has {header}",
            path=p,
        )
    if (col["px"] is None) != (col["py"] is None) or (
        col["px"] is not None and col["image"] is None
    ):
        raise InputError("image observations need image, px and py columns", path=p)
    rows = []
    for n, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            cell = [c.strip() for c in row]
            x, y = float(cell[cx]), float(cell[cy])
            z = float(cell[col["z"]]) if col["z"] is not None and cell[col["z"]] else 0.0
            img = cell[col["image"]] if col["image"] is not None else ""
            uv = None
            if img and col["px"] is not None:
                uv = [float(cell[col["px"]]), float(cell[col["py"]])]
            rc = cell[col["crs"]] if col["crs"] is not None else ""
        except (ValueError, IndexError):
            raise InputError(f"line {n}: cannot read {row!r}", path=p) from None
        rows.append((cell[col["name"]], x, y, z, img, uv, rc, n))
    if not rows:
        raise InputError("no ground control points below the header", path=p)
    from twin.crs import GEODETIC_3D, parse_crs

    by_crs: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_crs.setdefault(r[6], []).append(i)
    llh = np.zeros((len(rows), 3))
    for c, idx in by_crs.items():
        xy = np.array([rows[i][1:3] for i in idx], float)
        degrees = bool(np.all(np.abs(xy[:, 0]) <= 180) and np.all(np.abs(xy[:, 1]) <= 90))
        if c:
            cr = _parse_crs(c, p, f"line {rows[idx[0]][7]} (crs column)")
        elif geographic or (degrees and (crs is None or not parse_crs(crs).is_geographic)):
            # x, y that can only be longitude, latitude degrees (no projected survey CRS
            # has coordinates this close to its false origin over a whole block)
            if not geographic:
                log.info("%s: x, y read as longitude, latitude (WGS 84)", p)
            cr = parse_crs(GEODETIC_3D)
        elif crs is not None:
            cr = parse_crs(crs)
        else:
            raise CRSError(
                "GCP coordinates without a CRS: add a crs column, use lon/lat columns, "
                "or give the survey CRS (twin recon --crs)",
                path=p,
            )
        llh[idx] = _to_llh(np.array([rows[i][1:4] for i in idx], float), cr, p)
    out: dict[str, dict] = {}
    for i, r in enumerate(rows):
        g = out.setdefault(r[0], {"id": r[0], "llh": llh[i].tolist(), "observations": []})
        if np.linalg.norm(np.subtract(g["llh"][:2], llh[i][:2])) > 1e-7:
            raise InputError(f"line {r[7]}: GCP {r[0]!r} given two different positions", path=p)
        if r[4]:
            g["observations"].append({"image": r[4], "pixel": r[5], "projection": None})
    return list(out.values())


def check_gcps_against_block(gcps: list[dict], image_names, frame, block_enu, path=None):
    """Refuse GCP files that cannot belong to the photos; return a report dict.

    Raises :class:`~twin.errors.InputError` when no observation names a photo of the
    block (names compared as given and by file name), or when a GCP lies more than
    ``max(1 km, 3 x the block's radius)`` from the photos (a wrong CRS or swapped
    axes). Observations of unknown photos are dropped, listed in the report and logged.
    """
    from twin.crs import GEODETIC_3D

    names = set(image_names)
    by_base: dict[str, str] = {}
    for n in names:
        by_base.setdefault(Path(n).name, n)
    unknown: set[str] = set()
    matched = 0
    for g in gcps:
        keep = []
        for o in g["observations"]:
            nm = o["image"]
            if nm not in names and Path(nm).name in by_base:
                o["image"] = nm = by_base[Path(nm).name]
            if nm in names:
                keep.append(o)
                matched += 1
            else:
                unknown.add(nm)
        g["observations"] = keep
    n_obs = matched + len(unknown)
    if n_obs and not matched:
        raise InputError(
            f"none of the GCP observations names a usable photo of the block (e.g. "
            f"{sorted(unknown)[:3]}; photos are named like {sorted(names)[:2]})",
            path=path,
        )
    if unknown:
        log.warning(
            "GCP observations of %d photos not in the block ignored: %s",
            len(unknown),
            sorted(unknown)[:5],
        )
    far = []
    block = np.asarray(block_enu, float).reshape(-1, 3)
    block = block[np.all(np.isfinite(block), axis=1)]
    if frame is not None and len(block):
        centre = block[:, :2].mean(0)
        radius = float(np.max(np.linalg.norm(block[:, :2] - centre, axis=1)))
        limit = max(1000.0, 3.0 * radius)
        for g in gcps:
            if g["llh"] is None:
                continue
            e = frame.from_crs(np.array([g["llh"]]), GEODETIC_3D)[0]
            d = float(np.linalg.norm(e[:2] - centre))
            if not np.isfinite(d) or d > limit:
                far.append((g["id"], d))
        if far:
            gid, d = far[0]
            raise InputError(
                f"{len(far)} GCP(s) lie far outside the photographed block (GCP {gid!r} is "
                f"{d / 1000:.1f} km from the photos, limit {limit / 1000:.1f} km): wrong "
                "CRS, swapped x/y or lon/lat?",
                path=path,
            )
    return {"unknown_images": sorted(unknown), "observations_used": matched}
