"""The public API of codedml.codes: reprs, equality, tasks and encodings, precision, GF(p)
operands, the gradient-code interface, pinned exception types and messages, and the
layering rule (``import codedml.codes`` imports neither torch, mpi4py nor galois)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from functools import lru_cache

import galois
import numpy as np
import pytest

import codedml
from codedml.codes import (CONSTRUCTIONS, DecodeInfo, Encoding, GradientCode, MatDotCode,
                           MDSCode, PolyDotCode, PolynomialCode, ReplicationCode, Residues,
                           Task)
from codedml.errors import (CodedMLError, ConfigurationError, CorruptResultError,
                            NotEnoughResultsError)

P = 65521


@lru_cache(maxsize=None)
def gf(p: int):
    return galois.GF(p)


def rel_err(out, want):
    return np.linalg.norm(np.asarray(out, dtype=np.float64) - want) / np.linalg.norm(want)


# --------------------------------------------------------------------------- repr, eq, hash
REPRS = [
    (lambda: MDSCode(6, 4), "MDSCode(workers=6, k=4, construction='circle', systematic=True)"),
    (lambda: MDSCode(6, 4, construction="chebyshev"), "MDSCode(workers=6, k=4, construction='chebyshev', systematic=False)"),
    (lambda: MDSCode(6, 4, field=P), "MDSCode(workers=6, k=4, field=65521, systematic=True)"),
    (lambda: PolynomialCode(6, 2, 3), "PolynomialCode(workers=6, row_blocks=2, col_blocks=3, construction='circle')"),
    (lambda: PolynomialCode(6, 2, 3, field=P), "PolynomialCode(workers=6, row_blocks=2, col_blocks=3, field=65521)"),
    (lambda: MatDotCode(5, 2, construction="equispaced"), "MatDotCode(workers=5, inner_blocks=2, construction='equispaced', systematic=False)"),
    (lambda: MatDotCode(5, 3, field=2097143), "MatDotCode(workers=5, inner_blocks=3, field=2097143, systematic=True)"),
    (lambda: PolyDotCode(8, 2, 2, 1), "PolyDotCode(workers=8, row_blocks=2, inner_blocks=2, col_blocks=1, construction='circle')"),
    (lambda: PolyDotCode(8, 1, 2, 2, field=P), "PolyDotCode(workers=8, row_blocks=1, inner_blocks=2, col_blocks=2, field=65521)"),
    (lambda: ReplicationCode(6, 3), "ReplicationCode(workers=6, k=3)"),
    (lambda: ReplicationCode(6, 3, field=P), "ReplicationCode(workers=6, k=3, field=65521)"),
    (lambda: GradientCode(4, 1, "cyclic"), "GradientCode(workers=4, stragglers=1, scheme='cyclic')"),
    (lambda: GradientCode(6, 2, "fractional_repetition", field=P),
     "GradientCode(workers=6, stragglers=2, scheme='fractional_repetition', field=65521)"),
]


@pytest.mark.parametrize("factory,text", REPRS, ids=[t for _, t in REPRS])
def test_repr_is_pinned(factory, text):
    assert repr(factory()) == text


@pytest.mark.parametrize("factory,text", REPRS, ids=[t for _, t in REPRS])
def test_equal_codes_are_equal_and_hash_equal(factory, text):
    a, b = factory(), factory()
    assert a is not b
    assert a == b and not (a != b)
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != object()


@pytest.mark.parametrize("a,b", [
    (MDSCode(6, 4), MDSCode(6, 3)),
    (MDSCode(6, 4), MDSCode(7, 4)),
    (MDSCode(6, 4), MDSCode(6, 4, construction="equispaced")),
    (MDSCode(6, 4), MDSCode(6, 4, field=P)),
    (MDSCode(6, 4, field=P), MDSCode(6, 4, field=2097143)),
    (PolynomialCode(6, 2, 3), PolynomialCode(6, 3, 2)),
    (MatDotCode(6, 2), MatDotCode(6, 3)),
    (PolyDotCode(8, 2, 2, 1), PolyDotCode(8, 1, 2, 2)),
    (ReplicationCode(6, 3), ReplicationCode(6, 2)),
    (ReplicationCode(6, 3), ReplicationCode(6, 3, field=P)),
    (GradientCode(6, 2, "cyclic"), GradientCode(6, 2, "fractional_repetition")),
    (GradientCode(6, 2, "cyclic"), GradientCode(6, 2, "cyclic", seed=1)),
    (GradientCode(6, 2, "cyclic"), GradientCode(6, 1, "cyclic")),
    (ReplicationCode(6, 6), MDSCode(6, 6)),
    (GradientCode(6, 0, "cyclic"), ReplicationCode(6, 6)),
], ids=repr)
def test_different_codes_are_unequal(a, b):
    assert a != b and b != a
    assert len({a, b}) == 2


def test_recovery_thresholds():
    assert MDSCode(6, 4).recovery_threshold == 4
    assert PolynomialCode(7, 2, 3).recovery_threshold == 6
    assert MatDotCode(7, 3).recovery_threshold == 5
    assert PolyDotCode(9, 2, 2, 2).recovery_threshold == 9
    assert ReplicationCode(6, 3).recovery_threshold == 5   # every block twice
    assert ReplicationCode(7, 3).recovery_threshold == 6   # replicas 3, 2, 2
    assert ReplicationCode(5, 5).recovery_threshold == 5   # uncoded
    assert GradientCode(6, 2, "cyclic").recovery_threshold == 4
    assert CONSTRUCTIONS == ("circle", "equispaced", "chebyshev")


# --------------------------------------------------------------------------- tasks, encodings
def test_task_repr_and_encoding():
    code = MDSCode(6, 4)
    A, x = np.arange(15.0).reshape(5, 3), np.ones(3)
    tasks = code.encode(A, x)
    assert isinstance(tasks, Encoding)
    assert len(tasks) == 6
    assert [t.worker for t in tasks] == list(range(6))
    assert all(isinstance(t, Task) for t in tasks)
    assert tasks[2].worker == 2
    assert tasks.shape == (5,)
    # A's 5 rows padded to 2 row blocks * 4 = 8 rows: each worker holds 2 real rows
    assert repr(tasks[0]) == "Task(worker=0, a=(2, 3) float64, b=(3,) float64)"
    assert repr(tasks) == ("Encoding(MDSCode(workers=6, k=4, construction='circle', systematic=True), 6 tasks, "
                           "product shape (5,))")
    # systematic: worker 3 holds rows 6-7, all padding, so its scale is 0; the others hold data
    assert tasks.scales.shape == (6,) and list(np.flatnonzero(tasks.scales == 0)) == [3]


def test_task_repr_complex_and_exact():
    A, B = np.ones((5, 3)), np.ones((3, 2))
    t = MatDotCode(6, 2).encode(A, B)
    assert repr(t[0]) == "Task(worker=0, a=(5, 1) complex128, b=(1, 2) complex128)"
    t = MatDotCode(6, 2, field=P).encode(A.astype(int), B.astype(int))
    assert repr(t[0]) == "Task(worker=0, a=(5, 2) int64, b=(2, 2) int64)"
    assert t.scales is None


@pytest.mark.parametrize("code", [MDSCode(6, 4), PolynomialCode(7, 2, 2), MatDotCode(6, 2),
                                  PolyDotCode(8, 2, 2, 1), ReplicationCode(5, 2),
                                  GradientCode(5, 1, "cyclic"),
                                  MDSCode(6, 3, construction="chebyshev")], ids=repr)
def test_encoding_length_and_compute(code):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((9, 7)), rng.standard_normal((7, 4))
    tasks = code.encode(A, B)
    assert len(tasks) == code.workers == len(list(tasks))
    assert tasks.shape == (9, 4)
    for t in tasks:
        np.testing.assert_array_equal(t.compute(), t.a @ t.b)
    out = code.decode({t.worker: t.compute() for t in tasks}, encoding=tasks)
    assert rel_err(out, A @ B) < 1e-12
    # shape= instead of encoding= also removes the split padding
    sub = {t.worker: t.compute() for t in tasks[: code.recovery_threshold]}
    if isinstance(code, ReplicationCode):
        sub = {t.worker: t.compute() for t in tasks}
    assert code.decode(sub, shape=(9, 4)).shape == (9, 4)


def test_decode_info():
    code = MDSCode(6, 4)
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((8, 3)), rng.standard_normal((3, 2))
    tasks = code.encode(A, B)
    res = {t.worker: t.compute() for t in tasks}
    res[4] = res[4] + 100.0
    out, info = code.decode(res, errors=1, encoding=tasks, return_info=True)
    assert isinstance(info, DecodeInfo)
    assert info.faulty == (4,)
    assert info.used == (0, 1, 2, 3, 5)
    assert info.checked is True
    assert 1.0 <= info.condition < 10.0
    assert rel_err(out, A @ B) < 1e-12
    _, info = code.decode({w: res[w] for w in (0, 1, 2, 3)}, encoding=tasks, return_info=True)
    assert info.checked is False and info.faulty == ()


# --------------------------------------------------------------------------- precision
FLOAT32_CODES = [MDSCode(6, 4), PolynomialCode(7, 2, 2), MatDotCode(6, 2), PolyDotCode(8, 2, 2, 1),
                 MDSCode(6, 4, construction="chebyshev"), ReplicationCode(6, 3),
                 GradientCode(6, 2, "cyclic"), GradientCode(6, 2, "fractional_repetition")]


@pytest.mark.parametrize("code", FLOAT32_CODES, ids=repr)
def test_float32_inputs_decode_within_1e_4(code):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((20, 16)).astype(np.float32)
    B = rng.standard_normal((16, 6)).astype(np.float32)
    tasks = code.encode(A, B)
    n, k = code.workers, code.recovery_threshold
    want = A.astype(np.float64) @ B.astype(np.float64)
    for S in itertools.combinations(range(n), k):
        if isinstance(code, ReplicationCode) and {w % code.k for w in S} != set(range(code.k)):
            continue
        out = code.decode({w: tasks[w].compute() for w in S}, encoding=tasks)
        assert rel_err(out, want) < 1e-4


def test_float32_inputs_get_float32_operands_on_well_conditioned_codes():
    A = np.ones((8, 4), dtype=np.float32)
    B = np.ones((4, 2), dtype=np.float32)
    assert MDSCode(6, 4).encode(A, B)[0].a.dtype == np.float32
    assert MatDotCode(6, 2).encode(A, B)[0].a.dtype == np.complex64
    assert ReplicationCode(4, 2).encode(A, B)[0].a.dtype == np.float32
    assert MDSCode(6, 4).encode(A.astype(np.float64), B)[0].a.dtype == np.float64


@pytest.mark.parametrize("code", FLOAT32_CODES, ids=repr)
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("input_dtype", [np.float32, np.float64])
def test_precision_keyword_sets_operand_dtype(code, precision, input_dtype):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((8, 6)).astype(input_dtype)
    B = rng.standard_normal((6, 3)).astype(input_dtype)
    tasks = code.encode(A, B, precision=precision)
    complex_tasks = isinstance(code, PolyDotCode) and code.construction == "circle" and code.m > 1
    want = np.dtype(precision)
    if complex_tasks:
        want = np.dtype(np.complex64 if precision == "float32" else np.complex128)
    for t in tasks:
        assert t.a.dtype == want and t.b.dtype == want
        assert t.compute().dtype == want
    assert tasks.dtype == want
    out = code.decode({t.worker: t.compute() for t in tasks}, encoding=tasks) \
        if not isinstance(code, GradientCode) else \
        code.decode({t.worker: t.compute() for t in tasks[: code.recovery_threshold]}, encoding=tasks)
    assert rel_err(out, A.astype(np.float64) @ B.astype(np.float64)) < (1e-4 if precision == "float32" else 1e-6)


def test_bad_precision_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="`precision` must be one of 'auto', 'float32', 'float64', 'compensated', got 'half'"):
        MDSCode(6, 4).encode(np.ones((4, 3)), np.ones(3), precision="half")


# --------------------------------------------------------------------------- GF(p) operands
GF_CODES = [MDSCode(6, 4, field=P), PolynomialCode(7, 2, 2, field=P), MatDotCode(6, 2, field=P),
            PolyDotCode(8, 2, 2, 1, field=P), ReplicationCode(5, 2, field=P),
            GradientCode(5, 1, "cyclic", field=P), GradientCode(6, 1, "fractional_repetition", field=P)]


@pytest.mark.parametrize("code", GF_CODES, ids=repr)
def test_gf_tasks_are_int64_residues_and_match_compute(code):
    """GF(p) operands are int64 residues whose ``@`` is exact mod p (no galois needed);
    ``as_galois`` gives galois FieldArrays whose product is the same."""
    rng = np.random.default_rng(4)
    A, B = rng.integers(0, P, size=(9, 7)), rng.integers(0, P, size=(7, 3))
    tasks = code.encode(A, B)
    GF = gf(P)
    for t in tasks:
        for x in (t.a, t.b):
            assert isinstance(x, Residues) and x.modulus == P
            assert not isinstance(x, galois.FieldArray)
            assert x.dtype == np.int64 and x.min() >= 0 and x.max() < P
            assert type(np.asarray(x)) is np.ndarray
        prod = t.a @ t.b
        assert isinstance(prod, Residues) and prod.modulus == P
        np.testing.assert_array_equal(prod, t.compute())
        assert t.compute().dtype == np.int64
        ga, gb = t.as_galois()
        assert isinstance(ga, GF) and isinstance(gb, GF)
        np.testing.assert_array_equal((ga @ gb).view(np.ndarray), t.compute())
    want = (GF(A) @ GF(B)).view(np.ndarray)
    # Residues and galois FieldArray results are both accepted as they are
    out = code.decode({t.worker: t.a @ t.b for t in tasks}, encoding=tasks)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, want)
    out = code.decode({t.worker: np.matmul(*t.as_galois()) for t in tasks}, encoding=tasks)
    np.testing.assert_array_equal(out, want)


def test_residues_arithmetic_other_than_matmul_is_plain_int64():
    """Only ``@`` between residues of one field is field arithmetic; the rest is plain int64
    (nothing silently reduced), and a pickle keeps the modulus."""
    import pickle

    a = codedml.codes._field.residues_of(np.array([[P - 1, 2]]), P)
    b = codedml.codes._field.residues_of(np.array([[P - 1], [3]]), P)
    assert (a @ b).tolist() == [[(1 + 6) % P]]
    s = a + a
    assert type(s) is np.ndarray and s.tolist() == [[2 * P - 2, 4]]
    other = codedml.codes._field.residues_of(np.array([[P - 1], [3]]), 65537)
    assert type(a @ other) is np.ndarray                       # different fields: plain int64
    assert (a @ other).tolist() == [[(P - 1) ** 2 + 6]]
    back = pickle.loads(pickle.dumps(a))
    assert isinstance(back, Residues) and back.modulus == P and (back @ b).tolist() == [[7]]
    with pytest.raises(ConfigurationError, match="needs a task over GF"):
        MDSCode(4, 2).encode(np.ones((4, 2)), np.ones(2))[0].as_galois()


def test_gf_inputs_are_validated():
    code = MDSCode(6, 4, field=P)
    with pytest.raises(ConfigurationError, match=r"must hold integers for the field GF\(65521\)"):
        code.encode(np.ones((4, 3)), np.ones(3, dtype=int))
    with pytest.raises(ConfigurationError, match=r"`A` entries must be between 0 and 65520 for GF\(65521\), got 65521"):
        code.encode(np.full((4, 3), P), np.ones(3, dtype=int))
    with pytest.raises(ConfigurationError, match="got -1"):
        code.encode(np.ones((4, 3), dtype=int), -np.ones(3, dtype=int))


# --------------------------------------------------------------------------- gradient codes
@pytest.mark.parametrize("n,s", [(6, 0), (6, 1), (6, 2), (6, 5), (4, 1), (1, 0)])
def test_fractional_repetition_partitions_are_groups(n, s):
    code = GradientCode(n, s, "fractional_repetition")
    for w in range(n):
        g = w // (s + 1)
        assert code.partitions(w) == tuple(range(g * (s + 1), (g + 1) * (s + 1)))
        np.testing.assert_array_equal(code.coefficients[w],
                                      [1.0 if j in code.partitions(w) else 0.0 for j in range(n)])


@pytest.mark.parametrize("field", [None, P])
@pytest.mark.parametrize("n,s", [(5, 0), (5, 1), (5, 2), (6, 3), (7, 6), (2, 1)])
def test_cyclic_partitions_are_cyclic_supports(n, s, field):
    code = GradientCode(n, s, "cyclic", field=field)
    for w in range(n):
        assert code.partitions(w) == tuple(sorted({(w + t) % n for t in range(s + 1)}))
        assert code.coefficients[w, w] == 1
        off = [j for j in range(n) if j not in code.partitions(w)]
        assert (code.coefficients[w, off] == 0).all()
    if field is not None:
        assert code.coefficients.dtype == np.int64
        assert ((code.coefficients >= 0) & (code.coefficients < field)).all()


def test_partitions_rejects_bad_worker():
    code = GradientCode(4, 1, "cyclic")
    with pytest.raises(ConfigurationError, match="`worker` must be between 0 and 3, got 4"):
        code.partitions(4)


GRADIENT_API = [(n, s, scheme, field) for field in (None, P)
                for n, s, scheme in ((4, 1, "cyclic"), (5, 2, "cyclic"), (6, 3, "cyclic"),
                                     (6, 1, "fractional_repetition"), (6, 2, "fractional_repetition"),
                                     (3, 0, "cyclic"), (3, 2, "cyclic"))]


@pytest.mark.parametrize("n,s,scheme,field", GRADIENT_API,
                         ids=[f"{n}-{s}-{sc}-{f}" for n, s, sc, f in GRADIENT_API])
def test_combine_and_decode_give_exact_gradient_sum(n, s, scheme, field):
    code = GradientCode(n, s, scheme, field=field)
    rng = np.random.default_rng(5)
    if field is None:
        grads = rng.standard_normal((n, 3, 2))
        want = grads.sum(axis=0)
    else:
        grads = rng.integers(0, field, size=(n, 3, 2))
        want = gf(field)(grads).sum(axis=0).view(np.ndarray)
    for S in itertools.combinations(range(n), n - s):
        msgs = {w: code.combine(w, {j: grads[j] for j in code.partitions(w)}) for w in S}
        out = code.decode(msgs)
        if field is None:
            assert rel_err(out, want) < 1e-10
        else:
            np.testing.assert_array_equal(out, want)


def test_combine_requires_every_held_partition():
    code = GradientCode(4, 1, "cyclic")
    with pytest.raises(ConfigurationError, match=r"must hold partitions \(0, 1\), missing \[1\]"):
        code.combine(0, {0: np.ones(3)})


@pytest.mark.parametrize("n,s,scheme,field", GRADIENT_API,
                         ids=[f"{n}-{s}-{sc}-{f}" for n, s, sc, f in GRADIENT_API])
def test_decoding_vector_solves_a_B_S_equals_ones(n, s, scheme, field):
    code = GradientCode(n, s, scheme, field=field)
    for r in range(n - s, n + 1):
        for S in itertools.combinations(range(n), r):
            a = code.decoding_vector(S)
            assert a.shape == (r,)
            Bs = code.coefficients[list(S)]
            if field is None:
                np.testing.assert_allclose(a @ Bs, np.ones(n), atol=1e-10)
            else:
                GF = gf(field)
                np.testing.assert_array_equal((GF(a % field) @ GF(Bs % field)).view(np.ndarray),
                                              np.ones(n, dtype=np.int64))


@pytest.mark.parametrize("field", [None, P])
def test_decoding_vector_from_too_few_workers_is_an_error(field):
    code = GradientCode(6, 2, "fractional_repetition", field=field)
    with pytest.raises(ConfigurationError):
        code.decoding_vector([0, 1, 2])        # group 1 (partitions 3..5) missing


# --------------------------------------------------------------------------- exceptions
def test_exception_hierarchy():
    assert issubclass(ConfigurationError, ValueError)
    for exc in (ConfigurationError, NotEnoughResultsError, CorruptResultError):
        assert issubclass(exc, CodedMLError)
    assert codedml.ConfigurationError is ConfigurationError


@pytest.mark.parametrize("make,message", [
    (lambda: MDSCode(6, 7), "`k` must be between 1 and workers=6, got 7"),
    (lambda: MDSCode(6, 2.0), "`k` must be an integer, got 2.0 (float)"),
    (lambda: MDSCode(0, 1), "`workers` must be at least 1, got 0"),
    (lambda: PolyDotCode(6, 2, 2, 2), "recovery threshold row_blocks*inner_blocks*col_blocks + "
                                      "inner_blocks - 1 = 2*2*2 + 2 - 1 = 9 must be at most workers=6"),
    (lambda: MDSCode(6, 4, field=65520), "`field` must be a prime, got 65520, which is not prime"),
    (lambda: MDSCode(6, 4, field=5), "`field` must be a prime larger than workers=6"),
    (lambda: MDSCode(6, 4, construction="foo"),
     "`construction` must be one of ('circle', 'equispaced', 'chebyshev'), got 'foo'"),
    (lambda: GradientCode(5, 1, "fractional_repetition"),
     "fractional repetition needs stragglers+1=2 to divide workers=5"),
    (lambda: GradientCode(5, 1, "x"), "`scheme` must be one of ('fractional_repetition', 'cyclic'), got 'x'"),
    (lambda: GradientCode(5, 5, "cyclic"), "`stragglers` must be between 0 and workers-1=4, got 5"),
    (lambda: ReplicationCode(3, 4), "`k` must be between 1 and workers=3, got 4"),
    (lambda: MDSCode(6, 4).encode(np.ones((4, 3)), np.ones(4)),
     "`A` and `B` must have matching inner dimensions, got A (4, 3) and B (4,)"),
    (lambda: MDSCode(6, 4).encode(np.full((4, 3), np.nan), np.ones(3)), "`A` contains NaN or Inf"),
    (lambda: PolynomialCode(6, 2, 2).encode(np.ones((4, 3)), np.ones(3)), "col_blocks=2"),
    (lambda: MDSCode(6, 4).decode({7: np.ones(2)}),
     "`results key (worker index)` must be between 0 and 5, got 7"),
    (lambda: MDSCode(6, 4).decode([np.ones(2)]), "`results` must map worker index"),
    (lambda: MDSCode(6, 4).decode({0: np.ones(2), 1: np.ones(3)}), "`results` must all have one shape"),
    (lambda: MDSCode(6, 4).decode({0: np.ones(2)}, errors=-1), "`errors` must be between 0 and 6, got -1"),
])
def test_configuration_errors_are_pinned(make, message):
    with pytest.raises(ConfigurationError) as exc:
        make()
    assert message in str(exc.value)


def test_not_enough_results_error_is_pinned():
    code = MDSCode(6, 4)
    tasks = code.encode(np.ones((8, 3)), np.ones(3))
    with pytest.raises(NotEnoughResultsError) as exc:
        code.decode({w: tasks[w].compute() for w in (0, 5, 3)}, encoding=tasks)
    assert str(exc.value) == "3 results arrived, 4 are needed to decode MDSCode with workers=6"
    assert (exc.value.received, exc.value.needed) == (3, 4)
    with pytest.raises(NotEnoughResultsError):
        code.decode({})
    rep = ReplicationCode(4, 2)
    tasks = rep.encode(np.ones((4, 3)), np.ones(3))
    with pytest.raises(NotEnoughResultsError) as exc:
        rep.decode({0: tasks[0].compute(), 2: tasks[2].compute()})   # block 1 missing
    assert (exc.value.received, exc.value.needed) == (2, 3)


@pytest.mark.parametrize("field", [None, P])
def test_corrupt_result_error_beyond_the_codes_power(field):
    # Two errors among n - k = 2 spare results: errors=0 detects them whatever the code;
    # errors >= 1 corrects at most one, and whether two are detected or *miscorrected*
    # depends on the pattern (bounded-distance decoding). Workers 1 and 4 of the plain code
    # are detected; the systematic code's point order maps them to points 2 and 0, on which
    # x^3 + 1 (a codeword: degree 3 < k, values 2, 0, 2, 0, 2, 0) makes equal corruptions
    # there look like one at point 4 (test_systematic_two_errors_are_detected_with_errors_0).
    code = MDSCode(6, 4, field=field, systematic=False)
    rng = np.random.default_rng(6)
    if field is None:
        A, B = rng.standard_normal((8, 3)), rng.standard_normal((3, 2))
    else:
        A, B = rng.integers(0, P, size=(8, 3)), rng.integers(0, P, size=(3, 2))
    tasks = code.encode(A, B)
    res = {t.worker: t.compute() for t in tasks}
    for w in (1, 4):   # two errors, 2 spare results: detected, not corrected
        res[w] = res[w] + 100 if field is None else (res[w] + 100) % P
    for errors in (0, 1, 2):
        with pytest.raises(CorruptResultError) as exc:
            code.decode(res, errors=errors, encoding=tasks)
        assert isinstance(exc.value.suspects, tuple)


@pytest.mark.parametrize("field", [None, P], ids=["real", "GF"])
def test_systematic_two_errors_are_detected_with_errors_0(field):
    code = MDSCode(6, 4, field=field, systematic=True)
    rng = np.random.default_rng(6)
    if field is None:
        A, B = rng.standard_normal((8, 3)), rng.standard_normal((3, 2))
    else:
        A, B = rng.integers(0, P, size=(8, 3)), rng.integers(0, P, size=(3, 2))
    tasks = code.encode(A, B)
    for pair in ((1, 4), (0, 5), (2, 3)):
        res = {t.worker: t.compute() for t in tasks}
        for w in pair:
            res[w] = res[w] + 100 if field is None else (res[w] + 100) % P
        with pytest.raises(CorruptResultError):
            code.decode(res, errors=0, encoding=tasks)


def test_non_finite_results_are_erased_and_reported():
    code = MDSCode(6, 4)
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((8, 3)), rng.standard_normal((3, 2))
    tasks = code.encode(A, B)
    res = {t.worker: t.compute() for t in tasks}
    res[2] = np.full_like(res[2], np.nan)
    res[5] = np.full_like(res[5], np.inf)
    out, faulty = code.decode(res, encoding=tasks, return_faulty=True)
    assert faulty == (2, 5)
    assert rel_err(out, A @ B) < 1e-12
    res[0] = np.full_like(res[0], np.nan)
    with pytest.raises(CorruptResultError) as exc:
        code.decode(res, encoding=tasks)
    assert exc.value.suspects == (0, 2, 5)


# --------------------------------------------------------------------------- layering
def test_import_codes_is_light():
    """``import codedml, codedml.codes`` pulls in neither torch, mpi4py nor galois, and
    neither do real or GF(p) encodes, worker products and decodes; galois comes in only with
    ``Task.as_galois``."""
    code = textwrap.dedent("""
        import sys
        import codedml, codedml.codes
        heavy = [m for m in ('torch', 'mpi4py', 'galois', 'cupy') if m in sys.modules]
        assert not heavy, heavy
        import numpy as np
        codedml.codes.MDSCode(4, 2).encode(np.ones((4, 2)), np.ones(2))   # reals: still light
        assert 'galois' not in sys.modules
        code = codedml.codes.MDSCode(4, 2, field=65521)
        tasks = code.encode(np.ones((4, 2), int), np.ones(2, int))
        res = {t.worker: t.a @ t.b for t in tasks}
        res[0] = tasks[0].compute()
        assert code.decode(res, encoding=tasks).tolist() == [2, 2, 2, 2]
        assert 'galois' not in sys.modules                                # GF(p) without galois
        tasks[0].as_galois()
        assert 'galois' in sys.modules                                    # only when asked for
        assert 'torch' not in sys.modules and 'mpi4py' not in sys.modules
        print('ok')
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# --------------------------------------------------------------------------- decodable / compensates
def test_public_decodability_check_validates_workers():
    rep = ReplicationCode(6, 3)                    # worker w computes block w mod 3
    assert rep.decodable([0, 1, 5]) is True
    assert rep.decodable({0, 3, 4}) is False       # block 2 missing
    assert rep.decodable(iter([2, 1, 0])) is True  # any iterable, any order
    assert rep.decodable({0: None, 1: None, 2: None}) is True   # a results dict, by its keys
    mds = MDSCode(6, 4)
    assert mds.decodable(np.array([0, 2, 3, 5])) is True
    assert mds.decodable([0, 2, 3]) is False
    assert mds.decodable([]) is False
    fr = GradientCode(4, 1, "fractional_repetition")   # groups {0, 1}, {2, 3}
    assert fr.decodable([0, 2]) is True and fr.decodable([0, 1]) is False
    assert GradientCode(5, 1, "cyclic", field=P).decodable(range(4)) is True
    for bad, message in [([0, 6], "`workers` must be between 0 and 5, got 6"),
                         ([0, -1], "`workers` must be between 0 and 5, got -1"),
                         ([0, 1.5], "`workers` must be an integer"),
                         ([True], "`workers` must be an integer"),
                         ([1, 1, 2, 3], "`workers` has worker index 1 more than once"),
                         ("0123", "`workers` must be an iterable of worker indices"),
                         (3, "`workers` must be an iterable of worker indices")]:
        with pytest.raises(ConfigurationError) as exc:
            mds.decodable(bad)
        assert message in str(exc.value)


