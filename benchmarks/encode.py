"""Benchmark: each code's encode against the copy bound and against a plain tensordot encode.

For every case (code, operand dtype, size) this script times, in one process with one BLAS
thread, interleaved within each repeat so that drift on a shared machine hits every column
alike:

* ``encode``: ``code.encode(A, B)`` (validation, the split, the generator combinations, the
  per-worker noise scales: everything a job pays before it sends) in the steady state of a
  job that encodes again and again: right after the previous encoding of the same case was
  dropped, so its tasks land in that encoding's memory, reused through the task pool
  (``codedml/codes/_pool.py``; the JSON's ``reused`` says whether every repeat's tasks did:
  no fresh allocation of pooled size). The pool's limit is raised to hold one case's tasks
  (the largest, Polynomial(17, 4x4) at 4096, needs 1.1 GB; the default keeps 256 MiB);
* ``cold encode``: the same encode into fresh memory (the pool emptied first), as a job's
  first encode: it also pays the kernel's zeroing of every new page on first touch, which the
  copy bound, measured into warm memory, does not;
* ``copy bound``: the time to read ``A`` and ``B`` once and write every task once (a task
  shared by several workers, like an MDS code's B, counts once), from the copy bandwidth
  measured in the same repeat: a copy of a float64 buffer as large as the tasks into a
  preallocated one (it reads and writes that many bytes), scaled to ``bytes(A) + bytes(B) +
  bytes(tasks)``. The copy is the faster of ``np.copyto`` and the compiled streamed copy
  (:func:`copy_time`), both timed in every repeat: glibc's ``memmove`` writes through the
  cache below its non-temporal threshold, which on the AMD EPYC VM lay between 192 and 256
  MiB (measured; three quarters of the 256 MiB L3 glibc reads there, ``getconf
  LEVEL3_CACHE_SIZE``, where sysfs shows 16 MiB), and below it moved 15-16 GB/s against
  25-29 GB/s streamed. Until
  2026-12-06 both bounds used ``np.copyto`` alone: about 1.5x lenient at 1024 and 2048;
* ``move bound``: the time to read ``A`` and ``B`` once and write every task once, measured
  directly in the same repeat (:func:`move_time`): a copy of the smaller of the two byte
  counts, then the rest of the writes, streamed as the encode's large tasks are, or the rest
  of the reads. The copy bound above charges a byte read as much as a byte written; here the
  reads of a copy overlap its writes (on the Intel Xeon measured, a copy through the cache
  moved 13-14 GB/s read plus written, a fill through it wrote 6-7 GB/s), so for an encode that writes 3x what it reads (the gradient codes) the copy
  bound is about 1.4x below what the machine can do. The 1.5x target is judged against
  this bound; both are printed and recorded;
* every timed step (each encode, each copy of the bounds, tensordot) starts after
  :func:`evict` reads a 64 MiB buffer through the caches, so that each finds its inputs in
  memory rather than left in cache by the step before (the flop bound's GEMM excepted: it
  measures the arithmetic);
* ``tensordot``: the plain encode, :func:`codedml.codes._reference.reference_encode`: pad,
  stack (and complex-pack) the blocks, ``np.tensordot(G, blocks, 1)`` with the code's
  generator, unpack, cast. For gradient codes, whose tasks are scaled partitions side by side
  rather than combinations, it is the same broadcast-multiply-and-stack written plainly.

* ``numpy loop``: the same encode with the compiled loops (``codedml/codes/_kernels.c``:
  copies fused with their sums of squares, or over GF(p) with the range check and the
  reduction mod p; non-temporal stores for large tasks) switched off, numpy's chunked copies,
  BLAS dots and integer ops instead, as where the extension was not built; also into reused
  memory. The JSON's ``parameters.kernels`` says which loops ``encode`` ran;
* ``BLAS GEMM``: the same encode with the generator products by BLAS GEMMs per chunk
  (``_encode.LINCOMB`` off, the compiled copies kept), where the compiled generator products
  (``lincomb``: AVX2/FMA or AVX-512F, ``parameters.lincomb_simd``) ran in ``encode``: the
  path of a CPU without AVX2 (over GF(p): the compiled copy, widening and reduction loops
  around a BLAS GEMM);
* ``flop bound``: the generator products' multiply-adds (:func:`macs`; a complex one counts
  4, systematic codes compute parity rows only; over GF(65537) the same count, which the
  compiled kernel runs as exact float64 multiply-adds, its reductions mod p not counted) at
  the float64 GEMM rate measured in the same repeat (a 34 x 30 generator against 2^16
  columns). Where it exceeds the copy bound the
  encode is compute-bound: no kernel can reach the copy bound there (MDS(17, 15)
  non-systematic does 2 x 2 x 15 real multiply-adds per task entry).

It prints ``encode / copy bound``, ``encode / move bound``, ``encode / max(move bound, flop
bound)``, ``encode / tensordot`` and ``cold encode / copy bound`` per case (medians over the
repeats; the targets: at most 1.5x the move bound, at most 1.0x tensordot) and checks each
encode against the reference (largest difference relative to the largest entry; 0 over
GF(p)).

The codes (8-17 workers): MDS(17, 15) and MDS(8, 6) plain and systematic, Polynomial(17,
4x4), MatDot(17, m=8) plain and systematic, PolyDot(17, 2x2x3), the cyclic gradient code
(16 workers, 2 stragglers), each for float64 and float32 inputs (``precision="auto"``), and
over GF(65537) MDS(17, 15) plain and systematic and Polynomial(17, 4x4). ``A`` and ``B``
are ``size x size``. "Plain" is ``systematic=False``: MDS and MatDot codes are systematic by
default, so the systematic rows are what a job gets without asking.

Usage::

    python benchmarks/encode.py            # sizes 1024 2048 4096, 5 repeats: ~12-20 min, peak ~8 GB
    python benchmarks/encode.py --quick    # size 512, 2 repeats: ~30 s
    python benchmarks/encode.py --quick --clock cpu   # CPU time: for a machine others load

Writes ``benchmarks/results/encode.json`` and ``encode.png``; the README table is rendered from
the JSON by ``benchmarks/render_readme.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codedml.codes import (  # noqa: E402
    GradientCode,
    MatDotCode,
    MDSCode,
    PolyDotCode,
    PolynomialCode,
)
from codedml.codes import _encode  # noqa: E402
from codedml.codes._pool import task_pool  # noqa: E402
from codedml.codes._reference import reference_encode  # noqa: E402

PRIME = 65537


def cases() -> list[dict]:
    real = [
        # the plain rows ask for the non-systematic form: MDS and MatDot codes are
        # systematic by default
        ("MDS (17,15)", MDSCode(17, 15, systematic=False)),
        ("MDS (17,15) sys", MDSCode(17, 15, systematic=True)),
        ("MDS (8,6)", MDSCode(8, 6, systematic=False)),
        ("MDS (8,6) sys", MDSCode(8, 6, systematic=True)),
        ("Polynomial (17) 4x4", PolynomialCode(17, 4, 4)),
        ("MatDot (17) m=8", MatDotCode(17, 8, systematic=False)),
        ("MatDot (17) m=8 sys", MatDotCode(17, 8, systematic=True)),
        ("PolyDot (17) 2x2x3", PolyDotCode(17, 2, 2, 3)),
        ("Gradient (16) s=2", GradientCode(16, 2)),
    ]
    out = [{"label": lab, "code": c, "dtype": dt} for dt in ("float64", "float32") for lab, c in real]
    out += [{"label": lab, "code": c, "dtype": "int64"} for lab, c in (
        (f"MDS (17,15) GF({PRIME})", MDSCode(17, 15, field=PRIME, systematic=False)),
        (f"MDS (17,15) sys GF({PRIME})", MDSCode(17, 15, field=PRIME, systematic=True)),
        (f"Polynomial (17) 4x4 GF({PRIME})", PolynomialCode(17, 4, 4, field=PRIME)),
    )]
    return out


def _operands(enc) -> list[np.ndarray]:
    """The distinct task arrays (a shared B once)."""
    seen, out = set(), []
    for t in enc:
        for x in (t.a, t.b):
            x = np.asarray(x)
            key = (x.__array_interface__["data"][0], x.nbytes)
            if key not in seen:
                seen.add(key)
                out.append(x)
    return out


def macs(code, size: int) -> int | None:
    """Real multiply-adds of the generator products in ``code.encode`` of two ``size x size``
    matrices (a complex one counts 4; systematic codes compute parity rows only): what no
    encode can do faster than BLAS runs them. Over GF(p) the same count where the compiled
    kernel runs them as float64 multiply-adds of exact integers (``k (p - 1)**2 <= 2**52``:
    the float64 GEMM rate is then their bound too; the reductions mod p and the int64
    conversions come on top and are not counted), else None; 0 for gradient codes (they
    scale and place partitions; no products)."""
    if isinstance(code, GradientCode):
        return 0
    if code.field is not None and (max(code.p * code.m, code.m * code.q)
                                   * (code.field - 1) ** 2 > 2 ** 52):
        return None
    p, m, q, n = code.p, code.m, code.q, code.workers
    M = N = K = size
    s = code._n_systematic()
    up = lambda x, d: -(-x // d) * d  # noqa: E731
    if code.construction == "circle" and m == 1:
        h = up(M, 2 * p) // (2 * p)
        total = 2 * (n - s) * 2 * p * h * N
        if q > 1:
            hb = up(K, 2 * q) // (2 * q)
            total += 2 * n * 2 * q * N * hb
        return total
    cplx = 4 if code.construction == "circle" else 1
    inner = 2 * m if code.construction == "circle" else m
    rb, nb, cb = up(M, p) // p, up(N, inner) // inner, up(K, q) // q
    total = (n - s) * p * m * cplx * rb * nb
    if not (m == 1 and q == 1):
        total += (n - (s if m > 1 else 0)) * m * q * cplx * nb * cb
    return total


def gemm_rate(rng: np.random.Generator) -> float:
    """Float64 GEMM rate (flop/s) at an encode's shape: a 34 x 30 generator against 2^16 columns."""
    G, D = rng.standard_normal((34, 30)), rng.standard_normal((30, 1 << 16))
    out = np.empty((34, 1 << 16))
    t0 = CLOCK()   # not after evict(): the rate of the arithmetic, its operands just written
    np.matmul(G, D, out=out)
    return 2 * 34 * 30 * (1 << 16) / (CLOCK() - t0)


