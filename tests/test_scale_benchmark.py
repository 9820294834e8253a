"""``benchmarks/scale.py`` run for real, small: every part of the master's work it reports is
timed (a wrapper that never runs would leave that work out of the figure, and the child says
so and fails), on both requests, and the driver's exit status says whether it succeeded."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from _mpirun import needs_mpiexec, run_process

SCALE = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"


@needs_mpiexec
def test_scale_times_every_part_of_the_masters_work(tmp_path):
    out = tmp_path / "scale.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    done = run_process([sys.executable, str(SCALE), "--workers", "3", "4", "--jobs", "6",
                        "--out", str(out)], env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert [p["workers"] for p in doc["points"]] == [3, 4]
    for p in doc["points"]:
        job, call = p["rows"]["job"], p["rows"]["call"]
        for part in ("encode", "send", "receive", "decode"):
            assert job[f"{part}_median_s"] > 0, (p["workers"], part)
        assert call["send_median_s"] > 0 and call["receive_median_s"] > 0, p
        assert call["encode_median_s"] == 0 and call["decode_median_s"] == 0
    assert set(doc["fits"]) == {"job", "call"}
    assert doc["machine"]["commit"]
