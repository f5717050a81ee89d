"""The gpicl and symla judges: what they show their learner, and what they accept from it (issue 12).

Fast and in-process: the judges' functions are driven with a fake learner whose replies go
through the harness's checking `Reply`, as real replies do. The adversarial runs of the real
judges against a hostile variant, in the real sandboxes, are in test_integrity.py.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from conftest import need_module
from scientist.harness import judge
from scientist.seed import SEEDS_DIR

torch = need_module("torch")
SEED_MODULES = ("data", "lstm", "bandits", "baseline")  # the seeds' own modules the judges import


def load_judge(seed: str):
    """seeds/<seed>/evaluate.py under a unique name, with the seed's own modules (other seeds
    have modules of the same names, so they are taken out of sys.modules around the import)."""
    folder = SEEDS_DIR / seed
    saved = {k: sys.modules.pop(k) for k in SEED_MODULES if k in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"_{seed}_judge", folder / "evaluate.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(folder))
        for k in SEED_MODULES:
            sys.modules.pop(k, None)
        sys.modules.update(saved)


class Fake:
    """A learner: `answer(op, payload)` returns its reply (tensors become arrays, as on the wire)."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def call(self, op, **payload):
        self.calls.append((op, payload))
        data = {k: v.numpy() if isinstance(v, torch.Tensor) else v
                for k, v in (self.answer(op, payload) or {}).items()}
        return judge.Reply(op, data)


def onehot_logits(labels, classes=10):
    return 50.0 * np.eye(classes, dtype=np.float32)[np.asarray(labels)]


@pytest.fixture(scope="module")
def gpicl():
    return load_judge("gpicl")


@pytest.fixture(scope="module")
def symla():
    return load_judge("symla")


def test_gpicl_learner_gets_prefixes_without_the_label_it_predicts(gpicl):
    S, T, D = 3, 20, 16
    ys = torch.randint(10, (S, T))
    tokens = gpicl.data.make_tokens(torch.randn(S, T, D), ys)
    asked = []

    def oracle(op, payload):  # knows the labels (the test does): predicts y_t for a prefix 0..t
        tok = payload["tokens"]
        assert set(payload) == {"tokens"} and tok.shape[0] == S
        assert np.array_equal(tok, tokens[:, : tok.shape[1]].numpy()), "only the true prefix is sent"
        asked.append(tok.shape[1] - 1)
        return {"logits": onehot_logits(ys[:, tok.shape[1] - 1])}

    correct = gpicl.run_learner(Fake(oracle), tokens, ys)
    _, pos = gpicl.positions(T)
    assert asked == pos, "each evaluated position once, in increasing order"
    assert correct[:, pos].eq(1).all(), "logits for a prefix 0..t are scored against y_t"
    # the labels a prefix holds are y_0..y_{t-1}: copying the last one is right only when y_t = y_{t-1}
    copy = gpicl.run_learner(Fake(lambda op, p: {"logits": onehot_logits(p["tokens"][:, -1, D:].argmax(-1))}),
                             tokens, ys)
    later = [t for t in pos if t > 0]
    assert torch.equal(copy[:, later], (ys[:, [t - 1 for t in later]] == ys[:, later]).float())


@pytest.mark.parametrize("bad", ["shape", "nan", "dtype"])
def test_gpicl_judge_rejects_bad_logits(gpicl, bad):
    S, T = 2, 20
    ys = torch.randint(10, (S, T))
    tokens = gpicl.data.make_tokens(torch.randn(S, T, 16), ys)
    logits = {"shape": np.zeros((S, 9), np.float32), "nan": np.full((S, 10), np.nan, np.float32),
              "dtype": np.zeros((S, 10), bool)}[bad]
    with pytest.raises(judge.Violation):
        gpicl.run_learner(Fake(lambda op, p: {"logits": logits}), tokens, ys)


def test_gpicl_lstm_baseline_is_built_judge_side_from_checked_arrays(gpicl):
    E, H = 26, 8
    honest = gpicl.LSTMLearner(E, 10, H)
    weights = {k: v.numpy() for k, v in honest.state_dict().items()}
    lstm = gpicl.load_lstm(Fake(lambda op, p: {"hidden": H, **weights}), E, torch.device("cpu"))
    assert type(lstm) is gpicl.LSTMLearner  # the protected class, not one the learner names
    assert all(torch.equal(a, b) for a, b in zip(lstm.state_dict().values(), honest.state_dict().values()))
    assert gpicl.load_lstm(Fake(lambda op, p: {"hidden": 0}), E, "cpu") is None
    name = "lstm.weight_ih_l0"
    for bad in ({"hidden": H, **weights, name: weights[name][:-1]},  # wrong shape
                {"hidden": H, **weights, name: np.full_like(weights[name], np.inf)},  # not finite
                {"hidden": 10**6, **weights},  # absurd size
                {"hidden": H}):  # missing arrays
        with pytest.raises(judge.Violation):
            gpicl.load_lstm(Fake(lambda op, p, bad=bad: bad), E, "cpu")


