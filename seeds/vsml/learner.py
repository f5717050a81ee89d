"""The VSML learner process: serves the variant's vsml.py to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no data, no
metrics file and no network, and sees only what the judge sends it: a batch of inputs x_t to
predict, and only after the judge has scored that prediction, the labels y_t to learn from.
Nothing it answers is trusted: the judge checks every reply (scientist.harness.judge).
"""

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from scientist.harness.learner import serve


class VSMLLearner:
    """One batch of S independent online learners (one per stream), each from fresh states."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = self.state = self.x = self.logits = None

    def load(self):
        """Build the variant's VSML from the checkpoint. Returns what the checkpoint says
        about itself: the judge reports it beside the metrics and never scores with it."""
        ckpt = torch.load(self.out / "checkpoint.pt", map_location=self.device, weights_only=True)
        vsml = importlib.import_module("vsml")  # the variant's model file, next to this one
        self.model = vsml.VSML(**ckpt["model_kwargs"]).to(self.device).eval()
        self.model.load_state_dict(ckpt["state_dict"])
        args = ckpt.get("args", {})
        return {"mode": str(args.get("mode", "grad")), "clone_lr": float(args.get("clone_lr") or 0.0)}

    @torch.no_grad()
    def reset(self, streams: int, seed: int):
        """Fresh random LSTM states for `streams` learners (the start of every lifetime)."""
        gen = torch.Generator().manual_seed(int(seed))
        self.state = self.model.init_state(int(streams), gen)

    @torch.no_grad()
    def predict(self, x: np.ndarray):
        """x_t (S, D) -> logits (S, classes). The label is not known yet."""
        self.x = torch.from_numpy(np.array(x, dtype=np.float32)).to(self.device)
        self.state, self.logits = self.model.predict(self.state, self.x)
        return {"logits": self.logits.float()}

    @torch.no_grad()
    def learn(self, y: np.ndarray):
        """The labels y_t (S,) of the inputs just predicted."""
        label = torch.from_numpy(np.array(y, dtype=np.int64)).to(self.device)
        self.state = self.model.learn(self.state, self.x, self.logits, label)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="smoke", help="unused; the judge sends the sizes")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    serve(VSMLLearner(cli.out, cli.device))


if __name__ == "__main__":
    main()
