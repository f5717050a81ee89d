"""Bernoulli bandit tasks and the lifetime loop every agent is run through (thesis sec. 4.5, App. C.1).

PROTECTED: train.py, the baseline and the evaluator all run agents through `run_lifetimes`, so
the bandits, the inputs an agent receives, the action sampling and the regret are the same
everywhere and cannot be changed by a variant.

Tasks. A K-armed bandit pays r = 1 with probability p_i for arm i, else 0.
- `independent(K)`: p_i ~ U[0, 1] independently (Fig. 4.4: the N-armed bandits).
- Wang et al. (2016) two-armed families (App. C.1): uniform independent, uniform dependent
  (p_2 = 1 - p_1), easy {0.1, 0.9}, medium {0.25, 0.75}, hard {0.4, 0.6}.

Agent interface. An agent is a batch of lifetimes laid out as (P, E): P parameter vectors (an ES
population, or 1) times E bandits each. At each of L pulls it is called as
    state, logits = step(state, obs, prev_action, reward, done)
with obs (P, E, 1) = 1 (bandits have no observation; a constant input), prev_action (P, E, K)
the one-hot previous arm (zeros at t = 0), reward (P, E) the previous reward and done (P, E) = 0
(the lifetime is one episode of L pulls), and returns logits (P, E, K). The arm is sampled here
from softmax(logits). Expected cumulative regret of a lifetime: sum_t (max_i p_i - p_{a_t}).
"""

from __future__ import annotations

import torch

WANG_FAMILIES = ("unif_indep", "unif_dep", "easy", "medium", "hard")
PULLS = 100  # lifetime length L (App. C.2.2: 100 arm pulls for bandits)


def independent(shape, arms: int, gen: torch.Generator) -> torch.Tensor:
    """Arm probabilities (*shape, arms), each ~ U[0, 1]."""
    return torch.rand(*shape, arms, generator=gen)


def wang(shape, family: str, gen: torch.Generator) -> torch.Tensor:
    """Two-armed arm probabilities (*shape, 2) of one of Wang et al.'s families (App. C.1)."""
    if family == "unif_indep":
        return torch.rand(*shape, 2, generator=gen)
    if family == "unif_dep":
        p1 = torch.rand(*shape, generator=gen)
    else:
        hi = {"easy": 0.9, "medium": 0.75, "hard": 0.6}[family]
        p1 = torch.where(torch.rand(*shape, generator=gen) < 0.5, hi, 1 - hi)
    return torch.stack([p1, 1 - p1], -1)


@torch.no_grad()
def run_lifetimes(step, state, probs: torch.Tensor, gen: torch.Generator, pulls: int = PULLS,
                  paired: bool = False):
    """Run lifetimes on bandits `probs` (P, E, K); returns rewards (P, E, pulls) and regret (P, E).

    paired=True: members p and p + P/2 (antithetic ES pairs) share their random numbers (action
    sampling noise and reward draws), as in the thesis's code (App. C.4), to reduce variance.
    """
    P, E, K = probs.shape
    device = probs.device
    half = P // 2 if paired else P
    obs = torch.ones(P, E, 1, device=device)
    prev_a = torch.zeros(P, E, K, device=device)
    reward = torch.zeros(P, E, device=device)
    done = torch.zeros(P, E, device=device)
    best = probs.max(-1).values
    rewards, regret = [], torch.zeros(P, E, device=device)
    for _ in range(pulls):
        state, logits = step(state, obs, prev_a, reward, done)
        if logits.shape != (P, E, K):
            raise ValueError(f"agent returned logits of shape {tuple(logits.shape)}, expected {(P, E, K)}")
        logits = torch.nan_to_num(logits.float(), nan=0.0, posinf=1e4, neginf=-1e4)
        u = torch.rand(half, E, K, generator=gen).clamp_(1e-9, 1 - 1e-9).to(device)
        v = torch.rand(half, E, generator=gen).to(device)
        if paired:
            u, v = torch.cat([u, u]), torch.cat([v, v])
        a = (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max sample from softmax(logits)
        p_a = probs.gather(-1, a[..., None])[..., 0]
        reward = (v < p_a).float()
        regret += best - p_a
        rewards.append(reward)
        prev_a = torch.nn.functional.one_hot(a, K).float()
    return torch.stack(rewards, -1), regret
