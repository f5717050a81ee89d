"""The judge's handle on the learner: over a real socket pair with a real learner process, and
in this process, with the learner's server in a thread (the same code, within reach of the
mutation tests), judge.main's verdicts and the reply checks."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scientist.harness import judge, wire
from scientist.harness import learner as learner_side
from scientist.harness.judge import LearnerError, LearnerTimeout, Reply, Violation

LEARNER = """
import sys
from scientist.harness.learner import serve

class Counter:
    def __init__(self):
        self.n = 0
    def learn(self, y):
        self.n += 1
        if self.n == {fail_at}:
            raise RuntimeError("learn failed at " + str(self.n))
        return {{}}
    def count(self):
        return {{"n": self.n}}

serve(Counter())
"""

JUDGE = """
import sys
from scientist.harness import judge

def evaluate(learner):
    for i in range(5):
        learner.send("learn", y=float(i))
    n = learner.call("count").number("n")
    for i in range(3):
        learner.send("learn", y=float(i))
    return {{"n": n}}

judge.main(evaluate, sys.argv[1], standalone=[sys.executable, {learner!r}])
"""


def run_judge(tmp_path, fail_at):
    learner = tmp_path / "learner.py"
    learner.write_text(textwrap.dedent(LEARNER.format(fail_at=fail_at)))
    script = tmp_path / "judge.py"
    script.write_text(textwrap.dedent(JUDGE.format(learner=str(learner))))
    metrics = tmp_path / "metrics.json"
    env = dict(os.environ, PYTHONPATH=str(Path(judge.__file__).parents[2]))
    proc = subprocess.run([sys.executable, str(script), str(metrics)], capture_output=True,
                          text=True, timeout=120, env=env)
    return proc, metrics


def test_sent_requests_are_answered_in_order_before_a_call(tmp_path):
    proc, metrics = run_judge(tmp_path, fail_at=0)
    assert proc.returncode == judge.EXIT_OK, proc.stderr
    assert json.loads(metrics.read_text())["n"] == 5


@pytest.mark.parametrize("fail_at", [2, 8])
def test_a_failed_sent_request_is_the_learners_failure(tmp_path, fail_at):
    """A `learn` that fails mid-stream (read at the next call) or last (read only at the
    end, when the judge flushes) fails the evaluation: no metrics are written."""
    proc, metrics = run_judge(tmp_path, fail_at=fail_at)
    assert proc.returncode == judge.EXIT_LEARNER, proc.stderr
    m = json.loads(metrics.read_text())
    assert "n" not in m and m[judge.HARNESS_KEY]["status"] != "ok"
    assert f"learn failed at {fail_at}" in m[judge.HARNESS_KEY]["reason"]


# --- in process: the judge's handle and the learner's server, over a socket pair ----------
# (the learner serves from a thread here: the same code a learner process runs, reached by
# the tests in this process)


class Model:
    """A learner object: what a seed's learner.py builds from the variant's code."""

    def __init__(self):
        self.seen, self.release = [], threading.Event()

    def predict(self, x, scale=1.0):
        self.seen.append(("predict", x.shape, scale))
        return {"logits": x * scale, "n": int(x.size), "kind": "linear"}

    def learn(self, y):
        self.seen.append(("learn", y))
        if y < 0:
            raise ValueError(f"negative label {y}")

    def count(self):
        return {"n": len(self.seen)}

    def listing(self):
        return [1, 2]

    def wait(self):
        self.release.wait(30)
        return {}

    def _secret(self):
        return {"key": "sk-1234"}

    def deep(self, n):  # n distinct frames deep (a recursion's repeated frames print as one line)
        def level(k):
            if k == 0:
                raise RecursionError("too deep at 0")
            return frames[k - 1](k - 1)

        frames = [lambda k, f=level: f(k) for _ in range(n)]
        return level(n)

    def nap(self, seconds):
        time.sleep(seconds)
        return {}

    def big(self):
        return {"x": np.zeros(1000)}


@pytest.fixture
def served(monkeypatch):
    """(judge's Learner, the Model) with the learner side serving in a thread."""
    ours, theirs = socket.socketpair()
    monkeypatch.delenv(learner_side.SOCKET_ENV, raising=False)
    monkeypatch.setenv(learner_side.SOCKET_FD_ENV, str(theirs.detach()))
    model = Model()
    t = threading.Thread(target=learner_side.serve, args=(model,), daemon=True)
    t.start()
    handle = judge.Learner(ours, timeout=30)
    yield handle, model
    handle.close()  # first: a learner still in `wait` then answers a closed socket and returns
    model.release.set()
    t.join(30)
    assert not t.is_alive(), "serve did not return when the judge hung up"


def test_a_call_runs_the_method_of_that_name_and_returns_its_values_and_arrays(served):
    handle, model = served
    x = np.arange(6, dtype="float32").reshape(2, 3)
    r = handle.call("predict", x=x, scale=2.0)
    assert isinstance(r, Reply) and r.op == "predict"
    assert np.array_equal(r.array("logits", shape=(2, 3)), 2 * x)
    assert r.number("n", integer=True) == 6 and r.text("kind") == "linear"
    assert model.seen == [("predict", (2, 3), 2.0)]
    assert (handle.seq, handle.calls, handle.pending) == (1, 1, [])
    assert handle.seconds >= 0.0


def test_a_method_returning_none_is_an_empty_reply(served):
    handle, _ = served
    r = handle.call("learn", y=1.0)
    assert len(r) == 0 and list(r) == []


def test_sent_requests_are_read_in_order_before_the_next_call(served):
    handle, model = served
    for y in (1.0, 2.0, 3.0):
        handle.send("learn", y=y)
    assert [s for s, _ in handle.pending] == [1, 2, 3]
    assert handle.call("count").number("n") == 3  # the learns ran first
    assert handle.pending == [] and handle.calls == 4
    handle.send("learn", y=4.0)
    handle.flush()
    assert handle.pending == [] and model.seen[-1] == ("learn", 4.0)


def test_a_failing_sent_request_fails_the_next_call_or_the_flush(served):
    handle, _ = served
    handle.send("learn", y=-1.0)
    with pytest.raises(LearnerError, match=r"failed in 'learn': ValueError: negative label -1.0"):
        handle.call("count")
    handle.send("learn", y=-2.0)
    with pytest.raises(LearnerError, match="negative label -2.0"):
        handle.flush()


def test_the_learner_reports_its_errors_and_keeps_serving(served):
    handle, _ = served
    with pytest.raises(LearnerError, match=r"^the learner failed in 'nope': AttributeError: the learner has no operation 'nope'$"):
        handle.call("nope")
    with pytest.raises(LearnerError, match="has no operation '_secret'"):
        handle.call("_secret")  # private methods are not operations
    with pytest.raises(LearnerError, match="listing returned a list; a dict \\(or None\\) is expected"):
        handle.call("listing")
    with pytest.raises(LearnerError, match="TypeError: .*unexpected keyword argument 'z'"):
        handle.call("learn", y=1.0, z=2)
    assert handle.call("count").number("n") == 0  # still there


def test_a_learner_that_does_not_answer_in_time_times_out(served):
    handle, model = served
    with pytest.raises(LearnerTimeout, match=r"did not answer 'wait' within 0 s"):
        handle.call("wait", timeout=0.2)


class Raw:
    """A hostile learner: answers each request with whatever `answer(op, seq)` returns (bytes)."""

    def __init__(self, answer):
        self.ours, theirs = socket.socketpair()
        self.t = threading.Thread(target=self.loop, args=(theirs, answer), daemon=True)
        self.t.start()

    @staticmethod
    def loop(sock, answer):
        with sock:
            try:
                op, seq, _ = wire.recv(sock, 1 << 20)
            except wire.WireError:
                return
            data = answer(op, seq)
            if data is not None:
                sock.sendall(data)

    def handle(self, **kw) -> judge.Learner:
        return judge.Learner(self.ours, **kw)


def message(kind, seq, payload=None) -> bytes:
    return b"".join(wire.encode(kind, seq, payload))


@pytest.mark.parametrize("answer, error, match", [
    (lambda op, seq: message("ok", seq + 4), Violation, r"answered request 5 when 1 \('predict'\) was asked"),
    (lambda op, seq: message("fine", seq), Violation, r"replied 'fine' to 'predict'; expected 'ok' or 'error'"),
    (lambda op, seq: b"PKL1" + bytes(20), Violation, r"reply to 'predict' is malformed: bad magic"),
    (lambda op, seq: message("ok", seq, {"x": np.zeros(100)}), Violation, r"reply to 'predict' is malformed: arrays of more than 64 bytes"),
    (lambda op, seq: None, LearnerError, r"^the learner exited during 'predict' \(see the learner's stderr\)$"),
    (lambda op, seq: message("ok", seq)[:10], Violation, r"malformed: the peer closed the connection in the middle"),
    (lambda op, seq: message("error", seq, {"message": "x" * 5000}), LearnerError, r"^the learner failed in 'predict': Error: x{2000}$"),
])
def test_a_reply_that_breaks_the_protocol(answer, error, match):
    raw = Raw(answer)
    with raw.handle(max_reply_bytes=64, timeout=30) as handle:
        with pytest.raises(error, match=match):
            handle.call("predict", x=np.zeros(2))
        assert handle.calls == 1
    raw.t.join(30)


def test_a_reply_may_be_larger_for_one_call_when_asked():
    raw = Raw(lambda op, seq: message("ok", seq, {"x": np.zeros(100)}))
    with raw.handle(max_reply_bytes=64, timeout=30) as handle:
        assert handle.call("predict", max_bytes=800).array("x").shape == (100,)


def test_a_learner_gone_before_the_request_is_its_failure():
    ours, theirs = socket.socketpair()
    theirs.close()
    with judge.Learner(ours, timeout=30) as handle:
        with pytest.raises(LearnerError, match=r"^the learner went away before 'predict': .* \(see the learner's stderr\)$"):
            for _ in range(100):  # the first sends may still fit the socket's buffer
                handle.send("predict", x=np.zeros(1000))


def learner_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(judge.__file__).parents[2]))
    for k in (judge.SOCKET_ENV, judge.SOCKET_FD_ENV):
        monkeypatch.delenv(k, raising=False)


