"""Federated optimisation and adaptive synchronicity over the runtime.

A *round* is one step of the training loop (one root model version). The root asks the
clients (workers) through the runtime, as the other policies do: every request is one runtime
job, so the failure models (stragglers, crashes, silence) apply per (rank, job). Clients run
the registered handler :data:`codedml.train.task.FED_HANDLER` (:func:`fed_handler`) on their
shard (IID or Dirichlet label skew, :mod:`codedml.train.partition`).

Notation: ``n`` clients, client ``k`` holds ``n_k`` samples and the local objective
``f_k(w) = (1/n_k) sum_{i in P_k} l_i(w)``; the global objective is
``f(w) = sum_k (n_k / N) f_k(w)``; ``w_t`` is the root's model at round ``t``; ``lr`` is
``TrainConfig.lr``. Every client that reports sends a model (or a gradient) of ``d``
entries in the model's dtype: ``d x 32`` bits in float32, counted in ``bits_sent`` (the
two-entry header with the sample count and the loss is not counted, as the loss is not under
the gradient policies). Downlink (root to clients) is not counted, as for every policy.

``fedavg`` (McMahan, Moore, Ramage, Hampson, Aguera y Arcas 2017, Algorithm 1)
    each round a seeded random subset ``S_t`` of ``m = max(1, round(C n))`` live clients
    (``C = fraction``) runs ``E = local_epochs`` passes of mini-batch SGD (batch ``B =
    batch``, 0: the whole shard, the paper's ``B = inf``) with rate ``lr`` from ``w_t``; the
    root sets ``w_{t+1} = sum_{k in S_t} (n_k / n_S) w_k`` with ``n_S`` the samples of the
    clients that reported. With one client, ``E = 1`` and ``B = 0`` this is full-batch
    gradient descent (a test checks it against ``sync`` to rounding).
``fsvrg`` (Konecny, McMahan, Ramage, Richtarik 2016, "Federated optimization: distributed
    machine learning for on-device intelligence", Algorithm 4)
    phase 1: every live client sends ``grad f_k(w_t)``, the root forms ``G = grad f(w_t) =
    sum_k (n_k/n_S) grad f_k(w_t)``. Phase 2: client ``k`` starts from ``w = w_t``, walks one
    random permutation of its shard in mini-batches ``b`` of ``B`` samples (``B = 1``: the
    paper's single samples) with step ``h_k = h / n_k`` per sample (``h = lr``; ``h B / n_k``
    per mini-batch of ``B``, so one pass moves about ``h`` times a gradient whatever ``n_k``)::

        w <- w - h_k ( S_k [grad l_b(w) - grad l_b(w_t)] + G )

    and the root aggregates ``w_{t+1} = w_t + A sum_k (n_k/n_S) (w_k - w_t)``. The diagonal
    matrices come from per-coordinate frequencies, gathered once from the clients (their
    first message, counted as ``d x 32`` bits each): ``n_k^j`` = samples of client ``k`` whose
    loss depends on coordinate ``j`` (their per-sample gradient's entry ``j`` is non-zero at
    the first round's parameters: for a linear model exactly the samples with feature ``j``
    non-zero, the paper's definition), ``phi^j = sum_k n_k^j / N``, ``phi_k^j = n_k^j / n_k``,
    ``S_k = diag(phi^j / phi_k^j)`` (1 where ``phi_k^j = 0``), ``omega^j`` = clients with
    ``n_k^j > 0`` and ``A = diag(n / omega^j)`` (1 where ``omega^j = 0``).
``dane`` (Shamir, Srebro, Zhang 2014, "Communication-efficient distributed optimization using
    an approximate Newton-type method")
    phase 1 as FSVRG's (``g_k = grad f_k(w_t)``, ``G = grad f(w_t)``); phase 2: client ``k``
    approximately solves
    ``min_w f_k(w) - (g_k - eta G) . w + mu/2 ||w - w_t||^2`` by ``local_steps`` gradient
    steps of rate ``lr`` from ``w_t``, the subproblem's gradient being
    ``grad f_k,b(w) - grad f_k,b(w_t) + eta G + mu (w - w_t)`` on a mini-batch ``b`` (the
    whole shard when ``batch = 0``: then it is exact); the root averages
    ``w_{t+1} = sum_k (n_k/n_S) w_k`` (the paper's uniform average when shards are equal).

The root applies a round through its ``torch.optim.SGD`` with the pseudo-gradient
``(w_t - w_{t+1}) / lr``; with ``momentum = 0`` it sets ``w_{t+1}`` (to rounding), with
momentum it is server momentum (FedAvgM, Hsu et al. 2019).

**Deadlines and crashes.** Each phase of a round waits for its clients until all reported or
``round_deadline`` seconds passed (0: until ``timeout``); a client that has not reported by
then is dropped from the round (its late reply, tagged with its job, is discarded) and listed
in the step's ``dropped``. If none has reported at the deadline, the round waits for the first
one until ``timeout`` and stops with :class:`~codedml.errors.TrainingError` if none comes. A
crashed client is excluded from later rounds; training goes on while one client lives.

``adasync`` (adaptive synchronicity, Dutta, Wang, Joshi, "Slow and stale gradients can win
    the race", IEEE JSAIT 2021)
    K-sync SGD whose ``K`` grows as the error floor is reached. K-sync's error floor falls as
    ``1/K`` while its time per step grows with ``E[X_{K:n}]``, and the bound's best ``K`` for
    a current loss ``F`` grows as ``sqrt(F_0 / F)`` (AdaComm's square-root form, Wang and
    Joshi 2019; the paper's exact constants were not checked); the rule implemented: start at
    ``K_0 = k`` (default 1); every ``adasync_every`` steps set
    ``K <- min(n_live, max(K, ceil(K_0 sqrt(F_0 / F))))``, with ``F_0`` the mean mini-batch
    loss of the first step and ``F`` the mean mini-batch loss of the last ``adasync_every``
    steps (what the root knows without an extra pass over data). ``K`` never decreases and is
    saved in checkpoints.

The staleness rule ``staleness_lr = "norm:C"`` of the asynchronous policies (Dutta et al.
2018): a gradient computed at ``w_tau(j)`` and applied to ``w_j`` gets the rate
``lr_j = min(C / ||w_j - w_tau(j)||^2, lr)`` (:func:`staleness_norm_weight`).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .policies import Contribution, PolicyState, StepOutcome, ksync

if TYPE_CHECKING:  # pragma: no cover
    from .task import Task
    from .trainer import Engine

__all__ = ["fedavg", "fsvrg", "dane", "adasync", "fed_handler", "staleness_norm_weight",
           "coordinate_counts"]


def _rank(w: int) -> int:
    return w + 1


# ------------------------------------------------------------------ root side
def _params(eng: "Engine", op: str, **extra: Any) -> dict[str, Any]:
    cfg = eng.cfg
    return dict(eng.base, op=op, step=eng.st.version, lr=float(cfg.lr), **extra)


def _count(eng: "Engine", raw: np.ndarray) -> int:
    """Payload bits of one client message ``[n_k, loss, vector]``: the vector's ``d`` entries
    in the model's dtype (the header is not counted)."""
    bits = (np.asarray(raw).size - 2) * eng.itembits
    eng.bits_step += bits
    eng.bits_total += bits
    eng.gradients += 1
    return bits


