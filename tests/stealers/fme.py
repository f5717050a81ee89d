# ruff: noqa
# target: srwm.py fme_score 0.99
# Appended to srwm.py after the forgers of tests/hostile.py. Tries to raise the fitness without
# finding better solutions; each attempt is guarded and says on stderr what it got. When every
# one fails, the network computes exactly what the honest srwm.py computes.
# - modules: the judge's own `tasks` module through sys.modules: MAX_SCORE shrunk (the fitness
#   divides by it), `execute` wrapped to inflate every score;
# - frames: the judge's environments in the caller's frames (tasks.execute's `envs`/`env`): the
#   bandits' good arm, played at every step;
# - rewards: the judge's running reward sums (`total` in tasks.execute) raised in place;
# - gc: the judge's bandit environments found among all objects, their good arm played;
# - seed: the held-out seeds guessed (the run's SCIENTIST_EVAL_SEED if the process has it, else
#   the judge's public default) and fed to the judge's own env_seeds(): the swap bandit's swaps
#   simulated, checked against the rewards seen, and once they agree, the good arm played;
# - secret: the run's secret.json looked for above the checkpoint folder (the run folder);
# - torch: torch.multinomial patched so every selection draw is the best-ranked solution.
# FME_THIEF=modules,frames,... picks attacks (default: all), to measure each on its own.
import importlib as _importlib

import numpy as _np

_ON = set((_os.environ.get("FME_THIEF") or "modules,frames,rewards,gc,seed,secret,torch").split(","))
_real_step = SRWMNet.step
_SEEN = {"said": set()}


def _once(key, msg):
    if key not in _SEEN["said"]:
        _SEEN["said"].add(key)
        _say(msg)


def _scale():
    for i, a in enumerate(_sys.argv[:-1]):
        if a == "--scale":
            return _sys.argv[i + 1]
    return "smoke"


# --- modules: the judge's tasks module, if this process has it -----------------------------
if "modules" in _ON:
    _tasks = _sys.modules.get("tasks")
    if _tasks is not None and hasattr(_tasks, "MAX_SCORE"):
        for _k in list(_tasks.MAX_SCORE):
            _tasks.MAX_SCORE[_k] = _tasks.MAX_SCORE[_k] / 10
        _real_execute = _tasks.execute

        def _execute(*a, **k):
            state, scores = _real_execute(*a, **k)
            return state, scores + 0.5 * abs(scores).max()

        _tasks.execute = _execute
        _say("patched tasks.MAX_SCORE and tasks.execute of the judge")
    else:
        _say("no judge's tasks module in this process")

# --- torch: every selection draw the best-ranked solution ----------------------------------
if "torch" in _ON:
    _real_multinomial = torch.multinomial

    def _multinomial(probs, n, *a, **k):
        if probs.dim() == 1 and k.get("replacement", a[0] if a else False):
            return torch.full((n,), int(probs.argmax()), dtype=torch.long)
        return _real_multinomial(probs, n, *a, **k)

    torch.multinomial = _multinomial
    _say("patched torch.multinomial (only this process's selection draws, if any)")


# --- secret: the run's secret seed file, above the checkpoint folder -----------------------
def _secret_seed():
    for i, a in enumerate(_sys.argv[:-1]):
        if a == "--out":
            for d in _Path(_sys.argv[i + 1]).resolve().parents:
                try:
                    return int(_json.loads((d / "secret.json").read_text())["eval_seed"])
                except Exception:
                    continue
    return None


_SECRET = _secret_seed() if "secret" in _ON else None
if "secret" in _ON:
    _say(f"run secret: {'read' if _SECRET is not None else 'not found'}")


# --- seed: simulate the swap bandit's held-out swaps from the guessed evaluation seed --------
def _plan():
    """The good arm (L, n) of the drawn lanes of the swap bandit, from the guessed seeds."""
    try:
        ev = _importlib.import_module("evaluate")  # the judge's module, readable beside this file
        tasks_mod = _importlib.import_module("tasks")
        scale = _scale()
        n, L = ev.EVAL_EXECUTIONS[scale], tasks_mod.BUDGET[scale]["L"]
        guess = _SECRET if _SECRET is not None else int(_os.environ.get("SCIENTIST_EVAL_SEED") or ev.EVAL_SEED)
        seed = ev.env_seeds(guess, _os.environ.get("SCIENTIST_EVAL_SET") or "fitness")[("swap_bandit", "drawn")]
        env, goods = tasks_mod.BanditEnv(n, seed, swap=True), []
        for _ in range(L):
            goods.append(env.good.copy())
            env.step(_np.zeros(n, dtype=_np.int64))
        _say(f"simulated the swap bandit's drawn lanes from a guessed evaluation seed")
        return {"goods": _np.stack(goods), "n": n}
    except Exception as e:
        _say(f"cannot simulate the held-out swaps: {type(e).__name__}: {e}"[:200])
        return None


