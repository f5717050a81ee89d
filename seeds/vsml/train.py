"""Meta-train a VSML network on MNIST online-learning trajectories (thesis Alg. 8).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda]

Each meta-step samples a batch of lifetimes. A lifetime starts from random LSTM states and
sees T MNIST training examples one at a time: predict x_t, then receive its error. The task is
augmented per lifetime with a random linear projection of the inputs and a random permutation
of the labels, so the only way to predict well is to learn within the lifetime. The meta-loss
is the mean online cross-entropy over the lifetime; its gradient w.r.t. the shared LSTM
parameters is taken by backpropagation through the whole unrolled lifetime (BPTT).

Writes OUTDIR/checkpoint.pt (model kwargs, meta-parameters, Args) and OUTDIR/train_log.json.
"""

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import data
from vsml import VSML


@dataclass
class Args:
    # --- sizes: set by the scale presets below ---
    steps: int = 250  # meta-training steps (outer-loop updates)
    batch_size: int = 16  # lifetimes per meta-step
    traj_len: int = 100  # examples per lifetime = BPTT horizon (paper: 500)
    hidden_sizes: tuple = ()  # widths of hidden VSML layers; () = one layer input->classes (paper)
    train_examples: int = 50000  # MNIST training images lifetimes are drawn from
    checkpoint_every: int = 0  # recompute BPTT in chunks of this many examples to save memory (0 = off)
    log_every: int = 10  # print and log every this many steps
    # --- hyperparameters (the offline proposer mutates these defaults; presets never touch them) ---
    meta_lr: float = 3e-2  # Adam learning rate on the shared LSTM parameters
    state_size: int = 16  # N, size of each sub-LSTM state (paper: 16)
    msg_size: int = 8  # M, size of forward and backward messages (paper: 8)
    grad_clip: float = 1.0  # clip the meta-gradient to this global norm (0 = off)
    ticks: int = 1  # LSTM ticks per layer and sweep (paper: 2 ticks per example in total)
    backward_pass: bool = True  # tick again in reverse with the fresh error after each prediction
    share_layers: bool = True  # one LSTM for all layers (paper) instead of one per layer
    state_init_scale: float = 0.1  # std of the random initial LSTM cell states
    forget_bias: float = 3.0  # initial forget-gate bias: how long states remember
    input_bias: float = -3.0  # initial input-gate bias: how strongly states are overwritten
    rand_proj: bool = True  # augment each lifetime with a random linear map of the inputs
    permute_labels: bool = True  # augment each lifetime with a random permutation of the classes


# Presets override only size/length fields, never the hyperparameters above.
SCALES = {
    "test": dict(steps=3, batch_size=2, traj_len=10, train_examples=2000, log_every=1),
    "smoke": dict(steps=250, batch_size=16, traj_len=100, train_examples=50000, log_every=10),
    # Paper-sized (thesis App. B.3.2: 784 raw pixels, N=16, M=8, 500-example lifetimes); the paper
    # used ES with 1024 lifetimes per step for 10k steps, here BPTT with checkpointed chunks on a GPU.
    "full": dict(steps=5000, batch_size=64, traj_len=500, checkpoint_every=10, log_every=50),
}


def sample_lifetimes(x, y, args, gen):
    """A batch of augmented lifetimes: inputs (T, B, D) and labels (T, B), on x's device."""
    T, B, D = args.traj_len, args.batch_size, x.shape[1]
    idx = torch.randint(len(x), (T, B), generator=gen).to(x.device)
    xs, ys = x[idx], y[idx]  # (T, B, D), (T, B)
    if args.rand_proj:  # Glorot-uniform D x D map per lifetime; keeps unit variance per input
        limit = math.sqrt(6 / (2 * D))
        proj = (torch.rand(B, D, D, generator=gen) * 2 - 1) * limit
        xs = torch.einsum("tbd,bde->tbe", xs, proj.to(x.device))
    if args.permute_labels:
        perm = torch.stack([torch.randperm(data.NUM_CLASSES, generator=gen) for _ in range(B)])
        ys = perm.to(x.device)[torch.arange(B, device=x.device), ys]
    return xs, ys


