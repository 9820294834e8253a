"""The wire protocol: binary requests and reply headers round-trip, and every defect is a
ProtocolError on receipt (never a crash, never a silently wrong request)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from codedml.errors import ConfigurationError, ProtocolError
from codedml.runtime.protocol import (HEADER_LEN, INLINE_MAX, MAX_NDIM, Kind, Op, ReplyHeader,
                                      Request, _REQ_HEAD, _REQ_MAGIC)

SGD = {"seq": 3, "lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 1e-4,
       "nesterov": False, "buffer": 7, "first": True}


@pytest.mark.parametrize("req,arrays", [
    (Request(Op.MATMUL, 0), [np.zeros((3, 4)), np.zeros((4, 2))]),
    (Request(Op.MATMUL, 9, 4, 2**31 - 1, True), [np.zeros((4, 2), np.int64)]),
    (Request(Op.FETCH, 2**62, 0), []),
    (Request(Op.SGD, 5, 1, None, False, SGD), [np.zeros(3, np.float32), np.zeros(())]),
    (Request(Op.CALL, 1, params={"name": "échο", "params": {"a": [1, 2.5, None], "b": {"c": True}}}),
     [np.zeros((1,) * MAX_NDIM, np.complex64)]),
    (Request(Op.CLOSE, -1, params={"failures": True}), []),
])
def test_request_round_trip(req: Request, arrays: list[np.ndarray]) -> None:
    r = req.with_arrays(arrays)
    back = Request.from_bytes(r.to_bytes())
    assert back == r
    assert back.arrays == tuple((a.shape, back.arrays[i][1]) for i, a in enumerate(arrays))
    assert type(back.op) is Op


def _raw(req: Request) -> bytearray:
    return bytearray(req.to_bytes().tobytes())


def _parse(raw: bytes | bytearray) -> Request:
    return Request.from_bytes(np.frombuffer(bytes(raw), dtype=np.uint8))


def test_request_defects_are_protocol_errors() -> None:
    good = Request(Op.MATMUL, 4, None, None, False).with_arrays([np.zeros((2, 3)), np.zeros((3, 1))])
    raw = _raw(good)
    assert _parse(raw) == good
    with pytest.raises(ProtocolError, match="at least"):
        _parse(raw[:10])
    with pytest.raises(ProtocolError, match="magic"):
        _parse(b"\0\0\0\0" + raw[4:])
    with pytest.raises(ProtocolError, match="length"):
        _parse(raw + b"x")
    with pytest.raises(ProtocolError, match="truncated"):
        _parse(raw[:-3])
    bad_op = bytearray(raw)
    bad_op[4] = 99
    with pytest.raises(ProtocolError, match="unknown operation"):
        _parse(bad_op)
    bad_flags = bytearray(raw)
    bad_flags[5] = 16
    with pytest.raises(ProtocolError, match="flags"):
        _parse(bad_flags)
    bad_code = bytearray(raw)
    bad_code[_REQ_HEAD.size] = 200
    with pytest.raises(ProtocolError, match="dtype code"):
        _parse(bad_code)
    bad_ndim = bytearray(raw)
    bad_ndim[_REQ_HEAD.size + 1] = MAX_NDIM + 1
    with pytest.raises(ProtocolError, match="dimensions"):
        _parse(bad_ndim)
    neg = bytearray(raw)
    neg[_REQ_HEAD.size + 2:_REQ_HEAD.size + 10] = struct.pack("<q", -5)
    with pytest.raises(ProtocolError, match=">= 0"):
        _parse(neg)
    with pytest.raises(ProtocolError, match="flat byte buffer"):
        Request.from_bytes(np.zeros((2, 40), np.uint8))


def _inline(req: Request, arrays: list[np.ndarray]) -> bytearray:
    """``req``'s wire form with its arrays inline (flag bit 3), as the compiled root sends it."""
    raw = _raw(req.with_arrays(arrays))
    raw[5] |= 8
    return raw + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)