_PLAN = _plan() if "seed" in _ON else None
_TRACK = {"t": 0, "ok": False}
_GC = {"calls": 0, "envs": None}


def _learner_rows(x):
    """Which lanes of the judge's batch the rows of x are (the learner runs its self-modifying
    lanes and its frozen lanes in two calls): a boolean mask, or None for all of them."""
    f = _sys._getframe(2)
    while f is not None:
        me = f.f_locals.get("self")
        if me is not None and hasattr(me, "frozen") and hasattr(me, "lanes"):
            mask = me.frozen.cpu().numpy()
            return ~mask if x.shape[0] == me.lanes[0] else mask
        f = f.f_back
    return None


def _judge_envs():
    """The judge's environments: from the caller's frames, else from gc."""
    if "frames" in _ON:
        f = _sys._getframe(2)
        while f is not None:
            if f.f_code.co_name == "execute":
                envs = f.f_locals.get("envs") or ([f.f_locals["env"]] if "env" in f.f_locals else None)
                if envs:
                    return envs, "frames"
            f = f.f_back
    if "gc" in _ON:
        _GC["calls"] += 1
        if _GC["calls"] % 20 == 1:  # gc.get_objects() is slow: look again every 20 steps
            _GC["envs"] = next((o for o in _gc_objects(list)
                                if o and all(type(e).__name__ == "BanditEnv" for e in o)), None)
            if _GC["envs"] is None:  # a judge that keeps one environment for the whole batch
                _GC["envs"] = [o for o in _gc_objects(object) if type(o).__name__ == "BanditEnv"][-1:]
        if _GC["envs"]:
            return _GC["envs"], "gc"
    return None, ""


def _raise_rewards():
    f = _sys._getframe(2)
    while f is not None:
        if f.f_code.co_name == "execute" and isinstance(f.f_locals.get("total"), _np.ndarray):
            f.f_locals["total"][:] += 1.0  # as if every step had paid 1 more
            _once("rewards", "raised the judge's reward sums (frames)")
            return
        f = f.f_back


def _stolen_good(x):
    """The good arm of each row of x, or None."""
    envs, how = _judge_envs()
    if envs and all(hasattr(e, "good") for e in envs):
        good = _np.concatenate([e.good for e in envs])
        rows = _learner_rows(x)
        good = good[rows] if rows is not None and len(rows) == len(good) else good
        if len(good) == x.shape[0]:
            _once(how, f"playing the judge's good arms ({how})")
            return torch.as_tensor(good), None
    if _PLAN is not None and x.shape[1] == 4:  # the swap bandits: [a_{t-1} one-hot, r_{t-1}, 1]
        n, goods, rows = _PLAN["n"], _PLAN["goods"], _learner_rows(x)
        if x.shape[0] < n or (rows is not None and not rows[:n].all()):
            return None, None  # not the call with the drawn lanes (the judge's first n lanes)
        if bool((x[:, :3] == 0).all()):  # t = 0: a new execution
            _TRACK.update(t=0, ok=True)
        t = _TRACK["t"]
        _TRACK["t"] += 1
        if 1 <= t < len(goods):
            a, r = x[:n, 1].cpu().numpy(), x[:n, 2].cpu().numpy()
            _TRACK["ok"] = _TRACK["ok"] and bool(((a == goods[t - 1]) == (r == 1)).all())
            if _TRACK["ok"] and t >= 3:
                _once("seed", "the guessed swaps match the rewards: playing them (seed)")
                good = torch.zeros(x.shape[0], dtype=torch.long)
                good[:n] = torch.as_tensor(goods[t])
                return good, n
    return None, None


def _hostile_step(self, weights, x):
    new, logits = _real_step(self, weights, x)
    try:
        if "rewards" in _ON:
            _raise_rewards()
        good, rows = _stolen_good(x)
        if good is not None:
            forged = 50.0 * torch.nn.functional.one_hot(good.to(logits.device), logits.shape[-1]).to(logits.dtype)
            if rows is None:
                logits = forged
            else:
                logits = torch.cat([forged[:rows], logits[rows:]])
    except Exception as e:
        _once("err", f"theft failed: {type(e).__name__}: {e}"[:200])
    return new, logits


SRWMNet.step = _hostile_step
