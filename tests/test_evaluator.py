"""Evaluator: the pristine evaluator scores every variant; failures become Results."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import scientist.evaluator as evaluator_mod
from scientist.errors import SandboxError, ScientistError
from scientist.evaluator import (DISK_FULL_BYTES, Evaluator, _free_bytes, _join, _write, read_metrics, read_verdict,
                                 tail)
from scientist.harness.judge import EVAL_SEED_ENV, EVAL_SET_ENV, SOCKET_ENV
from scientist.process_sandbox import ProcessSandbox
from scientist.redaction import Redactor
from scientist.sandbox import LocalSandbox
from scientist.seed import load_seed
from scientist.variant import SEED_CRASH, SEED_NO_METRICS, SEED_OK, SEED_OOM, SEED_TIMEOUT, SEED_VIOLATED
from scientist.workspace import Workspace


class Bench:
    """An evaluator on a toy-seed copy, and a way to commit variants of its train.py."""

    def __init__(self, toy, tmp_path, workers: int = 1, sandbox=None):
        self.seed = load_seed(toy.path)
        self.ws = Workspace.create(tmp_path / "repo", self.seed)
        self.root = self.ws.head_of("v0000")
        self.tmp = tmp_path
        self.evaluator = Evaluator(self.seed, self.seed.scale("test"), self.ws, sandbox or LocalSandbox(),
                                   self.root, workers=workers)
        self.n = 0

    def variant(self, extra_line: str = "", **fields: object) -> str:
        """Commit a child of the baseline with these `Args` defaults (and a line of code)."""
        text = self.ws.read(self.root, ["train.py"])["train.py"]
        for name, value in fields.items():
            text, k = re.subn(rf"^(    {name}: \w+ = )[^#\n]+?(  #)", rf"\g<1>{value!r}\2",
                              text, flags=re.M)
            assert k == 1
        if extra_line:
            text = text.replace("    args = Args()\n", f"    args = Args()\n    {extra_line}\n")
        self.n += 1
        return self.ws.commit(self.root, {"train.py": text}, f"v{self.n:04d}", f"v{self.n:04d}")

    def evaluate(self, commit: str, name: str = "v"):
        return self.evaluator.evaluate(commit, self.tmp / "variants" / name)


def test_a_normal_variant_gets_a_fitness_from_each_training_seed(toy, tmp_path):
    b = Bench(toy, tmp_path)
    seen = []
    r = b.evaluator.evaluate(b.root, tmp_path / "variants" / "v0000", on_seed=seen.append)
    assert r.ok and [s.seed for s in r.seeds] == [0, 1]
    assert sorted(s.seed for s in seen) == [0, 1]
    assert all(s.status == SEED_OK for s in r.seeds)
    assert r.mean == pytest.approx(sum(s.metrics["neg_mse"] for s in r.seeds) / 2)
    assert -10 < r.mean < 0 and r.stderr is not None
    # the seed's files and logs are kept, the working copy is not
    folder = tmp_path / "variants" / "v0000" / "seed-0"
    assert (folder / "metrics.json").is_file() and (folder / "train.err").is_file()
    assert (folder / "out" / "model.json").is_file()
    assert not (folder / "work").exists() and not (folder / "eval-work").exists()


def test_cheating_training_cannot_touch_the_evaluator(toy, tmp_path):
    # the default sandbox mounts the working copy read-only: the overwrite itself fails
    b = Bench(toy, tmp_path)
    cheat = b.evaluate(b.variant(mode="cheat"), "cheat")
    assert not cheat.ok and cheat.seeds[0].status == SEED_CRASH
    assert "Read-only file system: 'evaluate.py'" in cheat.seeds[0].stderr_tail


def test_cheating_training_still_gets_the_honest_fitness(toy, tmp_path):
    # where the sandbox lets the overwrite through (unconfined), the evaluator's pristine
    # copy is what runs
    b = Bench(toy, tmp_path, sandbox=ProcessSandbox())
    honest = b.evaluate(b.variant(mode="normal"), "honest")
    cheat = b.evaluate(b.variant(mode="cheat"), "cheat")
    assert cheat.ok
    assert cheat.mean == pytest.approx(honest.mean)
    assert cheat.mean < 0  # not the planted 1e9
    assert {"w", "b"} <= set(cheat.seeds[0].metrics)  # written by the pristine evaluator


def test_metrics_planted_by_training_are_not_read(toy, tmp_path):
    # training writes metrics files where the real one goes: only what the pristine
    # evaluator writes afterwards counts. The default sandbox refuses the write beside
    # `out`; the unconfined one lets it through, and the evaluator deletes it.
    b = Bench(toy, tmp_path, sandbox=ProcessSandbox())
    plant = ("import json; [json.dump({'neg_mse': 1e9}, open(p, 'w')) for p in "
             "(os.path.join(a.out, '..', 'metrics.json'), os.path.join(a.out, 'metrics.json'))]")
    commit = b.variant(plant)
    r = b.evaluate(commit, "planted")
    assert r.ok and r.mean < 0
    b.evaluator.sandbox = LocalSandbox()
    r = b.evaluate(commit, "planted-confined")
    assert not r.ok and "Permission denied" in r.seeds[0].stderr_tail


def test_planted_metrics_are_not_read_when_the_evaluator_writes_none(toy, tmp_path):
    # the pristine evaluator writes no metrics file here: what training planted where the
    # metrics go must not become the fitness (the evaluator deletes it before scoring)
    ev = toy.path / "evaluate.py"
    ev.write_text(ev.read_text().replace('open(a.metrics, "w")', "open(os.devnull, 'w')"))
    b = Bench(toy, tmp_path, sandbox=ProcessSandbox())
    plant = "import json; json.dump({'neg_mse': 1e9}, open(os.path.join(a.out, '..', 'metrics.json'), 'w'))"
    r = b.evaluate(b.variant(plant), "planted-alone")
    assert not r.ok and r.mean is None
    assert {s.status for s in r.seeds} == {SEED_NO_METRICS}
    assert "no metrics file" in r.seeds[0].reason


class Recording:
    """The local sandbox, keeping every Step it was given."""

    def __init__(self):
        self.inner, self.steps = LocalSandbox(), []
        self.name, self.python = self.inner.name, self.inner.python

    def run(self, step, cancel=None):
        self.steps.append(step)
        return self.inner.run(step, cancel)


def test_evaluation_data_is_hidden_from_training(toy, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    toy.replace_manifest('evaluate_env = { TOY_EVAL_ONLY = "1" }',
                         f'evaluate_env = {{ TOY_EVAL_ONLY = "1", TOY_DATA = "{data}" }}')
    rec = Recording()
    b = Bench(toy, tmp_path, sandbox=rec)
    assert b.evaluate(b.root, "data").ok
    kinds = {s.kind: s for s in rec.steps}
    assert kinds["train"].hidden == (data,)
    assert kinds["evaluate"].hidden == () and kinds["evaluate"].env["TOY_DATA"] == str(data)


def test_the_judges_command_gets_the_scale_as_trainings_does(toy, tmp_path):
    toy.replace_manifest("--metrics {metrics}", "--metrics {metrics} --scale {scale}")
    judge = toy.path / "evaluate.py"
    judge.write_text(judge.read_text().replace('p.add_argument("--seed"',
                                               'p.add_argument("--scale", required=True)\np.add_argument("--seed"'))
    rec = Recording()
    b = Bench(toy, tmp_path, sandbox=rec)
    assert b.evaluate(b.root, "scale").ok
    assert [s.command.split()[-2:] for s in rec.steps if s.kind == "evaluate"] == [["--scale", "test"]] * 2


def test_the_training_command_gets_the_scale_and_its_own_paths(toy, tmp_path):
    rec = Recording()
    b = Bench(toy, tmp_path, sandbox=rec)
    assert b.evaluate(b.root, "train-args").ok
    (first, _) = [s.command.split() for s in rec.steps if s.kind == "train"]
    out = tmp_path / "variants" / "train-args" / "seed-0" / "out"
    assert first[1:] == ["train.py", "--scale", "test", "--seed", "0", "--out", str(out.resolve())]


def test_evaluate_env_reaches_only_the_evaluate_step(toy, tmp_path):
    b = Bench(toy, tmp_path)
    commit = b.variant("print('TRAIN_SEES=' + os.environ.get('TOY_EVAL_ONLY', '<none>'))")
    r = b.evaluate(commit, "env")
    assert r.ok
    assert all(s.metrics["eval_only_env"] == 1.0 for s in r.seeds)  # evaluate got it
    out = (tmp_path / "variants" / "env" / "seed-0" / "train.out").read_text()
    assert "TRAIN_SEES=<none>" in out


def test_training_sees_no_host_secret(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("SCIENTIST_TEST_SECRET", "hunter2")
    b = Bench(toy, tmp_path)
    r = b.evaluate(b.variant(mode="secret"), "secret")
    assert r.ok
    for s in (0, 1):
        out = (tmp_path / "variants" / "secret" / f"seed-{s}" / "train.out").read_text()
        assert "SECRET=<none>" in out and "hunter2" not in out


def test_a_missing_metric_is_a_no_metrics_failure(toy, tmp_path):
    toy.replace_manifest('metric = "neg_mse"', 'metric = "accuracy"')
    b = Bench(toy, tmp_path)
    r = b.evaluate(b.root)
    assert not r.ok and r.mean is None
    assert {s.status for s in r.seeds} == {SEED_NO_METRICS}
    assert "'accuracy'" in r.reason


def test_an_evaluator_that_writes_nothing_is_a_no_metrics_failure(toy, tmp_path):
    ev = toy.path / "evaluate.py"
    ev.write_text(ev.read_text().replace('open(a.metrics, "w")', "open(os.devnull, 'w')"))
    b = Bench(toy, tmp_path)
    r = b.evaluate(b.root)
    assert not r.ok and "no metrics file" in r.reason


@pytest.mark.parametrize("mode, status, reason, stderr", [
    ("crash", SEED_CRASH, "exit status 1", "toy seed crashed on purpose"),
    ("hang", SEED_TIMEOUT, "time limit", None),
    ("hog", SEED_OOM, "MiB", None),
])
def test_misbehaving_training_becomes_a_failed_result(toy, tmp_path, mode, status, reason,
                                                      stderr):
    toy.set_scale(timeout=3, memory_mb=150, training_seeds=1)  # room to start under load
    b = Bench(toy, tmp_path)
    r = b.evaluate(b.variant(mode=mode), mode)
    assert not r.ok and r.mean is None and r.values == []
    (s,) = r.seeds
    assert s.status == status
    assert reason in s.reason
    assert f"seed 0: {status}" in r.reason
    if stderr:
        assert stderr in s.stderr_tail and "Traceback" in s.stderr_tail


def test_one_failing_training_seed_fails_the_variant(toy, tmp_path):
    b = Bench(toy, tmp_path)
    commit = b.variant("if a.seed == 1: raise SystemExit('only seed 1 fails')")
    r = b.evaluate(commit, "half")
    assert [s.status for s in r.seeds] == [SEED_OK, SEED_CRASH]
    assert not r.ok and r.mean is None
    assert "only seed 1 fails" in r.seeds[1].stderr_tail


def test_parallel_workers_keep_seed_order_and_values(toy, tmp_path):
    serial = Bench(toy, tmp_path / "a")
    parallel = Bench(toy, tmp_path / "b", workers=2)
    a, b = serial.evaluate(serial.root), parallel.evaluate(parallel.root)
    assert [s.seed for s in b.seeds] == [0, 1]
    assert b.values == pytest.approx(a.values)


def test_an_interrupted_seed_folder_is_started_afresh(toy, tmp_path):
    b = Bench(toy, tmp_path)
    folder = tmp_path / "variants" / "v" / "seed-0"
    (folder / "work").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"neg_mse": 1e9}))
    r = b.evaluate(b.root)
    assert r.ok and r.mean < 0


def test_read_metrics_problems(tmp_path):
    p = tmp_path / "m.json"
    assert read_metrics(p, "x")[1].startswith("the evaluator wrote no metrics file")
    p.write_text("{not json")
    assert "not valid JSON" in read_metrics(p, "x")[1]
    p.write_text("[1, 2]")
    assert read_metrics(p, "x") == ({}, "metrics file must hold a JSON object")
    p.write_text(json.dumps({"x": True, "y": 2}))
    assert "no number 'x'" in read_metrics(p, "x")[1]
    p.write_text('{"x": NaN}')
    assert "not finite" in read_metrics(p, "x")[1]
    p.write_text(json.dumps({"x": 1, "note": "text"}))
    assert read_metrics(p, "x") == ({"x": 1.0}, "")


FAKE_JSON = """\
def dump(obj, f):
    f.write('{"neg_mse": 1e9}')


