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
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from . import _gfp
from . import _encode, _pool
from . import _base
from ._base import (COMPENSATE_MAX_CONDITION, DecodeInfo, LinearCode, _factors, _independent_rows, check_rtol,
                    _Packed, _Rows, _valid_results)
from ._encode import real_form
from ._validate import check_field, check_int, in_field, real_matrix, residues

_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
#: Input shapes per code whose small-encode plan (:meth:`PolyDotCode._small_plan`) is kept.
SMALL_PLANS = 16
#: Methods of the general encode that an instance may override (then it encodes generally).
_HOOKS = frozenset({"encode", "_encode", "_encode_outer", "_operand_dtype", "compensates",
                    "_compensates", "_outer_form", "_generator", "_powers", "_encode_exact",
                    "_gf_full", "_outer_full"})

#: What :meth:`PolyDotCode._gf_full` reads besides :data:`_HOOKS`: set on an instance, the
#: generator is built from them on every encode instead of kept.
_GF_HOOKS = frozenset({"_exp_a", "_exp_b", "_n_systematic"})


def _plan_table(code: Any, name: str) -> dict:
    """The code's table ``name`` of kept encode plans (made on first use)."""
    plans = code.__dict__.get(name)
    if plans is None:
        plans = code.__dict__.setdefault(name, {})
    return plans


def _keep_plan(plans: dict, key: Any, plan: Any) -> Any:
    """``plan`` kept under ``key`` (the table emptied first once it holds
    :data:`SMALL_PLANS`); returns it."""
    if len(plans) >= SMALL_PLANS:
        plans.clear()
    plans[key] = plan
    return plan


__all__ = ["PolyDotCode", "MDSCode", "PolynomialCode", "MatDotCode", "CONSTRUCTIONS"]

CONSTRUCTIONS = ("circle", "equispaced", "chebyshev")

