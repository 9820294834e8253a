"""Fuzz: the property-based test suites under many hypothesis seeds, long form.

The tests' hypothesis settings fix how many examples each test draws; which examples it
draws comes from a seed, random in a plain pytest run, fixed where a suite asks for
``derandomize`` (the codes' property suites, so that CI draws the same examples every time)
and everywhere hypothesis sees a CI environment variable (its "ci" profile). One run
explores one draw of each test; a latent bug that only some draws reach can pass many runs
and then fail one (the thirtieth session's MatDot bug: an F-ordered B of 8 rows, found by a
local run's draw of ``test_real_encode_equals_reference``). This runs the suites once per
seed, ``--seeds`` seeds from ``--first``, each in its own pytest process with
``--hypothesis-seed``, hypothesis's default profile and ``FUZZ_RANDOMIZE=1``, which turns the
suites' own ``derandomize`` off; a failing seed runs again by hand the same way::

    FUZZ_RANDOMIZE=1 python -m pytest --hypothesis-seed=S --hypothesis-profile=default <file>


Runs::

    OMP_NUM_THREADS=1 python benchmarks/fuzz.py                # 20 seeds, about 30 min
    OMP_NUM_THREADS=1 python benchmarks/fuzz.py --quick        # 2 seeds, the codes' suites
    OMP_NUM_THREADS=1 python benchmarks/fuzz.py --first 1000   # other draws

Per seed it records the pytest outcome (passed, failed, skipped, errors), the seconds, and
for a failing seed the failing tests with hypothesis's falsifying example. Prints a table,
writes ``benchmarks/results/fuzz.json`` and ``fuzz.png``. Exit status 0 when every seed
passed, 3 when one failed or timed out (``--timeout`` seconds a seed).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _machine import machine_info, write_json  # noqa: E402

#: The suites with hypothesis tests that run in one process (no mpiexec): codes, kernels,
#: soft errors, the wire and the protocol, the task pool, the layers' resident operations.
SUITES = (
    "tests/test_codes_properties.py", "tests/test_encode.py", "tests/test_gfp.py",
    "tests/test_kernels.py", "tests/test_lincomb.py", "tests/test_soft_errors.py",
    "tests/test_systematic.py", "tests/test_eft.py", "tests/test_protocol.py",
    "tests/test_wire.py", "tests/test_pool.py", "tests/test_resident_ops.py",
    "tests/test_quantization.py",
)
QUICK_SUITES = ("tests/test_encode.py", "tests/test_codes_properties.py")

_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    ap.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    ap.add_argument("--quick", action="store_true", help="2 seeds of the codes' suites")
    ap.add_argument("--files", nargs="+", default=None,
                    help="test files (default: the suites listed in SUITES)")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds one seed may take (default 1800)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.first < 0:
        ap.error(f"--first must be at least 0, got {args.first}")
    if not args.timeout > 0:
        ap.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.quick:
        args.seeds = min(args.seeds, 2)
        args.files = args.files or list(QUICK_SUITES)
    files = []
    for f in args.files or SUITES:
        path = Path(f) if Path(f).is_absolute() or Path(f).is_file() else ROOT / f
        if not path.is_file():
            ap.error(f"--files: no test file {f!r}")
        files.append(str(path.resolve()))
    args.files = files
    return args


def counts(summary: str) -> dict[str, int]:
    """pytest's last line (``3 passed, 1 failed in 2.1s``) as counts."""
    out = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for n, what in _COUNT.findall(summary):
        key = "errors" if what.startswith("error") else what
        if key in out:
            out[key] += int(n)
    return out


#: How hypothesis introduces a failing example (the wording changed between versions; an
#: ``@example`` that fails is an explicit one), and the draws of a ``st.data()`` test.
_EXAMPLE = ("Falsifying example:", "Failing test case:", "Falsifying explicit example:",
            "Failing explicit example:")
_DRAW = re.compile(r"^Draw \d+")


