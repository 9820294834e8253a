"""CodedConv2d: a 2-d convolution whose kernel lives encoded on the workers (im2col + CodedLinear).

Mathematics. A convolution is a matrix product after im2col (Chellapilla, Puri, Simard 2006):
``unfold`` turns the (padded) input ``x`` (``N x C x H x W``) into the matrix ``X`` of its
receptive fields, one row per output position (``N*L x C*kh*kw``, ``L = oh*ow``), and with the
kernel matrix ``K`` (``nn.Conv2d``'s ``weight`` reshaped to ``out x C*kh*kw``)

* forward ``Y = X K^T + b`` (``N*L x out``), reshaped to ``N x out x oh x ow``;
* input gradient ``dX = dY K`` (``N*L x C*kh*kw``), then ``fold`` (the adjoint of ``unfold``)
  sums each receptive field's gradient back onto the input pixels;
* kernel gradient ``dK = dY^T X``: a rank-``N*L`` product, kept as the factors ``(dY, X)``.

These are exactly :class:`~codedml.nn.CodedLinear`'s three products with ``in_features =
C*kh*kw`` and a batch of ``N*L`` rows, so :class:`CodedConv2d` *is* a ``CodedLinear`` on the
im2col matrix: ``K`` is stored once encoded with ``MDSCode(n, k)`` (row blocks of output
channels), the forward product is decoded from any ``k + 2 errors`` workers, the backward
product (MatDot over the rows of ``K``) from any ``2k - 1 + 2 errors``, ``errors`` corrupt results
are corrected in each, and :class:`~codedml.nn.CodedSGD` applies the SGD step to the encoded
blocks with ``enc(dY^T)_w X`` (nothing re-encoded). Stored blocks are scrubbed like
``CodedLinear``'s. ``unfold``/``fold`` run at the root, where the input lives.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..codes import MDSCode, ReplicationCode
from ..errors import ConfigurationError
from .linear import CodedLinear

__all__ = ["CodedConv2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(name: str, value: Any, low: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``low``, as a pair (torch's ``_pair``)."""
    vals = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals) \
            or any(v < low for v in vals):
        raise ConfigurationError(
            f"`{name}` must be an integer >= {low} or a pair of them, got {value!r}")
    return vals[0], vals[1]


