"""``python -m codedml run``: the coded matrix-product experiment (the main job).

Exit codes: 0 every product verified, 1 a product was wrong, 2 bad configuration, 3 a job
could not be decoded (more faults than the code tolerates).

Run under mpiexec (``launch/mpirun.sh 8``): rank 0 is the master, the other ranks are
workers. Without mpiexec, ``--local N`` runs the same experiment on N worker threads.

Configuration: command-line flag > ``CODEDML_<KEY>`` environment variable > the ``[run]``
table of a TOML file (``--config``) > default; unknown keys are an error. Failure models come
from the ``[faults]`` table and the failure flags (see :mod:`codedml.faults.config`); by
default two ranks straggle and results suffer exponent bit flips, so a first run shows
what the codes tolerate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ._config import add_dataclass_flags, load_toml, resolve, world
from .errors import CodedMLError, ConfigurationError

DEFAULT_FAULTS = {
    "seed": 1,
    "stragglers": {"model": "fixed", "ranks": [1, 2], "delay": 0.3},
    "soft_errors": [{"kind": "exponent", "prob": 0.05}],
}


#: ``CODEDML_*`` variables that are not ``run`` settings but are read elsewhere: the launcher's
#: ``CODEDML_RANKS`` and ``CODEDML_VENV`` (launch/mpirun.sh).
ENV_OTHERS = ("RANKS", "VENV")
#: Prefixes (after ``CODEDML_``) of the other commands' and benchmarks' variables.
ENV_FOREIGN_PREFIXES = ("TRAIN_", "DEMO_", "STATEFUL_", "SOAK_", "BENCH_")


@dataclass(frozen=True)
class RunConfig:
    """The ``[run]`` table."""

    code: str = "auto"
    rows: int = 1200
    inner: int = 800
    cols: int = 400
    jobs: int = 20
    errors: int = 1
    timeout: float = 60.0
    backend: str = "numpy"
    field: int = 0
    seed: int = 0
    out: str = "out/run.json"
    local: int = 0


def load_config(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``([run] table, [faults] table)`` from a TOML file; unknown tables are an error."""
    if not path:
        return {}, dict(DEFAULT_FAULTS)
    data = load_toml(path)
    unknown = sorted(set(data) - {"run", "faults"})
    if unknown:
        raise ConfigurationError(f"unknown table(s) {unknown} in {path}; allowed: ['run', 'faults']")
    run = data.get("run", {})
    known = {f.name for f in fields(RunConfig)}
    if not isinstance(run, dict):
        raise ConfigurationError(f"[run] of {path} must be a table of keys, got {run!r}")
    bad = sorted(set(run) - known)
    if bad:
        raise ConfigurationError(f"unknown key(s) {bad} in [run] of {path}; allowed: {sorted(known)}")
    faults = data.get("faults", dict(DEFAULT_FAULTS))
    if not isinstance(faults, dict):
        raise ConfigurationError(f"[faults] of {path} must be a table of keys, got {faults!r}")
    return run, faults


