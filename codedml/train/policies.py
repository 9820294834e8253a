"""Data-parallel SGD policies: one function per policy, with explicit state.

As torch DDP's communication hooks are a function plus a state object, a policy here is a
function ``policy(engine, state) -> StepOutcome`` that gathers what one optimizer update uses
and returns it; ``state`` (:class:`PolicyState`) is everything it keeps between updates (the
model version, the requests in flight, the crashed workers). The engine
(:class:`codedml.train.trainer.Engine`) owns the cluster, the parameters and the timeouts; it
applies the update. ``n`` workers; ``v`` is the root's model version (updates so far).

Synchronous family (every worker starts each step from the current ``w_v``; late work is
discarded and cancelled):

``sync``
    wait for all ``n`` gradients, average. A crashed or silent worker stops training.
``ksync``
    wait for the first ``K`` of ``n`` gradients (Dutta et al. 2018, K-sync SGD).
``kbatch_sync``
    wait for the first ``K`` mini-batch gradients; a worker that finishes before ``K`` are in
    is given a fresh mini-batch at the same ``w_v`` at once, so fast workers may contribute
    several (K-batch-sync SGD).
``gradient_coding``
    every worker computes the partial gradients of its ``s + 1`` partitions and sends their
    code combination; the root decodes the exact full sum from any ``n - s`` messages
    (Tandon et al. 2017), locating ``e`` corrupt messages with ``n - s + 2e``.

Asynchronous family (one request in flight per worker; a gradient computed at version
``v'`` and applied at version ``v`` has staleness ``tau = v - v'``):

``async``
    apply every gradient as it lands; that worker then pulls the parameters *after* its own
    update (K = 1), so with one worker every gradient is fresh and with ``n`` workers the
    staleness is about ``n - 1``.
``kasync``
    wait for ``K`` gradients (necessarily from ``K`` different workers), average and apply;
    only those ``K`` workers get the new parameters, the others keep computing on older ones
    (K-async SGD).
``kbatch_async``
    wait for ``K`` gradients from any workers, so one worker may contribute several
    (K-batch-async SGD). A worker that finishes before the ``K``-th gradient is in gets the
    current (pre-update) parameters at once and keeps computing; the worker whose gradient
    completes the batch pulls the parameters after the update, as under ``async``.

The staleness-aware learning rate (``staleness_lr="inverse"``) multiplies a gradient of
staleness ``tau`` by ``1 / (1 + tau)`` before the update averages over the ``m`` gradients it
uses (it divides by ``m``, not by the sum of the weights): a per-gradient learning rate
``lr / (1 + tau)``, Zhang et al. 2016's rule ``lr / tau`` shifted so a fresh gradient keeps
the full rate. Stale gradients therefore make a *smaller step*; they are not renormalised.
Dutta et al. 2018 propose instead ``lr_j = min(C / ||w_j - w_tau(j)||^2, lr_max)``
(``staleness_lr="norm:C"``, ``lr_max = lr``): the engine keeps the parameters of every
version still in flight for it.

``adasync`` (K-sync whose K grows) and the federated policies ``fedavg``, ``fsvrg`` and
``dane`` are in :mod:`codedml.train.federated`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptResultError, NotEnoughResultsError

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Engine

__all__ = ["Contribution", "PolicyState", "Request", "StepOutcome", "POLICY_FUNCTIONS",
           "sync", "ksync", "kbatch_sync", "async_", "kasync", "kbatch_async", "gradient_coding"]


@dataclass
class Request:
    """A gradient request to ``worker`` (inside ``call``) computed at model version ``version``."""

    call: Any
    worker: int
    version: int


@dataclass
class Contribution:
    """One gradient the update uses: mean gradient ``grad`` (float64) of a mini-batch with mean
    loss ``loss``, computed at ``version``, from ``worker`` (-1: decoded from a gradient code)."""

    worker: int
    grad: np.ndarray
    loss: float
    version: int
    bits: int = 0
    weight: float = 1.0  # relative weight in a federated average (the client's sample count)


@dataclass
class StepOutcome:
    """What a policy gathered for one update."""

    contributions: list[Contribution]
    corrected: tuple[int, ...] = ()   # workers located as corrupt by a gradient code's decode
    used: tuple[int, ...] = ()        # workers whose messages went into a gradient-code decode
    dropped: tuple[int, ...] = ()     # federated: clients asked that missed the round's deadline


@dataclass
class PolicyState:
    """A policy's state between updates."""

    version: int = 0
    inflight: dict[int, Request] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    crashed_now: list[int] = field(default_factory=list)


