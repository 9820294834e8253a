"""Hypothesis properties of the codes: random shapes, n, splits, erasure and error patterns.

Shapes are drawn freely, so most of them are not divisible by the splits (the codes pad);
``B`` is a vector wherever the code allows one (every code but those with col_blocks > 1).
Both fields: the reals (each construction) and GF(p) for p = 65521 and 2097143, where the
decoded product must equal galois' exactly.
"""

from __future__ import annotations

import os
from functools import lru_cache

import galois
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import (CONSTRUCTIONS, GradientCode, MatDotCode, MDSCode, PolyDotCode,
                           PolynomialCode, ReplicationCode)
from codedml.errors import ConfigurationError, CorruptResultError, NotEnoughResultsError

P16 = 65521
P21 = 2097143
FIELDS = [None, P16, P21]
REAL_TOL = 1e-10

# the same draws in every run (CI's stable), except under benchmarks/fuzz.py (FUZZ_RANDOMIZE=1),
# which runs them under many seeds
PROPS = settings(max_examples=30, deadline=None,
                 derandomize=os.environ.get("FUZZ_RANDOMIZE") != "1",
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KINDS = ("MDS", "Polynomial", "MatDot", "PolyDot", "Replication", "Gradient")
REAL_KINDS = ("sign", "gross", "nan", "inf", "scale")
GF_KINDS = ("add", "one_entry", "negate", "scale", "out_of_range")


@lru_cache(maxsize=None)
def gf(p: int):
    return galois.GF(p)


# --------------------------------------------------------------------------- strategies
@st.composite
def codes(draw, field=None, kinds=KINDS, max_workers=9):
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(1, max_workers))
    kw = {"field": field} if field is not None else {"construction": draw(st.sampled_from(CONSTRUCTIONS))}
    if kind == "MDS":
        return MDSCode(n, draw(st.integers(1, n)), **kw)
    if kind == "Polynomial":
        p = draw(st.integers(1, n))
        return PolynomialCode(n, p, draw(st.integers(1, n // p)), **kw)
    if kind == "MatDot":
        return MatDotCode(n, draw(st.integers(1, (n + 1) // 2)), **kw)
    if kind == "PolyDot":
        m = draw(st.integers(1, (n + 1) // 2))
        pq = (n - m + 1) // m                     # p*m*q + m - 1 <= n
        p = draw(st.integers(1, pq))
        return PolyDotCode(n, p, m, draw(st.integers(1, pq // p)), **kw)
    if kind == "Replication":
        return ReplicationCode(n, draw(st.integers(1, n)), field=field)
    scheme = draw(st.sampled_from(("fractional_repetition", "cyclic")))
    if scheme == "cyclic":
        s = draw(st.integers(0, n - 1))
    else:
        s = draw(st.sampled_from([d - 1 for d in range(1, n + 1) if n % d == 0]))
    return GradientCode(n, s, scheme, field=field)


def vector_ok(code) -> bool:
    return not (isinstance(code, PolyDotCode) and code.q > 1)


@st.composite
def operands(draw, code, field, lo=1, hi=11):
    """A (M x N) and B (N x K, or an N-vector where the code allows): random, unaligned."""
    M = draw(st.integers(lo, hi))
    N = draw(st.integers(lo, hi))
    vector = vector_ok(code) and draw(st.booleans())
    bshape = (N,) if vector else (N, draw(st.integers(1, 6 if hi <= 11 else 9)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if field is None:
        scale = 10.0 ** draw(st.integers(-3, 3))
        A = scale * rng.standard_normal((M, N))
        B = rng.standard_normal(bshape)
        if draw(st.booleans()):
            A, B = A.astype(np.float32), B.astype(np.float32)
        return A, B
    return rng.integers(0, field, size=(M, N)), rng.integers(0, field, size=bshape)


def reference(A, B, field):
    if field is None:
        return A.astype(np.float64) @ B.astype(np.float64)
    return (gf(field)(A) @ gf(field)(B)).view(np.ndarray).astype(np.int64)


def check_product(out, A, B, field, tol=REAL_TOL):
    C = reference(A, B, field)
    assert out.shape == C.shape
    if field is None:
        err = np.linalg.norm(out - C) / max(np.linalg.norm(C), np.finfo(float).tiny)
        assert err < tol, f"relative error {err:.3e}"
    else:
        np.testing.assert_array_equal(out, C)


def real_tol(A, B):
    """float32 inputs get float32 worker operands (error ~1e-7 * cond); float64 1e-10."""
    return 1e-4 if np.result_type(A.dtype, B.dtype) == np.float32 else REAL_TOL


def covers(code, S) -> bool:
    """Whether results from S determine the product (replication: every block present)."""
    if isinstance(code, ReplicationCode):
        return {w % code.k for w in S} == set(range(code.k))
    return len(S) >= code.recovery_threshold


def correction_groups(code, R):
    """Groups of received workers that vote separately, with how many errors each outvotes.

    Replication and fractional repetition repeat one value per block (group): a group of r_j
    results outvotes (r_j - 1) // 2. The other codes are MDS on the received set: one group,
    (r - k) // 2 errors (k = the code's number of unknowns, n - s for gradient codes).
    """
    R = sorted(R)
    if isinstance(code, ReplicationCode):
        keys = [w % code.k for w in R]
    elif isinstance(code, GradientCode) and code.scheme == "fractional_repetition":
        keys = [w // (code.stragglers + 1) for w in R]
    else:
        return [(R, (len(R) - code.recovery_threshold) // 2)]
    groups = {}
    for w, g in zip(R, keys):
        groups.setdefault(g, []).append(w)
    return [(ws, (len(ws) - 1) // 2) for ws in groups.values()]


def corrupt(result, kind, field, rng):
    r = np.array(result)
    if field is None:
        if kind == "sign":
            return -r
        if kind == "gross":
            return r + 1e3 * (1.0 + np.abs(r))
        if kind == "scale":
            return -7.0 * r
        flat = r.reshape(-1)
        flat[rng.integers(flat.size)] = np.nan if kind == "nan" else np.inf
        return r
    r = r.view(np.ndarray).astype(np.int64)
    if kind == "add":
        return (r + rng.integers(1, field, size=r.shape)) % field
    if kind == "negate":
        return (-r) % field
    if kind == "scale":
        return (r * int(rng.integers(2, field))) % field
    flat = r.reshape(-1)
    i = rng.integers(flat.size)
    if kind == "one_entry":
        flat[i] = (flat[i] + rng.integers(1, field)) % field
    else:  # out_of_range: outside [0, p), erased by the decoder
        flat[i] = field + int(flat[i]) if rng.integers(2) else -1 - int(flat[i])
    return r


def differs(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return not np.array_equal(a, b)


# --------------------------------------------------------------------------- erasures
@pytest.mark.parametrize("field", FIELDS, ids=["real", "GF65521", "GF2097143"])
@PROPS
@given(data=st.data())
def test_any_large_enough_subset_decodes(field, data):
    code = data.draw(codes(field), label="code")
    A, B = data.draw(operands(code, field), label="operands")
    tasks = code.encode(A, B)
    assert len(tasks) == code.workers
    n = code.workers
    S = data.draw(st.sets(st.integers(0, n - 1), min_size=code.recovery_threshold, max_size=n)
                  .filter(lambda S: covers(code, S)) if isinstance(code, ReplicationCode) else
                  st.sets(st.integers(0, n - 1), min_size=code.recovery_threshold, max_size=n),
                  label="received")
    out, info = code.decode({w: tasks[w].compute() for w in S}, encoding=tasks, return_info=True)
    assert info.faulty == ()
    assert set(info.used) <= S
    check_product(out, A, B, field, real_tol(A, B))


@pytest.mark.parametrize("field", [None, P16], ids=["real", "GF65521"])
@PROPS
@given(data=st.data())
def test_too_few_results_raise_not_enough(field, data):
    code = data.draw(codes(field, kinds=("MDS", "Polynomial", "MatDot", "PolyDot", "Gradient")),
                     label="code")
    A, B = data.draw(operands(code, field), label="operands")
    tasks = code.encode(A, B)
    S = data.draw(st.sets(st.integers(0, code.workers - 1), max_size=code.recovery_threshold - 1)
                  # systematic MatDot decodes from its m systematic results alone
                  .filter(lambda S: not code.decodable(S)), label="received")
    with pytest.raises(NotEnoughResultsError) as exc:
        code.decode({w: tasks[w].compute() for w in S}, encoding=tasks)
    assert exc.value.received == len(S)
    assert exc.value.needed == code.recovery_threshold


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("field", FIELDS, ids=["real", "GF65521", "GF2097143"])
@PROPS
@given(data=st.data())
def test_errors_within_power_are_located(field, data):
    """Received set R, e <= (r - k) // 2 corrupt workers (per vote group for repetition
    codes), random corruption kinds: exactly the corrupt workers are reported, C is exact."""
    code = data.draw(codes(field), label="code")
    A, B = data.draw(operands(code, field), label="operands")
    if field is None:  # corruption is measured against float64 rounding noise
        A, B = A.astype(np.float64), B.astype(np.float64)
    tasks = code.encode(A, B)
    n = code.workers
    base = st.sets(st.integers(0, n - 1), min_size=code.recovery_threshold, max_size=n)
    R = data.draw(base.filter(lambda S: covers(code, S)), label="received")
    bad = []
    for ws, power in correction_groups(code, R):
        bad += data.draw(st.lists(st.sampled_from(ws), unique=True, max_size=power)
                         if power else st.just([]), label="corrupt")
    budget = sum(p for _, p in correction_groups(code, R))
    errors = data.draw(st.integers(len(bad), budget), label="errors")
    kinds = REAL_KINDS if field is None else GF_KINDS
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    results, expected = {}, []
    for w in sorted(R):
        honest = tasks[w].compute()
        if w in bad:
            results[w] = corrupt(honest, data.draw(st.sampled_from(kinds), label=f"kind{w}"), field, rng)
            if differs(results[w], honest):  # e.g. negating an all-zero result changes nothing
                expected.append(w)
        else:
            results[w] = honest
    out, faulty = code.decode(results, errors=errors, encoding=tasks, return_faulty=True)
    assert faulty == tuple(expected)
    check_product(out, A, B, field)


# --------------------------------------------------------------------------- special cases
@pytest.mark.parametrize("field", [None, P16], ids=["real", "GF65521"])
@PROPS
@given(data=st.data())
def test_polydot_special_cases_match_named_codes(field, data):
    """PolyDot(n, p, 1, 1) = MDS(n, p), PolyDot(n, p, 1, q) = Polynomial(n, p, q),
    PolyDot(n, 1, m, 1) = MatDot(n, m): same threshold, same tasks, same decoded product."""
    n = data.draw(st.integers(1, 9), label="n")
    kw = {"field": field} if field is not None else {
        "construction": data.draw(st.sampled_from(CONSTRUCTIONS), label="construction")}
    which = data.draw(st.sampled_from(("MDS", "Polynomial", "MatDot")), label="which")
    if which == "MDS":
        k = data.draw(st.integers(1, n), label="k")
        named, general, threshold = MDSCode(n, k, **kw), PolyDotCode(n, k, 1, 1, **kw), k
    elif which == "Polynomial":
        p = data.draw(st.integers(1, n), label="p")
        q = data.draw(st.integers(1, n // p), label="q")
        named, general, threshold = PolynomialCode(n, p, q, **kw), PolyDotCode(n, p, 1, q, **kw), p * q
    else:
        m = data.draw(st.integers(1, (n + 1) // 2), label="m")
        named, general, threshold = MatDotCode(n, m, **kw), PolyDotCode(n, 1, m, 1, **kw), 2 * m - 1
    assert named.recovery_threshold == general.recovery_threshold == threshold
    assert (general.p * general.m * general.q + general.m - 1) == threshold
    A, B = data.draw(operands(general, field), label="operands")
    t1, t2 = named.encode(A, B), general.encode(A, B)
    for a, b in zip(t1, t2):
        np.testing.assert_array_equal(np.asarray(a.a), np.asarray(b.a))
        np.testing.assert_array_equal(np.asarray(a.b), np.asarray(b.b))
    S = data.draw(st.sets(st.integers(0, n - 1), min_size=threshold, max_size=n), label="received")
    res = {w: t1[w].compute() for w in S}
    out1 = named.decode(res, encoding=t1)
    out2 = general.decode(res, encoding=t2)
    if field is None:
        np.testing.assert_allclose(out1, out2, rtol=0, atol=1e-12 * (1 + np.abs(out2).max()))
    else:
        np.testing.assert_array_equal(out1, out2)
    check_product(out2, A, B, field, real_tol(A, B))


@PROPS
@given(data=st.data())
def test_vector_b_rejected_when_columns_are_split(data):
    code = data.draw(codes(None, kinds=("Polynomial", "PolyDot")), label="code")
    if vector_ok(code):
        return
    with pytest.raises(ConfigurationError, match="col_blocks"):
        code.encode(np.ones((4, 3)), np.ones(3))


@PROPS
@given(data=st.data())
def test_gradient_sum_from_any_n_minus_s_combined_messages(data):
    """combine() on each surviving worker + decode() = sum of all partial gradients."""
    field = data.draw(st.sampled_from([None, P16]), label="field")
    code = data.draw(codes(field, kinds=("Gradient",)), label="code")
    n = code.workers
    shape = data.draw(st.sampled_from([(), (3,), (2, 3)]), label="gradient shape")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    grads = (rng.standard_normal((n,) + shape) if field is None
             else rng.integers(0, field, size=(n,) + shape))
    S = data.draw(st.sets(st.integers(0, n - 1), min_size=n - code.stragglers, max_size=n),
                  label="received")
    msgs = {w: code.combine(w, {j: grads[j] for j in code.partitions(w)}) for w in S}
    out = code.decode(msgs)
    if field is None:
        want = grads.sum(axis=0)
        assert np.linalg.norm(out - want) <= 1e-10 * max(1.0, np.linalg.norm(want))
    else:
        want = np.asarray(gf(field)(grads).sum(axis=0).view(np.ndarray), dtype=np.int64)
        np.testing.assert_array_equal(np.asarray(out) % field, want)


@PROPS
@given(data=st.data())
def test_gradient_one_corrupt_entry_anywhere_is_caught(data):
    """One entry of one message changed, at any flat index: with every message present and
    errors=0 the decode refuses (CorruptResultError), never a wrong sum; with two spare
    messages and errors=1 it returns the exact sum. GF(p) (the check is exact) and the reals
    (random projections of every entry)."""
    field = data.draw(st.sampled_from([P21, P16, None]), label="field")
    n = data.draw(st.integers(3, 7), label="workers")
    scheme = data.draw(st.sampled_from(["cyclic", "fractional_repetition"]), label="scheme")
    s = data.draw(st.integers(1, n - 1), label="stragglers")
    if scheme == "fractional_repetition" and n % (s + 1):
        scheme = "cyclic"
    shape = data.draw(st.sampled_from([(7,), (3, 4), (2, 3, 2), (40,)]), label="gradient shape")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    grads = (rng.standard_normal((n,) + shape) if field is None
             else rng.integers(0, field, size=(n,) + shape))
    want = (grads.sum(axis=0) if field is None
            else np.asarray(gf(field)(grads).sum(axis=0).view(np.ndarray), dtype=np.int64))
    w = data.draw(st.integers(0, n - 1), label="corrupt worker")
    idx = data.draw(st.integers(0, int(np.prod(shape)) - 1), label="flat index")
    delta = data.draw(st.integers(1, (field or 1000) - 1), label="delta")

    def corrupt(code):
        msgs = {v: code.combine(v, {j: grads[j] for j in code.partitions(v)}) for v in range(n)}
        bad = np.array(msgs[w], copy=True)
        if field is None:
            bad.flat[idx] += delta / 100.0 * (1.0 + abs(bad.flat[idx]))
        else:
            bad.flat[idx] = (bad.flat[idx] + delta) % field
        msgs[w] = bad
        return msgs

    code = GradientCode(n, s, scheme, field=field)
    with pytest.raises(CorruptResultError):
        code.decode(corrupt(code))
    if n >= 5:                       # two spare messages: one corrupt one is corrected
        code2 = GradientCode(n, 2, "cyclic", field=field)
        out = code2.decode(corrupt(code2), errors=1)
        if field is None:
            assert np.linalg.norm(out - want) <= 1e-10 * max(1.0, np.linalg.norm(want))
        else:
            np.testing.assert_array_equal(out, want)


def test_gradient_gfp_corrupt_entry_past_the_first_four():
    """The case issue 10 names: GradientCode(5, 1, "cyclic", field=2097143), one entry at flat
    index >= 4 corrupted, errors=0, all messages: refused, where only ``flat[:, :4]`` used to
    be checked and a wrong sum came back."""
    code = GradientCode(5, 1, "cyclic", field=P21)
    grads = np.random.default_rng(3).integers(0, P21, size=(5, 9))
    msgs = {w: code.combine(w, {j: grads[j] for j in code.partitions(w)}) for w in range(5)}
    for idx in range(4, 9):
        bad = dict(msgs)
        bad[2] = msgs[2].copy()
        bad[2][idx] = (bad[2][idx] + 1) % P21
        with pytest.raises(CorruptResultError, match="inconsistent"):
            code.decode(bad)


# --------------------------------------------------------------------------- padded layouts
@pytest.mark.parametrize("field", FIELDS, ids=["real", "GF65521", "GF2097143"])
@PROPS
@given(data=st.data())
def test_padded_decode_needs_encoding_or_shape(field, data):
    """Unaligned shapes are zero-padded by the split. Without ``encoding=`` or ``shape=`` a
    decode of a padded product is refused by name (never the padded array); with either it
    has the product's exact shape and values; an unpadded product decodes without them.

    At least 18 rows and inner columns: with smaller ones most workers of some codes hold
    nothing but padding and compute exact zeros, and the real field's noise model without
    ``encoding=`` (the median result norm) cannot work (see ``LinearCode._noise_scale``)."""
    code = data.draw(codes(field), label="code")
    A, B = data.draw(operands(code, field, lo=18, hi=40), label="operands")
    tasks = code.encode(A, B)
    res = {t.worker: t.compute() for t in tasks}
    tol = real_tol(A, B)
    check_product(code.decode(res, encoding=tasks), A, B, field, tol)
    check_product(code.decode(res, shape=tasks.shape), A, B, field, tol)
    if tasks.padded_shape != tasks.shape:
        with pytest.raises(ConfigurationError) as exc:
            code.decode(res)
        assert "`encoding=`" in str(exc.value) and "`shape=`" in str(exc.value)
        assert str(tasks.padded_shape) in str(exc.value)
    else:
        C = np.abs(reference(A, B, field)).astype(np.float64)
        tails = [np.take(C, -1, axis=ax).max() for ax, m in
                 enumerate(code._output_multiples(C.ndim)) if m > 1]
        if field is None and tails and min(tails) < 0.2 * C.max():
            # a genuine last row this small reads as padding at float32 rounding and a poor
            # condition number: refused (same message), or decoded right
            try:
                out = code.decode(res)
            except ConfigurationError as exc:
                assert "`encoding=`" in str(exc.value)
                return
            check_product(out, A, B, field, tol)
        else:
            check_product(code.decode(res), A, B, field, tol)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_replication_with_one_copy_of_each_block_assembles_as_the_general_path(data):
    """ReplicationCode given exactly one result per block (the uncoded baseline's every
    job) stacks them without the general path's checks: bitwise the general path's product,
    dtype and report (nothing checked, no faults, condition 1), for float64, float32 and
    GF(p) results, with ``encoding=``, ``shape=`` or neither; a non-finite (out-of-range)
    result or a spare replica takes the general path, which names the fault or checks it."""
    from codedml.codes._base import LinearCode

    field = data.draw(st.sampled_from([None, 65537]))
    n = data.draw(st.integers(1, 9))
    k = data.draw(st.integers(1, n))
    code = ReplicationCode(n, k, field=field)
    M, N = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if field is None:
        dt = data.draw(st.sampled_from([np.float64, np.float32]))
        A, B = rng.standard_normal((M, N)).astype(dt), rng.standard_normal((N, 3)).astype(dt)
    else:
        A, B = rng.integers(0, field, (M, N)), rng.integers(0, field, (N, 3))
    enc = code.encode(A, B)
    res = {t.worker: t.compute() for t in enc}
    # one worker per block, any of its replicas
    pick = {j: data.draw(st.sampled_from([w for w in range(n) if w % k == j])) for j in range(k)}
    sub = {w: res[w] for w in pick.values()}
    how = data.draw(st.sampled_from(["encoding", "shape", "neither"]))
    kw = {"encoding": {"encoding": enc}, "shape": {"shape": (M, 3)}, "neither": {}}[how]
    try:
        want, want_info = LinearCode.decode(code, sub, **kw, return_info=True)
    except ConfigurationError as exc:   # neither: refused where padding may hide the shape
        with pytest.raises(ConfigurationError, match="cannot tell the product's shape"):
            code.decode(sub, **kw)
        assert "cannot tell" in str(exc)
        return
    def general(*a, **k):
        raise AssertionError("one copy of each block took the general path's checks")

    with pytest.MonkeyPatch.context() as mp:  # the general path's check and solve, refused
        mp.setattr(ReplicationCode, "_locate_real", general)
        mp.setattr(ReplicationCode, "_locate_exact", general)
        mp.setattr(ReplicationCode, "_solve_real", general)
        got, info = code.decode(sub, **kw, return_info=True)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (info.faulty, info.used, info.checked) == (want_info.faulty, want_info.used, want_info.checked)
    assert info.condition == pytest.approx(want_info.condition, rel=1e-12)
    w0 = next(iter(sub))
    bad = dict(sub)
    bad[w0] = (np.full_like(sub[w0], np.nan) if field is None
               else np.full_like(sub[w0], field))
    with pytest.raises(CorruptResultError):     # erased by the general path: a block is gone
        code.decode(bad, encoding=enc)
    spare = [w for w in range(n) if w not in sub]
    if spare:   # a spare replica: the general path checks it against its block's copy
        w = spare[0]
        more = {**sub, w: res[w]}
        np.testing.assert_array_equal(code.decode(more, encoding=enc),
                                      LinearCode.decode(code, more, encoding=enc))
