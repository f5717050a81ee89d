"""Meta-test a trained VSML learner on Fashion-MNIST online learning (never seen in meta-training).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: the framework restores this file before evaluation, so the fitness is computed
here, not by model code. This script owns the data stream: for each example it feeds the
input x_t, takes the prediction, scores it, and only then hands over the label. The fitness
`online_acc` is the cumulative online accuracy (1/T) sum_t [argmax y_hat_t == y_t] over a
stream of T test images, averaged over many streams, each starting from fresh random LSTM
states (thesis sec. 3.4.2). No gradient is taken at meta-test time.

Baselines see the same streams with the same preprocessing (data.py): a linear softmax
classifier (the architecture VSML's single layer corresponds to) trained online, one update
per example after its prediction, with Adam and with plain SGD. Their learning rate is picked
from a grid on MNIST validation streams (as the paper tuned its baselines on MNIST); the
`*_oracle` metrics pick it on the Fashion-MNIST streams themselves, an upper bound.

The checkpoint records the meta-training mode (train.py Args.mode: grad, es or clone); the
metrics file repeats it as `mode`. For a cloned learning algorithm (mode clone, thesis
sec. 3.4.1) the evaluator also runs the network it was cloned from, with real gradients, on the
same streams (`sgd_net_*`): a tanh neuron per weight, y_c = mean_a (tanh(x_a) w_ac + b_ac), from
zero weights, updated after each prediction by the exact SGD step dw_ac = -eta tanh(x_a) e_c,
db_ac = -eta e_c with the cloned step size eta (this is SGD on the cross-entropy with learning
rate eta * A, A inputs), i.e. "real SGD on the same network".
"""

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data

# Streams per dataset and examples per stream, per scale. Fixed, independent of --seed, so
# every variant and training seed is scored on the very same streams.
STREAMS = {"test": (4, 20), "smoke": (100, 100), "full": (32, 2000)}
STREAM_SEED = 20210617
# A second, held-out set of Fashion-MNIST streams, drawn from the *training* split (used
# nowhere else) with another seed. Not the fitness: when a run selects many variants on the
# fixed fitness streams, a gap between `online_acc` and `holdout_online_acc` shows the
# selection fitting those particular streams.
HOLDOUT_SEED = 20251122
ADAM_LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
SGD_LRS = [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]


class EvalError(RuntimeError):
    pass


def make_streams(name, split, scale, seed=STREAM_SEED):
    """Inputs (T, S, D) and labels (T, S): S streams of T distinct examples each."""
    num, length = STREAMS[scale]
    x, y = data.load(name, split, scale)
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(len(x), length, replace=False) for _ in range(num)], axis=1)
    return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


@torch.no_grad()
def run_vsml(model, xs, ys, device, seed=STREAM_SEED):
    """Per-example correctness (T, S) of the VSML learner, learning only in its LSTM states."""
    gen = torch.Generator().manual_seed(seed)
    state = model.init_state(xs.shape[1], gen)
    correct = []
    for x_t, y_t in zip(xs.to(device), ys.to(device)):
        state, logits = model.predict(state, x_t)
        if logits.shape != (xs.shape[1], data.NUM_CLASSES) or not torch.isfinite(logits).all():
            raise EvalError(
                f"VSML returned bad logits: shape {tuple(logits.shape)}, "
                f"finite={bool(torch.isfinite(logits).all())}"
            )
        correct.append((logits.argmax(-1) == y_t).float().cpu())  # scored before the label is given
        state = model.learn(state, x_t, logits, y_t)
    return torch.stack(correct)


