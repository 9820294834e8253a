"""CodedConv2d behaves like nn.Conv2d (outputs, input/kernel/bias gradients, gradcheck, training
with CodedSGD against torch's SGD, state_dict), also under stragglers, soft errors and stored-
block corruption; convert/unconvert swap a model's layers keeping its function and weights and
refuse what they cannot convert by the module's path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from codedml import ConfigurationError, LocalCluster  # noqa: E402
from codedml.codes import MDSCode, ReplicationCode  # noqa: E402
from codedml.faults import FixedStragglers, SoftErrors, StorageErrors  # noqa: E402
from codedml.nn import CodedConv2d, CodedLinear, CodedSGD, convert, unconvert  # noqa: E402
from _mpirun import needs_mpiexec, run_mpi  # noqa: E402

F64 = torch.float64
nn = torch.nn


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(7, timeout=30) as c:
        yield c


def _pair(cluster, *args, seed=0, dtype=F64, errors=0, code=None, **kw):
    torch.manual_seed(seed)
    coded = CodedConv2d(*args, cluster=cluster, dtype=dtype, errors=errors, code=code, **kw)
    torch.manual_seed(seed)
    ref = nn.Conv2d(*args, dtype=dtype, **kw)
    return coded, ref


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sb)
    return max(float((sa[k] - sb[k]).abs().max()) for k in sb)


def _compare(coded, ref, x, tol):
    """Outputs and every gradient of ``coded`` equal ``ref``'s within ``tol`` relative to
    their scale (float64)."""
    xc, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yc, yr = coded(xc), ref(xr)
    assert yc.shape == yr.shape and yc.dtype == yr.dtype
    scale = lambda t: max(1.0, float(t.detach().abs().max()))  # noqa: E731
    assert float((yc - yr).detach().abs().max()) <= tol * scale(yr)
    g = torch.randn_like(yr)
    yc.backward(g)
    yr.backward(g)
    assert float((xc.grad - xr.grad).abs().max()) <= tol * scale(xr.grad)
    dK = coded.weight_grad()
    assert coded.weight.shape == ref.weight.shape                 # nn.Conv2d's 4-d kernel
    assert dK is coded.weight.grad and dK.shape == ref.weight.grad.shape
    assert float((dK - ref.weight.grad).abs().max()) <= tol * scale(ref.weight.grad)
    if ref.bias is not None:
        assert float((coded.bias.grad - ref.bias.grad).abs().max()) <= tol * scale(ref.bias.grad)


# ------------------------------------------------------------------ a torch layer
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cin=st.integers(1, 3), cout=st.integers(1, 5), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dh=st.integers(1, 2), dw=st.integers(1, 2), bias=st.booleans(), batch=st.integers(1, 3),
       extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
       mode=st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]),
       seed=st.integers(0, 2**16))
def test_matches_nn_conv2d_over_shapes_stride_padding_dilation(cluster, cin, cout, kh, kw, sh, sw, ph,
                                                                pw, dh, dw, bias, batch, extra, mode, seed):
    # reflect padding needs the padding below the input size; the input covers the dilated kernel
    H = max(dh * (kh - 1) + 1, ph + 1) + extra[0]
    W = max(dw * (kw - 1) + 1, pw + 1) + extra[1]
    coded, ref = _pair(cluster, cin, cout, (kh, kw), stride=(sh, sw), padding=(ph, pw),
                       dilation=(dh, dw), bias=bias, padding_mode=mode, seed=seed)
    assert _max_diff(coded, ref) <= 1e-14  # nn.Conv2d's initialisation, from the same stream
    x = torch.randn(batch, cin, H, W, dtype=F64, generator=torch.Generator().manual_seed(seed))
    _compare(coded, ref, x, 1e-12)


@pytest.mark.parametrize("kw", [dict(padding="same", dilation=2), dict(padding="same", kernel_size=(2, 4)),
                                dict(padding="valid", stride=2), dict(padding="same", padding_mode="reflect")])
def test_same_and_valid_padding(cluster, kw):
    ks = kw.pop("kernel_size", 3)
    coded, ref = _pair(cluster, 2, 3, ks, seed=3, **kw)
    _compare(coded, ref, torch.randn(2, 2, 7, 6, dtype=F64), 1e-12)


def test_unbatched_input_and_float32(cluster):
    coded, ref = _pair(cluster, 2, 4, 3, padding=1, seed=1)
    x = torch.randn(2, 5, 5, dtype=F64)
    assert coded(x).shape == (4, 5, 5)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-13
    coded, ref = _pair(cluster, 2, 4, 3, padding=1, seed=1, dtype=torch.float32)
    x = torch.randn(3, 2, 5, 5)
    y = coded(x)
    assert y.dtype == torch.float32
    assert float((y - ref(x)).detach().abs().max()) <= 1e-5


def test_dtype_moves_and_deepcopy_like_nn_conv2d(cluster):
    import copy

    coded, ref = _pair(cluster, 2, 3, 3, padding=1, stride=2, seed=7, dtype=torch.float32)
    coded.double()
    ref.double()
    x = torch.randn(2, 2, 6, 5, dtype=F64)
    assert coded.weight.dtype == coded.bias.dtype == F64
    assert coded.weight.shape == ref.weight.shape == (3, 2, 3, 3)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-13
    twin = copy.deepcopy(coded)                 # an independent layer on the same cluster
    assert isinstance(twin, CodedConv2d) and twin.kernel_shape == coded.kernel_shape
    assert twin.weight.shape == ref.weight.shape and twin.weight is not coded.weight
    assert float((twin(x) - ref(x)).detach().abs().max()) <= 1e-13
    twin.set_weight(torch.zeros(3, 2, 3, 3))
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-13   # the original is unchanged
    assert float((twin(x) - twin.bias.view(1, 3, 1, 1)).detach().abs().max()) == 0


def test_gradcheck_float64_also_under_soft_errors():
    faults = SoftErrors("exponent", 0.03) + SoftErrors("nan", 0.01)
    with LocalCluster(7, faults=faults, seed=4, timeout=30) as c:
        conv = CodedConv2d(2, 3, (2, 3), stride=(1, 2), padding=1, dilation=(2, 1), cluster=c,
                           errors=1, dtype=F64)
        x = torch.randn(2, 2, 4, 5, dtype=F64, requires_grad=True)
        # Which workers answer first decides the decode's rounding (nondet_tol, as for CodedLinear).
        # dK: test_weight_grad_matches_finite_differences and against nn.Conv2d's above (a weight
        # perturbed by gradcheck between forward and backward would trip the version check)
        assert torch.autograd.gradcheck(lambda x, b: conv(x), (x, conv.bias), nondet_tol=1e-12)
        assert conv.stats["corrected"] > 0  # the soft errors were there, and corrected


def test_weight_grad_matches_finite_differences(cluster):
    conv = CodedConv2d(2, 3, 3, stride=2, padding=1, cluster=cluster, dtype=F64)
    x = torch.randn(2, 2, 6, 5, dtype=F64)

    def loss():
        with torch.no_grad():
            return float(conv(x).pow(3).sum())
    conv(x).pow(3).sum().backward()
    dK = conv.weight_grad()
    assert dK.shape == conv.kernel_shape == conv.weight.shape == (3, 2, 3, 3)
    K = conv.state_dict()["weight"]   # the decoded kernel, out x C x kh x kw
    assert K.shape == (3, 2, 3, 3)
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (1, 1, 2, 1), (2, 0, 1, 2)]:
        Kp, Km = K.clone(), K.clone()
        Kp[idx] += eps
        Km[idx] -= eps
        conv.set_weight(Kp)
        lp = loss()
        conv.set_weight(Km)
        lm = loss()
        assert abs((lp - lm) / (2 * eps) - float(dK[idx])) <= 1e-6 * max(1.0, abs(float(dK[idx])))
    conv.set_weight(K)


def _lockstep(coded, oc, ref, orf, *, steps, shape, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(*shape, generator=g, dtype=F64)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()


def _cnn(make_conv, make_lin, seed):
    torch.manual_seed(seed)
    return nn.Sequential(make_conv(1, 3, 3, padding=1), nn.Tanh(), make_conv(3, 4, 3, stride=2, padding=1),
                         nn.Tanh(), nn.Flatten(), make_lin(4 * 3 * 3, 5))


def test_training_follows_torch_sgd(cluster):
    coded = _cnn(lambda *a, **k: CodedConv2d(*a, cluster=cluster, dtype=F64, **k),
                 lambda *a: CodedLinear(*a, cluster=cluster, dtype=F64), 2)
    ref = _cnn(lambda *a, **k: nn.Conv2d(*a, dtype=F64, **k), lambda *a: nn.Linear(*a, dtype=F64), 2)
    opts = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    oc, orf = CodedSGD(coded, **opts), torch.optim.SGD(ref.parameters(), **opts)
    assert len(oc.layers) == 3
    _lockstep(coded, oc, ref, orf, steps=8, shape=(4, 1, 6, 6), seed=0)
    assert _max_diff(coded, ref) <= 1e-12
    assert coded[0].stats["updates"] == 8


@pytest.mark.parametrize("make_opt", [lambda ps: torch.optim.Adam(ps, lr=1e-2),
                                      lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)])
def test_a_converted_cnn_trains_with_torch_optimizers_like_the_original(cluster, make_opt):
    ref = _cnn(lambda *a, **k: nn.Conv2d(*a, dtype=F64, **k), lambda *a: nn.Linear(*a, dtype=F64), 4)
    coded = convert(ref, cluster, errors=1)
    oc, orf = make_opt(coded.parameters()), make_opt(ref.parameters())
    _lockstep(coded, oc, ref, orf, steps=5, shape=(4, 1, 6, 6), seed=2)
    assert _max_diff(coded, ref) <= 1e-12   # the state_dict holds the stored (decoded) weights


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda ps: torch.optim.Adam(ps, lr=1e-2),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.5),
    lambda ps: torch.optim.Adagrad(ps, lr=0.05)], ids=["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_torch_optimizers_step_the_4d_weight_like_nn_conv2d(cluster, make_opt):
    coded, ref = _pair(cluster, 2, 3, (3, 2), stride=(2, 1), padding=1, seed=8)
    oc, orf = make_opt(coded.parameters()), make_opt(ref.parameters())
    W0 = coded.weight.detach().clone()
    _lockstep(coded, oc, ref, orf, steps=4, shape=(2, 2, 5, 6), seed=4)
    assert coded.weight.shape == ref.weight.shape == (3, 2, 3, 2)
    assert float((coded.weight.detach() - W0).abs().max()) > 1e-3       # the optimizer moved it
    assert coded.stats["reencodes"] == 4                                  # and it reached the workers
    assert _max_diff(coded, ref) <= 1e-12
    # the optimizer's state has the parameter's shape, as for nn.Conv2d
    sc, sr = oc.state[coded.weight], orf.state[ref.weight]
    assert sorted(sc) == sorted(sr)
    assert all(sc[k].shape == sr[k].shape for k in sr if torch.is_tensor(sr[k]) and sr[k].ndim)
    # the products use the stepped weight: outputs equal nn.Conv2d's after training
    x = torch.randn(2, 2, 5, 6, dtype=F64)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-12


def test_coded_sgd_momentum_state_is_4d_and_resumes(cluster):
    coded, ref = _pair(cluster, 1, 3, 3, padding=1, seed=12)
    opts = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    oc, orf = CodedSGD(coded, **opts), torch.optim.SGD(ref.parameters(), **opts)
    _lockstep(coded, oc, ref, orf, steps=3, shape=(2, 1, 5, 5), seed=6)
    sd = oc.state_dict()
    (buf,) = sd["coded"]["momentum_buffers"]
    ref_buf = orf.state[ref.weight]["momentum_buffer"]
    assert buf.shape == ref_buf.shape == (3, 1, 3, 3)
    assert float((buf - ref_buf).abs().max()) <= 1e-12
    # resume: a fresh layer and optimizer from the two state_dicts continue like torch's SGD
    again, _ = _pair(cluster, 1, 3, 3, padding=1, seed=99)
    again.load_state_dict(coded.state_dict())
    oa = CodedSGD(again, **opts)
    oa.load_state_dict(sd)
    _lockstep(again, oa, ref, orf, steps=3, shape=(2, 1, 5, 5), seed=7)
    assert _max_diff(again, ref) <= 1e-12
    with pytest.raises(ConfigurationError, match=r"`momentum_buffer` must have shape \(3, 1, 3, 3\) or "
                                                 r"\(3, 9\), got \(3, 1, 3\)"):
        again.set_momentum_buffer(torch.zeros(3, 1, 3))


class _WrittenForConv2d(nn.Module):
    """A model written against nn.Conv2d's API: it reads ``conv.weight.shape[1]`` to reshape
    its input, re-initialises its kernels with ``nn.init`` on ``m.weight``, and puts a penalty
    on the kernels' norms into the loss (a gradient reaching ``weight`` from outside the
    convolution)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, dtype=F64)
        self.conv2 = nn.Conv2d(4, 3, 2, stride=2, dtype=F64)
        self.head = nn.Linear(3 * 2 * 2, 2, dtype=F64)

    def reset_parameters(self, seed):
        torch.manual_seed(seed)
        for m in (self.conv, self.conv2):
            nn.init.kaiming_uniform_(m.weight, a=0.1)       # in place on the 4-d parameter
            fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
            nn.init.uniform_(m.bias, -fan_in ** -0.5, fan_in ** -0.5)

    def forward(self, flat):
        x = flat.reshape(flat.shape[0], self.conv.weight.shape[1], 4, 4)
        h = torch.tanh(self.conv2(torch.tanh(self.conv(x))))
        return self.head(h.flatten(1))

    def penalty(self):
        return sum(m.weight.flatten(1).norm(dim=1).sum() for m in (self.conv, self.conv2))


