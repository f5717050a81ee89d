"""`--executor slurm` against a real Slurm: each seed-job a Slurm job through submitit.

CI starts a single-node cluster (`.ci/slurm-up.sh`: Debian's slurm-wlm and munge,
slurmctld and slurmd on localhost). Without a controller that answers, these tests skip
with the reason; with SCIENTIST_REQUIRE_SLURM=1 or SCIENTIST_STRICT=1 (CI) they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import make_console
from test_run import popen_cli, reopen, run_args
from scientist.config import RunConfig
from scientist.run import Run
from scientist.seed import load_seed
from scientist.slurm import parse_options

POLL = 0.5  # seconds between two looks at the queue, in these tests


@pytest.fixture(scope="module")
def slurm() -> None:
    why = None
    try:
        import submitit  # noqa: F401
    except ImportError:
        why = "submitit is not installed (pip install -e '.[slurm]')"
    if why is None:
        try:
            p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               timeout=30)
            if p.returncode != 0 or not any(s.strip() in ("idle", "mixed", "allocated")
                                            for s in p.stdout.splitlines()):
                why = f"no Slurm node is up (sinfo: {p.stdout.strip() or p.stderr.strip()})"
        except (OSError, subprocess.SubprocessError) as e:
            why = f"no Slurm client here ({e}); .ci/slurm-up.sh starts a single-node cluster"
    if why is not None:
        if "1" in (os.environ.get("SCIENTIST_REQUIRE_SLURM"), os.environ.get("SCIENTIST_STRICT")):
            pytest.fail(f"Slurm is required here (SCIENTIST_REQUIRE_SLURM / SCIENTIST_STRICT) but {why}")
        pytest.skip(why)


def jobs_of(run_dir: Path) -> dict[str, str]:
    """The run's Slurm jobs the controller knows: id -> state."""
    name = f"scientist-{Run.label.fget(type('R', (), {'dir': run_dir})())}"
    out = subprocess.run(["squeue", "-h", "--states=all", f"--name={name}", "-o", "%i %T"],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


def live(run_dir: Path) -> list[str]:
    return [i for i, s in jobs_of(run_dir).items() if s in ("PENDING", "RUNNING", "CONFIGURING",
                                                            "COMPLETING")]


def wait_for(cond, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def slurm_run(toy, runs_dir: Path, **settings) -> Run:
    cfg = RunConfig(**{"seed": str(toy.path), "scale": "test", "runs_dir": str(runs_dir),
                       "run_id": "r", "report": False, "executor": "slurm", "slurm_poll": POLL,
                       **settings})
    return Run.create(cfg, make_console()[0])


def config_file(tmp: Path) -> Path:
    f = tmp / "slurm.toml"
    f.write_text(f"slurm_poll = {POLL}\n")
    return f


def test_seed_jobs_run_as_slurm_jobs_and_their_results_are_archived(slurm, toy, runs_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-reach-the-cluster")
    run = slurm_run(toy, runs_dir, iterations=1)
    try:
        assert run.execute() == 0
        a = run.archive
        assert [v.status for v in a.all()] == ["done", "done"]
        jobs = a.jobs.where()
        assert jobs and all(j.status == "done" and j.executor == "slurm" and j.runs == 1
                            for j in jobs)
        # each ran as its own Slurm job, on the node, and wrote into the run folder
        ids = [j.external_id for j in jobs]
        assert len(set(ids)) == len(ids) and all(i.isdigit() for i in ids)
        assert all(j.host and j.started_at and j.ended_at for j in jobs)
        for j in jobs:
            assert (run.dir / "slurm" / j.external_id / f"{j.external_id}_0_result.pkl").is_file()
        assert (run.dir / "variants" / "v0001" / "seed-1" / "metrics.json").is_file()
        # the job's environment is an allow-list: no API key went to the cluster
        script = (run.dir / "slurm" / ids[0] / f"{ids[0]}_submission.sh").read_text()
        assert "#SBATCH --export=" in script and "OPENAI_API_KEY" not in script
        assert "sk-must-not-reach-the-cluster" not in script
        assert "#SBATCH --mem=1424M" in script  # the scale's 400 MiB for one step, + 1 GiB
    finally:
        run.close()


def test_a_lost_job_is_run_again(slurm, toy, runs_dir):
    # a job that leaves the queue without a result (here: cancelled behind the run's back,
    # as a failed node or a preemption would) is not the variant's fault: it runs again
    toy.set_scale(training_seeds=1).add_to_train("time.sleep(3)")
    run = slurm_run(toy, runs_dir, iterations=0, noise_seeds=2)
    run.infra_wait = 0.1
    killed: list[str] = []

    def cancel_the_first_job() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            running = sorted((i for i, s in jobs_of(run.dir).items() if s == "RUNNING"), key=int)
            if running:
                subprocess.run(["scancel", running[0]], check=True)
                killed.append(running[0])
            time.sleep(0.2)

    t = threading.Thread(target=cancel_the_first_job, daemon=True)
    t.start()
    try:
        assert run.execute() == 0
        t.join()
        assert killed
        lost = [j for j in run.archive.jobs.where() if j.runs == 2]
        assert len(lost) == 1 and lost[0].status == "done" and lost[0].external_id != killed[0]
        assert run.archive.get(0).status == "done"
    finally:
        run.close()


def test_ctrl_c_cancels_the_runs_slurm_jobs(slurm, toy, runs_dir, tmp_path):
    toy.add_to_train("time.sleep(0 if 'v0000' in a.out else 600)")
    proc = popen_cli(*run_args(toy, runs_dir, 2, "--executor", "slurm", "--config",
                               str(config_file(tmp_path))), cwd=toy.path.parent)
    run_dir = runs_dir / "r"
    try:
        wait_for(lambda: len([s for s in jobs_of(run_dir).values() if s == "RUNNING"]) >= 2
                 and (run_dir / "variants" / "v0001" / "seed-0" / "train.err").exists(),
                 what="v0001's jobs to run")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Interrupted." in out
    wait_for(lambda: not live(run_dir), timeout=30, what="the jobs to be cancelled")
    assert "CANCELLED" in jobs_of(run_dir).values()


def test_a_killed_orchestrators_jobs_are_cancelled_on_resume_and_run_again(slurm, toy, runs_dir,
                                                                           tmp_path):
    # kill -9 skips every cleanup: the Slurm jobs go on without anyone to read their result.
    # A variant's training waits for a file `go` in its output folder (writable by the step,
    # visible here), which this test writes only once the resume has cancelled the orphans:
    # so they are still running when the resume starts, and the jobs run again end at once
    toy.set_scale(training_seeds=1, timeout=300).add_to_train(
        "end = time.time() + (0 if 'v0000' in a.out else 240)\n"
        "    while time.time() < end and not os.path.exists(os.path.join(a.out, 'go')):\n"
        "        time.sleep(0.2)")
    cfg = str(config_file(tmp_path))
    proc = popen_cli(*run_args(toy, runs_dir, 2, "--executor", "slurm", "--config", cfg),
                     cwd=toy.path.parent)
    run_dir = runs_dir / "r"
    try:
        wait_for(lambda: (run_dir / "variants" / "v0001" / "seed-0" / "train.err").exists()
                 and "RUNNING" in jobs_of(run_dir).values(), what="v0001's job to run")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    orphans = live(run_dir)
    assert orphans, "the kill took the Slurm jobs with it"
    a = reopen(run_dir)
    try:
        in_flight = {(j.variant_id, j.seed) for j in a.jobs.where() if j.status == "running"}
    finally:
        a.close()
    assert in_flight
    resume = popen_cli("resume", "r", "--runs-dir", str(runs_dir), cwd=tmp_path)
    try:
        # the orphans must end without `go`: only the resume cancels them
        wait_for(lambda: not set(orphans) & set(live(run_dir)) or resume.poll() is not None,
                 timeout=120, what="the resume to cancel the orphans")
        deadline = time.monotonic() + 300
        while resume.poll() is None and time.monotonic() < deadline:
            for out in (run_dir / "variants").glob("v*/*seed-*/out"):  # sealed-seed-* too
                go = out / "go"
                if not go.exists():
                    try:
                        go.write_text("")
                    except OSError:  # the folder was being made afresh: next time
                        pass
            time.sleep(0.2)
        stdout, stderr = resume.communicate(timeout=60)
    finally:
        resume.kill()
    assert resume.returncode == 0, stdout + stderr
    assert "left running by this run's previous orchestrator" in stdout
    assert not any((run_dir / "slurm" / i / f"{i}_0_result.pkl").exists() for i in orphans)
    a = reopen(run_dir)
    try:
        assert {v.status for v in a.all()} == {"done"}
        again = {(j.variant_id, j.seed) for j in a.jobs.where() if j.runs == 2}
        assert again == in_flight  # exactly the jobs in flight ran again
    finally:
        a.close()


def test_vsml_runs_through_slurm_at_test_scale(slurm, tmp_path, scientist_cli):
    from test_seeds import check_requirements

    seed = load_seed("vsml")
    check_requirements(seed.path, seed.evaluate_env)
    # the baseline on two seeds: a judge and a learner in the sandbox, on the node (a whole
    # run's confirmations and sealed test would take minutes here; the toy's tests cover them)
    p = scientist_cli("run", "--seed", "vsml", "--scale", "test", "--iterations", "0",
                      "--noise-seeds", "2", "--executor", "slurm", "--runs-dir",
                      str(tmp_path / "runs"), "--run-id", "v", "--no-report", "--config",
                      str(config_file(tmp_path)), timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    a = reopen(tmp_path / "runs" / "v")
    try:
        assert [v.status for v in a.all()] == ["done"] and a.get(0).fitness is not None
        assert all(j.executor == "slurm" and j.external_id for j in a.jobs.where())
    finally:
        a.close()


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("--account=lab --qos normal", {"account": "lab", "qos": "normal"}),
    ("--exclusive --constraint=a100", {"exclusive": True, "constraint": "a100"}),
    ("--mail-type=END", {"mail_type": "END"}),
])
def test_slurm_options_become_sbatch_parameters(text, expected):
    assert parse_options(text) == expected
