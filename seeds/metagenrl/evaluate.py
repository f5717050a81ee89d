"""Meta-test a learned MetaGenRL objective on an environment never used in meta-training (Alg. 7).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: the framework restores this file (and envs.py, reinforce.py) before evaluation. The
held-out environment is fixed here per scale and refused if the checkpoint says it was trained on.
This script owns the environments, the step budget and the returns: it builds fresh agents from
the variant's metagenrl.py (with the settings saved in the checkpoint), steps their environments,
and calls `agents.update(replay, objective)` once per environment step with the objective FROZEN.

Fitness `return`: the mean undiscounted return of the final deterministic policies of `agents`
fresh agents, `episodes` evaluation episodes each (fixed seeds), after `steps` training steps.
Baselines on the same environment, budget and evaluation episodes:
  - `td3_return`: the same agents trained by their ordinary deterministic policy gradient
    grad_phi Q(s, pi(s)) with all TD3 machinery (i.e. `agents.update(replay, None)`);
  - `reinforce_return`: on-policy REINFORCE with a GAE baseline (reinforce.py);
  - `init_return`: the fresh agents before any training (what 'learning nothing' scores);
  - `untrained_objective_return`: fresh agents each trained by an UNTRAINED objective of the same
    architecture and form (`untrained_objectives` independent random initialisations, one agent each,
    same budget): what the objective's form does without meta-learning. `return` above it is what
    meta-training added.
"""

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from envs import EnvPool, Replay
from reinforce import train_reinforce

# Held-out environment and meta-test budget per scale. Fixed, independent of --seed, so every
# variant and training seed is scored on the same task with the same environment seeds.
HELDOUT = {"test": "Pendulum", "smoke": "LunarLanderContinuous", "full": "Hopper"}
BUDGET = {
    "test": dict(agents=1, steps=200, episodes=1, max_episode_steps=50, untrained_objectives=1),
    "smoke": dict(agents=3, steps=10000, episodes=5, max_episode_steps=None, untrained_objectives=4),
    "full": dict(agents=4, steps=1_000_000, episodes=10, max_episode_steps=None,  # paper: 1M steps
                 untrained_objectives=2),
}
ENV_SEED = 424242


class EvalError(RuntimeError):
    pass


def greedy_returns(act, env, n, episodes, max_episode_steps, seed=ENV_SEED + 7):
    """Returns (n, episodes) of the deterministic policies act(obs, step, explore=False)."""
    pool = EnvPool([env] * n, seed, max_episode_steps)
    while min(len(f) for f in pool.finished) < episodes:
        a = act(pool.obs, 0, explore=False)
        if a.shape != (n, pool.act_dim) or not np.isfinite(a).all():
            raise EvalError(f"agents returned bad actions: shape {a.shape}, finite={np.isfinite(a).all()}")
        pool.step(a)
    return np.array([f[:episodes] for f in pool.finished])


