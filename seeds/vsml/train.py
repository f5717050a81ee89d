"""Meta-train a VSML network on MNIST online-learning trajectories (thesis Alg. 8).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda] [--mode grad|es|clone]

Three modes (Args.mode):
- "grad" (default), described below: the meta-gradient by backpropagation through the lifetime.
- "es": the same lifetime objective, its gradient estimated by antithetic evolution strategies
  (thesis sec. 3.3.1, App. B.3.2; Salimans et al. 2017) -- no backpropagation at all.
- "clone": learning-algorithm cloning (sec. 3.3.2, 3.4.1; App. B.2.1, B.3.1): the shared LSTM is
  regressed on random data to implement a tanh neuron's forward computation and its SGD update,
  then (clone_meta_steps > 0) meta-optimised further from there on the lifetime objective by BPTT
  ("... and improving it": Kirsch & Schmidhuber 2021, workshop paper, Fig. 5).

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
from torch import nn
from torch.utils.checkpoint import checkpoint

import data
from vsml import VSML, State


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
    es_steps: int = 150  # ES mode: meta-training steps (paper: 10k)
    es_pop: int = 64  # ES mode: population size (antithetic pairs: es_pop / 2 noise vectors)
    es_lifetimes: int = 1  # ES mode: lifetimes per population member (paper: 1)
    es_lr: float = 0.025  # ES mode: Adam learning rate on the ES gradient (paper: 0.025 for 10k steps)
    clone_steps: int = 3000  # clone mode: regression steps on random data
    clone_batch: int = 1024  # clone mode: random (w, b, x, e) samples per step
    clone_meta_steps: int = 0  # clone mode: BPTT meta-steps on the lifetime objective after cloning (0 = off)
    clone_meta_batch: int = 8  # clone mode: lifetimes per meta-step after cloning
    # --- which meta-training method (evaluate.py handles all three; the checkpoint records it) ---
    mode: str = "grad"  # "grad" (BPTT), "es" (antithetic ES) or "clone" (learning-algorithm cloning)
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
    # --- ES mode (thesis App. B.3.2: noise std 0.05, Adam betas 0.9/0.999; lr with the sizes above) ---
    es_sigma: float = 0.05  # std of the Gaussian parameter perturbations
    es_rank: bool = False  # centred-rank fitness shaping (Salimans et al. 2017) instead of raw losses
    # --- clone mode (thesis App. B.3: N = 64 for cloning; weights scaled by 4 into the cell state) ---
    clone_state_size: int = 64  # N of the cloned sub-LSTM (replaces state_size in this mode)
    clone_ticks: int = 2  # LSTM ticks per forward and per backward computation
    clone_lr: float = 0.5  # step size eta of the cloned rule: dw = -eta tanh(x) e, db = -eta e
    clone_range: float = 6.0  # w, b of the cloning data ~ U(-range, range)
    clone_fit_lr: float = 1e-3  # Adam learning rate of the cloning regression
    clone_meta_lr: float = 1e-3  # Adam learning rate of the meta-optimisation that starts from the clone


# Presets override only size/length fields, never the hyperparameters above.
SCALES = {
    "test": dict(steps=3, batch_size=2, traj_len=10, train_examples=2000, log_every=1, es_steps=2, es_pop=4,
                 clone_steps=20, clone_batch=64, clone_meta_steps=2, clone_meta_batch=2),
    # ES at smoke: 400 steps (0.8 s each on one core) instead of the paper's 10k, so a 4x larger step
    # size; at 0.025 the population loss sat at chance (2.3026) for 60 of 80 probe steps.
    "smoke": dict(steps=250, batch_size=16, traj_len=100, train_examples=50000, log_every=10, es_steps=400,
                  es_pop=64, es_lr=0.1, clone_steps=3000, clone_batch=1024, clone_meta_steps=150,
                  clone_meta_batch=8),
    # Paper-sized (thesis App. B.3.2: 784 raw pixels, N=16, M=8, 500-example lifetimes); the paper
    # used ES with 1024 lifetimes per step for 10k steps, here BPTT with checkpointed chunks on a GPU.
    "full": dict(steps=5000, batch_size=64, traj_len=500, checkpoint_every=10, log_every=50, es_steps=10000,
                 es_pop=1024, clone_steps=20000, clone_batch=4096, clone_meta_steps=1000,
                 clone_meta_batch=64),
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
    kwargs = dict(
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
    if args.mode == "clone":
        kwargs.update(state_size=args.clone_state_size, ticks=args.clone_ticks, backward_pass=True,
                      cloned=True)
    return kwargs


def train(args, scale, seed, out, device):
    if args.mode == "es":
        return train_es(args, scale, seed, out, device)
    if args.mode == "clone":
        return train_clone(args, scale, seed, out, device)
    if args.mode != "grad":
        raise ValueError(f"unknown mode {args.mode!r}: expected grad, es or clone")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = mnist_train(args, scale, device)
    kwargs = model_kwargs(args, x.shape[1])
    model = VSML(**kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.meta_lr)
    print(
        f"VSML sizes={kwargs['sizes']} meta-params={sum(p.numel() for p in model.parameters())} "
        f"device={device}",
        flush=True,
    )

    log = meta_train_bptt(model, opt, x, y, args, gen, args.steps)
    save(out, model, kwargs, args, scale, seed, log)


def mnist_train(args, scale, device):
    """The meta-training data every mode uses: the first `train_examples` MNIST training images."""
    x, y = data.load("mnist", "train", scale)
    return (torch.from_numpy(x[: args.train_examples]).to(device),
            torch.from_numpy(y[: args.train_examples]).to(device))


def meta_train_bptt(model, opt, x, y, args, gen, steps):
    """`steps` meta-steps of BPTT through batches of online lifetimes (Alg. 8); returns the log."""
    log = {"step": [], "meta_loss": [], "online_acc": [], "elapsed_s": []}
    start, run_loss, run_acc = time.time(), 0.0, 0.0
    for step in range(1, steps + 1):
        xs, ys = sample_lifetimes(x, y, args, gen)
        loss, acc = lifetime(model, xs, ys, gen, args.checkpoint_every)
        opt.zero_grad()
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        run_loss, run_acc = run_loss + loss.item(), run_acc + acc.item()
        if step % args.log_every == 0 or step == steps:
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
    return log


# --- mode "es": antithetic evolution strategies on the same lifetime objective -------------------


class _Example(nn.Module):
    """One predict-then-learn example as a module call, so torch.func can swap in parameters."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, h, c, fwd, bwd, x, y):
        state, logits = self.model.predict(State(h, c, fwd, bwd), x)
        loss = F.cross_entropy(logits, y, reduction="none")  # (L,)
        correct = (logits.argmax(-1) == y).float()
        state = self.model.learn(state, x, logits, y)
        return state.h, state.c, state.fwd, state.bwd, loss, correct


