"""Soft errors: corrupt worker results are located (or refused), never silently decoded.

Real field: a corruption above the arithmetic's noise floor must be located when there are
enough spare results (``r >= k + 2e``) and must raise :class:`CorruptResultError` when it can
only be detected; a corruption below the floor (the lowest mantissa bits) is harmless and must
not be blamed on anyone. GF(p): every nonzero error is located exactly, up to the
Reed-Solomon capacity ``floor((r - k) / 2)``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import (
    GradientCode,
    MatDotCode,
    MDSCode,
    PolyDotCode,
    PolynomialCode,
    ReplicationCode,
)
from codedml.errors import CodedMLError, ConfigurationError, CorruptResultError

F64_TOL = 1e-10
F32_TOL = 1e-4




# --------------------------------------------------------------------------- helpers
def _real_view(R: np.ndarray) -> np.ndarray:
    """Flat view of the real numbers in R (complex entries as interleaved re, im)."""
    R = np.ascontiguousarray(R)
    return (R.view(R.real.dtype) if np.iscomplexobj(R) else R).reshape(-1)


def typical_index(R: np.ndarray) -> int:
    """Index (into the real view) of an entry of median magnitude."""
    a = np.abs(_real_view(R))
    return int(np.argsort(a, kind="stable")[len(a) // 2])


def flip_bit(R: np.ndarray, index: int, bit: int) -> np.ndarray:
    out = np.array(R, copy=True)
    real = _real_view(out)
    uint = {8: np.uint64, 4: np.uint32}[real.dtype.itemsize]
    bits = real.view(uint)
    bits[index] ^= uint(1) << uint(bit)
    return out


def set_entry(R: np.ndarray, index: int, value: float) -> np.ndarray:
    out = np.array(R, copy=True)
    _real_view(out)[index] = value
    return out


def corrupt(R: np.ndarray, kind: tuple) -> np.ndarray:
    what, arg = kind
    if what == "bit":
        return flip_bit(R, typical_index(R), arg)
    if what == "set":
        return set_entry(R, typical_index(R), arg)
    assert what == "scale"
    return (R * arg).astype(R.dtype)


def problem(code, dtype=np.float64, seed=0, shape=(60, 40, 30)):
    rng = np.random.default_rng(seed)
    M, N, K = shape
    A = rng.standard_normal((M, N)).astype(dtype)
    B = rng.standard_normal((N, K)).astype(dtype)
    enc = code.encode(A, B)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    results = {t.worker: t.compute() for t in enc}
    return enc, ref, results


def rel(C, ref):
    return float(np.linalg.norm(C - ref) / np.linalg.norm(ref))


def bit_kinds(mantissa, exponent, sign):
    return ([(f"mantissa-bit{b}", ("bit", b)) for b in mantissa]
            + [(f"exponent-bit{b}", ("bit", b)) for b in exponent]
            + [(f"sign-bit{sign}", ("bit", sign))])


OTHER_KINDS = [
    ("gross-1e6", ("set", 1e6)),
    ("nan", ("set", np.nan)),
    ("+inf", ("set", np.inf)),
    ("-inf", ("set", -np.inf)),
    ("scale-minus1", ("scale", -1.0)),
    ("scale-1.001", ("scale", 1.001)),
    ("scale-1e3", ("scale", 1e3)),
]

# float64: top 12 mantissa bits 40-51, exponent bits 52-62, sign bit 63.
F64_KINDS = bit_kinds(range(40, 52), range(52, 63), 63) + OTHER_KINDS
# float32 (mantissa 0-22, exponent 23-30, sign 31): the top 12 mantissa bits are 11-22, the
# same relative size of change (2**-12 .. 2**-1 of the entry) as float64 bits 40-51.
F32_KINDS = bit_kinds((11, 14, 17, 20, 22), (23, 26, 28, 30), 31) + OTHER_KINDS

REAL_CODES = [
    MDSCode(10, 5),                     # systematic by default
    MDSCode(10, 5, systematic=False),
    PolynomialCode(10, 2, 2),           # two decoding families (q > 1)
    MatDotCode(10, 3),                  # complex worker results; systematic by default
    MatDotCode(10, 3, systematic=False),
    PolyDotCode(10, 2, 2, 1),
    GradientCode(10, 4, "cyclic"),
    GradientCode(10, 4, "fractional_repetition"),
]
F32_CODES = [MDSCode(10, 5), MDSCode(10, 5, systematic=False), PolynomialCode(10, 2, 2),
             MatDotCode(10, 3), MatDotCode(10, 3, systematic=False)]


def _f32_sure_bit(code) -> int:
    """Lowest mantissa bit whose single-entry flip is always located in float32. Systematic
    MatDot: 18 (measured: flips of bits 15-17 in a systematic worker's result, one summand
    A_i B_i, about a third of a parity result's norm, can pass; the decoded error is then
    6e-8); every other code: 15."""
    return 18 if isinstance(code, MatDotCode) and code.systematic else 15


def _cid(c):
    name = type(c).__name__
    extra = {"PolynomialCode": lambda: f"{c.p}x{c.q}", "PolyDotCode": lambda: f"{c.p}.{c.m}.{c.q}",
             "MatDotCode": lambda: f"m{c.m}", "GradientCode": lambda: "-" + c.scheme[:4],
             "ReplicationCode": lambda: f"b{c.k}"}.get(name, lambda: "")()
    field = "" if c.field is None else f"-GF{c.field}"
    return f"{name}{extra}-n{c.workers}-k{c.recovery_threshold}{field}"


# --------------------------------------------------------------------------- one corrupt result
def _check_located(code, dtype, kind, tol, spare, repeats=1):
    """Corrupt each of k + spare results in turn (``repeats`` times: the locator's random
    projections differ per call) and require it located with an accurate product."""
    enc, ref, results = problem(code, dtype)
    k = code.recovery_threshold
    rows = list(range(k + spare))
    misses = []
    for w in rows * repeats:
        res = {v: results[v] for v in rows}
        res[w] = corrupt(results[w], kind)
        C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
        err = rel(C, ref)
        if faulty != (w,) or not err <= tol:
            misses.append(f"worker {w}: faulty={faulty}, relative error {err:.3g}")
    assert not misses, (
        f"{code!r} {np.dtype(dtype).name}, {len(rows)} results, corruption {kind}: "
        f"{len(misses)}/{len(rows) * repeats} not located or inaccurate: " + "; ".join(misses))


@pytest.mark.parametrize("kind", [k for _, k in F64_KINDS], ids=[i for i, _ in F64_KINDS])
@pytest.mark.parametrize("code", REAL_CODES, ids=_cid)
def test_float64_corruption_is_located(code, kind):
    """r = k + 2 results, the fewest that can locate one error (more: the property sweep)."""
    _check_located(code, np.float64, kind, F64_TOL, 2)


@pytest.mark.parametrize("kind", [k for _, k in F64_KINDS if k[0] != "bit" or k[1] in (40, 52, 62, 63)],
                         ids=[i for i, k in F64_KINDS if k[0] != "bit" or k[1] in (40, 52, 62, 63)])
def test_float64_corruption_is_located_with_all_results(kind):
    code = PolynomialCode(10, 2, 2)
    _check_located(code, np.float64, kind, F64_TOL, code.workers - code.recovery_threshold)


# A flip of one entry's mantissa bit b changes the result by 2^(b-23) of that entry; a random
# projection dilutes a one-entry change by sqrt(entries), so with these 360-entry float32
# results flips of bits 11-14 sit at the locator's threshold (16 eps sqrt(inner) times the
# result's size): they are either located or harmless (decoded error within F32_TOL).
F32_SURE = [(i, k) for i, k in F32_KINDS if not (k[0] == "bit" and k[1] < 15)]
F32_BORDER = [(i, k) for i, k in F32_KINDS if k[0] == "bit" and k[1] < 15]


@pytest.mark.parametrize("kind", [k for _, k in F32_SURE], ids=[i for i, _ in F32_SURE])
@pytest.mark.parametrize("code", F32_CODES, ids=_cid)
def test_float32_corruption_is_located(code, kind):
    if kind[0] == "bit" and kind[1] < _f32_sure_bit(code):
        _check_located_or_harmless(code, kind)
        return
    _check_located(code, np.float32, kind, F32_TOL, 2, repeats=3)


@pytest.mark.parametrize("kind", [k for _, k in F32_BORDER], ids=[i for i, _ in F32_BORDER])
@pytest.mark.parametrize("code", F32_CODES, ids=_cid)
def test_float32_borderline_flips_are_located_or_harmless(code, kind):
    _check_located_or_harmless(code, kind)


def _check_located_or_harmless(code, kind):
    enc, ref, results = problem(code, np.float32)
    rows = list(range(code.recovery_threshold + 2))
    for w in rows:
        res = {v: results[v] for v in rows}
        res[w] = corrupt(results[w], kind)
        C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
        assert faulty in ((), (w,))
        assert rel(C, ref) <= F32_TOL


@pytest.mark.parametrize("dtype, tol", [(np.float64, F64_TOL), (np.float32, F32_TOL)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("bit", [0, 1, 2, 3])
@pytest.mark.parametrize("code", REAL_CODES, ids=_cid)
def test_below_noise_floor_is_not_blamed(code, bit, dtype, tol):
    enc, ref, results = problem(code, dtype)
    k = code.recovery_threshold
    for rows in (list(range(k + 2)), list(range(code.workers - 1))):
        for w in rows:
            res = {v: results[v] for v in rows}
            res[w] = flip_bit(results[w], typical_index(results[w]), bit)
            C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
            assert faulty == (), f"lowest mantissa bit {bit} of worker {w} blamed: {faulty}"
            assert rel(C, ref) <= tol


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("code", REAL_CODES, ids=_cid)
def test_honest_results_are_never_blamed(code, dtype):
    tol = F64_TOL if dtype == np.float64 else F32_TOL
    for seed in range(3):
        enc, ref, results = problem(code, dtype, seed=seed, shape=(96, 80, 64))
        for errors in (0, 1, 2):
            C, faulty = code.decode(results, errors=errors, encoding=enc, return_faulty=True)
            assert faulty == () and rel(C, ref) <= tol


# --------------------------------------------------------------------------- refuse, do not guess
GROSS = [("gross-1e6", ("set", 1e6)), ("scale-minus1", ("scale", -1.0)),
         ("scale-1e3", ("scale", 1e3)), ("exponent-bit56", ("bit", 56)),
         ("mantissa-bit48", ("bit", 48))]


@pytest.mark.parametrize("kind", [k for _, k in GROSS], ids=[i for i, _ in GROSS])
@pytest.mark.parametrize("code", REAL_CODES, ids=_cid)
def test_errors0_with_spare_results_raises(code, kind):
    enc, ref, results = problem(code)
    k = code.recovery_threshold
    for spare in (1, 2, code.workers - k):
        rows = list(range(k + spare))
        for w in (rows[0], rows[-1]):
            res = {v: results[v] for v in rows}
            res[w] = corrupt(results[w], kind)
            with pytest.raises(CorruptResultError):
                code.decode(res, errors=0, encoding=enc)


@pytest.mark.parametrize("kind", [k for _, k in GROSS], ids=[i for i, _ in GROSS])
@pytest.mark.parametrize("code", REAL_CODES, ids=_cid)
def test_detectable_not_correctable_raises(code, kind):
    """r = k + 1 and errors=1: the corruption is detected but cannot be located.

    Fractional repetition is the exception: its ``s + 1`` identical copies per group can
    outvote a corrupt copy with fewer than ``k + 2`` results, so locating it exactly is also
    acceptable there; a silently wrong product never is.
    """
    enc, ref, results = problem(code)
    k = code.recovery_threshold
    rows = list(range(k + 1))
    votes = isinstance(code, GradientCode) and code.scheme == "fractional_repetition"
    for w in rows:
        res = {v: results[v] for v in rows}
        res[w] = corrupt(results[w], kind)
        if not votes:
            with pytest.raises(CorruptResultError):
                code.decode(res, errors=1, encoding=enc)
            continue
        try:
            C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
        except CorruptResultError:
            continue
        assert faulty == (w,) and rel(C, ref) <= F64_TOL, (w, faulty, rel(C, ref))


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_nonfinite_result_is_erased_even_with_errors0(kind):
    code = MDSCode(10, 5)
    enc, ref, results = problem(code)
    rows = list(range(6))
    res = {v: results[v] for v in rows}
    res[3] = set_entry(results[3], 7, np.nan if kind == "nan" else np.inf)
    C, faulty = code.decode(res, errors=0, encoding=enc, return_faulty=True)
    assert faulty == (3,) and rel(C, ref) <= F64_TOL
    # with only k results left after erasure nothing is checked, but it is still exact
    res = {v: results[v] for v in range(5)}
    res[5] = set_entry(results[5], 0, np.nan)
    C, faulty = code.decode(res, errors=0, encoding=enc, return_faulty=True)
    assert faulty == (5,) and rel(C, ref) <= F64_TOL
    # too many erased: refused
    res[4] = set_entry(results[4], 0, np.inf)
    with pytest.raises(CorruptResultError) as info:
        code.decode(res, errors=0, encoding=enc)
    assert set(info.value.suspects) == {4, 5}


@pytest.mark.parametrize("dtype, tol", [(np.float64, F64_TOL), (np.float32, F32_TOL)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("code", [MDSCode(10, 5), PolynomialCode(10, 2, 2), MatDotCode(10, 3),
                                  PolyDotCode(12, 2, 2, 1)], ids=_cid)
def test_two_corrupt_workers_located(code, dtype, tol):
    enc, ref, results = problem(code, dtype)
    k = code.recovery_threshold
    sign = 63 if dtype == np.float64 else 31
    kinds = [("set", 1e6), ("scale", -1.0), ("bit", sign), ("scale", 1e3)]
    for spare in (4, code.workers - k):
        rows = list(range(k + spare))
        for i, pair in enumerate(itertools.combinations(rows[::2], 2)):
            res = {v: results[v] for v in rows}
            for j, w in enumerate(pair):
                res[w] = corrupt(results[w], kinds[(i + j) % len(kinds)])
            C, faulty = code.decode(res, errors=2, encoding=enc, return_faulty=True)
            assert faulty == pair and rel(C, ref) <= tol, (pair, faulty, rel(C, ref))


def test_two_corrupt_with_errors1_is_refused():
    code = MDSCode(10, 5)
    enc, ref, results = problem(code)
    res = dict(results)
    res[2] = corrupt(results[2], ("set", 1e6))
    res[7] = corrupt(results[7], ("scale", -1.0))
    try:
        C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
    except CorruptResultError:
        return
    pytest.fail(f"two corrupt results decoded with errors=1: faulty={faulty}, "
                f"relative error {rel(C, ref):.3g}")


# --------------------------------------------------------------------------- honest zero results
def test_zero_operand_is_not_corruption():
    """An all-zero A gives all-zero (honest) results: the product 0, not a CorruptResultError."""
    code = MDSCode(4, 2)
    A, B = np.zeros((4, 3)), np.ones((3, 2))
    enc = code.encode(A, B)
    C, faulty = code.decode({t.worker: t.compute() for t in enc}, encoding=enc, return_faulty=True)
    assert faulty == () and np.array_equal(C, A @ B)


@pytest.mark.parametrize("code, A, B", [
    (ReplicationCode(4, 2), np.vstack([np.zeros((2, 3)), np.ones((2, 3))]), np.ones((3, 2))),
    (GradientCode(4, 1, "fractional_repetition"), np.ones((2, 2)), np.ones((2, 2))),  # padding
    (GradientCode(6, 1, "fractional_repetition"), np.ones((2, 3)), np.ones((3, 2))),
    (GradientCode(30, 1, "fractional_repetition"),
     np.random.default_rng(0).standard_normal((20, 160)),
     np.random.default_rng(1).standard_normal((160, 10))),
], ids=["replication-zero-block", "gradient-n4-inner2", "gradient-n6-inner3", "gradient-n30-inner160"])
def test_workers_with_zero_operands_decode(code, A, B):
    """Some workers hold only zero blocks (zero rows of A, or inner-dimension padding)."""
    enc = code.encode(A, B)
    results = {t.worker: t.compute() for t in enc}
    rows = sorted(results)[1:]  # one straggler
    C, faulty = code.decode({w: results[w] for w in rows}, encoding=enc, return_faulty=True)
    assert faulty == ()
    np.testing.assert_allclose(C, A @ B, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, s", [(4, 1), (10, 4), (12, 2)])
def test_fractional_repetition_decodes_from_all_results(n, s):
    """With every worker's result the decoding matrix is n x n but of rank n / (s + 1)."""
    code = GradientCode(n, s, "fractional_repetition")
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((6, 4 * n)), rng.standard_normal((4 * n, 3))
    enc = code.encode(A, B)
    C, faulty = code.decode({t.worker: t.compute() for t in enc}, encoding=enc,
                            return_faulty=True)
    assert faulty == ()
    np.testing.assert_allclose(C, A @ B, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- replication votes
@pytest.mark.parametrize("field", [None, 65537], ids=["real", "GF65537"])
def test_replication_three_replicas_outvote_one(field):
    code = ReplicationCode(9, 3, field=field)  # every block three times
    if field is None:
        enc, ref, results = problem(code)
    else:
        rng = np.random.default_rng(0)
        A = rng.integers(0, field, (9, 5))
        B = rng.integers(0, field, (5, 4))
        enc = code.encode(A, B)
        ref = (A.astype(object) @ B.astype(object)) % field
        results = {t.worker: t.compute() for t in enc}
    for w in range(9):
        res = dict(results)
        if field is None:
            res[w] = corrupt(results[w], ("set", 1e6))
        else:
            res[w] = (results[w] + 12345) % field
        C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
        assert faulty == (w,)
        if field is None:
            assert rel(C, ref) <= F64_TOL
        else:
            assert np.array_equal(C, ref.astype(np.int64))


@pytest.mark.parametrize("field", [None, 65537], ids=["real", "GF65537"])
@pytest.mark.parametrize("errors", [0, 1])
def test_replication_two_replicas_is_ambiguous(field, errors):
    code = ReplicationCode(6, 3, field=field)  # every block twice: one vote against one
    if field is None:
        enc, ref, results = problem(code)
    else:
        rng = np.random.default_rng(0)
        enc = code.encode(rng.integers(0, field, (6, 5)), rng.integers(0, field, (5, 4)))
        results = {t.worker: t.compute() for t in enc}
    for w in range(6):
        res = dict(results)
        res[w] = corrupt(results[w], ("set", 1e6)) if field is None else (results[w] + 1) % field
        with pytest.raises(CorruptResultError):
            code.decode(res, errors=errors, encoding=enc)


# --------------------------------------------------------------------------- GF(p)
P = 2**31 - 1
GF_CODES = [
    MDSCode(12, 4, field=P),
    PolynomialCode(12, 2, 2, field=P),
    MatDotCode(12, 2, field=P),
    PolyDotCode(12, 2, 2, 1, field=65537),
]


def gf_problem(code, seed=0, shape=(8, 6, 4)):
    p = code.field
    rng = np.random.default_rng(seed)
    M, N, K = shape
    A = rng.integers(0, p, (M, N))
    B = rng.integers(0, p, (N, K))
    enc = code.encode(A, B)
    ref = ((A.astype(object) @ B.astype(object)) % p).astype(np.int64)
    return enc, ref, {t.worker: t.compute() for t in enc}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from(GF_CODES), data=st.data())
