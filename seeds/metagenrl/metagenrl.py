"""MetaGenRL's neural objective L_alpha and the TD3-style agents it trains (thesis ch. 2, App. A.2).

EDITABLE. A population of E agents is one batched ensemble: every layer holds E weight matrices
(E, in, out), so agents in different environments (zero-padded observations, masked actions) train
in one call. The objective is ONE network shared by all agents.

- Objective (sec. 2.3.2, App. A.2.1): an LSTM run backwards over a trajectory window. Step t gets
  the reward r_t, the values V_t = Q(s_t, pi(s_t)) and V_{t+1} (zeroed at terminal states), the
  normalised time t, and an action embedding: a 1x1 convolution over action dimensions of the pair
  (a_t from the buffer, pi_phi(s_t)), averaged over dimensions (Eq. A.1), so one objective serves
  any action size. It emits l_t = eta * tanh(o_t / eta); L_alpha = sum_t l_t. Only pi_phi(s_t)
  carries gradient to phi; the values are constants (footnote 3).
- Agents: deterministic policies, twin critics trained by clipped double-Q TD targets with target
  policy smoothing; policies (and the objective) are updated every `policy_delay` critic steps (TD3).
  The policy descends grad_phi L_alpha (Eq. 2.6: phi' = phi - grad_phi L_alpha); with no objective
  it follows the ordinary DPG gradient grad_phi Q(s, pi(s)) (the TD3 baseline).
- Meta-gradient (Eq. 2.6): grad_alpha Q_theta(s, pi_{phi'}(s)) with phi' = phi - lr * grad_phi L,
  a second-order gradient through one policy step, summed over the population.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call


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
    """E MLPs with ReLU and layer normalisation (App. A.2.1), x (E, N, in) -> (E, N, out)."""

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


FORMS = ("free", "weighted", "centered", "positive")


class Objective(nn.Module):
    """L_alpha(tau, pi_phi(s), V): per-step losses (..., L) for trajectory windows (..., L).

    `form` says how the LSTM's output o_t becomes l_t (README, section 4):
    - "free" (the thesis): l_t = eta tanh(o_t / eta); grad_phi L can contain a drift that moves the
      policy's action the same way whatever the data;
    - "weighted": l_t = eta tanh(o_t |pi(s_t) - a_t|^2 / eta), the LSTM reading pi(s_t) without
      gradient: a learned weight on the distance to each buffer action, so the policy only moves towards
      (o_t > 0) or away from (o_t < 0) actions it has data for (the shape of REINFORCE, sec. A.2.1);
    - "centered": as "weighted" with the weights centred per agent (o_t minus their mean over the agent's
      windows): the objective can only redistribute, pulling towards some buffer actions and pushing away
      from others by the same total, never moving away from (or towards) all of its data at once;
    - "positive": as "weighted" with the weight softplus(o_t) >= 0, towards buffer actions only.
    """

    def __init__(self, lstm_units=32, conv_layers=3, conv_filters=32, eta=1000.0, use_time=True,
                 use_values=True, form="free"):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown objective form {form!r}: one of {', '.join(FORMS)}")
        self.eta, self.use_time, self.use_values, self.form = eta, use_time, use_values, form
        sizes = [2] + [conv_filters] * conv_layers
        # 1x1 convolutions over the action dimension = the same small MLP applied to each (a_B, a_pi)
        self.conv = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.lstm = nn.LSTMCell(4 + conv_filters, lstm_units)  # r, V_t, V_{t+1}, t, action embedding
        self.head = nn.Linear(lstm_units, 1)

    def embed_actions(self, a_buf, a_pi, act_mask):
        """(..., A) x2 -> (..., C): Eq. A.1, half ReLU / half square units, mean over real dims."""
        x = torch.stack([a_buf, a_pi], dim=-1)  # (..., A, 2)
        for i, lin in enumerate(self.conv):
            x = lin(x)
            if i < len(self.conv) - 1:
                half = x.shape[-1] // 2
                x = torch.cat([F.relu(x[..., :half]), x[..., half:] ** 2], dim=-1)
        m = act_mask.unsqueeze(-1)  # (..., A, 1)
        return (x * m).sum(-2) / m.sum(-2).clamp(min=1.0)

    def forward(self, rew, v, v_next, time, a_buf, a_pi, valid, act_mask, groups=1):
        """Inputs (M, L) or (M, L, A); returns l_t (M, L), zero where not valid. The M windows are `groups`
        consecutive equal blocks, one per agent (used by the "centered" form)."""
        M, L = rew.shape
        if not self.use_values:
            v, v_next = torch.zeros_like(v), torch.zeros_like(v_next)
        if not self.use_time:
            time = torch.zeros_like(time)
        # every form but 'free': the LSTM sees pi(s_t), but only the distance it weights carries gradient
        emb = self.embed_actions(a_buf, a_pi if self.form == "free" else a_pi.detach(), act_mask)
        x = torch.cat([torch.stack([rew, v, v_next, time], -1), emb], -1)  # (M, L, 4 + C)
        h = x.new_zeros(M, self.lstm.hidden_size)
        c = torch.zeros_like(h)
        out = [None] * L
        for t in reversed(range(L)):  # backwards in time: credit from the future reaches a_t
            m = valid[:, t : t + 1]
            h, c = self.lstm(x[:, t], (h, c))
            h, c = h * m, c * m  # steps after the episode's end leave no state behind
            out[t] = self.head(h).squeeze(-1) * valid[:, t]
        o = torch.stack(out, dim=1)
        if self.form != "free":  # l_t = w_t |pi(s_t) - a_t|^2: no gradient where pi(s_t) = a_t
            w = F.softplus(o) if self.form == "positive" else o
            if self.form == "centered":
                g, vg = w.reshape(groups, -1), valid.reshape(groups, -1)
                mean = (g * vg).sum(1, keepdim=True) / vg.sum(1, keepdim=True).clamp(min=1.0)
                w = (g - mean).reshape(w.shape)
            dist = ((a_pi - a_buf) ** 2 * act_mask).sum(-1) / act_mask.sum(-1).clamp(min=1.0)
            o = w * dist * valid
        return self.eta * torch.tanh(o / self.eta)


def clip_per_agent(grads, max_norm):
    """Scale each agent's slice (leading dim E) of the gradients to global norm <= max_norm."""
    if max_norm <= 0:
        return grads
    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)  # (E,)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    return [g * scale.view(-1, *([1] * (g.dim() - 1))) for g in grads]