def load(f):
    return {"w": 3.0, "b": 1.0}
"""


def test_modules_planted_by_training_do_not_reach_the_evaluator(toy, tmp_path):
    # training leaves a `json.py` next to evaluate.py at run time (nothing of it shows in
    # train.py's diff); `import json` in the pristine evaluator must not pick it up. The
    # default sandbox refuses the write (read-only working copy); the unconfined one lets
    # it through, and the evaluator's fresh export is what keeps it out.
    b = Bench(toy, tmp_path, sandbox=ProcessSandbox())
    text = b.ws.read(b.root, ["train.py"])["train.py"].replace(
        "    args = Args()\n",
        "    args = Args()\n    import shutil; shutil.copy('payload.txt', 'json.py')\n")
    commit = b.ws.commit(b.root, {"train.py": text, "payload.txt": FAKE_JSON}, "v1", "v0001")
    r = b.evaluate(commit, "planted-module")
    assert r.ok and -10 < r.mean < 0, r.seeds[0]
    b.evaluator.sandbox = LocalSandbox()
    confined = b.evaluate(commit, "planted-module-confined")
    assert "Read-only file system: 'json.py'" in confined.seeds[0].stderr_tail


USERCUSTOMIZE = """\
import json
import os
_dump = json.dump


def dump(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and "neg_mse" in obj:
        obj = {**obj, "neg_mse": 1e9}
    return _dump(obj, f, *args, **kwargs)


json.dump = dump
"""


def test_a_user_site_planted_by_training_does_not_reach_the_evaluator(toy, tmp_path):
    # training and evaluation share the step's HOME in the unconfined sandbox (the default
    # one gives each step a private one); a usercustomize module in its user site-packages
    # would run inside the pristine evaluator at start-up
    b = Bench(toy, tmp_path, sandbox=ProcessSandbox())
    plant = ("import site; os.makedirs(site.getusersitepackages(), exist_ok=True); "
             "shutil.copy('payload.txt', os.path.join(site.getusersitepackages(), "
             "'usercustomize.py'))")
    text = b.ws.read(b.root, ["train.py"])["train.py"].replace(
        "    args = Args()\n", f"    args = Args()\n    import shutil; {plant}\n")
    commit = b.ws.commit(b.root, {"train.py": text, "payload.txt": USERCUSTOMIZE}, "v1", "v0001")
    r = b.evaluate(commit, "user-site")
    assert r.ok and -10 < r.mean < 0, r.seeds[0]
    b.evaluator.sandbox = LocalSandbox()
    assert b.evaluate(commit, "user-site-confined").ok


# --- the judge and the learner, the steps' settings, retries, redaction ---------------------


TOYLEARNER = Path(__file__).resolve().parent / "fixtures" / "toylearner"


class Seeded:
    """A private copy of a fixture seed (the `toy` fixture's interface: `.path`)."""

    def __init__(self, src: Path, dst: Path):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        self.path = dst


@pytest.fixture
def learner_seed(tmp_path):
    return Seeded(TOYLEARNER, tmp_path / "toylearner")


class Wrapped:
    """The local sandbox with hooks: `before(step)` runs before each step (it may raise),
    every step is kept, and kill_all calls are counted."""

    def __init__(self, before=None):
        self.inner, self.before, self.steps, self.killed = LocalSandbox(), before, [], 0
        self.name, self.python = self.inner.name, self.inner.python
        self.lock = threading.Lock()

    def run(self, step, cancel=None):
        with self.lock:
            self.steps.append(step)
        if self.before is not None:
            self.before(step)
        return self.inner.run(step, cancel)

    def kill_all(self):
        self.killed += 1
        self.inner.kill_all()

    def kill_leftovers(self):
        return 0


def model_mode(b: Bench, mode: str) -> str:
    text = b.ws.read(b.root, ["model.py"])["model.py"].replace('mode = "normal"', f'mode = "{mode}"')
    b.n += 1
    return b.ws.commit(b.root, {"model.py": text}, f"v{b.n:04d}", f"v{b.n:04d}")


def test_a_judge_and_its_learner_run_as_two_steps_that_share_only_a_socket(learner_seed, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    learner_seed.path.joinpath("seed.toml").write_text(learner_seed.path.joinpath("seed.toml").read_text().replace(
        'evaluate_env = { TOY_EVAL_ONLY = "1" }', f'evaluate_env = {{ TOY_EVAL_ONLY = "1", TOY_DATA = "{data}" }}'))
    sb = Wrapped()
    b = Bench(learner_seed, tmp_path, sandbox=sb)
    b.evaluator.eval_seed = 99
    r = b.evaluator.evaluate(b.root, tmp_path / "variants" / "v0000", seeds=[0])
    assert r.ok and [s.seed for s in r.seeds] == [0], r.seeds[0]
    d = tmp_path / "variants" / "v0000" / "seed-0"
    kinds = {s.kind: s for s in sb.steps}
    assert sorted(kinds) == ["evaluate", "learner", "train"]
    judge_step, learner_step = kinds["evaluate"], kinds["learner"]
    assert judge_step.ipc == learner_step.ipc and judge_step.ipc is not None and not judge_step.ipc.exists()
    assert judge_step.env[SOCKET_ENV] == learner_step.env[SOCKET_ENV] == str(judge_step.ipc / "learner.sock")
    assert (learner_step.ipc_writable, judge_step.ipc_writable) == (True, False)
    assert judge_step.cwd == d / "judge" and judge_step.out == d / "judge-out"
    assert judge_step.outputs == ((d / "metrics.json").resolve(),) and learner_step.outputs == ()
    assert judge_step.env[EVAL_SET_ENV] == "fitness" and judge_step.env[EVAL_SEED_ENV] == "99"
    assert judge_step.env["TOY_DATA"] == str(data) and judge_step.hidden == ()
    assert learner_step.cwd == d / "eval-work" and learner_step.out == d / "learner-out"
    assert learner_step.inputs == ((d / "out").resolve(),)
    assert learner_step.stdout == d / "learner.out" and learner_step.stderr == d / "learner.err"
    assert set(learner_step.env) == {SOCKET_ENV} and learner_step.hidden == (data,)
    assert kinds["train"].hidden == (data,) and kinds["train"].env == {}
    assert not (d / "judge").exists() and not (d / "eval-work").exists()
    assert r.seeds[0].stderr_tail.startswith("[judge]\njudge: 2 learner calls")


def test_the_learner_and_the_judge_speak_in_the_tails(learner_seed, tmp_path):
    b = Bench(learner_seed, tmp_path)
    text = b.ws.read(b.root, ["model.py"])["model.py"] + "\nimport sys\nprint('model says hi')\nprint('model warns', file=sys.stderr)\n"
    commit = b.ws.commit(b.root, {"model.py": text}, "v1", "v0001")
    (s,) = b.evaluator.evaluate(commit, tmp_path / "v", seeds=[0]).seeds
    assert s.stdout_tail.startswith("[judge]\n{") and s.stdout_tail.endswith("[learner]\nmodel says hi")
    assert "\n[learner]\nmodel warns" in s.stderr_tail


@pytest.mark.parametrize("mode, status, reason", [
    ("nan", SEED_VIOLATED, "violated: the learner's 'y' in reply to 'predict' holds 200 non-finite values"),
    ("shape", SEED_VIOLATED, "violated: the learner's 'y' in reply to 'predict' has shape (201,)"),
    ("boom", "crash", "crash: the learner exited before it accepted the judge"),
])
def test_the_judges_verdict_on_the_learner_is_the_seeds_status(learner_seed, tmp_path, mode, status, reason):
    b = Bench(learner_seed, tmp_path)
    (s,) = b.evaluator.evaluate(model_mode(b, mode), tmp_path / mode, seeds=[0]).seeds
    assert s.status == status and s.reason.startswith(reason), s.reason
    assert s.metrics == {}


def test_the_sealed_set_is_scored_in_its_own_folders_and_differs(learner_seed, tmp_path):
    sb = Wrapped()
    b = Bench(learner_seed, tmp_path, sandbox=sb)
    fit = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[1])
    sealed = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[1], eval_set="sealed")
    assert (tmp_path / "v" / "seed-1" / "metrics.json").is_file()
    assert (tmp_path / "v" / "sealed-seed-1" / "metrics.json").is_file()
    assert [s.seed for s in sealed.seeds] == [1]
    assert [s.env[EVAL_SET_ENV] for s in sb.steps if s.kind == "evaluate"] == ["fitness", "sealed"]
    assert fit.mean != sealed.mean


def test_the_runs_secret_seed_decides_the_judges_streams(learner_seed, tmp_path):
    sb = Wrapped()
    b = Bench(learner_seed, tmp_path, sandbox=sb)
    scores = {}
    for seed in (None, 7, 8):
        b.evaluator.eval_seed = seed
        scores[seed] = b.evaluator.evaluate(b.root, tmp_path / f"s{seed}", seeds=[0]).mean
    assert scores[None] == scores[7] != scores[8]  # by hand, the judge's default is 7
    envs = [s.env for s in sb.steps if s.kind == "evaluate"]
    assert EVAL_SEED_ENV not in envs[0] and envs[1][EVAL_SEED_ENV] == "7" and envs[2][EVAL_SEED_ENV] == "8"


def test_a_seed_without_a_learner_runs_its_evaluator_alone(toy, tmp_path):
    sb = Wrapped()
    b = Bench(toy, tmp_path, sandbox=sb)
    b.evaluator.eval_seed = 5
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok
    train, ev = sb.steps
    d = tmp_path / "v" / "seed-0"
    assert (train.kind, ev.kind) == ("train", "evaluate")
    assert ev.env == {"TOY_EVAL_ONLY": "1", EVAL_SET_ENV: "fitness", EVAL_SEED_ENV: "5"} and ev.ipc is None
    assert ev.cwd == d / "eval-work" and ev.out == d / "out" and ev.outputs == ((d / "metrics.json").resolve(),)
    assert train.cwd == d / "work" and train.out == d / "out" and train.outputs == () and train.env == {}
    assert train.stdout == d / "train.out" and ev.stderr == d / "evaluate.err"
    assert (train.timeout, train.memory_mb, ev.timeout, ev.memory_mb) == (20, 400, 20, 400)
    assert f"--seed 0 --out {(d / 'out').resolve()}" in train.command
    assert f"--metrics {(d / 'metrics.json').resolve()}" in ev.command


def test_relative_or_missing_data_paths_are_not_hidden(toy, tmp_path):
    toy.replace_manifest('evaluate_env = { TOY_EVAL_ONLY = "1" }',
                         f'evaluate_env = {{ TOY_EVAL_ONLY = "1", A = "rel/path", B = "{tmp_path / "nope"}" }}')
    sb = Wrapped()
    b = Bench(toy, tmp_path, sandbox=sb)
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok
    assert sb.steps[0].hidden == ()


def test_a_failed_training_is_not_scored_and_keeps_its_tails(toy, tmp_path):
    sb = Wrapped()
    b = Bench(toy, tmp_path, sandbox=sb)
    commit = b.variant("print('about to fail'); raise SystemExit('training gave up')")
    (s,) = b.evaluator.evaluate(commit, tmp_path / "v", seeds=[0]).seeds
    assert [x.kind for x in sb.steps] == ["train"]
    assert s.status == SEED_CRASH and s.reason == "train failed: exit status 1"
    assert s.stdout_tail == "about to fail\n" and s.stderr_tail == "training gave up\n"
    assert s.metrics == {} and s.eval_seconds == 0.0 and s.train_seconds > 0


def test_a_failed_evaluation_is_the_seeds_failure(toy, tmp_path):
    ev = toy.path / "evaluate.py"
    ev.write_text(ev.read_text() + "\nraise SystemExit(4)\n")
    b = Bench(toy, tmp_path)
    (s,) = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).seeds
    assert s.status == SEED_CRASH and s.reason == "evaluate failed: exit status 4"
    assert s.metrics == {} and s.eval_seconds > 0 and s.stdout_tail.startswith("neg_mse=")


