"""The in-process runtime (LocalCluster): workers are threads, worker ``w`` is rank ``w + 1``
for the failure models. Correct products for every code, stragglers not waited for, silent and
dying workers, located soft errors, clear failures within the timeout, worker exceptions
reaching the master, several jobs in flight, resident operands, backends, and a soak."""

from __future__ import annotations

import gc
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codedml.errors import ClusterClosedError, DeadlineError, FaultError
from codedml import (ConfigurationError, CorruptResultError, LocalCluster, NotEnoughResultsError,
                     WorkerFailure)
from codedml.backends import NumpyBackend, available_backends
from codedml.codes import (GradientCode, MatDotCode, MDSCode, PolyDotCode, PolynomialCode,
                           ReplicationCode)
from codedml.codes._gfp import matmul_mod
from codedml.faults import (Corruption, Die, FailSilent, Fault, FixedStragglers, Schedule,
                            ShiftedExponential, SoftErrors, fault_for)

P = 2097143
N = 6


def _codes(field=None):
    return {
        "mds": MDSCode(N, 3, field=field),
        "polynomial": PolynomialCode(N, 2, 2, field=field),
        "matdot": MatDotCode(N, 2, field=field),
        "polydot": PolyDotCode(N, 2, 2, 1, field=field),
        "replication": ReplicationCode(N, 3, field=field),
        "gradient_cyclic": GradientCode(N, 2, "cyclic", field=field),
        "gradient_fr": GradientCode(N, 2, "fractional_repetition", field=field),
    }


CODE_NAMES = sorted(_codes())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"A": rng.standard_normal((40, 30)), "B": rng.standard_normal((30, 20)),
            "x": rng.standard_normal(30),
            "Ai": rng.integers(0, P, (40, 30)), "Bi": rng.integers(0, P, (30, 20)),
            "xi": rng.integers(0, P, 30)}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(N, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def torch_cluster():
    pytest.importorskip("torch")
    with LocalCluster(N, backend="torch", timeout=30) as c:
        yield c


def _close_fast(c: LocalCluster) -> None:
    # Stragglers may still be sleeping; the threads are daemons, don't wait for them.
    c.close(timeout=0.1)


def _statuses(job) -> dict[int, str]:
    return {w.rank: w.status for w in job.report.workers}


# --------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("name", CODE_NAMES)
def test_matmul_real_correct(cluster, data, name):
    A, B = data["A"], data["B"]
    code = _codes()[name]
    C = cluster.matmul(A, B, code=code)
    assert C.shape == (40, 20)
    np.testing.assert_allclose(C, A @ B, rtol=1e-10, atol=1e-10)
    rep = cluster.history[-1]
    assert [w.rank for w in rep.workers] == list(range(1, N + 1))
    assert rep.count("corrupt") == rep.count("error") == rep.count("crashed") == 0
    if isinstance(code, PolyDotCode):  # any k results are enough; fewer only when systematic
        used = [w.worker for w in rep.workers if w.status == "used"]
        assert code.decodable(used)
        if len(used) < code.recovery_threshold:  # systematic MatDot: its m plain summands
            assert code.systematic and sorted(used) == list(range(code.m))
    else:  # replication / gradient codes decode from any covering subset
        assert rep.count("used") >= 1


@pytest.mark.parametrize("name", CODE_NAMES)
def test_matmul_gfp_exact(cluster, data, name):
    Ai, Bi = data["Ai"], data["Bi"]
    C = cluster.matmul(Ai, Bi, code=_codes(P)[name])
    assert np.array_equal(np.asarray(C, dtype=np.int64), matmul_mod(Ai, Bi, P))


def test_matmul_vector(cluster, data):
    A, x = data["A"], data["x"]
    C = cluster.matmul(A, x, code=MDSCode(N, 3))
    assert C.shape == (40,)
    np.testing.assert_allclose(C, A @ x, rtol=1e-10, atol=1e-10)


def test_code_with_wrong_worker_count(cluster, data):
    with pytest.raises(ConfigurationError, match=r"workers=6.*got 5"):
        cluster.matmul(data["A"], data["B"], code=MDSCode(5, 3))
    with pytest.raises(ConfigurationError, match="code"):
        cluster.matmul(data["A"], data["B"], code="mds")
    with pytest.raises(ConfigurationError, match="code"):
        cluster.submit(data["A"], data["B"])
    with pytest.raises(ConfigurationError, match="workers"):
        LocalCluster(0)


def test_closed_cluster_refuses_work(data):
    c = LocalCluster(2)
    c.close()
    with pytest.raises(ClusterClosedError, match="closed"):
        c.matmul(data["A"], data["B"], code=MDSCode(2, 1))


# --------------------------------------------------------------------------- stragglers
def test_a_code_overriding_decodable_is_asked_through_it(data):
    """A job decides when its results suffice through the code's ``decodable``: a subclass
    that overrides it (here: every worker's result, so a straggler is waited for) is asked
    through its override, not only through the hook the library's codes implement."""
    A, B = data["A"], data["B"]

    class EveryWorker(MDSCode):
        def decodable(self, workers):
            return len(set(workers)) == self.workers

    c = LocalCluster(N, faults=FixedStragglers([1], 0.3), timeout=20)
    try:
        for code, waits in ((MDSCode(N, 3), False), (EveryWorker(N, 3), True)):
            job = c.submit(A, B, code=code)
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-10, atol=1e-10)
            assert _statuses(job)[1] in (("used", "spare", "corrupt") if waits else ("late", "missing"))
            assert (job.report.wall >= 0.3) == waits, job.report.wall
            c.drain(1.0)
    finally:
        c.close()


def test_a_job_gathers_the_replies_it_cannot_decide_without():
    """``Job._want()``: how many replies a waiting caller gathers in one poll (the compiled
    MPI path waits for that many in C) is what the job cannot decide without: the code's
    fewest decodable results less those in, capped by the workers still owing one; the
    ``needed`` count where errors must be corrected or every worker heard; one at a time
    in the systematic wait, wherever the cluster may grant one (its length comes from the gaps
    between arrivals, which replies gathered together would share), and once settled. Below
    the bound ``_try`` returns before the decodability test (which would find nothing
    decodable)."""
    import types

    from codedml.runtime.futures import Job

    def job(code, errors=0, wait_all=False, grace=0.0, sent_to=None):
        cluster = types.SimpleNamespace(_systematic_grace=grace)
        return Job(cluster, 0, code, None, errors, 10.0,
                   range(code.workers) if sent_to is None else sent_to, time.perf_counter(),
                   wait_all)

    j = job(MDSCode(6, 4))
    assert j._want() == 4
    j.arrived = {0: None, 5: None}
    assert j._want() == 2
    j.failed = {1: "crashed", 2: "crashed", 3: "crashed"}
    assert j._want() == 1                                  # only worker 4 still owes one
    # workers outside the request (dead or stale when it was sent) owe nothing and take
    # nothing from those that do
    j = job(MDSCode(6, 3), sent_to=[0, 1, 2, 3])
    j.failed = {4: "crashed", 5: "stale"}
    assert j._want() == 3
    j.arrived = {0: None}
    j.failed[0] = "error"                                  # in both: counted once
    assert j._want() == 2
    assert job(MDSCode(6, 4), grace=1.0)._want() == 1      # a systematic wait may be granted
    assert job(MDSCode(6, 4, systematic=False), grace=1.0)._want() == 4
    assert job(MatDotCode(7, 3))._want() == 3              # its 3 data workers suffice
    assert job(MatDotCode(7, 3, systematic=False))._want() == 5
    assert job(MDSCode(6, 2), errors=1)._want() == 4       # threshold + 2 errors
    assert job(MDSCode(6, 4), wait_all=True)._want() == 6
    assert job(GradientCode(6, 2))._want() == 1            # no count decides it
    j = job(MDSCode(6, 4))
    j._grace_end = time.perf_counter() + 1.0               # waiting for a systematic result
    assert j._want() == 1
    j = job(MDSCode(6, 4))
    j.settled = True
    assert j._want() == 1

    def boom(rows):
        raise AssertionError("decodability tested")

    j = job(MDSCode(6, 4))
    j.code._recovers = boom
    j.arrived = {0: None, 1: None, 2: None}
    j._try()                                               # 3 < 4 and workers owe: nothing asked
    j.arrived[3] = None
    with pytest.raises(AssertionError, match="decodability tested"):
        j._try()


@pytest.mark.parametrize("direct", [True, False], ids=["context variable", "np.errstate"])
def test_a_workers_plain_product_is_quiet_exactly_as_errstate(direct, monkeypatch):
    """``WorkerState.plain_product`` sets numpy's quiet error state for overflow and invalid
    values directly (numpy's context variable; ``np.errstate`` where numpy has none): the
    product is ``a @ b`` bit for bit, an overflowing or 0 * inf product raises no warning even
    where warnings are errors, the caller's other settings hold inside (underflow set to
    raise still raises, as under ``np.errstate``), and the caller's state is back after."""
    import warnings

    from codedml.runtime import _worker

    if not direct:
        monkeypatch.setattr(_worker, "_ERR_VAR", None)
    elif _worker._ERR_VAR is None:
        pytest.skip("this numpy has no error-state context variable (numpy 1.x)")
    state = _worker.WorkerState(1, NumpyBackend())
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 3))
    assert np.array_equal(state.plain_product(a, b), a @ b)
    big = np.full((2, 2), 1e308)
    inf0 = (np.full((2, 2), np.inf), np.zeros((2, 2)))
    tiny = np.full((2, 2), 1e-200)
    for outer in ({}, {"under": "raise"}, {"divide": "raise"}):
        with warnings.catch_warnings(), np.errstate(**outer):
            warnings.simplefilter("error")
            before = np.geterr()
            assert np.isinf(state.plain_product(big, big)).all()
            assert np.isnan(state.plain_product(*inf0)).all()
            if outer.get("under") == "raise":
                with pytest.raises(FloatingPointError, match="underflow"):
                    state.plain_product(tiny, tiny)
            else:
                assert (state.plain_product(tiny, tiny) == 0).all()
            assert np.geterr() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="overflow"):
            big @ big                                # outside: numpy's own state, untouched


def test_stragglers_are_not_waited_for(data):
    A, B = data["A"], data["B"]
    c = LocalCluster(N, faults=FixedStragglers([1, 2], 2.0), timeout=20)
    try:
        t = time.perf_counter()
        job = c.submit(A, B, code=MDSCode(N, 3))
        C = job.result()
        elapsed = time.perf_counter() - t
        np.testing.assert_allclose(C, A @ B, rtol=1e-10, atol=1e-10)
        assert elapsed < 1.5, f"waited {elapsed:.2f} s for a 2 s straggler"
        st = _statuses(job)
        assert st[1] in ("late", "missing") and st[2] in ("late", "missing")
        assert sum(st[r] == "used" for r in range(3, N + 1)) >= 3
        assert all(st[r] in ("used", "spare", "late", "missing") for r in range(3, N + 1))
        rep = job.report
        assert rep.workers[0].latency is None and rep.workers[1].latency is None
        assert rep.wall < 1.5
    finally:
        _close_fast(c)


