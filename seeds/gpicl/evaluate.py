"""Meta-test a trained GPICL learner on unseen tasks of an unseen dataset (Fashion-MNIST).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: the framework restores this file before evaluation, so the fitness is computed
here, not by model code. Thesis sec. 5.3.2 (meta-testing), sec. 5.4.1 (Table 5.2, Fig. 5.4).

This script builds the sequences: S held-out tasks, each a fresh random projection and label
permutation (never a training task) of test images of a base dataset. For each evaluated
position t it feeds only the prefix of tokens 0..t, so the prediction for x_t cannot see
y_t (which enters with token t+1), whatever the model code does. No gradient is used.

Metrics, for Fashion-MNIST (unseen dataset; fitness) and with the prefix `mnist_` for MNIST
test images under unseen tasks, and `seen_` for MNIST test images under the first training
tasks (only when the model was trained on a finite number of tasks), and `seen_fixed_` for the
same projections with the biased distribution's one label permutation (when train.py used
`bias_frac` > 0; most of its training sequences were of this kind):
- `late_acc`: accuracy at the last WINDOW positions (WINDOW = T // 10) -- the fitness;
- `early_acc`: accuracy at the first WINDOW positions;
- `gain` = late_acc - early_acc, the within-sequence improvement (learning vs memorisation, Fig. 5.4);
- `acc_at_<t>`: accuracy at a few positions t (the in-context learning curve, Fig. 5.3).
Baselines on the same sequences: `lstm_*` (the LSTM trained by train.py on the same batches),
and online `sgd_*` / `adam_*`: a linear softmax classifier on the projected inputs, one update
per example after predicting it, from zero weights (App. D.5: the best configuration of the
thesis's sweep had no hidden layer). Their learning rates are picked on MNIST validation
sequences with unseen tasks, as the thesis tuned on MNIST.
"""

import argparse
import functools
import importlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import data
from lstm import LSTMLearner

# Held-out sequences per dataset, per scale (thesis Table 5.2: 16 tasks x 16 sequences). One task
# per sequence. Fixed, independent of --seed, so all variants are scored on the same sequences.
NUM_SEQS = {"test": 16, "smoke": 512, "full": 1024}
EVAL_SEED = 20221208
ADAM_LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
SGD_LRS = [1e-2, 3e-2, 1e-1, 3e-1, 1.0]
CHUNK = 128  # sequences per forward pass


class EvalError(RuntimeError):
    pass


@functools.lru_cache(maxsize=None)
def load_data(name, split, scale):
    return data.load(name, split, scale)


def make_sequences(name, split, scale, seq_len, num_tasks=0, task_seed=0, seed=EVAL_SEED, fixed=False):
    """Inputs (S, T, D) and labels (S, T): S sequences of T distinct test examples, one task each.

    num_tasks = 0: fresh tasks from `seed` (unseen); otherwise the training tasks 0..S-1 (mod K),
    with their own label permutations, or with the biased distribution's one permutation if `fixed`.
    """
    x, y = load_data(name, split, scale)
    gen = torch.Generator().manual_seed(seed)
    S, D = NUM_SEQS[scale], x.shape[1]
    idx = torch.stack([torch.randperm(len(x), generator=gen)[:seq_len] for _ in range(S)])
    if num_tasks:
        tasks = [data.seen_task(k % num_tasks, task_seed, D) for k in range(S)]
    else:
        tasks = [data.random_task(D, gen) for _ in range(S)]
    projs, perms = torch.stack([t[0] for t in tasks]), torch.stack([t[1] for t in tasks])
    if fixed:
        perms = data.fixed_permutation().expand(S, -1)
    return data.apply_tasks(torch.from_numpy(x)[idx], torch.from_numpy(y)[idx], projs, perms)


