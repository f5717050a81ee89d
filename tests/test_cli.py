"""The command line: listing and showing runs, and errors a user can act on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import TOY, ToySeed, make_console
from scientist import cli
from scientist.archive import Archive
from scientist.config import RunConfig
from scientist.promotion import Promotion
from scientist.run import Run


def make_finished_run(base: Path, run_id: str, mode: str = "normal", iterations: int = 2) -> None:
    seed = ToySeed(base / f"seed-{run_id}")
    shutil.copytree(TOY, seed.path)
    seed.set_mode(mode)
    cfg = RunConfig(seed=str(seed.path), scale="test", iterations=iterations,
                    runs_dir=str(base / "runs"), run_id=run_id, report=False)
    run = Run.create(cfg, make_console()[0])
    try:
        run.execute()
    finally:
        run.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two finished runs: `good` (baseline and 2 variants) and `crashed` (baseline crashed)."""
    base = tmp_path_factory.mktemp("cli")
    make_finished_run(base, "good")
    make_finished_run(base, "crashed", mode="crash")
    runs = base / "runs"
    # `latest` goes by the archive's modification time; make `good` the latest
    now = (runs / "good" / "archive.sqlite").stat().st_mtime
    os.utime(runs / "crashed" / "archive.sqlite", (now - 60, now - 60))
    return runs


@pytest.fixture
def scientist(monkeypatch):
    """Run `scientist ARGS` in this process; returns (exit code, what it printed)."""

    def run(*args: str) -> tuple[int, str]:
        console, buf = make_console()
        monkeypatch.setattr(cli, "console", console)
        return cli.main(list(args)), buf.getvalue()

    return run


def archive(run_dir: Path) -> Archive:
    a = Archive(run_dir / "archive.sqlite")
    a.maximize = True
    return a


def test_runs_lists_status_and_best_fitness(runs, scientist):
    code, out = scientist("runs", "--runs-dir", str(runs))
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines()
             if line.split()[1:2] in (["good"], ["crashed"])}
    assert set(lines) == {"good", "crashed"}
    a = archive(runs / "good")
    try:
        promotion = Promotion.of(a)
        best, tried = promotion.best(), promotion.comparisons()
        sealed = promotion.sealed()
    finally:
        a.close()
    # the toy's first change (v0001) is deterministic in the seed and far outside its
    # noise: it is promoted, and the sealed test against the baseline confirms it
    assert best.id == 1 and [c.decision for c in tried] == ["promoted"]
    good = lines["good"]
    assert "finished" in good and f"{best.fitness:.4f} ± {best.fitness_stderr:.4f} (v0001)" in good
    assert "1 of 1" in good and f"{sealed.test(True).mean:+.4f}" in good
    assert "failed" in lines["crashed"] and "—" in lines["crashed"]


def test_runs_in_an_empty_folder(tmp_path, scientist):
    code, out = scientist("runs", "--runs-dir", str(tmp_path))
    assert code == 0 and "runs in" in out


def test_show_a_run_lists_its_variants(runs, scientist):
    code, out = scientist("show", "good", "--runs-dir", str(runs))
    assert code == 0
    assert "status finished" in out and "offline proposer" in out
    for name in ("v0000", "v0001", "v0002"):
        assert name in out
    assert "Changing" in out  # the hypotheses
    assert "noise floor: sd" in out and "claim" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line[2:4] == "v0"}
    assert " best " in rows["v0001"] and " confirmed " in rows["v0000"]
    assert "Confirmed best: v0001" in out and "Sealed test against v0000" in out


def test_show_a_variant_prints_hypothesis_diff_and_metrics(runs, scientist):
    a = archive(runs / "good")
    try:
        v = a.get(1)
    finally:
        a.close()
    code, out = scientist("show", "good", "1", "--runs-dir", str(runs))
    assert code == 0
    assert f"Hypothesis: {v.hypothesis}" in out
    assert "diff --git a/train.py b/train.py" in out
    assert any(line.startswith("+") and "train.py" not in line for line in out.splitlines())
    assert "Fitness:" in out and "Metrics (mean over seeds):" in out and "neg_mse=" in out
    assert "training seed 0: ok" in out and "training seed 1: ok" in out
    # its confirmation and its sealed test, seed by seed
    assert "confirmation (attempt 1): v0001 against v0000 on fresh seeds [4, 5, 6, 7]: promoted" in out
    assert "sealed test: v0001 against v0000 on fresh seeds [8, 9, 10, 11]" in out
    assert "95% CI" in out
    code2, out2 = scientist("show", "good", "v0001", "--runs-dir", str(runs))
    assert code2 == 0 and out2 == out


