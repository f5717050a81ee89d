"""Meta-test a trained GPICL learner on unseen tasks of an unseen dataset (Fashion-MNIST).

    python evaluate.py --scale smoke --seed 0 --out OUTDIR --metrics METRICS.json

PROTECTED: this is the judge. The variant's code never runs in this process: the learner
(learner.py, which imports the variant's model.py) is another process, in its own sandbox, and
answers over the harness's protocol (scientist.harness). Thesis sec. 5.3.2 (meta-testing), sec.
5.4.1 (Table 5.2, Fig. 5.4). Run by hand, it starts learner.py itself (--out is its checkpoint).

The judge builds the sequences: S held-out tasks, each a fresh random projection and label
permutation (Alg. 9; never a training task), of T images each. For each evaluated position t it
sends the learner only the prefix of tokens 0..t (token t holds x_t and y_{t-1}), positions in
increasing order, and takes back the logits of position t (checked: shape, finite). So the
prediction for x_t cannot see y_t, whatever the model code does. No gradient is used. The judge
fixes T and the token format itself; the checkpoint's own settings are not asked.

The sequences. Fashion-MNIST is never used in meta-training, so its 60,000 training and 10,000
test images are alike unseen: taken together (training first), they are split by index into three
disjoint pools, index mod 3 = 0 fitness, 1 holdout, 2 sealed. A set's S sequences are drawn from
its pool without replacement with the run's secret evaluation seed (scientist.harness.judge.
eval_seed; EVAL_SEED by hand), and so are their tasks: every variant of a run meets the same
sequences, and none can know them in advance. No image is in two sequences of one set, since one
learner process serves them all (see the README for what it could still pool). The sealed set
(SCIENTIST_EVAL_SET=sealed: scored only for the baseline and the final best) reports the fitness
metrics alone, under the same names.

Metrics (fitness set; prefix `holdout_` for the holdout pool, which selection never sees, `mnist_`
for MNIST test images under unseen tasks, `seen_` for MNIST test images under the first training
tasks and `seen_fixed_` for those projections with the biased distribution's one label
permutation -- these two only when the learner says it trained on a finite number of tasks, or
with `bias_frac` > 0: its own word, reported beside the fitness and never part of it):
- `late_acc`: accuracy at the last WINDOW positions (WINDOW = T // 10) -- the fitness;
- `early_acc`: accuracy at the first WINDOW positions;
- `gain` = late_acc - early_acc, the within-sequence improvement (learning vs memorisation, Fig. 5.4);
- `acc_at_<t>`: accuracy at a few positions t (the in-context learning curve, Fig. 5.3).
Baselines on the same sequences, computed here from protected code: `lstm_*`, the LSTM of lstm.py
with the weights train.py trained on the same batches (the learner sends them as plain arrays;
the variant's training decides how good they are, so this is a reference, not a bound), and
online `sgd_*` / `adam_*`: a linear softmax classifier on the projected inputs, one update per
example after predicting it, from zero weights (App. D.5: the best configuration of the thesis's
sweep had no hidden layer). Their learning rates are picked on MNIST validation sequences with
unseen tasks, as the thesis tuned on MNIST.
"""

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data
from lstm import LSTMLearner
from scientist.harness import judge

# Sequences per set and examples per sequence, per scale (thesis Table 5.2: 16 tasks x 16
# sequences of 100). S * T <= 23,333, the size of a Fashion-MNIST pool. The model must accept T.
NUM_SEQS = {"test": 64, "smoke": 200, "full": 200}
SEQ_LEN = {"test": 20, "smoke": 100, "full": 100}
EVAL_SEED = 20221208  # the evaluation seed when run by hand (the framework passes the run's)
ADAM_LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
SGD_LRS = [1e-2, 3e-2, 1e-1, 3e-1, 1.0]
CHUNK = 256  # sequences per request to the learner (a set of 200 in one)
TUNE_DRAWS = 5  # the baselines' learning rates are picked on 5 x 100 MNIST validation sequences
POOLS = {"fitness": 0, "holdout": 1, "sealed": 2}  # Fashion-MNIST image index mod 3


