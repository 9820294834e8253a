#!/usr/bin/env bash
# The main job: set up (first run only) and run a coded computation with stragglers and soft
# errors injected, printing what was tolerated. Extra arguments go to `python -m codedml demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/launch/setup.sh" | tail -n 1)"
source "$root/launch/env.sh"
cd "$root"
exec "$python" -m codedml demo "$@"
