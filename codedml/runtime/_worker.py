"""Worker-side logic shared by the MPI and in-process runtimes: one request in, one result out.

``WorkerState.handle(ctrl, arrays)`` runs a request (``matmul``, ``put``, ``update``, ``drop``)
and returns the product (or ``None``); :func:`inject` is the single hook point where a
failure model's fault is applied to a result before it is sent.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends import Backend
from ..codes import _gfp
from ..faults import FaultModel, corrupt, fault_for


@dataclass
class WorkerState:
    """What one worker holds: its MPI rank, backend, resident operands and failure model.

    Failure models are asked about the worker's *rank* (with the root at rank 0, worker w is
    rank w + 1, also in :class:`LocalCluster`).
    """

    rank: int
    backend: Backend
    faults: FaultModel | None = None
    seed: int = 0
    resident: dict[int, Any] = field(default_factory=dict)
    silent: bool = False

    def handle(self, ctrl: dict[str, Any], arrays: list[np.ndarray]) -> np.ndarray | None:
        """Run one request; returns its result (``None`` for requests without one).

        The master judges rounding noise from its own encoding's norms, so the worker sends
        no noise scale (a corrupt worker could not be trusted to report one anyway)."""
        op = ctrl["op"]
        p = ctrl.get("field")
        if op == "put":
            a = np.array(arrays[0], copy=True)  # this worker's own copy: updates happen in place
            self.resident[ctrl["handle"]] = a if p is not None else self.backend.to_device(a)
            return None
        if op == "drop":
            self.resident.pop(ctrl["handle"], None)
            return None
        if op == "update":  # resident A += U V^T, applied to the encoded block in place
            u, v = arrays
            a = self.resident[ctrl["handle"]]
            if p is not None:
                self.resident[ctrl["handle"]] = (a + _gfp.matmul_mod(u, v.T.copy(), p)) % p
            else:
                self.backend.add_(a, self.backend.matmul(self.backend.to_device(u),
                                                         self.backend.to_device(np.ascontiguousarray(v.T))))
            return None
        if op == "matmul":
            if ctrl.get("handle") is not None:
                a, b = self.resident[ctrl["handle"]], arrays[0]
            else:
                a, b = arrays
            if p is not None:
                a_np = a if isinstance(a, np.ndarray) else self.backend.to_numpy(a)
                return _gfp.matmul_mod(a_np, b, p)
            return np.ascontiguousarray(self.backend.to_numpy(self.backend.matmul(a, b)))
        raise ValueError(f"unknown request op {op!r}")

    def inject(self, job: int, result: np.ndarray, field_p: int | None, die: Any = None) -> np.ndarray | None:
        """Apply this job's fault: delay, crash or corruption. ``None`` means: send nothing."""
        fault = fault_for(self.faults, self.seed, self.rank, job)
        if fault.crash == "die":
            (die or _die)()
            return None
        if fault.crash == "silent":
            self.silent = True
        if self.silent:
            return None
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.corruptions:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.rank, job, 0xC0])
            for c in fault.corruptions:
                result = corrupt(result, c, rng, field_p)
        return result



def _die() -> None:  # pragma: no cover - the process is gone
    os.kill(os.getpid(), signal.SIGKILL)
