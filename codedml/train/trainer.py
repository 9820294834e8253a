"""The root's training loop: parameters, optimizer, policy, metrics, checkpoints.

One update per step: the policy (:mod:`codedml.train.policies`) gathers contributions
``(g_i, tau_i)``, suspect ones are flagged (see :meth:`Engine.screen`), and the root sets

.. math::  \\nabla = \\frac{1}{m} \\sum_{i \\in \\text{accepted}} \\lambda(\\tau_i)\\, g_i, \\qquad
           \\lambda(\\tau) = 1 / (1 + \\tau) \\text{ (asynchronous policies, staleness\\_lr="inverse")},

as the gradient of ``torch.optim.SGD`` (learning rate, momentum) and steps. ``m`` is the number
of accepted contributions. The sum is divided by ``m``, not by ``sum_i lambda(tau_i)``: the
weights are a staleness-dependent learning rate (``lr lambda(tau_i) / m`` per gradient), so
stale gradients make a smaller step; they are not renormalised to an average.

Checkpoints (``torch.save``, written to ``path.tmp`` then ``os.replace``: a crash mid-write
leaves the previous checkpoint intact) hold ``format``, ``policy``, ``step``, ``model`` and
``optimizer`` state dicts, ``wall`` (training seconds so far), the engine's state (mini-batch
counters, recent gradient norms, bits sent) and the python / numpy / torch random states. A
run resumed from the checkpoint of step ``t`` continues at step ``t + 1``; under the
synchronous policies without delays it reproduces the uninterrupted run exactly. Requests in
flight (asynchronous policies) are not saved: after a resume every worker gets a fresh one.
Crashed workers are not saved either: a resumed run starts from the cluster it is given,
whose workers are new processes, and treats as dead only those that cluster reports dead.
A JSON-lines metrics file named by path is cut back to the checkpoint's step on resume
(rewritten atomically) and then appended to, so no step appears twice.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, IO

import numpy as np

from ..errors import ConfigurationError, TrainingError
from .config import TrainConfig
from .policies import ASYNC, POLICY_FUNCTIONS, Contribution, PolicyState, Request
from .task import HANDLER, Task, handlers, partition_indices

__all__ = ["Engine", "TrainResult", "fit", "train", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "codedml.train/1"


@dataclass
class TrainResult:
    """Summary and per-step metrics of a run (the root's view)."""

    policy: str
    workers: int
    steps: int
    wall: float
    loss: float
    accuracy: float
    bits_sent: int
    bits_full_precision: int
    gradients: int
    suspects: list[dict[str, Any]]
    corrected: list[dict[str, Any]]
    crashed: list[int]
    metrics: list[dict[str, Any]] = field(repr=False)
    config: dict[str, Any] = field(repr=False, default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank(w: int) -> int:
    return w + 1  # worker w is rank w + 1 (root 0), as the runtime names them


class Engine:
    """What the policies act through: the cluster, the root's model and the bookkeeping."""

    def __init__(self, cluster: Any, task: Task, cfg: TrainConfig, *,
                 metrics: str | os.PathLike | IO[str] | None = None, progress: bool = False) -> None:
        import torch

        self.cluster, self.task = cluster, task
        self.n = cluster.workers
        self.cfg = cfg.check_workers(self.n)
        self.k = cfg.k_for(self.n)
        if cfg.policy in ("ksync", "kasync") and not 1 <= self.k <= self.n:
            raise ConfigurationError(f"`k` must be between 1 and workers={self.n}, got {self.k}")
        self.model = task.root_model()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.d = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.itembits = 8 * self.params[0].element_size()
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum)
        self.code = None
        gc_s = None
        parts = partition_indices(len(task.X), self.n, cfg.data_seed)
        if cfg.policy == "gradient_coding":
            from ..codes import GradientCode

            self.code = GradientCode(self.n, cfg.gc_stragglers, cfg.scheme)
            gc_s = cfg.gc_stragglers
        self.gc_samples = sum(min(cfg.batch, len(p)) if cfg.batch else len(p) for p in parts)
        self.base = {"nparts": self.n, "data_seed": cfg.data_seed, "seed": cfg.seed,
                     "batch": cfg.batch, "qsgd": cfg.qsgd, "gc_s": gc_s, "gc_scheme": cfg.scheme}
        self._sub: dict[int, tuple[int, int]] = {}
        self._norms: list[float] = []
        self.bits_total = 0
        self.gradients = 0
        self.bits_step = 0
        self._progress = progress
        self._metrics_path = metrics
        self.st = PolicyState()
        self.wall_offset = 0.0

    # ------------------------------------------------------------------ used by policies
    def flat(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.nn.utils.parameters_to_vector(self.params).detach().numpy().copy()

    def send(self, st: PolicyState, workers: list[int] | None) -> Any:
        """One request for ``workers`` (None: all) at the current parameters."""
        targets = list(range(self.n)) if workers is None else list(workers)
        sub = 0
        for w in targets:
            v, c = self._sub.get(w, (-1, 0))
            sub = max(sub, c if v == st.version else 0)
        for w in targets:
            self._sub[w] = (st.version, sub + 1)
        params = dict(self.base, step=st.version, sub=sub)
        return self.cluster.call(HANDLER, self.flat(), params=params, workers=workers,
                                 timeout=self.cfg.timeout)

    def error(self, msg: str) -> TrainingError:
        return TrainingError(msg, step=self.st.version + 1, policy=self.cfg.policy)

    def wait_any(self, st: PolicyState, reqs: dict[int, Request], need: int = 1,
                 keep: bool = False) -> list[tuple[int, np.ndarray]]:
        """Wait until at least one request of ``reqs`` has its result; return those that have.

        Crashed workers leave ``reqs`` (and are recorded); a handler's exception stops training;
        no result for ``timeout`` seconds raises :class:`TrainingError` naming the silent ranks.
        """
        deadline = time.perf_counter() + self.cfg.timeout
        while True:
            out = []
            for w in list(reqs):
                r = reqs[w]
                if w in r.call.results:
                    out.append((w, r.call.results[w]))
                    if not keep:
                        del reqs[w]
                elif w in r.call.failed or w in self.cluster.dead_workers:
                    if r.call.failed.get(w) == "error":
                        exc = r.call.errors_seen[w]
                        raise self.error(f"worker rank {_rank(w)} raised: {exc}") from exc
                    del reqs[w]
                    if w not in st.dead:
                        st.dead.add(w)
                        st.crashed_now.append(w)
            if out:
                return out
            if not reqs:
                raise self.error(f"no live worker left to answer (crashed ranks "
                                 f"{sorted(_rank(w) for w in st.dead)})")
            if self.cfg.policy in ("ksync", "kasync") and len(reqs) < need:
                raise self.error(
                    f"policy {self.cfg.policy!r} needs {need} more gradients and only "
                    f"{len(reqs)} live workers are left (crashed ranks "
                    f"{sorted(_rank(w) for w in st.dead)})")
            now = time.perf_counter()
            if now >= deadline:
                raise self.error(
                    f"policy {self.cfg.policy!r}: no gradient within timeout={self.cfg.timeout} s; "
                    f"waiting on ranks {sorted(_rank(w) for w in reqs)} (crashed ranks "
                    f"{sorted(_rank(w) for w in st.dead)})")
            self.cluster.progress(min(0.02, deadline - now))

    def bits_in(self, w: int, raw: np.ndarray) -> int:
        """Gradient payload bits of one message (the loss entry is not counted)."""
        raw = np.asarray(raw)
        bits = 8 * raw.nbytes - (64 if raw.dtype == np.uint8 or self.code is not None else 8 * raw.itemsize)
        self.bits_step += bits
        self.bits_total += bits
        self.gradients += 1
        return bits

    def contribution(self, w: int, raw: np.ndarray, version: int) -> Contribution:
        bits = self.bits_in(w, raw)
        raw = np.asarray(raw)
        if raw.dtype == np.uint8:
            from .qsgd import decode

            loss = float(np.frombuffer(raw[:8].tobytes(), dtype=np.float64)[0])
            g = decode(raw[8:], self.d, self.cfg.qsgd)
        else:
            loss, g = float(raw[0]), raw[1:].astype(np.float64)
        return Contribution(w, g, loss, version, bits)

    # ------------------------------------------------------------------ the update
    def screen(self, c: Contribution) -> bool:
        """Whether a contribution looks corrupt: a non-finite loss or gradient, or a gradient
        norm above ``outlier`` times the median of the last 50 accepted norms (once 5 exist)."""
        with np.errstate(over="ignore", invalid="ignore"):
            norm = float(np.linalg.norm(c.grad))
        if not (math.isfinite(norm) and math.isfinite(c.loss)):
            return True
        recent = self._norms[-50:]
        if len(recent) >= 5 and norm > self.cfg.outlier * float(np.median(recent)):
            return True
        self._norms.append(norm)
        del self._norms[:-50]
        return False

    def apply(self, grads: list[tuple[float, np.ndarray]]) -> None:
        import torch

        g = sum(wt * gi for wt, gi in grads) / len(grads)
        off = 0
        for p in self.params:
            k = p.numel()
            p.grad = torch.from_numpy(np.ascontiguousarray(g[off:off + k])).reshape(p.shape).to(p.dtype)
            off += k
        self.opt.step()

    def evaluate(self) -> tuple[float, float]:
        """Mean loss over the whole training set; accuracy on the test set (else training set)."""
        import torch

        with torch.no_grad():
            X, y = torch.from_numpy(self.task.X), torch.from_numpy(self.task.y)
            loss = float(self.task.loss_fn(self.model(X), y))
            if self.task.X_test is not None and self.task.loss == "cross_entropy":
                Xt, yt = torch.from_numpy(self.task.X_test), torch.from_numpy(self.task.y_test)
                acc = float((self.model(Xt).argmax(1) == yt).double().mean())
            elif self.task.loss == "cross_entropy":
                acc = float((self.model(X).argmax(1) == y).double().mean())
            else:
                acc = float("nan")
        return loss, acc

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str) -> None:
        import torch

        state = {"format": CHECKPOINT_FORMAT, "policy": self.cfg.policy, "step": self.st.version,
                 "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "wall": self.wall, "engine": {"sub": dict(self._sub), "norms": list(self._norms),
                                              "bits_total": self.bits_total, "gradients": self.gradients},
                 "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                         "torch": torch.get_rng_state()},
                 "config": asdict(self.cfg)}
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, p)

    def restore(self, path: str) -> None:
        import torch

        ck = load_checkpoint(path)
        if ck["policy"] != self.cfg.policy:
            raise ConfigurationError(f"`resume` checkpoint {path} was written by policy "
                                     f"{ck['policy']!r}, this run is {self.cfg.policy!r}")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.st.version = int(ck["step"])
        self.wall_offset = float(ck["wall"])
        e = ck["engine"]
        self._sub = {int(k): tuple(v) for k, v in e["sub"].items()}
        self._norms = list(e["norms"])
        self.bits_total, self.gradients = int(e["bits_total"]), int(e["gradients"])
        random.setstate(ck["rng"]["python"])
        np.random.set_state(ck["rng"]["numpy"])
        torch.set_rng_state(ck["rng"]["torch"])

    # ------------------------------------------------------------------ the loop
    @property
    def wall(self) -> float:
        return self.wall_offset + (time.perf_counter() - self._t0)

    def run(self) -> TrainResult:
        cfg, st = self.cfg, self.st
        if cfg.resume:
            self.restore(cfg.resume)
        policy = POLICY_FUNCTIONS[cfg.policy]
        stale_weighted = cfg.policy in ASYNC and cfg.staleness_lr == "inverse"
        sink: IO[str] | None = None
        own = False
        # Workers this cluster already knows dead (a reused cluster): not asked, not waited for.
        known_dead = {int(w) for w in getattr(self.cluster, "_dead", ())}
        st.dead.update(known_dead)
        if isinstance(self._metrics_path, (str, os.PathLike)) and str(self._metrics_path):
            Path(self._metrics_path).parent.mkdir(parents=True, exist_ok=True)
            if cfg.resume:
                _truncate_metrics(self._metrics_path, st.version)
            sink, own = open(self._metrics_path, "a" if cfg.resume else "w"), True
        elif self._metrics_path is not None and hasattr(self._metrics_path, "write"):
            sink = self._metrics_path  # type: ignore[assignment]
        metrics: list[dict[str, Any]] = []
        suspects: list[dict[str, Any]] = []
        corrected: list[dict[str, Any]] = []
        crashed: list[int] = [_rank(w) for w in known_dead]
        loss = acc = float("nan")
        start = st.version
        self._t0 = time.perf_counter()
        try:
            while st.version < cfg.steps and not (cfg.max_time and self.wall >= cfg.max_time):
                self.bits_step = 0
                st.crashed_now = []
                out = policy(self, st)
                step = st.version + 1
                accepted, flagged, stale = [], [], []
                for c in out.contributions:
                    tau = st.version - c.version
                    if self.screen(c):
                        flagged.append(c.worker)
                        if cfg.suspect == "drop":
                            continue
                    stale.append(tau)
                    accepted.append(((1.0 / (1 + tau)) if stale_weighted else 1.0, c.grad))
                if accepted:
                    self.apply(accepted)
                st.version = step
                ranks = ([_rank(w) for w in out.used] if self.code is not None
                         else [_rank(c.worker) for c in out.contributions])
                if flagged:
                    suspects.append({"step": step, "ranks": [_rank(w) for w in flagged],
                                     "action": cfg.suspect})
                if out.corrected:
                    corrected.append({"step": step, "ranks": [_rank(w) for w in out.corrected]})
                crashed += [_rank(w) for w in st.crashed_now]
                rec: dict[str, Any] = {
                    "step": step, "wall": round(self.wall, 6),
                    "batch_loss": float(np.mean([c.loss for c in out.contributions])),
                    "workers": ranks, "staleness": stale, "bits": self.bits_step,
                    "suspect": [_rank(w) for w in flagged], "corrected": [_rank(w) for w in out.corrected],
                    "crashed": [_rank(w) for w in st.crashed_now], "loss": None, "accuracy": None}
                last = st.version >= cfg.steps or (cfg.max_time and self.wall >= cfg.max_time)
                if step % cfg.eval_every == 0 or last:
                    loss, acc = self.evaluate()
                    rec["loss"], rec["accuracy"] = loss, acc
                metrics.append(rec)
                if sink is not None:
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save(cfg.checkpoint)
                if self._progress:
                    _bar(step, cfg.steps, self.wall, loss, rec)
        finally:
            for r in st.inflight.values():
                if r.call is not None:
                    r.call.cancel()
            if own and sink is not None:
                sink.close()
        if self._progress:
            sys.stderr.write("\n")
        if not metrics or metrics[-1]["loss"] is None:
            loss, acc = self.evaluate()
        return TrainResult(cfg.policy, self.n, st.version - start, self.wall, loss, acc,
                           self.bits_total, self.gradients * self.d * self.itembits, self.gradients,
                           suspects, corrected, sorted(set(crashed)), metrics, asdict(cfg))


