"""Scale: the master's own time per job at 8, 16, 32 and 64 workers (issue 11, point 6).

The driver starts one ``mpiexec --oversubscribe -n N+1`` job per worker count (this file again,
with ``--child``) and fits how the master's time per job grows with ``N``::

    python benchmarks/scale.py [--workers 8 16 32 64] [--jobs 200] [--quick]

With 65 ranks on a 2-core machine the wall time of a job says how fast the operating system
hands the cores around, not what the master costs. So the figure is the master's *work* per
job: the CPU time of the root's threads inside what it does for a job: the code's ``encode``,
the transport's send of each task (``_send``, ``_send_many``, ``_send_each``), receive of each reply
(``_receive``; on the compiled per-message path ``_poll_compiled``, where a call's inline
results are booked, less the engine's poll inside it, which spins while it waits), and the
code's ``decode`` (``time.thread_time``, so preemption by the other ranks is not counted). Waiting and polling are left out:
on dedicated nodes the master waits for the slowest needed worker, which no master code can
shorten. Two requests are measured:

* ``job``: ``submit(A, B, code=MDSCode(N, N - 2))`` of a fixed-size product (A is 2048x64,
  B 64x64, so a task is 2048/(N-2) rows), waited for. Replies that come after the decode are
  received while the next job runs and counted there (in steady state every job pays for
  its own).
* ``call``: a handler that returns a 64-double array (no encode or decode): the control plane.

The work must grow at most linearly in ``N`` (the master sends ``N`` tasks and receives ``N``
replies). The driver fits ``time = a + b N`` (least squares; the slope ``b`` is the cost per
worker) and the log-log exponent ``d log time / d log N`` (1 = linear); it prints a table and
writes ``benchmarks/results/scale.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import machine_info  # noqa: E402


def child(jobs: int, out: Path) -> int:
    from mpi4py import MPI

    from codedml import MPICluster
    from codedml.runtime._cluster import ClusterBase
    from codedml.codes import MDSCode

    # CPU time of the thread doing the work (time.thread_time): 65 ranks share 2 cores, and a
    # wall-clock timer around a few microseconds of work mostly measures preemption.
    spent = {"encode": 0.0, "send": 0.0, "receive": 0.0, "decode": 0.0}

    depth = [0]  # a timed method calling another (the Python path's _send_many -> _send) counts once

    def timed(name, fn):
        def wrapper(self, *a, **k):
            if depth[0]:
                return fn(self, *a, **k)
            depth[0] += 1
            t = time.thread_time()
            try:
                return fn(self, *a, **k)
            finally:
                spent[name] += time.thread_time() - t
                depth[0] -= 1
        return wrapper

    # both transports: the Python path receives in _receive, the compiled one in
    # _poll_compiled (its arrivals, and a call's inline results booked there) less the time in
    # the engine's poll (see below); a call's arrays go to every worker through _send_many, a
    # job's tasks through _send_each
    MPICluster._send = timed("send", MPICluster._send)
    MPICluster._send_many = timed("send", MPICluster._send_many)
    MPICluster._send_each = timed("send", MPICluster._send_each)
    MPICluster._receive = timed("receive", MPICluster._receive)
    MPICluster._poll_compiled = timed("receive", MPICluster._poll_compiled)
    # (a landing job's wait goes through the general loop, so through _poll_compiled: its
    # shortcut, _wait_landed, calls the engine's poll itself and would decode inside it)
    MPICluster._wait_landed = ClusterBase._wait_landed

    class Engine:
        """The compiled engine, its poll's CPU time taken out of the receive: the poll spins
        (yielding) while replies are due, which is waiting, not the master's work."""

        def __init__(self, eng):
            self._eng = eng

        def __getattr__(self, name):
            return getattr(self._eng, name)

        def poll(self, *a):
            t = time.thread_time()
            try:
                return self._eng.poll(*a)
            finally:
                spent["receive"] -= time.thread_time() - t
    # on the class the jobs use, wrapping what it resolves to (MDSCode's decode is
    # PolyDotCode's, not LinearCode's: a wrapper on LinearCode.decode never ran, and the
    # decode column read 0 before this)
    MDSCode.encode = timed("encode", MDSCode.encode)
    MDSCode.decode = timed("decode", MDSCode.decode)

    def reply64(ctx, x, **_):
        return np.zeros(64)

    world = MPI.COMM_WORLD
    with MPICluster(world, handlers={"r64": reply64}, timeout=600) as cl:
        if cl is None:
            return 0
        if cl._eng is not None:
            cl._eng = Engine(cl._eng)
        n = cl.workers
        code = MDSCode(n, n - 2)
        rng = np.random.default_rng(0)
        A, B = rng.standard_normal((2048, 64)), rng.standard_normal((64, 64))
        ref = A @ B
        rows = {}
        for what in ("job", "call"):
            per = []
            for i in range(jobs + 5):
                for k in spent:
                    spent[k] = 0.0
                if what == "job":
                    job = cl.submit(A, B, code=code)
                    out_ = job.result()
                    err = float(np.linalg.norm(out_ - ref) / np.linalg.norm(ref))
                    if err > 1e-9:
                        raise AssertionError(f"job {i}: relative error {err:.2e}")
                else:
                    cl.call("r64", np.zeros(8)).wait()
                if i >= 5:  # warm-up
                    per.append(dict(spent))
            if what == "job" and not any(p["encode"] > 0 and p["decode"] > 0 for p in per):
                raise AssertionError("the encode or decode timer never ran: the job's figure "
                                     "would leave that work out")
            if not any(p["send"] > 0 and p["receive"] > 0 for p in per):
                raise AssertionError(f"the send or receive timer never ran ({what}, transport "
                                     f"{cl.transport_used}): the figure would leave that work out")
            tot = [sum(p.values()) for p in per]
            rows[what] = {"median_s": float(np.median(tot)),
                          **{f"{k}_median_s": float(np.median([p[k] for p in per])) for k in per[0]}}
        out.write_text(json.dumps({"workers": n, "jobs": jobs, "rows": rows,
                                   "transport": cl.transport_used}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="8 and 16 workers, 30 jobs")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    args = ap.parse_args(argv)
    if args.child:
        return child(args.jobs, args.child)
    if args.quick:
        args.workers, args.jobs = [8, 16], 30
    if any(n < 3 for n in args.workers):
        ap.error(f"--workers must all be at least 3, got {args.workers}")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    info = machine_info()
    points = []
    for n in args.workers:
        part = args.out.with_name(f".scale_{n}.json")
        part.unlink(missing_ok=True)
        cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "--oversubscribe", "-n", str(n + 1),
               sys.executable, str(Path(__file__).resolve()), "--child", str(part),
               "--jobs", str(args.jobs)]
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not part.exists():
            print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
            print(f"the {n}-worker run failed (exit {done.returncode})", file=sys.stderr)
            return 1
        doc = json.loads(part.read_text())
        part.unlink()
        doc["run_s"] = time.perf_counter() - t
        points.append(doc)
        print(f"{n} workers: job {1e3 * doc['rows']['job']['median_s']:.2f} ms, "
              f"call {1e3 * doc['rows']['call']['median_s']:.2f} ms of master work "
              f"({doc['run_s']:.0f} s)", flush=True)
    ns = np.array([p["workers"] for p in points], dtype=float)
    fits = {}
    for what in ("job", "call"):
        ts = np.array([p["rows"][what]["median_s"] for p in points])
        b, a = np.polyfit(ns, ts, 1)
        expo = float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) > 1 else float("nan")
        fits[what] = {"intercept_s": float(a), "slope_s_per_worker": float(b),
                      "loglog_exponent": expo, "at_most_linear": bool(expo <= 1.1)}
    print(f"\nmaster work per request (medians of {args.jobs}; MDSCode(n, n-2), 2048x64 @ 64x64)\n")
    print(f"{'workers':>7} {'job ms':>8} {'encode':>8} {'send':>8} {'receive':>8} {'decode':>8} "
          f"{'call ms':>8}")
    for p in points:
        j, c = p["rows"]["job"], p["rows"]["call"]
        print(f"{p['workers']:>7} {1e3 * j['median_s']:>8.3f} {1e3 * j['encode_median_s']:>8.3f} "
              f"{1e3 * j['send_median_s']:>8.3f} {1e3 * j['receive_median_s']:>8.3f} "
              f"{1e3 * j['decode_median_s']:>8.3f} {1e3 * c['median_s']:>8.3f}")
    for what, f in fits.items():
        print(f"{what}: {1e6 * f['slope_s_per_worker']:.1f} us per worker (+ "
              f"{1e3 * f['intercept_s']:.3f} ms), log-log exponent {f['loglog_exponent']:.2f} "
              f"({'at most linear' if f['at_most_linear'] else 'SUPERLINEAR'})")
    out = {"benchmark": "scale", "workers": args.workers, "jobs": args.jobs,
           "transport": sorted({p.get("transport", "python") for p in points}),
           "code": "MDSCode(n, n - 2)", "sizes": {"A": [2048, 64], "B": [64, 64]},
           "points": points, "fits": fits, "machine": info, "argv": sys.argv[1:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    plot(out, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [p["workers"] for p in doc["points"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for what, style in (("job", "o-"), ("call", "s-")):
        ts = [1e3 * p["rows"][what]["median_s"] for p in doc["points"]]
        f = doc["fits"][what]
        ax.plot(ns, ts, style, label=f"{what} (exponent {f['loglog_exponent']:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers")
    ax.set_ylabel("master work per request (ms)")
    ax.legend()
    ax.set_title(f"scale (commit {str(doc['machine'].get('commit'))[:8]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
