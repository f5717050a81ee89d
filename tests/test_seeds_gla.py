"""gla's judge (seeds/gla/evaluate.py): what the learner is told, and the lanes it meets.

The judge is driven here with a scripted learner in this process (no sandbox, no variant code):
the lanes' goals are secret and independent, the learner gets each step's reward only after it
has acted, its actions are checked, and nothing the checkpoint says changes the fitness.
"""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import need_module

need_module("torch")
need_module("gymnasium")

from scientist.harness import judge  # noqa: E402

SEED_DIR = Path(__file__).resolve().parents[1] / "seeds" / "gla"


@pytest.fixture(scope="module")
def ev():
    """seeds/gla/evaluate.py, with its envs and ppo (other seeds have modules of those names)."""
    names = ("evaluate", "envs", "ppo")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    sys.path.insert(0, str(SEED_DIR))
    try:
        yield importlib.import_module("evaluate")
    finally:
        sys.path.remove(str(SEED_DIR))
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


class Scripted:
    """A learner in this process: `policy(t, obs)` gives the actions; every call is recorded."""

    def __init__(self, policy, train_envs=""):
        self.policy, self.train_envs, self.log = policy, train_envs, []

    def call(self, op, **payload):
        self.log.append((op, payload))
        if op == "load":
            return judge.Reply(op, {"train_envs": self.train_envs})
        if op == "reset":
            self.t = 0
        if op == "act":
            self.t += 1
            return judge.Reply(op, {"action": np.asarray(self.policy(self.t - 1, payload["obs"]))})
        return judge.Reply(op, {})


def random_policy(seed=0):
    rng = np.random.default_rng(seed)
    return lambda t, obs: rng.standard_normal(obs.shape).astype(np.float32)


def goals(ev, which, eval_seed=7, n=32):
    _, kwargs, _ = ev.draw_lanes("PointGoal3D-v0", n, eval_seed, which, 0)
    return np.array([k["direction"] for k in kwargs])


def test_every_lane_has_its_own_secret_goal_off_every_axis(ev):
    fit, hold, sealed = (goals(ev, w) for w in (ev.FITNESS, ev.HOLDOUT, ev.SEALED))
    every = np.concatenate([fit, hold, sealed])
    assert len({tuple(np.sign(g)) for g in fit}) > 4, "goals spread over the octants"
    assert len({tuple(g) for g in every}) == len(every), "no two lanes of any set share a goal"
    mag = np.abs(every)
    assert (mag.min(1) >= 0.5 * mag.max(1)).all(), "no coordinate under half the largest"
    assert not np.allclose(goals(ev, ev.FITNESS, eval_seed=8), fit), "the goals follow the secret seed"
    np.testing.assert_array_equal(goals(ev, ev.FITNESS), fit)  # ... and only it
    seeds, kwargs, agent_seed = ev.draw_lanes("PointGoal3D-v0", 4, 7, ev.FITNESS, 0)
    lanes = ev.Lanes("PointGoal3D-v0", 4, seeds, kwargs)
    for env, k in zip(lanes.envs, kwargs):  # the environments really have those goals
        d = np.array(k["direction"])
        np.testing.assert_allclose(env.env.unwrapped.goal, 0.8 * d / np.linalg.norm(d))


def test_the_learner_gets_a_reward_only_after_acting(ev):
    learner = Scripted(random_policy())
    m = ev.evaluate(learner, "test", 7, "fitness")
    n, horizon = ev.LANES["test"], ev.HORIZON["test"]
    ops = [op for op, _ in learner.log]
    assert ops == ["load", "reset"] + ["act"] * horizon + ["finish"], "one call per step for all lanes"
    reset = learner.log[1][1]
    assert reset["lanes"] == 2 * n and reset["steps"] == horizon  # fitness + holdout lanes, one batch
    assert set(reset) == {"obs_dim", "act_dim", "lanes", "seed", "steps"}, "no goal, no env seed"
    acts = [p for op, p in learner.log if op == "act"]
    assert set(acts[0]) == {"obs"}, "nothing about rewards before the first action"
    assert all(set(p) == {"obs", "reward", "terminated", "truncated"} for p in acts[1:])
    assert all(p["reward"].shape == (2 * n,) for p in acts[1:])
    assert {"icl_gain", "holdout_icl_gain", "icl_improvement", "holdout_icl_improvement",
            "ppo_improvement", "random_return",
            "zero_action_return"} <= set(m)


