"""Condition numbers of a code's decoding systems: the numbers that bound decoded accuracy.

Over the reals a decode solves ``M_S X = R_S`` for the set ``S`` of results that arrived; its
relative error is at most about ``cond(M_S)`` times the relative rounding error of the results.
What matters is the *worst* ``S`` that can arrive, not a random one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError
from ._base import LinearCode
from ._validate import check_int

__all__ = ["condition_number", "worst_case_condition", "WorstCase"]


def _rank(code: LinearCode) -> int:
    return int(max(np.linalg.matrix_rank(M) for M in code._families(np.arange(code.workers))))


def _conds(code: LinearCode, subsets: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros(len(subsets))
    for M in code._families(np.arange(code.workers)):
        for s in range(0, len(subsets), 20000):
            chunk = subsets[s:s + 20000]
            sv = np.linalg.svd(M[chunk], compute_uv=False)
            with np.errstate(divide="ignore"):
                c = sv[:, 0] / sv[:, d - 1]
            out[s:s + 20000] = np.maximum(out[s:s + 20000], np.where(np.isfinite(c), c, np.inf))
    return out


def condition_number(code: LinearCode, workers: Iterable[int]) -> float:
    """Condition number of decoding from the results of ``workers`` (1.0 over GF(p): exact).

    Examples
    --------
    >>> from codedml.codes import MDSCode, condition_number
    >>> round(condition_number(MDSCode(4, 2, systematic=False), [0, 2]), 6)  # opposite points
    1.0
    """
    rows = np.array(sorted({check_int("workers", w, 0, code.workers - 1) for w in workers}))
    if code.field is not None:
        return 1.0
    return float(_conds(code, rows[None, :], _rank(code))[0])


@dataclass(frozen=True)
class WorstCase:
    """Largest condition number over the subsets examined."""

    value: float
    exact: bool
    """True when every subset of size ``recovery_threshold`` was enumerated."""
    subsets: int
    worst_subset: tuple[int, ...]


def worst_case_condition(code: LinearCode, *, max_subsets: int = 200_000, seed: int = 0) -> WorstCase:
    """Worst condition number over result sets of size ``recovery_threshold``.

    Enumerates every subset when there are at most ``max_subsets``; otherwise examines every
    set that erases a cyclic run of consecutive workers (the worst pattern for points on the
    unit circle) plus random subsets up to ``max_subsets``, and reports ``exact=False``: the
    value is then a sampled lower bound.
    """
    n, k = code.workers, code.recovery_threshold
    max_subsets = check_int("max_subsets", max_subsets, 1)
    if code.field is not None:
        return WorstCase(1.0, True, 0, tuple(range(k)))
    total = math.comb(n, k)
    if total <= max_subsets:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=int)
        exact = True
    else:
        s = n - k
        runs = [sorted(set(range(n)) - {(start + t) % n for t in range(s)}) for start in range(n)]
        rng = np.random.default_rng(seed)
        rand = [np.sort(rng.choice(n, k, replace=False)) for _ in range(max_subsets - len(runs))]
        subsets = np.array(runs + [list(r) for r in rand], dtype=int)
        exact = False
    if not hasattr(code, "_families"):
        raise ConfigurationError(f"{type(code).__name__} has no decoding matrices")
    conds = _conds(code, subsets, _rank(code))
    j = int(np.argmax(conds))
    return WorstCase(float(conds[j]), exact, len(subsets), tuple(int(x) for x in subsets[j]))
