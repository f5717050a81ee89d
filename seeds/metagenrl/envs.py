"""Environments and replay memory shared by meta-training and meta-testing.

PROTECTED: the framework restores this file before evaluation. It owns the environment steps,
the episode returns and the replay buffer, so the held-out return cannot be misreported by
variant code. Agents act in [-1, 1]^A; the pool rescales to each environment's bounds.

A pool runs E environments (possibly different ones) in lockstep so that E agents can be
trained as one batched ensemble: observations are zero-padded to the largest observation
size O and actions to the largest action size A; `act_mask` (E, A) marks the real action
dimensions of each agent.
"""

import gymnasium as gym
import numpy as np
import torch

# Registered names of the environments the seed uses (gymnasium 1.2.3 versions).
ENV_IDS = {
    "Pendulum": "Pendulum-v1",
    "MountainCarContinuous": "MountainCarContinuous-v0",
    "LunarLanderContinuous": "LunarLanderContinuous-v3",
    "HalfCheetah": "HalfCheetah-v5",
    "Hopper": "Hopper-v5",
    "Reacher": "Reacher-v5",
    "InvertedPendulum": "InvertedPendulum-v5",
}


def make(name):
    if name not in ENV_IDS:
        raise ValueError(f"unknown environment {name!r}; known: {sorted(ENV_IDS)}")
    return gym.make(ENV_IDS[name])


class EnvPool:
    """E environments stepped together; tracks the return of every finished episode."""

    def __init__(self, names, seed, max_episode_steps=None):
        self.names = list(names)
        self.envs = [make(n) for n in self.names]
        if max_episode_steps:  # shorter episodes for the seconds-long `test` scale
            self.envs = [gym.wrappers.TimeLimit(e.unwrapped, max_episode_steps) for e in self.envs]
        self.obs_dims = [e.observation_space.shape[0] for e in self.envs]
        self.act_dims = [e.action_space.shape[0] for e in self.envs]
        self.horizons = [max_episode_steps or e.spec.max_episode_steps or 1000 for e in self.envs]
        self.E, self.obs_dim, self.act_dim = len(self.envs), max(self.obs_dims), max(self.act_dims)
        self.act_mask = np.zeros((self.E, self.act_dim), np.float32)
        for i, d in enumerate(self.act_dims):
            self.act_mask[i, :d] = 1.0
        self.seed = seed
        self.episodes = 0
        self.obs = np.stack([self._pad(e.reset(seed=seed + i)[0]) for i, e in enumerate(self.envs)])
        self.t = np.zeros(self.E, np.int64)  # step within the current episode
        self.ret = np.zeros(self.E)  # return of the current episode so far
        self.finished = [[] for _ in range(self.E)]  # returns of finished episodes, per env

    def _pad(self, o):
        out = np.zeros(self.obs_dim, np.float32)
        out[: len(o)] = o
        return out

    def step(self, actions):
        """Step every env with actions (E, A) in [-1, 1]; auto-reset finished episodes.

        Returns the transition as a dict of arrays (E, ...): obs, act, rew, next_obs (the true
        successor, also at episode end), term (1 = terminal state, no bootstrap), done (1 = the
        episode ended here, by termination or time limit) and time (step / horizon, in [0, 1]).
        """
        actions = np.clip(np.asarray(actions, np.float32), -1.0, 1.0) * self.act_mask
        tr = {k: np.zeros(self.E, np.float32) for k in ("rew", "term", "done", "time")}
        tr["obs"], tr["act"] = self.obs.copy(), actions
        next_obs = np.zeros_like(self.obs)
        for i, env in enumerate(self.envs):
            low, high = env.action_space.low, env.action_space.high
            a = low + (actions[i, : self.act_dims[i]] + 1.0) * 0.5 * (high - low)
            o, r, term, trunc, _ = env.step(a)
            next_obs[i] = self._pad(o)
            tr["rew"][i], tr["term"][i], tr["done"][i] = r, float(term), float(term or trunc)
            tr["time"][i] = self.t[i] / self.horizons[i]
            self.ret[i] += r
            self.t[i] += 1
            if term or trunc:
                self.finished[i].append(float(self.ret[i]))
                self.ret[i], self.t[i] = 0.0, 0
                self.episodes += 1
                o, _ = env.reset(seed=self.seed + 1000 * self.episodes + i)
            self.obs[i] = self._pad(o)
        tr["next_obs"] = next_obs
        return tr


class Replay:
    """Ring buffer per agent, (E, N, ...) arrays; samples transitions or trajectory windows."""

    KEYS = ("obs", "act", "rew", "next_obs", "term", "done", "time")

    def __init__(self, E, obs_dim, act_dim, capacity, seed):
        self.E, self.N = E, capacity
        shapes = {"obs": (obs_dim,), "next_obs": (obs_dim,), "act": (act_dim,)}
        self.data = {k: np.zeros((E, capacity) + shapes.get(k, ()), np.float32) for k in self.KEYS}
        self.ptr, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, tr):
        for k in self.KEYS:
            self.data[k][:, self.ptr] = tr[k]
        self.ptr = (self.ptr + 1) % self.N
        self.size = min(self.size + 1, self.N)

    def sample(self, batch, device):
        """Independent transitions: dict of tensors (E, B, ...)."""
        idx = self.rng.integers(0, self.size, (self.E, batch))
        e = np.arange(self.E)[:, None]
        return {k: torch.as_tensor(v[e, idx], device=device) for k, v in self.data.items()}

    def sample_windows(self, batch, length, device):
        """Windows of `length` consecutive transitions, dict of tensors (E, B, L, ...).

        `valid` (E, B, L) is 1 up to and including the window's first episode end and 0 after it
        (and past the newest transition), so a window never mixes two episodes.
        """
        age0 = self.rng.integers(0, self.size, (self.E, batch))  # position counted from the oldest
        start = (self.ptr + age0) % self.N if self.size == self.N else age0
        offs = np.arange(length)
        idx = (start[..., None] + offs) % self.N  # (E, B, L)
        age = age0[..., None] + offs
        e = np.arange(self.E)[:, None, None]
        out = {k: v[e, idx] for k, v in self.data.items()}
        in_buffer = age < self.size
        ended_before = np.cumsum(out["done"], axis=-1) - out["done"]  # episode ends before step l
        out["valid"] = (in_buffer & (ended_before == 0)).astype(np.float32)
        return {k: torch.as_tensor(v, device=device) for k, v in out.items()}
