"""Render the README's and the summaries' measured tables from the benchmarks' JSON, never by hand.

A block sits between ``<!-- render:NAME -->`` and ``<!-- /render:NAME -->`` in README.md,
``benchmarks/results/SUMMARY_codes.md`` or ``benchmarks/results/SUMMARY_runtime.md``; its text is
made here from ``benchmarks/results/*.json`` and names the script that measured it and the commit
it measured (``commit not recorded`` for JSON written before the scripts recorded one). A JSON
file that is missing renders as an explicit *not measured yet* line, and one written by an older
version of its script, without a field a table needs, as a line saying so: never a crash::

    python benchmarks/render_readme.py           # rewrite the blocks
    python benchmarks/render_readme.py --check   # exit 1 when a document is out of date

``tests/test_readme.py`` runs the check, so a re-run benchmark whose JSON was committed without
re-rendering fails CI. ``--results DIR`` and ``--root DIR`` point at other copies (the test
renders from a modified copy to show that a changed figure is caught).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = ROOT / "README.md"


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _machine(doc: dict[str, Any]) -> dict[str, Any]:
    return (doc.get("machine") or doc.get("meta", {}).get("machine")
            or doc.get("machine_at_start") or {})


def _commit(doc: dict[str, Any]) -> str:
    c = _machine(doc).get("commit")
    if not c:
        return "commit not recorded"
    return f"commit {c[:8]}{' + uncommitted changes' if _machine(doc).get('dirty') else ''}"


def _source(script: str, doc: dict[str, Any], json_name: str | None = None) -> str:
    """``(`benchmarks/X.py`, commit abcdef12, run 2026-11-22 on <CPU model>, 1-min load x)``:
    who measured a table, on what."""
    m = _machine(doc)
    date = m.get("date") or m.get("date_utc")
    out = f"`benchmarks/{script}.py`"
    if json_name and json_name != script:
        out += f" -> `{json_name}.json`"
    out += f", {_commit(doc)}"
    if date:
        out += f", run {str(date)[:10]}"
    cpu = m.get("cpu_model")
    if cpu:  # results from different machines sit side by side in one document
        out += f" on {cpu}"
    load = m.get("loadavg_1_5_15min") or m.get("loadavg")
    if load:
        out += f", 1-min load {load[0]:.1f}"
    return out


def _missing(name: str, script: str | None = None) -> str:
    script = script or name
    return (f"*Not measured yet: `benchmarks/{script}.py` has not written "
            f"`benchmarks/results/{name}.json`.*")


def _stale(name: str, script: str, exc: Exception) -> str:
    return (f"*`benchmarks/results/{name}.json` was written by an older `benchmarks/{script}.py` "
            f"and lacks what this table needs ({type(exc).__name__}: {exc}); rerun the script.*")


def _from(name: str, script: str | None = None) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[], str]]:
    """Decorate ``make(doc) -> text`` into a block that loads ``name.json`` and never crashes on a
    missing or older JSON."""
    script = script or name

    def wrap(make: Callable[[dict[str, Any]], str]) -> Callable[[], str]:
        def block() -> str:
            doc = _load(name)
            if doc is None:
                return _missing(name, script) + "\n"
            try:
                return make(doc).rstrip() + "\n"
            except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as exc:
                return _stale(name, script, exc) + "\n"
        block.sources = (name,)  # type: ignore[attr-defined]
        block.__name__ = make.__name__
        return block
    return wrap


def _e(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}e}"


def _bold_if(text: str, cond: bool) -> str:
    return f"**{text}**" if cond else text


# ------------------------------------------------------------------ Reliability (README)
@_from("soak")
def _soak(soak: dict[str, Any]) -> str:
    s, c = soak["summary"], soak["summary"]["counts"]
    failed = c.get("failed", 0) + c.get("deadline", 0)
    out = [
        f"**Soak** (`benchmarks/soak.py`, {_commit(soak)}): {s['jobs']:,} jobs of "
        f"{soak['settings']['size']}x{soak['settings']['size']} under `mpiexec --with-ft ulfm`, "
        f"{soak['workers']} workers, `{soak['code']}` with `errors=1`, "
        f"{soak['settings']['window']} jobs in flight; faults `{soak['faults']}`.",
        "",
        "| jobs/s | root RSS start -> end (MB) | slope after warm-up (MB / 1000 jobs) "
        "| growth after warm-up (MB) | wrong products | hangs | named failures |",
        "|---|---|---|---|---|---|---|",
        f"| {s['jobs_per_s']:.0f} | {s['rss_start_mb']:.1f} -> {s['rss_end_mb']:.1f} "
        f"| {s['rss_slope_mb_per_1000_jobs']:.4f} | {s['rss_fit_growth_after_warmup_mb']:.2f} "
        f"| {c.get('wrong', 0)} | {c.get('hung', 0) + c.get('past_deadline', 0)} | {failed} |",
        "",
        f"Faults survived: {c.get('corrupt_located', 0):,} corrupt results located and "
        f"excluded, {c.get('not_waited_for', 0):,} late or missing results (stragglers and "
        f"the silent rank) not waited for, {c.get('crashed_results', 0):,} results lost to "
        f"SIGKILLed rank(s) {s['dead_ranks']}; worst relative error "
        f"{s['worst_rel_error']:.1e}. Target: growth under 5 MB after warm-up, 0 wrong, "
        f"0 hangs: **{'met' if s['ok'] else 'NOT met'}**.",
    ]
    for f in s.get("failures", [])[:5]:
        out.append(f"- named failure, job {f['job']}: `{f['error']}: {f['message'][:240]}`")
    return "\n".join(out)


@_from("stateful")
def _stateful(st: dict[str, Any]) -> str:
    errs = ", ".join(f"{k} {v}" for k, v in sorted(st["named_errors"].items(),
                                                  key=lambda kv: -kv[1])) or "none"
    return (
        f"**State machine** (`benchmarks/stateful.py`, {_commit(st)}): {st['steps']:,} steps "
        f"in {st['runs']} hypothesis runs of `tests/runtime_machine.py` on `LocalCluster` "
        f"(numpy and torch backends; "
        + (f"hypothesis seed {st['settings']['seed']}; " if "seed" in st.get("settings", {}) else "")
        + f"fault configurations "
        f"{', '.join(f'`{k}`' for k in st['configs'])}); {st['products_ok']:,} products "
        f"checked correct (rtol {st['rtol']:g}), {st['acks_ok']:,} acknowledgements; "
        f"invariant violations: **{'none' if st['ok'] else st['failure']}**. Named errors "
        f"the beyond-tolerance runs ended in: {errs}."
        + (f" Deadline errors of tolerated jobs whose window the harness's own `gc.collect()` "
           f"covered (not counted against the runtime): {st['harness_gc_deadlines']}."
           if "harness_gc_deadlines" in st else ""))


@_from("bad_inputs")
def _bad_inputs(bad: dict[str, Any]) -> str:
    t = bad["totals"]
    rows = [*bad.get("by_surface", {}).items(), ("all", t)]
    out = [
        f"**Bad inputs** (`benchmarks/bad_inputs.py`, {_commit(bad)}): {t['tried']} "
        f"malformed or odd inputs over every flag of `run`, `train` and `demo` and every public "
        f"constructor (the table `tests/bad_input_cases.py`; odd inputs accepted on purpose are "
        f"listed in [docs/cli.md](docs/cli.md)), each a real subprocess or call with a "
        f"{bad.get('settings', {}).get('timeout_s', 120):g} s timeout.",
        "",
        "| surface | tried | clear error (names argument, range, value) | accepted, as documented "
        "| traceback | hang | as the table expects | median s per case |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cases = bad.get("cases", [])

    def median_s(name: str) -> str:
        surf = {"no subcommand": "frobnicate"}.get(name, name)
        secs = [c["seconds"] for c in cases if name == "all" or c["surface"] == surf]
        return f"{statistics.median(secs):.2f}" if secs else "-"

    for name, s in rows:
        out.append(f"| {name} | {s['tried']} | {s['clear_error']} | {s['accepted']} "
                   f"| {s['traceback']} | {s['hang']} "
                   f"| {_bold_if(str(s.get('as_expected', '-')), s.get('unexpected', 0) > 0)} "
                   f"| {median_s(name)} |")
    odd = t.get("unclear_error", 0) + t.get("other_exit", 0)
    if odd:
        out.append("")
        out.append(f"{odd} case(s) ended otherwise (status 2 without the expected words, or "
                   f"another exit status): see `benchmarks/results/bad_inputs.json`.")
    return "\n".join(out)


@_from("fuzz")
def _fuzz(fz: dict[str, Any]) -> str:
    s, st = fz["summary"], fz["settings"]
    seeds = st["seeds"]
    out = [
        "",
        f"**Fuzz** (`benchmarks/fuzz.py`, {_commit(fz)}): the property-based suites "
        f"({len(st['files'])} test files) under {len(seeds)} hypothesis seeds "
        f"({seeds[0]}-{seeds[-1]}), each seed its own pytest run with the suites' fixed "
        f"draws (`derandomize`, which keeps CI's runs alike) turned off.",
        "",
        "| seeds | tests a seed | failing seeds | median s a seed | slowest seed (s) |",
        "|---|---|---|---|---|",
        f"| {s['seeds']} | {s['tests_per_seed']} "
        f"| {_bold_if(', '.join(map(str, s['failed_seeds'])), bool(s['failed_seeds'])) or 'none'} "
        f"| {s['median_seconds']:.0f} | {max(r['seconds'] for r in fz['runs']):.0f} |",
    ]
    for r in fz["runs"]:
        if r["status"] != "passed":
            text = "; ".join(r["failures"]).replace("`", "'")
            out.append(f"- seed {r['seed']} {r['status']}: `{text[:300]}`")
    return "\n".join(out)


def reliability() -> str:
    return "\n".join([_soak(), _stateful(), _bad_inputs(), _fuzz()])


reliability.sources = ("soak", "stateful", "bad_inputs", "fuzz")  # type: ignore[attr-defined]


# ------------------------------------------------------------------ numerics.json
ACCURACY_N_MAX = {2: 31, 5: 30}  # the range: n <= 31 with 2 spares, n <= 30 with 5


def _code_label(r: dict[str, Any]) -> str:
    return f"{r['family']} ({r['row_blocks']}, {r['inner_blocks']}, {r['col_blocks']})"


@_from("numerics")
def accuracy(doc: dict[str, Any]) -> str:
    rows = doc["rows"]
    by = {(r["family"], r["r"], r["n"], r["construction"]): r for r in rows}
    fams = doc["parameters"]["families"]
    out = [
        f"Source: {_source('numerics', doc)}. Worst subset of exactly k = n - r results "
        f"(exhaustive over all C(n, k) subsets; `*` marks a sampled lower bound); "
        f"A and B {doc['parameters']['size']}x{doc['parameters']['size']} standard normal; error "
        f"`||C_hat - C||_F / ||C||_F` against the float64 product. For each family and r, the "
        f"largest n measured up to {ACCURACY_N_MAX.get(2)} (r = 2) or {ACCURACY_N_MAX.get(5)} "
        f"(r = 5). Uncoded float32 product: {_e(doc['uncoded_float32_error'])}.",
        "",
        "| code (p, m, q) | n | k | worst cond: circle / equispaced / Chebyshev "
        "| float64 error: circle / equispaced / Chebyshev "
        "| float32 inputs, circle: auto (operands) / forced float32 |",
        "|---|---|---|---|---|---|",
    ]
    for r_ in doc["parameters"]["redundancy"]:
        for fam in fams:
            ns = [n for (f, rr, n, c) in by if f == fam and rr == r_ and c == "circle"
                  and n <= ACCURACY_N_MAX.get(r_, 10**9)]
            if not ns:
                continue
            n = max(ns)
            cells = [by.get((fam, r_, n, c)) for c in ("circle", "equispaced", "chebyshev")]
            circ = cells[0]

            def cond(x: dict[str, Any] | None) -> str:
                return "-" if x is None else _e(x["cond"]) + ("" if x["exact"] else "*")

            def f64(x: dict[str, Any] | None) -> str:
                return "-" if x is None else _e(x["f64"]["error"])

            dt = circ["f32_auto"]["operand_dtype"]
            out.append(
                f"| {_code_label(circ)} | {n} | {circ['k']} "
                f"| **{cond(circ)}** / {cond(cells[1])} / {cond(cells[2])} "
                f"| **{f64(circ)}** / {f64(cells[1])} / {f64(cells[2])} "
                f"| {_e(circ['f32_auto']['error'])} ({dt}) / {_e(circ['f32_forced']['error'])} |")
    return "\n".join(out)


@_from("numerics")
def inner(doc: dict[str, Any]) -> str:
    sweep = doc["inner_sweep"]
    dims = sorted({r["inner"] for r in sweep})
    fams = list(dict.fromkeys(r["family"] for r in sweep))
    cell = {(r["family"], r["inner"]): r for r in sweep}
    first = sweep[0]
    out = [
        f"Source: {_source('numerics', doc)}; worst subset of `{first['code']}` and its "
        f"families' counterparts (cond {_e(first['cond'])}); A is 192 x inner, B inner x 144; "
        f"bold: above the 1e-12 target.",
        "",
        "| family, worker products | " + " | ".join(str(d) for d in dims) + " |",
        "|---|" + "---|" * len(dims),
    ]
    for fam in fams:
        for key, label in (("float64", "plain float64"), ("auto", "auto (compensated)")):
            vals = []
            for d in dims:
                r = cell.get((fam, d))
                if r is None:
                    vals.append("-")
                    continue
                e = r[key]["error"]
                vals.append(_bold_if(_e(e, 2 if e > 1e-12 else 1), e > 1e-12))
            out.append(f"| {fam}, {label} | " + " | ".join(vals) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------ cost.json
def _cost(doc: dict[str, Any], size: int) -> str:
    rows = [r for r in doc["rows"] if r["size"] == size]
    if not rows:
        return (f"*`benchmarks/results/cost.json` has no rows at size {size} (sizes "
                f"{doc['parameters']['sizes']}); rerun `benchmarks/cost.py`.*")
    reps = doc["parameters"]["repeats"]
    load = doc.get("load_average_1_5_15min", {}).get(str(size))
    out = [
        f"Source: {_source('cost', doc)}; size {size}, median of {reps.get(str(size), '?')} "
        f"repeats, ratios to the uncoded `A @ B` (`A @ x` for mat-vec) timed in the same run; BLAS "
        f"threads {doc['parameters']['threads']}"
        + (f"; 1-min load {load['before'][0]:.1f} before, {load['after'][0]:.1f} after" if load else "")
        + ". *slowest worker* (its flops as a share of the uncoded product's); *decode, k results*: "
        "from the first k that arrived.",
        "",
        "| code | n | k | encode | slowest worker (flops) | decode, k results | decode, all n "
        "| ideal end-to-end | decode share | worst rel. error (k / n) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['case']} | {r['workers']} | {r['recovery_threshold']} | {r['encode_ratio']:.2f} "
            f"| {r['worker_ratio']:.2f} ({r['flops_per_worker_ratio']:.3f}) | {r['decode_k_ratio']:.2f} "
            f"| {r['decode_n_ratio']:.2f} | {r['e2e_ideal_ratio']:.2f} "
            f"| {100 * r['decode_share_of_e2e']:.0f}% "
            f"| {_e(r['rel_error']['decode_k'])} / {_e(r['rel_error']['decode_n'])} |")
    return "\n".join(out)


def _cost_ranges(doc: dict[str, Any]) -> str:
    """Ranges over every size of the run for the README's prose under the cost table."""
    by = {}
    for r in doc["rows"]:
        by.setdefault(r["case"], {})[r["size"]] = r
    sizes = sorted({r["size"] for r in doc["rows"]})
    parts = []

    def span(vals: list[float], fmt: str = ".2f") -> str:
        return f"{min(vals):{fmt}}-{max(vals):{fmt}}x"

    md = by.get("MatDot m=5", {})
    if md:
        noisy = max(md, key=lambda z: md[z]["uncoded_spread_max_over_min"])
        spread = md[noisy]["uncoded_spread_max_over_min"]
        parts.append(f"MatDot's decode from k results took {span([r['decode_k_ratio'] for r in md.values()], '.1f')} "
                     f"the uncoded product (the noisiest size, {noisy}: the uncoded product's slowest "
                     f"and fastest repeats differ by {spread:.2f}x)")
    comp, plain = by.get("MDS (30,25) compensated", {}), by.get("MDS (30,25) plain f64", {})
    both = [z for z in comp if z in plain]
    if both:
        parts.append("a compensated worker took "
                     + span([comp[z]["worker_ratio"] / plain[z]["worker_ratio"] for z in both], ".1f")
                     + " the time of a plain one")
    poly = by.get("Polynomial 4x2", {})
    if poly:
        parts.append(f"the polynomial code's encode {span([r['encode_ratio'] for r in poly.values()])}")
    if not parts:
        return ""
    return (f"Across sizes {', '.join(str(z) for z in sizes)} in this run: " + "; ".join(parts) + ".")


