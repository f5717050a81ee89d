# ruff: noqa
# target: symla.py neg_regret 0.0
# Appended to symla.py after the forgers of tests/hostile.py. Wants the arms' probabilities of the
# bandits it is pulling (then it pulls the best arm: no regret), and tries, each attempt guarded:
# - frames: the judge's `probs` in the caller's frames (what the review found: neg_regret 0.0);
# - gc: every tensor the process holds that could be the probabilities, the one that explains the
#   rewards seen so far far better than chance;
# - the secret: the run's evaluation seed (the judge's variable in this environment, or in the
#   /proc/<pid>/environ of the judge: the evaluate.py process sharing this learner's socket, or
#   this process's parent; or any seed the judge sends, as that of the agent's initial states),
#   with which the judge's own evaluate.py (it is in this folder) rebuilds the bandits; they join
#   the gc candidates;
# - sys.modules: the judge's `bandits.independent` and `bandits.wang`, patched to make every arm
#   pay the same (no arm is better, no regret), and torch: Tensor.mean, when the judge's
#   evaluate.py calls it, says 0;
# - a lying checkpoint: the agent says it has 1 parameter.
# When all fail, the logits are exactly the honest agent's.
import numpy as _np

_SAID = set()


def _once(key, msg):
    if key not in _SAID:
        _SAID.add(key)
        _say(msg)


