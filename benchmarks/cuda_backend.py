"""Benchmark: the CUDA backend's worker product against plain ``torch.matmul`` on the same GPU.

For each size and dtype, this times ``TorchBackend("cuda").matmul(a, b)`` on device-resident
operands, the way a worker computes its task with a resident operand. Operands are the
shapes an MDS and a MatDot code (complex tasks) give a worker. It times ``torch.matmul`` on
the same tensors side by side, reports both throughputs and their ratio, and checks the
backend's result against a float64 product (relative Frobenius error). It writes JSON and a
PNG next to the other results.

Needs a CUDA GPU. Without one it prints why and exits 0, having measured nothing: CI and
developer machines here have no GPU. Run it when a GPU machine is lent:
``python benchmarks/cuda_backend.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's codedml

import _machine  # noqa: E402  (benchmarks/_machine.py)


def _time(fn, sync, repeats: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--k", type=int, default=8, help="row blocks of A (the worker's share is 1/k)")
    ap.add_argument("--out", default="benchmarks/results/cuda_backend.json")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing measured")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch on this machine: nothing measured "
              "(run this script on a GPU machine)")
        return 0
    from codedml.backends import TorchBackend

    be = TorchBackend("cuda:0")
    dev = be.device
    rows = []
    rng = np.random.default_rng(0)
    for n in args.sizes:
        for name, dtype in (("float32", np.float32), ("float64", np.float64), ("complex64", np.complex64)):
            m = n // args.k
            a = rng.standard_normal((m, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            if np.iscomplexobj(a):
                a = a + 1j * rng.standard_normal(a.shape).astype(np.float32)
            ta, tb = be.to_device(a), be.to_device(b)
            t_backend = _time(lambda: be.matmul(ta, tb), be.synchronize, args.repeats)
            t_torch = _time(lambda: torch.matmul(ta, tb), lambda: torch.cuda.synchronize(dev), args.repeats)
            flops = (8 if np.iscomplexobj(a) else 2) * m * n * n
            got = be.to_numpy(be.matmul(ta, tb)).astype(np.complex128 if np.iscomplexobj(a) else np.float64)
            ref = a.astype(got.dtype) @ b.astype(got.dtype)
            err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            rows.append({"size": n, "worker_rows": m, "dtype": name, "backend_s": t_backend,
                         "torch_s": t_torch, "backend_tflops": flops / t_backend / 1e12,
                         "torch_tflops": flops / t_torch / 1e12, "ratio": t_backend / t_torch,
                         "rel_error": err})
            print(f"{n:6d} {name:9s} backend {flops / t_backend / 1e12:8.2f} TFLOP/s  torch.matmul "
                  f"{flops / t_torch / 1e12:8.2f} TFLOP/s  ratio {t_backend / t_torch:5.2f}  err {err:.1e}")
    info = _machine.machine_info()
    info["gpu"] = torch.cuda.get_device_name(dev)
    info["torch"] = torch.__version__
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": info, "args": vars(args), "rows": rows}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['size']}\n{r['dtype']}" for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["backend_tflops"] for r in rows], 0.4, label="codedml worker (cuda backend)")
    ax.bar(x + 0.2, [r["torch_tflops"] for r in rows], 0.4, label="torch.matmul")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"worker product throughput on {info['gpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(args.out).with_suffix(".png"), dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
