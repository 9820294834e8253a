"""How the training samples are split over the workers: IID or Dirichlet label skew.

``iid``
    the seeded permutation of the ``N`` samples cut into ``n`` nearly equal parts (the layout
    every policy used before non-IID shards existed; unchanged, so old results reproduce).
``dirichlet:ALPHA``
    label skew (Hsu, Qi, Brown 2019, "Measuring the effects of non-identical data distribution
    for federated visual classification"): for every class ``c`` a vector
    ``p_c ~ Dirichlet(ALPHA 1_n)`` is drawn and the samples of class ``c`` (in a seeded random
    order) are cut among the ``n`` workers in the proportions ``p_c``. Small ``ALPHA`` (0.1)
    gives each worker few classes; large ``ALPHA`` (100) approaches IID. A worker left with no
    sample is given one from the largest part (repeated until every part is non-empty), so
    every worker holds data; this needs ``N >= n``.

Everything is drawn from ``numpy.random.default_rng([data_seed, 0xDA7A])`` (IID) or
``[data_seed, 0xD1C1]`` (Dirichlet), so every rank computes the same parts.

Examples
--------
>>> import numpy as np
>>> from codedml.train.partition import parse_partition, split
>>> y = np.repeat(np.arange(3), 20)
>>> parts = split(y, 4, "dirichlet:0.1", 0)
>>> sorted(np.concatenate(parts).tolist()) == list(range(60))
True
>>> parse_partition("dirichlet:0.5")
('dirichlet', 0.5)
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigurationError
from .._config import spec_number

__all__ = ["parse_partition", "split", "label_histogram"]


def parse_partition(spec: str) -> tuple[str, float]:
    """``"iid"`` -> ``("iid", 0.0)``; ``"dirichlet:ALPHA"`` -> ``("dirichlet", ALPHA)``.

    Raises :class:`~codedml.errors.ConfigurationError` naming ``partition``, the valid forms
    and the value.
    """
    if not isinstance(spec, str):
        raise ConfigurationError(f"`partition` must be 'iid' or 'dirichlet:ALPHA', got {spec!r}")
    if spec == "iid":
        return "iid", 0.0
    kind, sep, arg = spec.partition(":")
    if kind == "dirichlet" and sep:
        alpha = spec_number(arg)
        if math.isfinite(alpha) and alpha > 0:
            return "dirichlet", alpha
        raise ConfigurationError(
            f"`partition` dirichlet:ALPHA needs a finite ALPHA greater than 0, got {arg!r}")
    raise ConfigurationError(f"`partition` must be 'iid' or 'dirichlet:ALPHA' (ALPHA > 0), got {spec!r}")


def split(y: np.ndarray, parts: int, spec: str, data_seed: int) -> list[np.ndarray]:
    """The ``parts`` index arrays of the samples with labels ``y`` under partition ``spec``."""
    kind, alpha = parse_partition(spec)
    n_samples = len(y)
    if kind == "iid":
        perm = np.random.default_rng([int(data_seed), 0xDA7A]).permutation(n_samples)
        return np.array_split(perm, parts)
    if n_samples < parts:
        raise ConfigurationError(f"`partition` {spec} needs at least one sample per worker: "
                                 f"{n_samples} samples for {parts} workers")
    rng = np.random.default_rng([int(data_seed), 0xD1C1])
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigurationError("`partition` dirichlet:ALPHA needs integer class labels "
                                 f"(1-D), got labels of shape {y.shape} and dtype {y.dtype}")
    out: list[list[int]] = [[] for _ in range(parts)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        p = rng.dirichlet(np.full(parts, alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
        for w, chunk in enumerate(np.split(idx, cuts)):
            out[w].extend(int(i) for i in chunk)
    while True:  # every worker holds at least one sample
        empty = [w for w in range(parts) if not out[w]]
        if not empty:
            break
        big = max(range(parts), key=lambda w: len(out[w]))
        out[empty[0]].append(out[big].pop())
    return [np.asarray(sorted(o), dtype=np.int64) for o in out]


def label_histogram(y: np.ndarray, parts: list[np.ndarray], classes: int | None = None) -> np.ndarray:
    """``H[w, c]``: samples of class ``c`` held by worker ``w`` (to report the skew)."""
    classes = int(np.max(y)) + 1 if classes is None else classes
    return np.stack([np.bincount(np.asarray(y)[p], minlength=classes) for p in parts])
