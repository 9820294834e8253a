"""The master/worker runtime: :class:`MPICluster` under mpiexec and :class:`LocalCluster`
in one process, with one API (``submit``/``matmul``, ``call``, and the resident-operand
service: ``put``, ``update``, ``sgd_step``, ``matmul_left``, ``fetch``, ``scrub``, ``drop``).

Every request is a :class:`concurrent.futures.Future` (:class:`Job`, :class:`Call`,
:class:`Ack`) with a finite deadline; messages are the typed records of
:mod:`codedml.runtime.protocol`.
"""

from ._cluster import DEFAULT_TIMEOUT, ClusterBase, retry_on_corrupt
from ._exit import exit_process
from ._resident import ResidentHandle, ResidentService, ScrubReport
from ._worker import WorkerContext
from .futures import Ack, AckReport, Call, Job, JobReport, WorkerStatus
from .local import LocalCluster
from .mpi import MPICluster

__all__ = ["MPICluster", "LocalCluster", "ClusterBase", "Job", "JobReport", "Call", "Ack",
           "AckReport", "ResidentHandle", "ResidentService", "ScrubReport", "WorkerStatus",
           "WorkerContext", "retry_on_corrupt", "exit_process", "DEFAULT_TIMEOUT"]
