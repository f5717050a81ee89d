"""The fme judge (seeds/fme/evaluate.py) against learners that lie or break the protocol (issue 12).

The judge runs here in-process with the seed's learner object behind tests/inprocess.py's
proxy (no sockets: what is tested is what the judge does with the replies), on a small
synthetic checkpoint in train.py's format, at the `test` scale.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import need_module
from inprocess import InProcessLearner
from scientist.harness import judge
from scientist.seed import SEEDS_DIR, load_seed

torch = need_module("torch")
need_module("gymnasium")
FME = SEEDS_DIR / "fme"
MODULES = ("evaluate", "learner", "tasks", "hillclimb", "srwm")


@pytest.fixture
def fme(monkeypatch):
    """The fme seed's modules, imported from its folder (and forgotten afterwards: other seeds
    have modules of the same names)."""
    for m in MODULES:
        monkeypatch.delitem(sys.modules, m, raising=False)
    monkeypatch.syspath_prepend(str(FME))
    import evaluate
    import learner
    import srwm
    import tasks

    yield type("FME", (), {"evaluate": evaluate, "learner": learner, "tasks": tasks, "srwm": srwm})
    for m in MODULES:
        sys.modules.pop(m, None)


def checkpoint(fme, out: Path, solutions: int = 6, pick=None, fitness=None, executions=None) -> Path:
    """A checkpoint in train.py's format: per task, random solutions of a small SRWM stack,
    their fitness and the executions spent; `pick` keeps (or repeats) only those solutions."""
    gen = torch.Generator().manual_seed(0)
    entries = {}
    for task in fme.tasks.TASKS + fme.tasks.ABLATIONS:
        kwargs = {"sizes": [fme.tasks.input_size(task), 8, fme.tasks.NUM_ACTIONS[task]], "init_scale": 1.0}
        w = fme.srwm.SRWMNet(**kwargs).init_solutions(solutions, gen)
        f = torch.linspace(0.0, 1.0, solutions) if fitness is None else torch.as_tensor(fitness).float()
        if pick is not None:
            w, f = [x[pick] for x in w], f[pick]
        entries[task] = {"model_kwargs": kwargs, "weights": w, "fitness": f,
                         "executions": fme.tasks.BUDGET["test"]["executions"] if executions is None else executions}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"tasks": entries, "args": {}, "scale": "test", "seed": 0}, out / "checkpoint.pt")
    return out


def score(fme, learner_obj, eval_set: str = "fitness") -> dict:
    return fme.evaluate.evaluate(InProcessLearner(learner_obj), "test", 0, 12345, eval_set, torch.device("cpu"))


class Lying:
    """The seed's learner with one of its replies replaced."""

    def __init__(self, inner, **replace):
        self.inner, self.replace = inner, replace

    def __getattr__(self, op):
        fn = getattr(self.inner, op)
        if op not in self.replace:
            return fn
        return lambda **kw: {**(fn(**kw) or {}), **self.replace[op](kw)}


def test_a_lying_buffer_only_moves_the_draws_among_its_own_solutions(fme, tmp_path):
    """A buffer that claims a huge fitness for one solution (or lists it 1,000 times) is scored
    exactly as a buffer holding only that solution: the claim picks what is executed, the
    judge measures what it scores."""
    k = 2
    honest = score(fme, fme.learner.FMELearner(checkpoint(fme, tmp_path / "only", pick=[k]), "cpu"))
    lie = np.zeros(6, dtype=np.float32)
    lie[k] = 1e6
    liar = score(fme, fme.learner.FMELearner(checkpoint(fme, tmp_path / "lie", fitness=lie), "cpu"))
    copies = score(fme, fme.learner.FMELearner(checkpoint(fme, tmp_path / "copies", pick=[k] * 1000), "cpu"))
    for key in ("fme_score", "holdout_fme_score", "bandit_score", "cartpole_score", "swap_bandit_score"):
        assert liar[key] == honest[key] == copies[key], key
    assert 0.0 <= liar["fme_score"] <= 1.0


