"""The encode's compiled loop, ``codedml.codes._kernels.copy_sq`` (codedml/codes/_kernels.c).

It writes ``scale * src`` into ``dst`` and returns the sum of squares of ``src``: the values
must be exactly numpy's (the float64 product cast to the destination's dtype),
streamed or not, for any row stride and any alignment; the sum within the rounding of a
float64 sum of that many squares; NaN/Inf must reach the sum (the encode's finiteness check
relies on it); bad arguments must be refused by name. Where the module was not built (no C
compiler at install) these tests skip, except that ``REQUIRE_CODEDML_KERNELS=1`` (set by
``.ci/run``, so CI runs them) turns a missing module into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import _encode

K = _encode._K


def test_kernels_built_where_required():
    if os.environ.get("REQUIRE_CODEDML_KERNELS") == "1":
        assert K is not None, "codedml.codes._kernels was not built: see setup.py and launch/setup.sh"
        assert _encode.kernels() == "compiled"
    else:   # what kernels() reports is whether the built module is there to import
        built = importlib.util.find_spec("codedml.codes._kernels") is not None
        assert _encode.kernels() == ("compiled" if built else "numpy")


needs_kernels = pytest.mark.skipif(K is None, reason="codedml.codes._kernels not built (no C compiler at install)")


def _unchanged_outside(big: np.ndarray, before: np.ndarray, off: int, cols: int, one_d: bool) -> None:
    """Nothing of ``big`` outside the window the call wrote (columns ``off:off + cols`` of
    every row, or of row 0 for a 1-D view) differs from ``before``."""
    mask = np.ones(big.shape, bool)
    mask[:1 if one_d else None, off:off + cols] = False
    np.testing.assert_array_equal(big[mask], before[mask])


@needs_kernels
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(0, 9), cols=st.integers(0, 150), dtype=st.sampled_from([np.float64, np.float32]),
       scale=st.sampled_from([1.0, -1.0, 0.5, 1 / 3, 3.0, 1e-30, 2.0 ** 60]),
       stream=st.booleans(), src_pad=st.integers(0, 5), dst_pad=st.integers(0, 5),
       src_off=st.integers(0, 3), dst_off=st.integers(0, 3), with_sq=st.booleans(),
       one_d=st.booleans(), mode=st.sampled_from(["same", "narrow", "wide"]),
       wide_off=st.integers(0, 3), flip=st.booleans(),
       part=st.sampled_from([0, 0, 1, 3, 8, 24, 40, 64]),
       squares=st.booleans(), simd=st.sampled_from([0, -1]), seed=st.integers(0, 2 ** 16))
def test_copy_sq_is_numpys_product_and_its_sum_of_squares(rows, cols, dtype, scale, stream, src_pad,
                                                          dst_pad, src_off, dst_off, with_sq, one_d,
                                                          mode, wide_off, flip, part, squares, simd,
                                                          seed):
    """``mode``: ``dst`` and ``src`` of one dtype; float64 ``src`` into float32 ``dst``
    (``narrow``: the encode's float32 parity tasks from their float64 products); float32 with
    the values also widened into a float64 ``wide`` (the parity GEMM's operand). ``part``:
    ``sq`` per block of that many columns (the gradient code's partition norms). Without
    ``squares`` (and so without ``sq``) the loop forms no sum: the same values written, None
    returned. ``simd`` 0: the SSE2 loops; -1: the AVX2 ones where the CPU has them
    (``COPY_SIMD``)."""
    rng = np.random.default_rng(seed)
    one_d = one_d and rows > 0
    sdt, ddt = {"same": (dtype, dtype), "narrow": (np.float64, np.float32),
                "wide": (np.float32, np.float32)}[mode]
    # rows at any stride, starting at any element offset (every alignment of the streamed
    # stores' head loop)
    big_src = (rng.standard_normal((rows, cols + src_pad + src_off)) * 1e3).astype(sdt)
    big_dst = np.full((rows, cols + dst_pad + dst_off), 7, dtype=ddt)
    src = big_src[:, src_off:src_off + cols]
    if flip:                  # rows at a negative stride
        src = src[::-1]
    dst = big_dst[:, dst_off:dst_off + cols]
    big_wide = np.full((rows, cols + 2 + wide_off), 5.0)
    wide = big_wide[:, wide_off:wide_off + cols] if mode == "wide" else None
    if one_d:
        src, dst = src[:1].reshape(-1), dst[:1].reshape(-1)
        wide = None if wide is None else wide[:1].reshape(-1)
    with_sq = with_sq or part > 0
    nblk = -(-cols // part) if part else 0
    sq = np.full(nblk if part else (1 if one_d else rows), 0.25) if with_sq else None
    before, wide_before = big_dst.copy(), big_wide.copy()
    squares = squares or with_sq
    total = K.copy_sq(dst, src, sq, stream, scale, wide, part, squares, simd=simd)
    want = (src.astype(np.float64) * scale).astype(ddt)
    np.testing.assert_array_equal(dst, want)
    if not squares:
        assert total is None
    if wide is not None:   # src's values, exactly, and nothing else of big_wide
        np.testing.assert_array_equal(wide, src.astype(np.float64))
        _unchanged_outside(big_wide, wide_before, wide_off, cols, one_d)
    _unchanged_outside(big_dst, before, dst_off, cols, one_d)
    s64 = src.astype(np.float64)
    per_row = (s64 ** 2).sum(axis=-1) if not one_d else np.array([(s64 ** 2).sum()])
    tol = 4 * max(cols, 1) * np.finfo(np.float64).eps
    if not squares:
        return
    assert abs(total - per_row.sum()) <= tol * max(per_row.sum(), 1e-300)
    if with_sq and part:
        s2 = (s64 ** 2).reshape(-1, cols) if cols else np.zeros((max(rows, 1), 0))
        per_block = np.array([s2[:, b * part:(b + 1) * part].sum() for b in range(nblk)])
        np.testing.assert_allclose(sq, 0.25 + per_block, rtol=tol, atol=1e-300)
    elif with_sq:
        np.testing.assert_allclose(sq, 0.25 + per_row, rtol=tol, atol=1e-300)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cols", [12, 50, 53])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("off", [0, 1, 3])
@pytest.mark.parametrize("simd", [0, -1])
def test_copy_sq_sum_is_not_finite_when_src_is_not(dtype, stream, bad, cols, where, off, simd):
    """Wherever the bad value lies: in the streamed stores' head loop (``off``: the
    destination off its 16-byte boundary), the SIMD body, the 4-wide or the scalar tail; in
    the SSE2 loops and the AVX2 ones."""
    src = np.ones((2, cols), dtype=dtype)
    i = {"first": 0, "middle": cols + cols // 2, "last": 2 * cols - 1}[where]
    src.reshape(-1)[i] = bad
    dst = np.empty((2, cols + off), dtype=dtype)[:, off:]
    total = K.copy_sq(dst, src, None, stream, simd=simd)
    assert not np.isfinite(total)
    np.testing.assert_array_equal(dst, src)
    if dtype == np.float64:   # into float32 (the parity tasks' cast): the sum is of src
        d32 = np.empty((2, cols + off), np.float32)[:, off:]
        assert not np.isfinite(K.copy_sq(d32, src, None, stream, simd=simd))
    else:                     # with the widened copy
        wide = np.empty(src.shape)
        assert not np.isfinite(K.copy_sq(dst, src, None, stream, 1.0, wide, simd=simd))
        # per block of columns too (the gradient code's partitions): the bad value's block
        # only
        blk = np.zeros(-(-cols // 8))
        assert not np.isfinite(K.copy_sq(dst, src, blk, stream, 1.0, None, 8, simd=simd))
        bad_block = (i % cols) // 8
        assert not np.isfinite(blk[bad_block])
        assert np.isfinite(np.delete(blk, bad_block)).all()
        np.testing.assert_array_equal(wide, src.astype(np.float64))


@needs_kernels
def test_copy_simd_says_what_the_cpu_allows():
    """``COPY_SIMD`` is 1 exactly where lincomb may use AVX2 and FMA (``SIMD`` >= 1: the same
    CPU check), and the two loops write the same values into a large streamed destination
    (the AVX2 loop's streamed 16-byte halves), with sums that agree to rounding."""
    assert K.COPY_SIMD in (0, 1)
    assert K.COPY_SIMD <= (1 if K.SIMD >= 1 else 0)   # the same CPU check, on x86-64 with SSE2
    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        src = rng.standard_normal((33, 1001)).astype(dtype)
        outs, sums = [], []
        for simd in (0, -1):
            dst = np.empty((33, 1003), dtype)[:, 1:1002]
            sums.append(K.copy_sq(dst, src, None, True, 0.3, simd=simd))
            outs.append(dst.copy())
        np.testing.assert_array_equal(outs[0], outs[1])
        np.testing.assert_array_equal(outs[0], (src.astype(np.float64) * 0.3).astype(dtype))
        assert sums[0] == pytest.approx(sums[1], rel=1e-12)


@needs_kernels
@pytest.mark.parametrize("simd", [0, -1])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_copy_sq_handles_buffers_misaligned_below_an_element(stream, dtype, simd):
    """numpy allows arrays at any byte offset: a destination 4 bytes off (never at a 16-byte
    boundary) takes the scalar loop to its end, streamed or not, with numpy's values."""
    item = np.dtype(dtype).itemsize
    n = 37
    raw = bytearray(n * item + 5)
    dst = np.frombuffer(raw, dtype=dtype, count=n, offset=3 if item == 4 else 4)
    assert not dst.flags.aligned or item == 4
    src = np.arange(n, dtype=dtype) - 5.5
    total = K.copy_sq(dst, src, None, stream, -2.0, simd=simd)
    np.testing.assert_array_equal(dst, src * dtype(-2.0))
    assert total == pytest.approx(float((src.astype(np.float64) ** 2).sum()), rel=1e-12)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.5, -1 / 3])
@pytest.mark.parametrize("off", [0, 1, 2, 3])
@pytest.mark.parametrize("cols", [0, 1, 2, 3, 7, 8, 9, 17, 40])
def test_copy_sq_without_squares_writes_numpys_values(dtype, stream, scale, off, cols):
    """The loops without the sum (``squares=False``: plain copies, scaled copies) at every
    offset of the destination from a 16-byte boundary and every length around the SIMD
    widths: numpy's values, None returned, nothing outside the destination written."""
    src = (np.arange(2 * cols, dtype=np.float64).reshape(2, cols) * 1.37 - 5).astype(dtype)
    big = np.full((2, cols + off + 2), 7, dtype=dtype)
    dst = big[:, off:off + cols]
    before = big.copy()
    assert K.copy_sq(dst, src, None, stream, scale, squares=False) is None
    np.testing.assert_array_equal(dst, (src.astype(np.float64) * scale).astype(dtype))
    _unchanged_outside(big, before, off, cols, False)


class _FlushDenormals:
    """Flush-to-zero and denormals-are-zero on for this thread (``torch.set_flush_denormal``,
    as a torch user may set it, or as a library built with -ffast-math does), off again on
    leaving. Skips where torch cannot set them or they do not take effect on numpy here."""

    def __enter__(self):
        torch = pytest.importorskip("torch")
        if not torch.set_flush_denormal(True):
            pytest.skip("torch cannot set flush-to-zero on this CPU")
        self._torch = torch
        if (np.array([5e-324]) * 1.0)[0] != 0.0:
            torch.set_flush_denormal(False)
            pytest.skip("denormals-are-zero did not reach numpy's arithmetic in this thread")
        return self

    def __exit__(self, *exc):
        self._torch.set_flush_denormal(False)
        return False


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint64 if x.dtype == np.float64 else np.uint32)


