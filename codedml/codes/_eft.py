"""Error-free splitting: products carried to ~20 bits beyond float64 with plain BLAS.

One level of the scheme of Ozaki, Ogita, Oishi and Rump (2012): a matrix is cut into a *head*
on a coarse power-of-two grid (a few leading bits of every entry, one grid per row or column)
and an exact *tail*. Products of two heads are sums of small integers on one grid per dot
product, which BLAS forms exactly in any summation order; the products that involve a tail are
``2^-bits`` smaller, so their float64 rounding is too. No extended-precision type is needed,
so the same arithmetic runs on numpy, torch and CUDA.

Two uses:

* :func:`compensated_matmul`: a worker's ``a @ b`` with an error of about one rounding of the
  result plus ``2^-bits`` of a plain GEMM's (instead of ``eps |a| |b|`` grown with the inner
  dimension), in three GEMMs. Codes
  whose worst decode amplifies the workers' rounding by more than
  :data:`~codedml.codes._base.COMPENSATE_MIN_CONDITION` ask for it (``precision="auto"``).
* :func:`_residual`: the decoder's ``E - M X`` for one step of iterative refinement.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["compensated_matmul", "split_bits"]


def split_bits(terms: int) -> int:
    """Bits of a head such that a dot product of ``terms`` head-by-head products is exact:
    ``2 bits + ceil(log2 terms) <= 53`` (every term is an integer below ``2^(2 bits)`` on one
    grid, and so is every partial sum). A complex product has 2 real terms per inner index."""
    return (53 - math.ceil(math.log2(max(2, int(terms))))) // 2


def _round_to(x: np.ndarray, unit: Any) -> np.ndarray:
    """``x`` rounded to the nearest multiple of ``unit`` (powers of two; a scalar or one per
    column of ``x``): ``(x + sigma) - sigma`` with ``sigma = 1.5 * 2^52 * unit``, exact as long
    as ``|x| <= 2^50 unit``."""
    cplx = np.iscomplexobj(x)
    unit = np.broadcast_to(np.asarray(unit, dtype=np.float64), x.shape[-1:])
    if cplx:
        x = np.ascontiguousarray(x, dtype=np.complex128).view(np.float64)
        unit = np.repeat(unit, 2)
    sigma = 1.5 * 2.0 ** 52 * unit
    y = x + sigma
    y -= sigma
    return y.view(np.complex128) if cplx else y


#: Largest grid exponent: ``sigma = 1.5 * 2^52 * 2^970`` is still finite. Rows above about
#: 2^(970 + bits) (1e298) get a finer grid than their bits need: their head keeps more bits,
#: and their product is no better than a plain one (but finite where it is).
_MAX_UNIT_EXP = 970


def _unit(peak: Any, bits: int) -> np.ndarray:
    """``2^(e - bits)`` with ``peak < 2^e`` (``frexp``'s exponent): the grid that keeps ``bits``
    bits of ``peak``; a head on it is at most ``2^bits`` units in magnitude."""
    peak = np.asarray(peak, dtype=np.float64)
    ok = np.isfinite(peak) & (peak > 0)
    _, e = np.frexp(np.where(ok, peak, 1.0))
    return np.ldexp(1.0, np.minimum(e - bits, _MAX_UNIT_EXP))


def _column_peak(x: np.ndarray) -> np.ndarray:
    """Per column of a 2-D ``x``, the largest magnitude of a real or imaginary part."""
    if np.iscomplexobj(x):
        f = np.ascontiguousarray(x, dtype=np.complex128).view(np.float64)
        return np.abs(f).max(axis=0).reshape(-1, 2).max(axis=1)
    return np.abs(x).max(axis=0)


def compensated_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64/complex128, ``2^bits`` times more accurate than one GEMM.

    ``a = a1 + a2`` with ``a1`` the head of each row of ``a`` and ``b = b1 + b2`` with ``b1``
    the head of each column of ``b`` (:func:`split_bits` bits, so ``a1 @ b1`` is exact), then
    ``a @ b = a1 @ b1 + (a @ b2 + a2 @ b1)``: the bracket's terms are ``2^-bits`` the size of
    ``|a| |b|``, and so is their rounding. The error is one rounding of the result plus about
    ``2^-bits`` times a plain GEMM's error bound ``n eps |a| |b|`` (20 bits at inner dimension
    4096): within 2 ulp of the exact product unless the entry itself cancels heavily
    (``tests/test_eft.py``), where plain float64 is off by ``~sqrt(inner)`` ulp and more.
    Three GEMMs instead of one. ``b`` may be a vector. Non-finite entries give non-finite
    results (an Inf may come out as NaN).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    wide = np.result_type(a.dtype, b.dtype, np.float64)
    a = a.astype(wide, copy=False)
    if b.ndim not in (1, 2):
        raise ValueError(f"compensated_matmul needs a 2-D a and a matching b, got {a.shape} and {b.shape}")
    vec = b.ndim == 1
    b2d = (b[:, None] if vec else b).astype(wide, copy=False)
    if a.ndim != 2 or a.shape[1] != b2d.shape[0]:
        raise ValueError(f"compensated_matmul needs a 2-D a and a matching b, got {a.shape} and {b.shape}")
    bits = split_bits(a.shape[1] * (2 if np.iscomplexobj(a) or np.iscomplexobj(b2d) else 1))
    a1 = _round_to(a.T, _unit(_column_peak(a.T), bits)).T if a.size else a.copy()
    b1 = _round_to(b2d, _unit(_column_peak(b2d), bits)) if b2d.size else b2d.copy()
    a2 = a - a1                                     # exact
    b2 = b2d - b1
    out = a1 @ b1                                   # exact
    rest = a @ b2
    rest += a2 @ b1
    out += rest
    return out[:, 0] if vec else out


class _Split:
    """A small matrix ``M`` as ``M1 + M2`` with ``M1`` on one grid of ``bits`` bits, exactly.

    ``bits`` is chosen so that products of two such slices are exact and the sum of the
    ``terms`` real products behind one entry of ``M1 @ X1`` (2 per column of a complex ``M``)
    stays below 2^53 (23 bits for 25 complex unknowns; see :func:`split_bits`).
    """

    def __init__(self, M: np.ndarray) -> None:
        self.bits = split_bits(max(1, M.shape[1] * (2 if np.iscomplexobj(M) else 1)))
        peak = float(_column_peak(M).max()) if M.size else 0.0
        self.M = M
        self.M1 = _round_to(M, _unit(peak, self.bits))
        self.M2 = M - self.M1                            # exact


def _residual(M: _Split, X: np.ndarray, E: np.ndarray) -> np.ndarray:
    """``E - M X`` with an error of about ``2^-20 eps |M| |X|`` instead of ``eps |M| |X|``.

    ``M1`` and ``X1`` keep the leading ``M.bits`` bits of ``M`` (one grid for the whole
    matrix) and of each column of ``X``, so ``M1 X1`` is exact (see :class:`_Split`). ``E - M1
    X1`` then loses nothing that matters, and the rest, ``M X2 + M2 X1`` with ``X2 = X - X1``
    (exact), is ``2^-bits`` smaller, so its float64 rounding is too. Three small GEMMs.
    """
    X1 = _round_to(X, _unit(_column_peak(X), M.bits))
    X2 = X - X1
    r = M.M1 @ X1
    np.subtract(E, r, out=r)
    rest = M.M @ X2
    rest += M.M2 @ X1
    r -= rest
    return r
