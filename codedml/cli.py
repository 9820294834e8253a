"""``python -m codedml <subcommand>``: one function per subcommand.

Exit codes: 0 success (result verified; training finished), 1 the result failed verification
(training diverged), 2 bad usage or configuration, 3 the run could not decode (too many faults
for the code; training stopped by faults its policy does not tolerate).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import CodedMLError, ConfigurationError, CorruptResultError, NotEnoughResultsError

EXIT_OK, EXIT_WRONG, EXIT_USAGE, EXIT_UNDECODABLE = 0, 1, 2, 3

CODES = ("mds", "polynomial", "matdot", "polydot", "replication")


@dataclass(frozen=True)
class DemoConfig:
    """Configuration of ``codedml demo`` (flag > ``CODEDML_DEMO_*`` environment > default)."""

    code: str = "polynomial"
    workers: int = 12
    size: int = 600
    stragglers: int = 2
    delay: float = 0.5
    corrupt: int = 2
    field: int | None = None
    seed: int = 0
    out: str = "out/demo.json"


def _from_env(cls: type, prefix: str) -> dict[str, Any]:
    """Values from ``PREFIX_<FIELD>`` environment variables; unknown ones are an error. Each
    is converted as ``run`` and ``train`` convert theirs (``codedml._config``: the variable,
    the field, the type it must be and the value in the message); an optional integer
    (``field``) also takes ``none``, ``real`` or nothing for None."""
    from ._config import _coerce, field_kind

    known = {f.name.upper(): f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, raw in os.environ.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name not in known:
            raise ConfigurationError(
                f"unknown environment setting {key}; known: {', '.join(prefix + k for k in known)}")
        f = known[name]
        kind = (f.type if isinstance(f.type, str) else str(f.type)).replace(" ", "")
        if kind in ("int|None", "Optional[int]"):
            out[f.name] = (None if raw.strip().lower() in ("", "none", "real")
                           else _coerce(f.name, int, raw, key))
        else:
            out[f.name] = _coerce(f.name, field_kind(f), raw, key)
    return out


def _make_code(cfg: DemoConfig):
    from .codes import MatDotCode, MDSCode, PolyDotCode, PolynomialCode, ReplicationCode

    n, f = cfg.workers, cfg.field
    if cfg.code == "mds":
        return MDSCode(n, max(1, n - 2 * (cfg.stragglers + cfg.corrupt)) or 1, field=f)
    if cfg.code == "polynomial":
        return PolynomialCode(n, 2, max(1, (n - cfg.stragglers - 2 * cfg.corrupt) // 2), field=f)
    if cfg.code == "matdot":
        return MatDotCode(n, max(1, (n - cfg.stragglers - 2 * cfg.corrupt + 1) // 2), field=f)
    if cfg.code == "polydot":
        m = 2
        q = max(1, (n - cfg.stragglers - 2 * cfg.corrupt - m + 1) // (2 * m))
        return PolyDotCode(n, 2, m, q, field=f)
    return ReplicationCode(n, max(1, n // (2 * cfg.corrupt + 1 + cfg.stragglers)), field=f)


def _corrupt(result: np.ndarray, kind: str, rng: np.random.Generator, field: int | None) -> np.ndarray:
    out = np.array(result, copy=True)
    flat = out.reshape(-1)
    i = int(rng.integers(flat.size))
    if field is not None:
        flat[i] = (flat[i] + 1 + rng.integers(field - 1)) % field
    elif kind == "nan":
        flat[i] = np.nan
    else:  # flip the top exponent bit: a silent, huge change
        bits = struct.unpack("<Q", struct.pack("<d", float(flat[i])))[0] ^ (1 << 62)
        flat[i] = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return out


def check_demo_config(cfg: DemoConfig) -> Any:
    """Check every value of ``demo`` before any work; returns the code it runs."""
    from ._config import MAX_LOCAL, MAX_SEED, check_finite, check_int, check_memory
    from ._io import check_writable

    if cfg.code not in CODES:
        raise ConfigurationError(f"`--code` must be one of {CODES}, got {cfg.code!r}")
    check_int("--workers", cfg.workers, 1, MAX_LOCAL)
    check_int("--size", cfg.size, 1)
    check_int("--stragglers", cfg.stragglers, 0, cfg.workers)
    check_int("--corrupt", cfg.corrupt, 0, cfg.workers)
    check_finite("--delay", cfg.delay, 0.0, unit=" of seconds")
    check_int("--seed", cfg.seed, 0, MAX_SEED)
    if cfg.field is not None:
        check_int("--field", cfg.field, 2, why=" (a prime)")
    if cfg.stragglers + cfg.corrupt > cfg.workers:
        raise ConfigurationError(
            f"`--stragglers` + `--corrupt` must be at most workers={cfg.workers}, got "
            f"{cfg.stragglers} + {cfg.corrupt} = {cfg.stragglers + cfg.corrupt}")
    code = _make_code(cfg)
    need = code.recovery_threshold + 2 * cfg.corrupt
    if need > code.workers:
        raise ConfigurationError(
            f"`--corrupt` must be at most {max(0, (code.workers - code.recovery_threshold) // 2)} "
            f"for {code!r} (recovery threshold {code.recovery_threshold} + 2 x corrupt results "
            f"must not exceed workers={code.workers}), got {cfg.corrupt}")
    if cfg.out:
        check_writable("--out", cfg.out)
    a, b = cfg.size * cfg.size, cfg.size * max(1, cfg.size // 2)
    c = cfg.size * max(1, cfg.size // 2)
    r = code.workers / max(1, code.recovery_threshold)
    check_memory(f"`--size` {cfg.size} with {code!r}", int(8 * ((2 + r) * (a + b + c) + 2 * c)))
    return code


def cmd_demo(argv: list[str]) -> int:
    """Coded matrix product in-process with injected stragglers and soft errors."""
    defaults = DemoConfig(**_from_env(DemoConfig, "CODEDML_DEMO_"))
    ap = argparse.ArgumentParser(prog="python -m codedml demo", description=cmd_demo.__doc__)
    ap.add_argument("--code", choices=CODES, default=defaults.code)
    ap.add_argument("--workers", type=int, default=defaults.workers)
    ap.add_argument("--size", type=int, default=defaults.size, help="A is size x size, B size x size/2")
    ap.add_argument("--stragglers", type=int, default=defaults.stragglers)
    ap.add_argument("--delay", type=float, default=defaults.delay, help="straggler delay in seconds")
    ap.add_argument("--corrupt", type=int, default=defaults.corrupt, help="workers returning garbage")
    ap.add_argument("--field", type=int, default=defaults.field, help="a prime for exact GF(p) arithmetic")
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--out", default=defaults.out, help="JSON report path")
    cfg = DemoConfig(**vars(ap.parse_args(argv)))
    code = check_demo_config(cfg)
    rng = np.random.default_rng(cfg.seed)
    n = code.workers
    if cfg.field is None:
        A = rng.standard_normal((cfg.size, cfg.size))
        B = rng.standard_normal((cfg.size, max(1, cfg.size // 2)))
    else:
        A = rng.integers(0, cfg.field, (cfg.size, cfg.size))
        B = rng.integers(0, cfg.field, (cfg.size, max(1, cfg.size // 2)))
    order = rng.permutation(n)
    slow = set(order[:cfg.stragglers].tolist())
    bad = order[cfg.stragglers:cfg.stragglers + cfg.corrupt].tolist()
    kinds = {w: ("nan" if i % 2 else "bitflip") for i, w in enumerate(bad)}
    errors = cfg.corrupt
    wait_for = min(n, code.recovery_threshold + 2 * errors)
    print(f"codedml {__version__} demo: {code!r}")
    print(f"  {n} workers, recovery threshold {code.recovery_threshold}; injecting {len(slow)} "
          f"stragglers (+{cfg.delay:.2f} s) and {len(bad)} corrupt results; waiting for the first "
          f"{wait_for} results")
    t0 = time.perf_counter()
    enc = code.encode(A, B)
    t_enc = time.perf_counter() - t0

    def work(w: int) -> tuple[int, np.ndarray, float]:
        start = time.perf_counter()
        if w in slow:
            time.sleep(cfg.delay)
        out = enc[w].compute()
        if w in kinds:
            out = _corrupt(out, kinds[w], np.random.default_rng([cfg.seed, w]), cfg.field)
        return w, out, time.perf_counter() - start

    results: dict[int, np.ndarray] = {}
    latency: dict[int, float] = {}
    t1 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=n)
    pending = {pool.submit(work, w) for w in range(n)}
    while pending and len(results) < wait_for:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            w, out, lat = fut.result()
            results[w], latency[w] = out, lat
    t_collect = time.perf_counter() - t1
    t2 = time.perf_counter()
    try:
        C, info = code.decode(results, errors=errors, encoding=enc, return_info=True)
    except (NotEnoughResultsError, CorruptResultError) as exc:
        print(f"FAILED to decode: {exc}")
        pool.shutdown(wait=False, cancel_futures=True)
        return EXIT_UNDECODABLE
    t_dec = time.perf_counter() - t2
    t_total = time.perf_counter() - t0
    pool.shutdown(wait=True)
    if cfg.field is None:
        ref = A @ B
        err = float(np.linalg.norm(C - ref) / np.linalg.norm(ref))
        ok = err <= 1e-9
        verdict = f"relative error {err:.2e} (tolerance 1e-9)"
    else:
        from .codes import matmul_mod

        ok = bool((C == matmul_mod(A, B, cfg.field)).all())
        err = 0.0 if ok else 1.0
        verdict = "exact match in GF(%d)" % cfg.field if ok else "MISMATCH"
    print(f"\n  {'worker':>6} {'latency':>9}  status")
    for w in range(n):
        status = []
        if w in slow:
            status.append("straggler (late, not waited for)" if w not in results else "straggler")
        if w in info.faulty:
            status.append("corrupt: located and excluded")
        elif w in kinds and w in results:
            status.append("corrupt but NOT located")
        if w in info.used and not status:
            status.append("used")
        lat = f"{latency[w]:.3f} s" if w in latency else "-"
        print(f"  {w:>6} {lat:>9}  {', '.join(status) or 'not needed'}")
    missed = [w for w in kinds if w in results and w not in info.faulty]
    tolerated = {
        "stragglers_skipped": sorted(int(w) for w in slow if w not in results),
        "corrupt_located": list(info.faulty),
        "corrupt_missed": missed,
    }
    print(f"\n  tolerated: skipped {len(tolerated['stragglers_skipped'])} stragglers, located "
          f"{len(info.faulty)} corrupt results {list(info.faulty)}; decode condition number "
          f"{info.condition:.3g}")
    print(f"  time: encode {t_enc:.3f} s, collect {t_collect:.3f} s, decode {t_dec:.3f} s, "
          f"total {t_total:.3f} s (stragglers delayed {cfg.delay:.2f} s; not waited for)")
    ok = ok and not missed
    print(f"  verdict: {'CORRECT' if ok else 'WRONG'} - {verdict}")
    report = {"config": asdict(cfg), "code": repr(code), "recovery_threshold": code.recovery_threshold,
              "latency_s": {str(w): latency[w] for w in sorted(latency)}, "tolerated": tolerated,
              "condition": info.condition, "relative_error": err, "correct": ok,
              "time_s": {"encode": t_enc, "collect": t_collect, "decode": t_dec, "total": t_total}}
    if cfg.out:
        from ._io import atomic_write_json

        atomic_write_json(cfg.out, report, indent=2)
        print(f"  report: {cfg.out}")
    return EXIT_OK if ok else EXIT_WRONG


def cmd_run(argv: list[str]) -> int:
    """Coded matrix products under mpiexec (or --local N) with injected failures."""
    from .run import cmd_run as run

    return run(argv)


def cmd_train(argv: list[str]) -> int:
    """Data-parallel SGD policies under mpiexec (or --local N) with injected failures."""
    from .train.cli import cmd_train as train

    return train(argv)


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m codedml {%s} [options]" % ",".join(COMMANDS))
        for name, fn in COMMANDS.items():
            print(f"  {name:8s} {fn.__doc__}")
        return EXIT_OK if argv and argv[0] in ("-h", "--help") else EXIT_USAGE
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ConfigurationError as exc:
        if _is_root():  # every MPI rank reaches the same verdict; one says it
            print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CodedMLError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNDECODABLE


def _is_root() -> bool:
    """Whether this process is rank 0 of MPI_COMM_WORLD (True without MPI)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return True
    try:
        return mpi.Is_initialized() and not mpi.Is_finalized() and mpi.COMM_WORLD.Get_rank() == 0 \
            or not mpi.Is_initialized()
    except Exception:  # noqa: BLE001 - a message is never worth a crash
        return True
