"""``codedml.train`` under a real mpiexec launched from pytest (own process group, timeout):
K-async survives a rank SIGKILLed under Open MPI ULFM, gradient coding a fail-silent rank, and
fully synchronous training stops with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from _mpirun import MPIEXEC, needs_mpiexec, open_mpi, scenario_runner

pytest.importorskip("mpi4py")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

HERE = Path(__file__).parent
SCRIPT = HERE / "train_mpi_scenarios.py"
pytestmark = needs_mpiexec
run_mpi = scenario_runner(SCRIPT)


@pytest.mark.skipif(MPIEXEC is not None and not open_mpi(), reason="real crashes survive only under Open MPI ULFM")
def test_kasync_survives_a_real_crash_under_ulfm():
    res, done = run_mpi("kasync_die", 5, ft=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["steps"] == 40 and res["crashed"] == [2], res
    assert res["loss"] < 1.5
    assert res["wall"] < 40 * 1.5 / 2  # the 1.5 s straggler (rank 1) was not waited for each step


@pytest.mark.skipif(MPIEXEC is not None and not open_mpi(), reason="real crashes survive only under Open MPI ULFM")
def test_fsvrg_drops_a_late_client_and_survives_a_real_crash_under_ulfm():
    res, done = run_mpi("fsvrg_die", 5, ft=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["steps"] == 8 and res["crashed"] == [2], res
    assert 1 in res["dropped"] and 1 not in res["workers"], res  # late for every deadline
    assert res["loss"] < 2.0


def test_gradient_coding_survives_a_fail_silent_rank_and_sync_stops():
    res, done = run_mpi("gc_silent", 4)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["steps"] == 30 and res["loss"] < 1.5, res
    res, done = run_mpi("sync_silent", 4)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["error"] == "TrainingError"
    assert "policy 'sync' waits for every worker" in res["message"]
    assert "no answer from ranks [3]" in res["message"] and "ksync" in res["message"]