@pytest.mark.parametrize("code", [
    MDSCode(6, 4), MDSCode(6, 4, systematic=False), MDSCode(5, 3, field=P),
    PolynomialCode(7, 2, 2), MatDotCode(7, 3), MatDotCode(7, 3, systematic=False),
    MatDotCode(5, 2, field=P), PolyDotCode(8, 2, 2, 1), ReplicationCode(6, 3),
    ReplicationCode(5, 2), GradientCode(6, 2), GradientCode(4, 1, "fractional_repetition")],
    ids=repr)
def test_fewest_decodable_bounds_every_decodable_set(code):
    """``_fewest_decodable()`` (how many replies a job gathers in one poll before it looks,
    and below which it skips the decodability test) is at most the size of every decodable
    set of workers, checked over all subsets; tight for the codes whose bound is not 1."""
    fewest = code._fewest_decodable()
    sizes = [r for r in range(code.workers + 1)
             for S in itertools.combinations(range(code.workers), r) if code.decodable(S)]
    assert 1 <= fewest <= min(sizes)
    if fewest > 1:
        assert fewest == min(sizes)
    # systematic MatDot: its m data workers alone; replication: one worker per block
    expect = {"MatDotCode(workers=7, m=3, construction='circle', systematic=True)": 3,
              "ReplicationCode(workers=6, k=3)": 3, "MDSCode(workers=6, k=4, "
              "construction='circle', systematic=True)": 4}
    if repr(code) in expect:
        assert fewest == expect[repr(code)]


