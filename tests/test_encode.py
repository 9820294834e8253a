"""The encode kernels against the straightforward reference encode (generator @ stacked blocks).

``code.encode`` writes every task once from views of A and B (``codedml/codes/_encode.py``);
:func:`codedml.codes._reference.reference_encode` pads, stacks and contracts with
``np.tensordot``. They must agree for every code: exactly over GF(p), exactly for the data
blocks a systematic code hands out, and otherwise within the summation-order rounding of a
float64 product (``k`` terms: ``4 k eps`` relative to the largest entry) or one float32
rounding of the same float64 value (a float32 task may differ by one ulp where the float64
values straddle a rounding boundary).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from codedml.codes import GradientCode, MatDotCode, MDSCode, PolyDotCode, PolynomialCode, ReplicationCode
from codedml.codes import _encode
from codedml.codes._encode import combine, real_form
from codedml.codes._reference import reference_encode
from codedml.errors import ConfigurationError

#: 2^16 + 1 and 2^17 - 1 take the float64 kernel (k (p-1)^2 < 2^53); 67108859 (just below
#: 2^26) the stacked matmul_mod path
PRIMES = (65537, 131_071, 67_108_859)


def _check(code, A, B, precision="auto"):
    enc = code.encode(A, B, precision=precision)
    ref = reference_encode(code, A, B, precision)
    assert len(enc) == len(ref) == code.workers
    k = max(getattr(code, "recovery_threshold", 1), 1)
    for t, (a, b) in zip(enc, ref):
        for got, want in ((np.asarray(t.a), a), (np.asarray(t.b), b)):
            assert got.shape == want.shape, (code, got.shape, want.shape)
            assert got.dtype == want.dtype, (code, got.dtype, want.dtype)
            if code.field is not None:
                np.testing.assert_array_equal(got, want)
                continue
            scale = float(np.abs(want).max()) if want.size else 0.0
            if got.dtype in (np.float32, np.complex64):
                tol = 2.0 ** -22 * scale       # one float32 rounding per part, at most
            else:
                size = max(scale, float(np.abs(A).max(initial=0)), float(np.abs(B).max(initial=0)))
                tol = 16 * k * np.finfo(np.float64).eps * size
            assert float(np.abs(got.astype(np.complex128) - want).max(initial=0.0)) <= tol, code
    return enc


def _real_inputs(rng, M, N, K, dtype, vec):
    A = rng.standard_normal((M, N)).astype(dtype)
    B = rng.standard_normal((N,) if vec else (N, K)).astype(dtype)
    return A, B



def _codes(n, draw_kind, k_frac):
    """A code of each family at n workers."""
    k = max(1, min(n, int(round(k_frac * n))))
    m = max(1, (k + 1) // 2)
    return {
        "mds": MDSCode(n, k),
        "mds_sys": MDSCode(n, k, systematic=True),
        "mds_equi": MDSCode(n, min(k, 6), construction="equispaced"),
        "poly": PolynomialCode(n, max(1, k // 2), 2) if n >= 2 else MDSCode(n, 1),
        "matdot": MatDotCode(n, m),
        "matdot_sys": MatDotCode(n, m, systematic=True),
        "matdot_cheb": MatDotCode(n, min(m, 3), construction="chebyshev"),
        "polydot": PolyDotCode(n, 2, 2, 1) if n >= 5 else MDSCode(n, 1),
        "gradient": GradientCode(n, min(n - 1, 2)),
        "gradient_fr": GradientCode(n, 1, "fractional_repetition") if n % 2 == 0 else GradientCode(n, 0),
    }[draw_kind]


# the encode loops this install has: numpy's always; where codedml.codes._kernels was built
# (CI requires it) the compiled copies with BLAS GEMMs ("blas"), and the compiled generator
# products (lincomb, where the CPU has AVX2/FMA: through the cache, and streamed as for large
# tasks; "avx2" where the CPU also has AVX-512, which "compiled" then uses)
_SIMD = getattr(_encode._K, "SIMD", 0) if _encode._K is not None else 0
# "tiny": the small-encode path (:func:`codedml.codes._encode.tiny`, numpy calls on the
# generator's cached real form) at every size; every other loop with that path turned off
LOOPS = (["numpy", "tiny"] + (["blas", "compiled", "streamed"] if _encode._K is not None else [])
         + (["avx2"] if _SIMD >= 2 else []))

def _loop_settings(loop: str) -> dict:
    """The ``_encode`` attributes that select ``loop`` (one of :data:`LOOPS`); large tasks'
    streaming (``STREAM_BYTES``) left as it is except for "streamed"."""
    out = {"LINCOMB": loop != "blas", "LINCOMB_SIMD": 1 if loop == "avx2" else -1,
           "TINY_BYTES": 1 << 62 if loop == "tiny" else 0}
    if loop == "numpy":
        out["_K"] = None
    elif loop == "streamed":
        out["STREAM_BYTES"] = 0
    return out


@contextlib.contextmanager
def _encode_loop(loop: str, chunk: int):
    """Encode with ``loop`` (one of :data:`LOOPS`) in chunks of ``chunk`` bytes, through the
    cache unless streamed, restored after."""
    settings = {"CHUNK_BYTES": chunk, "STREAM_BYTES": 1 << 62, **_loop_settings(loop)}
    old = {name: getattr(_encode, name) for name in settings}
    for name, value in settings.items():
        setattr(_encode, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(_encode, name, value)


def _apply_loop(monkeypatch, loop: str) -> None:
    """:func:`_encode_loop`'s settings for one test, by ``monkeypatch`` (chunks as they are)."""
    for name, value in _loop_settings(loop).items():
        monkeypatch.setattr(_encode, name, value)


KINDS = ("mds", "mds_sys", "mds_equi", "poly", "matdot", "matdot_sys", "matdot_cheb", "polydot",
         "gradient", "gradient_fr")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), n=st.integers(2, 17), k_frac=st.floats(0.3, 1.0),
       M=st.integers(1, 40), N=st.integers(1, 40), K=st.integers(1, 12),
       dtype=st.sampled_from([np.float64, np.float32]), vec=st.booleans(),
       order=st.sampled_from(["C", "F", "strided"]), b_order=st.sampled_from(["C", "F", "strided"]),
       seed=st.integers(0, 2 ** 16))
# found by this test (thirtieth session): an F-ordered B of 8 rows, whose packed pairs'
# imaginary parts np.negative wrote wrong (see test_fill_negates_any_layout)
@example(kind="matdot", n=7, k_frac=1.0, M=1, N=8, K=2, dtype=np.float64, vec=False, order="C",
         b_order="F", seed=0)
def test_real_encode_equals_reference(kind, n, k_frac, M, N, K, dtype, vec, order, b_order, seed):
    code = _codes(n, kind, k_frac)
    if vec and getattr(code, "q", 1) > 1:
        vec = False
    rng = np.random.default_rng(seed)
    A, B = _real_inputs(rng, M, N, K, dtype, vec)
    if order == "F":                       # non-C-ordered inputs: the gather path
        A = np.asfortranarray(A)
    elif order == "strided":
        A = np.ascontiguousarray(np.repeat(A, 2, axis=1))[:, ::2]
    if b_order == "F":                     # B's copies (MDS) and partitions (gradient)
        B = np.asfortranarray(B)
    elif b_order == "strided":             # columns (a vector: elements) every other one
        B = np.repeat(B, 2, axis=-1)[..., ::2]
    _check(code, A, B)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("src_step", [1, 2, 4, 7, 8, 9, 16])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("rows", [1, 3])
def test_fill_negates_any_layout(dtype, src_step, sign, rows):
    """``_fill`` (a packed block's real or imaginary half into the gather buffer) writes
    ``sign * src`` whatever the strides: numpy 2.4.6's ``np.negative`` read a source whose
    elements lie 64 bytes apart as if adjacent when its output was strided too (the
    imaginary parts of a complex buffer), which an F-ordered B of 8 rows handed MatDot's
    packed B side (blocks of one row: numpy's 1-D loop). The source's columns here lie
    ``src_step`` elements apart (8: 64 bytes for 8-byte types), the destination is the
    imaginary part of a complex array."""
    from codedml.codes._encode import _fill
    cols = 6
    base = np.arange(1, rows * cols * src_step + 1).astype(dtype).reshape(rows, cols * src_step)
    src = base[:, ::src_step]
    assert src.strides[1] == src_step * base.itemsize
    out = np.zeros((rows, cols + 2), np.complex128)
    _fill(out.imag, src, 0, rows, cols + 2, sign)
    np.testing.assert_array_equal(out.imag[:, :cols], sign * src.astype(np.float64))
    np.testing.assert_array_equal(out.imag[:, cols:], 0.0)
    np.testing.assert_array_equal(out.real, 0.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(("mds", "mds_sys", "poly", "matdot", "matdot_sys", "polydot", "gradient")),
       n=st.integers(2, 12), k_frac=st.floats(0.3, 1.0), M=st.integers(1, 30),
       N=st.integers(1, 30), K=st.integers(1, 8), p=st.sampled_from(PRIMES), vec=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_gfp_encode_equals_reference_exactly(kind, n, k_frac, M, N, K, p, vec, seed):
    base = _codes(n, kind, k_frac)
    kw = {"field": p}
    if isinstance(base, GradientCode):
        code = GradientCode(n, base.stragglers, base.scheme, **kw)
    elif isinstance(base, PolyDotCode):
        code = PolyDotCode(n, base.p, base.m, base.q, systematic=base.systematic, **kw)
    if vec and getattr(code, "q", 1) > 1:
        vec = False
    rng = np.random.default_rng(seed)
    A = rng.integers(0, p, (M, N))
    B = rng.integers(0, p, (N,) if vec else (N, K))
    _check(code, A, B)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), n=st.integers(2, 17), k_frac=st.floats(0.3, 1.0),
       M=st.integers(1, 40), N=st.integers(1, 40), K=st.integers(1, 12),
       dtype=st.sampled_from([np.float64, np.float32]), vec=st.booleans(),
       precision=st.sampled_from(["auto", "float32", "float64"]),
       field=st.sampled_from([None, 65537]), chunk=st.integers(1, 3000),
       loop=st.sampled_from(LOOPS), seed=st.integers(0, 2 ** 16))
