"""Systematic codes (``systematic=True``): MDS, polynomial codes with ``col_blocks=1`` and
MatDot, over the reals (every construction) and GF(p).

Properties checked (hypothesis, random n, thresholds, unaligned shapes, vector B):

* decode from any recovery-threshold subset (and any larger one) equals ``A @ B``: within
  ``1e-10 * ||A||_F ||B||_F`` for float64 inputs (``1e-4`` for float32), exactly over GF(p);
  systematic MatDot also from its ``m`` systematic workers alone;
* when every systematic worker answers, decode is pure assembly: no solver runs (the real
  solvers ``_lstsq`` and ``polydot._solve_missing`` and the GF(p) solvers are patched to fail) and the decoded product is
  bit for bit the systematic workers' results (MDS-type: stacked; MatDot: summed);
* with ``s`` systematic blocks missing, exactly one solve runs and it has ``s`` unknowns;
  the present blocks are copied unchanged;
* encode: the systematic workers' operands are the (padded) data blocks themselves;
* soft errors: ``e`` corrupt results among ``k + 2e`` are located (systematic and parity
  workers alike) and the product is still right;
* the same API as the non-systematic code: shapes, padding refusal, dtypes, repr, equality;
  PolyDot and ``col_blocks > 1`` refuse ``systematic=True`` by name.
"""

from __future__ import annotations

import itertools

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import codedml.codes._base as base
import codedml.codes._gfp as gfp
import codedml.codes.polydot as polydot
from codedml.codes import CONSTRUCTIONS, MatDotCode, MDSCode, PolyDotCode, PolynomialCode
from codedml.errors import ConfigurationError, CorruptResultError

P16 = 65521
P21 = 2097143
FIELDS = [None, P16, P21]
FIELD_IDS = ["real", "GF65521", "GF2097143"]
#: float64 inputs: decoded error relative to ||A||_F ||B||_F (n <= 10 here: worst-case
#: condition numbers below 1e4 even for the equispaced baseline, so 1e-10 has a wide margin)
REAL_TOL = 1e-10
F32_TOL = 1e-4