def test_fail_silent_worker(data):
    A, B = data["A"], data["B"]
    c = LocalCluster(N, faults=FailSilent([3], start=1), timeout=20)
    try:
        jobs = []
        for _ in range(4):
            job = c.submit(A, B, code=MDSCode(N, 4))
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-10, atol=1e-10)
            jobs.append(job)
        c.drain(0.1)
        assert _statuses(jobs[0])[3] != "error"
        for job in jobs[1:]:
            assert _statuses(job)[3] == "missing"
    finally:
        _close_fast(c)


def test_die_ends_the_worker_thread_and_later_jobs_succeed(data):
    A, B = data["A"], data["B"]
    # On job 1 every other rank is slow, so rank 2 runs job 1 (and dies) before it is decoded.
    slow = Schedule({1: {r: Fault(delay=0.3) for r in (1, 3, 4, 5, 6)}})
    before = set(threading.enumerate())
    c = LocalCluster(N, faults=Die([2], at=1) + slow, timeout=20)
    mine = set(threading.enumerate()) - before
    try:
        assert len(mine) == N
        job0 = c.submit(A, B, code=MDSCode(N, 3))
        np.testing.assert_allclose(job0.result(), A @ B, rtol=1e-10, atol=1e-10)
        assert all(t.is_alive() for t in mine)
        job1 = c.submit(A, B, code=MDSCode(N, 3))
        np.testing.assert_allclose(job1.result(), A @ B, rtol=1e-10, atol=1e-10)
        c.drain(0.2)
        assert _statuses(job1)[2] == "crashed"
        assert job1.report.count("crashed") == 1
        dead = [t for t in mine if not t.is_alive()]
        assert len(dead) == 1, "exactly the worker of rank 2 must have stopped"
        for _ in range(3):
            job = c.submit(A, B, code=MDSCode(N, 3))
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-10, atol=1e-10)
            assert _statuses(job)[2] == "crashed"
            assert job.report.count("crashed") == 1
    finally:
        _close_fast(c)


def test_a_death_does_not_rewrite_finished_jobs(data):
    """Rank 2 is merely slow on job 0 (not waited for) and dies on job 1: job 0's report must
    keep saying it was not waited for, not that it crashed during job 0."""
    A, B = data["A"], data["B"]
    faults = Die([2], at=1) + Schedule({0: {2: Fault(delay=0.2)},
                                        1: {r: Fault(delay=0.3) for r in (1, 3, 4, 5, 6)}})
    c = LocalCluster(N, faults=faults, timeout=20)
    try:
        job0 = c.submit(A, B, code=MDSCode(N, 3))
        np.testing.assert_allclose(job0.result(), A @ B, rtol=1e-10, atol=1e-10)
        assert _statuses(job0)[2] in ("late", "missing")
        job1 = c.submit(A, B, code=MDSCode(N, 3))
        np.testing.assert_allclose(job1.result(), A @ B, rtol=1e-10, atol=1e-10)
        c.drain(0.2)
        assert _statuses(job1)[2] == "crashed"
        assert _statuses(job0)[2] in ("late", "missing"), (
            f"job 0 (decoded while rank 2 was alive) now reports rank 2 as {_statuses(job0)[2]!r}")
    finally:
        _close_fast(c)


def test_soft_errors_are_located(data):
    A, B = data["A"], data["B"]
    slow = {5: Fault(delay=1.0), 6: Fault(delay=1.0)}  # the first 4 results are ranks 1-4
    table = {
        0: {2: Fault(corruptions=(Corruption("exponent"),)), **slow},
        1: {4: Fault(corruptions=(Corruption("gross", 1e3),)), **slow},
        2: {1: Fault(corruptions=(Corruption("nan"),)), **slow},
        3: {3: Fault(corruptions=(Corruption("sign"),)), **slow},
        4: {2: Fault(corruptions=(Corruption("scale", -3.0),)), **slow},
    }
    c = LocalCluster(N, faults=Schedule(table), timeout=20)
    try:
        for j, faults in table.items():
            bad_rank = next(r for r, f in faults.items() if f.corruptions)
            job = c.submit(A, B, code=MDSCode(N, 2), errors=1)
            assert job.id == j
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-10, atol=1e-10)
            rep = job.report
            assert rep.faulty == (bad_rank - 1,)
            assert _statuses(job)[bad_rank] == "corrupt"
            assert rep.count("corrupt") == 1
    finally:
        _close_fast(c)


@pytest.mark.parametrize("field", [None, P])
def test_decode_uses_the_full_correction_power_of_what_arrived(data, field):
    """Issue 10: 7 workers, MDS k=3, errors=1, two results corrupt (ranks 2 and 5, every job).
    errors=1 asks for k + 2 = 5 results; two corrupt among the first 5 are detected, not
    corrected, so the job waits for more, and with all 7 at hand it corrects both
    (budget (7 - 3) // 2 = 2), whatever order they arrive in. No stragglers."""
    A, B = (data["A"], data["B"]) if field is None else (data["Ai"], data["Bi"])
    want = A @ B if field is None else matmul_mod(A, B, P)
    bad = SoftErrors(kind="gross", prob=1.0, value=1e3, ranks=[2, 5])
    c = LocalCluster(7, faults=bad, timeout=20)
    try:
        for _ in range(3):
            job = c.submit(A, B, code=MDSCode(7, 3, field=field), errors=1)
            out = job.result()
            if field is None:
                np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
            else:
                np.testing.assert_array_equal(out, want)
            # located where they were among the results decoded (threads: any arrival order)
            assert set(job.report.faulty) <= {1, 4}
    finally:
        _close_fast(c)


def test_all_results_at_hand_before_the_first_decode_are_used_in_full(data):
    """The same with every result in hand before the first decode (a fetch with wait_all=True
    decodes once, from all 7): errors=1 with two corrupt results still decodes, because the
    decode corrects as many as the 7 results allow, not only the 1 asked for."""
    W = data["A"][:21]
    c = LocalCluster(7, faults=SoftErrors(kind="gross", prob=1.0, value=1e3, ranks=[2, 5]),
                     timeout=20)
    try:
        h = c.put(W, code=MDSCode(7, 3))                  # results corrupt, not stored blocks
        out, job = c.fetch(h, errors=1, wait_all=True, return_job=True)
        np.testing.assert_allclose(out, W, rtol=1e-10, atol=1e-10)
        assert len(job.info.used) == 5
        assert job.report.faulty == (1, 4)
    finally:
        _close_fast(c)


# --------------------------------------------------------------------------- clear failures
def test_too_many_silent_workers_time_out_naming_the_ranks(data):
    A, B = data["A"], data["B"]
    c = LocalCluster(N, faults=FailSilent([2, 4, 6]), timeout=30)
    try:
        t = time.perf_counter()
        with pytest.raises(NotEnoughResultsError, match=r"\[2, 4, 6\]") as ei:
            c.matmul(A, B, code=MDSCode(N, 4), timeout=1.0)
        elapsed = time.perf_counter() - t
        assert 0.9 <= elapsed < 3.0
        assert ei.value.received == 3 and ei.value.needed == 4
        assert c.history[-1].count("missing") == 3
    finally:
        _close_fast(c)


def test_deadline_after_an_undecodable_set_of_answers_says_why(data):
    """Enough answers in number, too many of them corrupt, and a silent worker that might still
    bring the one more result a retry needs: the job waits until its deadline, then the named
    error says the answers at hand did not decode (not only "5 answers, 4 needed")."""
    A, B = data["A"], data["B"]
    faults = SoftErrors(kind="gross", prob=1.0, value=1e3, ranks=[1, 2, 3]) + FailSilent([6])
    c = LocalCluster(N, faults=faults, timeout=30)
    try:
        t = time.perf_counter()
        with pytest.raises(NotEnoughResultsError, match=r"did not decode.*CorruptResultError") as ei:
            c.matmul(A, B, code=MDSCode(N, 2), errors=1, timeout=1.0)
        assert 0.9 <= time.perf_counter() - t < 3.0
        assert ei.value.received == 5 and ei.value.needed == 6
        assert "[6]" in str(ei.value)
    finally:
        _close_fast(c)


def test_too_many_dead_workers_fail_at_once_naming_the_ranks(data):
    A, B = data["A"], data["B"]
    c = LocalCluster(N, faults=Die([1, 3, 5]), timeout=30)
    try:
        t = time.perf_counter()
        with pytest.raises(NotEnoughResultsError, match=r"\[1, 3, 5\]"):
            c.matmul(A, B, code=MDSCode(N, 4), timeout=10.0)
        assert time.perf_counter() - t < 5.0  # known at once, not at the timeout
        # and again for a job submitted after the deaths
        with pytest.raises(NotEnoughResultsError, match=r"\[1, 3, 5\]"):
            c.matmul(A, B, code=MDSCode(N, 4), timeout=10.0)
        # a code that tolerates them still works
        np.testing.assert_allclose(c.matmul(A, B, code=MDSCode(N, 3)), A @ B, rtol=1e-10, atol=1e-10)
    finally:
        _close_fast(c)


def test_dropped_resident_handle_is_refused_by_name(data):
    with LocalCluster(N, timeout=20) as c:
        h = c.put(data["A"], code=MDSCode(N, 3))
        c.drop(h).result()
        with pytest.raises(ConfigurationError, match=r"resident operand 0\) is no longer stored: it was dropped"):
            c.submit(h, data["B"])
        with pytest.raises(ConfigurationError, match="no longer stored"):
            c.update(h, np.ones((h.shape[0], 1)), np.ones((h.shape[1], 1)))
    with LocalCluster(N, timeout=20) as other:
        with pytest.raises(ConfigurationError, match="stored by another cluster"):
            other.matmul(h, data["B"])


def test_worker_exception_reaches_the_caller_named(data):
    A, B = data["A"], data["B"]
    with LocalCluster(N, timeout=20) as c:
        h = c.put(A, code=MDSCode(N, 3))
        np.testing.assert_allclose(c.matmul(h, B), A @ B, rtol=1e-10, atol=1e-10)
        # every worker has stored it (a worker not needed for the matmul may still be behind)
        end = time.monotonic() + 10
        while not all(h.id in st.resident for st in c._states) and time.monotonic() < end:
            time.sleep(0.01)
        for state in c._states:  # the workers lose the block behind the root's back
            state.resident.pop(h.id)
        job = c.submit(h, B)
        with pytest.raises(WorkerFailure) as ei:
            job.result()
        exc = ei.value
        assert exc.job == job.id
        assert exc.host == "localhost"
        assert exc.rank is not None
        assert "KeyError" in str(exc) and "KeyError" in exc.remote_traceback
        c.drain(0.1)
        assert job.report.count("error") == N
        # the cluster still works afterwards
        np.testing.assert_allclose(c.matmul(A, B, code=MDSCode(N, 3)), A @ B, rtol=1e-10, atol=1e-10)