def test_encode_in_small_chunks_equals_reference(kind, n, k_frac, M, N, K, dtype, vec, precision,
                                                 field, chunk, loop, seed):
    """Chunks of a few rows (every chunk boundary, padding segment and the systematic and
    gradient passes' per-chunk norms exercised at small sizes), with each copy loop: the
    compiled one writing through the cache, the compiled one streaming (as it does for large
    tasks), numpy's: the reference tasks, and noise scales equal to the tasks' own norms."""
    code = _codes(n, kind, k_frac)
    if field is not None:
        if isinstance(code, GradientCode):
            code = GradientCode(n, code.stragglers, code.scheme, field=field)
        elif code.construction == "circle":
            code = PolyDotCode(n, code.p, code.m, code.q, systematic=code.systematic, field=field)
        else:
            return                     # GF(p) codes take circle points
        precision = "auto"
    if vec and getattr(code, "q", 1) > 1:
        vec = False
    rng = np.random.default_rng(seed)
    if field is None:
        A, B = _real_inputs(rng, M, N, K, dtype, vec)
    else:
        A, B = rng.integers(0, field, (M, N)), rng.integers(0, field, (N,) if vec else (N, K))
    with _encode_loop(loop, chunk):
        enc = _check(code, A, B, precision)
    if field is None:
        own = np.array([np.linalg.norm(np.asarray(t.a, dtype=np.complex128))
                        * np.linalg.norm(np.asarray(t.b, dtype=np.complex128)) for t in enc])
        np.testing.assert_allclose(enc.scales, own, rtol=1e-6, atol=1e-300)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(("mds", "mds_sys", "poly", "matdot", "matdot_sys", "polydot")),
       n=st.integers(2, 12), k_frac=st.floats(0.3, 1.0), M=st.integers(1, 30), N=st.integers(1, 30),
       K=st.integers(1, 8), vec=st.booleans(), which=st.sampled_from("AB"),
       value=st.sampled_from([-1, "p", 2**40, -2**62]), order=st.sampled_from(["C", "F", "strided"]),
       chunk=st.integers(1, 3000), loop=st.sampled_from(LOOPS), p=st.sampled_from([65537, 67_108_859]),
       data=st.data())
def test_gfp_encode_refuses_an_entry_out_of_the_field_by_name(kind, n, k_frac, M, N, K, vec, which, value,
                                                              order, chunk, loop, p, data):
    """The GF(p) encodes check the operands' range in the copies they make (the compiled
    systematic pass and the copy of B) or, on every other path, before any product: one
    entry out of [0, p) anywhere in A or B, in any layout, chunking and copy loop, is
    refused by the operand's name and the value, and never reaches the reduction of the
    products (whose own check would raise another error)."""
    base = _codes(n, kind, k_frac)
    if isinstance(base, PolyDotCode):
        code = PolyDotCode(n, base.p, base.m, base.q, systematic=base.systematic, field=p)
    else:
        return
    if vec and code.q > 1:
        vec = False
    value = p if value == "p" else value
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    A = rng.integers(0, p, (M, N))
    B = rng.integers(0, p, (N,) if vec else (N, K))
    X = A if which == "A" else B
    X.reshape(-1)[data.draw(st.integers(0, X.size - 1))] = value
    if order == "F":
        A, B = np.asfortranarray(A), np.asfortranarray(B)
    elif order == "strided":
        A = np.repeat(A, 2, axis=1)[:, ::2]
        B = np.repeat(B, 2, axis=-1)[..., ::2]
    with _encode_loop(loop, chunk), pytest.raises(
            ConfigurationError, match=rf"`{which}` entries must be between 0 and {p - 1} for GF\({p}\), got {value}"):
        code.encode(A, B)


@pytest.mark.parametrize("precision", ["float32", "float64", "compensated"])
def test_precision_choices_encode_as_reference(precision):
    rng = np.random.default_rng(3)
    A, B = _real_inputs(rng, 37, 29, 11, np.float64, False)
    for code in (MDSCode(9, 7), MatDotCode(9, 4, systematic=True), PolynomialCode(9, 2, 3),
                 GradientCode(8, 2)):
        _check(code, A, B, precision)


def test_systematic_tasks_are_the_data_blocks_exactly():
    """Systematic workers get A's blocks (copies, not views of the caller's array)."""
    rng = np.random.default_rng(5)
    A, B = _real_inputs(rng, 60, 20, 7, np.float64, False)
    enc = MDSCode(8, 5, systematic=True).encode(A, B)
    for w in range(5):
        np.testing.assert_array_equal(np.asarray(enc[w].a), A[12 * w:12 * (w + 1)])
        assert not np.shares_memory(np.asarray(enc[w].a), A)
    A, B = _real_inputs(rng, 60, 24, 7, np.float64, False)
    enc = MatDotCode(7, 3, systematic=True).encode(A, B)
    # inner pairs packed: task j is A_2j + i A_2j+1 (A's columns split in 6 blocks of 4)
    for j in range(3):
        want = A[:, 8 * j:8 * j + 4] + 1j * A[:, 8 * j + 4:8 * j + 8]
        np.testing.assert_array_equal(np.asarray(enc[j].a), want)


