"""The root's Python for one small coded job, in one process, without MPI: before/after.

``control_plane.py`` times a job under ``mpiexec``, where the root shares two cores with the
workers that spin while they wait: its figures move by 2x between runs, and a change of a
few microseconds in the root's path hides in that. This script runs the same path,
``cluster.submit(A, B, code=code).result()`` on an ``MPICluster``, in one process: the
cluster's compiled engine is replaced by a stand-in that answers every request at once
with the workers' products as inline results (what the engine's poll hands over when the
replies came in the header's message, or lands in the waited-for job's buffers where the
tree's poll takes a ``hot`` job), so what is timed is the root's own work: the checks, the
encode, the ``Job``, the request's wire bytes, the booking of the results, the decode, the
settle. The stand-in's own time (its products, its events, its landing: work the real
engine does in C, differently for each variant) is timed apart and left out of the
``root us`` column (``with engine us`` keeps it). Where the
root's Python gets faster here, it gets faster at the root under MPI by two to three times
as much (docs/runtime.md, "Twenty-fifth session").

``--base`` times a base tree's package (imported as ``codedml_base``, as for
``control_plane_ab.py``) against this one, alternating in short blocks whose order turns
every other block::

    mkdir -p /tmp/ab && git archive <rev> codedml | tar -x -C /tmp/ab
    mv /tmp/ab/codedml /tmp/ab/codedml_base   # and copy in the built .so files
    python benchmarks/root_path.py --base /tmp/ab --base-rev <rev>

Which k results come first turns from job to job (the data workers' only, or with a
parity worker's), so the decode takes its assembly and its solve alike. Writes
``benchmarks/results/root_path.json`` and a PNG; the table gives medians per job.
"""

from __future__ import annotations

import argparse
import importlib
import struct
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import machine_info, write_json  # noqa: E402


def _timed(fn):
    """The stand-in's own time, kept apart (``spent``): the real engine does this work in C,
    so what is compared is the root's time without it."""
    def wrapper(self, *args):
        t = time.perf_counter()
        try:
            return fn(self, *args)
        finally:
            self.spent += time.perf_counter() - t
    wrapper.__name__ = fn.__name__
    return wrapper


class StandInEngine:
    """The compiled engine's calls a job makes at the root, answered in process: each request
    is answered by every worker it went to, with ``a @ b`` as an inline result, in an order
    that turns per job (so that which k results arrive first varies). A poll takes the
    queued replies in order, one a worker (a worker's next reply waits for the next poll, as
    the engine completes one header receive a worker per poll), and returns once it has
    ``want`` of them, as the engine's poll returns once ``want`` headers are in: the rest of
    a job's replies come at later polls, late ones as events (so a job decodes from the k
    results that came first, not the best k of all n)."""

    def __init__(self, result_code: int, job_at: int) -> None:
        self.queue: list = []
        self.result_code, self.job_at = result_code, job_at
        self.turn = 0
        self.spent = 0.0   # seconds in the stand-in's own methods (see _timed)

    def _answer(self, job, live, pairs):
        """Every listed worker's ``a @ b`` queued as its reply to ``job``."""
        out = [(w, job, a @ b) for w, (a, b) in zip(live, pairs)]
        self.turn = (self.turn + 1) % len(out)
        # the order turns: worker t first, then the rest in order
        self.queue.extend(out[self.turn:] + out[:self.turn])

    @_timed
    def request_many(self, live, ctrl, arrays, each):
        job = struct.unpack_from("<q", bytes(ctrl[:self.job_at + 8]), self.job_at)[0]
        self._answer(job, live, arrays if each else [arrays] * len(live))
        return []

    @_timed
    def request_stack(self, live, ctrl, job, tasks, b):
        self._answer(job, live, [(tasks[w], b) for w in live])
        return []

    @_timed
    def poll(self, deadline, spin_until, pause, max_pause, want=1, hot=None):
        got, rest, workers = [], [], set()
        for item in self.queue:
            if len(got) < want and item[0] not in workers:
                got.append(item)
                workers.add(item[0])
            else:
                rest.append(item)
        self.queue = rest
        events = got
        if hot is not None:
            # the compiled poll's landing: the hot job's float64 results that fit its slots,
            # each worker's once, copied into them and counted in `have` (no event each);
            # the other replies stay events
            job, land, have = hot
            n0 = int(have[0])
            seen = set(have[1:1 + n0].tolist())
            ws, ps, events = [], [], []
            for w, j, p in got:
                if (j == job and p.dtype == np.float64 and p.shape == land.shape[1:]
                        and w not in seen and n0 + len(ws) < len(land)):
                    ws.append(w)
                    ps.append(p)
                    seen.add(w)
                else:
                    events.append((w, j, p))
            if ws:
                land[ws] = ps
                have[1 + n0:1 + n0 + len(ws)] = ws
                have[0] = n0 + len(ws)
        return [(w, 0, (j, self.result_code, 0, 0, p.shape, 1000, p.nbytes,
                        bytearray(p.tobytes()))) for w, j, p in events]

    @_timed
    def cancel(self, w, job):
        pass

    def request(self, w, ctrl, arrays):
        self.request_many([w], ctrl, [arrays], True)


