"""Score the solutions FME left after its fixed budget, on held-out environment seeds, beside hill climbing.

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: the framework restores this file before evaluation. For each task, the final buffer
written by train.py (solutions and their training fitness) is sampled EVAL_EXECUTIONS times with
the thesis's fitness-monotonic selection (hillclimb.Selection: 100 buckets, base e^20), i.e.
the solutions FME would execute next, and each is executed for L steps (self-modifying as it
acts, through the variant's srwm.py) on environment seeds from [2^30, 2^31), which training
never uses. The task score is the mean score of those executions (average reward per step for
the bandits, average episode return for CartPole, see tasks.py); `best_*` executes the single
solution of highest training fitness on the same seeds; `*_frozen_score` executes the drawn
solutions with every self-modification discarded (diagnostic: does self-modifying while acting
help the policy within an execution?).

The fitness `fme_score` is the mean over the three tasks of score / best possible score.
The hill-climbing baseline (hillclimb.py) gets the same budget of executions of the same
length and the same selection; its sigma is tuned on a grid on training seeds; its final buffer
is scored by exactly the same protocol, giving `hc_*` and `hc_score`. Since hill climbing
executes its drawn parents only after adding noise, `hc_*_executed_score` (and
`hc_executed_score`) also score the solutions it would execute next, parents + N(0, sigma^2),
on the same seeds: the counterpart of FME's drawn solutions, which change themselves as they
act, and the literal "average reward of executed solutions after a fixed number of executions".

The ablation task of tasks.ABLATIONS (the swap bandit without the reward input) is scored the
same way on its task's held-out seeds and reported (`swap_bandit_noreward_*`,
`swap_bandit_reward_input_gain`), but is not part of either fitness.
"""

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import torch

import hillclimb
import tasks

EVAL_EXECUTIONS = {"test": 16, "smoke": 256, "full": 1024}
HC_SIGMAS = {"test": [0.1], "smoke": [0.03, 0.1, 0.3], "full": [0.01, 0.03, 0.1, 0.3, 1.0]}
HC_PARALLEL = {"test": 8, "smoke": 64, "full": 256}
EVAL_SEED = 20221122  # selection randomness of the evaluator; fixed for every variant


class EvalError(RuntimeError):
    pass


