"""Benchmark: communication to reach a target loss, side by side, for gradient compression, data
quantization and federated optimisation, on IID and non-IID (Dirichlet label skew) shards, under the same
seeded stragglers.

One command, one process (``LocalCluster`` worker threads; the injected delays dominate a
worker's compute)::

    python benchmarks/communication.py            # the full run (~6 min on 2 cores)
    python benchmarks/communication.py --quick    # a smoke run (~30 s), writes to /tmp

For every task (digits logistic regression and MLP: partitions ``iid`` and ``dirichlet:0.3``;
the quadratic network of :mod:`codedml.train.quadratic`, a regression: ``iid`` only, every
method's learning rate x 0.04 because the quartic loss diverges at the digits rates), every method trains for the same number of communication rounds (a round
is one model version at the root: a step of ``sync``, a round of FedAvg / FSVRG / DANE) with
the same shards, the same per-(rank, job) ``ShiftedExponential`` delays (fault seed
``--fault-seed``), and the same initial model. Reported per method: worker-to-root bits to
reach the target loss (and as a ratio to ``sync`` float32 in the same run), rounds and
wall-clock seconds to the target, the loss and test accuracy at the end. The target is the
training loss ``sync`` float32 reaches at half its rounds (first evaluation at or below it);
a method that never reaches it shows ``inf``.

The methods and the tasks are two tables (:data:`METHODS`, :data:`TASKS`): a method is a
function ``(task, partition, args) -> Outcome`` (per-round cumulative bits, wall clock and
loss, final accuracy); a task is a function ``args -> Task`` with the partitions it supports.
Adding a row (e.g. data quantization) or a task (e.g. the quadratic model) is a few lines.

Bits: what reaches the root from the workers (see docs/train.md): float32 gradients ``32 d``
per worker per step for ``sync``; data quantization (Hanna et al. 2020; ``sync`` with
``data_bits = 4``, optionally ``refine_bits = 2`` and the importance rule ``loss:0.2``): the
quantized samples, labels, header and refinement, exactly as counted by
``codedml.train.dataquant``; QSGD with ``b`` bits per coordinate (one sign bit and
``b - 1`` bits of level, ``s = 2^(b-1) - 1`` levels) plus a 32-bit norm; FedAvg one float32
model per selected client per round; FSVRG and DANE two ``d``-vectors per client per round
(the gradient for the global-gradient phase and the local model), FSVRG's frequency counts
once. The federated methods drop, per phase, the clients that have not reported within
``--deadline`` seconds; ``sync`` and QSGD wait for every worker. Outputs: a table on stdout,
``benchmarks/results/communication.json`` (with machine info) and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few rounds, logreg only")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=60, help="communication rounds per method")
    ap.add_argument("--shift", type=float, default=0.01)
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--deadline", type=float, default=0.06,
                    help="federated round deadline in seconds (0: wait for every client)")
    ap.add_argument("--alpha", type=float, default=0.3, help="Dirichlet concentration of the non-IID shards")
    ap.add_argument("--tasks", default="logreg,mlp,quadratic")
    ap.add_argument("--methods", default="", help="comma-separated subset of the methods (default all)")
    ap.add_argument("--fault-seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (the PNG goes next to it)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds = min(a.rounds, 12)
        a.tasks = "logreg" if a.tasks == "logreg,mlp,quadratic" else a.tasks
        a.workers = min(a.workers, 4)
    if a.out is None:
        a.out = (Path("/tmp/communication_quick.json") if a.quick else RESULTS / "communication.json")
    return a


# ------------------------------------------------------------------ the outcome of one run
@dataclass
class Outcome:
    """Per round ``r = 1..R``: cumulative worker-to-root bits, wall clock and training loss;
    the test accuracy and training loss at the end."""

    bits: list[int]
    wall: list[float]
    loss: list[float]
    accuracy: float
    final_loss: float
    dropped: int = 0

    def to_target(self, target: float) -> dict[str, float]:
        for r, (b, t, l) in enumerate(zip(self.bits, self.wall, self.loss), start=1):
            if l <= target:
                return {"bits": float(b), "rounds": float(r), "wall": float(t)}
        return {"bits": math.inf, "rounds": math.inf, "wall": math.inf}


def _run(task, cfg, a) -> Outcome:
    from codedml.faults import ShiftedExponential
    from codedml.train import train

    res = train(task, cfg, local=a.workers, faults=ShiftedExponential(a.shift, a.scale),
                fault_seed=a.fault_seed)
    bits = np.cumsum([m["bits"] for m in res.metrics]).tolist()
    return Outcome([int(b) for b in bits], [float(m["wall"]) for m in res.metrics],
                   [float(m["loss"]) for m in res.metrics], float(res.accuracy), float(res.loss),
                   sum(len(m.get("dropped", [])) for m in res.metrics))


def _cfg(a, partition, **kw):
    """The run's TrainConfig; ``lr`` is scaled by the task's ``lr_scale``."""
    from codedml.train import TrainConfig

    base = dict(steps=a.rounds, eval_every=1, timeout=60, partition=partition, seed=0,
                keep_metrics=a.rounds)  # the curves use every round's record
    kw = {**base, **kw}
    kw["lr"] = kw.get("lr", 0.5) * getattr(a, "lr_scale", 1.0)
    return TrainConfig(**kw)


# ------------------------------------------------------------------ methods
Method = Callable[[object, str, argparse.Namespace], Outcome]
#: name -> (label, run). Learning rates were set once by hand on digits logreg (IID) and used
#: for every task and partition.
METHODS: dict[str, tuple[str, Method]] = {}


def method(name: str, label: str) -> Callable[[Method], Method]:
    def reg(fn: Method) -> Method:
        METHODS[name] = (label, fn)
        return fn
    return reg


@method("sync", "sync float32")
def _sync(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16), a)


def qsgd_levels(bits: int) -> int:
    """Levels ``s`` so that one coordinate costs ``bits`` (a sign bit and ``bits - 1`` of level)."""
    return 2 ** (bits - 1) - 1


@method("qsgd8", "QSGD 8 bits")
def _qsgd8(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16, qsgd=qsgd_levels(8)), a)


@method("qsgd4", "QSGD 4 bits")
def _qsgd4(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16, qsgd=qsgd_levels(4)), a)


@method("fedavg", "FedAvg (C=0.5, E=2, B=16)")
def _fedavg(task, partition, a):
    return _run(task, _cfg(a, partition, policy="fedavg", lr=0.2, batch=16, fraction=0.5,
                           local_epochs=2, round_deadline=a.deadline), a)


@method("fsvrg", "FSVRG (B=8, h=1)")
def _fsvrg(task, partition, a):
    return _run(task, _cfg(a, partition, policy="fsvrg", lr=1.0, batch=8,
                           round_deadline=a.deadline), a)


@method("dane", "DANE (10 local steps, mu=0.1)")
def _dane(task, partition, a):
    return _run(task, _cfg(a, partition, policy="dane", lr=0.5, batch=0, local_steps=10,
                           dane_mu=0.1, round_deadline=a.deadline), a)


@method("data4", "data quantization 4 bits")
def _data4(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16, data_bits=4), a)


@method("data4_r2", "data quantization 4 bits + refinement 2 bits")
def _data4_r2(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16, data_bits=4,
                           refine_bits=2), a)


@method("data4_loss", "data quantization 4 bits + importance loss:0.2")
def _data4_loss(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16, data_bits=4,
                           importance="loss:0.2"), a)


@method("data4_r2_loss", "data quantization 4 bits + refinement 2 + importance loss:0.2")
def _data4_r2_loss(task, partition, a):
    return _run(task, _cfg(a, partition, policy="sync", lr=0.5, batch=16, data_bits=4,
                           refine_bits=2, importance="loss:0.2"), a)


# ------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class TaskSpec:
    build: Callable[[argparse.Namespace], object]
    partitions: tuple[str, ...] = ("iid", "noniid")  # "noniid": Dirichlet(--alpha) label skew
    lr_scale: float = 1.0  # every method's learning rate is multiplied by this


def _digits(model):
    def build(a):
        from codedml.train import digits_task

        return digits_task(model, hidden=32, seed=0)
    return build


def _quadratic(a):
    from codedml.train import quadratic_task

    return quadratic_task(dim=10, rank=2, samples=1000, seed=0)


TASKS: dict[str, TaskSpec] = {
    "logreg": TaskSpec(_digits("logreg")),
    "mlp": TaskSpec(_digits("mlp")),
    # regression: no labels to skew, so IID only. The quartic loss needs a small step: with 6
    # workers and batch 16, sync at lr 0.05 (scale 0.1) diverged (loss 5e5) and 0.02 converges
    # linearly (1e-3 in 60 rounds, as do QSGD and data quantization), so every method's lr x 0.04
    "quadratic": TaskSpec(_quadratic, ("iid",), lr_scale=0.04),
}


def _partition(a, name: str) -> str:
    return "iid" if name == "iid" else f"dirichlet:{a.alpha:g}"


# ------------------------------------------------------------------ main
def main(argv=None):
    a = _args(argv)
    from _machine import machine_info

    info = machine_info()
    names = [m for m in (a.methods.split(",") if a.methods else METHODS)]
    for n in names:
        if n not in METHODS:
            raise SystemExit(f"--methods: unknown method {n!r}; known: {list(METHODS)}")
    if "sync" not in names:
        names = ["sync"] + names  # the target and the ratios need it
    t0 = time.perf_counter()
    rows, curves = [], []
    for tname in a.tasks.split(","):
        spec = TASKS[tname]
        task = spec.build(a)
        a.lr_scale = spec.lr_scale
        for pname in spec.partitions:
            partition = _partition(a, pname)
            outs = {}
            for m in names:
                t = time.perf_counter()
                outs[m] = METHODS[m][1](task, partition, a)
                print(f"  {tname:9s} {pname:6s} {m:13s}: loss {outs[m].final_loss:.4f}, acc "
                      f"{outs[m].accuracy:.3f}, {outs[m].bits[-1] / 8e6:.2f} MB in "
                      f"{time.perf_counter() - t:.1f} s", flush=True)
            half = max(1, a.rounds // 2)
            target = min(outs["sync"].loss[:half])
            base = outs["sync"].to_target(target)
            for m in names:
                o = outs[m]
                tt = o.to_target(target)
                rows.append({
                    "task": tname, "partition": pname, "partition_spec": partition, "method": m,
                    "label": METHODS[m][0], "target_loss": target,
                    "bits_to_target": tt["bits"], "rounds_to_target": tt["rounds"],
                    "wall_to_target_s": tt["wall"],
                    "bits_ratio_to_sync": tt["bits"] / base["bits"],
                    "rounds_ratio_to_sync": tt["rounds"] / base["rounds"],
                    "wall_ratio_to_sync": tt["wall"] / base["wall"],
                    "final_loss": o.final_loss, "accuracy": o.accuracy,
                    "bits_total": o.bits[-1], "dropped": o.dropped})
                curves.append({"task": tname, "partition": pname, "method": m,
                               "bits": o.bits, "wall": o.wall, "loss": o.loss})
    elapsed = time.perf_counter() - t0
    _table(rows, a)
    doc = {"benchmark": "communication", "machine": info, "elapsed_s": elapsed,
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "lr_scale"},
           "methods": {m: METHODS[m][0] for m in names}, "table": rows, "curves": curves}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1, default=lambda x: None))
    _plot(curves, rows, a)
    print(f"wrote {a.out} and .png in {elapsed:.0f} s")


def _fmt(x: float, kind: str) -> str:
    if math.isinf(x):
        return "inf"
    return {"bits": f"{x / 8e3:.1f} kB", "ratio": f"{x:.3f}", "r": f"{x:.0f}", "s": f"{x:.2f}"}[kind]


def _table(rows, a):
    print(f"\n{a.workers} workers, {a.rounds} rounds per method, delays ShiftedExponential("
          f"shift={a.shift}, scale={a.scale}) per (rank, job), fault seed {a.fault_seed}; "
          f"federated deadline {a.deadline} s; non-IID = dirichlet:{a.alpha:g}")
    print(f"{'task':9s} {'part':6s} {'method':13s} {'target':>7s} {'to target':>10s} {'/sync':>7s} "
          f"{'rounds':>6s} {'/sync':>6s} {'wall s':>7s} {'/sync':>6s} {'loss':>7s} {'acc':>6s}")
    for r in rows:
        print(f"{r['task']:9s} {r['partition']:6s} {r['method']:13s} {r['target_loss']:7.4f} "
              f"{_fmt(r['bits_to_target'], 'bits'):>10s} {_fmt(r['bits_ratio_to_sync'], 'ratio'):>7s} "
              f"{_fmt(r['rounds_to_target'], 'r'):>6s} {_fmt(r['rounds_ratio_to_sync'], 'ratio'):>6s} "
              f"{_fmt(r['wall_to_target_s'], 's'):>7s} {_fmt(r['wall_ratio_to_sync'], 'ratio'):>6s} "
              f"{r['final_loss']:7.4f} {r['accuracy']:6.3f}")


def _plot(curves, rows, a):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((c["task"], c["partition"]) for c in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (t, p) in zip(axes[0], panels):
        for c in curves:
            if (c["task"], c["partition"]) == (t, p):
                ax.plot(np.asarray(c["bits"]) / 8e6, c["loss"], label=c["method"], lw=1.2)
        tgt = next(r["target_loss"] for r in rows if (r["task"], r["partition"]) == (t, p))
        ax.axhline(tgt, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("worker-to-root MB (cumulative)")
        ax.set_ylabel("training loss")
        ax.set_title(f"{t}, {p}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
