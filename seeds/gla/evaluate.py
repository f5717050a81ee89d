"""Meta-test a trained GLA by in-context RL on environments it never trained on (thesis Alg. 11).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: the framework restores this file before evaluation. This script owns the
environment loop: the agent gets observations, rewards and episode-end flags, returns
actions, and its weights must not change (checked). Each of LANES lanes starts with an empty
history and fresh random projections and acts for HORIZON steps; returns of the episodes it
plays along the way show whether it learns in context.

Score of a lane: early = mean return of the episodes that start in the first quarter of the
horizon, late = mean return of the episodes that end in the last quarter. Only complete
episodes count, unless the quarter has none; then the episode cut by the horizon counts with
its partial return (for CartPole, whose reward is +1 per step, that understates `late`).
Fitness `icl_improvement` = mean over lanes and held-out environments of late - early.

Baselines on the same environments with the same number of environment steps per lane:
PPO (ppo.py, fixed settings, one environment per run) scored the same way, and a random
policy (standard normal action vectors).
"""

import argparse
import hashlib
import importlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from envs import Lanes
from ppo import PPOConfig, run_ppo

# Held-out environments (never in train.py's meta-training lists), steps per lane, lanes, PPO runs.
# smoke: a 3-D PointGoal (new dimensionality, goal off every axis) after classic control and 2-D PointGoals
HELDOUT = {"test": ["PointGoal3D-v0"], "smoke": ["PointGoal3D-v0"],
           # thesis Fig. 6.5 after Ant: Reacher, HalfCheetah, DMC Cartpole (no dm_control here: the
           # MuJoCo InvertedPendulum is the cart-pole stand-in)
           "full": ["Reacher-v5", "HalfCheetah-v5", "InvertedPendulum-v5"]}
HORIZON = {"test": 32, "smoke": 512, "full": 4096}
LANES = {"test": 2, "smoke": 32, "full": 32}
PPO_RUNS = {"test": 1, "smoke": 16, "full": 8}
EVAL_SEED = 20231103  # fixed: every variant and training seed meets the same environments and projections


class EvalError(RuntimeError):
    pass


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


def params_digest(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def run_gla(model, env_id, scale, device):
    n, horizon = LANES[scale], HORIZON[scale]
    lanes = Lanes(env_id, n, EVAL_SEED)
    gla = importlib.import_module("gla")
    agent = gla.InContextAgent(model, lanes.obs_dim, lanes.act_dim, n, EVAL_SEED, device)
    obs = lanes.obs.copy()
    for _ in range(horizon):
        a = np.asarray(agent.act(obs), dtype=np.float64)
        if a.shape != (n, lanes.act_dim) or not np.isfinite(a).all():
            raise EvalError(f"agent returned bad actions on {env_id}: shape {a.shape}, "
                            f"finite={np.isfinite(a).all()}")
        obs, r, term, trunc = lanes.step(a)
        agent.observe(r, term, trunc)
    return lane_scores(lanes.all_episodes(), n, horizon)


def run_random(env_id, scale):
    n, horizon = LANES[scale], HORIZON[scale]
    lanes = Lanes(env_id, n, EVAL_SEED)
    rng = np.random.default_rng(EVAL_SEED)
    for _ in range(horizon):
        lanes.step(rng.standard_normal((n, lanes.act_dim)))
    return lane_scores(lanes.all_episodes(), n, horizon)


def run_ppo_baseline(env_id, scale):
    horizon = HORIZON[scale]
    n_steps = max(4, horizon // 8)  # 8 PPO updates within the horizon
    cfg = PPOConfig(n_envs=1, n_steps=n_steps, minibatches=min(4, n_steps))
    early, late = [], []
    for run in range(PPO_RUNS[scale]):
        out = run_ppo(env_id, horizon, seed=EVAL_SEED + run, cfg=cfg)
        e, la = lane_scores(out["episodes"], 1, out["steps_per_lane"])
        early.append(e[0])
        late.append(la[0])
    return np.array(early), np.array(late)


def load_model(out, device):
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise EvalError(f"no checkpoint at {ckpt_path}: run train.py --out {out} first")
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)  # data only, no pickled code
    except Exception as e:
        raise EvalError(f"cannot read {ckpt_path}: {e}") from e
    for key in ("model_kwargs", "state_dict", "train_envs"):
        if key not in ckpt:
            raise EvalError(f"{ckpt_path} lacks {key!r}; was it written by train.py?")
    try:
        gla = importlib.import_module("gla")  # the variant's model file, next to this script
        model = gla.GLA(**ckpt["model_kwargs"]).to(device)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise EvalError(f"cannot build the agent from gla.py and the checkpoint: {e!r}") from e
    return model.eval(), list(ckpt["train_envs"])


def evaluate(out, scale, device, envs=None):
    """Metrics on HELDOUT[scale]; envs (diagnostics only, never the fitness) replaces that list."""
    start = time.time()
    model, train_envs = load_model(out, device)
    envs = envs or HELDOUT[scale]
    leaked = set(train_envs) & set(envs)
    if leaked and envs is HELDOUT[scale]:
        raise EvalError(f"meta-training used the held-out environment(s) {sorted(leaked)}")
    if model.max_len < HORIZON[scale]:
        raise EvalError(f"the agent's context ({model.max_len}) is shorter than the horizon {HORIZON[scale]}")
    digest = params_digest(model)
    metrics, fit = {}, []
    many = len(envs) > 1
    for env_id in envs:
        pre = f"{env_id.split('-')[0]}_" if many else ""
        torch.manual_seed(EVAL_SEED)
        e, la = run_gla(model, env_id, scale, device)
        if params_digest(model) != digest:
            raise EvalError("the agent's weights changed during meta-test; it must learn in context only")
        imp = la - e
        fit.append(imp.mean())
        metrics[f"{pre}icl_improvement"] = float(imp.mean())
        metrics[f"{pre}icl_improvement_se"] = float(imp.std() / math.sqrt(len(imp)))
        metrics[f"{pre}early_return"], metrics[f"{pre}late_return"] = float(e.mean()), float(la.mean())
        pe, pl = run_ppo_baseline(env_id, scale)
        metrics[f"{pre}ppo_improvement"] = float((pl - pe).mean())
        metrics[f"{pre}ppo_early_return"] = float(pe.mean())
        metrics[f"{pre}ppo_late_return"] = float(pl.mean())
        re_, rl = run_random(env_id, scale)
        metrics[f"{pre}random_return"] = float(np.concatenate([re_, rl]).mean())
    if many:
        metrics["icl_improvement"] = float(np.mean(fit))
    metrics["horizon"] = HORIZON[scale]
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(HORIZON), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (meta-test environments are fixed)")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    p.add_argument("--envs", nargs="+", help="diagnostics: meta-test on these environment ids instead")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        metrics = evaluate(cli.out, cli.scale, torch.device(device), cli.envs)
    except EvalError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    if not all(math.isfinite(v) for v in metrics.values()):
        print(f"evaluate.py: error: non-finite metrics {metrics}", file=sys.stderr)
        sys.exit(1)
    cli.metrics.parent.mkdir(parents=True, exist_ok=True)
    cli.metrics.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