@pytest.mark.parametrize("optimizer", ["CodedSGD", "Adam"])
def test_a_model_written_for_nn_conv2d_works_after_convert(cluster, optimizer):
    torch.manual_seed(0)
    ref = _WrittenForConv2d()
    coded = convert(ref, cluster, errors=1)
    assert isinstance(coded.conv, CodedConv2d) and isinstance(coded.conv2, CodedConv2d)
    for c, r in ((coded.conv, ref.conv), (coded.conv2, ref.conv2)):
        assert c.weight.shape == r.weight.shape and c.weight.shape[1] == r.in_channels
    # nn.init on the coded layers' weight, as the model's own code does it
    coded.reset_parameters(5)
    ref.reset_parameters(5)
    assert _max_diff(coded, ref) <= 1e-14
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 32, dtype=F64, generator=g)
    assert float((coded(x) - ref(x)).detach().abs().max()) <= 1e-12
    if optimizer == "CodedSGD":
        oc = CodedSGD(coded, lr=0.05, momentum=0.9)
        orf = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    else:
        oc, orf = torch.optim.Adam(coded.parameters(), lr=1e-2), torch.optim.Adam(ref.parameters(), lr=1e-2)
    for step in range(4):
        x, y = torch.randn(3, 32, dtype=F64, generator=g), torch.randint(0, 2, (3,), generator=g)
        for m, o in ((coded, oc), (ref, orf)):
            o.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y) + 1e-2 * m.penalty()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()
        if step == 1:   # re-initialise mid-run (after coded steps moved the stored weight on)
            coded.reset_parameters(6)
            ref.reset_parameters(6)
    assert _max_diff(coded, ref) <= 1e-12
    back = unconvert(coded)
    assert type(back.conv) is nn.Conv2d and _max_diff(back, ref) <= 1e-12


