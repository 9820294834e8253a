"""Task memory reuse (``codedml/codes/_pool.py``): a later encode may write into a previous
encoding's memory only once no array, view or buffer consumer can reach it; the pool stays
within its limit; pooled tasks equal the reference encode."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.codes import GradientCode, MatDotCode, MDSCode, PolyDotCode, PolynomialCode
from codedml.codes import _pool
from codedml.codes._reference import reference_encode
from codedml.errors import ConfigurationError


@pytest.fixture
def pool(monkeypatch):
    """A fresh pool, used by every encode, that pools every allocation (even tiny test ones)."""
    p = _pool.TaskPool(limit=1 << 30)
    monkeypatch.setattr(_pool, "_POOL", p)
    monkeypatch.setattr(_pool, "MIN_BYTES", 0)
    return p


CODES = [MDSCode(6, 4), MDSCode(6, 4, systematic=True), PolynomialCode(9, 2, 2),
         MatDotCode(7, 3), MatDotCode(7, 3, systematic=True), PolyDotCode(9, 2, 2, 1),
         GradientCode(6, 2), MDSCode(6, 4, field=65537), MDSCode(6, 4, systematic=True, field=65537)]


def _inputs(code, rng, shape=(40, 36, 28)):
    M, N, K = shape
    if code.field is not None:
        return rng.integers(0, code.field, (M, N)), rng.integers(0, code.field, (N, K))
    return rng.standard_normal((M, N)), rng.standard_normal((N, K))


def _arrays(enc):
    return [np.asarray(x) for t in enc for x in (t.a, t.b)]


def _equal_reference(code, enc, A, B):
    for t, (a, b) in zip(enc, reference_encode(code, A, B)):
        for got, want in ((np.asarray(t.a), a), (np.asarray(t.b), b)):
            if code.field is not None:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_pooled_array_behaves_like_np_empty(pool):
    for dtype in (np.float64, np.float32, np.complex128, np.complex64, np.int64):
        x = pool.empty((3, 5, 7), dtype)
        assert x.shape == (3, 5, 7) and x.dtype == dtype
        assert x.flags.c_contiguous and x.flags.writeable and x.flags.aligned
        assert x.__array_interface__["data"][0] % _pool._PAGE == _pool._AT   # on a cache line
        x[...] = 1
        assert (x == 1).all()
    assert isinstance(pool.empty(4, np.float64), np.ndarray)


@pytest.mark.parametrize("shift", [0, 8, 16, 24, 48, 64, 72, 4088])
def test_pooled_array_starts_the_gap_before_its_sources_line(pool, shift):
    """``near``: the data starts ``_GAP`` (512) bytes before the cache line holding the
    source's first byte, modulo 4 KiB, so that a copy's stores never land just after its
    loads or at their own low 12 bits (the loads would wait for them; _pool._AT) and the
    kernel's streamed passes find their rows on cache lines, whatever memory the request
    reuses."""
    raw = np.empty(8192 + 8 * 500, np.uint8)
    base = raw.__array_interface__["data"][0]
    start = (-base) % 4096 + shift
    src = raw[start:start + 8 * 500].view(np.float64)
    want = ((src.__array_interface__["data"][0] % 4096) // 64 * 64 - 512) % 4096
    # (the rule's constants: whole cache lines within a page, so every placement is on one)
    assert _pool._GAP == 512 and _pool._AT % 64 == 0 and 0 <= _pool._AT < _pool._PAGE
    held = []
    for shape in [(500,), (7, 60), (500,), (3, 2, 80)]:   # fresh, then reused, backings
        x = pool.empty(shape, np.float64, near=src)
        ptr = x.__array_interface__["data"][0]
        assert ptr % 4096 == want and ptr % 64 == 0 and x.flags.aligned and x.shape == shape
        backing = x.base._backing                          # the data lies inside its buffer
        lo = backing.__array_interface__["data"][0]
        assert lo <= ptr and ptr + x.nbytes <= lo + backing.nbytes
        x[...] = 2.0
        held.append(x)
        if len(held) == 2:
            held.clear()
    assert pool.hits >= 1                                  # the reused memory placed too
    assert _pool.empty(10, np.float64, near=src).shape == (10,)   # module form, small request


def test_small_requests_bypass_the_pool():
    p = _pool.TaskPool()
    x = p.empty((8, 8), np.float64)          # 512 bytes < MIN_BYTES
    assert x.flags.owndata and p.hits == p.misses == 0


def test_module_empty_takes_small_requests_straight_to_numpy(monkeypatch):
    """``_pool.empty`` answers a small request (a tuple shape under ``MIN_BYTES``, any
    dtype-like) with ``np.empty`` before the pool looks; larger ones, and every request where
    ``MIN_BYTES`` is 0, go to the pool."""
    p = _pool.TaskPool(limit=1 << 30)
    monkeypatch.setattr(_pool, "_POOL", p)
    for dtype in (np.float64, "float32", np.dtype(np.complex128), np.int64):
        x = _pool.empty((8, 8), dtype)
        assert x.shape == (8, 8) and x.dtype == np.dtype(dtype) and x.flags.owndata
    assert p.hits == p.misses == 0
    big = _pool.empty((128, 128), np.float64)            # 128 KiB: pooled
    assert big.shape == (128, 128) and not big.flags.owndata and p.misses == 1
    monkeypatch.setattr(_pool, "MIN_BYTES", 0)
    assert not _pool.empty((2, 2), np.float64).flags.owndata and p.misses == 2
    with pytest.raises(ValueError):
        _pool.empty((-1, 2), np.float64)                  # as np.empty refuses it


@pytest.mark.parametrize("code", CODES, ids=repr)
def test_reused_memory_gives_the_reference_tasks(pool, code):
    rng = np.random.default_rng(0)
    for i in range(4):
        A, B = _inputs(code, rng)
        enc = code.encode(A, B)
        _equal_reference(code, enc, A, B)
        del enc
        gc.collect()
    assert pool.hits > 0, "later encodes of the same shapes reuse the first one's memory"


@pytest.mark.parametrize("code", CODES, ids=repr)
def test_live_tasks_and_their_views_are_never_overwritten(pool, code):
    rng = np.random.default_rng(1)
    A, B = _inputs(code, rng)
    enc = code.encode(A, B)
    t0, t1, tl = enc[0], enc[1], enc[len(enc) - 1]
    keep = {
        "task": t0,                                  # a Task object alone
        "view": np.asarray(t1.a)[1:, ::2],           # a strided view (base: the pooled array)
        "reshaped": np.asarray(tl.b).reshape(-1)[3:],
        "memoryview": memoryview(np.ascontiguousarray(np.asarray(tl.a))),
        "frombuffer": np.frombuffer(memoryview(np.asarray(t1.b)), dtype=np.asarray(t1.b).dtype),
    }
    want = {k: np.array(v.a if k == "task" else v, copy=True) for k, v in keep.items()}
    want_b0 = np.array(t0.b, copy=True)
    del enc, t0, t1, tl
    gc.collect()
    for _ in range(5):                               # later encodes, other values, same shapes
        A2, B2 = _inputs(code, rng)
        enc2 = code.encode(A2, B2)
        new = _arrays(enc2)
        for k, v in keep.items():
            got = np.asarray(v.a if k == "task" else v)
            np.testing.assert_array_equal(got, want[k], err_msg=k)
            assert not any(np.shares_memory(got, x) for x in new), k
        np.testing.assert_array_equal(np.asarray(keep["task"].b), want_b0)
        _equal_reference(code, enc2, A2, B2)
        del enc2, new
        gc.collect()


def test_torch_tensor_keeps_the_memory(pool):
    torch = pytest.importorskip("torch")
    code = MDSCode(6, 4)
    rng = np.random.default_rng(2)
    A, B = _inputs(code, rng)
    enc = code.encode(A, B)
    tens = torch.from_numpy(np.asarray(enc[2].a))
    want = tens.clone()
    del enc
    gc.collect()
    for _ in range(3):
        enc2 = code.encode(*_inputs(code, rng))
        assert torch.equal(tens, want)
        del enc2
        gc.collect()


def test_memory_comes_back_only_when_the_last_view_dies(pool):
    x = pool.empty((64, 64), np.float64)
    v = x[::3, 5:]
    addr = x.__array_interface__["data"][0]
    del x
    gc.collect()
    y = pool.empty((64, 64), np.float64)
    assert y.__array_interface__["data"][0] != addr and pool.hits == 0
    del v
    gc.collect()
    z = pool.empty((64, 64), np.float64)
    assert z.__array_interface__["data"][0] == addr and pool.hits == 1
    del y, z


def test_pool_stays_within_its_limit(pool):
    pool.limit = 200_000
    live = [pool.empty((n, 1000), np.float64) for n in (5, 9, 13, 17, 21, 25)]   # 40-200 kB each
    del live
    gc.collect()
    assert pool.free_bytes <= 200_000
    assert pool.evicted > 0
    pool.limit = 0
    assert pool.free_bytes == 0
    x = pool.empty((10, 1000), np.float64)     # limit 0: plain np.empty, nothing kept
    assert x.flags.owndata
    for bad in (-1, 1.5, "1", None, True):
        with pytest.raises(ConfigurationError, match=r"`limit` must be an integer number of bytes >= 0.*got"):
            pool.limit = bad
        with pytest.raises(ConfigurationError, match=r"`limit` must be an integer number of bytes >= 0.*got"):
            _pool.TaskPool(bad)   # the constructor checks it as the setter does


def test_pool_reuses_best_fit_only(pool):
    big = pool.empty((1000, 1000), np.float64)
    del big
    gc.collect()
    small = pool.empty((10, 10), np.float64)   # a small request does not take the 8 MB buffer
    assert pool.hits == 0 and pool.free_bytes >= 8_000_000
    del small


def test_clear_drops_free_memory(pool):
    x = pool.empty((100, 100), np.float64)
    del x
    gc.collect()
    assert pool.free_bytes > 0
    pool.clear()
    assert pool.free_bytes == 0


def test_finalizer_never_waits_for_the_lock(pool):
    """A finalizer may run inside the garbage collector while this thread holds the lock."""
    x = pool.empty((50, 50), np.float64)
    with pool._lock:
        del x                      # runs the finalizer here: must not block
        gc.collect()
    assert pool.free_bytes > 0     # settled at the next use of the lock


def test_tasks_dropped_in_other_threads(pool):
    code = MDSCode(6, 4, systematic=True)
    rng = np.random.default_rng(3)
    inputs = [_inputs(code, rng) for _ in range(4)]
    refs = [[np.array(x, copy=True) for x in _arrays(code.encode(A, B))] for A, B in inputs]
    errors = []
    stop = threading.Event()

    def worker(j):
        try:
            while not stop.is_set():
                enc = code.encode(*inputs[j])
                held = _arrays(enc)
                del enc
                for got, want in zip(held, refs[j]):
                    np.testing.assert_array_equal(got, want)
                del held          # the memory returns from this thread
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(1, 4)]
    for t in threads:
        t.start()
    try:
        for _ in range(40):
            enc = code.encode(*inputs[0])
            for got, want in zip(_arrays(enc), refs[0]):
                np.testing.assert_array_equal(got, want)
            del enc
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert pool.hits > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=12),
       keep=st.lists(st.booleans(), min_size=12, max_size=12),
       limit=st.integers(0, 20_000))
def test_property_live_arrays_disjoint_and_pool_bounded(pool, shapes, keep, limit):
    """Random allocation / release sequences: every live array keeps its values and never
    shares memory with another; free memory never exceeds the limit."""
    pool.limit = limit
    live = []
    for i, shape in enumerate(shapes):
        x = pool.empty(shape, np.float64)
        x[...] = i
        for j, (y, v) in enumerate(live):
            assert not np.shares_memory(x, y)
            assert (y == v).all()
        if keep[i]:
            live.append((x[::-1], i))     # only a view survives
        del x
        # the youngest generation only: any cycle made in this loop is there, and a full
        # collection over the whole suite's heap made this test take 113 s in a full run
        gc.collect(0)
        assert pool.free_bytes <= limit


def test_public_pool_is_the_encoders_and_limit_zero_turns_reuse_off():
    import codedml.codes as cc

    p = cc.task_pool()
    assert isinstance(p, cc.TaskPool) and p is _pool._POOL
    old = p.limit
    try:
        p.limit = 0
        A = np.ones((1024, 256))                   # tasks of 2 MB: above MIN_BYTES
        enc = MDSCode(6, 4).encode(A, np.ones((256, 8)))
        base = np.asarray(enc[0].a).base
        assert not isinstance(base, _pool._Lease)
        p.limit = old
        del enc
        enc = MDSCode(6, 4).encode(A, np.ones((256, 8)))
        assert isinstance(np.asarray(enc[0].a).base.base, _pool._Lease)
    finally:
        p.limit = old


def test_numpy_worker_products_pool_only_large_results():
    """A numpy worker's product takes pooled memory from the pool's bound up (fresh pages there
    would be faulted in job after job) and allocates as usual below it, where the pool would
    cost more than it saves; the backend's copy of the bound is the pool's."""
    from codedml import backends
    from codedml.backends import NumpyBackend

    assert backends._POOL_MIN == _pool.MIN_BYTES
    be, p = NumpyBackend(), _pool.task_pool()
    rng = np.random.default_rng(3)
    small = (rng.standard_normal((4, 4)), rng.standard_normal((4, 4)))
    large = (rng.standard_normal((128, 16)), rng.standard_normal((16, 64)))  # 64 KiB result
    for a, b in (small, large):
        hits, misses = p.hits, p.misses
        out = be.matmul(a, b)
        np.testing.assert_array_equal(out, a @ b)
        pooled = (p.hits, p.misses) != (hits, misses)
        assert pooled == (out.nbytes >= _pool.MIN_BYTES), (out.shape, pooled)
        assert (out.base is not None) == pooled


def test_leases_are_forgotten_when_their_arrays_die(pool):
    """The pool's weak references to live leases (what returns their memory) go as the
    arrays die, views included: over many encodes the table holds the live ones only."""
    A = np.ones((64, 8))
    held = []
    for i in range(200):
        enc = MDSCode(6, 4).encode(A, np.ones((8, 3)))
        if i % 50 == 0:
            held.append(enc[1].a[2:])     # a view keeps its lease alive
        del enc
    assert 0 < len(pool._leases) <= 2 * len(held)
    del held
    gc.collect()
    assert len(pool._leases) == 0
    assert pool.free_bytes > 0
