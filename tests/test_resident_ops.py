"""Runtime operations on resident (stored, encoded) operands and worker handlers.

``L @ W`` against the same stored blocks as ``W @ x`` (MatDot-style, threshold 2k - 1),
SGD with momentum and weight decay applied in the coded domain (torch.optim.SGD's rule),
decoding the stored operand, scrubbing stored blocks corrupted by storage soft errors, and
``call`` of registered worker handlers with raw (undecoded) results.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from codedml import ConfigurationError, LocalCluster, NotEnoughResultsError, WorkerFailure
from codedml.errors import NonFiniteUpdateError
from codedml.codes import MDSCode, _gfp
from codedml.codes.resident import LeftProductCode, encode_left
from codedml.faults import (Corruption, Fault, FixedStragglers, Schedule, SoftErrors,
                            StorageErrors)

P = 65537
TOL = 1e-12


def _stored(code, W):
    enc = code.encode(W, np.zeros(W.shape[1], dtype=W.dtype))
    return [np.asarray(t.a.view(np.ndarray)) if code.field is not None else t.a for t in enc]


def _left_results(code, W, L):
    blocks = _stored(code, W)
    dec, enc = encode_left(code, L, W.shape[1], norms=[np.linalg.norm(b) for b in blocks])
    if code.field is not None:
        res = {w: _gfp.matmul_mod(enc[w].a, blocks[w], code.field) for w in range(code.workers)}
    else:
        res = {w: enc[w].a @ blocks[w] for w in range(code.workers)}
    return dec, enc, res


# ------------------------------------------------------------------ L @ W, pure math
@pytest.mark.parametrize("n, k", [(3, 2), (5, 3), (7, 3), (8, 4), (9, 2)])
@pytest.mark.parametrize("construction", ["circle", "equispaced", "gf"])
def test_left_product_decodes_from_every_threshold_subset(n, k, construction):
    rng = np.random.default_rng(n * 10 + k)
    M, N, B = 13, 5, 3
    if construction == "gf":
        code = MDSCode(n, k, field=P)
        W, L = rng.integers(0, P, (M, N)), rng.integers(0, P, (B, M))
        ref = _gfp.matmul_mod(L, W, P)
    else:
        code = MDSCode(n, k, construction=construction)
        W, L = rng.standard_normal((M, N)), rng.standard_normal((B, M))
        ref = L @ W
    dec, enc, res = _left_results(code, W, L)
    assert dec.recovery_threshold == 2 * k - 1
    tol = 0 if construction == "gf" else (1e-12 if construction == "circle" else 1e-9)
    for S in itertools.combinations(range(n), 2 * k - 1):
        C = dec.decode({w: res[w] for w in S}, encoding=enc)
        assert C.shape == ref.shape
        err = np.linalg.norm(C - ref) / np.linalg.norm(ref)
        assert err <= tol, (S, err)


@pytest.mark.parametrize("field", [None, P])
def test_left_product_locates_every_single_corrupt_result(field):
    n, k = 7, 2  # threshold 3, 4 spare: two errors corrected
    rng = np.random.default_rng(3)
    code = MDSCode(n, k, field=field)
    if field:
        W, L = rng.integers(0, P, (8, 4)), rng.integers(0, P, (2, 8))
        ref = _gfp.matmul_mod(L, W, P)
    else:
        W, L = rng.standard_normal((8, 4)), rng.standard_normal((2, 8))
        ref = L @ W
    dec, enc, res = _left_results(code, W, L)
    for bad in itertools.combinations(range(n), 2):
        r = dict(res)
        for w in bad:
            r[w] = (r[w] + 1) % P if field else r[w] + 3.0
        C, faulty = dec.decode(r, errors=2, encoding=enc, return_faulty=True)
        assert faulty == bad
        assert np.allclose(C, ref, rtol=0, atol=1e-12 * np.abs(ref).max()) if not field else (C == ref).all()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 12), data=st.data())
def test_left_product_property(n, data):
    k = data.draw(st.integers(1, (n + 1) // 2))
    M = data.draw(st.integers(1, 17))
    N = data.draw(st.integers(1, 6))
    B = data.draw(st.integers(1, 4))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    code = MDSCode(n, k)
    W, L = rng.standard_normal((M, N)), rng.standard_normal((B, M))
    dec, enc, res = _left_results(code, W, L)
    S = sorted(rng.choice(n, 2 * k - 1, replace=False).tolist())
    C = dec.decode({w: res[w] for w in S}, encoding=enc)
    assert np.linalg.norm(C - L @ W) <= TOL * max(np.linalg.norm(L) * np.linalg.norm(W), 1e-300)


def test_left_product_needs_two_k_minus_one_workers():
    with pytest.raises(ConfigurationError, match=r"2k - 1 <= workers: k=3 gives threshold 5 > workers=4"):
        LeftProductCode(MDSCode(4, 3))


# ------------------------------------------------------------------ runtime ops
@pytest.fixture
def W():
    return np.random.default_rng(7).standard_normal((10, 6))


def test_matmul_left_on_local_cluster_skips_stragglers_and_corrects_errors(W):
    L = np.random.default_rng(8).standard_normal((4, 10))
    faults = FixedStragglers({2}, 2.0) + Schedule({1: {4: Fault(corruptions=(Corruption("exponent"),))}})
    with LocalCluster(8, faults=faults, timeout=30) as c:
        h = c.put(W, code=MDSCode(8, 3))          # job 0: the forward product below
        assert np.allclose(c.matmul(h, np.eye(6)), W, rtol=0, atol=1e-13)
        t = time.perf_counter()
        C = c.matmul_left(L, h, errors=1)          # job 1: rank 4 corrupt, rank 2 slow
        took = time.perf_counter() - t
        rep = c.history[-1]
    assert np.linalg.norm(C - L @ W) <= TOL * np.linalg.norm(L) * np.linalg.norm(W)
    assert rep.faulty == (3,) and rep.needed == 7
    assert took < 1.5, "the 2 s straggler was waited for"


def test_matmul_left_bad_input(W):
    with LocalCluster(4) as c:
        h = c.put(W, code=MDSCode(4, 2))
        with pytest.raises(ConfigurationError, match=r"`L` must be 2-D with 10 columns .* got shape \(3, 9\)"):
            c.matmul_left(np.ones((3, 9)), h)
        with pytest.raises(ConfigurationError, match="threshold 5 > workers=4"):
            c.matmul_left(np.ones((3, 10)), c.put(W, code=MDSCode(4, 3)))


@pytest.mark.parametrize("opts", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3),
])
def test_sgd_step_matches_torch_sgd(W, opts):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    Wt = torch.tensor(W, requires_grad=True)
    opt = torch.optim.SGD([Wt], **opts)
    buf = None
    with LocalCluster(7) as c:
        h = c.put(W, code=MDSCode(7, 3))
        for _ in range(6):
            U, V = rng.standard_normal((10, 3)), rng.standard_normal((6, 3))
            opt.zero_grad()
            Wt.grad = torch.tensor(U @ V.T)
            opt.step()
            h, buf = c.sgd_step(h, U, V, buffer=buf, **opts)
        got = c.fetch(h, errors=2)
        assert (buf is None) == (opts.get("momentum", 0) == 0)
    ref = Wt.detach().numpy()
    assert np.linalg.norm(got - ref) <= 1e-12 * np.linalg.norm(ref)
    assert all(n >= 0 for n in h.norms)


def test_sgd_step_bad_input(W):
    with LocalCluster(4) as c:
        h = c.put(W, code=MDSCode(4, 2))
        with pytest.raises(ConfigurationError, match="`lr` must be a finite number >= 0, got -1"):
            c.sgd_step(h, np.ones((10, 1)), np.ones((6, 1)), lr=-1)
        with pytest.raises(ConfigurationError, match="`nesterov` needs momentum > 0"):
            c.sgd_step(h, np.ones((10, 1)), np.ones((6, 1)), lr=0.1, nesterov=True)
        with pytest.raises(ConfigurationError, match=r"`U` and `V` must be \(10, r\) and \(6, r\)"):
            c.sgd_step(h, np.ones((9, 1)), np.ones((6, 1)), lr=0.1)


@pytest.mark.parametrize("kind", ["exponent", "sign", "gross", "nan"])
def test_scrub_locates_and_repairs_a_corrupted_stored_block(W, kind):
    faults = StorageErrors(kind=kind, prob=1.0, ranks={4})
    with LocalCluster(8, faults=faults, timeout=30) as c:
        h = c.put(W, code=MDSCode(8, 3))
        h = c.update(h, np.ones((10, 1)), np.ones((6, 1)))     # rank 4's block is hit here
        before = c.scrub(h)
        assert before.faulty == (3,) and before.repaired == (3,)
        assert before.checked == tuple(range(8))
        after = c.scrub(before.handle)
        assert after.faulty == () and after.repaired == ()
        # Every threshold subset that includes the repaired worker decodes correctly.
        got = c.fetch(after.handle)
        ref = W + 1.0
        assert np.linalg.norm(got - ref) <= TOL * np.linalg.norm(ref)
        assert np.allclose(c.matmul(after.handle, np.eye(6), errors=2), ref, rtol=0, atol=1e-12)
        assert c.history[-1].faulty == ()


@pytest.mark.parametrize("dtype, precision", [(np.float32, "auto"), (np.float64, "float32"),
                                              (np.float64, "compensated")])
def test_scrub_repairs_blocks_in_the_stored_dtype(W, dtype, precision):
    """A repaired block has the dtype of the others, whatever dtype the decode of the stored
    operand came back in (float32 blocks stay float32), and the handle keeps its precision."""
    faults = StorageErrors(kind="exponent", prob=1.0, ranks={4})
    with LocalCluster(8, faults=faults, timeout=30) as c:
        h = c.put(W.astype(dtype), code=MDSCode(8, 3), precision=precision)
        assert h.dtype == (np.float64 if precision == "compensated" else np.float32)
        assert h.compensated == (precision == "compensated")
        h = c.update(h, np.ones((10, 1)), np.ones((6, 1)))
        rep = c.scrub(h)
        assert rep.repaired == (3,)
        assert rep.handle.precision == precision and rep.handle.compensated == h.compensated
        assert c.scrub(rep.handle).faulty == ()   # a round trip: the repair's put has landed
        blocks = [c._states[w].resident[h.id] for w in range(8)]
        assert [b.dtype for b in blocks] == [np.dtype(h.dtype)] * 8


def test_scrub_reports_missing_workers_and_finds_nothing_when_clean(W):
    with LocalCluster(6, faults=FixedStragglers({3}, 3.0), timeout=30) as c:
        h = c.put(W, code=MDSCode(6, 2))
        rep = c.scrub(h, timeout=0.5)
        assert rep.faulty == () and rep.missing == (2,)
        assert 2 not in rep.checked and len(rep.checked) == 5


def _corrupt_stored(cluster, handle, workers):
    """Corrupt ``handle``'s stored blocks on ``workers`` in place (one entry each), as a soft
    error in a worker's memory would, after the put reached them."""
    handle.ack.exception()
    for w in workers:
        block = cluster._states[w].resident[handle.id]
        block.reshape(-1)[w % block.size] += 1e3 * (1 + np.abs(block).max())


