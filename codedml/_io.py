"""Atomic, durable file writes and early checks that an output path is writable.

Every file codedml writes (checkpoints, the metrics JSON lines when they are rewritten, the
result JSON of ``run`` / ``train`` / ``demo``, plots) goes through :func:`atomic_write`:

1. the content is written to a temporary file *in the same directory* (so the final rename
   never crosses a file system),
2. the temporary file is flushed and ``fsync``-ed,
3. ``os.replace`` puts it in place (atomic on POSIX: a reader sees the old file or the new
   one, never a torn one),
4. the directory is ``fsync``-ed, so the rename itself survives a power loss.

A crash at any point leaves either the previous file or the new one, and at worst a stray
``.<name>.*.tmp`` file, never a half-written target.

:func:`check_writable` is what the command-line tools call *before* a run starts, so an
unwritable ``--out`` is a configuration error (exit 2) that names the flag and the path,
not a traceback after minutes of work.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ConfigurationError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "atomic_save",
           "fsync_dir", "check_writable"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a directory (its entries: a rename or a new file). A file system that cannot
    (some network or FUSE mounts refuse ``O_RDONLY`` on a directory) is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on a clean exit of the ``with``
    block it is fsync-ed, renamed onto ``path`` and the directory fsync-ed. On an exception
    the temporary file is removed and ``path`` is left as it was.

    Parent directories are created. ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "x.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "x.txt").read_text()
    'hello'
    """
    if mode not in ("wb", "w"):
        raise ConfigurationError(f"`mode` must be 'wb' or 'w', got {mode!r}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **kw: Any) -> None:
    """``json.dumps(obj, **kw)`` written to ``path`` atomically and durably."""
    atomic_write_text(path, json.dumps(obj, **kw))


def atomic_save(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(file)`` on a temporary binary file, then put it in place atomically
    (for ``torch.save(obj, f)`` or ``figure.savefig(f, format="png")``)."""
    with atomic_write(path, "wb") as f:
        writer(f)


def check_writable(flag: str, path: str | os.PathLike[str]) -> None:
    """Raise :class:`ConfigurationError` naming ``flag`` and ``path`` unless a file can be
    created at ``path``: it must not be a directory, and its nearest existing ancestor must be
    a directory this process may write into (missing directories are created at write time).

    A probe file is created and removed in the nearest existing directory, so read-only mounts
    and permission bits are both found (root ignores permission bits; a probe does not).
    """
    p = Path(os.fspath(path))
    if not str(path):
        return
    if p.is_dir():
        raise ConfigurationError(f"`{flag}` must be a file path, got a directory: {path}")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigurationError(f"`{flag}` must be a writable file, got {path} (not writable)")
    anc = p.parent if str(p.parent) else Path(".")
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigurationError(
            f"`{flag}` must be a path in a writable directory, got {path} ({anc} is not a directory)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".codedml-probe.", dir=anc)
    except OSError as exc:
        raise ConfigurationError(
            f"`{flag}` must be a path in a writable directory, got {path} "
            f"({anc}: {exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)
