"""The three FME tasks (thesis sec. 7.4), batched, and the loop that executes solutions in them.

PROTECTED: training (train.py) and the evaluator both execute solutions through `execute`
below, so the environment, the inputs a solution sees, the action sampling and the score of
an execution are the same everywhere and cannot be changed by a variant. The compute budget
(executions per task and their length L) is fixed here too: the fitness is "average reward of
executed solutions after a fixed number of executions".

Tasks (all discrete-action, run as B independent copies in parallel):
- `bandit`: two arms, arm 1 always pays 1 and arm 0 pays 0 (the thesis's first experiment).
- `swap_bandit`: the same two arms, but which one pays 1 is random at the start of every
  execution and swaps with probability SWAP_PROB at every step (Fig. 7.4). A policy that does
  not adapt to the reward it receives scores 0.5 in expectation.
- `cartpole`: gymnasium's CartPole-v1 (vectorised), episodes of at most 500 steps, reset
  automatically within an execution.
- `swap_bandit_noreward`: the swap bandit with the reward input fed as 0, the ablation of
  sec. 7.4 ("if this reward is not fed as an input, the policy fails to adapt"). It is trained
  and evaluated beside the three tasks but is not part of the fitness.

Input x_t of a solution at step t: [observation, a_{t-1} one-hot (swap bandits only), r_{t-1}, 1];
the reward is the feedback signal of Alg. 12, the constant 1 a bias; a_{t-1} and r_{t-1} are 0 at t = 0.
Bandits have an empty observation. The swap bandits also get the previous action, as meta-RL
bandit learners usually do (Wang et al. 2016, Duan et al. 2016; SymLA, thesis ch. 4): actions
are sampled here, outside the network, so without a_{t-1} a solution cannot tell which arm
earned r_{t-1}, and learning which arm is good from the reward needs exactly that. The fixed-
policy tasks keep the thesis's inputs [observation, r_{t-1}, 1]. The ablation feeds the reward
as 0, which carries no information about it; the network keeps the same shape, so the reward's
column of the first W still takes part in the self-modification through psi(k), psi(q)
(Eq. 7.2-7.4), one key/query dimension with no input behind it.

Score of one execution of L steps: the average reward per step for the bandits; for CartPole,
whose reward is 1 on every step the pole is up, the average return per episode started in the
execution (the unfinished last episode counts with its partial return), i.e. how many steps
the pole is balanced, the quantity the thesis reports for CartPole (Fig. 7.3).
"""

from __future__ import annotations

import numpy as np
import torch

TASKS = ("bandit", "swap_bandit", "cartpole")
# The reward-input ablation of sec. 7.4 (Fig. 7.4): the swap bandit with r_{t-1} fed as 0.
# It is trained and evaluated beside the tasks but is not part of the fitness.
ABLATIONS = ("swap_bandit_noreward",)
ABLATION_OF = {"swap_bandit_noreward": "swap_bandit"}  # evaluated on the same held-out seeds
OBS_SIZE = {"bandit": 0, "swap_bandit": 0, "swap_bandit_noreward": 0, "cartpole": 4}
NUM_ACTIONS = {"bandit": 2, "swap_bandit": 2, "swap_bandit_noreward": 2, "cartpole": 2}
# The best possible score per execution, to put the tasks on one scale in the fitness.
MAX_SCORE = {"bandit": 1.0, "swap_bandit": 1.0, "swap_bandit_noreward": 1.0, "cartpole": 500.0}
PREV_ACTION = {"bandit": False, "swap_bandit": True, "swap_bandit_noreward": True, "cartpole": False}
REWARD_INPUT = {"bandit": True, "swap_bandit": True, "swap_bandit_noreward": False, "cartpole": True}
SWAP_PROB = 0.02  # swap bandit: expected 50 steps between swaps of the good arm

# Budget per scale: L = steps per execution (thesis App. E.1: 1000) and executions per task.
BUDGET = {
    "test": {"L": 20, "executions": 32},
    "smoke": {"L": 500, "executions": 2048},
    "full": {"L": 1000, "executions": 65536},
}
# Environment seeds: training draws from [0, 2**30), the evaluator from [2**30, 2**31).
HELDOUT_SEED_BASE = 2**30


def input_size(task: str) -> int:
    return OBS_SIZE[task] + NUM_ACTIONS[task] * PREV_ACTION[task] + 2


class BanditEnv:
    """B two-armed Bernoulli-free bandits: the good arm pays 1, the other 0."""

    def __init__(self, batch: int, seed: int, swap: bool):
        self.rng = np.random.default_rng(seed)
        self.swap = swap
        self.good = self.rng.integers(0, 2, batch) if swap else np.ones(batch, dtype=np.int64)

    def reset(self) -> np.ndarray:
        return np.zeros((len(self.good), 0), dtype=np.float32)

    def step(self, actions: np.ndarray):
        reward = (actions == self.good).astype(np.float32)
        if self.swap:
            flip = self.rng.random(len(self.good)) < SWAP_PROB
            self.good = np.where(flip, 1 - self.good, self.good)
        return self.reset(), reward, np.zeros(len(self.good), dtype=bool)


