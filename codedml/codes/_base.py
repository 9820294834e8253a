"""The shared base of every code: per-worker tasks, the encoding record and the decode pipeline.

A code is an immutable value object. Public methods validate and normalise, then call small
private hooks that each code family implements:

``_encode(A, B)``
    the per-worker operand pairs, the output shape and the inner dimension;
``_families(rows)``
    for the worker indices ``rows``, one *evaluation matrix* per family of unknowns: a worker's
    result, unpacked by ``_unpack``, equals ``M[w] @ X`` for the unknown coefficient blocks ``X``;
``_unpack(result)``
    turns one worker's raw product into one evaluation array per family;
``_assemble(solutions, shape)``
    builds ``C`` from the solved coefficient blocks.

Decoding is generic on top of these hooks (see :meth:`LinearCode.decode`): non-finite and
out-of-range results are erased; corrupt results are located by checking which subsets of the
results are consistent with *some* coefficient blocks (exhaustively, on random projections of
each result, which reduce a matrix to a few numbers per worker); the product is then solved
from the consistent results, by least squares in the reals and exactly in GF(p).
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np

from ..errors import ConfigurationError, CorruptResultError, NotEnoughResultsError
from . import _gfp
from ._validate import check_int

__all__ = ["Task", "Encoding", "DecodeInfo", "LinearCode"]

#: Upper bound on the candidate supports tried by the exhaustive locator.
MAX_CANDIDATES = 200_000

#: Above this worst-case condition number, float32 inputs get float64 worker operands under
#: ``precision="auto"``: measured decoded error of float32 workers is about 4.5e-8 * cond
#: (n=30, k=25: cond 8.0e3, error 3.6e-4), so 1000 keeps it below 1e-4 with a 2x margin.
FLOAT32_MAX_CONDITION = 1000.0


@dataclass(frozen=True, eq=False)
class Task:
    """One worker's share of a coded product: the worker computes ``task.a @ task.b``.

    Over GF(p) the operands are galois ``FieldArray`` s, so ``a @ b`` is the exact product in the
    field; :meth:`compute` does the same product much faster (BLAS on exact chunks).
    """

    worker: int
    a: Any
    b: Any
    field: int | None = None

    def compute(self) -> np.ndarray:
        """The worker's product ``a @ b`` (exact mod p over GF(p))."""
        if self.field is None:
            return self.a @ self.b
        a = np.asarray(self.a.view(np.ndarray), dtype=np.int64)
        b = np.asarray(self.b.view(np.ndarray), dtype=np.int64)
        return _gfp.matmul_mod(a, b, self.field)

    def __repr__(self) -> str:
        return (f"Task(worker={self.worker}, a={_shape(self.a)} {_dtype(self.a)}, "
                f"b={_shape(self.b)} {_dtype(self.b)})")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _dtype(x: Any) -> str:
    return str(getattr(x, "dtype", type(x).__name__))


class Encoding(Sequence[Task]):
    """What ``encode`` returns: the list of per-worker tasks plus what ``decode`` needs to know.

    Attributes
    ----------
    shape : tuple
        Shape of the product ``A @ B`` (so padding added by the split can be removed).
    scales : ndarray
        Per worker ``||a||_F * ||b||_F``: the size the worker's rounding noise is relative to.
    inner : int
        The inner dimension of each worker's product.
    dtype : numpy dtype
        The dtype of the worker operands.
    """

    def __init__(self, code: LinearCode, tasks: list[Task], shape: tuple[int, ...],
                 inner: int, dtype: np.dtype) -> None:
        self.code = code
        self._tasks = tasks
        self.shape = tuple(shape)
        self.inner = int(inner)
        self.dtype = np.dtype(dtype)
        self.scales = np.array([_fro(t.a) * _fro(t.b) for t in tasks]) if code.field is None else None

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, i):  # type: ignore[override]
        return self._tasks[i]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __repr__(self) -> str:
        return f"Encoding({self.code!r}, {len(self)} tasks, product shape {self.shape})"


def _fro(x: Any) -> float:
    return float(np.linalg.norm(np.asarray(x).ravel()))


@dataclass(frozen=True)
class DecodeInfo:
    """What a decode found: workers located as faulty, workers used, and the condition number."""

    faulty: tuple[int, ...]
    used: tuple[int, ...]
    condition: float
    checked: bool = dc_field(default=True)
    """False when no result was left over to check consistency with (no redundancy used)."""


