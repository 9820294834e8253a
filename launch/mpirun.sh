#!/usr/bin/env bash
# Run codedml under mpiexec on this machine:
#   launch/mpirun.sh N [run options]          python -m codedml run (the main job)
#   launch/mpirun.sh N train [train options]  python -m codedml train (data-parallel SGD)
#   launch/mpirun.sh N script.py [args]       any SPMD script (e.g. benchmarks/train_policies.py)
# Rank 0 is the master, ranks 1..N-1 the workers. With Open MPI (the default install) the job
# runs with ULFM fault tolerance, so a worker killed by a signal costs redundancy, not the job.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/launch/setup.sh" | tail -n 1)"
source "$root/launch/env.sh"
np="${1:-8}"
shift || true
bin="$(dirname "$python")"
mpiexec="$bin/mpiexec"
[ -x "$mpiexec" ] || mpiexec="$(command -v mpiexec)"
ft=()
if "$mpiexec" --version 2>&1 | grep -qi "open mpi\|open-mpi\|openmpi"; then
  ft=(--with-ft ulfm --oversubscribe)
fi
cd "$root"
case "${1:-}" in
  *.py) exec "$mpiexec" "${ft[@]}" -n "$np" "$python" "$@" ;;
  run|train|demo) sub="$1"; shift; exec "$mpiexec" "${ft[@]}" -n "$np" "$python" -m codedml "$sub" "$@" ;;
  *) exec "$mpiexec" "${ft[@]}" -n "$np" "$python" -m codedml run "$@" ;;
esac
