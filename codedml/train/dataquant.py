"""Data quantization: workers send quantized *samples*, the root computes the gradients.

Hanna, Ezzeldin, Fragouli, Diggavi, "Quantizing data for distributed learning" (2020,
arXiv 2012.07913). A sample lives in a space (``d`` pixels) much smaller than the model
(``D`` parameters), so sending ``B`` bits per data coordinate costs ``~ b d B`` bits per
mini-batch of ``b`` samples against ``32 D`` for a float32 gradient.

**The data quantizer** (stochastic, unbiased, uniform over the message's data range). The
worker takes the range ``[lo, hi]`` of the samples it sends (min and max over all their
coordinates, rounded outward to float32), the ``2^B`` levels ``lo + k Delta``,
``Delta = (hi - lo) / (2^B - 1)``, and rounds each coordinate ``x`` to a neighbouring level at
random:

.. math::  \\hat x = lo + \\Delta (\\ell + \\xi), \\quad \\ell = \\lfloor (x - lo)/\\Delta \\rfloor,
           \\quad \\xi \\sim \\mathrm{Bernoulli}((x - lo)/\\Delta - \\ell),

so :math:`E[\\hat x] = x`, :math:`|\\hat x - x| < \\Delta` and
:math:`\\mathrm{Var}[\\hat x] = \\Delta^2 p (1 - p) \\le \\Delta^2 / 4`. Why stochastic and not
round-to-nearest: the gradient is a nonlinear function of the sample, and with an unbiased
``x^`` the first-order term of ``grad(x^) - grad(x)`` has mean zero, so the bias of the
gradient at the quantized sample is second order, ``O(Delta^2)`` (at most
``(M / 2) E||x^ - x||^2 <= M d Delta^2 / 8`` for a gradient whose second derivative in ``x``
is bounded by ``M``); round-to-nearest halves the worst-case error but leaves a first-order
bias ``O(Delta)`` that does not average out over steps. (With the refinement below the
estimate is unbiased for any data quantizer.)

**Refinement** (``refine_bits = R``). The worker also computes
``r = g(x) - g(x^)`` (the gradient at the true samples minus the one at the quantized samples,
both ``(1/b) sum_i grad loss_i``) and sends it with QSGD (:mod:`codedml.train.qsgd`) at
``s = 2^R - 1`` levels (one sign bit and ``R`` level bits per coordinate, plus a float32 norm).
The root uses ``g(x^) + Q_s(r)``; since ``E[Q_s(r)] = r`` its mean given ``x^`` is exactly
``g(x)``, and its variance is that of QSGD on the small vector ``r``:
:math:`E\\lVert Q_s(r) - r\\rVert^2 \\le \\min(D/s^2, \\sqrt D / s)\\lVert r\\rVert^2`.

**Importance layer** (``importance = RULE``): of its mini-batch of ``b`` samples the worker
sends only those that matter under the model it was sent:

* ``loss:T``: samples whose loss is above ``T``;
* ``norm:T``: samples whose gradient norm ``||grad loss_i||`` is above ``T``;
* ``budget:F``: the ``ceil(F b)`` samples of largest loss (``0 < F <= 1``).

The root divides by ``b`` (not by the number sent): a sample not sent counts as a zero
gradient, so the bias of the estimate is ``-(1/b) sum_{i not sent} grad loss_i``, which under
``norm:T`` is at most ``T`` in norm (and small under ``loss:T`` for losses whose gradient
vanishes with the loss, such as cross-entropy).

**The message and its bits** (what :func:`worker_message` returns, ``uint8``):

====================  ==========================================================  ===========
bytes                 content                                                     counted
====================  ==========================================================  ===========
8                     the mini-batch mean loss at the true samples (float64)      no (as QSGD)
16                    ``m`` samples sent, ``b`` batch size (uint32 each);          128 bits
                      ``lo``, ``hi`` (float32 each)
``ceil(m(dB+c)/8)``   per sample its ``d`` levels (``B`` bits each) then its       all
                      class label in ``c = ceil(log2 C)`` bits, packed LSB first
``m * row * size``    regression targets (float ``y``) in their own dtype          all
QSGD message          the refinement, only when ``R > 0`` and ``m > 0``:            all
                      ``32 + 8 ceil(D (1 + R) / 8)`` bits
====================  ==========================================================  ===========

so :func:`message_bits` is
``128 + 8 ceil(m (d B + c) / 8) + m y_bits + [R > 0, m > 0] (32 + 8 ceil(D (1 + R) / 8))``,
exactly ``8 * (len(message) - 8)``. No sample indices are sent: the root does not keep the
samples between steps (it uses each quantized sample once), so it never needs to name one.

Where the gradient is computed. The root computes ``g(x^)`` with its *current* parameters
when the message is decoded. Under the synchronous policies these are the parameters the
worker was sent. Under the asynchronous ones the data part is therefore fresh while the
selection and the refinement were made at the older version; the contribution keeps the
request's version, so the staleness rule (``staleness_lr``) applies to it as to any gradient.

Examples
--------
>>> import numpy as np
>>> from codedml.train.dataquant import quantize, dequantize, data_range
>>> X = np.array([[0.0, 0.3], [0.7, 1.0]])
>>> lo, hi = data_range(X)
>>> lev = quantize(X, 2, lo, hi, np.random.default_rng(0))
>>> Xh = dequantize(lev, 2, lo, hi)
>>> bool(np.all(np.abs(Xh - X) < (hi - lo) / 3 + 1e-12)), float(Xh[0, 0]), float(Xh[1, 1])
(True, 0.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .._config import spec_number

__all__ = ["Importance", "parse_importance", "data_range", "quantize", "dequantize",
           "label_bits", "message_bits", "worker_message", "decode_message", "root_gradient",
           "run", "MAX_DATA_BITS", "MAX_REFINE_BITS", "HEADER_BITS"]

#: Largest ``data_bits``: 2^32 levels already exceed float32 data's resolution.
MAX_DATA_BITS = 32
#: Largest ``refine_bits``: QSGD's levels ``2^R - 1`` must stay within its 2^15.
MAX_REFINE_BITS = 15
#: ``m``, ``b`` (uint32) and ``lo``, ``hi`` (float32).
HEADER_BITS = 128


# ---------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Importance:
    """An importance rule: ``kind`` in ``loss``, ``norm``, ``budget`` and its ``value``."""

    kind: str
    value: float

    def select(self, losses: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
        """Indices (sorted) of the samples to send, given their losses (and gradient norms)."""
        losses = np.asarray(losses, dtype=np.float64)
        if self.kind == "loss":
            return np.flatnonzero(losses > self.value)
        if self.kind == "norm":
            if norms is None:
                raise ConfigurationError("importance rule 'norm' needs the samples' gradient norms")
            return np.flatnonzero(np.asarray(norms, dtype=np.float64) > self.value)
        keep = min(len(losses), math.ceil(self.value * len(losses)))
        order = np.argsort(-losses, kind="stable")  # largest loss first, ties by index
        return np.sort(order[:keep])


def parse_importance(rule: str) -> Importance | None:
    """``""`` (off), ``loss:T``, ``norm:T`` (``T >= 0``) or ``budget:F`` (``0 < F <= 1``).

    >>> parse_importance("budget:0.25")
    Importance(kind='budget', value=0.25)
    """
    if not isinstance(rule, str):
        raise ConfigurationError(f"`importance` must be a string, got {rule!r}")
    if rule == "":
        return None
    kind, sep, val = rule.partition(":")
    if not sep or kind not in ("loss", "norm", "budget"):
        raise ConfigurationError(
            f"`importance` (--importance) must be '' (off), 'loss:THRESH', 'norm:THRESH' or "
            f"'budget:FRACTION', got {rule!r}")
    v = spec_number(val)
    if kind == "budget" and not (math.isfinite(v) and 0 < v <= 1):
        raise ConfigurationError(
            f"`importance` (--importance) budget:FRACTION needs 0 < FRACTION <= 1, got {val!r}")
    if kind != "budget" and not (math.isfinite(v) and v >= 0):
        raise ConfigurationError(
            f"`importance` (--importance) {kind}:THRESH needs a finite THRESH >= 0, got {val!r}")
    return Importance(kind, v)


# ---------------------------------------------------------------------------------- the quantizer
def data_range(X: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)``: min and max of ``X``, as float32 values with ``lo <= X <= hi``."""
    X = np.asarray(X, dtype=np.float64)
    if X.size == 0:
        return 0.0, 0.0
    lo32, hi32 = np.float32(X.min()), np.float32(X.max())
    if float(lo32) > X.min():
        lo32 = np.nextafter(lo32, np.float32(-np.inf))
    if float(hi32) < X.max():
        hi32 = np.nextafter(hi32, np.float32(np.inf))
    return float(lo32), float(hi32)