def test_a_standalone_learner_that_exits_says_its_exit_status(monkeypatch):
    learner_env(monkeypatch)
    # it reads the request, then exits without answering
    code = ("import os, socket, sys; s = socket.socket(fileno=int(os.environ['SCIENTIST_SOCKET_FD'])); "
            "s.recv(65536); sys.exit(7)")
    with judge.connect([sys.executable, "-c", code], timeout=60) as handle:
        with pytest.raises(LearnerError, match=r"^the learner exited during 'predict' \(exit status 7\)$"):
            handle.call("predict")


ENV_LEARNER = """
import os
from scientist.harness.learner import serve

class Env:
    def env(self, name):
        return {"value": os.environ.get(name, "<unset>")}

serve(Env())
"""


def test_a_standalone_learner_gets_no_secret_of_the_judge(monkeypatch):
    learner_env(monkeypatch)
    monkeypatch.setenv(judge.EVAL_SEED_ENV, "31337")
    monkeypatch.setenv(judge.EVAL_SET_ENV, "sealed")
    monkeypatch.setenv("SCIENTIST_OTHER", "kept")
    with judge.connect([sys.executable, "-c", ENV_LEARNER], timeout=60) as handle:
        seen = {k: handle.call("env", name=k).text("value") for k in
                (judge.EVAL_SEED_ENV, judge.EVAL_SET_ENV, judge.SOCKET_ENV, "SCIENTIST_OTHER")}
        fd = handle.call("env", name=judge.SOCKET_FD_ENV).text("value")
    assert seen == {judge.EVAL_SEED_ENV: "<unset>", judge.EVAL_SET_ENV: "<unset>",
                    judge.SOCKET_ENV: "<unset>", "SCIENTIST_OTHER": "kept"}
    assert fd.isdigit()


