"""The MPI runtime under a real mpiexec, launched from pytest (each run in its own process
group with a timeout; nothing may hang). Needs mpi4py and Open MPI from PyPI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from _mpirun import MPIEXEC, needs_mpiexec, open_mpi, scenario_runner

pytest.importorskip("mpi4py")

HERE = Path(__file__).parent
SCRIPT = HERE / "mpi_scenarios.py"
pytestmark = needs_mpiexec
run_mpi = scenario_runner(SCRIPT)


def run_mpi_t(scenario: str, np_: int, transport: str, **kw):
    """A scenario on the given ``transport`` of MPICluster."""
    from _mpirun import run_mpi as run

    return run(SCRIPT, np_, scenario, transport, **kw)


def _all_exited(done: subprocess.CompletedProcess, np_: int, dead: int = 0) -> None:
    exits = [l for l in done.stdout.splitlines() if l.endswith(" exit")]
    assert len(exits) == np_ - dead, done.stdout


@pytest.mark.parametrize("np_", [3, 5, 8])
def test_stragglers_are_not_waited_for(np_):
    res, done = run_mpi("stragglers", np_)
    assert done.returncode == 0, done.stderr
    for job in res["jobs"]:
        assert job["err"] < 1e-12
        assert job["status"]["1"] in ("late", "missing")  # the 3 s straggler was not waited for
        assert job["wall"] < 3.0
    _all_exited(done, np_)


@pytest.mark.parametrize("np_", [4, 6])
def test_fail_silent_worker_costs_only_its_share(np_):
    res, done = run_mpi("fail_silent", np_)
    assert done.returncode == 0, done.stderr
    last = str(np_ - 1)
    assert all(j["err"] < 1e-12 for j in res["jobs"])
    assert all(j["status"][last] == "missing" for j in res["jobs"][1:])


@pytest.mark.skipif(MPIEXEC is not None and not open_mpi(), reason="real crashes survive only under Open MPI ULFM")
def test_real_crash_survives_under_ulfm():
    res, done = run_mpi("die", 5, ft=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(j["err"] < 1e-12 for j in res["jobs"])
    assert any(j["status"]["2"] == "crashed" for j in res["jobs"][1:]), res["jobs"]
    _all_exited(done, 5, dead=1)


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_call_survives_a_worker_dying_in_it(transport):
    """A worker SIGKILLed inside a call's handler (ULFM) while the root waits for the call's
    replies (on the compiled path gathering several per poll): the call settles with the
    others' results and the dead worker named "crashed"; the next call goes to the living."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    if not open_mpi():
        pytest.skip("real crashes survive only under Open MPI ULFM")
    res, done = run_mpi_t("call_die", 5, transport, ft=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["warm"] == [0, 1, 2, 3]
    assert res["answered"] == [0, 2, 3] and res["exact"], res
    assert res["failed"] == {"1": "crashed"}, res
    assert res["after"] == [0, 2, 3] and res["dead"] == [1]
    _all_exited(done, 5, dead=1)


@pytest.mark.parametrize("np_", [5, 8])
def test_soft_errors_located(np_):
    res, done = run_mpi("soft_errors", np_)
    assert done.returncode == 0, done.stderr
    assert [j["faulty"] for j in res["jobs"]] == [[1], [2], [1]]
    assert all(j["err"] < 1e-12 for j in res["jobs"])


def test_more_faults_than_tolerated_raise_naming_ranks():
    res, done = run_mpi("too_many", 5, timeout=60)
    assert done.returncode == 0, done.stderr
    assert res["error"] == "DeadlineError"  # a NotEnoughResultsError: the deadline passed first
    assert "ranks [1, 2, 3]" in res["message"]
    assert res["wall"] < 10
    _all_exited(done, 5)


def test_late_results_never_confused_with_later_jobs():
    res, done = run_mpi("late", 4)
    assert done.returncode == 0
    assert all(j["err"] < 1e-12 for j in res["jobs"])


def test_bad_input_reports_and_cluster_survives():
    res, done = run_mpi("bad_input", 4)
    assert done.returncode == 0, done.stderr
    m = res["messages"]
    assert "workers=3" in m[0] and "ConfigurationError" in m[0]
    assert "inner dimensions" in m[1]
    assert "unencoded" in m[2]
    assert res["err"] < 1e-12


def test_resident_operand_and_in_place_update():
    res, done = run_mpi("resident", 4)
    assert done.returncode == 0
    assert max(res["err"]) < 1e-12


@pytest.mark.parametrize("np_", [4, 8])
def test_workers_compute_compensated_products_when_asked(np_):
    res, done = run_mpi("compensated", np_)
    assert done.returncode == 0, done.stderr
    assert res["compensated"] == {"same": True, "err": res["compensated"]["err"], "flag": True}
    assert res["float64"]["same"] and not res["float64"]["flag"]
    assert res["compensated"]["err"] < 1e-13
    assert res["resident_flag"] is False  # a small code: auto leaves plain products


def test_requests_nobody_waits_for_settle():
    """Futures settled by the progress thread alone (concurrent.futures.wait, callbacks),
    also while another thread drives progress: each within seconds, far before the 30 s
    deadline, with the right product."""
    res, done = run_mpi("unwaited", 3)
    assert done.returncode == 0, done.stderr
    for key in ("alone", "callback", "beside_driver"):
        assert res[key] and all(t is not None and t < 5.0 for t in res[key]), (key, res[key])
    assert max(res["errors"]) < 1e-10
    assert res["outstanding"]["jobs"] == 0


def test_soak_no_growth():
    res, done = run_mpi("soak", 5, timeout=300)
    assert done.returncode == 0, done.stderr
    first, last = res["marks"]
    assert res["worst"] < 1e-10
    assert res["refused"] < 30  # 2 corrupt of 4 (p ~ 0.2%/job) is refused, never returned wrong
    assert last["header_receives"] <= 4 and last["outgoing"] <= first["outgoing"] + 8
    assert last["jobs"] <= 64
    assert last["mem"] < first["mem"] + 2_000_000, res["marks"]


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_corrupt_reply_header_fails_only_its_worker(transport):
    """A worker whose reply header is garbage is recorded (protocol_errors, named by the
    header's defect) and treated as failed; the job decodes from the others."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    if not open_mpi():  # the bad worker leaves early: only ULFM lets the job go on
        pytest.skip("a rank that leaves early ends the job except under Open MPI ULFM")
    res, done = run_mpi_t("rogue", 5, transport, ft=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == transport
    assert res["err"] < 1e-12
    assert res["dead"] == [0]
    assert res["protocol_errors"][0][0] == 0 and "magic" in res["protocol_errors"][0][1]
    _all_exited(done, 5)


@pytest.mark.parametrize("scenario,np_", [("stragglers", 5), ("soft_errors", 5), ("late", 4),
                                          ("unwaited", 4), ("bad_input", 4), ("die", 5)])
def test_python_transport_scenarios(scenario, np_):
    """The Python per-message path (``transport="python"``), which runs where the compiled
    one is not built: the same scenarios, the same outcomes."""
    if scenario == "die" and not open_mpi():
        pytest.skip("real crashes survive only under Open MPI ULFM")
    res, done = run_mpi_t(scenario, np_, "python", ft=scenario == "die")
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == "python"
    if scenario == "die":
        assert all(j["err"] < 1e-12 for j in res["jobs"])
        assert any(j["status"]["2"] == "crashed" for j in res["jobs"][1:]), res["jobs"]
        _all_exited(done, np_, dead=1)
        return
    if scenario in ("stragglers", "late"):
        assert all(j["err"] < 1e-12 for j in res["jobs"])
        assert all(j["wall"] < 3.0 for j in res["jobs"])
    elif scenario == "soft_errors":
        assert [j["faulty"] for j in res["jobs"]] == [[1], [2], [1]]
    elif scenario == "unwaited":
        assert None not in res["alone"] + res["callback"] + res["beside_driver"]
        assert max(res["errors"]) < 1e-12
    else:
        assert res["err"] < 1e-12 and all(m is not None for m in res["messages"][:2])
    _all_exited(done, np_)


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_small_products_are_computed_in_c_on_the_compiled_worker_loop(transport):
    """A compiled numpy-backend worker computes a plain float64 product of at most
    ``SMALL_PRODUCT_MACS`` multiply-adds itself (``_wire``'s ``small_product``): every entry
    the sum of its rounded products in order from 0, bit for bit (a matrix, a vector, the
    limit, a single row), without calling ``plain_product``; a product past the limit and a
    float32 one go to numpy as before, and on the Python loop every product does. Each decoded
    product is ``A @ B`` within 1e-14 (float32: 1e-6)."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    res, done = run_mpi_t("small_products", 4, transport)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == transport
    if transport == "compiled":
        assert all(res["same"].values()), res["same"]
    assert max(v for k, v in res["err"].items() if k != "float32") < 1e-14, res["err"]
    assert res["err"]["float32"] < 1e-6, res["err"]
    plain = res["expect_plain"] if transport == "compiled" else len(res["same"])
    for w, (n_plain, _) in res["counts"].items():
        assert n_plain == plain, (w, n_plain, plain, res["counts"])
    assert res["outstanding"]["jobs"] == 0
    _all_exited(done, 4)


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_products_answer_alike_on_either_worker_loop(transport):
    """A product of two sent arrays, which the compiled worker loop runs from C without a
    failure model (``WorkerState.plain_product``), decodes bitwise as the tasks' own
    ``np.matmul`` products do (float64, float32, a vector, MatDot's complex tasks, an empty
    product); a product that fails on the workers is a ``WorkerFailure`` naming the operation
    and the exception. The workers' counts say who ran the products: C alone (``handle`` never
    called) on the compiled path, ``handle`` on the Python one."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    res, done = run_mpi_t("products", 4, transport)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == transport
    assert res["same"] and all(res["same"].values()), res["same"]
    assert res["failure"] == {"error": "WorkerFailure", "op": "matmul",
                              "exc_type": "ValueError"}, res["failure"]
    # every worker ran every product that decoded (each code needs all three workers'
    # results: non-systematic MatDot, whose threshold is n); the failing product ends its job
    # at the first WorkerFailure, and the root then cancels it on the other workers, which may
    # drop it before they start it. So the last product ran on at least one worker.
    ok = res["products"] - 1
    for w, (plain, handle) in res["counts"].items():
        assert plain in (ok, ok + 1), (w, plain, ok)
        assert handle == (0 if transport == "compiled" else plain), (w, handle, plain)
    assert sum(plain for plain, _ in res["counts"].values()) > ok * len(res["counts"]), res["counts"]
    assert res["outstanding"]["jobs"] == 0
    _all_exited(done, 4)


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_writes_to_the_callers_arrays_after_a_request_returns_do_not_reach_the_workers(transport):
    """Real mpiexec, both transports: every worker naps on an earlier call while the root
    starts a ReplicationCode product, resident products (MDS and replication), a call
    (shared and per-worker arrays) and an update, all with arrays that are not inlined; the
    caller then overwrites every array with NaN. The workers must compute with what was
    passed: each request's sends read their own copies (or new memory from the encode)."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    res, done = run_mpi_t("mutate", 4, transport)
    assert done.returncode == 0, done.stderr[-2000:]
    assert max(res["errs"].values()) < 1e-12, res["errs"]
    assert res["same_call"] and res["same_per"], res
    assert res["acked"] == [0, 1, 2], res
    _all_exited(done, 4)


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_parity_products_yield_where_ranks_share_cores(transport):
    """4 ranks on this machine's 2 cores: every worker's node has more ranks than CPUs, so
    the cluster's parity products yield by default (``parity_nice`` 10). Each product
    records the nice value it ran at, above its process's, and whether on the worker's main
    thread: the parity worker's ran on a thread of their own at +10 (then at +19 when asked;
    at +0 on the main thread with ``parity_nice = 0``), the data workers' always on the main
    thread at +0; every product decodes right. Worker 0 is left out of every job, so the
    other two products are needed (none cancelled before it starts)."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    if (os.cpu_count() or 1) >= 4:
        pytest.skip(f"4 ranks do not outnumber this machine's {os.cpu_count()} CPUs")
    res, done = run_mpi_t("yield", 4, transport)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["default"] == 10 and res["crowded"] == [0, 1, 2], res
    assert max(res["errs"]) < 1e-12, res["errs"]
    assert res["data"] == [0, 1]
    # per product: nice above the process's, the process's nice, on the main thread
    rows = {w: [tuple(rec[i:i + 3]) for i in range(0, len(rec), 3)] for w, rec in res["nices"].items()}
    base = rows["1"][0][1]   # the ranks' own nice value (0 unless mpiexec itself ran lowered)

    def low(n):
        return float(min(19, base + n) - base)

    assert rows == {"0": [], "1": [(0.0, base, 1.0)] * 4,
                    "2": [(low(10), base, 0.0), (low(10), base, 0.0), (0.0, base, 1.0),
                          (low(19), base, 0.0)]}, rows
    _all_exited(done, 4)


@pytest.mark.parametrize("transport", ["compiled", "python"])
def test_repeated_calls_answer_as_the_first(transport):
    """A call repeated with the same parameters (on the compiled path run from arrival to reply
    in C, ``_wire.Worker.serve``) answers exactly as the first, which Python read: arrays of
    every wire dtype and shape, ``None`` (an empty float64 array), a 0-d result (1-d), a list,
    a strided view, bytes and a dtype that cannot travel (named errors), an ndarray subclass
    and a handler's exception
    (``WorkerFailure`` naming the exception, with the handler in its remote traceback)."""
    from codedml.runtime.mpi import wire_status

    if transport == "compiled" and not wire_status()[0]:
        pytest.skip(wire_status()[1])
    res, done = run_mpi_t("calls", 4, transport)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == transport
    # who ran each repetition: Python for the first (and always on the Python path), then
    # the compiled loop, with parameters or without
    paths = [c["paths"] for c in res["calls"] if c["handler"] == "path"]
    assert paths == [[[1.0], [2.0], [2.0]] if transport == "compiled" else [[1.0]] * 3] * 2, paths
    got = {c["handler"] + str(i): c["reps"] for i, c in enumerate(res["calls"])
           if c["handler"] != "path"}
    for key, reps in got.items():
        assert reps[1] == reps[0] and reps[2] == reps[0], (key, reps)
    first = {k: v[0] for k, v in got.items()}
    assert first["echo0"]["0"] == ["float64", [5], [0.0, 1.0, 2.0, 3.0, 4.0]]
    assert first["echo1"]["1"][:2] == ["float32", [6]]
    assert first["echo2"]["2"] == ["int64", [2, 2], [[0, 1], [2, 3]]]
    assert first["echo3"]["0"] == ["complex128", [1], ["(1+2j)"]]
    assert first["echo4"]["0"] == ["bool", [2], [True, False]]
    assert first["echo5"]["0"] == ["float64", [0, 3], []]
    assert first["scaled6"]["1"] == ["float64", [3], [2.5, 2.5, 2.5]]
    assert first["none7"]["0"] == ["float64", [0], []]
    assert first["scalar8"]["0"] == ["float64", [1], [3.0]]
    assert first["listy9"]["2"] == ["float64", [2], [2.0, 2.0]]
    assert first["strided10"]["0"] == ["float64", [4], [0.0, 2.0, 4.0, 6.0]]
    assert first["int1611"]["error"] == "WorkerFailure" and "int16" in first["int1611"]["message"]
    assert first["bytes12"]["error"] == "WorkerFailure" and "cannot travel" in first["bytes12"]["message"]
    assert first["matrix13"]["1"] == ["float64", [1, 3], [[0.0, 1.0, 2.0]]]
    boom = first["boom14"]
    assert boom["error"] == "WorkerFailure" and boom["exc_type"] == "ValueError"
    assert boom["message"] == "ValueError: boom 3" and boom["traceback_names_handler"]
    assert res["outstanding"]["jobs"] == 0
    _all_exited(done, 4)


def test_small_payloads_travel_inline():
    """On the compiled path a request's arrays of at most INLINE_MAX bytes in all travel in
    its control message, and a reply's payload of at most INLINE_MAX bytes in its header's
    message: at the bound and past it, in one array or two, each way, calls come back exact,
    and the root's counters show which went inline (a reply of 0 bytes never does).
    Per-worker arrays (``per_worker``, a job's tasks) reach their own workers whether they
    share a layout (one compiled call for all) or not, and the engine refuses a wrong
    number of lists or of arrays by name before sending anything. The
    engines yield the core in their polls only where MPI does not (read without changing
    MPI's thread level)."""
    from codedml.runtime.mpi import wire_status

    if not wire_status()[0]:
        pytest.skip(wire_status()[1])
    res, done = run_mpi_t("inline", 4, "compiled")
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(res["exact"].values()), res["exact"]
    n = 3  # workers: [requests sent inline, replies received inline] at the root, per call
    assert res["counts"] == {"empty": [n, 0], "one": [n, n], "at": [n, n], "past": [0, 0],
                             "split_at": [n, n], "split_past": [0, 0]}, res["counts"]
    assert res["err"] < 1e-12 and res["total"][0] >= 4 * n + n  # the product's tasks too
    # per-worker arrays reach their own workers, of one layout (one compiled call) or not
    assert res["each"] == {"same": True, "shapes": True, "after": True}, res["each"]
    # one layout: one compiled call for all, no single sends; shapes that differ: one each
    assert res["singles"] == {"same": 0, "shapes": n}, res["singles"]
    assert "one list per worker listed (2), got 1" in res["refusals"][0], res["refusals"]
    assert "as many arrays" in res["refusals"][1] and "1 and 2" in res["refusals"][1], res["refusals"]
    assert res["protocol_errors"] == 0
    assert res["outstanding"]["jobs"] == 0
    # 4 ranks on this machine's cores: Open MPI yields in its own polls when oversubscribed,
    # and the engines then do not yield again; reading that left MPI's thread level alone
    assert res["level"][1] == res["level"][0], res["level"]
    if open_mpi() and len(os.sched_getaffinity(0)) < 4:
        assert res["yields"] is True and res["spin_yield"] is False
    _all_exited(done, 4)


def test_small_jobs_go_out_stacked_and_land_in_c():
    """A small job's tasks go out in one compiled call (``request_stack``: each worker's task
    and B inline after control bytes whose job id the engine writes), and the compiled poll
    lands the results of the job a caller waits for in its buffers (``hot``): every result
    exact in its worker's slot, also behind another request's reply in the same poll (a
    poll takes one reply a worker: that reply is another worker's); none from a worker
    landed already, none of another shape, none once got is full (each an event instead);
    bad arguments refused by name before any send or wait; a task and B that do not fit one
    message declined (nothing sent, the job sent as before); small jobs through the cluster
    decode right with their results landed, most of them decided in one step."""
    from codedml.runtime.mpi import wire_status

    if not wire_status()[0]:
        pytest.skip(wire_status()[1])
    np_ = 5
    n = np_ - 1
    res, done = run_mpi_t("landing", np_, "compiled")
    assert done.returncode == 0, done.stderr[-2000:]
    out = res["out"]
    assert out["all"]["err"] < 1e-14, out   # each result in its own worker's slot
    assert {k: out["all"][k] for k in ("events", "got", "workers")} == \
        {"events": 0, "got": n, "workers": list(range(n))}, out
    # worker 0's reply to another job comes first in the poll (index order): an event, and
    # the other workers' results of the job land all the same
    assert out["behind"] == {"events": [[0, 10 ** 9 + 2]], "got": n - 1}, out
    # a worker in got already: its reply an event, the others land
    assert out["again"] == {"events": [0], "got": n}, out
    assert out["shape"] == {"events": n, "got": 0}, out
    assert out["full"] == {"events": n, "got": n, "untouched": True}, out
    bad = res["bad"]
    assert "`ctrl` must be a request's control bytes" in bad["short ctrl"], bad
    assert "`ctrl` must leave flag bit 3 (inline arrays) clear, got flags 0x8" in \
        bad["ctrl inline flag"], bad
    assert "`hot` must be a tuple (job, landing, got), got list of 3 items" in bad["hot list"], bad
    assert "no task for worker" in bad["no task"], bad
    assert "`tasks` must be a C-contiguous array" in bad["not a buffer"], bad
    assert "`job` must be at least -1, got -2" in bad["job"], bad
    assert "`landing` must be a float64 array" in bad["landing dtype"], bad
    assert "got format 'f' with 3 dimension(s)" in bad["landing dtype"], bad
    assert "`got` must be an int64 array of at least" in bad["got short"], bad
    assert f"got format 'l', {8 * n} bytes" in bad["got short"], bad
    assert "`got[0]` must be from 0 to" in bad["got count"], bad
    assert "`landing` must be a C-contiguous writable array" in bad["landing read-only"], bad
    assert res["errs"] < 1e-12
    # past INLINE_MAX or the engine's piece size: declined (None), and a job goes out as before
    assert res["declined"] == [None, None] and res["chunked"] < 1e-12, res
    # parity products that yield: the data workers' requests stacked, the parity worker's
    # request with its `nice` parameter (not the stacked path's kept form without it)
    assert res["yielded"] < 1e-12 and res["sends"] == [
        ["stack", list(range(n - 1)), {}], ["many", [n - 1], {"nice": 10}]], res["sends"]
    # each job waited for its results: some landed (how many came before the job decided
    # varies), never more than its workers
    assert all(0 <= k <= n for k in res["landed"]) and sum(res["landed"]) > 0, res["landed"]
    # most of them decided in one step where their results landed (Job._decide_landed: a
    # caller's poll that brought only those and other jobs' late replies), every report
    # naming the k used workers its decode info names
    assert res["decided"] > 0 and res["reports"], res
    assert res["protocol_errors"] == 0 and res["outstanding"]["jobs"] == 0
    _all_exited(done, np_)


def test_python_worker_reads_inline_arrays():
    """The Python worker loop takes a request whose arrays ride in its control message (the
    compiled root's form) as it takes one with arrays of their own: every array exact, of its
    dtype and shape, an empty one included."""
    res, done = run_mpi_t("python_inline", 3, "python")
    assert done.returncode == 0, done.stderr[-2000:]
    want = [10.0, 1.0, 5.0, 8.0, 15.0, 2.0, 2.0, 3.0, 4.0, 0.0, 2.0, 0.0, 2.0, 8.0, 7.0, 1.0, 1.0,
            8.0]
    assert res["got"] == {"0": want, "1": want}, res["got"]
    assert res["outstanding"]["jobs"] == 0
    _all_exited(done, 3)


def test_default_transport_is_compiled_where_built():
    from codedml.runtime.mpi import wire_status

    res, done = run_mpi("soft_errors", 4)
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == ("compiled" if wire_status()[0] else "python")


def test_messages_longer_than_a_piece_travel_in_pieces():
    """The compiled path sends a message longer than its piece size (1 GiB; 1000 bytes in
    this scenario, on every rank) as consecutive pieces: products, stored blocks and calls
    come back exact."""
    from codedml.runtime.mpi import wire_status

    if not wire_status()[0]:
        pytest.skip(wire_status()[1])
    res, done = run_mpi_t("chunked", 4, "compiled")
    assert done.returncode == 0, done.stderr[-2000:]
    assert res["transport"] == "compiled"
    assert max(res["err"]) < 1e-12 and res["echo"] is True
    assert res["split"] >= 3 * 4  # the root split its tasks, blocks and the call's array
    assert res["outstanding"]["jobs"] == 0