def _delta(bits: int, lo: float, hi: float) -> float:
    return (hi - lo) / (2.0 ** bits - 1)


def quantize(X: np.ndarray, bits: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """The levels (int64, ``0 .. 2^bits - 1``) of the stochastic uniform quantizer of ``X``
    over ``[lo, hi]``: unbiased, ``|x^ - x| < Delta``, ``Var <= Delta^2 / 4``."""
    X = np.asarray(X, dtype=np.float64)
    top = 2 ** bits - 1
    delta = _delta(bits, lo, hi)
    if not delta > 0:  # every coordinate equals lo
        return np.zeros(X.shape, dtype=np.int64)
    r = np.clip((X - lo) / delta, 0.0, float(top))
    low = np.floor(r)
    lev = low + (rng.random(X.shape) < (r - low))
    return np.minimum(lev, top).astype(np.int64)


def dequantize(levels: np.ndarray, bits: int, lo: float, hi: float) -> np.ndarray:
    """``lo + levels * Delta`` (float64), computed identically on the worker and the root."""
    return lo + np.asarray(levels, dtype=np.float64) * _delta(bits, lo, hi)


def label_bits(task: Any) -> int:
    """Bits of one class label, ``ceil(log2 C)`` with ``C = max(y) + 1`` (integer ``y``), or
    0 for float targets (sent in their own dtype)."""
    y = np.asarray(task.y)
    if not np.issubdtype(y.dtype, np.integer):
        return 0
    return math.ceil(math.log2(max(1, int(y.max()) + 1))) if int(y.max()) > 0 else 0


def _target_bits(task: Any) -> int:
    """Bits of one float target row (0 for class labels)."""
    y = np.asarray(task.y)
    if np.issubdtype(y.dtype, np.integer):
        return 0
    return 8 * y.dtype.itemsize * int(np.prod(y.shape[1:], dtype=np.int64))


def message_bits(m: int, d: int, data_bits: int, *, class_bits: int = 0, target_bits: int = 0,
                 refine_bits: int = 0, params: int = 0) -> int:
    """Counted bits of a message with ``m`` samples of ``d`` coordinates (see the module
    docstring): ``128 + 8 ceil(m (d B + c) / 8) + m y_bits [+ 32 + 8 ceil(D (1 + R) / 8)]``.

    >>> message_bits(32, 64, 4, class_bits=4)   # a digits mini-batch at 4 bits
    8448
    """
    bits = HEADER_BITS + 8 * math.ceil(m * (d * data_bits + class_bits) / 8) + m * target_bits
    if refine_bits and m:
        from .qsgd import payload_bits

        bits += payload_bits(params, 2 ** refine_bits - 1)
    return bits


def _bits(levels: np.ndarray, bits: int) -> np.ndarray:
    """``(m, k)`` integers -> ``(m, k * bits)`` bits, each integer LSB first."""
    m, k = levels.shape
    return ((levels[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(m, k * bits)


def _ints(bitmat: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_bits`: ``(m, k * bits)`` bits -> ``(m, k)`` int64."""
    m, kb = bitmat.shape
    if bits == 0:
        return np.zeros((m, 0), dtype=np.int64)
    return (bitmat.reshape(m, kb // bits, bits).astype(np.int64) << np.arange(bits)).sum(axis=2)


# ---------------------------------------------------------------------------------- gradients
def _flat_grad(task: Any, model: Any, params: list[Any], X: Any, y: Any, b: int) -> np.ndarray:
    """``(1/b) sum_i grad loss(x_i, y_i)`` as float64 (zero for no samples)."""
    import torch

    if len(X) == 0:
        return np.zeros(sum(p.numel() for p in params), dtype=np.float64)
    loss = task.loss_fn(model(X), y, "sum") / b
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(gs, params)]).detach().double().numpy()


def _per_sample(task: Any, model: Any, params: list[Any], X: Any, y: Any,
                need_norms: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-sample losses (and gradient norms) under the current parameters."""
    import torch

    with torch.no_grad():
        losses = task.loss_fn(model(X), y, "none")
        losses = losses.reshape(len(X), -1).sum(1).double().numpy()
    if not need_norms:
        return losses, None
    norms = np.empty(len(X))
    for i in range(len(X)):  # one backward per sample: any model, any loss
        norms[i] = np.linalg.norm(_flat_grad(task, model, params, X[i:i + 1], y[i:i + 1], 1))
    return losses, norms


# ---------------------------------------------------------------------------------- worker side
def worker_message(task: Any, st: dict[str, Any], worker: int, idx_rng: np.random.Generator,
                   params: dict[str, Any]) -> np.ndarray:
    """The worker's reply under data quantization (layout in the module docstring).

    ``st`` is the worker's state (replica with the request's parameters loaded, shards);
    ``idx_rng`` draws the mini-batch exactly as the gradient path does; ``params`` carries
    ``data_bits``, ``refine_bits``, ``importance``, ``seed``, ``step``, ``sub``, ``batch``.
    """
    import torch

    B, R = int(params["data_bits"]), int(params.get("refine_bits") or 0)
    rule = parse_importance(params.get("importance") or "")
    seed, step, sub, batch = (int(params["seed"]), int(params["step"]), int(params["sub"]),
                              int(params["batch"]))
    X, y = st["shards"][worker]
    if batch and batch < len(X):
        sel = torch.from_numpy(idx_rng.choice(len(X), batch, replace=False))
        X, y = X[sel], y[sel]
    b = len(X)
    model, plist = st["model"], st["params"]
    losses, norms = _per_sample(task, model, plist, X, y, rule is not None and rule.kind == "norm")
    batch_loss = float(losses.mean()) if b else 0.0
    keep = np.arange(b) if rule is None else rule.select(losses, norms)
    Xs, ys = X[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
    m = len(keep)
    d = int(np.prod(task.X.shape[1:], dtype=np.int64))
    flatX = Xs.reshape(m, d).double().numpy()
    lo, hi = data_range(flatX)
    qrng = np.random.default_rng([seed & 0xFFFFFFFF, 0xDA, worker, step, sub])
    lev = quantize(flatX, B, lo, hi, qrng)
    cb, tb = label_bits(task), _target_bits(task)
    # sample-major bit stream: sample 0's d levels (B bits each, LSB first) and label, then 1's ...
    cols = [_bits(lev, B)]
    if cb:
        cols.append(_bits(ys.numpy().reshape(m, 1).astype(np.int64), cb))
    stream = np.concatenate(cols, axis=1).ravel()
    head = np.concatenate([np.frombuffer(np.float64(batch_loss).tobytes(), np.uint8),
                           np.frombuffer(np.array([m, b], dtype="<u4").tobytes(), np.uint8),
                           np.frombuffer(np.array([lo, hi], dtype="<f4").tobytes(), np.uint8)])
    parts = [head, np.packbits(stream, bitorder="little")]
    if tb:
        parts.append(np.frombuffer(np.ascontiguousarray(ys.numpy()).tobytes(), np.uint8))
    if R and m:
        from .qsgd import encode

        Xh = torch.from_numpy(dequantize(lev, B, lo, hi).reshape(Xs.shape)).to(Xs.dtype)
        diff = (_flat_grad(task, model, plist, Xs, ys, b) - _flat_grad(task, model, plist, Xh, ys, b))
        rrng = np.random.default_rng([seed & 0xFFFFFFFF, 0xDB, worker, step, sub])
        parts.append(encode(diff, 2 ** R - 1, rrng))
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------- root side
@dataclass
class Decoded:
    """A decoded data-quantization message."""

    loss: float
    m: int
    b: int
    X: np.ndarray          # (m, *sample_shape) quantized samples in the data's dtype
    y: np.ndarray          # (m, ...) labels / targets
    refinement: np.ndarray | None   # Q_s(r), float64, or None


def decode_message(task: Any, msg: np.ndarray, data_bits: int, refine_bits: int, params: int) -> Decoded:
    """Parse :func:`worker_message`'s reply (the root needs only the task's shapes)."""
    msg = np.asarray(msg, dtype=np.uint8).ravel()
    loss = float(np.frombuffer(msg[:8].tobytes(), np.float64)[0])
    m, b = (int(v) for v in np.frombuffer(msg[8:16].tobytes(), "<u4"))
    lo, hi = (float(v) for v in np.frombuffer(msg[16:24].tobytes(), "<f4"))
    shape = task.X.shape[1:]
    d = int(np.prod(shape, dtype=np.int64))
    cb, tb = label_bits(task), _target_bits(task)
    nbits = m * (d * data_bits + cb)
    nbytes = math.ceil(nbits / 8)
    stream = np.unpackbits(msg[24:24 + nbytes], bitorder="little")[:nbits].reshape(m, d * data_bits + cb)
    lev = _ints(stream[:, : d * data_bits], data_bits)
    X = dequantize(lev, data_bits, lo, hi).reshape((m,) + shape).astype(task.X.dtype)
    off = 24 + nbytes
    if cb:
        y = _ints(stream[:, d * data_bits:], cb)[:, 0].astype(task.y.dtype)
    elif tb:
        y = np.frombuffer(msg[off:off + m * tb // 8].tobytes(), task.y.dtype).reshape((m,) + task.y.shape[1:])
        off += m * tb // 8
    else:
        y = np.zeros((m,) + task.y.shape[1:], task.y.dtype)
    ref = None
    if refine_bits and m:
        from .qsgd import decode

        ref = decode(msg[off:], params, 2 ** refine_bits - 1)
    return Decoded(loss, m, b, X, y, ref)


def root_gradient(task: Any, model: Any, params: list[Any], msg: np.ndarray, data_bits: int,
                  refine_bits: int) -> tuple[float, np.ndarray, int]:
    """``(batch loss, g(x^) [+ Q(r)], samples sent)``: the gradient the root computes at the
    quantized samples with ``model``'s current parameters, plus the refinement if sent."""
    import torch

    D = sum(p.numel() for p in params)
    dec = decode_message(task, msg, data_bits, refine_bits, D)
    g = _flat_grad(task, model, params, torch.from_numpy(np.ascontiguousarray(dec.X)),
                   torch.from_numpy(np.ascontiguousarray(dec.y)), max(1, dec.b))
    if dec.refinement is not None:
        g = g + dec.refinement
    return dec.loss, g, dec.m


# ---------------------------------------------------------------------------------- benchmarks
def run(task: Any, *, data_bits: int, refine_bits: int = 0, importance: str = "",
        policy: str = "sync", workers: int = 4, steps: int = 100, lr: float = 0.5,
        batch: int = 32, faults: Any = None, fault_seed: int = 0,
        target_loss: float | None = None, comm: Any = None, **config: Any) -> dict[str, Any] | None:
    """Train ``task`` with data quantization on ``workers`` local worker threads (or over the
    MPI communicator ``comm``: call on every rank; workers get ``None``) and report.

    ``data_bits = 0`` trains with float gradients instead (the baseline); any other
    :class:`~codedml.train.TrainConfig` field (``qsgd``, ``k``, ``seed``, ``eval_every``, a
    partition option, ...) passes through ``config``; ``faults`` are the runtime's failure
    models (seeded by ``fault_seed``). Returns a JSON-ready dict: ``bits`` (counted bits
    received), ``bits_full_precision``, ``rounds`` (updates), ``wall`` (seconds), ``loss`` and
    ``accuracy`` (final), ``samples_sent``, ``curve`` (one ``{step, wall, bits, loss}`` per
    evaluated step, ``bits`` cumulative) and, with ``target_loss``, ``rounds_to_target``,
    ``bits_to_target`` and ``wall_to_target`` (``None`` if never reached).

    >>> from codedml.train import digits_task
    >>> r = run(digits_task(), data_bits=4, steps=5, workers=2)
    >>> r["rounds"], r["bits"] < r["bits_full_precision"]
    (5, True)
    """
    from .config import TrainConfig
    from .trainer import train

    # The report sums over every step's record: keep them all in memory (bounded by ``steps``).
    config = {"keep_metrics": steps, **config}
    if isinstance(config["keep_metrics"], int) and 0 <= config["keep_metrics"] < steps:
        raise ConfigurationError(f"`keep_metrics` must be at least steps={steps} here (the report "
                                 f"covers every step), got {config['keep_metrics']}")
    cfg = TrainConfig(policy=policy, steps=steps, lr=lr, batch=batch, data_bits=data_bits,
                      refine_bits=refine_bits, importance=importance, **config)
    res = train(task, cfg, local=0 if comm is not None else workers, comm=comm, faults=faults,
                fault_seed=fault_seed)
    if res is None:  # an MPI worker rank
        return None
    curve, bits = [], 0
    hit: dict[str, Any] = {"rounds_to_target": None, "bits_to_target": None, "wall_to_target": None}
    for rec in res.metrics:
        bits += rec["bits"]
        if rec["loss"] is None:
            continue
        curve.append({"step": rec["step"], "wall": rec["wall"], "bits": bits, "loss": rec["loss"]})
        if target_loss is not None and hit["rounds_to_target"] is None and rec["loss"] <= target_loss:
            hit = {"rounds_to_target": rec["step"], "bits_to_target": bits,
                   "wall_to_target": rec["wall"]}
    return {"task": task.name, "data_bits": data_bits, "refine_bits": refine_bits,
            "importance": importance, "policy": policy, "workers": res.workers,
            "bits": res.bits_sent, "bits_full_precision": res.bits_full_precision,
            "rounds": res.steps, "wall": res.wall, "loss": res.loss, "accuracy": res.accuracy,
            "samples_sent": sum(rec.get("samples", 0) for rec in res.metrics),
            "gradients": res.gradients, "crashed": res.crashed, "curve": curve, **hit}
