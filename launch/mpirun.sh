#!/usr/bin/env bash
# Run `python -m codedml run` under mpiexec on this machine: launch/mpirun.sh N [run options].
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
exec "$mpiexec" "${ft[@]}" -n "$np" "$python" -m codedml run "$@"
