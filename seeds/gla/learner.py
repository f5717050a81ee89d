"""The GLA learner process: serves the variant's gla.py to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no
environment, no metrics file and no network, and sees only what the judge sends it: for a batch
of lanes, the dimensions and a seed for the agent's own randomness (its projections and action
noise), then once per environment step the observations (lanes, obs_dim), and from the second
step on the rewards and episode-end flags of the transition its previous actions started. It
answers with actions (lanes, act_dim). The judge owns the environments (their goals and seeds),
steps them, keeps the returns and scores them; nothing this process answers is trusted
(scientist.harness.judge checks every reply).

The weights must not change at meta-test (the GLA learns in context only). This process checks
that (a hash of the parameters after every batch of lanes) and fails if they did, but the check
runs beside the variant's code and is only as good as that code lets it be: the judge cannot see
the weights. What the judge measures is the return the actions earn.
"""

import argparse
import hashlib
import importlib
from pathlib import Path

import numpy as np
import torch

from scientist.harness.learner import serve


def params_digest(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


class GLALearner:
    """The frozen GLA acting in a batch of independent lanes (thesis Alg. 11), one call per step."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gla = self.model = self.agent = self.digest = None

    def load(self):
        """Build the variant's GLA from the checkpoint. Returns the meta-training environments the
        checkpoint says it used: the judge reports them and never scores with them."""
        ckpt = torch.load(self.out / "checkpoint.pt", map_location=self.device, weights_only=True)
        self.gla = importlib.import_module("gla")  # the variant's model file, next to this one
        self.model = self.gla.GLA(**ckpt["model_kwargs"]).to(self.device).eval()
        self.model.load_state_dict(ckpt["state_dict"])
        self.digest = params_digest(self.model)
        return {"train_envs": " ".join(str(e) for e in ckpt.get("train_envs", []))}

    def reset(self, obs_dim: int, act_dim: int, lanes: int, seed: int, steps: int):
        """Empty histories for `lanes` lanes of an environment with these dimensions; fresh
        projections drawn with `seed` (the judge's); `steps` environment steps will follow."""
        if self.model.max_len < steps:
            raise ValueError(f"the agent's context ({self.model.max_len}) is shorter than the "
                             f"{steps} steps of the meta-test")
        torch.manual_seed(int(seed))  # any other randomness of the variant's code: reproducible
        self.agent = self.gla.InContextAgent(self.model, int(obs_dim), int(act_dim), int(lanes),
                                             int(seed), self.device)

    def act(self, obs: np.ndarray, reward=None, terminated=None, truncated=None):
        """obs (lanes, obs_dim) -> actions (lanes, act_dim). From the second step on, first the
        reward and end flags (lanes,) of the transition the previous actions started."""
        if reward is not None:
            self.agent.observe(reward, terminated, truncated)
        return {"action": self.agent.act(obs)}

    def finish(self):
        """End of a batch of lanes: the weights must be those of the checkpoint."""
        if params_digest(self.model) != self.digest:
            raise RuntimeError("the agent's weights changed during meta-test; it must learn in context only")
        self.agent = None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="smoke", help="unused; the judge sends the sizes")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    serve(GLALearner(cli.out, cli.device))


if __name__ == "__main__":
    main()