def test_gpicl_sets_share_no_image(gpicl, monkeypatch):
    """Within a set no image is in two sequences; fitness, holdout and sealed pools are disjoint."""
    n, D = 70_000, 16
    ids = np.arange(n, dtype=np.float32)
    fake = (np.concatenate([ids[:, None], np.zeros((n, D - 1), np.float32)], 1), np.zeros(n, np.int64))
    monkeypatch.setattr(gpicl, "load_data", lambda *a: fake)
    monkeypatch.setattr(gpicl.data, "random_task", lambda dim, gen: (torch.eye(dim), torch.arange(10)))
    seen = {}
    for pool, k in (("fitness", 0), ("holdout", 1), ("sealed", 4)):
        xs, _ = gpicl.fashion_set("smoke", pool, [7, k])
        got = xs[..., 0].flatten().long().tolist()
        assert len(got) == len(set(got)) == gpicl.NUM_SEQS["smoke"] * gpicl.SEQ_LEN["smoke"]
        assert {i % 3 for i in got} == {gpicl.POOLS[pool]}
        seen[pool] = set(got)
    assert not (seen["fitness"] & seen["holdout"]) and not (seen["fitness"] & seen["sealed"])


def test_symla_learner_gets_only_its_arm_and_reward_and_the_judge_keeps_the_regret(symla):
    E, K = 50, 4
    probs = torch.rand(1, E, K)
    sent = []

    def oracle(op, payload):  # knows the probabilities (the test does): pulls the best arm
        sent.append((op, payload))
        if op == "act":
            return {"logits": onehot_logits(probs[0].argmax(-1), K)}

    regret = symla.learner_regret(Fake(oracle), probs, seed=1, reset_seed=0)
    assert regret.abs().max() < 1e-6, "the best arm every pull: no regret, from the true probabilities"
    assert sent[0] == ("reset", {"lanes": E, "arms": K, "seed": 0})
    assert len(sent) == 1 + symla.bandits.PULLS
    for op, payload in sent[1:]:
        assert op == "act" and set(payload) == {"obs", "prev_action", "reward", "done"}
        assert set(np.unique(payload["reward"].numpy())) <= {0.0, 1.0}
    random = symla.learner_regret(Fake(lambda op, p: {"logits": np.zeros((E, K), np.float32)}
                                       if op == "act" else None), probs, seed=1, reset_seed=0)
    assert abs(float(random.mean()) - float(symla.random_regret(probs).mean())) < 2.0


@pytest.mark.parametrize("bad", ["shape", "nan", "inf"])
def test_symla_judge_rejects_bad_logits(symla, bad):
    E, K = 5, 3
    logits = {"shape": np.zeros((E, K + 1), np.float32), "nan": np.full((E, K), np.nan, np.float32),
              "inf": np.full((E, K), np.inf, np.float32)}[bad]
    with pytest.raises(judge.Violation):
        symla.learner_regret(Fake(lambda op, p: {"logits": logits} if op == "act" else None),
                             torch.rand(1, E, K), seed=1, reset_seed=0)


def test_symla_bandits_come_from_the_secret_and_the_sets_differ(symla):
    names = [f"arms{k}" for k in symla.HELDOUT_ARMS]
    a = symla.configurations("test", 1, "fitness", names)
    assert all(torch.equal(a[k], symla.configurations("test", 1, "fitness", names)[k]) for k in names)
    for other in (symla.configurations("test", 2, "fitness", names),
                  symla.configurations("test", 1, "holdout", names),
                  symla.configurations("test", 1, "sealed", names)):
        assert not any(torch.equal(a[k], other[k]) for k in names)


def test_symla_pulls_draw_numbers_apart_from_the_bandits(symla):
    """Regression: seeded with [s, 0] and [s, 0, 0] (the same to numpy's SeedSequence), the first
    configuration's pulls sampled their arms with the numbers its probabilities were drawn from."""
    s = symla.seeds(5)
    assert len(set(s.flatten().tolist())) == s.size
    names = [f"arms{k}" for k in symla.HELDOUT_ARMS]
    for which in symla.SETS:
        probs = symla.configurations("test", 5, which, names)
        for i, name in enumerate(names):
            gen = torch.Generator().manual_seed(int(s[symla.SETS[which], 1, i]))
            u = torch.rand(probs[name].shape, generator=gen)
            assert not torch.equal(u, probs[name])