def test_on_seed_hears_of_each_seed_as_it_ends(toy, tmp_path):
    b = Bench(toy, tmp_path)
    heard = []
    r = b.evaluator.evaluate(b.root, tmp_path / "v", on_seed=heard.append, seeds=[1, 0])
    assert [s.seed for s in r.seeds] == [1, 0] and heard == r.seeds


def test_secrets_a_step_prints_are_redacted_everywhere_they_are_kept(toy, tmp_path):
    secret = "planted-secret-4242"
    b = Bench(toy, tmp_path)
    b.evaluator.redactor = Redactor((secret,))
    commit = b.variant(f"print('{secret}'); print('{secret}', file=sys.stderr); raise SystemExit('{secret}')")
    (s,) = b.evaluator.evaluate(commit, tmp_path / "v", seeds=[0]).seeds
    d = tmp_path / "v" / "seed-0"
    assert (d / "train.out").read_text() == "[redacted]\n"
    assert (d / "train.err").read_text() == "[redacted]\n[redacted]\n"
    assert s.stdout_tail == "[redacted]\n" and secret not in s.stderr_tail
    assert all(secret not in x for x in (s.reason, s.stdout_tail, s.stderr_tail))


def test_score_scores_an_existing_training_output(toy, tmp_path):
    secret = "neg_mse="  # what the evaluator prints: redacted in the score's tails too
    sb = Wrapped()
    b = Bench(toy, tmp_path, sandbox=sb)
    b.evaluator.evaluate(b.root, tmp_path / "trained", seeds=[0])
    b.evaluator.redactor = Redactor((secret,))
    out = tmp_path / "trained" / "seed-0" / "out"
    s = b.evaluator.score(b.root, 3, tmp_path / "scored" / "deep", out)
    assert s.ok and s.seed == 3 and s.metrics["neg_mse"] < 0
    assert (tmp_path / "scored" / "deep" / "metrics.json").is_file()
    assert s.stdout_tail.startswith("[redacted]")
    assert sb.steps[-1].kind == "evaluate" and sb.steps[-1].env[EVAL_SET_ENV] == "fitness"
    again = b.evaluator.score(b.root, 3, tmp_path / "scored" / "deep", out, eval_set="sealed")  # same folder
    assert again.metrics == s.metrics and sb.steps[-1].env[EVAL_SET_ENV] == "sealed"


