"""LocalSandbox (the default: bubblewrap, a cgroup) on real steps: outcomes, limits, and
hostile steps, each contained.

Steps here run scripts from a code folder (read-only in the sandbox) and write into `out`.
Processes inside a step have pid-namespace pids, so a test finds the host side of them by
a random token in their command line. Without bubblewrap these tests skip, unless
SCIENTIST_STRICT=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from scientist import cgroup, confinement
from scientist.errors import SandboxError
from scientist.sandbox import LocalSandbox, Step, format_command, make_sandbox

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def bwrap():
    try:
        confinement.check()
    except SandboxError as e:
        if os.environ.get("SCIENTIST_STRICT") == "1":
            pytest.fail(f"SCIENTIST_STRICT=1 but: {e}")
        pytest.skip(str(e))


def script(tmp_path: Path, body: str, name: str = "step.py") -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    p = code / name
    p.write_text(textwrap.dedent(body))
    return p


def step(tmp_path: Path, path: Path, *args: str, timeout: float = 30, memory_mb: int = 400,
         env: dict[str, str] | None = None, kind: str = "train", **more) -> Step:
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, str(path), *args))
    return Step(kind=kind, command=cmd, cwd=path.parent, out=tmp_path / "out",
                stdout=tmp_path / "step.out", stderr=tmp_path / "step.err", timeout=timeout,
                memory_mb=memory_mb, env=env or {}, **more)


def host_pids(token: str) -> list[int]:
    """Host pids of live processes whose command line holds `token` (zombies excluded)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if token.encode() not in f.read():
                    continue
            with open(f"/proc/{entry.name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def all_gone(token: str, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while host_pids(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for(cond, wait: float = 30.0) -> None:
    deadline = time.monotonic() + wait
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# --- outcomes ---------------------------------------------------------------------------
def test_ok_step_captures_its_output_and_writes_only_out(tmp_path):
    p = script(tmp_path, """
        import os, sys
        print("hello from the step")
        print("a warning", file=sys.stderr)
        open(os.path.join(sys.argv[1], "written.txt"), "w").write("out is writable")
        try:
            open("beside-the-code.txt", "w")
        except OSError as e:
            print("cwd:", e.strerror, file=sys.stderr)
    """)
    res = LocalSandbox().run(step(tmp_path, p, str(tmp_path / "out")))
    assert res.ok and res.status == "ok" and res.returncode == 0, res
    assert (tmp_path / "step.out").read_text() == "hello from the step\n"
    assert (tmp_path / "step.err").read_text() == "a warning\ncwd: Read-only file system\n"
    assert (tmp_path / "out" / "written.txt").exists()
    assert not (tmp_path / "code" / "beside-the-code.txt").exists()


def test_crash_is_an_outcome_with_the_exit_status(tmp_path):
    p = script(tmp_path, """
        import sys
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(3)
    """)
    res = LocalSandbox().run(step(tmp_path, p))
    assert not res.ok and res.status == "crash" and res.returncode == 3
    assert "train failed: exit status 3" == res.reason
    assert "something broke" in (tmp_path / "step.err").read_text()


def test_a_command_that_cannot_start_is_a_crash(tmp_path):
    s = step(tmp_path, script(tmp_path, "pass"))
    res = LocalSandbox().run(Step(**{**s.__dict__, "command": "/no/such/program --flag"}))
    assert res.status == "crash" and "could not start '/no/such/program'" in res.reason


def test_a_sandbox_that_cannot_be_set_up_is_not_the_steps_crash(tmp_path):
    # an input that does not exist: bubblewrap itself fails before the step's command runs
    s = step(tmp_path, script(tmp_path, "pass"), inputs=(tmp_path / "missing",))
    with pytest.raises(SandboxError, match="bubblewrap could not set up the train step"):
        LocalSandbox().run(s)


def test_a_step_that_pretends_bubblewrap_failed_is_its_own_crash(tmp_path):
    p = script(tmp_path, """
        import sys
        sys.exit("bwrap: Can't mount proc on /newroot/proc: Operation not permitted")
    """)
    res = LocalSandbox().run(step(tmp_path, p))
    assert res.status == "crash" and res.returncode == 1


def test_timeout_kills_the_whole_process_tree(tmp_path):
    token = uuid.uuid4().hex
    p = script(tmp_path, """
        import subprocess, sys, time
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", code, sys.argv[1]])
        time.sleep(600)
    """)
    res = LocalSandbox().run(step(tmp_path, p, token, timeout=2))
    assert res.status == "timeout" and "time limit of 2 s" in res.reason
    assert all_gone(token)


def test_memory_hog_is_killed_by_the_kernel_as_oom(tmp_path):
    p = script(tmp_path, """
        import time
        hog = []
        while True:
            hog.append(bytearray(20 * 1024 * 1024))
            time.sleep(0.01)
    """)
    res = LocalSandbox().run(step(tmp_path, p, memory_mb=100))
    assert res.status == "oom" and not res.ok, res
    assert "100 MiB" in res.reason
    assert res.peak_rss_mb >= 90


def test_peak_memory_is_what_the_kernel_counted(tmp_path):
    p = script(tmp_path, "hold = bytearray(150 * 2**20)\n")
    res = LocalSandbox().run(step(tmp_path, p, memory_mb=400))
    assert res.ok, res
    assert 150 <= res.peak_rss_mb < 400


def test_kill_all_stops_a_running_step(tmp_path):
    p = script(tmp_path, """
        import os, sys, time
        open(os.path.join(sys.argv[1], "started"), "w").close()
        time.sleep(600)
    """)
    box = LocalSandbox()
    outcome = []
    s = step(tmp_path, p, str(tmp_path / "out"), timeout=300)
    t = threading.Thread(target=lambda: outcome.append(box.run(s)))
    t.start()
    wait_for(lambda: (tmp_path / "out" / "started").exists())
    box.kill_all()
    t.join(60)
    assert not t.is_alive()
    assert outcome[0].status == "crash" and "SIGKILL" in outcome[0].reason


def test_a_cancelled_step_ends_at_once(tmp_path):
    p = script(tmp_path, "import time; time.sleep(600)")
    cancel, outcome = threading.Event(), []
    t = threading.Thread(target=lambda: outcome.append(
        LocalSandbox().run(step(tmp_path, p, timeout=300), cancel=cancel)))
    t.start()
    time.sleep(0.5)
    cancel.set()
    t.join(30)
    assert outcome and outcome[0].status == "cancelled"


def test_a_step_starts_with_no_signal_blocked(tmp_path):
    p = script(tmp_path, """
        import os, sys
        for line in open("/proc/self/status"):
            if line.startswith("SigBlk:"):
                open(os.path.join(sys.argv[1], "sigblk"), "w").write(line.split()[1])
    """)
    assert LocalSandbox().run(step(tmp_path, p, str(tmp_path / "out"))).ok
    blocked = int((tmp_path / "out" / "sigblk").read_text(), 16)
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert not blocked & (1 << (sig - 1)), f"{sig.name} blocked in the step"


# --- hostile steps ----------------------------------------------------------------------
def test_no_process_of_the_host_and_no_secret_in_any_environment(tmp_path, monkeypatch):
    secret = "sk-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SCIENTIST_TEST_SECRET", secret)
    p = script(tmp_path, """
        import json, os, sys
        seen = {}
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                seen[pid] = [open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"),
                             open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")]
            except OSError as e:
                seen[pid] = [str(e), ""]
        parent = open(f"/proc/{os.getppid()}/environ", "rb").read().decode(errors="replace")
        json.dump({"procs": seen, "ppid": os.getppid(), "parent": parent,
                   "env": dict(os.environ)}, open(os.path.join(sys.argv[1], "seen.json"), "w"))
    """)
    assert LocalSandbox().run(step(tmp_path, p, str(tmp_path / "out"),
                                   env={"EXTRA_FOR_THIS_STEP": "yes"})).ok
    seen = json.loads((tmp_path / "out" / "seen.json").read_text())
    assert secret not in json.dumps(seen)
    assert seen["ppid"] == 1  # the namespace's own first process, not the orchestrator
    assert len(seen["procs"]) <= 3  # bubblewrap's init, the step, nothing of the host's
    ours = Path("/proc/self/cmdline").read_bytes().decode(errors="replace")
    assert ours not in [cmd for _, cmd in seen["procs"].values()]
    env = seen["env"]
    assert "OPENAI_API_KEY" not in env and "SCIENTIST_TEST_SECRET" not in env
    assert env["EXTRA_FOR_THIS_STEP"] == "yes" and env["HOME"] == confinement.HOME


