"""The Generally Learning Agent: a causal Transformer policy pi_theta(a_i | s_i, tau_{<i}) (thesis Fig. 6.2).

One token per environment step i. Token i carries what the agent knows when it must act:
the current observation s_i and the previous transition's action a_{i-1}, reward r_{i-1},
whether s_i starts a new episode and whether the previous one terminated. So the sequence
of tokens holds every transition (s, a, r, d, s') of tau, and the output at token i is the
distribution over a_i. Weights stay frozen at meta-test; learning happens in the context.

Random projections (thesis sec. 6.2, "Training on broad task distributions"): every
sequence (and every meta-test run) draws W_s in R^{64 x d_s} and W_a in R^{16 x d_a}, dense
Gaussian (the thesis) or signed permutations (a cheaper member of the family, used at smoke).
The model sees W_s s (after in-context normalisation) and W_a a; it outputs a diagonal Gaussian
over u in R^16, and the environment receives a = W_a^+ u (pseudo-inverse). So one network
acts in environments with any observation and action dimensionality.

In-context normalisation: observations are standardised with the mean and variance of the
observations seen so far in the context, rewards likewise (rew_norm="std") or divided by their
running root mean square ("rms"). Both are functions of tau only, computed causally, identically
in training (cumulative sums) and at meta-test (running sums), so the agent needs no
environment-specific constants.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FLAG_DIM = 3  # normalised previous reward, new-episode flag, previous-terminated flag


class Block(nn.Module):
    """Pre-LayerNorm Transformer block whose attention can extend a key/value cache by one step."""

    def __init__(self, d_model, n_head, mlp_ratio=4):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x, cache=None):
        """x (B, L, D); with cache=(k, v) of earlier steps, x holds only the new steps."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:  # (B, H, t, dh) each
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            att = F.scaled_dot_product_attention(q, k, v)  # the new step sees all earlier ones
        else:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.ln2(x)), (k, v)


class GLA(nn.Module):
    def __init__(self, obs_proj=64, act_proj=16, d_model=64, n_layer=2, n_head=4, max_len=512,
                 proj="gaussian", pos_emb=False, rew_norm="std"):
        super().__init__()
        self.obs_proj, self.act_proj, self.max_len, self.proj = obs_proj, act_proj, max_len, proj
        self.rew_norm = rew_norm
        self.inp = nn.Linear(obs_proj + act_proj + FLAG_DIM, d_model)
        # position l in the lifetime: the thesis's eta_i option (pos_emb=False: no eta_i)
        self.pos = nn.Embedding(max_len, d_model) if pos_emb else None
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 2 * act_proj)

    def forward(self, tokens, caches=None, start=0):
        """tokens (B, L, obs_proj + act_proj + 3) at positions start..start+L-1.

        Returns mean and std (B, L, act_proj) of the Gaussian over projected actions u, and
        the per-layer key/value caches to continue from.
        """
        L = tokens.shape[1]
        if start + L > self.max_len:
            raise ValueError(f"context of {start + L} steps exceeds max_len={self.max_len}")
        pos = torch.arange(start, start + L, device=tokens.device)
        x = self.inp(tokens) + (self.pos(pos) if self.pos is not None else 0.0)
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, None if caches is None else caches[i])
            new.append(kv)
        mean, log_std = self.head(self.ln(x)).chunk(2, -1)
        return mean, log_std.clamp(-5.0, 2.0).exp(), new


def random_matrix(rows, cols, kind, gen):
    """A random linear map R^cols -> R^rows of the given family.

    gaussian: dense N(0, 1/cols) entries (thesis sec. 6.2, after GPICL ch. 5);
    signperm: a random signed partial permutation, i.e. every input coordinate is copied with a random
    sign to its own randomly chosen output coordinate (an orthogonal embedding; needs cols <= rows).
    """
    if kind == "gaussian":
        return torch.randn(rows, cols, generator=gen) / math.sqrt(cols)
    if kind == "signperm":
        if cols > rows:
            raise ValueError(f"signperm projection needs {cols} <= {rows}")
        w = torch.zeros(rows, cols)
        slots = torch.randperm(rows, generator=gen)[:cols]
        signs = torch.randint(2, (cols,), generator=gen).float() * 2 - 1
        w[slots, torch.arange(cols)] = signs
        return w
    raise ValueError(f"unknown projection family {kind!r}")


