"""Scenarios run under a real mpiexec by tests/test_mpi.py:
`mpiexec -n N python this.py NAME [TRANSPORT]` (MPICluster's ``transport``, default "auto").

The root prints one JSON line starting with RESULT: that the test parses (with the transport
the cluster used). Written to pass at any world size >= 3 (the codes are sized from the number
of workers).
"""

import json
import sys
import time
import tracemalloc

import numpy as np
from mpi4py import MPI

from codedml import MPICluster
from codedml.codes import MDSCode, PolynomialCode
from codedml.errors import CodedMLError
from codedml.faults import (Corruption, Die, FailSilent, Fault, FixedStragglers, Schedule,
                            SoftErrors)

name = sys.argv[1]
transport = sys.argv[2] if len(sys.argv) > 2 else "auto"
used: list[str] = []
comm = MPI.COMM_WORLD
LEVEL = MPI.Query_thread()  # before the cluster reads MPI's tool interface (mpi_yields)
n = comm.Get_size() - 1
rng = np.random.default_rng(0)
A = rng.standard_normal((120, 60))
B = rng.standard_normal((60, 30))


def rel(C, ref):
    return float(np.linalg.norm(C - ref) / np.linalg.norm(ref))


def _statuses_of(job) -> dict[int, str]:
    return {w.worker: w.status for w in job.report.workers}


def emit(**kw):
    print("RESULT:" + json.dumps(dict(kw, transport=used[0])), flush=True)


faults = None
if name == "stragglers":
    faults = FixedStragglers([1], 3.0)  # rank 1 is slow by 3 s on every job
elif name == "fail_silent":
    faults = FailSilent([n], start=1)  # the last rank stops answering from job 1 on
elif name == "die":
    faults = Die([2], at=1)  # rank 2 SIGKILLs itself at job 1 (needs ULFM)
elif name == "soft_errors":
    faults = Schedule({0: {1: Fault(corruptions=(Corruption("exponent"),))},
                       1: {2: Fault(corruptions=(Corruption("nan"),))},
                       2: {1: Fault(corruptions=(Corruption("scale", -1.0),))}})
elif name == "too_many":
    faults = FailSilent(range(1, n), start=0)  # only one worker answers
elif name == "late":
    faults = FixedStragglers([1], 0.4)
elif name == "soak":
    faults = FixedStragglers([1], 0.01) + SoftErrors("exponent", 0.02)

# every rank, before the cluster: who ran each product (the "products" scenario): WorkerState's
# plain_product, called from C by the compiled loop or from handle() by the Python one
PATHS = {"plain": 0, "handle": 0}
if name in ("products", "small_products"):
    from codedml.runtime._worker import WorkerState

    _plain, _handle = WorkerState.plain_product, WorkerState.handle

    def _count_plain(self, a, b):
        PATHS["plain"] += 1
        return _plain(self, a, b)

    def _count_handle(self, req, arrays):
        PATHS["handle"] += req.op.name == "MATMUL"
        return _handle(self, req, arrays)

    WorkerState.plain_product, WorkerState.handle = _count_plain, _count_handle

# every rank, before the cluster: at what nice value, on which thread, each product ran (the
# "yield" scenario: parity products on a thread of their own, lower by cluster.parity_nice)
NICES: list[float] = []
if name == "yield":
    import os
    import threading

    from codedml.runtime._worker import WorkerState

    _plain_y = WorkerState.plain_product
    _base = os.getpriority(os.PRIO_PROCESS, 0)

    def _record(self, a, b):
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        NICES.extend([float(mine - _base), float(_base),
                      1.0 if threading.current_thread() is threading.main_thread() else 0.0])
        return _plain_y(self, a, b)

    WorkerState.plain_product = _record

if name == "chunked":  # every rank, before the cluster: messages travel in 1000-byte pieces
    from codedml.runtime import _wire

    _wire.set_chunk(1000)


def _boom(ctx, x, k=0, **_):
    raise ValueError(f"boom {k}")


