#!/usr/bin/env bash
# The main job: set up (first run only), then a coded matrix-product experiment under mpiexec
# with 8 ranks (1 master, 7 workers), two straggling ranks and exponent bit flips injected,
# printing what was tolerated. Extra arguments go to `python -m codedml run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$root/launch/mpirun.sh" "${CODEDML_RANKS:-8}" "$@"
