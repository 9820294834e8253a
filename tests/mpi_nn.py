"""Coded layers under a real mpiexec (launched by tests/test_nn.py): `mpiexec -n N python mpi_nn.py`.

The root trains a small CodedLinear MLP with CodedSGD over MPICluster under injected soft
errors, storage errors and a straggler, trains the same MLP built from nn.Linear with
torch.optim.SGD on the same batches, resumes a deep copy from CodedSGD's state_dict and steps
both with torch.optim.Adam, and prints one RESULT: JSON line comparing them.
"""

import copy
import json
import sys

import torch
from mpi4py import MPI

from codedml import MPICluster
from codedml.faults import FixedStragglers, SoftErrors, StorageErrors
from codedml.nn import CodedLinear, CodedSGD

comm = MPI.COMM_WORLD
n = comm.Get_size() - 1
torch.set_num_threads(1)
faults = SoftErrors("exponent", 0.03) + FixedStragglers([1], 0.05) + StorageErrors("sign", 0.01)
dt = torch.float64


def mlp(coded, cluster=None):
    torch.manual_seed(3)
    if coded:
        return torch.nn.Sequential(CodedLinear(12, 9, cluster=cluster, errors=1, dtype=dt), torch.nn.Tanh(),
                                   CodedLinear(9, 4, cluster=cluster, errors=1, dtype=dt))
    return torch.nn.Sequential(torch.nn.Linear(12, 9, dtype=dt), torch.nn.Tanh(), torch.nn.Linear(9, 4, dtype=dt))


with MPICluster(comm, faults=faults, seed=11, timeout=60) as cluster:
    if cluster is not None:
        coded, ref = mlp(True, cluster), mlp(False)
        oc = CodedSGD(coded, lr=0.05, momentum=0.9, weight_decay=1e-3, scrub_every=1)
        orf = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        g = torch.Generator().manual_seed(0)
        # 32 steps: 9 (5 workers) to 13 (7 workers) results go into each step's decodes, so
        # with 3% of results corrupt the chance that no corrupt one is used (and the test's
        # "corrected > 0" fails) is 0.97^288 to 0.97^416, below 2e-4; at 8 steps it was up to
        # 0.97^72, about 11%, and a fresh-clone run hit it
        for _ in range(32):
            x, y = torch.randn(16, 12, generator=g, dtype=dt), torch.randint(0, 4, (16,), generator=g)
            for model, opt in ((coded, oc), (ref, orf)):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        sd_c, sd_r = coded.state_dict(), ref.state_dict()
        diff = max(float((sd_c[k] - sd_r[k]).abs().max()) for k in sd_r)
        stats = {k: sum(m.stats[k] for m in coded if isinstance(m, CodedLinear))
                 for k in ("forward", "backward", "corrected", "skipped", "retried", "repaired")}
        # resume from CodedSGD's state (momentum buffers included) into a deep copy, then a
        # torch optimizer (Adam: re-encode after every step) on both models
        twin = copy.deepcopy(coded)
        ot = CodedSGD(twin, lr=0.05, momentum=0.9, weight_decay=1e-3, scrub_every=1)
        ot.load_state_dict(oc.state_dict())
        x, y = torch.randn(16, 12, generator=g, dtype=dt), torch.randint(0, 4, (16,), generator=g)
        for model, opt in ((twin, ot), (ref, orf)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        sd_t, sd_r = twin.state_dict(), ref.state_dict()
        resume_diff = max(float((sd_t[k] - sd_r[k]).abs().max()) for k in sd_r)
        adams = torch.optim.Adam(twin.parameters(), lr=1e-2), torch.optim.Adam(ref.parameters(), lr=1e-2)
        for _ in range(3):
            x, y = torch.randn(16, 12, generator=g, dtype=dt), torch.randint(0, 4, (16,), generator=g)
            for model, opt in zip((twin, ref), adams):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        sd_t, sd_r = twin.state_dict(), ref.state_dict()
        adam_diff = max(float((sd_t[k] - sd_r[k]).abs().max()) for k in sd_r)
        print("RESULT:" + json.dumps({"workers": n, "max_param_diff": diff, "stats": stats,
                                      "keys": sorted(sd_c) == sorted(sd_r),
                                      "resume_diff": resume_diff, "adam_diff": adam_diff,
                                      "reencodes": twin[0].stats["reencodes"]}), flush=True)
print(f"rank {comm.Get_rank()} exit", flush=True)
sys.stdout.flush()
