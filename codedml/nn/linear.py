"""CodedLinear: a linear layer whose weight lives encoded on the workers (CodeNet-style).

Mathematics (Dutta, Bai, Jeong, Low, Grover, "A unified coded deep neural network training
strategy based on generalized PolyDot codes", ISIT 2018 -- CodeNet). The weight ``W``
(``out x in``) is split into ``k`` row blocks and stored once, encoded with ``MDSCode(n, k)``:
worker ``w`` holds ``a_w = sum_i W_i x_w^i`` (unit-circle points; see
:mod:`codedml.codes.resident`). Every product of training runs against those blocks:

* forward ``Y = X W^T + b``: the root decodes ``W X^T`` from any ``k`` workers;
* backward ``dX = dY W``: the inner dimension of ``W`` is split MatDot-style against the *same*
  blocks; the root decodes from any ``2k - 1`` workers (twice the forward's flops per worker);
* update: SGD with momentum and weight decay is linear, so each worker applies it to its own
  block with the encoded gradient ``enc(dY^T)_w X`` and an encoded momentum buffer
  (:class:`~codedml.nn.CodedSGD`): the weights are never re-encoded;
* with ``errors = e`` every product waits for ``threshold + 2e`` results and corrects ``e``
  corrupt ones; stragglers beyond those are not waited for;
* stored blocks corrupted in memory are found and rebuilt from the others by a scrub.

One encoding serves both products, at the price of threshold ``2k - 1`` on the backward
product (so ``n >= 2k - 1 + 2e``). Two encodings (``W`` and ``W^T``, each threshold ``k``)
would double the storage and the update traffic and leave two copies to keep consistent; one
encoding keeps a single source of truth, which is what makes the scrub meaningful.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..codes import MatDotCode, MDSCode, ReplicationCode
from ..codes._validate import check_int
from ..errors import ConfigurationError, CorruptResultError, StaleWeightError
from ..runtime import retry_on_corrupt

__all__ = ["CodedLinear", "coded_linear", "default_code"]


def default_code(workers: int, errors: int = 0, out_features: int | None = None) -> MDSCode:
    """``MDSCode(workers, k)`` with the largest ``k`` such that ``2k - 1 + 2 errors <= workers - 1``.

    The forward product (threshold ``k``) then tolerates ``errors`` corrupt results and
    ``workers - k - 2 errors`` stragglers, and the backward product (threshold ``2k - 1``)
    ``errors`` corrupt results and at least one straggler. Where no such ``k`` exists, ``k = 1``
    (the backward product then waits for every worker).
    """
    workers = check_int("workers", workers, 1)
    errors = check_int("errors", errors, 0)
    if out_features is not None:
        out_features = check_int("out_features", out_features, 1)
    k = (workers - 2 * errors) // 2
    if k < 1 and 1 + 2 * errors <= workers:
        k = 1
    if out_features is not None:
        k = min(k, out_features)
    if k < 1:
        raise ConfigurationError(
            f"`errors` must be at most {(workers - 1) // 2} for {workers} workers (the backward "
            f"product needs 2k - 1 + 2*errors <= workers with k >= 1), got {errors}")
    return MDSCode(workers, k)


def _check_cluster(cluster: Any) -> None:
    from ..runtime import ClusterBase

    if cluster is None:
        raise ConfigurationError(
            "`cluster` is None: under MPI only the root gets a cluster from `with MPICluster(...)`; "
            "build coded layers on the root")
    if not isinstance(cluster, ClusterBase):
        raise ConfigurationError(
            f"`cluster` must be a LocalCluster or MPICluster, got {type(cluster).__name__}")


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """``t`` as a numpy array at the root: float32/float64 as they are, half and bfloat16 (which
    numpy lacks or multiplies slowly) widened to float64 -- the stored blocks are float64."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64)
    return t.cpu().numpy()