@_from("cost")
def cost(doc: dict[str, Any]) -> str:
    try:  # a JSON without what the prose line needs still renders its table
        ranges = _cost_ranges(doc)
    except (KeyError, ZeroDivisionError, TypeError):
        ranges = ""
    return _cost(doc, 1024) + (f"\n\n{ranges}" if ranges else "")


@_from("cost")
def cost_2048(doc: dict[str, Any]) -> str:
    return _cost(doc, 2048)


# ------------------------------------------------------------------ decode_check.json
@_from("decode_check")
def decode_check(doc: dict[str, Any]) -> str:
    load = doc.get("load_average_1_5_15min", {})
    vs = bool(doc["rows"]) and all("base_s" in r for r in doc["rows"])   # run with --base
    out = [
        f"Source: {_source('decode_check', doc)}; medians, the compiled and the numpy check "
        f"alternated per repeat in one process; BLAS threads {doc['parameters']['threads']}"
        + (f"; 1-min load {load['before'][0]:.1f} before, {load['after'][0]:.1f} after"
           if load.get("before") else "")
        + ". Every worker's result, `errors=1`: the spare results checked (*compiled*: "
        "`proj_sq`, one pass over each result" + (", and the weighted residual by `wresid`"
                                                  if "wresid" in doc["parameters"].get("compiled", ())
                                                  else "")
        + "; *numpy*: the same check by numpy's products, norms and QR, the rest of the decode "
        "the same); *from k*: the first k results, nothing to check (the systematic codes "
        "assemble their data blocks, the others solve)."
        + (f" *base*: the decode of commit {str(doc['parameters'].get('base_rev') or '?')[:8]} "
           "(the base tree's package, imported beside this one), alternated with the others in "
           "the same run." if vs else "")
        + " *same answer*: the same faulty workers (none) and the same product bit for bit"
        + (" (the base's too)." if vs else "."),
        "",
        "| code | n | k | size | compiled (ms) | numpy (ms) | compiled / numpy | from k (ms) "
        "| compiled / from k |" + (" base (ms) | compiled / base |" if vs else "") + " same answer |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if vs else "") + "---|",
    ]
    for r in doc["rows"]:
        out.append(
            f"| {r['case']} | {r['workers']} | {r['recovery_threshold']} | {r['size']} "
            f"| {1e3 * r['compiled_s']:.3f} | {1e3 * r['numpy_s']:.3f} "
            f"| {r['compiled_over_numpy']:.2f} "
            f"| {1e3 * r['from_k_s']:.3f} | {r['compiled_over_from_k']:.2f} "
            + (f"| {1e3 * r['base_s']:.3f} | {r['compiled_over_base']:.2f} " if vs else "")
            + f"| {'yes' if r['same_faulty_and_product'] else '**NO**'} |")
    return "\n".join(out)