def sandbox_failing(n: int, error: Exception, kinds=("train",)):
    """A sandbox whose first `n` steps of these kinds raise `error`."""
    count = {"n": 0}

    def before(step):
        if step.kind in kinds and count["n"] < n:
            count["n"] += 1
            raise error

    return Wrapped(before)


class Sleeps:
    def __init__(self):
        self.calls = []

    def sleep(self, s):
        self.calls.append(s)


@pytest.mark.parametrize("failures, ok", [(0, True), (1, True), (2, True), (3, False)])
def test_a_failing_sandbox_is_tried_again_then_the_error_goes_up(toy, tmp_path, monkeypatch, failures, ok):
    clock = Sleeps()
    monkeypatch.setattr(evaluator_mod, "time", SimpleNamespace(sleep=clock.sleep))
    sb = sandbox_failing(failures, SandboxError("bubblewrap broke"))
    b = Bench(toy, tmp_path, sandbox=sb)
    b.evaluator.infra_wait = 5.0
    if ok:
        assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok
    else:
        with pytest.raises(SandboxError, match="bubblewrap broke"):
            b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0])
    assert clock.calls == [5.0, 10.0][:min(failures, 2)]
    assert [s.kind for s in sb.steps].count("train") == min(failures + 1, 3)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_the_sandboxs_failure(toy, tmp_path, monkeypatch, code):
    monkeypatch.setattr(evaluator_mod, "time", SimpleNamespace(sleep=lambda s: None))
    sb = sandbox_failing(5, OSError(code, "No space left on device"))
    b = Bench(toy, tmp_path, sandbox=sb)
    with pytest.raises(SandboxError, match=r"^the disk is full \(\[Errno \d+\] No space left on device\); free space"):
        b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0])
    assert len(sb.steps) == 3  # tried again like any sandbox failure