def test_inline_arrays_are_part_of_the_request_layout() -> None:
    arrays = [np.arange(6.0).reshape(2, 3), np.ones(4, np.float32)]
    call = Request(Op.CALL, 7, params={"name": "f", "params": {"k": 1}})
    back = _parse(_inline(call, arrays))
    assert back == call.with_arrays(arrays)  # the inline bit is the transport's, not a field
    assert not back.compensated and back.handle is None
    raw = _inline(call, arrays)
    with pytest.raises(ProtocolError, match="inline arrays"):
        _parse(raw[:-1])  # one byte of the arrays short
    with pytest.raises(ProtocolError, match="inline arrays"):
        _parse(raw + b"\0")
    with pytest.raises(ProtocolError, match="inline only"):
        _parse(_inline(Request(Op.FETCH, 1, 0), []))  # nothing to carry
    big = np.zeros(INLINE_MAX // 8 + 1)
    with pytest.raises(ProtocolError, match=f"at most {INLINE_MAX} bytes"):
        _parse(_inline(Request(Op.MATMUL, 1, 0), [big]))


def _with_params(op: Op, params: bytes, handle: int = -1, flags: int = 0) -> bytes:
    return _REQ_HEAD.pack(_REQ_MAGIC, int(op), flags, 0, 1, handle, -1, len(params)) + params


def test_request_parameters_are_typed_on_receipt() -> None:
    ok = _parse(_with_params(Op.CLOSE, b'{"failures":false}'))
    assert ok.params == {"failures": False}
    with pytest.raises(ProtocolError, match="malformed request parameters"):
        _parse(_with_params(Op.CLOSE, b'{"failures":'))
    with pytest.raises(ProtocolError, match="non-empty JSON object"):
        _parse(_with_params(Op.CLOSE, b"[1]"))
    with pytest.raises(ProtocolError, match="takes parameters"):
        _parse(_with_params(Op.CLOSE, b'{"evil":1}'))
    with pytest.raises(ProtocolError, match="must be bool"):
        _parse(_with_params(Op.CLOSE, b'{"failures":1}'))
    with pytest.raises(ProtocolError, match="must be int"):
        _parse(_with_params(Op.UPDATE, json.dumps({"seq": "1"}).encode(), handle=3, flags=2))
    with pytest.raises(ProtocolError, match="without its flag"):
        _parse(_with_params(Op.CLOSE, b'{"failures":false}', handle=3))
    with pytest.raises(ProtocolError, match="finite"):
        _parse(_with_params(Op.CALL, b'{"name":"f","params":{"x":NaN}}'))


def test_a_products_nice_is_checked_when_built_and_on_receipt() -> None:
    """A product's ``nice`` (how much lower a parity product runs: cluster.parity_nice) is an
    int from 1 to 19, built or received; it travels unchanged."""
    req = Request(Op.MATMUL, 3, params={"nice": 19})
    assert _parse(bytes(req.to_bytes())).params == {"nice": 19}
    assert _parse(_with_params(Op.MATMUL, b'{"nice":1}')).params == {"nice": 1}
    for bad in (0, 20, -3):
        with pytest.raises(ProtocolError, match=rf"`nice`.*from 1 to 19, got {bad}"):
            Request(Op.MATMUL, 3, params={"nice": bad})
        with pytest.raises(ProtocolError, match=rf"`nice`.*from 1 to 19, got {bad}"):
            _parse(_with_params(Op.MATMUL, b'{"nice":%d}' % bad))
    for bad in (b"true", b"1.0", b'"5"', b"null"):
        with pytest.raises(ProtocolError, match="parameter `nice` must be int"):
            _parse(_with_params(Op.MATMUL, b'{"nice":' + bad + b"}"))
    with pytest.raises(ProtocolError, match=r"MATMUL_LEFT takes parameters \[\], got .nice."):
        Request(Op.MATMUL_LEFT, 3, 0, params={"nice": 5})


def test_request_fields_validated_when_built() -> None:
    with pytest.raises(ProtocolError, match="unknown operation"):
        Request(42, 0)
    with pytest.raises(ProtocolError, match="unknown operation"):
        Request([1], 0)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="`job`"):
        Request(Op.MATMUL, -2)
    with pytest.raises(ProtocolError, match="`job`"):
        Request(Op.MATMUL, 2**63)
    with pytest.raises(ProtocolError, match="`handle`"):
        Request(Op.FETCH, 0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="`compensated`"):
        Request(Op.MATMUL, 0, compensated=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="finite"):
        Request(Op.CALL, 0, params={"name": "f", "params": {"x": float("inf")}})
    with pytest.raises(ProtocolError, match="at most"):
        Request(Op.CALL, 0, params={"name": "f", "params": {}}).with_arrays([np.zeros(1)] * 17)


def test_reply_header_round_trip_and_defects() -> None:
    x = np.zeros((2, 3, 4), np.float32)
    h = ReplyHeader.for_array(11, int(Op.CALL), x, 2.5e-6)
    a = h.to_array()
    assert a.shape == (HEADER_LEN,) and a.dtype == np.int64
    assert ReplyHeader.from_array(a) == h
    assert ReplyHeader.from_array(ReplyHeader(3, Kind.ACK, int(Op.PUT)).to_array()).kind is Kind.ACK
    for i, v, msg in [(0, 1, "magic"), (2, 9, "kind"), (1, -2, "job id"), (3, 77, "reply op"),
                      (5, MAX_NDIM + 1, "ndim"), (4, 99, "dtype code"),
                      (6 + 3, 1, "past ndim"), (HEADER_LEN - 1, 5, "announces")]:
        bad = a.copy()
        bad[i] = v
        with pytest.raises(ProtocolError, match=msg):
            ReplyHeader.from_array(bad)
    with pytest.raises(ProtocolError, match="int64"):
        ReplyHeader.from_array(a.astype(np.int32))
    ack = ReplyHeader(3, Kind.ACK, int(Op.PUT)).to_array()
    ack[HEADER_LEN - 1] = 8
    with pytest.raises(ProtocolError, match="carries no bytes"):
        ReplyHeader.from_array(ack)
    err = ReplyHeader(3, Kind.ERROR, int(Op.CALL), 0, (4,), 0, 32).to_array()
    with pytest.raises(ProtocolError, match="uint8"):
        ReplyHeader.from_array(err)


