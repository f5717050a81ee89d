"""SymLA: one recurrent VSML layer acting as a reinforcement learner (thesis sec. 4.4, Alg. 14, App. C.4).

A layer with A inputs (observation entries) and B outputs (actions) holds A*B LSTM states
h_ab, c_ab in R^N; all LSTMs share one parameter set theta. Per environment step, every LSTM
reads (Eq. 4.9)

    h_ab <- LSTM_theta(h_ab, [bwd_a, o_a, fwd_b, a_{t-1,b}, r_{t-1}, done])      (micro ticks x2)

where o_a is observation entry a (first element of the incoming forward message), a_{t-1,b} the
one-hot previous action at output b (first element of the incoming backward message), r_{t-1}
and done go to every LSTM, and fwd_b, bwd_a are the layer's OWN messages from the previous step
(the recurrence of sec. 4.4.3). New messages (Eq. 4.7, 4.8; averaged as in the reference code):

    fwd_b = mean_a f_fwd(h_ab),   bwd_a = mean_b f_bwd(h_ab),   logits_b = fwd_b[0]

f_fwd, f_bwd: R^N -> R^M affine. States persist over the whole lifetime (across episodes);
learning happens only in them. theta is one flat vector so evolution strategies can perturb it;
every tensor here carries a leading P axis (population members) and E (lifetimes per member).
The number of meta-parameters does not depend on A or B, so the same theta runs with any
number of arms (sec. 4.4.4, property 2).
"""

from __future__ import annotations

import math

import torch


class SymLA:
    def __init__(self, hidden: int = 16, msg: int = 8, ticks: int = 2, state_init_std: float = 0.0,
                 forget_bias: float = 1.0):
        self.N, self.M, self.ticks = hidden, msg, ticks
        self.state_init_std, self.forget_bias = state_init_std, forget_bias
        self.inp = 2 * msg + 4  # [bwd_a (M), o_a, fwd_b (M), a_{t-1,b}, r, done]
        N, M = hidden, msg
        self.shapes = {"w_ih": (4 * N, self.inp), "w_hh": (4 * N, N), "b": (4 * N,),
                       "w_f": (M, N), "b_f": (M,), "w_b": (M, N), "b_b": (M,)}

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def init_params(self, gen: torch.Generator) -> torch.Tensor:
        """Flat theta: uniform(+-1/sqrt(fan-in)) weights, zero biases, forget-gate bias set."""
        parts = []
        for name, shape in self.shapes.items():
            if name.startswith("w"):
                bound = 1 / math.sqrt(shape[1])
                parts.append((torch.rand(shape, generator=gen) * 2 - 1).flatten() * bound)
            else:
                b = torch.zeros(shape)
                if name == "b":
                    b[self.N:2 * self.N] = self.forget_bias
                parts.append(b)
        return torch.cat(parts)

    def unflatten(self, theta: torch.Tensor) -> dict:
        """theta (P, D) -> dict of (P, *shape) views."""
        out, i = {}, 0
        for name, shape in self.shapes.items():
            n = math.prod(shape)
            out[name] = theta[:, i:i + n].reshape(theta.shape[0], *shape)
            i += n
        return out

    def init_state(self, theta: torch.Tensor, lifetimes: int, obs_size: int, actions: int,
                   gen: torch.Generator):
        P, N, M = theta.shape[0], self.N, self.M
        c = torch.randn(P, lifetimes, obs_size, actions, N, generator=gen).to(theta.device)
        return {"p": self.unflatten(theta), "h": torch.zeros_like(c), "c": c * self.state_init_std,
                "fwd": torch.zeros(P, lifetimes, actions, M, device=theta.device),
                "bwd": torch.zeros(P, lifetimes, obs_size, M, device=theta.device)}

    def step(self, s, obs, prev_action, reward, done):
        """obs (P, E, A), prev_action (P, E, B), reward/done (P, E) -> (state, logits (P, E, B))."""
        p = s["p"]
        P, E, A, B, N = s["h"].shape
        x_a = torch.cat([s["bwd"], obs[..., None]], -1)  # (P, E, A, M+1): input-side message
        x_b = torch.cat([s["fwd"], prev_action[..., None]], -1)  # (P, E, B, M+1): output-side message
        aux = torch.stack([reward, done], -1)  # (P, E, 2)
        x = torch.cat([x_a[:, :, :, None].expand(-1, -1, -1, B, -1),
                       x_b[:, :, None].expand(-1, -1, A, -1, -1),
                       aux[:, :, None, None].expand(-1, -1, A, B, -1)], -1)  # (P, E, A, B, 2M+4)
        gx = torch.einsum("pgi,peabi->peabg", p["w_ih"], x) + p["b"][:, None, None, None]
        h, c = s["h"], s["c"]
        for _ in range(self.ticks):  # micro ticks on the same inputs (App. C.2.1: 2)
            g = gx + torch.einsum("pgn,peabn->peabg", p["w_hh"], h)
            i, f, o, z = g.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
            h = torch.sigmoid(o) * torch.tanh(c)
        fwd = (torch.einsum("pmn,peabn->pebm", p["w_f"], h) / A) + p["b_f"][:, None, None]  # (P, E, B, M)
        bwd = (torch.einsum("pmn,peabn->peam", p["w_b"], h) / B) + p["b_b"][:, None, None]  # (P, E, A, M)
        return {"p": p, "h": h, "c": c, "fwd": fwd, "bwd": bwd}, fwd[..., 0]
