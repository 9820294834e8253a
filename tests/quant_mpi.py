"""Run under mpiexec by tests/test_quantization.py: data quantization with refinement and the
importance layer under K-async over MPICluster, one rank SIGKILLed at its 10th job (ULFM).
The root prints ``RESULT:{json}``."""

from __future__ import annotations

import json

from mpi4py import MPI

from codedml.faults import Die
from codedml.train import TrainConfig, digits_task, train

res = train(digits_task("logreg"),
            TrainConfig(policy="kasync", k=2, steps=30, eval_every=30, data_bits=3, refine_bits=2,
                        importance="budget:0.5", timeout=30),
            comm=MPI.COMM_WORLD, faults=Die([2], at=10))
if res is not None:
    print("RESULT:" + json.dumps({"steps": res.steps, "loss": res.loss, "crashed": res.crashed,
                                  "bits": res.bits_sent, "gradients": res.gradients,
                                  "samples": [m["samples"] for m in res.metrics]}), flush=True)
