"""Tests for codedml.codes._gfp: exact GF(p) arithmetic, checked against galois.

galois is the independent reference; Python-int (object dtype) arithmetic is a
second reference for the matrix product at sizes where galois is slow.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import galois
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import _gfp
from codedml.codes._gfp import (
    MAX_PRIME,
    berlekamp_welch,
    berlekamp_welch_decode,
    inv_mod,
    is_prime,
    matmul_mod,
    nullspace_mod,
    poly_divmod_mod,
    poly_eval_mod,
    rank_mod,
    solve_mod,
    vandermonde_mod,
)

P_NEAR_2_21 = 2097143  # largest prime below 2**21
P_NEAR_2_31 = 2147483629  # largest prime below 2**31 - 1
PRIMES = [2, 3, 257, P_NEAR_2_21, MAX_PRIME, P_NEAR_2_31]
# Every prime where the direct float path is possible, plus the limb path.
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=None)
def gf(p: int):
    """galois field classes are slow to build (JIT); build each once."""
    return galois.GF(p)


def ref_matmul(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """Exact reference with Python integers (object dtype)."""
    return ((a.astype(object) @ b.astype(object)) % p).astype(np.int64)


def methods_for(p: int) -> list[str]:
    ms = ["auto", "limbs"]
    if (p - 1) ** 2 <= 2**52:
        ms.append("direct")
    return ms


# ---------------------------------------------------------------------------
# Import weight
# ---------------------------------------------------------------------------
def test_module_does_not_import_galois():
    # Load the file standalone (package __init__ files are not this module's
    # business) and make sure galois was not pulled in.
    path = Path(_gfp.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('gfp_standalone', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "assert 'galois' not in sys.modules, 'galois imported'\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# is_prime
# ---------------------------------------------------------------------------
KNOWN_PRIMES = [2, 3, 5, 7, 11, 13, 257, 65537, P_NEAR_2_21, MAX_PRIME, P_NEAR_2_31,
                2**61 - 1, 2**64 - 59, 1_000_000_007, 998_244_353]
CARMICHAEL = [561, 1105, 1729, 2465, 2821, 6601, 8911, 10585, 15841, 29341, 41041,
              825265, 321197185, 5394826801, 232250619601, 9746347772161]
STRONG_PSEUDOPRIMES = [
    2047,  # strong pseudoprime to base 2
    1373653,  # bases 2, 3
    25326001,  # bases 2, 3, 5
    3215031751,  # bases 2, 3, 5, 7
    2152302898747,  # bases 2..11
    3474749660383,  # bases 2..13
    341550071728321,  # bases 2..17
    3825123056546413051,  # bases 2..23
]


@pytest.mark.parametrize("n", KNOWN_PRIMES)
def test_is_prime_known_primes(n):
    assert is_prime(n)


@pytest.mark.parametrize("n", CARMICHAEL + STRONG_PSEUDOPRIMES)
def test_is_prime_rejects_carmichael_and_pseudoprimes(n):
    assert not is_prime(n)


def test_is_prime_small_range_matches_galois():
    assert [is_prime(n) for n in range(-5, 5000)] == [
        n >= 2 and galois.is_prime(n) for n in range(-5, 5000)
    ]


def test_is_prime_composites_near_2_31():
    for n in range(2**31 - 200, 2**31 + 50):
        assert is_prime(n) == galois.is_prime(n), n


# ---------------------------------------------------------------------------
# matmul_mod
# ---------------------------------------------------------------------------
@FAST
@given(
    p=st.sampled_from(PRIMES),
    m=st.integers(1, 12),
    n=st.integers(1, 40),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_matches_galois(p, m, n, k, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, p, (m, n), dtype=np.int64)
    b = rng.integers(0, p, (n, k), dtype=np.int64)
    GF = gf(p)
    expected = np.asarray(GF(a) @ GF(b), dtype=np.int64)
    for method in methods_for(p):
        out = matmul_mod(a, b, p, method=method)
        assert out.dtype == np.int64 and out.shape == (m, k)
        np.testing.assert_array_equal(out, expected, err_msg=f"p={p} method={method}")


@pytest.mark.parametrize("p", PRIMES)
def test_matmul_vector_b(p):
    rng = np.random.default_rng(p)
    a = rng.integers(0, p, (9, 33), dtype=np.int64)
    b = rng.integers(0, p, 33, dtype=np.int64)
    GF = gf(p)
    expected = np.asarray(GF(a) @ GF(b), dtype=np.int64)
    for method in methods_for(p):
        out = matmul_mod(a, b, p, method=method)
        assert out.shape == (9,)
        np.testing.assert_array_equal(out, expected)


# 1610612741 ~ 1.5 * 2**30 has 2**32 mod p ~ 2**30, the worst case for the
# limb recombination's overflow margin (for 2**31 - 1 that constant is 2).
@pytest.mark.parametrize("p", PRIMES + [2**23 - 15, 2**26 - 5, 1610612741])
@pytest.mark.parametrize("fill", [1, 2])
def test_matmul_worst_case_entries(p, fill):
    # Entries p-1 maximise every partial sum, so the chunk bound is tight;
    # entries p-2 give odd products, whose sums above 2**53 would be rounded
    # (and above 2**52 mangled by the in-place int conversion) if a chunk were
    # too long.  The sizes straddle the chunk lengths for sums of 2**52 (what
    # the module uses) and 2**53 (the float64 limit), computed here
    # independently of the module.
    v = p - fill if p - fill >= 1 else p - 1
    sizes = {1, 7, 1000, 9000}
    for limit in (2**52, 2**53):
        true_chunk = limit // (p - 1) ** 2
        if 1 <= true_chunk <= 10000:
            sizes |= {true_chunk, true_chunk + 1, 2 * true_chunk + 3, 4 * true_chunk + 1}
    f32_limit = 2**24 // (p - 1) ** 2  # float32 single-GEMM path up to here
    if 1 <= f32_limit <= 10000:
        sizes |= {f32_limit, f32_limit + 1, 2 * f32_limit - 1}
    for n in sorted(sizes):
        a = np.full((2, n), v, dtype=np.int64)
        b = np.full((n, 3), v, dtype=np.int64)
        expected = np.full((2, 3), v * v * n % p, dtype=np.int64)
        for method in methods_for(p):
            np.testing.assert_array_equal(
                matmul_mod(a, b, p, method=method), expected, err_msg=f"n={n} method={method}"
            )


def test_matmul_accumulator_does_not_overflow():
    # p = 47453111 (largest prime with (p-1)**2 <= 2**51) allows only 2 inner
    # terms per exact GEMM, each chunk sum just below 2**52; 2100 chunks would
    # exceed 2**63 in int64 unless the accumulator is reduced along the way.
    p = 47453111
    assert _gfp._direct_chunk(p) == 2
    assert 2100 * 2 * (p - 1) ** 2 > 2**63
    n = 4200
    a = np.full((1, n), p - 1, dtype=np.int64)
    b = np.full((n, 2), p - 1, dtype=np.int64)
    expected = np.full((1, 2), (p - 1) ** 2 * n % p, dtype=np.int64)
    np.testing.assert_array_equal(matmul_mod(a, b, p, method="direct"), expected)


@pytest.mark.parametrize("p", [MAX_PRIME, P_NEAR_2_31])
def test_matmul_limb_chunking_long_vector(p):
    # The limb path's exact chunk is ~4.6e5 inner terms near 2**31; an inner
    # dimension of 4e6 with odd limb products would be rounded if the limb
    # GEMMs were not chunked.
    n = 4_000_001  # odd, so the exact limb sums (> 2**53 unchunked) are odd
    v = p - 2
    a = np.full((1, n), v, dtype=np.int64)
    b = np.full(n, v, dtype=np.int64)
    out = matmul_mod(a, b, p, method="limbs")
    assert out.tolist() == [v * v * n % p]


@pytest.mark.parametrize("p", [P_NEAR_2_21, MAX_PRIME, P_NEAR_2_31])
def test_matmul_long_inner_dimension_python_int_reference(p):
    # n = 5000 > 1024 forces several exact chunks on the direct path for p ~ 2**21.
    rng = np.random.default_rng(7)
    a = rng.integers(0, p, (3, 5000), dtype=np.int64)
    b = rng.integers(0, p, (5000, 4), dtype=np.int64)
    expected = ref_matmul(a, b, p)
    for method in methods_for(p):
        np.testing.assert_array_equal(matmul_mod(a, b, p, method=method), expected)


@FAST
@given(
    p=st.sampled_from(
        [2, 3, 257, 65521, P_NEAR_2_21, 2**23 - 15, 2**26 - 5, MAX_PRIME, P_NEAR_2_31]
    ),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_matmul_multi_chunk_and_accumulator_reduction(monkeypatch_module, p, n, seed):
    # Shrinking the exact-sum bound only makes chunks shorter (still exact), so
    # it exercises the multi-chunk loops and the periodic accumulator
    # reduction on small inputs.
    rng = np.random.default_rng(seed)
    a = rng.integers(0, p, (4, n), dtype=np.int64)
    b = rng.integers(0, p, (n, 3), dtype=np.int64)
    expected = ref_matmul(a, b, p)
    bits = (p - 1).bit_length()
    s = 16 if bits > 16 else (bits + 1) // 2  # the module's limb split
    limb_max = min((1 << s) - 1, p - 1) + ((p - 1) >> s)
    # Per method, a bound a few products wide; never above the module's 2**52.
    bounds = {"limbs": 4 * limb_max**2}
    if (p - 1) ** 2 <= 2**50:
        bounds["direct"] = bounds["auto"] = 4 * (p - 1) ** 2
    else:
        bounds["auto"] = bounds["limbs"]
    for method, bound in bounds.items():
        assert bound <= 2**52
        with monkeypatch_module.context() as mp:
            mp.setattr(_gfp, "_EXACT_FLOAT", bound, raising=True)
            mp.setattr(_gfp, "_ACC_CHUNKS", 2, raising=True)
            out = matmul_mod(a, b, p, method=method)
        np.testing.assert_array_equal(out, expected, err_msg=f"p={p} method={method}")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_matmul_python_int_small_exhaustive_p2_p3():
    for p in (2, 3):
        for bits in itertools.product(range(p), repeat=4):
            a = np.array(bits, dtype=np.int64).reshape(2, 2)
            b = a[::-1].copy()
            np.testing.assert_array_equal(matmul_mod(a, b, p), ref_matmul(a, b, p))


def test_matmul_empty_and_dtypes():
    p = 257
    out = matmul_mod(np.zeros((3, 0), dtype=np.int64), np.zeros((0, 2), dtype=np.int64), p)
    np.testing.assert_array_equal(out, np.zeros((3, 2), dtype=np.int64))
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    a64 = a.astype(np.int64)
    np.testing.assert_array_equal(matmul_mod(a, a.T, p), ref_matmul(a64, a64.T, p))
    # Non-contiguous and Fortran-ordered inputs, on both paths.
    for q in (257, MAX_PRIME):
        big = np.random.default_rng(q).integers(0, q, (10, 20), dtype=np.int64)
        x, y = big[:, ::2], big.T[::2, ::3]
        for method in methods_for(q):
            np.testing.assert_array_equal(matmul_mod(x, y, q, method=method), ref_matmul(x, y, q))
            np.testing.assert_array_equal(
                matmul_mod(np.asfortranarray(big), big.T, q, method=method),
                ref_matmul(big, big.T, q),
            )


def test_matmul_rejects_bad_input():
    a = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        matmul_mod(a * 300, a.T, 257)
    with pytest.raises(ValueError, match="outside"):
        matmul_mod(-a, a.T, 257)
    with pytest.raises(ValueError, match="outside"):
        huge = np.full((1, 1), 2**64 - 1, dtype=np.uint64)
        matmul_mod(huge, np.ones((1, 1), dtype=np.uint64), 257)
    with pytest.raises(TypeError):
        matmul_mod(a.astype(float), a.T, 257)
    with pytest.raises(ValueError, match="mismatch"):
        matmul_mod(a, a, 257)
    with pytest.raises(ValueError):
        matmul_mod(a, a.T, 2**31)
    with pytest.raises(ValueError):
        matmul_mod(a, a.T, 1)
    with pytest.raises(ValueError, match="direct"):
        matmul_mod(a, a.T, MAX_PRIME, method="direct")
    with pytest.raises(ValueError, match="method"):
        matmul_mod(a, a.T, 257, method="magic")


# ---------------------------------------------------------------------------
# solve_mod / inv_mod / rank_mod / nullspace_mod
# ---------------------------------------------------------------------------
@FAST
@given(
    p=st.sampled_from(PRIMES),
    k=st.integers(1, 10),
    r=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_solve_inv_rank_match_galois(p, k, r, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, p, (k, k), dtype=np.int64)
    b = rng.integers(0, p, (k, r) if r else k, dtype=np.int64)
    GF = gf(p)
    rank = int(np.linalg.matrix_rank(GF(a)))
    assert rank_mod(a, p) == rank
    if rank < k:
        with pytest.raises(ValueError, match="singular"):
            solve_mod(a, b, p)
        with pytest.raises(ValueError, match="singular"):
            inv_mod(a, p)
        return
    x = solve_mod(a, b, p)
    assert x.shape == b.shape and x.dtype == np.int64
    np.testing.assert_array_equal(x, np.asarray(np.linalg.solve(GF(a), GF(b)), dtype=np.int64))
    ainv = inv_mod(a, p)
    np.testing.assert_array_equal(ainv, np.asarray(np.linalg.inv(GF(a)), dtype=np.int64))
    np.testing.assert_array_equal(matmul_mod(a, ainv, p), np.eye(k, dtype=np.int64))


def test_solve_needs_row_pivoting():
    # Zero in the top-left corner: elimination must swap rows.
    p = 257
    a = np.array([[0, 1, 2], [3, 0, 1], [1, 1, 0]], dtype=np.int64)
    b = np.array([5, 6, 7], dtype=np.int64)
    GF = gf(p)
    np.testing.assert_array_equal(solve_mod(a, b, p), np.asarray(np.linalg.solve(GF(a), GF(b))))


@pytest.mark.parametrize("p", [2, 257, MAX_PRIME])
def test_singular_raises(p):
    a = np.array([[1, 2, 3], [2, 4, 6], [0, 1, 1]], dtype=np.int64) % p
    with pytest.raises(ValueError, match="singular"):
        solve_mod(a, np.ones(3, dtype=np.int64), p)
    with pytest.raises(ValueError, match="singular"):
        inv_mod(a, p)
    with pytest.raises(ValueError, match="singular"):
        solve_mod(np.zeros((2, 2), dtype=np.int64), np.ones(2, dtype=np.int64), p)


def test_singular_mod_p_only():
    # det = 7: invertible over the reals, singular mod 7.
    a = np.array([[3, 1], [1, 5]], dtype=np.int64)
    assert rank_mod(a, 7) == 1
    with pytest.raises(ValueError, match="singular"):
        solve_mod(a, np.array([1, 2]), 7)
    assert rank_mod(a, 11) == 2


def test_solve_rejects_composite_and_bad_shapes():
    with pytest.raises(ValueError, match="not prime"):
        solve_mod(np.eye(2, dtype=np.int64), np.ones(2, dtype=np.int64), 15)
    with pytest.raises(ValueError, match="square"):
        solve_mod(np.ones((2, 3), dtype=np.int64), np.ones(2, dtype=np.int64), 7)
    with pytest.raises(ValueError):
        solve_mod(np.eye(2, dtype=np.int64), np.ones(3, dtype=np.int64), 7)


@FAST
@given(
    p=st.sampled_from([2, 3, 257, MAX_PRIME]),
    m=st.integers(1, 8),
    n=st.integers(1, 8),
    rank=st.integers(0, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_nullspace_and_rank(p, m, n, rank, seed):
    # Build a matrix of known-at-most rank as a product of thin factors.
    rng = np.random.default_rng(seed)
    rank = min(rank, m, n)
    a = matmul_mod(rng.integers(0, p, (m, rank)), rng.integers(0, p, (rank, n)), p)
    GF = gf(p)
    true_rank = int(np.linalg.matrix_rank(GF(a)))
    assert rank_mod(a, p) == true_rank
    ns = nullspace_mod(a, p)
    assert ns.shape == (n - true_rank, n)
    if ns.shape[0]:
        np.testing.assert_array_equal(matmul_mod(a, ns.T, p), 0)
        assert rank_mod(ns, p) == ns.shape[0]
        # Same row space as galois' null space.
        ref = np.asarray(GF(a).null_space(), dtype=np.int64)
        assert rank_mod(np.vstack([ns, ref]), p) == ns.shape[0]


# ---------------------------------------------------------------------------
# Polynomials
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 257, MAX_PRIME])
def test_vandermonde_and_poly_eval(p):
    rng = np.random.default_rng(p)
    xs = rng.integers(0, p, 11, dtype=np.int64)
    coeffs = rng.integers(0, p, 6, dtype=np.int64)
    GF = gf(p)
    expected = np.asarray(galois.Poly(GF(coeffs[::-1]))(GF(xs)), dtype=np.int64)
    np.testing.assert_array_equal(poly_eval_mod(coeffs, xs, p), expected)
    v = vandermonde_mod(xs, 6, p)
    np.testing.assert_array_equal(v, np.asarray(GF(xs)[:, None] ** np.arange(6), dtype=np.int64))
    np.testing.assert_array_equal(matmul_mod(v, coeffs, p), expected)
    np.testing.assert_array_equal(poly_eval_mod(np.zeros(0, dtype=np.int64), xs, p), 0)


@FAST
@given(
    p=st.sampled_from([2, 257, MAX_PRIME]),
    dn=st.integers(0, 8),
    dd=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_poly_divmod_matches_galois(p, dn, dd, seed):
    rng = np.random.default_rng(seed)
    num = rng.integers(0, p, dn + 1, dtype=np.int64)
    den = rng.integers(0, p, dd + 1, dtype=np.int64)
    den[-1] = rng.integers(1, p)
    q, r = poly_divmod_mod(num, den, p)
    GF = gf(p)
    gq, gr = divmod(galois.Poly(GF(num[::-1])), galois.Poly(GF(den[::-1])))
    def coeffs(poly, length):
        c = np.asarray(poly.coeffs, dtype=np.int64)[::-1]
        out = np.zeros(max(length, c.size), dtype=np.int64)
        out[: c.size] = c
        return out
    np.testing.assert_array_equal(coeffs(gq, q.size)[: q.size], q)
    assert not np.any(coeffs(gq, q.size)[q.size:])
    np.testing.assert_array_equal(coeffs(gr, r.size)[: r.size], r)
    assert not np.any(coeffs(gr, r.size)[r.size:])


# ---------------------------------------------------------------------------
# Berlekamp-Welch
# ---------------------------------------------------------------------------
def corrupt(ys, positions, rng, p):
    out = ys.copy()
    for i in positions:
        out[i] = (out[i] + int(rng.integers(1, p))) % p  # nonzero offset
    return out


@pytest.mark.parametrize(
    "p,k,e,extra",
    [(13, 3, 2, 0), (13, 3, 2, 1), (257, 1, 3, 0), (257, 4, 1, 2), (7, 2, 2, 0),
     (MAX_PRIME, 3, 2, 1), (2, 1, 0, 1)],
)
def test_bw_every_error_pattern(p, k, e, extra):
    rng = np.random.default_rng(1000 * p + 10 * k + e)
    r = k + 2 * e + extra
    if r > p:
        pytest.skip("not enough distinct points")
    xs = rng.choice(p, r, replace=False).astype(np.int64)
    msg = rng.integers(0, p, k, dtype=np.int64)
    clean = poly_eval_mod(msg, xs, p)
    assert berlekamp_welch(xs, clean, k, e, p) == []
    for n_err in range(0, e + 1):
        for positions in itertools.combinations(range(r), n_err):
            ys = corrupt(clean, positions, rng, p)
            poly, errors = berlekamp_welch_decode(xs, ys, k, e, p)
            assert errors == list(positions)
            np.testing.assert_array_equal(poly, msg)
            assert berlekamp_welch(xs, ys, k, e, p) == list(positions)


@FAST
@given(
    p=st.sampled_from([257, P_NEAR_2_21, MAX_PRIME, P_NEAR_2_31]),
    k=st.integers(1, 8),
    e=st.integers(0, 5),
    extra=st.integers(0, 4),
    data=st.data(),
)
def test_bw_random(p, k, e, extra, data):
    r = k + 2 * e + extra
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    xs = rng.choice(p, r, replace=False).astype(np.int64)
    msg = rng.integers(0, p, k, dtype=np.int64)
    n_err = data.draw(st.integers(0, e))
    positions = sorted(
        data.draw(st.lists(st.integers(0, r - 1), min_size=n_err, max_size=n_err, unique=True))
    )
    ys = corrupt(poly_eval_mod(msg, xs, p), positions, rng, p)
    poly, errors = berlekamp_welch_decode(xs, ys, k, e, p)
    assert errors == positions
    np.testing.assert_array_equal(poly, msg)


def _brute_force_within(xs, ys, k, e, p):
    """All error sets of codewords within distance e (tiny p, k only)."""
    found = []
    for coeffs in itertools.product(range(p), repeat=k):
        vals = poly_eval_mod(np.array(coeffs, dtype=np.int64), xs, p)
        bad = np.flatnonzero(vals != ys)
        if bad.size <= e:
            found.append((coeffs, bad.tolist()))
    return found


@pytest.mark.parametrize("p,k,e,r", [(5, 2, 1, 4), (5, 1, 1, 4), (7, 2, 1, 5), (7, 1, 2, 5)])
def test_bw_exhaustive_received_words(p, k, e, r):
    # For every received word (or a sample when there are many): BW raises
    # exactly when no codeword lies within distance e, and otherwise returns
    # that (unique) codeword's error positions.
    xs = np.arange(r, dtype=np.int64)
    words = list(itertools.product(range(p), repeat=r))
    if len(words) > 1500:
        rng = np.random.default_rng(0)
        words = [words[i] for i in rng.choice(len(words), 1500, replace=False)]
    raised = 0
    for w in words:
        ys = np.array(w, dtype=np.int64)
        truth = _brute_force_within(xs, ys, k, e, p)
        assert len(truth) <= 1  # r >= k + 2e makes it unique
        if not truth:
            raised += 1
            with pytest.raises(ValueError, match="too many errors"):
                berlekamp_welch(xs, ys, k, e, p)
        else:
            coeffs, bad = truth[0]
            poly, errors = berlekamp_welch_decode(xs, ys, k, e, p)
            assert errors == bad
            np.testing.assert_array_equal(poly, coeffs)
    assert raised > 0


def test_bw_too_many_errors_raises():
    # r = 10, k = 2, e = 2: corrupting 6 of 10 values to a constant far from
    # the line leaves no degree-<2 polynomial within distance 2.
    p = 257
    xs = np.arange(1, 11, dtype=np.int64)
    ys = poly_eval_mod(np.array([5, 3]), xs, p)
    ys[:6] = [100, 7, 200, 13, 150, 42]
    assert not _brute_force_within_line(xs, ys, 2, p)
    with pytest.raises(ValueError, match="too many errors"):
        berlekamp_welch(xs, ys, 2, 2, p)


def _brute_force_within_line(xs, ys, e, p):
    """Is some line within distance e? Any such line passes through 2 correct points."""
    r = xs.size
    for i, j in itertools.combinations(range(r), 2):
        slope = (int(ys[j]) - int(ys[i])) * pow(int(xs[j]) - int(xs[i]), -1, p) % p
        icpt = (int(ys[i]) - slope * int(xs[i])) % p
        vals = poly_eval_mod(np.array([icpt, slope]), xs, p)
        if np.count_nonzero(vals != ys) <= e:
            return True
    return False


def test_bw_rejects_bad_arguments():
    xs = np.arange(5, dtype=np.int64)
    ys = np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError, match="r >= k"):
        berlekamp_welch(xs, ys, 2, 2, 257)
    with pytest.raises(ValueError, match="distinct"):
        berlekamp_welch(np.array([1, 1, 2]), np.zeros(3, dtype=np.int64), 1, 1, 257)
    with pytest.raises(ValueError, match="length"):
        berlekamp_welch(xs, ys[:4], 1, 1, 257)
    with pytest.raises(ValueError, match="k >= 1"):
        berlekamp_welch(xs, ys, 0, 1, 257)
