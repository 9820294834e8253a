"""CodedLinear as a drop-in torch layer (issue 12 points 1, 2, 5, 6): dtype and device moves,
parameters() holding exactly the trainable weight and bias, every torch.optim optimizer either
training the coded weight or refused clearly, state_dict/deepcopy for resuming, and autograd's
guarantees (version check between forward and backward, no silent double backward,
zero_grad(set_to_none=False) discarding pending dW)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codedml import ConfigurationError, LocalCluster  # noqa: E402
from codedml.errors import StaleWeightError  # noqa: E402
from codedml.nn import CodedLinear, CodedSGD  # noqa: E402

F64 = torch.float64


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(7, timeout=30) as c:
        yield c


def _stored(layer):
    """The weight as the workers hold it, decoded (float64)."""
    return torch.from_numpy(layer.cluster.fetch(layer._handle))


def _pair(cluster, sizes=(8, 6, 3), dtype=F64, seed=1, bias=True):
    torch.manual_seed(seed)
    coded = torch.nn.Sequential(CodedLinear(sizes[0], sizes[1], bias=bias, cluster=cluster, dtype=dtype),
                                torch.nn.Tanh(),
                                CodedLinear(sizes[1], sizes[2], bias=bias, cluster=cluster, dtype=dtype))
    torch.manual_seed(seed)
    ref = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1], bias=bias, dtype=dtype), torch.nn.Tanh(),
                              torch.nn.Linear(sizes[1], sizes[2], bias=bias, dtype=dtype))
    return coded, ref


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sb)


# ------------------------------------------------------------------ 1. torch conventions
def test_dtype_moves_follow_nn_linear(cluster):
    torch.manual_seed(0)
    layer = CodedLinear(8, 40, cluster=cluster, dtype=torch.float32)
    ref = torch.nn.Linear(8, 40)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, 8, dtype=F64)
    assert layer.double() is layer and layer.weight.dtype == F64 and layer.bias.dtype == F64
    assert float((layer(x) - ref.double()(x)).detach().abs().max()) <= 1e-13
    for to, tol in ((torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)):
        layer.to(to)
        ref.to(to)
        y = layer(x.to(to))
        assert y.dtype == to and layer.weight.dtype == to and layer.bias.dtype == to
        assert float((y.double() - ref(x.to(to)).double()).detach().abs().max()) <= tol, to
        y.float().sum().backward()          # gradients in the layer's dtype
        assert layer.weight.grad.dtype == to
        layer.zero_grad()
    # the stored blocks stay float64 whatever the layer's dtype: .double() gets them back exactly
    W = layer._weight64().copy()
    assert torch.equal(layer.double().state_dict()["weight"], torch.from_numpy(W))
    assert layer.to("cpu") is layer and layer.weight.device.type == "cpu"
    with pytest.raises(ConfigurationError, match=r"cannot move to dtype torch.complex64: backend .* float16, bfloat16"):
        layer.to(torch.complex64)
    assert layer.weight.dtype == F64  # the refused move changed nothing
    with pytest.raises(ConfigurationError, match="input dtype must be the layer's dtype torch.float64"):
        layer(torch.randn(2, 8))


def test_compensated_products_follow_the_dtype():
    with LocalCluster(20, timeout=60) as c:
        layer = CodedLinear(12, 40, cluster=c, dtype=torch.float32)
        assert not layer._handle.compensated
        layer.double()
        assert layer._handle.compensated   # re-encoded with the float64 precision
        layer.float()
        assert not layer._handle.compensated


def test_parameters_hold_exactly_the_weight_and_bias(cluster):
    coded, _ = _pair(cluster, bias=False)
    names = [n for n, _ in coded.named_parameters()]
    assert names == ["0.weight", "2.weight"]
    layer = coded[0]
    opt = CodedSGD(coded, lr=0.1)
    x = torch.randn(4, 8, dtype=F64)
    coded(x).sum().backward()
    dW = layer.weight.grad.clone()
    before = layer.weight.detach().clone()
    opt.step()
    # `weight` reads the decoded weight after a coded step (the mirror is refreshed on read)
    assert torch.allclose(layer.weight.detach(), before - 0.1 * dW, rtol=0, atol=1e-13)
    assert torch.allclose(layer.weight.detach(), _stored(layer), rtol=0, atol=1e-14)


# ------------------------------------------------------------------ 2. any optimizer
def _optimizer_classes():
    return sorted((c for c in vars(torch.optim).values() if isinstance(c, type)
                   and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer),
                  key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _optimizer_classes(), ids=lambda c: c.__name__)
def test_every_torch_optimizer_trains_the_coded_weight_or_is_refused(cluster, cls):
    torch.manual_seed(2)
    layer = CodedLinear(6, 4, cluster=cluster, dtype=F64)
    try:
        opt = cls(layer.parameters(), lr=0.01)
    except ValueError:   # e.g. Muon: 2-D parameters only
        opt = cls([layer.weight], lr=0.01)
    x = torch.randn(5, 6, dtype=F64)
    before = _stored(layer)

    def closure():
        opt.zero_grad()
        loss = layer(x).square().sum()
        loss.backward()
        return loss

    closure()
    try:
        opt.step(closure) if cls is torch.optim.LBFGS else opt.step()
    except RuntimeError as exc:  # refused at the first step, with torch's reason
        assert cls is torch.optim.SparseAdam and "dense gradients" in str(exc)
        return
    after = _stored(layer)
    assert float((after - before).abs().max()) > 1e-6, "the optimizer step did not reach the workers"
    assert torch.allclose(layer.weight.detach(), after, rtol=0, atol=1e-13)   # mirror == stored
    y = layer(x)  # the next forward uses the stepped weight
    assert torch.allclose(y, x @ after.T + layer.bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
                                  lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)],
                         ids=["Adam", "SGD-nesterov"])
def test_torch_optimizers_follow_nn_linear_in_lockstep(cluster, make):
    coded, ref = _pair(cluster)
    oc, orf = make(coded.parameters()), make(ref.parameters())
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        x = torch.randn(6, 8, generator=g, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            m(x).square().mean().backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            o.step()
    assert _max_diff(coded, ref) <= 1e-12
    assert coded[0].stats["reencodes"] == 6


@pytest.mark.parametrize("name", ["Adam", "SGD-momentum"])
def test_digits_mlp_with_torch_optimizers_matches_nn_linear(name):
    pytest.importorskip("sklearn")
    from codedml.nn.digits import build_mlp, load_digits_split, train_mlp

    def make(model):
        if name == "Adam":
            return torch.optim.Adam(model.parameters(), lr=3e-3)
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    data = load_digits_split()
    plain = train_mlp(build_mlp("plain"), data, epochs=4, optimizer=make)
    with LocalCluster(6, timeout=60) as c:
        coded = train_mlp(build_mlp("coded", c, errors=1), data, epochs=4, optimizer=make)
    assert coded.error is None, coded.error
    assert plain.final_accuracy > 0.9
    assert abs(coded.final_accuracy - plain.final_accuracy) <= 0.01, (coded.final_accuracy, plain.final_accuracy)


def test_coded_sgd_with_clipping_and_zeroed_grads_follows_torch_sgd(cluster):
    """CodedSGD sends weight.grad itself when the stashed factors no longer describe it
    (clipped; zeroed without a new backward pass: momentum and weight decay still step)."""
    coded, ref = _pair(cluster)
    opts = dict(lr=0.05, momentum=0.9, weight_decay=1e-2)
    oc, orf = CodedSGD(coded, **opts), torch.optim.SGD(ref.parameters(), **opts)
    g = torch.Generator().manual_seed(3)
    for step in range(5):
        x = torch.randn(5, 8, generator=g, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad(set_to_none=False)
            if step != 2:
                m(x).square().sum().backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()
    assert _max_diff(coded, ref) <= 1e-12


# ------------------------------------------------------------------ 5. state
def test_coded_sgd_state_dict_resumes_momentum_exactly(cluster):
    opts = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    coded, ref = _pair(cluster)
    oc, orf = CodedSGD(coded, **opts), torch.optim.SGD(ref.parameters(), **opts)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 8, generator=g, dtype=F64) for _ in range(6)]

    def train(m, o, xs):
        for x in xs:
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()

    train(coded, oc, batches[:3])
    train(ref, orf, batches[:3])
    saved_model, saved_opt = coded.state_dict(), oc.state_dict()
    assert [b.dtype for b in saved_opt["coded"]["momentum_buffers"]] == [F64, F64]
    resumed, _ = _pair(cluster, seed=7)
    ro = CodedSGD(resumed, **opts)
    resumed.load_state_dict(saved_model)
    ro.load_state_dict(saved_opt)
    assert ro.steps == 3
    # the state round-trips exactly: saved again, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(ro.state_dict()["coded"]["momentum_buffers"],
                                                 saved_opt["coded"]["momentum_buffers"]))
    train(resumed, ro, batches[3:])
    train(ref, orf, batches[3:])
    assert _max_diff(resumed, ref) <= 1e-12   # momentum resumed (a restart would differ ~1e-2)
    fresh, _ = _pair(cluster, seed=7)
    fresh.load_state_dict(saved_model)
    train(fresh, CodedSGD(fresh, **opts), batches[3:])
    assert _max_diff(fresh, ref) > 1e-4
    with pytest.raises(ConfigurationError, match="no 'coded' entry"):
        ro.load_state_dict(torch.optim.SGD(ref.parameters(), **opts).state_dict())


def test_float32_layer_saves_its_float64_storage_exactly(cluster):
    torch.manual_seed(5)
    layer = CodedLinear(8, 6, cluster=cluster, dtype=torch.float32)
    opt = CodedSGD(layer, lr=0.1, momentum=0.5)
    for _ in range(2):
        opt.zero_grad()
        layer(torch.randn(4, 8)).square().sum().backward()
        opt.step()
    sd = layer.state_dict()
    assert sd["weight"].dtype == F64 and sd["bias"].dtype == torch.float32
    # the decoded float64 storage (another decode may differ in the last bit: another subset)
    d = float((sd["weight"] - torch.from_numpy(layer.cluster.fetch(layer._handle))).abs().max())
    assert d <= 1e-13, d
    assert not torch.equal(sd["weight"], sd["weight"].float().double())  # float64 digits kept
    other = CodedLinear(8, 6, cluster=cluster, dtype=torch.float32)
    other.load_state_dict(sd)
    assert torch.equal(other.state_dict()["weight"], sd["weight"])       # bit for bit
    plain = torch.nn.Linear(8, 6)
    plain.load_state_dict(sd)                                          # still loads into nn.Linear
    assert torch.equal(plain.weight, sd["weight"].float())


def test_deepcopy_is_an_independent_layer_on_the_same_cluster(cluster):
    coded, _ = _pair(cluster)
    opt = CodedSGD(coded, lr=0.1, momentum=0.9)
    x = torch.randn(3, 8, dtype=F64)
    coded(x).sum().backward()
    opt.step()
    twin = copy.deepcopy(coded)
    assert twin[0].cluster is cluster and twin[0]._handle.id != coded[0]._handle.id
    assert twin[0]._buffer.id != coded[0]._buffer.id
    assert _max_diff(twin, coded) == 0.0
    assert torch.equal(torch.from_numpy(twin[0].momentum_buffer()), torch.from_numpy(coded[0].momentum_buffer()))
    before = copy.deepcopy(twin.state_dict())
    opt.zero_grad()
    coded(x).sum().backward()
    opt.step()                                   # steps the original only
    assert _max_diff(twin, coded) > 1e-3
    assert all(torch.equal(before[k], v) for k, v in twin.state_dict().items())
    assert [n for n, _ in twin.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError, match="CodedLinear cannot be pickled: its weight lives on"):
        import pickle
        pickle.dumps(twin[0])


# ------------------------------------------------------------------ 6. autograd
@pytest.mark.parametrize("change", ["set_weight", "load_state_dict", "adam_step", "coded_step", "in_place"])
def test_changing_the_weight_between_forward_and_backward_raises(cluster, change):
    layer = CodedLinear(5, 4, cluster=cluster, dtype=F64)
    x = torch.randn(3, 5, dtype=F64, requires_grad=True)
    if change == "adam_step":
        adam = torch.optim.Adam(layer.parameters(), lr=0.1)
        layer(x).sum().backward()
    if change == "coded_step":
        sgd = CodedSGD(layer, lr=0.1)
        layer(x).sum().backward()
    y = layer(x)
    if change == "set_weight":
        layer.set_weight(torch.zeros(4, 5))
    elif change == "load_state_dict":
        layer.load_state_dict(layer.state_dict())
    elif change == "adam_step":
        adam.step()
    elif change == "coded_step":
        sgd.step()
    else:
        with torch.no_grad():
            layer.weight.mul_(2)
    with pytest.raises(StaleWeightError, match="changed after the forward pass"):
        y.sum().backward()


def test_backward_after_a_refresh_or_an_unchanged_weight_passes(cluster):
    layer = CodedLinear(5, 4, cluster=cluster, dtype=F64)
    x = torch.randn(3, 5, dtype=F64)
    y = layer(x)
    layer.state_dict()
    _ = layer.weight           # reading the weight changes nothing
    y.sum().backward()
    assert layer.weight.grad is not None


def test_double_backward_raises_instead_of_silently_wrong(cluster):
    layer = CodedLinear(5, 4, cluster=cluster, dtype=F64)
    x = torch.randn(3, 5, dtype=F64, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


@pytest.mark.parametrize("who", ["model", "optimizer", "layer"])
def test_zero_grad_without_set_to_none_discards_pending_dW(cluster, who):
    coded, ref = _pair(cluster)
    oc, orf = CodedSGD(coded, lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    x = torch.randn(4, 8, dtype=F64)
    for m, o in ((coded, oc), (ref, orf)):
        m(x * 3).sum().backward()
        if who == "model":
            m.zero_grad(set_to_none=False)
        elif who == "optimizer":
            o.zero_grad(set_to_none=False)
        else:
            for layer in (m[0], m[2]):
                layer.zero_grad(set_to_none=False)
        m(x).square().sum().backward()
        o.step()
    assert _max_diff(coded, ref) <= 1e-12
    assert coded[0]._pending and len(coded[0]._pending) == 1


def test_autograd_grad_does_not_leak_into_the_coded_step(cluster):
    coded, ref = _pair(cluster)
    oc, orf = CodedSGD(coded, lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    x = torch.randn(4, 8, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, o in ((coded, oc), (ref, orf)):
            torch.autograd.grad(m(x).sum(), x)      # accumulates nothing into .grad
            o.zero_grad()
            m(x.detach()).square().sum().backward()
            m(x.detach() * 2).sum().backward()
            o.step()
    assert _max_diff(coded, ref) <= 1e-12
    assert np.isfinite(coded[0]._weight64()).all()


def test_a_penalty_on_the_weight_in_the_loss_reaches_the_coded_step(cluster):
    """weight.grad = the layer's own dW + a penalty's gradient: CodedSGD must not send the
    layer's factors alone (it sends weight.grad)."""
    coded, ref = _pair(cluster)
    oc, orf = CodedSGD(coded, lr=0.1, momentum=0.5), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x = torch.randn(4, 8, generator=g, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            (m(x).square().sum() + 0.3 * m[0].weight.square().sum()).backward()
            o.step()
    assert _max_diff(coded, ref) <= 1e-12
    assert coded[0]._pending is None   # the factors were dropped; weight.grad was sent


def test_layer_used_twice_in_one_forward_keeps_its_factors(cluster):
    torch.manual_seed(0)
    layer = CodedLinear(6, 6, cluster=cluster, dtype=F64)
    ref = torch.nn.Linear(6, 6, dtype=F64)
    ref.load_state_dict(layer.state_dict())
    oc, orf = CodedSGD(layer, lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    x = torch.randn(2, 6, dtype=F64)
    for m, o in ((layer, oc), (ref, orf)):
        o.zero_grad()
        m(torch.tanh(m(x))).square().sum().backward()
        o.step()
    assert layer._pending is not None and len(layer._pending) == 2
    assert _max_diff(layer, ref) <= 1e-12


def test_assigning_a_new_weight_parameter_stores_it(cluster):
    layer = CodedLinear(4, 3, cluster=cluster, dtype=F64)
    layer.weight = torch.nn.Parameter(torch.ones(3, 4, dtype=F64))
    x = torch.randn(2, 4, dtype=F64)
    assert torch.allclose(layer(x), x @ torch.ones(4, 3, dtype=F64) + layer.bias, rtol=0, atol=1e-13)
    assert torch.allclose(_stored(layer), torch.ones(3, 4, dtype=F64), rtol=0, atol=1e-14)
    layer.weight = torch.nn.Parameter(torch.ones(2, 4, dtype=F64))
    with pytest.raises(ConfigurationError, match=r"`weight` must have shape \(3, 4\), got \(2, 4\)"):
        layer(x)


def test_in_place_edit_of_a_stale_mirror_is_refused(cluster):
    layer = CodedLinear(4, 3, cluster=cluster, dtype=F64)
    opt = CodedSGD(layer, lr=0.1)
    w = layer.weight                 # a reference kept across a coded step
    layer(torch.randn(2, 4, dtype=F64)).sum().backward()
    opt.step()
    with torch.no_grad():
        w.mul_(2)                    # edits the pre-step values the mirror still holds
    with pytest.raises(StaleWeightError, match="modified in place at the root while a CodedSGD step"):
        layer(torch.randn(2, 4, dtype=F64))
    layer.set_weight(torch.ones(3, 4))  # choosing the weight resolves it
    x = torch.randn(2, 4, dtype=F64)
    assert torch.allclose(layer(x), x @ torch.ones(4, 3, dtype=F64) + layer.bias, rtol=0, atol=1e-13)
    assert torch.equal(layer.weight.detach(), torch.ones(3, 4, dtype=F64))


def test_edits_through_data_reach_the_workers(cluster):
    """A change written through ``weight.data`` (clipping, an initialisation) bypasses the
    version counter, as torch means it to; the layer compares the mirror's values with what
    it stored, so the next forward still uses the edited weight, exactly as nn.Linear does."""
    coded, ref = _pair(cluster)
    x = torch.randn(5, 8, dtype=F64)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-12
    for m in (coded, ref):
        m[0].weight.data.mul_(-2.0)                       # through the attribute
        for p in m[2].parameters():                       # through parameters(), as clipping code does
            p.data.clamp_(-0.1, 0.1)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-12
    assert torch.allclose(_stored(coded[0]), ref[0].weight.detach(), rtol=0, atol=1e-14)
    assert coded[0].stats["reencodes"] == 1 and coded[2].stats["reencodes"] == 1
    coded(x)                                              # nothing changed since: no re-encode
    assert coded[0].stats["reencodes"] == 1


def test_data_edit_between_forward_and_backward_is_refused(cluster):
    """The workers hold the forward's weight; nn.Linear's backward would read values edited
    through ``.data`` in between. Like an in-place edit there, it is refused by name."""
    layer = CodedLinear(4, 3, cluster=cluster, dtype=F64)
    y = layer(torch.randn(2, 4, dtype=F64, requires_grad=True))
    layer.weight.data.mul_(2)
    with pytest.raises(StaleWeightError, match="modified through `.data`"):
        y.sum().backward()


def test_data_edit_of_a_stale_mirror_is_refused(cluster):
    """After a CodedSGD step the mirror holds the pre-step weight until it is read; an edit of
    it through ``.data`` (reached through ``parameters()``, which does not refresh it) cannot be
    combined with the step, so it is refused by name, not dropped at the next refresh."""
    layer = CodedLinear(4, 3, cluster=cluster, dtype=F64)
    opt = CodedSGD(layer, lr=0.1)
    layer(torch.randn(2, 4, dtype=F64)).sum().backward()
    opt.step()
    for p in layer.parameters():
        p.data.zero_()
    with pytest.raises(StaleWeightError, match="modified in place at the root while a CodedSGD step"):
        layer(torch.randn(2, 4, dtype=F64))


def test_state_dict_keep_vars_pushes_a_root_edit_first(cluster):
    layer = CodedLinear(4, 3, cluster=cluster, dtype=F64)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    sd = layer.state_dict(keep_vars=True)
    assert sd["weight"] is layer.weight
    assert torch.allclose(_stored(layer), torch.full((3, 4), 0.5, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_device_moves_to_cuda_and_back(cluster):
    torch.manual_seed(0)
    layer = CodedLinear(8, 5, cluster=cluster, dtype=F64)
    ref = torch.nn.Linear(8, 5, dtype=F64)
    ref.load_state_dict(layer.state_dict())
    layer.cuda()
    ref.cuda()
    assert layer.weight.device.type == "cuda" and layer.bias.device.type == "cuda"
    x = torch.randn(3, 8, dtype=F64, device="cuda", requires_grad=True)
    y = layer(x)
    assert y.device.type == "cuda"
    assert float((y - ref(x)).abs().max()) <= 1e-13
    y.sum().backward()
    assert layer.weight.grad.device.type == "cuda"
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    opt.step()
    assert torch.allclose(layer.weight.detach().cpu(), _stored(layer), rtol=0, atol=1e-13)
    assert layer.state_dict()["weight"].device.type == "cuda"
    layer.cpu()
    assert layer(x.detach().cpu()).device.type == "cpu"


def test_dtype_move_with_overwritten_parameters_keeps_training(cluster):
    """Under torch.__future__.set_overwrite_module_params_on_conversion(True) a move makes new
    parameter objects: the layer follows the new one (its gradient and the coded step)."""
    coded, ref = _pair(cluster, dtype=torch.float32)
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        coded.double()
        ref.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    oc, orf = CodedSGD(coded, lr=0.1, momentum=0.9), torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(6)
    for _ in range(3):
        x = torch.randn(4, 8, generator=g, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            m(x).square().sum().backward()
            o.step()
    assert _max_diff(coded, ref) <= 1e-12
    assert coded[0]._pending  # the factors followed the new parameter's gradient
