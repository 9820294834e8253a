"""Polynomial-family codes for ``C = A @ B``: generalized PolyDot and its special cases.

Mathematics (Dutta et al. 2018 "PolyDot"; Yu, Maddah-Ali, Avestimehr 2018 "entangled
polynomial codes"). ``A`` is split into ``p x m`` blocks (rows x inner), ``B`` into ``m x q``
(inner x columns). Worker ``w`` holds, at its evaluation point ``x_w``,

    a_w = sum_{i,j} A_ij x_w^(j + m i),      b_w = sum_{j,l} B_jl x_w^((m-1-j) + p m l),

and computes ``a_w @ b_w``, a matrix polynomial of degree ``pmq + m - 2`` whose coefficient at
``x^(m-1 + m i + p m l)`` is ``C_il = sum_j A_ij B_jl``. Any ``k = pmq + m - 1`` evaluations
determine it (the recovery threshold); every further result adds one unit of distance, so with
``r`` results ``floor((r - k) / 2)`` corrupt ones are corrected and ``r - k`` detected.

Special cases (the same code, not re-implementations):
``MDSCode(n, k) = PolyDot(p=k, m=1, q=1)`` (threshold k), ``PolynomialCode(n, p, q) =
PolyDot(p, 1, q)`` (threshold pq, Yu et al. 2017) and ``MatDotCode(n, m) = PolyDot(1, m, 1)``
(threshold 2m - 1, Dutta et al. 2019).

Constructions over the reals (``construction=``)
------------------------------------------------
``"circle"`` (default): evaluation points are the ``n``-th roots of unity. A Vandermonde matrix
on the unit circle is the DFT, so any ``k`` of ``n`` rows stay well conditioned (worst case 55
at n=31, k=29) where real points are hopeless (3e13). To keep real arithmetic on the workers,
pairs of real sub-blocks are packed as one complex block (the rotation-matrix embedding of
Ramamoorthy & Tang 2022):

* ``m = 1`` (MDS, polynomial codes): the two row halves of each ``A`` block form
  ``Z = A' + i A''`` and likewise the column halves of each ``B`` block. A worker stores
  ``[Re a_w; Im a_w]`` and ``[Re b_w, Im b_w]``: real operands of exactly the size of the
  uncoded blocks, and its real product holds both ``a_w b_w`` and ``a_w conj(b_w)``. These are
  two Vandermonde systems (exponents ``i + p l`` and ``i - p l``) on the same points, from which
  all four real sub-products follow. Same flops, storage and traffic as the real code.
* ``m > 1`` (MatDot, PolyDot): inner-dimension pairs form ``Z_A = A_2j + i A_2j+1`` and
  ``Z_B = B_2j - i B_2j+1``, so ``Re(sum_j Z_A Z_B) = C``. Tasks are complex: a worker's
  product costs 2x the real code's flops (four real GEMMs of half the inner size). No cheaper
  real-arithmetic embedding exists for inner splits: the conjugate trick above needs exponents
  ``e_A(j) + e_B(j)`` and ``e_A(j) - e_B(j)`` both constant in ``j``.

``"equispaced"`` and ``"chebyshev"``: real points in [-1, 1], real tasks, monomial basis: the
naive construction, kept as the baseline the benchmarks compare against.

Over GF(p) (``field=p``): points ``1..n``, exact integer arithmetic, Reed-Solomon decoding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from . import _gfp
from ._base import LinearCode
from ._validate import check_field, check_int, real_matrix, residues

__all__ = ["PolyDotCode", "MDSCode", "PolynomialCode", "MatDotCode", "CONSTRUCTIONS"]

CONSTRUCTIONS = ("circle", "equispaced", "chebyshev")


class PolyDotCode(LinearCode):
    """Generalized PolyDot / entangled polynomial code for ``C = A @ B``.

    Parameters
    ----------
    workers : int
        Number of workers ``n``.
    row_blocks, inner_blocks, col_blocks : int
        ``p``, ``m``, ``q``: A is split into ``p`` row blocks and ``m`` inner blocks, B into
        ``m`` inner blocks and ``q`` column blocks. Recovery threshold ``pmq + m - 1 <= n``.
    field : None or int
        ``None`` for the reals (float32/float64 inputs, decoding in float64) or a prime ``p``
        for exact arithmetic in GF(p) (integer inputs in ``[0, p)``).
    construction : {"circle", "equispaced", "chebyshev"}
        Evaluation points over the reals (see the module docstring); ignored over GF(p).

    Examples
    --------
    >>> import numpy as np
    >>> from codedml.codes import PolyDotCode
    >>> code = PolyDotCode(8, row_blocks=2, inner_blocks=2, col_blocks=1)
    >>> code.recovery_threshold
    5
    >>> A, B = np.arange(24.).reshape(4, 6), np.ones((6, 3))
    >>> tasks = code.encode(A, B)
    >>> results = {t.worker: t.compute() for t in tasks if t.worker not in (0, 3, 6)}
    >>> bool(np.allclose(code.decode(results, encoding=tasks), A @ B))
    True
    """

    def __init__(self, workers: int, row_blocks: int = 1, inner_blocks: int = 1,
                 col_blocks: int = 1, *, field: int | None = None,
                 construction: str = "circle") -> None:
        n = check_int("workers", workers, 1)
        p = check_int("row_blocks", row_blocks, 1)
        m = check_int("inner_blocks", inner_blocks, 1)
        q = check_int("col_blocks", col_blocks, 1)
        k = p * m * q + m - 1
        if k > n:
            raise ConfigurationError(
                f"recovery threshold row_blocks*inner_blocks*col_blocks + inner_blocks - 1 = "
                f"{p}*{m}*{q} + {m} - 1 = {k} must be at most workers={n}")
        if construction not in CONSTRUCTIONS:
            raise ConfigurationError(
                f"`construction` must be one of {CONSTRUCTIONS}, got {construction!r}")
        self.workers, self.p, self.m, self.q = n, p, m, q
        self.recovery_threshold = k
        self.field = check_field(field, n)
        self.construction = "exact" if self.field is not None else construction
        self._points = self._make_points()

    # ------------------------------------------------------------------ identity
    def _params(self) -> str:
        return f"row_blocks={self.p}, inner_blocks={self.m}, col_blocks={self.q}"

    def __repr__(self) -> str:
        extra = f"field={self.field}" if self.field is not None else f"construction={self.construction!r}"
        return f"{type(self).__name__}(workers={self.workers}, {self._params()}, {extra})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PolyDotCode) and
                (self.workers, self.p, self.m, self.q, self.field, self.construction) ==
                (other.workers, other.p, other.m, other.q, other.field, other.construction))

    def __hash__(self) -> int:
        return hash((self.workers, self.p, self.m, self.q, self.field, self.construction))

    @property
    def _packed(self) -> bool:
        return self.construction == "circle"

    def _make_points(self) -> np.ndarray:
        n = self.workers
        if self.field is not None:
            return np.arange(1, n + 1, dtype=np.int64)
        if self.construction == "circle":
            return np.exp(2j * np.pi * np.arange(n) / n)
        if self.construction == "equispaced":
            return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        return np.cos((2 * np.arange(n) + 1) * np.pi / (2 * n))

    def _gf_points(self) -> np.ndarray | None:
        return self._points if self.field is not None else None

    def _amplifies_worker_rounding(self) -> bool:
        return True

    def _worst_condition(self) -> float:
        """On the circle, the worst erasure pattern is a run of consecutive workers (it leaves
        the widest gap on the circle; ``tests/test_numerics.py`` checks this against exact
        enumeration for every code with n <= 14 and at n = 30, 31), and every run gives the
        same value: shifting the erased run by ``t`` multiplies each decoding matrix by a
        diagonal of roots of unity. So one subset, the workers left when the leading run
        ``0 .. n - k - 1`` is erased, gives the bound in one SVD per family. Other
        constructions sample (see :meth:`LinearCode._worst_condition`).
        """
        if self.field is None and self.construction == "circle":
            rows = np.arange(self.workers - self.recovery_threshold, self.workers)
            return max(float(np.linalg.cond(M)) for M in self._families(rows))
        return super()._worst_condition()   # GF(p): 1.0 (worst_case_condition says so)

    # ------------------------------------------------------------------ exponents
    def _exp_a(self) -> np.ndarray:
        """Exponent of block A_ij, shape (p, m)."""
        i, j = np.meshgrid(np.arange(self.p), np.arange(self.m), indexing="ij")
        return j + self.m * i

    def _exp_b(self) -> np.ndarray:
        """Exponent of block B_jl, shape (m, q)."""
        j, l = np.meshgrid(np.arange(self.m), np.arange(self.q), indexing="ij")
        return (self.m - 1 - j) + self.p * self.m * l

    def _wanted(self) -> np.ndarray:
        """Exponent carrying C_il, shape (p, q)."""
        i, l = np.meshgrid(np.arange(self.p), np.arange(self.q), indexing="ij")
        return self.m - 1 + self.m * i + self.p * self.m * l

    def _powers(self, exps: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Matrix x_w^e for workers ``rows`` (default all; rows) and exponents e (columns).

        On the circle the exponent is reduced exactly, ``x_w^e = exp(2 pi i (w e mod n) / n)``,
        so every entry is within an ulp of the true root of unity: complex ``**`` drifts by
        many ulps at large exponents, and the decoder must see the coefficients the encoder used.
        """
        e = np.asarray(exps).ravel()
        w = np.arange(self.workers) if rows is None else np.asarray(rows)
        if self.field is not None:
            return np.array([[pow(int(self._points[v]), int(t), self.field) for t in e] for v in w],
                            dtype=np.int64).reshape(len(w), len(e))
        if self.construction == "circle":
            n = self.workers
            return np.exp(2j * np.pi * ((w[:, None] * e[None, :]) % n) / n)
        return self._points[w][:, None] ** e[None, :]

    # ------------------------------------------------------------------ encode
    def _encode(self, A: Any, B: Any, precision: str = "auto"):
        if self.field is not None:
            A = residues("A", A, self.field)
            B = residues("B", B, self.field, allow_vector=True)
        else:
            A = real_matrix("A", A)
            B = real_matrix("B", B, allow_vector=True)
        if A.shape[1] != B.shape[0]:
            raise ConfigurationError(
                f"`A` and `B` must have matching inner dimensions, got A {A.shape} and B {B.shape}")
        if B.ndim == 1 and self.q > 1:
            raise ConfigurationError(
                f"`B` is a vector, which cannot be split into col_blocks={self.q} column blocks")
        M, N = A.shape
        K = B.shape[1] if B.ndim == 2 else None
        shape = (M, K) if K is not None else (M,)
        if self.field is not None:
            pairs, inner, dt = self._encode_exact(A, B)
            return pairs, shape, inner, dt
        dtype = self._operand_dtype(np.result_type(A.dtype, B.dtype), precision)
        if self.construction != "circle":
            pairs, inner = self._encode_plain(A.astype(np.float64), B.astype(np.float64), dtype)
        elif self.m == 1:
            pairs, inner = self._encode_outer(A.astype(np.float64), B.astype(np.float64), dtype)
        else:
            pairs, inner = self._encode_inner(A.astype(np.float64), B.astype(np.float64), dtype)
        return pairs, shape, inner, pairs[0][0].dtype

    def _split(self, A: np.ndarray, B: np.ndarray, row_mult: int, inner_mult: int, col_mult: int):
        """Zero-pad A's rows to a multiple of p*row_mult, the inner dimension to m*inner_mult and
        B's columns to q*col_mult (zero padding changes no product entry that is kept)."""
        p, m, q = self.p, self.m, self.q
        M, N = A.shape
        Mp = _ceil_to(M, p * row_mult)
        Np = _ceil_to(N, m * inner_mult)
        Ap = np.zeros((Mp, Np), dtype=A.dtype)
        Ap[:M, :N] = A
        if B.ndim == 1:
            Bp = np.zeros((Np,), dtype=B.dtype)
            Bp[:N] = B
        else:
            K = B.shape[1]
            Bp = np.zeros((Np, _ceil_to(K, q * col_mult)), dtype=B.dtype)
            Bp[:N, :K] = B
        return Ap, Bp

    def _encode_plain(self, A, B, dtype):
        """Real or exact PolyDot without packing: blocks combined with real powers x_w^e."""
        Ap, Bp = self._split(A, B, 1, 1, 1)
        p, m, q = self.p, self.m, self.q
        rb, nb = Ap.shape[0] // p, Ap.shape[1] // m
        Ab = Ap.reshape(p, rb, m, nb).transpose(0, 2, 1, 3).reshape(p * m, rb * nb)
        GA = self._powers(self._exp_a())
        a = (GA @ Ab).reshape(self.workers, rb, nb)
        if Bp.ndim == 1:
            Bb = Bp.reshape(m, nb)
            b = (self._powers(self._exp_b()) @ Bb)
        else:
            cb = Bp.shape[1] // q
            Bb = Bp.reshape(m, nb, q, cb).transpose(0, 2, 1, 3).reshape(m * q, nb * cb)
            b = (self._powers(self._exp_b()) @ Bb).reshape(self.workers, nb, cb)
        a = a.astype(dtype)
        b = b.astype(dtype)
        return [(a[w], b[w]) for w in range(self.workers)], nb

    def _encode_exact(self, A, B):
        P = self.field
        Ap, Bp = self._split(A, B, 1, 1, 1)
        p, m, q = self.p, self.m, self.q
        rb, nb = Ap.shape[0] // p, Ap.shape[1] // m
        Ab = Ap.reshape(p, rb, m, nb).transpose(0, 2, 1, 3).reshape(p * m, rb * nb)
        a = _gfp.matmul_mod(self._powers(self._exp_a()), Ab, P).reshape(self.workers, rb, nb)
        if m == 1 and q == 1:   # B is not split: every worker's b is B itself (x^0 = 1)
            return [(a[w], Bp) for w in range(self.workers)], nb, np.dtype(np.int64)
        if Bp.ndim == 1:
            b = _gfp.matmul_mod(self._powers(self._exp_b()), Bp.reshape(m, nb), P)
        else:
            cb = Bp.shape[1] // q
            Bb = Bp.reshape(m, nb, q, cb).transpose(0, 2, 1, 3).reshape(m * q, nb * cb)
            b = _gfp.matmul_mod(self._powers(self._exp_b()), Bb, P).reshape(self.workers, nb, cb)
        return [(a[w], b[w]) for w in range(self.workers)], nb, np.dtype(np.int64)

    def _encode_outer(self, A, B, dtype):
        """m = 1 on the circle: pack row halves of A blocks (and column halves of B blocks)."""
        p, q = self.p, self.q
        Ap, Bp = self._split(A, B, 2, 1, 2 if B.ndim == 2 and q > 1 else 1)
        rb = Ap.shape[0] // p
        h = rb // 2
        blocks = Ap.reshape(p, 2, h, -1)
        ZA = blocks[:, 0] + 1j * blocks[:, 1]                      # (p, h, N)
        GA = self._powers(np.arange(p))                            # exponent i (m = 1)
        a = (GA @ ZA.reshape(p, -1)).reshape((self.workers,) + ZA.shape[1:])
        ta = np.concatenate([a.real, a.imag], axis=1).astype(dtype)  # (n, rb, N)
        if q == 1:
            tb = Bp.astype(dtype)
            return [(ta[w], tb) for w in range(self.workers)], Ap.shape[1]
        cb = Bp.shape[1] // q
        hb = cb // 2
        bblocks = Bp.reshape(Bp.shape[0], q, 2, hb)
        ZB = bblocks[:, :, 0] + 1j * bblocks[:, :, 1]              # (N, q, hb)
        GB = self._powers(p * np.arange(q))
        b = (GB @ ZB.transpose(1, 0, 2).reshape(q, -1)).reshape(self.workers, ZB.shape[0], ZB.shape[2])
        tb = np.concatenate([b.real, b.imag], axis=2).astype(dtype)  # (n, N, cb)
        return [(ta[w], tb[w]) for w in range(self.workers)], Ap.shape[1]

    def _encode_inner(self, A, B, dtype):
        """m > 1 on the circle: pack inner-dimension pairs; complex tasks."""
        p, m, q = self.p, self.m, self.q
        Ap, Bp = self._split(A, B, 1, 2, 1)
        rb, nb = Ap.shape[0] // p, Ap.shape[1] // (2 * m)
        Ablk = Ap.reshape(p, rb, m, 2, nb)
        ZA = (Ablk[:, :, :, 0] + 1j * Ablk[:, :, :, 1]).transpose(0, 2, 1, 3)   # (p, m, rb, nb)
        a = (self._powers(self._exp_a()) @ ZA.reshape(p * m, rb * nb)).reshape(self.workers, rb, nb)
        cdt = np.complex64 if dtype == np.float32 else np.complex128
        if Bp.ndim == 1:
            Bblk = Bp.reshape(m, 2, nb)
            ZB = Bblk[:, 0] - 1j * Bblk[:, 1]                                   # (m, nb)
            b = self._powers(self._exp_b()) @ ZB
        else:
            cb = Bp.shape[1] // q
            Bblk = Bp.reshape(m, 2, nb, q, cb)
            ZB = (Bblk[:, 0] - 1j * Bblk[:, 1]).transpose(0, 2, 1, 3)           # (m, q, nb, cb)
            b = (self._powers(self._exp_b()) @ ZB.reshape(m * q, nb * cb)).reshape(self.workers, nb, cb)
        a, b = a.astype(cdt), b.astype(cdt)
        return [(a[w], b[w]) for w in range(self.workers)], nb

    # ------------------------------------------------------------------ decode hooks
    def _output_multiples(self, ndim: int) -> tuple[int, ...]:
        """Rows padded to p (p * 2 where row halves are packed: m = 1 on the circle), columns
        to q (q * 2 where column halves are packed: also q > 1); see :meth:`_split`."""
        pack = self._packed and self.m == 1
        rows = self.p * (2 if pack else 1)
        return (rows,) if ndim == 1 else (rows, self.q * (2 if pack and self.q > 1 else 1))

    def _families(self, rows: np.ndarray) -> list[np.ndarray]:
        if self._packed and self.m == 1:
            # Built from the very coefficients the encoder multiplied: a_w = sum_i Z_Ai cA[w,i],
            # b_w = sum_l Z_Bl cB[w,l], so a_w b_w has coefficient cA[w,i] cB[w,l] on Z_Ai Z_Bl
            # and a_w conj(b_w) has cA[w,i] conj(cB[w,l]) on Z_Ai conj(Z_Bl).
            cA = self._powers(np.arange(self.p), rows)
            if self.q == 1:
                return [cA]
            cB = self._powers(self.p * np.arange(self.q), rows)
            U = (cA[:, :, None] * cB[:, None, :]).reshape(len(rows), -1)
            V = (cA[:, :, None] * np.conj(cB)[:, None, :]).reshape(len(rows), -1)
            return [U, V]
        return [self._powers(np.arange(self.recovery_threshold), rows)]

    def _wanted_unknowns(self) -> list[np.ndarray | None]:
        if self._packed and self.m == 1:
            return [None, None] if self.q > 1 else [None]
        return [self._wanted().ravel()]  # only the coefficients that carry C (MatDot: 1 of 2m-1)

    def _unpack(self, R: np.ndarray) -> list[np.ndarray]:
        if not (self._packed and self.m == 1):
            return [R]
        h = R.shape[0] // 2
        if self.q == 1:
            return [R[:h] + 1j * R[h:]]
        hb = R.shape[1] // 2
        RR, RI, IR, II = R[:h, :hb], R[:h, hb:], R[h:, :hb], R[h:, hb:]
        return [(RR - II) + 1j * (RI + IR), (RR + II) + 1j * (IR - RI)]

    def _assemble(self, X: list[np.ndarray], shape: tuple[int, ...] | None) -> np.ndarray:
        p, q = self.p, self.q
        if self._packed and self.m == 1:
            # X[0] unknowns ordered (i, l) -> exponent i + p l; entries Z_Ai Z_Bl (or Z_Ai B)
            if q == 1:
                Z = X[0]                                             # (p, h, ...)
                top, bot = Z.real, Z.imag
                C = np.stack([top, bot], axis=1).reshape((-1,) + Z.shape[2:])
            else:
                U = X[0].reshape(p, q, *X[0].shape[1:])
                V = X[1].reshape(p, q, *X[1].shape[1:])
                a0b0 = (U + V).real / 2
                a1b1 = (V - U).real / 2
                a0b1 = (U - V).imag / 2
                a1b0 = (U + V).imag / 2
                top = np.concatenate([a0b0, a0b1], axis=-1)          # (p, q, h, cb)
                bot = np.concatenate([a1b0, a1b1], axis=-1)
                blk = np.concatenate([top, bot], axis=2)             # (p, q, rb, cb)
                C = blk.transpose(0, 2, 1, 3).reshape(p * blk.shape[2], q * blk.shape[3])
        else:
            Xs = X[0]  # the wanted coefficients, in the order of self._wanted().ravel()
            if self.field is None and np.iscomplexobj(Xs):
                Xs = Xs.real
            blk = Xs.reshape((p, q) + Xs.shape[1:])
            if blk.ndim == 3:                                        # vector B: (p, 1, rb)
                C = blk[:, 0].reshape(-1)
            else:
                C = blk.transpose(0, 2, 1, 3).reshape(p * blk.shape[2], q * blk.shape[3])
        if shape is not None:
            C = C[tuple(slice(0, s) for s in shape)]
        if self.field is not None:
            C = C.astype(np.int64)
        return np.ascontiguousarray(C)