def test_fewest_decodable_is_1_where_a_subclass_decides():
    """A code class that overrides ``decodable`` or ``_recovers`` may decode from any
    number of results as far as the library can tell: the bound falls back to 1."""
    class Every(MDSCode):
        def decodable(self, workers):
            return len(set(workers)) == self.workers

    class Lucky(ReplicationCode):
        def _recovers(self, rows):
            return len(rows) > 0

    class Plain(PolynomialCode):
        def _recovers(self, rows):
            return len(rows) >= 1

    assert MDSCode(6, 4)._fewest_decodable() == 4
    assert Every(6, 4)._fewest_decodable() == 1
    assert Lucky(6, 3)._fewest_decodable() == 1
    assert Plain(7, 2, 2)._fewest_decodable() == 1
    # the same set on an instance
    for code in (MDSCode(6, 4), ReplicationCode(6, 3), GradientCode(6, 2, field=P)):
        code._recovers = lambda rows: len(rows) > 0
        assert code._fewest_decodable() == 1
    code = MatDotCode(7, 3)
    code.decodable = lambda workers: True
    assert code._fewest_decodable() == 1


def test_public_compensation_check_agrees_with_encode():
    A, B = np.ones((8, 3)), np.ones((3, 2))
    for code in (MDSCode(6, 4), ReplicationCode(4, 2), GradientCode(5, 1)):
        for prec in ("auto", "float64", "compensated"):
            enc = code.encode(A, B, precision=prec)
            assert code.compensates(np.float64, enc.dtype, prec) is enc.compensated
    assert MDSCode(6, 4).compensates(np.float64, np.float64, "compensated") is True
    assert MDSCode(6, 4).compensates(np.float32, np.float32, "compensated") is False
    assert MDSCode(6, 4, field=P).compensates(np.float64, np.int64, "compensated") is False
    with pytest.raises(ConfigurationError, match="`precision` must be one of"):
        MDSCode(6, 4).compensates(np.float64, np.float64, "double")


