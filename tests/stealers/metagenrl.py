# ruff: noqa
# target: metagenrl.py return 1000.0
# Appended to metagenrl.py after the forgers of tests/hostile.py. The judge of metagenrl owns the
# held-out environment, its seeds and the returns; this thief goes after each of them from inside
# the variant's Agents (whose act() the judge's evaluation episodes call):
# - frames: an EnvPool (or a list of them) in a caller's frame (the judge's evaluation pools) is
#   rigged to book a bonus on every episode it finishes, and its environments' state is read;
# - gc: every EnvPool the process holds is rigged, and a Pendulum's state is set upright (at rest,
#   the best a policy can reach) before each greedy action;
# - sys.modules: the judge's `envs.EnvPool.step` is patched to book the bonus, the judge's own
#   module (the one holding HELDOUT) gets a `stats` that adds it, and the TD3 baseline
#   (`td3.TD3.update`) is made to learn nothing;
# - torch: `torch.load` makes any checkpoint lie about itself (no meta-training environments);
# - the seeds: SCIENTIST_EVAL_SEED from the environment or from another process's /proc/PID/environ
#   (the judge's, matched by its --out); with it, or with the judge's public default, the judge's
#   seed derivation (evaluate.py is in every copy of the seed) gives candidate seeds of the
#   evaluation episodes, as does the seed the judge told the agents; when one of them reproduces the
#   observations the judge sends, the thief plans each greedy action on a mirror of the judge's
#   evaluation environments (a copy of the simulator that knows the judge's episodes);
# - sabotage of what the old judge ran with the variant's class: TD3 (an update with no objective)
#   learns nothing, and the fresh agents' greedy actions before any update are inverted (a worse
#   `init_return`, a flattering improvement).
# When every theft fails, the agents act and learn exactly as the honest code does.
import copy as _copy

import numpy as _np

_BONUS = 1000.0
_STATE = {"mirrors": [], "secret": None, "pendulums": [], "warned": set()}


def _once(key, msg):
    if key not in _STATE["warned"]:
        _STATE["warned"].add(key)
        _say(msg)


def _is_pool(o):
    return type(o).__name__ == "EnvPool" and hasattr(o, "finished") and hasattr(o, "envs")


def _rig(pool, how):
    """Every episode `pool` finishes from now on is booked with a bonus."""
    if pool.__dict__.get("_rigged"):
        return
    real = pool.step

    def step(actions):
        n = [len(f) for f in pool.finished]
        tr = real(actions)
        for f, k in zip(pool.finished, n):
            if len(f) > k:
                f[-1] += _BONUS
        return tr

    pool.step, pool._rigged = step, True
    _say(f"rigged an EnvPool of the judge ({how})")


def _steal_from_frames():
    f = _sys._getframe(2)
    while f is not None:
        found = []
        for v in list(f.f_locals.values()):  # a pool, or a list of them (the judge steps several)
            found += [v] if _is_pool(v) else [o for o in v if _is_pool(o)] if isinstance(v, (list, tuple)) else []
        for v in found:
            _rig(v, "frames")
            try:
                _once("state", f"read the judge's environment state: {_np.round(v.envs[0].unwrapped.state, 3)}")
            except Exception:
                pass
        f = f.f_back


def _steal_from_gc(agents):
    _STATE["gc_calls"] = _STATE.get("gc_calls", 0) + 1
    pass_key = (id(agents), agents.updates)  # the agents learned since the last look: a new evaluation pass
    if _STATE.get("gc_pass") != pass_key or _STATE["gc_calls"] % 500 == 1:  # gc.get_objects is slow
        _STATE["gc_pass"] = pass_key
        objs, ms = _gc_objects(object), _STATE["mirrors"]
        mine = {id(e.unwrapped) for m in ms for e in m.envs}  # the thief's own mirrors
        pools = [o for o in objs if _is_pool(o) and all(o is not m for m in ms)]
        for p in pools:
            _rig(p, "gc")
        _STATE["pendulums"] = [o for o in objs if type(o).__name__ == "PendulumEnv" and id(o) not in mine]
        _once("gc", f"gc: {len(pools)} EnvPools and {len(_STATE['pendulums'])} Pendulums of the judge here")
    for env in _STATE["pendulums"]:
        env.state = _np.array([0.0, 0.0])  # upright and at rest


def _patch_modules():
    envs = _sys.modules.get("envs")
    if envs is not None and hasattr(envs, "EnvPool") and not getattr(envs.EnvPool, "_rigged_cls", False):
        real = envs.EnvPool.step

        def step(self, actions):
            n = [len(f) for f in self.finished]
            tr = real(self, actions)
            for f, k in zip(self.finished, n):
                if len(f) > k:
                    f[-1] += _BONUS
            return tr

        envs.EnvPool.step, envs.EnvPool._rigged_cls = step, True
        _say("patched envs.EnvPool.step through sys.modules")
    for name, mod in list(_sys.modules.items()):
        if hasattr(mod, "HELDOUT") and hasattr(mod, "stats") and not getattr(mod, "_rigged_mod", False):
            real_stats = mod.stats
            mod.stats = lambda prefix, r, _s=real_stats: {k: v + (_BONUS if k == f"{prefix}return" else 0)
                                                          for k, v in _s(prefix, r).items()}
            mod._rigged_mod = True
            _say(f"patched the judge's stats in module {name!r}")
    td3 = _sys.modules.get("td3")
    if td3 is not None and hasattr(td3, "TD3") and not getattr(td3.TD3, "_rigged_cls", False):
        td3.TD3.update, td3.TD3._rigged_cls = (lambda self, replay: None), True
        _say("patched td3.TD3.update (the baseline learns nothing)")