# the same draws in every run (CI's stable), except under benchmarks/fuzz.py (FUZZ_RANDOMIZE=1),
# which runs them under many seeds
PROPS = settings(max_examples=25, deadline=None,
                 derandomize=os.environ.get("FUZZ_RANDOMIZE") != "1",
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- strategies
@st.composite
def systematic_codes(draw, field=None, kinds=("MDS", "Polynomial", "MatDot"), max_workers=10):
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(1, max_workers))
    kw = {"field": field} if field is not None else {"construction": draw(st.sampled_from(CONSTRUCTIONS))}
    if kind == "MDS":
        return MDSCode(n, draw(st.integers(1, n)), systematic=True, **kw)
    if kind == "Polynomial":
        return PolynomialCode(n, draw(st.integers(1, n)), 1, systematic=True, **kw)
    return MatDotCode(n, draw(st.integers(1, (n + 1) // 2)), systematic=True, **kw)


@st.composite
def operands(draw, field, lo=1, hi=11, f32=True):
    M = draw(st.integers(lo, hi))
    N = draw(st.integers(lo, hi))
    bshape = (N,) if draw(st.booleans()) else (N, draw(st.integers(1, 7)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if field is None:
        A = 10.0 ** draw(st.integers(-3, 3)) * rng.standard_normal((M, N))
        B = rng.standard_normal(bshape)
        if f32 and draw(st.booleans()):
            A, B = A.astype(np.float32), B.astype(np.float32)
        return A, B
    return rng.integers(0, field, size=(M, N)), rng.integers(0, field, size=bshape)


def n_sys(code) -> int:
    """The systematic workers are 0 .. s-1: s = k (MDS-type) or m (MatDot)."""
    return code.m if code.m > 1 else code.p


def check_product(out, A, B, field):
    if field is None:
        C = A.astype(np.float64) @ B.astype(np.float64)
        assert out.shape == C.shape
        tol = F32_TOL if np.result_type(A.dtype, B.dtype) == np.float32 else REAL_TOL
        scale = max(np.linalg.norm(A.astype(np.float64)) * np.linalg.norm(B.astype(np.float64)),
                    np.finfo(float).tiny)
        err = np.linalg.norm(out - C) / scale
        assert err < tol, f"error {err:.3e} relative to ||A|| ||B||"
    else:
        C = (A.astype(object) @ B.astype(object)) % field
        assert out.shape == C.shape
        np.testing.assert_array_equal(out, C.astype(np.int64))


def padded(X, rows, cols=None):
    """X zero-padded to ``rows`` rows (and ``cols`` columns)."""
    X = np.asarray(X)
    out = np.zeros((rows,) + ((cols,) if cols is not None else X.shape[1:]), dtype=X.dtype)
    out[tuple(slice(0, s) for s in X.shape)] = X
    return out


def _no_solve(*args, **kwargs):
    raise AssertionError("a solver ran although every systematic result was there")


# --------------------------------------------------------------------------- decode
@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@PROPS
@given(data=st.data())
def test_any_threshold_subset_decodes(field, data):
    code = data.draw(systematic_codes(field), label="code")
    A, B = data.draw(operands(field), label="operands")
    tasks = code.encode(A, B)
    n, k = code.workers, code.recovery_threshold
    S = data.draw(st.sets(st.integers(0, n - 1), min_size=k, max_size=n), label="received")
    out, info = code.decode({w: tasks[w].compute() for w in S}, encoding=tasks, return_info=True)
    assert info.faulty == ()
    check_product(out, A, B, field)


@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@PROPS
@given(data=st.data())
def test_every_systematic_result_means_assembly_without_a_solve(field, data):
    code = data.draw(systematic_codes(field), label="code")
    A, B = data.draw(operands(field), label="operands")
    tasks = code.encode(A, B)
    n, s = code.workers, n_sys(code)
    # GF(p) MatDot with 2m or more results checks the spare ones exactly, which needs the
    # product polynomial (a solve); the reals check spares on random projections instead
    most = n - s if field is None or code.m == 1 else min(n - s, code.m - 1)
    extra = (data.draw(st.sets(st.integers(s, n - 1), max_size=most), label="parity results")
             if most > 0 else set())
    # MatDot: the m systematic products alone suffice (fewer than 2m - 1)
    if code.m == 1:
        extra |= set(range(s, max(s, code.recovery_threshold)))
    S = set(range(s)) | extra
    assert code.decodable(S)
    results = {w: tasks[w].compute() for w in S}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "_lstsq", _no_solve)
        mp.setattr(polydot, "_solve_missing", _no_solve)
        mp.setattr(polydot, "_solve_missing_into", _no_solve)
        mp.setattr(gfp, "solve_mod", _no_solve)
        mp.setattr(gfp, "inv_mod", _no_solve)
        mp.setattr(type(code), "_solve_real", _no_solve)
        out = code.decode(results, encoding=tasks)
    check_product(out, A, B, field)
    # bit for bit what the systematic workers returned: assembly, not arithmetic
    C = tasks.shape
    if code.m == 1:
        stacked = np.concatenate([np.asarray(results[w]) for w in range(s)], axis=0)
        np.testing.assert_array_equal(out, stacked[tuple(slice(0, x) for x in C)])
    elif field is None:
        total = np.array(results[0], dtype=np.result_type(results[0].dtype, np.float64))
        for w in range(1, s):
            total += results[w]
        np.testing.assert_array_equal(out, total.real[tuple(slice(0, x) for x in C)])
    else:
        total = np.zeros_like(np.asarray(results[0], dtype=np.int64))
        for w in range(s):
            total = (total + np.asarray(results[w], dtype=np.int64)) % field
        np.testing.assert_array_equal(out, total[tuple(slice(0, x) for x in C)])


@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@PROPS
@given(data=st.data())
def test_missing_systematic_blocks_are_the_only_unknowns(field, data):
    """MDS-type codes: with the systematic blocks ``miss`` absent, one solve runs and its
    system has exactly ``len(miss)`` unknowns; the present blocks pass through unchanged."""
    code = data.draw(systematic_codes(field, kinds=("MDS", "Polynomial")), label="code")
    n, s = code.workers, code.p
    if s == n:  # no parity worker: nothing can be missing
        return
    A, B = data.draw(operands(field), label="operands")
    tasks = code.encode(A, B)
    miss = data.draw(st.sets(st.integers(0, s - 1), min_size=1, max_size=min(s, n - s)),
                     label="missing systematic")
    par = data.draw(st.sets(st.integers(s, n - 1), min_size=len(miss), max_size=n - s),
                    label="parity results")
    S = (set(range(s)) - miss) | par
    results = {w: tasks[w].compute() for w in S}
    calls = []
    targets = []
    if field is None:
        real, fused = polydot._solve_missing, polydot._solve_missing_into

        def spy(plan, rhs):  # the system solved: parity results x missing blocks
            calls.append(plan.Gm.shape)
            return real(plan, rhs)

        def spy_fused(plan, raw, C2, *small):  # the same system, folded into one pass
            calls.append(plan.Gm.shape)
            return fused(plan, raw, C2, *small)
        targets = [(polydot, "_solve_missing", spy), (polydot, "_solve_missing_into", spy_fused)]
    else:
        real = gfp.solve_mod

        def spy(a, b, p):
            calls.append(np.shape(a))
            return real(a, b, p)
        targets = [(gfp, "solve_mod", spy)]
    with pytest.MonkeyPatch.context() as mp:
        for target in targets:
            mp.setattr(*target)
        out = code.decode(results, encoding=tasks)
    check_product(out, A, B, field)
    assert len(calls) == 1, calls
    assert calls[0][1] == len(miss)
    if field is not None:
        assert calls[0] == (len(miss), len(miss))
    else:
        assert calls[0][0] == len(par)
    # the present blocks pass through unchanged (the padded product, rows of rb per block)
    full = code.decode(results, shape=code.padded_shape(tasks.shape))
    for w in set(range(s)) - miss:
        rb = np.shape(results[w])[0]
        np.testing.assert_array_equal(full[w * rb:(w + 1) * rb], results[w])


# --------------------------------------------------------------------------- encode
@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@PROPS
@given(data=st.data())
def test_systematic_tasks_are_the_data_blocks(field, data):
    code = data.draw(systematic_codes(field), label="code")
    A, B = data.draw(operands(field), label="operands")
    tasks = code.encode(A, B)
    assert len(tasks) == code.workers
    dt = tasks[0].a.dtype if field is None else np.int64
    packed = field is None and code.construction == "circle"
    M, N = A.shape
    if code.m == 1:
        k = code.p
        Ap = padded(A, -(-M // (k * (2 if packed else 1))) * k * (2 if packed else 1))
        rb = Ap.shape[0] // k
        for w in range(k):
            np.testing.assert_array_equal(np.asarray(tasks[w].a), Ap[w * rb:(w + 1) * rb].astype(dt))
        for w in range(code.workers):  # B is shared, unencoded
            np.testing.assert_array_equal(np.asarray(tasks[w].b), np.asarray(B).astype(tasks[w].b.dtype))
        return
    m = code.m
    mult = m * (2 if packed else 1)
    Np = -(-N // mult) * mult
    Ap = padded(A.T, Np).T
    Bp = padded(B, Np)
    nb = Np // mult
    for w in range(m):
        a, b = np.asarray(tasks[w].a), np.asarray(tasks[w].b)
        if packed:
            lo = 2 * w * nb
            np.testing.assert_array_equal(a.real, Ap[:, lo:lo + nb].astype(a.real.dtype))
            np.testing.assert_array_equal(a.imag, Ap[:, lo + nb:lo + 2 * nb].astype(a.real.dtype))
            np.testing.assert_array_equal(b.real, Bp[lo:lo + nb].astype(b.real.dtype))
            np.testing.assert_array_equal(-b.imag, Bp[lo + nb:lo + 2 * nb].astype(b.real.dtype))
        else:
            np.testing.assert_array_equal(a, Ap[:, w * nb:(w + 1) * nb].astype(dt))
            np.testing.assert_array_equal(b, Bp[w * nb:(w + 1) * nb].astype(dt))


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_parity_rows_are_the_lagrange_combinations(construction):
    """A parity worker holds sum_i G[w, i] A_i with G = V V_S^{-1}: checked against an
    independent evaluation of the Lagrange basis on the systematic points."""
    code = MDSCode(7, 3, systematic=True, construction=construction)
    G = code._generator()
    np.testing.assert_array_equal(G[:3], np.eye(3))
    x = (code._points[code._order] if construction != "circle"
         else np.exp(2j * np.pi * code._order / 7))
    for w in range(3, 7):
        for i in range(3):
            Li = np.prod([(x[w] - x[j]) / (x[i] - x[j]) for j in range(3) if j != i])
            assert abs(G[w, i] - (Li.real if construction != "circle" else Li)) < 1e-12


# --------------------------------------------------------------------------- soft errors
@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@PROPS
@given(data=st.data())
def test_soft_errors_are_located(field, data):
    code = data.draw(systematic_codes(field, max_workers=11).filter(
        lambda c: c.workers - c.recovery_threshold >= 2), label="code")
    A, B = data.draw(operands(field, f32=False), label="operands")
    tasks = code.encode(A, B)
    n, k = code.workers, code.recovery_threshold
    e = data.draw(st.integers(1, (n - k) // 2), label="errors")
    S = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=k + 2 * e, max_size=n),
                         label="received"))
    bad = set(data.draw(st.sets(st.sampled_from(S), min_size=1, max_size=e), label="corrupt"))
    rng = np.random.default_rng(len(S))
    results = {}
    for w in S:
        r = np.array(tasks[w].compute())
        if w in bad:
            if field is None:
                r = r + 1e3 * (1.0 + np.abs(r))
            else:
                r = (r.astype(np.int64) + rng.integers(1, field, size=r.shape)) % field
        results[w] = r
    out, faulty = code.decode(results, errors=e, encoding=tasks, return_faulty=True)
    assert set(faulty) == bad
    check_product(out, A, B, field)


@pytest.mark.parametrize("field", [None, P16], ids=["real", "GF65521"])
def test_corruption_beyond_the_budget_raises(field):
    """Every systematic worker plus one parity worker answer, one systematic result is wrong:
    with errors=0 the spare parity result exposes it instead of a silently wrong assembly."""
    code = MDSCode(6, 3, systematic=True, field=field)
    rng = np.random.default_rng(1)
    if field is None:
        A, B = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    else:
        A, B = rng.integers(0, field, (6, 4)), rng.integers(0, field, (4, 3))
    tasks = code.encode(A, B)
    results = {w: np.array(tasks[w].compute()) for w in (0, 1, 2, 4)}
    results[1] = results[1] + 1 if field is not None else results[1] * 2.0
    if field is not None:
        results[1] %= field
    with pytest.raises(CorruptResultError):
        code.decode(results, encoding=tasks)


# --------------------------------------------------------------------------- same API
@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@PROPS
@given(data=st.data())
def test_same_api_as_the_plain_code(field, data):
    code = data.draw(systematic_codes(field), label="code")
    plain = type(code)(code.workers, **_args(code), systematic=False,
                       **({"field": field} if field else {"construction": code.construction}))
    A, B = data.draw(operands(field), label="operands")
    ts, tp = code.encode(A, B), plain.encode(A, B)
    assert ts.shape == tp.shape and ts.inner == tp.inner
    # the operand dtype follows the same rule (float32 workers only below the condition bound;
    # complex where the circle construction packs inner pairs: m > 1, MatDot and PolyDot)
    for enc, c in ((ts, code), (tp, plain)):
        f32 = (field is None and np.result_type(A.dtype, B.dtype) == np.float32
               and c.condition_bound() <= base.FLOAT32_MAX_CONDITION)
        real = np.float32 if f32 else np.float64
        packed = field is None and getattr(c, "construction", None) == "circle" and getattr(c, "m", 1) > 1
        want = (np.complex64 if f32 else np.complex128) if packed else real
        assert enc.dtype == (want if field is None else np.int64), (c, enc.dtype)
        assert all(t.a.dtype == enc.dtype for t in enc)
    assert code.padded_shape(ts.shape) == plain.padded_shape(tp.shape)
    assert [t.a.shape for t in ts] == [t.a.shape for t in tp]
    assert [np.shape(t.b) for t in ts] == [np.shape(t.b) for t in tp]
    assert [t.compute().shape for t in ts] == [t.compute().shape for t in tp]
    n, k = code.workers, code.recovery_threshold
    S = data.draw(st.sets(st.integers(0, n - 1), min_size=k, max_size=n), label="received")
    out_s = code.decode({w: ts[w].compute() for w in S}, encoding=ts)
    out_p = plain.decode({w: tp[w].compute() for w in S}, encoding=tp)
    assert out_s.shape == out_p.shape and out_s.dtype == out_p.dtype
    if field is None:
        scale = np.linalg.norm(A.astype(float)) * np.linalg.norm(B.astype(float))
        tol = F32_TOL if np.result_type(A.dtype, B.dtype) == np.float32 else REAL_TOL
        assert np.linalg.norm(out_s - out_p) <= 2 * tol * max(scale, np.finfo(float).tiny)
    else:
        np.testing.assert_array_equal(out_s, out_p)


def _args(code):
    if isinstance(code, MDSCode):
        return {"k": code.p}
    if isinstance(code, PolynomialCode):
        return {"row_blocks": code.p, "col_blocks": code.q}
    return {"inner_blocks": code.m}


def test_padding_is_refused_without_a_shape_as_for_the_plain_code():
    code = MDSCode(5, 3, systematic=True)
    A, B = np.ones((7, 4)), np.ones(4)                         # 7 rows padded to 12
    tasks = code.encode(A, B)
    results = {w: tasks[w].compute() for w in range(3)}
    with pytest.raises(ConfigurationError, match="encoding="):
        code.decode(results)
    np.testing.assert_array_equal(code.decode(results, shape=(7,)), A @ B)


def test_identity_repr_and_refusals():
    a, b = MDSCode(6, 3, systematic=True), MDSCode(6, 3, systematic=False)
    assert a != b and hash(a) != hash(b) and a == MDSCode(6, 3, systematic=True)
    assert repr(a) == "MDSCode(workers=6, k=3, construction='circle', systematic=True)"
    assert repr(b) == "MDSCode(workers=6, k=3, construction='circle', systematic=False)"
    assert repr(PolyDotCode(9, 2, 2, 1)) == (
        "PolyDotCode(workers=9, row_blocks=2, inner_blocks=2, col_blocks=1, construction='circle')")
    with pytest.raises(ConfigurationError, match=r"`systematic` must be True, False or None .*got 'yes'"):
        MDSCode(6, 3, systematic="yes")
    with pytest.raises(ConfigurationError, match=r"systematic=True.*col_blocks=2"):
        PolynomialCode(8, 2, 2, systematic=True)
    with pytest.raises(ConfigurationError, match=r"systematic=True.*row_blocks=2, inner_blocks=2"):
        PolyDotCode(9, 2, 2, 1, systematic=True)
    # MatDot from its m systematic workers alone; MDS needs k whatever they are
    assert MatDotCode(7, 3, systematic=True).decodable([0, 1, 2])
    assert not MatDotCode(7, 3, systematic=False).decodable([0, 1, 2])
    assert not MDSCode(7, 3, systematic=True).decodable([0, 1])


@pytest.mark.parametrize("rows", [1, 3, 5])
def test_padding_blocks_of_zeros_are_not_read_as_corruption(rows):
    """A small A leaves most systematic workers with all-zero blocks (split padding) and
    exactly-zero results; the spare parity result must still read as consistent (their
    tolerance once collapsed to 1e-250, and the weighted check flagged consistent results)."""
    code = MDSCode(5, 4, systematic=True)
    rng = np.random.default_rng(rows)
    A, B = rng.standard_normal((rows, 3)), rng.standard_normal((3, 2))
    tasks = code.encode(A, B)
    out, info = code.decode({w: tasks[w].compute() for w in range(5)}, encoding=tasks,
                            return_info=True)
    assert info.faulty == () and info.checked
    check_product(out, A, B, None)


# --------------------------------------------------------------------------- left products
@pytest.mark.parametrize("field", FIELDS, ids=FIELD_IDS)
@pytest.mark.parametrize("construction", CONSTRUCTIONS)
def test_left_product_against_a_systematic_stored_operand(field, construction):
    """``L @ W`` for ``W`` stored with a systematic MDS code: every (2k-1)-subset decodes,
    and the k systematic workers alone (their products sum to L W)."""
    import itertools

    from codedml.codes.resident import encode_left

    if field is not None and construction != "circle":
        return
    kw = {"field": field} if field else {"construction": construction}
    stored = MDSCode(7, 3, systematic=True, **kw)
    rng = np.random.default_rng(3)
    if field is None:
        W, L = rng.standard_normal((10, 4)), rng.standard_normal((3, 10))
    else:
        W, L = rng.integers(0, field, (10, 4)), rng.integers(0, field, (3, 10))
    blocks = stored.encode(W, np.eye(4, dtype=W.dtype))           # a_w in task.a
    code, enc = encode_left(stored, L, 4, dtype=blocks.dtype)
    assert code.systematic and code.recovery_threshold == 5
    prods = {w: (enc[w].a @ blocks[w].a) % field if field else enc[w].a @ blocks[w].a
             for w in range(7)}
    for S in itertools.chain(itertools.combinations(range(7), 5), [(0, 1, 2)]):
        check_product(code.decode({w: prods[w] for w in S}, encoding=enc), L, W, field)


# --------------------------------------------------------------------------- the default
def test_default_is_systematic_where_it_stays_accurate():
    """systematic=None (the default): systematic over GF(p) and on the circle while the
    systematic worst case stays within COMPENSATE_MAX_CONDITION; plain otherwise, and for the
    naive real constructions and the codes without a systematic form."""
    from codedml.codes.numerics import worst_case_condition

    assert MDSCode(6, 3).systematic and MatDotCode(7, 3).systematic
    assert MDSCode(6, 3, field=P16).systematic and MatDotCode(7, 3, field=P16).systematic
    assert PolynomialCode(8, 4, 1).systematic
    assert not PolynomialCode(8, 2, 3).systematic and not PolyDotCode(9, 2, 2, 1).systematic
    assert not MDSCode(8, 4, construction="chebyshev").systematic
    assert not MDSCode(8, 4, construction="equispaced").systematic
    assert MDSCode(31, 26).systematic                    # bound 2.6e4
    assert not MDSCode(40, 35).systematic                # bound 8.4e4 > 3e4: plain (3.0e4)
    assert not MatDotCode(31, 13).systematic             # plain worst case 3.2e4 already
    # MatDot: up to SYSTEMATIC_MATDOT_MAX_CONDITION = 5000 (its worst-subset error at 8.0e3
    # measured 1.04e-12, past the promise)
    assert MatDotCode(24, 10).systematic and not MatDotCode(30, 13).systematic
    for n, k in ((9, 6), (12, 7), (16, 14)):
        code = MDSCode(n, k)
        exact = worst_case_condition(code, max_subsets=10**6)
        assert exact.exact
        # the default's criterion is an upper bound of the exhaustive worst case, and tight
        assert exact.value <= code.systematic_condition_bound() * (1 + 1e-9)
        assert code.systematic_condition_bound() <= 1.6 * exact.value
        assert code.condition_bound() == code.systematic_condition_bound()


@pytest.mark.parametrize("field", [None, P16], ids=["real", "GF65521"])
def test_exactly_the_systematic_results_take_the_stacking_path(field):
    """k systematic results, nothing to spare: stacked as they are (no unpacking, no
    projection), the same product and info as the general path would give; a non-finite or
    out-of-range one, or a bad argument, is still refused by the general path's rules."""
    code = MDSCode(6, 4, field=field)
    rng = np.random.default_rng(2)
    A = rng.standard_normal((10, 5)) if field is None else rng.integers(0, field, (10, 5))
    B = rng.standard_normal(5) if field is None else rng.integers(0, field, 5)
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(4)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "_project", _no_solve)      # the general path would project
        out, info = code.decode(res, encoding=tasks, return_info=True)
    check_product(out, A, B, field)
    assert info == base.DecodeInfo((), (0, 1, 2, 3), 1.0, False)
    assert out.dtype == (np.float64 if field is None else np.int64)
    np.testing.assert_array_equal(code.decode(res, shape=(10,)), out)
    with pytest.raises(ConfigurationError, match="encoding="):
        code.decode(res)                               # 10 rows padded to 16 (or 12): refused
    with pytest.raises(ConfigurationError, match="`errors` must be"):
        code.decode(res, errors=-1)
    bad = dict(res)
    bad[2] = np.full_like(res[2], np.nan) if field is None else np.full_like(res[2], -1)
    with pytest.raises(CorruptResultError):
        code.decode(bad, encoding=tasks)


@PROPS
@given(data=st.data())
def test_spare_results_take_the_packed_fast_path_with_the_general_paths_answer(data):
    """A systematic MDS-type code over the reals given more than ``k`` results checks them on
    projections of the packed halves (no complex unpacking of any result) and assembles or
    solves from the results it keeps: the same kept and faulty workers, the same condition
    number and the same product (to rounding) as the general path, one corrupt result
    located within the budget, and the same named error where the general path refuses."""
    n = data.draw(st.integers(3, 10))
    k = data.draw(st.integers(1, n - 1))
    kind = data.draw(st.sampled_from(["MDS", "Polynomial"]))
    kw = {"construction": data.draw(st.sampled_from(CONSTRUCTIONS))}
    code = (MDSCode(n, k, systematic=True, **kw) if kind == "MDS"
            else PolynomialCode(n, k, 1, systematic=True, **kw))
    A, B = data.draw(operands(None, f32=False))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(n)}
    have = data.draw(st.lists(st.sampled_from(range(n)), min_size=k + 1, max_size=n, unique=True))
    sub = {w: res[w] for w in have}
    errors = data.draw(st.integers(0, 1))
    corrupt = data.draw(st.sampled_from([None] + sorted(have)))
    if corrupt is not None:
        sub[corrupt] = sub[corrupt] + 1e3 * (1.0 + np.abs(sub[corrupt]).max())
    general = base.LinearCode.decode
    try:
        want, want_info = general(code, sub, errors, encoding=tasks, return_info=True)
    except CorruptResultError:
        with pytest.raises(CorruptResultError, match="inconsistent"):
            code.decode(sub, errors, encoding=tasks)
        return
    with pytest.MonkeyPatch.context() as mp:
        def no_unpack(*a, **k):
            raise AssertionError("the fast path unpacked a result into complex blocks")
        mp.setattr(type(code), "_unpack", no_unpack)
        out, info = code.decode(sub, errors, encoding=tasks, return_info=True)
    assert info.faulty == want_info.faulty and info.used == want_info.used
    assert info.checked == want_info.checked
    assert info.condition == pytest.approx(want_info.condition, rel=1e-9)
    check_product(out, A, B, None)
    scale = np.linalg.norm(A) * np.linalg.norm(B) + np.finfo(float).tiny
    assert np.linalg.norm(out - want) / scale < REAL_TOL
    if corrupt is not None and errors and len(have) >= k + 2:
        assert info.faulty == (corrupt,)
    if set(range(k)) <= set(info.used):  # every systematic result kept: bitwise assembly
        np.testing.assert_array_equal(out, code.decode({w: res[w] for w in range(k)}, encoding=tasks))


def _systematic_mds_results(data):
    """A systematic MDS code of 2-9 workers on any construction, operands, their encoding
    and every worker's result."""
    n = data.draw(st.integers(2, 9))
    k = data.draw(st.integers(1, n - 1))
    code = MDSCode(n, k, systematic=True, construction=data.draw(st.sampled_from(CONSTRUCTIONS)))
    A, B = data.draw(operands(None))
    enc = code.encode(A, B)
    return code, A, B, enc, {w: enc[w].compute() for w in range(n)}


def _packed_subset_missing_blocks(data, spare: bool):
    """A packed (circle) systematic MDS or polynomial code of 2-12 workers, operands, their
    encoding and every worker's result, a nonempty set of missing data blocks, and a subset
    of results without them: as many parity results as blocks missing, or (``spare``) up to
    every parity result (a least-squares solve)."""
    n = data.draw(st.integers(2, 12))
    k = data.draw(st.integers(1, n - 1))
    kind = data.draw(st.sampled_from(["MDS", "Polynomial"]))
    code = (MDSCode(n, k, systematic=True) if kind == "MDS"
            else PolynomialCode(n, k, 1, systematic=True))
    A, B = data.draw(operands(None))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(n)}
    miss = data.draw(st.sets(st.integers(0, k - 1), min_size=1, max_size=min(k, n - k)))
    par = data.draw(st.sets(st.integers(k, n - 1), min_size=len(miss),
                            max_size=n - k if spare else len(miss)))
    sub = {w: res[w] for w in (set(range(k)) - miss) | par}
    return code, A, B, tasks, res, miss, sub


@PROPS
@given(data=st.data())
def test_real_form_solve_agrees_with_the_complex_solve(data):
    """A packed (circle) systematic code missing some data blocks solves for them in real
    form where the system is well conditioned (``polydot.REAL_FORM_SOLVE``): the product
    agrees with the complex solve's to ``1e-12 ||A|| ||B||`` and both with ``A @ B``, for
    float64 and float32 workers, the same condition number reported."""
    code, A, B, tasks, res, miss, sub = _packed_subset_missing_blocks(data, spare=False)
    got = {}
    for real_form in (True, False):
        code.__dict__.pop("_plans", None)        # plans are built with the flag as it is
        code.__dict__.pop("_plan_last", None)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(polydot, "REAL_FORM_SOLVE", real_form)
            got[real_form] = code.decode(sub, encoding=tasks, return_info=True)
            plan = next(iter(code._plans.values()))
            assert (plan.RF is not None) == (real_form and not plan.F.refine)
    (a, ia), (b, ib) = got[True], got[False]
    check_product(a, A, B, None)
    check_product(b, A, B, None)
    scale = np.linalg.norm(A.astype(np.float64)) * np.linalg.norm(B.astype(np.float64))
    assert np.linalg.norm(a - b) <= 1e-12 * scale + np.finfo(float).tiny
    assert ia.condition == ib.condition and ia.used == ib.used


@PROPS
@given(data=st.data())
def test_one_pass_assembly_agrees_with_the_solve_it_folds(data):
    """Where the compiled kernel runs (``lincomb``), a packed systematic assembly missing
    some blocks is one pass over the results (``polydot._solve_missing_into``): the present
    blocks bit for bit the results, the product within ``1e-12 ||A|| ||B||`` of the
    right-hand side and solve formed apart (the path without the kernel), for float64 and
    float32 workers and spare parity results (a least-squares solve)."""
    from codedml.codes import _encode

    if not _encode._lincomb_ok():
        pytest.skip("the compiled lincomb kernel is not available here")
    code, A, B, tasks, res, miss, sub = _packed_subset_missing_blocks(data, spare=True)
    k = code.p
    got, calls = {}, []
    fused = polydot._solve_missing_into
    for one_pass in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_encode, "LINCOMB", one_pass)
            mp.setattr(polydot, "_solve_missing_into",
                       lambda *a: calls.append(1) or fused(*a))
            got[one_pass] = code.decode(sub, encoding=tasks, shape=code.padded_shape(tasks.shape))
    plan = next(iter(code._plans.values()))
    assert len(calls) == (plan.GF is not None)
    a, b = got[True], got[False]
    scale = np.linalg.norm(A.astype(np.float64)) * np.linalg.norm(B.astype(np.float64))
    assert np.linalg.norm(a - b) <= 1e-12 * scale + np.finfo(float).tiny
    for w in set(range(k)) - miss:
        rb = np.shape(res[w])[0]
        np.testing.assert_array_equal(a[w * rb:(w + 1) * rb], res[w])


def test_one_pass_assembly_at_a_size_that_takes_pooled_memory_and_several_tiles():
    """The one-pass assembly at a size whose product comes from the task pool (filled with
    NaN beforehand: every entry must be written) and whose rows span several of the
    kernel's column tiles: MDS(8, 6) with one and with two blocks missing, a spare parity
    result included, against the path without the kernel (1e-12 relative), the present
    blocks bit for bit."""
    from codedml.codes import _encode, _pool

    if not _encode._lincomb_ok():
        pytest.skip("the compiled lincomb kernel is not available here")
    rng = np.random.default_rng(11)
    A, B = rng.standard_normal((600, 200)), rng.standard_normal((200, 150))
    code = MDSCode(8, 6, systematic=True)
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(8)}
    for have in ((0, 1, 2, 3, 4, 6), (0, 1, 2, 3, 6, 7), (0, 1, 2, 3, 4, 6, 7)):
        sub = {w: res[w] for w in have}
        got = {}
        for one_pass in (True, False):
            junk = _pool.empty((600, 150), dtype=np.float64)   # the buffer the decode takes
            junk.fill(np.nan)
            del junk
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(_encode, "LINCOMB", one_pass)
                got[one_pass] = code.decode(sub, encoding=tasks)
        assert np.isfinite(got[True]).all()
        scale = np.linalg.norm(A) * np.linalg.norm(B)
        assert np.linalg.norm(got[True] - got[False]) <= 1e-12 * scale
        assert np.linalg.norm(got[True] - A @ B) <= 1e-12 * scale
        rb = res[0].shape[0]
        for w in have:
            if w < 6:
                np.testing.assert_array_equal(got[True][w * rb:(w + 1) * rb], res[w])


def test_assembly_plans_are_reused_and_bounded():
    """A code keeps one assembly plan per worker subset it decoded from, reuses it for the
    next decode from that subset, and keeps at most ``polydot.ASSEMBLY_PLANS`` of them (the
    oldest dropped first): a long run over many subsets does not grow the cache. The
    subset asked last is kept beside them and served without a lookup."""
    code = MDSCode(12, 6, systematic=True)
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((24, 5)), rng.standard_normal((5, 4))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(12)}
    first = (0, 1, 2, 3, 6, 7)
    code.decode({w: res[w] for w in first}, encoding=tasks)
    plan = next(iter(code._plans.values()))
    code.decode({w: res[w] for w in first}, encoding=tasks)
    assert len(code._plans) == 1 and next(iter(code._plans.values())) is plan
    subsets = list(itertools.combinations(range(12), 6))[:polydot.ASSEMBLY_PLANS + 30]
    for rows in subsets:
        out = code.decode({w: res[w] for w in rows}, encoding=tasks)
        np.testing.assert_allclose(out, A @ B, atol=1e-12 * np.linalg.norm(A) * np.linalg.norm(B))
        assert len(code._plans) <= polydot.ASSEMBLY_PLANS
    assert len(code._plans) == polydot.ASSEMBLY_PLANS
    assert plan not in code._plans.values()          # the oldest went first
    # the subset asked last is served as it was kept, without the table's lock, and is the
    # kept one; another subset takes the lock
    last = list(subsets[-1])

    class Counted:
        taken = 0

        def __enter__(self):
            Counted.taken += 1

        def __exit__(self, *exc):
            return False

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(polydot, "_PLANS_LOCK", Counted())
        assert code._assembly_plan(last) is code._plans[tuple(last)] is code._plan_last[1]
        assert Counted.taken == 0
        assert code._assembly_plan(list(first)) is not plan   # (dropped: built anew)
        assert Counted.taken == 2 and code._plan_last[0] == tuple(first)