def positions(T):
    window = max(1, T // 10)
    curve = sorted({0, 1, 4, 9, 24, 49, 99, 199, 499, T - 1} & set(range(T)))
    return window, sorted(set(range(window)) | set(range(T - window, T)) | set(curve))


@torch.no_grad()
def run_prefixes(model, tokens, ys, T, device):
    """Correctness (S, T) at the evaluated positions (NaN elsewhere), feeding prefixes only."""
    _, pos = positions(T)
    correct = torch.full(ys.shape, float("nan"))
    for s in range(0, len(tokens), CHUNK):
        tok = tokens[s : s + CHUNK].to(device)
        for t in pos:
            logits = model(tok[:, : t + 1])
            if logits.shape != (len(tok), t + 1, data.NUM_CLASSES) or not torch.isfinite(logits[:, -1]).all():
                raise EvalError(f"model returned bad logits: shape {tuple(logits.shape)}")
            correct[s : s + CHUNK, t] = (logits[:, -1].argmax(-1).cpu() == ys[s : s + CHUNK, t]).float()
    return correct


@torch.no_grad()
def run_lstm(model, tokens, ys, device):
    """Correctness (S, T) of the LSTM baseline (trusted code, causal by construction)."""
    out = [model(tokens[s : s + CHUNK].to(device)).argmax(-1).cpu() for s in range(0, len(tokens), CHUNK)]
    return (torch.cat(out) == ys).float()


def run_linear(xs, ys, lrs, adam):
    """Correctness (G, S, T) of online linear softmax classifiers, one per lr (batched, exact grads)."""
    S, T, D = xs.shape
    lr = torch.tensor(lrs, dtype=torch.float64).view(-1, 1, 1, 1)
    w = torch.zeros(len(lrs), S, D + 1, data.NUM_CLASSES, dtype=torch.float64)  # bias as last row
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    correct = []
    for t in range(T):
        x = F.pad(xs[:, t].double(), (0, 1), value=1.0)  # (S, D + 1)
        logits = torch.einsum("sd,gsdc->gsc", x, w)
        correct.append((logits.argmax(-1) == ys[:, t]).float())
        err = logits.softmax(-1) - F.one_hot(ys[:, t], data.NUM_CLASSES).double()
        grad = torch.einsum("sd,gsc->gsdc", x, err)
        if adam:
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            step = (m / (1 - 0.9 ** (t + 1))) / ((v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
        else:
            step = grad
        w = w - lr * step
    return torch.stack(correct, dim=-1)


def summarise(correct, T, prefix):
    """late/early accuracy, gain, a few curve points from correctness (S, T) with NaNs allowed."""
    window, pos = positions(T)
    late, early = correct[:, T - window :].nanmean().item(), correct[:, :window].nanmean().item()
    late_se = (correct[:, T - window :].nanmean(1).std() / math.sqrt(len(correct))).item()
    out = {f"{prefix}late_acc": late, f"{prefix}early_acc": early, f"{prefix}gain": late - early,
           f"{prefix}late_acc_se": late_se}
    for t in pos:
        if t in (0, 4, 9, 24, 49, 99, 199, 499, T - 1):
            out[f"{prefix}acc_at_{t + 1}"] = correct[:, t].nanmean().item()
    return out


def load(out, device):
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise EvalError(f"no checkpoint at {path}: run train.py --out {out} first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)  # data only, no pickled code
    except Exception as e:
        raise EvalError(f"cannot read {path}: {e}") from e
    for key in ("model_kwargs", "state_dict", "num_tasks", "task_seed", "args"):
        if key not in ckpt:
            raise EvalError(f"{path} lacks {key!r}; was it written by train.py?")
    try:
        model = importlib.import_module("model").GPICL(**ckpt["model_kwargs"]).to(device)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise EvalError(f"cannot build the learner from model.py and the checkpoint: {e!r}") from e
    lstm = None
    if "lstm_state_dict" in ckpt:
        lstm = LSTMLearner(**ckpt["lstm_kwargs"]).to(device)
        lstm.load_state_dict(ckpt["lstm_state_dict"])
        lstm.eval()
    return ckpt, model.eval(), lstm


def evaluate(out, scale, device):
    start = time.time()
    ckpt, model, lstm = load(out, device)
    T, K = int(ckpt["args"]["seq_len"]), int(ckpt["num_tasks"])
    metrics = {"num_tasks": float(K), "seq_len": float(T)}
    tune_x, tune_y = make_sequences("mnist", "valid", scale, T, seed=EVAL_SEED + 1)
    best = {}
    for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
        best[name] = int(run_linear(tune_x, tune_y, lrs, adam).mean(dim=(1, 2)).argmax())
        metrics[f"{name}_lr"] = lrs[best[name]]
    suites = [("fashion_mnist", "", 0, False), ("mnist", "mnist_", 0, False)]
    if K:
        suites.append(("mnist", "seen_", K, False))
        if float(ckpt["args"].get("bias_frac", 0.0)) > 0:
            suites.append(("mnist", "seen_fixed_", K, True))
    for dataset, prefix, tasks, fixed in suites:
        xs, ys = make_sequences(dataset, "test", scale, T, tasks, int(ckpt["task_seed"]), fixed=fixed)
        tokens = data.make_tokens(xs, ys)
        expect = ckpt["model_kwargs"]["token_size"]
        if tokens.shape[-1] != expect:
            raise EvalError(f"model expects tokens of {expect}, data has {tokens.shape[-1]}")
        metrics.update(summarise(run_prefixes(model, tokens, ys, T, device), T, prefix))
        if lstm is not None:
            metrics.update(summarise(run_lstm(lstm, tokens, ys, device), T, f"lstm_{prefix}"))
        for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
            metrics.update(summarise(run_linear(xs, ys, [lrs[best[name]]], adam)[0], T, f"{name}_{prefix}"))
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(NUM_SEQS), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (the sequences are fixed)")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        metrics = evaluate(cli.out, cli.scale, torch.device(device))
    except (EvalError, data.DataError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    if not all(math.isfinite(v) for v in metrics.values()):
        print(f"evaluate.py: error: non-finite metrics {metrics}", file=sys.stderr)
        sys.exit(1)
    cli.metrics.parent.mkdir(parents=True, exist_ok=True)
    cli.metrics.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