def test_show_logs_prints_the_full_logs(runs, scientist):
    code, out = scientist("show", "good", "0", "--logs", "--runs-dir", str(runs))
    assert code == 0
    assert "train.err" in out and "trained: w=" in out and "neg_mse=" in out


def test_show_a_failed_variant_prints_its_stderr(runs, scientist):
    code, out = scientist("show", "crashed", "0", "--runs-dir", str(runs))
    assert code == 0
    assert "status failed" in out and "Error:" in out
    assert "stderr (tail" in out and "toy seed crashed on purpose" in out


def test_show_latest(runs, scientist):
    code, out = scientist("show", "latest", "--runs-dir", str(runs))
    assert code == 0 and out.startswith("good:")


def test_show_by_run_folder_path(runs, scientist):
    code, out = scientist("show", str(runs / "crashed"))
    assert code == 0 and out.startswith("crashed:")


@pytest.mark.parametrize("args, message", [
    (("show", "nope"), "no run 'nope'"),
    (("resume", "nope"), "no run 'nope'"),
    (("show", "good", "99"), "no variant 99"),
    (("show", "good", "first"), "variant must be a number like 3 or v0003, not 'first'"),
])
def test_bad_names_exit_2_with_a_message(runs, scientist, args, message):
    code, out = scientist(*args, "--runs-dir", str(runs))
    assert code == 2
    assert out.startswith("error:") and message in out


def test_latest_with_no_runs(tmp_path, scientist):
    code, out = scientist("show", "latest", "--runs-dir", str(tmp_path))
    assert code == 2 and "no runs in" in out


def test_bad_run_id_as_a_process(runs, scientist_cli):
    p = scientist_cli("show", "nope", "--runs-dir", str(runs))
    assert p.returncode == 2
    assert "no run 'nope'" in p.stdout and "scientist runs" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


def test_bad_seed_path_names_the_problem(tmp_path, scientist_cli):
    p = scientist_cli("run", "--seed", str(tmp_path / "no-such-seed"), "--scale", "test",
                      "--runs-dir", str(tmp_path / "runs"), "--no-report")
    assert p.returncode == 2
    assert "Traceback" not in p.stdout + p.stderr
    assert "no seed" in p.stdout and "no-such-seed" in p.stdout and "seed.toml" in p.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_manifest_names_the_field(toy, tmp_path, scientist_cli):
    toy.replace_manifest('direction = "max"', 'direction = "higher"')
    p = scientist_cli("run", "--seed", str(toy.path), "--scale", "test",
                      "--runs-dir", str(tmp_path / "runs"), "--no-report")
    assert p.returncode == 2
    assert "Traceback" not in p.stdout + p.stderr
    assert "fitness.direction" in p.stdout


def test_unknown_scale_creates_no_run_folder(toy, tmp_path, scientist):
    code, out = scientist("run", "--seed", str(toy.path), "--scale", "huge",
                          "--runs-dir", str(tmp_path / "runs"), "--no-report")
    assert code == 2 and "no scale 'huge'" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_config_file_and_flags_merge_and_are_saved(toy, tmp_path, scientist):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nscale = "test"\niterations = 5\nselection = "greedy"\nrng_seed = 7\n')
    code, out = scientist("run", "--seed", str(toy.path), "--config", str(cfg),
                          "--iterations", "1", "--runs-dir", str(tmp_path / "runs"),
                          "--run-id", "merged", "--no-report")
    assert code == 0, out
    saved = json.loads((tmp_path / "runs" / "merged" / "config.json").read_text())
    assert (saved["scale"], saved["iterations"], saved["selection"], saved["rng_seed"]) == (
        "test", 1, "greedy", 7)
    assert saved["seed"] == str(toy.path.resolve())
    assert "selection greedy" in out


