"""Reused memory for encoded tasks: :func:`empty`, backed by :class:`TaskPool`.

Why: an encode writes every task once, and a task array freshly obtained from the allocator
is fresh pages (large allocations are ``mmap`` ed and handed back to the system when freed),
so the kernel zeroes each page on first touch: a second write pass that the copy bound does
not pay (measured at 2048 x 2048: more system time than user time in the encode benchmark).
A job that encodes again and again (training: one encode per step) can write its tasks into
the memory of a previous encoding's tasks once those are gone: already mapped, no faults.

Safety: memory is handed out again only when **no array can reach it any more**. Each pooled
array is made by numpy from a small exporter object (:class:`_Lease`, through
``__array_interface__``), which numpy keeps as the array's ``base``; every view, reshape,
slice, ``memoryview``, ``np.frombuffer`` of a memoryview or ``torch.from_numpy`` of the array
keeps the array, hence the exporter, alive (numpy collapses a view's base chain only through
ndarrays, and stops at the exporter). A weak reference to the exporter, held by the pool,
puts the backing memory back into the pool by its callback (the "finalizer" below) when the
exporter dies, which Python does only once the last reference to it, direct or through any
view, is gone (a ``weakref.finalize`` did this until the thirty-second session: its
bookkeeping made up about a sixth of a pooled array's cost from cold caches). What escapes this is what numpy's
own memory management cannot see either: a raw address (``arr.ctypes.data``) kept past the
array's life.

Bounds: the pool keeps at most :attr:`TaskPool.limit` bytes of *free* memory (memory in use
by live tasks belongs to them, as with ``np.empty``); beyond that the least recently
returned buffers are dropped (to the allocator, hence the system). A buffer returned by a
finalizer that could not take the lock waits in a queue until the pool's next call, so
between calls the free memory can exceed the limit by what died meanwhile. Allocations under
:data:`MIN_BYTES` bypass the pool.

Users besides the encode: the systematic assembly's product and its scratch, the
replication decode's stacked blocks, and a numpy worker's products (``NumpyBackend.matmul``):
every job allocates them anew at the same sizes.

Threads: the runtime encodes under its own lock, but a finalizer runs wherever the last
reference dies (any thread, or inside the garbage collector while this thread holds the
pool's lock). A finalizer therefore only appends to a deque (atomic, never blocks) and takes
the lock only if it is free at once; whoever takes the lock next moves returned buffers into
the free list and evicts beyond the limit.
"""

from __future__ import annotations

import collections
import math
import threading
import weakref
from typing import Any

import numpy as np

#: Requests smaller than this (bytes) get a plain ``np.empty``. glibc hands blocks from 128
#: KiB up (its threshold moves up to the largest block freed) back to the system when they
#: are freed (``munmap``, or trimming the heap's top), so even blocks well below 1 MiB came
#: back as fresh pages: at 512 x 512 a systematic decode with two blocks missing took 4.3 ms,
#: 0.65 ms with glibc's trimming turned off, and 0.82 ms with its product and scratch from
#: this pool at this bound (1.6 ms at 1 MiB). Below 64 KiB the bookkeeping (a lock and a
#: finalizer per array) would cost more than it saves.
MIN_BYTES = 1 << 16

#: Default bound on the free memory the pool keeps (bytes): a few encodings' tasks at 2048
#: (MDS(17, 15) float64 tasks take 36 MB there); ``benchmarks/encode.py`` raises it for 4096.
DEFAULT_LIMIT = 256 << 20

#: Where a pooled array's data starts within its 4 KiB page (bytes) when the caller names no
#: source (``near``): on a cache line. With a source it starts :data:`_GAP` bytes before the
#: cache line that holds the source's first byte, modulo 4 KiB: on a line, never just after
#: the source and never at its offset.
#:
#: Why not just after: where a destination starts 16-112 bytes after its source modulo 4 KiB,
#: each load of a forward copy loop shares its address's low 12 bits with a store just
#: issued, which the CPU cannot tell from a true overlap until that store is done, so the
#: load waits. Measured on the 2-core AMD EPYC (AVX2), 1024 x 1024: a float32 copy
#: (``copy_sq``) took 2.5-7.5x as long at 16-48 bytes, float64 1.6-1.7x, the systematic
#: encode kernel's pass 1.2-1.5x, an int64 copy 1.7-2.2x (the pool then placed data on a
#: cache line, 48 bytes after numpy's arrays: in that band for every input numpy allocated).
#:
#: Why not at the source's offset: the kernel's fused systematic walk (``_kernels.c``,
#: ``lc_run``) loads several sources and stores their copies in each step, and the sources
#: (the blocks of ``A``, whole pages apart at 1024-4096) share their low 12 bits, so a store
#: to one copy is followed by a load from the next source at the same low bits. Until the
#: thirty-fourth session the data started on the source's line (0-63 bytes before it:
#: exactly the source's offset for an input that starts on a line, as arrays from glibc's
#: heap often do). Measured on Zen 4 (``lincomb`` alone, MDS(17, 15), sources on a line, 1024
#: and 2048), that walk took 1.11-1.19x (float32) and 1.01-1.08x (float64) the time it took
#: with the data on any other line 64-2112 bytes before the source, which all measured alike.
#: Whole encodes side by side, :data:`_GAP` against the old rule (``benchmarks/placement_ab.py``,
#: ``benchmarks/results/placement_ab.json``, 1024 and 2048): systematic MDS float32 of inputs on
#: a line 0.80-0.84x the time, of inputs 16 bytes into a page 0.94-1.02x, the other cases
#: (systematic MDS float64 and GF(65537), the polynomial code) 0.97-1.06x, the noise.
#:
#: Why on a cache line: the encode kernel's AVX-512 passes stream their rows, whole lines at a
#: time, only where every row starts on one (``lc_run``); side by side in one process (Zen 4,
#: 1024 and 2048, without the streamed passes) that alone took the dense float64 encodes
#: 0.89-0.94x the time (whole lines written by the ordinary stores), the others 0.95-1.05x.
_AT = 0
#: Bytes between a pooled array's data and the cache line of its source, modulo 4 KiB (see
#: :data:`_AT`): 8 lines before the source's own, inside the 64-2112 bytes that measured
#: alike and clear of the prefetch distance. A multiple of 64 in [0, 4096) (tests/test_pool.py).
_GAP = 512
_PAGE = 4096