def test_connect_without_a_socket_or_a_command_is_an_error(monkeypatch):
    monkeypatch.delenv(judge.SOCKET_ENV, raising=False)
    with pytest.raises(LearnerError, match="SCIENTIST_SOCKET is not set and no standalone learner command"):
        judge.connect()


def test_serve_without_a_socket_says_how_it_is_started(monkeypatch):
    monkeypatch.delenv(learner_side.SOCKET_ENV, raising=False)
    monkeypatch.delenv(learner_side.SOCKET_FD_ENV, raising=False)
    with pytest.raises(SystemExit) as e:
        learner_side.serve(Model())
    assert e.value.code == ("learner: neither SCIENTIST_SOCKET nor SCIENTIST_SOCKET_FD is set; the judge "
                            "(evaluate.py) starts this process, or the framework does")


@pytest.fixture
def socket_dir():
    d = Path(tempfile.mkdtemp(prefix="sci-"))  # short: a Unix socket's path has ~100 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_judge_waits_for_the_learner_to_listen(monkeypatch, socket_dir):
    path = socket_dir / "learner.sock"
    path.write_text("a stale file where the socket goes")  # the learner replaces it
    monkeypatch.setenv(judge.SOCKET_ENV, str(path))
    monkeypatch.delenv(judge.SOCKET_FD_ENV, raising=False)
    got: list = []
    connecting = threading.Thread(target=lambda: got.append(judge.connect(timeout=30)), daemon=True)
    connecting.start()  # before anyone listens
    time.sleep(0.3)  # long enough for a few attempts (not a timing assert: it must connect either way)
    model = Model()
    serving = threading.Thread(target=learner_side.serve, args=(model,), daemon=True)
    serving.start()
    connecting.join(30)
    (handle,) = got
    with handle:
        assert handle.call("count").number("n") == 0
    serving.join(30)
    assert not serving.is_alive()


