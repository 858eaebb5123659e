"""quantize/dequantize: half-step error bound (hypothesis), glTF transforms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from twin.mesh.quantize import (
    Quantized,
    dequantize,
    dequantize_normals,
    dequantize_uvs,
    quantize,
)

coords = st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 40), st.just(3)), elements=coords),
    st.integers(1, 16),
)
def test_round_trip_within_half_a_step(v, bits):
    q = quantize(v, bits=bits)
    assert q.positions.dtype == np.uint16
    assert int(q.positions.max()) <= (1 << bits) - 1
    extent = float((v.max(0) - v.min(0)).max())
    if extent > 0:
        assert q.step == pytest.approx(extent / ((1 << bits) - 1))
    err = np.abs(dequantize(q) - v).max()
    # half a step, plus float64 rounding of coordinates up to 1e5
    assert err <= q.max_error * (1 + 1e-9) + 1e-9, (err, q.max_error)


def test_grid_points_are_exact_and_node_matrix_restores_them():
    rng = np.random.Generator(np.random.PCG64(3))
    q_true = rng.integers(0, 2**14, (500, 3))
    q_true[0] = 0
    q_true[1] = 2**14 - 1
    step, offset = 0.01, np.array([1000.0, -20.0, 5.0])
    v = q_true * step + offset
    q = quantize(v, bits=14)
    np.testing.assert_array_equal(q.positions, q_true)
    assert q.step == pytest.approx(step)
    m = np.array(q.node_matrix()).reshape(4, 4).T  # glTF is column-major
    h = np.column_stack([q.positions, np.ones(len(v))]) @ m.T
    np.testing.assert_allclose(h[:, :3], v, atol=1e-9)
    trs = q.node_transform()
    np.testing.assert_allclose(trs["translation"], offset)
    assert trs["scale"] == [q.step] * 3


def test_flat_and_single_point_meshes():
    q = quantize(np.array([[1.0, 2.0, 3.0]] * 4))
    np.testing.assert_array_equal(q.positions, 0)
    np.testing.assert_array_equal(dequantize(q), [[1.0, 2.0, 3.0]] * 4)
    flat = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], float)
    q = quantize(flat, bits=8)
    assert q.step == pytest.approx(10 / 255)
    np.testing.assert_allclose(dequantize(q), flat, atol=1e-12)


def test_normals_and_uvs():
    rng = np.random.Generator(np.random.PCG64(5))
    v = rng.uniform(0, 10, (1000, 3))
    n = rng.normal(size=(1000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n[0] = [0, 0, -1]
    uv = rng.uniform(-2, 3, (1000, 2))
    q = quantize(v, normals=n, uvs=uv)
    assert q.normals.dtype == np.int8 and q.uvs.dtype == np.uint16
    assert np.abs(dequantize_normals(q) - n).max() <= 0.5 / 127 + 1e-12
    np.testing.assert_array_equal(q.normals[0], [0, 0, -127])
    assert np.abs(dequantize_uvs(q) - uv).max() <= 0.5 * 5 / 65535 * (1 + 1e-9)
    tt = q.texture_transform()
    np.testing.assert_allclose(tt["offset"], uv.min(0))
    np.testing.assert_allclose(tt["scale"], uv.max(0) - uv.min(0))
    # UVs inside [0, 1] need no texture transform
    q2 = quantize(v, uvs=np.clip(uv, 0, 1))
    assert q2.texture_transform() == {"offset": [0.0, 0.0], "scale": [1.0, 1.0]}
    assert quantize(v).texture_transform() is None and dequantize_normals(quantize(v)) is None


def test_bad_attributes():
    from twin.errors import InputError, ParameterError

    v = np.zeros((3, 3))
    with pytest.raises(InputError, match="normals must have shape"):
        quantize(v, normals=np.zeros((3, 2)))
    with pytest.raises(InputError, match="unit vectors"):
        quantize(v, normals=np.full((3, 3), 2.0))
    with pytest.raises(InputError, match="uvs must have shape"):
        quantize(v, uvs=np.zeros((3, 3)))
    with pytest.raises(InputError, match="uvs has 2 rows"):
        quantize(v, uvs=np.zeros((2, 2)))
    with pytest.raises(ParameterError):
        dequantize("not quantized")
    assert isinstance(quantize(v), Quantized)