@pytest.mark.parametrize("scale", [1.0, 1e39])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_tiny_encode_norms_are_the_kernels(monkeypatch, scale, precision):
    """The small-encode path takes the tasks' norms from the float64 values before they are
    rounded to the tasks' dtype, as the kernel does: the same scales (relative 1e-12) with the
    path on and off, also where float32 tasks overflow (values past float32's range, which
    then raise no warning), and the same tasks."""
    import warnings

    rng = np.random.default_rng(5)
    A, B = scale * rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
    code = MDSCode(8, 4, systematic=True)
    got = {}
    for tiny in (True, False):
        monkeypatch.setattr(_encode, "TINY_BYTES", 1 << 62 if tiny else 0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got[tiny] = code.encode(A, B, precision=precision)
    (a, b) = got[True], got[False]
    np.testing.assert_allclose(a.scales, b.scales, rtol=1e-12)
    assert np.isfinite(a.scales).all()
    for ta, tb in zip(a, b):
        np.testing.assert_allclose(np.asarray(ta.a, dtype=np.float64),
                                   np.asarray(tb.a, dtype=np.float64), rtol=2.0 ** -22)


@pytest.mark.parametrize("shape", [(5, 3), (7,), (1, 9), (0, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm", [True, False])
def test_copy_rows_of_a_whole_operand_is_the_general_copy(shape, dtype, norm, monkeypatch):
    """``copy_rows`` hands a contiguous source of the destination's shape and dtype straight
    to the compiled loop (without the row views of ``_rows_2d``): the same values and the
    same sum of squares, bit for bit, as the compiled copy through those views, and the
    values and sum of numpy's copy where the module is not built."""
    rng = np.random.default_rng(11)
    src = rng.standard_normal(shape).astype(dtype)
    want = float(np.sum(src.astype(np.float64) ** 2)) if norm else 0.0
    K = _encode._K
    if K is not None and src.size:
        def no_views(*a):
            raise AssertionError("the row views were taken")

        with monkeypatch.context() as m:
            m.setattr(_encode, "_rows_2d", no_views)
            direct = np.full(shape, np.nan, dtype)
            total = _encode.copy_rows(src, direct, norm=norm)
        views = np.full(shape, np.nan, dtype)
        n, s2, d2 = _encode._rows_2d(src, views)             # the general compiled copy
        general = _encode.fast_copy(d2, s2, False, squares=norm)
        np.testing.assert_array_equal(direct, src)
        np.testing.assert_array_equal(views, src)
        assert total == general
        assert total == pytest.approx(want, rel=1e-12, abs=0.0)
    monkeypatch.setattr(_encode, "_K", None)
    dst = np.full(shape, np.nan, dtype)
    total = _encode.copy_rows(src, dst, norm=norm)
    np.testing.assert_array_equal(dst, src)
    # numpy's chunked copy sums float32 squares in float32 (np.dot)
    assert total == pytest.approx(want, rel=1e-12 if dtype == np.float64 else 1e-6, abs=0.0)


def test_fast_task_constructor_is_the_dataclass():
    """``Task._of`` (the encodes' constructor without the frozen dataclass's ``__init__``)
    gives a Task equal field for field to ``Task(...)``, still frozen."""
    import dataclasses

    from codedml.codes import Task

    a, b = np.ones((2, 3)), np.ones((3, 1))
    for field, comp in ((None, False), (None, True), (65537, False)):
        t, u = Task._of(4, a, b, field, comp), Task(4, a, b, field, comp)
        assert type(t) is Task
        for f in dataclasses.fields(Task):
            assert getattr(t, f.name) is getattr(u, f.name)
        assert repr(t) == repr(u)
        with pytest.raises(dataclasses.FrozenInstanceError):
            t.worker = 1


def test_real_matrix_passes_float_matrices_through_and_still_checks():
    """``real_matrix``'s common case (a float64/float32 matrix, or a vector where allowed)
    is the array itself; every other input is converted or refused by name as before."""
    from codedml.codes._validate import real_matrix

    for x in (np.ones((3, 2)), np.ones((3, 2), np.float32)):
        assert real_matrix("A", x) is x
    v = np.ones(4)
    assert real_matrix("B", v, allow_vector=True) is v
    with pytest.raises(ConfigurationError, match="`A` must be a 2-D array, got shape"):
        real_matrix("A", v)
    with pytest.raises(ConfigurationError, match="`A` contains NaN or Inf"):
        real_matrix("A", np.array([[1.0, np.nan]]))
    assert real_matrix("A", np.array([[1.0, np.inf]]), finite=False).shape == (1, 2)
    assert real_matrix("A", np.ones((2, 2), np.int32)).dtype == np.float64
    assert real_matrix("A", np.ones((2, 2), np.float16)).dtype == np.float64
    assert real_matrix("A", np.ones((2, 2), ">f8")).dtype == np.float64
    with pytest.raises(ConfigurationError, match="must be real"):
        real_matrix("A", np.ones((2, 2), complex))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, "gf"])
def test_tasks_never_alias_the_inputs(dtype):
    """A request's tasks are read until their sends complete, possibly after ``submit`` has
    returned: none may be (a view of) the caller's A or B, for any code, dtype or field,
    also where a task keeps an input as it is (the B every ReplicationCode worker gets)."""
    rng = np.random.default_rng(6)
    f = 65537 if dtype == "gf" else None
    if f:
        A, B = rng.integers(0, f, (30, 30)), rng.integers(0, f, (30, 30))
    else:
        A, B = _real_inputs(rng, 30, 30, 30, dtype, False)
    codes = [MDSCode(6, 3, field=f), MDSCode(6, 3, systematic=True, field=f),
             PolynomialCode(9, 2, 2, field=f), ReplicationCode(6, 3, field=f),
             ReplicationCode(6, 6, field=f)]
    if not f:
        codes += [MatDotCode(7, 3), GradientCode(6, 2)]
    for code in codes:
        vector = not isinstance(code, PolynomialCode) or code.q == 1
        for Bv in (B, B[:, :20]) + ((B[:, 0],) if vector else ()):   # whole, a view, a vector
            for t in code.encode(A, Bv):
                assert not np.shares_memory(np.asarray(t.a), A), code
                assert not np.shares_memory(np.asarray(t.b), B), code


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["A", "B"])
def test_non_finite_inputs_still_rejected_by_name(bad, where):
    """The NaN/Inf check now runs on the tasks' norms; the error still names the input."""
    rng = np.random.default_rng(7)
    for code in (MDSCode(6, 4), MDSCode(6, 4, systematic=True), PolynomialCode(9, 2, 2),
                 MatDotCode(7, 3), MDSCode(6, 4, construction="equispaced"), GradientCode(6, 2)):
        A, B = _real_inputs(rng, 12, 10, 8, np.float64, False)
        (A if where == "A" else B)[3, 4] = bad
        with pytest.raises(ConfigurationError, match=f"`{where}` contains NaN or Inf"):
            code.encode(A, B)


def test_huge_finite_inputs_pass_with_finite_scales():
    """Entries whose squares overflow made a norm infinite, which switched the decoder's
    corruption check off; the exact check lets them through and the scales are taken again
    without overflow (||a|| ||b|| of each task, as for ordinary inputs)."""
    A = np.full((8, 6), 1e200)
    B = np.ones((6, 3))
    enc = MDSCode(5, 2).encode(A, B)
    assert np.isfinite(enc.scales).all()
    for t, s in zip(enc, enc.scales):
        a, b = np.asarray(t.a) / 1e200, np.asarray(t.b)
        assert np.isclose(s, 1e200 * np.linalg.norm(a) * np.linalg.norm(b), rtol=1e-12)


def test_combine_writes_float32_tasks_rounded_once_and_pads_with_zeros():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((10, 7))
    blocks = [X[:4], X[4:8], X[8:]]            # the last block is cut short by padding
    G = rng.standard_normal((5, 3))
    out = np.empty((5, 4, 7), dtype=np.float32)
    combine(G, blocks, out)
    D = np.zeros((3, 4, 7))
    D[0], D[1], D[2, :2] = X[:4], X[4:8], X[8:]
    np.testing.assert_array_equal(out, np.tensordot(G, D, 1).astype(np.float32))


def test_real_form_matches_complex_product():
    rng = np.random.default_rng(9)
    G = rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))
    Z = rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))
    stacked = np.stack([Z.real, Z.imag], axis=1).reshape(6, 5)
    got = (real_form(G) @ stacked).reshape(4, 2, 5)
    want = G @ Z
    np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], want, rtol=0, atol=1e-14)


def test_reference_refuses_primes_that_would_overflow():
    with pytest.raises(ConfigurationError, match="field"):
        reference_encode(MDSCode(5, 3, field=2_147_483_647), np.ones((6, 2), dtype=np.int64),
                         np.ones((2, 2), dtype=np.int64))


def _cache_dir(root, sizes):
    for i, entry in enumerate(sizes):
        level, size = entry[:2]
        d = root / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "size").write_text(f"{size}\n")
        if len(entry) > 2:
            (d / "type").write_text(f"{entry[2]}\n")
    return str(root)


@pytest.mark.parametrize("sizes, expected", [
    ([(1, "48K"), (2, "1024K"), (3, "32768K")], 4 << 20),     # 32 MiB L3: capped at 4 MiB
    ([(1, "32K"), (2, "512K"), (3, "16M")], 2 << 20),         # an eighth of 16 MiB
    ([(1, "32K"), (2, "256K"), (3, "6144K")], 1 << 20),       # floor of 1 MiB
    ([(1, "32K"), (2, "bogus"), (3, "")], 1 << 20),           # unreadable sizes: the default
    ([], 1 << 20),                                             # no sysfs: the default
    ([(1, "48K"), (2, "2048K"), (3, "107520K")], 1 << 20),    # a 2 MiB L2: half of it
    ([(1, "48K"), (2, "4M"), (3, "8M")], 2 << 20),            # a 4 MiB L2: half of it
    ([(2, "32M")], 4 << 20),                                   # a huge L2: capped at 4 MiB
    ([(1, "32K", "Data"), (2, "2048K", "Instruction"), (2, "512K", "Data"), (3, "32M", "Unified")],
     4 << 20),                                                 # an instruction L2 does not count
])
def test_chunk_size_follows_the_caches(tmp_path, sizes, expected):
    from codedml.codes import _encode

    assert _encode._chunk_bytes(root=_cache_dir(tmp_path, sizes)) == expected


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("field", [None, 65537])
@pytest.mark.parametrize("kind", ["gradient", "mds", "mds_sys", "mds_plain", "matdot", "polydot",
                                  "polynomial", "replication", "uncoded"])
@pytest.mark.parametrize("shape", [((3, 0), (0, 2)), ((0, 4), (4, 2)), ((3, 0), (0,)),
                                   ((3, 4), (4, 0))])
def test_empty_operands_encode_and_decode_to_zeros(kind, field, loop, shape, monkeypatch):
    """An empty inner dimension (A (3, 0) @ B (0, 2): the zero matrix; every task is empty,
    the partition width 0, not a divisor), no rows of A or no columns of B: every code
    encodes, with each copy loop, and decodes to the zero product of the right shape
    (replication and non-systematic MDS once failed on numpy's -1 beside a 0)."""
    (am, an), bshape = shape
    code = {"gradient": GradientCode(4, 1, field=field), "mds": MDSCode(4, 2, field=field),
            "mds_sys": MDSCode(4, 2, systematic=True, field=field),
            "mds_plain": MDSCode(4, 2, systematic=False, field=field),
            "matdot": MatDotCode(4, 2, field=field), "polydot": PolyDotCode(5, 2, 2, 1, field=field),
            "polynomial": PolynomialCode(5, 2, 2, field=field),
            "replication": ReplicationCode(4, 2, field=field),
            "uncoded": ReplicationCode(3, 3, field=field)}[kind]
    if len(bshape) == 1 and getattr(code, "q", 1) > 1:
        pytest.skip("PolyDot with q > 1 multiplies matrices, not vectors")
    _apply_loop(monkeypatch, loop)
    dt = np.float64 if field is None else np.int64
    enc = code.encode(np.ones((am, an), dtype=dt), np.ones(bshape, dtype=dt))
    k = code.recovery_threshold
    got = code.decode({w: enc[w].compute() for w in range(k)}, encoding=enc)
    want_shape = (am,) + bshape[1:]
    assert np.asarray(got).shape == want_shape and not np.asarray(got).any()


