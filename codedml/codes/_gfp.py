"""Exact arithmetic over a prime field GF(p), in pure numpy.

This module is the arithmetic kernel behind the exact (finite-field) codes:
matrix products, linear solves, ranks, null spaces and Reed-Solomon error
location by Berlekamp-Welch.  It deliberately imports nothing but numpy (no
``galois``), so that importing the codes package stays cheap; ``galois`` is used
only by the tests, as an independent reference.

Representation
--------------
A field element is an ``int64`` in ``[0, p)``.  The largest supported prime is
:data:`MAX_PRIME` ``= 2**31 - 1``: the product of two residues is then below
``2**62`` and the expression ``x - f * y`` with residues ``x, f, y`` stays
inside ``int64`` without overflow, which is what lets every elementwise
operation here run as a vectorised numpy ``int64`` operation instead of on
Python integers.

Fast matrix products
--------------------
Integer matmul in numpy does not use BLAS and is far slower than float64
GEMM (and int64 sums of products of residues near ``2**31`` would overflow
anyway).  :func:`matmul_mod` therefore runs the products in float64 BLAS,
which is *exact* as long as every partial sum is a non-negative integer at
most ``2**53`` (each such integer is representable, so no rounding ever
happens, whatever order or FMA use the BLAS picks).  The inner dimension is
cut into chunks short enough for partial sums of at most ``2**52`` (one bit of
slack buys an in-place float-to-int conversion), each chunk's result is
converted to ``int64`` and accumulated, and the sum is reduced mod ``p``.

* For small primes (``(p-1)**2 * chunk <= 2**52``, e.g. ``p < 2**21`` gives
  chunks of 1024 terms) one float64 GEMM per chunk suffices (float32, twice as
  fast, when the whole sum stays within ``2**24``).
* For larger primes (default): residues centered to ``|x| <= (p-1)/2`` and
  only ``a`` split in two limbs, one GEMM per inner chunk of the stacked limbs
  (:func:`_gemm_exact_centered`): about two float64 GEMMs plus an int64
  accumulation of the chunk results.
* ``method="limbs"``: each operand is split into a 16-bit low and a (at most)
  15-bit high limb, ``a = a1 * 2**s + a0``; the limb products are small, and the
  three limb GEMMs of Karatsuba's identity
  ``a0 b1 + a1 b0 = (a0 + a1)(b0 + b1) - a0 b0 - a1 b1`` are recombined mod
  ``p`` in ``int64``.  The cost is about three float64 GEMMs.
"""

from __future__ import annotations

import sys
import threading
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MAX_PRIME",
    "berlekamp_welch",
    "berlekamp_welch_decode",
    "inv_mod",
    "is_prime",
    "matmul_mod",
    "nullspace_mod",
    "poly_divmod_mod",
    "poly_eval_mod",
    "rank_mod",
    "solve_mod",
    "vandermonde_mod",
]

#: Largest supported prime.  Two residues multiply to less than ``2**62``, so
#: every ``x - f * y`` on residues fits ``int64`` exactly.
MAX_PRIME: int = 2**31 - 1

# Every integer of magnitude <= 2**53 is exactly representable in float64, so
# a float64 GEMM whose partial sums are non-negative integers <= 2**53 is exact.
# We stop at 2**52, one bit short, so that results can be turned into int64 in
# place with the 2**52 bit trick (_float_to_int64_inplace); it halves chunk
# lengths, which costs nothing measurable.
_EXACT_FLOAT = 2**52
_MAGIC_FLOAT = float(2**52)
_MAGIC_BITS = np.int64(0x4330000000000000)  # bit pattern of the float 2**52

# Same bound for float32 (24-bit significand), used for tiny primes.
_EXACT_FLOAT32 = 2**24

# Chunk results are <= 2**52 each; an int64 accumulator can take 2047 of them
# (2047 * 2**52 < 2**63) before it must be reduced mod p.
_ACC_CHUNKS = 2047

# Below this chunk length (inner terms per exact float64 GEMM) the direct path
# spends too much time in many thin GEMMs and int64 conversions; the limb path
# (about three full GEMMs) is faster then.  Measured on a 2-core AVX-512 box:
# chunks of 128 and more make the direct path win.
_MIN_DIRECT_CHUNK = 128

# Bases that make Miller-Rabin deterministic for every n < 3.3 * 10**24
# (Sorenson and Webster), which covers all of int64/uint64.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)

IntArray = NDArray[np.int64]


# ---------------------------------------------------------------------------
# Primes and argument checking
# ---------------------------------------------------------------------------
def is_prime(p: int) -> bool:
    """Return whether ``p`` is prime (deterministic for ``p < 2**64``).

    Parameters
    ----------
    p : int
        Integer to test.  Negative numbers, 0 and 1 are not prime.

    Returns
    -------
    bool
        ``True`` iff ``p`` is prime.  Miller-Rabin with the first twelve
        primes as bases is a proof, not a probabilistic test, for every
        ``p < 3.3 * 10**24``; larger inputs get the same test, which is then
        only probabilistic.
    """
    p = int(p)
    if p < 2:
        return False
    for q in _MR_BASES:
        if p % q == 0:
            return p == q
    # Write p - 1 = d * 2**s with d odd.
    d, s = p - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _MR_BASES:
        x = pow(a, d, p)
        if x == 1 or x == p - 1:
            continue
        for _ in range(s - 1):
            x = x * x % p
            if x == p - 1:
                break
        else:
            return False  # a witnesses that p is composite
    return True