def test_the_judge_stops_waiting_when_the_learner_has_exited(monkeypatch, socket_dir):
    monkeypatch.setenv(judge.SOCKET_ENV, str(socket_dir / "learner.sock"))
    (socket_dir / judge.LEARNER_EXITED).touch()
    with pytest.raises(LearnerError) as e:
        judge.connect()
    assert str(e.value) == "the learner exited before it accepted the judge (see the learner's stderr)"


def run_main(monkeypatch, socket_dir, tmp_path, evaluate, **kw):
    """judge.main in this process against a Model served from a thread: (exit code, metrics or None)."""
    monkeypatch.setenv(judge.SOCKET_ENV, str(socket_dir / "learner.sock"))
    monkeypatch.delenv(judge.SOCKET_FD_ENV, raising=False)
    model = Model()
    t = threading.Thread(target=learner_side.serve, args=(model,), daemon=True)
    t.start()
    metrics = tmp_path / "out" / "metrics.json"
    try:
        with pytest.raises(SystemExit) as e:
            judge.main(evaluate, metrics, **kw)
    finally:
        model.release.set()
        t.join(30)
    return e.value.code, (json.loads(metrics.read_text()) if metrics.exists() else None)


def test_main_writes_the_metrics_and_an_ok_verdict(monkeypatch, socket_dir, tmp_path, capsys):
    def evaluate(lr):
        lr.send("learn", y=1.0)
        return {"note": "fine", "calls": 2, "acc": lr.call("predict", x=np.ones(3)).array("logits").mean()}

    code, m = run_main(monkeypatch, socket_dir, tmp_path, evaluate)
    assert code == judge.EXIT_OK == 0
    assert m == {"acc": 1.0, "calls": 2, "note": "fine", "harness": {"status": "ok", "reason": ""}}
    out, err = capsys.readouterr()
    assert out == '{\n "acc": 1.0,\n "calls": 2,\n "note": "fine"\n}\n'  # sorted, as the metrics file
    assert re.fullmatch(r"judge: 2 learner calls, \d+\.\d s waiting on the learner\n", err), err


def test_main_reads_the_reply_of_a_last_send(monkeypatch, socket_dir, tmp_path):
    def evaluate(lr):
        lr.send("learn", y=-5.0)  # its reply (an error) is read only by main's flush
        return {"acc": 1.0}

    code, m = run_main(monkeypatch, socket_dir, tmp_path, evaluate)
    assert code == judge.EXIT_LEARNER == 4
    assert m == {"harness": {"status": "crash", "reason": "the learner failed in 'learn': ValueError: negative label -5.0"}}


@pytest.mark.parametrize("call, code, status, reason", [
    (lambda lr: lr.call("count").number("missing"), judge.EXIT_VIOLATION, "violated", "lacks 'missing' (it has: n)"),
    (lambda lr: lr.call("learn", y=-1.0), judge.EXIT_LEARNER, "crash", "negative label -1.0"),
    (lambda lr: lr.call("wait", timeout=0.2), judge.EXIT_TIMEOUT, "timeout", "did not answer 'wait' within 0 s"),
])
def test_main_turns_the_learners_faults_into_a_verdict(monkeypatch, socket_dir, tmp_path, capsys, call, code,
                                                       status, reason):
    def evaluate(lr):
        call(lr)
        return {"acc": 1.0}

    got, m = run_main(monkeypatch, socket_dir, tmp_path, evaluate)
    assert (got, set(m), m["harness"]["status"]) == (code, {"harness"}, status)
    assert reason in m["harness"]["reason"]
    assert f"judge: {status}: " in capsys.readouterr().err
    assert (code, status) in ((3, "violated"), (4, "crash"), (5, "timeout"))


