"""Meta-test a trained VSML learner on Fashion-MNIST online learning (never seen in meta-training).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: this is the judge. The variant's code never runs in this process: the learner
(learner.py, which imports the variant's vsml.py) is another process, in its own sandbox, and
answers over the harness's protocol (scientist.harness). This script owns the data streams:
for each example it sends the inputs x_t, takes the logits back (checked: shape, finite),
scores them, and only then sends the labels. The fitness `online_acc` is the cumulative online
accuracy (1/T) sum_t [argmax y_hat_t == y_t] over a stream of T test images, averaged over many
streams, each starting from fresh random LSTM states (thesis sec. 3.4.2). No gradient is taken at
meta-test time. Run by hand, it starts learner.py itself (--out is the learner's checkpoint folder).

The streams: the fitness streams are the Fashion-MNIST test images (at smoke, all 10,000 of them,
each in exactly one of the 100 streams), dealt out with the run's secret evaluation seed
(scientist.harness.judge.eval_seed; STREAM_SEED by hand): every variant of a run is scored on the
same streams, and none can know them in advance. No image is in two streams of one set, since
one learner process serves them all. `holdout_online_acc` repeats the protocol on streams of
even-numbered Fashion-MNIST *training* images (used nowhere else): when a run selects many
variants on one set of streams, a gap opening between `online_acc` and `holdout_online_acc`
shows the selection fitting those streams. The sealed set (SCIENTIST_EVAL_SET=sealed: scored
only for the baseline and the final best, reported under the same metric names) is drawn from
the odd-numbered training images, which no fitness uses.

Baselines see the same streams with the same preprocessing (data.py), here in the judge: a linear
softmax classifier (the architecture VSML's single layer corresponds to) trained online, one
update per example after its prediction, with Adam and with plain SGD. Their learning rate is
picked from a grid on MNIST validation streams (as the paper tuned its baselines on MNIST); the
`*_oracle` metrics pick it on the Fashion-MNIST streams themselves, an upper bound.

The checkpoint's meta-training mode (grad, es or clone) is what the learner says about itself:
reported as `mode`, never used for the fitness. For a cloned learning algorithm (mode clone,
thesis sec. 3.4.1) the judge also runs the network it was cloned from, with real gradients, on the
same streams (`sgd_net_*`): a tanh neuron per weight, y_c = mean_a (tanh(x_a) w_ac + b_ac), from
zero weights, updated after each prediction by the exact SGD step dw_ac = -eta tanh(x_a) e_c,
db_ac = -eta e_c with the cloned step size eta (this is SGD on the cross-entropy with learning
rate eta * A, A inputs), i.e. "real SGD on the same network".
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data
from scientist.harness import judge

# Streams per dataset and examples per stream, per scale. The same for every variant and
# training seed of a run.
STREAMS = {"test": (4, 20), "smoke": (100, 100), "full": (5, 2000)}  # S * T <= 10,000 test images
STREAM_SEED = 20210617  # the evaluation seed when run by hand (the framework passes the run's)
MODES = ("grad", "es", "clone")
ADAM_LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
SGD_LRS = [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]


def make_streams(name, split, scale, seed, parity=None):
    """Inputs (T, S, D) and labels (T, S): S streams of T examples, drawn with `seed` (an int or
    a list of ints) without replacement from the examples whose index has `parity` (0 even,
    1 odd, None all). No example is in two streams: one learner process serves all S streams,
    so an example shared between streams would let it pass labels from one to another."""
    num, length = STREAMS[scale]
    x, y = data.load(name, split, scale)
    pool = np.arange(len(x)) if parity is None else np.arange(parity, len(x), 2)
    if num * length > len(pool):
        raise data.DataError(f"{num} streams of {length} need {num * length} distinct examples; "
                             f"{name}/{split} has {len(pool)}")
    idx = np.random.default_rng(seed).choice(pool, num * length, replace=False).reshape(length, num)
    return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def run_vsml(learner, xs, ys, seed):
    """Per-example correctness (T, S) of the VSML learner, learning only in its LSTM states.
    The learner gets x_t, returns its logits, and is told y_t only after they are scored."""
    T, S, _ = xs.shape
    learner.call("reset", streams=S, seed=int(seed))
    correct = []
    for x_t, y_t in zip(xs, ys):
        logits = learner.call("predict", x=x_t.numpy()).array(
            "logits", shape=(S, data.NUM_CLASSES), dtype="float")
        correct.append(torch.from_numpy(logits.argmax(-1) == y_t.numpy()).float())  # scored first
        learner.send("learn", y=y_t.numpy())  # its reply is checked before the next call
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


def stream_metrics(correct, prefix):
    per_stream = correct.mean(0)
    return {f"{prefix}online_acc": per_stream.mean().item(),
            f"{prefix}online_acc_se": (per_stream.std() / math.sqrt(len(per_stream))).item(),
            f"{prefix}late_acc": correct[-len(correct) // 4 :].mean().item()}


def evaluate(learner, scale, eval_seed, eval_set):
    start = time.time()
    info = learner.call("load")
    mode = info.text("mode", choices=MODES)  # the checkpoint's word: reported, never scored
    tune_x, tune_y = make_streams("mnist", "valid", scale, STREAM_SEED)
    metrics = {}
    best = {}
    for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
        accs = run_linear(tune_x, tune_y, lrs, adam).mean(dim=(1, 2))
        best[name] = int(accs.argmax())
        metrics[f"{name}_lr"] = lrs[best[name]]
    if eval_set == "sealed":  # odd Fashion training images: never part of a fitness
        sets = (("fashion_mnist", "train", "", [eval_seed, 3], 1),)
    else:
        sets = (("fashion_mnist", "test", "", [eval_seed, 0], None),
                ("mnist", "test", "mnist_", [eval_seed, 1], None),
                ("fashion_mnist", "train", "holdout_", [eval_seed, 2], 0))
    for dataset, split, prefix, seed, parity in sets:
        xs, ys = make_streams(dataset, split, scale, seed, parity)
        correct = run_vsml(learner, xs, ys, seed[0] + seed[1])  # (T, S)
        metrics.update(stream_metrics(correct, prefix))
        for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
            base = run_linear(xs, ys, lrs, adam)  # (G, T, S)
            accs = base.mean(dim=(1, 2))
            metrics[f"{name}_{prefix}online_acc"] = accs[best[name]].item()
            metrics[f"{name}_{prefix}late_acc"] = base[best[name], -base.shape[1] // 4 :].mean().item()
            if not prefix:
                metrics[f"{name}_online_acc_oracle"] = accs.max().item()
        if mode == "clone":
            eta = info.number("clone_lr", low=0.0, high=1e3)
            net = run_sgd_net(xs, ys, eta)
            metrics[f"sgd_net_{prefix}online_acc"] = net.mean().item()
            metrics[f"sgd_net_{prefix}late_acc"] = net[-len(net) // 4 :].mean().item()
    metrics["eval_seconds"] = time.time() - start
    metrics["mode"] = mode  # a string: the framework reads numbers only
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(STREAMS), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (the streams do not depend on it)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder with checkpoint.pt (for the learner this script starts when run by hand)")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="the learner's device: auto = cuda if available")
    cli = p.parse_args()
    torch.set_num_threads(1)
    eval_seed, eval_set = judge.eval_seed(STREAM_SEED), judge.eval_set()
    standalone = [sys.executable, str(Path(__file__).with_name("learner.py")), "--out", str(cli.out),
                  "--device", cli.device]
    try:
        judge.main(lambda learner: evaluate(learner, cli.scale, eval_seed, eval_set), cli.metrics,
                   standalone=standalone)
    except data.DataError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
