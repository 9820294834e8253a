"""codedml: fault-tolerant coded computing.

Encode work with error-correcting codes so the exact result can be decoded from any
large-enough subset of workers, and corrupt results can be located and excluded.

Subpackages: :mod:`codedml.codes` (pure array math), :mod:`codedml.train` (data-parallel SGD,
imported on first use). ``import codedml`` imports neither
torch nor mpi4py.
"""

from .errors import (CodedMLError, ConfigurationError, CorruptResultError,
                     NotEnoughResultsError, TrainingError, WorkerFailure)

__version__ = "0.1.0"


def __getattr__(name: str):
    # The runtime is imported on first use, so ``import codedml`` stays light (no mpi4py).
    if name in ("MPICluster", "LocalCluster"):
        from . import runtime

        return getattr(runtime, name)
    if name == "train":  # data-parallel training imports torch: only when asked for
        import importlib

        return importlib.import_module(".train", __name__)
    raise AttributeError(f"module 'codedml' has no attribute {name!r}")

__all__ = [
    "__version__",
    "CodedMLError",
    "ConfigurationError",
    "CorruptResultError",
    "NotEnoughResultsError",
    "WorkerFailure",
    "TrainingError",
    "MPICluster",
    "LocalCluster",
]
