"""The MetaGenRL learner process: serves the variant's metagenrl.py to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no environment,
no metrics file and no network, and sees only what the judge sends it. It holds fresh agents built
by the variant's `Agents` with the settings of the checkpoint, and a FROZEN objective (the learned
one, or for the untrained-objective diagnostic one of the variant's architecture with fresh random
weights). It runs R such runs side by side (the 4 untrained objectives at smoke; the learned one
alone), each in its own block of rows of every array. Per environment step the judge sends the
transitions its environments produced (the observation, the executed action, the reward, the
successor, the termination and time-limit flags, the normalised time); each run stores its own in
its replay buffer, learns (`agents.update(replay, objective)`: a critic step and, every second step,
a policy step on grad_phi L_alpha, thesis Alg. 7) and answers with its next actions. For the greedy
evaluation episodes it gets observations only and answers with its deterministic actions. Nothing it
answers is trusted: the judge checks every reply (scientist.harness.judge) and keeps the returns
itself.
"""

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from envs import Replay
from scientist.harness.learner import serve


def rng_state():
    """torch's global generators: the CPU's and, where there is one, the GPUs'."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def set_rng_state(state):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


class Run:
    """n fresh agents of the variant, their replay, the frozen objective that trains them, and their
    own state of torch's global generators (the baseline's TD3 target noise draws from them), so that
    runs stepped side by side draw what each would draw alone."""

    def __init__(self, agents, replay, objective):
        self.agents, self.replay, self.objective = agents, replay, objective
        self.rng = rng_state()

    def __enter__(self):
        set_rng_state(self.rng)

    def __exit__(self, *exc):
        self.rng = rng_state()


class MetaGenRLLearner:
    """Fresh agents of the variant trained by a frozen objective: R runs of n agents side by side,
    each run's lanes a block of n rows of every array, run after run."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.mod = self.learned = self.ckpt = None
        self.runs, self.n = [], 0

    def load(self):
        """Build the learned objective from the checkpoint. Returns what the checkpoint says about
        itself (its meta-training environments): the judge reports it and never scores with it."""
        self.mod = importlib.import_module("metagenrl")  # the variant's code, next to this file
        ckpt = torch.load(self.out / "checkpoint.pt", map_location=self.device, weights_only=True)
        self.ckpt = ckpt
        self.learned = self.mod.Objective(**ckpt["objective_kwargs"]).to(self.device)
        self.learned.load_state_dict(ckpt["objective"])
        self.learned.requires_grad_(False).eval()
        return {"train_envs": ",".join(str(e) for e in ckpt.get("train_envs", []))}

    def start(self, runs: int, agents: int, obs_dim: int, act_dim: int, act_mask: np.ndarray, steps: int,
              seeds: np.ndarray, objective: str, objective_seeds: np.ndarray):
        """`runs` runs, run r: `agents` fresh agents (initial weights and noise drawn with seeds[r]) and
        an empty replay of `steps` transitions, trained by the learned objective or (`objective` =
        "untrained") by a new one of the same architecture, its weights torch's default
        initialisation drawn with objective_seeds[r]. act_mask (agents, A): the real action sizes."""
        self.runs, self.n = [], int(agents)
        for seed, objective_seed in zip(seeds.tolist(), objective_seeds.tolist()):
            if objective == "untrained":
                torch.manual_seed(int(objective_seed))
                obj = self.mod.Objective(**self.ckpt["objective_kwargs"]).to(self.device)
                obj.requires_grad_(False).eval()
            else:
                obj = self.learned
            torch.manual_seed(int(seed))
            replay = Replay(self.n, int(obs_dim), int(act_dim), int(steps), int(seed))
            ag = self.mod.Agents(self.n, int(obs_dim), int(act_dim), act_mask, device=self.device,
                                 **self.ckpt["agent_kwargs"])
            ag.gen.manual_seed(int(seed))
            self.runs.append(Run(ag, replay, obj))

    def _blocks(self, rows):
        """(run, slice) of each block of n rows, the blocks cycling through the runs."""
        n, R = self.n, len(self.runs)
        if rows % (n * R):
            raise ValueError(f"{rows} rows are not blocks of {n} agents for each of {R} runs")
        return [(self.runs[j % R], slice(j * n, (j + 1) * n)) for j in range(rows // n)]

    def act(self, obs: np.ndarray, step: int, explore: bool):
        """obs (L, O), L a multiple of R n (for the greedy evaluation, several sets of episodes, each
        R blocks of n) -> actions (L, A) in [-1, 1]; explore=False: the greedy policies."""
        out = []
        for run, rows in self._blocks(len(obs)):
            with run:
                out.append(run.agents.act(obs[rows], int(step), explore=bool(explore)))
        return {"action": np.concatenate(out)}

    def step(self, obs, act, rew, next_obs, term, done, time, new_obs, t: int):
        """The transitions (R n, ...) of the last actions: each run stores its block, learns with
        its objective frozen (meta-test, no DPG annealing) and acts on its block of `new_obs` (the
        successors, or a reset's first observations) at step `t`."""
        tr = {"obs": obs, "act": act, "rew": rew, "next_obs": next_obs, "term": term, "done": done,
              "time": time}
        out = []
        for run, rows in self._blocks(len(obs)):
            with run:
                run.replay.add({k: v[rows] for k, v in tr.items()})
                run.agents.update(run.replay, run.objective)
                out.append(run.agents.act(new_obs[rows], int(t)))
        return {"action": np.concatenate(out)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="smoke", help="unused; the judge sends the sizes")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    serve(MetaGenRLLearner(cli.out, cli.device))


if __name__ == "__main__":
    main()
