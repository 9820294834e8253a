"""The encode kernel: ``out[o] = sum_i G[o, i] * block_i``, written once into preallocated tasks.

An encode reads the data blocks once and writes every task once; everything else it does is
overhead over that copy bound. :func:`combine` therefore

* takes the data blocks as *views* of the caller's arrays (no padded copy: a block cut short by
  the split's zero padding is a smaller view, the missing part reads as zero; an empty block
  reads as zero: the GEMM path drops it from the product, the compiled path passes it as an
  empty source so that a systematic code's identity rows keep their form);
* walks the block rows in cache-sized chunks (:data:`CHUNK_BYTES`), so that any gathering
  (complex packing of two real sub-blocks, float32 to float64, strided or non-contiguous
  blocks) and any temporary (a float64 product cast to float32 operands, a product written to
  a layout BLAS cannot address) stay in cache;
* where the compiled module is built and the CPU has AVX2/FMA or AVX-512F, runs the whole
  product in one compiled pass instead (:func:`_compiled`, ``lincomb`` in
  ``codedml/codes/_kernels.c``: per tile of columns the blocks in cache (L1 for dense
  generators, half of L2 for systematic ones, whose identity rows are written by the loop
  that loads their blocks), the generator's products in registers, every task written once
  with its norm; over GF(p) reduced mod p in the same pass, the operand's range check from the
  same reads); the rest of this list is the path of every other case:
* runs one BLAS GEMM per chunk, the generator against the chunk's blocks viewed as one 2-D
  matrix. Where the blocks are float64 rows at a constant stride in memory (a C-ordered ``A``
  split by rows: MDS and polynomial codes), the GEMM reads them where they lie; where the
  tasks' chunk is such a matrix of the compute dtype, it writes them there (where both hold
  and no norms are asked for, the whole range is one GEMM);
* for systematic codes computes only the parity rows, in the same pass: per chunk the data
  blocks' rows are copied into the systematic tasks (tasks never alias the caller's arrays: a
  worker may update its stored block in place) and the parity GEMM reads them from there
  while they are in cache (:func:`_systematic`), so the blocks are read from memory once;
* takes each output's sum of squares on the chunk it just wrote (``sq=``: the decoder's
  noise scales need the tasks' norms, and a separate pass would read every task again) and
  applies ``post=`` to each chunk of products before storing it (GF(p): exact integer
  products reduced mod p).

The callers allocate the tasks through :func:`codedml.codes._pool.empty`, which reuses the
memory of earlier tasks once nothing reaches them (no first-touch page faults in the steady
state of a job that encodes repeatedly).

Arithmetic stays that of the plain encode (float64 / complex128 products of the float64
values, rounded once to the operand dtype), so the tasks equal
:func:`codedml.codes._reference.reference_encode` up to the summation order inside BLAS.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import as_strided

# the compiled loops (codedml/codes/_kernels.c: copy_sq, copy_i64, mod_store), built where a C
# compiler was found
try:
    from . import _kernels as _K
except ImportError:  # pragma: no cover - exercised by the fresh-clone check without gcc
    _K = None

def _chunk_bytes(default: int = 1 << 20, root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Bytes of one chunk, from CPU 0's caches as Linux sysfs lists them; ``default`` where
    sysfs does not say.

    * An L2 (data or unified; instruction caches are skipped) of at least 2 MiB: half of it,
      at most 4 MiB. Measured on an Intel Xeon (2 MiB L2, 105 MiB L3), chunks of 1 MiB
      encoded in 0.90x the time of 4 MiB chunks (geometric mean over
      ``benchmarks/encode.py``'s 21 cases at 1024 and 2048; systematic MDS 0.74-0.83x, the
      dense MatDot case up to 1.25x), 512 KiB 0.92x, 256 KiB 1.03x: there a chunk that
      leaves L2 runs at the L3's lower bandwidth.
    * Otherwise an eighth of the last-level cache, between 1 and 4 MiB: one chunk of blocks,
      its copies and the GEMM's output stay in that cache together. Measured side by side on
      an AMD EPYC (32 MiB L3): 4 MiB chunks encoded 0.6-0.9x the time of 1 MiB chunks for
      the dense codes and MDS float64, and 1.0x for the gradient code; 16 MiB was slower."""
    import glob

    best = l2 = 0
    for d in glob.glob(f"{root}/index*"):
        try:
            with open(f"{d}/level") as f:
                level = int(f.read())
            with open(f"{d}/size") as f:
                text = f.read().strip().upper()
        except (OSError, ValueError):
            continue
        try:
            with open(f"{d}/type") as f:
                if f.read().strip().lower() == "instruction":
                    continue
        except OSError:
            pass  # no type: count it
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * mult
        except ValueError:
            continue
        if level == 2:
            l2 = max(l2, size)
        if level >= 2 and size > best:
            best = size
    if l2 >= 2 << 20:
        return int(min(4 << 20, l2 // 2))
    if not best:
        return default
    return int(min(4 << 20, max(1 << 20, best // 8)))


#: Bytes of one chunk of gathered blocks (and of the GEMM's temporary output): half a large
#: L2 or an eighth of the last-level cache (:func:`_chunk_bytes`), large enough that
#: the GEMM runs at full speed and the per-chunk Python overhead (a few microseconds) stays
#: below a few percent.
CHUNK_BYTES = _chunk_bytes()

#: Destinations of at least this many bytes are written with non-temporal stores by the
#: compiled copy (:data:`_K`): past the caches, an ordinary store first reads the line it
#: writes (read for ownership), which a streamed one does not. Smaller ones stay in cache.
STREAM_BYTES = 2 << 20


def kernels() -> str:
    """Which copy loops the encode runs: ``"compiled"`` (``codedml.codes._kernels``: copies
    fused with their sums of squares, or with the GF(p) range check and reduction,
    non-temporal stores for large tasks) or ``"numpy"`` (chunked ``np.copyto``, BLAS dots and
    numpy's integer ops; where the extension was not built)."""
    return "numpy" if _K is None else "compiled"


Block = Union[np.ndarray, tuple]
"""A real 2-D view ``(r, c)`` with ``r <= R``, ``c <= C`` (the rest of the block is zero),
or ``(re, im, sign)``: the complex block ``re + sign * 1j * im`` (two such views)."""


class ModP:
    """``post=`` of the GF(p) encodes: a chunk of float64 GEMM products, exact integers in
    ``[0, 2**52)``, reduced mod ``p`` into int64. Called, it does so with numpy, in place
    (:func:`~codedml.codes._gfp._reduce_float_inplace`); :func:`combine` instead hands the
    chunk to the compiled ``mod_store``, which writes the residues straight into the tasks
    in one loop, where that module was built.

    With ``source`` (the operand ``name`` whose blocks are encoded, range not yet checked),
    it also owns that operand's range check (:func:`~codedml.codes._validate.in_field`):
    the compiled systematic pass checks each chunk in the copy it makes (``copy_i64``
    returns the chunk's unsigned maximum) before any product of it is formed, and marks the
    operand checked once every entry went through it; any other path runs the whole check
    first (:meth:`check`). :attr:`checked` tells the caller whether it was done."""

    __slots__ = ("p", "name", "source", "checked", "scanned")

    def __init__(self, p: int, name: str = "", source: np.ndarray | None = None) -> None:
        self.p = int(p)
        self.name, self.source = name, source
        self.checked = source is None
        self.scanned = 0          # entries of source range-checked by the compiled copy

    def check(self, umax: int | None = None) -> None:
        """The range check of the whole source (``umax``: a chunk's unsigned maximum, which
        raises through the whole check, with its message, when a value is out of range)."""
        if self.checked:
            return
        from ._validate import in_field

        if umax is not None and umax < self.p:
            return
        in_field(self.name, self.source, self.p)
        self.checked = True

    def __call__(self, t: np.ndarray) -> np.ndarray:
        from ._gfp import _reduce_float_inplace

        return _reduce_float_inplace(t, self.p)


def copy_residues(src: np.ndarray, dst: np.ndarray, p: int, name: str) -> None:
    """``dst[:len(src)] = src`` for int64 residues, zero below, with the range check of
    ``src`` (:func:`~codedml.codes._validate.in_field`, raising by ``name``) from the copy
    itself where the compiled loop takes the layout, else before the copy."""
    from ._validate import in_field

    rows = _rows_2d(src, dst) if src.dtype == np.int64 and src.ndim in (1, 2) else None
    if rows is not None and rows[0] == src.shape[0] and _rows_contiguous(rows[1], rows[2]):
        n, s2, d2 = rows
        umax = _K.copy_i64(d2, s2, None, dst.nbytes >= STREAM_BYTES)
        dst[n:] = 0
        in_field(name, src, p, umax)
        return
    in_field(name, src, p)
    copy_rows(src, dst, norm=False)


def _mod_store(post: Any, dst: np.ndarray | None, t: np.ndarray, stream: bool = False) -> bool:
    """``dst[...] = post(t)`` by the compiled loop where ``post`` is :class:`ModP` and ``dst``
    a 2-D int64 matrix of ``t``'s shape with contiguous rows; False (nothing written) else."""
    if (_K is None or not isinstance(post, ModP) or dst is None or dst.dtype != np.int64
            or dst.shape != t.shape or dst.ndim != 2 or t.dtype != np.float64
            or (dst.shape[1] > 1 and (dst.strides[1] != 8 or t.strides[1] != 8))):
        return False
    _K.mod_store(dst, t, post.p, stream)
    return True


#: Encodes whose tasks take at most this many bytes in all run as a few calls (:func:`tiny`:
#: the data blocks copied, every other task against the generator's cached real form, by
#: :func:`small_into`, or numpy's GEMM where the kernels were not built) instead of through
#: :func:`combine`, whose setup (block views, the generator's real form, the per-source lists
#: of the compiled kernel) costs more than such an encode's arithmetic: a systematic MDS(6, 4)
#: encode of 4x4 @ 4x4 took 146 us before this path and about 85 us with it, in one process
#: (12 us since the twenty-third session's C rows and ``PolyDotCode._encode_small``).
TINY_BYTES = 32 * 1024


def tiny(G: np.ndarray, A: np.ndarray, out: np.ndarray, nsys: int, rows: int,
         sq: np.ndarray) -> bool:
    """``out[o] = S[o]`` for ``o < nsys`` and ``out[o] = sum_i G[o - nsys, i] S[i]`` for the
    rest, where ``S`` is ``A`` zero-padded to ``rows`` rows and viewed as ``G.shape[1]`` equal
    row blocks, each flattened (``out`` is ``(n_out, rows * A.shape[1] / G.shape[1])``); adds
    each output's sum of squares into ``sq``, taken on the float64 values before they are
    rounded to ``out``'s dtype. The arithmetic of :func:`combine` (float64 products of the
    float64 values, rounded once to ``out``'s dtype; data blocks copied as they are; the
    norms from the float64 values), for small encodes only: returns False (nothing written)
    where ``out`` is larger than :data:`TINY_BYTES` or a dtype is not float32/float64."""
    if (out.nbytes > TINY_BYTES or out.ndim != 2 or not out.flags.c_contiguous
            or A.dtype not in (np.float64, np.float32) or out.dtype not in (np.float64, np.float32)
            or A.ndim != 2 or A.shape[0] > rows):
        return False
    S = small_source(A, rows, G.shape[1])
    # NaN/Inf inputs, or float64 values beyond float32's range: refused after, by name
    with np.errstate(invalid="ignore", over="ignore"):
        if out.dtype == np.float64:
            # every output row holds its float64 values as they are: one pass of norms
            small_into(G, S, out, nsys, sq)
            return True
        if nsys:
            np.copyto(out[:nsys], S[:nsys], casting="unsafe")
            sq[:nsys] += _rowsq(S[:nsys])
        if nsys < out.shape[0]:
            P = G @ S
            np.copyto(out[nsys:], P, casting="unsafe")
            sq[nsys:] += _rowsq(P)
    return True


def small_source(A: np.ndarray, rows: int, k: int) -> np.ndarray:
    """``A`` (2-D, at most ``rows`` rows) zero-padded to ``rows`` rows in float64 and viewed
    as ``k`` equal row blocks, each flattened: ``A`` itself where it needs neither (a
    C-ordered float64 matrix of ``rows`` rows), else a small copy."""
    if A.shape[0] == rows and A.dtype == _REAL[0] and A.flags.c_contiguous:
        return A.reshape(k, -1)
    S = np.zeros((rows, A.shape[1]))
    S[:A.shape[0]] = A
    return S.reshape(k, -1)


def small_into(G: np.ndarray, S: np.ndarray, out: np.ndarray, nsys: int,
               sq: np.ndarray, per: int = 1) -> None:
    """:func:`small_products` with the sums of squares of each group of ``per`` rows of
    ``out`` added into ``sq``: in one call into C (``_kernels.small_rows``) where the kernels
    were built, the data rows copied as they are and the others each entry's products
    rounded and summed in order from 0; past :data:`SMALL_ROWS_MACS` by the SIMD kernels;
    where neither runs, by numpy (one GEMM, a pass of norms). ``S`` may be any C-ordered
    float64 array whose values, in rows of ``out``'s width, are the source rows (a short
    one's missing rows read as zeros: A itself, without a padded copy). numpy's GEMM and a
    pass of norms took about three times as long for a control-plane job's 4 x 4. Both small
    paths (:func:`tiny` and ``PolyDotCode._encode_small``) call this, so they write the same
    bits. No warning for NaN/Inf inputs or squares past float64's range."""
    R, L = out.shape
    if _K is not None:
        if G.dtype != _REAL[0] or not G.flags.c_contiguous:   # (an overriding _outer_form's)
            G = np.ascontiguousarray(G, dtype=np.float64)
        if (R - nsys) * G.shape[1] * L <= SMALL_ROWS_MACS:
            _K.small_rows(G, S, out, nsys, sq, per)
            return
    K = G.shape[1]
    if S.size != K * L or S.ndim != 2 or S.shape[0] != K:   # a short or flat source: whole rows
        full = np.zeros((K, L))
        full.reshape(-1)[:S.size] = S.reshape(-1)
        S = full
    rs = sq if per == 1 else np.zeros(R)
    with np.errstate(over="ignore", invalid="ignore"):   # (NaN/Inf; squares past float64)
        if _lincomb_ok():   # the SIMD kernels: the data rows by copy_sq, the others by lincomb
            if nsys:
                _K.copy_sq(out[:nsys], S[:nsys], rs[:nsys])
            if nsys < R:
                _K.lincomb(G, S, out[nsys:], rs[nsys:], False, False, LINCOMB_SIMD)
        else:
            small_products(G, S, out, nsys)
            rs += _rowsq(out)
        if per != 1:
            sq += rs.reshape(-1, per).sum(axis=1)


#: :func:`small_into` computes the rows in one plain C loop (``_kernels.small_rows``) up to
#: this many multiply-adds, past it by the SIMD kernels (``copy_sq`` and ``lincomb``), whose
#: setup costs more than a small encode's arithmetic: measured on the 2-core AMD EPYC, MDS
#: encodes of tasks of 8-32 KiB in one process (systematic MDS(17, 15) at 60 x 60, 14 K
#: multiply-adds: 29 against 53 us before; its non-systematic form, 122 K: 111 us in the
#: plain loop against 58).
SMALL_ROWS_MACS = 16384


def small_products(G: np.ndarray, S: np.ndarray, out: np.ndarray, nsys: int) -> None:
    """The float64 small encode's arithmetic: ``out[:nsys]`` the first ``nsys`` blocks of
    ``S`` as they are, every later row ``G @ S`` (one GEMM). The caller holds the
    ``errstate`` for NaN/Inf inputs."""
    if nsys:
        np.copyto(out[:nsys], S[:nsys])
    if nsys < out.shape[0]:
        np.matmul(G, S, out=out[nsys:])


def real_form(G: np.ndarray) -> np.ndarray:
    """The real ``2n x 2k`` matrix of a complex ``n x k`` generator acting on real/imaginary
    halves stored one after the other: ``[Re a_w; Im a_w] = sum_i [[Re g, -Im g], [Im g,
    Re g]] [Re z_i; Im z_i]``."""
    n, k = G.shape
    out = np.empty((n, 2, k, 2))
    out[:, 0, :, 0] = G.real
    out[:, 0, :, 1] = -G.imag
    out[:, 1, :, 0] = G.imag
    out[:, 1, :, 1] = G.real
    return out.reshape(2 * n, 2 * k)


#: The real dtypes the compiled kernels take (dtype objects: a dtype compares with these
#: several times faster than with the scalar types ``np.float64``, ``np.float32``). In this
#: host's byte order: ``np.dtype(">f8")`` (on a little-endian host) equals neither.
_REAL = (np.dtype(np.float64), np.dtype(np.float32))


def _parts(b: Block) -> tuple[np.ndarray, np.ndarray | None, float]:
    if isinstance(b, tuple):
        return b[0], b[1], float(b[2])
    return b, None, 1.0


def _rows(b: Block) -> int:
    if not isinstance(b, tuple):        # a real view: its rows, unless it has no columns
        return b.shape[0] if b.shape[1] else 0
    re, im, _ = _parts(b)
    return max(re.shape[0], 0 if im is None else im.shape[0]) if re.shape[1] or (im is not None and im.shape[1]) else 0


def _merge_lead(x: np.ndarray, lead: int) -> int | None:
    """The stride of ``x``'s first ``lead`` axes merged into one, or None if they do not merge."""
    s = x.strides[lead - 1]
    for ax in range(lead - 2, -1, -1):
        if x.strides[ax] != x.strides[ax + 1] * x.shape[ax + 1] and x.shape[ax] > 1:
            return None
        s = x.strides[ax] if x.shape[ax] > 1 else s
    return s


def _matrix(x: np.ndarray, lead: int, r0: int, r1: int) -> np.ndarray | None:
    """Rows ``r0:r1`` of every block of ``x`` (``lead`` block axes, then ``(R, C)``) as one 2-D
    matrix (blocks x (r1 - r0) * C) without a copy, or None where the layout does not allow it."""
    R, C = x.shape[lead:]
    item = x.itemsize
    if x.strides[-1] != item or (r1 - r0 > 1 and x.strides[-2] != C * item):
        return None
    nb = math.prod(x.shape[:lead])
    s0 = _merge_lead(x, lead) if nb > 1 else item
    if s0 is None:
        return None
    base = x[(0,) * lead + (slice(r0, r1),)]
    return as_strided(base, shape=(nb, (r1 - r0) * C), strides=(s0, item), writeable=True)


def _direct(blocks: Sequence[Block], idx: list[int], r0: int, r1: int, C: int,
            dtype: Any = np.float64) -> np.ndarray | None:
    """The blocks ``idx`` (whole in rows ``r0:r1``) as one 2-D view when they are C-ordered
    rows of ``dtype`` (None: any one real dtype) at one stride in memory; else None."""
    views = []
    for i in idx:
        b = blocks[i]
        if isinstance(b, tuple) or b.shape[1] != C or b.dtype.kind not in "fiu":
            return None
        if b.dtype != (views[0].dtype if views else (b.dtype if dtype is None else dtype)):
            return None
        v = b[r0:r1]
        if v.strides[-1] != v.itemsize or (r1 - r0 > 1 and v.strides[0] != v.itemsize * C):
            return None
        views.append(v)
    if not views:
        return None
    item = views[0].itemsize
    ptr = [v.__array_interface__["data"][0] for v in views]
    step = ptr[1] - ptr[0] if len(ptr) > 1 else item * C * (r1 - r0)
    if any(ptr[j + 1] - ptr[j] != step for j in range(len(ptr) - 1)) or step <= 0:
        return None
    return as_strided(views[0], shape=(len(views), (r1 - r0) * C), strides=(step, item))


def combine(G: np.ndarray | None, blocks: Sequence[Block], out: np.ndarray, *, lead: int = 1,
            nsys: int = 0, sq: np.ndarray | None = None, post: Any = None) -> np.ndarray:
    """Write ``out[o] = blocks[o]`` for ``o < nsys`` and ``out[o] = sum_i G[o - nsys, i]
    blocks[i]`` for the rest, chunk by chunk (see the module docstring).

    Parameters
    ----------
    G : (n_out - nsys, k) float64 or complex128, or None when ``nsys`` covers every output
    blocks : k blocks, each a 2-D view or ``(re, im, sign)`` (see :data:`Block`)
    out : array of shape ``lead_shape + (R, C)``, ``prod(lead_shape) = n_out``; real or
        complex, any float dtype (the products run in float64 / complex128 and are rounded
        once into it)
    lead : the number of leading axes of ``out`` that index the outputs
    nsys : how many leading outputs are the blocks themselves (systematic codes)
    sq : optional float64 array of ``n_out`` entries; each output's sum of squared magnitudes
        is added to it, taken on each chunk while it is in cache (the decoder's noise scales
        need the tasks' norms; a separate pass would read every task once more)
    post : optional function of each chunk of products (float64, may be overwritten) returning
        what to store (GF(p): the exact integer products reduced mod p, as int64)
    """
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs: refused after, by name
        return _combine(G, blocks, out, lead, nsys, sq, post)


def _combine(G: np.ndarray | None, blocks: Sequence[Block], out: np.ndarray, lead: int,
             nsys: int, sq: np.ndarray | None = None, post: Any = None) -> np.ndarray:
    R, C = out.shape[lead:]
    lead_shape = out.shape[:lead]
    n_out = math.prod(lead_shape)
    k = len(blocks)
    cplx = (np.iscomplexobj(out) or (G is not None and np.iscomplexobj(G))
            or any(isinstance(b, tuple) for b in blocks))
    cdt = np.dtype(np.complex128 if cplx else np.float64)
    if G is not None:
        G = np.ascontiguousarray(G, dtype=cdt)
    flat = _flat(out, lead, n_out)
    if R == 0 or C == 0 or n_out == 0:
        if isinstance(post, ModP):
            post.check()
        return out
    if (post is None or isinstance(post, ModP)) and _lincomb_ok():
        # the compiled kernel, systematic outputs as identity rows of the generator: each
        # written as its block is loaded, and every task is written in one pass
        Gf = G if not nsys else np.vstack([np.eye(nsys, k, dtype=cdt)] + ([] if G is None else [G]))
        if _compiled(Gf, blocks, out, lead, flat, sq, post):
            return out
    if nsys and flat is not None and nsys == k and _systematic(G, blocks, flat, nsys, sq, post, cdt):
        return out
    if isinstance(post, ModP):
        post.check()   # no product of an unchecked operand: this path does not check as it copies
    if nsys and flat is not None:
        # systematic outputs: each block copied once, whole; then the parity rows alone
        for o in range(nsys):
            s = _copy_block(blocks[o], flat[o], norm=sq is not None)
            if sq is not None:
                sq[o] += s
        if nsys < n_out:
            _combine(G, blocks, flat[nsys:], 1, 0, None if sq is None else sq[nsys:], post)
        return out
    step = max(1, CHUNK_BYTES // max(1, max(k, n_out - nsys) * C * cdt.itemsize))
    nrows = [_rows(b) for b in blocks]
    ends = sorted({min(r, R) for r in nrows} | {R, 0})
    bounds = []
    for a, b in zip(ends[:-1], ends[1:]):
        if _whole(G, blocks, out, flat, nsys, a, b, C, cdt, sq):
            continue      # one GEMM from the blocks where they lie into the tasks: done
        bounds += [(s, min(b, s + step)) for s in range(a, b, step)]
    if not bounds:
        return out
    buf_full = np.empty((k, step * C), dtype=cdt)
    tmp_full = np.empty((max(n_out - nsys, 1), step * C), dtype=cdt)
    for r0, r1 in bounds:
        rc = r1 - r0
        live = [i for i, r in enumerate(nrows) if r > r0]
        # the live blocks of this chunk as one (len(live), rc * C) matrix: a view if possible
        D = None
        if live and not cplx and live == list(range(live[0], live[-1] + 1)):
            D = _direct(blocks, live, r0, r1, C)
        if D is None and live:
            D = buf_full[:len(live), :rc * C]
            for j, i in enumerate(live):
                _gather(blocks[i], D[j].reshape(rc, C), r0, r1)
        for o in range(nsys):  # systematic outputs: the blocks themselves, one copy
            dst = _out_block(out, flat, lead_shape, o)[r0:r1]
            if o in live:
                _store(dst, D[live.index(o)].reshape(rc, C))
                if sq is not None:
                    sq[o] += _rowsq(D[live.index(o)][None])[0]
            else:
                dst[...] = 0
        if nsys >= n_out:
            continue
        if not live:
            for o in range(nsys, n_out):
                _out_block(out, flat, lead_shape, o)[r0:r1] = 0
            continue
        Gl = G[:, live[0]:live[-1] + 1] if live == list(range(live[0], live[-1] + 1)) else G[:, live]
        direct = None
        if out.dtype == cdt and post is None:
            if flat is not None:
                direct = _matrix(flat[nsys:], 1, r0, r1)
            elif nsys == 0:
                direct = _matrix(out, lead, r0, r1)
        if direct is not None:
            np.matmul(Gl, D, out=direct)
            if sq is not None:
                sq[nsys:] += _rowsq(direct)
            continue
        tmp = tmp_full[:, :rc * C]
        np.matmul(Gl, D, out=tmp)
        if sq is not None:
            sq[nsys:] += _rowsq(tmp)
        if flat is not None and _mod_store(post, _matrix(flat[nsys:], 1, r0, r1), tmp):
            continue          # GF(p): reduced straight into the tasks, one loop
        if post is not None:
            tmp = post(tmp)
        if flat is not None:
            _store(flat[nsys:, r0:r1], tmp.reshape(n_out - nsys, rc, C))
        elif nsys == 0:
            _store(out[..., r0:r1, :], tmp.reshape(lead_shape + (rc, C)))
        else:
            for o in range(nsys, n_out):
                _store(_out_block(out, None, lead_shape, o)[r0:r1], tmp[o - nsys].reshape(rc, C))
    return out


def _systematic(G, blocks, flat, nsys, sq, post, cdt) -> bool:
    """Systematic outputs and parity rows in one pass over the blocks: per cache-sized row
    chunk, the blocks' rows are copied into the systematic tasks (one copy when the blocks lie
    at one stride in memory), and the parity GEMM reads them from there (or from the float64
    gather buffer where the tasks are of another dtype) while they are in cache; the blocks are
    read from memory once. Needs the tasks C-ordered (``flat`` a stack of (R, C) matrices).
    Returns whether it did (False: a layout it does not handle; nothing written)."""
    n_out, R, C = flat.shape
    item = flat.itemsize
    if flat.strides[-1] != item or (R > 1 and flat.strides[-2] != C * item):
        return False
    if n_out > 1 and flat.strides[0] <= 0:
        return False
    par = n_out - nsys
    same = flat.dtype == cdt and post is None   # tasks hold the compute dtype's values
    step = max(1, CHUNK_BYTES // max(1, max(nsys, par) * C * cdt.itemsize))
    # the tasks as two 2-D matrices (outputs x R*C) at the tasks' stride: chunks are column
    # slices of these (views, no per-chunk setup)
    S_all = as_strided(flat, shape=(nsys, R * C), strides=(flat.strides[0], item), writeable=True)
    P_all = (as_strided(flat[nsys:], shape=(par, R * C), strides=(flat.strides[0], item), writeable=True)
             if par else None)
    Gc = None if G is None or not par else np.ascontiguousarray(G, dtype=cdt)
    buf = None if same else np.empty((nsys, step * C), dtype=cdt)
    tmp = None if same or not par else np.empty((par, step * C), dtype=cdt)
    nrows = [_rows(b) for b in blocks]
    ends = sorted({min(r, R) for r in nrows} | {R, 0})
    for a, b in zip(ends[:-1], ends[1:]):
        # blocks that reach past row a are whole in rows a:b; the rest are zero there. Where
        # the former are consecutive and lie at one stride in memory (a C-ordered A split by
        # rows), each chunk is one copy from A and the rest one fill.
        live = [i for i, r in enumerate(nrows) if r > a]
        span = live == list(range(live[0], live[-1] + 1)) if live else False
        D_all = _direct(blocks, live, a, b, C, dtype=None) if span else None
        # where the tasks hold the blocks' own dtype (float32 tasks of float32 blocks,
        # computed in float64), the systematic tasks are a plain copy of the blocks and the
        # float64 buffer is a cast of them: no round trip through float64 for the copy
        raw = D_all is not None and not same and D_all.dtype == flat.dtype
        # compiled: the blocks' rows copied into the systematic tasks with their sums of
        # squares in the same loop (streamed past the cache when the tasks are large), the
        # parity GEMM reading the blocks' rows that loop just brought into cache
        fused = (_K is not None and post is None and cdt == np.float64 and D_all is not None
                 and D_all.dtype == flat.dtype and flat.dtype in (np.float64, np.float32)
                 and (same or raw))
        # GF(p), compiled: the residues copied into the systematic tasks and widened into the
        # GEMM's float64 operand in one loop, the exact products reduced into the parity
        # tasks in another (no int64 <-> float64 passes, no quotient temporary)
        gfp = (_K is not None and isinstance(post, ModP) and sq is None and cdt == np.float64
               and D_all is not None and D_all.dtype == np.int64 and flat.dtype == np.int64)
        stream = (fused or gfp) and S_all.nbytes >= STREAM_BYTES
        if isinstance(post, ModP) and not gfp:
            post.check()   # this segment's copies do not check: the whole operand first
        for r0 in range(a, b, step):
            r1 = min(b, r0 + step)
            c0, c1 = r0 * C, r1 * C
            if gfp or fused:   # the live blocks' rows of this chunk, and their tasks
                lo, hi = live[0], live[-1] + 1
                Dc = D_all[:, c0 - a * C:c1 - a * C]
                S = S_all[:, c0:c1]
            if gfp:
                wide = buf[lo:hi, :c1 - c0] if par else None
                post.check(_K.copy_i64(S[lo:hi], Dc, wide, stream))  # raises before a product
                post.scanned += Dc.size
                S[:lo] = 0
                S[hi:] = 0
                if par:
                    t = tmp[:, :c1 - c0]
                    np.matmul(Gc[:, lo:hi], wide, out=t)
                    _K.mod_store(P_all[:, c0:c1], t, post.p, stream)
                continue
            if fused:
                # float32 blocks: the same loop also widens them into the float64 buffer,
                # the GEMM's operand (written through the cache, read from it at once)
                wide = None if same or not par else buf[lo:hi, :c1 - c0]
                _K.copy_sq(S[lo:hi], Dc, None if sq is None else sq[lo:hi], stream, 1.0, wide)
                S[:lo] = 0
                S[hi:] = 0
                if not par:
                    continue
                P = P_all[:, c0:c1]
                t = P if same else tmp[:, :c1 - c0]
                np.matmul(Gc[:, lo:hi], Dc if same else wide, out=t)
                if same:
                    if sq is not None:
                        sq[nsys:] += _rowsq(t)
                else:                  # the float64 products cast into the float32 tasks,
                    # with their sums of squares, in one loop
                    _K.copy_sq(P, t, None if sq is None else sq[nsys:], stream)
                continue
            dst = S_all[:, c0:c1] if same else buf[:, :c1 - c0]
            if D_all is not None:
                Dc = D_all[:, c0 - a * C:c1 - a * C]
                _place(dst, Dc, live[0], live[-1] + 1)
                if raw:
                    _place(S_all[:, c0:c1], Dc, live[0], live[-1] + 1)
            else:
                for o in range(nsys):
                    _gather(blocks[o], dst[o].reshape(r1 - r0, C), r0, r1)
            src = dst
            if not same and not raw:
                _store(S_all[:, c0:c1], src)
            if sq is not None:
                sq[:nsys] += _rowsq(src)
            if not par:
                continue
            P = P_all[:, c0:c1]
            if same:
                np.matmul(Gc, src, out=P)
                if sq is not None:
                    sq[nsys:] += _rowsq(P)
                continue
            t = tmp[:, :c1 - c0]
            np.matmul(Gc, src, out=t)
            if sq is not None:
                sq[nsys:] += _rowsq(t)
            if post is not None:
                t = post(t)
            _store(P, t)
    if isinstance(post, ModP) and post.source is not None and post.scanned == post.source.size:
        post.checked = True   # every entry went through a checked copy (the blocks tile it)
    return True


#: Whether :func:`combine` may run the generator products by the compiled ``lincomb``
#: (:func:`_compiled`; where the CPU has AVX2 and FMA: ``_kernels.SIMD`` 1, or AVX-512F: 2).
#: False sends them to BLAS GEMMs per chunk, as where the module is not built or the CPU has
#: neither.
LINCOMB = True

#: The instruction set ``lincomb`` uses: -1 the best this CPU has, 1 AVX2/FMA (the tests run
#: both where the CPU has AVX-512).
LINCOMB_SIMD = -1


def _lincomb_ok() -> bool:
    return LINCOMB and _K is not None and getattr(_K, "SIMD", 0) >= 1


def _compiled(G, blocks, out, lead, flat, sq, post=None) -> bool:
    """Every output by the compiled ``lincomb`` (codedml/codes/_kernels.c): per row and tile
    of columns, the blocks' values in cache, the generator's products in registers (AVX2/FMA),
    each task written once, streamed when large, with its sum of squares. A block cut short
    by padding reads as zero there; a complex block ``(re, im, sign)`` is its two real views
    against the generator's real form (complex tasks: interleaved real and imaginary parts
    from rows ``2o`` and ``2o + 1``). Returns whether it did (False: no AVX2/FMA, or a dtype
    or layout it does not take; nothing written)."""
    if G is None or not _lincomb_ok():
        return False
    if isinstance(post, ModP):
        return _compiled_gfp(G, blocks, out, lead, flat, post)
    R, C = out.shape[lead:]
    cplx = np.iscomplexobj(out)
    rdt = out.real.dtype if cplx else out.dtype
    if rdt not in (np.float64, np.float32) or (np.iscomplexobj(G) and not cplx):
        return False
    if not cplx and not any(isinstance(b, tuple) for b in blocks):
        # real blocks into real tasks (MDS and polynomial codes' A and B sides, the real
        # constructions' grids): the sources are the blocks, empty ones included (lincomb
        # reads them as zeros), so that G's columns are used as they are and a systematic
        # code's identity rows stay identity rows where some blocks lie wholly in the
        # padding (with those blocks' columns dropped, the identity rows of absent blocks
        # became zero rows, which took the present ones' pass off the diagonal: computed
        # as 1.0 times each value added to +0, -0.0 came out +0.0)
        if not _real_sources(blocks):
            return False
        srcs = list(blocks)
        Gr = np.ascontiguousarray(G, dtype=np.float64)
    else:
        srcs, cols, scale = [], [], []   # the real sources, their columns of G's real form
        for j, b in enumerate(blocks):
            re, im, sign = _parts(b)
            for imag, v in ((0, re), (1, im)):
                if v is None:
                    continue
                if v.ndim != 2 or v.dtype not in _REAL or not _rows_contiguous(v):
                    return False
                if v.shape[0] and v.shape[1]:
                    srcs.append(v)
                    cols.append(2 * j + imag)
                    scale.append(sign if imag else 1.0)
        if cplx:   # block j is re + sign i im: real_form's columns 2j and 2j + 1, the latter signed
            Gr = np.ascontiguousarray(real_form(G)[:, cols] * np.array(scale))
        else:
            if any(c % 2 for c in cols):
                return False     # complex blocks into real tasks: never the case in the codes
            Gr = np.ascontiguousarray(G[:, [c // 2 for c in cols]], dtype=np.float64)
    views = _task_views(out, lead, flat)
    if views is None:
        return False
    dsts = [v.view(rdt) for v in views] if cplx else views
    acc = sq if sq is None or (sq.dtype == np.float64 and sq.flags.c_contiguous) else np.zeros(len(dsts))
    _K.lincomb(Gr, srcs, dsts, acc, out.nbytes >= STREAM_BYTES, cplx, LINCOMB_SIMD)
    if acc is not sq:
        sq += acc
    return True


def combine_runs(G: np.ndarray, A: np.ndarray, h: int, out: np.ndarray,
                 sq: np.ndarray | None = None, post: ModP | None = None) -> bool:
    """``out[o] = sum_j G[o, j] S_j`` by the compiled ``lincomb``, where ``S_j`` is rows
    ``j h .. (j + 1) h`` of a C-ordered ``A`` (the last blocks cut short by the split's
    padding, or wholly in it: empty runs, read as zeros) taken as one run of ``h * N``
    values, and ``out`` is ``(G.shape[0], h * N)``, C-ordered: each task one row of that
    length. ``G`` is the whole generator, float64, a systematic code's identity rows
    included (each written as its block loads, the values as they are). The values are
    :func:`combine`'s with the blocks as ``(h, N)`` matrices, bit for bit (the same sums in
    the same order per entry); the tile walk runs over each block's ``h * N`` values at
    once instead of ``h`` rows of ``N``, and the per-block views and checks of the general
    path are not built: the kernel alone, side by side in one process, took 0.80-0.99x the
    time for systematic MDS codes and 0.95-1.02x (the noise) for dense ones.

    Real (``post`` None): float32/float64 ``A`` and ``out``; each output's sum of squares is
    added into ``sq`` (float64, one entry per output). GF(p) (``post``: the field and
    ``A``'s range check): int64 residues, ``G`` integers in ``[0, p)``, every sum exact
    (``k (p - 1)**2 <= 2**52``) and reduced mod p into the int64 tasks, ``A``'s range
    checked by the kernel as it reads each value (raising by name before any task is handed
    out; the systematic GF(65537) MDS encode 0.78-0.86x the per-block path's time).

    Returns False (nothing written) where the kernel or this layout does not apply; the
    caller then takes :func:`combine`."""
    if post is None:
        ok = (A.dtype in _REAL and out.dtype in _REAL and sq is not None
              and sq.dtype == np.float64 and sq.flags.c_contiguous
              and sq.shape == (out.shape[0],))
    else:
        ok = A.dtype == np.int64 and out.dtype == np.int64
    if (not ok or not _lincomb_ok() or A.ndim != 2 or not A.flags.c_contiguous
            or out.ndim != 2 or not out.flags.c_contiguous
            or G.dtype != np.float64 or G.ndim != 2 or not G.flags.c_contiguous):
        return False
    M, N = A.shape
    L = h * N
    k = G.shape[1]
    if (L <= 0 or M == 0 or M > k * h or out.shape != (G.shape[0], L)
            or (post is not None and k * (post.p - 1) ** 2 > 2 ** 52)):
        return False
    # every block a run of L values of A (the kernel cuts them: ``run``), those wholly in
    # the padding empty (read as zeros): G's identity rows stay identity rows, each written
    # as its block loads (see _compiled)
    flat = A.reshape(M * N)
    stream = out.nbytes >= STREAM_BYTES
    p = 0 if post is None else post.p
    sq = sq if post is None else None   # (over GF(p) no squares: the kernel refuses them)
    if getattr(_K, "LINCOMB_RUN", 0):
        umax = _K.lincomb(G, flat, out, sq, stream, False, LINCOMB_SIMD, p, L)
    else:   # (a build before ``run``, as benchmarks/kernel_ab.py may load: the runs as slices)
        umax = _K.lincomb(G, [flat[j * L:(j + 1) * L] for j in range(k)], out, sq, stream,
                          False, LINCOMB_SIMD, p)
    if post is None:
        return True
    post.check(umax)          # raises, naming the operand, where a value is out of range
    post.checked = True       # every entry of A went through the kernel
    return True


def _compiled_gfp(G, blocks, out, lead, flat, post: ModP) -> bool:
    """GF(p) by ``lincomb``: int64 residues widened to double in the kernel's tile, the
    products and sums exact in double (every partial sum an integer below 2**52: ``k (p -
    1)**2 <= 2**52``), reduced mod p into the int64 tasks in the same pass. The kernel
    returns the largest residue read as unsigned, which is the operand's range check
    (:meth:`ModP.check`): a value out of [0, p) raises, by name, before any task is handed
    out. Returns whether it did (False: a layout or size it does not take)."""
    if out.dtype != np.int64 or np.iscomplexobj(G):
        return False
    srcs, cols = [], []
    for j, b in enumerate(blocks):
        if isinstance(b, tuple) or b.ndim != 2 or b.dtype != np.int64 or not _rows_contiguous(b):
            return False
        if b.shape[0] and b.shape[1]:
            srcs.append(b)
            cols.append(j)
    if len(srcs) * (post.p - 1) ** 2 > 2 ** 52:
        return False
    views = _task_views(out, lead, flat)
    if views is None:
        return False
    Gr = np.ascontiguousarray(np.asarray(G)[:, cols], dtype=np.float64)
    umax = _K.lincomb(Gr, srcs, views, None, out.nbytes >= STREAM_BYTES, False,
                      LINCOMB_SIMD, post.p)
    post.check(umax)          # raises, naming the operand, where a value is out of range
    if post.source is not None and sum(s.size for s in srcs) == post.source.size:
        post.checked = True   # every entry went through the kernel (the blocks tile it)
    return True


def _real_sources(blocks: Sequence[np.ndarray]) -> bool:
    """Whether every block is one the compiled ``lincomb`` takes as a real source: float64
    or float32 in this host's byte order, 2-D, its rows contiguous (empty blocks included:
    the kernel reads them as zeros). One pass of cheap checks over the blocks: an encode's 30
    half-blocks went through :func:`_parts` and :func:`_rows_contiguous` one call each, at
    about 3 us each."""
    return all(v.ndim == 2 and v.dtype in _REAL for v in blocks) and _rows_contiguous(*blocks)


def _task_views(out: np.ndarray, lead: int, flat: np.ndarray | None) -> list | None:
    """Each task of ``out`` (``lead`` output axes) as a 2-D view, for the compiled kernel;
    None where some task's rows are not contiguous."""
    if flat is not None:   # the tasks share their last axis: one look at it
        return list(flat) if _rows_contiguous(flat) else None
    views = [out[i] for i in np.ndindex(out.shape[:lead])]
    return views if _rows_contiguous(*views) else None


def _place(dst: np.ndarray, D: np.ndarray, lo: int, hi: int) -> None:
    """``dst[lo:hi] = D`` (cast), every other row of ``dst`` zero."""
    np.copyto(dst[lo:hi], D, casting="unsafe")
    dst[:lo] = 0
    dst[hi:] = 0


def _whole(G, blocks, out, flat, nsys, r0, r1, C, cdt, sq=None) -> bool:
    """Rows ``r0:r1`` by GEMMs straight from the blocks into the tasks when no gathering and no
    temporary is needed: real float64 blocks at one stride in memory, every one whole in these
    rows, the parity tasks a float64 matrix at one stride, no systematic outputs. One GEMM, or
    one per cache-sized chunk when ``sq`` asks for the outputs' norms (taken while the chunk
    is in cache). Returns whether it did."""
    if nsys or G is None or flat is None or out.dtype != cdt or cdt != np.float64:
        return False
    live = [i for i, b in enumerate(blocks) if _rows(b) > r0]
    if not live or live != list(range(live[0], live[-1] + 1)):
        return False
    if any(_rows(blocks[i]) < r1 for i in live):
        return False
    D = _direct(blocks, live, r0, r1, C)
    dst = _matrix(flat, 1, r0, r1) if D is not None else None
    if dst is None:
        return False
    Gl = G[:, live[0]:live[-1] + 1]
    if sq is None:
        np.matmul(Gl, D, out=dst)
        return True
    step = max(1, CHUNK_BYTES // (max(flat.shape[0], len(live)) * C * 8))
    for s0 in range(r0, r1, step):
        s1 = min(r1, s0 + step)
        d = _matrix(flat, 1, s0, s1)
        np.matmul(Gl, D[:, (s0 - r0) * C:(s1 - r0) * C], out=d)
        sq += _rowsq(d)
    return True


def _rowsq(X: np.ndarray) -> np.ndarray:
    """Per row of a 2-D real or complex ``X`` (unit inner stride), the sum of squared
    magnitudes in float64."""
    if np.iscomplexobj(X):
        X = X.view(X.real.dtype)
    if X.dtype == np.float64 and X.shape[1]:
        # one BLAS dot per row (a stack of 1 x L by L x 1 products): about 2x einsum's speed
        # on a chunk in cache
        return np.matmul(X[:, None, :], X[:, :, None]).reshape(X.shape[0])
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def fast_copy(dst: np.ndarray, src: np.ndarray, stream: bool, scale: float = 1.0,
              squares: bool = True) -> float | None:
    """``dst[...] = scale * src`` by the compiled loop (:data:`_K`; each product in float64,
    then cast to ``dst``'s dtype, as numpy's float64 product cast to it), returning the
    sum of squares of ``src``'s values (0.0 with ``squares`` false: the loop then does not
    form it, for a copy whose sum nobody reads); None, with nothing written, where that loop
    is not built or does not apply (``dst`` and ``src`` of different dtypes, not
    float32/float64, not 1-D/2-D of one shape, or rows not contiguous): the caller then
    copies with numpy."""
    if (_K is None or dst.dtype != src.dtype or dst.dtype not in (np.float64, np.float32)
            or dst.shape != src.shape or dst.ndim not in (1, 2) or not _rows_contiguous(dst, src)):
        return None
    if not squares:
        _K.copy_sq(dst, src, None, stream, scale, squares=False)
        return 0.0
    return _K.copy_sq(dst, src, None, stream, scale)


def _rows_contiguous(*xs: np.ndarray) -> bool:
    """Whether each array's last axis is contiguous (or has at most one entry): the layout
    the compiled loops take, rows at any stride."""
    return all(x.shape[-1] <= 1 or x.strides[-1] == x.itemsize for x in xs)


def _rows_2d(src: np.ndarray, dst: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """For a compiled copy of ``src`` into the first rows of C-ordered ``dst`` of the same
    dtype and row shape: ``(n, src2, dst2)``, the ``n`` rows both have as 2-D views (a vector:
    one row), no copy; None where the module is not built or no such view exists. The width
    is explicit: numpy cannot infer -1 beside a 0 (no rows, or empty rows)."""
    if (_K is None or src.dtype != dst.dtype or src.shape[1:] != dst.shape[1:]
            or not dst.flags.c_contiguous or src.ndim < 1):
        return None
    n = min(src.shape[0], dst.shape[0])
    w = math.prod(dst.shape[1:])
    s2 = src[:n] if src.ndim == 1 else view_as(src[:n], (n, w))
    d2 = dst[:n] if dst.ndim == 1 else dst[:n].reshape(n, w)
    return None if s2 is None else (n, s2, d2)


def view_as(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``x`` reshaped to ``shape`` as a view of the same memory; None where that needs a copy.
    (``np.reshape(copy=False)`` where numpy has it, 2.1 on; before, a reshape that turned
    out to copy is discarded.)"""
    try:
        return np.reshape(x, shape, copy=False)
    except ValueError:
        return None
    except TypeError:   # numpy before 2.1: no copy= keyword
        try:
            r = np.reshape(x, shape)
        except ValueError:
            return None
        # a reshape that copied returns a fresh buffer: any overlap means a view
        return r if np.may_share_memory(r, x) else None


def copy_rows(src: np.ndarray, dst: np.ndarray, norm: bool = True) -> float:
    """``dst[:len(src)] = src`` (cast), zero below, by cache-sized row chunks; returns the sum
    of squares of what was written, taken on each chunk while it is in cache (0.0 when
    ``norm`` is false)."""
    if src.shape == dst.shape and src.size and src.flags.c_contiguous and dst.flags.c_contiguous:
        # a whole operand (e.g. the B every MDS task shares): no row views to take
        total = fast_copy(dst, src, dst.nbytes >= STREAM_BYTES, squares=norm)
        if total is not None:
            return total
    rows = _rows_2d(src, dst)
    if rows is not None:
        # fast_copy declines (None, nothing written) a dtype or a layout it does not take,
        # e.g. columns not contiguous
        n, s2, d2 = rows
        total = fast_copy(d2, s2, dst.nbytes >= STREAM_BYTES, squares=norm)
        if total is not None:
            dst[n:] = 0
            return total if norm else 0.0
    total = 0.0
    rows = dst.shape[0]
    width = math.prod(dst.shape[1:]) if dst.ndim > 1 else 1
    step = max(1, CHUNK_BYTES // max(1, width * dst.itemsize))
    with np.errstate(invalid="ignore", over="ignore"):
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            d = dst[r0:r1]
            n = max(0, min(src.shape[0], r1) - r0)
            if n:
                np.copyto(d[:n], src[r0:r0 + n], casting="unsafe")
            if n < r1 - r0:
                d[n:] = 0
            if norm:
                v = d.reshape(-1)
                total += float(np.dot(v, v))
    return total


def _flat(out: np.ndarray, lead: int, n_out: int) -> np.ndarray | None:
    """``out`` with its ``lead`` output axes merged into one, as a view; None if that would copy."""
    if lead == 1:
        return out
    return view_as(out, (n_out,) + out.shape[lead:])


def _out_block(out: np.ndarray, flat: np.ndarray | None, lead_shape: tuple[int, ...], o: int) -> np.ndarray:
    if flat is not None:
        return flat[o]
    return out[np.unravel_index(o, lead_shape)]


def _store(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src``, rounding once into ``dst``'s dtype (real part of a complex source only
    where ``dst`` is real: never the case in the codes, which pack real pairs explicitly)."""
    np.copyto(dst, src, casting="unsafe")


def _copy_block(b: Block, dst: np.ndarray, norm: bool = True) -> float:
    """Block ``b`` into ``dst`` (R x C, C-ordered, the task's dtype), zero where padding cuts it
    short, by cache-sized row chunks; returns the sum of squared magnitudes written (0.0 when
    ``norm`` is false)."""
    R, C = dst.shape
    step = max(1, CHUNK_BYTES // max(1, C * dst.itemsize))
    total = 0.0
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        d = dst[r0:r1]
        _gather(b, d, r0, r1)
        if norm:
            v = d.reshape(-1)
            if np.iscomplexobj(v):
                v = v.view(v.real.dtype)
            total += float(np.dot(v, v))
    return total


def _gather(b: Block, dst: np.ndarray, r0: int, r1: int) -> None:
    """Rows ``r0:r1`` of block ``b`` into ``dst`` (rc x C, compute dtype), zero where the block
    is cut short by padding."""
    re, im, sign = _parts(b)
    C = dst.shape[1]
    if np.iscomplexobj(dst):
        _fill(dst.real, re, r0, r1, C, 1.0)
        if im is None:
            dst.imag[...] = 0
        else:
            _fill(dst.imag, im, r0, r1, C, sign)
    else:
        _fill(dst, re, r0, r1, C, 1.0)


def _fill(dst: np.ndarray, src: np.ndarray, r0: int, r1: int, C: int, sign: float) -> None:
    rows = max(0, min(src.shape[0], r1) - r0)
    cols = src.shape[1]
    if rows:
        if sign == 1.0:
            np.copyto(dst[:rows, :cols], src[r0:r0 + rows], casting="unsafe")
        else:
            # multiply by -1, exact (a NaN's sign aside), not np.negative: numpy 2.4.6's
            # negative loop reads a source whose elements lie exactly 64 bytes apart (a
            # column of an F-ordered 8-row matrix) as if they were adjacent when the output
            # is strided too (the imaginary parts of a complex task): wrong values, no error
            # (tests/test_encode.py::test_fill_negates_any_layout)
            np.multiply(src[r0:r0 + rows], -1.0, out=dst[:rows, :cols], casting="unsafe")
        if cols < C:
            dst[:rows, cols:] = 0
    if rows < dst.shape[0]:
        dst[rows:] = 0