def run_examples(model, state, xs, ys):
    """Predict-then-learn on each example of xs (T, B, D); return state, summed loss and accuracy."""
    loss, acc = 0.0, 0.0
    for x_t, y_t in zip(xs, ys):
        state, logits = model.predict(state, x_t)  # (B, classes), before the label is seen
        loss = loss + F.cross_entropy(logits, y_t)
        acc = acc + (logits.argmax(-1) == y_t).float().mean()
        state = model.learn(state, x_t, logits, y_t)
    return state, loss, acc


def lifetime(model, xs, ys, gen, checkpoint_every=0):
    """Run one online lifetime; return the mean online cross-entropy and accuracy.

    With checkpoint_every > 0, only the states between chunks of that many examples are kept
    for BPTT and each chunk is recomputed in the backward pass (memory for long lifetimes).
    """
    state = model.init_state(xs.shape[1], gen)
    chunk = checkpoint_every or len(xs)
    loss, acc = 0.0, 0.0
    for s in range(0, len(xs), chunk):
        chunk_args = (model, state, xs[s : s + chunk], ys[s : s + chunk])
        if checkpoint_every:
            state, chunk_loss, chunk_acc = checkpoint(run_examples, *chunk_args, use_reentrant=False)
        else:
            state, chunk_loss, chunk_acc = run_examples(*chunk_args)
        loss, acc = loss + chunk_loss, acc + chunk_acc
    return loss / len(xs), acc / len(xs)


def model_kwargs(args, input_size):
    return dict(
        sizes=[input_size, *args.hidden_sizes, data.NUM_CLASSES],
        state_size=args.state_size,
        msg_size=args.msg_size,
        ticks=args.ticks,
        backward_pass=args.backward_pass,
        share_layers=args.share_layers,
        forget_bias=args.forget_bias,
        input_bias=args.input_bias,
        state_init_scale=args.state_init_scale,
    )


def train(args, scale, seed, out, device):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.load("mnist", "train", scale)
    x = torch.from_numpy(x[: args.train_examples]).to(device)
    y = torch.from_numpy(y[: args.train_examples]).to(device)
    kwargs = model_kwargs(args, x.shape[1])
    model = VSML(**kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.meta_lr)
    print(
        f"VSML sizes={kwargs['sizes']} meta-params={sum(p.numel() for p in model.parameters())} "
        f"device={device}",
        flush=True,
    )

    log = {"step": [], "meta_loss": [], "online_acc": [], "elapsed_s": []}
    start, run_loss, run_acc = time.time(), 0.0, 0.0
    for step in range(1, args.steps + 1):
        xs, ys = sample_lifetimes(x, y, args, gen)
        loss, acc = lifetime(model, xs, ys, gen, args.checkpoint_every)
        opt.zero_grad()
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        run_loss, run_acc = run_loss + loss.item(), run_acc + acc.item()
        if step % args.log_every == 0 or step == args.steps:
            n = (step - 1) % args.log_every + 1
            elapsed = time.time() - start
            log["step"].append(step)
            log["meta_loss"].append(run_loss / n)
            log["online_acc"].append(run_acc / n)
            log["elapsed_s"].append(elapsed)
            print(
                f"step {step:5d}  meta-loss {run_loss / n:.4f}  online-acc {run_acc / n:.3f}  "
                f"elapsed {elapsed:6.1f}s",
                flush=True,
            )
            run_loss, run_acc = 0.0, 0.0
    save(out, model, kwargs, args, scale, seed, log)


# scientist: frozen-begin  (CLI and checkpoint format read by evaluate.py)
def save(out, model, kwargs, args, scale, seed, log):
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model_kwargs": kwargs,
            "state_dict": model.state_dict(),
            "args": dataclasses.asdict(args),
            "scale": scale,
            "seed": seed,
        },
        out / "checkpoint.pt",
    )
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"saved {out / 'checkpoint.pt'}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)  # the framework runs training seeds in parallel, one core each
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args = dataclasses.replace(Args(), **SCALES[cli.scale])
    train(args, cli.scale, cli.seed, cli.out, torch.device(device))


if __name__ == "__main__":
    main()
# scientist: frozen-end