# --------------------------------------------------------------------------- padded layouts
@pytest.mark.parametrize("field", [None, P])
def test_padded_decode_without_encoding_is_refused_by_name(field):
    code = MDSCode(8, 5, field=field)       # circle: rows padded to a multiple of 10
    rng = np.random.default_rng(9)
    if field is None:
        A, B = rng.standard_normal((96, 6)), rng.standard_normal((6, 4))
        want = A @ B
    else:
        A, B = rng.integers(0, P, (96, 6)), rng.integers(0, P, (6, 4))
        want = np.asarray((gf(P)(A) @ gf(P)(B)).view(np.ndarray), dtype=np.int64)
    tasks = code.encode(A, B)
    assert tasks.shape == (96, 4) and tasks.padded_shape == (100, 4)
    res = {t.worker: t.compute() for t in tasks}
    with pytest.raises(ConfigurationError) as exc:
        code.decode(res)
    msg = str(exc.value)
    assert "`encoding=`" in msg and "`shape=`" in msg and "(100, 4)" in msg
    for out in (code.decode(res, encoding=tasks), code.decode(res, shape=(96, 4))):
        assert out.shape == (96, 4)
        if field is None:
            assert rel_err(out, want) < 1e-12
        else:
            np.testing.assert_array_equal(out, want)
    # unpadded: no encoding= needed
    tasks = code.encode(A[:90], B)
    assert tasks.padded_shape == tasks.shape == (90, 4)
    assert code.decode({t.worker: t.compute() for t in tasks}).shape == (90, 4)