@functools.lru_cache(maxsize=None)
def load_data(name, split, scale):
    if name == "fashion_mnist" and split == "all":  # training then test images
        (x1, y1), (x2, y2) = data.load(name, "train", scale), data.load(name, "test", scale)
        return np.concatenate([x1, x2]), np.concatenate([y1, y2])
    return data.load(name, split, scale)


def make_sequences(x, y, num, T, seed, num_tasks=0, task_seed=0, fixed=False):
    """Inputs (S, T, D) and labels (S, T): S = num sequences of T examples of (x, y), drawn with
    `seed` (a list of ints) without replacement, so no example is in two sequences; one task each.

    num_tasks = 0: fresh tasks from `seed` (unseen); otherwise the training tasks 0..S-1 (mod K),
    with their own label permutations, or with the biased distribution's one permutation if `fixed`.
    """
    if num * T > len(x):
        raise data.DataError(f"{num} sequences of {T} need {num * T} distinct examples; "
                             f"the pool has {len(x)}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), num * T, replace=False).reshape(num, T)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    D = x.shape[1]
    if num_tasks:
        tasks = [data.seen_task(k % num_tasks, task_seed, D) for k in range(num)]
    else:
        tasks = [data.random_task(D, gen) for _ in range(num)]
    projs, perms = torch.stack([t[0] for t in tasks]), torch.stack([t[1] for t in tasks])
    if fixed:
        perms = data.fixed_permutation().expand(num, -1)
    return data.apply_tasks(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), projs, perms)


def fashion_set(scale, pool, seed):
    x, y = load_data("fashion_mnist", "all", scale)
    keep = np.arange(POOLS[pool], len(x), 3)
    return make_sequences(x[keep], y[keep], NUM_SEQS[scale], SEQ_LEN[scale], seed)


