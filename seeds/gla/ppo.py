"""A small PPO (Schulman et al. 2017) with a Gaussian policy, written for this seed.

PROTECTED: train.py runs it to generate the learning histories the GLA is trained on
(thesis sec. 6.2, Alg. 10 line 2) and evaluate.py runs it as the baseline on the held-out
environment with the same number of environment steps the GLA gets.

Clipped surrogate objective with GAE(lambda) advantages, a state-independent log-std,
running observation normalisation and reward scaling by the running std of the discounted
return (as in common PPO implementations for continuous control). Bootstrapping on
truncation is skipped (treated like termination), as in most small implementations.

With `record=True` it keeps, for every transition, the raw observation, the raw (unclipped)
action, reward, terminated/truncated flags, and the mean and std of the Gaussian policy
that took the action: the supervised targets p(a_i) of thesis Eq. 6.1.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from envs import Lanes


@dataclass
class PPOConfig:
    n_envs: int = 8  # parallel environment lanes
    n_steps: int = 64  # steps per lane per iteration (rollout = n_envs * n_steps transitions)
    lr: float = 1e-3  # Adam step size (annealed linearly to 0 over the run)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4  # passes over each rollout
    minibatches: int = 4
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64


class Adam:
    """Adam with decoupled weight decay (AdamW when weight_decay > 0), written out because creating a
    torch.optim optimizer imports torch._dynamo, which costs several seconds per process."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay, self.t = lr, betas, eps, weight_decay, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            if self.weight_decay:
                p.mul_(1 - self.lr * self.weight_decay)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


class RunningMeanStd:
    def __init__(self, shape):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(-1, *self.mean.shape)
        m, v, n = x.mean(0), x.var(0), len(x)
        delta, tot = m - self.mean, self.count + n
        self.var = (self.var * self.count + v * n + delta**2 * self.count * n / tot) / tot
        self.mean, self.count = self.mean + delta * n / tot, tot


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden):
        super().__init__()

        def mlp(out, gain):
            net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                nn.Linear(hidden, out))
            for layer in net:
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight, np.sqrt(2))
                    nn.init.zeros_(layer.bias)
            nn.init.orthogonal_(net[-1].weight, gain)
            return net

        self.mean, self.value = mlp(act_dim, 0.01), mlp(1, 1.0)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def dist(self, x):
        return torch.distributions.Normal(self.mean(x), self.log_std.exp().expand(x.shape[0], -1))


def run_ppo(env_id, total_steps, seed, cfg=None, record=False, log=None, env_kwargs=None):
    """Train PPO for about total_steps environment steps (whole iterations); env_kwargs (a dict of
    gym.make arguments, e.g. the meta-test lane's goal) applies to every PPO lane.

    Returns dict(episodes=[(lane, start, end, return, complete)], iter_return=[mean return of the
    episodes finished in each iteration], and with record=True the history arrays, each shaped
    (iterations, n_steps, n_envs, ...): obs, act, rew, term, trunc, mean, std).
    """
    cfg = cfg or PPOConfig()
    torch.manual_seed(seed)
    lanes = Lanes(env_id, cfg.n_envs, seed, None if env_kwargs is None else [env_kwargs] * cfg.n_envs)
    net = ActorCritic(lanes.obs_dim, lanes.act_dim, cfg.hidden)
    opt = Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
    obs_rms, ret_rms = RunningMeanStd(lanes.obs_dim), RunningMeanStd(())
    disc_ret = np.zeros(cfg.n_envs)
    iters = max(1, total_steps // (cfg.n_envs * cfg.n_steps))
    T, N = cfg.n_steps, cfg.n_envs
    hist = {k: [] for k in ("obs", "act", "rew", "term", "trunc", "mean", "std")} if record else None
    iter_return = []
    obs = lanes.obs.copy()
    for it in range(iters):
        opt.lr = cfg.lr * (1 - it / iters)
        buf = {k: [] for k in ("x", "raw", "a", "logp", "v", "r", "rew", "done", "mean", "std", "term",
                               "trunc")}
        n_done_before = len(lanes.episodes)
        for _ in range(T):
            obs_rms.update(obs)
            x = torch.as_tensor(np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10),
                                dtype=torch.float32)
            with torch.no_grad():
                d = net.dist(x)
                a = d.sample()
                v = net.value(x).squeeze(-1)
            nxt, r, term, trunc = lanes.step(a.numpy())
            disc_ret = disc_ret * cfg.gamma + r
            ret_rms.update(disc_ret)
            disc_ret[term | trunc] = 0.0
            for k, val in (("x", x), ("raw", obs), ("a", a), ("logp", d.log_prob(a).sum(-1)), ("v", v),
                           ("r", r / np.sqrt(ret_rms.var + 1e-8)), ("done", term | trunc),
                           ("mean", d.mean), ("std", d.stddev), ("term", term), ("trunc", trunc)):
                buf[k].append(torch.as_tensor(np.asarray(val), dtype=torch.float32))
            buf["rew"].append(torch.as_tensor(r, dtype=torch.float32))
            obs = nxt
        b = {k: torch.stack(v) for k, v in buf.items()}  # (T, N, ...)
        if record:
            for k, src in (("obs", "raw"), ("act", "a"), ("rew", "rew"), ("term", "term"), ("trunc", "trunc"),
                           ("mean", "mean"), ("std", "std")):
                hist[k].append(b[src].numpy())  # (T, N, ...)
        finished = [e[3] for e in lanes.episodes[n_done_before:]]
        iter_return.append(float(np.mean(finished)) if finished else float("nan"))
        if log is not None:
            log(it, iters, iter_return[-1])
        # GAE(lambda) advantages
        with torch.no_grad():
            x_last = torch.as_tensor(np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10),
                                     dtype=torch.float32)
            next_v = net.value(x_last).squeeze(-1)
        adv, last = torch.zeros(T, N), torch.zeros(N)
        for t in reversed(range(T)):
            nv = next_v if t == T - 1 else b["v"][t + 1]
            nonterminal = 1.0 - b["done"][t]
            delta = b["r"][t] + cfg.gamma * nv * nonterminal - b["v"][t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            adv[t] = last
        ret = adv + b["v"]
        flat = {k: b[k].reshape(T * N, *b[k].shape[2:]) for k in ("x", "a", "logp")}
        flat_adv, flat_ret = adv.reshape(-1), ret.reshape(-1)
        mb = max(1, T * N // cfg.minibatches)
        for _ in range(cfg.epochs):
            perm = torch.randperm(T * N)
            for s in range(0, T * N, mb):
                idx = perm[s : s + mb]
                d = net.dist(flat["x"][idx])
                ratio = (d.log_prob(flat["a"][idx]).sum(-1) - flat["logp"][idx]).exp()
                a_mb = flat_adv[idx]
                a_mb = (a_mb - a_mb.mean()) / (a_mb.std() + 1e-8) if len(idx) > 1 else a_mb
                pg = -torch.min(ratio * a_mb, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a_mb).mean()
                vf = ((net.value(flat["x"][idx]).squeeze(-1) - flat_ret[idx]) ** 2).mean()
                loss = pg + cfg.vf_coef * vf - cfg.ent_coef * d.entropy().sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                opt.step()
    out = {"episodes": lanes.all_episodes(), "iter_return": iter_return, "steps_per_lane": lanes.t}
    if record:
        out.update({k: np.stack(v) for k, v in hist.items()})  # (iters, T, N, ...)
    return out