def test_decode_shape_must_fit_the_padded_layout():
    code = ReplicationCode(4, 3)           # rows padded to a multiple of 3
    tasks = code.encode(np.ones((7, 2)), np.ones((2, 3)))
    res = {t.worker: t.compute() for t in tasks}
    assert code.decode(res, shape=(7, 3)).shape == (7, 3)
    for shape, message in [((7,), "`shape` must have 2 entries"),
                           ((10, 3), "must be between 7 and 9, got 10"),
                           ((6, 3), "must be between 7 and 9, got 6"),
                           ((7, 2), "must be between 3 and 3, got 2"),
                           (7, "`shape` must be a sequence of ints")]:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
            code.decode(res, shape=shape)


# --------------------------------------------------------------------------- decoder cache
def test_gf_decoders_cached_per_subset_and_bounded(monkeypatch):
    """Exact decoders are cached per (code, family, subset): a repeated subset reuses the
    inverse, another subset gets its own, results stay exact, and the LRU stays bounded."""
    from codedml.codes import _base

    monkeypatch.setattr(_base, "DECODER_CACHE_SIZE", 3)
    monkeypatch.setattr(_base, "_DECODERS", _base.OrderedDict())
    code = PolynomialCode(7, 2, 2, field=P)
    rng = np.random.default_rng(7)
    A, B = rng.integers(0, P, size=(6, 5)), rng.integers(0, P, size=(5, 4))
    want = (gf(P)(A) @ gf(P)(B)).view(np.ndarray)
    tasks = code.encode(A, B)
    calls = []
    real_inv = _base._gfp.inv_mod
    monkeypatch.setattr(_base._gfp, "inv_mod", lambda *a: calls.append(1) or real_inv(*a))
    subsets = list(itertools.combinations(range(7), 4))[:5]
    for S in subsets + subsets[-1:]:
        out = code.decode({w: tasks[w].compute() for w in S}, encoding=tasks)
        np.testing.assert_array_equal(out, want)
    assert len(calls) == 5                         # the repeated last subset hit the cache
    assert len(_base._DECODERS) == 3               # bounded
    keys = [k[2] for k in _base._DECODERS]
    assert keys[-1] == subsets[-1]
    with pytest.raises(ValueError):                # cached inverses are read-only
        next(iter(_base._DECODERS.values()))[1][0, 0] = 1


