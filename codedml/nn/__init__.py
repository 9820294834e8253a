"""Coded model-parallel torch layers (CodeNet-style): weights stored encoded on the workers.

:class:`CodedLinear` keeps its weight encoded on a cluster's workers; its forward product,
the backward product for the input gradient and (with :class:`CodedSGD`) the weight update all
run in the coded domain, skipping stragglers and correcting corrupt results.
:class:`CodedConv2d` is the same for a convolution (an im2col product against the encoded
kernel matrix); :func:`convert` swaps a model's ``nn.Linear``/``nn.Conv2d`` layers for coded
ones and :func:`unconvert` back. Importing this package imports torch.
"""

from .conv import CodedConv2d
from .convert import convert, unconvert
from .linear import CodedLinear, coded_linear, default_code
from .optim import CodedSGD

__all__ = ["CodedConv2d", "CodedLinear", "CodedSGD", "coded_linear", "convert", "default_code",
           "unconvert"]