# handlers of the "calls" scenario: every kind of return a handler may give
HANDLERS = {
    "echo": lambda ctx, x, **_: x,
    "scaled": lambda ctx, x, scale=1.0, **_: x * scale,
    "none": lambda ctx, x, **_: None,
    "scalar": lambda ctx, x, **_: np.float64(x.sum()),
    "listy": lambda ctx, x, **_: [float(ctx.worker), 2.0],
    "strided": lambda ctx, x, **_: x[::2],
    "int16": lambda ctx, x, **_: x.astype(np.int16),
    "bytes": lambda ctx, x, **_: b"\x01\x02",   # a buffer, but not an array: numpy's rules
    "matrix": lambda ctx, x, **_: np.asmatrix(x),  # an ndarray subclass
    "boom": _boom,
    "cat": lambda ctx, *xs, **_: np.concatenate(xs),
    "nap": lambda ctx, x, **_: (time.sleep(float(x[0])), x)[1],
    # what arrived: each array's total, dtype code and shape, flattened
    "shapes": lambda ctx, *xs, **_: np.array([v for x in xs for v in (
        float(x.sum()), float(len(x.shape)), *map(float, x.shape), float(x.dtype.itemsize))]),
    # worker 1 dies in it (SIGKILL: the "call_die" scenario, under ULFM); the others answer,
    # the last a moment later, so that a wait for several replies sees some, then the death
    "die_on_1": lambda ctx, x, **_: (__import__("os").kill(__import__("os").getpid(), 9)
                                     if ctx.worker == 1 else time.sleep(0.02 * ctx.worker) or x),
    # 1 where Python's WorkerState.call ran the handler, 2 where the compiled loop did
    "path": lambda ctx, x, **_: np.array([1.0 if sys._getframe(1).f_code.co_name == "call" else 2.0]),
    # the "products" scenario's counts on this worker
    "paths": lambda ctx, x, **_: np.array([float(PATHS["plain"]), float(PATHS["handle"])]),
    # the "yield" scenario's records on this worker: (nice above the process's, the
    # process's nice, main thread?)
    "nices": lambda ctx, x, **_: np.array(NICES, dtype=float),
}
cm = MPICluster(comm, faults=faults, seed=7, timeout=30, transport=transport,
                handlers=HANDLERS)
used.append(cm.transport_used)
if name == "rogue" and comm.Get_rank() == 1:
    # A worker whose reply header is garbage: it reads the request (and its arrays) like a
    # worker, then answers with a header of the wrong magic and leaves. The root must record
    # a protocol error, treat the worker as failed and decode without it.
    from codedml.runtime._exit import skip_finalize_at_exit
    from codedml.runtime.mpi import TAG_CTRL, TAG_HDR, TAG_TASK
    from codedml.runtime.protocol import DTYPES, HEADER_LEN, Request

    st = MPI.Status()
    cm.comm.Probe(source=0, tag=TAG_CTRL, status=st)
    raw = np.empty(st.Get_count(MPI.BYTE), dtype=np.uint8)
    cm.comm.Recv([raw, MPI.BYTE], source=0, tag=TAG_CTRL)
    for shape, code in Request.from_bytes(raw).arrays if not raw[5] & 8 else ():  # 8: inline
        buf = np.empty(shape, dtype=DTYPES[code])
        cm.comm.Recv([buf, MPI.BYTE], source=0, tag=TAG_TASK)
    bad = np.zeros(HEADER_LEN, dtype=np.int64)
    bad[0] = 0xBAD
    cm.comm.Send([bad, MPI.BYTE], dest=0, tag=TAG_HDR)
    skip_finalize_at_exit()  # a failed rank, as far as the others know
    print(f"rank {comm.Get_rank()} exit", flush=True)
    sys.exit(0)