def _gather(eng: "Engine", st: PolicyState, clients: list[int], arrays: list[np.ndarray],
            params: dict[str, Any], deadline: float | None = None) -> tuple[dict[int, np.ndarray], list[int]]:
    """One phase of a round: ask ``clients``, collect until all reported or the deadline
    (``deadline`` seconds, default ``round_deadline``; 0: until ``timeout``).

    Returns ``(replies, dropped)``. Crashed clients join ``st.dead``; a handler's exception
    stops training (it is a bug, not a fault); no reply at all within ``timeout`` raises."""
    from .task import FED_HANDLER

    cfg, cl = eng.cfg, eng.cluster
    call = cl.call(FED_HANDLER, *arrays, params=params, workers=clients, timeout=cfg.timeout)
    t0 = time.perf_counter()
    soft = t0 + ((cfg.round_deadline if deadline is None else deadline) or cfg.timeout)
    hard = t0 + cfg.timeout
    waiting, got = list(clients), {}
    try:
        while waiting:
            for w in list(waiting):
                if w in call.results:
                    got[w] = np.asarray(call.results[w])
                    waiting.remove(w)
                elif w in call.failed or w in cl.dead_workers:
                    if call.failed.get(w) == "error":
                        exc = call.errors_seen[w]
                        raise eng.error(f"client rank {_rank(w)} raised: {exc}") from exc
                    waiting.remove(w)
                    if w not in st.dead and (call.failed.get(w) == "crashed" or w in cl.dead_workers):
                        st.dead.add(w)
                        st.crashed_now.append(w)
            if not waiting:
                break
            now = time.perf_counter()
            if now >= soft and got:
                break
            if now >= hard:
                raise eng.error(
                    f"policy {cfg.policy!r}: no client reported within timeout={cfg.timeout} s; "
                    f"waiting on ranks {sorted(_rank(w) for w in waiting)} (crashed ranks "
                    f"{sorted(_rank(w) for w in st.dead)})")
            cl.progress(min(0.01, max(1e-4, (soft if got else hard) - now)))
    finally:
        call.cancel()
    silent = [w for w in clients if w not in got and w not in st.dead]
    if not got and silent:  # the call's own deadline (timeout) passed with no reply
        raise eng.error(
            f"policy {cfg.policy!r}: no client reported within timeout={cfg.timeout} s; "
            f"waited on ranks {sorted(_rank(w) for w in silent)} (crashed ranks "
            f"{sorted(_rank(w) for w in st.dead)})")
    if not got:
        raise eng.error(f"policy {cfg.policy!r}: no live client left to report (crashed ranks "
                        f"{sorted(_rank(w) for w in st.dead)})")
    dropped = silent
    return got, dropped


