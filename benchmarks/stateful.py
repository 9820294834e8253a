"""The runtime-contract state machine, long form: >= 10,000 steps in one run.

Runs ``tests/runtime_machine.py``'s :class:`RuntimeMachine` (hypothesis ``RuleBasedStateMachine``
on :class:`~codedml.LocalCluster`, numpy and torch backends, every fault configuration) for
``--examples`` runs of up to ``--steps`` steps each, and records how many steps ran, per rule
and per fault configuration, how many products were checked correct, and which named errors
the beyond-tolerance configurations ended in. Any invariant violation fails the run (exit 1)
with hypothesis's shrunk counterexample::

    OMP_NUM_THREADS=1 python benchmarks/stateful.py            # about 10,000+ steps
    OMP_NUM_THREADS=1 python benchmarks/stateful.py --quick    # a few hundred
    OMP_NUM_THREADS=1 python benchmarks/stateful.py --seed 7   # other draws

``--seed`` (default 0, recorded in the JSON) fixes hypothesis's draws, as its pytest
option ``--hypothesis-seed`` does: the same seed runs the same fault configurations and rule
sequences, so two commits' counts compare draw for draw. Which worker answers first still
depends on thread timing, so the products checked and the named errors of beyond-tolerance
runs can differ by a few between runs of one seed; another seed explores other draws.

Writes ``benchmarks/results/stateful.json`` and ``stateful.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))   # this checkout's codedml
sys.path.insert(0, str(HERE.parent / "tests"))

import hypothesis.core  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

import runtime_machine as rm  # noqa: E402
from _machine import machine_info  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=260, help="state-machine runs (default 260)")
    ap.add_argument("--steps", type=int, default=50, help="most steps per run (default 50)")
    ap.add_argument("--quick", action="store_true", help="20 runs of 20 steps")
    ap.add_argument("--min-steps", type=int, default=10_000,
                    help="fail unless at least this many steps ran (default 10000; 0 with --quick)")
    ap.add_argument("--seed", type=int, default=0,
                    help="hypothesis's seed: the same seed, the same draws (default 0)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "stateful.json")
    args = ap.parse_args(argv)
    for name in ("examples", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    if args.quick:
        args.examples, args.steps, args.min_steps = 20, 20, 0
    info = machine_info()
    cfg = settings(max_examples=args.examples, stateful_step_count=args.steps, deadline=None,
                   derandomize=False, database=None,
                   suppress_health_check=list(HealthCheck))
    rm.STATS.clear()
    t0 = time.perf_counter()
    last = [t0]

    class Machine(rm.RuntimeMachine):
        def _step(self, what: str) -> None:
            super()._step(what)
            now = time.perf_counter()
            if now - last[0] > 10:
                last[0] = now
                print(f"  {rm.STATS.get('steps', 0)} steps, {rm.STATS.get('runs', 0)} runs, "
                      f"{now - t0:.0f} s", flush=True)

    failure = None
    # what hypothesis's pytest plugin sets for --hypothesis-seed: every draw from this seed
    # (put back after, for a caller in the same process: a test)
    before = hypothesis.core.global_force_seed
    hypothesis.core.global_force_seed = args.seed
    try:
        run_state_machine_as_test(Machine, settings=cfg)
    except Exception as exc:  # noqa: BLE001 - recorded, then the exit status says it
        failure = " | ".join(_describe(exc))
    finally:
        hypothesis.core.global_force_seed = before
    wall = time.perf_counter() - t0
    stats = dict(sorted(rm.STATS.items()))
    steps = stats.get("steps", 0)
    ok = failure is None and steps >= args.min_steps
    rules = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rule:")}
    configs = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("config:")}
    errors = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("error:")}
    print(f"\n{'rule':<16} {'steps':>7}")
    for k, v in rules.items():
        print(f"{k:<16} {v:>7}")
    print(f"\n{'fault configuration':<20} {'runs':>5}")
    for k, v in configs.items():
        print(f"{k:<20} {v:>5}")
    print(f"\nnamed errors (beyond tolerance or closed): {errors or 'none'}; deadline errors "
          f"within tolerance excused as the harness's own gc pause: "
          f"{stats.get('deadline:harness_gc', 0)}")
    print(f"steps {steps} in {stats.get('runs', 0)} runs, {wall:.0f} s; products checked correct "
          f"{stats.get('products_ok', 0)}; invariant violations: {failure or 0}")
    doc = {"benchmark": "stateful", "ok": ok, "failure": failure, "steps": steps,
           "runs": stats.get("runs", 0), "wall_s": wall, "rtol": rm.RTOL, "slack_s": rm.SLACK,
           "products_ok": stats.get("products_ok", 0), "acks_ok": stats.get("acks_ok", 0),
           "rules": rules, "configs": configs, "named_errors": errors,
           "harness_gc_deadlines": stats.get("deadline:harness_gc", 0),
           "settings": {"examples": args.examples, "steps": args.steps, "seed": args.seed},
           "machine": info}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    plot(doc, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    if steps < args.min_steps:
        print(f"only {steps} steps ran, {args.min_steps} required", file=sys.stderr)
    return 0 if ok else 1


def _describe(exc: BaseException) -> list[str]:
    """Every exception inside (hypothesis wraps a failure that did not replay, e.g. a timing
    violation, in a FlakyFailure group): the original assertion message is what matters."""
    out = [f"{type(exc).__name__}: {exc}"]
    if exc.__context__ is not None and not isinstance(exc, BaseExceptionGroup):
        out.append(f"(while handling {type(exc.__context__).__name__}: {exc.__context__})")
    for sub in getattr(exc, "exceptions", ()):
        out += _describe(sub)
    return out


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("rules", "configs", "named_errors"),
                              ("steps per rule", "runs per fault configuration",
                               "named errors (beyond tolerance)")):
        d = doc[key]
        ax.barh(list(d), list(d.values()), color="tab:blue")
        ax.set_title(title)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"runtime contract state machine: {doc['steps']} steps, {doc['runs']} runs, "
                 f"{doc['products_ok']} products correct, violations: {'none' if doc['ok'] else doc['failure'][:60]}"
                 f" (commit {str(doc['machine'].get('commit'))[:8]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
