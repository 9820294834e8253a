"""Quadratic networks: ``y = sum_j (w_j . x)^2`` with a planted teacher (the ``quadratic`` task).

The student (:func:`quadratic_model`) has ``k`` units ``w_1..w_k`` (the rows of ``W``) and computes
``f_W(x) = sum_j (w_j . x)^2 = x^T W^T W x``. The data are synthetic and seeded:
``x ~ N(0, I_d)`` and ``y = f_{W*}(x)`` for a teacher ``W*`` of ``r`` rows with
``N(0, 1/d)`` entries (so ``E[y] ~ r``), trained with the mean squared error

.. math::  L(W) = \\frac1N \\sum_i \\big(x_i^T (W^T W - W^{*T} W^*) x_i\\big)^2 .

For Gaussian inputs the population loss is
``2 ||W^T W - M*||_F^2 + (tr(W^T W - M*))^2`` with ``M* = W*^T W*``: a symmetric low-rank
factorisation problem whose local minima are all global (``W^T W = M*``, loss 0, unique up to
``W -> Q W`` with ``Q`` orthogonal) and whose saddles are strict. With a student of exactly
``k = r`` units and ``N >> d r`` samples the loss is locally strongly convex modulo that
rotation (a PL inequality holds near the optimum), so gradient descent, and SGD and QSGD too
since the data are noiseless (every per-sample gradient vanishes at the optimum, so their
noise shrinks with the loss), converge *linearly*: ``L(W_t) <= C rho^t`` (Soltanolkotabi,
Javanmard, Lee 2018; Du, Lee 2018). Overparametrised students (``k > r``) converge too, but
the extra directions decay sublinearly; the task therefore uses ``k = r`` unless told.

Examples
--------
>>> from codedml.train.quadratic import quadratic_task
>>> t = quadratic_task(dim=6, rank=2, samples=200)
>>> t.X.shape, t.y.shape, t.loss, t.name
((160, 6), (160,), 'mse', 'quadratic-d6-r2')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codes._validate import check_int
from ..errors import ConfigurationError
from .task import Task

__all__ = ["quadratic_model", "quadratic_task", "teacher"]


def quadratic_model(dim: int, width: int, *, seed: int = 0, scale: float = 1.0,
                    dtype: str = "float32") -> Any:
    """A seeded :class:`QuadraticNet` with ``width`` units, entries ``N(0, scale^2 / dim)``."""
    import torch

    class QuadraticNet(torch.nn.Module):
        """``f_W(x) = sum_j (w_j . x)^2``, ``W`` of shape ``(width, dim)``."""

        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(int(seed))
            w = torch.randn(width, dim, generator=g, dtype=torch.float64) * (scale / np.sqrt(dim))
            self.weight = torch.nn.Parameter(w.to(getattr(torch, dtype)))

        def forward(self, x: Any) -> Any:
            return (x @ self.weight.T).pow(2).sum(-1)

    return QuadraticNet()


def teacher(dim: int, rank: int, seed: int = 0) -> np.ndarray:
    """The planted ``W*`` (``rank x dim``, float64, ``N(0, 1/dim)`` entries, seeded)."""
    return np.random.default_rng([int(seed), 0x7EAC]).standard_normal((rank, dim)) / np.sqrt(dim)


def quadratic_task(dim: int = 20, rank: int = 2, samples: int = 2000, *, width: int = 0,
                   seed: int = 0, dtype: str = "float32", test_fraction: float = 0.2,
                   init_scale: float = 1.0) -> Task:
    """The planted quadratic-network task (module docstring): ``samples`` Gaussian inputs in
    ``dim`` dimensions, targets from a rank-``rank`` teacher, a student of ``width`` units
    (0: ``rank``), seeded by ``seed``; ``test_fraction`` of the samples held out."""
    dim = check_int("dim", dim, 1, 100_000)
    rank = check_int("rank", rank, 1, dim, what=f"dim={dim}")
    samples = check_int("samples", samples, 2, 10_000_000)
    width = check_int("width", width, 0, 100_000) or rank
    if dtype not in ("float32", "float64"):
        raise ConfigurationError(f"`dtype` must be 'float32' or 'float64', got {dtype!r}")
    if not 0 <= test_fraction < 1:
        raise ConfigurationError(f"`test_fraction` must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng([int(seed), 0xDA7A])
    X = rng.standard_normal((samples, dim))
    y = ((X @ teacher(dim, rank, seed).T) ** 2).sum(1)
    cut = max(1, int(round(samples * (1 - test_fraction))))
    X, y = X.astype(dtype), y.astype(dtype)
    ctor = lambda: quadratic_model(dim, width, seed=seed + 1, scale=init_scale, dtype=dtype)  # noqa: E731
    return Task(ctor, X[:cut], y[:cut], "mse", X[cut:] if cut < samples else None,
                y[cut:] if cut < samples else None, name=f"quadratic-d{dim}-r{rank}")