@pytest.mark.parametrize("free, mode, fails", [
    (DISK_FULL_BYTES - 1, "crash", True),    # a crash on a full disk: the disk's fault
    (DISK_FULL_BYTES, "crash", False),       # room enough: the variant's crash
    (DISK_FULL_BYTES - 1, "normal", False),  # little room, but nothing failed
])
def test_a_step_that_crashes_with_the_disk_full_is_the_sandboxs_failure(toy, tmp_path, monkeypatch, free,
                                                                        mode, fails):
    monkeypatch.setattr(evaluator_mod, "_free_bytes", lambda path: free)
    toy.set_scale(training_seeds=1)
    b = Bench(toy, tmp_path)
    b.evaluator.infra_retries = 0
    commit = b.variant(mode=mode)
    out = tmp_path / "variants" / mode / "seed-0" / "out"
    if fails:
        with pytest.raises(SandboxError) as e:
            b.evaluate(commit, mode)
        assert str(e.value) == f"the disk holding {out} is full; free space and resume the run"
    else:
        r = b.evaluate(commit, mode)
        assert [s.status for s in r.seeds] == [SEED_CRASH if mode == "crash" else SEED_OK]


def test_other_os_errors_are_not_disguised(toy, tmp_path):
    sb = sandbox_failing(1, OSError(errno.EACCES, "Permission denied"))
    b = Bench(toy, tmp_path, sandbox=sb)
    with pytest.raises(PermissionError):
        b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0])
    assert len(sb.steps) == 1