def _rel_diff(enc, ref) -> float:
    worst = 0.0
    for t, (a, b) in zip(enc, ref):
        for x, y in ((t.a, a), (t.b, b)):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype:
                return float("inf")
            scale = float(np.abs(y).max()) if y.size else 0.0
            d = float(np.abs(x.astype(np.complex128) - y).max()) if y.size else 0.0
            worst = max(worst, d / scale if scale else d)
    return worst


#: The clock: ``time.perf_counter`` (wall, default) or ``time.process_time`` (``--clock cpu``:
#: this process's CPU time, which other processes on a loaded machine inflate far less; with
#: one BLAS thread it is the encode's own cost).
CLOCK = time.perf_counter


#: Read through before every timed step (:func:`evict`): larger than the last-level cache (16
#: MiB on the AMD EPYC VM by sysfs, 32 MiB on its CCD; 30 MiB on the Intel Xeon measured), so
#: that each step starts with its inputs in memory, not left in cache by the step before.
_EVICT_BYTES = 64 << 20
_evict_buf: np.ndarray | None = None


def evict() -> None:
    """Push what the last step left in the caches out, by reading a buffer larger than them:
    every timed step (the encodes, the copies of the bounds, tensordot) then starts alike,
    its inputs in memory. Without it the bounds' second copy read a source the first had just
    brought into cache (25.5 against 18.2 GB/s at 8 MiB)."""
    global _evict_buf
    if _evict_buf is None:
        _evict_buf = np.ones(_EVICT_BYTES // 8)
    float(_evict_buf.sum())


def copy_time(dst: np.ndarray, src: np.ndarray) -> tuple[float, dict[str, float]]:
    """Seconds to copy ``src`` into ``dst`` (1-D float64): the faster of ``np.copyto`` and,
    where the compiled loops are built, their streamed copy (``copy_sq(stream=True,
    squares=False)``: non-temporal stores, as the encode's large tasks are written), each
    timed once; with each one's time. ``np.copyto`` is glibc's ``memmove``, which streams
    only above its non-temporal threshold: on the 2-core AMD EPYC VM that lay between 192 and
    256 MiB (three quarters of the 256 MiB L3 glibc reads there; sysfs shows 16 MiB), and
    below it ``np.copyto`` wrote through the cache (15-16 GB/s read plus written against 25-29
    GB/s streamed, 32-128 MiB), so a bound timed by it alone was about 1.5x lenient at 1024
    and 2048 and strict only at 4096. Each copy is :func:`timed` (after :func:`evict`)."""
    got = {"numpy": timed(lambda: np.copyto(dst, src))[0]}
    if _encode._K is not None:
        got["streamed"] = timed(
            lambda: _encode._K.copy_sq(dst, src, None, True, 1.0, squares=False))[0]
    return min(got.values()), got


def move_time(src: np.ndarray, dst: np.ndarray, piece: np.ndarray, bytes_in: int,
              bytes_out: int) -> float:
    """Seconds to read ``bytes_in`` and write ``bytes_out`` once each, measured: a copy
    (:func:`copy_time`: the faster of ``np.copyto`` and the compiled streamed copy) of the
    smaller of the two, then the rest of the writes streamed from
    ``piece`` (a cache-sized source: non-temporal stores by the compiled loop, as the encode's
    own large tasks are written) or the rest of the reads (a sum). Without the compiled loop
    the writes are numpy's fill, through the cache (a read for ownership per line): a more
    lenient bound, which the JSON's ``parameters.move_writes`` says. The copy bound assumes a byte read costs what a byte written does; on this machine the
    reads of a copy overlap its writes, so an encode that writes 3x what it reads (the
    gradient codes) cannot reach it: this bound times what such an encode must do."""
    m = min(bytes_in, bytes_out) // 8
    w = (bytes_out - 8 * m) // 8
    rd = (bytes_in - 8 * m) // 8
    t_copy = copy_time(dst[:m], src[:m])[0] if m else 0.0
    t0 = CLOCK()
    if w:
        rest = dst[m:m + w]
        if _encode._K is None:
            rest.fill(1.0)
        else:   # one call: the piece repeated as the rows of a stride-0 view, then the rest
            L = piece.size
            rows = w // L
            if rows:
                rep = np.lib.stride_tricks.as_strided(piece, (rows, L), (0, piece.itemsize))
                _encode._K.copy_sq(rest[:rows * L].reshape(rows, L), rep, None, True, 1.0,
                                   squares=False)
            if w > rows * L:
                _encode._K.copy_sq(rest[rows * L:], piece[:w - rows * L], None, True, 1.0,
                                   squares=False)
    if rd:
        np.add.reduce(src[m:m + rd])
    return t_copy + CLOCK() - t0


def timed(fn):
    """``(seconds, fn())``, timed after :func:`evict`."""
    evict()
    t0 = CLOCK()
    out = fn()
    return CLOCK() - t0, out


def run_size(size: int, repeats: int, rng: np.random.Generator, case_list: list[dict]) -> list[dict]:
    data = {}
    for dt in ("float64", "float32"):
        data[dt] = (rng.standard_normal((size, size)).astype(dt), rng.standard_normal((size, size)).astype(dt))
    data["int64"] = (rng.integers(0, PRIME, (size, size)), rng.integers(0, PRIME, (size, size)))
    rec = {c["label"] + c["dtype"]: {"encode": [], "cold": [], "reused": [], "copy": [],
                                    "tensordot": [], "move": [], "bytes_in": 0, "bytes_out": 0, "diff": None}
           for c in case_list}
    src = dst = None
    piece = rng.standard_normal(1 << 15)   # 256 KiB: the move bound's streamed writes' source
    pool = task_pool()
    for rep in range(repeats + 1):  # rep 0: warm-up (condition bounds, generators), discarded
        for c in case_list:
            r = rec[c["label"] + c["dtype"]]
            A, B = data[c["dtype"]]
            pool.clear()      # cold: every task in fresh memory
            t_cold, enc = timed(lambda: c["code"].encode(A, B))
            if rep == 0:
                # room for one case's tasks (the pool keeps them between the two encodes)
                pool.limit = max(pool.limit, 2 * sum(x.nbytes for x in _operands(enc)))
            del enc           # its memory returns to the pool ...
            hits, misses = pool.hits, pool.misses
            t_enc, enc = timed(lambda: c["code"].encode(A, B))   # ... and is reused here
            reused = pool.misses == misses and pool.hits > hits
            if rep == 0:
                ops = _operands(enc)
                r["bytes_in"] = A.nbytes + B.nbytes
                r["bytes_out"] = sum(x.nbytes for x in ops)
                r["workers"] = c["code"].workers
                r["recovery_threshold"] = c["code"].recovery_threshold
                r["operand_dtype"] = str(enc.dtype)
                need = max(r["bytes_out"], r["bytes_in"]) // 8 + 1
                if src is None or src.size < need:
                    src = rng.standard_normal(need)
                    dst = np.empty_like(src)
            del enc
            t_np = None
            if _encode._K is not None:
                # the same encode with numpy's copies (and, over GF(p), numpy's reduction and
                # range check) instead of the compiled loops, also into the memory just released
                saved, _encode._K = _encode._K, None
                try:
                    t_np, enc_np = timed(lambda: c["code"].encode(A, B))
                finally:
                    _encode._K = saved
                del enc_np
            t_blas = None
            if _encode._lincomb_ok():
                # the same encode with the generator products by BLAS GEMMs per chunk (the
                # compiled copies kept): the path of a CPU without AVX2/FMA
                _encode.LINCOMB = False
                try:
                    t_blas, enc_b = timed(lambda: c["code"].encode(A, B))
                finally:
                    _encode.LINCOMB = True
                del enc_b
            t_ref, ref = timed(lambda: reference_encode(c["code"], A, B))
            if rep == 0:
                r["diff"] = _rel_diff(c["code"].encode(A, B), ref)
            del ref
            nb = max(r["bytes_in"], r["bytes_out"]) // 8
            t_cp, ways = copy_time(dst[:nb], src[:nb])
            t_mv = move_time(src, dst, piece, r["bytes_in"], r["bytes_out"])
            rate = gemm_rate(rng)
            if rep:
                mac = macs(c["code"], size)
                r.setdefault("flop", []).append(None if mac is None else 2 * mac / rate)
                r.setdefault("rate", []).append(rate / 1e9)
                r["encode"].append(t_enc)
                r.setdefault("numpy_loop", []).append(t_np)
                r.setdefault("blas", []).append(t_blas)
                r["cold"].append(t_cold)
                r["reused"].append(reused)
                r["tensordot"].append(t_ref)
                # a copy of nb float64 reads and writes 8 nb bytes each
                r["copy"].append(t_cp * (r["bytes_in"] + r["bytes_out"]) / (2 * 8 * nb))
                r["move"].append(t_mv)
                r["bw"] = r.get("bw", []) + [2 * 8 * nb / t_cp / 1e9]
                for way, t in ways.items():   # each copy's own rate, for the record
                    r.setdefault("bw_" + way, []).append(2 * 8 * nb / t / 1e9)
    rows = []
    for c in case_list:
        r = rec[c["label"] + c["dtype"]]
        enc, cold, cp, ref, mv = (statistics.median(r[k])
                                  for k in ("encode", "cold", "copy", "tensordot", "move"))
        fl = None if r["flop"][0] is None else statistics.median(r["flop"])
        bound = max(mv, fl or 0.0)
        npl = None if r["numpy_loop"][0] is None else statistics.median(r["numpy_loop"])
        bl = None if r["blas"][0] is None else statistics.median(r["blas"])
        rows.append({
            "case": c["label"], "dtype": c["dtype"], "operand_dtype": r["operand_dtype"],
            "systematic": bool(getattr(c["code"], "systematic", False)),
            "field": c["code"].field, "size": size, "workers": r["workers"],
            "recovery_threshold": r["recovery_threshold"],
            "bytes_in": r["bytes_in"], "bytes_out": r["bytes_out"],
            "encode_s": enc, "encode_cold_s": cold, "reused": all(r["reused"]),
            "copy_bound_s": cp, "move_bound_s": mv, "tensordot_s": ref,
            "copy_bandwidth_GBps": statistics.median(r["bw"]),
            "copy_bandwidth_numpy_GBps": statistics.median(r["bw_numpy"]),
            "copy_bandwidth_streamed_GBps": (statistics.median(r["bw_streamed"])
                                             if "bw_streamed" in r else None),
            "flop_bound_s": fl, "gemm_GFLOPs": statistics.median(r["rate"]),
            "multiply_adds": macs(c["code"], size),
            "encode_over_copy": enc / cp, "encode_over_move": enc / mv,
            "encode_over_tensordot": enc / ref,
            "encode_over_bound": enc / bound, "cold_encode_over_copy": cold / cp,
            "max_rel_diff_vs_reference": r["diff"],
            "encode_numpy_loop_s": npl,
            "compiled_over_numpy_loop": None if npl is None else enc / npl,
            "encode_blas_gemm_s": bl,
            "encode_over_blas_gemm": None if bl is None else enc / bl,
            "samples": {k: r[k] for k in ("encode", "cold", "copy", "move", "tensordot", "flop",
                                          "numpy_loop", "blas")},
        })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'case':34s} {'dtype':8s} {'size':>5s} {'encode ms':>10s} {'copy-bound ms':>14s} "
          f"{'move-bound ms':>14s} {'flop-bound ms':>14s} {'tensordot ms':>13s} {'enc/copy':>9s} "
          f"{'enc/move':>9s} {'enc/bound':>10s} "
          f"{'enc/tdot':>9s} {'cold/copy':>10s} {'rel.diff':>9s} {'C/numpy':>8s} {'enc/blas':>9s}")
    for r in rows:
        fl = "-" if r["flop_bound_s"] is None else f"{1e3 * r['flop_bound_s']:.2f}"
        print(f"{r['case']:34s} {r['dtype']:8s} {r['size']:5d} {1e3 * r['encode_s']:10.2f} "
              f"{1e3 * r['copy_bound_s']:14.2f} {1e3 * r['move_bound_s']:14.2f} {fl:>14s} "
              f"{1e3 * r['tensordot_s']:13.2f} {r['encode_over_copy']:9.2f} "
              f"{r['encode_over_move']:9.2f} {r['encode_over_bound']:10.2f} "
              f"{r['encode_over_tensordot']:9.2f} {r['cold_encode_over_copy']:10.2f}"
              f"{'' if r['reused'] else '*'} {r['max_rel_diff_vs_reference']:9.1e} "
              f"{'-' if r['compiled_over_numpy_loop'] is None else format(r['compiled_over_numpy_loop'], '.2f'):>8s} "
              f"{'-' if r.get('encode_over_blas_gemm') is None else format(r['encode_over_blas_gemm'], '.2f'):>9s}")
    if not all(r["reused"] for r in rows):
        print("*: some repeat's tasks did not land in reused memory (encode is then not the steady state)")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(r["size"] for r in rows)
    sel = [r for r in rows if r["size"] == size]
    labels = [f"{r['case']} {r['dtype'] if r['field'] is None else ''}".strip() for r in sel]
    x = np.arange(len(sel))
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(sel)), 5))
    ax.bar(x - 0.2, [r["encode_over_move"] for r in sel], 0.4,
           label="encode / move bound (read inputs, write tasks)")
    ax.bar(x + 0.2, [r["encode_over_tensordot"] for r in sel], 0.4, label="encode / plain tensordot")
    ax.axhline(1.5, color="C0", ls="--", lw=1, label="target 1.5x move bound")
    ax.axhline(1.0, color="C1", ls=":", lw=1, label="target 1.0x tensordot")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("time ratio (median)")
    ax.set_title(f"codedml encode at {size}x{size}, one BLAS thread")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="size 512, 2 repeats (~30 s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 5; quick 2)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: leave as is)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: process_time (robust on a loaded machine)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    sizes = args.sizes or ([512] if args.quick else [1024, 2048, 4096])
    repeats = args.repeats or (2 if args.quick else 5)
    limit = contextlib.nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads, user_api="blas")
    rng = np.random.default_rng(0)
    case_list = cases()
    rows, load = [], {}
    with limit:
        for size in sizes:
            before = list(np.round(np.array(__import__("os").getloadavg()), 2))
            rows += run_size(size, repeats, rng, case_list)
            load[str(size)] = {"before": before,
                               "after": list(np.round(np.array(__import__("os").getloadavg()), 2))}
            print_table([r for r in rows if r["size"] == size])
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": _machine.machine_info(),
        "parameters": {"sizes": sizes, "repeats": repeats, "threads": args.threads,
                       "quick": args.quick, "prime": PRIME, "clock": args.clock,
                       "kernels": _encode.kernels(),
                       # the generator products' instruction set (lincomb; 0: BLAS GEMMs)
                       "lincomb_simd": {0: "BLAS GEMMs", 1: "lincomb AVX2/FMA",
                                        2: "lincomb AVX-512F"}[
                           getattr(_encode._K, "SIMD", 0) if _encode._lincomb_ok() else 0],
                       "move_writes": ("numpy fill (through the cache)" if _encode._K is None
                                       else "compiled streamed stores"),
                       # the copy in both bounds (copy_time)
                       "bound_copy": ("np.copyto" if _encode._K is None else
                                      "the faster of np.copyto and the compiled streamed copy"),
                       # before every timed step but the flop bound's GEMM (evict)
                       "evict_bytes": _EVICT_BYTES},
        "load_average_1_5_15min": load,
        "rows": rows,
    }
    (args.out / "encode.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    plot(rows, args.out / "encode.png")
    print(f"wrote {args.out / 'encode.json'} and encode.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
