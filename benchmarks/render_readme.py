"""Render the README's measured blocks from the benchmarks' JSON, never by hand.

A block sits between ``<!-- render:NAME -->`` and ``<!-- /render:NAME -->`` in README.md; its
text is made here from ``benchmarks/results/*.json`` and names the commit each figure measured::

    python benchmarks/render_readme.py           # rewrite the blocks in README.md
    python benchmarks/render_readme.py --check   # exit 1 when README.md is out of date

``tests/test_readme.py`` runs the check, so a re-run benchmark whose JSON was committed without
re-rendering the README fails CI.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _commit(doc: dict[str, Any]) -> str:
    m = doc.get("machine") or doc.get("meta", {}).get("machine") or {}
    c = m.get("commit")
    if not c:
        return "commit not recorded"
    return f"commit {c[:8]}{' + uncommitted changes' if m.get('dirty') else ''}"


def _missing(name: str) -> str:
    return f"*`benchmarks/{name}.py` has not written `benchmarks/results/{name}.json` yet.*"


def reliability() -> str:
    out: list[str] = []
    soak = _load("soak")
    if soak is None:
        out.append(_missing("soak"))
    else:
        s, c = soak["summary"], soak["summary"]["counts"]
        failed = c.get("failed", 0) + c.get("deadline", 0)
        out += [
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
    out.append("")
    st = _load("stateful")
    if st is None:
        out.append(_missing("stateful"))
    else:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(st["named_errors"].items(),
                                                      key=lambda kv: -kv[1])) or "none"
        out += [
            f"**State machine** (`benchmarks/stateful.py`, {_commit(st)}): {st['steps']:,} steps "
            f"in {st['runs']} hypothesis runs of `tests/runtime_machine.py` on `LocalCluster` "
            f"(numpy and torch backends; fault configurations "
            f"{', '.join(f'`{k}`' for k in st['configs'])}); {st['products_ok']:,} products "
            f"checked correct (rtol {st['rtol']:g}), {st['acks_ok']:,} acknowledgements; "
            f"invariant violations: **{'none' if st['ok'] else st['failure']}**. Named errors "
            f"the beyond-tolerance runs ended in: {errs}.",
        ]
    out.append("")
    bad = _load("bad_inputs")
    if bad is None:
        out.append(_missing("bad_inputs"))
    else:
        t = bad["totals"]
        out += [
            f"**Bad inputs** (`benchmarks/bad_inputs.py`, {_commit(bad)}): {t['tried']} "
            f"malformed inputs over every flag of `run` and `train` and every public "
            f"constructor.",
            "",
            "| tried | clear error (names argument, range, value) | accepted, as documented "
            "| traceback | hang |",
            "|---|---|---|---|---|",
            f"| {t['tried']} | {t['clear_error']} | {t['accepted']} | {t['traceback']} "
            f"| {t['hang']} |",
        ]
    return "\n".join(out).rstrip() + "\n"


BLOCKS: dict[str, Callable[[], str]] = {"reliability": reliability}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pat = re.compile(rf"(<!-- render:{name} -->\n).*?(<!-- /render:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"README.md has no <!-- render:{name} --> block")
        body = make()
        text = pat.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md is out of date with benchmarks/results: run "
                  "python benchmarks/render_readme.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        README.write_text(new)
        print("README.md re-rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
