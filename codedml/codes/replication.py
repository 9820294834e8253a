"""Replication baseline (replication 1 = uncoded) with the common code interface.

``A`` is split into ``k`` row blocks; worker ``w`` computes block ``w mod k`` times ``B``, so
block ``j`` has ``r_j = |{w : w mod k = j}|`` replicas. The recovery threshold (the number of
results that *guarantees* every block is present, whatever the arrival order) is
``n - min_j r_j + 1``; decoding succeeds earlier whenever every block happens to be covered.
With ``2e + 1`` replicas of each block present, ``e`` corrupt results are outvoted.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from . import _pool
from ._base import DecodeInfo, LinearCode, _valid_results, check_rtol
from ._validate import check_field, check_int, owned, real_matrix, residues

__all__ = ["ReplicationCode"]


class ReplicationCode(LinearCode):
    """Each of ``k`` row blocks of ``A`` is computed by ``about n/k`` workers.

    Parameters
    ----------
    workers : int
        Number of workers ``n``.
    k : int
        Number of row blocks, ``1 <= k <= n``; ``k = n`` is the uncoded baseline.
    field : None or int
        Reals (default) or GF(p).

    Examples
    --------
    >>> import numpy as np
    >>> from codedml.codes import ReplicationCode
    >>> code = ReplicationCode(6, 3)          # every block twice
    >>> code.recovery_threshold
    5
    >>> A, x = np.arange(12.).reshape(6, 2), np.ones(2)
    >>> tasks = code.encode(A, x)
    >>> bool(np.allclose(code.decode({w: tasks[w].compute() for w in (0, 1, 5)}), A @ x))
    True
    """

    def __init__(self, workers: int, k: int, *, field: int | None = None) -> None:
        n = check_int("workers", workers, 1)
        self.workers = n
        self.k = check_int("k", k, 1, n, what=f"workers={n}")
        self.field = check_field(field, n)
        self.replicas = np.bincount(np.arange(n) % self.k, minlength=self.k)
        self.recovery_threshold = int(n - self.replicas.min() + 1)

    def __repr__(self) -> str:
        f = f", field={self.field}" if self.field is not None else ""
        return f"ReplicationCode(workers={self.workers}, k={self.k}{f})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplicationCode) and (self.workers, self.k, self.field) == (
            other.workers, other.k, other.field)

    def __hash__(self) -> int:
        return hash(("replication", self.workers, self.k, self.field))

    def block_of(self, worker: int) -> int:
        """The row block of ``A`` that ``worker`` computes."""
        return check_int("worker", worker, 0, self.workers - 1) % self.k

    def _encode(self, A: Any, B: Any, precision: str = "auto"):
        given = B
        if self.field is not None:
            A = residues("A", A, self.field)
            B = residues("B", B, self.field, allow_vector=True)
        else:
            A = real_matrix("A", A)
            B = real_matrix("B", B, allow_vector=True)
        if A.shape[1] != B.shape[0]:
            raise ConfigurationError(
                f"`A` and `B` must have matching inner dimensions, got A {A.shape} and B {B.shape}")
        M = A.shape[0]
        rb = -(-M // self.k)
        Ap = np.zeros((rb * self.k, A.shape[1]), dtype=A.dtype)
        Ap[:M] = A
        blocks = Ap.reshape(self.k, rb, A.shape[1])   # explicit: -1 fails where A is empty
        shape = (M,) + B.shape[1:]
        dtype = np.result_type(A.dtype, B.dtype) if self.field is None else np.dtype(np.int64)
        if self.field is None and precision != "auto":
            dtype = np.dtype(np.float64 if precision == "compensated" else precision)
        if self.field is None:
            blocks = blocks.astype(dtype, copy=False)
            B = B.astype(dtype, copy=False)
        # every worker's B is one array, the caller's never (A's blocks are Ap's, new memory)
        B = owned(B, given)
        pairs = [(blocks[w % self.k], B) for w in range(self.workers)]
        return pairs, shape, A.shape[1], dtype

    def _output_multiples(self, ndim: int) -> tuple[int, ...]:
        return (self.k,) + (1,) * (ndim - 1)

    def decode(self, results, errors: int = 0, *, encoding=None, shape=None, rtol=None,
               return_faulty: bool = False, return_info: bool = False):
        """See :meth:`LinearCode.decode`. Results that hold each block exactly once (no
        replica to spare, so nothing to check or vote on: the uncoded baseline's every job)
        and are finite (over GF(p): in ``[0, p)``) are stacked in block order, which is
        bitwise what the general path returns, without its projections and stacked copies.
        Anything else (spare replicas, a non-finite or out-of-range value, a bad argument)
        takes the general path."""
        check_rtol(rtol)
        fast = self._one_copy_each(results, errors, encoding)
        if fast is None:
            return super().decode(results, errors, encoding=encoding, shape=shape, rtol=rtol,
                                  return_faulty=return_faulty, return_info=return_info)
        rows, X, rdtype = fast
        info = DecodeInfo((), tuple(int(w) for w in rows), 1.0, False)
        return self._finish_fast(self._assemble([X], None), info, rdtype, encoding, shape,
                                 return_faulty, return_info)

    def _one_copy_each(self, results: Any, errors: Any, encoding: Any = None):
        """``(rows, blocks stacked in block order, the first result's dtype)`` when
        ``results`` hold each block exactly once, all finite (in range over GF(p)); else None
        (the general path decides)."""
        try:
            if not hasattr(results, "keys") or len(results) != self.k:
                return None
            check_int("errors", errors, 0, self.workers)
            rows, raw = self._check_results(results, encoding)
        except (ConfigurationError, TypeError, ValueError):
            return None
        order = [-1] * self.k
        for j, w in enumerate(rows):
            b = int(w) % self.k
            if order[b] >= 0:
                return None
            order[b] = j
        if not _valid_results(raw, self.field):
            return None
        first = raw[order[0]]
        dt = functools.reduce(np.promote_types, [r.dtype for r in raw])  # np.stack's dtype
        X = _pool.empty((self.k,) + first.shape, dt)                      # reused memory
        return rows, np.stack([raw[j] for j in order], out=X), raw[0].dtype

    def _recovers(self, rows: np.ndarray) -> bool:
        return len(set((np.asarray(rows) % self.k).tolist())) == self.k

    def _recovers_bound(self) -> int:
        return self.k   # one copy of each of the k blocks

    def _solve_real(self, M: np.ndarray, E: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Each block is one of its (consistent) copies: no solve needed."""
        first = {int(np.flatnonzero(M[i])[0]): i for i in range(M.shape[0] - 1, -1, -1)}
        return np.stack([E[first[j]] for j in range(self.k)])

    def _families(self, rows: np.ndarray) -> list[np.ndarray]:
        M = np.zeros((len(rows), self.k))
        M[np.arange(len(rows)), np.asarray(rows) % self.k] = 1.0
        return [M.astype(np.int64) if self.field is not None else M]

    def _unpack(self, result: np.ndarray) -> list[np.ndarray]:
        return [result]

    def _assemble(self, X: list[np.ndarray], shape: tuple[int, ...] | None) -> np.ndarray:
        # explicit row count: numpy cannot infer -1 beside a 0 (B without columns)
        C = X[0].reshape((X[0].shape[0] * X[0].shape[1],) + X[0].shape[2:])
        if shape is not None:
            C = C[tuple(slice(0, s) for s in shape)]
        return np.ascontiguousarray(C.astype(np.int64) if self.field is not None else C)