with cm as cluster:
    if cluster is not None:
        k = max(1, n - 2)
        code = MDSCode(n, k)
        if name in ("stragglers", "fail_silent", "die", "late"):
            out, jobs = [], []
            for j in range(4):
                Bj = B + j  # a different product per job: a late result can't pass for a new one
                t = time.perf_counter()
                job = cluster.submit(A, Bj, code=code)
                C = job.result()
                jobs.append(job)
                out.append({"job": j, "err": rel(C, A @ Bj), "wall": time.perf_counter() - t,
                            "status": {w.rank: w.status for w in job.report.workers}})
                if name == "late":
                    time.sleep(0.05)
            cluster.drain(3.0 if name == "die" else 1.0)
            out = [dict(o, status={w.rank: w.status for w in job.report.workers})
                   for o, job in zip(out, jobs)] if name == "die" else out
            emit(jobs=out, outstanding=cluster.outstanding())
        elif name == "soft_errors":
            code = MDSCode(n, max(1, n - 2))
            out = []
            for j in range(3):
                job = cluster.submit(A, B, code=code, errors=1)
                C = job.result()
                out.append({"job": j, "err": rel(C, A @ B), "faulty": [cluster.rank_of(w) for w in job.report.faulty]})
            emit(jobs=out)
        elif name == "too_many":
            t = time.perf_counter()
            try:
                cluster.matmul(A, B, code=code, timeout=2.0)
                emit(error=None)
            except CodedMLError as exc:
                emit(error=type(exc).__name__, message=str(exc), wall=time.perf_counter() - t)
        elif name == "bad_input":
            msgs = []
            for call in (lambda: cluster.matmul(A, B, code=MDSCode(n + 1, 1)),
                         lambda: cluster.matmul(A, B[:5], code=code),
                         lambda: cluster.put(A, code=PolynomialCode(n, 1, 2)) if n >= 2 else None):
                try:
                    call()
                    msgs.append(None)
                except CodedMLError as exc:
                    msgs.append(f"{type(exc).__name__}: {exc}")
            C = cluster.matmul(A, B, code=code)  # the cluster still works afterwards
            emit(messages=msgs, err=rel(C, A @ B))
        elif name == "resident":
            h = cluster.put(A, code=code)
            x = rng.standard_normal(60)
            e1 = rel(cluster.matmul(h, x), A @ x)
            U, V = rng.standard_normal((120, 2)), rng.standard_normal((60, 2))
            h = cluster.update(h, U, V)
            e2 = rel(cluster.matmul(h, x), (A + U @ V.T) @ x)
            emit(err=[e1, e2])
        elif name == "compensated":
            # Workers compute what the root asked: the decode from the results they sent equals,
            # bit for bit, the decode from Task.compute() (compensated) on the same workers.
            code = MDSCode(n, max(1, n - 2))
            out = {}
            for prec in ("compensated", "float64"):
                job = cluster.submit(A, B, code=code, precision=prec)
                C = job.result()
                used = [w.worker for w in job.report.workers if w.status == "used"]
                enc = code.encode(A, B, precision=prec)
                ref = code.decode({w: enc[w].compute() for w in used}, encoding=enc)
                out[prec] = {"same": bool(np.array_equal(C, ref)), "err": rel(C, A @ B),
                             "flag": enc.compensated}
            h = cluster.put(A, code=code)
            out["resident_flag"] = h.compensated
            emit(**out)
        elif name == "unwaited":
            # Requests nobody calls result() on: the progress thread must route their replies,
            # whether it was parked (nothing pending) or a caller was driving progress.
            import concurrent.futures as cf
            import threading

            out = {"alone": [], "callback": [], "beside_driver": [], "errors": []}
            for j in range(3):
                t = time.perf_counter()
                job = cluster.submit(A, B + j, code=code)
                done, _ = cf.wait([job], timeout=10)
                out["alone"].append(time.perf_counter() - t if done else None)
                out["errors"].append(rel(job.result(), A @ (B + j)))
                time.sleep(0.3)  # the progress thread parks again
            ev = threading.Event()
            t = time.perf_counter()
            job = cluster.submit(A, B, code=code)
            job.add_done_callback(lambda f: ev.set())
            out["callback"].append(time.perf_counter() - t if ev.wait(10) else None)
            stop = threading.Event()

            def drive():  # a caller that pumps progress itself, without pause
                while not stop.is_set():
                    cluster.matmul(A, B, code=code)

            th = threading.Thread(target=drive)
            th.start()
            for j in range(10):
                time.sleep(0.01)
                t = time.perf_counter()
                job = cluster.submit(A, B - j, code=code)
                done, _ = cf.wait([job], timeout=10)
                out["beside_driver"].append(time.perf_counter() - t if done else None)
                out["errors"].append(rel(job.result(), A @ (B - j)))
            stop.set()
            th.join()
            emit(**out, outstanding=cluster.outstanding())
        elif name == "chunked":
            code = MDSCode(n, max(1, n - 2))
            C = cluster.matmul(A, B, code=code)
            h = cluster.put(A, code=code)
            x = rng.standard_normal(60)
            e2 = rel(cluster.matmul(h, x), A @ x)
            big = rng.standard_normal(3001)  # 24 KB: 25 pieces each way
            echoed = cluster.call("echo", big).result()
            emit(err=[rel(C, A @ B), e2], echo=len(echoed) == n and all(
                np.array_equal(v, big) for v in echoed.values()), outstanding=cluster.outstanding(),
                split=_wire.split_messages())
        elif name == "products":
            # products of two sent arrays, which the compiled loop runs from C (plain_product):
            # every decoded product bitwise the decode of the tasks' np.matmul products (codes
            # that need every worker's result, so the decode is the same), then a product
            # that fails on the workers (inner dimensions that disagree), named. MatDot is
            # the non-systematic form: systematic MatDot (the default) decodes from its m data
            # workers alone, and the root then cancels the parity worker's task, which that
            # worker may skip (seen: one worker's count one short)
            from codedml.codes import MatDotCode, ReplicationCode
            from codedml.runtime.protocol import Op, Request

            rep = ReplicationCode(n, n)
            mat = MatDotCode(n, (n + 1) // 2, systematic=False)
            assert mat.recovery_threshold == n, (mat.recovery_threshold, n)
            # parity products alike (the default lowers them where ranks share cores, as here,
            # and their requests then carry a parameter the compiled loop leaves to Python)
            cluster.parity_nice = 0
            cases = {"float64": (rep, A, B, "auto"), "float32": (rep, A, B, "float32"),
                     "vector": (rep, A, B[:, 0], "auto"), "complex (MatDot)": (mat, A, B, "auto"),
                     "empty": (rep, A[:0], B, "auto")}
            same = {}
            for key, (c, X, Y, prec) in cases.items():
                for _ in range(2):
                    got = cluster.submit(X, Y, code=c, precision=prec).result()
                    enc = c.encode(X, Y, precision=prec)
                    ref = c.decode({w: np.matmul(t.a, t.b) for w, t in enumerate(enc)},
                                   encoding=enc)
                    same[key] = same.get(key, True) and bool(
                        got.dtype == ref.dtype and got.shape == ref.shape
                        and np.array_equal(got, ref))
            enc = rep.encode(A, B)
            with cluster._lock:
                bad = cluster._start(rep, enc, Request(Op.MATMUL, 0),
                                     [[t.a, t.b[:-1]] for t in enc], 0, 10.0, time.perf_counter())
            try:
                bad.result()
                failure = None
            except CodedMLError as exc:
                failure = {"error": type(exc).__name__, "op": getattr(exc, "op", None),
                           "exc_type": getattr(exc, "exc_type", None)}
            counts = {str(w): v.tolist() for w, v in cluster.call("paths", np.ones(1)).result().items()}
            emit(same=same, failure=failure, counts=counts, products=2 * len(cases) + 1,
                 outstanding=cluster.outstanding())
        elif name == "small_products":
            # plain float64 products of at most SMALL_PRODUCT_MACS multiply-adds, which a
            # compiled numpy-backend worker computes in C (no plain_product call): every entry
            # the sum of its rounded products in order from 0, bit for bit; larger ones,
            # float32 ones and those of the Python loop by numpy (plain_product). A systematic
            # code of k = n: every result a data result, so the decode is their assembly and
            # shows each worker's bits.
            from codedml.codes import ReplicationCode
            from codedml.runtime.mpi import SMALL_PRODUCT_MACS

            code = MDSCode(n, n, systematic=True)
            cluster.parity_nice = 0
            M = 4 * n        # each task's a: 4 x N (two rows per half-block)
            N = 32
            K = SMALL_PRODUCT_MACS // (4 * N)   # 4 x N @ N x K: exactly the limit
            cases = {"4x4": (4, 4, 4, np.float64, True), "vector": (M, 4, None, np.float64, True),
                     "limit": (M, N, K, np.float64, True),
                     "above": (M, N, K + 1, np.float64, False),
                     # under the limit, but the arrays (32 KiB) do not ride in the message
                     "not inline": (2 * n, 1024, SMALL_PRODUCT_MACS // 2048, np.float64, False),
                     "float32": (M, 4, 4, np.float32, False),
                     # each worker a single row of A (replication of n blocks: uncoded)
                     "one row": (n, 3, 2, np.float64, True)}
            rep = ReplicationCode(n, n)

            def ordered(a, b):   # the C loop's arithmetic, in numpy: rounded products, in order
                acc = np.zeros((a.shape[0],) + b.shape[1:])
                for l in range(a.shape[1]):
                    acc = acc + (a[:, l:l + 1] * b[l] if b.ndim == 2 else a[:, l] * b[l])
                return acc

            same, err, expect_plain = {}, {}, 0
            for key, (m_, k_, n_, dt, small) in cases.items():
                c = rep if key == "one row" else code
                X = rng.standard_normal((m_, k_)).astype(dt)
                Y = (rng.standard_normal((k_, n_)) if n_ else rng.standard_normal(k_)).astype(dt)
                got = cluster.submit(X, Y, code=c).result()
                enc = c.encode(X, Y)
                if key == "one row":
                    assert all(t.a.shape[0] == 1 for t in enc), [t.a.shape for t in enc]
                if small:
                    ref = c.decode({w: ordered(t.a, t.b) for w, t in enumerate(enc)},
                                   encoding=enc)
                else:
                    ref = c.decode({w: np.matmul(t.a, t.b) for w, t in enumerate(enc)},
                                   encoding=enc)
                    expect_plain += 1
                same[key] = bool(got.dtype == ref.dtype and got.shape == ref.shape
                                 and np.array_equal(got, ref))
                err[key] = rel(got, X.astype(np.float64) @ Y.astype(np.float64))
            counts = {str(w): v.tolist() for w, v in cluster.call("paths", np.ones(1)).result().items()}
            emit(same=same, err=err, counts=counts, expect_plain=expect_plain,
                 outstanding=cluster.outstanding())
        elif name == "yield":
            # ranks that outnumber the cores: parity products yield by default (10 nice values
            # on a thread of their own); data products run as before (on the compiled path
            # from C). Two jobs at the default, one with parity_nice = 0, one at 19.
            code = MDSCode(n, n - 1, systematic=True)
            default = cluster.parity_nice
            cluster.YIELD_MIN_MACS = 0  # these small products yield too
            # Worker 0 is left out of each job (as a stale worker would be), so the others'
            # products are all needed: none is cancelled before it starts.
            from codedml.runtime.protocol import Op, Request

            errs = []
            for nice in (default, default, 0, 19):
                cluster.parity_nice = nice
                enc = code.encode(A, B)
                with cluster._lock:
                    job = cluster._start(code, enc, Request(Op.MATMUL, 0),
                                         [[t.a, t.b] for t in enc], 0, 10.0, time.perf_counter(),
                                         skip=[0])
                errs.append(rel(job.result(), A @ B))
            nices = {str(w): v.tolist() for w, v in cluster.call("nices", np.ones(1)).result().items()}
            emit(default=default, crowded=sorted(cluster.crowded_workers), errs=errs, nices=nices,
                 data=list(code.systematic_workers))
        elif name == "mutate":
            # every worker naps 0.5 s on an earlier call while the root starts requests whose
            # arrays (512 KiB and more: not inlined, sent as the receiver asks) the caller then
            # overwrites: the workers must compute with what was passed
            from codedml.codes import ReplicationCode

            W = rng.standard_normal((256, 256))
            hm = cluster.put(W, code=MDSCode(n, k))
            hr = cluster.put(W, code=ReplicationCode(n, 2))
            hm.ack.result(), hr.ack.result()
            held = cluster.call("nap", np.array([0.5]))
            A2, B2, x = (rng.standard_normal((256, 256)), rng.standard_normal((256, 256)),
                         rng.standard_normal((256, 256)))
            xs = [rng.standard_normal(65536) for _ in range(n)]
            U, V = rng.standard_normal((256, 2)), rng.standard_normal((256, 2))
            ref = {"replication": A2 @ B2, "resident mds": W @ x, "resident rep": W @ x}
            keep = [v.copy() for v in (x, U, V, *xs)]
            jobs = {"replication": cluster.submit(A2, B2, code=ReplicationCode(n, 2)),
                    "resident mds": cluster.submit(hm, x), "resident rep": cluster.submit(hr, x)}
            call = cluster.call("echo", x)
            per = cluster.call("echo", per_worker=[[v] for v in xs])
            hm2 = cluster.update(hm, U, V)
            for arr in (A2, B2, x, U, V, *xs):
                arr[...] = np.nan
            held.result()
            errs = {name: rel(job.result(), ref[name]) for name, job in jobs.items()}
            same_call = all(np.array_equal(v, keep[0]) for v in call.result().values())
            same_per = all(np.array_equal(v, keep[3 + w]) for w, v in per.result().items())
            acked = list(hm2.ack.result().acked)
            errs["update"] = rel(cluster.fetch(hm2), W + keep[1] @ keep[2].T)
            emit(errs=errs, same_call=same_call, same_per=same_per, acked=acked)
        elif name == "calls":
            # each call three times with the same parameters: the first is read by Python
            # (which remembers its parameters), the others, on the compiled path, run in C
            # (_wire.Worker.serve): every repetition must give what the first gave
            cases = [("echo", np.arange(5.0), {}), ("echo", np.arange(6, dtype=np.float32), {}),
                     ("echo", np.arange(4).reshape(2, 2), {}), ("echo", np.array([1 + 2j]), {}),
                     ("echo", np.array([True, False]), {}), ("echo", np.zeros((0, 3)), {}),
                     ("scaled", np.ones(3), {"scale": 2.5}), ("none", np.ones(2), {}),
                     ("scalar", np.arange(3.0), {}), ("listy", np.ones(1), {}),
                     ("strided", np.arange(7.0), {}), ("int16", np.ones(2), {}),
                     ("bytes", np.ones(1), {}), ("matrix", np.arange(3.0), {}),
                     ("boom", np.ones(2), {"k": 3}), ("path", np.ones(1), {}),
                     ("path", np.ones(1), {"x1": 1})]
            out = []
            for h, x, prm in cases:
                if h == "path":   # who ran it: recorded per repetition, not compared
                    out.append({"handler": h, "paths": [sorted({float(v[0]) for v in cluster.call(
                        h, x, params=prm or None).wait().values()}) for _ in range(3)]})
                    continue
                reps = []
                for _ in range(3):
                    try:
                        got = cluster.call(h, x, params=prm or None).wait()
                        reps.append({str(w): [str(v.dtype), list(v.shape), np.asarray(v).tolist()
                                              if v.dtype.kind != "c" else [str(c) for c in v.ravel()]]
                                     for w, v in sorted(got.items())})
                    except CodedMLError as exc:
                        reps.append({"error": type(exc).__name__, "exc_type": getattr(exc, "exc_type", None),
                                     "message": str(exc).split(" raised ", 1)[-1].split(" (rank")[0],
                                     "traceback_names_handler": "_boom" in (getattr(exc, "remote_traceback", "") or "")})
                out.append({"handler": h, "reps": reps})
            emit(calls=out, outstanding=cluster.outstanding())
        elif name == "inline":
            # payloads at and past the inline bound, both ways: a request's arrays ride in
            # its control message when they hold at most INLINE_MAX bytes in all, a reply's
            # in its header's message when it holds at most INLINE_MAX bytes
            from codedml.runtime import _wire
            from codedml.runtime.protocol import INLINE_MAX

            per = INLINE_MAX // 8
            yields = _wire.mpi_yields()   # asked by the cluster already: must not lower the level
            before = _wire.inline_messages()
            sizes = {"empty": [0], "one": [1], "at": [per], "past": [per + 1],
                     "split_at": [per // 2, per - per // 2], "split_past": [per // 2, per // 2 + 1]}
            exact, counts = {}, {}
            for key, parts in sizes.items():
                xs = [rng.standard_normal(m) for m in parts]
                b0 = _wire.inline_messages()
                got = cluster.call("cat", *xs).result()
                b1 = _wire.inline_messages()
                exact[key] = len(got) == n and all(np.array_equal(v, np.concatenate(xs))
                                                   for v in got.values())
                counts[key] = [b1[0] - b0[0], b1[1] - b0[1]]
            C = cluster.matmul(A[:8], B[:, :4], code=MDSCode(n, max(1, n - 2)))  # small tasks
            total = [a - b for a, b in zip(_wire.inline_messages(), before)]
            # per-worker arrays (a job's tasks, a call's per_worker): of one layout, one control
            # message for all and one compiled call (request_many each=True); of different
            # shapes, a control message each
            from codedml.runtime.protocol import call_request

            each, singles = {}, {}
            for key, per in (("same", [[np.full(3, float(w))] for w in range(n)]),
                             ("shapes", [[np.arange(w + 1.0)] for w in range(n)])):
                sent = []   # requests posted one worker at a time (the fallback's _send)
                cluster._send = lambda w, req, arrays, sent=sent: (
                    sent.append(w), type(cluster)._send(cluster, w, req, arrays))[1]
                try:
                    got = cluster.call("cat", per_worker=per).result()
                finally:
                    del cluster._send
                each[key] = len(got) == n and all(np.array_equal(got[w], per[w][0]) for w in got)
                singles[key] = len(sent)
            # refused before any send, by name: a list per worker listed, as many arrays each
            ctrl = call_request(10 ** 9, "cat", None).encode([np.zeros(2)])
            refusals = []
            for arrays in ([[np.zeros(2)]], [[np.zeros(2)], [np.zeros(2), np.zeros(2)]]):
                try:
                    cluster._eng.request_many([0, 1], ctrl, arrays, True)
                    refusals.append(None)
                except ValueError as exc:
                    refusals.append(str(exc))
            after = cluster.call("cat", np.ones(2)).result()   # nothing half-sent: answers as before
            each["after"] = all(np.array_equal(v, np.ones(2)) for v in after.values())
            emit(exact=exact, counts=counts, err=rel(C, A[:8] @ B[:, :4]), total=total,
                 outstanding=cluster.outstanding(), level=[LEVEL, MPI.Query_thread()],
                 yields=yields, spin_yield=cluster.spin_yield, each=each, singles=singles,
                 refusals=refusals,
                 protocol_errors=len(cluster.protocol_errors))
        elif name == "landing":
            # A small job's request goes out in one compiled call (request_stack: each
            # worker's task and B inline, the job id written by the engine), and the results
            # of the job a caller waits for land in its buffers in C (poll's `hot`), once
            # per worker and only where they fit the slot; the rest stay events. Driven on the engine itself (replies that the
            # cluster's Python never sees), then through the cluster.
            from codedml.runtime.protocol import Op, Request

            eng = cluster._eng
            ws = list(range(n))
            tasks = rng.standard_normal((n, 3, 5))
            b = rng.standard_normal((5, 2))
            ctrl = Request(Op.MATMUL, 0).with_arrays([tasks[0], b]).to_bytes().tobytes()

            def post(job, workers, t=tasks):
                dead = eng.request_stack(workers, ctrl, job, t, b)
                assert dead == [], dead
                time.sleep(0.5)   # every reply queued before the poll looks

            def poll(hot, want):
                return eng.poll(time.perf_counter() + 5.0, time.perf_counter() + 5.0, 1e-4,
                                1e-3, want, hot)

            def hot_of(job, slot=(3, 2)):
                return (job, np.full((n, *slot), np.nan), np.zeros(n + 1, np.int64))

            J = 10 ** 9
            out = {}
            post(J, ws)
            hot = hot_of(J)
            ev = poll(hot, n)
            out["all"] = {"events": len(ev), "got": int(hot[2][0]),
                          "workers": sorted(hot[2][1:1 + n].tolist()),
                          "err": max(rel(hot[1][w], tasks[w] @ b) for w in ws)}
            # another job's reply first in the poll (worker 0's): an event, the rest land
            post(J + 2, [0])
            post(J + 1, ws[1:])
            hot = hot_of(J + 1)
            ev = poll(hot, n)
            out["behind"] = {"events": sorted((e[0], e[2][0]) for e in ev), "got": int(hot[2][0])}
            # a worker landed already (in got): its reply is an event; a slot of another
            # shape: every reply an event
            post(J + 3, ws)
            hot = hot_of(J + 3)
            hot[2][0], hot[2][1] = 1, 0
            ev = poll(hot, n)
            out["again"] = {"events": [e[0] for e in ev], "got": int(hot[2][0])}
            post(J + 4, ws)
            hot = hot_of(J + 4, (2, 3))
            ev = poll(hot, n)
            out["shape"] = {"events": len(ev), "got": int(hot[2][0])}
            # a count left at the limit (its workers not listed): nothing lands past got's end
            post(J + 5, ws)
            hot = hot_of(J + 5)
            hot[2][0], hot[2][1:] = n, -1
            ev = poll(hot, n)
            out["full"] = {"events": len(ev), "got": int(hot[2][0]),
                           "untouched": bool(np.isnan(hot[1]).all())}
            # refused by name, before any send or wait
            bad = {}
            frozen = np.zeros((n, 3, 2))
            frozen.setflags(write=False)
            for key, call in {
                    "short ctrl": lambda: eng.request_stack(ws, ctrl[:8], J, tasks, b),
                    "no task": lambda: eng.request_stack([n - 1], ctrl, J, tasks[:n - 1], b),
                    "not a buffer": lambda: eng.request_stack(ws, ctrl, J, [1.0], b),
                    "job": lambda: eng.request_stack(ws, ctrl, -2, tasks, b),
                    "landing dtype": lambda: poll((J, np.zeros((n, 3, 2), np.float32),
                                                   np.zeros(n + 1, np.int64)), 1),
                    "got short": lambda: poll((J, np.zeros((n, 3, 2)), np.zeros(n, np.int64)), 1),
                    "got count": lambda: poll((J, np.zeros((n, 3, 2)),
                                               np.full(n + 1, n + 1, np.int64)), 1),
                    "landing read-only": lambda: poll((J, frozen, np.zeros(n + 1, np.int64)), 1),
                    "hot list": lambda: poll([J, np.zeros((n, 3, 2)), np.zeros(n + 1, np.int64)], 1),
                    "ctrl inline flag": lambda: eng.request_stack(
                        ws, ctrl[:5] + bytes([ctrl[5] | 8]) + ctrl[6:], J, tasks, b),
            }.items():
                try:
                    call()
                    bad[key] = None
                except (TypeError, ValueError, IndexError) as exc:
                    bad[key] = f"{type(exc).__name__}: {exc}"
            # declined, nothing sent (None): a task and b past INLINE_MAX, or the control
            # bytes and they past the engine's piece size; a job then goes out as before
            from codedml.runtime import _wire

            declined = [eng.request_stack(ws, ctrl, J, np.zeros((n, 2048, 2)), b)]
            old_chunk = _wire.set_chunk(100)   # (this rank's only: nothing is sent under it)
            try:
                declined.append(eng.request_stack(ws, ctrl, J, tasks, b))
            finally:
                _wire.set_chunk(old_chunk)

            class Declining:   # the engine, its request_stack declining every job
                def __getattr__(self, name):
                    return getattr(eng, name)

                def request_stack(self, *args):
                    return None

            cluster._eng = Declining()
            try:
                X, Y = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
                chunked = rel(cluster.matmul(X, Y, code=MDSCode(n, max(1, n - 2))), X @ Y)
            finally:
                cluster._eng = eng
            # a job whose parity products yield (parity_nice; YIELD_MIN_MACS lowered so that a
            # small one does): its data workers' requests stacked, its parity workers' with
            # their `nice` parameter, which the stacked path's kept form does not carry
            sends = []

            def params(ctrl_):
                return Request.from_bytes(np.frombuffer(bytes(ctrl_), np.uint8)).params

            class Recording:   # the engine, its requests' parameters noted
                def __getattr__(self, name):
                    return getattr(eng, name)

                def request_stack(self, ws_, ctrl_, job_, tasks_, b_):
                    sends.append(["stack", list(ws_), params(ctrl_)])
                    return eng.request_stack(ws_, ctrl_, job_, tasks_, b_)

                def request_many(self, ws_, ctrl_, arrays_, each_=False):
                    sends.append(["many", list(ws_), params(ctrl_)])
                    return eng.request_many(ws_, ctrl_, arrays_, each_)

            saved = cluster.parity_nice, cluster.YIELD_MIN_MACS
            cluster._eng, cluster.parity_nice, cluster.YIELD_MIN_MACS = Recording(), 10, 0
            try:
                X, Y = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
                yielded = rel(cluster.matmul(X, Y, code=MDSCode(n, n - 1, systematic=True)),
                              X @ Y)
            finally:
                cluster._eng = eng
                cluster.parity_nice, cluster.YIELD_MIN_MACS = saved
            # through the cluster: small jobs decode right, their results landed in C
            code = MDSCode(n, max(1, n - 2))
            errs, landed, decided, reports = [], [], [], []
            from codedml.runtime.futures import Job
            one_step = Job._decide_landed

            def spy(job, now):
                out_ = one_step(job, now)
                decided.append(out_)
                return out_

            Job._decide_landed = spy
            try:
                for i in range(40):
                    X, Y = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
                    job = cluster.submit(X, Y, code=code)
                    errs.append(rel(job.result(), X @ Y))
                    landed.append(job._land_taken)   # (its landing is dropped once settled)
                    st_ = _statuses_of(job)
                    # the k used are those its info names; the rest late, spare or missing
                    reports.append(sorted(w for w, s in st_.items() if s == "used")
                                   == list(job.info.used)
                                   and all(s in ("used", "late", "missing") for s in st_.values()))
            finally:
                Job._decide_landed = one_step
            emit(out=out, bad=bad, errs=max(errs), landed=landed, declined=declined,
                 decided=sum(decided), reports=all(reports),
                 chunked=chunked, yielded=yielded, sends=sends,
                 outstanding=cluster.outstanding(), protocol_errors=len(cluster.protocol_errors))
        elif name == "python_inline":
            # The Python worker loop reads a request whose arrays came inline (the compiled
            # root's form; never sent to it in a normal run, where every rank takes one path)
            from codedml.runtime.mpi import TAG_CTRL

            def inline_post(worker, ctrl, arrays):
                if not arrays:  # nothing to carry inline
                    return type(cluster)._post(cluster, worker, ctrl, arrays)
                raw = bytearray(ctrl.tobytes())
                raw[5] |= 8
                raw += b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
                buf = np.frombuffer(bytes(raw), dtype=np.uint8)
                cluster._outgoing.append((cluster.comm.Isend(buf, dest=cluster._ranks[worker],
                                                             tag=TAG_CTRL), buf))

            cluster._post = inline_post
            xs = [np.arange(5.0), np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((0, 2)),
                  np.array([7], dtype=np.int64)]
            got = cluster.call("shapes", *xs).result()
            del cluster._post  # the class's again, for close
            emit(got={str(w): v.tolist() for w, v in sorted(got.items())},
                 outstanding=cluster.outstanding())
        elif name == "call_die":
            x = np.arange(3.0)
            warm = cluster.call("echo", x).wait()   # every worker alive and answering
            call = cluster.call("die_on_1", x)
            got = call.result()
            after = cluster.call("echo", x).result()
            emit(warm=sorted(warm), answered=sorted(got), failed=dict(call.failed),
                 exact=all(np.array_equal(v, x) for v in got.values()), after=sorted(after),
                 dead=sorted(cluster.dead_workers))
        elif name == "rogue":
            code = MDSCode(n, max(1, n - 2))
            C = cluster.matmul(A, B, code=code)
            # the job may decode from the others before the garbage header is routed: receive
            # until it is (bounded), so what the root then records is what is checked
            end = time.perf_counter() + 10.0
            while not cluster.protocol_errors and time.perf_counter() < end:
                cluster.drain(0.05)
            emit(err=rel(C, A @ B), protocol_errors=list(cluster.protocol_errors),
                 dead=sorted(cluster.dead_workers), outstanding=cluster.outstanding())
        elif name == "soak":
            tracemalloc.start()
            code = MDSCode(n, max(1, n - 2))
            h = cluster.put(A, code=code)
            x = rng.standard_normal(60)
            marks, worst, refused = [], 0.0, 0
            for j in range(300):
                try:
                    worst = max(worst, rel(cluster.matmul(h, x, errors=1), A @ x))
                except CodedMLError:  # two corrupt results of four: detected, not correctable
                    refused += 1
                if j in (50, 299):
                    cluster.drain(0.05)
                    marks.append({"job": j, "mem": tracemalloc.get_traced_memory()[0],
                                  **cluster.outstanding()})
            emit(marks=marks, worst=worst, refused=refused)
print(f"rank {comm.Get_rank()} exit", flush=True)
