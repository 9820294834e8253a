"""The root's requests as :class:`concurrent.futures.Future` objects.

Three kinds, one life cycle:

- :class:`Job`: a coded product (or a fetch of a stored operand); its result is the decoded
  array.
- :class:`Call`: a registered handler on some workers; its result is the dict of raw results.
- :class:`Ack`: the acknowledgements of ``put`` / ``update`` / ``sgd_step`` / ``drop``; its
  result is an :class:`AckReport`, or an :class:`~codedml.errors.UpdateFailedError` when a
  worker could not apply the operation.

A request is *pending* until it *settles*, exactly once, with a result or an exception, and
settling happens in a ``finally``: whatever goes wrong (a decode error of any type, the
deadline, a cancel, the cluster closing), the request becomes terminal, tells the workers that
have not answered that they may skip it, and frees its encoded operands and payloads. What
remains of a settled request is its result and its report. Every request has a finite
deadline counted from its submission; the cluster's progress thread settles a request whose
deadline has passed even when nobody waits for it, so ``concurrent.futures.wait``,
``as_completed`` and ``add_done_callback`` work on these objects. Callbacks run in the thread
that settles the request (usually the progress thread) and must not block on other requests.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codes import Encoding, LinearCode
from ..codes._validate import check_int
from ..errors import (ConfigurationError, CorruptResultError, DeadlineError,
                      NotEnoughResultsError, WorkerFailure)

if TYPE_CHECKING:  # pragma: no cover
    from ._cluster import ClusterBase

_NAN = float("nan")
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))

# A request's Future condition is made on first use (see _Request._condition): most requests
# settle with nobody waiting on their condition (the caller pumps and reads the state), and a
# Condition made and notified for each cost about 1.2 us of a job's few dozen. This lock
# orders the condition's making against a settle that finds none (nobody can be waiting).
_COND_LOCK = threading.Lock()


def _new_cond_lock() -> None:   # a child process after fork: the lock as nobody holds it
    global _COND_LOCK
    _COND_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_cond_lock)

# The attributes Future.__init__ sets (those of CPython 3.11, checked here at import); where
# they differ, every request makes its condition at once, as Future does
_LAZY_CONDITION = set(Future().__dict__) == {"_condition", "_state", "_result", "_exception",
                                             "_waiters", "_done_callbacks"}

__all__ = ["Arrival", "WorkerStatus", "JobReport", "AckReport", "Job", "Call", "Ack",
           "check_deadline", "check_wait"]


def check_deadline(name: str, value: Any) -> float:
    """A deadline in seconds: a finite number > 0 (NaN, inf, zero, negatives and non-numbers
    such as the string ``"1"`` refused)."""
    if isinstance(value, (str, bytes)):
        raise ConfigurationError(f"`{name}` must be a finite number of seconds > 0, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"`{name}` must be a finite number of seconds > 0, got {value!r}") from exc
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0):
        raise ConfigurationError(f"`{name}` must be a finite number of seconds > 0, got {value!r}")
    return v


def check_wait(name: str, value: Any) -> float | None:
    """How long to wait: ``None`` (until the request's own deadline) or a finite number >= 0."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"`{name}` must be None or a finite number of seconds >= 0, "
                                 f"got {value!r}") from exc
    if isinstance(value, bool) or not (math.isfinite(v) and v >= 0):
        raise ConfigurationError(f"`{name}` must be None or a finite number of seconds >= 0, "
                                 f"got {value!r}")
    return v


@dataclass(slots=True)
class Arrival:
    """One message from a worker, as the transport hands it to the root: a result, an
    acknowledgement, an error (``payload`` a :class:`~codedml.errors.WorkerFailure`) or a
    death notice. ``ack`` tells the acknowledgement table from the product table."""

    worker: int
    job: int
    kind: str  # "result" | "ack" | "error" | "dead"
    payload: Any = None
    elapsed: float = 0.0
    ack: bool = False


