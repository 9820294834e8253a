"""``benchmarks/control_plane.py`` run for real, small, under mpiexec: every row is measured
(the floor job, the job's essential steps without the runtime's bookkeeping, among them, where
the compiled path is built) and renders into the README's block; and an error on the root
ends the whole job with a failing status at once, instead of leaving the workers waiting for
the next block forever."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from _mpirun import MPIEXEC, needs_mpiexec, open_mpi, run_process

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))


def _run(args: list[str], timeout: float):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="true", PYTHONUNBUFFERED="1")
    cmd = [MPIEXEC] + (["--oversubscribe"] if open_mpi() else []) + [
        "-n", "4", sys.executable, str(BENCH / "control_plane.py"), *args]
    return run_process(cmd, env=env, timeout=timeout)


@needs_mpiexec
def test_control_plane_measures_every_row_and_the_floor_job(tmp_path):
    import control_plane
    import render_readme

    from codedml.runtime.mpi import wire_status

    out = tmp_path / "results" / "control_plane.json"
    done = _run(["--repeats", "6", "--steps", "3", "--blocks", "1", "--out", str(out)], 300)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["workers"] == 3 and doc["machine"]["commit"]
    compiled = wire_status()[0]
    floor = [r for r in doc["rows"] if r["request"] == control_plane.FLOOR_JOB_ROW]
    job = [r for r in doc["rows"] if r["request"].startswith("job") and r["transport"] == doc["transport"]]
    assert job and job[0]["repeats"] == 6
    if compiled:   # the floor job runs on the compiled engine only
        assert len(floor) == 1 and floor[0]["repeats"] == 6 and floor[0]["median_s"] > 0
        assert floor[0]["ratio_to_bare"] == floor[0]["median_s"] / floor[0]["bare_median_s"]
        (tmp_path / "results" / "control_plane_2workers.json").write_text(out.read_text())
        old = render_readme.RESULTS
        render_readme.RESULTS = tmp_path / "results"
        try:
            block = render_readme.control_plane()
        finally:
            render_readme.RESULTS = old
        assert "the floor job row: no Future, no bookkeeping" in block
        assert f"| {control_plane.FLOOR_JOB_ROW} |" in block
    else:
        assert not floor


@needs_mpiexec
def test_control_plane_ends_the_whole_job_when_the_root_fails(tmp_path):
    """``--out`` naming a folder: the root's write fails after the blocks; the job must end
    then, with a failing status and the root's traceback, not hang in the workers' wait."""
    done = _run(["--repeats", "3", "--steps", "2", "--blocks", "1", "--out", str(tmp_path)], 300)
    assert done.returncode != 0
    assert "IsADirectoryError" in done.stderr, done.stderr[-3000:]
