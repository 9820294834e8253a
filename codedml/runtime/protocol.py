"""The wire protocol between the root and its workers: data, never code.

Every message is one of a few typed records, validated when it is built and again when it is
received; nothing on the control or the data path is pickled.

Requests (root -> worker)
    A :class:`Request`: an :class:`Op`, the request id (``job``), the resident operand it
    names, the field, the precision flag, the op's parameters (plain JSON values) and the
    shape and dtype of every array that follows. On the wire it is a fixed little-endian
    binary header, one ``(dtype, ndim, dims)`` record per array and, only for the ops that
    have parameters, those parameters as UTF-8 JSON, in one byte buffer (``TAG_CTRL``),
    followed by one buffer per array (``TAG_TASK``); or, when the arrays hold at most
    :data:`INLINE_MAX` bytes in all, the arrays' bytes after the parameters in that same
    buffer (flag bit 3; the compiled transport's form). The binary header replaced a JSON
    document (protocol version 1): parsing and validating a request fell from about 20 us to
    about 5 us, which is paid once per worker per request.
Request ids: products, fetches and calls are numbered by one counter (the ``job`` a failure
model is asked about); acknowledged operations by another (their ``job`` field is that number),
and the reply header's ``op`` says which table a reply belongs to.

Replies (worker -> root)
    Every request gets exactly one reply: a result (``Kind.RESULT``, with one array), an
    acknowledgement (``Kind.ACK``: ``put``, ``update``, ``sgd``, ``drop``; no array) or an
    error (``Kind.ERROR``: a :class:`RemoteError` as JSON bytes). A reply is a fixed header of
    :data:`HEADER_LEN` int64 (:class:`ReplyHeader`, ``TAG_HDR``) and, when it carries bytes, one
    buffer (``TAG_RES``), or those bytes after the header in its message when they are 1 to
    :data:`INLINE_MAX` (the compiled transport's form). The header holds the full
    n-dimensional shape (up to :data:`MAX_NDIM` dimensions), the dtype code and the byte
    count, and is checked on receipt: a header that fails any check raises
    :class:`~codedml.errors.ProtocolError`. ``Kind.BYE`` closes a worker's stream after
    ``close``.
Cancels (root -> worker)
    One int64, the id of a request that no longer needs an answer (``TAG_CANCEL``): a worker
    skips a cancelled request it has not started and sends nothing for it; the root has already
    settled that request, so no reply is owed.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass, field as _field
from typing import Any

import numpy as np

from ..errors import ConfigurationError, ProtocolError

__all__ = ["Op", "Kind", "Request", "ReplyHeader", "RemoteError", "MAX_NDIM", "HEADER_LEN",
           "DTYPES", "dtype_code", "REPLY_OPS", "ACK_OPS"]

#: The most dimensions an array on the wire may have.
MAX_NDIM = 8
#: int64 entries of a reply header: magic, job, kind, op, dtype, ndim, MAX_NDIM dims, elapsed ns, nbytes.
HEADER_LEN = 8 + MAX_NDIM
_MAGIC = 0xC0DED1  # protocol version 1
#: The dtypes allowed on the wire, by code.
DTYPES: tuple[np.dtype, ...] = tuple(np.dtype(t) for t in (
    np.float64, np.float32, np.complex128, np.complex64, np.int64, np.uint8, np.float16,
    np.int32, np.bool_))
_CODE = {dt: i for i, dt in enumerate(DTYPES)}
#: The largest array (bytes) a header may announce: guards the root against a corrupt size.
MAX_BYTES = 1 << 40
#: The most arrays one request may carry.
MAX_ARRAYS = 16
#: The compiled transport sends a payload of at most this many bytes inside the message
#: before it: a reply's after its header (one message on ``TAG_HDR``), a request's arrays
#: after its parameters (flag bit 3, one message on ``TAG_CTRL``).
INLINE_MAX = 16384
#: A request's fixed binary header (little-endian): magic, op, flags (bit 0 compensated, bit 1
#: handle present, bit 2 field present), array count, job, handle, field (-1 when absent),
#: bytes of JSON parameters that follow the array records.
_REQ_HEAD = struct.Struct("<IBBBxqqqI")
_REQ_MAGIC = 0xC0DE0002  # binary requests, protocol version 2


class Op(enum.IntEnum):
    """The operations a worker serves."""

    MATMUL = 1       #: ``a @ b`` (fresh operands) or ``stored block @ b``
    MATMUL_LEFT = 2  #: ``l @ stored block``
    FETCH = 3        #: the stored block itself
    CALL = 4         #: a registered handler
    PUT = 5          #: store a block (acknowledged)
    UPDATE = 6       #: stored block ``+= u v^T`` (acknowledged)
    SGD = 7          #: an SGD step on a stored block (acknowledged)
    DROP = 8         #: free a stored block (acknowledged)
    CLOSE = 9        #: stop serving (answered by ``Kind.BYE``)


class Kind(enum.IntEnum):
    """What a reply carries."""

    RESULT = 0
    ERROR = 1
    BYE = 2
    ACK = 3


#: Operations answered by a result array (skipped when cancelled).
REPLY_OPS = frozenset({Op.MATMUL, Op.MATMUL_LEFT, Op.FETCH, Op.CALL})
#: Operations answered by an acknowledgement.
ACK_OPS = frozenset({Op.PUT, Op.UPDATE, Op.SGD, Op.DROP})

# The parameters each op may carry, with their JSON types (checked on both ends).
_NUM = (int, float)
_PARAMS: dict[Op, dict[str, tuple[type, ...]]] = {
    Op.MATMUL: {"nice": (int,)}, Op.MATMUL_LEFT: {}, Op.FETCH: {}, Op.PUT: {}, Op.DROP: {},
    Op.UPDATE: {"seq": (int,)},
    Op.SGD: {"seq": (int,), "lr": _NUM, "momentum": _NUM, "dampening": _NUM, "weight_decay": _NUM,
             "nesterov": (bool,), "buffer": (int, type(None)), "first": (bool,)},
    Op.CALL: {"name": (str,), "params": (dict,)},
    Op.CLOSE: {"failures": (bool,)},
}
#: The largest nice increment a product may ask for (a parity product that yields its cores:
#: ``cluster.parity_nice``; Linux's nice values run from -20 to 19).
MAX_NICE = 19
_JSON_SCALARS = (str, int, float, bool, type(None))
_OPS = {o.value: o for o in Op}
_I64 = 1 << 63


def dtype_code(dt: Any) -> int:
    """The wire code of a dtype; :class:`~codedml.errors.ProtocolError` for any other."""
    try:
        return _CODE[np.dtype(dt)]
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"dtype {dt!r} cannot travel: allowed are "
                            f"{[str(d) for d in DTYPES]}") from exc


def _check_json(name: str, value: Any, depth: int = 0) -> None:
    """Plain JSON data only: scalars (finite floats), lists and str-keyed dicts.

    Every request of ``call`` checks its parameters, so the common case is kept cheap: the
    exact scalar types return at once, and an element's name (``params['step']``) is only
    spelled out for the error that names it."""
    if depth > 8:
        raise ConfigurationError(f"`{name}` is nested too deeply to travel (more than 8 levels)")
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return
    if isinstance(value, float):  # float itself or a subclass (np.float64 is one)
        if not math.isfinite(value):
            raise ConfigurationError(f"`{name}` must be finite to travel, got {value!r}")
        if t is float:
            return
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        raise ConfigurationError(f"`{name}` must be a plain Python number, got numpy "
                                 f"{type(value).__name__} {value!r}")
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if depth >= 8 or type(v) not in _PLAIN:
                _check_json(f"{name}[{i}]", v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError(f"`{name}` keys must be strings, got {k!r}")
            if depth >= 8 or type(v) not in _PLAIN:
                _check_json(f"{name}[{k!r}]", v, depth + 1)
        return
    raise ConfigurationError(f"`{name}` must be plain data (str, int, float, bool, None, list, "
                             f"dict) to travel, got {type(value).__name__}")


#: Element types that need no check at all (a float may be NaN or Inf, so it is not here).
_PLAIN = frozenset({str, int, bool, type(None)})


def _check_id(name: str, v: Any, none_ok: bool) -> None:
    """A request's id field (``job``, ``handle``, ``field``): an int from -1 to 2**63 - 1,
    or None where ``none_ok``."""
    if not ((v is None and none_ok) or (type(v) is int and -1 <= v < _I64)):
        raise ProtocolError(f"request field `{name}` must be int{' or NoneType' if none_ok else ''}"
                            f" (ints from -1 to 2**63 - 1), got {v!r}")


@dataclass(frozen=True)
class Request:
    """One request to a worker. ``arrays`` lists the ``(shape, dtype code)`` of the arrays that
    follow it (set by :meth:`with_arrays`); ``params`` holds the op's own parameters."""

    op: Op
    job: int
    handle: int | None = None
    field: int | None = None
    compensated: bool = False
    params: dict[str, Any] = _field(default_factory=dict)
    arrays: tuple[tuple[tuple[int, ...], int], ...] = ()

    def __post_init__(self) -> None:
        try:
            op = _OPS.get(self.op) if type(self.op) is not bool else None
        except TypeError:  # unhashable
            op = None
        if op is None:
            raise ProtocolError(f"unknown operation {self.op!r}")
        object.__setattr__(self, "op", op)
        for name, v, none_ok in (("job", self.job, False), ("handle", self.handle, True),
                                 ("field", self.field, True)):
            _check_id(name, v, none_ok)
        if type(self.compensated) is not bool:
            raise ProtocolError(f"request field `compensated` must be bool, got {self.compensated!r}")
        if self.params:
            _check_params(op, self.params)
        for shape, code in self.arrays:
            _check_shape(shape, code)

    def with_job(self, job: int) -> "Request":
        """This request under job id ``job`` (the other fields were validated when it was
        built; only the id is checked here)."""
        _check_id("job", job, False)
        out = object.__new__(Request)
        out.__dict__.update(self.__dict__)
        out.__dict__["job"] = job
        return out

    def with_arrays(self, arrays: list[np.ndarray]) -> "Request":
        """This request announcing ``arrays`` (their shapes and dtypes). The fields were
        validated when this request was built; only the array metadata is checked here."""
        meta = tuple((tuple(int(s) for s in a.shape), dtype_code(a.dtype)) for a in arrays)
        if len(meta) > MAX_ARRAYS:
            raise ProtocolError(f"a request carries at most {MAX_ARRAYS} arrays, got {len(meta)}")
        for shape, code in meta:
            _check_shape(shape, code)
        out = object.__new__(Request)
        for name, v in (("op", self.op), ("job", self.job), ("handle", self.handle),
                        ("field", self.field), ("compensated", self.compensated),
                        ("params", self.params), ("arrays", meta)):
            object.__setattr__(out, name, v)
        return out

    def encode(self, arrays: list[np.ndarray]) -> np.ndarray:
        """``with_arrays(arrays).to_bytes()``, for a request built by :func:`call_request`
        (or one without parameters: a product, an operation on a stored operand) from a
        recent request's encoded form where one differs only in its job id (a training
        step's call, the same handler with the same parameters; a job's tasks of the same
        layout): validated and JSON-encoded then, so only the job is written now. ``arrays``
        must be contiguous."""
        out = self.wire(arrays)
        return out if type(out) is np.ndarray else np.frombuffer(out, dtype=np.uint8)

    def wire(self, arrays: list[np.ndarray]) -> np.ndarray | bytearray:
        """:meth:`encode`'s bytes, as a ``bytearray`` where they come from a recent request's
        form (a sender that takes any buffer, the compiled engine, saves the array around it),
        else as :meth:`encode` gives them."""
        key = self.__dict__.get("_wire_key")
        if key is None:
            if self.params:
                return self.with_arrays(arrays).to_bytes()
            # no parameters (a product, a stored operand's op): the fields decide the form
            key = (int(self.op), self.handle, self.field, self.compensated)
        key = (key, tuple([(a.shape, a.dtype) for a in arrays]))
        tpl = _WIRE_MEMO.get(key)
        if tpl is None:
            out = self.with_arrays(arrays).to_bytes()
            if len(_WIRE_MEMO) >= _MEMO_MAX:
                _WIRE_MEMO.clear()
            _WIRE_MEMO[key] = out.tobytes()
            return out
        buf = bytearray(tpl)
        _JOB.pack_into(buf, _JOB_AT, self.job)
        return buf

    def to_bytes(self) -> np.ndarray:
        """The binary wire form in a uint8 buffer: a fixed little-endian header
        (:data:`_REQ_HEAD`: magic, op, flags, array count, job, handle, field, parameter
        bytes), one ``(dtype code, ndim, dims...)`` record per array, and the parameters as
        UTF-8 JSON, present only when the op has any (``CALL``, ``UPDATE``, ``SGD``,
        ``CLOSE``)."""
        flags = ((1 if self.compensated else 0) | (2 if self.handle is not None else 0)
                 | (4 if self.field is not None else 0))
        tail = json.dumps(self.params, allow_nan=False, separators=(",", ":")).encode() \
            if self.params else b""
        parts = [_REQ_HEAD.pack(_REQ_MAGIC, int(self.op), flags, len(self.arrays), self.job,
                                -1 if self.handle is None else self.handle,
                                -1 if self.field is None else self.field, len(tail))]
        for shape, code in self.arrays:
            parts.append(struct.pack(f"<BB{len(shape)}q", code, len(shape), *shape))
        parts.append(tail)
        return np.frombuffer(b"".join(parts), dtype=np.uint8).copy()

    @classmethod
    def from_bytes(cls, buf: Any) -> "Request":
        """Parse and validate; :class:`~codedml.errors.ProtocolError` on any defect (wrong
        magic, a length that does not add up, unknown op or flags, bad array records,
        parameters that are not a JSON object of the op's typed parameters)."""
        b = np.asarray(buf, dtype=np.uint8)
        if b.ndim != 1:
            raise ProtocolError(f"a request is a flat byte buffer, got shape {b.shape}")
        raw = b.tobytes()
        n = len(raw)
        if n < _REQ_HEAD.size:
            raise ProtocolError(f"a request is at least {_REQ_HEAD.size} bytes, got {n}")
        magic, op, flags, narr, job, handle, field, plen = _REQ_HEAD.unpack_from(raw)
        if magic != _REQ_MAGIC:
            raise ProtocolError(f"request magic must be {_REQ_MAGIC:#x}, got {magic:#x}")
        if flags & ~15:
            raise ProtocolError(f"request flags must be a subset of 0b1111, got {flags:#b}")
        if narr > MAX_ARRAYS:
            raise ProtocolError(f"a request carries at most {MAX_ARRAYS} arrays, got {narr}")
        pos = _REQ_HEAD.size
        arrays = []
        for _ in range(narr):
            if pos + 2 > n:
                raise ProtocolError(f"request truncated in its array records ({n} bytes)")
            code, ndim = raw[pos], raw[pos + 1]
            if ndim > MAX_NDIM:
                raise ProtocolError(f"arrays may have at most {MAX_NDIM} dimensions, got {ndim}")
            end = pos + 2 + 8 * ndim
            if end > n:
                raise ProtocolError(f"request truncated in its array records ({n} bytes)")
            arrays.append((struct.unpack_from(f"<{ndim}q", raw, pos + 2), code))
            pos = end
        inline = 0
        if flags & 8:  # the arrays' bytes follow the parameters in this message
            for shape, code in arrays:
                _check_shape(shape, code)
            inline = sum(math.prod(s) * DTYPES[c].itemsize for s, c in arrays)
            if not arrays or inline > INLINE_MAX:
                raise ProtocolError(f"a request's arrays travel inline only when there are some "
                                    f"and they hold at most {INLINE_MAX} bytes, got {len(arrays)} "
                                    f"array(s) of {inline} bytes")
        if pos + plen + inline != n:
            raise ProtocolError(f"request length {n} does not match its header ({pos} bytes of "
                                f"header and array records + {plen} of parameters"
                                + (f" + {inline} of inline arrays)" if flags & 8 else ")"))
        return cls.from_fields(op, job, handle, field, flags & 7, raw[pos:pos + plen],
                               tuple(arrays), shapes_checked=bool(flags & 8))

    @classmethod
    def from_fields(cls, op: int, job: int, handle: int, field: int, flags: int, params: bytes,
                    arrays: tuple = (), shapes_checked: bool = False) -> "Request":
        """A request from its parsed wire fields (int64 values; handle and field -1 when
        absent; the parameters' JSON bytes, empty when none): the checks of
        :meth:`from_bytes` past the layout, shared with the compiled parser of
        ``codedml.runtime._wire`` (which checks the array records itself:
        ``shapes_checked``)."""
        doc: Any = {}
        seen = _CALL_MEMO.get(params) if op == _CALL and params else None
        if seen is not None:  # the same call's parameters as a recent request: checked then
            doc = {"name": seen[0], "params": dict(seen[1])}
            params = b""  # nothing left to check
        elif params:
            try:
                doc = json.loads(params.decode())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ProtocolError(f"malformed request parameters: {type(exc).__name__}: "
                                    f"{exc}") from exc
            if not isinstance(doc, dict) or not doc:
                raise ProtocolError(f"request parameters must be a non-empty JSON object, got "
                                    f"{str(doc)[:200]!r}")
        if not flags & 2 and handle != -1 or not flags & 4 and field != -1:
            raise ProtocolError("request handle/field present without its flag")
        op_ = _OPS.get(op)
        if op_ is None:
            raise ProtocolError(f"unknown operation {op!r}")
        if job < -1 or handle < -1 or field < -1:  # int64s from the wire: only the floor to check
            name, v = next((n, v) for n, v in (("job", job), ("handle", handle), ("field", field))
                           if v < -1)
            raise ProtocolError(f"request field `{name}` must be an int from -1 to 2**63 - 1, "
                                f"got {v!r}")
        if flags & ~7:
            raise ProtocolError(f"request flags must be a subset of 0b111, got {flags:#b}")
        try:
            if params:
                _check_params(op_, doc)
        except ConfigurationError as exc:  # e.g. a non-finite parameter: a defect on receipt
            raise ProtocolError(f"request parameters cannot travel: {exc}") from exc
        if params and op_ is Op.CALL:
            _remember_call(params, doc)
        if not shapes_checked:
            for shape, code in arrays:
                _check_shape(shape, code)
        # every field checked as __post_init__ would: built without running it again
        out = object.__new__(cls)
        out.__dict__.update(op=op_, job=job, handle=handle if flags & 2 else None,
                            field=field if flags & 4 else None, compensated=bool(flags & 1),
                            params=doc, arrays=arrays)
        return out


