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

__all__ = ["resolve", "add_dataclass_flags", "check_table", "field_kind", "load_toml"]


def load_toml(path: str) -> dict[str, Any]:
    """The TOML file at ``path`` (``--config``); a missing or malformed file names itself."""
    import tomllib
    from pathlib import Path

    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(f"`--config` file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"`--config` {path} is not valid TOML: {exc}") from exc


def field_kind(f: Any) -> type:
    name = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def _coerce(name: str, kind: type, raw: Any, where: str) -> Any:
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
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigurationError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def resolve(cls: type, ns: argparse.Namespace | None, env_prefix: str,
            table: Mapping[str, Any] | None = None, *, strict_env: bool = True,
            env_known: Iterable[str] = ()) -> Any:
    """``cls(**values)`` with each value from the flag, else ``{env_prefix}{FIELD}``, else the
    TOML ``table``, else the dataclass default. ``env_known`` are names (after the prefix) that
    other consumers read and ``strict_env`` must tolerate."""
    names = {f.name for f in fields(cls)}
    if strict_env:
        allowed = {n.upper() for n in names} | {k.upper() for k in env_known}
        for key in os.environ:
            if key.startswith(env_prefix) and key[len(env_prefix):] not in allowed:
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
