"""Straightforward reference encodes: the generator contracted with the stacked data blocks.

What ``code.encode`` computes, written the plain way: pad the inputs, stack the data blocks
(complex-packed where the circle construction packs them), ``np.tensordot(G, blocks, 1)``
with the code's generator ``G`` (its powers ``x_w^e``, or the systematic generator), unpack to
the task layout and cast to the operand dtype. No chunking, no views, one large temporary per
step. Tests check the fast kernels in :mod:`codedml.codes.polydot` and
:mod:`codedml.codes.gradient` against it; ``benchmarks/encode.py`` times it as the *plain
tensordot encode* the fast kernels must never be slower than.

Over GF(p) the contraction is exact in ``int64`` as long as ``k (p - 1)^2 < 2^63`` (``k``
blocks); :func:`reference_encode` refuses larger primes rather than overflow silently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = ["reference_encode"]


def _pad(X: np.ndarray, mults: tuple[int, ...]) -> np.ndarray:
    shape = tuple(max(m, -(-s // m) * m) for s, m in zip(X.shape, mults))
    out = np.zeros(shape, dtype=X.dtype)
    out[tuple(slice(0, s) for s in X.shape)] = X
    return out


def reference_encode(code: Any, A: Any, B: Any, precision: str = "auto") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per worker ``(a_w, b_w)`` as ``code.encode(A, B, precision=precision)`` defines them.

    Supports :class:`~codedml.codes.PolyDotCode` (and its special cases, every construction,
    systematic or not, reals and GF(p)) and :class:`~codedml.codes.GradientCode`.
    """
    from .gradient import GradientCode
    from .polydot import PolyDotCode

    if isinstance(code, GradientCode):
        return _gradient(code, A, B, precision)
    if isinstance(code, PolyDotCode):
        return _polydot(code, A, B, precision)
    raise ConfigurationError(f"`code` must be a PolyDotCode or GradientCode, got {type(code).__name__}")


def _polydot(code: Any, A: Any, B: Any, precision: str) -> list[tuple[np.ndarray, np.ndarray]]:
    p, m, q, n, P = code.p, code.m, code.q, code.workers, code.field
    A = np.asarray(A)
    B = np.asarray(B)
    vec = B.ndim == 1
    sysA = code.systematic
    sysB = code.systematic and m > 1
    GA = code._generator() if sysA else code._powers(code._exp_a())
    GB = code._generator() if sysB else code._powers(code._exp_b())
    if P is not None:
        if max(p * m, m * q) * (P - 1) ** 2 >= 2 ** 63:
            raise ConfigurationError(
                f"`code.field` must keep k (p - 1)^2 below 2^63 for the int64 reference, got {P}")
        A, B = A.astype(np.int64), B.astype(np.int64)
        dtype = cdt = np.dtype(np.int64)
    else:
        dtype = code._operand_dtype(np.result_type(A.dtype, B.dtype), precision)
        cdt = np.dtype(np.complex64 if dtype == np.float32 else np.complex128)
        A, B = A.astype(np.float64), B.astype(np.float64)

    def contract(G: np.ndarray, D: np.ndarray) -> np.ndarray:
        if P is None:
            return np.tensordot(G, D, axes=1)
        return np.tensordot(G % P, D, axes=1) % P

    if code._packed and m == 1:
        colm = 2 * q if (not vec and q > 1) else 1
        Ap = _pad(A, (2 * p, 1))
        h = Ap.shape[0] // (2 * p)
        X = Ap.reshape(p, 2, h, -1)
        a = contract(GA, X[:, 0] + 1j * X[:, 1])                      # (n, h, N)
        ta = np.concatenate([a.real, a.imag], axis=1).astype(dtype)   # (n, 2h, N)
        if vec or q == 1:
            tb = B.astype(dtype)
            return [(ta[w], tb) for w in range(n)]
        Bp = _pad(B, (1, colm))
        hb = Bp.shape[1] // (2 * q)
        Y = Bp.reshape(Bp.shape[0], q, 2, hb)
        Z = (Y[:, :, 0] + 1j * Y[:, :, 1]).transpose(1, 0, 2)          # (q, N, hb)
        b = contract(GB, Z)                                            # (n, N, hb)
        tb = np.concatenate([b.real, b.imag], axis=2).astype(dtype)
        return [(ta[w], tb[w]) for w in range(n)]
    inner = 2 * m if code._packed else m
    Ap = _pad(A, (p, inner))
    Bp = _pad(B, (inner,) if vec else (inner, q))
    rb = Ap.shape[0] // p
    nb = Ap.shape[1] // inner
    if code._packed:  # m > 1 on the circle: inner pairs packed, complex tasks
        X = Ap.reshape(p, rb, m, 2, nb)
        DA = (X[:, :, :, 0] + 1j * X[:, :, :, 1]).transpose(0, 2, 1, 3).reshape(p * m, rb, nb)
        if vec:
            Y = Bp.reshape(m, 2, nb)
            DB = Y[:, 0] - 1j * Y[:, 1]                                # (m, nb)
        else:
            cb = Bp.shape[1] // q
            Y = Bp.reshape(m, 2, nb, q, cb)
            DB = (Y[:, 0] - 1j * Y[:, 1]).transpose(0, 2, 1, 3).reshape(m * q, nb, cb)
        out = cdt
    else:
        DA = Ap.reshape(p, rb, m, nb).transpose(0, 2, 1, 3).reshape(p * m, rb, nb)
        if vec:
            DB = Bp.reshape(m, nb)
        else:
            cb = Bp.shape[1] // q
            DB = Bp.reshape(m, nb, q, cb).transpose(0, 2, 1, 3).reshape(m * q, nb, cb)
        out = dtype
    if P is None and not code._packed:
        GA, GB = GA.real, GB.real
    ta = contract(GA, DA).astype(out)
    if not sysB and m == 1 and q == 1:
        tb = DB[0].astype(out)      # G is a column of ones: every worker shares B
        return [(ta[w], tb) for w in range(n)]
    tb = contract(GB, DB).astype(out)
    return [(ta[w], tb[w]) for w in range(n)]


def _gradient(code: Any, A: Any, B: Any, precision: str) -> list[tuple[np.ndarray, np.ndarray]]:
    n, P = code.workers, code.field
    A = np.asarray(A)
    B = np.asarray(B)
    N = A.shape[1]
    nb = math.ceil(N / n)
    if P is None:
        dtype = code._operand_dtype(np.result_type(A.dtype, B.dtype), precision)
        Ap = _pad(A.astype(np.float64), (1, n))
    else:
        dtype = np.dtype(np.int64)
        Ap = _pad(A.astype(np.int64), (1, n))
    Bp = _pad(B, (n,) + (1,) * (B.ndim - 1))
    Ab = Ap.reshape(A.shape[0], n, nb).transpose(1, 0, 2)               # (n, M, nb)
    Bb = Bp.reshape((n, nb) + B.shape[1:])
    pairs = []
    for w in range(n):
        parts = list(code.partitions(w))
        coef = code.coefficients[w, parts]
        a = Ab[parts].transpose(1, 0, 2).reshape(A.shape[0], -1)
        c = coef.reshape((-1,) + (1,) * B.ndim)
        if P is None:
            b = (c * Bb[parts].astype(np.float64)).reshape((-1,) + B.shape[1:])
        else:
            b = ((c * Bb[parts].astype(np.int64)) % P).reshape((-1,) + B.shape[1:])
        pairs.append((a.astype(dtype), b.astype(dtype)))
    return pairs