def call_request(job: int, name: str, params: dict[str, Any] | None) -> Request:
    """``Request(Op.CALL, job, params={"name": name, "params": dict(params or {})})``; when
    the parameters are flat (str keys; exact str, int, bool, None or finite float values), it
    is built without the dataclass's checks (they pass by construction) and remembers a key
    that decides its wire form, so :meth:`Request.encode` reuses a recent call's."""
    inner = {} if params is None else params
    if type(name) is not str or not name:
        flat = None
    elif params is None:
        flat = ()   # no parameters, the common call: the key without walking them
    else:
        flat = _flat_key(inner) if type(inner) is dict else None
    if flat is None or type(job) is not int or not -1 <= job < _I64:
        return Request(Op.CALL, job, params={"name": name, "params": dict(params or {})})
    out = object.__new__(Request)
    out.__dict__.update(op=Op.CALL, job=job, handle=None, field=None, compensated=False,
                        params={"name": name, "params": dict(inner)}, arrays=(),
                        _wire_key=(name, flat))
    return out


def _flat_key(d: dict[Any, Any]) -> tuple | None:
    """A hashable key that decides the JSON of ``d`` (keys in order, each value's exact type
    and value: 1, 1.0 and True differ, floats by their hex form, so -0.0 is not 0.0), or
    ``None`` where ``d`` is not flat plain data (the full checks then name any defect)."""
    items = []
    for k, v in d.items():
        t = type(v)
        if type(k) is not str:
            return None
        if t not in _FLAT:  # the worker's memo keeps the same exact types (_remember_call)
            return None
        if t is float:
            if not math.isfinite(v):
                return None
            v = v.hex()
        items.append((k, t, v))
    return tuple(items)


