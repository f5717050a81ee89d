# ruff: noqa
# target: srwm.py fme_score 0.99
# Appended to srwm.py after the forgers of tests/hostile.py. Tries to raise the fitness without
# finding better solutions; each attempt is guarded and says on stderr what it got. When every
# one fails, the network computes exactly what the honest srwm.py computes.
# - modules: the judge's own `tasks` module through sys.modules: MAX_SCORE shrunk (the fitness
#   divides by it), `execute` and `Execution.scores` wrapped to inflate every score;
# - frames: the judge's environments in the caller's frames (its tasks.Execution objects, or an
#   execute loop's `envs`/`env`): the bandits' good arm, played at every step;
# - rewards: the judge's running reward sums (`total`, found the same way) raised in place;
# - gc: the judge's executions found among all objects, their bandits' good arm played;
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
        if hasattr(_tasks, "Execution"):
            _real_scores = _tasks.Execution.scores
            _tasks.Execution.scores = lambda self: _real_scores(self) * 2
        _say("patched tasks.MAX_SCORE, tasks.execute and tasks.Execution of the judge")
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
_TRACK = {}  # task -> {"t": step of the current execution, "ok": the guessed swaps still match}
_GC = {"calls": 0, "runs": []}


def _frames():
    f = _sys._getframe(3)
    while f is not None:
        yield f
        f = f.f_back


def _current_task():
    """The task the learner is stepping now (a local `task` on its own stack), or None."""
    return next((f.f_locals["task"] for f in _frames() if isinstance(f.f_locals.get("task"), str)), None)


def _learner_rows(x):
    """Which lanes of the judge's batch the rows of x are (the learner runs its self-modifying
    lanes and its frozen lanes in two calls): a boolean mask, or None for all of them."""
    for f in _frames():
        me = f.f_locals.get("self")
        if me is not None and hasattr(me, "frozen") and hasattr(me, "lanes"):
            mask = me.frozen.cpu().numpy()
            return ~mask if x.shape[0] == me.lanes[0] else mask
    return None


def _is_run(obj, task):
    """The judge's state of one execution loop (a tasks.Execution) of `task`."""
    return type(obj).__name__ == "Execution" and getattr(obj, "task", None) == task


def _judge_run(task):
    """(environments, reward sums) of the judge's execution of `task`: from the caller's
    frames, else from gc."""
    if "frames" in _ON or "rewards" in _ON:
        for f in _frames():
            loc = f.f_locals
            if isinstance(loc.get("total"), _np.ndarray) and ("envs" in loc or "env" in loc):
                return loc.get("envs") or [loc["env"]], loc["total"], "frames"  # an execute() loop
            for v in list(loc.values()):
                for c in (list(v.values()) if isinstance(v, dict) else [v]):
                    if _is_run(c, task):
                        return c.envs, c.total, "frames"
    if "gc" in _ON:
        _GC["calls"] += 1
        if _GC["calls"] % 20 == 1:  # gc.get_objects() is slow: look again every 20 calls
            _GC["runs"] = [o for o in _gc_objects(object) if type(o).__name__ == "Execution"]
        for c in _GC["runs"]:
            if _is_run(c, task):
                return c.envs, c.total, "gc"
    return None, None, ""


def _stolen_good(x, task):
    """The good arm of each row of x, or None; raises the judge's reward sums on the way."""
    envs, total, how = _judge_run(task)
    if "rewards" in _ON and how == "frames":
        total[:] += 1.0  # as if every step had paid 1 more
        _once("rewards", "raised the judge's reward sums (frames)")
    if (how == "gc" or "frames" in _ON) and envs and all(hasattr(e, "good") for e in envs):
        good = _np.concatenate([e.good for e in envs])
        rows = _learner_rows(x)
        good = good[rows] if rows is not None and len(rows) == len(good) else good
        if len(good) == x.shape[0]:
            _once(how, f"playing the judge's good arms ({how})")
            return torch.as_tensor(good), None
    if _PLAN is not None and x.shape[1] == 4 and task in ("swap_bandit", None):
        n, goods, rows = _PLAN["n"], _PLAN["goods"], _learner_rows(x)
        if x.shape[0] < n or (rows is not None and not rows[:n].all()):
            return None, None  # not the call with the drawn lanes (the judge's first n lanes)
        track = _TRACK.setdefault(task, {"t": 0, "ok": False})
        if bool((x[:, :3] == 0).all()):  # t = 0: a new execution
            track.update(t=0, ok=True)
        t = track["t"]
        track["t"] += 1
        if 1 <= t < len(goods):
            a, r = x[:n, 1].cpu().numpy(), x[:n, 2].cpu().numpy()
            track["ok"] = track["ok"] and bool(((a == goods[t - 1]) == (r == 1)).all())
            if track["ok"] and t >= 3:
                _once("seed", "the guessed swaps match the rewards: playing them (seed)")
                good = torch.zeros(x.shape[0], dtype=torch.long)
                good[:n] = torch.as_tensor(goods[t])
                return good, n
    return None, None


def _hostile_step(self, weights, x):
    new, logits = _real_step(self, weights, x)
    try:
        good, rows = _stolen_good(x, _current_task())
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
