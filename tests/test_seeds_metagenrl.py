"""metagenrl: the meta-gradient of Eq. 2.6 matches finite differences of the meta-loss.

The meta-loss is -sum_i mean_s Q_i(s, pi_{phi_i'}(s)) with phi' = phi - inner_lr * grad_phi L_alpha;
its gradient w.r.t. the objective's parameters alpha is second order. Checked in float64 on a tiny
population against central differences along random directions of alpha (a wrong sign, a detached
path from alpha through grad_phi L_alpha to Q, or a missing create_graph would all fail this).
"""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")

SEED_DIR = Path(__file__).resolve().parents[1] / "seeds" / "metagenrl"


@pytest.fixture(scope="module")
def mg():
    sys.path.insert(0, str(SEED_DIR))
    try:
        import envs
        import metagenrl
        yield envs, metagenrl
    finally:
        sys.path.remove(str(SEED_DIR))


@pytest.mark.parametrize("normalize", [True, False])
def test_meta_gradient_matches_finite_differences(mg, normalize):
    envs, metagenrl = mg
    torch.manual_seed(0)
    pool = envs.EnvPool(["Pendulum", "MountainCarContinuous"], 0, max_episode_steps=15)
    replay = envs.Replay(pool.E, pool.obs_dim, pool.act_dim, 200, 0)
    agents = metagenrl.Agents(pool.E, pool.obs_dim, pool.act_dim, pool.act_mask, hidden=8, layers=1,
                              window=6, window_batch=3, inner_lr=0.05, normalize_inputs=normalize,
                              random_steps=10**9).double()
    for step in range(40):
        replay.add(pool.step(agents.act(pool.obs, step)))
    objective = metagenrl.Objective(lstm_units=4, conv_layers=2, conv_filters=4, eta=10.0).double()
    w = {k: v.double() for k, v in replay.sample_windows(3, 6, "cpu").items()}
    inputs = agents.objective_inputs(w)
    _, _, grads = agents.meta_gradient(objective, w, inputs)
    params = list(objective.parameters())
    assert any(g.abs().sum() > 0 for g in grads), "the meta-gradient is identically zero"
    gen = torch.Generator().manual_seed(1)
    eps = 1e-5
    for _ in range(3):
        u = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, u):
                    p.add_(sign * eps * d)
            vals.append(agents.meta_gradient(objective, w, inputs)[1].item())
            with torch.no_grad():
                for p, d in zip(params, u):
                    p.sub_(sign * eps * d)
        fd = (vals[0] - vals[1]) / (2 * eps)
        analytic = sum((g * d).sum() for g, d in zip(grads, u)).item()
        assert analytic == pytest.approx(fd, rel=1e-4, abs=1e-9)
