"""numpy loops known to write wrong values into strided outputs are not called so by codedml.

numpy 2.4.6 (the newest on this project's package index when this was found, 2026-12-07):

* ``np.negative(x, out=y)`` with ``x`` one row whose elements lie exactly 64 bytes apart (a
  column of an F-ordered 8-row float64 matrix) and ``y`` strided reads ``x`` as if its
  elements were adjacent (the encode's packed B side of MatDot got wrong tasks, no error;
  ``codedml/codes/_encode.py::_fill`` now multiplies by -1);
* ``np.isfinite`` and ``np.isnan`` into a strided boolean ``out`` of two or more rows write
  wrong values.

The first test shows each bug where this numpy has it (it skips where numpy is fixed); the
second fails if codedml's own source calls one of these ufuncs with ``out=``, which is where
they go wrong (called without ``out=`` they allocate a contiguous result and are right).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

HAZARDS = ("negative", "isfinite", "isnan", "isinf", "signbit")
ROOT = Path(__file__).resolve().parents[1] / "codedml"


def _numpy_has_the_bugs() -> list[str]:
    found = []
    base = np.arange(1.0, 17.0)
    out = np.zeros(8)
    np.negative(base[::8], out=out[::2][:2])
    if not np.array_equal(out[::2][:2], -base[::8]):
        found.append("negative")
    x = np.arange(1.0, 19.0).reshape(2, 9)
    x[:, ::3] = np.nan
    o = np.zeros((2, 18), bool)
    np.isfinite(x, out=o[:, ::2])
    if not np.array_equal(o[:, ::2], np.isfinite(x)):
        found.append("isfinite")
    return found


def test_the_numpy_bugs_are_as_described():
    found = _numpy_has_the_bugs()
    if not found:
        pytest.skip(f"numpy {np.__version__} writes these strided outputs right")
    assert set(found) <= set(HAZARDS)


def _hazard_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr in HAZARDS and any(k.arg == "out" for k in node.keywords):
            bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.func.attr}(..., out=)")
    return bad


def test_codedml_calls_no_hazardous_ufunc_with_out():
    files = sorted(ROOT.rglob("*.py"))
    assert files, ROOT
    bad = [b for f in files for b in _hazard_calls(f)]
    assert not bad, "numpy ufuncs with a known strided-output bug called with out=: " + ", ".join(bad)
