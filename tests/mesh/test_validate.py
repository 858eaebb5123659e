"""Bad mesh input gets a clear InputError/ParameterError from every public function."""

from __future__ import annotations

import numpy as np
import pytest

from twin.errors import InputError, ParameterError, TwinError
from twin.mesh.quantize import quantize
from twin.mesh.reorder import acmr, atvr, optimize_vertex_cache, optimize_vertex_fetch
from twin.mesh.validate import MAX_VERTICES, check_attributes, check_faces, check_mesh
from twin.mesh.weld import weld

V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
F = np.array([[0, 1, 2], [1, 3, 2]], np.uint32)


def test_good_mesh_is_normalised():
    v, f = check_mesh(V.astype(np.float32).tolist(), F.astype(np.int64))
    assert v.dtype == np.float64 and v.flags.c_contiguous and v.shape == (4, 3)
    assert f.dtype == np.uint32 and f.flags.c_contiguous and f.shape == (2, 3)
    np.testing.assert_array_equal(f, F)


@pytest.mark.parametrize(
    "vertices, faces, message",
    [
        (np.zeros((0, 3)), F, "vertices is empty"),
        (V, np.zeros((0, 3), np.uint32), "faces is empty"),
        (V[:, :2], F, "shape (N, 3)"),
        (V, F[:, :2], "shape (M, 3)"),
        (V, F.astype(float), "integer array"),
        (V.astype(complex), F, "real number"),
        (np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0], [1, 1, 0]]), F, "row 0 is not finite"),
        (np.array([[0, 0, 0], [1, np.inf, 0], [0, 1, 0], [1, 1, 0]]), F, "row 1 is not finite"),
        (V, np.array([[0, 1, 2], [1, -3, 2]]), "row 1 has a negative index"),
        (V, np.array([[0, 1, 2], [1, 4, 2]]), "out of range for 4 vertices"),
        (V, np.array([[0, 1, 2], [1, 2**40, 2]], np.int64), "out of range"),
    ],
)
def test_bad_mesh(vertices, faces, message):
    with pytest.raises(InputError) as err:
        check_mesh(vertices, faces, path="city.ply")
    assert message in str(err.value)
    assert str(err.value).startswith("city.ply: ")  # the file is named
    assert err.value.path == "city.ply"


def test_more_vertices_than_uint32_allows():
    # a zero-stride view: 2**32 rows without allocating them
    huge = np.broadcast_to(np.zeros((1, 3)), (MAX_VERTICES + 1, 3))
    with pytest.raises(InputError, match="more than uint32 indices"):
        check_mesh(huge, F)
    with pytest.raises(InputError, match="more than uint32 indices"):
        check_faces(F, MAX_VERTICES + 1)
    with pytest.raises(InputError, match="more than uint32 indices"):
        acmr(F, MAX_VERTICES + 1)


def test_attributes_checked():
    assert check_attributes(None, 4) is None
    assert check_attributes(np.arange(4), 4).shape == (4, 1)
    with pytest.raises(InputError, match="3 rows but the mesh has 4"):
        check_attributes(np.zeros((3, 2)), 4)
    with pytest.raises(InputError, match="row 2 is not finite"):
        check_attributes(np.array([0, 1, np.nan, 3.0]), 4)


NAN_V = np.array([[0, 0, 0], [1, 0, np.nan], [0, 1, 0], [1, 1, 0]])
BAD_F = np.array([[0, 1, 2], [1, 9, 2]])

PUBLIC = {
    "weld": lambda v, f: weld(v, f),
    "weld_tol": lambda v, f: weld(v, f, tol=0.1),
    "optimize_vertex_cache": lambda v, f: optimize_vertex_cache(f, len(v)),
    "optimize_vertex_fetch": lambda v, f: optimize_vertex_fetch(v, f),
    "acmr": lambda v, f: acmr(f, len(v)),
    "atvr": lambda v, f: atvr(f, len(v)),
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_function_checks_faces(name):
    with pytest.raises(InputError, match="out of range"):
        PUBLIC[name](V, BAD_F)
    with pytest.raises(InputError, match="faces is empty"):
        PUBLIC[name](V, np.zeros((0, 3), np.uint32))


@pytest.mark.parametrize("name", ["weld", "weld_tol", "optimize_vertex_fetch"])
def test_vertex_functions_check_coordinates(name):
    with pytest.raises(InputError, match="not finite"):
        PUBLIC[name](NAN_V, F)


def test_quantize_checks():
    with pytest.raises(InputError, match="not finite"):
        quantize(NAN_V)
    with pytest.raises(ParameterError, match="bits"):
        quantize(V, bits=17)
    with pytest.raises(ParameterError, match="bits"):
        quantize(V, bits=0)


def test_parameters_checked():
    with pytest.raises(ParameterError, match="cache_size"):
        optimize_vertex_cache(F, 4, cache_size=2)
    with pytest.raises(ParameterError, match="cache_size"):
        acmr(F, 4, cache_size=16.5)
    with pytest.raises(ParameterError, match="tol"):
        weld(V, F, tol=-1)
    with pytest.raises(ParameterError, match="tol"):
        weld(V, F, tol=float("nan"))
    with pytest.raises(ParameterError, match="too small"):
        weld(V * 1e9, F, tol=1e-9)
    with pytest.raises(InputError, match="n_vertices must be positive"):
        acmr(F, 0)
    # every error is a TwinError
    assert issubclass(ParameterError, TwinError) and issubclass(InputError, TwinError)
