"""The master/worker runtime: :class:`MPICluster` under mpiexec and :class:`LocalCluster`
in one process, with one API (``matmul``, ``submit``, ``put``, ``update``)."""

from ._cluster import Job, JobReport, ResidentHandle, WorkerStatus
from .local import LocalCluster
from .mpi import MPICluster

__all__ = ["MPICluster", "LocalCluster", "Job", "JobReport", "ResidentHandle", "WorkerStatus"]