def test_gf_any_nonzero_additive_error_is_located(code, data):
    p = code.field
    enc, ref, results = gf_problem(code)
    k = code.recovery_threshold
    r = data.draw(st.integers(k + 2, code.workers), label="results")
    rows = sorted(data.draw(st.permutations(range(code.workers)))[:r])
    w = data.draw(st.sampled_from(rows), label="worker")
    shape = results[w].shape
    idx = data.draw(st.integers(0, int(np.prod(shape)) - 1), label="entry")
    delta = data.draw(st.integers(1, p - 1), label="delta")
    res = {v: results[v] for v in rows}
    bad = results[w].copy().reshape(-1)
    bad[idx] = (bad[idx] + delta) % p
    res[w] = bad.reshape(shape)
    C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
    assert faulty == (w,)
    assert np.array_equal(C, ref)


@pytest.mark.parametrize("value", [P, P + 5, 2**40, -1, -(2**40)],
                         ids=["p", "p+5", "2**40", "-1", "-2**40"])
@pytest.mark.parametrize("errors", [0, 1])
def test_gf_out_of_range_is_located(value, errors):
    code = MDSCode(12, 4, field=P)
    enc, ref, results = gf_problem(code)
    for rows in (list(range(5)), list(range(12))):
        for w in (rows[0], rows[-1]):
            res = {v: results[v] for v in rows}
            bad = results[w].copy()
            bad[1, 2] = value
            res[w] = bad
            C, faulty = code.decode(res, errors=errors, encoding=enc, return_faulty=True)
            assert faulty == (w,) and np.array_equal(C, ref)


