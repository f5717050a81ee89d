"""Meta-test a trained GLA by in-context RL on environments it never trained on (thesis Alg. 11).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: this is the judge. The variant's code never runs in this process: the learner
(learner.py, which imports the variant's gla.py) is another process, in its own sandbox, and
answers over the harness's protocol (scientist.harness). This script owns the environments, the
returns and the scoring. For a batch of lanes it sends the learner the dimensions and a seed for
the agent's own randomness; then, once per environment step for all lanes together, the
observations (and, from the second step on, the rewards and episode-end flags of the previous
transition), and takes actions back (checked: shape, finite; out-of-range values are clipped as
the environment always clips, envs.Env.step). Each lane starts with an empty history and fresh
random projections and acts for HORIZON steps with frozen weights; the returns of the episodes it
plays along the way show whether it learns in context. Run by hand, it starts learner.py itself.

Score of a lane: early = mean return of the episodes that start in the first quarter of the
horizon, late = mean return of the episodes that end in the last quarter. Only complete
episodes count, unless the quarter has none; then the episode cut by the horizon counts with
its partial return (for CartPole, whose reward is +1 per step, that understates `late`).
`icl_improvement` = mean over lanes of late - early is the thesis's in-context improvement; an
agent that plays badly early on purpose inflates it without learning anything. So the fitness
is `icl_gain` = mean over lanes (and held-out environments) of late - max(early, floor), where
the floor is the early return, on that very lane, of the best of three policies that do not
learn (the zero action, random actions, and on the PointGoals going to the origin, which is the
best a policy can do there without rewards; best = highest mean early return over the lanes):
acting worse than it early gains nothing.

The lanes: every lane's environment seed and, for PointGoal3D/4D, its goal are drawn by this
judge from the run's secret evaluation seed (scientist.harness.judge.eval_seed; EVAL_SEED by
hand): a goal per lane, in a random octant with no coordinate under half the largest (off every
axis, like the environment's default diagonal goal). So no goal is a constant a policy could
walk to, and since one learner process serves all lanes, no lane's rewards say anything about
another lane's goal. Every variant of a run meets the same lanes. `holdout_icl_improvement`
repeats the measurement on lanes drawn from another stream, in the same batch (selection never
sees it: a gap opening between it and the fitness shows a run fitting its fitness lanes). The
sealed set (SCIENTIST_EVAL_SET=sealed, scored for the baseline and the final best only, under the
same metric names) plays lanes from a third stream, and also PointGoal4D-v0 (smoke) or Hopper-v5
(full), an environment no fitness uses; the baselines are not run there.

Baselines on the fitness lanes with the same number of environment steps per lane, here in the
judge: PPO (ppo.py, fixed settings, one run per lane on the first PPO_RUNS lanes) scored the same
way, a random policy (standard normal action vectors), and the zero action vector every step
(`zero_action_return`; on PointGoal it stays near the start, which is about the best return
without learning from rewards: a `late_return` above it shows the agent learned where its goal is;
an `early_return` below the random policy's shows an agent that is bad early on purpose, which
raises `icl_improvement` without any learning).

What the checkpoint says about itself (its meta-training environments) is reported as
`train_envs_claimed_heldout` (how many of the held-out environments it names) and never used:
the judge cannot know what training saw. Nor can it see the weights: learner.py checks that they
stay frozen, beside the variant's code.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from envs import Lanes
from ppo import PPOConfig, run_ppo
from scientist.harness import judge

# Held-out environments (never in train.py's meta-training lists), steps per lane, lanes, PPO runs.
# smoke: a 3-D PointGoal (new dimensionality, goal off every axis) after classic control and 2-D PointGoals
HELDOUT = {"test": ["PointGoal3D-v0"], "smoke": ["PointGoal3D-v0"],
           # thesis Fig. 6.5 after Ant: Reacher, HalfCheetah, DMC Cartpole (no dm_control here: the
           # MuJoCo InvertedPendulum is the cart-pole stand-in)
           "full": ["Reacher-v5", "HalfCheetah-v5", "InvertedPendulum-v5"]}
# The sealed set also plays one environment that no fitness uses (a fourth dimension; a new body).
SEALED_EXTRA = {"test": "PointGoal4D-v0", "smoke": "PointGoal4D-v0", "full": "Hopper-v5"}
HORIZON = {"test": 64, "smoke": 512, "full": 4096}
LANES = {"test": 2, "smoke": 32, "full": 32}
PPO_RUNS = {"test": 1, "smoke": 16, "full": 8}
EVAL_SEED = 20231103  # the evaluation seed when run by hand (the framework passes the run's secret)
GOAL_DIM = {"PointGoal3D-v0": 3, "PointGoal4D-v0": 4}  # environments whose goal the judge draws per lane
FITNESS, HOLDOUT, SEALED = 0, 1, 2  # lane sets: each draws from its own streams of the evaluation seed


def draw_lanes(env_id, n, eval_seed, which, env_index):
    """(environment seeds, gym.make kwargs, learner seed) of n lanes of set `which`.

    Seeds, goals and the learner's seed (its projections and action noise) come from three
    independent streams, so what the learner is told or can infer from its start states says
    nothing about the goals.
    """
    key = [eval_seed, which, env_index]
    seeds = np.random.default_rng(key + [0]).integers(2**62, size=n).tolist()
    kwargs = [{} for _ in range(n)]
    if env_id in GOAL_DIM:
        rng, d = np.random.default_rng(key + [1]), GOAL_DIM[env_id]
        directions = rng.choice([-1.0, 1.0], (n, d)) * rng.uniform(0.5, 1.0, (n, d))  # (n, d)
        kwargs = [{"direction": tuple(v)} for v in directions.tolist()]
    return seeds, kwargs, int(np.random.default_rng(key + [2]).integers(2**31))


def lane_scores(episodes, lanes, horizon):
    """(early, late) arrays (lanes,) from episodes (lane, start, end, return, complete)."""
    q = horizon / 4
    early, late = [], []
    for lane in range(lanes):
        eps = [e for e in episodes if e[0] == lane]
        starts_early = [e for e in eps if e[1] < q]
        ends_late = [e for e in eps if e[2] > horizon - q]
        for sel, acc in ((starts_early, early), (ends_late, late)):
            full = [e for e in sel if e[4]]
            acc.append(float(np.mean([e[3] for e in (full or sel)])))
    return np.array(early), np.array(late)


def run_gla(learner, env_id, seeds, kwargs, agent_seed, horizon):
    """(early, late) per lane of the learner acting in these lanes for `horizon` steps. One call
    per step for all lanes: the observations go out, actions come back, and only then are the
    rewards and end flags of that step known (they go out with the next observations)."""
    n = len(seeds)
    lanes = Lanes(env_id, n, seeds, kwargs)
    learner.call("reset", obs_dim=lanes.obs_dim, act_dim=lanes.act_dim, lanes=n, seed=agent_seed,
                 steps=horizon)
    obs, feedback = lanes.obs.copy(), {}
    for _ in range(horizon):
        a = learner.call("act", obs=obs, **feedback).array("action", shape=(n, lanes.act_dim))
        obs, r, term, trunc = lanes.step(a.astype(np.float64))  # clipped there, as always
        feedback = {"reward": r, "terminated": term, "truncated": trunc}
    learner.call("finish")  # the learner's own check that its weights did not change
    return lane_scores(lanes.all_episodes(), n, horizon)


def run_fixed(env_id, seeds, kwargs, horizon, rng=None, centre=False):
    """(early, late) per lane of a policy that does not learn: standard normal action vectors
    (rng), the zero vector (rng None: on PointGoal, stay near the start), or, with `centre`, a
    step toward the origin (PointGoal only, whose observation is the position: the best a policy
    can do there without learning from rewards, since the goals surround the origin)."""
    lanes = Lanes(env_id, len(seeds), seeds, kwargs)
    obs = lanes.obs
    for _ in range(horizon):
        shape = (len(seeds), lanes.act_dim)
        a = (np.clip(-10 * obs, -1, 1) if centre else np.zeros(shape) if rng is None
             else rng.standard_normal(shape))
        obs = lanes.step(a)[0]
    return lane_scores(lanes.all_episodes(), len(seeds), horizon)


def floor_of(env_id, seeds, kwargs, horizon, key):
    """(lanes,) the per-lane early returns of the best policy that does not learn, of the zero
    action, random actions and, on the PointGoals, going to the origin: the one with the best
    mean early return over the lanes (not the best per lane, which would pick random actions
    wherever they got lucky). An agent's own early return is raised to it for the fitness, so
    that acting badly early on purpose gains nothing."""
    early = [run_fixed(env_id, seeds, kwargs, horizon)[0],
             run_fixed(env_id, seeds, kwargs, horizon, np.random.default_rng(key))[0]]
    if env_id in GOAL_DIM:
        early.append(run_fixed(env_id, seeds, kwargs, horizon, centre=True)[0])
    return max(early, key=lambda e: e.mean())


def run_ppo_baseline(env_id, seeds, kwargs, horizon):
    """PPO from scratch on each of these lanes (its environment seed and goal), horizon steps."""
    n_steps = max(4, horizon // 8)  # 8 PPO updates within the horizon
    cfg = PPOConfig(n_envs=1, n_steps=n_steps, minibatches=min(4, n_steps))
    early, late = [], []
    for seed, kw in zip(seeds, kwargs):
        out = run_ppo(env_id, horizon, seed=seed, cfg=cfg, env_kwargs=kw)
        e, la = lane_scores(out["episodes"], 1, out["steps_per_lane"])
        early.append(e[0])
        late.append(la[0])
    return np.array(early), np.array(late)


def gla_metrics(pre, early, late, floor):
    """icl_gain (the fitness): late - max(early, floor) per lane; icl_improvement: late - early
    (the thesis's in-context improvement, which an agent bad early on purpose can inflate)."""
    imp, gain = late - early, late - np.maximum(early, floor)
    return {f"{pre}icl_gain": float(gain.mean()),
            f"{pre}icl_gain_se": float(gain.std() / math.sqrt(len(gain))),
            f"{pre}icl_improvement": float(imp.mean()),
            f"{pre}icl_improvement_se": float(imp.std() / math.sqrt(len(imp))),
            f"{pre}early_return": float(early.mean()), f"{pre}late_return": float(late.mean())}


def evaluate(learner, scale, eval_seed, eval_set, envs=None):
    """Metrics on HELDOUT[scale]; envs (diagnostics only, never the fitness) replaces that list."""
    start = time.time()
    claimed = learner.call("load").text("train_envs", max_len=4000).split()  # its word, never used
    heldout = envs or HELDOUT[scale]
    named = sorted(set(claimed) & set(HELDOUT[scale] + [SEALED_EXTRA[scale]]))
    if named:
        print(f"evaluate.py: the checkpoint says it meta-trained on held-out {named}", file=sys.stderr)
    n, horizon = LANES[scale], HORIZON[scale]
    many = len(heldout) > 1
    metrics, fit, hold = {}, [], []
    for i, env_id in enumerate(heldout):
        pre = f"{env_id.split('-')[0]}_" if many else ""
        if eval_set == "sealed":  # lanes of a stream no fitness uses; no baselines
            seeds, kwargs, agent_seed = draw_lanes(env_id, n, eval_seed, SEALED, i)
            e, la = run_gla(learner, env_id, seeds, kwargs, agent_seed, horizon)
            floor = floor_of(env_id, seeds, kwargs, horizon, [eval_seed, SEALED, i, 3])
            metrics.update(gla_metrics(pre, e, la, floor))
            fit.append(metrics[f"{pre}icl_gain"])
            continue
        seeds, kwargs, agent_seed = draw_lanes(env_id, n, eval_seed, FITNESS, i)
        h_seeds, h_kwargs, _ = draw_lanes(env_id, n, eval_seed, HOLDOUT, i)
        # one batch: lanes 0..n-1 make the fitness, n..2n-1 the holdout (independent goals)
        e, la = run_gla(learner, env_id, seeds + h_seeds, kwargs + h_kwargs, agent_seed, horizon)
        rng = np.random.default_rng([eval_seed, FITNESS, i, 3])
        re_, rl = run_fixed(env_id, seeds, kwargs, horizon, rng)
        ze, zl = run_fixed(env_id, seeds, kwargs, horizon)
        floor = floor_of(env_id, seeds, kwargs, horizon, [eval_seed, FITNESS, i, 3])
        metrics.update(gla_metrics(pre, e[:n], la[:n], floor))
        h_floor = floor_of(env_id, h_seeds, h_kwargs, horizon, [eval_seed, HOLDOUT, i, 3])
        h = gla_metrics(f"{pre}holdout_", e[n:], la[n:], h_floor)
        for k in ("icl_gain", "icl_improvement"):
            metrics[f"{pre}holdout_{k}"] = h[f"{pre}holdout_{k}"]
        fit.append(metrics[f"{pre}icl_gain"])
        hold.append(h[f"{pre}holdout_icl_gain"])
        runs = PPO_RUNS[scale]
        pe, pl = run_ppo_baseline(env_id, seeds[:runs], kwargs[:runs], horizon)
        metrics[f"{pre}ppo_improvement"] = float((pl - pe).mean())
        metrics[f"{pre}ppo_early_return"] = float(pe.mean())
        metrics[f"{pre}ppo_late_return"] = float(pl.mean())
        metrics[f"{pre}random_return"] = float(np.concatenate([re_, rl]).mean())
        metrics[f"{pre}zero_action_return"] = float(np.concatenate([ze, zl]).mean())
    if eval_set == "sealed" and not envs:  # an environment that no fitness uses
        extra = SEALED_EXTRA[scale]
        seeds, kwargs, agent_seed = draw_lanes(extra, n, eval_seed, SEALED, len(heldout))
        e, la = run_gla(learner, extra, seeds, kwargs, agent_seed, horizon)
        floor = floor_of(extra, seeds, kwargs, horizon,
                         [eval_seed, SEALED, len(heldout), 3])
        metrics.update(gla_metrics(f"{extra.split('-')[0]}_", e, la, floor))
    if many:
        metrics["icl_gain"] = float(np.mean(fit))
        if hold:
            metrics["holdout_icl_gain"] = float(np.mean(hold))
    metrics["train_envs_claimed_heldout"] = len(named)
    metrics["horizon"] = horizon
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(HORIZON), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (the meta-test lanes do not use it)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder with checkpoint.pt (for the learner this script starts when run by hand)")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="the learner's device: auto = cuda if available")
    p.add_argument("--envs", nargs="+", help="diagnostics: meta-test on these environment ids instead")
    cli = p.parse_args()
    torch.set_num_threads(1)
    eval_seed, eval_set = judge.eval_seed(EVAL_SEED), judge.eval_set()
    standalone = [sys.executable, str(Path(__file__).with_name("learner.py")), "--out", str(cli.out),
                  "--device", cli.device]
    judge.main(lambda learner: evaluate(learner, cli.scale, eval_seed, eval_set, cli.envs), cli.metrics,
               standalone=standalone)


if __name__ == "__main__":
    main()
