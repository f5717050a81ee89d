"""The judge-learner wire format, byte for byte: what is sent, what is refused, and why.

Messages go through a real socket pair; the hostile ones are written as raw bytes, as a
variant's learner could write them.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import numpy as np
import pytest

from scientist.harness import wire
from scientist.harness.wire import MAGIC, MAX_ARRAYS, MAX_DIMS, MAX_HEADER, PeerClosed, WireError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def raw(header: object, body: bytes = b"", *, magic: bytes = MAGIC, length: int | None = None) -> bytes:
    """A message as raw bytes: magic, header length, JSON header, array bytes."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return magic + struct.pack(">I", len(h) if length is None else length) + h + body


def header(op="predict", seq=1, values=None, arrays=None) -> dict:
    return {"op": op, "seq": seq, "values": values or {}, "arrays": arrays or []}


def roundtrip(pair, payload, op="predict", seq=7, max_bytes=1 << 20):
    a, b = pair
    wire.send(a, op, seq, payload)
    return wire.recv(b, max_bytes)


# --- what goes through ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(wire.DTYPES))
def test_every_allowed_dtype_arrives_with_its_values_and_shape(pair, name):
    a = (np.arange(24) % 2 if name == "bool" else np.arange(24)).astype(wire.DTYPES[name]).reshape(2, 3, 4)
    op, seq, got = roundtrip(pair, {"x": a})
    assert (op, seq) == ("predict", 7)
    assert got["x"].dtype == np.dtype(wire.DTYPES[name]) and got["x"].shape == (2, 3, 4)
    assert np.array_equal(got["x"], a)


def test_values_arrive_as_json_scalars_and_flat_lists(pair):
    payload = {"n": np.int64(3), "f": np.float32(0.5), "b": True, "s": "text", "none": None,
               "l": [1, 2.5, np.int32(4)], "t": (1, 2)}
    _, _, got = roundtrip(pair, payload)
    assert got == {"n": 3, "f": 0.5, "b": True, "s": "text", "none": None, "l": [1, 2.5, 4], "t": [1, 2]}
    assert type(got["n"]) is int and type(got["f"]) is float


def test_a_message_without_payload_has_no_values(pair):
    assert roundtrip(pair, None, op="count", seq=1) == ("count", 1, {})


def test_big_endian_and_strided_arrays_are_sent_as_little_endian_c_order(pair):
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    strided = np.arange(12, dtype="<i8").reshape(3, 4)[:, ::2]
    chunks = wire.encode("op", 1, {"big": big, "strided": strided})
    head = json.loads(chunks[0][8:])
    assert head["arrays"] == [["big", "float32", [2, 3]], ["strided", "int64", [3, 2]]]
    assert chunks[1] == big.astype("<f4").tobytes() and chunks[2] == np.ascontiguousarray(strided).tobytes()
    _, _, got = roundtrip(pair, {"big": big, "strided": strided})
    assert got["big"].dtype == np.dtype("<f4") and np.array_equal(got["big"], big)
    assert np.array_equal(got["strided"], strided)


class Tensor:
    """What the wire sees of a torch tensor: detach().cpu().numpy()."""

    def __init__(self, a):
        self.a, self.calls = a, []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        self.calls.append("numpy")
        return self.a


def test_tensors_are_sent_as_arrays(pair):
    t = Tensor(np.ones((2, 2), dtype="float32"))
    _, _, got = roundtrip(pair, {"t": t})
    assert t.calls == ["detach", "cpu", "numpy"]
    assert np.array_equal(got["t"], np.ones((2, 2)))


def test_the_header_is_magic_length_and_json(pair):
    chunks = wire.encode("learn", 3, {"y": 1.5, "x": np.zeros(2, dtype="int8")})
    assert chunks[0][:4] == b"SCI1"
    (n,) = struct.unpack(">I", chunks[0][4:8])
    assert n == len(chunks[0]) - 8
    assert json.loads(chunks[0][8:]) == {"op": "learn", "seq": 3, "values": {"y": 1.5},
                                          "arrays": [["x", "int8", [2]]]}
    assert chunks[1:] == [b"\x00\x00"]


def test_arrays_exactly_at_the_size_limit_pass(pair):
    _, _, got = roundtrip(pair, {"a": np.zeros(10, dtype="float64"), "b": np.zeros(2, dtype="int8")},
                          max_bytes=82)
    assert got["a"].shape == (10,) and got["b"].shape == (2,)


def test_max_dims_and_max_arrays_are_allowed(pair):
    a = np.zeros((1,) * MAX_DIMS, dtype="uint8")
    _, _, got = roundtrip(pair, {f"a{i}": a for i in range(MAX_ARRAYS)})
    assert len(got) == MAX_ARRAYS and got["a0"].shape == (1,) * MAX_DIMS


