"""The GPICL learner process: serves the variant's model.py to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no data, no
metrics file and no network, and sees only what the judge sends it: for each evaluated position t
of a batch of sequences, the prefix of tokens 0..t (token t = [x_t, onehot(y_{t-1})]), never y_t.
Nothing it answers is trusted: the judge checks every reply (scientist.harness.judge).
"""

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from scientist.harness.learner import serve


class GPICLLearner:
    """The variant's GPICL Transformer, answering one batch of prefixes per request."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.ckpt = self.model = None

    def load(self):
        """Build the variant's GPICL from the checkpoint. Returns what the checkpoint says about
        itself (its training tasks, for the judge's `seen_` diagnostics): reported, never scored."""
        self.ckpt = torch.load(self.out / "checkpoint.pt", map_location=self.device, weights_only=True)
        model = importlib.import_module("model")  # the variant's model file, next to this one
        self.model = model.GPICL(**self.ckpt["model_kwargs"]).to(self.device).eval()
        self.model.load_state_dict(self.ckpt["state_dict"])
        args = self.ckpt.get("args", {})
        return {"num_params": sum(p.numel() for p in self.model.parameters()),
                "num_tasks": int(self.ckpt.get("num_tasks", 0)),
                "task_seed": int(self.ckpt.get("task_seed", 0)),
                "bias_frac": float(args.get("bias_frac", 0.0))}

    @torch.no_grad()
    def predict(self, tokens: np.ndarray):
        """Prefixes (B, t + 1, E) -> logits (B, classes) for the last position t (label y_t unknown)."""
        tok = torch.from_numpy(np.array(tokens, dtype=np.float32)).to(self.device)
        return {"logits": self.model(tok)[:, -1].float()}

    def lstm_weights(self):
        """The LSTM baseline train.py trained beside the model, as plain arrays (hidden = 0: none).
        The judge runs them in its own protected LSTMLearner, never through this process."""
        if "lstm_state_dict" not in self.ckpt:
            return {"hidden": 0}
        weights = {k: v.float() for k, v in self.ckpt["lstm_state_dict"].items()}
        return {"hidden": int(self.ckpt["lstm_kwargs"]["hidden"]), **weights}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="smoke", help="unused; the judge sends the sequences")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    serve(GPICLLearner(cli.out, cli.device))


if __name__ == "__main__":
    main()
