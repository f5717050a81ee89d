"""The loop's data: Fitness, Proposal, Result (per training seed and aggregated), Variant."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from scientist.editblocks import Edit


@dataclass(frozen=True)
class Fitness:
    """A score that knows its direction; `None` is the worst element (failures).

    `key` orders fitnesses so that larger is always better, so "best" is just `max`.
    """

    value: float | None
    maximize: bool = True

    @property
    def key(self) -> float:
        if self.value is None or math.isnan(self.value):
            return -math.inf
        return self.value if self.maximize else -self.value

    def __lt__(self, other: Fitness) -> bool:
        return self.key < other.key

    def better_than(self, other: Fitness) -> bool:
        return self.key > other.key

    def __str__(self) -> str:
        return "—" if self.value is None else f"{self.value:.4f}"


@dataclass(frozen=True)
class Proposal:
    """What a proposer returns: a hypothesis and the edits that test it."""

    hypothesis: str
    rationale: str
    prediction: str
    edits: tuple[Edit, ...]
    proposer: str = ""
    predicted: float | None = None  # predicted fitness change vs the parent, if stated as a number


# Status of one training seed's run (train then evaluate).
SEED_OK, SEED_CRASH, SEED_TIMEOUT, SEED_OOM, SEED_NO_METRICS, SEED_VIOLATED = (
    "ok", "crash", "timeout", "oom", "no-metrics", "violated")

# Integrity of a variant: `clean`; `suspicious` (a fitness the seed calls implausible, or far
# above its held-out score); `violated` (its learner broke the judge's protocol, or it
# tampered with what it must not touch). Violated variants are never parents or best.
CLEAN, SUSPICIOUS, VIOLATED = "clean", "suspicious", "violated"


@dataclass
class SeedResult:
    """One training seed: train then evaluate, in the sandbox."""

    seed: int
    status: str
    reason: str = ""
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == SEED_OK


@dataclass
class Result:
    """All training seeds of one variant, and the fitness aggregated over them.

    A variant fails if any of its training seeds failed: a crash on one seed is a defect
    of the code, not noise to average away.
    """

    seeds: list[SeedResult]
    metric: str

    @property
    def ok(self) -> bool:
        return bool(self.seeds) and all(s.ok for s in self.seeds)

    @property
    def values(self) -> list[float]:
        return [s.metrics[self.metric] for s in self.seeds if s.ok]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.ok else None

    @property
    def stderr(self) -> float | None:
        v = self.values
        if not self.ok or len(v) < 2:
            return None
        return statistics.stdev(v) / math.sqrt(len(v))

    @property
    def reason(self) -> str:
        bad = [s for s in self.seeds if not s.ok]
        return "; ".join(f"seed {s.seed}: {s.status}: {s.reason}" for s in bad)

    @property
    def violated(self) -> bool:
        return any(s.status == SEED_VIOLATED for s in self.seeds)

    def mean_metrics(self) -> dict[str, float]:
        """Each metric's mean over the successful seeds."""
        keys = sorted({k for s in self.seeds if s.ok for k in s.metrics})
        return {k: statistics.fmean([s.metrics[k] for s in self.seeds if s.ok and k in s.metrics])
                for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "seeds": [asdict(s) for s in self.seeds]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls([SeedResult(**s) for s in d["seeds"]], d["metric"])


# Lifecycle of a variant in the archive.
PENDING, RUNNING, DONE, FAILED, REJECTED, INVALID = (
    "pending", "running", "done", "failed", "rejected", "invalid")


@dataclass
class Variant:
    """One node of the run's tree: a commit of the seed code and what became of it."""

    id: int
    parent_id: int | None
    iteration: int
    status: str
    hypothesis: str = ""
    rationale: str = ""
    prediction: str = ""
    proposer: str = ""
    commit: str | None = None
    diff: str = ""
    fitness: float | None = None
    fitness_stderr: float | None = None
    fitness_n: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    result: Result | None = None
    error: str = ""
    created_at: float = 0.0
    finished_at: float | None = None
    predicted: float | None = None  # the proposer's predicted change of fitness vs the parent
    integrity: str = "clean"  # clean | suspicious | violated (scientist.integrity)
    integrity_reason: str = ""

    @property
    def name(self) -> str:
        return f"v{self.id:04d}"