class _FailOnce(NumpyBackend):
    """A backend whose first product raises (in whichever worker gets there first)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failed = False

    def matmul(self, a, b):
        with self.lock:
            first, self.failed = not self.failed, True
        if first:
            raise RuntimeError("boom")
        return super().matmul(a, b)


def test_backend_exception_reaches_master_with_rank_and_job(data):
    A, B = data["A"], data["B"]
    with LocalCluster(4, backend=_FailOnce(), timeout=20) as c:
        job = c.submit(A, B, code=MDSCode(4, 4))  # every result is needed
        with pytest.raises(WorkerFailure, match="RuntimeError: boom") as ei:
            job.result()
        exc = ei.value
        errored = [w for w in job.report.workers if w.status == "error"]
        assert len(errored) == 1
        assert exc.job == job.id == 0
        # worker w is rank w + 1 in a LocalCluster: the failure names the same rank as the report
        assert exc.rank == errored[0].rank, (
            f"WorkerFailure says rank={exc.rank}, the report says worker {errored[0].worker} "
            f"is rank {errored[0].rank}")
        assert "boom" in exc.remote_traceback


def test_worker_exception_within_redundancy_is_tolerated(data):
    A, B = data["A"], data["B"]
    with LocalCluster(4, backend=_FailOnce(), timeout=20) as c:
        job = c.submit(A, B, code=MDSCode(4, 2))
        np.testing.assert_allclose(job.result(), A @ B, rtol=1e-10, atol=1e-10)
        c.drain(0.2)
        assert job.report.count("error") == 1


# --------------------------------------------------------------------------- several jobs
def test_several_jobs_in_flight_results_in_any_order(data):
    A = data["A"]
    rng = np.random.default_rng(3)
    Bs = [rng.standard_normal((30, 7 + i)) for i in range(6)]
    c = LocalCluster(N, faults=ShiftedExponential(0.0, 0.02), seed=4, timeout=30)
    try:
        jobs = [c.submit(A, B, code=PolynomialCode(N, 2, 2)) for B in Bs]
        assert len({j.id for j in jobs}) == 6
        for i in [4, 0, 5, 2, 1, 3]:
            np.testing.assert_allclose(jobs[i].result(), A @ Bs[i], rtol=1e-10, atol=1e-10)
        # every job is done and stays done
        assert all(j.done() for j in jobs)
        np.testing.assert_allclose(jobs[2].result(), A @ Bs[2], rtol=1e-10, atol=1e-10)
    finally:
        _close_fast(c)


def test_done_polling(data):
    A, B = data["A"], data["B"]
    c = LocalCluster(N, faults=FixedStragglers(range(1, N + 1), 0.3), timeout=30)
    try:
        t = time.perf_counter()
        job = c.submit(A, B, code=MDSCode(N, 3))
        assert job.done() is False  # every worker is delayed 0.3 s
        polls = 0
        while not job.done():
            polls += 1
            assert time.perf_counter() - t < 10, "done() never became True"
            time.sleep(0.01)
        assert polls > 0
        assert time.perf_counter() - t >= 0.29
        np.testing.assert_allclose(job.result(timeout=0), A @ B, rtol=1e-10, atol=1e-10)
    finally:
        _close_fast(c)


# --------------------------------------------------------------------------- resident operands
@pytest.mark.parametrize("code", [MDSCode(N, 3), ReplicationCode(N, 3), PolyDotCode(N, 3, 1, 1)],
                         ids=repr)
def test_resident_put_matmul_update_drop_real(cluster, data, code):
    rng = np.random.default_rng(1)
    A, B, x = data["A"], data["B"], data["x"]
    h = cluster.put(A, code=code)
    assert h.shape == (40, 30)
    np.testing.assert_allclose(cluster.matmul(h, B), A @ B, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cluster.matmul(h, x), A @ x, rtol=1e-10, atol=1e-10)
    dense = A.copy()
    for r in (1, 3):
        U, V = rng.standard_normal((40, r)), rng.standard_normal((30, r))
        h = cluster.update(h, U, V)
        dense += U @ V.T
        np.testing.assert_allclose(cluster.matmul(h, B), dense @ B, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cluster.matmul(h, x), dense @ x, rtol=1e-9, atol=1e-9)
    cluster.drop(h)


@pytest.mark.parametrize("code", [MDSCode(N, 3, field=P), ReplicationCode(N, 2, field=P)], ids=repr)
def test_resident_put_matmul_update_gfp_exact(cluster, data, code):
    rng = np.random.default_rng(2)
    Ai, Bi, xi = data["Ai"], data["Bi"], data["xi"]
    h = cluster.put(Ai, code=code)
    assert np.array_equal(cluster.matmul(h, Bi), matmul_mod(Ai, Bi, P))
    assert np.array_equal(cluster.matmul(h, xi), matmul_mod(Ai, xi[:, None], P)[:, 0])
    dense = Ai.copy()
    for r in (1, 2):
        U, V = rng.integers(0, P, (40, r)), rng.integers(0, P, (30, r))
        h = cluster.update(h, U, V)
        dense = (dense + matmul_mod(U, np.ascontiguousarray(V.T), P)) % P
        assert np.array_equal(cluster.matmul(h, Bi), matmul_mod(dense, Bi, P))
    cluster.drop(h)


def test_resident_bad_shapes_and_codes(cluster, data):
    A, B = data["A"], data["B"]
    h = cluster.put(A, code=MDSCode(N, 3))
    U, V = np.ones((40, 2)), np.ones((30, 2))
    for bad_u, bad_v in [(U[:5], V), (U, V[:5]), (U[:, :1], V), (U[:, 0], V), (U, V[:, 0])]:
        with pytest.raises(ConfigurationError, match="`U`"):
            cluster.update(h, bad_u, bad_v)
    with pytest.raises(ConfigurationError, match="`B`"):
        cluster.matmul(h, B[:5])
    with pytest.raises(ConfigurationError, match="code"):
        cluster.put(A, code=PolynomialCode(N, 2, 2))
    with pytest.raises(ConfigurationError, match="code"):
        cluster.matmul(h, B, code=MDSCode(N, 2))
    # the handle still works after the refused requests
    np.testing.assert_allclose(cluster.matmul(h, B), A @ B, rtol=1e-10, atol=1e-10)
    cluster.drop(h)


# --------------------------------------------------------------------------- backends
def test_available_backends():
    names = available_backends()
    assert "numpy" in names and "torch" in names


@pytest.mark.parametrize("name", ["mds", "polynomial", "matdot", "polydot", "gradient_cyclic"])
def test_torch_backend_matches_numpy(cluster, torch_cluster, data, name):
    A, B = data["A"], data["B"]
    code = _codes()[name]
    Cn = cluster.matmul(A, B, code=code)
    Ct = torch_cluster.matmul(A, B, code=code)
    assert isinstance(Ct, np.ndarray) and Ct.dtype == Cn.dtype and Ct.shape == Cn.shape
    np.testing.assert_allclose(Ct, Cn, rtol=1e-12, atol=1e-12)
    Ci = torch_cluster.matmul(data["Ai"], data["Bi"], code=_codes(P)[name])
    assert np.array_equal(Ci, cluster.matmul(data["Ai"], data["Bi"], code=_codes(P)[name]))


def test_torch_backend_resident_update_matches_numpy(cluster, torch_cluster, data):
    rng = np.random.default_rng(4)
    A, B = data["A"], data["B"]
    U, V = rng.standard_normal((40, 2)), rng.standard_normal((30, 2))
    out = []
    for c in (cluster, torch_cluster):
        h = c.update(c.put(A, code=MDSCode(N, 3)), U, V)
        out.append(c.matmul(h, B))
        c.drop(h)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[1], (A + U @ V.T) @ B, rtol=1e-9, atol=1e-9)


def test_torch_backend_with_faults(data):
    pytest.importorskip("torch")
    A, B = data["A"], data["B"]
    model = Schedule({0: {3: Fault(corruptions=(Corruption("exponent"),)),
                          5: Fault(delay=1.0), 6: Fault(delay=1.0)}})
    c = LocalCluster(N, backend="torch", faults=model, timeout=20)
    try:
        job = c.submit(A, B, code=MDSCode(N, 2), errors=1)
        np.testing.assert_allclose(job.result(), A @ B, rtol=1e-10, atol=1e-10)
        assert job.report.faulty == (2,)
    finally:
        _close_fast(c)


# --------------------------------------------------------------------------- compensated products
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_compensated_products_at_the_hard_corner(backend):
    """MDS(30, 25) with the worst erasure (5 adjacent workers silent; cond 8.0e3): the root
    asks for compensated products (precision="auto", float64), the workers compute them --
    with numpy bit for bit what ``Task.compute`` gives -- and the decode meets 1e-12 for fresh
    and resident operands; products from the left against MDS(30, 13) (threshold 25) too."""
    if backend == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((192, 720)), rng.standard_normal((720, 144))
    L = rng.standard_normal((40, 192))
    code = MDSCode(30, 25)
    with LocalCluster(30, backend=backend, faults=FailSilent([1, 2, 3, 4, 5]), timeout=60) as c:
        job = c.submit(A, B, code=code)
        C = job.result()
        used = [w.worker for w in job.report.workers if w.status == "used"]
        assert used == list(range(5, 30))
        enc = code.encode(A, B)
        assert enc.compensated
        if backend == "numpy":
            assert np.array_equal(C, code.decode({w: enc[w].compute() for w in used}, encoding=enc))
        assert np.linalg.norm(C - A @ B) / np.linalg.norm(A @ B) <= 1e-12
        plain = c.matmul(A, B, code=code, precision="float64")
        assert not np.array_equal(plain, C)

        h = c.put(A, code=code)
        assert h.compensated
        Cr = c.matmul(h, B)
        assert np.linalg.norm(Cr - A @ B) / np.linalg.norm(A @ B) <= 1e-12

        h13 = c.put(A, code=MDSCode(30, 13))
        assert not h13.compensated            # 17 erasures possible: cond 2.1e6, beyond help
        from codedml.codes.resident import encode_left
        assert encode_left(MDSCode(30, 13), L, 720)[1].compensated   # left threshold 25: 8.0e3
        assert not encode_left(MDSCode(30, 13), L, 720, input_dtype=np.float32)[1].compensated
        Cl = c.matmul_left(L, h13)
        assert np.linalg.norm(Cl - L @ A) / np.linalg.norm(L @ A) <= 1e-12


def test_cuda_backend_matches_numpy(cluster, data):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    assert "cuda" in available_backends()
    A, B = data["A"], data["B"]
    with LocalCluster(N, backend="cuda", timeout=60) as g:
        for name in ("mds", "polynomial", "matdot"):
            code = _codes()[name]
            np.testing.assert_allclose(g.matmul(A, B, code=code), cluster.matmul(A, B, code=code),
                                       rtol=1e-10, atol=1e-10)
        h = g.put(A, code=MDSCode(N, 3))
        U, V = np.ones((40, 1)), np.ones((30, 1))
        h = g.update(h, U, V)
        np.testing.assert_allclose(g.matmul(h, B), (A + U @ V.T) @ B, rtol=1e-9, atol=1e-9)
        assert np.array_equal(g.matmul(data["Ai"], data["Bi"], code=MDSCode(N, 3, field=P)),
                              matmul_mod(data["Ai"], data["Bi"], P))


# --------------------------------------------------------------------------- soak
SOAK_JOBS = 300


@pytest.fixture(scope="module")
def soak():
    """~300 jobs with stragglers and soft errors, through submit()/result() (no history)."""
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((200, 100)), rng.standard_normal((100, 50))
    ref = A @ B
    model = FixedStragglers([1], 0.01) + SoftErrors("exponent", 0.05)
    seed = 5
    code = MDSCode(N, 2)
    c = LocalCluster(N, faults=model, seed=seed, timeout=30)
    out = {"outstanding": [], "wrong": [], "located": 0, "corrupt_jobs": 0, "failed_ok": 0}
    try:
        def one(j):
            bad = {r for r in range(1, N + 1) if fault_for(model, seed, r, j).corruptions}
            job = c.submit(A, B, code=code, errors=1)
            assert job.id == j
            try:
                C = job.result()
            except CorruptResultError:
                # only when more results are corrupt than 6 results can correct
                if len(bad) <= 2:
                    out["wrong"].append((j, "CorruptResultError", sorted(bad)))
                else:
                    out["failed_ok"] += 1
                return
            if not np.allclose(C, ref, rtol=1e-9, atol=1e-9):
                out["wrong"].append((j, "wrong product", sorted(bad)))
            located = {w + 1 for w in job.report.faulty}
            if not located <= bad:
                out["wrong"].append((j, f"located {sorted(located)} but corrupt {sorted(bad)}"))
            out["located"] += len(located)
            out["corrupt_jobs"] += bool(bad)

        for j in range(3):  # warm-up (imports, first allocations)
            one(j)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        for j in range(3, SOAK_JOBS):
            one(j)
            out["outstanding"].append(c.outstanding())
        out["seconds"] = time.perf_counter() - t
        gc.collect()
        out["growth"] = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out["encoding_bytes"] = sum(t.a.nbytes + t.b.nbytes for t in code.encode(A, B))
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        _close_fast(c)
    return out


def test_soak_results_correct_and_corruptions_located(soak):
    assert soak["wrong"] == []
    assert soak["corrupt_jobs"] > 20 and soak["located"] > 10


def test_soak_outstanding_stays_bounded(soak):
    o = soak["outstanding"]
    # unfinished jobs plus finished ones still held by the caller (none here: tracked weakly)
    assert max(x["jobs"] for x in o) <= 4
    assert max(x["inbox"] for x in o) <= 2 * N
    assert max(x["arrivals"] for x in o) <= 2 * N
    assert max(x["jobs"] for x in o[-50:]) <= max(x["jobs"] for x in o[100:150]) + 1  # flat, not growing


def test_soak_memory_growth_small(soak):
    # Finished jobs keep only bookkeeping: 300 jobs must not hold on to many jobs' worth of
    # encoded operands (one job's encoding is ~0.7 MB here).
    assert soak["growth"] < 8 * soak["encoding_bytes"], (
        f"memory grew by {soak['growth'] / 1e6:.1f} MB over {SOAK_JOBS} jobs "
        f"(one job's encoded operands: {soak['encoding_bytes'] / 1e6:.2f} MB)")


def _staggered(delays: dict[int, float]):
    """Every job: worker w sleeps delays[w] seconds before answering (rank = worker + 1)."""
    return Schedule({j: {w + 1: Fault(delay=d) for w, d in delays.items()} for j in range(4)})


@pytest.mark.parametrize("grace", [1.0, 0.0])
def test_a_systematic_job_waits_one_gap_for_its_data_worker_then_decodes_without_it(grace):
    """MDS(6, 4) systematic: data workers 0..3, parity 4, 5. Worker 0 straggles (1.5 s), the
    others answer 0.1 s apart and parity worker 5 only after 1 s. The job is decodable at the
    4th arrival (about 0.3 s) without worker 0: with ``systematic_grace = 1`` it waits about one
    arrival gap (0.1 s) for worker 0 and then decodes at the grace's end, woken by the
    cluster with no further arrival (a missed wake-up would wait for worker 5 at 1 s); with
    ``systematic_grace = 0`` it decodes at once. Either way the product is right."""
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((8, 6)), rng.standard_normal((6, 5))
    faults = _staggered({0: 1.5, 1: 0.0, 2: 0.1, 3: 0.2, 4: 0.3, 5: 1.0})
    with LocalCluster(6, faults=faults, timeout=20) as c:
        c.systematic_grace = grace
        t0 = time.perf_counter()
        job = c.submit(A, B, code=code)
        C = job.result()
        took = time.perf_counter() - t0
        rep = job.report
        np.testing.assert_allclose(C, A @ B, rtol=1e-10, atol=1e-12)
        assert rep.workers[0].status == "missing" and rep.workers[5].status == "missing"
        assert took < 0.9, f"decoded after {took:.2f} s: the grace's end did not wake the job"
        if grace:
            assert 0.04 < rep.systematic_wait < 0.3, rep.systematic_wait
            assert rep.as_dict()["systematic_wait_s"] == rep.systematic_wait
        else:
            assert rep.systematic_wait == 0.0
        c.drain(0.0)


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), "1", None, True])
def test_systematic_grace_is_checked_when_set(bad):
    with LocalCluster(2) as c:
        assert c.systematic_grace == 0.0            # off by default (docs/runtime.md)
        with pytest.raises(ConfigurationError, match=r"`systematic_grace` must be a finite number >= 0.*got"):
            c.systematic_grace = bad
        assert c.systematic_grace == 0.0
        c.systematic_grace = 2
        assert c.systematic_grace == 2.0


def test_a_systematic_wait_never_turns_a_decodable_job_into_a_deadline_error():
    """A grace far longer than the deadline allows (``systematic_grace = 100``, deadline
    0.6 s, the data worker 1.5 s late): the wait is cut to half the time left and a job still
    waiting at its deadline decodes what it has; it never raises DeadlineError with enough
    answers in hand, and leaves no pending wake-up behind."""
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(6)
    A, B = rng.standard_normal((8, 6)), rng.standard_normal((6, 5))
    faults = _staggered({0: 1.5, 1: 0.0, 2: 0.1, 3: 0.2, 4: 0.3, 5: 0.4})
    with LocalCluster(6, faults=faults, timeout=0.6) as c:
        c.systematic_grace = 100
        job = c.submit(A, B, code=code)
        C = job.result()
        np.testing.assert_allclose(C, A @ B, rtol=1e-10, atol=1e-12)
        assert job.report.workers[0].status == "missing"
        assert 0 < job.report.systematic_wait < 0.6
        assert job.t_done <= job.deadline + 0.5   # the progress thread's latency, under load
        assert c._wakes == []


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0], np.array([1.0, 2.0, 3.0]),
                               np.arange(6.0)[::2] + 1.0])
def test_call_handlers_own_their_inputs(x):
    """A handler that works on its input in place sees only its own copy, as an MPI worker owns
    the buffer it received: every worker answers input + 1, and the caller's array is
    untouched (a list, a contiguous array, a strided view)."""
    before = np.array(x, copy=True)

    def inc(ctx, a, **_):
        a += 1.0
        return a

    with LocalCluster(3, handlers={"inc": inc}) as cluster:
        got = cluster.call("inc", x).result()
    assert sorted(got) == [0, 1, 2]
    for w in range(3):
        np.testing.assert_array_equal(got[w], before + 1.0)
    np.testing.assert_array_equal(np.asarray(x), before)


@pytest.mark.parametrize("bad", [-1, 20, 1.5, np.float64(3), "10", None, True])
def test_parity_nice_is_checked_when_set(bad):
    with LocalCluster(2) as c:
        assert c.parity_nice == 0                   # off in-process (docs/runtime.md)
        with pytest.raises(ConfigurationError, match=r"`parity_nice` must be an int from 0 to 19.*got"):
            c.parity_nice = bad
        assert c.parity_nice == 0
        c.parity_nice = np.int64(7)
        assert c.parity_nice == 7 and type(c.parity_nice) is int


def _record_products(monkeypatch) -> dict[int, list[tuple[int, str, int]]]:
    """Every product's (nice value above the process's, thread name, thread id), per rank."""
    import os

    from codedml.runtime._worker import WorkerState

    seen: dict[int, list[tuple[int, str, int]]] = {}
    base, plain = os.getpriority(os.PRIO_PROCESS, 0), WorkerState.plain_product

    def record(self, a, b):
        tid = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, tid) - base
        seen.setdefault(self.rank, []).append((nice, threading.current_thread().name, tid))
        return plain(self, a, b)

    monkeypatch.setattr(WorkerState, "plain_product", record)
    return seen


_PARITY_THREAD = "codedml-parity-product"


def _lowered(n: int) -> int:
    """What lowering a thread by ``n`` from this process's nice value gives (capped at 19)."""
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    return min(19, base + n) - base


