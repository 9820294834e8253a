"""The wire protocol between the root and its workers: data, never code.

Every message is one of a few typed records, validated when it is built and again when it is
received; nothing on the control or the data path is pickled.

Requests (root -> worker)
    A :class:`Request`: an :class:`Op`, the request id (``job``), the resident operand it
    names, the field, the precision flag, the op's parameters (plain JSON values) and the
    shape and dtype of every array that follows. On the wire it is UTF-8 JSON in a byte
    buffer (``TAG_CTRL``), followed by one buffer per array (``TAG_TASK``).
Request ids: products, fetches and calls are numbered by one counter (the ``job`` a failure
model is asked about); acknowledged operations by another (their ``job`` field is that number),
and the reply header's ``op`` says which table a reply belongs to.

Replies (worker -> root)
    Every request gets exactly one reply: a result (``Kind.RESULT``, with one array), an
    acknowledgement (``Kind.ACK``: ``put``, ``update``, ``sgd``, ``drop``; no array) or an
    error (``Kind.ERROR``: a :class:`RemoteError` as JSON bytes). A reply is a fixed header of
    :data:`HEADER_LEN` int64 (:class:`ReplyHeader`, ``TAG_HDR``) and, when it carries bytes, one
    buffer (``TAG_RES``). The header holds the full n-dimensional shape (up to :data:`MAX_NDIM`
    dimensions), the dtype code and the byte count, and is checked on receipt: a header that
    fails any check raises :class:`~codedml.errors.ProtocolError`. ``Kind.BYE`` closes a
    worker's stream after ``close``.
Cancels (root -> worker)
    One int64, the id of a request that no longer needs an answer (``TAG_CANCEL``): a worker
    skips a cancelled request it has not started and sends nothing for it; the root has already
    settled that request, so no reply is owed.
"""

from __future__ import annotations

import enum
import json
import math
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
    Op.MATMUL: {}, Op.MATMUL_LEFT: {}, Op.FETCH: {}, Op.PUT: {}, Op.DROP: {},
    Op.UPDATE: {"seq": (int,)},
    Op.SGD: {"seq": (int,), "lr": _NUM, "momentum": _NUM, "dampening": _NUM, "weight_decay": _NUM,
             "nesterov": (bool,), "buffer": (int, type(None)), "first": (bool,)},
    Op.CALL: {"name": (str,), "params": (dict,)},
    Op.CLOSE: {"failures": (bool,)},
}
_JSON_SCALARS = (str, int, float, bool, type(None))


def dtype_code(dt: Any) -> int:
    """The wire code of a dtype; :class:`~codedml.errors.ProtocolError` for any other."""
    try:
        return _CODE[np.dtype(dt)]
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"dtype {dt!r} cannot travel: allowed are "
                            f"{[str(d) for d in DTYPES]}") from exc


