"""Benchmark: coded vs uncoded model parallelism for torch layers (CodedLinear), under mpiexec.

Runs in ONE ``mpiexec`` job (rank 0 the root, 8 workers expected)::

    source launch/env.sh && .venv/bin/mpiexec --oversubscribe -n 9 .venv/bin/python benchmarks/coded_layers.py [--quick]

Part 1, training curves. The digits MLP (64-64-64-10, float32) of :mod:`codedml.nn.digits`,
trained with SGD (lr 0.05, momentum 0.9, weight decay 1e-4, batch 64, same seed and batches)
as

* ``coded``    CodedLinear, ``MDSCode(8, 3)``, ``errors=1`` (forward from 5 of 8 workers,
  backward from 7 of 8), scrub every 10 steps;
* ``uncoded``  CodedLinear with ``ReplicationCode(8, 8)``: one row block per worker, no
  redundancy (uncoded model parallelism);
* ``plain``    ``nn.Linear`` at the root (no cluster): the fault-free reference accuracy;

each fault-free and under faults: every worker result gets an exponent bit flip with
probability 1%, every stored-block update one with probability 0.2%, and every worker result is
delayed by a shifted exponential (shift 0, mean ``--delay`` s). Test accuracy after every epoch
against wall-clock time.

Part 2, per-step time (forward + backward + SGD update of one ``D x D`` layer on a batch of
``B``; medians over repeats): CodedLinear vs uncoded model parallelism vs ``nn.Linear`` at the
root, fault-free and with one straggling worker (``--straggle`` s on every result).

Part 3, any torch optimizer (``--parts optimizers``): the per-step time of the same ``D x D``
coded layer trained by ``CodedSGD`` (the fully coded step: only ``enc(dY^T)_w`` and ``X`` travel,
the workers update their blocks and momentum) against torch optimizers stepping the root-side
weight (``torch.optim.SGD`` with momentum, ``torch.optim.Adam``), whose change reaches the workers
as a re-encode of the whole weight; ``nn.Linear`` with Adam at the root for reference. Ratios to
``CodedSGD`` measured in the same run, fault-free; written to ``coded_layers_optimizers.{json,png}``.

The machine has 2 cores shared by 9 ranks: absolute times mean little, ratios measured in the
same run do (GUIDE section 5). Outputs: a table on stdout, ``benchmarks/results/
coded_layers.json`` and ``coded_layers.png``.
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

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
from mpi4py import MPI  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's codedml
from _machine import machine_info  # noqa: E402

from codedml.codes import ReplicationCode  # noqa: E402
from codedml.faults import FixedStragglers, ShiftedExponential, SoftErrors, StorageErrors  # noqa: E402
from codedml.nn import CodedLinear, CodedSGD  # noqa: E402
from codedml.nn.digits import build_mlp, load_digits_split, train_mlp  # noqa: E402
from codedml.runtime.mpi import MPICluster  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
EVAL_EVERY = 7  # test accuracy every 7 steps (about 3 points per epoch of 22 steps)


def training_faults(delay: float):
    return (SoftErrors("exponent", 0.01) + StorageErrors("exponent", 0.002) +
            ShiftedExponential(shift=0.0, scale=delay))


def step_time(layer: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])  # the first step warms up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and a smaller layer")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--delay", type=float, default=0.01, help="mean straggler delay in part 1 (s)")
    ap.add_argument("--straggle", type=float, default=0.5, help="straggler delay in part 2 (s)")
    ap.add_argument("--dim", type=int, default=None, help="layer size D in part 2")
    ap.add_argument("--batch", type=int, default=256, help="batch B in part 2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--parts", default="curves,step,optimizers",
                    help="comma-separated parts to run: curves, step, optimizers")
    ap.add_argument("--out", type=Path, default=RESULTS / "coded_layers.json",
                    help="the JSON of parts 1-2 (PNG beside it; part 3 writes STEM_optimizers.json "
                         "and .png beside it); the README renders the default")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"curves", "step", "optimizers"}:
        ap.error(f"--parts must name curves, step, optimizers, got {args.parts!r}")
    epochs = args.epochs or (3 if args.quick else 8)
    dim = args.dim or (512 if args.quick else 1536)
    comm = MPI.COMM_WORLD
    n = comm.Get_size() - 1
    root = comm.Get_rank() == 0
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)  # overflow in the uncoded faulty runs
    out: dict = {"workers": n, "epochs": epochs, "curves": [], "step_time": [], "optimizer_step": [],
                 "faults": {"soft_errors": "exponent bit flip, p=0.01 per worker result",
                            "storage_errors": "exponent bit flip, p=0.002 per stored-block update",
                            "stragglers": f"shifted exponential, shift 0, mean {args.delay} s per result"}}
    data = load_digits_split() if root else None

    # ---------------------------------------------------------------- part 1: curves
    if root and "curves" in parts:
        res = train_mlp(build_mlp("plain"), data, epochs=epochs, kind="plain", eval_every=EVAL_EVERY)
        out["curves"].append(dict(res.as_dict(), faults=False))
    for faulty in ((False, True) if "curves" in parts else ()):
        with MPICluster(comm, faults=training_faults(args.delay) if faulty else None, seed=1,
                        timeout=120) as cluster:
            if cluster is None:
                continue
            for kind in ("coded", "uncoded"):
                model = build_mlp(kind, cluster, errors=1)
                res = train_mlp(model, data, epochs=epochs, scrub_every=10, progress=True,
                                kind=f"{kind}{' +faults' if faulty else ''}", eval_every=EVAL_EVERY)
                out["curves"].append(dict(res.as_dict(), kind=kind, faults=faulty))
                for m in model.modules():
                    if isinstance(m, CodedLinear):
                        m.release()

    # ---------------------------------------------------------------- part 2: step time
    for straggle in ((0.0, args.straggle) if "step" in parts else ()):
        faults = FixedStragglers([1], straggle) if straggle else None
        with MPICluster(comm, faults=faults, seed=2, timeout=300) as cluster:
            if cluster is None:
                continue
            x = torch.randn(args.batch, dim)
            for kind in ("plain", "uncoded", "coded"):
                torch.manual_seed(0)
                if kind == "plain":
                    layer = torch.nn.Linear(dim, dim)
                    opt = torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9)
                else:
                    code = ReplicationCode(n, n) if kind == "uncoded" else None
                    layer = CodedLinear(dim, dim, cluster=cluster, code=code, errors=0)
                    opt = CodedSGD(layer, lr=1e-3, momentum=0.9)
                t = step_time(layer, opt, x, args.repeats)
                out["step_time"].append({"kind": kind, "straggler_s": straggle, "dim": dim,
                                         "batch": args.batch, "median_step_s": t})
                print(f"  step time {kind:8s} straggler {straggle:.2f} s: {t * 1e3:8.1f} ms", flush=True)
                if isinstance(layer, CodedLinear):
                    layer.release()
    # ---------------------------------------------------------------- part 3: any optimizer
    if "optimizers" in parts:
        with MPICluster(comm, seed=3, timeout=300) as cluster:
            if cluster is not None:
                x = torch.randn(args.batch, dim)
                for kind in ("CodedSGD", "SGD", "Adam", "plain Adam"):
                    torch.manual_seed(0)
                    if kind == "plain Adam":
                        layer = torch.nn.Linear(dim, dim)
                    else:
                        layer = CodedLinear(dim, dim, cluster=cluster, errors=0)
                    if kind == "CodedSGD":
                        opt = CodedSGD(layer, lr=1e-3, momentum=0.9)
                    elif kind == "SGD":
                        opt = torch.optim.SGD(layer.parameters(), lr=1e-3, momentum=0.9)
                    else:
                        opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
                    t = step_time(layer, opt, x, args.repeats)
                    row = {"optimizer": kind, "dim": dim, "batch": args.batch, "median_step_s": t}
                    if isinstance(layer, CodedLinear):
                        row["reencodes"] = layer.stats["reencodes"]
                        row["coded_updates"] = layer.stats["updates"]
                        layer.release()
                    out["optimizer_step"].append(row)
                    print(f"  step time {kind:10s}: {t * 1e3:8.1f} ms", flush=True)
    if not root:
        return 0

    # ---------------------------------------------------------------- report
    out["machine"] = machine_info()
    out["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if isinstance(v, (int, float, str, bool, type(None), Path))}
    print("\nTraining the digits MLP (test accuracy after the last epoch)")
    print(f"{'model':10s} {'faults':7s} {'accuracy':>9s} {'wall s':>8s} {'corrected':>9s} "
          f"{'skipped':>8s} {'retried':>8s} {'healed':>7s} {'repaired':>8s} {'searched':>8s}  note")
    for c in out["curves"]:
        st = c["stats"] or {}
        acc = f"{100 * c['final_accuracy']:.1f}%" if c["test_accuracy"] else "-"
        if c["error"]:
            acc = f"stopped at step {c['steps']}"
        wall = f"{c['wall_s'][-1]:.1f}" if c["wall_s"] else "-"
        note = (c["error"] or "")[:70]
        print(f"{c['kind']:10s} {str(c['faults']):7s} {acc:>9s} {wall:>8s} {st.get('corrected', '-'):>9} "
              f"{st.get('skipped', '-'):>8} {st.get('retried', '-'):>8} {st.get('healed', '-'):>7} "
              f"{st.get('repaired', '-'):>8} {st.get('searched', '-'):>8}  {note}")
    base = {r["straggler_s"]: r["median_step_s"] for r in out["step_time"] if r["kind"] == "plain"}
    if out["step_time"]:
        print(f"\nPer-step time, {dim}x{dim} layer, batch {args.batch} (ratio to nn.Linear at the root, fault-free)")
        print(f"{'layer':10s} {'straggler':>9s} {'step ms':>9s} {'ratio':>7s}")
    for r in out["step_time"]:
        r["ratio_to_plain"] = r["median_step_s"] / base[0.0]
        print(f"{r['kind']:10s} {r['straggler_s']:9.2f} {r['median_step_s'] * 1e3:9.1f} {r['ratio_to_plain']:7.2f}")
    if out["optimizer_step"]:
        coded_sgd = next(r["median_step_s"] for r in out["optimizer_step"] if r["optimizer"] == "CodedSGD")
        print(f"\nPer-step time by optimizer, {dim}x{dim} coded layer, batch {args.batch} "
              "(ratio to CodedSGD's coded step)")
        print(f"{'optimizer':12s} {'step ms':>9s} {'ratio':>7s} {'re-encodes':>10s}")
        for r in out["optimizer_step"]:
            r["ratio_to_coded_sgd"] = r["median_step_s"] / coded_sgd
            print(f"{r['optimizer']:12s} {r['median_step_s'] * 1e3:9.1f} {r['ratio_to_coded_sgd']:7.2f} "
                  f"{r.get('reencodes', '-'):>10}")
    # Part 3 has its own JSON (and PNG) beside the main one, so each can be rerun alone.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    opt_out = args.out.with_name(args.out.stem + "_optimizers.json")
    rows = out.pop("optimizer_step")
    if out["curves"] or out["step_time"]:
        args.out.write_text(json.dumps(out, indent=1))
    if rows:
        opt_out.write_text(json.dumps({"workers": n, "optimizer_step": rows, "machine": out["machine"],
                                       "args": out["args"]}, indent=1))
    out["optimizer_step"] = rows
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if out["curves"] or out["step_time"]:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
            for c in out["curves"]:
                if not c["wall_s"]:
                    continue
                style = "-" if c["faults"] else "--"
                label = f"{c['kind']} {'with faults' if c['faults'] else 'fault-free'}"
                if c["error"]:
                    label += " (stopped)"
                a1.plot(c["wall_s"], [100 * a for a in c["test_accuracy"]], style, marker="o", label=label)
            a1.set_xlabel("wall-clock (s)")
            a1.set_ylabel("test accuracy (%)")
            a1.set_title(f"digits MLP, {n} workers")
            a1.legend(fontsize=8)
            kinds = ["plain", "uncoded", "coded"]
            for i, s in enumerate(sorted({r["straggler_s"] for r in out["step_time"]})):
                vals = [next(r["median_step_s"] for r in out["step_time"] if r["kind"] == k and r["straggler_s"] == s)
                        for k in kinds]
                a2.bar([j + 0.4 * i for j in range(3)], [v * 1e3 for v in vals], width=0.4,
                       label=f"straggler {s:.2f} s")
            a2.set_xticks([j + 0.2 for j in range(3)], ["nn.Linear", "uncoded MP", "CodedLinear"])
            a2.set_ylabel("median step time (ms)")
            a2.set_title(f"{dim}x{dim} layer, batch {args.batch}")
            a2.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(args.out.with_suffix(".png"), dpi=110)
        if out["optimizer_step"]:
            rows = out["optimizer_step"]
            fig, a3 = plt.subplots(figsize=(6.5, 4))
            a3.bar(range(len(rows)), [r["ratio_to_coded_sgd"] for r in rows])
            a3.set_xticks(range(len(rows)), [r["optimizer"] for r in rows])
            a3.axhline(1.0, color="grey", lw=0.8)
            a3.set_ylabel("step time / CodedSGD step time")
            a3.set_title(f"any optimizer: {dim}x{dim} coded layer, batch {args.batch}")
            fig.tight_layout()
            fig.savefig(opt_out.with_suffix(".png"), dpi=110)
    except ImportError:  # pragma: no cover
        print("matplotlib not installed: no plot")
    if out["curves"] or out["step_time"]:
        print(f"\nwrote {args.out} and {args.out.with_suffix('.png').name}")
    if rows:
        print(f"wrote {opt_out} and {opt_out.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