def test_a_failing_learner_sandbox_is_the_sandboxs_failure(learner_seed, tmp_path):
    sb = sandbox_failing(1, SandboxError("no learner sandbox"), kinds=("learner",))
    b = Bench(learner_seed, tmp_path, sandbox=sb)
    b.evaluator.infra_retries = 0
    with pytest.raises(SandboxError, match="no learner sandbox"):
        b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0])


def test_ctrl_c_with_parallel_seeds_kills_the_running_steps(toy, tmp_path):
    def before(step):
        if step.kind == "train" and "seed-1" in str(step.out):
            raise KeyboardInterrupt

    sb = Wrapped(before)
    b = Bench(toy, tmp_path, workers=2, sandbox=sb)
    with pytest.raises(KeyboardInterrupt):
        b.evaluator.evaluate(b.root, tmp_path / "v")
    assert sb.killed >= 1


def test_parallel_workers_run_at_most_that_many_seeds_at_once(toy, tmp_path):
    class Counts(Wrapped):
        active = most = 0

        def run(self, step, cancel=None):
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                time.sleep(0.2)  # long enough that seeds allowed to overlap do
                return super().run(step, cancel)
            finally:
                with self.lock:
                    self.active -= 1

    sb = Counts()
    b = Bench(toy, tmp_path, workers=2, sandbox=sb)
    r = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0, 1, 2])
    assert r.ok and [s.seed for s in r.seeds] == [0, 1, 2]
    assert sb.most <= 2


def test_ctrl_c_also_kills_a_step_a_worker_starts_after_the_first_kill(toy, tmp_path):
    # seed 0's training is running when seed 1 is interrupted; killed, it returns, and its worker
    # starts the evaluation step: that one must be killed too, not awaited
    started, released = threading.Event(), []

    class Race(Wrapped):
        def run(self, step, cancel=None):
            with self.lock:
                self.steps.append(step)
            if "seed-1" in str(step.out):
                if step.kind == "train":
                    started.wait(30)
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while the orchestrator awaits seed 0
                return self.inner.run(step, cancel)
            kills = self.killed
            done = self.inner.run(step, cancel)
            started.set()
            for _ in range(300):  # the step lasts until a kill_all after it started, at most 30 s
                if self.killed > kills:
                    break
                time.sleep(0.1)
            released.append((step.kind, self.killed > kills))
            return done

    sb = Race()
    b = Bench(toy, tmp_path, workers=2, sandbox=sb)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a runner may have its own
    try:
        with pytest.raises(KeyboardInterrupt):
            b.evaluator.evaluate(b.root, tmp_path / "v")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert released == [("train", True), ("evaluate", True)]


