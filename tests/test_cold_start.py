"""Cold start and the decode caches: what a fresh process imports, what a repeat decode reuses,
and that the fast GF(p) matmul kernel stays exact.

* ``import codedml`` / ``import codedml.codes`` import neither galois, torch, mpi4py nor scipy,
  and a first product through the public API (plain encode/decode and ``LocalCluster``) imports
  none of them either (each costs 0.1-1.5 s in a fresh process).
* The real decode's factorization cache (``_base._FACTORS``): a repeat decode from the same
  subset hits it and returns the same product; it stays within ``FACTOR_CACHE_SIZE``.
* ``matmul_mod``'s blocked reduction, limb recombination and thread scratch arrays: exact
  against Python integers, at extreme entries (p - 1), across block boundaries, from threads.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import MatDotCode, MDSCode, PolyDotCode, PolynomialCode, _base, _gfp
from codedml.codes._gfp import MAX_PRIME, matmul_mod

HEAVY = ("galois", "torch", "mpi4py", "scipy", "numba")


def _heavy_after(code: str) -> list[str]:
    """The heavy top-level modules a fresh interpreter holds after running ``code``."""
    probe = code + (
        "\nimport sys\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True, timeout=120)
    return eval(out.stdout.strip().splitlines()[-1])  # a printed list of names


@pytest.mark.parametrize("stmt", ["import codedml", "import codedml.codes",
                                  "from codedml.codes import MDSCode, PolyDotCode, Residues"])
def test_import_is_light(stmt):
    assert _heavy_after(stmt) == []


def test_first_product_imports_nothing_heavy():
    code = """
import numpy as np
from codedml import LocalCluster
from codedml.codes import MDSCode, MatDotCode, PolynomialCode
rng = np.random.default_rng(0)
A, B = rng.standard_normal((40, 30)), rng.standard_normal((30, 20))
for code in (MDSCode(6, 4), PolynomialCode(6, 2, 2), MatDotCode(6, 2), MDSCode(6, 4, field=65537)):
    X, Y = (A, B) if code.field is None else (rng.integers(0, 65537, (40, 30)), rng.integers(0, 65537, (30, 20)))
    enc = code.encode(X, Y)
    res = {t.worker: t.compute() for t in enc}
    del res[1]                                   # one straggler, one spare result checked
    C = code.decode(res, encoding=enc)
    ref = X @ Y if code.field is None else (X.astype(object) @ Y.astype(object)) % 65537
    assert np.allclose(C, ref.astype(float) if code.field is not None else ref), code
with LocalCluster(6) as cl:
    assert np.allclose(cl.submit(A, B, code=MDSCode(6, 4)).result(), A @ B)
