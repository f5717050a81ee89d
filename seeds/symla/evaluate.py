"""Meta-test SymLA on bandits with arm counts it never saw, beside an in-context LSTM trained the same way.

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: this is the judge. The variant's code never runs in this process: the learner
(learner.py, which imports the variant's symla.py) is another process, in its own sandbox, and
answers over the harness's protocol (scientist.harness). The judge owns the bandits: each pull
it sends the learner only the agent's inputs for every bandit of the batch (its previous arm and
the reward that arm paid), takes back the logits of the next arm (checked: shape, finite), samples
the arm from them with its own random numbers (so any finite logits are a valid action), draws the
reward and adds the regret from the arms' true probabilities, which never leave this process.
Run by hand, it starts learner.py itself (--out is the learner's checkpoint folder).

The fitness `neg_regret` is minus the expected cumulative regret over a lifetime of 100 pulls
(thesis Fig. 4.4), averaged over sets of K-armed bandits (p_i ~ U[0, 1]) for K in HELDOUT_ARMS,
arm counts that training (train.py: `train_arms`, default 2 and 5) never uses: generalisation to
unseen action spaces is the headline of sec. 4.5.2. Regret is measured, not the sampled reward:
sum_t (max_i p_i - p_{a_t}). Also reported: regret on the training arm counts (`regret_arms{K}`)
and on the five two-armed families of Wang et al. (`regret_wang_{family}`, App. C.1; the training
uses uniform independent arms only, so the dependent families are unseen structure).

The bandits and the random numbers of the pulls are drawn from the run's secret evaluation seed
(scientist.harness.judge.eval_seed; BANDIT_SEED by hand): every variant of a run meets the same
bandits, and none can know them in advance. Every bandit of a batch has its own independently
drawn arms. `holdout_neg_regret` repeats the fitness protocol on other bandits from the same
distribution, which selection never sees: a gap opening between it and `neg_regret` shows a run
fitting its bandits. The sealed set (SCIENTIST_EVAL_SET=sealed: scored only for the baseline and
the final best) is a third draw, reported under the fitness's names, with Thompson sampling and
the random policy but without the costly LSTM baseline.

Baselines on the very same bandits and random numbers, all run here from protected code: the
in-context LSTM of baseline.py, meta-trained here by the same antithetic ES on the same training
distribution with the scale's budget (`lstm_*`), Thompson sampling with Beta(1, 1) priors (`ts_*`,
a hand-designed learner) and the uniformly random policy (`random_*`).
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import bandits
import baseline
from scientist.harness import judge

HELDOUT_ARMS = (3, 8, 12)
TRAIN_ARMS = (2, 5)  # the default training distribution, reported for comparison
LIFETIMES = {"test": 8, "smoke": 300, "full": 1000}  # bandits per configuration
# The LSTM baseline's meta-training budget: the same ES as train.py's preset of the scale.
BASELINE_ES = {"test": dict(steps=3, pop=8, lifetimes=2), "smoke": dict(steps=400, pop=32, lifetimes=8),
               "full": dict(steps=4000, pop=512, lifetimes=100)}
BASELINE_SIGMA, BASELINE_LR = 0.2, 0.05
BANDIT_SEED = 20220613  # the evaluation seed when run by hand (the framework passes the run's)
SETS = {"fitness": 0, "holdout": 1, "sealed": 2}  # independent draws of bandits


def seeds(eval_seed):
    """Independent 62-bit seeds (set, 0 for its bandits or 1 for the pulls, configuration), all
    drawn in turn from one generator: seeding generators with lists like [eval_seed, 0] and
    [eval_seed, 0, 0] would not do, since numpy's SeedSequence ignores trailing zeros (the pulls of
    the first configuration then got the very numbers its arms' probabilities were drawn from)."""
    return np.random.default_rng(eval_seed).integers(2**62, size=(len(SETS), 2, 16))


def configurations(scale, eval_seed, which, names):
    """name -> arm probabilities (1, E, K) of set `which`, drawn from the evaluation seed."""
    gen = torch.Generator().manual_seed(int(seeds(eval_seed)[SETS[which], 0, 0]))
    n = LIFETIMES[scale]
    return {name: bandits.independent((1, n), int(name[4:]), gen) if name.startswith("arms")
            else bandits.wang((1, n), name[5:], gen) for name in names}