def test_scrub_search_locates_and_repairs_three_corrupt_blocks(W):
    """Three corrupt stored blocks of eight at k = 3: one more than a probe locates
    ((8 - 3) // 2 = 2); the scrub's search leaves blocks out in turn, locates the three and
    repairs them, and the repaired operand reads back exactly and scrubs clean."""
    with LocalCluster(8, timeout=30) as c:
        h = c.put(W, code=MDSCode(8, 3))
        _corrupt_stored(c, h, (1, 4, 6))
        rep = c.scrub(h)
        assert rep.searched and rep.faulty == (1, 4, 6) and rep.repaired == (1, 4, 6)
        assert c.scrub(rep.handle).faulty == ()
        assert np.allclose(c.fetch(rep.handle), W, rtol=0, atol=TOL * np.abs(W).max())


def test_gf_resident_fetch_and_left_product():
    rng = np.random.default_rng(2)
    W, L = rng.integers(0, P, (9, 4)), rng.integers(0, P, (3, 9))
    with LocalCluster(6, faults=SoftErrors(prob=1.0, ranks={2}), timeout=30) as c:
        h = c.put(W, code=MDSCode(6, 2, field=P))
        assert (c.fetch(h, errors=1) == W).all()
        assert (c.matmul_left(L, h, errors=1) == _gfp.matmul_mod(L, W, P)).all()
        # 5 of 6 results suffice: the corrupt worker was located, or was the one not waited for
        assert c.history[-1].workers[1].status in ("corrupt", "late", "missing")
        assert c.history[-1].faulty in ((), (1,))


