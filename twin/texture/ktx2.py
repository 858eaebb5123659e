"""KTX 2.0 texture pages: RGBA8 sRGB with a full mip chain, ZLIB supercompressed.

A KTX2 file holds what a GPU uploads directly (``VK_FORMAT_R8G8B8A8_SRGB``, every
mip level precomputed) so an engine skips decoding and mipmapping at load time; ZLIB
supercompression (scheme 3 of the KTX 2.0 specification) keeps the file near PNG
size. The levels are box-filtered 2x2 in linear light (sRGB decoded, averaged,
re-encoded), so dark and bright texels mix as they do on screen.

Not written: Basis Universal payloads (ETC1S / UASTC), which glTF's
``KHR_texture_basisu`` needs; a GLB therefore embeds PNG/JPEG/WebP pages, and KTX2
pages are files beside it for engines that load KTX2 themselves.

Layout (all little-endian): identifier, header (format, size, 1 face, no layers,
``levelCount`` levels, scheme 3), index (DFD, key/value data, no global data), level
index (level 0 first), a Khronos basic data format descriptor (RGBSDA model,
BT.709 primaries, sRGB transfer, straight alpha; R, G, B sRGB and A linear samples
of 8 bits), key/value data (``KTXorientation`` = ``rd``, ``KTXwriter``), then the
level data from the smallest level to level 0, each a zlib stream.
Memory: the page as RGBA plus one level at a time in 16-bit linear light (about
10 bytes per level-0 texel).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from twin.errors import InputError, ParameterError

IDENTIFIER = b"\xabKTX 20\xbb\r\n\x1a\n"
VK_FORMAT_R8G8B8A8_SRGB = 43
SUPERCOMPRESSION_ZLIB = 3
_HEADER = struct.Struct("<12s9I4I2Q")  # identifier, header, index (up to the level index)
_LEVEL = struct.Struct("<3Q")

# sRGB 8-bit -> linear light on 16 bits, and back (exact table inverse by rounding)
_LIN = np.round(
    65535.0
    * np.where((c := np.arange(256) / 255.0) <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
).astype(np.uint16)


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    x = lin.astype(np.float32) / 65535.0
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


def _half(cur: np.ndarray, stripe: int = 256) -> np.ndarray:
    """One 2x2 box-filtered level of ``cur`` ((H, W, 4) uint8): RGB averaged in
    linear light, alpha linearly; an odd last row/column joins the last block."""
    h, w = cur.shape[:2]
    h2, w2 = max(1, h // 2), max(1, w // 2)
    cols = np.arange(w2) * 2
    ncol = np.diff(np.append(cols, w))
    out = np.empty((h2, w2, 4), np.uint8)
    for r0 in range(0, h2, stripe):
        r1 = min(h2, r0 + stripe)
        lo, hi = 2 * r0, (h if r1 == h2 else 2 * r1)
        block = cur[lo:hi]
        lin = np.empty(block.shape, np.uint32)
        lin[..., :3] = _LIN[block[..., :3]]
        lin[..., 3] = block[..., 3].astype(np.uint32) * 257
        starts = np.arange(r1 - r0) * 2
        nrow = np.diff(np.append(starts, hi - lo))
        acc = np.add.reduceat(np.add.reduceat(lin, starts, axis=0), cols, axis=1)
        cnt = (nrow[:, None] * ncol[None, :])[..., None]
        mean = (acc + cnt // 2) // cnt
        out[r0:r1, :, :3] = _to_srgb(mean[..., :3])
        out[r0:r1, :, 3] = ((mean[..., 3] + 128) // 257).astype(np.uint8)
    return out


def mip_levels(rgba: np.ndarray) -> list[np.ndarray]:
    """Level 0 (``rgba``, (H, W, 4) uint8) and each 2x2 box-filtered level below it
    down to 1x1 (level i is max(1, W >> i) by max(1, H >> i), as KTX2 sizes them)."""
    levels = [rgba]
    while levels[-1].shape[0] > 1 or levels[-1].shape[1] > 1:
        levels.append(_half(levels[-1]))
    return levels


def _dfd() -> bytes:
    """Khronos basic data format descriptor of VK_FORMAT_R8G8B8A8_SRGB."""
    samples = b""
    for i, channel in enumerate((0, 1, 2, 15)):  # R, G, B, A
        qualifier = 0x10 if channel == 15 else 0  # alpha is linear in an sRGB format
        samples += struct.pack("<HBB4BII", 8 * i, 7, channel | qualifier, 0, 0, 0, 0, 0, 255)
    block = struct.pack(
        "<IHH4B4B8B",
        0,  # vendor 0 (Khronos), descriptor type 0 (basic)
        2,  # version 2
        24 + len(samples),
        1,  # KHR_DF_MODEL_RGBSDA
        1,  # KHR_DF_PRIMARIES_BT709
        2,  # KHR_DF_TRANSFER_SRGB
        0,  # straight alpha
        *(0, 0, 0, 0),  # 1x1x1x1 texel blocks
        *(4, 0, 0, 0, 0, 0, 0, 0),  # 4 bytes in plane 0
    )
    body = block + samples
    return struct.pack("<I", 4 + len(body)) + body


def _kvd(writer: str) -> bytes:
    out = b""
    for key, value in (("KTXorientation", "rd"), ("KTXwriter", writer)):
        kv = key.encode() + b"\0" + value.encode() + b"\0"
        entry = struct.pack("<I", len(kv)) + kv
        out += entry + b"\0" * (-len(entry) % 4)
    return out


def encode_ktx2(page: np.ndarray, *, level: int = 6, mipmaps: bool = True) -> bytes:
    """KTX2 bytes of an (H, W, 3) or (H, W, 4) uint8 sRGB page (alpha 255 when
    absent), with the full mip chain unless ``mipmaps`` is False, each level zlib
    compressed at ``level`` (1-9)."""
    from twin import __version__

    a = np.asarray(page)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4) or min(a.shape[:2]) < 1:
        raise ParameterError(f"a KTX2 page must be (H, W, 3|4) uint8, got {a.dtype} {a.shape}")
    if not 1 <= int(level) <= 9:
        raise ParameterError(f"zlib level must be 1..9, got {level}")
    h, w = a.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = a[..., :3]
    rgba[..., 3] = a[..., 3] if a.shape[2] == 4 else 255
    levels = mip_levels(rgba) if mipmaps else [rgba]
    data = [zlib.compress(np.ascontiguousarray(lv).tobytes(), int(level)) for lv in levels]
    n = len(levels)
    dfd = _dfd()
    kvd = _kvd(f"twin {__version__}")
    dfd_off = _HEADER.size + _LEVEL.size * n
    kvd_off = dfd_off + len(dfd)
    pos = kvd_off + len(kvd)
    offsets = [0] * n
    for i in range(n - 1, -1, -1):  # smallest level first in the file
        offsets[i] = pos
        pos += len(data[i])
    head = _HEADER.pack(
        IDENTIFIER,
        VK_FORMAT_R8G8B8A8_SRGB,
        1,  # typeSize
        w,
        h,
        0,  # pixelDepth
        0,  # layerCount
        1,  # faceCount
        n,
        SUPERCOMPRESSION_ZLIB,
        dfd_off,
        len(dfd),
        kvd_off,
        len(kvd),
        0,
        0,  # no supercompression global data
    )
    index = b"".join(_LEVEL.pack(offsets[i], len(data[i]), levels[i].nbytes) for i in range(n))
    return head + index + dfd + kvd + b"".join(data[i] for i in range(n - 1, -1, -1))


def decode_ktx2(data: bytes, path=None) -> list[np.ndarray]:
    """The mip levels (level 0 first, each (H, W, 4) uint8) of a KTX2 file written
    by :func:`encode_ktx2` (RGBA8 sRGB, no or ZLIB supercompression); anything else
    is an :class:`~twin.errors.InputError` naming the problem."""
    if len(data) < _HEADER.size or data[:12] != IDENTIFIER:
        raise InputError("not a KTX 2.0 file (identifier missing)", path=path)
    f = _HEADER.unpack_from(data)
    fmt, _, w, h, depth, layers, faces, n, scheme = f[1:10]
    if fmt != VK_FORMAT_R8G8B8A8_SRGB or depth or layers or faces != 1:
        raise InputError(
            f"KTX2 format {fmt} (depth {depth}, layers {layers}) not RGBA8 sRGB", path=path
        )
    if scheme not in (0, SUPERCOMPRESSION_ZLIB) or n < 1:
        raise InputError(f"KTX2 supercompression {scheme} / {n} levels not supported", path=path)
    if len(data) < _HEADER.size + _LEVEL.size * n:
        raise InputError("KTX2 file truncated in its level index", path=path)
    out = []
    for i in range(n):
        off, size, raw = _LEVEL.unpack_from(data, _HEADER.size + _LEVEL.size * i)
        if off + size > len(data):
            raise InputError(f"KTX2 level {i} runs past the end of the file", path=path)
        blob = data[off : off + size]
        try:
            px = zlib.decompress(blob) if scheme == SUPERCOMPRESSION_ZLIB else blob
        except zlib.error as exc:
            raise InputError(f"KTX2 level {i} is corrupt: {exc}", path=path) from exc
        lh, lw = max(1, h >> i), max(1, w >> i)
        if len(px) != raw or raw != lh * lw * 4:
            raise InputError(f"KTX2 level {i}: {len(px)} bytes for {lw}x{lh} RGBA", path=path)
        out.append(np.frombuffer(px, np.uint8).reshape(lh, lw, 4))
    return out
