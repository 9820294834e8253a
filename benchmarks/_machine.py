"""What machine a benchmark ran on: recorded in every benchmark's JSON."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np


def blas_limit(threads: int) -> contextlib.AbstractContextManager:
    """A context limiting BLAS to ``threads`` threads at run time (threadpoolctl); 0 leaves
    them as they are, and so does a missing threadpoolctl (said on stderr)."""
    if not threads:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        print("threadpoolctl missing: BLAS threads left as they are; set "
              "OPENBLAS_NUM_THREADS=1 in the environment instead", file=sys.stderr)
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def write_json(path: str | Path, doc: dict) -> Path:
    """``doc`` as JSON at ``path`` (its folder made), said on stdout; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}")
    return out


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def commit() -> dict:
    """The commit measured: ``git rev-parse HEAD`` of this checkout, and whether the work tree
    had uncommitted changes to tracked files (then the figures are of HEAD plus those)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        # Benchmark outputs and rendered documents are not the code being measured: a run that
        # follows another one's JSON/PNG (or a re-rendered README) still measures a clean tree.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)*.md"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"commit": None, "dirty": None, "why": str(exc)}
    return {"commit": head, "dirty": dirty}


def _fatal(msg: str) -> None:
    """Stop the run with ``msg``. Under ``mpiexec`` with other ranks, abort the whole job
    (exit status 2): a root that merely exited would leave the workers waiting for it and
    its own MPI finalize waiting for them, a job that never ends."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized() \
            and mpi.COMM_WORLD.Get_size() > 1:
        print(msg, file=sys.stderr, flush=True)
        mpi.COMM_WORLD.Abort(2)
    raise SystemExit(msg)


def measured_source() -> dict:
    """Where ``codedml`` is imported from, and which copy loop its encode runs. A benchmark
    that imported another checkout's codedml (an editable install points at one checkout;
    a run from a second worktree must put its own first on ``sys.path``) would record this
    checkout's commit for another's code: that is refused here, by name."""
    import codedml
    from codedml.codes import _encode

    root = Path(__file__).resolve().parent.parent
    pkg = Path(codedml.__file__).resolve().parent
    if pkg != root / "codedml":
        msg = (f"benchmarks/_machine.py: codedml was imported from {pkg}, not from "
               f"{root / 'codedml'}, the checkout whose commit this run records; put "
               f"{root} first on sys.path (PYTHONPATH)")
        _fatal(msg)
    return {"codedml_from": str(pkg), "encode_kernels": _encode.kernels()}


def machine_info() -> dict:
    """Platform, CPU, Python/numpy versions, date, load average (other processes distort
    timings on a shared machine), thread settings and the BLAS libraries in use; the commit
    measured and where codedml was imported from (:func:`measured_source`)."""
    info = {
        **commit(),
        **measured_source(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env_threads": {k: os.environ.get(k)
                        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                   "architecture", "filepath")}
            for d in threadpool_info() if d.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed; BLAS threads unknown"
    try:
        cfg = np.show_config(mode="dicts")  # numpy >= 1.25
        info["numpy_blas"] = cfg.get("Build Dependencies", {}).get("blas")
    except Exception as exc:  # noqa: BLE001 - informational only
        info["numpy_blas"] = f"unavailable: {exc}"
    return info
