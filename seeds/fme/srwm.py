"""Self-referential weight matrix (SRWM) layers, stacked: the solutions that FME executes.

Thesis sec. 7.3 (outer-product architecture adapted from Irie et al. 2021). A layer with input
size I and output size O holds ONE matrix W in R^{(O + 2I + 4) x I}; it is all there is, no
slow weights. Each step, on input x_t:

    y_t, k_t, q_t, beta_t = W_{t-1} psi(x_t)                                   (7.1)
    vbar_t = W_{t-1} psi(k_t)                                                   (7.2)
    v_t    = W_{t-1} psi(q_t)                                                   (7.3)
    W_t    = W_{t-1} + sigma(beta_t) (psi(v_t) - psi(vbar_t)) (x) psi(k_t)      (7.4)

psi = tanh, sigma = sigmoid, (x) = outer product. beta_t in R^4 holds one learning rate per
block of W's rows: the rows producing y, k, q and beta. The layer's output y_t is the next
layer's input (the next layer applies psi); the last layer's y_t are the action logits.

A *solution* phi is the list of the layers' matrices; executing it changes it (self-
modification). Everything is batched over B solutions: W has shape (B, O + 2I + 4, I).
"""

from __future__ import annotations

import math

import torch

# Standard deviation of N(0, 1) truncated to [-2, 2]: Var = 1 - 2 a phi(a) / (2 Phi(a) - 1), a = 2,
# phi the standard normal density, 2 Phi(a) - 1 = erf(a / sqrt(2)). About 0.8796.
TRUNC = 2.0
TRUNC_STD = math.sqrt(1 - 2 * TRUNC * math.exp(-TRUNC**2 / 2) / math.sqrt(2 * math.pi)
                      / math.erf(TRUNC / math.sqrt(2)))


class SRWMNet:
    """A stack of self-referential layers of the given sizes [input, hidden..., actions]."""

    def __init__(self, sizes, init_scale: float = 1.0):
        self.sizes = list(sizes)
        self.init_scale = init_scale
        self._blocks = {}

    def rows(self, i: int) -> int:
        return self.sizes[i + 1] + 2 * self.sizes[i] + 4

    def init_solutions(self, count: int, gen: torch.Generator, device="cpu") -> list[torch.Tensor]:
        """Random solutions: truncated normal (at 2 std) whose std is init_scale / sqrt(I) (App. E.1).

        N(0, 1) redrawn beyond +-2 has std TRUNC_STD (~0.88), so it is divided by it: the weights'
        actual std is the thesis's 1/sqrt(N_x) (times init_scale), not 0.88 of it.
        """
        out = []
        for i in range(len(self.sizes) - 1):
            std = self.init_scale / math.sqrt(self.sizes[i])
            w = torch.randn(count, self.rows(i), self.sizes[i], generator=gen)
            while (bad := w.abs() > TRUNC).any():  # resample outside +-2 std
                w[bad] = torch.randn(int(bad.sum()), generator=gen)
            out.append((w * (std / TRUNC_STD)).to(device))
        return out

    def layer_step(self, w: torch.Tensor, x: torch.Tensor, out_size: int):
        """One SRWM layer on x (B, I) with W (B, O+2I+4, I): returns (new W, y (B, O))."""
        inp = w.shape[2]
        z = torch.bmm(w, torch.tanh(x)[:, :, None])[:, :, 0]  # (7.1): (B, O+2I+4)
        y, kq, beta = torch.split(z, [out_size, 2 * inp, 4], dim=1)
        kq = torch.tanh(kq).view(-1, 2, inp)  # psi(k), psi(q): (B, 2, I)
        vv = torch.tanh(torch.bmm(kq, w.transpose(1, 2)))  # (7.2), (7.3): psi(vbar), psi(v) (B, 2, R)
        lr = torch.sigmoid(beta).repeat_interleave(self.blocks(out_size, inp, w.device), dim=1)
        delta = torch.bmm((lr * (vv[:, 1] - vv[:, 0]))[:, :, None], kq[:, :1])  # (7.4): (B, R, I)
        return w + delta, y

    def blocks(self, out_size: int, inp: int, device) -> torch.Tensor:
        """Rows per learning rate: the blocks of W producing y, k, q and beta (cached)."""
        key = (out_size, inp, str(device))
        if key not in self._blocks:
            self._blocks[key] = torch.tensor([out_size, inp, inp, 4], device=device)
        return self._blocks[key]

    def step(self, weights: list[torch.Tensor], x: torch.Tensor):
        """One environment step of B solutions: (new weights, logits (B, actions))."""
        new = []
        h = x
        for i, w in enumerate(weights):
            w, h = self.layer_step(w, h, self.sizes[i + 1])
            new.append(w)
        return new, h
