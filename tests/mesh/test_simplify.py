"""simplify(): kernel against the plain reference, geometry against ground truth."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.errors import InputError, ParameterError
from twin.mesh._reference import simplify_loop_ref
from twin.mesh._simplify_kernels import BORDER, INTERIOR, LOCKED, SEAM
from twin.mesh.simplify import simplify

# The module itself (the attribute twin.mesh.simplify is the function).
S = sys.modules["twin.mesh.simplify"]

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks._distance import surface_distance  # noqa: E402
from benchmarks._meshes import city_mesh  # noqa: E402


def rng(seed=0):
    return np.random.Generator(np.random.PCG64(seed))


def grid(nx=12, ny=9, spacing=1.0, height=None, x0=0.0, y0=0.0):
    """A regular grid over [x0, x0 + (nx-1) s] x [y0, ...], z = height(x, y)."""
    x, y = np.meshgrid(x0 + np.arange(nx) * spacing, y0 + np.arange(ny) * spacing)
    x, y = x.ravel(), y.ravel()
    z = np.zeros_like(x) if height is None else height(x, y)
    r, c = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    a = (r * nx + c).ravel()
    f = np.concatenate(
        [np.column_stack([a, a + 1, a + nx + 1]), np.column_stack([a, a + nx + 1, a + nx])]
    )
    return np.column_stack([x, y, z]), f.astype(np.uint32)


def hills(x, y):
    return 0.8 * np.sin(x / 3.0) * np.cos(y / 4.0) + 0.3 * np.sin(x / 1.7 + y / 2.3)


def bumpy_sphere(subdivisions=3):
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = s.vertices * (1.0 + 0.05 * np.sin(5.0 * s.vertices[:, 0]))[:, None]
    return v, s.faces.astype(np.uint32)


def normals(v, f):
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def assert_no_flips(v0, f0, v1, f1, min_dot=0.0):
    """Every output face normal agrees with the original surface normal at the
    closest original point to the output face's centroid."""
    original = trimesh.Trimesh(v0, f0, process=False)
    centroids = v1[f1].mean(axis=1)
    _, _, tri = trimesh.proximity.closest_point(original, centroids)
    dots = np.einsum("ij,ij->i", normals(v1, f1), normals(v0, f0)[tri])
    assert dots.min() > min_dot, f"flipped face: min normal dot {dots.min():.3f}"


def edge_use(f):
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return counts


def border_vertices(f):
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    u, counts = np.unique(e, axis=0, return_counts=True)
    return np.unique(u[counts == 1])


# ------------------------------------------------------------------ kernel vs reference


def _compare(v, f, target, attrs=None, weights=None, lock=False, max_e2=np.inf, parts=1):
    va, fa = S.check_mesh(v, f)
    p = S._prepare(va, fa, attrs, lock)
    w = np.ones(p.attrs.shape[1]) if weights is None else np.asarray(weights, float)
    pure = p.attrs.shape[1] == 0 or not np.any(w > 0)
    ref = simplify_loop_ref(
        p.V, p.F, p.N0, p.Q, p.kind, p.ib, p.partner, p.attrs, w, target, max_e2, pure, parts
    )
    log = np.zeros((len(f), 2), np.int32)
    falive, valive, e2, done, into = S.simplify_kernel(
        p.V, p.F, p.N0, p.Q, p.head, p.nxt, p.kind, p.ib, p.partner, p.attrs, w, target,
        max_e2, pure, log, parts,
    )  # fmt: skip
    assert done == len(ref[3]) > 0
    np.testing.assert_array_equal(log[:done], np.array(ref[3]))
    np.testing.assert_array_equal(falive, ref[0])
    np.testing.assert_array_equal(valive, ref[1])
    assert e2 == ref[2]
    np.testing.assert_array_equal(into, ref[4])
    return done


@pytest.mark.parametrize("parts", [1, 2])
def test_kernel_matches_reference_sphere(parts):
    v, f = bumpy_sphere(2)
    assert _compare(v, f, 40, parts=parts) > 100


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("size", [(10, 8), (30, 20)])
def test_kernel_matches_reference_open_terrain_with_error_stop(parts, size):
    v, f = grid(*size, height=hills)
    _compare(v, f, 0, max_e2=1e-3, parts=parts)


@pytest.mark.parametrize("parts", [1, 2])
def test_kernel_matches_reference_seams_and_attributes(parts):
    v, f, uv = seamed_cylinder(12, 6)
    _compare(v, f, 30, attrs=uv, weights=[0.5, 0.5], parts=parts)