def make_code(spec: str, workers: int, field: int | None = None):
    """A code from a spec: ``auto``, ``uncoded``, ``replication:k=4``, ``mds:k=6``,
    ``polynomial:p=2,q=3``, ``matdot:m=3``, ``polydot:p=2,m=2,q=2``."""
    from .codes import MatDotCode, MDSCode, PolyDotCode, PolynomialCode, ReplicationCode

    name, _, args = spec.partition(":")
    kw: dict[str, int] = {}
    for kv in filter(None, args.split(",")):
        k, sep, v = kv.partition("=")
        if not sep or not v.strip().lstrip("-").isdigit():
            raise ConfigurationError(f"`code` arguments must be key=integer, got {kv!r} in {spec!r}")
        if k.strip() in kw:
            raise ConfigurationError(f"`code` arguments must name each key once, got {k.strip()!r} "
                                     f"twice in {spec!r}")
        kw[k.strip()] = int(v)
    n = workers
    allowed = {"auto": set(), "uncoded": set(), "replication": {"k"}, "mds": {"k"},
               "polynomial": {"p", "q"}, "matdot": {"m"}, "polydot": {"p", "m", "q"}}
    if name not in allowed:
        raise ConfigurationError(f"`code` must be one of {sorted(allowed)} (with arguments), got {spec!r}")
    extra = sorted(set(kw) - allowed[name])
    if extra:
        raise ConfigurationError(f"`code` {name} takes {sorted(allowed[name])}, got {extra}")
    f = field or None
    if name == "auto":  # threshold n - 4: tolerates 4 missing results, or 2 corrupt ones
        k = max(1, n - 4)
        p = max(d for d in range(1, int(math.isqrt(k)) + 1) if k % d == 0)
        return PolynomialCode(n, p, k // p, field=f)
    if name == "uncoded":
        return ReplicationCode(n, n, field=f)
    if name == "replication":
        return ReplicationCode(n, kw.get("k", max(1, n // 2)), field=f)
    if name == "mds":
        return MDSCode(n, kw.get("k", max(1, n - 2)), field=f)
    if name == "polynomial":
        return PolynomialCode(n, kw.get("p", 2), kw.get("q", max(1, (n - 2) // 2)), field=f)
    if name == "matdot":
        return MatDotCode(n, kw.get("m", max(1, (n - 1) // 2)), field=f)
    return PolyDotCode(n, kw.get("p", 2), kw.get("m", 2), kw.get("q", 1), field=f)


def _progress(i: int, total: int, t0: float, last: Any, stream=sys.stdout) -> None:
    width = 28
    done = int(width * i / total)
    elapsed = time.perf_counter() - t0
    eta = elapsed / i * (total - i) if i else float("nan")
    extra = ""
    if last is not None:
        extra = (f" | job {last.job}: {last.wall:.3f} s, late {last.count('late') + last.count('missing')}, "
                 f"corrupt {last.count('corrupt')}, crashed {last.count('crashed')}")
    line = f"[{'#' * done}{'.' * (width - done)}] {i}/{total} {elapsed:6.1f} s (eta {eta:5.1f} s){extra}"
    if stream.isatty():
        stream.write("\r" + line)
        if i == total:
            stream.write("\n")
    else:
        stream.write(line + "\n")
    stream.flush()


def straggler_report(reports: list[Any], workers: int, rank_of) -> list[dict[str, Any]]:
    """Per worker: latency min/median/max over jobs and counts of each status."""
    rows = []
    for w in range(workers):
        lat = [r.workers[w].latency for r in reports if r.workers[w].latency is not None]
        counts = {s: sum(1 for r in reports if r.workers[w].status == s)
                  for s in ("used", "spare", "late", "missing", "corrupt", "crashed", "error")}
        rows.append({"worker": w, "rank": rank_of(w),
                     "latency_min": min(lat) if lat else None,
                     "latency_median": float(np.median(lat)) if lat else None,
                     "latency_max": max(lat) if lat else None, **counts})
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def check_run_config(cfg: RunConfig) -> None:
    """The checks that need neither the worker count nor the file system: every value's type
    and range, named with its flag."""
    from ._config import MAX_LOCAL, MAX_SEED, check_int, check_seconds
    from .backends import registered_backends

    for name in ("rows", "inner", "cols", "jobs"):
        check_int(f"--{name}", getattr(cfg, name), 1)
    check_int("--errors", cfg.errors, 0)
    check_seconds("--timeout", cfg.timeout)
    check_int("--seed", cfg.seed, 0, MAX_SEED)
    check_int("--local", cfg.local, 0, MAX_LOCAL, why=" (0: run under mpiexec)")
    check_int("--field", cfg.field, 0, why=" (0: real arithmetic; else a prime)")
    if cfg.backend not in registered_backends():
        raise ConfigurationError(f"`--backend` must be one of {registered_backends()}, got {cfg.backend!r}")
    # numpy is always usable; asking about the others imports torch (~2 s), so only for them
    if cfg.local and cfg.backend != "numpy" and cfg.backend not in available_backends_here():
        raise ConfigurationError(f"`--backend` must be one of {available_backends_here()} (those "
                                 f"usable on this machine), got {cfg.backend!r}")


def available_backends_here() -> list[str]:
    from .backends import available_backends

    return available_backends()


def run_memory_bytes(cfg: RunConfig, code: Any) -> int:
    """A generous estimate of the root's peak memory: A, B, the reference product and the
    decoded one, the same again for temporaries, and the encoded operands and results, which
    grow with the redundancy ``workers / recovery threshold``."""
    a, b, c = cfg.rows * cfg.inner, cfg.inner * cfg.cols, cfg.rows * cfg.cols
    redundancy = code.workers / max(1, code.recovery_threshold)
    return int(8 * ((2 + redundancy) * (a + b + c) + 2 * c))


def resolve_errors(cfg: RunConfig, code: Any, explicit: bool) -> int:
    """The errors to correct per job: ``cfg.errors`` when set explicitly (refused above the
    code's power, naming the maximum), else the default 1 capped to what the code can do."""
    from ._config import check_int

    n, k = code.workers, code.recovery_threshold
    emax = max(0, (n - k) // 2)
    if not explicit:
        return min(cfg.errors, emax)
    return check_int("--errors", cfg.errors, 0, emax,
                     why=f" for {code!r} (workers={n}, recovery threshold {k}: at most "
                         f"(workers - threshold) // 2)")


def cmd_run(argv: list[str]) -> int:
    """Coded matrix products under mpiexec (or --local N) with injected failures."""
    from ._config import check_memory, on_root_then_everywhere
    from ._io import check_writable
    from .faults import add_fault_flags, check_fault_ranks, faults_from_config, faults_from_flags

    ap = argparse.ArgumentParser(prog="python -m codedml run", description=cmd_run.__doc__)
    ap.add_argument("--config", help="TOML file with [run] and [faults] tables")
    add_dataclass_flags(ap, RunConfig)
    add_fault_flags(ap)
    ns = ap.parse_args(argv)
    run_table, fault_table = load_config(ns.config)
    # flag > CODEDML_<KEY> > [run] > default. An unknown CODEDML_* variable (a typo such as
    # CODEDML_JOSB) is an error; those other consumers read are tolerated (docs/cli.md).
    cfg = resolve(RunConfig, ns, "CODEDML_", run_table, env_known=ENV_OTHERS,
                  env_foreign=ENV_FOREIGN_PREFIXES)
    explicit_errors = ns.errors is not None or "CODEDML_ERRORS" in os.environ or "errors" in run_table
    # Every value is checked before any work starts (issue 10, point 7).
    check_run_config(cfg)
    table = faults_from_flags(ns, fault_table)
    comm, n = world(cfg.local, "run")
    if table.get("stragglers") is DEFAULT_FAULTS["stragglers"]:  # the default names ranks 1, 2
        table["stragglers"] = {**DEFAULT_FAULTS["stragglers"],
                               "ranks": [r for r in DEFAULT_FAULTS["stragglers"]["ranks"] if r <= n]}
    model, fseed = faults_from_config(table)
    check_fault_ranks(model, n)
    code = make_code(cfg.code, n, cfg.field or None)
    errors = resolve_errors(cfg, code, explicit_errors)

    def root_checks() -> None:
        check_writable("--out", cfg.out)
        check_memory(f"`--rows` x `--inner` x `--cols` = {cfg.rows} x {cfg.inner} x {cfg.cols} "
                     f"with {code!r}", run_memory_bytes(cfg, code))

    on_root_then_everywhere(comm, root_checks)

    if cfg.local:
        from .runtime import LocalCluster

        cluster_cm = LocalCluster(cfg.local, backend=cfg.backend, faults=model, seed=fseed,
                                  timeout=cfg.timeout)
    else:
        from .runtime import MPICluster

        cluster_cm = MPICluster(comm, backend=cfg.backend, faults=model, seed=fseed,
                                timeout=cfg.timeout)
    with cluster_cm as cluster:
        if cluster is None:
            return 0
        return _run_root(cluster, cfg, model, fseed, code, errors)
    return 0  # pragma: no cover


def _run_root(cluster: Any, cfg: RunConfig, model: Any, fseed: int, code: Any, errors: int) -> int:
    n = cluster.workers
    rng = np.random.default_rng(cfg.seed)
    if cfg.field:
        A = rng.integers(0, cfg.field, (cfg.rows, cfg.inner))
        B = rng.integers(0, cfg.field, (cfg.inner, cfg.cols))
        from .codes import matmul_mod

        ref = matmul_mod(A, B, cfg.field)
    else:
        A = rng.standard_normal((cfg.rows, cfg.inner))
        B = rng.standard_normal((cfg.inner, cfg.cols))
        ref = A @ B
    print(f"codedml run: {n} workers ({'threads' if cfg.local else 'MPI ranks'}), {code!r}")
    print(f"  recovery threshold {code.recovery_threshold}, correcting up to {errors} corrupt "
          f"result(s) per job; A {A.shape} @ B {B.shape}, {cfg.jobs} jobs, backend {cfg.backend}")
    print(f"  failure model (seed {fseed}): {model!r}")
    tol = 1e-9
    jobs, errs, failures = [], [], []
    undecodable = False
    t0 = time.perf_counter()
    last = None
    for j in range(cfg.jobs):
        try:
            job = cluster.submit(A, B, code=code, errors=errors, timeout=cfg.timeout)
            C = job.result()
            if cfg.field:
                err = 0.0 if np.array_equal(C, ref) else 1.0
            else:
                err = float(np.linalg.norm(C - ref) / np.linalg.norm(ref))
            errs.append(err)
        except CodedMLError as exc:
            failures.append({"job": j, "error": f"{type(exc).__name__}: {exc}"})
            errs.append(float("inf"))
            undecodable = True
        last = job.report
        jobs.append(job)
        _progress(j + 1, cfg.jobs, t0, last)
    cluster.drain(0.5)  # record late results that are still coming in
    reports = [job.report for job in jobs]
    total = time.perf_counter() - t0
    rows = straggler_report(reports, n, cluster.rank_of)
    print(f"\n  {'rank':>4} {'min':>7} {'median':>7} {'max':>7} {'used':>5} {'late':>5} "
          f"{'crash':>5} {'corrupt':>7}")
    for r in rows:
        print(f"  {r['rank']:>4} {_fmt(r['latency_min']):>7} {_fmt(r['latency_median']):>7} "
              f"{_fmt(r['latency_max']):>7} {r['used']:>5} {r['late'] + r['missing']:>5} "
              f"{r['crashed']:>5} {r['corrupt']:>7}")
    walls = [r.wall for r in reports if math.isfinite(r.wall)]
    decs = [r.decode for r in reports if math.isfinite(r.decode)]
    corrupt = sum(r.count("corrupt") for r in reports)
    late = sum(r.count("late") + r.count("missing") for r in reports)
    worst = max(errs) if errs else float("inf")
    ok = not failures and worst <= tol
    print(f"\n  tolerated: {late} late/missing results not waited for, {corrupt} corrupt results "
          f"located and excluded, {sum(r.count('crashed') for r in reports)} crashed-worker results")
    if walls:
        print(f"  job wall time median {np.median(walls):.3f} s (max {max(walls):.3f} s); decode "
              f"median {np.median(decs) if decs else float('nan'):.4f} s; total {total:.1f} s")
    verdict = (f"every product correct (worst relative error {worst:.1e}, tolerance {tol:g})"
               if ok else f"{len(failures)} job(s) failed, worst relative error {worst:.1e}")
    print(f"  verdict: {'CORRECT' if ok else 'WRONG'} - {verdict}")
    for f in failures[:5]:
        print(f"    job {f['job']}: {f['error']}")
    report = {"config": asdict(cfg), "code": repr(code), "workers": n, "errors": errors,
              "faults": repr(model), "fault_seed": fseed, "relative_errors": errs,
              "failures": failures, "correct": ok, "total_s": total,
              "per_worker": rows, "jobs": [r.as_dict() for r in reports],
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()}}
    if cfg.out:
        from ._io import atomic_write_json

        atomic_write_json(cfg.out, report, indent=1, default=str)
        print(f"  report: {cfg.out}")
    return 0 if ok else (3 if undecodable else 1)
