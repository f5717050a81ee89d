"""The baseline: a plain in-context RNN (RL^2-style LSTM), meta-trained the same way (thesis sec. 4.5).

PROTECTED (used only by evaluate.py, which trains it with the budget of the scale). The policy
reads [obs, one-hot previous action, r_{t-1}, done] and outputs logits through a linear head,
as in Wang et al. (2016) / Duan et al. (2016). Its input and output layers have a fixed number
of arm slots, MAX_ARMS; a K-armed bandit uses the first K (the other logits are masked). This is
how an ordinary in-context RNN can be run on several arm counts at all: slots it never used in
meta-training are untrained, which is exactly the limitation SymLA's symmetries remove.

The hidden size is chosen so the parameter count is comparable with SymLA's default (N = 16,
M = 8: 2,640 parameters; this LSTM: 2,576). Meta-training is the same antithetic ES with Adam as
train.py (App. C.2.2), with the settings of the scale given by the evaluator.
"""

from __future__ import annotations

import math

import torch

import bandits

MAX_ARMS = 16
HIDDEN = 16


class LSTMAgent:
    def __init__(self, hidden: int = HIDDEN, slots: int = MAX_ARMS):
        self.H, self.slots = hidden, slots
        inp = 1 + slots + 2
        self.shapes = {"w_ih": (4 * hidden, inp), "w_hh": (4 * hidden, hidden), "b": (4 * hidden,),
                       "w_o": (slots, hidden), "b_o": (slots,)}

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def init_params(self, gen: torch.Generator) -> torch.Tensor:
        parts = []
        for name, shape in self.shapes.items():
            if name.startswith("w"):
                parts.append((torch.rand(shape, generator=gen) * 2 - 1).flatten() / math.sqrt(shape[1]))
            else:
                b = torch.zeros(shape)
                if name == "b":
                    b[self.H:2 * self.H] = 1.0  # forget-gate bias
                parts.append(b)
        return torch.cat(parts)

    def init_state(self, theta, lifetimes, obs_size, actions, gen):
        if actions > self.slots:
            raise ValueError(f"the LSTM baseline has {self.slots} arm slots, not {actions}")
        p, i = {}, 0
        for name, shape in self.shapes.items():
            n = math.prod(shape)
            p[name] = theta[:, i:i + n].reshape(theta.shape[0], *shape)
            i += n
        P = theta.shape[0]
        h = torch.zeros(P, lifetimes, self.H, device=theta.device)
        return {"p": p, "h": h, "c": torch.zeros_like(h), "K": actions}

    def step(self, s, obs, prev_action, reward, done):
        p, K = s["p"], s["K"]
        pad = torch.zeros(*prev_action.shape[:2], self.slots - K, device=prev_action.device)
        x = torch.cat([obs, prev_action, pad, reward[..., None], done[..., None]], -1)  # (P, E, inp)
        g = (torch.einsum("pgi,pei->peg", p["w_ih"], x) + torch.einsum("pgh,peh->peg", p["w_hh"], s["h"])
             + p["b"][:, None])
        i, f, o, z = g.chunk(4, -1)
        c = torch.sigmoid(f) * s["c"] + torch.sigmoid(i) * torch.tanh(z)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits = torch.einsum("pkh,peh->pek", p["w_o"], h) + p["b_o"][:, None]
        return {**s, "h": h, "c": c}, logits[..., :K]


def es_train(agent, theta, train_arms, steps, pop, lifetimes, sigma, lr, gen, log_every=0, name="",
             device="cpu"):
    """Antithetic ES (App. C.4) with Adam on the mean lifetime reward; returns the final theta."""
    theta = theta.to(device).requires_grad_()
    opt = torch.optim.Adam([theta], lr=lr)
    for step in range(1, steps + 1):
        eps = torch.randn(pop // 2, theta.numel(), generator=gen).to(device)
        members = torch.cat([theta.detach() + sigma * eps, theta.detach() - sigma * eps])  # (P, D)
        arms = train_arms[int(torch.randint(len(train_arms), (1,), generator=gen))]
        probs = bandits.independent((pop // 2, lifetimes), arms, gen).repeat(2, 1, 1).to(device)
        state = agent.init_state(members, lifetimes, 1, arms, gen)
        rewards, regret = bandits.run_lifetimes(agent.step, state, probs, gen, paired=True)
        fit = rewards.mean((1, 2))  # (P,) mean reward per pull
        grad = ((fit[: pop // 2] - fit[pop // 2:]) / (2 * sigma))[:, None] * eps  # ascent direction
        theta.grad = -grad.mean(0)
        opt.step()
        if log_every and step % log_every == 0:
            print(f"{name} step {step:5d} arms {arms:2d} mean reward {fit.mean():.3f} "
                  f"regret {regret.mean():.2f}", flush=True)
    return theta.detach().cpu()