class CodedConv2d(CodedLinear):
    """A 2-d convolution whose kernel ``K`` (``out x C*kh*kw``) lives encoded on the workers.

    ``y = conv2d(x, kernel) + b`` computed as the im2col product ``unfold(x)^T K^T`` (see the
    module docstring): forward and input-gradient products run coded on the cluster (thresholds
    ``k`` and ``2k - 1``, ``errors`` corrupt results corrected in each, stragglers beyond them
    not waited for); the kernel is trained in the coded domain by :class:`~codedml.nn.CodedSGD`
    or, as ``CodedLinear``'s weight is, by any torch optimizer.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias, padding_mode
        As for :class:`torch.nn.Conv2d` (``padding`` an int, a pair, ``'valid'`` or ``'same'``;
        ``padding_mode`` one of ``'zeros'``, ``'reflect'``, ``'replicate'``, ``'circular'``).
    groups : int
        Must be 1: a grouped convolution is a block-diagonal kernel matrix, which this layer
        does not store (refused with a :class:`~codedml.ConfigurationError`).
    cluster, code, errors, timeout, retries, dtype, device
        As for :class:`~codedml.nn.CodedLinear`, whose ``in_features`` is ``C*kh*kw`` and
        ``out_features`` is ``out_channels`` here (so the default code is
        ``default_code(n, errors, out_channels)``).

    Initialised like :class:`torch.nn.Conv2d` (same random stream, same fan-in), so both start
    equal after the same ``torch.manual_seed``. ``weight`` is ``CodedLinear``'s root-side mirror
    parameter in ``nn.Conv2d``'s shape, the 4-d kernel ``out x C x kh x kw`` (through
    ``CodedLinear``'s weight-shape hook ``_weight_shape``): ``weight.grad`` is ``dK`` in that
    shape, every torch optimizer trains it, ``nn.init`` functions and other code written for
    ``nn.Conv2d.weight`` work on it, and the ``state_dict`` has ``nn.Conv2d``'s keys and shapes
    (states load both ways). The stored blocks, the coded products and :class:`~codedml.nn.CodedSGD`'s
    coded step work on the kernel matrix ``K = weight.reshape(out, C*kh*kw)``. ``set_weight``
    takes the 4-d kernel or, as a convenience, ``K``.

    Examples
    --------
    >>> import torch
    >>> from codedml import LocalCluster
    >>> from codedml.nn import CodedConv2d
    >>> with LocalCluster(5) as cluster:
    ...     conv = CodedConv2d(2, 3, 3, padding=1, cluster=cluster, dtype=torch.float64)
    ...     x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    ...     ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    ...     ok = torch.allclose(conv(x), ref)
    ...     shape = tuple(conv.weight.shape)
    >>> ok, shape
    (True, (3, 2, 3, 3))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, cluster: Any,
                 code: MDSCode | ReplicationCode | None = None, errors: int = 0,
                 timeout: float | None = None, retries: int = 2,
                 dtype: torch.dtype | None = None, device: Any = None) -> None:
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigurationError(f"`{name}` must be an integer >= 1, got {v!r}")
        if groups != 1:
            raise ConfigurationError(
                f"`groups` must be 1 for CodedConv2d (a grouped convolution's kernel matrix is "
                f"block-diagonal; it is not stored coded), got {groups!r}")
        if padding_mode not in PADDING_MODES:
            raise ConfigurationError(f"`padding_mode` must be one of {PADDING_MODES}, got {padding_mode!r}")
        kh, kw = _pair("kernel_size", kernel_size, 1)
        stride = _pair("stride", stride, 1)
        dilation = _pair("dilation", dilation, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ConfigurationError(
                    f"`padding` must be 'same', 'valid', an integer >= 0 or a pair of them, got {padding!r}")
            if padding == "same" and stride != (1, 1):
                raise ConfigurationError(
                    f"`padding`='same' needs stride 1 (as for nn.Conv2d), got stride={stride}")
            pad: Any = padding
            if padding == "valid":
                pad = (0, 0)
        else:
            pad = _pair("padding", padding, 0)
        # Set before CodedLinear.__init__, which creates `weight` in _weight_shape() (the 4-d kernel)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        super().__init__(in_channels * kh * kw, out_channels, bias, cluster=cluster, code=code,
                         errors=errors, timeout=timeout, retries=retries, dtype=dtype, device=device)
        self.stride, self.dilation = stride, dilation
        self.padding = padding if isinstance(padding, str) else pad
        self.groups = 1
        self.padding_mode = padding_mode
        # (left, right, top, bottom) as F.pad takes them; 'same' puts the odd pixel right/bottom,
        # as nn.Conv2d does.
        if pad == "same":
            tot = [d * (k - 1) for d, k in zip(dilation, self.kernel_size)]
            self._pads = (tot[1] // 2, tot[1] - tot[1] // 2, tot[0] // 2, tot[0] - tot[0] // 2)
        else:
            self._pads = (pad[1], pad[1], pad[0], pad[0])

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        """``(out_channels, in_channels, kh, kw)``: ``weight``'s shape, as ``nn.Conv2d``'s."""
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def _weight_shape(self) -> tuple[int, ...]:
        # CodedLinear's weight-shape hook: the parameter is nn.Conv2d's 4-d kernel; the stored
        # blocks, products and coded update use its im2col matrix (out, C*kh*kw).
        return self.kernel_shape

    # ------------------------------------------------------------------ torch API
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ConfigurationError(
                f"input must have shape (N, in_channels={self.in_channels}, H, W) or "
                f"(in_channels={self.in_channels}, H, W), got {tuple(x.shape)}")
        batched = x.ndim == 4
        if not batched:
            x = x.unsqueeze(0)
        pad = self._pads
        if any(pad) and (self.padding_mode != "zeros" or pad[0] != pad[1] or pad[2] != pad[3]):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, pad, mode=mode)
            pad = (0, 0, 0, 0)
        H, W = x.shape[-2] + pad[2] + pad[3], x.shape[-1] + pad[0] + pad[1]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        oh, ow = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            raise ConfigurationError(
                f"input of shape {tuple(x.shape)} is smaller than the dilated kernel "
                f"({dh * (kh - 1) + 1}, {dw * (kw - 1) + 1}) after padding {self._pads}")
        # im2col: (N, C*kh*kw, L) -> (N, L, C*kh*kw), the rows of CodedLinear's product. The
        # input gradient goes back through unfold's adjoint, fold, by autograd.
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=(pad[2], pad[0]),
                        stride=self.stride)
        y = super().forward(cols.transpose(1, 2))          # (N, L, out), coded
        y = y.transpose(1, 2).reshape(x.shape[0], self.out_channels, oh, ow)
        return y if batched else y.squeeze(0)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s + f", code={self.code!r}, errors={self.errors}"

    @property
    def kernel(self) -> torch.Tensor:
        """A copy of ``weight`` (``out x C x kh x kw``), detached: the name this layer gave its
        4-d kernel while ``weight`` was the kernel matrix, kept for code written then."""
        return self.weight.detach().clone()

    def set_weight(self, W: Any) -> None:
        """Replace the kernel: ``W`` of shape ``(out, C, kh, kw)`` (as ``nn.Conv2d.weight``) or,
        as a convenience, its im2col matrix ``(out, C*kh*kw)``, is encoded and stored on the
        workers anew (momentum kept)."""
        W = torch.as_tensor(W).detach()
        if tuple(W.shape) not in (self.kernel_shape, (self.out_features, self.in_features)):
            raise ConfigurationError(
                f"`W` must have shape {self.kernel_shape} (or the kernel matrix's "
                f"{(self.out_features, self.in_features)}), got {tuple(W.shape)}")
        super().set_weight(W.reshape(self.kernel_shape))