# ------------------------------------------------------------------ handlers
def _scaled(ctx, x, scale=1.0):
    ctx.store["calls"] = ctx.store.get("calls", 0) + 1
    return x * scale + ctx.worker


def _boom(ctx, x):
    raise RuntimeError(f"bad shard on worker {ctx.worker}")


def test_call_returns_raw_results_from_the_first_workers():
    with LocalCluster(4, handlers={"f": _scaled}, faults=FixedStragglers({2}, 2.0), timeout=10) as c:
        call = c.call("f", np.ones(3), params={"scale": 2.0})
        t = time.perf_counter()
        got = call.wait(3)
        assert time.perf_counter() - t < 1.5
        assert sorted(got) == [0, 2, 3]
        for w, r in got.items():
            assert np.array_equal(r, np.full(3, 2.0 + w))
        call.cancel()
        per = c.call("f", per_worker=[[np.full(2, float(w))] for w in range(4)], workers=[0, 3])
        assert {w: r.tolist() for w, r in per.wait().items()} == {0: [0.0, 0.0], 3: [6.0, 6.0]}


def _boom_on_1(ctx, x):
    if ctx.worker == 1:
        raise ValueError("bad shard on worker 1")
    return x


def test_call_handler_errors_and_missing_handlers_reach_the_root():
    """A handler's exception reaches the caller (``wait`` and ``result`` raise the
    WorkerFailure, with the remote traceback), also where the other workers answered; a name
    no handler is registered under is refused when the call is made."""
    with LocalCluster(3, handlers={"boom": _boom, "boom_on_1": _boom_on_1}, timeout=10) as c:
        with pytest.raises(WorkerFailure, match="bad shard on worker") as exc:
            c.call("boom", np.ones(1)).wait()
        assert exc.value.rank in (1, 2, 3) and "RuntimeError" in exc.value.remote_traceback
        call = c.call("boom_on_1", np.ones(1))
        with pytest.raises(WorkerFailure, match="rank 2 raised ValueError: bad shard on worker 1"):
            call.result()
        assert sorted(call.results) == [0, 2] and list(call.errors_seen) == [1]
        with pytest.raises(ConfigurationError, match=r"`name` must be a handler registered .*\['boom', 'boom_on_1'\], got 'nope'"):
            c.call("nope")


