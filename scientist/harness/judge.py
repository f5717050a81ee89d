"""The judge's side of the harness: talk to the variant's learner, trust nothing it says.

A seed's protected `evaluate.py` is the judge. It owns the data, the environments, the
labels and rewards, the scoring and the metrics file; the variant's code runs in another
process (another container under Docker), the learner, reached through `connect`:

    from scientist.harness import judge

    def evaluate(learner, cli):
        info = learner.call("load", device="cpu")
        n = info.number("num_params", low=1, integer=True)
        for x_t, y_t in stream:
            logits = learner.call("predict", x=x_t).array("logits", shape=(S, 10), dtype="float")
            ...score logits against y_t (the learner has not seen y_t)...
            learner.send("learn", y=y_t)   # no reply needed: checked before the next call
        return {"online_acc": acc}

    judge.main(evaluate, cli.metrics, standalone=[sys.executable, "learner.py", "--out", str(cli.out)])

Every reply is checked before use: `Reply.array` checks name, dtype kind, shape, finiteness
and bounds; `Reply.number` and `Reply.text` likewise. A reply that fails a check, or a
malformed or oversized message, raises `Violation`: the variant broke the protocol.
An error the learner reports about itself (its code raised), or its process ending, raises
`LearnerError`; a reply that takes longer than the call's timeout raises `LearnerTimeout`.
`main` turns these into the verdict the framework reads from the metrics file (key
`harness`), so the orchestrator can tell an honest crash from a violation.

Under the framework, the learner is already running in its sandbox and `SCIENTIST_SOCKET`
names its socket. Run by hand (`python evaluate.py --out D --metrics m.json`), the judge
starts the learner itself from the `standalone` command, unconfined, over a socket pair.

The evaluation seed: `eval_seed(default)` is the per-run secret the framework passes in
`SCIENTIST_EVAL_SEED` (the default when run by hand), and `eval_set()` says which set to
score: `fitness` (what selection sees) or `sealed` (the held-out set, scored for the baseline
and the final best only).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from scientist.harness import wire

SOCKET_ENV, SOCKET_FD_ENV = "SCIENTIST_SOCKET", "SCIENTIST_SOCKET_FD"
EVAL_SEED_ENV, EVAL_SET_ENV = "SCIENTIST_EVAL_SEED", "SCIENTIST_EVAL_SET"
LEARNER_EXITED = "learner-exited"  # the framework writes this beside the socket if the learner ends
EVAL_SETS = ("fitness", "sealed")
DEFAULT_MAX_REPLY = 64 << 20  # bytes of arrays in one reply
# Exit statuses of `main`, and the verdict it writes under the metrics file's "harness" key.
EXIT_OK, EXIT_VIOLATION, EXIT_LEARNER, EXIT_TIMEOUT = 0, 3, 4, 5
VERDICTS = {EXIT_OK: "ok", EXIT_VIOLATION: "violated", EXIT_LEARNER: "crash", EXIT_TIMEOUT: "timeout"}
HARNESS_KEY = "harness"


class Violation(Exception):
    """The learner broke the protocol: a malformed, oversized or invalid reply."""


class LearnerError(Exception):
    """The learner failed honestly: its code raised, or its process ended."""


class LearnerTimeout(Exception):
    """The learner did not answer within the call's timeout."""


def eval_seed(default: int) -> int:
    """The seed of the evaluation streams/episodes: the run's secret, or `default` by hand."""
    raw = os.environ.get(EVAL_SEED_ENV, "")
    return int(raw) if raw.strip() else default


def eval_set() -> str:
    """`fitness` (default) or `sealed`."""
    s = os.environ.get(EVAL_SET_ENV, "fitness") or "fitness"
    if s not in EVAL_SETS:
        raise ValueError(f"{EVAL_SET_ENV}={s!r}: expected one of {EVAL_SETS}")
    return s


_KINDS = {"float": "f", "int": "iu", "bool": "b"}


