"""Control-plane overhead: codedml's requests with empty work against bare mpi4py, one run.

One ``mpiexec`` job; rank 0 is the root, the others workers (6 workers intended)::

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \\
    mpiexec --oversubscribe -n 7 python benchmarks/control_plane.py [--repeats 300] [--quick]

Measured side by side, each the median over ``--repeats`` rounds, on the same ranks:

* ``bare``: the root ``Isend``s a small float64 array to every worker and ``Irecv``s one back
  from each (``Waitall``); workers echo. The floor any master/worker runtime pays.
* ``python floor``: the least a request path written in Python does (:func:`floor_rounds`):
  a ``struct`` header and the payload each way, the root polling ``Testsome`` and yielding
  the core, workers spinning on ``Iprobe``; none of codedml's checks, futures, deadlines or
  fault handling. What a request costs in Python before any of those: the ratio to bare
  that no Python runtime with a request header gets under on these ranks.
* ``call``: ``cluster.call`` of a registered handler that echoes its input (the typed
  request, the reply header, the future and the progress thread; no decode).
* every codedml row twice where the compiled per-message path is built: on it (the default,
  ``transport="compiled"``) and on the Python one (``", Python path"``); their ratio is
  ``compiled_over_python`` in the JSON.
* ``job``: ``cluster.submit`` of a tiny product (4x4 @ 4x4, ``MDSCode(n, n - 2)``): the same
  plus encode and decode. Its row also splits each job into the codes' part (the job's own
  ``encode_time``, from submission through the encode and the checks before it, and
  ``t_decode``) and the rest (``runtime_*``: the requests, the workers' products, the replies
  and the job's bookkeeping), medians over the same jobs.
* ``floor job`` (the compiled path only): the same 4x4 job's essential steps alone, on the
  cluster's own engine under its lock (:func:`floor_job`): the code's encode, one
  ``request_stack``, ``poll`` with the job's landing until k of its results have landed,
  the code's decode, a cancel to each worker not heard (the engine calls the job itself
  makes); no Future, no Job object, no booking of replies, no settle, no deadline. What the job would cost if the runtime's bookkeeping were free: the
  ``job`` row over this one is that bookkeeping's share.
* ``train step``: ``codedml.train.fit`` under the ``sync`` policy with a gradient handler that
  returns zeros at once (the digits logistic regression's 650 parameters): request, gather,
  the root's SGD step and bookkeeping per step, with no gradient computed.

The rounds run in ``--blocks`` interleaved blocks (bare, floor, then each transport, the order
of the transports alternating), so slow phases of the shared machine hit every row alike.
Ratios are to ``bare`` with the same payload. Targets (issue 11): a request at most 3x the
bare round trip, a training step at most 2 ms at 6 workers. With more ranks than cores the
absolute times include scheduling; the ratios compare like with like. Writes
``benchmarks/results/control_plane.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import machine_info  # noqa: E402

TAG = 77
FLOOR_ROW = "python floor (struct header + payload each way, no checks)"


def bare_rounds(comm, repeats: int, size: int) -> list[float]:
    """Root side of the bare round trip; workers run :func:`bare_serve`."""
    from mpi4py import MPI

    n = comm.Get_size() - 1
    out = np.zeros(size)
    back = [np.empty(size) for _ in range(n)]
    times = []
    for r in range(repeats + 1):
        out[0] = r
        t = time.perf_counter()
        reqs = [comm.Isend(out, dest=w, tag=TAG) for w in range(1, n + 1)]
        reqs += [comm.Irecv(back[w - 1], source=w, tag=TAG) for w in range(1, n + 1)]
        MPI.Request.Waitall(reqs)
        if r:  # the first round warms the connections
            times.append(time.perf_counter() - t)
    out[0] = -1.0
    MPI.Request.Waitall([comm.Isend(out, dest=w, tag=TAG) for w in range(1, n + 1)])
    return times


def bare_serve(comm, size: int) -> None:
    buf = np.empty(size)
    while True:
        comm.Recv(buf, source=0, tag=TAG)
        if buf[0] < 0:
            return
        comm.Send(buf, dest=0, tag=TAG)


_FLOOR_HEAD = struct.Struct("<iiqq")  # op, job, count, spare: what any request header carries


def floor_rounds(comm, repeats: int, size: int) -> list[float]:
    """Root side of the Python floor: the least a request path written in Python does, with
    none of codedml's checks, futures, deadlines or fault handling. Per worker a 24-byte
    ``struct`` header and the payload go out (two ``Isend``), a header receive is posted; the
    root polls ``Testsome`` (yielding the core between polls, as ranks share cores), parses
    each reply header and receives its payload. Workers run :func:`floor_serve`."""
    from mpi4py import MPI

    n = comm.Get_size() - 1
    x = np.zeros(size)
    hbufs = [np.empty(_FLOOR_HEAD.size, dtype=np.uint8) for _ in range(n)]
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        hdr = np.frombuffer(_FLOOR_HEAD.pack(1, r, size, 0), dtype=np.uint8)
        out = []
        for w in range(1, n + 1):
            out.append(comm.Isend(hdr, dest=w, tag=TAG + 1))
            out.append(comm.Isend(x, dest=w, tag=TAG + 2))
        reqs = [comm.Irecv(hbufs[w - 1], source=w, tag=TAG + 3) for w in range(1, n + 1)]
        left = set(range(n))
        while left:
            done = MPI.Request.Testsome(reqs)
            if not done:
                os.sched_yield()
                continue
            for i in done:
                _, _, count, _ = _FLOOR_HEAD.unpack(hbufs[i].tobytes())
                comm.Recv(np.empty(count), source=i + 1, tag=TAG + 4)
                left.discard(i)
        MPI.Request.Waitall(out)
        if r:
            times.append(time.perf_counter() - t)
    stop = np.frombuffer(_FLOOR_HEAD.pack(0, -1, 0, 0), dtype=np.uint8)
    MPI.Request.Waitall([comm.Isend(stop, dest=w, tag=TAG + 1) for w in range(1, n + 1)])
    return times


def floor_serve(comm) -> None:
    """Worker side of the Python floor: spin on ``Iprobe`` (yielding the core), receive the
    header and payload, call an echo handler through a dict, reply header + payload."""
    from mpi4py import MPI

    handlers = {"echo": lambda a: a}
    status = MPI.Status()
    hb = np.empty(_FLOOR_HEAD.size, dtype=np.uint8)
    pending: list = []
    while True:
        while not comm.Iprobe(source=0, tag=TAG + 1, status=status):
            os.sched_yield()
        comm.Recv(hb, source=0, tag=TAG + 1)
        op, job, count, _ = _FLOOR_HEAD.unpack(hb.tobytes())
        if op == 0:
            MPI.Request.Waitall([q for q, _ in pending])
            return
        x = np.empty(count)
        comm.Recv(x, source=0, tag=TAG + 2)
        y = np.ascontiguousarray(handlers["echo"](x))
        rh = np.frombuffer(_FLOOR_HEAD.pack(1, job, y.size, 0), dtype=np.uint8)
        pending = [(q, b) for q, b in pending if not q.Test()]
        pending.append((comm.Isend(rh, dest=0, tag=TAG + 3), rh))
        pending.append((comm.Isend(y, dest=0, tag=TAG + 4), y))


FLOOR_JOB_ROW = ("floor job (the 4x4 job's essential steps: encode, one request_stack, poll "
                 "landing k results, decode, cancels; no Future or bookkeeping)")


def floor_job(cluster, code, A: np.ndarray):
    """A function that runs one coded job's essential steps on ``cluster``'s compiled engine,
    under its lock (see the module docstring), and returns the decoded product; what does
    not change between jobs (the imports, the workers, the request's form) is made here,
    once, outside the timed calls. Each job's id comes from the cluster's own sequence, so
    the replies it does not wait for are, to the cluster, results of a request nobody holds
    (dropped as such); a reply the loop meets that is neither its own nor an earlier floor
    job's result stops the benchmark rather than being swallowed."""
    from codedml.runtime import mpi
    from codedml.runtime._cluster import _matmul_request

    n, k = code.workers, code.recovery_threshold
    eng, workers, req = cluster._eng, list(range(n)), _matmul_request(code.field, False)
    own: set[int] = set()   # the ids of this function's jobs
    ta, tb = code.encode(A, A)._stack
    ctrl = req.with_arrays([ta[0], tb]).to_bytes().tobytes()   # (the cluster keeps it per layout)

    def one() -> np.ndarray:
        with cluster._lock:
            enc = code.encode(A, A)
            ta, tb = enc._stack
            jid = cluster._next_job
            cluster._next_job += 1
            own.add(jid)
            eng.request_stack(workers, ctrl, jid, ta, tb)
            land = np.empty((n, *ta.shape[1:-1], *tb.shape[1:]))
            have = np.zeros(n + 1, np.int64)
            end = time.perf_counter() + 10.0
            while have[0] < k:
                if time.perf_counter() > end:
                    raise RuntimeError(f"floor job {jid}: {have[0]} of {k} results in 10 s")
                now = time.perf_counter()
                # (every event: an earlier floor job's late result; this job's land)
                for w, what, v in eng.poll(now + 0.05, now + 0.002, mpi._MIN_PAUSE,
                                           mpi._MAX_PAUSE, k - int(have[0]), (jid, land, have)):
                    if what != 0 or v[1] != mpi._RESULT or v[0] not in own or v[0] == jid:
                        raise RuntimeError(f"floor job {jid}: an unexpected reply from worker "
                                           f"{w}: {what}, {v[:3]}")
            heard = have[1:1 + int(have[0])].tolist()
            C = code.decode({w: land[w] for w in heard[:k]}, 0, encoding=enc)
            for w in workers:
                if w not in heard:
                    eng.cancel(w, jid)
        return C

    return one


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=300, help="requests per row (default 300)")
    ap.add_argument("--steps", type=int, default=200, help="training steps per transport (default 200)")
    ap.add_argument("--blocks", type=int, default=3,
                    help="interleaved blocks (each: bare, floor, then each transport; default 3)")
    ap.add_argument("--quick", action="store_true", help="60 repeats, 60 steps")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "control_plane.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.steps = 60, 60
    from mpi4py import MPI

    from codedml import MPICluster
    from codedml.codes import MDSCode
    from codedml.runtime.mpi import wire_status
    from codedml.train import TrainConfig, digits_task, fit
    from codedml.train.task import HANDLER

    world = MPI.COMM_WORLD
    n = world.Get_size() - 1
    if n < 2:
        print("run under mpiexec with at least 3 ranks", file=sys.stderr)
        return 2
    task = digits_task("logreg")
    nparams = sum(p.numel() for p in task.model().parameters())  # task.model: a constructor
    sizes = {"tiny (8 doubles)": 8, f"gradient ({nparams + 1} doubles)": nparams + 1}
    compiled, why = wire_status()
    transports = ["compiled", "python"] if compiled else ["python"]
    per_block = max(1, args.repeats // args.blocks)
    steps = max(1, args.steps // args.blocks)

    def echo(ctx, x, **_):
        return x

    def zero_grad(ctx, flat, **_):
        return np.zeros(nparams + 1)

    bare: dict[str, list[float]] = {k: [] for k in sizes}
    floor: dict[str, list[float]] = {k: [] for k in sizes}
    samples: dict[tuple[str, str, str], list[float]] = {}
    parts: dict[tuple[str, str, str], list[tuple[float, float]]] = {}  # jobs: (encode, decode)
    fits: dict[str, list[tuple[float, int, float]]] = {t: [] for t in transports}
    info = machine_info() if world.Get_rank() == 0 else None
    for block in range(args.blocks):
        # bare and floor first in every block, then each transport: all side by side in time
        comm = world.Dup()
        for label, size in sizes.items():
            if world.Get_rank() == 0:
                bare[label] += bare_rounds(comm, per_block, size)
                floor[label] += floor_rounds(comm, per_block, size)
            else:
                bare_serve(comm, size)
                floor_serve(comm)
        comm.Free()
        for transport in transports if block % 2 == 0 else transports[::-1]:
            with MPICluster(world, handlers={"echo": echo, HANDLER: zero_grad}, timeout=60,
                            transport=transport) as cluster:
                if cluster is None:
                    continue

                def timed(label: str, what: str, fn) -> None:
                    fn()  # warm
                    ts = samples.setdefault((transport, what, label), [])
                    for _ in range(per_block):
                        t = time.perf_counter()
                        fn()
                        ts.append(time.perf_counter() - t)

                for label, size in sizes.items():
                    x = np.zeros(size)
                    timed(label, "call (echo handler)", lambda: cluster.call("echo", x).result())
                code = MDSCode(n, max(1, n - 2))
                A = np.ones((4, 4))
                what = f"job ({code!r}, 4x4 @ 4x4)"
                jobs = parts.setdefault((transport, what, "tiny (8 doubles)"), [])

                def job() -> None:
                    j = cluster.submit(A, A, code=code)
                    j.result()
                    jobs.append((j.encode_time, j.t_decode))

                n0 = len(jobs)   # (one list for every block)
                timed("tiny (8 doubles)", what, job)
                del jobs[n0]   # this block's warm-up
                if transport == "compiled" and getattr(cluster, "_eng", None) is not None:
                    cluster.drain(0.01)   # the jobs' late replies, routed by the cluster
                    one = floor_job(cluster, code, A)
                    err = np.abs(one() - A @ A).max()
                    if not err <= 1e-12 * np.abs(A @ A).max():   # (a solve rounds)
                        raise RuntimeError(f"the floor job decoded a wrong product (error {err})")
                    timed("tiny (8 doubles)", FLOOR_JOB_ROW, one)
                    cluster.drain(0.01)   # its own late replies, before anything else
                cfg = TrainConfig(policy="sync", steps=steps, eval_every=steps, batch=16)
                t = time.perf_counter()
                res = fit(cluster, task, cfg)
                fits[transport].append((res.wall, res.steps, time.perf_counter() - t))
        if world.Get_rank() == 0:
            print(f"block {block + 1}/{args.blocks} done", file=sys.stderr, flush=True)
    if world.Get_rank() != 0:
        return 0

    rows: list[dict] = [
        {"request": FLOOR_ROW, "payload": label, "transport": None, "median_s": float(np.median(ts)),
         "p90_s": float(np.percentile(ts, 90)), "repeats": len(ts)} for label, ts in floor.items()]
    for (transport, what, label), ts in samples.items():
        rows.append({"request": what + ("" if transport == transports[0] else ", Python path"),
                     "payload": label, "transport": transport, "median_s": float(np.median(ts)),
                     "p90_s": float(np.percentile(ts, 90)), "repeats": len(ts)})
        jp = parts.get((transport, what, label))
        if jp:   # a job: the codes' part and the rest, per job
            enc, dec = np.array(jp).T
            rows[-1].update(encode_median_s=float(np.median(enc)),
                            decode_median_s=float(np.median(dec)),
                            runtime_median_s=float(np.median(np.array(ts) - enc - dec)))
    for transport in transports:
        wall = sum(w for w, _, _ in fits[transport])
        nsteps = sum(s for _, s, _ in fits[transport])
        rows.append({"request": "train step (sync, zero-work gradients)"
                     + ("" if transport == transports[0] else ", Python path"),
                     "payload": f"gradient ({nparams + 1} doubles)", "transport": transport,
                     "median_s": wall / max(1, nsteps), "p90_s": None, "repeats": nsteps,
                     "fit_wall_s": sum(f for _, _, f in fits[transport])})

    bare_med = {k: float(np.median(v)) for k, v in bare.items()}
    for r in rows:
        r["bare_median_s"] = bare_med[r["payload"]]
        r["ratio_to_bare"] = r["median_s"] / r["bare_median_s"]
        if "runtime_median_s" in r:
            r["runtime_ratio_to_bare"] = r["runtime_median_s"] / r["bare_median_s"]
    speedup = {}
    if len(transports) == 2:  # the compiled path against the Python one, same run
        by = {(r["transport"], r["request"].replace(", Python path", ""), r["payload"]): r["median_s"]
              for r in rows if r["transport"]}
        speedup = {f"{what} | {label}": by[("compiled", what, label)] / v
                   for (t, what, label), v in by.items() if t == "python"}
    print(f"\ncontrol plane, {n} workers (MPI ranks), medians of {per_block * args.blocks} "
          f"rounds in {args.blocks} interleaved blocks; transport: {transports[0]} ({why})\n")
    print(f"{'request':<62} {'payload':<24} {'median ms':>9} {'bare ms':>8} {'ratio':>6}")
    for k, v in bare_med.items():
        print(f"{'bare mpi4py Isend/Irecv round trip':<62} {k:<24} {1e3 * v:>9.3f} {1e3 * v:>8.3f} "
              f"{1.0:>6.2f}")
    for r in rows:
        print(f"{r['request'][:62]:<62} {r['payload']:<24} {1e3 * r['median_s']:>9.3f} "
              f"{1e3 * r['bare_median_s']:>8.3f} {r['ratio_to_bare']:>6.2f}")
    for r in rows:
        if "runtime_median_s" in r:
            print(f"  {r['request'][:60]}: encode {1e3 * r['encode_median_s']:.3f} ms, decode "
                  f"{1e3 * r['decode_median_s']:.3f} ms, the rest {1e3 * r['runtime_median_s']:.3f} "
                  f"ms ({r['runtime_ratio_to_bare']:.2f}x bare)")
    for k, v in speedup.items():
        print(f"compiled / Python path: {k}: {v:.2f}")
    doc = {"benchmark": "control_plane", "workers": n, "repeats": per_block * args.blocks,
           "blocks": args.blocks, "transport": transports[0], "transport_why": why,
           "bare_median_s": bare_med, "rows": rows, "compiled_over_python": speedup,
           "targets": {"request_ratio_to_bare": 3.0, "train_step_s_at_6_workers": 0.002},
           "machine": info, "argv": sys.argv[1:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    plot(doc, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"bare\n{k}" for k in doc["bare_median_s"]] + \
        [f"{r['request'][:28]}\n{r['payload']}" for r in doc["rows"]]
    vals = [1e3 * v for v in doc["bare_median_s"].values()] + [1e3 * r["median_s"] for r in doc["rows"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.barh(labels, vals, color="tab:blue")
    ax.set_xlabel("median ms per request / step")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"control plane, {doc['workers']} workers "
                 f"(commit {str(doc['machine'].get('commit'))[:8]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    try:
        status = main()
    except BaseException:
        # an error on one rank must end the whole job (the others would wait for it in the
        # next block's collectives forever), with a status that says so
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
        raise
    sys.exit(status)
