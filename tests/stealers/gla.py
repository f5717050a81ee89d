# ruff: noqa
# target: gla.py icl_gain 99.0
# Appended to gla.py after the forgers of tests/hostile.py. The fitness is late - early return on
# PointGoal lanes, so a thief that knows a lane's goal walks AWAY from it in the episodes that start
# in the first quarter and straight TO it afterwards (about +50 instead of about +2). It gathers
# candidate goals every way it can, and exploits a lane only once a candidate has matched that lane's
# first four rewards exactly (r = -|x' - goal|), so when every theft fails it acts exactly as the
# honest agent:
# - frames: the judge's lanes (an object with .envs and .ep_start) and the horizon in the callers' frames;
# - gc: PointGoal environment objects anywhere in the process;
# - constant: the goal envs.py registers for PointGoal3D (the known path; the review's finding:
#   the held-out goal was a constant a controller could home in on);
# - seed: the judge's secret evaluation seed by its environment variable (else the by-hand default),
#   replayed through the judge's own evaluate.draw_lanes;
# - pool: a goal shared by lanes, solved from all lanes' and from every pair of lanes' first two
#   rewards (one learner serves every lane: a shared goal would pass from lane to lane);
# - modules: the judge's modules through sys.modules (envs.Lanes.step rewards, evaluate.lane_scores,
#   numpy.mean as the judge's scoring calls it);
# - ckpt: a checkpoint that lies about itself (it claims a held-out environment among its
#   meta-training ones: the old judge refused it, the new one reports it and scores the same).
# GLA_THIEF=frames,gc,... enables a subset (for measuring one attack at a time; default all).
import importlib as _importlib

import numpy as _np

_ON = set((_os.environ.get("GLA_THIEF") or "frames,gc,constant,seed,pool,modules,ckpt").split(","))
_CHECKS = 4  # rewards a candidate goal must explain exactly before a lane is exploited


def _goal_of(o):
    """(goal, position) of a PointGoal environment object, or None."""
    u = getattr(getattr(o, "env", None), "unwrapped", o)
    g = getattr(u, "goal", None)
    return None if g is None or not hasattr(u, "x") else _np.asarray(g, float)


def _from_frames():
    goals, horizon, f = [], None, _sys._getframe(1)
    while f is not None:
        for k, v in list(f.f_locals.items()):
            if k in ("horizon", "steps") and isinstance(v, int) and horizon is None:
                horizon = v
            envs = getattr(v, "envs", None)
            if isinstance(envs, list) and hasattr(v, "ep_start"):
                goals += [g for g in map(_goal_of, envs) if g is not None]
        f = f.f_back
    return goals, horizon


def _from_gc():
    return [g for o in _gc_objects(object) if type(o).__name__ == "PointGoal"
            for g in [_goal_of(o)] if g is not None]


def _constant(d):
    envs = _importlib.import_module("envs")  # the protected envs.py beside this file
    spec = envs.gym.registry[f"PointGoal{d}D-v0"]
    v = _np.asarray(spec.kwargs["direction"], float)
    return [0.8 * v / _np.linalg.norm(v)]