# --- what the sender refuses ------------------------------------------------------------


@pytest.mark.parametrize("value, message", [
    (float("nan"), "is not finite"),
    (np.float64("inf"), "is not finite"),
    ([1.0, float("-inf")], "is not finite"),
    ([[1, 2]], "cannot send a list"),
    ({"a": 1}, "cannot send a dict"),
    (b"bytes", "cannot send a bytes"),
    (object(), "cannot send a object"),
])
def test_values_the_header_cannot_carry_are_refused(value, message):
    with pytest.raises(WireError, match=message) as e:
        wire.encode("predict", 1, {"bad": value})
    assert "predict.bad" in str(e.value)


@pytest.mark.parametrize("dtype", ["complex64", "float128", "U3", "object", "uint32", "datetime64[s]"])
def test_arrays_of_other_dtypes_are_refused(dtype):
    a = np.zeros(2, dtype=object) if dtype == "object" else np.zeros(2, dtype=dtype)
    with pytest.raises(WireError, match=r"predict\.a: dtype .* is not one of"):
        wire.encode("predict", 1, {"a": a})


def test_a_header_over_the_limit_is_refused_by_the_sender():
    wire.encode("op", 1, {"s": "x" * (MAX_HEADER - 100)})  # just under
    with pytest.raises(WireError, match=f"is over {MAX_HEADER}"):
        wire.encode("op", 1, {"s": "x" * MAX_HEADER})


# --- what the reader refuses, before it allocates ----------------------------------------


@pytest.mark.parametrize("message, error", [
    (raw(header(), magic=b"PKL1"), "bad magic b'PKL1'"),
    (raw(header(), length=MAX_HEADER + 1), f"header of {MAX_HEADER + 1} bytes is over the limit"),
    (raw(header(), length=0xFFFFFFFF), "header of 4294967295 bytes is over the limit"),  # unsigned
    (raw(b"{not json"), "header is not JSON"),
    (raw(b"\xff\xfe"), "header is not JSON"),
    (raw(b'{"op": "x", "seq": 1, "values": {"v": NaN}, "arrays": []}'), "non-JSON constant NaN"),
    (raw(b'{"op": "x", "seq": 1, "values": {"v": Infinity}, "arrays": []}'), "non-JSON constant Infinity"),
    (raw([1, 2]), "header must be"),
    (raw({"op": 1, "seq": 1}), "header must be"),
    (raw({"op": "x", "seq": "1"}), "header must be"),
    (raw({"op": "x", "seq": 1, "values": []}), "header must be"),
    (raw({"op": "x", "seq": 1, "arrays": {}}), "header must be"),
    (raw(header(values={"v": {"a": 1}})), "value 'v': nested containers"),
    (raw(header(values={"v": [1, [2]]})), "value 'v': nested containers"),
    (raw(header(values={"v": [1, {"a": 2}]})), "value 'v': nested containers"),
    (raw(header(arrays=[["a", "float32", [1]]] * (MAX_ARRAYS + 1))), f"{MAX_ARRAYS + 1} arrays in one message"),
    (raw(header(arrays=[["a", "object", [1]]])), "bad array spec"),
    (raw(header(arrays=[["a", "float32", [-1]]])), "bad array spec"),
    (raw(header(arrays=[["a", "float32", [True]]])), "bad array spec"),
    (raw(header(arrays=[["a", "float32", [1.0]]])), "bad array spec"),
    (raw(header(arrays=[["a", "float32", [1] * (MAX_DIMS + 1)]])), "bad array spec"),
    (raw(header(arrays=[["a", "float32"]])), "bad array spec"),
    (raw(header(arrays=[[1, "float32", [1]]])), "bad array spec"),
    (raw(header(arrays=[["a", "float32", 1]])), "bad array spec"),
    (raw(header(arrays=["a"])), "bad array spec"),
    (raw(header(arrays=[["a", "float64", [10, 10]]])), r"arrays of more than 100 bytes in one message \('a' alone is 800\)"),
    (raw(header(arrays=[["a", "uint8", [60]], ["b", "uint8", [41]]])), r"more than 100 bytes .*'b' alone is 41"),
])
def test_malformed_or_oversized_messages_are_refused(pair, message, error):
    a, b = pair
    a.sendall(message)
    with pytest.raises(WireError, match=error) as e:
        wire.recv(b, 100)
    assert not isinstance(e.value, PeerClosed)


def test_the_spec_of_a_refused_array_is_shown_cut_short(pair):
    a, b = pair
    a.sendall(raw(header(arrays=[["x" * 1000, "object", [1]]])))
    with pytest.raises(WireError) as e:
        wire.recv(b, 100)
    assert len(str(e.value)) < 400