@pytest.mark.parametrize("code", [MDSCode(12, 4, field=P), PolynomialCode(12, 2, 2, field=65537),
                                  MatDotCode(12, 2, field=P)], ids=_cid)
@pytest.mark.parametrize("e", [1, 2, 3])
def test_gf_reed_solomon_capacity(code, e):
    """e errors among r = k + 2e results are all located, for every e up to 3."""
    enc, ref, results = gf_problem(code)
    k = code.recovery_threshold
    rng = np.random.default_rng(e)
    p = code.field
    for trial in range(6):
        rows = sorted(rng.choice(code.workers, k + 2 * e, replace=False).tolist())
        bad = sorted(rng.choice(rows, e, replace=False).tolist())
        res = {v: results[v] for v in rows}
        for w in bad:
            if trial % 2:  # whole result replaced by garbage
                res[w] = rng.integers(0, p, results[w].shape)
            else:          # one entry off by a random nonzero amount
                x = results[w].copy()
                x[rng.integers(x.shape[0]), rng.integers(x.shape[1])] += rng.integers(1, p)
                res[w] = x % p
        C, faulty = code.decode(res, errors=e, encoding=enc, return_faulty=True)
        assert faulty == tuple(bad)
        assert np.array_equal(C, ref)


@pytest.mark.parametrize("code", [GradientCode(8, 2, "cyclic", field=65537),
                                  GradientCode(8, 3, "fractional_repetition", field=65537)],
                         ids=_cid)