def _live(eng: "Engine", st: PolicyState) -> list[int]:
    live = [w for w in range(eng.n) if w not in st.dead and w not in eng.cluster.dead_workers]
    if not live:
        raise eng.error(f"policy {eng.cfg.policy!r}: every client crashed (ranks "
                        f"{sorted(_rank(w) for w in st.dead)})")
    return live


def _split(raw: np.ndarray) -> tuple[float, float, np.ndarray]:
    raw = np.asarray(raw, dtype=np.float64)
    return float(raw[0]), float(raw[1]), raw[2:]


def _models_to_outcome(eng: "Engine", st: PolicyState, replies: dict[int, np.ndarray],
                       dropped: list[int], scale: np.ndarray | None = None) -> StepOutcome:
    """Client models ``w_k`` -> contributions ``scale (w_t - w_k) / lr`` weighted by ``n_k``;
    the engine's weighted average and SGD step then give ``w_t + scale sum p_k (w_k - w_t)``."""
    wt = eng.flat().astype(np.float64)
    out = []
    for w in sorted(replies):
        raw = replies[w]
        bits = _count(eng, raw)
        nk, loss, wk = _split(raw)
        delta = (wt - wk) / eng.cfg.lr
        if scale is not None:
            delta = scale * delta
        out.append(Contribution(w, delta, loss, st.version, bits, weight=nk))
    return StepOutcome(out, dropped=tuple(dropped))


def _global_gradient(eng: "Engine", st: PolicyState) -> tuple[dict[int, np.ndarray], list[int], np.ndarray]:
    """Phase 1 of FSVRG and DANE: ``G = sum_k (n_k / n_S) grad f_k(w_t)`` over the reporters."""
    flat = eng.flat()
    replies, dropped = _gather(eng, st, _live(eng, st), [flat], _params(eng, "grad"))
    tot, G = 0.0, np.zeros(eng.d)
    for w in sorted(replies):
        _count(eng, replies[w])
        nk, _, g = _split(replies[w])
        tot += nk
        G += nk * g
    return replies, dropped, G / tot


def fedavg(eng: "Engine", st: PolicyState) -> StepOutcome:
    """One FedAvg round (see the module docstring)."""
    cfg = eng.cfg
    live = _live(eng, st)
    m = min(len(live), max(1, int(round(cfg.fraction * eng.n))))
    rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 0xFEDA, st.version])
    chosen = sorted(int(w) for w in rng.choice(live, size=m, replace=False))
    replies, dropped = _gather(eng, st, chosen, [eng.flat()],
                               _params(eng, "fedavg", epochs=int(cfg.local_epochs)))
    return _models_to_outcome(eng, st, replies, dropped)


def coordinate_counts(eng: "Engine", st: PolicyState) -> dict[str, Any]:
    """FSVRG's frequencies, gathered once from the clients and kept in checkpoints:
    ``phi`` (global frequency ``phi^j``) and ``A`` (the aggregation diagonal ``n/omega^j``)."""
    fs = eng.extra_state
    if "fsvrg_phi" in fs:
        return fs
    # once, before the first round: every live client, up to `timeout` (no round deadline)
    replies, _ = _gather(eng, st, _live(eng, st), [eng.flat()], _params(eng, "stats"), deadline=0)
    counts, total, omega = np.zeros(eng.d), 0.0, np.zeros(eng.d)
    for w in sorted(replies):
        raw = np.asarray(replies[w], dtype=np.float64)
        bits = (raw.size - 2) * 32  # counts sent as 32-bit integers
        eng.bits_step += bits
        eng.bits_total += bits
        eng.gradients += 1
        nk, _, c = _split(raw)
        total += nk
        counts += c
        omega += c > 0
    phi = counts / total
    A = np.where(omega > 0, len(replies) / np.maximum(omega, 1), 1.0)
    fs["fsvrg_phi"] = [float(x) for x in phi]
    fs["fsvrg_A"] = [float(x) for x in A]
    return fs


