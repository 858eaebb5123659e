"""KTX 2.0 texture pages: container layout, mip levels in linear light, bad files, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from twin.errors import InputError, ParameterError
from twin.texture.ktx2 import IDENTIFIER, decode_ktx2, encode_ktx2, mip_levels


def _srgb_to_linear(c):
    c = c / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x):
    return 255.0 * np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def _reference_half(a):
    """Float64 2x2 box filter in linear light (odd last row/column joins the last block)."""
    h, w = a.shape[:2]
    h2, w2 = max(1, h // 2), max(1, w // 2)
    out = np.zeros((h2, w2, 4))
    for i in range(h2):
        rows = slice(2 * i, h if i == h2 - 1 else 2 * i + 2)
        for j in range(w2):
            cols = slice(2 * j, w if j == w2 - 1 else 2 * j + 2)
            blk = a[rows, cols].reshape(-1, 4).astype(np.float64)
            out[i, j, :3] = _linear_to_srgb(_srgb_to_linear(blk[:, :3]).mean(axis=0))
            out[i, j, 3] = blk[:, 3].mean()
    return out


@pytest.mark.parametrize("shape", [(64, 32), (7, 5), (1, 9), (16, 16)])
def test_levels_are_linear_light_box_filters_of_the_page(shape):
    rng = np.random.default_rng(sum(shape))
    page = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
    levels = mip_levels(page)
    h, w = shape
    assert [lv.shape[:2] for lv in levels] == [
        (max(1, h >> i), max(1, w >> i)) for i in range(len(levels))
    ]
    assert levels[-1].shape[:2] == (1, 1)
    for big, small in zip(levels, levels[1:], strict=False):
        ref = _reference_half(big)
        assert np.abs(small.astype(float) - ref).max() <= 1.0
    # black and white texels average to mid-grey in light, not in code values
    bw = np.zeros((2, 2, 4), np.uint8)
    bw[0, :, :3] = 255
    bw[..., 3] = 255
    assert mip_levels(bw)[1][0, 0, 0] == 188  # sRGB(0.5) = 187.5; a code-value mean gives 128


def test_container_round_trips_and_reads_in_ktx_parse(tmp_path):
    rng = np.random.default_rng(1)
    page = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
    data = encode_ktx2(page)
    assert data[:12] == IDENTIFIER
    levels = decode_ktx2(data)
    assert len(levels) == 8  # 128 -> 1
    assert np.array_equal(levels[0][..., :3], page) and (levels[0][..., 3] == 255).all()
    for got, want in zip(levels, mip_levels(levels[0]), strict=True):
        assert np.array_equal(got, want)
    # an independent parser (Khronos layout, npm ktx-parse) reads the same fields
    mod = shutil.which("node") and (
        __import__("twin.tiles.validate", fromlist=["x"]).node_validator_path().parent / "ktx-parse"
    )
    if not mod or not mod.exists():
        pytest.skip("node or npm ktx-parse not installed")
    (tmp_path / "p.ktx2").write_bytes(data)
    script = tmp_path / "read.cjs"
    script.write_text(
        "const {read} = require(process.argv[2]); const fs = require('fs');\n"
        "const c = read(new Uint8Array(fs.readFileSync(process.argv[3])));\n"
        "console.log(JSON.stringify({vk: c.vkFormat, w: c.pixelWidth, h: c.pixelHeight,"
        " faces: c.faceCount, sc: c.supercompressionScheme, dfd: c.dataFormatDescriptor[0],"
        " kv: c.keyValue, levels: c.levels.map(l => [l.levelData.length,"
        " l.uncompressedByteLength])}));\n"
    )
    out = subprocess.run(
        ["node", str(script), str(mod), str(tmp_path / "p.ktx2")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    c = json.loads(out.stdout)
    assert (c["vk"], c["w"], c["h"], c["faces"], c["sc"]) == (43, 64, 128, 1, 3)
    d = c["dfd"]
    assert (d["colorModel"], d["colorPrimaries"], d["transferFunction"]) == (1, 1, 2)
    assert d["bytesPlane"][0] == 4 and len(d["samples"]) == 4
    assert [s["channelType"] for s in d["samples"]] == [0, 1, 2, 15 | 0x10]
    assert [s["bitOffset"] for s in d["samples"]] == [0, 8, 16, 24]
    assert c["kv"]["KTXorientation"].rstrip("\0") == "rd"
    assert [u for _, u in c["levels"]] == [lv.nbytes for lv in levels]


def test_bad_pages_and_files_are_clear_errors():
    with pytest.raises(ParameterError, match="uint8"):
        encode_ktx2(np.zeros((4, 4, 3), np.float32))
    data = encode_ktx2(np.full((8, 8, 3), 90, np.uint8))
    with pytest.raises(InputError, match="identifier"):
        decode_ktx2(b"\x89PNG" + data[4:], path="x.ktx2")
    with pytest.raises(InputError, match="past the end|truncated"):
        decode_ktx2(data[:-5], path="x.ktx2")
    broken = bytearray(data)
    broken[-3] ^= 0xFF  # inside level 0's zlib stream (last in the file)
    with pytest.raises(InputError, match="level 0"):
        decode_ktx2(bytes(broken), path="x.ktx2")


def test_cli_writes_ktx2_pages_beside_png(tiny_survey, tmp_path):
    from PIL import Image

    from twin.cli import main
    from twin.tiles.gltf import read_glb

    mesh, images, cameras = (
        tiny_survey / "truth" / "mesh.ply",
        tiny_survey / "images",
        tiny_survey / "cameras.json",
    )
    out = tmp_path / "tex"
    args = ["texture", str(mesh), str(images), str(cameras), str(out), "--format", "ktx2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    pages = sorted(out.glob("texture_*.ktx2"))
    assert pages
    for k in pages:
        levels = decode_ktx2(k.read_bytes(), path=k)
        with Image.open(k.with_suffix(".png")) as im:
            png = np.asarray(im.convert("RGB"))
        assert np.array_equal(levels[0][..., :3], png)  # the same texels, losslessly
    assert all(p["texture_mime"] == "image/png" for p in read_glb(out / "model.glb"))
    assert "map_Kd texture_0.png" in (out / "model.mtl").read_text()
    georef = json.loads((out / "georef.json").read_text())
    assert "texture_0.ktx2" in georef["files"]