def test_spare_results_are_checked_without_unpacking_or_a_solve():
    """Every systematic result in, plus parity ones: the parity results are checked on
    projections (no complex unpacking of any result, which with all results stacked and
    solved made a 512 x 512 decode with one spare 20x the cost of the assembly), nothing is
    solved, and the product is bit for bit the assembly of the systematic results."""
    code = MDSCode(8, 6, systematic=True)
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((60, 40)), rng.standard_normal((40, 30))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(8)}
    assembly = code.decode({w: res[w] for w in range(6)}, encoding=tasks)

    def no_unpack(*a, **k):
        raise AssertionError("the fast path unpacked a result into complex blocks")

    for have, errors in [(range(7), 0), (range(8), 0), (range(8), 1)]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "_lstsq", _no_solve)
            mp.setattr(polydot, "_solve_missing", _no_solve)
            mp.setattr(polydot, "_solve_missing_into", _no_solve)
            mp.setattr(MDSCode, "_unpack", no_unpack)
            out, info = code.decode({w: res[w] for w in have}, errors, encoding=tasks,
                                    return_info=True)
        assert info.used == tuple(have) and info.checked and info.faulty == ()
        np.testing.assert_array_equal(out, assembly)
    bad = dict(res)
    bad[7] = bad[7] * (1 + 1e-6)                      # a parity result off by far more than rounding
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "_lstsq", _no_solve)
        mp.setattr(polydot, "_solve_missing", _no_solve)
        mp.setattr(polydot, "_solve_missing_into", _no_solve)
        out, info = code.decode(bad, 1, encoding=tasks, return_info=True)
    assert info.faulty == (7,)
    np.testing.assert_array_equal(out, assembly)
    with pytest.raises(CorruptResultError, match="inconsistent"):
        code.decode({w: bad[w] for w in (0, 1, 2, 3, 4, 5, 7)}, encoding=tasks)