@needs_kernels
@pytest.mark.parametrize("simd", [0, -1])
@pytest.mark.parametrize("squares", [True, False])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_copy_keeps_subnormal_values_under_flush_to_zero(dtype, stream, squares, simd):
    """A copy (scale 1, one dtype) stores each value as loaded: with denormals-are-zero on,
    a product by 1.0 (or a widening) would store a subnormal value as 0 where
    ``np.concatenate`` keeps its bits. Every destination offset from a 16-byte boundary, so
    that the scalar head, the vector loop and the scalar tail each meet subnormals."""
    tiny = [5e-324, -1e-310, 2e-308] if dtype == np.float64 else [1e-45, -1e-39, 5e-39]
    src = np.array((tiny + [1.0, -3.5]) * 9, dtype=dtype)
    with _FlushDenormals():
        for off in range(4):
            big = np.zeros(src.size + 6, dtype)
            dst = big[off:off + src.size]
            K.copy_sq(dst, src, None, stream, 1.0, simd=simd, squares=squares)
            np.testing.assert_array_equal(_bits(dst), _bits(src))


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_systematic_tasks_and_assembly_keep_subnormal_values_under_flush_to_zero(dtype):
    """End to end with denormals-are-zero on: a systematic code's data tasks and the shared
    B are A's and B's values bit for bit (the encode's compiled copies), and so is the
    assembly of a product from the data results (the decode's compiled copies)."""
    from codedml.codes import MDSCode, polydot

    rng = np.random.default_rng(5)
    # 68 rows: tasks of 18 rows (two half-blocks of 9), so that a result of 18 x 43, copied
    # as one row of 774 values, ends in a scalar tail too
    A = rng.standard_normal((68, 300)).astype(dtype)
    B = rng.standard_normal((300, 43)).astype(dtype)
    sub = dtype(5e-324 if dtype == np.float64 else 1e-45)
    A[::7, ::3] = sub
    A[:, -3:] = sub          # the rows' scalar tails too (300 = 18 x 16 + 12 columns)
    B[::3, ::11] = -sub
    B[:, -3:] = -sub
    code = MDSCode(6, 4, systematic=True)
    with _FlushDenormals():
        enc = code.encode(A, B)
    S = np.concatenate([enc[w].a for w in range(4)])[:68]
    np.testing.assert_array_equal(_bits(S), _bits(A))
    np.testing.assert_array_equal(_bits(enc[0].b), _bits(B))
    # float64 results holding subnormals (the products' shape, 18 x 43), assembled by the
    # compiled copy (COPY_BLOCKS_MIN lowered so that this small product takes it)
    R = rng.standard_normal((4, 18, 43))
    R[:, ::4, ::3] = 5e-324
    R[:, :, -3:] = -5e-324
    old = polydot.COPY_BLOCKS_MIN
    polydot.COPY_BLOCKS_MIN = 0
    try:
        with _FlushDenormals():
            C = code.decode({w: R[w] for w in range(4)}, encoding=enc)
    finally:
        polydot.COPY_BLOCKS_MIN = old
    np.testing.assert_array_equal(_bits(C), _bits(R.reshape(72, 43)[:68]))


@needs_kernels
@pytest.mark.parametrize("stream", [False, True])
def test_loops_handle_destinations_misaligned_below_an_element(stream):
    """copy_sq without squares and copy_i64 into buffers 4 bytes off an element boundary (never
    at a 16-byte boundary): the scalar loops to the end, with numpy's values."""
    n = 37
    raw = bytearray(n * 8 + 5)
    d = np.frombuffer(raw, dtype=np.float64, count=n, offset=4)
    src = np.arange(n, dtype=np.float64) - 5.5
    assert K.copy_sq(d, src, None, stream, 3.0, squares=False) is None
    np.testing.assert_array_equal(d, src * 3.0)
    raw = bytearray(n * 8 + 5)
    d64 = np.frombuffer(raw, dtype=np.int64, count=n, offset=4)
    a = np.arange(n, dtype=np.int64) * 1000003
    wide = np.empty(n)
    assert K.copy_i64(d64, a, wide, stream) == int(a.max())
    np.testing.assert_array_equal(d64, a)
    np.testing.assert_array_equal(wide, a.astype(np.float64))