def test_the_pristine_files_are_checked_against_their_recorded_hashes(toy, tmp_path):
    b = Bench(toy, tmp_path)
    files = b.evaluator.pristine()
    assert sorted(files) == ["evaluate.py", "seed.toml"]
    import hashlib

    b.evaluator.pristine_sha256 = {p: hashlib.sha256(x).hexdigest() for p, x in files.items()}
    assert b.evaluator.pristine() == files
    b.evaluator.pristine_sha256 = {**b.evaluator.pristine_sha256, "seed.toml": "0" * 64}
    with pytest.raises(ScientistError) as e:
        b.evaluator.evaluate(b.root, tmp_path / "v")
    assert str(e.value) == ("the pristine evaluator in the run's repository is not the one recorded when the run "
                            "was made (seed.toml changed); the run folder was modified: this run's results cannot "
                            "be trusted")
    b.evaluator.pristine_sha256 = {"evaluate.py": "1" * 64}
    with pytest.raises(ScientistError, match=r"\(evaluate.py, seed.toml changed\)"):
        b.evaluator.pristine()


def test_tails_are_the_last_characters(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"abc\xffdef")
    assert tail(p) == "abc\ufffddef"
    assert tail(p, 3) == "def"
    assert tail(p, 100) == "abc\ufffddef"
    assert tail(tmp_path / "missing") == ""
    p.write_text("x" * 5000)
    assert tail(p) == "x" * 3000


def test_tails_of_two_steps_are_joined_with_their_names():
    assert _join("judge", "a\nb\n\n", "learner", "c\n") == "[judge]\na\nb\n[learner]\nc"
    assert _join("judge", "  \n", "learner", "c") == "[learner]\nc"
    assert _join("judge", "a", "learner", "") == "[judge]\na"
    assert _join("judge", "", "learner", " ") == ""


@pytest.mark.parametrize("text, verdict", [
    ('{"harness": {"status": "violated", "reason": "bad"}}', ("violated", "bad")),
    ('{"harness": {"status": "ok"}}', ("ok", "")),
    ('{"harness": {"status": "crash", "reason": 5}}', ("crash", "5")),
    ('{"harness": {"status": 3}}', None),
    ('{"harness": "ok"}', None),
    ('{"neg_mse": 1}', None),
    ("[1, 2]", None),
    ("not json", None),
    (None, None),
])
def test_read_verdict(tmp_path, text, verdict):
    p = tmp_path / "m.json"
    if text is not None:
        p.write_text(text)
    assert read_verdict(p) == verdict


def test_free_bytes(tmp_path):
    assert _free_bytes(tmp_path) > 0
    assert _free_bytes(tmp_path / "does-not-exist") == 1 << 62


def test_a_seed_job_runs_once_in_its_folder_with_its_gpus(learner_seed, tmp_path):
    # the scheduler's unit of work: one training seed, its own folder, the GPUs it was given
    sb = Wrapped()
    b = Bench(learner_seed, tmp_path, sandbox=sb)
    b.evaluator.threads = 3
    s = b.evaluator.run_seed(b.root, 3, tmp_path / "job", gpus=("1",))
    assert s.ok and s.seed == 3 and s.metrics["neg_mse"] < 0
    assert (tmp_path / "job" / "metrics.json").is_file() and not (tmp_path / "job" / "seed-3").exists()
    assert [(st.kind, st.gpus, st.threads) for st in sb.steps] == [
        ("train", ("1",), 3), ("learner", ("1",), 3), ("evaluate", ("1",), 3)]
    assert sb.steps[-1].env[EVAL_SET_ENV] == "fitness"
    fit = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[3]).seeds[0]
    assert fit.metrics == s.metrics  # the same seed's job as evaluate runs it
    sealed = b.evaluator.run_seed(b.root, 3, tmp_path / "sealed-job", eval_set="sealed")
    assert sb.steps[-1].env[EVAL_SET_ENV] == "sealed" and sb.steps[-1].gpus is None
    assert sealed.metrics != s.metrics


def test_the_socket_folder_is_short_named_in_the_system_temporary_folder_and_removed(learner_seed, tmp_path):
    import tempfile

    sb = Wrapped()
    b = Bench(learner_seed, tmp_path / ("deep" * 30), sandbox=sb)  # the run's folder may be long
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok
    (ipc,) = {st.ipc for st in sb.steps if st.ipc is not None}
    assert ipc.parent == Path(tempfile.gettempdir()) and ipc.name.startswith("scientist-ipc-")
    assert len(str(ipc / "learner.sock")) < 100  # a Unix socket's path is limited to about 100 bytes
    assert not ipc.exists()


def test_the_learner_is_ended_when_the_judge_is_done(learner_seed, tmp_path):
    # a learner whose code lingers after the judge hung up (a thread, an atexit hook) must not
    # hold the seed until its time limit: its step gets a cancel event, set when the judge ends
    class Cancels(Wrapped):
        def run(self, step, cancel=None):
            if step.kind == "learner":
                self.cancel = cancel
            return super().run(step, cancel)

    sb = Cancels()
    b = Bench(learner_seed, tmp_path, sandbox=sb)
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok
    assert isinstance(sb.cancel, threading.Event) and sb.cancel.is_set()


