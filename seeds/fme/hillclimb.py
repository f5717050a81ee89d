"""Hill-climbing baseline with the same selection as FME (thesis sec. 7.4), and that selection.

PROTECTED (used only by evaluate.py). The thesis compares FME with hill climbing that proposes
phi_{t+1} = phi_t + eps, eps ~ N(0, sigma^2), with variance-tuned sigma and the selection kept
identical: it validates that the *self-modifications* (not selection alone) drive improvement.

Here a solution is the same stack of layers as FME's default network (App. E.1: 3 layers, 32
hidden units) with only the rows that produce y (Eq. 7.1), i.e. a tanh MLP
    h_{l+1} = W_l tanh(h_l),  logits = h_L,
whose weights do not change while it acts. Each generation samples parents with the thesis's
bucketed selection (m = 100 buckets over the fitness range, best bucket e^20 times likelier,
each bucket's 100 most recently used kept), perturbs them, executes the children for L steps
through tasks.execute and adds them with their score. sigma is tuned on a grid: all grid values
run side by side (one buffer each, training environment seeds) and the evaluator keeps the one
whose last quarter of executions scored best.
"""

from __future__ import annotations

import math

import torch

import tasks

HIDDEN, LAYERS = 32, 3
BUCKETS, TEMPERATURE, CAPACITY = 100, 20.0, 100


class Selection:
    """The thesis's fitness-monotonic selection over a set of solutions with fixed fitness."""

    def __init__(self, weights, fitness, buckets=BUCKETS, temperature=TEMPERATURE, capacity=CAPACITY):
        self.w = list(weights)
        self.f = fitness.double()
        self.last_used = torch.zeros(len(self.f), dtype=torch.long)
        self.clock = 0
        self.buckets, self.temperature, self.capacity = buckets, temperature, capacity

    def bucket_of(self) -> torch.Tensor:
        lo, hi = self.f.min(), self.f.max()
        if hi - lo < 1e-12:
            return torch.zeros(len(self.f), dtype=torch.long)
        return ((self.f - lo) / (hi - lo) * self.buckets).long().clamp(0, self.buckets - 1)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        b = self.bucket_of()
        members = torch.bincount(b, minlength=self.buckets).double()
        logit = self.temperature * b.double() / (self.buckets - 1) - members[b].log()
        idx = torch.multinomial((logit - logit.max()).exp(), n, replacement=True, generator=gen)
        self.clock += 1
        self.last_used[idx] = self.clock
        return idx

    def add(self, weights, fitness: torch.Tensor) -> None:
        self.w = [torch.cat([a, b]) for a, b in zip(self.w, weights)]
        self.f = torch.cat([self.f, fitness.double()])
        self.last_used = torch.cat([self.last_used, torch.full((len(fitness),), self.clock)])
        b = self.bucket_of()
        order = torch.argsort(b * (self.clock + 2) - self.last_used, stable=True)
        bs = b[order]
        keep = order[(torch.arange(len(bs)) - torch.searchsorted(bs, bs)) < self.capacity].sort().values
        self.w = [w[keep] for w in self.w]
        self.f, self.last_used = self.f[keep], self.last_used[keep]


def mlp_sizes(task: str) -> list[int]:
    return [tasks.input_size(task)] + [HIDDEN] * (LAYERS - 1) + [tasks.NUM_ACTIONS[task]]


# Standard deviation of N(0, 1) truncated to [-2, 2]: Var = 1 - 2 a phi(a) / (2 Phi(a) - 1), a = 2
# (about 0.8796; computed here too, not imported from srwm.py, which this file must not use).
TRUNC = 2.0
TRUNC_STD = math.sqrt(1 - 2 * TRUNC * math.exp(-TRUNC**2 / 2) / math.sqrt(2 * math.pi)
                      / math.erf(TRUNC / math.sqrt(2)))


def init_mlp(task: str, count: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Truncated normal (2 std) whose std is 1/sqrt(fan-in), as FME's initial solution (App. E.1)."""
    sizes = mlp_sizes(task)
    out = []
    for i in range(len(sizes) - 1):
        w = torch.randn(count, sizes[i + 1], sizes[i], generator=gen)
        while (bad := w.abs() > TRUNC).any():
            w[bad] = torch.randn(int(bad.sum()), generator=gen)
        out.append(w / (TRUNC_STD * math.sqrt(sizes[i])))
    return out


def mlp_step(weights, x):
    h = x
    for w in weights:
        h = torch.einsum("boi,bi->bo", w, torch.tanh(h))
    return weights, h


def hill_climb(task: str, sigmas, budget: dict, parallel: int, seed: int, device="cpu"):
    """Hill climbing for each sigma (side by side); returns per sigma (Selection, late mean score)."""
    gen = torch.Generator().manual_seed(seed)
    root = init_mlp(task, 1, gen)
    sels = [Selection(root, torch.zeros(1)) for _ in sigmas]
    late = [[] for _ in sigmas]
    done, g = 0, 0
    while done < budget["executions"]:
        n = min(parallel, budget["executions"] - done)
        children = []
        for sel, sigma in zip(sels, sigmas):
            idx = sel.sample(n, gen)
            children.append([w[idx] + sigma * torch.randn(w[idx].shape, generator=gen) for w in sel.w])
        state = [torch.cat([c[i] for c in children]).to(device) for i in range(len(root))]
        env_seed = (seed * 1_000_003 + g) % tasks.HELDOUT_SEED_BASE
        _, scores = tasks.execute(mlp_step, state, task, budget["L"], env_seed, device)
        scores = torch.from_numpy(scores)
        for j, sel in enumerate(sels):
            sel.add(children[j], scores[j * n:(j + 1) * n])
            if done >= 0.75 * budget["executions"]:
                late[j].append(scores[j * n:(j + 1) * n].mean().item())
        done, g = done + n, g + 1
    return [(sel, sum(v) / max(len(v), 1)) for sel, v in zip(sels, late)]
