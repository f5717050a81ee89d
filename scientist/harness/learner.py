"""The learner's side of the harness: serve a seed's learner object to the judge.

A seed's protected `learner.py` builds an object from the variant's code and the
checkpoint (it runs in the learner's own process, in the sandbox, with no data, no metrics
file and no network) and hands it to `serve`:

    from scientist.harness.learner import serve
    serve(VSMLLearner(args.out))

`serve` listens on the socket the framework names in `SCIENTIST_SOCKET` (or uses the
socket the judge passed in `SCIENTIST_SOCKET_FD` when the judge started this process
itself), accepts the judge, and answers its requests one at a time: request `op` calls
the object's method `op` with the request's values and arrays as keyword arguments; the
method returns a dict of numbers, strings and arrays (NumPy, or tensors, which are copied
to the CPU), or None. An exception in the method goes back to the judge as an error with
its message and the last lines of its traceback (the judge then fails the variant with that
reason, as Gymnasium's AsyncVectorEnv reports a worker's error to its parent). When the
judge closes the connection, `serve` returns. This module is the learner's own business:
nothing it does or sends is trusted by the judge, which validates every reply.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from typing import Any

from scientist.harness import wire

SOCKET_ENV, SOCKET_FD_ENV = "SCIENTIST_SOCKET", "SCIENTIST_SOCKET_FD"
MAX_REQUEST = 1 << 31  # the judge is trusted: its requests are only bounded against accidents


def _accept() -> socket.socket:
    fd = os.environ.get(SOCKET_FD_ENV)
    if fd:
        return socket.socket(fileno=int(fd))
    path = os.environ.get(SOCKET_ENV)
    if not path:
        sys.exit(f"learner: neither {SOCKET_ENV} nor {SOCKET_FD_ENV} is set; the judge "
                 "(evaluate.py) starts this process, or the framework does")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    conn, _ = server.accept()
    server.close()
    return conn


def _handle(obj: object, op: str, payload: dict[str, Any]) -> dict[str, Any]:
    fn = getattr(obj, op, None) if not op.startswith("_") else None
    if not callable(fn):
        raise AttributeError(f"the learner has no operation {op!r}")
    result = fn(**payload)
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"{op} returned a {type(result).__name__}; a dict (or None) is expected")
    return result


def serve(obj: object) -> None:
    """Answer the judge's requests with `obj`'s methods until the judge hangs up."""
    conn = _accept()
    with conn:
        while True:
            try:
                op, seq, payload = wire.recv(conn, MAX_REQUEST)
            except (wire.PeerClosed, ConnectionResetError):  # a reset: it hung up with a reply unread
                return
            try:
                reply = ("ok", _handle(obj, op, payload))
                chunks = wire.encode(*reply[:1], seq, reply[1])
            except Exception as e:  # the learner's own failure: reported, never swallowed
                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:])
                print(tb, file=sys.stderr, flush=True)
                chunks = wire.encode("error", seq, {"type": type(e).__name__,
                                                    "message": str(e)[:2000], "traceback": tb[-4000:]})
            try:
                for c in chunks:
                    conn.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                return
