"""What is trained: a model, a data set and a loss; and the worker's gradient handler.

A :class:`Task` is built identically on every rank (SPMD): the root trains its model, each
worker keeps a replica (built by the same constructor, or a deep copy of a snapshot taken when
the task was made) and only its own data shard, both in its ``ctx.store`` on first use.

Data layout: the ``N`` training samples are permuted with ``data_seed`` and split into ``n``
partitions ``P_0 .. P_{n-1}`` (``numpy.array_split``). Every policy but gradient coding gives
worker ``w`` partition ``P_w``; under a gradient code worker ``w`` holds the ``s + 1``
partitions ``code.partitions(w)`` (Tandon et al. 2017).

The worker's reply (:func:`grad_handler`):

* plain: ``[L, g]`` in the model's dtype, ``L`` the mini-batch mean loss and ``g`` the
  gradient of that mean;
* QSGD: ``uint8``: 8 bytes of ``L`` (float64), then :func:`codedml.train.qsgd.encode` of ``g``;
* data quantization (``data_bits > 0``): ``uint8``, the quantized samples of the mini-batch,
  see :func:`codedml.train.dataquant.worker_message`;
* gradient code: float64 ``sum_j B[w, j] [L_j, g_j]`` over the worker's partitions, where
  ``L_j`` and ``g_j`` are the *summed* loss and gradient over partition ``j``'s mini-batch. The
  mini-batch of partition ``j`` at step ``t`` is drawn with a generator seeded by
  ``(seed, j, t)``, not by the worker, so every replica of a partition computes the same
  ``g_j`` and the code's combinations decode to the exact sum.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = ["Task", "digits_task", "make_model", "partition_indices", "grad_handler", "handlers",
           "HANDLER"]

#: The name the gradient handler is registered under.
HANDLER = "codedml.train.grad"
#: The name the federated clients' handler is registered under (codedml.train.federated).
FED_HANDLER = "codedml.train.fed"


@dataclass
class Task:
    """A model, training data ``X, y`` (numpy), a loss, and optional test data.

    ``model`` is an ``nn.Module`` (the root trains it in place; workers use deep copies of a
    snapshot taken now) or a zero-argument constructor (called once per rank and replica: it
    must build the same initial weights everywhere, e.g. by seeding torch inside). ``loss`` is
    ``"cross_entropy"``, ``"mse"`` or ``fn(output, target, reduction) -> tensor``.
    """

    model: Any
    X: np.ndarray
    y: np.ndarray
    loss: Any = "cross_entropy"
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    name: str = "task"
    _snapshot: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import torch

        if isinstance(self.model, torch.nn.Module):
            self._snapshot = copy.deepcopy(self.model)
        elif not callable(self.model):
            raise ConfigurationError(
                f"`model` must be a torch.nn.Module or a constructor, got {type(self.model).__name__}")
        self.X = np.ascontiguousarray(self.X)
        self.y = np.ascontiguousarray(self.y)
        if len(self.X) != len(self.y) or len(self.X) == 0:
            raise ConfigurationError(f"`X` and `y` must hold the same number (> 0) of samples, "
                                     f"got {len(self.X)} and {len(self.y)}")
        if not (isinstance(self.loss, str) and self.loss in ("cross_entropy", "mse")) and not callable(self.loss):
            raise ConfigurationError(f"`loss` must be 'cross_entropy', 'mse' or a callable, got {self.loss!r}")

    def root_model(self) -> Any:
        """The model the root trains (the module passed in, or a fresh one)."""
        import torch

        return self.model if isinstance(self.model, torch.nn.Module) else self.model()

    def replica(self) -> Any:
        """A worker's replica: same architecture, weights overwritten by every request."""
        return copy.deepcopy(self._snapshot) if self._snapshot is not None else self.model()

    def loss_fn(self, out: Any, target: Any, reduction: str = "mean") -> Any:
        import torch.nn.functional as F

        if self.loss == "cross_entropy":
            return F.cross_entropy(out, target, reduction=reduction)
        if self.loss == "mse":
            return F.mse_loss(out, target, reduction=reduction)
        return self.loss(out, target, reduction)