def fsvrg(eng: "Engine", st: PolicyState) -> StepOutcome:
    """One FSVRG round: a full-gradient phase, then local SVRG passes (see the module docstring)."""
    fs = coordinate_counts(eng, st)
    replies1, dropped1, G = _global_gradient(eng, st)
    phi = np.asarray(fs["fsvrg_phi"])
    clients = sorted(w for w in replies1 if w not in st.dead)
    replies, dropped = _gather(eng, st, clients, [eng.flat(), G, phi], _params(eng, "fsvrg"))
    return _models_to_outcome(eng, st, replies, sorted(set(dropped1) | set(dropped)),
                              scale=np.asarray(fs["fsvrg_A"]))


def dane(eng: "Engine", st: PolicyState) -> StepOutcome:
    """One DANE round: the global gradient, then each client's local subproblem."""
    cfg = eng.cfg
    replies1, dropped1, G = _global_gradient(eng, st)
    clients = sorted(w for w in replies1 if w not in st.dead)
    replies, dropped = _gather(eng, st, clients, [eng.flat(), G],
                               _params(eng, "dane", steps=int(cfg.local_steps),
                                       eta=float(cfg.dane_eta), mu=float(cfg.dane_mu)))
    return _models_to_outcome(eng, st, replies, sorted(set(dropped1) | set(dropped)))


def adasync(eng: "Engine", st: PolicyState) -> StepOutcome:
    """K-sync with the AdaSync rule for K (see the module docstring)."""
    a = eng.extra_state
    if "k" not in a:
        a.update(k=int(eng.k), k0=int(eng.k), f0=None, window=[])
    live = [w for w in range(eng.n) if w not in st.dead]
    every = eng.cfg.adasync_every
    if st.version and st.version % every == 0 and a["window"] and a["f0"]:
        f = float(np.mean(a["window"]))
        if f > 0 and math.isfinite(f):
            want = math.ceil(a["k0"] * math.sqrt(a["f0"] / f))
            a["k"] = int(max(a["k"], want))
        a["window"] = []
    K = max(1, min(int(a["k"]), len(live)))
    eng.k = K
    out = ksync(eng, st)
    loss = float(np.mean([c.loss for c in out.contributions]))
    if a["f0"] is None and math.isfinite(loss):
        a["f0"] = loss
    if math.isfinite(loss):
        a["window"] = list(a["window"]) + [loss]
    return out


def staleness_norm_weight(eng: "Engine", version: int) -> float:
    """``min(C / ||w_j - w_tau(j)||^2, lr) / lr``: Dutta et al.'s rate relative to ``lr``
    (``w_j`` the current parameters, ``w_tau(j)`` those the gradient was computed at)."""
    old = eng._versions.get(version)
    if old is None:  # not recorded (cannot happen for a request the engine sent): the full rate
        return 1.0
    diff = float(np.sum((eng.flat().astype(np.float64) - old.astype(np.float64)) ** 2))
    lr = eng.cfg.lr
    rate = lr if diff == 0.0 else min(eng._norm_c / diff, lr)
    return rate / lr


# ------------------------------------------------------------------ client side
def _grad_on(task: "Task", st: dict[str, Any], X: Any, y: Any) -> tuple[float, Any]:
    """Mean loss and flat gradient (torch) of the replica on ``X, y``."""
    import torch

    model = st["model"]
    model.zero_grad(set_to_none=False)
    loss = task.loss_fn(model(X), y, "mean")
    loss.backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                   for p in st["params"]])
    return float(loss.detach()), g.detach().clone()


def _flat(st: dict[str, Any]) -> Any:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in st["params"]]).clone()


def _set(st: dict[str, Any], flat: Any) -> None:
    import torch

    with torch.no_grad():
        off = 0
        for p in st["params"]:
            k = p.numel()
            p.copy_(flat[off:off + k].reshape(p.shape))
            off += k


