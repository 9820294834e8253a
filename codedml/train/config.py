"""The configuration of a training run: one frozen dataclass, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigurationError
from .._config import spec_number

__all__ = ["TrainConfig", "POLICIES", "FEDERATED", "staleness_norm_c"]

#: Policy names (see :mod:`codedml.train.policies`).
POLICIES = ("sync", "ksync", "kbatch_sync", "async", "kasync", "kbatch_async", "gradient_coding",
            "adasync", "fedavg", "fsvrg", "dane")

#: Federated policies (:mod:`codedml.train.federated`): a step is a round of local work.
FEDERATED = ("fedavg", "fsvrg", "dane")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (``[train]`` table of a TOML config, ``--flags``, ``CODEDML_TRAIN_*``).

    Attributes
    ----------
    policy : str
        One of :data:`POLICIES`.
    k : int
        K of the K-policies (0: ``workers - 1``, at least 1). K-sync / K-async need
        ``1 <= k <= workers``; the K-batch policies accept any ``k >= 1``.
    steps : int
        Optimizer updates to run (the root's model version after the run).
    max_time : float
        Stop after this many seconds of training (0: no limit).
    lr, momentum : float
        torch.optim.SGD's learning rate and momentum at the root.
    batch : int
        Mini-batch size per gradient (per partition under gradient coding); 0 = whole shard.
    staleness_lr : str
        ``"inverse"``: a gradient of staleness ``tau`` is multiplied by ``1 / (1 + tau)``
        before the update averages its ``m`` gradients (divided by ``m``, not by the sum of
        the weights): a learning rate ``lr / (1 + tau)`` for that gradient, so stale gradients
        make smaller steps. ``"none"``: weight 1. ``"norm:C"``: Dutta et al.'s rate
        ``min(C / ||w_j - w_tau(j)||^2, lr)`` for a gradient computed at ``w_tau(j)`` and
        applied to ``w_j``. Only the asynchronous policies have stale gradients.
    scheme, gc_stragglers, gc_errors : str, int, int
        Gradient code ``GradientCode(n, s, scheme)`` and how many corrupt messages to locate
        per step (waits for ``n - s + 2 e`` messages).
    qsgd : int
        QSGD levels ``s`` on the worker-to-root path (0: full precision).
    data_bits, refine_bits, importance : int, int, str
        Data quantization (Hanna et al. 2020, :mod:`codedml.train.dataquant`): workers send
        their mini-batch's samples stochastically quantized to ``data_bits`` bits per
        coordinate (0: off, send gradients) and the root computes the gradient; optionally the
        gradient correction at the true samples with QSGD at ``refine_bits`` level bits
        (``2^R - 1`` levels; 0: none), and only the samples an ``importance`` rule selects
        (``"loss:T"``, ``"norm:T"``, ``"budget:F"``; ``""``: all).
    suspect : str
        What to do with a gradient flagged as corrupt (non-finite, or norm above ``outlier``
        times the median of recent accepted norms) outside gradient coding: ``"drop"`` or
        ``"keep"``; it is reported either way.
    outlier : float
        The norm-outlier factor (> 1).
    timeout : float
        Seconds without the results a step needs before training stops with an error.
    eval_every : int
        Evaluate the full training loss and test accuracy every this many steps (and at the end).
    checkpoint, checkpoint_every, resume : str, int, str
        Checkpoint path, interval in steps (0: none), and a checkpoint to resume from.
    seed, data_seed : int
        Mini-batch / quantisation randomness; data partitioning.
    partition : str
        ``"iid"`` or ``"dirichlet:ALPHA"`` label skew (:mod:`codedml.train.partition`), for
        every policy.
    fraction : float
        FedAvg's client fraction ``C`` in (0, 1]: ``max(1, round(C n))`` clients per round.
    local_epochs : int
        FedAvg's ``E``: local passes over the shard per round (mini-batch ``batch``, 0: full).
    local_steps : int
        DANE's local gradient steps on its subproblem per round.
    dane_eta, dane_mu : float
        DANE's ``eta`` (> 0) and ``mu`` (>= 0).
    round_deadline : float
        Seconds a federated round (each of its phases) waits for its clients; those that have
        not reported by then are dropped from the round (0: wait for all, up to ``timeout``).
    adasync_every : int
        AdaSync: steps between two updates of K.
    keep_metrics : int
        How many of the latest per-step records :attr:`TrainResult.metrics` (and of the latest
        ``suspects`` / ``corrected`` entries) the root keeps in memory, so a long run's memory
        stays bounded; older ones are dropped and counted in :attr:`TrainResult.dropped`. The
        ``metrics`` file, when given, keeps every record. 0 keeps none in memory.
    """

    policy: str = "sync"
    k: int = 0
    steps: int = 100
    max_time: float = 0.0
    lr: float = 0.5
    momentum: float = 0.0
    batch: int = 32
    staleness_lr: str = "inverse"
    scheme: str = "cyclic"
    gc_stragglers: int = 1
    gc_errors: int = 0
    qsgd: int = 0
    data_bits: int = 0
    refine_bits: int = 0
    importance: str = ""
    suspect: str = "drop"
    outlier: float = 10.0
    timeout: float = 30.0
    eval_every: int = 1
    checkpoint: str = ""
    checkpoint_every: int = 0
    resume: str = ""
    seed: int = 0
    data_seed: int = 0
    partition: str = "iid"
    fraction: float = 1.0
    local_epochs: int = 1
    local_steps: int = 10
    dane_eta: float = 1.0
    dane_mu: float = 0.0
    round_deadline: float = 0.0
    adasync_every: int = 20
    keep_metrics: int = 10000

    def __post_init__(self) -> None:
        for f in fields(self):  # types first: a TOML string where a number belongs is named
            v = getattr(self, f.name)
            want = {"int": int, "float": (int, float), "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            if isinstance(v, bool) or not isinstance(v, want):
                raise ConfigurationError(f"`{f.name}` must be {f.type}, got {v!r}")
        for name, rng in (("max_time", "at least 0 (0: no limit)"), ("lr", "greater than 0"),
                          ("momentum", "in [0, 1)"), ("outlier", "greater than 1"),
                          ("timeout", "of seconds greater than 0"), ("fraction", "in (0, 1]"),
                          ("dane_eta", "greater than 0"), ("dane_mu", "at least 0"),
                          ("round_deadline", "of seconds at least 0 (0: wait for all)")):  # NaN and inf by name
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ConfigurationError(f"`{name}` must be a finite number {rng}, got {v}")
        if self.policy not in POLICIES:
            raise ConfigurationError(f"`policy` must be one of {POLICIES}, got {self.policy!r}")
        _at_least("k", self.k, 0)
        _at_least("steps", self.steps, 1)
        _at_least("max_time", self.max_time, 0)
        if not self.lr > 0:
            raise ConfigurationError(f"`lr` must be greater than 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigurationError(f"`momentum` must be in [0, 1), got {self.momentum}")
        _at_least("batch", self.batch, 0)
        staleness_norm_c(self.staleness_lr)  # validates
        from .partition import parse_partition

        parse_partition(self.partition)
        if not 0 < self.fraction <= 1:
            raise ConfigurationError(f"`fraction` must be in (0, 1], got {self.fraction}")
        _at_least("local_epochs", self.local_epochs, 1)
        _at_least("local_steps", self.local_steps, 1)
        if not self.dane_eta > 0:
            raise ConfigurationError(f"`dane_eta` must be greater than 0, got {self.dane_eta}")
        _at_least("dane_mu", self.dane_mu, 0)
        _at_least("round_deadline", self.round_deadline, 0)
        _at_least("adasync_every", self.adasync_every, 1)
        if self.policy in FEDERATED and self.qsgd:
            raise ConfigurationError(f"`qsgd` must be 0 under {self.policy} (clients send "
                                     f"models, not gradients), got {self.qsgd}")
        if self.scheme not in ("cyclic", "fractional_repetition"):
            raise ConfigurationError(
                f"`scheme` must be 'cyclic' or 'fractional_repetition', got {self.scheme!r}")
        _at_least("gc_stragglers", self.gc_stragglers, 0)
        _at_least("gc_errors", self.gc_errors, 0)
        if not 0 <= self.qsgd <= 2**15:
            raise ConfigurationError(f"`qsgd` must be between 0 and 32768 levels, got {self.qsgd}")
        self._check_data_quantization()
        if self.suspect not in ("drop", "keep"):
            raise ConfigurationError(f"`suspect` must be 'drop' or 'keep', got {self.suspect!r}")
        if not self.outlier > 1:
            raise ConfigurationError(f"`outlier` must be greater than 1, got {self.outlier}")
        if not self.timeout > 0:
            raise ConfigurationError(
                f"`timeout` must be a finite number of seconds greater than 0, got {self.timeout}")
        _at_least("eval_every", self.eval_every, 1)
        _at_least("checkpoint_every", self.checkpoint_every, 0)
        _at_least("keep_metrics", self.keep_metrics, 0)
        for name in ("seed", "data_seed"):  # numpy's generators refuse negative seeds
            if not 0 <= getattr(self, name) <= 2**63 - 1:
                raise ConfigurationError(
                    f"`{name}` must be between 0 and {2**63 - 1}, got {getattr(self, name)}")
        if self.checkpoint_every and not self.checkpoint:
            raise ConfigurationError("`checkpoint_every` needs a `checkpoint` path, got none")

    def _check_data_quantization(self) -> None:
        from .dataquant import MAX_DATA_BITS, MAX_REFINE_BITS, parse_importance

        if not 0 <= self.data_bits <= MAX_DATA_BITS:
            raise ConfigurationError(f"`data_bits` (--data-bits) must be between 0 (off) and "
                                     f"{MAX_DATA_BITS}, got {self.data_bits}")
        if not 0 <= self.refine_bits <= MAX_REFINE_BITS:
            raise ConfigurationError(f"`refine_bits` (--refine-bits) must be between 0 (off) and "
                                     f"{MAX_REFINE_BITS}, got {self.refine_bits}")
        parse_importance(self.importance)
        if not self.data_bits:
            for name in ("refine_bits", "importance"):
                if getattr(self, name):
                    raise ConfigurationError(
                        f"`{name}` (--{name.replace('_', '-')}) needs data quantization "
                        f"(`data_bits` between 1 and {MAX_DATA_BITS}), got "
                        f"{name}={getattr(self, name)!r} with data_bits=0")
            return
        if self.qsgd:
            raise ConfigurationError(
                f"`qsgd` must be 0 with data quantization (data_bits={self.data_bits}: workers "
                f"send samples, not gradients; use `refine_bits`), got {self.qsgd}")
        if self.policy == "gradient_coding":
            raise ConfigurationError(
                f"`data_bits` must be 0 under gradient coding (the decode needs the exact "
                f"gradient combinations), got {self.data_bits}")
        if self.policy in FEDERATED:
            raise ConfigurationError(
                f"`data_bits` must be 0 under {self.policy} (clients send models, not "
                f"samples), got {self.data_bits}")

    def check_workers(self, n: int) -> "TrainConfig":
        """Validate the settings that depend on the worker count ``n``."""
        if self.policy in ("ksync", "kasync", "adasync") and self.k > n:
            raise ConfigurationError(f"`k` must be between 1 and workers={n} for {self.policy}, got {self.k}")
        if self.policy == "gradient_coding":
            s, e = self.gc_stragglers, self.gc_errors
            if s > n - 1:
                raise ConfigurationError(f"`gc_stragglers` must be between 0 and workers-1={n - 1}, got {s}")
            if self.scheme == "fractional_repetition" and n % (s + 1):
                raise ConfigurationError(
                    f"`gc_stragglers` + 1 = {s + 1} must divide workers={n} for fractional repetition")
            if n - s + 2 * e > n:
                raise ConfigurationError(
                    f"`gc_errors` must be at most gc_stragglers/2 = {s // 2} (n - s + 2e results "
                    f"of n={n}), got {e}")
            if self.qsgd:
                raise ConfigurationError("`qsgd` must be 0 under gradient coding (the decode "
                                         "needs the exact combinations), got %d" % self.qsgd)
        return self

    def k_for(self, n: int) -> int:
        if self.policy == "adasync":  # K_0: AdaSync starts small and grows
            return self.k or 1
        return self.k or max(1, n - 1)


def staleness_norm_c(rule: str) -> float | None:
    """``C`` of ``staleness_lr = "norm:C"`` (Dutta et al.'s ``min(C / ||w_j - w_tau(j)||^2,
    lr)``), ``None`` for ``"inverse"`` and ``"none"``; anything else is refused by name."""
    if rule in ("inverse", "none"):
        return None
    kind, sep, arg = str(rule).partition(":")
    if kind == "norm" and sep:
        c = spec_number(arg)
        if math.isfinite(c) and c > 0:
            return c
        raise ConfigurationError(f"`staleness_lr` norm:C needs a finite C greater than 0, got {arg!r}")
    raise ConfigurationError(
        f"`staleness_lr` must be 'inverse', 'none' or 'norm:C' (C > 0), got {rule!r}")


def _at_least(name: str, v: Any, low: float) -> None:
    if v < low:
        raise ConfigurationError(f"`{name}` must be at least {low}, got {v}")
