"""Integrity labels (clean / suspicious / violated), on the toy seed with a judge and a learner.

The toy learner seed (tests/fixtures/toylearner) is pure Python plus NumPy: its learner serves
model.py's predictions, its judge scores them. `model.mode` makes the learner reply NaN, the
wrong shape, or an exact answer no honest training reaches.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from conftest import make_console
from scientist.config import RunConfig
from scientist.editblocks import Edit
from scientist.errors import SeedError
from scientist.integrity import label
from scientist.report import gather
from scientist.run import Run
from scientist.seed import load_seed, parse_manifest
from scientist.variant import (CLEAN, SEED_OK, SEED_VIOLATED, SUSPICIOUS, VIOLATED, Proposal,
                               Result, SeedResult)

TOYLEARNER = Path(__file__).resolve().parent / "fixtures" / "toylearner"


@pytest.fixture
def toylearner(tmp_path: Path) -> Path:
    dst = tmp_path / "toylearner"
    shutil.copytree(TOYLEARNER, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def result(*values: float, metrics: dict | None = None, violated: bool = False) -> Result:
    seeds = [SeedResult(i, SEED_OK, metrics={"neg_mse": v, **(metrics or {})})
             for i, v in enumerate(values)]
    if violated:
        seeds.append(SeedResult(len(seeds), SEED_VIOLATED, "violated: the learner's 'y' has shape (16,)"))
    return Result(seeds, "neg_mse")


def test_labels_follow_the_seeds_integrity_table():
    seed = load_seed(TOYLEARNER)
    assert label(result(-0.1, -0.2, metrics={"holdout_neg_mse": -0.2}), seed) == (CLEAN, "")
    past, why = label(result(0.0, 0.0, metrics={"holdout_neg_mse": 0.0}), seed)
    assert past == SUSPICIOUS and "ceiling" in why
    gap, why = label(result(-0.1, metrics={"holdout_neg_mse": -1.9}), seed)
    assert gap == SUSPICIOUS and "holdout_neg_mse" in why
    # a gap the other way (held-out better than the fitness) is not suspicious
    assert label(result(-1.9, metrics={"holdout_neg_mse": -0.1}), seed)[0] == CLEAN
    bad, why = label(result(-0.1, violated=True), seed)
    assert bad == VIOLATED and "shape (16,)" in why


def test_a_minimised_fitness_is_suspicious_below_its_ceiling(toylearner):
    text = (toylearner / "seed.toml").read_text().replace('direction = "max"', 'direction = "min"')
    text = text.replace("ceiling = -0.0001", "ceiling = 0.01")
    (toylearner / "seed.toml").write_text(text)
    seed = load_seed(toylearner)
    assert label(result(0.001, metrics={"holdout_neg_mse": 0.001}), seed)[0] == SUSPICIOUS
    assert label(result(0.05, metrics={"holdout_neg_mse": 0.05}), seed)[0] == CLEAN
    assert label(result(0.05, metrics={"holdout_neg_mse": 1.6}), seed)[0] == SUSPICIOUS


def test_a_scale_may_set_its_own_thresholds_over_the_seeds():
    """A gap calibrated on many lanes is noise on a tiny scale: `[scales.NAME.integrity]`
    overrides the fields it names there, and the others (and other scales) keep the seed's."""
    import tomllib

    raw = tomllib.loads((TOYLEARNER / "seed.toml").read_text())
    raw["scales"]["tiny"] = dict(raw["scales"]["test"], integrity={"max_gap": 50.0})
    seed = parse_manifest(raw, TOYLEARNER)
    wide = result(-0.1, metrics={"holdout_neg_mse": -1.9})
    assert label(wide, seed, "tiny") == (CLEAN, "")
    assert label(wide, seed, "test")[0] == SUSPICIOUS
    assert label(wide, seed)[0] == SUSPICIOUS
    # the ceiling is not overridden there: still the seed's
    assert label(result(0.0, metrics={"holdout_neg_mse": 0.0}), seed, "tiny")[0] == SUSPICIOUS
    raw["scales"]["tiny"]["integrity"] = {"max_gap": -2}
    with pytest.raises(SeedError, match="scales.tiny.integrity.max_gap"):
        parse_manifest(raw, TOYLEARNER)


def test_the_gla_seed_does_not_call_its_own_baseline_suspicious_at_test_scale():
    """CI saw gla's unmodified seed at test scale (2 lanes of 64 steps) beat its held-out lanes
    by 8.5 and stop the run; smoke keeps the calibrated gap."""
    seed = load_seed("gla")
    noisy = {"icl_gain": -0.61, "holdout_icl_gain": -9.11}
    assert seed.integrity_at("test").max_gap > 36
    assert label(Result([SeedResult(0, SEED_OK, metrics=noisy)], "icl_gain"), seed, "test")[0] == CLEAN
    assert label(Result([SeedResult(0, SEED_OK, metrics=noisy)], "icl_gain"), seed, "smoke")[0] == SUSPICIOUS


