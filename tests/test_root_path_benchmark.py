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


@pytest.mark.parametrize("seed", range(4))
def test_the_callers_one_step_decision_matches_the_general_booking_on_a_stand_in_engine(seed):
    """``MPICluster._wait_landed`` on the stand-in engine (no MPI), its polls taking a drawn
    number of replies in a drawn order, so that a job's results land together, one by one,
    or behind other jobs' late replies: 120 small jobs with the one-step decision
    (``Job._decide_landed``) and 120 with it turned off give the same products bit for
    bit, the same decode rows, the same per-worker reports (status, latency known), the
    same cancels and the same last answer of every worker; most jobs decide in one step,
    and some with other jobs' replies in the same poll (booked after the decision)."""
    import random

    import root_path
    from codedml.codes import MDSCode
    from codedml.runtime import mpi, protocol
    from codedml.runtime.futures import Job

    class Drawn(root_path.StandInEngine):
        def __init__(self, draw: random.Random) -> None:
            super().__init__(mpi._RESULT, protocol._JOB_AT)
            self.draw = draw
            self.with_events = 0

        def _answer(self, job, live, pairs):
            out = [(w, job, a @ b) for w, (a, b) in zip(live, pairs)]
            self.draw.shuffle(out)
            self.queue.extend(out)

        def poll(self, deadline, spin_until, pause, max_pause, want=1, hot=None):
            events = super().poll(deadline, spin_until, pause, max_pause,
                                  self.draw.randint(1, 8), hot)
            self.with_events += bool(events) and hot is not None and int(hot[2][0]) > 0
            return events

        def counts(self):   # (the transport's counters, asked by outstanding())
            return (0, 0)

    real = Job._decide_landed

    def run(one_step: bool):
        decided = []

        def spy(job, now):
            out = real(job, now) if one_step else False
            decided.append(out)
            return out

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Job, "_decide_landed", spy)
            cl = root_path.stand_in_cluster("codedml", 6)
            cl._eng = eng = Drawn(random.Random(seed))
            cancels = []
            eng.cancel = lambda w, jid: cancels.append((w, jid))
            code, rng = MDSCode(6, 3), np.random.default_rng(seed)
            jobs, out = [], []
            for _ in range(120):
                A, B = rng.standard_normal((9, 5)), rng.standard_normal((5, 4))
                job = cl.submit(A, B, code=code)
                C = job.result(timeout=10)
                np.testing.assert_allclose(C, A @ B, rtol=1e-10, atol=1e-10)
                jobs.append(job)
                out.append((C.tobytes(), job.info.used))
            cl._pump()
            reports = [[(w.worker, w.status, w.latency is not None) for w in j.report.workers]
                       for j in jobs]
            assert cl.outstanding()["jobs"] == 0
            return dict(out=out, reports=reports, cancels=sorted(cancels),
                        last=dict(cl._last_answer)), sum(decided), eng.with_events

    fast, decided, mixed = run(True)
    general, none, _ = run(False)
    assert none == 0 and decided >= 60 and mixed > 0, (decided, mixed)
    for key in fast:
        assert fast[key] == general[key], key