@pytest.mark.parametrize("construction", CONSTRUCTIONS)
@pytest.mark.parametrize("have", [(0, 1, 3), (0, 1, 3, 4)])
def test_float32_results_with_a_solved_block_still_refuse_a_padded_shape(construction, have):
    """float32 results, a data block solved from parity, no ``encoding=``/``shape=``: the
    padding rows hold float32 rounding, far above float64's; the refusal must judge them at
    the results' precision (it judged them at float64's and returned the padded product)."""
    code = MDSCode(6, 3, systematic=True, construction=construction)
    rng = np.random.default_rng(4)
    A = rng.standard_normal((7, 5)).astype(np.float32)
    B = rng.standard_normal((5, 3)).astype(np.float32)
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in have}
    with pytest.raises(ConfigurationError, match="encoding="):
        code.decode(res)
    with pytest.raises(ConfigurationError, match="encoding="):
        base.LinearCode.decode(code, res)
    out = code.decode(res, encoding=tasks)
    check_product(out, A, B, None)


_K_CASES = [(MDSCode(6, 4, systematic=True, construction=c), rows)
            for c in ("circle", "equispaced", "chebyshev")
            for rows in ((0, 1, 2, 3), (0, 1, 2, 4), (1, 2, 4, 5))]
# an ill-conditioned circle subset (condition about 2.5e4): its solve is not the compiled one
_K_CASES.append((MDSCode(30, 20, systematic=True, construction="circle"),
                 tuple(range(10)) + tuple(range(20, 30))))