def _parity_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == _PARITY_THREAD}


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_parity_products_yield_on_a_thread_of_their_own(monkeypatch):
    """``parity_nice = 7``: the parity worker's products run on a thread of their own 7 nice
    values lower, the data workers' where they ran before (the worker's thread, unchanged).
    Data worker 0 is silent, so every job needs the other two data products and the parity
    product (none is cancelled) and decodes from the yielded one. Then ``parity_nice`` 12
    (the same thread, lowered further), 3 (a fresh thread: none can raise its priority back)
    and 0 (the worker's thread). Closing the cluster ends the threads. A job that corrects
    an error (``errors=1``: it needs every result) does not yield."""
    seen = _record_products(monkeypatch)
    before = _parity_threads()
    code = MDSCode(4, 3, systematic=True)
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((30, 8)), rng.standard_normal((8, 5))
    with LocalCluster(4, faults=FailSilent([1])) as c:
        c.YIELD_MIN_MACS = 0            # these small products yield too
        for nice in (7, 12, 3, 0):
            c.parity_nice = nice
            job = c.submit(A, B, code=code)
            np.testing.assert_allclose(job.result(timeout=10), A @ B, rtol=1e-12, atol=1e-12)
            assert [w.status for w in job.report.workers][1:] == ["used"] * 3, job.report.workers
    assert _parity_threads() <= before
    first = {rank: list(got) for rank, got in seen.items()}
    seen.clear()
    with LocalCluster(5) as c:
        c.parity_nice, c.YIELD_MIN_MACS = 9, 0
        job = c.submit(A, B, code=MDSCode(5, 3, systematic=True), errors=1)  # needs all 5
        np.testing.assert_allclose(job.result(timeout=10), A @ B, rtol=1e-12, atol=1e-12)
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert all(n == 0 and name != _PARITY_THREAD for got in seen.values() for n, name, _ in got), seen
    for rank in (2, 3, 4):
        got = first[rank]
        assert len(got) == 4, (rank, got)
        if rank - 1 in code.systematic_workers:
            assert all(n == 0 and name != _PARITY_THREAD for n, name, _ in got), (rank, got)
        else:
            assert [(n, name) for n, name, _ in got[:3]] == [
                (_lowered(7), _PARITY_THREAD), (_lowered(12), _PARITY_THREAD),
                (_lowered(3), _PARITY_THREAD)], (rank, got)
            assert got[3][0] == 0 and got[3][1] != _PARITY_THREAD, (rank, got)  # parity_nice 0
            tids = [tid for *_, tid in got[:3]]
            assert tids[0] == tids[1] != tids[2], (rank, got)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_only_products_large_enough_yield(monkeypatch):
    """With the default threshold (``YIELD_MIN_MACS``, 2**22 multiply-adds) a parity product
    yields when it is at least that large: sent operands (a 400 x 1000 task times 1000 x 20:
    8M, yes; times 1000 x 5: 2M, no) and a stored block (1000 x 200 times 200 x 30: 6M,
    yes; times a vector, no). Every product decodes right either way."""
    seen = _record_products(monkeypatch)
    code = MDSCode(4, 3, systematic=True)
    rng = np.random.default_rng(8)
    A = rng.standard_normal((1200, 1000))
    S = rng.standard_normal((3000, 200))
    with LocalCluster(4, faults=FailSilent([1])) as c:   # every job needs the parity product
        assert c.YIELD_MIN_MACS == 1 << 22
        c.parity_nice = 4
        h = c.put(S, code=code)
        h.ack.result(timeout=10)
        for X, B, big in ((A, rng.standard_normal((1000, 20)), True),
                          (A, rng.standard_normal((1000, 5)), False),
                          (h, rng.standard_normal((200, 30)), True),
                          (h, rng.standard_normal(200), False)):
            ref = (S if X is h else X) @ B
            got = c.submit(X, B, code=None if X is h else code).result(timeout=20)
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
            parity = seen[4][-1]
            assert (parity[1] == _PARITY_THREAD) is big and parity[0] == (_lowered(4) if big else 0), \
                (B.shape, parity)


