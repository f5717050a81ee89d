"""The run's trust boundary in the default (local) sandbox: hostile variants are contained,
recorded with their reason, and the run goes on; a failure of the sandbox itself is never
the variant's; a run folder changed behind the run's back stops it.

The hostile variants are real steps of the toy seed: a scripted proposer inserts one line
of code into train.py's main() per variant. What a step reads is hex-encoded before it is
printed, so that redaction cannot hide a leak from these checks.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from conftest import make_console
from scientist.config import RunConfig
from scientist.editblocks import Edit
from scientist.errors import SandboxError, ScientistError
from scientist.run import Run
from scientist.sandbox import StepOutcome
from scientist.variant import FAILED, RUNNING, SEED_CRASH, SEED_OK, SEED_OOM, SEED_TIMEOUT, Proposal

ANCHOR = "    args = Args()\n"


class Scripted:
    """A proposer that inserts one given line of code into train.py per proposal."""

    name, uses_llm = "scripted", False

    def __init__(self, lines: list[tuple[str, str]]):
        self.lines = list(lines)

    def describe(self) -> str:
        return "scripted hostile variants"

    def propose(self, ctx) -> Proposal:
        name, code = self.lines.pop(0)
        return Proposal(name, "test", "contained", (Edit("train.py", ANCHOR, f"{ANCHOR}    {code}\n"),),
                        "scripted")


def pids_with(token: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        try:
            if not entry.name.isdigit() or token.encode() not in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                continue
            if Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# (name, a line of train.py's main(), expected seed status, what its stderr or reason shows,
# or a tuple of what it may show).
# {…} are filled in by the test: the host's loopback port, the run folder, host paths.
HEX = "print(open({path!r}, 'rb').read().hex(), file=sys.stderr)"
# a run folder under /tmp (as here) is seen in the step's private /tmp, read-only folders
# leading to its own paths; elsewhere, on the read-only root: "Read-only file system"
REFUSED = ("Permission denied", "Read-only file system")
HOSTILE = [
    ("ppid-environ", "print(open(f'/proc/{{os.getppid()}}/environ', 'rb').read().hex(), file=sys.stderr)",
     SEED_OK, ""),
    ("every-environ", "import glob; [print(open(p, 'rb').read().hex(), file=sys.stderr) "
                      "for p in glob.glob('/proc/[0-9]*/environ')]", SEED_OK, ""),
    ("host-loopback", "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)",
     SEED_CRASH, "ConnectionRefusedError"),
    ("daemons", "import subprocess; subprocess.Popen(['setsid', sys.executable, '-c', "
                "'import time; time.sleep(600)', '{token}-setsid']); "
                "os.fork() == 0 and (os.fork() == 0 and os.execv(sys.executable, [sys.executable, '-c', "
                "'import time; time.sleep(600)', '{token}-double']) or os._exit(0))", SEED_OK, ""),
    ("read-secret-seed", HEX.replace("{path!r}", "{secret!r}"), SEED_CRASH, "No such file or directory"),
    ("write-repo", "open('{repo}/refs/replace/' + 'a' * 40, 'w').write('b' * 40)", SEED_CRASH,
     "No such file or directory"),
    ("write-archive", "open('{run}/archive.sqlite', 'ab').write(b'planted')", SEED_CRASH, REFUSED),
    ("write-llm-cache", "os.makedirs('{run}/llm/cache', exist_ok=True); "
                        "open('{run}/llm/cache/planted.json', 'w').write('{{}}')", SEED_CRASH, REFUSED),
    ("write-site-packages", "open('{site}/planted-{token}.pth', 'w').write('import os')", SEED_CRASH,
     "Read-only file system"),
    ("write-home", "open('{home}/.planted-{token}', 'w').write('x')", SEED_CRASH, "Read-only file system"),
    ("fork-bomb", "exec('n = 0\\nwhile n < 3000:\\n    if os.fork() == 0:\\n        "
                  "time.sleep(600)\\n    n += 1')", SEED_CRASH, "BlockingIOError"),
    ("memory-bomb", "hog = [bytearray(50 * 2**20) for _ in range(100)]", SEED_OOM,
     "killed by the kernel at its memory limit"),
    ("never-stops", "time.sleep(3600)", SEED_TIMEOUT, "ran past its time limit"),
    ("normal", "pass", SEED_OK, ""),
]


def test_hostile_variants_are_contained_and_the_run_goes_on(toy, tmp_path, monkeypatch):
    toy.set_scale(timeout=8, memory_mb=200, training_seeds=1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # a server on the host's loopback: must stay unreached
    listener.listen(8)
    listener.settimeout(0.1)
    secret, token = "sk-" + uuid.uuid4().hex, uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SCIENTIST_TEST_SECRET", secret)
    run_dir = tmp_path / "runs" / "r"
    site = Path(__import__("sysconfig").get_paths()["purelib"])
    fill = dict(port=listener.getsockname()[1], run=run_dir, repo=run_dir / "repo", token=token,
                secret=run_dir / "secret.json", site=site, home=Path.home())
    script = [(n, code.format(**{k: str(v) for k, v in fill.items()})) for n, code, _, _ in HOSTILE]
    cfg = RunConfig(seed=str(toy.path), scale="test", runs_dir=str(tmp_path / "runs"), run_id="r",
                    report=False, iterations=len(script), selection="greedy")
    console, buf = make_console()
    run = Run.create(cfg, console)
    run.proposer = Scripted(script)
    run.sandbox.pids_limit = 64
    repo_files = sorted(p.relative_to(run_dir / "repo") for p in (run_dir / "repo").rglob("*"))
    try:
        assert run.execute() == 0, buf.getvalue()
        variants = {v.hypothesis: v for v in run.archive.all()}
        pristine_ok = run.evaluator.pristine()  # the recorded hashes still match
    finally:
        run.close()
    assert pristine_ok
    for name, _, status, shows in HOSTILE:
        (s,) = variants[name].result.seeds
        assert s.status == status, (name, s)
        shows = shows if isinstance(shows, tuple) else (shows,)
        assert any(x in s.reason + s.stderr_tail for x in shows), (name, s)
    # nothing of the host's environment reached a step, however it was read
    for name in ("ppid-environ", "every-environ"):
        log = (run_dir / "variants" / variants[name].name / "seed-0" / "train.err").read_text()
        assert secret.encode().hex() not in log and b"SCIENTIST_TEST_SECRET".hex() not in log
        assert b"SCIENTIST_THREADS".hex() in log  # it did read its own environment
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing reached the host's loopback
    listener.close()
    assert not pids_with(token)  # both daemons ended with their step
    assert not list((run_dir / "repo" / "refs").rglob("replace*"))
    assert not (run_dir / "llm").exists()
    assert not list(site.glob(f"planted-{token}.pth")) and not list(Path.home().glob(f".planted-{token}"))
    new = sorted(p.relative_to(run_dir / "repo") for p in (run_dir / "repo").rglob("*"))
    assert not [p for p in set(new) - set(repo_files) if "replace" in str(p)]
    last = variants["normal"]
    assert last.status == "done" and -10 < last.fitness < 0


class Flaky:
    """A sandbox whose runs numbered in `failing` (1, 2, ...) raise SandboxError, as when
    bubblewrap or Docker fail."""

    name, python = "flaky", sys.executable

    def __init__(self, inner, failing):
        self.inner, self.failing, self.calls = inner, failing, 0

    def run(self, step, cancel=None) -> StepOutcome:
        self.calls += 1
        if self.failing(self.calls):
            raise SandboxError("bubblewrap could not set up the train step's sandbox: injected")
        return self.inner.run(step, cancel)

    def kill_leftovers(self) -> int:
        return 0

    def kill_all(self) -> None:
        self.inner.kill_all()


def test_a_sandbox_that_fails_once_is_retried(toy, make_run):
    toy.set_scale(training_seeds=1)
    run, out = make_run(toy, iterations=0, noise_seeds=2)
    run.infra_wait = 0.01
    run.sandbox = Flaky(run.sandbox, lambda n: n == 1)
    try:
        assert run.execute() == 0, out.getvalue()
        assert run.archive.get(0).status == "done"
        assert run.sandbox.calls == 5  # train (failed), then the noise floor's 2 x (train, evaluate)
    finally:
        run.close()


def test_a_sandbox_that_keeps_failing_stops_the_run_and_no_variant_is_failed(toy, make_run, runs_dir):
    toy.set_scale(training_seeds=1)
    run, out = make_run(toy, iterations=2, noise_seeds=2)
    run.infra_wait = 0.01
    # the baseline's four steps run (2 noise seeds x train, evaluate); from the first
    # variant on, the sandbox is broken
    run.sandbox = Flaky(run.sandbox, lambda n: n > 4)
    try:
        assert run.execute() == 1
        text = out.getvalue()
        assert "sandbox failed while running v0001, which is not the variant's fault" in text
        assert "scientist resume r" in text
        v1 = run.archive.get(1)
        assert v1.status == RUNNING and v1.result is None  # in flight: resume runs it again
        assert not [v for v in run.archive.all() if v.status == FAILED]
        assert run.sandbox.calls == 4 + run.evaluator.infra_retries + 1
    finally:
        run.close()
    again = Run.open(runs_dir / "r", make_console()[0])
    try:
        assert again.execute() == 0
        assert again.archive.get(1).status == "done"
    finally:
        again.close()


def test_a_tampered_pristine_evaluator_stops_the_run(toy, make_run):
    toy.set_scale(training_seeds=1)
    run, out = make_run(toy, iterations=1)
    try:
        # rewrite the stored blob of evaluate.py in place (git does not check a loose
        # object's hash when it reads it): only the recorded hash tells
        import zlib

        sha = run.workspace.repo.git.rev_parse(f"{run.archive.get_meta('pristine_commit')}:evaluate.py")
        obj = run.dir / "repo" / ".git" / "objects" / sha[:2] / sha[2:]
        forged = b"import json, sys\njson.dump({'neg_mse': 1e9}, open(sys.argv[-1], 'w'))\n"
        obj.chmod(0o644)
        obj.write_bytes(zlib.compress(b"blob %d\0" % len(forged) + forged))
        with pytest.raises(ScientistError, match=r"pristine evaluator .*\(evaluate.py changed\)"):
            run.execute()
    finally:
        run.close()


def test_binary_protected_files_reach_the_evaluator_intact(toy, make_run):
    blob = bytes(range(256)) * 8
    (toy.path / "table.bin").write_bytes(blob)
    toy.replace_manifest('protected = ["evaluate.py", "seed.toml"]',
                         'protected = ["evaluate.py", "seed.toml", "table.bin"]')
    ev = toy.path / "evaluate.py"
    ev.write_text(ev.read_text().replace(
        'm = json.load(', 'assert open("table.bin", "rb").read() == bytes(range(256)) * 8\nm = json.load('))
    toy.set_scale(training_seeds=1)
    run, out = make_run(toy, iterations=0)
    try:
        assert run.execute() == 0, out.getvalue()
        assert run.archive.get(0).status == "done", run.archive.get(0).result
    finally:
        run.close()


def test_a_crash_on_a_full_disk_is_not_the_variants_fault(toy, make_run, monkeypatch):
    import scientist.evaluator

    toy.set_mode("crash").set_scale(training_seeds=1)
    monkeypatch.setattr(scientist.evaluator, "_free_bytes", lambda path: 0)
    run, out = make_run(toy, iterations=1)
    run.infra_wait = 0.01
    try:
        assert run.execute() == 1
        text = " ".join(out.getvalue().split())
        assert "is full; free space and resume the run" in text and "not the variant's fault" in text
        assert run.archive.get(0).status == RUNNING  # in flight, not failed
    finally:
        run.close()