def test_passes_keep_exact_keys_and_refusals_on_a_city():
    # each pass keeps the untouched candidates and re-ranks only edges at dirty
    # vertices: its list must be the one a full re-ranking gives (same keys, same
    # order), and every candidate still flagged as refused must still be refused
    K = sys.modules["twin.mesh._simplify_kernels"]
    v, f = city_mesh(12_000, seed=2)
    va, fa = S.check_mesh(v, f)
    p = S._prepare(va, fa, None, False)
    n, m = len(p.V), len(p.F)
    w = np.ones(0)
    falive, valive = np.ones(m, np.uint8), np.ones(n, np.uint8)
    mark, nbuf, emit = np.zeros(n, np.int32), np.empty(n, np.int32), np.zeros(n, np.uint8)
    into, plock = np.full(n, -1, np.int32), np.zeros(n, np.int32)
    args = (p.F, p.head, p.nxt, falive, valive, p.kind, mark)
    cap, stamp = 3 * m, 2
    euv, ek = np.empty(cap, np.uint64), np.empty(cap, np.uint32)
    suv, sk = np.empty(cap, np.uint64), np.empty(cap, np.uint32)
    state = np.array([m, 0, stamp, 0, 0, 0], np.int64)
    target, ncand, refused, tmp = m // 50, 0, 0, np.zeros(11)
    while state[0] > target:
        state[3] += 1
        if state[3] == 1:
            count, state[2] = K.collect_edges(*args, state[2], euv, suv, 2)
            K.rank_edges(p.V, p.F, p.Q, p.head, p.nxt, falive, p.kind, p.partner, p.attrs, w,
                         euv, ek, count)  # fmt: skip
            ncand = K.sort_candidates(ek, euv, count, sk, suv)
        else:
            ncand, state[2] = K.rerank(
                p.V, p.F, p.Q, p.head, p.nxt, falive, valive, p.kind, p.partner, p.attrs, w,
                plock, state[3] - 1, emit, mark, state[2], nbuf, euv, ek, sk, suv, ncand, 2,
            )  # fmt: skip
            # the full re-ranking on copies
            head, nxt, mk = p.head.copy(), p.nxt.copy(), np.zeros(n, np.int32)
            e2, k2, s2, u2 = (np.empty(cap, np.uint64), np.empty(cap, np.uint32),
                              np.empty(cap, np.uint64), np.empty(cap, np.uint32))  # fmt: skip
            c, _ = K.collect_edges(p.F, head, nxt, falive, valive, p.kind, mk, 2, e2, s2, 1)
            K.rank_edges(p.V, p.F, p.Q, head, nxt, falive, p.kind, p.partner, p.attrs, w,
                         e2, k2, c)  # fmt: skip
            nc = K.sort_candidates(k2, e2, c, u2, s2)
            assert nc == ncand
            np.testing.assert_array_equal(sk[:ncand] & K.KEY_BITS, u2[:nc])
            np.testing.assert_array_equal(suv[:ncand], s2[:nc])
            for i in np.flatnonzero(sk[:ncand] & K.REFUSED):
                u, vv = int(suv[i] >> 32), int(suv[i] & 0xFFFFFFFF)
                ok, _, _, x, y, z = K.plan(p.V, p.F, p.Q, p.head, p.nxt, falive, p.kind,
                                           p.partner, p.attrs, w, u, vv, tmp)  # fmt: skip
                moved = (x, y, z) != tuple(p.V[vv])
                state[2] += 2
                assert not K.collapse_ok(p.V, p.F, p.N0, p.head, p.nxt, falive, p.ib, mark,
                                         state[2], u, vv, x, y, z, True, moved)  # fmt: skip
                refused += 1
        done, _ = K.run_pass(
            p.V, p.F, p.N0, p.Q, p.head, p.nxt, falive, valive, p.kind, p.ib, p.partner,
            p.attrs, w, sk, suv, ncand, state, plock, into, mark, emit, target, np.inf, True,
            np.zeros((0, 2), np.int32), 2, np.zeros(n, np.uint8),
        )  # fmt: skip
        if done == 0:
            break
    assert state[3] > 5 and refused > 0


