"""Benchmark: end-to-end latency of coded products over MPI with injected stragglers.

Runs in ONE ``mpiexec`` job: rank 0 is the master, every other rank a worker (8 workers
expected)::

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \\
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
    mpiexec --oversubscribe -n 9 python benchmarks/runtime_latency.py [--quick] [--repeats R]

(full: 30 repeats, 750 measured jobs, most of them waiting out a 1 s straggler delay, plus
270 empty jobs: about 12 min; ``--quick``: about 40 s. 30 repeats by default: with 15 the
median moved by more than the end-to-end targets' margin between runs of the same commit)

Codes, side by side, each with 0 stragglers, 1 straggler and as many as it tolerates:

* ``uncoded``      ``ReplicationCode(n, n)``        tolerates 0
* ``replication``  ``ReplicationCode(n, n // 2)``   every block twice, tolerates replicas - 1 = 1
* ``MDS``          ``MDSCode(n, n - 2, systematic=False)``   tolerates 2
* ``MDS sys``      ``MDSCode(n, n - 2, systematic=True)``    tolerates 2 (the default code)
* ``MDS sys, wait``  the same code with ``cluster.systematic_grace = 1`` (waits about one
  arrival gap per outstanding systematic result before it solves; the default decodes at once)
* ``MDS sys, no yield``  the same code with ``cluster.parity_nice = 0``: the parity products
  run at the data products' priority (the default where ranks share cores, as here, runs
  them 10 nice values lower; docs/runtime.md, "Parity products that yield")
* ``polynomial``   ``PolynomialCode(n, 2, 3)``      threshold 6, tolerates n - 6 (no
  systematic form with col_blocks > 1; ``PolynomialCode(n, k, 1)`` is ``MDS sys``)
* ``MatDot``       ``MatDotCode(n, 3, systematic=False)``    threshold 5, tolerates n - 5
* ``MatDot sys``   ``MatDotCode(n, 3, systematic=True)``     (the default code)
* ``PolyDot``      ``PolyDotCode(n, 2, 2, 1)``      threshold 5, tolerates n - 5

Targets (issue 11): the systematic codes at most 1.15x uncoded without stragglers when no
worker straggles, and at most 1.25x with as many stragglers as they tolerate. Only the
MDS-type code can meet them: a MatDot worker multiplies full-size operands split along the
inner dimension (1/m of the product's flops, complex: 2/m; the uncoded worker 1/n) and
returns a full-size result, so at n = 8, m = 3 its slowest-worker term alone is about 5x the
uncoded one's and its decode reads 2m - 1 full-size results, systematic or not.

Per-component model for ``n`` dedicated nodes, from this run's measurements (printed as a
second table and stored per code under ``summary[code]["model"]``):

* ``encode``: median ``report.encode`` of the code's fault-free jobs (the root's encode);
* ``slowest worker``: the largest per-worker product time ``task.compute()``, timed on the
  root after the workers have exited (one process on the machine: what a dedicated node
  takes; the fastest of 5 per worker);
* ``decode``: median ``report.decode`` of the fault-free jobs (and, for the straggler
  model, of the jobs with as many stragglers as tolerated);
* ``control plane``: median end-to-end latency of *empty* jobs of the same code in the same
  run (A of 2k x 2, B of 2 x 2: messages, headers, bookkeeping and waking the ranks, with
  negligible compute), ``--empty-repeats`` of them after the measured jobs.

``model = encode + slowest worker + decode + control plane``, as a ratio to the uncoded
code's model; the term that dominates is named. Operand transfer beyond what an empty job
moves is not in the model: the measured ``e2e - model`` (``rest``) is that plus the
contention of the oversubscribed ranks.

For a code with recovery threshold ``k`` the "tolerable" number is ``n - k`` (for replication
that is ``n - (n - min replicas + 1) = replicas - 1``, what it guarantees whatever the ranks).

Failure model: the cluster's failure model is fixed when it is built, so the whole run is
planned first (every job, in order: job ids are assigned sequentially from 0 by the cluster)
and one deterministic :class:`codedml.faults.Schedule` ``{job: {rank: Fault(delay=D)}}`` is
built from it on every rank; the straggling ranks of each job are drawn from a seeded RNG.
The configurations are shuffled within each repeat (same seed), so drift hits all alike.

Measured per job (master side): end-to-end latency from ``submit`` to the decoded result
(``job.result()``), the runtime's own ``report.wall`` and ``report.decode``, the status of
the straggling workers in ``job.report`` (``missing``/``late`` = skipped, ``used`` = waited
for), and the relative error of the decoded product against ``A @ B`` (must be < 1e-9).

After each job the master drains until the straggling workers have finished their delay (and
the spare workers their product), so a straggler of one job does not delay the next.

The machine has 2 cores and 9 ranks share them, so absolute times mean little (see GUIDE
section 5): the injected delay ``D`` (default 1.0 s) is chosen to dominate a worker's product
(a few ms to tens of ms), and results are reported as ratios to ``uncoded`` without stragglers
measured in the same run (ratio of medians over repeats).

Outputs: a table on stdout, ``benchmarks/results/runtime_latency.json`` (with machine info)
and ``benchmarks/results/runtime_latency.png``. ``benchmarks/results/SUMMARY_runtime.md`` and
README's table are rendered from the JSON by ``benchmarks/render_readme.py`` (``--summary PATH``
also writes this script's own markdown summary, e.g. for a run with ``--out`` elsewhere)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# this checkout's codedml, not whichever one an editable install points at (a benchmark run
# from a second worktree must measure that worktree's commit, which its JSON records)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from codedml.codes import MatDotCode, MDSCode, PolyDotCode, PolynomialCode, ReplicationCode  # noqa: E402
from codedml.faults import Fault, Schedule  # noqa: E402
from codedml.runtime.mpi import MPICluster  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOL = 1e-9
LEVELS = ("0", "1", "tolerable")


def make_codes(n: int) -> list[tuple[str, object]]:
    return [
        ("uncoded", ReplicationCode(n, n)),
        ("replication", ReplicationCode(n, n // 2)),
        ("MDS", MDSCode(n, n - 2, systematic=False)),
        ("MDS sys", MDSCode(n, n - 2, systematic=True)),
        ("MDS sys, wait", MDSCode(n, n - 2, systematic=True)),
        ("MDS sys, no yield", MDSCode(n, n - 2, systematic=True)),
        ("polynomial", PolynomialCode(n, 2, 3)),
        ("MatDot", MatDotCode(n, 3, systematic=False)),
        ("MatDot sys", MatDotCode(n, 3, systematic=True)),
        ("PolyDot", PolyDotCode(n, 2, 2, 1)),
    ]


#: issue 11's end-to-end targets for the systematic codes (ratio to uncoded without stragglers)
TARGETS = {"fault_free": 1.15, "tolerable": 1.25}
SYSTEMATIC = ("MDS sys", "MatDot sys")
#: run with ``cluster.systematic_grace = 1``: wait about one arrival gap per outstanding
#: systematic result once a decodable set arrived without them (the runtime's default, 0,
#: decodes at once; docs/runtime.md); side by side with "MDS sys" to show what the wait buys
#: or costs
WAIT = ("MDS sys, wait",)
#: run with ``cluster.parity_nice = 0``: parity products at the data products' priority
#: (the cluster's default here, with ranks sharing cores, lowers theirs by 10 nice values)
NO_YIELD = ("MDS sys, no yield",)
TERMS = ("encode", "slowest worker", "decode", "control plane")


def tolerable(code) -> int:
    return code.workers - code.recovery_threshold


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller matrices, 3 repeats, shorter delay")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per configuration (default 30; quick 3)")
    ap.add_argument("--size", type=int, default=None, help="A and B are size x size (default 512; quick 384)")
    ap.add_argument("--delay", type=float, default=None, help="straggler delay in s (default 1.0; quick 0.5)")
    ap.add_argument("--empty-repeats", type=int, default=None,
                    help="empty jobs per code for the control-plane term (default 30; quick 10)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--timeout", type=float, default=30.0, help="per-job timeout in s")
    ap.add_argument("--out", type=Path, default=RESULTS / "runtime_latency.json",
                    help="JSON path; the PNG goes next to it with the .png suffix")
    ap.add_argument("--summary", type=Path, default=None,
                    help="also write a markdown summary here (benchmarks/results/SUMMARY_runtime.md "
                         "is rendered from the JSON by benchmarks/render_readme.py instead)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 30
    if args.size is None:
        args.size = 384 if args.quick else 512
    if args.delay is None:
        args.delay = 0.5 if args.quick else 1.0
    if args.empty_repeats is None:
        args.empty_repeats = 10 if args.quick else 30
    return args


def plan(n: int, repeats: int, seed: int, delay: float):
    """The whole run, job by job, identically on every rank: (warm-up jobs, measured jobs, Schedule)."""
    codes = make_codes(n)
    configs = []  # (code name, stragglers), unique
    for name, code in codes:
        for s in sorted({0, 1, tolerable(code)}):
            configs.append((name, s))
    rng = np.random.default_rng(seed)
    jobs = []  # dicts: id, code, stragglers, ranks, repeat (-1 = warm-up)
    jid = 0
    for name, _ in codes:  # warm-up: one fault-free job per code, not measured
        jobs.append({"id": jid, "code": name, "stragglers": 0, "ranks": [], "repeat": -1})
        jid += 1
    for r in range(repeats):
        for i in rng.permutation(len(configs)):
            name, s = configs[i]
            ranks = sorted(int(x) + 1 for x in rng.choice(n, size=s, replace=False))  # worker w = rank w+1
            jobs.append({"id": jid, "code": name, "stragglers": s, "ranks": ranks, "repeat": r})
            jid += 1
    table = {j["id"]: {rk: Fault(delay=delay) for rk in j["ranks"]} for j in jobs if j["ranks"]}
    return codes, configs, jobs, Schedule(table)


def machine_info() -> dict:
    """benchmarks/_machine.py's record (commit, dirty flag, BLAS and its threads, load average)
    plus the MPI library; ``cpus``, ``date_utc`` and ``loadavg`` kept under this script's older
    key names for the summary."""
    import mpi4py

    import _machine

    info = _machine.machine_info()
    info.update({
        "cpus": os.cpu_count(),
        "mpi4py": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0].strip(),
        "mpi_version": "%d.%d" % MPI.Get_version(),
        "mpi_ranks": MPI.COMM_WORLD.Get_size(),
        "date_utc": info["date"],
        "loadavg": info["loadavg_1_5_15min"],
    })
    return info


def configure(cluster: MPICluster, name: str, grace: float, nice: int) -> None:
    """The cluster's settings for a job of the code row ``name``: the defaults (``grace``,
    ``nice``) except where the row changes one (WAIT, NO_YIELD)."""
    cluster.systematic_grace = 1.0 if name in WAIT else grace
    cluster.parity_nice = 0 if name in NO_YIELD else nice


def run_master(cluster: MPICluster, args, codes, jobs, A, B, C_ref) -> tuple[list[dict], dict]:
    code_of = dict(codes)
    ff_wall: dict[str, float] = {}
    records = []
    nref = float(np.linalg.norm(C_ref))
    grace, nice = cluster.systematic_grace, cluster.parity_nice
    t_run = time.perf_counter()
    for j in jobs:
        code = code_of[j["code"]]
        configure(cluster, j["code"], grace, nice)
        t0 = time.perf_counter()
        job = cluster.submit(A, B, code=code, timeout=args.timeout)
        if job.id != j["id"]:
            raise RuntimeError(f"job id drift: the cluster assigned {job.id}, the plan expected {j['id']} "
                               "(the Schedule would inject delays into the wrong jobs)")
        err, exc = float("nan"), None
        try:
            C = job.result()
            t1 = time.perf_counter()
            err = float(np.linalg.norm(np.asarray(C) - C_ref)) / nref
        except Exception as e:  # a failed job counts as a failure; keep going
            t1 = time.perf_counter()
            exc = f"{type(e).__name__}: {e}"
            print(f"[runtime_latency] job {j['id']} ({j['code']}, {j['stragglers']} stragglers) failed: {exc}",
                  file=sys.stderr, flush=True)
        e2e = t1 - t0
        # Let the stragglers sleep off their delay (and spare workers finish) before the next job:
        # a straggler starts its delay once its product is done, about when the results used
        # arrived (the last used result's latency); a cancelled straggler sends nothing.
        lat = [w.latency for w in job.report.workers if w.status == "used" and w.latency is not None]
        t_prod = max(lat) if lat else e2e
        until = t1 + 0.05 + 0.5 * t_prod
        if j["ranks"]:
            until = max(until, t0 + t_prod + args.delay + 0.15)
        cluster.drain(max(0.0, until - time.perf_counter()))
        rep = job.report
        status = {str(rk): rep.workers[rk - 1].status for rk in j["ranks"]}
        if j["repeat"] < 0:
            ff_wall[j["code"]] = e2e
        records.append(dict(j, e2e_s=e2e, wall_s=rep.wall, decode_s=rep.decode, encode_s=rep.encode,
                            systematic_wait_s=rep.systematic_wait,
                            rel_error=err, ok=(exc is None and err < TOL), error=exc,
                            straggler_status=status,
                            used=rep.count("used"), late=rep.count("late"), missing=rep.count("missing")))
    configure(cluster, "", grace, nice)
    return records, {"run_s": time.perf_counter() - t_run, "warmup_wall_s": ff_wall}


def empty_jobs(cluster: MPICluster, codes, repeats: int, timeout: float) -> dict[str, float]:
    """Median end-to-end latency of fault-free empty jobs per code (the control-plane term):
    A of 2k x 2 and B of 2 x 2, so encode, compute and decode are negligible. Run after the
    planned jobs: their ids lie past the Schedule's, so no delay is injected."""
    rng = np.random.default_rng(7)
    out = {}
    grace, nice = cluster.systematic_grace, cluster.parity_nice
    for name, code in codes:
        configure(cluster, name, grace, nice)
        A = rng.standard_normal((2 * code.recovery_threshold * 2, 2))
        B = rng.standard_normal((2, 2))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cluster.submit(A, B, code=code, timeout=timeout).result()
            ts.append(time.perf_counter() - t0)
            cluster.drain(0.002)
        out[name] = float(np.median(ts))
    configure(cluster, "", grace, nice)
    return out


