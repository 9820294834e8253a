"""Coded model-parallel torch layers (CodeNet-style): weights stored encoded on the workers.

:class:`CodedLinear` keeps its weight encoded on a cluster's workers; its forward product,
the backward product for the input gradient and (with :class:`CodedSGD`) the weight update all
run in the coded domain, skipping stragglers and correcting corrupt results. Importing this
package imports torch.
"""

from .linear import CodedLinear, coded_linear, default_code
from .optim import CodedSGD

__all__ = ["CodedLinear", "CodedSGD", "coded_linear", "default_code"]
