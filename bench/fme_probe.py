"""FME on one task of the fme seed, then its final buffer scored on held-out seeds (issue 18).

Runs `train.run_task` (the seed's own FME loop) with the scale's budget and any `Args` fields
overridden, draws 256 solutions from the final buffer with the thesis's selection
(`hillclimb.Selection`, as the judge does) and executes them on environment seeds from
2^30 + 7·2^16 + seed·2^17 (never used in training), self-modifying and frozen. In-process, no
judge or learner: a probe of the method, not the seed's fitness. One JSON line:

    python bench/fme_probe.py --task cartpole --seed 0 --set parallel=16
    python bench/fme_probe.py --task swap_bandit --seed 3 --set parallel=8 --executions 1024 --L 1000
    python bench/fme_probe.py --task cartpole --seed 2 --root   # the root's own dynamics only
    python bench/fme_probe.py --policy OUT/checkpoint.pt          # a trained swap bandit's policy

quarters: mean score of the training executions in each quarter of the budget; heldout: the 256
draws (se its standard error); frozen: the same draws with their self-modifications discarded.
With --root: the seed's random root solution (as `train.run_task` draws it) executed for L steps in
16 lanes, each layer's weight norm and the mean |logit difference| at a few steps, no FME.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "seeds" / "fme"))
import hillclimb  # noqa: E402
import tasks  # noqa: E402
import train  # noqa: E402
from srwm import SRWMNet  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cartpole", choices=tasks.TASKS + tasks.ABLATIONS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", default="smoke")
    p.add_argument("--set", action="append", default=[], help="FIELD=VALUE of train.Args")
    p.add_argument("--executions", type=int, help="override the scale's executions per task")
    p.add_argument("--L", type=int, help="override the scale's steps per execution")
    p.add_argument("--root", action="store_true", help="only the root's dynamics, no FME")
    p.add_argument("--policy", type=Path, help="a checkpoint.pt: how its swap-bandit solutions act")
    cli = p.parse_args()
    torch.set_num_threads(1)
    args = dataclasses.replace(train.Args(), **train.SCALES[cli.scale])
    for kv in cli.set:
        k, v = kv.split("=")
        kind = type(getattr(args, k))
        args = dataclasses.replace(args, **{k: v == "True" if kind is bool else kind(v)})
    budget = dict(tasks.BUDGET[cli.scale])
    budget["executions"] = cli.executions or budget["executions"]
    budget["L"] = cli.L or budget["L"]
    if cli.policy:
        return swap_policy(cli.policy)
    if cli.root:
        return root_dynamics(cli.task, args, budget["L"], cli.seed)
    wall, cpu = time.time(), time.process_time()
    buf, kwargs, log, _ = train.run_task(cli.task, args, budget, cli.seed, torch.device("cpu"))
    train_wall, train_cpu = time.time() - wall, time.process_time() - cpu
    net = SRWMNet(**kwargs)
    f = buf.fitness()
    idx = hillclimb.Selection([], f).sample(256, torch.Generator().manual_seed(12345 + cli.seed))
    seed = tasks.HELDOUT_SEED_BASE + 7 * 2**16 + cli.seed * 2**17
    _, s = tasks.execute(net.step, [w[idx] for w in buf.w], cli.task, budget["L"], seed)

    def frozen(state, x):
        return state, net.step(state, x)[1]

    _, sf = tasks.execute(frozen, [w[idx] for w in buf.w], cli.task, budget["L"], seed)
    quarters = [round(float(q.mean()), 3) for q in np.array_split(np.array(log["mean_score"]), 4)]
    print(json.dumps(dict(task=cli.task, seed=cli.seed, set=cli.set, budget=budget, quarters=quarters,
                          heldout=round(float(s.mean()), 3), se=round(float(s.std() / 16), 3),
                          frozen=round(float(sf.mean()), 3), best_fit=round(float(f.max()), 3),
                          train_wall=round(train_wall), train_cpu=round(train_cpu))))


def swap_policy(checkpoint, n=64, steps=500):
    """64 solutions drawn from a checkpoint's swap-bandit buffer, executed on held-out seeds: how
    sure they are of their action, and how often they repeat it after a win and after a loss."""
    ck = torch.load(checkpoint, weights_only=False)["tasks"]["swap_bandit"]
    net = SRWMNet(**ck["model_kwargs"])
    idx = hillclimb.Selection([], ck["fitness"]).sample(n, torch.Generator().manual_seed(1))
    w = [a[idx] for a in ck["weights"]]
    run = tasks.Execution("swap_bandit", n, tasks.HELDOUT_SEED_BASE + 99, steps)
    acts, wins, sure = [], [], []
    for _ in range(steps):
        w, y = net.step(w, run.inputs())
        run.act(y)
        acts.append(run.prev_a.argmax(1).numpy())
        wins.append(run.prev_r > 0)
        sure.append(torch.softmax(y, 1).max(1).values.numpy())
    acts, wins = np.array(acts), np.array(wins)
    stay, won = acts[1:] == acts[:-1], wins[:-1]
    print(json.dumps(dict(score=round(float(run.scores().mean()), 3), p_chosen=round(float(np.mean(sure)), 2),
                          p_stay_win=round(float(stay[won].mean()), 2),
                          p_stay_lose=round(float(stay[~won].mean()), 2))))


def root_dynamics(task, args, steps, seed, lanes=16):
    """The root of `train.run_task` (same generator, same draw) executed alone: does its
    self-modification grow the weights and the logits, or settle?"""
    net = SRWMNet([tasks.input_size(task)] + [args.hidden] * (args.layers - 1) + [tasks.NUM_ACTIONS[task]],
                  init_scale=args.init_scale)
    root = net.init_solutions(args.initial_solutions, torch.Generator().manual_seed(seed))
    w = [r[:1].expand(lanes, -1, -1).clone() for r in root]
    run = tasks.Execution(task, lanes, tasks.HELDOUT_SEED_BASE + 7 * 2**16 + seed * 2**17, steps)
    for t in range(steps):
        w, y = net.step(w, run.inputs())
        run.act(y)
        if t in (0, 10, 100, steps - 1):
            print(json.dumps(dict(step=t, norms=[round(float(a.norm(dim=(1, 2)).mean()), 1) for a in w],
                                  logit_diff=round(float((y[:, 0] - y[:, 1]).abs().mean()), 2))))
    print(json.dumps(dict(score=round(float(run.scores().mean()), 2))))


if __name__ == "__main__":
    main()
