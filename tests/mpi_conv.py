"""A converted CNN under a real mpiexec (launched by tests/test_conv.py): `mpiexec -n N python mpi_conv.py`.

The root builds a small CNN (conv, conv, linear) from torch layers, converts a copy with
``codedml.nn.convert`` onto an MPICluster with injected soft errors, storage errors and a
straggler, trains it with CodedSGD and the original with torch.optim.SGD on the same batches,
and prints one RESULT: JSON line comparing them (and the unconverted copy).
"""

import json
import sys

import torch
from mpi4py import MPI

from codedml import MPICluster
from codedml.faults import FixedStragglers, SoftErrors, StorageErrors
from codedml.nn import CodedConv2d, CodedLinear, CodedSGD, convert, unconvert

comm = MPI.COMM_WORLD
n = comm.Get_size() - 1
torch.set_num_threads(1)
# one straggler (rank 1) and every corruption on one other worker (rank 3): always within
# what errors=1 corrects, whatever the timing
faults = (FixedStragglers([1], 0.05) + SoftErrors("exponent", 0.2, ranks={3}) +
          StorageErrors("sign", 0.3, ranks={3}))
dt = torch.float64

with MPICluster(comm, faults=faults, seed=11, timeout=60) as cluster:
    if cluster is not None:
        torch.manual_seed(3)
        ref = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1, dtype=dt), torch.nn.Tanh(),
                                  torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=dt), torch.nn.Tanh(),
                                  torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 4, dtype=dt))
        coded = convert(ref, cluster, errors=1)
        oc = CodedSGD(coded, lr=0.05, momentum=0.9, weight_decay=1e-3, scrub_every=1)
        orf = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(6):
            x, y = torch.randn(8, 1, 6, 6, generator=g, dtype=dt), torch.randint(0, 4, (8,), generator=g)
            for model, opt in ((coded, oc), (ref, orf)):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        sd_c, sd_r = coded.state_dict(), ref.state_dict()
        diff = max(float((sd_c[k] - sd_r[k]).abs().max()) for k in sd_r)
        back = unconvert(coded)
        sd_b = back.state_dict()
        back_diff = max(float((sd_b[k] - sd_r[k]).abs().max()) for k in sd_r)
        layers = [m for m in coded.modules() if isinstance(m, CodedLinear)]
        stats = {k: sum(m.stats[k] for m in layers)
                 for k in ("forward", "backward", "corrected", "skipped", "retried", "repaired")}
        print("RESULT:" + json.dumps({
            "workers": n, "max_param_diff": diff, "unconverted_diff": back_diff, "stats": stats,
            "coded": [type(m).__name__ for m in layers],
            "plain_back": [type(m).__name__ for m in back if type(m).__name__ in ("Conv2d", "Linear")],
            "convs": sum(isinstance(m, CodedConv2d) for m in layers)}), flush=True)
print(f"rank {comm.Get_rank()} exit", flush=True)
sys.stdout.flush()
