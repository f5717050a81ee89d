"""The offline proposer: hill-climbing by self-modification of declared hyperparameters.

No LLM is used. The seed declares in `seed.toml` which dataclass fields may change
(`[[mutable]]`: file, name, type, range, and why it matters). Each proposal changes one
field (sometimes two) of the parent's code, as SEARCH/REPLACE blocks that go through
the same parser and applier as an LLM's edits. It reasons from the run's own record:
knobs never tried come first; a knob whose last change along this lineage helped is
pushed further the same way, one that hurt is turned the other way; a change already
tried from the same parent is not proposed again. In FME terms (thesis ch. 7) this is
the hill-climbing baseline: a fixed mutation scheme under fitness-monotonic selection.
"""

from __future__ import annotations

import ast
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from scientist.editblocks import Edit, parse_edits, render_edit
from scientist.proposer import Context
from scientist.seed import Mutable
from scientist.variant import Proposal, Variant

LINE = r"^(?P<indent>[ \t]*){name}[ \t]*:[ \t]*(?P<type>[^=\n#]+?)[ \t]*=[ \t]*" \
       r"(?P<value>[^#\n]+?)(?P<comment>[ \t]*#[^\n]*)?$"
MAX_TRIES = 30


@dataclass(frozen=True)
class Change:
    knob: Mutable
    old_line: str
    new_line: str
    old: Any
    new: Any
    note: str = ""  # why this direction: what the lineage's record says


def find_line(text: str, name: str) -> re.Match[str] | None:
    return re.search(LINE.format(name=re.escape(name)), text, flags=re.M)


def format_value(kind: str, v: Any) -> str:
    if kind == "float":
        s = f"{v:.3g}"
        return s if any(c in s for c in ".en") else s + ".0"
    if kind == "int":
        return str(int(v))
    return repr(v)


def past_changes(history: list[Variant], knobs: list[Mutable]) -> list[tuple[Variant, str, Any, Any]]:
    """(variant, knob name, old, new) read back from each variant's diff."""
    out = []
    for v in history:
        minus, plus = {}, {}
        for line in v.diff.splitlines():
            if line[:1] not in "+-" or line[:3] in ("+++", "---"):
                continue
            for k in knobs:
                m = find_line(line[1:], k.name)
                if m:
                    try:
                        val = ast.literal_eval(m["value"].strip())
                    except (ValueError, SyntaxError):
                        continue
                    (plus if line[0] == "+" else minus)[k.name] = val
        out += [(v, n, minus.get(n), plus[n]) for n in plus]
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


