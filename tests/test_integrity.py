"""Hostile variants against the real seeds' judges, in the real sandboxes (issue 12).

For each seed with a stealer in `tests/hostile.py`: the honest baseline is trained once at
the `test` scale; then a variant whose editable model file carries the stealer is scored on
that very checkpoint, in the local sandbox and in Docker. The judge must give it exactly the
honest fitness (every theft failed, and the stealer otherwise computes what the honest code
does). The same stealer run with its learner inside the judge's process (tests/inprocess.py,
the boundary removed on purpose) must forge the fitness: the attack is real, and the process
boundary is what stops it.

The protocol attacks (NaN, wrong shapes, a huge reply, garbage bytes, a hang, forged metrics on
stdout) are learner-side and the same for every seed; they run against vsml's judge, and each
must be caught with a clear reason (violated, or timeout) or, for the printout, ignored.

Docker needs a daemon and a current image: skipped without them, a failure with
SCIENTIST_REQUIRE_DOCKER=1 (CI). The seeds' data and packages: skipped without them, a
failure with SCIENTIST_STRICT=1 (CI).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import hostile
from scientist.errors import ScientistError
from scientist.evaluator import Evaluator
from scientist.sandbox import make_sandbox
from scientist.seed import SEEDS_DIR, Seed, load_seed
from scientist.variant import SEED_OK, SEED_TIMEOUT, SEED_VIOLATED, SeedResult
from scientist.workspace import Workspace

HERE = Path(__file__).resolve().parent
STRICT = os.environ.get("SCIENTIST_STRICT") == "1"
SANDBOXES = ("local", "docker")


def need(ok: bool, why: str) -> None:
    if not ok:
        (pytest.fail if STRICT else pytest.skip)(why + (" (SCIENTIST_STRICT=1)" if STRICT else ""))


def sandbox(name: str, label: str):
    if name == "local":
        return make_sandbox("local", label=label)
    from scientist.image import client, status

    try:
        st = status(client())
        if not (st.present and st.current):
            raise ScientistError(st.describe())
    except ScientistError as e:
        if os.environ.get("SCIENTIST_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SCIENTIST_REQUIRE_DOCKER=1 but: {e}")
        pytest.skip(f"Docker sandbox unavailable: {e}")
    return make_sandbox("docker", label=label)


@dataclass
class Trained:
    """A seed's run repository with the honest baseline trained once at `test` scale."""

    seed: Seed
    workspace: Workspace
    base: str  # the baseline commit
    out: Path  # its training output (training seed 0)
    honest: SeedResult
    root: Path

    def evaluator(self, sandbox_name: str, label: str, timeout: float | None = None) -> Evaluator:
        scale = self.seed.scale("test")
        if timeout is not None:
            scale = type(scale)(**{**scale.__dict__, "timeout": timeout})
        return Evaluator(self.seed, scale, self.workspace, sandbox(sandbox_name, label), self.base,
                         eval_seed=12345)

    def variant(self, name: str, file: str, code: str) -> str:
        """A commit of the baseline with `code` appended to the editable `file`."""
        text = self.workspace.read(self.base, [file])[file]
        return self.workspace.commit(self.base, {file: text + "\n" + code}, name, name)

    def score(self, commit: str, sandbox_name: str, tag: str, timeout: float | None = None) -> SeedResult:
        ev = self.evaluator(sandbox_name, tag, timeout)
        return ev.score(commit, 0, self.root / f"{tag}-{sandbox_name}", self.out)


_TRAINED: dict[str, Trained] = {}


def trained(name: str, tmp_path_factory) -> Trained:
    if name in _TRAINED:
        return _TRAINED[name]
    seed = load_seed(name)
    for k, v in seed.evaluate_env.items():
        need(not os.path.isabs(v) or os.path.exists(v), f"{name} needs {k}={v}")
    root = tmp_path_factory.mktemp(f"integrity-{name}")
    ws = Workspace.create(root / "repo", seed)
    base = ws.head_of("v0000")
    ev = Evaluator(seed, seed.scale("test"), ws, make_sandbox("local", label=f"it-{name}"), base,
                   eval_seed=12345)
    result = ev.evaluate(base, root / "v0000", seeds=[0])
    (honest,) = result.seeds
    need(honest.ok, f"{name}'s honest baseline must train and score at test scale: "
         f"{honest.status}: {honest.reason}\n{honest.stderr_tail[-1500:]}")
    _TRAINED[name] = Trained(seed, ws, base, root / "v0000" / "seed-0" / "out", honest, root)
    return _TRAINED[name]


