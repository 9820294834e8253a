"""Compensated worker products (codedml/codes/_eft.py) against exact rational arithmetic.

The property that matters: ``compensated_matmul(a, b)`` is within one rounding of the exact
product plus ``2^-bits`` of a plain GEMM's error bound, entry by entry, whatever the inner
dimension, row scales or signs; its head
product ``a1 @ b1`` is exact in float64; the worker runs it when the root asks; and torch runs
the same arithmetic.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codedml.backends import NumpyBackend, available_backends, get_backend
from codedml.codes._eft import _column_peak, _round_to, _unit, compensated_matmul, split_bits
from codedml.runtime._worker import WorkerState
from codedml.runtime.protocol import Op, Request

EPS = np.finfo(np.float64).eps


def _exact(a: np.ndarray, b: np.ndarray) -> list[list[complex]]:
    """The exact product in rationals (real and imaginary parts apart), as nested lists."""
    b2 = b[:, None] if b.ndim == 1 else b

    def parts(x):
        return ([[Fraction(float(v)) for v in row] for row in np.real(x)],
                [[Fraction(float(v)) for v in row] for row in np.imag(x)] if np.iscomplexobj(x) else None)

    ar, ai = parts(a)
    br, bi = parts(b2)
    out = []
    for i in range(a.shape[0]):
        row = []
        for j in range(b2.shape[1]):
            re = sum(ar[i][t] * br[t][j] for t in range(a.shape[1]))
            im = Fraction(0)
            if ai is not None and bi is not None:
                re -= sum(ai[i][t] * bi[t][j] for t in range(a.shape[1]))
            if ai is not None:
                im += sum(ai[i][t] * br[t][j] for t in range(a.shape[1]))
            if bi is not None:
                im += sum(ar[i][t] * bi[t][j] for t in range(a.shape[1]))
            row.append((re, im))
        out.append(row)
    return out


def _check_within_one_rounding(r: np.ndarray, a: np.ndarray, b: np.ndarray, slack: float = 2.0) -> None:
    """Every entry within ``slack`` ulps of the exact product, plus ``2^-bits`` of a plain
    GEMM's error bound ``eps |a| |b|`` (what the rounded cross terms may leave)."""
    ex = _exact(a, b)
    r2 = r[:, None] if r.ndim == 1 else r
    bits = split_bits(a.shape[1] * (2 if np.iscomplexobj(a) or np.iscomplexobj(b) else 1))
    bound = np.abs(a) @ np.abs(b[:, None] if b.ndim == 1 else b) * EPS * 2.0 ** (2 - bits)
    for i in range(r2.shape[0]):
        for j in range(r2.shape[1]):
            re, im = ex[i][j]
            for got, want in ((np.real(r2[i, j]), re), (np.imag(r2[i, j]), im)):
                err = abs(Fraction(float(got)) - want)
                tol = Fraction(slack * EPS / 2) * abs(want) + Fraction(float(bound[i, j]))
                assert err <= tol, (f"entry ({i}, {j}): error {float(err):.3g} > "
                                    f"{float(tol):.3g} (exact {float(want):.6g})")


def _plain_error_ulps(a, b):
    ex = _exact(a, b)
    r = a @ b
    return max(abs(Fraction(float(r[i, j])) - ex[i][j][0]) / (Fraction(EPS / 2) * abs(ex[i][j][0]))
               for i in range(r.shape[0]) for j in range(r.shape[1]) if ex[i][j][0] != 0)


def test_head_product_is_exact_at_the_largest_inner_dimension_of_its_bits():
    """``split_bits(4096) = 20``: heads of 20 bits on one grid per row / column, so ``a1 @ b1``
    sums 4096 integers below 2^40 each -- exactly, in any order, also for rows of very
    different scales."""
    rng = np.random.default_rng(0)
    inner = 4096
    bits = split_bits(inner)
    assert bits == 20
    a = rng.standard_normal((3, inner)) * np.array([[2.0 ** 40], [1.0], [2.0 ** -40]])
    b = rng.standard_normal((inner, 2))
    a1 = _round_to(a.T, _unit(_column_peak(a.T), bits)).T
    b1 = _round_to(b, _unit(_column_peak(b), bits))
    assert np.all(a - a1 != a)  # the head really dropped bits of every row
    got = a1 @ b1
    for i in range(3):
        for j in range(2):
            exact = sum(Fraction(float(a1[i, t])) * Fraction(float(b1[t, j])) for t in range(inner))
            assert Fraction(float(got[i, j])) == exact


