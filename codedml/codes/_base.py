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
import functools
import itertools
import math
import statistics
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np

from ..errors import ConfigurationError, CorruptResultError, NotEnoughResultsError
from . import _gfp
from ._eft import _residual, _Split, compensated_matmul
from ._encode import _REAL
from ._field import residues_of
from ._validate import _F64, check_int

# the compiled loops (codedml/codes/_kernels.c), built where a C compiler was found: the
# decoder's consistency check takes its projections and sums of squares from `proj_sq`
try:
    from . import _kernels as _K
except ImportError:  # pragma: no cover - exercised by the fresh-clone check without gcc
    _K = None

#: Whether the consistency check may run the compiled ``proj_sq`` (False: numpy's products
#: and norms, as where the module is not built; the tests run both).
PROJ_SQ = True
#: Whether the consistency check may take its weighted residual (the common case: every
#: result kept) from the compiled ``wresid`` (False: numpy's QR and products, as where the
#: module is not built; the tests run both).
WRESID = True

__all__ = ["Task", "Encoding", "DecodeInfo", "LinearCode"]

#: Upper bound on the candidate supports tried by the exhaustive locator.
MAX_CANDIDATES = 200_000

#: Above this worst-case condition number, float32 inputs get float64 worker operands under
#: ``precision="auto"``: measured decoded error of float32 workers is about 4.5e-8 * cond
#: (n=30, k=25: cond 8.0e3, error 3.6e-4), so 1000 keeps it below 1e-4 with a 2x margin.
FLOAT32_MAX_CONDITION = 1000.0

#: Above this worst-case condition number, float64 inputs get *compensated* worker products
#: under ``precision="auto"`` (:func:`~codedml.codes._eft.compensated_matmul`, 3 GEMMs): the
#: decode amplifies the workers' own float64 rounding, which grows with the inner dimension,
#: by up to the condition number. Measured on the worst subset of MDS(30, 25) (cond 8.0e3):
#: plain products 7.0e-13 at inner dimension 180 and 1.37e-12 at 720, i.e. up to 1.7e-16 *
#: cond; compensated 2.6e-13 at every inner dimension up to 4096. 2500 keeps plain products
#: below 4.3e-13, a 2x margin under the 1e-12 the codes promise.
COMPENSATE_MIN_CONDITION = 2500.0

#: ... and up to this one. Compensated products leave the rounding of the encoded operands,
#: measured at 0.13-0.15 * cond * eps on worst subsets (cond 2.7e4 to 1.7e6; plain float64:
#: 0.7-1.0 * cond * eps), which alone passes 1e-12 above about 3e4: there compensation buys a
#: constant factor (about 5x) for 3x the worker flops, not the promise, so ``"auto"`` leaves
#: it off (``precision="compensated"`` asks for it).
COMPENSATE_MAX_CONDITION = 3e4

#: The ``precision=`` values of :meth:`LinearCode.encode`.
PRECISIONS = ("auto", "float32", "float64", "compensated")


