"""Codes for coded computing: pure array math (numpy only; galois only when asked for).

No MPI, no torch, no I/O and no clocks here. A code is an immutable value object with
``workers``, ``recovery_threshold``, ``field``, ``encode(A, B)`` (one :class:`Task` per worker,
each computing ``task.a @ task.b``) and ``decode(results, errors=...)``.
"""

from ._base import FLOAT32_MAX_CONDITION, DecodeInfo, Encoding, LinearCode, Task
from ._field import Residues
from ._gfp import MAX_PRIME, matmul_mod
from ._pool import TaskPool, task_pool
from .gradient import GradientCode
from .numerics import condition_number, worst_case_condition
from .polydot import CONSTRUCTIONS, MatDotCode, MDSCode, PolyDotCode, PolynomialCode
from .replication import ReplicationCode

__all__ = [
    "LinearCode",
    "Task",
    "Encoding",
    "DecodeInfo",
    "Residues",
    "MDSCode",
    "PolynomialCode",
    "MatDotCode",
    "PolyDotCode",
    "ReplicationCode",
    "GradientCode",
    "CONSTRUCTIONS",
    "condition_number",
    "worst_case_condition",
    "matmul_mod",
    "MAX_PRIME",
    "FLOAT32_MAX_CONDITION",
    "TaskPool",
    "task_pool",
]