def _offset(ptr: int, near: int | None) -> int:
    """Bytes from ``ptr`` (a backing buffer) to the data: the first address at or after it
    whose offset in its page is that of the cache line holding ``near``, less :data:`_GAP`
    (so that the array's first element lies ``_GAP`` to ``_GAP + 63`` bytes before the
    source's modulo 4 KiB: see :data:`_AT`), or :data:`_AT` without ``near``. 64-byte aligned
    either way: the data's address is ``want`` modulo 4 KiB, a multiple of 64 (the offset is
    below 4 KiB, and the backing has 4 KiB to spare)."""
    want = _AT if near is None else ((int(near) & ~63) - _GAP) % _PAGE
    return ((want & ~63) - ptr) % _PAGE

#: Backing buffers are sized in these steps (a sixteenth of it below 16 steps, so that a
#: request just past :data:`MIN_BYTES` does not take twice its size), so that requests that
#: differ slightly (another padding) share them.
_GRAIN = 1 << 16

#: A free buffer serves a request when it is at most this factor larger (memory not wasted on
#: a small task sitting in a large buffer while the large request allocates anew).
_FIT = 1.25


class _Lease:
    """The exporter numpy keeps as a pooled array's ``base``: while it lives, its backing
    buffer is in use; when it dies, a weak reference's callback returns the buffer to the
    pool."""

    __slots__ = ("__array_interface__", "_backing", "__weakref__")

    def __init__(self, backing: np.ndarray, data: int, shape: tuple[int, ...],
                 form: tuple[str, Any]) -> None:
        self._backing = backing          # the memory stays valid at least as long as this
        iface = {"data": (data, False), "shape": shape, "typestr": form[0], "version": 3}
        if form[1] is not None:
            iface["descr"] = form[1]
        self.__array_interface__ = iface


#: Per dtype, its ``__array_interface__`` ``typestr`` and, where that does not say it all (a
#: structured dtype), its ``descr`` (bounded: :func:`_form`).
_FORMS: dict[np.dtype, tuple[str, Any]] = {}


def _form(dtype: np.dtype) -> tuple[str, Any]:
    """``dtype``'s interface entries, kept (a lease per pooled array: ``dtype.descr`` builds a
    list each time it is read)."""
    form = _FORMS.get(dtype)
    if form is None:
        form = (dtype.str, None if dtype.fields is None else dtype.descr)
        if len(_FORMS) >= 64:
            _FORMS.clear()
        _FORMS[dtype] = form
    return form


def _check_limit(value: Any) -> int:
    """A pool's ``limit``: an integer number of bytes >= 0 (not a bool), else a named error."""
    from ..errors import ConfigurationError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigurationError(
            f"`limit` must be an integer number of bytes >= 0 (0 turns reuse off), got {value!r}")
    return int(value)


