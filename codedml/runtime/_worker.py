"""Worker-side logic shared by the MPI and in-process runtimes: one request in, one reply out.

``WorkerState.handle(request, arrays)`` runs a :class:`~codedml.runtime.protocol.Request` and
returns its result array, or ``None`` for the acknowledged operations (``put``, ``update``,
``sgd``, ``drop``): the transport then sends an acknowledgement, or an error reply when this
raised. Every request gets exactly one reply. :meth:`WorkerState.inject` is the single hook
point where a failure model's fault is applied to a result before it is sent; storage faults
hit a stored block when it is updated. A fail-silent worker sends no reply of any kind.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends import Backend
from ..codes import _gfp
from ..faults import FaultModel, corrupt, fault_for
from .protocol import ACK_OPS, MAX_NICE, REPLY_OPS, Op, RemoteError, Request

__all__ = ["WorkerContext", "WorkerState", "REPLY_OPS", "ACK_OPS", "remote_error"]

#: How many arrays each operation takes (the others: products take 1 or 2, calls any).
_ARRAYS = {Op.PUT: 1, Op.UPDATE: 2, Op.SGD: 2, Op.DROP: 0, Op.FETCH: 0, Op.MATMUL_LEFT: 1}

#: Salt of the storage-fault stream: drawn per (rank, update number), apart from job faults.
_STORAGE_SALT = 0x5707A6E


#: numpy's floating-point error state (numpy 2: the context variable ``np.errstate`` sets),
#: where this numpy has one: a plain product sets the quiet state and resets it directly
#: instead of building an ``np.errstate`` per product, which took about as long as a small
#: product itself on workers sharing cores (measured under MPI, 6 workers on 2 cores: a 4x4
#: job 0.88-0.90x without it). None: ``np.errstate`` as before.
try:
    from numpy._core._ufunc_config import _extobj_contextvar as _ERR_VAR
except (ImportError, AttributeError):  # numpy 1.x: a per-thread error object instead
    _ERR_VAR = None
#: (the error state last seen, it with overflow and invalid ignored): what ``np.errstate(
#: over="ignore", invalid="ignore")`` would set from that state. One tuple, rebound at once,
#: so threads (the in-process cluster's workers) never see half of a pair.
_QUIET: tuple[Any, Any] | None = None


def _quiet_state(var: Any) -> Any:
    """The error state ``np.errstate(over="ignore", invalid="ignore")`` would set in this
    context: the current state with those two ignored (derived once per current state)."""
    global _QUIET
    cur = var.get()
    memo = _QUIET
    if memo is not None and memo[0] is cur:
        return memo[1]
    with np.errstate(over="ignore", invalid="ignore"):
        quiet = var.get()
    _QUIET = (cur, quiet)
    return quiet


@dataclass
class WorkerContext:
    """What a registered handler sees: its rank, worker index, backend and a private ``store``
    (a dict that persists across calls: a data shard, a model replica, ...)."""

    rank: int
    worker: int
    backend: Backend
    store: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerState:
    """What one worker holds: its MPI rank, backend, resident operands and failure model.

    Failure models are asked about the worker's *rank* (with the root at rank 0, worker w is
    rank w + 1, also in :class:`LocalCluster`).
    """

    rank: int
    backend: Backend
    faults: FaultModel | None = None
    seed: int = 0
    resident: dict[int, Any] = field(default_factory=dict)
    silent: bool = False
    handlers: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    context: WorkerContext | None = None
    yielding: "YieldingThread" = field(default_factory=lambda: YieldingThread())

    def _ctx(self) -> WorkerContext:
        if self.context is None:
            self.context = WorkerContext(self.rank, self.rank - 1, self.backend)
        return self.context

    def handle(self, req: Request, arrays: list[np.ndarray]) -> np.ndarray | None:
        """Run one request; returns its result, or ``None`` for an acknowledged operation.

        The master judges rounding noise from its own encoding's norms, so the worker sends
        no noise scale (a corrupt worker could not be trusted to report one anyway)."""
        op, p, hid = req.op, req.field, req.handle
        if op is Op.CALL:  # the most frequent request first (training steps)
            return self._call(req, arrays)
        want = _ARRAYS.get(op)
        if want is not None and len(arrays) != want:
            raise ValueError(f"{op.name} takes {want} arrays, got {len(arrays)}")
        if op is not Op.MATMUL and hid is None:
            raise ValueError(f"{op.name} needs a resident handle")
        if op is Op.PUT:
            a = np.array(arrays[0], copy=True)  # this worker's own copy: updates happen in place
            self.resident[hid] = a if p is not None else self.backend.to_device(a)
            return None
        if op is Op.DROP:
            self.resident.pop(hid, None)
            return None
        if op is Op.UPDATE:  # resident A += U V^T, applied to the encoded block in place
            u, v = arrays
            self._add_outer(self._stored(hid), hid, u, v, p)
            self._storage_faults(req, hid, p)
            return None
        if op is Op.SGD:
            self._sgd(req, arrays, p)
            self._storage_faults(req, hid, p)
            if req.params.get("buffer") is not None:  # the momentum buffer is stored memory too
                self._storage_faults(req, req.params["buffer"], p, block=1)
            return None
        if op is Op.MATMUL:
            nice = req.params.get("nice")
            if nice is not None:  # a parity product that yields the cores (cluster.parity_nice)
                return self.yielding.run(nice, self._product, req, arrays)
            return self._product(req, arrays)
        if op is Op.MATMUL_LEFT:  # l @ stored block: the inner dimension is the stored rows
            a, l = self._stored(hid), arrays[0]
            if p is not None:
                return _gfp.matmul_mod(l, a, p)
            return np.ascontiguousarray(self.backend.to_numpy(self._matmul(req)(self.backend.to_device(l), a)))
        if op is Op.FETCH:
            a = self._stored(hid)
            return np.array(a if isinstance(a, np.ndarray) else self.backend.to_numpy(a), copy=True)
        raise ValueError(f"operation {op.name} is not served by a worker's handle()")

    def _product(self, req: Request, arrays: list[np.ndarray]) -> np.ndarray:
        """A ``MATMUL`` request's product: of its two arrays, or of a stored block and its
        array; over GF(p), compensated or plain as the request says."""
        p, hid = req.field, req.handle
        if hid is not None:
            if len(arrays) != 1:
                raise ValueError(f"a product with a stored block takes 1 array, got {len(arrays)}")
            a, b = self._stored(hid), arrays[0]
        else:
            if len(arrays) != 2:
                raise ValueError(f"a product takes 2 arrays, got {len(arrays)}")
            a, b = arrays
        if p is not None:
            a_np = a if isinstance(a, np.ndarray) else self.backend.to_numpy(a)
            return _gfp.matmul_mod(a_np, b, p)
        if not req.compensated:
            return self.plain_product(a, b)
        return np.ascontiguousarray(self.backend.to_numpy(self._matmul(req)(a, b)))

    def _call(self, req: Request, arrays: list[np.ndarray]) -> np.ndarray:
        return self.call(req.params["name"], arrays, req.params.get("params", {}))

    def call(self, name: str, arrays: list[np.ndarray], params: Mapping[str, Any]) -> np.ndarray:
        """Run the handler registered as ``name`` (a ``CALL`` request's work); its result
        as an array (empty for ``None``)."""
        fn = self.handlers.get(name)
        if fn is None:
            raise KeyError(f"no handler {name!r} registered on this worker "
                           f"(registered: {sorted(self.handlers)})")
        ctx = self.context
        if ctx is None:
            ctx = self._ctx()
        return call_result(fn(ctx, *arrays, **params))

    def _stored(self, hid: int) -> Any:
        try:
            return self.resident[hid]
        except KeyError:
            raise KeyError(f"no resident operand {hid} on rank {self.rank} (stored: "
                           f"{sorted(self.resident)})") from None

    def _matmul(self, req: Request) -> Callable[[Any, Any], Any]:
        """The backend's product for this request: compensated when the root asks for it (a
        code whose decode would amplify plain float64 rounding past its accuracy promise).
        Overflow stays quiet: a stored block hit by a soft error may hold huge values, and the
        root, not the worker's stderr, deals with the product."""
        mm = self.backend.matmul_compensated if req.compensated else self.backend.matmul

        def product(a: Any, b: Any) -> Any:
            with np.errstate(over="ignore", invalid="ignore"):
                return mm(a, b)

        return product

    def plain_product(self, a: Any, b: Any) -> np.ndarray:
        """``a @ b`` by the backend, as the contiguous numpy array a reply carries: a real
        product's work (not compensated, not over GF(p)). Overflow stays quiet, as in
        :meth:`_matmul`. The compiled worker loop calls this directly for a product of two
        sent arrays when there is no failure model (``_wire.Worker.serve``)."""
        var = _ERR_VAR
        if var is None:   # numpy without the context variable: its context manager
            with np.errstate(over="ignore", invalid="ignore"):
                out = self.backend.matmul(a, b)
        else:
            token = var.set(_quiet_state(var))
            try:
                out = self.backend.matmul(a, b)
            finally:
                var.reset(token)
        return out if type(out) is np.ndarray and out.ndim and out.flags.c_contiguous else \
            np.ascontiguousarray(self.backend.to_numpy(out))

    def _add_outer(self, a: Any, hid: int, u: np.ndarray, v: np.ndarray, p: int | None) -> None:
        """Stored block ``a`` (``resident[hid]``) ``+= u v^T`` in place."""
        if p is not None:
            self.resident[hid] = (a + _gfp.matmul_mod(u, v.T.copy(), p)) % p
            return
        delta = self.backend.matmul(self.backend.to_device(u), self.backend.to_device(np.ascontiguousarray(v.T)))
        self.backend.add_(a, delta)

    def _sgd(self, req: Request, arrays: list[np.ndarray], p: int | None) -> None:
        """SGD with momentum and weight decay on the encoded block (torch.optim.SGD's rule).

        ``g = u v^T + wd W``; ``buf = g`` on the first step, else ``mu buf + (1 - damp) g``;
        ``d = g + mu buf`` (Nesterov) or ``buf``; ``W -= lr d``. Every step is linear in W,
        buf and the encoded gradient, so the blocks stay a codeword of the encoded weights.
        """
        if p is not None:
            raise ValueError("sgd needs a real-valued resident operand")
        u, v = arrays
        prm = req.params
        hid, lr = req.handle, float(prm["lr"])
        mu, damp, wd = float(prm["momentum"]), float(prm["dampening"]), float(prm["weight_decay"])
        bk = self.backend
        W = self._stored(hid)
        g = bk.matmul(bk.to_device(u), bk.to_device(np.ascontiguousarray(v.T)))
        if wd:
            g = g + wd * W
        if mu:
            bid = prm["buffer"]
            if prm.get("first"):
                buf = g.copy() if isinstance(g, np.ndarray) else g.clone()
                self.resident[bid] = buf
            else:
                buf = self._stored(bid)
                buf *= mu
                bk.add_(buf, g if damp == 0 else (1.0 - damp) * g)
            g = g + mu * buf if prm.get("nesterov") else buf
        bk.add_(W, -lr * g)

    def _storage_faults(self, req: Request, hid: int, p: int | None, block: int = 0) -> None:
        """Storage soft errors of this update (a :class:`~codedml.faults.StorageErrors` model),
        drawn per (rank, update number, stored block: 0 the operand, 1 its momentum buffer)."""
        seq = req.params.get("seq")
        if self.faults is None or seq is None:
            return
        fault = fault_for(self.faults, self.seed ^ _STORAGE_SALT, self.rank, 2 * int(seq) + block)
        if not fault.storage:
            return
        a = self.resident[hid]
        a_np = a if isinstance(a, np.ndarray) else self.backend.to_numpy(a)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.rank, int(seq), 0x5707, block])
        for c in fault.storage:
            a_np = corrupt(a_np, c, rng, p)
        self.resident[hid] = a_np if p is not None else self.backend.to_device(np.ascontiguousarray(a_np))

    def inject(self, job: int, result: np.ndarray, field_p: int | None, die: Any = None) -> np.ndarray | None:
        """Apply this job's fault: delay, crash or corruption. ``None`` means: send nothing."""
        fault = fault_for(self.faults, self.seed, self.rank, job)
        if fault.crash == "die":
            (die or _die)()
            return None
        if fault.crash == "silent":
            self.silent = True
        if self.silent:
            return None
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.corruptions:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.rank, job, 0xC0])
            for c in fault.corruptions:
                result = corrupt(result, c, rng, field_p)
        return result

    def acks(self) -> bool:
        """Whether this worker still answers (a fail-silent worker sends no reply at all)."""
        return not self.silent


