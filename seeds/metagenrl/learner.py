"""The MetaGenRL learner process: serves the variant's metagenrl.py to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no environment,
no metrics file and no network, and sees only what the judge sends it. It holds fresh agents built
by the variant's `Agents` with the settings of the checkpoint, and a FROZEN objective (the learned
one, or for the untrained-objective diagnostic one of the variant's architecture with fresh random
weights). Per environment step the judge sends the transition its environments produced (the
observation, the executed action, the reward, the successor, the termination and time-limit flags,
the normalised time); the learner stores it in its replay buffer, learns (`agents.update(replay,
objective)`: a critic step and, every second step, a policy step on grad_phi L_alpha, thesis Alg. 7)
and answers with its next actions. For the greedy evaluation episodes it gets observations only and
answers with its deterministic actions. Nothing it answers is trusted: the judge checks every reply
(scientist.harness.judge) and keeps the returns itself.
"""

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from envs import Replay
from scientist.harness.learner import serve


class MetaGenRLLearner:
    """Fresh agents of the variant, trained by a frozen objective, one run at a time."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.mod = self.learned = self.objective = self.agents = self.replay = None

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

    def start(self, agents: int, obs_dim: int, act_dim: int, act_mask: np.ndarray, steps: int,
              seed: int, objective: str, objective_seed: int):
        """Fresh agents (E = `agents`) and an empty replay of `steps` transitions, to be trained by
        the learned objective or (`objective` = "untrained") by a new one of the same architecture,
        its weights torch's default initialisation drawn with `objective_seed`."""
        if objective == "untrained":
            torch.manual_seed(int(objective_seed))
            self.objective = self.mod.Objective(**self.ckpt["objective_kwargs"]).to(self.device)
            self.objective.requires_grad_(False).eval()
        else:
            self.objective = self.learned
        torch.manual_seed(int(seed))
        self.replay = Replay(int(agents), int(obs_dim), int(act_dim), int(steps), int(seed))
        self.agents = self.mod.Agents(int(agents), int(obs_dim), int(act_dim), act_mask, device=self.device,
                                      **self.ckpt["agent_kwargs"])
        self.agents.gen.manual_seed(int(seed))

    def act(self, obs: np.ndarray, step: int, explore: bool):
        """obs (E, O) -> actions (E, A) in [-1, 1]; explore=False: the greedy policies."""
        return {"action": self.agents.act(obs, int(step), explore=bool(explore))}

    def step(self, obs, act, rew, next_obs, term, done, time, new_obs, t: int):
        """The transition (E, ...) of the last actions: store it, learn with the objective frozen
        (meta-test, no DPG annealing), and act on `new_obs` (the successor, or a reset's first
        observation) at step `t`."""
        self.replay.add({"obs": obs, "act": act, "rew": rew, "next_obs": next_obs, "term": term,
                         "done": done, "time": time})
        self.agents.update(self.replay, self.objective)
        return {"action": self.agents.act(new_obs, int(t))}


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