class Agents(nn.Module):
    """E TD3-style actor-critics acting in [-1, 1]^A, trained by L_alpha or by DPG."""

    def __init__(self, E, obs_dim, act_dim, act_mask, hidden=64, layers=2, gamma=0.99, tau=0.005,
                 critic_lr=1e-3, policy_lr=1e-3, inner_lr=1e-3, batch_size=100, window=20,
                 window_batch=16, policy_delay=2, target_noise=0.2, noise_clip=0.5, expl_noise=0.1,
                 random_steps=1000, grad_clip=1.0, normalize_inputs="difference", device="cpu"):
        super().__init__()
        self.E, self.act_dim = E, act_dim
        self.gamma, self.tau, self.inner_lr = gamma, tau, inner_lr
        self.batch_size, self.window, self.window_batch = batch_size, window, window_batch
        self.policy_delay, self.target_noise, self.noise_clip = policy_delay, target_noise, noise_clip
        self.expl_noise, self.random_steps, self.grad_clip = expl_noise, random_steps, grad_clip
        # True / False: the names of older checkpoints for "affine" / "off"
        normalize_inputs = {True: "affine", False: "off"}.get(normalize_inputs, normalize_inputs)
        if normalize_inputs not in ("off", "affine", "difference"):
            raise ValueError(f"normalize_inputs: 'off', 'affine' or 'difference', not {normalize_inputs!r}")
        self.normalize_inputs = normalize_inputs
        self.register_buffer("act_mask", torch.as_tensor(act_mask, dtype=torch.float32))  # (E, A)
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

    # --- acting -----------------------------------------------------------------------------------
    def pi(self, obs, params=None, net=None):
        """Deterministic actions (E, N, A) in [-1, 1], zero on padded dimensions."""
        net = net or self.policy
        out = net(obs) if params is None else functional_call(net, params, (obs,))
        return torch.tanh(out) * self.act_mask.unsqueeze(1)

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

    # --- TD3 critic -----------------------------------------------------------------------------
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
        return loss.item()

    @torch.no_grad()
    def update_targets(self):
        for name in ("policy", "q1", "q2"):
            for p, tp in zip(getattr(self, name).parameters(), self.targ[name].parameters()):
                tp.lerp_(p, self.tau)

    # --- the learned objective ------------------------------------------------------------------
    def objective_inputs(self, w):
        """Constant inputs of L_alpha for windows w (E, B, L, ...): r, V_t, V_{t+1}, t (E*B, L)."""
        E, B, L = w["rew"].shape
        with torch.no_grad():
            flat = lambda k: w[k].reshape(E, B * L, -1)  # noqa: E731
            v = self.q(self.q1, flat("obs"), self.pi(flat("obs"))).view(E, B, L)
            v_next = self.q(self.q1, flat("next_obs"), self.pi(flat("next_obs"))).view(E, B, L)
            rew = w["rew"]
            v_next = v_next * (1 - w["term"])  # no value after a terminal state
            if self.normalize_inputs != "off":  # one objective for rewards and values of any scale (README)
                # both maps divide by the batch spread of the TD error r + gamma V' - V (per agent), the
                # one signal that says whether the buffer action a_t beat pi(s_t)
                td = rew + self.gamma * v_next - v
                sd = td.std(dim=(1, 2), keepdim=True) + 1e-3
                mu = v.mean(dim=(1, 2), keepdim=True)
                if self.normalize_inputs == "affine":
                    # one affine map for r, V_t and V_{t+1}: the TD error stays a fixed linear combination
                    # of the inputs, but the values themselves come out large (their spread / the TD's)
                    v, v_next, rew = (v - mu) / sd, (v_next - mu) / sd, rew / sd
                else:
                    # "difference": the same information as (r, V_t, V_{t+1}), reparameterised so that every
                    # input is of order 1 and the TD error is the sum of the first two: r / sd,
                    # (gamma V_{t+1} - V_t) / sd, and the value level (V_t - mean) / its own spread
                    level = (v - mu) / (v.std(dim=(1, 2), keepdim=True) + 1e-3)
                    v, v_next, rew = level, (self.gamma * v_next - v) / sd, rew / sd
        return [x.reshape(E * B, L) for x in (rew, v, v_next, w["time"])]

    def objective_loss(self, objective, w, inputs, params=None):
        """L_alpha per agent (E,): sum over window steps, mean over windows."""
        E, B, L = w["rew"].shape
        a_pi = self.pi(w["obs"].reshape(E, B * L, -1), params).reshape(E * B, L, -1)
        a_buf = w["act"].reshape(E * B, L, -1)
        mask = self.act_mask.view(E, 1, 1, -1).expand(E, B, L, -1).reshape(E * B, L, -1)
        losses = objective(*inputs, a_buf, a_pi, w["valid"].reshape(E * B, L), mask, groups=E)  # (E*B, L)
        return losses.view(E, B, L).sum(-1).mean(-1)

    def meta_gradient(self, objective, w, inputs):
        """Eq. 2.6 on windows w: returns (grad_phi L_alpha at the current phi, meta-loss, meta-gradient).

        meta-loss = -sum_i mean_s Q_i(s, pi_{phi_i'}(s)) with phi' = phi - inner_lr * grad_phi L_alpha;
        its gradient w.r.t. the objective's parameters is second order (through grad_phi L_alpha).
        Descending it raises the critic's value of the policy after one step on L_alpha."""
        params = dict(self.policy.named_parameters())
        inner = self.objective_loss(objective, w, inputs, params).sum()  # sum over agents
        g_obj = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        new = {k: p - self.inner_lr * g for (k, p), g in zip(params.items(), g_obj)}
        E, B, L = w["rew"].shape
        obs = w["obs"].reshape(E, B * L, -1)
        q = self.q(self.q1, obs, self.pi(obs, new)).view(E, B, L)
        valid = w["valid"]
        meta_loss = -((q * valid).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)).sum()
        meta_grads = torch.autograd.grad(meta_loss, list(objective.parameters()))
        return [g.detach() for g in g_obj], meta_loss, meta_grads

    def dpg_cosine(self, w, g_obj):
        """Diagnostic, per agent (E,): cosine of grad_phi L_alpha with DPG's -grad_phi Q(s, pi(s)) on the
        windows' states. Eq. 2.6 trains towards +1: a step on L_alpha then raises Q like a DPG step."""
        E, B, L = w["rew"].shape
        obs = w["obs"].reshape(E, B * L, -1)
        params = list(self.policy.parameters())
        g_q = torch.autograd.grad(-self.q(self.q1, obs, self.pi(obs)).mean(1).sum(), params)
        a = torch.cat([g.flatten(1) for g in g_obj], 1)
        b = torch.cat([g.flatten(1) for g in g_q], 1)
        return F.cosine_similarity(a, b, dim=1)

    def policy_update(self, replay, objective=None, dpg_weight=0.0, meta=False):
        """One Adam step of the policies on grad_phi L_alpha, or on -grad_phi Q (DPG) when no objective
        is given; dpg_weight in [0, 1] blends the two (annealing, App. A.2.2).

        With meta=True, also returns the meta-gradient of Eq. 2.6 w.r.t. the objective's parameters
        (see meta_gradient), taken at the current phi (before this step) on the same windows, and
        the meta-loss value.
        """
        dev = self.act_mask.device
        params = dict(self.policy.named_parameters())
        grads = [torch.zeros_like(p) for p in params.values()]
        meta_out = None
        if objective is not None and (dpg_weight < 1 or meta):
            w = replay.sample_windows(self.window_batch, self.window, dev)
            inputs = self.objective_inputs(w)
            if meta:
                g_obj, meta_loss, meta_grads = self.meta_gradient(objective, w, inputs)
                meta_out = (meta_loss.item(), meta_grads, self.dpg_cosine(w, g_obj))
            else:
                inner = self.objective_loss(objective, w, inputs, params).sum()  # sum over agents
                g_obj = torch.autograd.grad(inner, list(params.values()))
            grads = [g + (1 - dpg_weight) * go for g, go in zip(grads, g_obj)]
        if objective is None or dpg_weight > 0:
            b = replay.sample(self.batch_size, dev)
            dpg = -self.q(self.q1, b["obs"], self.pi(b["obs"])).mean(1).sum()
            g_dpg = torch.autograd.grad(dpg, list(params.values()))
            weight = 1.0 if objective is None else dpg_weight
            grads = [g + weight * gd for g, gd in zip(grads, g_dpg)]
        self.policy_opt.step(clip_per_agent(grads, self.grad_clip))
        return meta_out

    def update(self, replay, objective=None, dpg_weight=0.0, meta=False):
        """One environment step's worth of learning: a critic step and, every policy_delay-th time,
        a policy step (returning its meta-gradient if meta=True, see policy_update) and a target update.
        Returns None when the policy was not updated this time."""
        if replay.size < max(self.batch_size, self.window):
            return None
        self.critic_update(replay.sample(self.batch_size, self.act_mask.device))
        self.updates += 1
        if self.updates % self.policy_delay:
            return None
        out = self.policy_update(replay, objective, dpg_weight, meta)
        self.update_targets()
        return out if meta else ()
