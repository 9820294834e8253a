"""Benchmark: worst-case decoding condition number and decoded error of the real-valued codes.

For each code family (MDS, polynomial, MatDot, PolyDot), each construction over the reals
(``"circle"``: the default, roots of unity with complex packing; ``"equispaced"`` and
``"chebyshev"``: the naive real-Vandermonde baselines) and each redundancy ``r = n - k``
(default 2 and 5), over ``n`` from 4 to 31, this script measures

* the worst-case condition number over all result sets of size ``k`` (the recovery threshold)
  with :func:`codedml.codes.worst_case_condition`: exact enumeration where ``C(n, k)`` is at
  most ``--exact-limit`` (150 000), otherwise cyclic-run erasures plus random subsets
  (``--samples``), a lower bound, recorded with ``exact: false``;
* the decoded relative error ``||C_hat - C||_F / ||C||_F`` on that *worst* subset, against the
  float64 product of the inputs, for

  - float64 inputs (operands and decoding in float64),
  - float32 inputs with ``precision="auto"`` (the library switches worker operands to float64
    when the worst-case condition number exceeds ``FLOAT32_MAX_CONDITION`` = 1000),
  - float32 inputs with ``precision="float32"`` forced, to show why ``auto`` switches:
    float32 worker arithmetic costs about ``eps32 * cond`` of decoded accuracy.

A second table sweeps the *inner dimension* at the hardest corner, n = 30 and r = 5 (worst-case
condition number 8.0e3), for the four families on the circle: the decoded error on the worst
subset with one plain float64 GEMM per worker (``precision="float64"``) beside the default
``precision="auto"``, which gives these codes compensated worker products (three GEMMs, about
one rounding of the result; ``codedml/codes/_eft.py``). Plain products' rounding grows with the
inner dimension and the decode amplifies it; compensated ones stay flat (``--inner``; A is
192 x inner, B inner x 144).

Every code here is the *plain* (non-systematic) form, ``systematic=False``, so the
constructions compare like with like; ``MDSCode`` and ``MatDotCode`` are systematic by default
on the circle where that stays accurate, and ``benchmarks/systematic.py`` measures those forms
side by side with these.

Code parameters for a given ``n`` and ``r`` (``k = n - r``):

* MDS: ``MDSCode(n, k)`` (A in ``k`` row blocks, B a matrix);
* polynomial: ``PolynomialCode(n, p, q)`` with ``p * q = k``, ``p`` the largest divisor of ``k``
  with ``2 <= p <= sqrt(k)`` (skipped when ``k`` is prime or below 4);
* MatDot: ``MatDotCode(n, m)`` with ``2m - 1 = k`` (``k`` odd, ``m >= 2``);
* PolyDot: ``PolyDotCode(n, p, 2, q)``, threshold ``2pq + 1 = k`` (``k`` odd, ``pq >= 2``),
  ``p`` the largest divisor of ``pq`` at most ``sqrt(pq)``.

The default ``n`` grid is every ``n`` in 4..31 for ``r = 2`` and the even ``n`` in 6..30 plus
``n = 31`` for ``r = 5`` (the exact enumeration at ``r = 5`` costs ``C(n, 5)`` SVDs, so every
``n`` would take about twice as long). Headline cells: ``n = 31, r = 2`` and ``n = 30, r = 5``.

Only the worst-case search and a few tiny products run here; timings are not measured, so
BLAS threading is left at its defaults (recorded in the JSON).

Usage::

    python benchmarks/numerics.py            # full run, a few minutes on 2 cores
    python benchmarks/numerics.py --quick    # n <= 16, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codedml.codes import (  # noqa: E402
    MatDotCode,
    MDSCode,
    PolyDotCode,
    PolynomialCode,
    worst_case_condition,
)
from codedml.codes import FLOAT32_MAX_CONDITION  # noqa: E402

FAMILIES = ("MDS", "polynomial", "MatDot", "PolyDot")
CONSTRUCTIONS = ("circle", "equispaced", "chebyshev")
HEADLINE = ((31, 2), (30, 5))


# --------------------------------------------------------------------------- machine
machine_info = _machine.machine_info


# --------------------------------------------------------------------------- codes
def _small_divisor(x: int) -> int:
    """Largest divisor of ``x`` that is at most ``sqrt(x)``."""
    return max(d for d in range(1, math.isqrt(x) + 1) if x % d == 0)


def make_code(family: str, n: int, r: int, construction: str):
    """The code of ``family`` with ``n`` workers and threshold ``n - r``, or None if infeasible."""
    k = n - r
    if k < 1:
        return None
    if family == "MDS":
        return MDSCode(n, k, construction=construction, systematic=False)
    if family == "polynomial":
        if k < 4:
            return None
        p = _small_divisor(k)
        if p < 2:
            return None
        return PolynomialCode(n, p, k // p, construction=construction)  # q > 1: plain
    if family == "MatDot":
        if k % 2 == 0 or k < 3:
            return None
        return MatDotCode(n, (k + 1) // 2, construction=construction, systematic=False)
    if family == "PolyDot":
        if k % 2 == 0 or (k - 1) // 2 < 2:
            return None
        pq = (k - 1) // 2
        p = _small_divisor(pq)
        return PolyDotCode(n, p, 2, pq // p, construction=construction)
    raise ValueError(family)


def code_params(code) -> dict:
    return {"row_blocks": code.p, "inner_blocks": code.m, "col_blocks": code.q}


# --------------------------------------------------------------------------- measurements
def rel_err(C_hat: np.ndarray, C: np.ndarray) -> float:
    C_hat = np.asarray(C_hat, dtype=np.float64)
    return float(np.linalg.norm(C_hat - C) / np.linalg.norm(C))


def decode_error(code, subset, A, B, precision: str) -> dict:
    """Encode, compute the tasks of ``subset`` only, decode; error vs the float64 product."""
    C = A.astype(np.float64) @ B.astype(np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            enc = code.encode(A, B, precision=precision)
            results = {w: enc[w].compute() for w in subset}
            C_hat = code.decode(results, encoding=enc)
            err = rel_err(C_hat, C)
            out = {"error": err if math.isfinite(err) else None, "operand_dtype": str(enc.dtype),
                   "finite": bool(math.isfinite(err)), "compensated": enc.compensated}
        except Exception as exc:  # noqa: BLE001 - a failing construction is a result, not a crash
            out = {"error": None, "operand_dtype": None, "finite": False,
                   "failure": f"{type(exc).__name__}: {exc}"}
    if caught:  # e.g. a worker whose operand is all zero (naive points include x = 0)
        out["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return out


def measure(code, family: str, construction: str, n: int, r: int, args, rng) -> dict:
    k = code.recovery_threshold
    total = math.comb(n, k)
    budget = args.exact_limit if total <= args.exact_limit else args.samples
    t0 = time.perf_counter()
    wc = worst_case_condition(code, max_subsets=budget, seed=args.seed)
    t_cond = time.perf_counter() - t0
    A64 = rng.standard_normal((args.size, args.size))
    B64 = rng.standard_normal((args.size, args.size))
    A32, B32 = A64.astype(np.float32), B64.astype(np.float32)
    S = list(wc.worst_subset)
    row = {
        "family": family, "construction": construction, "n": n, "r": r, "k": k,
        **code_params(code), "code": repr(code),
        "cond": wc.value if math.isfinite(wc.value) else None,
        "cond_finite": bool(math.isfinite(wc.value)),
        "exact": wc.exact, "subsets_examined": wc.subsets, "subsets_total": total,
        "worst_subset": S, "cond_seconds": t_cond,
    }
    row["f64"] = decode_error(code, S, A64, B64, "auto")
    row["f32_auto"] = decode_error(code, S, A32, B32, "auto")
    row["f32_forced"] = decode_error(code, S, A32, B32, "float32")
    return row


def inner_sweep(inners: list[int], seed: int) -> list[dict]:
    """Plain vs compensated worker products at n = 30, r = 5, per family and inner dimension."""
    out = []
    for fam in FAMILIES:
        code = make_code(fam, 30, 5, "circle")
        if code is None:
            continue
        wc = worst_case_condition(code, max_subsets=code.workers)  # cyclic runs: the worst here
        for inner in inners:
            rng = np.random.default_rng([seed, inner])
            A, B = rng.standard_normal((192, inner)), rng.standard_normal((inner, 144))
            row = {"family": fam, "code": repr(code), "inner": inner, "cond": wc.value,
                   "worst_subset": list(wc.worst_subset)}
            for prec in ("float64", "auto"):
                t0 = time.perf_counter()
                row[prec] = decode_error(code, list(wc.worst_subset), A, B, prec)
                row[prec]["seconds"] = time.perf_counter() - t0
            out.append(row)
    return out


def inner_table(rows: list[dict]) -> str:
    head = f"{'family':<10s} {'inner':>6s} {'plain f64':>10s} {'auto':>10s} {'auto uses':>12s} {'plain/auto':>10s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        p, a = r["float64"]["error"], r["auto"]["error"]
        ratio = "-" if not (p and a) else f"{p / a:.2f}"
        uses = "compensated" if r["auto"].get("compensated") else "plain"
        lines.append(f"{r['family']:<10s} {r['inner']:>6d} {fmt(p, '.2e'):>10s} {fmt(a, '.2e'):>10s} "
                     f"{uses:>12s} {ratio:>10s}")
    return "\n".join(lines)


def plot_inner(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"MDS": "tab:blue", "polynomial": "tab:green", "MatDot": "tab:purple", "PolyDot": "tab:brown"}
    for fam in FAMILIES:
        sel = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["inner"])
        if not sel:
            continue
        xs = [r["inner"] for r in sel]
        ax.plot(xs, [r["float64"]["error"] for r in sel], ls="--", marker="o", ms=3.5,
                color=colors[fam], label=f"{fam}, plain float64 workers")
        ax.plot(xs, [r["auto"]["error"] for r in sel], ls="-", marker="s", ms=3.5,
                color=colors[fam], label=f"{fam}, auto (compensated)")
    ax.axhline(1e-12, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    inners = sorted({r["inner"] for r in rows})
    ax.set_xticks(inners, [str(i) for i in inners])
    ax.minorticks_off()
    ax.set_xlabel("inner dimension")
    ax.set_ylabel("decoded rel. error, worst subset")
    ax.set_title("n = 30, threshold 25 (cond 8.0e3): worker rounding vs inner dimension", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- output
def fmt(x, spec=".1e") -> str:
    return "-" if x is None else format(x, spec)


def fmt_cond(row) -> str:
    if not row["cond_finite"]:
        return "inf"
    return format(row["cond"], ".2e") + ("" if row["exact"] else "*")


def table(rows: list[dict]) -> str:
    head = (f"{'family':<10s} {'constr.':<10s} {'n':>3s} {'r':>2s} {'k':>3s} {'p,m,q':>8s} "
            f"{'worst cond':>10s} {'err f64':>8s} {'err f32 auto':>16s} {'err f32 forced':>14s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        auto = r["f32_auto"]
        auto_s = fmt(auto["error"]) + (" (f64 ops)" if auto.get("operand_dtype") in ("float64", "complex128")
                                       else " (f32 ops)" if auto.get("operand_dtype") else "")
        pmq = f"{r['row_blocks']},{r['inner_blocks']},{r['col_blocks']}"
        lines.append(f"{r['family']:<10s} {r['construction']:<10s} {r['n']:>3d} {r['r']:>2d} "
                     f"{r['k']:>3d} {pmq:>8s} {fmt_cond(r):>10s} {fmt(r['f64']['error']):>8s} "
                     f"{auto_s:>16s} {fmt(r['f32_forced']['error']):>14s}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, redundancies, title_extra: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"circle": "tab:blue", "equispaced": "tab:red", "chebyshev": "tab:orange"}
    styles = {"MDS": ("-", "o"), "polynomial": ("--", "s"), "MatDot": (":", "^"),
              "PolyDot": ("-.", "D")}
    fig, axes = plt.subplots(3, len(redundancies), figsize=(6.5 * len(redundancies), 13),
                             squeeze=False)

    def pos(v):
        return v if (v is not None and v > 0) else np.nan  # log scale: exact zeros not drawn

    for j, r in enumerate(redundancies):
        for fam in FAMILIES:
            for cons in CONSTRUCTIONS:
                sel = sorted((x for x in rows if x["r"] == r and x["family"] == fam
                              and x["construction"] == cons), key=lambda x: x["n"])
                if not sel:
                    continue
                ls, mk = styles[fam]
                label = f"{fam} / {cons}"
                pts = [(x["n"], x["cond"] if x["cond_finite"] else np.nan, x["exact"]) for x in sel]
                ns = [p[0] for p in pts]
                axes[0, j].plot(ns, [p[1] for p in pts], ls=ls, color=colors[cons], lw=1.2,
                                label=label)
                axes[0, j].scatter([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]],
                                   marker=mk, color=colors[cons], s=14)
                axes[0, j].scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]],
                                   marker=mk, facecolors="none", edgecolors=colors[cons], s=30)
                errs = [pos(x["f64"]["error"]) for x in sel]
                axes[1, j].plot(ns, errs, ls=ls, color=colors[cons], lw=1.2, marker=mk,
                                ms=3.5, label=label)
                if fam == "MDS":  # one family suffices to show the float32 behaviour
                    axes[2, j].plot(ns, [pos(x["f32_forced"]["error"]) for x in sel], ls="-",
                                    color=colors[cons], lw=1.2, marker=mk, ms=3.5,
                                    label=f"MDS / {cons}, float32 forced")
                    axes[2, j].plot(ns, [pos(x["f32_auto"]["error"]) for x in sel], ls="--",
                                    color=colors[cons], lw=1.0, marker=mk, ms=3,
                                    mfc="none", label=f"MDS / {cons}, float32 'auto'")
        ax = axes[0, j]
        ax.set_yscale("log")
        ax.axhline(FLOAT32_MAX_CONDITION, color="gray", lw=0.8, ls=":")
        ax.annotate("float32 'auto' limit (1e3)", (ax.get_xlim()[0], FLOAT32_MAX_CONDITION),
                    fontsize=7, color="gray", va="bottom")
        ax.set_xlabel("workers n")
        ax.set_ylabel("worst-case condition number (log)")
        ax.set_title(f"redundancy n - k = {r}: worst k-subset\n(hollow marker = sampled lower bound)",
                     fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax = axes[1, j]
        ax.set_yscale("log")
        ax.set_xlabel("workers n")
        ax.set_ylabel("decoded rel. error, float64, worst subset (log)")
        ax.set_title(f"redundancy {r}: ||C_hat - C||_F / ||C||_F", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax = axes[2, j]
        ax.set_yscale("log")
        ax.axhline(1e-4, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("workers n")
        ax.set_ylabel("decoded rel. error, float32 inputs (log)")
        ax.set_title(f"redundancy {r}: float32 inputs, MDS; 'auto' switches to float64 operands\n"
                     f"above cond {FLOAT32_MAX_CONDITION:g} (dotted: 1e-4)", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0, 0].legend(fontsize=6.5, ncol=2, loc="upper left")
    axes[2, 0].legend(fontsize=6.5, ncol=1, loc="upper left")
    fig.suptitle("codedml real-valued codes: circle (default) vs naive real Vandermonde points"
                 + title_extra, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clean(x):
    """JSON without NaN/Infinity (non-finite floats become null; flags say so)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def headline_rows(rows: list[dict]) -> list[dict]:
    """Per family and headline (n, r): the rows at the largest feasible n <= the headline n
    (polynomial codes have no n = 31, r = 2 cell: k = 29 is prime, so they show n = 30)."""
    out = []
    for n0, r in HEADLINE:
        for fam in FAMILIES:
            ns = [x["n"] for x in rows if x["r"] == r and x["family"] == fam and x["n"] <= n0]
            if ns:
                out += [x for x in rows if x["r"] == r and x["family"] == fam and x["n"] == max(ns)]
    return out