class OfflineProposer:
    name = "offline"
    uses_llm = False

    def __init__(self, max_knobs: int = 2):
        self.max_knobs = max_knobs

    def describe(self) -> str:
        return "offline proposer (no LLM configured: hill-climbing over the seed's declared knobs)"

    def propose(self, ctx: Context) -> Proposal:
        knobs = [k for k in ctx.seed.mutables if k.file in ctx.files
                 and find_line(ctx.files[k.file], k.name)]
        if not knobs:
            raise ValueError(f"seed {ctx.seed.name} declares no [[mutable]] field that can be "
                             "found in the parent's code; the offline proposer has nothing to vary")
        byid = {v.id: v for v in ctx.history}
        past = past_changes(ctx.history, knobs)
        tried = {(v.parent_id, n, repr(new)) for v, n, _, new in past}
        for _ in range(MAX_TRIES):
            n = 1 if len(knobs) == 1 or ctx.rng.random() < 0.7 else min(self.max_knobs, len(knobs))
            chosen = self._pick(knobs, past, ctx.rng, n)
            changes = [self._mutate(k, ctx, past, byid) for k in chosen]
            if (all((ctx.parent.id, c.knob.name, repr(c.new)) in tried for c in changes)
                    or any(c.new == c.old for c in changes)):
                continue
            return self._proposal(changes, ctx)
        raise ValueError("the offline proposer found no untried change from this parent")

    @staticmethod
    def _pick(knobs: list[Mutable], past: list, rng: random.Random, n: int) -> list[Mutable]:
        counts = {k.name: 0 for k in knobs}
        for _, name, _, _ in past:
            if name in counts:
                counts[name] += 1
        weights = [1.0 / (1 + counts[k.name]) ** 2 for k in knobs]  # untried knobs first
        chosen: list[Mutable] = []
        while len(chosen) < n:
            k = rng.choices(knobs, weights=weights)[0]
            if k not in chosen:
                chosen.append(k)
        return chosen

    def _mutate(self, k: Mutable, ctx: Context, past: list, byid: dict[int, Variant]) -> Change:
        m = find_line(ctx.files[k.file], k.name)
        assert m is not None  # filtered in propose()
        old = ast.literal_eval(m["value"].strip())
        if k.type == "bool":
            new: Any = not bool(old)
            note = ""
        elif k.type == "choice":
            new = ctx.rng.choice([v for v in k.values if v != old] or list(k.values))
            note = ""
            note = ""
        else:
            direction, note = self._direction(k, ctx, past, byid)
            new = self._step(k, old, direction, ctx.rng)
        # the value the code will hold (floats keep 3 significant digits): what `tried`
        # and the hypothesis compare and show
        new = ast.literal_eval(format_value(k.type, new))
        line = m.group(0)
        start, end = m.span("value")
        new_line = line[: start - m.start()] + format_value(k.type, new) + line[end - m.start():]
        return Change(k, line, new_line, old, new, note)

    @staticmethod
    def _direction(k: Mutable, ctx: Context, past: list,
                   byid: dict[int, Variant]) -> tuple[int, str]:
        """+1 or -1, and why: follow the last change of this knob along the parent's lineage."""
        lineage, vid = set(), ctx.parent.id
        while vid is not None and vid in byid:
            lineage.add(vid)
            vid = byid[vid].parent_id
        for v, name, old, new in reversed(past):
            if name != k.name or v.id not in lineage or old is None or v.parent_id not in byid:
                continue
            parent = byid[v.parent_id]
            if v.fitness is None or parent.fitness is None or old == new:
                break
            up = new > old
            helped = (v.fitness > parent.fitness) == ctx.seed.maximize
            delta = v.fitness - parent.fitness
            note = (f"Its last change along this lineage, in {v.name} "
                    f"({format_value(k.type, old)} → {format_value(k.type, new)}), moved "
                    f"{ctx.seed.metric} by {delta:+.4f}, so this "
                    f"{'continues that way' if helped else 'goes the other way'}.")
            return (1 if up == helped else -1), note
        return ctx.rng.choice((-1, 1)), "Not changed along this lineage yet: a first probe."

    @staticmethod
    def _step(k: Mutable, old: float, direction: int, rng: random.Random) -> float:
        lo, hi = float(k.low), float(k.high)  # type: ignore[arg-type]
        if old <= lo and direction < 0 or old >= hi and direction > 0:
            direction = -direction  # at the edge of the range: the only way is back
        size = rng.uniform(0.3, 1.0)
        if k.log and old > 0:
            new = old * math.exp(direction * size * math.log(2.0))
        else:
            new = old + direction * size * 0.25 * (hi - lo)
        new = min(max(new, lo), hi)
        if k.type == "int":
            new = int(round(new))
            if new == old:
                new = int(min(max(old + direction, lo), hi))
        return new

    def _proposal(self, changes: list[Change], ctx: Context) -> Proposal:
        metric = ctx.seed.metric
        verb = "raise" if ctx.seed.maximize else "lower"
        parts, reasons = [], []
        for c in changes:
            parts.append(f"{c.knob.name} {format_value(c.knob.type, c.old)} → "
                         f"{format_value(c.knob.type, c.new)}")
            why = " ".join(x for x in (_sentence(c.knob.why), c.note) if x)
            reasons.append(f"{c.knob.name}: {why or 'a declared knob of the seed.'}")
        hypothesis = f"Changing {' and '.join(parts)} will {verb} {metric}."
        rationale = " ".join(reasons)
        prediction = f"{metric} {'up' if ctx.seed.maximize else 'down'} by a small margin"
        text = "\n".join(render_edit(Edit(c.knob.file, c.old_line, c.new_line)) for c in changes)
        return Proposal(hypothesis, rationale, prediction, tuple(parse_edits(text)), self.name)
