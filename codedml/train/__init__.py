"""Data-parallel SGD over the runtime (``codedml.train``).

The root holds the model and the optimizer; workers hold data shards and a model replica and
answer gradient requests (a registered handler, :func:`handlers`). Policies: ``sync``,
``ksync``, ``kbatch_sync``, ``async``, ``kasync``, ``kbatch_async`` (Dutta, Wang, Joshi 2018)
and ``gradient_coding`` (Tandon et al. 2017); ``adasync`` (K-sync with K growing) and the
federated ``fedavg``, ``fsvrg`` and ``dane`` over IID or Dirichlet label-skewed shards
(:mod:`codedml.train.federated`, :mod:`codedml.train.partition`); optional QSGD compression
(Alistarh et al. 2017) or data quantization (Hanna et al. 2020, :mod:`codedml.train.dataquant`);
a quadratic network task (:func:`quadratic_task`); crash tolerance, soft-error screening,
checkpoints. See docs/train.md.

Examples
--------
>>> from codedml.train import TrainConfig, digits_task, train
>>> res = train(digits_task("logreg"), TrainConfig(policy="kasync", k=2, steps=20), local=4)
>>> res.loss < 2.3
True
"""

from .config import FEDERATED, POLICIES, TrainConfig
from .policies import POLICY_FUNCTIONS, PolicyState, StepOutcome
from .qsgd import decode as qsgd_decode, encode as qsgd_encode, payload_bits as qsgd_bits
from .task import FED_HANDLER, HANDLER, Task, digits_task, handlers, make_model, partition_indices
from .trainer import CHECKPOINT_FORMAT, Engine, TrainResult, fit, load_checkpoint, train
from ..errors import TrainingError

__all__ = ["POLICIES", "FEDERATED", "FED_HANDLER", "POLICY_FUNCTIONS", "TrainConfig", "PolicyState", "StepOutcome", "Task",
           "digits_task", "make_model", "partition_indices", "handlers", "HANDLER", "Engine",
           "TrainResult", "fit", "train", "load_checkpoint", "CHECKPOINT_FORMAT", "TrainingError",
           "qsgd_encode", "qsgd_decode", "qsgd_bits"]

# Data quantization (Hanna et al. 2020) and the quadratic-network task (issue 13).
from .quadratic import quadratic_task  # noqa: E402

__all__ += ["quadratic_task"]
