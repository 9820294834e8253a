"""Training scenarios under a real mpiexec, run by tests/test_train_mpi.py:
``mpiexec -n N python this.py NAME``. The root prints one ``RESULT:`` JSON line."""

import json
import sys

from mpi4py import MPI

from codedml.errors import TrainingError
from codedml.faults import Die, FailSilent, FixedStragglers
from codedml.train import TrainConfig, digits_task, train

name = sys.argv[1]
comm = MPI.COMM_WORLD
n = comm.Get_size() - 1
task = digits_task("logreg")
if name == "kasync_die":  # rank 2 SIGKILLs itself at job 3 (needs ULFM); rank 1 straggles
    faults = Die([2], at=3) + FixedStragglers([1], 1.5)
    cfg = TrainConfig(policy="kasync", k=2, steps=40, eval_every=40, timeout=20)
elif name == "gc_silent":  # rank n stops answering from job 2 on
    faults = FailSilent([n], start=2)
    cfg = TrainConfig(policy="gradient_coding", gc_stragglers=1, steps=30, eval_every=30, timeout=20)
elif name == "sync_silent":
    faults = FailSilent([n], start=2)
    cfg = TrainConfig(policy="sync", steps=30, timeout=2)
elif name == "fsvrg_die":  # a federated run: rank 2 SIGKILLs itself (ULFM), rank 1 misses deadlines
    faults = Die([2], at=5) + FixedStragglers([1], 1.0)
    cfg = TrainConfig(policy="fsvrg", batch=8, lr=1.0, steps=8, eval_every=8, timeout=20,
                      round_deadline=0.3, partition="dirichlet:0.5")
else:
    raise SystemExit(f"unknown scenario {name}")
try:
    res = train(task, cfg, comm=comm, faults=faults, fault_seed=3)
except TrainingError as exc:
    print("RESULT:" + json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
    sys.exit(0)
if res is not None:
    print("RESULT:" + json.dumps({"steps": res.steps, "loss": res.loss, "crashed": res.crashed,
                                  "wall": res.wall, "workers": sorted({r for m in res.metrics for r in m["workers"]}),
                                  "dropped": sorted({r for m in res.metrics for r in m.get("dropped", [])})}),
          flush=True)