def stand_in_cluster(pkg: str, workers: int):
    """An ``MPICluster`` of package ``pkg`` (``codedml`` or a base tree's) built without MPI:
    the request core as ``MPICluster.__init__`` makes it, the engine a
    :class:`StandInEngine`, no progress thread (the caller pumps, as on MPI)."""
    mpi = importlib.import_module(f"{pkg}.runtime.mpi")
    protocol = importlib.import_module(f"{pkg}.runtime.protocol")
    base = importlib.import_module(f"{pkg}.runtime._cluster").ClusterBase
    cl = object.__new__(mpi.MPICluster)
    base.__init__(cl, workers, 60.0, None)
    cl.root, cl._ranks, cl.rank = 0, list(range(1, workers + 1)), 0
    cl._outgoing, cl._hdr, cl._hdr_bufs, cl._notices = [], {}, {}, []
    cl._bye, cl._pause, cl._hot_until, cl._ctrl_memo = set(), 1e-4, 0.0, None
    cl._stack_ctrl, cl._stack_layouts = {}, {}
    if hasattr(base, "_lands"):
        cl._lands = True   # (as MPICluster sets it on a root with the compiled engine)
    cl.protocol_errors = deque(maxlen=100)
    cl._eng = StandInEngine(mpi._RESULT, protocol._JOB_AT)
    cl._weng, cl.spin_yield, cl.crowded_workers = None, True, frozenset()
    cl.transport_used = "compiled"
    cl._thread, cl._parked = object(), False   # (no progress thread: never started)
    return cl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=None,
                    help="folder holding a base tree's package as codedml_base (optional)")
    ap.add_argument("--base-rev", default=None, help="the commit the base tree came from")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--size", type=int, default=4, help="A and B are size x size (default 4)")
    ap.add_argument("--blocks", type=int, default=40)
    ap.add_argument("--block", type=int, default=300, help="jobs per block (default 300)")
    ap.add_argument("--quick", action="store_true", help="6 blocks of 100")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "root_path.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.blocks, args.block = 6, 100
    if args.workers < 3:
        ap.error(f"--workers must be at least 3 (MDSCode(n, n - 2)), got {args.workers}")
    variants = {"this": "codedml"}
    if args.base is not None:
        sys.path.insert(0, str(args.base))
        variants = {"base": "codedml_base", "this": "codedml"}
    rng = np.random.default_rng(0)
    A = rng.standard_normal((args.size, args.size))
    want = A @ A
    n = args.workers
    setups = {}
    for name, pkg in variants.items():
        code = importlib.import_module(f"{pkg}.codes").MDSCode(n, n - 2)
        cl = stand_in_cluster(pkg, n)
        for _ in range(2 * n):   # warm, and every turn's answer checked
            got = cl.submit(A, A, code=code).result()
            err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
            if not err < 1e-12:
                raise RuntimeError(f"{name}: a wrong product (relative error {err:.1e})")
        setups[name] = (cl, code)
    times: dict[str, list[float]] = {name: [] for name in variants}
    whole: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for block in range(args.blocks):
        for name in (order if block % 2 == 0 else order[::-1]):
            cl, code = setups[name]
            spent = cl._eng.spent
            t = time.perf_counter()
            for _ in range(args.block):
                cl.submit(A, A, code=code).result()
            took = time.perf_counter() - t
            whole[name].append(took / args.block)
            times[name].append((took - (cl._eng.spent - spent)) / args.block)
    rows = {name: {"median_s": float(np.median(v)), "p10_s": float(np.percentile(v, 10)),
                   "p90_s": float(np.percentile(v, 90)), "blocks": len(v),
                   "with_stand_in_s": float(np.median(whole[name]))}
            for name, v in times.items()}
    print(f"\nthe root's path of one job in one process ({code!r}, {args.size}x{args.size}; "
          f"{args.blocks} blocks of {args.block} jobs, medians per job; the root's time "
          f"without the stand-in engine's, and with it)\n")
    print(f"{'variant':<8} {'root us':>8} {'p10 us':>8} {'p90 us':>8} {'with engine us':>15}")
    for name, r in rows.items():
        print(f"{name:<8} {1e6 * r['median_s']:>8.2f} {1e6 * r['p10_s']:>8.2f} "
              f"{1e6 * r['p90_s']:>8.2f} {1e6 * r['with_stand_in_s']:>15.2f}")
    ratio = rows["this"]["median_s"] / rows["base"]["median_s"] if "base" in rows else None
    if ratio is not None:
        print(f"this / base = {ratio:.2f}")
    doc = {"benchmark": "root_path", "workers": n, "size": args.size, "code": repr(code),
           "blocks": args.blocks, "block": args.block, "rows": rows, "this_over_base": ratio,
           "base": str(args.base) if args.base else None, "base_rev": args.base_rev,
           "machine": machine_info(), "argv": sys.argv[1:] if argv is None else argv}
    write_json(args.out, doc)
    plot(doc, args.out.with_suffix(".png"))
    return 0


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["rows"])
    fig, ax = plt.subplots(figsize=(6, 2 + 0.4 * len(names)))
    ax.barh(names, [1e6 * doc["rows"][k]["median_s"] for k in names], color="tab:blue")
    ax.set_xlabel("median us per job (the root's path, one process)")
    ax.set_title(f"{doc['code']}, {doc['size']}x{doc['size']} "
                 f"(commit {str(doc['machine'].get('commit'))[:8]})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