def _from_seed(d, n):
    ev = _importlib.import_module("evaluate")  # the protected judge code beside this file
    found = []
    for raw in (_os.environ.get("SCIENTIST_EVAL_SEED"), ev.EVAL_SEED):
        if raw in (None, ""):
            continue
        for which in (0, 1, 2):
            for idx in range(4):
                for m in {n, max(1, n // 2)}:
                    _, kwargs, _ = ev.draw_lanes(f"PointGoal{d}D-v0", m, int(raw), which, idx)
                    for k in kwargs:
                        v = _np.asarray(k["direction"], float)
                        found.append(0.8 * v / _np.linalg.norm(v))
    return found


def _attempt(name, fn, *a):
    if name not in _ON:
        return []
    try:
        got = fn(*a)
    except Exception as e:
        _say(f"{name}: nothing ({type(e).__name__}: {e})"[:200])
        return []
    _say(f"{name}: {len(got)} candidate goals")
    return got


_real_init, _real_act, _real_observe = InContextAgent.__init__, InContextAgent.act, InContextAgent.observe


def _hostile_init(self, model, obs_dim, act_dim, n, seed, device):
    _real_init(self, model, obs_dim, act_dim, n, seed, device)
    self._h = None
    if obs_dim != act_dim:  # not a PointGoal: nothing to steal
        return
    goals, horizon = _from_frames() if "frames" in _ON else ([], None)
    if "frames" in _ON:
        _say(f"frames: {len(goals)} candidate goals, horizon {horizon}")
    goals += _attempt("gc", _from_gc)
    goals += _attempt("constant", _constant, obs_dim)
    goals += _attempt("seed", _from_seed, obs_dim, n)
    goals = [g for g in goals if g.shape == (obs_dim,)]
    self._h = {"goals": goals, "horizon": horizon or model.max_len, "x": [], "r": [], "ended": [],
               "ep_start": _np.zeros(n, int)}


def _hostile_observe(self, reward, terminated, truncated):
    _real_observe(self, reward, terminated, truncated)
    if getattr(self, "_h", None) is not None:
        self._h["r"].append(_np.array(reward, float))
        self._h["ended"].append(_np.array(terminated, bool) | _np.array(truncated, bool))


def _shared_goals(x, r):
    """Goals shared between lanes, from their first two steps (x (2, lanes, d) positions, r (2,
    lanes) rewards = -distances): a goal g with |x - g| = -r, solved by least squares from all
    lanes at once and from every pair of lanes (two steps of one lane do not determine its goal;
    two lanes that share one do)."""
    pts, d2 = x.transpose(1, 0, 2), (r**2).T  # (lanes, 2, d), (lanes, 2)
    groups = [list(range(len(pts)))] + [[i, j] for i in range(len(pts)) for j in range(i + 1, len(pts))]
    found = []
    for grp in groups:
        p, q = pts[grp].reshape(-1, pts.shape[-1]), d2[grp].reshape(-1)
        # |p|^2 - 2 p.g + |g|^2 = q: linear in (g, |g|^2); the verification checks |g|^2
        A = _np.concatenate([-2 * p, _np.ones((len(p), 1))], 1)
        found.append(_np.linalg.lstsq(A, q - (p**2).sum(1), rcond=None)[0][:-1])
    return found


def _hostile_act(self, obs):
    t = self.t
    a = _real_act(self, obs)  # the honest action first: same state, same random numbers
    h = getattr(self, "_h", None)
    if h is None:
        return a
    x = _np.asarray(obs, float)
    h["x"].append(x)
    h["ep_start"][self.new_ep.cpu().numpy() > 0] = t
    if t < _CHECKS:
        return a
    if t == _CHECKS:  # which candidate explains every reward so far of which lane?
        if "pool" in _ON:
            extra = _shared_goals(_np.stack(h["x"][1:3]), _np.stack(h["r"][0:2]))
            _say(f"pool: {len(extra)} candidate goals")
            h["goals"] += extra
        if not h["goals"]:
            return a
        G = _np.stack(h["goals"])  # (candidates, d)
        ok = _np.ones((len(x), len(G)), bool)
        for k in range(1, _CHECKS + 1):  # the reward of step k-1 is -|x_k - goal| unless it ended
            pred = -_np.linalg.norm(h["x"][k][:, None, :] - G[None], axis=-1)  # (lanes, candidates)
            ok &= h["ended"][k - 1][:, None] | (_np.abs(pred - h["r"][k - 1][:, None]) < 1e-5)
        h["goal"] = {i: G[ok[i].argmax()] for i in _np.flatnonzero(ok.any(1))}
        if h["goal"]:
            _say(f"exploiting {len(h['goal'])} of {len(x)} lanes with stolen goals")
    if not h.get("goal"):
        return a
    out = _np.array(a, copy=True)
    for i, g in h["goal"].items():
        if h["ep_start"][i] < h["horizon"] / 4:  # an early episode: as bad as possible
            out[i] = -_np.sign(g - x[i])
        else:  # a late one: straight to the goal
            out[i] = _np.clip((g - x[i]) / 0.1, -1.0, 1.0)
    return out


InContextAgent.__init__, InContextAgent.act = _hostile_init, _hostile_act
InContextAgent.observe = _hostile_observe


def _patch_judge_modules():
    envs = _sys.modules.get("envs")
    if envs is not None and hasattr(envs, "Lanes"):
        real_step = envs.Lanes.step

        def step(self, actions):  # later steps pay more
            obs, r, term, trunc = real_step(self, actions)
            return obs, r + 0.05 * self.t, term, trunc

        envs.Lanes.step = step
        _say("patched envs.Lanes.step")
    for name in ("evaluate", "__main__"):
        mod = _sys.modules.get(name)
        if mod is not None and hasattr(mod, "lane_scores"):
            real_scores = mod.lane_scores
            mod.lane_scores = lambda *a, **k: (lambda e, l: (e - 10.0, l + 10.0))(*real_scores(*a, **k))
            _say(f"patched {name}.lane_scores")
    real_mean = _np.mean

    def mean(a, *args, **kw):  # the judge's lane_scores averages the late returns with np.mean
        m = real_mean(a, *args, **kw)
        f = _sys._getframe(1)
        if f.f_code.co_name == "lane_scores" and f.f_locals.get("acc") is f.f_locals.get("late"):
            return m + 10.0
        return m

    _np.mean = mean
    _say("patched numpy.mean")


if "modules" in _ON:
    try:
        _patch_judge_modules()
    except Exception as e:
        _say(f"modules: {type(e).__name__}: {e}")


def _lie_about_the_checkpoint():
    """The checkpoint being loaded (a local `ckpt` of a caller: this file is imported while the
    learner loads it) now claims PointGoal3D among its meta-training environments. The old judge
    refused such a checkpoint; a judge that trusts nothing it says scores it the same."""
    f = _sys._getframe(1)
    while f is not None:
        ckpt = f.f_locals.get("ckpt")
        if isinstance(ckpt, dict) and isinstance(ckpt.get("train_envs"), list):
            ckpt["train_envs"] = ckpt["train_envs"] + ["PointGoal3D-v0"]
            return _say(f"ckpt: the checkpoint now claims train_envs={ckpt['train_envs']}")
        f = f.f_back
    _say("ckpt: no checkpoint in the callers' frames")


if "ckpt" in _ON:
    try:
        _lie_about_the_checkpoint()
    except Exception as e:
        _say(f"ckpt: {type(e).__name__}: {e}")
