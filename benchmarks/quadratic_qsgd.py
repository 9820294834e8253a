"""Benchmark: linear convergence of a quadratic network to the global optimum, SGD and QSGD.

The ``quadratic`` task (``codedml/train/quadratic.py``): ``y = sum_j (w_j . x)^2`` with a
planted rank-``r`` teacher on seeded Gaussian data, a student of ``r`` units. Every variant
trains with ``sync`` on ``--workers`` local worker threads, with the same learning rate
(the 3-level QSGD also at a quarter of it, listed separately), mini-batch size, data and seed: float32 gradients (SGD) and QSGD at 255, 15 and 3 levels (8, 4 and 2 level
bits + a sign bit). Reported per variant, in one run: the steps and the bits received to reach
``--target`` (training loss), the bits as a fraction of SGD's, and the final loss. The loss
against steps on a log scale is a straight line down to float32's floor for every variant that converges: the
linear convergence the theory predicts (see docs/train.md, "Quadratic networks").

    python benchmarks/quadratic_qsgd.py [--steps 400] [--dim 10] [--rank 2] [--lr 0.05]

Outputs: a table on stdout, ``benchmarks/results/quadratic_qsgd.json`` (with machine info) and
``.png`` (loss vs steps and loss vs bits, log scales).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import machine_info  # noqa: E402

#: (name, QSGD levels (0: float32), learning-rate factor). QSGD's variance bound
#: min(D/s^2, sqrt(D)/s) ||g||^2 grows as s falls: at 3 levels the full rate diverges, a quarter
#: of it converges (both reported).
VARIANTS = [("SGD float32", 0, 1.0), ("QSGD 255 levels", 255, 1.0), ("QSGD 15 levels", 15, 1.0),
            ("QSGD 3 levels", 3, 1.0), ("QSGD 3 levels lr/4", 3, 0.25)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--rank", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--target", type=float, default=1e-9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "quadratic_qsgd.json"))
    a = ap.parse_args(argv)

    from codedml.train.dataquant import run
    from codedml.train.quadratic import quadratic_task

    task = quadratic_task(a.dim, a.rank, a.samples, seed=0)
    rows = []
    for name, levels, f in VARIANTS:
        r = run(task, data_bits=0, policy="sync", workers=a.workers, steps=a.steps, lr=a.lr * f,
                batch=a.batch, qsgd=levels, seed=a.seed, eval_every=1, target_loss=a.target)
        rows.append({"variant": name, "qsgd": levels, "lr": a.lr * f, **r})
    base = rows[0]["bits_to_target"]
    print(f"quadratic network d={a.dim} r={a.rank}, {a.workers} workers, lr {a.lr}, batch "
          f"{a.batch}; target loss {a.target:g}")
    print(f"{'variant':<18}{'steps to target':>16}{'bits to target':>16}{'vs SGD':>8}{'final loss':>12}")
    for r in rows:
        ratio = (f"{r['bits_to_target'] / base:.3f}" if r["bits_to_target"] and base else "-")
        print(f"{r['variant']:<18}{str(r['rounds_to_target']):>16}{str(r['bits_to_target']):>16}"
              f"{ratio:>8}{r['loss']:>12.2e}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the JSON keeps every 5th point of each curve (the plot draws them all)
    thin = [{**r, "curve": r["curve"][::5] + r["curve"][-1:]} for r in rows]
    out.write_text(json.dumps({"benchmark": "quadratic_qsgd", "args": vars(a),
                               "machine": machine_info(), "rows": thin}, default=str) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        ax1.plot([c["step"] for c in r["curve"]], [c["loss"] for c in r["curve"]], label=r["variant"])
        ax2.plot([c["bits"] for c in r["curve"]], [c["loss"] for c in r["curve"]], label=r["variant"])
    for ax, xl in ((ax1, "step"), (ax2, "bits received")):
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss")
        ax.axhline(a.target, color="grey", lw=0.5)
    ax2.set_xscale("log")
    ax1.legend()
    fig.suptitle(f"quadratic network (d={a.dim}, r={a.rank}): linear convergence, SGD vs QSGD")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
