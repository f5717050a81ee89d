"""Self-checks of the seed's invariants (not run by CI; `python check.py`, a few seconds).

1. train.symmetric_kl equals KL(p||q) + KL(q||p) from torch.distributions, per action dimension.
2. The tokens train.py builds from a whole sequence (cumulative statistics) equal the tokens the
   meta-test agent builds step by step (running statistics), for the same projections.
3. The key/value-cached forward of the meta-test agent equals the full causal forward of training.
"""

import numpy as np
import torch
from torch.distributions import MultivariateNormal, kl_divergence

import gla
import train


def check_symmetric_kl():
    B, L, A, d = 2, 3, 16, 3
    mean, std = torch.randn(B, L, A), torch.rand(B, L, A) + 0.3
    w_pinv = torch.stack([torch.linalg.pinv(torch.randn(A, d)) for _ in range(B)])
    p_mean, p_std = torch.randn(B, L, d), torch.rand(B, L, d) + 0.2
    ours = train.symmetric_kl(mean, std, w_pinv, p_mean, p_std)
    for b in range(B):
        for i in range(L):
            cov = w_pinv[b] @ torch.diag(std[b, i] ** 2) @ w_pinv[b].T
            q = MultivariateNormal(w_pinv[b] @ mean[b, i], cov)
            p = MultivariateNormal(p_mean[b, i], torch.diag(p_std[b, i] ** 2))
            ref = (kl_divergence(p, q) + kl_divergence(q, p)) / d
            assert torch.allclose(ours[b, i], ref, rtol=1e-3, atol=1e-4), (ours[b, i], ref)


def check_tokens_and_cache(proj="gaussian", pos_emb=False, rew_norm="std"):
    T, d_s, d_a = 20, 4, 2
    model = gla.GLA(max_len=T, proj=proj, pos_emb=pos_emb, rew_norm=rew_norm).eval()
    obs = torch.randn(T, d_s) * torch.tensor([1.0, 10.0, 0.01, 3.0]) + 2
    rew, term = torch.randn(T), (torch.rand(T) < 0.2).float()
    agent = gla.InContextAgent(model, d_s, d_a, 1, seed=5, device=torch.device("cpu"))
    seen, forward = [], model.forward

    def spy(tokens, caches=None, start=0):
        seen.append(tokens[0, 0].clone())
        return forward(tokens, caches, start)

    model.forward = spy
    acts = []
    for t in range(T):
        acts.append(torch.as_tensor(agent.act(obs[t : t + 1].numpy())[0]).float())
        agent.observe(rew[t : t + 1].numpy(), term[t : t + 1].numpy(), np.zeros(1))
    model.forward = forward

    def prev(x):
        return torch.cat([torch.zeros_like(x[:1]), x[:-1]])

    new_ep = prev(term)
    new_ep[0] = 1.0
    tokens = gla.sequence_tokens(obs, prev(torch.stack(acts)), prev(rew), new_ep, prev(term),
                                 agent.w_s[0], agent.w_a[0], model.rew_norm)
    assert torch.allclose(tokens, torch.stack(seen), atol=1e-4), (tokens - torch.stack(seen)).abs().max()
    full, _, _ = model(tokens[None])
    caches, steps = None, []
    for t in range(T):
        m, _, caches = model(tokens[None, t : t + 1], caches, t)
        steps.append(m[0, 0])
    assert torch.allclose(torch.stack(steps), full[0], atol=1e-5)


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(1)
    check_symmetric_kl()
    print("ok: symmetric KL matches torch.distributions")
    with torch.no_grad():
        check_tokens_and_cache()
        check_tokens_and_cache("signperm", True, "rms")
    print("ok: training tokens == meta-test tokens; cached forward == full causal forward")