def test_pass_in_two_parts_collapses_each_half_then_the_seam_between():
    # one pass with parts=2: the first half's collapses (ends and their fans below
    # the split), then the second half's, then those at the seam between them
    K = sys.modules["twin.mesh._simplify_kernels"]
    v, f = grid(40, 30, height=hills)
    va, fa = S.check_mesh(v, f)
    p = S._prepare(va, fa, None, False)
    n, m = len(p.V), len(p.F)
    split = n // 2
    side = p.F >= split
    crossing = np.unique(p.F[side.min(axis=1) != side.max(axis=1)])
    w = np.ones(0)
    falive, valive = np.ones(m, np.uint8), np.ones(n, np.uint8)
    mark, emit = np.zeros(n, np.int32), np.zeros(n, np.uint8)
    into, plock = np.full(n, -1, np.int32), np.zeros(n, np.int32)
    euv, ek = np.empty(3 * m, np.uint64), np.empty(3 * m, np.uint32)
    suv, sk = np.empty(3 * m, np.uint64), np.empty(3 * m, np.uint32)
    count, stamp = K.collect_edges(p.F, p.head, p.nxt, falive, valive, p.kind, mark, 2, euv,
                                   suv, 2)  # fmt: skip
    K.rank_edges(p.V, p.F, p.Q, p.head, p.nxt, falive, p.kind, p.partner, p.attrs, w, euv, ek,
                 count)  # fmt: skip
    ncand = K.sort_candidates(ek, euv, count, sk, suv)
    state = np.array([m, 0, stamp, 1, 0, 0], np.int64)
    log = np.zeros((m, 2), np.int32)
    collapses, _ = K.run_pass(
        p.V, p.F, p.N0, p.Q, p.head, p.nxt, falive, valive, p.kind, p.ib, p.partner, p.attrs,
        w, sk, suv, ncand, state, plock, into, mark, emit, 0, np.inf, True, log, 2,
        np.zeros(n, np.uint8),
    )  # fmt: skip
    assert collapses == state[1] > 100
    group = []  # 0, 1: a half's own; 2: at the seam
    for u, t in log[:collapses]:
        at_seam = np.isin([u, t], crossing).any() or (u >= split) != (t >= split)
        group.append(2 if at_seam else int(u >= split))
    assert group == sorted(group) and set(group) == {0, 1, 2}
    # every collapse removed the faces on its edge (two, one on a border)
    assert falive.sum() == m - 2 * collapses + sum(
        1 for u, t in log[:collapses] if p.kind[u] == BORDER
    )