def test_the_yielding_thread_hands_results_and_errors_back():
    """:class:`YieldingThread` directly: the caller gets ``fn``'s value or its exception; the
    thread is reused while the lowering grows, replaced when it shrinks, ended by close."""
    from codedml.runtime._worker import PER_THREAD_NICE, YieldingThread

    if not PER_THREAD_NICE:
        with pytest.raises(OSError, match="needs per-thread nice values"):
            YieldingThread().run(5, max, 1, 2)
        return
    before = _parity_threads()
    y = YieldingThread()
    ids = [y.run(n, threading.get_native_id) for n in (2, 2, 6, 1)]
    assert ids[0] == ids[1] == ids[2] != ids[3] != threading.get_native_id()
    assert y.run(1, np.add, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        y.run(1, lambda: 1 / 0)
    assert y.run(1, max, 4, 9) == 9                   # an exception leaves the thread serving
    mine = _parity_threads() - before
    y.close()
    assert len(mine) >= 1 and not mine & _parity_threads()
    y.close()                                         # a second close: nothing to end


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_yielding_thread_survives_a_refused_start_and_a_refused_priority(monkeypatch):
    """A thread that cannot start (a process limit) fails that product by name and leaves
    nothing waiting: the next product starts one; a thread that cannot read its priority
    answers each product with an error that says so instead of dying silently."""
    import os

    from codedml.runtime._worker import YieldingThread

    y, start, tries = YieldingThread(), threading.Thread.start, []

    def refuse_once(self):
        if not tries:
            tries.append(1)
            raise RuntimeError("can't start new thread")
        return start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse_once)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        y.run(3, max, 1, 2)
    assert y.run(3, max, 1, 2) == 2
    y.close()
    monkeypatch.setattr(threading.Thread, "start", start)

    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "getpriority", refuse)
    y = YieldingThread()
    for _ in range(2):
        with pytest.raises(OSError, match=r"could not read the priority.*os\.getpriority.*not permitted"):
            y.run(3, max, 1, 2)
    y.close()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_a_parity_product_that_cannot_yield_is_a_named_error(monkeypatch):
    """Where the product's thread cannot lower its priority (``os.setpriority`` refused), the
    parity worker answers with an error that says so, not with a product at the wrong
    priority; the job decodes from the data workers, and fails, naming it, when it needed the
    parity product: data worker 0 silent (a deadline error that names the rank that raised
    and why), then dead (the parity worker's error itself)."""
    import os

    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    code = MDSCode(4, 3, systematic=True)
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((12, 4)), rng.standard_normal((4, 3))
    with LocalCluster(4, faults=FailSilent([1], start=1)) as c:
        c.parity_nice, c.YIELD_MIN_MACS = 5, 0
        job = c.submit(A, B, code=code)
        np.testing.assert_allclose(job.result(timeout=10), A @ B, rtol=1e-12, atol=1e-12)
        job = c.submit(A, B, code=code, timeout=3)
        with pytest.raises(DeadlineError, match=r"no answer from ranks \[1\].*; worker rank 4 raised "
                           r"OSError: could not lower the priority of this worker's product thread by 5 "
                           r"\(os\.setpriority\)") as ei:
            job.result(timeout=10)
        assert job.report.workers[3].status == "error", job.report.workers
    with LocalCluster(4, faults=Die([1], at=1)) as c:
        c.parity_nice, c.YIELD_MIN_MACS = 5, 0
        c.matmul(A, B, code=code)
        with pytest.raises(WorkerFailure, match=r"could not lower the priority.*os\.setpriority.*"
                           r"Operation not permitted.*rank=4") as ei:
            c.matmul(A, B, code=code, timeout=5)
        assert ei.value.exc_type == "OSError"


# ------------------------------------------------------------------ the caller's arrays
@pytest.mark.parametrize("field", [None, 65537])
def test_writes_to_the_callers_arrays_after_a_request_returns_do_not_reach_the_workers(field):
    """A request may be read by its workers after ``submit`` / ``call`` / ``update`` returned
    (here: every worker is held by an earlier call until the caller has overwritten its
    arrays). What the workers compute is what the caller passed, for every path that ships a
    caller's array as it is: a ReplicationCode's B, a resident product's operand, a call's
    arrays (shared and per worker) and an update's V."""
    rng = np.random.default_rng(11)
    go = threading.Event()

    def hold(ctx, x, **_):
        assert go.wait(30)
        return x

    def echo(ctx, x, **_):
        return x

    def draw(*shape):
        return (rng.integers(0, 65537, shape) if field else rng.standard_normal(shape))

    def mod(X):
        return X % field if field else X

    def close(got, ref):
        if field:
            return np.array_equal(got, ref)
        return np.allclose(got, ref, rtol=1e-12, atol=1e-12)

    n = 4
    with LocalCluster(n, handlers={"hold": hold, "echo": echo}, timeout=60) as c:
        W = draw(8, 6)
        handles = {name: c.put(W, code=code) for name, code in
                   (("mds", MDSCode(n, 2, field=field)), ("rep", ReplicationCode(n, 2, field=field)))}
        for h in handles.values():
            h.ack.result()
        held = c.call("hold", np.ones(1))
        A, B, x, xs, U, V = (draw(8, 6), draw(6, 5), draw(6, 3), [draw(7) for _ in range(n)],
                             draw(8, 2), draw(6, 2))
        refs = [a.copy() for a in (A, B, x, U, V)] + [[v.copy() for v in xs]]
        jobs = {"replication B": (c.submit(A, B, code=ReplicationCode(n, 2, field=field)),
                                  mod(refs[0] @ refs[1]))}
        for name, h in handles.items():
            jobs[f"resident {name}"] = (c.submit(h, x), mod(W @ refs[2]))
        call, per = c.call("echo", x), c.call("echo", per_worker=[[v] for v in xs])
        updated = c.update(handles["mds"], U, V)
        for arr in (A, B, x, U, V, *xs):   # the caller reuses its buffers at once
            arr[...] = 3 if field else np.nan
        go.set()
        held.result()
        for name, (job, ref) in jobs.items():
            assert close(job.result(), ref), name
        assert all(np.array_equal(v, refs[2]) for v in call.result().values())
        assert all(np.array_equal(v, refs[5][w]) for w, v in per.result().items())
        assert updated.ack.result().acked == tuple(range(n))
        assert close(c.fetch(updated), mod(W + refs[3] @ refs[4].T))


def test_a_gf_update_checks_v_before_sending():
    """An update's V over GF(p) is checked at the root, as U is by its encode: out of range or
    not integers, it is refused by name and no block goes stale."""
    p = 65537
    rng = np.random.default_rng(12)
    W, U, V = rng.integers(0, p, (8, 6)), rng.integers(0, p, (8, 2)), rng.integers(0, p, (6, 2))
    with LocalCluster(4) as c:
        h = c.put(W, code=MDSCode(4, 2, field=p))
        bad = V.copy()
        bad[1, 1] = p
        with pytest.raises(ConfigurationError, match=r"`V` entries must be between 0 and 65536 for GF\(65537\), got 65537"):
            c.update(h, U, bad)
        with pytest.raises(ConfigurationError, match=r"`V` must hold integers for the field GF\(65537\), got dtype float64"):
            c.update(h, U, V.astype(float))
        assert c.stale_workers(h) == frozenset()
        h = c.update(h, U, V)
        assert h.ack.result().acked == (0, 1, 2, 3)
        assert np.array_equal(c.fetch(h), (W + U @ V.T) % p)


def test_call_results_are_the_callers_own_arrays():
    """In-process, as over MPI, a call's results are copies: a handler that returns its
    worker's state (``ctx.store``) and changes it later does not change earlier results, and
    writing into a result does not reach the worker."""
    def count(ctx, x, **_):
        w = ctx.store.setdefault("w", np.zeros(3))
        w += 1.0
        return w

    with LocalCluster(2, handlers={"count": count}) as c:
        first = c.call("count", np.ones(1)).result()
        second = c.call("count", np.ones(1)).result()
        assert all(v.tolist() == [1.0] * 3 for v in first.values())
        second[0][...] = -1.0
        third = c.call("count", np.ones(1)).result()
        assert all(v.tolist() == [3.0] * 3 for v in third.values())


@pytest.mark.parametrize("model, name", [(Die([7]), "Die"), (SoftErrors(prob=0.5, ranks={9}), "SoftErrors"),
                                         (FixedStragglers([5], 1.0), "FixedStragglers"),
                                         (FixedStragglers([1], 1.0) + FailSilent([5]), "FailSilent")])
def test_a_fault_model_naming_ranks_the_cluster_lacks_is_refused(model, name):
    """A model that names a rank no worker has would never fire: the run would measure a
    fault-free job as a faulty one. Refused by name (rank 0 is the root)."""
    with pytest.raises(ConfigurationError, match=rf"`faults` \({name}\) ranks must be between 1 and workers=4 \(rank 0 is the root\), got"):
        LocalCluster(4, faults=model)


def test_a_later_request_with_an_earlier_deadline_expires_at_its_own():
    """The progress loop scans for expired requests only from the nearest deadline on
    (``_next_deadline``): a request registered after a long one, with a shorter deadline,
    must still settle with its DeadlineError near its own deadline, and the long one stay
    pending until its own."""
    def echo(ctx, x, **_):
        return x

    with LocalCluster(3, handlers={"echo": echo}, faults=FailSilent([1]), timeout=60) as c:
        long = c.call("echo", np.ones(2), timeout=30.0)
        t = time.perf_counter()
        short = c.call("echo", np.ones(2), timeout=0.3)
        with pytest.raises(DeadlineError, match=r"call 'echo' \(job 1\): deadline of 0.3 s"):
            short.result()
        assert time.perf_counter() - t < 5.0   # not the long request's 30 s
        assert not long.done()
        again = c.call("echo", np.ones(2), timeout=0.2)   # a nearer deadline once more
        with pytest.raises(DeadlineError, match=r"deadline of 0.2 s"):
            again.result()
        assert not long.done()
        long.cancel()


def test_futures_state_is_read_alike_by_done_result_and_concurrent_futures():
    """``done()`` and ``result()`` read the Future's state without its condition; what they
    say must match what ``concurrent.futures`` sees: a value, a raised error, a cancel."""
    import concurrent.futures as cf

    def echo(ctx, x, **_):
        return x

    def boom(ctx, x, **_):
        raise RuntimeError("boom")

    with LocalCluster(2, handlers={"echo": echo, "boom": boom}, faults=FailSilent([2]),
                      timeout=60) as c:
        ok = c.call("echo", np.arange(3.0), workers=[0])
        bad = c.call("boom", np.ones(1), workers=[0])
        hung = c.call("echo", np.ones(1), workers=[1])   # rank 2 is silent
        done, pending = cf.wait([ok, bad, hung], timeout=10, return_when=cf.ALL_COMPLETED)
        assert done == {ok, bad} and pending == {hung}
        assert ok.done() and bad.done() and not hung.done()
        assert ok.result()[0].tolist() == [0.0, 1.0, 2.0]
        assert ok.result() is ok.result()                 # the value, not a copy per call
        with pytest.raises(WorkerFailure, match="boom"):
            bad.result()
        assert isinstance(bad.exception(), WorkerFailure)
        assert hung.cancel() and hung.done() and hung.cancelled()
        with pytest.raises(cf.CancelledError):
            hung.result()
        assert set(cf.as_completed([ok, bad], timeout=1)) == {ok, bad}