def _check_json(name: str, value: Any, depth: int = 0) -> None:
    """Plain JSON data only: scalars (finite floats), lists and str-keyed dicts."""
    if depth > 8:
        raise ConfigurationError(f"`{name}` is nested too deeply to travel (more than 8 levels)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"`{name}` must be finite to travel, got {value!r}")
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        raise ConfigurationError(f"`{name}` must be a plain Python number, got numpy "
                                 f"{type(value).__name__} {value!r}")
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(f"{name}[{i}]", v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError(f"`{name}` keys must be strings, got {k!r}")
            _check_json(f"{name}[{k!r}]", v, depth + 1)
        return
    raise ConfigurationError(f"`{name}` must be plain data (str, int, float, bool, None, list, "
                             f"dict) to travel, got {type(value).__name__}")


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
            op = Op(self.op)
        except ValueError as exc:
            raise ProtocolError(f"unknown operation {self.op!r}") from exc
        object.__setattr__(self, "op", op)
        for name, v, kinds in (("job", self.job, (int,)), ("handle", self.handle, (int, type(None))),
                               ("field", self.field, (int, type(None))),
                               ("compensated", self.compensated, (bool,))):
            if type(v) not in kinds or (type(v) is int and v < -1):
                raise ProtocolError(f"request field `{name}` must be {' or '.join(k.__name__ for k in kinds)}"
                                    f" (ints >= -1), got {v!r}")
        allowed = _PARAMS[op]
        for k, v in self.params.items():
            if k not in allowed:
                raise ProtocolError(f"{op.name} takes parameters {sorted(allowed)}, got {k!r}")
            if not isinstance(v, allowed[k]) or (isinstance(v, bool) and bool not in allowed[k]):
                raise ProtocolError(f"{op.name} parameter `{k}` must be "
                                    f"{'/'.join(t.__name__ for t in allowed[k])}, got {v!r}")
        if op is Op.CALL:
            _check_json("params", self.params.get("params", {}))
        for shape, code in self.arrays:
            _check_shape(shape, code)

    def with_arrays(self, arrays: list[np.ndarray]) -> "Request":
        """This request announcing ``arrays`` (their shapes and dtypes)."""
        meta = tuple((tuple(int(s) for s in a.shape), dtype_code(a.dtype)) for a in arrays)
        for shape, code in meta:
            _check_shape(shape, code)
        return Request(self.op, self.job, self.handle, self.field, self.compensated,
                       self.params, meta)

    def to_bytes(self) -> np.ndarray:
        """UTF-8 JSON in a uint8 buffer."""
        doc = {"op": int(self.op), "job": self.job, "handle": self.handle, "field": self.field,
               "compensated": self.compensated, "params": self.params,
               "arrays": [[list(s), c] for s, c in self.arrays]}
        return np.frombuffer(json.dumps(doc, allow_nan=False).encode(), dtype=np.uint8).copy()

    @classmethod
    def from_bytes(cls, buf: Any) -> "Request":
        """Parse and validate; :class:`~codedml.errors.ProtocolError` on any defect."""
        try:
            doc = json.loads(bytes(np.asarray(buf, dtype=np.uint8)).decode())
            if not isinstance(doc, dict) or set(doc) != {"op", "job", "handle", "field",
                                                        "compensated", "params", "arrays"}:
                raise ProtocolError(f"a request must be a JSON object with the 7 request fields, "
                                    f"got {str(doc)[:200]!r}")
            if not isinstance(doc["params"], dict) or not isinstance(doc["arrays"], list):
                raise ProtocolError("request `params` must be an object and `arrays` a list")
            arrays = []
            for item in doc["arrays"]:
                if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], list)
                        or any(type(s) is not int for s in item[0]) or type(item[1]) is not int):
                    raise ProtocolError(f"request array entries must be [[dims...], dtype code], got {item!r}")
                arrays.append((tuple(item[0]), item[1]))
            return cls(doc["op"], doc["job"], doc["handle"], doc["field"], doc["compensated"],
                       doc["params"], tuple(arrays))
        except ProtocolError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed request: {type(exc).__name__}: {exc}") from exc


def _check_shape(shape: tuple[int, ...], code: int) -> None:
    if not 0 <= code < len(DTYPES):
        raise ProtocolError(f"dtype code must be between 0 and {len(DTYPES) - 1}, got {code}")
    if len(shape) > MAX_NDIM:
        raise ProtocolError(f"arrays may have at most {MAX_NDIM} dimensions, got {len(shape)}")
    if any(s < 0 for s in shape):
        raise ProtocolError(f"array dimensions must be >= 0, got {shape}")
    if math.prod(shape) * DTYPES[code].itemsize > MAX_BYTES:
        raise ProtocolError(f"an array of shape {shape} and dtype {DTYPES[code]} exceeds "
                            f"{MAX_BYTES} bytes")


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
        h = np.zeros(HEADER_LEN, dtype=np.int64)
        h[:6] = (_MAGIC, self.job, int(self.kind), self.op, self.dtype, len(self.shape))
        h[6:6 + len(self.shape)] = self.shape
        h[6 + MAX_NDIM] = self.elapsed_ns
        h[7 + MAX_NDIM] = self.nbytes
        return h

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
        try:
            kind_ = Kind(kind)
        except ValueError as exc:
            raise ProtocolError(f"reply kind must be one of {[k.value for k in Kind]}, got {kind}") from exc
        if job < -1:
            raise ProtocolError(f"reply job id must be >= -1, got {job}")
        if kind_ is not Kind.BYE and op not in _REPLY_OPS:
            raise ProtocolError(f"reply op must be 0 (a request that could not be read) or one "
                                f"of {[o.value for o in Op]}, got {op}")
        if not 0 <= ndim <= MAX_NDIM:
            raise ProtocolError(f"reply ndim must be between 0 and {MAX_NDIM}, got {ndim}")
        shape = tuple(v[6:6 + ndim])
        _check_shape(shape, code)
        if any(v[6 + ndim:6 + MAX_NDIM]):
            raise ProtocolError("reply header dimensions past ndim must be 0")
        nbytes = v[7 + MAX_NDIM]
        want = math.prod(shape) * DTYPES[code].itemsize
        if kind_ in (Kind.RESULT, Kind.ERROR) and nbytes != want:
            raise ProtocolError(f"reply announces {nbytes} bytes for shape {shape} of "
                                f"{DTYPES[code]} ({want} bytes)")
        if kind_ in (Kind.ACK, Kind.BYE) and nbytes != 0:
            raise ProtocolError(f"an {kind_.name} reply carries no bytes, header says {nbytes}")
        if kind_ is Kind.ERROR and DTYPES[code] != np.uint8:
            raise ProtocolError(f"an error reply carries uint8 JSON, header says {DTYPES[code]}")
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