class Reply(Mapping):
    """The learner's answer: read its entries through the checking accessors."""

    def __init__(self, op: str, data: dict[str, Any]):
        self.op, self._data = op, data

    def __getitem__(self, k: str) -> Any:
        return self._data[k]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def _get(self, name: str) -> Any:
        if name not in self._data:
            raise Violation(f"the learner's reply to {self.op!r} lacks {name!r} "
                            f"(it has: {', '.join(sorted(self._data)) or 'nothing'})")
        return self._data[name]

    def array(self, name: str, shape: Sequence[int | None] | None = None, dtype: str = "float",
              finite: bool = True, low: float | None = None, high: float | None = None) -> np.ndarray:
        """Entry `name` as an array of kind `dtype` (float, int or bool; ints are accepted
        where floats are asked for) and `shape` (None: any size on that axis), finite and
        within [low, high]; a Violation otherwise."""
        a = self._get(name)
        where = f"the learner's {name!r} in reply to {self.op!r}"
        if not isinstance(a, np.ndarray):
            raise Violation(f"{where} is a {type(a).__name__}, not an array")
        kinds = _KINDS[dtype] + ("iu" if dtype == "float" else "")
        if a.dtype.kind not in kinds:
            raise Violation(f"{where} has dtype {a.dtype}, expected {dtype}")
        if shape is not None and (len(shape) != a.ndim or any(
                s is not None and s != d for s, d in zip(shape, a.shape))):
            want = tuple("*" if s is None else s for s in shape)
            raise Violation(f"{where} has shape {a.shape}, expected {want}")
        if a.dtype.kind == "f" and finite and not np.isfinite(a).all():
            raise Violation(f"{where} holds {int((~np.isfinite(a)).sum())} non-finite values")
        if a.size and low is not None and a.min() < low:
            raise Violation(f"{where} holds {a.min()!r}, below {low}")
        if a.size and high is not None and a.max() > high:
            raise Violation(f"{where} holds {a.max()!r}, above {high}")
        return a

    def number(self, name: str, low: float | None = None, high: float | None = None,
               integer: bool = False) -> float:
        v = self._get(name)
        where = f"the learner's {name!r} in reply to {self.op!r}"
        if isinstance(v, np.ndarray) and v.shape == ():
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise Violation(f"{where} is {v!r}, not a finite number")
        if integer and v != int(v):
            raise Violation(f"{where} is {v!r}, not an integer")
        if (low is not None and v < low) or (high is not None and v > high):
            raise Violation(f"{where} is {v!r}, outside [{low}, {high}]")
        return int(v) if integer else float(v)

    def text(self, name: str, choices: Sequence[str] | None = None, max_len: int = 200) -> str:
        v = self._get(name)
        if not isinstance(v, str) or len(v) > max_len or (choices is not None and v not in choices):
            want = f"one of {list(choices)}" if choices is not None else f"a string of at most {max_len}"
            raise Violation(f"the learner's {name!r} in reply to {self.op!r} is {str(v)[:80]!r}, "
                            f"expected {want}")
        return v


