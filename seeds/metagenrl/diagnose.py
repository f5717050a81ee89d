"""Diagnostic (not the fitness): does the learned objective point policies where the critic says?

    python diagnose.py --out OUTDIR [--env Pendulum] [--steps 3000] [--batches 20]

Trains 3 fresh agents on `env` with ordinary TD3 for `steps` steps (so the critics mean something),
then compares, on replay windows, the policy gradient of the learned objective grad_phi L_alpha
with the deterministic policy gradient -grad_phi Q(s, pi(s)): the cosine per agent, averaged over
`batches` batches. Eq. 2.6 trains L_alpha so that a step on it raises Q, i.e. towards a positive
cosine. The same is printed for a freshly initialised objective of the same shape (seed 0).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import metagenrl
from envs import EnvPool, Replay


def cosines(agents, replay, objective, batches):
    params = dict(agents.policy.named_parameters())
    out = []
    for _ in range(batches):
        w = replay.sample_windows(agents.window_batch, agents.window, "cpu")
        inputs = agents.objective_inputs(w)
        theta = list(params.values())
        g_l = torch.autograd.grad(agents.objective_loss(objective, w, inputs, params).sum(), theta)
        E, B, L = w["rew"].shape
        obs = w["obs"].reshape(E, B * L, -1)
        g_q = torch.autograd.grad(-agents.q(agents.q1, obs, agents.pi(obs)).mean(1).sum(), theta)
        a = torch.cat([g.flatten(1) for g in g_l], 1)
        b = torch.cat([g.flatten(1) for g in g_q], 1)
        out.append(torch.nn.functional.cosine_similarity(a, b, dim=1).numpy())
    return np.mean(out, 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--env", default="Pendulum")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batches", type=int, default=20)
    cli = p.parse_args()
    torch.set_num_threads(1)
    ckpt = torch.load(cli.out / "checkpoint.pt", weights_only=True)
    learned = metagenrl.Objective(**ckpt["objective_kwargs"])
    learned.load_state_dict(ckpt["objective"])
    torch.manual_seed(0)
    fresh = metagenrl.Objective(**ckpt["objective_kwargs"])
    pool = EnvPool([cli.env] * 3, 0)
    replay = Replay(3, pool.obs_dim, pool.act_dim, cli.steps, 0)
    agents = metagenrl.Agents(3, pool.obs_dim, pool.act_dim, pool.act_mask, **ckpt["agent_kwargs"])
    for step in range(cli.steps):
        replay.add(pool.step(agents.act(pool.obs, step)))
        agents.update(replay, None)
    res = {"env": cli.env, "td3_steps": cli.steps,
           "cos_learned": [round(float(c), 3) for c in cosines(agents, replay, learned, cli.batches)],
           "cos_fresh": [round(float(c), 3) for c in cosines(agents, replay, fresh, cli.batches)]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
