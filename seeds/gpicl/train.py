"""Meta-train GPICL (and the LSTM baseline) on tasks generated from MNIST (thesis Alg. 9, Eq. 5.2).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda] [--num-tasks K]

Each meta-step samples a batch of tasks D = {(A x_i, rho(y_i))} from the K training tasks
(Alg. 9; K = 0 means a fresh random task every time, the thesis's 2^25 limit) and a sequence of
N_D MNIST training examples for each. The model reads tokens [A x_i, onehot(y_{i-1})] and is
trained with Adam on the summed cross-entropy of predicting every y_j from the prefix
D_{1:j-1} and x_j (Eq. 5.2). The LSTM baseline is trained on exactly the same batches with the
same optimizer settings ("trained the same way").

Writes OUTDIR/checkpoint.pt (model kwargs and weights of GPICL and the LSTM, Args) and
OUTDIR/train_log.json.
"""

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import data
from lstm import LSTMLearner, matched_hidden
from model import GPICL


@dataclass
class Args:
    # --- sizes: set by the scale presets below ---
    steps: int = 1400  # meta-training steps
    batch_size: int = 128  # tasks (sequences) per meta-step (sec. 5.4.3, intervention 1: larger is better)
    seq_len: int = 100  # N_D, examples per sequence (thesis: 100)
    d_model: int = 64  # N_M, token/model size (thesis: 256)
    heads: int = 4  # attention heads (thesis: 8 with key size 32)
    layers: int = 2  # Transformer blocks (thesis: 4)
    train_lstm: bool = True  # also train the LSTM baseline on the same batches
    log_every: int = 50  # print and log every this many steps
    # --- hyperparameters (the offline proposer mutates these defaults; presets never touch them) ---
    num_tasks: int = 0  # K training tasks (Alg. 9); 0 = unlimited (a new random task per sequence)
    lr: float = 3e-3  # Adam learning rate
    adam_eps: float = 1e-12  # Adam epsilon; smaller shortens loss plateaus (sec. 5.4.3, intervention 2)
    bias_frac: float = 0.9  # share of each batch with one fixed label permutation (intervention 3, App. D.4)
    grad_clip: float = 1.0  # clip the gradient to this global norm (0 = off)
    warmup: int = 100  # linear learning-rate warm-up steps


# Presets override only size fields, never the hyperparameters above.
SCALES = {
    "test": dict(steps=4, batch_size=8, seq_len=20, d_model=32, heads=2, layers=1, log_every=1),
    "smoke": dict(steps=4000, batch_size=64, seq_len=100, d_model=64, heads=4, layers=2, log_every=50),
    # Thesis App. D.4/D.5: model size 256, 8 heads of key size 32, 4 layers, batch 128, 100 examples,
    # raw 784-pixel inputs (data.POOL["full"] = 1); GPU only.
    "full": dict(steps=50000, batch_size=128, seq_len=100, d_model=256, heads=8, layers=4, log_every=500),
}


def sample_batch(x, y, args, gen, task_seed):
    """Tokens (B, T, D + 10) and labels (B, T) for a batch of training tasks, on x's device."""
    B, T, D = args.batch_size, args.seq_len, x.shape[1]
    projs, perms = [], []
    for b in range(B):
        if args.num_tasks > 0:
            k = int(torch.randint(args.num_tasks, (), generator=gen))
            proj, perm = data.seen_task(k, task_seed, D)
        else:
            proj, perm = data.random_task(D, gen)
        if b < round(args.bias_frac * B):
            perm = data.fixed_permutation()  # the biased distribution's one permutation
        projs.append(proj)
        perms.append(perm)
    idx = torch.randint(len(x), (B, T), generator=gen).to(x.device)
    projs, perms = torch.stack(projs).to(x.device), torch.stack(perms).to(x.device)
    xs, ys = data.apply_tasks(x[idx], y[idx], projs, perms)
    return data.make_tokens(xs, ys), ys


def sequence_loss(model, tokens, ys):
    """Eq. 5.2: mean over positions j of CE(f(D_{1:j-1}, x_j), y_j); also the correctness (B, T)."""
    logits = model(tokens)  # (B, T, C)
    loss = F.cross_entropy(logits.flatten(0, 1), ys.flatten())
    return loss, (logits.argmax(-1) == ys).float()


