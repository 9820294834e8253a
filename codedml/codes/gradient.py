"""Gradient codes (Tandon, Lei, Dimakis, Karampatziakis 2017).

The data are split into ``n`` partitions (one per worker); worker ``w`` holds the ``s + 1``
partitions in its support and sends ``sum_j B[w, j] g_j``, a fixed combination of its partial
gradients. The coefficient matrix ``B`` is built so that the all-ones vector lies in the span
of *any* ``n - s`` of its rows: from any ``n - s`` results the master finds ``a`` with
``a^T B_S = 1^T`` and recovers the exact full gradient ``sum_j g_j = a^T results``.

Schemes
-------
``"fractional_repetition"``: requires ``(s + 1) | n``; workers form groups of ``s + 1`` that
all hold the same ``s + 1`` partitions and send their plain sum (coefficients 1).

``"cyclic"``: worker ``w`` holds partitions ``w, w+1, ..., w+s (mod n)``. Over the reals the
coefficients come from a cyclic-MDS code (Raviv, Tamo, Tandon, Dimakis 2018) where its real
form exists (n and s of opposite parity) and from a negacyclic MDS code with rescaled columns
otherwise (see ``_negacyclic``): deterministic, conditioned like a DFT. Over GF(p) they are
Tandon et al.'s Algorithm 2: a random ``s x n`` matrix ``H`` with ``H 1 = 0`` and rows of ``B``
in the null space of ``H`` with that cyclic support (seeded, so the code is reproducible).

The same code computes ``C = A @ B`` by splitting the *inner* dimension into ``n`` partitions
(``C = sum_j A_j B_j``): worker ``w``'s task is ``[c_wj A_j ...] @ [B_j; ...]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigurationError, CorruptResultError
from . import _gfp, _pool
from ._base import LinearCode, _independent_rows
from ._eft import _residual, _Split
from ._validate import check_field, check_int, real_matrix, residues

__all__ = ["GradientCode", "SCHEMES"]

SCHEMES = ("fractional_repetition", "cyclic")


class GradientCode(LinearCode):
    """Gradient code: the full gradient sum from any ``workers - stragglers`` results.

    Parameters
    ----------
    workers : int
        ``n`` workers, and ``n`` data partitions.
    stragglers : int
        ``s``, the number of results that may be missing (``0 <= s < n``).
    scheme : {"fractional_repetition", "cyclic"}
    field : None or int
        Reals or GF(p).
    seed : int
        Seed of the random matrix of the cyclic scheme over GF(p) (the real constructions are
        deterministic and do not use it).

    Examples
    --------
    >>> import numpy as np
    >>> from codedml.codes import GradientCode
    >>> code = GradientCode(4, 1, "cyclic")
    >>> grads = np.arange(12.).reshape(4, 3)      # one partial gradient per partition
    >>> msgs = {w: code.combine(w, {j: grads[j] for j in code.partitions(w)}) for w in (0, 1, 3)}
    >>> bool(np.allclose(code.decode(msgs), grads.sum(axis=0)))
    True
    """

    def __init__(self, workers: int, stragglers: int, scheme: str = "cyclic", *,
                 field: int | None = None, seed: int = 0) -> None:
        n = check_int("workers", workers, 1)
        s = check_int("stragglers", stragglers, 0, n - 1, what=f"workers-1={n - 1}")
        if scheme not in SCHEMES:
            raise ConfigurationError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")
        if scheme == "fractional_repetition" and n % (s + 1):
            raise ConfigurationError(
                f"fractional repetition needs stragglers+1={s + 1} to divide workers={n}")
        self.workers, self.stragglers, self.scheme = n, s, scheme
        self.field = check_field(field, n)
        self.seed = int(seed)
        self.recovery_threshold = n - s
        self.coefficients = self._build()

    def __repr__(self) -> str:
        f = f", field={self.field}" if self.field is not None else ""
        return (f"GradientCode(workers={self.workers}, stragglers={self.stragglers}, "
                f"scheme={self.scheme!r}{f})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GradientCode) and (
            self.workers, self.stragglers, self.scheme, self.field, self.seed) == (
            other.workers, other.stragglers, other.scheme, other.field, other.seed)

    def __hash__(self) -> int:
        return hash(("gradient", self.workers, self.stragglers, self.scheme, self.field, self.seed))

    # ---------------------------------------------------------------- construction
    def partitions(self, worker: int) -> tuple[int, ...]:
        """The data partitions ``worker`` holds (and must compute partial gradients for)."""
        w = check_int("worker", worker, 0, self.workers - 1)
        return tuple(int(j) for j in np.flatnonzero(self._support[w]))

    def _build(self) -> np.ndarray:
        n, s = self.workers, self.stragglers
        support = np.zeros((n, n), dtype=bool)
        if self.scheme == "fractional_repetition":
            for w in range(n):
                g = w // (s + 1)
                support[w, g * (s + 1):(g + 1) * (s + 1)] = True
            self._support = support
            B = support.astype(np.int64 if self.field is not None else np.float64)
            return B
        for w in range(n):
            support[w, [(w + t) % n for t in range(s + 1)]] = True
        self._support = support
        rng = np.random.default_rng(self.seed)
        if self.field is None and s > 0:
            # Real coefficients with the MDS property and DFT-like conditioning for every n and
            # s: the cyclic-MDS construction where its real form exists (n even and s odd, or n
            # odd and s even), the negacyclic one otherwise (see _negacyclic). Tandon et al.'s
            # random construction, used before for the second case, measured worst cases of
            # 1e5..7e6 (decoded error up to 1.9e-10) at n = 12..30, s = 4.
            B = _cyclic_dft(n, s)
            if B is None:
                B = _negacyclic(n, s)
            if B is not None:
                return B
        for _attempt in range(100):
            B = self._cyclic(rng)
            if B is not None:
                return B
        raise ConfigurationError(  # pragma: no cover - probability ~ (n/p)^100
            f"could not build a cyclic gradient code for workers={n}, stragglers={s} "
            f"over field={self.field}")

    def _cyclic(self, rng: np.random.Generator) -> np.ndarray | None:
        """Tandon et al. Algorithm 2: rows of B in null(H) with cyclic support, B[w, w] = 1."""
        n, s, p = self.workers, self.stragglers, self.field
        if s == 0:
            return np.eye(n, dtype=np.int64 if p is not None else np.float64)
        if p is None:
            H = rng.standard_normal((s, n))
            H[:, -1] = -H[:, :-1].sum(axis=1)
            B = np.zeros((n, n))
        else:
            H = rng.integers(0, p, size=(s, n), dtype=np.int64)
            H[:, -1] = (-H[:, :-1].sum(axis=1)) % p
            B = np.zeros((n, n), dtype=np.int64)
        for w in range(n):
            others = [(w + t) % n for t in range(1, s + 1)]
            B[w, w] = 1
            try:
                if p is None:
                    B[w, others] = np.linalg.solve(H[:, others], -H[:, w])
                else:
                    B[w, others] = _gfp.solve_mod(H[:, others], (-H[:, w]) % p, p)
            except (np.linalg.LinAlgError, ValueError):
                return None
        if p is not None:  # every (n - s)-subset must span the all-ones vector: check generically
            if _gfp.rank_mod(B, p) != n - s:
                return None
        return B

    # ---------------------------------------------------------------- gradient use
    def combine(self, worker: int, partials: Mapping[int, Any]) -> np.ndarray:
        """The message worker ``worker`` sends: ``sum_j B[worker, j] * partials[j]``."""
        parts = self.partitions(worker)
        missing = [j for j in parts if j not in partials]
        if missing:
            raise ConfigurationError(
                f"`partials` for worker {worker} must hold partitions {parts}, missing {missing}")
        coef = self.coefficients[worker]
        if self.field is None:
            # one shape and real numbers: a sum would broadcast mismatched partials, and a cast
            # would drop an imaginary part or parse strings
            got = [np.asarray(partials[j]) for j in parts]
            for j, g in zip(parts, got):
                if g.dtype.kind not in "fiub":
                    raise ConfigurationError(
                        f"`partials[{j}]` must hold real numbers, got dtype {g.dtype}")
            _one_shape(parts, got)
            return sum(coef[j] * g.astype(np.float64, copy=False) for j, g in zip(parts, got))
        got = [residues(f"partials[{j}]", partials[j], self.field, ndims=(0, 1, 2, 3))
               for j in parts]
        _one_shape(parts, got)
        acc = 0
        for j, g in zip(parts, got):
            acc = (acc + int(coef[j]) * g) % self.field
        return np.asarray(acc, dtype=np.int64)

    def decoding_vector(self, workers: Any) -> np.ndarray:
        """``a`` with ``a^T B_S = 1^T`` for the sorted worker set ``S`` (least norm over the reals)."""
        rows = np.array(sorted({check_int("workers", w, 0, self.workers - 1) for w in workers}))
        Bs = self.coefficients[rows]
        ones = np.ones(self.workers, dtype=Bs.dtype)
        if self.field is None:
            a = _ones_combination(Bs)
            if not np.allclose(Bs.T @ a, ones, atol=1e-8):
                raise ConfigurationError(f"workers {rows.tolist()} cannot recover the gradient sum")
            return a
        return _solve_ones(Bs, self.field)

    # ---------------------------------------------------------------- A @ B interface
    def _encode(self, A: Any, B: Any, precision: str = "auto"):
        if self.field is not None:
            A = residues("A", A, self.field)
            B = residues("B", B, self.field, allow_vector=True)
        else:
            # finiteness: checked through the partitions' norms below (LinearCode.encode)
            A = real_matrix("A", A, finite=False)
            B = real_matrix("B", B, allow_vector=True, finite=False)
        if A.shape[1] != B.shape[0]:
            raise ConfigurationError(
                f"`A` and `B` must have matching inner dimensions, got A {A.shape} and B {B.shape}")
        n, P = self.workers, self.field
        M, N = A.shape
        nb = -(-N // n)
        s1 = self.stragglers + 1
        dtype = (self._operand_dtype(np.result_type(A.dtype, B.dtype), precision)
                 if P is None else np.dtype(np.int64))
        # Each task written once, straight from A's and B's partitions (views): worker w's
        # a holds the A_j side by side for its partitions j, its b the coef[w, j] * B_j
        # stacked (a_w @ b_w = sum_j coef[w, j] A_j B_j either way; see _write_tasks).
        # Real: each coefficient times B is the float64 product rounded once into the task's
        # dtype (computed in float32 where that gives the same value: see _write_tasks);
        # zero columns/rows where a partition runs past the padding.
        # One allocation per side (reused memory from the task pool, codes/_pool.py).
        a_all = _pool.empty((n, M, s1 * nb), dtype=dtype, near=A)
        b_all = _pool.empty((n, s1 * nb) + B.shape[1:], dtype=dtype, near=B)
        parts, layout = self._layout_for(N, nb)
        sq = _write_tasks(A, B, a_all, b_all, parts, self.coefficients, nb, P, layout)
        pairs = [(a_all[w], b_all[w]) for w in range(n)]
        shape = (A.shape[0],) + B.shape[1:]
        if P is not None:
            return pairs, shape, nb * s1, dtype
        # Scales ||a_w|| ||b_w|| from the partitions' norms, taken while each chunk of A and B
        # was in cache (not from the (s+1)x larger tasks): ||a_w||^2 = sum_j ||A_j||^2 and
        # ||b_w||^2 = sum_j coef_wj^2 ||B_j||^2 over its partitions j (equal to the tasks' own
        # norms up to their rounding). A NaN or Inf input makes a scale non-finite, which
        # sends LinearCode.encode to the exact check.
        sa, sb = sq
        C2 = np.where(self._support, self.coefficients, 0.0) ** 2
        with np.errstate(invalid="ignore", over="ignore"):
            scales = np.sqrt(self._support.astype(np.float64) @ sa) * np.sqrt(C2 @ sb)
        return pairs, shape, nb * s1, dtype, scales

    #: Real inputs are checked for NaN/Inf through the partitions' norms (LinearCode.encode).
    _finite_from_norms = True

    def _layout_for(self, N: int, nb: int) -> tuple[list[tuple[int, ...]], _Layout]:
        """Every worker's partitions and :func:`_layout` for A's width ``N``, kept between
        encodes (at most :data:`_LAYOUTS` widths, all dropped when a new one would pass that:
        a clear is one step, safe while another thread encodes; the code's coefficients never
        change)."""
        cache = self.__dict__.setdefault("_layouts", {})
        got = cache.get((N, nb))
        if got is None:
            parts = [self.partitions(w) for w in range(self.workers)]
            got = (parts, _layout(parts, self.coefficients, N, nb, self.field is None))
            if len(cache) >= _LAYOUTS:
                cache.clear()
            cache[(N, nb)] = got
        return got

    def _families(self, rows: np.ndarray) -> list[np.ndarray]:
        return [self.coefficients[np.asarray(rows)]]

    def _solve_real(self, M: np.ndarray, E: Any, rows: np.ndarray | None) -> np.ndarray:
        """The sum itself: ``a^T results`` with ``a^T B_S = 1^T`` (least norm): one weighted
        sum of the results instead of a solve for every partition's gradient."""
        coef = _ones_combination(M)[None, :]
        if hasattr(E, "weighted"):
            return E.weighted(coef)
        return (coef @ E.reshape(E.shape[0], math.prod(E.shape[1:]))).reshape((1,) + E.shape[1:])

    def _unpack(self, result: np.ndarray) -> list[np.ndarray]:
        return [result]

    def _recovers(self, rows: np.ndarray) -> bool:
        """Whether the all-ones vector lies in the span of the rows' coefficients: always for
        ``n - s`` rows; for fewer, e.g. one worker of every fractional-repetition group."""
        rows = np.asarray(rows)
        if len(rows) >= self.recovery_threshold:
            return True
        if len(rows) == 0:
            return False
        Bs = self.coefficients[rows]
        if self.field is None:
            a, *_ = np.linalg.lstsq(Bs.T, np.ones(self.workers), rcond=None)
            return bool(np.allclose(Bs.T @ a, 1.0, atol=1e-9))
        return _gfp.rank_mod(np.vstack([Bs, np.ones((1, self.workers), dtype=np.int64)]), self.field) \
            == _gfp.rank_mod(Bs, self.field)

    def _solve_exact(self, keep, E, Ms, rows):
        """The sum ``a^T results`` (``a^T B_S = 1^T``), after an exact check of every entry.

        The kept results are consistent when each is the combination of partial gradients its
        coefficients say: ``H @ results = 0 (mod p)`` for every ``h`` in a basis ``H`` of the
        left null space of their coefficients. All entries are checked (one small exact matmul,
        ``(r - rank) x r`` by the results), so a single corrupt entry anywhere is found
        whenever the kept results have a spare one to check it against; a projection of a few
        entries (or a random one) could let it through.
        """
        p = self.field
        Bk = Ms[0][keep] % p
        flat = E[0][keep].reshape(len(keep), -1)
        H = _gfp.nullspace_mod(Bk.T, p)                 # rows h with h^T Bk = 0
        if H.shape[0] and flat.shape[1]:
            bad = _gfp.matmul_mod(H, flat, p).any(axis=0)
            if bad.any():
                raise CorruptResultError(
                    f"results from workers {[int(r) for r in rows[keep]]} are inconsistent "
                    f"({int(bad.sum())} of {flat.shape[1]} entries, first at flat index "
                    f"{int(np.flatnonzero(bad)[0])}) beyond what was corrected",
                    suspects=[])
        a = _solve_ones(Bk, p)
        total = _gfp.matmul_mod(a[None, :], flat, p)[0]
        return [total.reshape((1,) + E[0].shape[1:])]

    def _assemble(self, X: list[np.ndarray], shape: tuple[int, ...] | None) -> np.ndarray:
        C = X[0].sum(axis=0)
        if self.field is not None:
            C = C.astype(np.int64) % self.field
        if shape is not None and C.ndim:
            C = C[tuple(slice(0, s) for s in shape)]
        return np.ascontiguousarray(C)


