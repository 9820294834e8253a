"""Benchmark: a digits CNN made coded by codedml.nn.convert(), against uncoded model parallelism and torch.

Runs in ONE ``mpiexec`` job (rank 0 the root, 8 workers expected)::

    source launch/env.sh && .venv/bin/mpiexec --oversubscribe -n 9 .venv/bin/python benchmarks/coded_cnn.py [--quick]

The model: scikit-learn's 8x8 digits (no download) through ``Conv2d(1, 8, 3, padding=1)``,
ReLU, ``Conv2d(8, 16, 3, stride=2, padding=1)``, ReLU, ``Linear(256, 10)`` (float32), built
with torch layers after the same seed, then

* ``plain``    as built, at the root (no cluster): the reference;
* ``coded``    ``convert(model, cluster, errors=1)``: every layer's weight encoded with its
  :func:`~codedml.nn.default_code` (``MDSCode(8, 3)`` for 8 workers: forward from 5 of 8
  workers, backward from 7 of 8), one corrupt result corrected per product, a scrub every 10
  steps;
* ``uncoded``  ``convert(model, cluster, code=ReplicationCode(8, 8))``: one row block per
  worker, no redundancy (uncoded model parallelism);

the cluster ones each fault-free and under the faults of ``benchmarks/coded_layers.py``
(imported from it, so both benchmarks inject the same): every worker result gets an exponent
bit flip with probability 1%, every stored-block update one with probability 0.2%, every result
is delayed by a shifted exponential (shift 0, mean ``--delay`` s); fault seed 1 for every run.
Trained with SGD (lr 0.05, momentum 0.9, weight decay 1e-4, batch 64 with the last partial
batch of an epoch dropped, same seed and batches;
``CodedSGD`` for the converted models). Recorded: test accuracy against wall-clock (every 7
steps and after each epoch), the last epoch's mean training loss, the median per-step time
(forward, backward, optimizer step; the evaluations excluded) as a ratio to ``plain``, and the
faults corrected / stragglers skipped / products recomputed / stored blocks repaired.

Optimizers: ``OPTIMIZERS`` maps a name to ``make(model, coded) -> optimizer``; ``--optimizers``
picks some (default: all). ``adam`` is ``torch.optim.Adam(lr 1e-3)`` for all three models: a
coded layer's weight is a parameter that torch optimizers step (issue 12, point 2). Another
optimizer is one more entry.

The machine has 2 cores shared by 9 ranks: absolute times mean little, ratios measured in the
same run do (GUIDE section 5). Outputs: a table on stdout, ``benchmarks/results/coded_cnn.json``
and ``coded_cnn.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
from mpi4py import MPI  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's codedml
from _machine import machine_info  # noqa: E402
from coded_layers import training_faults  # noqa: E402  (the same faults as the MLP benchmark)

from codedml.codes import ReplicationCode  # noqa: E402
from codedml.nn import CodedLinear, CodedSGD, convert  # noqa: E402
from codedml.nn.digits import DigitsData, load_digits_split  # noqa: E402
from codedml.runtime.mpi import MPICluster  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
EVAL_EVERY = 7
STATS = ("forward", "backward", "corrected", "skipped", "retried", "healed", "scrubs", "repaired",
         "searched")


def build_cnn(seed: int = 0) -> nn.Sequential:
    """conv, conv, linear on 8x8 digits given as 64 features (unflattened first)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)),
                         nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def _sgd(model: nn.Module, coded: bool) -> torch.optim.Optimizer:
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-4)
    if coded:
        return CodedSGD(model, scrub_every=10, **kw)
    return torch.optim.SGD(model.parameters(), **kw)


def _adam(model: nn.Module, coded: bool) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3)


OPTIMIZERS: dict[str, Callable[[nn.Module, bool], torch.optim.Optimizer]] = {"sgd": _sgd, "adam": _adam}


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        out = model(X)
    ok = torch.isfinite(out).all(dim=1) & (out.argmax(dim=1) == y)
    return float(ok.double().mean())