def test_two_part_passes_do_not_depend_on_the_thread_count():
    import numba

    v, f = city_mesh(80_000, seed=3)
    assert len(f) >= S.SERIAL_FACES
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simplify(v, f, target_faces=len(f) // 20)
        numba.set_num_threads(max(2, threads) if numba.config.NUMBA_NUM_THREADS > 1 else 1)
        two = simplify(v, f, target_faces=len(f) // 20)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one.faces, two.faces)
    np.testing.assert_array_equal(one.vertices, two.vertices)
    assert one.error == two.error


def test_parallel_keep_clean_equals_the_serial_one():
    K = sys.modules["twin.mesh._simplify_kernels"]
    g = rng(7)
    n, count = 5000, 3 * K.PARALLEL_SORT + 123
    u = g.integers(0, n, count).astype(np.uint64)
    v = g.integers(0, n, count).astype(np.uint64)
    suv = (u << np.uint64(32)) | v
    sk = g.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    plock = np.where(g.random(n) < 0.2, 5, 4).astype(np.int32)
    emit = (g.random(n) < 0.3).astype(np.uint8)
    a_k, a_uv = sk.copy(), suv.copy()
    b_k, b_uv = sk.copy(), suv.copy()
    na = K.keep_clean(a_k, a_uv, count, plock, 5, emit)
    nb = K.keep_clean_parallel(b_k, b_uv, count, plock, 5, emit, np.empty(count, np.uint32),
                               np.empty(count, np.uint64))  # fmt: skip
    assert na == nb and 0 < na < count
    np.testing.assert_array_equal(a_k[:na], b_k[:nb])
    np.testing.assert_array_equal(a_uv[:na], b_uv[:nb])


@pytest.mark.parametrize("lanes", [1, 2])
def test_edge_listing_matches_the_unique_edges_of_the_faces(lanes):
    # every live edge once, (a, b) order, LOCKED-LOCKED edges left out; a fan of 700
    # triangles puts 700 neighbours on one vertex (more than the usual buffer)
    K = sys.modules["twin.mesh._simplify_kernels"]
    g = rng(3)
    ring = 700
    t = np.linspace(0, 2 * np.pi, ring, endpoint=False)
    fan_v = np.c_[np.cos(t), np.sin(t), np.zeros(ring)]
    fan_f = np.c_[np.full(ring, ring), np.arange(ring), (np.arange(ring) + 1) % ring]
    v, f = grid(30, 20, height=hills)
    v = np.vstack([v, fan_v + [100, 0, 0], [[100, 0, 0]]])
    f = np.vstack([f, fan_f + len(v) - ring - 1])
    va, fa = S.check_mesh(v, f)
    p = S._prepare(va, fa, None, False)
    n, m = len(p.V), len(p.F)
    falive = (g.random(m) > 0.1).astype(np.uint8)  # dead faces are unlinked on the way
    kind = p.kind.copy()
    kind[g.random(n) < 0.3] = LOCKED
    euv, tmp = np.empty(3 * m, np.uint64), np.empty(3 * m, np.uint64)
    count, _ = K.collect_edges(p.F, p.head, p.nxt, falive, np.ones(n, np.uint8), kind,
                               np.zeros(n, np.int32), 2, euv, tmp, lanes)  # fmt: skip
    live = p.F[falive == 1].astype(np.int64)
    e = np.sort(np.vstack([live[:, [0, 1]], live[:, [1, 2]], live[:, [2, 0]]]), axis=1)
    e = np.unique(e, axis=0)
    e = e[(kind[e[:, 0]] != LOCKED) | (kind[e[:, 1]] != LOCKED)]
    want = (e[:, 0].astype(np.uint64) << np.uint64(32)) | e[:, 1].astype(np.uint64)
    assert np.bincount(p.F.ravel()).max() > K.EDGE_BUFFER
    np.testing.assert_array_equal(euv[:count], want)
    # the lists walked lost their dead corners and kept the live ones in order
    for a in range(n):
        c, seen = p.head[a], []
        while c != -1:
            seen.append(c)
            c = p.nxt[c]
        assert all(falive[x // 3] for x in seen) and seen == sorted(seen)


def test_morton_radix_order_and_position_groups():
    K = sys.modules["twin.mesh._simplify_kernels"]
    g = rng(4)
    code = g.integers(0, 2**63, 5000, dtype=np.uint64)
    code[::3] = code[1::3][: len(code[::3])]  # ties keep their input order
    np.testing.assert_array_equal(K.radix_argsort(code), np.argsort(code, kind="stable"))
    small = (code & np.uint64(0xFFF)).copy()  # most digits agree: skipped
    np.testing.assert_array_equal(K.radix_argsort(small), np.argsort(small, kind="stable"))
    # candidate sort (parallel slices above a size, serial below): stable by key
    # bits, uncollapsible edges (all bits set) left out
    for count in (1000, K.PARALLEL_SORT + 12345):
        keys = g.integers(0, 2**31, count, dtype=np.uint32) >> np.uint32(g.integers(0, 30))
        keys[g.random(count) < 0.1] = 0xFFFFFFFF
        keys[::7] = keys[3::7][: len(keys[::7])]
        uv = np.arange(count, dtype=np.uint64)
        sk, suv = np.empty(count, np.uint32), np.empty(count, np.uint64)
        k = K.sort_candidates(keys.copy(), uv.copy(), count, sk, suv)
        keep = np.flatnonzero(keys != 0xFFFFFFFF)
        ref = keep[np.argsort(keys[keep], kind="stable")]
        assert k == len(ref)
        np.testing.assert_array_equal(suv[:k], ref)
        np.testing.assert_array_equal(sk[:k], keys[ref])
    # positions with duplicates (and -0.0 == 0.0): same groups as an exact weld
    p = np.round(g.uniform(-1, 1, (3000, 3)), 1)
    p[p == 0.0] = -0.0
    p[::2] = np.abs(p[::2])
    order, codes = S._morton_order(p, codes=True)
    pid, ok = K.position_groups(p[order], codes)
    assert ok
    _, ref = np.unique(p[order] + 0.0, axis=0, return_inverse=True)
    ref = ref.ravel()
    # the same partition: pid and ref determine each other
    pairs = set(zip(pid.tolist(), ref.tolist(), strict=True))
    assert len(pairs) == len(set(pid.tolist())) == ref.max() + 1
    # many distinct points in one Morton cell: reported, the caller hashes instead
    tiny = np.vstack([np.zeros((1, 3)), 1e3 + g.uniform(0, 1e-9, (100, 3))])
    order, codes = S._morton_order(tiny, codes=True)
    assert not K.position_groups(tiny[order], codes)[1]
    # end to end: a finely sampled patch (one Morton cell) beside a far triangle
    v, f = grid(8, 8, spacing=1e-7, height=lambda x, y: 1e-9 * np.sin(x * 1e7))
    v = np.vstack([v, [[1e3, 0, 0], [1e3, 1, 0], [1e3, 0, 1]]])
    f = np.vstack([f, [[64, 65, 66]]]).astype(np.uint32)
    r = simplify(v, f, target_faces=20)
    assert len(r.faces) <= 20 and (r.remap >= 64).sum() == 3
    assert r.error < 1e-6


# ------------------------------------------------------------------ geometry


def test_sphere_to_10_percent_matches_analytic_sag_and_error():
    s = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces, unit sphere
    target = len(s.faces) // 10
    v, f, err = simplify(s.vertices, s.faces, target_faces=target)
    assert len(f) <= target and len(f) >= target - 2
    # a well-spread triangulation of M faces deviates from the sphere by about the
    # sag of an equilateral triangle of area 4 pi / M: r_c**2 / 2 = 8 pi / (3 sqrt(3) M)
    sag = 8 * np.pi / (3 * np.sqrt(3) * len(f))
    d = surface_distance(s.vertices, s.faces, v, f, 50_000)
    assert 0.8 * sag < d["hausdorff"] < 1.6 * sag, (d, sag)  # measured 1.28 x
    assert abs(err - d["hausdorff"]) < 0.25 * d["hausdorff"], (err, d)  # measured 0.6 %
    assert_no_flips(s.vertices, s.faces, v, f)
    assert edge_use(f).max() == 2 and edge_use(f).min() == 2  # still closed, manifold


def test_face_count_reaches_target_and_never_increases():
    v, f = bumpy_sphere(3)
    last = len(f)
    for frac in (0.5, 0.2, 0.05):
        target = int(len(f) * frac)
        v1, f1, e = simplify(v, f, target_faces=target)
        assert target - 2 <= len(f1) <= target
        assert len(f1) <= last
        last = len(f1)
    v1, f1, e = simplify(v, f, target_faces=len(f))
    assert len(f1) == len(f) and e == 0.0
    np.testing.assert_array_equal(v1, v)


def test_planar_grid_collapses_to_two_triangles_with_zero_error():
    v, f = grid(20, 15)
    v1, f1, err = simplify(v, f, target_error=1e-9)
    assert len(f1) == 2
    assert err < 1e-9
    assert sorted(map(tuple, v1[:, :2])) == [(0, 0), (0, 14), (19, 0), (19, 14)]
    assert_no_flips(v, f, v1, f1)


@pytest.mark.parametrize("two_parts", [False, True])
def test_target_error_stops_and_error_is_within_target(two_parts, monkeypatch):
    if two_parts:  # as meshes from SERIAL_FACES faces run: two parts per pass, threads
        monkeypatch.setattr(S, "SERIAL_FACES", 0)
    v, f = grid(30, 30, height=hills)
    prev = len(f)
    for tol in (0.001, 0.01, 0.05, 0.2):
        v1, f1, err = simplify(v, f, target_error=tol)
        assert err <= tol
        assert len(f1) <= prev
        prev = len(f1)
        d = surface_distance(v, f, v1, f1, 20_000)
        assert d["hausdorff"] < 2.5 * tol + 1e-6
    assert prev < len(f) / 10


@pytest.mark.parametrize("two_parts", [False, True])
def test_locked_borders_bit_identical_between_tiles(two_parts, monkeypatch):
    if two_parts:  # as meshes from SERIAL_FACES faces run: two parts per pass, threads
        monkeypatch.setattr(S, "SERIAL_FACES", 0)
    # two tiles of one terrain sharing the column x = 15
    va, fa = grid(16, 20, spacing=1.0, height=hills)
    vb, fb = grid(16, 20, spacing=1.0, height=hills, x0=15.0)
    ra = simplify(va, fa, target_faces=60, lock_border=True)
    rb = simplify(vb, fb, target_faces=60, lock_border=True)
    for (v0, f0), r in (((va, fa), ra), ((vb, fb), rb)):
        b = border_vertices(f0)
        assert np.isin(b, r.remap).all()  # no border vertex removed
        kept = np.isin(r.remap, b)
        np.testing.assert_array_equal(r.vertices[kept], v0[r.remap[kept]])  # bit-identical
        assert_no_flips(v0, f0, r.vertices, r.faces)
    shared_a = ra.vertices[np.isclose(ra.vertices[:, 0], 15.0)]
    shared_b = rb.vertices[np.isclose(rb.vertices[:, 0], 15.0)]
    assert len(shared_a) == 20
    np.testing.assert_array_equal(
        shared_a[np.argsort(shared_a[:, 1])], shared_b[np.argsort(shared_b[:, 1])]
    )
    # without the lock the shared edge is simplified too
    free = simplify(va, fa, target_faces=60)
    assert np.isclose(free.vertices[:, 0], 15.0).sum() < 20


@pytest.mark.parametrize("two_parts", [False, True])
def test_open_border_kept_in_place_without_lock(two_parts, monkeypatch):
    if two_parts:  # as meshes from SERIAL_FACES faces run: two parts per pass, threads
        monkeypatch.setattr(S, "SERIAL_FACES", 0)
    v, f = grid(25, 25, spacing=0.5, height=hills)
    v1, f1, _ = simplify(v, f, target_faces=len(f) // 20)
    b = v1[border_vertices(f1)]
    on_edge = (
        np.isclose(b[:, 0], 0) | np.isclose(b[:, 0], 12) | np.isclose(b[:, 1], 0)
    ) | np.isclose(b[:, 1], 12)
    assert on_edge.all()  # border vertices only slide along the border
    assert_no_flips(v, f, v1, f1)


def seamed_cylinder(nu=16, nv=8):
    """An open cylinder whose UV seam at angle 0 splits each vertex there in two
    (u = 0 and u = 1), as a UV unwrap does."""
    ang = 2 * np.pi * np.arange(nu + 1) / nu
    ang[-1] = 0.0  # the seam column: same position as column 0
    z = np.linspace(0.0, 3.0, nv)
    a, zz = np.meshgrid(ang, z)
    v = np.column_stack([np.cos(a.ravel()), np.sin(a.ravel()), zz.ravel()])
    u, w = np.meshgrid(np.arange(nu + 1) / nu, np.arange(nv) / (nv - 1))
    uv = np.column_stack([u.ravel(), w.ravel()])
    nx = nu + 1
    r, c = np.meshgrid(np.arange(nv - 1), np.arange(nu), indexing="ij")
    k = (r * nx + c).ravel()
    f = np.concatenate(
        [np.column_stack([k, k + 1, k + nx + 1]), np.column_stack([k, k + nx + 1, k + nx])]
    )
    return v, f.astype(np.uint32), uv


@pytest.mark.parametrize("two_parts", [False, True])
def test_uv_seam_vertices_stay_on_the_seam(two_parts, monkeypatch):
    if two_parts:  # as meshes from SERIAL_FACES faces run: two parts per pass, threads
        monkeypatch.setattr(S, "SERIAL_FACES", 0)
    v, f, uv = seamed_cylinder(32, 12)
    va, fa = S.check_mesh(v, f)
    kinds = S._prepare(va, fa, uv, False).kind[np.argsort(S._morton_order(va))]
    seam_in = np.flatnonzero(kinds == SEAM)
    assert len(seam_in) == 2 * 10  # both copies of the 10 inner seam vertices
    assert set(np.flatnonzero(kinds == BORDER)) | set(seam_in) | set(
        np.flatnonzero(kinds == INTERIOR)
    ) | set(np.flatnonzero(kinds == LOCKED)) == set(range(len(v)))
    r = simplify(v, f, target_faces=len(f) // 6, attributes=uv)
    assert len(r.faces) <= len(f) // 6 + 2
    from_seam = np.isin(r.remap, seam_in)
    assert from_seam.sum() >= 2
    # each surviving seam vertex: still on the seam line (angle 0) with its input
    # position and its own side's u, and its twin (same position, other u) survives
    pos = r.vertices[from_seam]
    np.testing.assert_array_equal(pos, v[r.remap[from_seam]])
    assert np.allclose(pos[:, 1], 0.0) and np.allclose(pos[:, 0], 1.0)
    us = r.attributes[from_seam, 0]
    assert set(np.round(us, 12)) <= {0.0, 1.0}
    for p in pos:
        same = np.flatnonzero((r.vertices == p).all(axis=1))
        assert sorted(r.attributes[same, 0]) == [0.0, 1.0]
    # no crack: welding by position leaves only the two rims as borders
    _, inv = np.unique(r.vertices, axis=0, return_inverse=True)
    bv = border_vertices(inv.reshape(-1)[r.faces.astype(np.int64)].reshape(-1, 3))
    welded = np.unique(r.vertices, axis=0)[bv]
    assert np.isin(np.round(welded[:, 2], 9), [0.0, 3.0]).all()
    assert_no_flips(v, f, r.vertices, r.faces)


def test_attributes_ride_along_interpolated():
    v, f = grid(12, 12, spacing=1.0, height=hills)
    colour = np.column_stack([v[:, 0] / 11, v[:, 1] / 11, np.zeros(len(v))])
    r = simplify(v, f, target_faces=40, attributes=colour, attribute_weights=0.0)
    # a colour that is linear in x, y stays (nearly) linear after interpolation
    assert r.attributes.shape == (len(r.vertices), 3)
    assert np.abs(r.attributes[:, 0] - r.vertices[:, 0] / 11).max() < 0.05
    plain = simplify(v, f, target_faces=40)
    np.testing.assert_array_equal(plain.faces, r.faces)  # weight 0: geometry only


def test_city_boxes_keep_shape():
    v, f = city_mesh(6000, seed=1)
    v1, f1, err = simplify(v, f, target_faces=len(f) // 5)
    assert len(f1) <= len(f) // 5
    d = surface_distance(v, f, v1, f1, 30_000)
    assert d["hausdorff"] < 0.05  # boxes and a gentle ground: nearly lossless
    assert err < 0.05
    assert edge_use(f1).max() <= 2
    assert_no_flips(v, f, v1, f1)


def test_returned_error_is_measured_when_the_city_ground_folds_away():
    # at 1 % the ground plane's border folds in: thousands of input vertices end
    # far from the faces around their output vertex, so the fan bounds are loose and
    # only the exact face-grid search gives the reached error
    v, f = city_mesh(60_000, seed=0)
    v1, f1, err = simplify(v, f, target_faces=len(f) // 100)
    d = surface_distance(v, f, v1, f1, 50_000)
    assert d["hausdorff"] > 1.0  # a real loss of geometry, metres
    assert abs(err - d["hausdorff"]) <= 0.25 * d["hausdorff"], (err, d)


# ------------------------------------------------------------------ bad input


def test_bad_input():
    v, f = grid(5, 5)
    with pytest.raises(InputError):
        simplify(np.zeros((0, 3)), f, target_faces=1)
    bad = v.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="row 3"):
        simplify(bad, f, target_faces=1)
    with pytest.raises(InputError, match="out of range"):
        simplify(v, f + 100, target_faces=1)
    for kw in (
        {"target_faces": -1},
        {"target_faces": 2.5},
        {"target_error": -0.1},
        {"target_error": float("nan")},
        {"target_error": "x"},
        {},
        {"target_faces": 4, "attribute_weights": [1.0]},
        {"target_faces": 4, "attributes": v[:, :2], "attribute_weights": [1, 2, 3]},
        {"target_faces": 4, "attributes": v[:, :2], "attribute_weights": [1, -2]},
    ):
        with pytest.raises(ParameterError):
            simplify(v, f, **kw)
    with pytest.raises(InputError, match="attributes"):
        simplify(v, f, target_faces=4, attributes=np.zeros((3, 2)))


def test_deterministic():
    v, f = bumpy_sphere(3)
    a = simplify(v, f, target_faces=300)
    b = simplify(v, f, target_faces=300)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[2] == b[2]


# ------------------------------------------------------------------ properties


@settings(max_examples=25, deadline=None)
@given(
    nx=st.integers(3, 14),
    ny=st.integers(3, 14),
    amp=st.floats(0.0, 0.2),
    seed=st.integers(0, 2**16),
    frac=st.floats(0.0, 1.0),
    lock=st.booleans(),
)
def test_property_random_terrains(nx, ny, amp, seed, frac, lock):
    g = rng(seed)
    v, f = grid(nx, ny, height=lambda x, y: amp * g.uniform(-1, 1, x.shape))
    v = v + np.column_stack([g.uniform(-0.2, 0.2, (len(v), 2)), np.zeros(len(v))])
    target = int(frac * len(f))
    r = simplify(v, f, target_faces=target, lock_border=lock)
    assert 0 < len(r.faces) <= len(f)
    assert np.isfinite(r.error) and r.error >= 0
    assert edge_use(r.faces).max() <= 2
    # no flips: each output face agrees with the original surface under its centroid
    assert_no_flips(v, f, r.vertices, r.faces)
    if lock:
        b = border_vertices(f)
        assert np.isin(b, r.remap).all()
        kept = np.isin(r.remap, b)
        np.testing.assert_array_equal(r.vertices[kept], v[r.remap[kept]])


# ------------------------------------------------------------------ measured error


def test_point_triangle_distance_matches_dense_sampling():
    from twin.mesh._simplify_kernels import point_triangle_dist2

    g = rng(5)
    s = np.linspace(0.0, 1.0, 201)
    a, b = np.meshgrid(s, s)
    keep = a + b <= 1.0
    a, b = a[keep], b[keep]
    for _ in range(30):
        tri = g.normal(size=(3, 3))
        p = g.normal(size=3) * 2.0
        pts = tri[0] + a[:, None] * (tri[1] - tri[0]) + b[:, None] * (tri[2] - tri[0])
        brute = np.sqrt(((pts - p) ** 2).sum(axis=1).min())
        exact = np.sqrt(point_triangle_dist2(*p, *tri.ravel()))
        assert exact <= brute + 1e-12
        assert brute - exact < 0.02 * np.abs(tri).max()  # the sampling step


def test_face_grid_search_matches_brute_force_on_a_flat_mesh():
    from twin.mesh._simplify_kernels import exact_max, face_grid, grid_dist, point_mesh_dist

    # a wide, nearly flat terrain: the grid gets a single layer of cells in z
    v, f = grid(40, 30, spacing=2.0, height=lambda x, y: 0.05 * np.sin(x / 7.0))
    f = f.astype(np.int32)
    alive = np.ones(len(f), np.uint8)
    alive[::7] = 0  # dead faces are not searched
    lo, h, dims, cstart, cfaces, overflow = face_grid(v, f, alive)
    assert dims[2] == 1 and dims[0] > 10
    g = rng(5)
    pts = np.column_stack(
        [g.uniform(-10, 90, 300), g.uniform(-10, 70, 300), g.normal(0.0, 3.0, 300)]
    )
    brute = np.array([point_mesh_dist(*p, v, f, alive) for p in pts])
    fast = np.array(
        [grid_dist(*p, v, f, lo, h, dims, cstart, cfaces, overflow, 1e9, -1.0) for p in pts]
    )
    np.testing.assert_allclose(fast, brute, rtol=0, atol=1e-12)
    # the maximum over points by decreasing (loose) bounds, exactly
    bounds = brute + g.uniform(0.0, 5.0, len(pts))
    order = np.argsort(bounds)[::-1].astype(np.int64)
    best, _ = exact_max(pts, order, bounds, v, f, alive, 0.0)
    assert best == pytest.approx(brute.max(), abs=1e-12)
    assert exact_max(pts, order, bounds, v, f, alive, 1e3)[0] == 1e3  # the floor


@pytest.mark.parametrize("frac", [0.1, 0.02])
def test_returned_error_matches_measured_hausdorff_on_terrain(frac):
    v, f = grid(60, 50, spacing=0.5, height=hills)
    v = v + rng(3).normal(0.0, 0.01, v.shape) * [0, 0, 1]
    target = int(len(f) * frac)
    v1, f1, err = simplify(v, f, target_faces=target)
    d = surface_distance(v, f, v1, f1, 100_000)
    assert abs(err - d["hausdorff"]) <= 0.25 * d["hausdorff"], (err, d)


def test_target_at_or_above_the_face_count_returns_the_mesh():
    """A target of M faces or more removes nothing (a LOD chain asking a small tile for
    more faces than it has): the same triangles come back, error 0."""
    v, f = grid(6, 5, height=hills)
    for target in (len(f), len(f) + 1, 10 * len(f)):
        out = simplify(v, f, target_faces=target)
        assert out.error == 0.0
        assert sorted(
            map(tuple, np.sort(out.vertices[out.faces].reshape(-1, 9), axis=1))
        ) == sorted(map(tuple, np.sort(v[f].reshape(-1, 9), axis=1)))


def test_attributes_come_back_in_their_own_form():
    """uint8 colours stay uint8 (interpolated values rounded), a 1-D array stays 1-D,
    a dict comes back as a dict with the same keys and shapes."""
    v, f = grid(12, 9, height=hills)
    n = len(v)
    uv = (v[:, :2] / v[:, :2].max()).astype(np.float32)
    rgba = np.tile(np.array([10, 200, 30, 255], np.uint8), (n, 1))
    fid = np.arange(n, dtype=np.int32) % 3
    plain = simplify(v, f, target_faces=len(f) // 4, attributes=uv)
    assert plain.attributes.dtype == np.float32 and plain.attributes.shape == (
        len(plain.vertices),
        2,
    )
    one = simplify(v, f, target_faces=len(f) // 4, attributes=v[:, 0])
    assert one.attributes.shape == (len(one.vertices),)
    both = simplify(
        v, f, target_faces=len(f) // 4, attributes={"uv": uv, "color": rgba, "fid": fid}
    )
    a = both.attributes
    assert set(a) == {"uv", "color", "fid"}
    assert a["color"].dtype == np.uint8 and a["color"].shape == (len(both.vertices), 4)
    np.testing.assert_array_equal(a["color"], np.broadcast_to(rgba[0], a["color"].shape))
    assert a["fid"].dtype == np.int32 and a["fid"].ndim == 1
    assert a["uv"].dtype == np.float32
