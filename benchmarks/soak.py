"""Soak: many small coded jobs under mpiexec with every kind of fault, watching the root's memory.

One ``mpiexec`` job; rank 0 is the root, the others workers (8 workers intended)::

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \\
    mpiexec --with-ft ulfm --oversubscribe -n 9 python benchmarks/soak.py [--jobs 100000] [--quick]

Faults, all at once (seeded): random straggler delays on every rank (shifted exponential,
mean ``--delay``), soft errors (a gross error in a result with probability ``--soft``), one
rank that falls silent at job ``--silent-at`` and one that SIGKILLs itself at job
``--die-at`` (survived under Open MPI's ULFM; without ``--with-ft ulfm`` leave it out with
``--die-at -1``). Code ``MDSCode(n, 2)`` with ``errors=1``: it waits for 4 of the 8 results
and corrects one corrupt result among them; when two of the first four are corrupt it waits
for more and corrects both from six. With the silent and the dead rank six are left, so
every job stays within the code's power (three corrupt results in one job, about 1 in 10^5
jobs at ``--soft 0.01``, would end in a named error).

``--window`` jobs are kept in flight (submitted before the oldest one's ``result()``), and
every product is checked against ``A @ B`` computed at the root. Every ``--sample`` jobs the
root's resident set size (``/proc/self/statm``) and the cluster's ``outstanding()`` are
recorded. Printed and stored (``benchmarks/results/soak.json`` + ``soak.png``): jobs/s, the
RSS curve and its least-squares slope after warm-up (the first ``--warmup`` fraction of the
jobs), the growth after warm-up, the counts of tolerated faults (corrupt results located,
late or missing results not waited for, crashed ranks) and of failures (named errors, wrong
products). Targets: growth under 5 MB after warm-up, 0 wrong products, 0 hangs (every
``result()`` returns or raises a named error within its deadline plus the settle slack; a
``DeadlineError`` is a named failure, counted apart). Exit status 0 when all three hold, 3
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import machine_info  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="3000 jobs")
    ap.add_argument("--size", type=int, default=8, help="A and B are size x size (default 8)")
    ap.add_argument("--window", type=int, default=8, help="jobs in flight (default 8)")
    ap.add_argument("--delay", type=float, default=0.001, help="mean straggler delay, s")
    ap.add_argument("--soft", type=float, default=0.01, help="soft-error probability per result")
    ap.add_argument("--silent-at", type=int, default=None, help="job at which rank 3 falls silent")
    ap.add_argument("--die-at", type=int, default=None, help="job at which rank 4 dies (-1: never)")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline of every job, s")
    ap.add_argument("--sample", type=int, default=None, help="jobs between RSS samples")
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of jobs before the slope")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.jobs = 3000
    for name, lo in (("jobs", 100), ("size", 1), ("window", 1)):
        if getattr(a, name) < lo:
            ap.error(f"--{name} must be >= {lo}, got {getattr(a, name)}")
    if not (0 <= a.soft <= 1):
        ap.error(f"--soft must be in [0, 1], got {a.soft}")
    if not (0 < a.warmup < 0.9):
        ap.error(f"--warmup must be in (0, 0.9), got {a.warmup}")
    a.silent_at = a.jobs // 20 if a.silent_at is None else a.silent_at
    a.die_at = a.jobs // 10 if a.die_at is None else a.die_at
    a.sample = a.sample or max(100, a.jobs // 200)
    return a


def main(argv: list[str] | None = None) -> int:
    from mpi4py import MPI

    from codedml import MPICluster
    from codedml.codes import MDSCode
    from codedml.errors import CodedMLError
    from codedml.faults import Die, FailSilent, ShiftedExponential, SoftErrors

    args = parse(sys.argv[1:] if argv is None else argv)
    comm = MPI.COMM_WORLD
    n = comm.Get_size() - 1
    if n < 8:
        if comm.Get_rank() == 0:
            print("soak needs 8 workers: mpiexec -n 9", file=sys.stderr)
        return 2
    faults = ShiftedExponential(0.0, args.delay) + SoftErrors("gross", prob=args.soft) \
        + FailSilent([3], start=args.silent_at)
    if args.die_at >= 0:
        faults = faults + Die([4], at=args.die_at)
    with MPICluster(comm, faults=faults, seed=args.seed, timeout=args.timeout) as cluster:
        if cluster is None:
            return 0
        info = machine_info()
        code = MDSCode(n, 2)
        rng = np.random.default_rng(args.seed)
        pool = [(rng.standard_normal((args.size, args.size)), rng.standard_normal((args.size, args.size)))
                for _ in range(16)]
        refs = [A @ B for A, B in pool]
        print(f"[soak] {n} workers, {args.jobs} jobs of {args.size}x{args.size}, window "
              f"{args.window}, {code!r} errors=1; rank 3 silent at job {args.silent_at}, "
              f"rank 4 dies at job {args.die_at}", flush=True)
        counts: Counter = Counter()
        samples = []
        failures: list[dict] = []
        inflight: deque = deque()
        worst = 0.0
        t0 = time.perf_counter()

        def finish() -> None:
            nonlocal worst
            j, job, t_sub, i = inflight.popleft()
            try:
                C = job.result()
            except CodedMLError as exc:  # DeadlineError included: named, in time
                counts[f"error:{type(exc).__name__}"] += 1
                counts["failed"] += 1
                if len(failures) < 20:
                    failures.append({"job": j, "error": type(exc).__name__, "message": str(exc)[:400]})
                return
            except TimeoutError:  # not settled by its deadline plus the slack: a hang
                counts["hung"] += 1
                counts["failed"] += 1
                return
            finally:
                if time.perf_counter() - t_sub > args.timeout + cluster.SETTLE_SLACK:
                    counts["past_deadline"] += 1
            err = float(np.linalg.norm(C - refs[i]) / np.linalg.norm(refs[i]))
            worst = max(worst, err)
            if err > 1e-9:
                counts["wrong"] += 1
            rep = job.report
            counts["corrupt_located"] += len(rep.faulty)
            counts["not_waited_for"] += rep.count("late") + rep.count("missing")
            counts["crashed_results"] += rep.count("crashed")
            counts["ok"] += 1

        for j in range(args.jobs):
            i = j % len(pool)
            A, B = pool[i]
            inflight.append((j, cluster.submit(A, B, code=code, errors=1), time.perf_counter(), i))
            if len(inflight) >= args.window:
                finish()
            if (j + 1) % args.sample == 0:
                out = cluster.outstanding()
                samples.append({"jobs": j + 1, "t_s": time.perf_counter() - t0, "rss_mb": rss_mb(),
                                **{f"outstanding_{k}": v for k, v in out.items()}})
                if (j + 1) % (args.sample * 20) == 0:
                    s = samples[-1]
                    print(f"  {j + 1:>7} jobs  {s['t_s']:7.1f} s  {(j + 1) / s['t_s']:6.0f} jobs/s  "
                          f"RSS {s['rss_mb']:6.1f} MB  pending {out['jobs']}", flush=True)
        while inflight:
            finish()
        wall = time.perf_counter() - t0
        dead = sorted(cluster.rank_of(w) for w in cluster.dead_workers)
    x = np.array([s["jobs"] for s in samples], dtype=float)
    y = np.array([s["rss_mb"] for s in samples])
    after = x >= args.warmup * args.jobs
    slope = float(np.polyfit(x[after], y[after], 1)[0]) if after.sum() >= 2 else float("nan")
    growth = float(y[after][-1] - y[after][0]) if after.sum() >= 2 else float("nan")
    fit_growth = slope * float(x[after][-1] - x[after][0]) if after.sum() >= 2 else float("nan")
    ok = (counts["wrong"] == 0 and counts["hung"] == 0 and counts["past_deadline"] == 0
          and abs(fit_growth) < 5.0)
    summary = {"jobs": args.jobs, "wall_s": wall, "jobs_per_s": args.jobs / wall,
               "rss_start_mb": float(y[0]), "rss_end_mb": float(y[-1]),
               "rss_slope_mb_per_1000_jobs": 1000 * slope,
               "rss_growth_after_warmup_mb": growth, "rss_fit_growth_after_warmup_mb": fit_growth,
               "worst_rel_error": worst, "dead_ranks": dead, "counts": dict(counts),
               "failures": failures,
               "target": "growth < 5 MB after warm-up, 0 wrong, 0 hung", "ok": ok}
    print(f"\n{'jobs':>8} {'jobs/s':>7} {'RSS start':>9} {'RSS end':>8} {'slope MB/1k':>11} "
          f"{'growth MB':>9} {'wrong':>5} {'hung':>4} {'failed':>6}")
    print(f"{args.jobs:>8} {summary['jobs_per_s']:>7.0f} {y[0]:>9.1f} {y[-1]:>8.1f} "
          f"{1000 * slope:>11.4f} {fit_growth:>9.2f} {counts['wrong']:>5} {counts['hung']:>4} "
          f"{counts['failed']:>6}")
    print(f"tolerated: {counts['corrupt_located']} corrupt results located, "
          f"{counts['not_waited_for']} late/missing results not waited for, "
          f"{counts['crashed_results']} results of crashed ranks {dead}; worst relative error "
          f"{worst:.1e}; verdict {'OK' if ok else 'FAILED'}")
    for f in failures:
        print(f"  job {f['job']}: {f['error']}: {f['message']}")
    doc = {"benchmark": "soak", "summary": summary, "samples": samples,
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "workers": n, "code": repr(code), "faults": repr(faults), "machine": info}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    plot(doc, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if ok else 3


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = doc["samples"]
    x = [r["jobs"] for r in s]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    ax[0].plot(x, [r["rss_mb"] for r in s], color="tab:blue")
    ax[0].set_xlabel("jobs")
    ax[0].set_ylabel("root RSS (MB)")
    sm = doc["summary"]
    ax[0].set_title(f"slope {sm['rss_slope_mb_per_1000_jobs']:.4f} MB / 1000 jobs after warm-up")
    ax[1].plot(x, [r["outstanding_jobs"] for r in s], label="pending jobs")
    ax[1].plot(x, [r["outstanding_held"] for r in s], label="settled, held")
    ax[1].set_xlabel("jobs")
    ax[1].legend()
    ax[1].set_title("runtime tables")
    fig.suptitle(f"soak: {sm['jobs']} jobs, {sm['jobs_per_s']:.0f} jobs/s, wrong "
                 f"{sm['counts'].get('wrong', 0)}, hung {sm['counts'].get('hung', 0)} "
                 f"(commit {str(doc['machine'].get('commit'))[:8]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    from codedml.runtime import exit_process

    exit_process(main())