def test_main_refuses_to_write_non_finite_metrics(monkeypatch, socket_dir, tmp_path, capsys):
    code, m = run_main(monkeypatch, socket_dir, tmp_path, lambda lr: {"acc": float("nan"), "n": 1.0})
    assert code == 1 and m is None
    assert "non-finite metrics {'acc': nan}" in capsys.readouterr().err


def test_the_judges_own_errors_are_not_a_verdict(monkeypatch, socket_dir, tmp_path):
    def evaluate(lr):
        raise KeyError("the judge's bug")

    monkeypatch.setenv(judge.SOCKET_ENV, str(socket_dir / "learner.sock"))
    t = threading.Thread(target=learner_side.serve, args=(Model(),), daemon=True)
    t.start()
    with pytest.raises(KeyError, match="the judge's bug"):
        judge.main(evaluate, tmp_path / "m.json")
    t.join(30)
    assert not (tmp_path / "m.json").exists()


def test_write_metrics_sorts_keys_and_adds_the_verdict(tmp_path):
    p = tmp_path / "deep" / "er" / "m.json"
    judge.write_metrics(p, {"b": 1, "a": 2.5}, "violated", "why")
    assert p.read_text() == json.dumps({"a": 2.5, "b": 1, "harness": {"status": "violated", "reason": "why"}},
                                       indent=1, sort_keys=True)
    with pytest.raises(ValueError):
        judge.write_metrics(p, {"a": float("inf")})