@needs_kernels
def test_copy_sq_narrowing_overflows_to_inf_as_numpy_does():
    src = np.array([[1e39, -1e39, 3.0, 1e-50, 3.4e38]])
    dst = np.empty(src.shape, np.float32)
    K.copy_sq(dst, src)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(dst, src.astype(np.float32))


BOTH = "must both be float64, both float32, or `dst` float32 and `src` float64"


@needs_kernels
@pytest.mark.parametrize("dst, src, sq, match", [
    (np.empty(3, np.int64), np.empty(3, np.int64), None, BOTH),
    (np.empty(3), np.empty(3, np.float32), None, BOTH),
    (np.empty(3, np.float32), np.empty(3, np.int64), None, BOTH),
    (np.empty(3), np.empty(4), None, r"`dst` is 1 x 3 but `src` is 1 x 4"),
    (np.empty((3, 4)), np.empty((4, 3)), None, r"`dst` is 3 x 4 but `src` is 4 x 3"),
    (np.empty((3, 8))[:, ::2], np.empty((3, 4)), None, "rows of `dst` must be contiguous"),
    (np.empty((3, 4)), np.empty((3, 8))[:, ::2], None, "rows of `src` must be contiguous"),
    (np.empty((2, 2, 2)), np.empty((2, 2, 2)), None, "1-D or 2-D, got 3-D"),
    (np.empty((3, 4)), np.empty((3, 4)), np.empty(2), "one per row"),
    (np.empty((3, 4)), np.empty((3, 4)), np.empty(3, np.float32), "1-D float64"),
    (np.empty(3, ">f8"), np.empty(3, ">f8"), None, BOTH),         # not this host's byte order
    (np.empty(3, ">f4"), np.empty(3, ">f8"), None, BOTH),
])
def test_copy_sq_refuses_bad_arguments_by_name(dst, src, sq, match):
    with pytest.raises((ValueError, TypeError), match=match):
        K.copy_sq(dst, src, sq)


@needs_kernels
@pytest.mark.parametrize("sq, part, match", [
    (np.zeros(2), -1, r"`part` .* must be 0, or positive with `sq` given; got -1"),
    (None, 4, r"got 4 without `sq`"),
    (np.zeros(2), 4, r"3 entries \(one per block of `part` columns\)"),   # 10 columns: 3 blocks
    (np.zeros(4), 4, r"3 entries"),
    (np.zeros(0), sys.maxsize, r"1 entries"),    # one block: no overflow in the rounding up
])
def test_copy_sq_refuses_a_bad_part_by_name(sq, part, match):
    dst = np.full((2, 10), 7.0)
    with pytest.raises(ValueError, match=match):
        K.copy_sq(dst, np.ones((2, 10)), sq, False, 1.0, None, part)
    assert (dst == 7.0).all()


@needs_kernels
def test_copy_sq_refuses_sq_without_squares():
    dst = np.full((2, 10), 7.0)
    with pytest.raises(ValueError, match=r"`sq` \(the rows' sums of squares\) needs `squares` true"):
        K.copy_sq(dst, np.ones((2, 10)), np.zeros(2), False, 1.0, squares=False)
    assert (dst == 7.0).all()


F32 = np.float32


@needs_kernels
@pytest.mark.parametrize("dst, src, wide, match", [
    (np.empty((2, 3), F32), np.empty((2, 3), F32), np.empty((2, 3), F32), "`wide`.*must be float64"),
    (np.empty((2, 3)), np.empty((2, 3)), np.empty((2, 3)), "with `dst` and `src` float32"),
    (np.empty((2, 3), F32), np.empty((2, 3)), np.empty((2, 3)), "with `dst` and `src` float32"),
    (np.empty((2, 3), F32), np.empty((2, 3), F32), np.empty((3, 2)), r"`wide` is 3 x 2 but `src` is 2 x 3"),
    (np.empty((2, 3), F32), np.empty((2, 3), F32), np.empty((2, 6))[:, ::2], "rows of `wide` must be contiguous"),
])
def test_copy_sq_refuses_a_bad_wide_by_name(dst, src, wide, match):
    dst_before = dst.copy()
    with pytest.raises((ValueError, TypeError), match=match):
        K.copy_sq(dst, src, None, False, 1.0, wide)
    np.testing.assert_array_equal(dst, dst_before)   # refused before anything was written


@needs_kernels
def test_copy_sq_refuses_a_read_only_destination():
    dst = np.empty(4)
    dst.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        K.copy_sq(dst, np.ones(4))
    assert _encode.fast_copy(np.empty((2, 3), np.int64), np.empty((2, 3), np.int64), False) is None


@needs_kernels
def test_copy_sq_refuses_overlapping_buffers_by_name():
    """Any two of dst, src, sq and wide whose memory spans overlap (an aliased or shifted
    view, rows interleaved with another's) are refused before anything is written; adjacent,
    disjoint views of one array are not."""
    big = np.arange(64, dtype=np.float64)
    f = np.arange(64, dtype=np.float32)
    w = np.zeros(64)
    shared = np.zeros(32)              # float64 holding float32 src rows in its middle
    cases = [
        (big[:16].reshape(2, 8), big[:16].reshape(2, 8), None, None, "`dst` and `src`"),
        (big[4:20].reshape(2, 8), big[:16].reshape(2, 8), None, None, "`dst` and `src`"),
        (big.reshape(8, 8)[::-1][:2], big[44:60].reshape(2, 8), None, None, "`dst` and `src`"),
        (big.reshape(8, 8)[::2], big.reshape(8, 8)[1::2], None, None, "`dst` and `src`"),
        (np.empty((2, 8)), big[:16].reshape(2, 8), big[15:17], None, "`src` and `sq`"),
        (big[:16].reshape(2, 8), np.ones((2, 8)), big[10:12], None, "`dst` and `sq`"),
        (f[:16].reshape(2, 8), f[32:48].reshape(2, 8), None, w[:16].reshape(2, 8), None),
        (f[:16].reshape(2, 8), f[32:48].reshape(2, 8), w[:2], w[:16].reshape(2, 8), "`sq` and `wide`"),
        (np.empty((2, 8), np.float32), shared[4:12].view(np.float32).reshape(2, 8), None,
         shared[:16].reshape(2, 8), "`src` and `wide`"),
        (shared[:8].view(np.float32).reshape(2, 8), f[:16].reshape(2, 8), None,
         shared[4:20].reshape(2, 8), "`dst` and `wide`"),
    ]
    for dst, src, sq, wide, match in cases:
        if match is None:
            continue
        before = (dst.copy(), None if sq is None else sq.copy(), None if wide is None else wide.copy())
        with pytest.raises(ValueError, match=f"{match} overlap in memory"):
            K.copy_sq(dst, src, sq, False, 1.0, wide)
        np.testing.assert_array_equal(dst, before[0])
        if sq is not None:
            np.testing.assert_array_equal(sq, before[1])
    # adjacent halves of one array, and a 1-D sq right after dst: disjoint, copied
    a = np.arange(32, dtype=np.float64)
    sq = a[16:18]
    K.copy_sq(a[:8].reshape(2, 4), a[8:16].reshape(2, 4), sq)
    np.testing.assert_array_equal(a[:8], np.arange(8, 16))
    np.testing.assert_array_equal(sq, [16 + 8**2 + 9**2 + 10**2 + 11**2,
                                       17 + 12**2 + 13**2 + 14**2 + 15**2])
    fw = np.zeros(40)
    K.copy_sq(f[:16].reshape(2, 8), f[32:48].reshape(2, 8), fw[:2], False, 1.0, fw[8:24].reshape(2, 8))
    np.testing.assert_array_equal(fw[8:24], np.arange(32, 48))


