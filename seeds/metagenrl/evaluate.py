"""Meta-test a learned MetaGenRL objective on an environment never used in meta-training (Alg. 7).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: this is the judge. The variant's code never runs in this process: the learner
(learner.py, which imports the variant's metagenrl.py and reads the checkpoint) is another process,
in its own sandbox, and answers over the harness's protocol (scientist.harness). This script owns
the held-out environment (fixed per scale in HELDOUT, never taken from the checkpoint), the
environment seeds, the step budget and the returns. Every environment step it sends the learner the
transitions its environments produced and takes the next actions back; for the greedy evaluation
episodes it sends observations only. One request serves every lane of a step: all agents of a run,
the runs of the untrained objectives side by side, the fitness and holdout episodes together (under
load each round trip waits for the scheduler, so round trips, not the work, set the wall time).
Actions are checked (shape, finite) and, as always, clipped to [-1, 1] by the pool (envs.py) before
they reach the environments. Run by hand, it starts learner.py itself (--out is the learner's
checkpoint folder; this script never reads it).

Fitness `return`: the mean undiscounted return of the final deterministic policies of `agents`
fresh agents of the variant, trained for `steps` steps by the frozen learned objective (thesis
Alg. 7), over `episodes` evaluation episodes each.

Seeds: every environment seed (the agents' training environments and the evaluation episodes) is
drawn from the run's secret evaluation seed (scientist.harness.judge.eval_seed; ENV_SEED by hand)
and the training seed. The seeds of the learner's agents and of the untrained objectives are drawn
independently of them, so the learner cannot work its environments' seeds out from what it is told.
Each agent (lane) has its own environment seeds; one learner serves all lanes of a run and could
pool their experience (the README says what remains). `holdout_return`: the same final agents on
other evaluation episodes, from seeds no fitness uses (when a run selects many variants on one set of
episodes, a gap opening between `return` and `holdout_return` shows selection fitting them). The
sealed set (SCIENTIST_EVAL_SET=sealed: scored only for the baseline and the final best, reported
under the same names) trains and evaluates on environment seeds disjoint from every fitness seed,
and skips the baselines but `init_return`.

Baselines on the same environment, budget and environment seeds, here in the judge, from protected
code only:
  - `td3_return`: TD3 (td3.py, the DPG path of the seed's baseline agents; settings per scale in
    TD3_AGENTS, those of the baseline's train.py), from the same seed as the learner's agents, so
    from the same initial weights when the variant's agents are the baseline's;
  - `reinforce_return`: on-policy REINFORCE with a GAE baseline (reinforce.py), the same sizes;
  - `init_return`: the TD3 agents before training: what the seed's untrained agents score.
Diagnostics of the variant, from the learner (the judge steps the environments and keeps the
returns, but the actions are the variant's, which could make them look worse than they are: no
claim may rest on them):
  - `learner_init_return`: the variant's fresh agents before training;
  - `untrained_objective_return`: one fresh agent for each of `untrained_objectives` UNTRAINED
    objectives of the variant's architecture and form, same budget: what the form does without
    meta-learning. `return` above it is what meta-training added;
  - `claimed_train_envs`: the meta-training environments the checkpoint names. One that names the
    held-out environment is refused; one that leaves it out cannot be caught here (README).
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from envs import EnvPool, Replay
from reinforce import train_reinforce
from scientist.harness import judge
from td3 import TD3

# Held-out environment and meta-test budget per scale: the same for every variant and training seed.
HELDOUT = {"test": "Pendulum", "smoke": "LunarLanderContinuous", "full": "Hopper"}
BUDGET = {
    "test": dict(agents=1, steps=200, episodes=1, max_episode_steps=50, untrained_objectives=1),
    "smoke": dict(agents=3, steps=10000, episodes=5, max_episode_steps=None, untrained_objectives=4),
    "full": dict(agents=4, steps=1_000_000, episodes=10, max_episode_steps=None,  # paper: 1M steps
                 untrained_objectives=2),
}
# The TD3 baseline's agents per scale: the sizes and random phase train.py's presets give the seed's
# baseline agents (every other setting is td3.TD3's default, the thesis's Table A.2, as in train.py).
TD3_AGENTS = {"test": dict(hidden=16, layers=2, random_steps=50),
              "smoke": dict(hidden=64, layers=2, random_steps=1000),
              "full": dict(hidden=350, layers=3, random_steps=10000)}
ENV_SEED = 424242  # the evaluation seed when run by hand (the framework passes the run's secret)
# Environment seeds of set k lie in [k 2^32, k 2^32 + 2^31): a pool's seeds grow from a base below 2^30
# by 1000 per finished episode, far less than 2^30 even at `full`. So no two sets share a seed.
SETS = {"fitness": 0, "holdout": 1, "sealed": 2}
MAX_REPLY = 1 << 20  # bytes: the learner's replies are a few actions


def seeds(eval_seed, train_seed, eval_set, runs):
    """The seeds of one evaluation: env[k], agents[k], objective[k] for run k (0: the learned objective,
    TD3 and REINFORCE, which share environments; k >= 1: untrained objective k), and the evaluation
    episodes'. Each from its own numpy SeedSequence over (eval seed, training seed, set, purpose, k)."""
    def draw(*key):
        return int(np.random.default_rng([eval_seed, train_seed, SETS[eval_set], *key]).integers(1 << 30))

    region = SETS[eval_set] << 32
    return {"env": [region + draw(0, k) for k in range(runs)], "agents": [draw(1, k) for k in range(runs)],
            "objective": [draw(2, k) for k in range(runs)], "episodes": region + draw(3),
            "holdout": (SETS["holdout"] << 32) + draw(4)}


