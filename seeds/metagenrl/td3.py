"""TD3 (Fujimoto et al. 2018), the baseline the learned objective is compared with (thesis sec. 2.5).

PROTECTED: part of the fixed evaluator; the judge (evaluate.py) runs it in its own process. It is
the DPG path of the seed's baseline agents (metagenrl.py's `Agents` with no objective), copied so
that the baseline never runs the variant's code: E deterministic policies and twin critics batched
as one ensemble (weights (E, in, out)), ReLU and layer normalisation (App. A.2.1), clipped double-Q
targets with target policy smoothing, a policy step on -grad_phi Q(s, pi(s)) every `policy_delay`
critic steps, Polyak targets, Gaussian exploration after `random_steps` uniform actions. Built and
stepped in the same order as the baseline's `Agents`, so with the same seeds it draws the same
random numbers and ends with the same weights (tests/test_seeds_metagenrl.py checks this).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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


class BatchedLinear(nn.Module):
    """E independent linear maps: x (E, N, in) -> (E, N, out)."""

    def __init__(self, E, n_in, n_out, scale=1.0):
        super().__init__()
        bound = scale / math.sqrt(n_in)
        self.w = nn.Parameter(torch.empty(E, n_in, n_out).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(E, 1, n_out))

    def forward(self, x):
        return torch.baddbmm(self.b, x, self.w)


class BatchedMLP(nn.Module):
    """E MLPs with ReLU and layer normalisation, x (E, N, in) -> (E, N, out)."""

    def __init__(self, E, n_in, n_out, hidden, layers, out_scale=1.0):
        super().__init__()
        sizes = [n_in] + [hidden] * layers
        self.hidden = nn.ModuleList(BatchedLinear(E, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = BatchedLinear(E, sizes[-1], n_out, scale=out_scale)

    def forward(self, x):
        for lin in self.hidden:
            h = lin(x)
            x = F.relu(F.layer_norm(h, h.shape[-1:]))
        return self.out(x)


def clip_per_agent(grads, max_norm):
    """Scale each agent's slice (leading dim E) of the gradients to global norm <= max_norm."""
    if max_norm <= 0:
        return grads
    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)  # (E,)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    return [g * scale.view(-1, *([1] * (g.dim() - 1))) for g in grads]


class TD3(nn.Module):
    """E TD3 actor-critics acting in [-1, 1]^A. Defaults: the thesis's Table A.2 (as train.py's)."""

    def __init__(self, E, obs_dim, act_dim, act_mask, hidden=64, layers=2, gamma=0.99, tau=0.005,
                 critic_lr=1e-3, policy_lr=1e-3, batch_size=100, policy_delay=2, target_noise=0.2,
                 noise_clip=0.5, expl_noise=0.1, random_steps=1000, grad_clip=1.0, device="cpu"):
        super().__init__()
        self.E, self.act_dim = E, act_dim
        self.gamma, self.tau, self.batch_size = gamma, tau, batch_size
        self.policy_delay, self.target_noise, self.noise_clip = policy_delay, target_noise, noise_clip
        self.expl_noise, self.random_steps, self.grad_clip = expl_noise, random_steps, grad_clip
        self.register_buffer("act_mask", torch.as_tensor(act_mask, dtype=torch.float32))  # (E, A)
        # built in the baseline Agents' order: the initial weights draw the same random numbers
        self.policy = BatchedMLP(E, obs_dim, act_dim, hidden, layers, out_scale=0.1)
        self.q1 = BatchedMLP(E, obs_dim + act_dim, 1, hidden, layers)
        self.q2 = BatchedMLP(E, obs_dim + act_dim, 1, hidden, layers)
        self.targ = nn.ModuleDict({"policy": BatchedMLP(E, obs_dim, act_dim, hidden, layers),
                                   "q1": BatchedMLP(E, obs_dim + act_dim, 1, hidden, layers),
                                   "q2": BatchedMLP(E, obs_dim + act_dim, 1, hidden, layers)})
        for name in ("policy", "q1", "q2"):
            self.targ[name].load_state_dict(getattr(self, name).state_dict())
            self.targ[name].requires_grad_(False)
        self.to(device)
        self.critic_opt = Adam([*self.q1.parameters(), *self.q2.parameters()], lr=critic_lr)
        self.policy_opt = Adam(self.policy.parameters(), lr=policy_lr)
        self.updates = 0
        self.gen = torch.Generator(device="cpu")

    def pi(self, obs, net=None):
        """Deterministic actions (E, N, A) in [-1, 1], zero on padded dimensions."""
        return torch.tanh((net or self.policy)(obs)) * self.act_mask.unsqueeze(1)

    def q(self, net, obs, act):
        return net(torch.cat([obs, act], -1)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs, step, explore=True):
        """obs (E, O) numpy -> actions (E, A) numpy: uniform for the first random_steps, then
        pi(s) plus Gaussian exploration noise."""
        dev = self.act_mask.device
        if explore and step < self.random_steps:
            a = torch.rand(self.E, self.act_dim, generator=self.gen) * 2 - 1
        else:
            a = self.pi(torch.as_tensor(obs, device=dev).unsqueeze(1)).squeeze(1).cpu()
            if explore:
                a = a + self.expl_noise * torch.randn(a.shape, generator=self.gen)
        return (a.clamp(-1, 1) * self.act_mask.cpu()).numpy()

    def critic_update(self, b):
        """Clipped double-Q TD error with target policy smoothing, on transitions (E, B, ...)."""
        with torch.no_grad():
            a2 = self.pi(b["next_obs"], net=self.targ["policy"])
            noise = (torch.randn_like(a2) * self.target_noise).clamp(-self.noise_clip, self.noise_clip)
            a2 = (a2 + noise).clamp(-1, 1) * self.act_mask.unsqueeze(1)
            q_next = torch.min(*(self.q(self.targ[k], b["next_obs"], a2) for k in ("q1", "q2")))
            y = b["rew"] + self.gamma * (1 - b["term"]) * q_next
        err = [(self.q(net, b["obs"], b["act"]) - y) ** 2 for net in (self.q1, self.q2)]
        loss = (err[0] + err[1]).mean(1).sum()  # sum over agents
        grads = torch.autograd.grad(loss, self.critic_opt.params)
        self.critic_opt.step(clip_per_agent(grads, self.grad_clip))

    def policy_update(self, replay):
        """One Adam step of the policies on the deterministic policy gradient -grad_phi Q1(s, pi(s))."""
        b = replay.sample(self.batch_size, self.act_mask.device)
        dpg = -self.q(self.q1, b["obs"], self.pi(b["obs"])).mean(1).sum()  # sum over agents
        grads = torch.autograd.grad(dpg, self.policy_opt.params)
        self.policy_opt.step(clip_per_agent(grads, self.grad_clip))

    @torch.no_grad()
    def update_targets(self):
        for name in ("policy", "q1", "q2"):
            for p, tp in zip(getattr(self, name).parameters(), self.targ[name].parameters()):
                tp.lerp_(p, self.tau)

    def update(self, replay):
        """One environment step's worth of learning: a critic step and, every policy_delay-th time,
        a policy step and a target update (nothing until the buffer holds a batch)."""
        if replay.size < self.batch_size:
            return
        self.critic_update(replay.sample(self.batch_size, self.act_mask.device))
        self.updates += 1
        if self.updates % self.policy_delay == 0:
            self.policy_update(replay)
            self.update_targets()