def positions(T):
    window = max(1, T // 10)
    curve = sorted({0, 1, 4, 9, 24, 49, 99, 199, 499, T - 1} & set(range(T)))
    return window, sorted(set(range(window)) | set(range(T - window, T)) | set(curve))


def run_learner(learner, tokens, ys):
    """Correctness (S, T) of the learner at the evaluated positions (NaN elsewhere). For position
    t it gets the prefixes 0..t of a chunk of sequences; t increases within a chunk (another chunk
    is other sequences), so nothing it kept from an earlier request holds y_t either. One request
    per position and chunk."""
    S, T, _ = tokens.shape
    _, pos = positions(T)
    correct = torch.full((S, T), float("nan"))
    for s in range(0, S, CHUNK):
        tok, y = tokens[s : s + CHUNK].numpy(), ys[s : s + CHUNK].numpy()
        for t in pos:
            logits = learner.call("predict", tokens=tok[:, : t + 1]).array(
                "logits", shape=(len(tok), data.NUM_CLASSES), dtype="float")
            correct[s : s + CHUNK, t] = torch.from_numpy(logits.argmax(-1) == y[:, t]).float()
    return correct


def load_lstm(learner, token_size, device):
    """The LSTM baseline: the protected LSTMLearner with the weights the learner sends (each
    checked against the parameter's shape, finite); None if train.py trained none."""
    reply = learner.call("lstm_weights")
    hidden = reply.number("hidden", low=0, high=4096, integer=True)
    if hidden == 0:
        return None
    lstm = LSTMLearner(token_size, data.NUM_CLASSES, hidden)
    weights = {name: torch.from_numpy(reply.array(name, shape=tuple(p.shape), dtype="float")
                                      .astype(np.float32))
               for name, p in lstm.state_dict().items()}
    lstm.load_state_dict(weights)
    return lstm.to(device).eval()


@torch.no_grad()
def run_lstm(model, tokens, ys, device):
    """Correctness (S, T) of the LSTM baseline (protected code, causal by construction)."""
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


def evaluate(learner, scale, eval_seed, eval_set, device):
    """The metrics. The judge's own work (sequences, online linear baselines) comes before its
    first request: the learner process starts up meanwhile."""
    start = time.time()
    T = SEQ_LEN[scale]
    metrics = {"seq_len": float(T)}
    if eval_set == "sealed":  # the third Fashion pool: never part of a fitness; no extras
        xs, ys = fashion_set(scale, "sealed", [eval_seed, 4])
        tokens = data.make_tokens(xs, ys)
        metrics["num_params"] = learner.call("load").number("num_params", low=1, integer=True)
        metrics.update(summarise(run_learner(learner, tokens, ys), T, ""))
        metrics["eval_seconds"] = time.time() - start
        return metrics
    x, y = load_data("mnist", "test", scale)
    mnist_seqs = min(NUM_SEQS[scale], len(x) // T)
    suites = [("", fashion_set(scale, "fitness", [eval_seed, 0])),
              ("holdout_", fashion_set(scale, "holdout", [eval_seed, 1])),
              ("mnist_", make_sequences(x, y, mnist_seqs, T, [eval_seed, 2]))]
    tune = [make_sequences(*load_data("mnist", "valid", scale), mnist_seqs, T, [EVAL_SEED, 5, j])
            for j in range(1, TUNE_DRAWS + 1)]  # judge-side only: an image may recur across draws
    tune_x, tune_y = torch.cat([xs for xs, _ in tune]), torch.cat([ys for _, ys in tune])
    best = {}
    for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
        best[name] = int(run_linear(tune_x, tune_y, lrs, adam).mean(dim=(1, 2)).argmax())
        metrics[f"{name}_lr"] = lrs[best[name]]

    def linear_baselines(prefix, xs, ys):
        for name, lrs, adam in (("adam", ADAM_LRS, True), ("sgd", SGD_LRS, False)):
            metrics.update(summarise(run_linear(xs, ys, [lrs[best[name]]], adam)[0], T, f"{name}_{prefix}"))

    for prefix, (xs, ys) in suites:
        if prefix != "holdout_":
            linear_baselines(prefix, xs, ys)
    info = learner.call("load")  # what the checkpoint says about itself: reported, never scored
    metrics["num_params"] = info.number("num_params", low=1, integer=True)
    K = info.number("num_tasks", low=0, high=2**31, integer=True)
    task_seed = info.number("task_seed", low=0, high=2**31, integer=True)
    bias_frac = info.number("bias_frac", low=0.0, high=1.0)
    metrics["num_tasks"] = float(K)  # the learner's word
    seen = []
    if K:
        seen.append(("seen_", make_sequences(x, y, mnist_seqs, T, [eval_seed, 3], K, task_seed)))
    if K and bias_frac > 0:
        seen.append(("seen_fixed_", make_sequences(x, y, mnist_seqs, T, [eval_seed, 3], K, task_seed,
                                                   fixed=True)))
    for prefix, (xs, ys) in seen:
        linear_baselines(prefix, xs, ys)
    suites += seen
    tokens = {prefix: data.make_tokens(xs, ys) for prefix, (xs, ys) in suites}
    for prefix, (_, ys) in suites:  # the fitness set first
        metrics.update(summarise(run_learner(learner, tokens[prefix], ys), T, prefix))
    lstm = load_lstm(learner, tokens[""].shape[-1], device)
    if lstm is not None:
        metrics["lstm_params"] = float(sum(p.numel() for p in lstm.parameters()))
        for prefix, (_, ys) in suites:
            if prefix != "holdout_":
                metrics.update(summarise(run_lstm(lstm, tokens[prefix], ys, device), T, f"lstm_{prefix}"))
    metrics["eval_seconds"] = time.time() - start
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(NUM_SEQS), default="smoke")
    p.add_argument("--seed", type=int, default=0, help="training seed (the sequences do not depend on it)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder with checkpoint.pt (for the learner this script starts when run by hand)")
    p.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu (judge and learner)")
    cli = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(cli.device if cli.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    eval_seed, eval_set = judge.eval_seed(EVAL_SEED), judge.eval_set()
    standalone = [sys.executable, str(Path(__file__).with_name("learner.py")), "--out", str(cli.out),
                  "--device", cli.device]
    try:
        judge.main(lambda learner: evaluate(learner, cli.scale, eval_seed, eval_set, device),
                   cli.metrics, standalone=standalone)
    except data.DataError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
