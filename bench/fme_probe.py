"""FME on one task of the fme seed, then its final buffer scored on held-out seeds (issue 18).

Runs `train.run_task` (the seed's own FME loop) with the scale's budget and any `Args` fields
overridden, draws 256 solutions from the final buffer with the thesis's selection
(`hillclimb.Selection`, as the judge does) and executes them on environment seeds from
2^30 + 7·2^16 + seed·2^17 (never used in training), self-modifying and frozen. In-process, no
judge or learner: a probe of the method, not the seed's fitness. One JSON line:

    python bench/fme_probe.py --task cartpole --seed 0 --set parallel=16
    python bench/fme_probe.py --task swap_bandit --seed 3 --set parallel=8 --executions 1024 --L 1000

quarters: mean score of the training executions in each quarter of the budget; heldout: the 256
draws (se its standard error); frozen: the same draws with their self-modifications discarded.
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


if __name__ == "__main__":
    main()
