"""Promotion: a variant is called better only when fresh, paired seeds confirm it.

Selection explores with raw means over a few training seeds; the maximum of many noisy
means is mostly luck (the winner's curse). So a claim takes three steps:

1. **Raw lead.** A variant whose mean beats the *confirmed* best's on the seeds both were
   trained on (paired: same training-seed indices, same evaluation streams), by more than
   `screen` standard errors of the noise floor, is a challenger. Nothing else changes
   yet: it is called `raw`.
2. **Confirmation.** The challenger and the confirmed best (the incumbent) are both
   trained and scored again on *fresh* seed indices, a batch at a time, and the paired
   t-test on their differences decides (`scientist.stats`: looks after each batch from
   `first_look` pairs on, Bonferroni across the looks, attempt j of the run at
   alpha / (j (j + 1))). Fresh seeds, because the seeds that made the challenger look
   good are the ones that selected it; testing on them would test the selection. It ends
   `promoted` (only then does it become the best), or `not confirmed`: at a futility stop
   (the mean difference is not an improvement after a batch), at `max_seeds` pairs, when
   a seed fails, or when the confirmation budget (a share of the run's time) is used up.
3. **The sealed test.** At the end, the confirmed best and the baseline are trained on
   fresh seeds once more and scored on the seed's sealed held-out set, with one paired
   t-test at the run's alpha: the improvement the report states, with its interval.

The baseline is the first confirmed best. Its spread between training seeds, measured on
`noise_seeds` seeds at the start, is the run's noise floor, from which the smallest
improvement the run can confirm is computed.

This module decides and keeps the record (in the archive's `comparisons` table); it runs
nothing. The loop (`scientist.run`) asks it which seeds to evaluate, evaluates them and
hands the results back, so that a scheduler can drive the same steps.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from scientist.archive import Archive
from scientist.config import RunConfig
from scientist.errors import ScientistError
from scientist.seed import Scale
from scientist.stats import Paired, attempt_level, detectable, look_level, looks, paired_t, spread
from scientist.variant import CLEAN, DONE, PENDING, RUNNING, Fitness, Result, Variant

CONFIRM, SEALED = "confirm", "sealed"
PROMOTED, NOT_CONFIRMED = "promoted", "not confirmed"  # decisions of a confirmation
IMPROVED, NOT_IMPROVED = "improved", "not improved"  # decisions of the sealed test
# What a variant is called: the baseline and every promoted variant are `confirmed`;
# a challenger whose confirmation failed is `not confirmed`; the rest is `raw`.
RAW, CONFIRMING, CONFIRMED, UNCONFIRMED = "raw", "confirming", "confirmed", "not confirmed"
LEAD_SE = 2.0  # selection: an unconfirmed lead counts only beyond this many standard errors
META = "promotion"  # archive meta key of the run's Design


@dataclass(frozen=True)
class Design:
    """How the run confirms: saved in the archive when the run starts, so a resumed run
    (and `scientist show`, the report) uses the design its attempts were tested under."""

    alpha: float = 0.05
    """Family-wise error rate of the whole run: P(any variant promoted that is not better)."""
    max_seeds: int = 8
    """Most fresh paired seeds one confirmation may use (each costs two evaluations)."""
    batch: int = 2
    """Paired seeds added per step of a confirmation (the scale's training seeds)."""
    first_look: int = 4
    """Pairs before the first test: below 4, the t-test's 2 degrees of freedom are hopeless."""
    share: float | None = 0.5
    """Share of the run's time budget that confirmations may use (None: no limit)."""
    sealed_seeds: int = 4
    """Paired seeds of the final sealed test (confirmed best against the baseline)."""
    screen: float = 1.0
    """A raw lead starts a confirmation only beyond this many standard errors of the paired
    difference, from the noise floor (sd sqrt(2 / n)); 0: any lead. At 1, on the noisy test
    seed a variant with no effect was tested 1 time in 7 instead of 2 in 5, which cut the
    confirmation cost of a 10-iteration run threefold (bench/claims.py) and leaves alpha for
    real leads; a lead too small to clear it is too small to confirm anyway."""

    @property
    def looks(self) -> tuple[int, ...]:
        return looks(self.batch, self.first_look, self.max_seeds)

    def level(self, attempt: int) -> float:
        """The level each look of the run's `attempt`-th confirmation is tested at."""
        return look_level(attempt_level(self.alpha, attempt), len(self.looks))

    @classmethod
    def for_run(cls, config: RunConfig, scale: Scale, noise_seeds: int) -> Design:
        """The design a run's settings ask for, checked (ScientistError names the setting)."""
        c = config
        if not 0 < c.alpha < 1:
            raise ScientistError(f"alpha must be between 0 and 1, not {c.alpha}")
        if c.max_confirm_seeds < 2:
            raise ScientistError(f"max_confirm_seeds must be at least 2 (a paired t-test needs "
                                 f"two pairs), not {c.max_confirm_seeds}")
        if not 0 < c.confirm_share <= 1:
            raise ScientistError(f"confirm_share must be in (0, 1], not {c.confirm_share}")
        sealed = c.sealed_seeds or noise_seeds
        if sealed < 2:
            raise ScientistError(f"sealed_seeds must be at least 2, not {sealed}")
        return cls(alpha=c.alpha, max_seeds=c.max_confirm_seeds, batch=scale.training_seeds,
                   share=c.confirm_share, sealed_seeds=sealed, screen=c.confirm_screen)

    @classmethod
    def from_dict(cls, d: dict) -> Design:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Noise:
    """The baseline's spread between training seeds, and what it lets the run detect."""

    sd: float
    n: int
    detectable: float
    """Smallest true improvement a first attempt confirms with 80% probability, assuming
    the paired difference's standard deviation is sqrt(2) sd (nothing shared between two
    variants at a seed; what they share only makes the difference less noisy)."""

    def describe(self, metric: str, design: Design) -> str:
        return (f"noise floor: {metric} has sd {self.sd:.4f} between the baseline's {self.n} "
                f"training seeds; the smallest improvement this run can confirm is about "
                f"{self.detectable:.4f} (80% power at a first attempt with {design.max_seeds} "
                "paired seeds)")


@dataclass
class Comparison:
    """Two variants trained and scored on the same fresh seeds (a row of `comparisons`)."""

    id: int
    kind: str  # CONFIRM or SEALED
    challenger_id: int
    incumbent_id: int
    attempt: int  # j: the run's j-th confirmation (0 for the sealed test)
    level: float  # each look's level (confirmation) or the test's (sealed)
    seeds: list[int] = field(default_factory=list)
    challenger_result: Result | None = None
    incumbent_result: Result | None = None
    decision: str = ""  # "" while in progress
    reason: str = ""
    started_at: float = 0.0
    finished_at: float | None = None
    seconds: float = 0.0  # wall time of its evaluations

    @property
    def decided(self) -> bool:
        return bool(self.decision)

    def values(self) -> tuple[list[float], list[float]]:
        a = self.challenger_result.values if self.challenger_result else []
        b = self.incumbent_result.values if self.incumbent_result else []
        return a, b

    def test(self, maximize: bool) -> Paired:
        """The paired t-test of challenger minus incumbent (in the metric's units), one-sided
        in the direction that is an improvement."""
        a, b = self.values()
        return paired_t([x - y for x, y in zip(a, b)], "greater" if maximize else "less")

    @property
    def evaluations(self) -> int:
        """Training runs it cost (both variants)."""
        return sum(len(r.seeds) for r in (self.challenger_result, self.incumbent_result) if r)


class Promotion:
    """The run's record of claims: which variant is the confirmed best, and how it got there."""

    def __init__(self, archive: Archive, design: Design):
        self.archive, self.design = archive, design

    @classmethod
    def of(cls, archive: Archive) -> Promotion:
        """For readers (show, report): the design the run saved, or the defaults."""
        raw = archive.get_meta(META)
        return cls(archive, Design.from_dict(raw) if isinstance(raw, dict) else Design())

    @property
    def maximize(self) -> bool:
        return self.archive.maximize

    # --- the record ----------------------------------------------------------------------
    def comparisons(self, kind: str | None = CONFIRM) -> list[Comparison]:
        return [Comparison(**d) for d in self.archive.comparisons()
                if kind is None or d["kind"] == kind]

    def baseline(self) -> Variant | None:
        vs = self.archive.all()
        return vs[0] if vs and vs[0].parent_id is None else None

    def best(self) -> Variant | None:
        """The confirmed best: the last promoted variant, else the baseline (if it worked).
        Only a clean one (`scientist.integrity`): a suspicious or violated variant is never best."""
        for c in reversed(self.comparisons()):
            if c.decision == PROMOTED:
                v = self.archive.get(c.challenger_id)
                if _eligible(v):
                    return v
        base = self.baseline()
        return base if base is not None and _eligible(base) else None

    def labels(self) -> dict[int, str]:
        """What each evaluated variant is called: raw, confirming, confirmed, not confirmed."""
        out = {v.id: RAW for v in self.archive.all() if v.fitness is not None}
        base = self.baseline()
        if base is not None and base.id in out and _eligible(base):
            out[base.id] = CONFIRMED  # a suspicious or violated baseline stays raw
        for c in self.comparisons():
            out[c.challenger_id] = (CONFIRMED if c.decision == PROMOTED else
                                    UNCONFIRMED if c.decided else CONFIRMING)
        return out

    def noise(self) -> Noise | None:
        floor = self._floor()
        if floor is None:
            return None
        sd, n = floor
        return Noise(sd, n, detectable(math.sqrt(2) * sd, self.design.level(1),
                                       self.design.max_seeds))

    def _floor(self) -> tuple[float, int] | None:
        """The baseline's sd between seeds and their number (what `noise` is without the
        detectable improvement, which takes a root search)."""
        base = self.baseline()
        if base is None or base.result is None or base.status != DONE:
            return None
        sd = spread(base.result.values)
        return None if sd is None else (sd, len(base.result.values))

    def in_progress(self) -> Comparison | None:
        return next((c for c in self.comparisons() if not c.decided), None)

    def seconds(self) -> float:
        """Wall time spent on confirmations so far."""
        return sum(c.seconds for c in self.comparisons())

    # --- a confirmation, step by step ------------------------------------------------------
    def lead(self, v: Variant) -> float | None:
        """How far `v`'s mean beats the confirmed best's on the seeds both were trained on
        (d > 0 is better), if it does and may challenge; None otherwise. A confirmation
        starts only if the lead is past `margin(v)`."""
        best = self.best()
        if (best is None or v.id == best.id or not _eligible(v) or v.parent_id is None
                or any(c.challenger_id == v.id for c in self.comparisons())):
            return None
        mine, theirs = _by_seed(v), _by_seed(best)
        shared = sorted(set(mine) & set(theirs))
        if shared:
            d = statistics.fmean(mine[s] - theirs[s] for s in shared)
        else:
            d = v.fitness - (best.fitness or 0.0)
        d = d if self.maximize else -d
        return d if d > 0 else None

    def margin(self, v: Variant) -> float:
        """How far a raw lead must go to be tested: `screen` standard errors of a paired
        difference over the seeds `v` shares with the confirmed best (noise floor sd
        sqrt(2 / n)); 0 without a noise floor."""
        floor, best = self._floor(), self.best()
        if floor is None or best is None or self.design.screen <= 0:
            return 0.0
        n = len(set(_by_seed(v)) & set(_by_seed(best))) or max(1, v.fitness_n)
        return self.design.screen * floor[0] * math.sqrt(2 / n)

    def open(self, v: Variant) -> Comparison:
        """Start the run's next confirmation: `v` against the confirmed best."""
        best = self.best()
        if best is None:
            raise ValueError("there is no confirmed best to challenge")
        attempt = len(self.comparisons()) + 1
        cid = self.archive.add_comparison(kind=CONFIRM, challenger_id=v.id, incumbent_id=best.id,
                                          attempt=attempt, level=self.design.level(attempt),
                                          started_at=time.time())
        return self._get(cid)

    def next_seeds(self, c: Comparison) -> list[int]:
        """Fresh training-seed indices for the next batch of `c` (empty when it is done)."""
        if c.decided:
            return []
        if c.kind == SEALED:
            return self._fresh(self.design.sealed_seeds)
        return self._fresh(min(self.design.batch, self.design.max_seeds - len(c.seeds)))

    def record(self, c: Comparison, challenger: Result, incumbent: Result,
               seconds: float = 0.0) -> Comparison:
        """Add a batch's results (same seeds for both) and decide if it can be decided."""
        seeds = [s.seed for s in challenger.seeds]
        if seeds != [s.seed for s in incumbent.seeds]:
            raise ValueError(f"unpaired batch: seeds {seeds} against "
                             f"{[s.seed for s in incumbent.seeds]}")
        c.seeds += seeds
        c.challenger_result = _join(c.challenger_result, challenger)
        c.incumbent_result = _join(c.incumbent_result, incumbent)
        c.seconds += seconds
        c.decision, c.reason = self._decide(c, challenger, incumbent)
        if c.decided:
            c.finished_at = time.time()
        self.archive.update_comparison(c.id, seeds=c.seeds, challenger_result=c.challenger_result,
                                       incumbent_result=c.incumbent_result, seconds=c.seconds,
                                       decision=c.decision, reason=c.reason,
                                       finished_at=c.finished_at)
        if c.decided:
            self.archive.log(c.decision if c.kind == CONFIRM else f"sealed: {c.decision}",
                             c.reason, c.challenger_id)
        return c

    def stop(self, c: Comparison, reason: str) -> Comparison:
        """End `c` undecided by its test (a budget ran out): not confirmed. The looks were
        planned in advance, so stopping early keeps the test's level."""
        c.decision = NOT_CONFIRMED if c.kind == CONFIRM else NOT_IMPROVED
        c.reason, c.finished_at = reason, time.time()
        self.archive.update_comparison(c.id, decision=c.decision, reason=reason,
                                       finished_at=c.finished_at)
        self.archive.log(c.decision, reason, c.challenger_id)
        return c

    def _decide(self, c: Comparison, challenger: Result, incumbent: Result) -> tuple[str, str]:
        failed = NOT_CONFIRMED if c.kind == CONFIRM else NOT_IMPROVED
        for who, r in (("the challenger", challenger), ("the incumbent", incumbent)):
            if not r.ok:
                return failed, f"{who} failed on a fresh seed: {r.reason}"
        t = c.test(self.maximize)
        gain = t.mean if self.maximize else -t.mean
        if c.kind == SEALED:
            ok = t.p <= c.level
            return (IMPROVED if ok else NOT_IMPROVED,
                    f"paired difference {t.mean:+.4g}, 95% CI {t.interval()}, one-sided "
                    f"p = {t.p:.3g} {'≤' if ok else '>'} {c.level:.3g} over {t.n} fresh seeds")
        if t.n in self.design.looks and t.p <= c.level:
            return PROMOTED, (f"paired difference {t.mean:+.4g} over {t.n} fresh seeds, "
                              f"p = {t.p:.3g} ≤ {c.level:.3g}")
        if gain <= 0:
            return NOT_CONFIRMED, (f"futility: paired difference {t.mean:+.4g}, no improvement "
                                   f"over {t.n} fresh seeds")
        if t.n >= self.design.max_seeds:
            return NOT_CONFIRMED, (f"{t.n} fresh seeds (the most a confirmation may use): "
                                   f"paired difference {t.mean:+.4g}, p = {t.p:.3g} > {c.level:.3g}")
        return "", ""

    def _get(self, cid: int) -> Comparison:
        return next(c for c in self.comparisons(None) if c.id == cid)

    def _fresh(self, n: int) -> list[int]:
        """`n` training-seed indices no variant of the run has been trained on."""
        used = [s.seed for v in self.archive.all() if v.result for s in v.result.seeds]
        used += [s for c in self.comparisons(None) for s in c.seeds]
        start = max(used, default=-1) + 1
        return list(range(start, start + max(0, n)))

    # --- the sealed test -------------------------------------------------------------------
    def sealed_due(self) -> bool:
        """Whether the confirmed best is a variant (not the baseline) with no sealed test yet."""
        best, base = self.best(), self.baseline()
        if best is None or base is None or best.id == base.id:
            return False
        return not any(c.challenger_id == best.id and c.decided for c in self.comparisons(SEALED))

    def open_sealed(self) -> Comparison:
        """The confirmed best against the baseline on the sealed set, at the run's alpha:
        one planned test of the final claim (an open one is continued)."""
        best, base = self.best(), self.baseline()
        assert best is not None and base is not None
        for c in self.comparisons(SEALED):
            if c.challenger_id == best.id and not c.decided:
                return c
        cid = self.archive.add_comparison(kind=SEALED, challenger_id=best.id, incumbent_id=base.id,
                                          level=self.design.alpha, started_at=time.time())
        return self._get(cid)

    def sealed(self) -> Comparison | None:
        """The decided sealed test of the current confirmed best, if there is one."""
        best = self.best()
        found = [c for c in self.comparisons(SEALED) if best and c.challenger_id == best.id
                 and c.decided]
        return found[-1] if found else None

    def claim(self, metric: str) -> str:
        """What the run may claim, in one sentence."""
        best, base = self.best(), self.baseline()
        if base is not None and base.status in (PENDING, RUNNING):
            return "No claim yet: the baseline has not been evaluated."
        if base is not None and base.fitness is not None and not _eligible(base):
            return (f"No claim: the baseline itself was labelled {base.integrity} "
                    f"(see `scientist show RUN 0`), so nothing can be compared with it.")
        if best is None or base is None:
            return "No claim: the baseline was not evaluated successfully."
        cs = self.comparisons()
        untested = sum(e["kind"] == "untested" for e in self.archive.events())
        extra = sum(c.evaluations for c in cs)
        tried = (f"{_plural(len(cs), 'raw lead')} tested on fresh paired seeds"
                 + (f" ({_plural(extra, 'extra training run')})" if cs else "")
                 + (f", {untested} more left untested (budget)" if untested else ""))
        if best.id == base.id:
            return (f"No improvement was confirmed: the best is the baseline {base.name} "
                    f"({tried}; none promoted at α = {self.design.alpha:g}).")
        promoted = next(c for c in reversed(cs) if c.decision == PROMOTED and
                        c.challenger_id == best.id)
        t = promoted.test(self.maximize)
        text = (f"Confirmed best: {best.name}, {metric} {best.fitness:.4f} (raw, {best.fitness_n} seeds); "
                f"promoted against v{promoted.incumbent_id:04d} by {t.mean:+.4f} over {t.n} fresh "
                f"paired seeds, p = {t.p:.3g} ({tried}).")
        sealed = self.sealed()
        if sealed is None:
            return text + " No sealed test yet."
        s = sealed.test(self.maximize)
        return text + (f" Sealed test against {base.name}: {s.mean:+.4f}, 95% CI {s.interval()}, "
                       f"one-sided p = {s.p:.3g} over {s.n} fresh seeds: {sealed.decision}.")

    # --- what selection sees ---------------------------------------------------------------
    def selection_keys(self) -> dict[int, float]:
        """The fitness key (larger is better) selection ranks each candidate by.

        Selection still explores with means, with one exception: a variant whose mean is
        above the confirmed best's is not taken as surely better than it. Untested, it ranks
        at the confirmed best's mean plus only the part of its lead beyond LEAD_SE standard
        errors of the difference, the standard error from the run's noise floor (sd
        sqrt(1/n + 1/n_best)) rather than from its own two seeds (which can be near zero by
        luck); tested and not confirmed, it ranks at the confirmed best's mean (fresh seeds
        found no lead). A two-seed variant that leads by noise therefore shares the confirmed
        best's place (FME's top bucket; greedy's ties go to the older, confirmed one); an
        untested lead far outside the noise still counts, reduced."""
        best = self.best()
        floor = self._floor()
        keys = {}
        for v in self.archive.candidates():
            keys[v.id] = Fitness(v.fitness, self.maximize).key
        if best is None or best.id not in keys:
            return keys
        top, nb = keys[best.id], max(1, best.fitness_n)
        labels = self.labels()
        for v in self.archive.candidates():
            if v.id == best.id or keys[v.id] <= top:
                continue
            if labels.get(v.id) == UNCONFIRMED:
                keys[v.id] = top
                continue
            nv = max(1, v.fitness_n)
            if floor is not None:
                se = floor[0] * math.sqrt(1 / nv + 1 / nb)
            else:
                se = math.hypot(v.fitness_stderr or 0.0, best.fitness_stderr or 0.0)
            keys[v.id] = top + max(0.0, keys[v.id] - top - LEAD_SE * se)
        return keys


def _eligible(v: Variant) -> bool:
    """May be called best: evaluated, with a fitness and a clean integrity label."""
    return v.status == DONE and v.fitness is not None and v.integrity == CLEAN


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _by_seed(v: Variant) -> dict[int, float]:
    if v.result is None:
        return {}
    return {s.seed: s.metrics[v.result.metric] for s in v.result.seeds if s.ok}


def _join(a: Result | None, b: Result) -> Result:
    return b if a is None else Result(a.seeds + b.seeds, b.metric)