def _bar(step: int, total: int, wall: float, loss: float, rec: dict[str, Any]) -> None:
    width = 28
    done = int(width * min(step, total) / total)
    line = (f"[{'#' * done}{'.' * (width - done)}] {step}/{total} {wall:6.1f} s loss {loss:.4f} "
            f"| workers {len(rec['workers'])} staleness max {max(rec['staleness'], default=0)}"
            f"{' | suspect ' + str(rec['suspect']) if rec['suspect'] else ''}"
            f"{' | crashed ' + str(rec['crashed']) if rec['crashed'] else ''}")
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line)
    elif step == total or step % max(1, total // 20) == 0:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Keep the JSON lines of ``path`` with ``step <= step`` (the checkpoint's): the steps a
    crashed run made after its last checkpoint are redone by the resumed run. A torn last line
    is dropped. The file is rewritten to ``path.tmp`` and ``os.replace``d onto ``path``."""
    p = Path(path)
    if not p.exists():
        return
    keep = []
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(line + "\n")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, p)


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint written by :class:`Engine` (a file you trust: it holds pickled RNG states)."""
    import torch

    try:
        ck = torch.load(path, weights_only=False)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"`resume` checkpoint not found: {path}") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ConfigurationError(f"`resume` {path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return ck


def fit(cluster: Any, task: Task, cfg: TrainConfig, *,
        metrics: str | os.PathLike | IO[str] | None = None, progress: bool = False) -> TrainResult:
    """Train ``task`` on ``cluster`` (the root's side; the cluster must serve
    :func:`codedml.train.handlers` of the same task) and return the result.

    Raises :class:`~codedml.errors.TrainingError` when the policy cannot go on (e.g. a
    crashed worker under ``sync``)."""
    return Engine(cluster, task, cfg, metrics=metrics, progress=progress).run()


def train(task: Task, cfg: TrainConfig, *, local: int = 0, comm: Any = None, faults: Any = None,
          fault_seed: int = 0, metrics: str | os.PathLike | IO[str] | None = None,
          progress: bool = False) -> TrainResult | None:
    """Build the cluster (``local`` worker threads, or MPI over ``comm``; call on every rank)
    with the gradient handler and train; the root gets the :class:`TrainResult`, workers None.

    Examples
    --------
    >>> from codedml.train import TrainConfig, digits_task, train
    >>> res = train(digits_task(), TrainConfig(policy="ksync", k=3, steps=5), local=4)
    >>> res.steps
    5
    """
    if local:
        from ..runtime import LocalCluster

        cm = LocalCluster(local, faults=faults, seed=fault_seed, timeout=cfg.timeout,
                          handlers=handlers(task))
    else:
        if comm is None:
            raise ConfigurationError("`train` needs `local` worker threads or an MPI `comm`")
        from ..runtime import MPICluster

        cm = MPICluster(comm, faults=faults, seed=fault_seed, timeout=cfg.timeout,
                        handlers=handlers(task))
    with cm as cluster:
        if cluster is None:
            return None
        return fit(cluster, task, cfg, metrics=metrics, progress=progress)
