"""Coded model-parallel layers: CodedLinear behaves like nn.Linear (values, gradients with
gradcheck, state_dict, Sequential), its training with CodedSGD follows torch's SGD exactly while
stragglers, soft errors and corrupted stored blocks are tolerated, the digits MLP under faults
keeps its fault-free accuracy where the uncoded one fails, and it all runs under mpiexec."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codedml import ConfigurationError, CorruptResultError, LocalCluster  # noqa: E402
from codedml.codes import MDSCode, PolynomialCode, ReplicationCode  # noqa: E402
from codedml.faults import (Corruption, Fault, FixedStragglers, Schedule, SoftErrors,  # noqa: E402
                            StorageErrors)
from codedml.nn import CodedLinear, CodedSGD, coded_linear, default_code  # noqa: E402
from codedml.nn.linear import _CodedLinearFn  # noqa: E402
from _mpirun import needs_mpiexec, run_mpi  # noqa: E402

F64 = torch.float64


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(7, timeout=30) as c:
        yield c


def _pair(cluster, sizes=(8, 6, 3), dtype=F64, errors=0, seed=1, code=None):
    torch.manual_seed(seed)
    coded = torch.nn.Sequential(CodedLinear(sizes[0], sizes[1], cluster=cluster, dtype=dtype, errors=errors, code=code),
                                torch.nn.Tanh(),
                                CodedLinear(sizes[1], sizes[2], cluster=cluster, dtype=dtype, errors=errors, code=code))
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1], dtype=dtype), torch.nn.Tanh(),
                              torch.nn.Linear(sizes[1], sizes[2], dtype=dtype))
    return coded, ref


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max(float((sa[k] - sb[k]).abs().max()) for k in sb)


def _lockstep(coded, oc, ref, orf, *, steps, batch, seed, reduce):
    """Train the coded model and its reference on the same batches, step for step, on the
    loss ``mean`` or ``sum`` of the squared outputs."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(batch, 8, generator=g, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            getattr(m(x).square(), reduce)().backward()
            o.step()


# ------------------------------------------------------------------ a torch layer
@pytest.mark.parametrize("dtype, tol", [(F64, 1e-13), (torch.float32, 1e-5)])
def test_forward_and_backward_match_nn_linear(cluster, dtype, tol):
    coded, ref = _pair(cluster, dtype=dtype)
    assert _max_diff(coded, ref) <= tol  # same initialisation stream as nn.Linear (decoded)
    x = torch.randn(3, 5, 8, dtype=dtype)  # leading dimensions are kept
    xc, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yc, yr = coded(xc), ref(xr)
    assert yc.shape == (3, 5, 3) and yc.dtype == dtype
    assert float((yc - yr).detach().abs().max()) <= tol
    yc.square().sum().backward()
    yr.square().sum().backward()
    assert float((xc.grad - xr.grad).abs().max()) <= tol * 10
    for c, r in ((coded[0], ref[0]), (coded[2], ref[2])):
        assert float((c.bias.grad - r.bias.grad).abs().max()) <= tol * 10
        assert float((c.weight_grad() - r.weight.grad).abs().max()) <= tol * 10


def test_gradcheck_module_and_functional_under_soft_errors():
    faults = SoftErrors("exponent", 0.03) + SoftErrors("nan", 0.01)
    with LocalCluster(7, faults=faults, seed=4, timeout=30) as c:
        layer = CodedLinear(5, 4, cluster=c, errors=1, dtype=F64)
        x = torch.randn(3, 5, dtype=F64, requires_grad=True)
        # Which workers answer first decides the decode's rounding: repeated backward passes
        # agree to ~1e-15, not bitwise (nondet_tol).
        # (dW: test_weight_grad_matches_finite_differences; a weight perturbed by gradcheck
        # between its forward and backward would trip the version check, as it should)
        assert torch.autograd.gradcheck(lambda x, b: _CodedLinearFn.apply(x, layer.weight, b, layer),
                                        (x, layer.bias), nondet_tol=1e-12)
        W = torch.randn(4, 5, dtype=F64, requires_grad=True)
        b = torch.randn(4, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, W, b: coded_linear(x, W, b, cluster=c, errors=1),
                                        (x, W, b), nondet_tol=1e-12)
        assert layer.stats["corrected"] > 0  # the soft errors were there, and corrected