def inprocess_fitness(t: Trained, commit: str, tmp: Path) -> float:
    """The variant at `commit` scored with its learner inside the judge's process."""
    folder = tmp / "inprocess"
    t.workspace.export(commit, folder)
    metrics = tmp / "inprocess-metrics.json"
    learner = t.seed.learner_command.format(python="", scale="test", seed=0, out=t.out).split()
    evaluate = t.seed.evaluate_command.format(python="", scale="test", seed=0, out=t.out,
                                              metrics=metrics).split()
    env = {**os.environ, **t.seed.evaluate_env, "SCIENTIST_EVAL_SEED": "12345"}
    p = subprocess.run([sys.executable, str(HERE / "inprocess.py"), str(folder), *learner[1:], "--",
                        *evaluate[1:]], cwd=folder, env=env, capture_output=True, text=True,
                       timeout=600)
    assert metrics.is_file(), p.stderr[-3000:]
    return json.loads(metrics.read_text())[t.seed.metric]


@pytest.mark.parametrize("name", sorted(hostile.STEALER))
def test_a_stealer_is_potent_when_it_shares_the_judges_process(name, tmp_path_factory, tmp_path):
    t = trained(name, tmp_path_factory)
    file, code = hostile.STEALER[name]
    forged = inprocess_fitness(t, t.variant("stealer", file, code), tmp_path)
    honest = t.honest.metrics[t.seed.metric]
    assert forged != honest, "the stealer is not a test: it forges nothing even in-process"
    better = forged > honest if t.seed.maximize else forged < honest
    assert better, (forged, honest)


@pytest.mark.parametrize("sandbox_name", SANDBOXES)
@pytest.mark.parametrize("name", sorted(hostile.STEALER))
def test_a_stealer_gets_exactly_the_honest_fitness(name, sandbox_name, tmp_path_factory):
    t = trained(name, tmp_path_factory)
    file, code = hostile.STEALER[name]
    r = t.score(t.variant("stealer", file, code), sandbox_name, "stealer")
    assert r.status == SEED_OK, (r.status, r.reason, r.stderr_tail[-2000:])
    assert "hostile:" in r.stderr_tail, "the stealer did not run in the learner"
    assert r.metrics[t.seed.metric] == t.honest.metrics[t.seed.metric], r.stderr_tail[-2000:]
    assert "harness" not in r.metrics  # the judge's verdict is read, not kept as a metric


@pytest.mark.parametrize("sandbox_name", SANDBOXES)
@pytest.mark.parametrize("attack", ["nan", "wrong-shape", "huge", "garbage"])
def test_a_learner_breaking_the_protocol_is_a_violation(attack, sandbox_name, tmp_path_factory):
    t = trained("vsml", tmp_path_factory)
    r = t.score(t.variant(attack, "vsml.py", hostile.PROTOCOL[attack]), sandbox_name, attack)
    assert r.status == SEED_VIOLATED, (r.status, r.reason)
    assert "violated:" in r.reason and "learner" in r.reason, r.reason
    assert not r.metrics


@pytest.mark.parametrize("sandbox_name", SANDBOXES)
def test_a_hanging_learner_times_out(sandbox_name, tmp_path_factory):
    t = trained("vsml", tmp_path_factory)
    r = t.score(t.variant("hang", "vsml.py", hostile.PROTOCOL["hang"]), sandbox_name, "hang",
                timeout=20)
    assert r.status == SEED_TIMEOUT, (r.status, r.reason)
    assert "time limit" in r.reason


