"""The research loop end to end on the toy seed: in process, and as `scientist` processes
that a user approves at, interrupts, kills and resumes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import cli_argv, cli_env, make_console
from scientist.archive import Archive
from scientist.errors import ScientistError
from scientist.config import RunConfig
from scientist.run import Run

MODE_CHOICE = """[[mutable]]
file = "train.py"
name = "mode"
type = "choice"
values = ["normal", "crash", "hang"]
"""

LR_CHOICE = """[[mutable]]
file = "train.py"
name = "lr"
type = "choice"
values = [0.01, 0.0001]
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def reopen(run_dir: Path) -> Archive:
    return Archive(run_dir / "archive.sqlite")


def test_a_run_end_to_end(toy, make_run, runs_dir):
    run, out = make_run(toy, iterations=3)
    run.execute()
    text = out.getvalue()
    for words in ("seed toy at scale test", "local sandbox", "offline proposer",
                  "no LLM configured", f"run folder {runs_dir / 'r'}",
                  "variants by neg_mse (higher is better; raw means: only a confirmed variant is "
                  "called best)", "noise floor: neg_mse has sd"):
        assert words in text
    assert text.index("v0000: evaluating the unmodified seed") < text.index("iter 1/3")

    a = run.archive
    vs = a.all()
    assert [v.id for v in vs] == [0, 1, 2, 3]
    assert [v.iteration for v in vs] == [0, 1, 2, 3]
    base = vs[0]
    assert base.parent_id is None and base.proposer == "baseline"
    assert base.commit == run.workspace.head_of("v0000") and base.fitness is not None
    for v in vs[1:]:
        assert v.parent_id is not None and v.parent_id < v.id
        assert v.hypothesis and v.diff.startswith("diff --git a/train.py")
        assert v.commit == git(run.dir / "repo", "rev-parse", v.name)
        assert git(run.dir / "repo", "rev-parse", f"{v.name}^") == a.get(v.parent_id).commit
    assert base.fitness_n == 4  # the noise floor: the baseline on max(4, 2 x 2) seeds
    promoted = [c.challenger_id for c in run.promotion.comparisons() if c.decision == "promoted"]
    best = run.promotion.best()
    assert best.id == (promoted[-1] if promoted else base.id)  # confirmed, not the best raw mean
    assert git(run.dir / "repo", "rev-parse", "best") == best.commit
    assert a.get_meta("status") == "finished"
    assert (run.dir / "config.json").is_file()
    assert (run.dir / "variants" / "v0002" / "seed-1" / "train.err").is_file()


def test_a_crashing_baseline_stops_the_run_with_a_message(toy, make_run):
    toy.set_mode("crash")
    run, out = make_run(toy, iterations=3)
    assert run.execute() == 1  # no exception; a failure status for scripts
    text = out.getvalue()
    assert "Stopped:" in text and "baseline itself failed" in text
    assert run.archive.count() == 1
    assert run.archive.get(0).status == "failed"
    assert "crash" in run.archive.get(0).error
    assert run.archive.get_meta("status") == "failed"


def test_a_crashing_baseline_is_no_traceback_on_the_command_line(toy, runs_dir,
                                                                   scientist_cli):
    toy.set_mode("crash")
    p = scientist_cli("run", "--seed", str(toy.path), "--scale", "test", "--iterations", "2",
                      "--runs-dir", str(runs_dir), "--run-id", "r", "--no-report")
    assert "Traceback" not in p.stdout + p.stderr
    assert p.returncode == 1
    assert "Stopped:" in p.stdout and "baseline itself failed" in p.stdout
    assert "v0000: failed — seed 0: crash" in p.stdout


