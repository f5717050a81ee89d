"""The judge-learner wire format: a command name, plain values and raw arrays. No pickle.

One message on the stream socket is

    b"SCI1" | header length (4 bytes, big endian) | header (UTF-8 JSON) | array bytes ...

The header is `{"op": NAME, "seq": N, "values": {...}, "arrays": [[name, dtype, shape], ...]}`.
`values` holds JSON scalars (numbers, strings, booleans, null) and flat lists of numbers;
each array follows the header as its raw C-order bytes, in the order the header lists them,
with a dtype from a short allow-list (little-endian numbers and booleans). Nothing in a
message can carry code: the reader builds arrays with `numpy.frombuffer` and values with
`json.loads`, and rejects anything else (unknown dtypes, object arrays, NaN literals in the
header, sizes over the reader's limit) before it allocates.

Both sides use this module: the judge (trusted, `scientist.harness.judge`) and the learner
(untrusted, `scientist.harness.learner`). Standard library and NumPy only: it runs in the
sandbox image and in any seed's environment.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

MAGIC = b"SCI1"
MAX_HEADER = 1 << 20  # bytes of JSON header
MAX_DIMS = 8
MAX_ARRAYS = 64
DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "int8": "|i1", "int16": "<i2",
          "int32": "<i4", "int64": "<i8", "uint8": "|u1", "bool": "|b1"}
_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


class WireError(Exception):
    """A message that does not follow this format (or a peer that went away mid-message)."""


class PeerClosed(WireError):
    """The other side closed the connection (cleanly, between messages)."""


def _json_value(v: Any, where: str) -> Any:
    """A header value as JSON allows it here: finite numbers, str, bool, None, lists of numbers."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise WireError(f"{where}: value {v!r} is not finite (send it as an array)")
        return float(v)
    if isinstance(v, (list, tuple)) and not any(isinstance(x, (list, tuple, dict)) for x in v):
        return [_json_value(x, where) for x in v]
    raise WireError(f"{where}: cannot send a {type(v).__name__} (numbers, strings, booleans, "
                    "flat lists and arrays only)")


def _as_array(v: Any) -> np.ndarray | None:
    """`v` as a NumPy array if it is array-like data (ndarray, or a tensor via .numpy())."""
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor, without importing torch
        return v.detach().cpu().numpy()
    return None


def encode(op: str, seq: int, payload: Mapping[str, Any] | None = None) -> list[bytes]:
    """The byte chunks of one message (header first, then each array's raw bytes)."""
    values, arrays, chunks = {}, [], []
    for name, v in (payload or {}).items():
        a = _as_array(v)
        if a is None:
            values[name] = _json_value(v, f"{op}.{name}")
            continue
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype not in _NAMES:
            raise WireError(f"{op}.{name}: dtype {a.dtype} is not one of {sorted(DTYPES)}")
        a = np.ascontiguousarray(a, dtype=DTYPES[_NAMES[a.dtype]])  # little-endian, C order
        arrays.append([name, _NAMES[a.dtype], list(a.shape)])
        chunks.append(a.tobytes())
    header = json.dumps({"op": op, "seq": seq, "values": values, "arrays": arrays},
                        allow_nan=False).encode()
    if len(header) > MAX_HEADER:
        raise WireError(f"{op}: header of {len(header)} bytes is over {MAX_HEADER}")
    return [MAGIC + struct.pack(">I", len(header)) + header, *chunks]


def send(sock: socket.socket, op: str, seq: int, payload: Mapping[str, Any] | None = None) -> None:
    for chunk in encode(op, seq, payload):
        sock.sendall(chunk)


def _recv_exact(sock: socket.socket, n: int, first: bool = False) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if first and got == 0:
                raise PeerClosed("the peer closed the connection")
            raise WireError(f"the peer closed the connection in the middle of a message "
                            f"({got} of {n} bytes)")
        got += k
    return buf


def _reject_constant(name: str) -> None:
    raise WireError(f"header holds the non-JSON constant {name}")


def recv(sock: socket.socket, max_bytes: int) -> tuple[str, int, dict[str, Any]]:
    """Read one message: (op, seq, name -> value or array). Raises WireError on anything
    malformed or larger than `max_bytes` of array data, before allocating it."""
    head = _recv_exact(sock, 8, first=True)
    if bytes(head[:4]) != MAGIC:
        raise WireError(f"bad magic {bytes(head[:4])!r}: not a harness message")
    (n,) = struct.unpack(">I", head[4:])
    if n > MAX_HEADER:
        raise WireError(f"header of {n} bytes is over the limit of {MAX_HEADER}")
    try:
        header = json.loads(bytes(_recv_exact(sock, n)).decode(), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str) \
            or not isinstance(header.get("seq"), int) or not isinstance(header.get("values", {}), dict) \
            or not isinstance(header.get("arrays", []), list):
        raise WireError("header must be {op: str, seq: int, values: {}, arrays: []}")
    specs = header.get("arrays", [])
    if len(specs) > MAX_ARRAYS:
        raise WireError(f"{len(specs)} arrays in one message; at most {MAX_ARRAYS}")
    out: dict[str, Any] = {}
    for k, v in header.get("values", {}).items():
        if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (list, dict)) for x in v)):
            raise WireError(f"value {k!r}: nested containers are not allowed")
        out[k] = v
    total, parsed = 0, []
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str)
                and spec[1] in DTYPES and isinstance(spec[2], list) and len(spec[2]) <= MAX_DIMS
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in spec[2])):
            raise WireError(f"bad array spec {str(spec)[:200]}: [name, dtype in {sorted(DTYPES)}, "
                            f"shape of at most {MAX_DIMS} non-negative ints]")
        name, dtype, shape = spec
        size = np.dtype(DTYPES[dtype]).itemsize * math.prod(shape)
        total += size
        if total > max_bytes:
            raise WireError(f"arrays of more than {max_bytes} bytes in one message "
                            f"({name!r} alone is {size})")
        parsed.append((name, dtype, shape, size))
    for name, dtype, shape, size in parsed:
        raw = _recv_exact(sock, size)
        out[name] = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)
    return header["op"], header["seq"], out
