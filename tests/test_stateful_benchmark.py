"""``benchmarks/stateful.py``'s ``--seed``: the same seed draws the same runs, so two commits'
counts compare draw for draw; another seed draws others; a bad seed is refused by name; the
process's hypothesis seed is put back after."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hypothesis.core
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import stateful  # noqa: E402

SMALL = ["--examples", "6", "--steps", "6", "--min-steps", "0"]


def _run(tmp_path: Path, name: str, seed: int) -> dict:
    out = tmp_path / f"{name}.json"
    assert stateful.main(SMALL + ["--seed", str(seed), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_same_seed_draws_the_same_runs(tmp_path):
    before = hypothesis.core.global_force_seed
    a, b, c = (_run(tmp_path, "a", 3), _run(tmp_path, "b", 3), _run(tmp_path, "c", 4))
    assert hypothesis.core.global_force_seed == before
    assert a["settings"]["seed"] == 3 and c["settings"]["seed"] == 4
    # which fault configuration each run drew and which rules it stepped through: hypothesis's
    # draws (the named errors of beyond-tolerance runs also depend on thread timing)
    assert (a["runs"], a["steps"], a["configs"], a["rules"]) == \
        (b["runs"], b["steps"], b["configs"], b["rules"])
    assert (a["configs"], a["rules"]) != (c["configs"], c["rules"])
    assert a["ok"] and b["ok"] and c["ok"]


def test_a_negative_seed_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exc:
        stateful.main(SMALL + ["--seed", "-1"])
    assert exc.value.code == 2
    assert "--seed must be >= 0, got -1" in capsys.readouterr().err
