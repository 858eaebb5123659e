"""EXIF and XMP metadata of the synthetic photos, written as a drone/oblique camera does.

Each JPEG carries:

* **EXIF** (APP1 ``Exif``): Make ``"Twin Synthetic"``, Model per rig camera, Software,
  DateTime/DateTimeOriginal (UTC, with SubSecTimeOriginal milliseconds and
  OffsetTimeOriginal ``+00:00``), FocalLength (mm), FocalLengthIn35mmFilm, pixel
  dimensions, focal-plane resolution, and GPS: latitude/longitude on WGS 84 (CGCS2000
  is the same at this precision) as degrees, minutes, seconds rationals (seconds in
  units of 1e-4 arcsecond, about 3 mm) with N/S and E/W refs; GPSAltitude in
  millimetres with ref 0/1 above/below the datum. **The altitude is ellipsoidal**
  (height above the WGS 84 ellipsoid), not above mean sea level, and GPSMapDatum is
  ``"WGS-84"``; GPSDateStamp/GPSTimeStamp are UTC.
* **XMP** (APP1 ``http://ns.adobe.com/xap/1.0/\\0``), DJI style:
  ``drone-dji:GimbalPitchDegree`` (-90 nadir), ``GimbalYawDegree`` (clockwise from
  north), ``GimbalRollDegree``, ``FlightPitchDegree``/``FlightRollDegree`` (0),
  ``FlightYawDegree`` (the flight heading), ``RelativeAltitude`` (above
  ``spec.base_elevation``, the take-off height) and ``AbsoluteAltitude``
  (ellipsoidal), both from the noisy GPS, plus ``tiff:Make``/``tiff:Model``.

Pillow encodes the pixels; the XMP segment is inserted after the EXIF one. No wall
clock is read: the same image and shot give the same bytes.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np

from twin.errors import InputError

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
SECONDS_DENOM = 10000  # EXIF GPS seconds resolution: 1e-4 arcsecond
ALT_DENOM = 1000  # GPS altitude resolution: 1 mm


def to_dms_rational(value: float) -> tuple[tuple[tuple[int, int], ...], float]:
    """``abs(value)`` degrees as EXIF (deg, min, sec) rationals, and the signed decimal
    degrees those rationals represent exactly."""
    units = int(round(abs(value) * 3600 * SECONDS_DENOM))
    d, rem = divmod(units, 3600 * SECONDS_DENOM)
    m, s = divmod(rem, 60 * SECONDS_DENOM)
    written = units / (3600 * SECONDS_DENOM)
    return ((d, 1), (m, 1), (s, SECONDS_DENOM)), (-written if value < 0 else written)


def from_dms_rational(dms, ref) -> float:
    """Decimal degrees of EXIF (deg, min, sec) rationals and a ref (b'N', b'S', b'E', b'W')."""
    total = 0.0
    for i, (num, den) in enumerate(dms):
        if den == 0:
            raise ValueError("zero denominator in a GPS rational")
        total += num / den / 60**i
    if isinstance(ref, str):
        ref = ref.encode()
    return -total if ref in (b"S", b"W") else total


def _xmp_packet(shot, gimbal: dict, relative_altitude: float, absolute_altitude: float) -> bytes:
    from twin.synth.camera import MAKE, MODELS

    def f(x: float) -> str:
        return f"{x:+.2f}"

    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:tiff="http://ns.adobe.com/tiff/1.0/"\n'
        '    xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/"\n'
        f'    tiff:Make="{MAKE}"\n'
        f'    tiff:Model="{MODELS.get(shot.sensor.name, shot.sensor.name)}"\n'
        f'    drone-dji:AbsoluteAltitude="{f(absolute_altitude)}"\n'
        f'    drone-dji:RelativeAltitude="{f(relative_altitude)}"\n'
        f'    drone-dji:GimbalRollDegree="{f(gimbal["roll"])}"\n'
        f'    drone-dji:GimbalYawDegree="{f(gimbal["yaw"])}"\n'
        f'    drone-dji:GimbalPitchDegree="{f(gimbal["pitch"])}"\n'
        '    drone-dji:FlightRollDegree="+0.00"\n'
        f'    drone-dji:FlightYawDegree="{f(_wrap180(shot.heading))}"\n'
        '    drone-dji:FlightPitchDegree="+0.00"\n'
        f'    drone-dji:RigCamera="{shot.sensor.name}"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return body.encode("utf-8")


def _wrap180(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def insert_xmp(jpeg: bytes, packet: bytes) -> bytes:
    """Insert an XMP APP1 segment after the leading APPn segments of a JPEG."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    seg = XMP_HEADER + packet
    if len(seg) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one APP1 segment")
    pos = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF and 0xE0 <= jpeg[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    return jpeg[:pos] + b"\xff\xe1" + (len(seg) + 2).to_bytes(2, "big") + seg + jpeg[pos:]


def jpeg_bytes(
    image: np.ndarray,
    shot,
    *,
    lon: float,
    lat: float,
    alt: float,
    relative_altitude: float,
    gimbal: dict,
    quality: int = 92,
) -> tuple[bytes, dict]:
    """Encode ``image`` (H, W, 3 uint8 sRGB) as JPEG with EXIF GPS and XMP for ``shot``.

    ``lon``/``lat`` (degrees, WGS 84) and ``alt`` (ellipsoidal metres) are the GPS fix
    to write. Returns the bytes and ``{"lon", "lat", "alt"}`` exactly as written (after
    rounding to the EXIF rationals).
    """
    import piexif
    from PIL import Image

    from twin import __version__
    from twin.synth.camera import MAKE, MODELS, utc_iso

    s = shot.sensor
    iso = utc_iso(shot.time)  # 2026-05-01T08:00:01.500Z
    date, clock = iso[:10], iso[11:19]
    stamp = f"{date.replace('-', ':')} {clock}"
    lat_r, lat_w = to_dms_rational(lat)
    lon_r, lon_w = to_dms_rational(lon)
    alt_units = int(round(abs(alt) * ALT_DENOM))
    alt_w = (-1 if alt < 0 else 1) * alt_units / ALT_DENOM
    hh, mm, ss = (int(x) for x in clock.split(":"))
    ms = int(iso[20:23])
    zeroth = {
        piexif.ImageIFD.Make: MAKE,
        piexif.ImageIFD.Model: MODELS.get(s.name, s.name),
        piexif.ImageIFD.Software: f"twin {__version__}",
        piexif.ImageIFD.DateTime: stamp,
        piexif.ImageIFD.Orientation: 1,
    }
    exif = {
        piexif.ExifIFD.DateTimeOriginal: stamp,
        piexif.ExifIFD.DateTimeDigitized: stamp,
        piexif.ExifIFD.SubSecTimeOriginal: f"{ms:03d}",
        piexif.ExifIFD.OffsetTimeOriginal: "+00:00",
        piexif.ExifIFD.FocalLength: (int(round(s.focal_mm * 1000)), 1000),
        piexif.ExifIFD.FocalLengthIn35mmFilm: s.focal_35mm,
        piexif.ExifIFD.PixelXDimension: int(s.width),
        piexif.ExifIFD.PixelYDimension: int(s.height),
        # pixels per centimetre on the sensor
        piexif.ExifIFD.FocalPlaneXResolution: (
            int(round(s.width / s.sensor_width_mm * 10000)),
            1000,
        ),
        piexif.ExifIFD.FocalPlaneYResolution: (
            int(round(s.width / s.sensor_width_mm * 10000)),
            1000,
        ),
        piexif.ExifIFD.FocalPlaneResolutionUnit: 3,
        piexif.ExifIFD.ExposureTime: (1, 1000),
        piexif.ExifIFD.FNumber: (56, 10),
        piexif.ExifIFD.ISOSpeedRatings: 100,
    }
    gps = {
        piexif.GPSIFD.GPSVersionID: (2, 3, 0, 0),
        piexif.GPSIFD.GPSLatitudeRef: "S" if lat < 0 else "N",
        piexif.GPSIFD.GPSLatitude: lat_r,
        piexif.GPSIFD.GPSLongitudeRef: "W" if lon < 0 else "E",
        piexif.GPSIFD.GPSLongitude: lon_r,
        piexif.GPSIFD.GPSAltitudeRef: 1 if alt < 0 else 0,
        piexif.GPSIFD.GPSAltitude: (alt_units, ALT_DENOM),
        piexif.GPSIFD.GPSTimeStamp: ((hh, 1), (mm, 1), (ss * 1000 + ms, 1000)),
        piexif.GPSIFD.GPSDateStamp: date.replace("-", ":"),
        piexif.GPSIFD.GPSMapDatum: "WGS-84",
    }
    exif_bytes = piexif.dump(
        {"0th": zeroth, "Exif": exif, "GPS": gps, "1st": {}, "thumbnail": None}
    )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(
        buf, "JPEG", quality=int(quality), exif=exif_bytes, subsampling=2
    )
    data = insert_xmp(buf.getvalue(), _xmp_packet(shot, gimbal, relative_altitude, alt_w))
    return data, {"lon": lon_w, "lat": lat_w, "alt": alt_w}


def read_exif_gps(jpeg_path: str | os.PathLike) -> tuple[float, float, float]:
    """``(lon, lat, alt)`` from a JPEG's EXIF GPS (degrees; metres, as the file's datum:
    ellipsoidal for twin's photos). Raises :class:`InputError` naming the file when it
    is not a JPEG with EXIF or holds no GPS position."""
    import piexif

    path = os.fspath(jpeg_path)
    try:
        exif = piexif.load(path)
    except FileNotFoundError:
        raise InputError("no such image file", path=path) from None
    except (piexif.InvalidImageDataError, ValueError, struct.error) as exc:
        raise InputError(f"cannot read EXIF: {exc}", path=path) from None
    g = exif.get("GPS") or {}
    T = piexif.GPSIFD
    if T.GPSLatitude not in g or T.GPSLongitude not in g:
        raise InputError("the image has no GPS position in its EXIF", path=path)
    try:
        lat = from_dms_rational(g[T.GPSLatitude], g.get(T.GPSLatitudeRef, b"N"))
        lon = from_dms_rational(g[T.GPSLongitude], g.get(T.GPSLongitudeRef, b"E"))
        alt = float("nan")
        if T.GPSAltitude in g:
            num, den = g[T.GPSAltitude]
            alt = num / den * (-1 if g.get(T.GPSAltitudeRef, 0) == 1 else 1)
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise InputError(f"malformed EXIF GPS: {exc}", path=path) from None
    return lon, lat, alt


def read_xmp(jpeg_path: str | os.PathLike) -> dict[str, str]:
    """The ``drone-dji:*`` attributes of a JPEG's XMP packet (name without prefix ->
    text); empty when there is none. Raises :class:`InputError` for a non-JPEG."""
    import re

    path = os.fspath(jpeg_path)
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise InputError(f"cannot read the image: {exc.strerror}", path=path) from None
    if data[:2] != b"\xff\xd8":
        raise InputError("not a JPEG file", path=path)
    i = data.find(XMP_HEADER)
    if i < 0:
        return {}
    n = int.from_bytes(data[i - 2 : i], "big") - 2 - len(XMP_HEADER)
    text = data[i + len(XMP_HEADER) : i + len(XMP_HEADER) + n].decode("utf-8", "replace")
    return dict(re.findall(r'drone-dji:(\w+)="([^"]*)"', text))