"""
    assert _heavy_after(code) == []


# ------------------------------------------------------------------ real decode cache
@pytest.mark.parametrize("code", [MDSCode(9, 6), PolynomialCode(9, 2, 2), MatDotCode(9, 3),
                                  PolyDotCode(9, 2, 2, 1)], ids=repr)
def test_repeat_decode_hits_the_factor_cache(code):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((24, 18)), rng.standard_normal((18, 12))
    enc = code.encode(A, B)
    res = {t.worker: t.compute() for t in enc}
    del res[0]
    _base._FACTORS.clear()
    first = code.decode(res, encoding=enc)
    entries = len(_base._FACTORS)
    assert entries > 0
    cached = dict(_base._FACTORS)
    again = code.decode(res, encoding=enc)
    # nothing new was factorized, and the entries are the very same objects
    assert len(_base._FACTORS) == entries
    assert all(_base._FACTORS[k] is v for k, v in cached.items())
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(first, A @ B, rtol=0, atol=1e-12 * np.abs(A @ B).max())


def test_factor_cache_is_bounded_and_lru(monkeypatch):
    monkeypatch.setattr(_base, "FACTOR_CACHE_SIZE", 3)
    _base._FACTORS.clear()
    code = MDSCode(8, 4)
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((16, 5)), rng.standard_normal((5, 3))
    enc = code.encode(A, B)
    res = {t.worker: t.compute() for t in enc}
    for start in range(5):                    # five different 4-subsets
        sub = {w: res[w] for w in range(start, start + 4)}
        np.testing.assert_allclose(code.decode(sub, encoding=enc), A @ B, atol=1e-12)
        assert len(_base._FACTORS) <= 3
    _base._FACTORS.clear()


def test_cached_factors_are_not_changed_by_a_decode():
    code = MatDotCode(7, 3)
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((10, 12)), rng.standard_normal((12, 8))
    enc = code.encode(A, B)
    res = {t.worker: t.compute() for t in enc}
    _base._FACTORS.clear()
    code.decode(res, encoding=enc)
    snap = {k: (v.Rinv.copy() if hasattr(v, "Rinv") else None) for k, v in _base._FACTORS.items()}
    # a different product through the same subset must not write into cached arrays
    enc2 = code.encode(A @ (B @ B.T), B)
    code.decode({t.worker: t.compute() for t in enc2}, encoding=enc2)
    for k, v in snap.items():
        if v is not None:
            np.testing.assert_array_equal(_base._FACTORS[k].Rinv, v)


# ------------------------------------------------------------------ GF(p) kernel exactness
LIMB_PRIMES = [MAX_PRIME, 2147483629, 1610612741, 2**23 - 15]   # limb path under "auto"
DIRECT_PRIMES = [2097143, 65537, 257, 3]


def _residues(rng: np.random.Generator, p: int, shape: tuple[int, int], extreme: float) -> np.ndarray:
    """Random residues with a fraction ``extreme`` replaced by the values every bound is tight
    at (p - 1, p - 2) or that are special (0, 1, p // 2)."""
    x = rng.integers(0, p, shape, dtype=np.int64)
    special = np.array([0, 1, p - 1, max(p - 2, 0), p // 2], dtype=np.int64)
    mask = rng.random(shape) < extreme
    x[mask] = rng.choice(special, int(mask.sum()))
    return x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=st.sampled_from(LIMB_PRIMES + DIRECT_PRIMES), m=st.integers(1, 300),
       n=st.integers(1, 70), k=st.integers(1, 9), extreme=st.sampled_from([0.0, 0.5, 1.0]),
       method=st.sampled_from(["auto", "limbs", "direct", "centered"]), seed=st.integers(0, 2**32 - 1))
def test_matmul_mod_matches_python_ints(p, m, n, k, extreme, method, seed):
    if method == "direct" and (p - 1) ** 2 > 2**52:
        method = "limbs"
    rng = np.random.default_rng(seed)
    a = _residues(rng, p, (m, n), extreme)
    b = _residues(rng, p, (n, k), extreme)
    want = ((a.astype(object) @ b.astype(object)) % p).astype(np.int64)
    got = matmul_mod(a, b, p, method=method)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("p", [MAX_PRIME, 2147483629, 1610612741, 8388593])
@pytest.mark.parametrize("lo", [0, 1])
def test_matmul_mod_centered_extremes_across_inner_chunks(p, lo):
    # the centered path's extremes: +h and -h = (p+1)/2 (its largest |products|), with an inner
    # dimension that straddles its chunk length
    h = (p - 1) // 2
    chunk = _gfp._centered_plan(p)[1]
    for n in sorted({1, 3, min(chunk, 3000), min(chunk + 1, 3001), min(2 * chunk + 7, 3003)}):
        a = np.full((5, n), h + lo, dtype=np.int64)      # -h when lo = 1
        b = np.full((n, 4), h, dtype=np.int64)
        want = ((h + lo) * h * n) % p
        for method in ("auto", "centered"):
            np.testing.assert_array_equal(matmul_mod(a, b, p, method=method),
                                          np.full((5, 4), want), err_msg=f"n={n} {method}")


@pytest.mark.parametrize("p", [MAX_PRIME, 2147483629, 2097143])
def test_matmul_mod_all_p_minus_1_across_row_blocks(p):
    # more rows than one post-processing block, every entry p - 1: the largest sums
    rows = 3 * _gfp._block_rows(64) + 5
    a = np.full((rows, 1000), p - 1, dtype=np.int64)
    b = np.full((1000, 64), p - 1, dtype=np.int64)
    np.testing.assert_array_equal(matmul_mod(a, b, p), np.full((rows, 64), (p - 1) ** 2 * 1000 % p))


def test_matmul_mod_results_do_not_alias_scratch_and_threads_agree():
    p = MAX_PRIME
    rng = np.random.default_rng(4)
    pairs = [(rng.integers(0, p, (96, 80)), rng.integers(0, p, (80, 72))) for _ in range(4)]
    want = [((a.astype(object) @ b.astype(object)) % p).astype(np.int64) for a, b in pairs]
    first = matmul_mod(*pairs[0], p)
    second = matmul_mod(*pairs[1], p)            # same shapes: reuses this thread's scratch
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, want[0])
    got: dict[int, list[np.ndarray]] = {}

    def run(i):
        got[i] = [matmul_mod(*pairs[j], p) for j in range(4) for _ in range(3)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for outs in got.values():
        for j, out in enumerate(outs):
            np.testing.assert_array_equal(out, want[j // 3])


def test_workspace_zero_keeps_nothing(monkeypatch):
    monkeypatch.setattr(_gfp, "WORKSPACE_BYTES", 0)
    _gfp.release_workspace()
    p = MAX_PRIME
    a = np.full((8, 8), p - 1, dtype=np.int64)
    np.testing.assert_array_equal(matmul_mod(a, a, p), np.full((8, 8), (p - 1) ** 2 * 8 % p))
    assert _gfp._WORK.pool == {}
