"""The root's side of the runtime, common to :class:`MPICluster` and :class:`LocalCluster`.

Three layers, bottom up:

1. A *transport* (``mpi.py``, ``local.py``) moves typed messages (:mod:`.protocol`):
   ``_send(worker, request, arrays)``, ``_cancel(worker, job)``, ``_poll()`` (what has
   arrived, without blocking) and ``_idle(timeout)`` (wait, outside the lock, until something
   may have arrived).
2. The *request core* (:class:`ClusterBase`, this module): request ids, the table of pending
   requests (:mod:`.futures`), routing of arrivals, deadlines, crashed and stale workers, and
   a progress thread that keeps every request moving to its terminal state whether or not
   somebody waits for it. All state is guarded by one re-entrant lock; the transport is used
   only under it (MPI needs no more than ``MPI_THREAD_SERIALIZED``).
3. The *resident-operand service* (:mod:`._resident`): ``put``, ``update``, ``sgd_step``,
   ``matmul_left``, ``fetch``, ``scrub``, ``drop`` and the norm bounds of stored blocks, built
   on the core's jobs and acknowledgements.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..codes import Encoding, LinearCode
from ..codes._validate import _F64, check_int
from ..errors import (ClusterClosedError, ConfigurationError, CorruptResultError, FaultError)
from ._resident import ResidentHandle
from .futures import (Ack, Arrival, Call, Job, JobReport, _Request, _systematic_set, check_deadline,
                      check_wait)
from ._worker import PER_THREAD_NICE
from .protocol import DTYPES, INLINE_MAX, MAX_NICE, Op, Request, call_request

__all__ = ["ClusterBase", "retry_on_corrupt", "check_handlers", "DEFAULT_TIMEOUT"]


def check_handlers(handlers: Any) -> dict[str, Any]:
    """The ``handlers`` argument of a cluster: None or a mapping of ``call`` names (str) to
    callables ``fn(context, *arrays, **kwargs)``; anything else is refused by name."""
    from collections.abc import Mapping

    if handlers is None:
        return {}
    if not isinstance(handlers, Mapping):
        raise ConfigurationError(
            f"`handlers` must be a mapping of names to callables (or None), got {handlers!r}")
    for k, fn in handlers.items():
        if not isinstance(k, str) or not callable(fn):
            raise ConfigurationError(
                f"`handlers` must map str names to callables, got {k!r}: {fn!r}")
    return dict(handlers)

#: The deadline of every request unless a cluster or a call sets another (seconds).
DEFAULT_TIMEOUT = 60.0
#: While a caller drives progress, the progress thread looks again after this many seconds
#: (for requests nobody waits for).
_DRIVEN_LOOK = 0.01
#: A parked progress thread woken by a new request waits this long before it looks (seconds).
_WAKE_GRACE = 5e-4


def retry_on_corrupt(run: Callable[[], Any], retries: int,
                     before_retry: Callable[[int], None] | None = None) -> Any:
    """``run()``, run again (after ``before_retry(attempt)``) while it raises
    :class:`~codedml.errors.CorruptResultError` -- results detectably inconsistent beyond the
    error budget, which a fresh job with fresh results may not be -- at most ``retries`` more
    times; the last error propagates."""
    retries = check_int("retries", retries, 0)
    for attempt in range(retries + 1):
        try:
            return run()
        except CorruptResultError:
            if attempt == retries:
                raise
            if before_retry is not None:
                before_retry(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _call_arrays(arrays: Any, where: str) -> list[np.ndarray]:
    """A call's arrays as C-ordered copies of their own (see ``call``), each of a dtype that
    can travel (the protocol's; the same in-process, so a call behaves alike on both
    transports), refused by name otherwise."""
    out = []
    for i, a in enumerate(arrays):
        x = np.array(a, order="C", copy=True)
        if x.dtype not in DTYPES:
            raise ConfigurationError(
                f"`{where}[{i}]` must be an array of one of {[str(d) for d in DTYPES]} to "
                f"travel, got dtype {x.dtype}")
        out.append(x)
    return out


class _Stacked:
    """Per-worker arrays of a small encode (an :class:`~codedml.codes.Encoding` given as its
    ``_stack``): worker ``w``'s are ``[tasks[w], b]``, C-ordered ndarrays of one layout, so a
    transport sends them without looking at each (MPI: one compiled call, no list per
    worker). Indexed like the list of per-worker lists it stands for."""

    __slots__ = ("tasks", "b")

    def __init__(self, tasks: np.ndarray, b: np.ndarray) -> None:
        self.tasks, self.b = tasks, b

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, w: int) -> list[np.ndarray]:
        return [self.tasks[w], self.b]


class _WeakTable:
    """Request id -> a settled request still owed results, held weakly (``get``, item
    assignment, ``values``, ``len``, as the cluster uses them). A plain dict of
    ``weakref.ref``: a ``WeakValueDictionary`` entry, with its keyed callback reference
    built in Python, cost about 0.6 us of every settle. The entries of requests that are gone
    are swept out once the table has doubled since the last sweep, so it holds at most
    about twice the live entries (and 64); ``get``, ``values`` and ``len`` see live
    requests only."""

    __slots__ = ("_d", "_sweep_at")

    def __init__(self) -> None:
        self._d: dict[int, weakref.ref] = {}
        self._sweep_at = 64

    def __setitem__(self, key: int, r: Any) -> None:
        d = self._d
        d[key] = weakref.ref(r)
        if len(d) > self._sweep_at:
            for k in [k for k, ref in d.items() if ref() is None]:
                del d[k]
            self._sweep_at = max(64, 2 * len(d))

    def get(self, key: int) -> Any:
        ref = self._d.get(key)
        return None if ref is None else ref()

    def values(self) -> list[Any]:
        return [r for r in (ref() for ref in self._d.values()) if r is not None]

    def __len__(self) -> int:
        return sum(1 for ref in self._d.values() if ref() is not None)


def _np(x: Any) -> np.ndarray:
    """Plain ndarray view (galois FieldArrays become their int64 residues)."""
    if type(x) is np.ndarray and x.flags.c_contiguous:   # the encodes' tasks
        return x
    if x is None:
        return x
    return np.ascontiguousarray(np.asarray(x.view(np.ndarray)) if hasattr(x, "view") and type(x) is not np.ndarray else x)


def _land_shape(tasks: np.ndarray, b: np.ndarray) -> tuple[int, ...] | None:
    """The shape of a stacked job's landing (``ClusterBase._landing``): one float64 slot per
    worker of the result's shape (``tasks[w] @ b``); None where the tasks are not float64
    (their results are not either) or a result is too large to come inline with its header
    (it never lands)."""
    slot = (*tasks.shape[1:-1], *b.shape[1:])
    return (len(tasks), *slot) if (tasks.dtype == _F64 and b.dtype == _F64
                                   and math.prod(slot) * 8 <= INLINE_MAX) else None


_MATMUL_REQUESTS: dict[tuple[int | None, bool], Request] = {}


def _matmul_request(field: int | None, compensated: bool) -> Request:
    """The checked ``Request(Op.MATMUL, 0, None, field, compensated)``, kept per (field,
    compensated) (at most a few dozen primes in a process; a request is immutable)."""
    key = (field, compensated)
    req = _MATMUL_REQUESTS.get(key)
    if req is None:
        req = Request(Op.MATMUL, 0, None, field, compensated)
        if len(_MATMUL_REQUESTS) < 64:
            _MATMUL_REQUESTS[key] = req
    return req


def _code_key(code: Any) -> Any:
    """A dict key for a code: the code (equal codes share their statistics), or its id where
    a user's code class is not hashable."""
    try:
        hash(code)
    except TypeError:
        return ("id", id(code))
    return code


