"""benchmarks/fuzz.py: the property-based suites under fixed seeds, each seed its own pytest
process; a failing seed is named with hypothesis's falsifying example and fails the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fuzz  # noqa: E402

PASSING = """
from hypothesis import given, strategies as st

@given(st.integers(0, 100))
def test_within(x):
    assert 0 <= x <= 100
"""

FAILING = """
from hypothesis import given, settings, strategies as st

@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1000))
def test_half(x):
    assert x < 500
"""


def _run(tmp_path: Path, body: str, seeds: int) -> tuple[int, dict]:
    f = tmp_path / "test_probe.py"
    f.write_text(body)
    out = tmp_path / "fuzz.json"
    status = fuzz.main(["--files", str(f), "--seeds", str(seeds), "--first", "7",
                        "--timeout", "120", "--out", str(out)])
    return status, json.loads(out.read_text())


def test_every_seed_passing_is_status_0_and_recorded(tmp_path):
    status, doc = _run(tmp_path, PASSING, 2)
    assert status == 0
    assert [r["seed"] for r in doc["runs"]] == [7, 8]
    assert all(r["status"] == "passed" and r["passed"] == 1 and r["failed"] == 0
               for r in doc["runs"])
    assert doc["summary"] == {**doc["summary"], "ok": True, "failed_seeds": [], "seeds": 2,
                              "tests_per_seed": 1}
    assert doc["machine"]["commit"] is None or len(doc["machine"]["commit"]) == 40
    assert (tmp_path / "fuzz.png").stat().st_size > 0


def test_a_failing_seed_is_named_with_its_falsifying_example(tmp_path):
    status, doc = _run(tmp_path, FAILING, 1)
    assert status == 3
    (r,) = doc["runs"]
    assert r["status"] == "failed" and r["failed"] == 1 and r["seed"] == 7
    assert doc["summary"]["failed_seeds"] == [7] and not doc["summary"]["ok"]
    text = "\n".join(r["failures"])
    assert "test_half" in text
    assert "test_half(" in text and "x=500" in text   # the example hypothesis shrank to


def test_counts_read_pytests_summary_line():
    assert fuzz.counts("3 passed, 1 failed, 2 skipped, 1 error in 2.1s") == {
        "passed": 3, "failed": 1, "skipped": 2, "errors": 1}
    assert fuzz.counts("") == {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}


@pytest.mark.parametrize("argv, word", [
    (["--seeds", "0"], "--seeds"), (["--first", "-1"], "--first"),
    (["--timeout", "0"], "--timeout"), (["--files", "tests/no_such_file.py"], "no_such_file"),
])
def test_bad_arguments_are_refused_by_name(argv, word, capsys):
    with pytest.raises(SystemExit) as exc:
        fuzz.parse(argv)
    assert exc.value.code == 2
    assert word in capsys.readouterr().err