def _check_modulus(p: int) -> int:
    """Return ``p`` as a Python int after checking ``2 <= p <= MAX_PRIME``."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"modulus p must be an integer, got {type(p).__name__}")
    p = int(p)
    if not 2 <= p <= MAX_PRIME:
        raise ValueError(f"modulus p={p} outside the supported range [2, {MAX_PRIME}]")
    return p


@lru_cache(maxsize=64)
def _check_prime(p: int) -> int:
    """Like :func:`_check_modulus`, and also require ``p`` prime (divisions need it)."""
    p = _check_modulus(p)
    if not is_prime(p):
        raise ValueError(f"p={p} is not prime; GF(p) division needs a prime modulus")
    return p


def _as_residues(x: ArrayLike, p: int, name: str) -> IntArray:
    """Return ``x`` as an ``int64`` array, checking every entry lies in ``[0, p)``.

    Residues are checked rather than silently reduced so that a caller who
    forgot to quantise or reduce gets an error instead of a wrong answer; the
    check is O(size), negligible next to the O(n^3) work that follows.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= p:
        # Check before casting: large uint64 values would wrap to negatives.
        raise ValueError(f"{name} has entries outside [0, {p})")
    arr = arr.astype(np.int64, copy=False)
    # One reduction instead of min() and max(): a negative int64 reads as >= 2**63 unsigned.
    if arr.size and int(arr.view(np.uint64).max()) >= p:
        raise ValueError(f"{name} has entries outside [0, {p})")
    return arr


# ---------------------------------------------------------------------------
# Matrix product
# ---------------------------------------------------------------------------
def _direct_chunk(p: int) -> int:
    """Inner terms per exact float64 GEMM when residues are multiplied directly."""
    return _EXACT_FLOAT // (p - 1) ** 2


def _float_to_int64_inplace(x: NDArray[np.float64]) -> IntArray:
    """Reinterpret float64 integers in ``[0, 2**52]`` as int64, in place.

    Adding ``2**52`` puts ``v`` in ``[2**52, 2**53]``, where float64 spacing is
    1, so the sum is exact and its bit pattern is ``0x4330000000000000 + v``.
    Subtracting that constant from the int64 view recovers ``v``.  Two in-place
    passes instead of ``astype``, which would allocate (and page-fault) a new
    array: measurable next to a GEMM, since fresh allocations cost ~20% of the
    limb path on a 2-core box.
    """
    x += _MAGIC_FLOAT
    xi = x.view(np.int64)
    xi -= _MAGIC_BITS
    return xi


#: Bytes of scratch arrays each thread keeps between products (0: none). A fresh 8 MB array
#: costs its first touch (page faults and zeroing, about 1.5 ms for 1024 x 1024 float64, in
#: the kernel) on every product; the float64 operands, limbs and limb products live in
#: scratch arrays reused by the thread's next product of the same shape instead (the result is
#: always a fresh array). 64 MB holds the seven 8 MB arrays of a 1024 x 1024 limb product;
#: larger products allocate afresh. Measured at 1024 on a 2-core box (CPU time): 6% of the
#: direct path and 8% of the limb path.
WORKSPACE_BYTES: int = 64 << 20

_WORK = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """An uninitialised array of ``shape``, kept for this thread's next call with the same
    ``slot`` and shape while the thread's scratch stays within :data:`WORKSPACE_BYTES`."""
    pool: dict[str, np.ndarray] | None = getattr(_WORK, "pool", None)
    if pool is None:
        pool = _WORK.pool = {}
    arr = pool.get(slot)
    if arr is not None and arr.shape == shape and arr.dtype == dtype:
        return arr
    pool.pop(slot, None)
    arr = np.empty(shape, dtype=dtype)
    if sum(x.nbytes for x in pool.values()) + arr.nbytes <= WORKSPACE_BYTES:
        pool[slot] = arr
    return arr


def release_workspace() -> None:
    """Free this thread's scratch arrays (see :data:`WORKSPACE_BYTES`)."""
    _WORK.pool = {}


def _mod_inplace(x: IntArray, p: int, q: IntArray | None = None) -> IntArray:
    """``x %= p`` for non-negative int64 ``x``, as ``x -= (x // p) * p``.

    numpy divides int64 by a scalar with libdivide (a multiply and a shift), but ``%`` does
    not: measured 0.6 ms against 2.7 ms per million entries, so three cheap passes beat one
    ``%``. ``q`` is an optional scratch array of ``x``'s shape.
    """
    if q is None:
        q = np.empty_like(x)
    np.floor_divide(x, p, out=q)
    q *= p
    x -= q
    return x


def _block_rows(cols: int) -> int:
    """Rows per block of the element-wise post-processing: about 1 MB of float64 per array,
    so the few passes after a GEMM run in cache instead of streaming the whole product from
    memory each time."""
    return max(1, (1 << 17) // max(cols, 1))


def _reduce_float_inplace(c: NDArray[np.float64], p: int) -> IntArray:
    """``c mod p`` for float64 integers in ``[0, 2**52]``, in place, as int64 (row blocks)."""
    ci = c.view(np.int64)
    rows = _block_rows(c.shape[1])
    q = np.empty((min(rows, c.shape[0]), c.shape[1]), dtype=np.int64)
    for i in range(0, c.shape[0], rows):
        xi = _float_to_int64_inplace(c[i:i + rows])
        _mod_inplace(xi, p, q[:xi.shape[0]])
    return ci


def _gemm_exact_direct(a: IntArray, b: IntArray, p: int, chunk: int) -> IntArray:
    """Exact ``a @ b mod p`` with one float64 GEMM per inner-dimension chunk (float32 if tiny)."""
    n = a.shape[1]
    if n * (p - 1) ** 2 <= _EXACT_FLOAT32:
        # Tiny primes: every sum fits float32's 24-bit mantissa, and float32
        # GEMM runs about twice as fast as float64.
        out = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.int64)
        out %= p
        return out
    if n <= chunk:
        # Common case (p < 2**21 and n <= 1024): a single exact GEMM.
        af = _scratch("a", a.shape)
        bf = _scratch("b", b.shape)
        np.copyto(af, a, casting="unsafe")  # exact: residues < 2**31
        np.copyto(bf, b, casting="unsafe")
        return _reduce_float_inplace(af @ bf, p)
    af = a.astype(np.float64)
    bf = b.astype(np.float64)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    for i, start in enumerate(range(0, n, chunk), start=1):
        stop = min(start + chunk, n)
        acc += _float_to_int64_inplace(af[:, start:stop] @ bf[start:stop])
        if i % _ACC_CHUNKS == 0:
            _mod_inplace(acc, p)  # keep the accumulator below 2**63
    return _mod_inplace(acc, p)


