"""ProcessSandbox (`--sandbox process`, unconfined) on real subprocesses: outcomes, limits,
process groups, a clean environment. It confines nothing else: see test_sandbox.py for the
default sandbox."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path


from scientist.process_sandbox import ProcessSandbox
from scientist.sandbox import Step


def script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "step.py"
    p.write_text(textwrap.dedent(body))
    return p


def step(tmp_path: Path, path: Path, *, timeout: float = 30, memory_mb: int = 400,
         env: dict[str, str] | None = None, kind: str = "train") -> Step:
    return Step(kind=kind, command=f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}",
                cwd=tmp_path, out=tmp_path / "out", stdout=tmp_path / "step.out",
                stderr=tmp_path / "step.err", timeout=timeout, memory_mb=memory_mb,
                env=env or {})


def gone(pid: int, wait: float = 10.0) -> bool:
    """True once `pid` no longer runs (exited, or a zombie waiting to be reaped)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_ok_step_captures_its_output(tmp_path):
    p = script(tmp_path, """
        import sys
        print("hello from the step")
        print("a warning", file=sys.stderr)
        open("written.txt", "w").write("cwd is the working copy")
    """)
    res = ProcessSandbox().run(step(tmp_path, p))
    assert res.ok and res.status == "ok" and res.returncode == 0
    assert (tmp_path / "step.out").read_text() == "hello from the step\n"
    assert (tmp_path / "step.err").read_text() == "a warning\n"
    assert (tmp_path / "written.txt").exists()


def test_crash_is_an_outcome_with_the_exit_status(tmp_path):
    p = script(tmp_path, """
        import sys
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(3)
    """)
    res = ProcessSandbox().run(step(tmp_path, p))
    assert not res.ok and res.status == "crash" and res.returncode == 3
    assert "train failed: exit status 3" == res.reason
    assert "something broke" in (tmp_path / "step.err").read_text()


def test_a_command_that_cannot_start_is_a_crash(tmp_path):
    s = step(tmp_path, tmp_path / "x.py")
    s = Step(**{**s.__dict__, "command": "/no/such/program --flag"})
    res = ProcessSandbox().run(s)
    assert res.status == "crash" and "could not start" in res.reason


def test_timeout_kills_the_whole_process_group(tmp_path):
    # the step starts a grandchild that ignores SIGTERM, then hangs
    p = script(tmp_path, """
        import subprocess, sys, time
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", code])
        open("grandchild.pid", "w").write(str(child.pid))
        time.sleep(600)
    """)
    res = ProcessSandbox().run(step(tmp_path, p, timeout=1))
    assert res.status == "timeout" and not res.ok
    assert "time limit" in res.reason
    pid = int((tmp_path / "grandchild.pid").read_text())
    assert gone(pid), f"grandchild {pid} survived the timeout"


def test_children_left_behind_by_a_finished_step_are_killed(tmp_path):
    p = script(tmp_path, """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open("grandchild.pid", "w").write(str(child.pid))
    """)
    assert ProcessSandbox().run(step(tmp_path, p)).ok
    assert gone(int((tmp_path / "grandchild.pid").read_text()))


DAEMON = """
    import os, subprocess, sys, time
    # a daemon that leaves the step's session and process group and ignores SIGTERM
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                              "hog = bytearray({mb} * 1024 * 1024); time.sleep(600)"],
                             start_new_session=True)
    open("daemon.pid", "w").write(str(child.pid))
    time.sleep({linger})
"""


def test_a_daemon_that_left_the_session_is_killed_with_its_step(tmp_path):
    p = script(tmp_path, DAEMON.format(mb=1, linger=0.5))
    assert ProcessSandbox().run(step(tmp_path, p)).ok
    assert gone(int((tmp_path / "daemon.pid").read_text()))


def test_a_daemon_that_left_the_session_counts_toward_the_memory_limit(tmp_path):
    p = script(tmp_path, DAEMON.format(mb=300, linger=60))
    res = ProcessSandbox().run(step(tmp_path, p, memory_mb=200))
    assert res.status == "oom", res
    assert gone(int((tmp_path / "daemon.pid").read_text()))


def test_memory_hog_is_killed_as_oom(tmp_path):
    p = script(tmp_path, """
        import time
        hog = []
        while True:
            hog.append(bytearray(20 * 1024 * 1024))
            time.sleep(0.01)
    """)
    res = ProcessSandbox().run(step(tmp_path, p, memory_mb=100))
    assert res.status == "oom" and not res.ok
    assert "100 MiB" in res.reason
    assert res.peak_rss_mb > 100


def test_environment_has_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-leak")
    monkeypatch.setenv("SCIENTIST_TEST_SECRET", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    p = script(tmp_path, """
        import json, os
        json.dump(dict(os.environ), open("env.json", "w"))
    """)
    assert ProcessSandbox().run(step(tmp_path, p, env={"EXTRA_FOR_THIS_STEP": "yes"})).ok
    env = json.loads((tmp_path / "env.json").read_text())
    for secret in ("OPENAI_API_KEY", "SCIENTIST_TEST_SECRET", "AWS_SECRET_ACCESS_KEY"):
        assert secret not in env
    assert not any(v in ("sk-do-not-leak", "hunter2", "aws-secret") for v in env.values())
    assert env["PATH"] and env["HOME"]
    assert Path(env["HOME"]).is_dir()
    assert Path(env["HOME"]).resolve().is_relative_to((tmp_path / "out").resolve())
    assert env["EXTRA_FOR_THIS_STEP"] == "yes"


def test_a_step_starts_with_no_signal_blocked(tmp_path):
    # the sandbox holds Ctrl-C and SIGTERM back while it starts a step; the step itself
    # must still be stoppable by them
    p = script(tmp_path, """
        for line in open("/proc/self/status"):
            if line.startswith("SigBlk:"):
                open("sigblk", "w").write(line.split()[1])
    """)
    assert ProcessSandbox().run(step(tmp_path, p)).ok
    blocked = int((tmp_path / "sigblk").read_text(), 16)
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert not blocked & (1 << (sig - 1)), f"{sig.name} blocked in the step"


def test_kill_all_stops_a_running_step(tmp_path):
    p = script(tmp_path, """
        import time
        open("started", "w").close()
        time.sleep(600)
    """)
    box = ProcessSandbox()
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(box.run(step(tmp_path, p, timeout=300))))
    t.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    box.kill_all()
    t.join(60)
    assert not t.is_alive()
    assert outcome[0].status == "crash" and "SIGKILL" in outcome[0].reason


def test_python_is_this_interpreter_by_default():
    assert ProcessSandbox().python == sys.executable
    assert ProcessSandbox().name == "process"