def worker_compute(codes, A, B) -> dict[str, dict]:
    """Per code: each worker's ``task.compute()`` timed alone on the root (the fastest of 5,
    after one untimed), after the workers have left their loop: what a dedicated node takes
    for its share. The fastest, not the median: ranks still finishing their exit shared the
    cores with the first codes timed (at d9023ca three of the uncoded tasks took a median of
    13-17 ms against 1.2-1.9 ms for the other five), and a dedicated node has no such
    neighbours."""
    out = {}
    for name, code in codes:
        enc = code.encode(A, B)
        times = []
        for t in enc:
            t.compute()
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                t.compute()
                ts.append(time.perf_counter() - t0)
            times.append(float(min(ts)))
        out[name] = {"slowest_s": max(times), "median_s": float(np.median(times)), "per_worker_s": times}
    return out


def model(summary: dict, compute: dict, control: dict) -> None:
    """Add ``summary[name]["model"]``: the per-component model for dedicated nodes (see the
    module docstring), fault-free and with as many stragglers as tolerated."""
    def terms(name: str, level: str) -> dict:
        lv = summary[name]["levels"][level]
        t = {"encode": lv["median_encode_s"], "slowest worker": compute[name]["slowest_s"],
             "decode": lv["median_decode_s"], "control plane": control[name]}
        total = sum(t.values())
        return {"terms_s": t, "total_s": total, "dominant": max(t, key=t.get),
                "measured_e2e_s": lv["median_e2e_s"], "rest_s": lv["median_e2e_s"] - total}
    for name in summary:
        summary[name]["model"] = {"fault_free": terms(name, "0"), "tolerable": terms(name, "tolerable")}
    base = summary["uncoded"]["model"]["fault_free"]["total_s"]
    for name in summary:
        for m in summary[name]["model"].values():
            m["ratio_vs_uncoded0"] = m["total_s"] / base