def train(args, scale, seed, out, device):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.load("mnist", "train", scale)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    token_size = x.shape[1] + data.NUM_CLASSES
    kwargs = dict(token_size=token_size, num_classes=data.NUM_CLASSES, max_len=args.seq_len,
                  d_model=args.d_model, heads=args.heads, layers=args.layers)
    models = {"gpicl": GPICL(**kwargs).to(device)}
    n_params = sum(p.numel() for p in models["gpicl"].parameters())
    lstm_kwargs = dict(token_size=token_size, num_classes=data.NUM_CLASSES,
                       hidden=matched_hidden(token_size, data.NUM_CLASSES, n_params))
    if args.train_lstm:
        models["lstm"] = LSTMLearner(**lstm_kwargs).to(device)
    opts = {k: torch.optim.Adam(m.parameters(), lr=args.lr, eps=args.adam_eps) for k, m in models.items()}
    scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))
              for k, o in opts.items()}
    n_lstm = sum(p.numel() for p in LSTMLearner(**lstm_kwargs).parameters())
    print(f"GPICL params={n_params} LSTM hidden={lstm_kwargs['hidden']} params={n_lstm} "
          f"tasks={args.num_tasks or 'inf'} device={device}", flush=True)

    log = {"step": [], "elapsed_s": []}
    run = {k: [0.0, 0.0, 0.0] for k in models}
    # The last 10% of positions of the batch's uniformly permuted sequences (those after the biased
    # share): the training-time view of the judge's late_acc (general learning, not the fixed permutation).
    B, T = args.batch_size, args.seq_len
    free, late = slice(round(args.bias_frac * B), B), slice(T - max(1, T // 10), T)
    start = time.time()
    for step in range(1, args.steps + 1):
        tokens, ys = sample_batch(x, y, args, gen, task_seed=seed)
        for name, model in models.items():
            loss, correct = sequence_loss(model, tokens, ys)
            opts[name].zero_grad()
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opts[name].step()
            scheds[name].step()
            run[name][0] += loss.item()
            run[name][1] += correct.mean().item()
            run[name][2] += correct[free, late].mean().item() if free.start < B else float("nan")
        if step % args.log_every == 0 or step == args.steps:
            n = (step - 1) % args.log_every + 1
            log["step"].append(step)
            log["elapsed_s"].append(time.time() - start)
            line = f"step {step:6d}"
            for name in models:
                log.setdefault(f"{name}_loss", []).append(run[name][0] / n)
                log.setdefault(f"{name}_acc", []).append(run[name][1] / n)
                log.setdefault(f"{name}_free_late_acc", []).append(run[name][2] / n)
                line += (f"  {name} loss {run[name][0] / n:.4f} acc {run[name][1] / n:.3f}"
                         f" free-late {run[name][2] / n:.3f}")
                run[name] = [0.0, 0.0, 0.0]
            print(f"{line}  elapsed {time.time() - start:6.1f}s", flush=True)
    save(out, models, kwargs, lstm_kwargs, args, scale, seed, log)


# scientist: frozen-begin  (CLI and checkpoint format read by evaluate.py)
def save(out, models, kwargs, lstm_kwargs, args, scale, seed, log):
    out.mkdir(parents=True, exist_ok=True)
    ckpt = {"model_kwargs": kwargs, "state_dict": models["gpicl"].state_dict(),
            "args": dataclasses.asdict(args), "num_tasks": args.num_tasks, "task_seed": seed,
            "scale": scale, "seed": seed}
    if "lstm" in models:
        ckpt["lstm_kwargs"], ckpt["lstm_state_dict"] = lstm_kwargs, models["lstm"].state_dict()
    torch.save(ckpt, out / "checkpoint.pt")
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"saved {out / 'checkpoint.pt'}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    p.add_argument("--num-tasks", type=int, default=None, help="override Args.num_tasks (task-count sweeps)")
    p.add_argument("--steps", type=int, default=None, help="override the scale's number of steps")
    cli = p.parse_args()
    torch.set_num_threads(1)  # the framework runs training seeds in parallel, one core each
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args = dataclasses.replace(Args(), **SCALES[cli.scale])
    if cli.num_tasks is not None:
        args = dataclasses.replace(args, num_tasks=cli.num_tasks)
    if cli.steps is not None:
        args = dataclasses.replace(args, steps=cli.steps)
    train(args, cli.scale, cli.seed, cli.out, torch.device(device))


if __name__ == "__main__":
    main()
# scientist: frozen-end
