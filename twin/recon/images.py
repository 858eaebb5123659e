"""Image ingest: which photos of a folder can be used, and what their metadata says.

:func:`scan_images` reads every file of a folder and its subfolders (photo names are
paths relative to it, e.g. ``nadir/0001.jpg``; hidden entries and ``masks`` folders
are left out; suffixes in any case) and returns an
:class:`ImageSet`: the usable :class:`ImageInfo` records and, for the rest, a
:class:`Rejected` entry with the reason (not an image, corrupt JPEG, duplicate of another
file, black or blank frame, far blurrier than the rest). Images without EXIF or
without GPS are kept; their ``notes`` say what is missing and how the focal length was
obtained.

Metadata read: EXIF Make/Model, pixel size, FocalLength (mm), FocalLengthIn35mmFilm,
focal-plane resolution (gives the sensor width), DateTimeOriginal, GPS latitude,
longitude and altitude; XMP ``drone-dji:`` gimbal pitch/yaw/roll (degrees: pitch -90
looks straight down, yaw clockwise from north), RelativeAltitude and AbsoluteAltitude.

Focal length in pixels, first that applies: ``focal_mm`` and the sensor width from the
focal-plane resolution; the 35 mm equivalent (36 mm frame width against the image's long
side); ``default_focal_factor`` times the long side (a guess, flagged as such so SfM
refines it). Images share a camera model (intrinsics) when make, model, pixel size and
focal length agree: the cameras of an oblique rig get one model each.

Memory: one decoded image at a time (plus a 1/8-scale grey copy for the checks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from twin.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
FOCAL_GUESS = 1.2  # focal length / long image side when nothing better is known


@dataclass
class ImageInfo:
    """One usable photo. Angles in degrees, lengths in mm or pixels as named."""

    path: Path
    name: str
    width: int
    height: int
    sha256: str
    make: str | None = None
    model: str | None = None
    focal_mm: float | None = None
    focal_35mm: float | None = None
    sensor_width_mm: float | None = None
    focal_px: float = 0.0
    focal_source: str = ""
    lon: float | None = None
    lat: float | None = None
    alt: float | None = None  # GPS altitude as written (ellipsoidal for twin's photos)
    relative_altitude: float | None = None
    gimbal_pitch: float | None = None
    gimbal_yaw: float | None = None
    gimbal_roll: float | None = None
    time: str | None = None
    mask: Path | None = None
    sharpness: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def has_gps(self) -> bool:
        return self.lon is not None and self.lat is not None

    @property
    def has_gimbal(self) -> bool:
        return self.gimbal_pitch is not None and self.gimbal_yaw is not None

    @property
    def camera_key(self) -> tuple:
        """Images with the same key share intrinsics (an image whose focal length was
        guessed gets its own)."""
        if self.focal_source == "guess":
            return (self.name,)
        return (self.make, self.model, self.width, self.height, round(self.focal_px, 1))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["mask"] = str(self.mask) if self.mask else None
        return d


@dataclass
class Rejected:
    name: str
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "reason": self.reason}


@dataclass
class ImageSet:
    folder: Path
    images: list[ImageInfo]
    rejected: list[Rejected]

    def camera_groups(self) -> dict[tuple, list[ImageInfo]]:
        groups: dict[tuple, list[ImageInfo]] = {}
        for im in self.images:
            groups.setdefault(im.camera_key, []).append(im)
        return groups

    def by_name(self) -> dict[str, ImageInfo]:
        return {im.name: im for im in self.images}

    def rig_stations(self, max_spread_m: float = 0.5) -> list[list[ImageInfo]]:
        """Photos taken together by a multi-camera rig: groups of two or more images
        with the same capture time (to the EXIF sub-second), each from a different
        camera model (:attr:`ImageInfo.camera_key`), whose GPS positions (where given)
        agree within ``max_spread_m``. Only when at least two such stations exist and
        they account for half the images is the set taken to come from a rig; otherwise
        the list is empty. Every image of a rig camera is returned, in one group per
        station (a station may hold a single photo when the others were dropped)."""
        by_time: dict[str, list[ImageInfo]] = {}
        for im in self.images:
            if im.time and im.focal_source != "guess":
                by_time.setdefault(im.time, []).append(im)
        stations = []
        for group in by_time.values():
            keys = [im.camera_key for im in group]
            if len(set(keys)) != len(keys):
                continue  # two photos of one camera at once: not a rig station
            gps = [(im.lon, im.lat) for im in group if im.has_gps]
            if len(gps) > 1:
                lon, lat = np.array(gps).T
                spread = max(
                    np.ptp(lat) * 111_320.0, np.ptp(lon) * 111_320.0 * np.cos(np.radians(lat[0]))
                )
                if spread > max_spread_m:
                    continue
            stations.append(group)
        multi = [g for g in stations if len(g) > 1]
        if len(multi) < 2 or sum(len(g) for g in multi) < 0.5 * len(self.images):
            return []
        rig_keys = {im.camera_key for g in multi for im in g}
        return [g for g in stations if all(im.camera_key in rig_keys for im in g)]

    def summary(self) -> dict:
        return {
            "folder": str(self.folder),
            "usable": len(self.images),
            "rejected": [r.to_dict() for r in self.rejected],
            "without_gps": [im.name for im in self.images if not im.has_gps],
            "focal_guessed": [im.name for im in self.images if im.focal_source == "guess"],
            "focal_given": [im.name for im in self.images if im.focal_source.startswith("given")],
            "cameras": len(self.camera_groups()),
        }


# ----------------------------------------------------------------------- metadata
def _rational(v) -> float | None:
    try:
        if isinstance(v, tuple) and len(v) == 2:
            return v[0] / v[1] if v[1] else None
        return float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    v = str(v).strip("\x00 ").strip()
    return v or None


def _dms(dms, ref) -> float:
    total = 0.0
    for i, (num, den) in enumerate(dms):
        if den == 0:
            raise ValueError("zero denominator in a GPS rational")
        total += num / den / 60**i
    if isinstance(ref, str):
        ref = ref.encode()
    return -total if ref in (b"S", b"W") else total


def read_exif(path: Path) -> dict:
    """The EXIF fields ingest uses (empty dict when the file has no EXIF)."""
    import piexif

    try:
        exif = piexif.load(os.fspath(path))
    except (piexif.InvalidImageDataError, ValueError, struct.error, KeyError, IndexError):
        return {}
    z, e, g = exif.get("0th") or {}, exif.get("Exif") or {}, exif.get("GPS") or {}
    I, E, G = piexif.ImageIFD, piexif.ExifIFD, piexif.GPSIFD  # noqa: E741
    out: dict = {}
    if not (z or e or g):
        return out
    out["make"] = _text(z.get(I.Make))
    out["model"] = _text(z.get(I.Model))
    out["focal_mm"] = _rational(e.get(E.FocalLength)) if E.FocalLength in e else None
    f35 = e.get(E.FocalLengthIn35mmFilm)
    out["focal_35mm"] = float(f35) if f35 else None
    xres = _rational(e.get(E.FocalPlaneXResolution)) if E.FocalPlaneXResolution in e else None
    unit = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}.get(int(e.get(E.FocalPlaneResolutionUnit, 2)))
    out["pixels_per_mm"] = xres / unit if xres and unit else None
    out["exif_width"] = e.get(E.PixelXDimension)
    out["time"] = _text(e.get(E.DateTimeOriginal))
    sub = _text(e.get(E.SubSecTimeOriginal))
    if out["time"] and sub and sub.isdigit():
        out["time"] = f"{out['time']}.{sub}"
    if G.GPSLatitude in g and G.GPSLongitude in g:
        try:
            out["lat"] = _dms(g[G.GPSLatitude], g.get(G.GPSLatitudeRef, b"N"))
            out["lon"] = _dms(g[G.GPSLongitude], g.get(G.GPSLongitudeRef, b"E"))
            if G.GPSAltitude in g:
                alt = _rational(g[G.GPSAltitude])
                if alt is not None and g.get(G.GPSAltitudeRef, 0) == 1:
                    alt = -alt
                out["alt"] = alt
            if not (-90 <= out["lat"] <= 90 and -180 <= out["lon"] <= 180):
                raise ValueError(f"GPS position out of range ({out['lat']}, {out['lon']})")
            if out["lat"] == 0 and out["lon"] == 0:
                raise ValueError("GPS position is (0, 0): no fix")
        except (ValueError, TypeError, ZeroDivisionError) as exc:
            out.pop("lat", None), out.pop("lon", None), out.pop("alt", None)
            out["gps_error"] = str(exc)
    return out


def read_xmp(data: bytes) -> dict[str, float]:
    """``drone-dji:`` numeric attributes of an XMP packet in JPEG bytes (name -> value)."""
    i = data.find(XMP_HEADER)
    if i < 0:
        i = data.find(b"<x:xmpmeta")
        if i < 0:
            return {}
        text = data[i : i + 65536].decode("utf-8", "replace")
    else:
        n = int.from_bytes(data[i - 2 : i], "big") - 2 - len(XMP_HEADER)
        text = data[i + len(XMP_HEADER) : i + len(XMP_HEADER) + max(n, 0)].decode(
            "utf-8", "replace"
        )
    out = {}
    for k, v in re.findall(r'drone-dji:(\w+)="([^"]*)"', text) + re.findall(
        r"<drone-dji:(\w+)>([^<]*)</drone-dji:", text
    ):
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out


def gimbal_rotation(pitch: float, yaw: float, roll: float = 0.0) -> np.ndarray:
    """World(ENU)-to-camera rotation (COLMAP axes) of DJI-style gimbal angles (degrees).

    Pitch is the optical axis' elevation (-90 straight down), yaw its azimuth clockwise
    from north (for a vertical axis: the azimuth of the image top), roll the image's
    rotation about the axis (0 for a level image).
    """
    p, y, r = np.radians([pitch, yaw, roll])
    h = np.array([np.sin(y), np.cos(y), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    z = np.cos(p) * h + np.sin(p) * up
    yv = np.sin(p) * h - np.cos(p) * up
    xv = np.cross(yv, z)
    xr = np.cos(r) * xv - np.sin(r) * yv
    yr = np.sin(r) * xv + np.cos(r) * yv
    return np.vstack([xr, yr, z])


# ----------------------------------------------------------------------- checks
def _grey_small(img) -> np.ndarray:
    g = img.convert("L")
    g.draft("L", (max(1, img.width // 4), max(1, img.height // 4)))
    return np.asarray(g, dtype=np.float32)


def _sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a grey image (blur makes it small)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def _find_mask(masks: Path | None, name: str) -> Path | None:
    if masks is None:
        return None
    for cand in (masks / f"{name}.png", masks / (Path(name).stem + ".png"), masks / name):
        if cand.exists():
            return cand
    return None


def _focal(
    info: ImageInfo, exif: dict, focal_factor: float, focal_35mm: float | None = None
) -> None:
    long_side = max(info.width, info.height)
    ppm = exif.get("pixels_per_mm")
    ew = exif.get("exif_width")
    if info.focal_mm and ppm and (not ew or int(ew) == info.width):
        info.sensor_width_mm = info.width / ppm
        info.focal_px = info.focal_mm * ppm
        info.focal_source = "exif focal length and sensor width"
    elif info.focal_35mm:
        info.focal_px = info.focal_35mm / 36.0 * long_side
        info.focal_source = "exif 35 mm equivalent"
        if info.focal_mm:
            info.sensor_width_mm = info.focal_mm / info.focal_35mm * 36.0 * info.width / long_side
    elif focal_35mm:
        info.focal_px = focal_35mm / 36.0 * long_side
        info.focal_source = "given 35 mm equivalent"
        info.notes.append(
            f"no usable focal length in EXIF: the given 35 mm equivalent {focal_35mm:g} mm "
            f"({info.focal_px:.0f} px) used"
        )
    else:
        info.focal_px = focal_factor * long_side
        info.focal_source = "guess"
        info.notes.append(
            f"no usable focal length in EXIF: starting from {focal_factor} x the long side "
            f"({info.focal_px:.0f} px) and letting SfM refine it (estimated); give the 35 mm "
            "equivalent focal length if known (twin recon --focal-35mm)"
        )


def scan_images(
    folder: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    focal_factor: float = FOCAL_GUESS,
    min_contrast: float = 2.0,
    blur_ratio: float = 0.02,
    focal_35mm: float | None = None,
) -> ImageSet:
    """Inventory the photos in ``folder`` (see the module docstring).

    ``masks``: a folder of masks named ``<image name>.png`` (white = use); defaults to
    a ``masks`` folder beside ``folder`` when there is one. ``min_contrast``: a frame
    whose grey standard deviation (0-255) is below it is blank or black.
    ``focal_35mm``: the 35 mm equivalent focal length of photos whose EXIF has none
    (otherwise guessed and refined by SfM). ``blur_ratio``: with at least five images,
    one whose Laplacian variance is below this share of the set's median is rejected as
    blurred. Raises :class:`InputError` when the folder is missing or holds no usable
    image (listing why each failed).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such image folder", path=folder)
    if masks is None and (folder.parent / "masks").is_dir():
        masks = folder.parent / "masks"
    masks = Path(masks) if masks is not None else None
    skip = {masks.resolve()} if masks is not None and masks.is_dir() else set()
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d.lower() not in ("masks", "mask")
            and (Path(root) / d).resolve() not in skip
        )
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    files = sorted(files, key=lambda p: p.relative_to(folder).as_posix())
    candidates = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not candidates:
        raise InputError(
            f"no images (.jpg, .png, .tif) in the folder ({len(files)} other files)", path=folder
        )
    images: list[ImageInfo] = []
    rejected: list[Rejected] = []
    seen: dict[str, str] = {}
    for p in candidates:
        rel = p.relative_to(folder).as_posix()
        try:
            data = p.read_bytes()
        except OSError as exc:
            rejected.append(Rejected(rel, f"cannot read: {exc.strerror}"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            rejected.append(Rejected(rel, f"duplicate of {seen[digest]} (identical bytes)"))
            continue
        try:
            with Image.open(p) as img:
                img.load()
                width, height = img.size
                if img.mode not in ("RGB", "L", "RGBA", "P", "I;16", "CMYK", "YCbCr"):
                    raise OSError(f"unsupported pixel mode {img.mode}")
                grey = _grey_small(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            why = "not a readable image" if isinstance(exc, UnidentifiedImageError) else str(exc)
            rejected.append(Rejected(rel, f"corrupt or unreadable image: {why}"))
            continue
        if min(width, height) < 64:
            rejected.append(Rejected(rel, f"too small ({width}x{height} px)"))
            continue
        if grey.std() < min_contrast:
            rejected.append(
                Rejected(
                    rel,
                    f"blank frame (grey mean {grey.mean():.0f}, std {grey.std():.1f}): "
                    "black, overexposed or lens cap",
                )
            )
            continue
        seen[digest] = rel
        info = ImageInfo(path=p, name=rel, width=width, height=height, sha256=digest)
        info.sharpness = _sharpness(grey)
        exif = read_exif(p) if p.suffix.lower() in (".jpg", ".jpeg", ".tif", ".tiff") else {}
        if not exif:
            info.notes.append("no EXIF")
        for k in ("make", "model", "focal_mm", "focal_35mm", "time", "lon", "lat", "alt"):
            if exif.get(k) is not None:
                setattr(info, k, exif[k])
        if "gps_error" in exif:
            info.notes.append(f"GPS ignored: {exif['gps_error']}")
        elif exif and not info.has_gps:
            info.notes.append("no GPS position in EXIF")
        xmp = read_xmp(data[: 1 << 20])
        if "GimbalPitchDegree" in xmp and "GimbalYawDegree" in xmp:
            info.gimbal_pitch = xmp["GimbalPitchDegree"]
            info.gimbal_yaw = xmp["GimbalYawDegree"]
            info.gimbal_roll = xmp.get("GimbalRollDegree", 0.0)
        if "RelativeAltitude" in xmp:
            info.relative_altitude = xmp["RelativeAltitude"]
        if "AbsoluteAltitude" in xmp and info.alt is None and info.has_gps:
            info.alt = xmp["AbsoluteAltitude"]
        _focal(info, exif, focal_factor, focal_35mm)
        info.mask = _find_mask(masks, rel)
        images.append(info)
    if len(images) >= 5:
        med = float(np.median([im.sharpness for im in images]))
        keep = []
        for im in images:
            if im.sharpness < blur_ratio * med:
                rejected.append(
                    Rejected(
                        im.name,
                        f"blurred: Laplacian variance {im.sharpness:.1f} is under "
                        f"{blur_ratio:.0%} of the set's median {med:.1f}",
                    )
                )
            else:
                keep.append(im)
        images = keep
    for r in rejected:
        log.warning("%s: skipped: %s", folder / r.name, r.reason)
    if not images:
        why = "; ".join(f"{r.name}: {r.reason}" for r in rejected[:5])
        raise InputError(f"no usable image in the folder ({why})", path=folder)
    if not any(im.has_gps for im in images):
        log.warning("%s: no image has GPS: the reconstruction cannot be georeferenced", folder)
    return ImageSet(folder, images, rejected)
