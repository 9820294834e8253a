"""The runtime's contract as a hypothesis state machine (used by tests and benchmarks/stateful.py).

:class:`RuntimeMachine` drives one :class:`~codedml.LocalCluster` (numpy or torch backend)
through random interleavings of ``submit``, ``result``, abandoning a job, ``put``,
``update``, ``sgd_step``, ``matmul_left``, ``fetch``, ``scrub``, ``drop``, use of a dropped
handle and ``close`` (followed by a fresh cluster), under one seeded fault configuration drawn
at the start: within the code's tolerance or beyond it.

Invariants, checked after every step:

* every product returned is within :data:`RTOL` (relative Frobenius error) of the reference
  the machine computes itself (the value of the stored operand at submission time);
* within tolerance, every product succeeds; beyond it, every failure is a named
  :class:`~codedml.errors.CodedMLError` (never a bare exception, never a wrong product);
* every request settles by its deadline, counted from submission, plus :data:`SLACK`
  seconds, whether or not anybody waits for it; a ``result()`` returns by then, or within
  :data:`SLACK` of being called once the deadline has passed;
* the cluster's job table holds no request past its deadline plus the slack, every settled
  job has freed its encoding and payloads, and settled requests nobody holds are freed.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from codedml import LocalCluster
from codedml.codes import MDSCode
from codedml.errors import (ClusterClosedError, CodedMLError, ConfigurationError,
                            CorruptResultError, DeadlineError, FaultError)
from codedml.faults import Die, FailSilent, ShiftedExponential, SoftErrors, StorageErrors

#: The tolerance every returned float64 product is held to (relative Frobenius error).
RTOL = 1e-9
#: How far past its deadline a request may settle (the progress thread's latency).
SLACK = 1.5

#: Fault configurations: name -> whether the code tolerates them (given the errors budget the
#: machine then asks for).
CONFIGS = ("clean", "stragglers", "soft", "storage", "silent", "die",
           "beyond_silent", "beyond_soft", "beyond_storage")

STATS: dict[str, int] = {}


def _count(key: str, by: int = 1) -> None:
    STATS[key] = STATS.get(key, 0) + by


@dataclass
class _Config:
    name: str
    n: int
    k: int
    backend: str
    seed: int
    faults: Any = None
    timeout: float = 2.0
    down: int = 0          # ranks that stop answering (silent or dead)
    min_errors: int = 0    # corrupt results per job within tolerance
    within: bool = True

    def cluster(self) -> LocalCluster:
        return LocalCluster(self.n, backend=self.backend, faults=self.faults, seed=self.seed,
                            timeout=self.timeout)


def make_config(name: str, n: int, backend: str, seed: int, rank: int) -> _Config:
    """One fault configuration over ``n`` workers; ``rank`` (1..n) is the faulty rank."""
    c = _Config(name, n, 2, backend, seed)
    if name == "stragglers":
        c.faults = ShiftedExponential(0.0, 0.003)
    elif name == "soft":
        c.faults, c.min_errors = SoftErrors("gross", prob=0.4, ranks=[rank]), 1
    elif name == "storage":
        c.faults, c.min_errors = StorageErrors("gross", prob=0.4, ranks=[rank]), 1
    elif name == "silent":
        c.faults, c.down, c.timeout = FailSilent([rank], start=3), 1, 0.6
    elif name == "die":
        c.faults, c.down = Die([rank], at=3), 1
    elif name == "beyond_silent":  # all but one rank fall silent: nothing decodes
        c.faults, c.timeout, c.within = FailSilent(range(2, n + 1), start=2), 0.4, False
    elif name == "beyond_soft":
        c.faults, c.min_errors, c.within = SoftErrors("gross", prob=0.5, ranks=[1, 2]), 1, False
    elif name == "beyond_storage":
        c.faults, c.min_errors, c.within = StorageErrors("gross", prob=0.5), 1, False
    return c


@dataclass
class _Stored:
    handle: Any
    W: np.ndarray
    buffer: Any = None
    B: np.ndarray | None = None  # the momentum buffer's value
    cluster: Any = None
    valid: bool = True           # False once a step's acknowledgement failed beyond tolerance


@dataclass
class _Pending:
    job: Any
    ref: np.ndarray
    t0: float
    timeout: float
    strict: bool
    cluster: Any = field(repr=False, default=None)


def _rel(C: Any, R: np.ndarray) -> float:
    C = np.asarray(C, dtype=np.float64)
    return float(np.linalg.norm(C - R) / max(np.linalg.norm(R), 1e-300))


def _on_time(req: Any, called: float, deadline: float, what: str) -> None:
    """A waiting call returns by its request's deadline (counted from before the submit) plus
    :data:`SLACK`, or within :data:`SLACK` of being called when the deadline had passed; and
    the request itself settled by then, waited for or not."""
    now = time.perf_counter()
    late = now - max(deadline, called)
    assert late <= SLACK, f"{what} returned {late:.2f} s past max(deadline, call)"
    assert req.t_done <= req.deadline + SLACK, \
        f"{what}: request settled {req.t_done - req.deadline:.2f} s past its deadline"


class RuntimeMachine(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg: _Config | None = None
        self.cluster: LocalCluster | None = None
        self.old: list[LocalCluster] = []
        self.jobs: dict[int, _Pending] = {}
        self.stored: dict[int, _Stored] = {}
        self.dropped: list[Any] = []
        self.deadlines: list[float] = []
        self.rng = np.random.default_rng(0)
        self.steps = 0
        self.key = 0
        self.next_close = 20
        self.stalls: list[tuple[float, float]] = []   # the harness's own gc.collect() pauses

    # ------------------------------------------------------------------ set-up
    @initialize(name=st.sampled_from(CONFIGS), n=st.integers(5, 6),
                backend=st.sampled_from(["numpy", "torch"]), seed=st.integers(0, 2**16),
                rank=st.integers(1, 5))
    def start(self, name: str, n: int, backend: str, seed: int, rank: int) -> None:
        self.cfg = make_config(name, n, backend, seed, rank)
        self.cluster = self.cfg.cluster()
        self.rng = np.random.default_rng(seed)
        self.next_close = int(self.rng.integers(3, 40))
        _count("runs")
        _count(f"config:{name}")

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        for c in self.old:
            c.close()

    def _step(self, what: str) -> None:
        self.steps += 1
        _count("steps")
        _count(f"rule:{what}")

    def _errors(self, code: MDSCode) -> int:
        most = (code.workers - code.recovery_threshold) // 2
        lo = min(self.cfg.min_errors, most)
        return int(self.rng.integers(lo, most + 1))

    def _strict(self, code: MDSCode, errors: int) -> bool:
        """Whether the job must succeed: faults within tolerance and enough live workers."""
        c = self.cfg
        return (c.within and errors >= c.min_errors
                and code.recovery_threshold + 2 * errors <= code.workers - c.down)

    def _stalled(self, exc: BaseException, req: Any) -> bool:
        """Whether a DeadlineError of ``req`` (a request waited for after other rules ran) may
        be the harness's doing: a full ``gc.collect()`` of its own (the invariant's, holding
        the GIL, so no worker thread runs: 0.23-0.75 s measured in a process as large as a
        long pytest run's) overlapped the request's window for at least a fifth of its
        timeout. Such a failure is still a named error; it is not counted against the
        runtime."""
        if req is None or not isinstance(exc, DeadlineError):
            return False
        lost = sum(max(0.0, min(b, req.deadline) - max(a, req.t0)) for a, b in self.stalls)
        if lost >= 0.2 * req.timeout:
            _count("deadline:harness_gc")
            return True
        return False

    def _failed(self, exc: BaseException, strict: bool, what: str, req: Any = None) -> None:
        """A failure must be a named error, and none at all when the faults are tolerated
        (unless the harness's own gc pause ate the deadline of ``req``: :meth:`_stalled`)."""
        assert isinstance(exc, CodedMLError), f"{what}: unnamed {type(exc).__name__}: {exc}"
        if isinstance(exc, ClusterClosedError):
            _count("closed")
            return
        strict = strict and not self._stalled(exc, req)
        assert not strict, f"{what} failed within tolerance ({self.cfg}): {type(exc).__name__}: {exc}"
        assert isinstance(exc, (FaultError, ConfigurationError)), f"{what}: {type(exc).__name__}"
        _count(f"error:{type(exc).__name__}")

    # ------------------------------------------------------------------ products
    @rule(m=st.integers(1, 9), inner=st.integers(1, 7), p=st.integers(1, 5),
          k=st.integers(2, 3), own=st.booleans())
    def submit(self, m: int, inner: int, p: int, k: int, own: bool) -> None:
        self._step("submit")
        code = MDSCode(self.cfg.n, k)
        errors = self._errors(code)
        A = self.rng.standard_normal((m, inner))
        B = self.rng.standard_normal((inner, p))
        timeout = float(self.rng.uniform(0.3, 1.0)) if own else self.cfg.timeout
        t0 = time.perf_counter()
        job = self.cluster.submit(A, B, code=code, errors=errors, timeout=timeout if own else None)
        self._hold(job, A @ B, t0, timeout, self._strict(code, errors))

    def _hold(self, job: Any, ref: np.ndarray, t0: float, timeout: float, strict: bool) -> None:
        self.jobs[self.key] = _Pending(job, ref, t0, timeout, strict, self.cluster)
        self.key += 1
        self.deadlines.append(t0 + timeout)

    @precondition(lambda self: self.stored)
    @rule(data=st.data(), p=st.integers(1, 4))
    def submit_stored(self, data: st.DataObject, p: int) -> None:
        """A product with a stored operand, left pending while later updates go out."""
        self._step("submit_stored")
        s = self.stored[data.draw(st.sampled_from(sorted(self.stored)))]
        if s.cluster is not self.cluster:
            return
        code = s.handle.code
        errors = self._errors(code)
        x = self.rng.standard_normal((s.W.shape[1], p))
        t0 = time.perf_counter()
        try:
            job = self.cluster.submit(s.handle, x, errors=errors)
        except CodedMLError as exc:
            self._failed(exc, False, "submit with a stored operand")
            return
        self._hold(job, s.W @ x, t0, self.cfg.timeout, s.valid and self._strict(code, errors))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def result(self, data: st.DataObject) -> None:
        self._step("result")
        key = data.draw(st.sampled_from(sorted(self.jobs)))
        pj = self.jobs.pop(key)
        called = time.perf_counter()
        try:
            C = pj.job.result()
        except Exception as exc:  # noqa: BLE001 - judged by _failed
            _on_time(pj.job, called, pj.t0 + pj.timeout, "result()")
            self._failed(exc, pj.strict and pj.cluster is self.cluster, "result()", pj.job)
            return
        _on_time(pj.job, called, pj.t0 + pj.timeout, "result()")
        err = _rel(C, pj.ref)
        assert err <= RTOL, f"wrong product: relative error {err:.3g} > {RTOL} ({pj.job.report})"
        _count("products_ok")

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), cancel=st.booleans())
    def abandon(self, data: st.DataObject, cancel: bool) -> None:
        """Drop a job without its result (optionally cancelling it first)."""
        self._step("abandon")
        pj = self.jobs.pop(data.draw(st.sampled_from(sorted(self.jobs))))
        if cancel:
            if pj.job.cancel():
                assert pj.job.cancelled() and pj.job.settled and pj.job.encoding is None
                _count("cancelled")
            else:
                assert pj.job.done(), "cancel() refused a job that has not settled"

    # ------------------------------------------------------------------ stored operands
    @precondition(lambda self: len(self.stored) < 3)
    @rule(rows=st.sampled_from([4, 6, 8]), cols=st.integers(1, 6))
    def put(self, rows: int, cols: int) -> None:
        self._step("put")
        W = self.rng.standard_normal((rows, cols))
        h = self.cluster.put(W, code=MDSCode(self.cfg.n, 2))
        self.stored[h.id + 1000 * len(self.old)] = _Stored(h, W, cluster=self.cluster)

    def _pick(self, data: st.DataObject) -> tuple[int, _Stored] | None:
        key = data.draw(st.sampled_from(sorted(self.stored)))
        s = self.stored[key]
        return (key, s) if s.cluster is self.cluster else None

    def _ack(self, ack: Any, s: _Stored, what: str) -> None:
        """Wait for an update's acknowledgements: within tolerance they succeed."""
        if ack is None or self.rng.random() < 0.5:  # often left pending: products overtake
            return
        called = time.perf_counter()
        try:
            rep = ack.result()
        except Exception as exc:  # noqa: BLE001
            _on_time(ack, called, ack.deadline, f"{what} acknowledgement")
            self._failed(exc, self.cfg.within, what, ack)
            s.valid = False
            return
        _on_time(ack, called, ack.deadline, f"{what} acknowledgement")
        assert len(rep.acked) + len(rep.silent) + len(rep.crashed) + len(rep.stale) >= 1
        _count("acks_ok")

    @precondition(lambda self: self.stored)
    @rule(data=st.data(), r=st.integers(1, 3))
    def update(self, data: st.DataObject, r: int) -> None:
        self._step("update")
        picked = self._pick(data)
        if picked is None:
            return
        key, s = picked
        U = self.rng.standard_normal((s.W.shape[0], r))
        V = self.rng.standard_normal((s.W.shape[1], r))
        s.handle = self.cluster.update(s.handle, U, V)
        s.W = s.W + U @ V.T
        self._ack(s.handle.ack, s, "update")

    @precondition(lambda self: self.stored)
    @rule(data=st.data(), momentum=st.sampled_from([0.0, 0.9]), lr=st.sampled_from([0.1, 0.01]))
    def sgd_step(self, data: st.DataObject, momentum: float, lr: float) -> None:
        self._step("sgd_step")
        picked = self._pick(data)
        if picked is None:
            return
        key, s = picked
        if momentum == 0.0 and s.buffer is not None:
            momentum = 0.9  # a stored operand keeps its momentum once it has a buffer
        U = self.rng.standard_normal((s.W.shape[0], 1))
        V = self.rng.standard_normal((s.W.shape[1], 1))
        G = U @ V.T
        s.handle, buf = self.cluster.sgd_step(s.handle, U, V, lr=lr, momentum=momentum,
                                              buffer=s.buffer)
        if momentum:
            s.B = G if s.buffer is None else momentum * s.B + G
            s.buffer = buf
            s.W = s.W - lr * s.B
        else:
            s.W = s.W - lr * G
        self._ack(s.handle.ack, s, "sgd_step")

    @precondition(lambda self: self.stored)
    @rule(data=st.data(), m=st.integers(1, 4))
    def matmul_left(self, data: st.DataObject, m: int) -> None:
        self._step("matmul_left")
        picked = self._pick(data)
        if picked is None:
            return
        key, s = picked
        L = self.rng.standard_normal((m, s.W.shape[0]))
        code = s.handle.code
        n, k = code.workers, code.recovery_threshold
        most = (n - (2 * k - 1)) // 2
        errors = int(self.rng.integers(min(self.cfg.min_errors, most), most + 1))
        strict = (s.valid and self.cfg.within and errors >= self.cfg.min_errors
                  and 2 * k - 1 + 2 * errors <= n - self.cfg.down)
        t0 = time.perf_counter()
        try:
            out = self.cluster.matmul_left(L, s.handle, errors=errors)
        except Exception as exc:  # noqa: BLE001
            assert time.perf_counter() - t0 <= self.cfg.timeout + SLACK
            self._failed(exc, strict, "matmul_left")
            return
        assert time.perf_counter() - t0 <= self.cfg.timeout + SLACK
        err = _rel(out, L @ s.W)
        assert err <= RTOL, f"wrong left product: relative error {err:.3g}"
        _count("products_ok")

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def scrub(self, data: st.DataObject) -> None:
        self._step("scrub")
        picked = self._pick(data)
        if picked is None:
            return
        key, s = picked
        t0 = time.perf_counter()
        try:
            rep = self.cluster.scrub(s.handle, seed=int(self.rng.integers(2**31)))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, False, "scrub")
            return
        # a scrub waits for every live worker (then maybe a fetch and a store): a few deadlines
        assert time.perf_counter() - t0 <= 3 * (3 * self.cfg.timeout + SLACK)
        s.handle = rep.handle
        _count("scrub_repaired", len(rep.repaired))
        if self.cfg.name == "storage" and rep.repaired:
            s.valid = True

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def fetch(self, data: st.DataObject) -> None:
        self._step("fetch")
        picked = self._pick(data)
        if picked is None:
            return
        key, s = picked
        code = s.handle.code
        errors = self._errors(code)
        try:
            W = self.cluster.fetch(s.handle, errors=errors)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, s.valid and self._strict(code, errors), "fetch")
            return
        err = _rel(W, s.W)
        assert err <= RTOL, f"wrong fetch: relative error {err:.3g}"
        _count("products_ok")

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self._step("drop")
        key = data.draw(st.sampled_from(sorted(self.stored)))
        s = self.stored.pop(key)
        if s.cluster is not self.cluster:
            return
        self.cluster.drop(s.handle)
        if s.buffer is not None:
            self.cluster.drop(s.buffer)
        self.dropped = [s.handle]

    @precondition(lambda self: self.dropped)
    @rule()
    def use_dropped(self) -> None:
        """A dropped handle is refused by name, never served with stale blocks."""
        self._step("use_dropped")
        h = self.dropped[0]
        for call in (lambda: self.cluster.submit(h, np.ones(h.shape[1])),
                     lambda: self.cluster.update(h, np.ones((h.shape[0], 1)), np.ones((h.shape[1], 1)))):
            try:
                call()
            except ConfigurationError as exc:
                assert "dropped" in str(exc) or "another cluster" in str(exc), str(exc)
            except ClusterClosedError:
                pass
            else:
                raise AssertionError("a dropped handle was accepted")
        self.dropped = []

    @rule(nice=st.sampled_from([0, 2, 5]))
    def set_parity_nice(self, nice: int) -> None:
        """Parity products yield (or stop yielding) from the next request on, whatever their
        size: on a thread of each worker's own, raised or replaced as the lowering changes. Modest values: the
        contract (every request answered or named by its deadline, decodes right) must hold
        with them as without; a large lowering on a busy machine may starve a needed parity
        product by design (docs/runtime.md)."""
        self._step("set_parity_nice")
        self.cluster.parity_nice = nice
        self.cluster.YIELD_MIN_MACS = 0   # this machine's products are small: they yield too
        assert self.cluster.parity_nice == nice

    # ------------------------------------------------------------------ close
    @precondition(lambda self: self.steps >= self.next_close)
    @rule()
    def close(self) -> None:
        """Close the cluster: pending requests settle with ClusterClosedError, later calls
        are refused by name; then carry on with a fresh cluster of the same configuration."""
        self._step("close")
        self.next_close = self.steps + int(self.rng.integers(5, 40))
        old = self.cluster
        old.close()
        assert old.outstanding()["jobs"] == 0 and old.outstanding()["acks"] == 0
        for pj in self.jobs.values():
            if pj.cluster is old:
                assert pj.job.done()
        try:
            old.submit(np.eye(2), np.eye(2), code=MDSCode(self.cfg.n, 2))
        except ClusterClosedError:
            pass
        else:
            raise AssertionError("a closed cluster accepted a job")
        self.old = self.old[-1:] + [old]
        self.cluster = self.cfg.cluster()
        for s in self.stored.values():  # their handles now belong to a closed cluster
            if s.cluster is old:
                self.dropped = [s.handle]

    # ------------------------------------------------------------------ invariants
    @invariant()
    def bounded(self) -> None:
        if self.cluster is None:
            return
        now = time.perf_counter()
        self.deadlines = [d for d in self.deadlines if d + SLACK > now]
        out = self.cluster.outstanding()
        # acks of put/update/sgd/drop also settle by their deadline; held requests are ours
        assert out["jobs"] <= len(self.deadlines) + 3 * len(self.stored) + 4, out
        for pj in self.jobs.values():
            j = pj.job
            # Nobody waits for these: the progress thread alone must settle them in time.
            assert j.done() or now <= j.deadline + SLACK, \
                f"job {j.id} still pending {now - j.deadline:.2f} s past its deadline"
            if j.settled:
                assert j.encoding is None, "a settled job still holds its encoding"
                assert all(v is None for v in j.arrived.values()), "a settled job holds payloads"
        if self.steps % 10 == 0:
            t = time.perf_counter()
            gc.collect()
            self.stalls = [w for w in self.stalls if w[1] > t - 5.0] + [(t, time.perf_counter())]
            held = self.cluster.outstanding()["held"]
            mine = sum(1 for pj in self.jobs.values() if pj.cluster is self.cluster)
            assert held <= mine + 2 * len(self.stored) + 4, (held, mine)
        # old clusters: nothing pending after close
        for c in self.old[-2:]:
            assert c.outstanding()["jobs"] == 0