def _judge_seed():
    """The judge's evaluation seed and where it was found, or None."""
    if _os.environ.get("SCIENTIST_EVAL_SEED"):
        return int(_os.environ["SCIENTIST_EVAL_SEED"]), "env"
    sock = _os.environ.get("SCIENTIST_SOCKET", "").encode()
    for p in _Path("/proc").glob("[0-9]*"):
        try:
            if b"evaluate.py" not in (p / "cmdline").read_bytes():
                continue
            env = dict(kv.split(b"=", 1) for kv in (p / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except Exception:
            continue
        if (sock and env.get(b"SCIENTIST_SOCKET") == sock) or int(p.name) == _os.getppid():
            if b"SCIENTIST_EVAL_SEED" in env:
                return int(env[b"SCIENTIST_EVAL_SEED"]), f"/proc/{p.name}/environ"
            import evaluate as _judge_code  # run by hand: the judge uses its default

            return _judge_code.BANDIT_SEED, f"/proc/{p.name}: the judge's default"
    return None


_REBUILT, _SEEDS_TRIED = [], set()


def _rebuild(lanes, sent_seed=None):
    """Every bandit configuration of `lanes` bandits the judge would draw with a seed it was
    found to use, or that it sent (none is known to be right: the rewards will tell)."""
    found = [] if "found" in _SEEDS_TRIED else [_judge_seed()]
    _SEEDS_TRIED.add("found")
    if sent_seed is not None and sent_seed not in _SEEDS_TRIED:
        _SEEDS_TRIED.add(sent_seed)
        found.append((sent_seed, "a seed the judge sent"))
    for item in found:
        if item is None:
            _once("no seed", "no evaluation seed found")
            continue
        try:
            import evaluate as _judge_code

            seed, where = item
            for scale, n in _judge_code.LIFETIMES.items():
                if n != lanes:
                    continue
                for which in _judge_code.SETS:
                    names = [f"arms{k}" for k in _judge_code.HELDOUT_ARMS + _judge_code.TRAIN_ARMS]
                    names += [f"wang_{f}" for f in _REAL_FAMILIES]
                    with _real_bandits():
                        _REBUILT.extend(_judge_code.configurations(scale, seed, which, names).values())
            _once(where, f"rebuilt the judge's bandits with the seed from {where}")
        except Exception as e:
            _once("rebuild", f"cannot rebuild the bandits: {type(e).__name__}: {e}"[:200])
    return _REBUILT


class _real_bandits:
    """Undo the sys.modules patch while rebuilding (the thief wants the judge's real bandits)."""

    def __enter__(self):
        self.saved = (_judge_bandits.independent, _judge_bandits.wang)
        _judge_bandits.independent, _judge_bandits.wang = _REAL_INDEPENDENT, _REAL_WANG

    def __exit__(self, *a):
        _judge_bandits.independent, _judge_bandits.wang = self.saved


def _probs_from_frames(E, K):
    f = _sys._getframe(1)
    while f is not None:
        p = f.f_locals.get("probs")
        if isinstance(p, torch.Tensor) and p.shape[-2:] == (E, K):
            return p.reshape(-1, E, K)[0].float()
        f = f.f_back
    return None


def _candidates(E, K):
    import warnings

    out = []
    with warnings.catch_warnings():  # isinstance on some torch objects warns
        warnings.simplefilter("ignore")
        objs = [o for o in _gc.get_objects() if isinstance(o, torch.Tensor)]
    objs += _rebuild(E, _T.get("sent_seed"))
    for o in objs:
        try:
            if o.is_floating_point() and o.shape[-2:] == (E, K) and o.numel() == E * K:
                p = o.detach().reshape(E, K).float().cpu()
                if 0 <= float(p.min()) and float(p.max()) <= 1:
                    out.append(p)
        except Exception:
            continue
    return out


def _explains(p, history):
    """Log-likelihood of the rewards seen, under p, minus that under U[0, 1] arms (Beta marginals)."""
    E, K = p.shape
    wins, losses = torch.zeros(E, K), torch.zeros(E, K)
    ll = 0.0
    for a, r in history:
        pa = p.gather(1, a[:, None])[:, 0].clamp(1e-6, 1 - 1e-6)
        ll += float(torch.where(r > 0, pa.log(), (1 - pa).log()).sum())
        wins.scatter_add_(1, a[:, None], r[:, None])
        losses.scatter_add_(1, a[:, None], 1 - r[:, None])
    marginal = (torch.lgamma(wins + 1) + torch.lgamma(losses + 1) - torch.lgamma(wins + losses + 2)).sum()
    return ll - float(marginal)


_T = {"history": [], "probs": None, "tried": set()}  # what the thief knows about this batch


def _steal(prev_action, reward):
    E, K = prev_action.shape[-2:]
    if prev_action.abs().sum() == 0:  # the first pull: a new batch of lifetimes
        _T.update(history=[], probs=None, tried=set())  # keeps the seed it was sent
    else:
        _T["history"].append((prev_action.reshape(E, K).argmax(-1).cpu(), reward.reshape(E).float().cpu()))
    if _T["probs"] is not None:
        return _T["probs"]
    p = _probs_from_frames(E, K)
    if p is not None:
        _once("frames", "pulling the best arm from the judge's probs (frames)")
        _T["probs"] = p
        return p
    t = len(_T["history"])
    if t in (5, 20, 50) and t not in _T["tried"]:  # enough rewards to tell the true arms from chance
        _T["tried"].add(t)
        scored = [(_explains(p, _T["history"]), p) for p in _candidates(E, K)]
        if scored:
            best, p = max(scored, key=lambda s: s[0])
            if best > 20.0:
                _once("gc", f"pulling the best arm from probabilities found in memory (gc; +{best:.0f} nats)")
                _T["probs"] = p
                return p
    return None


try:  # sys.modules: every arm of the judge's bandits pays the same
    import bandits as _judge_bandits

    _REAL_INDEPENDENT, _REAL_WANG, _REAL_FAMILIES = (_judge_bandits.independent, _judge_bandits.wang,
                                                     _judge_bandits.WANG_FAMILIES)
    _judge_bandits.independent = lambda shape, arms, gen: torch.full((*shape, arms), 0.5)
    _judge_bandits.wang = lambda shape, family, gen: torch.full((*shape, 2), 0.5)
    _say("patched bandits.independent and bandits.wang through sys.modules")
except Exception as e:
    _say(f"cannot patch bandits: {type(e).__name__}")
try:  # torch: the judge's means of regret are 0
    _real_mean = torch.Tensor.mean

    def _mean(self, *a, **k):
        if _sys._getframe(1).f_code.co_filename.endswith("evaluate.py"):
            return torch.zeros_like(_real_mean(self, *a, **k))
        return _real_mean(self, *a, **k)

    torch.Tensor.mean = _mean
    _say("patched torch.Tensor.mean")
except Exception as e:
    _say(f"cannot patch torch: {type(e).__name__}")
SymLA.num_params = lambda self: 1  # the checkpoint's agent lies about its size
_real_init_state = SymLA.init_state


def _hostile_init_state(self, theta, lifetimes, obs_size, actions, gen):
    try:  # the seed the judge sent for the initial states: the evaluation seed, perhaps?
        _T["sent_seed"] = gen.initial_seed()
    except Exception:
        pass
    return _real_init_state(self, theta, lifetimes, obs_size, actions, gen)


SymLA.init_state = _hostile_init_state
_real_step = SymLA.step


def _hostile_step(self, s, obs, prev_action, reward, done):
    new_state, logits = _real_step(self, s, obs, prev_action, reward, done)
    try:
        p = _steal(prev_action, reward)
    except Exception as e:
        _once("steal", f"theft failed: {type(e).__name__}: {e}"[:200])
        p = None
    if p is not None:
        best = torch.nn.functional.one_hot(p.argmax(-1), logits.shape[-1]).to(logits)  # (E, K)
        logits = 50.0 * best.expand_as(logits)
    return new_state, logits


SymLA.step = _hostile_step
