"""convert / unconvert: swap a model's ``nn.Linear`` and ``nn.Conv2d`` layers for coded ones and back.

``convert(model, cluster)`` puts every layer's weight on the cluster's workers, encoded
(:class:`~codedml.nn.CodedLinear`, :class:`~codedml.nn.CodedConv2d`), keeping its values and its
bias; everything else in the model (activations, pooling, norms, their parameters) stays as it
is at the root. ``unconvert(model)`` gives plain torch layers back, holding the current decoded
weights (after coded training, say).

What is converted: modules whose type is exactly ``nn.Linear`` or ``nn.Conv2d``. Refused, with
a :class:`~codedml.ConfigurationError` naming the module's path (or left as they are with
``skip_unsupported=True``):

* ``groups != 1`` (a block-diagonal kernel matrix; not stored coded);
* parameters off the CPU (the weight moves to the workers and the layer's products run
  there; the input and output stay where they are);
* a frozen weight (``requires_grad=False``): not carried over to a coded layer, whose
  weight ``CodedSGD`` would train;
* a weight shared with another module (tied weights): two coded copies would train apart;
* modules with hooks (they would be lost with the module) and *subclasses* of ``nn.Linear``
  / ``nn.Conv2d`` (their ``forward`` may differ; their owner may read ``.weight`` directly,
  as ``nn.MultiheadAttention`` does with its ``out_proj``).

Both functions return a new model by default (``inplace=False``), built by ``copy.deepcopy``
with each converted layer swapped in, so the original keeps working (and sharing between
modules is preserved).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..codes import MDSCode, ReplicationCode
from ..errors import ConfigurationError
from .conv import CodedConv2d
from .linear import CodedLinear, _check_cluster

__all__ = ["convert", "unconvert"]


def _why_unsupported(m: nn.Module, shared: set[int]) -> str | None:
    """Why the layer ``m`` cannot be converted, or ``None``."""
    kind = type(m).__name__
    if type(m) not in (nn.Linear, nn.Conv2d):
        base = "nn.Linear" if isinstance(m, nn.Linear) else "nn.Conv2d"
        return f"{kind} is a subclass of {base} (only exact types are converted)"
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        return f"groups={m.groups}; CodedConv2d supports groups=1"
    w = m.weight
    if any(p.device.type != "cpu" for p in m.parameters()):
        return f"parameters on {w.device}; convert a model on the CPU"
    if not w.requires_grad:
        return ("the weight is frozen (requires_grad=False), which a coded layer does not carry "
                "over (CodedSGD would train it)")
    if id(w) in shared:
        return "the weight is shared with another module (tied weights)"
    hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
             if getattr(m, h, None)]
    if hooks:
        return f"it has hooks ({', '.join(h.strip('_') for h in hooks)}), which would be lost"
    return None


def _coded(m: nn.Module, cluster: Any, **kw: Any) -> CodedLinear:
    dtype = m.weight.dtype
    has_bias = m.bias is not None
    new: CodedLinear
    # The coded layer initialises itself from torch's random stream before its weight is
    # replaced: fork the stream so converting leaves the caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        if isinstance(m, nn.Conv2d):
            new = CodedConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                              padding=m.padding, dilation=m.dilation, bias=has_bias,
                              padding_mode=m.padding_mode, cluster=cluster, dtype=dtype, **kw)
        else:
            new = CodedLinear(m.in_features, m.out_features, bias=has_bias, cluster=cluster,
                              dtype=dtype, **kw)
    new.set_weight(m.weight)
    if has_bias:
        with torch.no_grad():
            new.bias.copy_(m.bias)
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def _plain(m: CodedLinear) -> nn.Module:
    W = m.weight                         # decoded from the workers now
    has_bias = m.bias is not None
    new: nn.Module
    with torch.random.fork_rng(devices=[]):   # as in _coded: the caller's random state is kept
        if isinstance(m, CodedConv2d):
            new = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                            padding=m.padding, dilation=m.dilation, bias=has_bias,
                            padding_mode=m.padding_mode, dtype=W.dtype)
        else:
            new = nn.Linear(m.in_features, m.out_features, bias=has_bias, dtype=W.dtype)
    with torch.no_grad():
        new.weight.copy_(W.reshape(new.weight.shape))
        if has_bias:
            new.bias.copy_(m.bias)
    if has_bias:
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def _swap(model: nn.Module, swaps: dict[str, nn.Module], inplace: bool) -> nn.Module:
    """``model`` with the submodule at each path of ``swaps`` replaced (a deep copy unless
    ``inplace``); a module reachable by several paths is replaced everywhere by one object."""
    if "" in swaps:
        return swaps[""]
    if not inplace:
        memo = {id(model.get_submodule(p)): new for p, new in swaps.items()}
        return copy.deepcopy(model, memo)
    for path, new in swaps.items():
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, new)
    return model


def convert(model: nn.Module, cluster: Any, *, code: MDSCode | ReplicationCode | None = None,
            errors: int = 0, timeout: float | None = None, retries: int = 2,
            skip_unsupported: bool = False, inplace: bool = False) -> nn.Module:
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` (recursively) by its coded form.

    Each layer's weight is encoded onto ``cluster``'s workers (its values kept exactly: the
    stored codeword decodes to it up to float64 rounding) and its bias, dtype and training
    mode are kept, so the converted model's outputs equal the original's to rounding. Every
    coded layer then computes its forward and input-gradient products on the workers,
    correcting ``errors`` corrupt results in each and skipping stragglers; train it with
    :class:`~codedml.nn.CodedSGD`.

    Parameters
    ----------
    model : nn.Module
        The model (or a single layer).
    cluster : LocalCluster or MPICluster
        Where the weights are stored (the root's cluster under MPI).
    code : MDSCode or ReplicationCode, optional
        The code of every converted layer. Default: each layer's
        :func:`~codedml.nn.default_code` for its output size. ``ReplicationCode(n, n)`` gives
        uncoded model parallelism (the baselines' configuration).
    errors, timeout, retries
        As for :class:`~codedml.nn.CodedLinear`, for every converted layer.
    skip_unsupported : bool
        Leave layers that cannot be converted (see the module docstring: ``groups > 1``,
        parameters off the CPU, frozen or tied weights, hooks, subclasses) as they are, instead
        of raising. A bad ``code``, ``errors``, ``timeout`` or ``retries`` is raised regardless
        (with the path of the first layer it failed on).
    inplace : bool
        Replace the layers inside ``model`` itself; by default a converted deep copy is
        returned and ``model`` is unchanged.

    Returns
    -------
    nn.Module
        The converted model.

    Raises
    ------
    ConfigurationError
        A layer that cannot be converted (its path and the reason in the message), unless
        ``skip_unsupported``; a bad ``cluster``, ``code`` or ``errors``.

    Examples
    --------
    >>> import torch
    >>> from codedml import LocalCluster
    >>> from codedml.nn import convert, unconvert
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 6 * 6, 10))
    >>> x = torch.randn(2, 1, 8, 8)
    >>> with LocalCluster(5) as cluster:
    ...     coded = convert(net, cluster, errors=1)
    ...     ok = torch.allclose(coded(x), net(x), atol=1e-5)
    ...     back = unconvert(coded)
    >>> ok, type(coded[0]).__name__, type(back[0]).__name__
    (True, 'CodedConv2d', 'Conv2d')
    """
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"`model` must be an nn.Module, got {type(model).__name__}")
    _check_cluster(cluster)
    seen: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    shared = {i for i, c in seen.items() if c > 1}
    found: dict[int, list[str]] = {}
    mods: dict[int, nn.Module] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, CodedLinear):
            found.setdefault(id(m), []).append(path)
            mods[id(m)] = m
    swaps: dict[str, nn.Module] = {}
    for key, paths in found.items():
        m = mods[key]
        why = _why_unsupported(m, shared)
        if why is not None:
            if skip_unsupported:
                continue
            raise ConfigurationError(
                f"cannot convert {paths[0] or 'the model'} ({type(m).__name__}): {why}; "
                f"pass skip_unsupported=True to leave it unconverted")
        try:
            new = _coded(m, cluster, code=code, errors=errors, timeout=timeout, retries=retries)
        except ConfigurationError as exc:   # a bad code/errors/timeout, or a dtype refused
            raise ConfigurationError(f"cannot convert {paths[0] or 'the model'} ({type(m).__name__}): {exc}") from exc
        for p in paths:
            swaps[p] = new
    return _swap(model, swaps, inplace)