# --------------------------------------------------------------------------- main
def n_grid(r: int, quick: bool, n_max: int) -> list[int]:
    if quick:
        return [n for n in range(max(4, r + 1), min(n_max, 16) + 1) if n % 2 == 0 or n == 15]
    if r <= 2:
        return list(range(max(4, r + 1), n_max + 1))
    return sorted({n for n in range(max(4, r + 1), n_max + 1) if n % 2 == 0} | {n_max})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run: n <= 16, smaller matrices")
    ap.add_argument("--redundancy", type=int, nargs="+", default=[2, 5], help="values of n - k")
    ap.add_argument("--n-max", type=int, default=31)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--constructions", nargs="+", default=list(CONSTRUCTIONS), choices=CONSTRUCTIONS)
    ap.add_argument("--exact-limit", type=int, default=150_000,
                    help="enumerate every k-subset when C(n,k) is at most this")
    ap.add_argument("--samples", type=int, default=20_000,
                    help="subsets examined (cyclic runs + random) when C(n,k) exceeds --exact-limit")
    ap.add_argument("--size", type=int, default=None,
                    help="A and B are size x size (default 120, --quick 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", choices=("summary", "all"), default="summary",
                    help="print every row, or per family only n nearest 8, 16, 24 and the largest n")
    ap.add_argument("--inner", type=int, nargs="*", default=None,
                    help="inner dimensions of the n = 30, r = 5 sweep (default 120 360 720 1440 "
                         "2880; --quick 120 720; none: skip)")
    ap.add_argument("--out", default="benchmarks/results/numerics.json")
    ap.add_argument("--plot", default="benchmarks/results/numerics.png")
    args = ap.parse_args(argv)
    if args.inner is None:
        args.inner = [120, 720] if args.quick else [120, 360, 720, 1440, 2880]
    if args.size is None:
        args.size = 60 if args.quick else 120

    t_start = time.perf_counter()
    rows: list[dict] = []
    grids = {r: n_grid(r, args.quick, args.n_max) for r in args.redundancy}
    print(f"numerics: families={args.families} constructions={args.constructions} "
          f"redundancy={args.redundancy} size={args.size} exact_limit={args.exact_limit} "
          f"samples={args.samples}", flush=True)
    for r in args.redundancy:
        for n in grids[r]:
            for fam in args.families:
                for cons in args.constructions:
                    code = make_code(fam, n, r, cons)
                    if code is None:
                        continue
                    rng = np.random.default_rng([args.seed, n, r])  # same data for every code at (n, r)
                    row = measure(code, fam, cons, n, r, args, rng)
                    rows.append(row)
            done = [x for x in rows if x["n"] == n and x["r"] == r]
            print(f"  r={r} n={n:>2d}: {len(done)} codes, worst-case search "
                  f"{sum(x['cond_seconds'] for x in done):6.1f} s", flush=True)
    sweep = inner_sweep(args.inner, args.seed) if args.inner else []
    elapsed = time.perf_counter() - t_start

    # ---- tables
    headline = headline_rows(rows)
    if args.table == "all":
        shown = rows
    else:
        shown = []
        for r in args.redundancy:
            for fam in args.families:
                ns = sorted({x["n"] for x in rows if x["r"] == r and x["family"] == fam})
                if not ns:
                    continue
                pick = {min(ns, key=lambda n: abs(n - t)) for t in (8, 16, 24)} | {max(ns)}
                shown += [x for x in rows if x["r"] == r and x["family"] == fam and x["n"] in pick]
    print()
    print("Worst k-subset of n workers (k = n - r); * = sampled lower bound, not exhaustive;")
    print("errors are ||C_hat - C||_F / ||C||_F vs the float64 product, decoded on that worst subset.")
    print(table(shown))
    if headline:
        print("\nHeadline cells:")
        print(table(headline))
    g = np.random.default_rng(args.seed)
    A32 = g.standard_normal((args.size, args.size)).astype(np.float32)
    B32 = g.standard_normal((args.size, args.size)).astype(np.float32)
    f32_floor = rel_err(A32 @ B32, A32.astype(np.float64) @ B32.astype(np.float64))
    if sweep:
        print("\nInner-dimension sweep, n = 30, k = 25, worst subset: plain float64 worker products "
              "vs precision='auto'")
        print(inner_table(sweep))
    print(f"\nreference: uncoded float32 product error {f32_floor:.1e}; "
          f"FLOAT32_MAX_CONDITION = {FLOAT32_MAX_CONDITION:g}")
    print(f"total time {elapsed:.1f} s")

    result = {
        "benchmark": "numerics",
        "machine": machine_info(),
        "parameters": {
            "quick": args.quick, "redundancy": args.redundancy, "n_grid": grids,
            "families": args.families, "constructions": args.constructions,
            "exact_limit": args.exact_limit, "samples": args.samples, "size": args.size,
            "seed": args.seed, "float32_max_condition": FLOAT32_MAX_CONDITION,
            "inputs": "A, B standard normal, size x size; float32 inputs are the float64 ones rounded",
            "error": "||C_hat - C||_F / ||C||_F, C = float64 product of the (possibly float32) inputs, "
                     "decoded from exactly k results: the worst subset found",
            "code_parameters": "see module docstring of benchmarks/numerics.py",
        },
        "uncoded_float32_error": f32_floor,
        "elapsed_s": elapsed,
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "rows": rows,
        "inner_sweep": sweep,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(result), indent=1))
    print(f"wrote {out}")
    if args.plot:
        plot(rows, Path(args.plot), args.redundancy,
             f"  ({args.size}x{args.size} inputs{', quick' if args.quick else ''})")
        print(f"wrote {args.plot}")
        if sweep:
            inner_png = Path(args.plot).with_name(Path(args.plot).stem + "_inner.png")
            plot_inner(sweep, inner_png)
            print(f"wrote {inner_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