@needs_kernels
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(0, 6), cols=st.integers(0, 90), tasks=st.integers(1, 4),
       width=st.integers(0, 70), dtype=st.sampled_from([np.float64, np.float32]),
       stream=st.booleans(), part=st.sampled_from([0, 1, 5, 16, 64]), scaled=st.booleans(),
       src_pad=st.integers(0, 3), dst_pad=st.integers(0, 3), off=st.integers(0, 3),
       seed=st.integers(0, 2 ** 16))
def test_copy_runs_is_copy_sq_run_by_run(rows, cols, tasks, width, dtype, stream, part, scaled,
                                         src_pad, dst_pad, off, seed):
    """``copy_runs`` writes what ``copy_sq`` writes for each run (its window of every row,
    the run's scale), bit for bit, nothing outside the runs' windows, and adds the same sums
    of squares (per block of ``part`` columns, or per run) in the same order: the gradient
    code's tasks and noise scales do not depend on which of the two wrote them."""
    rng = np.random.default_rng(seed)
    src_big = rng.standard_normal((rows, cols + src_pad + off)).astype(dtype)
    src = src_big[:, off:off + cols]
    dst = rng.standard_normal((tasks, rows, width + dst_pad)).astype(dtype)[:, :, :width]
    runs, scales = [], []
    nq = 0
    for _ in range(int(rng.integers(0, 6))):
        lo = int(rng.integers(0, cols + 1))
        length = int(rng.integers(0, min(cols - lo, width) + 1))
        c0 = int(rng.integers(0, width - length + 1))
        nb = 0 if rng.random() < 0.4 else (-(-length // part) if part else 1)
        q = nq if nb else -1
        nq += nb
        runs.append((int(rng.integers(0, tasks)), lo, lo + length, c0, q))
        scales.append(float(rng.choice([1.0, -0.5, 1 / 3, 3.0])) if scaled else 1.0)
    runs_a = np.array(runs, dtype=np.int64).reshape(-1, 5)
    want, got = dst.copy(), dst.copy()
    sq_want, sq_got = np.zeros(nq + 2), np.zeros(nq + 2)
    for r in range(rows):
        for (w, lo, hi, c0, q), c in zip(runs, scales):
            if hi <= lo:
                continue
            d, x = want[w, r:r + 1, c0:c0 + hi - lo], src[r:r + 1, lo:hi]
            if q < 0:
                K.copy_sq(d, x, None, stream, c, None, 0, False)
            elif part:
                K.copy_sq(d, x, sq_want[q:q + -(-(hi - lo) // part)], stream, c, None, part)
            else:
                sq_want[q] += K.copy_sq(d, x, None, stream, c)
    K.copy_runs(got, src, runs_a, sq_got, part, stream, np.array(scales) if scaled else None)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    np.testing.assert_array_equal(sq_got, sq_want)


@needs_kernels
def test_copy_runs_refuses_bad_arguments_by_name():
    """Every run is checked against the buffers before anything is written; dtypes, shapes
    and overlaps are refused naming the argument."""
    src = np.arange(24.0).reshape(3, 8)
    dst = np.zeros((2, 3, 10))
    sq = np.zeros(4)
    ok = (0, 0, 8, 2, 0)
    cases = [
        ([ok, (2, 0, 4, 0, -1)], {}, ValueError, r"run 1 \(w=2, lo=0, hi=4"),
        ([ok, (1, 4, 9, 0, -1)], {}, ValueError, "run 1 .* lies outside"),
        ([ok, (1, 5, 4, 0, -1)], {}, ValueError, "run 1 "),
        ([ok, (1, 0, 8, 3, -1)], {}, ValueError, "run 1 "),
        ([ok, (1, 0, 8, -1, -1)], {}, ValueError, "run 1 "),
        ([(0, 0, 8, 0, 3)], {"part": 2}, ValueError, r"run 0 .*`sq` \(4 entries\)"),
        ([(0, 0, 8, 0, 4)], {}, ValueError, "run 0 "),
        ([ok], {"part": -1}, ValueError, "`part` must be >= 0"),
        ([ok], {"scales": np.ones(2)}, ValueError, "`scales` must be .* of 1 entries"),
    ]
    for runs, kw, exc, match in cases:
        before = dst.copy()
        with pytest.raises(exc, match=match):
            K.copy_runs(dst, src, np.array(runs, dtype=np.int64), sq, **kw)
        np.testing.assert_array_equal(dst, before)
        np.testing.assert_array_equal(sq, 0)
    runs = np.array([ok], dtype=np.int64)
    with pytest.raises(TypeError, match="`dst` and `src` must both be float64 or both float32"):
        K.copy_runs(dst.astype(np.float32), src, runs)
    with pytest.raises(TypeError, match="`runs` must be an int64 array"):
        K.copy_runs(dst, src, runs.astype(np.int32))
    with pytest.raises(ValueError, match="`runs` must be a C-contiguous nr x 5"):
        K.copy_runs(dst, src, runs[:, :4])
    with pytest.raises(ValueError, match="`dst` must be 3-D"):
        K.copy_runs(dst[0], src, runs)
    with pytest.raises(ValueError, match="`dst` has 2 rows per task but `src` 3"):
        K.copy_runs(dst[:, :2], src, runs)
    with pytest.raises(ValueError, match=r"run 0 .*`sq` \(0 entries\)"):
        K.copy_runs(dst, src, runs)        # a run with squares, and no sq
    plain = np.array([(0, 0, 8, 0, -1)], dtype=np.int64)
    big = np.zeros(64)
    with pytest.raises(ValueError, match="`dst` and `src` overlap in memory"):
        K.copy_runs(big[:48].reshape(2, 3, 8), big[40:64].reshape(3, 8), plain)
    with pytest.raises(ValueError, match="`dst` and `sq` overlap in memory"):
        K.copy_runs(big[:60].reshape(2, 3, 10), src, plain, big[58:62])
    np.testing.assert_array_equal(big, 0)
    big[40:] = np.arange(24)
    K.copy_runs(big[:40].reshape(5, 1, 8), big[40:48].reshape(1, 8), plain)   # adjacent: copied
    np.testing.assert_array_equal(big[:8], np.arange(8))
    np.testing.assert_array_equal(big[8:40], 0)


@needs_kernels
def test_copy_runs_checks_runs_it_cannot_be_made_to_change_or_overflow():
    """Found by review: a 0-d ``sq`` (numpy exports no shape) is refused, not read; a
    ``part`` near ``sys.maxsize`` cannot wrap the block count past ``sq``'s end; a ``runs``
    that aliases ``dst`` cannot rewrite a checked run through the copies (the runs are
    copied before they are checked); a read-only ``scales`` is taken."""
    import sys

    with pytest.raises(ValueError, match="`sq` must be a contiguous 1-D float64 array"):
        K.copy_runs(np.zeros((1, 1, 4)), np.zeros(4), np.zeros((0, 5), np.int64), np.zeros(()))
    big = np.zeros(5)
    with pytest.raises(ValueError, match=r"run 0 .*`sq` \(4 entries\)"):
        K.copy_runs(np.zeros((1, 1, 8)), np.arange(1.0, 9.0), np.array([[0, 0, 4, 0, 4]], np.int64),
                    big[:4], sys.maxsize)
    assert not big.any()                   # nothing past sq (nor in it) written
    sq = np.zeros(1)                       # the same part, in range: one block, one sum
    K.copy_runs(np.zeros((1, 1, 8)), np.arange(1.0, 9.0), np.array([[0, 0, 4, 0, 0]], np.int64),
                sq, sys.maxsize)
    assert sq[0] == 1 + 4 + 9 + 16
    raw = np.zeros(1 << 12)
    dst = raw[:32].reshape(1, 2, 16)
    runs = raw[5:10].view(np.int64).reshape(1, 5)   # the run lies inside dst's first row
    runs[0] = (0, 0, 5, 5, -1)
    src = np.full((2, 8), 7.0)
    src[0, :5] = np.array([0, 0, 5, 2000, -1], np.int64).view(np.float64)   # row 0 rewrites it
    K.copy_runs(dst, src, runs)
    assert not raw[32:].any()              # row 1 went where the checked run said
    np.testing.assert_array_equal(raw[16 + 5:16 + 10], 7.0)
    scales = np.array([2.0])
    scales.flags.writeable = False
    out = np.zeros((1, 1, 4))
    K.copy_runs(out, np.ones(4), np.array([[0, 0, 4, 0, -1]], np.int64), None, 0, False, scales)
    np.testing.assert_array_equal(out, 2.0)


def test_fast_copy_declines_what_it_does_not_handle():
    """None (the caller copies with numpy) where the loop does not apply: mixed dtypes,
    integers, strided rows, shapes that differ."""
    a = np.ones((4, 6))
    for dst, src in ((np.empty((4, 6), np.float32), a), (np.empty((4, 6), np.int64), a.astype(np.int64)),
                     (np.empty((4, 12))[:, ::2], a), (np.empty((4, 5)), a[:, :5].copy()[:, ::1][:3]),
                     (np.empty((4, 6)), np.asfortranarray(a)), (np.empty((4, 6)), np.ones((4, 12))[:, ::2]),
                     (np.empty(6), np.ones(12)[::2]), (np.empty((4, 6), ">f8"), a.astype(">f8"))):
        before = dst.copy()
        assert _encode.fast_copy(dst, src, False) is None
        np.testing.assert_array_equal(dst, before)   # declined: nothing written


# ------------------------------------------------------------------ GF(p): copy_i64, mod_store
@needs_kernels
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(0, 4), cols=st.integers(0, 37), off=st.integers(0, 3), stream=st.booleans(),
       p=st.sampled_from([2, 3, 65537, 2097143, 2**31 - 1]), wide=st.booleans(),
       spread=st.sampled_from(["field", "below 2**52", "any"]),
       odd=st.sampled_from([None, -1, 2**52 - 1, 2**52, 2**63 - 1, -2**63]),
       seed=st.integers(0, 2**32 - 1))
def test_mod_store_and_copy_i64_are_numpys(rows, cols, off, stream, p, wide, spread, odd, seed):
    """mod_store writes exactly ``x.astype(int64) % p`` for float64 integers in [0, 2**52),
    the extremes included, at any alignment of dst (streamed or not), nothing outside dst;
    copy_i64 copies int64 exactly, widens it into ``wide`` as numpy's cast does and returns
    its largest value read as unsigned (a negative one is 2**63 or more): residues of the
    field (its SIMD conversion), values below 2**52, any int64 (the exact fallback), and one
    ``odd`` value anywhere among residues (a row sent back to the exact loop)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**52, (rows, cols)).astype(np.float64)
    if x.size:
        flat = x.reshape(-1)
        flat[rng.integers(0, x.size, 3)] = [0, 2.0**52 - 1, float(p - 1)]
    big = np.full(rows * cols + off + 4, -7, dtype=np.int64)
    dst = big[off:off + rows * cols].reshape(rows, cols)
    assert K.mod_store(dst, x, p, stream) is None
    np.testing.assert_array_equal(dst, x.astype(np.int64) % p)
    assert (big[:off] == -7).all() and (big[off + rows * cols:] == -7).all()
    lo, hi = {"field": (0, p), "below 2**52": (0, 2**52), "any": (-2**63, 2**63 - 1)}[spread]
    a = rng.integers(lo, hi, (rows, cols), dtype=np.int64, endpoint=spread == "any")
    if odd is not None and a.size:
        a.reshape(-1)[rng.integers(0, a.size)] = odd
    d2 = np.full((rows, cols + 3), -7, dtype=np.int64)[:, 1:cols + 1]
    w = np.zeros((rows, cols)) if wide else None
    umax = K.copy_i64(d2, a, w, stream)   # the range check of GF(p) operands
    assert umax == (int(a.view(np.uint64).max()) if a.size else 0)
    np.testing.assert_array_equal(d2, a)
    if wide:
        np.testing.assert_array_equal(w, a.astype(np.float64))


def _at_distance(src_len: int, dst_len: int, rel: int, dtype=np.int64):
    """Two arrays, ``dst`` starting ``rel`` bytes after ``src`` modulo 4 KiB, in one buffer
    with guard values around ``dst``."""
    it = np.dtype(dtype).itemsize
    raw = np.zeros(3 * 4096 + it * (src_len + dst_len + 16), np.uint8)
    base = raw.__array_interface__["data"][0]
    s0 = (-base) % 4096 + 16
    src = raw[s0:s0 + it * src_len].view(dtype)
    end = s0 + it * src_len + 8 * it
    d0 = end + ((s0 + rel - end) % 4096)
    dst = raw[d0:d0 + it * dst_len].view(dtype)
    return src, dst, raw, d0


@needs_kernels
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cols=st.integers(0, 90), rel=st.sampled_from([8, 16, 24, 32, 40, 48, 56, 64, 0, 4088]),
       stream=st.booleans(), wide=st.booleans(),
       odd=st.sampled_from([None, -1, 2**52, 2**63 - 1]), at=st.integers(0, 89),
       seed=st.integers(0, 2**32 - 1))
def test_copy_i64_where_the_destination_lies_just_after_the_source(cols, rel, stream, wide, odd,
                                                                   at, seed):
    """copy_i64's loop that loads eight values ahead (a destination 8-56 bytes after its
    source modulo 4 KiB) copies, widens and range-checks as the other one does: every length
    (the lead loop's last group, the tail), an out-of-range value anywhere (the exact
    fallback), nothing written outside ``dst``."""
    rng = np.random.default_rng(seed)
    src, dst, raw, d0 = _at_distance(cols, cols, rel)
    src[:] = rng.integers(0, 65537, cols)
    if odd is not None and cols:
        src[at % cols] = odd
    before = raw.copy()
    w = np.zeros(cols) if wide else None
    umax = K.copy_i64(dst, src, w, stream)
    assert umax == (int(src.view(np.uint64).max()) if cols else 0)
    np.testing.assert_array_equal(dst, src)
    if wide:
        np.testing.assert_array_equal(w, src.astype(np.float64))
    np.testing.assert_array_equal(raw[:d0], before[:d0])
    np.testing.assert_array_equal(raw[d0 + 8 * cols:], before[d0 + 8 * cols:])


@needs_kernels
@pytest.mark.parametrize("bad", [0.5, -1.0, 2.0**52, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 1, 6])
def test_mod_store_refuses_what_is_not_an_exact_product(bad, where):
    x = np.zeros((3, 7))
    x[2, where] = bad
    with pytest.raises(ValueError, match=r"`src` row 2 holds a value that is not an integer in \[0, 2\*\*52\)"):
        K.mod_store(np.empty((3, 7), np.int64), x, 65537)


@needs_kernels
@pytest.mark.parametrize("call,match", [
    (lambda: K.mod_store(np.empty(4, np.int64), np.zeros(4), 1), r"`p` must be between 2 and 2\*\*31-1, got 1"),
    (lambda: K.mod_store(np.empty(4, np.int64), np.zeros(4), 2**31), r"`p` must be between 2 and 2\*\*31-1"),
    (lambda: K.mod_store(np.empty(4, np.int32), np.zeros(4), 7), r"`dst` must be int64 and `src` float64"),
    (lambda: K.mod_store(np.empty(4, np.int64), np.zeros(4, np.float32), 7), r"`dst` must be int64"),
    (lambda: K.mod_store(np.empty(4, np.int64), np.zeros(5), 7), r"`src` is 1 x 5 but `dst` is 1 x 4"),
    (lambda: K.copy_i64(np.empty(4), np.zeros(4, np.int64)), r"`dst` and `src` must be int64"),
    (lambda: K.copy_i64(np.empty(4, ">i8" if sys.byteorder == "little" else "<i8"), np.zeros(4, np.int64)),
     r"`dst` and `src` must be int64"),      # the other byte order: not this host's int64
    (lambda: K.copy_i64(np.empty(4, np.int64), np.zeros(4, np.int64), np.empty(4, np.float32)), r"`wide` float64"),
    (lambda: K.copy_i64(np.empty((2, 4), np.int64), np.zeros((2, 4), np.int64), np.empty((2, 3))),
     r"`wide` is 2 x 3 but `dst` is 2 x 4"),
])
def test_gfp_loops_refuse_bad_arguments_by_name(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@needs_kernels
def test_gfp_loops_refuse_overlap():
    a = np.arange(32, dtype=np.int64)
    with pytest.raises(ValueError, match="`dst` and `src` overlap in memory"):
        K.copy_i64(a[2:18].reshape(2, 8), a[:16].reshape(2, 8))
    w = np.zeros(32)
    with pytest.raises(ValueError, match="`src` and `wide` overlap in memory"):
        K.copy_i64(np.empty((2, 8), np.int64), w[:16].view(np.int64).reshape(2, 8), w[8:24].reshape(2, 8))
    with pytest.raises(ValueError, match="`dst` and `src` overlap in memory"):
        K.mod_store(w[:8].view(np.int64), w[4:12], 7)


# --------------------------------------------------------------------------- proj_sq
# The decoder's consistency check (codedml/codes/_base.py, _project_sq): for each source X
# the k projections u_j X v_j and the sum of the squares of X's values, in double, from one
# pass. They must agree with numpy's to the rounding of a float64 sum of that many terms
# (the order of the sums differs), for any row stride, float64 and float32, with and without
# AVX2; NaN/Inf must reach every number of its source (the check erases such a result on
# them); bad arguments must be refused by name before anything is written.

def _proj_reference(srcs, u, v):
    P = np.array([[u[j] @ (s.astype(np.float64) @ v[j]) for j in range(u.shape[0])]
                  for s in srcs]).reshape(len(srcs), u.shape[0])
    Q = np.array([float(np.sum(s.astype(np.float64) ** 2)) for s in srcs])
    # what each number may differ by: the float64 rounding of its sums of |terms|
    bound = np.array([[np.abs(u[j]) @ (np.abs(s.astype(np.float64)) @ np.abs(v[j]))
                       for j in range(u.shape[0])] for s in srcs]).reshape(P.shape)
    return P, Q, bound


@needs_kernels
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(0, 7), x=st.integers(0, 9), y=st.integers(0, 70), k=st.integers(1, 8),
       dtype=st.sampled_from([np.float64, np.float32]), pad=st.integers(0, 5),
       off=st.integers(0, 3), simd=st.sampled_from([0, -1]), seed=st.integers(0, 2 ** 16))
def test_proj_sq_is_numpys_projections_and_sums_of_squares(m, x, y, k, dtype, pad, off, simd, seed):
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((m, x, y + pad + off)).astype(dtype)
    srcs = [big[i, :, off:off + y] for i in range(m)]            # rows at a stride, any offset
    u, v = rng.standard_normal((k, x)), rng.standard_normal((k, y))
    P, Q = np.full((m, k), 7.0), np.full(m, 7.0)
    assert K.proj_sq(srcs, u, v, P, Q, simd=simd) is None
    want, want_q, bound = _proj_reference(srcs, u, v)
    eps = np.finfo(np.float64).eps
    assert (np.abs(P - want) <= 4 * (x + y + 2) * eps * bound + 1e-300).all()
    assert (np.abs(Q - want_q) <= 4 * (x * y + 2) * eps * want_q + 1e-300).all()


@needs_kernels
def test_proj_sq_takes_a_row_per_call_of_any_length_and_wide_matrices():
    """The AVX2 loop's two steps of four, its single step and its scalar tail, on rows of
    every length up to 40, and a large source (1024 x 1024, as a decode's)."""
    rng = np.random.default_rng(5)
    for y in list(range(41)) + [1024]:
        x = 3 if y < 1024 else 1024
        srcs = [rng.standard_normal((x, y)) for _ in range(2)]
        u, v = rng.standard_normal((4, x)), rng.standard_normal((4, y))
        for simd in (0, -1):
            P, Q = np.empty((2, 4)), np.empty(2)
            K.proj_sq(srcs, u, v, P, Q, simd=simd)
            want, want_q, bound = _proj_reference(srcs, u, v)
            eps = np.finfo(np.float64).eps
            assert (np.abs(P - want) <= 4 * (x + y + 2) * eps * bound + 1e-300).all(), (y, simd)
            np.testing.assert_allclose(Q, want_q, rtol=1e-12)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (2, 5), (4, 12), (1, 9)])
@pytest.mark.parametrize("simd", [0, -1])
def test_proj_sq_numbers_are_not_finite_when_their_source_is_not(dtype, bad, where, simd):
    """A NaN or Inf anywhere in a source (in the AVX2 steps or the scalar tail) makes its sum
    of squares and every one of its projections non-finite; the other sources' stay finite."""
    rng = np.random.default_rng(1)
    srcs = [rng.standard_normal((5, 13)).astype(dtype) for _ in range(3)]
    srcs[1][where] = bad
    u, v = rng.standard_normal((4, 5)), rng.standard_normal((4, 13))
    P, Q = np.empty((3, 4)), np.empty(3)
    K.proj_sq(srcs, u, v, P, Q, simd=simd)
    assert not np.isfinite(P[1]).any() and not np.isfinite(Q[1])
    assert np.isfinite(P[[0, 2]]).all() and np.isfinite(Q[[0, 2]]).all()


@needs_kernels
@pytest.mark.parametrize("srcs, u, v, P, Q, match", [
    ([np.ones((2, 3))], np.ones((4, 2), np.float32), np.ones((4, 3)), np.empty((1, 4)), np.empty(1),
     "`u`, `v`, `proj` and `sq` must be float64"),
    ([np.ones((2, 3))], np.ones((4, 2)), np.ones((4, 3)), np.empty((1, 4), np.float32), np.empty(1),
     "`u`, `v`, `proj` and `sq` must be float64"),
    ([np.ones((2, 3))], np.ones((4, 4))[:, :2], np.ones((4, 3)), np.empty((1, 4)), np.empty(1),
     "`u` and `v` must be 2-D and C-contiguous"),
    ([np.ones((2, 3))], np.ones((4, 2)), np.ones((3, 3)), np.empty((1, 4)), np.empty(1),
     "same number of rows, 1 to 8; got 4 and 3"),
    ([np.ones((2, 3))], np.ones((9, 2)), np.ones((9, 3)), np.empty((1, 9)), np.empty(1),
     "same number of rows, 1 to 8; got 9 and 9"),
    ([np.ones((2, 3))], np.ones((4, 2)), np.ones((4, 3)), np.empty((2, 4)), np.empty(1),
     "`proj` must be a C-contiguous 1 x 4 float64 array"),
    ([np.ones((2, 3))], np.ones((4, 2)), np.ones((4, 3)), np.empty((1, 4)), np.empty(2),
     "`sq` must be a contiguous float64 array of 1"),
    ([np.ones((2, 3)), np.ones((2, 3), np.float32)], np.ones((4, 2)), np.ones((4, 3)),
     np.empty((2, 4)), np.empty(2), r"must all be float64 or all float32 \(source 1\)"),
    ([np.ones((2, 3), np.int64)], np.ones((4, 2)), np.ones((4, 3)), np.empty((1, 4)), np.empty(1),
     r"must all be float64 or all float32 \(source 0\)"),
    ([np.ones((2, 4))], np.ones((4, 2)), np.ones((4, 3)), np.empty((1, 4)), np.empty(1),
     r"source 0 is 2 x 4, but `u` and `v` are for 2 x 3"),
    ([np.ones((2, 6))[:, ::2]], np.ones((4, 2)), np.ones((4, 3)), np.empty((1, 4)), np.empty(1),
     "rows of `srcs\\[i\\]` must be contiguous"),
    (np.ones((2, 3)), np.ones((4, 3)), np.ones((4, 1)), np.empty((2, 4)), np.empty(2),
     r"source 0 is 1 x 3, but `u` and `v` are for 3 x 1"),      # a 2-D array: its rows are 1-D sources
    (5, np.ones((4, 2)), np.ones((4, 3)), np.empty((1, 4)), np.empty(1), "`srcs` must be a sequence"),
])
def test_proj_sq_refuses_bad_arguments_by_name(srcs, u, v, P, Q, match):
    before = P.copy()
    with pytest.raises((ValueError, TypeError), match=match):
        K.proj_sq(srcs, u, v, P, Q)
    np.testing.assert_array_equal(P, before)


@needs_kernels
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(0, 6), x=st.integers(0, 7), y=st.integers(0, 40), k=st.integers(1, 8),
       dtype=st.sampled_from([np.float64, np.float32]), pad=st.integers(0, 3),
       simd=st.sampled_from([0, -1]), seed=st.integers(0, 2 ** 16))
def test_proj_sq_halves_are_the_two_halves_projected_apart(m, x, y, k, dtype, pad, simd, seed):
    """``halves=True`` (packed complex results: the top x rows real parts, the rest imaginary
    parts) gives, bit for bit, the projections of each half taken as a source of its own,
    interleaved (top, bottom) as a complex128 array's values, and the two halves' sums of
    squares added."""
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((m, 2 * x, y + pad)).astype(dtype)
    srcs = [big[i, :, :y] for i in range(m)]                     # rows at a stride
    u, v = rng.standard_normal((k, x)), rng.standard_normal((k, y))
    P, Q = np.full((m, 2 * k), 7.0), np.full(m, 7.0)
    assert K.proj_sq(srcs, u, v, P, Q, simd=simd, halves=True) is None
    parts = [h for s in srcs for h in (s[:x], s[x:])]
    P2, Q2 = np.empty((2 * m, k)), np.empty(2 * m)
    K.proj_sq(parts, u, v, P2, Q2, simd=simd)
    np.testing.assert_array_equal(P[:, 0::2], P2[0::2])
    np.testing.assert_array_equal(P[:, 1::2], P2[1::2])
    np.testing.assert_array_equal(Q, Q2[0::2] + Q2[1::2])


@needs_kernels
@pytest.mark.parametrize("srcs, P, match", [
    ([np.ones((3, 3))], np.empty((1, 8)), r"source 0 is 3 x 3, but `u` and `v` are for 4 x 3 \(two halves of rows\)"),
    ([np.ones((4, 3))], np.empty((1, 4)), "`proj` must be a C-contiguous 1 x 8 float64 array"),
    ([np.ones(6)], np.empty((1, 8)), r"source 0 is 1 x 6, but `u` and `v` are for 4 x 3"),
])
def test_proj_sq_halves_refuses_sources_and_outputs_of_other_shapes(srcs, P, match):
    before = P.copy()
    with pytest.raises(ValueError, match=match):
        K.proj_sq(srcs, np.ones((4, 2)), np.ones((4, 3)), P, np.empty(1), halves=True)
    np.testing.assert_array_equal(P, before)


@needs_kernels
def test_proj_sq_refuses_outputs_that_overlap_what_it_reads_or_each_other():
    rng = np.random.default_rng(0)
    buf = rng.standard_normal(64)
    src, u, v = buf[:12].reshape(2, 6), rng.standard_normal((4, 2)), rng.standard_normal((4, 6))
    cases = [
        (buf[8:12].reshape(1, 4), np.empty(1), "`proj` overlaps a source"),
        (np.empty((1, 4)), buf[11:12], "`sq` overlaps a source"),
        (u.reshape(-1)[:4].reshape(1, 4), np.empty(1), "`proj` overlaps `u`"),
        (np.empty((1, 4)), v.reshape(-1)[5:6], "`sq` overlaps `v`"),
    ]
    P2 = np.empty(8)
    cases.append((P2[:4].reshape(1, 4), P2[3:4], "`proj` and `sq` overlap in memory"))
    for P, Q, match in cases:
        with pytest.raises(ValueError, match=match):
            K.proj_sq([src], u, v, P, Q)
    P, Q = buf[20:24].reshape(1, 4), buf[24:25]         # disjoint views of one array: fine
    K.proj_sq([src], u, v, P, Q)
    want, want_q, _ = _proj_reference([src], u, v)
    np.testing.assert_allclose(P, want, rtol=1e-12)


# --------------------------------------------------------------------------- wresid
# The consistency check's weighted residual (codedml/codes/_base.py, _residual_all): with
# B = diag(w) q0 and Z = diag(w) y, the largest |Z - P Z| (P the projector onto range(B))
# and the largest |Z|. It must agree with numpy's QR formula to the rounding of the
# products of that size, for complex and real bases, weights spread over many decades,
# bases of any rank (a zero column adds nothing to the range), NaN where anything is not
# finite, and refuse bad arguments by name.

def _wresid_reference(q0, w, y):
    Q, _ = np.linalg.qr(q0 * w[:, None])
    Z = y * w[:, None]
    return float(np.abs(Z - Q @ (np.conj(Q.T) @ Z)).max()), float(np.abs(Z).max())


def _wr(q0, w, y):
    c = lambda a: np.ascontiguousarray(a, dtype=np.complex128).view(np.float64)
    return K.wresid(c(q0), np.ascontiguousarray(w, dtype=np.float64), c(y))


@needs_kernels
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(r=st.integers(1, 24), dd=st.integers(0, 23), k=st.integers(1, 6), cplx=st.booleans(),
       spread=st.floats(0.0, 25.0), near=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_wresid_is_numpys_weighted_residual(r, dd, k, cplx, spread, near, seed):
    rng = np.random.default_rng(seed)
    d = 1 + dd % r
    M = rng.standard_normal((r, d)) + (1j * rng.standard_normal((r, d)) if cplx else 0)
    q0, _ = np.linalg.qr(M)                                  # orthonormal, as _Factors' Q
    y = rng.standard_normal((r, k)) + (1j * rng.standard_normal((r, k)) if cplx else 0)
    if near:                                                 # consistent up to a little noise
        y = q0 @ rng.standard_normal((d, k)) + 1e-9 * y
    w = 10.0 ** rng.uniform(-spread, spread, r)
    res, big = _wr(q0, w, y)
    want, want_big = _wresid_reference(q0, w, y)
    eps = np.finfo(np.float64).eps
    assert abs(big - want_big) <= 2 * eps * want_big
    if np.isnan(res):   # declined (numpy's path then): only for a weighted basis near rank loss
        assert np.linalg.cond(q0 * w[:, None]) > 1e9
        return
    # both are the residual to the rounding of products of |Z|'s size
    assert abs(res - want) <= 64 * (r + 2) * eps * want_big, (res, want, want_big)


@needs_kernels
def test_wresid_of_a_full_basis_is_zero_and_a_basis_of_lower_rank_is_nan():
    rng = np.random.default_rng(3)
    q0, _ = np.linalg.qr(rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6)))
    y = rng.standard_normal((6, 3)) + 1j * rng.standard_normal((6, 3))
    w = 10.0 ** rng.uniform(-8, 8, 6)
    res, big = _wr(q0, w, y)
    assert res <= 64 * 8 * np.finfo(np.float64).eps * big
    part = q0[:, :3].copy()
    for low in (np.concatenate([part, np.zeros((6, 1))], axis=1),     # a zero column
                np.concatenate([part, part[:, :1] * 2j], axis=1)):    # one twice
        res, big = _wr(low, w, y)
        assert np.isnan(res) and big == _wr(part, w, y)[1]


