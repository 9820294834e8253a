"""Bridges to galois for GF(p) operands (imported lazily: ``import codedml.codes`` stays light)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=16)
def galois_field(p: int) -> Any:
    """The galois ``FieldArray`` class of GF(p) (created once per prime: ~1 s)."""
    import galois

    return galois.GF(p)


def field_array(x: np.ndarray, p: int) -> Any:
    """View int64 residues in [0, p) as a galois FieldArray without re-validating them."""
    GF = galois_field(p)
    arr = np.ascontiguousarray(x, dtype=np.int64)
    return arr.view(GF)
