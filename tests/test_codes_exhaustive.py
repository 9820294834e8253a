"""Exhaustive tests of every code family for small n.

For each code (reals with every construction, and GF(p)):

* every subset of workers of size >= the recovery threshold decodes to the exact product
  (GF(p): equal to galois' product; reals: relative Frobenius error < 1e-10), every smaller
  subset raises :class:`NotEnoughResultsError`;
* every error pattern within the code's power is located: with all ``n`` results and
  ``e = (n - k) // 2`` errors allowed, every set of at most ``e`` grossly corrupted results is
  reported by ``return_faulty`` and the product is still exact;
* erasures and errors together: for every subset of ``r`` results and every error pattern of
  ``(r - k) // 2`` of them (smaller n only).

Replication is covered by its own rule: a subset decodes exactly when it covers every block.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import galois
import numpy as np
import pytest

from codedml.codes import (GradientCode, MatDotCode, MDSCode, PolyDotCode, PolynomialCode,
                           ReplicationCode)
from codedml.errors import NotEnoughResultsError

P16 = 65521      # largest prime below 2**16
P21 = 2097143    # largest prime below 2**21
REAL_TOL = 1e-10
CONSTRUCTIONS = ("circle", "equispaced", "chebyshev")


@lru_cache(maxsize=None)
def gf(p: int):
    return galois.GF(p)


# --------------------------------------------------------------------------- code lists
def _polydot_specs():
    """(factory name, args, threshold) for n <= 8, every family of the polynomial codes."""
    specs = []
    for n in range(1, 9):
        for k in range(1, n + 1):
            specs.append(("MDS", (n, k)))
    for n in (4, 6, 8):
        for p_, q_ in ((2, 2), (1, 2), (2, 1), (3, 2), (1, 3), (4, 2)):
            if p_ * q_ <= n:
                specs.append(("Polynomial", (n, p_, q_)))
    for n in (3, 4, 5, 6, 7, 8):
        for m in (2, 3, 4):
            if 2 * m - 1 <= n:
                specs.append(("MatDot", (n, m)))
    for n in (5, 6, 7, 8):
        for p_, m, q_ in ((2, 2, 1), (1, 2, 2), (3, 2, 1), (1, 2, 3), (2, 3, 1), (1, 3, 2)):
            if p_ * m * q_ + m - 1 <= n:
                specs.append(("PolyDot", (n, p_, m, q_)))
    return specs


FACTORIES = {"MDS": MDSCode, "Polynomial": PolynomialCode, "MatDot": MatDotCode,
             "PolyDot": PolyDotCode}


def _make(kind, args, **kw):
    return FACTORIES[kind](*args, **kw)


def _id(kind, args, field_or_cons):
    return f"{kind}{args}-{field_or_cons}"


POLY_CASES = [pytest.param(kind, args, {"construction": c}, id=_id(kind, args, c))
              for kind, args in _polydot_specs() for c in CONSTRUCTIONS]
POLY_CASES += [pytest.param(kind, args, {"field": p}, id=_id(kind, args, f"GF{p}"))
               for kind, args in _polydot_specs()
               for p in ((P16, P21) if args[0] == 5 else (P16,))]

GRADIENT_SPECS = [(n, s, scheme) for n in range(1, 8) for s in range(n)
                  for scheme in ("fractional_repetition", "cyclic")
                  if scheme == "cyclic" or n % (s + 1) == 0]
GRADIENT_CASES = [pytest.param(n, s, scheme, f, id=f"Gradient({n},{s},{scheme})-{f or 'real'}")
                  for n, s, scheme in GRADIENT_SPECS for f in (None, P16)]

REPLICATION_CASES = [pytest.param(n, k, f, id=f"Replication({n},{k})-{f or 'real'}")
                     for n in range(1, 9) for k in range(1, n + 1) for f in (None, P16)]


# --------------------------------------------------------------------------- helpers
def _operands(code, field, seed=0, vector=False):
    """Shapes that no split divides evenly (7 x 5 @ 5 x 3, or a 5-vector)."""
    rng = np.random.default_rng(seed)
    bshape = (5,) if vector else (5, 3)
    if field is None:
        A = rng.standard_normal((7, 5))
        B = rng.standard_normal(bshape)
        return A, B, A @ B
    A = rng.integers(0, field, size=(7, 5))
    B = rng.integers(0, field, size=bshape)
    C = (gf(field)(A) @ gf(field)(B)).view(np.ndarray).astype(np.int64)
    return A, B, C


def _check_product(out, C, field):
    assert out.shape == C.shape
    if field is None:
        err = np.linalg.norm(out - C) / np.linalg.norm(C)
        assert err < REAL_TOL, f"relative error {err:.3e}"
    else:
        assert out.dtype.kind == "i"
        np.testing.assert_array_equal(out, C)


def _corrupt(result, field, rng):
    """A gross corruption: far outside the rounding noise, or a nonzero residue in every entry."""
    if field is None:
        return result + 1e3 * (1.0 + np.abs(result))
    r = np.asarray(result).view(np.ndarray).astype(np.int64)
    return (r + rng.integers(1, field, size=r.shape)) % field


def _vector_ok(code):
    return not (isinstance(code, PolyDotCode) and code.q > 1)


def _covers_groups(code, S):
    """A gradient code decodes from fewer than n - s results when the all-ones vector happens
    to lie in the span of their coefficient rows: fractional repetition once every group has a
    result, the cyclic-MDS construction for e.g. rows {0, 2} of g(x) = 1 + x with n = 4.
    Checked independently of the library's own test, by least squares (or by groups)."""
    if not isinstance(code, GradientCode) or len(S) == 0:
        return False
    if code.scheme == "fractional_repetition":
        groups = {w // (code.stragglers + 1) for w in S}
        return len(groups) == code.workers // (code.stragglers + 1)
    if code.field is not None:
        return False
    Bs = code.coefficients[list(S)]
    a = np.linalg.lstsq(Bs.T, np.ones(code.workers), rcond=None)[0]
    return bool(np.allclose(Bs.T @ a, 1.0, atol=1e-9))


def _check_all_subsets(code, A, B, C, field, sizes=None):
    """Every subset of the given sizes (default all): below k raises, from k on decodes."""
    tasks = code.encode(A, B)
    assert len(tasks) == code.workers
    results = {t.worker: t.compute() for t in tasks}
    n, k = code.workers, code.recovery_threshold
    for r in (range(0, n + 1) if sizes is None else sizes):
        for S in itertools.combinations(range(n), r):
            sub = {w: results[w] for w in S}
            # systematic MatDot: its m systematic results alone decode (fewer than k)
            if r < k and not _covers_groups(code, S) and not code.decodable(S):
                with pytest.raises(NotEnoughResultsError):
                    code.decode(sub, encoding=tasks)
                continue
            out, faulty = code.decode(sub, encoding=tasks, return_faulty=True)
            assert faulty == ()
            _check_product(out, C, field)


def _check_all_error_patterns(code, A, B, C, field, seed=1):
    """All n results, e = (n - k) // 2 errors allowed: every pattern of <= e is located."""
    rng = np.random.default_rng(seed)
    tasks = code.encode(A, B)
    results = {t.worker: t.compute() for t in tasks}
    n, k = code.workers, code.recovery_threshold
    e = (n - k) // 2
    for f in range(e, -1, -1):  # the most errors first
        for S in itertools.combinations(range(n), f):
            bad = dict(results)
            for w in S:
                bad[w] = _corrupt(bad[w], field, rng)
            out, faulty = code.decode(bad, errors=e, encoding=tasks, return_faulty=True)
            assert faulty == S, f"corrupted {S}, located {faulty}"
            _check_product(out, C, field)
    return e


def _check_erasures_and_errors(code, A, B, C, field, seed=2):
    """Every subset R of size r >= k + 2 and every set of (r - k) // 2 corrupt workers in R."""
    rng = np.random.default_rng(seed)
    tasks = code.encode(A, B)
    results = {t.worker: t.compute() for t in tasks}
    n, k = code.workers, code.recovery_threshold
    for r in range(k + 2, n):
        e = (r - k) // 2
        for R in itertools.combinations(range(n), r):
            for S in itertools.combinations(R, e):
                sub = {w: (_corrupt(results[w], field, rng) if w in S else results[w]) for w in R}
                out, faulty = code.decode(sub, errors=e, encoding=tasks, return_faulty=True)
                assert faulty == S, f"received {R}, corrupted {S}, located {faulty}"
                _check_product(out, C, field)


# --------------------------------------------------------------------------- polynomial family
@pytest.mark.parametrize("kind,args,kw", POLY_CASES)
def test_polydot_family_every_subset_decodes(kind, args, kw):
    code = _make(kind, args, **kw)
    field = kw.get("field")
    A, B, C = _operands(code, field)
    _check_all_subsets(code, A, B, C, field)
    if _vector_ok(code):  # a vector B: every threshold subset
        A, B, C = _operands(code, field, seed=5, vector=True)
        _check_all_subsets(code, A, B, C, field, sizes=[code.recovery_threshold])


@pytest.mark.parametrize("kind,args,kw", POLY_CASES)
def test_polydot_family_every_error_pattern_located(kind, args, kw):
    code = _make(kind, args, **kw)
    field = kw.get("field")
    A, B, C = _operands(code, field, seed=3)
    _check_all_error_patterns(code, A, B, C, field)


ERASURE_ERROR_CASES = [pytest.param(kind, args, kw, id=_id(kind, args, kw.get("construction") or f"GF{kw['field']}"))
                       for kind, args in (("MDS", (7, 3)), ("MDS", (6, 2)), ("Polynomial", (7, 2, 1)),
                                          ("Polynomial", (6, 1, 2)), ("MatDot", (7, 2)),
                                          ("PolyDot", (7, 1, 2, 2)), ("PolyDot", (7, 2, 2, 1)))
                       for kw in ({"construction": "circle"}, {"construction": "chebyshev"},
                                  {"construction": "equispaced"}, {"field": P16})]


@pytest.mark.parametrize("kind,args,kw", ERASURE_ERROR_CASES)
def test_polydot_family_erasures_and_errors(kind, args, kw):
    code = _make(kind, args, **kw)
    field = kw.get("field")
    A, B, C = _operands(code, field, seed=4)
    _check_erasures_and_errors(code, A, B, C, field)


def test_polydot_cases_with_redundancy_for_two_errors_exist():
    """The exhaustive lists include MatDot and PolyDot codes that correct at least one error
    and (MatDot) two errors, not only MDS codes."""
    specs = _polydot_specs()
    matdot = [_make(kind, a) for kind, a in specs if kind == "MatDot"]
    polydot = [_make(kind, a) for kind, a in specs if kind == "PolyDot"]
    assert any(c.workers - c.recovery_threshold >= 4 for c in matdot)
    assert any(c.workers - c.recovery_threshold >= 2 for c in polydot)


# --------------------------------------------------------------------------- gradient codes
@pytest.mark.parametrize("n,s,scheme,field", GRADIENT_CASES)
def test_gradient_every_subset_decodes(n, s, scheme, field):
    code = GradientCode(n, s, scheme, field=field)
    assert code.recovery_threshold == n - s
    A, B, C = _operands(code, field)
    _check_all_subsets(code, A, B, C, field)
    A, B, C = _operands(code, field, seed=5, vector=True)
    _check_all_subsets(code, A, B, C, field, sizes=[code.recovery_threshold])


GRADIENT_ERROR_CASES = [pytest.param(n, s, scheme, f, id=f"Gradient({n},{s},{scheme})-{f or 'real'}")
                        for n, s, scheme in ((6, 2, "cyclic"), (7, 2, "cyclic"), (7, 4, "cyclic"),
                                             (5, 3, "cyclic"), (6, 2, "fractional_repetition"),
                                             (8, 3, "cyclic"))
                        for f in (None, P16)]


@pytest.mark.parametrize("n,s,scheme,field", GRADIENT_ERROR_CASES)
def test_gradient_every_error_pattern_located(n, s, scheme, field):
    """A cyclic gradient code is an [n, n - s] MDS code on the messages: corrects s // 2.

    Fractional repetition repeats each group sum s + 1 times: corrects s // 2 per group; with
    all n results and e = s // 2 errors every pattern of <= e errors is within its power.
    """
    code = GradientCode(n, s, scheme, field=field)
    A, B, C = _operands(code, field, seed=3)
    e = _check_all_error_patterns(code, A, B, C, field)
    assert e == s // 2


# --------------------------------------------------------------------------- replication
@pytest.mark.parametrize("n,k,field", REPLICATION_CASES)
def test_replication_subsets_decode_iff_every_block_is_covered(n, k, field):
    code = ReplicationCode(n, k, field=field)
    replicas = np.bincount(np.arange(n) % k, minlength=k)
    assert code.recovery_threshold == n - replicas.min() + 1
    A, B, C = _operands(code, field)
    tasks = code.encode(A, B)
    results = {t.worker: t.compute() for t in tasks}
    for r in range(n + 1):
        for S in itertools.combinations(range(n), r):
            sub = {w: results[w] for w in S}
            covered = {w % k for w in S} == set(range(k))
            if r >= code.recovery_threshold:
                assert covered  # the threshold guarantees coverage
            if covered:
                _check_product(code.decode(sub, encoding=tasks), C, field)
            else:
                with pytest.raises(NotEnoughResultsError):
                    code.decode(sub, encoding=tasks)


REPLICATION_ERROR_CASES = [pytest.param(n, k, f, id=f"Replication({n},{k})-{f or 'real'}")
                           for n, k in ((3, 1), (5, 1), (6, 2), (7, 2), (8, 2), (7, 1), (6, 1))
                           for f in (None, P16)]


@pytest.mark.parametrize("n,k,field", REPLICATION_ERROR_CASES)
def test_replication_every_outvotable_error_pattern_located(n, k, field):
    """With all results, block j outvotes floor((r_j - 1) / 2) corrupt replicas: every pattern
    with at most that many corrupt workers per block is located (errors = its size)."""
    code = ReplicationCode(n, k, field=field)
    replicas = np.bincount(np.arange(n) % k, minlength=k)
    per_block = (replicas - 1) // 2
    rng = np.random.default_rng(7)
    A, B, C = _operands(code, field, seed=3)
    tasks = code.encode(A, B)
    results = {t.worker: t.compute() for t in tasks}
    checked = 0
    for f in range(n + 1):
        for S in itertools.combinations(range(n), f):
            counts = np.bincount(np.array(S, dtype=int) % k, minlength=k)
            if (counts > per_block).any():
                continue
            bad = {w: (_corrupt(r, field, rng) if w in S else r) for w, r in results.items()}
            out, faulty = code.decode(bad, errors=f, encoding=tasks, return_faulty=True)
            assert faulty == S
            _check_product(out, C, field)
            checked += 1
    assert checked > n


# --------------------------------------------------------------------------- zero blocks
ZERO_BLOCK_CASES = [
    pytest.param(lambda: ReplicationCode(4, 2), id="Replication(4,2)"),
    pytest.param(lambda: ReplicationCode(6, 2), id="Replication(6,2)"),
    pytest.param(lambda: MDSCode(5, 2, construction="equispaced"), id="MDS(5,2)-equispaced"),
    pytest.param(lambda: MDSCode(5, 2), id="MDS(5,2)-circle"),
    pytest.param(lambda: MatDotCode(5, 2, construction="chebyshev"), id="MatDot(5,2)-chebyshev"),
    pytest.param(lambda: GradientCode(6, 2, "cyclic"), id="Gradient(6,2,cyclic)"),
]


@pytest.mark.parametrize("factory", ZERO_BLOCK_CASES)
def test_zero_row_block_of_A_decodes(factory):
    """A zero row block of A (sparse data, or the zero padding the split adds) gives some
    workers an all-zero operand and result. That is an honest result, not a failure: every
    threshold subset and the full set of results must still decode, also with spare results
    checked for consistency."""
    code = factory()
    rng = np.random.default_rng(11)
    A = rng.standard_normal((8, 6))
    A[:4] = 0.0                                   # first half of the rows: block 0 when split in 2
    if isinstance(code, GradientCode):
        A[:, :3] = 0.0                            # partitions 0..2: all of worker 0's data
    B = rng.standard_normal((6, 3))
    C = A @ B
    tasks = code.encode(A, B)
    results = {t.worker: t.compute() for t in tasks}
    n, k = code.workers, code.recovery_threshold
    # k and k + 1 results (one spare to check against) and, except for gradient codes, whose
    # full set is a rank-deficient square system tested elsewhere, all n.
    sizes = {k, min(k + 1, n)} | (set() if isinstance(code, GradientCode) else {n})
    for S in (S for r in sorted(sizes) for S in itertools.combinations(range(n), r)):
        if isinstance(code, ReplicationCode) and {w % code.k for w in S} != set(range(code.k)):
            continue
        out = code.decode({w: results[w] for w in S}, encoding=tasks)
        _check_product(out, C, None)
