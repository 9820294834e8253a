"""Benchmark: encode, per-worker and decode cost of each code, as ratios to the uncoded product.

For square ``size x size`` float64 matrices ``A`` and ``B`` (default sizes 512, 1024, 2048;
``--quick``: 512 only) this script times, in one process with one BLAS, interleaved within
each repeat so that drift hits every case alike:

* ``uncoded``: ``A @ B`` itself (``A @ x`` for the matrix-vector case) - the yardstick, timed
  right before every case in every repeat, so its median pools many samples;
* ``encode``: ``code.encode(A, B)`` (splitting, padding, the generator combinations, the
  per-worker noise scales), its tasks in memory a previous encoding of the case left (the
  task pool, ``codedml.codes.task_pool()``, whose limit is raised here to hold every case's:
  a job stream's encode reuses its last tasks' memory; with the default 256 MiB the other
  cases' tasks pushed a case's out between its repeats at 2048, and that encode paid the
  kernel's zeroing of fresh pages: Polynomial(10, 4x2) 0.48 s against 0.02 s on the Zen 4
  host. ``benchmarks/encode.py`` times the first encode into fresh pages apart);
* ``worker``: each worker's ``task.compute()``, timed one by one; reported as the slowest
  worker's median (and the sum over workers: the total compute the cluster spends);
* ``decode k``: ``code.decode`` from exactly ``recovery_threshold`` results (the first
  ``n - k`` workers straggle), i.e. the usual straggler case;
* ``decode n``: ``code.decode`` from all ``n`` results (the spare ones are used for the
  consistency check).

Every time is reported as a ratio to the uncoded product's median at the same size, measured
side by side in the same run (medians over ``--repeats``). The *idealised* end-to-end time is
``encode + max(worker) + decode k``: workers in parallel, no communication; the decode share
is ``decode k`` over that. ``flops/worker`` is the worker's multiply-add count from the task
shapes relative to the uncoded product (a complex GEMM counts 4 real ones): the inner-split
codes on the circle (MatDot, PolyDot) do complex tasks, 2x the flops of the real code with
the same split (see ``codedml/codes/polydot.py``); the ``MatDot / equispaced`` row is the
naive real construction with the same split, shown for that comparison.

Codes (``n`` about 10, two results to spare where the code has a threshold):
MDS(10, 8) matrix-vector and matrix-matrix, Polynomial(10, 4x2), MatDot(11, m=5),
PolyDot(11, 2x2x2), replication(10 workers, 5 blocks: every block twice), gradient code
(10 workers, 2 stragglers, cyclic), and the plain split into 8 blocks without redundancy.
Plus MDS(30, 25), the accuracy corner (worst-case condition number 8.0e3), twice: with
``precision="auto"``, which gives it compensated worker products (three GEMMs each, see
``codedml/codes/_eft.py``), and with ``precision="float64"`` (one plain GEMM each), so the
cost of compensation reads off side by side.

Threading: BLAS is limited to ONE thread by default (at run time with threadpoolctl, the
same effect as ``OPENBLAS_NUM_THREADS=1`` but confined to the timed region), for two reasons:

1. the benchmark machine has 2 cores and is shared with other processes; with 2 OpenBLAS
   threads and a third busy process, GEMM times come in scheduler quanta (measured at
   size 512: every worker product 24-36 ms, whatever its size, against 0.75 ms
   single-threaded), so the ratios measure the scheduler, not the code;
2. numpy's element-wise work and ``einsum`` (much of encode and decode) run on one core
   anyway, so a one-thread BLAS makes every ratio a like-for-like one-core comparison; in a
   deployment each worker rank usually has its own core(s) too.

``--threads 0`` leaves BLAS threading as it is; ``--threads N`` sets N. The thread count used,
the BLAS build and the load average before and after each size are recorded in the JSON.

Usage::

    python benchmarks/cost.py            # sizes 512 1024 2048, ~6-8 min on 2 shared cores
    python benchmarks/cost.py --quick    # size 512, ~20 s
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codedml.codes import (  # noqa: E402
    GradientCode,
    MatDotCode,
    MDSCode,
    PolyDotCode,
    PolynomialCode,
    ReplicationCode,
)


machine_info = _machine.machine_info
blas_limit, write_json = _machine.blas_limit, _machine.write_json


def cases() -> list[dict]:
    """(label, code, B is a vector?) for every case; built once, reused at every size."""
    return [
        {"label": "MDS mat-vec", "code": MDSCode(10, 8), "vector": True},
        {"label": "MDS mat-mat", "code": MDSCode(10, 8), "vector": False},
        {"label": "Polynomial 4x2", "code": PolynomialCode(10, 4, 2), "vector": False},
        {"label": "MatDot m=5", "code": MatDotCode(11, 5), "vector": False},
        {"label": "MatDot m=5 equispaced", "code": MatDotCode(11, 5, construction="equispaced"),
         "vector": False},
        {"label": "PolyDot 2x2x2", "code": PolyDotCode(11, 2, 2, 2), "vector": False},
        {"label": "Replication 2x", "code": ReplicationCode(10, 5), "vector": False},
        {"label": "Gradient cyclic s=2", "code": GradientCode(10, 2, "cyclic"), "vector": False},
        {"label": "Split k=8 (no redund.)", "code": ReplicationCode(8, 8), "vector": False},
        # n = 30, 5 redundant (cond 8.0e3): "auto" gives compensated worker products (3 GEMMs);
        # the same code with one plain float64 GEMM per worker beside it
        {"label": "MDS (30,25) compensated", "code": MDSCode(30, 25), "vector": False},
        {"label": "MDS (30,25) plain f64", "code": MDSCode(30, 25), "vector": False,
         "precision": "float64"},
    ]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def flop_ratio(enc, M: int, N: int, K: int) -> float:
    """Largest worker's multiply-adds over the uncoded product's (complex GEMM = 4 real; a
    compensated product = 3 GEMMs)."""
    worst = 0.0
    for t in enc:
        a, b = np.asarray(t.a), np.asarray(t.b)
        cols = b.shape[1] if b.ndim == 2 else 1
        f = a.shape[0] * a.shape[1] * cols * (4 if np.iscomplexobj(a) or np.iscomplexobj(b) else 1)
        f *= 3 if t.compensated else 1
        worst = max(worst, f)
    return worst / (M * N * K)


def run_size(size: int, repeats: int, rng: np.random.Generator, case_list: list[dict]) -> list[dict]:
    A = rng.standard_normal((size, size))
    B = rng.standard_normal((size, size))
    x = rng.standard_normal(size)
    C_ref = {False: A @ B, True: A @ x}
    t_unc = {False: [], True: []}
    rec = {c["label"]: {"encode": [], "decode_k": [], "decode_n": [], "worker": [],
                        "worker_max": [], "worker_sum": [], "err": None, "flops": None}
           for c in case_list}
    for rep in range(repeats + 1):  # rep 0 is the warm-up, discarded
        for c in case_list:
            code, vec = c["code"], c["vector"]
            rhs = x if vec else B
            # The yardstick is timed right before every case: on a shared machine this gives
            # the denominator many samples spread over the whole run (its median is stable).
            dt, _ = timed(lambda: A @ rhs)
            if rep:
                t_unc[vec].append(dt)
            d_enc, enc = timed(lambda: code.encode(A, rhs, precision=c.get("precision", "auto")))
            res, tw = {}, []
            for t in enc:
                dt, res[t.worker] = timed(t.compute)
                tw.append(dt)
            n, k = code.workers, code.recovery_threshold
            sub = {w: res[w] for w in range(n - k, n)}  # the first n - k workers straggle
            d_dk, C_k = timed(lambda sub=sub, enc=enc: code.decode(sub, encoding=enc))
            d_dn, C_n = timed(lambda res=res, enc=enc: code.decode(res, encoding=enc))
            r = rec[c["label"]]
            if rep:
                r["encode"].append(d_enc)
                r["decode_k"].append(d_dk)
                r["decode_n"].append(d_dn)
                r["worker"].append(tw)
                r["worker_max"].append(max(tw))
                r["worker_sum"].append(sum(tw))
            else:
                ref = C_ref[vec]
                r["err"] = {
                    "decode_k": float(np.linalg.norm(C_k - ref) / np.linalg.norm(ref)),
                    "decode_n": float(np.linalg.norm(C_n - ref) / np.linalg.norm(ref)),
                }
                r["flops"] = flop_ratio(enc, size, size, 1 if vec else size)
            del enc, res, sub, C_k, C_n
    rows = []
    med = statistics.median
    for c in case_list:
        code, vec = c["code"], c["vector"]
        r = rec[c["label"]]
        u = med(t_unc[vec])
        per_worker = [med(ts) for ts in zip(*r["worker"])]
        row = {
            "size": size, "case": c["label"], "code": repr(code), "vector": vec,
            "workers": code.workers, "recovery_threshold": code.recovery_threshold,
            "precision": c.get("precision", "auto"), "uncoded_median_s": u,
            "uncoded_spread_max_over_min": max(t_unc[vec]) / min(t_unc[vec]),
            "encode_median_s": med(r["encode"]), "decode_k_median_s": med(r["decode_k"]),
            "decode_n_median_s": med(r["decode_n"]),
            "worker_max_median_s": med(r["worker_max"]), "worker_sum_median_s": med(r["worker_sum"]),
            "per_worker_median_s": per_worker,
            "worker_max_of_medians_s": max(per_worker),
            "flops_per_worker_ratio": r["flops"],
            "rel_error": r["err"],
            "times_s": {"uncoded": t_unc[vec], "encode": r["encode"], "decode_k": r["decode_k"],
                        "decode_n": r["decode_n"], "worker_max": r["worker_max"]},
        }
        row["encode_ratio"] = row["encode_median_s"] / u
        # slowest worker's median (robust to a preempted repeat, unlike the median of maxima)
        row["worker_ratio"] = row["worker_max_of_medians_s"] / u
        row["worker_sum_ratio"] = row["worker_sum_median_s"] / u
        row["decode_k_ratio"] = row["decode_k_median_s"] / u
        row["decode_n_ratio"] = row["decode_n_median_s"] / u
        e2e = row["encode_median_s"] + row["worker_max_of_medians_s"] + row["decode_k_median_s"]
        row["e2e_ideal_ratio"] = e2e / u
        row["decode_share_of_e2e"] = row["decode_k_median_s"] / e2e
        row["encode_share_of_e2e"] = row["encode_median_s"] / e2e
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'size':>5s} {'case':<25s} {'n':>3s} {'k':>3s} {'encode':>7s} {'worker':>7s} "
            f"{'flops/w':>7s} {'sum w':>6s} {'dec k':>7s} {'dec n':>7s} {'e2e':>6s} "
            f"{'dec %':>6s} {'err':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['size']:>5d} {r['case']:<25s} {r['workers']:>3d} {r['recovery_threshold']:>3d} "
            f"{r['encode_ratio']:>7.3f} {r['worker_ratio']:>7.3f} {r['flops_per_worker_ratio']:>7.3f} "
            f"{r['worker_sum_ratio']:>6.2f} {r['decode_k_ratio']:>7.3f} {r['decode_n_ratio']:>7.3f} "
            f"{r['e2e_ideal_ratio']:>6.2f} {100 * r['decode_share_of_e2e']:>5.1f}% "
            f"{r['rel_error']['decode_k']:>7.0e}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, sizes: list[int], note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sizes), 1, figsize=(12, 3.6 * len(sizes)), squeeze=False)
    metrics = [("encode_ratio", "encode", "tab:blue"), ("worker_ratio", "max worker", "tab:green"),
               ("decode_k_ratio", "decode (k results)", "tab:red"),
               ("decode_n_ratio", "decode (all n)", "tab:pink"),
               ("e2e_ideal_ratio", "ideal end-to-end", "tab:gray")]
    for ax, size in zip(axes[:, 0], sizes):
        sel = [r for r in rows if r["size"] == size]
        xs = np.arange(len(sel))
        w = 0.16
        for i, (key, label, color) in enumerate(metrics):
            ax.bar(xs + (i - 2) * w, [r[key] for r in sel], w, label=label, color=color)
        ax.scatter(xs, [r["flops_per_worker_ratio"] for r in sel], marker="_", s=300, color="k",
                   zorder=3, label="flops per worker / uncoded")
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{r['case']}\n(n={r['workers']}, k={r['recovery_threshold']})" for r in sel],
                           fontsize=7)
        ax.set_ylabel("time / uncoded A@B (log)")
        ax.set_title(f"size {size}: ratios to the uncoded product, medians, same run", fontsize=10)
        ax.grid(True, axis="y", which="major", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=6, loc="lower center")
    fig.suptitle("codedml codes: cost relative to the uncoded product" + note, fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="size 512 only, 5 repeats")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="square sizes (default 512 1024 2048)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats (default 11 below size 1024, 7 below 2048, else 3; "
                         "--quick 5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads, set at run time via threadpoolctl (default 1, see the "
                         "module docstring; 0 = leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/cost.json")
    ap.add_argument("--plot", default="benchmarks/results/cost.png")
    ap.add_argument("--replot", action="store_true",
                    help="measure nothing: redraw --plot and reprint the table from the --out JSON")
    args = ap.parse_args(argv)
    if args.replot:
        old = json.loads(Path(args.out).read_text())
        print(table(old["rows"]))
        plot(old["rows"], Path(args.plot), old["parameters"]["sizes"],
             f" ({old['machine']['cpu_count']} CPUs{', quick' if old['parameters']['quick'] else ''})")
        print(f"wrote {args.plot}")
        return 0
    sizes = args.sizes or ([512] if args.quick else [512, 1024, 2048])
    def repeats_for(size: int) -> int:
        if args.repeats:
            return args.repeats
        if args.quick:
            return 5
        return 11 if size < 1024 else 7 if size < 2048 else 3

    limit = blas_limit(args.threads)
    from codedml.codes import task_pool

    pool = task_pool()
    pool.limit = max(pool.limit, 4 << 30)   # every case's tasks kept for its next repeat
    t_start = time.perf_counter()
    rows: list[dict] = []
    rng = np.random.default_rng(args.seed)
    case_list = cases()
    with limit:
        machine = machine_info()  # inside the limit, so the recorded thread count is the one used
        print(f"cost: sizes={sizes} repeats={[repeats_for(s) for s in sizes]} BLAS threads="
              f"{[b.get('num_threads') for b in machine['blas']] if isinstance(machine['blas'], list) else '?'}",
              flush=True)
        load = {}
        for size in sizes:
            t0 = time.perf_counter()
            before = os.getloadavg()
            rows += run_size(size, repeats_for(size), rng, case_list)
            load[size] = {"before": before, "after": os.getloadavg()}
            print(f"  size {size}: {time.perf_counter() - t0:.1f} s, load average "
                  f"{before[0]:.1f} -> {load[size]['after'][0]:.1f}", flush=True)
    elapsed = time.perf_counter() - t_start

    print()
    print("All columns except err are ratios to the uncoded product at the same size (medians):")
    print("encode; worker = slowest worker (max over workers of per-worker medians); flops/w =")
    print("its flops from task shapes; sum w = all")
    print("workers' compute; dec k / dec n = decode from k / all n results; e2e = encode + worker")
    print("+ dec k (ideal: parallel workers, no communication); dec % = dec k share of e2e;")
    print("err = relative Frobenius error of the decode from k results. mat-vec rows: vs A @ x,")
    print("a memory-bound product, so its encode ratio (a one-off cost over all of A) is huge.")
    print(table(rows))
    for size in sizes:
        spread = max(r["uncoded_spread_max_over_min"] for r in rows if r["size"] == size and not r["vector"])
        print(f"noise: size {size}, uncoded A@B slowest/fastest repeat = {spread:.2f}; "
              f"load average {load[size]['before'][0]:.1f} -> {load[size]['after'][0]:.1f}")
    print(f"total time {elapsed:.1f} s")

    result = {
        "benchmark": "cost",
        "machine": machine,
        "load_average_1_5_15min": load,
        "parameters": {"quick": args.quick, "sizes": sizes,
                       "repeats": {s: repeats_for(s) for s in sizes},
                       "threads": args.threads, "seed": args.seed, "dtype": "float64",
                       "cases": [{"label": c["label"], "code": repr(c["code"]), "vector": c["vector"]}
                                 for c in case_list],
                       "decode_k_subset": "workers n-k .. n-1 (the first n-k straggle)",
                       "warmup": "one full pass per size, discarded"},
        "elapsed_s": elapsed,
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "rows": rows,
    }
    write_json(args.out, result)
    if args.plot:
        note = f" ({machine['cpu_count']} CPUs{', quick' if args.quick else ''})"
        plot(rows, Path(args.plot), sizes, note)
        print(f"wrote {args.plot}")
    bad = [r["case"] for r in rows if not (r["rel_error"]["decode_k"] < 1e-8)]
    if bad:
        print(f"WARNING: decode error above 1e-8 for {bad}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
