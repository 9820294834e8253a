"""The MPI runtime's compiled per-message path, ``codedml.runtime._wire`` (codedml/runtime/_wire.c).

Its parsers must agree exactly with protocol.py's: every reply header and every request that
protocol.py accepts, the compiled path accepts with the same fields, and every one it refuses
the compiled path refuses too (the compiled path hands a refused message back to protocol.py,
which names the defect). Property tests drive both with valid messages and random damage.
The engines themselves run under mpiexec (tests/test_mpi.py, both transports). Where the
module was not built these tests skip; ``REQUIRE_CODEDML_KERNELS=1`` (set by ``.ci/run``)
makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedml.errors import ConfigurationError, ProtocolError
from codedml.runtime import protocol
from codedml.runtime.protocol import (DTYPES, HEADER_LEN, MAX_NDIM, Kind, Op, ReplyHeader,
                                      Request)

try:
    from mpi4py import MPI  # noqa: F401  # the module links the MPI mpi4py loads
    from codedml.runtime import _wire
except ImportError:  # pragma: no cover - depends on the install
    _wire = None

needs_wire = pytest.mark.skipif(_wire is None, reason="codedml.runtime._wire not built (no mpicc at install)")
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_wire_built_and_usable_where_required():
    from codedml.runtime.mpi import wire_status

    ok, why = wire_status()
    if os.environ.get("REQUIRE_CODEDML_KERNELS") == "1":
        assert _wire is not None, "codedml.runtime._wire was not built: see setup.py and launch/setup.sh"
        assert ok, why
    else:
        built = importlib.util.find_spec("codedml.runtime._wire") is not None
        assert ok == built or not ok, why


@needs_wire
def test_constants_are_protocol_py_s():
    from codedml.runtime.mpi import _protocol_constants, _wire_constants

    assert _wire_constants(_wire) == _protocol_constants()
    assert _wire.HEADER_LEN == HEADER_LEN and _wire.MAX_NDIM == MAX_NDIM
    assert tuple(_wire.ITEMSIZE) == tuple(d.itemsize for d in DTYPES)


class _FakeComm:
    """Three ranks; the others answer the transport agreement as ``others`` say (rows of
    [asked: 0 auto, 1 compiled, 2 python; can run the compiled path; node has more ranks
    than CPUs]). This rank's node holds ``node`` ranks."""

    def __init__(self, others, node=1):
        self.others, self.node = others, node

    def Split_type(self, kind):
        node = self.node
        return type("Node", (), {"Get_size": lambda self: node, "Free": lambda self: None,
                                 "Allreduce": lambda self, send, recv, op: None})()

    def Get_size(self):
        return 3

    def Dup(self):
        return self

    def Set_errhandler(self, h):
        pass

    def Get_rank(self):
        return 0

    def Allgather(self, send, recv):
        recv[0] = send
        recv[1:] = self.others


def test_transport_argument_checked_and_agreed(monkeypatch):
    from codedml.runtime import mpi

    with pytest.raises(ConfigurationError, match=r"`transport` must be one of \['auto', "
                                                 r"'compiled', 'python'\], got 'fast'"):
        mpi.MPICluster(_FakeComm([]), transport="fast", threads=None)
    monkeypatch.setattr(mpi, "_WIRE_STATUS", (True, "compiled (test)"))
    with pytest.raises(ConfigurationError, match=r"`transport` must be the same on every rank, "
                                                 r"got 'auto' on ranks \[0, 2\], 'python' on ranks \[1\]"):
        mpi.MPICluster(_FakeComm([[2, 0, 0], [0, 1, 0]]), transport="auto", threads=None)
    with pytest.raises(ConfigurationError, match=r"transport='compiled' cannot run on ranks \[2\]; "):
        mpi.MPICluster(_FakeComm([[1, 1, 0], [1, 0, 0]]), transport="compiled", threads=None)
    monkeypatch.setattr(mpi, "_WIRE_STATUS", (False, "codedml.runtime._wire is not built (test)"))
    with pytest.raises(ConfigurationError, match=r"cannot run on ranks \[0\] \(here: "
                                                 r"codedml.runtime._wire is not built \(test\)\)"):
        mpi.MPICluster(_FakeComm([[1, 1, 0], [1, 1, 0]]), transport="compiled", threads=None)