def test_unknown_setting_in_a_config_file(toy, tmp_path, scientist):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nscael = "test"\n')
    code, out = scientist("run", "--seed", str(toy.path), "--config", str(cfg),
                          "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "unknown settings ['scael']" in out


def test_time_budget_flag_takes_a_duration(toy, tmp_path, scientist):
    code, out = scientist("run", "--seed", str(toy.path), "--scale", "test", "--iterations",
                          "20", "--time-budget", "0.01s", "--runs-dir", str(tmp_path / "runs"),
                          "--run-id", "budget", "--no-report")
    assert code == 0 and "time budget of 0 s reached" in out
    saved = json.loads((tmp_path / "runs" / "budget" / "config.json").read_text())
    assert saved["time_budget"] == pytest.approx(0.01)


def test_a_bad_duration_is_a_usage_error(toy, tmp_path, scientist, capsys):
    with pytest.raises(SystemExit) as e:
        scientist("run", "--seed", str(toy.path), "--time-budget", "soon")
    assert e.value.code == 2
    assert "soon" in capsys.readouterr().err


def test_a_setting_of_the_wrong_type_in_a_config_file(toy, tmp_path, scientist):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\niterations = "5"\n')
    code, out = scientist("run", "--seed", str(toy.path), "--config", str(cfg),
                          "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "setting 'iterations' must be int | None, not '5'" in out


def test_a_run_whose_process_died_is_listed_as_killed(runs, tmp_path, scientist):
    dead = tmp_path / "runs"
    shutil.copytree(runs / "good", dead / "good")
    a = archive(dead / "good")
    a.set_meta("status", "running")  # what a kill -9 leaves behind
    a.close()
    code, out = scientist("runs", "--runs-dir", str(dead))
    assert code == 0 and "killed (resume it)" in out
    code, out = scientist("show", "good", "--runs-dir", str(dead))
    assert "killed (resume it)" in out


def test_resume_can_turn_approval_off_again(toy, tmp_path, scientist):
    code, _ = scientist("run", "--seed", str(toy.path), "--scale", "test", "--iterations", "0",
                        "--approve", "--runs-dir", str(tmp_path / "runs"), "--run-id", "ap",
                        "--no-report")
    cfg = tmp_path / "runs" / "ap" / "config.json"
    assert code == 0 and json.loads(cfg.read_text())["approve"] == "terminal"
    code, out = scientist("resume", "ap", "--iterations", "1", "--no-approve",
                          "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, out
    assert json.loads(cfg.read_text())["approve"] == "off"
    assert "v0001" in out  # ran without asking (no terminal input here)


@pytest.mark.parametrize("setting, value, message", [
    ("fme_buckets", "0", "'fme_buckets' must be >= 1, not 0"),
    ("fme_temperature", "0.0", "'fme_temperature' must be > 0, not 0.0"),
    ("fme_capacity", "-1", "'fme_capacity' must be >= 1"),
    ("workers", "0", "'workers' must be >= 1"),
    ("max_cost", "-5.0", "'max_cost' must be >= 0"),
    ("time_budget", "0", "'time_budget' must be > 0"),
])
def test_a_setting_out_of_range_stops_before_the_baseline(toy, tmp_path, scientist, setting, value,
                                                          message):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"[run]\n{setting} = {value}\n")
    code, out = scientist("run", "--seed", str(toy.path), "--scale", "test", "--config", str(cfg),
                          "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and message in out, out
    assert not (tmp_path / "runs").exists()  # no run folder, nothing evaluated


def test_resume_takes_the_lock_before_it_writes_the_config(runs, tmp_path, scientist):
    held = tmp_path / "runs"
    shutil.copytree(runs / "good", held / "good")
    config = held / "good" / "config.json"
    before = config.read_text()
    with cli.locked(held / "good"):  # another scientist process is working on the run
        code, out = scientist("resume", "good", "--iterations", "9", "--runs-dir", str(held))
    assert code == 2 and "in use by another scientist process" in out
    assert config.read_text() == before


def test_the_unconfined_sandbox_is_said_loudly(toy, tmp_path, scientist):
    code, out = scientist("run", "--seed", str(toy.path), "--scale", "test", "--iterations", "0",
                          "--sandbox", "process", "--runs-dir", str(tmp_path / "runs"),
                          "--run-id", "p")
    assert code == 0, out
    assert "process sandbox, " in out and "warning: the process sandbox does not confine" in out
    code, out = scientist("show", "p", "--runs-dir", str(tmp_path / "runs"))
    assert "warning: the process sandbox does not confine variants" in out
    tex = (tmp_path / "runs" / "p" / "report" / "report.tex").read_text()
    assert "unconfined: the variants' code ran as the user" in tex
    code, out = scientist("show", "good", "--runs-dir", str(tmp_path / "runs"))
    code, out = scientist("run", "--seed", str(toy.path), "--scale", "test", "--iterations", "0",
                          "--runs-dir", str(tmp_path / "runs"), "--run-id", "l", "--no-report")
    assert "local sandbox" in out and "does not confine" not in out


def test_without_bubblewrap_run_is_refused_with_the_fix(toy, tmp_path, scientist, monkeypatch):
    from scientist import confinement

    monkeypatch.setattr(confinement, "_PROBED", {})
    monkeypatch.setattr(confinement, "bwrap_path", lambda: None)
    code, out = scientist("run", "--seed", str(toy.path), "--scale", "test",
                          "--runs-dir", str(tmp_path / "runs"))
    out = " ".join(out.split())  # the console wraps long lines
    assert code == 2 and "apt-get install bubblewrap" in out and "--sandbox process" in out
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    code, out = scientist("doctor")
    assert "missing local sandbox: the local sandbox needs bubblewrap" in " ".join(out.split())
