"""Fitness monotonic execution (FME) of self-referential networks, with no meta-optimizer (Alg. 12).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda]

For each task of tasks.TASKS and each ablation of tasks.ABLATIONS (the swap bandit without the
reward input, which the evaluator reports beside the fitness), independently: start from one
randomly initialised solution phi (a stack of self-referential weight matrices, srwm.py).
Repeat until the task's budget of executions (tasks.BUDGET) is spent:
  1. sample `parallel` solutions from the buffer, monotonically in their performance
     (bucketed LRU buffer, better buckets exponentially more often: `Buffer.sample`);
  2. execute each for L steps in the task; the solution modifies its own weights while acting;
  3. add the self-modified solutions back to the buffer, scored by the average reward of the
     execution that produced them (the executed parent is credited with it too).
Nothing but selection acts on the solutions: all changes come from their own self-modification.

Writes OUTDIR/checkpoint.pt (per task: the final buffer's solutions and their fitness) and
OUTDIR/train_log.json (per task: mean score of each generation's executions).
"""

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import tasks
from srwm import SRWMNet


@dataclass
class Args:
    # --- sizes: set by the scale presets below ---
    parallel: int = 64  # executions per generation, run side by side (batched); Alg. 12 runs one at a
    # time: fewer per generation = more rounds of selection within the same budget (smoke: 16)
    capacity: int = 100  # solutions kept per bucket, most recently used first (App. E.1: 100)
    log_every: int = 4  # print every this many generations
    # --- hyperparameters (the offline proposer mutates these defaults; presets never touch them) ---
    hidden: int = 32  # units of each hidden self-referential layer (App. E.1: 32)
    layers: int = 3  # stacked self-referential layers (App. E.1: 3)
    buckets: int = 100  # m buckets evenly covering the current fitness range (App. E.1: 100)
    temperature: float = 20.0  # best bucket sampled e^temperature times more than the worst (App. E.1: 20)
    init_scale: float = 1.0  # actual std of the initial weights, times 1/sqrt(fan-in) (App. E.1: 1)
    credit_parent: bool = True  # also average each execution's score into the executed parent's fitness
    initial_solutions: int = 1  # random solutions the buffer starts from (App. E.1: 1)


# Presets override only size fields, never the hyperparameters above.
SCALES = {
    "test": dict(parallel=8, capacity=10, log_every=1),
    "smoke": dict(parallel=16, capacity=100, log_every=32),
    "full": dict(parallel=256, capacity=100, log_every=16),
}


class Buffer:
    """Solutions with running-average fitness, selected monotonically in their fitness.

    m buckets evenly cover [min fitness, max fitness] of the solutions in the buffer; a
    non-empty bucket at relative position u in [0, 1] is chosen with probability proportional
    to exp(temperature * u), then one of its members uniformly, so many solutions sharing a
    bad fitness level cannot crowd out a few good ones. A bucket keeps its `capacity` most
    recently used members (added or selected); older ones are evicted.
    """

    def __init__(self, weights, args):
        self.w = list(weights)  # per layer (P, rows, in)
        p = self.w[0].shape[0]
        self.score_sum = torch.zeros(p, dtype=torch.float64)
        self.count = torch.zeros(p, dtype=torch.float64)
        self.last_used = torch.zeros(p, dtype=torch.long)
        self.clock = 0
        self.args = args

    def fitness(self) -> torch.Tensor:
        scored = self.count > 0
        fill = (self.score_sum[scored] / self.count[scored]).min() if scored.any() else torch.tensor(0.0)
        return torch.where(scored, self.score_sum / self.count.clamp(min=1), fill.double())

    def bucket_of(self, f: torch.Tensor) -> torch.Tensor:
        lo, hi = f.min(), f.max()
        m = self.args.buckets
        if hi - lo < 1e-12:
            return torch.zeros_like(f, dtype=torch.long)
        return ((f - lo) / (hi - lo) * m).long().clamp(0, m - 1)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        b = self.bucket_of(self.fitness())
        m = self.args.buckets
        members = torch.bincount(b, minlength=m).double()
        # log-probability of a solution: bucket preference minus log(members of its bucket)
        logit = self.args.temperature * b.double() / max(m - 1, 1) - members[b].log()
        probs = (logit - logit.max()).exp()
        idx = torch.multinomial(probs, n, replacement=True, generator=gen)
        self.clock += 1
        self.last_used[idx] = self.clock
        return idx

    def add(self, weights, scores: torch.Tensor, parents: torch.Tensor) -> None:
        scores = scores.double()
        if self.args.credit_parent:
            self.score_sum.index_add_(0, parents, scores)
            self.count.index_add_(0, parents, torch.ones_like(scores))
        self.w = [torch.cat([a, b]) for a, b in zip(self.w, weights)]
        self.score_sum = torch.cat([self.score_sum, scores])
        self.count = torch.cat([self.count, torch.ones_like(scores)])
        self.last_used = torch.cat([self.last_used, torch.full((len(scores),), self.clock)])
        self.evict()

    def evict(self) -> None:
        b = self.bucket_of(self.fitness())
        # rank within bucket by recency: sort by (bucket, -last_used), keep the first `capacity`
        order = torch.argsort(b * (self.clock + 2) - self.last_used, stable=True)
        bs = b[order]
        first = torch.searchsorted(bs, bs, right=False)
        keep = order[(torch.arange(len(bs)) - first) < self.args.capacity]
        keep = keep.sort().values
        self.w = [w[keep] for w in self.w]
        self.score_sum, self.count = self.score_sum[keep], self.count[keep]
        self.last_used = self.last_used[keep]