def test_training_under_stragglers_soft_errors_and_storage_errors():
    # One straggler (rank 2) and every corruption on one other worker (rank 5): within what
    # errors=1 corrects in every product and every scrub, whatever the timing. (Spread over all
    # workers at tests/test_nn.py's rates, a scrub sometimes met more corrupt results than it
    # corrects, depending on the fault seed and on the straggler's timing: CorruptResultError,
    # as it must.)
    faults = (FixedStragglers({2}, 0.5) + SoftErrors("exponent", 0.2, ranks={5}) +
              StorageErrors("exponent", 0.3, ranks={5}))
    with LocalCluster(8, faults=faults, seed=5, timeout=30) as c:
        coded, ref = _pair(c, 2, 5, 3, padding=1, stride=(1, 2), errors=1, seed=6)
        oc = CodedSGD(coded, lr=0.05, momentum=0.9, weight_decay=1e-3, scrub_every=1, scrub_timeout=2.0)
        orf = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        _lockstep(coded, oc, ref, orf, steps=12, shape=(3, 2, 5, 6), seed=1)
        assert _max_diff(coded, ref) <= 1e-11
    # The scrubs repair rank 5's stored blocks and the straggler is skipped in every run; how
    # many of rank 5's corrupt *results* a product corrects depends on whether its result is
    # among those the product decodes from (usually 3 here; 0 in one fresh-clone run of the
    # whole suite on a loaded machine), so that count is not asserted.
    assert coded.stats["repaired"] > 0 and coded.stats["skipped"] > 0, coded.stats