@pytest.mark.parametrize("lie, why", [
    ({"load": lambda kw: {"bandit_executions": 10**6}}, "bandit_executions"),
    ({"load": lambda kw: {"cartpole_fitness": np.array([0.0, np.nan])}}, "non-finite"),
    ({"load": lambda kw: {"bandit_fitness": np.zeros(0, np.float32)}}, "buffer of 0"),
    ({"load": lambda kw: {"bandit_fitness": np.zeros((2, 3), np.float32)}}, "shape"),
    ({"step": lambda kw: {t: np.full((len(x), 2), np.nan, np.float32) for t, x in kw.items()}}, "non-finite"),
    ({"step": lambda kw: {t: np.zeros((len(x) + 1, 2), np.float32) for t, x in kw.items()}}, "shape"),
    ({"step": lambda kw: {t: np.zeros((len(x), 3), np.float32) for t, x in kw.items()}}, "shape"),
    ({"step": lambda kw: {t: np.full((len(x), 2), 1e300) for t, x in kw.items()}}, "above"),
    ({"step": lambda kw: {t: np.zeros((len(x), 2), bool) for t, x in kw.items()}}, "dtype"),
    ({"step": lambda kw: {"cartpole": np.zeros((3, 2), np.float32)}}, "cartpole"),
])
def test_a_bad_reply_is_a_violation(fme, tmp_path, lie, why):
    obj = Lying(fme.learner.FMELearner(checkpoint(fme, tmp_path), "cpu"), **lie)
    with pytest.raises(judge.Violation, match=why):
        score(fme, obj)


def test_frozen_lanes_are_the_solutions_acting_without_changing_themselves(fme, tmp_path):
    """The learner's frozen lanes give exactly what the old evaluator's frozen diagnostic gave
    (the network's step with its new state discarded), and its other lanes exactly what
    executing the solutions in the judge's own process gave, lane for lane."""
    out = checkpoint(fme, tmp_path)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    obj = fme.learner.FMELearner(out, "cpu")
    proxy = InProcessLearner(obj)
    proxy.call("load", tasks=["swap_bandit", "cartpole"])
    for task in ("swap_bandit", "cartpole"):
        e = ckpt["tasks"][task]
        net = fme.srwm.SRWMNet(**e["model_kwargs"])
        idx = torch.tensor([0, 5, 5, 3, 1, 2, 4, 0])
        w = [x[idx] for x in e["weights"]]
        seeds = {(task, "drawn"): 2**30 + 4 * 2**16, (task, "frozen"): 2**30 + 6 * 2**16}
        got = fme.evaluate.run_learner(proxy, {task: {"drawn": (idx, False), "frozen": (idx, True)}}, seeds, 20)[task]
        _, live = fme.tasks.execute(net.step, w, task, 20, seeds[(task, "drawn")])
        _, fixed = fme.tasks.execute(lambda s, x, net=net: (s, net.step(s, x)[1]), w, task, 20,
                                     seeds[(task, "frozen")])
        assert np.array_equal(got["drawn"], live) and np.array_equal(got["frozen"], fixed)
        lanes = obj.running[task]
        assert all(torch.equal(a, b[idx]) for a, b in zip(lanes.fixed, obj.buffers[task][1])), \
            "frozen lanes never change"
        assert not any(torch.equal(a, b[idx]) for a, b in zip(lanes.live, obj.buffers[task][1])), \
            "the others modify themselves"


def test_grouped_execution_is_the_same_as_one_call_per_group(fme):
    """tasks.execute with a list of seeds runs each group as a call with its seed would (the
    judge batches its groups, one learner request per step); an int seed is one group
    (training's executions are unchanged)."""
    for task in ("swap_bandit", "cartpole"):
        net = fme.srwm.SRWMNet([fme.tasks.input_size(task), 8, 2])
        w = net.init_solutions(4, torch.Generator().manual_seed(1))
        _, both = fme.tasks.execute(net.step, [torch.cat([x, x]) for x in w], task, 30, [7, 2**20])
        _, a = fme.tasks.execute(net.step, w, task, 30, 7)
        _, b = fme.tasks.execute(net.step, w, task, 30, [2**20])
        assert np.array_equal(both, np.concatenate([a, b])) and not np.array_equal(a, b)


