"""``python -m codedml train``: data-parallel SGD on scikit-learn's digits.

Exit codes: 0 trained (final loss finite), 1 training diverged (non-finite loss), 2 bad
usage or configuration, 3 training stopped by faults the policy does not tolerate (e.g. a
crashed worker under ``sync``).

Run under mpiexec (``bash launch/mpirun.sh N train ...``: rank 0 the root, the others
workers) or with ``--local N`` worker threads. Configuration: flag > ``CODEDML_TRAIN_<KEY>``
environment variable > the ``[train]`` table of a TOML file (``--config``) > default; unknown
keys (and unknown ``CODEDML_TRAIN_*`` variables) are errors. Failure models come from the
``[faults]`` table and the failure flags, as for ``run``; by default there are none.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .._config import add_dataclass_flags, check_table, load_toml, resolve, world
from ..errors import ConfigurationError, TrainingError
from .config import POLICIES, TrainConfig

__all__ = ["TrainJob", "cmd_train", "load_train_config"]

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3

#: ``--help`` text of every flag (the fields of TrainConfig and TrainJob).
HELP = {
    "policy": "one of " + ", ".join(POLICIES) + " (default sync)",
    "k": "K of the K-policies (0: workers - 1); adasync's K_0 (0: 1)",
    "steps": "optimizer updates to run (default 100)",
    "max_time": "stop after this many seconds of training (0: no limit)",
    "lr": "learning rate of torch.optim.SGD at the root (default 0.5)",
    "momentum": "momentum of torch.optim.SGD at the root (default 0)",
    "batch": "mini-batch per gradient, per partition under gradient coding (0: whole shard)",
    "staleness_lr": "inverse (a gradient of staleness tau steps lr/(1+tau)), none, or norm:C "
                    "(Dutta et al.: rate min(C/||w_j - w_tau(j)||^2, lr))",
    "partition": "iid or dirichlet:ALPHA (label skew, ALPHA > 0; small ALPHA: few classes per worker)",
    "fraction": "fedavg: client fraction C in (0, 1] per round",
    "local_epochs": "fedavg: local epochs E per round (mini-batch --batch, 0: whole shard)",
    "local_steps": "dane: local gradient steps on the subproblem per round",
    "dane_eta": "dane: eta of the global-gradient correction (> 0)",
    "dane_mu": "dane: mu of the proximal term (>= 0)",
    "round_deadline": "federated: seconds a round waits before dropping clients (0: wait for all)",
    "adasync_every": "adasync: steps between two updates of K",
    "scheme": "gradient code: cyclic or fractional_repetition",
    "gc_stragglers": "s of the gradient code: the full gradient from any workers - s",
    "gc_errors": "corrupt gradient-code messages to locate per step",
    "qsgd": "QSGD levels s on the worker-to-root path (0: full precision)",
    "data_bits": "data quantization: workers send their mini-batch's samples with B bits per "
                 "coordinate (stochastic, unbiased) and the root computes the gradient "
                 "(1..32; 0: off, send gradients)",
    "refine_bits": "with --data-bits: also send the gradient correction at the true samples "
                   "with QSGD at R level bits, 2^R-1 levels (1..15; 0: none)",
    "importance": "with --data-bits: send only the samples a rule selects: loss:THRESH, "
                  "norm:THRESH (per-sample loss or gradient norm above THRESH) or "
                  "budget:FRACTION (that fraction of the mini-batch, largest losses first)",
    "suspect": "drop or keep a gradient flagged corrupt outside gradient coding (reported either way)",
    "outlier": "a gradient norm above this times the median of recent ones is flagged (> 1)",
    "timeout": "seconds without the results a step needs before training stops",
    "eval_every": "evaluate training loss and test accuracy every this many steps",
    "keep_metrics": "per-step records the run's report keeps in memory, the latest ones "
                    "(--metrics keeps every one)",
    "checkpoint": "checkpoint path (written atomically)",
    "checkpoint_every": "checkpoint interval in steps (0: none)",
    "resume": "checkpoint to resume from",
    "seed": "seed of mini-batches and quantisation",
    "data_seed": "seed of the data partitioning",
    "model": "logreg or mlp (on scikit-learn's digits), or quadratic (y = sum_j (w_j.x)^2, a "
             "planted teacher on synthetic Gaussian data; try --lr 0.02)",
    "quad_dim": "quadratic model: input dimension d",
    "quad_rank": "quadratic model: rank r of the teacher (and units of the student)",
    "quad_samples": "quadratic model: synthetic samples (80%% train, 20%% test)",
    "hidden": "hidden units of the mlp",
    "dtype": "float32 or float64",
    "local": "run with N worker threads in this process instead of under mpiexec",
    "out": "JSON summary path",
    "metrics": "JSON-lines path: one record per step",
    "plot": "PNG path for the loss and accuracy curves (empty: none)",
    "progress": "progress bar on the root",
}


@dataclass(frozen=True)
class TrainJob:
    """What the command trains and where it writes (also keys of the ``[train]`` table)."""

    model: str = "logreg"
    hidden: int = 32
    quad_dim: int = 20
    quad_rank: int = 2
    quad_samples: int = 2000
    dtype: str = "float32"
    local: int = 0
    out: str = "out/train.json"
    metrics: str = "out/train.jsonl"
    plot: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in ("logreg", "mlp", "quadratic"):
            raise ConfigurationError(f"`model` must be 'logreg', 'mlp' or 'quadratic', got {self.model!r}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigurationError(f"`dtype` must be 'float32' or 'float64', got {self.dtype!r}")
        from .._config import MAX_LOCAL, check_int

        check_int("hidden", self.hidden, 1)
        check_int("local", self.local, 0, MAX_LOCAL, why=" (0: run under mpiexec)")
        check_int("quad_dim", self.quad_dim, 1, 100_000)
        check_int("quad_rank", self.quad_rank, 1, self.quad_dim, why=f" (quad_dim={self.quad_dim})")
        check_int("quad_samples", self.quad_samples, 2, 10_000_000)


def train_memory_bytes(job: TrainJob, workers: int) -> int:
    """A generous estimate of the memory of a run: the model's parameters (digits: 64 inputs,
    10 classes) held as the root's weights, gradients, momentum and float64 flat copies, and
    once more per worker (replicas, gradients, messages)."""
    if job.model == "quadratic":  # the student, plus the synthetic data on every rank
        d = job.quad_rank * job.quad_dim
        return int(8 * d * (8 + 4 * workers) + 8 * job.quad_samples * (job.quad_dim + 1) * (1 + workers))
    d = 64 * 10 + 10 if job.model == "logreg" else 64 * job.hidden + job.hidden + 10 * job.hidden + 10
    return int(8 * d * (8 + 4 * workers))


def load_train_config(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``([train] table, [faults] table)`` of a TOML file; unknown tables/keys are errors."""
    if not path:
        return {}, {}
    data = load_toml(path)
    check_table(path, data, {"train", "faults"})
    table = data.get("train", {})
    check_table(f"[train] of {path}", table,
                {f.name for f in fields(TrainConfig)} | {f.name for f in fields(TrainJob)})
    faults = data.get("faults", {})
    if not isinstance(faults, dict):
        raise ConfigurationError(f"[faults] of {path} must be a table of keys, got {faults!r}")
    return table, faults