#: Recent calls' wire forms (job 0) by their key: see :meth:`Request.encode`; at most
#: _MEMO_MAX entries (cleared when full).
_WIRE_MEMO: dict[tuple, bytes] = {}
_JOB = struct.Struct("<q")
_JOB_AT = struct.calcsize("<IBBBx")  # the job's offset in _REQ_HEAD


#: A worker's recent calls' parameters (JSON bytes -> name and the handler's parameters),
#: checked once: a handler called again with the same parameters (an echo, a fixed
#: configuration) skips the JSON parse and the checks. Only flat parameters (no list or dict
#: inside) of at most _MEMO_BYTES are kept, so every request gets its own objects; at most
#: _MEMO_MAX entries.
_CALL_MEMO: dict[bytes, tuple[str, dict[str, Any]]] = {}
_MEMO_MAX = 64
_MEMO_BYTES = 1024  # longer parameters are parsed every time (the memo stays small)
_CALL = int(Op.CALL)  # its wire code, compared with the int from the wire
_FLAT = frozenset({str, int, float, bool, type(None)})


def recent_call(params: bytes) -> tuple[str, dict[str, Any]] | None:
    """A call's handler name and parameters when a recent request carried these very
    parameter bytes (checked then: see :data:`_CALL_MEMO`), else ``None``. The parameters'
    dict is shared: pass it on unpacked (``**params``), never to be changed."""
    return _CALL_MEMO.get(params) if params else None