def greedy_returns(act, env, n, episodes, max_episode_steps, seeds, runs=1):
    """Returns (C, R, n, episodes) of the deterministic policies act(obs (L, O)) -> actions (L, A) of
    R = `runs` runs of n agents, each run on C = len(seeds) sets of evaluation episodes (pool c of every
    run seeded seeds[c], as if the run were alone): L = C R n lanes in the order (set, run, agent),
    stepped together, so that all of them cost one request per step."""
    pools = [EnvPool([env] * n, s, max_episode_steps) for s in seeds for _ in range(runs)]
    while min(len(f) for p in pools for f in p.finished) < episodes:
        a = act(np.concatenate([p.obs for p in pools]))
        for k, p in enumerate(pools):
            p.step(a[k * n:(k + 1) * n])
    r = np.array([[f[:episodes] for f in p.finished] for p in pools])
    return r.reshape(len(seeds), runs, n, episodes)


def progress(label, step, steps, pools):
    if (step + 1) % max(steps // 5, 1) == 0:
        recent = [f[-1] for p in pools for f in p.finished if f]
        print(f"{label}: step {step + 1}/{steps}, last episode returns {np.round(recent, 1).tolist()}",
              flush=True)


def meta_test(learner, env, n, budget, env_seeds, agent_seeds, before_seed=None, objective="learned",
              objective_seeds=None, label="learned objective"):
    """R = len(env_seeds) runs side by side, each of n fresh agents of the learner trained on `env` for
    `steps` steps (run r on a pool seeded env_seeds[r], its agents seeded agent_seeds[r]) by the frozen
    learned objective, or each run by an untrained one (seeded objective_seeds[r]): here the
    environments, there the learning, one request per step for all runs. Returns (the greedy returns
    (R, n, episodes) on the episodes of before_seed before training, or None; the trained agents' greedy
    act function on obs (C R n, O))."""
    steps, mes, R = budget["steps"], budget["max_episode_steps"], len(env_seeds)
    pools = [EnvPool([env] * n, s, mes) for s in env_seeds]
    dims = dict(obs_dim=pools[0].obs_dim, act_dim=pools[0].act_dim)
    # the reply is checked before the next call's: a learner that cannot start fails there
    learner.send("start", runs=R, agents=n, **dims, act_mask=pools[0].act_mask, steps=steps,
                 seeds=np.array(agent_seeds), objective=objective,
                 objective_seeds=np.array(objective_seeds if objective_seeds is not None else [0] * R))

    def actions(reply, lanes):  # (lanes, A), finite; the pools clip them to [-1, 1]
        return reply.array("action", shape=(lanes, dims["act_dim"]), dtype="float")

    def greedy(obs):  # obs (L, O) of greedy_returns' lanes, blocks of n lanes by (set, run)
        return actions(learner.call("act", obs=obs, step=0, explore=False), len(obs))

    start = greedy_returns(greedy, env, n, budget["episodes"], mes, [before_seed], R)[0] \
        if before_seed is not None else None
    a = actions(learner.call("act", obs=np.concatenate([p.obs for p in pools]), step=0, explore=True), R * n)
    for step in range(steps):
        # per run: obs, act (as executed), rew, next_obs, term, done, time, (n, ...) each; sent as (R n, ...)
        tr = [p.step(a[r * n:(r + 1) * n]) for r, p in enumerate(pools)]
        a = actions(learner.call("step", **{k: np.concatenate([t[k] for t in tr]) for k in tr[0]},
                                 new_obs=np.concatenate([p.obs for p in pools]), t=step + 1), R * n)
        progress(label, step, steps, pools)
    return start, greedy


def run_td3(env, n, budget, config, env_seed, agent_seed, episodes_seed, device, train=True):
    """TD3 agents (td3.py) on the same environments: (greedy returns before, after or None)."""
    steps, mes, eps = budget["steps"], budget["max_episode_steps"], budget["episodes"]
    torch.manual_seed(agent_seed)
    pool = EnvPool([env] * n, env_seed, mes)
    replay = Replay(n, pool.obs_dim, pool.act_dim, steps, agent_seed)
    agents = TD3(n, pool.obs_dim, pool.act_dim, pool.act_mask, device=device, **config)
    agents.gen.manual_seed(agent_seed)

    def greedy(obs):
        return agents.act(obs, 0, explore=False)

    before = greedy_returns(greedy, env, n, eps, mes, [episodes_seed])[0, 0]
    if not train:
        return before, None
    for step in range(steps):
        replay.add(pool.step(agents.act(pool.obs, step)))
        agents.update(replay)
        progress("td3", step, steps, [pool])
    return before, greedy_returns(greedy, env, n, eps, mes, [episodes_seed])[0, 0]


def stats(prefix, r):
    per_agent = r.mean(1)
    se = per_agent.std(ddof=1) / math.sqrt(len(per_agent)) if len(per_agent) > 1 else 0.0
    return {f"{prefix}return": float(per_agent.mean()), f"{prefix}return_se": float(se)}


def evaluate(learner, scale, train_seed, eval_seed, eval_set, device):
    env, budget = HELDOUT[scale], BUDGET[scale]
    n, eps, mes, untrained = budget["agents"], budget["episodes"], budget["max_episode_steps"], \
        budget["untrained_objectives"]
    claimed = learner.call("load").text("train_envs", max_len=1000)  # the checkpoint's word: reported
    if env in claimed.split(","):
        raise judge.LearnerError(f"the checkpoint says the held-out environment {env} was used in "
                                 f"meta-training ({claimed})")
    s = seeds(eval_seed, train_seed, eval_set, 1 + untrained)
    metrics = {"heldout_env": env, "steps": budget["steps"], "agents": n, "claimed_train_envs": claimed}
    t = time.time()
    before, greedy = meta_test(learner, env, n, budget, s["env"][:1], s["agents"][:1], s["episodes"])
    # the final agents on the fitness episodes and, beside them in the same requests, the holdout's
    sets = [s["episodes"]] if eval_set == "sealed" else [s["episodes"], s["holdout"]]
    final = greedy_returns(greedy, env, n, eps, mes, sets)  # (sets, 1, n, episodes)
    metrics.update(stats("", final[0, 0]), **stats("learner_init_", before[0]))
    if eval_set == "sealed":  # the fitness and the agents' start only: the baselines cost minutes
        init, _ = run_td3(env, n, budget, TD3_AGENTS[scale], s["env"][0], s["agents"][0], s["episodes"],
                          device, train=False)
        metrics.update(stats("init_", init), metagenrl_seconds=time.time() - t)
        return metrics
    metrics.update(stats("holdout_", final[1, 0]), metagenrl_seconds=time.time() - t)
    # one fresh agent per untrained objective, every objective a run of its own, all side by side
    t = time.time()
    _, greedy = meta_test(learner, env, 1, budget, s["env"][1:], s["agents"][1:], objective="untrained",
                          objective_seeds=s["objective"][1:], label="untrained objectives")
    finals = greedy_returns(greedy, env, 1, eps, mes, [s["episodes"]], untrained)  # (1, runs, 1, episodes)
    metrics.update(stats("untrained_objective_", finals.reshape(untrained, eps)),
                   untrained_objective_seconds=time.time() - t)
    t = time.time()
    init, td3 = run_td3(env, n, budget, TD3_AGENTS[scale], s["env"][0], s["agents"][0], s["episodes"], device)
    metrics.update(stats("td3_", td3), **stats("init_", init), td3_seconds=time.time() - t)
    t = time.time()
    size = TD3_AGENTS[scale]
    _, act = train_reinforce(env, n, budget["steps"], s["agents"][0], size["hidden"], size["layers"], mes,
                             device=device, env_seed=s["env"][0])
    rf = greedy_returns(lambda obs: act(obs, 0), env, n, eps, mes, [s["episodes"]])[0, 0]
    metrics.update(stats("reinforce_", rf), reinforce_seconds=time.time() - t)
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(BUDGET), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (the environment seeds depend on it)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder with checkpoint.pt (for the learner this script starts when run by hand)")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu (judge and learner)")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    eval_seed, eval_set = judge.eval_seed(ENV_SEED), judge.eval_set()
    standalone = [sys.executable, str(Path(__file__).with_name("learner.py")), "--out", str(cli.out),
                  "--device", cli.device]
    judge.main(lambda learner: evaluate(learner, cli.scale, cli.seed, eval_seed, eval_set,
                                        torch.device(device)),
               cli.metrics, standalone=standalone, max_reply_bytes=MAX_REPLY)


if __name__ == "__main__":
    main()