def run_linear(xs, ys, lrs, adam):
    """Per-example correctness (G, T, S) of online linear softmax classifiers, one per lr in lrs.

    Gradients are written out (softmax regression), so all lrs and streams run as one batch.
    Weights start at zero; Adam uses the usual betas (0.9, 0.999) and eps 1e-8.
    """
    T, S, D = xs.shape
    lr = torch.tensor(lrs, dtype=torch.float64).view(-1, 1, 1, 1)  # (G, 1, 1, 1)
    w = torch.zeros(len(lrs), S, D + 1, data.NUM_CLASSES, dtype=torch.float64)  # bias as last row
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    correct = []
    for t in range(T):
        x = F.pad(xs[t].double(), (0, 1), value=1.0)  # (S, D + 1)
        logits = torch.einsum("sd,gsdc->gsc", x, w)
        correct.append((logits.argmax(-1) == ys[t]).float())
        err = logits.softmax(-1) - F.one_hot(ys[t], data.NUM_CLASSES).double()  # (G, S, C)
        grad = torch.einsum("sd,gsc->gsdc", x, err)
        if adam:
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            step = (m / (1 - 0.9 ** (t + 1))) / ((v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
        else:
            step = grad
        w = w - lr * step
    return torch.stack(correct, dim=1)


def run_sgd_net(xs, ys, eta):
    """Per-example correctness (T, S) of the network the clone mode imitates, trained by real SGD."""
    T, S, D = xs.shape
    w = torch.zeros(S, D, data.NUM_CLASSES, dtype=torch.float64)
    b = torch.zeros_like(w)
    correct = []
    for t in range(T):
        tx = torch.tanh(xs[t].double())[:, :, None]  # (S, D, 1)
        logits = (tx * w + b).mean(1)  # (S, C)
        correct.append((logits.argmax(-1) == ys[t]).float())
        err = (logits.softmax(-1) - F.one_hot(ys[t], data.NUM_CLASSES).double())[:, None]  # (S, 1, C)
        w, b = w - eta * tx * err, b - eta * err
    return torch.stack(correct)


def load_model(out, device):
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise EvalError(f"no checkpoint at {ckpt_path}: run train.py --out {out} first")
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)  # data only, no pickled code
    except Exception as e:
        raise EvalError(f"cannot read {ckpt_path}: {e}") from e
    for key in ("model_kwargs", "state_dict"):
        if key not in ckpt:
            raise EvalError(f"{ckpt_path} lacks {key!r}; was it written by train.py?")
    try:
        vsml = importlib.import_module("vsml")  # the variant's model file, next to this script
        model = vsml.VSML(**ckpt["model_kwargs"]).to(device)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise EvalError(f"cannot build the learner from vsml.py and the checkpoint: {e!r}") from e
    return model.eval(), ckpt.get("args", {})


def evaluate(out, scale, device):
    start = time.time()
    model, train_args = load_model(out, device)
    mode = train_args.get("mode", "grad")
    tune_x, tune_y = make_streams("mnist", "valid", scale)
    metrics = {}
    best = {}
    for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
        accs = run_linear(tune_x, tune_y, lrs, adam).mean(dim=(1, 2))
        best[name] = int(accs.argmax())
        metrics[f"{name}_lr"] = lrs[best[name]]
    for dataset, split, prefix, seed in (("fashion_mnist", "test", "", STREAM_SEED),
                                         ("mnist", "test", "mnist_", STREAM_SEED),
                                         ("fashion_mnist", "train", "holdout_", HOLDOUT_SEED)):
        xs, ys = make_streams(dataset, split, scale, seed)
        if xs.shape[-1] != model.sizes[0]:
            raise EvalError(f"model expects {model.sizes[0]} inputs, data has {xs.shape[-1]}")
        correct = run_vsml(model, xs, ys, device, seed)  # (T, S)
        per_stream = correct.mean(0)
        metrics[f"{prefix}online_acc"] = per_stream.mean().item()
        metrics[f"{prefix}online_acc_se"] = (per_stream.std() / math.sqrt(len(per_stream))).item()
        metrics[f"{prefix}late_acc"] = correct[-len(correct) // 4 :].mean().item()
        for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
            base = run_linear(xs, ys, lrs, adam)  # (G, T, S)
            accs = base.mean(dim=(1, 2))
            metrics[f"{name}_{prefix}online_acc"] = accs[best[name]].item()
            metrics[f"{name}_{prefix}late_acc"] = base[best[name], -base.shape[1] // 4 :].mean().item()
            if not prefix:
                metrics[f"{name}_online_acc_oracle"] = accs.max().item()
        if mode == "clone":
            net = run_sgd_net(xs, ys, float(train_args["clone_lr"]))
            metrics[f"sgd_net_{prefix}online_acc"] = net.mean().item()
            metrics[f"sgd_net_{prefix}late_acc"] = net[-len(net) // 4 :].mean().item()
    metrics["eval_seconds"] = time.time() - start
    return mode, metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(STREAMS), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (streams are fixed)")
    p.add_argument("--out", type=Path, required=True, help="folder with checkpoint.pt")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        mode, metrics = evaluate(cli.out, cli.scale, torch.device(device))
    except (EvalError, data.DataError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    if not all(math.isfinite(v) for v in metrics.values()):
        print(f"evaluate.py: error: non-finite metrics {metrics}", file=sys.stderr)
        sys.exit(1)
    metrics["mode"] = mode  # a string: the framework reads numbers only
    cli.metrics.parent.mkdir(parents=True, exist_ok=True)
    cli.metrics.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