def make_model(kind: str, inputs: int, classes: int, *, hidden: int = 32, seed: int = 0,
               dtype: str = "float32") -> Any:
    """``"logreg"`` (one linear layer) or ``"mlp"`` (linear-ReLU-linear), seeded weights."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind == "logreg":
        m = torch.nn.Linear(inputs, classes)
    elif kind == "mlp":
        m = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, classes))
    else:
        raise ConfigurationError(f"`model` must be 'logreg' or 'mlp', got {kind!r}")
    with torch.no_grad():
        for p in m.parameters():  # the same weights on every rank, whatever torch's global RNG
            p.copy_(torch.empty_like(p).uniform_(-1.0, 1.0, generator=g) / np.sqrt(max(1, p.shape[-1])))
    return m.to(getattr(torch, dtype))


def digits_task(model: str = "logreg", *, hidden: int = 32, seed: int = 0,
                dtype: str = "float32", test_fraction: float = 0.2) -> Task:
    """scikit-learn's digits (1797 8x8 images, 10 classes; shipped with the package), pixels
    scaled to [0, 1], a seeded train/test split, and a seeded ``make_model``."""
    import math

    from sklearn.datasets import load_digits

    from .._config import MAX_SEED, check_int

    # Every argument checked here, not when the model is first built (on a worker).
    if model not in ("logreg", "mlp"):
        raise ConfigurationError(f"`model` must be 'logreg' or 'mlp', got {model!r}")
    check_int("hidden", hidden, 1)
    check_int("seed", seed, 0, MAX_SEED)
    if dtype not in ("float32", "float64"):
        raise ConfigurationError(f"`dtype` must be 'float32' or 'float64', got {dtype!r}")
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or not (math.isfinite(test_fraction) and 0 < test_fraction < 1)):
        raise ConfigurationError(f"`test_fraction` must be a number between 0 and 1 (exclusive), "
                                 f"got {test_fraction!r}")

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    perm = np.random.default_rng(seed).permutation(len(X))
    cut = int(round(len(X) * (1 - test_fraction)))
    tr, te = perm[:cut], perm[cut:]
    ctor = lambda: make_model(model, X.shape[1], 10, hidden=hidden, seed=seed, dtype=dtype)  # noqa: E731
    return Task(ctor, X[tr], y[tr].astype(np.int64), "cross_entropy", X[te], y[te].astype(np.int64),
                name=f"digits-{model}")


def partition_indices(n_samples: int, parts: int, data_seed: int, partition: str = "iid",
                      y: np.ndarray | None = None) -> list[np.ndarray]:
    """The ``parts`` partitions of ``range(n_samples)``: under ``"iid"`` the seeded permutation
    cut in nearly equal parts; under ``"dirichlet:ALPHA"`` label skew of the labels ``y``
    (:func:`codedml.train.partition.split`)."""
    if partition == "iid":
        perm = np.random.default_rng([int(data_seed), 0xDA7A]).permutation(n_samples)
        return np.array_split(perm, parts)
    from .partition import split

    if y is None or len(y) != n_samples:
        raise ConfigurationError(f"`partition` {partition!r} needs the {n_samples} labels `y`")
    return split(y, parts, partition, data_seed)


def _state(ctx: Any, task: Task, params: dict[str, Any]) -> dict[str, Any]:
    """The worker's replica and shard, built on first use (and rebuilt if the layout changes)."""
    import torch

    part = params.get("partition", "iid")
    key = (params["nparts"], params["gc_s"], params["gc_scheme"], params["data_seed"], part)
    st = ctx.store.get(HANDLER)
    if st is not None and st["key"] == key:
        return st
    parts = partition_indices(len(task.X), params["nparts"], params["data_seed"], part, task.y)
    if params["gc_s"] is not None:
        from ..codes import GradientCode

        code = GradientCode(params["nparts"], params["gc_s"], params["gc_scheme"])
        mine = code.partitions(ctx.worker)
        coef = {j: float(code.coefficients[ctx.worker, j]) for j in mine}
    else:
        code, mine, coef = None, (ctx.worker,), {ctx.worker: 1.0}
    model = st["model"] if st is not None else task.replica()
    shards = {j: (torch.from_numpy(task.X[parts[j]].copy()), torch.from_numpy(task.y[parts[j]].copy()))
              for j in mine}
    st = {"key": key, "model": model, "shards": shards, "coef": coef,
          "params": [p for p in model.parameters()]}
    ctx.store[HANDLER] = st
    return st