def _check_json_reference(name, value, depth=0):
    """The plain recursive form of the parameter check (every element visited, every name
    spelled out), kept here to pin the fast one to it."""
    import math

    if depth > 8:
        raise ConfigurationError(f"`{name}` is nested too deeply to travel (more than 8 levels)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"`{name}` must be finite to travel, got {value!r}")
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        raise ConfigurationError(f"`{name}` must be a plain Python number, got numpy "
                                 f"{type(value).__name__} {value!r}")
    if isinstance(value, (str, int, float, bool, type(None))):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_reference(f"{name}[{i}]", v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigurationError(f"`{name}` keys must be strings, got {k!r}")
            _check_json_reference(f"{name}[{k!r}]", v, depth + 1)
        return
    raise ConfigurationError(f"`{name}` must be plain data (str, int, float, bool, None, list, "
                             f"dict) to travel, got {type(value).__name__}")


class _Float(float):
    pass


def _outcome(fn, value):
    try:
        fn("params", value)
    except ConfigurationError as exc:
        return str(exc)
    return None


def test_call_parameter_check_matches_the_plain_recursive_check() -> None:
    """The parameter check's fast paths (exact scalar types skipped, names built only for an
    error) accept and refuse exactly what the plain recursive check does, with the same
    message: finite floats, numpy scalars, non-str keys, foreign types, nesting past 8."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from codedml.runtime.protocol import _check_json

    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(), st.text(max_size=3),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(allow_nan=True, allow_infinity=True).map(_Float),
        st.sampled_from([np.int64(3), np.float64(2.5), np.float64("nan"), np.bool_(True),
                         np.float32(1.0), {1, 2}, b"x", 1j]))
    tree = st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, max_size=4), st.tuples(kids, kids),
            st.dictionaries(st.one_of(st.text(max_size=2), st.integers(0, 3)), kids, max_size=4)),
        max_leaves=30)

    def nested(depth, leaf):
        for _ in range(depth):
            leaf = [leaf]
        return leaf

    for depth in range(6, 12):  # the nesting limit, at and around its edge
        for leaf in (1, 2.5, float("nan"), [], {"x": 1}, {"x": None}):
            v = nested(depth, leaf)
            assert _outcome(_check_json, v) == _outcome(_check_json_reference, v), (depth, leaf)

    @settings(max_examples=400, deadline=None)
    @given(tree)
    def same(value):
        assert _outcome(_check_json, value) == _outcome(_check_json_reference, value)

    same()


def test_repeated_call_parameters_are_fresh_objects_and_bounded() -> None:
    """A call's parameters seen before skip the parse (protocol._CALL_MEMO), but every request
    gets its own dicts (a handler may change its kwargs), nested ones are never shared, and
    the memo stays bounded."""
    from codedml.runtime import protocol

    protocol._CALL_MEMO.clear()
    req = Request(Op.CALL, 3, params={"name": "f", "params": {"a": 1, "b": 2.5, "c": None}})
    raw = req.to_bytes()
    first, second = Request.from_bytes(raw), Request.from_bytes(raw)
    assert first == second == req
    assert first.params is not second.params
    assert first.params["params"] is not second.params["params"]
    assert len(protocol._CALL_MEMO) == 1
    nested = Request(Op.CALL, 4, params={"name": "f", "params": {"a": [1, 2]}}).to_bytes()
    x, y = Request.from_bytes(nested), Request.from_bytes(nested)
    assert x.params["params"]["a"] is not y.params["params"]["a"]
    assert len(protocol._CALL_MEMO) == 1  # not kept
    for i in range(3 * protocol._MEMO_MAX):
        Request.from_bytes(Request(Op.CALL, i, params={"name": "f", "params": {"i": i}}).to_bytes())
    assert len(protocol._CALL_MEMO) <= protocol._MEMO_MAX
    bad = bytearray(raw.tobytes()).replace(b'"b":2.5', b'"b":NaN')  # same length as before
    with pytest.raises(ProtocolError, match="finite"):
        _parse(bad)


def test_call_request_encodes_as_the_checked_request_and_refuses_the_same() -> None:
    """``call_request(...).encode(arrays)`` (reusing a recent call's wire form) gives the bytes
    of the fully checked ``Request(...).with_arrays(arrays).to_bytes()`` for any parameters:
    values that compare equal but encode differently (1, 1.0, True; 0.0 and -0.0) never share
    a wire form; parameters that are not flat plain data take the checked path and are refused
    with its message; the memo stays bounded."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from codedml.runtime import protocol
    from codedml.runtime.protocol import call_request

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.sampled_from([0.0, -0.0, 1.0, 1, True, 0, False]),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                        st.sampled_from([np.float64(1.0), np.int64(1), [1], {"a": 1}]))
    params = st.one_of(st.none(), st.dictionaries(st.sampled_from("abc"), scalars, max_size=3))
    arrays = st.lists(st.tuples(st.sampled_from([np.float64, np.float32, np.int64]),
                                st.lists(st.integers(0, 3), max_size=2)), max_size=2)

    def outcome(fn, *args):
        try:
            return fn(*args)
        except (ConfigurationError, ProtocolError) as exc:
            return type(exc).__name__, str(exc)

    def reference(job, name, prm, arrs):
        return Request(Op.CALL, job, params={"name": name, "params": dict(prm or {})}) \
            .with_arrays(arrs).to_bytes()

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 2**63 - 1), st.sampled_from(["f", "g"]), params, arrays)
    def same(job, name, prm, specs):
        arrs = [np.zeros(shape, dtype=dt) for dt, shape in specs]
        want = outcome(reference, job, name, prm, arrs)
        for _ in range(2):  # the second from the memo where the parameters are flat
            got = outcome(lambda: call_request(job, name, prm).encode(arrs))
            if isinstance(want, np.ndarray):
                assert isinstance(got, np.ndarray) and got.tobytes() == want.tobytes(), (prm, specs)
                # what the compiled engine sends: the same bytes, in any buffer
                assert bytes(call_request(job, name, prm).wire(arrs)) == want.tobytes()
            else:
                assert got == want

    same()
    assert len(protocol._WIRE_MEMO) <= protocol._MEMO_MAX
    x = np.zeros(2)
    one, flt = call_request(7, "f", {"a": 1}).encode([x]), call_request(7, "f", {"a": 1.0}).encode([x])
    assert b'"a":1}' in one.tobytes() and b'"a":1.0}' in flt.tobytes()
    assert b'"a":-0.0' in call_request(8, "f", {"a": -0.0}).encode([]).tobytes()