#: Systematic MatDot is the default on the circle up to this worst-case condition number (MDS-
#: type codes: up to ``COMPENSATE_MAX_CONDITION``). It decodes ``C = sum_i p_C(alpha_i)`` with
#: one decoding vector that sums m Lagrange-weighted ones, a little less accurate than plain
#: MatDot's single coefficient: on the worst subset at n = 30, threshold 25 (cond 8.0e3) 1.04e-12
#: against 7.3e-13, past the 1e-12 promise; at n = 24, threshold 19 (cond 2.9e3) 4.2e-13 against
#: 3.4e-13. 5000 keeps it near 6.5e-13 (errors measured at about 1.3e-16 x cond).
SYSTEMATIC_MATDOT_MAX_CONDITION = 5000.0


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
    systematic : bool or None
        ``True``: workers ``0 .. s-1`` hold the plain data blocks (``s = row_blocks`` for
        MDS-type codes, ``inner_blocks`` for MatDot), so a fault-free job's decode is
        assembly; only MDS-type codes (``inner_blocks = col_blocks = 1``) and MatDot
        (``row_blocks = col_blocks = 1``) have this form (see ``docs/codes.md``). ``None``
        (default): systematic wherever the form exists and stays within the accuracy
        promise, i.e. over GF(p), and on the circle when the systematic code's worst-case
        condition number (:meth:`systematic_condition_bound`) is at most
        ``COMPENSATE_MAX_CONDITION`` (3e4) for MDS-type codes, up to which
        ``precision="auto"`` keeps float64 decodes within 1e-12, and
        :data:`SYSTEMATIC_MATDOT_MAX_CONDITION` (5000) for MatDot (measured:
        ``benchmarks/systematic.py``, ``docs/codes.md``); otherwise plain. The naive real
        constructions stay plain (baselines).

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
                 construction: str = "circle", systematic: bool | None = None) -> None:
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
        if systematic is not None and not isinstance(systematic, (bool, np.bool_)):
            raise ConfigurationError(
                f"`systematic` must be True, False or None (the default: systematic where it "
                f"stays accurate), got {systematic!r}")
        if systematic and not self._has_systematic_form():
            raise ConfigurationError(_NO_SYSTEMATIC.format(p=p, m=m, q=q))
        if systematic is None:
            limit = COMPENSATE_MAX_CONDITION if m == 1 else SYSTEMATIC_MATDOT_MAX_CONDITION
            systematic = self._has_systematic_form() and (
                self.field is not None or (self.construction == "circle" and
                                           self.systematic_condition_bound() <= limit))
        self.systematic = bool(systematic)
        self._points = self._make_points()
        self._order = self._point_order()

    def _has_systematic_form(self) -> bool:
        """MDS-type (m = q = 1) and MatDot (p = q = 1) codes; see ``_NO_SYSTEMATIC``."""
        return self.q == 1 and (self.m == 1 or self.p == 1)

    def systematic_condition_bound(self) -> float:
        """Worst-case condition number of this code's *systematic* form over the reals (the
        code need not be systematic; ``inf`` where no systematic form exists, 1.0 over GF(p)).

        MDS-type codes decode with ``G_T = V_T V_S^{-1}`` for the results ``T`` that arrived
        and the systematic points ``S``, so ``cond(G_T) <= cond(V_T) cond(V_S)``: the plain
        code's worst case times ``cond(V_S)``. On the circle the plain worst case is exact (a
        run of erasures) and the product is at most 1.6x the exhaustive worst case for every
        k at n <= 16 (the most at k near n/2) and equal to it at n = 31, k = 29 and 26
        (9.3e3 x 2.81 = 2.6e4; ``benchmarks/systematic.py``). Two SVDs, so cheap enough for
        the constructor's default; :meth:`condition_bound` of a systematic circle code is
        this bound (conservative: float32 operands switch to float64 and compensation starts
        at most that much earlier).
        Other constructions: the exhaustive or sampled worst case of the systematic code.
        Systematic MatDot decodes the product polynomial's monomial coefficients from any
        ``2m - 1`` results, exactly as plain MatDot: the same bound.

        Examples
        --------
        >>> from codedml.codes import MDSCode
        >>> code = MDSCode(8, 4, systematic=False)   # systematic points 0, 2, 4, 6: cond(V_S) = 1
        >>> round(code.systematic_condition_bound() / code.condition_bound(), 6)
        1.0
        """
        if self.field is not None:
            return 1.0
        if not self._has_systematic_form():
            return math.inf
        if getattr(self, "systematic", None) is True and self.construction != "circle":
            return self.condition_bound()
        twin_kw = {"construction": self.construction}
        plain = PolyDotCode(self.workers, self.p, self.m, self.q, systematic=False, **twin_kw)
        if self.m > 1 or self.p in (0, self.workers):
            return plain.condition_bound()
        if self.construction != "circle":
            return PolyDotCode(self.workers, self.p, self.m, self.q, systematic=True,
                               **twin_kw).condition_bound()
        order = _spread_order(self.workers, self.p)
        n = self.workers
        VS = np.exp(2j * np.pi * ((order[:self.p, None] * np.arange(self.p)[None, :]) % n) / n)
        return plain.condition_bound() * float(np.linalg.cond(VS))

    # ------------------------------------------------------------------ identity
    def _params(self) -> str:
        return f"row_blocks={self.p}, inner_blocks={self.m}, col_blocks={self.q}"

    def __repr__(self) -> str:
        extra = f"field={self.field}" if self.field is not None else f"construction={self.construction!r}"
        if self._has_systematic_form():  # explicit both ways: the default depends on n, k
            extra += f", systematic={self.systematic}"
        return f"{type(self).__name__}(workers={self.workers}, {self._params()}, {extra})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PolyDotCode) and
                (self.workers, self.p, self.m, self.q, self.field, self.construction,
                 self.systematic) ==
                (other.workers, other.p, other.m, other.q, other.field, other.construction,
                 other.systematic))

    def __hash__(self) -> int:
        return hash((self.workers, self.p, self.m, self.q, self.field, self.construction,
                     self.systematic))

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

    def _point_order(self) -> np.ndarray:
        """Point index of each worker: the identity, except for systematic codes over the
        reals, whose systematic workers ``0 .. s-1`` get ``s`` evenly spread points (s = k for
        MDS-type codes, m for MatDot) when they are the fewer, else the parity workers do: a
        spread set keeps ``V_S`` and the Lagrange basis on it well conditioned."""
        if not self.systematic or self.field is not None:
            return np.arange(self.workers)
        return _spread_order(self.workers, self._n_systematic())

    def _n_systematic(self) -> int:
        """How many workers hold plain data: k = p (MDS-type) or m (MatDot); 0 if not systematic."""
        if not getattr(self, "systematic", False):
            return 0
        return self.p if self.m == 1 else self.m

    @property
    def systematic_workers(self) -> tuple[int, ...]:
        """See :attr:`LinearCode.systematic_workers`: workers ``0 .. s-1`` of a systematic
        code (``s = k`` for MDS-type codes, ``m`` for MatDot, whose ``m`` plain products
        sum to ``C``)."""
        return tuple(range(self._n_systematic()))

    def _gf_points(self) -> np.ndarray | None:
        return self._points[self._order] if self.field is not None else None

    def _generator(self) -> np.ndarray:
        """Systematic codes: per worker, the coefficients of the data blocks in its encoded
        operand, ``G = V V_S^{-1}`` (n x s) for the Vandermonde ``V`` of exponents ``0 .. s-1``
        at the workers' points and its rows ``V_S`` at the ``s`` systematic workers: the
        Lagrange basis on the systematic points, so ``G_S = I`` exactly (set, not computed).
        MDS-type codes encode A with it (a worker's result is ``G[w] @ [A_i b]``); systematic
        MatDot encodes both A and B with it (Dutta et al.: ``p_A(x) = sum_i A_i L_i(x)``)."""
        G = self.__dict__.get("_G")
        if G is None:
            s = self._n_systematic()
            V = self._powers(np.arange(s))
            if self.field is not None:
                G = _gfp.solve_mod(V[:s].T % self.field, V.T % self.field, self.field).T.copy()
                G[:s] = np.eye(s, dtype=np.int64)
            else:
                G = np.linalg.solve(V[:s].T, V.T).T
                if self.construction != "circle":
                    G = G.real
                G[:s] = np.eye(s)
            G = np.ascontiguousarray(G)
            self.__dict__["_G"] = G
        return G

    def _amplifies_worker_rounding(self) -> bool:
        return True

    #: Real inputs are checked for NaN/Inf through the tasks' norms (see LinearCode.encode):
    #: every entry of A and B enters some task with a nonzero coefficient.
    _finite_from_norms = True

    def _worst_condition(self) -> float:
        """On the circle, the worst erasure pattern is a run of consecutive workers (it leaves
        the widest gap on the circle; ``tests/test_numerics.py`` checks this against exact
        enumeration for every code with n <= 14 and at n = 30, 31), and every run gives the
        same value: shifting the erased run by ``t`` multiplies each decoding matrix by a
        diagonal of roots of unity. So one subset, the workers left when the leading run
        ``0 .. n - k - 1`` is erased, gives the bound in one SVD per family. Other
        constructions sample (see :meth:`LinearCode._worst_condition`).
        """
        if self.field is None and self.construction == "circle" and not (self.systematic and self.m == 1):
            # the run of points n - k .. n - 1 (worker order may be permuted: systematic MatDot
            # has monomial families at the same point set, so the same bound)
            pts = np.arange(self.workers - self.recovery_threshold, self.workers)
            rows = np.sort(np.argsort(self._order)[pts])
            return max(float(np.linalg.cond(M)) for M in self._families(rows))
        if self.field is None and self.systematic and self.construction == "circle":
            return self.systematic_condition_bound()   # an upper bound, see there
        if self.field is None and self.systematic:
            return _systematic_worst(self)
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
        if rows is None:   # every worker's: kept per exponent list (an encode asks each time)
            memo = self.__dict__.setdefault("_powers_memo", {})
            key = (e.dtype.str, e.tobytes())
            got = memo.get(key)
            if got is None:
                got = self._powers_of(e, self._order)
                got.setflags(write=False)
                if len(memo) >= 16:   # a few exponent lists per code; bounded all the same
                    memo.clear()
                memo[key] = got
            return got
        return self._powers_of(e, self._order[np.asarray(rows, dtype=int)])

    def _powers_of(self, e: np.ndarray, w: np.ndarray) -> np.ndarray:
        """:meth:`_powers` for flat exponents ``e`` and the points of workers ``w``."""
        if self.field is not None:
            return np.array([[pow(int(self._points[v]), int(t), self.field) for t in e] for v in w],
                            dtype=np.int64).reshape(len(w), len(e))
        if self.construction == "circle":
            n = self.workers
            return np.exp(2j * np.pi * ((w[:, None] * e[None, :]) % n) / n)
        return self._points[w][:, None] ** e[None, :]

    # ------------------------------------------------------------------ encode
    def encode(self, A: Any, B: Any, *, precision: str = "auto") -> _base.Encoding:
        """See :meth:`LinearCode.encode`. A small float64 product of an MDS-type code on the
        circle (at most :data:`~._encode.TINY_BYTES` of tasks, the size of a control-plane
        job or a small layer's step) takes :meth:`_encode_small`: the same tasks, without
        the general path's per-call derivations."""
        if (type(A) is np.ndarray and type(B) is np.ndarray and type(precision) is str
                and not _HOOKS.intersection(self.__dict__)):
            plan = self._small_plan(A, B, precision)
            if (plan is not None and plan[-1] <= _encode.TINY_BYTES and A.dtype == _F64
                    and B.dtype == _F64):
                return self._encode_small(A, B, plan)
            # (over GF(p) the runs plan keeps the generator _gf_full kept: hooks that
            # _gf_full reads, set on the instance, send the encode the general way)
            if (A.flags.c_contiguous and B.flags.c_contiguous and _encode._lincomb_ok()
                    and not (self.field is not None and _GF_HOOKS.intersection(self.__dict__))):
                runs = self._runs_plan(A, B, precision)
                # real tasks up to TINY_BYTES take tiny() (the limit read on every encode, as
                # the small path reads it, so a changed one is never outlived by a kept plan)
                if runs is not None and (runs[0] or runs[-1] > _encode.TINY_BYTES):
                    enc = self._encode_runs(A, B, runs)
                    if enc is not None:
                        return enc
        return super().encode(A, B, precision=precision)

    def _small_plan(self, A: np.ndarray, B: np.ndarray, precision: str) -> tuple | None:
        """What :meth:`_encode_small` needs for float64 inputs of these shapes under
        ``precision``, kept per code (at most :data:`SMALL_PLANS` shapes); None where the
        general path encodes (another code or field, a subclass of the library's codes,
        compensated or float32 operands, an empty product, inputs the general path refuses
        by name). Its last entry is the size that decides (the tasks' bytes, or B's),
        compared with :data:`~._encode.TINY_BYTES` on every encode. The key holds the
        compensation thresholds too (:meth:`LinearCode.compensates` reads them)."""
        key = (A.shape, B.shape, precision, _base.COMPENSATE_MIN_CONDITION,
               _base.COMPENSATE_MAX_CONDITION)
        plans = _plan_table(self, "_small_plans")
        try:
            return plans[key]
        except KeyError:
            pass
        plan = None
        # (the library's own classes only: a subclass may override a hook of the general
        # path, e.g. the operand dtype, that this path does not ask; encode() looks for
        # such an override on the instance)
        if (type(self).__module__ == __name__ and self.field is None and self.construction == "circle" and self.m == 1 and self.q == 1
                and precision in ("auto", "float64") and A.ndim == 2 and B.ndim in (1, 2)
                and A.size and B.size and A.shape[1] == B.shape[0]
                and not self.compensates(_F64, _F64, precision)):
            n, p = self.workers, self.p
            M, N = A.shape
            h = _ceil_to(M, 2 * p) // (2 * p)
            shape = (M, B.shape[1]) if B.ndim == 2 else (M,)
            G = self._outer_form()
            nsys = 2 * p if self.systematic else 0
            # whether _kernels.small_encode runs it (small_into's plain C loop: a float64
            # generator, few enough multiply-adds)
            fused = (G.dtype == _F64 and G.flags.c_contiguous
                     and (2 * n - nsys) * G.shape[1] * h * N <= _encode.SMALL_ROWS_MACS)
            plan = (n, h, N, 2 * p * h, 2 * p, G, nsys, fused, shape,
                    max(n * 2 * h * N * 8, B.nbytes))
        return _keep_plan(plans, key, plan)

    def _encode_small(self, A: np.ndarray, B: np.ndarray, plan: tuple) -> _base.Encoding:
        """The encode of :meth:`_encode_outer` for a small float64 product (``plan``: from
        :meth:`_small_plan`): the same tasks, bitwise (:func:`~._encode.small_into`, which
        the general path's :func:`~._encode.tiny` calls too: data half-blocks copied, parity
        rows against the generator's cached real form), and the same noise scales up to the
        rounding of their sums of squares."""
        n, h, N, rows, k, G, nsys, fused, shape, _ = plan
        ta = _pool.empty_small((n, 2 * h, N), n * 2 * h * N * 8, A)
        tb = _pool.empty_small(B.shape, B.nbytes, B)
        # (no warnings: NaN/Inf inputs are refused by name after, from the scales; a C-ordered
        # A is read as it is, its missing rows, the padding, as zeros)
        src = A if A.flags.c_contiguous else _encode.small_source(A, rows, k)
        K = _encode._K
        if fused and K is not None and B.flags.c_contiguous:
            # the rows, B's copy and the scales in one compiled call: the numbers of the
            # three steps below, bit for bit
            scales = K.small_encode(G, src, ta.reshape(2 * n, h * N), nsys, 2, B, tb)
        else:
            sq = np.zeros(n)   # each task's sum of squares (its two half-blocks')
            _encode.small_into(G, src, ta.reshape(2 * n, h * N), nsys, sq, 2)
            sa = sq.tolist()
            # The scales in Python floats: an overflow gives inf, and inf * 0 NaN, without a
            # warning, as numpy's do under errstate.
            if B.flags.c_contiguous and K is not None:
                sb = K.copy_sq(tb, B)         # B's copy and its sum of squares
            else:
                np.copyto(tb, B)
                flat = tb.reshape(-1)
                with np.errstate(invalid="ignore", over="ignore"):
                    sb = float(flat @ flat)
            rb = math.sqrt(sb)
            scales = [math.sqrt(x) * rb for x in sa]
        # (its Task objects built where asked for)
        enc = _base.Encoding._of_stack(self, shape, N, _F64, scales, ta, tb)
        # (the scales looked at as Python floats: the check of _checked_scales, which takes
        # them again, or names a NaN/Inf input, only where one may be wrong)
        return self._checked_scales(enc, A, B) if _base._redo(scales) else enc

    def _runs_plan(self, A: np.ndarray, B: np.ndarray, precision: str) -> tuple | None:
        """What :meth:`_encode_runs` needs for C-ordered inputs of these shapes and dtypes
        under ``precision``, kept per code (at most :data:`SMALL_PLANS` keys); None where the
        general path encodes: another code (``inner_blocks`` or ``col_blocks`` above 1, the
        naive real constructions, a subclass of the library's codes), inputs of mixed or other
        dtypes, real operands of another dtype than the inputs or compensated ones, an
        empty product, inputs the general path refuses by name, or a generator whose GF(p)
        sums are not exact in float64. Its last entry is the real tasks' bytes, compared
        with :data:`~._encode.TINY_BYTES` on every encode (at most that, :func:`~._encode.tiny`
        encodes them; 0 over GF(p), which has no such path). Over GF(p) it is asked only
        without an instance hook of :data:`_GF_HOOKS` (:meth:`encode` sees to it): the plan
        keeps :meth:`_gf_full`'s generator."""
        key = (A.shape, B.shape, A.dtype, B.dtype, precision, _base.COMPENSATE_MIN_CONDITION,
               _base.COMPENSATE_MAX_CONDITION, _base.FLOAT32_MAX_CONDITION)
        plans = _plan_table(self, "_runs_plans")
        try:
            return plans[key]
        except KeyError:
            pass
        plan = None
        P = self.field
        if (type(self).__module__ == __name__ and self.m == 1 and self.q == 1
                and precision in _base.PRECISIONS and A.ndim == 2 and B.ndim in (1, 2)
                and A.size and B.size and A.shape[1] == B.shape[0] and A.dtype == B.dtype):
            n, p = self.workers, self.p
            M, N = A.shape
            shape = (M, B.shape[1]) if B.ndim == 2 else (M,)
            if P is not None:
                if A.dtype == np.int64 and p * (P - 1) ** 2 <= 2 ** 52:
                    rb = _ceil_to(M, p) // p
                    plan = (True, n, rb, N, self._gf_full("a"), _I64, shape, 0)
            elif (self.construction == "circle" and A.dtype in _encode._REAL
                    and self._operand_dtype(A.dtype, precision) == A.dtype
                    and not self.compensates(A.dtype, A.dtype, precision)):
                h = _ceil_to(M, 2 * p) // (2 * p)
                plan = (False, n, h, N, self._outer_full(self._outer_form()), A.dtype, shape,
                        2 * n * h * N * A.dtype.itemsize)
        return _keep_plan(plans, key, plan)

    def _encode_runs(self, A: np.ndarray, B: np.ndarray, plan: tuple) -> _base.Encoding | None:
        """The encode of :meth:`_encode_outer` (real) or :meth:`_encode_exact` (GF(p)) for a
        code with ``inner_blocks = col_blocks = 1`` and C-ordered inputs (``plan``: from
        :meth:`_runs_plan`): A's blocks as runs of its rows through one compiled call
        (:func:`~._encode.combine_runs`), B copied once, the same tasks and scales, bit for
        bit, without the general path's per-call derivations; the Task objects are built
        where asked for (:attr:`~._base.Encoding._stack`). From cold caches, as a job meets
        them, those derivations cost about a tenth of a systematic MDS(17, 15) encode at
        1024 x 1024 (0.10-0.16 ms of 0.9-1.4 ms, side by side). None where the kernel
        declined (the general path then encodes)."""
        exact, n, h, N, G, dt, shape, _ = plan
        if exact:   # GF(p): h is the rows of a block
            P = self.field
            reduce = _encode.ModP(P, "A", A)
            ta = _pool.empty((n, h, N), dt, A)
            if not _encode.combine_runs(G, A, h, ta.reshape(n, h * N), post=reduce):
                return None
            reduce.check()   # (a no-op: the kernel read every entry)
            tb = _pool.empty(B.shape, dt, B)
            _encode.copy_residues(B, tb, P, "B")
            return _base.Encoding._of_stack(self, shape, N, dt, None, ta, tb)
        # real: h is the rows of a half-block; each task's two half-blocks are two runs
        ta = _pool.empty((n, 2 * h, N), dt, A)
        sa = np.zeros(2 * n)
        if not _encode.combine_runs(G, A, h, ta.reshape(2 * n, h * N), sa):
            return None
        tb = _pool.empty(B.shape, dt, B)
        sb = _encode.copy_rows(B, tb)
        # the general path's scales, bit for bit: sqrt(sa0 + sa1) * sqrt(sb) per task, in
        # Python floats (an overflow gives inf, and inf * 0 NaN, without a warning)
        s = sa.tolist()
        rb = math.sqrt(sb)
        scales = [math.sqrt(s[2 * w] + s[2 * w + 1]) * rb for w in range(n)]
        enc = _base.Encoding._of_stack(self, shape, N, dt, scales, ta, tb)
        return self._checked_scales(enc, A, B) if _base._redo(scales) else enc

    def _encode(self, A: Any, B: Any, precision: str = "auto"):
        if self.field is not None:
            # the range of the entries: checked by _encode_exact, in its copies where it can
            A = residues("A", A, self.field, check_range=False)
            B = residues("B", B, self.field, allow_vector=True, check_range=False)
        else:
            # finiteness: checked after the encode, on the tasks' norms (LinearCode.encode),
            # which saves a pass over A and B
            A = real_matrix("A", A, finite=False)
            B = real_matrix("B", B, allow_vector=True, finite=False)
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
        # The kernels read A and B where they lie (views; no float64 or padded copies) and
        # write each task once (see codedml/codes/_encode.py).
        # The tasks' norms (the decoder's noise scales) are taken on each chunk as it is
        # written, while it is in cache.
        if self.construction != "circle":
            pairs, inner, sa, sb = self._encode_plain(A, B, dtype)
        elif self.m == 1:
            pairs, inner, sa, sb = self._encode_outer(A, B, dtype)
        else:
            pairs, inner, sa, sb = self._encode_inner(A, B, dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs: refused by name
            scales = np.sqrt(sa) * np.sqrt(sb)
        return pairs, shape, inner, pairs[0][0].dtype, scales

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
        """Real PolyDot without packing: blocks combined with real powers x_w^e."""
        p, m, q, n = self.p, self.m, self.q, self.workers
        M, N = A.shape
        rb, nb = _ceil_to(M, p) // p, _ceil_to(N, m) // m
        a = _pool.empty((n, rb, nb), dtype=dtype, near=A)
        s = self._n_systematic()
        GA = (self._generator() if s else self._powers(self._exp_a())).real
        sa = np.zeros(n)
        _encode.combine(GA[s:] if s else GA, _grid(A, p, m, rb, nb), a, nsys=s, sq=sa)
        b, sb = self._encode_b_side(B, nb, dtype, real=True)
        return list(zip(a, b)), nb, sa, sb

    def _encode_b_side(self, B, nb, dtype, real):
        """B's tasks for the unpacked layout (plain construction, or m > 1 on the circle, where
        pairs of inner blocks are packed as ``B_2j - i B_2j+1``): per worker ``(nb, cb)`` (or
        ``(nb,)`` for a vector B); one shared copy of B when B is not encoded (m = q = 1).
        Also returns the tasks' sums of squares (one per worker, or one shared)."""
        m, q, n = self.m, self.q, self.workers
        s = self._n_systematic() if m > 1 else 0
        if m == 1 and q == 1:
            tb = _pool.empty((nb,) + B.shape[1:], dtype=dtype, near=B)
            return [tb] * n, _encode.copy_rows(B, tb)
        vec = B.ndim == 1
        B2 = B[:, None] if vec else B
        K = B2.shape[1]
        cb = _ceil_to(K, q) // q
        if real:
            blocks = _grid(B2, m, q, nb, cb)
            G = (self._generator() if s else self._powers(self._exp_b())).real
        else:
            blocks = _packed_rows(B2, m, q, nb, cb)
            G = self._generator() if s else self._powers(self._exp_b())
        out = _pool.empty((n, nb, cb), dtype=dtype, near=B)
        sb = np.zeros(n)
        _encode.combine(G[s:] if s else G, blocks, out, nsys=s, sq=sb)
        return ([t[:, 0] for t in out] if vec else list(out)), sb

    def _coded(self, G: np.ndarray, D: np.ndarray, mul: Any, shape: tuple[int, ...],
               dtype: Any, side: str = "a") -> list[np.ndarray]:
        """GF(p) encode (the real paths use :func:`~codedml.codes._encode.combine`): per worker,
        ``(G @ D)[w]`` reshaped to ``shape`` in ``dtype``. Systematic codes
        replace ``G`` by :meth:`_generator` on the side(s) it encodes and compute only the
        parity rows: the systematic workers' operands are the data blocks themselves (views
        where the dtype matches). An MDS-type code leaves B as it is (one block: ``G`` is a
        column of ones), so every worker shares it."""
        n = self.workers
        s = self._n_systematic()
        if s and (side == "a" or self.m > 1):
            par = mul(self._generator()[s:], D)
            return ([D[w].reshape(shape).astype(dtype, copy=False) for w in range(s)] +
                    [par[w].reshape(shape).astype(dtype, copy=False) for w in range(n - s)])
        if D.shape[0] == 1 and side == "b" and self.m == 1 and self.q == 1:
            shared = D[0].reshape(shape).astype(dtype, copy=False)
            return [shared] * n
        X = mul(G, D)
        return [X[w].reshape(shape).astype(dtype, copy=False) for w in range(n)]

    def _encode_exact(self, A, B):
        """GF(p): the same kernel as the reals where float64 GEMMs are exact (every product
        and partial sum of ``k`` terms at most ``2^52``: ``k (p - 1)^2 <= 2^52``), each chunk
        turned into int64 in place and reduced mod p in cache; else
        :func:`~codedml.codes._gfp.matmul_mod` on stacked blocks."""
        P = self.field
        p, m, q, n = self.p, self.m, self.q, self.workers
        if max(p * m, m * q) * (P - 1) ** 2 <= 2 ** 52:
            M, N = A.shape
            rb, nb = _ceil_to(M, p) // p, _ceil_to(N, m) // m
            s = self._n_systematic()
            # the products reduced into the tasks (compiled where built, else numpy); each
            # ModP also owns its operand's range check, made in the copy where it can be
            reduce = _encode.ModP(P, "A", A)
            a = _pool.empty((n, rb, nb), dtype=np.int64, near=A)
            GA = self._gf_full("a")
            # m = 1: A's blocks are runs of its rows (C-ordered), each task one run: the
            # whole generator (identity rows included) in one call, no per-block views
            if not (m == 1 and _encode.combine_runs(GA, A, rb, a.reshape(n, rb * nb),
                                                     post=reduce)):
                _encode.combine(GA[s:] if s else GA, _grid(A, p, m, rb, nb), a, nsys=s,
                                post=reduce)
            reduce.check()   # a no-op where the copies covered A
            if m == 1 and q == 1:
                tb = _pool.empty((nb,) + B.shape[1:], dtype=np.int64, near=B)
                _encode.copy_residues(B, tb, P, "B")
                return [(a[w], tb) for w in range(n)], nb, np.dtype(np.int64)
            sb = self._n_systematic() if m > 1 else 0
            vec = B.ndim == 1
            B2 = B[:, None] if vec else B
            cb = _ceil_to(B2.shape[1], q) // q
            GB = self._gf_full("b")
            b = _pool.empty((n, nb, cb), dtype=np.int64, near=B)
            reduce = _encode.ModP(P, "B", B2)
            _encode.combine(GB[sb:] if sb else GB, _grid(B2, m, q, nb, cb), b, nsys=sb, post=reduce)
            reduce.check()
            bl = [t[:, 0] for t in b] if vec else list(b)
            return list(zip(a, bl)), nb, np.dtype(np.int64)
        return self._encode_exact_stacked(A, B)

    def _encode_exact_stacked(self, A, B):
        P = self.field
        in_field("A", A, P)
        in_field("B", B, P)
        Ap, Bp = self._split(A, B, 1, 1, 1)
        p, m, q = self.p, self.m, self.q
        rb, nb = Ap.shape[0] // p, Ap.shape[1] // m
        Ab = Ap.reshape(p, rb, m, nb).transpose(0, 2, 1, 3).reshape(p * m, rb * nb)
        mul = lambda G, D: _gfp.matmul_mod(G, D, P)  # noqa: E731
        a = self._coded(self._powers(self._exp_a()), Ab, mul, (rb, nb), np.int64)
        if Bp.ndim == 1:
            b = self._coded(self._powers(self._exp_b()), Bp.reshape(m, nb), mul, (nb,), np.int64, "b")
        else:
            cb = Bp.shape[1] // q
            Bb = Bp.reshape(m, nb, q, cb).transpose(0, 2, 1, 3).reshape(m * q, nb * cb)
            b = self._coded(self._powers(self._exp_b()), Bb, mul, (nb, cb), np.int64, "b")
        return list(zip(a, b)), nb, np.dtype(np.int64)

    def _encode_outer(self, A, B, dtype):
        """m = 1 on the circle: pack row halves of A blocks (and column halves of B blocks).

        In real form: the ``2p`` half-blocks of A (rows ``r h .. (r+1) h``, ``h = rows / 2p``,
        in order ``Re Z_0, Im Z_0, Re Z_1, ...``) against :func:`~._encode.real_form` of the
        complex generator give ``[Re a_w; Im a_w]``, the tasks' own layout: a C-ordered float64
        A is read in place and the float64 tasks are written by the GEMM itself. Systematic:
        the first ``p`` tasks are A's blocks, copied once; only the parity rows are computed.
        """
        p, q, n = self.p, self.q, self.workers
        M, N = A.shape
        h = _ceil_to(M, 2 * p) // (2 * p)
        ta = _pool.empty((n, 2 * h, N), dtype=dtype, near=A)
        sa = np.zeros(2 * n)
        G = self._outer_form()
        nsys = 2 * p if self.systematic else 0
        runs = ta.reshape(2 * n, h * N)   # each task one row (its half-blocks' values)
        if (not _encode.tiny(G, A, runs, nsys, 2 * p * h, sa)
                and not _encode.combine_runs(self._outer_full(G), A, h, runs, sa)):
            halves = [A[r * h:min((r + 1) * h, M)] for r in range(2 * p)]
            _encode.combine(G, halves, ta.reshape(2 * n, h, N), nsys=nsys, sq=sa)
        sa = sa.reshape(n, 2).sum(axis=1)
        if B.ndim == 1 or q == 1:
            tb = _pool.empty(B.shape, dtype=dtype, near=B)
            return [(ta[w], tb) for w in range(n)], N, sa, _encode.copy_rows(B, tb)
        K = B.shape[1]
        hb = _ceil_to(K, 2 * q) // (2 * q)
        tb = _pool.empty((n, N, 2 * hb), dtype=dtype, near=B)
        halves_b = [B[:, r * hb:min((r + 1) * hb, K)] for r in range(2 * q)]
        # output (w, c) is tb[w, :, c*hb:(c+1)*hb]: lead axes (n, 2) of a strided view
        view = tb.reshape(n, N, 2, hb).transpose(0, 2, 1, 3)
        sb = np.zeros(2 * n)
        _encode.combine(real_form(self._powers(p * np.arange(q))), halves_b, view, lead=2, sq=sb)
        return [(ta[w], tb[w]) for w in range(n)], N, sa, sb.reshape(n, 2).sum(axis=1)

    def _gf_full(self, side: str) -> np.ndarray:
        """Over GF(p), ``side`` ``"a"``'s or ``"b"``'s generator as float64 integers in
        ``[0, p)``, C-ordered: :meth:`_generator` where that side is systematic (its identity
        rows included: what :func:`~._encode.combine_runs` multiplies A's blocks by; the
        general path takes the rows past them), else the powers of that side's exponents;
        built once per code (read-only) for the library's own classes."""
        own = (type(self).__module__ == __name__
               and not (_HOOKS | _GF_HOOKS).intersection(self.__dict__))
        key = "_G_gf_" + side
        G = self.__dict__.get(key) if own else None
        if G is None:
            sys_ = self._n_systematic() if side == "a" or self.m > 1 else 0
            src = (self._generator() if sys_ else
                   self._powers(self._exp_a() if side == "a" else self._exp_b()))
            G = np.ascontiguousarray(np.asarray(src) % self.field, dtype=np.float64)
            G.setflags(write=False)
            if own:   # (a subclass's or an instance's own hooks: their rows every time)
                self.__dict__[key] = G
        return G

    def _outer_form(self) -> np.ndarray:
        """The real form of what :meth:`_encode_outer` multiplies the half-blocks by (its
        parity rows where systematic; exponents ``0 .. p-1`` otherwise), built once per code
        (read-only)."""
        G = self.__dict__.get("_G_outer")
        if G is None:
            src = self._generator()[self.p:] if self.systematic else self._powers(np.arange(self.p))
            G = np.ascontiguousarray(real_form(src))
            G.setflags(write=False)
            self.__dict__["_G_outer"] = G
        return G

    def _outer_full(self, G: np.ndarray) -> np.ndarray:
        """``G`` (what :meth:`_outer_form` gave) with a systematic code's identity rows
        above it (the data half-blocks copied as they are), float64 and C-ordered, for
        :func:`~._encode.combine_runs`. Kept per code only for the library's own read-only
        form (``_G_outer``): an overriding ``_outer_form`` (a subclass's, or one set on the
        instance after an encode) gets its own generator's rows every time."""
        own = G is self.__dict__.get("_G_outer")
        if own:
            full = self.__dict__.get("_G_outer_full")
            if full is not None:
                return full
        full = np.ascontiguousarray(G, dtype=np.float64)
        if self.systematic:
            full = np.ascontiguousarray(np.vstack([np.eye(full.shape[1]), full]))
        if own:
            full.setflags(write=False)
            self.__dict__["_G_outer_full"] = full
        return full

    def _encode_inner(self, A, B, dtype):
        """m > 1 on the circle: pack inner-dimension pairs ``A_i,2j + i A_i,2j+1``; complex tasks."""
        p, m, n = self.p, self.m, self.workers
        M, N = A.shape
        rb, nb = _ceil_to(M, p) // p, _ceil_to(N, 2 * m) // (2 * m)
        cdt = np.dtype(np.complex64 if dtype == np.float32 else np.complex128)
        a = _pool.empty((n, rb, nb), dtype=cdt, near=A)
        s = self._n_systematic()
        GA = self._generator() if s else self._powers(self._exp_a())
        blocks = [(re, im, 1.0) for re, im in _pairs(_grid(A, p, 2 * m, rb, nb))]
        sa = np.zeros(n)
        _encode.combine(GA[s:] if s else GA, blocks, a, nsys=s, sq=sa)
        b, sb = self._encode_b_side(B, nb, cdt, real=False)
        return list(zip(a, b)), nb, sa, sb

    # ------------------------------------------------------------------ decode hooks
    def _output_multiples(self, ndim: int) -> tuple[int, ...]:
        """Rows padded to p (p * 2 where row halves are packed: m = 1 on the circle), columns
        to q (q * 2 where column halves are packed: also q > 1); see :meth:`_split`."""
        pack = self._packed and self.m == 1
        rows = self.p * (2 if pack else 1)
        return (rows,) if ndim == 1 else (rows, self.q * (2 if pack and self.q > 1 else 1))

    def _families(self, rows: np.ndarray) -> list[np.ndarray]:
        if self.systematic and self.m == 1:
            # unknowns: the k data blocks (complex Z_i when packed); worker w's result is
            # G[w] @ [Z_i b]: unit rows for the systematic workers
            return [self._generator()[np.asarray(rows, dtype=int)]]
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

    def _recovers(self, rows: np.ndarray) -> bool:
        # systematic MatDot: the m systematic workers' products sum to C on their own
        if self.systematic and self.m > 1 and np.isin(np.arange(self.m), rows).all():
            return True
        return len(rows) >= self.recovery_threshold

    def _decided_by_count(self) -> bool:
        # the count decides but for systematic MatDot (its m data workers suffice alone)
        return (type(self)._recovers is PolyDotCode._recovers and "_recovers" not in self.__dict__
                and not (self.systematic and self.m > 1))

    def _recovers_bound(self) -> int:
        if self.systematic and self.m > 1:
            return min(self.m, self.recovery_threshold)
        return self.recovery_threshold

    def _sum_functional(self) -> np.ndarray:
        """Systematic MatDot: ``c`` with ``c^T coef = sum_i p_C(alpha_i) = C`` for the
        monomial coefficients ``coef`` of the product polynomial (``c_t = sum_i alpha_i^t``)."""
        return self._powers(np.arange(self.recovery_threshold), np.arange(self.m)).sum(axis=0)

    def _solve_family(self, M: np.ndarray, E: Any, want: np.ndarray | None,
                      workers: np.ndarray) -> np.ndarray:
        """Systematic codes: assembly when every systematic result is kept; otherwise a solve
        for the missing data blocks only (MDS-type: ``P_miss X_miss = R_par - P_present
        X_present`` from the parity results, about s/k of a full decode for s missing) or one
        decoding vector for the sum (MatDot: as costly as the plain MatDot decode)."""
        if not self.systematic:
            return self._solve_real(M, E, want)
        s = self._n_systematic()
        workers = np.asarray(workers)
        sys_pos = np.flatnonzero(workers < s)
        if self.m > 1:
            if len(sys_pos) == s:  # assembly: the sum of the m systematic products
                out = np.array(E[int(sys_pos[0])], dtype=np.result_type(E.dtype, np.float64))
                for i in sys_pos[1:]:
                    out += E[int(i)]
                return out[None]
            return _base._lstsq(M, E, functional=self._sum_functional()[:, None])
        block = E.shape[1:]
        dt = np.result_type(M.dtype, E.dtype, np.float64)
        X = np.empty((s,) + block, dtype=dt)
        present = workers[sys_pos]
        for i, w in zip(sys_pos, present):
            X[int(w)] = E[int(i)]
        missing = np.setdiff1d(np.arange(s), present)
        if len(missing):
            par = np.flatnonzero(workers >= s)
            Mp = M[par]
            rhs = E[par].stack().reshape(len(par), -1).astype(dt, copy=True)
            if len(present):
                rhs -= Mp[:, present] @ X[present].reshape(len(present), -1)
            X[missing] = _base._lstsq(Mp[:, missing], rhs).reshape((len(missing),) + block)
        return X

    def _solve_exact(self, keep: np.ndarray, E: list[np.ndarray], Ms: list[np.ndarray],
                     rows: np.ndarray) -> list[np.ndarray]:
        """GF(p) counterpart of :meth:`_solve_family`; every spare kept result is still
        checked exactly against the solution."""
        if not self.systematic:
            return super()._solve_exact(keep, E, Ms, rows)
        from ..errors import CorruptResultError
        P = self.field
        s = self._n_systematic()
        Ef = E[0]
        block = Ef.shape[1:]
        workers = rows[keep]
        sys_pos = np.flatnonzero(workers < s)
        if self.m > 1:
            if len(sys_pos) == s and len(keep) < self.recovery_threshold + 1:
                out = np.zeros(Ef[0].reshape(-1).shape, dtype=np.int64)
                for i in sys_pos:
                    out = (out + Ef[keep[i]].reshape(-1)) % P
                return [out.reshape((1,) + block)]
            coef = super()._solve_exact(keep, E, Ms, rows)[0]
            c = (self._sum_functional() % P).reshape(1, -1)
            return [_gfp.matmul_mod(c, coef.reshape(coef.shape[0], -1), P).reshape((1,) + block)]
        M = Ms[0] % P
        X = np.zeros((s, int(np.prod(block, dtype=np.int64))), dtype=np.int64)
        present = workers[sys_pos]
        X[present] = Ef[keep[sys_pos]].reshape(len(sys_pos), X.shape[1])
        missing = np.setdiff1d(np.arange(s), present)
        par = np.flatnonzero(workers >= s)
        used: list[int] = []
        if len(missing):
            Mp = M[keep[par]]
            rhs = Ef[keep[par]].reshape(len(par), -1) % P
            if len(present):
                rhs = (rhs - _gfp.matmul_mod(Mp[:, present], X[present], P)) % P
            A = Mp[:, missing]
            base = _independent_rows(A, P)
            X[missing] = _gfp.solve_mod(A[base], rhs[base], P)
            used = [int(par[j]) for j in base]
        spare = [int(j) for j in par if int(j) not in set(used)]
        if spare:
            pred = _gfp.matmul_mod(M[keep[spare]], X, P)
            actual = Ef[keep[spare]].reshape(len(spare), -1)
            wrong = [int(workers[spare[j]]) for j in np.flatnonzero((pred != actual).any(axis=1))]
            if wrong:
                raise CorruptResultError(
                    f"results are inconsistent beyond what was corrected (suspects: workers {wrong})",
                    suspects=wrong)
        return [X.reshape((s,) + block)]

    def decode(self, results, errors: int = 0, *, encoding=None, shape=None, rtol=None,
               return_faulty: bool = False, return_info: bool = False):
        """See :meth:`LinearCode.decode`. A systematic MDS-type code over the reals decodes
        in place from its packed results: with spare results, the general path's consistency
        check (random projections, taken on the packed real and imaginary halves, so no
        complex copy of any result) picks the results to keep and locates corrupt ones; the
        kept systematic results are copied into ``C`` as they are, and the ``s`` missing
        blocks are solved for from the kept parity results (``P_miss X_miss = R_par -
        P_present X_present``, BLAS on the packed halves). Every systematic result kept: one
        copy, bitwise what the general path assembles. Over GF(p) the same holds for exactly
        ``k`` results. A non-finite result among spare ones is erased by the check (as on
        the general path) and the rest decode here. Anything else (spare results over GF(p),
        a non-finite or out-of-range value among exactly ``k``, complex results or results
        without packed halves given with spare ones, a bad argument) takes the general
        path. A small decode from exactly ``k`` float64 results with ``encoding=`` (a
        runtime job's) takes :meth:`_decode_small` first: the same result in fewer steps."""
        small = None
        if shape is None and rtol is None:
            small = self._decode_small(results, errors, encoding)
            if small:
                C, info = small
                return self._finish_fast(C, info, _F64, encoding, None, return_faulty,
                                         return_info)
        check_rtol(rtol)
        # (False: a result not finite, which the general path answers)
        fast = None if small is False else self._systematic_fast_path(results, errors,
                                                                        encoding, rtol)
        if fast is None:
            return super().decode(results, errors, encoding=encoding, shape=shape, rtol=rtol,
                                  return_faulty=return_faulty, return_info=return_info)
        rows, C, cond, faulty, checked, rdtype = fast
        info = DecodeInfo(tuple(faulty), tuple(np.asarray(rows).tolist()), cond, checked)
        return self._finish_fast(C, info, rdtype, encoding, shape, return_faulty, return_info)

    def _decode_small(self, results: Any, errors: Any, encoding: Any
                      ) -> "tuple[np.ndarray, DecodeInfo] | None":
        """``(C, info)`` (C padded, as the fast path's) for what the runtime asks of a small
        job's decode, in few Python
        steps: exactly ``k`` float64 results (a dict of plain int keys to C-ordered arrays of
        one shape, at most :data:`SMALL_DECODE_BYTES` in all) of a systematic MDS-type code
        over the reals (the library's own classes), with its ``encoding``; the same
        assembly, bits and info as
        :meth:`_systematic_fast_path` (the ``k`` data results one after the other, or the
        compiled one-pass solve). None wherever anything else holds (the fast path or the
        general path then decodes, or names what is wrong); False where a result is not
        finite (the general path's answer, as the fast path would give it)."""
        k = self.p
        if (type(results) is not dict or len(results) != k or type(errors) is not int
                or type(encoding) is not _base.Encoding or not self._small_decodes()
                or not 0 <= errors <= self.workers):
            return None
        n = self.workers
        for w in results:
            if type(w) is not int or not 0 <= w < n:
                return None
        rows = sorted(results)
        raw = [results[w] for w in rows]
        r0 = raw[0]
        shp = r0.shape
        K = _encode._K
        for r in raw:
            # (with the kernels, dtype and layout are checked by the copy, below)
            if type(r) is not np.ndarray or r.shape != shp or (
                    K is None and (r.dtype != _F64 or not r.flags.c_contiguous)):
                return None
        if not shp or r0.nbytes * k > SMALL_DECODE_BYTES:
            return None
        try:
            _base._check_against(encoding, rows, raw, real=True)
        except ConfigurationError:
            return None   # (named by the general path)
        return self._small_rows(rows, raw, shp, r0.nbytes)

    def _small_decodes(self) -> bool:
        """Whether this code is one :meth:`_decode_small` and :meth:`_decode_landed` decode
        for: systematic, MDS-type (one inner and one column block), over the reals, of the
        library's own classes (a subclass may override a step they skip)."""
        return (self.systematic and type(self).__module__ == __name__ and self.field is None
                and self.m == 1 and self.q == 1)

    def _decode_landed(self, land: np.ndarray, rows: list[int], encoding: Any
                       ) -> "tuple[np.ndarray, DecodeInfo] | None":
        """``decode(results, encoding=encoding, return_info=True)`` for the ``k`` results
        (workers ``rows``, sorted) that a runtime job's poll landed: ``land[w]`` is worker
        ``w``'s, in a float64 C-ordered slot of the tasks' product shape that the engine
        matched each result to (``ClusterBase._landing``). :meth:`_decode_small`'s steps
        without its checks of arbitrary results, so the same bits and info; None wherever
        it would not decode them, and where :meth:`decode` or :meth:`_decode_small` was
        replaced on the class or the instance (the caller then asks :meth:`decode`, which
        names what is wrong, or runs the replacement)."""
        k = self.p
        cls, d = type(self), self.__dict__
        if (len(rows) != k or type(encoding) is not _base.Encoding or not self._small_decodes()
                # (a decode set on the class or the instance, a wrapper or a timer, is asked)
                or cls.decode is not _DECODE or cls._decode_small is not _DECODE_SMALL
                or "decode" in d or "_decode_small" in d
                or land.dtype != _F64 or land.ndim < 2 or not land.flags.c_contiguous):
            return None
        r0 = land[rows[0]]
        if r0.nbytes * k > SMALL_DECODE_BYTES:
            return None
        small = self._small_rows(rows, [land[w] for w in rows], r0.shape, r0.nbytes)
        if not small:
            return None
        C, info = small
        if C.shape == encoding.shape:   # (no padding: _finish_fast's first case)
            return C, info
        return self._finish_fast(C, info, _F64, encoding, None, False, True)

    def _small_rows(self, rows: list[int], raw: list[np.ndarray], shp: tuple[int, ...],
                    nbytes: int) -> "tuple[np.ndarray, DecodeInfo] | bool | None":
        """:meth:`_decode_small`'s decode of ``raw`` (the results of workers ``rows``, sorted,
        each of shape ``shp`` and ``nbytes``), once its checks passed: ``(C, info)``, None
        where the general path decodes, False where a value is not finite."""
        k = self.p
        K = _encode._K
        C = _pool.empty_small((k * shp[0],) + shp[1:], nbytes * k)
        if rows[-1] == k - 1:                  # the k data results: one after the other
            if K is not None:   # the copy and its sum of squares (the NaN/Inf look) in one call
                try:
                    sq = K.cat_sq(C, raw)
                except (TypeError, ValueError, BufferError):
                    # a result not float64, not C-ordered, or one numpy exports no buffer of
                    # (datetime64): the general path names it
                    return None
            else:
                np.concatenate(raw, axis=0, out=C)
                sq = math.nan
            cond = 1.0
        else:
            plan = self._assembly_plan(rows)
            if plan.GF is None or not _encode._lincomb_ok():
                return None
            rs = np.zeros(2 * k)   # C's sums of squares, from the kernel (the NaN/Inf look)
            C2 = C.reshape(2 * k, -1)
            # the sources' halves as the rows of one stacked copy (one call, where a view per
            # half cost more than the arithmetic), made here where a result that is not
            # float64 or not C-ordered declines before the solve
            stacked = np.empty((2 * len(plan.sources), C2.shape[1]))
            try:
                K.cat_sq(stacked, [raw[j] for j in plan.sources], False)
            except (TypeError, ValueError, BufferError):   # (as above)
                return None
            _solve_missing_into(plan, raw, C2, rs, stacked)
            sq = sum(rs.tolist())   # (Python floats: an overflow gives inf, not an error)
            cond = plan.cond
        # (finite sums of squares: every value finite; an infinite one may be a finite value
        # whose square overflowed, so C is looked at)
        if not math.isfinite(sq) and not np.isfinite(C).all():
            return False
        return C, DecodeInfo._of((), tuple(rows), cond, False)   # (C cut by _finish_fast)

    def _check_rows(self, raw, E):
        # one family of complex blocks top + 1j bot packed as [top; bot] in each real result:
        # the check projects the halves where they lie (the same numbers, no unpacked copy
        # read again), which the compiled pass serves (_base._project_sq). Complex results
        # (no worker of a real code sends them) and results of an odd number of rows (no
        # halves) are projected as unpacked, as before
        if (self._packed and self.m == 1 and self.q == 1 and len(E) == 1
                and _Packed.takes(raw)):
            return [_Packed(raw)]
        return E

    def _systematic_fast_path(self, results: Any, errors: Any, encoding: Any = None,
                              rtol: Any = None):
        """``(rows, C, cond, faulty, checked, result dtype)`` for finite (in-range) results of a systematic
        MDS-type code (over GF(p): exactly ``k`` of them), else None (the general path)."""
        if not (self.systematic and self.m == 1 and self.q == 1):
            return None
        k, P = self.p, self.field
        try:
            have = len(results) if hasattr(results, "keys") else -1
        except TypeError:     # (not a Mapping: the general path names it)
            return None
        if have < k or (P is not None and have != k):
            return None
        try:
            errors = check_int("errors", errors, 0, self.workers)
            # (keys that are not worker indices, or one index twice: refused here, named by
            # the general path)
            rows, raw = self._check_results(results, encoding)
        except ConfigurationError:
            return None
        if len(rows) < k:   # (1 and np.int64(1) would be one key twice: refused above)
            return None
        if len(rows) == k and P is None and all(r.dtype.kind == "f" for r in raw):
            # exactly k real results: C holds every one of them (a copy, or for a parity
            # result the solve it enters with a nonzero coefficient), so NaN/Inf are looked
            # for on C itself (one pass, not two); a product that overflowed goes to the
            # general path too
            C = None
            if rows[-1] == k - 1:
                # the k data results (workers 0 .. k-1): C is their blocks one after the other
                C = _pool.empty_small((k * raw[0].shape[0],) + raw[0].shape[1:],
                                      raw[0].size * k * 8)
                sq = _copy_blocks(C.reshape(k, -1), raw, squares=True)
                if sq is None:
                    np.concatenate(raw, axis=0, out=C)
                elif math.isfinite(sq):       # every value finite: no second look at C
                    return rows, C, 1.0, [], False, raw[0].dtype
                cond = 1.0
            else:
                plan = self._assembly_plan(rows)
                if plan.GF is not None and _encode._lincomb_ok():
                    # the compiled one-pass solve (numpy's products, which the other solves
                    # use, would warn on NaN/Inf first: those check the results before)
                    C, cond = self._systematic_assemble(rows, raw, plan)
            if C is not None:
                return (rows, C, cond, [], False, raw[0].dtype) if np.isfinite(C).all() else None
        if len(rows) == k and not _valid_results(raw, P):
            return None
        if len(rows) > k and not _Packed.takes(raw) and self._packed:
            return None   # complex results, or no halves to pack: the general path's answer
        # (spare results: one that is not finite is erased by the check below, as the
        # general path's check does)
        faulty: list[int] = []
        checked = False
        if len(rows) > k:
            # spare results: the general path's check on projections of the packed halves
            E = [_Packed(raw)] if self._packed else [_Rows(raw)]
            with np.errstate(over="ignore", invalid="ignore"):
                keep, bad, checked = self._locate_real(rows, raw, E, self._families(rows),
                                                       errors, encoding, rtol)
            faulty = [int(rows[i]) for i in bad]
            rows, raw = rows[keep], [raw[int(i)] for i in keep]
        C, cond = self._systematic_assemble(rows, raw)
        return rows, C, cond, faulty, checked, raw[0].dtype

    def _systematic_assemble(self, rows: np.ndarray, raw: list[np.ndarray],
                             plan: "_AssemblyPlan | None" = None):
        """``(C, cond)`` from consistent results ``raw`` of workers ``rows`` (fast path;
        ``plan``: the subset's :meth:`_assembly_plan`, where the caller has it)."""
        k, P = self.p, self.field
        dt = np.int64 if P is not None else np.float64
        rb = raw[0].shape[0]
        # reused memory where large (no first-touch page faults: _pool), as the tasks'
        shape = (k * rb,) + raw[0].shape[1:]
        C = (_pool.empty_small(shape, raw[0].size * k * 8) if P is None
             else _pool.empty(shape, dtype=dt))
        Cb = C.reshape(k, -1)                                  # block i: rows i*rb .. (i+1)*rb
        if plan is None:
            plan = self._assembly_plan(rows)
        if plan.GF is not None and _encode._lincomb_ok():   # (GF: real codes only)
            # the whole assembly in one pass of the compiled kernel: the present blocks
            # copied as their halves load, the missing ones from the same loads
            _solve_missing_into(plan, raw, Cb.reshape(2 * k, Cb.shape[1] // 2))
            return C, plan.cond
        present = plan.present
        # (streamed only where nothing reads C next: a solve for missing blocks does)
        blocks = [raw[j] for j, _ in present]
        if _copy_blocks(Cb, blocks, False, [w for _, w in present],
                        stream=not plan.missing) is None:
            if not plan.missing and all(x.dtype == dt for x in blocks):
                # every data block, in order (rows sorted): one concatenation (small results)
                np.concatenate(blocks, axis=0, out=C)
            else:
                for j, w in present:
                    Cb[w] = np.asarray(raw[j], dtype=dt).reshape(-1)
        if not plan.par:
            return C, 1.0
        missing, par = plan.missing, plan.par
        if not missing:  # every systematic result kept; the parity ones only checked them
            return C, plan.cond
        Cb[missing] = 0                                        # so Gp @ Cb sums the present
        if P is None and self._packed and plan.RF is not None:
            # in real form: block i's halves are rows 2i, 2i + 1 of C2 (Re z_i, Im z_i), a
            # parity result's its rows (Re y, Im y); the right-hand side formed in the
            # product's own memory (each parity result subtracted into its rows, no stacked
            # copy of them), then Q^H and R^{-1} of the missing columns' QR as real forms,
            # the same products the complex solve forms
            L = Cb.shape[1] // 2
            C2 = Cb.reshape(2 * k, L)
            rhs = np.matmul(plan.RF, C2, out=_pool.empty((2 * len(par), L), dtype=dt))
            for i, j in enumerate(par):
                np.subtract(np.asarray(raw[j], dtype=dt).reshape(2, L), rhs[2 * i:2 * i + 2],
                            out=rhs[2 * i:2 * i + 2])
            C2[plan.miss2] = _solve_missing(plan, rhs)
            return C, plan.cond
        Rp = np.stack([np.asarray(raw[j], dtype=dt).reshape(-1) for j in par])
        if P is not None:
            rhs = (Rp - _gfp.matmul_mod(plan.Gp % P, Cb, P)) % P
            Cb[missing] = _gfp.solve_mod(plan.Gp[:, missing] % P, rhs, P)
            return C, plan.cond
        if not self._packed:
            rhs = Rp - plan.Gr @ Cb
            Cb[missing] = _solve_missing(plan, rhs).real
            return C, plan.cond
        # packed: a result is [Re y; Im y] with y = sum_i G[w, i] z_i, z_i = top_i + 1j bot_i
        h = Cb.shape[1] // 2
        top, bot = Cb[:, :h], Cb[:, h:]                        # row-strided views, no copy
        Gr, Gi = plan.Gr, plan.Gi
        rhs = (Rp[:, :h] - Gr @ top + Gi @ bot) + 1j * (Rp[:, h:] - Gi @ top - Gr @ bot)
        X = _solve_missing(plan, rhs)
        Cb[missing, :h] = X.real
        Cb[missing, h:] = X.imag
        return C, plan.cond

    def _assembly_plan(self, rows: np.ndarray) -> "_AssemblyPlan":
        """What :meth:`_systematic_assemble` needs for the worker subset ``rows`` (sorted),
        computed once per subset and kept per code (at most :data:`ASSEMBLY_PLANS` subsets,
        the least recently used dropped first): a job stream decodes from the same few subsets again and
        again, and for small products this bookkeeping (the subset's parity rows of the
        generator, their real and imaginary parts, the factors of the missing blocks'
        columns, the condition number) cost more than the arithmetic."""
        # (a tuple of Python ints: from a list, as a small job's decode has its rows, in a
        # tenth of the time of an array's bytes)
        key = tuple(rows) if type(rows) is list else tuple(np.asarray(rows).tolist())
        d = self.__dict__
        last = d.get("_plan_last")   # (the last subset asked: a stream's next is often it)
        if last is not None and last[0] == key:
            return last[1]
        plans = d.get("_plans")
        if plans is None:
            plans = d.setdefault("_plans", OrderedDict())
        with _PLANS_LOCK:
            hit = plans.get(key)
            if hit is not None:
                plans.move_to_end(key)                         # least recently used out first
        if hit is None:
            hit = _AssemblyPlan(self, np.asarray(rows, dtype=int))
            with _PLANS_LOCK:
                plans[key] = hit
                while len(plans) > ASSEMBLY_PLANS:
                    plans.popitem(last=False)
        d["_plan_last"] = (key, hit)   # (one tuple, written whole: no lock)
        return hit

    def _wanted_unknowns(self) -> list[np.ndarray | None]:
        if self.systematic and self.m > 1:
            return [np.zeros(1, dtype=int)]  # the one sum, solved directly
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
                # explicit row count: numpy cannot infer -1 beside a 0 (B without columns)
                C = np.stack([top, bot], axis=1).reshape((2 * p * Z.shape[1],) + Z.shape[2:])
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


#: PolyDotCode's own decode steps, as defined: :meth:`PolyDotCode._decode_landed` runs only
#: where the class's are these (not a replacement set on the class or a subclass since)
_DECODE, _DECODE_SMALL = PolyDotCode.decode, PolyDotCode._decode_small


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
                 construction: str = "circle", systematic: bool | None = None) -> None:
        n = check_int("workers", workers, 1)
        k = check_int("k", k, 1, n, what=f"workers={n}")
        super().__init__(n, k, 1, 1, field=field, construction=construction,
                         systematic=systematic)

    def _params(self) -> str:
        return f"k={self.p}"


class PolynomialCode(PolyDotCode):
    """Polynomial code (Yu, Maddah-Ali, Avestimehr 2017): A in row blocks, B in column blocks.

    Threshold ``row_blocks * col_blocks``; the special case ``PolyDotCode(n, p, 1, q)``.
    """

    def __init__(self, workers: int, row_blocks: int, col_blocks: int, *,
                 field: int | None = None, construction: str = "circle",
                 systematic: bool | None = None) -> None:
        super().__init__(workers, row_blocks, 1, col_blocks, field=field,
                         construction=construction, systematic=systematic)

    def _params(self) -> str:
        return f"row_blocks={self.p}, col_blocks={self.q}"


class MatDotCode(PolyDotCode):
    """MatDot code (Dutta et al. 2019): the inner dimension split in ``m``; threshold ``2m - 1``.

    The special case ``PolyDotCode(n, 1, m, 1)``.
    """

    def __init__(self, workers: int, inner_blocks: int, *, field: int | None = None,
                 construction: str = "circle", systematic: bool | None = None) -> None:
        super().__init__(workers, 1, inner_blocks, 1, field=field, construction=construction,
                         systematic=systematic)

    def _params(self) -> str:
        return f"inner_blocks={self.m}"


_NO_SYSTEMATIC = (
    "`systematic=True` needs an MDS-type code (inner_blocks=1, col_blocks=1) or MatDot "
    "(row_blocks=1, col_blocks=1), got row_blocks={p}, inner_blocks={m}, col_blocks={q}. "
    "With col_blocks > 1 a worker's product a_w b_w has rank-one coefficients alpha_w (x) beta_w "
    "on the blocks A_i B_l, so a systematic worker must hold one plain A_i and one plain B_l and "
    "each parity row must make every square minor against the missing unit rows nonsingular; "
    "the polynomial code's parity rows x^(i + p l) on the circle do not (n=16, p=q=2: two "
    "opposite points and the missing blocks C_00, C_01 give equal rows), and no construction "
    "with that guarantee and bounded conditioning is built. PolyDot with inner_blocks > 1 and "
    "row_blocks*col_blocks > 1 has no known systematic form (Dutta et al. give it for MatDot only)")


def _spread_order(n: int, s: int) -> np.ndarray:
    """Point index of each worker of a systematic code over the reals: the ``s`` systematic
    workers ``0 .. s-1`` get ``s`` evenly spread points when they are the fewer, else the
    parity workers do (a spread set keeps ``V_S`` and the Lagrange basis on it well
    conditioned)."""
    if s in (0, n):
        return np.arange(n)
    few = min(s, n - s)
    spread = sorted({int(math.floor(i * n / few)) for i in range(few)})
    rest = [i for i in range(n) if i not in set(spread)]
    return np.array(spread + rest if s <= n - s else rest + spread)


def _systematic_worst(code: PolyDotCode) -> float:
    """Worst condition number of a real systematic MDS-type code: every k-subset when there
    are at most 5000, else the erasures of each cyclic run of adjacent *points* (worker
    order is permuted) plus random subsets up to 5000 (a sampled lower bound)."""
    import itertools

    from .numerics import _conds

    n, k = code.workers, code.recovery_threshold
    if math.comb(n, k) <= 5000:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=int)
    else:
        worker_of = np.argsort(code._order)
        runs = [sorted(set(range(n)) - {int(worker_of[(a + t) % n]) for t in range(n - k)})
                for a in range(n)]
        rng = np.random.default_rng(0)
        rand = [np.sort(rng.choice(n, k, replace=False)) for _ in range(5000 - n)]
        subsets = np.array(runs + [list(r) for r in rand], dtype=int)
    return float(_conds(code, subsets, k).max())


def _grid(X: np.ndarray, rows: int, cols: int, rb: int, cb: int) -> list[np.ndarray]:
    """The ``rows x cols`` grid of ``rb x cb`` blocks of ``X`` zero-padded, as views of ``X`` in
    row-major block order (a block cut short by the padding is a smaller view, possibly empty)."""
    R, C = X.shape
    return [X[i * rb:min((i + 1) * rb, R), j * cb:min((j + 1) * cb, C)]
            for i in range(rows) for j in range(cols)]


def _pairs(grid: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive blocks of a grid whose column count is even, as (real, imaginary) pairs."""
    return list(zip(grid[0::2], grid[1::2]))


def _packed_rows(B: np.ndarray, m: int, q: int, nb: int, cb: int) -> list[tuple]:
    """B's inner pairs packed ``B_2j,l - i B_2j+1,l`` for the m x q block grid, in order (j, l)."""
    g = _grid(B, 2 * m, q, nb, cb)                     # rows 2j, 2j+1 of block row j
    return [(g[(2 * j) * q + l], g[(2 * j + 1) * q + l], -1.0) for j in range(m) for l in range(q)]


def _ceil_to(x: int, d: int) -> int:
    return max(d, math.ceil(x / d) * d)


#: Worker subsets whose assembly plan a systematic code keeps (see
#: :meth:`PolyDotCode._assembly_plan`); beyond it the least recently used is dropped.
ASSEMBLY_PLANS = 64
#: The most bytes of results :meth:`PolyDotCode._decode_small` takes (a control-plane job's
#: or a small layer's step); larger decodes take the fast path, whose compiled copies stream.
SMALL_DECODE_BYTES = 64 * 1024

#: Whether a packed (circle) systematic assembly solves for its missing blocks in real form
#: (:func:`_solve_missing`) where the system is well conditioned; False: always the complex
#: solve of :func:`~codedml.codes._base._lstsq` (the tests compare the two). Read when a
#: subset's plan is built: plans a code already holds keep the choice they were built with.
REAL_FORM_SOLVE = True
_PLANS_LOCK = threading.Lock()


#: From this many bytes of C (the encode's ``STREAM_BYTES``, 2 MiB) a systematic assembly
#: copies its data blocks by the compiled loop (``_encode.fast_copy``: streamed past the
#: caches, the blocks' sums of squares taken in the same pass where NaN/Inf is looked for);
#: smaller ones by numpy, in fewer calls (side by side at 256 x 256, 512 KiB, the compiled
#: copy without streaming gained nothing: 0.98-1.05x).
COPY_BLOCKS_MIN = _encode.STREAM_BYTES


def _copy_blocks(Cb: np.ndarray, blocks: list[np.ndarray], squares: bool,
                 at: list[int] | None = None, stream: bool = True) -> float | None:
    """``Cb[at[i]] = blocks[i]`` (``at``: 0, 1, ... by default) by the compiled copy, each
    block a whole row of ``Cb`` (the product's blocks as rows), with streamed stores where
    ``stream`` (C is read back at once otherwise: a solve for missing blocks reads it);
    returns the sum of the blocks' sums of squares (0.0 without ``squares``: not formed), or
    None, with nothing written, where that loop does not apply (not built, ``Cb`` under
    :data:`COPY_BLOCKS_MIN`, a block not float64 or not contiguous): the caller copies with
    numpy. Measured on the AMD EPYC: a 4-block assembly 0.63-0.72x ``np.concatenate``'s
    time at 512-4096, its sums of squares included; the decode from the k data results of
    MDS(6, 4) 0.33x and 0.45x at 1024 and 2048 (no second pass over C for NaN/Inf)."""
    if (_encode._K is None or Cb.dtype != _F64 or Cb.nbytes < COPY_BLOCKS_MIN
            or any(b.dtype != _F64 or not b.flags.c_contiguous or b.size != Cb.shape[1]
                   for b in blocks)):
        return None
    stream = stream and Cb.nbytes >= _encode.STREAM_BYTES
    total = 0.0
    for i, b in enumerate(blocks):
        row = Cb[i if at is None else at[i]]
        got = _encode.fast_copy(row, b.reshape(-1), stream, squares=squares)
        if got is None:  # (the checks above leave it nothing to decline; numpy's copy if it does)
            row[...] = b.reshape(-1)
            got = math.nan if squares else 0.0   # NaN: the caller looks at C itself
        total += got
    return total


class _AssemblyPlan:
    """The per-subset constants of a systematic assembly (read-only once built)."""

    __slots__ = ("present", "par", "sources", "missing", "cond", "Gp", "Gr", "Gi", "Gm", "F", "RF", "RQh",
                 "RRinv", "miss2", "GF")

    def __init__(self, code: "PolyDotCode", rows: np.ndarray) -> None:
        k, P = code.p, code.field
        self.present = [(j, int(w)) for j, w in enumerate(rows) if w < k]
        self.par = [j for j, w in enumerate(rows) if w >= k]
        # the results in the order _solve_missing_into hands their halves to the kernel
        self.sources = self.par + [j for j, _ in self.present]
        self.missing = sorted(set(range(k)) - {w for _, w in self.present})
        self.cond = 1.0
        self.Gp = self.Gr = self.Gi = self.Gm = self.F = self.RF = self.RQh = self.RRinv = None
        self.GF = None
        if not self.par:
            return
        G = code._generator()
        if P is None:
            self.cond = _factors(G[rows]).cond                 # cached per subset (LRU)
        if not self.missing:
            return
        self.Gp = G[rows[self.par]]                            # s x k, parity rows
        if P is not None:
            return
        if not code._packed:
            self.Gr = self.Gp.real
            self.Gm = self.Gp[:, self.missing].real
        else:
            self.Gr, self.Gi = self.Gp.real.copy(), self.Gp.imag.copy()
            self.Gm = self.Gp[:, self.missing]
        self.F = _factors(self.Gm)
        if (REAL_FORM_SOLVE and code._packed and self.F.rank == len(self.missing)
                and not self.F.refine):
            # well conditioned: the solve as real GEMMs (see _systematic_assemble); above
            # FAST_DECODE_MAX_CONDITION the refined complex solve of _lstsq instead
            self.RF = real_form(self.Gp)
            self.RQh = real_form(self.F.Qh)
            self.RRinv = real_form(self.F.Rinv)
            self.miss2 = [2 * i + t for i in self.missing for t in (0, 1)]
            for x in (self.RF, self.RQh, self.RRinv):
                x.setflags(write=False)
            # The same solve folded into one linear map of the results' real halves (the
            # parity results', then the present blocks'; see _solve_missing_into): the
            # missing halves are S (R_par - RF C) with S = RRinv RQh, so row 2i + t of C
            # takes S on the parity halves and -S RF on the present ones; a present block's
            # rows take its own halves (coefficient 1).
            ns, npres = len(self.par), len(self.present)
            S = self.RRinv @ self.RQh
            pcols = [2 * w + t for _, w in self.present for t in (0, 1)]
            GF = np.zeros((2 * k, 2 * ns + 2 * npres))
            GF[self.miss2, :2 * ns] = S
            GF[np.ix_(self.miss2, 2 * ns + np.arange(2 * npres))] = -(S @ self.RF[:, pcols])
            for i, c in enumerate(pcols):
                GF[c, 2 * ns + i] = 1.0
            GF.setflags(write=False)
            self.GF = GF


def _solve_missing_into(plan: _AssemblyPlan, raw: list[np.ndarray], C2: np.ndarray,
                        sq: np.ndarray | None = None, stacked: np.ndarray | None = None) -> None:
    """A packed systematic assembly in one pass of the compiled kernel (``lincomb``), where
    the missing blocks' system is solved in real form (``plan.GF``): the real halves of the
    parity results and of the present blocks are the sources; each present block's two rows
    of ``C2`` (the product's blocks as rows of real halves) are its halves as they are (bit
    for bit the copy for float64 results; float32 results are widened exactly, except that a
    -0.0 comes out as +0.0), each missing block's the solve's rows of ``plan.GF``, formed in
    double from the same loads: one read of every result, where copies, a product for the
    right-hand side and two for the solve read them four times (a systematic MDS(8, 6)
    decode at 512 with one block missing: 1.47 against 0.32 ms in one process). The one
    solve of such an assembly (the tests count its calls, as of :func:`_solve_missing`).
    ``stacked`` (a small decode's, :meth:`PolyDotCode._decode_small`): the sources' halves
    as the rows of one float64 array, ``plan.sources``' results one after the other (one
    copy, where a view per half cost more than the arithmetic); ``sq`` (with ``stacked``):
    gets each row of ``C2``'s sum of squares added."""
    if stacked is not None:
        _encode._K.lincomb(plan.GF, stacked, C2, sq, False, False, _encode.LINCOMB_SIMD)
        return
    L = C2.shape[1]
    srcs = [raw[j] for j in plan.sources]
    halves: list[np.ndarray] = []
    real = _encode._REAL   # (dtype objects: compared several times faster than scalar types)
    for r in srcs:
        if r.dtype not in real or not r.flags.c_contiguous:
            r = np.ascontiguousarray(r, dtype=np.float64)
        halves.extend(r.reshape(2, L))   # its two rows
    _encode._K.lincomb(plan.GF, halves, C2, None, False, False, _encode.LINCOMB_SIMD)


def _solve_missing(plan: _AssemblyPlan, rhs: np.ndarray) -> np.ndarray:
    """The missing data blocks of a systematic assembly: ``plan.Gm X = rhs`` (the parity
    results less the present blocks' share), by the factors kept in ``plan``; in real form
    (``rhs`` and ``X`` with a row each for the real and the imaginary halves) where the plan
    has it (``plan.RF``), else by :func:`~codedml.codes._base._lstsq`. The one solve of an
    assembly (the tests count its calls)."""
    if plan.RF is not None:
        shape = (plan.RQh.shape[0], rhs.shape[1])
        Y = np.matmul(plan.RQh, rhs, out=_pool.empty(shape, dtype=np.float64))
        return np.matmul(plan.RRinv, Y, out=_pool.empty(shape, dtype=np.float64))
    return _base._lstsq(plan.Gm, rhs, factors=plan.F)
