"""twin.terrain.quantized_mesh: the codecs, an exact encode/decode round trip against
the input mesh, header geometry (bounding sphere, horizon occlusion), extensions,
32-bit indices, vertex-order compression and bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from twin.crs import geodetic_to_ecef
from twin.errors import InputError, ParameterError
from twin.terrain.quantized_mesh import (
    QMAX,
    WGS84_RADII,
    decode_tile,
    encode_tile,
    gzip_tile,
    high_water_mark_decode,
    high_water_mark_encode,
    hilbert_index,
    oct_decode,
    oct_encode,
    quantize,
    zigzag_delta_decode,
    zigzag_delta_encode,
)
from twin.terrain.tin import tin

BOUNDS = (10.0, 45.0, 10.01, 45.01)


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def random_walk_surface(n, relief=200.0, seed=1):
    z = np.cumsum(np.cumsum(rng(seed).standard_normal((n, n)), 0), 1)
    return (z - z.min()) / (z.max() - z.min()) * relief + 100.0


def tin_tile(n=65, max_error=0.5, bounds=BOUNDS, seed=1):
    """A TIN over a grid spanning ``bounds``: (lon, lat, h) vertices and faces."""
    z = random_walk_surface(n, seed=seed)
    v, f, _ = tin(z, max_error)
    w, s, e, nn = bounds
    verts = np.column_stack(
        [w + v[:, 0] / (n - 1) * (e - w), s + v[:, 1] / (n - 1) * (nn - s), v[:, 2]]
    )
    return verts, f.astype(np.int64)


def canonical(faces):
    """Triangles as a set, each rotated to start at its smallest index (orientation kept)."""
    out = set()
    for a, b, c in np.asarray(faces).tolist():
        k = [a, b, c].index(min(a, b, c))
        t = [a, b, c][k:] + [a, b, c][:k]
        out.add(tuple(t))
    return out


# ------------------------------------------------------------------------ codecs


def test_zigzag_round_trip_and_small_codes_for_small_steps():
    vals = rng().integers(0, QMAX + 1, 5000)
    codes = zigzag_delta_encode(vals)
    assert codes.dtype == np.uint16
    assert np.array_equal(zigzag_delta_decode(codes), vals)
    # the spec's examples: 0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3
    assert zigzag_delta_encode(np.array([0, -1, 0, -2])).tolist() == [0, 1, 2, 3]
    assert zigzag_delta_encode(np.array([5, 4, 5, 3])).tolist() == [10, 1, 2, 3]
    assert zigzag_delta_encode(np.array([QMAX, 0])).tolist() == [2 * QMAX, 2 * QMAX - 1]


def test_high_water_mark_round_trip_and_first_use_required():
    idx = np.array([0, 1, 2, 1, 2, 3, 0, 3, 4, 4, 3, 5])
    codes = high_water_mark_encode(idx)
    assert codes.tolist() == [0, 0, 0, 2, 1, 0, 4, 1, 0, 1, 2, 0]
    assert np.array_equal(high_water_mark_decode(codes), idx)
    with pytest.raises(ParameterError, match="first-use"):
        high_water_mark_encode(np.array([0, 2, 1]))


def test_oct_normals_round_trip_within_a_degree():
    v = rng(2).standard_normal((20000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    enc = oct_encode(v)
    assert enc.dtype == np.uint8
    back = oct_decode(enc)
    ang = np.degrees(np.arccos(np.clip((back * v).sum(axis=1), -1, 1)))
    assert ang.max() < 1.0  # 8-bit oct encoding: worst about 0.7 degrees
    axes = np.vstack([np.eye(3), -np.eye(3)])
    assert np.allclose(oct_decode(oct_encode(axes)), axes, atol=0.005)  # 0 is 127.5/255


def test_hilbert_index_is_a_bijection_with_unit_steps():
    bits = 4
    gx, gy = np.meshgrid(np.arange(16), np.arange(16))
    d = hilbert_index(gx.ravel(), gy.ravel(), bits=bits)
    assert sorted(d.tolist()) == list(range(256))
    order = np.argsort(d)
    px, py = gx.ravel()[order], gy.ravel()[order]
    assert np.all(np.abs(np.diff(px)) + np.abs(np.diff(py)) == 1)  # neighbours


# --------------------------------------------------------------------- round trip


def test_encode_decode_round_trip_exact():
    verts, faces = tin_tile()
    data = encode_tile(verts, faces, BOUNDS)
    tile = decode_tile(data, BOUNDS)
    assert len(tile["u"]) == len(verts)
    u, v, hq, hmin, hmax = quantize(verts, BOUNDS)
    # header heights
    assert tile["min_height"] == pytest.approx(verts[:, 2].min(), abs=1e-4)
    assert tile["max_height"] == pytest.approx(verts[:, 2].max(), abs=1e-4)
    # map decoded vertices back to the input ones by their (u, v) (unique on a grid)
    key_in = {(a, b): i for i, (a, b) in enumerate(zip(u.tolist(), v.tolist(), strict=True))}
    assert len(key_in) == len(verts)
    back = np.array(
        [key_in[(a, b)] for a, b in zip(tile["u"].tolist(), tile["v"].tolist(), strict=True)]
    )
    assert sorted(back.tolist()) == list(range(len(verts)))
    assert np.array_equal(tile["h"], hq[back])  # quantised heights identical
    half_step = (hmax - hmin) / QMAX / 2
    assert np.abs(tile["heights"] - verts[back, 2]).max() <= half_step + 1e-6
    lonlat = tile["lonlat_h"]
    assert np.abs(lonlat[:, 0] - verts[back, 0]).max() <= 0.5 * 0.01 / QMAX + 1e-12
    assert np.abs(lonlat[:, 1] - verts[back, 1]).max() <= 0.5 * 0.01 / QMAX + 1e-12
    # the same triangles with the same orientation
    assert canonical(back[tile["faces"]]) == canonical(faces)
    # edge lists: every vertex on each border, sorted along it
    w, s, e, n = BOUNDS
    for name, on, along in (
        ("west", verts[:, 0] == w, 1),
        ("south", verts[:, 1] == s, 0),
        ("east", verts[:, 0] == e, 1),
        ("north", verts[:, 1] == n, 0),
    ):
        got = back[tile[name]]
        assert set(got.tolist()) == set(np.nonzero(on)[0].tolist()), name
        assert np.all(np.diff(verts[got, along]) > 0), name
    # normals extension present, unit length, pointing up-ish (terrain)
    assert 1 in tile["extensions"]
    up = geodetic_to_ecef(10.005, 45.005, 0.0)
    up /= np.linalg.norm(up)
    assert np.all(tile["normals"] @ up > 0.2)


def test_header_sphere_contains_vertices_and_centre_is_in_the_tile():
    verts, faces = tin_tile(seed=3)
    tile = decode_tile(encode_tile(verts, faces, BOUNDS), BOUNDS)
    ll = tile["lonlat_h"]
    ecef = geodetic_to_ecef(ll[:, 0], ll[:, 1], ll[:, 2])
    d = np.linalg.norm(ecef - tile["sphere_center"], axis=1)
    assert d.max() <= tile["sphere_radius"]
    # tight: the tile is ~1.1 km across, the sphere no bigger than its diagonal / 2 + relief
    assert tile["sphere_radius"] < 0.5 * np.hypot(1112, 787) + 250
    c = geodetic_to_ecef(10.005, 45.005, 0.5 * (tile["min_height"] + tile["max_height"]))
    assert np.allclose(tile["center"], c, atol=1e-6)


def _visible(point_scaled, cam_scaled):
    """CesiumJS EllipsoidalOccluder.isScaledSpacePointVisible."""
    vh2 = (cam_scaled**2).sum() - 1.0
    vt = point_scaled - cam_scaled
    vt_dot_vc = -(vt @ cam_scaled)
    if vh2 < 0:
        return not vt_dot_vc > 0
    occluded = vt_dot_vc > vh2 and vt_dot_vc**2 / (vt @ vt) > vh2
    return not occluded


@pytest.mark.parametrize("bounds", [BOUNDS, (0.0, -45.0, 45.0, 0.0)])
def test_horizon_occlusion_point_hides_only_hidden_tiles(bounds):
    """Wherever a camera cannot see the occlusion point, it sees no vertex either."""
    verts, faces = tin_tile(bounds=bounds, seed=4)
    tile = decode_tile(encode_tile(verts, faces, bounds), bounds)
    hop = tile["horizon_occlusion_point"]
    ll = tile["lonlat_h"]
    pts = geodetic_to_ecef(ll[:, 0], ll[:, 1], ll[:, 2]) / WGS84_RADII
    # the point lies outside the ellipsoid, above the tile, and not absurdly far
    assert 1.0 < np.linalg.norm(hop) < 2.0
    assert hop @ tile["sphere_center"] > 0
    g = rng(5)
    occluded_cams = 0
    sub = pts[:: max(1, len(pts) // 200)]
    for _ in range(3000):
        cam = g.standard_normal(3)
        cam *= (1.0 + g.uniform(1e-5, 0.5)) / np.linalg.norm(cam)
        if not _visible(hop, cam):
            occluded_cams += 1
            assert not any(_visible(p, cam) for p in sub)
    assert occluded_cams > 500  # the test exercised the culling


def test_horizon_occlusion_fallback_for_a_hemisphere_tile():
    """A level-0 tile reaches 90 degrees from its centre: no exact point exists. The
    fallback is hidden only from cameras beyond 90 degrees + their horizon angle
    (which see no point of the ellipsoid within 90 degrees of the tile centre)."""
    bounds = (0.0, -90.0, 180.0, 90.0)
    verts, faces = tin_tile(bounds=bounds, seed=4)
    tile = decode_tile(encode_tile(verts, faces, bounds), bounds)
    hop = tile["horizon_occlusion_point"]
    d = hop / np.linalg.norm(hop)
    assert np.linalg.norm(hop) > 1e5
    g = rng(6)
    hidden = 0
    for _ in range(3000):
        cam = g.standard_normal(3)
        cam *= (1.0 + g.uniform(1e-5, 0.5)) / np.linalg.norm(cam)
        if not _visible(hop, cam):
            hidden += 1
            theta = np.arccos(cam @ d / np.linalg.norm(cam))
            alpha = np.arccos(1.0 / np.linalg.norm(cam))
            assert theta > np.pi / 2 + alpha - 1e-6
    assert hidden > 300


def test_gzip_and_metadata_extension_and_determinism():
    verts, faces = tin_tile(seed=6)
    meta = {"available": [[{"startX": 0, "startY": 0, "endX": 1, "endY": 1}]]}
    raw = encode_tile(verts, faces, BOUNDS, metadata=meta)
    gz = gzip_tile(raw)
    assert gz[:2] == b"\x1f\x8b" and gzip.decompress(gz) == raw
    assert gzip_tile(raw) == gz  # no timestamp: same bytes
    assert encode_tile(verts, faces, BOUNDS, metadata=meta) == raw
    tile = decode_tile(gz)
    assert tile["metadata"] == meta
    assert set(tile["extensions"]) == {1, 4}
    no_ext = decode_tile(encode_tile(verts, faces, BOUNDS, normals=False))
    assert no_ext["extensions"] == {} and "normals" not in no_ext


def test_32_bit_indices_above_65536_vertices():
    n = 300  # 90,000 vertices, a full grid mesh
    cols, rows = np.meshgrid(np.arange(n), np.arange(n))
    cols, rows = cols.ravel(), rows.ravel()
    q = np.arange(n * n).reshape(n, n)
    a, b, c, d = q[:-1, :-1], q[:-1, 1:], q[1:, 1:], q[1:, :-1]
    faces = np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    )
    w, s, e, nn = BOUNDS
    h = np.sin(cols / 9.0) * 30 + np.cos(rows / 7.0) * 20
    verts = np.column_stack([w + cols / (n - 1) * (e - w), s + rows / (n - 1) * (nn - s), h])
    data = encode_tile(verts, faces, BOUNDS, normals=False)
    tile = decode_tile(data)
    assert len(tile["u"]) == n * n > 65536
    # 88 header + 4 + 6n vertex bytes, padded to 4, then 4 bytes per index
    start = 88 + 4 + 6 * n * n
    start += (-start) % 4
    assert int.from_bytes(data[start : start + 4], "little") == len(faces)
    assert len(tile["faces"]) == len(faces)
    assert all(len(tile[k]) == n for k in ("west", "south", "east", "north"))
    u, v, _, _, _ = quantize(verts, BOUNDS)
    key = {(x, y): k for k, (x, y) in enumerate(zip(u.tolist(), v.tolist(), strict=True))}
    back = np.array(
        [key[(x, y)] for x, y in zip(tile["u"].tolist(), tile["v"].tolist(), strict=True)]
    )
    assert canonical(back[tile["faces"]]) == canonical(faces)


def test_hilbert_order_makes_gzipped_tiles_smaller():
    """Measured on a 129 x 129 random-walk TIN (13k vertices): tin's own triangle order
    gzips to ~203 kB, Hilbert order to ~112 kB (1.8x smaller)."""
    verts, faces = tin_tile(n=129, seed=1)
    plain = len(gzip_tile(encode_tile(verts, faces, BOUNDS, optimize=False)))
    shuffled = faces[rng(7).permutation(len(faces))]
    rand = len(gzip_tile(encode_tile(verts, shuffled, BOUNDS, optimize=False)))
    best = len(gzip_tile(encode_tile(verts, shuffled, BOUNDS, optimize=True)))
    assert best * 1.5 < plain
    assert best * 1.6 < rand


# ---------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error():
    verts, faces = tin_tile(n=17, seed=8)
    with pytest.raises(ParameterError, match="outside the tile bounds"):
        encode_tile(verts + [0.02, 0, 0], faces, BOUNDS)
    with pytest.raises(ParameterError, match="bounds"):
        encode_tile(verts, faces, (10.01, 45.0, 10.0, 45.01))
    with pytest.raises(ParameterError, match="faces"):
        encode_tile(verts, faces + len(verts), BOUNDS)
    with pytest.raises(ParameterError, match="NaN"):
        encode_tile(np.where(verts == verts[0, 2], np.nan, verts), faces, BOUNDS)
    data = encode_tile(verts, faces, BOUNDS)
    with pytest.raises(InputError, match="truncated") as exc:
        decode_tile(data[:200], source="x/1/2.terrain")
    assert "x/1/2.terrain" in str(exc.value)
    with pytest.raises(InputError, match="gzip"):
        decode_tile(gzip_tile(data)[:50])