@torch.no_grad()
def population_lifetimes(model, flat_params, xs, ys, gen):
    """Mean online CE and accuracy (P,) of P parameter vectors flat_params (P, n).

    xs (T, P * L, D), ys (T, P * L): L lifetimes per member, member-major; member p + P/2 gets the same
    initial states as member p (antithetic pairs). torch.func.functional_call
    swaps in (P, ...)-shaped parameters, which vsml.affine applies block-wise (one batched matmul),
    so every member runs the unchanged predict/learn code.
    """
    P = flat_params.shape[0]
    step = _Example(model)
    shapes = [(name, p.shape, p.numel()) for name, p in model.named_parameters()]
    params, i = {}, 0
    for name, shape, n in shapes:
        params[f"model.{name}"] = flat_params[:, i : i + n].view(P, *shape)
        i += n
    half = model.init_state(xs.shape[1] // 2, gen)  # members p and p + P/2 start from the same states
    h, c, fwd, bwd = ([torch.cat([t, t]) for t in ts] for ts in (half.h, half.c, half.fwd, half.bwd))
    loss, acc = 0.0, 0.0
    for x_t, y_t in zip(xs, ys):
        h, c, fwd, bwd, l_t, c_t = torch.func.functional_call(step, params, (h, c, fwd, bwd, x_t, y_t))
        loss, acc = loss + l_t.view(P, -1).mean(1), acc + c_t.view(P, -1).mean(1)
    return loss / len(xs), acc / len(xs)


def centred_ranks(v):
    """Ranks of v scaled to [-0.5, 0.5] (Salimans et al. 2017 fitness shaping)."""
    ranks = torch.empty_like(v)
    ranks[v.argsort()] = torch.arange(len(v), dtype=v.dtype, device=v.device)
    return ranks / (len(v) - 1) - 0.5


def train_es(args, scale, seed, out, device):
    """Antithetic ES (App. B.3.2): g = sum_i f(theta + sigma eps_i) eps_i / (P sigma), eps_{P/2+i}=-eps_i."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = mnist_train(args, scale, device)
    kwargs = model_kwargs(args, x.shape[1])
    model = VSML(**kwargs).to(device)
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    opt = torch.optim.Adam(model.parameters(), lr=args.es_lr, betas=(0.9, 0.999))
    half = args.es_pop // 2
    print(f"VSML/ES sizes={kwargs['sizes']} meta-params={theta.numel()} population={2 * half} "
          f"device={device}", flush=True)
    log = {"step": [], "meta_loss": [], "online_acc": [], "elapsed_s": []}
    start, run_loss, run_acc = time.time(), 0.0, 0.0
    life_args = dataclasses.replace(args, batch_size=half * args.es_lifetimes)
    for step in range(1, args.es_steps + 1):
        theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        eps = torch.randn(half, theta.numel(), generator=gen).to(device)
        eps = torch.cat([eps, -eps])  # antithetic pairs
        # Common random numbers: the two members of an antithetic pair see the same lifetimes (and
        # initial states), so the pair's loss difference measures the perturbation, not the data.
        xs, ys = sample_lifetimes(x, y, life_args, gen)
        xs, ys = torch.cat([xs, xs], 1), torch.cat([ys, ys], 1)
        losses, accs = population_lifetimes(model, theta + args.es_sigma * eps, xs, ys, gen)
        f = centred_ranks(losses) if args.es_rank else losses
        grad = (f[:, None] * eps).sum(0) / (2 * half * args.es_sigma)  # ascent direction of the loss
        opt.zero_grad()
        i = 0
        for p in model.parameters():
            p.grad = grad[i : i + p.numel()].view_as(p).clone()
            i += p.numel()
        opt.step()
        run_loss, run_acc = run_loss + losses.mean().item(), run_acc + accs.mean().item()
        if step % args.log_every == 0 or step == args.es_steps:
            n = (step - 1) % args.log_every + 1
            elapsed = time.time() - start
            for k, v in (("step", step), ("meta_loss", run_loss / n), ("online_acc", run_acc / n),
                         ("elapsed_s", elapsed)):
                log[k].append(v)
            print(f"step {step:5d}  population meta-loss {run_loss / n:.4f}  online-acc {run_acc / n:.3f}  "
                  f"elapsed {elapsed:6.1f}s", flush=True)
            run_loss, run_acc = 0.0, 0.0
    save(out, model, kwargs, args, scale, seed, log)


# --- mode "clone": learning-algorithm cloning on random data ----------------------------------------


def clone_batch(model, args, gen, device):
    """Random (w, b, x, e) per sub-LSTM and the cloning loss of one tick pair (thesis sec. 3.3.2).

    Targets: forward  y_hat = tanh(x) w + b  (App. B.2.1, Fig. B.1);
             backward w' = w - eta tanh(x) e,  b' = b - eta e  (one SGD step of that neuron).
    """
    B, R, eta, k = args.clone_batch, args.clone_range, args.clone_lr, model.clone_scale
    w, b = ((torch.rand(B, generator=gen) * 2 - 1) * R for _ in range(2))
    x = torch.randn(B, generator=gen)
    logits = 2 * torch.randn(B, data.NUM_CLASSES, generator=gen)  # errors as produced by a softmax output
    label = torch.randint(data.NUM_CLASSES, (B,), generator=gen)
    e = (F.softmax(logits, -1) - F.one_hot(label, data.NUM_CLASSES))[:, 0]
    w, b, x, e = (t.to(device) for t in (w, b, x, e))
    # One LSTM per sample: a (B, 1, 1, N) layer; messages are per-LSTM here (mean over 1 = identity).
    c0 = F.pad(torch.stack([w, b], -1) / k, (0, model.n - 2))[:, None, None]
    zeros = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    state = State([zeros(B, 1, 1, model.n)], [c0], [zeros(B, 1, model.m)], [zeros(B, 1, model.m)])
    _, y_hat = model.predict(state, x[:, None])
    new = model.learn_from_error(state, x[:, None], e[:, None])
    w1, b1 = new.c[0][:, 0, 0, 0] * k, new.c[0][:, 0, 0, 1] * k
    fwd_loss = F.mse_loss(y_hat[:, 0], torch.tanh(x) * w + b)
    upd_loss = F.mse_loss((w1 - w) / eta, -torch.tanh(x) * e) + F.mse_loss((b1 - b) / eta, -e)
    return fwd_loss, upd_loss


def train_clone(args, scale, seed, out, device):
    if args.hidden_sizes:
        raise ValueError("clone mode implements the shallow network only (hidden_sizes=())")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    kwargs = model_kwargs(args, data.input_size(scale))
    model = VSML(**kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.clone_fit_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.clone_steps)
    print(f"VSML/clone sizes={kwargs['sizes']} meta-params={sum(p.numel() for p in model.parameters())} "
          f"eta={args.clone_lr} device={device}", flush=True)
    log = {"step": [], "fwd_mse": [], "update_mse": [], "elapsed_s": []}
    start, run_f, run_u = time.time(), 0.0, 0.0
    every = max(1, args.clone_steps // 20)
    for step in range(1, args.clone_steps + 1):
        fwd_loss, upd_loss = clone_batch(model, args, gen, device)
        opt.zero_grad()
        (fwd_loss + upd_loss).backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        sched.step()
        run_f, run_u = run_f + fwd_loss.item(), run_u + upd_loss.item()
        if step % every == 0 or step == args.clone_steps:
            n = (step - 1) % every + 1
            elapsed = time.time() - start
            log["step"].append(step)
            log["fwd_mse"].append(run_f / n)
            log["update_mse"].append(run_u / n)
            log["elapsed_s"].append(elapsed)
            print(f"step {step:5d}  forward mse {run_f / n:.5f}  update mse (eta^2 units) {run_u / n:.5f}  "
                  f"elapsed {elapsed:6.1f}s", flush=True)
            run_f, run_u = 0.0, 0.0
    if args.clone_meta_steps:
        # "... and improving it": the cloned algorithm is the initialisation of meta-learning on the
        # lifetime objective (workshop paper, Fig. 5; there CMA-ES, here BPTT as in mode grad, Alg. 8).
        # The cloned structure stays: frozen forward state, only (w, b) kept, clipped states.
        x, y = mnist_train(args, scale, device)
        meta_args = dataclasses.replace(args, batch_size=args.clone_meta_batch)
        opt = torch.optim.Adam(model.parameters(), lr=args.clone_meta_lr)
        print(f"meta-optimising the cloned algorithm: {args.clone_meta_steps} steps x "
              f"{args.clone_meta_batch} lifetimes, lr {args.clone_meta_lr}", flush=True)
        meta_log = meta_train_bptt(model, opt, x, y, meta_args, gen, args.clone_meta_steps)
        log.update({f"meta_{k}": v for k, v in meta_log.items()})
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
    p.add_argument("--mode", choices=["grad", "es", "clone"], default=None, help="override Args.mode")
    cli = p.parse_args()
    torch.set_num_threads(1)  # the framework runs training seeds in parallel, one core each
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args = dataclasses.replace(Args(), **SCALES[cli.scale])
    if cli.mode is not None:
        args = dataclasses.replace(args, mode=cli.mode)
    train(args, cli.scale, cli.seed, cli.out, torch.device(device))


if __name__ == "__main__":
    main()
# scientist: frozen-end