def test_parity_products_yield_by_default_where_a_workers_node_is_crowded():
    """The ranks tell, with the transport agreement, whether their node has more ranks than
    CPUs; the root lowers parity products by default (10) when any worker's node does and
    each rank runs one BLAS thread, and not otherwise (the root's own node does not count)."""
    import os

    from codedml.runtime import mpi
    from codedml.runtime._worker import PER_THREAD_NICE

    cases = [([[2, 0, 0], [2, 0, 1]], 1, 1, [1], 10), ([[2, 0, 1], [2, 0, 1]], 1, 1, [0, 1], 10),
             ([[2, 0, 1], [2, 0, 1]], 1, None, [0, 1], 0), ([[2, 0, 1], [2, 0, 1]], 1, 2, [0, 1], 0),
             ([[2, 0, 0], [2, 0, 0]], 1, 1, [], 0), ([[2, 0, 0], [2, 0, 0]], 1000, 1, [], 0)]
    for others, node, threads, crowded, nice in cases:
        c = mpi.MPICluster(_FakeComm(others, node), transport="python", threads=threads)
        assert sorted(c.crowded_workers) == crowded, (others, node)
        assert c.parity_nice == (nice if PER_THREAD_NICE else 0), (others, node, threads)
    assert (os.cpu_count() or 1) < 1000  # the root's node crowded (last case) counts for nothing


# ------------------------------------------------------------------ reply headers
def _py_header(raw: bytes):
    try:
        h = ReplyHeader.from_array(np.frombuffer(raw, dtype=np.int64))
    except ProtocolError:
        return None
    return (h.job, int(h.kind), h.op, h.dtype, h.shape, h.elapsed_ns, h.nbytes)


_edge = st.sampled_from([-2, -1, 0, 1, 2, 3, 4, 5, 8, 9, 10, 2**40, 2**62, -2**63, 0xC0DED1])


@st.composite
def headers(draw):
    code = draw(st.integers(0, len(DTYPES) - 1))
    ndim = draw(st.integers(0, MAX_NDIM))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    kind = draw(st.sampled_from(list(Kind)))
    if kind is Kind.ERROR:
        code, shape = DTYPES.index(np.dtype(np.uint8)), (draw(st.integers(0, 50)),)
    nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize \
        if kind in (Kind.RESULT, Kind.ERROR) else 0
    h = ReplyHeader(draw(st.integers(-1, 2**62)), kind, draw(st.integers(0, 9)), code,
                    shape, draw(st.integers(0, 2**40)), nbytes).to_array()
    for _ in range(draw(st.integers(0, 3))):  # damage: any field set to an edge value
        h[draw(st.integers(0, HEADER_LEN - 1))] = draw(_edge)
    return h.tobytes()


@needs_wire
@PROPS
@given(headers())
def test_reply_header_checks_agree(raw):
    assert _wire.check_header(raw) == _py_header(raw)


def _py_reply(raw: bytes):
    """The layout rule of a reply message, in Python: a valid header alone, or a valid
    header of a result or error followed by exactly the 1 to INLINE_MAX bytes it announces."""
    n = HEADER_LEN * 8
    h = _py_header(raw[:n]) if len(raw) >= n else None
    if h is None or len(raw) == n:
        return h
    kind, nbytes = h[1], h[6]
    if kind in (Kind.RESULT, Kind.ERROR) and 0 < nbytes <= protocol.INLINE_MAX \
            and len(raw) == n + nbytes:
        return h + (raw[n:],)
    return None


@st.composite
def replies(draw):
    """A reply header (maybe damaged) and what follows it in its message: nothing, the
    payload it announces, or that payload a few bytes short or long."""
    if draw(st.booleans()):  # a valid result header of a small array: the inline case
        code = draw(st.integers(0, len(DTYPES) - 1))
        shape = tuple(draw(st.lists(st.integers(0, 9), max_size=3)))
        size = int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize
        raw = ReplyHeader(draw(st.integers(-1, 2**62)), Kind.RESULT, draw(st.integers(1, 9)),
                          code, shape, 0, size).to_array().tobytes()
    else:
        raw = draw(headers())
    nbytes = int(np.frombuffer(raw, dtype=np.int64)[-1])
    tail = draw(st.sampled_from(["none", "exact", "short", "long"]))
    if tail == "none" or not 0 < nbytes <= protocol.INLINE_MAX + 64:
        return raw
    size = nbytes + {"exact": 0, "short": -draw(st.integers(1, 8)),
                     "long": draw(st.integers(1, 8))}[tail]
    return raw + bytes(draw(st.binary(min_size=max(0, size), max_size=max(0, size))))