class LinearCode(abc.ABC):
    """Base of all codes for ``C = A @ B``: ``n`` workers, any ``recovery_threshold`` results suffice.

    Subclasses set ``workers``, ``recovery_threshold`` and ``field`` and implement the hooks
    described in the module docstring.
    """

    workers: int
    recovery_threshold: int
    field: int | None

    # ----------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _encode(self, A: Any, B: Any, precision: str) -> tuple[list[tuple[Any, Any]], tuple[int, ...], int, np.dtype]:
        """Per-worker operand pairs, product shape, worker inner dimension, operand dtype."""

    @abc.abstractmethod
    def _families(self, rows: np.ndarray) -> list[np.ndarray]:
        """One evaluation matrix (len(rows) x unknowns) per family."""

    @abc.abstractmethod
    def _unpack(self, result: np.ndarray) -> list[np.ndarray]:
        """One evaluation array per family from one worker's raw product."""

    @abc.abstractmethod
    def _assemble(self, solutions: list[np.ndarray], shape: tuple[int, ...] | None) -> np.ndarray:
        """``C`` from the solved coefficient blocks (one array per family, unknowns first)."""

    def _operand_dtype(self, input_dtype: np.dtype, precision: str) -> np.dtype:
        """Real dtype of worker operands for inputs of ``input_dtype`` (see ``encode``)."""
        if precision == "float32":
            return np.dtype(np.float32)
        if precision == "float64" or np.dtype(input_dtype) == np.float64:
            return np.dtype(np.float64)
        return np.dtype(np.float32 if self.condition_bound() <= FLOAT32_MAX_CONDITION else np.float64)

    def condition_bound(self) -> float:
        """Worst-case condition number of decoding from ``recovery_threshold`` results.

        Cached; computed from the erasure patterns that are worst for the code (see
        :func:`codedml.codes.worst_case_condition`; exact enumeration when it is cheap).
        """
        cached = self.__dict__.get("_cond_bound")
        if cached is None:
            from .numerics import worst_case_condition

            cached = worst_case_condition(self, max_subsets=5000).value
            self.__dict__["_cond_bound"] = cached
        return cached

    def _solve_real(self, M: np.ndarray, E: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Solve one family's system over the reals (see :func:`_lstsq`)."""
        return _lstsq(M, E, rows)

    def _wanted_unknowns(self) -> list[np.ndarray | None]:
        """Per family, the unknowns ``_assemble`` reads (``None``: all of them)."""
        return [None] * len(self._families(np.arange(min(1, self.workers))))

    def _decodable(self, rows: np.ndarray) -> bool:
        """Whether results from ``rows`` determine the product (default: enough of them)."""
        return len(rows) >= self.recovery_threshold

    def _gf_points(self) -> np.ndarray | None:
        """Evaluation points when the code is a Reed-Solomon code over GF(p) (enables Berlekamp-Welch)."""
        return None

    # ----------------------------------------------------------------- public API
    def encode(self, A: Any, B: Any, *, precision: str = "auto") -> Encoding:
        """Split and encode ``A`` and ``B`` into one :class:`Task` per worker.

        Parameters
        ----------
        A, B : arrays
            ``A`` is 2-D; ``B`` is 2-D or a vector. Real field: float32/float64 (integers are
            converted to float64; NaN/Inf rejected). GF(p): integers in ``[0, p)``.
        precision : {"auto", "float32", "float64"}
            Real field only: the dtype of the worker operands. Encoding always runs in float64
            and decoding in float64/complex128. ``"auto"`` keeps float64 inputs in float64 and
            gives float32 inputs float32 operands unless the code's worst-case condition
            number exceeds :data:`FLOAT32_MAX_CONDITION`, where float32 worker arithmetic
            would push the decoded relative error past 1e-4; those workers compute in float64.
        """
        if precision not in ("auto", "float32", "float64"):
            raise ConfigurationError(
                f"`precision` must be one of 'auto', 'float32', 'float64', got {precision!r}")
        pairs, shape, inner, dtype = self._encode(A, B, precision)
        if self.field is None:
            tasks = [Task(w, a, b) for w, (a, b) in enumerate(pairs)]
        else:
            from ._field import field_array
            tasks = [Task(w, field_array(a, self.field), field_array(b, self.field), self.field)
                     for w, (a, b) in enumerate(pairs)]
        return Encoding(self, tasks, shape, inner, dtype)

    def decode(self, results: Mapping[int, Any], errors: int = 0, *,
               encoding: Encoding | None = None, shape: Sequence[int] | None = None,
               rtol: float | None = None, return_faulty: bool = False,
               return_info: bool = False) -> Any:
        """Decode ``C = A @ B`` from the results of any large-enough subset of workers.

        Parameters
        ----------
        results : mapping int -> array
            Worker index to that worker's product ``task.a @ task.b``.
        errors : int
            How many corrupt results to locate and exclude. ``e`` errors are corrected whenever
            at least ``recovery_threshold + 2e`` results are given; with fewer, as many as the
            spare results allow are corrected and the rest detected. Results beyond what is
            needed are always used to check consistency, also with ``errors=0``: an
            inconsistency that cannot be corrected raises :class:`CorruptResultError`.
            Non-finite results (NaN, Inf) and, over GF(p), out-of-range results are always
            treated as erased and reported as faulty.
        encoding : Encoding, optional
            What :meth:`encode` returned; gives the product shape (removing split padding) and
            the per-worker noise scale used to tell rounding from corruption.
        shape : sequence of int, optional
            The product's shape, when ``encoding`` is not at hand.
        rtol : float, optional
            Real field only: a random unit projection of worker w's result may deviate from
            consistency by ``rtol * sqrt(inner)`` times its expected magnitude over
            ``sqrt(entries)`` before it counts as corrupt (see ``_noise_scale``). Default
            ``16 * eps`` of the operand dtype: about 16x the rounding noise.
        return_faulty : bool
            Return ``(C, faulty)`` with the sorted tuple of workers found corrupt.
        return_info : bool
            Return ``(C, DecodeInfo)``.
        """
        errors = check_int("errors", errors, 0, self.workers)
        rows, raw = self._check_results(results)
        if not self._decodable(rows):
            needed = self.recovery_threshold
            raise NotEnoughResultsError(
                f"{len(rows)} results arrived, {needed} are needed to decode "
                f"{type(self).__name__} with workers={self.workers}",
                received=len(rows), needed=needed)
        evals = [self._unpack(r) for r in raw]
        nfam = len(evals[0])
        if self.field is None:  # rows kept apart: no copy into one stacked array
            E = [_Rows([ev[f] for ev in evals]) for f in range(nfam)]
        else:
            E = [np.stack([ev[f] for ev in evals]) for f in range(nfam)]
        Ms = self._families(rows)
        if self.field is None:
            with np.errstate(over="ignore", invalid="ignore"):  # corrupt values may be huge
                keep, faulty, checked = self._locate_real(rows, raw, E, Ms, errors, encoding, rtol)
            wanted = self._wanted_unknowns()
            X = [self._solve_real(M[keep], Ef[keep], wanted[f]) for f, (M, Ef) in enumerate(zip(Ms, E))]
            cond = max(float(np.linalg.cond(M[keep])) for M in Ms)
        else:
            keep, faulty, checked, X = self._locate_exact(rows, E, Ms, errors)
            X = [x if w is None or x.shape[0] == len(w) and x.shape[0] != M.shape[1] else x[w]
                 for x, w, M in zip(X, self._wanted_unknowns(), Ms)]
            cond = 1.0
        out_shape = tuple(shape) if shape is not None else (encoding.shape if encoding is not None else None)
        C = self._assemble(X, out_shape)
        info = DecodeInfo(tuple(int(rows[i]) for i in faulty), tuple(int(rows[i]) for i in keep),
                          cond, checked)
        if return_info:
            return C, info
        if return_faulty:
            return C, info.faulty
        return C

    # ----------------------------------------------------------------- validation
    def _check_results(self, results: Mapping[int, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
        if not isinstance(results, Mapping):
            raise ConfigurationError(
                f"`results` must map worker index to that worker's product, got {type(results).__name__}")
        checked: dict[int, Any] = {}
        for key in results:
            w = check_int("results key (worker index)", key, 0, self.workers - 1)
            if w in checked:  # e.g. 1 and np.int64(1) both present
                raise ConfigurationError(f"`results` has worker index {w} more than once")
            checked[w] = results[key]
        rows, raw = sorted(checked), []
        for w in rows:
            r = np.asarray(checked[w])  # plain ndarray, also for galois FieldArrays
            if self.field is not None and r.dtype.kind not in "iu":
                raise ConfigurationError(
                    f"`results` over GF({self.field}) must hold integers, worker {w} gave dtype {r.dtype}")
            if self.field is None and r.dtype.kind not in "fciub":
                raise ConfigurationError(
                    f"`results` must be numeric arrays, worker {w} gave dtype {r.dtype}")
            if raw and r.shape != raw[0].shape:
                raise ConfigurationError(
                    f"`results` must all have one shape, worker {rows[0]} gave {raw[0].shape} "
                    f"and worker {w} gave {r.shape}")
            raw.append(r)
        if not rows:
            raise NotEnoughResultsError(
                f"0 results arrived, {self.recovery_threshold} are needed", received=0,
                needed=self.recovery_threshold)
        return np.array(rows), raw

    # ----------------------------------------------------------------- real field
    def _locate_real(self, rows, raw, E, Ms, errors, encoding, rtol):
        """Find the rows to keep: erase non-finite results, then search for corrupt ones."""
        r = len(rows)
        rng = np.random.default_rng(0x5EED)  # reproducible decodes
        # Random projections: two per family reduce each result to a few numbers per worker.
        Y = [_project(Ef, rng, 4) for Ef in E]
        finite = np.all([np.isfinite(y).all(axis=1) for y in Y], axis=0)
        erased = [i for i in range(r) if not finite[i]]
        tau = self._noise_scale(rows, raw, encoding, rtol)
        good = [i for i in range(r) if finite[i]]
        if not self._decodable(rows[good]):
            raise CorruptResultError(
                f"{len(erased)} results are non-finite (workers {[int(rows[i]) for i in erased]}); "
                f"the remaining {len(good)} cannot determine the product",
                suspects=[int(rows[i]) for i in erased])
        d = max(np.linalg.matrix_rank(M) for M in Ms)
        budget = max(0, errors - len(erased))
        fmax = min(budget, (len(good) - d) // 2)
        total = sum(math.comb(len(good), f) for f in range(fmax + 1))
        if total > MAX_CANDIDATES:
            raise ConfigurationError(
                f"`errors`={errors} with {len(good)} results needs {total} consistency checks, "
                f"more than {MAX_CANDIDATES}; ask for fewer errors")
        W = 1.0 / tau
        for f in range(fmax + 1):
            cands = np.array(list(itertools.combinations(good, f)), dtype=int).reshape(-1, f) if f else np.zeros((1, 0), dtype=int)
            keeps = np.array([[g for g in good if g not in c] for c in cands], dtype=int)
            if keeps.shape[1] <= d:  # nothing left over to check against
                return keeps[0], sorted(erased + list(cands[0])), False
            res = np.zeros(len(cands))
            for M, y in zip(Ms, Y):
                res = np.maximum(res, _residuals(M, y, W, keeps, d))
            ok = [j for j in np.flatnonzero(res <= 1.0) if self._decodable(rows[keeps[j]])]
            ok = np.array(ok, dtype=int)
            if len(ok) == 0:
                continue
            best = ok[np.argmin(res[ok])]
            if len(ok) > 1 and not _equivalent(Ms, Y, W, keeps[ok], good, keeps[best]):
                raise CorruptResultError(
                    f"results are inconsistent and {len(ok)} different sets of {f} workers could "
                    "explain it; more results are needed to tell which",
                    suspects=sorted({int(rows[i]) for c in cands[ok] for i in c}))
            return keeps[best], sorted(erased + list(cands[best])), True
        spare = len(good) - d
        raise CorruptResultError(
            f"results from workers {[int(x) for x in rows[good]]} are inconsistent: more than "
            f"{fmax} of them are corrupt (errors={errors} asked for, {spare} spare results allow "
            f"correcting {spare // 2} and detecting {spare})", suspects=[])

    def _noise_scale(self, rows, raw, encoding, rtol):
        """Per worker, the size a random unit projection of its rounding noise may reach.

        Rounding noise of a product is about ``eps * sqrt(inner)`` times the product's own
        magnitude, whether its terms cancel (random signs: ``||a b|| ~ ||a|| ||b|| /
        sqrt(inner)``) or add up (positive data: ``||a b|| ~ ||a|| ||b||``). The expected
        magnitude of worker w's product is ``rho * ||a_w|| * ||b_w||`` with ``rho`` the median
        over workers of ``||R_v|| / (||a_v|| ||b_v||)`` (robust to a minority of corrupt
        results); a random unit projection of noise spread over the result is that divided by
        ``sqrt(entries)``. The tolerance is ``rtol`` (default ``16 eps``) times ``sqrt(inner)``
        times that.
        """
        norms = np.array([_fro(r) if np.isfinite(r).all() else np.nan for r in raw])
        if encoding is not None and encoding.scales is not None:
            scale = np.asarray(encoding.scales[rows], dtype=np.float64)
            dt, inner = encoding.dtype, encoding.inner
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = norms / scale
            ratio = ratio[np.isfinite(ratio) & (scale > 0)]
            lo = 1.0 / math.sqrt(max(inner, 1))
            rho = float(np.clip(np.median(ratio), lo, 1.0)) if ratio.size else 1.0
            expected = rho * scale
        else:
            med = np.nanmedian(norms) if np.isfinite(norms).any() else 1.0
            expected = np.full(len(rows), med)
            dt, inner = raw[0].dtype if raw[0].dtype.kind in "fc" else np.dtype(np.float64), 1024
        eps = float(np.finfo(dt).eps)
        if rtol is None:
            rtol = 16.0 * eps
        if not rtol > 0:
            raise ConfigurationError(f"`rtol` must be positive, got {rtol}")
        entries = max(1, int(np.prod(raw[0].shape)))
        tau = rtol * math.sqrt(max(inner, 1)) * np.asarray(expected, dtype=np.float64) / math.sqrt(entries)
        # A worker whose operands are all zero (split padding, zero blocks) computes an exact 0:
        # give it a tenth of the typical tolerance instead of 0, which would overflow 1/tau and
        # make the weighted consistency check ill-conditioned.
        return np.maximum(tau, max(0.1 * float(np.median(tau)), 1e-250))

    # ----------------------------------------------------------------- GF(p)
    def _locate_exact(self, rows, E, Ms, errors):
        p = self.field
        assert p is not None
        r = len(rows)
        inrange = np.array([all(((ev[i] >= 0) & (ev[i] < p)).all() for ev in E) for i in range(r)])
        erased = [i for i in range(r) if not inrange[i]]
        good = [i for i in range(r) if inrange[i]]
        if not self._decodable(rows[good]):
            raise CorruptResultError(
                f"results of workers {[int(rows[i]) for i in erased]} are outside [0, {p}); the "
                f"remaining {len(good)} cannot determine the product",
                suspects=[int(rows[i]) for i in erased])
        d = max(_gfp.rank_mod(M % p, p) for M in Ms)
        budget = max(0, errors - len(erased))
        fmax = min(budget, (len(good) - d) // 2)
        rng = np.random.default_rng(0x5EED)
        Y = [_project_mod(Ef[good], rng, p) for Ef in E]
        pts = self._gf_points()
        bad: set[int] = set()
        if fmax > 0 and pts is not None and len(Ms) == 1:
            xs = pts[rows[good]]
            for col in range(Y[0].shape[1]):
                try:
                    loc = _gfp.berlekamp_welch(xs, Y[0][:, col], d, fmax, p)
                except ValueError as exc:
                    raise CorruptResultError(
                        f"more than {fmax} of the results from workers {[int(x) for x in rows[good]]} "
                        "are corrupt (Reed-Solomon decoding failed)") from exc
                bad.update(good[i] for i in loc)
        elif fmax > 0:
            bad = set(self._search_exact(good, Ms, Y, d, fmax, p, rows))
        keep = [i for i in good if i not in bad]
        X = self._solve_exact(np.array(keep), E, Ms, rows)
        checked = len(keep) > d
        return np.array(keep), sorted(erased + sorted(bad)), checked, X

    def _solve_exact(self, keep: np.ndarray, E: list[np.ndarray], Ms: list[np.ndarray],
                     rows: np.ndarray) -> list[np.ndarray]:
        """Solve exactly from a basis of the kept rows; every other kept row must agree."""
        p = self.field
        X = []
        for M, Ef in zip(Ms, E):
            Mk = M[keep] % p
            base = _independent_rows(Mk, p)
            sol = _gfp.solve_mod(Mk[base], Ef[keep[base]].reshape(len(base), -1), p)
            spare = [j for j in range(len(keep)) if j not in set(base)]
            if spare:
                pred = _gfp.matmul_mod(Mk[spare], sol, p)
                actual = Ef[keep[spare]].reshape(len(spare), -1)
                wrong = [int(rows[keep[spare[j]]]) for j in np.flatnonzero((pred != actual).any(axis=1))]
                if wrong:
                    raise CorruptResultError(
                        f"results are inconsistent beyond what was corrected (suspects: workers {wrong})",
                        suspects=wrong)
            X.append(sol.reshape((sol.shape[0],) + Ef.shape[1:]))
        return X

    def _search_exact(self, good, Ms, Y, d, fmax, p, rows):
        """Smallest set of rows whose removal leaves consistent results (exact rank test)."""
        for f in range(fmax + 1):
            found = []
            for cand in itertools.combinations(range(len(good)), f):
                keep = [j for j in range(len(good)) if j not in cand]
                if all(_gfp.rank_mod(np.hstack([M[np.array(good)[keep]] % p, y[keep]]), p)
                       == _gfp.rank_mod(M[np.array(good)[keep]] % p, p) for M, y in zip(Ms, Y)):
                    found.append(cand)
            if len(found) == 1 or (found and f == 0):
                return [good[j] for j in found[0]]
            if found:
                raise CorruptResultError(
                    f"results are inconsistent and {len(found)} sets of {f} workers could explain it",
                    suspects=sorted({int(rows[good[j]]) for c in found for j in c}))
        raise CorruptResultError(f"more than {fmax} results are corrupt")


# --------------------------------------------------------------------------- helpers
class _Rows:
    """The per-worker evaluation arrays of one family, kept apart (stacking them copies every
    result once more: 144 MB for nine complex 1024 x 1024 results)."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = list(arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.arrays),) + self.arrays[0].shape

    @property
    def dtype(self) -> np.dtype:
        return self.arrays[0].dtype

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, (int, np.integer)):
            return self.arrays[int(idx)]
        return _Rows([self.arrays[int(i)] for i in np.asarray(idx).ravel()])

    def stack(self) -> np.ndarray:
        return np.stack(self.arrays)

    def weighted(self, coef: np.ndarray) -> np.ndarray:
        """``coef @ rows`` for few rows of ``coef``, accumulated in place (one pass per row)."""
        dt = np.result_type(coef.dtype, self.dtype, np.float64)
        out = np.zeros((coef.shape[0],) + self.arrays[0].shape, dtype=dt)
        for j in range(coef.shape[0]):
            for i, a in enumerate(self.arrays):
                if coef[j, i] != 0:
                    out[j] += coef[j, i] * a
        return out


def _project(E: Any, rng: np.random.Generator, k: int) -> np.ndarray:
    """Reduce each worker's evaluation block to ``k`` numbers by random Gaussian projections."""
    if isinstance(E, _Rows):
        shape = E.arrays[0].shape
        x = shape[0] if shape else 1                     # 0-d results (a scalar gradient)
        y = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        u = rng.standard_normal((k, x))
        v = rng.standard_normal((k, y))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out = np.empty((len(E), k), dtype=np.result_type(E.dtype, np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            for i, a in enumerate(E.arrays):
                out[i] = ((u @ a.reshape(x, y)) * v).sum(axis=1)
        return out
    r = E.shape[0]
    flat = E.reshape(r, E.shape[1], -1) if E.ndim > 2 else E.reshape(r, -1, 1)
    u = rng.standard_normal((k, flat.shape[1]))
    v = rng.standard_normal((k, flat.shape[2]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.matmul(u, flat)                    # (r, k, y): BLAS, not einsum
        return (t * v[None]).sum(axis=2)


def _project_mod(E: np.ndarray, rng: np.random.Generator, p: int, k: int = 2) -> np.ndarray:
    r = E.shape[0]
    flat = E.reshape(r, -1)
    v = rng.integers(0, p, size=(flat.shape[1], k), dtype=np.int64)
    return _gfp.matmul_mod(flat, v, p)


def _residuals(M: np.ndarray, y: np.ndarray, W: np.ndarray, keeps: np.ndarray, d: int) -> np.ndarray:
    """Per candidate: largest weighted residual entry of y outside range(M[keep]).

    The rank-``d`` basis of ``range(M[keep])`` is found unweighted (well scaled, so the rank
    decision is sharp), then weighted and re-orthonormalised: ``range(W M) = W range(M)``.
    """
    U0, S, _ = np.linalg.svd(M[keeps], full_matrices=False)
    U0 = U0[..., :d]
    # Each candidate's own rank: a set that drops every copy of some block spans less, and a
    # spurious basis direction must not absorb an inconsistency.
    rank = (S[..., :d] > S[..., :1] * 1e-10).sum(axis=-1)
    U0 = U0 * (np.arange(d)[None, None, :] < rank[:, None, None])
    Q, _ = np.linalg.qr(U0 * W[keeps][..., None])
    Yk = y[keeps] * W[keeps][..., None]
    res = Yk - Q @ (np.conj(np.swapaxes(Q, -1, -2)) @ Yk)
    # The largest weighted residual entry: a single corrupt result is not diluted by the
    # others (tau already allows 64x the typical rounding noise). A gross value kept in a
    # candidate leaves float64 rounding of its own size in the fit: allow for that too.
    floor = 1.0 + 1e3 * np.finfo(np.float64).eps * np.abs(Yk).max(axis=(1, 2))
    return np.abs(res).max(axis=(1, 2)) / floor


def _equivalent(Ms, Y, W, keeps, good, best) -> bool:
    """Whether every consistent candidate implies the same results as the best one.

    Two candidate sets of faulty workers that fit the data equally well but predict different
    results for the workers they drop cannot be told apart: the decode would be a guess.
    """
    good = np.asarray(good)
    for M, y in zip(Ms, Y):
        Mg = M[good] * W[good][:, None]
        ref = Mg @ np.linalg.lstsq(M[best] * W[best][:, None], y[best] * W[best][:, None], rcond=None)[0]
        for keep in keeps:
            fit = Mg @ np.linalg.lstsq(M[keep] * W[keep][:, None], y[keep] * W[keep][:, None], rcond=None)[0]
            if np.max(np.abs(fit - ref)) > 100.0 * math.sqrt(len(good)):
                return False
    return True


#: Up to this condition number, decoding applies LU-solved rows of the decoding map with one
#: BLAS product (error ~cond*eps, below 1e-13 here). Above it, the same product is followed
#: by one step of iterative refinement against a residual formed to ~20 bits beyond float64
#: (:func:`_residual`): at cond 8e3 (n = 30, k = 25) the float64 solve alone, even LU against
#: the data, added as much error as the workers' own rounding (1.0e-12 in all, 7.0e-13 refined).
FAST_DECODE_MAX_CONDITION = 1e3


def _lstsq(M: np.ndarray, E: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Solve ``M X = E`` in float64/complex128 and return ``X`` (or only ``X[rows]``).

    ``M`` is small (results x unknowns); ``E`` has one column per entry of a result block.
    Full column rank: with ``Q R = M`` (QR; ``Q = I`` for a square ``M``), rows of ``R^{-1}``
    are LU-solved (``R^H Y = I``) and applied to ``Q^H E`` with one GEMM. Well-conditioned
    systems need only the rows for the unknowns wanted (MatDot needs 1 of its 2m-1).
    Ill-conditioned ones (above :data:`FAST_DECODE_MAX_CONDITION`) apply all rows, then refine
    the wanted unknowns once, ``X += R^{-1} Q^H (E - M X)``, with the residual evaluated by
    error-free splitting (:func:`_residual`), in cache-sized column chunks: the decode then adds
    about ``eps`` instead of ``cond * eps``. With results to spare, QR uses all of them, which
    averages the workers' rounding noise. Rank-deficient systems (gradient codes) get the
    least-norm solution from the SVD, whose image is all decoding needs.
    """
    block = E.shape[1:]
    wide = np.result_type(M.dtype, E.dtype, np.float64)
    Mw = M.astype(wide)
    d = M.shape[1]
    want = np.arange(d) if rows is None else np.asarray(rows)

    def data() -> np.ndarray:  # the results as one (r, entries) array
        stacked = E.stack() if isinstance(E, _Rows) else E
        return stacked.reshape(stacked.shape[0], -1).astype(wide, copy=False)

    U_, S, Vh = np.linalg.svd(Mw, full_matrices=False)
    rank = int((S > S[0] * max(M.shape) * np.finfo(np.float64).eps).sum()) if S.size else 0
    if rank < d:
        X = (np.conj(Vh[:rank].T) @ ((np.conj(U_[:, :rank].T) @ data()) / S[:rank, None]))[want]
        return X.reshape((len(want),) + block)
    if M.shape[0] == d:
        Q, R = None, Mw
    else:
        Q, R = np.linalg.qr(Mw)
    refine = S[0] / S[-1] > FAST_DECODE_MAX_CONDITION
    # rows of R^{-1} (all of them when refining): LU-solve R^H Y = I[:, rows]; then Y Q^H
    need = np.arange(d) if refine else want
    Y = np.conj(np.linalg.solve(np.conj(R.T), np.eye(d, dtype=wide)[:, need]).T)
    coef = Y if Q is None else Y @ np.conj(Q.T)
    if not refine:
        if isinstance(E, _Rows) and coef.shape[0] <= 2:
            X = E.weighted(coef).reshape(coef.shape[0], -1)
        else:
            X = coef @ data()
        return X.reshape((len(want),) + block)
    Ew = data()
    X = np.empty((len(want), Ew.shape[1]), dtype=wide)
    Ms = _Split(Mw)
    cw = coef[want]
    for s0 in range(0, Ew.shape[1], 4096):
        Ec = Ew[:, s0:s0 + 4096]
        Xc = coef @ Ec
        r = _residual(Ms, Xc, Ec)
        Xc = Xc[want]
        if np.isfinite(r).all():
            Xc += cw @ r
        X[:, s0:s0 + 4096] = Xc
    return X.reshape((len(want),) + block)


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


def _unit(peak: Any, bits: int) -> np.ndarray:
    """``2^(ceil(log2 peak) - bits)``: the grid that leaves ``bits`` bits of ``peak``."""
    peak = np.asarray(peak, dtype=np.float64)
    ok = np.isfinite(peak) & (peak > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.ceil(np.log2(np.where(ok, peak, 1.0)))
    return np.exp2(e - bits)


def _column_peak(x: np.ndarray) -> np.ndarray:
    """Per column of a 2-D ``x``, the largest magnitude of a real or imaginary part."""
    if np.iscomplexobj(x):
        f = np.ascontiguousarray(x, dtype=np.complex128).view(np.float64)
        return np.abs(f).max(axis=0).reshape(-1, 2).max(axis=1)
    return np.abs(x).max(axis=0)


class _Split:
    """A small matrix ``M`` as ``M1 + M2`` with ``M1`` on one grid of ``bits`` bits, exactly.

    ``bits`` is chosen so that products of two such slices are exact and the sum of the
    ``terms`` real products behind one entry of ``M1 @ X1`` (2 per column of a complex ``M``)
    stays below 2^53: ``2 bits + ceil(log2 terms) <= 53`` (23 bits for 25 complex unknowns).
    """

    def __init__(self, M: np.ndarray) -> None:
        terms = max(1, M.shape[1] * (2 if np.iscomplexobj(M) else 1))
        self.bits = (53 - math.ceil(math.log2(terms))) // 2
        peak = float(_column_peak(M).max()) if M.size else 0.0
        self.M = M
        self.M1 = _round_to(M, _unit(peak, self.bits))
        self.M2 = M - self.M1                            # exact


def _residual(M: _Split, X: np.ndarray, E: np.ndarray) -> np.ndarray:
    """``E - M X`` with an error of about ``2^-20 eps |M| |X|`` instead of ``eps |M| |X|``.

    Error-free splitting (one level of Ozaki et al.'s scheme): ``M1`` and ``X1`` keep the
    leading ``M.bits`` bits of ``M`` (one grid for the whole matrix) and of each column of
    ``X``, so every entry of ``M1 X1`` is a sum of integers on one grid per column, which BLAS
    forms exactly in any order (see :class:`_Split`). ``E - M1 X1`` then loses nothing that
    matters, and the rest, ``M X2 + M2 X1`` with ``X2 = X - X1`` (exact), is ``2^-bits``
    smaller, so its float64 rounding is too. Three small GEMMs; no extended-precision type.
    """
    X1 = _round_to(X, _unit(_column_peak(X), M.bits))
    X2 = X - X1
    r = M.M1 @ X1
    np.subtract(E, r, out=r)
    rest = M.M @ X2
    rest += M.M2 @ X1
    r -= rest
    return r


def _independent_rows(M: np.ndarray, p: int) -> list[int]:
    """Greedy choice of rows of M (mod p) that form a basis of its row space."""
    chosen: list[int] = []
    rank = 0
    for i in range(M.shape[0]):
        trial = chosen + [i]
        rk = _gfp.rank_mod(M[trial], p)
        if rk > rank:
            chosen, rank = trial, rk
        if rank == M.shape[1]:
            break
    return chosen