@pytest.mark.parametrize("code,rows", _K_CASES, ids=lambda x: repr(x) if isinstance(x, MDSCode) else "")
@pytest.mark.parametrize("bad_at", [0, -1])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_exactly_k_results_with_a_non_finite_one_get_the_general_paths_answer(code, rows, bad_at, value):
    """Exactly k real results (the data ones: stacked; with parity ones: the one-pass solve)
    are looked at for NaN/Inf on the assembled product rather than before, where the solve is
    the compiled one; a non-finite result, data or parity, still gets the general path's
    answer (the same error, named) and no warning first, on every construction; finite ones
    the general path's product."""
    import warnings

    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((8 * code.p, 5)), rng.standard_normal((5, 3))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in rows}
    fine = code.decode(res, encoding=tasks)
    np.testing.assert_allclose(fine, base.LinearCode.decode(code, res, encoding=tasks),
                               rtol=1e-9, atol=1e-9 * np.linalg.norm(A) * np.linalg.norm(B))
    res[rows[bad_at]] = res[rows[bad_at]].copy()
    res[rows[bad_at]][0, 1] = value
    try:
        want = base.LinearCode.decode(code, res, encoding=tasks)
    except Exception as exc:    # the general path's refusal, e.g. CorruptResultError
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(type(exc)) as got:
                code.decode(res, encoding=tasks)
        assert str(got.value) == str(exc)
    else:
        np.testing.assert_array_equal(code.decode(res, encoding=tasks), want)


