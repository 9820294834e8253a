"""Argument checks shared by the codes: every message names the argument, the range and the value."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import ConfigurationError


def check_int(name: str, value: Any, low: int, high: int | None = None, *, what: str = "") -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise :class:`ConfigurationError`."""
    if type(value) is int and value >= low and (high is None or value <= high):
        return value    # the common case (every job's `errors`), without the ABC checks
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigurationError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f"between {low} and {what or high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"`{name}` must be {rng}, got {value}")
    return value


_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)


def real_matrix(name: str, x: Any, *, allow_vector: bool = False, finite: bool = True) -> np.ndarray:
    """Validate a real input operand: 2-D (or 1-D if allowed), finite, float32/float64.

    Integer and boolean arrays are converted to float64 (exact below 2**53). NaN and Inf are
    rejected: coded decoding treats non-finite results as corrupt, so a non-finite input would
    make every worker look faulty. ``finite=False`` leaves that check to the caller (the
    polynomial-family encode checks its tasks' norms instead, which every input entry reaches,
    and calls :func:`check_finite` on the inputs only when a norm is not finite).
    """
    arr = np.asarray(x)
    dt = arr.dtype
    if (dt is _F64 or dt is _F32) and (arr.ndim == 2 or (allow_vector and arr.ndim == 1)):
        # the common case (a float64/float32 matrix) without the checks below, which it passes
        if finite:
            check_finite(name, arr)
        return arr
    dims = (1, 2) if allow_vector else (2,)
    if arr.ndim not in dims:
        want = "1-D or 2-D" if allow_vector else "2-D"
        raise ConfigurationError(f"`{name}` must be a {want} array, got shape {arr.shape}")
    if np.iscomplexobj(arr):
        raise ConfigurationError(f"`{name}` must be real for the real field, got dtype {arr.dtype}")
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise ConfigurationError(f"`{name}` must be a numeric array, got dtype {arr.dtype}")
    elif arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if finite:
        check_finite(name, arr)
    return arr


def owned(x: np.ndarray, given: Any) -> np.ndarray:
    """``x`` as memory of its own: a C-ordered copy where it may share memory with ``given``
    (the caller's argument it was made from: an ndarray, a view of one, or anything whose
    ``__array__`` or buffer numpy reads without copying, such as a CPU torch tensor), else
    ``x`` itself (a conversion already made it new memory). What a request sends is read
    until its send completes, which may be after ``submit`` or ``call`` has returned: a
    caller that writes to its array in the meantime must not change what the workers get."""
    if isinstance(given, (list, tuple)) or given is None or np.isscalar(given):
        return x   # numpy builds new memory from these
    try:
        seen = np.asarray(given)
    except Exception:   # pragma: no cover - it was converted once already
        return np.array(x, order="C", copy=True)
    if np.may_share_memory(x, seen):
        return np.array(x, order="C", copy=True)
    return x


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raise :class:`ConfigurationError` naming ``name`` if ``arr`` holds a NaN or an Inf."""
    if not np.isfinite(arr).all():
        raise ConfigurationError(
            f"`{name}` contains NaN or Inf; codedml rejects non-finite inputs because a "
            "non-finite result is how a corrupt worker is recognised")


def residues(name: str, x: Any, p: int, *, allow_vector: bool = False, ndims: tuple[int, ...] | None = None,
             check_range: bool = True) -> np.ndarray:
    """Validate an operand of GF(p): integer entries in ``[0, p)``; returned as int64.

    ``check_range=False`` leaves the range to the caller (the GF(p) encodes check it in the
    copy they make anyway, :class:`codedml.codes._encode.ModP`, and by :func:`in_field`
    where they do not): the shape and the integer dtype are checked here in any case."""
    arr = np.asarray(x)
    dims = ndims or ((1, 2) if allow_vector else (2,))
    if arr.ndim not in dims:
        raise ConfigurationError(f"`{name}` must have {' or '.join(f'{d}-D' for d in dims)} shape, got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ConfigurationError(
            f"`{name}` must hold integers for the field GF({p}), got dtype {arr.dtype}; "
            "quantise real data first")
    arr = arr.astype(np.int64, copy=False) if arr.dtype != np.uint64 else _u64(name, arr, p)
    if check_range:
        in_field(name, arr, p)
    return arr


def in_field(name: str, arr: np.ndarray, p: int, umax: int | None = None) -> None:
    """Raise :class:`ConfigurationError` naming ``name`` unless every entry of the int64
    array ``arr`` is in ``[0, p)``. ``umax``, the largest entry read as unsigned (a negative
    int64 reads as 2**63 or more), when a copy already found it; else one reduction finds it
    (as _gfp._as_residues: min and max were two passes, 14 of a 48 ms GF(65537) encode)."""
    if umax is None:
        umax = int(arr.view(np.uint64).max()) if arr.size else 0
    if umax >= p:
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise ConfigurationError(f"`{name}` entries must be between 0 and {p - 1} for GF({p}), got {bad}")


def _u64(name: str, arr: np.ndarray, p: int) -> np.ndarray:
    if arr.size and arr.max() >= p:
        raise ConfigurationError(f"`{name}` entries must be between 0 and {p - 1} for GF({p}), got {arr.max()}")
    return arr.astype(np.int64)


def check_field(field: Any, workers: int) -> int | None:
    """``None``/``"real"`` selects the reals; an int selects GF(p) and must be a usable prime."""
    from ._gfp import MAX_PRIME, is_prime

    if field is None or (isinstance(field, str) and field == "real"):
        return None
    p = check_int("field", field, 2, MAX_PRIME, what=f"2**31-1={MAX_PRIME} (or None for the reals)")
    if not is_prime(p):
        raise ConfigurationError(f"`field` must be a prime, got {p}, which is not prime")
    if p <= workers:
        raise ConfigurationError(
            f"`field` must be a prime larger than workers={workers} (each worker needs its own "
            f"nonzero evaluation point), got {p}")
    return p
