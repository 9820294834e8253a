#!/usr/bin/env bash
# The compiled modules under AddressSanitizer and UndefinedBehaviorSanitizer: a copy of the
# checkout (its tracked files, as they are now) in a temporary directory,
# codedml/codes/_kernels and codedml/runtime/_wire built there with
# -fsanitize=address,undefined (no recovery: the first finding ends its process), then pytest
# on that copy with the ASan runtime preloaded (into every mpiexec rank too). Any report
# fails the run: the script prints it and exits 1, whatever pytest said.
#
#   bash launch/sanitize.sh                    # both modules; the kernel, codes and runtime suites
#   bash launch/sanitize.sh --modules kernels tests/test_lincomb.py -x   # pytest arguments after
#
# Exit status: pytest's where no report was written; 1 on a report (or a copy that did not
# load the sanitized module); 77 where ASan cannot run on this machine or no C compiler is
# found (the reason printed). The build and the reports stay in the printed directory where
# it fails (removed where it passes, or kept with SANITIZE_KEEP=1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
modules="kernels,wire"
if [ "${1:-}" = "--modules" ]; then
  modules="${2:?--modules needs a value: kernels, wire or kernels,wire}"
  shift 2
fi
if ! [[ "$modules" =~ ^(kernels|wire)(,(kernels|wire))?$ ]]; then
  echo "sanitize.sh: --modules must name kernels and/or wire, got '$modules'" >&2
  exit 2
fi
python="$(bash "$root/launch/setup.sh" | tail -n 1)"
source "$root/launch/env.sh"
cc="${CC:-gcc}"
if ! command -v "$cc" >/dev/null; then
  echo "sanitize.sh: no C compiler ($cc): nothing to check" >&2
  exit 77
fi
libasan="$("$cc" -print-file-name=libasan.so)"
libstdcxx="$("$cc" -print-file-name=libstdc++.so)"   # torch's C++ exceptions need it first
if [ "$libasan" = "libasan.so" ]; then
  echo "sanitize.sh: $cc has no AddressSanitizer runtime (libasan.so): nothing to check" >&2
  exit 77
fi
if [ "$("$cc" -print-file-name=libubsan.so)" = "libubsan.so" ]; then
  echo "sanitize.sh: $cc has no UndefinedBehaviorSanitizer runtime (libubsan.so): nothing to check" >&2
  exit 77
fi
preload="$libasan"
[ "$libstdcxx" != "libstdc++.so" ] && preload="$preload $libstdcxx"
if ! probe="$(LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 "$python" -c "pass" 2>&1)"; then
  echo "sanitize.sh: AddressSanitizer cannot run here: ${probe:0:400}" >&2
  exit 77
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/codedml-sanitize.XXXXXX")"
keep="${SANITIZE_KEEP:-0}"
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ] || [ "$keep" = "1" ]; then
    echo "sanitize.sh: the sanitized copy and its reports are in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap finish EXIT
(cd "$root" && git ls-files -z | tar --null -T - -cf -) | (cd "$work" && tar -xf -)
mkdir -p "$work/reports"

echo "sanitize.sh: building $modules with -fsanitize=address,undefined in $work" >&2
(cd "$work" && SANITIZE_MODULES="$modules" "$python" - >"$work/build.log" 2>&1 <<'PY'
import os, sys
from setuptools import setup

sys.path.insert(0, ".")
from setup import extensions   # the package's own module definitions, sanitized flags after

want = os.environ["SANITIZE_MODULES"].split(",")
ext = extensions(want, ["-O1", "-g", "-fsanitize=address,undefined",
                        "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"],
                 ["-fsanitize=address,undefined"], optional=False)
if len(ext) != len(want):
    sys.exit("sanitize.sh: no mpicc found: codedml.runtime._wire cannot be built")
setup(name="codedml-sanitize", ext_modules=ext, script_args=["build_ext", "--inplace"])
PY
) || { tail -n 30 "$work/build.log" >&2; echo "sanitize.sh: the sanitized build FAILED" >&2; exit 1; }

export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$preload"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$work/reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/reports/ubsan"
export REQUIRE_CODEDML_KERNELS=1
cd "$work"
# the copy's modules, sanitized, are what Python imports (not the checkout's)
"$python" - "$work" "$modules" <<'PY' || exit 1
import importlib, sys
work, want = sys.argv[1], sys.argv[2].split(",")
names = {"kernels": "codedml.codes._kernels", "wire": "codedml.runtime._wire"}
for key in want:
    mod = importlib.import_module(names[key])
    if not mod.__file__.startswith(work + "/"):
        sys.exit(f"sanitize.sh: {names[key]} came from {mod.__file__}, not the sanitized copy")
    with open(mod.__file__, "rb") as f:
        binary = f.read()
    for mark, flag in ((b"__asan_report", "address"), (b"__ubsan_handle", "undefined")):
        if mark not in binary:
            sys.exit(f"sanitize.sh: {mod.__file__} was built without -fsanitize={flag}")
if "libasan" not in open("/proc/self/maps").read():
    sys.exit("sanitize.sh: the ASan runtime is not loaded (LD_PRELOAD)")
print(f"sanitize.sh: {', '.join(names[k] for k in want)} sanitized, from {work}", file=sys.stderr)
PY
if [ "$#" -eq 0 ]; then
  set -- -q -p no:cacheprovider tests/test_kernels.py tests/test_pool.py tests/test_lincomb.py \
    tests/test_encode.py tests/test_systematic.py tests/test_gfp.py tests/test_eft.py \
    tests/test_codes_api.py tests/test_codes_properties.py tests/test_numerics.py \
    tests/test_soft_errors.py tests/test_local_cluster.py tests/test_wire.py tests/test_mpi.py
fi
# ASan writes its reports to files (log_path); UBSan, beside a preloaded ASan, to the
# process's stderr only, which pytest's capture would take down with a process that a
# finding ends: so pytest runs with -s, its stderr kept (and shown), and UBSan's findings in
# it become a report. (An MPI rank's stderr reaches the test that started it; a finding
# there ends the rank with status 1, which fails that test.)
set +e
{ "$python" -m pytest -s "$@" 2>&1 1>&3 3>&- | tee "$work/pytest.stderr" >&2; } 3>&1
rc=${PIPESTATUS[0]}
set -e
if grep -q "runtime error:" "$work/pytest.stderr"; then
  grep -A 14 "runtime error:" "$work/pytest.stderr" > "$work/reports/ubsan.stderr"
fi
shopt -s nullglob
reports=("$work"/reports/*)
if [ "${#reports[@]}" -gt 0 ]; then
  for r in "${reports[@]}"; do
    echo "=== $r" >&2
    grep -v -e "Objects/" -e "Python/" -e "Include/" -e "Modules/" "$r" | head -n 60 >&2
  done
  echo "sanitize.sh: ${#reports[@]} sanitizer report(s): FAILED" >&2
  exit 1
fi
echo "sanitize.sh: no sanitizer report (pytest exit $rc)" >&2
exit "$rc"
