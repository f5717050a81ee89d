"""The FME learner process: serves the variant's srwm.py and its final buffers to the judge (evaluate.py).

    python learner.py --out OUTDIR          (started by the framework, or by evaluate.py by hand)

PROTECTED, but untrusted: it runs the variant's code, in a process of its own with no metrics
file and no network, and sees only what the judge sends it. It loads the checkpoint train.py
wrote (per task: the final buffer's solutions, their training fitness, the network's sizes),
tells the judge the fitness of each solution, and then executes the solutions the judge picks:
`begin` puts the chosen solutions in the lanes of a task, and every `step` takes the inputs x_t
of every task the judge built from its environments (observation, previous action, previous
reward, bias) and returns the action logits, the network rewriting its own weights as it acts
(Eq. 7.1-7.4).
The judge samples the actions, steps the environments and keeps the rewards and the scores.
Nothing it answers is trusted: the judge checks every reply (scientist.harness.judge).
"""

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from scientist.harness.learner import serve


class Lanes:
    """The lanes of one task in execution: the solutions they run, as two batches of state."""

    def __init__(self, net, weights: list, solutions: torch.Tensor, frozen: torch.Tensor):
        self.net, self.frozen = net, frozen  # frozen (B,) bool
        self.lanes = (int((~frozen).sum()), int(frozen.sum()))  # (self-modifying, frozen)
        self.live = [w[solutions[~frozen]] for w in weights]  # state that changes as they act
        self.fixed = [w[solutions[frozen]] for w in weights]  # state that never changes

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x_t (B, input size) -> logits (B, actions), the same as tasks.execute takes them
        (float32, NaN/inf mapped to finite values); the self-modifying lanes rewrite themselves."""
        parts = []
        if self.lanes[0]:
            self.live, live = self.net.step(self.live, x[~self.frozen])
            parts.append((~self.frozen, live))
        if self.lanes[1]:
            _, fixed = self.net.step(self.fixed, x[self.frozen])  # the new state is discarded
            parts.append((self.frozen, fixed))
        out = torch.zeros(len(x), parts[0][1].shape[-1], device=x.device)
        for mask, logits in parts:
            out[mask] = logits.float()
        return torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)


class FMELearner:
    """The variant's final buffers, executed lane by lane as the judge asks."""

    def __init__(self, out: Path, device: str):
        self.out, self.device = out, torch.device(
            device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.buffers = {}  # task -> (network, per-layer solutions (P, rows, in) on the device)
        self.running = {}  # task -> Lanes

    def load(self, tasks: list):
        """Read the checkpoint's buffers of `tasks`. Returns, per task, what the checkpoint says
        about its buffer: the training fitness of each solution (P,) and the executions spent.
        The judge uses the fitness only to choose which of these solutions to execute, and
        scores them itself."""
        ckpt = torch.load(self.out / "checkpoint.pt", map_location="cpu", weights_only=True)
        srwm = importlib.import_module("srwm")  # the variant's network, next to this file
        missing = sorted(set(tasks) - set(ckpt["tasks"]))
        if missing:
            raise KeyError(f"{self.out / 'checkpoint.pt'} holds no solutions for the tasks {missing}")
        reply = {}
        for task in tasks:
            entry = ckpt["tasks"][task]
            net = srwm.SRWMNet(**entry["model_kwargs"])
            self.buffers[task] = (net, [w.float().to(self.device) for w in entry["weights"]])
            reply[f"{task}_fitness"] = entry["fitness"].float()
            reply[f"{task}_executions"] = int(entry["executions"])
        return reply

    def begin(self, task: str, solutions: np.ndarray, frozen: np.ndarray):
        """Lane b of `task` executes solution solutions[b] of its buffer; lanes with frozen[b]
        discard every self-modification (they act with the weights they were stored with)."""
        net, weights = self.buffers[task]
        idx = torch.from_numpy(np.array(solutions, dtype=np.int64)).to(self.device)
        frozen = torch.from_numpy(np.array(frozen, dtype=bool)).to(self.device)
        self.running[task] = Lanes(net, weights, idx, frozen)

    @torch.no_grad()
    def step(self, **x: np.ndarray):
        """x_t (B, input size) of every task begun, by name -> their action logits (B, actions)."""
        return {task: self.running[task].step(torch.from_numpy(np.array(v, dtype=np.float32)).to(self.device))
                for task, v in x.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="smoke", help="unused; the judge sends the sizes")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    serve(FMELearner(cli.out, cli.device))


if __name__ == "__main__":
    main()