def test_requests_without_parameters_encode_as_the_checked_request() -> None:
    """A request without parameters (a product's tasks, a stored operand's operations) reuses
    a recent wire form of the same fields and array layout: the bytes are those of
    ``with_arrays(arrays).to_bytes()`` for every op, job, handle, field, compensated flag and
    array list, first and from the memo, and a memo entry never serves another job's fields."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from codedml.runtime import protocol

    arrays = st.lists(st.tuples(st.sampled_from([np.float64, np.float32, np.int64]),
                                st.lists(st.integers(0, 3), max_size=2)), max_size=2)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([Op.MATMUL, Op.MATMUL_LEFT, Op.PUT, Op.DROP, Op.FETCH]),
           st.integers(0, 2**63 - 1), st.one_of(st.none(), st.integers(0, 5)),
           st.one_of(st.none(), st.sampled_from([65537, 2**31 - 1])), st.booleans(), arrays)
    def same(op, job, handle, field, comp, specs):
        arrs = [np.zeros(shape, dtype=dt) for dt, shape in specs]
        req = Request(op, job, handle, field, comp)
        want = req.with_arrays(arrs).to_bytes().tobytes()
        for j in (job, job ^ 1):   # the second from the memo, for another job too
            r = Request(op, j, handle, field, comp)
            assert r.encode(arrs).tobytes() == r.with_arrays(arrs).to_bytes().tobytes()
            assert bytes(r.wire(arrs)) == r.with_arrays(arrs).to_bytes().tobytes()
        assert req.encode(arrs).tobytes() == want

    same()
    assert len(protocol._WIRE_MEMO) <= protocol._MEMO_MAX


def test_recent_call_gives_the_checked_parameters_only() -> None:
    from codedml.runtime import protocol
    from codedml.runtime.protocol import recent_call

    protocol._CALL_MEMO.clear()
    raw = Request(Op.CALL, 3, params={"name": "f", "params": {"a": 1}}).to_bytes()
    tail = raw.tobytes()[-len(b'{"name":"f","params":{"a":1}}'):]
    assert recent_call(tail) is None  # never received: not checked
    Request.from_bytes(raw)
    assert recent_call(tail) == ("f", {"a": 1})
    assert recent_call(b"") is None
