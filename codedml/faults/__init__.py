"""Failure models: small seeded callables ``model(rank, job, rng) -> Fault``.

A model decides, for one worker (``rank``) and one job, how long the worker is delayed, whether
it crashes, and how its result is corrupted. The runtime calls ``fault_for(model, seed, rank,
job)``, which seeds a fresh generator from ``(seed, rank, job)``: the same experiment injects the
same faults whatever order results arrive in. Models compose with ``+`` (or :class:`Compose`).

Injection happens at one hook point in the worker: after its product is computed and before it
is sent (:func:`apply_fault` in the runtime).
"""

from .models import (Bursty, Compose, Corruption, Die, FailSilent, Fault, FaultModel,
                     FixedStragglers, NoFaults, Pareto, Schedule, ShiftedExponential,
                     SoftErrors, StorageErrors, corrupt, fault_for)
from .config import add_fault_flags, check_fault_ranks, faults_from_config, faults_from_flags

__all__ = [
    "Fault",
    "Corruption",
    "FaultModel",
    "NoFaults",
    "FixedStragglers",
    "ShiftedExponential",
    "Pareto",
    "Bursty",
    "FailSilent",
    "Die",
    "SoftErrors",
    "StorageErrors",
    "Schedule",
    "Compose",
    "corrupt",
    "fault_for",
    "faults_from_config",
    "faults_from_flags",
    "add_fault_flags",
    "check_fault_ranks",
]
