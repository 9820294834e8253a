"""The encode's compiled generator products, ``codedml.codes._kernels.lincomb``.

Output row ``o`` is ``sum_j G[o, j] * srcs[j]`` in double, rounded once into the
destination; what lies beyond a source's rows and columns reads as zero; with ``pairs`` the
outputs are complex (rows ``2o``, ``2o + 1``: real and imaginary parts, interleaved); ``sq``
gets each output's sum of squared magnitudes. Checked against numpy in float64 for every
instruction set this CPU has (plain C, AVX2/FMA, AVX-512F), through the cache and streamed,
for any destination alignment and row stride, destinations side by side in one matrix, odd
row counts, zero coefficients, NaN/Inf; bad arguments refused by name. Where the module was
not built these tests skip (``REQUIRE_CODEDML_KERNELS=1`` in CI makes that a failure in
``test_kernels.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import _encode

K = _encode._K
needs_kernels = pytest.mark.skipif(K is None, reason="codedml.codes._kernels not built (no C compiler at install)")
LEVELS = list(range(0, (getattr(K, "SIMD", 0) if K is not None else 0) + 1))
EPS = {np.float64: np.finfo(np.float64).eps, np.float32: np.finfo(np.float32).eps}


def _padded(srcs, R, C):
    """The sources zero-padded to R x C, in float64 (the kernel's view of them)."""
    X = np.zeros((len(srcs), R, C))
    for j, s in enumerate(srcs):
        s2 = s.reshape(1, -1) if s.ndim == 1 else s
        X[j, :s2.shape[0], :s2.shape[1]] = s2
    return X


def _check(G, X, got, dtype, pairs, sq, sq_before):
    """``got`` (outputs as computed, complex where ``pairs``) against G X in float64, to the
    rounding of a k-term sum, then of the cast; ``sq`` to 1e-12 of the double values'."""
    ref = np.tensordot(G, X, 1)
    bound = np.tensordot(np.abs(G), np.abs(X), 1) * (X.shape[0] + 2) * EPS[np.float64]
    if pairs:
        ref_c = ref[0::2] + 1j * ref[1::2]
        parts = [(got.real, ref[0::2], bound[0::2]), (got.imag, ref[1::2], bound[1::2])]
        want_sq = (np.abs(ref_c) ** 2).reshape(len(ref_c), -1).sum(axis=1)
    else:
        parts = [(got, ref, bound)]
        want_sq = (ref ** 2).reshape(len(ref), -1).sum(axis=1)
    for g, r, b in parts:
        tol = b + (EPS[np.float32] * np.abs(r) if dtype == np.float32 else 0.0)
        assert np.all(np.abs(g.astype(np.float64) - r) <= tol), float(np.max(np.abs(g - r) - tol))
    if sq is not None:
        # what the kernel adds, to 1e-12, past the rounding of adding it to what sq held
        # (a sum near 1e-5 added to an entry near 1.5 keeps about 1e-11 of itself)
        held = 2 * EPS[np.float64] * (np.abs(sq) + np.abs(sq_before))
        assert np.all(np.abs((sq - sq_before) - want_sq) <= 1e-12 * want_sq + held + 1e-300), \
            (sq - sq_before, want_sq)


@needs_kernels
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nout=st.integers(1, 9), k=st.integers(0, 7), R=st.integers(1, 4), C=st.integers(0, 70),
       dtype=st.sampled_from([np.float64, np.float32]), pairs=st.booleans(),
       simd=st.sampled_from(LEVELS), stream=st.booleans(), off=st.integers(0, 3),
       row_pad=st.integers(0, 5), zero_rows=st.booleans(), unit_rows=st.booleans(),
       with_sq=st.booleans(), data=st.data())
def test_lincomb_is_the_float64_product_rounded_once(nout, k, R, C, dtype, pairs, simd, stream,
                                                     off, row_pad, zero_rows, unit_rows, with_sq,
                                                     data):
    """Any shape (tiles cut at every width, rows of one output per pass or four), sources
    short of the outputs in rows and columns (padding reads as zero) and of either dtype,
    destinations at any element offset (streamed stores only where aligned) and row stride;
    the memory around each destination untouched."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    m = 2 * nout if pairs else nout
    G = rng.standard_normal((m, k))
    if zero_rows and k:                    # rows with few coefficients (systematic rows)
        G[rng.random((m, k)) < 0.6] = 0.0
    if unit_rows and k:                    # identity rows (written as their source is loaded
        for h in range(0, m, 2):           # where its dtype is the outputs'), some twice
            G[h] = 0.0
            G[h, rng.integers(k)] = 1.0
    srcs = []
    for _ in range(k):
        r = data.draw(st.integers(0, R))
        c = data.draw(st.integers(0, C))
        sdt = data.draw(st.sampled_from([np.float64, np.float32]))
        srcs.append(rng.standard_normal((r, c)).astype(sdt))
    width = (2 * C if pairs else C)
    stride = width + row_pad
    big = [rng.standard_normal(off + R * stride + 8).astype(dtype) for _ in range(nout)]
    before = [b.copy() for b in big]
    dsts = [np.lib.stride_tricks.as_strided(b[off:], shape=(R, width),
                                            strides=(stride * b.itemsize, b.itemsize))
            for b in big]
    sq = rng.standard_normal(nout) if with_sq else None
    sq0 = None if sq is None else sq.copy()
    K.lincomb(G, srcs, dsts, sq, stream, pairs, simd)
    got = np.array([np.array(d) for d in dsts])
    if pairs:
        got = got[..., 0::2] + 1j * got[..., 1::2]
    _check(G, _padded(srcs, R, C), got, dtype, pairs, sq, sq0)
    for b, b0, d in zip(big, before, dsts):   # nothing written outside the outputs
        mask = np.ones(b.size, bool)
        for r in range(R):
            mask[off + r * stride: off + r * stride + width] = False
        np.testing.assert_array_equal(b[mask], b0[mask])


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cols", [16, 333, 2048])
def test_lincomb_matrix_form_equals_the_list_form(simd, pairs, dtype, cols):
    """One 2-D array whose rows are the sources, one whose rows are the outputs (a chunk of
    a systematic encode's matrices): the same values as a list of rows, streamed or not."""
    rng = np.random.default_rng(cols)
    nout, k = 5, 6
    m = 2 * nout if pairs else nout
    G = rng.standard_normal((m, k))
    S = rng.standard_normal((k, cols)).astype(dtype)
    w = 2 * cols if pairs else cols
    D1, D2 = np.empty((nout, w), dtype), np.empty((nout, w), dtype)
    q1, q2 = np.zeros(nout), np.zeros(nout)
    K.lincomb(G, S, D1, q1, True, pairs, simd)
    K.lincomb(G, [S[j:j + 1] for j in range(k)], [D2[o:o + 1] for o in range(nout)], q2, False,
              pairs, simd)
    np.testing.assert_array_equal(D1, D2)
    np.testing.assert_allclose(q1, q2, rtol=1e-13)
    got = D1[:, 0::2] + 1j * D1[:, 1::2] if pairs else D1
    _check(G, S.astype(np.float64)[:, None, :], got[:, None, :], dtype, pairs, q1, 0.0)


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lincomb_dense_passes_across_many_tiles(simd, dtype):
    """Several dense passes over the small tile, with many tiles of columns and rows, and
    sources short of the outputs in both: where each pass also asks for the next tile's
    rows (prefetch, a tile ahead across columns and into the next row), the products,
    their norms and the memory around them are as everywhere else."""
    rng = np.random.default_rng(11)
    k, m, R, C = 7, 9, 3, 5000                   # W is 585 for 7 sources: 9 tiles a row
    G = rng.standard_normal((m, k))
    srcs = [rng.standard_normal((R - (j % 2), C - 37 * j)).astype(dtype) for j in range(k)]
    big = rng.standard_normal((m, R * (C + 3) + 8)).astype(dtype)
    before = big.copy()
    dsts = [np.lib.stride_tricks.as_strided(big[o, 1:], shape=(R, C),
                                            strides=((C + 3) * big.itemsize, big.itemsize))
            for o in range(m)]
    sq = np.zeros(m)
    K.lincomb(G, srcs, dsts, sq, True, False, simd)
    got = np.array([np.array(d) for d in dsts])
    _check(G, _padded(srcs, R, C), got, dtype, False, sq, np.zeros(m))
    mask = np.ones(big.shape[1], bool)
    for r in range(R):
        mask[1 + r * (C + 3): 1 + r * (C + 3) + C] = False
    np.testing.assert_array_equal(big[:, mask], before[:, mask])


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
def test_lincomb_simd_levels_agree_to_the_rounding(simd):
    """Every instruction set gives the same products to the rounding of the sum (fused
    multiply-adds round once per term, plain C twice)."""
    rng = np.random.default_rng(7)
    G = rng.standard_normal((17, 15))
    S = rng.standard_normal((15, 1000))
    D, D0 = np.empty((17, 1000)), np.empty((17, 1000))
    K.lincomb(G, S, D, simd=simd)
    K.lincomb(G, S, D0, simd=0)
    np.testing.assert_allclose(D, D0, rtol=0, atol=1e-13 * np.abs(G) .sum(1).max() * np.abs(S).max())


@needs_kernels
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(5, 34), k=st.integers(1, 24), C=st.sampled_from([1, 15, 16, 17, 100, 1000]),
       dtype=st.sampled_from([np.float64, np.float32]), gf=st.booleans(), data=st.data())
