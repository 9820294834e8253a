#!/usr/bin/env bash
# The test suite: set up (first run only), then run every test. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/launch/setup.sh" | tail -n 1)"
source "$root/launch/env.sh"
cd "$root"
# --durations: the slowest tests named at the end of every run (the suite must stay under 20 min)
exec "$python" -m pytest -q --durations=25 "$@"
