"""Failure models from a TOML table or command-line flags.

TOML (the ``[faults]`` table of a run config)::

    [faults]
    seed = 1
    stragglers = { model = "shifted_exponential", shift = 0.0, scale = 0.05 }
    soft_errors = [ { kind = "exponent", prob = 0.05 }, { kind = "nan", prob = 0.01 } ]
    fail_silent = { ranks = [3], start = 2 }
    die = { ranks = [5], at = 4 }

Straggler models: ``fixed`` (ranks, delay), ``shifted_exponential`` (shift, scale, ranks),
``pareto`` (scale, alpha, ranks), ``bursty`` (p_slow, p_recover, delay). Unknown keys are errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from .models import (MAX_FAULT_SEED, Bursty, Compose, Die, FailSilent, FaultModel, FixedStragglers, NoFaults,
                     Pareto, ShiftedExponential, SoftErrors)

__all__ = ["faults_from_config", "faults_from_flags", "add_fault_flags", "check_fault_ranks"]

#: The largest fault seed (the clusters' ``seed`` accepts the same range).
MAX_SEED = MAX_FAULT_SEED

_STRAGGLERS = {
    "fixed": (FixedStragglers, {"ranks", "delay", "start"}),
    "shifted_exponential": (ShiftedExponential, {"shift", "scale", "ranks"}),
    "pareto": (Pareto, {"scale", "alpha", "ranks"}),
    "bursty": (Bursty, {"p_slow", "p_recover", "delay", "seed"}),
}
_TOP = {"seed", "stragglers", "soft_errors", "fail_silent", "die"}


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigurationError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def _as_list(x: Any, where: str) -> list[Mapping[str, Any]]:
    """A table or a list of tables (an array of TOML tables); anything else is named."""
    if x is None:
        return []
    items = list(x) if isinstance(x, list) else [x]
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigurationError(
                f"[faults] {where} must be a table of keys (or a list of tables), got {item!r}")
    return items


def faults_from_config(table: Mapping[str, Any]) -> tuple[FaultModel, int]:
    """Build ``(model, seed)`` from a ``[faults]`` table (see the module docstring)."""
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"[faults] must be a table of keys, got {table!r}")
    _check_keys("[faults]", table, _TOP)
    models: list[FaultModel] = []
    for s in _as_list(table.get("stragglers"), "stragglers"):
        s = dict(s)
        name = s.pop("model", None)
        if name not in _STRAGGLERS:
            raise ConfigurationError(
                f"[faults] stragglers `model` must be one of {sorted(_STRAGGLERS)}, got {name!r}")
        cls, allowed = _STRAGGLERS[name]
        _check_keys(f"[faults] stragglers ({name})", s, allowed)
        if "ranks" in s and cls is not FixedStragglers and isinstance(s["ranks"], list):
            s["ranks"] = tuple(s["ranks"])
        models.append(_make(f"[faults] stragglers ({name}) / --stragglers {name}", cls, s))
    for e in _as_list(table.get("soft_errors"), "soft_errors"):
        _check_keys("[faults] soft_errors", e, {"kind", "prob", "value", "ranks"})
        e = dict(e)
        if isinstance(e.get("ranks"), list):
            e["ranks"] = tuple(e["ranks"])
        models.append(_make("[faults] soft_errors / --soft-errors", SoftErrors, e))
    for f in _as_list(table.get("fail_silent"), "fail_silent"):
        _check_keys("[faults] fail_silent", f, {"ranks", "start"})
        models.append(_make("[faults] fail_silent / --fail-silent", FailSilent, f))
    for d in _as_list(table.get("die"), "die"):
        _check_keys("[faults] die", d, {"ranks", "at"})
        models.append(_make("[faults] die / --die", Die, d))
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigurationError(
            f"`--fault-seed` ([faults] seed) must be an integer between 0 and {MAX_SEED}, got {seed!r}")
    if not models:
        return NoFaults(), seed
    return (models[0] if len(models) == 1 else Compose(tuple(models))), seed


def _make(where: str, cls: type, kwargs: Mapping[str, Any]) -> FaultModel:
    """``cls(**kwargs)``; a missing or mistyped key is a ConfigurationError naming ``where``."""
    import inspect

    if not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"{where} must be a table of keys, got {kwargs!r}")
    params = inspect.signature(cls).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    missing = [n for n in required if n not in kwargs]
    if missing:
        raise ConfigurationError(
            f"{where} needs {', '.join(f'`{m}`' for m in missing)} (keys: {sorted(params)}), "
            f"got {dict(kwargs)!r}")
    try:
        return cls(**kwargs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: bad value in {dict(kwargs)!r}: {exc}") from exc


#: The flag (or table) that sets the ranks of each model, for messages.
_RANK_SOURCE = {"Die": "--die", "FailSilent": "--fail-silent", "FixedStragglers": "--stragglers",
                "ShiftedExponential": "--stragglers", "Pareto": "--stragglers",
                "SoftErrors": "[faults] soft_errors", "StorageErrors": "StorageErrors"}


def check_fault_ranks(model: FaultModel, workers: int, *, arg: str | None = None,
                      ranks: Any = None) -> None:
    """Every rank a failure model names must be a worker: between 1 and ``workers`` (rank 0
    is the root), or one of ``ranks`` where given (an MPI job whose root is another rank).
    Raises :class:`ConfigurationError` naming the flag (``arg``: the argument, for a
    cluster's ``faults=``), the valid ranks and the rank. A model that names none (every
    rank) or a custom callable passes."""
    from .models import Compose, Schedule

    valid = set(range(1, workers + 1)) if ranks is None else {int(r) for r in ranks}
    parts = model.models if isinstance(model, Compose) else (model,)
    for m in parts:
        if isinstance(m, Compose):
            check_fault_ranks(m, workers, arg=arg, ranks=ranks)
            continue
        named = set(getattr(m, "ranks", None) or ())
        if isinstance(m, Schedule):
            named = {int(r) for row in m.table.values() for r in row}
        bad = sorted(r for r in named if r not in valid)
        if bad:
            src = (f"`{arg}` ({type(m).__name__})" if arg else
                   f"`{_RANK_SOURCE.get(type(m).__name__, type(m).__name__)}`")
            where = (f"between 1 and workers={workers} (rank 0 is the root)"
                     if valid == set(range(1, workers + 1)) else f"worker ranks {sorted(valid)}")
            raise ConfigurationError(f"{src} ranks must be {where}, got {bad[0]}")


def add_fault_flags(ap: argparse.ArgumentParser) -> None:
    """Add ``--stragglers``, ``--soft-errors``, ``--fail-silent``, ``--die``, ``--fault-seed``."""
    g = ap.add_argument_group("failure injection")
    g.add_argument("--stragglers", metavar="MODEL[:k=v,...]",
                   help="e.g. fixed:ranks=1+2,delay=0.5 | shifted_exponential:scale=0.05 | "
                        "pareto:scale=0.01,alpha=2 | bursty:p_slow=0.1,delay=0.3 | none")
    g.add_argument("--soft-errors", metavar="KIND:PROB", action="append",
                   help="e.g. exponent:0.05 (kinds: mantissa exponent sign gross nan inf scale); repeatable")
    g.add_argument("--fail-silent", metavar="RANK[+RANK]@JOB", help="ranks that stop answering from JOB on")
    g.add_argument("--die", metavar="RANK[+RANK]@JOB", help="ranks that SIGKILL themselves at JOB (Open MPI ULFM)")
    g.add_argument("--fault-seed", type=int, default=None, help="seed of every failure model")


def _parse_value(v: str) -> Any:
    """``1+2`` a list of ints, ``-3`` / ``4`` an int, ``0.5`` / ``nan`` a float, else the text
    (which the model then refuses by name)."""
    if "+" in v.strip("+-"):
        try:
            return [int(x) for x in v.split("+")]
        except ValueError:
            return v
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def _ranks_at(flag: str, text: str) -> tuple[list[int], int]:
    try:
        ranks, at_sign, job = text.partition("@")
        if at_sign and not job.strip():  # "1@": a job index was meant but is missing
            raise ValueError("no job after @")
        out, at = [int(r) for r in ranks.split("+")], int(job or 0)
    except ValueError as exc:
        raise ConfigurationError(f"`{flag}` must look like 1+3@2 (ranks @ job), got {text!r}") from exc
    bad = [r for r in out if r < 1]
    if bad:
        raise ConfigurationError(
            f"`{flag}` ranks must be at least 1 (rank 0 is the root), got {bad[0]} in {text!r}")
    if at < 0:
        raise ConfigurationError(f"`{flag}` job must be at least 0, got {at} in {text!r}")
    return out, at


def faults_from_flags(ns: argparse.Namespace, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge the failure flags over a ``[faults]`` table (flags win); returns the new table."""
    table: dict[str, Any] = dict(base or {})
    if ns.stragglers is not None:  # "" is refused by the model check, not read as "none"
        if ns.stragglers == "none":
            table.pop("stragglers", None)
        else:
            name, _, args = ns.stragglers.partition(":")
            entry: dict[str, Any] = {"model": name}
            for kv in filter(None, args.split(",")):
                k, sep, v = kv.partition("=")
                if not sep:
                    raise ConfigurationError(f"`--stragglers` arguments must be key=value, got {kv!r}")
                val = _parse_value(v)
                entry[k] = [val] if k == "ranks" and isinstance(val, int) else val
            table["stragglers"] = entry
    if ns.soft_errors:
        errs = []
        for item in ns.soft_errors:
            if item == "none":
                continue
            kind, _, prob = item.partition(":")
            try:
                errs.append({"kind": kind, "prob": float(prob or 1.0)})
            except ValueError as exc:  # a range error is SoftErrors' to name
                raise ConfigurationError(f"`--soft-errors` must look like exponent:0.05, got {item!r}") from exc
        table["soft_errors"] = errs
    if ns.fail_silent is not None:  # an empty value is refused, not read as "no fault"
        r, j = _ranks_at("--fail-silent", ns.fail_silent)
        table["fail_silent"] = {"ranks": r, "start": j}
    if ns.die is not None:
        r, j = _ranks_at("--die", ns.die)
        table["die"] = {"ranks": r, "at": j}
    if ns.fault_seed is not None:
        table["seed"] = ns.fault_seed
    return table
