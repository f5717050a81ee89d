"""Evaluator: the pristine evaluator scores every variant; failures become Results."""

from __future__ import annotations

import json
import re

import pytest

from scientist.evaluator import Evaluator, read_metrics
from scientist.process_sandbox import ProcessSandbox
from scientist.sandbox import LocalSandbox
from scientist.seed import load_seed
from scientist.variant import SEED_CRASH, SEED_NO_METRICS, SEED_OK, SEED_OOM, SEED_TIMEOUT
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
    assert "JSON object" in read_metrics(p, "x")[1]
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