@pytest.mark.parametrize("raw, expected", [(None, 5), ("", 5), ("  ", 5), ("42", 42), ("-3", -3)])
def test_eval_seed_is_the_runs_secret_or_the_default(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(judge.EVAL_SEED_ENV, raising=False)
    else:
        monkeypatch.setenv(judge.EVAL_SEED_ENV, raw)
    assert judge.eval_seed(5) == expected


@pytest.mark.parametrize("raw, expected", [(None, "fitness"), ("", "fitness"), ("fitness", "fitness"),
                                           ("sealed", "sealed")])
def test_eval_set(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(judge.EVAL_SET_ENV, raising=False)
    else:
        monkeypatch.setenv(judge.EVAL_SET_ENV, raw)
    assert judge.eval_set() == expected


def test_an_unknown_eval_set_is_an_error(monkeypatch):
    monkeypatch.setenv(judge.EVAL_SET_ENV, "test")
    with pytest.raises(ValueError, match=r"SCIENTIST_EVAL_SET='test': expected one of \('fitness', 'sealed'\)"):
        judge.eval_set()


# --- the judge's checks of a reply ----------------------------------------------------------


def reply(**data) -> Reply:
    return Reply("predict", data)


def test_a_missing_entry_names_what_the_reply_has():
    with pytest.raises(Violation, match=r"reply to 'predict' lacks 'logits' \(it has: a, b\)"):
        reply(b=1, a=2).array("logits")
    with pytest.raises(Violation, match=r"lacks 'n' \(it has: nothing\)"):
        reply().number("n")


@pytest.mark.parametrize("value, kwargs", [
    (np.zeros((2, 3), dtype="float32"), {"shape": (2, 3)}),
    (np.zeros((2, 3), dtype="float64"), {"shape": (None, 3)}),
    (np.zeros((2, 3), dtype="int64"), {"shape": (2, None)}),  # ints where floats are asked for
    (np.zeros(4, dtype="uint8"), {"dtype": "int"}),
    (np.zeros(4, dtype="int16"), {"dtype": "int"}),
    (np.zeros(4, dtype="bool"), {"dtype": "bool"}),
    (np.array([np.inf, 1.0]), {"finite": False}),
    (np.array([0.0, 1.0]), {"low": 0.0, "high": 1.0}),
    (np.zeros(0), {"low": 1.0, "high": 0.0}),  # nothing to be out of bounds
    (np.zeros((2, 3)), {}),
])
def test_arrays_that_pass(value, kwargs):
    assert reply(x=value).array("x", **kwargs) is value


@pytest.mark.parametrize("value, kwargs, match", [
    ([1.0, 2.0], {}, "is a list, not an array"),
    (np.zeros(3, dtype="bool"), {}, "has dtype bool, expected float"),
    (np.zeros(3, dtype="float32"), {"dtype": "int"}, "has dtype float32, expected int"),
    (np.zeros(3, dtype="int8"), {"dtype": "bool"}, "has dtype int8, expected bool"),
    (np.zeros((2, 3)), {"shape": (3, 2)}, r"has shape \(2, 3\), expected \(3, 2\)"),
    (np.zeros((2, 3)), {"shape": (2, 3, 1)}, r"has shape \(2, 3\), expected \(2, 3, 1\)"),
    (np.zeros((2, 3)), {"shape": (None, 4)}, r"has shape \(2, 3\), expected \('\*', 4\)"),
    (np.zeros(6), {"shape": (6, None)}, r"has shape \(6,\), expected \(6, '\*'\)"),
    (np.array([1.0, np.nan, np.inf]), {}, "holds 2 non-finite values"),
    (np.array([0.5, -0.1]), {"low": 0.0}, r"holds (np.float64\()?-0.1\)?, below 0.0"),
    (np.array([0.5, 1.5]), {"high": 1.0}, r"holds (np.float64\()?1.5\)?, above 1.0"),
    (np.array([2, 3]), {"low": 0.0, "high": 2.5}, r"holds (np.int64\()?3\)?, above 2.5"),
])
def test_arrays_that_are_violations(value, kwargs, match):
    with pytest.raises(Violation, match=r"the learner's 'x' in reply to 'predict' " + match):
        reply(x=value).array("x", **kwargs)


@pytest.mark.parametrize("value, kwargs, expected", [
    (3, {}, 3.0), (2.5, {}, 2.5), (np.array(4.0), {}, 4.0), (np.array(7), {"integer": True}, 7),
    (3.0, {"integer": True}, 3), (0.0, {"low": 0.0, "high": 0.0}, 0.0), (-2, {"low": -2}, -2.0),
])
def test_numbers_that_pass(value, kwargs, expected):
    got = reply(n=value).number("n", **kwargs)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, kwargs, match", [
    (True, {}, "is True, not a finite number"),
    ("3", {}, "is '3', not a finite number"),
    (float("nan"), {}, "is nan, not a finite number"),
    (float("inf"), {}, "is inf, not a finite number"),
    (np.zeros(2), {}, r"is array\(\[0., 0.\]\), not a finite number"),
    (None, {}, "is None, not a finite number"),
    (2.5, {"integer": True}, "is 2.5, not an integer"),
    (-1, {"low": 0}, r"is -1, outside \[0, None\]"),
    (11, {"high": 10}, r"is 11, outside \[None, 10\]"),
])
def test_numbers_that_are_violations(value, kwargs, match):
    with pytest.raises(Violation, match=r"the learner's 'n' in reply to 'predict' " + match):
        reply(n=value).number("n", **kwargs)


def test_texts():
    assert reply(s="up").text("s", choices=["up", "down"]) == "up"
    assert reply(s="x" * 200).text("s") == "x" * 200
    for value, kwargs, want in [
        ("left", {"choices": ["up", "down"]}, "expected one of \\['up', 'down'\\]"),
        ("x" * 201, {}, "expected a string of at most 200"),
        ("abcd", {"max_len": 3}, "expected a string of at most 3"),
        (5, {}, "expected a string of at most 200"),
    ]:
        with pytest.raises(Violation, match=rf"the learner's 's' in reply to 'predict' is '{str(value)[:80]}', " + want):
            reply(s=value).text("s", **kwargs)
    with pytest.raises(Violation) as e:
        reply(s="y" * 500).text("s")
    assert "y" * 81 not in str(e.value)  # the offending text is cut short


def test_a_reply_is_a_read_only_mapping_of_what_the_learner_sent():
    r = reply(a=1, b=np.zeros(2))
    assert len(r) == 2 and set(r) == {"a", "b"} and r["a"] == 1
    with pytest.raises(KeyError):
        r["c"]


