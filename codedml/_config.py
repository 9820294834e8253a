"""Configuration precedence shared by the subcommands: flag > environment > TOML table > default.

:func:`resolve` fills a frozen dataclass from an ``argparse`` namespace (``None`` = flag not
given), environment variables ``PREFIX<FIELD>`` and a TOML table, coercing each value to the
field's type and naming where a bad value came from. Unknown TOML keys are an error; with
``strict_env`` so are unknown ``PREFIX*`` variables.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from .errors import ConfigurationError

__all__ = ["resolve", "add_dataclass_flags", "check_table", "field_kind", "load_toml",
           "check_int", "check_seconds", "check_finite", "mem_available", "check_memory",
           "on_root_then_everywhere", "MAX_SEED", "MAX_LOCAL"]

#: Seeds are between 0 and this (numpy's generators refuse negative seeds).
MAX_SEED = 2**63 - 1
#: The most worker threads ``--local`` starts (each is a thread with its own encoded blocks;
#: beyond this a real-valued code is useless anyway, see docs/codes.md).
MAX_LOCAL = 256


def load_toml(path: str) -> dict[str, Any]:
    """The TOML file at ``path`` (``--config``); a missing or malformed file names itself."""
    import tomllib
    from pathlib import Path

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"`--config` file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigurationError(f"`--config` must be a TOML file, got a directory: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"`--config` {path} is not valid TOML: not UTF-8 text ({exc.reason} "
                                 f"at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigurationError(f"`--config` {path} cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"`--config` {path} is not valid TOML: {exc}") from exc


def check_int(name: str, value: Any, low: int, high: int | None = None, *, why: str = "") -> int:
    """``value`` as an int in ``[low, high]``; else a ConfigurationError naming ``name``, the
    range and the value."""
    rng = f"between {low} and {high}" if high is not None else f"at least {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"`{name}` must be an integer {rng}{why}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ConfigurationError(f"`{name}` must be {rng}{why}, got {value}")
    return value


def check_finite(name: str, value: Any, low: float = 0.0, *, strict: bool = False,
                 unit: str = "") -> float:
    """A finite number ``>= low`` (``> low`` when ``strict``): NaN, inf and out-of-range
    values are refused by name."""
    import math

    rel = "greater than" if strict else "at least"
    what = f"a finite number{unit} {rel} {low:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"`{name}` must be {what}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (strict and v == low):
        raise ConfigurationError(f"`{name}` must be {what}, got {value}")
    return v


def spec_number(text: str) -> float:
    """The number after ``KIND:`` in a ``KIND:VALUE`` option (``dirichlet:0.3``, ``norm:2``,
    ``loss:0.2``); NaN when it is no number, so one finite-and-range check refuses both by
    name."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def check_seconds(name: str, value: Any) -> float:
    """A timeout: finite and greater than 0 (NaN, inf, 0 and negative refused by name)."""
    return check_finite(name, value, 0.0, strict=True, unit=" of seconds")


def world(local: int, command: str) -> tuple[Any, int]:
    """``(comm, workers)`` for a CLI command: ``local`` worker threads when it is set (no
    communicator), else ``MPI.COMM_WORLD`` with every rank but the root a worker; fewer than
    2 ranks is a ConfigurationError saying how to start ``command``."""
    if local:
        return None, local
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        sub = "" if command == "run" else f" {command}"
        raise ConfigurationError(
            f"`{command}` needs at least 2 MPI ranks: start it with launch/mpirun.sh N{sub} "
            f"(mpiexec -n N python -m codedml {command}) or pass --local N for worker threads")
    return comm, comm.Get_size() - 1