def test_lincomb_rows_are_bit_for_bit_their_own_whatever_the_pass(m, k, C, dtype, gf, data):
    """A row without zero coefficients does not depend on the rows it shares a pass with (on
    AVX-512 up to eight dense rows a pass where there are 16 sources or more, or 8 or more
    and 24 rows or more, padded with zero rows; four elsewhere; a zero coefficient adds 0 x
    for a source another row of its
    pass uses, which only -0.0 and Inf can tell): every row of a dense
    generator is, bit for bit, that row computed alone, at every SIMD level, for float64 and
    float32 outputs and over GF(p); its sum of squares to the rounding (summed per tile, and
    the tile's width follows the number of passes)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    simd = data.draw(st.sampled_from(LEVELS))
    if gf:
        p = 65537
        G = rng.integers(1, p, (m, k)).astype(np.float64)
        S = rng.integers(0, p, (k, C))
        D = np.empty((m, C), np.int64)
        K.lincomb(G, S, D, None, False, False, simd, p)
        for h in range(m):
            one = np.empty((1, C), np.int64)
            K.lincomb(G[h:h + 1].copy(), S, one, None, False, False, simd, p)
            assert one.tobytes() == D[h:h + 1].tobytes(), h
        return
    G = rng.standard_normal((m, k))
    S = rng.standard_normal((k, C))
    D = np.empty((m, C), dtype)
    sq = np.zeros(m)
    K.lincomb(G, S, D, sq, False, False, simd)
    for h in range(m):
        one, sq1 = np.empty((1, C), dtype), np.zeros(1)
        K.lincomb(G[h:h + 1].copy(), S, one, sq1, False, False, simd)
        assert _bits(one).tobytes() == _bits(D[h:h + 1]).tobytes(), h
        assert abs(sq1[0] - sq[h]) <= 1e-13 * sq[h], h


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("pairs", [False, True])
def test_lincomb_nan_reaches_every_output_with_a_coefficient_for_it(simd, bad, pairs):
    """A NaN or Inf in a source makes every output whose coefficient for it is nonzero
    non-finite, and its sum of squares (the encode's finiteness check reads the norms);
    outputs with a zero coefficient for it may skip it (it is skipped by the passes none of
    whose rows has a coefficient for it: four rows a pass, eight dense rows on AVX-512 with
    16 sources or more, as here)."""
    rng = np.random.default_rng(3)
    width = 8 if simd == 2 else 4           # rows a dense pass takes at this level
    nout, k, C = 2 * width // (2 if pairs else 1) + 2, 16, 50
    m = 2 * nout if pairs else nout
    G = rng.standard_normal((m, k))
    G[:, 2] = 0.0
    G[1, 2] = 0.5                           # one row uses source 2
    S = rng.standard_normal((k, C))
    S[2, 17] = bad
    D = np.empty((nout, 2 * C if pairs else C))
    sq = np.zeros(nout)
    K.lincomb(G, S, D, sq, False, pairs, simd)
    hit = 0 if pairs else 1
    assert not np.isfinite(sq[hit])
    assert not np.isfinite(D[hit]).all()
    # rows computed in another pass than the one using source 2 never read it
    first = width // 2 if pairs else width
    assert np.isfinite(sq[first:]).all() and np.isfinite(D[first:]).all()


def _bits(x):
    return np.ascontiguousarray(x).view(np.int64 if x.dtype == np.float64 else np.int32)


@needs_kernels
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 9), nr=st.integers(1, 4), R=st.integers(1, 3),
       C=st.sampled_from([1, 7, 16, 33, 100, 4095, 8193, 9000, 20000, 33000]),
       dtype=st.sampled_from([np.float64, np.float32]), simd=st.sampled_from(LEVELS[1:] or [0]),
       stream=st.booleans(), where=st.integers(0, 9), special=st.booleans(), data=st.data())
def test_lincomb_accumulating_walk_is_the_pass_bit_for_bit(k, nr, R, C, dtype, simd, stream,
                                                           where, special, data):
    """A systematic generator (an identity row for every source, one dense pass of 1-4 parity
    rows, anywhere among them) takes the accumulating walk on AVX-512 (the sources in long
    runs, the parity sums kept in cache; the tile walk on AVX2): its parity rows are, bit
    for bit, what the same rows compute alone (the pass over the sources, no identity rows),
    its identity rows the sources as they are (-0.0 included), zeros where a source is cut
    short or absent, across tiles (C past the walk's 8192-32768 columns), with NaN, Inf and
    -0.0 among the values; the sums of squares as the reference's (the next test: sums that
    come out -0.0, and an infinite coefficient past a source's end)."""
    if not LEVELS[1:]:
        pytest.skip("no SIMD level on this CPU: the pass's fused multiply-adds need AVX2 or "
                    "AVX-512F (plain C rounds each product)")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    P = rng.standard_normal((nr, k))
    for row in P:   # some sources absent from some parity rows, each row dense (more than
        # half the sources: a sparser row would run in one pass with identity rows)
        row[rng.permutation(k)[:(k - 1) // 2]] *= rng.random((k - 1) // 2) < 0.5
    at = min(where, k)                            # the parity rows' place among the others
    G = np.concatenate([np.eye(k)[:at], P, np.eye(k)[at:]])
    srcs = []
    for _ in range(k):
        r = data.draw(st.integers(0, R))          # cut short in rows (0: absent) ...
        c = data.draw(st.sampled_from([C, C, max(0, C - data.draw(st.integers(0, 40))), 0,
                                       data.draw(st.integers(0, C))]))   # (ending in any tile)
        x = rng.standard_normal((r, c)).astype(dtype)
        if special and x.size:
            flat = x.reshape(-1)
            flat[rng.integers(flat.size, size=3)] = rng.choice([np.nan, np.inf, -np.inf, -0.0], 3)
        srcs.append(x)
    dsts = [np.full((R, C), 7.0, dtype) for _ in range(G.shape[0])]
    sq = np.zeros(G.shape[0])
    K.lincomb(G, srcs, dsts, sq, stream, False, simd)
    alone = [np.full((R, C), 7.0, dtype) for _ in range(nr)]
    K.lincomb(np.ascontiguousarray(P), srcs, alone, None, stream, False, simd)
    X = _padded(srcs, R, C).astype(dtype)
    rows = list(range(at)) + list(range(at + nr, k + nr))
    for j, h in enumerate(rows):
        np.testing.assert_array_equal(_bits(dsts[h]), _bits(X[j]))
    for i in range(nr):
        np.testing.assert_array_equal(_bits(dsts[at + i]), _bits(alone[i]))
    if not special:
        _check(G, _padded(srcs, R, C), np.array(dsts), dtype, False, sq, np.zeros(G.shape[0]))


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("case", ["underflow float64", "underflow float32", "inf coefficient",
                                  "inf coefficient, 10 columns"])
def test_lincomb_systematic_rows_keep_the_pass_signed_zeros_and_nans(simd, case):
    """Sums the accumulating walk must store as the pass does: a parity entry that underflows
    to -0.0 stays -0.0 (its store does no arithmetic); a source cut short within the tile
    adds the pass's zero terms past its end (an infinite coefficient's NaN there), and every
    source its zero terms up to the tile's last register step, whose squares the pass sums
    (10 columns of 16: an infinite coefficient's NaN in the sum of squares)."""
    eye = np.eye(2)
    if case == "underflow float64":
        G = np.vstack([eye, [[-1e-200, 1.0]]])
        S = [np.full((1, 16), 1e-200), np.full((1, 16), -0.0)]
        dt = np.float64
    elif case == "underflow float32":
        G = np.vstack([eye, [[-1e-300, 1.0]]])
        S = [np.full((1, 16), 1e-30, np.float32), np.full((1, 16), -0.0, np.float32)]
        dt = np.float32
    elif case == "inf coefficient":
        G = np.vstack([eye, [[np.inf, 1.0]]])
        S = [np.ones((1, 10)), np.ones((1, 16))]
        dt = np.float64
    else:
        G = np.vstack([eye, [[np.inf, 1.0]]])
        S = [np.ones((1, 10)), np.ones((1, 10))]
        dt = np.float64
    C = S[1].shape[1]
    out = [np.full((1, C), 7.0, dt) for _ in range(3)]
    alone = [np.full((1, C), 7.0, dt)]
    sq, sq_alone = np.zeros(3), np.zeros(1)
    K.lincomb(G, S, out, sq, False, False, simd)
    K.lincomb(np.ascontiguousarray(G[2:]), S, alone, sq_alone, False, False, simd)
    np.testing.assert_array_equal(_bits(out[2]), _bits(alone[0]))
    np.testing.assert_array_equal(_bits(sq[2:]), _bits(sq_alone))
    if case == "inf coefficient, 10 columns":   # (plain C sums the squares of w columns)
        assert (out[2] == np.inf).all() and np.isnan(sq[2]) == bool(simd)
    elif case == "inf coefficient":
        assert np.isnan(out[2][0, 10:]).all() and (out[2][0, :10] == np.inf).all()
    elif simd:   # (a fused multiply-add from +0 rounds the tiny product to -0.0; plain C's
        # separate product and sum give +0.0, its rows alone too)
        assert (out[2] == 0).all() and np.signbit(out[2]).all()


@needs_kernels
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 9), nr=st.integers(1, 4), R=st.integers(1, 2),
       C=st.sampled_from([1, 9, 100, 8193, 20000]), p=st.sampled_from([2, 65537, 2 ** 21 - 9]),
       simd=st.sampled_from(LEVELS), stream=st.booleans(), where=st.integers(0, 9),
       data=st.data())
def test_lincomb_over_gfp_systematic_rows_are_exact(k, nr, R, C, p, simd, stream, where, data):
    """A systematic generator over GF(p) (an identity row for every source, one pass of 1-4
    parity rows among them; the accumulating walk on AVX-512): the parity rows are the exact
    products mod p and bit for bit what the rows compute alone, the identity rows the
    residues as they are, zeros where a source is cut short or absent, across tiles; the
    largest residue is returned."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    P = rng.integers(0, p, (nr, k)).astype(np.float64)
    P[:, 0] = p - 1
    at = min(where, k)
    G = np.concatenate([np.eye(k)[:at], P, np.eye(k)[at:]])
    srcs = [rng.integers(0, p, (data.draw(st.integers(0, R)),
                                data.draw(st.sampled_from([C, max(0, C - 5), 0]))))
            for _ in range(k)]
    dsts = [np.full((R, C), -7, np.int64) for _ in range(G.shape[0])]
    umax = K.lincomb(G, srcs, dsts, None, stream, False, simd, p)
    alone = [np.full((R, C), -7, np.int64) for _ in range(nr)]
    K.lincomb(np.ascontiguousarray(P), srcs, alone, None, stream, False, simd, p)
    X = np.zeros((k, R, C), np.int64)
    for j, s in enumerate(srcs):
        X[j, :s.shape[0], :s.shape[1]] = s
    want = np.tensordot(P.astype(np.int64), X, 1) % p
    rows = list(range(at)) + list(range(at + nr, k + nr))
    for j, h in enumerate(rows):
        np.testing.assert_array_equal(dsts[h], X[j])
    for i in range(nr):
        np.testing.assert_array_equal(dsts[at + i], want[i])
        np.testing.assert_array_equal(dsts[at + i], alone[i])
    assert umax == max([int(s.max()) for s in srcs if s.size] + [0])


@needs_kernels
def test_lincomb_writes_destinations_side_by_side_in_one_matrix():
    """Two outputs as column halves of one matrix (rows interleaved in memory, apart modulo
    the stride: PolyDot's B tasks) are accepted; overlapping halves are refused."""
    rng = np.random.default_rng(1)
    T = np.zeros((7, 20))
    G = rng.standard_normal((2, 3))
    S = [rng.standard_normal((7, 10)) for _ in range(3)]
    K.lincomb(G, S, [T[:, :10], T[:, 10:]])
    X = np.array(S)
    np.testing.assert_allclose(T[:, :10], np.tensordot(G[0], X, 1), rtol=1e-13)
    np.testing.assert_allclose(T[:, 10:], np.tensordot(G[1], X, 1), rtol=1e-13)
    with pytest.raises(ValueError, match=r"`dsts\[0\]` and `dsts\[1\]` overlap"):
        K.lincomb(G, S, [T[:, :10], T[:, 9:19]])


def _ok():
    return np.ones((2, 3)), [np.ones((4, 5))] * 3, [np.empty((4, 5)), np.empty((4, 5))]


@needs_kernels
@pytest.mark.parametrize("change, exc, match", [
    (lambda G, s, d: (G.astype(np.float32), s, d), TypeError, r"`G` must be a C-contiguous 2-D float64"),
    (lambda G, s, d: (np.ones((2, 4))[:, :3], s, d), TypeError, r"`G` must be a C-contiguous 2-D float64"),
    (lambda G, s, d: (G[:, :2].copy(), s, d), ValueError, r"`G` has 2 columns for 3 sources"),
    (lambda G, s, d: (np.ones((3, 3)), s, d), ValueError, r"`G` has 3 rows for 2 outputs"),
    (lambda G, s, d: (G, s[:2] + [np.ones((5, 5))], d), ValueError, r"`srcs\[2\]` is 5 x 5, larger than the outputs' 4 x 5"),
    (lambda G, s, d: (G, s[:2] + [np.ones((4, 5), np.int64)], d), TypeError, r"`srcs\[2\]` must be float64 or float32"),
    (lambda G, s, d: (G, s, [d[0], np.empty((4, 5), np.float32)]), TypeError, r"`dsts\[1\]` is not of `dsts\[0\]`'s dtype"),
    (lambda G, s, d: (G, s, [d[0], np.empty((3, 5))]), ValueError, r"`dsts\[1\]` is 3 x 5, `dsts\[0\]` 4 x 5"),
    (lambda G, s, d: (G, s, [np.empty((4, 5), np.int64)] * 2), TypeError, r"`dsts` must be float64 or float32"),
    (lambda G, s, d: (G, s, [d[0], d[0]]), ValueError, r"`dsts\[0\]` and `dsts\[1\]` overlap in memory"),
    (lambda G, s, d: (G, s[:2] + [d[1]], d), ValueError, r"`dsts\[1\]` and `srcs\[2\]` overlap in memory"),
    (lambda G, s, d: (G, s, [d[0], np.empty((4, 10))[:, ::2]]), ValueError, r"lincomb: the rows of `dsts\[1\]` must be contiguous"),
    (lambda G, s, d: (G, s[:2] + [np.ones((4, 10))[:, ::2]], d), ValueError, r"lincomb: the rows of `srcs\[2\]` must be contiguous"),
    (lambda G, s, d: (G, s[:2] + [np.ones((1, 4, 5))], d), ValueError, r"lincomb: `srcs\[2\]` must be 1-D or 2-D, got 3-D"),
])
def test_lincomb_refuses_bad_arguments_by_name(change, exc, match):
    G, s, d = change(*_ok())
    with pytest.raises(exc, match=match):
        K.lincomb(G, s, d)


@needs_kernels
def test_lincomb_refuses_a_bad_sq_and_odd_pairs_by_name():
    G, s, d = _ok()
    with pytest.raises(ValueError, match=r"`sq` must be a contiguous 1-D float64 array of 2 entries"):
        K.lincomb(G, s, d, np.zeros(3))
    with pytest.raises(ValueError, match=r"`dsts\[0\]` and `sq` overlap in memory"):
        K.lincomb(G, s, d, d[0][0, :2])
    with pytest.raises(ValueError, match=r"with `pairs` the outputs' rows must hold interleaved complex values"):
        K.lincomb(np.ones((4, 3)), s, d, None, False, True)


@needs_kernels
def test_simd_level_matches_the_cpu_flags():
    """``SIMD`` (2 AVX-512F, 1 AVX2 and FMA, 0 neither) is what /proc/cpuinfo lists, where
    Linux on x86-64 has it: the encode uses the kernel exactly where it runs fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags line (not Linux on x86)")
    want = 2 if "avx512f" in flags else 1 if {"avx2", "fma"} <= set(flags) else 0
    assert K.SIMD == want
    assert _encode._lincomb_ok() == (want >= 1)


GF_PRIMES = [2, 65537, 1048573]   # 1048573 = 2**20 - 3


@needs_kernels
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 9), k=st.integers(0, 7), R=st.integers(1, 4), C=st.integers(0, 60),
       p=st.sampled_from(GF_PRIMES), simd=st.sampled_from(LEVELS), stream=st.booleans(),
       off=st.integers(0, 3), data=st.data())
def test_lincomb_over_gfp_is_the_exact_product_mod_p(m, k, R, C, p, simd, stream, off, data):
    """With ``p``: int64 residues, integer coefficients in [0, p), the exact sums reduced mod
    p into int64 outputs (every instruction set, any offset, sources short of the outputs),
    and the largest residue read is returned (the range check)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    G = rng.integers(0, p, (m, k)).astype(np.float64)
    if k:
        G[:, 0] = p - 1                    # the largest coefficient in every row
    srcs = [rng.integers(0, p, (data.draw(st.integers(0, R)), data.draw(st.integers(0, C))))
            for _ in range(k)]
    if srcs and srcs[0].size:
        srcs[0].flat[0] = p - 1            # and the largest residue
    big = [np.full(off + R * C + 4, -7, np.int64) for _ in range(m)]
    dsts = [b[off:off + R * C].reshape(R, C) for b in big]
    umax = K.lincomb(G, srcs, dsts, None, stream, False, simd, p)
    X = np.zeros((k, R, C), np.int64)
    for j, s in enumerate(srcs):
        X[j, :s.shape[0], :s.shape[1]] = s
    want = np.tensordot(G.astype(np.int64), X, 1) % p        # below 2**63: exact
    np.testing.assert_array_equal(np.array(dsts).reshape(want.shape), want)
    assert umax == max([int(s.max()) for s in srcs if s.size] + [0])
    for b in big:                          # nothing written outside the outputs
        assert (b[:off] == -7).all() and (b[off + R * C:] == -7).all()


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("bad", [-1, 65537, 2 ** 40, 2 ** 52, 2 ** 62, -2 ** 63])
@pytest.mark.parametrize("where", [0, 5, 22])
@pytest.mark.parametrize("systematic", [False, True, "with parity rows"])
def test_lincomb_over_gfp_reports_any_value_out_of_the_field(simd, bad, where, systematic):
    """A residue out of [0, p) anywhere makes the returned maximum p or more (negative ones,
    and any at or past 2**52, the largest uint64): the encode's range check refuses it. Also
    where the source feeds identity rows only (``systematic``: copied as it is loaded), and
    identity rows with parity rows (the accumulating walk on AVX-512)."""
    p = 65537
    S = np.random.default_rng(1).integers(0, p, (3, 23))
    S[1, where] = bad
    G = {False: np.ones((2, 3)), True: np.eye(3),
         "with parity rows": np.concatenate([np.eye(3), np.full((2, 3), 5.0)])}[systematic]
    umax = K.lincomb(G, S, np.empty((len(G), 23), np.int64), simd=simd, p=p)
    assert umax >= p
    if bad < 0 or bad >= 2 ** 52:
        assert umax == 2 ** 64 - 1


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("bad", [-1, 65537, 2 ** 52])
@pytest.mark.parametrize("n", [1, 7, 10])
def test_lincomb_over_gfp_checks_an_identity_source_cut_short_within_a_tile(simd, bad, n):
    """An identity row whose source ends inside the tile (``n`` of 23 columns) is copied as
    far as the source goes, its range checked there (a bad value at the source's last index
    is reported), and zeroed after."""
    p = 65537
    rng = np.random.default_rng(n)
    src = rng.integers(0, p, (1, n))
    S = [src, rng.integers(0, p, (1, 23))]
    G = np.eye(2)
    out = np.full((2, 23), -7, np.int64)
    assert K.lincomb(G, S, out, simd=simd, p=p) < p
    np.testing.assert_array_equal(out[0], np.concatenate([src[0], np.zeros(23 - n, np.int64)]))
    np.testing.assert_array_equal(out[1], S[1][0])
    src[0, n - 1] = bad
    assert K.lincomb(G, S, out, simd=simd, p=p) >= p


@needs_kernels
@pytest.mark.parametrize("G, srcs, dsts, kw, exc, match", [
    (np.full((1, 1), 0.5), [np.ones((1, 4), np.int64)], [np.empty((1, 4), np.int64)], {}, ValueError,
     r"`G` must hold integers in \[0, p\) with `p`; entry 0"),
    (np.full((1, 1), 7.0), [np.ones((1, 4), np.int64)], [np.empty((1, 4), np.int64)], {}, ValueError,
     r"`G` must hold integers in \[0, p\)"),
    (np.ones((1, 3)), [np.ones((1, 4), np.int64)] * 3, [np.empty((1, 4), np.int64)], {"p": 2 ** 26 + 1},
     ValueError, r"3 sources of GF\(67108865\) can sum past 2\*\*52"),
    (np.ones((1, 1)), [np.ones((1, 4))], [np.empty((1, 4), np.int64)], {}, TypeError,
     r"with `p`, `srcs\[0\]` must be int64"),
    (np.ones((1, 1)), [np.ones((1, 4), np.int64)], [np.empty((1, 4))], {}, TypeError,
     r"with `p`, `dsts` must be int64"),
    (np.ones((2, 1)), [np.ones((1, 4), np.int64)], [np.empty((1, 4), np.int64)], {"pairs": True},
     ValueError, r"with `p` \(GF\(p\)\) neither `pairs` nor `sq` applies"),
    (np.ones((1, 1)), [np.ones((1, 4), np.int64)], [np.empty((1, 4), np.int64)], {"p": 1},
     ValueError, r"`p` must be 0 \(real\) or between 2 and 2\*\*31-1, got 1"),
])
def test_lincomb_over_gfp_refuses_bad_arguments_by_name(G, srcs, dsts, kw, exc, match):
    kw = {"p": 5, **kw}
    with pytest.raises(exc, match=match):
        K.lincomb(G, srcs, dsts, **kw)


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
def test_lincomb_over_gfp_reduces_a_sum_of_exactly_2_pow_52(simd):
    """The exactness bound is inclusive: (p - 1)**2 = 2**52 for p = 2**26 + 1 reduces to 1
    on every path (the plain-C one included)."""
    p = 2 ** 26 + 1
    out = np.empty((1, 3), np.int64)
    K.lincomb(np.full((1, 1), p - 1.0), [np.full((1, 3), p - 1)], [out], simd=simd, p=p)
    np.testing.assert_array_equal(out, [[1, 1, 1]])


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("p", [2, 3, 5, 65537, 2 ** 26 + 1])
def test_lincomb_over_gfp_reduces_every_residue_across_the_range(p, simd):
    """The reduction mod p (one correction of the remainder from the rounded quotient) is
    exact across the whole range of sums, [0, (p - 1)**2]: every pair of a coefficient and a
    residue for small primes, and for the largest primes the extremes and random values
    times coefficients spread over [0, p) (sums up to 2**52 for p = 2**26 + 1)."""
    rng = np.random.default_rng(p)
    if p < 100:
        gs, vals = np.arange(p), np.arange(p)
    else:
        gs = np.unique(np.r_[0, 1, 2, (p - 1) // 2, p - 2, p - 1, rng.integers(0, p, 10)])
        vals = np.r_[0, 1, 2, (p - 1) // 2, (p + 1) // 2, p - 2, p - 1, rng.integers(0, p, 4000)]
    src = vals.reshape(1, -1).astype(np.int64)
    G = gs.reshape(-1, 1).astype(np.float64)
    outs = [np.empty_like(src) for _ in gs]
    K.lincomb(G, [src], outs, None, False, False, simd, p)
    want = (gs.astype(object)[:, None] * vals.astype(object)[None, :]) % p
    np.testing.assert_array_equal(np.array(outs).reshape(want.shape), want.astype(np.int64))


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
def test_lincomb_over_gfp_reduces_sums_up_to_2_pow_52_of_many_terms(simd):
    """Sums of 1024 terms up to the exactness bound k (p - 1)**2 <= 2**52 (p = 2**21 - 9,
    a prime): every coefficient and residue p - 1 (the largest sum), random ones, and rows
    of mixed extremes, reduced exactly."""
    p, k, C = 2 ** 21 - 9, 1024, 40
    assert k * (p - 1) ** 2 <= 2 ** 52
    rng = np.random.default_rng(7)
    G = np.full((3, k), p - 1.0)
    G[1] = rng.integers(0, p, k)
    G[2, ::2] = 0
    srcs = [np.full((1, C), p - 1, np.int64) for _ in range(k)]
    for s_ in srcs[::3]:
        s_[0, ::2] = rng.integers(0, p, (C + 1) // 2)
    outs = [np.empty((1, C), np.int64) for _ in range(3)]
    K.lincomb(G, srcs, outs, None, False, False, simd, p)
    X = np.array([s_[0] for s_ in srcs], dtype=object)
    want = (G.astype(np.int64).astype(object) @ X) % p
    np.testing.assert_array_equal(np.array(outs)[:, 0], want.astype(np.int64))


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("k, p, E", [(2, 23726551, 24), (8, 11863067, 26), (128, 2965783, 28),
                                     (512, 1482647, 29)])
def test_lincomb_over_gfp_reduces_exactly_where_every_sum_is_at_most_2_pow_50(k, p, E, simd):
    """Where every sum is at most 2**50 (k (p - 1)**2 <= 2**50, here within 0.04% of it) the
    AVX2 passes take the quotient as the floor of x times the double above fl(1/p), with no
    correction. Exact at the largest sum k (p - 1)**2, and at x = 2**E p: for these primes
    fl(x fl(1/p)) < 2**E, so a quotient from fl(1/p) itself would come out one short there
    (remainder p instead of 0); also one either side of it, remainder p - 1, the largest
    multiple of p reachable, and random sums."""
    assert 0.9995 * 2 ** 50 < k * (p - 1) ** 2 <= 2 ** 50
    Q = 2 ** E
    assert (Q * p) * (1.0 / p) < Q            # the case the rounded-up 1/p is there for
    hi = (k - 1) * (p - 1) ** 2 + p - 2       # the largest sum row 1 can form
    rng = np.random.default_rng(k)
    targets = [Q * p, Q * p + 1, Q * p - 1, Q * p + p - 1, (hi // p) * p, (hi // p) * p - 1, hi]
    targets += [int(v) for v in rng.integers(0, hi, 9)]
    C = 8 + len(targets)
    X = np.full((k, C), p - 1, np.int64)      # columns 0-7: every source p - 1
    for c, x in enumerate(targets, start=8):  # row 1: (p - 1)(sources 0..k-2) + source k-1 = x
        S, last = divmod(x, p - 1)
        full, part = divmod(S, p - 1)
        X[:, c] = 0
        X[:full, c] = p - 1
        if full < k - 1:
            X[full, c] = part
        X[k - 1, c] = last
    G = np.full((3, k), p - 1.0)              # row 0: the largest sum at columns 0-7
    G[1, -1] = 1.0
    G[2] = rng.integers(0, p, k)
    outs = [np.empty((1, C), np.int64) for _ in range(3)]
    K.lincomb(G, [X[j:j + 1] for j in range(k)], outs, None, False, False, simd, p)
    sums = G.astype(np.int64).astype(object) @ X.astype(object)
    assert [int(v) for v in sums[1, 8:]] == targets
    assert int(sums[0, 0]) == k * (p - 1) ** 2
    np.testing.assert_array_equal(np.array(outs)[:, 0], (sums % p).astype(np.int64))


@needs_kernels
def test_lincomb_takes_a_one_entry_sq_at_any_stride():
    """A one-entry ``sq`` is contiguous whatever its stride (numpy's view of it)."""
    sq = np.zeros(8)[::4][:1]
    K.lincomb(np.ones((1, 1)), [np.full((2, 3), 2.0)], [np.empty((2, 3))], sq)
    assert sq[0] == 24.0


@needs_kernels
def test_lincomb_refuses_what_it_writes_overlapping_what_it_reads():
    """``G`` under an output or ``sq``, ``sq`` under a source, an output whose rows overlap
    each other, no outputs at all: refused by name before anything is written."""
    buf = np.zeros(40)
    G = buf[:4].reshape(2, 2)
    src = [np.ones((1, 4)), np.ones((1, 4))]
    with pytest.raises(ValueError, match=r"`G` overlaps an output in memory"):
        K.lincomb(G, src, [buf[2:6].reshape(1, 4), buf[10:14].reshape(1, 4)])
    with pytest.raises(ValueError, match=r"`G` and `sq` overlap in memory"):
        K.lincomb(G, src, [np.empty((1, 4)), np.empty((1, 4))], buf[3:5])
    S = np.ones((2, 4))
    with pytest.raises(ValueError, match=r"`sq` and `srcs\[1\]` overlap in memory"):
        K.lincomb(np.ones((2, 2)), [S[0:1], S[1:2]], [np.empty((1, 4)), np.empty((1, 4))],
                  S[1, :2])
    rows = np.lib.stride_tricks.as_strided(np.zeros(10), shape=(3, 4), strides=(16, 8))
    with pytest.raises(ValueError, match=r"the rows of `dsts\[0\]` overlap each other"):
        K.lincomb(np.ones((1, 1)), [np.ones((3, 4))], [rows])
    with pytest.raises(ValueError, match=r"`dsts` is empty"):
        K.lincomb(np.ones((0, 1)), [np.ones((3, 4))], [])


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cols", [5, 16, 333, 2048, 12000])
def test_lincomb_systematic_rows_are_their_sources(simd, dtype, cols):
    """A systematic generator ``[I; P]`` (and rows of one scaled coefficient): each such row
    runs alone with its one source, so its output is that source bit for bit (``c x`` rounded
    once when scaled), zero past a short source, its squares those of the source, and a
    NaN or Inf in one source stays out of the other sources' rows (a diagonal pass never
    multiplies a source by another row's zero); the parity rows are the float64 product."""
    rng = np.random.default_rng(cols)
    k = 6
    P = rng.standard_normal((3, k))
    scaled = np.zeros((2, k))
    scaled[0, 2], scaled[1, 5] = 0.75, -3.0
    G = np.vstack([np.eye(k), P, scaled])
    S = [rng.standard_normal((2, cols)).astype(dtype) for _ in range(k)]
    S[4] = S[4][:1, : max(1, cols // 3)].copy()      # a short source: zeros past it
    D = np.full((len(G), 2, cols), np.nan, dtype)
    q = np.zeros(len(G))
    K.lincomb(G, S, list(D), q, True, False, simd)
    X = _padded(S, 2, cols)
    for j in range(k):
        np.testing.assert_array_equal(D[j], X[j].astype(dtype))
        assert q[j] == pytest.approx(float(np.sum(X[j] ** 2)), rel=1e-13)
    np.testing.assert_array_equal(D[k + 3], (0.75 * X[2]).astype(dtype))
    np.testing.assert_array_equal(D[k + 4], (-3.0 * X[5]).astype(dtype))
    _check(G[k:k + 3], X, D[k:k + 3], dtype, False, None, None)
    bad = [s.copy() for s in S]
    bad[1][0, 0], bad[3][-1, -1] = np.nan, np.inf
    D2 = np.empty_like(D)
    K.lincomb(G, bad, list(D2), None, False, False, simd)
    for j in (0, 2, 4, 5):                           # the finite sources' rows stay finite
        np.testing.assert_array_equal(D2[j], D[j])
    assert np.isnan(D2[1, 0, 0]) and np.isinf(D2[3, -1, -1])


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
def test_lincomb_systematic_rows_over_gfp(simd):
    """GF(p): identity rows are their (reduced) sources, the parity rows the exact sums mod p."""
    p = 65537
    rng = np.random.default_rng(3)
    k, cols = 5, 100
    G = np.vstack([np.eye(k), rng.integers(0, p, (2, k)).astype(np.float64)])
    S = rng.integers(0, p, (k, 3, cols))
    D = np.empty((len(G), 3, cols), np.int64)
    K.lincomb(G, list(S), list(D), None, False, False, simd, p)
    np.testing.assert_array_equal(D[:k], S)
    want = np.tensordot(G[k:].astype(np.int64), S, 1) % p
    np.testing.assert_array_equal(D[k:], want)


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("cols", [7, 64, 40000])
def test_lincomb_identity_rows_of_float64_sources_read_where_they_lie(simd, cols):
    """At most four rows in one pass read float64 sources in place (no tile); an identity row
    there is written by the same loop: its source bit for bit (signed zeros, NaN and
    infinities included), its squares those of the source, every tile (40000 columns: several,
    the last cut short) and a short source (zeros past it) alike; the parity row is the
    float64 sum."""
    rng = np.random.default_rng(cols)
    S = [rng.standard_normal((3, cols)) for _ in range(2)]
    S[0][0, :3] = [-0.0, np.inf, -np.inf]
    S[1] = S[1][:2, : max(1, cols // 2)].copy()
    G = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -2.0]])
    D = [np.full((3, cols), np.nan) for _ in range(3)]
    q = np.zeros(3)
    K.lincomb(G, S, D, q, True, False, simd)
    X = _padded(S, 3, cols)
    for j in range(2):
        np.testing.assert_array_equal(D[j].view(np.int64), X[j].view(np.int64))
    assert np.isinf(q[0])
    assert q[1] == pytest.approx(float(np.sum(X[1] ** 2)), rel=1e-13)
    want = 0.5 * X[0] - 2.0 * X[1]
    np.testing.assert_allclose(D[2][:, 3:], want[:, 3:], rtol=1e-15, atol=1e-15)


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("nr", [1, 2, 4, 5, 8])
def test_lincomb_over_gfp_takes_the_floor_quotient_only_up_to_2_pow_50(simd, nr):
    """Two quotients reduce a sum mod p (docs/codes.md): the floor of x times the double
    above 1/p, exact for sums up to 2**50, and the rounded one with a correction beyond. A
    sum congruent to -1 above 2**51 is where the floor form would go wrong (it returns -2
    for this one): p = 67108859 (a prime just below 2**26, so k (p - 1)**2 is past 2**50 for
    one source) must take the other form on every path, for passes of every width (the
    sum 63012908 * 60843248 = 2**51.77, -1 mod p)."""
    p, g, v = 67108859, 63012908, 60843248
    assert (g * v) % p == p - 1 and 2 ** 51 < g * v <= 2 ** 52
    G = np.full((nr, 1), float(g))
    src = np.full((1, 37), v, np.int64)
    outs = [np.empty((1, 37), np.int64) for _ in range(nr)]
    K.lincomb(G, [src], outs, None, False, False, simd, p)
    np.testing.assert_array_equal(np.array(outs)[:, 0], np.full((nr, 37), p - 1))


def _lines(rows: int, cols: int, dtype, pad: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``rows x cols`` view whose rows start ``shift`` bytes past a cache line (stride:
    ``cols + pad`` elements), and the buffer around it (sentinels)."""
    item = np.dtype(dtype).itemsize
    stride = cols + pad
    raw = np.empty(rows * stride * item + 256, np.uint8)
    at = (-raw.__array_interface__["data"][0]) % 64 + shift
    buf = raw[at:at + rows * stride * item].view(dtype)
    buf[...] = -7 if np.dtype(dtype).kind == "i" else np.nan
    return np.lib.stride_tricks.as_strided(buf, (rows, cols), (stride * item, item)), buf


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("kind", ["float64", "float32", "pairs64", "pairs32", "gf"])
@pytest.mark.parametrize("nr", [1, 2, 3, 5, 8, 9])
@pytest.mark.parametrize("layout", ["lines", "line_stride_off", "shifted"])
@pytest.mark.parametrize("systematic", [False, True])
def test_lincomb_streamed_passes_write_what_ordinary_ones_do(simd, kind, nr, layout, systematic):
    """The dense passes, and the accumulating walk's sum rows (a systematic generator: the
    identity rows above up to 4 parity rows), stream their rows (AVX-512) where each row
    starts on a cache line: the outputs are those of the same call through the cache, bit
    for bit (tails past the last whole step included), whatever the row stride, and nothing
    around the outputs is written; rows off the lines take the ordinary stores, with the
    same values."""
    rng = np.random.default_rng(nr * 7 + LEVELS.index(simd))
    pairs = kind.startswith("pairs")
    gf = kind == "gf"
    dtype = {"float64": np.float64, "float32": np.float32, "pairs64": np.float64,
             "pairs32": np.float32, "gf": np.int64}[kind]
    k, R, C = 17, 3, 75                      # 4 steps of 16 columns and a tail of 11
    if systematic:
        if pairs or nr > 4:
            pytest.skip("the accumulating walk: real rows, at most 4 sum rows")
        k = 6
    m = 2 * nr if pairs else nr
    p = 65537
    G = (rng.integers(0, p, (m, k)).astype(np.float64) if gf
         else rng.standard_normal((m, k)))
    srcs = ([rng.integers(0, p, (R, C)) for _ in range(k)] if gf
            else [rng.standard_normal((R, C)).astype(dtype if systematic else np.float64)
                  for _ in range(k)])
    if systematic:                           # identity rows fused to their sources' loads
        G = np.vstack([np.eye(k), G])
        nr, m = nr + k, m + k
    width = 2 * C if pairs else C
    pad = {"lines": 64 // np.dtype(dtype).itemsize * 3 - width % (64 // np.dtype(dtype).itemsize),
           "line_stride_off": 1, "shifted": 0}[layout]
    shift = 16 if layout == "shifted" else 0
    got = []
    for stream in (False, True):
        outs = [_lines(R, width, dtype, pad, shift) for _ in range(nr)]
        args = (G, srcs, [o for o, _ in outs], None, stream, pairs, simd) + ((p,) if gf else ())
        K.lincomb(*args)
        got.append([b.copy() for _, b in outs])
    for plain, streamed in zip(*got):
        np.testing.assert_array_equal(streamed.view(np.uint8), plain.view(np.uint8))
    # the values themselves against numpy (pairs: the property test above covers them)
    X = np.array(srcs, dtype=np.float64)
    for h, b in enumerate(got[1]):
        rows = np.lib.stride_tricks.as_strided(b, (R, width), (b.strides[0] * (width + pad), b.strides[0]))
        if gf:
            want = np.tensordot(G[h].astype(np.int64) % p, X.astype(np.int64), 1) % p
            np.testing.assert_array_equal(rows, want)
        elif not pairs:
            ref = np.tensordot(G[h], X, 1)
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(rows.astype(np.float64), ref, rtol=tol, atol=tol)
        sentinel = np.ones(b.size, bool)
        for r in range(R):
            sentinel[r * (width + pad):r * (width + pad) + width] = False
        tail = b[sentinel]
        assert (tail == -7).all() if gf else np.isnan(tail).all()


@needs_kernels
@pytest.mark.parametrize("simd", LEVELS)
@pytest.mark.parametrize("k", [9, 15])
def test_lincomb_over_gfp_many_sources_across_large_tiles(simd, k):
    """Over GF(p) with more than 8 sources the dense passes read the large tile (about 256
    KiB, W = 2176 columns at 15 sources) and prefetch the next one: the exact product mod p
    across three tiles and a ragged end, sources cut short in rows and columns, and a value
    out of the field in the last tile reported (the range check)."""
    rng = np.random.default_rng(k + 10 * LEVELS.index(simd))
    p, m, R = 65537, 17, 2
    C = 2 * (262144 // 8 // k // 16 * 16) + 37
    G = rng.integers(0, p, (m, k)).astype(np.float64)
    srcs = [rng.integers(0, p, (R - (j % 2 == 1 and j > 5), C - 3 * (j == 4)))
            for j in range(k)]
    dsts = np.full((m, R, C), -7, np.int64)
    umax = K.lincomb(G, srcs, list(dsts), None, True, False, simd, p)
    X = np.zeros((k, R, C), np.int64)
    for j, s in enumerate(srcs):
        X[j, :s.shape[0], :s.shape[1]] = s
    np.testing.assert_array_equal(dsts, np.tensordot(G.astype(np.int64), X, 1) % p)
    assert umax == max(int(s.max()) for s in srcs)
    srcs[3][0, C - 5] = p                  # out of the field, in the last tile
    assert K.lincomb(G, srcs, list(dsts), None, True, False, simd, p) >= p


def _aligned_int64(shape, off):
    """An int64 array of ``shape`` starting ``off`` values past a cache line, -7 around it
    (the buffer it lies in, and the slice of it that is the array)."""
    n = int(np.prod(shape))
    raw = np.full(n + off + 16, -7, np.int64)
    lead = (-raw.ctypes.data % 64) // 8
    return raw, raw[lead + off:lead + off + n].reshape(shape)


@needs_kernels
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(6, 26), k=st.integers(0, 17), R=st.integers(1, 3), C=st.integers(1, 90),
       p=st.sampled_from(GF_PRIMES), stream=st.booleans(), off=st.integers(0, 9),
       zeros=st.booleans(), layout=st.sampled_from(["list", "matrix", "run"]),
       seed=st.integers(0, 2 ** 16))
def test_lincomb_over_gfp_dense_rows_are_the_same_on_every_instruction_set(m, k, R, C, p, stream,
                                                                         off, zeros, layout,
                                                                         seed):
    """Over GF(p) a generator of 8 to 24 rows without a diagonal pass takes the direct walk on
    AVX-512 (no tile: each source's residues loaded where they lie, 8 columns a step, every
    row's sum in a register): its outputs are the exact product mod p and the same as every
    other instruction set's (plain C, AVX2: the tile walk), bit for bit, around its edges (7
    and 25 rows), with zero coefficients, for sources cut short in rows and columns (a list
    of sources), one 2-D array of sources, or one array cut into runs (``run``), columns not
    a multiple of 8, outputs on a cache line (``off`` 0: streamed rows) or off it; and its
    range check reads every source value and none past a source's columns (the row beyond
    them holds -1 in a list of sources)."""
    rng = np.random.default_rng(seed)
    G = rng.integers(1, p, (m, k)).astype(np.float64) if p > 2 else np.ones((m, k))
    if zeros and k:
        G[rng.random((m, k)) < 0.3] = 0.0
    if k:
        G[:, 0] = p - 1
    if layout == "list":
        shapes = [(int(rng.integers(0, R + 1)), int(rng.integers(0, C + 1))) for _ in range(k)]
        srcs = []
        for r, c in shapes:
            w = np.full((r, c + 3), -1, np.int64)
            w[:, :c] = rng.integers(0, p, (r, c))
            srcs.append(w[:, :c])            # rows at a stride, -1 just past each row
        X = np.zeros((k, R, C), np.int64)
        for j, s in enumerate(srcs):
            X[j, :s.shape[0], :s.shape[1]] = s
        call = {}
    elif layout == "matrix":                 # one 2-D array: its rows are the sources
        R = 1
        srcs = rng.integers(0, p, (k, C))
        X = srcs.reshape(k, 1, C).copy()
        call = {}
    else:                                    # one 1-D array cut into runs of C values
        R = 1
        size = max(0, k * C - int(rng.integers(0, C + 1)))
        srcs = rng.integers(0, p, size)
        X = np.zeros((k, 1, C), np.int64)
        for j in range(k):
            part = srcs[j * C:(j + 1) * C]
            X[j, 0, :part.size] = part
        call = {"run": C}
    want = np.tensordot(G.astype(np.int64), X, 1) % p
    top = int(X.max()) if X.size else 0
    for simd in LEVELS:
        raw, out = _aligned_int64((m, R, C), off)
        got = K.lincomb(G, srcs, list(out), None, stream, False, simd, p, **call)
        assert got == top
        np.testing.assert_array_equal(out, want)
        assert (raw == -7).sum() == raw.size - out.size   # nothing written outside
    if layout == "list":
        hit = [j for j, s in enumerate(srcs) if s.size]
        if hit:                              # a value out of the field, at a source's end
            j = hit[int(rng.integers(0, len(hit)))]
            for bad in (p, -1, 2 ** 52):
                srcs[j][-1, -1] = bad
                for simd in LEVELS:
                    got = K.lincomb(G, srcs, [np.empty((R, C), np.int64) for _ in range(m)],
                                    None, stream, False, simd, p)
                    assert got >= p and (bad == p or got == 2 ** 64 - 1)


@needs_kernels
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 12), run=st.integers(1, 300), short=st.integers(0, 400),
       dtype=st.sampled_from([np.float64, np.float32, np.int64]), extra=st.integers(0, 3),
       seed=st.integers(0, 2 ** 16))
def test_lincomb_run_cuts_one_array_as_the_list_of_its_runs_does(k, run, short, dtype, extra,
                                                                  seed):
    """``run=L``: one 1-D array read as the sources ``x[j L:(j + 1) L]`` (the last ones cut
    short or empty where it ends) gives, bit for bit, what the list of those slices gives:
    outputs, sums of squares (real) and the GF(p) range check's largest value."""
    rng = np.random.default_rng(seed)
    size = max(0, k * run - short)
    m = k + extra
    if dtype == np.int64:
        p = 65537
        x = rng.integers(0, p, size)
        G = np.vstack([np.eye(k), rng.integers(0, p, (extra, k))]).astype(np.float64)
        outs = [np.zeros((m, run), np.int64) for _ in range(2)]
        got = [K.lincomb(G, x, outs[0], None, True, False, -1, p, run=run),
               K.lincomb(G, [x[j * run:(j + 1) * run] for j in range(k)], outs[1], None, True,
                         False, -1, p)]
        assert got[0] == got[1]
    else:
        x = rng.standard_normal(size).astype(dtype)
        G = np.vstack([np.eye(k), rng.standard_normal((extra, k))])
        outs = [np.zeros((m, run), dtype) for _ in range(2)]
        sqs = [np.zeros(m), np.zeros(m)]
        K.lincomb(G, x, outs[0], sqs[0], True, False, -1, run=run)
        K.lincomb(G, [x[j * run:(j + 1) * run] for j in range(k)], outs[1], sqs[1], True,
                  False, -1)
        assert sqs[0].tobytes() == sqs[1].tobytes()
    assert outs[0].tobytes() == outs[1].tobytes()


@needs_kernels
@pytest.mark.parametrize("call, exc, match", [
    (lambda G, x, d: K.lincomb(G, x, d, run=-1), ValueError, r"`run` must be 0 \(sources as given\) or a positive count of values, got -1"),
    (lambda G, x, d: K.lincomb(G, [x], d, run=4), TypeError, r"with `run`, `srcs` must be one 1-D array"),
    (lambda G, x, d: K.lincomb(G, x.reshape(3, 4), d, run=4), ValueError, r"with `run`, `srcs` must be one contiguous 1-D array"),
    (lambda G, x, d: K.lincomb(G, x[::2], d, run=2), ValueError, r"with `run`, `srcs` must be one contiguous 1-D array"),
    (lambda G, x, d: K.lincomb(G, x, d, run=5), ValueError, r"`run` \(5\) is longer than the outputs' rows \(4\)"),
    (lambda G, x, d: K.lincomb(G, x, d, run=3), ValueError, r"`srcs` holds 12 values, more than 3 sources of `run` 3"),
])
def test_lincomb_run_refuses_bad_arguments_by_name(call, exc, match):
    G = np.vstack([np.eye(3), np.ones((1, 3))])
    with pytest.raises(exc, match=match):
        call(G, np.ones(12), np.zeros((4, 4)))


@needs_kernels
@pytest.mark.parametrize("C", [16, 40, 100, 1000, 4095, 8000])
@pytest.mark.parametrize("k", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("at", [None, 0, 1, 3, 7])
def test_lincomb_accumulating_walk_squares_are_the_row_loops(C, k, stream, dtype, at):
    """In one tile (R = 1, C at most the walk's W) each identity row's sum of squares is, bit
    for bit, the row loop's (``copy_sq``'s): the sources are copied and added in one loop
    (lc512_fused, its loads whole aligned lines, each value permuted out of the two it
    spans), which hands its four accumulators to that loop's; the identity rows are the
    sources, the parity rows the pass's alone. ``at``: the sources as runs of one array
    starting that many elements past a cache line (None: arrays of their own)."""
    if getattr(K, "SIMD", 0) < 2:
        pytest.skip("the accumulating walk runs on AVX-512 only")
    rng = np.random.default_rng(C * 31 + k)
    if at is None:
        srcs = [rng.standard_normal(C).astype(dtype) for _ in range(k)]
    else:
        item = np.dtype(dtype).itemsize
        buf = np.empty(k * C + 64 // item + at, dtype)
        first = (-buf.ctypes.data % 64) // item + at
        flat = buf[first:first + k * C]
        flat[...] = rng.standard_normal(k * C)
        assert flat.ctypes.data % 64 == at * item % 64
        srcs = [flat[j * C:(j + 1) * C] for j in range(k)]
    srcs[0][: C // 3] = -0.0
    P = rng.standard_normal((2, k))
    G = np.vstack([np.eye(k), P])
    out = np.zeros((k + 2, C), dtype)
    sq = np.zeros(k + 2)
    K.lincomb(G, srcs, out, sq, stream, False, -1)
    again = np.zeros_like(out)   # (each row where out's lies modulo 16 bytes: a streamed row
    # loop starts with the elements before a 16-byte boundary)
    assert again.ctypes.data % 16 == out.ctypes.data % 16
    for j in range(k):
        want = K.copy_sq(again[j], srcs[j], None, stream, 1.0)
        assert np.float64(want).tobytes() == sq[j].tobytes(), j
        assert out[j].tobytes() == srcs[j].tobytes()
    alone = np.zeros((2, C), dtype)
    K.lincomb(P, srcs, alone, None, stream, False, -1)
    assert out[k:].tobytes() == alone.tobytes()