def test_main_passes_its_timeout_and_reply_limit_to_the_learner(monkeypatch, socket_dir, tmp_path):
    code, m = run_main(monkeypatch, socket_dir, tmp_path, lambda lr: {"n": lr.call("wait").number("n")}, timeout=0.2)
    assert code == judge.EXIT_TIMEOUT and m["harness"]["reason"] == "the learner did not answer 'wait' within 0 s"
    code, m = run_main(monkeypatch, socket_dir, tmp_path,
                       lambda lr: {"x": float(lr.call("predict", x=np.ones(20)).array("logits").sum())},
                       max_reply_bytes=100)
    assert code == judge.EXIT_VIOLATION and "arrays of more than 100 bytes" in m["harness"]["reason"]


def test_main_starts_a_standalone_learner_when_no_socket_is_given(monkeypatch, tmp_path):
    learner_env(monkeypatch)
    monkeypatch.setenv("SCIENTIST_OTHER", "kept")
    metrics = tmp_path / "m.json"
    with pytest.raises(SystemExit) as e:
        judge.main(lambda lr: {"other": lr.call("env", name="SCIENTIST_OTHER").text("value") == "kept"}, metrics,
                   standalone=[sys.executable, "-c", ENV_LEARNER])
    assert e.value.code == 0 and json.loads(metrics.read_text())["other"] is True


def test_a_flush_honours_its_own_timeout(served):
    handle, _ = served
    handle.send("wait")
    with pytest.raises(LearnerTimeout) as e:
        handle.flush(timeout=0.2)
    assert str(e.value) == "the learner did not answer 'wait' within 0 s"


SLOW_EXIT = ("import os, socket, sys, time; s = socket.socket(fileno=int(os.environ['SCIENTIST_SOCKET_FD'])); "
             "s.recv(65536); s.close(); time.sleep(4)")


def test_a_learner_that_hangs_up_but_lingers_gets_no_exit_status(monkeypatch):
    learner_env(monkeypatch)
    with judge.connect([sys.executable, "-c", SLOW_EXIT], timeout=60) as handle:
        with pytest.raises(LearnerError) as e:
            handle.call("predict")
    assert str(e.value) == "the learner exited during 'predict'"  # it had not exited after 2 s


def test_the_learner_returns_quietly_when_the_judge_hangs_up_with_a_reply_unread(monkeypatch):
    # the judge refuses an oversized reply without reading its arrays and hangs up: the
    # learner's connection is reset, which is the judge hanging up, not the learner crashing
    ours, theirs = socket.socketpair()
    monkeypatch.delenv(learner_side.SOCKET_ENV, raising=False)
    monkeypatch.setenv(learner_side.SOCKET_FD_ENV, str(theirs.detach()))
    errors = []

    def serve():
        try:
            learner_side.serve(Model())
        except BaseException as e:  # noqa: B036 (the test reports whatever escaped)
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    handle = judge.Learner(ours, timeout=30, max_reply_bytes=64)
    with pytest.raises(Violation, match="arrays of more than 64 bytes"):
        handle.call("predict", x=np.ones(100))
    time.sleep(0.3)  # the learner has sent its whole reply and waits for the next request
    handle.close()
    t.join(30)
    assert not t.is_alive() and errors == []


def test_the_learner_prints_the_end_of_its_traceback(served, capsys):
    handle, _ = served
    with pytest.raises(LearnerError):
        handle.call("deep", n=8)
    handle.call("count")  # the error was printed before this reply was sent
    err = capsys.readouterr().err
    assert err.endswith("RecursionError: too deep at 0\n\n")  # the traceback, then print's newline
    assert err.count('  File "') == 5  # the innermost five frames
    assert "Traceback (most recent call last)" not in err  # cut: the outer frames and the header
    assert all(not ln or ln.startswith(("  ", "RecursionError")) for ln in err.splitlines()), err



class Failing:
    def fail(self, n):
        raise ValueError("x" * n)