def test_state_dict_interchange_with_nn_conv2d(cluster):
    coded, ref = _pair(cluster, 2, 3, (3, 2), seed=5)
    other, _ = _pair(cluster, 2, 3, (3, 2), seed=9)
    assert _max_diff(other, ref) > 0.01
    sd = ref.state_dict()
    other.load_state_dict(sd)                   # nn.Conv2d's state loads into CodedConv2d
    assert tuple(sd["weight"].shape) == (3, 2, 3, 2)   # the caller's dict is not changed
    assert _max_diff(other, ref) <= 1e-14
    fresh = nn.Conv2d(2, 3, (3, 2), dtype=F64)
    fresh.load_state_dict(coded.state_dict())   # and back
    assert _max_diff(fresh, ref) <= 1e-14
    bad = dict(coded.state_dict(), weight=torch.zeros(3, 12, dtype=F64))  # the im2col matrix
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: .*\(3, 12\).*\(3, 2, 3, 2\)"):
        coded.load_state_dict(bad)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*weight"):
        coded.load_state_dict({"bias": coded.bias.detach()})


def test_repr_parameters_and_bad_input(cluster):
    conv = CodedConv2d(2, 3, 3, stride=2, padding=1, dilation=2, bias=False,
                       padding_mode="circular", cluster=cluster, dtype=F64)
    assert repr(conv) == ("CodedConv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
                          "dilation=(2, 2), bias=False, padding_mode=circular, "
                          "code=MDSCode(workers=7, k=3, construction='circle', systematic=True), errors=0)")
    sd = conv.state_dict()
    assert list(sd) == ["weight"] and sd["weight"].shape == (3, 2, 3, 3)   # nn.Conv2d's
    assert [(n, tuple(p.shape)) for n, p in conv.named_parameters()] == [("weight", (3, 2, 3, 3))]
    assert torch.equal(conv.weight.detach(), sd["weight"]) and torch.equal(conv.kernel, sd["weight"])
    kept = conv.state_dict(keep_vars=True)["weight"]      # the parameter itself, 4-d as nn.Conv2d's
    assert kept is conv.weight and kept.shape == (3, 2, 3, 3)
    with pytest.raises(ConfigurationError, match=r"`groups` must be 1 for CodedConv2d .* got 2"):
        CodedConv2d(2, 4, 3, groups=2, cluster=cluster)
    with pytest.raises(ConfigurationError, match=r"`padding_mode` must be one of .* got 'mirror'"):
        CodedConv2d(2, 4, 3, padding_mode="mirror", cluster=cluster)
    with pytest.raises(ConfigurationError, match=r"`padding`='same' needs stride 1 .* got stride=\(2, 2\)"):
        CodedConv2d(2, 4, 3, padding="same", stride=2, cluster=cluster)
    with pytest.raises(ConfigurationError, match=r"`kernel_size` must be an integer >= 1 or a pair of them, got \(3, 0\)"):
        CodedConv2d(2, 4, (3, 0), cluster=cluster)
    with pytest.raises(ConfigurationError, match=r"`padding` must be 'same', 'valid', .* got 'full'"):
        CodedConv2d(2, 4, 3, padding="full", cluster=cluster)
    with pytest.raises(ConfigurationError, match=r"`in_channels` must be an integer >= 1, got 0"):
        CodedConv2d(0, 4, 3, cluster=cluster)
    with pytest.raises(ConfigurationError, match=r"`cluster` is None"):
        CodedConv2d(1, 4, 3, cluster=None)
    conv = CodedConv2d(2, 3, 3, cluster=cluster, dtype=torch.float32)
    with pytest.raises(ConfigurationError, match=r"input must have shape \(N, in_channels=2, H, W\) .* got \(1, 3, 5, 5\)"):
        conv(torch.randn(1, 3, 5, 5))
    with pytest.raises(ConfigurationError, match=r"smaller than the dilated kernel \(3, 3\)"):
        conv(torch.randn(1, 2, 2, 5))
    with pytest.raises(ConfigurationError, match="input dtype must be the layer's dtype torch.float32"):
        conv(torch.randn(1, 2, 5, 5, dtype=F64))
    with pytest.raises(ConfigurationError, match=r"`W` must have shape \(3, 2, 3, 3\) \(or the kernel "
                                                 r"matrix's \(3, 18\)\), got \(3, 2, 3, 2\)"):
        conv.set_weight(torch.zeros(3, 2, 3, 2))
    with pytest.raises(ConfigurationError, match=r"`weight` must have shape \(3, 2, 3, 3\), got \(3, 18\)"):
        conv.weight = nn.Parameter(torch.zeros(3, 18))    # a new parameter must be the 4-d kernel
        conv(torch.randn(1, 2, 5, 5))


