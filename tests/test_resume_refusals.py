"""``python -m codedml train --resume FILE`` refuses every file that is not a checkpoint of this
run's model, in a real subprocess: exit status 2, a message naming `resume`, the file and why,
no traceback -- and a pickle whose ``__reduce__`` would create a marker file never runs
(checkpoints load with ``torch.load(weights_only=True)``).

The files come from ``tests/bad_input_cases.py`` (``FILE_MAKERS``), which the bad-input table
and ``benchmarks/bad_inputs.py`` use too.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_input_cases import FILE_MAKERS, MARKER, clean_env  # noqa: E402
from _mpirun import run_process  # noqa: E402

BASE = ["train", "--local", "2", "--steps", "3", "--eval-every", "3", "--no-progress"]


def _train(tmp: Path, *args: str):
    env = clean_env({"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    return run_process([sys.executable, "-m", "codedml", *BASE, "--out", str(tmp / "t.json"),
                        "--metrics", str(tmp / "t.jsonl"), *args], env=env, cwd=tmp, timeout=180)


def _write(tmp: Path, maker: str, name: str = "ck.pt") -> Path:
    path = tmp / name
    path.write_bytes(FILE_MAKERS[maker](tmp))
    return path


@pytest.mark.parametrize("maker, extra, must", [
    ("corrupt_checkpoint", [], ["corrupt, truncated or not a torch checkpoint"]),
    ("truncated_checkpoint", [], ["corrupt, truncated or not a torch checkpoint"]),
    ("logreg_checkpoint", ["--model", "mlp"], ["was written for task 'digits-logreg'", "'digits-mlp'"]),
    ("mlp_checkpoint", ["--model", "mlp", "--hidden", "16"],
     ["holds another model", "(32, 64)", "(16, 64)", "--hidden"]),
    ("logreg_checkpoint", ["--dtype", "float64"], ["holds another model", "torch.float32", "torch.float64"]),
    ("old_version_checkpoint", [], ["has checkpoint format 'codedml.train/1'", "reads only 'codedml.train/2'"]),
    ("damaged_checkpoint", [], ["is a damaged checkpoint", "`step`"]),
    ("tensor_file", [], ["is not a codedml training checkpoint", "codedml.train/2"]),
], ids=["corrupt", "truncated", "other-task", "other-hidden", "other-dtype", "other-version",
        "damaged", "foreign-torch-file"])
def test_a_bad_checkpoint_is_refused_with_exit_2(tmp_path, maker, extra, must):
    ck = _write(tmp_path, maker)
    p = _train(tmp_path, "--resume", str(ck), *extra)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and "`resume`" in p.stderr and str(ck) in p.stderr, p.stderr
    for text in must:
        assert text in p.stderr, p.stderr
    assert not (tmp_path / "t.json").exists()  # refused before any training


@pytest.mark.parametrize("text", ['[train]\nsteps = 3\npolicy = "sync"\n', "just some notes\n", ""],
                         ids=["toml", "text", "empty"])
def test_a_foreign_file_is_refused_with_exit_2(tmp_path, text):
    ck = tmp_path / "ck.toml"
    ck.write_text(text)
    p = _train(tmp_path, "--resume", str(ck))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert f"`resume` {ck} is not a readable codedml.train/2 checkpoint" in p.stderr, p.stderr


@pytest.mark.parametrize("maker", ["evil_pickle", "evil_pickle_p2", "evil_torch_save"])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, maker):
    ck = _write(tmp_path, maker)
    p = _train(tmp_path, "--resume", str(ck))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and f"`resume` {ck}" in p.stderr, p.stderr
    assert not (tmp_path / MARKER).exists(), "loading the checkpoint ran the pickle's code"
    if maker != "evil_pickle":  # a raw protocol-5 pickle is refused as "not a torch checkpoint"
        assert "a pickle that would call code, refused unrun (weights_only=True)" in p.stderr, p.stderr


def test_the_evil_pickle_would_write_its_marker():
    """The marker check above can fail: unpickling the same bytes with plain pickle runs
    ``open(marker, 'w')``."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = FILE_MAKERS["evil_pickle"](tmp)
        assert not (tmp / MARKER).exists()
        pickle.loads(data)  # noqa: S301 - the point of this test
        assert (tmp / MARKER).exists()


def test_a_good_checkpoint_resumes_with_exit_0(tmp_path):
    ck = _write(tmp_path, "logreg_checkpoint")  # step 1 of a sync logreg run
    p = _train(tmp_path, "--resume", str(ck))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 steps" not in p.stdout and "2 steps" in p.stdout, p.stdout  # steps 2 and 3 only
