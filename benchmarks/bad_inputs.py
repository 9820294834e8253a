"""Every malformed input of ``tests/bad_input_cases.py``, tried for real, its outcome counted.

Each command line runs as a real ``python -m codedml ...`` subprocess in a scratch directory,
in a session of its own, killed with its process group at ``--timeout`` (counted as a hang);
each constructor call runs in a thread with the same timeout (those that need MPI in a
process of their own). A case's outcome is one of ``clear_error`` (exit status 2 /
``ConfigurationError`` whose message holds the argument's name, the valid range and the value),
``accepted`` (exit 0 / the call returned), ``traceback``, ``hang``, ``unclear_error`` (status 2
without those substrings) or ``exit_N``; it is *as expected* when it equals the table's
outcome. Prints a table of outcomes per surface (``run``, ``train``, ``demo``, constructors),
writes ``benchmarks/results/bad_inputs.json`` (with ``"machine"``, every case and
``"totals"``) and ``bad_inputs.png``; exit status 1 when any case is not as expected::

    OMP_NUM_THREADS=1 python benchmarks/bad_inputs.py            # every case (~5-10 min on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/bad_inputs.py --quick    # every 8th command line + all calls

``--quick`` writes ``bad_inputs_quick.json`` (not the README's figures) unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))   # this checkout's codedml
sys.path.insert(0, str(HERE.parent / "tests"))

from _machine import machine_info  # noqa: E402

import bad_input_cases as bic  # noqa: E402

OUTCOMES = ("clear_error", "accepted", "traceback", "hang", "unclear_error", "other_exit")


def surface(case: bic.Case) -> str:
    return case.argv[0] if case.kind == "cli" else "constructors"


def run_case(case: bic.Case, timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    if case.kind == "cli":
        with tempfile.TemporaryDirectory(prefix="codedml-bad-") as d:
            try:
                outcome, text = bic.run_cli_subprocess(case, Path(d), timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - a case whose files could not be made
                outcome, text = "traceback", f"setting up the case failed: {type(exc).__name__}: {exc}"
            marker = (Path(d) / bic.MARKER).exists()
    else:
        outcome, text = (bic.run_api_subprocess(case, timeout=timeout) if case.own_process
                         else bic.call_api(case, timeout=timeout))
        marker = False
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # the line that says why (the error message, or the last line of a traceback)
    why = next((ln for ln in lines if "error" in ln.lower() and "Traceback" not in ln), None)
    return {"id": case.id, "surface": surface(case), "kind": case.kind,
            "argv": list(case.argv) if case.kind == "cli" else None,
            "env": dict(case.env) or None, "expected": case.outcome,
            "must": list(case.must), "reason": case.reason or None,
            "outcome": outcome, "as_expected": outcome == case.outcome and not marker,
            "pickle_ran_code": marker,
            "message": (why or (lines[-1] if lines else ""))[:600],
            "seconds": round(time.perf_counter() - t0, 3)}


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    c = Counter(r["outcome"] if r["outcome"] in OUTCOMES[:-1] else "other_exit" for r in rows)
    out = {"tried": len(rows), **{k: c.get(k, 0) for k in OUTCOMES}}
    out["as_expected"] = sum(r["as_expected"] for r in rows)
    out["unexpected"] = len(rows) - out["as_expected"]
    out["expected_clear_error"] = sum(r["expected"] == "clear_error" for r in rows)
    out["expected_accepted"] = sum(r["expected"] == "accepted" for r in rows)
    return out


def plot(by_surface: dict[str, dict[str, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(by_surface)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    left = [0] * len(names)
    colors = {"clear_error": "tab:green", "accepted": "tab:blue", "traceback": "tab:red",
              "hang": "black", "unclear_error": "tab:orange", "other_exit": "tab:purple"}
    for o in OUTCOMES:
        vals = [by_surface[n][o] for n in names]
        if any(vals):
            ax.barh(names, vals, left=left, label=o, color=colors[o])
            left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("malformed inputs tried")
    ax.set_title("bad inputs: outcome per surface")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every 8th command line and all calls")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds before a case counts as a hang (default 120)")
    ap.add_argument("--parallel", type=int, default=2, help="subprocesses at once (default 2)")
    ap.add_argument("--only", default="", help="run only the cases whose id contains this text")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default results/bad_inputs.json; bad_inputs_quick.json with --quick)")
    args = ap.parse_args(argv)
    if not (args.timeout > 0 and args.timeout < float("inf")):
        ap.error(f"--timeout must be a finite number of seconds greater than 0, got {args.timeout}")
    if args.parallel < 1:
        ap.error(f"--parallel must be at least 1, got {args.parallel}")
    out = args.out or HERE / "results" / ("bad_inputs_quick.json" if args.quick else "bad_inputs.json")
    cases = [c for c in bic.CASES if args.only in c.id]
    if args.quick:
        cli = [c for c in cases if c.kind == "cli"]
        cases = cli[::8] + [c for c in cases if c.kind == "api"]
    info = machine_info()
    t0 = time.perf_counter()
    # API calls first, in this process, one at a time (they share the interpreter); then the
    # command lines, ``--parallel`` subprocesses at once.
    api_rows = [run_case(c, args.timeout) for c in cases if c.kind == "api"]
    with ThreadPoolExecutor(args.parallel) as pool:
        cli_rows = list(pool.map(lambda c: run_case(c, args.timeout), [c for c in cases if c.kind == "cli"]))
    rows = cli_rows + api_rows
    wall = time.perf_counter() - t0
    by_surface = {s: totals([r for r in rows if r["surface"] == s])
                  for s in ("run", "train", "demo", "frobnicate", "constructors")
                  if any(r["surface"] == s for r in rows)}
    if "frobnicate" in by_surface:  # the no-subcommand case: usage, counted with the CLI
        by_surface["no subcommand"] = by_surface.pop("frobnicate")
    total = totals(rows)
    print(f"{'surface':<14} {'tried':>6} {'clear':>6} {'accepted':>8} {'traceback':>9} {'hang':>5} "
          f"{'unclear':>7} {'other':>6} {'as expected':>12}")
    for name, t in [*by_surface.items(), ("all", total)]:
        print(f"{name:<14} {t['tried']:>6} {t['clear_error']:>6} {t['accepted']:>8} "
              f"{t['traceback']:>9} {t['hang']:>5} {t['unclear_error']:>7} {t['other_exit']:>6} "
              f"{t['as_expected'] / max(1, t['tried']):>11.1%}")
    bad = [r for r in rows if not r["as_expected"]]
    for r in bad:
        print(f"  NOT AS EXPECTED: {r['id']}: expected {r['expected']}, got {r['outcome']}: {r['message']}")
    print(f"{len(rows)} cases in {wall:.1f} s")
    doc = {"machine": info, "settings": {"quick": args.quick, "timeout_s": args.timeout,
                                         "parallel": args.parallel, "only": args.only},
           "wall_s": wall, "totals": total, "by_surface": by_surface, "cases": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    # one line per case: a readable file and a small diff when a case changes
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=1)[:-2]
    body = ",\n".join("  " + json.dumps(r) for r in rows)
    out.write_text(f'{head},\n "cases": [\n{body}\n ]\n}}\n')
    json.loads(out.read_text())  # the hand-joined document must parse
    plot(by_surface, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