def unconvert(model: nn.Module, *, inplace: bool = False, release: bool = False) -> nn.Module:
    """Replace every coded layer of ``model`` by the plain torch layer with its current weights.

    :class:`~codedml.nn.CodedLinear` becomes ``nn.Linear`` and :class:`~codedml.nn.CodedConv2d`
    ``nn.Conv2d`` (same sizes, stride, padding, ...), holding the weight decoded from the
    workers now (one decode per layer) and a copy of the bias. Pending weight gradients and
    coded momentum are not carried over.

    Parameters
    ----------
    model : nn.Module
        A model containing coded layers (or a single coded layer).
    inplace : bool
        Replace the layers inside ``model`` itself; by default a deep copy with plain layers is
        returned and ``model`` keeps its coded layers.
    release : bool
        Also free the coded layers' stored blocks on the workers (they are unusable after).

    Returns
    -------
    nn.Module
        The model with plain torch layers.
    """
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"`model` must be an nn.Module, got {type(model).__name__}")
    swaps: dict[str, nn.Module] = {}
    made: dict[int, nn.Module] = {}
    coded: list[CodedLinear] = []
    for path, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, CodedLinear):
            if id(m) not in made:
                made[id(m)] = _plain(m)
                coded.append(m)
            swaps[path] = made[id(m)]
    out = _swap(model, swaps, inplace)
    if release:
        for m in coded:
            m.release()
    return out
