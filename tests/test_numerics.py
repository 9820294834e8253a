"""Numerical requirements of the real-valued codes, measured rather than assumed.

* n = 31 workers, 2 redundant (recovery threshold 29): the worst-case condition number over
  *every* 29-subset is small for the circle construction (<= 500 for MDS, <= 4000 for the
  matrix-matrix codes) while the naive equispaced construction is hopeless (> 1e10).
* Every code family with n <= 30 and n - threshold <= 5 decodes to a relative Frobenius error
  of at most 1e-12 (float64 inputs) and 1e-4 (float32 inputs) against the float64 product,
  on the *worst* subset of results (the one :func:`worst_case_condition` reports).
* The sampled mode of :func:`worst_case_condition` (which examines every cyclic-run erasure)
  finds the same worst case as exhaustive enumeration for circle codes.

The relative error of a decode is about ``cond(M_S) * eps`` times the rounding the results
carry; at n = 30, threshold 25 the worst condition number is about 8e3, the hardest corner of
the grid. There plain float64 workers' rounding, which grows with the inner dimension, would
reach 1.4e-12; ``precision="auto"`` gives those codes compensated worker products, and the
error stays at 2-7e-13 at every inner dimension tried (180 to 4096).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from codedml.codes import (
    GradientCode,
    MatDotCode,
    MDSCode,
    PolyDotCode,
    PolynomialCode,
    ReplicationCode,
    condition_number,
    worst_case_condition,
)
from codedml.codes._base import COMPENSATE_MAX_CONDITION, COMPENSATE_MIN_CONDITION

F64_BOUND = 1e-12
F32_BOUND = 1e-4



# --------------------------------------------------------------------------- worst-case cache
# Exhaustive enumeration at n = 30, threshold 25 examines 142506 subsets (~6 s per decoding
# matrix). worst_case_condition(code) depends on the code only through its decoding matrices
# (code._families over all workers), n and the threshold, so codes with identical decoding
# matrices (MDS, MatDot and PolyDot with the same threshold on the circle) share one exact
# enumeration instead of repeating it.
_WORST: dict = {}


def worst(code):
    fams = code._families(np.arange(code.workers))
    key = (code.workers, code.recovery_threshold,
           tuple((M.shape, M.dtype.str, M.tobytes()) for M in fams))
    if key not in _WORST:
        _WORST[key] = worst_case_condition(code)
    wc = _WORST[key]
    assert wc.exact, f"{code!r}: worst case was sampled, not enumerated"
    return wc


# --------------------------------------------------------------------------- n = 31 requirements
N31_CODES = [
    ("MDS(31,29)", lambda **kw: MDSCode(31, 29, **kw), 500.0),
    ("MatDot(31,15)", lambda **kw: MatDotCode(31, 15, **kw), 4000.0),
    ("PolyDot(31,2,6,2)", lambda **kw: PolyDotCode(31, 2, 6, 2, **kw), 4000.0),
    ("Polynomial(31,29,1)", lambda **kw: PolynomialCode(31, 29, 1, **kw), 4000.0),
    ("Polynomial(31,1,29)", lambda **kw: PolynomialCode(31, 1, 29, **kw), 4000.0),
]


@pytest.mark.parametrize("make, bound", [(m, b) for _, m, b in N31_CODES],
                         ids=[i for i, _, _ in N31_CODES])
def test_n31_two_redundant_worst_case_condition(make, bound):
    code = make()
    assert code.workers == 31 and code.recovery_threshold == 29
    wc = worst_case_condition(code)
    assert wc.exact and wc.subsets == math.comb(31, 29)
    assert len(wc.worst_subset) == 29
    assert wc.value <= bound, f"{code!r}: worst-case condition {wc.value:.4g} > {bound}"
    # the reported worst subset really has that condition number
    assert condition_number(code, wc.worst_subset) == pytest.approx(wc.value, rel=1e-9)
    # and condition_bound (what precision="auto" relies on) reports the same worst case, or
    # for a systematic MDS-type code an upper bound of it (cond(V_T) cond(V_S))
    if getattr(code, "systematic", False) and code.m == 1:
        assert wc.value * (1 - 1e-9) <= code.condition_bound() <= 1.6 * wc.value
    else:
        assert code.condition_bound() == pytest.approx(wc.value, rel=1e-9)


@pytest.mark.parametrize("make", [m for _, m, _ in N31_CODES], ids=[i for i, _, _ in N31_CODES])
def test_n31_equispaced_baseline_is_hopeless(make):
    """The naive real-point construction is what the circle construction is for."""
    code = make(construction="equispaced")
    wc = worst_case_condition(code)
    assert wc.exact
    assert wc.value > 1e10, f"{code!r}: equispaced worst case only {wc.value:.4g}"
    assert worst_case_condition(make()).value < 1e-6 * wc.value


# --------------------------------------------------------------------------- accuracy grid
def _polynomial(n, k):
    splits = [(p, k // p) for p in range(2, k) if k % p == 0 and k // p > 1]
    if splits:  # the most balanced split: both A and B are cut (two decoding families)
        return PolynomialCode(n, *min(splits, key=lambda s: abs(s[0] - s[1])))
    return PolynomialCode(n, 1, k) if k >= 2 else None


def _polydot(n, k):
    splits = [(p, m, q) for m in range(2, k + 1) for p in range(1, k + 1) for q in range(1, k + 1)
              if p * q >= 2 and p * m * q + m - 1 == k]
    if not splits:
        return None
    both = [s for s in splits if s[0] > 1 and s[2] > 1]
    return PolyDotCode(n, *(both or splits)[0])


def grid_codes(n, s):
    """One representative code per family with n workers and threshold n - s."""
    k = n - s
    out = [MDSCode(n, k), _polynomial(n, k)]
    if k % 2 == 1 and k >= 3:
        out.append(MatDotCode(n, (k + 1) // 2))
    out.append(_polydot(n, k))
    out.append(GradientCode(n, s, "cyclic"))
    if n % (s + 1) == 0:
        out.append(GradientCode(n, s, "fractional_repetition"))
    blocks = n // (s + 1)
    if blocks >= 1 and n // blocks == s + 1:  # min replicas s + 1 <=> threshold n - s
        out.append(ReplicationCode(n, blocks))
    return [c for c in out if c is not None]


GRID = [(n, s, c) for n in (6, 12, 20, 30) for s in range(1, 6) for c in grid_codes(n, s)]


def _id(n, s, c):
    name = repr(c).split("(")[0]
    extra = {"PolynomialCode": lambda: f"{c.p}x{c.q}", "PolyDotCode": lambda: f"{c.p}.{c.m}.{c.q}",
             "MatDotCode": lambda: f"m{c.m}", "GradientCode": lambda: c.scheme[:4],
             "ReplicationCode": lambda: f"b{c.k}"}.get(name, lambda: "")()
    return f"{name}{extra}-n{n}-k{n - s}"


SHAPE = (192, 180, 144)  # rows of A, inner dimension (a multiple of every n here), columns of B
SEEDS = (0, 1, 2)


def decoded_errors(code, dtype, subset):
    errs = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        M, N, K = SHAPE
        A = rng.standard_normal((M, N)).astype(dtype)
        B = rng.standard_normal((N, K)).astype(dtype)
        ref = A.astype(np.float64) @ B.astype(np.float64)
        enc = code.encode(A, B)
        results = {w: enc[w].compute() for w in subset}
        C = code.decode(results, encoding=enc)
        assert C.shape == ref.shape
        errs.append(float(np.linalg.norm(C - ref) / np.linalg.norm(ref)))
    return errs


def test_grid_thresholds():
    assert len(GRID) > 80
    for n, s, code in GRID:
        assert code.workers == n and code.recovery_threshold == n - s, repr(code)
    families = {type(c).__name__ for _, _, c in GRID}
    assert families == {"MDSCode", "PolynomialCode", "MatDotCode", "PolyDotCode",
                        "GradientCode", "ReplicationCode"}


@pytest.mark.parametrize("dtype, bound", [(np.float64, F64_BOUND), (np.float32, F32_BOUND)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("n, s, code", [
    pytest.param(*g, id=_id(*g), marks=[pytest.mark.slow] if g[0] == 30 and g[1] >= 4 else [])
    for g in GRID])
def test_decoded_error_on_worst_subset(n, s, code, dtype, bound):
    wc = worst(code)
    errs = decoded_errors(code, dtype, wc.worst_subset)
    assert max(errs) <= bound, (
        f"{code!r} decoding from worst subset {wc.worst_subset} (cond {wc.value:.4g}): "
        f"relative errors {[f'{e:.3g}' for e in errs]} exceed {bound:g} "
        f"({max(errs) / bound:.2f}x the bound)")


def test_hard_corner_is_the_worst_cyclic_erasure():
    """At n = 30, threshold 25 the exact worst subset erases 5 consecutive workers."""
    wc = worst(MDSCode(30, 25, systematic=False))      # the plain code's points in order
    missing = sorted(set(range(30)) - set(wc.worst_subset))
    assert len(missing) == 5
    assert any(sorted((start + t) % 30 for t in range(5)) == missing for start in range(30))
    assert 1e3 < wc.value < 1e4  # measured 8.0e3


CORNER = [MDSCode(30, 25), PolynomialCode(30, 5, 5), MatDotCode(30, 13), PolyDotCode(30, 2, 2, 6)]


def _corner_errors(code, precision, inners=(180, 720, 2048)):
    subset = worst(code).worst_subset
    out = []
    for inner in inners:
        rng = np.random.default_rng(inner)
        A, B = rng.standard_normal((192, inner)), rng.standard_normal((inner, 144))
        enc = code.encode(A, B, precision=precision)
        C = code.decode({w: enc[w].compute() for w in subset}, encoding=enc)
        ref = A @ B
        out.append(float(np.linalg.norm(C - ref) / np.linalg.norm(ref)))
    return out


@pytest.mark.parametrize("code", CORNER, ids=repr)
def test_hard_corner_meets_the_bound_at_every_inner_dimension(code):
    """At n = 30, threshold 25 (cond 8.0e3) plain float64 workers' rounding, amplified by the
    decode, grows with the inner dimension (measured for MDS: 7.0e-13 at 180, 1.37e-12 at 720,
    9.8e-13 at 2048). ``precision="auto"`` gives these codes compensated worker products: the
    error is then flat in the inner dimension and below 1e-12 (2.6e-13 MDS, 2.2e-13
    polynomial, 7.3e-13 MatDot, 5.9e-13 PolyDot, whose remainder is the rounding of the
    encoded operands and of the results themselves)."""
    assert code.encode(np.ones((4, 4)), np.ones((4, 4))).compensated
    errs = _corner_errors(code, "auto")
    assert max(errs) <= F64_BOUND, f"{code!r}: {errs}"
    assert max(errs) <= 1.5 * min(errs), f"{code!r}: not flat in the inner dimension: {errs}"


def test_compensation_is_what_fixes_the_corner():
    """The same decode with one plain float64 GEMM per worker is measurably worse (the test
    above could fail): with plain products the worst of the three inner dimensions is at least
    1.5x the compensated one."""
    code = MDSCode(30, 25)
    plain, comp = _corner_errors(code, "float64"), _corner_errors(code, "auto")
    assert max(plain) >= 1.5 * max(comp), (plain, comp)


def test_precision_auto_compensation_only_where_needed():
    A, B = np.ones((30, 30)), np.ones((30, 8))
    assert MDSCode(30, 25).condition_bound() > COMPENSATE_MIN_CONDITION
    assert MDSCode(30, 25).encode(A, B).compensated                          # float64, cond 8e3
    assert all(t.compensated for t in MDSCode(30, 25).encode(A, B))
    assert not MDSCode(30, 27).encode(A, B).compensated                      # cond 372
    assert not MDSCode(30, 25).encode(A.astype(np.float32), B.astype(np.float32)).compensated
    assert MDSCode(30, 25).encode(A.astype(np.float32), B.astype(np.float32)).dtype == np.float64
    assert not MDSCode(30, 25).encode(A, B, precision="float64").compensated
    assert not MDSCode(30, 25, field=65537).encode(A.astype(int), B.astype(int)).compensated
    # beyond COMPENSATE_MAX_CONDITION the encoding's own rounding misses 1e-12 anyway
    assert MDSCode(30, 13).condition_bound() > COMPENSATE_MAX_CONDITION
    assert not MDSCode(30, 13).encode(A, B).compensated
    assert MDSCode(30, 13).encode(A, B, precision="compensated").compensated
    # gradient codes only add results (a weighted sum): nothing to amplify
    assert GradientCode(30, 5, "cyclic").condition_bound() > COMPENSATE_MIN_CONDITION
    assert not GradientCode(30, 5, "cyclic").encode(A, B).compensated


@pytest.mark.parametrize("code", [MDSCode(6, 4), MatDotCode(7, 3), ReplicationCode(6, 3),
                                  GradientCode(6, 2, "cyclic"), PolynomialCode(7, 2, 3)], ids=repr)
def test_precision_compensated_on_request(code):
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((24, 60)).astype(np.float32), rng.standard_normal((60, 9))
    enc = code.encode(A, B, precision="compensated")
    assert enc.compensated and enc.dtype in (np.float64, np.complex128)
    assert all(t.compensated and "compensated" in repr(t) for t in enc)
    C = code.decode({t.worker: t.compute() for t in enc}, encoding=enc)
    ref = A.astype(np.float64) @ B
    assert np.linalg.norm(C - ref) / np.linalg.norm(ref) <= 1e-14


# --------------------------------------------------------------------------- exact vs sampled
def _circle_codes(n, k, systematic=False):
    out = [MDSCode(n, k, systematic=systematic)]
    if systematic:
        return out + ([MatDotCode(n, (k + 1) // 2, systematic=True)] if k % 2 == 1 and k >= 3 else [])
    if k >= 2:
        out.append(PolynomialCode(n, 1, k))
    if k % 2 == 1 and k >= 3:
        out.append(MatDotCode(n, (k + 1) // 2, systematic=False))
    splits = [(p, k // p) for p in range(2, k) if k % p == 0 and k // p > 1]
    if splits:
        out.append(PolynomialCode(n, *splits[0]))
    return out


@pytest.mark.parametrize("n", range(2, 15))
def test_sampled_worst_case_matches_exact_for_circle_codes(n):
    for k in range(1, n + 1):
        for code in _circle_codes(n, k):
            exact = worst_case_condition(code)
            assert exact.exact and exact.subsets == math.comb(n, k)
            # max_subsets=n: only the n cyclic-run erasures (enumeration when comb(n, k) <= n)
            sampled = worst_case_condition(code, max_subsets=n)
            assert sampled.exact == (math.comb(n, k) <= n)
            assert sampled.value == pytest.approx(exact.value, rel=1e-9), (
                f"{code!r}: sampled {sampled.value} vs exact {exact.value} "
                f"(worst {exact.worst_subset})")
            # with random subsets on top the answer does not change either
            more = worst_case_condition(code, max_subsets=max(n, 50), seed=1)
            assert more.value == pytest.approx(exact.value, rel=1e-9)
            # and condition_bound (one leading-run erasure, by rotation symmetry) agrees
            assert code.condition_bound() == pytest.approx(exact.value, rel=1e-9)
        # systematic: MatDot keeps the plain families (permuted rows): the same worst case;
        # MDS-type codes bound it by cond(V_T) cond(V_S), at most 1.6x above (n <= 16)
        for code in _circle_codes(n, k, systematic=True):
            exact = worst_case_condition(code)
            if code.m > 1:
                assert code.condition_bound() == pytest.approx(exact.value, rel=1e-9)
            else:
                assert exact.value * (1 - 1e-9) <= code.condition_bound() <= 1.6 * exact.value
