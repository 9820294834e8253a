"""The failure models. Each is a frozen dataclass; calling it returns a :class:`Fault`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigurationError

__all__ = [
    "Fault", "Corruption", "FaultModel", "NoFaults", "FixedStragglers", "ShiftedExponential",
    "Pareto", "Bursty", "FailSilent", "Die", "SoftErrors", "StorageErrors", "Schedule", "Compose",
    "corrupt",
    "fault_for", "check_model_arg", "CORRUPTION_KINDS", "MAX_FAULT_SEED",
]

#: Soft-error classes: a flipped bit in the mantissa / exponent / sign of one entry, one gross
#: value, NaN, +Inf, or the whole result scaled by an adversarial factor.
#: The largest seed of a failure model run (``fault_for`` seeds its generators with it):
#: ``LocalCluster(seed=...)``, ``MPICluster(seed=...)``, ``--fault-seed`` and ``[faults] seed``.
MAX_FAULT_SEED = 2**32 - 1

CORRUPTION_KINDS = ("mantissa", "exponent", "sign", "gross", "nan", "inf", "scale")


@dataclass(frozen=True)
class Corruption:
    """How to corrupt one result: ``kind`` from :data:`CORRUPTION_KINDS`; ``value`` is the
    gross value or scale factor."""

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CORRUPTION_KINDS:
            raise ConfigurationError(f"corruption `kind` must be one of {CORRUPTION_KINDS}, got {self.kind!r}")
        _number("value", self.value)


@dataclass(frozen=True)
class Fault:
    """What happens to one worker on one job.

    ``delay`` seconds are added before the result is sent; ``crash`` is ``None``, ``"silent"``
    (the worker stops returning results from this job on) or ``"die"`` (the process kills
    itself with SIGKILL); ``corruptions`` are applied to the result in order. ``storage``
    corruptions hit the worker's *stored* (resident) operand instead, when it is updated; the
    worker draws them per (rank, update number), not per job.
    """

    delay: float = 0.0
    crash: str | None = None
    corruptions: tuple[Corruption, ...] = ()
    storage: tuple[Corruption, ...] = ()

    def __post_init__(self) -> None:
        if self.delay != 0.0:
            _positive("delay", self.delay)
        if self.crash not in (None, "silent", "die"):
            raise ConfigurationError(f"`crash` must be None, 'silent' or 'die', got {self.crash!r}")
        for name in ("corruptions", "storage"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not all(isinstance(c, Corruption) for c in v):
                raise ConfigurationError(f"`{name}` must be a tuple of Corruption, got {v!r}")

    def __add__(self, other: "Fault") -> "Fault":
        crash = self.crash or other.crash
        if self.crash == "die" or other.crash == "die":
            crash = "die"
        return Fault(self.delay + other.delay, crash, self.corruptions + other.corruptions,
                     self.storage + other.storage)

    @property
    def is_clean(self) -> bool:
        return self.delay == 0 and self.crash is None and not self.corruptions and not self.storage


NO_FAULT = Fault()


class FaultModel:
    """Base of the models: ``model(rank, job, rng) -> Fault``; ``a + b`` composes."""

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:  # pragma: no cover
        raise NotImplementedError

    def __add__(self, other: "FaultModel") -> "Compose":
        left = self.models if isinstance(self, Compose) else (self,)
        right = other.models if isinstance(other, Compose) else (other,)
        return Compose(left + right)


def _ranks(name: str, ranks: Iterable[int] | None) -> frozenset[int] | None:
    """Worker ranks: integers >= 1 (rank 0 is the root, which runs no worker)."""
    if ranks is None:
        return None
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise ConfigurationError(f"`{name}` must be a list of worker ranks (>= 1), got {ranks!r}")
    out = []
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise ConfigurationError(
                f"`{name}` must hold integer worker ranks (>= 1), got {r!r} in {ranks!r}")
        out.append(int(r))
    bad = sorted(r for r in out if r < 1)
    if bad:
        raise ConfigurationError(
            f"`{name}` must hold worker ranks of at least 1 (rank 0 is the root), got {bad[0]}")
    return frozenset(out)


def _job(name: str, value: int) -> int:
    """A job index: an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigurationError(f"`{name}` must be an integer job index of at least 0, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"`{name}` must be a job index of at least 0, got {value}")
    return int(value)


def _number(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigurationError(f"`{name}` must be a number, got {value!r}")
    return float(value)


def _positive(name: str, value: float, *, allow_zero: bool = True) -> float:
    """A finite number >= 0 (or > 0)."""
    v = _number(name, value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        rng = "a finite number of at least 0" if allow_zero else "a finite number greater than 0"
        raise ConfigurationError(f"`{name}` must be {rng}, got {value}")
    return v


def _prob(name: str, value: float) -> float:
    v = _number(name, value)
    if not 0.0 <= v <= 1.0:
        raise ConfigurationError(f"`{name}` must be a probability between 0 and 1, got {value}")
    return v


def _seed(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigurationError(f"`{name}` must be an integer of at least 0, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class NoFaults(FaultModel):
    """No delay, no crash, no corruption."""

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        return NO_FAULT


@dataclass(frozen=True)
class FixedStragglers(FaultModel):
    """The given ranks are slow by ``delay`` seconds on every job (from job ``start`` on)."""

    ranks: frozenset[int]
    delay: float
    start: int = 0

    def __init__(self, ranks: Iterable[int], delay: float, start: int = 0) -> None:
        object.__setattr__(self, "ranks", _ranks("ranks", ranks))
        object.__setattr__(self, "delay", _positive("delay", delay))
        object.__setattr__(self, "start", _job("start", start))

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        return Fault(self.delay) if rank in self.ranks and job >= self.start else NO_FAULT


@dataclass(frozen=True)
class ShiftedExponential(FaultModel):
    """Delay ``shift + Exp(mean=scale)`` seconds per (rank, job) (Lee et al. 2018's model)."""

    shift: float = 0.0
    scale: float = 0.1
    ranks: frozenset[int] | None = None

    def __post_init__(self) -> None:
        _positive("shift", self.shift)
        _positive("scale", self.scale, allow_zero=False)
        object.__setattr__(self, "ranks", _ranks("ranks", self.ranks))

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        if self.ranks is not None and rank not in self.ranks:
            return NO_FAULT
        return Fault(self.shift + float(rng.exponential(self.scale)))


@dataclass(frozen=True)
class Pareto(FaultModel):
    """Heavy-tailed delay: ``scale * (Pareto(alpha) + 1)`` seconds (minimum ``scale``)."""

    scale: float = 0.01
    alpha: float = 2.0
    ranks: frozenset[int] | None = None

    def __post_init__(self) -> None:
        _positive("scale", self.scale, allow_zero=False)
        _positive("alpha", self.alpha, allow_zero=False)
        object.__setattr__(self, "ranks", _ranks("ranks", self.ranks))

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        if self.ranks is not None and rank not in self.ranks:
            return NO_FAULT
        return Fault(self.scale * (float(rng.pareto(self.alpha)) + 1.0))


@dataclass(frozen=True)
class Bursty(FaultModel):
    """Two-state (Gilbert-Elliott) straggling: a worker turns slow with probability ``p_slow``
    per job, recovers with ``p_recover``, and is delayed ``delay`` seconds while slow.

    The state of (rank, job) depends on the rank's history; it is recomputed from a generator
    seeded by (seed, rank) alone, so it is the same whatever order jobs are asked about.
    """

    p_slow: float = 0.1
    p_recover: float = 0.5
    delay: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        _prob("p_slow", self.p_slow)
        _prob("p_recover", self.p_recover)
        _positive("delay", self.delay)
        _seed("seed", self.seed)

    def slow(self, rank: int, job: int, experiment_seed: int = 0) -> bool:
        """Whether ``rank`` is in the slow state at ``job``."""
        u = np.random.default_rng([self.seed, experiment_seed, rank, 0xB0]).random(job + 1)
        state = False
        for t in range(job + 1):
            state = (u[t] >= self.p_recover) if state else (u[t] < self.p_slow)
        return bool(state)

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        # The chain depends on the rank's history, not on this job's generator alone: take the
        # experiment seed from the generator's seed sequence (fault_for seeds it (seed, rank, job)).
        ent = rng.bit_generator.seed_seq.entropy  # type: ignore[attr-defined]
        seed = int(ent[0]) if isinstance(ent, (list, tuple)) and ent else 0
        return Fault(self.delay) if self.slow(rank, job, seed) else NO_FAULT


@dataclass(frozen=True)
class FailSilent(FaultModel):
    """The given ranks stop returning results from job ``start`` on (they keep reading input)."""

    ranks: frozenset[int]
    start: int = 0

    def __init__(self, ranks: Iterable[int], start: int = 0) -> None:
        object.__setattr__(self, "ranks", _ranks("ranks", ranks))
        object.__setattr__(self, "start", _job("start", start))

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        return Fault(crash="silent") if rank in self.ranks and job >= self.start else NO_FAULT


@dataclass(frozen=True)
class Die(FaultModel):
    """Real process death: the given ranks SIGKILL themselves at job ``at``.

    Survivable only under Open MPI's ULFM (``mpiexec --with-ft ulfm``); under MPICH a death by
    signal ends the whole job. In :class:`~codedml.LocalCluster` the worker thread stops.
    """

    ranks: frozenset[int]
    at: int = 0

    def __init__(self, ranks: Iterable[int], at: int = 0) -> None:
        object.__setattr__(self, "ranks", _ranks("ranks", ranks))
        object.__setattr__(self, "at", _job("at", at))

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        return Fault(crash="die") if rank in self.ranks and job >= self.at else NO_FAULT


@dataclass(frozen=True)
class SoftErrors(FaultModel):
    """Each worker result is corrupted with probability ``prob`` by a ``kind`` soft error.

    ``kind`` is one of :data:`CORRUPTION_KINDS`; ``value`` is the gross value (``"gross"``) or
    the factor (``"scale"``; an adversarial scaling of the whole result).
    """

    kind: str = "exponent"
    prob: float = 0.05
    value: float = 1e6
    ranks: frozenset[int] | None = None

    def __post_init__(self) -> None:
        Corruption(self.kind, self.value)
        _prob("prob", self.prob)
        v = _number("value", self.value)
        if not math.isfinite(v):
            raise ConfigurationError(f"`value` must be a finite number, got {self.value}")
        object.__setattr__(self, "ranks", _ranks("ranks", self.ranks))

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        if self.ranks is not None and rank not in self.ranks:
            return NO_FAULT
        if rng.random() < self.prob:
            return Fault(corruptions=(Corruption(self.kind, self.value),))
        return NO_FAULT


@dataclass(frozen=True)
class StorageErrors(SoftErrors):
    """Each update of a worker's stored operand corrupts it with probability ``prob``.

    Models a soft error in memory that holds an encoded weight: after a resident update
    (``cluster.update`` / ``cluster.sgd_step``) one entry of the worker's stored block gets a
    ``kind`` error (:data:`CORRUPTION_KINDS`) and stays corrupt until a scrub repairs it. Drawn
    per (rank, update number, stored block), so it reproduces; an SGD step also hits the
    momentum buffer it updates. Same parameters as :class:`SoftErrors` (default ``prob``
    0.01); it corrupts stored blocks, never results.
    """

    prob: float = 0.01

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        hit = super().__call__(rank, job, rng)
        return Fault(storage=hit.corruptions) if hit.corruptions else NO_FAULT


@dataclass(frozen=True)
class Schedule(FaultModel):
    """A deterministic schedule ``{job: {rank: Fault}}`` for tests."""

    table: Mapping[int, Mapping[int, Fault]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.table, Mapping):
            raise ConfigurationError(f"`table` must be a mapping {{job: {{rank: Fault}}}}, got {self.table!r}")
        for job, row in self.table.items():
            _job("table job", job)
            if not isinstance(row, Mapping):
                raise ConfigurationError(f"`table[{job}]` must be a mapping {{rank: Fault}}, got {row!r}")
            _ranks(f"table[{job}] ranks", list(row))
            for rank, f in row.items():
                if not isinstance(f, Fault):
                    raise ConfigurationError(f"`table[{job}][{rank}]` must be a Fault, got {f!r}")

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        return self.table.get(job, {}).get(rank, NO_FAULT)

    def __hash__(self) -> int:
        return id(self)


@dataclass(frozen=True)
class Compose(FaultModel):
    """Several models at once: delays add, corruptions accumulate, any crash wins ("die" first)."""

    models: tuple[FaultModel, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.models, tuple) or not all(isinstance(m, FaultModel) for m in self.models):
            raise ConfigurationError(f"`models` must be a tuple of FaultModel, got {self.models!r}")

    def __call__(self, rank: int, job: int, rng: np.random.Generator) -> Fault:
        out = NO_FAULT
        ent = rng.bit_generator.seed_seq.entropy  # type: ignore[attr-defined]
        base = list(ent) if isinstance(ent, (list, tuple)) else [int(ent)]
        for i, m in enumerate(self.models):  # one independent stream per model, same seed first
            out = out + m(rank, job, np.random.default_rng(base + [0xC0, i]))
        return out


def check_model_arg(faults: object, seed: object) -> None:
    """The ``faults`` and ``seed`` arguments of a cluster: a failure model (any callable
    ``model(rank, job, rng) -> Fault``) or None, and an integer seed between 0 and
    :data:`MAX_FAULT_SEED` (2**32 - 1), the range ``--fault-seed`` and ``[faults] seed`` accept:
    a negative or wider seed is refused by name rather than silently reduced modulo 2**32."""
    if faults is not None and not callable(faults):
        raise ConfigurationError(
            f"`faults` must be a FaultModel (a callable model(rank, job, rng) -> Fault) or None, "
            f"got {faults!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigurationError(f"`seed` must be an integer between 0 and {MAX_FAULT_SEED}, got {seed!r}")
    if not 0 <= int(seed) <= MAX_FAULT_SEED:  # the same range as --fault-seed / [faults] seed
        raise ConfigurationError(f"`seed` must be an integer between 0 and {MAX_FAULT_SEED}, got {seed}")


def fault_for(model: FaultModel | None, seed: int, rank: int, job: int) -> Fault:
    """The fault of ``rank`` on ``job``: the model called with a generator seeded by (seed, rank, job)."""
    if model is None:
        return NO_FAULT
    return model(rank, job, np.random.default_rng([int(seed) & 0xFFFFFFFF, int(rank), int(job)]))


def corrupt(result: np.ndarray, corruption: Corruption, rng: np.random.Generator,
            field: int | None = None) -> np.ndarray:
    """A copy of ``result`` with one soft error of ``corruption.kind`` applied.

    Bit flips pick one entry and a bit of the chosen class: float64 mantissa bits 26-51 (the
    upper half: flips below it are within rounding noise), exponent 52-62, sign 63; float32
    11-22, 23-30, 31. Complex results flip a bit of one real or imaginary part. Over GF(p)
    (integer results) every kind adds a random nonzero residue to one entry.
    """
    out = np.array(result, copy=True)
    flat = out.reshape(-1)
    if flat.size == 0:
        return out
    i = int(rng.integers(flat.size))
    kind = corruption.kind
    if out.dtype.kind in "iu":
        p = field or (2**31 - 1)
        flat[i] = (int(flat[i]) + 1 + int(rng.integers(p - 1))) % p
        return out
    if kind == "scale":
        return out * (corruption.value or -1.0)
    if kind == "gross":
        flat[i] = corruption.value or 1e6
    elif kind == "nan":
        flat[i] = np.nan
    elif kind == "inf":
        flat[i] = np.inf
    else:
        real = flat.view(np.float64 if out.dtype in (np.float64, np.complex128) else np.float32)
        j = int(rng.integers(real.size))
        wide = real.dtype == np.float64
        lo, hi = {"mantissa": (0, 52 if wide else 23), "exponent": (52, 63) if wide else (23, 31),
                  "sign": (63, 64) if wide else (31, 32)}[kind]
        if kind == "mantissa":  # the upper half of the mantissa: a change far above rounding
            lo = (hi // 2)
        bit = int(rng.integers(lo, hi))
        ints = real.view(np.uint64 if wide else np.uint32)
        ints[j] ^= (np.uint64(1) << np.uint64(bit)) if wide else (np.uint32(1) << np.uint32(bit))
    return out