#: Widths of A whose task layout a gradient code keeps (GradientCode._layout_for).
_LAYOUTS = 8


def _runs(parts: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Consecutive partitions of a worker as ``(first, stop, slot)`` runs: partitions
    ``first .. stop - 1`` sit side by side in the task from slot ``slot`` on."""
    runs: list[tuple[int, int, int]] = []
    for t, j in enumerate(parts):
        if runs and runs[-1][1] == j:
            runs[-1] = (runs[-1][0], j + 1, runs[-1][2])
        else:
            runs.append((j, j + 1, t))
    return runs


class _Layout(NamedTuple):
    """Where every partition goes, for one code and one width of A (:func:`_layout`)."""
    #: per worker and run of consecutive partitions: (worker, first column of A, stop, first
    #: column in the task, stop of the run's slots in the task)
    plan: tuple[tuple[int, int, int, int, int], ...]
    #: partition -> index in ``plan`` of the run whose copy sums its squares
    owner: dict[int, int]
    #: per partition of B's rows: (worker, slot, coefficient) of every task that holds it
    holders: tuple[tuple[tuple[int, int, Any], ...], ...]
    #: the compiled copies' runs, built on first use (:func:`_runs_a`, :func:`_runs_b`)
    cache: dict


def _layout(parts: list[tuple[int, ...]], coef: np.ndarray, N: int, nb: int,
            real: bool) -> _Layout:
    """The plan of :func:`_write_tasks` (it depends on the code and on A's width only, so a
    code keeps it between encodes: GradientCode._layout_for)."""
    plan = []
    for w, p in enumerate(parts):
        for j0, j1, t in _runs(p):
            lo, hi = min(j0 * nb, N), min(j1 * nb, N)
            plan.append((w, lo, hi, t * nb, (t + j1 - j0) * nb))

    def span(i: int) -> range:
        lo, hi = plan[i][1], plan[i][2]
        return range(lo // nb, (hi + nb - 1) // nb) if hi > lo and nb > 0 else range(0)

    # A run that owns a partition sums the squares of all its columns (the compiled copy
    # takes them block by block), so owners are runs whose partitions nobody owns yet, the
    # longest first (the cyclic code's runs of s + 1 tile the partitions: each column's
    # squares are taken once, where first-come owners summed up to s + 1 times as many);
    # then, for a partition left, the first run that holds it.
    owner: dict[int, int] = {}
    for i in sorted(range(len(plan)), key=lambda i: plan[i][1] - plan[i][2]):
        js = span(i)
        if js and not any(j in owner for j in js):
            owner.update((j, i) for j in js)
    for i in range(len(plan)):
        for j in span(i):
            owner.setdefault(j, i)
    # coefficients as numpy float64 (not Python floats): the numpy path's exactness test
    # ``d.dtype.type(c) == c`` must compare in float64, which a Python float (weak under
    # NEP 50) would not make it do
    holders: list[list[tuple[int, int, Any]]] = [[] for _ in parts]
    for w, p in enumerate(parts):
        for t, j in enumerate(p):
            c = coef[w][j]
            holders[j].append((w, t, np.float64(c) if real else int(c)))
    return _Layout(tuple(plan), owner, tuple(tuple(h) for h in holders), {})


def _one_shape(parts: Sequence[int], got: list[np.ndarray]) -> None:
    """A named error unless every partial (``got[i]`` for partition ``parts[i]``) has the
    first one's shape: a sum would broadcast mismatched partials."""
    for j, g in zip(parts, got):
        if g.shape != got[0].shape:
            raise ConfigurationError(
                f"`partials` must all have one shape, partition {parts[0]} has "
                f"{got[0].shape} and partition {j} has {g.shape}")


def _runs_a(layout: _Layout, nb: int) -> tuple[np.ndarray, int, dict[int, int]]:
    """The A side of :func:`_write_tasks` as ``copy_runs``' runs (kept on the layout): per run
    of the plan ``(w, lo, hi, c0, q)``, where ``q`` is, for a run that owns a partition (it
    sums the squares of all its blocks of ``nb`` columns), the first of its entries in the
    sums array, else -1; that array's length; and each owning run's first entry."""
    got = layout.cache.get(("a", nb))
    if got is None:
        owning = set(layout.owner.values())
        rows, first, at = [], {}, 0
        for i, (w, lo, hi, c0, _) in enumerate(layout.plan):
            q = -1
            if i in owning:
                q = first[i] = at
                at += (hi - lo + nb - 1) // nb
            rows.append((w, lo, hi, c0, q))
        got = (np.array(rows, dtype=np.int64).reshape(-1, 5), at, first)
        layout.cache[("a", nb)] = got
    return got


def _runs_b(layout: _Layout, N: int, nb: int, width: int, bstep: int) -> tuple[np.ndarray, np.ndarray]:
    """The B side of :func:`_write_tasks` on its flat path as ``copy_runs``' runs over B's
    values as one row (kept on the layout per row width and chunk, at most :data:`_LAYOUTS`
    of them): per partition ``j``, per
    chunk of ``bstep`` of its rows, per holder ``(w, t, c)``: its values into task ``w``'s
    slot ``t``, scaled by ``c``, the first holder's squares added into entry ``j``."""
    key = ("b", N, nb, width, bstep)
    got = layout.cache.get(key)
    if got is None:
        if len(layout.cache) > _LAYOUTS:
            # at most _LAYOUTS widths of B kept besides A's one entry (a job whose B width
            # varies would grow it): all dropped at once, one step each (len, clear), as in
            # _layout_for, safe while another thread encodes (counting the keys by a walk
            # over the dict raised there when another thread changed it meanwhile)
            layout.cache.clear()
        rows, scales = [], []
        for j, hold in enumerate(layout.holders):
            lo, hi = min(j * nb, N), min((j + 1) * nb, N)
            for r0 in range(lo, hi, bstep):
                r1 = min(hi, r0 + bstep)
                for h, (w, t, c) in enumerate(hold):
                    rows.append((w, r0 * width, r1 * width, (t * nb + r0 - lo) * width,
                                 j if h == 0 else -1))
                    scales.append(float(c))
        got = (np.array(rows, dtype=np.int64).reshape(-1, 5), np.array(scales, dtype=np.float64))
        layout.cache[key] = got
    return got


def _write_tasks(A: np.ndarray, B: np.ndarray, a_all: np.ndarray, b_all: np.ndarray,
                 parts: list[tuple[int, ...]], coef: np.ndarray, nb: int,
                 P: int | None, layout: _Layout | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Every worker's ``a`` (its partitions of A's columns side by side) and ``b`` (its
    partitions of B's rows, each scaled by the worker's coefficient for it, stacked), reading A
    and B from memory once: A by chunks of whole rows and B by chunks of a partition's rows,
    each chunk written into every task that holds it while it is in cache (one copy per run of
    consecutive partitions of A; one scalar multiply per worker holding a partition of B), and
    its partitions' sums of squares taken there. The coefficients sit on B's side because a
    scalar times contiguous rows runs at copy speed, where A's side would need a per-column
    broadcast over short strided rows (measured 1.9x a plain copy of the same segments). Returns the sums of
    squares (float64, one per partition; None over GF(p)). ``layout``: :func:`_layout` of
    these arguments, computed here when not given."""
    from ._encode import _K, CHUNK_BYTES, STREAM_BYTES, _rowsq, fast_copy, view_as

    n = len(parts)
    M, N = A.shape
    real = P is None
    if layout is None:
        layout = _layout(parts, coef, N, nb, real)
    plan, owner, holders, _ = layout
    sq_a = np.zeros(n) if real else None   # per partition of A's columns
    step = max(1, CHUNK_BYTES // max(1, N * A.itemsize))
    full = N // nb if nb else 0   # partitions whole in A's columns (the next one, if any, short)
    # Compiled (codes/_kernels.c, copy_runs): each partition's sum of squares comes from one
    # of the copies of it (its owner run, see _layout), block by block of nb columns in the
    # copy's own loop: no second pass over A. Where A's rows are not contiguous or its dtype
    # is not the tasks', numpy copies and BLAS dots as below.
    fused = (real and _K is not None and nb > 0 and A.dtype == a_all.dtype
             and A.dtype in (np.float64, np.float32) and (N <= 1 or A.strides[1] == A.itemsize))
    with np.errstate(invalid="ignore", over="ignore"):
        for w, lo, hi, c0, c1 in plan:            # columns past the padding: zero
            if c0 + hi - lo < c1:
                a_all[w][:, c0 + hi - lo:c1] = 0
        # the compiled copy (codes/_encode.py's fast_copy) streams large tasks past the cache
        # (measured side by side on the Intel Xeon, 1024-4096: streaming every segment of A,
        # 512 B ones included, encoded in 0.79-0.93x the time of not streaming A's side)
        stream_a = a_all.nbytes >= STREAM_BYTES
        if fused:
            # one compiled call, row by row of A (every run of a row written while the row
            # is in L1; A read from memory once, in order), each owning run's squares by
            # blocks of nb columns from its first entry on
            runs_a, n_sq, first = _runs_a(layout, nb)
            sq_blocks = np.zeros(n_sq)
            _K.copy_runs(a_all, A, runs_a, sq_blocks, nb, stream_a)
            for j, i in owner.items():
                sq_a[j] = sq_blocks[first[i] + j - plan[i][1] // nb]
        else:
            for r0 in range(0, M, step):
                r1 = min(M, r0 + step)
                X = A[r0:r1]
                for w, lo, hi, c0, _ in plan:
                    if hi > lo:
                        d = a_all[w, r0:r1, c0:c0 + hi - lo]
                        if not real or fast_copy(d, X[:, lo:hi], stream_a, squares=False) is None:
                            np.copyto(d, X[:, lo:hi], casting="unsafe")
                if real and X.size:
                    # the partitions' sums of squares: one BLAS dot per row of every partition
                    # (X's rows as (rows x partitions) segments of nb), summed over the rows
                    if full:   # (a view where X's rows are contiguous, else reshape copies)
                        seg = X[:, :full * nb].reshape(-1, nb)
                        sq_a[:full] += _rowsq(seg).reshape(r1 - r0, full).sum(axis=0)
                    if full * nb < N:
                        sq_a[full] += float(_rowsq(np.ascontiguousarray(X[:, full * nb:])).sum())
        sq_b = np.zeros(n) if real else None   # per partition of B's rows
        width = math.prod(B.shape[1:])
        bstep = max(1, CHUNK_BYTES // max(1, width * B.itemsize))
        stream_b = b_all.nbytes >= STREAM_BYTES
        # B's chunks and the tasks' rows as one contiguous row each (one compiled call for
        # every chunk and holder) where B is C-ordered in the tasks' dtype
        flat = (real and _K is not None and B.dtype == b_all.dtype
                and B.dtype in (np.float64, np.float32) and B.flags.c_contiguous
                and b_all.flags.c_contiguous)
        for j in range(n):
            lo, hi = min(j * nb, N), min((j + 1) * nb, N)
            if hi - lo < nb:
                for w, t, _ in holders[j]:            # rows past the padding: zero
                    b_all[w, t * nb + hi - lo:(t + 1) * nb] = 0
        if flat:
            # one compiled call: per partition and chunk of its rows, every holder's scaled
            # copy (the first one's sum of squares into sq_b), in the loops' order below
            runs_b, scales_b = _runs_b(layout, N, nb, width, bstep)
            _K.copy_runs(b_all.reshape(n, 1, -1), B.reshape(1, -1), runs_b, sq_b, 0,
                         stream_b, scales_b)
        else:
            for j in range(n):
                lo, hi = min(j * nb, N), min((j + 1) * nb, N)
                for r0 in range(lo, hi, bstep):
                    r1 = min(hi, r0 + bstep)
                    Y = B[r0:r1]
                    # rows as one 2-D matrix (a vector: one row), where that is a view
                    Y2 = Y if Y.ndim < 3 else view_as(Y, (r1 - r0, -1))
                    Y64 = None
                    sq_y = None    # Y's sum of squares, from the first compiled copy
                    for w, t, c in holders[j]:
                        d = b_all[w, t * nb + r0 - lo:t * nb + r1 - lo]
                        if real and Y2 is not None:
                            got = fast_copy(d.reshape(Y2.shape), Y2, stream_b, c,
                                            squares=sq_y is None)
                            if got is not None:
                                sq_y = got if sq_y is None else sq_y
                                continue
                        if real:
                            # the product in float64, rounded once into the task's dtype. Where
                            # B already has that dtype and c is exact in it (1 on the diagonal,
                            # every fractional-repetition coefficient), the product in that
                            # dtype is the same correctly rounded value (a float32 product is
                            # exact in float64): no float64 pass. Otherwise B's chunk is cast
                            # to float64 once for all its holders (numpy's buffered mixed-type
                            # multiply measured 1.5x slower).
                            if Y.dtype == d.dtype and d.dtype.type(c) == c:
                                if c == 1:
                                    np.copyto(d, Y)
                                else:
                                    np.multiply(Y, d.dtype.type(c), out=d)
                            elif Y.dtype == np.float64:
                                np.multiply(Y, np.float64(c), out=d, casting="unsafe")
                            else:
                                if Y64 is None:
                                    Y64 = Y.astype(np.float64)
                                np.multiply(Y64, np.float64(c), out=d, casting="unsafe")
                        else:
                            np.multiply(Y, c, out=d)
                            np.remainder(d, P, out=d)
                    if real:
                        sq_b[j] += sq_y if sq_y is not None else float(_rowsq(Y.reshape(1, -1))[0])
    if not real:
        return None
    return sq_a, sq_b


def _cyclic_dft(n: int, s: int) -> np.ndarray | None:
    """Cyclic-MDS gradient code (Raviv, Tamo, Tandon, Dimakis 2018) with real coefficients.

    Row w holds the coefficients of ``x^w g(x) mod (x^n - 1)`` with ``g`` the real polynomial
    whose roots are ``s`` conjugate-symmetric n-th roots of unity around ``-1``; then every
    codeword vanishes there, the all-ones vector (frequency 0) is in the code, and any n - s
    rows span it. Real coefficients need the root set closed under conjugation without 1:
    possible when n is even and s odd (it contains -1) or n is odd and s even.
    """
    if (n % 2 == 0) == (s % 2 == 0) or s == 0:
        return None
    J = [n // 2] if n % 2 == 0 else []
    t = 1
    while len(J) < s:
        J += [(n // 2 - t) % n, (n // 2 + t) % n] if n % 2 == 0 else [(n // 2 + 1 - t) % n, (n // 2 + t) % n]
        t += 1
    g = np.poly(np.exp(2j * np.pi * np.array(J[:s]) / n))[::-1].real
    B = np.zeros((n, n))
    for w in range(n):
        B[w, (w + np.arange(s + 1)) % n] = g
    return B / g[0]  # B[w, w] = 1 as in Tandon et al.


def _negacyclic(n: int, s: int) -> np.ndarray | None:
    """Real gradient code from a negacyclic MDS code, for the (n, s) that ``_cyclic_dft`` lacks.

    Half-integer frequencies ``J = {n/2 - (s-1)/2, ..., n/2 + (s-1)/2}`` (s consecutive ones,
    symmetric about n/2) exist exactly when n and s have the same parity, and the points
    ``zeta_f = exp(-2 pi i f / n)``, f in J, are roots of ``x^n + 1``, closed under conjugation:
    ``g = prod (x - zeta_f)`` is real. Column j of ``B0`` holds ``x^(j-s) g(x) mod (x^n + 1)``:
    row w, column (w + t) mod n carries ``g_(s-t)``, negated where the window wraps. Its support
    is the cyclic window of worker w, and its left null space is spanned by
    ``exp(2 pi i f e / n)``, f in J: Vandermonde on distinct points with consecutive
    exponents, so every s x s minor of it, hence every n - s rows of ``B0``, is nonsingular
    and conditioned like the cyclic-MDS code's. ``1`` is not in the row space of ``B0`` (its
    negacyclic spectrum is nowhere zero), but ``v``, the projection of ``1`` onto that row
    space, differs from ``1`` only by its components at the s frequencies in J, each of size
    about ``1/n`` near n/2; scaling column j by ``1 / v_j`` puts ``1`` in the row space while
    keeping the supports. No entry of ``v`` comes near zero (measured: ``min |v| / max |v|``
    at least 0.098 for every n <= 64, 0.77 at n = 30, s = 4); ``None`` if one ever does.
    Measured worst-case condition numbers: 212 at n = 12, s = 4; 1.4e3 at n = 20, s = 4; 195
    at n = 30, s = 2; 6.6e3 at n = 30, s = 4.
    """
    f = n / 2 + np.arange(s) - (s - 1) / 2
    g = np.poly(np.exp(-2j * np.pi * f / n))[::-1].real          # g_0 .. g_s
    B0 = np.zeros((n, n))
    for w in range(n):
        for t in range(s + 1):
            B0[w, (w + t) % n] = g[s - t] * (-1.0 if w + t >= n else 1.0)
    y, *_ = np.linalg.lstsq(B0.T, np.ones(n), rcond=None)
    v = B0.T @ y                                                  # 1 projected on row(B0)
    if not np.abs(v).min() > 1e-3 * np.abs(v).max():
        return None  # pragma: no cover - not seen for any n <= 64
    B = B0 / v[None, :]
    return B / np.diag(B)[:, None]  # B[w, w] = 1 as in Tandon et al.


def _ones_combination(Bs: np.ndarray) -> np.ndarray:
    """Least-norm real ``a`` with ``Bs^T a = 1``, refined once against an accurate residual.

    The float64 least-squares solution leaves a residual of about ``cond * eps``; it enters
    the decoded sum directly (``a^T results = 1^T g - (residual)^T g``), so one refinement
    step with the residual formed to ~20 extra bits (:func:`._eft._residual`) removes it.
    """
    n = Bs.shape[1]
    ones = np.ones((n, 1))
    a, *_ = np.linalg.lstsq(Bs.T, ones[:, 0], rcond=None)
    r = _residual(_Split(Bs.T), a[:, None], ones)[:, 0]
    if np.isfinite(r).all():
        a = a + np.linalg.lstsq(Bs.T, r, rcond=None)[0]
    return a


def _solve_ones(Bs: np.ndarray, p: int) -> np.ndarray:
    """Exact ``a`` with ``Bs^T a = 1 (mod p)``: solve on independent rows/columns, then check."""
    r = Bs.shape[0]
    rows = _independent_rows(Bs, p)          # independent rows of Bs
    Bsub = Bs[rows]                          # (rank x n)
    cols = _independent_rows(Bsub.T, p)      # independent columns of that
    a_sub = _gfp.solve_mod(Bsub[:, cols].T, np.ones(len(cols), dtype=np.int64), p)
    a = np.zeros(r, dtype=np.int64)
    a[rows] = a_sub
    if (_gfp.matmul_mod(Bs.T, a, p) != 1).any():
        raise ConfigurationError("these workers cannot recover the gradient sum")
    return a