def load(out: Path) -> dict:
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise EvalError(f"no checkpoint at {path}: run train.py --out {out} first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # data only, no pickled code
    except Exception as e:
        raise EvalError(f"cannot read {path}: {e}") from e
    if set(ckpt.get("tasks", {})) != set(tasks.TASKS + tasks.ABLATIONS):
        raise EvalError(f"{path} must hold solutions for the tasks {tasks.TASKS + tasks.ABLATIONS}")
    return ckpt


def heldout_scores(step_fn, weights, fitness, task, scale, device, seed_offset, sigma=None):
    """Scores (EVAL_EXECUTIONS,) of solutions drawn by the selection, and of the best one.

    With `sigma` (hill climbing) also the scores of the solutions hill climbing would execute
    next: the drawn parents plus N(0, sigma^2) noise, the counterpart of FME's drawn solutions,
    which modify themselves as they execute. Returns (drawn, best, perturbed or None).
    """
    n = EVAL_EXECUTIONS[scale]
    L = tasks.BUDGET[scale]["L"]
    sel = hillclimb.Selection(weights, fitness)
    gen = torch.Generator().manual_seed(EVAL_SEED)
    idx = sel.sample(n, gen)
    seed = tasks.HELDOUT_SEED_BASE + seed_offset
    _, drawn = tasks.execute(step_fn, [w[idx].to(device) for w in weights], task, L, seed, device)
    best = torch.full((n,), int(fitness.argmax()))
    _, top = tasks.execute(step_fn, [w[best].to(device) for w in weights], task, L, seed, device)
    perturbed = None
    if sigma is not None:
        kids = [(w[idx] + sigma * torch.randn(w[idx].shape, generator=gen)).to(device) for w in weights]
        _, perturbed = tasks.execute(step_fn, kids, task, L, seed, device)
    return drawn, top, perturbed


def without_state_updates(step_fn):
    """step_fn whose new state is discarded: the solutions act but never change themselves."""
    return lambda state, x: (state, step_fn(state, x)[1])


def evaluate(out: Path, scale: str, seed: int, device) -> dict:
    start = time.time()
    ckpt = load(out)
    try:
        srwm = importlib.import_module("srwm")  # the variant's network, next to this script
    except Exception as e:
        raise EvalError(f"cannot import srwm.py: {e!r}") from e
    budget = tasks.BUDGET[scale]
    metrics = {}
    for task in tasks.TASKS + tasks.ABLATIONS:
        t = tasks.TASKS.index(tasks.ABLATION_OF.get(task, task))  # an ablation shares its task's seeds
        entry = ckpt["tasks"][task]
        if entry["executions"] > budget["executions"]:
            raise EvalError(f"{task}: {entry['executions']} executions exceed the budget {budget}")
        weights, fitness = [w.float() for w in entry["weights"]], entry["fitness"].float()
        if not all(w.shape[0] == len(fitness) for w in weights) or len(fitness) == 0:
            raise EvalError(f"{task}: solutions and fitness of different lengths")
        try:
            net = srwm.SRWMNet(**entry["model_kwargs"])
            drawn, top, _ = heldout_scores(net.step, weights, fitness, task, scale, device, 1000 * t)
        except (RuntimeError, ValueError, TypeError) as e:
            raise EvalError(f"{task}: executing the solutions failed: {e!r}") from e
        metrics[f"{task}_score"] = float(drawn.mean())
        metrics[f"{task}_score_se"] = float(drawn.std() / math.sqrt(len(drawn)))
        metrics[f"{task}_best_score"] = float(top.mean())
        # the same drawn solutions executed with their self-modifications discarded at every step:
        # does changing themselves while acting help (above the score) or only drift (below)?
        frozen, _, _ = heldout_scores(without_state_updates(net.step), weights, fitness, task, scale,
                                      device, 1000 * t)
        metrics[f"{task}_frozen_score"] = float(frozen.mean())
        metrics[f"{task}_buffer_size"] = len(fitness)
        # baseline: hill climbing, same budget, same selection, sigma tuned on training seeds
        runs = hillclimb.hill_climb(task, HC_SIGMAS[scale], budget, HC_PARALLEL[scale], seed, device)
        j = max(range(len(runs)), key=lambda i: runs[i][1])
        sel = runs[j][0]
        hc_drawn, hc_top, hc_next = heldout_scores(hillclimb.mlp_step, sel.w, sel.f, task, scale, device,
                                                   1000 * t, sigma=HC_SIGMAS[scale][j])
        metrics[f"hc_{task}_score"] = float(hc_drawn.mean())
        metrics[f"hc_{task}_executed_score"] = float(hc_next.mean())
        metrics[f"hc_{task}_score_se"] = float(hc_drawn.std() / math.sqrt(len(hc_drawn)))
        metrics[f"hc_{task}_best_score"] = float(hc_top.mean())
        metrics[f"hc_{task}_sigma"] = HC_SIGMAS[scale][j]
        print(f"{task}: fme {metrics[f'{task}_score']:.3f}  hill climbing {metrics[f'hc_{task}_score']:.3f} "
              f"(executed with noise {metrics[f'hc_{task}_executed_score']:.3f}, "
              f"sigma {HC_SIGMAS[scale][j]})  "
              f"{time.time() - start:.0f}s", flush=True)
    for prefix, suffix, key in (("", "", "fme_score"), ("hc_", "", "hc_score"),
                                ("hc_", "_executed", "hc_executed_score")):
        normalised = [metrics[f"{prefix}{task}{suffix}_score"] / tasks.MAX_SCORE[task]
                      for task in tasks.TASKS]
        metrics[key] = sum(normalised) / len(normalised)
    # sec. 7.4's ablation: what feeding the reward adds on the swap bandit (0 = no learning from it)
    gain = metrics["swap_bandit_score"] - metrics["swap_bandit_noreward_score"]
    metrics["swap_bandit_reward_input_gain"] = gain
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(EVAL_EXECUTIONS), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (also seeds the baseline's run)")
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
    if not all(math.isfinite(v) for v in metrics.values()):
        print(f"evaluate.py: error: non-finite metrics {metrics}", file=sys.stderr)
        sys.exit(1)
    cli.metrics.parent.mkdir(parents=True, exist_ok=True)
    cli.metrics.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