def mem_available() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` in /proc/meminfo), or
    None where that file does not exist (then no memory check is made)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def check_memory(what: str, need: int) -> None:
    """Refuse a run whose estimate ``need`` (bytes) exceeds the available memory, naming
    ``what`` (the arguments and values that set the size) and both figures."""
    avail = mem_available()
    if avail is not None and need > avail:
        raise ConfigurationError(
            f"{what} needs about {_bytes(need)} of memory, more than the {_bytes(avail)} "
            f"available (MemAvailable in /proc/meminfo); choose smaller sizes")


def on_root_then_everywhere(comm: Any, check: Any) -> None:
    """Run ``check()`` (a function that raises ConfigurationError) on rank 0 only and raise the
    same error on every rank, so all ranks of an MPI job agree on a configuration verdict
    (files and /proc/meminfo are read once, by the root). The message travels as UTF-8 bytes
    (no pickle). With ``comm`` None, just ``check()``."""
    if comm is None:
        check()
        return
    import numpy as np

    msg = b""
    if comm.Get_rank() == 0:
        try:
            check()
        except ConfigurationError as exc:
            msg = str(exc).encode("utf-8") or b"configuration error"
    n = np.array([len(msg)], dtype=np.int64)
    comm.Bcast(n, root=0)
    if n[0]:
        buf = bytearray(msg) if comm.Get_rank() == 0 else bytearray(int(n[0]))
        comm.Bcast(buf, root=0)
        raise ConfigurationError(bytes(buf).decode("utf-8", "replace"))


def field_kind(f: Any) -> type:
    name = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def _coerce(name: str, kind: type, raw: Any, where: str) -> Any:
    if where == "TOML" and ((kind is str and not isinstance(raw, str))
                            or (kind is bool and not isinstance(raw, bool))):
        # TOML values are typed: `out = 5` or `progress = "yes"` is a mistake, not a coercion
        what = "a string" if kind is str else "a boolean (true/false)"
        raise ConfigurationError(f"{where} `{name}` must be {what}, got {raw!r}")
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigurationError(f"{where} `{name}` must be a boolean (true/false), got {raw!r}")
    if kind in (int, float) and isinstance(raw, bool):
        raise ConfigurationError(f"{where} `{name}` must be {kind.__name__}, got {raw!r}")
    if where == "TOML" and kind in (int, float) and not isinstance(raw, (int, float)):
        # TOML values are typed: a string where a number belongs is a mistake, not a number
        raise ConfigurationError(f"{where} `{name}` must be {kind.__name__}, got {raw!r}")
    if kind is int and isinstance(raw, float):
        raise ConfigurationError(f"{where} `{name}` must be int, got {raw!r}")
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where} `{name}` must be {kind.__name__}, got {raw!r}") from exc


def add_dataclass_flags(ap: argparse.ArgumentParser, cls: type, help: Mapping[str, str] | None = None) -> None:
    """``--field-name`` for every field of ``cls`` (default None: not given)."""
    for f in fields(cls):
        kind = field_kind(f)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                            help=(help or {}).get(f.name))
        else:
            ap.add_argument(flag, dest=f.name, type=kind, default=None, help=(help or {}).get(f.name))


def check_table(where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """``table`` must be a TOML table (a mapping) whose keys are all in ``allowed``."""
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where} must be a table of keys, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigurationError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def resolve(cls: type, ns: argparse.Namespace | None, env_prefix: str,
            table: Mapping[str, Any] | None = None, *, strict_env: bool = True,
            env_known: Iterable[str] = (), env_foreign: tuple[str, ...] = ()) -> Any:
    """``cls(**values)`` with each value from the flag, else ``{env_prefix}{FIELD}``, else the
    TOML ``table``, else the dataclass default. ``env_known`` are names (after the prefix) that
    other consumers read and ``strict_env`` must tolerate, ``env_foreign`` prefixes (after
    ``env_prefix``) of variables that belong to other consumers (``TRAIN_`` for ``run``)."""
    names = {f.name for f in fields(cls)}
    if strict_env:
        allowed = {n.upper() for n in names} | {k.upper() for k in env_known}
        for key in os.environ:
            rest = key[len(env_prefix):]
            if key.startswith(env_prefix) and rest not in allowed and not rest.startswith(env_foreign):
                raise ConfigurationError(
                    f"unknown environment setting {key}; known: "
                    f"{', '.join(sorted(env_prefix + k for k in allowed))}")
    table = dict(table or {})
    values: dict[str, Any] = {}
    for f in fields(cls):
        kind = field_kind(f)
        env_key = env_prefix + f.name.upper()
        flag = getattr(ns, f.name, None) if ns is not None else None
        if flag is not None:
            values[f.name] = flag
        elif env_key in os.environ:
            values[f.name] = _coerce(f.name, kind, os.environ[env_key], env_key)
        elif f.name in table:
            values[f.name] = _coerce(f.name, kind, table[f.name], "TOML")
    return cls(**values)