def test_gf_gradient_code_locates_one_error(code):
    enc, ref, results = gf_problem(code, shape=(5, 16, 3))
    k = code.recovery_threshold
    rows = list(range(code.workers))
    assert len(rows) >= k + 2
    for w in rows:
        res = dict(results)
        res[w] = (results[w] + 7) % code.field
        C, faulty = code.decode(res, errors=1, encoding=enc, return_faulty=True)
        assert faulty == (w,) and np.array_equal(C, ref)


def test_gf_errors0_with_spare_results_raises():
    code = MDSCode(12, 4, field=P)
    enc, ref, results = gf_problem(code)
    res = {v: results[v] for v in range(6)}
    res[2] = (results[2] + 1) % P
    with pytest.raises(CorruptResultError):
        code.decode(res, errors=0, encoding=enc)


# --------------------------------------------------------------------------- property sweep
PROP_CODE = MDSCode(10, 5)
_PROP = problem(PROP_CODE, shape=(40, 32, 24))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bit=st.integers(45, 63), data=st.data())
def test_property_high_bit_flip_located(bit, data):
    enc, ref, results = _PROP
    k = PROP_CODE.recovery_threshold
    r = data.draw(st.integers(k + 2, PROP_CODE.workers), label="results")
    rows = sorted(data.draw(st.permutations(range(PROP_CODE.workers)))[:r])
    w = data.draw(st.sampled_from(rows), label="worker")
    R = results[w]
    a = np.abs(R.reshape(-1))
    # an entry of typical magnitude: between the 25th and 75th percentile
    candidates = np.flatnonzero((a >= np.quantile(a, 0.25)) & (a <= np.quantile(a, 0.75)))
    idx = int(data.draw(st.sampled_from(candidates.tolist()), label="entry"))
    res = {v: results[v] for v in rows}
    res[w] = flip_bit(R, idx, bit)
    C, faulty = PROP_CODE.decode(res, errors=1, encoding=enc, return_faulty=True)
    assert faulty == (w,)
    assert rel(C, ref) <= F64_TOL