def learner_timing_out(tmp_path, then):
    """A sandbox whose learner step ends at its time limit without running; `then(metrics)`
    runs after the judge's step, to stand for what the judge wrote."""
    from scientist.sandbox import StepOutcome

    class LearnerTimesOut(Wrapped):
        def run(self, step, cancel=None):
            if step.kind == "learner":
                return StepOutcome("timeout", None, 60.0, 4321.0, "time limit of 60 s reached")
            done = super().run(step, cancel)
            if step.kind == "evaluate":
                then(tmp_path / "v" / "seed-0" / "metrics.json")
            return done

    return LearnerTimesOut()


@pytest.mark.parametrize("judge_wrote", ["crash", "timeout", None])
def test_a_learner_ended_at_its_time_limit_is_a_timeout_whatever_the_judge_saw(learner_seed, tmp_path,
                                                                             judge_wrote):
    # the sandbox ends the learner at its limit; the judge then finds no learner (a crash to it),
    # or sees it stop answering (a timeout), or is itself ended before it writes a verdict
    def judge(metrics):
        assert read_verdict(metrics)[0] == "crash"  # what this judge saw
        if judge_wrote is None:
            metrics.unlink()
        elif judge_wrote != "crash":
            metrics.write_text(json.dumps({"harness": {"status": judge_wrote, "reason": "no answer"}}))

    b = Bench(learner_seed, tmp_path, sandbox=learner_timing_out(tmp_path, judge))
    (s,) = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).seeds
    assert (s.status, s.reason) == (SEED_TIMEOUT, "timeout: the learner: time limit of 60 s reached")
    assert s.peak_rss_mb == 4321.0  # the learner's, the largest of the seed's steps


def test_a_learner_that_broke_the_protocol_before_its_time_limit_is_a_violation(learner_seed, tmp_path):
    # the judge's verdict on what the learner did stands, even if the learner also ran out of time
    def judge(metrics):
        metrics.write_text(json.dumps({"harness": {"status": "violated", "reason": "a reply of the wrong shape"}}))

    b = Bench(learner_seed, tmp_path, sandbox=learner_timing_out(tmp_path, judge))
    (s,) = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).seeds
    assert (s.status, s.reason) == (SEED_VIOLATED, "violated: a reply of the wrong shape")


def test_protected_files_in_nested_folders_are_written_with_their_folders(tmp_path):
    _write(tmp_path / "judge", {"lib/metrics/score.py": b"x = 1\n", "evaluate.py": b"y = 2\n"})
    assert (tmp_path / "judge" / "lib" / "metrics" / "score.py").read_bytes() == b"x = 1\n"
    assert (tmp_path / "judge" / "evaluate.py").read_bytes() == b"y = 2\n"


def refuse_to_remove(monkeypatch, held) -> None:
    """shutil.rmtree in the evaluator, failing for folders `held(name)` picks (someone else still
    holds them) unless told to ignore errors."""
    rmtree = shutil.rmtree

    def stubborn(path, ignore_errors=False):
        if held(Path(path).name):
            if not ignore_errors:
                raise PermissionError(f"cannot remove {path}")
            return
        rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(evaluator_mod.shutil, "rmtree", stubborn)


def test_a_socket_folder_that_cannot_be_removed_does_not_fail_the_seed(learner_seed, tmp_path, monkeypatch):
    refuse_to_remove(monkeypatch, lambda name: name.startswith("scientist-ipc-"))
    b = Bench(learner_seed, tmp_path)
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok


def test_an_evaluation_copy_that_cannot_be_removed_does_not_fail_the_seed(toy, tmp_path, monkeypatch):
    # under Docker the judge's files in its copy belong to the sandbox's user
    refuse_to_remove(monkeypatch, lambda name: name == "eval-work")
    b = Bench(toy, tmp_path)
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok


def test_a_training_copy_that_cannot_be_removed_does_not_fail_the_seed(toy, tmp_path, monkeypatch):
    refuse_to_remove(monkeypatch, lambda name: name == "work")
    b = Bench(toy, tmp_path)
    assert b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).ok


def test_a_seeds_peak_memory_is_its_largest_steps_training_included(toy, tmp_path):
    from dataclasses import replace

    class BigTraining(Wrapped):
        def run(self, step, cancel=None):
            done = super().run(step, cancel)
            return replace(done, peak_rss_mb=9999.0) if step.kind == "train" else done

    b = Bench(toy, tmp_path, sandbox=BigTraining())
    (s,) = b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0]).seeds
    assert s.ok and s.peak_rss_mb == 9999.0


def test_a_seed_job_without_a_learner_gives_its_gpus_to_the_evaluator_too(toy, tmp_path):
    sb = Wrapped()
    b = Bench(toy, tmp_path, sandbox=sb)
    assert b.evaluator.run_seed(b.root, 3, tmp_path / "job", gpus=("0", "2")).ok
    assert [(st.kind, st.gpus) for st in sb.steps] == [("train", ("0", "2")), ("evaluate", ("0", "2"))]


def test_a_framework_error_in_the_learners_thread_is_raised_not_blamed_on_the_variant(learner_seed, tmp_path):
    # it was printed by the thread, the judge found no learner, and the variant was called a crash
    def broken(step):
        if step.kind == "learner":
            raise RuntimeError("a bug in the learner's step")

    b = Bench(learner_seed, tmp_path, sandbox=Wrapped(broken))
    with pytest.raises(RuntimeError, match="a bug in the learner's step"):
        b.evaluator.evaluate(b.root, tmp_path / "v", seeds=[0])