def test_compensated_is_one_rounding_where_plain_is_many():
    """Inner dimension 2000 with cancellation: plain float64 is tens of ulps off on some
    entries; the compensated product is within 2 ulps of the exact one everywhere."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 2000))
    b = rng.standard_normal((2000, 3))
    assert _plain_error_ulps(a, b) > 8
    _check_within_one_rounding(compensated_matmul(a, b), a, b)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), inner=st.integers(1, 40), cols=st.integers(1, 4),
       cplx=st.booleans(), vector=st.booleans(), seed=st.integers(0, 2 ** 32 - 1),
       scale=st.integers(-60, 60), zero_row=st.booleans())
def test_compensated_matmul_property(rows, inner, cols, cplx, vector, seed, scale, zero_row):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, inner)) * 2.0 ** rng.integers(-scale - 1, abs(scale) + 1, size=(rows, 1))
    b = rng.standard_normal((inner,) if vector else (inner, cols))
    if cplx:
        a = a + 1j * rng.standard_normal(a.shape)
        b = b + 1j * rng.standard_normal(b.shape)
    if zero_row:
        a[0] = 0
    r = compensated_matmul(a, b)
    assert r.shape == (a @ b).shape and r.dtype == (a @ b).dtype
    _check_within_one_rounding(r, a, b)


def test_compensated_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"matching b, got \(2, 3\) and \(4,\)"):
        compensated_matmul(np.ones((2, 3)), np.ones(4))
    with pytest.raises(ValueError, match=r"matching b, got \(2, 3\) and \(\)"):
        compensated_matmul(np.ones((2, 3)), np.float64(2.0))


def test_huge_rows_stay_finite():
    """Rows near the top of the float64 range would overflow the rounding constant of their
    grid; the grid is capped there, and the product is as good as a plain one."""
    a, b = np.array([[1e305, 1.0], [3.0, -2.0]]), np.array([[1e-300], [1.0]])
    r = compensated_matmul(a, b)
    assert np.isfinite(r).all()
    np.testing.assert_allclose(r, a @ b, rtol=4 * EPS)
    if "torch" in available_backends():
        bk = get_backend("torch")
        np.testing.assert_allclose(bk.to_numpy(bk.matmul_compensated(a, b)), a @ b, rtol=4 * EPS)


@pytest.mark.skipif("torch" not in available_backends(), reason="torch is not installed")
@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("vector", [False, True])
def test_torch_backend_runs_the_same_arithmetic(cplx, vector):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 700)) * np.array([[1e30], [1.0], [1e-30], [3.0], [0.0]])
    b = rng.standard_normal((700,) if vector else (700, 3))
    if cplx:
        a, b = a + 1j * rng.standard_normal(a.shape), b + 1j * rng.standard_normal(b.shape)
    bk = get_backend("torch")
    r = bk.to_numpy(bk.matmul_compensated(a, b))
    _check_within_one_rounding(r, a, b)
    np.testing.assert_allclose(r, compensated_matmul(a, b), rtol=2 * EPS, atol=0)


def test_worker_computes_compensated_only_when_asked():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 900)), rng.standard_normal((900, 5))
    state = WorkerState(1, NumpyBackend())
    comp = state.handle(Request(Op.MATMUL, 0, None, None, True), [a, b])
    plain = state.handle(Request(Op.MATMUL, 1, None, None, False), [a, b])
    assert np.array_equal(comp, compensated_matmul(a, b))
    assert np.array_equal(plain, a @ b)
    assert not np.array_equal(comp, plain)