def test_every_error_is_a_codedml_error():
    code = MDSCode(10, 5)
    enc, ref, results = problem(code)
    res = dict(results)
    res[0] = corrupt(results[0], ("set", 1e6))
    with pytest.raises(CodedMLError):
        code.decode(res, errors=0, encoding=enc)


# --------------------------------------------------------------------------- the check's parts
def test_projection_draws_cached_are_the_seeded_generators():
    """The consistency check's random unit vectors come from a generator seeded with 0x5EED,
    drawn in family order (reproducible decodes): the cached ones are exactly those numbers,
    read-only, and the cache stays bounded; draws too large to keep are drawn afresh alike."""
    from codedml.codes import _base

    dims = ((3, 5), (2, 7))
    fresh = np.random.default_rng(0x5EED)
    want = [_base._unit_draws(fresh, 4, x, y) for x, y in dims]
    for _ in range(2):   # drawn, then from the cache
        got = _base._draws(dims, 4)
        for (u, v), (u0, v0) in zip(got, want):
            np.testing.assert_array_equal(u, u0)
            np.testing.assert_array_equal(v, v0)
            assert not u.flags.writeable and not v.flags.writeable
    assert _base._draws(dims, 4) is _base._draws(dims, 4)
    big = ((_base._DRAWS_MAX, 1),)
    assert _base._draws(big, 4) is not _base._draws(big, 4)
    np.testing.assert_array_equal(_base._draws(big, 4)[0][0],
                                  _base._unit_draws(np.random.default_rng(0x5EED), 4, *big[0])[0])
    for x in range(2 * _base._DRAWS_SIZE):
        _base._draws(((x + 1, 1),), 2)
    assert len(_base._DRAWS) <= _base._DRAWS_SIZE


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 9), spread=st.floats(0.0, 6.0),
       cplx=st.booleans(), bad=st.booleans(), compiled=st.booleans())
