"""``python -m codedml``: the ``run`` and ``demo`` subcommands in subprocesses (each in its own
process group with a timeout), configuration precedence (flag > CODEDML_* > TOML > default),
exit codes, and one real ``mpiexec`` run as ``launch/mpirun.sh`` starts it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _mpirun import run_process

SMALL = ["--rows", "200", "--inner", "100", "--cols", "50"]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEDML_", "OMPI_", "PMIX_", "PMI_", "MPI_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    return run_process(cmd, env=_env(**env), cwd=cwd, timeout=timeout)


def codedml(*args: str, cwd: Path, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "codedml", *args], cwd, timeout, **env)


def _table_ranks(stdout: str) -> list[int]:
    """Ranks of the per-rank table: a header 'rank min median max used late crash corrupt'."""
    lines = stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if re.match(r"\s*rank\s+min\s+median\s+max\s+used\s+late", l))
    ranks = []
    for line in lines[head + 1:]:
        m = re.match(r"\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if not m:
            break
        ranks.append(int(m.group(1)))
    return ranks


def _report(path: Path) -> dict:
    assert path.exists(), f"no report written at {path}"
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- run --local
def test_run_local(tmp_path):
    out = tmp_path / "r.json"
    p = codedml("run", "--local", "6", "--jobs", "3", *SMALL, "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verdict: CORRECT" in p.stdout
    assert _table_ranks(p.stdout) == [1, 2, 3, 4, 5, 6]
    rep = _report(out)
    assert rep["correct"] is True and rep["workers"] == 6
    assert len(rep["relative_errors"]) == 3 and all(e <= 1e-9 for e in rep["relative_errors"])
    rows = rep["per_worker"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert {"worker", "rank", "latency_min", "latency_median", "latency_max", "used", "late",
                "missing", "corrupt", "crashed"} <= set(r)
        assert sum(r[s] for s in ("used", "spare", "late", "missing", "corrupt", "crashed", "error")) == 3
    # the default failure model: ranks 1 and 2 straggle and are not waited for
    assert rows[0]["used"] == 0 and rows[1]["used"] == 0
    assert len(rep["jobs"]) == 3 and rep["config"]["local"] == 6 and rep["config"]["jobs"] == 3


CONFIG = """\
[run]
jobs = 2
rows = 60
inner = 40
cols = 30
code = "mds:k=3"
local = 6
out = "{out}"

