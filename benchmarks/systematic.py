"""Benchmark: systematic against non-systematic codes, side by side in one run.

For ``n`` in 16, 24, 31 and ``r`` = 2, 5 spare workers, every real code family that has a
systematic form (MDS, which is also the polynomial code with ``col_blocks=1``:
``PolynomialCode(n, k, 1)`` is ``PolyDotCode(n, k, 1, 1)`` = ``MDSCode(n, k)``; and MatDot)
and every evaluation-point choice (``construction`` = circle, equispaced, chebyshev), this
script measures, for ``systematic=False`` and ``systematic=True``:

* **worst-case condition number** of the decoding system over all result sets of the
  recovery threshold's size: *every* subset when ``C(n, k)`` is at most ``--exact-limit``
  (200 000; ``--quick``: 5 000); otherwise the adversarial candidates below plus
  ``--samples`` random subsets (20 000), and the row says ``sampled`` and how many subsets it
  examined: the value is then a lower bound. Adversarial candidates (always examined too):
  erasing every cyclic run of ``r`` adjacent workers, and of ``r`` adjacent *points* (a
  systematic code permutes points), the ``r`` points of largest and of smallest ``|x|`` (the
  ends and the middle of [-1, 1]), the first and the last ``r`` workers, and every set of
  ``r`` systematic workers evenly spread.
  MDS has threshold ``k = n - r``; MatDot ``2m - 1`` with ``m = (n - r + 1) // 2`` (an even
  ``n - r`` leaves ``r + 1`` spare).
* **decoded relative error** ``||C_hat - C||_F / ||C||_F`` on the worst subset found, against
  the float64 product, for float64 inputs and float32 inputs, both with the library's
  default ``precision="auto"`` (A is ``size x size``, B ``size x size/2``, standard normal);
  ``targets met`` = float64 error <= 1e-12 and float32 error <= 1e-4.
* **decode time** (circle, the default construction, ``--time-size``), median of
  ``--repeats``: the systematic code with 0, 1 and ``r`` (every spare) systematic results
  missing, relative to the non-systematic code's decode from ``k`` results (a run of ``r``
  adjacent workers erased: on the circle every run is the worst case); and **encode time**
  of the systematic code relative to the non-systematic one.

BLAS runs on one thread in the timed regions (threadpoolctl), as in ``benchmarks/cost.py``.

Usage::

    python benchmarks/systematic.py            # full run: about 3-6 min on a quiet 2-core machine
    python benchmarks/systematic.py --quick    # n = 16 only, small matrices: about 5 s

Writes ``benchmarks/results/systematic.json`` and ``systematic.png``; the README table is
rendered from the JSON by ``benchmarks/render_readme.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codedml.codes import CONSTRUCTIONS, MatDotCode, MDSCode  # noqa: E402
from codedml.codes.numerics import _conds, _rank  # noqa: E402

FAMILIES = ("MDS", "MatDot")
F64_TARGET, F32_TARGET = 1e-12, 1e-4


def make_code(family: str, n: int, r: int, construction: str, systematic: bool):
    if family == "MDS":
        return MDSCode(n, n - r, construction=construction, systematic=systematic)
    m = (n - r + 1) // 2
    if m < 2:
        return None
    return MatDotCode(n, m, construction=construction, systematic=systematic)


# --------------------------------------------------------------------------- worst case
def adversarial(code) -> list[tuple[int, ...]]:
    """Erasure patterns that are worst for Vandermonde-type codes, as kept-worker subsets."""
    n, k = code.workers, code.recovery_threshold
    r = n - k
    order = code._order                       # point index of each worker
    worker_of = np.argsort(order)             # worker holding each point
    x = code._points
    erase: list[set[int]] = []
    for a in range(n):
        erase.append({(a + t) % n for t in range(r)})                       # adjacent workers
        erase.append({int(worker_of[(a + t) % n]) for t in range(r)})       # adjacent points
    mag = np.abs(x) if code.construction != "circle" else np.zeros(n)
    if code.construction != "circle":
        erase.append({int(worker_of[i]) for i in np.argsort(-mag)[:r]})     # the ends
        erase.append({int(worker_of[i]) for i in np.argsort(mag)[:r]})      # the middle
    erase.append(set(range(r)))
    erase.append(set(range(n - r, n)))
    s = code.m if code.m > 1 else code.p
    if getattr(code, "systematic", False) and r <= s:
        for a in range(s):
            erase.append({(a + i * s // r) % s for i in range(r)})           # spread systematic
    out = {tuple(sorted(set(range(n)) - e)) for e in erase if len(e) == r}
    return sorted(out)


def worst_case(code, exact_limit: int, samples: int, seed: int) -> dict:
    n, k = code.workers, code.recovery_threshold
    total = math.comb(n, k)
    t0 = time.perf_counter()
    adv = adversarial(code)
    if total <= exact_limit:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=int)
        how = "exact"
    else:
        rng = np.random.default_rng(seed)
        rand = [tuple(np.sort(rng.choice(n, k, replace=False))) for _ in range(samples)]
        subsets = np.array(adv + rand, dtype=int)
        how = "sampled"
    conds = _conds(code, subsets, _rank(code))
    j = int(np.argmax(conds))
    adv_conds = _conds(code, np.array(adv, dtype=int), _rank(code)) if adv else np.zeros(1)
    return {"cond": float(conds[j]), "how": how, "subsets_examined": int(len(subsets)),
            "subsets_total": total, "worst_subset": [int(v) for v in subsets[j]],
            "worst_adversarial_cond": float(adv_conds.max()),
            "seconds": time.perf_counter() - t0}


def rel_err(C_hat, C) -> float:
    return float(np.linalg.norm(np.asarray(C_hat, dtype=np.float64) - C) / np.linalg.norm(C))


def decode_error(code, subset, A, B) -> dict:
    C = A.astype(np.float64) @ B.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = code.encode(A, B)
        out = code.decode({w: enc[w].compute() for w in subset}, encoding=enc)
    return {"error": rel_err(out, C), "operand_dtype": str(enc.dtype),
            "compensated": bool(enc.compensated)}


# --------------------------------------------------------------------------- timing
def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def timings(family: str, n: int, r: int, size: int, repeats: int, seed: int) -> dict:
    plain = make_code(family, n, r, "circle", False)
    sysc = make_code(family, n, r, "circle", True)
    if plain is None:
        return {}
    k = plain.recovery_threshold
    s = sysc.m if sysc.m > 1 else sysc.p
    spare = n - k
    rng = np.random.default_rng([seed, n, r, 7])
    A, B = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    ep, es = plain.encode(A, B), sysc.encode(A, B)
    rp = {w: ep[w].compute() for w in range(n)}
    rs = {w: es[w].compute() for w in range(n)}
    ref_set = list(range(spare, n))                        # a run of `spare` workers erased
    sets = {"0": list(range(s)) + list(range(s, k))}       # all systematic (+ parity up to k)
    if family == "MatDot":
        sets["0"] = list(range(s))                         # MatDot: the m systematic alone
    miss1 = list(range(1, s)) + list(range(s, s + (k - s + 1)))
    sets["1"] = miss1[:k]
    many = min(spare, s)
    sets["s"] = (list(range(many, s)) + list(range(s, n)))[:k] if family == "MDS" else \
        list(range(many, s)) + list(range(s, s + k - (s - many)))
    out = {"size": size, "repeats": repeats, "k": k, "systematic_blocks": s,
           "missing_s": many, "subsets": sets, "reference_subset": ref_set}
    t_ref = median_time(lambda: plain.decode({w: rp[w] for w in ref_set}, encoding=ep), repeats)
    out["plain_decode_s"] = t_ref
    for key, S in sets.items():
        t = median_time(lambda S=S: sysc.decode({w: rs[w] for w in S}, encoding=es), repeats)
        out[f"decode_{key}_s"] = t
        out[f"decode_{key}_ratio"] = t / t_ref
    t_enc_p = median_time(lambda: plain.encode(A, B), repeats)
    t_enc_s = median_time(lambda: sysc.encode(A, B), repeats)
    out.update(plain_encode_s=t_enc_p, systematic_encode_s=t_enc_s, encode_ratio=t_enc_s / t_enc_p)
    return out


# --------------------------------------------------------------------------- output
def fmt(x, spec=".1e") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    head = (f"{'family':<7s} {'constr.':<10s} {'n':>3s} {'r':>2s} {'thr':>3s} {'subsets':>16s} "
            f"{'cond plain':>10s} {'cond sys':>10s} {'sys/plain':>9s} {'f64 plain':>9s} "
            f"{'f64 sys':>9s} {'f32 plain':>9s} {'f32 sys':>9s} {'sys ok':>6s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        p, s = r["plain"], r["systematic"]
        sub = ("all " if s["how"] == "exact" else "sampled ") + str(s["subsets_examined"])
        lines.append(
            f"{r['family']:<7s} {r['construction']:<10s} {r['n']:>3d} {r['r']:>2d} {r['k']:>3d} "
            f"{sub:>16s} {p['cond']:>10.2e} {s['cond']:>10.2e} {s['cond'] / p['cond']:>9.2f} "
            f"{fmt(p['f64']['error']):>9s} {fmt(s['f64']['error']):>9s} "
            f"{fmt(p['f32']['error']):>9s} {fmt(s['f32']['error']):>9s} "
            f"{'yes' if r['systematic_within_targets'] else 'NO':>6s}")
    return "\n".join(lines)


def time_table(rows: list[dict]) -> str:
    head = (f"{'family':<7s} {'n':>3s} {'r':>2s} {'thr':>3s} {'size':>5s} {'decode, 0 missing':>17s} "
            f"{'1 missing':>9s} {'s missing':>12s} {'encode':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r
        lines.append(f"{t['family']:<7s} {t['n']:>3d} {t['r']:>2d} {t['k']:>3d} {t['size']:>5d} "
                     f"{t['decode_0_ratio']:>17.3f} {t['decode_1_ratio']:>9.3f} "
                     f"{t['decode_s_ratio']:>7.3f} (s={t['missing_s']}) {t['encode_ratio']:>7.2f}")
    return "\n".join(lines)


def plot(rows: list[dict], trows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted({r["r"] for r in rows})
    fig, axes = plt.subplots(2, len(rs) + 1, figsize=(5.5 * (len(rs) + 1), 8.5), squeeze=False)
    colors = {"circle": "tab:blue", "equispaced": "tab:red", "chebyshev": "tab:orange"}
    marks = {"MDS": "o", "MatDot": "^"}
    for j, r in enumerate(rs):
        for fam in FAMILIES:
            for cons in CONSTRUCTIONS:
                sel = sorted((x for x in rows if x["r"] == r and x["family"] == fam
                              and x["construction"] == cons), key=lambda x: x["n"])
                if not sel:
                    continue
                ns = [x["n"] for x in sel]
                for sysflag, ls in (("plain", "--"), ("systematic", "-")):
                    axes[0, j].plot(ns, [x[sysflag]["cond"] for x in sel], ls=ls,
                                    marker=marks[fam], color=colors[cons], ms=4,
                                    label=f"{fam}/{cons} {sysflag}")
                    axes[1, j].plot(ns, [max(x[sysflag]["f64"]["error"], 1e-18) for x in sel],
                                    ls=ls, marker=marks[fam], color=colors[cons], ms=4)
        axes[0, j].set_title(f"r = {r} spare: worst-case condition number", fontsize=10)
        axes[1, j].set_title(f"r = {r}: float64 decoded error, worst subset", fontsize=10)
        axes[1, j].axhline(F64_TARGET, color="gray", ls=":", lw=0.8)
        for ax in axes[:, j]:
            ax.set_yscale("log")
            ax.set_xlabel("workers n")
            ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=6, ncol=2)
    ax = axes[0, -1]
    labels = [f"{t['family']} n={t['n']} r={t['r']}" for t in trows]
    xs = np.arange(len(trows))
    for i, (key, lab) in enumerate((("decode_0_ratio", "0 missing"), ("decode_1_ratio", "1 missing"),
                                    ("decode_s_ratio", "s missing"))):
        ax.bar(xs + (i - 1) * 0.27, [t[key] for t in trows], width=0.27, label=lab)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(xs, labels, rotation=60, fontsize=7)
    ax.set_ylabel("systematic decode / plain decode from k")
    ax.set_title("decode time (circle)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1, -1]
    ax.bar(xs, [t["encode_ratio"] for t in trows])
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(xs, labels, rotation=60, fontsize=7)
    ax.set_ylabel("systematic encode / plain encode")
    ax.set_title("encode time (circle)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 16 only, small matrices, few repeats")
    ap.add_argument("--n", type=int, nargs="+", default=None, help="worker counts (default 16 24 31)")
    ap.add_argument("--redundancy", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--constructions", nargs="+", default=list(CONSTRUCTIONS), choices=CONSTRUCTIONS)
    ap.add_argument("--exact-limit", type=int, default=None,
                    help="enumerate every subset when C(n, k) is at most this (200000; quick 5000)")
    ap.add_argument("--samples", type=int, default=20_000,
                    help="random subsets examined (besides the adversarial ones) otherwise")
    ap.add_argument("--size", type=int, default=None, help="error inputs: A size x size (256; quick 64)")
    ap.add_argument("--time-size", type=int, default=None, help="timing inputs (1024; quick 256)")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (7; quick 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/systematic.json")
    ap.add_argument("--plot", default="benchmarks/results/systematic.png")
    args = ap.parse_args(argv)
    q = args.quick
    ns = args.n or ([16] if q else [16, 24, 31])
    exact_limit = args.exact_limit or (5_000 if q else 200_000)
    samples = 2_000 if q and args.samples == 20_000 else args.samples
    size = args.size or (64 if q else 256)
    tsize = args.time_size or (256 if q else 1024)
    repeats = args.repeats or (3 if q else 7)
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    rows: list[dict] = []
    trows: list[dict] = []
    with threadpool_limits(limits=1, user_api="blas"):
        for n in ns:
            for r in args.redundancy:
                for fam in FAMILIES:
                    for cons in args.constructions:
                        row: dict = {"family": fam, "construction": cons, "n": n}
                        rng = np.random.default_rng([args.seed, n, r])
                        A = rng.standard_normal((size, size))
                        B = rng.standard_normal((size, size // 2))
                        for label, flag in (("plain", False), ("systematic", True)):
                            code = make_code(fam, n, r, cons, flag)
                            if code is None:
                                break
                            wc = worst_case(code, exact_limit, samples, args.seed)
                            wc["code"] = repr(code)
                            wc["f64"] = decode_error(code, wc["worst_subset"], A, B)
                            wc["f32"] = decode_error(code, wc["worst_subset"], A.astype(np.float32),
                                                     B.astype(np.float32))
                            row[label] = wc
                            row["k"] = code.recovery_threshold
                            row["r"] = n - code.recovery_threshold
                        if "systematic" not in row:
                            continue
                        s = row["systematic"]
                        row["systematic_within_targets"] = bool(
                            s["f64"]["error"] <= F64_TARGET and s["f32"]["error"] <= F32_TARGET)
                        rows.append(row)
                        print(f"  {fam:<6s} {cons:<10s} n={n} r={row['r']}: cond "
                              f"{row['plain']['cond']:.2e} -> {s['cond']:.2e} ({s['how']}, "
                              f"{s['seconds']:.1f} s)", flush=True)
                    t = timings(fam, n, r, tsize, repeats, args.seed)
                    if t:
                        t.update(family=fam, n=n, r=n - t["k"])
                        trows.append(t)
    elapsed = time.perf_counter() - t_start
    print("\nWorst subset of the recovery threshold's size (all = exhaustive; sampled = adversarial")
    print("candidates + random, a lower bound). Errors: ||C_hat - C||_F / ||C||_F on that subset,")
    print(f"precision='auto'. sys ok: float64 <= {F64_TARGET:g} and float32 <= {F32_TARGET:g}.")
    print(table(rows))
    print(f"\nTime ratios (circle, {tsize}x{tsize}, one BLAS thread, median of {repeats}): "
          "systematic decode with 0 / 1 / s systematic results missing over the plain decode "
          "from k results; systematic encode over plain encode.")
    print(time_table(trows))
    print(f"\ntotal {elapsed:.0f} s")
    doc = {
        "benchmark": "systematic",
        "machine": _machine.machine_info(),
        "parameters": {"quick": q, "n": ns, "redundancy": args.redundancy,
                       "constructions": args.constructions, "exact_limit": exact_limit,
                       "samples": samples, "size": size, "time_size": tsize, "repeats": repeats,
                       "seed": args.seed, "targets": {"float64": F64_TARGET, "float32": F32_TARGET},
                       "threads": 1},
        "command": " ".join(["python benchmarks/systematic.py"] + (argv if argv is not None else sys.argv[1:])),
        "elapsed_s": elapsed,
        "rows": rows,
        "timings": trows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}")
    if args.plot:
        plot(rows, trows, Path(args.plot),
             f"systematic (solid) vs plain (dashed) codes{' (quick)' if q else ''}")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
