"""The SymLA learner process: serves the variant's symla.py to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no data, no
metrics file and no network, and sees only what the judge sends it: each pull, for every bandit
of the batch, the agent's inputs (the constant observation, its previous arm one-hot, the reward
that arm paid, the done flag), never the arms' probabilities. It answers with the logits of the
next arm; the judge samples the arm, pays the reward and keeps the regret. Nothing it answers is
trusted: the judge checks every reply (scientist.harness.judge).
"""

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from scientist.harness.learner import serve


class SymLALearner:
    """The variant's SymLA agent, one population member (theta) living a batch of lifetimes."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.agent = self.theta = self.state = None

    def load(self):
        """Build the variant's agent from the checkpoint; its parameter count is its own word."""
        ckpt = torch.load(self.out / "checkpoint.pt", map_location="cpu", weights_only=True)
        symla = importlib.import_module("symla")  # the variant's agent file, next to this one
        self.agent = symla.SymLA(**ckpt["agent_kwargs"])
        self.theta = ckpt["theta"].float().to(self.device)
        return {"num_params": self.agent.num_params()}

    def reset(self, lanes: int, arms: int, seed: int):
        """Fresh states for `lanes` lifetimes on `arms`-armed bandits (obs size 1)."""
        gen = torch.Generator().manual_seed(int(seed))
        self.state = self.agent.init_state(self.theta[None], int(lanes), 1, int(arms), gen)

    @torch.no_grad()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, reward: np.ndarray, done: np.ndarray):
        """obs (E, 1), prev_action (E, K), reward (E,), done (E,) -> logits of the next arm (E, K)."""
        def t(a):
            return torch.from_numpy(np.array(a, dtype=np.float32))[None].to(self.device)  # (1, ...)

        self.state, logits = self.agent.step(self.state, t(obs), t(prev_action), t(reward), t(done))
        return {"logits": logits[0].float()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="smoke", help="unused; the judge sends the sizes")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    serve(SymLALearner(cli.out, cli.device))


if __name__ == "__main__":
    main()
