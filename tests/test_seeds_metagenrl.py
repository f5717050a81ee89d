"""metagenrl: the meta-gradient of Eq. 2.6 matches finite differences of the meta-loss; the objective's
forms; and the judge (evaluate.py), which keeps the variant's code in the learner process (learner.py).

The meta-loss is -sum_i mean_s Q_i(s, pi_{phi_i'}(s)) with phi' = phi - inner_lr * grad_phi L_alpha;
its gradient w.r.t. the objective's parameters alpha is second order. Checked in float64 on a tiny
population against central differences along random directions of alpha (a wrong sign, a detached
path from alpha through grad_phi L_alpha to Q, or a missing create_graph would all fail this).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# --- the judge (evaluate.py) and the learner (learner.py): issue 12 ------------------------------


def test_the_protected_td3_is_the_baseline_agents_on_their_dpg_path(mg):
    """td3.TD3 (the judge's baseline, protected) is a copy of the seed's Agents with no objective: from
    the same seeds it draws the same initial weights, acts the same and ends with the same weights, so
    `td3_return` is the TD3 of the README's earlier tables, run without the variant's code."""
    envs, metagenrl = mg
    sys.path.insert(0, str(SEED_DIR))
    try:
        import td3
    finally:
        sys.path.remove(str(SEED_DIR))
    runs = {}
    for name in ("baseline", "td3"):
        torch.manual_seed(3)
        pool = envs.EnvPool(["Pendulum"] * 2, 3, max_episode_steps=30)
        replay = envs.Replay(pool.E, pool.obs_dim, pool.act_dim, 300, 3)
        kw = dict(hidden=8, layers=2, random_steps=40, batch_size=50)
        if name == "td3":
            agents = td3.TD3(pool.E, pool.obs_dim, pool.act_dim, pool.act_mask, **kw)
        else:
            agents = metagenrl.Agents(pool.E, pool.obs_dim, pool.act_dim, pool.act_mask, **kw)
        agents.gen.manual_seed(3)
        acts = []
        for step in range(150):
            acts.append(agents.act(pool.obs, step))
            replay.add(pool.step(acts[-1]))
            agents.update(replay) if name == "td3" else agents.update(replay, None)
        runs[name] = (np.stack(acts), {k: v.clone() for k, v in agents.state_dict().items()})
    assert agents.updates == 101  # steps 49..149 learn (the buffer holds a batch): the weights moved
    np.testing.assert_array_equal(runs["td3"][0], runs["baseline"][0])
    assert runs["td3"][1].keys() == runs["baseline"][1].keys()
    for k, v in runs["baseline"][1].items():
        torch.testing.assert_close(runs["td3"][1][k], v, rtol=0, atol=0)


def test_the_seeds_of_the_sets_are_disjoint_and_the_learners_tell_nothing_of_the_environments():
    sys.path.insert(0, str(SEED_DIR))
    try:
        import evaluate
    finally:
        sys.path.remove(str(SEED_DIR))
    a, b = evaluate.seeds(12345, 0, "fitness", 3), evaluate.seeds(12345, 0, "sealed", 3)
    assert a == evaluate.seeds(12345, 0, "fitness", 3)  # a function of the secret, the training seed, the set
    assert a["env"] != evaluate.seeds(777, 0, "fitness", 3)["env"]
    assert a["env"] != evaluate.seeds(12345, 1, "fitness", 3)["env"]
    span = 1 << 31  # a pool's seeds grow from its base by 1000 per finished episode: far less than 2^30
    fitness = [*a["env"], a["episodes"]]
    assert all(0 <= s < (1 << 30) for s in fitness)
    assert (1 << 32) <= a["holdout"] < (1 << 32) + (1 << 30)
    assert all((2 << 32) <= s < (2 << 32) + (1 << 30) for s in [*b["env"], b["episodes"]])
    assert max(fitness) + span <= a["holdout"] and a["holdout"] + span <= min(b["env"])
    # the learner is told its agents' and objectives' seeds: none of them is an environment's
    told = {*a["agents"], *a["objective"]}
    assert not told & {*a["env"], a["episodes"], a["holdout"]} and len(set(a["env"])) == 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A test-scale checkpoint of the seed's baseline (train.py), trained once."""
    out = tmp_path_factory.mktemp("metagenrl-test") / "out"
    p = subprocess.run([sys.executable, "train.py", "--scale", "test", "--seed", "0", "--out", str(out)],
                       cwd=SEED_DIR, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def judge(folder, out, metrics, **env):
    """Run the judge by hand (it starts learner.py from `folder` itself): (exit status, metrics, stderr)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SCIENTIST_")}
    p = subprocess.run([sys.executable, "evaluate.py", "--scale", "test", "--seed", "0", "--out", str(out),
                        "--metrics", str(metrics)], cwd=folder, env={**e, **env}, capture_output=True,
                       text=True, timeout=600)
    return p.returncode, json.loads(metrics.read_text()) if metrics.is_file() else {}, p.stderr


@pytest.fixture(scope="module")
def honest(checkpoint):
    rc, m, err = judge(SEED_DIR, checkpoint, checkpoint.parent / "honest.json")
    assert rc == 0, err[-3000:]
    return m


def variant(tmp_path, code):
    """A copy of the seed with `code` appended to its editable metagenrl.py."""
    folder = tmp_path / "variant"
    shutil.copytree(SEED_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(folder / "metagenrl.py", "a") as f:
        f.write("\n" + code)
    return folder


SABOTEUR = """
_real_act, _real_update, _real_load = Agents.act, Agents.update, torch.load


def _act(self, obs, step, explore=True):  # before any learning, look worse than the agents are
    a = _real_act(self, obs, step, explore)
    return -a if not explore and self.updates == 0 else a


def _update(self, replay, objective=None, *args, **kwargs):  # TD3, if run with this class, learns nothing
    return None if objective is None else _real_update(self, replay, objective, *args, **kwargs)


def _load(*args, **kwargs):  # a checkpoint that lies about its meta-training environments
    return {**_real_load(*args, **kwargs), "train_envs": []}


Agents.act, Agents.update, torch.load = _act, _update, _load
"""


def test_the_judges_baselines_are_its_own_whatever_the_variant_does(checkpoint, honest, tmp_path):
    """A variant that would have weakened the baselines the old evaluator ran with its class (TD3 learning
    nothing, untrained agents acting backwards) and lies about its meta-training environments: only what
    the learner reports about itself changes; the fitness and the judge's baselines are the honest ones."""
    rc, m, err = judge(variant(tmp_path, SABOTEUR), checkpoint, tmp_path / "m.json")
    assert rc == 0, err[-3000:]
    for k in ("return", "holdout_return", "td3_return", "reinforce_return", "init_return",
              "untrained_objective_return"):
        assert m[k] == honest[k], k
    assert honest["learner_init_return"] == honest["init_return"]  # the baseline's agents are TD3's
    assert m["learner_init_return"] != honest["learner_init_return"]  # the learner's word: sabotaged
    assert honest["claimed_train_envs"] == "MountainCarContinuous" and m["claimed_train_envs"] == ""


def test_the_fitness_depends_on_the_secret_and_the_sealed_set_is_scored_apart(checkpoint, honest, tmp_path):
    rc, secret, err = judge(SEED_DIR, checkpoint, tmp_path / "a.json", SCIENTIST_EVAL_SEED="777")
    assert rc == 0, err[-3000:]
    assert secret["return"] != honest["return"] and secret["td3_return"] != honest["td3_return"]
    rc, sealed, err = judge(SEED_DIR, checkpoint, tmp_path / "b.json", SCIENTIST_EVAL_SEED="777",
                            SCIENTIST_EVAL_SET="sealed")
    assert rc == 0, err[-3000:]
    assert {"return", "init_return", "learner_init_return"} <= sealed.keys()
    assert not {"td3_return", "reinforce_return", "holdout_return", "untrained_objective_return"} & sealed.keys()
    assert sealed["return"] != secret["return"] and sealed["init_return"] != secret["init_return"]


def test_a_checkpoint_that_names_the_heldout_environment_is_refused(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint / "checkpoint.pt", weights_only=True)
    bad = tmp_path / "out"
    bad.mkdir()
    torch.save({**ckpt, "train_envs": ["MountainCarContinuous", "Pendulum"]}, bad / "checkpoint.pt")
    rc, m, _ = judge(SEED_DIR, bad, tmp_path / "m.json")
    assert rc == 4 and m["harness"]["status"] == "crash", m
    assert "held-out environment Pendulum" in m["harness"]["reason"] and "return" not in m


@pytest.mark.parametrize("attack,status", [("nan", 3), ("wrong-shape", 3)])
def test_actions_that_are_not_finite_or_of_the_wrong_shape_are_a_violation(checkpoint, tmp_path, attack,
                                                                            status):
    bad = {"nan": "Agents.act = lambda self, obs, step, explore=True: np.full((self.E, self.act_dim), np.nan)",
           "wrong-shape": "Agents.act = lambda self, obs, step, explore=True: np.zeros((self.E + 1, self.act_dim))"}
    rc, m, _ = judge(variant(tmp_path, "import numpy as np\n" + bad[attack]), checkpoint, tmp_path / "m.json")
    assert rc == status and m["harness"]["status"] == "violated", m
    assert "'action'" in m["harness"]["reason"] and "return" not in m


def test_runs_side_by_side_in_one_learner_act_as_each_would_alone(checkpoint, monkeypatch):
    """The judge steps the untrained objectives' runs side by side, one request per step for all of
    them (a quarter of the round trips at smoke). Each run keeps its own state of torch's global
    generator (TD3's target noise draws from it), so a run's actions are bit for bit those it takes
    alone, and the metrics those of the runs one after another."""
    monkeypatch.syspath_prepend(str(SEED_DIR))  # the learner imports metagenrl when it loads
    import learner
    n, obs_dim, A, steps, seeds, objective_seeds = 2, 3, 1, 130, [11, 12, 13], [21, 22, 23]

    def start(runs):
        obj = learner.MetaGenRLLearner(checkpoint, "cpu")
        obj.load()
        obj.start(runs=len(runs), agents=n, obs_dim=obs_dim, act_dim=A, act_mask=np.ones((n, A), np.float32),
                  steps=steps, seeds=np.array([seeds[r] for r in runs]), objective="untrained",
                  objective_seeds=np.array([objective_seeds[r] for r in runs]))
        return obj

    together, alone = start([0, 1, 2]), [start([r]) for r in range(3)]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3 * n, obs_dim)).astype(np.float32)
    a = together.act(obs, 0, True)["action"]
    assert a.shape == (3 * n, A)
    for r, one in enumerate(alone):
        np.testing.assert_array_equal(a[r * n:(r + 1) * n], one.act(obs[r * n:(r + 1) * n], 0, True)["action"])
    for t in range(1, steps):  # past the random phase and the first updates (a batch in the buffer)
        tr = {"obs": obs, "act": a, "rew": rng.normal(size=3 * n), "next_obs": rng.normal(size=(3 * n, obs_dim)),
              "term": np.zeros(3 * n), "done": (rng.random(3 * n) < 0.05).astype(float), "time": np.zeros(3 * n)}
        tr = {k: np.asarray(v, np.float32) for k, v in tr.items()}
        obs = rng.normal(size=(3 * n, obs_dim)).astype(np.float32)
        a = together.step(**tr, new_obs=obs, t=t)["action"]
        for r, one in enumerate(alone):
            rows = slice(r * n, (r + 1) * n)
            mine = one.step(**{k: v[rows] for k, v in tr.items()}, new_obs=obs[rows], t=t)["action"]
            np.testing.assert_array_equal(a[rows], mine)
    assert together.runs[0].agents.updates > 0
    # the greedy evaluation: sets of episodes, each a block of n rows per run
    greedy = together.act(np.concatenate([obs, obs]), 0, False)["action"]
    np.testing.assert_array_equal(greedy[:3 * n], greedy[3 * n:])
    for r, one in enumerate(alone):
        np.testing.assert_array_equal(greedy[r * n:(r + 1) * n], one.act(obs[r * n:(r + 1) * n], 0, False)["action"])
