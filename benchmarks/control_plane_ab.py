"""Before/after of the control plane in one run: a bare mpi4py round trip, the runtime of a
base tree and the runtime of this tree, interleaved in blocks on the same ranks.

The base tree's ``codedml`` package is imported under another name (the package uses only
relative imports). Take the base at the branch point, not a main that has moved on (other
branches' encode and decode changes would then show up in the job times)::

    mkdir -p /tmp/ab && git archive $(git merge-base HEAD main) codedml | tar -x -C /tmp/ab
    mv /tmp/ab/codedml /tmp/ab/codedml_base
    mpiexec --oversubscribe -n 3 python benchmarks/control_plane_ab.py --base /tmp/ab

Blocks of ``--block`` rounds of each variant alternate ``--blocks`` times, in an order
reversed every other block, so slow phases of a shared machine and the place in a block hit
every variant alike; the table gives medians and ratios to ``bare``
(``--steps``: also the mean training step of a ``sync`` fit per block, with zero-work gradients;
its row is the median over blocks).
Writes ``benchmarks/results/control_plane_ab[_<n>workers].json``; no plot (the table is the
result).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import machine_info  # noqa: E402
from control_plane import bare_rounds, bare_serve  # noqa: E402


def echo(ctx, x, **_):
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True,
                    help="folder holding the base tree's package as codedml_base")
    ap.add_argument("--variants", default="base=codedml_base,this=codedml",
                    help="name=package pairs, comma-separated (default: %(default)s)")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--steps", type=int, default=0,
                    help="also time a sync training step with zero-work gradients (the digits "
                         "logistic regression, as control_plane.py), this many steps per block")
    ap.add_argument("--size", type=int, default=8,
                    help="float64 values a call and a bare round trip carry each way (default 8)")
    ap.add_argument("--base-rev", default=None,
                    help="the commit the base tree was exported from (recorded in the JSON)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.base))
    from mpi4py import MPI

    variants = dict(v.split("=", 1) for v in args.variants.split(","))
    world = MPI.COMM_WORLD
    n = world.Get_size() - 1
    root = world.Get_rank() == 0
    if args.size < 1:
        ap.error(f"--size must be at least 1, got {args.size}")
    x = np.zeros(args.size)
    A = np.ones((4, 4))
    times: dict[str, list[float]] = {}

    def timed(key: str, fn) -> None:
        fn()
        for _ in range(args.block):
            t = time.perf_counter()
            fn()
            times.setdefault(key, []).append(time.perf_counter() - t)

    for block in range(args.blocks):
        comm = world.Dup()
        if root:
            times.setdefault("bare", []).extend(bare_rounds(comm, args.block, args.size))
        else:
            bare_serve(comm, args.size)
        comm.Free()
        # the variants' order reversed every other block: the one run first in a block
        # measured up to 7% faster than the same code run second (a position effect larger
        # than the changes compared)
        order = list(variants.items())
        for name, pkg in (order if block % 2 == 0 else order[::-1]):
            code = importlib.import_module(f"{pkg}.codes").MDSCode(n, max(1, n - 2))
            handlers = {"echo": echo}
            if args.steps:
                train = importlib.import_module(f"{pkg}.train")
                task = train.digits_task("logreg")
                nparams = sum(p.numel() for p in task.model().parameters())
                handlers[importlib.import_module(f"{pkg}.train.task").HANDLER] = \
                    lambda ctx, flat, **_: np.zeros(nparams + 1)
            with importlib.import_module(f"{pkg}.runtime").MPICluster(
                    world, handlers=handlers, timeout=60) as cl:
                if cl is not None:
                    timed(f"call {name}", lambda: cl.call("echo", x).result())
                    timed(f"job {name}", lambda: cl.submit(A, A, code=code).result())
                    if args.steps:
                        cfg = train.TrainConfig(policy="sync", steps=args.steps,
                                                eval_every=args.steps, batch=16)
                        res = train.fit(cl, task, cfg)
                        times.setdefault(f"step {name}", []).append(res.wall / max(1, res.steps))
    if not root:
        return 0
    bare = float(np.median(times["bare"]))
    rows = {k: {"median_s": float(np.median(v)), "ratio_to_bare": float(np.median(v)) / bare,
                "p10_s": float(np.percentile(v, 10)), "p90_s": float(np.percentile(v, 90)),
                "repeats": len(v)} for k, v in times.items()}
    print(f"\ncontrol plane before/after, {n} workers, {args.blocks} blocks of {args.block}\n")
    print(f"{'request':<16} {'median us':>10} {'p10 us':>8} {'p90 us':>8} {'ratio to bare':>14}")
    for k, r in rows.items():
        print(f"{k:<16} {1e6 * r['median_s']:>10.1f} {1e6 * r['p10_s']:>8.1f} "
              f"{1e6 * r['p90_s']:>8.1f} {r['ratio_to_bare']:>14.2f}")
    first = next(iter(variants))
    for name in list(variants)[1:]:
        for what in ("call", "job") + (("step",) if args.steps else ()):
            print(f"{what}: {name} / {first} = "
                  f"{rows[f'{what} {name}']['median_s'] / rows[f'{what} {first}']['median_s']:.2f}")
    out = args.out or HERE / "results" / (
        "control_plane_ab.json" if n == 6 else f"control_plane_ab_{n}workers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "control_plane_ab", "workers": n, "size": args.size,
                               "rows": rows, "base": str(args.base), "base_rev": args.base_rev, "machine": machine_info(),
                               "argv": sys.argv[1:]}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