@dataclass(frozen=True, eq=False)
class Task:
    """One worker's share of a coded product: the worker computes ``task.a @ task.b``.

    Over GF(p) the operands are ``int64`` residues in ``[0, p)`` (:class:`~codedml.codes.Residues`, plain
    ndarrays whose ``a @ b`` is the exact product mod ``p``, BLAS on exact chunks, as
    :meth:`compute`); galois is not imported for them. :meth:`as_galois` gives them as galois
    ``FieldArray`` s (importing galois and building ``GF(p)`` on first use: about 1.5 s).
    """

    worker: int
    a: Any
    b: Any
    field: int | None = None
    compensated: bool = False
    """Real field: compute ``a @ b`` compensated (one rounding of the result plus ``2^-bits``
    of a plain GEMM's error; see
    :func:`~codedml.codes._eft.compensated_matmul`) rather than by one float64 GEMM."""

    @classmethod
    def _of(cls, worker: int, a: Any, b: Any, field: int | None, compensated: bool) -> "Task":
        """``Task(worker, a, b, field, compensated)`` without the frozen dataclass's
        ``__init__`` (one ``object.__setattr__`` per field): the encodes' tasks, per job."""
        t = object.__new__(cls)
        d = t.__dict__
        d["worker"] = worker
        d["a"] = a
        d["b"] = b
        d["field"] = field
        d["compensated"] = compensated
        return t

    def compute(self) -> np.ndarray:
        """The worker's product ``a @ b`` (exact mod p over GF(p); compensated when asked)."""
        if self.field is None:
            return compensated_matmul(self.a, self.b) if self.compensated else self.a @ self.b
        a = np.asarray(self.a.view(np.ndarray), dtype=np.int64)
        b = np.asarray(self.b.view(np.ndarray), dtype=np.int64)
        return _gfp.matmul_mod(a, b, self.field)

    def as_galois(self) -> tuple[Any, Any]:
        """``(a, b)`` as galois ``FieldArray`` s of ``GF(p)`` (GF(p) tasks only; no copy).

        Imports galois and builds the field class on first use (cached per prime).
        """
        if self.field is None:
            raise ConfigurationError(
                "`as_galois` needs a task over GF(p); this task is real (field=None)")
        from ._field import field_array

        return field_array(self.a, self.field), field_array(self.b, self.field)

    def __repr__(self) -> str:
        extra = ", compensated" if self.compensated else ""
        return (f"Task(worker={self.worker}, a={_shape(self.a)} {_dtype(self.a)}, "
                f"b={_shape(self.b)} {_dtype(self.b)}{extra})")


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
    compensated : bool
        Whether the workers compute compensated products (see :attr:`Task.compensated`).
    """

    #: ``(ta, tb)`` where every task's ``a`` is a row ``ta[w]`` of one C-ordered array and
    #: every ``b`` the one C-ordered array ``tb`` (not compensated; float64 for the small
    #: encode, float32, float64 or GF(p)'s int64 residues for ``PolyDotCode._encode_runs``):
    #: set by the encodes that build them so, whose Task objects are then built on first
    #: use; the runtime sends and checks the arrays themselves (internal).
    _stack: tuple[np.ndarray, np.ndarray] | None = None

    def __init__(self, code: LinearCode, tasks: list[Task] | None, shape: tuple[int, ...],
                 inner: int, dtype: np.dtype, compensated: bool = False,
                 scales: np.ndarray | None = None) -> None:
        self.code = code
        if tasks is not None:
            self._tasks = tasks   # (else _stack's, built by the property below on first use)
        self.shape = tuple(shape)
        self.inner = int(inner)
        self.dtype = np.dtype(dtype)
        self.compensated = bool(compensated)
        # ``scales`` given: products against operands the root does not hold (resident blocks)
        if code.field is not None:
            self.scales = None
        elif scales is not None:
            self.scales = np.asarray(scales, dtype=np.float64)
        else:
            # one norm per distinct operand: tasks that share B (MDS-type codes) read it once
            norms: dict[int, float] = {}

            def fro(x: Any) -> float:
                if id(x) not in norms:
                    norms[id(x)] = _fro(x)
                return norms[id(x)]

            with np.errstate(over="ignore", invalid="ignore"):  # huge or non-finite inputs
                self.scales = np.array([fro(t.a) * fro(t.b) for t in tasks])

    @classmethod
    def _of_stack(cls, code: LinearCode, shape: tuple[int, ...], inner: int, dtype: np.dtype,
                  scales: list[float] | None, ta: np.ndarray, tb: np.ndarray) -> "Encoding":
        """An encoding given as :attr:`_stack` ``(ta, tb)``: worker ``w``'s task is ``ta[w] @
        tb`` (operands of ``dtype``, not compensated), its Task objects built on first use;
        ``scales`` Python floats (a real code's) or None (GF(p)). ``Encoding(code, None,
        shape, inner, dtype, False, scales)`` without the argument handling of ``__init__``,
        per job: a small encode's (``PolyDotCode._encode_small``) and a large one's with
        ``inner_blocks = col_blocks = 1`` (``PolyDotCode._encode_runs``)."""
        out = object.__new__(cls)
        d = out.__dict__
        d["code"], d["shape"], d["inner"], d["dtype"] = code, shape, inner, dtype
        d["compensated"], d["_stack"] = False, (ta, tb)
        if scales is None:
            d["scales"] = None
        else:
            d["_scale_list"] = scales   # (the array on first use)
        return out

    @functools.cached_property
    def scales(self) -> np.ndarray:   # type: ignore[override]
        """The noise scales of a real encoding made by :meth:`_of_stack`, as an array on
        first use (a small job's decode from its data results never asks); every other
        encoding sets its own (in ``__init__``, or None over GF(p))."""
        return np.array(self.__dict__["_scale_list"], dtype=np.float64)

    @functools.cached_property
    def _tasks(self) -> list[Task]:
        """The tasks of an encoding given as :attr:`_stack` (an encoding given its tasks holds
        them in its ``__dict__``, which this non-data descriptor leaves alone)."""
        ta, tb = self._stack
        p = self.code.field
        if p is None:
            return [Task._of(w, a, tb, None, False) for w, a in enumerate(ta)]
        rb = residues_of(tb, p)   # (one view of the shared B, as the real tasks share it)
        return [Task._of(w, residues_of(a, p), rb, p, False) for w, a in enumerate(ta)]

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """The product's shape after the split's zero padding (what ``decode`` assembles
        before ``encoding=`` or ``shape=`` cuts it to :attr:`shape`)."""
        return self.code.padded_shape(self.shape)

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, i):  # type: ignore[override]
        return self._tasks[i]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __repr__(self) -> str:
        return f"Encoding({self.code!r}, {len(self)} tasks, product shape {self.shape})"


#: Exact decoders (basis rows, inverse mod p) per (code value, family, worker subset), least
#: recently used dropped first beyond :data:`DECODER_CACHE_SIZE` entries.
_DECODERS: OrderedDict[Any, tuple[list[int], np.ndarray]] = OrderedDict()
DECODER_CACHE_SIZE = 256

#: condition_bound() per code value (bounded; oldest dropped first).
_COND_CACHE: dict[Any, float] = {}


def _cache_key(code: Any) -> Any:
    try:
        hash(code)
    except TypeError:
        return None
    return (type(code), code)


def _input_dtype(A: Any, B: Any) -> np.dtype:
    """The precision the inputs arrived in: float32 (or narrower) or float64 (integers too)."""
    if type(A) is np.ndarray and type(B) is np.ndarray:
        dt = np.result_type(A.dtype, B.dtype)
    else:
        dt = np.result_type(*(np.asarray(X).dtype for X in (A, B)))
    return np.dtype(np.float32) if dt in (np.float16, np.float32) else np.dtype(np.float64)


def _fro(x: Any) -> float:
    v = np.asarray(x).ravel()
    if np.iscomplexobj(v):  # one contiguous dot over (re, im) pairs, not two strided ones
        v = np.ascontiguousarray(v).view(v.real.dtype)
    return float(np.linalg.norm(v))


def _scaled_fro(x: Any) -> float:
    """The Frobenius norm of ``x`` without its squares overflowing: ``m ||x / m||`` with ``m``
    the largest magnitude (finite for any finite ``x`` whose norm is; ``_fro``'s sum of squares
    overflows from entries of about 1e154). NaN where an entry is not finite."""
    v = np.asarray(x).ravel()
    if np.iscomplexobj(v):
        v = np.ascontiguousarray(v).view(v.real.dtype)
    if v.size == 0:
        return 0.0
    v = v.astype(np.float64, copy=False)
    if not np.isfinite(v).all():
        return float("nan")
    m = float(np.abs(v).max())
    if m == 0.0:
        return 0.0
    with np.errstate(over="ignore"):
        return m * float(np.linalg.norm(v / m))


@dataclass(frozen=True)
class DecodeInfo:
    """What a decode found: workers located as faulty, workers used, and the condition number."""

    faulty: tuple[int, ...]
    used: tuple[int, ...]
    condition: float
    checked: bool = dc_field(default=True)
    """False when no result was left over to check consistency with (no redundancy used)."""

    @classmethod
    def _of(cls, faulty: tuple[int, ...], used: tuple[int, ...], condition: float,
            checked: bool) -> "DecodeInfo":
        """``DecodeInfo(faulty, used, condition, checked)`` without the frozen dataclass's
        ``__init__`` (one ``object.__setattr__`` per field): a small job's decode."""
        out = object.__new__(cls)
        d = out.__dict__
        d["faulty"], d["used"], d["condition"], d["checked"] = faulty, used, condition, checked
        return out


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
    def _encode(self, A: Any, B: Any, precision: str) -> tuple[Any, ...]:
        """Per-worker operand pairs, product shape, worker inner dimension, operand dtype, and
        optionally (a fifth item) the per-worker scales ``||a_w||_F ||b_w||_F`` when the hook
        knows them cheaper than a pass over the tasks (else :class:`Encoding` computes them)."""

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
        if precision in ("float64", "compensated") or np.dtype(input_dtype) == np.float64:
            return np.dtype(np.float64)
        return np.dtype(np.float32 if self.condition_bound() <= FLOAT32_MAX_CONDITION else np.float64)

    def compensates(self, input_dtype: Any, operand_dtype: Any, precision: str) -> bool:
        """Whether workers compute compensated products for this code.

        What :meth:`encode` decides for inputs of ``input_dtype`` encoded into worker operands
        of ``operand_dtype`` under ``precision`` (see :meth:`encode`): never over GF(p) or for
        float32 operands; always for ``precision="compensated"``; under ``"auto"`` for float64
        inputs when the decode amplifies the workers' rounding and the worst-case condition
        number lies between :data:`COMPENSATE_MIN_CONDITION` and
        :data:`COMPENSATE_MAX_CONDITION`. The runtime asks the same question for products
        against stored operands, so both sides agree.

        Parameters
        ----------
        input_dtype, operand_dtype : dtype-like
            The dtype the inputs arrived in and the dtype of the worker operands.
        precision : {"auto", "float32", "float64", "compensated"}

        Examples
        --------
        >>> import numpy as np
        >>> from codedml.codes import MDSCode
        >>> MDSCode(5, 3).compensates(np.float64, np.float64, "compensated")
        True
        >>> MDSCode(5, 3).compensates(np.float32, np.float32, "auto")
        False
        """
        if precision not in PRECISIONS:
            raise ConfigurationError(
                f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        # the decision per (input dtype, operand dtype, precision) and the thresholds it reads,
        # kept per code (every encode asks; it needs the condition number)
        key = (np.dtype(input_dtype), np.dtype(operand_dtype), precision,
               COMPENSATE_MIN_CONDITION, COMPENSATE_MAX_CONDITION)
        memo = self.__dict__.get("_comp_memo")
        if memo is None:
            memo = self.__dict__["_comp_memo"] = {}
        got = memo.get(key)
        if got is None:
            if len(memo) >= 64:   # (bounded: the thresholds could be changed again and again)
                memo.clear()
            got = memo[key] = self._compensates(*key[:3])
        return got

    def _compensates(self, input_dtype: np.dtype, operand_dtype: np.dtype, precision: str) -> bool:
        if self.field is not None or operand_dtype not in (np.float64, np.complex128):
            return False
        if precision == "compensated":
            return True
        return (precision == "auto" and input_dtype not in (np.float32, np.float16)
                and self._amplifies_worker_rounding()
                and COMPENSATE_MIN_CONDITION < self.condition_bound() <= COMPENSATE_MAX_CONDITION)

    #: Whether ``_encode`` leaves the NaN/Inf check of real inputs to :meth:`encode`, which
    #: makes it on the tasks' norms (codes whose every input entry enters some task).
    _finite_from_norms = False

    def _amplifies_worker_rounding(self) -> bool:
        """Whether the decode amplifies the workers' rounding by up to the condition number
        (codes that solve for their coefficient blocks; not those that only add results)."""
        return False

    def condition_bound(self) -> float:
        """Worst-case condition number of decoding from ``recovery_threshold`` results.

        Computed from the erasure patterns that are worst for the code (see
        :func:`codedml.codes.worst_case_condition`; exact enumeration when it is cheap) and
        cached per code *value* (codes are immutable; equal codes share it), since each
        product from the left builds its decoder anew.
        """
        cached = self.__dict__.get("_cond_bound")
        if cached is None:
            key = _cache_key(self)
            cached = _COND_CACHE.get(key) if key is not None else None
            if cached is None:
                cached = self._worst_condition()
                if key is not None:
                    if len(_COND_CACHE) >= 256:
                        _COND_CACHE.pop(next(iter(_COND_CACHE)))
                    _COND_CACHE[key] = cached
            self.__dict__["_cond_bound"] = cached
        return cached

    def _worst_condition(self) -> float:
        """What :meth:`condition_bound` caches: the worst case over cyclic-run erasures and
        5000 sampled subsets (exact enumeration when there are fewer)."""
        from .numerics import worst_case_condition

        return worst_case_condition(self, max_subsets=5000).value

    def _solve_real(self, M: np.ndarray, E: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Solve one family's system over the reals (see :func:`_lstsq`)."""
        return _lstsq(M, E, rows)

    def _solve_family(self, M: np.ndarray, E: Any, want: np.ndarray | None,
                      workers: np.ndarray) -> np.ndarray:
        """Solve one family from the kept results of ``workers`` (systematic codes use the
        worker indices to skip the solve for data blocks that arrived as they are)."""
        return self._solve_real(M, E, want)

    def _wanted_unknowns(self) -> list[np.ndarray | None]:
        """Per family, the unknowns ``_assemble`` reads (``None``: all of them)."""
        return [None] * len(self._families(np.arange(min(1, self.workers))))

    @property
    def systematic_workers(self) -> tuple[int, ...]:
        """The workers whose results are plain data (a systematic code's data workers):
        with all of them among the results, decode is assembly, no solve. The runtime waits
        briefly for them when a decodable set has arrived without them (docs/runtime.md,
        "Waiting for systematic results"). Empty for codes without such workers.

        Examples
        --------
        >>> from codedml.codes import MDSCode
        >>> MDSCode(8, 6, systematic=True).systematic_workers
        (0, 1, 2, 3, 4, 5)
        >>> MDSCode(8, 6, systematic=False).systematic_workers
        ()
        """
        return ()

    def decodable(self, workers: Iterable[Any]) -> bool:
        """Whether results from ``workers`` (worker indices) determine the product.

        Always true for ``recovery_threshold`` or more distinct workers; some codes decode from
        fewer when the right ones answered (a replication code once every block has a copy, a
        gradient code once the all-ones vector lies in the span of their coefficients). Says
        nothing about corrupt results: correcting ``e`` of them needs ``2e`` results more.

        Parameters
        ----------
        workers : iterable of int
            Distinct worker indices in ``[0, workers)``, in any order; a mapping counts by its
            keys, so ``code.decodable(results)`` asks about the results at hand.

        Raises
        ------
        ConfigurationError
            An index that is not an integer, out of range or given twice.

        Examples
        --------
        >>> from codedml.codes import ReplicationCode
        >>> code = ReplicationCode(6, 3)          # worker w computes block w mod 3
        >>> code.decodable([0, 1, 5]), code.decodable({0, 3, 4})
        (True, False)
        """
        return self._recovers(self._check_workers(workers))

    def _check_workers(self, workers: Iterable[Any]) -> np.ndarray:
        """``workers`` as a sorted int array of distinct indices in range (else ConfigurationError)."""
        if isinstance(workers, (str, bytes)) or not isinstance(workers, Iterable):
            raise ConfigurationError(
                f"`workers` must be an iterable of worker indices, got {type(workers).__name__}")
        seen: set[int] = set()
        for x in workers:
            w = check_int("workers", x, 0, self.workers - 1)
            if w in seen:
                raise ConfigurationError(f"`workers` has worker index {w} more than once")
            seen.add(w)
        return np.array(sorted(seen), dtype=int)

    def _recovers(self, rows: np.ndarray) -> bool:
        """:meth:`decodable` on validated, sorted indices (default: enough of them)."""
        return len(rows) >= self.recovery_threshold

    def _decode_landed(self, land: np.ndarray, rows: list[int], encoding: Any) -> Any:
        """``decode(results, encoding=encoding, return_info=True)`` for the ``k`` results of
        workers ``rows`` that a runtime job's poll landed in ``land`` (``land[w]`` worker
        ``w``'s), where a code has a shorter way to it than :meth:`decode`; None (here:
        always) where the caller is to ask :meth:`decode`."""
        return None

    def _decided_by_count(self) -> bool:
        """Whether :meth:`_recovers` answers from the number of rows alone (whichever they
        are), so that a caller with the count need not build the array: true of this
        class's test, unless a subclass overrides it or it is set on the instance."""
        return type(self)._recovers is LinearCode._recovers and "_recovers" not in self.__dict__

    def _recovers_bound(self) -> int:
        """The fewest workers :meth:`_recovers` of the same class accepts (here: the count
        test's threshold). A class that overrides ``_recovers`` declares its own beside it,
        or :meth:`_fewest_decodable` takes 1."""
        return self.recovery_threshold

    def _fewest_decodable(self) -> int:
        """A lower bound on the size of every decodable set of workers: a job gathers that
        many replies in one poll before it looks. The ``_recovers_bound`` of the class that
        defines the ``_recovers`` in use; 1 (always a bound) where that class declares none,
        or where ``decodable`` is overridden or either is set on the instance."""
        cls, d = type(self), self.__dict__
        if cls.decodable is not LinearCode.decodable or "decodable" in d or "_recovers" in d:
            return 1
        got = d.get("_fewest_kept")   # kept on the code: a job asks on every submission
        if got is None:
            owner = next(c for c in cls.__mro__ if "_recovers" in c.__dict__)
            got = d["_fewest_kept"] = (owner._recovers_bound(self)
                                       if "_recovers_bound" in owner.__dict__ else 1)
        return got

    def _output_multiples(self, ndim: int) -> tuple[int, ...]:
        """Per axis of the decoded product, the multiple the split pads it to (1: no padding).

        ``encode`` zero-pads ``A``'s rows (and ``B``'s columns) to these multiples; the
        decoded array then has the padded shape until ``encoding=`` or ``shape=`` cuts it."""
        return (1,) * ndim

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape the decoded product has before padding is removed, for a product of
        ``shape`` (``A``'s rows and ``B``'s columns rounded up to the split's multiples)."""
        shape = tuple(int(x) for x in shape)
        mults = self._output_multiples(len(shape))
        return tuple(max(m, -(-x // m) * m) if m > 1 else x for x, m in zip(shape, mults))

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
        precision : {"auto", "float32", "float64", "compensated"}
            Real field only: the worker arithmetic. Encoding always runs in float64 and
            decoding in float64/complex128. ``"float32"``/``"float64"``: operands of that
            dtype, one GEMM per worker. ``"compensated"``: float64 operands and a compensated
            product (:attr:`Task.compensated`; three GEMMs, ``2^-bits`` of a plain GEMM's error
            plus one rounding of the result).
            ``"auto"`` gives float32 inputs float32 operands unless the code's worst-case
            condition number exceeds :data:`FLOAT32_MAX_CONDITION`, where float32 worker
            arithmetic would push the decoded relative error past 1e-4 (those workers compute
            in float64); it gives float64 inputs float64 operands, with compensated products
            for the polynomial-family codes whose worst-case condition number lies between
            :data:`COMPENSATE_MIN_CONDITION` and :data:`COMPENSATE_MAX_CONDITION`: there the
            decode would amplify the workers' own rounding past 1e-12 (the float64 promise)
            at large inner dimensions, and compensation keeps it below (n = 30 with 5
            redundant workers, cond 8.0e3: 2.6e-13 instead of up to 1.4e-12).
        """
        if precision not in PRECISIONS:
            raise ConfigurationError(
                f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        out = self._encode(A, B, precision)
        pairs, shape, inner, dtype = out[:4]
        scales = out[4] if len(out) > 4 else None   # a hook may know them without a pass
        if self.field is None:
            comp = self.compensates(_input_dtype(A, B), dtype, precision)
            tasks = [Task._of(w, a, b, None, comp) for w, (a, b) in enumerate(pairs)]
            return self._checked_scales(Encoding(self, tasks, shape, inner, dtype, comp, scales), A, B)
        # int64 residues whose ``@`` is exact mod p: no galois (see _field.py)
        tasks = [Task(w, residues_of(a, self.field), residues_of(b, self.field), self.field)
                 for w, (a, b) in enumerate(pairs)]
        return Encoding(self, tasks, shape, inner, dtype)

    def _checked_scales(self, enc: Encoding, A: Any, B: Any) -> Encoding:
        """``enc`` once its noise scales are known good: a NaN/Inf input that reached a
        task's norm refused by name, scales that sums of squares got wrong taken again."""
        if _redo(enc.scales.tolist()):
            # (a scale of exactly 0 beside normal ones is a task of zero operands: kept)
            if self._finite_from_norms and not np.isfinite(enc.scales).all():
                # a NaN/Inf input reaches some task's norm: named here
                from ._validate import check_finite
                check_finite("A", np.asarray(A))
                check_finite("B", np.asarray(B))
            # finite inputs whose squares overflowed (entries from about 1e154) or
            # underflowed (below about 1e-154: subnormal scales, or every scale 0, which
            # zero inputs also give): the scales again without either, or a named refusal
            # where even they do not fit (an infinite noise scale switched the corruption
            # check off, a zero one left a floor far above the results)
            enc.scales = _robust_scales(enc._tasks, enc.scales, A, B)
        return enc

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
            spare results allow are corrected and the rest detected. Never more than ``e``
            are corrected, however many results are given: the caller chooses the budget
            (the runtime asks for ``max(e, (r - k) // 2)`` with ``r`` results, the full
            correction power of what arrived). Results beyond what is
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
        check_rtol(rtol)
        rows, raw = self._check_results(results, encoding)
        if not self._recovers(rows):
            needed = self.recovery_threshold
            raise NotEnoughResultsError(
                f"{len(rows)} results arrived, {needed} are needed to decode "
                f"{type(self).__name__} with workers={self.workers}",
                received=len(rows), needed=needed)
        with np.errstate(over="ignore", invalid="ignore"):  # a corrupt result may be Inf
            evals = [self._unpack(r) for r in raw]
        nfam = len(evals[0])
        if self.field is None:  # rows kept apart: no copy into one stacked array
            E = [_Rows([ev[f] for ev in evals]) for f in range(nfam)]
        else:
            E = [np.stack([ev[f] for ev in evals]) for f in range(nfam)]
        Ms = self._families(rows)
        if self.field is None:
            with np.errstate(over="ignore", invalid="ignore"):  # corrupt values may be huge
                keep, faulty, checked = self._locate_real(rows, raw, self._check_rows(raw, E), Ms,
                                                          errors, encoding, rtol)
            wanted = self._wanted_unknowns()
            X = [self._solve_family(M[keep], Ef[keep], wanted[f], rows[keep])
                 for f, (M, Ef) in enumerate(zip(Ms, E))]
            cond = max(_factors(M[keep]).cond for M in Ms)  # cached per subset
        else:
            keep, faulty, checked, X = self._locate_exact(rows, E, Ms, errors)
            X = [x if w is None or x.shape[0] == len(w) and x.shape[0] != M.shape[1] else x[w]
                 for x, w, M in zip(X, self._wanted_unknowns(), Ms)]
            cond = 1.0
        if shape is not None:
            C = self._cut(self._assemble(X, None), shape)
        elif encoding is not None:
            C = self._assemble(X, encoding.shape)
        else:
            C = self._assemble(X, None)
            self._refuse_if_padded(C, raw[0].dtype, cond)
        info = DecodeInfo(tuple(int(rows[i]) for i in faulty), tuple(int(rows[i]) for i in keep),
                          cond, checked)
        if return_info:
            return C, info
        if return_faulty:
            return C, info.faulty
        return C

    def _cut(self, C: np.ndarray, shape: Any) -> np.ndarray:
        """``C`` (padded) cut to the product's ``shape``, which must fit the padded layout."""
        try:
            want = tuple(shape)
        except TypeError as exc:
            raise ConfigurationError(
                f"`shape` must be a sequence of ints (the product's shape), got {shape!r}") from exc
        if len(want) != C.ndim:
            raise ConfigurationError(
                f"`shape` must have {C.ndim} entries for this product (decoded padded shape "
                f"{C.shape}), got {want}")
        want = tuple(check_int("shape", x, 0) for x in want)
        for ax, (x, have, m) in enumerate(zip(want, C.shape, self._output_multiples(C.ndim))):
            lo = max(0, have - m + 1)
            if not lo <= x <= have:
                raise ConfigurationError(
                    f"`shape`={want} does not fit the decoded product: axis {ax} has {have} "
                    f"entries (padded to a multiple of {m}), so it must be between {lo} and "
                    f"{have}, got {x}")
        return np.ascontiguousarray(C[tuple(slice(0, x) for x in want)])

    def _finish_fast(self, C: np.ndarray, info: DecodeInfo, rdtype: np.dtype, encoding: Any,
                     shape: Any, return_faulty: bool, return_info: bool) -> Any:
        """What a code's fast decode path returns, from its padded product ``C``: cut to
        ``shape`` or to ``encoding``'s shape, or, with neither, refused where padding may hide
        the shape (judged in the results' dtype ``rdtype``, as the general path does); then
        ``C``, ``(C, info.faulty)`` or ``(C, info)``, as :meth:`decode` is asked."""
        if shape is not None:
            C = self._cut(C, shape)
        elif encoding is not None:
            want = encoding.shape
            if C.shape == want:            # no padding to cut
                C = np.ascontiguousarray(C)
            elif C.shape[1:] == want[1:]:  # padding rows only (an MDS-type code's)
                C = np.ascontiguousarray(C[:want[0]])
            else:
                C = np.ascontiguousarray(C[tuple(slice(0, x) for x in want)])
        else:
            # the results' dtype, not C's float64: float32 rounding left in solved padding rows
            # must not pass for data (the general path passes raw[0].dtype too)
            self._refuse_if_padded(C, rdtype, info.condition)
        if return_info:
            return C, info
        if return_faulty:
            return C, info.faulty
        return C

    def _refuse_if_padded(self, C: np.ndarray, dtype: np.dtype, cond: float) -> None:
        """Without ``encoding=``/``shape=`` the decode cannot know the product's shape: refuse
        when the split may have padded it, i.e. when the last row (column) along a padded axis
        is zero, as zero padding of ``A`` (``B``) leaves it, within the decode's rounding.
        A product whose genuine last row is that small is refused too (the same remedy)."""
        mults = self._output_multiples(C.ndim)
        if C.size == 0 or all(m == 1 for m in mults):
            return
        if self.field is None:
            eps = float(np.finfo(dtype).eps) if np.dtype(dtype).kind in "fc" else float(np.finfo(np.float64).eps)
            big = float(np.max(np.abs(C)))
            # Decoded padding measured at up to 2.3 * eps * cond * max|C| (float32 and float64
            # workers, inner dimension up to 3000, every construction): a 100x margin.
            tol = min(0.1, 256.0 * eps * max(float(cond), 1.0)) * big
        else:
            tol = 0.0
        for ax, m in enumerate(mults):
            if m > 1 and not float(np.max(np.abs(np.take(C, -1, axis=ax)))) > tol:
                raise ConfigurationError(
                    f"decode cannot tell the product's shape: {type(self).__name__} pads axis "
                    f"{ax} to a multiple of {m}, and the decoded array, of padded shape "
                    f"{C.shape}, ends there in zeros as that padding leaves it; pass "
                    "`encoding=` (what encode returned) or `shape=` (the product's true shape)")

    # ----------------------------------------------------------------- validation
    def _check_results(self, results: Mapping[int, Any],
                       encoding: "Encoding | None" = None) -> tuple[np.ndarray, list[np.ndarray]]:
        if not isinstance(results, Mapping):
            raise ConfigurationError(
                f"`results` must map worker index to that worker's product, got {type(results).__name__}")
        checked: dict[int, Any] = {}
        n = self.workers
        for key in results:
            # plain ints in range (the runtime's keys) need no further look
            w = key if type(key) is int and 0 <= key < n else check_int(
                "results key (worker index)", key, 0, n - 1)
            if w in checked:  # e.g. 1 and np.int64(1) both present
                raise ConfigurationError(f"`results` has worker index {w} more than once")
            checked[w] = results[key]
        rows, raw = sorted(checked), []
        for w in rows:
            r = checked[w]
            if type(r) is not np.ndarray:
                r = np.asarray(r)  # plain ndarray, also for galois FieldArrays
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
        if encoding is not None:
            _check_against(encoding, rows, raw)
        return np.array(rows), raw

    # ----------------------------------------------------------------- real field
    def _check_rows(self, raw: list[np.ndarray], E: list[Any]) -> list[Any]:
        """What the consistency check projects for the families ``E`` of the results
        ``raw``: ``E`` itself; a code whose one family is its results in a packed form
        gives that form instead (the same projections, without the unpacked copies)."""
        return E

    def _locate_real(self, rows, raw, E, Ms, errors, encoding, rtol):
        """Find the rows to keep: erase non-finite results, then search for corrupt ones."""
        r = len(rows)
        # Random projections: four per family reduce each result to a few numbers per worker,
        # drawn from one seeded generator in family order (reproducible decodes; cached)
        draws = _draws(tuple(_dims(Ef) for Ef in E), 4)
        # one family whose rows are the results themselves (or their packed halves): the
        # projections and the results' sums of squares (the noise scale's norms) in one
        # compiled pass over them
        both = _project_sq(E[0], *draws[0], raw) if len(E) == 1 else None
        if both is not None:
            Y, sq = [both[0]], both[1]
        else:
            Y, sq = [_project(Ef, u, v) for Ef, (u, v) in zip(E, draws)], None
        if all(np.isfinite(y).all() for y in Y):   # (the common case: one look per family)
            erased, good = [], list(range(r))
        else:
            finite = np.all([np.isfinite(y).all(axis=1) for y in Y], axis=0)
            erased = [i for i in range(r) if not finite[i]]
            good = [i for i in range(r) if finite[i]]
        if not self._recovers(rows[good]):
            raise CorruptResultError(
                f"{len(erased)} results are non-finite (workers {[int(rows[i]) for i in erased]}); "
                f"the remaining {len(good)} cannot determine the product",
                suspects=[int(rows[i]) for i in erased])
        Fs = [_factors(M) for M in Ms]  # the SVD is cached per subset
        d = max(F.rank for F in Fs)
        if len(good) <= d:  # nothing left over to check against: no noise scale needed
            return np.array(good, dtype=int), erased, False
        tau = self._noise_scale(rows, raw, encoding, rtol, sq)
        budget = max(0, errors - len(erased))
        fmax = min(budget, (len(good) - d) // 2)
        total = sum(math.comb(len(good), f) for f in range(fmax + 1))
        if total > MAX_CANDIDATES:
            raise ConfigurationError(
                f"`errors`={errors} with {len(good)} results needs {total} consistency checks, "
                f"more than {MAX_CANDIDATES}; ask for fewer errors")
        W = 1.0 / tau
        # Nothing wrong (the common case): every good result kept, the one candidate with f = 0,
        # which the loop below would test the same way (its workers recover, as checked above)
        keep = np.array(good, dtype=int)
        # (nothing erased: keep is every row of each M, whose factors are at hand)
        if all(_residual_all(M, y, W, keep, d, None if erased else F) <= 1.0
               for M, y, F in zip(Ms, Y, Fs)):
            return keep, erased, True
        for f in range(1, fmax + 1):
            cands = np.array(list(itertools.combinations(good, f)), dtype=int).reshape(-1, f)
            keeps = np.array([[g for g in good if g not in c] for c in cands], dtype=int)
            if keeps.shape[1] <= d:  # nothing left over to check against
                return keeps[0], sorted(erased + list(cands[0])), False
            res = np.zeros(len(cands))
            for M, y in zip(Ms, Y):
                res = np.maximum(res, _residuals(M, y, W, keeps, d))
            ok = [j for j in np.flatnonzero(res <= 1.0) if self._recovers(rows[keeps[j]])]
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

    def _noise_scale(self, rows, raw, encoding, rtol, sq=None):
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
        # one pass per result: a norm is finite exactly when every entry is (a finite result
        # whose squares overflow gets its norm without overflow, _norms); NaN does not count.
        # ``sq``: the results' sums of squares, where the consistency check's pass took them
        # In Python floats: a handful of workers, where each numpy call on their few numbers
        # costs more than the arithmetic (the same operations in the same order: the same
        # values as numpy's elementwise ones, bit for bit)
        norms = _norms(raw, sq)
        if encoding is not None and encoding.scales is not None:
            scale = np.asarray(encoding.scales[rows], dtype=np.float64).tolist()
            dt, inner = encoding.dtype, encoding.inner
            # (a scale of 0 or NaN, and a norm not finite, give no ratio)
            ratio = [x for x in (n / s for n, s in zip(norms, scale) if s > 0.0)
                     if math.isfinite(x)]
            lo = 1.0 / math.sqrt(max(inner, 1))
            # statistics.median: the same value as np.median, without its overhead on ~10 numbers
            rho = min(max(statistics.median(ratio), lo), 1.0) if ratio else 1.0
            expected = [rho * s for s in scale]
        else:
            med = float(np.nanmedian(norms)) if any(map(math.isfinite, norms)) else 1.0
            expected = [med] * len(rows)
            dt, inner = raw[0].dtype if raw[0].dtype.kind in "fc" else np.dtype(np.float64), 1024
        if rtol is None:
            rtol = 16.0 * _eps(dt)
        entries = max(1, math.prod(raw[0].shape))
        # (rtol times sqrt(inner) in rtol's own type, a numpy float32 one included, as the
        # elementwise formula took it)
        c, e = float(rtol * math.sqrt(max(inner, 1))), math.sqrt(entries)
        tau = [c * x / e for x in expected]
        # A worker whose operands are all zero (split padding, zero blocks) computes an exact 0:
        # give it a tenth of the typical tolerance of the *nonzero* workers instead of 0, which
        # would overflow 1/tau and make the weighted consistency check ill-conditioned. (A
        # systematic code's data workers are zero wherever a whole block is padding, often a
        # majority for small A: a median over all workers was then 0, weights of 1e250 swamped
        # the others in the QR of the weighted basis and consistent results read as corrupt.)
        nonzero = [x for x in tau if x > 0.0]
        typical = float(statistics.median(nonzero)) if nonzero else 0.0
        if 0.0 < typical < _TAU_FLOOR:
            # the floor below would stand for the tolerance: a corrupt result this small
            # would pass as rounding (1e-300 inputs under the old floor of 1e-250: a 50%
            # error was not located)
            raise ConfigurationError(
                f"the results are too small for the decoder's corruption check: their rounding "
                f"noise (about {typical:.2g}) lies below {_TAU_FLOOR:g}, where float64 cannot "
                f"weigh it; scale A or B up (the product scales with them)")
        floor = max(0.1 * typical, _TAU_FLOOR)
        # (np.maximum's rule: NaN stays NaN)
        return np.array([x if not x < floor else floor for x in tau])

    # ----------------------------------------------------------------- GF(p)
    def _locate_exact(self, rows, E, Ms, errors):
        p = self.field
        assert p is not None
        r = len(rows)
        inrange = np.array([all(((ev[i] >= 0) & (ev[i] < p)).all() for ev in E) for i in range(r)])
        erased = [i for i in range(r) if not inrange[i]]
        good = [i for i in range(r) if inrange[i]]
        if not self._recovers(rows[good]):
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
        for f, (M, Ef) in enumerate(zip(Ms, E)):
            Mk = M[keep] % p
            base, inv = self._exact_decoder(f, Mk, tuple(int(w) for w in rows[keep]))
            # inv = (Mk[base])^-1 mod p, cached per subset: one exact BLAS product instead of
            # a Gauss-Jordan elimination over every entry of the results
            sol = _gfp.matmul_mod(inv, Ef[keep[base]].reshape(len(base), -1), p)
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

    def _exact_decoder(self, family: int, Mk: np.ndarray, workers: tuple[int, ...]):
        """Rows of ``Mk`` (the kept workers' evaluation matrix mod p) forming a basis, and the
        inverse of that basis mod p: cached per (code, family, workers) in a bounded LRU
        (:data:`DECODER_CACHE_SIZE`), since a code sees the same few subsets job after job."""
        key = _cache_key(self)
        if key is not None:
            key = (key, family, workers)
            hit = _DECODERS.get(key)
            if hit is not None:
                _DECODERS.move_to_end(key)
                return hit
        base = _independent_rows(Mk, self.field)
        inv = _gfp.inv_mod(Mk[base], self.field)
        inv.setflags(write=False)
        entry = (base, inv)
        if key is not None:
            _DECODERS[key] = entry
            if len(_DECODERS) > DECODER_CACHE_SIZE:
                _DECODERS.popitem(last=False)
        return entry

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


#: Up to this many entries in all results together, per-result loops (projections, norms)
#: run on one stacked copy instead: for small jobs the loops' per-call overhead (tens of us
#: per result) outweighs the copy, for larger ones the copy costs more than it saves.
_SMALL_STACK = 1 << 15


def _valid_results(raw: list[np.ndarray], p: int | None) -> bool:
    """Whether every result is finite (over GF(p): every entry in ``[0, p)``), the condition
    of the codes' fast decode paths (anything else goes to the general path, which erases
    and names it). Small real results are checked in one pass over a copy of them all."""
    if p is None and sum(r.size for r in raw) <= 1 << 16:
        # small results: one check over all of them (a copy of at most 512 KiB)
        return bool(np.isfinite(np.concatenate([r.reshape(-1) for r in raw])).all())
    for r in raw:
        ok = np.isfinite(r).all() if p is None else bool(((r >= 0) & (r < p)).all())
        if not ok:
            return False
    return True


#: The least tolerance the corruption check uses (1 / tau must stay finite, about 1e300 at
#: most); results whose typical tolerance is smaller (entries below about 1e-286) are
#: refused by name (see ``_noise_scale``). Products of 1e-240 are checked as any other.
_TAU_FLOOR = 1e-300
#: Scales (||a|| ||b||) below this may come from squares that underflowed (entries below
#: about 1e-154 square into subnormals or 0): they are taken again by scaled norms.
_TINY_SCALE = 1e-280


def _redo(values: list[float]) -> list[int]:
    """Indices of the norms (or scales) that sums of squares may have got wrong, to be taken
    again by :func:`_scaled_fro`: not finite (overflow, or NaN), positive but below
    :data:`_TINY_SCALE` (squares in the subnormal range), or 0 where every one is 0 (zero
    inputs, or squares that all underflowed). A 0 beside normal values is a task or result of
    zero operands and is kept. In Python: numpy's reductions over a handful of workers cost
    several microseconds each on a small job's path."""
    if type(values) is list:   # the common case first, by C-level calls: no NaN or Inf (the
        # sum would be one), and the least value that is not 0 normal, with some not 0
        z = values.count(0.0)
        if z < len(values) and sum(values) < math.inf and \
                (sorted(values)[z] if z else min(values)) >= _TINY_SCALE:
            return []
    every_zero = not any(v > 0.0 for v in values)
    return [i for i, v in enumerate(values)
            if not (_TINY_SCALE <= v < math.inf or (v == 0.0 and not every_zero))]


def check_rtol(rtol: Any) -> None:
    """``decode``'s ``rtol``: None (the default) or a real number in (0, 1). A tolerance of the
    product's own size or more (inf included) would pass any corrupt result as rounding."""
    if rtol is None:
        return
    if isinstance(rtol, (bool, np.bool_)) or not isinstance(rtol, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(rtol) < 1.0:
        raise ConfigurationError(
            f"`rtol` must be a number between 0 and 1 (exclusive; None for the default "
            f"16 eps of the operands' dtype), got {rtol!r}")


def _check_against(encoding: "Encoding", rows: list[int], raw: list[np.ndarray],
                   real: bool = False) -> None:
    """The results (one shape, checked) against what ``encoding``'s tasks compute: ``a @ b``'s
    shape, and complex only where a task's operands are. Skipped where a task does not hold
    both operands (resident and left products: the worker holds one). On every decode of a
    small job: plain attribute reads, about a microsecond."""
    w = rows[0]
    stack = encoding._stack
    if stack is not None:       # (the tasks' arrays, without building the Task objects)
        if w >= len(stack[0]):
            return
        a, b = stack[0][w], stack[1]
    else:
        tasks = encoding._tasks
        if w >= len(tasks):
            return
        t = tasks[w]
        a, b = t.a, t.b
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.ndim != 2:
        return
    got = raw[0].shape
    if not got or got[0] != a.shape[0] or got[1:] != b.shape[1:]:
        raise ConfigurationError(
            f"`results` must have the shape of each worker's product a @ b, "
            f"{(a.shape[0],) + b.shape[1:]} (worker {w}: a {a.shape} @ b {b.shape}), got {got}")
    if not real and a.dtype.kind != "c" and b.dtype.kind != "c":
        # (``real``: the caller refuses complex results itself, as a small decode's float64
        # copy does)
        for v, r in zip(rows, raw):
            if r.dtype.kind == "c":
                raise ConfigurationError(
                    f"`results` must be real for this encoding (its operands are real), worker "
                    f"{v} gave dtype {r.dtype}")


def _robust_scales(tasks: list[Task], plain: np.ndarray, A: Any, B: Any) -> np.ndarray:
    """``plain`` (per task ``||a|| ||b||`` from sums of squares) with each entry :func:`_redo`
    names taken again by :func:`_scaled_fro` (one norm per
    distinct operand; a task whose ``b`` is zero, as the zero B of a ``put`` or ``update``
    encode, costs no pass over its ``a``), for finite inputs whose squares overflowed or
    underflowed. Raises :class:`ConfigurationError` naming the inputs' magnitudes where a
    product of norms still overflows: no noise scale for the decoder's corruption check can
    be formed (and the products would overflow as well)."""
    norms: dict[int, float] = {}

    def fro(x: Any) -> float:
        if id(x) not in norms:
            norms[id(x)] = _scaled_fro(x)
        return norms[id(x)]

    scales = np.array(plain, dtype=np.float64, copy=True)
    with np.errstate(over="ignore"):
        for i in _redo(scales.tolist()):
            nb = fro(tasks[i].b)
            scales[i] = 0.0 if nb == 0.0 else fro(tasks[i].a) * nb
    if not np.isfinite(scales).all():
        big = [f"`{name}` up to {float(np.abs(np.asarray(X)).max()):.3g}" for name, X in (("A", A), ("B", B))]
        raise ConfigurationError(
            f"the inputs are too large for the decoder's noise model: {' and '.join(big)} in "
            f"magnitude, so a worker's ||a|| ||b|| overflows float64 (about 1.8e308); scale A "
            f"or B down (the product scales with them)")
    return scales


def _norms(raw: list[np.ndarray], sq: np.ndarray | None = None) -> list[float]:
    """Frobenius norm of each result (NaN where it is not finite), in one pass over each;
    from ``sq``, the results' sums of squares in float64, where a caller has them (their
    square roots in Python floats: the same correctly rounded values as ``np.sqrt``'s)."""
    if sq is not None:
        norms = [math.sqrt(x) for x in sq.tolist()]   # (sums of squares: never below 0)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            if sum(r.size for r in raw) <= _SMALL_STACK and raw[0].dtype.kind in "fc":
                S = np.stack(raw).reshape(len(raw), -1)
                if S.dtype.kind == "c":
                    S = S.view(S.real.dtype)  # |z|^2 = re^2 + im^2: the real view's squares
                S = S.astype(np.float64, copy=False)
                norms = np.sqrt(np.einsum("ij,ij->i", S, S)).tolist()
            else:
                norms = [float(_fro(r)) for r in raw]
    # overflowed or underflowed squares of a finite result (_redo): that norm scaled (NaN
    # where an entry is not finite)
    for i in _redo(norms):
        norms[i] = float(_scaled_fro(raw[i]))
    return norms


class _Packed:
    """Complex evaluations ``top_w + 1j * bot_w`` kept as the workers' packed real results
    ``[top_w; bot_w]`` (a circle code's real form): :func:`_project` projects the halves, so
    the check needs no complex copy of any result. Only for results :meth:`takes` (real:
    the halves' projections are taken as the real and imaginary parts)."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = list(arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    @staticmethod
    def takes(raw: list[np.ndarray]) -> bool:
        """Whether results ``raw`` can stand for complex blocks as packed real halves: real
        (a complex result's imaginary part would be dropped by the halves' projections) and
        of an even number of rows."""
        return all(r.dtype.kind in "fiub" and r.ndim >= 1 and r.shape[0] % 2 == 0 for r in raw)


def _unit_draws(rng: np.random.Generator, k: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` random unit vectors over the rows (``x``) and ``k`` over the rest (``y``) of a
    result, drawn in that order (every projection path draws the same numbers)."""
    u = rng.standard_normal((k, x))
    v = rng.standard_normal((k, y))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return u, v


def _dims(E: Any) -> tuple[int, int]:
    """``(x, y)`` of a family's projections: ``u`` spans the rows (x) of each worker's
    evaluation block, ``v`` the rest (y). A packed block's rows are its complex rows, half
    of its real ones."""
    if isinstance(E, (_Packed, _Rows)):
        shape = E.arrays[0].shape
        if isinstance(E, _Packed):
            return shape[0] // 2, math.prod(shape[1:])
        return (shape[0] if shape else 1), math.prod(shape[1:])  # 0-d: a scalar gradient
    if E.ndim > 2:
        return E.shape[1], math.prod(E.shape[2:])
    return math.prod(E.shape[1:]), 1


#: The random unit vectors of the consistency check, per sequence of families' ``(x, y)``:
#: drawn from a generator seeded with 0x5EED in family order (so a decode is reproducible), and
#: kept where small (at most :data:`_DRAWS_MAX` numbers), since a job decodes the same shapes
#: again and again and the generator's construction and draws cost more than a small check's
#: arithmetic. Bounded: :data:`_DRAWS_SIZE` entries, least recently used dropped first.
_DRAWS: OrderedDict[Any, tuple[tuple[np.ndarray, np.ndarray], ...]] = OrderedDict()
_DRAWS_SIZE = 64
_DRAWS_MAX = 1 << 15
_DRAWS_LOCK = threading.Lock()


def _draws(dims: tuple[tuple[int, int], ...], k: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    key = (k, dims)
    with _DRAWS_LOCK:
        hit = _DRAWS.get(key)
        if hit is not None:
            _DRAWS.move_to_end(key)
            return hit
    rng = np.random.default_rng(0x5EED)
    hit = tuple(_unit_draws(rng, k, x, y) for x, y in dims)
    if k * sum(x + y for x, y in dims) <= _DRAWS_MAX:
        for u, v in hit:
            u.setflags(write=False)
            v.setflags(write=False)
        with _DRAWS_LOCK:
            _DRAWS[key] = hit
            while len(_DRAWS) > _DRAWS_SIZE:
                _DRAWS.popitem(last=False)
    return hit


def _project(E: Any, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Reduce each worker's evaluation block to ``k`` numbers by random projections: ``u``
    (k x rows) and ``v`` (k x the rest) from :func:`_draws` for :func:`_dims` of ``E``;
    number ``j`` of a block ``X`` is ``u_j X v_j``."""
    k = u.shape[0]
    if isinstance(E, _Packed):
        # the same projections as of the unpacked complex blocks (h, ...): u over the h rows,
        # v over the rest; u (top + 1j bot) v = u top v + 1j u bot v
        h, y = u.shape[1], v.shape[1]
        if len(E) * E.arrays[0].size <= _SMALL_STACK:
            # small results: one batched product over both halves of all of them
            S = np.stack(E.arrays).reshape(len(E), 2, h, y)
            with np.errstate(invalid="ignore", over="ignore"):
                t = (np.matmul(u, S) * v).sum(axis=3)      # (r, 2, k)
            out = np.empty((len(E), k), dtype=np.complex128)
            out.real, out.imag = t[:, 0], t[:, 1]
            return out
        out = np.empty((len(E), k), dtype=np.complex128)
        with np.errstate(invalid="ignore", over="ignore"):
            for i, a in enumerate(E.arrays):
                a2 = a.reshape(2 * h, y)
                out[i].real = ((u @ a2[:h]) * v).sum(axis=1)
                out[i].imag = ((u @ a2[h:]) * v).sum(axis=1)
        return out
    if isinstance(E, _Rows) and len(E) * E.arrays[0].size <= _SMALL_STACK:
        E = E.stack()  # small results: one batched product beats a Python loop over them
    if isinstance(E, _Rows):
        x, y = u.shape[1], v.shape[1]
        out = np.empty((len(E), k), dtype=np.result_type(E.dtype, np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            for i, a in enumerate(E.arrays):
                out[i] = ((u @ a.reshape(x, y)) * v).sum(axis=1)
        return out
    r = E.shape[0]
    # explicit widths: numpy cannot infer -1 beside a 0 (empty results: A with no rows)
    flat = E.reshape(r, u.shape[1], v.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.matmul(u, flat)                    # (r, k, y): BLAS, not einsum
        return (t * v[None]).sum(axis=2)


def _project_sq(E: Any, u: np.ndarray, v: np.ndarray,
                raw: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(_project(E, u, v), sums of squares of the results)`` from one compiled pass over
    them (``_kernels.proj_sq``), for a family whose arrays are the results ``raw`` themselves
    (:class:`_Rows`) or their packed halves (:class:`_Packed`), float64 or float32; else None
    (the caller projects by numpy and takes the norms apart). The projections are the same
    numbers as :func:`_project`'s up to the order of their sums."""
    if _K is None or not PROJ_SQ or not isinstance(E, (_Packed, _Rows)):
        return None
    arrays = E.arrays
    if len(arrays) != len(raw) or any(a is not b for a, b in zip(arrays, raw)):
        return None
    dt = arrays[0].dtype
    if dt not in _REAL or any(a.dtype != dt for a in arrays):
        return None
    k, x, y = u.shape[0], u.shape[1], v.shape[1]
    packed = isinstance(E, _Packed)
    shape = (2 * x if packed else x, y)
    srcs = arrays
    if any(a.shape != shape or (y > 1 and a.strides[1] != a.itemsize) for a in arrays):
        # (reshaped where they are not 2-D already; rows must be contiguous)
        srcs = [a.reshape(shape) for a in arrays]
        srcs = [a if y <= 1 or a.strides[1] == a.itemsize else np.ascontiguousarray(a)
                for a in srcs]
    m = len(arrays)
    Q = np.empty(m)
    if not packed:
        P = np.empty((m, k))
        _K.proj_sq(srcs, u, v, P, Q)
        return P, Q
    # the halves projected apart, into the interleaved values of u (top + 1j bot) v; the
    # squares' sums of the two halves added
    Y = np.empty((m, k), dtype=np.complex128)
    _K.proj_sq(srcs, u, v, Y.view(np.float64), Q, halves=True)
    return Y, Q


def _project_mod(E: np.ndarray, rng: np.random.Generator, p: int, k: int = 2) -> np.ndarray:
    r = E.shape[0]
    flat = E.reshape(r, math.prod(E.shape[1:]))
    v = rng.integers(0, p, size=(flat.shape[1], k), dtype=np.int64)
    return _gfp.matmul_mod(flat, v, p)


def _residuals(M: np.ndarray, y: np.ndarray, W: np.ndarray, keeps: np.ndarray, d: int) -> np.ndarray:
    """Per candidate: largest weighted residual entry of y outside range(M[keep]).

    The rank-``d`` basis of ``range(M[keep])`` is found unweighted (well scaled, so the rank
    decision is sharp), then weighted and re-orthonormalised: ``range(W M) = W range(M)``.
    """
    F = _factors(M[keeps[0]]) if len(keeps) == 1 and M.shape[1] == d else None
    if F is not None and F.rank == d and F.S[d - 1] > F.S[0] * 1e-10:
        # one candidate (all results: the check when nothing is wrong) of full rank: the cached
        # Q of its QR spans range(M[keep]) as the SVD's U0 would
        U0 = F.Q[None]
    else:
        U0, S, _ = np.linalg.svd(M[keeps], full_matrices=False)
        U0 = U0[..., :d]
        # Each candidate's own rank: a set that drops every copy of some block spans less, and
        # a spurious basis direction must not absorb an inconsistency.
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


def _residual_all(M: np.ndarray, y: np.ndarray, W: np.ndarray, keep: np.ndarray, d: int,
                  F: "_Factors | None" = None) -> float:
    """:func:`_residuals` of the one candidate that keeps every row in ``keep``: the same
    arithmetic on 2-D arrays, without the candidate axis. ``F``: :func:`_factors` of ``M``
    where ``keep`` is every row of ``M`` in order (the caller has them), else None."""
    if M.shape[1] != d:
        F = None
    elif F is None:
        F = _factors(M[keep])
    if F is None or F.rank != d or not F.S[d - 1] > F.S[0] * 1e-10:
        return float(_residuals(M, y, W, keep[None], d)[0])
    res = math.nan
    if _K is not None and WRESID and len(keep) <= _WRESID_MAX and 0 < y.shape[1] <= _WRESID_MAX:
        # the compiled reflections (_kernels.wresid): the same weighted residual without
        # numpy's QR and products, which cost tens of microseconds on a handful of rows
        res, big = _K.wresid(F.qview(), W[keep], _complex_view(y[keep]))
    if res != res:   # (NaN: not taken, or something not finite or of lower rank: numpy's)
        w = W[keep][:, None]
        Q, _ = np.linalg.qr(F.Q * w)
        Yk = y[keep] * w
        res = float(np.abs(Yk - Q @ (np.conj(Q.T) @ Yk)).max())
        big = float(np.abs(Yk).max())
    return res / (1.0 + 1e3 * _EPS64 * big)


#: The most rows (and projections) the compiled residual takes (``_kernels.wresid``).
_WRESID_MAX = 4096


def _complex_view(a: np.ndarray) -> np.ndarray:
    """``a`` (2-D, real or complex) as the float64 view of C-contiguous complex128 values (a
    copy where ``a`` is not already such an array; read, never written)."""
    return np.ascontiguousarray(a, dtype=np.complex128).view(np.float64)


_EPS64 = float(np.finfo(np.float64).eps)
_EPS = {np.dtype(t): float(np.finfo(t).eps) for t in (np.float16, np.float32, np.float64,
                                                       np.complex64, np.complex128)}


def _eps(dt: Any) -> float:
    """``np.finfo(dt).eps`` as a float, without finfo's cost for the usual dtypes."""
    hit = _EPS.get(np.dtype(dt))
    return hit if hit is not None else float(np.finfo(dt).eps)


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


#: Up to this condition number, the float64 solve's own error (~cond*eps, below 1e-13 here)
#: is left as it is. Above it, one step of iterative refinement follows, against a residual
#: formed to ~20 bits beyond float64 (:func:`~codedml.codes._eft._residual`): at cond 8e3
#: (n = 30, k = 25) the solve alone added as much error as the workers' rounding (with
#: compensated worker products: 8.0e-13 unrefined, 2.6e-13 refined).
FAST_DECODE_MAX_CONDITION = 1e3


#: Real decoders: the factorization :func:`_lstsq` needs for one evaluation matrix ``M`` (the
#: kept workers' rows of a family: a function of the code and the subset of workers), kept per
#: matrix value in a bounded LRU of :data:`FACTOR_CACHE_SIZE` entries, least recently used
#: dropped first. A training loop decodes from the same few subsets step after step; each
#: repeat then skips the SVD, the QR and the triangular inverse (and, for codes that want only
#: some unknowns, the decoding vectors). Keyed by the matrix's bytes rather than by (code,
#: subset), so every caller that builds a sub-system (systematic decodes solve for missing
#: blocks only) is covered, and equal codes share entries.
_FACTORS: OrderedDict[Any, "_Factors"] = OrderedDict()
FACTOR_CACHE_SIZE = 256
_FACTORS_LOCK = threading.Lock()


class _Factors:
    """What decoding from one evaluation matrix ``M`` (results x unknowns) needs, computed
    once: singular values (rank, condition number), and for full column rank ``M = Q R`` with
    ``R^{-1}`` (upper triangular, by back substitution: applied as a GEMM it is as accurate as
    a triangular solve against the data, measured on worst subsets up to cond 8e3, and needs no
    scipy); the SVD factors where ``M`` is rank deficient; decoding vectors per wanted set."""

    def __init__(self, M: np.ndarray) -> None:
        wide = np.result_type(M.dtype, np.float64)
        self.Mw = M.astype(wide)
        U, S, Vh = np.linalg.svd(self.Mw, full_matrices=False)
        self.S = S
        d = M.shape[1]
        self.rank = int((S > S[0] * max(M.shape) * np.finfo(np.float64).eps).sum()) if S.size else 0
        with np.errstate(divide="ignore"):
            self.cond = float(S[0] / S[-1]) if S.size else 1.0
        if self.rank < d:
            self.U, self.Vh = U[:, :self.rank], Vh[:self.rank]
            for x in (self.Mw, self.S, self.U, self.Vh):
                x.setflags(write=False)
            return
        Q, R = np.linalg.qr(self.Mw)
        self.Q, self.Qh = Q, np.ascontiguousarray(np.conj(Q.T))
        self.R = R
        self.Rinv = np.linalg.solve(R, np.eye(d, dtype=wide))
        self.refine = bool(S[0] / S[-1] > FAST_DECODE_MAX_CONDITION)
        self._split: _Split | None = None
        self._qv: np.ndarray | None = None
        self._coefs: dict[bytes, np.ndarray] = {}
        for x in (self.Mw, self.S, self.Q, self.Qh, self.R, self.Rinv):
            x.setflags(write=False)  # shared by every decode from this subset

    def qview(self) -> np.ndarray:
        """``Q`` as ``_kernels.wresid`` takes it (the float64 view of a complex128 copy),
        made once."""
        qv = self._qv
        if qv is None:
            qv = self._qv = _complex_view(self.Q)
            qv.setflags(write=False)
        return qv

    def split(self) -> _Split:
        if self._split is None:
            self._split = _Split(self.Mw)
        return self._split

    def coef(self, I_w: np.ndarray) -> np.ndarray:
        """Rows ``y_j^H`` of the decoding vectors with ``M^H y_j = I_w[:, j]`` (least norm)."""
        key = I_w.tobytes() + str(I_w.shape).encode()
        hit = self._coefs.get(key)
        if hit is None:
            Rh = np.conj(self.R.T)
            Y = self.Q @ np.linalg.solve(Rh, I_w)
            if self.refine:
                Y += self.Q @ np.linalg.solve(Rh, _residual(_Split(np.conj(self.Mw.T)), Y, I_w))
            hit = np.conj(Y.T)
            hit.setflags(write=False)
            if len(self._coefs) < 64:
                self._coefs[key] = hit
        return hit


def _factors(M: np.ndarray) -> _Factors:
    """The cached :class:`_Factors` of ``M`` (see :data:`FACTOR_CACHE_SIZE`)."""
    M = np.ascontiguousarray(M)
    key = (M.dtype.str, M.shape, M.tobytes())
    with _FACTORS_LOCK:
        hit = _FACTORS.get(key)
        if hit is not None:
            _FACTORS.move_to_end(key)
            return hit
    hit = _Factors(M)
    with _FACTORS_LOCK:
        _FACTORS[key] = hit
        while len(_FACTORS) > FACTOR_CACHE_SIZE:
            _FACTORS.popitem(last=False)
    return hit


def _lstsq(M: np.ndarray, E: np.ndarray, rows: np.ndarray | None = None,
           functional: np.ndarray | None = None, factors: "_Factors | None" = None) -> np.ndarray:
    """Solve ``M X = E`` in float64/complex128 and return ``X`` (or only ``X[rows]``).

    ``M`` is small (results x unknowns); ``E`` has one column per entry of a result block.
    Full column rank: ``M = Q R`` (Householder QR, also for a square ``M``). With results to
    spare, QR uses all of them (least squares), which averages the workers' rounding noise.
    The factors of ``M`` are cached per matrix (:func:`_factors`, :data:`FACTOR_CACHE_SIZE`).

    * Every unknown wanted (MDS, polynomial codes): ``X = R^{-1} (Q^H E)``, two GEMMs against
      the data with the triangular inverse computed once per matrix by back substitution (as
      accurate as a triangular solve against the data, measured on the worst subsets: the
      inverse of a triangular matrix is computed to high relative accuracy; folding ``R^{-1}
      Q^H`` into one matrix was up to 3x less accurate at cond 8e3, so it is not done).
      Ill-conditioned systems (above :data:`FAST_DECODE_MAX_CONDITION`) are refined once,
      ``X += R^{-1} Q^H (E - M X)``, with the residual evaluated by error-free splitting in
      cache-sized column chunks: the solve then adds about ``eps`` instead of ``cond * eps``.
    * Some unknowns wanted (MatDot needs 1 of its 2m-1): the decoding vector of each wanted
      unknown, ``y_j = Q R^{-H} e_j``, solves the small adjoint system ``M^H y_j = e_j``
      (least norm), and ``X_j = y_j^H E`` is one weighted sum of the results. Above
      :data:`FAST_DECODE_MAX_CONDITION` each ``y_j`` is refined once against ``M^H`` with an
      error-free residual. Measured at n = 30, threshold 25: as accurate as refining a solve
      of all 25 unknowns (MatDot 7.3e-13 either way; 1.04e-12 unrefined), at about 1/25 of its
      cost.

    Rank-deficient systems (gradient codes) get the least-norm solution from the SVD, whose
    image is all decoding needs.

    ``factors``: ``_factors(M)`` where the caller keeps it (a plan cached per worker subset),
    which skips the lookup by ``M``'s bytes.

    ``functional`` (d x w), instead of ``rows``: return ``functional^T X`` (systematic MatDot
    wants the sum of the product polynomial's values at its systematic points), by the same
    decoding vectors with ``M^H y_j = conj(functional[:, j])``.
    """
    block = E.shape[1:]
    F = _factors(M) if factors is None else factors
    wide = F.Mw.dtype
    d = M.shape[1]
    want = np.arange(d) if rows is None else np.asarray(rows)
    if functional is not None:
        want = np.arange(functional.shape[1])

    def data() -> np.ndarray:  # the results as one (r, entries) array
        stacked = E.stack() if isinstance(E, _Rows) else E
        return stacked.reshape(stacked.shape[0], math.prod(stacked.shape[1:])).astype(wide, copy=False)

    if F.rank < d:
        X = np.conj(F.Vh.T) @ ((np.conj(F.U.T) @ data()) / F.S[:F.rank, None])
        X = functional.T @ X if functional is not None else X[want]
        return X.reshape((len(want),) + block)
    if functional is not None or len(want) < d:
        # Decoding vectors of the wanted unknowns: y_j = Q R^{-H} e_j solves M^H y_j = e_j
        # (least norm, in range(M)), and X_j = y_j^H E. Ill-conditioned: y_j refined once
        # against M^H itself with an error-free residual (a d x r system: negligible cost).
        I_w = (np.conj(functional).astype(wide) if functional is not None
               else np.eye(d, dtype=wide)[:, want])
        coef = F.coef(np.ascontiguousarray(I_w))
        if isinstance(E, _Rows) and coef.shape[0] <= 2:
            X = E.weighted(coef)
            X = X.reshape(coef.shape[0], math.prod(X.shape[1:]))
        else:
            X = coef @ data()
        return X.reshape((len(want),) + block)
    Ew = data()
    every = np.array_equal(want, np.arange(d))  # else a permutation (fancy indexing copies)
    if not F.refine:
        X = F.Rinv @ (F.Qh @ Ew)
        return (X if every else X[want]).reshape((len(want),) + block)
    # Refined, in cache-sized column chunks: solve, residual, correction.
    Ms = F.split()
    X = np.empty((d, Ew.shape[1]), dtype=wide)
    for s0 in range(0, Ew.shape[1], 4096):
        Ec = Ew[:, s0:s0 + 4096]
        Xc = F.Rinv @ (F.Qh @ Ec)
        r = _residual(Ms, Xc, Ec)
        if np.isfinite(r).all():
            Xc += F.Rinv @ (F.Qh @ r)
        X[:, s0:s0 + 4096] = Xc
    return (X if every else X[want]).reshape((len(want),) + block)


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
