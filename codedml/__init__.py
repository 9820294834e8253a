"""codedml: fault-tolerant coded computing.

Encode work with error-correcting codes so the exact result can be decoded from any
large-enough subset of workers, and corrupt results can be located and excluded.

Subpackages: :mod:`codedml.codes` (pure array math). ``import codedml`` imports neither
torch nor mpi4py.
"""

from .errors import (CodedMLError, ConfigurationError, CorruptResultError,
                     NotEnoughResultsError, WorkerFailure)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "CodedMLError",
    "ConfigurationError",
    "CorruptResultError",
    "NotEnoughResultsError",
    "WorkerFailure",
]