def call_memo() -> dict[bytes, tuple[str, dict[str, Any]]]:
    """The memo :func:`recent_call` reads, itself (the compiled worker loop looks calls up
    in it): kept by this module, only ever cleared, never replaced."""
    return _CALL_MEMO


def _remember_call(raw: bytes, doc: dict[str, Any]) -> None:
    inner = doc.get("params", {})
    if (len(raw) > _MEMO_BYTES or len(doc) != 2 or not isinstance(inner, dict)
            or any(type(v) not in _FLAT for v in inner.values())):
        return
    if len(_CALL_MEMO) >= _MEMO_MAX:
        _CALL_MEMO.clear()
    _CALL_MEMO[raw] = (doc["name"], dict(inner))


def _check_params(op: Op, params: dict[str, Any]) -> None:
    """An op's parameters: only its own names, each of its JSON type; a call's own
    parameters plain JSON data (:func:`_check_json`)."""
    allowed = _PARAMS[op]
    for k, v in params.items():
        kinds = allowed.get(k)
        if kinds is None:
            raise ProtocolError(f"{op.name} takes parameters {sorted(allowed)}, got {k!r}")
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            raise ProtocolError(f"{op.name} parameter `{k}` must be "
                                f"{'/'.join(t.__name__ for t in kinds)}, got {v!r}")
    if op is Op.CALL:
        _check_json("params", params.get("params", {}))
    elif op is Op.MATMUL and "nice" in params and not 1 <= params["nice"] <= MAX_NICE:
        raise ProtocolError(f"MATMUL parameter `nice` (how much lower the product's thread "
                            f"runs) must be from 1 to {MAX_NICE}, got {params['nice']!r}")


