"""The lab notebook: what a run has tried, predicted and measured, in a token budget.

The notebook is how the run learns in context. It is rebuilt from the archive before
every proposal (so a resumed run sees exactly what it would have seen), and it records,
for each experiment: the hypothesis, the predicted and the measured change of the
fitness, failures with the tail of their error output, and the reasons a human gave when
rejecting a proposal.

To stay within its budget, the newest entries are written in full and older ones are
summarised: first to one line each, then, for the oldest, to a tally. The summary is
made by rule, not by another LLM call: it costs nothing, and the same archive always
gives the same text, so prompts repeat exactly on resume and hit the response cache.
Tokens are estimated as characters / 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scientist.variant import DONE, FAILED, INVALID, REJECTED, Variant

CHARS_PER_TOKEN = 4


def approx_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def shorten(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def reference(v: Variant, by_id: dict[int, Variant]) -> Variant | None:
    """The nearest ancestor of `v` with a fitness: what its change is measured against."""
    pid = v.parent_id
    while pid is not None:
        p = by_id[pid]
        if p.fitness is not None:
            return p
        pid = p.parent_id
    return None


def measured_delta(v: Variant, by_id: dict[int, Variant]) -> float | None:
    ref = reference(v, by_id)
    if v.fitness is None or ref is None or ref.fitness is None:
        return None
    return v.fitness - ref.fitness


def error_tail(v: Variant, lines: int = 6) -> str:
    """The last lines of the failing step's stderr (of the first failed seed)."""
    for s in v.result.seeds if v.result else []:
        if not s.ok and s.stderr_tail.strip():
            tail = [ln for ln in s.stderr_tail.rstrip().splitlines() if ln.strip()]
            return "\n".join(tail[-lines:])
    return ""