def test_failing_variants_do_not_stop_the_loop(toy, make_run):
    # the only knob is `mode`: every proposal makes training crash or hang
    toy.only_mutable(MODE_CHOICE).set_scale(timeout=1, training_seeds=1)
    run, out = make_run(toy, iterations=3)
    run.execute()
    a = run.archive
    v1, v2, v3 = a.get(1), a.get(2), a.get(3)
    assert (v1.status, v2.status) == ("failed", "failed")
    assert sorted(v.result.seeds[0].status for v in (v1, v2)) == ["crash", "timeout"]
    assert v1.fitness is None and v2.fitness is None
    # both changes were tried from the only possible parent: nothing left to propose
    assert v3.status == "invalid" and "no untried change" in v3.error
    assert a.get_meta("status") == "finished"
    assert "failed" in out.getvalue() and "invalid proposal" in out.getvalue()


def test_time_budget_stops_early_with_a_message(toy, make_run):
    # a run that has already spent 150 s of its 100 s (as a resumed one may have): the
    # baseline runs, then no variant starts
    run, out = make_run(toy, iterations=50, time_budget=100.0)
    run.archive.set_meta("elapsed_seconds", 150.0)
    assert run.execute() == 0
    assert re.search(r"Stopped: time budget of 100 s reached after 1[5-9]\d s", out.getvalue())
    assert run.archive.count() == 1  # the baseline always runs
    assert run.archive.get_meta("status") == "stopped"


def test_a_run_folder_is_never_overwritten(toy, make_run, runs_dir):
    make_run(toy, iterations=0)
    with pytest.raises(ScientistError, match="exists already.*scientist resume r"):
        make_run(toy, iterations=0)


def test_resume_keeps_the_best_so_far(toy, make_run, runs_dir):
    # the only change there is (lr 0.01 -> 0.0001) makes things worse
    toy.only_mutable(LR_CHOICE).set_scale(training_seeds=1)
    run, _ = make_run(toy, iterations=0)
    run.execute()
    base = run.archive.get(0)
    run.close()

    console, out = make_console()
    again = Run.open(runs_dir / "r", console, iterations=1)
    try:
        again.execute()
        worse = again.archive.get(1)
        assert worse.fitness < base.fitness
        assert git(again.dir / "repo", "rev-parse", "best") == base.commit
        assert "new best" not in out.getvalue()
        assert again.archive.get_meta("status") == "finished"
    finally:
        again.close()


def test_a_finished_run_writes_its_report(toy, make_run):
    run, out = make_run(toy, iterations=1, report=True)
    run.execute()
    tex, html = run.dir / "report" / "report.tex", run.dir / "report" / "report.html"
    assert tex.is_file() and "v0001" in tex.read_text() and html.is_file()
    assert f"report: {html} and {tex}" in out.getvalue()


# --- as a user runs it: subprocesses, stdin answers, signals -----------------------------


def run_args(toy, runs_dir: Path, iterations: int, *extra: str) -> list[str]:
    return ["run", "--seed", str(toy.path), "--scale", "test", "--iterations", str(iterations),
            "--runs-dir", str(runs_dir), "--run-id", "r", "--no-report", *extra]


def test_approve_reject_and_quit_at_the_prompt(toy, runs_dir, scientist_cli):
    toy.set_scale(training_seeds=1)
    answers = "maybe\nr\nthe step size is already fine\na\nq\n"
    p = scientist_cli(*run_args(toy, runs_dir, 3, "--approve"), input=answers)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "Hypothesis:" in p.stdout and "[a]pprove, [r]eject, [q]uit?" in p.stdout
    assert "Please answer a, r or q." in p.stdout
    assert "Stopped:" in p.stdout

    a = reopen(runs_dir / "r")
    try:
        rejected, approved = a.get(1), a.get(2)
        assert rejected.status == "rejected" and rejected.commit is None
        assert rejected.error == "the step size is already fine"
        assert rejected.hypothesis and rejected.diff
        assert [(e["kind"], e["text"]) for e in a.events(1)] == [
            ("rejected", "the step size is already fine")]
        assert approved.status == "done" and approved.fitness is not None
        # quit at iteration 3's prompt: selected, its proposal not decided (made and asked
        # again on resume)
        assert a.count() == 4 and a.get(3).status == "pending" and not a.get(3).commit
        assert a.get_meta("status") == "stopped"
    finally:
        a.close()

    p = scientist_cli("resume", "r", "--runs-dir", str(runs_dir), input="a\n")
    assert p.returncode == 0, p.stderr
    a = reopen(runs_dir / "r")
    try:
        assert [v.iteration for v in a.all()] == [0, 1, 2, 3]
        assert a.get(3).status == "done"
        assert a.get_meta("status") == "finished"
    finally:
        a.close()