@pytest.mark.parametrize("sandbox_name", SANDBOXES)
def test_a_learner_ended_at_its_time_limit_is_a_timeout_not_a_crash(sandbox_name, tmp_path_factory):
    """The learner starts first, so its limit can fall first: the judge then sees it exit and
    says "crash" before its own limit (CI saw this race). The cause is the time limit; here
    the learner's limit is made to fall 15 s before the judge's."""
    t = trained("vsml", tmp_path_factory)
    ev = t.evaluator(sandbox_name, "hang-first", timeout=30)
    real = ev.sandbox.run

    def run(step, cancel=None):
        if step.kind == "learner":
            step = replace(step, timeout=15)
        return real(step, cancel)

    ev.sandbox.run = run
    commit = t.variant("hang-first", "vsml.py", hostile.PROTOCOL["hang"])
    r = ev.score(commit, 0, t.root / f"hang-first-{sandbox_name}", t.out)
    assert r.status == SEED_TIMEOUT, (r.status, r.reason)
    assert "time limit" in r.reason and "learner" in r.reason


@pytest.mark.parametrize("sandbox_name", SANDBOXES)
def test_forged_metrics_on_stdout_are_ignored(sandbox_name, tmp_path_factory):
    t = trained("vsml", tmp_path_factory)
    r = t.score(t.variant("print", "vsml.py", hostile.PROTOCOL["print-forged"]), sandbox_name, "print")
    assert r.status == SEED_OK and '"online_acc": 0.99' in r.stdout_tail
    assert r.metrics["online_acc"] == t.honest.metrics["online_acc"]


def test_the_fitness_streams_depend_on_the_runs_secret_seed(tmp_path_factory):
    t = trained("vsml", tmp_path_factory)
    other = t.evaluator("local", "secret")
    other.eval_seed = 777
    r = other.score(t.base, 0, t.root / "other-secret", t.out)
    assert r.ok and r.metrics["online_acc"] != t.honest.metrics["online_acc"]
    same = t.score(t.base, "local", "same-secret")
    assert same.metrics["online_acc"] == t.honest.metrics["online_acc"]
    assert math.isfinite(same.metrics["holdout_online_acc"])


def test_the_sealed_set_is_scored_apart(tmp_path_factory):
    t = trained("vsml", tmp_path_factory)
    ev = t.evaluator("local", "sealed")
    r = ev.score(t.base, 0, t.root / "sealed", t.out, eval_set="sealed")
    assert r.ok, r.reason
    assert "online_acc" in r.metrics and "holdout_online_acc" not in r.metrics
    assert r.metrics["online_acc"] != t.honest.metrics["online_acc"]


def test_the_judge_runs_where_the_variants_code_is_not(tmp_path_factory):
    """The judge's folder holds the protected files only: importing the model file fails."""
    t = trained("vsml", tmp_path_factory)
    spy = ("import os, sys\nprint('JUDGE-SEES', sorted(os.listdir('.')), file=sys.stderr)\n")
    evaluate = t.workspace.read(t.base, ["evaluate.py"])["evaluate.py"]
    ws = t.workspace
    c = ws.commit(t.base, {"evaluate.py": spy + evaluate}, "spy", "spy-judge")
    ev = Evaluator(t.seed, t.seed.scale("test"), ws, make_sandbox("local", label="spy"), c,
                   eval_seed=12345)
    r = ev.score(c, 0, t.root / "spy", t.out)
    line = next(x for x in r.stderr_tail.splitlines() if "JUDGE-SEES" in x)
    assert "'evaluate.py'" in line and "'vsml.py'" not in line and "'train.py'" not in line


def test_seeds_with_a_learner_protect_it():
    for d in sorted(SEEDS_DIR.glob("*/seed.toml")):
        seed = load_seed(d.parent)
        if seed.learner_command:
            assert "learner.py" in seed.protected, seed.name
            assert (seed.path / "learner.py").is_file(), seed.name


def teardown_module(module):
    for t in _TRAINED.values():
        shutil.rmtree(t.root, ignore_errors=True)
    _TRAINED.clear()