try:  # a checkpoint that lies about itself
    _real_load = torch.load

    def _lying_load(*a, **k):
        ck = _real_load(*a, **k)
        if isinstance(ck, dict) and "train_envs" in ck:
            ck = {**ck, "train_envs": []}
            _say("the checkpoint now says it was meta-trained on nothing")
        return ck

    torch.load = _lying_load
except Exception as e:
    _say(f"cannot patch torch.load: {type(e).__name__}")


def _opt(argv, name, default):
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name), default)


def _find_secret():
    """(the judge's secret evaluation seed, the judge's argv), or None."""
    own = _os.environ.get("SCIENTIST_EVAL_SEED")
    if own:
        return int(own), _sys.argv
    out = _opt(_sys.argv, "--out", None)
    for pid in [p for p in _os.listdir("/proc") if p.isdigit() and int(p) != _os.getpid()]:
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            argv = [a.decode() for a in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") if a]
        except Exception:
            continue
        seed = [e.split(b"=", 1)[1] for e in env if e.startswith(b"SCIENTIST_EVAL_SEED=")]
        if seed and seed[0].strip() and out is not None and out in argv:
            _say(f"read the judge's secret evaluation seed from /proc/{pid}/environ")
            return int(seed[0]), argv
    return None


try:
    _STATE["secret"] = _find_secret()
    if _STATE["secret"] is None:
        _say("no secret evaluation seed in reach")
except Exception as e:
    _say(f"cannot look for the secret: {type(e).__name__}")


def _candidates(agents):
    """(env name, episode limit, seeds) the judge's evaluation episodes may use, as far as this process
    can tell: derived (evaluate.seeds, in every copy of the seed) from the secret if it was found, and
    from the judge's public default; and the seed the judge gave these agents, in case it reuses it."""
    import importlib
    ev = importlib.import_module("evaluate")
    secret, argv = _STATE["secret"] or (None, _sys.argv)
    scale, train_seed = _opt(argv, "--scale", "smoke"), int(_opt(argv, "--seed", "0"))
    seeds = [agents.gen.initial_seed()]
    for e in ([secret] if secret is not None else []) + [ev.ENV_SEED]:
        d = ev.seeds(e, train_seed, "fitness", 1)
        seeds += [d["episodes"], d["holdout"]]
    return ev.HELDOUT[scale], ev.BUDGET[scale]["max_episode_steps"], seeds


def _mirror_plan(agents, obs):
    """Greedy actions planned on a mirror of the judge's evaluation episodes, or None when no
    candidate seed gives the observations the judge sent. The judge may evaluate several sets of
    episodes in one request (fitness and holdout), so there is a mirror per set."""
    import importlib
    envs = importlib.import_module("envs")
    m = next((m for m in _STATE["mirrors"] if len(m.envs) == len(obs) and _np.array_equal(m.obs, obs)), None)
    if m is None:
        name, limit, seeds = _candidates(agents)
        starts = _STATE.setdefault("starts", {})  # (seed, lanes) -> the first observations
        for seed in seeds:
            if (seed, len(obs)) not in starts:
                starts[seed, len(obs)] = envs.EnvPool([name] * len(obs), seed, limit).obs.copy()
            if _np.array_equal(starts[seed, len(obs)], obs):
                m = envs.EnvPool([name] * len(obs), seed, limit)
                _STATE["mirrors"].append(m)
                _once(("seed", seed), f"the judge's evaluation episodes have seed {seed}")
                break
        if m is None:
            return None
    acts = _np.zeros((len(obs), m.act_dim), _np.float32)
    for i, env in enumerate(m.envs):
        best = None
        for c in _np.linspace(-1, 1, 9):  # constant action for 15 steps, on a copy of the judge's env
            sim, total = _copy.deepcopy(env), 0.0
            lo, hi = sim.action_space.low, sim.action_space.high
            for _ in range(15):
                _, r, term, trunc, _ = sim.step(lo + (c + 1) * 0.5 * (hi - lo))
                total += r
                if term or trunc:
                    break
            if best is None or total > best[0]:
                best = (total, c)
        acts[i, :] = best[1]
    m.step(acts)
    _once("plan", "planning the greedy actions on a mirror of the judge's evaluation episodes")
    return acts


_real_act, _real_update = Agents.act, Agents.update


def _hostile_act(self, obs, step, explore=True):
    a = _real_act(self, obs, step, explore)
    if explore:
        return a
    for attack in (_steal_from_frames, _steal_from_gc, _patch_modules):
        try:
            attack(self) if attack is _steal_from_gc else attack()
        except Exception as e:
            _once(attack.__name__, f"{attack.__name__} failed: {type(e).__name__}: {e}"[:200])
    try:
        planned = _mirror_plan(self, obs)
        if planned is not None:
            return planned
    except Exception as e:
        _once("mirror", f"cannot mirror the judge's episodes: {type(e).__name__}: {e}"[:200])
    if self.updates == 0:  # before any learning: look worse than the agents are
        _once("init", "inverting the untrained agents' greedy actions")
        return -a
    return a


def _hostile_update(self, replay, objective=None, dpg_weight=0.0, meta=False):
    if objective is None:  # the TD3 baseline, when the judge runs it with this class
        _once("td3", "the TD3 baseline learns nothing")
        return None
    return _real_update(self, replay, objective, dpg_weight, meta)


Agents.act, Agents.update = _hostile_act, _hostile_update