def run_task(task, args, budget, seed, device):
    """FME on one task; returns the final buffer, model kwargs and the per-generation log."""
    gen = torch.Generator().manual_seed(seed)
    kwargs = dict(sizes=[tasks.input_size(task)] + [args.hidden] * (args.layers - 1)
                  + [tasks.NUM_ACTIONS[task]], init_scale=args.init_scale)
    net = SRWMNet(**kwargs)
    buf = Buffer(net.init_solutions(args.initial_solutions, gen), args)
    log = {"executions": [], "mean_score": [], "best_fitness": [], "buffer_size": []}
    done, g, start = 0, 0, time.time()
    while done < budget["executions"]:
        n = min(args.parallel, budget["executions"] - done)
        parents = buf.sample(n, gen)
        state = [w[parents].to(device) for w in buf.w]
        env_seed = (seed * 1_000_003 + g) % tasks.HELDOUT_SEED_BASE  # training seeds only
        state, scores = tasks.execute(net.step, state, task, budget["L"], env_seed, device)
        buf.add([w.cpu() for w in state], torch.from_numpy(scores), parents)
        done, g = done + n, g + 1
        log["executions"].append(done)
        log["mean_score"].append(float(scores.mean()))
        log["best_fitness"].append(float(buf.fitness().max()))
        log["buffer_size"].append(len(buf.count))
        if g % args.log_every == 0 or done >= budget["executions"]:
            print(f"{task:11s} executions {done:6d}  mean score {scores.mean():8.3f}  "
                  f"best fitness {buf.fitness().max():8.3f}  buffer {len(buf.count):5d}  "
                  f"elapsed {time.time() - start:6.1f}s", flush=True)
    return buf, kwargs, log, done


def train(args, scale, seed, out, device):
    torch.manual_seed(seed)
    budget = tasks.BUDGET[scale]
    result, logs = {}, {}
    for task in tasks.TASKS + tasks.ABLATIONS:
        buf, kwargs, log, done = run_task(task, args, budget, seed, device)
        result[task] = {"model_kwargs": kwargs, "weights": buf.w, "fitness": buf.fitness().float(),
                        "executions": done}
        logs[task] = log
    save(out, result, args, scale, seed, logs)


# scientist: frozen-begin  (CLI and checkpoint format read by learner.py)
def save(out, result, args, scale, seed, logs):
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"tasks": result, "args": dataclasses.asdict(args), "scale": scale, "seed": seed},
               out / "checkpoint.pt")
    (out / "train_log.json").write_text(json.dumps(logs, indent=1))
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
