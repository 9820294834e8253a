"""QSGD: unbiased stochastic quantisation of gradients (Alistarh et al., NeurIPS 2017).

With ``s`` levels, coordinate ``i`` of ``v`` (``d`` entries) is sent as

.. math::

    Q_s(v)_i = \\lVert v \\rVert_2 \\, \\mathrm{sign}(v_i) \\, \\xi_i / s, \\qquad
    \\xi_i = \\begin{cases} \\ell + 1 & \\text{with probability } s|v_i|/\\lVert v\\rVert - \\ell \\\\
                        \\ell & \\text{otherwise} \\end{cases}, \\quad
    \\ell = \\lfloor s |v_i| / \\lVert v \\rVert \\rfloor,

so :math:`E[Q_s(v)] = v` and :math:`\\mathrm{Var}[Q_s(v)_i] \\le \\lVert v\\rVert^2 / (4 s^2)`.

Bit accounting (what :func:`encode` really puts on the wire): the norm as a float32 (32 bits;
rounded up, and the levels drawn against that value, so the message stays unbiased),
then per coordinate one sign bit and the level :math:`\\xi_i \\in \\{0..s\\}` in
:math:`b = \\lceil \\log_2(s + 1) \\rceil` bits, packed into bytes, so

.. math::  \\text{bits}(d, s) = 32 + 8 \\lceil d (1 + b) / 8 \\rceil

against :math:`32 d` for the float32 gradient. This is the fixed-length code; the paper's Elias
coding of sparse levels would send fewer bits for small ``s`` and is not implemented.

Examples
--------
>>> import numpy as np
>>> from codedml.train.qsgd import encode, decode, payload_bits
>>> v = np.array([0.5, -1.0, 0.25, 0.0])
>>> msg = encode(v, 4, np.random.default_rng(0))
>>> msg.dtype, 8 * msg.size == payload_bits(4, 4)
(dtype('uint8'), True)
>>> decode(msg, 4, 4).shape
(4,)
"""

from __future__ import annotations

import math

import numpy as np

from ..codes._validate import check_int

__all__ = ["encode", "decode", "payload_bits", "level_bits"]


def level_bits(levels: int) -> int:
    """``ceil(log2(levels + 1))``: bits of one level in ``{0, ..., levels}``."""
    s = check_int("levels", levels, 1, 2**15)
    return max(1, math.ceil(math.log2(s + 1)))


def payload_bits(d: int, levels: int) -> int:
    """Bits :func:`encode` sends for a ``d``-vector: ``32 + 8 ceil(d (1 + b) / 8)``."""
    return 32 + 8 * math.ceil(d * (1 + level_bits(levels)) / 8)


def encode(v: np.ndarray, levels: int, rng: np.random.Generator) -> np.ndarray:
    """The QSGD message of ``v`` (1-D) with ``levels`` levels, as a ``uint8`` array.

    Layout: 4 bytes of the float32 norm, then the packed bits: for each coordinate its sign bit
    followed by its level, least significant bit first.
    """
    b = level_bits(levels)
    v = np.asarray(v, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(v))
    # The norm travels as a float32: rounded up to one (never below the norm, so each level
    # stays within 0..levels), and the levels are drawn against that very value, so the
    # decoded vector stays unbiased whatever the rounding (a subnormal float32 norm keeps only
    # a few bits: drawn against the float64 norm, Q's mean was off by up to half of it)
    with np.errstate(over="ignore"):
        n32 = np.float32(norm)
    if float(n32) < norm:
        n32 = np.nextafter(n32, np.float32(np.inf))
    scale = float(n32)
    if math.isfinite(norm) and not math.isfinite(scale):
        raise ValueError(f"qsgd: the norm of `v` ({norm:.6g}) is past float32's largest value "
                         f"({float(np.finfo(np.float32).max):.6g}), the type the message "
                         f"carries it in")
    if scale == 0.0 or not math.isfinite(scale):
        lev = np.zeros(v.size, dtype=np.int64)
    else:
        r = np.abs(v) * (levels / scale)
        low = np.floor(r)
        lev = np.minimum(low + (rng.random(v.size) < (r - low)), levels).astype(np.int64)
    sign = (v < 0).astype(np.uint8)
    bits = np.empty((v.size, 1 + b), dtype=np.uint8)
    bits[:, 0] = sign
    bits[:, 1:] = (lev[:, None] >> np.arange(b)) & 1
    head = np.frombuffer(n32.tobytes(), dtype=np.uint8)
    return np.concatenate([head, np.packbits(bits.ravel())])


def decode(msg: np.ndarray, d: int, levels: int) -> np.ndarray:
    """The float64 vector ``Q_s(v)`` from its :func:`encode` message."""
    b = level_bits(levels)
    msg = np.asarray(msg, dtype=np.uint8).ravel()
    norm = float(np.frombuffer(msg[:4].tobytes(), dtype=np.float32)[0])
    bits = np.unpackbits(msg[4:])[: d * (1 + b)].reshape(d, 1 + b).astype(np.int64)
    lev = (bits[:, 1:] << np.arange(b)).sum(axis=1)
    sign = 1.0 - 2.0 * bits[:, 0]
    return norm * sign * lev / levels