# ------------------------------------------------------------------ encode.json
@_from("encode")
def encode(doc: dict[str, Any]) -> str:
    par = doc["parameters"]
    size = max(par["sizes"])
    rows = [r for r in doc["rows"] if r["size"] == size]
    clock = "CPU time (`--clock cpu`)" if par.get("clock") == "cpu" else "wall time"
    # the target judged against the measured move bound (benchmarks/encode.py) where the run has it
    move = all("encode_over_move" in r for r in doc["rows"])
    out = [
        f"Source: {_source('encode', doc)}; A and B {size}x{size}, median of {par['repeats']} "
        f"repeats{' (`--quick`)' if par.get('quick') else ''}, {clock}, BLAS threads "
        f"{par['threads']}. *copy bound*: reading A and B once and writing every task once at "
        "the copy bandwidth measured in the same run"
        + (" (each repeat the faster of `np.copyto` and the compiled streamed copy: glibc's "
           "`memmove` writes through the cache below its non-temporal threshold, about 192 MiB "
           "here, at about 0.6x the streamed rate)"
           if par.get("bound_copy", "").startswith("the faster") else "")
        + "; *flop bound*: the generator products' "
        "multiply-adds at the float64 GEMM rate measured in the same run "
        + ("(over GF(p) the same count, which the compiled kernel runs as exact float64 "
           "multiply-adds; its reductions mod p are not counted); "
           if any(r.get("field") and r.get("flop_bound_s") is not None for r in rows)
           else "(- over GF(p)); ")
        + "*tensordot*: the plain encode (`codedml/codes/_reference.py`). "
        + ("*move bound*: reading A and B once and writing every task once, timed directly in "
           "the same run (a copy of the smaller byte count, the same faster copy, then the "
           "rest of the writes streamed, or the rest of the reads): the copy bound charges a byte read as much as "
           "a byte written, which an encode that writes 3x what it reads cannot reach here. "
           if move else "")
        + f"Targets: at most 1.5x the {'move' if move else 'copy'} bound, at most 1.0x tensordot."
        + (" *encode*: the steady state, tasks written into a previous encoding's memory (the task "
           "pool, `codedml.codes.task_pool()`; *reused* says whether every repeat's tasks were); "
           "*first encode*: into fresh pages, which the kernel zeroes on first touch."
           if any("cold_encode_over_copy" in r for r in rows) else ""),
        "",
    ]
    cold = any("cold_encode_over_copy" in r for r in rows)
    loop = any(r.get("compiled_over_numpy_loop") is not None for r in rows)
    if loop:
        out[0] += (" *numpy loop*: the same encode with the compiled loops "
                   "(`codedml/codes/_kernels.c`) switched off, as where they were not built.")
    gemm = any(r.get("encode_over_blas_gemm") is not None for r in rows)
    if gemm:
        out[0] += (" *BLAS GEMM*: the same encode with the generator products by BLAS GEMMs "
                   f"instead of the compiled `lincomb` ({par.get('lincomb_simd', 'SIMD')}), as on "
                   "a CPU without AVX2.")
    sizes = sorted(par["sizes"])
    spread = move and len(sizes) > 1   # the move ratio at every size of the run, as a range
    span_of: dict[tuple[str, str], str] = {}
    if spread:
        for key in {(r["case"], r["dtype"]) for r in rows}:
            v = [r["encode_over_move"] for r in doc["rows"] if (r["case"], r["dtype"]) == key]
            span_of[key] = _bold_if(f"{min(v):.2f}-{max(v):.2f}", max(v) > 1.5)
    head = ("| code | n | k | inputs | operands | encode / copy bound | "
            + ("encode / move bound | " if move else "")
            + (f"same, {sizes[0]}-{sizes[-1]} | " if spread else "")
            + ("encode / max(move, flop bound) " if move else "encode / max(copy, flop bound) "))
    rule = "|---|---|---|---|---|---|---|" + ("---|" if move else "") + ("---|" if spread else "")
    if cold:
        out += [head + "| first encode / copy bound | reused | encode / tensordot | max rel. diff to tensordot |"
                + (" encode / numpy loop |" if loop else "") + (" encode / BLAS GEMM |" if gemm else ""),
                rule + "---|---|---|---|" + ("---|" if loop else "") + ("---|" if gemm else "")]
    else:
        out += [head + "| encode / tensordot | max rel. diff to tensordot |", rule + "---|---|"]
    for r in rows:
        if move:
            copy = (f"{r['encode_over_copy']:.2f} | "
                    + _bold_if(f"{r['encode_over_move']:.2f}", r["encode_over_move"] > 1.5)
                    + (f" | {span_of[(r['case'], r['dtype'])]}" if spread else ""))
        else:
            copy = _bold_if(f"{r['encode_over_copy']:.2f}", r["encode_over_copy"] > 1.5)
        tdot = _bold_if(f"{r['encode_over_tensordot']:.2f}", r["encode_over_tensordot"] > 1.0)
        extra = (f" | {r['cold_encode_over_copy']:.2f} | {'yes' if r.get('reused') else 'no'}"
                 if cold else "")
        out.append(
            f"| {r['case']} | {r['workers']} | {r['recovery_threshold']} | {r['dtype']} "
            f"| {r['operand_dtype']} | {copy} | {r['encode_over_bound']:.2f}{extra} | {tdot} "
            f"| {_e(r['max_rel_diff_vs_reference'])} |"
            + ((" - |" if r.get("compiled_over_numpy_loop") is None
                else f" {r['compiled_over_numpy_loop']:.2f} |") if loop and cold else "")
            + ((" - |" if r.get("encode_over_blas_gemm") is None
                else f" {r['encode_over_blas_gemm']:.2f} |") if gemm and cold else ""))
    if move:
        # the 1.5x target over every size of the run, per case: against the larger of the
        # move and flop bounds (a code whose multiply-adds dominate cannot reach the move bound)
        worst: dict[tuple[str, str], float] = {}
        for r in doc["rows"]:
            key = (r["case"], r["dtype"])
            worst[key] = max(worst.get(key, 0.0), r["encode_over_bound"])
        over = [(k, v) for k, v in worst.items() if v > 1.5]
        cells = [r for r in doc["rows"] if r["encode_over_bound"] > 1.5]
        out += ["", f"Encode / max(move, flop bound) at most 1.5x at every size ({sizes[0]}-"
                f"{sizes[-1]}): {len(worst) - len(over)} of {len(worst)} cases; {len(cells)} of "
                f"{len(doc['rows'])} case-size cells above"
                + (": " + "; ".join(f"{c} {d} (up to {v:.2f})" for (c, d), v in sorted(over))
                   if over else "") + "."]
    return "\n".join(out)


