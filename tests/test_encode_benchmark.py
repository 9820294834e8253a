"""``benchmarks/encode.py``'s bounds: the copy they time is the faster of ``np.copyto`` and the
compiled streamed copy (glibc's ``memmove`` writes through the cache below its non-temporal
threshold, which made the bound lenient at 1024 and 2048); both copy the data exactly, and
the move bound reads and writes the byte counts it is given."""

from __future__ import annotations

import json
import subprocess
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


def test_every_timed_copy_and_step_starts_after_an_eviction(monkeypatch):
    """The bounds' copies and the timed steps each start with the caches cleared of their
    inputs (``evict``), and the move bound's copy is ``copy_time``'s (the faster copy)."""
    calls = []
    monkeypatch.setattr(bench, "evict", lambda: calls.append("evict"))
    real = bench.copy_time

    def spy(dst, src):
        calls.append("copy_time")
        return real(dst, src)

    src = np.arange(4096, dtype=np.float64)
    dst = np.zeros_like(src)
    bench.copy_time(dst, src)
    assert calls == ["evict"] * (2 if _encode._K is not None else 1)
    calls.clear()
    assert bench.timed(lambda: 7)[1] == 7 and calls == ["evict"]
    calls.clear()
    monkeypatch.setattr(bench, "copy_time", spy)
    bench.move_time(src, dst, np.ones(64), 8 * 1000, 8 * 3000)
    assert calls[0] == "copy_time"


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