# ------------------------------------------------------------------ synchronous family
def sync(eng: "Engine", st: PolicyState) -> StepOutcome:
    """All ``n`` gradients of the step; any missing worker is a :class:`TrainingError`."""
    call = eng.send(st, None)
    if len(call.sent_to) < eng.n:  # workers the cluster already knows dead were not asked
        call.cancel()
        gone = [w for w in range(eng.n) if w not in call.sent_to]
        st.dead.update(gone)
        raise eng.error(
            f"policy 'sync' waits for every worker; ranks {[w + 1 for w in gone]} crashed; use "
            f"ksync, kbatch_sync, async, kasync, kbatch_async or gradient_coding to go on "
            f"without them")
    try:
        call.wait(eng.n, timeout=eng.cfg.timeout)
    except NotEnoughResultsError as exc:
        call.cancel()
        crashed = [w for w, s in call.failed.items() if s == "crashed"]
        st.dead.update(crashed)
        raise eng.error(
            f"policy 'sync' waits for every worker and {len(call.results)} of {eng.n} answered "
            f"({exc}); use ksync, kbatch_sync, async, kasync, kbatch_async or gradient_coding "
            f"to tolerate slow, silent or crashed workers") from exc
    except Exception as exc:
        raise eng.error(f"policy 'sync': {exc}") from exc
    return StepOutcome([eng.contribution(w, r, st.version) for w, r in call.results.items()])


def ksync(eng: "Engine", st: PolicyState) -> StepOutcome:
    """The first ``K`` gradients of ``n``, all computed at the current version."""
    K = eng.k
    live = [w for w in range(eng.n) if w not in st.dead]
    reqs = {w: Request(None, w, st.version) for w in live}
    call = eng.send(st, live)
    for r in reqs.values():
        r.call = call
    got = []
    while len(got) < K:
        for w, raw in eng.wait_any(st, reqs, need=K - len(got)):
            if len(got) < K:
                got.append(eng.contribution(w, raw, st.version))
    call.cancel()
    return StepOutcome(got)


def kbatch_sync(eng: "Engine", st: PolicyState) -> StepOutcome:
    """The first ``K`` mini-batch gradients at the current version; finishers get another."""
    K = eng.k
    live = [w for w in range(eng.n) if w not in st.dead]
    call = eng.send(st, live)
    reqs = {w: Request(call, w, st.version) for w in live}
    calls = [call]
    got: list[Contribution] = []
    while len(got) < K:
        for w, raw in eng.wait_any(st, reqs, need=1):
            got.append(eng.contribution(w, raw, st.version))
            if len(got) < K:
                c = eng.send(st, [w])
                calls.append(c)
                reqs[w] = Request(c, w, st.version)
    for c in calls:
        c.cancel()
    return StepOutcome(got[:K])


def gradient_coding(eng: "Engine", st: PolicyState) -> StepOutcome:
    """Decode the exact gradient sum from the first ``n - s + 2e`` coded messages.

    The decoded vector is ``[sum_j L_j, sum_j g_j]`` (summed loss and gradient over every
    partition's mini-batch); dividing by the number of samples gives the mean gradient.
    """
    code, e = eng.code, eng.cfg.gc_errors
    live = [w for w in range(eng.n) if w not in st.dead]
    call = eng.send(st, live)
    reqs = {w: Request(call, w, st.version) for w in live}
    need = min(eng.n, code.recovery_threshold + 2 * e)
    results: dict[int, np.ndarray] = {}
    while True:
        early = (e == 0 and results and code.decodable(results))
        if len(results) >= need or early:
            try:
                total, info = code.decode(results, errors=e, return_info=True)
                break
            except CorruptResultError as exc:
                if not reqs:
                    call.cancel()
                    raise eng.error(f"policy 'gradient_coding': {exc}") from exc
                need = len(results) + 1  # inconsistent: one more message, then retry
            except NotEnoughResultsError:
                need = len(results) + 1
        if not reqs:
            call.cancel()
            raise eng.error(
                f"policy 'gradient_coding' needs {need} of {eng.n} coded messages and "
                f"{len(results)} arrived (crashed workers {sorted(st.dead)}); the code "
                f"GradientCode({eng.n}, {code.stragglers}) tolerates {code.stragglers} missing")
        for w, raw in eng.wait_any(st, reqs, need=need - len(results)):
            results[w] = np.asarray(raw, dtype=np.float64)
            eng.bits_in(w, raw)
    call.cancel()
    total = np.asarray(total, dtype=np.float64).ravel()
    count = eng.gc_samples
    c = Contribution(-1, total[1:] / count, float(total[0]) / count, st.version)
    return StepOutcome([c], corrected=tuple(int(w) for w in info.faulty),
                       used=tuple(int(w) for w in info.used))