def test_futures_condition_is_made_on_first_use_and_waiters_on_it_are_woken():
    """A request's Future condition is made only where something waits on it through the
    Future's own methods: a settled job read with ``result()`` and ``report`` never makes one
    (on MPI a caller pumps the arrivals itself and waits on no condition), while
    threads blocked in ``concurrent.futures.wait`` / ``Future.result`` on a pending request
    (which make it) are woken by its settle, callbacks added before and after the settle each
    run once, and a second settle is refused as Future refuses it."""
    import concurrent.futures as cf

    def slow(ctx, x, **_):
        time.sleep(0.3)
        return x

    with LocalCluster(4, handlers={"slow": slow}, timeout=60) as c:
        code = MDSCode(4, 2)
        A = np.arange(16.0).reshape(4, 4)
        job = c.submit(A, A, code=code)
        end = time.monotonic() + 20
        while not job.done() and time.monotonic() < end:   # (no wait on its condition)
            time.sleep(0.001)
        np.testing.assert_allclose(job.result(), A @ A, rtol=1e-12)
        assert job.report.outcome == "ok"
        assert not {"_cond", "_condition"} & set(job.__dict__)   # nobody waited on it: none made
        with pytest.raises(cf.InvalidStateError):      # a second settle, without a condition
            job.set_result(None)
        seen = []
        job.add_done_callback(lambda f: seen.append(("after", f is job)))
        assert seen == [("after", True)]               # settled: run at once, once
        call = c.call("slow", np.ones(2))
        call.add_done_callback(lambda f: seen.append(("before", f.done())))
        got: dict[str, object] = {}

        def wait_cf():
            got["wait"] = cf.wait([call], timeout=20)

        def wait_result():
            got["result"] = cf.Future.result(call, timeout=20)   # blocks in the condition

        threads = [threading.Thread(target=wait_cf), threading.Thread(target=wait_result)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert got["wait"][0] == {call} and set(got["result"]) == {0, 1, 2, 3}
        assert seen == [("after", True), ("before", True)]
        assert "_cond" in call.__dict__                # made by the waiters
        with pytest.raises(cf.InvalidStateError):
            call.set_exception(RuntimeError("twice"))


def test_a_waiter_on_the_cluster_is_woken_by_a_settlement_not_its_timeout():
    """Arrivals and settlements notify the cluster's condition only while a thread waits on
    it (``_wait_changed`` counts them): a thread waiting there with a long timeout must be
    woken when a request settles."""
    def echo(ctx, x, **_):
        time.sleep(0.2)
        return x

    with LocalCluster(2, handlers={"echo": echo}, timeout=60) as c:
        call = c.call("echo", np.ones(1))
        woke = []

        def wait() -> None:
            with c._lock:
                t = time.perf_counter()
                while not call.settled and time.perf_counter() - t < 30:
                    c._wait_changed(30.0)
                woke.append(time.perf_counter() - t)

        th = threading.Thread(target=wait)
        th.start()
        th.join(35)
        assert woke and woke[0] < 10.0, woke   # woken by the settlement, not after 30 s
        assert call.result()[0].tolist() == [1.0]


def _compiled_poll(c, events):
    """Make ``c``'s next polls hand over ``events`` as the compiled MPI poll does: each poll
    takes the next list of (worker, job, kind, payload, ack) and passes an inline result to
    ``_inline_result`` (booked unless something earlier in the poll waits), anything else
    as an :class:`Arrival`."""
    from codedml.runtime.futures import Arrival

    def poll(wait=0.0, want=1, job=None):
        out = []
        for w, job, kind, payload, ack in events.pop(0) if events else ():
            if kind == "result" and not ack:
                c._inline_result(out, w, job, payload, 0.0, time.perf_counter())
            else:
                out.append(Arrival(w, job, kind, payload, ack=ack))
        return out

    c._poll = poll


def test_a_booked_job_result_is_a_routed_one():
    """Job results booked by the compiled poll's shortcut (``_inline_result``, one
    reply a poll, handed over by ``_pump``) leave a job as ``_route`` of the same results
    leaves its twin: the same arrivals and latencies after every reply, the decode at the
    same reply, the same used and late workers and report; every booked reply counts as an
    arrival for ``_pump``; a result for a job that nobody holds any more only notes the
    worker's last answer."""
    from codedml.runtime.futures import Arrival

    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    code = MDSCode(N, 4)
    c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)  # nobody answers
    try:
        with c._lock:
            jobs = [c.submit(A, B, code=code) for _ in range(2)]
            tasks = code.encode(A, B)
            order = [5, 1, 0, 4, 2, 3]   # a parity result first; decodable at the fourth
            events = [[(w, jobs[0].id, "result", tasks[w].compute(), False)] for w in order]
            _compiled_poll(c, events)
            for i, w in enumerate(order):
                assert c._pump() == 1, i     # the booked reply counts
                assert c._last_answer[w] == jobs[0].id
                c._route(Arrival(w, jobs[1].id, "result", tasks[w].compute()), time.perf_counter())
                for job in jobs:
                    assert job.done() == (i >= 3), (i, job.id)
                assert sorted(jobs[0].arrived) == sorted(jobs[1].arrived)
                assert jobs[0].latency.keys() == jobs[1].latency.keys()
                assert jobs[0].late == jobs[1].late
                assert c._last_answer[w] == jobs[1].id
        for job in jobs:
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)
        assert jobs[0].info.used == jobs[1].info.used == (0, 1, 4, 5)
        assert _statuses(jobs[0]) == _statuses(jobs[1])
        # the decode came at the fourth reply: the last two were late for both
        assert jobs[0].late == jobs[1].late == {2, 3}
        # a job id nobody holds: booked (dropped), the worker's last answer noted
        gone = c._next_job + 100
        with c._lock:
            _compiled_poll(c, [[(2, gone, "result", np.zeros(1), False)]])
            assert c._pump() == 1
            assert c._last_answer[2] == gone
    finally:
        _close_fast(c)


def test_a_landed_job_result_is_a_routed_one():
    """Job results landed by the compiled poll (copied into the waited-for job's slots in C,
    handed over by ``_pump`` through ``Job._take_landed``) leave a job as ``_route`` of the
    same results leaves its twin: the same arrivals and latencies after every poll, the
    decode at the same result, the same used and late workers and report; landed results
    count as arrivals for ``_pump``, go before the poll's other replies, note their workers'
    last answers; several landed in one poll are booked one at a time, the code's data
    workers' first (all of a poll's were in when the root looked; the job settles at the
    fourth, the rest are late); the landed job decodes from its landing
    (``_decode_landed``), bit for bit its twin's decode, and the landing is dropped once the
    job settles."""
    from codedml.codes import polydot
    from codedml.runtime.futures import Arrival

    rng = np.random.default_rng(8)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    code = MDSCode(N, 4)
    c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)  # nobody answers
    c._lands = True   # (as an MPICluster root with the compiled engine)
    other = []

    def poll(wait=0.0, want=1, job=None):
        # the compiled poll's landing, for the results queued for this poll: the hot job's
        # land (once per worker), another request's reply is an Arrival
        out = []
        for w, jid, payload in events.pop(0) if events else ():
            _, land, got = job._land if job is not None and job._land is not None else (0, 0, 0)
            if job is not None and jid == job.id and w not in got[1:1 + got[0]]:
                land[w] = payload
                got[1 + got[0]] = w
                got[0] += 1
                c._landed = job
            else:
                out.append(Arrival(w, jid, "result", payload))
                other.append((w, jid))
        return out

    landed = []
    real = polydot.PolyDotCode._decode_landed

    def spy(self, land, rows, encoding):
        out = real(self, land, rows, encoding)
        landed.append((rows, out is not None))
        return out

    try:
        with c._lock, pytest.MonkeyPatch.context() as mp:
            mp.setattr(polydot.PolyDotCode, "_decode_landed", spy)
            jobs = [c.submit(A, B, code=code) for _ in range(2)]
            assert jobs[0]._land is not None and jobs[0]._land[1].shape == (N, 2, 3)
            tasks = code.encode(A, B)
            # a parity result first, then one poll with two results and another request's
            # reply ahead of them, then the three last together (decodable at the fourth)
            gone = c._next_job + 100
            polls = [[5], [1, 0], [4, 2, 3]]
            events = [[(w, jobs[0].id, tasks[w].compute()) for w in ws] for ws in polls]
            events[1].insert(0, (3, gone, np.zeros(1)))
            c._poll = poll
            for i, ws in enumerate(polls):
                assert c._pump(0.0, 1, jobs[0]) == len(ws) + (i == 1), i
                # the twin's routed in the order the landing books them: data workers first
                for w in sorted(ws, key=lambda w: w not in code.systematic_workers):
                    # (worker 3's answer to `gone`, a later id, stays its last)
                    assert c._last_answer[w] == (gone if w == 3 else jobs[0].id)
                    c._route(Arrival(w, jobs[1].id, "result", tasks[w].compute()),
                             time.perf_counter())
                for job in jobs:
                    assert job.done() == (i == 2), (i, job.id)
                assert sorted(jobs[0].arrived) == sorted(jobs[1].arrived)
                assert jobs[0].latency.keys() == jobs[1].latency.keys()
                assert jobs[0].late == jobs[1].late
            assert other == [(3, gone)] and c._last_answer[3] == gone
        for job in jobs:
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)
        assert landed == [([0, 1, 2, 5], True)]   # the landed job's decode, not its twin's
        assert jobs[0].result().tobytes() == jobs[1].result().tobytes()
        # the last poll landed 4, 2, 3: 2 booked first, so 3 and 4 came late
        assert jobs[0].info.used == jobs[1].info.used == (0, 1, 2, 5)
        assert _statuses(jobs[0]) == _statuses(jobs[1])
        assert jobs[0].late == jobs[1].late == {3, 4}
        assert jobs[0]._land is None and jobs[0]._land_taken == N
    finally:
        _close_fast(c)


def _land_at_once(c, job, queued):
    """``c``'s poll, as the compiled one lands results: the ``queued`` (worker, result)
    pairs in ``job``'s landing, all in the next poll, none after (nor in the progress
    thread's polls once they are in, or once the job dropped its landing)."""
    def poll(wait=0.0, want=1, job_=None):
        if not queued or job._land is None:
            return []
        _, land, got = job._land
        for w, payload in queued:
            land[w] = payload
            got[1 + got[0]] = w
            got[0] += 1
        queued.clear()
        c._landed = job
        return []

    c._poll = poll


