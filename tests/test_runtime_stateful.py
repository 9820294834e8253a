"""The runtime's contract, as a hypothesis state machine on LocalCluster (numpy and torch).

The machine and its invariants are in ``tests/runtime_machine.py``; this runs a small profile
(CI); ``benchmarks/stateful.py`` runs the long one (>= 10,000 steps) and records the counts.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from runtime_machine import RuntimeMachine

TestRuntimeContract = RuntimeMachine.TestCase
TestRuntimeContract.settings = settings(
    max_examples=int(os.environ.get("CODEDML_STATEFUL_EXAMPLES", "12")),
    stateful_step_count=int(os.environ.get("CODEDML_STATEFUL_STEPS", "25")),
    deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