def summarise(codes, configs, records, delay: float) -> dict:
    meas = [r for r in records if r["repeat"] >= 0]
    by = {(c, s): [r for r in meas if r["code"] == c and r["stragglers"] == s] for c, s in configs}
    rows = {}
    for (c, s), rs in by.items():
        e2e = np.array([r["e2e_s"] for r in rs])
        wall = np.array([r["wall_s"] for r in rs])
        dec = np.array([r["decode_s"] for r in rs])
        share = dec / wall
        st = {}
        for r in rs:
            for v in r["straggler_status"].values():
                st[v] = st.get(v, 0) + 1
        rows[(c, s)] = {
            "code": c, "stragglers": s, "repeats": len(rs),
            "median_e2e_s": float(np.nanmedian(e2e)),
            "p25_e2e_s": float(np.nanpercentile(e2e, 25)), "p75_e2e_s": float(np.nanpercentile(e2e, 75)),
            "min_e2e_s": float(np.nanmin(e2e)), "max_e2e_s": float(np.nanmax(e2e)),
            "median_wall_s": float(np.nanmedian(wall)),
            "median_decode_s": float(np.nanmedian(dec)),
            "median_encode_s": float(np.nanmedian([r["encode_s"] for r in rs])),
            "median_results_used": float(np.median([r["used"] for r in rs])),
            "median_systematic_wait_s": float(np.nanmedian([r.get("systematic_wait_s", 0.0) for r in rs])),
            "median_decode_share": float(np.nanmedian(share)) if np.isfinite(share).any() else float("nan"),
            "failures": int(sum(not r["ok"] for r in rs)),
            "max_rel_error": float(np.nanmax([r["rel_error"] for r in rs])) if rs else float("nan"),
            "straggler_status": st,
            "jobs_slower_than_delay": int(sum(r["e2e_s"] >= delay for r in rs)),
            "e2e_s": e2e.tolist(),
        }
    base = rows[("uncoded", 0)]["median_e2e_s"]
    base_by_rep = {r["repeat"]: r["e2e_s"] for r in by[("uncoded", 0)]}
    for (c, s), row in rows.items():
        row["ratio_vs_uncoded0"] = row["median_e2e_s"] / base
        row["paired_median_ratio_vs_uncoded0"] = float(np.median(
            [r["e2e_s"] / base_by_rep[r["repeat"]] for r in by[(c, s)]]))
        unc = rows.get(("uncoded", s))
        row["ratio_vs_uncoded_same_stragglers"] = (row["median_e2e_s"] / unc["median_e2e_s"]) if unc else None
    out = {}
    for name, code in codes:
        tol = tolerable(code)
        levels = {"0": 0, "1": 1, "tolerable": tol}
        out[name] = {"code": repr(code), "recovery_threshold": code.recovery_threshold, "tolerates": tol,
                     "fault_free_overhead_vs_uncoded": rows[(name, 0)]["ratio_vs_uncoded0"],
                     "levels": {k: rows[(name, v)] for k, v in levels.items()}}
    return out