@dataclass
class WorkerStatus:
    """One worker's part in one request.

    ``status`` is ``"used"`` (its result went into the decode), ``"late"`` (arrived after the
    decode: a straggler that was not waited for), ``"missing"`` (never arrived), ``"crashed"``
    (its process died), ``"corrupt"`` (located as faulty and excluded), ``"spare"`` (arrived
    in time but was not needed), ``"error"`` (raised an exception) or ``"stale"`` (its stored
    block missed an update that failed there, so it was not asked).
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
    outcome: str = "pending"
    """``"ok"``, ``"failed"`` (a named error), ``"cancelled"`` or ``"pending"``."""
    systematic_wait: float = 0.0
    """Seconds the job waited for outstanding systematic results before decoding
    (``cluster.systematic_grace``; 0 when it is off, the default)."""

    def count(self, status: str) -> int:
        return sum(1 for w in self.workers if w.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "code": self.code, "needed": self.needed, "errors": self.errors,
                "faulty": list(self.faulty), "condition": self.condition, "wall_s": self.wall,
                "decode_s": self.decode, "encode_s": self.encode, "outcome": self.outcome,
                "systematic_wait_s": self.systematic_wait,
                "workers": [w.__dict__ for w in self.workers]}


@dataclass(frozen=True)
class AckReport:
    """Who acknowledged an operation on stored blocks: ``acked`` applied it; ``silent`` did not
    answer before the deadline; ``crashed`` died; ``stale`` were not asked (their block is
    already stale)."""

    op: str
    acked: tuple[int, ...]
    silent: tuple[int, ...]
    crashed: tuple[int, ...]
    stale: tuple[int, ...] = ()


class _Request(Future):
    """Bookkeeping common to the three kinds; every method runs under the cluster's lock."""

    what = "request"
    # Immutable starting values as class attributes (a request per job or call sets them
    # on the instance only when they change): Future's fields, then the request's own.
    _state = PENDING
    _result: Any = None
    _exception: BaseException | None = None
    t_done = _NAN
    settled = False  # terminal inside the cluster (the Future may settle a moment later)
    wake_at: float | None = None  # when the cluster must call _progress again
    # where the transport's poll lands this request's results, (id, landing, got), or None
    # (ClusterBase._landing; a small job's on MPI)
    _land: tuple | None = None

    def __init__(self, cluster: "ClusterBase", rid: int, sent_to: Sequence[int], timeout: float,
                 t0: float) -> None:
        # Future.__init__ without its condition, made on first use (see _condition)
        self._waiters, self._done_callbacks = [], []
        if not _LAZY_CONDITION:  # pragma: no cover - another Future layout: all of its
            # fields as Future.__init__ makes them, the condition at once
            fields = dict(Future().__dict__)
            self.__dict__["_cond"] = fields.pop("_condition")
            self.__dict__.update(fields)
        self.cluster, self.id, self.t0 = cluster, rid, t0
        self.timeout = timeout
        self.deadline = t0 + timeout
        self.sent_to = list(sent_to)
        self.latency: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.errors_seen: dict[int, WorkerFailure] = {}
        self.late: set[int] = set()

    # -------------------------------------------------------------- overridden by the kinds
    def _answered(self) -> set[int]:
        raise NotImplementedError

    def _on_result(self, w: int, payload: Any) -> None:
        raise NotImplementedError

    def _expire(self) -> None:
        """The deadline passed: settle with what can be said."""
        raise NotImplementedError

    def _free(self) -> None:
        """Drop operands and payloads once settled."""

    # -------------------------------------------------------------- common
    def _outstanding(self) -> list[int]:
        answered = self._answered()
        return [w for w in self.sent_to if w not in answered and w not in self.failed]

    def _accept(self, a: Arrival, now: float) -> None:
        """Book a death, an error, an acknowledgement or a result."""
        w = a.worker
        kind = a.kind
        if kind == "result":  # the common case first
            self._accept_result(w, a.payload, now)
            return
        if kind == "dead":
            if w in self._outstanding():
                self.failed[w] = "crashed"
            self._progress()
            return
        self.latency.setdefault(w, now - self.t0)
        if a.kind == "error":
            self.failed[w] = "error"
            self.errors_seen[w] = a.payload
        elif self.settled:
            self.late.add(w)
            return
        else:
            self._on_result(w, a.payload)
        self._progress()

    def _accept_result(self, w: int, payload: Any, now: float) -> None:
        """Book worker ``w``'s result (late once settled), then look whether it decides."""
        if self._late(w, now):
            return
        self._on_result(w, payload)
        self._progress()

    def _late(self, w: int, now: float) -> bool:
        """Note worker ``w``'s latency (its first answer's); True, with ``w`` noted late,
        where the request has settled."""
        if w not in self.latency:
            self.latency[w] = now - self.t0
        if self.settled:
            self.late.add(w)
            return True
        return False

    def _progress(self) -> None:
        """Settle if what arrived decides the request (under the lock)."""

    def _want(self) -> int:
        """How many replies a wait for this request may gather before it looks (a transport
        that can wait for several hands them over in one round)."""
        return 1

    def _settle(self, value: Any = None, exc: BaseException | None = None,
                owed: list[int] | None = None) -> None:
        """The one way to a terminal state: free, cancel the rest, then set the Future.
        ``owed``: the outstanding workers where the caller has just listed them (nothing
        arrived or failed since), else listed here."""
        if self.settled:
            return
        self.settled = True
        self.t_done = time.perf_counter()
        try:
            self._free()
            if owed is None:
                owed = self._outstanding()
            if owed:
                self.cluster._cancel_all(owed, self)
        finally:
            self.cluster._retire(self, owed)
            if self._state in _CANCELLED:   # cancelled(), without the Future's condition
                return
            if exc is not None:
                self.set_exception(exc.with_traceback(None))
            else:
                self.set_result(value)

    def _ranks(self, workers: Any) -> list[int]:
        return sorted(self.cluster.rank_of(w) for w in workers)

    def _deadline_error(self, what: str, received: int, needed: int) -> DeadlineError:
        crashed = [w for w, s in self.failed.items() if s == "crashed"]
        silent = set(self._outstanding()) | {w for w, s in self.failed.items() if s == "missing"}
        # the workers that raised instead of answering (each WorkerFailure names its rank)
        raised = "".join(f"; {(str(e) or type(e).__name__).splitlines()[0]}"
                         for _, e in sorted(self.errors_seen.items()))
        return DeadlineError(
            f"{what}: deadline of {self.timeout:g} s (from submission) passed with {received} "
            f"answers, {needed} needed; no answer from ranks {self._ranks(silent)}, "
            f"crashed ranks {self._ranks(crashed)}{raised}", received=received, needed=needed)

    # -------------------------------------------------------------- Future API
    @property
    def _condition(self) -> threading.Condition:   # type: ignore[override]
        """The Future's condition, made on first use: by a thread that waits through the
        Future's own methods (``concurrent.futures.wait``, ``as_completed``,
        ``add_done_callback``, a ``result`` that blocks in it), never by a settle that finds
        none (see :meth:`set_result`)."""
        c = self.__dict__.get("_cond")
        if c is None:
            # made outside the lock (an allocation may run the garbage collector, and with
            # it finalizers that could come back here), published under it
            made = threading.Condition()
            with _COND_LOCK:
                c = self.__dict__.setdefault("_cond", made)
        return c

    def set_result(self, result: Any) -> None:
        if not self._set_without_condition("_result", result):
            Future.set_result(self, result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._set_without_condition("_exception", exception):
            Future.set_exception(self, exception)

    def _set_without_condition(self, field: str, value: Any) -> bool:
        """Future's settle where no condition was made (True): nobody waits on one, no waiter
        or callback was added (each is added under it), and one made after this sees the
        state settled. False where one exists (Future's own settle then runs). A second
        settle raises InvalidStateError, as Future's does."""
        if self.__dict__.get("_cond") is not None:
            return False
        with _COND_LOCK:
            if self.__dict__.get("_cond") is not None:
                return False
            state = self._state
            if state not in _DONE:
                setattr(self, field, value)
                self._state = FINISHED
                return True
        # (named outside the lock: the repr reads the condition, which takes the lock)
        raise InvalidStateError(f"{state}: {self!r}")

    def cancel(self) -> bool:
        """Cancel a pending request: it settles as cancelled, its workers may skip it, and its
        operands are freed. ``False`` when it has already settled."""
        with self.cluster._lock:
            if self.settled:
                return False
            if not Future.cancel(self):  # pragma: no cover - pending Futures always cancel
                return False
            self._settle()
            return True

    def done(self) -> bool:
        # The Future's state without its condition: it only moves forward, one attribute
        # written under the GIL (set_result writes the result before the state).
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> Any:
        """The result, waiting at most ``timeout`` seconds (``None``: until the request settles,
        which its deadline bounds); raises what the request settled with, or
        :class:`TimeoutError` if ``timeout`` passes first (the request goes on)."""
        if timeout is not None:
            timeout = check_wait("timeout", timeout)
        left = self._await(timeout)
        if self._state == FINISHED and self._exception is None:
            return self._result   # settled with a value (what Future.result returns)
        return super().result(left)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        timeout = check_wait("timeout", timeout)
        return super().exception(self._await(timeout))

    def _await(self, timeout: float | None) -> float:
        """Wait (pumping arrivals where the transport wants callers to) until the request is
        done or ``timeout`` passes; returns what is left of the bounded wait."""
        cl = self.cluster
        cl._ensure_progress()
        bound = self._bounded(timeout)
        if not cl._caller_progress or self._state in _DONE:
            return bound
        end = time.perf_counter() + bound
        with cl._lock:   # (cl._changed's lock, entered without the Condition's Python call)
            cl._drivers += 1
            try:
                if self._land is not None:   # a small job whose results land (MPI)
                    cl._wait_landed(self, end)
                while self._state not in _DONE:
                    left = end - time.perf_counter()
                    if left <= 0:
                        break
                    cl._wait_step(min(left, 0.05), self._want(), self)
            finally:
                cl._drivers -= 1
        return max(0.0, end - time.perf_counter())

    def _bounded(self, timeout: float | None) -> float:
        # The progress thread settles every request by its deadline; the slack only covers a
        # decode in progress at that moment. Past it, TimeoutError rather than a hang.
        bound = max(0.0, self.deadline - time.perf_counter()) + self.cluster.SETTLE_SLACK
        return bound if timeout is None else min(timeout, bound)


def _systematic_set(code: LinearCode) -> frozenset[int]:
    """``frozenset(code.systematic_workers)``, kept on the code (a job per step asks)."""
    got = code.__dict__.get("_systematic_set")
    if got is None:
        got = frozenset(getattr(code, "systematic_workers", ()))
        code.__dict__["_systematic_set"] = got
    return got


class Job(_Request):
    """A submitted product (or fetch). ``result(timeout)`` gives the decoded array; ``report``
    tells what each worker did. A :class:`concurrent.futures.Future`."""

    what = "job"
    # starting values (as _Request's): set on the instance when they change
    info: Any = None
    t_decode = _NAN
    encode_time = _NAN
    _retrying = False
    _last_decode: str | None = None  # why the last decode attempt failed, for the deadline error
    _timed_out = False
    # Waiting for systematic results (see _hold_for_systematic): the end of the grace once
    # one is granted, and how long the job waited.
    _grace_end: float | None = None
    t_grace = 0.0
    _land_taken = 0   # how many of _land's results _take_landed booked
    _routed = False   # whether a result came other than through _land (see _try's decode)

    def __init__(self, cluster: "ClusterBase", jid: int, code: LinearCode, encoding: Encoding,
                 errors: int, timeout: float, rows: Sequence[int], t0: float,
                 wait_all: bool = False, handle: int | None = None) -> None:
        _Request.__init__(self, cluster, jid, rows, timeout, t0)
        self.code, self.encoding, self.errors = code, encoding, errors
        self.handle = handle
        self.wait_all = wait_all
        # every live worker is heard when wait_all (a scrub checks them all), or the deadline
        self.needed = code.workers if wait_all else \
            min(code.workers, code.recovery_threshold + 2 * errors)
        self.arrived: dict[int, Any] = {}
        # the workers whose results make the decode an assembly (_hold_for_systematic)
        self._sys = _systematic_set(code)
        self._fewest = code._fewest_decodable()

    def _answered(self) -> set[int]:
        return set(self.arrived)

    def _want(self) -> int:
        # The replies the job cannot decide without, gathered in one poll where the transport
        # can: no set of fewer than the code's fewest decodable results decodes early, and
        # otherwise the job waits for ``needed``. One at a time once settled, and wherever
        # the job may wait for systematic results: that wait is sized by the gaps between
        # arrivals, which replies gathered in one poll would all share (a gap of 0: no wait).
        if self.settled or self._grace_end is not None:
            return 1
        if self.cluster._systematic_grace > 0 and self._may_hold():
            return 1
        early = self.errors == 0 and not self._retrying and not self.wait_all
        target = self._fewest if early else self.needed
        # the workers still owing a result: every one asked but those in, where none failed
        # (a failed worker may be one never asked: then the list decides)
        owing = len(self.sent_to) - len(self.arrived) if not self.failed and not self._timed_out \
            else len(self._outstanding())
        return max(1, min(owing, target - len(self.arrived)))

    def _on_result(self, w: int, payload: Any) -> None:
        # The noise scale comes from the root's own encoding, never from the worker's message.
        self.arrived[w] = payload
        self._routed = True

    def _accept_result(self, w: int, payload: Any, now: float) -> None:
        # _Request._accept_result with _on_result inlined, and with _try's first test
        # (_too_few) made here: most of a job's arrivals decide nothing, and skip the
        # _progress/_try calls
        if self._late(w, now):
            return
        self.arrived[w] = payload
        self._routed = True
        if not self._too_few(len(self.arrived)):
            self._progress()

    def _take_landed(self, now: float) -> int:
        """Book the results a poll landed in :attr:`_land` since the last call, each as a
        routed one (its worker's answer noted; late once the job settled), those of the
        code's data workers first (a policy: all were in when the root looked) and
        otherwise in arrival order; returns how many. ``got[0]`` keeps counting (a worker
        landed once per job: a slot the job has taken is never written again). 0 where the
        job has settled and dropped its landing since (a poll that failed after landing
        left it noted)."""
        if self._land is None:
            return 0
        jid, land, got = self._land
        taken = self._land_taken
        m = int(got[0])
        self._land_taken = m
        # (_accept_result and the cluster's _note_answer, in one loop: a small job's results
        # are most of what a caller's poll hands over)
        last, arrived, latency = self.cluster._last_answer, self.arrived, self.latency
        t = now - self.t0
        new = self._booking_order(got[1 + taken:1 + m].tolist())
        fewest, asked = self._fewest, len(self.sent_to)
        for w in new:
            if jid > last.get(w, -1):
                last[w] = jid
            if w not in latency:
                latency[w] = t
            if self.settled:
                self.late.add(w)
                continue
            arrived[w] = land[w]
            have = len(arrived)
            if have >= fewest or have + len(self.failed) >= asked or self._timed_out:
                self._progress()   # (not _too_few(have), inlined)
        return m - taken

    def _booking_order(self, ws: list[int]) -> list[int]:
        """``ws``, workers whose results one poll landed, in the order they are booked: the
        code's data workers' first. All of a poll's results are in when the root looks
        (they get one time stamp), so which of them decide is the root's choice, and a
        decode from the data workers' results is an assembly where one with a parity result
        solves (those of one MPI_Testsome come in worker order already; this reorders
        results of the poll's earlier tests behind later ones)."""
        if len(ws) > 1 and self._sys:
            ws.sort(key=self._sys.__contains__, reverse=True)   # (stable: False after True)
        return ws

    def _decide_landed(self, now: float) -> bool:
        """The whole of a landing in one step, where nothing but its count decides: a job
        with nothing booked yet, no error budget, no retry, no failed worker, no systematic
        wait (grace 0), of a code decided by the count of its results, whose poll landed at
        least ``k`` results. Books them as :meth:`_take_landed` does (the data workers'
        first, each worker's answer noted; those past the first ``k`` late), decodes the
        first ``k`` by the code's ``_decode_landed`` and settles, as :meth:`_try` would on
        the ``k``-th (the same rows, the same decode, the same bits, the cancels held past
        the settle's done-callbacks as the pump holds them): what the booking's layers (a
        ``_progress`` and ``_try`` per result) find in this case, without them. Two
        differences, neither in what the job settles with or reports: the workers past the
        k-th are noted late before its done-callbacks run (the general booking notes them
        after), and a job that heard every worker is not kept for late results (nothing more
        can come). Returns False, having changed nothing, wherever another case holds or
        that decode declines (the general booking then runs)."""
        land, code = self._land, self.code
        if (land is None or self.settled or self._land_taken or self.arrived or self.failed
                or self.errors or self._retrying or self.wait_all or self._timed_out
                or self._grace_end is not None or self.cluster._systematic_grace > 0
                or type(code).decodable is not LinearCode.decodable
                or not code._decided_by_count()):
            return False
        jid, buf, got = land
        m = int(got[0])
        k = code.recovery_threshold
        if m < k or k < 1:
            return False
        new = self._booking_order(got[1:1 + m].tolist())
        use = new[:k]
        t = time.perf_counter()
        try:
            got_C = code._decode_landed(buf, sorted(use), self.encoding)
        except Exception:   # (the general path's decode names it, or settles with it)
            return False
        if got_C is None:
            return False
        C, info = got_C
        self.t_decode = time.perf_counter() - t
        self._land_taken = m
        last, arrived, latency, late = self.cluster._last_answer, self.arrived, self.latency, \
            self.late
        since = now - self.t0
        for i, w in enumerate(new):
            if jid > last.get(w, -1):
                last[w] = jid
            if w not in latency:
                latency[w] = since
            if i < k:
                arrived[w] = buf[w]
            else:
                late.add(w)
        self.info = info
        # owed: those not heard in this poll (one heard after the k-th is late, not owed);
        # their cancels held to the end, as _book holds them, since a done-callback run by
        # the settle may pump and book more of this job's results as late
        cl = self.cluster
        cl._hold_depth += 1
        try:
            self._settle(C, owed=[w for w in self.sent_to if w not in arrived and w not in late])
        finally:
            cl._hold_depth -= 1
            cl._release_held()
        return True

    def _too_few(self, have: int) -> bool:
        """Whether ``have`` results decide nothing yet: fewer than any decodable set, while
        some worker asked still owes its result (``_try``'s first test)."""
        return (have < self._fewest and have + len(self.failed) < len(self.sent_to)
                and not self._timed_out)

    def _free(self) -> None:
        self.encoding = None
        self.arrived = dict.fromkeys(self.arrived)
        self._land = None   # (the landed results' buffers: a settled job lands no more)

    def _outstanding(self) -> list[int]:
        if self._timed_out:
            return []
        arrived, failed = self.arrived, self.failed  # _Request._outstanding, without a set
        return [w for w in self.sent_to if w not in arrived and w not in failed]

    def _progress(self) -> None:
        if self.settled:
            return
        try:
            self._try()
        except BaseException as exc:  # any error settles the job: nothing half-alive
            self._settle(exc=exc)

    def _try(self) -> None:
        have = len(self.arrived)
        if self._too_few(have):
            # (the results come from workers asked, so one asked is still owed: the test
            # below without building the list of them)
            return
        pending = self._outstanding()
        if have < self._fewest and pending:
            # fewer results than any decodable set has, and some still owed: nothing to decide
            # (what follows would find the same, at the cost of a decodability test)
            return
        # the arrived keys are worker indices the transport checked: the code's own test on
        # them, without decodable()'s validation of arbitrary input (on every arrival); a code
        # class that overrides decodable() itself is asked through it
        code = self.code
        if type(code).decodable is LinearCode.decodable:
            if code._decided_by_count():   # (enough results, whichever: no array to build)
                decodable = have > 0 and have >= code.recovery_threshold
            else:
                decodable = have > 0 and code._recovers(np.array(sorted(self.arrived), dtype=int))
        else:
            decodable = have > 0 and bool(code.decodable(self.arrived))
        early = (self.errors == 0 and not self._retrying and decodable and not self.wait_all)
        if have < self.needed and pending and not early:
            return
        if not decodable:
            if not pending:
                self._fail_all()
            return
        if pending and (self._grace_end is not None or self.cluster._systematic_grace > 0) \
                and self._hold_for_systematic(pending):
            return
        t = time.perf_counter()
        if self._grace_end is not None:
            self.t_grace = max(0.0, min(t, self._grace_end) - self._grace_start)
        # Use the full correction power of the results at hand (issue 10: 7 results with 2
        # corrupt and errors=1 must decode when they all arrived before the first attempt).
        budget = max(self.errors, (have - self.code.recovery_threshold) // 2)
        landed = None
        if self._land is not None and not budget and not self._routed \
                and have == code.recovery_threshold:
            # every result in the landing, whose slots the engine matched them to: the
            # code's decode of them without its checks of arbitrary results (same bits)
            landed = code._decode_landed(self._land[1], sorted(self.arrived), self.encoding)
        try:
            C, info = landed if landed is not None else \
                code.decode(self.arrived, errors=budget, encoding=self.encoding,
                            return_info=True)
        except (CorruptResultError, NotEnoughResultsError) as exc:
            if pending:  # wait for one more result, then try again with a larger budget
                self._last_decode = f"{type(exc).__name__}: {exc}"
                self.needed = have + 1
                self._retrying = True
                return
            raise exc.with_traceback(None) from None
        self.t_decode = time.perf_counter() - t
        self.info = info
        if self._sys and self.cluster._systematic_grace > 0 and not self._sys.issubset(info.used):
            # (the cap on the systematic wait, which only a grace above 0 grants)
            self.cluster._note_solve(self.code, self.t_decode)
        self._settle(C, owed=pending)

    def _may_hold(self) -> bool:
        """Whether this job may wait for systematic results at all (a systematic code, not a
        job that hears every worker, not retrying); the cluster's grace decides the rest."""
        return bool(self._sys) and not self.wait_all and not self._retrying

    def _hold_for_systematic(self, pending: list[int]) -> bool:
        """Whether to wait a little longer for outstanding systematic results before decoding.

        A systematic code decodes by assembly once its data workers have all answered, and
        by a solve for the missing data blocks otherwise. When a decodable set has arrived
        without some of them, the job waits for those still pending up to
        ``cluster.systematic_grace`` times the mean gap between the arrivals so far, per
        missing result, and never longer than a solve of this code has taken on this cluster
        (when one was measured) nor than half the time left to the deadline (a job still
        waiting at its deadline decodes what it has, see :meth:`_expire`). On equal workers the missing results
        come within about a gap each; a straggler costs at most the grace (one gap per
        missing result), after which the job decodes as it would have. Granted once per job;
        ``systematic_grace = 0`` (the default) turns it off."""
        if not self._may_hold():
            return False
        factor = self.cluster.systematic_grace
        if self._grace_end is None and not factor > 0:
            return False
        waiting = [w for w in pending if w in self._sys]
        if not waiting:
            return False
        now = time.perf_counter()
        if self._grace_end is None:
            self._grace_start = now
            self._grace_end = now  # granted once: a refusal below stands
            lat = sorted(self.latency[w] for w in self.arrived if w in self.latency)
            if len(lat) < 2:
                return False
            grace = factor * (lat[-1] - lat[0]) / (len(lat) - 1) * len(waiting)
            cap = self.cluster._solve_cost(self.code)
            if cap is not None:
                grace = min(grace, cap)
            # never near the deadline: half of what is left at most, and _expire decodes a
            # job still waiting (a wake-up and the deadline may fall in one pump)
            grace = min(grace, 0.5 * (self.deadline - now))
            if not grace > 0:
                return False
            self._grace_end = now + grace
            self.cluster._wake_at(self, self._grace_end)
            return True
        return now < self._grace_end

    def _fail_all(self) -> None:
        crashed = [w for w, s in self.failed.items() if s == "crashed"]
        if self.errors_seen:
            raise next(iter(self.errors_seen.values()))
        raise NotEnoughResultsError(
            f"job {self.id}: only {len(self.arrived)} of {self.code.workers} workers answered "
            f"and {self.needed} results are needed; crashed ranks {self._ranks(crashed)}, "
            f"stale ranks {self._ranks(w for w, s in self.failed.items() if s == 'stale')}",
            received=len(self.arrived), needed=self.needed)

    def _expire(self) -> None:
        if self.settled:
            return
        try:
            if (not self.wait_all and self._grace_end is not None and self.arrived
                    and self.code.decodable(self.arrived)):
                # waiting for systematic results when the deadline came: decode what is there
                self._grace_end = min(self._grace_end, time.perf_counter())
                self._try()
                if self.settled:
                    return
            if self.wait_all and self.arrived and self.code.decodable(self.arrived):
                # Decode what arrived; the silent ones stay "missing" (late if they come).
                self._timed_out = True
                self.needed = len(self.arrived)
                self._try()
                if self.settled:
                    return
            err = self._deadline_error(f"job {self.id}", len(self.arrived),
                                       self.code.recovery_threshold + 2 * self.errors)
            if self._last_decode is not None:
                # the answers were enough in number but held more corrupt results than they
                # correct: say so, or "6 answers, 4 needed" reads as a contradiction
                err = DeadlineError(f"{err}; the answers at hand did not decode, waiting for "
                                    f"one more: {self._last_decode}", received=err.received,
                                    needed=len(self.arrived) + 1)
            raise err
        except BaseException as exc:
            self._settle(exc=exc)

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
            rows.append(WorkerStatus(w, self.cluster.rank_of(w), st, self.latency.get(w)))
        cond = self.info.condition if self.info is not None else float("nan")
        state = self._state   # (read as done() does, without the Future's condition)
        outcome = ("pending" if state not in _DONE else "cancelled" if state in _CANCELLED
                   else "failed" if self._exception is not None else "ok")
        return JobReport(self.id, repr(self.code), self.needed, self.errors, rows,
                         tuple(sorted(faulty)), cond, self.t_done - self.t0, self.t_decode,
                         self.encode_time, outcome, self.t_grace)


class Call(_Request):
    """A request to a registered worker handler (``cluster.call``): raw results, no decoding.

    ``results`` maps worker index to the array its handler returned, in arrival order, and
    grows as answers come; ``wait(count)`` blocks until ``count`` results are in; ``cancel()``
    tells the workers that have not answered that they may skip the request. As a Future it
    settles once every worker asked has answered or failed: with ``dict(results)`` (crashed
    workers are absent from it and listed in ``failed``), or with the
    :class:`~codedml.errors.WorkerFailure` of the lowest worker whose handler raised (every
    such failure is in ``errors_seen``); or with a :class:`~codedml.errors.DeadlineError` at
    its deadline. Faults are injected at the workers as for products: a straggler's result is
    late, a fail-silent or crashed worker's never comes.
    """

    what = "call"

    def __init__(self, cluster: "ClusterBase", jid: int, name: str, rows: Sequence[int],
                 timeout: float, t0: float) -> None:
        super().__init__(cluster, jid, rows, timeout, t0)
        self.name = name
        self.results: dict[int, np.ndarray] = {}

    def _answered(self) -> set[int]:
        return set(self.results)

    def _on_result(self, w: int, payload: Any) -> None:
        self.results[w] = payload

    def _want(self) -> int:
        # every worker asked owes a reply: gather them in one round where the transport can
        return max(1, len(self.sent_to) - len(self.results) - len(self.failed))

    def _progress(self) -> None:
        if self.settled or len(self.results) + len(self.failed) < len(self.sent_to):
            return  # fewer answers and failures than workers asked: one is still owed
        if not self._outstanding():
            if self.errors_seen:   # a handler raised: a bug to show, not a fault to ride out
                self._settle(exc=self.errors_seen[min(self.errors_seen)])
            else:
                self._settle(dict(self.results))

    def _expire(self) -> None:
        if self.settled:
            return
        for w in self._outstanding():
            self.failed[w] = "missing"
        self._settle(exc=self._deadline_error(f"call {self.name!r} (job {self.id})",
                                              len(self.results), len(self.sent_to)))

    def wait(self, count: int | None = None, timeout: float | None = None) -> dict[int, np.ndarray]:
        """Wait for ``count`` results (default: every worker asked) and return all that arrived.

        Raises the first worker's :class:`~codedml.errors.WorkerFailure` if a handler raised
        and ``count`` can no longer be reached, :class:`~codedml.errors.NotEnoughResultsError`
        (naming the silent and crashed ranks) when too many workers crashed, and
        :class:`~codedml.errors.DeadlineError` at the deadline or after ``timeout`` seconds.
        """
        need = len(self.sent_to) if count is None else check_int("count", count, 0, len(self.sent_to))
        timeout = check_wait("timeout", timeout)
        end = self.deadline if timeout is None else min(self.deadline, time.perf_counter() + timeout)
        cl = self.cluster
        cl._ensure_progress()
        drives = 1 if cl._caller_progress else 0  # a waiter that pumps arrivals itself
        with cl._changed:
            cl._drivers += drives
            try:
                while len(self.results) < need:
                    if not self._outstanding() or (self.settled and self.cancelled()):
                        if self.errors_seen:
                            raise next(iter(self.errors_seen.values()))
                        crashed = [w for w, s in self.failed.items() if s == "crashed"]
                        if len(crashed) + len(self.results) >= len(self.sent_to) or not self.failed:
                            raise NotEnoughResultsError(
                                f"call {self.name!r} (job {self.id}): only {len(self.results)} of "
                                f"{len(self.sent_to)} workers answered and {need} results are needed;"
                                f" crashed ranks {self._ranks(crashed)}",
                                received=len(self.results), needed=need)
                        raise self._deadline_error(f"call {self.name!r} (job {self.id})",
                                                   len(self.results), need)
                    now = time.perf_counter()
                    if now >= end:
                        raise self._deadline_error(f"call {self.name!r} (job {self.id})",
                                                   len(self.results), need)
                    # the replies still needed, at most those still owed (errors and
                    # crashes answer no more): the poll returns as soon as they are in
                    cl._wait_step(min(0.05, end - now),
                                  max(1, min(need - len(self.results), self._want())))
                return dict(self.results)
            finally:
                cl._drivers -= drives


class Ack(_Request):
    """The acknowledgements of one ``put`` / ``update`` / ``sgd_step`` / ``drop``.

    Settles with an :class:`AckReport` when every worker asked has acknowledged, failed or
    died, or at its deadline (the silent ones listed). A worker that raised makes it settle
    with :class:`~codedml.errors.UpdateFailedError` naming the rank, the operation and the
    remote exception; that worker's stored block is marked stale at once, so no later
    product uses it until a scrub stores it anew.
    """

    what = "ack"

    def __init__(self, cluster: "ClusterBase", aid: int, op: str, handles: Sequence[int],
                 rows: Sequence[int], timeout: float, t0: float, stale: Sequence[int] = ()) -> None:
        super().__init__(cluster, aid, rows, timeout, t0)
        self.op, self.handles = op, tuple(handles)
        self.acked: list[int] = []
        self.stale = tuple(stale)

    def _answered(self) -> set[int]:
        return set(self.acked)

    def _on_result(self, w: int, payload: Any) -> None:
        self.acked.append(w)

    def _accept(self, a: Arrival, now: float) -> None:
        if a.kind == "error":  # the blocks it touches are in an unknown state there
            for h in self.handles:
                self.cluster._mark_stale(h, a.worker)
        super()._accept(a, now)

    def _progress(self) -> None:
        if not self.settled and not self._outstanding():
            self._finish()

    def _expire(self) -> None:
        if not self.settled:
            self._finish()

    def _finish(self) -> None:
        if self.errors_seen:
            self._settle(exc=next(iter(self.errors_seen.values())))
            return
        crashed = tuple(sorted(w for w, s in self.failed.items() if s == "crashed"))
        self._settle(AckReport(self.op, tuple(sorted(self.acked)),
                               tuple(sorted(self._outstanding())), crashed, self.stale))
