"""CodedSGD: torch's SGD for ordinary parameters, applied in the coded domain for coded layers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError
from .linear import CodedLinear

__all__ = ["CodedSGD"]


class CodedSGD(torch.optim.SGD):
    """SGD with momentum and weight decay for a model containing :class:`CodedLinear` layers.

    Ordinary parameters (biases, uncoded layers) are updated by :class:`torch.optim.SGD` itself.
    Every coded layer's weight is updated *at the workers*, on its encoded blocks: the rule is
    linear in the weight, the momentum buffer and the gradient ``dW = dY^T X``, so worker ``w``
    applies it to its own block with ``enc(dY^T)_w`` and ``X`` (only those travel) and its own
    encoded momentum buffer, and the blocks remain the encoding of the updated weight (CodeNet,
    Dutta et al. 2018). The result equals torch's SGD on the uncoded weight up to rounding.
    When the stashed factors no longer describe ``weight.grad`` (clipped, zeroed without a new
    backward pass, a penalty on the weight in the loss), ``weight.grad`` itself is sent.
    ``state_dict()`` carries the encoded momentum buffers (decoded, float64) under ``"coded"``,
    so a resumed run continues with its momentum. Any other ``torch.optim`` optimizer trains
    coded layers too, through the root-side ``weight`` and a re-encode per step (slower; see
    docs/layers.md).

    Parameters
    ----------
    model : nn.Module
        The model; its coded layers are found among its modules, its ordinary parameters are
        ``model.parameters()``.
    lr, momentum, dampening, weight_decay, nesterov
        As for :class:`torch.optim.SGD` (the hyper-parameters of the parameter group holding a
        coded layer's ``weight`` apply to it, so learning-rate schedulers work).
    scrub_every : int, optional
        Scrub every coded layer's stored blocks after every ``scrub_every`` steps (see
        :meth:`CodedLinear.scrub`).
    scrub_timeout : float, optional
        How long a scrub waits for every worker to answer (default: the layers' timeout). A
        scrub checks *every* block, so it waits for stragglers up to this; a worker that has
        not answered by then stays unchecked until the next scrub.

    Examples
    --------
    >>> import torch
    >>> from codedml import LocalCluster
    >>> from codedml.nn import CodedLinear, CodedSGD
    >>> with LocalCluster(5) as cluster:
    ...     model = torch.nn.Sequential(CodedLinear(4, 3, cluster=cluster), torch.nn.ReLU())
    ...     opt = CodedSGD(model, lr=0.1, momentum=0.9)
    ...     model(torch.randn(8, 4)).sum().backward()
    ...     opt.step()
    ...     opt.zero_grad()
    """

    _codedml_coded_step = True  # the global optimizer hooks of codedml.nn.linear leave it alone

    def __init__(self, model: nn.Module, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, scrub_every: int | None = None, scrub_timeout: float | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(
                f"`model` must be an nn.Module (CodedSGD finds its coded layers), got {type(model).__name__}")
        if scrub_every is not None and (not isinstance(scrub_every, int) or scrub_every < 1):
            raise ConfigurationError(f"`scrub_every` must be a positive integer or None, got {scrub_every!r}")
        _check_hyper(lr, momentum, dampening, weight_decay, nesterov)
        if scrub_timeout is not None:  # NaN, inf, 0 and negatives refused, as the runtime does
            from ..runtime.futures import check_deadline

            scrub_timeout = check_deadline("scrub_timeout", scrub_timeout)
        self.layers = [m for m in model.modules() if isinstance(m, CodedLinear)]
        params: Iterable[Any] = list(model.parameters())
        if not params:
            raise ConfigurationError("`model` has no parameters (and no coded layers) to train")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)
        self.scrub_every = scrub_every
        self.scrub_timeout = scrub_timeout
        self.steps = 0
        self.scrub_reports: list[Any] = []

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # torch's SGD steps the ordinary parameters; the coded weights' mirrors are hidden from
        # it (their grads set aside) and stepped at the workers instead.
        hidden = [(layer._parameters["weight"], layer._parameters["weight"].grad) for layer in self.layers]
        for p, _ in hidden:
            p.grad = None
        try:
            super().step()
        finally:
            for p, g in hidden:
                p.grad = g
        for layer in self.layers:
            g = self._group_of(layer)
            layer.coded_step(lr=g["lr"], momentum=g["momentum"], dampening=g["dampening"],
                             weight_decay=g["weight_decay"], nesterov=g["nesterov"])
        self.steps += 1
        if self.scrub_every and self.steps % self.scrub_every == 0:
            self.scrub()
        return loss

    def _group_of(self, layer: CodedLinear) -> dict[str, Any]:
        """The parameter group holding the layer's weight (its hyper-parameters apply)."""
        w = layer._parameters["weight"]
        for g in self.param_groups:
            if any(p is w for p in g["params"]):
                return g
        return self.param_groups[0]

    def scrub(self) -> list[Any]:
        """Scrub every coded layer now; returns (and keeps) the reports."""
        reports = [r for layer in self.layers for r in layer.scrub(self.scrub_timeout)]
        self.scrub_reports.extend(reports)
        return reports

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """torch's SGD state (ordinary parameters) plus, under ``"coded"``, every coded layer's
        momentum buffer decoded from its stored blocks (float64, exactly as loaded when it was,
        in the shape of the layer's ``weight``) and the step count: all a resume needs."""
        sd = super().state_dict()
        # each buffer in its weight's shape, as torch's SGD keeps momentum (a CodedConv2d's 4-d)
        bufs = [(layer, layer.momentum_buffer()) for layer in self.layers]
        sd["coded"] = {"steps": self.steps,
                       "momentum_buffers": [None if b is None else
                                            torch.from_numpy(b.copy()).reshape(layer._weight_shape())
                                            for layer, b in bufs]}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        state_dict = dict(state_dict)
        coded = state_dict.pop("coded", None)
        if coded is None:
            raise ConfigurationError(
                "`state_dict` has no 'coded' entry (the coded layers' momentum buffers): it was "
                "not saved by CodedSGD.state_dict()")
        bufs = coded["momentum_buffers"]
        if len(bufs) != len(self.layers):
            raise ConfigurationError(
                f"`state_dict` holds momentum buffers for {len(bufs)} coded layers, this optimizer "
                f"has {len(self.layers)}")
        super().load_state_dict(state_dict)
        for layer, b in zip(self.layers, bufs):
            layer.set_momentum_buffer(b)
        self.steps = int(coded["steps"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for layer in self.layers:
            layer._pending = []


def _check_hyper(lr: Any, momentum: Any, dampening: Any, weight_decay: Any, nesterov: Any) -> None:
    """The SGD hyper-parameters, refused by name with their range (torch.optim.SGD lets NaN
    through and names neither the argument nor the range of the others)."""
    import math

    for name, v, positive in (("lr", lr, True), ("momentum", momentum, False),
                              ("dampening", dampening, False), ("weight_decay", weight_decay, False)):
        rng = "a finite number greater than 0" if positive else "a finite number at least 0"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigurationError(f"`{name}` must be {rng}, got {v!r}")
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ConfigurationError(f"`{name}` must be {rng}, got {v}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ConfigurationError(
            f"`nesterov` needs a momentum greater than 0 and dampening 0, got momentum={momentum}, "
            f"dampening={dampening}")