# ------------------------------------------------------------------ magnitudes and arguments
@pytest.mark.parametrize("code", [MDSCode(6, 2, systematic=False), MDSCode(6, 2),
                                  PolynomialCode(8, 2, 2), MatDotCode(7, 2)], ids=repr)
@pytest.mark.parametrize("scale", [1.0, 1e160, 1e-120, 1e-240, 1e-300])
def test_a_corrupt_result_is_located_at_any_magnitude_or_refused(code, scale):
    """Entries from about 1e154 square to inf, below about 1e-154 to 0: the encode's noise
    scales and the results' norms are then taken without either, so one corrupt result
    among spare ones is still located (an infinite scale had switched the check off: a 15%
    error passed, faulty=()). Results so small that their rounding noise is below what
    float64 can weigh (1e-300 inputs) are refused by name, not passed."""
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((8, 6)) * scale, rng.standard_normal((6, 5))
    enc = code.encode(A, B)
    assert np.isfinite(enc.scales).all() and (enc.scales > 0).all()
    res = {t.worker: t.compute() for t in enc}
    res[3] = res[3] * 1.5
    ref = A @ B
    if scale < 1e-280:
        with pytest.raises(ConfigurationError, match=r"too small for the decoder's corruption check"):
            code.decode(res, errors=1, encoding=enc)
        return
    for e in (enc, None):   # the scales from the encoding, or from the results' norms
        C, faulty = code.decode(res, errors=1, encoding=e, shape=ref.shape, return_faulty=True)
        assert faulty == (3,)
        assert np.abs(C - ref).max() <= 1e-12 * np.abs(ref).max()