class _CodedLinearFn(torch.autograd.Function):
    """``y = x W^T + b`` with ``W`` resident on the workers; backward ``dx = dy W`` coded too.

    ``weight`` is the layer's root-side mirror parameter: the products never read it (they run
    against the stored blocks), but it is an input so that the output requires a gradient even
    for a bias-free layer whose input needs none, and so that ``dW = dy^T x`` (computed at the
    root) accumulates into ``weight.grad`` as for :class:`torch.nn.Linear`. The factors
    ``(dy, x)`` are stashed too, for :class:`~codedml.nn.CodedSGD`'s coded step.

    The forward pass records the layer's weight version; backward raises
    :class:`~codedml.errors.StaleWeightError` when the weight changed in between. Double
    backward is not supported (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                layer: "CodedLinear") -> torch.Tensor:
        y = torch.from_numpy(np.ascontiguousarray(layer._forward_product(_to_numpy(x)).T))
        y = y.to(dtype=x.dtype, device=x.device)
        if bias is not None:
            y = y + bias
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.weight_shape = weight.shape
        ctx.version = layer._version_token()
        ctx.save_for_backward(x)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor):  # type: ignore[override]
        layer: CodedLinear = ctx.layer
        layer._check_version(ctx.version)
        w = layer._parameters.get("weight")
        if w is not None and layer._token(w) == layer._root_token and not layer._same_values(w):
            # the version counter agrees but the values do not: an edit through `.data`
            # between this forward and its backward (nn.Linear's backward would read the
            # edited values; the workers hold the forward's)
            raise StaleWeightError(
                "CodedLinear: the weight needed for gradient computation changed after the "
                "forward pass: `weight` was modified through `.data`, which the version "
                "counter does not see. Run backward before changing the weight (as torch "
                "requires for nn.Linear)")
        (x,) = ctx.saved_tensors
        G = _to_numpy(gy)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            if not G.any():  # dY = 0: dX = 0 exactly, no product to run
                gx = torch.zeros_like(x)
            else:
                gx = torch.from_numpy(layer._backward_product(G)).to(dtype=gy.dtype, device=gy.device)
        if ctx.needs_input_grad[1]:
            # dW = dY^T X is the weight matrix's gradient; the parameter may hold the weight in
            # another shape (CodedConv2d: nn.Conv2d's 4-d kernel), so it is reshaped to it
            gw = (gy.T @ x).reshape(ctx.weight_shape)
            layer._stash(G, _to_numpy(x), gw)
        gb = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class CodedLinear(nn.Module):
    """A linear layer ``y = x W^T + b`` whose weight ``W`` lives encoded on the workers.

    Parameters
    ----------
    in_features, out_features : int
        Sizes, as for :class:`torch.nn.Linear`.
    bias : bool
        Learn an additive bias (kept at the root: it is ``out_features`` numbers).
    cluster : LocalCluster or MPICluster
        Where the weight is stored (the root's cluster under MPI).
    code : MDSCode or ReplicationCode, optional
        How ``W`` is stored. Default :func:`default_code`: ``MDSCode(n, k)`` with the largest
        ``k`` such that ``2k - 1 + 2 errors <= n``. ``ReplicationCode(n, n)`` is uncoded
        model parallelism (every block on one worker, nothing to correct with); it is the
        baseline the benchmarks compare against.
    errors : int
        Corrupt results to correct in every product (forward, backward, scrub).
    timeout : float, optional
        Seconds a product may wait for results before failing.
    retries : int
        How many times a product is recomputed (a fresh job) when its results are detectably
        inconsistent beyond what ``errors`` corrects (:class:`~codedml.CorruptResultError`):
        more soft errors in one product than the code corrects are detected, never passed on.
        The second and later retries first scrub the layer's stored blocks. ``stats["healed"]``
        counts the products that succeeded on a retry; one that never does raises the error
        naming every failed attempt.
    dtype : torch.dtype, optional
        float16, bfloat16, float32 or float64 (default: torch's default dtype): the dtype of the
        layer's inputs, outputs, ``weight`` mirror and bias. The encoded weight is stored and
        multiplied in float64 on the workers whatever the dtype (in-place updates of float32
        blocks drift apart; see docs/layers.md).
    device : torch.device, optional
        Where the ``weight`` mirror and the bias live (outputs follow the input's device).

    The weight is initialised like :class:`torch.nn.Linear` (same random stream), so a
    ``CodedLinear`` and an ``nn.Linear`` built after the same ``torch.manual_seed`` start equal.
    ``weight`` is a root-side ``nn.Parameter`` mirroring the stored weight (decoded again when
    read after coded steps); it receives ``dW`` as its ``.grad``. :class:`~codedml.nn.CodedSGD`
    steps the stored blocks at the workers (the fast path); any other ``torch.optim``
    optimizer steps the mirror, which is then re-encoded onto the workers. ``state_dict``
    holds the weight in float64; ``copy.deepcopy`` stores a copy anew on the same cluster.

    Examples
    --------
    >>> import torch
    >>> from codedml import LocalCluster
    >>> from codedml.nn import CodedLinear
    >>> with LocalCluster(5) as cluster:
    ...     layer = CodedLinear(4, 3, cluster=cluster, dtype=torch.float64)
    ...     x = torch.randn(2, 4, dtype=torch.float64)
    ...     ok = torch.allclose(layer(x), x @ layer.weight.T + layer.bias)
    >>> ok
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, cluster: Any,
                 code: MDSCode | ReplicationCode | None = None, errors: int = 0,
                 timeout: float | None = None, retries: int = 2,
                 dtype: torch.dtype | None = None, device: Any = None) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        _check_cluster(cluster)
        self.cluster = cluster
        n = cluster.workers
        self.errors = check_int("errors", errors, 0, n)
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        self._check_dtype("dtype", dtype)
        if code is None:
            code = default_code(n, self.errors, self.out_features)
        self._check_code(code, n)
        self.code = code
        if timeout is not None:  # NaN, inf, 0 and negative refused by name, as the runtime does
            from ..runtime.futures import check_deadline

            timeout = check_deadline("timeout", timeout)
        self.timeout = timeout
        self.retries = check_int("retries", retries, 0)
        self._dtype = dtype
        # The root-side mirror of the stored weight (see "Behaving like a torch layer" in
        # docs/layers.md): a real parameter, so optimizers, zero_grad and hooks see it; it
        # receives dW as its .grad; the products never read it.
        # Its shape is _weight_shape(): (out, in) here, nn.Conv2d's 4-d kernel for CodedConv2d
        # (whose fan-in, in*kh*kw, is this matrix's `in`). Internally the weight is the matrix
        # (out, in) (_as_matrix, _w64, the stored blocks, the gradient factors).
        self.weight = nn.Parameter(torch.empty(self._weight_shape(), dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # torch.nn.Linear's (and Conv2d's)
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, dtype=dtype, device=device))
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)
        # Stored in float64 whatever the layer's dtype: each worker updates its block in place
        # with its own rounding, so blocks drift apart by ~sqrt(steps) * eps; in float32 that
        # passed the locator's noise threshold within a few hundred steps (read as corruption),
        # in float64 it stays ~1e-14 after 1e6 steps.
        # Compensated worker products (codes whose worst case would amplify float64 rounding
        # past 1e-12) serve float64 layers; a float32 layer's output cannot use them.
        self._precision = self._precision_for(dtype)
        # _w64: the stored weight in float64 at the root, exact (what was encoded), or None
        # while coded steps have moved the stored weight on (decoded again when read).
        self._w64: np.ndarray | None = self._as_matrix(self.weight)
        self._handle = cluster.put(self._w64, code=code, precision=self._precision)
        self._buffer = None          # encoded momentum buffer (CodedSGD), a ResidentHandle
        self._b64: np.ndarray | None = None   # its exact float64 value when known (loaded)
        # (dY, X) factors of weight.grad since it was last reset, or None when weight.grad was
        # changed in a way the factors do not describe (clipping, assignment): then CodedSGD
        # sends weight.grad itself.
        self._pending: list[tuple[np.ndarray, np.ndarray]] | None = []
        self._incoming: list[tuple[np.ndarray, np.ndarray]] = []  # this backward pass's factors
        self._incoming_task: int | None = None
        self._incoming_dw: list[torch.Tensor] = []   # this backward pass's dW (see _arriving)
        self._incoming_ok = True
        self._incoming_base: list[tuple[np.ndarray, np.ndarray]] | None = []
        self._grad_token: Any = None      # weight.grad as the last accumulation left it
        self._weight_version = 0          # bumped whenever the stored weight changes
        self._adopt(self.weight)
        self._mark_root(self.weight)
        self._last_faulty: set[int] = set()
        self._scrub_due = False
        self.stats = {"forward": 0, "backward": 0, "corrected": 0, "skipped": 0, "retried": 0,
                      "scrubs": 0, "repaired": 0, "updates": 0, "update_failures": 0,
                      "reencodes": 0, "healed": 0, "searched": 0}

    @staticmethod
    def _check_dtype(name: str, dtype: Any) -> None:
        if dtype not in _FLOAT_DTYPES:
            raise ConfigurationError(
                f"`{name}` must be one of torch.float16, torch.bfloat16, torch.float32, "
                f"torch.float64 for a CodedLinear (the stored blocks are float64 on every backend; "
                f"the workers cannot multiply {dtype}), got {dtype}")

    def _weight_shape(self) -> tuple[int, ...]:
        """The shape of the ``weight`` parameter: ``(out_features, in_features)``. The weight-shape
        hook: a subclass whose torch counterpart holds its weight in another shape (CodedConv2d:
        ``(out, C, kh, kw)``) returns that shape, and everything that touches the parameter, its
        ``.grad``, the ``state_dict``, ``set_weight`` and the momentum buffers uses it; the stored
        blocks, the products and the coded update work on the matrix ``(out_features,
        in_features)`` (:meth:`_as_matrix`), the parameter reshaped."""
        return (self.out_features, self.in_features)

    def _as_matrix(self, t: Any, name: str = "weight") -> np.ndarray:
        """``t`` (the weight's shape or the matrix's) as a float64 C-ordered ``out x in`` copy;
        a complex ``t`` is refused by ``name`` (a cast would drop its imaginary part)."""
        t = torch.as_tensor(t).detach()
        if t.is_complex():
            raise ConfigurationError(f"`{name}` must be real, got dtype {t.dtype}")
        t = t.to(torch.float64).cpu()
        return np.array(t.reshape(self.out_features, self.in_features).numpy(), dtype=np.float64, order="C")

    @staticmethod
    def _precision_for(dtype: torch.dtype) -> str:
        return "auto" if dtype == torch.float64 else "float64"

    def _check_code(self, code: Any, n: int) -> None:
        if not isinstance(code, (MDSCode, ReplicationCode)) or (
                isinstance(code, MDSCode) and type(code) is not MDSCode):
            raise ConfigurationError(
                f"`code` must be an MDSCode or a ReplicationCode (the stored weight is split by "
                f"rows), got {code!r}")
        if code.workers != n:
            raise ConfigurationError(
                f"`code` must have workers={n} (the cluster's worker count), got {code.workers}")
        if code.field is not None:
            raise ConfigurationError(f"`code` must be real-valued for a trained layer, got field={code.field}")
        if isinstance(code, MDSCode):
            k = code.recovery_threshold
            if 2 * k - 1 + 2 * self.errors > n:
                raise ConfigurationError(
                    f"`code` MDSCode({n}, {k}) leaves the backward product (threshold 2k - 1 = "
                    f"{2 * k - 1}) too few workers for errors={self.errors}: need "
                    f"2k - 1 + 2*errors <= {n}; use k <= {(n - 2 * self.errors + 1) // 2}")

    # ------------------------------------------------------------------ torch API
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ConfigurationError(
                f"input must have last dimension in_features={self.in_features}, got shape {tuple(x.shape)}")
        if x.dtype != self._dtype:
            raise ConfigurationError(
                f"input dtype must be the layer's dtype {self._dtype} (as for nn.Linear), got {x.dtype}")
        _check_finite_input(x)
        self._push()  # an optimizer step or in-place change of `weight` reaches the workers
        lead = x.shape[:-1]
        y = _CodedLinearFn.apply(x.reshape(-1, self.in_features), self._parameters["weight"],
                                 self.bias, self)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, code={self.code!r}, errors={self.errors}")

    def __getattr__(self, name: str) -> Any:
        # `layer.weight` reads the current weight: after coded steps the mirror is refreshed
        # (decoded from the stored blocks) before it is handed out.
        if name == "weight" and self.__dict__.get("_w64", 0) is None:
            self._refresh()
        return super().__getattr__(name)

    def weight_grad(self) -> torch.Tensor | None:
        """``dW = sum dY^T X`` over the backward passes since the gradient was last reset:
        ``weight.grad`` (``None`` when there were none)."""
        return self._parameters["weight"].grad

    def zero_grad(self, set_to_none: bool = True) -> None:  # type: ignore[override]
        super().zero_grad(set_to_none)
        self._pending = []

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not keep_vars:  # the stored weight in float64, exactly (a float32 layer too)
            w = self._parameters["weight"]
            destination[prefix + "weight"] = torch.from_numpy(
                self._weight64().copy()).reshape(self._weight_shape()).to(w.device)
        else:  # the parameter itself, holding the current weight
            self._weight64()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        params = self._parameters
        w = params.pop("weight")  # loaded here, not by nn.Module's copy into the mirror
        try:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
        finally:
            rest = dict(params)
            params.clear()
            params["weight"] = w
            params.update(rest)
        key = prefix + "weight"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            return
        W = torch.as_tensor(state_dict[key])
        if tuple(W.shape) != self._weight_shape():
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(W.shape)}, "
                              f"the shape in current model is {self._weight_shape()}.")
            return
        self.set_weight(W)

    def set_weight(self, W: Any) -> None:
        """Replace the weight: encode ``W`` and store it on the workers anew (momentum kept)."""
        W = torch.as_tensor(W).detach()
        if tuple(W.shape) != self._weight_shape():
            raise ConfigurationError(
                f"`W` must have shape {self._weight_shape()}, got {tuple(W.shape)}")
        self._store(self._as_matrix(W, "W"))

    def release(self) -> None:
        """Free the stored weight and momentum on the workers (the layer is unusable after)."""
        for h in (self._handle, self._buffer):
            if h is not None:
                self.cluster.drop(h)
        self._handle = self._buffer = None

    # ------------------------------------------------------------------ the root-side mirror
    @staticmethod
    def _token(p: torch.Tensor) -> tuple[Any, ...]:
        return (p._version, p.data_ptr(), p.dtype, p.device)

    def _mark_root(self, p: torch.Tensor) -> None:
        """Record the mirror ``p`` as what the workers' blocks hold: its version token and a
        copy of its values. The copy catches what the token cannot: a change made through
        ``p.data`` (torch does not count it in ``p._version``), such as weight clipping or an
        initialisation written into ``.data``."""
        self._root_token = self._token(p)
        self._root_copy = p.detach().clone()

    def _same_values(self, p: torch.Tensor) -> bool:
        """Whether the mirror holds exactly the values recorded by :meth:`_mark_root` (a NaN
        counts as a change)."""
        ref = self.__dict__.get("_root_copy")
        return ref is not None and ref.shape == p.shape and torch.equal(p.detach(), ref)

    def _unchanged(self, p: torch.Tensor) -> bool:
        """Whether the mirror is still what :meth:`_mark_root` recorded: the same version
        token and the same values."""
        return self._token(p) == self._root_token and self._same_values(p)

    def _adopt(self, p: nn.Parameter) -> None:
        """Tag ``p`` as this layer's mirror (for the optimizer hooks) and follow its ``.grad``."""
        ref = weakref.ref(self)
        p._codedml_layer = ref  # type: ignore[attr-defined]
        _ADOPTED.add(self)

        def accumulated(param: torch.Tensor) -> None:
            layer = ref()
            if layer is not None and layer._parameters.get("weight") is param:
                layer._accumulated(param)

        def arriving(grad: torch.Tensor) -> None:
            layer = ref()
            if layer is not None and layer._parameters.get("weight") is p:
                layer._arriving(grad)

        p.register_hook(arriving)
        p.register_post_accumulate_grad_hook(accumulated)

    def _version_token(self) -> tuple[int, int]:
        return (self._weight_version, self._parameters["weight"]._version)

    def _check_version(self, saved: tuple[int, int]) -> None:
        now = self._version_token()
        if now != saved:
            what = ("the stored weight was replaced or stepped (set_weight, load_state_dict, a "
                    "CodedSGD step)" if now[0] != saved[0] else
                    "`weight` was modified in place (an optimizer step?)")
            raise StaleWeightError(
                f"CodedLinear: the weight needed for gradient computation changed after the forward "
                f"pass: {what}; weight version {saved} at forward, {now} at backward. Run "
                f"backward before changing the weight (as torch requires for nn.Linear)")

    def _weight64(self) -> np.ndarray:
        """The stored weight in float64 at the root (root-side changes pushed first)."""
        self._push()
        if self._w64 is None:
            self._refresh()
        assert self._w64 is not None
        return self._w64

    def _refresh(self) -> None:
        """Decode the stored weight into the mirror after coded steps moved it on."""
        p = self._parameters["weight"]
        if self._w64 is None:
            if not self._unchanged(p):
                raise StaleWeightError(
                    "CodedLinear: `weight` was modified in place at the root while a CodedSGD step "
                    "had moved the stored weight on, so neither can be kept; read `layer.weight` "
                    "(which refreshes it) before modifying it, or choose the weight with "
                    "layer.set_weight(W)")
            W = self.cluster.fetch(self._handle, errors=self.errors, timeout=self.timeout)
            self._w64 = np.array(W, dtype=np.float64, order="C")
            with torch.no_grad():
                p.data.copy_(torch.from_numpy(self._w64).reshape(p.shape))  # .data: not a change
            self._mark_root(p)

    def _push(self) -> None:
        """Send a root-side change of the mirror (an optimizer step, an in-place edit, a new
        parameter assigned) to the workers: re-encode it and store it anew."""
        p = self._parameters.get("weight")
        if p is None or self._unchanged(p):
            return
        if getattr(p, "_codedml_layer", lambda: None)() is not self:
            if tuple(p.shape) != self._weight_shape():
                raise ConfigurationError(
                    f"`weight` must have shape {self._weight_shape()}, got {tuple(p.shape)}")
            self._check_dtype("weight.dtype", p.dtype)
            self._adopt(p)   # a new parameter assigned: it defines the weight
        elif self._w64 is None:
            self._refresh()  # raises: modified in place while the stored weight moved on
        self._store(self._as_matrix(p), mirror=False)
        self.stats["reencodes"] += 1

    def _store(self, W: np.ndarray, mirror: bool = True) -> None:
        """Encode ``W`` (float64) and store it anew; ``mirror``: copy it into ``weight`` too."""
        self._check_updates()
        old = self._handle
        self._handle = self.cluster.put(W, code=self.code, precision=self._precision)
        self.cluster.drop(old)
        self._w64 = W
        p = self._parameters["weight"]
        if mirror:
            with torch.no_grad():
                p.copy_(torch.from_numpy(W).reshape(p.shape))  # bumps its version: a forward before it is stale
        self._weight_version += 1
        self._mark_root(p)

    def _apply(self, fn: Any, recurse: bool = True) -> "CodedLinear":
        # dtype and device moves (.double(), .float(), .half(), .to(...)): the mirror and the
        # bias move as nn.Linear's parameters; the stored blocks stay float64 and are re-encoded
        # when the move changes the worker products' precision (compensated for float64 only).
        if "_handle" not in self.__dict__:  # during __init__
            return super()._apply(fn, recurse)
        w = self._parameters["weight"]
        probe = fn(torch.empty(0, dtype=w.dtype, device=w.device))
        if probe.dtype != w.dtype:
            if not probe.dtype.is_floating_point:
                raise ConfigurationError(
                    f"CodedLinear cannot move to dtype {probe.dtype}: backend "
                    f"{getattr(self.cluster, 'backend_name', type(self.cluster).__name__)} workers "
                    f"multiply float64 blocks, and the layer supports float16, bfloat16, float32, float64")
            self._check_dtype("dtype", probe.dtype)
        W = self._weight64()
        super()._apply(fn, recurse)
        w = self._parameters["weight"]
        if getattr(w, "_codedml_layer", lambda: None)() is not self:
            # a new parameter object (torch.__future__.set_overwrite_module_params_on_conversion)
            self._adopt(w)
            self._grad_token = self._grad_state(w.grad)
        self._dtype = w.dtype
        precision = self._precision_for(self._dtype)
        if precision != self._precision:
            self._precision = precision
            self._store(W, mirror=False)
        self._mark_root(self._parameters["weight"])
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> "CodedLinear":
        """An independent layer on the same cluster: its weight (and momentum buffer) stored
        anew as new operands; gradients, factors and statistics copied."""
        W = self._weight64()
        B = self.momentum_buffer()
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k in ("cluster", "code"):
                new.__dict__[k] = v
            elif k in ("_handle", "_buffer", "_grad_token", "_incoming_task", "_root_copy"):
                new.__dict__[k] = None
            elif k == "_incoming_dw":
                new.__dict__[k] = []
            else:
                new.__dict__[k] = copy.deepcopy(v, memo)
        new._handle = self.cluster.put(W, code=self.code, precision=self._precision)
        new._w64 = W.copy()
        if B is not None:
            new.set_momentum_buffer(B)
        p = new._parameters["weight"]
        new._adopt(p)
        new._grad_token = new._grad_state(p.grad)
        new._mark_root(p)
        return new

    def __getstate__(self) -> Any:
        raise TypeError(
            "CodedLinear cannot be pickled: its weight lives on the cluster's workers (a live "
            "handle); save layer.state_dict() (the decoded float64 weight) instead, or use "
            "copy.deepcopy for a copy on the same cluster")

    # ------------------------------------------------------------------ momentum (CodedSGD)
    def momentum_buffer(self) -> np.ndarray | None:
        """The stored momentum buffer decoded at the root (float64, as the matrix
        ``(out_features, in_features)``), ``None`` before the first coded step with momentum."""
        if self._buffer is None:
            return None
        if self._b64 is None:
            B = self.cluster.fetch(self._buffer, errors=self.errors, timeout=self.timeout)
            self._b64 = np.array(B, dtype=np.float64, order="C")
        return self._b64

    def set_momentum_buffer(self, B: Any) -> None:
        """Store ``B`` as the encoded momentum buffer (``None`` forgets it: the next step starts
        the buffer anew, as torch's SGD does without state). ``B`` has the weight's shape, or the
        matrix's ``(out_features, in_features)`` (what :meth:`momentum_buffer` returns)."""
        old = self._buffer
        if B is None:
            self._buffer = self._b64 = None
        else:
            B = torch.as_tensor(B).detach()
            shapes = {self._weight_shape(), (self.out_features, self.in_features)}
            if tuple(B.shape) not in shapes:
                raise ConfigurationError(
                    f"`momentum_buffer` must have shape "
                    f"{' or '.join(str(s) for s in sorted(shapes, key=len, reverse=True))}, "
                    f"got {tuple(B.shape)}")
            B = self._as_matrix(B, "momentum_buffer")
            self._buffer = self.cluster.put(B, code=self.code, precision=self._precision)
            self._b64 = B
        if old is not None:
            self.cluster.drop(old)

    # ------------------------------------------------------------------ coded operations
    def _note(self) -> None:
        rep = self.cluster.history[-1]
        self.stats["corrected"] += len(rep.faulty)
        self.stats["skipped"] += sum(1 for w in rep.workers if w.status in ("missing", "late"))
        # A worker located corrupt in two products in a row most likely holds a corrupt stored
        # block (transient errors are independent per job): scrub after this step's update,
        # before a second stored error in the same interval makes the products uncorrectable.
        faulty = set(rep.faulty)
        if faulty & self._last_faulty:
            self._scrub_due = True
        self._last_faulty = faulty

    def _check_updates(self) -> None:
        """Book the previous coded step's acknowledgements once they settled (without waiting).

        A worker that failed to apply a step has its stored block marked stale by the runtime
        (no product uses it); the failure is counted and a scrub rebuilds the block. When the
        stale and crashed workers leave too few for this layer's products, the step's
        :class:`~codedml.errors.UpdateFailedError` is raised to the caller: the weight can no
        longer be trusted to hold every step."""
        # The layer's own record of the acks it booked (the weight's and the buffer's; one SGD
        # step's ack may serve both), not an attribute set on the runtime's future.
        # Only the handles' current acks are ever looked at, so the last four booked suffice;
        # held as weak references (a deepcopy of the layer copies them as they are).
        booked = self.__dict__.setdefault("_booked_acks", [])
        for h in (self._handle, self._buffer):
            ack = getattr(h, "ack", None)
            if ack is None or not ack.done() or any(r() is ack for r in booked):
                continue
            booked[:] = [*booked[-3:], weakref.ref(ack)]
            exc = None if ack.cancelled() else ack.exception(0)
            if exc is None:
                continue
            self.stats["update_failures"] += 1
            self._scrub_due = True
            bad = set(self.cluster.stale_workers(h)) | set(self.cluster.dead_workers)
            k = self.code.recovery_threshold
            need = (2 * k - 1 if isinstance(self.code, MDSCode) else k) + 2 * self.errors
            if self.code.workers - len(bad) < need:
                raise exc

    def _coded(self, run: Any, what: str = "forward") -> np.ndarray:
        """Run one coded product; when it was detectably corrupt beyond the code's power,
        recompute it (a fresh job) -- at once the first time (transient errors), after a scrub
        of the stored blocks the next times (stored blocks corrupted since the last scrub add
        up with transient errors) -- at most ``retries`` times.

        A product that succeeds after failing is counted in ``stats["healed"]``. One that
        fails every time (or whose scrub fails) raises :class:`~codedml.errors.CorruptResultError`
        naming every failed attempt, chained to the last."""
        self._check_updates()
        failures: list[CorruptResultError] = []

        def noted() -> np.ndarray:
            try:
                return run()
            except CorruptResultError as exc:
                self._note()
                failures.append(exc)
                raise

        def before_retry(attempt: int) -> None:
            self.stats["retried"] += 1
            if attempt >= 1:
                self.scrub()

        try:
            out = retry_on_corrupt(noted, self.retries, before_retry)
        except CorruptResultError as exc:
            if not failures or (len(failures) == 1 and failures[0] is exc):
                raise
            if failures[-1] is not exc:
                where = f"the scrub of its stored blocks before attempt {len(failures) + 1} failed"
            else:
                where = f"all {len(failures)} attempts failed"
                if len(failures) >= 3:
                    where += " (the stored blocks were scrubbed before attempt 3)"
            tried = "; ".join(f"attempt {i + 1}: {m}" for i, m in enumerate(failures))
            raise CorruptResultError(
                f"{exc} [{type(self).__name__} {what} product: {where}; {tried}]",
                suspects=getattr(exc, "suspects", ())) from exc
        if failures:
            self.stats["healed"] += 1
        self._note()
        return out

    def _forward_product(self, X: np.ndarray) -> np.ndarray:
        """``W X^T`` (``out x B``), decoded from the first ``k + 2 errors`` workers."""
        self.stats["forward"] += 1
        Xt = X.T   # a view: the cluster makes the one contiguous copy it sends (its own)
        return self._coded(lambda: self.cluster.matmul(self._handle, Xt, errors=self.errors,
                                                       timeout=self.timeout))

    def _backward_product(self, G: np.ndarray) -> np.ndarray:
        """``dY W`` (``B x in``), decoded from the first ``2k - 1 + 2 errors`` workers."""
        self.stats["backward"] += 1
        return self._coded(lambda: self.cluster.matmul_left(G, self._handle, errors=self.errors,
                                                            timeout=self.timeout), "backward")

    @staticmethod
    def _grad_state(g: torch.Tensor | None) -> Any:
        return None if g is None else (weakref.ref(g), g._version)

    def _grad_matches(self, g: torch.Tensor | None) -> bool:
        """Whether ``weight.grad`` is as the last accumulation left it (not reset, scaled, or
        replaced since)."""
        t = self._grad_token
        if g is None or t is None:
            return g is None and t is None
        return t[0]() is g and t[1] == g._version

    def _stash(self, G: np.ndarray, X: np.ndarray, dW: torch.Tensor) -> None:
        """Keep the factors ``(dY, X)`` of this backward pass's ``dW``; they join the pending
        ones when autograd accumulates ``dW`` into ``weight.grad`` (:meth:`_accumulated`).

        Which pending factors they join is decided from ``weight.grad`` before this backward
        pass: as the last accumulation left it -- the pending factors; ``None`` or zero (any
        ``zero_grad()``: the model's, an optimizer's, the layer's) -- none; changed otherwise
        (clipped, assigned) -- the factors no longer describe it, and a coded step sends
        ``weight.grad`` itself. A backward pass that never accumulates (``torch.autograd.grad``)
        leaves them out; one in which ``weight`` also receives a gradient from elsewhere (a
        penalty on the weight in the loss, a tied weight) makes the factors incomplete, and
        :meth:`_arriving` drops them."""
        task = torch._C._current_graph_task_id()
        if self._incoming_task != task:
            g = self._parameters["weight"].grad
            self._incoming_task = task
            self._incoming = []
            self._incoming_dw = []
            self._incoming_ok = True
            if self._grad_matches(g):
                self._incoming_base = self._pending
            elif g is None or not bool(g.any()):
                self._incoming_base = []
            else:
                self._incoming_base = None
        self._incoming.append((G, X))
        self._incoming_dw.append(dW)

    def _arriving(self, grad: torch.Tensor) -> None:
        """The total gradient reaching ``weight`` in this backward pass, before accumulation:
        the factors describe it only if it is the sum of this layer's own ``dW`` s."""
        if self._incoming_task != torch._C._current_graph_task_id() or not self._incoming_dw:
            return
        ours = self._incoming_dw
        if len(ours) == 1 and grad is ours[0]:
            return
        total = ours[0].detach().clone()
        for d in ours[1:]:
            total += d
        # a contribution below the arithmetic's rounding of the sum is harmless by definition
        tol = 64 * torch.finfo(grad.dtype).eps * float(total.abs().max() + grad.abs().max())
        self._incoming_ok = bool(float((grad.detach() - total).abs().max()) <= tol)

    def _accumulated(self, p: torch.Tensor) -> None:
        """After autograd accumulated into ``weight.grad``: commit this pass's factors."""
        self._incoming_dw = []
        if (self._incoming_task == torch._C._current_graph_task_id() and self._incoming
                and self._incoming_ok):
            base = self._incoming_base
            pending = None if base is None else base + self._incoming
            # factors wider than the weight cost more than weight.grad itself
            if pending is not None and sum(G.shape[0] for G, _ in pending) > min(self.out_features, self.in_features):
                pending = None
            self._pending = pending
        else:  # weight.grad received a gradient this layer did not compute (a penalty, a tied weight)
            self._pending = None
        self._incoming, self._incoming_task = [], None
        self._grad_token = self._grad_state(p.grad)

    def _gradient_factors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``dW = U V^T``: ``U = [dY_1^T ...]`` (``out x r``) and ``V = [X_1^T ...]`` from the
        stashed factors when they describe ``weight.grad``; else from ``weight.grad`` itself
        (``U = dW``, ``V = I`` or ``U = I``, ``V = dW^T``, the narrower); ``None`` when
        ``weight.grad`` is ``None``."""
        g = self._parameters["weight"].grad
        if g is None:
            return None
        if self._pending and self._grad_matches(g):
            U = np.concatenate([G.T for G, _ in self._pending], axis=1).astype(np.float64)
            V = np.concatenate([X.T for _, X in self._pending], axis=1).astype(np.float64)
            return U, V
        D = self._as_matrix(g)
        if not D.any():  # zeroed (zero_grad(set_to_none=False)): a zero gradient, rank 1
            return np.zeros((self.out_features, 1)), np.zeros((self.in_features, 1))
        if self.out_features <= self.in_features:
            return np.eye(self.out_features), np.ascontiguousarray(D.T)
        return np.ascontiguousarray(D), np.eye(self.in_features)

    def coded_step(self, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                   weight_decay: float = 0.0, nesterov: bool = False) -> bool:
        """Apply one SGD step to the stored weight at the workers (see ``cluster.sgd_step``).

        Uses ``weight.grad`` -- sent as the stashed factors ``(dY, X)`` of the backward passes
        that made it when they still describe it; returns ``False`` (and changes nothing) when
        ``weight.grad`` is ``None``, as torch's SGD skips parameters without grad. The mirror
        ``weight`` is decoded again only when read.
        """
        self._push()
        factors = self._gradient_factors()
        if factors is None:
            return False
        self._check_updates()
        U, V = factors
        self._handle, self._buffer = self.cluster.sgd_step(
            self._handle, U, V, lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov, buffer=self._buffer)
        self._w64 = self._b64 = None
        self._weight_version += 1
        self.stats["updates"] += 1
        if self._scrub_due:
            self.scrub()
        return True

    def scrub(self, timeout: float | None = None) -> list[Any]:
        """Check every stored block (weight and momentum) and rebuild the corrupt ones.

        Returns the :class:`~codedml.runtime.ScrubReport` s (weight first)."""
        reports = []
        rep = self.cluster.scrub(self._handle, timeout=timeout if timeout is not None else self.timeout)
        self._handle = rep.handle
        reports.append(rep)
        if self._buffer is not None:
            brep = self.cluster.scrub(self._buffer, timeout=timeout if timeout is not None else self.timeout)
            self._buffer = brep.handle
            reports.append(brep)
        self.stats["scrubs"] += 1
        self.stats["repaired"] += sum(len(r.repaired) for r in reports)
        self.stats["searched"] += sum(bool(getattr(r, "searched", False)) for r in reports)
        self._scrub_due = False
        self._last_faulty = set()
        return reports


class _FunctionalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None,
                cluster: Any, code: MDSCode, errors: int, retries: int) -> torch.Tensor:
        X, Wn = x.detach().cpu().numpy(), W.detach().cpu().numpy()
        Xt = X.T   # a view: the encode copies it into the tasks
        Yt = retry_on_corrupt(lambda: cluster.matmul(Wn, Xt, code=code, errors=errors), retries)
        y = torch.from_numpy(np.ascontiguousarray(Yt.T)).to(x.dtype)
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x, W)
        ctx.cluster, ctx.code, ctx.errors, ctx.has_bias = cluster, code, errors, bias is not None
        ctx.retries = retries
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor):  # type: ignore[override]
        x, W = ctx.saved_tensors
        G = gy.detach().cpu().numpy()
        gx = gW = gb = None
        if ctx.needs_input_grad[0] and not G.any():
            gx = torch.zeros_like(x)
        elif ctx.needs_input_grad[0]:
            # dX = dY W = sum_i dY_i W_i: MatDot over the rows of W (threshold 2k - 1)
            k = ctx.code.recovery_threshold
            back = MatDotCode(ctx.code.workers, k)
            Wn = W.detach().cpu().numpy()
            gx = torch.from_numpy(retry_on_corrupt(lambda: ctx.cluster.matmul(G, Wn, code=back, errors=ctx.errors),
                                            ctx.retries)).to(gy.dtype)
        if ctx.needs_input_grad[1]:
            gW = gy.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(0)
        return gx, gW, gb, None, None, None, None


def _check_finite_input(x: torch.Tensor, name: str = "input") -> None:
    """A NaN or Inf input refused by its own name (the encode would refuse it as its `B`).
    A CPU tensor is checked in numpy where its dtype converts (about 2.5 us on a small input,
    against 11 us for ``torch.isfinite``); any other in torch where it lies (bfloat16, or a
    device tensor, which numpy would first copy to the host)."""
    ok = None
    if x.device.type == "cpu":
        try:
            ok = bool(np.isfinite(x.detach().numpy()).all())
        except (TypeError, RuntimeError):
            pass
    if ok is None:
        ok = bool(torch.isfinite(x).all())
    if not ok:
        raise ConfigurationError(
            f"`{name}` contains NaN or Inf; codedml rejects non-finite inputs because a "
            f"non-finite result is how a corrupt worker is recognised")


def coded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                 cluster: Any, code: MDSCode | None = None, errors: int = 0,
                 retries: int = 2) -> torch.Tensor:
    """Functional coded linear map ``x W^T + b`` for a weight held at the root.

    The weight is encoded on every call (nothing is resident): the forward product ``W x^T``
    with ``code`` (default :func:`default_code`) and the input gradient ``dY W`` with
    ``MatDotCode(n, k)`` both run on the cluster; ``dW = dY^T x`` and ``db`` are computed at the
    root. Differentiable in ``x``, ``weight`` and ``bias`` (``torch.autograd.gradcheck``).
    A product detectably corrupt beyond ``errors`` is recomputed up to ``retries`` times.
    """
    _check_cluster(cluster)
    if code is None:
        code = default_code(cluster.workers, errors, weight.shape[0])
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ConfigurationError(
            f"`x` (B, in) and `weight` (out, in) must agree, got {tuple(x.shape)} and {tuple(weight.shape)}")
    _check_finite_input(x, "x")
    return _FunctionalFn.apply(x, weight, bias, cluster, code, errors, check_int("retries", retries, 0))


# ---------------------------------------------------------------------- any torch optimizer
#: Layers whose mirror weight carries the tag the optimizer hooks look for. While it is empty
#: (no coded layer alive in the process) the hooks return at once, so importing codedml.nn
#: costs other models' optimizer steps nothing.
_ADOPTED: "weakref.WeakSet[CodedLinear]" = weakref.WeakSet()


def _coded_layers_of(optimizer: torch.optim.Optimizer) -> list[CodedLinear]:
    layers = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            ref = getattr(p, "_codedml_layer", None)
            layer = ref() if ref is not None else None
            if layer is not None and layer._parameters.get("weight") is p:
                layers.append(layer)
    return layers


def _before_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Any torch optimizer but CodedSGD steps the mirror ``weight`` at the root: make sure it
    holds the stored weight (decoded after coded steps) before the step reads it."""
    if not _ADOPTED or getattr(optimizer, "_codedml_coded_step", False):
        return
    layers = _coded_layers_of(optimizer)
    optimizer.__dict__["_codedml_stepping"] = layers  # found once, for the post-step hook too
    for layer in layers:
        layer._weight64()


def _after_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """... and send the stepped weight to the workers (re-encoded, stored anew) at once."""
    for layer in optimizer.__dict__.pop("_codedml_stepping", None) or ():
        layer._push()


# Global hooks (torch.optim.optimizer.register_optimizer_step_{pre,post}_hook): they run for
# every optimizer instance, including those created before a coded layer existed.
from torch.optim.optimizer import (register_optimizer_step_post_hook,  # noqa: E402
                                   register_optimizer_step_pre_hook)

register_optimizer_step_pre_hook(_before_optimizer_step)
register_optimizer_step_post_hook(_after_optimizer_step)