class ClusterBase:
    """The master's API, common to MPI and in-process clusters.

    Every request (product, handler call, operation on a stored operand) is a
    :class:`concurrent.futures.Future` with a deadline counted from its submission: the
    cluster's ``timeout`` (default :data:`DEFAULT_TIMEOUT` = 60 s) unless the call passes its
    own. A request settles exactly once, by its deadline at the latest.
    """

    workers: int
    #: Reports of blocking calls kept in ``history`` (the newest).
    MAX_HISTORY = 1000
    #: Seconds a waiter allows past a deadline for the progress thread to settle the request.
    SETTLE_SLACK = 5.0

    #: The default of :attr:`systematic_grace`: off. Measured side by side
    #: (``benchmarks/runtime_latency.py``, "MDS sys" against "MDS sys, wait"), decoding at
    #: once from the first decodable set was faster at 8 workers, fault-free and with
    #: stragglers: the fast path's solve for a missing block costs less than waiting, and a
    #: wait lets spare results in, which the decode then checks.
    SYSTEMATIC_GRACE = 0.0
    #: The default of :attr:`parity_nice`: off (parity products run like data products)...
    PARITY_NICE = 0
    #: ... except on an :class:`MPICluster` with a worker on a node that has more ranks than
    #: CPUs, where the data products then finish first. Measured side by side
    #: (``benchmarks/runtime_latency.py``, "MDS sys" against "MDS sys, no yield").
    PARITY_NICE_CROWDED = 10
    #: Codes whose measured solve time is kept (least recently used dropped beyond this).
    _SOLVE_COSTS = 64
    #: Whether a waiting caller pumps arrivals itself (see :meth:`_wait_step`).
    _caller_progress = False

    def __init__(self, workers: int, timeout: float | None,
                 handlers: dict[str, Any] | None = None) -> None:
        from ._resident import ResidentService

        self.workers = workers
        self.default_timeout = DEFAULT_TIMEOUT if timeout is None else check_deadline("timeout", timeout)
        self._systematic_grace = self.SYSTEMATIC_GRACE
        self._handler_names = frozenset(handlers or {})   # what `call` may name
        self._parity_nice = self.PARITY_NICE
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every arrival
        self._waiting = 0  # threads in self._changed.wait (no notify without one)
        # results the transport's poll booked itself (_inline_result; see _pump), in
        # arrival order: (request, worker, payload, time)
        self._booked: list[tuple[_Request | None, int, Any, float]] = []
        # cancels held while _pump books a poll's results (see _cancel_all): how many pumps
        # are booking (a done-callback may pump again), and the cancels they hold
        self._hold_depth = 0
        self._held_cancels: list[tuple[_Request, list[int]]] = []
        # no pending request's deadline is earlier (a pump scans for expired requests only
        # from then on; a settled request's stale value only costs one scan)
        self._next_deadline = math.inf
        self._next_job = 0
        self._next_ack = 0
        self._pending: dict[int, _Request] = {}
        self._acks: dict[int, Ack] = {}
        # Settled requests are tracked weakly: late results update the report of a request
        # someone still holds, and one nobody holds (with its product) is freed at once.
        self._finished = _WeakTable()
        # a landing's shape per layout of a small job's tasks, None where none lands (see
        # _landing; at most 64 layouts)
        self._land_shapes: dict[tuple, tuple[int, ...] | None] = {}
        self._dead: set[int] = set()
        self._stale: dict[int, set[int]] = {}
        self._wakes: list[_Request] = []  # exactly the requests whose wake_at is set
        self._solve_costs: OrderedDict[Any, float] = OrderedDict()  # see _note_solve
        self._last_answer: dict[int, int] = {}
        self.history: deque[JobReport] = deque(maxlen=self.MAX_HISTORY)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._wake = threading.Event()
        self._parked = True  # the progress thread waits for a request (see _ensure_progress)
        self._drivers = 0  # callers waiting that pump arrivals themselves
        self.resident = ResidentService(self)

    # ------------------------------------------------------------------ transport hooks
    def _send(self, worker: int, req: Request, arrays: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _send_many(self, workers: Sequence[int], req: Request, arrays: list[np.ndarray]) -> None:
        """The same request and arrays to each of ``workers``."""
        for w in workers:
            self._send(w, req, arrays)

    def _send_each(self, workers: Sequence[int], req: Request,
                   per_worker: Sequence[list[np.ndarray]]) -> None:
        """The same request to each of ``workers``, each with its own arrays
        (``per_worker[w]``)."""
        for w in workers:
            self._send(w, req, per_worker[w])

    def _poll(self, wait: float = 0.0, want: int = 1, job: Any = None) -> list[Arrival]:
        """What has arrived; a transport may wait up to ``wait`` seconds for something
        (under the lock: see :meth:`_poll_wait`), or for ``want`` replies where it can.
        ``job``: the request the caller waits for, whose results a transport that lands
        them (:attr:`_lands`) may book without an :class:`Arrival` each."""
        raise NotImplementedError

    #: Whether the transport's poll lands a waited-for small job's results in its
    #: ``_land`` buffers (:meth:`_landing`; MPI's compiled poll) and sets :attr:`_landed`.
    _lands = False
    #: The job whose results the last poll landed (taken by :meth:`_pump`), or None.
    _landed: Any = None

    def _landing(self, jid: int, tasks: np.ndarray, b: np.ndarray) -> tuple | None:
        """Where a poll may land the results of stacked job ``jid`` (its ``tasks`` and ``b``,
        see :class:`_Stacked`): ``(jid, landing, got)``,
        ``landing`` one float64 slot per worker of the result's shape (``tasks[w] @ b``),
        ``got`` its count and workers (see ``_wire.Root.poll``); None where the tasks are not
        float64 (their results are not either) or a result is too large to come inline with
        its header (it never lands)."""
        key = (tasks.shape, b.shape, tasks.dtype, b.dtype)
        shape = self._land_shapes.get(key, False)
        if shape is False:   # (kept per layout: a job stream has one or a few)
            shape = _land_shape(tasks, b)
            if len(self._land_shapes) >= 64:
                self._land_shapes.clear()
            self._land_shapes[key] = shape
        if shape is None:
            return None
        return (jid, np.empty(shape), np.zeros(shape[0] + 1, np.int64))

    def _wait_landed(self, job: Any, end: float) -> None:
        """A caller's wait for a small job whose results land, where the transport has a
        shorter loop for it than ``_await``'s (MPI); here nothing: the general loop waits."""

    def _poll_wait(self, timeout: float) -> float:
        """How long a waiting caller's poll may wait for an arrival inside the transport,
        holding the lock (0: poll and return)."""
        return 0.0

    def _idle(self, timeout: float) -> None:
        """Wait (without the lock) until something may have arrived, at most ``timeout`` s."""
        time.sleep(timeout)

    def _cancel(self, worker: int, job: int) -> None:
        """Tell ``worker`` that ``job`` is settled (it may skip it); optional for a transport."""

    def _on_close(self) -> None:
        """The transport's part of ``close``."""

    # ------------------------------------------------------------------ public facts
    def rank_of(self, worker: int) -> int:
        """The process rank of worker index ``worker`` (the root is rank 0: worker w is w + 1)."""
        return worker + 1

    @property
    def dead_workers(self) -> frozenset[int]:
        """Worker indices known to have crashed."""
        with self._lock:
            return frozenset(self._dead)

    @property
    def live_workers(self) -> tuple[int, ...]:
        """Worker indices not known to have crashed."""
        with self._lock:
            return tuple(w for w in range(self.workers) if w not in self._dead)

    def stale_workers(self, handle: Any) -> frozenset[int]:
        """Workers whose stored block of ``handle`` missed a failed update (excluded from its
        products until a scrub stores the block anew)."""
        with self._lock:
            return frozenset(self._stale.get(getattr(handle, "id", handle), ()))

    @property
    def closed(self) -> bool:
        return self._closed

    def outstanding(self) -> dict[str, int]:
        """Requests not yet settled (products and calls, acknowledgements) and settled ones
        still held by a caller: bounded in a healthy run."""
        with self._lock:
            return {"jobs": len(self._pending), "acks": len(self._acks),
                    "held": len(self._finished), **self._transport_counts()}

    def _transport_counts(self) -> dict[str, int]:
        return {}

    # ------------------------------------------------------------------ products
    def submit(self, A: Any, B: Any, *, code: LinearCode | None = None, errors: int = 0,
               timeout: float | None = None, precision: str = "auto") -> Job:
        """Start ``A @ B`` under ``code`` (or with a resident handle ``A``); returns a
        :class:`Job` (a Future of the decoded product).

        ``errors`` is how many corrupt results the job must be able to correct: it waits for
        ``threshold + 2 errors`` results (more when they prove inconsistent), and a decode
        always uses the full correction power of the results it has. ``timeout`` is the job's
        deadline from now (default: the cluster's).
        """
        with self._lock:
            self._check_open()
            errors = check_int("errors", errors, 0, self.workers)
            timeout = self._deadline(timeout)
            t0 = time.perf_counter()
            if isinstance(A, ResidentHandle):
                return self.resident.submit(A, B, code=code, errors=errors, timeout=timeout, t0=t0)
            if code is None:
                raise ConfigurationError("`code` is required, e.g. code=MDSCode(workers, k)")
            self._check_code(code)
            self._check_errors(code, errors)
            enc = code.encode(A, B, precision=precision)
            stack = enc._stack
            if stack is not None:   # C-ordered ndarrays of one layout already (small encodes)
                return self._start_stacked(code, enc, stack, errors, timeout, t0)
            return self._start(code, enc, _matmul_request(code.field, bool(enc.compensated)),
                               [[_np(t.a), _np(t.b)] for t in enc], errors, timeout, t0)

    def _start_stacked(self, code: LinearCode, enc: Encoding, stack: tuple, errors: int,
                       timeout: float, t0: float) -> Job:
        """:meth:`_start` of a product whose encode gave its tasks as one stack (``enc._stack``:
        ``(tasks, b)``, a small encode's); a transport with a shorter way for them overrides
        it (MPI's compiled path)."""
        return self._start(code, enc, _matmul_request(code.field, bool(enc.compensated)),
                           _Stacked(*stack), errors, timeout, t0)

    def matmul(self, A: Any, B: Any, *, code: LinearCode | None = None, errors: int = 0,
               timeout: float | None = None, precision: str = "auto") -> np.ndarray:
        """``A @ B`` decoded from the first results that suffice (see :meth:`submit`)."""
        return self._wait(self.submit(A, B, code=code, errors=errors, timeout=timeout,
                                      precision=precision))

    def _start(self, code: LinearCode, enc: Encoding, req: Request,
               per_worker: list[list[np.ndarray]], errors: int, timeout: float, t0: float,
               wait_all: bool = False, handle: int | None = None,
               skip: Sequence[int] = (), stored_rows: int = 0) -> Job:
        """Register a job and send its requests (under the lock). ``stored_rows``: the rows
        of each worker's stored block, for a product with one (its size, for
        :meth:`_yielding`)."""
        t_enc = time.perf_counter() - t0
        jid = self._next_job
        self._next_job += 1
        dead = self._dead
        if dead or skip:
            skip = set(skip)
            rows = [w for w in range(self.workers) if w not in dead and w not in skip]
        else:   # (the common case: every worker asked)
            rows = range(self.workers)
        job = Job(self, jid, code, enc, errors, timeout, rows, t0, wait_all, handle)
        job.encode_time = t_enc
        if type(per_worker) is _Stacked and self._lands and req.field is None \
                and not req.compensated:
            job._land = self._landing(jid, per_worker.tasks, per_worker.b)
        if dead or skip:
            for w in range(self.workers):
                if w in dead:
                    job.failed[w] = "crashed"
                elif w in skip:
                    job.failed[w] = "stale"
        self._register(job, req.with_job(jid), per_worker,
                       yielding=self._parity_nice and self._yielding(
                           code, req, errors, wait_all, per_worker, stored_rows) or None)
        if dead or skip or not rows:
            job._progress()  # e.g. every worker dead or stale: settles at once, named
        return job

    #: The smallest product (multiply-adds) whose parity tasks yield: a smaller one is over
    #: soon anyway, and reading its request in Python (it carries a parameter) and handing
    #: it to another thread would cost the shared cores more than lowering it gives back.
    YIELD_MIN_MACS = 1 << 22

    def _yielding(self, code: LinearCode, req: Request, errors: int, wait_all: bool,
                  per_worker: list[list[np.ndarray]], stored_rows: int
                  ) -> tuple[frozenset[int], int] | None:
        """(the code's data workers, :attr:`parity_nice`) where a job's parity products
        yield, else None: with ``parity_nice`` set, for a product of a systematic code, in a
        job that can do without its parity results (not one that waits for every result, a
        scrub, or corrects errors, which needs more than k), whose products are large enough
        to matter (:attr:`YIELD_MIN_MACS`)."""
        nice = self._parity_nice
        if not nice or req.op is not Op.MATMUL or wait_all or errors:
            return None
        task = per_worker[-1] if per_worker else []
        if len(task) == 2:          # a of (rows, inner), b of (inner[, cols])
            a, b = task
            macs = a.size * (b.shape[-1] if b.ndim > 1 else 1)
        elif len(task) == 1:        # a stored block of stored_rows x inner, b sent
            macs = stored_rows * task[0].size
        else:
            return None
        data = _systematic_set(code) if macs >= self.YIELD_MIN_MACS else None
        return (data, nice) if data else None

    def _register(self, r: _Request, req: Request, per_worker: list[list[np.ndarray]] | None,
                  arrays: list[np.ndarray] | None = None,
                  yielding: tuple[frozenset[int], int] | None = None) -> None:
        """Track ``r`` and send its requests. ``yielding``: (the code's data workers, nice):
        the data workers' requests go first, then the others' with ``nice`` (their products
        yield the cores: :attr:`parity_nice`)."""
        table = self._acks if isinstance(r, Ack) else self._pending
        table[r.id] = r
        if r.deadline < self._next_deadline:
            self._next_deadline = r.deadline
        try:
            if per_worker is None:
                self._send_many(r.sent_to, req, arrays or [])
            elif yielding is None:
                self._send_each(r.sent_to, req, per_worker)
            else:
                data, nice = yielding
                self._send_each([w for w in r.sent_to if w in data], req, per_worker)
                self._send_each([w for w in r.sent_to if w not in data],
                                Request(req.op, req.job, req.handle, req.field, req.compensated,
                                        {**req.params, "nice": nice}), per_worker)
        except BaseException as exc:
            r._settle(exc=exc)
            raise
        self._ensure_progress()

    def _wait(self, r: Job) -> Any:
        """``r.result()``, its report kept in ``history`` whether it succeeded or not."""
        try:
            return r.result()
        finally:
            self.history.append(r.report)

    # ------------------------------------------------------------------ handlers
    def call(self, name: str, *arrays: Any, params: dict[str, Any] | None = None,
             per_worker: Sequence[Sequence[Any]] | None = None, workers: Sequence[int] | None = None,
             timeout: float | None = None) -> Call:
        """Run the handler registered as ``name`` (``handlers=`` of the cluster) on workers.

        Each worker calls ``handler(ctx, *arrays, **params)`` with its
        :class:`~codedml.runtime.WorkerContext` and replies with the array it returns;
        ``per_worker[w]`` replaces ``arrays`` for worker ``w``; ``params`` must be plain data
        (str, int, float, bool, None, lists and str-keyed dicts of them). Returns a
        :class:`Call` that collects the raw results (no decoding).
        """
        with self._lock:
            self._check_open()
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"`name` must be a handler name, got {name!r}")
            if name not in self._handler_names:
                raise ConfigurationError(
                    f"`name` must be a handler registered with the cluster's `handlers=` (the "
                    f"same on every rank): {sorted(self._handler_names)}, got {name!r}")
            if workers is None:
                rows = list(range(self.workers))
            else:
                if isinstance(workers, np.ndarray) and workers.ndim == 1:
                    workers = workers.tolist()
                if isinstance(workers, (str, bytes)) or not isinstance(workers, Sequence):
                    raise ConfigurationError(
                        f"`workers` must be a sequence of worker indices, got {workers!r}")
                rows = [check_int("workers[i]", w, 0, self.workers - 1) for w in workers]
                if not rows:
                    raise ConfigurationError("`workers` must name at least one worker, got none")
                if len(set(rows)) != len(rows):
                    raise ConfigurationError(
                        f"`workers` must not repeat a worker (each is asked once), got {list(workers)}")
            if per_worker is not None:
                if arrays:
                    raise ConfigurationError(
                        "give the arrays either to every worker (positional) or per worker "
                        "(`per_worker`), not both")
                if len(per_worker) != self.workers:
                    raise ConfigurationError(
                        f"`per_worker` must have one entry per worker ({self.workers}), got {len(per_worker)}")
                for w in rows:
                    if not isinstance(per_worker[w], (list, tuple)):
                        raise ConfigurationError(
                            f"`per_worker[{w}]` must be a list of the arrays worker {w}'s handler "
                            f"gets, got {type(per_worker[w]).__name__}")
            # copies of the caller's arrays, checked before a job id is taken: they are read
            # until their sends complete, which may be after this returns, and the caller may
            # write to its own meanwhile
            if per_worker is not None:
                per = [_call_arrays(per_worker[w], f"per_worker[{w}]") if w in rows else []
                       for w in range(self.workers)]
            else:  # the same arrays to every worker: copied once
                shared = _call_arrays(arrays, "arrays")
            timeout = self._deadline(timeout)
            jid = self._next_job
            self._next_job += 1
            req = call_request(jid, name, params)
            dead = self._dead
            call = Call(self, jid, name, [w for w in rows if w not in dead] if dead else rows,
                        timeout, time.perf_counter())
            for w in rows:
                if w in dead:
                    call.failed[w] = "crashed"
            if per_worker is not None:
                self._register(call, req, per)
            else:
                self._register(call, req, None, shared)
            call._progress()
            return call

    # ------------------------------------------------------------------ stored operands
    def put(self, A: Any, *, code: LinearCode, precision: str = "auto",
            timeout: float | None = None) -> Any:
        """Store ``A`` encoded on the workers (see :meth:`ResidentService.put`)."""
        return self.resident.put(A, code=code, precision=precision, timeout=timeout)

    def update(self, handle: Any, U: Any, V: Any, *, timeout: float | None = None) -> Any:
        """In place ``A <- A + U V^T`` on the stored blocks (see :meth:`ResidentService.update`)."""
        return self.resident.update(handle, U, V, timeout=timeout)

    def sgd_step(self, handle: Any, U: Any, V: Any, **kw: Any) -> Any:
        """An SGD step on a stored weight (see :meth:`ResidentService.sgd_step`)."""
        return self.resident.sgd_step(handle, U, V, **kw)

    def submit_left(self, L: Any, handle: Any, *, errors: int = 0,
                    timeout: float | None = None) -> Job:
        """Start ``L @ A`` for a stored ``A`` (see :meth:`ResidentService.submit_left`)."""
        return self.resident.submit_left(L, handle, errors=errors, timeout=timeout)

    def matmul_left(self, L: Any, handle: Any, *, errors: int = 0,
                    timeout: float | None = None) -> np.ndarray:
        """``L @ A`` for a stored ``A`` (see :meth:`ResidentService.submit_left`)."""
        return self._wait(self.submit_left(L, handle, errors=errors, timeout=timeout))

    def fetch(self, handle: Any, *, errors: int = 0, timeout: float | None = None,
              wait_all: bool = False, return_job: bool = False) -> Any:
        """Decode a stored operand (see :meth:`ResidentService.fetch`)."""
        return self.resident.fetch(handle, errors=errors, timeout=timeout, wait_all=wait_all,
                                   return_job=return_job)

    def scrub(self, handle: Any, *, timeout: float | None = None, seed: int | None = None,
              retries: int = 2) -> Any:
        """Check and repair the stored blocks (see :meth:`ResidentService.scrub`)."""
        return self.resident.scrub(handle, timeout=timeout, seed=seed, retries=retries)

    def drop(self, handle: Any, *, timeout: float | None = None) -> Ack:
        """Free a stored operand on the workers (see :meth:`ResidentService.drop`)."""
        return self.resident.drop(handle, timeout=timeout)

    # ------------------------------------------------------------------ progress
    def progress(self, timeout: float = 0.0) -> None:
        """Receive what arrives within ``timeout`` seconds (one poll at least) and route it.

        Where the transport asks callers to pump (MPI), the caller counts as driving progress
        meanwhile, so the progress thread keeps out of its way, and it waits for arrivals
        inside the transport's poll where that can wait (the compiled path)."""
        timeout = check_wait("timeout", timeout) or 0.0
        end = time.perf_counter() + timeout
        drives = 1 if self._caller_progress else 0
        with self._lock:
            self._drivers += drives
        try:
            while True:
                wait = self._poll_wait(max(0.0, end - time.perf_counter()))
                with self._lock:
                    got = self._pump(wait)
                left = end - time.perf_counter()
                if got or left <= 0:
                    return
                if wait <= 0:
                    self._idle(min(left, 0.05))
        finally:
            with self._lock:
                self._drivers -= drives

    def drain(self, timeout: float = 0.0) -> None:
        """Receive what arrives during ``timeout`` seconds (at least one poll): late results
        are recorded in their request's report, crashed workers are noticed."""
        timeout = check_wait("timeout", timeout) or 0.0
        end = time.perf_counter() + timeout
        with self._lock:
            self._pump()
        while time.perf_counter() < end:
            self._idle(min(0.05, max(0.0, end - time.perf_counter())))
            with self._lock:
                self._pump()

    def _pump(self, wait: float = 0.0, want: int = 1, job: Any = None) -> int:
        """One round (under the lock): route arrivals (waiting up to ``wait`` seconds for one,
        or ``want``, where the transport can; ``job``: the request the caller waits for, see
        :meth:`_poll`), settle expired requests. Returns the number of arrivals."""
        return self._book(self._poll(wait, want, job))

    def _book(self, arrivals: list[Arrival]) -> int:
        """The rest of :meth:`_pump` once its poll returned (under the lock): the results the
        poll landed or booked, then ``arrivals``, each to its request; the expired requests
        and the wake-ups that are due; returns the number of arrivals."""
        now = time.perf_counter()
        got = len(arrivals)
        landed = self._landed
        if self._booked or landed is not None:
            # results the transport's poll landed (the waited-for job's) or booked itself
            # (_inline_result), first: a booked one came before every arrival the poll
            # handed over; a landed one may have come after other workers' replies, whose
            # order against it decides nothing (a poll takes one reply a worker), and goes
            # first, then the booked ones in order
            booked, self._booked = self._booked, []
            self._landed = None
            got += len(booked)
            # (see _cancel_all; a depth, not a flag: a done-callback run by a settle here may
            # pump again, and the cancels held meanwhile go out once, from the outermost)
            self._hold_depth += 1
            try:
                if landed is not None:
                    got += landed._take_landed(now)
                for r, w, payload, t in booked:
                    if r is not None:       # (None: nobody's any more, the last answer noted)
                        r._accept_result(w, payload, t)
            finally:
                self._hold_depth -= 1
                self._release_held()
        for a in arrivals:
            self._route(a, now)
        if now >= self._next_deadline:
            self._expire_due(now)
        if self._wakes:  # requests that asked to be looked at again (a systematic wait)
            for r in [r for r in self._wakes if now >= r.wake_at]:
                self._wakes.remove(r)
                r.wake_at = None
                r._progress()
        if got and self._waiting:
            self._changed.notify_all()
        return got

    def _release_held(self) -> None:
        """The cancels held while results were booked (see :meth:`_cancel_all`), sent once
        the outermost booking is done: none to a worker whose result came meanwhile (in hand,
        noted late: it has nothing left to skip)."""
        if not self._hold_depth and self._held_cancels:
            held, self._held_cancels = self._held_cancels, []
            for r, owed in held if not self._closed else ():
                late = r.late
                self._send_cancels([w for w in owed if w not in late] if late else owed, r)

    def _expire_due(self, now: float) -> None:
        """Settle the requests whose deadline has passed (under the lock), and note the
        nearest deadline of those left."""
        for table in (self._pending, self._acks):
            for r in [r for r in table.values() if now >= r.deadline]:
                r._expire()
        self._next_deadline = min((r.deadline for t in (self._pending, self._acks)
                                   for r in t.values()), default=math.inf)

    def _inline_result(self, out: list[Arrival], w: int, job: int, payload: Any,
                       elapsed: float, now: float) -> bool:
        """A result whose payload came with its header, from a transport's poll: booked
        where it is one of the common replies, else appended to ``out`` as an
        :class:`Arrival`. Returns whether it was booked.

        Booked: a result of a pending call that still owes it, of a job (a pending one, or
        one settled that is still held: late) or of a request nobody holds any more; kept
        in :attr:`_booked` for the end of the poll, where :meth:`_pump` hands each to its
        request as :meth:`_route` would, without an
        :class:`Arrival`. Only while nothing earlier in the same poll waits in ``out``, so
        that every reply keeps its order (a worker's error that marks its stored block
        stale must come before that block's result)."""
        if not out:
            r = self._pending.get(job)
            kind = type(r)
            if kind is Call:                  # the commonest (a training step's)
                ok = not (r.settled or w in r.results
                          or len(r.results) + len(r.failed) >= len(r.sent_to))
            elif kind is Job:                 # (_route's rule for stale stored blocks)
                ok = not (self._stale and r.handle is not None)
            elif r is None:
                r = self._finished.get(job)
                ok = r is None or (type(r) is Job and not (self._stale and r.handle is not None))
            else:
                ok = False
            if ok:
                self._note_answer(w, job)
                self._booked.append((r, w, payload, now))
                return True
        out.append(Arrival(w, job, "result", payload, elapsed))
        return False

    def _note_answer(self, w: int, job: int) -> None:
        """Worker ``w`` answered request ``job``: the requests after its last answer are
        those a death notice without a job concerns."""
        if job > self._last_answer.get(w, -1):
            self._last_answer[w] = job

    def _route(self, a: Arrival, now: float) -> None:
        w = a.worker
        if a.kind == "dead":
            if a.worker in self._dead:
                return
            self._dead.add(a.worker)
            # The requests it died in: from the job of the notice when the transport knows it
            # (LocalCluster), else those after the last request it answered (MPI).
            since = a.job if a.job >= 0 else self._last_answer.get(a.worker, -1) + 1
            for r in list(self._pending.values()) + list(self._finished.values()):
                if r.id >= since:
                    r._accept(a, now)
            for r in list(self._acks.values()):
                r._accept(a, now)
            return
        if a.ack:
            r = self._acks.get(a.job)
            if r is not None:
                r._accept(a, now)
            return
        self._note_answer(w, a.job)
        r = self._pending.get(a.job) or self._finished.get(a.job)
        if r is None:
            return
        if (a.kind == "result" and self._stale and isinstance(r, Job) and r.handle is not None
                and w in self._stale.get(r.handle, ())):
            # Its block missed an update that failed there (the error arrived first: replies
            # of one worker arrive in order): an erasure, never a "soft error".
            if not r.settled and w in r._outstanding():
                r.failed[w] = "stale"
                r._progress()
            return
        r._accept(a, now)

    @property
    def systematic_grace(self) -> float:
        """How long a job of a systematic code waits for its outstanding data workers once
        a decodable set arrived without them, in mean arrival gaps per missing result
        (docs/runtime.md, "Waiting for systematic results"); 0 decodes at once. A finite
        number >= 0; default :data:`SYSTEMATIC_GRACE`."""
        return self._systematic_grace

    @systematic_grace.setter
    def systematic_grace(self, value: Any) -> None:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not ok or not math.isfinite(float(value)) or float(value) < 0:
            raise ConfigurationError(
                f"`systematic_grace` must be a finite number >= 0 (arrival gaps to wait per "
                f"missing systematic result; 0 turns the wait off), got {value!r}")
        self._systematic_grace = float(value)

    @property
    def parity_nice(self) -> int:
        """How much lower (in nice values, 0-19) the workers run the products of a
        systematic code's parity tasks than those of its data tasks, so that on cores that
        ranks share the products a fault-free job decodes from finish first (docs/runtime.md,
        "Parity products that yield"); 0 (the default) runs them alike. Linux only."""
        return self._parity_nice

    @parity_nice.setter
    def parity_nice(self, value: Any) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                or not 0 <= int(value) <= MAX_NICE:
            raise ConfigurationError(
                f"`parity_nice` must be an int from 0 to {MAX_NICE} (how many nice values "
                f"lower parity products run; 0 turns it off), got {value!r}")
        if value and not PER_THREAD_NICE:
            raise ConfigurationError(
                f"`parity_nice` needs per-thread nice values (Linux); this is {sys.platform!r}")
        self._parity_nice = int(value)

    def _wake_at(self, r: _Request, when: float) -> None:
        """Call ``r._progress()`` again at ``when`` (perf_counter seconds) unless it settled
        first (under the lock)."""
        if r.wake_at is None:
            self._wakes.append(r)
        r.wake_at = when

    def _note_solve(self, code: Any, seconds: float) -> None:
        """Keep a running average of how long a decode that solved (not just assembled) took
        for ``code``: the cap on a job's wait for systematic results (noted while
        :attr:`systematic_grace` is above 0, the only time a job waits)."""
        costs = self._solve_costs
        key = _code_key(code)
        old = costs.pop(key, None)
        costs[key] = seconds if old is None else 0.8 * old + 0.2 * seconds
        while len(costs) > self._SOLVE_COSTS:
            costs.popitem(last=False)

    def _solve_cost(self, code: Any) -> float | None:
        return self._solve_costs.get(_code_key(code))

    def _retire(self, r: _Request, owed: list[int] | None = None) -> None:
        """A request settled: out of the pending tables; kept weakly while workers owe it
        (``owed``: its outstanding workers where the caller has them)."""
        if isinstance(r, Ack):
            self._acks.pop(r.id, None)
            return
        self._pending.pop(r.id, None)
        if r.wake_at is not None:  # settled before its wake-up: nothing to look at again
            r.wake_at = None
            self._wakes.remove(r)
        if r._outstanding() if owed is None else owed:
            self._finished[r.id] = r
        if self._waiting:
            self._changed.notify_all()

    def _cancel_all(self, workers: list[int], r: _Request) -> None:
        """Cancel ``r`` at each of ``workers`` still alive (a settled request's outstanding
        ones); an acknowledged operation is not cancelled. While :meth:`_pump` books the
        results of one poll, the cancels wait for the end of it: a worker whose result came
        in the same poll, after the request settled, is not sent one."""
        if isinstance(r, Ack):
            return
        if self._hold_depth:
            self._held_cancels.append((r, workers))
            return
        self._send_cancels(workers, r)

    def _send_cancels(self, workers: list[int], r: _Request) -> None:
        """The cancels of :meth:`_cancel_all`, sent."""
        dead, rid = self._dead, r.id
        for w in workers:
            if w not in dead:
                self._cancel(w, rid)

    def _mark_stale(self, handle: int, worker: int) -> None:
        self._stale.setdefault(handle, set()).add(worker)

    # ------------------------------------------------------------------ progress thread
    def _ensure_progress(self) -> None:
        """Start the progress thread if needed, and wake it if it is parked (nothing was
        pending when it last looked). A thread that is not parked looks again within
        :data:`_DRIVEN_LOOK` seconds (a caller drives) or its polling pause, so waking it for
        every request only made it fight the submitting caller for the lock (about 30 us a
        request at 2 workers)."""
        if self._thread_error is not None:
            raise FaultError(f"the cluster's progress thread failed: {self._thread_error!r}") \
                from self._thread_error
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run_progress, daemon=True,
                                            name="codedml-progress")
            self._thread.start()
        if self._parked:
            self._wake.set()

    def _run_progress(self) -> None:
        try:
            while not self._closed:
                if self._drivers > 0:
                    # A caller waits and pumps every request's arrivals and deadlines itself,
                    # under the lock: keep out of its way without touching the lock (read
                    # unlocked: at worst one look too many or 10 ms late), look again soon.
                    self._parked = False
                    self._wake.wait(_DRIVEN_LOOK)
                    self._wake.clear()
                    continue
                with self._lock:
                    got = self._pump()
                    busy = bool(self._pending or self._acks)
                    nearest = min((r.deadline for t in (self._pending, self._acks)
                                   for r in t.values()), default=None)
                    wake = min((r.wake_at for r in self._wakes), default=None)
                    if wake is not None:
                        nearest = wake if nearest is None else min(nearest, wake)
                    driven = self._drivers > 0
                    # Parked (set under the lock, so a request registered after this sees it
                    # and wakes the thread): nothing is pending.
                    self._parked = not got and not busy
                if got:
                    continue
                if not busy or driven:
                    # Nothing pending, or a waiting caller pumps (and expires deadlines) itself:
                    # keep out of its way, but look again now and then.
                    self._wake.wait(0.25 if not busy else _DRIVEN_LOOK)
                    self._wake.clear()
                    if not busy:
                        # woken by a new request (or the periodic look): give its submitter
                        # the moment it needs to start waiting on it, then look; fighting
                        # it for the lock and the GIL cost about 100 us a call at 2 workers
                        time.sleep(_WAKE_GRACE)
                    continue
                wait = 0.02 if nearest is None else max(0.0, min(0.02, nearest - time.perf_counter()))
                self._idle(wait)
        except BaseException as exc:  # pragma: no cover - a bug: fail every request, named
            self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        """The request core itself failed (a bug or a broken transport): every pending
        request settles with a named :class:`FaultError`, and so does every later one."""
        self._thread_error = exc
        with self._lock:
            for table in (self._pending, self._acks):
                for r in list(table.values()):
                    r._settle(exc=FaultError(f"the cluster's progress thread failed: {exc!r}"))

    def _wait_step(self, timeout: float, want: int = 1, job: Any = None) -> None:
        """One step of a caller's wait, called holding the lock: with a transport that asks
        for it (``_caller_progress``, MPI) the caller pumps arrivals itself, so a reply is
        routed without a hand-over between threads (``want``: the replies its request still
        needs, which the compiled poll gathers in one return; ``job``: that request, see
        :meth:`_poll`); then it waits for a change, at most ``timeout`` seconds (the
        transport's polling pause when the caller pumps)."""
        if self._caller_progress:
            try:
                if self._pump(self._poll_wait(timeout), want, job):
                    return
            except BaseException as exc:
                raise self._progress_failed(exc) from exc
            pause = self._poll_pause()
            if pause <= 0.0:  # a reply is due any moment: let others run, then poll again
                self._wait_changed(0)
                os.sched_yield()
                return
            timeout = min(timeout, pause)
        self._wait_changed(timeout)

    def _progress_failed(self, exc: BaseException) -> FaultError:
        """A caller's pump raised ``exc``: every request fails (see :meth:`_fail_all`), and
        the caller raises the error returned."""
        self._fail_all(exc)
        return FaultError(f"the cluster's progress failed: {exc!r}")

    def _wait_changed(self, timeout: float) -> None:
        """``self._changed.wait(timeout)``, counted: arrivals and settlements notify only
        while someone waits (a notify is a few microseconds of Python)."""
        self._waiting += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiting -= 1

    def _poll_pause(self) -> float:
        """How long a caller pumping by itself waits between polls (seconds)."""
        return 1e-3

    def _stop_progress(self) -> None:
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)

    def _settle_all(self, why: str) -> None:
        """Close: every request still pending settles with a named error."""
        for table in (self._pending, self._acks):
            for r in list(table.values()):
                r._settle(exc=ClusterClosedError(f"{r.what} {r.id}: {why}"))

    # ------------------------------------------------------------------ checks
    def _check_open(self) -> None:
        if self._closed:
            raise ClusterClosedError("the cluster is closed")

    def _deadline(self, timeout: Any) -> float:
        return self.default_timeout if timeout is None else check_deadline("timeout", timeout)

    def _check_code(self, code: LinearCode) -> None:
        if not isinstance(code, LinearCode):
            raise ConfigurationError(f"`code` must be a codedml code, got {type(code).__name__}")
        if code.workers != self.workers:
            raise ConfigurationError(
                f"`code` must have workers={self.workers} (the cluster's worker count), got "
                f"{code.workers}")

    def _check_errors(self, code: LinearCode, errors: int) -> None:
        most = (code.workers - code.recovery_threshold) // 2
        if errors > most:
            raise ConfigurationError(
                f"`errors` must be between 0 and {most} for {code!r} (threshold "
                f"{code.recovery_threshold}: locating e errors needs threshold + 2e of "
                f"{code.workers} results), got {errors}")