def test_a_peer_that_closes_between_messages_is_peer_closed(pair):
    a, b = pair
    a.close()
    with pytest.raises(PeerClosed, match="closed the connection"):
        wire.recv(b, 100)


@pytest.mark.parametrize("cut", [3, 8, 20])
def test_a_peer_that_closes_mid_message_is_a_wire_error(pair, cut):
    a, b = pair
    msg = b"".join(wire.encode("op", 1, {"x": np.zeros(4, dtype="float32")}))
    a.sendall(msg[:cut])
    a.close()
    with pytest.raises(WireError, match="in the middle of a message") as e:
        wire.recv(b, 100)
    assert not isinstance(e.value, PeerClosed)


def test_a_message_in_small_pieces_is_read_whole(pair):
    a, b = pair
    msg = b"".join(wire.encode("op", 1, {"x": np.arange(50, dtype="int64")}))
    for i in range(0, len(msg), 7):
        a.sendall(msg[i:i + 7])
    op, seq, got = wire.recv(b, 1000)
    assert np.array_equal(got["x"], np.arange(50))


def test_values_and_arrays_of_one_message_arrive_together(pair):
    _, _, got = roundtrip(pair, {"k": 2, "x": np.ones(3, dtype="float32"), "name": "a"})
    assert set(got) == {"k", "x", "name"} and got["k"] == 2 and got["name"] == "a"


class OnlyCpu:
    """Has a `cpu` method like a tensor, but is not one (no `detach`)."""

    def cpu(self):
        return self


def test_only_what_has_detach_and_cpu_is_taken_for_a_tensor():
    with pytest.raises(WireError) as e:
        wire.encode("predict", 1, {"x": OnlyCpu()})
    assert str(e.value) == ("predict.x: cannot send a OnlyCpu (numbers, strings, booleans, flat lists and "
                            "arrays only)")


def test_messages_the_reader_refuses_say_exactly_what_is_wrong(pair):
    a, b = pair
    for message, error in [
        (raw([1]), "header must be {op: str, seq: int, values: {}, arrays: []}"),
        (raw(header(arrays=[["a", "object", [1]]])),
         "bad array spec ['a', 'object', [1]]: [name, dtype in " + str(sorted(wire.DTYPES)) + ", shape of at most "
         f"{MAX_DIMS} non-negative ints]"),
        (raw(header(arrays=[["n" * 300, "object", [1]]])),
         "bad array spec " + str(["n" * 300, "object", [1]])[:200] + ": [name, dtype in " + str(sorted(wire.DTYPES))
         + f", shape of at most {MAX_DIMS} non-negative ints]"),
    ]:
        a.sendall(message)
        with pytest.raises(WireError) as e:
            wire.recv(b, 100)
        assert str(e.value) == error


def test_a_closed_peer_is_said_plainly(pair):
    a, b = pair
    a.close()
    with pytest.raises(PeerClosed) as e:
        wire.recv(b, 100)
    assert str(e.value) == "the peer closed the connection"


def test_a_header_without_values_or_arrays_is_an_empty_message(pair):
    a, b = pair
    a.sendall(raw({"op": "count", "seq": 4}))
    assert wire.recv(b, 100) == ("count", 4, {})


def test_empty_arrays_pass(pair):
    _, _, got = roundtrip(pair, {"e": np.zeros((0, 3), dtype="float32")})
    assert got["e"].shape == (0, 3)


def test_a_header_of_exactly_the_largest_size_passes(pair):
    base = len(wire.encode("op", 1, {"s": ""})[0]) - 8
    chunks = wire.encode("op", 1, {"s": "x" * (MAX_HEADER - base)})
    assert len(chunks[0]) - 8 == MAX_HEADER
    a, b = pair
    t = threading.Thread(target=a.sendall, args=(chunks[0],), daemon=True)
    t.start()
    op, seq, got = wire.recv(b, 100)
    t.join(30)
    assert len(got["s"]) == MAX_HEADER - base


def test_a_message_that_arrives_in_parts_is_read_whole(pair):
    a, b = pair
    msg = b"".join(wire.encode("op", 1, {"x": np.arange(100, dtype="int64")}))
    parts = [msg[:5], msg[5:30], msg[30:400], msg[400:]]

    def send():
        for part in parts:
            a.sendall(part)
            time.sleep(0.05)  # each part its own read (ordering, not a timing assert)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    b.settimeout(30)
    op, seq, got = wire.recv(b, 10_000)
    t.join(30)
    assert np.array_equal(got["x"], np.arange(100))