@needs_wire
@PROPS
@given(replies())
def test_reply_layouts_agree(raw):
    got = _wire.check_header(raw)
    want = _py_reply(raw)
    assert (got if got is None or len(got) == 7 else got[:7] + (bytes(got[7]),)) == want


@needs_wire
def test_reply_header_edges():
    ok = ReplyHeader.for_array(3, int(Op.CALL), np.zeros((2, 3)), 0.5).to_array()
    assert _wire.check_header(ok.tobytes()) == (3, 0, 4, 0, (2, 3), 500_000_000, 48)
    assert _wire.check_header(ok.tobytes()[:-8]) is None  # short
    big = ok.copy()
    big[5], big[6], big[7], big[-1] = 2, 2**20, 2**17, 2**40  # exactly MAX_BYTES: accepted
    assert _py_header(big.tobytes()) is not None and _wire.check_header(big.tobytes()) is not None
    big[7] += 1  # one past it
    assert _py_header(big.tobytes()) is None and _wire.check_header(big.tobytes()) is None
    bye = ReplyHeader(5, Kind.BYE, int(Op.CLOSE)).to_array()
    assert _wire.check_header(bye.tobytes()) == _py_header(bye.tobytes()) == (5, 2, 9, 0, (), 0, 0)
    bye[3] = 2**40  # a BYE's op is checked too (the compiled check once cut it to an int: 0)
    assert _py_header(bye.tobytes()) is None and _wire.check_header(bye.tobytes()) is None
    huge = ok.copy()  # a product that overflows int64 must be refused, not wrap around
    huge[5], huge[6], huge[7], huge[8] = 3, 2**40, 2**40, 0
    huge[-1] = 0
    assert _wire.check_header(huge.tobytes()) == _py_header(huge.tobytes())


# ------------------------------------------------------------------ requests
def _compiled_request(raw: bytes):
    """What the compiled worker makes of ``raw``: C's layout checks, then the same
    Request.from_fields as protocol.py's parser."""
    p = _wire.parse_request(raw)
    if p is None:
        return None
    op, job, handle, field, flags, params, arrays = p
    try:
        return Request.from_fields(op, job, handle, field, flags, params,
                                   tuple((tuple(s), c) for s, c in arrays), shapes_checked=True)
    except ProtocolError:
        return None


def _py_request(raw: bytes):
    try:
        return Request.from_bytes(np.frombuffer(raw, dtype=np.uint8))
    except ProtocolError:
        return None


_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                     max_leaves=6)


@st.composite
def requests(draw):
    op = draw(st.sampled_from(list(Op)))
    params = {}
    if op is Op.CALL:
        params = {"name": draw(st.text(min_size=1, max_size=5)),
                  "params": draw(st.dictionaries(st.text(max_size=3), _json, max_size=3))}
    elif op is Op.UPDATE:
        params = {"seq": draw(st.integers(0, 9))}
    elif op is Op.CLOSE and draw(st.booleans()):
        params = {"failures": draw(st.booleans())}
    arrays = [np.zeros(tuple(draw(st.lists(st.integers(0, 3), max_size=3))),
                       dtype=draw(st.sampled_from(DTYPES)))
              for _ in range(draw(st.integers(0, 3)))]
    req = Request(op, draw(st.integers(-1, 2**62)), draw(st.none() | st.integers(-1, 9)),
                  draw(st.none() | st.integers(-1, 2**31)), draw(st.booleans()), params)
    raw = bytearray(req.with_arrays(arrays).to_bytes().tobytes())
    if arrays and draw(st.booleans()):  # the arrays inline, as the compiled root sends small ones
        raw[5] |= 8
        raw += b"".join(a.tobytes() for a in arrays)
    for _ in range(draw(st.integers(0, 3))):  # damage
        how = draw(st.integers(0, 4))
        if how == 0 and raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        elif how == 1:
            raw = raw[:draw(st.integers(0, len(raw)))]
        elif how == 2:
            raw += bytes(draw(st.lists(st.integers(0, 255), max_size=9)))
        elif how == 3 and len(raw) >= 36:  # a header field set to an edge value
            at = draw(st.sampled_from([8, 16, 24]))
            raw[at:at + 8] = struct.pack("<q", draw(_edge))
        elif how == 4 and len(raw) >= 36:  # op, flags or array count
            raw[draw(st.integers(4, 6))] = draw(st.integers(0, 255))
    return bytes(raw)


