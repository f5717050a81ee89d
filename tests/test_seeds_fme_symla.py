"""Properties of the fme and symla seeds' models that their papers rely on (fast, in-process)."""

from __future__ import annotations

import importlib.util
import sys


from conftest import need_module
from scientist.seed import SEEDS_DIR

torch = need_module("torch")


def load(seed: str, module: str):
    """Import seeds/<seed>/<module>.py under a unique name (seeds share file names like train.py)."""
    folder = SEEDS_DIR / seed
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"_{seed}_{module}", folder / f"{module}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(folder))


def test_srwm_layer_follows_eq_7_1_to_7_4():
    srwm = load("fme", "srwm")
    net = srwm.SRWMNet([3, 2])
    w = net.init_solutions(1, torch.Generator().manual_seed(0))[0]  # (1, 2 + 6 + 4, 3)
    x = torch.tensor([[0.5, -1.0, 2.0]])
    new_w, y = net.layer_step(w, x, 2)
    W = w[0]
    z = W @ torch.tanh(x[0])
    yy, k, q, beta = z[:2], z[2:5], z[5:8], z[8:]
    v_bar, v = W @ torch.tanh(k), W @ torch.tanh(q)
    lr = torch.sigmoid(beta).repeat_interleave(torch.tensor([2, 3, 3, 4]))
    expected = W + (lr * (torch.tanh(v) - torch.tanh(v_bar)))[:, None] * torch.tanh(k)[None, :]
    assert torch.allclose(y[0], yy, atol=1e-6)
    assert torch.allclose(new_w[0], expected, atol=1e-6)
    assert not torch.allclose(new_w, w), "the layer modifies itself"


def test_initial_weights_have_std_one_over_sqrt_fan_in_for_fme_and_hill_climbing():
    """App. E.1: truncated normal with std 1/sqrt(N_x); N(0, 1) cut at +-2 alone has std 0.88."""
    srwm, hillclimb = load("fme", "srwm"), load("fme", "hillclimb")
    gen = torch.Generator().manual_seed(0)
    fme_layers = srwm.SRWMNet([6, 32, 32, 2]).init_solutions(64, gen)
    hc_layers = hillclimb.init_mlp("cartpole", 64, gen)
    for w in fme_layers + hc_layers:  # (B, rows, fan-in), >= 12,000 weights each
        fan_in = w.shape[2]
        assert abs(w.std().item() * fan_in**0.5 - 1) < 0.03, (tuple(w.shape), w.std().item() * fan_in**0.5)
        assert w.abs().max() * fan_in**0.5 <= 2 / srwm.TRUNC_STD + 1e-5, "truncated at 2 std of N(0, 1)"
        assert abs(w.mean().item()) * fan_in**0.5 < 0.03


def test_fme_selection_prefers_better_buckets_and_evicts_least_recent():
    train = load("fme", "train")
    args = train.Args(buckets=10, temperature=20.0, capacity=3)
    weights = [torch.zeros(1, 2, 2)]
    buf = train.Buffer(weights, args)
    gen = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.0] * 6 + [1.0])  # six bad children, one good
    buf.add([torch.zeros(7, 2, 2)], scores, torch.zeros(7, dtype=torch.long))
    f = buf.fitness()
    assert (f == 0).sum() <= 3, "a bucket keeps at most `capacity` solutions"
    picks = buf.sample(200, gen)
    assert (buf.fitness()[picks] == 1.0).float().mean() > 0.9, "the good bucket is chosen ~e^20 more often"


def test_symla_is_equivariant_to_arm_permutations_and_runs_on_any_arm_count():
    symla = load("symla", "symla")
    agent = symla.SymLA(state_init_std=0.0)
    gen = torch.Generator().manual_seed(0)
    theta = agent.init_params(gen)[None]
    perm = torch.tensor([2, 0, 3, 1])
    prev = torch.nn.functional.one_hot(torch.tensor([[1]]), 4).float()  # (1, 1, 4)
    args = (torch.ones(1, 1, 1), prev, torch.ones(1, 1), torch.zeros(1, 1))
    s, logits = agent.step(agent.init_state(theta, 1, 1, 4, gen), *args)
    _, logits2 = agent.step(s, *args)
    sp, lp = agent.step(agent.init_state(theta, 1, 1, 4, gen), args[0], prev[..., perm], *args[2:])
    _, lp2 = agent.step(sp, args[0], prev[..., perm], *args[2:])
    assert torch.allclose(lp2, logits2[..., perm], atol=1e-5), "permuting arms permutes the logits"
    assert not torch.allclose(logits2, logits2[..., perm]), "the previous action matters"
    for arms in (2, 7, 12):  # the same theta for every arm count
        _, out = agent.step(agent.init_state(theta, 3, 1, arms, gen), torch.ones(1, 3, 1),
                            torch.zeros(1, 3, arms), torch.zeros(1, 3), torch.zeros(1, 3))
        assert out.shape == (1, 3, arms)


def test_fme_swap_bandit_inputs_and_reward_ablation():
    tasks = load("fme", "tasks")
    seen = {}

    def step_fn(task):
        def step(state, x):
            seen.setdefault(task, []).append(x.clone())
            return state, torch.tensor([[0.0, 50.0]]).expand(x.shape[0], 2)  # always arm 1
        return step

    for task in ("swap_bandit", "swap_bandit_noreward", "bandit"):
        tasks.execute(step_fn(task), torch.zeros(3, 1), task, 30, seed=1)
    xs = torch.stack(seen["swap_bandit"])  # (T, B, [a0, a1, r, 1])
    assert xs.shape[-1] == tasks.input_size("swap_bandit") == 4
    assert (xs[0] == torch.tensor([0.0, 0.0, 0.0, 1.0])).all(), "nothing before the first step"
    assert (xs[1:, :, :2] == torch.tensor([0.0, 1.0])).all(), "the previous action, one-hot"
    assert set(xs[1:, :, 2].unique().tolist()) == {0.0, 1.0}, "arm 1 pays sometimes, not always"
    xn = torch.stack(seen["swap_bandit_noreward"])
    assert (xn[:, :, 2] == 0).all() and (xn[1:, :, :2] == xs[1:, :, :2]).all(), "only the reward is removed"
    assert torch.stack(seen["bandit"]).shape[-1] == 2, "the plain bandit keeps the thesis's [r, 1]"
