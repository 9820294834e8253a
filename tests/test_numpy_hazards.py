"""numpy loops known to write wrong values into strided outputs are not called so by codedml.

numpy 2.4.6 (the newest on this project's package index when this was found, 2026-12-07)
writes wrong values, without an error, in some of its unary loops when the output is
strided:

* ``np.negative(x, out=y)`` (or ``np.negative(x, y)``) with ``y`` strided: wrong for a
  source whose elements lie 64 bytes apart (a column of an F-ordered 8-row float64 matrix,
  one row or several), float32 sources 16 bytes apart, and other layouts. The encode's
  packed B side of MatDot got wrong tasks this way, no error; ``codedml/codes/_encode.py``'s
  ``_fill`` now multiplies by -1;
* ``np.isfinite``, ``np.isnan``, ``np.isinf`` and ``np.signbit`` into a strided boolean
  output: wrong from 16 elements in one dimension and for two or more rows.

Called without an output they allocate a contiguous result and are right. The first test
checks the workaround over the layouts where negation goes wrong; the second fails if
codedml's own source calls one of these ufuncs with an output (by keyword or position, or
imported by name from numpy).
"""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

import numpy as np

HAZARDS = ("negative", "isfinite", "isnan", "isinf", "signbit")
ROOT = Path(__file__).resolve().parents[1] / "codedml"


def _layouts():
    """(source, output) pairs of strided 1-D and 2-D views, float32 and float64."""
    for dt, rows, n, si, so in itertools.product((np.float64, np.float32), (1, 2, 3),
                                                 (2, 5, 17, 33), (1, 2, 4, 8, 9), (1, 2, 3)):
        base = np.arange(1, rows * n * si + 1, dtype=dt).reshape(rows, n * si)
        base[:, ::4] *= -1
        base[0, 0] = 0.0
        src = base[:, ::si] if rows > 1 else base[0, ::si]
        out = np.full((rows, n * so), 7.0, dt)
        dst = out[:, ::so] if rows > 1 else out[0, ::so]
        yield src, dst


def test_the_workaround_negates_exactly_where_np_negative_does_not():
    wrong = 0
    for src, dst in _layouts():
        want = -np.ascontiguousarray(src)        # numpy's contiguous loop: right
        np.negative(src, out=dst)
        wrong += not np.array_equal(dst, want)
        dst[...] = 7.0
        np.multiply(src, -1.0, out=dst, casting="unsafe")   # what _fill does
        np.testing.assert_array_equal(dst, want)
        assert np.array_equal(np.signbit(dst), np.signbit(want))   # -0.0 for +0.0
    # (how many layouts this numpy gets wrong: 0 once it is fixed; the check above holds
    # either way)
    print(f"numpy {np.__version__}: np.negative wrong in {wrong} strided layouts")


def _hazard_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "numpy":
            bad += [f"{path.relative_to(ROOT.parent)}:{node.lineno} from numpy import {a.name}"
                    for a in node.names if a.name in HAZARDS]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        # unary ufuncs: an output is the second positional argument or out=
        if node.func.attr in HAZARDS and (len(node.args) >= 2
                                          or any(k.arg in ("out", None) for k in node.keywords)):
            bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.func.attr}(..., out)")
    return bad


def test_codedml_calls_no_hazardous_ufunc_with_an_output():
    files = sorted(ROOT.rglob("*.py"))
    assert files, ROOT
    bad = [b for f in files for b in _hazard_calls(f)]
    assert not bad, "numpy ufuncs with a known strided-output bug given an output: " + ", ".join(bad)


def test_the_scan_sees_each_form(tmp_path, monkeypatch):
    f = tmp_path / "codedml" / "probe.py"
    f.parent.mkdir()
    f.write_text("import numpy as np\nfrom numpy import isnan\n"
                 "np.negative(a, out=b)\nnp.negative(a, b)\nnp.isfinite(a, **kw)\n"
                 "np.negative(a)\nnp.multiply(a, -1.0, out=b)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "codedml")
    got = _hazard_calls(f)
    assert sorted(g.split(" ", 1)[1] for g in got) == sorted([
        "from numpy import isnan", "negative(..., out)", "negative(..., out)",
        "isfinite(..., out)"]), got