def _loss_points(metrics: Any) -> list[tuple[float, float]]:
    """(wall, loss) of every evaluated step among ``metrics`` records (an iterable of dicts,
    or of JSON lines as the metrics file holds them)."""
    pts = []
    for m in metrics:
        if isinstance(m, str):
            m = json.loads(m)
        if m["loss"] is not None:
            pts.append((float(m["wall"]), float(m["loss"])))
    return pts


def _plot(pts: list[tuple[float, float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts])
    ax.set_xlabel("wall clock (s)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.set_yscale("log")
    fig.tight_layout()
    from .._io import atomic_save

    atomic_save(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def cmd_train(argv: list[str]) -> int:
    """Data-parallel SGD (sync, K-sync, K-batch-sync, async, K-async, K-batch-async,
    gradient coding, AdaSync) and federated optimisation (FedAvg, FSVRG, DANE) over IID or
    Dirichlet label-skewed shards, under mpiexec or --local N, with injected failures."""
    from .._config import check_memory, on_root_then_everywhere
    from .._io import check_writable
    from ..faults import add_fault_flags, check_fault_ranks, faults_from_config, faults_from_flags
    from .trainer import check_checkpoint, load_checkpoint

    ap = argparse.ArgumentParser(prog="python -m codedml train", description=cmd_train.__doc__)
    ap.add_argument("--config", help="TOML file with [train] and [faults] tables")
    add_dataclass_flags(ap, TrainConfig, HELP)
    add_dataclass_flags(ap, TrainJob, HELP)
    add_fault_flags(ap)
    ns = ap.parse_args(argv)
    table, fault_table = load_train_config(ns.config)
    known = [f.name.upper() for f in fields(TrainConfig)] + [f.name.upper() for f in fields(TrainJob)]
    cfg = resolve(TrainConfig, ns, "CODEDML_TRAIN_", {k: v for k, v in table.items()
                                                      if k in {f.name for f in fields(TrainConfig)}},
                  env_known=known)
    job = resolve(TrainJob, ns, "CODEDML_TRAIN_", {k: v for k, v in table.items()
                                                   if k in {f.name for f in fields(TrainJob)}},
                  env_known=known)
    faults, fseed = faults_from_config(faults_from_flags(ns, fault_table))
    # Every value is checked before any work starts (issue 10, points 6 and 7).
    comm, n = world(job.local, "train")
    check_fault_ranks(faults, n)
    cfg.check_workers(n)
    if cfg.policy in ("ksync", "kasync", "adasync") and not 1 <= cfg.k_for(n) <= n:
        raise ConfigurationError(f"`k` must be between 1 and workers={n}, got {cfg.k_for(n)}")
    sizes = (f"`--quad-dim` {job.quad_dim}, `--quad-rank` {job.quad_rank}, `--quad-samples` "
             f"{job.quad_samples}" if job.model == "quadratic" else f"`--hidden` {job.hidden}")
    check_memory(f"`--model` {job.model} with {sizes} and {n} workers", train_memory_bytes(job, n))

    from .task import digits_task

    if job.model == "quadratic":
        from .quadratic import quadratic_task

        task = quadratic_task(job.quad_dim, job.quad_rank, job.quad_samples, seed=cfg.seed,
                              dtype=job.dtype)
    else:
        task = digits_task(job.model, hidden=job.hidden, seed=cfg.seed, dtype=job.dtype)

    def root_checks() -> None:
        for flag, path in (("--out", job.out), ("--metrics", job.metrics), ("--plot", job.plot),
                           ("--checkpoint", cfg.checkpoint)):
            if path:
                check_writable(flag, path)
        if cfg.resume:
            check_checkpoint(load_checkpoint(cfg.resume), cfg.resume, task, cfg)

    on_root_then_everywhere(comm, root_checks)
    from .trainer import train
    try:
        res = train(task, cfg, local=job.local, comm=comm, faults=faults, fault_seed=fseed,
                    metrics=job.metrics or None, progress=job.progress)
    except TrainingError as exc:
        print(f"training stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    if res is None:  # an MPI worker rank
        return EXIT_OK
    print(f"codedml train: {task.name}, policy {cfg.policy}, {res.workers} workers "
          f"({'threads' if job.local else 'MPI ranks'}), faults {faults!r}")
    acc = (f"loss {res.loss:.4f}, test accuracy {res.accuracy:.3f}" if math.isfinite(res.accuracy)
           else f"loss {res.loss:.3e} (regression)")
    print(f"  {res.steps} steps in {res.wall:.2f} s: {acc}; "
          f"{res.gradients} {'messages' if cfg.data_bits else 'gradients'} received, {res.bits_sent} bits "
          f"({res.bits_sent / max(1, res.bits_full_precision):.3f} of full precision)")
    if res.suspects:
        print(f"  suspect gradients ({cfg.suspect}): {res.suspects[:5]}")
    if res.corrected:
        print(f"  corrupt messages located by the gradient code: {res.corrected[:5]}")
    if res.crashed:
        print(f"  crashed ranks (tolerated): {res.crashed}")
    report = {"job": asdict(job), "faults": repr(faults), "fault_seed": fseed, **res.as_dict()}
    if job.out:
        from .._io import atomic_write_json

        atomic_write_json(job.out, report, indent=1, default=str)
        print(f"  report: {job.out}; per-step metrics: {job.metrics}")
    if job.plot:
        title = f"{task.name} {cfg.policy}"
        if job.metrics:  # every step's record (the in-memory ones are the latest keep_metrics)
            with open(job.metrics) as f:
                pts = _loss_points(f)
        else:
            pts = _loss_points(res.metrics)
            if res.dropped.get("metrics"):
                title += f" (the latest {len(res.metrics)} steps: --keep-metrics)"
        _plot(pts, job.plot, title)
        print(f"  plot: {job.plot}")
    return EXIT_OK if math.isfinite(res.loss) else EXIT_DIVERGED