@needs_kernels
def test_wresid_is_nan_where_anything_is_not_finite():
    q0 = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 2)))[0]
    y, w = np.ones((5, 4)), np.ones(5)
    for bad_w, bad_y, want_big in [(np.inf, None, np.inf), (None, np.nan, np.nan),
                                   (None, np.inf, np.inf)]:
        ww, yy = w.copy(), y.copy()
        if bad_w is not None:
            ww[2] = bad_w
        if bad_y is not None:
            yy[3, 1] = bad_y
        res, big = _wr(q0, ww, yy)
        assert np.isnan(res)
        assert (np.isnan(big) if np.isnan(want_big) else big == want_big)
    q_bad = q0.copy()
    q_bad[1, 0] = np.nan
    assert np.isnan(_wr(q_bad, w, y)[0])


@needs_kernels
@pytest.mark.parametrize("q0, w, y, match", [
    (np.ones((3, 2), np.complex128), np.ones(3), np.ones((3, 2)), "`q0`, `w` and `y` must be float64"),
    (np.ones((3, 4)), np.ones(3, np.float32), np.ones((3, 2)), "`q0`, `w` and `y` must be float64"),
    (np.ones((3, 3)), np.ones(3), np.ones((3, 2)), r"even widths .* got 3 x 3, 3 and 3 x 2"),
    (np.ones((3, 4)), np.ones(2), np.ones((3, 2)), r"agree in r, .* got 3 x 4, 2 and 3 x 2"),
    (np.ones((3, 4)), np.ones(3), np.ones((2, 2)), r"agree in r, .* got 3 x 4, 3 and 2 x 2"),
    (np.ones((2, 6)), np.ones(2), np.ones((2, 2)), r"1 <= d <= r <= 4096 .* got r 2, d 3, k 1"),
    (np.ones((3, 0)), np.ones(3), np.ones((3, 2)), r"got r 3, d 0, k 1"),
    (np.ones((3, 8))[:, ::2], np.ones(3), np.ones((3, 2)), "must be 2-D and `w` 1-D, all C-contiguous"),
    (np.ones(4), np.ones(3), np.ones((3, 2)), "must be 2-D and `w` 1-D, all C-contiguous"),
])
def test_wresid_refuses_bad_arguments_by_name(q0, w, y, match):
    with pytest.raises((ValueError, TypeError), match=match):
        K.wresid(q0, w, y)