def test_extra_repr_and_sequential(cluster):
    layer = CodedLinear(4, 3, cluster=cluster, dtype=F64)
    assert repr(layer) == ("CodedLinear(in_features=4, out_features=3, bias=True, "
                           "code=MDSCode(workers=7, k=3, construction='circle', systematic=True), errors=0)")
    # the weight is a root-side mirror parameter, as nn.Linear's; nothing internal is exposed
    assert [(n, tuple(p.shape)) for n, p in layer.named_parameters()] == [("weight", (3, 4)), ("bias", (3,))]
    assert list(layer.state_dict()) == ["weight", "bias"]
    nobias = CodedLinear(4, 3, bias=False, cluster=cluster, dtype=F64)
    x = torch.randn(2, 4, dtype=F64)
    assert torch.allclose(nobias(x), x @ nobias.weight.T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("opts", [dict(lr=0.1), dict(lr=0.05, momentum=0.9, weight_decay=1e-3),
                                  dict(lr=0.05, momentum=0.9, nesterov=True),
                                  dict(lr=0.05, momentum=0.5, dampening=0.2)])
def test_training_follows_torch_sgd(cluster, opts):
    coded, ref = _pair(cluster)
    oc, orf = CodedSGD(coded, **opts), torch.optim.SGD(ref.parameters(), **opts)
    _lockstep(coded, oc, ref, orf, steps=10, batch=6, seed=0, reduce="mean")
    assert _max_diff(coded, ref) <= 1e-12


def test_bias_free_layers_train_and_model_zero_grad_discards_pending(cluster):
    torch.manual_seed(4)
    coded = torch.nn.Sequential(CodedLinear(8, 6, bias=False, cluster=cluster, dtype=F64), torch.nn.Tanh(),
                                CodedLinear(6, 3, bias=False, cluster=cluster, dtype=F64))
    torch.manual_seed(4)
    ref = torch.nn.Sequential(torch.nn.Linear(8, 6, bias=False, dtype=F64), torch.nn.Tanh(),
                              torch.nn.Linear(6, 3, bias=False, dtype=F64))
    oc, orf = CodedSGD(coded, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    for step in range(4):
        x = torch.randn(5, 8, generator=g, dtype=F64)          # needs no gradient itself
        for m, o in ((coded, oc), (ref, orf)):
            m(x * 3).sum().backward()                          # discarded by model.zero_grad()
            m.zero_grad()
            m(x).square().sum().backward()
            o.step()
            m.zero_grad()
    assert _max_diff(coded, ref) <= 1e-12
    assert coded[0].stats["updates"] == 4


def test_weight_grad_matches_finite_differences(cluster):
    layer = CodedLinear(5, 4, cluster=cluster, dtype=F64)
    x = torch.randn(3, 5, dtype=F64)
    def loss():
        with torch.no_grad():
            return float(layer(x).pow(3).sum())
    layer(x).pow(3).sum().backward()
    dW = layer.weight_grad()
    W = layer.weight
    eps = 1e-6
    for i, j in [(0, 0), (1, 3), (3, 4), (2, 1)]:
        Wp, Wm = W.clone(), W.clone()
        Wp[i, j] += eps
        Wm[i, j] -= eps
        layer.set_weight(Wp)
        lp = loss()
        layer.set_weight(Wm)
        lm = loss()
        assert abs((lp - lm) / (2 * eps) - float(dW[i, j])) <= 1e-6 * max(1.0, abs(float(dW[i, j])))
    layer.set_weight(W)


def test_default_code_keeps_a_spare_for_the_backward_product():
    assert [default_code(n, e).recovery_threshold for n, e in [(7, 0), (8, 0), (8, 1), (5, 1), (3, 1), (2, 0)]] == \
        [3, 4, 3, 1, 1, 1]
    for n in range(2, 13):
        for e in range((n - 1) // 2 + 1):
            k = default_code(n, e).recovery_threshold
            assert 2 * k - 1 + 2 * e <= n
            assert 2 * k - 1 + 2 * e <= n - 1 or k == 1


def test_compensated_products_for_float64_layers_only():
    """At 20 workers the default code's forward worst case (cond 9.6e3) is where float64
    inputs get compensated worker products: a float64 layer uses them (its output meets the
    float64 accuracy promise), a float32 layer -- whose weight is stored in float64 all the
    same -- does not pay 3x for digits its output drops."""
    with LocalCluster(20, timeout=60) as c:
        l64 = CodedLinear(12, 40, cluster=c, dtype=F64)
        l32 = CodedLinear(12, 40, cluster=c, dtype=torch.float32)
        assert l64._handle.compensated and not l32._handle.compensated
        assert l32._handle.dtype == np.float64
        x = torch.randn(5, 12, dtype=F64)
        ref = (x @ l64.weight.T + l64.bias).detach()
        assert float((l64(x) - ref).detach().abs().max()) <= 1e-12 * float(ref.abs().max())
        l64.set_weight(torch.ones(40, 12, dtype=F64))
        assert l64._handle.compensated


# Fault models within the code's power *by construction*. Result and storage errors drawn
# independently on every worker (Bernoulli per rank and job) put, with a probability that grows
# with the rates and the run's length, more corrupt stored blocks into one operand between two
# scrubs than the scrub can locate ((answers - k) // 2) -- at 0.03 / 0.05 on 7 workers, 21 of
# the fault seeds 0-30 did, three corrupt blocks of one operand at k = 2 -- and the run then
# stops with CorruptResultError, as it must (test_faults_beyond_the_power_raise_...). Confining
# every corruption, transient and stored, to one worker keeps each product at one corrupt result
# (errors=1 corrects it) and each scrub at one corrupt block per operand, for any seed and any
# timing; the rank is parametrised over a systematic and a parity worker. (A product reads the
# first k + 2 errors answers only; the corrupt worker is one of the first ranks, which usually
# answer first, so that its corruptions are read and corrected, not merely skipped.)
@pytest.mark.parametrize("rank", [1, 3], ids=["systematic-worker", "parity-worker"])
def test_training_on_the_torch_backend_under_faults(rank):
    """Workers multiplying and updating with torch (the CPU twin of the CUDA backend)."""
    faults = SoftErrors("exponent", 0.5, ranks={rank}) + StorageErrors("sign", 0.3, ranks={rank})
    with LocalCluster(7, backend="torch", faults=faults, seed=3, timeout=30) as c:
        coded, ref = _pair(c, errors=1)
        k = coded[0].code.recovery_threshold
        assert k == 2 and (rank - 1 < k) == (rank == 1)   # workers 0, 1 hold the systematic blocks
        oc = CodedSGD(coded, lr=0.1, momentum=0.9, weight_decay=1e-3, scrub_every=2)
        orf = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        _lockstep(coded, oc, ref, orf, steps=10, batch=5, seed=5, reduce="sum")
        assert _max_diff(coded, ref) <= 1e-12
        stats = {k: coded[0].stats[k] + coded[2].stats[k] for k in coded[0].stats}
    assert stats["corrected"] > 0 and stats["repaired"] > 0
    assert stats["retried"] == 0   # never more corrupt results in a product than errors=1


def test_training_under_stragglers_soft_errors_and_storage_errors():
    # One straggler (rank 2) and every corruption on one other worker (rank 6): within what
    # errors=1 corrects in every product and every scrub, whatever the seed and the timing (see
    # above; spread over all workers at 0.03 / 0.02, fault seeds 26 and 29 of 0-30 put three
    # corrupt blocks into one operand between two scrubs, beyond the scrub's (7 - 3) // 2 = 2).
    faults = (FixedStragglers({2}, 0.5) + SoftErrors("exponent", 0.3, ranks={6}) +
              StorageErrors("exponent", 0.2, ranks={6}))
    with LocalCluster(8, faults=faults, seed=2, timeout=30) as c:
        coded, ref = _pair(c, errors=1)
        # A scrub checks every worker: it waits for the straggler at most scrub_timeout.
        oc = CodedSGD(coded, lr=0.05, momentum=0.9, weight_decay=1e-3, scrub_every=2, scrub_timeout=0.1)
        orf = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        _lockstep(coded, oc, ref, orf, steps=12, batch=6, seed=1, reduce="mean")
        stats = {k: coded[0].stats[k] + coded[2].stats[k] for k in coded[0].stats}
        assert _max_diff(coded, ref) <= 1e-11
        # The layers' products and reads run with errors=1; a scrub's checks and repair reads
        # run with its own budget, (answers - k) // 2 = 2, and wait for every worker up to
        # scrub_timeout by design. (A report's `code` never names the scrub: the filter on
        # "scrub" in r.code kept the scrubs' checks, in which the straggler sometimes answered.)
        products = [r for r in c.history if r.errors == 1]
        assert len(products) >= 36 and len(products) < len(c.history)
        waited = [r.job for r in products if r.workers[1].status in ("used", "spare", "corrupt")]
    assert stats["corrected"] > 0 and stats["repaired"] > 0 and stats["skipped"] > 0
    assert stats["retried"] == 0   # never more corrupt results in a product than errors=1
    assert any(r.repaired for r in oc.scrub_reports)
    # The 0.5 s straggler (rank 2 = worker 1) is waited for only when a product holds more
    # corrupt results than the others can correct (then every result is needed).
    assert len(waited) <= 0.1 * len(products), (waited, len(products))


def test_faults_beyond_the_power_raise_a_named_error_never_pass():
    """Four corrupt stored blocks of one operand: beyond what a scrub locates with k = 2 on 7
    workers ((7 - 2) // 2 = 2 by one probe, one more by leaving blocks out in turn). The
    scrub, which reads every block, raises CorruptResultError naming the workers and the
    budget. A product reads only the first k + 2 errors results (and more when they
    disagree): it returns the right output when the first ones are clean and otherwise raises
    CorruptResultError after its retries; it never passes a wrong one on."""
    faults = StorageErrors("gross", 1.0, ranks={1, 3, 5, 7})   # every update hits workers 0, 2, 4, 6
    x = torch.randn(4, 8, dtype=F64)
    with LocalCluster(7, faults=faults, timeout=30) as c:
        coded, ref = _pair(c, errors=1)
        assert coded[0].code.recovery_threshold == coded[2].code.recovery_threshold == 2
        oc, orf = CodedSGD(coded, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            m(x).sum().backward()            # before any update: clean
            o.step()                         # the coded update corrupts four blocks of every operand
        with pytest.raises(CorruptResultError, match=r"results from workers \[0, 1, 2, 3, 4, 5, 6\] are "
                                                     r"inconsistent: more than 2 of them are corrupt"):
            oc.scrub()
        for _ in range(3):
            try:
                y = coded(x)
            except CorruptResultError as exc:
                assert "inconsistent: more than" in str(exc)
                assert coded[0].stats["retried"] + coded[2].stats["retried"] > 0
                assert "attempt 1: " in str(exc) and "attempt 2: " in str(exc)   # every failure named
            else:
                assert float((y - ref(x)).detach().abs().max()) <= 1e-12
        # a retry may read a luckier set (the first k + 2 answers with at most one of the
        # four corrupt blocks among them) and then succeeds, rightly: counted as healed,
        # and only ever after a retry; what never happens is a wrong output (above)
        for layer in (coded[0], coded[2]):
            assert layer.stats["healed"] <= layer.stats["retried"]
    # Two corrupt blocks of each operand are within one probe's power (and a product's
    # detection), three within the scrub's search (one block left out in turn, the other two
    # located, the four outside agreeing): the same run repairs them and ends equal to torch's SGD.
    for ranks, bad in (({2, 4}, (1, 3)), ({2, 4, 6}, (1, 3, 5))):
        with LocalCluster(7, faults=StorageErrors("gross", 1.0, ranks=ranks), timeout=30) as c:
            coded, ref = _pair(c, errors=1)
            oc, orf = CodedSGD(coded, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
            for m, o in ((coded, oc), (ref, orf)):
                o.zero_grad()
                m(x).sum().backward()
                o.step()
            reports = oc.scrub()
            assert [r.repaired for r in reports] == [bad] * 4
            assert [r.searched for r in reports] == [len(bad) == 3] * 4
            assert coded[0].stats["searched"] == (2 if len(bad) == 3 else 0)
            assert _max_diff(coded, ref) <= 1e-12


def _poke(cluster, layer, workers, scale=1e3):
    """Corrupt ``layer``'s stored weight blocks on ``workers`` in place (one entry each), as a
    soft error in the workers' memory would, after every queued operation reached them."""
    layer._handle.ack.exception()
    for w in workers:
        block = cluster._states[w].resident[layer._handle.id]
        block.reshape(-1)[w % block.size] += scale * (1 + np.abs(block).max())


def test_a_product_beyond_the_power_heals_after_a_scrub_and_is_counted():
    """Three corrupt stored blocks of the weight, 8 workers, k = 3, errors = 1: the backward
    product (threshold 2k - 1 = 5) holds three corrupt results of eight, two more than the
    eight correct and one more than a probe of all blocks locates. The product fails, fails
    again at once (the corruption is stored, not transient), the layer scrubs -- the scrub
    locates the three by leaving blocks out in turn and rebuilds them -- and the third attempt
    returns nn.Linear's input gradient to 1e-12 (float64); the heal is counted once. Without
    the scrub's search the scrub itself raised, and without the retry the product did."""
    x = torch.randn(5, 8, dtype=F64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    with LocalCluster(8, timeout=30) as c:
        torch.manual_seed(2)
        layer = CodedLinear(8, 6, cluster=c, dtype=F64, errors=1)
        torch.manual_seed(2)
        ref = torch.nn.Linear(8, 6, dtype=F64)
        assert layer.code.recovery_threshold == 3
        y = layer(x)                         # clean
        _poke(c, layer, (1, 4, 6))
        y.square().sum().backward()
        ref(xr).square().sum().backward()
        assert float((x.grad - xr.grad).abs().max()) <= 1e-12
        assert layer.stats["retried"] == 2 and layer.stats["healed"] == 1
        assert layer.stats["searched"] == 1 and layer.stats["repaired"] == 3
        assert float((layer(x) - ref(x)).detach().abs().max()) <= 1e-12   # reads the repaired blocks
        assert layer.stats["healed"] == 1 and layer.stats["retried"] == 2
    # A transient excess (one stored and two transient corrupt results in one backward job)
    # heals at the first retry, without a scrub, and is counted too.
    two = Fault(corruptions=(Corruption("gross", 1e3),))
    with LocalCluster(8, faults=Schedule({1: {2: two, 5: two}}), timeout=30) as c:  # job 1: backward
        torch.manual_seed(2)
        layer = CodedLinear(8, 6, cluster=c, dtype=F64, errors=1)
        x.grad = None
        y = layer(x)
        _poke(c, layer, (0,))
        y.square().sum().backward()
        assert float((x.grad - xr.grad).abs().max()) <= 1e-12
        assert layer.stats["retried"] == 1 and layer.stats["healed"] == 1 and layer.stats["scrubs"] == 0


def test_a_persistent_excess_still_raises_the_named_error_with_every_attempt():
    """Four corrupt stored blocks of eight at k = 3: beyond the scrub's search too. The product
    fails twice, the scrub raises, and the layer raises CorruptResultError naming both product
    failures and the scrub's; nothing is counted as healed."""
    x = torch.randn(5, 8, dtype=F64, requires_grad=True)
    with LocalCluster(8, timeout=30) as c:
        layer = CodedLinear(8, 6, cluster=c, dtype=F64, errors=1)
        y = layer(x)
        _poke(c, layer, (0, 2, 5, 7))
        with pytest.raises(CorruptResultError) as info:
            y.sum().backward()
        msg = str(info.value)
        assert msg.startswith("results from workers [0, 1, 2, 3, 4, 5, 6, 7] are inconsistent: more than 2")
        assert "attempt 1: results from workers [0, 1, 2, 3, 4, 5, 6, 7] are inconsistent: more than 1" in msg
        assert "backward product: the scrub of its stored blocks before attempt 3 failed" in msg
        assert "attempt 1: results from workers" in msg and "attempt 2: results from workers" in msg
        assert isinstance(info.value.__cause__, CorruptResultError)
        assert layer.stats["retried"] == 2 and layer.stats["healed"] == 0 and layer.stats["searched"] == 0


@pytest.mark.parametrize("seed", range(8))
def test_independent_faults_on_every_worker_are_corrected_or_raised_never_passed(seed):
    """The fault model the tests above leave: result and storage errors drawn independently on
    every worker, at rates at which some seeds exceed the code's power. Whatever the draw, a
    run either follows torch's SGD to 1e-12 or stops with CorruptResultError; it never
    returns silently wrong weights."""
    faults = SoftErrors("exponent", 0.03) + StorageErrors("sign", 0.05)
    with LocalCluster(7, backend="torch", faults=faults, seed=seed, timeout=30) as c:
        coded, ref = _pair(c, errors=1)
        oc = CodedSGD(coded, lr=0.1, momentum=0.9, weight_decay=1e-3, scrub_every=2)
        orf = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        try:
            _lockstep(coded, oc, ref, orf, steps=10, batch=5, seed=5, reduce="sum")
        except CorruptResultError as exc:
            assert "are inconsistent: more than" in str(exc)
            return
        assert _max_diff(coded, ref) <= 1e-12


def test_scrub_repairs_weight_and_momentum_blocks():
    faults = StorageErrors("gross", 1.0, ranks={3})  # rank 3's stored blocks hit at every update
    with LocalCluster(6, faults=faults, timeout=30) as c:
        coded, ref = _pair(c, errors=1)
        oc, orf = CodedSGD(coded, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(4, 8, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            m(x).sum().backward()
            o.step()
        reports = oc.scrub()
        assert [r.repaired for r in reports] == [(2,)] * 4  # weight and momentum of 2 layers
        assert [r.faulty for r in oc.scrub()] == [()] * 4
        assert _max_diff(coded, ref) <= 1e-12


def test_a_step_a_worker_failed_to_apply_is_booked_and_repaired_never_a_soft_error():
    with LocalCluster(6, timeout=30) as c:
        coded, ref = _pair(c, errors=1)
        oc, orf = CodedSGD(coded, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
        layer = next(m for m in coded.modules() if isinstance(m, CodedLinear))
        x = torch.randn(4, 8, dtype=F64)

        def step():
            for m, o in ((coded, oc), (ref, orf)):
                o.zero_grad()
                m(x).sum().backward()
                o.step()

        step()
        # wait until every worker applied the first step: a worker still behind would fail
        # *that* step, and the due scrub would repair it within the second
        layer._handle.ack.exception()
        c._states[1].resident.pop(layer._handle.id)  # worker 1 loses its block: the next step fails there
        step()
        layer._handle.ack.exception()  # wait for the acknowledgements
        assert 1 in c.stale_workers(layer._handle)
        y = coded(x)  # books the failure; worker 1's block is not used
        assert layer.stats["update_failures"] == 1 and layer._scrub_due
        assert layer.stats["corrected"] == 0  # never "located" as a soft error
        step()  # the due scrub rebuilds the stale block from the others
        assert not c.stale_workers(layer._handle)
        assert _max_diff(coded, ref) <= 1e-12
        del y


def test_uncorrectable_product_is_retried_then_raised():
    two = Fault(corruptions=(Corruption("gross", 1e3),))
    # puts take no job id: job 0 is the first forward product
    with LocalCluster(5, faults=Schedule({0: {1: two, 2: two}}), timeout=30) as c:
        layer = CodedLinear(4, 3, cluster=c, dtype=F64, errors=1)   # k=1: threshold 1, 4 spare
        x = torch.randn(2, 4, dtype=F64)
        y = layer(x)  # 2 corrupt of 5 with k=1: corrected directly
        assert torch.allclose(y, x @ layer.weight.T + layer.bias, rtol=0, atol=1e-13)
    three = {r: two for r in (1, 2, 3)}
    with LocalCluster(5, faults=Schedule({0: three}), timeout=30) as c:
        layer = CodedLinear(4, 3, cluster=c, dtype=F64, errors=1, code=MDSCode(5, 2))
        y = layer(x)  # 3 corrupt of 5 at threshold 2: detected, recomputed (job 1 is clean)
        assert layer.stats["retried"] == 1
        assert torch.allclose(y, x @ layer.weight.T + layer.bias, rtol=0, atol=1e-13)
    every = Schedule({j: three for j in range(50)})
    with LocalCluster(5, faults=every, timeout=30) as c:
        layer = CodedLinear(4, 3, cluster=c, dtype=F64, errors=1, code=MDSCode(5, 2), retries=2)
        with pytest.raises(CorruptResultError):
            layer(x)
        assert layer.stats["retried"] == 2


def test_state_dict_round_trip_and_interchange_with_nn_linear(cluster):
    coded, ref = _pair(cluster, seed=5)
    other, _ = _pair(cluster, seed=9)
    assert _max_diff(other, ref) > 0.01
    other.load_state_dict(coded.state_dict())
    assert _max_diff(other, ref) <= 1e-14
    _, fresh = _pair(cluster, seed=11)
    fresh.load_state_dict(coded.state_dict())      # a coded model's state loads into nn.Linear
    assert _max_diff(fresh, ref) <= 1e-14
    coded.load_state_dict(fresh.state_dict())      # and back
    bad = dict(coded.state_dict())
    bad["0.weight"] = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight"):
        coded.load_state_dict(bad)
    missing = {k: v for k, v in coded.state_dict().items() if k != "2.weight"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*2.weight"):
        coded.load_state_dict(missing)


def test_uncoded_model_parallel_baseline_matches_too(cluster):
    coded, ref = _pair(cluster, code=ReplicationCode(7, 7))
    x = torch.randn(5, 8, dtype=F64)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-13
    assert "ReplicationCode(workers=7, k=7)" in repr(coded[0])


def test_bad_input(cluster):
    with pytest.raises(ConfigurationError, match="`cluster` is None: under MPI only the root"):
        CodedLinear(4, 3, cluster=None)
    with pytest.raises(ConfigurationError, match="`code` must have workers=7 .* got 5"):
        CodedLinear(4, 3, cluster=cluster, code=MDSCode(5, 2))
    with pytest.raises(ConfigurationError, match="`code` must be an MDSCode or a ReplicationCode"):
        CodedLinear(4, 3, cluster=cluster, code=PolynomialCode(7, 2, 2))
    with pytest.raises(ConfigurationError, match=r"threshold 2k - 1 = 7\) too few workers for errors=1"):
        CodedLinear(4, 8, cluster=cluster, code=MDSCode(7, 4), errors=1)
    with pytest.raises(ConfigurationError, match="`errors` must be at most 3 for 7 workers"):
        default_code(7, errors=4)
    with pytest.raises(ConfigurationError, match="`model` has no parameters"):
        CodedSGD(torch.nn.ReLU(), lr=0.1)
    with pytest.raises(ConfigurationError, match="`in_features` must be"):
        CodedLinear(0, 3, cluster=cluster)
    with pytest.raises(ConfigurationError, match="`dtype` must be one of torch.float16.*got torch.int64"):
        CodedLinear(4, 3, cluster=cluster, dtype=torch.int64)
    layer = CodedLinear(4, 3, cluster=cluster, dtype=torch.float32)
    with pytest.raises(ConfigurationError, match=r"last dimension in_features=4, got shape \(2, 5\)"):
        layer(torch.randn(2, 5))
    with pytest.raises(ConfigurationError, match="input dtype must be the layer's dtype torch.float32"):
        layer(torch.randn(2, 4, dtype=F64))
    with pytest.raises(ConfigurationError, match="`model` must be an nn.Module"):
        CodedSGD([layer.bias], lr=0.1)
    with pytest.raises(ConfigurationError, match="`scrub_every` must be a positive integer"):
        CodedSGD(layer, lr=0.1, scrub_every=0)


# ------------------------------------------------------------------ the digits MLP
def test_digits_mlp_keeps_fault_free_accuracy_under_faults_where_uncoded_fails():
    pytest.importorskip("sklearn")
    from codedml.nn.digits import build_mlp, load_digits_split, train_mlp

    data = load_digits_split()
    # Stated rates: every worker result has a 1% chance of an exponent bit flip, every update
    # of a stored block a 0.2% chance of one (scrubbed every 10 steps), rank 4 is slow by 10 ms.
    faults = SoftErrors("exponent", 0.01) + FixedStragglers({4}, 0.01) + StorageErrors("exponent", 0.002)
    plain = train_mlp(build_mlp("plain"), data, epochs=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # overflow in the uncoded run
        with LocalCluster(8, faults=faults, seed=1, timeout=60) as c:
            coded = train_mlp(build_mlp("coded", c, errors=1), data, epochs=8, scrub_every=10)
        with LocalCluster(8, faults=faults, seed=1, timeout=60) as c:
            uncoded = train_mlp(build_mlp("uncoded", c), data, epochs=8, scrub_every=10)
    assert plain.final_accuracy > 0.94
    assert coded.error is None, coded.error
    assert abs(coded.final_accuracy - plain.final_accuracy) <= 0.01, (coded.final_accuracy, plain.final_accuracy)
    assert coded.stats["corrected"] > 0 and coded.stats["skipped"] > 0
    # Uncoded: corrupt products pass into training (diverging loss) or, once non-finite, stop it.
    degraded = uncoded.error is not None or uncoded.final_accuracy < plain.final_accuracy - 0.01
    assert degraded, uncoded.as_dict()


# ------------------------------------------------------------------ under mpiexec
@needs_mpiexec
@pytest.mark.parametrize("np_", [6, 8])
def test_coded_mlp_trains_under_mpiexec(np_):
    pytest.importorskip("mpi4py")
    res, done = run_mpi(Path(__file__).parent / "mpi_nn.py", np_, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert res["workers"] == np_ - 1 and res["keys"]
    assert res["max_param_diff"] <= 1e-11, res
    assert res["resume_diff"] <= 1e-11 and res["adam_diff"] <= 1e-11, res
    assert res["reencodes"] == 3, res
    assert res["stats"]["corrected"] > 0 and res["stats"]["repaired"] > 0, res
    assert len([l for l in done.stdout.splitlines() if l.endswith(" exit")]) == np_


def test_a_complex_weight_or_momentum_buffer_is_refused_by_name(cluster):
    """A cast to float64 would drop the imaginary part (torch only warns): refused, and the
    stored weight is unchanged."""
    layer = CodedLinear(5, 4, cluster=cluster, dtype=torch.float64)
    before = layer.weight.detach().clone()
    with pytest.raises(ConfigurationError, match=r"`W` must be real, got dtype torch.complex128"):
        layer.set_weight(torch.ones(4, 5, dtype=torch.complex128))
    with pytest.raises(ConfigurationError, match=r"`momentum_buffer` must be real, got dtype torch.complex64"):
        layer.set_momentum_buffer(torch.ones(4, 5, dtype=torch.complex64))
    assert torch.equal(layer.weight.detach(), before)
    assert np.allclose(cluster.fetch(layer._handle), before.numpy(), rtol=0, atol=1e-13)
    layer.release()