def _load(st: dict[str, Any], flat: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        off = 0
        for p in st["params"]:
            k = p.numel()
            p.copy_(torch.from_numpy(flat[off:off + k].reshape(p.shape)).to(p.dtype))
            off += k


def _partial(task: Task, st: dict[str, Any], j: int, idx_rng: np.random.Generator, batch: int,
             reduction: str) -> tuple[float, np.ndarray, int]:
    """(loss, flat gradient, samples) on a mini-batch of partition ``j``."""
    import torch

    X, y = st["shards"][j]
    m = len(X)
    if batch and batch < m:
        sel = torch.from_numpy(idx_rng.choice(m, batch, replace=False))
        X, y = X[sel], y[sel]
    model = st["model"]
    model.zero_grad(set_to_none=False)
    loss = task.loss_fn(model(X), y, reduction)
    loss.backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                   for p in st["params"]])
    return float(loss.detach()), g.detach().numpy(), len(X)


def grad_handler(task: Task, ctx: Any, flat: np.ndarray, **params: Any) -> np.ndarray:
    """The worker side of every policy: load ``flat`` parameters, reply with a gradient message.

    ``params``: ``nparts``, ``data_seed``, ``seed``, ``batch`` (0: whole shard), ``step`` and
    ``sub`` (which mini-batch), ``qsgd`` (levels, 0: off), ``gc_s`` / ``gc_scheme`` (gradient
    code or ``None``). See the module docstring for the reply layouts.
    """
    st = _state(ctx, task, params)
    _load(st, flat)
    seed, step, sub, batch = int(params["seed"]), int(params["step"]), int(params["sub"]), int(params["batch"])
    if params["gc_s"] is not None:
        msg = None
        for j, c in st["coef"].items():  # seeded by partition, so replicas agree exactly
            rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x6C, j, step])
            loss, g, _ = _partial(task, st, j, rng, batch, "sum")
            part = np.concatenate([[loss], g.astype(np.float64)])
            msg = c * part if msg is None else msg + c * part
        return msg
    rng = np.random.default_rng([seed & 0xFFFFFFFF, ctx.worker, step, sub])
    if params.get("data_bits"):  # data quantization: quantized samples, not a gradient
        from .dataquant import worker_message

        return worker_message(task, st, ctx.worker, rng, params)
    loss, g, _ = _partial(task, st, ctx.worker, rng, batch, "mean")
    if params["qsgd"]:
        from .qsgd import encode

        qrng = np.random.default_rng([seed & 0xFFFFFFFF, 0x95, ctx.worker, step, sub])
        return np.concatenate([np.frombuffer(np.float64(loss).tobytes(), dtype=np.uint8),
                               encode(g, int(params["qsgd"]), qrng)])
    return np.concatenate([np.asarray([loss], dtype=g.dtype), g])


def handlers(task: Task) -> dict[str, Callable[..., np.ndarray]]:
    """``{HANDLER: fn, FED_HANDLER: fn}`` to pass as ``handlers=`` to a cluster on every rank."""
    def fed(ctx: Any, *arrays: np.ndarray, **p: Any) -> np.ndarray:
        from .federated import fed_handler  # the clients' side of fedavg, fsvrg and dane

        return fed_handler(task, ctx, *arrays, **p)

    return {HANDLER: lambda ctx, flat, **p: grad_handler(task, ctx, flat, **p), FED_HANDLER: fed}
