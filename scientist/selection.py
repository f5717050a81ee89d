"""Parent selection policies. The default is fitness-monotonic execution (thesis ch. 7).

FME (thesis sec. 7.3, Algorithm 12, and its LRU buffer): compute goes to solutions
monotonically in their performance, normalised by how many solutions share a
performance level. We keep m buckets evenly covering the current fitness range; a
non-empty bucket b (0 = worst, m-1 = best) is chosen with probability proportional to
exp(b / (m-1) / temperature), then one of its members uniformly. Each bucket's pool
holds only its `capacity` most recently used members (least-recently-used eviction;
evicted variants stay in the archive). Greedy is the limit temperature -> 0.

Every policy is a pure function of the archive and a random generator, so a resumed
run that re-seeds the generator makes the same choices.

Uncertainty: policies rank by `Promotion.selection_keys`, which is each variant's mean,
except that a variant whose mean is above the *confirmed* best's counts only the part of its
lead beyond two standard errors (from the run's noise floor). A variant with two seeds and
a lucky lead is thus not treated as surely better than a confirmed one: it shares the
confirmed best's place (FME's top bucket; greedy's tie, which goes to the older, confirmed
variant). Exploration still follows means below the confirmed best, as FME prescribes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from scientist.archive import Archive
from scientist.promotion import Promotion
from scientist.variant import Variant


class Policy(Protocol):
    name: str

    def select(self, archive: Archive, rng: random.Random) -> Variant: ...


class NoParentError(RuntimeError):
    """No variant has a fitness yet (the baseline failed): nothing can be a parent."""


def _candidates(archive: Archive) -> list[Variant]:
    c = archive.candidates()
    if not c:
        raise NoParentError("no successfully evaluated variant with a clean integrity label to "
                            "select a parent from: the baseline itself failed or was labelled "
                            "suspicious (see `scientist show RUN 0`)")
    return c


@dataclass
class FitnessMonotonic:
    """Bucketed, exponentially rank-weighted selection with LRU pools (FME)."""

    buckets: int = 10
    temperature: float = 0.2
    capacity: int = 10
    name: str = "fme"

    def pools(self, archive: Archive) -> list[list[Variant]]:
        """The selection pool of each bucket, worst bucket first."""
        cands = _candidates(archive)
        ranked = Promotion.of(archive).selection_keys()
        keys = [ranked[v.id] for v in cands]
        lo, hi = min(keys), max(keys)
        width = (hi - lo) / self.buckets or 1.0
        pools: list[list[Variant]] = [[] for _ in range(self.buckets)]
        for v, k in zip(cands, keys):
            pools[min(int((k - lo) / width), self.buckets - 1)].append(v)
        used = archive.last_used()
        return [sorted(p, key=lambda v: used[v.id], reverse=True)[: self.capacity]
                for p in pools]

    def probabilities(self, archive: Archive,
                      pools: list[list[Variant]] | None = None) -> list[float]:
        """Probability of each bucket (0 for empty ones)."""
        pools = self.pools(archive) if pools is None else pools
        m = max(self.buckets - 1, 1)
        logits = [b / m / max(self.temperature, 1e-9) if p else -math.inf
                  for b, p in enumerate(pools)]
        top = max(logits)
        w = [math.exp(x - top) for x in logits]
        total = sum(w)
        return [x / total for x in w]

    def select(self, archive: Archive, rng: random.Random) -> Variant:
        pools = self.pools(archive)
        probs = self.probabilities(archive, pools)
        b = rng.choices(range(len(pools)), weights=probs)[0]
        return rng.choice(pools[b])


@dataclass
class Greedy:
    """Always the best variant (ties: the oldest). Hill-climbing."""

    name: str = "greedy"

    def select(self, archive: Archive, rng: random.Random) -> Variant:
        cands = _candidates(archive)
        ranked = Promotion.of(archive).selection_keys()
        return max(cands, key=lambda v: (ranked[v.id], -v.id))


@dataclass
class Uniform:
    """Any successful variant with equal probability (random search over the tree)."""

    name: str = "uniform"

    def select(self, archive: Archive, rng: random.Random) -> Variant:
        return rng.choice(_candidates(archive))


POLICIES: dict[str, Callable[..., Policy]] = {
    "fme": FitnessMonotonic,
    "greedy": Greedy,
    "uniform": Uniform,
}


def make_policy(name: str, **kwargs: object) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown selection policy {name!r}; choose from {', '.join(POLICIES)}")
    if name != "fme":
        kwargs = {}
    return POLICIES[name](**kwargs)
