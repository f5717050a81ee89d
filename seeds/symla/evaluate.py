"""Meta-test SymLA on bandits with arm counts it never saw, beside an in-context LSTM trained the same way.

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: the framework restores this file before evaluation. The fitness `neg_regret` is minus
the expected cumulative regret over a lifetime of 100 pulls (thesis Fig. 4.4), averaged over
fixed sets of K-armed bandits (p_i ~ U[0, 1]) for K in HELDOUT_ARMS, arm counts that training
(train.py: `train_arms`, default 2 and 5) never uses: generalisation to unseen action spaces is
the headline of sec. 4.5.2. Regret is measured, not the sampled reward: sum_t (max_i p_i - p_{a_t}).
Also reported: regret on the training arm counts (`regret_arms{K}`) and on the five two-armed
families of Wang et al. (`regret_wang_{family}`, App. C.1; the training uses uniform independent
arms only, so the dependent families are unseen structure).

Baselines on the very same bandits and random numbers: the in-context LSTM of baseline.py,
meta-trained here by the same antithetic ES on the same training distribution with the
scale's budget (`lstm_*`), Thompson sampling with Beta(1, 1) priors (`ts_*`, a hand-designed
learner) and the uniformly random policy (`random_*`).
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

import bandits
import baseline

HELDOUT_ARMS = (3, 8, 12)
TRAIN_ARMS = (2, 5)  # the default training distribution, reported for comparison
LIFETIMES = {"test": 8, "smoke": 300, "full": 1000}  # bandits per configuration
# The LSTM baseline's meta-training budget: the same ES as train.py's preset of the scale.
BASELINE_ES = {"test": dict(steps=3, pop=8, lifetimes=2), "smoke": dict(steps=400, pop=32, lifetimes=8),
               "full": dict(steps=4000, pop=512, lifetimes=100)}
BASELINE_SIGMA, BASELINE_LR = 0.2, 0.05
BANDIT_SEED = 20220613  # fixed: every variant meets the same bandits and random numbers


class EvalError(RuntimeError):
    pass


def configurations(scale):
    """name -> arm probabilities (1, E, K), fixed for every variant."""
    gen = torch.Generator().manual_seed(BANDIT_SEED)
    n = LIFETIMES[scale]
    out = {f"arms{k}": bandits.independent((1, n), k, gen) for k in HELDOUT_ARMS + TRAIN_ARMS}
    out.update({f"wang_{f}": bandits.wang((1, n), f, gen) for f in bandits.WANG_FAMILIES})
    return out


def agent_regret(agent, theta, probs, seed, device):
    gen = torch.Generator().manual_seed(seed)
    state = agent.init_state(theta[None].to(device), probs.shape[1], 1, probs.shape[2], gen)
    _, regret = bandits.run_lifetimes(agent.step, state, probs.to(device), gen)
    return regret[0].cpu()  # (E,)


def thompson_regret(probs, seed):
    rng = np.random.default_rng(seed)
    p = probs[0].double().numpy()  # (E, K)
    wins, losses = np.ones_like(p), np.ones_like(p)
    regret = np.zeros(len(p))
    rows = np.arange(len(p))
    for _ in range(bandits.PULLS):
        a = rng.beta(wins, losses).argmax(-1)
        r = rng.random(len(p)) < p[rows, a]
        wins[rows, a] += r
        losses[rows, a] += ~r
        regret += p.max(-1) - p[rows, a]
    return torch.from_numpy(regret)


def load(out, device):
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise EvalError(f"no checkpoint at {path}: run train.py --out {out} first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # data only, no pickled code
    except Exception as e:
        raise EvalError(f"cannot read {path}: {e}") from e
    for key in ("agent_kwargs", "theta"):
        if key not in ckpt:
            raise EvalError(f"{path} lacks {key!r}; was it written by train.py?")
    try:
        module = importlib.import_module("symla")  # the variant's agent, next to this script
        agent = module.SymLA(**ckpt["agent_kwargs"])
    except Exception as e:
        raise EvalError(f"cannot build the agent from symla.py and the checkpoint: {e!r}") from e
    return agent, ckpt["theta"].float()


def evaluate(out, scale, seed, device):
    start = time.time()
    agent, theta = load(out, device)
    gen = torch.Generator().manual_seed(seed)
    lstm = baseline.LSTMAgent()
    es = BASELINE_ES[scale]
    lstm_theta = baseline.es_train(lstm, lstm.init_params(gen), TRAIN_ARMS, es["steps"], es["pop"],
                                   es["lifetimes"], BASELINE_SIGMA, BASELINE_LR, gen,
                                   log_every=max(es["steps"] // 10, 1), name="lstm baseline",
                                   device=device)
    metrics = {"symla_params": agent.num_params(), "lstm_params": lstm.num_params(),
               "baseline_train_s": time.time() - start}
    for i, (name, probs) in enumerate(configurations(scale).items()):
        try:
            r = agent_regret(agent, theta, probs, BANDIT_SEED + i, device)
        except (RuntimeError, ValueError, TypeError) as e:
            raise EvalError(f"running the agent on {name} failed: {e!r}") from e
        results = {"": r, "lstm_": agent_regret(lstm, lstm_theta, probs, BANDIT_SEED + i, device),
                   "ts_": thompson_regret(probs, BANDIT_SEED + i)}
        gaps = probs[0].max(-1).values[:, None] - probs[0]
        results["random_"] = gaps.mean(-1) * bandits.PULLS
        for prefix, reg in results.items():
            metrics[f"{prefix}regret_{name}"] = float(reg.mean())
        metrics[f"regret_{name}_se"] = float(r.std() / math.sqrt(len(r)))
        row = "  ".join(f"{label} {metrics[f'{prefix}regret_{name}']:6.2f}" for label, prefix in
                        (("symla", ""), ("lstm", "lstm_"), ("thompson", "ts_"), ("random", "random_")))
        print(f"{name:16s} regret: {row}", flush=True)
    for prefix in ("", "lstm_", "ts_", "random_"):
        held = [metrics[f"{prefix}regret_arms{k}"] for k in HELDOUT_ARMS]
        metrics[f"{prefix}neg_regret"] = -sum(held) / len(held)
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(LIFETIMES), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (also seeds the baseline's training)")
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