def _batches(m: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One pass over ``m`` samples in a seeded random order, in mini-batches (0: one batch)."""
    if not batch or batch >= m:
        return [np.arange(m)]
    perm = rng.permutation(m)
    return [perm[i:i + batch] for i in range(0, m, batch)]


def _support_counts(task: "Task", st: dict[str, Any], X: Any, y: Any) -> np.ndarray:
    """``n_k^j``: samples whose per-sample gradient has a non-zero entry ``j``."""
    import torch

    counts = None
    for i in range(len(X)):
        _, g = _grad_on(task, st, X[i:i + 1], y[i:i + 1])
        nz = (g != 0).to(torch.float64)
        counts = nz if counts is None else counts + nz
    return counts.numpy()


def fed_handler(task: "Task", ctx: Any, *arrays: np.ndarray, **params: Any) -> np.ndarray:
    """The client side of ``fedavg``, ``fsvrg`` and ``dane``: ``params["op"]`` is ``stats``,
    ``grad``, ``fedavg``, ``fsvrg`` or ``dane`` (see the module docstring). Replies
    ``[n_k, loss, vector]`` in the model's dtype (``stats``: float64 counts)."""
    import torch

    from .task import _load, _state

    st = _state(ctx, task, dict(params, gc_s=None))
    X, y = st["shards"][ctx.worker]
    nk = len(X)
    op = params["op"]
    _load(st, np.asarray(arrays[0]))
    dtype = st["params"][0].dtype
    seed, step, batch, lr = (int(params["seed"]) & 0xFFFFFFFF, int(params["step"]),
                             int(params["batch"]), float(params["lr"]))
    rng = np.random.default_rng([seed, 0xFED, ctx.worker, step])

    def reply(loss: float, vec: Any, dt: Any = None) -> np.ndarray:
        v = vec.detach().numpy() if hasattr(vec, "detach") else np.asarray(vec)
        dt = dt or v.dtype
        return np.concatenate([np.asarray([nk, loss], dtype=dt), v.astype(dt)])

    if op == "stats":
        loss, _ = _grad_on(task, st, X, y)
        return reply(loss, _support_counts(task, st, X, y), np.float64)
    if op == "grad":
        loss, g = _grad_on(task, st, X, y)
        return reply(loss, g)
    w0 = _flat(st)
    if op == "fedavg":
        losses = []
        for _ in range(int(params["epochs"])):
            for b in _batches(nk, batch, rng):
                sel = torch.from_numpy(b)
                loss, g = _grad_on(task, st, X[sel], y[sel])
                losses.append(loss)
                _set(st, _flat(st) - lr * g)
        return reply(float(np.mean(losses)), _flat(st))
    if op == "fsvrg":
        G = torch.from_numpy(np.asarray(arrays[1], dtype=np.float64)).to(dtype)
        phi = np.asarray(arrays[2], dtype=np.float64)
        if "fsvrg_phik" not in st or st.get("fsvrg_key") != st["key"]:
            _, _ = _grad_on(task, st, X, y)
            st["fsvrg_phik"] = _support_counts(task, st, X, y) / nk
            st["fsvrg_key"] = st["key"]
            _set(st, w0)
        phik = st["fsvrg_phik"]
        S = torch.from_numpy(np.where(phik > 0, phi / np.where(phik > 0, phik, 1.0), 1.0)).to(dtype)
        losses = []
        for b in _batches(nk, batch, rng):
            sel = torch.from_numpy(b)
            w = _flat(st)
            loss, g = _grad_on(task, st, X[sel], y[sel])
            _set(st, w0)
            _, g0 = _grad_on(task, st, X[sel], y[sel])
            losses.append(loss)
            _set(st, w - (lr * len(b) / nk) * (S * (g - g0) + G))  # h / n_k per sample
        return reply(float(np.mean(losses)), _flat(st))
    if op == "dane":
        G = torch.from_numpy(np.asarray(arrays[1], dtype=np.float64)).to(dtype)
        eta, mu = float(params["eta"]), float(params["mu"])
        full = None
        losses = []
        for _ in range(int(params["steps"])):
            if batch and batch < nk:
                sel = torch.from_numpy(rng.choice(nk, batch, replace=False))
                Xb, yb = X[sel], y[sel]
            else:
                Xb, yb = X, y
            w = _flat(st)
            loss, g = _grad_on(task, st, Xb, yb)
            losses.append(loss)
            if full is None or (batch and batch < nk):
                _set(st, w0)
                _, g0 = _grad_on(task, st, Xb, yb)
                if not (batch and batch < nk):
                    full = g0
            else:
                g0 = full
            _set(st, w - lr * (g - g0 + eta * G + mu * (w - w0)))
        return reply(float(losses[0]), _flat(st))
    from ..errors import ConfigurationError

    raise ConfigurationError(f"federated `op` must be stats, grad, fedavg, fsvrg or dane, got {op!r}")
