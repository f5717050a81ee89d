"""Confirmer: carries out what `scientist.promotion` decides, a step at a time, for the scheduler.

Promotion says who challenges, which fresh seeds a confirmation needs next and what the
results mean; the confirmer says which batch of seed-jobs to run next (the scheduler runs
them as ordinary jobs, before the exploration's), keeps confirmations within their
budget, moves the `best` branch on a promotion, plans the final sealed test, and says what
happened on the console. It never waits for anything.

One confirmation runs at a time: each is a test against the confirmed best of its start,
and a promotion changes who that is. A variant that leads while another is being
confirmed waits (in the archive's meta `challengers`, so a resume keeps the queue), and
is tested, against the confirmed best of then, once the current one is decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scientist.archive import Archive
from scientist.console import Progress
from scientist.promotion import PROMOTED, Comparison, Promotion
from scientist.variant import Result, Variant
from scientist.workspace import Workspace

WAITING = "challengers"  # archive meta: ids of leads waiting for the confirmation in progress


@dataclass
class Confirmer:
    promotion: Promotion
    archive: Archive
    workspace: Workspace
    progress: Progress
    duration: Callable[[Variant], float]  # wall time of one of a variant's seeds, so far
    time_budget: float | None = None
    workers: int = 1

    def challenge(self, v: Variant, busy: bool) -> Comparison | None:
        """`v` has its result: if it beats the confirmed best clearly enough, open its
        confirmation (whose batches the caller runs), or, when another is in progress
        (`busy`), queue it."""
        lead = self.promotion.lead(v)
        if lead is None:
            return None
        best = self.promotion.best()
        assert best is not None
        note = (f"{v.name} beats the confirmed best {best.name} by {lead:+.4f} on the same seeds "
                "(raw)")
        margin = self.promotion.margin(v)
        if lead <= margin:
            self.progress.line(v.iteration, f"{note}, within the noise (≤ {margin:.4f}, "
                                            f"{self.promotion.design.screen:g} s.e.): not tested")
            return None
        if busy:
            self.archive.set_meta(WAITING, self.waiting() + [v.id])
            self.progress.line(v.iteration, f"{note}: waits for the confirmation in progress")
            return None
        why = self.over_budget(v, best)
        if why is not None:
            self.archive.log("untested", f"{note}; not confirmed: {why}", v.id)
            self.progress.line(v.iteration, f"{note}; [yellow]not tested[/]: {why}")
            return None
        c = self.promotion.open(v)
        self.progress.line(v.iteration, f"{note}: confirming on fresh paired seeds (attempt "
                                        f"{c.attempt}, at most {self.promotion.design.max_seeds} "
                                        f"seeds; a look passes at p ≤ {c.level:.3g})")
        return c

    def waiting(self) -> list[int]:
        return list(self.archive.get_meta(WAITING, []))

    def next_waiting(self) -> Comparison | None:
        """The confirmation in progress ended: the first waiting lead that still leads the
        (perhaps new) confirmed best clearly enough starts its own."""
        while self.waiting():
            first, *rest = self.waiting()
            self.archive.set_meta(WAITING, rest)
            c = self.challenge(self.archive.get(first), busy=False)
            if c is not None:
                return c
        return None

    def next_batch(self, c: Comparison) -> list[int]:
        """Fresh seeds of `c`'s next batch; [] when `c` is decided, or now stopped because
        the budget cannot pay for another batch (then `conclude` it)."""
        if c.decided:
            return []
        seeds = self.promotion.next_seeds(c)
        if c.kind == "confirm":
            why = self.over_budget(self.archive.get(c.challenger_id),
                                   self.archive.get(c.incumbent_id))
            if why is not None:
                self.promotion.stop(c, f"{why}, after {len(c.seeds)} fresh seeds")
                return []
        return seeds

    def record(self, c: Comparison, ra: Result, rb: Result, seconds: float) -> Comparison:
        """A batch's results (same seeds for both sides): the promotion decides."""
        c = self.promotion.record(c, ra, rb, seconds)
        self.archive.set_meta("elapsed_seconds", self.progress.elapsed)
        a, b = self.archive.get(c.challenger_id), self.archive.get(c.incumbent_id)
        if c.kind == "sealed":
            self.progress.line(None, f"sealed test: {a.name} {c.decision} against {b.name} — "
                                     f"{c.reason}")
            return c
        seeds = [s.seed for s in ra.seeds]
        t = c.test(self.archive.maximize)
        se = f" ± {t.se:.4f}" if t.se is not None else ""
        self.progress.line(a.iteration, f"{a.name} − {b.name} on fresh seeds {seeds[0]}–{seeds[-1]}: "
                                        f"paired difference {t.mean:+.4f}{se} over {t.n} seeds, "
                                        f"p = {t.p:.3g}")
        return c

    def conclude(self, c: Comparison) -> None:
        """A confirmation is decided: a promotion moves `best`."""
        a = self.archive.get(c.challenger_id)
        if c.decision == PROMOTED:
            self.workspace.tag_best(a.commit)
            self.progress.best = self.archive.fitness(a)
            self.progress.line(a.iteration, f"{a.name} [green]promoted: the confirmed best[/] — "
                                            f"{c.reason}")
        else:
            self.progress.line(a.iteration, f"{a.name} [yellow]not confirmed[/] — {c.reason}")

    def over_budget(self, *variants: Variant) -> str | None:
        """Why one more batch of a confirmation may not run (None: it may). A batch is
        estimated from each variant's seed time so far, its seeds run `workers` at a time."""
        if self.time_budget is None:
            return None
        jobs = self.promotion.design.batch * len(variants)
        est = math.ceil(jobs / max(1, self.workers)) * max(self.duration(v) for v in variants)
        share = self.promotion.design.share
        if share is not None and self.promotion.seconds() + est > share * self.time_budget:
            return f"the confirmation budget ({share:.0%} of the time budget) is used up"
        if self.progress.elapsed + est > self.time_budget:
            return "the time budget is reached"
        return None

    def sealed(self) -> Comparison | None:
        """The final sealed test, when one is due: the confirmed best against the baseline
        on the sealed held-out set, once (an open one is continued). It runs past the time
        budget: it is the run's claim."""
        if not self.promotion.sealed_due():
            return None
        c = self.promotion.open_sealed()
        if not c.seeds:
            a, b = self.archive.get(c.challenger_id), self.archive.get(c.incumbent_id)
            self.progress.line(None, f"sealed test: {a.name} against the baseline {b.name} on the "
                                     f"seed's sealed held-out set, {self.promotion.design.sealed_seeds} "
                                     "fresh paired seeds")
        return c