@pytest.mark.parametrize("table, error", [
    ('[integrity]\nholdout = "h"\n', "needs 'integrity.max_gap'"),
    ("[integrity]\nmax_gap = -1\n", "at least 0"),
    ('[integrity]\nceiling = "high"\n', "must be a number"),
])
def test_a_bad_integrity_table_names_the_field(table, error):
    import tomllib

    raw = tomllib.loads((TOYLEARNER / "seed.toml").read_text().split("[integrity]")[0]
                        + table + "[scales.test]\ntimeout = 20\nmemory_mb = 400\ntraining_seeds = 1\n")
    with pytest.raises(SeedError, match=error):
        parse_manifest(raw, TOYLEARNER)


def test_a_learner_command_may_not_get_the_metrics_path():
    import tomllib

    raw = tomllib.loads((TOYLEARNER / "seed.toml").read_text())
    raw["commands"]["learner"] = "{python} learner.py --out {out} --metrics {metrics}"
    with pytest.raises(SeedError, match="only the judge"):
        parse_manifest(raw, TOYLEARNER)


class Scripted:
    """A proposer that sets model.py's `mode` to each of `modes` in turn."""

    name, uses_llm = "scripted", False

    def __init__(self, modes: list[str]):
        self.modes = list(modes)

    def describe(self) -> str:
        return "scripted"

    def propose(self, ctx) -> Proposal:
        mode = self.modes.pop(0)
        line = 'mode = "{}"  # normal | nan | shape | cheat | boom\n'
        return Proposal(mode, "test", "", (Edit("model.py", line.format("normal"), line.format(mode)),),
                        "scripted")


def test_violated_and_suspicious_variants_are_labelled_never_parents_nor_best(toylearner, tmp_path):
    cfg = RunConfig(seed=str(toylearner), scale="test", runs_dir=str(tmp_path / "runs"), run_id="r",
                    report=False, iterations=4, selection="greedy", max_repairs=0)
    console, buf = make_console()
    run = Run.create(cfg, console)
    run.proposer = Scripted(["nan", "cheat", "shape", "boom"])
    try:
        assert run.execute() == 0, buf.getvalue()
        vs = {v.hypothesis or "baseline": v for v in run.archive.all()}
        best = run.archive.best(5)
        parents = {v.parent_id for v in run.archive.all()}
    finally:
        run.close()
    base, nan, cheat, shape, boom = (vs[k] for k in ("baseline", "nan", "cheat", "shape", "boom"))
    # a learner that cannot even start is an honest crash, with its own traceback to repair from
    assert boom.status == "failed" and boom.integrity == CLEAN, (boom.integrity, boom.error)
    (s0, *_) = boom.result.seeds
    assert s0.status == "crash" and "learner exited before it accepted the judge" in s0.reason
    assert "model.py fails at import" in s0.stderr_tail
    assert base.integrity == CLEAN and base.status == "done" and base.fitness < 0
    assert base.metrics["eval_only_env"] == 1.0  # the judge got the data env
    for v in (nan, shape):
        assert v.status == "failed" and v.integrity == VIOLATED, (v.name, v.integrity, v.error)
        assert "violated" in v.integrity_reason and v.id not in parents
    assert "non-finite" in nan.integrity_reason and "shape (201,)" in shape.integrity_reason
    assert cheat.status == "done" and cheat.integrity == SUSPICIOUS and cheat.fitness == 0.0
    assert "ceiling" in cheat.integrity_reason and cheat.id not in parents  # greedy passed it by
    assert [v.name for v in best] == [base.name]  # neither the cheat nor a violation is best
    out = buf.getvalue()
    assert "violated" in out and "suspicious" in out and "warning" not in out
    report = gather(tmp_path / "runs" / "r")["integrity"]
    assert report["split"] is True and report["violated"] == 2 and report["suspicious"] == 1
    assert {f["name"] for f in report["flagged"]} == {nan.name, cheat.name, shape.name}


def test_a_seed_without_a_learner_is_announced(toy, make_run):
    run, buf = make_run(toy, iterations=0)
    assert "no learner command" in run.banner() and "forge" in run.banner()
    run.execute()
    assert gather(run.dir)["integrity"]["split"] is False


def test_the_secret_evaluation_seed_is_drawn_per_run_and_kept_from_the_repo(toylearner, tmp_path):
    seeds = []
    for rid in ("a", "b"):
        cfg = RunConfig(seed=str(toylearner), scale="test", runs_dir=str(tmp_path / "runs"),
                        run_id=rid, report=False, iterations=0)
        console, _ = make_console()
        run = Run.create(cfg, console)
        try:
            run.execute()
            seeds.append(run.evaluator.eval_seed)
            fit = run.archive.get(0).fitness
        finally:
            run.close()
        secret = tmp_path / "runs" / rid / "secret.json"
        assert secret.stat().st_mode & 0o777 == 0o600
        assert str(seeds[-1]) not in (tmp_path / "runs" / rid / "config.json").read_text()
        assert math.isfinite(fit)
    assert seeds[0] != seeds[1] and all(s is not None for s in seeds)