def test_property_one_candidate_residual_is_the_batched_ones(seed, n, spread, cplx, bad, compiled):
    """The check's shortcut for the candidate that keeps every result (nothing wrong, the
    common case) gives the batched residual of that one candidate, for weights spread over
    ``10**spread``, complex or real projections, consistent or not, full rank or not: bit
    for bit by numpy's QR (``WRESID`` off), to the rounding of the weighted projections'
    size by the compiled reflections (``_kernels.wresid``, which the decoder takes where
    built)."""
    from codedml.codes import _base

    if compiled and _base._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")

    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, n))
    M = rng.standard_normal((n, d)) + (1j * rng.standard_normal((n, d)) if cplx else 0)
    if rng.random() < 0.2:
        M[:, -1] = M[:, 0]          # rank deficient: the shortcut hands over to the batch
    X = rng.standard_normal((d, 4)) + (1j * rng.standard_normal((d, 4)) if cplx else 0)
    y = M @ X + 1e-9 * rng.standard_normal((n, 4))
    if bad:
        y[int(rng.integers(n))] += 1.0
    W = 10.0 ** rng.uniform(0, spread, n) * 1e8
    keep = np.arange(n)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_base, "WRESID", compiled)
        one = _base._residual_all(M, y, W, keep, d)
    batch = float(_base._residuals(M, y, W, keep[None], d)[0])
    if not compiled:
        assert one == batch or (np.isnan(one) and np.isnan(batch))
        return
    # both err by a few eps max|Yk| cond(W M) (a different QR of the same range), on the
    # scale of the returned residual, which is divided by 1 + 1e3 eps max|Yk|
    eps = np.finfo(np.float64).eps
    big = float(np.abs(y * W[:, None]).max())
    cond = float(np.linalg.cond(M * W[:, None]))
    bound = 64 * n * eps * big * cond / (1.0 + 1e3 * eps * big)
    assert abs(one - batch) <= bound, (one, batch, bound)


