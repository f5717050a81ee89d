"""Meta-train SymLA on bandits with antithetic evolution strategies (thesis sec. 4.4.6, Alg. 14).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda]

Each ES step samples an arm count K from `train_arms` and, per antithetic pair, `lifetimes`
K-armed bandits with p_i ~ U[0, 1]; the members theta +- sigma*eps live the same lifetimes with
shared random numbers. Fitness = mean reward per pull over each member's lifetimes (the lifetime
sum of rewards of Eq. 4.10, divided by a constant). The ES gradient

    g = mean_pairs [(F(theta + sigma eps) - F(theta - sigma eps)) / (2 sigma)] eps

is applied by Adam (App. C.2.2). Arm counts of the evaluator's held-out set are never used here.

Writes OUTDIR/checkpoint.pt (agent kwargs, theta, Args) and OUTDIR/train_log.json.
"""

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import bandits
from symla import SymLA


@dataclass
class Args:
    # --- sizes: set by the scale presets below ---
    steps: int = 300  # ES steps (App. C.2.2: 4,000 for bandits)
    population: int = 64  # ES members, antithetic pairs (App. C.2.2: 512)
    lifetimes: int = 16  # bandits each member lives per step (App. C.2.2: 100 for bandits)
    log_every: int = 10  # print every this many steps
    # --- hyperparameters (the offline proposer mutates these defaults; presets never touch them) ---
    hidden: int = 16  # N, sub-LSTM state size (App. C.2.1: 16; 64 for the bandits)
    msg: int = 8  # M, forward and backward message size (App. C.2.1: 8)
    ticks: int = 2  # micro ticks per environment step (App. C.2.1: 2)
    sigma: float = 0.2  # ES noise std (App. C.2.2: 0.2 for bandits)
    meta_lr: float = 0.05  # Adam step size on theta (App. C.2.2: 0.2 for bandits)
    forget_bias: float = 1.0  # initial forget-gate bias of the sub-LSTMs
    state_init_std: float = 0.1  # std of the random initial cell states of a lifetime
    train_arms: tuple = (2, 5)  # arm counts meta-trained on (the evaluator holds out others)


SCALES = {
    "test": dict(steps=3, population=8, lifetimes=2, log_every=1),
    "smoke": dict(steps=400, population=32, lifetimes=8, log_every=10),
    # App. C.2.2 for bandits: population 512, 100 evaluations per member, 4,000 steps.
    "full": dict(steps=4000, population=512, lifetimes=100, log_every=50),
}


def agent_kwargs(args):
    return dict(hidden=args.hidden, msg=args.msg, ticks=args.ticks, state_init_std=args.state_init_std,
                forget_bias=args.forget_bias)


def train(args, scale, seed, out, device):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    kwargs = agent_kwargs(args)
    agent = SymLA(**kwargs)
    theta = agent.init_params(gen).to(device).requires_grad_()
    opt = torch.optim.Adam([theta], lr=args.meta_lr)
    print(f"SymLA meta-parameters {agent.num_params()} device {device}", flush=True)
    log = {"step": [], "arms": [], "mean_reward": [], "regret": [], "elapsed_s": []}
    start, half = time.time(), args.population // 2
    for step in range(1, args.steps + 1):
        eps = torch.randn(half, theta.numel(), generator=gen).to(device)
        members = torch.cat([theta.detach() + args.sigma * eps, theta.detach() - args.sigma * eps])
        arms = args.train_arms[int(torch.randint(len(args.train_arms), (1,), generator=gen))]
        probs = bandits.independent((half, args.lifetimes), arms, gen).repeat(2, 1, 1).to(device)
        state = agent.init_state(members, args.lifetimes, 1, arms, gen)
        rewards, regret = bandits.run_lifetimes(agent.step, state, probs, gen, paired=True)
        fit = rewards.mean((1, 2))  # (P,)
        grad = ((fit[:half] - fit[half:]) / (2 * args.sigma))[:, None] * eps
        theta.grad = -grad.mean(0)  # Adam minimises; ES estimates the ascent direction
        opt.step()
        if step % args.log_every == 0 or step == args.steps:
            elapsed = time.time() - start
            for k, v in (("step", step), ("arms", arms), ("mean_reward", fit.mean().item()),
                         ("regret", regret.mean().item()), ("elapsed_s", elapsed)):
                log[k].append(v)
            print(f"step {step:5d}  arms {arms:2d}  mean reward {fit.mean():.3f}  "
                  f"regret {regret.mean():6.2f}  elapsed {elapsed:6.1f}s", flush=True)
    save(out, kwargs, theta.detach().cpu(), args, scale, seed, log)


# scientist: frozen-begin  (CLI and checkpoint format read by evaluate.py)
def save(out, kwargs, theta, args, scale, seed, log):
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"agent_kwargs": kwargs, "theta": theta, "args": dataclasses.asdict(args),
                "scale": scale, "seed": seed}, out / "checkpoint.pt")
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"saved {out / 'checkpoint.pt'}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)  # the framework runs training seeds in parallel, one core each
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args = dataclasses.replace(Args(), **SCALES[cli.scale])
    train(args, cli.scale, cli.seed, cli.out, torch.device(device))


if __name__ == "__main__":
    main()
# scientist: frozen-end
