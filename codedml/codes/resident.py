"""Products against an operand stored *row-encoded* with an MDS code, from either side.

An operand ``W`` (``M x N``) stored with :class:`~codedml.codes.MDSCode` ``(n, k)`` gives
worker ``w`` the block ``a_w = sum_i W_i x_w^i`` of the ``k`` row blocks ``W_i`` (on the unit
circle, packed as ``[Re a_w; Im a_w]`` with ``a_w = sum_i Z_i x_w^i`` and ``Z_i = W_i' + 1j
W_i''`` the two row halves of ``W_i``; see :mod:`codedml.codes.polydot`).

* ``W @ X`` is the code's own product: the worker computes ``a_w @ X``; threshold ``k``.
* ``L @ W`` splits the *inner* dimension (the rows of ``W``), MatDot-style (Dutta et al. 2019):
  the root sends worker ``w`` its own ``Lt_w = sum_i L_i x_w^(k-1-i)`` (``L_i`` the column
  blocks of ``L`` that meet ``W_i``), the worker computes ``Lt_w @ a_w``, and the coefficient of
  ``x^(k-1)`` in that degree-``2k-2`` matrix polynomial is ``sum_i L_i W_i = L W``. Recovery
  threshold ``2k - 1``, decoded by :class:`~codedml.codes.MatDotCode` ``(n, k)`` on the same
  points. Stored with ``systematic=True`` (``a_w = sum_i W_i l_i(x_w)``, ``l_i`` the Lagrange
  basis on the systematic points ``alpha_i``), the root sends ``Lt_w = sum_i L_i l_i(x_w)``
  instead: ``Lt_w @ a_w`` evaluates ``p_L(x) p_W(x)``, of degree ``2k - 2``, whose values at
  the ``alpha_i`` are ``L_i W_i``, so the systematic workers' products sum to ``L W`` and any
  ``2k - 1`` products determine it: systematic MatDot (Dutta et al. 2019), decoded by
  ``MatDotCode(n, k, systematic=True)`` on the same points. On the circle ``Lt_w = sum_i
  conj(E_i) x_w^(k-1-i)`` (or ``l_i(x_w)``) with ``E_i = L_i' + 1j L_i''``,
  since ``Re(conj(E_i) Z_i) = L_i' W_i' + L_i'' W_i'' = L_i W_i``; the complex product is sent as
  the real ``[[Re Lt, -Im Lt], [Im Lt, Re Lt]]`` so the worker multiplies real matrices against
  its real stored block: twice the flops of the forward product, the cost MatDot documents.

One stored encoding thus serves both products (the forward and backward products of a linear
layer), at the price of the higher threshold on the left; ``n >= 2k - 1`` is required.

For ``W`` stored with :class:`~codedml.codes.ReplicationCode` ``(n, k)`` (``k = n``: uncoded
model parallelism) worker ``w`` holds the plain block ``W_(w mod k)``, computes
``L_(w mod k) @ W_(w mod k)`` and the root sums one copy of each block's product
(:class:`LeftReplicationCode`): no redundancy beyond the replicas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigurationError
from . import _gfp
from ._base import Encoding, LinearCode, Task
from ._validate import real_matrix, residues
from .polydot import MatDotCode, MDSCode, _ceil_to
from .replication import ReplicationCode

__all__ = ["LeftProductCode", "LeftReplicationCode", "encode_left"]


class _Left:
    """A decoder of ``L @ W`` is known by the code ``W`` is stored with (``self.stored``)."""

    stored: LinearCode

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.stored == other.stored  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("left", self.stored))

    def _output_multiples(self, ndim: int) -> tuple[int, ...]:
        return (1,) * ndim  # L @ W: rows of L and columns of W, neither split


class LeftProductCode(_Left, MatDotCode):
    """The decoder of ``L @ W`` for ``W`` stored with ``MDSCode(n, k)``: MatDot ``(n, k)``.

    On the circle a worker returns the real ``[Re P; Im P]`` of its complex product ``P``
    (``2B x N`` for ``B`` rows of ``L``); :meth:`_unpack` turns it back into ``P``.
    """

    def __init__(self, stored: MDSCode) -> None:
        if not isinstance(stored, MDSCode):
            raise ConfigurationError(f"`stored` must be an MDSCode, got {stored!r}")
        k = stored.p
        if 2 * k - 1 > stored.workers:
            raise ConfigurationError(
                f"a product from the left needs 2k - 1 <= workers: k={k} gives threshold "
                f"{2 * k - 1} > workers={stored.workers}; use k <= {(stored.workers + 1) // 2}")
        construction = stored.construction if stored.field is None else "circle"
        super().__init__(stored.workers, k, field=stored.field, construction=construction,
                         systematic=stored.systematic)
        self.stored = stored

    def _params(self) -> str:
        return f"stored={self.stored!r}"

    def _unpack(self, R: np.ndarray) -> list[np.ndarray]:
        if self._packed and not np.iscomplexobj(R):
            h = R.shape[0] // 2
            return [R[:h] + 1j * R[h:]]
        return [R]


class LeftReplicationCode(_Left, ReplicationCode):
    """The decoder of ``L @ W`` for ``W`` stored with ``ReplicationCode(n, k)``: the sum of one
    (consistent) copy of each block's product ``L_j W_j``."""

    def __init__(self, stored: ReplicationCode) -> None:
        super().__init__(stored.workers, stored.k, field=stored.field)
        self.stored = stored

    def __repr__(self) -> str:
        return f"LeftReplicationCode(stored={self.stored!r})"

    def _assemble(self, X: list[np.ndarray], shape: tuple[int, ...] | None) -> np.ndarray:
        if self.field is not None:
            C = np.zeros(X[0].shape[1:], dtype=np.int64)
            for blk in X[0]:
                C = (C + np.asarray(blk, dtype=np.int64)) % self.field
        else:
            C = X[0].sum(axis=0)
        if shape is not None:
            C = C[tuple(slice(0, s) for s in shape)]
        return np.ascontiguousarray(C)