def test_inputs_whose_norms_overflow_even_scaled_are_refused_by_name():
    A = np.full((4, 4), 1e200)
    B = np.full((4, 4), 1e200)
    with pytest.raises(ConfigurationError, match=r"too large for the decoder's noise model: `A` up to 1e\+200 and `B` up to 1e\+200"):
        MDSCode(6, 2).encode(A, B)
    enc = GradientCode(4, 1).encode(np.full((4, 4), 1e160), np.ones((4, 3)))   # finite: kept
    assert np.isfinite(enc.scales).all()


@pytest.mark.parametrize("rtol", [np.inf, 1e300, 1.0, 0.0, -1.0, np.nan, "1e-3", True])
def test_decode_rtol_is_checked_on_every_path(rtol):
    """A tolerance of the product's own size or more would pass any corrupt result: refused,
    on the general path and on the fast paths (exactly k results)."""
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((8, 6)), rng.standard_normal((6, 5))
    for code in (MDSCode(6, 2), MDSCode(6, 2, systematic=False), ReplicationCode(4, 2)):
        enc = code.encode(A, B)
        res = {t.worker: t.compute() for t in enc}
        for part in (res, {w: res[w] for w in list(res)[:code.recovery_threshold]}):
            with pytest.raises(ConfigurationError, match=r"`rtol` must be a number between 0 and 1"):
                code.decode(part, errors=0, encoding=enc, rtol=rtol)