# ------------------------------------------------------------------ asynchronous family
def _async_k(eng: "Engine", st: PolicyState, K: int, reissue_at_once: bool) -> StepOutcome:
    """Gather ``K`` gradients from the requests in flight.

    A finisher that is to start from the parameters after this update is left in
    ``st.inflight`` with ``call=None`` and version ``v + 1``; the next call sends it those
    parameters (the engine applies the update in between). With ``reissue_at_once`` the
    finishers before the ``K``-th are sent the current parameters (version ``v``) at once.
    """
    for w in range(eng.n):  # workers without a request (first step, after a resume) get one
        if w not in st.dead and w not in st.inflight:
            st.inflight[w] = Request(None, w, st.version)
    fresh = [w for w, r in st.inflight.items() if r.call is None]
    if fresh:
        call = eng.send(st, fresh)
        for w in fresh:
            st.inflight[w].call = call
    got: list[Contribution] = []
    finished: list[int] = []
    while len(got) < K:
        need = 1 if reissue_at_once else K - len(got)
        for w, raw in eng.wait_any(st, st.inflight, need=need, keep=True):
            if len(got) >= K:  # more landed than needed: they stay in flight for the next update
                break
            req = st.inflight.pop(w)
            got.append(eng.contribution(w, raw, req.version))
            if reissue_at_once and len(got) < K:
                # K-batch-async, before the K-th gradient: the current (pre-update) parameters
                st.inflight[w] = Request(eng.send(st, [w]), w, st.version)
            else:
                finished.append(w)
    # K-async: the K finishers; K-batch-async (and async, K = 1): the finisher that completed
    # the batch. They get the parameters after this update, sent when the next one starts.
    for w in finished:
        st.inflight[w] = Request(None, w, st.version + 1)
    return StepOutcome(got)


def async_(eng: "Engine", st: PolicyState) -> StepOutcome:
    """Every gradient is an update; its worker restarts from the updated parameters
    (K-batch-async with K = 1)."""
    return _async_k(eng, st, 1, True)


def kasync(eng: "Engine", st: PolicyState) -> StepOutcome:
    """K gradients from K workers; only they restart from the new parameters."""
    return _async_k(eng, st, eng.k, False)


def kbatch_async(eng: "Engine", st: PolicyState) -> StepOutcome:
    """K gradients from any workers; a finisher before the K-th restarts at once from the
    current parameters, the one completing the batch from the updated parameters."""
    return _async_k(eng, st, eng.k, True)


def _federated(name: str) -> Callable[["Engine", PolicyState], StepOutcome]:
    def run(eng: "Engine", st: PolicyState) -> StepOutcome:
        from . import federated  # adasync, fedavg, fsvrg, dane live in codedml/train/federated.py

        return getattr(federated, name)(eng, st)
    run.__name__ = name
    return run


POLICY_FUNCTIONS: dict[str, Callable[["Engine", PolicyState], StepOutcome]] = {
    "sync": sync, "ksync": ksync, "kbatch_sync": kbatch_sync, "async": async_, "kasync": kasync,
    "kbatch_async": kbatch_async, "gradient_coding": gradient_coding,
    "adasync": _federated("adasync"), "fedavg": _federated("fedavg"),
    "fsvrg": _federated("fsvrg"), "dane": _federated("dane")}

#: Policies whose in-flight requests outlive an update (stale gradients possible).
ASYNC = frozenset({"async", "kasync", "kbatch_async"})