def _check_shape(shape: tuple[int, ...], code: int) -> None:
    if not 0 <= code < len(DTYPES):
        raise ProtocolError(f"dtype code must be between 0 and {len(DTYPES) - 1}, got {code}")
    if len(shape) > MAX_NDIM:
        raise ProtocolError(f"arrays may have at most {MAX_NDIM} dimensions, got {len(shape)}")
    if shape and min(shape) < 0:
        raise ProtocolError(f"array dimensions must be >= 0, got {shape}")
    if math.prod(shape) * DTYPES[code].itemsize > MAX_BYTES:
        raise ProtocolError(f"an array of shape {shape} and dtype {DTYPES[code]} exceeds "
                            f"{MAX_BYTES} bytes")


_ZEROS = (0,) * MAX_NDIM
_KINDS = {k.value: k for k in Kind}
_UINT8 = DTYPES.index(np.dtype(np.uint8))
#: The op codes a reply may carry (0: a request that could not be read).
_REPLY_OPS = frozenset({0} | {o.value for o in Op})


@dataclass(frozen=True)
class ReplyHeader:
    """The fixed-size header of a reply: which request, what kind, and what follows."""

    job: int
    kind: Kind
    op: int
    dtype: int = 0
    shape: tuple[int, ...] = ()
    elapsed_ns: int = 0
    nbytes: int = 0

    @classmethod
    def for_array(cls, job: int, op: int, result: np.ndarray, elapsed: float) -> "ReplyHeader":
        code = dtype_code(result.dtype)
        shape = tuple(int(s) for s in result.shape)
        _check_shape(shape, code)
        return cls(job, Kind.RESULT, int(op), code, shape, int(elapsed * 1e9), int(result.nbytes))

    @classmethod
    def for_bytes(cls, job: int, kind: Kind, op: int, payload: np.ndarray) -> "ReplyHeader":
        return cls(job, kind, int(op), _CODE[np.dtype(np.uint8)], (int(payload.size),), 0,
                   int(payload.size))

    def to_array(self) -> np.ndarray:
        nd = len(self.shape)
        return np.array((_MAGIC, self.job, int(self.kind), self.op, self.dtype, nd, *self.shape,
                         *_ZEROS[nd:], self.elapsed_ns, self.nbytes), dtype=np.int64)

    @classmethod
    def from_array(cls, h: np.ndarray) -> "ReplyHeader":
        """Parse and check every field; :class:`~codedml.errors.ProtocolError` on any defect."""
        h = np.asarray(h)
        if h.shape != (HEADER_LEN,) or h.dtype != np.int64:
            raise ProtocolError(f"a reply header is {HEADER_LEN} int64, got {h.shape} {h.dtype}")
        v = h.tolist()
        magic, job, kind, op, code, ndim = v[:6]
        if magic != _MAGIC:
            raise ProtocolError(f"reply header magic must be {_MAGIC:#x}, got {magic:#x}")
        kind_ = _KINDS.get(kind)
        if kind_ is None:
            raise ProtocolError(f"reply kind must be one of {[k.value for k in Kind]}, got {kind}")
        if job < -1:
            raise ProtocolError(f"reply job id must be >= -1, got {job}")
        if op not in _REPLY_OPS:  # a BYE's too (it answers CLOSE): every field is checked
            raise ProtocolError(f"reply op must be 0 (a request that could not be read) or one "
                                f"of {[o.value for o in Op]}, got {op}")
        if not 0 <= ndim <= MAX_NDIM:
            raise ProtocolError(f"reply ndim must be between 0 and {MAX_NDIM}, got {ndim}")
        shape = tuple(v[6:6 + ndim])
        _check_shape(shape, code)
        if ndim < MAX_NDIM and any(v[6 + ndim:6 + MAX_NDIM]):
            raise ProtocolError("reply header dimensions past ndim must be 0")
        nbytes = v[7 + MAX_NDIM]
        if kind_ is Kind.RESULT or kind_ is Kind.ERROR:
            want = math.prod(shape) * DTYPES[code].itemsize
            if nbytes != want:
                raise ProtocolError(f"reply announces {nbytes} bytes for shape {shape} of "
                                    f"{DTYPES[code]} ({want} bytes)")
            if kind_ is Kind.ERROR and code != _UINT8:
                raise ProtocolError(f"an error reply carries uint8 JSON, header says {DTYPES[code]}")
        elif nbytes != 0:
            raise ProtocolError(f"an {kind_.name} reply carries no bytes, header says {nbytes}")
        return cls(job, kind_, op, code, shape, v[6 + MAX_NDIM], nbytes)

    @property
    def carries_payload(self) -> bool:
        return self.kind in (Kind.RESULT, Kind.ERROR)

    def empty(self) -> np.ndarray:
        """A receive buffer for the payload this header announces."""
        return np.empty(self.shape, dtype=DTYPES[self.dtype])