class CartPoleEnv:
    """gymnasium CartPole-v1, vectorised; `done` marks steps on which an episode ended."""

    def __init__(self, batch: int, seed: int):
        import gymnasium as gym

        self.env = gym.make_vec("CartPole-v1", num_envs=batch, vectorization_mode="vector_entry_point")
        self.seed = seed
        self.ended = np.zeros(batch, dtype=bool)

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed)
        return obs.astype(np.float32)

    def step(self, actions: np.ndarray):
        # NEXT_STEP autoreset: the step after an episode's end only resets (reward 0), so the
        # reward then carries no information about the action; it is still a step of the budget.
        obs, reward, term, trunc, _ = self.env.step(actions)
        done = term | trunc
        return obs.astype(np.float32), reward.astype(np.float32), done

    def close(self) -> None:
        self.env.close()


def make_env(task: str, batch: int, seed: int):
    if task == "cartpole":
        return CartPoleEnv(batch, seed)
    return BanditEnv(batch, seed, swap=task.startswith("swap_bandit"))


class Execution:
    """B executions of L steps of one task, stepped from outside: `inputs()` gives x_t,
    `act(logits)` samples the actions, steps the environments and keeps the rewards, `scores()`
    gives each execution's score. `execute` below drives one with a step function; the
    evaluator drives one per task with the learner's replies (one request per step for all).

    `seed` is an int, or a list of G seeds: the B executions are then G equal groups of lanes,
    each with its own environments and action noise seeded by its seed, exactly as G
    executions with one seed each would run them, stepped as one batch.
    """

    def __init__(self, task: str, batch: int, seed, steps: int, device="cpu"):
        seeds = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else [int(seed)]
        if batch % len(seeds):
            raise ValueError(f"{batch} executions do not split into {len(seeds)} equal groups")
        self.task, self.batch, self.steps, self.device = task, batch, steps, device
        self.n = batch // len(seeds)  # executions per group
        self.envs = [make_env(task, self.n, s) for s in seeds]
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.obs = np.concatenate([env.reset() for env in self.envs])
        self.prev_r = np.zeros(batch, dtype=np.float32)
        self.prev_a = torch.zeros(batch, NUM_ACTIONS[task], device=device)  # one-hot a_{t-1}; none at t = 0
        self.total = np.zeros(batch)
        self.episodes = np.ones(batch)  # episodes started (the first one at reset)
        self.t = 0

    def inputs(self) -> torch.Tensor:
        """x_t (B, input_size(task)): [observation, a_{t-1} one-hot (swap bandits), r_{t-1}, 1]."""
        task = self.task
        r = torch.from_numpy(self.prev_r).to(self.device)[:, None] * float(REWARD_INPUT[task])
        ones = torch.ones(self.batch, 1, device=self.device)
        return torch.cat([torch.from_numpy(self.obs).to(self.device),
                          self.prev_a[:, :NUM_ACTIONS[task] * PREV_ACTION[task]], r, ones], 1)

    def act(self, logits: torch.Tensor) -> None:
        """Sample a_t from softmax(logits) (B, actions) and step the environments."""
        actions_n = NUM_ACTIONS[self.task]
        logits = torch.nan_to_num(logits.float(), nan=0.0, posinf=1e4, neginf=-1e4)
        if logits.shape != (self.batch, actions_n):
            raise ValueError(f"step_fn returned logits of shape {tuple(logits.shape)}, "
                             f"expected {(self.batch, actions_n)}")
        u = torch.cat([torch.rand((self.n, actions_n), generator=g, device=self.device) for g in self.gens])
        u = u.clamp_(1e-9, 1 - 1e-9)
        a = (logits - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max sample
        self.prev_a = torch.nn.functional.one_hot(a, actions_n).float()
        actions = a.cpu().numpy()
        out = [env.step(actions[i * self.n:(i + 1) * self.n]) for i, env in enumerate(self.envs)]
        self.obs, self.prev_r, done = (np.concatenate(parts) for parts in zip(*out))
        self.total += self.prev_r
        # an episode ending on the last step starts no new one
        self.episodes += done & (self.t < self.steps - 1)
        self.t += 1

    def scores(self) -> np.ndarray:
        """The score of each execution (B,), float64; closes the environments."""
        if self.task == "cartpole":
            for env in self.envs:
                env.close()
            return self.total / self.episodes
        return self.total / self.steps


@torch.no_grad()
def execute(step_fn, state, task: str, steps: int, seed, device="cpu"):
    """Execute B solutions for `steps` steps, each in its own copy of the task.

    step_fn(state, x) -> (state, logits): one step of the solutions (B of them, batched) on
    inputs x (B, input_size(task)), returning their (self-modified) state and action logits
    (B, NUM_ACTIONS[task]). Actions are sampled here from softmax(logits) with a generator
    seeded by `seed`, so an execution is reproducible from (state, task, seed); `seed` may be
    a list of seeds, one per equal group of lanes (see Execution).
    Returns the final state and the score of each execution (B,) as a float64 numpy array.
    """
    run = Execution(task, _batch_size(state), seed, steps, device)
    for _ in range(steps):
        state, logits = step_fn(state, run.inputs())
        run.act(logits)
    return state, run.scores()


def _batch_size(state) -> int:
    t = state
    while isinstance(t, (list, tuple)):
        t = t[0]
    return int(t.shape[0])