def learner_regret(learner, probs, seed, reset_seed):
    """Regret (E,) of the learner on bandits probs (1, E, K): one request per pull for all E."""
    _, E, K = probs.shape
    learner.call("reset", lanes=E, arms=K, seed=reset_seed)

    def step(state, obs, prev_action, reward, done):  # bandits.run_lifetimes's agent interface
        logits = learner.call("act", obs=obs[0], prev_action=prev_action[0], reward=reward[0],
                              done=done[0]).array("logits", shape=(E, K), dtype="float")
        return state, torch.from_numpy(logits).float()[None]

    _, regret = bandits.run_lifetimes(step, None, probs, torch.Generator().manual_seed(seed))
    return regret[0]


def agent_regret(agent, theta, probs, seed, device):
    """Regret (E,) of a judge-side agent (the LSTM baseline) on the same bandits and numbers."""
    state = agent.init_state(theta[None].to(device), probs.shape[1], 1, probs.shape[2], None)
    _, regret = bandits.run_lifetimes(agent.step, state, probs.to(device),
                                      torch.Generator().manual_seed(seed))
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


def random_regret(probs):
    """Exact expected regret (E,) of the uniformly random policy."""
    return (probs[0].max(-1).values[:, None] - probs[0]).mean(-1) * bandits.PULLS


def evaluate(learner, scale, seed, eval_seed, eval_set, device):
    start = time.time()
    metrics = {}
    held = [f"arms{k}" for k in HELDOUT_ARMS]
    if eval_set == "sealed":
        sets = {"sealed": held}
    else:
        wang = [f"wang_{f}" for f in bandits.WANG_FAMILIES]
        sets = {"fitness": held + [f"arms{k}" for k in TRAIN_ARMS] + wang, "holdout": held}
    lstm = lstm_theta = None  # the judge's own work first: the learner process starts up meanwhile
    if eval_set != "sealed":  # the costly baseline: meta-trained here, from the training seed
        gen = torch.Generator().manual_seed(seed)
        lstm = baseline.LSTMAgent()
        es = BASELINE_ES[scale]
        lstm_theta = baseline.es_train(lstm, lstm.init_params(gen), TRAIN_ARMS, es["steps"], es["pop"],
                                       es["lifetimes"], BASELINE_SIGMA, BASELINE_LR, gen,
                                       log_every=max(es["steps"] // 10, 1), name="lstm baseline",
                                       device=device)
        metrics.update(lstm_params=lstm.num_params(), baseline_train_s=time.time() - start)
    info = learner.call("load")
    metrics["symla_params"] = info.number("num_params", low=1, integer=True)  # its own word
    runs = []  # (metric prefix, configuration, bandits, seed of the pulls' random numbers, learner's regret)
    for which, names in sets.items():  # one request per pull
        for i, (name, probs) in enumerate(configurations(scale, eval_seed, which, names).items()):
            pulls = int(seeds(eval_seed)[SETS[which], 1, i])
            runs.append(("holdout_" if which == "holdout" else "", name, probs, pulls,
                         learner_regret(learner, probs, pulls, reset_seed=i)))
    for prefix, name, probs, pulls, r in runs:
        results = {prefix: r}
        if not prefix:  # baselines on the very same bandits and random numbers
            results.update({"ts_": thompson_regret(probs, pulls), "random_": random_regret(probs)})
            if lstm is not None:
                results["lstm_"] = agent_regret(lstm, lstm_theta, probs, pulls, device)
        for agent, reg in results.items():
            metrics[f"{agent}regret_{name}"] = float(reg.mean())
        metrics[f"{prefix}regret_{name}_se"] = float(r.std() / math.sqrt(len(r)))
        row = "  ".join(f"{'symla' if agent == prefix else agent[:-1]} {float(reg.mean()):6.2f}"
                        for agent, reg in results.items())
        print(f"{prefix + name:20s} regret: {row}", flush=True)
    for agent in ("", "lstm_", "ts_", "random_", "holdout_"):
        held_regret = [metrics.get(f"{agent}regret_{name}") for name in held]
        if None not in held_regret:
            metrics[f"{agent}neg_regret"] = -sum(held_regret) / len(held_regret)
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(LIFETIMES), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (seeds the LSTM baseline's training)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder with checkpoint.pt (for the learner this script starts when run by hand)")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu (judge and learner)")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(cli.device if cli.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    eval_seed, eval_set = judge.eval_seed(BANDIT_SEED), judge.eval_set()
    standalone = [sys.executable, str(Path(__file__).with_name("learner.py")), "--out", str(cli.out),
                  "--device", cli.device]
    judge.main(lambda learner: evaluate(learner, cli.scale, cli.seed, eval_seed, eval_set, device),
               cli.metrics, standalone=standalone)


if __name__ == "__main__":
    main()