def test_one_candidate_residual_takes_numpys_where_the_compiled_one_declines(monkeypatch):
    """Where ``_kernels.wresid`` declines (NaN: something not finite, or a weighted basis
    near rank loss) the residual is numpy's, bit for bit, not NaN."""
    from codedml.codes import _base

    if _base._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")
    rng = np.random.default_rng(2)
    M = rng.standard_normal((6, 4)) + 1j * rng.standard_normal((6, 4))
    y = M @ rng.standard_normal((4, 4)) + 1e-9 * rng.standard_normal((6, 4))
    W, keep = 10.0 ** rng.uniform(8, 10, 6), np.arange(6)
    calls = []
    monkeypatch.setattr(_base._K, "wresid", lambda *a: calls.append(a) or (float("nan"), 1.0))
    got = _base._residual_all(M, y, W, keep, 4)
    monkeypatch.setattr(_base, "WRESID", False)
    assert calls and got == _base._residual_all(M, y, W, keep, 4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 9), mags=st.integers(-200, 200),
       zeros=st.integers(0, 3), nan=st.booleans(), enc=st.booleans(),
       rtol=st.sampled_from([None, 1e-9, np.float32(3e-5), np.float64(1e-11)]))
def test_property_noise_scale_is_numpys_elementwise_formula(seed, n, mags, zeros, nan, enc, rtol):
    """The noise scale, taken in Python floats (a handful of workers), is the numpy
    elementwise formula it replaced, bit for bit: norms from the sums of squares, the
    ratios to the tasks' scales and their median, each worker's tolerance, the floor."""
    import statistics as stats

    from codedml.codes import _base

    rng = np.random.default_rng(seed)
    code = MDSCode(n + 2, n)
    A = rng.standard_normal((2 * n, 3)) * 10.0 ** (mags // 2)
    A[:min(zeros, n - 1)] = 0.0
    tasks = code.encode(A, rng.standard_normal((3, 2)))
    raw = [t.compute() for t in tasks]
    if nan:
        raw[int(rng.integers(len(raw)))][0, 0] = np.nan
    rows = np.arange(len(raw))
    sq = np.array([float(np.sum(r * r)) for r in raw])
    encoding = tasks if enc else None
    try:
        got = code._noise_scale(rows, raw, encoding, rtol, sq)
    except ConfigurationError as exc:
        got = exc
    # the formula as numpy arrays (what the decoder computed before the Python floats)
    with np.errstate(all="ignore"):
        norms = np.sqrt(sq)
        for i in _base._redo(norms.tolist()):
            norms[i] = _base._scaled_fro(raw[i])
        if encoding is not None:
            scale = np.asarray(encoding.scales[rows], dtype=np.float64)
            ratio = norms / scale
            ratio = ratio[np.isfinite(ratio) & (scale > 0)]
            lo = 1.0 / math.sqrt(max(encoding.inner, 1))
            rho = min(max(stats.median(ratio.tolist()), lo), 1.0) if ratio.size else 1.0
            expected, dt, inner = rho * scale, encoding.dtype, encoding.inner
        else:
            med = np.nanmedian(norms) if np.isfinite(norms).any() else 1.0
            expected, dt, inner = np.full(len(rows), med), raw[0].dtype, 1024
        tol = 16.0 * float(np.finfo(dt).eps) if rtol is None else rtol
        tau = tol * math.sqrt(max(inner, 1)) * expected / math.sqrt(max(1, math.prod(raw[0].shape)))
        nonzero = tau[tau > 0]
        typical = float(stats.median(nonzero.tolist())) if nonzero.size else 0.0
    if 0.0 < typical < _base._TAU_FLOOR:
        assert isinstance(got, ConfigurationError) and "too small" in str(got)
        return
    want = np.maximum(tau, max(0.1 * typical, _base._TAU_FLOOR))
    assert not isinstance(got, Exception), got
    np.testing.assert_array_equal(got, want)   # bit for bit, NaN where NaN


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), r=st.integers(1, 8), h=st.integers(0, 5),
       y=st.integers(1, 6), bad=st.booleans())
