"""Score the solutions FME left after its fixed budget, on secret held-out environment seeds, beside HC.

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: this is the judge. The variant's code never runs in this process: the learner
(learner.py, which imports the variant's srwm.py and loads the checkpoint) is another process,
in its own sandbox, and answers over the harness's protocol (scientist.harness). This script
owns the environments and the action sampling (tasks.py), the rewards, the scores, MAX_SCORE
and the metrics file. Run by hand, it starts learner.py itself (--out is the checkpoint folder).

For each task, the judge asks the learner for its final buffer's training fitness (one number
per solution), draws EVAL_EXECUTIONS solutions from it with the thesis's fitness-monotonic
selection (hillclimb.Selection: 100 buckets, base e^20, the judge's generator), i.e. the
solutions FME would execute next, and executes them for L steps: at every step it sends the
inputs x_t of all lanes (observation, previous action, previous reward, bias; tasks.py), takes
back the action logits (checked: shape, finite), samples the actions itself (Gumbel-max, its
own generator) and steps its environments; the solutions rewrite themselves as they act, in the
learner. The task score is the mean score of those executions (average reward per step for the
bandits, average episode return for CartPole, see tasks.py). The fitness `fme_score` is the mean
over the three tasks of score / best possible score (tasks.MAX_SCORE).

Beside the drawn solutions, in the same batch (one request per step for all lanes), each group
of lanes on its own block of environment seeds: `holdout_*` a second draw, scored the same way
(a gap between `fme_score` and `holdout_fme_score` shows selection fitting the fitness seeds);
`*_best_score` the solution the buffer ranks highest; `*_frozen_score` the drawn solutions with
every self-modification discarded (the learner keeps their stored weights; a diagnostic: does
self-modifying while acting help the policy within an execution?). The ablation of
tasks.ABLATIONS (the swap bandit without the reward input) is scored the same way and reported
(`swap_bandit_noreward_*`, `swap_bandit_reward_input_gain`), but is not part of the fitness.

The seeds: every environment seed and action-noise seed of an execution comes from the run's
secret evaluation seed (scientist.harness.judge.eval_seed; EVAL_SEED by hand), in [2^30, 2^31),
which training never uses; each group of lanes gets its own block of 2^16 seeds (CartPole seeds
lane i with seed + i, so no two lanes of a run share an episode start or a swap schedule: one
learner process serves them all and could otherwise pass what one lane saw to another). The
sealed set (SCIENTIST_EVAL_SET=sealed: scored only for the baseline and the final best, under
the same metric names) executes only the drawn solutions of the three tasks, on the odd blocks,
which no fitness uses (the fitness and its diagnostics use the even ones).

What the checkpoint says about itself is the variant's word: the fitness of its solutions (its
own ranking, written by its train.py) decides only which of its solutions the judge executes,
never a score; a buffer that lists one solution many times or inflates one fitness only moves
the draws among its own solutions (as a greedier selection in train.py would), each of which is
scored here on seeds it never saw. The executions it claims are checked against the budget (a
claim over it is a violation) but cannot be verified: training compute is bounded by the
training step's time limit.

The hill-climbing baseline (hillclimb.py, protected, run here in the judge) gets the same budget
of executions of the same length and the same selection; its sigma is tuned on a grid on
training seeds; its final buffer is scored on the same seeds as FME's drawn solutions, giving
`hc_*` and `hc_score`. Since hill climbing executes its drawn parents only after adding noise,
`hc_*_executed_score` (and `hc_executed_score`) also score the solutions it would execute next,
parents + N(0, sigma^2): the counterpart of FME's drawn solutions, which change themselves as
they act, and the literal "average reward of executed solutions after a fixed number of
executions".
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hillclimb
import tasks
from scientist.harness import judge

EVAL_EXECUTIONS = {"test": 16, "smoke": 256, "full": 1024}
HC_SIGMAS = {"test": [0.1], "smoke": [0.03, 0.1, 0.3], "full": [0.01, 0.03, 0.1, 0.3, 1.0]}
HC_PARALLEL = {"test": 8, "smoke": 16, "full": 256}  # = train.py's parallel: same sequential depth
EVAL_SEED = 20221122  # the evaluation seed when run by hand (the framework passes the run's secret)
GROUPS = ("drawn", "holdout", "best", "frozen")  # the groups of lanes of a task, each with its own seeds
BLOCK = 2**16  # environment seeds per group: CartPole seeds its lane i with seed + i
MAX_SOLUTIONS = 10**6  # a buffer larger than this is not a buffer (train.py keeps 100 x 100)
F32_MAX = float(np.finfo(np.float32).max)  # logits must be finite as float32


def env_seeds(eval_seed: int, eval_set: str) -> dict:
    """(task, group) -> the first environment seed of that group's lanes: a block of BLOCK seeds
    of its own in [2^30, 2^31), drawn with the secret `eval_seed`; even blocks for the fitness
    set, odd ones for the sealed set. Blocks 0 and 1 are skipped (training's last CartPole
    lanes can reach a few seeds past 2^30)."""
    keys = [(task, group) for task in tasks.TASKS + tasks.ABLATIONS for group in GROUPS]
    sealed = int(eval_set == "sealed")
    blocks = np.random.default_rng([eval_seed, sealed]).choice(
        tasks.HELDOUT_SEED_BASE // BLOCK // 2 - 1, len(keys), replace=False) + 1
    return {key: tasks.HELDOUT_SEED_BASE + (2 * int(b) + sealed) * BLOCK for key, b in zip(keys, blocks)}


def selection_generator(eval_seed: int, task: str) -> torch.Generator:
    """The judge's generator of a task's selection draws (and hill climbing's noise)."""
    key = np.random.SeedSequence([eval_seed, (tasks.TASKS + tasks.ABLATIONS).index(task)])
    key = key.generate_state(1)[0]
    return torch.Generator().manual_seed(int(key))


def buffer_fitness(info, task: str, budget: dict) -> torch.Tensor:
    """The training fitness (P,) of the learner's final buffer for `task`: its word, checked."""
    f = info.array(f"{task}_fitness", shape=(None,), dtype="float", low=-F32_MAX, high=F32_MAX)
    if not 1 <= len(f) <= MAX_SOLUTIONS:
        raise judge.Violation(f"{task}: a buffer of {len(f)} solutions (1 to {MAX_SOLUTIONS} expected)")
    info.number(f"{task}_executions", low=0, high=budget["executions"], integer=True)  # the budget
    return torch.from_numpy(np.array(f, dtype=np.float64))


def run_learner(learner, plans: dict, seeds: dict, steps: int) -> dict:
    """Execute in the learner, for each task, the solutions of each group of lanes:
    plans[task][group] = (solution indices (n,), frozen). The judge builds the inputs, samples
    the actions and keeps the rewards; all tasks run in lockstep, one request per step for all
    their lanes. Returns the scores (n,) of each task's groups: task -> group -> scores."""
    runs = {}
    for task, lanes in plans.items():
        idx = torch.cat([solutions for solutions, _ in lanes.values()])  # (B,)
        frozen = np.concatenate([np.full(len(solutions), f) for solutions, f in lanes.values()])
        learner.call("begin", task=task, solutions=idx.numpy(), frozen=frozen)
        runs[task] = tasks.Execution(task, len(idx), [seeds[(task, g)] for g in lanes], steps)
    for _ in range(steps):
        # x_t of every task; the learner has not seen the rewards of this step's actions
        reply = learner.call("step", **{task: run.inputs().numpy() for task, run in runs.items()})
        for task, run in runs.items():
            logits = reply.array(task, shape=(run.batch, tasks.NUM_ACTIONS[task]), dtype="float",
                                 low=-F32_MAX, high=F32_MAX)
            run.act(torch.from_numpy(np.array(logits, dtype=np.float32)))
    out = {}
    for task, run in runs.items():
        scores, n = run.scores(), run.batch // len(plans[task])
        out[task] = {g: scores[i * n:(i + 1) * n] for i, g in enumerate(plans[task])}
    return out


def hc_scores(sel, sigma, task, scale, seed, gen, device):
    """Hill climbing's drawn parents, its best one and the parents + N(0, sigma^2) it would
    execute next, executed (judge-side: protected code) on `seed`, each group with the same
    environments. Returns (drawn, best, perturbed) scores."""
    n = EVAL_EXECUTIONS[scale]
    idx = sel.sample(n, gen)
    best = torch.full((n,), int(sel.f.argmax()))
    kids = [w[idx] + sigma * torch.randn(w[idx].shape, generator=gen) for w in sel.w]
    state = [torch.cat([w[idx], w[best], k]).to(device) for w, k in zip(sel.w, kids)]
    _, s = tasks.execute(hillclimb.mlp_step, state, task, tasks.BUDGET[scale]["L"], [seed] * 3, device)
    return s[:n], s[n:2 * n], s[2 * n:]


def mean_se(s: np.ndarray) -> tuple[float, float]:
    return float(s.mean()), float(s.std() / math.sqrt(len(s)))


def evaluate(learner, scale: str, seed: int, eval_seed: int, eval_set: str, device) -> dict:
    start = time.time()
    budget, n = tasks.BUDGET[scale], EVAL_EXECUTIONS[scale]
    sealed = eval_set == "sealed"
    todo = tasks.TASKS if sealed else tasks.TASKS + tasks.ABLATIONS
    info = learner.call("load", tasks=list(todo))
    fitness = {task: buffer_fitness(info, task, budget) for task in todo}
    seeds = env_seeds(eval_seed, eval_set)
    plans, gens = {}, {}
    for task in todo:
        gens[task] = gen = selection_generator(eval_seed, task)
        f = fitness[task]
        drawn = hillclimb.Selection([], f).sample(n, gen)  # what FME would execute next
        plans[task] = {"drawn": (drawn, False)}
        if not sealed:  # the extras: costly, and never part of the fitness
            plans[task]["best"] = (torch.full((n,), int(f.argmax())), False)
            plans[task]["frozen"] = (drawn, True)
            if task in tasks.TASKS:
                plans[task]["holdout"] = (hillclimb.Selection([], f).sample(n, gen), False)
    executed = run_learner(learner, plans, seeds, budget["L"])
    metrics = {}
    for task in todo:
        scores, f, gen = executed[task], fitness[task], gens[task]
        metrics[f"{task}_score"], metrics[f"{task}_score_se"] = mean_se(scores["drawn"])
        if sealed:
            continue
        if "holdout" in scores:
            metrics[f"holdout_{task}_score"] = float(scores["holdout"].mean())
        metrics[f"{task}_best_score"] = float(scores["best"].mean())
        # the same drawn solutions executed with their self-modifications discarded at every step:
        # does changing themselves while acting help (above the score) or only drift (below)?
        metrics[f"{task}_frozen_score"] = float(scores["frozen"].mean())
        metrics[f"{task}_buffer_size"] = len(f)
        # baseline: hill climbing, same budget, same selection, sigma tuned on training seeds
        runs = hillclimb.hill_climb(task, HC_SIGMAS[scale], budget, HC_PARALLEL[scale], seed, device)
        j = max(range(len(runs)), key=lambda i: runs[i][1])
        hc_drawn, hc_top, hc_next = hc_scores(runs[j][0], HC_SIGMAS[scale][j], task, scale,
                                              seeds[(task, "drawn")], gen, device)
        metrics[f"hc_{task}_score"], metrics[f"hc_{task}_score_se"] = mean_se(hc_drawn)
        metrics[f"hc_{task}_executed_score"] = float(hc_next.mean())
        metrics[f"hc_{task}_best_score"] = float(hc_top.mean())
        metrics[f"hc_{task}_sigma"] = HC_SIGMAS[scale][j]
        print(f"{task}: fme {metrics[f'{task}_score']:.3f}  hill climbing {metrics[f'hc_{task}_score']:.3f} "
              f"(executed with noise {metrics[f'hc_{task}_executed_score']:.3f}, "
              f"sigma {HC_SIGMAS[scale][j]})  {time.time() - start:.0f}s", flush=True)
    keys = [("", "", "fme_score")]
    if not sealed:
        keys += [("holdout_", "", "holdout_fme_score"), ("hc_", "", "hc_score"),
                 ("hc_", "_executed", "hc_executed_score")]
    for prefix, suffix, key in keys:
        normalised = [metrics[f"{prefix}{task}{suffix}_score"] / tasks.MAX_SCORE[task]
                      for task in tasks.TASKS]
        metrics[key] = sum(normalised) / len(normalised)
    if not sealed:  # sec. 7.4's ablation: what feeding the reward adds on the swap bandit
        metrics["swap_bandit_reward_input_gain"] = (metrics["swap_bandit_score"]
                                                    - metrics["swap_bandit_noreward_score"])
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(EVAL_EXECUTIONS), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (seeds the baseline's run)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder with checkpoint.pt (for the learner this script starts when run by hand)")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu (both sides)")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    eval_seed, eval_set = judge.eval_seed(EVAL_SEED), judge.eval_set()
    standalone = [sys.executable, str(Path(__file__).with_name("learner.py")), "--out", str(cli.out),
                  "--device", cli.device]
    judge.main(lambda learner: evaluate(learner, cli.scale, cli.seed, eval_seed, eval_set,
                                        torch.device(device)), cli.metrics, standalone=standalone)


if __name__ == "__main__":
    main()
