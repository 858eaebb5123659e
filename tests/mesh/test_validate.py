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


# -- non-manifold edges and zero-area faces ------------------------------------------

# edge (0, 1) used by four faces, a bowtie at vertex 1, a collinear face (1, 5, 8)
# and one with a repeated corner (2, 2, 3)
NM_V = np.array(
    [[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1], [2, 0, 0], [3, 1, 0],
     [3, -1, 0], [0.5, 0, 0]],
    float,
)  # fmt: skip
NM_F = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [1, 5, 8], [5, 6, 7], [2, 2, 3], [0, 8, 1]])


def test_check_topology_names_the_first_bad_face_and_edge():
    from twin.mesh.validate import check_topology

    with pytest.raises(InputError, match=r"face 3 \[1, 5, 8\] has area 0 .*3 such faces"):
        check_topology(NM_V, NM_F, path="scan.ply")
    with pytest.raises(InputError, match=r"^scan.ply: non-manifold edge \[0, 1\] .* 4 faces"):
        check_topology(NM_V, NM_F, min_area=None, path="scan.ply")
    v, f = check_topology(NM_V, NM_F, manifold=False, min_area=None)
    np.testing.assert_array_equal(f, NM_F)
    # a closed 2-manifold with positive areas passes; a small face fails min_area
    tet_v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    tet_f = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    check_topology(tet_v, tet_f)
    with pytest.raises(InputError, match="has area 0.5"):
        check_topology(tet_v, tet_f, min_area=0.5)
    with pytest.raises(ParameterError, match="min_area"):
        check_topology(tet_v, tet_f, min_area=float("nan"))


def test_storage_functions_keep_non_manifold_and_zero_area_faces():
    from twin.mesh import (
        decode,
        decode_meshopt,
        encode,
        encode_meshopt,
        measure_overdraw,
        optimize_overdraw,
    )

    def tris(f):
        return sorted(map(tuple, np.asarray(f).tolist()))

    f = NM_F.astype(np.uint32)
    # weld drops only the face with a repeated corner (documented), nothing else
    wv, wf = weld(NM_V, f)
    np.testing.assert_array_equal(wv, NM_V)
    assert tris(wf) == tris(np.delete(f, 5, axis=0))
    # reorderings keep every triangle, winding included
    assert tris(optimize_vertex_cache(f, len(NM_V))) == tris(f)
    assert tris(optimize_overdraw(NM_V, f)) == tris(f)
    fv, ff = optimize_vertex_fetch(NM_V, f)
    np.testing.assert_array_equal(fv[ff], NM_V[f])
    assert measure_overdraw(NM_V, f).covered > 0
    # both codecs return the same triangles (same corner positions, same order of
    # corners up to rotation)
    dv, df = decode(encode(NM_V, f))
    got = {tuple(np.round(dv[t], 3).ravel()) for t in df}
    want = {tuple(np.round(NM_V[t], 3).ravel()) for t in f}
    assert len(df) == len(f)
    rot = {
        tuple(np.roll(np.asarray(k).reshape(3, 3), r, axis=0).ravel())
        for k in got
        for r in (0, 1, 2)
    }
    assert want <= rot
    mv, mf = decode_meshopt(encode_meshopt(NM_V, f))
    assert len(mf) == len(f)
    got = {tuple(np.round(mv[t], 3).ravel()) for t in mf}
    rot = {
        tuple(np.roll(np.asarray(k).reshape(3, 3), r, axis=0).ravel())
        for k in got
        for r in (0, 1, 2)
    }
    assert want <= rot
