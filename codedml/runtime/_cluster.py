"""Master-side logic shared by :class:`MPICluster` and :class:`LocalCluster`.

A transport implements ``_send(worker, ctrl, arrays)`` (non-blocking) and
``_poll(timeout) -> list[Arrival]``; everything else lives here: job bookkeeping, collecting
the first results that suffice, decoding (retrying with more results when the ones at hand
are inconsistent), the per-worker report, resident operands and their linear updates.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..codes import Encoding, LinearCode, MDSCode, ReplicationCode, Task
from ..codes.resident import encode_left
from ..codes._base import _input_dtype
from ..codes._validate import check_int
from ..errors import (ConfigurationError, CorruptResultError, NotEnoughResultsError,
                      WorkerFailure)

__all__ = ["Arrival", "Call", "ClusterBase", "Job", "JobReport", "ResidentHandle", "ScrubReport",
           "WorkerStatus"]


@dataclass
class Arrival:
    """One message from a worker: a result, an error (``kind="error"``) or a death notice."""

    worker: int
    job: int
    kind: str  # "result" | "error" | "dead"
    payload: Any = None
    elapsed: float = 0.0


@dataclass
class WorkerStatus:
    """One worker's part in one job.

    ``status`` is ``"used"`` (its result went into the decode), ``"late"`` (arrived after the
    decode: a straggler that was not waited for), ``"missing"`` (never arrived), ``"crashed"``
    (its process died), ``"corrupt"`` (located as faulty and excluded), ``"spare"`` (arrived
    in time but was not needed) or ``"error"`` (raised an exception).
    """

    worker: int
    rank: int
    status: str
    latency: float | None = None


@dataclass
class JobReport:
    """What happened in one job: per-worker status and latency, the decode and its timing."""

    job: int
    code: str
    needed: int
    errors: int
    workers: list[WorkerStatus]
    faulty: tuple[int, ...] = ()
    condition: float = float("nan")
    wall: float = float("nan")
    decode: float = float("nan")
    encode: float = float("nan")

    def count(self, status: str) -> int:
        return sum(1 for w in self.workers if w.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "code": self.code, "needed": self.needed, "errors": self.errors,
                "faulty": list(self.faulty), "condition": self.condition, "wall_s": self.wall,
                "decode_s": self.decode, "encode_s": self.encode,
                "workers": [w.__dict__ for w in self.workers]}


@dataclass(frozen=True)
class ResidentHandle:
    """An operand stored encoded on the workers by ``cluster.put``."""

    id: int
    code: LinearCode
    shape: tuple[int, ...]
    dtype: np.dtype
    norms: tuple[float, ...] = field(repr=False, default=())
    input_dtype: np.dtype = field(repr=False, default=np.dtype(np.float64))
    """The dtype ``A`` arrived in at :meth:`ClusterBase.put`."""
    precision: str = field(repr=False, default="auto")
    """The ``precision`` given to :meth:`ClusterBase.put`."""

    @property
    def compensated(self) -> bool:
        """Whether products against the stored blocks are compensated: what ``put``'s encode
        decided from the code, ``precision`` and the input dtype (see
        :meth:`~codedml.codes.LinearCode.encode`)."""
        return self.code._compensates(self.input_dtype, self.dtype, self.precision)


def retry_on_corrupt(run: Callable[[], Any], retries: int,
                     before_retry: Callable[[int], None] | None = None) -> Any:
    """``run()``, run again (after ``before_retry(attempt)``) while it raises
    :class:`CorruptResultError` -- results detectably inconsistent beyond the error budget,
    which a fresh job with fresh results may not be -- at most ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return run()
        except CorruptResultError:
            if attempt == retries:
                raise
            if before_retry is not None:
                before_retry(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _record_arrival(req: Any, a: Arrival, now: float) -> bool:
    """Book a death, an error or a latency on a Job or Call; ``True`` when ``a`` is a result."""
    w = a.worker
    if a.kind == "dead":
        req.failed[w] = "crashed"
        return False
    req.latency[w] = now - req.t0
    if a.kind == "error":
        req.failed[w] = "error"
        req.errors_seen[w] = a.payload
        return False
    return True


class Job:
    """A submitted product. ``result(timeout)`` waits for and returns C; ``done()`` polls."""

    def __init__(self, cluster: "ClusterBase", jid: int, code: LinearCode, encoding: Encoding,
                 errors: int, timeout: float | None, rows: Sequence[int], t0: float,
                 wait_all: bool = False) -> None:
        self.cluster, self.id, self.code, self.encoding = cluster, jid, code, encoding
        self.errors, self.timeout = errors, timeout
        self.wait_all = wait_all
        self.needed = min(code.workers, code.recovery_threshold + 2 * errors)
        if wait_all:  # every live worker is heard (a scrub checks them all), or the timeout
            self.needed = code.workers
        self.sent_to = list(rows)
        self.t0 = t0
        self.arrived: dict[int, np.ndarray] = {}
        self.latency: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.errors_seen: dict[int, WorkerFailure] = {}
        self.value: np.ndarray | None = None
        self.exception: BaseException | None = None
        self.info: Any = None
        self.t_decode = float("nan")
        self.t_done = float("nan")
        self.late: set[int] = set()
        self.encode_time = float("nan")
        self._retrying = False
        self._timed_out = False

    # ------------------------------------------------------------------ public
    def done(self) -> bool:
        """Whether the result (or its failure) is known; makes progress without blocking."""
        if self.value is None and self.exception is None:
            self.cluster._progress(0.0)
            self._try()
        return self.value is not None or self.exception is not None

    def result(self, timeout: float | None = None) -> np.ndarray:
        """Wait for the decoded product; raises what the decode raised, or on timeout a
        :class:`NotEnoughResultsError` naming the workers that did not answer."""
        limit = timeout if timeout is not None else self.timeout
        deadline = None if limit is None else self.t0 + limit
        while self.value is None and self.exception is None:
            self._try()
            if self.value is not None or self.exception is not None:
                break
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                self._fail_timeout(limit)
                break
            wait = 0.05 if deadline is None else min(0.05, deadline - now)
            self.cluster._progress(wait)
        if self.exception is not None:
            raise self.exception
        return self.value  # type: ignore[return-value]

    @property
    def report(self) -> JobReport:
        """Per-worker status and latency (updated as late results drain)."""
        faulty = set(self.info.faulty) if self.info is not None else set()
        used = set(self.info.used) if self.info is not None else set()
        rows = []
        for w in range(self.code.workers):
            if w in self.failed:
                st = self.failed[w]
            elif w in faulty:
                st = "corrupt"
            elif w in used:
                st = "used"
            elif w in self.late:
                st = "late"
            elif w in self.arrived:
                st = "spare"
            else:
                st = "missing"
            rows.append(WorkerStatus(w, self.cluster._rank_of(w), st, self.latency.get(w)))
        cond = self.info.condition if self.info is not None else float("nan")
        return JobReport(self.id, repr(self.code), self.needed, self.errors, rows,
                         tuple(sorted(faulty)), cond, self.t_done - self.t0, self.t_decode,
                         self.encode_time)

    # ------------------------------------------------------------------ internals
    def _accept(self, a: Arrival, now: float) -> None:
        if not _record_arrival(self, a, now):
            return
        w = a.worker
        if self.value is not None or self.exception is not None:
            self.late.add(w)
            return
        # The noise scale comes from the root's own encoding, never from the worker's message.
        self.arrived[w] = a.payload

    def _outstanding(self) -> list[int]:
        if self._timed_out:
            return []
        return [w for w in self.sent_to if w not in self.arrived and w not in self.failed]

    def _try(self) -> None:
        if self.value is not None or self.exception is not None:
            return
        have = len(self.arrived)
        pending = self._outstanding()
        early = (self.errors == 0 and not self._retrying and have >= 1 and not self.wait_all and
                 self.code._decodable(np.array(sorted(self.arrived))))  # e.g. replication covered
        if have < self.needed and pending and not early:
            return
        if have == 0 or not self.code._decodable(np.array(sorted(self.arrived))):
            if not pending:
                self._fail_all()
            return
        t = time.perf_counter()
        # After an inconsistency, correct as many errors as the results in allow.
        budget = max(self.errors, (have - self.code.recovery_threshold) // 2) if self._retrying else self.errors
        try:
            C, info = self.code.decode(self.arrived, errors=budget, encoding=self.encoding,
                                       return_info=True)
        except (CorruptResultError, NotEnoughResultsError) as exc:
            if pending:  # wait for one more result, then try again
                self.needed = have + 1
                self._retrying = True
                return
            # Without the traceback: its frames hold the stacked results of the decode.
            self.exception = exc.with_traceback(None)
            self._finish()
            return
        self.t_decode = time.perf_counter() - t
        self.value, self.info = C, info
        self._finish()

    def _finish(self) -> None:
        """Terminal state: keep the bookkeeping, free the operands and payloads (late results
        need no decoding), and tell stragglers they may skip the job."""
        self.t_done = time.perf_counter()
        self.encoding = None
        self.arrived = dict.fromkeys(self.arrived)
        for w in self.sent_to:
            if w not in self.arrived and w not in self.failed:  # also after a timeout
                self.cluster._cancel(w, self.id)

    def _fail_all(self) -> None:
        crashed = sorted(self.cluster._rank_of(w) for w, s in self.failed.items() if s == "crashed")
        if self.errors_seen:
            first = next(iter(self.errors_seen.values()))
            self.exception = first
        else:
            self.exception = NotEnoughResultsError(
                f"job {self.id}: only {len(self.arrived)} of {self.code.workers} workers answered "
                f"and {self.needed} results are needed; crashed ranks: {crashed}",
                received=len(self.arrived), needed=self.needed)
        self._finish()

    def _terminal(self) -> bool:
        return self.value is not None or self.exception is not None

    def _fail_timeout(self, limit: float | None) -> None:
        if self.wait_all and self.code._decodable(np.array(sorted(self.arrived))):
            # Decode what arrived; the silent ones stay "missing" (and count as late if they come).
            self._timed_out = True
            self.needed = len(self.arrived)
            self._try()
            if self._terminal():
                return
        silent = sorted(self.cluster._rank_of(w) for w in self._outstanding())
        crashed = sorted(self.cluster._rank_of(w) for w, s in self.failed.items() if s == "crashed")
        self.exception = NotEnoughResultsError(
            f"job {self.id}: timed out after {limit} s with {len(self.arrived)} results, "
            f"{self.code.recovery_threshold + 2 * self.errors} needed; no answer from ranks "
            f"{silent}, crashed ranks {crashed}", received=len(self.arrived),
            needed=self.code.recovery_threshold + 2 * self.errors)
        self._finish()


class Call:
    """A request to a registered worker handler (``cluster.call``): raw results, no decoding.

    ``results`` maps worker index to the array its handler returned, in arrival order;
    ``wait(count)`` blocks until ``count`` results are in; ``cancel()`` tells the workers that
    have not answered that they may skip the request. Faults are injected at the workers as for
    products: a straggler's result is late, a fail-silent or crashed worker's never comes.
    """

    def __init__(self, cluster: "ClusterBase", jid: int, name: str, rows: Sequence[int],
                 timeout: float | None, t0: float) -> None:
        self.cluster, self.id, self.name, self.timeout, self.t0 = cluster, jid, name, timeout, t0
        self.sent_to = list(rows)
        self.results: dict[int, np.ndarray] = {}
        self.latency: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.errors_seen: dict[int, WorkerFailure] = {}
        self.cancelled = False

    def _accept(self, a: Arrival, now: float) -> None:
        if _record_arrival(self, a, now):
            self.results[a.worker] = a.payload

    def _outstanding(self) -> list[int]:
        return [w for w in self.sent_to if w not in self.results and w not in self.failed]

    def _terminal(self) -> bool:
        return self.cancelled or not self._outstanding()

    def done(self, count: int | None = None) -> bool:
        """Whether ``count`` results (default: every worker asked) are in, or no more can come."""
        self.cluster._progress(0.0)
        need = len(self.sent_to) if count is None else count
        return len(self.results) >= need or not self._outstanding()

    def wait(self, count: int | None = None, timeout: float | None = None) -> dict[int, np.ndarray]:
        """Wait for ``count`` results (default: every worker asked) and return all that arrived.

        Raises the first worker's :class:`WorkerFailure` if a handler raised and ``count`` can
        no longer be reached, or :class:`NotEnoughResultsError` (naming the silent and crashed
        ranks) on timeout or when too many workers crashed.
        """
        need = len(self.sent_to) if count is None else check_int("count", count, 0, len(self.sent_to))
        limit = timeout if timeout is not None else self.timeout
        deadline = None if limit is None else time.perf_counter() + limit
        while len(self.results) < need:
            if not self._outstanding():
                if self.errors_seen:
                    raise next(iter(self.errors_seen.values()))
                self._raise(f"only {len(self.results)} of {len(self.sent_to)} workers answered "
                            f"and {need} results are needed", need)
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                self._raise(f"timed out after {limit} s with {len(self.results)} results, {need} "
                            f"needed", need)
            self.cluster._progress(0.05 if deadline is None else min(0.05, deadline - now))
        return dict(self.results)

    def cancel(self) -> None:
        """Tell the workers that have not answered that they may skip this request."""
        self.cancelled = True
        for w in self._outstanding():
            self.cluster._cancel(w, self.id)

    def _raise(self, what: str, need: int) -> None:
        silent = sorted(self.cluster._rank_of(w) for w in self._outstanding())
        crashed = sorted(self.cluster._rank_of(w) for w, s in self.failed.items() if s == "crashed")
        raise NotEnoughResultsError(f"call {self.name!r} (job {self.id}): {what}; no answer from "
                                    f"ranks {silent}, crashed ranks {crashed}",
                                    received=len(self.results), needed=need)


@dataclass
class ScrubReport:
    """What a scrub of a stored operand found: workers checked, located corrupt and repaired."""

    checked: tuple[int, ...]
    faulty: tuple[int, ...]
    repaired: tuple[int, ...]
    missing: tuple[int, ...]
    handle: "ResidentHandle"


class ClusterBase:
    """The master's API, common to MPI and in-process clusters."""

    workers: int
    #: Reports of ``matmul`` calls kept in ``history`` (the newest).
    MAX_HISTORY = 1000

    def __init__(self, workers: int, timeout: float | None) -> None:
        self.workers = workers
        self.default_timeout = timeout
        self._next_job = 0
        self._next_handle = 0
        self._next_update = 0
        self._jobs: dict[int, Job] = {}
        # Finished jobs are tracked weakly: late results update the report of a job someone
        # still holds, and a job nobody holds (with its product) is freed at once.
        self._finished: weakref.WeakValueDictionary[int, Job] = weakref.WeakValueDictionary()
        self._dead: set[int] = set()
        self._last_answer: dict[int, int] = {}
        self.history: deque[JobReport] = deque(maxlen=self.MAX_HISTORY)
        self._closed = False

    # ------------------------------------------------------------------ transport hooks
    def _send(self, worker: int, ctrl: dict[str, Any], arrays: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _poll(self, timeout: float) -> list[Arrival]:
        raise NotImplementedError

    def _cancel(self, worker: int, job: int) -> None:
        """Tell ``worker`` that ``job`` is decoded (it may skip it); optional for a transport."""

    def _rank_of(self, worker: int) -> int:
        return worker

    # ------------------------------------------------------------------ public API
    def submit(self, A: Any, B: Any, *, code: LinearCode | None = None, errors: int = 0,
               timeout: float | None = None, precision: str = "auto") -> Job:
        """Start ``A @ B`` under ``code`` (or with a resident handle ``A``); returns a :class:`Job`."""
        self._check_open()
        errors = check_int("errors", errors, 0, self.workers)
        t0 = time.perf_counter()
        if isinstance(A, ResidentHandle):
            h = A
            if code is not None and code != h.code:
                raise ConfigurationError("`code` must be left out (or equal the handle's code) for a resident operand")
            code = h.code
            enc, per_worker = self._encode_resident(h, B)
            ctrl = {"op": "matmul", "handle": h.id, "compensated": h.compensated}
        else:
            if code is None:
                raise ConfigurationError("`code` is required, e.g. code=MDSCode(workers, k)")
            self._check_code(code)
            enc = code.encode(A, B, precision=precision)
            per_worker = [[_np(t.a), _np(t.b)] for t in enc]
            ctrl = {"op": "matmul", "handle": None, "compensated": enc.compensated}
        return self._start(code, enc, ctrl, per_worker, errors, timeout, t0)

    def _start(self, code: LinearCode, enc: Encoding, ctrl: dict[str, Any],
               per_worker: list[list[np.ndarray]], errors: int, timeout: float | None, t0: float,
               wait_all: bool = False) -> Job:
        t_enc = time.perf_counter() - t0
        jid = self._next_job
        self._next_job += 1
        job = Job(self, jid, code, enc, errors, timeout if timeout is not None else self.default_timeout,
                  [w for w in range(self.workers) if w not in self._dead], t0, wait_all)
        job.encode_time = t_enc
        for w in range(self.workers):
            if w in self._dead:
                job.failed[w] = "crashed"
                continue
            self._send(w, dict(ctrl, job=jid, field=code.field), per_worker[w])
        self._jobs[jid] = job
        return job

    def matmul(self, A: Any, B: Any, *, code: LinearCode | None = None, errors: int = 0,
               timeout: float | None = None, precision: str = "auto") -> np.ndarray:
        """``A @ B`` decoded from the first results that suffice (see :meth:`submit`)."""
        return self._wait(self.submit(A, B, code=code, errors=errors, timeout=timeout,
                                      precision=precision))

    def submit_left(self, L: Any, handle: ResidentHandle, *, errors: int = 0,
                    timeout: float | None = None) -> Job:
        """Start ``L @ A`` for a resident ``A`` stored with an :class:`MDSCode`; see :meth:`matmul_left`."""
        self._check_open()
        errors = check_int("errors", errors, 0, self.workers)
        if not isinstance(handle, ResidentHandle):
            raise ConfigurationError(f"`handle` must be a ResidentHandle from cluster.put, got {type(handle).__name__}")
        if not isinstance(handle.code, (MDSCode, ReplicationCode)) or len(handle.shape) != 2:
            raise ConfigurationError(
                f"a product from the left needs a 2-D operand stored with an MDSCode or a "
                f"ReplicationCode, got "
                f"{handle.code!r} for shape {handle.shape}")
        L = np.asarray(L)
        if L.ndim != 2 or L.shape[1] != handle.shape[0]:
            raise ConfigurationError(
                f"`L` must be 2-D with {handle.shape[0]} columns to multiply the resident "
                f"{handle.shape} operand from the left, got shape {L.shape}")
        t0 = time.perf_counter()
        code, enc = encode_left(handle.code, L, handle.shape[1], dtype=handle.dtype, norms=handle.norms,
                                input_dtype=handle.input_dtype, precision=handle.precision)
        per_worker = [[_np(t.a)] for t in enc]
        return self._start(code, enc, {"op": "matmul_left", "handle": handle.id,
                                       "compensated": enc.compensated}, per_worker, errors, timeout, t0)

    def matmul_left(self, L: Any, handle: ResidentHandle, *, errors: int = 0,
                    timeout: float | None = None) -> np.ndarray:
        """``L @ A`` for a resident ``A`` (stored by :meth:`put`).

        With an :class:`MDSCode` the inner dimension is split MatDot-style against the *same*
        stored blocks that serve ``A @ x`` (see :mod:`codedml.codes.resident`): recovery
        threshold ``2k - 1``, twice the forward product's flops per worker, ``errors`` corrupt
        results corrected from ``2k - 1 + 2 errors`` results. With a :class:`ReplicationCode`
        each worker multiplies its plain block and the root sums one copy per block.
        """
        return self._wait(self.submit_left(L, handle, errors=errors, timeout=timeout))

    def fetch(self, handle: ResidentHandle, *, errors: int = 0, timeout: float | None = None,
              wait_all: bool = False, return_job: bool = False) -> Any:
        """Decode a resident operand from its stored blocks (locating up to ``errors`` corrupt
        blocks, which need ``k + 2 errors`` answers); ``return_job`` gives ``(A, job)``."""
        self._check_open()
        errors = check_int("errors", errors, 0, self.workers)
        t0 = time.perf_counter()
        # the stored block itself, as if multiplied by the identity: shape and noise scale
        enc = self._resident_encoding(handle, (handle.shape[1],), math.sqrt(handle.shape[1]))
        job = self._start(handle.code, enc, {"op": "fetch", "handle": handle.id},
                          [[] for _ in range(self.workers)], errors, timeout, t0, wait_all)
        A = self._wait(job)
        return (A, job) if return_job else A

    def scrub(self, handle: ResidentHandle, *, timeout: float | None = None,
              seed: int | None = None, retries: int = 2) -> ScrubReport:
        """Check every stored block of ``handle`` and repair the corrupt ones from the others.

        Detect: every live worker multiplies its block by one shared random vector ``r`` (a
        product of the size of ``x``, not of the block) and the root decodes ``A r`` with the
        largest error budget the answers allow, locating the inconsistent blocks. Repair (only
        when some are found): decode ``A`` from the good blocks (:meth:`fetch`), re-encode it
        and store the located workers' blocks anew. Workers that did not answer within
        ``timeout`` are reported as ``missing`` (unchecked). Returns a :class:`ScrubReport`
        whose ``handle`` (with fresh norm bounds) replaces the one passed in. A check whose
        answers are inconsistent beyond the error budget (transient result errors on top of
        storage errors) is repeated with a fresh probe, at most ``retries`` times.
        """
        rng = np.random.default_rng(seed)
        return retry_on_corrupt(lambda: self._scrub_once(handle, timeout, rng), retries)

    def _scrub_once(self, handle: ResidentHandle, timeout: float | None,
                    rng: np.random.Generator) -> ScrubReport:
        self._check_open()
        live = [w for w in range(self.workers) if w not in self._dead]
        k = handle.code.recovery_threshold
        budget = max(0, (len(live) - k) // 2)
        cols = handle.shape[1]  # resident operands are 2-D (put's encode accepts nothing else)
        if handle.code.field is not None:
            r = rng.integers(0, handle.code.field, size=cols, dtype=np.int64)
        else:
            r = rng.standard_normal(cols).astype(handle.dtype)
        t0 = time.perf_counter()
        enc, per_worker = self._encode_resident(handle, r)
        job = self._start(handle.code, enc, {"op": "matmul", "handle": handle.id,
                                             "compensated": handle.compensated},
                          per_worker, budget, timeout, t0, wait_all=True)
        self._wait(job)
        rep = job.report
        faulty = tuple(w.worker for w in rep.workers if w.status == "corrupt")
        missing = tuple(w.worker for w in rep.workers if w.status in ("missing", "crashed"))
        checked = tuple(w.worker for w in rep.workers if w.status in ("used", "corrupt"))
        if not faulty:
            return ScrubReport(checked, (), (), missing, handle)
        A, fjob = self.fetch(handle, errors=budget, timeout=timeout, wait_all=True, return_job=True)
        bad = sorted(set(faulty) | set(fjob.report.faulty))
        # the repaired blocks get the stored blocks' dtype, whatever dtype the decode returned
        block_precision = "float32" if np.dtype(handle.dtype) == np.float32 else "float64"
        enc = handle.code.encode(A, np.zeros(A.shape[1], dtype=A.dtype), precision=block_precision)
        # Every block's norm anew (not only the repaired ones): the decoder's noise model
        # compares workers, and exact norms beside loose update bounds made the repaired
        # blocks look too large for their scale -- falsely corrupt.
        norms = [float(np.linalg.norm(_np(t.a).ravel())) if handle.code.field is None else 0.0 for t in enc]
        for w in bad:
            block = _np(enc[w].a)
            if w not in self._dead:
                self._send(w, {"op": "put", "handle": handle.id, "field": handle.code.field}, [block])
        new = replace(handle, norms=tuple(norms))
        return ScrubReport(checked, faulty, tuple(bad), missing, new)

    def sgd_step(self, handle: ResidentHandle, U: Any, V: Any, *, lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 buffer: ResidentHandle | None = None) -> tuple[ResidentHandle, ResidentHandle | None]:
        """One SGD step on a resident weight ``W`` whose gradient is ``U V^T``, at the workers.

        The rule of :class:`torch.optim.SGD`: ``g = U V^T + wd W``; ``buf = g`` on the first step,
        then ``mu buf + (1 - dampening) g``; ``d = g + mu buf`` (Nesterov) or ``buf``;
        ``W <- W - lr d``. Every step is linear, so worker ``w`` applies it to its encoded block
        with ``enc(U)_w`` and ``V`` and the blocks stay the encoding of the updated weights,
        never re-encoded. The momentum buffer is itself stored encoded (``buffer``; pass
        ``None`` on the first step and the returned handle afterwards).
        Returns ``(weight handle, buffer handle)`` with updated norm bounds.
        """
        self._check_open()
        if handle.code.field is not None:
            raise ConfigurationError("`sgd_step` needs a real-valued resident operand, got one over "
                                     f"GF({handle.code.field})")
        lr = _nonneg("lr", lr)
        momentum = _nonneg("momentum", momentum)
        dampening = _nonneg("dampening", dampening)
        weight_decay = _nonneg("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigurationError(
                f"`nesterov` needs momentum > 0 and dampening = 0, got momentum={momentum}, "
                f"dampening={dampening}")
        encU, V = self._encode_update(handle, U, V)
        nv = float(np.linalg.norm(V))
        first = buffer is None
        if momentum and first:
            buffer = replace(handle, id=self._next_handle, norms=tuple(0.0 for _ in range(self.workers)))
            self._next_handle += 1
        seq = self._next_update
        self._next_update += 1
        ctrl = {"op": "sgd", "handle": handle.id, "field": None, "lr": lr, "momentum": momentum,
                "dampening": dampening, "weight_decay": weight_decay, "nesterov": bool(nesterov),
                "buffer": buffer.id if momentum else None, "first": first, "seq": seq}
        wn, bn = list(handle.norms), list(buffer.norms) if momentum else []
        for w in range(self.workers):
            u = encU[w]
            g = float(np.linalg.norm(u)) * nv + weight_decay * wn[w]
            if momentum:
                bn[w] = g if first else momentum * bn[w] + (1 - dampening) * g
                d = g + momentum * bn[w] if nesterov else bn[w]
            else:
                d = g
            wn[w] += lr * d
            if w not in self._dead:
                self._send(w, ctrl, [u, V])
        new = replace(handle, norms=tuple(wn))
        buf = replace(buffer, norms=tuple(bn)) if momentum else None
        return new, buf

    def call(self, name: str, *arrays: Any, params: dict[str, Any] | None = None,
             per_worker: Sequence[Sequence[Any]] | None = None, workers: Sequence[int] | None = None,
             timeout: float | None = None) -> Call:
        """Run the handler registered as ``name`` (``handlers=`` of the cluster) on workers.

        Each worker calls ``handler(ctx, *arrays, **params)`` with its :class:`WorkerContext`
        and replies with the array it returns; ``per_worker[w]`` replaces ``arrays`` for
        worker ``w``. Returns a :class:`Call` that collects the raw results (no decoding).
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"`name` must be a handler name, got {name!r}")
        rows = list(range(self.workers)) if workers is None else [
            check_int("workers[i]", w, 0, self.workers - 1) for w in workers]
        if per_worker is not None and len(per_worker) != self.workers:
            raise ConfigurationError(
                f"`per_worker` must have one entry per worker ({self.workers}), got {len(per_worker)}")
        jid = self._next_job
        self._next_job += 1
        call = Call(self, jid, name, [w for w in rows if w not in self._dead],
                    timeout if timeout is not None else self.default_timeout, time.perf_counter())
        ctrl = {"op": "call", "name": name, "params": dict(params or {}), "job": jid, "field": None}
        for w in rows:
            if w in self._dead:
                call.failed[w] = "crashed"
                continue
            arrs = per_worker[w] if per_worker is not None else arrays
            self._send(w, ctrl, [np.ascontiguousarray(np.asarray(a)) for a in arrs])
        self._jobs[jid] = call  # type: ignore[assignment]
        return call

    def progress(self, timeout: float = 0.0) -> None:
        """Receive what arrives within ``timeout`` seconds (one poll at least) and route it."""
        self._progress(timeout)

    def _wait(self, job: Job) -> np.ndarray:
        """``job.result()``, its report kept in ``history`` whether it succeeded or not."""
        try:
            return job.result()
        finally:
            self.history.append(job.report)

    def put(self, A: Any, *, code: LinearCode, precision: str = "auto") -> ResidentHandle:
        """Store ``A`` encoded on the workers once; ``matmul(handle, x)`` then sends only ``x``.

        Needs a code that leaves B unencoded: :class:`MDSCode` (or a PolyDot code with one
        inner and one column block) or :class:`ReplicationCode`. ``precision`` is that of
        :meth:`~codedml.codes.LinearCode.encode`; it holds for every later product against the
        stored blocks (from the left too, decided there for the left product's own code).
        """
        self._check_open()
        self._check_code(code)
        if not (isinstance(code, (MDSCode, ReplicationCode)) or
                (getattr(code, "m", None) == 1 and getattr(code, "q", None) == 1)):
            raise ConfigurationError(
                f"`code` must leave B unencoded for a resident operand (MDSCode or "
                f"ReplicationCode), got {code!r}")
        A = np.asarray(A)
        enc = code.encode(A, np.zeros(A.shape[1] if A.ndim == 2 else 1, dtype=A.dtype),
                          precision=precision)
        hid = self._next_handle
        self._next_handle += 1
        norms = tuple(float(np.linalg.norm(_np(t.a).ravel())) for t in enc)
        for w in range(self.workers):
            if w not in self._dead:
                self._send(w, {"op": "put", "handle": hid, "field": code.field}, [_np(enc[w].a)])
        return ResidentHandle(hid, code, tuple(A.shape), enc.dtype, norms, _input_dtype(A, A), precision)

    def update(self, handle: ResidentHandle, U: Any, V: Any) -> ResidentHandle:
        """In place ``A <- A + U V^T`` on the encoded blocks, without re-encoding.

        Encoding is linear in A and the split is by rows, so the encoded update of worker w is
        ``enc(U)_w V^T``: only ``enc(U)_w`` (rows/k x r) and ``V`` (cols x r) travel.
        Returns the handle with updated norm bounds (use the returned one).
        """
        self._check_open()
        encU, V = self._encode_update(handle, U, V)
        seq = self._next_update
        self._next_update += 1
        nv = float(np.linalg.norm(V))
        norms = []
        for w in range(self.workers):
            u = encU[w]
            norms.append(handle.norms[w] + float(np.linalg.norm(u)) * nv)
            if w not in self._dead:
                self._send(w, {"op": "update", "handle": handle.id, "field": handle.code.field,
                               "seq": seq}, [u, V])
        return replace(handle, norms=tuple(norms))

    def _encode_update(self, handle: ResidentHandle, U: Any, V: Any) -> tuple[list[np.ndarray], np.ndarray]:
        U = np.asarray(U)
        V = np.asarray(V)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1] or U.shape[0] != handle.shape[0] \
                or V.shape[0] != handle.shape[1]:
            raise ConfigurationError(
                f"`U` and `V` must be ({handle.shape[0]}, r) and ({handle.shape[1]}, r), "
                f"got {U.shape} and {V.shape}")
        if handle.code.field is None:
            for name, X in (("U", U), ("V", V)):
                if X.dtype.kind in "fc" and not np.isfinite(X).all():
                    raise ConfigurationError(
                        f"`{name}` (a factor of the update U V^T) contains NaN or Inf: the update "
                        f"(e.g. a gradient) is not finite, and applying it would corrupt every "
                        f"stored block")
        code = handle.code
        encU = code.encode(U, np.zeros(U.shape[1], dtype=U.dtype))
        out = [_np(t.a) for t in encU]
        if code.field is None:
            out = [np.ascontiguousarray(u.astype(handle.dtype, copy=False)) for u in out]
            V = np.ascontiguousarray(V.astype(handle.dtype))
        return out, V

    def drop(self, handle: ResidentHandle) -> None:
        """Free a resident operand on the workers."""
        for w in range(self.workers):
            if w not in self._dead:
                self._send(w, {"op": "drop", "handle": handle.id, "field": None}, [])

    def drain(self, timeout: float = 0.0) -> None:
        """Receive what arrives during ``timeout`` seconds (at least one poll): late results
        are recorded in their job's report, crashed workers are noticed."""
        end = time.perf_counter() + timeout
        self._progress(0.0)
        while time.perf_counter() < end:
            self._progress(min(0.05, end - time.perf_counter()))

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("the cluster is closed")

    def _check_code(self, code: LinearCode) -> None:
        if not isinstance(code, LinearCode):
            raise ConfigurationError(f"`code` must be a codedml code, got {type(code).__name__}")
        if code.workers != self.workers:
            raise ConfigurationError(
                f"`code` must have workers={self.workers} (the cluster's worker count), got "
                f"{code.workers}")

    def _encode_resident(self, h: ResidentHandle, B: Any) -> tuple[Encoding, list[list[np.ndarray]]]:
        B = np.asarray(B)
        if B.shape[0] != h.shape[1]:
            raise ConfigurationError(
                f"`B` must have {h.shape[1]} rows to multiply the resident {h.shape} operand, got {B.shape}")
        if h.code.field is not None:
            from ..codes._validate import residues

            B = residues("B", B, h.code.field, allow_vector=True)
        else:
            from ..codes._validate import real_matrix

            B = real_matrix("B", B, allow_vector=True).astype(h.dtype, copy=False)
        enc = self._resident_encoding(h, B.shape[1:], float(np.linalg.norm(B.ravel())))
        return enc, [[B] for _ in range(self.workers)]

    def _resident_encoding(self, h: ResidentHandle, cols: tuple[int, ...], bnorm: float) -> Encoding:
        """The record a decode of ``stored block @ B`` needs: shape, noise scales, dtype."""
        tasks = [Task(w, None, None) for w in range(self.workers)]
        return Encoding(h.code, tasks, (h.shape[0],) + tuple(cols), h.shape[1], h.dtype,
                        h.compensated, scales=np.array([n * bnorm for n in h.norms]))

    def _progress(self, timeout: float) -> None:
        now = time.perf_counter()
        for a in self._poll(timeout):
            if a.kind == "dead":
                self._dead.add(a.worker)
                # The jobs it died in: from the job of the notice when the transport knows it
                # (LocalCluster), else those after the last job it answered (MPI).
                since = a.job if a.job >= 0 else self._last_answer.get(a.worker, -1) + 1
                for jid, job in list(self._jobs.items()) + list(self._finished.items()):
                    if jid >= since and a.worker in job._outstanding():
                        job._accept(a, now)
                continue
            if a.kind in ("result", "error"):
                self._last_answer[a.worker] = max(a.job, self._last_answer.get(a.worker, -1))
            job = self._jobs.get(a.job) or self._finished.get(a.job)
            if job is not None:
                job._accept(a, time.perf_counter())
        # Finished jobs move to the weak table (bounded by what the caller keeps).
        for jid in [j for j, job in self._jobs.items() if job._terminal()]:
            job = self._jobs.pop(jid)
            if job._outstanding():
                self._finished[jid] = job


def _nonneg(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"`{name}` must be a number >= 0, got {value!r}") from exc
    if not (math.isfinite(v) and v >= 0):
        raise ConfigurationError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return v


def _np(x: Any) -> np.ndarray:
    """Plain ndarray view (galois FieldArrays become their int64 residues)."""
    if x is None:
        return x
    return np.ascontiguousarray(np.asarray(x.view(np.ndarray)) if hasattr(x, "view") and type(x) is not np.ndarray else x)