def train(model: nn.Module, opt: torch.optim.Optimizer, data: DigitsData, *, epochs: int,
          batch: int = 64, seed: int = 0, label: str = "") -> dict[str, Any]:
    """Mini-batch training with shuffles drawn from ``seed``, the last partial batch of each
    epoch dropped (a batch of 4 in 1348 took a momentum step large enough to cost 30 points of
    accuracy early on); a run the faults defeat stops with its error recorded (a result, not a
    crash)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    steps = n // batch
    loss_fn = nn.CrossEntropyLoss()
    res: dict[str, Any] = {"epochs": [], "wall_s": [], "loss": [], "test_accuracy": [],
                           "step_s": [], "error": None, "steps": 0}
    t0 = time.perf_counter()
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                t = time.perf_counter()
                opt.zero_grad()
                loss = loss_fn(model(data.X_train[idx]), data.y_train[idx])
                loss.backward()
                opt.step()
                res["step_s"].append(time.perf_counter() - t)
                res["steps"] += 1
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                last = s + 1 == steps
                if last or res["steps"] % EVAL_EVERY == 0:
                    res["epochs"].append(epoch if last else epoch - 1 + (s + 1) / steps)
                    res["loss"].append(total / count)
                    res["test_accuracy"].append(_accuracy(model, data.X_test, data.y_test))
                    res["wall_s"].append(time.perf_counter() - t0)
                sys.stdout.write(f"\r  {label}: epoch {epoch}/{epochs} step {res['steps']}/{epochs * steps} "
                                 f"loss {total / count:.4f}")
                sys.stdout.flush()
    except Exception as exc:  # a run the faults defeat is a result, recorded with its cause
        res["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.write("\n")
    res["final_accuracy"] = res["test_accuracy"][-1] if res["test_accuracy"] and not res["error"] else None
    res["median_step_s"] = statistics.median(res["step_s"][1:]) if len(res["step_s"]) > 1 else None
    layers = [m for m in model.modules() if isinstance(m, CodedLinear)]
    res["stats"] = {k: sum(m.stats[k] for m in layers) for k in STATS} if layers else None
    del res["step_s"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs instead of 8")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--delay", type=float, default=0.01, help="mean straggler delay per result (s)")
    ap.add_argument("--optimizers", default=None,
                    help=f"comma-separated, from {sorted(OPTIMIZERS)} (default: all)")
    args = ap.parse_args()
    if args.optimizers is None:
        opts = list(OPTIMIZERS)
    else:
        opts = [o.strip() for o in args.optimizers.split(",") if o.strip()]
        bad = [o for o in opts if o not in OPTIMIZERS]
        if bad or not opts:
            ap.error(f"--optimizers must name some of {sorted(OPTIMIZERS)}, got {args.optimizers!r}")
    epochs = args.epochs or (2 if args.quick else 8)
    comm = MPI.COMM_WORLD
    n = comm.Get_size() - 1
    root = comm.Get_rank() == 0
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)  # overflow in the uncoded faulty runs
    out: dict[str, Any] = {
        "benchmark": "coded_cnn", "workers": n, "epochs": epochs, "quick": args.quick,
        "model": "Conv2d(1,8,3,p=1) ReLU Conv2d(8,16,3,s=2,p=1) ReLU Linear(256,10), float32",
        "faults": {"soft_errors": "exponent bit flip, p=0.01 per worker result",
                   "storage_errors": "exponent bit flip, p=0.002 per stored-block update",
                   "stragglers": f"shifted exponential, shift 0, mean {args.delay} s per result",
                   "seed": 1},
        "optimizers": opts,
        "runs": []}
    if root:
        out["machine"] = machine_info()   # before the runs: the load then is other processes'
    data = load_digits_split() if root else None

    for opt_name in opts:
        if root:
            model = build_cnn()
            res = train(model, OPTIMIZERS[opt_name](model, False), data, epochs=epochs,
                        label=f"plain {opt_name}")
            out["runs"].append(dict(res, kind="plain", optimizer=opt_name, faults=False, code=None))
        for faulty in (False, True):
            with MPICluster(comm, faults=training_faults(args.delay) if faulty else None, seed=1,
                            timeout=120) as cluster:
                if cluster is None:
                    continue
                for kind in ("coded", "uncoded"):
                    if kind == "coded":
                        model = convert(build_cnn(), cluster, errors=1)
                    else:
                        model = convert(build_cnn(), cluster, code=ReplicationCode(n, n))
                    layers = [m for m in model.modules() if isinstance(m, CodedLinear)]
                    label = f"{kind} {opt_name}{' +faults' if faulty else ''}"
                    res = train(model, OPTIMIZERS[opt_name](model, True), data, epochs=epochs, label=label)
                    out["runs"].append(dict(res, kind=kind, optimizer=opt_name, faults=faulty,
                                            code=[repr(m.code) for m in layers]))
                    for m in layers:
                        m.release()
    if not root:
        return 0

    # ---------------------------------------------------------------- report
    out["args"] = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
    base = {r["optimizer"]: r["median_step_s"] for r in out["runs"] if r["kind"] == "plain"}
    for r in out["runs"]:
        b = base.get(r["optimizer"])
        r["step_ratio_to_plain"] = r["median_step_s"] / b if r["median_step_s"] and b else None
    print(f"\nDigits CNN, {n} workers, {epochs} epochs (test accuracy after the last epoch; "
          "step time as a ratio to plain torch with the same optimizer)")
    print(f"{'model':8s} {'opt':5s} {'faults':7s} {'accuracy':>9s} {'loss':>9s} {'step ratio':>10s} {'corrected':>9s} "
          f"{'skipped':>8s} {'retried':>8s} {'repaired':>8s}  note")
    for r in out["runs"]:
        st = r["stats"] or {}
        acc = f"{100 * r['final_accuracy']:.1f}%" if r["final_accuracy"] is not None else f"stop@{r['steps']}"
        ratio = f"{r['step_ratio_to_plain']:.2f}" if r["step_ratio_to_plain"] else "-"
        loss = f"{r['loss'][-1]:.3g}" if r["loss"] else "-"
        print(f"{r['kind']:8s} {r['optimizer']:5s} {str(r['faults']):7s} {acc:>9s} {loss:>9s} {ratio:>10s} "
              f"{st.get('corrected', '-'):>9} {st.get('skipped', '-'):>8} {st.get('retried', '-'):>8} "
              f"{st.get('repaired', '-'):>8}  {(r['error'] or '')[:60]}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coded_cnn.json").write_text(json.dumps(out, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for r in out["runs"]:
            if not r["wall_s"]:
                continue
            label = f"{r['kind']} {r['optimizer']} {'with faults' if r['faults'] else 'fault-free'}"
            if r["error"]:
                label += " (stopped)"
            a1.plot(r["wall_s"], [100 * a for a in r["test_accuracy"]], "-" if r["faults"] else "--",
                    marker="o", label=label)
        a1.set_xlabel("wall-clock (s)")
        a1.set_ylabel("test accuracy (%)")
        a1.set_title(f"digits CNN (conv, conv, linear) via convert(), {n} workers")
        a1.legend(fontsize=7)
        rows = [r for r in out["runs"] if r["step_ratio_to_plain"]]
        a2.bar(range(len(rows)), [r["step_ratio_to_plain"] for r in rows],
               color=["tab:red" if r["faults"] else "tab:blue" for r in rows])
        a2.set_xticks(range(len(rows)), [f"{r['kind']}\n{r['optimizer']}{' +f' if r['faults'] else ''}"
                                         for r in rows], fontsize=7)
        a2.axhline(1.0, color="k", lw=0.5)
        a2.set_ylabel("median step time / plain torch")
        a2.set_title("per-step time (red: with faults)")
        fig.tight_layout()
        fig.savefig(RESULTS / "coded_cnn.png", dpi=110)
    except ImportError:  # pragma: no cover
        print("matplotlib not installed: no plot")
    print(f"\nwrote {RESULTS / 'coded_cnn.json'} and coded_cnn.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