def table(summary: dict, delay: float) -> str:
    """The latency table, as the README and ``SUMMARY_runtime.md`` render it from the JSON."""
    from render_readme import latency_table

    return "\n".join(latency_table(summary))


def plot(summary: dict, path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    x = np.arange(len(names))
    w = 0.26
    colors = {"0": "#4c72b0", "1": "#dd8452", "tolerable": "#55a868"}
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for i, lvl in enumerate(LEVELS):
        rows = [summary[nm]["levels"][lvl] for nm in names]
        vals = [r["ratio_vs_uncoded0"] for r in rows]
        lo = [r["ratio_vs_uncoded0"] * (1 - r["p25_e2e_s"] / r["median_e2e_s"]) for r in rows]
        hi = [r["ratio_vs_uncoded0"] * (r["p75_e2e_s"] / r["median_e2e_s"] - 1) for r in rows]
        label = {"0": "no straggler", "1": "1 straggler", "tolerable": "as many as tolerated"}[lvl]
        bars = ax.bar(x + (i - 1) * w, vals, w, yerr=[lo, hi], capsize=2, color=colors[lvl], label=label)
        for b, r, v in zip(bars, rows, vals):
            txt = f"{v:.1f}" if v >= 10 else f"{v:.2f}"
            if lvl == "tolerable":
                txt += f"\n(s={r['stragglers']})"
            ax.text(b.get_x() + b.get_width() / 2, v * 1.06, txt, ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    d_ratio = meta["delay_s"] / summary["uncoded"]["levels"]["0"]["median_e2e_s"]
    ax.axhline(d_ratio, color="r", lw=0.8, ls=":", label=f"injected delay ({meta['delay_s']} s)")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{nm}\n(thr {summary[nm]['recovery_threshold']}, tol {summary[nm]['tolerates']})"
                        for nm in names], fontsize=8)
    ax.set_ylabel("median end-to-end latency / uncoded without stragglers")
    ax.set_title(f"Coded A@B over MPI, {meta['workers']} workers, {meta['size']}x{meta['size']} float64, "
                 f"straggler delay {meta['delay_s']} s, median of {meta['repeats']}\n"
                 f"({meta['machine']['cpus']} CPUs, oversubscribed; error bars: 25-75th percentile)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(top=ax.get_ylim()[1] * 2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    args = parse(sys.argv[1:])
    comm = MPI.COMM_WORLD
    n = comm.Get_size() - 1
    if n < 6:
        if comm.Get_rank() == 0:
            print("runtime_latency needs at least 7 ranks (8 workers + root intended)", file=sys.stderr)
        return 2
    codes, configs, jobs, schedule = plan(n, args.repeats, args.seed, args.delay)
    with MPICluster(comm, faults=schedule, seed=args.seed, timeout=args.timeout) as cluster:
        if cluster is None:  # a worker: served until the root closed
            return 0
        t_start = time.perf_counter()
        rng = np.random.default_rng(args.seed + 1)
        A = rng.standard_normal((args.size, args.size))
        B = rng.standard_normal((args.size, args.size))
        C_ref = A @ B
        info = machine_info()
        parity_nice, crowded = cluster.parity_nice, len(cluster.crowded_workers)
        print(f"[runtime_latency] parity products {parity_nice} nice values lower by default "
              f"({crowded} of {n} workers on nodes with more ranks than CPUs)", flush=True)
        print(f"[runtime_latency] {n} workers, {len(jobs)} jobs ({len(configs)} configurations x "
              f"{args.repeats} repeats + {len(codes)} warm-up), size {args.size}, delay {args.delay} s",
              flush=True)
        try:
            records, extra = run_master(cluster, args, codes, jobs, A, B, C_ref)
            extra["empty_e2e_s"] = empty_jobs(cluster, codes, args.empty_repeats, args.timeout)
        except Exception:
            traceback.print_exc()
            raise
    t_total = time.perf_counter() - t_start  # includes close()
    summary = summarise(codes, configs, records, args.delay)
    meta = {"workers": n, "size": args.size, "delay_s": args.delay, "repeats": args.repeats,
            "parity_nice": parity_nice, "crowded_workers": crowded,
            "seed": args.seed, "timeout_s": args.timeout, "quick": args.quick, "tolerance": TOL,
            "dtype": "float64", "machine": info,
            "wall_time_s": t_total, "measure_time_s": extra["run_s"],
            "warmup_e2e_s": extra["warmup_wall_s"],
            "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    compute = worker_compute(codes, A, B)
    model(summary, compute, extra["empty_e2e_s"])
    meta["empty_repeats"] = args.empty_repeats
    meta["worker_compute"] = compute
    tab = table(summary, args.delay)
    fails = sum(not r["ok"] for r in records)
    from render_readme import latency_model_table, latency_targets

    print()
    print(tab)
    print("\nPer-component model for n dedicated nodes (this run's measurements; see the docstring):")
    print("\n".join(latency_model_table(summary)))
    print("\n".join(latency_targets(summary, parity_nice)))
    print(f"\nuncoded/0 median e2e {1e3 * summary['uncoded']['levels']['0']['median_e2e_s']:.1f} ms; "
          f"jobs {len(records)}, failed or inaccurate (rel. error >= {TOL:g}): {fails}; "
          f"max rel. error {max(r['rel_error'] for r in records):.2e}; total {t_total:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "runtime_latency", "meta": meta, "summary": summary, "jobs": records}
    args.out.write_text(json.dumps(doc, indent=1, default=float))
    png = args.out.with_suffix(".png")
    plot(summary, png, meta)
    m = info
    md = [
        "# Runtime latency: coded products over MPI with stragglers",
        "",
        f"`mpiexec --oversubscribe -n {n + 1} python benchmarks/runtime_latency.py"
        f"{' --quick' if args.quick else ''} --repeats {args.repeats}` "
        f"({n} workers + root, A and B {args.size}x{args.size} float64, each straggler delayed "
        f"{args.delay} s, straggling ranks drawn at random per job, median of {args.repeats} repeats, "
        f"total {t_total:.0f} s).",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs ({n + 1} ranks oversubscribed), {m['mpi_library']}, "
        f"numpy {m['numpy']}, mpi4py {m['mpi4py']}, {m['date_utc']}; load average at start / end "
        f"{m.get('loadavg', ('?',))[0]:.1f} / {meta['loadavg_end'][0]:.1f} (the machine is shared). Absolute times are not meaningful "
        "here (2 shared cores); the ratios are to `uncoded` without stragglers in the same run.",
        "",
        "`thr` = recovery threshold, `tol` = stragglers tolerated (n - thr; replication: replicas - 1). "
        "`decode share` = `report.decode / report.wall` (median). `results used` = worker results "
        "that went into the decode (median; more than `thr` when several arrive in one poll; all of "
        "them are used: least squares averages their rounding). `stragglers skipped` = straggling workers the job did not "
        "wait for: `late` (the straggler still sent its result after the decode) / not sent (`missing`: "
        "it honoured the cancel). `failures` = jobs that raised "
        f"or whose relative error vs `A @ B` was >= {TOL:g}.",
        "",
        tab,
        "",
        f"uncoded without stragglers: {1e3 * summary['uncoded']['levels']['0']['median_e2e_s']:.1f} ms (median). "
        f"Max relative error over all {len(records)} jobs: {max(r['rel_error'] for r in records):.1e}; "
        f"failures: {fails}.",
        "",
        f"Data: `{args.out.name}`; plot: `{png.name}`.",
        "",
    ]
    if args.summary is not None:
        args.summary.write_text("\n".join(md))
        print(f"wrote {args.summary}")
    print(f"wrote {args.out}, {png}; render README.md and SUMMARY_runtime.md from it with "
          "python benchmarks/render_readme.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
