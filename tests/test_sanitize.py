"""The compiled modules under AddressSanitizer and UndefinedBehaviorSanitizer
(``launch/sanitize.sh``): the kernel and wire suites run clean against sanitized builds, and
the check itself fails on either sanitizer's report.

The script builds a copy of the checkout with ``-fsanitize=address,undefined`` (about a
minute for both modules at -O1 on 2 cores) and preloads the ASan runtime. It exits 77 where
ASan cannot run (no compiler runtime, or a kernel whose address-space layout ASan cannot
map): the tests skip then, with the script's reason."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "launch" / "sanitize.sh"


def _sanitize(tmp: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The script, its sanitized copy under ``tmp`` (kept there where the check fails)."""
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, TMPDIR=str(tmp)))
    if done.returncode == 77:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    return done


def _needs_wire() -> None:
    """Skip where the wire module is not built: its sanitized build is the cheap one that the
    checks of the check make."""
    from codedml.runtime.mpi import wire_status

    if not wire_status()[0]:
        pytest.skip(f"the wire module is not built here ({wire_status()[1]})")


def test_kernels_and_wire_run_clean_under_the_sanitizers(tmp_path):
    """The kernel, pool and lincomb suites (every SIMD level this CPU has) and the wire's
    tests, against sanitized builds of both modules: no report, every test passed. The
    fused walk's aligned reads around its sources (safe: see LC_NO_ASAN in _kernels.c) are
    the one thing left out of ASan's check."""
    from codedml.runtime.mpi import wire_status

    modules = "kernels,wire" if wire_status()[0] else "kernels"
    files = ["tests/test_kernels.py", "tests/test_pool.py", "tests/test_lincomb.py"]
    if modules != "kernels":
        files.append("tests/test_wire.py")
    done = _sanitize(tmp_path, "--modules", modules, "-q", "-p", "no:cacheprovider", "-x", *files)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])
    assert "no sanitizer report (pytest exit 0)" in done.stderr, done.stderr[-3000:]
    assert "sanitized, from" in done.stderr, done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-2000:]


def test_the_check_fails_on_an_asan_report(tmp_path):
    """A test that reads 800 bytes past an array (``ctypes.memmove``, which ASan checks)
    fails the check: exit 1, the report printed (a heap-buffer-overflow), whatever pytest
    says (it is killed with the process)."""
    _needs_wire()
    bad = tmp_path / "test_overflow.py"
    bad.write_text(
        "import ctypes\nimport numpy as np\n\n\n"
        "def test_reads_past_an_array():\n"
        "    a = np.ones(1000)\n"
        "    b = np.empty(1100)\n"
        "    ctypes.memmove(b.ctypes.data, a.ctypes.data, 8800)\n")
    done = _sanitize(tmp_path, "--modules", "wire", "-q", "-p", "no:cacheprovider", str(bad), timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "heap-buffer-overflow" in done.stderr, done.stderr[-3000:]
    assert "1 sanitizer report(s): FAILED" in done.stderr, done.stderr[-3000:]


def test_the_check_fails_on_a_ubsan_report(tmp_path):
    """A library built as the script builds (-fsanitize=address,undefined) that loads a
    double from an address 4 bytes off (undefined behaviour, as the kernels' scalar loop had
    before it read such rows through types of alignment 1) fails the check: exit 1, UBSan's
    report printed."""
    import shutil

    _needs_wire()
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    src = tmp_path / "probe.c"
    src.write_text("double probe(const char *p) { return *(const double *)(p + 4); }\n")
    lib = tmp_path / "probe.so"
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined", str(src), "-o", str(lib)], check=True)
    bad = tmp_path / "test_misaligned.py"
    bad.write_text(
        "import ctypes\nimport numpy as np\n\n\n"
        "def test_loads_a_misaligned_double():\n"
        f"    lib = ctypes.CDLL({str(lib)!r})\n"
        "    lib.probe.restype = ctypes.c_double\n"
        "    a = np.zeros(4)\n"
        "    lib.probe(ctypes.c_void_p(a.ctypes.data))\n")
    done = _sanitize(tmp_path, "--modules", "wire", "-q", "-p", "no:cacheprovider", str(bad),
                     timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "misaligned address" in done.stderr, done.stderr[-3000:]
    assert "1 sanitizer report(s): FAILED" in done.stderr, done.stderr[-3000:]


def test_bad_modules_are_refused():
    done = subprocess.run(["bash", str(SCRIPT), "--modules", "gpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--modules must name kernels and/or wire, got 'gpu'" in done.stderr
