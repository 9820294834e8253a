# Sourced by the launch scripts: one BLAS/torch thread per process (oversubscribed ranks ran
# 4-11x slower with default threading), Open MPI allowed to run as root and oversubscribe.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=true
export PYTHONUNBUFFERED=1
