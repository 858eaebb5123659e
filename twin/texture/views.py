"""Cameras and photos for texturing: pinhole views in the mesh's local ENU frame.

A :class:`View` is one photo with its pose in the COLMAP/OpenCV convention that
``cameras.json`` (from ``twin synth`` or the imagery stage) uses: camera x right,
y down, z forward; ``x_cam = R @ X + t``; ``u = fx * x / z + cx``,
``v = fy * y / z + cy``; pixel centres at integer + 0.5 (the top-left pixel's
centre is ``(0.5, 0.5)``, so pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``).
No lens distortion.

When the cameras and the mesh live in different local frames (both ENU, anchored at
different origins), :func:`to_frame` re-expresses the poses in the mesh's frame
exactly (through ECEF), so a model from ``twin build`` can be textured with the
survey's ``cameras.json``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")


@dataclass
class View:
    """One photo: ``name``, intrinsics (pixels), world-to-camera ``R`` (3x3) and ``t``
    (3,) in the mesh frame, image size, and the image ``path`` (None when missing)."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    R: np.ndarray
    t: np.ndarray
    path: Path | None = None

    @property
    def centre(self) -> np.ndarray:
        return -self.R.T @ self.t

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and camera depth z (N,) of points (N, 3)."""
        # einsum: numpy's matmul is slow for (N, 3) @ (3, 3)
        xc = np.einsum("ij,kj->ik", np.asarray(X, dtype=np.float64), self.R) + self.t
        z = xc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.column_stack(
                [self.fx * xc[:, 0] / z + self.cx, self.fy * xc[:, 1] / z + self.cy]
            )
        return uv, z


def to_frame(views: list[View], src_frame, dst_frame) -> list[View]:
    """The same views with poses moved from ``src_frame`` to ``dst_frame`` (both
    :class:`~twin.crs.LocalFrame`): ``R' = R Rs Rd^T``, ``t' = R Rs (od - os) + t``."""
    if src_frame is None or dst_frame is None or src_frame == dst_frame:
        return views
    rs, rd = src_frame.rotation, dst_frame.rotation
    d = dst_frame.origin_ecef - src_frame.origin_ecef
    out = []
    for v in views:
        R = v.R @ rs @ rd.T
        t = v.R @ (rs @ d) + v.t
        out.append(
            View(v.name, v.width, v.height, v.fx, v.fy, v.cx, v.cy, R, t, v.path),
        )
    return out


def find_image(folder: Path, name: str, file: str | None = None) -> Path | None:
    """The image file of ``name`` in ``folder`` (``file`` first, then common suffixes)."""
    if file:
        p = folder / file
        if p.is_file():
            return p
    for suf in IMAGE_SUFFIXES:
        for s in (suf, suf.upper()):
            p = folder / f"{name}{s}"
            if p.is_file():
                return p
    return None


def read_views(cameras: str | os.PathLike, images: str | os.PathLike) -> tuple[list[View], object]:
    """Read ``cameras.json`` (a file or a folder holding one) and find each photo in
    ``images``. Returns ``(views, frame)``: every camera of the file, in file order,
    with ``path=None`` where its image is missing (the caller reports and skips it),
    and the cameras' :class:`~twin.crs.LocalFrame`."""
    from twin.synth.camera import read_cameras

    cams = read_cameras(cameras)
    folder = Path(images)
    if not folder.is_dir():
        raise InputError("the images folder does not exist", path=folder)
    files = {im["name"]: im.get("file") for im in cams.raw.get("images", [])}
    views = []
    for shot in cams.shots:
        s = shot.sensor
        views.append(
            View(
                shot.name,
                int(s.width),
                int(s.height),
                float(s.fx),
                float(s.fy),
                float(s.cx),
                float(s.cy),
                np.asarray(shot.R, dtype=np.float64),
                np.asarray(shot.t, dtype=np.float64),
                find_image(folder, shot.name, files.get(shot.name)),
            )
        )
    return views, cams.frame


def load_image(view: View) -> np.ndarray:
    """The photo of ``view`` as (H, W, 3) uint8 RGB; InputError naming the file when it
    cannot be decoded or its size differs from the camera's."""
    from PIL import Image, UnidentifiedImageError

    if view.path is None:
        raise InputError(f"no image file for camera {view.name!r}")
    try:
        with Image.open(view.path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the image: {exc}", path=view.path) from None
    if arr.shape[:2] != (view.height, view.width):
        raise InputError(
            f"image is {arr.shape[1]}x{arr.shape[0]} px but camera {view.name!r} says "
            f"{view.width}x{view.height}",
            path=view.path,
        )
    return arr