# ------------------------------------------------------------------ convert / unconvert
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8, dtype=F64), nn.ReLU(), nn.Linear(8, 3, bias=False, dtype=F64))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="replicate", dtype=F64)
        self.norm = nn.BatchNorm2d(4, dtype=F64)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


def _small_cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, dtype=F64), nn.ReLU(), _Block(),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 5, dtype=F64))


@pytest.mark.parametrize("make, shape", [(_mlp, (5, 6)), (_small_cnn, (4, 1, 6, 6))])
def test_convert_keeps_outputs_and_unconvert_gives_torch_layers_back(cluster, make, shape):
    model = make()
    x = torch.randn(*shape, dtype=F64)
    state = torch.random.get_rng_state()
    coded = convert(model, cluster, errors=1)
    assert torch.equal(torch.random.get_rng_state(), state)      # the caller's random stream is untouched
    kinds = [type(m) for m in coded.modules() if isinstance(m, (nn.Linear, nn.Conv2d, CodedLinear))]
    assert kinds and all(k in (CodedLinear, CodedConv2d) for k in kinds)
    assert all(type(m) in (nn.Linear, nn.Conv2d) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert all(m.errors == 1 for m in coded.modules() if isinstance(m, CodedLinear))
    assert float((coded(x) - model(x)).detach().abs().max()) <= 1e-13
    assert list(coded.state_dict()) == list(model.state_dict())
    assert _max_diff(coded, model) <= 1e-14
    # train the coded model a little: unconvert carries the current decoded weights
    opt = CodedSGD(coded, lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        coded(x).square().mean().backward()
        opt.step()
    assert _max_diff(coded, model) > 1e-3
    plain = unconvert(coded)
    assert all(type(m) in (nn.Linear, nn.Conv2d) for m in plain.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert not any(isinstance(m, CodedLinear) for m in plain.modules())
    assert _max_diff(plain, coded) <= 1e-14
    assert float((plain(x) - coded(x)).detach().abs().max()) <= 1e-13
    assert any(isinstance(m, CodedLinear) for m in coded.modules())  # not in place: coded still works


def test_converted_cnn_trains_like_the_original(cluster):
    model = _small_cnn()
    coded = convert(model, cluster, code=ReplicationCode(7, 7))
    assert all(m.code == ReplicationCode(7, 7) for m in coded.modules() if isinstance(m, CodedLinear))
    opts = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    oc, orf = CodedSGD(coded, **opts), torch.optim.SGD(model.parameters(), **opts)
    _lockstep(coded, oc, model, orf, steps=5, shape=(4, 1, 6, 6), seed=3)
    assert _max_diff(coded, model) <= 1e-12   # BatchNorm's running statistics included


def test_convert_in_place_shared_modules_and_a_single_layer(cluster):
    lin = nn.Linear(4, 4, dtype=F64)
    model = nn.Sequential(lin, nn.Tanh(), lin)           # one module used twice
    x = torch.randn(3, 4, dtype=F64)
    ref = model(x).detach()
    same = convert(model, cluster, inplace=True)
    assert same is model and isinstance(model[0], CodedLinear) and model[0] is model[2]
    assert float((model(x) - ref).detach().abs().max()) <= 1e-13
    back = unconvert(model, inplace=True, release=True)
    assert back is model and type(model[0]) is nn.Linear and model[0] is model[2]
    assert float((model(x) - ref).detach().abs().max()) <= 1e-13
    one = convert(nn.Conv2d(1, 2, 3, dtype=F64), cluster)
    assert isinstance(one, CodedConv2d)
    assert isinstance(unconvert(one), nn.Conv2d)


def test_convert_refuses_by_module_path_or_skips_when_asked(cluster):
    def net(inner):
        return nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), inner))

    cases = [
        (nn.Conv2d(2, 4, 3, groups=2), r"cannot convert 1.1 \(Conv2d\): groups=2; CodedConv2d supports groups=1"),
        (nn.Linear(4, 4).requires_grad_(False), r"cannot convert 1.1 \(Linear\): the weight is frozen"),
        (nn.MultiheadAttention(4, 2), r"cannot convert 1.1.out_proj \(NonDynamicallyQuantizableLinear\): "
                                      r".*subclass of nn.Linear"),
    ]
    hooked = nn.Linear(4, 4)
    hooked.register_forward_hook(lambda m, i, o: o)
    cases.append((hooked, r"cannot convert 1.1 \(Linear\): it has hooks \(forward_hooks\)"))
    for inner, msg in cases:
        model = net(inner)
        with pytest.raises(ConfigurationError, match=msg + r".*skip_unsupported=True"):
            convert(model, cluster)
        kept = convert(model, cluster, skip_unsupported=True)
        assert isinstance(kept[0], CodedLinear)                    # the rest is converted
        assert type(kept[1][1]) is type(inner)                     # the unsupported one is kept
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    with pytest.raises(ConfigurationError, match=r"cannot convert 0 \(Linear\): the weight is shared"):
        convert(tied, cluster)
    with pytest.raises(ConfigurationError, match="`cluster` is None"):
        convert(tied, None)
    with pytest.raises(ConfigurationError, match="`model` must be an nn.Module, got list"):
        convert([tied], cluster)
    with pytest.raises(ConfigurationError, match="`code` must have workers=7"):
        convert(nn.Linear(3, 3), cluster, code=MDSCode(5, 2))


