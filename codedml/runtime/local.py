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
import traceback
from typing import Any

import numpy as np

from ..backends import Backend, get_backend
from ..codes._validate import check_int
from ..errors import WorkerFailure
from ..faults import FaultModel
from ._cluster import Arrival, ClusterBase
from ._worker import REPLY_OPS, WorkerContext, WorkerState

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
        Default per-job timeout in seconds.
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
        n = check_int("workers", workers, 1)
        super().__init__(n, timeout)
        self.backend = get_backend(backend)
        self._out: queue.Queue[Arrival] = queue.Queue()
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
        """Stop the workers (after their current request) and join them."""
        if self._closed:
            return
        self._closed = True
        for box in self._inboxes:
            box.put(None)
        end = time.perf_counter() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.perf_counter()))

    def _rank_of(self, worker: int) -> int:
        return worker + 1  # as under MPI with the root at rank 0

    def outstanding(self) -> dict[str, int]:
        """Queued requests and unread arrivals (bounded in a healthy run)."""
        return {"inbox": sum(b.qsize() for b in self._inboxes), "arrivals": self._out.qsize(),
                "jobs": len(self._jobs) + len(self._finished)}

    # ------------------------------------------------------------------ transport
    def _send(self, worker: int, ctrl: dict[str, Any], arrays: list[np.ndarray]) -> None:
        self._inboxes[worker].put((ctrl, arrays))

    def _cancel(self, worker: int, job: int) -> None:
        with self._cancel_lock:
            self._cancelled[worker].add(job)

    def _poll(self, timeout: float) -> list[Arrival]:
        out = []
        try:
            out.append(self._out.get(timeout=timeout) if timeout > 0 else self._out.get_nowait())
            while True:
                out.append(self._out.get_nowait())
        except queue.Empty:
            pass
        return out

    # ------------------------------------------------------------------ worker threads
    def _serve(self, w: int) -> None:
        state = self._states[w]

        def die() -> None:
            raise _Died

        while True:
            item = self._inboxes[w].get()
            if item is None:
                return
            ctrl, arrays = item
            job = ctrl.get("job", -1)
            if ctrl["op"] in REPLY_OPS:
                with self._cancel_lock:  # jobs arrive in order: older cancels are moot
                    skip = job in self._cancelled[w]
                    self._cancelled[w] = {j for j in self._cancelled[w] if j > job}
                if skip:
                    continue
            t = time.perf_counter()
            try:
                result = state.handle(ctrl, arrays)
                if result is None:
                    continue
                result = state.inject(job, result, ctrl.get("field"), die=die)
                with self._cancel_lock:
                    skip = job in self._cancelled[w]
                if skip:  # decoded meanwhile: nobody waits for it
                    continue
            except _Died:
                self._out.put(Arrival(w, job, "dead"))
                return
            except Exception as exc:  # reaches the master with where it happened
                err = WorkerFailure(f"worker {w} raised {type(exc).__name__}: {exc}", rank=w + 1,
                                    host="localhost", job=job,
                                    remote_traceback=traceback.format_exc())
                self._out.put(Arrival(w, job, "error", err))
                continue
            if result is not None:
                self._out.put(Arrival(w, job, "result", result, elapsed=time.perf_counter() - t))