def encode_left(stored: MDSCode | ReplicationCode, L: Any, N: int, *, dtype: Any = np.float64,
                norms: Any = None, input_dtype: Any = np.float64,
                precision: str = "auto") -> tuple[LinearCode, Encoding]:
    """Per-worker left operands for ``L @ W`` with ``W`` (``M x N``) stored under ``stored``.

    Parameters
    ----------
    stored : MDSCode
        The code ``W`` is stored with.
    L : array
        ``B x M``.
    N : int
        Columns of ``W`` (the product's columns).
    dtype : dtype
        The stored blocks' dtype (real field): the left operands get the same.
    norms : sequence of float, optional
        Frobenius norms (or bounds) of the stored blocks, for the decoder's noise model.
    input_dtype : dtype
        The dtype the stored operand arrived in.
    precision : str
        The stored operand's ``precision`` (see :meth:`~codedml.codes.LinearCode.encode`):
        under ``"auto"``, float64 operands of a left product whose worst case needs it get
        compensated worker products; ``"compensated"`` always, otherwise never.

    Returns
    -------
    (LeftProductCode, Encoding)
        The decoder and the encoding, whose task ``w`` has ``a`` = worker ``w``'s left operand
        and ``b = None`` (the worker multiplies ``a`` by its stored block).
    """
    p = stored.field
    L = residues("L", L, p) if p is not None else real_matrix("L", L)
    if L.ndim != 2:
        raise ConfigurationError(f"`L` must be a 2-D array, got shape {L.shape}")
    if isinstance(stored, ReplicationCode):
        return _encode_left_replicated(stored, L, N, dtype, norms, (input_dtype, precision))
    if not isinstance(stored, MDSCode):
        raise ConfigurationError(f"`stored` must be an MDSCode or a ReplicationCode, got {stored!r}")
    code = LeftProductCode(stored)
    k, n = stored.p, stored.workers
    B, M = L.shape
    packed = stored.field is None and stored.construction == "circle"
    Mp = _ceil_to(M, k * (2 if packed else 1))
    Lp = np.zeros((B, Mp), dtype=np.int64 if p is not None else np.float64)
    Lp[:, :M] = L
    rb = Mp // k
    if stored.systematic:
        # W_i's Lagrange weights l_i(x_w) on L_i too (systematic MatDot, Dutta et al.): the
        # worker's product is p_L(x_w) p_W(x_w), whose values at the systematic points sum to L W
        G = stored._generator()                                     # (n, k): l_i(x_w)
    else:
        G = stored._powers(k - 1 - np.arange(k))                    # (n, k): x_w^(k-1-i)
    if p is not None:
        blocks = Lp.reshape(B, k, rb).transpose(1, 0, 2).reshape(k, B * rb)
        lt = _gfp.matmul_mod(G, blocks, p).reshape(n, B, rb)
        ops = [lt[w] for w in range(n)]
        out_dtype = np.dtype(np.int64)
    elif packed:
        h = rb // 2
        blk = Lp.reshape(B, k, 2, h)
        E = np.conj(blk[:, :, 0] + 1j * blk[:, :, 1]).transpose(1, 0, 2)   # (k, B, h): conj(E_i)
        lt = (G @ E.reshape(k, B * h)).reshape(n, B, h)
        out_dtype = np.dtype(dtype)
        ops = [np.block([[lt[w].real, -lt[w].imag], [lt[w].imag, lt[w].real]]).astype(out_dtype)
               for w in range(n)]
    else:
        blocks = Lp.reshape(B, k, rb).transpose(1, 0, 2).reshape(k, B * rb)
        lt = (G.real @ blocks).reshape(n, B, rb)
        out_dtype = np.dtype(dtype)
        ops = [lt[w].astype(out_dtype) for w in range(n)]
    return code, _record(code, ops, (B, N), rb, out_dtype, norms, (input_dtype, precision))


def _encode_left_replicated(stored: ReplicationCode, L: np.ndarray, N: int, dtype: Any,
                            norms: Any, prec: tuple[Any, str]) -> tuple[LeftReplicationCode, Encoding]:
    code = LeftReplicationCode(stored)
    k, n, p = stored.k, stored.workers, stored.field
    B, M = L.shape
    rb = -(-M // k)                                   # ReplicationCode's row split
    Lp = np.zeros((B, rb * k), dtype=np.int64 if p is not None else np.float64)
    Lp[:, :M] = L
    out_dtype = np.dtype(np.int64) if p is not None else np.dtype(dtype)
    ops = [np.ascontiguousarray(Lp[:, (w % k) * rb:(w % k + 1) * rb]).astype(out_dtype) for w in range(n)]
    return code, _record(code, ops, (B, N), rb, out_dtype, norms, prec)


def _record(code: LinearCode, ops: list[np.ndarray], shape: tuple[int, int], inner: int,
            dtype: np.dtype, norms: Any, prec: tuple[Any, str]) -> Encoding:
    """The Encoding of a left product; ``prec`` is the stored operand's (input dtype, precision)."""
    n = code.workers
    comp = code.compensates(np.dtype(prec[0]), dtype, prec[1])
    tasks = [Task(w, ops[w], None, code.field, comp) for w in range(n)]
    scales = None
    if code.field is None:
        stored_norms = np.ones(n) if norms is None else np.asarray(norms, dtype=np.float64)
        scales = np.array([float(np.linalg.norm(o)) for o in ops]) * stored_norms
    return Encoding(code, tasks, shape, inner, dtype, comp, scales=scales)