# --------------------------------------------------------------------------- compiled check
@PROPS
@given(data=st.data())
def test_compiled_consistency_check_decides_as_numpys(data):
    """The consistency check's projections and the results' norms from one compiled pass
    (``_kernels.proj_sq``, ``base.PROJ_SQ``) and its weighted residual by compiled
    reflections (``_kernels.wresid``, ``base.WRESID``) against numpy's products, norms and
    QR: the same kept
    and faulty workers, the same ``checked``, the same product bit for bit (the solve does not
    depend on them), the same named error; for systematic and non-systematic MDS, polynomial
    and MatDot codes on every construction, float64 and float32 results, clean, one corrupt
    result (grossly or slightly) and a non-finite one among spare results."""
    if base._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")
    kind = data.draw(st.sampled_from(["MDS", "Polynomial", "MatDot"]))
    n = data.draw(st.integers(3, 9))
    sysm = data.draw(st.booleans())
    kw = {"construction": data.draw(st.sampled_from(CONSTRUCTIONS)), "systematic": sysm}
    if kind == "MDS":
        code = MDSCode(n, data.draw(st.integers(1, n - 1)), **kw)
    elif kind == "Polynomial":
        code = PolynomialCode(n, data.draw(st.integers(1, n - 1)), 1, **kw)
    else:
        code = MatDotCode(n, data.draw(st.integers(1, (n - 1) // 2 + 1)), **kw)
    A, B = data.draw(operands(None))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(n)}
    t = code.recovery_threshold
    if t >= n:
        return
    have = data.draw(st.lists(st.sampled_from(range(n)), min_size=t + 1, max_size=n, unique=True))
    sub = {w: res[w].copy() for w in have}
    fault = data.draw(st.sampled_from([None, "gross", "slight", "nan", "inf"]))
    if fault is not None:
        w = data.draw(st.sampled_from(sorted(have)))
        x = sub[w]
        flat = x.reshape(-1)
        i = data.draw(st.integers(0, flat.size - 1))
        if fault == "gross":
            flat[i] += 1e3 * (1.0 + np.abs(flat).max())
        elif fault == "slight":
            flat[i] += 1e-3 * (1.0 + np.abs(flat).max())
        else:
            flat[i] = np.nan if fault == "nan" else np.inf
    errors = data.draw(st.integers(0, 2))
    outs = []
    for on in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "PROJ_SQ", on)
            mp.setattr(base, "WRESID", on)
            try:
                with np.errstate(all="raise"):   # no warning on either path
                    outs.append(code.decode(sub, errors, encoding=tasks, return_info=True))
            except CorruptResultError as exc:
                outs.append(exc)
    got, want = outs
    if isinstance(want, CorruptResultError):
        assert isinstance(got, CorruptResultError) and str(got) == str(want)
        return
    assert not isinstance(got, Exception), got
    (out, info), (ref, ref_info) = got, want
    assert (info.faulty, info.used, info.checked) == (ref_info.faulty, ref_info.used, ref_info.checked)
    np.testing.assert_array_equal(out, ref)
    if fault in ("gross", "nan", "inf") and errors >= 1 and len(have) >= t + 2:
        assert info.faulty == (w,)


@pytest.mark.parametrize("bad_at", [0, 5])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_spare_results_with_a_non_finite_one_stay_on_the_fast_path(bad_at, value):
    """Spare results of a systematic MDS code, one of them (data or parity) not finite: the
    check erases it on its projections and the fast path assembles or solves from the rest
    (it went to the general path before): the general path's kept and faulty workers and its
    product to rounding, no complex unpacking, no warning."""
    import warnings

    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((16, 5)), rng.standard_normal((5, 3))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(6)}
    res[bad_at] = res[bad_at].copy()
    res[bad_at][1, 1] = value
    want, want_info = base.LinearCode.decode(code, res, 1, encoding=tasks, return_info=True)

    def no_unpack(*a, **k):
        raise AssertionError("the fast path unpacked a result into complex blocks")

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.setattr(MDSCode, "_unpack", no_unpack)
        out, info = code.decode(res, 1, encoding=tasks, return_info=True)
    assert info.faulty == want_info.faulty == (bad_at,)
    assert info.used == want_info.used
    check_product(out, A, B, None)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("systematic", [False, True])
@pytest.mark.parametrize("bad", [1, 4])
def test_complex_results_are_checked_on_their_imaginary_parts_too(systematic, bad):
    """No worker of a real code sends complex results, but a caller may pass them (without
    ``encoding=`` nothing refuses them): a corruption in an imaginary part must still be
    located. The packed halves' projections would drop it (their numbers become the real and
    imaginary parts of one projection), so complex results are projected unpacked, on the
    general path (the systematic fast path had sent them to the halves and warned)."""
    import warnings

    code = MDSCode(6, 3, systematic=systematic)
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((12, 5)), rng.standard_normal((5, 4))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute().astype(complex) for w in range(6)}
    res[bad] = res[bad] + 5j
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, info = code.decode(res, 1, return_info=True)
    assert info.faulty == (bad,)
    np.testing.assert_allclose(out, A @ B, rtol=0, atol=1e-12 * np.abs(A @ B).max())


@pytest.mark.parametrize("systematic", [False, True])
def test_results_without_halves_get_the_named_error_on_both_paths(systematic):
    """Results of an odd number of rows (no packed halves; no ``encoding=`` to refuse their
    shape) get the general path's named error, not a reshape's ValueError."""
    code = MDSCode(6, 3, systematic=systematic)
    rng = np.random.default_rng(0)
    tasks = code.encode(rng.standard_normal((12, 5)), rng.standard_normal((5, 4)))
    res = {w: tasks[w].compute()[:-1] for w in range(6)}
    with pytest.raises(CorruptResultError, match="inconsistent"):
        code.decode(res, 1)


# --------------------------------------------------------------------------- compiled assembly
@PROPS
@given(data=st.data())
def test_compiled_block_copies_assemble_bit_for_bit(data):
    """Every systematic result in (exactly k, or with spare ones checked): the blocks copied
    into C by the compiled loop (``polydot._copy_blocks``, here from any size:
    ``COPY_BLOCKS_MIN`` 0; streamed where C reaches ``_encode.STREAM_BYTES``) are the results
    stacked, bit for bit, as numpy's copies make them; results of other dtypes (float32
    workers) and the numpy path (``COPY_BLOCKS_MIN`` huge) agree."""
    from codedml.codes import _encode

    if _encode._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")
    code, A, B, tasks, res = _systematic_mds_results(data)
    n, k = code.workers, code.p
    spare = data.draw(st.lists(st.sampled_from(range(k, n)), unique=True, max_size=n - k))
    # some data blocks missing (solved from the parity results; the present ones copied into
    # their own rows of C, not the first ones)
    gone = data.draw(st.lists(st.sampled_from(range(k)), unique=True, max_size=len(spare)))
    sub = {w: res[w] for w in [w for w in range(k) if w not in gone] + spare}
    outs, copied, cats = [], [], []
    real, real_cat = _encode.fast_copy, _encode._K.cat_sq
    for lo in (0, 1 << 62):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(polydot, "COPY_BLOCKS_MIN", lo)
            mp.setattr(_encode, "fast_copy", lambda *a, **kw: copied.append(lo) or real(*a, **kw))
            mp.setattr(_encode._K, "cat_sq", lambda *a, **kw: cats.append(lo) or real_cat(*a, **kw))
            if not gone:
                mp.setattr(base, "_lstsq", _no_solve)
                mp.setattr(polydot, "_solve_missing", _no_solve)
                mp.setattr(polydot, "_solve_missing_into", _no_solve)
            outs.append(code.decode(sub, 0, encoding=tasks, return_info=True))
    (out, info), (ref, ref_info) = outs
    # the compiled copies ran, one per data block present, where no one-pass kernel took
    # the whole assembly (float64 results; not with the threshold out of reach)
    assert 1 << 62 not in copied
    one_pass = bool(gone) and len(sub) > 0 and code._assembly_plan(
        np.array(sorted(sub))).GF is not None and polydot._encode._lincomb_ok()
    # exactly the k data results, small float64 ones: the small decode copies them all in
    # one compiled call (cat_sq), whatever COPY_BLOCKS_MIN says
    small = (not gone and len(sub) == k
             and sum(r.nbytes for r in sub.values()) <= polydot.SMALL_DECODE_BYTES
             and all(r.dtype == np.float64 and r.flags.c_contiguous for r in sub.values()))
    if np.result_type(A.dtype, B.dtype) == np.float64 and tasks[0].a.dtype == np.float64 \
            and not one_pass:
        if small:
            assert (copied, cats) == ([], [0, 1 << 62])
        else:
            assert len(copied) == k - len(gone)
    np.testing.assert_array_equal(out, ref)
    assert (info.used, info.faulty) == (ref_info.used, ref_info.faulty)
    stacked = np.concatenate([np.asarray(res[w], dtype=np.float64) for w in range(k)], axis=0)
    if not gone:
        np.testing.assert_array_equal(out, stacked[tuple(slice(0, s) for s in out.shape)])
    else:
        check_product(out, A, B, None)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e200])
