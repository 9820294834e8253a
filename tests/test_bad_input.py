"""Bad input to encode / decode gets a clear error: the argument's name, the valid range and
the value received (the constructors' bad arguments are in tests/bad_input_cases.py).

Every error raised on purpose is a :class:`codedml.errors.CodedMLError`; a bad argument is a
:class:`ConfigurationError`, which is also a ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pytest

from codedml import errors as errors_module
from codedml.codes import (
    GradientCode,
    MatDotCode,
    MDSCode,
    PolynomialCode,
    ReplicationCode,
    condition_number,
    worst_case_condition,
)
from codedml.errors import (
    CodedMLError,
    ConfigurationError,
    CorruptResultError,
    NotEnoughResultsError,
    WorkerFailure,
)





def esc(text: str) -> str:
    return re.escape(text)


# --------------------------------------------------------------------------- hierarchy
def test_error_hierarchy():
    assert issubclass(ConfigurationError, CodedMLError)
    assert issubclass(ConfigurationError, ValueError)
    for cls in (NotEnoughResultsError, CorruptResultError, WorkerFailure):
        assert issubclass(cls, CodedMLError)
    assert issubclass(CodedMLError, Exception)
    for name in errors_module.__all__:
        cls = getattr(errors_module, name)
        assert issubclass(cls, CodedMLError)
        assert cls.__doc__ and cls.__doc__.strip(), f"{name} has no docstring"


# --------------------------------------------------------------------------- constructors
# The constructors' bad arguments (workers, k, block counts, stragglers, construction, scheme,
# field) are rows of tests/bad_input_cases.py, checked by tests/test_bad_cli.py.


# --------------------------------------------------------------------------- encode inputs
REAL = MDSCode(6, 3)


@pytest.mark.parametrize("code", [MDSCode(6, 3), MatDotCode(6, 2), ReplicationCode(6, 3),
                                  GradientCode(6, 1)], ids=["MDS", "MatDot", "Replication", "Gradient"])
def test_mismatched_shapes(code):
    with pytest.raises(ConfigurationError,
                       match=esc("`A` and `B` must have matching inner dimensions, got A (6, 4) and B (5, 2)")):
        code.encode(np.ones((6, 4)), np.ones((5, 2)))


def test_vector_b_with_column_blocks():
    with pytest.raises(ConfigurationError, match=esc("`B` is a vector, which cannot be split into col_blocks=2")):
        PolynomialCode(6, 2, 2).encode(np.ones((6, 4)), np.ones(4))
    REAL.encode(np.ones((6, 4)), np.ones(4))  # a vector is fine with one column block


@pytest.mark.parametrize("code", [MDSCode(6, 3), ReplicationCode(6, 3), GradientCode(6, 1),
                                  MDSCode(6, 3, field=7)], ids=["MDS", "Replication", "Gradient", "GF7"])
def test_three_dimensional_input(code):
    dt = np.int64 if code.field else np.float64
    with pytest.raises(ConfigurationError, match=r"`A` must .*2-D.*got.*\(2, 6, 4\)"):
        code.encode(np.ones((2, 6, 4), dtype=dt), np.ones((4, 2), dtype=dt))
    with pytest.raises(ConfigurationError, match=r"`B` must .*got.*\(4, 2, 2\)"):
        code.encode(np.ones((6, 4), dtype=dt), np.ones((4, 2, 2), dtype=dt))
    with pytest.raises(ConfigurationError, match=r"`A` must .*2-D.*got.*\(4,\)"):
        code.encode(np.ones(4, dtype=dt), np.ones((4, 2), dtype=dt))


def test_complex_input_for_real_field():
    with pytest.raises(ConfigurationError, match=esc("`A` must be real for the real field, got dtype complex128")):
        REAL.encode(np.ones((6, 4)) * 1j, np.ones((4, 2)))
    with pytest.raises(ConfigurationError, match=esc("`B` must be real for the real field, got dtype complex64")):
        REAL.encode(np.ones((6, 4)), np.ones((4, 2), dtype=np.complex64))


@pytest.mark.parametrize("which, value", [("A", np.nan), ("A", np.inf), ("B", -np.inf), ("B", np.nan)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nonfinite_input(which, value, dtype):
    A, B = np.ones((6, 4), dtype=dtype), np.ones((4, 2), dtype=dtype)
    (A if which == "A" else B)[1, 1] = value
    for code in (REAL, ReplicationCode(6, 3), GradientCode(6, 1)):
        with pytest.raises(ConfigurationError, match=f"`{which}` contains NaN or Inf"):
            code.encode(A, B)


def test_non_numeric_input():
    with pytest.raises(ConfigurationError, match=r"`A` must be a numeric array, got dtype"):
        REAL.encode(np.array([["a", "b"]]), np.ones((2, 2)))
    with pytest.raises(ConfigurationError, match=r"`A` must be a numeric array, got dtype object"):
        REAL.encode(np.array([[None, None]]), np.ones((2, 2)))


@pytest.mark.parametrize("precision", ["float16", "double", None, "FLOAT32", 32])
def test_bad_precision(precision):
    with pytest.raises(ConfigurationError,
                       match=esc("`precision` must be one of 'auto', 'float32', 'float64', 'compensated', got ")):
        REAL.encode(np.ones((6, 4)), np.ones((4, 2)), precision=precision)


GF = MDSCode(6, 3, field=101)


def test_gf_non_integer_input():
    with pytest.raises(ConfigurationError, match=esc("`A` must hold integers for the field GF(101), got dtype float64")):
        GF.encode(np.ones((6, 4)), np.ones((4, 2), dtype=np.int64))
    with pytest.raises(ConfigurationError, match=esc("`B` must hold integers for the field GF(101), got dtype bool")):
        GF.encode(np.ones((6, 4), dtype=np.int64), np.ones((4, 2), dtype=bool))


@pytest.mark.parametrize("value, dtype", [(-1, np.int64), (101, np.int64), (2**40, np.int64),
                                          (101, np.uint8), (2**63, np.uint64)])
def test_gf_input_out_of_range(value, dtype):
    B = np.ones((4, 2), dtype=dtype)
    B[0, 1] = value
    with pytest.raises(ConfigurationError,
                       match=esc(f"`B` entries must be between 0 and 100 for GF(101), got {value}")):
        GF.encode(np.ones((6, 4), dtype=np.int64), B)


# --------------------------------------------------------------------------- decode inputs
@pytest.fixture(scope="module")
def real_results():
    enc = REAL.encode(np.arange(24.0).reshape(6, 4), np.ones((4, 2)))
    return enc, {t.worker: t.compute() for t in enc}


@pytest.mark.parametrize("code", [MDSCode(6, 3), MatDotCode(6, 2), PolynomialCode(6, 2, 2),
                                  GradientCode(6, 2), MDSCode(6, 3, field=101)],
                         ids=["MDS", "MatDot", "Polynomial", "Gradient", "GF101"])
def test_fewer_results_than_needed(code):
    dt = np.int64 if code.field else np.float64
    enc = code.encode(np.ones((6, 4), dtype=dt), np.ones((4, 2), dtype=dt))
    k = code.recovery_threshold
    # the last k - 1 workers: systematic MatDot decodes from its first m (systematic) alone
    results = {t.worker: t.compute() for t in enc if t.worker >= code.workers - (k - 1)}
    with pytest.raises(NotEnoughResultsError) as info:
        code.decode(results, encoding=enc)
    err = info.value
    assert err.received == k - 1 and err.needed == k
    assert f"{k - 1} results arrived" in str(err) and f"{k} are needed" in str(err)
    with pytest.raises(NotEnoughResultsError, match="0 results arrived") as info:
        code.decode({}, encoding=enc)
    assert info.value.received == 0 and info.value.needed == k


def test_replication_missing_block_is_not_enough():
    code = ReplicationCode(6, 3)
    enc = code.encode(np.ones((6, 4)), np.ones((4, 2)))
    # workers 0 and 3 both hold block 0, worker 1 block 1: block 2 is missing
    with pytest.raises(NotEnoughResultsError) as info:
        code.decode({w: enc[w].compute() for w in (0, 1, 3)}, encoding=enc)
    assert info.value.received == 3


class PairMapping(Mapping):
    """A Mapping that keeps keys distinct by type (dict would merge 1 and np.int64(1))."""

    def __init__(self, pairs):
        self._pairs = list(pairs)

    def __getitem__(self, key):
        for k, v in self._pairs:
            if k is key:
                return v
        raise KeyError(key)

    def __iter__(self):
        return iter(k for k, _ in self._pairs)

    def __len__(self):
        return len(self._pairs)


def test_duplicate_worker_index(real_results):
    enc, res = real_results
    one = np.int64(1)
    results = PairMapping([(1, res[1]), (one, res[1]), (2, res[2]), (3, res[3])])
    with pytest.raises(ConfigurationError, match=esc("`results` has worker index 1 more than once")):
        REAL.decode(results, encoding=enc)


@pytest.mark.parametrize("key, text", [
    (-1, "`results key (worker index)` must be between 0 and 5, got -1"),
    (6, "`results key (worker index)` must be between 0 and 5, got 6"),
    (np.int64(6), "`results key (worker index)` must be between 0 and 5, got 6"),
    ("1", "`results key (worker index)` must be an integer, got '1' (str)"),
    (1.0, "`results key (worker index)` must be an integer, got 1.0 (float)"),
    (True, "`results key (worker index)` must be an integer, got True (bool)"),
])
def test_bad_worker_index(real_results, key, text):
    enc, res = real_results
    with pytest.raises(ConfigurationError, match=esc(text)):
        REAL.decode({key: res[0], 2: res[2], 3: res[3], 4: res[4]}, encoding=enc)


def test_results_with_different_shapes(real_results):
    enc, res = real_results
    with pytest.raises(ConfigurationError,
                       match=esc("`results` must all have one shape, worker 1 gave (2, 2) and worker 2 gave (2, 1)")):
        REAL.decode({1: res[1], 2: res[2][:, :1], 3: res[3]}, encoding=enc)


@pytest.mark.parametrize("results", [lambda r: [r[0], r[1], r[2]], lambda r: (r[0], r[1], r[2]),
                                     lambda r: r[0], lambda r: None],
                         ids=["list", "tuple", "array", "None"])
def test_results_not_a_mapping(real_results, results):
    enc, res = real_results
    with pytest.raises(ConfigurationError, match="`results` must map worker index to that worker's product, got"):
        REAL.decode(results(res), encoding=enc)


def test_results_not_numeric(real_results):
    enc, res = real_results
    with pytest.raises(ConfigurationError, match="`results`"):
        REAL.decode({w: np.full(res[w].shape, "x") for w in range(4)}, encoding=enc)


@pytest.mark.parametrize("errors, text", [
    (-1, "`errors` must be between 0 and 6, got -1"),
    (7, "`errors` must be between 0 and 6, got 7"),
    (1.5, "`errors` must be an integer, got 1.5 (float)"),
    (True, "`errors` must be an integer, got True (bool)"),
])
def test_bad_errors(real_results, errors, text):
    enc, res = real_results
    with pytest.raises(ConfigurationError, match=esc(text)):
        REAL.decode(res, errors=errors, encoding=enc)


@pytest.mark.parametrize("rtol", [0, -1.0, float("nan"), float("inf"), 1.0, "1e-3", True])
def test_bad_rtol(real_results, rtol):
    enc, res = real_results
    with pytest.raises(ConfigurationError, match=esc("`rtol` must be a number between 0 and 1 (exclusive; None for the default 16 eps of the operands' dtype), got")):
        REAL.decode(res, rtol=rtol, encoding=enc)


@pytest.fixture(scope="module")
def gf_results():
    enc = GF.encode(np.arange(24).reshape(6, 4) % 101, np.ones((4, 2), dtype=np.int64))
    return enc, {t.worker: t.compute() for t in enc}


def test_gf_non_integer_results(gf_results):
    """Non-integer results over GF(p): a CodedMLError naming `results` (or erased as corrupt)."""
    enc, res = gf_results
    bad = {w: res[w] + 0.5 for w in range(4)}
    with pytest.raises(CodedMLError):
        GF.decode(bad, encoding=enc)
    one_bad = {w: res[w] for w in range(6)}
    one_bad[2] = res[2] + 0.5
    try:
        C, faulty = GF.decode(one_bad, errors=1, encoding=enc, return_faulty=True)
    except ConfigurationError as exc:
        assert "results" in str(exc)
    else:
        assert faulty == (2,)


def test_gf_integral_float_results(gf_results):
    """Float results that hold exact residues: decoded exactly, or refused with a clear error."""
    enc, res = gf_results
    ref = GF.decode({w: res[w] for w in range(3)}, encoding=enc)
    try:
        C = GF.decode({w: res[w].astype(np.float64) for w in range(4)}, encoding=enc)
    except ConfigurationError as exc:
        assert "results" in str(exc)
    else:
        assert np.array_equal(C, ref)


# --------------------------------------------------------------------------- numerics helpers
def test_worst_case_condition_bad_max_subsets():
    with pytest.raises(ConfigurationError, match=esc("`max_subsets` must be at least 1, got 0")):
        worst_case_condition(REAL, max_subsets=0)


def test_condition_number_bad_worker():
    with pytest.raises(ConfigurationError, match=esc("`workers` must be between 0 and 5, got 6")):
        condition_number(REAL, [0, 6])


# --------------------------------------------------------------------------- catch-all
@pytest.mark.parametrize("call", [
    lambda: MDSCode(6, 7),
    lambda: GradientCode(6, 3, "fractional_repetition"),
    lambda: MDSCode(6, 3, field=100),
    lambda: REAL.encode(np.ones((6, 4)), np.ones((5, 2))),
    lambda: REAL.encode(np.full((6, 4), np.nan), np.ones((4, 2))),
    lambda: REAL.decode({0: np.ones((2, 2))}),
    lambda: REAL.decode([np.ones((2, 2))]),
    lambda: REAL.decode({0: np.ones((2, 2))}, errors=-1),
    lambda: GF.encode(np.full((6, 4), 101), np.ones((4, 2), dtype=np.int64)),
])
def test_every_error_is_a_codedml_error(call):
    with pytest.raises(CodedMLError):
        call()
