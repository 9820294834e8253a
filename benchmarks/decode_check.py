"""The decoder's consistency check, compiled against numpy, side by side in one run.

A real-valued decode given more results than the recovery threshold checks them against
each other before it trusts them (soft errors; ``errors=e`` locates up to ``e`` corrupt
ones): four random projections of every result, and every result's norm for the noise
scale. Since the twenty-first session one compiled pass over each result takes both
(``codedml.codes._kernels.proj_sq``; ``codedml.codes._base.PROJ_SQ``), where numpy reads
each result twice (the projections' products, the norms). This script decodes the same
results both ways in the same code otherwise (the compiled pieces on and off: ``PROJ_SQ``
and, since the twenty-fourth session, ``WRESID``, the weighted residual by compiled
reflections, ``_kernels.wresid``), alternating per repeat so that a slow phase of the
machine hits both alike, and reports for each case and size (medians):

* ``compiled`` and ``numpy``: the decode from every worker's result with ``errors=1`` (the
  spare results checked; a runtime job with ``errors=1`` that hears every worker decodes
  so), their ratio ``compiled / numpy``, and that both found the same workers faulty (none)
  and decoded the same product bit for bit;
* ``from k``: the decode from the first ``k`` results (an assembly of the data blocks for
  the systematic codes, a solve for the others), where nothing is checked, and ``compiled /
  from k``: what checking the spare results (and, for the non-systematic codes, solving
  from all of them) costs on top;
* with ``--base DIR`` (a base tree's package as ``DIR/codedml_base``, as
  ``control_plane_ab.py`` takes it): ``base``, the base tree's decode of the same case
  (its own encoding and results), alternated with the others, and ``compiled / base``: the
  change side by side in one run; ``same answer`` then also asks that the base decoded the
  same product bit for bit.

Cases: systematic MDS(6, 4) (the control-plane benchmark's code), systematic MDS(17, 15)
(``encode.py``'s), the non-systematic MDS(8, 6) and MatDot(9, 4) (general path). ``A`` is
``size x size``, ``B`` ``size x size``, standard normal float64. BLAS runs on one thread
(threadpoolctl), as in ``benchmarks/cost.py``.

Usage::

    python benchmarks/decode_check.py            # sizes 16 256 1024 2048: about 1 min
    python benchmarks/decode_check.py --quick    # sizes 16 256, few repeats: a few seconds

Writes ``benchmarks/results/decode_check.json`` and ``.png``; the README table is rendered
from the JSON by ``benchmarks/render_readme.py``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import blas_limit, machine_info, write_json  # noqa: E402

from codedml.codes import MatDotCode, MDSCode  # noqa: E402
from codedml.codes import _base  # noqa: E402


def cases(codes=None) -> list[tuple[str, object]]:
    """The cases, as codes of ``codes`` (a ``codes`` package: this tree's by default)."""
    mds, matdot = (MDSCode, MatDotCode) if codes is None else (codes.MDSCode, codes.MatDotCode)
    return [
        ("MDS (6,4) sys", mds(6, 4, systematic=True)),
        ("MDS (17,15) sys", mds(17, 15, systematic=True)),
        ("MDS (8,6)", mds(8, 6, systematic=False)),
        ("MatDot (9,4)", matdot(9, 4, systematic=False)),
    ]


def repeats_for(size: int, quick: bool) -> int:
    if quick:
        return 5 if size > 64 else 50
    return 200 if size <= 64 else 41 if size <= 256 else 11 if size <= 1024 else 5


def turn(kinds: list[str], i: int) -> list[str]:
    """The order of repeat ``i``: ``kinds`` rotated by ``i``, so that each goes first (and,
    of two, each goes second) equally often."""
    j = i % len(kinds)
    return kinds[j:] + kinds[:j]


def run_case(label: str, code, size: int, repeats: int, rng: np.random.Generator,
             base_code=None) -> dict:
    A, B = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    enc = code.encode(A, B)
    n, k = code.workers, code.recovery_threshold
    res = {w: enc[w].compute() for w in range(n)}
    first_k = {w: res[w] for w in range(k)}
    if base_code is not None:   # the base tree's decode, of its own encoding's results
        base_enc = base_code.encode(A, B)
        base_res = {w: base_enc[w].compute() for w in range(n)}

    def decode(on: bool, results: dict) -> tuple[float, np.ndarray, tuple]:
        old = _base.PROJ_SQ, _base.WRESID
        _base.PROJ_SQ = _base.WRESID = on
        try:
            t = time.perf_counter()
            C, info = code.decode(results, 1 if len(results) > k else 0, encoding=enc,
                                  return_info=True)
            return time.perf_counter() - t, C, info.faulty
        finally:
            _base.PROJ_SQ, _base.WRESID = old

    def decode_base() -> tuple[float, np.ndarray, tuple]:
        t = time.perf_counter()
        C, info = base_code.decode(base_res, 1, encoding=base_enc, return_info=True)
        return time.perf_counter() - t, C, info.faulty

    times: dict[str, list[float]] = {"compiled": [], "numpy": [], "from_k": []}
    kinds = ["compiled", "numpy"]
    if base_code is not None:
        times["base"] = []
        kinds.append("base")
    same = True
    for i in range(repeats + 1):              # the first round warms the caches: discarded
        order = turn(kinds, i)
        got = {}
        for which in order:
            t, C, faulty = decode_base() if which == "base" else decode(which == "compiled", res)
            got[which] = (C, faulty)
            if i:
                times[which].append(t)
        t, _, _ = decode(True, first_k)
        if i:
            times["from_k"].append(t)
        (c1, f1), (c2, f2) = got["compiled"], got["numpy"]
        same = same and f1 == f2 == () and np.array_equal(c1, c2)
        if base_code is not None:
            c3, f3 = got["base"]
            same = same and f3 == () and np.array_equal(c1, c3)
        del got, c1, c2
    med = {key: statistics.median(v) for key, v in times.items()}
    extra = {} if base_code is None else {
        "base_s": med["base"], "compiled_over_base": med["compiled"] / med["base"]}
    C = code.decode(res, 1, encoding=enc)
    ref = A @ B
    return {
        "case": label, "code": repr(code), "size": size, "workers": n, "recovery_threshold": k,
        "repeats": repeats, "compiled_s": med["compiled"], "numpy_s": med["numpy"],
        "from_k_s": med["from_k"], "compiled_over_numpy": med["compiled"] / med["numpy"],
        "compiled_over_from_k": med["compiled"] / med["from_k"],
        "numpy_over_from_k": med["numpy"] / med["from_k"],
        "same_faulty_and_product": bool(same), **extra,
        "rel_error": float(np.linalg.norm(C - ref) / np.linalg.norm(ref)),
        "samples_s": times,
    }


def table(rows: list[dict]) -> str:
    vs = all("base_s" in r for r in rows) and bool(rows)
    head = ("| code | n | k | size | compiled (ms) | numpy (ms) | compiled / numpy | from k (ms) "
            "| compiled / from k | numpy / from k |" + (" base (ms) | compiled / base |" if vs else "")
            + " same answer |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(
            f"| {r['case']} | {r['workers']} | {r['recovery_threshold']} | {r['size']} "
            f"| {1e3 * r['compiled_s']:.3f} | {1e3 * r['numpy_s']:.3f} | {r['compiled_over_numpy']:.2f} "
            f"| {1e3 * r['from_k_s']:.3f} | {r['compiled_over_from_k']:.2f} | {r['numpy_over_from_k']:.2f} "
            + (f"| {1e3 * r['base_s']:.3f} | {r['compiled_over_base']:.2f} " if vs else "")
            + f"| {'yes' if r['same_faulty_and_product'] else 'NO'} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, label in enumerate(dict.fromkeys(r["case"] for r in rows)):
        rs = [r for r in rows if r["case"] == label]
        sizes = [r["size"] for r in rs]
        color = f"C{i}"
        axes[0].plot(sizes, [r["compiled_over_numpy"] for r in rs], marker="o", color=color, label=label)
        if all("compiled_over_base" in r for r in rs):
            axes[0].plot(sizes, [r["compiled_over_base"] for r in rs], marker="s", ls=":",
                         color=color, label=f"{label}, / base tree")
        axes[1].plot(sizes, [r["compiled_over_from_k"] for r in rs], marker="o", color=color,
                     label=f"{label}, compiled")
        axes[1].plot(sizes, [r["numpy_over_from_k"] for r in rs], marker="x", ls="--", alpha=0.6,
                     color=color, label=f"{label}, numpy")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("size (A and B size x size)")
        ax.grid(alpha=0.3)
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_ylabel("decode time, compiled check / numpy check (or base tree)")
    axes[0].set_title("errors=1, every result: compiled / numpy (dotted: / base tree)", fontsize=10)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("decode with the check / decode from k")
    axes[1].set_title("what the check costs over the assembly from k", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6)
    fig.suptitle(f"benchmarks/decode_check.py{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 16 and 256, few repeats")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="square sizes (default 16 256 1024 2048)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats per size (default 200 up to 64, 41 up to 256, 11 up to "
                         "1024, else 5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads via threadpoolctl (default 1; 0 = leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/decode_check.json")
    ap.add_argument("--plot", default="benchmarks/results/decode_check.png")
    ap.add_argument("--base", type=Path, default=None,
                    help="folder holding a base tree's package as codedml_base: its decode is "
                         "timed side by side (see the module docstring)")
    ap.add_argument("--base-rev", default=None,
                    help="the commit the base tree was exported from (recorded in the JSON)")
    ap.add_argument("--replot", action="store_true",
                    help="measure nothing: redraw --plot and reprint the table from the --out JSON")
    args = ap.parse_args(argv)
    if args.replot:
        old = json.loads(Path(args.out).read_text())
        print(table(old["rows"]))
        plot(old["rows"], Path(args.plot), f" ({old['machine'].get('cpu_count')} CPUs"
             f"{', quick' if old['parameters']['quick'] else ''})")
        print(f"wrote {args.plot}")
        return 0
    if _base._K is None:
        print("decode_check: codedml.codes._kernels is not built here, so there is no compiled "
              "check to compare (see setup.py)", file=sys.stderr)
        return 2
    sizes = args.sizes or ([16, 256] if args.quick else [16, 256, 1024, 2048])
    for s in sizes:
        if s < 16:
            ap.error(f"--sizes must be at least 16 (every worker needs a block), got {s}")
    if args.repeats is not None and args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    base_cases = None
    if args.base is not None:
        if not (args.base / "codedml_base" / "codes").is_dir():
            ap.error(f"--base must be a folder holding a base tree's package as codedml_base "
                     f"(see the module docstring); {args.base} has no codedml_base/codes")
        sys.path.insert(0, str(args.base))
        import codedml_base.codes as base_codes
        from codedml_base.codes import _base as base_base
        if base_base._K is None:   # a fair comparison needs the base's compiled loops too
            ap.error(f"--base: {args.base}/codedml_base has no compiled codes/_kernels module: "
                     "build it (gcc -O2 -shared -fPIC with Python's include folder, "
                     "codes/_kernels.c into codes/_kernels<EXT_SUFFIX>) before timing it")
        base_cases = dict(cases(base_codes))
    limit = blas_limit(args.threads)
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    t0 = time.perf_counter()
    with limit:
        machine = machine_info()
        before = os.getloadavg()
        for size in sizes:
            reps = args.repeats or repeats_for(size, args.quick)
            for label, code in cases():
                rows.append(run_case(label, code, size, reps, rng,
                                     base_cases[label] if base_cases else None))
                r = rows[-1]
                vs = (f", base {1e3 * r['base_s']:8.3f} ms ({r['compiled_over_base']:.2f}x)"
                      if "base_s" in r else "")
                print(f"  {label:16s} size {size:5d}: compiled {1e3 * r['compiled_s']:8.3f} ms, "
                      f"numpy {1e3 * r['numpy_s']:8.3f} ms ({r['compiled_over_numpy']:.2f}x), "
                      f"from k {1e3 * r['from_k_s']:8.3f} ms{vs}", flush=True)
        after = os.getloadavg()
    elapsed = time.perf_counter() - t0
    print()
    print("decode from every result with errors=1 (spare results checked), the check compiled")
    print("(proj_sq, wresid) and in numpy, alternated per repeat; from k: the first k results, no check")
    print(table(rows))
    bad = [f"{r['case']} at {r['size']}" for r in rows if not r["same_faulty_and_product"]]
    result = {
        "benchmark": "decode_check",
        "machine": machine,
        "load_average_1_5_15min": {"before": before, "after": after},
        "parameters": {"quick": args.quick, "sizes": sizes, "threads": args.threads,
                       "seed": args.seed, "errors": 1, "dtype": "float64",
                       "compiled": ["proj_sq", "wresid"],   # the pieces the compiled column runs
                       "alternated": "compiled and numpy (and base) alternate per repeat, order turned",
                       "base": str(args.base) if args.base else None, "base_rev": args.base_rev},
        "elapsed_s": elapsed,
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "rows": rows,
    }
    write_json(args.out, result)
    if args.plot:
        plot(rows, Path(args.plot), f" ({machine.get('cpu_count')} CPUs{', quick' if args.quick else ''})")
        print(f"wrote {args.plot}")
    if bad:
        print(f"the checks answered differently for {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