def test_a_landed_job_asks_a_replaced_decode():
    """A job whose k results all landed decodes by ``_decode_landed`` (no ``decode`` call),
    unless the code's ``decode`` was replaced on its instance or class (a timer, a wrapper,
    as ``benchmarks/scale.py`` sets one): then the replacement decodes, as for a routed
    job."""
    from codedml.codes import polydot

    rng = np.random.default_rng(9)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))

    def run(code):
        c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)   # nobody answers
        c._lands = True   # (as an MPICluster root with the compiled engine)
        try:
            with c._lock:
                job = c.submit(A, B, code=code)
                tasks = code.encode(A, B)
                _land_at_once(c, job, [(w, tasks[w].compute()) for w in range(4)])
                c._pump(0.0, 1, job)
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)
            assert job.info.used == (0, 1, 2, 3)
        finally:
            _close_fast(c)

    calls, landed = [], []
    real, real_landed = polydot.PolyDotCode.decode, polydot.PolyDotCode._decode_landed

    def timed(self, *a, **kw):
        calls.append(type(self).__name__)
        return real(self, *a, **kw)

    def spy(self, *a):
        out = real_landed(self, *a)
        landed.append(out is not None)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(polydot.PolyDotCode, "_decode_landed", spy)
        run(MDSCode(N, 4))
        assert landed == [True] and calls == []   # nothing replaced: the landing's decode
        code = MDSCode(N, 4)
        code.decode = lambda *a, **kw: timed(code, *a, **kw)   # on the instance
        run(code)
        assert landed == [True, False] and calls == ["MDSCode"]
        mp.setattr(MDSCode, "decode", timed)   # on the class
        run(MDSCode(N, 4))
        assert landed == [True, False, False] and calls == ["MDSCode"] * 2


def test_a_job_with_a_routed_result_decodes_by_decode():
    """A job with a landing whose k results came partly by routing (a reply the poll made
    an event of: a notice waiting, a second reply) decodes by ``decode`` of its results, not
    from its landing, whose slot for that worker holds nothing: the product is right and
    ``_decode_landed`` is not asked."""
    from codedml.codes import polydot
    from codedml.runtime.futures import Arrival

    rng = np.random.default_rng(10)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    code = MDSCode(N, 4)
    asked = []
    real = polydot.PolyDotCode._decode_landed
    c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)   # nobody answers
    c._lands = True   # (as an MPICluster root with the compiled engine)
    try:
        with c._lock, pytest.MonkeyPatch.context() as mp:
            mp.setattr(polydot.PolyDotCode, "_decode_landed",
                       lambda self, *a: asked.append(a[1]) or real(self, *a))
            job = c.submit(A, B, code=code)
            tasks = code.encode(A, B)
            # worker 0's result routed first (its landing slot stays empty)
            c._route(Arrival(0, job.id, "result", tasks[0].compute()), time.perf_counter())
            assert job._routed and not job.done()
            _land_at_once(c, job, [(w, tasks[w].compute()) for w in (1, 2, 3)])
            c._pump(0.0, 1, job)
            assert job.done() and asked == []
        np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)
        assert job.info.used == (0, 1, 2, 3)
    finally:
        _close_fast(c)


def test_landing_only_where_results_can_land_and_a_failed_poll_leaves_no_stale_landing():
    """A stacked job gets a landing only where its results come inline (at most INLINE_MAX
    bytes each: a larger one never lands, so none is allocated); a poll that landed results
    and then failed (its transport error settles every request) leaves the next pump, and
    ``close``, working: the settled job's landing is gone and its noted landing books
    nothing."""
    from codedml.runtime.protocol import INLINE_MAX

    c = LocalCluster(3, faults=FailSilent(range(1, 4)), timeout=20)  # nobody answers
    c._lands = True
    try:
        land = c._landing(7, np.zeros((3, 2, 4)), np.zeros((4, 5)))
        assert land[0] == 7 and land[1].shape == (3, 2, 5) and land[2].tolist() == [0] * 4
        cols = INLINE_MAX // 8 // 2 + 1     # a (2, cols) result: past INLINE_MAX
        assert c._landing(7, np.zeros((3, 2, 1)), np.zeros((1, cols))) is None
        assert c._landing(7, np.zeros((3, 2, 4), np.float32),
                          np.zeros((4, 5), np.float32)) is None
        with c._lock:
            job = c.submit(np.ones((4, 3)), np.ones((3, 2)), code=MDSCode(3, 2))
            assert job._land is not None

            def poll(wait=0.0, want=1, job=None):
                jid, landing, got = job._land
                landing[0], got[0], got[1] = 1.0, 1, 0
                c._landed = job
                raise RuntimeError("a transport error after landing")

            c._poll = poll
            c._caller_progress = True   # (the caller pumps, as on MPI)
            with pytest.raises(FaultError, match="a transport error after landing"):
                c._wait_step(0.0, 1, job)
            assert job.done() and job._land is None and c._landed is job
            del c._poll
            assert c._pump() == 0 and c._landed is None   # nothing booked, nothing raised
    finally:
        _close_fast(c)


def test_a_result_behind_another_reply_in_the_same_poll_keeps_its_order():
    """A worker's failed update (its error marks the stored block stale) and that block's
    result for a product, in one poll: the result is not booked ahead of the error (the
    shortcut books only while nothing earlier in the poll waits), so the product treats the
    block as stale (an erasure), never as a result to decode from; on its own the same
    result is booked."""
    from codedml.errors import WorkerFailure

    rng = np.random.default_rng(6)
    W = rng.standard_normal((8, 6))
    c = LocalCluster(4, faults=FailSilent(range(1, 5)), timeout=20)  # nobody answers
    try:
        with c._lock:
            h = c.put(W, code=MDSCode(4, 2))
            h = c.update(h, np.ones((8, 1)), np.ones((6, 1)))
            job = c.submit(h, np.ones(6))
            res = np.zeros(4)
            out = []
            assert c._inline_result(out, 1, job.id, res, 0.0, time.perf_counter()) is True
            assert out == [] and c._booked[-1][:2] == (job, 1)
            c._booked.clear()
            err = WorkerFailure("update failed", rank=2, job=h.ack.id)
            _compiled_poll(c, [[(1, h.ack.id, "error", err, True), (1, job.id, "result", res, False)]])
            assert c._pump() == 2
            assert 1 in c._stale[h.id]
            assert job.failed.get(1) == "stale" and 1 not in job.arrived
    finally:
        _close_fast(c)


def test_booked_replies_go_before_the_polls_other_arrivals_and_stale_blocks_stay_erasures():
    """What the compiled poll books is handed over before the arrivals it could not book
    (which came later in the same poll), so replies keep their order; a stale stored block's
    result is never booked (alone in its poll, after the error that marked it): the product
    treats it as an erasure while pending and ignores it once settled, as ``_route`` does;
    a call's results booked the same way settle it with them."""
    from codedml.errors import WorkerFailure

    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    c = LocalCluster(4, faults=FailSilent(range(1, 5)), timeout=20,
                     handlers={"echo": lambda ctx, x: x})
    try:
        with c._lock:
            code = MDSCode(4, 2)
            job = c.submit(A, B, code=code)
            tasks = code.encode(A, B)
            other = WorkerFailure("not a request of this test", rank=4, job=10 ** 6)
            _compiled_poll(c, [[(3, job.id, "result", tasks[3].compute(), False),
                                (2, 10 ** 6, "error", other, False),
                                (1, job.id, "result", tasks[1].compute(), False)]])
            assert c._pump() == 3
            assert list(job.latency) == [3, 1]           # the booked one first
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)

            W = rng.standard_normal((8, 6))
            h = c.put(W, code=MDSCode(4, 2))
            h = c.update(h, np.ones((8, 1)), np.ones((6, 1)))
            prod = c.submit(h, np.ones(6))
            err = WorkerFailure("update failed", rank=2, job=h.ack.id)
            res = np.zeros(4)
            _compiled_poll(c, [[(1, h.ack.id, "error", err, True)],           # marks 1 stale
                               [(1, prod.id, "result", res, False)],         # alone: not booked
                               [(0, prod.id, "result", res, False)],
                               [(2, prod.id, "result", res, False)],         # decodes
                               [(1, prod.id, "result", res, False)]])        # settled, stale
            for _ in range(5):
                assert c._pump() == 1
            assert prod.done() and prod.failed.get(1) == "stale"
            assert 1 not in prod.arrived and 1 not in prod.late

            x = np.arange(3.0)
            call = c.call("echo", x)
            _compiled_poll(c, [[(w, call.id, "result", x + w, False) for w in range(4)]])
            assert c._pump() == 4
            got = call.result()
            assert sorted(got) == [0, 1, 2, 3]
            for w in range(4):
                np.testing.assert_array_equal(got[w], x + w)
    finally:
        _close_fast(c)


def test_a_code_says_whether_the_count_alone_decides_decodability():
    """``_decided_by_count()`` (a job then tests decodability without an array of the arrived
    workers): true only where ``decodable`` of every subset is its size against the
    threshold; false for systematic MatDot (its data workers suffice alone), gradient codes
    (fractional repetition decodes from one worker per group), and a code whose test is
    replaced on the instance."""
    import itertools

    count = [MDSCode(6, 4), MDSCode(6, 4, systematic=False), MDSCode(5, 3, field=65537),
             PolynomialCode(7, 2, 2), MatDotCode(7, 3, systematic=False)]
    other = [MatDotCode(7, 3), GradientCode(6, 2, scheme="fractional_repetition"),
             GradientCode(6, 2)]
    for code in count + other:
        n, t = code.workers, code.recovery_threshold
        by_size = all(code.decodable(list(S)) == (len(S) >= t)
                      for r in range(n + 1) for S in itertools.combinations(range(n), r))
        assert code._decided_by_count() == (code in count), code
        if code in count:
            assert by_size, code
        elif code is other[1]:   # one worker of each group decodes, below the threshold
            assert not by_size
    c = MDSCode(6, 4)
    c._recovers = lambda rows: True
    assert not c._decided_by_count()


def test_settled_requests_are_held_weakly_and_their_table_stays_bounded():
    """The table of settled requests still owed results (``_WeakTable``): a request is found
    while someone holds it and gone once nobody does; ``len`` and ``values`` count live
    requests only, and the entries of dead ones are swept so that the table stays within
    about twice the live ones over any number of settles."""
    from codedml.runtime._cluster import _WeakTable

    class R:
        pass

    t = _WeakTable()
    held = [R() for _ in range(10)]
    for i, r in enumerate(held):
        t[i] = r
    for i in range(10, 100_000):
        t[i] = R()                  # settled and dropped at once
        assert len(t._d) <= max(64, 2 * len(held)) + 1
    assert len(t) == 10 and set(map(id, t.values())) == set(map(id, held))
    assert t.get(3) is held[3] and t.get(50_000) is None and t.get(-1) is None
    del held[3]
    gc.collect()
    assert t.get(3) is None and len(t) == 9


class _OnePollTransport:
    """A minimal transport over the request core (``ClusterBase``) whose poll hands over
    every worker's result of a job at once, booked as the MPI poll books inline results
    (``_inline_result``), and which records the cancels it is asked to send."""

    @staticmethod
    def make(n):
        from codedml.runtime._cluster import ClusterBase

        class T(ClusterBase):
            _caller_progress = True

            def __init__(self):
                super().__init__(n, 60.0, None)
                self.queue, self.cancels = [], []

            def _send(self, worker, req, arrays):
                a, b = arrays
                self.queue.append((worker, req.job, np.asarray(a) @ np.asarray(b)))

            def _poll(self, wait=0.0, want=1, job=None):
                out, now = [], time.perf_counter()
                got, self.queue = self.queue, []
                for w, job, payload in got:
                    self._inline_result(out, w, job, payload, 0.0, now)
                return out

            def _cancel(self, worker, job):
                self.cancels.append((worker, job))

            def _idle(self, timeout):
                time.sleep(min(timeout, 0.001))

            def close(self):
                with self._lock:
                    self._closed = True
                self._stop_progress()

        return T()