def test_out_of_range_actions_are_clipped_and_non_finite_ones_are_a_violation(ev):
    learner = Scripted(lambda t, obs: np.full(obs.shape, 1e6 * (-1) ** t, np.float32))
    ev.evaluate(learner, "test", 7, "fitness")
    obs = np.stack([p["obs"] for op, p in learner.log if op == "act"])
    assert np.abs(obs).max() <= 1.0  # the point stays in its box, as the environment clips
    with pytest.raises(judge.Violation, match="non-finite"):
        ev.evaluate(Scripted(lambda t, obs: np.full(obs.shape, np.nan)), "test", 7, "fitness")
    with pytest.raises(judge.Violation, match="shape"):
        ev.evaluate(Scripted(lambda t, obs: np.zeros((obs.shape[0], 2))), "test", 7, "fitness")


def test_what_the_checkpoint_says_about_itself_changes_no_score(ev):
    honest = ev.evaluate(Scripted(random_policy(), "Acrobot-v1"), "test", 7, "fitness")
    lying = ev.evaluate(Scripted(random_policy(), "Acrobot-v1 PointGoal3D-v0"), "test", 7, "fitness")
    assert lying.pop("train_envs_claimed_heldout") == 1 and honest.pop("train_envs_claimed_heldout") == 0
    for m in (honest, lying):
        m.pop("eval_seconds")
    assert lying == honest


def test_the_sealed_set_plays_other_lanes_and_an_environment_no_fitness_uses(ev):
    fitness = ev.evaluate(Scripted(random_policy()), "test", 7, "fitness")
    learner = Scripted(random_policy())
    sealed = ev.evaluate(learner, "test", 7, "sealed")
    resets = [p for op, p in learner.log if op == "reset"]
    assert [r["obs_dim"] for r in resets] == [3, 4]  # PointGoal3D, then PointGoal4D
    assert "icl_gain" in sealed and "PointGoal4D_icl_gain" in sealed
    assert "ppo_improvement" not in sealed and "holdout_icl_gain" not in sealed
    assert sealed["icl_gain"] != fitness["icl_gain"]


def test_acting_badly_early_on_purpose_gains_no_fitness(ev):
    """A policy that never reads a reward, walks to a corner during the first quarter and then
    to the origin scores, on the fitness, no more than one that goes to the origin at once: the
    thesis's late - early is fooled, the fitness is not."""
    quarter = ev.HORIZON["test"] // 4

    def to(target_of_t):
        return lambda t, obs: np.clip(10 * (target_of_t(t, obs.shape[1]) - obs), -1, 1).astype(np.float32)

    sandbag = to(lambda t, d: np.ones(d) if t < quarter else np.zeros(d))
    honest = to(lambda t, d: np.zeros(d))
    m = ev.evaluate(Scripted(sandbag), "test", 7, "fitness")
    h = ev.evaluate(Scripted(honest), "test", 7, "fitness")
    assert m["icl_improvement"] > h["icl_improvement"] + 5, (m, h)  # the late - early is fooled
    assert m["icl_gain"] <= h["icl_gain"] + 1e-6, (m["icl_gain"], h["icl_gain"])
    assert abs(h["icl_gain"]) < 1e-6  # going to the origin is the floor on the PointGoals
    assert m["late_return"] == pytest.approx(h["late_return"], abs=0.5)
