"""A process's exit status, told truthfully even where MPI_Finalize must be skipped.

With Open MPI 5's ULFM, ``MPI_Finalize`` after a rank died hung in 1 of 4-8 runs here, every
survivor waiting in ``ompi_mpi_finalize``. So once a rank has died, every process ends at
interpreter exit through an ``atexit`` hook that flushes the standard streams and calls
``os._exit`` -- with the program's own status: the one given to :func:`exit_process` (the
command-line tools use it), else 1 after an uncaught exception, else 0. A script that ends
with ``sys.exit(status)`` or ``raise SystemExit(status)`` should call
``codedml.runtime.exit_process(status)`` instead, because an atexit hook cannot read the
status of a ``SystemExit``.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

__all__ = ["exit_process", "skip_finalize_at_exit", "finalize_skipped"]

_state: dict[str, object] = {"armed": False, "status": None, "uncaught": False}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover - a closed stream
            pass


def _at_exit() -> None:
    status = _state["status"]
    if status is None:
        status = 1 if _state["uncaught"] else 0
    _flush()
    os._exit(int(status))  # type: ignore[arg-type]


def skip_finalize_at_exit() -> None:
    """From now on, end this process at interpreter exit without ``MPI_Finalize``, with the
    program's own exit status (see the module's docstring). Idempotent."""
    if _state["armed"]:
        return
    _state["armed"] = True
    previous = sys.excepthook

    def hook(*args: object) -> None:
        _state["uncaught"] = True
        previous(*args)  # type: ignore[arg-type]

    sys.excepthook = hook
    atexit.register(_at_exit)


def finalize_skipped() -> bool:
    """Whether this process will skip ``MPI_Finalize`` at exit."""
    return bool(_state["armed"])


def exit_process(status: int) -> NoReturn:
    """End the program with ``status`` (``sys.exit`` semantics), truthfully also when MPI
    finalization is skipped after a rank died."""
    status = int(status)
    _state["status"] = status
    if _state["armed"]:
        _flush()
        os._exit(status)
    sys.exit(status)
