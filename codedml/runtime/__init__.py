"""The master/worker runtime: :class:`MPICluster` under mpiexec and :class:`LocalCluster`
in one process, with one API (``matmul``, ``submit``, ``put``, ``update``, ``matmul_left``,
``sgd_step``, ``fetch``, ``scrub``, ``call``)."""

from ._cluster import Call, Job, JobReport, ResidentHandle, ScrubReport, WorkerStatus
from ._worker import WorkerContext
from .local import LocalCluster
from .mpi import MPICluster

__all__ = ["MPICluster", "LocalCluster", "Job", "JobReport", "ResidentHandle", "WorkerStatus",
           "Call", "ScrubReport", "WorkerContext"]