def test_end_of_input_at_the_prompt_stops_the_run(toy, runs_dir, scientist_cli):
    toy.set_scale(training_seeds=1)
    p = scientist_cli(*run_args(toy, runs_dir, 2, "--approve"), input="")
    assert p.returncode == 0 and "no answer" in p.stdout
    a = reopen(runs_dir / "r")
    try:  # nothing ran but the baseline; the proposals made ahead wait for a decision
        assert a.get_meta("status") == "stopped"
        assert [v.status for v in a.all()] == ["done"] + ["pending"] * (a.count() - 1)
    finally:
        a.close()


def variants(run_dir: Path) -> list[tuple[int, int, str]]:
    """(id, iteration, status) of each variant, read without taking any lock."""
    path = run_dir / "archive.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT id, iteration, status FROM variants ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the schema is not written yet
        return []
    finally:
        db.close()


def popen_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """`scientist ARGS` in the background, taking Ctrl-C as from a terminal (even when the
    test runner was started with SIGINT ignored, as background jobs of a script are)."""
    return subprocess.Popen(cli_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env(), cwd=cwd,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def start_slow_run(toy, runs_dir: Path, iterations: int) -> subprocess.Popen:
    """A run whose every training step sleeps a second, so it can be hit mid-variant."""
    toy.set_scale(training_seeds=1).add_to_train("time.sleep(1.0)")
    return popen_cli(*run_args(toy, runs_dir, iterations), cwd=toy.path.parent)


def wait_until_training(run_dir: Path, proc: subprocess.Popen, vid: int) -> None:
    """Wait until variant `vid` is running and its training step has started."""
    started = run_dir / "variants" / f"v{vid:04d}" / "seed-0" / "train.err"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if started.exists() and any(v[0] == vid and v[2] == "running"
                                    for v in variants(run_dir)):
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"v{vid:04d} never started training: {variants(run_dir)}")


def steps_of(run_dir: Path) -> list[int]:
    """Processes still running a step of this run (their command line names the run)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(run_dir).encode() in cmd and state != "Z":
                pids.append(int(entry.name))
    return pids


def described(pids: list[int]) -> str:
    """Each process's pid, parent, state and command line (what outlived its orchestrator)."""
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out.append(f"pid {pid} (parent {stat[1]}, state {stat[0]}): {cmd[:300]}")
    return "; ".join(out) or "(gone by now)"


def no_steps_left(run_dir: Path) -> bool:
    deadline = time.monotonic() + 15
    while steps_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not steps_of(run_dir)