class MDSCode(PolyDotCode):
    """Real or GF(p) MDS code for ``A @ B``: A split into ``k`` row blocks; threshold ``k``.

    Any ``k`` of the ``n`` results recover ``C``; ``r`` results correct ``floor((r-k)/2)``
    corrupt ones. The special case ``PolyDotCode(n, k, 1, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from codedml.codes import MDSCode
    >>> code = MDSCode(5, 3)
    >>> A, x = np.arange(12.).reshape(6, 2), np.ones(2)
    >>> tasks = code.encode(A, x)
    >>> out = code.decode({w: tasks[w].compute() for w in (0, 2, 4)}, encoding=tasks)
    >>> bool(np.allclose(out, A @ x))
    True
    """

    def __init__(self, workers: int, k: int, *, field: int | None = None,
                 construction: str = "circle") -> None:
        n = check_int("workers", workers, 1)
        k = check_int("k", k, 1, n, what=f"workers={n}")
        super().__init__(n, k, 1, 1, field=field, construction=construction)

    def _params(self) -> str:
        return f"k={self.p}"


class PolynomialCode(PolyDotCode):
    """Polynomial code (Yu, Maddah-Ali, Avestimehr 2017): A in row blocks, B in column blocks.

    Threshold ``row_blocks * col_blocks``; the special case ``PolyDotCode(n, p, 1, q)``.
    """

    def __init__(self, workers: int, row_blocks: int, col_blocks: int, *,
                 field: int | None = None, construction: str = "circle") -> None:
        super().__init__(workers, row_blocks, 1, col_blocks, field=field, construction=construction)

    def _params(self) -> str:
        return f"row_blocks={self.p}, col_blocks={self.q}"


class MatDotCode(PolyDotCode):
    """MatDot code (Dutta et al. 2019): the inner dimension split in ``m``; threshold ``2m - 1``.

    The special case ``PolyDotCode(n, 1, m, 1)``.
    """

    def __init__(self, workers: int, inner_blocks: int, *, field: int | None = None,
                 construction: str = "circle") -> None:
        super().__init__(workers, 1, inner_blocks, 1, field=field, construction=construction)

    def _params(self) -> str:
        return f"inner_blocks={self.m}"


def _ceil_to(x: int, d: int) -> int:
    return max(d, math.ceil(x / d) * d)