def test_a_listener_on_the_hosts_loopback_is_out_of_reach(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    p = script(tmp_path, """
        import socket, sys
        print(sorted(n for _, n in socket.if_nameindex()), file=sys.stderr)
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    """)
    res = LocalSandbox().run(step(tmp_path, p, str(listener.getsockname()[1])))
    err = (tmp_path / "step.err").read_text()
    assert res.status == "crash" and "ConnectionRefusedError" in err
    assert "['lo']" in err
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


DAEMONS = """
    import os, subprocess, sys, time
    token = sys.argv[1]
    hang = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    # a daemon in a session of its own, and one double-forked (its parent exits at once)
    subprocess.Popen(["setsid", sys.executable, "-c", hang, token + "-setsid"])
    if os.fork() == 0:
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-c", hang, token + "-double"])
        os._exit(0)
    time.sleep(float(sys.argv[2]))
"""


def test_daemons_are_gone_when_their_step_ends(tmp_path):
    token = uuid.uuid4().hex
    p = script(tmp_path, DAEMONS)
    box = LocalSandbox()
    t = threading.Thread(target=lambda: box.run(step(tmp_path, p, token, "3")))
    t.start()
    wait_for(lambda: host_pids(token + "-setsid") and host_pids(token + "-double"))
    t.join(60)
    assert all_gone(token)


LEFT_BEHIND = """
import sys
from pathlib import Path
from scientist.sandbox import LocalSandbox, Step
d = Path(sys.argv[2])
LocalSandbox(label=sys.argv[1]).run(Step("train", f"{sys.executable} step.py {sys.argv[3]} 600",
                                         d / "code", d / "out", d / "o", d / "e",
                                         timeout=600, memory_mb=200))
"""


def test_daemons_are_gone_when_the_orchestrator_is_killed(tmp_path):
    token, label = uuid.uuid4().hex, "test-" + uuid.uuid4().hex[:8]
    script(tmp_path, DAEMONS)
    proc = subprocess.Popen([sys.executable, "-c", LEFT_BEHIND, label, str(tmp_path), token],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for(lambda: host_pids(token + "-setsid") and host_pids(token + "-double"))
    proc.kill()  # kill -9: no cleanup of the orchestrator's runs
    proc.wait()
    assert all_gone(token)  # bubblewrap died with its parent and took its namespace along
    LocalSandbox(label=label).kill_leftovers()  # what a resume does first
    groups = cgroup.detect()
    if groups is not None:
        assert groups.existing(f"{label}-") == []


def test_a_fork_bomb_is_contained(tmp_path):
    groups = cgroup.detect()
    if groups is None or groups.version == 1 and groups.pids_parent is None:
        why = "no writable pids cgroup: a fork bomb is stopped only by the memory limit"
        if os.environ.get("SCIENTIST_STRICT") == "1":
            pytest.fail(f"SCIENTIST_STRICT=1 but {why}")
        pytest.skip(why)
    token = uuid.uuid4().hex
    p = script(tmp_path, """
        import os, sys, time
        n = 0
        while n < 5000:
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            n += 1
    """)
    res = LocalSandbox(pids_limit=64).run(step(tmp_path, p, token, timeout=30))
    assert res.status == "crash", res
    assert "BlockingIOError" in (tmp_path / "step.err").read_text()
    assert all_gone(token)


def run_layout(tmp_path: Path) -> dict[str, Path]:
    """A run folder as the orchestrator lays it out, with the step's own paths inside."""
    run = tmp_path / "runs" / "r"
    files = {"archive": run / "archive.sqlite", "repo": run / "repo" / "HEAD",
             "replace": run / "repo" / "refs" / "replace" / "x", "cache": run / "llm" / "cache" / "k.json",
             "secret": run / "secret.json", "config": run / "config.json"}
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    for name, f in files.items():
        if name != "replace":
            f.write_text("original")
    return files


WRITER = """
    import json, os, site, sys
    results = {}
    try:
        results["secret-read"] = open(json.loads(sys.argv[1])["secret"]).read()
    except OSError as e:
        results["secret-read"] = e.strerror
    for name, path in json.loads(sys.argv[1]).items():
        try:
            with open(path, "a") as f:
                f.write("planted")
            results[name] = "written"
        except OSError as e:
            results[name] = e.strerror
    print(json.dumps(results))
"""


def test_writes_outside_out_are_refused(tmp_path):
    files = run_layout(tmp_path)
    site_packages = Path(__import__("sysconfig").get_paths()["purelib"])
    home = Path.home()
    targets = {**{k: str(v) for k, v in files.items()},
               "site-packages": str(site_packages / f"planted-{uuid.uuid4().hex}.pth"),
               "home": str(home / f".planted-{uuid.uuid4().hex}"),
               "scientist": str(confinement.package_dir() / "planted.py")}
    p = script(tmp_path, WRITER)
    d = tmp_path / "runs" / "r" / "variants" / "v0001" / "seed-0"
    s = Step("train", f"{sys.executable} {p} {shlex.quote(json.dumps(targets))}", p.parent,
             d / "out", tmp_path / "o", tmp_path / "e", timeout=30, memory_mb=300)
    assert LocalSandbox().run(s).ok, (tmp_path / "e").read_text()
    results = json.loads((tmp_path / "o").read_text())
    assert results["secret-read"] == "No such file or directory"
    # Where the run folder is under /tmp, as here, the step sees the folders leading to
    # its own paths read-only in its private /tmp ("Permission denied"); elsewhere they
    # are on the read-only root ("Read-only file system").
    refused = ("Read-only file system", "Permission denied", "No such file or directory")
    assert all(v in refused for k, v in results.items() if k != "secret-read"), results
    for name, f in files.items():
        assert not f.exists() if name == "replace" else f.read_text() == "original"
    assert not Path(targets["site-packages"]).exists() and not Path(targets["home"]).exists()
    assert not Path(targets["scientist"]).exists()


def test_a_step_cannot_remount_its_code_writable(tmp_path):
    """Root inside the sandbox has no capabilities: the read-only mounts stay read-only."""
    p = script(tmp_path, """
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        MS_REMOUNT, MS_BIND = 32, 4096
        rc = libc.mount(None, os.getcwd().encode(), None, MS_REMOUNT | MS_BIND, None)
        print("mount", rc, os.strerror(ctypes.get_errno()))
        try:
            open("planted.py", "w").write("x")
            print("written")
        except OSError as e:
            print("write", e.strerror)
    """)
    assert LocalSandbox().run(step(tmp_path, p)).ok
    assert (tmp_path / "step.out").read_text() == (
        "mount -1 Operation not permitted\nwrite Read-only file system\n")
    assert not (tmp_path / "code" / "planted.py").exists()


def test_a_learner_cannot_read_the_judges_environment(tmp_path):
    """Judge and learner run at the same time in separate namespaces: the judge's secret
    evaluation seed is not in any environment the learner can see."""
    secret = str(uuid.uuid4().int)
    judge = script(tmp_path, "import time; time.sleep(30)", "judge.py")
    learner = script(tmp_path, """
        import os, sys
        found = []
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                found.append(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
            except OSError:
                pass
        print("\\n".join(found))
    """, "learner.py")
    box, cancel = LocalSandbox(), threading.Event()
    t = threading.Thread(target=lambda: box.run(Step(
        "evaluate", f"{sys.executable} {judge}", judge.parent, tmp_path / "judge-out",
        tmp_path / "j.out", tmp_path / "j.err", timeout=60, memory_mb=200,
        env={"SCIENTIST_EVAL_SEED": secret}), cancel=cancel))
    t.start()
    time.sleep(1.0)
    res = box.run(Step("learner", f"{sys.executable} {learner}", learner.parent,
                       tmp_path / "learner-out", tmp_path / "l.out", tmp_path / "l.err",
                       timeout=60, memory_mb=200))
    cancel.set()
    t.join(60)
    assert res.ok
    assert "SCIENTIST_THREADS" in (tmp_path / "l.out").read_text()  # it did read its own
    assert secret not in (tmp_path / "l.out").read_text()


def test_data_is_hidden_from_training_and_read_only_for_the_judge(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.txt").write_text("the test labels")
    p = script(tmp_path, """
        import os, sys
        path = sys.argv[1]
        try:
            print("listing", sorted(os.listdir(path)))
            print("read", open(os.path.join(path, "labels.txt")).read())
            open(os.path.join(path, "labels.txt"), "w").write("changed")
        except OSError as e:
            print("error", e.strerror)
    """)
    box = LocalSandbox()
    assert box.run(step(tmp_path, p, str(data), hidden=(data,))).ok
    assert (tmp_path / "step.out").read_text() == "listing []\nerror No such file or directory\n"
    assert box.run(step(tmp_path, p, str(data), kind="evaluate", env={"DATA": str(data)})).ok
    out = (tmp_path / "step.out").read_text()
    assert "read the test labels" in out and "error Read-only file system" in out
    assert (data / "labels.txt").read_text() == "the test labels"


FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_data_under_a_system_folder_is_hidden_from_training(tmp_path):
    """VSML's evaluation data lives under /usr, which every step sees: it is covered."""
    if not FASHION.is_dir():
        if os.environ.get("SCIENTIST_STRICT") == "1":
            pytest.fail(f"SCIENTIST_STRICT=1 but {FASHION} is missing (apt-get install dataset-fashion-mnist)")
        pytest.skip(f"{FASHION} is not installed")
    p = script(tmp_path, "import os, sys; print(sorted(os.listdir(sys.argv[1])))")
    box = LocalSandbox()
    assert box.run(step(tmp_path, p, str(FASHION), hidden=(FASHION,))).ok
    assert (tmp_path / "step.out").read_text() == "[]\n"
    assert box.run(step(tmp_path, p, str(FASHION), kind="evaluate",
                        env={"FASHION_MNIST_DIR": str(FASHION)})).ok
    assert (tmp_path / "step.out").read_text() != "[]\n"


def test_the_harness_is_importable_from_the_orchestrators_copy(tmp_path):
    p = script(tmp_path, "import scientist.harness.judge as j; print(j.__file__)")
    assert LocalSandbox().run(step(tmp_path, p)).ok, (tmp_path / "step.err").read_text()
    assert (tmp_path / "step.out").read_text().startswith(str(confinement.package_dir()))


# --- refusing without bubblewrap --------------------------------------------------------
def test_no_bubblewrap_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(confinement, "_PROBED", {})
    monkeypatch.setattr(confinement, "bwrap_path", lambda: None)
    with pytest.raises(SandboxError, match="apt-get install bubblewrap.*--sandbox process"):
        LocalSandbox()


def test_bubblewrap_without_namespaces_is_refused_with_the_fix(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(confinement, "_PROBED", {})
    monkeypatch.setattr(confinement, "bwrap_path", lambda: str(fake))
    with pytest.raises(SandboxError, match="No permissions to create new namespace.*user namespaces"):
        LocalSandbox()


def test_format_command_quotes_values():
    cmd = format_command("{python} train.py --out {out}", python="python3", out="/tmp/a b")
    assert shlex.split(cmd) == ["python3", "train.py", "--out", "/tmp/a b"]


def test_make_sandbox_by_name():
    assert make_sandbox("local").name == "local"
    assert make_sandbox("process").name == "process"
    with pytest.raises(ValueError, match="unknown sandbox 'cloud'"):
        make_sandbox("cloud")


def test_python_is_this_interpreter_by_default():
    assert LocalSandbox().python == sys.executable
