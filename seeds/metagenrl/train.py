"""Meta-train one MetaGenRL objective with a population of agents (thesis Alg. 6).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda] [--steps N]

Every environment step, each agent of the population (agents_per_env per training environment)
acts, stores its transition, and takes one TD3 critic step; every policy_delay-th step its policy
takes a step on grad_phi L_alpha and the shared objective takes one Adam step on the meta-gradient
of Eq. 2.6 summed over the population. For the first anneal_steps the policy gradient is blended
linearly from DDPG's grad_phi Q into grad_phi L_alpha, so the random initial objective cannot
wreck the policies (App. A.2.2).

Writes OUTDIR/checkpoint.pt (objective kwargs and weights, the agent settings meta-testing must
reuse, the training environments) and OUTDIR/train_log.json.
"""

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs import EnvPool, Replay
from metagenrl import Adam, Agents, Objective


@dataclass
class Args:
    # --- sizes: set by the scale presets below ---
    train_envs: tuple = ("MountainCarContinuous", "LunarLanderContinuous")  # meta-training environments
    agents_per_env: int = 2  # population = agents_per_env * len(train_envs) (paper: 20 agents)
    steps: int = 10000  # environment steps per agent during meta-training (paper: 600K)
    hidden: int = 64  # units per hidden layer of policies and critics (paper: 350)
    layers: int = 2  # hidden layers of policies and critics
    max_episode_steps: int = 0  # cut episodes to this length (0 = the environment's own limit)
    log_every: int = 1000  # print and log every this many steps
    random_steps: int = 1000  # uniform random actions before the policy acts (paper: 10K)
    # --- hyperparameters (the offline proposer mutates these defaults; presets never touch them) ---
    meta_lr: float = 1e-3  # Adam learning rate of the objective (paper: 1e-3)
    inner_lr: float = 1e-3  # step size of the differentiated policy step phi' in Eq. 2.6 (paper: 1e-3)
    policy_lr: float = 1e-3  # Adam learning rate of the policies on grad_phi L_alpha (paper: 1e-3)
    critic_lr: float = 1e-3  # Adam learning rate of the critics (paper: 1e-3)
    lstm_units: int = 32  # hidden units of the objective's LSTM (paper: 32)
    conv_filters: int = 32  # filters of each 1x1 action convolution (paper: 32)
    conv_layers: int = 3  # action convolution layers (paper: 3)
    eta: float = 1000.0  # bound of each per-step objective value l_t (paper: 1000)
    window: int = 20  # length of the trajectory windows the LSTM reads (paper: 20)
    window_batch: int = 16  # windows per agent and update (paper: batch size 100)
    batch_size: int = 100  # transitions per agent and critic update (paper: 100)
    expl_noise: float = 0.1  # std of the Gaussian exploration noise (TD3)
    grad_clip: float = 1.0  # global-norm clip of every gradient, per agent and for the objective (paper: 1.0)
    gamma: float = 0.99  # discount (paper: 0.99)
    use_values: bool = True  # give V_t, V_{t+1} to the objective (ablation in sec. 2.5.2)
    use_time: bool = True  # give the normalised time t to the objective (ablation in sec. 2.5.2)
    anneal_steps: int = 5000  # steps over which DPG is annealed into L_alpha (paper: 10K of 600K)
    lifetime: int = 0  # re-initialise each agent after this many steps (0 = never, as in the thesis)
    cohorts: int = 1  # population copies with staggered births (each holds agents_per_env per env)
    objective_form: str = "centered"  # free (thesis), weighted, centered or positive: metagenrl.Objective
    normalize_inputs: str = "difference"  # off, affine or difference: scaling of r, V_t, V_{t+1} (README)


SCALES = {
    # seconds: one cheap env, 2 agents, short episodes
    "test": dict(train_envs=("MountainCarContinuous",), agents_per_env=2, steps=200, hidden=16,
                 max_episode_steps=50, log_every=100, random_steps=50),
    # minutes on one CPU core; LunarLanderContinuous is held out (evaluate.py)
    "smoke": dict(train_envs=("Pendulum", "MountainCarContinuous", "Reacher"), agents_per_env=1,
                  cohorts=2, lifetime=10000, steps=20000, hidden=64, layers=2, log_every=1000),
    # the thesis's setting (20 agents, 600K steps each, 350 units); Hopper is held out
    "full": dict(train_envs=("HalfCheetah", "LunarLanderContinuous"), agents_per_env=10, steps=600000,
                 hidden=350, layers=3, log_every=5000,
                 random_steps=10000, anneal_steps=10000),
}

