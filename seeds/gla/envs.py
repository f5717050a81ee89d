"""Environments with one common interface: flat float observations, continuous action vectors.

PROTECTED: train.py (PPO histories) and evaluate.py (meta-test, PPO baseline) must see the same
environments, so the wrapping lives here and the proposer cannot change it.

Every environment takes a real action vector a in R^n:
- Discrete(n) spaces act with argmax(a) (n = number of actions), so one Gaussian policy class
  covers CartPole, Acrobot and MountainCar as well as the continuous environments;
- Box spaces get clip(a, -1, 1) rescaled to [low, high].
Episodes end on termination or on the environment's own time limit (truncation).
"""

import gymnasium as gym
import numpy as np

# Classic control (gymnasium, no extra packages), MuJoCo (the `mujoco` package; full scale), and the
# small PointGoal tasks registered below.
CLASSIC = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1"]
MUJOCO = ["Ant-v5", "HalfCheetah-v5", "Reacher-v5", "InvertedPendulum-v5", "Hopper-v5"]
POINT_GOAL = [f"PointGoal{k}-v0" for k in range(8)] + ["PointGoal3D-v0", "PointGoal4D-v0"]


class PointGoal(gym.Env):
    """A point in [-1, 1]^n must reach a goal it cannot see, guided by the reward -|x - goal| alone.

    The goal sits at radius 0.8, in the plane at the given angle (PointGoal0-7) or along a given
    direction (PointGoal3D/4D: by default the diagonal (1, -1, 1(, -1)) of the cube, a new
    dimensionality and a goal off every axis); episodes last 25 steps. A cheap task with short
    episodes whose solution has to be found from rewards. Each registered id has a default goal;
    `gym.make(id, direction=d)` puts it elsewhere: the meta-test (evaluate.py) draws a secret goal
    per lane, so no goal is a constant a policy could walk to without learning from rewards.
    """

    def __init__(self, angle: float = 0.0, direction=None):
        d = np.array([np.cos(angle), np.sin(angle)]) if direction is None else np.asarray(direction, float)
        self.goal = 0.8 * d / np.linalg.norm(d)
        n = len(self.goal)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-0.1, 0.1, len(self.goal))
        return self.x.astype(np.float32), {}

    def step(self, action):
        self.x = np.clip(self.x + 0.1 * np.clip(action, -1.0, 1.0), -1.0, 1.0)
        return self.x.astype(np.float32), -float(np.linalg.norm(self.x - self.goal)), False, False, {}


for _k, _id in enumerate(POINT_GOAL[:8]):
    if _id not in gym.registry:
        gym.register(_id, entry_point=PointGoal, kwargs={"angle": 2 * np.pi * _k / 8}, max_episode_steps=25)
for _id, _d in (("PointGoal3D-v0", (1.0, -1.0, 1.0)), ("PointGoal4D-v0", (1.0, -1.0, 1.0, -1.0))):
    if _id not in gym.registry:
        gym.register(_id, entry_point=PointGoal, kwargs={"direction": _d}, max_episode_steps=25)


class Env:
    """One gymnasium environment behind the continuous-action interface."""

    def __init__(self, env_id: str, seed: int, **kwargs):
        self.id = env_id
        self.env = gym.make(env_id, **kwargs)  # kwargs: e.g. a PointGoal's direction
        space = self.env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"{env_id}: only flat Box observations are supported, not {space}")
        self.obs_dim = space.shape[0]
        act = self.env.action_space
        if isinstance(act, gym.spaces.Discrete):
            self.discrete, self.act_dim = True, int(act.n)
        elif isinstance(act, gym.spaces.Box) and len(act.shape) == 1:
            self.discrete, self.act_dim = False, act.shape[0]
            self.low, self.high = act.low.astype(np.float64), act.high.astype(np.float64)
        else:
            raise ValueError(f"{env_id}: unsupported action space {act}")
        self._seed = seed

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None  # seed once; later resets continue the environment's own RNG
        return np.asarray(obs, dtype=np.float32)

    def step(self, a: np.ndarray):
        """-> obs, reward, terminated, truncated for the action vector a (act_dim,)."""
        if self.discrete:
            env_a = int(np.argmax(a))
        else:
            env_a = self.low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)
        obs, r, term, trunc, _ = self.env.step(env_a)
        return np.asarray(obs, dtype=np.float32), float(r), bool(term), bool(trunc)


class Lanes:
    """n independent copies of one environment stepped together, reset automatically.

    step() returns the reward and end flags of the transition just taken and the next
    observation, which is a fresh episode's first observation when the episode ended.
    """

    def __init__(self, env_id: str, n: int, seed, env_kwargs=None):
        """seed: an int (lane i is seeded seed + i) or one seed per lane; env_kwargs: None or one
        dict of gym.make keyword arguments per lane (the meta-test's per-lane goals)."""
        seeds = [seed + i for i in range(n)] if np.ndim(seed) == 0 else [int(s) for s in seed]
        kwargs = env_kwargs if env_kwargs is not None else [{}] * n
        if len(seeds) != n or len(kwargs) != n:
            raise ValueError(f"{n} lanes need {n} seeds and env_kwargs, not {len(seeds)} and {len(kwargs)}")
        self.envs = [Env(env_id, s, **k) for s, k in zip(seeds, kwargs)]
        self.obs_dim, self.act_dim = self.envs[0].obs_dim, self.envs[0].act_dim
        self.obs = np.stack([e.reset() for e in self.envs])  # (n, obs_dim)
        self.ep_return = np.zeros(n)
        self.ep_start = np.zeros(n, dtype=np.int64)
        self.t = 0
        self.episodes = []  # (lane, start step, end step, return, complete) of every finished episode

    def step(self, actions: np.ndarray):
        """actions (n, act_dim) -> next obs (n, obs_dim), reward (n,), terminated (n,), truncated (n,)."""
        n = len(self.envs)
        rew, term, trunc = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        self.t += 1
        for i, env in enumerate(self.envs):
            obs, rew[i], term[i], trunc[i] = env.step(actions[i])
            self.ep_return[i] += rew[i]
            if term[i] or trunc[i]:
                self.episodes.append((i, int(self.ep_start[i]), self.t, float(self.ep_return[i]), True))
                self.ep_return[i], self.ep_start[i] = 0.0, self.t
                obs = env.reset()
            self.obs[i] = obs
        return self.obs.copy(), rew, term, trunc

    def all_episodes(self):
        """Finished episodes plus the ones still running, cut at the current step (complete=False)."""
        cut = [(i, int(self.ep_start[i]), self.t, float(self.ep_return[i]), False)
               for i in range(len(self.envs)) if self.ep_start[i] < self.t]
        return self.episodes + cut
