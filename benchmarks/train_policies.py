"""Benchmark: loss versus wall clock of every ``codedml.train`` policy under shifted-exponential
stragglers on scikit-learn's digits (logistic regression and a small MLP), with torch DDP
(gloo) under the same injected delays side by side.

Two jobs, one after the other: the policies in one ``mpiexec`` job (rank 0 the root, the others
workers), then the DDP baseline in its own job, which reads the first job's JSON, runs DDP with
the same settings and the same per-repeat fault seeds, and rewrites the JSON, table and plot::

    bash launch/mpirun.sh 7 benchmarks/train_policies.py [--budget 10] [--repeats 1]
    python benchmarks/train_policies.py --ddp-baseline

A smoke run of a few seconds (writes elsewhere)::

    bash launch/mpirun.sh 4 benchmarks/train_policies.py --budget 0.5 --repeats 2 --models logreg --out /tmp/tp.json
    python benchmarks/train_policies.py --ddp-baseline --out /tmp/tp.json

Setting (Dutta, Wang, Joshi, AISTATS 2018): every gradient request to worker rank ``r`` that is
the runtime's job ``j`` is delayed by ``shift + Exp(scale)`` seconds drawn from
``ShiftedExponential`` seeded per (rank, job) (``fault_for(model, seed, r, j).delay``); the
delay (tens of ms) dominates a worker's gradient (about 1 ms), so the 2-core machine's
oversubscription matters little. Every policy trains for the same wall-clock budget with the
same learning rate, mini-batch size and data partitioning; K = n/2 for the K-policies,
``s = 2`` for the cyclic gradient code.

DDP baseline: ``torch.multiprocessing.spawn`` of ``n`` processes (gloo on 127.0.0.1), in a job
of its own (``--ddp-baseline``, after the ``mpiexec`` job has ended, so no idle MPI rank shares
the cores with it). DDP rank ``w`` holds partition ``w``, draws the same mini-batches as
codedml's worker ``w`` and sleeps ``fault_for(model, seed, w + 1, step).delay`` before its
gradient, with ``seed = fault_seed(args, repeat)``, the seed the policies of that repeat used:
the delays codedml's ``sync`` sees in the same repeat (one job per step), so DDP is fully
synchronous SGD with an allreduce instead of a parameter server.

Target loss: the loss ``sync`` reaches at half its budget (first evaluation at or below it);
time to target is reported per policy as a ratio to ``sync`` (same run). Outputs: a table on
stdout, ``benchmarks/results/train_policies.json`` (with machine info) and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's codedml

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
POLICY_ORDER = ["sync", "ksync", "kbatch_sync", "async", "kasync", "kbatch_async", "gradient_coding"]


def _args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=10.0, help="wall-clock seconds per run")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--shift", type=float, default=0.02)
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", default="logreg,mlp")
    ap.add_argument("--fault-seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=RESULTS / "train_policies.json",
                    help="JSON path (the PNG goes next to it)")
    ap.add_argument("--ddp-baseline", action="store_true",
                    help="run the DDP baseline (its own job, no mpiexec) against --out's policy runs")
    ap.add_argument("--ddp", type=int, default=0, help="(internal) run the DDP baseline with this many ranks")
    ap.add_argument("--ddp-model", default="logreg")
    ap.add_argument("--ddp-out", default="")
    return ap.parse_args(argv)


def fault_seed(a, rep: int) -> int:
    """The fault seed of repeat ``rep``: every policy and the DDP baseline of that repeat use it."""
    return a.fault_seed + rep


def _task(model):
    from codedml.train import digits_task

    return digits_task(model, hidden=32, seed=0)


def _cfg(policy, n, a):
    from codedml.train import TrainConfig

    k = max(1, n // 2)
    return TrainConfig(policy=policy, k=k, steps=10**6, max_time=a.budget, lr=a.lr, batch=a.batch,
                       gc_stragglers=2, scheme="cyclic", timeout=60, eval_every=1, seed=0,
                       keep_metrics=10**6)  # the curve uses every step; the budget bounds it


# ------------------------------------------------------------------ DDP baseline
def _ddp_rank(rank, world, port, a, out):
    import torch
    import torch.distributed as dist

    from codedml.faults import ShiftedExponential, fault_for
    from codedml.train import partition_indices

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    task = _task(a.ddp_model)
    model = task.root_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr)
    part = partition_indices(len(task.X), world, 0)[rank]
    X, y = torch.from_numpy(task.X[part].copy()), torch.from_numpy(task.y[part].copy())
    faults = ShiftedExponential(a.shift, a.scale)
    curve, stop, step = [], torch.zeros(1), 0
    dist.barrier()
    t0 = time.perf_counter()
    while True:
        rng = np.random.default_rng([0, rank, step, 0])  # codedml's worker draws (seed, w, step, sub)
        sel = torch.from_numpy(rng.choice(len(X), a.batch, replace=False))
        time.sleep(fault_for(faults, a.fault_seed, rank + 1, step).delay)
        opt.zero_grad()
        task.loss_fn(ddp(X[sel]), y[sel]).backward()  # the allreduce averages the gradients
        opt.step()
        step += 1
        if rank == 0:
            with torch.no_grad():
                loss = float(task.loss_fn(model(torch.from_numpy(task.X)), torch.from_numpy(task.y)))
            curve.append((time.perf_counter() - t0, loss))
            stop[0] = float(time.perf_counter() - t0 >= a.budget)
        dist.broadcast(stop, 0)
        if stop[0]:
            break
    if rank == 0:
        Path(out).write_text(json.dumps({"steps": step, "curve": curve}))
    dist.destroy_process_group()


def run_ddp(a):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(a.ddp, port, a, a.ddp_out), nprocs=a.ddp, join=True)


def ddp_subprocess(n, model, a, seed):
    out = a.out.parent / f".ddp_{model}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PRTE_", "OPAL_"))}
    cmd = [sys.executable, __file__, "--ddp", str(n), "--ddp-model", model, "--ddp-out", str(out),
           "--budget", str(a.budget), "--shift", str(a.shift), "--scale", str(a.scale),
           "--lr", str(a.lr), "--batch", str(a.batch), "--fault-seed", str(seed)]
    # gloo's worker processes were seen to abort once ("terminate called without an active
    # exception", SIGABRT) in an otherwise good run: a failed repeat is run again, once, from
    # the start (same seed), and the retry is recorded in the JSON
    for attempt in range(2):
        out.unlink(missing_ok=True)
        r = subprocess.run(cmd, env=env, timeout=a.budget * 6 + 120)
        if r.returncode == 0:
            break
        print(f"  {model} ddp_gloo: the DDP job exited with status {r.returncode}"
              + ("; running this repeat again" if attempt == 0 else ""), flush=True)
    else:
        raise RuntimeError(f"the DDP baseline ({model}, fault seed {seed}) failed twice")
    res = json.loads(out.read_text())
    res["retries"] = attempt
    out.unlink()
    return res


# ------------------------------------------------------------------ analysis
def time_to(curve, target):
    for t, loss in curve:
        if loss <= target:
            return t
    return float("inf")


def main():
    a = _args()
    if a.ddp:
        run_ddp(a)
        return
    if a.ddp_baseline:
        ddp_baseline(a)
        return
    from mpi4py import MPI

    from codedml.faults import ShiftedExponential
    from codedml.train import train

    comm = MPI.COMM_WORLD
    n = comm.Get_size() - 1
    faults = ShiftedExponential(a.shift, a.scale)
    models = a.models.split(",")
    runs = {}
    if comm.Get_rank() == 0:
        from _machine import machine_info

        info = machine_info()  # before the runs: the load average then is other processes'
    for model in models:
        task = _task(model)
        for rep in range(a.repeats):
            for policy in POLICY_ORDER:
                res = train(task, _cfg(policy, n, a), comm=comm, faults=faults,
                            fault_seed=fault_seed(a, rep))
                if res is not None:
                    curve = [(m["wall"], m["loss"]) for m in res.metrics if m["loss"] is not None]
                    runs.setdefault((model, policy), []).append(
                        {"fault_seed": fault_seed(a, rep), "steps": res.steps,
                         "gradients": res.gradients, "curve": curve,
                         "final_loss": res.loss, "accuracy": res.accuracy,
                         "staleness_mean": float(np.mean([s for m in res.metrics for s in m["staleness"]] or [0]))})
                    print(f"  {model:6s} {policy:16s} rep {rep}: {res.steps:5d} steps, loss {res.loss:.4f}",
                          flush=True)
    if comm.Get_rank() != 0:
        return
    write(a, n, models, runs, {"machine": info})
    print("now run the DDP baseline in its own job: python benchmarks/train_policies.py "
          f"--ddp-baseline --out {a.out}")


def ddp_baseline(a):
    """The DDP baseline, in its own job: the policies' settings and per-repeat fault seeds are
    read from their JSON (not from this command line), so the comparison is like for like."""
    from _machine import machine_info

    doc = json.loads(a.out.read_text())
    pa = argparse.Namespace(**{**doc["args"], "out": a.out})
    n, models = doc["workers"], pa.models.split(",")
    runs = {(r["model"], r["policy"]): r["runs"] for r in doc["runs"] if r["policy"] != "ddp_gloo"}
    info = machine_info()
    for model in models:
        for rep in range(pa.repeats):
            seed = fault_seed(pa, rep)
            r = ddp_subprocess(n, model, pa, seed)
            runs.setdefault((model, "ddp_gloo"), []).append(
                {"fault_seed": seed, "steps": r["steps"], "gradients": r["steps"] * n,
                 "curve": r["curve"], "final_loss": r["curve"][-1][1], "accuracy": None,
                 "staleness_mean": 0.0, "retries": r["retries"]})
            print(f"  {model:6s} ddp_gloo         rep {rep}: {r['steps']:5d} steps, loss {r['curve'][-1][1]:.4f}",
                  flush=True)
    write(pa, n, models, runs, {"machine": doc["machine"], "machine_ddp": info})


def write(a, n, models, runs, machines):
    policies = POLICY_ORDER + (["ddp_gloo"] if any(p == "ddp_gloo" for _, p in runs) else [])
    table = []
    for model in models:
        # Target: the loss sync reaches at half its budget (median over repeats).
        sync_half = [min((l for t, l in run["curve"] if t <= a.budget / 2), default=float("inf"))
                     for run in runs[(model, "sync")]]
        target = float(np.median(sync_half))
        t_sync = float(np.median([time_to(r["curve"], target) for r in runs[(model, "sync")]]))
        for policy in policies:
            rs = runs[(model, policy)]
            t = float(np.median([time_to(r["curve"], target) for r in rs]))
            table.append({"model": model, "policy": policy, "target_loss": target,
                          "time_to_target_s": t, "ratio_to_sync": t / t_sync,
                          "final_loss": float(np.median([r["final_loss"] for r in rs])),
                          "steps": int(np.median([r["steps"] for r in rs])),
                          "gradients": int(np.median([r["gradients"] for r in rs])),
                          "staleness_mean": float(np.median([r["staleness_mean"] for r in rs]))})
    print(f"\n{n} workers, delays ShiftedExponential(shift={a.shift}, scale={a.scale}) per (rank, job), "
          f"budget {a.budget} s per run, {a.repeats} repeat(s); K = {max(1, n // 2)}, gradient code s = 2")
    print(f"{'model':6s} {'policy':16s} {'target':>7s} {'t_target':>9s} {'/sync':>6s} {'final':>7s} "
          f"{'steps':>6s} {'grads':>6s} {'stale':>6s}")
    for r in table:
        print(f"{r['model']:6s} {r['policy']:16s} {r['target_loss']:7.4f} {r['time_to_target_s']:9.2f} "
              f"{r['ratio_to_sync']:6.2f} {r['final_loss']:7.4f} {r['steps']:6d} {r['gradients']:6d} "
              f"{r['staleness_mean']:6.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": "train_policies", "workers": n,
           "args": {k: v for k, v in vars(a).items() if k not in ("out", "ddp_baseline")},
           **machines, "table": table,
           "runs": [{"model": m, "policy": p, "runs": rs} for (m, p), rs in runs.items()]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1, default=str))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for policy in policies:
            c = runs[(model, policy)][0]["curve"]
            ax.plot([t for t, _ in c], [l for _, l in c], label=policy,
                    ls="--" if policy == "ddp_gloo" else "-", lw=1.2)
        tgt = next(r["target_loss"] for r in table if r["model"] == model)
        ax.axhline(tgt, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("wall clock (s)")
        ax.set_ylabel("training loss (full training set)")
        ax.set_title(f"digits {model}, {n} workers, shifted-exp delays")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=110)
    print(f"wrote {a.out} and .png")


if __name__ == "__main__":
    main()