# Settings meta-testing must reuse so fresh agents match those the objective was trained with.
AGENT_KEYS = ("hidden", "layers", "gamma", "critic_lr", "policy_lr", "inner_lr", "batch_size", "window",
              "window_batch", "random_steps", "expl_noise", "grad_clip", "normalize_inputs")


def agent_kwargs(args):
    return {k: getattr(args, k) for k in AGENT_KEYS}


def objective_kwargs(args):
    return dict(lstm_units=args.lstm_units, conv_layers=args.conv_layers, conv_filters=args.conv_filters,
                eta=args.eta, use_time=args.use_time, use_values=args.use_values,
                form=args.objective_form)


def train(args, seed, device, out):
    torch.manual_seed(seed)
    names = [n for n in args.train_envs for _ in range(args.agents_per_env)]
    life = args.lifetime or args.steps
    births = [0]

    def newborn(step):
        """A fresh cohort: one agent per entry of `names`, new policies, critics and empty buffers."""
        s = seed + 7919 * births[0]
        births[0] += 1
        pool = EnvPool(names, s, args.max_episode_steps or None)
        agents = Agents(pool.E, pool.obs_dim, pool.act_dim, pool.act_mask, device=device,
                        **agent_kwargs(args))
        agents.gen.manual_seed(s)
        return {"pool": pool, "replay": Replay(pool.E, pool.obs_dim, pool.act_dim, min(life, args.steps), s),
                "agents": agents, "born": step}

    cohorts = [newborn(0) for _ in range(args.cohorts)]
    objective = Objective(**objective_kwargs(args)).to(device)
    meta_opt = Adam(objective.parameters(), lr=args.meta_lr)
    log, start, meta_loss = [], time.time(), float("nan")
    E = len(names)
    cos_sum, cos_n = torch.zeros(E), 0  # cosine of grad_phi L_alpha with DPG, per agent
    for step in range(args.steps):
        # linear annealing from DPG to L_alpha, counted from the first policy action of meta-training
        dpg_weight = min(1.0, max(0.0, 1.0 - (step - args.random_steps) / max(args.anneal_steps, 1)))
        for k, c in enumerate(cohorts):
            # cohort k is reborn every `lifetime` steps, the cohorts staggered by lifetime / cohorts, so
            # that the objective keeps meeting young agents (thesis App. A.1.2: it otherwise "forgets
            # about the early stages of training a randomly initialized agent")
            if args.lifetime and step > 0 and (step + k * args.lifetime // args.cohorts) % args.lifetime == 0:
                c = cohorts[k] = newborn(step)
            c["replay"].add(c["pool"].step(c["agents"].act(c["pool"].obs, step - c["born"])))
            upd = c["agents"].update(c["replay"], objective, dpg_weight, meta=True)
            if upd:  # a policy step happened: apply the meta-gradient of Eq. 2.6 summed over the cohort
                meta_loss, grads, cos = upd
                cos_sum += cos.detach().cpu()
                cos_n += 1
                norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
                scale = min(1.0, args.grad_clip / (norm.item() + 1e-6)) if args.grad_clip > 0 else 1.0
                meta_opt.step([g * scale for g in grads])
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            recent = {n: [] for n in args.train_envs}
            for c in cohorts:
                for n, rets in zip(names, c["pool"].finished):
                    recent[n] += rets[-3:]
            row = {"step": step + 1, "seconds": round(time.time() - start, 1), "meta_loss": meta_loss,
                   "dpg_weight": round(dpg_weight, 3), "ages": [step + 1 - c["born"] for c in cohorts],
                   **{f"cos_dpg_{n}": round(float(cos_sum[[k for k, m in enumerate(names) if m == n]].mean())
                                            / max(cos_n, 1), 3) for n in args.train_envs},
                   **{f"return_{n}": float(np.mean(r)) if r else None for n, r in recent.items()}}
            log.append(row)
            cos_sum, cos_n = torch.zeros(E), 0
            print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"objective_kwargs": objective_kwargs(args), "objective": objective.state_dict(),
                "agent_kwargs": agent_kwargs(args), "train_envs": list(args.train_envs),
                "args": json.dumps(dataclasses.asdict(args))}, out / "checkpoint.pt")
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return log


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    p.add_argument("--steps", type=int, default=0, help="override the scale's steps (to try `full` on CPU)")
    cli = p.parse_args()
    torch.set_num_threads(1)
    args = dataclasses.replace(Args(), **SCALES[cli.scale])
    if cli.steps:
        args = dataclasses.replace(args, steps=cli.steps, log_every=min(args.log_every, cli.steps))
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    train(args, cli.seed, torch.device(device), cli.out)


if __name__ == "__main__":
    main()
