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


DERANDOMIZED = """
import os
from hypothesis import given, settings, strategies as st

# as the codes' property suites ask: the same draws every run, unless fuzzed
@settings(max_examples=5, deadline=None,
          derandomize=os.environ.get("FUZZ_RANDOMIZE") != "1")
@given(st.integers(0, 10**12))
def test_draw(x):
    with open(os.environ["PROBE_OUT"] + ".suite", "a") as f:
        f.write(f"{x}\\n")


# no setting of its own: hypothesis's profile decides (its "ci" profile derandomizes)
@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10**12))
def test_plain(x):
    with open(os.environ["PROBE_OUT"] + ".plain", "a") as f:
        f.write(f"{x}\\n")
"""

EXPLICIT = """
from hypothesis import example, given, strategies as st

@example(x=-3)
@given(st.integers(0, 10))
def test_explicit(x):
    assert x >= 0
"""

SLOW = """
import time

def test_sleeps():
    time.sleep(60)
"""


def _run(tmp_path: Path, body: str, seeds: int, timeout: float = 120) -> tuple[int, dict]:
    f = tmp_path / "test_probe.py"
    f.write_text(body)
    out = tmp_path / "fuzz.json"
    status = fuzz.main(["--files", str(f), "--seeds", str(seeds), "--first", "7",
                        "--timeout", str(timeout), "--out", str(out)])
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


def test_seeds_draw_differently_even_where_a_suite_derandomizes(tmp_path, monkeypatch):
    """The codes' suites fix their draws (``derandomize``), and hypothesis fixes every draw
    where it sees a CI variable: the fuzz run turns both off, so that its seeds differ."""
    probe = tmp_path / "draws.txt"
    monkeypatch.setenv("PROBE_OUT", str(probe))
    monkeypatch.setenv("CI", "true")
    status, doc = _run(tmp_path, DERANDOMIZED, 2)
    assert status == 0, doc["runs"]
    for kind in ("suite", "plain"):
        draws = Path(f"{probe}.{kind}").read_text().split()
        assert len(draws) == 2 * 5, (kind, draws)
        assert draws[:5] != draws[5:], (kind, draws)


def test_a_failing_explicit_example_is_recorded(tmp_path):
    status, doc = _run(tmp_path, EXPLICIT, 1)
    assert status == 3
    text = "\n".join(doc["runs"][0]["failures"])
    assert "test_explicit(" in text and "x=-3" in text, text


def test_a_seed_past_its_timeout_is_stopped_and_fails_the_run(tmp_path):
    status, doc = _run(tmp_path, SLOW, 1, timeout=3)
    assert status == 3
    (r,) = doc["runs"]
    assert r["status"] == "timeout" and r["seconds"] < 30
    assert "no result within 3 s" in r["failures"][0]
