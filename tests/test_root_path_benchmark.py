"""``benchmarks/root_path.py`` run small: the root's path of a small job in one process,
on an ``MPICluster`` whose engine is a stand-in (no MPI): every variant's products are
checked against numpy before the timing, and the JSON records both variants and the
commit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import codedml

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_root_path_times_this_tree_against_a_base_tree(tmp_path):
    import root_path

    base = tmp_path / "base"
    base.mkdir()
    # the same package under the base's name (it imports itself relatively)
    (base / "codedml_base").symlink_to(Path(codedml.__file__).resolve().parent)
    out = tmp_path / "results" / "root_path.json"
    assert root_path.main(["--quick", "--base", str(base), "--base-rev", "HEAD",
                           "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["rows"]) == {"base", "this"} and doc["machine"]["commit"]
    assert all(r["median_s"] > 0 and r["blocks"] == 6 for r in doc["rows"].values())
    assert np.isfinite(doc["this_over_base"]) and doc["base_rev"] == "HEAD"
    assert out.with_suffix(".png").stat().st_size > 0


def test_root_path_stand_in_answers_as_the_engine_does_and_a_job_decodes():
    """The stand-in cluster runs real jobs: the decoded product is numpy's, each job's
    first results turn (so the decode takes its solve as well as its assembly), a job's
    poll returns with the k it waits for (the rest come at the next poll), and the late
    results are booked into the reports."""
    import root_path

    from codedml.codes import MDSCode

    cl = root_path.stand_in_cluster("codedml", 6)
    code = MDSCode(6, 4)
    A = np.random.default_rng(1).standard_normal((4, 4))
    used, jobs = set(), []
    for _ in range(6):
        job = cl.submit(A, A, code=code)
        np.testing.assert_allclose(job.result(), A @ A, rtol=1e-12, atol=1e-12)
        used.add(tuple(sorted(job.info.used)))
        assert len(cl._eng.queue) == 2   # (its two last replies: not yet polled)
        jobs.append(job)
    while cl._eng.queue:
        cl.progress()
    for job in jobs:
        assert sorted(s.status for s in job.report.workers) == ["late"] * 2 + ["used"] * 4
    assert (0, 1, 2, 3) in used and len(used) > 1


def test_root_path_refuses_too_few_workers():
    import root_path

    with pytest.raises(SystemExit):
        root_path.main(["--workers", "2", "--quick"])