@dataclass(frozen=True)
class RemoteError:
    """A worker's exception as plain fields: where, which operation, what, and its traceback."""

    rank: int
    host: str
    job: int
    op: str
    exc_type: str
    message: str
    traceback: str = ""

    def to_bytes(self) -> np.ndarray:
        doc = {k: getattr(self, k) for k in ("rank", "host", "job", "op", "exc_type", "message",
                                             "traceback")}
        return np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8).copy()

    @classmethod
    def from_bytes(cls, buf: Any) -> "RemoteError":
        try:
            doc = json.loads(bytes(np.asarray(buf, dtype=np.uint8)).decode())
            types = {"rank": int, "host": str, "job": int, "op": str, "exc_type": str,
                     "message": str, "traceback": str}
            if not isinstance(doc, dict) or set(doc) != set(types) or any(
                    type(doc[k]) is not t for k, t in types.items()):
                raise ProtocolError(f"an error reply must hold {sorted(types)} with their types, "
                                    f"got {str(doc)[:200]!r}")
            return cls(**doc)
        except ProtocolError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed error reply: {type(exc).__name__}: {exc}") from exc

    def exception(self) -> "Exception":
        """The :class:`~codedml.errors.WorkerFailure` (an :class:`~codedml.errors.UpdateFailedError`
        for acknowledged ops) the master raises for it."""
        from ..errors import UpdateFailedError, WorkerFailure

        cls = UpdateFailedError if self.op in {o.name.lower() for o in ACK_OPS} else WorkerFailure
        return cls(f"worker rank {self.rank} raised {self.exc_type}: {self.message}",
                   rank=self.rank, host=self.host, job=self.job, op=self.op,
                   exc_type=self.exc_type, remote_traceback=self.traceback)