#: Whether a thread's nice value is its own (Linux: ``setpriority`` with a thread id changes
#: that thread only). Elsewhere it would change the whole process, so products do not yield.
PER_THREAD_NICE = sys.platform.startswith("linux")


class YieldingThread:
    """Where a worker runs the products that yield (``cluster.parity_nice``, docs/runtime.md):
    one thread of its own, started by the first such product, whose nice value is raised
    above the worker's by what the request asks, while the worker's thread waits. The
    worker's own thread keeps its priority: an unprivileged thread can lower its priority but
    never raise it back, so a request for less than the thread's lowering starts a fresh
    thread (the old one ends). Handing a product over costs a fraction of starting a thread.
    :meth:`close` ends the thread (the in-process cluster's workers on close)."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._nice = 0  # how much the thread's nice value is above its creator's
        self._seq = 0   # products handed over: each answer names the one it answers

    def run(self, nice: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the thread, ``nice`` values lower than the calling thread."""
        if not PER_THREAD_NICE:
            raise OSError(f"a product that yields (nice {nice}) needs per-thread nice values "
                          f"(Linux); this worker runs on {sys.platform!r}")
        if self._thread is not None and nice < self._nice:
            self.close()  # it cannot raise its priority back: a fresh one
        if self._thread is None:
            t = threading.Thread(target=self._serve, name="codedml-parity-product", daemon=True)
            t.start()  # where it cannot start, this raises and nothing waits on a thread
            self._thread, self._nice = t, 0
        self._seq += 1
        seq = self._seq
        self._todo.put((seq, nice, fn, args))
        while True:  # an answer to an earlier product whose caller was interrupted: dropped
            got, ok, value = self._done.get()
            if got == seq:
                break
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        tid = threading.get_native_id()
        try:
            base, why = os.getpriority(os.PRIO_PROCESS, tid), None  # the creator's, inherited
        except OSError as exc:
            base, why = 0, exc
        while True:
            item = self._todo.get()
            if item is None:
                return
            seq, nice, fn, args = item
            try:
                if nice != self._nice:
                    if why is not None:
                        raise OSError(f"could not read the priority of this worker's product "
                                      f"thread (os.getpriority): {why}") from why
                    try:
                        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, base + nice))
                    except OSError as exc:
                        raise OSError(f"could not lower the priority of this worker's product "
                                      f"thread by {nice} (os.setpriority): {exc}") from exc
                    self._nice = nice
                self._done.put((seq, True, fn(*args)))
            except BaseException as exc:  # raised again on the calling thread
                self._done.put((seq, False, exc))

    def close(self) -> None:
        """End the thread (if one was started); the next product starts another."""
        t, self._thread = self._thread, None
        if t is not None:
            self._todo.put(None)
            t.join()


def call_result(out: Any) -> np.ndarray:
    """What a handler returned as the array its reply carries (empty for ``None``)."""
    return np.zeros(0) if out is None else np.asarray(out)


def remote_error(exc: BaseException, rank: int, job: int, op: Any, host: str | None = None) -> RemoteError:
    """A worker's exception as the plain record that travels to the root."""
    name = op.name.lower() if isinstance(op, Op) else str(op)
    return RemoteError(int(rank), host or socket.gethostname(), int(job), name,
                       type(exc).__name__, str(exc), traceback.format_exc())


def _die() -> None:  # pragma: no cover - the process is gone
    os.kill(os.getpid(), signal.SIGKILL)