def test_no_cancel_goes_to_a_worker_whose_result_came_in_the_same_poll():
    """A job that decides on its k-th result while the rest of its results are already in
    the same poll books those as late and sends them no cancel (each would be a message for
    the worker to read, after it has answered); a worker whose result has not come is still
    sent one."""
    t = _OnePollTransport.make(6)
    try:
        code = MDSCode(6, 4)
        A = np.arange(16.0).reshape(4, 4)
        job = t.submit(A, A, code=code)
        np.testing.assert_allclose(job.result(), A @ A, rtol=1e-12)
        rep = job.report
        assert sorted(s.status for s in rep.workers) == ["late", "late", "used", "used", "used",
                                                         "used"]
        assert t.cancels == []                       # every worker had answered
        job = t.submit(A, A, code=code)
        t.queue.pop(5)                                # worker 5's result never comes
        np.testing.assert_allclose(job.result(), A @ A, rtol=1e-12)
        assert t.cancels == [(5, job.id)]             # the one still owed
        assert job.report.workers[4].status == "late"
    finally:
        t.close()


def test_a_finalizer_that_reads_a_request_while_its_condition_is_made_does_not_deadlock():
    """The Future condition is made outside the module lock that orders it against a
    settle: a garbage collection that runs during the making (an allocation) may run a
    finalizer that reads another request (its repr makes that one's condition), which must
    not block on the lock its own thread holds. Run in a thread, so a deadlock fails the
    test instead of hanging the suite."""
    import traceback

    def scenario(out):
        with LocalCluster(4, timeout=60) as c:
            code = MDSCode(4, 2)
            A = np.arange(16.0).reshape(4, 4)
            ran = []

            class Reader:
                def __init__(self, job):
                    self.job, self.me = job, self   # a cycle: freed by the collector

                def __del__(self):
                    ran.append(repr(self.job))

            for n in range(1, 40):
                target, other = c.submit(A, A, code=code), c.submit(A, A, code=code)
                end = time.monotonic() + 20
                while not (target.done() and other.done()) and time.monotonic() < end:
                    time.sleep(0.001)
                gc.collect()
                gc.disable()
                Reader(other)
                gc.set_threshold(n)   # a collection during the next allocations
                gc.enable()
                repr(target)          # makes target's condition
                gc.set_threshold(700)
            out.append(len(ran))

    out: list[int] = []
    t = threading.Thread(target=scenario, args=(out,), daemon=True)
    t.start()
    t.join(60)
    gc.set_threshold(700)
    gc.enable()
    assert not t.is_alive(), "deadlock: " + "".join(traceback.format_stack(
        sys._current_frames()[t.ident]))
    assert out and out[0] > 0   # the finalizers ran (during the makings, for some n)


def test_cancels_held_during_a_poll_survive_a_done_callback_that_pumps_again():
    """A done-callback runs inside the booking of a poll (the settle calls it); one that
    submits and pumps again (``progress()``) nests a booking: the cancels held by both go out
    once, from the outermost, and the cluster goes on (a flag instead of a depth had lost
    them, then failed every request with a TypeError)."""
    t = _OnePollTransport.make(6)
    try:
        code = MDSCode(6, 4)
        A = np.arange(16.0).reshape(4, 4)
        inner = []

        def again(_):
            inner.append(t.submit(A, A, code=code))
            t.progress()

        with t._lock:
            job = t.submit(A, A, code=code)
            t.queue.pop(5)                      # worker 5 owes its result: a cancel is due
            job.add_done_callback(again)
        np.testing.assert_allclose(job.result(), A @ A, rtol=1e-12)
        np.testing.assert_allclose(inner[0].result(), A @ A, rtol=1e-12)
        np.testing.assert_allclose(t.submit(A, A, code=code).result(), A @ A, rtol=1e-12)
        assert t.cancels.count((5, job.id)) == 1 and len(t.cancels) == 1
        assert t._hold_depth == 0 and t._held_cancels == []
    finally:
        t.close()


def _decide_twins(c, code, A, B, order, m, *, errors=0):
    """Two jobs of ``code`` on ``c`` whose landings both hold the first ``m`` results of
    ``order``: the first settled (or not) by ``Job._decide_landed``, the second by the
    pump's general booking (``_take_landed``, a ``_progress`` per result). Returns the jobs,
    what the decision returned, the cancels each sent (the engine's, recorded) and the
    workers' last answers right after the decision (before the twin's pump moves them on)."""
    cancels: list[tuple[int, int]] = []
    c._cancel = lambda w, jid: cancels.append((w, jid))
    tasks = code.encode(A, B)
    jobs = [c.submit(A, B, code=code, errors=errors) for _ in range(2)]
    for job in jobs:
        _, land, got = job._land
        for w in order[:m]:
            land[w] = tasks[w].compute()
            got[1 + got[0]] = w
            got[0] += 1
    decided = jobs[0]._decide_landed(time.perf_counter())
    mine = {jid for _, jid in cancels}
    answers = dict(c._last_answer)
    c._landed = jobs[1]
    c._poll = lambda wait=0.0, want=1, job=None: []
    c._pump()
    split = ([(w, j) for w, j in cancels if j == jobs[0].id],
             [(w, j) for w, j in cancels if j == jobs[1].id])
    assert mine <= {jobs[0].id}
    return jobs, decided, split, answers


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, N - 1), data=st.data())
def test_a_landing_decided_in_one_step_is_the_general_booking(k, data):
    """``Job._decide_landed`` (MPI's caller books a landing that decides its job in one
    step) leaves a job exactly as the pump's general booking of the same landing leaves its
    twin: the same product bit for bit, the same arrived, late and answered workers, the
    same decode info and report, the same cancels (to the workers not heard, none to one
    whose result came in the same poll), the landing dropped, the job retired. Fewer than
    k results: nothing done, nothing changed. Landings of any size and order, data workers
    among them or not."""
    order = data.draw(st.permutations(range(N)))
    m = data.draw(st.integers(1, N))
    rng = np.random.default_rng(k * 100 + m)
    A, B = rng.standard_normal((2 * k + 1, 5)), rng.standard_normal((5, 3))
    code = MDSCode(N, k)
    c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)  # nobody answers
    c._lands = True   # (as an MPICluster root with the compiled engine)
    try:
        with c._lock:
            jobs, decided, (cancel0, cancel1), answers = _decide_twins(c, code, A, B, order, m)
            assert decided == (m >= k)
            if m < k:   # nothing decided, nothing booked: the first job as it was
                assert not jobs[0].done() and not jobs[0].arrived and jobs[0]._land_taken == 0
                assert not jobs[0].latency and not cancel0
                return
            a, b = jobs
            assert a.done() and b.done()
            assert a.result().tobytes() == b.result().tobytes()
            np.testing.assert_allclose(a.result(), A @ B, rtol=1e-10, atol=1e-10)
            assert sorted(a.arrived) == sorted(b.arrived) and a.late == b.late
            assert a.latency.keys() == b.latency.keys()
            assert a.info.used == b.info.used and a.info.condition == b.info.condition
            assert _statuses(a) == _statuses(b)
            assert sorted(w for w, _ in cancel0) == sorted(w for w, _ in cancel1) == \
                sorted(set(range(N)) - set(order[:m]))
            assert a._land is None and a._land_taken == b._land_taken == m
            assert a.id not in c._pending and b.id not in c._pending
            assert answers == {w: a.id for w in order[:m]}
            assert c._last_answer == {w: b.id for w in order[:m]}
    finally:
        _close_fast(c)


def test_a_landing_that_needs_more_than_its_count_is_left_to_the_general_booking():
    """``Job._decide_landed`` declines, changing nothing, wherever the count of landed
    results does not decide alone: a job with an error budget (it waits for k + 2 errors
    and checks them), one with a failed worker, one waiting for systematic results (a
    grace above 0), and a landing whose decode declines (a NaN result: the general decode
    refuses it and waits for one more); each is left to the general booking."""
    rng = np.random.default_rng(12)
    A, B = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    code = MDSCode(N, 4)
    c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)  # nobody answers
    c._lands = True
    try:
        with c._lock:
            jobs, decided, _, _ = _decide_twins(c, code, A, B, list(range(N)), N, errors=1)
            assert not decided and jobs[1].done() and not jobs[0].done()
            assert not jobs[0].arrived and jobs[0]._land_taken == 0

            job = c.submit(A, B, code=code)
            job.failed[5] = "crashed"
            _, land, got = job._land
            for w in range(4):
                land[w], got[1 + w] = code.encode(A, B)[w].compute(), w
            got[0] = 4
            assert not job._decide_landed(time.perf_counter()) and not job.arrived
            job.failed.clear()
            c.systematic_grace = 1.0
            assert not job._decide_landed(time.perf_counter()) and not job.arrived
            c.systematic_grace = 0.0
            assert job._decide_landed(time.perf_counter()) and job.done()
            np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)

            job = c.submit(A, B, code=code)
            _, land, got = job._land
            tasks = code.encode(A, B)
            for w in range(4):
                land[w], got[1 + w] = tasks[w].compute(), w
            got[0] = 4
            land[2][0, 0] = np.nan
            assert not job._decide_landed(time.perf_counter()) and not job.done()
            assert not job.arrived and job._land_taken == 0 and not job.latency
            c._landed = job
            c._poll = lambda wait=0.0, want=1, job=None: []
            c._pump()   # the general booking: its decode refuses the NaN, it waits for more
            assert sorted(job.arrived) == [0, 1, 2, 3] and job._retrying and not job.done()
            assert "non-finite (workers [2])" in job._last_decode, job._last_decode
    finally:
        _close_fast(c)


def test_a_landing_decided_in_one_step_holds_its_cancels_past_a_done_callback_that_pumps():
    """The one-step decision holds its cancels until the settle's done-callbacks have run,
    as the pump's booking does: a callback that pumps and books another of the job's
    results (late) leaves that worker without a cancel; the others owed get theirs once."""
    rng = np.random.default_rng(13)
    A, B = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    code = MDSCode(N, 2)
    tasks = code.encode(A, B)
    c = LocalCluster(N, faults=FailSilent(range(1, N + 1)), timeout=20)   # nobody answers
    c._lands = True
    cancels: list[tuple[int, int]] = []
    c._cancel = lambda w, jid: cancels.append((w, jid))
    try:
        with c._lock:
            job = c.submit(A, B, code=code)
            _, land, got = job._land
            for w in (0, 1):
                land[w], got[1 + w] = tasks[w].compute(), w
            got[0] = 2

            def pumps(f):   # a done-callback whose pump books worker 2's result
                c._booked.append((f, 2, tasks[2].compute(), time.perf_counter()))
                c._poll = lambda wait=0.0, want=1, job=None: []
                c._pump()

            job.add_done_callback(pumps)
            assert job._decide_landed(time.perf_counter())
            assert job.late == {2}
            assert sorted(w for w, j in cancels if j == job.id) == [3, 4, 5]
        np.testing.assert_allclose(job.result(), A @ B, rtol=1e-12, atol=1e-12)
    finally:
        _close_fast(c)