# ------------------------------------------------------------------ under mpiexec
@needs_mpiexec
def test_converted_cnn_trains_under_mpiexec():
    pytest.importorskip("mpi4py")
    np_ = 7
    res, done = run_mpi(Path(__file__).parent / "mpi_conv.py", np_, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert res["workers"] == np_ - 1
    assert res["coded"] == ["CodedConv2d", "CodedConv2d", "CodedLinear"]
    assert res["plain_back"] == ["Conv2d", "Conv2d", "Linear"]
    assert res["max_param_diff"] <= 1e-11 and res["unconverted_diff"] <= 1e-11, res
    assert res["stats"]["corrected"] > 0 and res["stats"]["repaired"] > 0, res
    assert len([ln for ln in done.stdout.splitlines() if ln.endswith(" exit")]) == np_


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(convs=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
                                st.booleans()), min_size=1, max_size=3),
       hidden=st.integers(1, 6), dtype=st.sampled_from([F64, torch.float32]), seed=st.integers(0, 2**16))
def test_convert_keeps_outputs_of_drawn_cnns(cluster, convs, hidden, dtype, seed):
    """Drawn stacks of convolutions (channels, kernel, stride, padding, bias) and two linear
    layers: the converted model's outputs equal the original's (float64 1e-12, float32 1e-5,
    relative), its layers keep their dtype, and unconvert gives the same weights back."""
    torch.manual_seed(seed)
    layers, c, size = [], 1, 7
    for out, k, s, p, b in convs:
        if size + 2 * p < k:
            continue
        layers += [nn.Conv2d(c, out, k, stride=s, padding=p, bias=b, dtype=dtype), nn.Tanh()]
        c, size = out, (size + 2 * p - k) // s + 1
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * size * size, hidden, dtype=dtype), nn.ReLU(),
                          nn.Linear(hidden, 3, dtype=dtype))
    x = torch.randn(2, 1, 7, 7, dtype=dtype)
    coded = convert(model, cluster, errors=1)
    assert all(m.bias is None or m.bias.dtype == dtype for m in coded.modules() if isinstance(m, CodedLinear))
    ref = model(x).detach()
    tol = 1e-12 if dtype == F64 else 1e-5
    assert float((coded(x).detach() - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))
    back = unconvert(coded, release=True)
    assert _max_diff(back, model) <= (1e-14 if dtype == F64 else 1e-6)
    assert all(p.dtype == dtype for p in back.parameters())
