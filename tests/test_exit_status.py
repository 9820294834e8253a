"""Truthful exit statuses under a real mpiexec after a rank was SIGKILLed (Open MPI ULFM).

Once a rank has died, every process skips MPI_Finalize (it hung) and ends with ``os._exit``:
the status must still be the program's own. ``run``: 0 every product correct, 1 a product was
wrong, 3 a product could not be decoded. ``train --policy sync``: a named error and a non-zero
status when a rank dies. Each case asserts the status and the line that explains it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from _mpirun import MPIEXEC, needs_mpiexec, open_mpi, run_process

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [needs_mpiexec,
              pytest.mark.skipif(MPIEXEC is not None and not open_mpi(),
                                 reason="a SIGKILLed rank survives only under Open MPI ULFM")]

SMALL = ["--rows", "24", "--inner", "16", "--cols", "8", "--timeout", "10",
         "--stragglers", "none", "--fault-seed", "3"]


def mpiexec(np_: int, *args: str, tmp: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="true", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT))
    cmd = [MPIEXEC, "--oversubscribe", "--with-ft", "ulfm", "-n", str(np_), sys.executable,
           "-m", "codedml", *args]
    return run_process(cmd, env=env, cwd=tmp, timeout=180)


@pytest.mark.parametrize("case,args,status,says", [
    ("tolerated", ["--code", "mds:k=3", "--die", "2@1"], 0, "verdict: CORRECT"),
    # errors=0 asks for no correction: a soft error on top of the death is decoded wrongly
    ("wrong", ["--code", "mds:k=3", "--die", "2@1", "--errors", "0", "--soft-errors", "gross:1.0"],
     1, "verdict: WRONG"),
    # every worker's result is needed: after the death nothing decodes
    ("undecodable", ["--code", "mds:k=5", "--die", "2@1", "--errors", "0"], 3, "NotEnoughResultsError"),
])
def test_run_exit_status_after_a_sigkilled_rank(tmp_path, case, args, status, says):
    p = mpiexec(6, "run", "--jobs", "4", *SMALL, *args, "--out", str(tmp_path / "r.json"),
                tmp=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == status, f"{case}: exit {p.returncode}, expected {status}\n{out[-3000:]}"
    assert says in out, out[-3000:]
    assert "crashed" in out  # the death was seen and reported, not silently absent


def test_train_sync_stopped_by_a_sigkilled_rank_names_the_error(tmp_path):
    p = mpiexec(4, "train", "--policy", "sync", "--steps", "30", "--timeout", "10", "--die", "2@5",
                "--stragglers", "none", "--no-progress", "--out", str(tmp_path / "t.json"),
                tmp=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert p.returncode == 3, f"a fault's consequence exits 3, got {p.returncode}\n{out[-3000:]}"
    assert "TrainingError" in out and "policy 'sync' waits for every worker" in out, out[-3000:]
    assert "Traceback" not in out