class TaskPool:
    """Free task buffers, reused by :func:`empty` once no array reaches them (module docstring).

    Parameters
    ----------
    limit : bytes of free memory kept at most (0: keep none, every request allocates anew)
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._lock = threading.Lock()
        # free buffers by id, each with its address: (buffer, address)
        self._free: collections.OrderedDict[int, tuple[np.ndarray, int]] = collections.OrderedDict()
        self._free_bytes = 0
        self._returned: collections.deque[tuple[np.ndarray, int]] = collections.deque()
        # the live leases' weak references (by id), each with its buffer and address: the
        # references must outlive their leases for their callbacks to run
        self._leases: dict[int, tuple[weakref.ref, np.ndarray, int]] = {}
        self._limit = _check_limit(limit)
        self.hits = 0
        """Requests served from returned memory."""
        self.misses = 0
        """Requests of at least :data:`MIN_BYTES` that allocated fresh memory."""
        self.evicted = 0
        """Buffers dropped to keep the free memory within :attr:`limit`."""

    @property
    def limit(self) -> int:
        """Bytes of free memory the pool keeps at most; setting it evicts down to it."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        value = _check_limit(value)
        with self._lock:
            self._limit = value
            self._settle()

    @property
    def free_bytes(self) -> int:
        """Bytes of returned memory held for reuse (after moving in what finalizers returned)."""
        with self._lock:
            self._settle()
            return self._free_bytes

    def clear(self) -> None:
        """Drop every free buffer (live arrays keep theirs; they come back when they die)."""
        with self._lock:
            self._settle()
            self.evicted += len(self._free)
            self._free.clear()
            self._free_bytes = 0

    def empty(self, shape: Any, dtype: Any, near: np.ndarray | None = None) -> np.ndarray:
        """An uninitialised C-ordered array, like ``np.empty(shape, dtype)``, in reused memory
        where a returned buffer fits, starting on a cache line. ``near``: the array it will be
        copied from, if any; the data then starts :data:`_GAP` bytes before the source's
        cache line modulo 4 KiB (see :data:`_AT`)."""
        if not isinstance(dtype, np.dtype):
            dtype = np.dtype(dtype)
        if type(shape) is not tuple:
            shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        elif not all(type(s) is int for s in shape):
            shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES or self._limit <= 0 or dtype.hasobject:
            return np.empty(shape, dtype)
        grain = _GRAIN if nbytes >= 16 * _GRAIN else _GRAIN // 16   # small: 4 KiB steps
        need = -(-(nbytes + _PAGE) // grain) * grain
        with self._lock:
            if self._returned:
                self._settle()
            got = self._take(need)
            if got is None:
                self.misses += 1
            else:
                self.hits += 1
        if got is None:
            backing = np.empty(need, np.uint8)
            ptr = backing.__array_interface__["data"][0]
        else:
            backing, ptr = got
        off = _offset(ptr, None if near is None else near.__array_interface__["data"][0])
        lease = _Lease(backing, ptr + off, shape, _form(dtype))
        ref = weakref.ref(lease, self._died)
        self._leases[id(ref)] = (ref, backing, ptr)
        return np.asarray(lease)

    def _died(self, ref: weakref.ref) -> None:
        """A lease's weak reference's callback: its buffer back to the pool (:meth:`_give_back`)."""
        got = self._leases.pop(id(ref), None)
        if got is not None:
            self._give_back(got[1], got[2])

    # ------------------------------------------------------------------ internals
    def _take(self, need: int) -> tuple[np.ndarray, int] | None:
        """The smallest free buffer of at least ``need`` bytes and at most ``_FIT`` times it,
        with its address, removed from the free list; None if there is none. Lock held."""
        best = None
        size = 0
        for key, (buf, _) in self._free.items():
            nb = buf.nbytes
            if need <= nb <= need * _FIT and (best is None or nb < size):
                best, size = key, nb
        if best is None:
            return None
        got = self._free.pop(best)
        self._free_bytes -= size
        return got

    def _settle(self) -> None:
        """Move the buffers finalizers returned into the free list (most recent last) and
        drop the least recently returned beyond the limit. Lock held."""
        while True:
            try:
                got = self._returned.popleft()
            except IndexError:
                break
            self._free[id(got[0])] = got
            self._free_bytes += got[0].nbytes
        while self._free_bytes > self._limit and self._free:
            _, (buf, _) = self._free.popitem(last=False)
            self._free_bytes -= buf.nbytes
            self.evicted += 1

    def _give_back(self, backing: np.ndarray, ptr: int) -> None:
        """A lease's buffer returned (``ptr`` its address): from any thread, possibly inside
        the garbage collector while the lock is held by this very thread, so it never waits
        for the lock."""
        self._returned.append((backing, ptr))
        if self._lock.acquire(blocking=False):
            try:
                self._settle()
            finally:
                self._lock.release()


_POOL = TaskPool()


def task_pool() -> TaskPool:
    """The process's pool of task memory (set ``task_pool().limit = 0`` to turn reuse off)."""
    return _POOL


def empty_small(shape: tuple[int, ...], nbytes: int, near: np.ndarray | None = None) -> np.ndarray:
    """:func:`empty` of float64 for a caller that knows the size (``nbytes``): below
    :data:`MIN_BYTES` the plain ``np.empty`` that :func:`empty` would answer, without its
    argument handling (a small job's encode and decode ask several times each)."""
    return np.empty(shape) if nbytes < MIN_BYTES else _POOL.empty(shape, np.float64, near)


def empty(shape: Any, dtype: Any, near: np.ndarray | None = None) -> np.ndarray:
    """``np.empty(shape, dtype)`` for task arrays, in reused memory where possible
    (:class:`TaskPool`); ``near``: the array they are copied from (:meth:`TaskPool.empty`)."""
    return _POOL.empty(shape, dtype, near)