@pytest.mark.parametrize("kw, msg", [
    ({"workers": [0, 0]}, r"`workers` must not repeat a worker"),
    ({"workers": []}, r"`workers` must name at least one worker"),
    ({"workers": "01"}, r"`workers` must be a sequence of worker indices, got '01'"),
    ({"workers": [3]}, r"`workers\[i\]` must be between 0 and 2, got 3"),
    ({"per_worker": [np.ones(1)] * 3}, r"`per_worker\[0\]` must be a list of the arrays"),
    ({"per_worker": [[np.ones(1)]] * 2}, r"`per_worker` must have one entry per worker \(3\), got 2"),
    ({"arrays": (np.ones(1),), "per_worker": [[np.ones(1)]] * 3}, r"not both"),
    ({"arrays": (np.array(["a"]),)}, r"`arrays\[0\]` must be an array of one of .* got dtype <U1"),
    ({"per_worker": [[np.ones(1)], [np.array([object()])], [np.ones(1)]]},
     r"`per_worker\[1\]\[0\]` must be an array of one of .* got dtype object"),
])
def test_call_arguments_are_checked_before_anything_is_sent(kw, msg):
    with LocalCluster(3, handlers={"f": _scaled}, timeout=10) as c:
        arrays = kw.pop("arrays", ())
        with pytest.raises(ConfigurationError, match=msg):
            c.call("f", *arrays, **kw)
        assert c.outstanding()["jobs"] == 0   # nothing was registered or sent
        assert c.call("f", np.ones(1), workers=np.array([2])).result()[2].tolist() == [3.0]


def test_call_wait_times_out_naming_the_silent_ranks():
    with LocalCluster(3, handlers={"f": _scaled}, faults=FixedStragglers({3}, 3.0)) as c:
        with pytest.raises(NotEnoughResultsError, match=r"no answer from ranks \[3\]"):
            c.call("f", np.ones(1)).wait(timeout=0.5)


@pytest.mark.parametrize("n, k", [(4, 4), (6, 3), (5, 2)])
def test_left_product_with_replication_and_uncoded_storage(W, n, k):
    from codedml.codes import ReplicationCode

    L = np.random.default_rng(5).standard_normal((3, 10))
    with LocalCluster(n, timeout=30) as c:
        h = c.put(W, code=ReplicationCode(n, k))
        C = c.matmul_left(L, h)
        assert np.linalg.norm(C - L @ W) <= TOL * np.linalg.norm(L) * np.linalg.norm(W)
        h, _ = c.sgd_step(h, np.ones((10, 1)), np.ones((6, 1)), lr=0.5)
        assert np.allclose(c.fetch(h), W - 0.5, rtol=0, atol=1e-13)