def test_property_batched_packed_projection_is_the_per_result_one(seed, r, h, y, bad):
    """Small packed results (a circle code's real halves) are projected in one batched
    product; it gives the per-result loop's numbers (the path of large results) bit for bit,
    non-finite values included (they must show up, to be erased)."""
    from codedml.codes import _base

    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((2 * h, y)) for _ in range(r)]
    if bad and h:
        arrays[int(rng.integers(r))][0, 0] = np.inf
    E = _base._Packed(arrays)
    u, v = _base._draws((_base._dims(E),), 4)[0]
    small = _base._project(E, u, v)
    import unittest.mock as mock
    with mock.patch.object(_base, "_SMALL_STACK", -1):   # the per-result loop
        loop = _base._project(E, u, v)
    np.testing.assert_array_equal(small, loop)   # bit for bit (NaN where NaN)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 5), (8,), (4, 1), (2, 300)])
def test_compiled_pass_gives_the_projections_and_norms_numpy_does(packed, dtype, shape):
    """``_base._project_sq`` (one compiled pass) against ``_project`` and ``_norms`` apart: the
    same projections (to rounding) for results kept as rows or as packed halves, each result's
    whole sum of squares, and the noise scale computed from those sums equal to the one
    computed from the results (no ``encoding=``: nothing clamps the norms' ratio there)."""
    from codedml.codes import _base as base

    if base._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")
    rng = np.random.default_rng(7)
    raw = [(10.0 ** rng.integers(-3, 4)) * rng.standard_normal(shape).astype(dtype) for _ in range(5)]
    E = base._Packed(raw) if packed else base._Rows(raw)
    u, v = base._draws((base._dims(E),), 4)[0]
    got = base._project_sq(E, u, v, raw)
    assert got is not None
    Y, sq = got
    want = base._project(E, u, v)
    assert Y.dtype == want.dtype
    np.testing.assert_allclose(Y, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(np.sqrt(sq), base._norms(raw), rtol=1e-6 if dtype == np.float32 else 1e-13)
    code = MDSCode(5, 3)
    rows = np.arange(5)
    np.testing.assert_allclose(code._noise_scale(rows, raw, None, None, sq),
                               code._noise_scale(rows, raw, None, None), rtol=1e-6)
    # not the results themselves, or complex: declined (numpy's path, not a wrong number)
    assert base._project_sq(E, u, v, [r.copy() for r in raw]) is None
    craw = [r.astype(np.complex128) for r in raw]
    assert base._project_sq(base._Rows(craw), u, v, craw) is None
