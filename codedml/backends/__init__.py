"""Where a worker's product runs: numpy, torch on the CPU, or torch on a CUDA GPU.

Backends are looked up by name in a registry (``get_backend("torch")``); heavy imports happen
only when a backend is used. A backend holds a worker's resident operands in its own format
(``to_device``), multiplies (``matmul``) and returns numpy arrays for the wire (``to_numpy``).
GF(p) products always run on the CPU through the exact BLAS kernel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = ["Backend", "NumpyBackend", "TorchBackend", "get_backend", "available_backends",
           "registered_backends", "register_backend", "set_threads"]


class Backend:
    """Interface: ``to_device(array)``, ``matmul(a, b)``, ``to_numpy(x)``, ``add_(a, delta)``."""

    name = "abstract"

    def to_device(self, x: np.ndarray) -> Any:
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def matmul(self, a: Any, b: Any) -> Any:
        return a @ b

    def matmul_compensated(self, a: Any, b: Any) -> Any:
        """``a @ b`` with ``2^-bits`` of a plain GEMM's error plus one rounding, in three GEMMs
        (see :func:`codedml.codes._eft.compensated_matmul`); float64/complex128 operands."""
        from ..codes._eft import compensated_matmul

        return compensated_matmul(self.to_numpy(a), self.to_numpy(b))

    def add_(self, a: Any, delta: Any) -> Any:
        """In-place ``a += delta`` (a resident operand's linear update); returns ``a``."""
        a += delta
        return a

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NumpyBackend(Backend):
    """numpy / BLAS on the CPU."""

    name = "numpy"

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b``; a real or complex product of 2-D ``a`` and 1-D or 2-D ``b`` is written into
        reused memory (:func:`codedml.codes._pool.empty`): a worker multiplies job after job,
        and a fresh result of 64 KiB or more is otherwise fresh pages, faulted in on first
        touch (measured on this project's VM: more than the product itself at 512)."""
        if (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2 and b.ndim in (1, 2)
                and a.shape[1] == b.shape[0]
                # small products (under the pool's bound even as complex128) allocate as usual
                and 16 * a.shape[0] * (b.shape[1] if b.ndim == 2 else 1) >= _POOL_MIN):
            dt = np.result_type(a.dtype, b.dtype)
            if dt.kind in "fc":
                return np.matmul(a, b, out=_pool().empty((a.shape[0],) + b.shape[1:], dt))
        return a @ b


#: ``codedml.codes._pool.MIN_BYTES``: a product smaller than this never takes pooled memory
#: (kept here so that the check needs no import; tests/test_pool.py checks they agree).
_POOL_MIN = 1 << 16


def _pool() -> Any:
    """``codedml.codes._pool``, imported on first use (importing it here at module level would
    make ``codedml.backends`` import the codes package)."""
    from ..codes import _pool as mod

    return mod


class TorchBackend(Backend):
    """torch on the CPU (``device="cpu"``) or a GPU (``device="cuda"``; the rank's local GPU).

    Products of float64 operands stay float64 on the device; complex operands (the inner-split
    codes) use torch's complex matmul.
    """

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        if not isinstance(device, str):
            raise ConfigurationError(
                f"`device` must be a torch device string such as 'cpu' or 'cuda:0', got {device!r}")
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigurationError("backend 'cuda' needs a CUDA GPU, and torch sees none")
            if device == "cuda":
                local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK",
                                           os.environ.get("MPI_LOCALRANKID", "0")))
                device = f"cuda:{local % torch.cuda.device_count()}"
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ConfigurationError(
                f"`device` must be a torch device string such as 'cpu' or 'cuda:0', got {device!r}") from exc
        self.name = "cuda" if self.device.type == "cuda" else "torch"

    def to_device(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        return x.detach().cpu().numpy()

    def matmul(self, a: Any, b: Any) -> Any:
        if isinstance(a, np.ndarray):
            a = self.to_device(a)
        if isinstance(b, np.ndarray):
            b = self.to_device(b)
        return self.torch.matmul(a, b)

    def matmul_compensated(self, a: Any, b: Any) -> Any:
        """:func:`codedml.codes._eft.compensated_matmul` in torch ops, on the backend's device:
        per-row heads of ``a`` and per-column heads of ``b`` on power-of-two grids (``(x +
        sigma) - sigma``), so that ``a1 @ b1`` is exact, plus the two small cross products."""
        from ..codes._eft import _MAX_UNIT_EXP, split_bits

        torch = self.torch
        a = self.to_device(a) if isinstance(a, np.ndarray) else a
        b = self.to_device(b) if isinstance(b, np.ndarray) else b
        cplx = a.is_complex() or b.is_complex()
        wide = torch.complex128 if cplx else torch.float64
        a, b = a.to(wide), b.to(wide)
        vec = b.dim() == 1
        b2d = b[:, None] if vec else b
        bits = split_bits(a.shape[1] * (2 if cplx else 1))

        def head(x: Any, dim: int) -> Any:  # x's leading bits, one grid per row (dim=1) / column (0)
            mag = torch.view_as_real(x).abs().amax(dim=-1) if cplx else x.abs()
            peak = mag.amax(dim=dim, keepdim=True) if x.numel() else mag.sum(dim=dim, keepdim=True)
            peak = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
            _, e = torch.frexp(peak)
            sigma = torch.ldexp(torch.full_like(peak, 1.5 * 2.0 ** 52),
                                (e - bits).clamp(max=_MAX_UNIT_EXP).to(peak.dtype))
            if cplx:
                sigma = torch.complex(sigma, sigma)
            return (x + sigma) - sigma

        a1, b1 = head(a, 1), head(b2d, 0)
        out = a1 @ b1
        out += a @ (b2d - b1) + (a - a1) @ b1
        return out[:, 0] if vec else out

    def add_(self, a: Any, delta: Any) -> Any:
        if isinstance(delta, np.ndarray):
            delta = self.to_device(delta)
        a.add_(delta)
        return a

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def __repr__(self) -> str:
        return f"TorchBackend(device={str(self.device)!r})"


_REGISTRY: dict[str, Callable[[], Backend]] = {
    "numpy": NumpyBackend,
    "torch": lambda: TorchBackend("cpu"),
    "cuda": lambda: TorchBackend("cuda"),
}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``factory`` (a callable returning a :class:`Backend`) available as
    ``get_backend(name)``."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"`name` must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ConfigurationError(f"`factory` must be a callable returning a Backend, got {factory!r}")
    _REGISTRY[name] = factory


def get_backend(name: str | Backend = "numpy") -> Backend:
    """The backend called ``name`` (or ``name`` itself if it already is a Backend)."""
    if isinstance(name, Backend):
        return name
    if name not in _REGISTRY:
        raise ConfigurationError(f"`backend` must be one of {sorted(_REGISTRY)}, got {name!r}")
    try:
        return _REGISTRY[name]()
    except ImportError as exc:
        raise ConfigurationError(f"backend {name!r} needs a package that is not installed: {exc}") from exc


def registered_backends() -> list[str]:
    """Names ``get_backend`` knows (usable here or not; see :func:`available_backends`)."""
    return sorted(_REGISTRY)


def available_backends() -> list[str]:
    """Names of the backends usable here (torch installed; a CUDA GPU visible for 'cuda')."""
    out = ["numpy"]
    try:
        import torch
    except ImportError:
        return out
    out.append("torch")
    if torch.cuda.is_available():
        out.append("cuda")
    return out


def set_threads(n: int | None) -> None:
    """One BLAS/torch thread per rank by default: oversubscribed ranks ran 4-11x slower with
    default threading here. ``n=None`` leaves the current setting."""
    if n is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits  # optional

        threadpool_limits(n)
    except ImportError:
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