def failures(text: str, limit: int = 4000) -> list[str]:
    """The failing tests' ids and, where hypothesis printed one, the example it shrank to
    (pytest's short summary lines, and each ``Failing test case:`` or ``Falsifying
    example:`` block with its arguments, from pytest's ``E`` lines), at most ``limit``
    characters in all."""
    lines = text.splitlines()
    found = [ln.strip() for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    said = [re.sub(r"^E\s+", "", ln).strip() for ln in lines]   # (without pytest's "E")
    i = 0
    while i < len(lines):
        body = said[i]
        if body.startswith(_EXAMPLE):
            block = [body]
            i += 1
            while i < len(lines) and lines[i].startswith("E") and not body.endswith(")"):
                body = said[i]
                block.append(body)
                i += 1
            # a st.data() test's draws follow its call
            while i < len(lines) and _DRAW.match(said[i]):
                block.append(said[i])
                i += 1
            found.append(" ".join(block))
            continue
        i += 1
    out, used = [], 0
    for f in found:
        if used + len(f) > limit:
            break
        out.append(f)
        used += len(f)
    return out


def run_seed(seed: int, files: list[str], timeout: float) -> dict:
    """One pytest process over ``files`` with ``--hypothesis-seed=seed``."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--hypothesis-seed={seed}", "--hypothesis-profile=default", *files]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "FUZZ_RANDOMIZE": "1"}
    t0 = time.perf_counter()
    # its own session: on a timeout the whole group goes (a test's worker processes too)
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    try:
        out_b, err_b = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out_b, _ = p.communicate()
        out = out_b.decode(errors="replace")
        return {"seed": seed, "status": "timeout", "returncode": None,
                "seconds": time.perf_counter() - t0, **counts(""),
                "failures": [f"no result within {timeout:g} s"] + failures(out)}
    secs = time.perf_counter() - t0
    stdout, stderr = out_b.decode(errors="replace"), err_b.decode(errors="replace")
    text = stdout + stderr
    # pytest's summary is its last line on stdout (a test's stderr may say anything)
    last = next((ln for ln in reversed(stdout.strip().splitlines()) if _COUNT.search(ln)), "")
    c = counts(last)
    # pytest: 0 all passed, 1 some failed; anything else (usage, internal error, no tests
    # collected) is a failed seed too, named by its return code
    ok = p.returncode == 0 and c["failed"] == 0 and c["errors"] == 0 and c["passed"] > 0
    return {"seed": seed, "status": "passed" if ok else "failed", "returncode": p.returncode,
            "seconds": secs, **c,
            "failures": [] if ok else (failures(text) or text.strip().splitlines()[-20:])}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    info = machine_info()
    seeds = list(range(args.first, args.first + args.seeds))
    print(f"fuzz: {len(seeds)} seeds from {args.first} over {len(args.files)} test files",
          flush=True)
    print(f"{'seed':>6} {'status':>8} {'passed':>7} {'failed':>7} {'skipped':>8} {'seconds':>8}")
    runs = []
    for s in seeds:
        r = run_seed(s, args.files, args.timeout)
        runs.append(r)
        print(f"{s:>6} {r['status']:>8} {r['passed']:>7} {r['failed']:>7} {r['skipped']:>8} "
              f"{r['seconds']:>8.1f}", flush=True)
        for f in r["failures"][:6]:
            print(f"         {f[:300]}")
    bad = [r["seed"] for r in runs if r["status"] != "passed"]
    doc = {
        "benchmark": "fuzz",
        "machine": info,
        "settings": {"seeds": seeds, "first": args.first, "files": args.files,
                     "timeout_s": args.timeout, "quick": args.quick},
        "runs": runs,
        "summary": {"seeds": len(runs), "failed_seeds": bad,
                    "tests_per_seed": max((r["passed"] + r["failed"] + r["skipped"]
                                           for r in runs), default=0),
                    "median_seconds": sorted(r["seconds"] for r in runs)[len(runs) // 2],
                    "ok": not bad},
    }
    write_json(args.out, doc)
    plot(doc, args.out.with_suffix(".png"))
    print(f"failing seeds: {bad if bad else 'none'}")
    return 0 if not bad else 3


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = doc["runs"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(runs) + 2), 3.5))
    colors = ["tab:green" if r["status"] == "passed" else "tab:red" for r in runs]
    ax.bar([str(r["seed"]) for r in runs], [r["seconds"] for r in runs], color=colors)
    ax.set_xlabel("hypothesis seed (red: failed or timed out)")
    ax.set_ylabel("seconds")
    ax.tick_params(axis="x", labelsize=7)
    s = doc["summary"]
    ax.set_title(f"fuzz: {s['seeds']} seeds x {s['tests_per_seed']} tests, failing seeds: "
                 f"{s['failed_seeds'] or 'none'} (commit "
                 f"{str(doc['machine'].get('commit'))[:8]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