[faults]
seed = 4
stragglers = {{ model = "fixed", ranks = [5], delay = 0.2 }}
"""


def test_toml_config_is_honoured_and_flags_override_it(tmp_path):
    out = tmp_path / "cfg.json"
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(out=out.as_posix()))
    p = codedml("run", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = _report(out)
    assert rep["config"]["jobs"] == 2 and rep["config"]["rows"] == 60 and rep["config"]["local"] == 6
    assert len(rep["relative_errors"]) == 2
    assert rep["code"].startswith("MDSCode(workers=6, k=3")
    assert rep["fault_seed"] == 4
    assert "frozenset({5})" in rep["faults"] and "SoftErrors" not in rep["faults"]
    assert rep["per_worker"][4]["used"] == 0  # rank 5 straggles 0.2 s: never waited for

    out2 = tmp_path / "flags.json"
    p = codedml("run", "--config", str(cfg), "--jobs", "3", "--code", "mds:k=2", "--out", str(out2),
                "--stragglers", "fixed:ranks=6,delay=0.2", "--fault-seed", "8", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = _report(out2)
    assert rep["config"]["jobs"] == 3 and len(rep["relative_errors"]) == 3
    assert rep["config"]["rows"] == 60  # not overridden: from the file
    assert rep["code"].startswith("MDSCode(workers=6, k=2")
    assert rep["fault_seed"] == 8
    assert "frozenset({6})" in rep["faults"] and "frozenset({5})" not in rep["faults"]
    assert rep["per_worker"][5]["used"] == 0


def test_environment_is_honoured_and_flags_beat_it(tmp_path):
    out = tmp_path / "env.json"
    p = codedml("run", "--local", "4", *SMALL, "--out", str(out), cwd=tmp_path, CODEDML_JOBS="2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(_report(out)["relative_errors"]) == 2
    p = codedml("run", "--local", "4", "--jobs", "3", *SMALL, "--out", str(out), cwd=tmp_path,
                CODEDML_JOBS="2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(_report(out)["relative_errors"]) == 3
    # the environment beats the TOML file
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(out=out.as_posix()))
    p = codedml("run", "--config", str(cfg), cwd=tmp_path, CODEDML_JOBS="1", CODEDML_LOCAL="5")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = _report(out)
    assert len(rep["relative_errors"]) == 1 and rep["workers"] == 5
    # with 4 workers the file's straggler rank 5 names no worker: refused before any work
    p = codedml("run", "--config", str(cfg), cwd=tmp_path, CODEDML_JOBS="1", CODEDML_LOCAL="4")
    assert p.returncode == 2 and "`--stragglers` ranks must be between 1 and workers=4" in p.stderr
    assert "got 5" in p.stderr and "Traceback" not in p.stderr


def test_bad_environment_value(tmp_path):
    p = codedml("run", "--local", "4", *SMALL, "--out", str(tmp_path / "x.json"), cwd=tmp_path,
                CODEDML_JOBS="many")
    assert p.returncode == 2
    assert "CODEDML_JOBS" in p.stderr


@pytest.mark.parametrize("text,name", [
    ('[run]\njobs = 1\nbogus = 3\n', "bogus"),
    ('[run]\njobs = 1\n[extra]\nx = 1\n', "extra"),
    ('[faults]\nflakiness = 0.5\n', "flakiness"),
    ('[faults]\nstragglers = { model = "fixed", ranks = [1], delay = 0.1, jitter = 1 }\n', "jitter"),
])
def test_unknown_toml_key_or_table_exits_2_naming_it(tmp_path, text, name):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    p = codedml("run", "--local", "4", "--config", str(cfg), *SMALL, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert name in p.stderr
    assert "Traceback" not in p.stderr


def test_invalid_toml_and_missing_file_exit_2(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[run\njobs = \n")
    p = codedml("run", "--local", "4", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 2 and "TOML" in p.stderr
    p = codedml("run", "--local", "4", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert p.returncode == 2 and "nope.toml" in p.stderr


@pytest.mark.parametrize("spec", ["bogus", "mds:k=x", "mds:q=2"])
def test_bad_code_spec_exits_2(tmp_path, spec):
    p = codedml("run", "--local", "4", "--jobs", "1", *SMALL, "--code", spec,
                "--out", str(tmp_path / "x.json"), cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "code" in p.stderr and "Traceback" not in p.stderr


def test_run_without_mpiexec_or_local_exits_2(tmp_path):
    p = codedml("run", "--jobs", "1", *SMALL, "--out", str(tmp_path / "x.json"), cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "mpirun.sh" in p.stderr
    assert "Traceback" not in p.stderr


def test_undecodable_run_exits_3(tmp_path):
    # every result is needed and one rank never answers: the job cannot decode
    p = codedml("run", "--local", "4", "--jobs", "1", *SMALL, "--code", "mds:k=4", "--timeout", "1",
                "--fail-silent", "2@0", "--soft-errors", "none", "--stragglers", "none",
                "--out", str(tmp_path / "x.json"), cwd=tmp_path)
    assert "DeadlineError" in p.stdout  # a NotEnoughResultsError: its deadline passed first
    assert p.returncode == 3, f"documented exit code 3 (could not decode), got {p.returncode}"


# --------------------------------------------------------------------------- demo, usage
def test_demo(tmp_path):
    out = tmp_path / "demo.json"
    p = codedml("demo", "--size", "120", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verdict: CORRECT" in p.stdout
    rep = _report(out)
    assert rep["correct"] is True and rep["relative_error"] <= 1e-9


def test_no_subcommand_exits_2(tmp_path):
    p = codedml(cwd=tmp_path)
    assert p.returncode == 2
    assert "run" in p.stdout and "demo" in p.stdout
    assert codedml("frobnicate", cwd=tmp_path).returncode == 2
    assert codedml("--help", cwd=tmp_path).returncode == 0


# --------------------------------------------------------------------------- under mpiexec
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to the Python interpreter")
def test_run_under_mpiexec(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "mpi.json"
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=30).stdout
    extra = ["--oversubscribe"] if "open" in version.lower() else []
    p = _run([MPIEXEC, *extra, "-n", "4", sys.executable, "-m", "codedml", "run", "--jobs", "3",
              *SMALL, "--out", str(out)], tmp_path, timeout=120,
             OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
             OMPI_MCA_rmaps_base_oversubscribe="true")
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "verdict: CORRECT" in p.stdout
    rep = _report(out)
    assert rep["workers"] == 3 and rep["correct"] is True
    assert [r["rank"] for r in rep["per_worker"]] == [1, 2, 3]
    assert len(rep["relative_errors"]) == 3
