"""Confirmer: carries out what `scientist.promotion` decides, for the loop.

Promotion says who challenges, which fresh seeds a confirmation needs next and what the
results mean; the confirmer trains and scores those seeds (through the `run_seeds` it is
given), keeps confirmations within their budget, moves the `best` branch on a promotion,
runs the final sealed test, and says what happened on the console. A scheduler that keeps
several seeds in flight would replace this, not the promotion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from scientist.archive import Archive
from scientist.console import Progress
from scientist.promotion import PROMOTED, SEALED, Comparison, Promotion
from scientist.variant import Result, Variant
from scientist.workspace import Workspace

# run_seeds(variant, seed indices, evaluation set) -> their Result
RunSeeds = Callable[[Variant, list[int], str], Result]


@dataclass
class Confirmer:
    promotion: Promotion
    archive: Archive
    workspace: Workspace
    progress: Progress
    run_seeds: RunSeeds
    duration: Callable[[Variant], float]  # wall time of one of a variant's seeds, so far
    time_budget: float | None = None
    workers: int = 1

    def challenge(self, v: Variant) -> None:
        """If `v` beats the confirmed best clearly enough on their shared seeds, confirm it."""
        lead = self.promotion.lead(v)
        if lead is None:
            return
        best = self.promotion.best()
        assert best is not None
        note = (f"{v.name} beats the confirmed best {best.name} by {lead:+.4f} on the same seeds "
                "(raw)")
        margin = self.promotion.margin(v)
        if lead <= margin:
            self.progress.line(v.iteration, f"{note}, within the noise (≤ {margin:.4f}, "
                                            f"{self.promotion.design.screen:g} s.e.): not tested")
            return
        why = self.over_budget(v, best)
        if why is not None:
            self.archive.log("untested", f"{note}; not confirmed: {why}", v.id)
            self.progress.line(v.iteration, f"{note}; [yellow]not tested[/]: {why}")
            return
        c = self.promotion.open(v)
        self.progress.line(v.iteration, f"{note}: confirming on fresh paired seeds (attempt "
                                        f"{c.attempt}, at most {self.promotion.design.max_seeds} "
                                        f"seeds; a look passes at p ≤ {c.level:.3g})")
        self.confirm(c)

    def confirm(self, c: Comparison) -> None:
        """Batch after batch of fresh paired seeds until `c` is decided (or out of budget)."""
        a, b = self.archive.get(c.challenger_id), self.archive.get(c.incumbent_id)
        while not c.decided:
            seeds = self.promotion.next_seeds(c)
            why = self.over_budget(a, b)
            if why is not None:
                c = self.promotion.stop(c, f"{why}, after {len(c.seeds)} fresh seeds")
                break
            c = self._batch(c, a, b, seeds, "fitness")
            t = c.test(self.archive.maximize)
            se = f" ± {t.se:.4f}" if t.se is not None else ""
            self.progress.line(a.iteration, f"{a.name} − {b.name} on fresh seeds "
                                            f"{seeds[0]}–{seeds[-1]}: paired difference "
                                            f"{t.mean:+.4f}{se} over {t.n} seeds, p = {t.p:.3g}")
        if c.decision == PROMOTED:
            self.workspace.tag_best(a.commit)
            self.progress.best = self.archive.fitness(a)
            self.progress.line(a.iteration, f"{a.name} [green]promoted: the confirmed best[/] — "
                                            f"{c.reason}")
        else:
            self.progress.line(a.iteration, f"{a.name} [yellow]not confirmed[/] — {c.reason}")

    def over_budget(self, *variants: Variant) -> str | None:
        """Why one more batch of a confirmation may not run (None: it may). A batch is
        estimated from each variant's seed time so far."""
        if self.time_budget is None:
            return None
        rounds = math.ceil(self.promotion.design.batch / max(1, self.workers))
        est = rounds * sum(self.duration(v) for v in variants)
        share = self.promotion.design.share
        if share is not None and self.promotion.seconds() + est > share * self.time_budget:
            return f"the confirmation budget ({share:.0%} of the time budget) is used up"
        if self.progress.elapsed + est > self.time_budget:
            return "the time budget is reached"
        return None

    def sealed_test(self) -> None:
        """The confirmed best against the baseline on the sealed held-out set, once. It
        runs past the time budget: it is the run's claim."""
        if not self.promotion.sealed_due():
            return
        c = self.promotion.open_sealed()
        a, b = self.archive.get(c.challenger_id), self.archive.get(c.incumbent_id)
        seeds = self.promotion.next_seeds(c)
        self.progress.line(None, f"sealed test: {a.name} against the baseline {b.name} on the "
                                 f"seed's sealed held-out set, {len(seeds)} fresh paired seeds")
        c = self._batch(c, a, b, seeds, SEALED)
        self.progress.line(None, f"sealed test: {a.name} {c.decision} against {b.name} — {c.reason}")

    def _batch(self, c: Comparison, a: Variant, b: Variant, seeds: list[int],
               eval_set: str) -> Comparison:
        start = time.monotonic()
        ra = self.run_seeds(a, seeds, eval_set)
        rb = self.run_seeds(b, seeds, eval_set)
        c = self.promotion.record(c, ra, rb, time.monotonic() - start)
        self.archive.set_meta("elapsed_seconds", self.progress.elapsed)
        return c