def _split_limbs(x: IntArray, s: int, name: str | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Split residues ``x < 2**32`` into float64 limbs ``x & (2**s - 1)`` and ``x >> s``.

    For ``s == 16`` on a little-endian machine the limbs are the first two
    16-bit words of each int64, so each limb is converted in one strided pass
    instead of a mask/shift pass plus a conversion pass (saves ~30% of the
    split time, which is O(size) but not negligible next to three GEMMs).
    """
    if s == 16 and sys.byteorder == "little" and x.ndim == 2:
        words = np.ascontiguousarray(x).view(np.uint16).reshape(x.shape[0], x.shape[1], 4)
        # named: thread scratch arrays (see _scratch), else fresh ones
        lo = _scratch(name + "0", x.shape) if name else np.empty(x.shape)
        hi = _scratch(name + "1", x.shape) if name else np.empty(x.shape)
        np.copyto(lo, words[..., 0], casting="unsafe")
        np.copyto(hi, words[..., 1], casting="unsafe")
    else:
        lo = (x & ((1 << s) - 1)).astype(np.float64)
        hi = (x >> s).astype(np.float64)
    return lo, hi


def _gemm_exact_limbs(a: IntArray, b: IntArray, p: int) -> IntArray:
    """Exact ``a @ b mod p`` for large ``p`` by two-limb Karatsuba in float64.

    With ``a = a1 * 2**s + a0`` and ``b = b1 * 2**s + b0`` (``s = 16`` for
    ``p > 2**16``)::

        a b = a1 b1 2**(2s) + (a0 b1 + a1 b0) 2**s + a0 b0

    and the middle term is ``(a0 + a1)(b0 + b1) - a0 b0 - a1 b1``.  With
    ``s = 16`` the low limb is below ``2**16`` and the high one below
    ``2**15`` for ``p <= 2**31 - 1``, so limb sums are below ``1.5 * 2**16``
    and a chunk of about ``2**52 / 2**33.2 = 4.6 * 10**5`` inner terms is
    exact: for all practical sizes the three GEMMs are single calls.
    """
    bits = (p - 1).bit_length()
    # A 16-bit low limb lets the split read 16-bit words straight out of the
    # int64 buffer (see _split_limbs); for p > 2**16 the high limb then has
    # at most 15 bits.  Tiny primes (only reached via method="limbs") split
    # their bits evenly.
    s = 16 if bits > 16 else (bits + 1) // 2
    lo_max = min((1 << s) - 1, p - 1)
    hi_max = (p - 1) >> s
    # The largest product of any of the three GEMMs is (lo_max + hi_max)**2.
    chunk = max(1, _EXACT_FLOAT // (lo_max + hi_max) ** 2)

    n = a.shape[1]
    single = n <= chunk
    # scratch limbs only where a0/b0 become the limb sums in place (single chunk)
    a0, a1 = _split_limbs(a, s, "a" if single else None)
    b0, b1 = _split_limbs(b, s, "b" if single else None)

    if single:
        # Usual case (chunk is ~4.6e5 near p = 2**31): one call per limb
        # product and no accumulators.  a0 and b0 are overwritten by the limb
        # sums once a0 @ b0 is done, which saves two fresh arrays.
        shape = (a.shape[0], b.shape[1])
        lo = np.matmul(a0, b0, out=_scratch("lo", shape))
        hi = np.matmul(a1, b1, out=_scratch("hi", shape))
        a0 += a1
        b0 += b1
        mid = np.matmul(a0, b0, out=_scratch("mid", shape))
        # Exact: all three are integers <= 2**52 and mid >= lo + hi entrywise.
        return _combine_limbs(lo, mid, hi, p, s, hi_max * hi_max * n)
    else:
        asum = a0 + a1
        bsum = b0 + b1
        shape = (a.shape[0], b.shape[1])
        acc_lo = np.zeros(shape, dtype=np.int64)
        acc_mid = np.zeros(shape, dtype=np.int64)
        acc_hi = np.zeros(shape, dtype=np.int64)
        for i, start in enumerate(range(0, n, chunk), start=1):
            stop = min(start + chunk, n)
            lo = a0[:, start:stop] @ b0[start:stop]
            hi = a1[:, start:stop] @ b1[start:stop]
            mid = asum[:, start:stop] @ bsum[start:stop]
            mid -= lo
            mid -= hi
            acc_lo += _float_to_int64_inplace(lo)
            acc_mid += _float_to_int64_inplace(mid)
            acc_hi += _float_to_int64_inplace(hi)
            if i % _ACC_CHUNKS == 0:
                acc_lo %= p  # keep the accumulators below 2**63
                acc_mid %= p
                acc_hi %= p
        _mod_inplace(acc_lo, p)  # below 2**52 now, as in the single-chunk case

    # Recombine mod p: result = hi * 2**(2s) + mid * 2**s + lo.  With
    # c1 = 2**s mod p <= 2**16 and c2 = 2**(2s) mod p < 2**31, reducing hi
    # and mid first gives hi * c2 < 2**62 and mid * c1 < 2**47; with
    # lo <= 2**52 the sum is < 2**62 + 2**47 + 2**52 < 2**63, so three int64
    # reductions suffice (they are the main cost after the GEMMs).
    c1 = pow(2, s, p)
    c2 = pow(2, 2 * s, p)
    q = np.empty_like(acc_mid)
    _mod_inplace(acc_hi, p, q)
    acc_hi *= c2
    _mod_inplace(acc_mid, p, q)
    acc_mid *= c1
    acc_mid += acc_lo
    acc_mid += acc_hi
    return _mod_inplace(acc_mid, p, q)


def _combine_limbs(lo: NDArray[np.float64], mid: NDArray[np.float64], hi: NDArray[np.float64],
                   p: int, s: int, hi_bound: int) -> IntArray:
    """``(hi * 2**(2s) + (mid - lo - hi) * 2**s + lo) mod p`` as int64, from the three
    single-chunk limb GEMMs (float64 integers <= 2**52, ``mid >= lo + hi``; ``hi <= hi_bound``).

    Row blocks of about 1 MB, so the dozen element-wise passes run in cache, not from memory.
    With ``c1 = 2**s mod p <= 2**16`` and ``c2 = 2**(2s) mod p``: the middle term reduced mod
    p times ``c1`` is below ``2**47``; ``hi * c2`` stays below ``2**62`` without reducing
    ``hi`` first when ``c2`` is small (``p`` near ``2**31``: ``2**32 mod (2**31 - 1) = 2``),
    else after it; the sum with ``lo <= 2**52`` is below ``2**63``, so one reduction ends it.
    Every step is exact int64 arithmetic; reductions are :func:`_mod_inplace`.
    """
    c1 = pow(2, s, p)
    c2 = pow(2, 2 * s, p)
    reduce_hi = c2 * hi_bound >= 2**61
    shape = lo.shape
    out = np.empty(shape, dtype=np.int64)
    rows = _block_rows(shape[1])
    k = min(rows, shape[0])
    L = np.empty((k, shape[1]), dtype=np.int64)
    M = np.empty_like(L)
    q = np.empty_like(L)
    for i in range(0, shape[0], rows):
        lb, mb, hb = lo[i:i + rows], mid[i:i + rows], hi[i:i + rows]
        r = lb.shape[0]
        mb -= lb                                  # exact: integers below 2**53
        mb -= hb
        H, Mi, Li, qi = out[i:i + rows], M[:r], L[:r], q[:r]
        np.copyto(H, hb, casting="unsafe")        # exact integers: the cast is exact
        np.copyto(Mi, mb, casting="unsafe")
        np.copyto(Li, lb, casting="unsafe")
        _mod_inplace(Mi, p, qi)
        Mi *= c1
        if reduce_hi:
            _mod_inplace(H, p, qi)
        H *= c2
        H += Mi
        H += Li
        _mod_inplace(H, p, qi)
    return out


def _centered_plan(p: int) -> tuple[int, int]:
    """``(s, chunk)`` of the centered path: limb base ``2**s`` and inner terms per exact GEMM."""
    h = (p - 1) // 2
    s = max(1, ((h.bit_length() + 1) // 2))
    top = (h + (1 << (s - 1))) >> s           # largest |high limb| after round-to-nearest
    limb = max(1 << (s - 1), top)
    return s, max(1, (1 << 53) // (limb * max(h, 1)))


def _gemm_exact_centered(a: IntArray, b: IntArray, p: int) -> IntArray:
    """Exact ``a @ b mod p`` for large ``p`` in two GEMM-equivalents instead of three.

    Residues are centered, ``|x| <= h = (p - 1) / 2 < 2**30``, and only ``a`` is split, with
    round-to-nearest, into ``a = a1 * 2**s + a0`` (``s = 15`` near ``2**31``: ``|a0| <= 2**14``,
    ``|a1| <= 2**15``). Every term of ``[a0; a1] @ b`` is then at most ``L h`` with ``L =
    2**15``, so sums of ``chunk = 2**53 // (L h)`` terms (256 for ``2**31 - 1``) are exact in
    float64 in any order (every partial sum is an integer of magnitude at most ``2**53``). The
    two limbs are stacked into one ``2M x K`` operand, so each inner chunk is one GEMM; chunk
    results are accumulated in int64 (at most ``2**53`` each), and
    ``((acc1 mod p) * 2**s + acc0) mod p`` ends it with floor-division reductions, which give
    ``[0, p)`` for negative values too. The flops are those of two float64 GEMMs; three for
    the Karatsuba limb path (:func:`_gemm_exact_limbs`), whose sums need no chunking.
    """
    M, K = a.shape
    N = b.shape[1]
    h = (p - 1) // 2
    s, chunk = _centered_plan(p)
    inv = 1.0 / p

    def center(x: NDArray[np.float64], tmp: NDArray[np.float64]) -> None:
        # x - p * rint(x / p): rint gives 1 exactly for x > h (x / p is at least 1/(2p) away
        # from 1/2, far beyond the product's rounding), so |x| <= h; every step is exact
        np.multiply(x, inv, out=tmp)
        np.rint(tmp, out=tmp)
        tmp *= p
        x -= tmp

    # b centered, float64
    bf = _scratch("cb", b.shape)
    np.copyto(bf, b, casting="unsafe")
    center(bf, _scratch("ct", b.shape))
    # a centered and split: rows [0, M) hold a0, rows [M, 2M) hold a1
    A = _scratch("ca", (2 * M, K))
    a0, a1 = A[:M], A[M:]
    np.copyto(a0, a, casting="unsafe")
    center(a0, a1)
    np.multiply(a0, 2.0 ** -s, out=a1)      # exact: a power of two
    np.rint(a1, out=a1)
    tmp = _scratch("ct", a.shape)
    np.multiply(a1, 2.0 ** s, out=tmp)
    a0 -= tmp                               # exact: |a0| <= 2**(s-1)
    acc = np.empty((2 * M, N), dtype=np.int64)
    S = _scratch("cs", (2 * M, N))
    rows = _block_rows(N)
    T = np.empty((min(rows, 2 * M), N), dtype=np.int64)   # in cache: one row block
    for i, start in enumerate(range(0, K, chunk)):
        stop = min(start + chunk, K)
        np.matmul(A[:, start:stop], bf[start:stop], out=S)
        if i == 0:
            np.copyto(acc, S, casting="unsafe")   # exact integers
            continue
        for r0 in range(0, 2 * M, rows):          # row blocks: the int copy stays in cache
            blk = acc[r0:r0 + rows]
            t = T[:blk.shape[0]]
            np.copyto(t, S[r0:r0 + rows], casting="unsafe")
            blk += t
            if i % 1000 == 999:                   # keep |acc| below 2**63
                _mod_inplace(blk, p, np.empty_like(blk))
    out = np.empty((M, N), dtype=np.int64)
    for r0 in range(0, M, rows):                  # ((acc1 mod p) 2**s + acc0) mod p, blocked
        r1 = min(r0 + rows, M)
        lo, hi = acc[r0:r1], acc[M + r0:M + r1]
        t = T[:lo.shape[0]]
        _mod_inplace(hi, p, t)
        hi *= 1 << s                              # < 2**31 * 2**15
        o = out[r0:r1]
        np.add(lo, hi, out=o)                     # |.| < 1000 * 2**53 + 2**46 < 2**63
        _mod_inplace(o, p, t)
    return out


def matmul_mod(a: ArrayLike, b: ArrayLike, p: int, *, method: str = "auto") -> IntArray:
    """Exact matrix product ``(a @ b) mod p`` using float64 BLAS.

    Parameters
    ----------
    a : array_like of int, shape (M, N)
        Left operand, entries in ``[0, p)``.
    b : array_like of int, shape (N,) or (N, K)
        Right operand, entries in ``[0, p)``.
    p : int
        Modulus, ``2 <= p <= MAX_PRIME``.  Primality is not required here.
    method : {"auto", "direct", "limbs", "centered"}, optional
        ``"direct"`` multiplies residues in float64 over chunks of
        ``floor(2**52 / (p-1)**2)`` inner terms (only possible when
        ``(p-1)**2 <= 2**52``, i.e. ``p <= 2**26 + 1``); ``"limbs"`` splits operands into two limbs and
        does three float64 GEMMs (Karatsuba); ``"centered"`` centers the residues and
        splits ``a`` only, two GEMMs' flops over exact inner chunks
        (:func:`_gemm_exact_centered`).  ``"auto"`` (default) takes the
        direct path when its chunks are long enough to be efficient (the whole
        inner dimension, or at least 128 terms), else the centered path when its
        chunks are (at least 256 terms), else the limb path.  All give
        identical, exact results; the option exists for testing and tuning.

    Returns
    -------
    numpy.ndarray of int64, shape (M,) or (M, K)
        ``(a @ b) mod p`` with entries in ``[0, p)``.

    Raises
    ------
    TypeError
        If an operand is not an integer array.
    ValueError
        If shapes do not match, an entry lies outside ``[0, p)``, ``p`` is out
        of range, or ``method="direct"`` is impossible for this ``p``.

    Notes
    -----
    Exactness does not depend on the BLAS: each GEMM's partial sums are
    integers of magnitude at most ``2**53``, all exactly representable, so no
    summation order or FMA can round.  Cost: one float64 GEMM for
    ``p < 2**21`` and inner dimension ``<= 1024`` (float32 when
    ``N (p-1)**2 <= 2**24``); about two GEMMs plus an int64 accumulation
    of their inner chunks for primes near ``2**31`` (three GEMMs with
    ``method="limbs"``).  Measured at ``1024 x 1024`` with one BLAS thread
    (CPU time, loaded 2-core AVX-512 box): 0.83x float64 BLAS throughput for
    ``p`` near ``2**21`` and 0.33x for ``2**31 - 1`` (``benchmarks/gfp_matmul.py``).
    """
    p = _check_modulus(p)
    a = _as_residues(a, p, "a")
    b = _as_residues(b, p, "b")
    if a.ndim != 2:
        raise ValueError(f"a must be 2-D, got shape {a.shape}")
    vector = b.ndim == 1
    if vector:
        b = b[:, None]
    if b.ndim != 2:
        raise ValueError(f"b must be 1-D or 2-D, got shape {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: a is {a.shape}, b has {b.shape[0]} rows")

    n = a.shape[1]
    direct_chunk = _direct_chunk(p)
    if method == "auto":
        use_direct = direct_chunk >= min(n, _MIN_DIRECT_CHUNK) and direct_chunk >= 1
    elif method == "direct":
        if direct_chunk < 1:
            raise ValueError(f"direct method impossible for p={p}: (p-1)**2 > 2**52")
        use_direct = True
    elif method in ("limbs", "centered"):
        use_direct = False
    else:
        raise ValueError(f"unknown method {method!r}; use 'auto', 'direct', 'limbs' or 'centered'")

    if n == 0:
        out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    elif use_direct:
        out = _gemm_exact_direct(a, b, p, direct_chunk)
    else:
        centered = method == "centered" or (
            method == "auto" and _centered_plan(p)[1] >= min(n, _MIN_DIRECT_CHUNK * 2))
        out = _gemm_exact_centered(a, b, p) if centered else _gemm_exact_limbs(a, b, p)
    return out[:, 0] if vector else out


# ---------------------------------------------------------------------------
# Row reduction: solve, inverse, rank, null space
# ---------------------------------------------------------------------------
def _rref_mod(m: IntArray, p: int, ncols: int | None = None) -> tuple[IntArray, list[int]]:
    """Reduced row echelon form of ``m`` mod prime ``p`` (Gauss-Jordan).

    Pivots are searched only in the first ``ncols`` columns (all by default),
    so an augmented matrix ``[A | B]`` is reduced with respect to ``A``.  Any
    nonzero entry is a valid pivot: in an exact field there is no growth or
    rounding to guard against.  Each step is one vectorised int64 update of
    all rows, so the cost is O(rows * cols * rank) numpy work with O(rank)
    Python iterations.

    Returns
    -------
    R : ndarray of int64
        The reduced matrix; its first ``len(pivots)`` rows are the nonzero ones
        in the pivot columns, each pivot equal to 1 and alone in its column.
    pivots : list of int
        Pivot column indices, increasing.
    """
    r_mat = np.array(m, dtype=np.int64, copy=True)
    nrows, total_cols = r_mat.shape
    ncols = total_cols if ncols is None else ncols
    pivots: list[int] = []
    row = 0
    for col in range(ncols):
        if row == nrows:
            break
        nz = np.flatnonzero(r_mat[row:, col])
        if nz.size == 0:
            continue
        piv = row + int(nz[0])
        if piv != row:
            r_mat[[row, piv]] = r_mat[[piv, row]]
        inv = pow(int(r_mat[row, col]), -1, p)
        if inv != 1:
            r_mat[row, col:] = r_mat[row, col:] * inv % p
        factors = r_mat[:, col].copy()
        factors[row] = 0
        targets = np.flatnonzero(factors)
        if targets.size:
            # factors * pivot_row < p**2 < 2**62, and the difference stays
            # above -2**62: no int64 overflow before the reduction.
            r_mat[targets, col:] = (
                r_mat[targets, col:] - factors[targets, None] * r_mat[row, col:]
            ) % p
        pivots.append(col)
        row += 1
    return r_mat, pivots


def solve_mod(a: ArrayLike, b: ArrayLike, p: int) -> IntArray:
    """Solve ``A X = B (mod p)`` exactly for square invertible ``A``.

    Parameters
    ----------
    a : array_like of int, shape (k, k)
        Coefficient matrix, entries in ``[0, p)``.
    b : array_like of int, shape (k,) or (k, r)
        Right-hand side(s), entries in ``[0, p)``.
    p : int
        Prime modulus, ``p <= MAX_PRIME``.

    Returns
    -------
    numpy.ndarray of int64, same shape as ``b``
        The unique solution, entries in ``[0, p)``.

    Raises
    ------
    ValueError
        If ``A`` is singular mod ``p`` (the message says "singular" and gives
        the rank), shapes mismatch, entries are out of range or ``p`` is not
        prime.

    Notes
    -----
    Gauss-Jordan elimination with row pivoting on ``[A | B]``; O(k^2 (k + r))
    integer work in O(k) vectorised steps, meant for the small systems that
    decoding produces (k up to a few hundred).
    """
    p = _check_prime(int(p))
    a = _as_residues(a, p, "A")
    b = _as_residues(b, p, "B")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"A must be square, got shape {a.shape}")
    k = a.shape[0]
    vector = b.ndim == 1
    b2 = b[:, None] if vector else b
    if b2.ndim != 2 or b2.shape[0] != k:
        raise ValueError(f"B must have shape ({k},) or ({k}, r), got {b.shape}")
    reduced, pivots = _rref_mod(np.concatenate([a, b2], axis=1), p, ncols=k)
    if len(pivots) < k:
        raise ValueError(f"matrix is singular modulo p={p} (rank {len(pivots)} < {k})")
    # Full rank: the left block is now the identity and the right block is X.
    x = reduced[:, k:]
    return x[:, 0].copy() if vector else np.ascontiguousarray(x)


def inv_mod(a: ArrayLike, p: int) -> IntArray:
    """Exact inverse of a square matrix mod prime ``p``.

    An explicit inverse is harmless here (unlike in floating point): the
    arithmetic is exact, so ``inv_mod(A) @ B`` equals ``solve_mod(A, B)``.
    Useful when the same decoding matrix is applied to many right-hand sides
    with :func:`matmul_mod`.

    Parameters
    ----------
    a : array_like of int, shape (k, k)
        Matrix with entries in ``[0, p)``.
    p : int
        Prime modulus.

    Returns
    -------
    numpy.ndarray of int64, shape (k, k)

    Raises
    ------
    ValueError
        If ``a`` is singular mod ``p`` (see :func:`solve_mod`).
    """
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"A must be square, got shape {arr.shape}")
    return solve_mod(arr, np.eye(arr.shape[0], dtype=np.int64), p)


def rank_mod(a: ArrayLike, p: int) -> int:
    """Rank of a matrix over GF(p).

    Parameters
    ----------
    a : array_like of int, shape (m, n)
        Matrix with entries in ``[0, p)``.
    p : int
        Prime modulus.

    Returns
    -------
    int
        The rank over GF(p) (which can be lower than the rank over the reals).
    """
    p = _check_prime(int(p))
    arr = _as_residues(a, p, "A")
    if arr.ndim != 2:
        raise ValueError(f"A must be 2-D, got shape {arr.shape}")
    return len(_rref_mod(arr, p)[1])


def nullspace_mod(a: ArrayLike, p: int) -> IntArray:
    """Basis of the right null space ``{v : A v = 0 (mod p)}``, as ROWS.

    Parameters
    ----------
    a : array_like of int, shape (m, n)
        Matrix with entries in ``[0, p)``.
    p : int
        Prime modulus.

    Returns
    -------
    numpy.ndarray of int64, shape (n - rank, n)
        Each row ``v`` satisfies ``matmul_mod(A, v, p) == 0``; the rows are
        linearly independent and span the null space (the same row convention
        as ``galois``' ``null_space``).  The basis is the reduced one: row
        ``i`` has a 1 in the ``i``-th free column and 0 in the other free
        columns.  Shape ``(0, n)`` if ``A`` has full column rank.
    """
    p = _check_prime(int(p))
    arr = _as_residues(a, p, "A")
    if arr.ndim != 2:
        raise ValueError(f"A must be 2-D, got shape {arr.shape}")
    n = arr.shape[1]
    reduced, pivots = _rref_mod(arr, p)
    free = [c for c in range(n) if c not in set(pivots)]
    basis = np.zeros((len(free), n), dtype=np.int64)
    if free:
        basis[:, free] = np.eye(len(free), dtype=np.int64)
        if pivots:
            # Pivot variable x_pc = -sum_f R[i, f] x_f for the i-th pivot row.
            basis[:, pivots] = (-reduced[: len(pivots)][:, free].T) % p
    return basis


# ---------------------------------------------------------------------------
# Polynomials (coefficients in increasing order of degree)
# ---------------------------------------------------------------------------
def vandermonde_mod(xs: ArrayLike, k: int, p: int) -> IntArray:
    """Vandermonde matrix ``V[i, j] = xs[i]**j mod p``.

    Parameters
    ----------
    xs : array_like of int, shape (r,)
        Evaluation points in ``[0, p)``.
    k : int
        Number of columns (powers ``0 .. k-1``).
    p : int
        Modulus.

    Returns
    -------
    numpy.ndarray of int64, shape (r, k)
    """
    p = _check_modulus(p)
    x = _as_residues(xs, p, "xs").ravel()
    v = np.empty((x.size, int(k)), dtype=np.int64)
    if k > 0:
        v[:, 0] = 1
        for j in range(1, int(k)):
            v[:, j] = v[:, j - 1] * x % p  # < p**2 < 2**62
    return v


def poly_eval_mod(coeffs: ArrayLike, xs: ArrayLike, p: int) -> IntArray:
    """Evaluate a polynomial at many points mod ``p`` (Horner's rule).

    Parameters
    ----------
    coeffs : array_like of int, shape (d+1,)
        Coefficients in increasing order: ``coeffs[j]`` multiplies ``x**j``.
        Entries in ``[0, p)``.  An empty array is the zero polynomial.
    xs : array_like of int
        Points in ``[0, p)``, any shape.
    p : int
        Modulus.

    Returns
    -------
    numpy.ndarray of int64, same shape as ``xs``
    """
    p = _check_modulus(p)
    c = _as_residues(coeffs, p, "coeffs").ravel()
    x = _as_residues(xs, p, "xs")
    acc = np.zeros(x.shape, dtype=np.int64)
    for cj in c[::-1]:
        acc = (acc * x + cj) % p  # acc * x < 2**62, plus cj < 2**31: no overflow
    return acc


def poly_divmod_mod(num: ArrayLike, den: ArrayLike, p: int) -> tuple[IntArray, IntArray]:
    """Polynomial long division mod prime ``p`` (increasing-order coefficients).

    Parameters
    ----------
    num, den : array_like of int
        Dividend and divisor coefficients in ``[0, p)``; ``den`` must not be
        the zero polynomial (trailing zero coefficients are ignored).
    p : int
        Prime modulus.

    Returns
    -------
    quotient : numpy.ndarray of int64, shape (max(len(num) - deg(den), 1),)
    remainder : numpy.ndarray of int64, shape (max(deg(den), 1),)
        ``num = quotient * den + remainder`` with ``deg(remainder) < deg(den)``
        (a constant divisor gives a zero remainder of length 1).
    """
    p = _check_prime(int(p))
    n = _as_residues(num, p, "num").ravel()
    d = _as_residues(den, p, "den").ravel()
    nz = np.flatnonzero(d)
    if nz.size == 0:
        raise ZeroDivisionError("division by the zero polynomial")
    d = d[: int(nz[-1]) + 1]
    dd = d.size - 1
    rem = n.copy()
    if n.size <= dd:
        rem = np.concatenate([rem, np.zeros(dd - n.size, dtype=np.int64)])
        return np.zeros(1, dtype=np.int64), rem if dd > 0 else np.zeros(1, dtype=np.int64)
    quot = np.zeros(n.size - dd, dtype=np.int64)
    lead_inv = pow(int(d[-1]), -1, p)
    for i in range(n.size - 1, dd - 1, -1):
        c = int(rem[i]) * lead_inv % p
        if c:
            quot[i - dd] = c
            rem[i - dd : i + 1] = (rem[i - dd : i + 1] - c * d) % p
    remainder = rem[:dd] if dd > 0 else np.zeros(1, dtype=np.int64)
    return quot, remainder.copy()


# ---------------------------------------------------------------------------
# Reed-Solomon error location
# ---------------------------------------------------------------------------
def berlekamp_welch_decode(
    xs: ArrayLike, ys: ArrayLike, k: int, e: int, p: int
) -> tuple[IntArray, list[int]]:
    """Berlekamp-Welch: find the message polynomial and the error positions.

    Parameters
    ----------
    xs : array_like of int, shape (r,)
        Distinct evaluation points in ``[0, p)``.
    ys : array_like of int, shape (r,)
        Received values in ``[0, p)``.
    k : int
        Message length: the polynomial has degree ``< k`` (``k >= 1``).
    e : int
        Maximum number of errors to correct (``e >= 0``), with ``r >= k + 2e``.
    p : int
        Prime modulus.

    Returns
    -------
    poly : numpy.ndarray of int64, shape (k,)
        Coefficients (increasing order) of the polynomial ``P`` of degree
        ``< k`` that agrees with ``ys`` outside at most ``e`` positions.
    errors : list of int
        Sorted indices ``i`` with ``P(xs[i]) != ys[i]``.

    Raises
    ------
    ValueError
        If no polynomial of degree ``< k`` agrees with ``ys`` outside at most
        ``e`` positions, or on invalid arguments.

    Notes
    -----
    Unknowns: a monic error locator ``E`` of degree ``e`` and ``Q`` of degree
    ``< k + e`` with ``Q(x_i) = y_i E(x_i)`` for every ``i``.  The system may
    be underdetermined (fewer than ``e`` actual errors); any solution works,
    because for two solutions ``Q1 E2 - Q2 E1`` has degree ``< k + 2e <= r``
    and vanishes at all ``r`` points, so ``Q / E`` is the same polynomial for
    every solution.  Hence: take the solution with free variables zero,
    divide ``P = Q / E`` (remainder must vanish) and read the errors off as the
    positions where ``P(x_i) != y_i`` (more robust than testing
    ``E(x_i) = 0``, since ``E`` may have spurious roots).

    When ``r >= k + 2e`` a polynomial within distance ``e`` is unique, so a
    returned answer is always the right one *if* at most ``e`` errors
    occurred.  With more than ``e`` errors the received word may happen to
    lie within distance ``e`` of another codeword; the decoder then returns
    that codeword (no decoder can tell the difference), otherwise it raises.
    """
    p = _check_prime(int(p))
    x = _as_residues(xs, p, "xs").ravel()
    y = _as_residues(ys, p, "ys").ravel()
    k, e = int(k), int(e)
    r = x.size
    if y.size != r:
        raise ValueError(f"xs and ys differ in length ({r} != {y.size})")
    if k < 1 or e < 0:
        raise ValueError(f"need k >= 1 and e >= 0, got k={k}, e={e}")
    if r < k + 2 * e:
        raise ValueError(f"need r >= k + 2e, got r={r}, k={k}, e={e}")
    if np.unique(x).size != r:
        raise ValueError("evaluation points xs must be distinct")

    n_q = k + e
    v = vandermonde_mod(x, n_q + 1, p)  # powers 0 .. k+e (>= e)
    # Columns: q_0..q_{k+e-1}, then e_0..e_{e-1}; RHS moves the monic term
    # y_i x_i^e to the right:  Q(x_i) - y_i sum_j e_j x_i^j = y_i x_i^e.
    lhs_e = (-(y[:, None] * v[:, :e])) % p
    rhs = y * v[:, e] % p
    aug = np.concatenate([v[:, :n_q], lhs_e, rhs[:, None]], axis=1)
    n_unknowns = n_q + e
    reduced, pivots = _rref_mod(aug, p, ncols=n_unknowns)
    rank = len(pivots)
    if np.any(reduced[rank:, -1]):
        raise ValueError(
            f"too many errors: no polynomial of degree < {k} agrees with ys "
            f"outside at most {e} positions (inconsistent key equation)"
        )
    sol = np.zeros(n_unknowns, dtype=np.int64)
    sol[pivots] = reduced[:rank, -1]  # free variables set to zero
    q_poly = sol[:n_q]
    e_poly = np.concatenate([sol[n_q:], np.ones(1, dtype=np.int64)])
    poly, rem = poly_divmod_mod(q_poly, e_poly, p)
    if np.any(rem):
        raise ValueError(
            f"too many errors: no polynomial of degree < {k} agrees with ys "
            f"outside at most {e} positions (Q not divisible by E)"
        )
    poly = np.concatenate([poly, np.zeros(max(0, k - poly.size), dtype=np.int64)])[:k]
    errors = np.flatnonzero(poly_eval_mod(poly, x, p) != y)
    if errors.size > e:
        raise ValueError(
            f"too many errors: the candidate polynomial disagrees with ys at "
            f"{errors.size} > e={e} positions"
        )
    return poly, errors.tolist()


def berlekamp_welch(xs: ArrayLike, ys: ArrayLike, k: int, e: int, p: int) -> list[int]:
    """Locate up to ``e`` errors in a Reed-Solomon word (Berlekamp-Welch).

    Parameters
    ----------
    xs : array_like of int, shape (r,)
        Distinct evaluation points in ``[0, p)``.
    ys : array_like of int, shape (r,)
        Received values ``P(xs) + errors`` in ``[0, p)``.
    k : int
        Message length (polynomial degree ``< k``).
    e : int
        Maximum number of errors, ``r >= k + 2e``.
    p : int
        Prime modulus.

    Returns
    -------
    list of int
        Sorted indices into ``xs`` of the values in error (empty if none).

    Raises
    ------
    ValueError
        If no polynomial of degree ``< k`` agrees with ``ys`` outside at most
        ``e`` positions.

    See Also
    --------
    berlekamp_welch_decode : also returns the corrected polynomial; its notes
        explain the method and what happens beyond ``e`` errors.
    """
    return berlekamp_welch_decode(xs, ys, k, e, p)[1]