@dataclass
class Notebook:
    variants: Sequence[Variant]
    metric: str
    maximize: bool
    rejections: dict[int, str]  # variant id -> the human's reason

    @classmethod
    def from_archive(cls, archive, metric: str) -> Notebook:
        rejections = {e["variant_id"]: e["text"] for e in archive.events()
                      if e["kind"] == "rejected" and e["variant_id"] is not None}
        return cls(archive.all(), metric, archive.maximize, rejections)

    def _by_id(self) -> dict[int, Variant]:
        return {v.id: v for v in self.variants}

    def outcome(self, v: Variant) -> str:
        by_id = self._by_id()
        if v.status == DONE:
            d = measured_delta(v, by_id)
            se = f" ± {v.fitness_stderr:.4f}" if v.fitness_stderr is not None else ""
            text = f"measured {self.metric} = {v.fitness:.4f}{se}"
            if d is not None:
                ref = reference(v, by_id)
                text += f" ({d:+.4f} vs {ref.name})"
                if v.predicted is not None:
                    loss = d < 0 if self.maximize else d > 0  # no change is not a loss
                    text += f"; predicted {v.predicted:+.4f}, " + _verdict(v.predicted, d, not loss)
            return text
        if v.status == FAILED:
            return f"FAILED: {shorten(v.error, 300)}"
        if v.status == REJECTED:
            return f"rejected by the human before it ran: {self.rejections.get(v.id) or v.error}"
        if v.status == INVALID:
            return f"no usable proposal: {shorten(v.error.splitlines()[0] if v.error else '', 200)}"
        return v.status

    def full_entry(self, v: Variant) -> str:
        if v.parent_id is None:
            return f"{v.name} (baseline, the unmodified seed): {self.outcome(v)}"
        head = f"{v.name} (from v{v.parent_id:04d}): {shorten(v.hypothesis, 400) or '(no hypothesis)'}"
        lines = [head, f"  outcome: {self.outcome(v)}"]
        tail = error_tail(v) if v.status == FAILED else ""
        if tail:
            lines += ["  error tail:"] + [f"    {ln}" for ln in tail.splitlines()]
        return "\n".join(lines)

    def short_entry(self, v: Variant) -> str:
        if v.parent_id is None:
            return f"{v.name} baseline: {self.metric} = {v.fitness}"
        by_id = self._by_id()
        d = measured_delta(v, by_id)
        if v.status == DONE:
            what = f"{d:+.4f}" if d is not None else f"{v.fitness:.4f}"
            if v.predicted is not None:
                what += f" (pred {v.predicted:+.4f})"
        else:
            what = {FAILED: "failed", REJECTED: "rejected", INVALID: "invalid"}.get(v.status, v.status)
        return f"{v.name}←v{v.parent_id:04d} {what}: {shorten(v.hypothesis or v.error, 110)}"

    def tally(self, vs: Sequence[Variant]) -> str:
        by_id = self._by_id()
        better = worse = 0
        for v in vs:
            d = measured_delta(v, by_id)
            if d is not None:
                better += (d > 0) == self.maximize and d != 0
                worse += (d > 0) != self.maximize and d != 0
        failed = sum(v.status == FAILED for v in vs)
        other = sum(v.status in (REJECTED, INVALID) for v in vs)
        return (f"{len(vs)} earlier experiments ({vs[0].name}–{vs[-1].name}), summarised: "
                f"{better} improved on their parent, {worse} were worse, {failed} failed, "
                f"{other} were rejected or unusable.")

    def best_line(self) -> str:
        done = [v for v in self.variants if v.status == DONE and v.fitness is not None]
        if not done:
            return "No variant has a fitness yet."
        best = max(done, key=lambda v: v.fitness if self.maximize else -v.fitness)
        base = next((v for v in self.variants if v.parent_id is None), None)
        rel = ""
        if base is not None and base.fitness is not None:
            rel = f" (baseline {base.fitness:.4f})"
        return f"Best so far: {best.name}, {self.metric} = {best.fitness:.4f}{rel}."

    def render(self, budget_tokens: int) -> str:
        """The notebook for a prompt: newest entries in full, older ones shorter, within budget."""
        vs = list(self.variants)
        if not vs:
            return "Nothing has been run yet."
        head = self.best_line()
        budget = budget_tokens * CHARS_PER_TOKEN - len(head)
        full: list[str] = []
        short: list[str] = []
        i = len(vs) - 1
        # newest first, in full while half the budget lasts
        while i >= 0 and sum(map(len, full)) + len(self.full_entry(vs[i])) <= budget // 2:
            full.append(self.full_entry(vs[i]))
            i -= 1
        # then one line each while the rest of the budget lasts (keeping room for a tally)
        while i >= 0 and sum(map(len, full + short)) + len(self.short_entry(vs[i])) <= budget - 200:
            short.append(self.short_entry(vs[i]))
            i -= 1
        parts = [head]
        if i >= 0:
            parts.append(self.tally(vs[: i + 1]))
        if short:
            parts.append("Older experiments, one line each (Δ vs parent):\n" + "\n".join(reversed(short)))
        if full:
            parts.append("Most recent experiments:\n" + "\n\n".join(reversed(full)))
        return "\n\n".join(parts)

    def markdown(self) -> str:
        """The whole notebook for people (`<run>/notebook.md`), with no budget."""
        out = [f"# Lab notebook\n\n{self.best_line()}\n"]
        for v in self.variants:
            out.append("## " + self.full_entry(v).replace("\n", "\n\n", 1) + "\n")
            if v.rationale:
                out.append(f"Rationale: {v.rationale}\n")
        return "\n".join(out)


def _verdict(predicted: float, measured: float, good: bool) -> str:
    if (predicted > 0) != (measured > 0) and predicted != 0 and measured != 0:
        return "the opposite direction: the hypothesis did not hold"
    if abs(measured) < abs(predicted) / 3:
        return "much smaller than predicted"
    if abs(measured) > 3 * abs(predicted):
        return "much larger than predicted"
    return "about as predicted" + ("" if good else " (a loss, as expected)")
