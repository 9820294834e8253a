"""The MPI master/worker runtime (mpi4py).

Protocol (tags on a private duplicate of the communicator passed in):

``CTRL`` (root -> worker, pickled dict, small)
    a request: ``matmul`` / ``matmul_left`` / ``fetch`` / ``call`` (with a reply) or ``put`` /
    ``update`` / ``sgd`` / ``drop`` / ``close``, the job id and the shapes and dtypes of the
    arrays that follow;
``TASK`` (root -> worker, buffers)
    the request's arrays, sent with ``Isend`` from numpy buffers (no pickling on the data path);
``HDR`` (worker -> root, 8 float64)
    ``[job, kind, ndim, shape0, shape1, dtype, elapsed, 0]`` announcing a reply (the last slot
    is reserved);
``RES`` (worker -> root, buffer)
    the reply's array (a product, or a pickled :class:`WorkerFailure` as bytes);
``CANCEL`` (root -> worker, one int64)
    a job that has been decoded: a worker that has not started it skips it, so a straggler
    does not work through a backlog of jobs nobody waits for.

The root keeps exactly one posted ``Irecv`` for the next header of every worker and polls them
with ``Test``; when a header arrives it receives the payload at once into a fresh buffer and
re-posts the header receive. Nothing is ever cancelled: cancelling the receive that matches a
straggler's large (rendezvous) send leaves that worker stuck in its send forever. Late results
of old jobs arrive like any other, are recognised by the job id in their header, recorded in
their job's report and discarded. Workers send with ``Isend`` and go straight back to reading
requests, so a result the root has not drained yet never blocks a worker.

Crashes: the communicator's error handler is ``ERRORS_RETURN``. Under Open MPI with ULFM
(``mpiexec --with-ft ulfm``) a SIGKILLed worker makes its pending requests fail with
``MPI_ERR_PROC_FAILED``; the root marks it crashed, the job goes on with the other workers, and
the program exits 0. Under MPICH a death by signal ends the whole job (only a clean non-zero
exit survives, with ``-disable-auto-cleanup`` and ``MPIR_CVAR_NO_COLLECTIVE_FINALIZE=1``).
"""

from __future__ import annotations

import pickle
import socket
import time
import traceback
from typing import Any

import numpy as np

from ..backends import Backend, get_backend, set_threads
from ..errors import ConfigurationError, WorkerFailure
from ..faults import FaultModel
from ._cluster import Arrival, ClusterBase
from ._worker import REPLY_OPS, WorkerContext, WorkerState

__all__ = ["MPICluster"]

TAG_CTRL, TAG_TASK, TAG_HDR, TAG_RES, TAG_CANCEL = 101, 102, 103, 104, 105
KIND_RESULT, KIND_ERROR, KIND_BYE = 0, 1, 2
_DTYPES = [np.dtype(t) for t in (np.float64, np.float32, np.complex128, np.complex64, np.int64, np.uint8)]
_CODE = {dt: i for i, dt in enumerate(_DTYPES)}


def _proc_failed(exc: Exception) -> bool:
    from mpi4py import MPI

    try:
        cls = exc.Get_error_class()  # type: ignore[attr-defined]
    except AttributeError:
        return False
    failed = {getattr(MPI, n) for n in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
              if hasattr(MPI, n)}
    return cls in failed


