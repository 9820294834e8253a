"""The root's training loop: parameters, optimizer, policy, metrics, checkpoints.

One update per step: the policy (:mod:`codedml.train.policies`) gathers contributions
``(g_i, tau_i)``, suspect ones are flagged (see :meth:`Engine.screen`), and the root sets

.. math::  \\nabla = \\frac{1}{m} \\sum_{i \\in \\text{accepted}} \\lambda(\\tau_i)\\, g_i, \\qquad
           \\lambda(\\tau) = 1 / (1 + \\tau) \\text{ (asynchronous policies, staleness\\_lr="inverse")},

as the gradient of ``torch.optim.SGD`` (learning rate, momentum) and steps. ``m`` is the number
of accepted contributions. The sum is divided by ``m``, not by ``sum_i lambda(tau_i)``: the
weights are a staleness-dependent learning rate (``lr lambda(tau_i) / m`` per gradient), so
stale gradients make a smaller step; they are not renormalised to an average.

Checkpoints (``torch.save`` through :func:`codedml._io.atomic_save`: a temporary file in the
same directory, fsync, ``os.replace``, fsync of the directory, so a crash mid-write leaves the
previous checkpoint intact) hold ``format``, ``task``, ``policy``, ``step``, ``model`` and
``optimizer`` state dicts, ``wall`` (training seconds so far), the engine's state (mini-batch
counters, recent gradient norms, bits sent) and the python / numpy / torch random states as
plain lists and tensors, so they load with ``torch.load(..., weights_only=True)``; a corrupt,
truncated, foreign, other-version or other-model file is refused by name
(:func:`load_checkpoint`, :func:`check_checkpoint`). A
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
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, IO

import numpy as np

from ..errors import ConfigurationError, TrainingError
from .config import FEDERATED, TrainConfig, staleness_norm_c
from .policies import ASYNC, POLICY_FUNCTIONS, Contribution, PolicyState, Request
from .task import HANDLER, Task, handlers, partition_indices

__all__ = ["Engine", "TrainResult", "fit", "train", "load_checkpoint", "check_checkpoint",
           "CHECKPOINT_FORMAT"]

#: Checkpoint format name/version; other versions are refused by name. Version 2: loads
#: with ``weights_only=True`` (random states as lists and tensors, no pickled objects).
CHECKPOINT_FORMAT = "codedml.train/2"


def _median(xs: list[float]) -> float:
    """The median of a short list of floats, as ``np.median`` gives it (the mean of the two
    middle values for an even count), without numpy's per-call overhead: ``screen`` takes
    one per gradient, and ``np.median`` of 50 floats measured 25-75 us against 3 us here."""
    s = sorted(xs)
    h = len(s) // 2
    return s[h] if len(s) % 2 else (s[h - 1] + s[h]) / 2


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
    #: Records left out of ``metrics``, ``suspects`` and ``corrected`` (the oldest ones) to
    #: keep the root's memory bounded: ``TrainConfig.keep_metrics``.
    dropped: dict[str, int] = field(default_factory=dict)

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
        if cfg.policy in ("ksync", "kasync", "adasync") and not 1 <= self.k <= self.n:
            raise ConfigurationError(f"`k` must be between 1 and workers={self.n}, got {self.k}")
        self.model = task.root_model()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.d = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.itembits = 8 * self.params[0].element_size()
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum)
        self.code = None
        gc_s = None
        parts = partition_indices(len(task.X), self.n, cfg.data_seed, cfg.partition, task.y)
        if cfg.policy == "gradient_coding":
            from ..codes import GradientCode

            self.code = GradientCode(self.n, cfg.gc_stragglers, cfg.scheme)
            gc_s = cfg.gc_stragglers
        self.gc_samples = sum(min(cfg.batch, len(p)) if cfg.batch else len(p) for p in parts)
        self.base = {"nparts": self.n, "data_seed": cfg.data_seed, "seed": cfg.seed,
                     "batch": cfg.batch, "qsgd": cfg.qsgd, "gc_s": gc_s, "gc_scheme": cfg.scheme,
                     "data_bits": cfg.data_bits, "refine_bits": cfg.refine_bits,
                     "importance": cfg.importance, "partition": cfg.partition}
        self.samples_step = 0  # samples received this step under data quantization
        self.parts = parts
        #: Policy state that a checkpoint keeps (plain numbers and lists; adasync, fsvrg).
        self.extra_state: dict[str, Any] = {}
        # staleness_lr="norm:C": the parameters of every version still in flight (Dutta et al.)
        self._norm_c = staleness_norm_c(cfg.staleness_lr) if cfg.policy in ASYNC else None
        self._versions: dict[int, np.ndarray] = {}
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
        flat = self.flat()
        if self._norm_c is not None:
            self._versions[st.version] = flat
        return self.cluster.call(HANDLER, flat, params=params, workers=workers,
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
        if self.cfg.data_bits:  # quantized samples: the root computes the gradient
            from .dataquant import root_gradient

            loss, g, m = root_gradient(self.task, self.model, self.params, raw,
                                       self.cfg.data_bits, self.cfg.refine_bits)
            self.samples_step += m
        elif raw.dtype == np.uint8:
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
        if len(recent) >= 5 and norm > self.cfg.outlier * _median(recent):
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
        """Write the checkpoint (see :func:`load_checkpoint` for its contents) atomically."""
        import torch

        from .._io import atomic_save

        state = {"format": CHECKPOINT_FORMAT, "task": self.task.name, "policy": self.cfg.policy,
                 "step": self.st.version, "model": self.model.state_dict(),
                 "optimizer": self.opt.state_dict(), "wall": float(self.wall),
                 "engine": {"sub": {int(k): [int(x) for x in v] for k, v in self._sub.items()},
                            "norms": [float(x) for x in self._norms],
                            "bits_total": int(self.bits_total), "gradients": int(self.gradients),
                            "extra": dict(self.extra_state)},
                 "rng": rng_state(), "config": asdict(self.cfg)}
        atomic_save(path, lambda f: torch.save(state, f))

    def restore(self, path: str) -> None:
        ck = load_checkpoint(path)
        check_checkpoint(ck, path, self.task, self.cfg, self.model)
        self.model.load_state_dict(ck["model"])
        try:
            self.opt.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ConfigurationError(f"`resume` checkpoint {path}: its optimizer state does not "
                                     f"fit this model ({exc})") from exc
        self.st.version = int(ck["step"])
        self.wall_offset = float(ck["wall"])
        e = ck["engine"]
        self._sub = {int(k): (int(v[0]), int(v[1])) for k, v in e["sub"].items()}
        self._norms = [float(x) for x in e["norms"]]
        self.bits_total, self.gradients = int(e["bits_total"]), int(e["gradients"])
        self.extra_state = dict(e.get("extra", {}))
        set_rng_state(ck["rng"])

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
        known_dead = {int(w) for w in self.cluster.dead_workers}
        st.dead.update(known_dead)
        if isinstance(self._metrics_path, (str, os.PathLike)) and str(self._metrics_path):
            Path(self._metrics_path).parent.mkdir(parents=True, exist_ok=True)
            if cfg.resume:
                _truncate_metrics(self._metrics_path, st.version)
            sink, own = open(self._metrics_path, "a" if cfg.resume else "w"), True
        elif self._metrics_path is not None and hasattr(self._metrics_path, "write"):
            sink = self._metrics_path  # type: ignore[assignment]
        # Bounded: the latest ``keep_metrics`` of each; the metrics file keeps every record.
        keep = cfg.keep_metrics
        metrics: deque[dict[str, Any]] = deque(maxlen=keep)
        suspects: deque[dict[str, Any]] = deque(maxlen=keep)
        corrected: deque[dict[str, Any]] = deque(maxlen=keep)
        counts = {"metrics": 0, "suspects": 0, "corrected": 0}
        evaluated = False  # whether the last step's record has the loss
        crashed: list[int] = [_rank(w) for w in known_dead]
        loss = acc = float("nan")
        start = st.version
        self._t0 = time.perf_counter()
        try:
            while st.version < cfg.steps and not (cfg.max_time and self.wall >= cfg.max_time):
                self.bits_step = self.samples_step = 0
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
                    wt = (1.0 / (1 + tau)) if stale_weighted else 1.0
                    if self._norm_c is not None:  # lr_j = min(C / ||w_j - w_tau(j)||^2, lr)
                        from .federated import staleness_norm_weight

                        wt = staleness_norm_weight(self, c.version)
                    accepted.append((wt * c.weight, c.grad))
                if accepted and cfg.policy in FEDERATED:
                    # the average of the accepted clients weighted by their sample counts
                    tot = sum(wt for wt, _ in accepted)
                    accepted = [(len(accepted) * wt / tot, g) for wt, g in accepted]
                if accepted:
                    self.apply(accepted)
                if self._norm_c is not None:  # keep only the versions still in flight
                    live = {r.version for r in st.inflight.values() if r.call is not None}
                    self._versions = {v: p for v, p in self._versions.items() if v in live}
                st.version = step
                ranks = ([_rank(w) for w in out.used] if self.code is not None
                         else [_rank(c.worker) for c in out.contributions])
                if flagged:
                    suspects.append({"step": step, "ranks": [_rank(w) for w in flagged],
                                     "action": cfg.suspect})
                    counts["suspects"] += 1
                if out.corrected:
                    corrected.append({"step": step, "ranks": [_rank(w) for w in out.corrected]})
                    counts["corrected"] += 1
                crashed += [_rank(w) for w in st.crashed_now]
                rec: dict[str, Any] = {
                    "step": step, "wall": round(self.wall, 6),
                    "batch_loss": float(np.mean([c.loss for c in out.contributions])),
                    "workers": ranks, "staleness": stale, "bits": self.bits_step,
                    "suspect": [_rank(w) for w in flagged], "corrected": [_rank(w) for w in out.corrected],
                    "crashed": [_rank(w) for w in st.crashed_now], "loss": None, "accuracy": None}
                if cfg.policy in FEDERATED or cfg.policy == "adasync":
                    rec["dropped"] = [_rank(w) for w in out.dropped]
                    rec["k"] = self.k if cfg.policy == "adasync" else len(out.contributions)
                if cfg.data_bits:
                    rec["samples"] = self.samples_step
                last = st.version >= cfg.steps or (cfg.max_time and self.wall >= cfg.max_time)
                evaluated = bool(step % cfg.eval_every == 0 or last)
                if evaluated:
                    loss, acc = self.evaluate()
                    rec["loss"], rec["accuracy"] = loss, acc
                metrics.append(rec)
                counts["metrics"] += 1
                if sink is not None:
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    if own and sink is not None:  # the metrics up to the checkpoint are durable
                        os.fsync(sink.fileno())
                    self.save(cfg.checkpoint)
                if self._progress:
                    _bar(step, cfg.steps, self.wall, loss, rec)
        finally:
            for r in st.inflight.values():
                if r.call is not None:
                    r.call.cancel()
            if own and sink is not None:
                sink.flush()
                os.fsync(sink.fileno())
                sink.close()
        if self._progress:
            sys.stderr.write("\n")
        if not evaluated:
            loss, acc = self.evaluate()
        kept = {"metrics": len(metrics), "suspects": len(suspects), "corrected": len(corrected)}
        return TrainResult(cfg.policy, self.n, st.version - start, self.wall, loss, acc,
                           self.bits_total, self.gradients * self.d * self.itembits, self.gradients,
                           list(suspects), list(corrected), sorted(set(crashed)), list(metrics),
                           asdict(cfg), {k: counts[k] - kept[k] for k in counts})


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
    is dropped. The file is rewritten atomically (:func:`codedml._io.atomic_write_text`).

    The metrics file itself is a stream: one line appended and flushed per step (rewriting it
    whole each step would cost O(steps^2)), fsync-ed with every checkpoint and at the end; a
    reader, and this function, drop a torn last line."""
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
    from .._io import atomic_write_text

    atomic_write_text(p, "".join(keep))


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch global random states as plain lists and tensors (what a
    ``torch.load(..., weights_only=True)`` may read back)."""
    import torch

    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": {"version": int(version), "state": [int(x) for x in mt],
                       "gauss_next": None if gauss is None else float(gauss)},
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (validated by :func:`check_checkpoint`)."""
    import torch

    py = rng["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]),
                     None if py["gauss_next"] is None else float(py["gauss_next"])))
    nu = rng["numpy"]
    np.random.set_state((str(nu["name"]), np.asarray(nu["keys"].numpy(), dtype=np.uint32),
                         int(nu["pos"]), int(nu["has_gauss"]), float(nu["cached_gaussian"])))
    torch.set_rng_state(rng["torch"])