@pytest.mark.parametrize("old_numpy", [False, True])
def test_view_as_is_a_view_or_none(monkeypatch, old_numpy):
    """``_encode.view_as``: the reshape as a view of the same memory, or None where it would
    copy; the same answers on numpy before 2.1 (no ``copy=`` keyword: TypeError), simulated."""
    if old_numpy:
        real = np.reshape

        def reshape(a, shape, **kw):
            if kw:
                raise TypeError("reshape() got an unexpected keyword argument 'copy'")
            return real(a, shape)

        monkeypatch.setattr(_encode.np, "reshape", reshape)
    X = np.arange(24.0).reshape(2, 3, 4)
    v = _encode.view_as(X, (2, -1))
    assert v is not None and v.shape == (2, 12) and np.shares_memory(v, X)
    v[0, 0] = -1.0
    assert X[0, 0, 0] == -1.0
    assert _encode.view_as(X.transpose(0, 2, 1), (2, -1)) is None   # needs a copy
    assert _encode.view_as(X[:, :, :2], (2, -1)) is None            # rows with gaps
    w = _encode.view_as(X[:, :, ::2], (2, -1))                       # one stride: a view
    assert w is not None and np.shares_memory(w, X) and w.strides == (96, 16)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("scheme", ["cyclic", "fractional_repetition"])
