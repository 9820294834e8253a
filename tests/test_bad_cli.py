"""Every row of ``tests/bad_input_cases.py``: a malformed value of every flag of ``run``,
``train`` and ``demo`` and of every public constructor gets a clear error (exit status 2 /
:class:`~codedml.errors.ConfigurationError` whose message names the argument, the valid range
and the value) or is accepted as documented.

Command lines go through ``codedml.cli.main`` in-process (the same parsing and validation a
subprocess runs, without ~1-2 s of interpreter start-up per case); the rows marked
``subprocess`` (and those that need a process of their own) run as real
``python -m codedml`` subprocesses with a timeout. ``benchmarks/bad_inputs.py`` runs every
row as a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_input_cases import (CASES, MARKER, Case, call_api, judge_cli, materialise,  # noqa: E402
                             run_api_subprocess, run_cli_subprocess)

CLI = [c for c in CASES if c.kind == "cli"]
API = [c for c in CASES if c.kind == "api"]


def _expect(case: Case, outcome: str, output: str) -> None:
    assert outcome == case.outcome, (
        f"{case.id}: expected {case.outcome}"
        f"{' with ' + repr(case.must) if case.must else ''}, got {outcome}:\n{output[-3000:]}")


def test_the_table_is_large_and_covers_every_flag():
    """Over 100 rows, and for every flag of run, train and demo at least one row that gives it
    a bad value (and expects a clear error)."""
    from dataclasses import fields

    from codedml import cli as cli_module
    from codedml.run import RunConfig
    from codedml.train.cli import TrainJob
    from codedml.train.config import TrainConfig

    assert len(CASES) > 100 and len({c.id for c in CASES}) == len(CASES)
    flags = {"run": {"--config", "--stragglers", "--soft-errors", "--fail-silent", "--die", "--fault-seed"}
            | {"--" + f.name.replace("_", "-") for f in fields(RunConfig)},
             "train": {"--config", "--stragglers", "--soft-errors", "--fail-silent", "--die", "--fault-seed"}
            | {"--" + f.name.replace("_", "-") for f in fields(TrainConfig) + fields(TrainJob)},
             "demo": {"--" + f.name for f in fields(cli_module.DemoConfig)}}
    bad_cases = [c for c in CLI if c.outcome == "clear_error"]
    for sub, names in flags.items():
        # the flag a case gives a bad value is the second word of its id ("run --rows 0")
        tried_bad = {c.id.split()[1] for c in bad_cases if c.argv[0] == sub and len(c.id.split()) > 1}
        missing = sorted(names - tried_bad)
        assert not missing, f"{sub}: no bad-input case for {missing}"
    constructors = {"MDSCode", "PolynomialCode", "MatDotCode", "PolyDotCode", "ReplicationCode",
                    "GradientCode", "FixedStragglers", "ShiftedExponential", "Pareto", "Bursty",
                    "FailSilent", "Die", "SoftErrors", "StorageErrors", "Schedule", "Compose", "Fault",
                    "Corruption", "LocalCluster", "MPICluster", "CodedLinear", "CodedSGD",
                    "TrainConfig", "TrainJob", "TorchBackend", "digits_task", "default_code", "CodedConv2d"}
    called = {c.id.split("(")[0] for c in API if c.outcome == "clear_error"}
    assert constructors <= called, f"no bad-input case for {sorted(constructors - called)}"


def _run_in_process(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int | None, str]:
    from codedml.cli import main

    argv, env = materialise(case, tmp)
    for k in list(os.environ):
        if k.startswith("CODEDML_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status: int | None = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported as the traceback it would print
            status = 1
            err.write(traceback.format_exc())
    return status, out.getvalue() + err.getvalue()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", [c for c in CLI if not c.own_process], ids=lambda c: c.id)
def test_command_line(case, tmp_path, monkeypatch):
    status, output = _run_in_process(case, tmp_path, monkeypatch)
    _expect(case, judge_cli(case, status, output), output)
    assert not (tmp_path / MARKER).exists(), f"{case.id}: a pickle ran code while loading"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", [c for c in CLI if c.subprocess or c.own_process], ids=lambda c: c.id)
def test_command_line_in_a_subprocess(case, tmp_path):
    outcome, output = run_cli_subprocess(case, tmp_path, timeout=120)
    _expect(case, outcome, output)
    assert not (tmp_path / MARKER).exists(), f"{case.id}: a pickle ran code while loading"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", [c for c in API if not c.own_process], ids=lambda c: c.id)
def test_constructor(case):
    outcome, message = call_api(case, timeout=60)
    _expect(case, outcome, message)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", [c for c in API if c.own_process], ids=lambda c: c.id)
def test_constructor_in_a_process_of_its_own(case):
    pytest.importorskip("mpi4py")
    outcome, message = run_api_subprocess(case, timeout=120)
    _expect(case, outcome, message)


def test_a_wrong_message_is_caught():
    """The judge is not vacuous: a status-2 exit without the named substrings, a traceback,
    a hang and an unexpected acceptance are each told apart."""
    case = Case("x", "clear_error", must=("`--rows`", "at least 1", "got 0"), argv=("run",))
    assert judge_cli(case, 2, "`--rows` must be at least 1, got 0") == "clear_error"
    assert judge_cli(case, 2, "`--rows` is bad") == "unclear_error"
    assert judge_cli(case, 1, "Traceback (most recent call last):\n  ...") == "traceback"
    assert judge_cli(case, None, "") == "hang"
    assert judge_cli(case, 0, "") == "accepted"
    api_case = Case("y", "clear_error", must=("`k`",), call=lambda: int("x"))
    assert call_api(api_case)[0] == "traceback"
