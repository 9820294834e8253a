"""The exception hierarchy of codedml.

Every error the library raises on purpose derives from :class:`CodedMLError`, so
``except CodedMLError`` catches all of them. Each leaf says, in its docstring, who
raises it. Messages name the argument, the valid range and the value received.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CodedMLError",
    "ConfigurationError",
    "FaultError",
    "NotEnoughResultsError",
    "DeadlineError",
    "CorruptResultError",
    "WorkerFailure",
    "UpdateFailedError",
    "NonFiniteUpdateError",
    "ProtocolError",
    "ClusterClosedError",
    "TrainingError",
    "StaleWeightError",
]


class CodedMLError(Exception):
    """Root of every error raised on purpose by codedml."""


class ConfigurationError(CodedMLError, ValueError):
    """Raised for a bad argument or configuration: wrong range, shape, type or field."""


class FaultError(CodedMLError):
    """Root of the errors that are a fault's consequence (not a bad argument): too few or too
    many corrupt results, a failed worker, a missed deadline, a non-finite update. The
    command-line tools exit with status 3 for these, and 2 only for a
    :class:`ConfigurationError`."""


class NotEnoughResultsError(FaultError):
    """Raised by ``decode`` when the results given cannot determine the product."""

    def __init__(self, message: str, *, received: int, needed: int) -> None:
        super().__init__(message)
        self.received = received
        self.needed = needed


class DeadlineError(NotEnoughResultsError, TimeoutError):
    """Raised by the runtime when a request's deadline (counted from its submission) passes
    before enough answers arrived; the message names the silent and the crashed ranks."""


class CorruptResultError(FaultError):
    """Raised by ``decode`` when results are inconsistent beyond the code's power to correct."""

    def __init__(self, message: str, *, suspects: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.suspects = tuple(sorted(suspects))


class WorkerFailure(FaultError):
    """Raised by the runtime when a worker fails; carries where it happened (rank, host, job,
    operation), the remote exception's type name and its traceback text."""

    def __init__(self, message: str, *, rank: int | None = None, host: str | None = None,
                 job: int | None = None, remote_traceback: str | None = None,
                 op: str | None = None, exc_type: str | None = None) -> None:
        where = ", ".join(f"{k}={v}" for k, v in (("rank", rank), ("host", host), ("job", job),
                                                   ("op", op)) if v is not None)
        super().__init__(f"{message} ({where})" if where else message)
        self.rank = rank
        self.host = host
        self.job = job
        self.op = op
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class UpdateFailedError(WorkerFailure):
    """Raised by the runtime (on the acknowledgement future of ``put`` / ``update`` /
    ``sgd_step`` / ``drop``) when a worker could not apply the operation: its stored block is
    marked stale and excluded from products until a scrub repairs it."""


class NonFiniteUpdateError(FaultError, ValueError):
    """Raised by ``update`` / ``sgd_step`` and the coded layers when an update's factors (a
    gradient) hold NaN or Inf: a fault upstream, refused before any stored block is touched."""


class ProtocolError(CodedMLError):
    """Raised by the runtime's transport when a message fails validation on receipt (unknown
    operation or kind, a shape or dtype out of range, a payload of the wrong size)."""


class ClusterClosedError(CodedMLError, RuntimeError):
    """Raised by a cluster's methods after ``close()``."""


class TrainingError(FaultError):
    """Raised by ``codedml.train`` when a policy cannot continue (e.g. a crashed worker under
    fully synchronous training); names the step and the policy."""

    def __init__(self, message: str, *, step: int | None = None, policy: str | None = None) -> None:
        super().__init__(f"step {step}: {message}" if step is not None else message)
        self.step = step
        self.policy = policy


class StaleWeightError(CodedMLError, RuntimeError):
    """Raised by a coded layer's backward pass when its weight changed after the forward pass
    that is being differentiated (``set_weight``, an optimizer step, ``load_state_dict``), as
    torch raises for a saved tensor modified in place; and by a coded layer whose root-side
    weight was modified in place while the stored weight had moved on (a ``CodedSGD`` step it
    had not read back)."""
