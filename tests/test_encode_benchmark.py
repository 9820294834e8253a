"""``benchmarks/encode.py``'s bounds: the copy they time is the faster of ``np.copyto`` and the
compiled streamed copy (glibc's ``memmove`` writes through the cache below its non-temporal
threshold, which made the bound lenient at 1024 and 2048); both copy the data exactly, and
the move bound reads and writes the byte counts it is given."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import encode as bench  # noqa: E402

from codedml.codes import _encode  # noqa: E402


def test_copy_time_takes_the_faster_copy_and_copies_exactly():
    rng = np.random.default_rng(0)
    src = rng.standard_normal(1 << 16)
    dst = np.zeros_like(src)
    t, ways = bench.copy_time(dst, src)
    np.testing.assert_array_equal(dst, src)
    expected = {"numpy", "streamed"} if _encode._K is not None else {"numpy"}
    assert set(ways) == expected
    assert t == min(ways.values()) and t > 0


def test_copy_time_without_the_compiled_loops_is_numpys(monkeypatch):
    monkeypatch.setattr(_encode, "_K", None)
    src = np.arange(4096, dtype=np.float64)
    dst = np.zeros_like(src)
    t, ways = bench.copy_time(dst, src)
    np.testing.assert_array_equal(dst, src)
    assert list(ways) == ["numpy"] and t == ways["numpy"]


@pytest.mark.parametrize("bytes_in, bytes_out", [(8 * 3000, 8 * 9000), (8 * 9000, 8 * 3000),
                                                 (8 * 5000, 8 * 5000)])
def test_move_time_writes_what_it_is_asked(bytes_in, bytes_out):
    # the copy of the smaller count, then the rest of the writes (streamed from the piece) or
    # of the reads: every byte of the larger count touched once
    rng = np.random.default_rng(1)
    src = rng.standard_normal(10_000)
    dst = np.full(10_000, np.nan)
    piece = rng.standard_normal(1 << 10)
    assert bench.move_time(src, dst, piece, bytes_in, bytes_out) > 0
    m = min(bytes_in, bytes_out) // 8
    np.testing.assert_array_equal(dst[:m], src[:m])
    w = (bytes_out - 8 * m) // 8
    assert not np.isnan(dst[:m + w]).any()           # every byte asked for was written
    assert np.isnan(dst[m + w:]).all()                # and nothing past them