@pytest.mark.skipif(_encode._K is None, reason="the compiled kernels are not built here")
def test_kernel_ab_compares_two_distinct_builds(tmp_path):
    """``benchmarks/kernel_ab.py`` builds the base revision's kernel and the work tree's,
    loads them as two modules (never one module twice) and finds their tasks identical."""
    import kernel_ab

    assert kernel_ab.main(["--sizes", "64", "--rounds", "1", "--cases", "gf-poly", "f32-sys",
                           "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "kernel_ab.json").read_text())
    assert [r["key"] for r in doc["rows"]] == ["gf-poly", "f32-sys"]
    assert all(r["tasks_identical"] and r["work_over_base"] > 0 for r in doc["rows"])
    assert len(doc["parameters"]["base_commit"]) == 40
    assert doc["machine"]["commit"]
    # the same source at HEAD and in the work tree is said, not hidden
    head = subprocess.run(["git", "show", "HEAD:codedml/codes/_kernels.c"], cwd=BENCH.parent,
                          capture_output=True, text=True, check=True).stdout
    work = (BENCH.parent / "codedml" / "codes" / "_kernels.c").read_text()
    assert doc["parameters"]["same_source"] == (head == work)


def test_kernel_ab_refuses_a_revision_it_cannot_read(tmp_path):
    import kernel_ab

    with pytest.raises(SystemExit, match="--base 'no-such-rev'"):
        kernel_ab.main(["--base", "no-such-rev", "--out", str(tmp_path)])


def test_placement_ab_compares_two_placements_and_restores_the_pool(tmp_path, monkeypatch):
    """``benchmarks/placement_ab.py`` encodes each case with each gap (the tasks land where
    that gap puts them, and agree entry for entry), writes its JSON, and leaves the pool's
    gap as it found it."""
    import placement_ab

    from codedml.codes import _pool

    real = _pool._offset
    seen: list[tuple[int, int]] = []

    def spy(ptr, near):
        off = real(ptr, near)
        if near is not None:
            seen.append((_pool._GAP, (int(near) & ~63) - (ptr + off)))
        return off

    monkeypatch.setattr(_pool, "_offset", spy)
    pool = _pool.task_pool()
    monkeypatch.setattr(pool, "limit", pool.limit)   # (main raises it; restored after)
    before = _pool._GAP
    rows = []
    for case in ("f32-sys", "gf-sys"):
        seen.clear()
        out = tmp_path / case
        assert placement_ab.main(["--sizes", "128", "--rounds", "1", "--gaps", "0", "512",
                                  "--cases", case, "--out", str(out)]) == 0
        assert _pool._GAP == before
        # each gap placed this case's tasks that many bytes before their source's cache
        # line, modulo 4 KiB
        assert {g for g, _ in seen} == {0, 512}, case
        assert all(d % 4096 == g for g, d in seen), case
        doc = json.loads((out / "placement_ab.json").read_text())
        assert doc["machine"]["commit"] and doc["parameters"]["library_gap"] == before
        rows += doc["rows"]
    assert [(r["key"], r["input_offset"]) for r in rows] == [
        ("f32-sys", 16), ("f32-sys", 0), ("gf-sys", 16), ("gf-sys", 0)]
    assert all(r["tasks_identical"] and set(r["median_s"]) == {"0", "512"} for r in rows)


@pytest.mark.parametrize("gaps", [["0"], ["0", "100"], ["0", "4096"], ["0", "0"]])
def test_placement_ab_refuses_gaps_it_cannot_place(tmp_path, gaps):
    import placement_ab

    with pytest.raises(SystemExit, match="--gaps"):
        placement_ab.main(["--gaps", *gaps, "--out", str(tmp_path)])


def _rendered(results: Path, block) -> str:
    """``block()`` (a render_readme block) rendered from the JSON files in ``results``."""
    import render_readme

    old = render_readme.RESULTS
    render_readme.RESULTS = results
    try:
        return block()
    finally:
        render_readme.RESULTS = old


@pytest.mark.skipif(_encode._K is None, reason="the compiled kernels are not built here")
def test_decode_check_compares_the_two_checks_on_the_same_results(tmp_path):
    """``benchmarks/decode_check.py`` decodes the same results with the compiled check and
    numpy's, records that they answered alike, the commit it measured, and a README block
    renders from its JSON."""
    import decode_check
    import render_readme

    out = tmp_path / "decode_check.json"
    assert decode_check.main(["--sizes", "16", "32", "--repeats", "2", "--out", str(out),
                              "--plot", str(tmp_path / "decode_check.png")]) == 0
    doc = json.loads(out.read_text())
    assert [(r["case"], r["size"]) for r in doc["rows"]] == [
        (c, s) for s in (16, 32) for c in ("MDS (6,4) sys", "MDS (17,15) sys", "MDS (8,6)", "MatDot (9,4)")]
    for r in doc["rows"]:
        assert r["same_faulty_and_product"] and r["rel_error"] < 1e-12
        assert len(r["samples_s"]["compiled"]) == len(r["samples_s"]["numpy"]) == 2
        assert r["compiled_over_numpy"] == pytest.approx(r["compiled_s"] / r["numpy_s"])
    assert doc["machine"]["commit"] and (tmp_path / "decode_check.png").stat().st_size > 0
    (tmp_path / "decode_check.png").unlink()               # --replot redraws it from the JSON alone
    assert decode_check.main(["--replot", "--out", str(out), "--plot", str(tmp_path / "decode_check.png")]) == 0
    assert (tmp_path / "decode_check.png").stat().st_size > 0
    from codedml.codes import _base
    assert _base.PROJ_SQ is True and _base.WRESID is True   # the run left the switches as they were
    block = _rendered(tmp_path, render_readme.decode_check)
    assert "| MDS (17,15) sys | 17 | 15 | 32 |" in block and "**NO**" not in block


@pytest.mark.skipif(_encode._K is None, reason="the compiled kernels are not built here")
def test_decode_check_times_a_base_tree_side_by_side(tmp_path):
    """``--base``: a base tree's package (here a copy of this one, as ``codedml_base``) is
    decoded side by side; its rows carry the base's time and the ratio, its product must be
    this tree's bit for bit, and the README block shows both."""
    import shutil

    import decode_check
    import render_readme

    import codedml
    base = tmp_path / "base"
    shutil.copytree(Path(codedml.__file__).parent, base / "codedml_base",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "decode_check.json"
    assert decode_check.main(["--sizes", "16", "--repeats", "2", "--base", str(base),
                              "--base-rev", "0123456789abcdef", "--out", str(out),
                              "--plot", str(tmp_path / "decode_check.png")]) == 0
    doc = json.loads(out.read_text())
    assert doc["parameters"]["base_rev"] == "0123456789abcdef"
    for r in doc["rows"]:
        assert r["same_faulty_and_product"] and len(r["samples_s"]["base"]) == 2
        assert r["compiled_over_base"] == pytest.approx(r["compiled_s"] / r["base_s"])
    block = _rendered(tmp_path, render_readme.decode_check)
    assert "| compiled / base |" in block and "commit 01234567" in block and "**NO**" not in block


def test_decode_check_turns_the_order_of_its_decodes_every_repeat():
    """Each kind of decode goes first equally often (two alternate; three take turns), so a
    slow phase of the machine, or caches left warm by the one before, hit all alike."""
    import decode_check

    two = [decode_check.turn(["compiled", "numpy"], i) for i in range(4)]
    assert two == [["compiled", "numpy"], ["numpy", "compiled"]] * 2
    three = [decode_check.turn(["compiled", "numpy", "base"], i)[0] for i in range(6)]
    assert three == ["compiled", "numpy", "base"] * 2


def test_decode_check_refuses_bad_arguments_by_name(tmp_path, capsys):
    import decode_check

    for argv, match in [(["--sizes", "8"], "--sizes must be at least 16"),
                        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
                        (["--base", str(tmp_path)], "--base must be a folder holding a base tree")]:
        with pytest.raises(SystemExit):
            decode_check.main(argv + ["--out", str(tmp_path / "x.json")])
        assert match in capsys.readouterr().err