@needs_kernels
@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1),
       squares=st.booleans(), bad=st.sampled_from([None, np.nan, np.inf, -np.inf, 1e200]))
def test_cat_sq_is_the_concatenation_and_its_sum_of_squares(sizes, seed, squares, bad):
    """``cat_sq`` (the small decode's assembly): the sources' values one after the other, bit
    for bit, and the sum of their squares within a float64 sum's rounding; NaN/Inf in a
    source, or a square past float64's range (1e200), make the sum not finite."""
    rng = np.random.default_rng(seed)
    srcs = [rng.standard_normal(s) * 10.0 ** rng.integers(-3, 4) for s in sizes]
    if bad is not None and sum(sizes):
        i = next(j for j, s in enumerate(sizes) if s)
        srcs[i][rng.integers(sizes[i])] = bad
    dst = np.full(sum(sizes), 7.0)
    got = K.cat_sq(dst, srcs, squares)
    np.testing.assert_array_equal(dst, np.concatenate(srcs))
    if not squares:
        assert got == 0.0
    elif bad is not None and sum(sizes):
        assert not np.isfinite(got)
    else:
        want = sum(float(x) * float(x) for s in srcs for x in s)
        assert got == pytest.approx(want, rel=1e-13 * max(1, sum(sizes)), abs=0.0)