@pytest.mark.parametrize("n, s, N", [(6, 2, 37), (6, 1, 36), (8, 3, 5), (4, 1, 1)])
@pytest.mark.parametrize("layout", ["C", "rows reversed", "columns every other"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradient_partition_norms_equal_numpys(loop, scheme, n, s, N, layout, dtype, monkeypatch):
    """The gradient code's per-partition sums of squares of A (from the compiled copies of
    each partition's first holder, or numpy's dots): exactly the partitions' own, for both
    schemes, N not a multiple of n, N < n, and A's rows reversed or columns strided."""
    from codedml.codes import gradient

    if scheme == "fractional_repetition" and n % (s + 1):
        pytest.skip("fractional repetition needs (s + 1) | n")
    _apply_loop(monkeypatch, loop)
    code = GradientCode(n, s, scheme)
    rng = np.random.default_rng(n * 100 + N)
    A = rng.standard_normal((9, 2 * N)).astype(dtype)
    A = {"C": A[:, :N], "rows reversed": np.ascontiguousarray(A[:, :N])[::-1],
         "columns every other": A[:, ::2]}[layout]
    B = rng.standard_normal((N, 3)).astype(dtype)
    nb = -(-N // n)
    parts = [code.partitions(w) for w in range(n)]
    a_all = np.empty((n, A.shape[0], (s + 1) * nb), dtype=dtype)
    b_all = np.empty((n, (s + 1) * nb, 3), dtype=dtype)
    got = gradient._write_tasks(A, B, a_all, b_all, parts, code.coefficients, nb, None)[0]
    want = np.array([float((A[:, j * nb:(j + 1) * nb].astype(np.float64) ** 2).sum()) for j in range(n)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("scheme", ["cyclic", "fractional_repetition"])
@pytest.mark.parametrize("n, s, N", [(16, 2, 1024), (6, 2, 37), (6, 1, 36), (8, 3, 5), (4, 1, 1), (5, 4, 12)])
def test_gradient_layout_sums_every_partition_once_where_runs_tile(scheme, n, s, N):
    """Every partition with columns has an owner run that holds it (its squares come from that
    copy), and owners are chosen among runs no other owner overlaps first: for the cyclic
    code's runs of s + 1 (and fractional repetition's groups) the owning runs' columns add up
    to A's width, each column squared once (the first-come choice summed up to s + 1 times as
    many)."""
    from codedml.codes import gradient

    if scheme == "fractional_repetition" and n % (s + 1):
        pytest.skip("fractional repetition needs (s + 1) | n")
    code = GradientCode(n, s, scheme)
    nb = -(-N // n)
    parts = [code.partitions(w) for w in range(n)]
    lay = gradient._layout(parts, code.coefficients, N, nb, True)
    for j, i in lay.owner.items():
        w, lo, hi, _, _ = lay.plan[i]
        assert lo <= j * nb < hi and j in parts[w]
    assert set(lay.owner) == {j for j in range(n) if j * nb < N}
    owned = sum(lay.plan[i][2] - lay.plan[i][1] for i in set(lay.owner.values()))
    assert owned == N   # every one of these codes' runs tile the partitions
    # every holder of every partition, with its coefficient
    for j in range(n):
        assert sorted((w, t) for w, t, _ in lay.holders[j]) == sorted(
            (w, parts[w].index(j)) for w in range(n) if j in parts[w])
        for w, t, c in lay.holders[j]:
            assert c == float(code.coefficients[w][j])


def test_gradient_code_keeps_a_bounded_layout_per_width():
    """The layout is computed once per width of A and reused (the same object), and the code
    keeps at most ``_LAYOUTS`` widths however many it saw."""
    from codedml.codes import gradient

    code = GradientCode(6, 2)
    a = code._layout_for(37, 7)
    assert code._layout_for(37, 7) is a
    sizes = []
    for N in range(1, 3 * gradient._LAYOUTS):
        code._layout_for(N, -(-N // 6))
        sizes.append(len(code._layouts))
    assert max(sizes) == gradient._LAYOUTS
    last = 3 * gradient._LAYOUTS - 1
    assert code._layout_for(last, -(-last // 6)) is code._layouts[(last, -(-last // 6))]
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((5, 37)), rng.standard_normal((37, 3))
    want = GradientCode(6, 2).encode(A, B)
    got = code.encode(A, B)     # with the kept layouts: the same tasks
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x.a, y.a)
        np.testing.assert_array_equal(x.b, y.b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, s, N, K", [(16, 2, 1024, 64), (6, 2, 37, 3), (4, 1, 9, 1), (5, 2, 11, 0)])
def test_gradient_b_side_one_row_per_chunk_equals_the_row_by_row_path(dtype, n, s, N, K):
    """B's partitions written as one contiguous row per chunk and holder (a C-ordered B in the
    tasks' dtype) give bitwise the tasks that the row-by-row path gives for the same B laid
    out with its rows apart (every other element of a wider array: not C-contiguous, so not
    the one-row path), and partition sums of squares equal to rounding (and to the
    partitions' own). The one-row side runs with the code's kept layout."""
    from codedml.codes import gradient

    code = GradientCode(n, s)
    rng = np.random.default_rng(N + K)
    A = rng.standard_normal((7, N)).astype(dtype)
    Bc = rng.standard_normal((N, K)).astype(dtype)
    wide = np.zeros((N, 2 * K), dtype=dtype)
    wide[:, ::2] = Bc
    Bs = wide[:, ::2]
    assert K == 0 or not Bs.flags.c_contiguous
    nb = -(-N // n)
    parts, layout = code._layout_for(N, nb)
    outs = []
    for B, lay in ((Bc, layout), (Bs, None)):
        a_all = np.full((n, 7, (s + 1) * nb), 9, dtype=dtype)
        b_all = np.full((n, (s + 1) * nb, K), 9, dtype=dtype)
        sq = gradient._write_tasks(A, B, a_all, b_all, parts, code.coefficients, nb, None, lay)
        outs.append((b_all, sq[1]))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=0)
    want = np.array([float((Bc[j * nb:(j + 1) * nb].astype(np.float64) ** 2).sum()) for j in range(n)])
    np.testing.assert_allclose(outs[0][1], want, rtol=1e-12, atol=0)
    for w in range(n):       # each slot holds its partition times its coefficient
        for t, j in enumerate(parts[w]):
            rows = Bc[j * nb:min((j + 1) * nb, N)]
            c = code.coefficients[w][j]
            np.testing.assert_array_equal(outs[0][0][w, t * nb:t * nb + len(rows)],
                                          (rows.astype(np.float64) * c).astype(dtype))
            assert not outs[0][0][w, t * nb + len(rows):(t + 1) * nb].any()


@contextlib.contextmanager
def _small_spy():
    """A list that gets a 1 for every encode that takes ``PolyDotCode._encode_small``."""
    from codedml.codes import polydot

    ran: list[int] = []
    real = polydot.PolyDotCode._encode_small
    polydot.PolyDotCode._encode_small = lambda self, *a: ran.append(1) or real(self, *a)
    try:
        yield ran
    finally:
        polydot.PolyDotCode._encode_small = real


def _laid_out(X: np.ndarray, order: str) -> np.ndarray:
    if order == "F":
        return np.asfortranarray(X)
    if order == "strided":   # every other row and column of a larger array
        big = np.zeros(tuple(2 * s for s in X.shape))
        big[tuple(slice(None, None, 2) for _ in X.shape)] = X
        return big[tuple(slice(None, None, 2) for _ in X.shape)]
    return X


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 12), k_frac=st.floats(0.1, 1.0), systematic=st.booleans(),
       M=st.integers(1, 13), N=st.integers(1, 9), K=st.integers(0, 5),
       order=st.sampled_from(["C", "F", "strided"]), seed=st.integers(0, 2**32 - 1),
       rows_loop=st.booleans())
def test_small_encode_is_the_general_encode(n, k_frac, systematic, M, N, K, order, seed,
                                            rows_loop):
    """A small float64 product of an MDS code on the circle takes ``_encode_small`` (its plan
    is kept): the same tasks bit for bit as the general path (``LinearCode.encode``), the
    same shapes, dtype and flags, the noise scales within 1e-13 (their sums of squares are
    added in another order), and a decode of the first k tasks' products gives ``A @ B``;
    with the rows computed by the plain C loop (``small_rows``) or, past
    ``SMALL_ROWS_MACS`` (here 0), by the SIMD kernels."""
    from codedml.codes._base import LinearCode

    from codedml.codes import polydot

    k = max(1, min(n, round(k_frac * n)))
    code = MDSCode(n, k, systematic=systematic, construction="circle")
    rng = np.random.default_rng(seed)
    A = _laid_out(rng.standard_normal((M, N)), order)
    B = _laid_out(rng.standard_normal((N, K)) if K else rng.standard_normal(N), order)
    with _small_spy() as ran, pytest.MonkeyPatch.context() as mp:
        mp.setattr(_encode, "SMALL_ROWS_MACS", 1 << 62 if rows_loop else 0)
        small = code.encode(A, B)
        general = LinearCode.encode(code, A, B)
    f64 = np.dtype(np.float64)
    assert ran == ([] if code.compensates(f64, f64, "auto") else [1])
    if not ran:
        return
    assert len(small) == len(general) == n
    for s, g in zip(small, general):
        for x, y in ((s.a, g.a), (s.b, g.b)):
            assert x.dtype == y.dtype == f64 and x.shape == y.shape
            assert x.tobytes() == y.tobytes()         # bit for bit, -0.0 included
        assert s.compensated is g.compensated is False and s.field is g.field is None
    assert (small.shape, small.inner, small.dtype) == (general.shape, general.inner, general.dtype)
    np.testing.assert_allclose(small.scales, general.scales, rtol=1e-13, atol=0)
    out = code.decode({w: small[w].compute() for w in range(k)}, encoding=small)
    np.testing.assert_allclose(out, A @ B, rtol=1e-9, atol=1e-9 * np.linalg.norm(A) * np.linalg.norm(B))


@pytest.mark.skipif(_encode._K is None, reason="codedml.codes._kernels is not built")
@pytest.mark.parametrize("per", [1, 2])
@pytest.mark.parametrize("short", [0, 3, 10])
def test_small_rows_copies_sums_in_order_and_takes_norms(per, short):
    """``_kernels.small_rows`` (both small encode paths' arithmetic): the data rows copied
    bit for bit (-0.0 and subnormals kept, also under flush-to-zero), every other entry the
    sum of its rounded products in order from 0 (numpy's elementwise arithmetic in that
    order, bit for bit), the source's missing values read as zeros (a short A: its padding),
    and each group of ``per`` rows' sum of squares added into ``sq`` (not written over)."""
    from test_kernels import _FlushDenormals

    rng = np.random.default_rng(11)
    G = rng.standard_normal((4, 6))
    src = rng.standard_normal((6, 10))
    src[0, 0], src[1, 1] = -0.0, 5e-320
    flat = src.reshape(-1)[:src.size - short]          # values past the end: zeros
    S = np.zeros(60)
    S[:flat.size] = flat
    S = S.reshape(6, 10)
    out = np.full((8, 10), np.nan)
    sq = np.ones(8 // per)
    with _FlushDenormals():
        _encode._K.small_rows(G, flat, out, 4, sq, per)
    assert out[:4].tobytes() == S[:4].tobytes()
    want = np.zeros((4, 10))
    for j in range(6):
        want = want + G[:, j:j + 1] * S[j]
    assert out[4:].tobytes() == want.tobytes()
    rows = (out * out).sum(axis=1)
    np.testing.assert_allclose(sq, 1.0 + rows.reshape(-1, per).sum(axis=1), rtol=1e-14)


@pytest.mark.skipif(_encode._K is None, reason="codedml.codes._kernels is not built")
def test_small_rows_refuses_what_does_not_fit_by_name():
    """Shapes that disagree, a dtype other than float64, outputs that overlap an input:
    ValueError naming what, before anything is written."""
    G, src, out, sq = np.ones((2, 3)), np.ones(12), np.zeros((4, 4)), np.zeros(4)
    with pytest.raises(ValueError, match="shapes do not agree"):
        _encode._K.small_rows(G, src, out, 1, sq)          # G has 2 rows, out 3 to compute
    with pytest.raises(ValueError, match="shapes do not agree"):
        _encode._K.small_rows(G, np.ones(13), out, 2, sq)   # more values than 3 rows of 4
    with pytest.raises(ValueError, match="`src` must be float64"):
        _encode._K.small_rows(G, src.astype(np.float32), out, 2, sq)
    with pytest.raises(ValueError, match="`src` and `out` overlap"):
        _encode._K.small_rows(G, out.reshape(-1)[:12], out, 2, sq)
    with pytest.raises(ValueError, match="`G` and `sq` overlap"):
        _encode._K.small_rows(G, src, out, 2, G.reshape(-1)[:4])
    assert not out.any() and not sq.any()


@pytest.mark.skipif(_encode._K is None, reason="codedml.codes._kernels is not built")
@settings(max_examples=60, deadline=None)
@given(R2=st.integers(1, 6), nsys_half=st.integers(0, 6), K=st.integers(1, 6),
       L=st.integers(1, 12), short=st.integers(0, 8), bshape=st.sampled_from(["vector", "matrix"]),
       bcols=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       bad=st.sampled_from([None, np.nan, np.inf, 1e200]))
def test_small_encode_is_small_rows_copy_sq_and_the_scales_bit_for_bit(
        R2, nsys_half, K, L, short, bshape, bcols, seed, bad):
    """``_kernels.small_encode`` (the small encode in one call): the task rows of
    ``small_rows``, B's copy of ``copy_sq``, and each task's scale ``sqrt(its sum of
    squares) * sqrt(B's)`` as Python floats, all bit for bit what the three steps give apart
    (NaN, Inf and squares past float64's range too)."""
    rng = np.random.default_rng(seed)
    R = 2 * R2
    nsys = min(2 * nsys_half, R, K)
    G = rng.standard_normal((R - nsys, K))
    flat = rng.standard_normal(K * L)[:max(0, K * L - short)]
    b = rng.standard_normal(bcols * 3) if bshape == "vector" else rng.standard_normal((3, bcols))
    if bad is not None:
        b.reshape(-1)[rng.integers(b.size)] = bad
    out1, out2 = np.full((R, L), 7.0), np.full((R, L), 7.0)
    bo1, bo2 = np.full_like(b, 7.0), np.full_like(b, 7.0)
    got = _encode._K.small_encode(G, flat, out1, nsys, 2, b, bo1)
    sq = np.zeros(R // 2)
    _encode._K.small_rows(G, flat, out2, nsys, sq, 2)
    sb = _encode._K.copy_sq(bo2, b)
    want = [math.sqrt(x) * math.sqrt(sb) for x in sq.tolist()]
    assert out1.tobytes() == out2.tobytes() and bo1.tobytes() == bo2.tobytes()
    assert type(got) is list and all(type(v) is float for v in got)
    assert np.array(got).tobytes() == np.array(want).tobytes(), (got, want)


@pytest.mark.skipif(_encode._K is None, reason="codedml.codes._kernels is not built")
def test_small_encode_refuses_what_does_not_fit_by_name():
    """small_rows' refusals, and B's: a dtype other than float64, shapes that disagree, an
    output that overlaps what the call reads or writes; each named, before anything is
    written."""
    G, src, out = np.ones((2, 3)), np.ones(12), np.zeros((4, 4))
    b, bo = np.ones((2, 3)), np.zeros((2, 3))
    cases = [
        ((G, src, out, 1, 2, b, bo), "shapes do not agree"),
        ((G, src, out, 2, 3, b, bo), "shapes do not agree"),      # 4 rows in groups of 3
        ((G, src, out, 2, 0, b, bo), "shapes do not agree"),
        ((G, src.astype(np.float32), out, 2, 2, b, bo), "`src` must be a C-contiguous float64"),
        ((G, src, out, 2, 2, b, np.zeros((3, 2))), "`b` and `bout` of one shape"),
        ((G, src, out, 2, 2, b, np.zeros((2, 6))[:, ::2]), "`bout` must be a C-contiguous"),
        ((G, out.reshape(-1)[:12], out, 2, 2, b, bo), "`src` and `out` overlap"),
        ((G, src, out, 2, 2, b, b), "`b` and `bout` overlap"),
        ((G, src, out, 2, 2, b, out.reshape(-1)[:6].reshape(2, 3)), "`out` and `bout` overlap"),
        ((G, src, out, 2, 2, [1.0], bo), "`b` must be an array, got list"),
    ]
    for args, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            _encode._K.small_encode(*args)
    assert not out.any() and not bo.any()


@pytest.mark.parametrize("where", ["A", "B"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_small_encode_refuses_nan_and_inf_by_name(where, value):
    """NaN/Inf inputs to the small path are refused as the general path refuses them: a
    ConfigurationError naming the argument, and no RuntimeWarning first."""
    import warnings

    rng = np.random.default_rng(1)
    ops = {"A": rng.standard_normal((4, 4)), "B": rng.standard_normal((4, 2))}
    ops[where][1, 1] = value
    code = MDSCode(6, 4, systematic=True, construction="circle")
    with _small_spy() as ran, warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigurationError, match=f"`{where}`"):
            code.encode(ops["A"], ops["B"])
    assert ran == [1]   # it went there


@pytest.mark.parametrize("scale", [1e200, 1e-200, 0.0])
def test_small_encode_scales_of_extreme_inputs_are_the_general_paths(scale):
    """Entries whose squares overflow or underflow (and zero inputs) give the small path's
    scales the general path's remedy: the same scales (relative 1e-12), finite."""
    from codedml.codes._base import LinearCode

    rng = np.random.default_rng(2)
    A, B = scale * rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    code = MDSCode(7, 4, systematic=True, construction="circle")
    with _small_spy() as ran:
        small = code.encode(A, B)
    general = LinearCode.encode(code, A, B)
    assert ran == [1]
    np.testing.assert_allclose(small.scales, general.scales, rtol=1e-12)
    assert np.isfinite(small.scales).all()


def test_small_encode_follows_tiny_bytes(monkeypatch):
    """The small path is taken only up to ``TINY_BYTES`` (read on every encode: a plan kept
    from before does not outlive a lower limit), and never for float32 inputs or other
    precisions."""
    from codedml.codes import polydot

    code = MDSCode(6, 4, systematic=True, construction="circle")
    A, B = np.ones((4, 4)), np.ones((4, 4))
    calls = []
    real = polydot.PolyDotCode._encode_small
    monkeypatch.setattr(polydot.PolyDotCode, "_encode_small",
                        lambda self, *a: calls.append(1) or real(self, *a))
    code.encode(A, B)
    assert calls == [1]
    monkeypatch.setattr(_encode, "TINY_BYTES", 0)
    code.encode(A, B)
    assert calls == [1]
    monkeypatch.setattr(_encode, "TINY_BYTES", 32 * 1024)
    code.encode(A.astype(np.float32), B.astype(np.float32))
    code.encode(A, B, precision="float32")
    code.encode(A, B, precision="compensated")
    assert calls == [1]
    code.encode(A, B, precision="float64")
    assert calls == [1, 1]


def test_small_encode_asks_the_compensation_thresholds_and_subclass_hooks(monkeypatch):
    """The small path's kept plan does not outlive a change of the compensation thresholds
    (the encode then compensates, as the general path and a fresh code do), and a subclass
    with its own encode hook gets its hook, not the small path."""
    from codedml.codes import _base
    from codedml.codes._base import LinearCode

    code = MDSCode(6, 4, systematic=True, construction="circle")
    A, B = np.ones((4, 4)), np.ones((4, 4))
    assert not code.encode(A, B).compensated
    monkeypatch.setattr(_base, "COMPENSATE_MIN_CONDITION", 1.0)
    got = code.encode(A, B)
    assert got.compensated == LinearCode.encode(code, A, B).compensated
    assert got.compensated == MDSCode(6, 4, systematic=True, construction="circle").encode(A, B).compensated
    assert got.compensated   # cond >= 1 lies above the lowered threshold
    monkeypatch.undo()

    class Mine(MDSCode):
        def _encode_outer(self, A, B, dtype):
            self.seen = True
            return super()._encode_outer(A, B, dtype)

    class F32(MDSCode):        # a hook the small path does not ask: the operand dtype
        def _operand_dtype(self, input_dtype, precision):
            return np.dtype(np.float32)

    mine = Mine(6, 4, systematic=True, construction="circle")
    with _small_spy() as ran:
        mine.encode(A, B)
        assert F32(6, 4, systematic=True, construction="circle").encode(A, B).dtype == np.float32
        inst = MDSCode(6, 4, systematic=True, construction="circle")
        inst.encode(A, B)                        # (a plan kept for these shapes)
        inst._operand_dtype = lambda input_dtype, precision: np.dtype(np.float32)
        assert inst.encode(A, B).dtype == np.float32
    assert getattr(mine, "seen", False)
    assert ran == [1]                            # only the plain instance's first encode


def test_real_sources_takes_what_lincomb_takes_and_declines_the_rest():
    """The compiled path's check of real blocks (one pass of cheap checks,
    ``_encode._real_sources``): float64 and float32 blocks of contiguous rows at any row
    stride are taken, empty ones too (the kernel reads them as zeros); a block of another
    dtype or byte order, not 2-D, or with strided columns makes it decline, so that the
    encode takes a path that handles it."""
    A = np.arange(60.0).reshape(6, 10)
    assert _encode._real_sources([A[0:2], A[2:4, :7], A[4:4], A[::2, :5].astype(np.float32), A[:, 0:0]])
    for bad in (A.astype(">f8"), A[:, ::2], A[0], A.astype(np.int64), A.astype(np.complex128),
                np.asfortranarray(A)):
        assert not _encode._real_sources([A[0:2], bad])
    assert _encode._real_sources([A[:, 3:4]])   # one column: any column stride is contiguous rows


def _zeros_signed(A: np.ndarray, seed: int) -> np.ndarray:
    """``A`` with about a fifth of its entries -0.0, its last column among them (a value
    whose bits a copy keeps and ``1.0 * x + 0`` does not)."""
    A = A.copy()
    A[np.random.default_rng(seed).random(A.shape) < 0.2] = -0.0
    A[:, -1] = -0.0
    return A


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint64 if x.dtype == np.float64 else np.uint32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["C", "F", "rows strided", "equispaced"])
@pytest.mark.parametrize("M", [17, 30, 68, 300])
@pytest.mark.parametrize("loop", LOOPS)
def test_systematic_tasks_are_the_blocks_bit_for_bit(loop, M, layout, dtype, monkeypatch):
    """A systematic code's data tasks are A's blocks bit for bit, -0.0 included, on every
    encode loop and layout. With 17 rows MDS(6, 4)'s last two half-blocks (3 rows each) lie
    wholly in the padding (17 <= 18); with 68 and 300 the last is cut short (as a run of
    values, it ends inside a tile). A C-ordered A takes the runs (``combine_runs``), one with
    strided rows or the equispaced construction's blocks the compiled path on the blocks
    (``_compiled``), an F-ordered one numpy's copies. Before, a pass computed such identity
    rows as 1.0 times each value added to +0, and -0.0 came out +0.0."""
    _apply_loop(monkeypatch, loop)
    A = _zeros_signed(np.random.default_rng(M).standard_normal((M, 33)).astype(dtype), M)
    if layout == "F":
        A = np.asfortranarray(A)
    elif layout == "rows strided":
        big = np.zeros((M, 40), dtype)
        big[:, :33] = A
        A = big[:, :33]
    B = np.random.default_rng(1).standard_normal((33, 5)).astype(dtype)
    construction = "equispaced" if layout == "equispaced" else "circle"
    code = MDSCode(6, 4, systematic=True, construction=construction)
    enc = code.encode(A, B)
    S = np.concatenate([np.asarray(enc[w].a).reshape(-1, 33) for w in range(4)])
    assert S.dtype == dtype
    np.testing.assert_array_equal(_bits(S[:M]), _bits(np.ascontiguousarray(A)))
    assert not S[M:].any() and not np.signbit(S[M:]).any()   # the padding: +0.0


@pytest.mark.skipif(not _encode._lincomb_ok(), reason="the compiled lincomb is not built or the CPU lacks AVX2/FMA")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 18), k_frac=st.floats(0.2, 1.0), M=st.integers(1, 90), N=st.integers(1, 70),
       dtype=st.sampled_from([np.float64, np.float32]), systematic=st.booleans(),
       stream=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_combine_runs_writes_combines_tasks_bit_for_bit(n, k_frac, M, N, dtype, systematic, stream,
                                                        seed):
    """``_encode.combine_runs`` (a C-ordered A's half-blocks as runs of ``h * N`` values, the
    tasks as rows) against :func:`combine` on the same half-blocks as ``(h, N)`` matrices:
    the same tasks bit for bit and the same sums of squares to rounding, for every split
    (half-blocks cut short by padding, or absent where A has few rows), float64 and float32,
    systematic or not, streamed or not."""
    k = max(1, min(n - 1, round(k_frac * n))) if n > 1 else 1
    code = MDSCode(n, k, systematic=systematic)
    A = _zeros_signed(np.random.default_rng(seed).standard_normal((M, N)).astype(dtype), seed)
    p = code.p
    h = -(-M // (2 * p))
    G = code._outer_form()
    nsys = 2 * p if systematic else 0
    ref = np.full((2 * n, h, N), np.nan, dtype)
    sq_ref = np.zeros(2 * n)
    halves = [A[r * h:min((r + 1) * h, M)] for r in range(2 * p)]
    old = _encode.STREAM_BYTES
    _encode.STREAM_BYTES = 0 if stream else 1 << 62
    try:
        _encode.combine(G, halves, ref, nsys=nsys, sq=sq_ref)
        out = np.full((2 * n, h * N), np.nan, dtype)
        sq = np.zeros(2 * n)
        assert _encode.combine_runs(code._outer_full(G), A, h, out, sq)
    finally:
        _encode.STREAM_BYTES = old
    np.testing.assert_array_equal(_bits(out.reshape(ref.shape)), _bits(ref))   # -0.0 too
    if systematic:   # the data tasks: A's values as they are (the padding +0.0)
        S = out[:nsys].reshape(-1)
        np.testing.assert_array_equal(_bits(S[:M * N]), _bits(A.reshape(-1)))
        assert not S[M * N:].any() and not np.signbit(S[M * N:]).any()
    np.testing.assert_allclose(sq, sq_ref, rtol=1e-12, atol=0)


def test_combine_runs_declines_what_it_does_not_take():
    """Where the runs form does not apply, ``combine_runs`` writes nothing and says so: an A
    not C-ordered, of another dtype or byte order; a generator not float64 or not C-ordered;
    sums of squares not float64, strided, or not one per task; tasks of the wrong shape; or
    more rows than the blocks hold (the caller then encodes by :func:`combine`). Where
    ``lincomb`` is not available every call declines."""
    code = MDSCode(6, 4, systematic=True)
    G = code._outer_full(code._outer_form())
    A = np.arange(40 * 12, dtype=np.float64).reshape(40, 12)
    h = 5                                    # 8 half-blocks of 5 rows
    def fresh():
        return np.full((12, h * 12), -1.0), np.zeros(12)
    def declines(*args):
        ok = _encode.combine_runs(*args)
        return not ok and (args[3] == -1.0).all() and (args[4] == 0).all()
    out, sq = fresh()
    if _encode._lincomb_ok():
        assert _encode.combine_runs(G, A, h, out, sq)
    for bad_A in (np.asfortranarray(A), A.astype(">f8"), A.astype(np.int64), A[:, ::2], A[::2]):
        assert declines(G, bad_A, h, *fresh())
    assert declines(G.astype(np.float32), A, h, *fresh())
    assert declines(np.asfortranarray(G), A, h, *fresh())
    out, sq = fresh()
    assert declines(G, A, h, out, sq.astype(np.float32))
    assert declines(G, A, h, out, np.zeros(24)[::2])
    assert declines(G, A, h, out, sq[:-1])
    assert declines(G, A, h, out[:, :-1], sq)                   # tasks not C-ordered
    assert declines(G, A, h, np.full((12, h * 12 - 1), -1.0), sq)   # C-ordered, too narrow
    assert declines(G, A, h, np.full((11, h * 12), -1.0), np.zeros(11))   # a task short
    assert declines(G, A, 0, np.full((12, 0), -1.0), sq)        # no rows per block
    # 41 rows: more than 8 blocks of 5 hold, the tasks' width right for h
    assert declines(G, np.vstack([A, A[:1]]), h, *fresh())


@pytest.mark.skipif(not _encode._lincomb_ok(), reason="the compiled lincomb is not built or the CPU lacks AVX2/FMA")
def test_an_outer_form_set_after_an_encode_is_honoured_in_every_layout():
    """An ``_outer_form`` set on the instance after an encode (a hook, see
    ``polydot._HOOKS``) gives the generator for the next encode whatever A's layout: the
    runs form (C-ordered A) builds its rows from the hook's matrix, not from the
    generator it kept for the library's own form."""
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((400, 300))
    B = rng.standard_normal((300, 20))
    first = code.encode(A, B)
    G0 = code._outer_form()
    assert "_G_outer_full" in code.__dict__      # kept by the first encode (the runs form)
    code._outer_form = lambda: 2.0 * G0
    C_order = code.encode(A, B)
    F_order = code.encode(np.asfortranarray(A), B)
    for w in range(6):   # lincomb against BLAS: equal to rounding
        np.testing.assert_allclose(C_order[w].a, F_order[w].a, rtol=1e-14, atol=1e-14)
    for w in (4, 5):   # parity tasks: twice the first encode's
        np.testing.assert_allclose(C_order[w].a, 2.0 * first[w].a, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("form", ["F-ordered", "float32"])
@pytest.mark.parametrize("rows_loop", [True, False])
def test_a_small_encode_takes_an_overriding_outer_form_of_any_layout(form, rows_loop):
    """A small encode (the general path's ``tiny``: an instance hook turns ``_encode_small``
    off) with an ``_outer_form`` that gives the generator F-ordered or in float32: the tasks
    as with the library's own form (the compiled rows take a C-ordered float64 copy of it;
    numpy's GEMM took any layout), in the plain C loop and past ``SMALL_ROWS_MACS``."""
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    want = code.encode(A, B)
    G0 = code._outer_form()
    G1 = np.asfortranarray(G0) if form == "F-ordered" else G0.astype(np.float32)
    code._outer_form = lambda: G1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_encode, "SMALL_ROWS_MACS", 1 << 62 if rows_loop else 0)
        got = code.encode(A, B)
    tol = 1e-14 if form == "F-ordered" else 1e-6
    for w in range(6):
        np.testing.assert_allclose(got[w].a, want[w].a, rtol=tol, atol=tol)


@pytest.mark.skipif(not _encode._lincomb_ok(), reason="the compiled lincomb (AVX2/FMA) is not there")
def test_a_small_encode_past_the_plain_loop_warns_of_nothing_for_huge_inputs():
    """Entries near 1e153 whose squares overflow, in the SIMD branch of ``small_into``
    (``SMALL_ROWS_MACS`` 0) where each task's sum of squares adds two rows': no warning
    (the scales are then taken again without overflow, as on the general path) and the same
    scales as the plain C loop's."""
    import warnings

    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(2)
    # each half-block row (5 values) sums its squares to about 1e308, finite; a task's two
    # rows together overflow
    A, B = 4.4e153 * (1 + 1e-3 * rng.standard_normal((8, 5))), rng.standard_normal((5, 3))
    got = {}
    for macs in (0, 1 << 62):
        with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
            warnings.simplefilter("error")
            mp.setattr(_encode, "SMALL_ROWS_MACS", macs)
            got[macs] = code.encode(A, B)
    np.testing.assert_allclose(got[0].scales, got[1 << 62].scales, rtol=1e-12)
    assert np.isfinite(got[0].scales).all()


_SCALE_VALUES = st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e-281, 1e-279, 1.0, 3.5, 1e154,
                                 1e308, math.inf, math.nan, -1.0])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(_SCALE_VALUES, st.floats(allow_nan=True, allow_infinity=True)),
                max_size=9))
def test_redo_names_exactly_the_scales_its_definition_names(values):
    """``_redo``'s shortcut for lists (every value normal or 0, not all 0: nothing to take
    again) answers as its definition does, element by element: not finite, below the tiny
    scale but positive, negative, or 0 where every value is 0."""
    from codedml.codes import _base

    every_zero = not any(v > 0.0 for v in values)
    want = [i for i, v in enumerate(values)
            if not (_base._TINY_SCALE <= v < math.inf or (v == 0.0 and not every_zero))]
    assert _base._redo(list(values)) == want
    assert _base._redo(tuple(values)) == want   # (not a list: the definition itself)


@pytest.mark.parametrize("hook", ["_exp_a", "_n_systematic"])
def test_gf_encode_follows_an_instance_hook_set_after_an_encode(hook):
    """Over GF(p) A's generator is kept per code after the first encode (``_gf_full``); a
    hook set on the instance afterwards (here the exponents of A's blocks, or whether the
    code is systematic) is followed as it was before the generator was kept: the tasks are
    those of a fresh instance given the same hook (found by review: the kept generator
    ignored ``_exp_a``)."""
    rng = np.random.default_rng(3)
    A, B = rng.integers(0, 65537, (9, 5)), rng.integers(0, 65537, (5, 4))
    make = lambda: MDSCode(6, 4, field=65537, systematic=hook == "_n_systematic")  # noqa: E731
    code = make()
    before = code.encode(A, B)
    value = ((lambda: np.arange(code.p)[::-1].reshape(code.p, 1)) if hook == "_exp_a"
             else (lambda: 0))
    setattr(code, hook, value)
    fresh = make()
    setattr(fresh, hook, value)
    got, want = code.encode(A, B), fresh.encode(A, B)
    for t, u in zip(got, want):
        np.testing.assert_array_equal(np.asarray(t.a), np.asarray(u.a))
    assert any(not np.array_equal(np.asarray(t.a), np.asarray(u.a)) for t, u in zip(got, before))


def test_gradient_code_keeps_a_bounded_number_of_b_layouts():
    """The compiled B side's runs are kept per width of B on the code's layout, at most
    ``gradient._LAYOUTS`` of them: a job whose B width changes every step (batch sizes)
    does not grow the code's memory (found by review)."""
    from codedml.codes import gradient

    code = GradientCode(4, 1)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 8))
    for width in range(1, 3 * gradient._LAYOUTS):
        B = rng.standard_normal((8, width))
        enc = code.encode(A, B)
        np.testing.assert_allclose(code.decode({w: enc[w].compute() for w in range(4)},
                                               encoding=enc), A @ B, atol=1e-12)
        for _, layout in code.__dict__.get("_layouts", {}).values():
            assert sum(1 for k in layout.cache if k[0] == "b") <= gradient._LAYOUTS


def test_gradient_code_encodes_from_several_threads_while_b_widths_change():
    """One code encoding from four threads at once, B's width changing every call, the
    thread switches forced often: the kept B-side runs are added and dropped in single
    steps, so no encode fails (found by review: counting them by a walk over the shared
    dict raised "dictionary changed size during iteration" when another thread changed it)
    and every task is right."""
    import sys
    import threading

    code = GradientCode(4, 1)
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 8))
    Bs = [rng.standard_normal((8, w)) for w in range(1, 40)]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(400):
                B = Bs[(seed * 7 + i) % len(Bs)]
                enc = code.encode(A, B)
                if i % 50 == 0:
                    got = code.decode({w: enc[w].compute() for w in range(4)}, encoding=enc)
                    np.testing.assert_allclose(got, A @ B, atol=1e-12)
        except BaseException as exc:   # noqa: BLE001 (reported below, whatever it is)
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:1]


@contextlib.contextmanager
def _runs_spy():
    """A list that gets a 1 for every encode that ``PolyDotCode._encode_runs`` completes."""
    from codedml.codes import polydot

    ran: list[int] = []
    real = polydot.PolyDotCode._encode_runs

    def spy(self, *a):
        out = real(self, *a)
        if out is not None:
            ran.append(1)
        return out

    polydot.PolyDotCode._encode_runs = spy
    try:
        yield ran
    finally:
        polydot.PolyDotCode._encode_runs = real


@pytest.mark.skipif(not _encode._lincomb_ok(), reason="the compiled lincomb is not built or the CPU lacks AVX2/FMA")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 18), k_frac=st.floats(0.1, 1.0), systematic=st.booleans(),
       M=st.integers(1, 300), N=st.integers(1, 90), K=st.integers(0, 40),
       kind=st.sampled_from(["float64", "float32", "gf"]), seed=st.integers(0, 2**32 - 1))