def test_update_with_a_non_finite_factor_is_refused_before_touching_the_blocks(W):
    with LocalCluster(4) as c:
        h = c.put(W, code=MDSCode(4, 2))
        U = np.ones((10, 1))
        U[3, 0] = np.nan
        with pytest.raises(NonFiniteUpdateError, match=r"`U` \(a factor of the update U V\^T\) contains NaN or Inf"):
            c.sgd_step(h, U, np.ones((6, 1)), lr=0.1)
        with pytest.raises(NonFiniteUpdateError, match=r"`V` .* contains NaN or Inf"):
            c.update(h, np.ones((10, 1)), np.full((6, 1), np.inf))
        assert np.allclose(c.fetch(h), W, rtol=0, atol=1e-13)


def test_left_product_of_a_systematic_resident_operand():
    """An operand stored with a systematic MDS code serves products from both sides: from the
    left as systematic MatDot on the same Lagrange weights (the systematic workers' products
    sum to L @ A); any 2k - 1 results decode, and the k systematic ones alone do."""
    import numpy as np

    from codedml import LocalCluster
    from codedml.codes import MDSCode

    rng = np.random.default_rng(0)
    A = rng.standard_normal((12, 5))
    L = rng.standard_normal((2, 12))
    with LocalCluster(6) as cl:
        h = cl.put(A, code=MDSCode(6, 3, systematic=True))
        np.testing.assert_allclose(cl.matmul(h, np.eye(5)), A, rtol=1e-12, atol=1e-12)
        out = cl.submit_left(L, h).result()
        np.testing.assert_allclose(out, L @ A, rtol=0, atol=1e-12 * np.abs(L @ A).max())


def test_sgd_step_refuses_a_buffer_that_is_not_one(W):
    """The momentum buffer is scaled and added to in place: the weight itself as its buffer
    gave a wrong step, an operand of another shape made every worker fail the step and left
    both operands stale. Both are refused before anything is sent."""
    rng = np.random.default_rng(13)
    U, V = rng.standard_normal((10, 1)), rng.standard_normal((6, 1))
    with LocalCluster(4) as c:
        h = c.put(W, code=MDSCode(4, 2))
        other = c.put(rng.standard_normal((5, 6)), code=MDSCode(4, 2))
        with pytest.raises(ConfigurationError, match=r"`buffer` must be a momentum buffer, not the weight itself"):
            c.sgd_step(h, U, V, lr=0.1, momentum=0.9, buffer=h)
        with pytest.raises(ConfigurationError, match=r"`buffer` must be stored like the weight .*\(\(10, 6\).*got \(\(5, 6\)"):
            c.sgd_step(h, U, V, lr=0.1, momentum=0.9, buffer=other)
        assert c.stale_workers(h) == frozenset() and c.stale_workers(other) == frozenset()
        h, buf = c.sgd_step(h, U, V, lr=0.1, momentum=0.9)
        put_buf = c.put(c.fetch(buf), code=MDSCode(4, 2))   # a buffer stored anew (state_dict)
        h, _ = c.sgd_step(h, U, V, lr=0.1, momentum=0.9, buffer=put_buf)
        g = U @ V.T
        assert np.allclose(c.fetch(h), W - 0.1 * g - 0.1 * (0.9 * g + g), rtol=0, atol=1e-12)


@pytest.mark.parametrize("field", [None, P])
def test_update_factors_must_be_real_numbers_named(W, field):
    rng = np.random.default_rng(14)
    Wf = rng.integers(0, P, W.shape) if field else W
    ok_u = rng.integers(0, P, (10, 1)) if field else rng.standard_normal((10, 1))
    ok_v = rng.integers(0, P, (6, 1)) if field else rng.standard_normal((6, 1))
    with LocalCluster(4) as c:
        h = c.put(Wf, code=MDSCode(4, 2, field=field))
        for name, U, V in (("V", ok_u, ok_v + 1j), ("U", ok_u + 1j, ok_v),
                           ("V", ok_u, np.array([["a"]] * 6))):
            with pytest.raises(ConfigurationError, match=rf"`{name}` \(a factor of the update U V\^T\) must hold real numbers"):
                c.update(h, U, V)
        if field:
            with pytest.raises(ConfigurationError, match=rf"`U` entries must be between 0 and {P - 1}"):
                c.update(h, ok_u + P, ok_v)
        assert c.stale_workers(h) == frozenset()


@pytest.mark.parametrize("seed, msg", [(-1, r"`seed` must be at least 0, got -1"),
                                       ("abc", r"`seed` must be an integer, got 'abc'"),
                                       (True, r"`seed` must be an integer, got True")])
def test_scrub_seed_is_checked(W, seed, msg):
    with LocalCluster(4) as c:
        h = c.put(W, code=MDSCode(4, 2))
        with pytest.raises(ConfigurationError, match=msg):
            c.scrub(h, seed=seed)
        assert c.scrub(h, seed=3).faulty == ()