class Learner:
    """The judge's handle on the learner process: `call` sends a request and waits."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None = None,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY, timeout: float | None = None):
        self.sock, self.proc = sock, proc
        self.max_reply_bytes, self.timeout = max_reply_bytes, timeout
        self.seq, self.calls, self.seconds = 0, 0, 0.0
        self.pending: list[tuple[int, str]] = []  # (seq, op) of requests whose reply is unread

    def call(self, op: str, *, timeout: float | None = None, max_bytes: int | None = None,
             **payload: Any) -> Reply:
        """Send request `op` with `payload` (numbers, strings, arrays) and return the
        checked-at-the-wire reply. Raises Violation, LearnerError or LearnerTimeout."""
        self.send(op, **payload)
        reply = None
        while self.pending:  # the replies to earlier `send`s first, in order
            reply = self._receive(timeout, max_bytes)
        return reply

    def send(self, op: str, **payload: Any) -> None:
        """Send request `op` without waiting: its reply is read (and must be ok) before the
        next `call`'s. For requests whose answer the judge does not use (a learner's `learn`),
        this saves a round trip, which on a loaded machine costs a scheduling delay each."""
        self.seq += 1
        try:
            wire.send(self.sock, op, self.seq, payload)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise LearnerError(f"the learner went away before {op!r}: {e}{self._exit_note()}") from None
        self.pending.append((self.seq, op))

    def flush(self, timeout: float | None = None) -> None:
        """Read and check the replies to every request sent and not yet answered."""
        while self.pending:
            self._receive(timeout, None)

    def _receive(self, timeout: float | None, max_bytes: int | None) -> Reply:
        expected, op = self.pending.pop(0)
        start = time.monotonic()
        t = timeout if timeout is not None else self.timeout
        try:
            self.sock.settimeout(t)
            kind, seq, data = wire.recv(self.sock, max_bytes or self.max_reply_bytes)
        except (socket.timeout, TimeoutError):
            raise LearnerTimeout(f"the learner did not answer {op!r} within {t:.0f} s") from None
        except wire.PeerClosed:
            raise LearnerError(f"the learner exited during {op!r}{self._exit_note()}") from None
        except (BrokenPipeError, ConnectionResetError) as e:
            raise LearnerError(f"the learner went away during {op!r}: {e}{self._exit_note()}") from None
        except wire.WireError as e:
            raise Violation(f"the learner's reply to {op!r} is malformed: {e}") from None
        finally:
            self.calls += 1
            self.seconds += time.monotonic() - start
        if seq != expected:
            raise Violation(f"the learner answered request {seq} when {expected} ({op!r}) was asked")
        if kind == "error":
            msg = data.get("message", "")
            raise LearnerError(f"the learner failed in {op!r}: {data.get('type', 'Error')}: "
                               f"{str(msg)[:2000]}")
        if kind != "ok":
            raise Violation(f"the learner replied {kind!r} to {op!r}; expected 'ok' or 'error'")
        return Reply(op, data)

    def _exit_note(self) -> str:
        if self.proc is None:
            return " (see the learner's stderr)"
        try:
            rc = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            return ""
        return f" (exit status {rc})"

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    def __enter__(self) -> Learner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(standalone: Sequence[str] | None = None, timeout: float | None = None,
            max_reply_bytes: int = DEFAULT_MAX_REPLY) -> Learner:
    """The learner: the framework's (SCIENTIST_SOCKET), or one started here from
    `standalone` (an argv) when the judge runs by hand. `timeout` bounds each call."""
    path = os.environ.get(SOCKET_ENV)
    if path:
        return Learner(_connect_path(Path(path)), None, max_reply_bytes, timeout)
    if not standalone:
        raise LearnerError(f"{SOCKET_ENV} is not set and no standalone learner command was given")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items()
           if k not in (EVAL_SEED_ENV, EVAL_SET_ENV, SOCKET_ENV)}
    env[SOCKET_FD_ENV] = str(theirs.fileno())
    proc = subprocess.Popen(list(standalone), env=env, pass_fds=(theirs.fileno(),),
                            stdin=subprocess.DEVNULL)
    theirs.close()
    return Learner(ours, proc, max_reply_bytes, timeout)


def _connect_path(path: Path) -> socket.socket:
    """Connect to the learner's socket, waiting for it to listen (it imports its framework
    and loads its checkpoint first) unless the framework says the learner has ended."""
    delay = 0.01
    while True:
        if (path.parent / LEARNER_EXITED).exists():
            raise LearnerError("the learner exited before it accepted the judge "
                               "(see the learner's stderr)")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            time.sleep(delay)
            delay = min(0.5, delay * 2)


def write_metrics(path: Path, metrics: Mapping[str, Any], verdict: str = "ok", reason: str = "") -> None:
    data = dict(metrics)
    data[HARNESS_KEY] = {"status": verdict, "reason": reason}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False))


def main(evaluate: Callable[[Learner], Mapping[str, Any]], metrics: Path,
         standalone: Sequence[str] | None = None, timeout: float | None = None,
         max_reply_bytes: int = DEFAULT_MAX_REPLY) -> NoReturn:
    """Connect to the learner, run `evaluate(learner)`, write its metrics (numbers must be
    finite) or the verdict on the learner, and exit: 0 ok, 3 protocol violation, 4 the
    learner failed, 5 it timed out. The judge's own errors propagate (exit 1)."""
    code, reason, result = EXIT_OK, "", {}
    try:
        with connect(standalone, timeout, max_reply_bytes) as learner:
            result = dict(evaluate(learner))
            learner.flush()  # a `send` whose reply was never read still counts
            print(f"judge: {learner.calls} learner calls, {learner.seconds:.1f} s waiting on "
                  "the learner", file=sys.stderr)
    except Violation as e:
        code, reason = EXIT_VIOLATION, str(e)
    except LearnerError as e:
        code, reason = EXIT_LEARNER, str(e)
    except LearnerTimeout as e:
        code, reason = EXIT_TIMEOUT, str(e)
    if code == EXIT_OK:
        bad = {k: v for k, v in result.items()
               if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            print(f"evaluate.py: error: non-finite metrics {bad}", file=sys.stderr)
            sys.exit(1)
        write_metrics(metrics, result)
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        write_metrics(metrics, {}, VERDICTS[code], reason)
        print(f"judge: {VERDICTS[code]}: {reason}", file=sys.stderr)
    sys.exit(code)
