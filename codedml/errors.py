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
    "NotEnoughResultsError",
    "CorruptResultError",
    "WorkerFailure",
    "TrainingError",
]


class CodedMLError(Exception):
    """Root of every error raised on purpose by codedml."""


class ConfigurationError(CodedMLError, ValueError):
    """Raised for a bad argument or configuration: wrong range, shape, type or field."""


class NotEnoughResultsError(CodedMLError):
    """Raised by ``decode`` when the results given cannot determine the product."""

    def __init__(self, message: str, *, received: int, needed: int) -> None:
        super().__init__(message)
        self.received = received
        self.needed = needed


class CorruptResultError(CodedMLError):
    """Raised by ``decode`` when results are inconsistent beyond the code's power to correct."""

    def __init__(self, message: str, *, suspects: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.suspects = tuple(sorted(suspects))


class WorkerFailure(CodedMLError):
    """Raised by the runtime when a worker fails; carries where it happened."""

    def __init__(self, message: str, *, rank: int | None = None, host: str | None = None,
                 job: int | None = None, remote_traceback: str | None = None) -> None:
        where = ", ".join(f"{k}={v}" for k, v in (("rank", rank), ("host", host), ("job", job))
                          if v is not None)
        super().__init__(f"{message} ({where})" if where else message)
        self.rank = rank
        self.host = host
        self.job = job
        self.remote_traceback = remote_traceback


class TrainingError(CodedMLError):
    """Raised by ``codedml.train`` when a policy cannot continue (e.g. a crashed worker under
    fully synchronous training); names the step and the policy."""

    def __init__(self, message: str, *, step: int | None = None, policy: str | None = None) -> None:
        super().__init__(f"step {step}: {message}" if step is not None else message)
        self.step = step
        self.policy = policy
