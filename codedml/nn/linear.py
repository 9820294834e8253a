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

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..codes import MatDotCode, MDSCode, ReplicationCode
from ..codes._validate import check_int
from ..errors import ConfigurationError, CorruptResultError
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


class _CodedLinearFn(torch.autograd.Function):
    """``y = x W^T + b`` with ``W`` resident on the workers; backward ``dx = dy W`` coded too.

    ``anchor`` is the layer's empty ``_grad_anchor`` parameter: it makes the output require a
    gradient (so backward runs and ``dW`` is collected) even for a bias-free layer whose input
    needs none, and its ``.grad`` tells whether ``zero_grad()`` ran since the last backward.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor | None, anchor: torch.Tensor,
                layer: "CodedLinear") -> torch.Tensor:
        X = x.detach().cpu().numpy()
        y = torch.from_numpy(np.ascontiguousarray(layer._forward_product(X).T)).to(x.dtype).to(x.device)
        if bias is not None:
            y = y + bias
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        layer: CodedLinear = ctx.layer
        G = gy.detach().cpu().numpy()
        gx = None
        if ctx.needs_input_grad[0]:
            if not G.any():  # dY = 0: dX = 0 exactly, no product to run
                gx = torch.zeros_like(x)
            else:
                gx = torch.from_numpy(layer._backward_product(G)).to(gy.dtype).to(gy.device)
        gb = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[1] else None
        layer._stash(G, x.detach().cpu().numpy())
        ga = torch.zeros_like(layer._grad_anchor) if ctx.needs_input_grad[2] else None
        return gx, gb, ga, None


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
        The second and later retries first scrub the layer's stored blocks.
    dtype : torch.dtype, optional
        float32 or float64 (default: torch's default dtype): the dtype of the layer's inputs,
        outputs and bias. The encoded weight is stored and multiplied in float64 on the workers
        either way (in-place updates of float32 blocks drift apart; see docs/layers.md).

    The weight is initialised like :class:`torch.nn.Linear` (same random stream), so a
    ``CodedLinear`` and an ``nn.Linear`` built after the same ``torch.manual_seed`` start equal.
    ``weight`` decodes the current weight from the workers; ``weight_grad()`` gives ``dW`` at
    the root; the weight is trained with :class:`~codedml.nn.CodedSGD`.

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
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        _check_cluster(cluster)
        self.cluster = cluster
        n = cluster.workers
        self.errors = check_int("errors", errors, 0, n)
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        if dtype not in (torch.float32, torch.float64):
            raise ConfigurationError(f"`dtype` must be torch.float32 or torch.float64, got {dtype}")
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
        w = torch.empty(self.out_features, self.in_features, dtype=dtype)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # torch.nn.Linear's initialisation
        # An empty parameter standing in for the resident weight in autograd (see _CodedLinearFn);
        # kept out of the state_dict, so the keys are nn.Linear's.
        self._grad_anchor = nn.Parameter(torch.zeros(0, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, dtype=dtype))
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
        self._precision = "auto" if dtype == torch.float64 else "float64"
        self._handle = cluster.put(w.double().numpy(), code=code, precision=self._precision)
        self._buffer = None          # encoded momentum buffer (CodedSGD), a ResidentHandle
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []   # (dY, X) since the last step
        self._last_faulty: set[int] = set()
        self._scrub_due = False
        self.stats = {"forward": 0, "backward": 0, "corrected": 0, "skipped": 0, "retried": 0,
                      "scrubs": 0, "repaired": 0, "updates": 0, "update_failures": 0}

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
        if x.shape[-1] != self.in_features:
            raise ConfigurationError(
                f"input must have last dimension in_features={self.in_features}, got shape {tuple(x.shape)}")
        if x.dtype != self._dtype:
            raise ConfigurationError(
                f"input dtype must be the layer's dtype {self._dtype} (as for nn.Linear), got {x.dtype}")
        lead = x.shape[:-1]
        y = _CodedLinearFn.apply(x.reshape(-1, self.in_features), self.bias, self._grad_anchor, self)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, code={self.code!r}, errors={self.errors}")

    @property
    def weight(self) -> torch.Tensor:
        """The current weight, decoded from the stored blocks (a detached copy)."""
        W = self.cluster.fetch(self._handle, errors=self.errors,
                               timeout=self.timeout)
        return torch.from_numpy(np.ascontiguousarray(W)).to(self._dtype)

    def weight_grad(self) -> torch.Tensor | None:
        """``dW = sum dY^T X`` over the backward passes since the last step, computed at the root
        (``None`` when there were none)."""
        if not self._current_pending():
            return None
        U, V = self._gradient_factors()
        return torch.from_numpy(U @ V.T).to(self._dtype)

    def zero_grad(self, set_to_none: bool = True) -> None:  # type: ignore[override]
        super().zero_grad(set_to_none)
        self._pending.clear()

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight      # decoded; first, as in nn.Linear
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination.pop(prefix + "_grad_anchor", None)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if prefix + "_grad_anchor" in missing_keys:
            missing_keys.remove(prefix + "_grad_anchor")
        key = prefix + "weight"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            return
        W = torch.as_tensor(state_dict[key])
        if tuple(W.shape) != (self.out_features, self.in_features):
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(W.shape)}, "
                              f"the shape in current model is {(self.out_features, self.in_features)}.")
            return
        self.set_weight(W)

    def set_weight(self, W: Any) -> None:
        """Replace the weight: encode ``W`` and store it on the workers anew (momentum kept)."""
        W = torch.as_tensor(W).detach().to(torch.float64).cpu().numpy()
        if W.shape != (self.out_features, self.in_features):
            raise ConfigurationError(
                f"`W` must have shape ({self.out_features}, {self.in_features}), got {W.shape}")
        old = self._handle
        self._handle = self.cluster.put(np.ascontiguousarray(W), code=self.code, precision=self._precision)
        self.cluster.drop(old)

    def release(self) -> None:
        """Free the stored weight and momentum on the workers (the layer is unusable after)."""
        for h in (self._handle, self._buffer):
            if h is not None:
                self.cluster.drop(h)
        self._handle = self._buffer = None

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
        # Only the handles' current acks are ever looked at, so the last four booked suffice.
        booked = self.__dict__.setdefault("_booked_acks", [])
        for h in (self._handle, self._buffer):
            ack = getattr(h, "ack", None)
            if ack is None or not ack.done() or any(a is ack for a in booked):
                continue
            booked[:] = [*booked[-3:], ack]
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

    def _coded(self, run: Any) -> np.ndarray:
        """Run one coded product; when it was detectably corrupt beyond the code's power,
        recompute it (a fresh job) -- at once the first time (transient errors), after a scrub
        of the stored blocks the next times (stored blocks corrupted since the last scrub add
        up with transient errors) -- at most ``retries`` times."""
        self._check_updates()

        def noted() -> np.ndarray:
            try:
                return run()
            except CorruptResultError:
                self._note()
                raise

        def before_retry(attempt: int) -> None:
            self.stats["retried"] += 1
            if attempt >= 1:
                self.scrub()

        out = retry_on_corrupt(noted, self.retries, before_retry)
        self._note()
        return out

    def _forward_product(self, X: np.ndarray) -> np.ndarray:
        """``W X^T`` (``out x B``), decoded from the first ``k + 2 errors`` workers."""
        self.stats["forward"] += 1
        Xt = np.ascontiguousarray(X.T)
        return self._coded(lambda: self.cluster.matmul(self._handle, Xt, errors=self.errors,
                                                       timeout=self.timeout))

    def _backward_product(self, G: np.ndarray) -> np.ndarray:
        """``dY W`` (``B x in``), decoded from the first ``2k - 1 + 2 errors`` workers."""
        self.stats["backward"] += 1
        return self._coded(lambda: self.cluster.matmul_left(G, self._handle, errors=self.errors,
                                                            timeout=self.timeout))

    def _current_pending(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(dY, X)`` pairs collected since the last ``zero_grad()``: any ``zero_grad()``
        (the model's too, which never calls this layer's) resets the anchor's grad to None."""
        if self._grad_anchor.grad is None:
            self._pending.clear()
        return self._pending

    def _stash(self, G: np.ndarray, X: np.ndarray) -> None:
        self._current_pending().append((G, X))
        if len(self._pending) == 100:
            warnings.warn(
                "CodedLinear: 100 backward passes accumulated without a coded step. Its weight "
                "is resident on the workers and is trained only by codedml.nn.CodedSGD (torch "
                "optimizers see only the bias); call CodedSGD.step() or zero_grad().",
                RuntimeWarning, stacklevel=2)

    def _gradient_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """``dW = U V^T`` with ``U = [dY_1^T ...]`` (``out x r``) and ``V = [X_1^T ...]``."""
        U = np.concatenate([G.T for G, _ in self._pending], axis=1).astype(np.float64)
        V = np.concatenate([X.T for _, X in self._pending], axis=1).astype(np.float64)
        return U, V

    def coded_step(self, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                   weight_decay: float = 0.0, nesterov: bool = False) -> bool:
        """Apply one SGD step to the stored weight at the workers (see ``cluster.sgd_step``).

        Uses the gradients of the backward passes since the last step; returns ``False`` (and
        changes nothing) when there were none, as torch's SGD skips parameters without grad.
        """
        if not self._current_pending():
            return False
        self._check_updates()
        U, V = self._gradient_factors()
        self._handle, self._buffer = self.cluster.sgd_step(
            self._handle, U, V, lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov, buffer=self._buffer)
        self._pending.clear()
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
        self._scrub_due = False
        self._last_faulty = set()
        return reports


class _FunctionalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None,
                cluster: Any, code: MDSCode, errors: int, retries: int) -> torch.Tensor:
        X, Wn = x.detach().cpu().numpy(), W.detach().cpu().numpy()
        Xt = np.ascontiguousarray(X.T)
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
    return _FunctionalFn.apply(x, weight, bias, cluster, code, errors, check_int("retries", retries, 0))
