"""On-policy REINFORCE with a GAE baseline (thesis Eq. 2.3; the 'on-policy REINFORCE (GAE)' row of
Table 2.1), a baseline for the learned objective on the held-out environment.

PROTECTED: part of the fixed evaluator. E independent Gaussian policies (tanh-squashed mean,
state-independent log-std) and value functions, batched like the seed's agents, sized like them.
Every `rollout` environment steps each agent takes one Adam step on
-sum_t log pi(a_t|s_t) * A_t with GAE advantages (normalised per agent) and `value_steps` steps
on its value function's squared error to the discounted return.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from envs import EnvPool


class Adam:
    """Plain Adam (Kingma & Ba 2014, default betas) on a list of tensors, stepped with given grads.

    Written out because torch.optim imports torch._dynamo on first use, which costs seconds per
    process, longer than the whole `test` scale."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


class Linear(nn.Module):
    def __init__(self, E, n_in, n_out, scale=1.0):
        super().__init__()
        bound = scale / math.sqrt(n_in)
        self.w = nn.Parameter(torch.empty(E, n_in, n_out).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(E, 1, n_out))

    def forward(self, x):
        return torch.baddbmm(self.b, x, self.w)


class MLP(nn.Module):
    def __init__(self, E, n_in, n_out, hidden, layers, out_scale=1.0):
        super().__init__()
        sizes = [n_in] + [hidden] * layers
        self.hidden = nn.ModuleList(Linear(E, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = Linear(E, sizes[-1], n_out, out_scale)

    def forward(self, x):
        for lin in self.hidden:
            h = lin(x)
            x = F.relu(F.layer_norm(h, h.shape[-1:]))
        return self.out(x)


def train_reinforce(env, n, steps, seed, hidden, layers, max_episode_steps=None, rollout=1000, lr=1e-3,
                    value_steps=10, gamma=0.99, lam=0.95, device="cpu", env_seed=None):
    """Train n fresh agents for `steps` environment steps; returns (pool, greedy act function).
    `seed` seeds the agents (torch), `env_seed` (default: `seed`) the environments."""
    torch.manual_seed(seed)
    pool = EnvPool([env] * n, seed if env_seed is None else env_seed, max_episode_steps)
    mask = torch.as_tensor(pool.act_mask, device=device)  # (n, A)
    pi = MLP(n, pool.obs_dim, pool.act_dim, hidden, layers, out_scale=0.1).to(device)
    vf = MLP(n, pool.obs_dim, 1, hidden, layers).to(device)
    log_std = nn.Parameter(torch.full((n, 1, pool.act_dim), -0.5, device=device))
    pi_opt = Adam([*pi.parameters(), log_std], lr=lr)
    vf_opt = Adam(vf.parameters(), lr=lr)
    keys = ("obs", "act", "rew", "next_obs", "term", "done")
    buf = {k: [] for k in keys}
    for step in range(steps):
        with torch.no_grad():
            obs = torch.as_tensor(pool.obs, device=device).unsqueeze(1)
            mean = torch.tanh(pi(obs))
            a = (mean + log_std.exp() * torch.randn_like(mean)).squeeze(1) * mask  # unclipped sample
        tr = pool.step(a.clamp(-1, 1).cpu().numpy())
        tr["act"] = a.cpu().numpy()  # the log-likelihood is of the sampled, unclipped action
        for k in keys:
            buf[k].append(tr[k])
        if len(buf["rew"]) == rollout or step == steps - 1:
            b = {k: torch.as_tensor(np.stack(v, 1), device=device) for k, v in buf.items()}  # (n, T, ...)
            buf = {k: [] for k in keys}
            with torch.no_grad():
                v, v_next = vf(b["obs"]).squeeze(-1), vf(b["next_obs"]).squeeze(-1)
                delta = b["rew"] + gamma * (1 - b["term"]) * v_next - v
                adv, ret = torch.zeros_like(delta), torch.zeros_like(delta)
                gae, g = torch.zeros(n, device=device), v_next[:, -1] * (1 - b["term"][:, -1])
                for t in reversed(range(delta.shape[1])):
                    gae = delta[:, t] + gamma * lam * (1 - b["done"][:, t]) * gae
                    g = torch.where(b["done"][:, t] > 0, v_next[:, t] * (1 - b["term"][:, t]), g)
                    g = b["rew"][:, t] + gamma * g
                    adv[:, t], ret[:, t] = gae, g
                adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
            mean = torch.tanh(pi(b["obs"]))
            logp = (-((b["act"] - mean) ** 2) / (2 * (2 * log_std).exp()) - log_std) * mask.unsqueeze(1)
            loss = -(logp.sum(-1) * adv).mean(1).sum()
            pi_opt.step(torch.autograd.grad(loss, pi_opt.params))
            for _ in range(value_steps):
                vloss = ((vf(b["obs"]).squeeze(-1) - ret) ** 2).mean(1).sum()
                vf_opt.step(torch.autograd.grad(vloss, vf_opt.params))

    @torch.no_grad()
    def act(obs, step, explore=False):
        o = torch.as_tensor(obs, device=device).unsqueeze(1)
        return (torch.tanh(pi(o)).squeeze(1) * mask).cpu().numpy()

    return pool, act