# float64 codes that compensate (9 spare workers), tiny and not: the general path's encode
@example(n=18, k_frac=0.5, systematic=False, M=1, N=1, K=0, kind="float64", seed=0)
@example(n=18, k_frac=0.5, systematic=False, M=300, N=90, K=40, kind="float64", seed=0)
def test_runs_encode_is_the_general_encode(n, k_frac, systematic, M, N, K, kind, seed):
    """An MDS-type code's encode of C-ordered inputs too large for ``_encode_small`` takes
    ``_encode_runs`` (its plan kept per shape and dtype): the same tasks bit for bit as the
    general path (``LinearCode.encode``), Task objects of the same types built on first use
    (GF(p): residues of the code's field, one view of the shared B), the same shapes, dtype,
    flags and noise scales (bit for bit: the same sums of squares), and a decode of the
    first k tasks' products gives ``A @ B``."""
    from codedml.codes._base import LinearCode
    from codedml.codes._field import Residues

    k = max(1, min(n - 1, round(k_frac * n)))
    rng = np.random.default_rng(seed)
    if kind == "gf":
        code = MDSCode(n, k, field=65537, systematic=systematic)
        A = rng.integers(0, 65537, (M, N))
        B = rng.integers(0, 65537, (N, K) if K else N)
    else:
        code = MDSCode(n, k, systematic=systematic)
        A = rng.standard_normal((M, N)).astype(kind)
        B = rng.standard_normal((N, K) if K else N).astype(kind)
    with _runs_spy() as ran:
        fast = code.encode(A, B)
        general = LinearCode.encode(code, A, B)
    itemsize = 8 if kind == "gf" else np.dtype(kind).itemsize
    h = -(-M // (code.p if kind == "gf" else 2 * code.p))
    small = (kind != "gf" and (2 * n * h * N * itemsize <= _encode.TINY_BYTES
                               or np.dtype(kind) != fast.dtype
                               or code.compensates(np.dtype(kind), np.dtype(kind), "auto")))
    assert ran == ([] if small else [1])
    # the tasks as one stack where the runs path or _encode_small made them: the latter for
    # tiny float64 products of codes that do not compensate (a compensating code's encode,
    # float64 included, is the general path's: no stack)
    small64 = (kind == "float64" and 2 * n * h * N * 8 <= _encode.TINY_BYTES
               and not code.compensates(np.dtype(kind), np.dtype(kind), "auto"))
    assert (fast._stack is None) == (not ran and not small64)
    assert len(fast) == len(general) == n
    for f, g in zip(fast, general):
        assert type(f.a) is type(g.a) and type(f.b) is type(g.b)
        for x, y in ((f.a, g.a), (f.b, g.b)):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()           # bit for bit, -0.0 included
        assert (f.worker, f.field, f.compensated) == (g.worker, g.field, g.compensated)
        if kind == "gf":
            assert isinstance(f.a, Residues) and f.a.modulus == f.b.modulus == 65537
    assert (fast.shape, fast.inner, fast.dtype, fast.compensated) == (
        general.shape, general.inner, general.dtype, general.compensated)
    if kind == "gf":
        assert fast.scales is None and general.scales is None
        assert fast[0].b is fast[n - 1].b               # one view of the shared B
        want = (A @ B) % 65537
        got = code.decode({w: fast[w].compute() for w in range(k)}, encoding=fast)
        np.testing.assert_array_equal(got, want)
        return
    if not small:
        assert fast.scales.tobytes() == general.scales.tobytes()
    got = code.decode({w: fast[w].compute() for w in range(k)}, encoding=fast)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    tol = 1e-4 if kind == "float32" else 1e-9
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


@pytest.mark.skipif(not _encode._lincomb_ok(), reason="the compiled lincomb is not built or the CPU lacks AVX2/FMA")
def test_runs_encode_refuses_what_the_general_encode_refuses_by_name():
    """The runs path checks what the general path checks, naming the operand: GF(p) entries
    out of the field in A or in B, a NaN in a real A; and a GF(p) hook set on the instance
    after a plan was kept sends the encode the general way (its generator the hook's)."""
    rng = np.random.default_rng(3)
    code = MDSCode(17, 15, field=65537)
    A = rng.integers(0, 65537, (256, 128))
    B = rng.integers(0, 65537, (128, 64))
    with _runs_spy() as ran:
        code.encode(A, B)
        bad = A.copy()
        bad[100, 7] = 65537
        with pytest.raises(ConfigurationError, match=r"`A` entries must be between 0 and 65536 for GF\(65537\), got 65537"):
            code.encode(bad, B)
        bad = B.copy()
        bad[3, 3] = -1
        with pytest.raises(ConfigurationError, match=r"`B` entries must be between 0 and 65536 for GF\(65537\), got -1"):
            code.encode(A, bad)
    assert ran == [1]
    real = MDSCode(17, 15)
    X = rng.standard_normal((256, 128))
    X[5, 5] = np.nan
    with pytest.raises(ConfigurationError, match=r"`A` contains NaN or Inf"):
        real.encode(X, rng.standard_normal((128, 64)))


@pytest.mark.skipif(not _encode._lincomb_ok(), reason="the compiled lincomb is not built or the CPU lacks AVX2/FMA")
def test_runs_encode_yields_to_instance_hooks_and_a_changed_tiny_limit(monkeypatch):
    """What the general path honours, the runs path does too: an instance's own
    ``_encode_exact`` (asked), ``_outer_full`` or ``_gf_full`` set after a plan was kept (their
    tasks, not the kept generator's), and ``TINY_BYTES`` raised after a plan was kept (tasks
    within it take ``tiny``: the general path's scales bit for bit)."""
    from codedml.codes._base import LinearCode

    rng = np.random.default_rng(5)
    code = MDSCode(10, 7, field=65537)
    A, B = rng.integers(0, 65537, (200, 64)), rng.integers(0, 65537, (64, 8))
    code.encode(A, B)
    calls = []
    real_exact = code._encode_exact
    code._encode_exact = lambda *a: calls.append(1) or real_exact(*a)
    code.encode(A, B)
    assert calls == [1]
    del code._encode_exact
    real_gf = code._gf_full
    code._gf_full = lambda side: (real_gf(side) * 2) % 65537
    got = code.encode(A, B)
    want = LinearCode.encode(code, A, B)
    assert all(x.a.tobytes() == y.a.tobytes() for x, y in zip(got, want))
    assert any(x.a.tobytes() != y.a.tobytes()
               for x, y in zip(got, LinearCode.encode(MDSCode(10, 7, field=65537), A, B)))
    real = MDSCode(10, 7)
    X, Y = rng.standard_normal((300, 64)), rng.standard_normal((64, 8))
    real.encode(X, Y)
    full = real._outer_full
    real._outer_full = lambda G: 2.0 * full(G)
    assert all(x.a.tobytes() == y.a.tobytes()
               for x, y in zip(real.encode(X, Y), LinearCode.encode(real, X, Y)))
    small = MDSCode(6, 4, systematic=True)
    A32 = rng.standard_normal((40, 30)).astype(np.float32)
    B32 = rng.standard_normal((30, 5)).astype(np.float32)
    monkeypatch.setattr(_encode, "TINY_BYTES", 0)
    small.encode(A32, B32)                          # the plan kept while every encode is large
    monkeypatch.setattr(_encode, "TINY_BYTES", 1 << 62)
    got, want = small.encode(A32, B32), LinearCode.encode(small, A32, B32)
    assert got._stack is None                        # tiny() encoded it, as the general path
    assert got.scales.tobytes() == want.scales.tobytes()