@pytest.mark.parametrize("n", [3, 5000])
def test_an_error_reply_carries_the_message_and_the_end_of_the_traceback(monkeypatch, n):
    # the learner's message to the judge when a method raises, as it is on the wire: the
    # exception's type, its message cut to 2000 characters, the traceback cut to its last 4000
    ours, theirs = socket.socketpair()
    monkeypatch.delenv(learner_side.SOCKET_ENV, raising=False)
    monkeypatch.setenv(learner_side.SOCKET_FD_ENV, str(theirs.detach()))
    t = threading.Thread(target=learner_side.serve, args=(Failing(),), daemon=True)
    t.start()
    with ours:
        wire.send(ours, "fail", 7, {"n": n})
        op, seq, reply = wire.recv(ours, 1 << 20)
    t.join(30)
    assert (op, seq, sorted(reply), reply["type"]) == ("error", 7, ["message", "traceback", "type"], "ValueError")
    assert reply["message"] == "x" * min(n, 2000)
    tb = reply["traceback"]
    if n == 3:
        # its innermost frames, down to the learner's method (how many frames are above depends
        # on who calls serve: mutmut's trampoline adds some)
        assert ", in fail\n" in tb and tb.endswith('raise ValueError("x" * n)\nValueError: xxx\n'), tb
    else:
        assert tb == "x" * 3999 + "\n"

def test_a_fresh_handle_has_waited_for_nothing():
    ours, theirs = socket.socketpair()
    with judge.Learner(ours) as handle:
        assert (handle.seq, handle.calls, handle.seconds, handle.pending) == (0, 0, 0.0, [])
    theirs.close()


def test_the_time_spent_waiting_is_summed_over_the_calls(served):
    handle, _ = served
    start = time.monotonic()
    handle.call("nap", seconds=0.2)
    handle.call("nap", seconds=0.2)
    elapsed = time.monotonic() - start
    assert 0.4 <= handle.seconds <= elapsed  # at least the naps, at most the wall time around them


def test_an_error_reply_without_a_message(pair_raw=None):
    raw = Raw(lambda op, seq: message("error", seq, {}))
    with raw.handle(timeout=30) as handle:
        with pytest.raises(LearnerError) as e:
            handle.call("predict")
    assert str(e.value) == "the learner failed in 'predict': Error: "


def test_a_learner_that_resets_the_connection_went_away():
    # it reads one request and closes with the next one unread: the judge's connection is reset
    def answer(op, seq):
        time.sleep(0.3)  # the second request has arrived by now (ordering, not a timing assert)
        return None

    raw = Raw(answer)
    with raw.handle(timeout=30) as handle:
        handle.send("learn", y=1.0)
        handle.send("learn", y=2.0)
        with pytest.raises(LearnerError) as e:
            handle.flush()
    assert re.fullmatch(r"the learner (went away during 'learn': .*reset.*|exited during 'learn') \(see the "
                        r"learner's stderr\)", str(e.value)), str(e.value)
    assert "went away during" in str(e.value)


NAPPER = """
import sys, time
import numpy as np
from scientist.harness.learner import serve

class Napper:
    def nap(self, seconds):
        time.sleep(seconds)
        return {}
    def big(self):
        return {"x": np.zeros(1000)}
    def stdin(self):
        return {"text": sys.stdin.read()}

serve(Napper())
"""


def test_a_standalone_learner_gets_the_timeout_and_the_reply_limit(monkeypatch):
    learner_env(monkeypatch)
    with judge.connect([sys.executable, "-c", NAPPER], timeout=60, max_reply_bytes=100) as handle:
        with pytest.raises(Violation, match="arrays of more than 100 bytes"):
            handle.call("big")
    with judge.connect([sys.executable, "-c", NAPPER], timeout=0.5) as handle:
        with pytest.raises(LearnerTimeout, match="within 0 s"):
            handle.call("nap", seconds=30)


def test_a_standalone_learner_reads_nothing_from_the_judges_stdin(monkeypatch):
    learner_env(monkeypatch)
    r, w = os.pipe()
    os.write(w, b"typed into the judge's terminal")
    os.close(w)
    saved = os.dup(0)
    os.dup2(r, 0)  # the judge's standard input has something to read
    try:
        with judge.connect([sys.executable, "-c", NAPPER], timeout=60) as handle:
            assert handle.call("stdin").text("text") == ""
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(r)


STUBBORN = ("import os, signal, socket, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "s = socket.socket(fileno=int(os.environ['SCIENTIST_SOCKET_FD'])); time.sleep(600)")


def test_a_learner_that_ignores_the_judge_hanging_up_is_killed(monkeypatch):
    learner_env(monkeypatch)
    handle = judge.connect([sys.executable, "-c", STUBBORN], timeout=60)
    handle.close()  # waits 10 s for it to end, then kills it
    assert handle.proc.returncode == -signal.SIGKILL