@needs_kernels
@pytest.mark.parametrize("dst, srcs, err, match", [
    (np.zeros(4, np.float32), [np.zeros(4)], TypeError, r"`dst` must be a C-contiguous float64"),
    (np.zeros((4, 2))[:, :1], [np.zeros(4)], TypeError, r"`dst` must be a C-contiguous float64"),
    (np.zeros(4), [np.zeros(2), np.zeros(2, np.float32)], TypeError, r"`srcs\[1\]` must be a C-contiguous float64"),
    (np.zeros(4), [np.zeros((4, 2))[:, 0]], TypeError, r"`srcs\[0\]` must be a C-contiguous float64"),
    (np.zeros(4), [np.zeros(3)], ValueError, r"the sources hold 3 values, `dst` 4"),
    (np.zeros(4), 5, TypeError, r"`srcs` must be a sequence of arrays"),
    (np.zeros(4), [np.zeros(1)] * 300, ValueError, r"at most 256 sources, got 300"),
])
def test_cat_sq_refuses_bad_arguments_by_name(dst, srcs, err, match):
    with pytest.raises(err, match=match):
        K.cat_sq(dst, srcs)


@needs_kernels
def test_cat_sq_refuses_a_source_that_overlaps_the_destination_and_a_read_only_one():
    buf = np.zeros(8)
    with pytest.raises(ValueError, match=r"`srcs\[1\]` and `dst` overlap in memory"):
        K.cat_sq(buf[:4], [np.zeros(2), buf[3:5]])
    ro = np.zeros(4)
    ro.setflags(write=False)
    with pytest.raises((ValueError, BufferError), match="read-only|not writable|writable"):
        K.cat_sq(ro, [np.zeros(4)])
    assert not ro.any()


