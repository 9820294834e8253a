"""The README's measured blocks are rendered from the committed benchmark JSON."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_blocks_match_the_benchmark_json():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_readme.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
