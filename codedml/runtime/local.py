"""The in-process cluster: the same API as :class:`MPICluster`, workers are threads.

For tests and notebooks. Each worker is a thread with its own inbox; the failure model is
applied at the same hook point as under MPI, so a straggler really is late, a fail-silent
worker really never answers, and a "die" fault ends the worker thread (the master is told, as
ULFM tells it under MPI). numpy and torch release the GIL in their products, so worker
threads do overlap.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from ..backends import Backend, get_backend
from ..codes._validate import check_int
from ..faults import FaultModel
from ._cluster import ClusterBase
from ._worker import WorkerContext, WorkerState, remote_error
from .futures import Arrival, check_wait
from .protocol import ACK_OPS, REPLY_OPS, Op, Request

__all__ = ["LocalCluster"]


class _Died(Exception):
    pass


class LocalCluster(ClusterBase):
    """``workers`` worker threads in this process.

    Parameters
    ----------
    workers : int
        Number of workers.
    backend : str or Backend
        ``"numpy"`` (default), ``"torch"`` or ``"cuda"``.
    faults : FaultModel, optional
        Failure model applied to every worker (seeded per (rank, job) with ``seed``); worker
        ``w`` is rank ``w + 1``, as under MPI with the root at rank 0.
    seed : int
        Seed of the failure model.
    timeout : float, optional
        Default deadline of every request, in seconds from its submission (a finite number
        > 0; ``None``: :data:`~codedml.runtime.DEFAULT_TIMEOUT`, 60 s).
    handlers : mapping str -> callable, optional
        Worker-side functions for :meth:`call`: ``handler(ctx, *arrays, **params)`` returns an
        array; ``ctx`` is the worker's :class:`~codedml.runtime.WorkerContext`.

    Examples
    --------
    >>> import numpy as np
    >>> from codedml import LocalCluster
    >>> from codedml.codes import MDSCode
    >>> with LocalCluster(4) as cluster:
    ...     C = cluster.matmul(np.eye(4), np.ones(4), code=MDSCode(4, 2))
    >>> C.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, workers: int, *, backend: str | Backend = "numpy",
                 faults: FaultModel | None = None, seed: int = 0,
                 timeout: float | None = None,
                 handlers: dict[str, Any] | None = None) -> None:
        from ..faults.models import check_model_arg
        from ..faults.config import check_fault_ranks
        from ._cluster import check_handlers

        n = check_int("workers", workers, 1)
        check_model_arg(faults, seed)
        handlers = check_handlers(handlers)
        super().__init__(n, timeout, handlers)
        if faults is not None:
            check_fault_ranks(faults, n, arg="faults")
        self.backend = get_backend(backend)
        self._out: queue.Queue[Arrival] = queue.Queue()
        self._arrived = threading.Event()
        self._cancelled: list[set[int]] = [set() for _ in range(n)]
        self._cancel_lock = threading.Lock()
        self._inboxes = [queue.Queue() for _ in range(n)]
        self._states = [WorkerState(w + 1, self.backend, faults, seed, handlers=dict(handlers or {}),
                                    context=WorkerContext(w + 1, w, self.backend))
                        for w in range(n)]
        self._threads = [threading.Thread(target=self._serve, args=(w,), daemon=True,
                                          name=f"codedml-worker-{w}") for w in range(n)]
        for t in self._threads:
            t.start()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout: float = 30.0) -> None:
        """Settle every pending request (:class:`~codedml.errors.ClusterClosedError`), stop
        the workers after their current request and join them (at most ``timeout`` s)."""
        timeout = check_wait("timeout", timeout) or 0.0
        with self._lock:
            if self._closed:
                return
            self._pump()
            self._settle_all("the cluster was closed before it settled")
            self._closed = True
        self._stop_progress()
        for box in self._inboxes:
            box.put(None)
        end = time.perf_counter() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.perf_counter()))

    def _transport_counts(self) -> dict[str, int]:
        return {"inbox": sum(b.qsize() for b in self._inboxes), "arrivals": self._out.qsize()}

    # ------------------------------------------------------------------ transport
    def _send(self, worker: int, req: Request, arrays: list[np.ndarray]) -> None:
        self._inboxes[worker].put((req, arrays))

    def _cancel(self, worker: int, job: int) -> None:
        with self._cancel_lock:
            self._cancelled[worker].add(job)

    def _poll(self, wait: float = 0.0, want: int = 1, job: object = None) -> list[Arrival]:
        out = []
        try:
            while True:
                out.append(self._out.get_nowait())
        except queue.Empty:
            pass
        return out

    def _idle(self, timeout: float) -> None:
        self._arrived.wait(timeout)
        self._arrived.clear()

    def _reply(self, a: Arrival) -> None:
        self._out.put(a)
        self._arrived.set()

    # ------------------------------------------------------------------ worker threads
    def _serve(self, w: int) -> None:
        state = self._states[w]
        try:
            self._serve_requests(w, state)
        finally:
            state.yielding.close()  # its product thread, if one yielded

    def _serve_requests(self, w: int, state: WorkerState) -> None:
        def die() -> None:
            raise _Died

        while True:
            item = self._inboxes[w].get()
            if item is None:
                return
            req, arrays = item
            job, ack = req.job, req.op in ACK_OPS
            if req.op in REPLY_OPS:
                with self._cancel_lock:  # jobs arrive in order: older cancels are moot
                    skip = job in self._cancelled[w]
                    self._cancelled[w] = {j for j in self._cancelled[w] if j > job}
                if skip:
                    continue
            if req.op is Op.CALL:
                # a handler owns its inputs, as an MPI worker owns the buffers it received:
                # one that works in place must not reach the caller's array or another
                # worker's (the cluster passes one converted array to every worker)
                arrays = [np.array(a, copy=True) for a in arrays]
            t = time.perf_counter()
            try:
                result = state.handle(req, arrays)
                if req.op is Op.CALL:
                    # the caller gets its own array, as from an MPI reply: a handler may return
                    # its worker's state (ctx.store), which later calls change in place
                    result = np.array(result, copy=True)
                if ack:
                    if state.acks():
                        self._reply(Arrival(w, job, "ack", ack=True))
                    continue
                result = state.inject(job, result, req.field, die=die)
                with self._cancel_lock:
                    skip = job in self._cancelled[w]
                if skip or result is None:  # decoded meanwhile (nobody waits), or silent
                    continue
            except _Died:
                self._reply(Arrival(w, job if not ack else -1, "dead"))
                return
            except Exception as exc:  # reaches the master with where it happened
                if state.acks():
                    err = remote_error(exc, w + 1, job, req.op, host="localhost").exception()
                    self._reply(Arrival(w, job, "error", err, ack=ack))
                continue
            self._reply(Arrival(w, job, "result", result, elapsed=time.perf_counter() - t))
