"""metagenrl: the meta-gradient of Eq. 2.6 matches finite differences of the meta-loss.

The meta-loss is -sum_i mean_s Q_i(s, pi_{phi_i'}(s)) with phi' = phi - inner_lr * grad_phi L_alpha;
its gradient w.r.t. the objective's parameters alpha is second order. Checked in float64 on a tiny
population against central differences along random directions of alpha (a wrong sign, a detached
path from alpha through grad_phi L_alpha to Q, or a missing create_graph would all fail this).
"""

import sys
from pathlib import Path

import pytest

from conftest import need_module

torch = need_module("torch")
need_module("gymnasium")

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


def population(mg, double=False, **agent_kwargs):
    """Two agents (Pendulum, MountainCar) with a replay of 40 steps of 15-step episodes."""
    envs, metagenrl = mg
    torch.manual_seed(0)
    pool = envs.EnvPool(["Pendulum", "MountainCarContinuous"], 0, max_episode_steps=15)
    replay = envs.Replay(pool.E, pool.obs_dim, pool.act_dim, 200, 0)
    agents = metagenrl.Agents(pool.E, pool.obs_dim, pool.act_dim, pool.act_mask, hidden=8, layers=1,
                              window=6, window_batch=3, **agent_kwargs)
    if double:
        agents = agents.double()
    for step in range(40):
        replay.add(pool.step(agents.act(pool.obs, step)))
    return pool, replay, agents


@pytest.mark.parametrize("normalize,form", [("affine", "free"), ("off", "free"), ("difference", "weighted"),
                                             ("difference", "positive")])
def test_meta_gradient_matches_finite_differences(mg, normalize, form):
    _, metagenrl = mg
    _, replay, agents = population(mg, double=True, inner_lr=0.05, normalize_inputs=normalize,
                                   random_steps=10**9)
    objective = metagenrl.Objective(lstm_units=4, conv_layers=2, conv_filters=4, eta=10.0, form=form).double()
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


def test_the_weighted_form_only_moves_the_policy_towards_or_away_from_buffer_actions(mg):
    """form='weighted' is l_t = w_t |pi(s_t) - a_t|^2: its gradient w.r.t. pi(s_t) is 2 w_t (pi(s_t) - a_t)
    (over the real action dimensions), so it vanishes where the policy's action equals the buffer's, and
    padded action dimensions get none. The free form has no such structure (a drift term is possible)."""
    _, metagenrl = mg
    torch.manual_seed(0)
    M, L, A = 5, 4, 3
    rew, v, v_next, time = (torch.randn(M, L) for _ in range(4))
    valid = torch.ones(M, L)
    mask = torch.tensor([1.0, 1.0, 0.0]).expand(M, L, A)
    a_buf = torch.rand(M, L, A) * 2 - 1
    grads = {}
    for form in ("weighted", "free"):
        torch.manual_seed(1)
        objective = metagenrl.Objective(lstm_units=8, conv_layers=2, conv_filters=8, eta=1000.0, form=form)
        a_pi = a_buf.clone().requires_grad_(True)  # the policy takes exactly the buffer actions
        objective(rew, v, v_next, time, a_buf, a_pi, valid, mask).sum().backward()
        grads[form] = a_pi.grad
    assert grads["weighted"].abs().max() == 0
    assert grads["free"][..., :2].abs().max() > 1e-4
    objective = metagenrl.Objective(lstm_units=8, conv_layers=2, conv_filters=8, eta=1000.0, form="weighted")
    a_pi = (a_buf + 0.3).requires_grad_(True)
    objective(rew, v, v_next, time, a_buf, a_pi, valid, mask).sum().backward()
    assert a_pi.grad[..., :2].abs().min() > 0 and a_pi.grad[..., 2].abs().max() == 0
    # the gradient is parallel to pi - a on the real dimensions: 2 w_t (pi - a) / D with one w_t per step
    ratio = a_pi.grad[..., :2] / (a_pi.detach() - a_buf)[..., :2]
    torch.testing.assert_close(ratio[..., 0], ratio[..., 1])


def test_an_unknown_objective_form_is_refused(mg):
    _, metagenrl = mg
    with pytest.raises(ValueError, match="unknown objective form"):
        metagenrl.Objective(form="signed")


def test_the_difference_inputs_carry_the_td_error_as_a_sum_at_order_one(mg):
    """normalize_inputs='difference' feeds r / sd, (gamma V' - V) / sd and the value level, where sd is the
    TD error's batch spread: the first two must add up to the TD error / sd (unit spread per agent), and
    the level must stay of order 1 even where the values are large and the TD errors small."""
    _, metagenrl = mg
    pool, replay, agents = population(mg, normalize_inputs="difference")
    with torch.no_grad():  # values spread far wider than the TD errors (consecutive states have similar
        agents.q1.out.w.mul_(300.0)  # values), as with trained critics: where 'affine' inputs come out large
    w = replay.sample_windows(3, 6, "cpu")
    rew, level, diff, _ = (x.view(pool.E, -1) for x in agents.objective_inputs(w))
    td = rew + diff
    torch.testing.assert_close(td.std(1), torch.ones(pool.E), atol=0.05, rtol=0)  # sd has a 1e-3 floor
    assert level.abs().max() < 10 and level.std(1).max() < 1.01  # (values of near-zero spread give ~0)
    agents.normalize_inputs = "affine"
    _, v_affine, _, _ = (x.view(pool.E, -1) for x in agents.objective_inputs(w))
    assert v_affine.abs().max() > level.abs().max()
    with pytest.raises(ValueError, match="normalize_inputs"):
        metagenrl.Agents(1, 3, 1, [[1.0]], normalize_inputs="zscore")


def test_the_centered_form_cannot_move_the_policy_away_from_all_its_data_at_once(mg):
    """form='centered' centres the weights per agent, so an objective value sum_t w_t |pi(s_t) - a_t|^2 of a
    policy that is off every buffer action by the same amount is zero for each agent: no net attraction
    to, or repulsion from, the data (the drift that saturated fresh Pendulum policies). 'weighted' has
    no such constraint."""
    _, metagenrl = mg
    torch.manual_seed(0)
    groups, B, L, A = 3, 4, 5, 2
    M = groups * B
    rew, v, v_next, time = (torch.randn(M, L) for _ in range(4))
    valid = torch.ones(M, L)
    valid[1, 3:] = 0  # a window cut by an episode end
    mask = torch.ones(M, L, A)
    a_buf = torch.rand(M, L, A) * 2 - 1
    a_pi = a_buf + 0.3  # the same offset from every buffer action
    per_agent = {}
    for form in ("centered", "weighted"):
        torch.manual_seed(1)
        objective = metagenrl.Objective(lstm_units=8, conv_layers=2, conv_filters=8, eta=1000.0, form=form)
        with torch.no_grad():
            objective.head.bias.add_(1.0)  # make the mean weight clearly non-zero
            per_agent[form] = objective(rew, v, v_next, time, a_buf, a_pi, valid, mask, groups=groups)
        per_agent[form] = per_agent[form].view(groups, -1).sum(1)
    assert per_agent["centered"].abs().max() < 1e-4
    assert per_agent["weighted"].abs().min() > 1e-2