# ------------------------------------------------------------------ kernel_ab.json
@_from("kernel_ab")
def kernel_ab(doc: dict[str, Any]) -> str:
    par = doc["parameters"]
    base = str(par.get("base_commit") or par["base"])[:8]
    out = [
        f"Source: {_source('kernel_ab', doc)}; the encode kernel `_kernels.c` at {base} (*base*) "
        f"and at the measured commit (*work*)"
        + (" (**the same source**: the ratios are noise)" if par.get("same_source") else "")
        + f", both built with `{par['build']}` and loaded as "
        f"two modules into one process; `code.encode(A, B)` alternated between them, the order "
        f"swapped every round, median of {par['rounds']} rounds each, A and B size x size. "
        "*work / base* below 1: the measured commit's kernel is faster. *tasks*: whether the "
        "two builds' tasks agree entry for entry.",
        "",
        "| code | inputs | size | base (ms) | work (ms) | work / base | same, ratio of the minima | tasks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        out.append(f"| {r['case']} | {r['dtype']} | {r['size']} | {1e3 * r['base_s']:.2f} | "
                   f"{1e3 * r['work_s']:.2f} | {r['work_over_base']:.3f} | {r['min_ratio']:.3f} | "
                   f"{'identical' if r['tasks_identical'] else '**differ**'} |")
    return "\n".join(out)


# ------------------------------------------------------------------ gfp_matmul.json
@_from("gfp_matmul")
def gfp_matmul(doc: dict[str, Any]) -> str:
    out = [
        f"Source: {_source('gfp_matmul', doc)}; {doc['size']}x{doc['size']} unless stated, "
        f"median of {doc['repeats']} repeats, ratio to float64 BLAS at the same size in the same "
        f"run (BLAS threads {[b.get('num_threads') for b in _machine(doc).get('blas', []) if isinstance(b, dict)]}); "
        "*throughput*: float64 BLAS time over the row's; targets at 1024 from issue 11; *CPU time*: "
        "the same ratio from process CPU time, which a loaded machine distorts less.",
        "",
        "| implementation | p | size | time relative to float64 BLAS | throughput relative to "
        "float64 BLAS (target) | the same from CPU time | matches galois |",
        "|---|---|---|---|---|---|---|",
    ]
    checks = doc.get("galois_matches_matmul_mod", {})
    for r in doc["rows"]:
        if r["impl"] == "numpy":
            continue
        p = r["p"]
        ok = checks.get(str(p)) if r["impl"] == "codedml" else None
        tput = 1.0 / r["ratio_to_blas"]
        tgt = r.get("target_throughput_ratio") if r["size"] == doc["size"] else None
        tgt_s = "" if tgt is None else f" ({'>=' if tput >= tgt else '**below**'} {tgt})"
        cpu = r.get("throughput_ratio_cpu")
        cpu_s = "-" if cpu is None else f"{cpu:.{4 if cpu < 0.01 else 2}f}" + (
            "" if tgt is None else f" ({'>=' if cpu >= tgt else '**below**'} {tgt})")
        out.append(f"| {r['case']} | {p} | {r['size']} | {r['ratio_to_blas']:.{0 if r['ratio_to_blas'] > 100 else 2}f}x "
                   f"| {tput:.{4 if tput < 0.01 else 2}f}{tgt_s} | {cpu_s} "
                   f"| {'-' if ok is None else ('yes' if ok else '**no**')} |")
    return "\n".join(out)