@needs_wire
@PROPS
@given(requests())
def test_request_parsers_agree(raw):
    assert _compiled_request(raw) == _py_request(raw)


@needs_wire
def test_request_edges():
    r = Request(Op.MATMUL, 7, None, None, False).with_arrays([np.zeros((2, 3)), np.zeros((3,), np.int32)])
    raw = r.to_bytes().tobytes()
    assert _wire.parse_request(raw) == (1, 7, -1, -1, 0, b"", [((2, 3), 0), ((3,), 7)])
    assert _compiled_request(raw) == r
    for cut in (0, 10, 35, 36, len(raw) - 1):
        assert _wire.parse_request(raw[:cut]) is None
    assert _wire.parse_request(raw + b"\0") is None
    tail = b'{"name":"f","params":{"x":NaN}}'
    nan = protocol._REQ_HEAD.pack(protocol._REQ_MAGIC, int(Op.CALL), 0, 0, 1, -1, -1, len(tail)) + tail
    assert _wire.parse_request(nan) is not None  # layout fine: the JSON is protocol.py's to refuse
    assert _compiled_request(nan) is None and _py_request(nan) is None
    inl = bytearray(raw)
    inl[5] |= 8  # the same request with its 60 bytes of arrays inline
    inl += bytes(range(60))
    assert _wire.parse_request(bytes(inl)) == (1, 7, -1, -1, 0, b"", [((2, 3), 0), ((3,), 7)])
    assert _compiled_request(bytes(inl)) == r == _py_request(bytes(inl))
    for bad in (inl[:-1], inl + b"\0", raw[:5] + bytes([8]) + raw[6:]):
        assert _wire.parse_request(bytes(bad)) is None and _py_request(bytes(bad)) is None
    # inline with nothing to carry, and past INLINE_MAX with a length that adds up: refused
    fetch = bytearray(Request(Op.FETCH, 1, 0).to_bytes().tobytes())
    fetch[5] |= 8
    big = np.zeros(protocol.INLINE_MAX // 8 + 1)
    over = bytearray(Request(Op.MATMUL, 1, 0).with_arrays([big]).to_bytes().tobytes())
    over[5] |= 8
    over += big.tobytes()
    for bad in (fetch, over):
        assert _wire.parse_request(bytes(bad)) is None and _py_request(bytes(bad)) is None


@needs_wire
def test_inline_reply_edges():
    """A reply's payload may ride in its header's message: whole, of a result or an error,
    1 to INLINE_MAX bytes; check_header hands it back with the header's fields."""
    x = np.arange(6.0).reshape(2, 3)
    h = ReplyHeader.for_array(3, int(Op.CALL), x, 0.5).to_array().tobytes()
    got = _wire.check_header(h + x.tobytes())
    assert got[:7] == (3, 0, 4, 0, (2, 3), 500_000_000, 48)
    assert bytes(got[7]) == x.tobytes() and isinstance(got[7], bytearray)
    assert _wire.check_header(h + x.tobytes()[:-1]) is None  # short of what the header says
    assert _wire.check_header(h + x.tobytes() + b"\0") is None
    ack = ReplyHeader(4, Kind.ACK, int(Op.PUT)).to_array().tobytes()
    assert _wire.check_header(ack + b"\0" * 8) is None  # an ack carries nothing
    big = np.zeros(protocol.INLINE_MAX // 8 + 1)
    hb = ReplyHeader.for_array(3, int(Op.CALL), big, 0.0).to_array().tobytes()
    assert _wire.check_header(hb) is not None  # alone: its payload follows as a message
    assert _wire.check_header(hb + big.tobytes()) is None  # too big to ride inline
    assert _wire.INLINE_MAX == protocol.INLINE_MAX