def _skip_finalize_at_exit() -> None:
    """After a rank has died, end this process at interpreter exit without MPI_Finalize.

    With Open MPI 5.0.11's ULFM, MPI_Finalize after a rank died hung in 1 of 4-8 runs here,
    every survivor waiting in ``ompi_mpi_finalize``. An ``atexit`` hook runs after the
    program's own cleanup and before mpi4py's low-level finalize: it flushes the standard
    streams and ends the process with status 0, which ULFM's mpiexec accepts.
    """
    import atexit
    import os
    import sys

    def _exit() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # pragma: no cover
                pass
        os._exit(0)

    atexit.register(_exit)


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
    """

    def __init__(self, comm: Any, root: int = 0, *, backend: str | Backend = "numpy",
                 faults: FaultModel | None = None, seed: int = 0, timeout: float | None = None,
                 threads: int | None = 1, handlers: dict[str, Any] | None = None) -> None:
        from mpi4py import MPI

        size = comm.Get_size()
        if size < 2:
            raise ConfigurationError(
                f"MPICluster needs at least 2 ranks (a root and a worker), got a communicator of size {size}")
        if not 0 <= int(root) < size:
            raise ConfigurationError(f"`root` must be between 0 and {size - 1}, got {root}")
        self.root = int(root)
        self.comm = comm.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank = self.comm.Get_rank()
        self._ranks = [r for r in range(size) if r != self.root]
        super().__init__(len(self._ranks), timeout)
        set_threads(threads)
        self._backend_spec = backend
        self._faults, self._seed = faults, int(seed)
        self._handlers = dict(handlers or {})
        self._outgoing: list[tuple[Any, Any]] = []
        self._hdr: dict[int, tuple[Any, np.ndarray]] = {}
        self._notices: list[Arrival] = []
        self._bye: set[int] = set()

    # ------------------------------------------------------------------ roles
    @property
    def is_root(self) -> bool:
        return self.rank == self.root

    def __enter__(self) -> "MPICluster | None":
        if self.is_root:
            for w in range(self.workers):
                self._post_header(w)
            return self
        self.serve()
        return None

    def __exit__(self, *exc: Any) -> None:
        if self.is_root:
            self.close()

    def _rank_of(self, worker: int) -> int:
        return self._ranks[worker]

    # ------------------------------------------------------------------ root side
    def _post_header(self, w: int) -> None:
        buf = np.empty(8, dtype=np.float64)
        self._hdr[w] = (self.comm.Irecv(buf, source=self._ranks[w], tag=TAG_HDR), buf)

    def _mark_dead(self, w: int) -> None:
        if w not in self._dead:
            self._dead.add(w)
            self._notices.append(Arrival(w, -1, "dead"))
        self._hdr.pop(w, None)

    def _send(self, worker: int, ctrl: dict[str, Any], arrays: list[np.ndarray]) -> None:
        if worker in self._dead:
            return
        arrays = [np.ascontiguousarray(a) for a in arrays]
        ctrl = dict(ctrl, shapes=[(a.shape, a.dtype.str) for a in arrays])
        dest = self._ranks[worker]
        try:
            self._outgoing.append((self.comm.isend(ctrl, dest=dest, tag=TAG_CTRL), None))
            for a in arrays:
                self._outgoing.append((self.comm.Isend(a, dest=dest, tag=TAG_TASK), a))
        except Exception as exc:
            if _proc_failed(exc):
                self._mark_dead(worker)
                return
            raise

    def _cancel(self, worker: int, job: int) -> None:
        if worker in self._dead or worker in self._bye:
            return
        buf = np.array([job], dtype=np.int64)
        try:
            self._outgoing.append((self.comm.Isend(buf, dest=self._ranks[worker], tag=TAG_CANCEL), buf))
        except Exception as exc:
            if _proc_failed(exc):
                self._mark_dead(worker)
                return
            raise

    def _prune_outgoing(self) -> None:
        keep = []
        for req, buf in self._outgoing:
            try:
                if not req.Test():
                    keep.append((req, buf))
            except Exception as exc:
                if not _proc_failed(exc):
                    raise
        self._outgoing = keep

    def _poll(self, timeout: float) -> list[Arrival]:
        end = time.perf_counter() + max(0.0, timeout)
        pause = 2e-4
        while True:
            out, self._notices = self._notices, []
            self._prune_outgoing()
            for w in list(self._hdr):
                req, buf = self._hdr[w]
                try:
                    ready = req.Test()
                except Exception as exc:
                    if _proc_failed(exc):
                        self._mark_dead(w)
                        out.append(Arrival(w, -1, "dead"))
                        continue
                    raise
                if ready:
                    a = self._receive(w, buf)
                    if a is not None:
                        out.append(a)
            out.extend(self._notices)
            self._notices = []
            if out or time.perf_counter() >= end:
                return out
            time.sleep(pause)  # poll with short sleeps: ranks share 2 cores when oversubscribed
            pause = min(pause * 2, 5e-3)

    def _receive(self, w: int, hdr: np.ndarray) -> Arrival | None:
        job, kind, ndim = int(hdr[0]), int(hdr[1]), int(hdr[2])
        if kind == KIND_BYE:
            self._bye.add(w)
            self._hdr.pop(w, None)
            return None
        shape = tuple(int(s) for s in hdr[3:3 + ndim])
        buf = np.empty(shape, dtype=_DTYPES[int(hdr[5])])
        try:
            self.comm.Recv(buf, source=self._ranks[w], tag=TAG_RES)
        except Exception as exc:
            if _proc_failed(exc):
                self._mark_dead(w)
                return Arrival(w, job, "dead")
            raise
        self._post_header(w)
        if kind == KIND_ERROR:
            return Arrival(w, job, "error", pickle.loads(buf.tobytes()))
        return Arrival(w, job, "result", buf, elapsed=float(hdr[6]))

    def outstanding(self) -> dict[str, int]:
        """Pending MPI requests on the root: one header receive per live worker plus unsent
        outgoing messages (bounded in a healthy run), and jobs still tracked."""
        self._prune_outgoing()
        return {"header_receives": len(self._hdr), "outgoing": len(self._outgoing),
                "jobs": len(self._jobs) + len(self._finished)}

    def close(self, timeout: float = 60.0) -> None:
        """Tell every live worker to stop, drain what is in flight, and release the workers.

        Waits at most ``timeout`` seconds for workers to say goodbye (a straggler finishing its
        delay); never blocks on a dead or silent rank beyond that.
        """
        if self._closed or not self.is_root:
            return
        self._progress(0.0)
        for w in range(self.workers):
            self._send(w, {"op": "close", "failures": bool(self._dead)}, [])
        self._closed = True
        end = time.perf_counter() + timeout
        live = lambda: [w for w in range(self.workers) if w not in self._dead and w not in self._bye]
        while live() and time.perf_counter() < end:
            self._progress(min(0.05, max(0.0, end - time.perf_counter())))
        for w in live():  # hung past the timeout: cancel the small header receive and move on
            req, _ = self._hdr.pop(w, (None, None))
            if req is not None:
                req.Cancel()
        deadline = time.perf_counter() + 5.0
        while self._outgoing and time.perf_counter() < deadline:
            self._prune_outgoing()
            time.sleep(1e-3)
        if self._dead:
            _skip_finalize_at_exit()

    # ------------------------------------------------------------------ worker side
    def serve(self) -> None:
        """Worker loop: receive a request, run it, send the reply; until the root says close."""
        backend = get_backend(self._backend_spec)
        state = WorkerState(self.rank, backend, self._faults, self._seed, handlers=self._handlers,
                            context=WorkerContext(self.rank, self._ranks.index(self.rank), backend))
        host = socket.gethostname()
        pending: list[tuple[Any, Any]] = []
        comm, root = self.comm, self.root
        cancelled: set[int] = set()
        cbuf = np.empty(1, dtype=np.int64)
        # A posted receive, tested: a bare Iprobe did not see a cancel already sent (Open MPI 5
        # made no progress in it), so stragglers never skipped decoded jobs.
        creq = [comm.Irecv(cbuf, source=root, tag=TAG_CANCEL)]

        def read_cancels() -> None:
            while creq[0].Test():
                cancelled.add(int(cbuf[0]))
                creq[0] = comm.Irecv(cbuf, source=root, tag=TAG_CANCEL)

        while True:
            # Wait with short sleeps, not in a blocking receive: Open MPI spins in MPI_Recv, and
            # with ranks oversubscribed on few cores idle workers then starve the root (its
            # decodes ran 4x slower under mpiexec than alone).
            pause = 5e-5
            while not comm.Iprobe(source=root, tag=TAG_CTRL):
                read_cancels()
                pending = [(r, b) for r, b in pending if not r.Test()]
                time.sleep(pause)
                pause = min(pause * 2, 1e-3)
            ctrl = comm.recv(source=root, tag=TAG_CTRL)
            arrays = []
            for shape, dt in ctrl.get("shapes", []):
                buf = np.empty(shape, dtype=np.dtype(dt))
                comm.Recv(buf, source=root, tag=TAG_TASK)
                arrays.append(buf)
            op, job = ctrl["op"], int(ctrl.get("job", -1))
            read_cancels()
            if op in REPLY_OPS:
                skip = job in cancelled
                cancelled.difference_update([j for j in cancelled if j <= job])  # in order: moot
                if skip:
                    continue
            if op == "close":
                if ctrl.get("failures"):
                    _skip_finalize_at_exit()
                bye = np.array([job, KIND_BYE, 0, 0, 0, 0, 0, 0], dtype=np.float64)
                pending.append((comm.Isend(bye, dest=root, tag=TAG_HDR), bye))
                for req, _ in pending:
                    req.Wait()
                read_cancels()
                creq[0].Cancel()  # a 1-int receive: nothing can be stuck behind it
                creq[0].Wait()
                return
            t = time.perf_counter()
            try:
                result = state.handle(ctrl, arrays)
                if result is None:
                    continue
                result = state.inject(job, result, ctrl.get("field"))
                read_cancels()
                if result is None or job in cancelled:  # silent, or decoded meanwhile
                    cancelled.discard(job)
                    continue
                result = np.ascontiguousarray(result)
                if result.dtype not in _CODE:
                    result = result.astype(np.float64)
                kind = KIND_RESULT
            except Exception as exc:
                err = WorkerFailure(f"worker rank {self.rank} raised {type(exc).__name__}: {exc}",
                                    rank=self.rank, host=host, job=job,
                                    remote_traceback=traceback.format_exc())
                result, kind = np.frombuffer(pickle.dumps(err), dtype=np.uint8).copy(), KIND_ERROR
            shape = list(result.shape) + [0] * (2 - result.ndim)
            hdr = np.array([job, kind, result.ndim, shape[0], shape[1], _CODE[result.dtype],
                            time.perf_counter() - t, 0.0], dtype=np.float64)
            pending.append((comm.Isend(hdr, dest=root, tag=TAG_HDR), hdr))
            pending.append((comm.Isend(result, dest=root, tag=TAG_RES), result))
            pending = [(r, b) for r, b in pending if not r.Test()]