_RO = np.zeros(4)
_RO.setflags(write=False)


@needs_kernels
@pytest.mark.parametrize("call, err, match", [
    (lambda: K.copy_sq([1.0], np.zeros(1)), TypeError, r"copy_sq: `dst` must be an array, got list"),
    (lambda: K.copy_sq(np.zeros(2), "ab"), TypeError, r"copy_sq: `src` must be an array, got str"),
    (lambda: K.copy_sq(np.zeros(1), np.zeros(1), sq=[0.0]), TypeError, r"copy_sq: `sq` must be an array"),
    (lambda: K.copy_sq(_RO, np.zeros(4)), ValueError, r"copy_sq: `dst` must be a writable array"),
    (lambda: K.copy_i64(np.zeros(1, np.int64), np.zeros(1, np.int64), wide=[1.0]), TypeError,
     r"copy_i64: `wide` must be an array, got list"),
    (lambda: K.mod_store(np.zeros(1, np.int64), [1.0], 7), TypeError,
     r"mod_store: `src` must be an array, got list"),
    (lambda: K.proj_sq([np.zeros((2, 2))], np.zeros((1, 2)), np.zeros((1, 2)), _RO[:1].reshape(1, 1),
                       np.zeros(1)), ValueError, r"proj_sq: `proj` must be a writable array"),
    (lambda: K.wresid(np.zeros((2, 2)), [1.0, 1.0], np.zeros((2, 2))), TypeError,
     r"wresid: `w` must be an array, got list"),
])
def test_kernels_name_the_argument_that_is_not_an_array_or_not_writable(call, err, match):
    """An argument that exports no buffer (a list, a str) or a read-only destination: the
    error names the kernel and the argument, where the exporter's own message ("a
    bytes-like object is required") named neither."""
    with pytest.raises(err, match=match):
        call()
