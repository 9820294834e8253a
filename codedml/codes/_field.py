"""GF(p) worker operands without galois, and the bridge to galois when a user asks for it.

Worker operands over GF(p) are :class:`Residues`: plain ``int64`` arrays of residues in
``[0, p)`` whose ``@`` is the exact product mod ``p`` (:func:`~codedml.codes._gfp.matmul_mod`,
BLAS on exact chunks). Encoding, computing and decoding never import galois: ``import galois``
costs about 0.5 s and building ``galois.GF(p)`` about 1 s (it compiles its ufuncs), which a
first product in a fresh process paid in full. galois is imported only by
:func:`galois_field` / :func:`field_array`, i.e. when a user asks for galois ``FieldArray`` s
(:meth:`~codedml.codes.Task.as_galois`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from . import _gfp


@lru_cache(maxsize=16)
def galois_field(p: int) -> Any:
    """The galois ``FieldArray`` class of GF(p) (created once per prime: ~1 s; imports galois)."""
    import galois

    return galois.GF(p)


def field_array(x: np.ndarray, p: int) -> Any:
    """View int64 residues in [0, p) as a galois FieldArray without re-validating them."""
    GF = galois_field(p)
    arr = np.ascontiguousarray(np.asarray(x).view(np.ndarray), dtype=np.int64)
    return arr.view(GF)


class Residues(np.ndarray):
    """``int64`` residues in ``[0, p)`` of GF(p) (``p`` in :attr:`modulus`): a plain ndarray
    whose matrix product with another ``Residues`` of the same modulus is exact mod ``p``.

    Only ``@`` (``np.matmul``) is field arithmetic; every other operation is ordinary ``int64``
    arithmetic and returns a plain ndarray (``a + b`` is not reduced mod ``p``).
    ``np.asarray(x)`` gives the plain residues. Made by :func:`residues_of`.
    """

    modulus: int | None

    def __array_finalize__(self, obj: Any) -> None:
        self.modulus = getattr(obj, "modulus", None)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        p = self.modulus
        if (ufunc is np.matmul and method == "__call__" and not kwargs and len(inputs) == 2
                and p is not None
                and all(isinstance(x, Residues) and x.modulus == p for x in inputs)):
            a, b = (x.view(np.ndarray) for x in inputs)
            return residues_of(_gfp.matmul_mod(a, b, p), p)
        plain = tuple(x.view(np.ndarray) if isinstance(x, Residues) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Residues) else o
                                  for o in kwargs["out"])
        return getattr(ufunc, method)(*plain, **kwargs)

    def __reduce__(self) -> Any:  # pickles with its modulus
        return residues_of, (np.asarray(self).copy(), self.modulus)

    def __repr__(self) -> str:
        return f"Residues({np.asarray(self)!r}, modulus={self.modulus})"


def residues_of(x: np.ndarray, p: int | None) -> Residues:
    """View int64 residues in ``[0, p)`` as :class:`Residues` of GF(p) (no copy, no check)."""
    r = np.asarray(x, dtype=np.int64).view(Residues)
    r.modulus = None if p is None else int(p)
    return r