def load_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint written by :class:`Engine`, read with ``torch.load(..., weights_only=True)``
    (no code runs while loading: a pickle that would call anything is refused).

    Contents (format :data:`CHECKPOINT_FORMAT`): ``format``, ``task`` (its name), ``policy``,
    ``step``, ``model`` and ``optimizer`` state dicts, ``wall`` (training seconds so far),
    ``engine`` (mini-batch counters, recent gradient norms, bits sent, gradients received),
    ``rng`` (python / numpy / torch random states as lists and tensors) and ``config``.

    Raises :class:`~codedml.errors.ConfigurationError` (exit status 2 from the command line)
    naming the path when the file is missing, unreadable, corrupt or truncated, not a torch
    file, a pickle that would run code, or a checkpoint of another format version.
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise ConfigurationError(f"`resume` checkpoint not found: {path}")
    if p.is_dir():
        raise ConfigurationError(f"`resume` must be a checkpoint file, got a directory: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            ck = torch.load(p, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to load is named
        text = str(exc)
        lines = [ln.strip() for ln in text.splitlines() if "unsupported" in ln.lower()]
        detail = (lines[0] if lines else (text.strip().splitlines() or [type(exc).__name__])[0])[:200]
        why = ("a pickle that would call code, refused unrun (weights_only=True)"
               if "global" in text.lower() else "corrupt, truncated or not a torch checkpoint")
        raise ConfigurationError(f"`resume` {path} is not a readable {CHECKPOINT_FORMAT} "
                                 f"checkpoint: {why} ({type(exc).__name__}: {detail})") from exc
    fmt = ck.get("format") if isinstance(ck, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("codedml.train/"):
        raise ConfigurationError(f"`resume` {path} is not a codedml training checkpoint "
                                 f"(expected format {CHECKPOINT_FORMAT!r})")
    if fmt != CHECKPOINT_FORMAT:
        raise ConfigurationError(
            f"`resume` {path} has checkpoint format {fmt!r}; this version of codedml reads only "
            f"{CHECKPOINT_FORMAT!r} (start the run afresh)")
    _check_schema(ck, path)
    return ck


def _check_schema(ck: dict[str, Any], path: str) -> None:
    """Every field of a checkpoint present with the right type (a crafted or damaged file is
    named here instead of failing later inside torch or random)."""
    import torch

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ConfigurationError(f"`resume` {path} is a damaged checkpoint: {what}")

    for key, kind in (("task", str), ("policy", str), ("step", int), ("model", dict),
                      ("optimizer", dict), ("wall", float), ("engine", dict), ("rng", dict),
                      ("config", dict)):
        need(key in ck and isinstance(ck[key], kind) and not isinstance(ck[key], bool),
             f"`{key}` missing or not {kind.__name__}")
    need(ck["step"] >= 0, f"`step` must be at least 0, got {ck['step']}")
    need(all(isinstance(v, torch.Tensor) for v in ck["model"].values()), "`model` holds non-tensors")
    e = ck["engine"]
    need(isinstance(e.get("sub"), dict) and all(isinstance(v, list) and len(v) == 2
                                                for v in e["sub"].values()), "`engine.sub`")
    need(isinstance(e.get("norms"), list), "`engine.norms`")
    need(isinstance(e.get("bits_total"), int) and isinstance(e.get("gradients"), int),
         "`engine.bits_total` / `engine.gradients`")
    r = ck["rng"]
    py, nu, to = r.get("python"), r.get("numpy"), r.get("torch")
    need(isinstance(py, dict) and isinstance(py.get("state"), list) and len(py["state"]) == 625
         and isinstance(py.get("version"), int), "`rng.python`")
    need(isinstance(nu, dict) and isinstance(nu.get("keys"), torch.Tensor)
         and tuple(nu["keys"].shape) == (624,) and nu.get("name") == "MT19937"
         and isinstance(nu.get("pos"), int) and 0 <= nu["pos"] <= 624, "`rng.numpy`")
    need(isinstance(to, torch.Tensor) and to.dtype == torch.uint8, "`rng.torch`")


def check_checkpoint(ck: dict[str, Any], path: str, task: Task, cfg: TrainConfig,
                     model: Any | None = None) -> None:
    """Refuse, by name, a checkpoint of another model: another task, policy, or parameter
    names / shapes / dtypes than ``task``'s model (``model``, else a fresh root model)."""
    if ck["task"] != task.name:
        raise ConfigurationError(f"`resume` checkpoint {path} was written for task "
                                 f"{ck['task']!r}, this run is {task.name!r}")
    if ck["policy"] != cfg.policy:
        raise ConfigurationError(f"`resume` checkpoint {path} was written by policy "
                                 f"{ck['policy']!r}, this run is {cfg.policy!r}")
    want = (model if model is not None else task.root_model()).state_dict()
    have = ck["model"]
    if set(want) != set(have):
        raise ConfigurationError(
            f"`resume` checkpoint {path} holds another model: parameters {sorted(have)}, "
            f"this run's model has {sorted(want)}")
    for name, t in want.items():
        h = have[name]
        if tuple(h.shape) != tuple(t.shape) or h.dtype != t.dtype:
            raise ConfigurationError(
                f"`resume` checkpoint {path} holds another model: parameter {name!r} is "
                f"{tuple(h.shape)} {h.dtype}, this run's is {tuple(t.shape)} {t.dtype} "
                f"(check --model, --hidden, --dtype)")


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
