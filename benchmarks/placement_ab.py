"""Where the task pool places a task in its page, two rules side by side in one process.

The pool (``codedml/codes/_pool.py``) starts a task that is copied from a source ``_GAP``
bytes before the cache line holding the source's first byte, modulo 4 KiB. This script
alternates ``code.encode(A, B)`` between two or more values of ``_GAP`` (default: 0, the rule
until the thirty-fourth session, the task on its source's own line, against the library's
value), the order swapped every round, each encode after ``encode.py``'s ``evict`` and into
the memory of the encode just before (the steady state of a job that encodes again and again),
for each case, size and placement of the inputs in their page: 16 bytes into one (where
numpy's large arrays start: glibc's ``mmap`` ed blocks keep a 16-byte header) and on a
cache line (as arrays from glibc's heap or another allocator often start). It prints a table
and writes ``benchmarks/results/placement_ab.json`` (and ``.png``)::

    python benchmarks/placement_ab.py                       # 1024 and 2048, 9 rounds
    python benchmarks/placement_ab.py --quick               # 512, 5 rounds
    python benchmarks/placement_ab.py --gaps 0 256 512 1024 --cases f32-sys

``gap / first`` below 1 means that gap's placement encodes faster than the first one's. Both
placements' tasks are compared entry for entry (a placement moves memory, not arithmetic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)
from encode import evict  # noqa: E402  (benchmarks/encode.py)
from kernel_ab import CASES, inputs, keyed_cases  # noqa: E402  (the same cases and inputs)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codedml.codes import _pool  # noqa: E402

#: Where the inputs start in their page (bytes): numpy's large arrays, and a cache line.
OFFSETS = (16, 0)


def placed(x: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``x`` whose data starts ``offset`` bytes into a 4 KiB page."""
    raw = np.empty(x.nbytes + 8192, np.uint8)
    start = (offset - raw.__array_interface__["data"][0]) % 4096
    out = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def tasks_of(enc) -> list[np.ndarray]:
    return [np.array(x) for t in enc for x in (t.a, t.b)]


def run(keys: list[str], sizes: list[int], gaps: list[int], rounds: int,
        rng: np.random.Generator) -> list[dict]:
    codes = keyed_cases()
    saved = _pool._GAP
    rows = []
    try:
        for size in sizes:
            data = inputs(size, rng)
            for key in keys:
                label, dtype, code = codes[key]
                for offset in OFFSETS:
                    A, B = (placed(x, offset) for x in data[dtype])
                    times: dict[int, list[float]] = {g: [] for g in gaps}
                    ref = None
                    same = True
                    for r in range(rounds + 1):   # round 0: warm-up, and the tasks compared
                        order = gaps if r % 2 == 0 else gaps[::-1]
                        for g in order:
                            _pool._GAP = g
                            enc = code.encode(A, B)   # the memory the timed encode reuses
                            if r == 0:
                                got = tasks_of(enc)
                                if ref is None:
                                    ref = got
                                else:
                                    same &= all(np.array_equal(a, b) for a, b in zip(ref, got))
                            del enc
                            evict()
                            t0 = time.perf_counter()
                            enc = code.encode(A, B)
                            t = time.perf_counter() - t0
                            del enc
                            if r:
                                times[g].append(t)
                    first = statistics.median(times[gaps[0]])
                    row = {"key": key, "case": label, "dtype": dtype, "size": size,
                           "input_offset": offset, "tasks_identical": bool(same),
                           "median_s": {str(g): statistics.median(times[g]) for g in gaps},
                           "over_first": {str(g): statistics.median(times[g]) / first for g in gaps},
                           "samples": {str(g): times[g] for g in gaps}}
                    rows.append(row)
                    print(f"{label:28s} {dtype:8s} {size:5d}  inputs +{offset:<2d}  "
                          f"gap {gaps[0]}: {first * 1e3:7.3f} ms  "
                          + "  ".join(f"gap {g}: {row['over_first'][str(g)]:.3f}"
                                      for g in gaps[1:])
                          + ("" if same else "  TASKS DIFFER"), flush=True)
    finally:
        _pool._GAP = saved
    return rows


def plot(rows: list[dict], gaps: list[int], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) * max(1, len(gaps) - 1)), 4))
    labels = [f"{r['key']} {r['size']} +{r['input_offset']}" for r in rows]
    width = 0.8 / max(1, len(gaps) - 1)
    for i, g in enumerate(gaps[1:]):
        ax.bar(np.arange(len(rows)) + i * width, [r["over_first"][str(g)] for r in rows],
               width, label=f"gap {g}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"encode time / gap {gaps[0]}")
    ax.set_title("Task placement in its page: side by side in one process")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gaps", type=int, nargs="+", default=[0, _pool._GAP],
                    help=f"bytes before the source's cache line, each a multiple of 64 in "
                         f"[0, 4096) (default: 0 and the library's {_pool._GAP})")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES),
                    default=["f32-sys", "f32-sys8", "f64-sys", "f64-sys8", "f64-poly", "gf-sys"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--rounds", type=int, default=9, help="timed encodes per gap (default 9)")
    ap.add_argument("--quick", action="store_true", help="size 512, 5 rounds")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = [512], 5
    for g in args.gaps:
        if not (0 <= g < 4096 and g % 64 == 0):
            raise SystemExit(f"--gaps: each must be a multiple of 64 in [0, 4096), got {g}")
    if len(set(args.gaps)) != len(args.gaps) or len(args.gaps) < 2:
        raise SystemExit(f"--gaps: at least two distinct values to compare, got {args.gaps}")
    for name, v in (("--rounds", args.rounds), *(("--sizes", s) for s in args.sizes)):
        if v < 1:
            raise SystemExit(f"{name} must be at least 1, got {v}")
    pool = _pool.task_pool()
    pool.limit = max(pool.limit, 2 << 30)   # every case's tasks reused between its encodes
    rows = run(args.cases, args.sizes, args.gaps, args.rounds, np.random.default_rng(0))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": _machine.machine_info(),
           "parameters": {"gaps": args.gaps, "library_gap": _pool._GAP, "sizes": args.sizes,
                          "rounds": args.rounds, "cases": args.cases,
                          "input_offsets": list(OFFSETS)},
           "rows": rows}
    (args.out / "placement_ab.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    plot(rows, args.gaps, args.out / "placement_ab.png")
    print(f"wrote {args.out / 'placement_ab.json'} and placement_ab.png")
    return 0 if all(r["tasks_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