@pytest.mark.parametrize("bad_at", [0, 3])
@pytest.mark.parametrize("size", [16, 512])
def test_compiled_block_copies_see_non_finite_values_and_only_those(value, bad_at, size):
    """The k data results copied by the compiled loop, whose sums of squares stand for the
    NaN/Inf look at C: a NaN or Inf still gets the general path's answer (named, no
    warning); a finite value whose square overflows (1e200) is not taken for one: it is
    decoded, the product bit for bit the stacked results. At 512 x 512 C is 2 MiB: the
    copies stream (the default threshold); at 16 the small decode copies the four results
    in one compiled call (``cat_sq``), its sum of squares the look."""
    import warnings

    from codedml.codes import _encode

    if _encode._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    tasks = code.encode(A, B)
    res = {w: tasks[w].compute() for w in range(4)}
    res[bad_at] = res[bad_at].copy()
    res[bad_at][1, 2] = value
    calls, cats = [], []
    real, real_cat = _encode.fast_copy, _encode._K.cat_sq
    try:
        want = base.LinearCode.decode(code, res, encoding=tasks)
    except Exception as exc:    # the general path's refusal, e.g. CorruptResultError
        want = exc
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.setattr(_encode, "fast_copy", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
        mp.setattr(_encode._K, "cat_sq", lambda *a, **kw: cats.append(1) or real_cat(*a, **kw))
        if isinstance(want, Exception):
            with pytest.raises(type(want)) as got:
                code.decode(res, encoding=tasks)
            assert str(got.value) == str(want)
        else:
            out = code.decode(res, encoding=tasks)
    if size == 512:   # copied compiled, streamed at 2 MiB
        assert len(calls) == 4 and all(calls) and not cats
    else:             # the small decode's one call
        assert not calls and cats == [1]
    if value == 1e200:
        assert not isinstance(want, Exception)
        np.testing.assert_array_equal(out, np.concatenate([res[w] for w in range(4)]))
        np.testing.assert_array_equal(out, want)
        # and it was the fast path that answered (its look at C), not the general one
        with pytest.MonkeyPatch.context() as mp:
            if size < 512:
                mp.setattr(polydot, "COPY_BLOCKS_MIN", 0)

            def general(*a, **kw):
                raise AssertionError("the general path decoded")

            mp.setattr(base.LinearCode, "decode", general)
            np.testing.assert_array_equal(code.decode(res, encoding=tasks), want)


@pytest.mark.parametrize("construction", ["equispaced", "circle"])
def test_compiled_block_copies_feed_a_solve_for_a_missing_block(construction):
    """At 2 MiB of C with a data block missing, where the one-pass kernel does not take the
    assembly (equispaced: not packed), the present blocks are copied by the compiled loop,
    not streamed (the solve reads C at once), and the product is numpy's copies' bit for bit
    (circle: the one-pass kernel, no such copies)."""
    from codedml.codes import _encode

    if _encode._K is None:
        pytest.skip("codedml.codes._kernels not built (no C compiler at install)")
    code = MDSCode(6, 4, systematic=True, construction=construction)
    rng = np.random.default_rng(8)
    A, B = rng.standard_normal((512, 64)), rng.standard_normal((64, 512))
    tasks = code.encode(A, B)
    sub = {w: tasks[w].compute() for w in (0, 1, 3, 4, 5)}
    calls = []
    real = _encode.fast_copy
    outs = []
    for lo in (polydot.COPY_BLOCKS_MIN, 1 << 62):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(polydot, "COPY_BLOCKS_MIN", lo)
            mp.setattr(_encode, "fast_copy", lambda *a, **kw: calls.append((lo, a[2])) or real(*a, **kw))
            outs.append(code.decode(sub, 0, encoding=tasks))
    np.testing.assert_array_equal(outs[0], outs[1])
    check_product(outs[0], A, B, None)
    one_pass = code._assembly_plan(np.array([0, 1, 3, 4, 5])).GF is not None and _encode._lincomb_ok()
    if one_pass:
        assert calls == []
    else:
        assert calls == [(polydot.COPY_BLOCKS_MIN, False)] * 3


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_small_decode_is_the_fast_paths(data):
    """A runtime job's decode (exactly k results in a dict of plain int keys, ``encoding=``)
    takes ``_decode_small`` where its results are small float64 arrays, and gives bit for bit
    the C and the info the fast path gives (``_decode_small`` off), every subset of k, with
    and without ``return_info``; anything else (other results or arguments) is left to the
    fast path, which gives the same as before."""
    code, A, B, enc, res = _systematic_mds_results(data)
    n, k = code.workers, code.p
    rows = sorted(data.draw(st.lists(st.sampled_from(range(n)), min_size=k, max_size=k,
                                     unique=True)))
    variant = data.draw(st.sampled_from(["plain", "int64 keys", "strided", "shape=", "info"]))
    sub = {w: res[w] for w in rows}
    kw = {"encoding": enc, "return_info": variant != "plain"}
    if variant == "int64 keys":
        sub = {np.int64(w): v for w, v in sub.items()}
    elif variant == "strided":
        sub = {w: np.repeat(v, 2, axis=0)[::2] for w, v in sub.items()}   # strided views
    elif variant == "shape=":
        kw = {"shape": enc.shape, "return_info": True}
    ran = []
    real = polydot.PolyDotCode._decode_small

    def spy(self, *a):
        out = real(self, *a)
        ran.append(out is not None and out is not False)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(polydot.PolyDotCode, "_decode_small", spy)
        got = code.decode(sub, **kw)
        mp.setattr(polydot.PolyDotCode, "_decode_small", lambda self, *a: None)
        want = code.decode(sub, **kw)
    small = (variant in ("plain", "info", "strided") and res[rows[0]].dtype == np.float64
             and all(v.flags.c_contiguous for v in sub.values())   # (one value: it is)
             and (rows[-1] == k - 1 or (code._assembly_plan(np.array(rows)).GF is not None
                                        and polydot._encode._lincomb_ok())))
    assert ran == ([] if variant == "shape=" else [small])
    if kw.get("return_info"):
        (C, info), (C0, info0) = got, want
        assert info == info0
    else:
        C, C0 = got, want
    assert C.dtype == C0.dtype and C.shape == C0.shape and C.tobytes() == C0.tobytes()
    assert C.flags.c_contiguous


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_landed_decode_is_the_decode_of_its_results(data):
    """A runtime job's decode from its landing (``_decode_landed``: every worker's result in
    one float64 slot of the product's shape, k of them decoding) gives bit for bit the C and
    the info ``decode`` gives for the same results, for drawn codes, operands and subsets of
    k; where ``decode`` would not take its small path (a result not finite, a code of another
    field, ...), or where ``decode`` or ``_decode_small`` was replaced on the class or the
    instance, it declines (None) and leaves the answer to ``decode``."""
    code, A, B, enc, res = _systematic_mds_results(data)
    n, k = code.workers, code.p
    rows = sorted(data.draw(st.lists(st.sampled_from(range(n)), min_size=k, max_size=k,
                                     unique=True)))
    if res[0].dtype != np.float64:
        assert code._decode_landed(np.stack([res[w] for w in range(n)]), rows, enc) is None
        return
    land = np.empty((n, *res[0].shape))
    for w in rows:
        land[w] = res[w]
    bad = data.draw(st.sampled_from([None, np.nan, np.inf]))
    if bad is not None:
        land[data.draw(st.sampled_from(rows))].flat[0] = bad
    got = code._decode_landed(land, rows, enc)
    small = (res[0].nbytes * k <= polydot.SMALL_DECODE_BYTES
             and (rows[-1] == k - 1 or (code._assembly_plan(np.array(rows)).GF is not None
                                        and polydot._encode._lincomb_ok())))
    if bad is not None or not small:
        assert got is None
        return
    C0, info0 = code.decode({w: land[w] for w in rows}, encoding=enc, return_info=True)
    C, info = got
    assert info == info0
    assert C.dtype == C0.dtype and C.shape == C0.shape and C.tobytes() == C0.tobytes()
    assert C.flags.c_contiguous
    # the base class's, and a code the runtime does not know: always the general decode
    assert base.LinearCode._decode_landed(code, land, rows, enc) is None
    # a decode replaced (a timer, a wrapper) is asked, not passed by
    for owner, name in [(code, "decode"), (code, "_decode_small"), (MDSCode, "decode"),
                        (polydot.PolyDotCode, "decode"),
                        (polydot.PolyDotCode, "_decode_small")]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(owner, name, getattr(owner, name), raising=True)
            if owner is code:   # (on the instance: a bound method in its __dict__)
                assert name in code.__dict__
            else:
                mp.setattr(owner, name, lambda *a, **kw: None)
            assert code._decode_landed(land, rows, enc) is None, (owner, name)
    assert code._decode_landed(land, rows, enc) is not None   # (all undone)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_landed_decode_of_other_codes_is_theirs_or_declines(data):
    """``_decode_landed`` on the other codes of the polydot family (non-systematic MDS,
    polynomial codes with one or more column blocks, MatDot, PolyDot, systematic or not, any
    construction): the decode of the same results bit for bit where it answers, and it
    declines (None) wherever ``_decode_small`` would not run (not systematic, more than one
    column or inner block)."""
    n = data.draw(st.integers(2, 8))
    kind = data.draw(st.sampled_from(["MDS", "Polynomial", "MatDot", "PolyDot"]))
    sysm = data.draw(st.sampled_from([True, False, None]))
    cons = data.draw(st.sampled_from(CONSTRUCTIONS))
    try:
        if kind == "MDS":
            code = MDSCode(n, data.draw(st.integers(1, n)), systematic=sysm, construction=cons)
        elif kind == "Polynomial":
            code = PolynomialCode(n, data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)),
                                  systematic=sysm, construction=cons)
        elif kind == "MatDot":
            code = MatDotCode(n, data.draw(st.integers(1, 2)), systematic=sysm,
                              construction=cons)
        else:
            code = PolyDotCode(n, 1, 2, 1, systematic=sysm, construction=cons)
    except ConfigurationError:   # (too few workers for its threshold, or no such form)
        return
    A, B = data.draw(operands(None, f32=False))
    try:
        enc = code.encode(A, B)
    except ConfigurationError:   # (shapes the code cannot split)
        return
    res = {w: enc[w].compute() for w in range(n)}
    k = code.recovery_threshold
    rows = sorted(data.draw(st.lists(st.sampled_from(range(n)), min_size=k, max_size=k,
                                     unique=True)))
    if res[0].dtype != np.float64:
        return
    land = np.empty((n, *res[0].shape))
    for w in rows:
        land[w] = res[w]
    got = code._decode_landed(land, rows, enc)
    if not (code.systematic and code.m == 1 and code.q == 1):
        event("declined: not the small path's code")
        assert got is None
        return
    if got is None:
        event("declined: a subset the small path leaves")
        return   # (a subset the small path leaves to the others: the test above)
    event(f"answered: {kind}")
    C0, info0 = code.decode({w: land[w] for w in rows}, encoding=enc, return_info=True)
    C, info = got
    assert info == info0
    assert C.dtype == C0.dtype and C.shape == C0.shape and C.tobytes() == C0.tobytes()


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("missing", [False, True])
def test_small_decode_leaves_non_finite_results_to_the_general_path(value, missing):
    """A NaN or Inf among a small job's k results: the general path's answer (the same
    result or the same named error), the fast path not run after ``_decode_small``, no
    warning."""
    import warnings

    if missing and not polydot._encode._lincomb_ok():
        pytest.skip("without the compiled lincomb a parity set is the fast path's")
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    enc = code.encode(A, B)
    rows = [0, 1, 2, 4] if missing else [0, 1, 2, 3]
    res = {w: enc[w].compute() for w in rows}
    res[1][0, 0] = value
    try:
        want = base.LinearCode.decode(code, res, encoding=enc)
    except Exception as exc:
        want = exc
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.setattr(polydot.PolyDotCode, "_systematic_fast_path",
                   lambda *a, **kw: pytest.fail("the fast path ran after _decode_small"))
        if isinstance(want, Exception):
            with pytest.raises(type(want)) as got:
                code.decode(res, encoding=enc)
            assert str(got.value) == str(want)
        else:
            got = code.decode(res, encoding=enc)
            assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float32", "complex128", "datetime64[s]", "timedelta64[s]",
                                   "object", "S8", ">f8", "int64"])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("where", [0, 3])