def train_fresh(mod, env, budget, agent_kwargs, objective, device, seed, label=None):
    """Train `agents` fresh agents on env for `steps` steps; returns (returns before, returns after)."""
    n, steps, eps, mes = budget["agents"], budget["steps"], budget["episodes"], budget["max_episode_steps"]
    torch.manual_seed(seed)
    pool = EnvPool([env] * n, seed, mes)
    replay = Replay(n, pool.obs_dim, pool.act_dim, steps, seed)
    try:
        agents = mod.Agents(n, pool.obs_dim, pool.act_dim, pool.act_mask, device=device, **agent_kwargs)
        agents.gen.manual_seed(seed)
    except Exception as e:
        raise EvalError(f"cannot build agents from metagenrl.py and the checkpoint: {e!r}") from e
    before = greedy_returns(agents.act, env, n, eps, mes)
    for step in range(steps):
        replay.add(pool.step(agents.act(pool.obs, step)))
        agents.update(replay, objective)  # meta-test: the objective is frozen, no DPG annealing
        if (step + 1) % max(steps // 5, 1) == 0:
            recent = [f[-1] for f in pool.finished if f]
            name = label or ("td3" if objective is None else "learned objective")
            print(f"{name}: step {step + 1}/{steps}, last episode returns {np.round(recent, 1).tolist()}",
                  flush=True)
    return before, greedy_returns(agents.act, env, n, eps, mes)


def untrained_objective(mod, ckpt, device, seed):
    """An objective built like the checkpoint's, with fresh random weights (torch's default init)."""
    torch.manual_seed(seed)
    try:
        objective = mod.Objective(**ckpt["objective_kwargs"]).to(device)
    except Exception as e:
        raise EvalError(f"cannot build an untrained objective from metagenrl.py: {e!r}") from e
    return objective.requires_grad_(False).eval()


def load(out, device):
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise EvalError(f"no checkpoint at {path}: run train.py --out {out} first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)  # data only, no pickled code
    except Exception as e:
        raise EvalError(f"cannot read {path}: {e}") from e
    for key in ("objective_kwargs", "objective", "agent_kwargs", "train_envs"):
        if key not in ckpt:
            raise EvalError(f"{path} lacks {key!r}; was it written by train.py?")
    try:
        mod = importlib.import_module("metagenrl")  # the variant's code, next to this script
        objective = mod.Objective(**ckpt["objective_kwargs"]).to(device)
        objective.load_state_dict(ckpt["objective"])
    except Exception as e:
        raise EvalError(f"cannot build the objective from metagenrl.py and the checkpoint: {e!r}") from e
    objective.requires_grad_(False)
    return mod, objective.eval(), ckpt


def stats(prefix, r):
    per_agent = r.mean(1)
    se = per_agent.std(ddof=1) / math.sqrt(len(per_agent)) if len(per_agent) > 1 else 0.0
    return {f"{prefix}return": float(per_agent.mean()), f"{prefix}return_se": float(se)}


def evaluate(out, scale, seed, device):
    env, budget = HELDOUT[scale], BUDGET[scale]
    mod, objective, ckpt = load(out, device)
    if env in ckpt["train_envs"]:
        raise EvalError(f"the held-out environment {env} was used in meta-training ({ckpt['train_envs']})")
    kw = ckpt["agent_kwargs"]
    metrics = {"heldout_env": env, "steps": budget["steps"], "agents": budget["agents"]}
    eval_seed = ENV_SEED + 1000 * seed  # fresh agents differ per training seed, envs do not
    t = time.time()
    before, after = train_fresh(mod, env, budget, kw, objective, device, eval_seed)
    metrics.update(stats("", after), **stats("init_", before), metagenrl_seconds=time.time() - t)
    t, untrained = time.time(), []
    for k in range(budget["untrained_objectives"]):  # one fresh agent per untrained objective
        fresh = untrained_objective(mod, ckpt, device, eval_seed + 17 * (k + 1))
        untrained.append(train_fresh(mod, env, {**budget, "agents": 1}, kw, fresh, device, eval_seed + k,
                                     label=f"untrained objective {k + 1}")[1])
    metrics.update(stats("untrained_objective_", np.concatenate(untrained)),
                   untrained_objective_seconds=time.time() - t)
    t = time.time()
    _, td3 = train_fresh(mod, env, budget, kw, None, device, eval_seed)
    metrics.update(stats("td3_", td3), td3_seconds=time.time() - t)
    t = time.time()
    _, act = train_reinforce(env, budget["agents"], budget["steps"], eval_seed, kw["hidden"], kw["layers"],
                             budget["max_episode_steps"], device=device)
    rf = greedy_returns(act, env, budget["agents"], budget["episodes"], budget["max_episode_steps"])
    metrics.update(stats("reinforce_", rf), reinforce_seconds=time.time() - t)
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(BUDGET), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (seeds the fresh agents)")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        metrics = evaluate(cli.out, cli.scale, cli.seed, torch.device(device))
    except EvalError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    numbers = [v for v in metrics.values() if isinstance(v, float)]
    if not all(math.isfinite(v) for v in numbers):
        print(f"evaluate.py: error: non-finite metrics {metrics}", file=sys.stderr)
        sys.exit(1)
    cli.metrics.parent.mkdir(parents=True, exist_ok=True)
    cli.metrics.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
