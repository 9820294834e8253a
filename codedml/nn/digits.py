"""The coded-layer training example: an MLP on scikit-learn's digits (shipped, no download).

Used by the tests, the benchmark (``benchmarks/coded_layers.py``) and as a worked example:
the same MLP built from :class:`CodedLinear` (coded model parallelism), from
``CodedLinear(code=ReplicationCode(n, n))`` (uncoded model parallelism: one row block per
worker, no redundancy) or from ``nn.Linear`` (no cluster), trained with the same seed, batches
and SGD hyper-parameters.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..codes import ReplicationCode
from ..errors import ConfigurationError
from .linear import CodedLinear
from .optim import CodedSGD

__all__ = ["DigitsData", "load_digits_split", "build_mlp", "train_mlp", "KINDS"]

KINDS = ("coded", "uncoded", "plain")


@dataclass(frozen=True)
class DigitsData:
    """Standardised digits features (64 pixels) and labels, split into train and test."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(seed: int = 0, test_fraction: float = 0.25,
                      dtype: torch.dtype = torch.float32) -> DigitsData:
    """scikit-learn's 1797 8x8 digits, shuffled with ``seed``, standardised with the training
    split's mean and standard deviation."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ConfigurationError("the digits example needs scikit-learn: pip install 'codedml[train]'") from exc
    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    n_test = int(round(test_fraction * len(order)))
    te, tr = order[:n_test], order[n_test:]
    X = d.data.astype(np.float64)
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd[sd == 0] = 1.0
    X = (X - mu) / sd
    t = lambda a: torch.tensor(a, dtype=dtype)
    return DigitsData(t(X[tr]), torch.tensor(d.target[tr]), t(X[te]), torch.tensor(d.target[te]))


def build_mlp(kind: str, cluster: Any = None, *, hidden: int = 64, errors: int = 1,
              seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """``64 -> hidden -> hidden -> 10`` with ReLU; ``kind`` in :data:`KINDS`.

    Built after ``torch.manual_seed(seed)``: all three kinds start from the same weights.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"`kind` must be one of {KINDS}, got {kind!r}")
    torch.manual_seed(seed)
    sizes = [64, hidden, hidden, 10]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if kind == "plain":
            layers.append(nn.Linear(a, b, dtype=dtype))
        elif kind == "coded":
            layers.append(CodedLinear(a, b, cluster=cluster, errors=errors, dtype=dtype))
        else:
            n = cluster.workers
            layers.append(CodedLinear(a, b, cluster=cluster, code=ReplicationCode(n, n), dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        out = model(X)
    ok = torch.isfinite(out).all(dim=1) & (out.argmax(dim=1) == y)
    return float(ok.double().mean())


@dataclass
class TrainResult:
    """Per-epoch curves and the final numbers of one training run."""

    kind: str
    epochs: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    steps: int = 0

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "epochs": self.epochs, "wall_s": self.wall, "loss": self.loss,
                "test_accuracy": self.test_accuracy, "final_accuracy": self.final_accuracy,
                "stats": self.stats, "error": self.error, "steps": self.steps}


def train_mlp(model: nn.Sequential, data: DigitsData, *, epochs: int = 10, batch: int = 64,
              lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 1e-4, seed: int = 0,
              scrub_every: int | None = None, progress: bool = False, kind: str = "",
              eval_every: int | None = None, optimizer: Any = None) -> TrainResult:
    """Train with SGD (``CodedSGD`` when the model has coded layers), shuffled mini-batches
    drawn with ``seed``; evaluate test accuracy after every epoch, or every ``eval_every``
    steps (through the model itself, so a coded model's evaluation runs on the cluster too). A run whose products fail beyond what
    the layers tolerate stops with the error recorded (``result.error``). ``optimizer``, a
    callable ``model -> torch.optim.Optimizer``, replaces the default SGD (any torch optimizer
    trains coded layers too: see docs/layers.md)."""
    coded = any(isinstance(m, CodedLinear) for m in model.modules())
    opt: torch.optim.Optimizer
    if optimizer is not None:
        opt = optimizer(model)
    elif coded:
        opt = CodedSGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay, scrub_every=scrub_every)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    res = TrainResult(kind)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    steps = math.ceil(n / batch)
    t0 = time.perf_counter()
    loss_fn = nn.CrossEntropyLoss()
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                opt.zero_grad()
                loss = loss_fn(model(data.X_train[idx]), data.y_train[idx])
                loss.backward()
                opt.step()
                res.steps += 1
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                last = s + 1 == steps  # every epoch ends with an evaluation
                if last or (eval_every and res.steps % eval_every == 0):
                    res.epochs.append(epoch if last else epoch - 1 + (s + 1) / steps)
                    res.loss.append(total / count)
                    res.test_accuracy.append(_accuracy(model, data.X_test, data.y_test))
                    res.wall.append(time.perf_counter() - t0)
                if progress:
                    done = (epoch - 1) * steps + s + 1
                    sys.stdout.write(f"\r  {kind or 'train'}: epoch {epoch}/{epochs} step "
                                     f"{done}/{epochs * steps} loss {total / count:.4f}")
                    sys.stdout.flush()
    except Exception as exc:  # a run the faults defeat is a result, recorded with its cause
        res.error = f"{type(exc).__name__}: {exc}"
    if progress:
        sys.stdout.write("\n")
    if coded:
        res.stats = {k: sum(m.stats[k] for m in model.modules() if isinstance(m, CodedLinear))
                     for k in ("forward", "backward", "corrected", "skipped", "retried", "healed", "scrubs",
                               "repaired", "searched")}
    return res