def test_small_decode_leaves_results_of_other_dtypes_to_the_general_path(dtype, missing, where):
    """A result of another dtype among a small job's k float64 ones (the small decode's
    compiled copy takes float64 only, and numpy exports no buffer of some dtypes at all):
    the answer of the decode without ``_decode_small`` (the fast or the general path), the
    same bits or the same named error, never an error of the copy's own."""
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    enc = code.encode(A, B)
    rows = [0, 1, 2, 4] if missing else [0, 1, 2, 3]
    res = {w: enc[w].compute() for w in rows}
    w = rows[where]
    if dtype.startswith(("datetime", "timedelta", "S")):
        res[w] = np.zeros(res[w].shape, dtype)
    else:
        res[w] = res[w].astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(polydot.PolyDotCode, "_decode_small", lambda self, *a: None)
        try:
            want = code.decode(res, encoding=enc)
        except Exception as exc:
            want = exc
    if isinstance(want, Exception):
        assert isinstance(want, ConfigurationError), want   # (named by the general path)
        with pytest.raises(type(want)) as got:
            code.decode(res, encoding=enc)
        assert str(got.value) == str(want)
    else:
        got = code.decode(res, encoding=enc)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.skipif(not polydot._encode._lincomb_ok(), reason="needs the compiled lincomb")
def test_small_decode_of_huge_finite_results_is_the_fast_paths():
    """Finite results near 1e154, whose squares summed over the product overflow, decoded
    from a set with a parity result: the small decode looks at the product itself then (no
    OverflowError from summing the kernel's sums of squares) and gives the fast path's
    product bit for bit."""
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(8)
    A, B = 4e76 * rng.standard_normal((8, 5)), 4e76 * rng.standard_normal((5, 3))
    enc = code.encode(A, B)
    res = {w: enc[w].compute() for w in (0, 1, 2, 4)}
    assert np.isfinite(list(res.values())).all()
    got = code.decode(res, encoding=enc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(polydot.PolyDotCode, "_decode_small", lambda self, *a: None)
        want = code.decode(res, encoding=enc)
    assert got.tobytes() == want.tobytes()