def test_every_group_has_its_own_seeds_and_the_sealed_set_others(fme):
    """No two lanes of a run share an environment (one learner serves them all); the seeds
    follow the run's secret; the sealed set's never meet the fitness set's; training's never
    reach them (it uses [0, 2^30) plus at most a few hundred CartPole lanes)."""
    ev, tasks = fme.evaluate, fme.tasks
    n = max(ev.EVAL_EXECUTIONS.values())
    spans = []
    for secret in (0, 1, 12345, 2**62 - 1):
        for eval_set in judge.EVAL_SETS:
            seeds = ev.env_seeds(secret, eval_set)
            assert len(seeds) == len(ev.GROUPS) * len(tasks.TASKS + tasks.ABLATIONS)
            spans += [(secret, eval_set, s) for s in seeds.values()]
            assert all(tasks.HELDOUT_SEED_BASE + 2 * ev.BLOCK <= s and s + ev.BLOCK <= 2**31
                       for s in seeds.values())
            parity = int(eval_set == "sealed")  # of every run: sealed seeds are never fitness seeds
            assert all((s - tasks.HELDOUT_SEED_BASE) // ev.BLOCK % 2 == parity for s in seeds.values())
        fit, sealed = ev.env_seeds(secret, "fitness"), ev.env_seeds(secret, "sealed")
        blocks = sorted(s for s in [*fit.values(), *sealed.values()])
        assert all(b - a >= ev.BLOCK > n for a, b in zip(blocks, blocks[1:])), "overlapping lanes"
    assert ev.env_seeds(1, "fitness") != ev.env_seeds(2, "fitness")


def test_the_sealed_set_scores_the_fitness_on_other_seeds_and_nothing_else(fme, tmp_path):
    obj = fme.learner.FMELearner(checkpoint(fme, tmp_path), "cpu")
    sealed = score(fme, obj, "sealed")
    fitness = score(fme, fme.learner.FMELearner(checkpoint(fme, tmp_path), "cpu"))
    assert set(sealed) == {"fme_score", "eval_seconds"} | {
        f"{t}_score{s}" for t in fme.tasks.TASKS for s in ("", "_se")}
    assert sealed["fme_score"] != fitness["fme_score"]
    assert "hc_score" in fitness and "holdout_fme_score" in fitness


def test_the_judges_files_import_no_editable_file():
    """evaluate.py, and the protected modules it imports, never import the variant's code."""
    seed = load_seed("fme")
    editable = {Path(f).stem for f in seed.editable}
    for name in ("evaluate.py", "tasks.py", "hillclimb.py"):
        tree = ast.parse((FME / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        calls = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
                 and isinstance(n.args[0], ast.Constant) and getattr(n.func, "attr", "") == "import_module"}
        assert not (imported | calls) & editable, (name, (imported | calls) & editable)
        assert (imported - {"__future__"}) <= {"argparse", "math", "sys", "time", "pathlib", "numpy", "torch",
                                               "gymnasium", "scientist", "hillclimb", "tasks"}, name


@pytest.mark.parametrize("sandbox_name", ["local", "docker"])
def test_the_runs_secret_is_out_of_the_learners_reach(sandbox_name, tmp_path_factory):
    """Where a run keeps its secret evaluation seed (secret.json in the run folder, above every
    training output), the stealer finds it and plays the swap bandit's swaps if it can read it
    (it could in the unconfined local sandbox before bubblewrap: 0.352 -> 0.485 at `test`).
    Both sandboxes keep the run folder out of the learner's reach."""
    import hostile
    from test_integrity import sandbox, trained

    t = trained("fme", tmp_path_factory)
    sandbox(sandbox_name, "probe")  # skips without Docker
    (t.root / "secret.json").write_text(json.dumps({"eval_seed": 12345}))  # as scientist.run keeps it
    try:
        r = t.score(t.variant("stealer-secret", *hostile.STEALER["fme"]), sandbox_name, "stealer-secret")
    finally:
        (t.root / "secret.json").unlink()
    assert r.ok, r.reason
    assert "run secret: not found" in r.stderr_tail, r.stderr_tail[-2000:]
    assert r.metrics["fme_score"] == t.honest.metrics["fme_score"]