def test_results_are_checked_against_the_encoding():
    """With ``encoding=``, results of another shape than the tasks' products, or complex
    results of real operands, are refused by name instead of decoded into a wrong shape or
    cut to their real part."""
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((8, 6)), rng.standard_normal((6, 5))
    for code in (MDSCode(5, 2), MDSCode(5, 2, systematic=False), ReplicationCode(4, 2),
                 PolynomialCode(6, 2, 2)):
        enc = code.encode(A, B)
        res = {t.worker: t.compute() for t in enc}
        shape = res[0].shape
        k = code.recovery_threshold
        # every result, and exactly k of them (the first, the last: a small job's decode)
        for some in (res, {w: res[w] for w in list(res)[:k]}, {w: res[w] for w in list(res)[-k:]}):
            for bad in ({w: r[:, :-1] for w, r in some.items()}, {w: r[:-1] for w, r in some.items()},
                        {w: r.ravel() for w, r in some.items()},
                        {w: r[..., None] for w, r in some.items()}):
                with pytest.raises(ConfigurationError, match=rf"must have the shape of each worker's product a @ b, \({shape[0]}, {shape[1]}\)"):
                    code.decode(bad, encoding=enc)
        with pytest.raises(ConfigurationError, match=r"`results` must be real for this encoding"):
            code.decode({w: r.astype(complex) for w, r in res.items()}, encoding=enc)
        assert np.allclose(code.decode(res, encoding=enc), A @ B, rtol=0, atol=1e-12)
    enc = MatDotCode(5, 2).encode(A, B)   # complex operands: complex results are right
    res = {t.worker: t.compute() for t in enc}
    assert np.iscomplexobj(res[0])
    assert np.allclose(MatDotCode(5, 2).decode(res, encoding=enc), A @ B, rtol=0, atol=1e-12)


def test_gradient_combine_checks_its_partials():
    code = GradientCode(4, 1)
    j0, j1 = code.partitions(0)
    with pytest.raises(ConfigurationError, match=rf"one shape, partition {j0} has \(3,\) and partition {j1} has \(1,\)"):
        code.combine(0, {j0: np.ones(3), j1: np.ones(1)})
    with pytest.raises(ConfigurationError, match=rf"`partials\[{j0}\]` must hold real numbers, got dtype complex128"):
        code.combine(0, {j0: np.ones(3) + 1j, j1: np.ones(3)})
    gf = GradientCode(4, 1, field=65537)
    with pytest.raises(ConfigurationError, match=r"one shape"):
        gf.combine(0, {j0: np.ones(3, dtype=np.int64), j1: np.ones((3, 1), dtype=np.int64)})
    assert np.allclose(code.combine(0, {j0: np.ones(3), j1: 2 * np.ones(3)}),
                       code.coefficients[0][j0] + 2 * code.coefficients[0][j1])


def test_products_of_tiny_normal_magnitude_decode_with_spare_results():
    """A product of about 1e-240 (entries well inside float64's normal range) decodes, with
    spare results and errors=0 as with errors=1 (a floor of 1e-250 had refused it)."""
    rng = np.random.default_rng(9)
    A, B = 1e-140 * rng.standard_normal((8, 8)), 1e-100 * rng.standard_normal((8, 4))
    for code in (ReplicationCode(4, 2), MDSCode(6, 2), MatDotCode(7, 2)):
        enc = code.encode(A, B)
        res = {t.worker: t.compute() for t in enc}
        for errors in (0, 1):
            C = code.decode(res, errors=errors, encoding=enc)
            assert np.abs(C - A @ B).max() <= 1e-12 * np.abs(A @ B).max()