# ------------------------------------------------------------------ cold_start.json
@_from("cold_start")
def cold_start(doc: dict[str, Any]) -> str:
    out = [
        f"Source: {_source('cold_start', doc)}; {doc['size']}x{doc['size']} operands, medians over "
        f"{doc['repeats']} fresh processes per case ({doc['warm']} warm products each). *first - warm*: "
        f"the first product in a fresh process (code constructed, encoded, computed, decoded) minus a "
        f"warm one, target <= {doc['target_s']} s; *import*: `import codedml` (and `LocalCluster` for "
        "`cluster`) after numpy.",
        "",
        "| code | path | import (s) | first - warm (s) | import + first - warm (s) | target met "
        "| heavy modules imported |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        out.append(f"| {r['code']} | {r['path']} | {r['import_s']:.3f} | {r['cold_minus_warm_s']:.3f} "
                   f"| {r['import_plus_cold_minus_warm_s']:.3f} "
                   f"| {'yes' if r['cold_minus_warm_s'] <= doc['target_s'] else '**no**'} "
                   f"| {', '.join(r['heavy_imported']) or 'none'} |")
    names = list(doc["decode"][0]["median_s"]) if doc["decode"] else []
    out += ["", "Repeat decodes in one process, time relative to the decode from k results with the "
            "factorization cached (medians of CPU time, interleaved):", "",
            "| code | size | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in doc["decode"]:
        out.append(f"| {r['code']} (n={r['workers']}, k={r['k']}) | {r.get('size', doc['size'])} | "
                   + " | ".join(f"{r['ratio_to_cached_k'][n]:.2f}" for n in names) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------ scale.json
@_from("scale")
def scale(doc: dict[str, Any]) -> str:
    A, B = doc["sizes"]["A"], doc["sizes"]["B"]
    out = [
        f"Source: {_source('scale', doc)}; one `mpiexec --oversubscribe -n N+1` job per worker "
        f"count N, medians of {doc['jobs']} requests each; the root's CPU time per request "
        "(`time.thread_time` inside the code's encode, the transport's send of each task and "
        "receive of each reply, and the code's decode: waiting and preemption by the other "
        f"ranks left out). *job*: `submit` of {A[0]}x{A[1]} @ {B[0]}x{B[1]} with "
        f"`{doc['code']}`; *call*: a handler returning 64 doubles (control plane only)"
        + (f"; per-message path: {', '.join(doc['transport'])}" if doc.get("transport") else "")
        + ". Fit "
        "`time = a + b N` and the log-log exponent `d log time / d log N`; issue 11 asks for "
        "at most linear growth (exponent <= 1.1).",
        "",
        "| workers | job (ms) | encode | send | receive | decode | call (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in doc["points"]:
        j, c = p["rows"]["job"], p["rows"]["call"]
        out.append(f"| {p['workers']} | {1e3 * j['median_s']:.3f} | {1e3 * j['encode_median_s']:.3f} "
                   f"| {1e3 * j['send_median_s']:.3f} | {1e3 * j['receive_median_s']:.3f} "
                   f"| {1e3 * j['decode_median_s']:.3f} | {1e3 * c['median_s']:.3f} |")
    out += ["", "| request | per worker (us) | intercept (ms) | log-log exponent | at most linear |",
            "|---|---|---|---|---|"]
    for what, f in doc["fits"].items():
        out.append(f"| {what} | {1e6 * f['slope_s_per_worker']:.1f} | {1e3 * f['intercept_s']:.3f} "
                   f"| {f['loglog_exponent']:.2f} | {'yes' if f['at_most_linear'] else '**no**'} |")
    return "\n".join(out)


# ------------------------------------------------------------------ cuda_backend.json
@_from("cuda_backend")
def cuda_backend(doc: dict[str, Any]) -> str:
    m = _machine(doc)
    out = [
        f"Source: {_source('cuda_backend', doc)} on {m.get('gpu', 'an unnamed GPU')} "
        f"(torch {m.get('torch', '?')}); the worker's share is 1/{doc['args']['k']} of A's rows.",
        "",
        "| size | dtype | backend TFLOP/s | `torch.matmul` TFLOP/s | time / torch.matmul | rel. error |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        out.append(f"| {r['size']} | {r['dtype']} | {r['backend_tflops']:.2f} | {r['torch_tflops']:.2f} "
                   f"| {r['ratio']:.2f} | {_e(r['rel_error'])} |")
    return "\n".join(out)


# ------------------------------------------------------------------ systematic.json
def _systematic_rows(doc: dict[str, Any], constructions: tuple[str, ...]) -> list[str]:
    out = [
        "| family | construction | n | spare | threshold | subsets examined | worst cond plain "
        "| worst cond systematic | float64 error plain / systematic | float32 error plain / "
        "systematic | systematic within targets |",
        "|" + "---|" * 11,
    ]
    for r in doc["rows"]:
        if r["construction"] not in constructions:
            continue
        p, q = r["plain"], r["systematic"]
        sub = ("all " if q["how"] == "exact" else "sampled ") + f"{q['subsets_examined']:,}"
        out.append(
            f"| {r['family']} | {r['construction']} | {r['n']} | {r['r']} | {r['k']} | {sub} "
            f"| {p['cond']:.2e} | {q['cond']:.2e} | {_e(p['f64']['error'])} / {_e(q['f64']['error'])} "
            f"| {_e(p['f32']['error'])} / {_e(q['f32']['error'])} "
            f"| {'yes' if r['systematic_within_targets'] else '**no**'} |")
    return out


def _systematic_head(doc: dict[str, Any]) -> str:
    p = doc["parameters"]
    return (f"Source: {_source('systematic', doc)}: `{doc['command']}`. Worst case over the "
            f"subsets of the recovery threshold's size (`all`: exhaustive, up to "
            f"{p['exact_limit']:,} subsets; `sampled`: adversarial candidates plus "
            f"{p['samples']:,} random ones, a lower bound); errors are `||C_hat - C||_F / "
            f"||C||_F` decoded on that worst subset with `precision=\"auto\"`, A "
            f"{p['size']}x{p['size']}; targets {p['targets']['float64']:g} (float64) and "
            f"{p['targets']['float32']:g} (float32).")


@_from("systematic")
def systematic(doc: dict[str, Any]) -> str:
    t = doc["timings"]
    out = [_systematic_head(doc), ""] + _systematic_rows(doc, ("circle",))
    if t:
        out += [
            "",
            f"Time ratios (circle, {t[0]['size']}x{t[0]['size']}, one BLAS thread, median of "
            f"{t[0]['repeats']}): the systematic code's decode with 0, 1 and s (every spare) "
            "systematic results missing, over the plain code's decode from k results; the "
            "systematic encode over the plain encode.",
            "",
            "| family | n | spare | threshold | decode, 0 missing | 1 missing | s missing (s) | encode |",
            "|" + "---|" * 8,
        ]
        out += [f"| {x['family']} | {x['n']} | {x['r']} | {x['k']} | {x['decode_0_ratio']:.3f} "
                f"| {x['decode_1_ratio']:.3f} | {x['decode_s_ratio']:.3f} ({x['missing_s']}) "
                f"| {x['encode_ratio']:.2f} |" for x in t]
    return "\n".join(out)


@_from("systematic")
def systematic_all(doc: dict[str, Any]) -> str:
    return "\n".join([_systematic_head(doc), ""] +
                     _systematic_rows(doc, ("circle", "equispaced", "chebyshev")))


# ------------------------------------------------------------------ runtime_latency.json
@_from("runtime_latency")
def runtime_latency(doc: dict[str, Any]) -> str:
    meta, summ, jobs = doc["meta"], doc["summary"], doc["jobs"]
    out = [
        f"Source: {_source('runtime_latency', doc)}; one `mpiexec -n {meta['workers'] + 1}` job, "
        f"{meta['workers']} workers, {meta['size']}x{meta['size']}, each straggler delayed "
        f"{meta['delay_s']} s, median of {meta['repeats']} repeats; latency relative to uncoded "
        f"without stragglers (`tolerated`: the number in brackets).",
        "",
        "| code (threshold) | 0 stragglers | 1 straggler | as many as tolerated |",
        "|---|---|---|---|",
    ]
    for name, s in summ.items():
        lv = s["levels"]
        tol = lv["tolerable"]
        tcell = "-" if s["tolerates"] == 0 else f"{tol['ratio_vs_uncoded0']:.2f} ({tol['stragglers']})"
        out.append(f"| {name} ({s['recovery_threshold']}) | {lv['0']['ratio_vs_uncoded0']:.2f} "
                   f"| {lv['1']['ratio_vs_uncoded0']:.2f} | {tcell} |")
    coded = [lv for name, s in summ.items() if s["tolerates"] > 0 for lv in s["levels"].values()]
    fails = sum(not j["ok"] for j in jobs)
    late = sum(lv["straggler_status"].get("late", 0) for s in summ.values() for lv in s["levels"].values())
    waited = [lv["ratio_vs_uncoded_same_stragglers"] for s in summ.values() if s["tolerates"] > 0
              for k, lv in s["levels"].items() if k == "1"]
    shares = [lv["median_decode_share"] for lv in coded]
    out += [
        "",
        f"- Jobs that failed or decoded wrong (relative error >= {meta['tolerance']:g}): {fails} of "
        f"{len(jobs)}; max relative error {_e(max(j['rel_error'] for j in jobs))}.",
        f"- With 1 straggler the coded jobs took {min(waited):.2f}-{max(waited):.2f}x the uncoded "
        f"job with the same straggler, which waits out the delay.",
        f"- Stragglers that still sent a result after the decode (a cancel that came too late): {late}.",
        f"- Decode share of a coded job's wall time (median per configuration): "
        f"{100 * min(shares):.0f}-{100 * max(shares):.0f}%.",
    ]
    out += latency_targets(summ, meta.get("parity_nice"))
    models = {name: s["model"] for name, s in summ.items() if "model" in s}
    if models:
        dom = {name: m["fault_free"]["dominant"] for name, m in models.items()}
        out.append(f"- Per-component model for {meta['workers']} dedicated nodes (see "
                   "`benchmarks/results/SUMMARY_runtime.md`): the dominant term, fault-free: "
                   + ", ".join(f"{name} {d}" for name, d in dom.items()) + ".")
    return "\n".join(out)


def latency_table(summ: dict[str, Any]) -> list[str]:
    """The end-to-end latency table (header and one row per code and straggler level) from
    ``runtime_latency.json``'s ``summary``; ``runtime_latency.py`` prints the same."""
    out = [
        "| code | thr | tol | stragglers | median e2e (ms) | ratio vs uncoded/0 | vs uncoded, same stragglers "
        "| results used | decode share | stragglers skipped (late / not sent) | failures |",
        "|" + "---|" * 11,
    ]
    for name, s in summ.items():
        for lvl in ("0", "1", "tolerable"):
            row = s["levels"][lvl]
            if lvl == "tolerable" and row["stragglers"] in (0, 1):
                label = f"tol={row['stragglers']} (same as {row['stragglers']})"
            else:
                label = {"0": "0", "1": "1", "tolerable": f"tol={row['stragglers']}"}[lvl]
            st = row["straggler_status"]
            tot = sum(st.values())
            skipped = (f"{st.get('missing', 0) + st.get('late', 0)}/{tot} "
                       f"({st.get('late', 0)} / {st.get('missing', 0)})") if tot else "-"
            vs = row["ratio_vs_uncoded_same_stragglers"]
            out.append(
                f"| {name} | {s['recovery_threshold']} | {s['tolerates']} | {label} | "
                f"{1e3 * row['median_e2e_s']:.1f} | {row['ratio_vs_uncoded0']:.2f} | "
                f"{'-' if vs is None else f'{vs:.2f}'} | {row['median_results_used']:g} | "
                f"{100 * row['median_decode_share']:.1f}% | {skipped} | {row['failures']}/{row['repeats']} |")
    return out


_SYSTEMATIC_LATENCY = ("MDS sys", "MatDot sys")
_LATENCY_TARGETS = {"0": 1.15, "tolerable": 1.25}


def latency_model_table(summ: dict[str, Any]) -> list[str]:
    """The per-component model for n dedicated nodes (``runtime_latency.py``'s docstring):
    per code, fault-free and with as many stragglers as tolerated; one line saying it is not
    there for JSON written before the script measured it."""
    if not any("model" in s for s in summ.values()):
        return ["*Per-component model: not in this JSON (written before `runtime_latency.py` "
                "measured it); rerun the script.*"]
    out = [
        "| code | stragglers | encode (ms) | slowest worker (ms) | decode (ms) | control plane (ms) "
        "| model (ms) | model vs uncoded | dominant | measured e2e (ms) | rest (ms) |",
        "|" + "---|" * 11,
    ]
    for name, s in summ.items():
        for lvl, m in s["model"].items():
            if lvl == "tolerable" and s["tolerates"] == 0:
                continue
            t = m["terms_s"]
            label = "0" if lvl == "fault_free" else f"tol={s['tolerates']}"
            out.append(
                f"| {name} | {label} | {1e3 * t['encode']:.2f} | {1e3 * t['slowest worker']:.2f} "
                f"| {1e3 * t['decode']:.2f} | {1e3 * t['control plane']:.2f} | {1e3 * m['total_s']:.2f} "
                f"| {m['ratio_vs_uncoded0']:.2f} | {m['dominant']} | {1e3 * m['measured_e2e_s']:.1f} "
                f"| {1e3 * m['rest_s']:.1f} |")
    return out


def latency_targets(summ: dict[str, Any], nice: int | None = None) -> list[str]:
    """Issue 11's targets for the systematic codes, measured and modelled (one line each);
    ``nice``: the run's default ``cluster.parity_nice`` (None where the JSON predates it)."""
    out = []
    for name in _SYSTEMATIC_LATENCY:
        s = summ.get(name)
        if s is None:
            out.append(f"- `{name}`: not in this JSON (written before the systematic codes were "
                       "measured); rerun `runtime_latency.py`.")
            continue
        cells = []
        for lvl, key, what in (("0", "fault_free", "fault-free"), ("tolerable", "tolerable",
                                                                     f"{s['tolerates']} stragglers")):
            meas = s["levels"][lvl]["ratio_vs_uncoded0"]
            target = _LATENCY_TARGETS[lvl]
            cell = f"{what} {meas:.2f}x measured (target {target}: {'met' if meas <= target else 'NOT met'})"
            if "model" in s:
                mod = s["model"][key]["ratio_vs_uncoded0"]
                cell += f", {mod:.2f}x modelled ({'met' if mod <= target else 'NOT met'})"
            cells.append(cell)
        out.append(f"- `{name}` ({s['code']}): " + "; ".join(cells) + ".")
    mw, ms = summ.get("MDS sys, wait"), summ.get("MDS sys")
    if mw is not None and ms is not None:
        cells = []
        for lvl, what in (("0", "fault-free"), ("tolerable", f"{ms['tolerates']} stragglers")):
            a, b = mw["levels"][lvl], ms["levels"][lvl]
            wait = a.get("median_systematic_wait_s")
            cells.append(f"{what} {a['ratio_vs_uncoded0']:.2f}x with the wait"
                         + (f" (median wait {1e3 * wait:.2f} ms, {a['median_results_used']:g} results used)"
                            if wait is not None else "")
                         + f", {b['ratio_vs_uncoded0']:.2f}x without ({b['median_results_used']:g} used)")
        out.append("- Waiting for systematic results (`cluster.systematic_grace = 1`, "
                   "`MDS sys, wait` against the default `MDS sys` in the same run): "
                   + "; ".join(cells) + ".")
    mn = summ.get("MDS sys, no yield")
    if mn is not None and ms is not None:
        cells = []
        for lvl, what in (("0", "fault-free"), ("tolerable", f"{ms['tolerates']} stragglers")):
            a, b = ms["levels"][lvl], mn["levels"][lvl]
            cells.append(f"{what} {a['ratio_vs_uncoded0']:.2f}x yielding, "
                         f"{b['ratio_vs_uncoded0']:.2f}x without")
        out.append("- Parity products that yield the shared cores (the default `MDS sys`, "
                   f"`cluster.parity_nice = {nice}`, against `MDS sys, no yield` with "
                   "`parity_nice = 0` in the same run): " + "; ".join(cells) + ".")
    return out


@_from("runtime_latency")
def runtime_summary(doc: dict[str, Any]) -> str:
    meta, summ, jobs = doc["meta"], doc["summary"], doc["jobs"]
    m = _machine(doc)
    out = [
        f"Source: {_source('runtime_latency', doc)}: `mpiexec --oversubscribe -n {meta['workers'] + 1} "
        f"python benchmarks/runtime_latency.py{' --quick' if meta['quick'] else ''} --repeats "
        f"{meta['repeats']}` ({meta['workers']} workers + root, A and B {meta['size']}x{meta['size']} "
        f"{meta['dtype']}, each straggler delayed {meta['delay_s']} s, straggling ranks drawn at random "
        f"per job, median of {meta['repeats']} repeats, total {meta['wall_time_s']:.0f} s).",
        "",
        f"Machine: {m.get('platform')}, {m.get('cpus') or m.get('cpu_count')} CPUs "
        f"({meta['workers'] + 1} ranks oversubscribed), {m.get('mpi_library', 'MPI library not recorded')}, "
        f"numpy {m.get('numpy')}, mpi4py {m.get('mpi4py')}; 1-min load average at start / end "
        f"{(m.get('loadavg') or m.get('loadavg_1_5_15min') or [float('nan')])[0]:.1f} / "
        f"{(meta.get('loadavg_end') or [float('nan')])[0]:.1f} (the machine is shared). Absolute "
        "times are not meaningful here; the ratios are to `uncoded` without stragglers in the same run.",
        "",
        "`thr` = recovery threshold, `tol` = stragglers tolerated (n - thr; replication: replicas - 1). "
        "`decode share` = `report.decode / report.wall` (median). `results used` = worker results "
        "that went into the decode (median). `stragglers skipped` = straggling workers the job did "
        "not wait for: `late` (the straggler still sent its result after the decode) / not sent "
        f"(`missing`: it honoured the cancel). `failures` = jobs that raised or whose relative error "
        f"vs `A @ B` was >= {meta['tolerance']:g}.",
        "",
    ]
    out += latency_table(summ)
    out += ["", "Per-component model for n dedicated nodes, from the same run: encode and decode "
            "as the runtime timed them (median), the slowest worker's product timed alone on the "
            "root, the control plane as the median latency of empty jobs of the same code; `rest` "
            "= measured minus model (operand transfer and the contention of the oversubscribed "
            "ranks).", ""]
    out += latency_model_table(summ)
    out += ["", "Targets for the systematic codes (issue 11):", ""] + latency_targets(summ, meta.get("parity_nice"))
    out += [
        "",
        f"uncoded without stragglers: {1e3 * summ['uncoded']['levels']['0']['median_e2e_s']:.1f} ms "
        f"(median). Max relative error over all {len(jobs)} jobs: "
        f"{_e(max(j['rel_error'] for j in jobs))}; failures: {sum(not j['ok'] for j in jobs)}.",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------ control_plane*.json
def _control(doc: dict[str, Any], name: str) -> str:
    t = doc["targets"]
    out = [
        f"Source: {_source('control_plane', doc, name)}; {doc['workers']} workers "
        f"({doc['workers'] + 1} ranks on {_machine(doc).get('cpu_count', '?')} cores), medians of "
        f"{doc['repeats']} requests; bare round trip: mpi4py `Isend`/`Irecv` to the same workers "
        f"in the same run ("
        + ", ".join(f"{k}: {1e3 * v:.3f} ms" for k, v in doc["bare_median_s"].items()) + ").",
        "",
        "| request | payload | median (ms) | p90 (ms) | / bare round trip |",
        "|---|---|---|---|---|",
    ]
    # the targets apply to the transport the runtime uses by default (JSON before the
    # compiled path existed has one transport and no "transport" field)
    main = lambda r: r.get("transport", doc.get("transport")) == doc.get("transport")
    for r in doc["rows"]:
        p90 = "-" if r.get("p90_s") is None else f"{1e3 * r['p90_s']:.3f}"
        ratio = f"{r['ratio_to_bare']:.1f}"
        if r["request"].startswith("call") and main(r):
            ratio = _bold_if(ratio, r["ratio_to_bare"] > t["request_ratio_to_bare"])
        out.append(f"| {r['request']} | {r['payload']} | {1e3 * r['median_s']:.3f} | {p90} | {ratio} |")
    step = [r for r in doc["rows"] if r["request"].startswith("train step") and main(r)]
    calls = [r["ratio_to_bare"] for r in doc["rows"] if r["request"].startswith("call") and main(r)]
    verdict = []
    if calls:
        verdict.append(f"a call at most {t['request_ratio_to_bare']:g}x the bare round trip: "
                       f"{'met' if max(calls) <= t['request_ratio_to_bare'] else 'NOT met'} "
                       + (f"({min(calls):.1f}x in this run)"
                          if f"{min(calls):.1f}" == f"{max(calls):.1f}"
                          else f"({min(calls):.1f}-{max(calls):.1f}x in this run)"))
    jobs = [r for r in doc["rows"] if r["request"].startswith("job") and main(r)]
    if jobs and "runtime_median_s" in jobs[0]:
        j = jobs[0]
        verdict.append(f"a coded job at most {t['request_ratio_to_bare']:g}x: "
                       f"{'met' if j['ratio_to_bare'] <= t['request_ratio_to_bare'] else 'NOT met'} "
                       f"({j['ratio_to_bare']:.1f}x: its encode {1e3 * j['encode_median_s']:.3f} ms "
                       f"and decode {1e3 * j['decode_median_s']:.3f} ms, the rest "
                       f"{1e3 * j['runtime_median_s']:.3f} ms = {j['runtime_ratio_to_bare']:.1f}x "
                       f"the bare round trip)")
    floor_job = [r for r in doc["rows"] if r["request"].startswith("floor job") and main(r)]
    if jobs and floor_job:
        f, j = floor_job[0], jobs[0]
        verdict.append(f"the job's essential steps alone (the floor job row: no Future, no "
                       f"bookkeeping) {f['ratio_to_bare']:.1f}x, so the runtime's bookkeeping is "
                       f"{1e3 * (j['median_s'] - f['median_s']):.3f} ms of the job's "
                       f"{1e3 * j['median_s']:.3f}")
    if step and doc["workers"] == 6:
        s = step[0]["median_s"]
        verdict.append(f"a training step at most {1e3 * t['train_step_s_at_6_workers']:g} ms at 6 "
                       f"workers: {'met' if s <= t['train_step_s_at_6_workers'] else 'NOT met'} "
                       f"({1e3 * s:.2f} ms)")
    if verdict:
        out += ["", "Targets: " + "; ".join(verdict) + "."]
    if doc.get("compiled_over_python"):
        v = doc["compiled_over_python"].values()
        out += ["", f"Rows without a suffix ran on the compiled per-message path "
                    f"(`codedml.runtime._wire`, the default), the \"Python path\" rows on "
                    f"`transport=\"python\"`, interleaved in {doc.get('blocks', 1)} blocks of the "
                    f"same run: compiled / Python {min(v):.2f}-{max(v):.2f}."]
    floor = {r["payload"]: r["median_s"] for r in doc["rows"] if r["request"].startswith("python floor")}
    if floor:
        fr = [v / doc["bare_median_s"][k] for k, v in floor.items()]
        over = [r["median_s"] / floor[r["payload"]] for r in doc["rows"]
                if r["request"].startswith("call") and r["payload"] in floor and main(r)]
        out += ["", f"The Python floor (a `struct` header and the payload each way, no checks, "
                    f"no futures, no deadlines: `floor_rounds` in the script) costs "
                    f"{min(fr):.1f}-{max(fr):.1f}x the bare round trip in the same run"
                    + (f"; a `call` costs {min(over):.1f}-{max(over):.1f}x the floor" if over else "")
                    + "."]
    return "\n".join(out)


@_from("control_plane")
def control_plane(doc: dict[str, Any]) -> str:
    return _control(doc, "control_plane")


@_from("control_plane_2workers", "control_plane")
def control_plane_2workers(doc: dict[str, Any]) -> str:
    return _control(doc, "control_plane_2workers")


# ------------------------------------------------------------------ coded_cnn.json
@_from("coded_cnn")
def coded_cnn(doc: dict[str, Any]) -> str:
    names = {"plain": "torch layers (reference)", "coded": "coded (`convert`, errors=1)",
             "uncoded": "uncoded MP (`ReplicationCode`)"}
    quick = " (**`--quick` profile**: a smoke run, not the measurement)" if doc.get("quick") else ""
    out: list[str] = [
        f"Source: {_source('coded_cnn', doc)}; {doc['workers']} workers, {doc['epochs']} epochs{quick}.",
        "",
    ]
    out += [
        "| model | optimizer | faults | final test accuracy | last epoch's train loss | step time / torch "
        "| corrected | stragglers skipped | recomputed | healed by a retry | blocks repaired "
        "| scrubs that searched |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        st = r["stats"] or {}
        ratio = r.get("step_ratio_to_plain")
        ratio_s = f"{ratio:.1f}" if ratio else "-"
        if r["error"]:
            acc = f"**stopped at step {r['steps']}** ({r['error'][:120].replace('`', '')})"
        else:
            acc = _bold_if(f"{100 * r['final_accuracy']:.1f}%", bool(r["faults"]))
        cells = ["-"] * 6 if r["kind"] == "plain" else [
            str(st.get("corrected", 0)), str(st.get("skipped", 0)), str(st.get("retried", 0)),
            str(st.get("healed", "-")), str(st.get("repaired", 0)), str(st.get("searched", "-"))]
        if r["kind"] == "plain":   # its own ratio is 1: show its median step instead
            ratio_s = f"1 ({1e3 * r['median_step_s']:.2f} ms)"
        loss = f"{r['loss'][-1]:.3g}" if r["loss"] else "-"
        out.append(f"| {names.get(r['kind'], r['kind'])} | {r['optimizer']} | {'yes' if r['faults'] else 'no'} "
                   f"| {acc} | {loss} | {ratio_s} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------ coded_layers.json
_LAYER = {"plain": "`nn.Linear` (reference)", "coded": "coded", "uncoded": "uncoded"}


@_from("coded_layers")
def coded_layers(doc: dict[str, Any]) -> str:
    out = [
        f"Source: {_source('coded_layers', doc)}; {doc['workers']} workers, {doc['epochs']} epochs.",
        "",
        "| model | faults | final test accuracy | wall s | corrected | stragglers skipped "
        "| recomputed | healed by a retry | blocks repaired | scrubs that searched |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in doc["curves"]:
        st = c["stats"] or {}
        name = _LAYER.get(c["kind"], c["kind"])
        wall = c["wall_s"][-1] if c["wall_s"] else float("nan")
        if c["error"]:
            acc = f"**stopped at step {c['steps']}** ({c['error'][:160].replace('`', '')})"
            cells = ["-"] * 6
        else:
            acc = _bold_if(f"{100 * c['final_accuracy']:.1f}%", bool(c["faults"]))
            cells = ["-"] * 6 if c["kind"] == "plain" else [
                str(st.get("corrected", 0)), str(st.get("skipped", 0)), str(st.get("retried", 0)),
                str(st.get("healed", "-")), str(st.get("repaired", 0)), str(st.get("searched", "-"))]
        out.append(f"| {name} | {'yes' if c['faults'] else 'no'} | {acc} | {wall:.1f} | "
                   + " | ".join(cells) + " |")
    return "\n".join(out)


@_from("coded_layers")
def coded_layers_step(doc: dict[str, Any]) -> str:
    st = doc["step_time"]
    dims = {(r["dim"], r["batch"]) for r in st}
    strag = sorted({r["straggler_s"] for r in st})
    reps = (doc.get("args") or {}).get("repeats")
    out = [
        f"Source: {_source('coded_layers', doc)}; one layer of "
        + ", ".join(f"{d}x{d} with batch {b}" for d, b in sorted(dims))
        + f"; medians of {reps if reps else 'an unrecorded number of'} steps (forward, backward, "
        "SGD update) as a ratio to `nn.Linear` at the root without a straggler; a straggler "
        "delays every result of one worker.",
        "",
        "| layer | " + " | ".join("no straggler" if s == 0 else f"one {s:g} s straggler" for s in strag) + " |",
        "|---|" + "---|" * len(strag),
    ]
    names = {"plain": "`nn.Linear` at the root", "uncoded": "uncoded model parallel",
             "coded": "CodedLinear"}
    for kind in dict.fromkeys(r["kind"] for r in st):
        cells = []
        for s in strag:
            r = next((r for r in st if r["kind"] == kind and r["straggler_s"] == s), None)
            if r is None:
                cells.append("-")
            elif "ratio_to_plain" in r:
                cells.append(f"{r['ratio_to_plain']:.2f}")
            else:
                base = next(x for x in st if x["kind"] == "plain" and x["straggler_s"] == 0)
                cells.append(f"{r['median_step_s'] / base['median_step_s']:.2f}")
        out.append(f"| {names.get(kind, kind)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


@_from("coded_layers_optimizers", "coded_layers")
def coded_layers_optimizers(doc: dict[str, Any]) -> str:
    rows = doc["optimizer_step"]
    reps = (doc.get("args") or {}).get("repeats")
    d, b = rows[0]["dim"], rows[0]["batch"]
    names = {"CodedSGD": "`CodedSGD` (coded step at the workers)",
             "SGD": "`torch.optim.SGD`, momentum 0.9 (re-encode)",
             "Adam": "`torch.optim.Adam` (re-encode)",
             "plain Adam": "`nn.Linear` + `torch.optim.Adam` at the root"}
    out = [
        f"Source: {_source('coded_layers', doc, 'coded_layers_optimizers')}; one {d}x{d} layer with batch {b}, fault-free; "
        f"medians of {reps if reps else 'an unrecorded number of'} steps (forward, backward, "
        "update) as a ratio to `CodedSGD`'s step.",
        "",
        "| optimizer | step time / CodedSGD | weight re-encoded per step |",
        "|---|---|---|",
    ]
    for r in rows:
        per = "-" if "reencodes" not in r else ("yes" if r["reencodes"] else "no")
        out.append(f"| {names.get(r['optimizer'], r['optimizer'])} | {r['ratio_to_coded_sgd']:.2f} | {per} |")
    return "\n".join(out)


# ------------------------------------------------------------------ train_policies.json
@_from("train_policies")
def train_policies(doc: dict[str, Any]) -> str:
    a, table = doc["args"], doc["table"]
    models = list(dict.fromkeys(r["model"] for r in table))
    pols = list(dict.fromkeys(r["policy"] for r in table))
    cell = {(r["model"], r["policy"]): r for r in table}
    src = f"Source: {_source('train_policies', doc)}"
    if doc.get("machine_ddp"):
        src += f"; DDP baseline in its own job, {_commit({'machine': doc['machine_ddp']})}"
    elif "ddp_gloo" in pols:
        src += ("; written by an older script, which recorded the load after the runs and ran the "
                "DDP baseline inside the policies' mpiexec job with the first repeat's fault seed "
                "in every repeat")
    else:
        src += "; *DDP baseline not run yet* (`python benchmarks/train_policies.py --ddp-baseline`)"
    seeds = sorted({run.get("fault_seed") for r in doc.get("runs", []) for run in r["runs"]},
                   key=lambda x: (x is None, x))
    out = [
        src + f". {doc['workers']} workers, {a['budget']:g} s per run, medians over "
        f"{a['repeats']} repeat(s); fault seeds per repeat: "
        + (", ".join(str(s) for s in seeds) if seeds and None not in seeds else "not recorded")
        + f"; target: the loss `sync` reaches at half its budget.",
        "",
        "| policy | " + " | ".join(f"{m}: time to target / sync | {m}: loss at {a['budget']:g} s "
                                   f"| {m}: updates" for m in models) + " | mean staleness |",
        "|---|" + "---|---|---|" * len(models) + "---|",
    ]
    label = {"ddp_gloo": "DDP (gloo)"}
    for p in pols:
        cells = []
        for m in models:
            r = cell.get((m, p))
            if r is None:
                cells += ["-", "-", "-"]
                continue
            t = f"{r['ratio_to_sync']:.2f}"
            if p == "sync":
                t += f" ({r['time_to_target_s']:.1f} s)"
            cells += [t, f"{r['final_loss']:.3f}", str(r["steps"])]
        stale = [cell[(m, p)]["staleness_mean"] for m in models if (m, p) in cell]
        out.append(f"| {label.get(p, p)} | " + " | ".join(cells)
                   + f" | {statistics.median(stale):.2f} |")
    runs = {(r["model"], r["policy"]): r["runs"] for r in doc.get("runs", [])}
    diffs = []
    for m in models:
        for s_run, d_run in zip(runs.get((m, "sync"), []), runs.get((m, "ddp_gloo"), [])):
            diffs += [abs(a[1] - b[1]) for a, b in zip(s_run["curve"], d_run["curve"])]
    if diffs:
        out += ["", f"Same iterates: over the steps both made, repeat by repeat, `sync`'s and DDP's "
                    f"training losses differ by at most {_e(max(diffs))} ({len(diffs)} steps compared); "
                    f"their losses at the budget differ because they fit different numbers of steps "
                    f"into it."]
    return "\n".join(out)


# ------------------------------------------------------------------ communication.json
def _ratio(x: float) -> str:
    return "not reached" if x is None or math.isinf(x) or math.isnan(x) else f"{x:.3f}"


@_from("communication")
def communication(doc: dict[str, Any]) -> str:
    a, table = doc["args"], doc["table"]
    methods = list(dict.fromkeys(r["method"] for r in table))
    cases = list(dict.fromkeys((r["task"], r["partition"]) for r in table))
    cell = {(r["task"], r["partition"], r["method"]): r for r in table}
    label = {r["method"]: r["label"] for r in table}
    spec = {r["partition"]: r["partition_spec"] for r in table}
    out = [
        f"Source: {_source('communication', doc)}. {a['workers']} workers (threads), {a['rounds']} "
        f"rounds per method, delays `{a['shift']:g} + Exp({a['scale']:g})` s per (rank, job), fault "
        f"seed {a['fault_seed']}, federated deadline {a['deadline']:g} s; non-IID = "
        f"`{spec.get('noniid', 'dirichlet')}`. Target: the loss `sync` float32 reaches at half its "
        f"rounds. Bits are worker-to-root; *bits / sync* and *bits / best QSGD* are ratios of bits "
        f"to the target in the same run (below 0.1 would be 10x less communication).",
        "",
        "| task | shards | method | target loss | bits to target | bits / sync | bits / best QSGD "
        "| rounds to target | wall to target (s) | final loss | test accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for t, p in cases:
        qs = [cell[(t, p, m)]["bits_to_target"] for m in methods
              if m.startswith("qsgd") and (t, p, m) in cell]
        best_q = min(qs) if qs else math.inf
        for m in methods:
            r = cell.get((t, p, m))
            if r is None:
                continue
            bq = r["bits_to_target"] / best_q if best_q not in (0, math.inf) else math.inf
            bits, rounds, wall = r["bits_to_target"], r["rounds_to_target"], r["wall_to_target_s"]
            out.append(
                f"| {t} | {p} | {label[m]} | {r['target_loss']:.3f} | "
                + ("not reached" if math.isinf(bits) else f"{bits / 8e3:.1f} kB")
                + f" | {_ratio(r['bits_ratio_to_sync'])} | {_ratio(bq)} | "
                + ("-" if math.isinf(rounds) else f"{rounds:.0f}") + " | "
                + ("-" if math.isinf(wall) else f"{wall:.2f}")
                + f" | {r['final_loss']:.3f} | {r['accuracy']:.3f} |")
        fin = [(cell[(t, p, m)]["bits_to_target"], m) for m in methods if (t, p, m) in cell]
        reach = sorted(x for x in fin if not math.isinf(x[0]))
        if reach and qs and not math.isinf(best_q):
            b, m = reach[0]
            tenx = [label[mm] for bb, mm in reach if bb <= 0.1 * best_q]
            note = (f"- {t}, {p}: fewest bits to the target: {label[m]} "
                    f"({b / best_q:.2f}x the best QSGD row). At least 10x fewer bits than "
                    f"the best QSGD row: {', '.join(tenx) if tenx else 'none'}.")
            dq = sorted(x for x in reach if x[1].startswith("data"))
            if dq:
                r = dq[0][0] / best_q
                note += (f" Best data-quantization row: {label[dq[0][1]]}, {r:.2f}x the best "
                         f"QSGD row's bits: the paper's ~10x claim "
                         f"{'holds' if r <= 0.1 else 'does not hold'} here.")
            elif any(mm.startswith("data") for mm in methods):
                note += " No data-quantization row reached the target."
            notes.append(note)
    if notes:
        out += ["", "What these rows show:"] + notes
    return "\n".join(out)


# ------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Doc:
    """A document with rendered blocks, relative to the repository root."""

    path: str
    blocks: tuple[str, ...]


BLOCKS: dict[str, Callable[[], str]] = {
    "reliability": reliability,
    "accuracy": accuracy,
    "inner": inner,
    "cost": cost,
    "cost_2048": cost_2048,
    "decode_check": decode_check,
    "kernel_ab": kernel_ab,
    "encode": encode,
    "gfp_matmul": gfp_matmul,
    "cold_start": cold_start,
    "scale": scale,
    "cuda_backend": cuda_backend,
    "systematic": systematic,
    "systematic_all": systematic_all,
    "runtime_latency": runtime_latency,
    "runtime_summary": runtime_summary,
    "control_plane": control_plane,
    "control_plane_2workers": control_plane_2workers,
    "coded_layers": coded_layers,
    "coded_layers_step": coded_layers_step,
    "coded_layers_optimizers": coded_layers_optimizers,
    "train_policies": train_policies,
    "communication": communication,
    "coded_cnn": coded_cnn,
}

DOCS: tuple[Doc, ...] = (
    Doc("README.md", ("coded_cnn", "accuracy", "inner", "systematic", "cost", "decode_check", "encode",
                      "gfp_matmul",
                      "cold_start", "cuda_backend", "runtime_latency", "control_plane",
                      "control_plane_2workers", "scale", "reliability", "coded_layers", "coded_layers_step",
                      "coded_layers_optimizers", "train_policies", "communication")),
    Doc("benchmarks/results/SUMMARY_codes.md", ("accuracy", "inner", "systematic_all", "cost_2048",
                                                "kernel_ab")),
    Doc("benchmarks/results/SUMMARY_runtime.md", ("runtime_summary",)),
)


def sources(name: str) -> tuple[str, ...]:
    """The JSON files (names without ``.json``) block ``name`` is rendered from."""
    return getattr(BLOCKS[name], "sources", ())


def render(text: str, names: tuple[str, ...] = tuple(BLOCKS), where: str = "README.md") -> str:
    for name in names:
        pat = re.compile(rf"(<!-- render:{name} -->\n).*?(<!-- /render:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"{where} has no <!-- render:{name} --> block")
        body = BLOCKS[name]()
        text = pat.sub(lambda m: m.group(1) + body + m.group(2), text)
    stray = set(re.findall(r"<!-- render:(\w+) -->", text)) - set(names)
    if stray:
        raise SystemExit(f"{where} has blocks no renderer owns: {sorted(stray)}")
    return text


def main(argv: list[str] | None = None) -> int:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a document is out of date")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the JSON directory")
    ap.add_argument("--root", type=Path, default=ROOT, help="where README.md and benchmarks/results/*.md are")
    args = ap.parse_args(argv)
    RESULTS = args.results
    stale = []
    for doc in DOCS:
        path = args.root / doc.path
        old = path.read_text()
        new = render(old, doc.blocks, doc.path)
        if new == old:
            continue
        if args.check:
            stale.append(doc.path)
        else:
            path.write_text(new)
            print(f"{doc.path} re-rendered")
    if stale:
        print(f"out of date with benchmarks/results: {', '.join(stale)}; run "
              "python benchmarks/render_readme.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