def resume_finishes(runs_dir: Path, scientist_cli, iterations: int, in_flight: int) -> None:
    p = scientist_cli("resume", "r", "--runs-dir", str(runs_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"v{in_flight:04d} was in flight when the run stopped" in p.stdout
    rows = variants(runs_dir / "r")
    assert len(rows) == iterations + 1
    assert [r[1] for r in rows] == list(range(iterations + 1))  # no duplicate iteration
    assert {r[2] for r in rows} == {"done"}
    a = reopen(runs_dir / "r")
    try:
        assert a.get_meta("status") == "finished"
        v = a.get(in_flight)
        assert v.fitness is not None and v.result is not None
        assert v.commit == git(runs_dir / "r" / "repo", "rev-parse", v.name)
    finally:
        a.close()


@pytest.mark.parametrize("victim", [0, 1], ids=["during-baseline", "during-variant"])
def test_resume_after_kill_9(toy, runs_dir, scientist_cli, victim):
    proc = start_slow_run(toy, runs_dir, iterations=2)
    wait_until_training(runs_dir / "r", proc, victim)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    rows = variants(runs_dir / "r")  # the archive is intact, the victim still in flight
    assert rows[:victim] == [(i, i, "done") for i in range(victim)]
    assert rows[victim] == (victim, victim, "running")
    # proposals made ahead are in flight too (approved, or still being made)
    assert all(r[2] in ("running", "pending") for r in rows[victim:])
    assert no_steps_left(runs_dir / "r"), ("the training step outlived its orchestrator: "
                                           + described(steps_of(runs_dir / "r")))
    resume_finishes(runs_dir, scientist_cli, iterations=2, in_flight=victim)


def test_daemons_of_a_killed_run_die_with_it_and_the_resume_goes_on(toy, runs_dir, scientist_cli):
    # training starts a daemon outside its session; kill -9 of the orchestrator skips every
    # cleanup, but the step's sandbox dies with its orchestrator and takes the daemon along
    token = uuid.uuid4().hex
    toy.add_to_train(
        "import subprocess; subprocess.Popen([sys.executable, '-c', 'import time; "
        f"time.sleep(600)', {token!r}], start_new_session=True); time.sleep(3)")
    proc = start_slow_run(toy, runs_dir, iterations=1)
    wait_until_training(runs_dir / "r", proc, 0)
    deadline = time.monotonic() + 30
    while not pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_with(token), "the daemon never started"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pids_with(token), "the daemon outlived a kill -9 of its orchestrator"
    p = scientist_cli("resume", "r", "--runs-dir", str(runs_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "v0000 was in flight when the run stopped" in p.stdout
    assert not pids_with(token)


def pids_with(token: str) -> list[int]:
    """Live processes whose command line holds `token`."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if (entry.name.isdigit() and token.encode() in Path(f"/proc/{entry.name}/cmdline").read_bytes()
                    and alive(int(entry.name))):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_then_resume(toy, runs_dir, scientist_cli, sig):
    proc = start_slow_run(toy, runs_dir, iterations=2)
    wait_until_training(runs_dir / "r", proc, 1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Interrupted." in out and "scientist resume r" in out
    assert "Traceback" not in err
    assert no_steps_left(runs_dir / "r")
    a = reopen(runs_dir / "r")
    try:
        assert a.get_meta("status") == "interrupted"
        assert a.get(1).status == "running"
    finally:
        a.close()
    resume_finishes(runs_dir, scientist_cli, iterations=2, in_flight=1)


def test_a_run_in_use_cannot_be_resumed_twice(toy, runs_dir, scientist_cli):
    # the baseline's training sleeps far longer than three CLI start-ups take even under load
    # (a run of 1 s steps could end before `show` started, on a loaded machine); killed below
    toy.set_scale(training_seeds=1, timeout=300).add_to_train("time.sleep(240)")
    proc = popen_cli(*run_args(toy, runs_dir, 1), cwd=toy.path.parent)
    try:
        wait_until_training(runs_dir / "r", proc, 0)
        p = scientist_cli("resume", "r", "--runs-dir", str(runs_dir))
        assert p.returncode == 2 and "in use by another scientist process" in p.stdout
        # but it can be watched while it works
        p = scientist_cli("show", "r", "--runs-dir", str(runs_dir))
        assert p.returncode == 0 and "status running" in p.stdout and "v0000" in p.stdout
        p = scientist_cli("runs", "--runs-dir", str(runs_dir))
        assert p.returncode == 0 and "running" in p.stdout
    finally:
        proc.kill()
        proc.communicate()


def test_ctrl_c_stops_parallel_training_seeds_at_once(toy, runs_dir):
    # two training seeds run in parallel, each for far longer than the test waits: Ctrl-C
    # must kill them, not wait for them to end on their own
    toy.set_scale(timeout=300, training_seeds=2)
    toy.add_to_train("time.sleep(0 if 'v0000' in a.out else 600)")
    proc = popen_cli(*run_args(toy, runs_dir, 1, "--workers", "2"), cwd=toy.path.parent)
    try:
        run_dir = runs_dir / "r"
        for s in (0, 1):
            started = run_dir / "variants" / "v0001" / f"seed-{s}" / "train.err"
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Interrupted." in out
    assert no_steps_left(run_dir)


def test_resume_uses_the_seed_the_run_started_with(toy, make_run, runs_dir):
    run, _ = make_run(toy, iterations=1)
    assert run.execute() == 0
    run.close()
    shutil.rmtree(toy.path)  # the seed folder is gone (or edited) after the run started
    console, buf = make_console()
    resumed = Run.open(runs_dir / "r", console, iterations=3)
    try:
        assert resumed.execute() == 0
        assert [v.iteration for v in resumed.archive.all()] == [0, 1, 2, 3]
        assert all(v.status == "done" for v in resumed.archive.all())
    finally:
        resumed.close()


@pytest.mark.parametrize("run_id", ["../escape", "/abs", "a b", ""])
def test_a_run_id_must_name_a_folder_inside_the_runs_folder(toy, runs_dir, run_id):
    cfg = RunConfig(seed=str(toy.path), scale="test", runs_dir=str(runs_dir), run_id=run_id or None)
    if not run_id:  # no id: a timestamped one is made, which is fine
        Run.create(cfg, make_console()[0]).close()
        return
    with pytest.raises(ScientistError, match="run id"):
        Run.create(cfg, make_console()[0])
    assert not (runs_dir.parent / "escape").exists()


def test_a_running_variant_reports_what_it_is_doing(toy, make_run):
    # training prints a progress line, then works for a while: the run shows that line
    toy.add_to_train("print('meta-step 7 loss 0.25', flush=True); time.sleep(1.5)")
    run, out = make_run(toy, iterations=0)
    run.heartbeat_seconds = 0.3
    assert run.execute() == 0
    beats = [ln for ln in out.getvalue().splitlines() if "training: meta-step 7 loss 0.25" in ln]
    assert beats and all("v0000 seed" in ln for ln in beats)
    # the baseline's four noise-floor seeds, two at a time
    assert {ln.split("v0000 seed ")[1][0] for ln in beats} == {"0", "1", "2", "3"}


def test_a_quick_crash_does_not_let_a_long_variant_start_past_the_budget(toy, make_run):
    """The budget guard goes by the pace of variants that ran to their end, not by the last
    one, which may have crashed in a second."""
    from scientist.console import Progress
    from scientist.run import Stop
    from scientist.variant import DONE, FAILED, Result, SeedResult

    run, _ = make_run(toy, iterations=5, time_budget=150.0)
    try:
        a = run.archive
        base = a.new_variant(None, 0, status="running")
        a.record_result(base.id, Result([SeedResult(0, "ok", train_seconds=55, eval_seconds=5,
                                                    metrics={"neg_mse": -1.0})], "neg_mse"), DONE)
        crash = a.new_variant(0, 1, status="running")
        a.record_result(crash.id, Result([SeedResult(0, "crash", "exit status 1", train_seconds=1)],
                                         "neg_mse"), FAILED)
        run.progress = Progress(make_console()[0], 5, elapsed_before=100.0)
        with pytest.raises(Stop, match="time budget of 150 s reached after 100 s "
                                       r"\(a variant takes about 60 s\)"):
            run._check_budget()
        run.config.time_budget = 200.0  # room for another 60 s variant: it starts
        run._check_budget()
    finally:
        run.close()