def random_projections(obs_dim, act_dim, obs_proj, act_proj, gen, kind="gaussian"):
    """W_s (obs_proj, obs_dim), W_a (act_proj, act_dim) of family `kind`; W_a^+ (act_dim, act_proj)."""
    w_s = random_matrix(obs_proj, obs_dim, kind, gen)
    w_a = random_matrix(act_proj, act_dim, kind, gen)
    return w_s, w_a, torch.linalg.pinv(w_a)


def normalise(x, n, s1, s2):
    """Standardise x with running sums over the context: count n, sum s1, sum of squares s2."""
    mean = s1 / n
    var = (s2 / n - mean**2).clamp_min(0.0)
    return ((x - mean) / (var + 1e-8).sqrt()).clamp(-5.0, 5.0)


def normalise_reward(r, n, r1, r2, mode):
    """rms: r / running RMS (keeps the sign); std: (r - running mean) / running std."""
    if mode == "rms":
        return r / (r2 / n + 1e-8).sqrt()
    if mode == "std":
        return normalise(r, n, r1, r2)
    raise ValueError(f"unknown reward normalisation {mode!r}")


def sequence_tokens(obs, prev_act, prev_rew, new_ep, prev_term, w_s, w_a, rew_norm="rms"):
    """Tokens (L, obs_proj + act_proj + 3) for one whole sequence; all inputs are raw, per step.

    obs (L, d_s), prev_act (L, d_a), prev_rew/new_ep/prev_term (L,). Statistics are cumulative,
    so token i depends on steps <= i only.
    """
    o = obs.double()
    n = torch.arange(1, len(o) + 1, dtype=torch.float64).unsqueeze(-1)
    o = normalise(o, n, o.cumsum(0), (o**2).cumsum(0)).float()
    r = prev_rew.double()
    r = normalise_reward(r, n.squeeze(-1), r.cumsum(0), (r**2).cumsum(0), rew_norm).float()
    return torch.cat([o @ w_s.T, prev_act @ w_a.T, torch.stack([r, new_ep, prev_term], -1)], -1)


class InContextAgent:
    """Meta-test policy (thesis Alg. 11): n parallel lanes, each with its own projections.

    act(obs) samples actions from pi_theta(a | s, tau); observe(...) appends the transition's
    reward and end flags to tau. The key/value cache holds tau, so each step costs one token.
    """

    def __init__(self, model, obs_dim, act_dim, n, seed, device):
        gen = torch.Generator().manual_seed(seed)
        proj = [random_projections(obs_dim, act_dim, model.obs_proj, model.act_proj, gen, model.proj)
                for _ in range(n)]
        self.w_s, self.w_a, self.w_pinv = (torch.stack(p).to(device) for p in zip(*proj))
        self.model, self.device, self.gen = model, device, gen
        self.caches, self.t = None, 0
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        self.s1, self.s2, self.r1, self.r2 = z(n, obs_dim), z(n, obs_dim), z(n), z(n)
        self.prev_act = torch.zeros(n, act_dim, device=device)
        self.prev_rew, self.prev_term = z(n), torch.zeros(n, device=device)
        self.new_ep = torch.ones(n, device=device)

    @torch.no_grad()
    def act(self, obs):
        """obs (n, d_s) array -> actions (n, d_a) array."""
        o = torch.as_tensor(obs, dtype=torch.float64, device=self.device)
        self.s1, self.s2 = self.s1 + o, self.s2 + o**2
        self.r1, self.r2 = self.r1 + self.prev_rew, self.r2 + self.prev_rew**2
        n = self.t + 1
        o = normalise(o, n, self.s1, self.s2).float()
        r = normalise_reward(self.prev_rew, n, self.r1, self.r2, self.model.rew_norm).float()
        tok = torch.cat([torch.einsum("npd,nd->np", self.w_s, o),
                         torch.einsum("npa,na->np", self.w_a, self.prev_act),
                         torch.stack([r, self.new_ep, self.prev_term], -1)], -1)
        mean, std, self.caches = self.model(tok.unsqueeze(1), self.caches, self.t)
        u = mean[:, 0] + std[:, 0] * torch.randn(mean[:, 0].shape, generator=self.gen).to(self.device)
        a = torch.einsum("nau,nu->na", self.w_pinv, u)
        self.prev_act, self.t = a, self.t + 1
        return a.cpu().numpy()

    def observe(self, reward, terminated, truncated):
        """Reward and end flags (n,) arrays of the transition the last act() started."""
        as_t = lambda x: torch.as_tensor(x, dtype=torch.float64, device=self.device)  # noqa: E731
        self.prev_rew = as_t(reward)
        self.prev_term = as_t(terminated).float()
        self.new_ep = (as_t(terminated).bool() | as_t(truncated).bool()).float()
