"""The LLM scientist: hypotheses and SEARCH/REPLACE edits from any model litellm reaches.

The prompt (jinja2 templates in templates/prompts/, StrictUndefined) shows the seed's
description and goal, the parent's editable files (and the protected ones, read-only),
the parent's metrics and lineage, and the lab notebook. The reply must have four
sections, Hypothesis, Rationale, Prediction (a signed number) and Edits; it is parsed
strictly. A reply that does not parse, or whose edits do not apply to the parent's
files, goes back to the model with the exact error (what failed, the block, the closest
real lines, which blocks were fine) up to `format_retries` times; then `ProposalError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jinja2

from scientist.editblocks import FORMAT_REMINDER, parse_edits
from scientist.edits import apply_edits
from scientist.errors import EditError, FormatError, ProposalError
from scientist.llm import LLMClient, Usage
from scientist.notebook import error_tail, reference
from scientist.proposer import Context
from scientist.resources import TEMPLATES
from scientist.seed import Seed
from scientist.variant import Proposal, Variant

PROMPTS = TEMPLATES / "prompts"
SECTIONS = ("hypothesis", "rationale", "prediction", "edits")
_NAMES = "hypothesis|rationale|prediction|edits"
# a heading is `## Name`, `**Name:**` or `Name:` at the start of a line
_HEADING = re.compile(rf"^[ \t]*(?:#{{1,4}}[ \t]*(?:\*\*)?({_NAMES})\b(?:\*\*)?[ \t]*:?"
                      rf"|\*\*({_NAMES})[ \t]*:?[ \t]*\*\*[ \t]*:?|({_NAMES})[ \t]*:)[ \t]*(.*)$",
                      re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"^[ \t>*`]*([+\-−–]?)[ \t]*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+\-]?\d+))?[ \t]*(%?)")
_FENCE_LINE = re.compile(r"^\s*(?:```|~~~)\S*\s*$")
MAX_PROTECTED_CHARS = 16000


def prompts() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(PROMPTS), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


@dataclass
class ParsedReply:
    hypothesis: str
    rationale: str
    prediction: str
    predicted: float
    edits: tuple


def parse_reply(text: str) -> ParsedReply:
    """The four sections of a reply. FormatError says exactly what is missing or malformed."""
    found: dict[str, tuple[int, int, str]] = {}
    for m in _HEADING.finditer(text):
        title = m[1] or m[2] or m[3]
        name = title.lower()
        if name in found:
            if name == "edits":  # the word may start a later line of prose; the first heading counts
                continue
            raise FormatError(f"The reply has the heading `## {title.title()}` twice; give each of "
                              f"the four sections ({', '.join(s.title() for s in SECTIONS)}) once.")
        found[name] = (m.start(), m.end(), m[4])
    missing = [s for s in SECTIONS if s not in found]
    if missing:
        names = ", ".join(f"`## {s.title()}`" for s in missing)
        raise FormatError(f"The reply is missing the section heading(s) {names}. Answer with the "
                          "four headings ## Hypothesis, ## Rationale, ## Prediction and ## Edits, in "
                          "this order, each on its own line.")
    order = sorted(SECTIONS, key=lambda s: found[s][0])
    if order != list(SECTIONS):
        raise FormatError("The sections are out of order: use ## Hypothesis, ## Rationale, "
                          "## Prediction, ## Edits, in this order.")
    body: dict[str, str] = {}
    for name, after in zip(SECTIONS, SECTIONS[1:]):  # the prose; the edits are parsed below
        _, end, inline = found[name]
        chunk = inline + "\n" + text[end:found[after][0]]
        body[name] = "\n".join(ln for ln in chunk.splitlines() if not _FENCE_LINE.match(ln)).strip()
        if not body[name]:
            raise FormatError(f"The `## {name.title()}` section is empty.")
    predicted = parse_prediction(body["prediction"])
    edits = tuple(parse_edits(text[found["edits"][1]:]))
    return ParsedReply(body["hypothesis"], body["rationale"], body["prediction"], predicted, edits)


def parse_prediction(text: str) -> float:
    first = text.strip().splitlines()[0]
    m = _NUMBER.match(first)
    if m is None:
        raise FormatError("The `## Prediction` section must start with a signed number, the expected "
                          f"change of the metric (e.g. +0.012); it starts with {first[:80]!r}.")
    if m[4] == "%":
        raise FormatError("Give the prediction in the metric's own units (e.g. +0.012), not as a "
                          "percentage.")
    value = float(m[2] + (f"e{m[3]}" if m[3] else ""))
    return -value if m[1] in ("-", "−", "–") else value


class LLMProposer:
    name = "llm"
    uses_llm = True

    def __init__(self, client: LLMClient, seed: Seed, scale: Any, format_retries: int = 3,
                 max_output_tokens: int = 8192, on_attempt: Any = None):
        self.client = client
        self.seed = seed
        self.scale = scale
        self.format_retries = format_retries
        self.max_output_tokens = max_output_tokens
        self.on_attempt = on_attempt or (lambda text: None)
        self.env = prompts()
        self.last_usage = Usage()

    def describe(self) -> str:
        return f"LLM {self.client.describe()}"

    # --- prompts ---------------------------------------------------------------------
    def system_prompt(self) -> str:
        return self.env.get_template("system.j2").render(
            seed=self.seed, editable=list(self.seed.editable), format_reminder=FORMAT_REMINDER)

    def propose_prompt(self, ctx: Context) -> str:
        p = ctx.parent
        by_id = {v.id: v for v in ctx.history}
        lineage = []
        for v in ctx.lineage or (p,):
            if v.parent_id is None:
                lineage.append(f"{v.name}: the baseline, {self.seed.metric} = {_fit(v)}")
            else:
                ref = reference(v, by_id)
                delta = (f" ({v.fitness - ref.fitness:+.4f})" if ref is not None and v.fitness is not None
                         and ref.fitness is not None else "")
                lineage.append(f"{v.name}: {v.hypothesis} → {_fit(v)}{delta}")
        return self.env.get_template("propose.j2").render(
            seed=self.seed, scale=self.scale, notebook=ctx.notebook, parent=p,
            parent_fitness=_fit(p), parent_metrics=", ".join(f"{k}={x:.4g}" for k, x in p.metrics.items()),
            lineage=lineage, knobs=list(self.seed.mutables), files=ctx.files,
            protected=_capped(ctx.protected_files), iteration=ctx.iteration, total=ctx.total)

    def repair_prompt(self, ctx: Context, failed: Variant, attempt: int, max_attempts: int) -> str:
        by_id = {v.id: v for v in ctx.history}
        ref = reference(failed, by_id)
        tails = []
        for s in failed.result.seeds if failed.result else []:
            if not s.ok:
                if s.stderr_tail.strip():
                    tails.append({"label": f"training seed {s.seed}, stderr", "text": s.stderr_tail.rstrip()})
                elif s.stdout_tail.strip():
                    tails.append({"label": f"training seed {s.seed}, stdout", "text": s.stdout_tail.rstrip()})
                break
        return self.env.get_template("repair.j2").render(
            seed=self.seed, scale=self.scale, notebook=ctx.notebook, failed=failed,
            failed_parent=f"v{failed.parent_id:04d}" if failed.parent_id is not None else "the baseline",
            tails=tails, files=ctx.files, attempt=attempt, max_attempts=max_attempts,
            reference=ref.name if ref else "the baseline",
            reference_fitness=f"{self.seed.metric} = {_fit(ref)}" if ref else "no fitness")

    # --- proposing -------------------------------------------------------------------
    def propose(self, ctx: Context) -> Proposal:
        return self._converse(ctx, self.propose_prompt(ctx), "propose", "llm")

    def repair(self, ctx: Context, failed: Variant, attempt: int, max_attempts: int) -> Proposal:
        proposal = self._converse(ctx, self.repair_prompt(ctx, failed, attempt, max_attempts),
                                  "repair", "llm-repair")
        return Proposal(f"Repair of {failed.name}: {proposal.hypothesis}", proposal.rationale,
                        proposal.prediction, proposal.edits, proposal.proposer, proposal.predicted)

    def _converse(self, ctx: Context, prompt: str, purpose: str, label: str) -> Proposal:
        messages = [{"role": "system", "content": self.system_prompt()},
                    {"role": "user", "content": prompt}]
        self.last_usage = Usage()
        errors: list[str] = []
        for attempt in range(self.format_retries + 1):
            reply = self.client.chat(messages, iteration=ctx.iteration,
                                     purpose=purpose if attempt == 0 else f"{purpose}-correction")
            self.last_usage.add(reply)
            try:
                parsed = parse_reply(reply.text)
                apply_edits(ctx.files, parsed.edits, editable=self.seed.editable,
                            protected=self.seed.protected)
            except (FormatError, EditError) as e:
                truncated = reply.finish_reason == "length"
                error = str(e)
                errors.append(error.splitlines()[0] if error else type(e).__name__)
                if attempt == self.format_retries:
                    break
                self.on_attempt(f"reply {attempt + 1} unusable ({errors[-1][:140]}); "
                                f"sending the error back ({attempt + 1}/{self.format_retries})")
                messages = messages + [
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": self.env.get_template("retry.j2").render(
                        error=error, truncated=truncated, max_output_tokens=self.max_output_tokens,
                        attempt=attempt + 1, max_attempts=self.format_retries)}]
                continue
            return Proposal(parsed.hypothesis, parsed.rationale, parsed.prediction, parsed.edits,
                            label, parsed.predicted)
        raise ProposalError(f"no usable reply after {len(errors)} attempt(s); last error: {errors[-1]}"
                            + "".join(f"\n  attempt {i + 1}: {e}" for i, e in enumerate(errors)))


def _fit(v: Variant | None) -> str:
    if v is None or v.fitness is None:
        return "— (no fitness)"
    return f"{v.fitness:.4f}" + (f" ± {v.fitness_stderr:.4f}" if v.fitness_stderr is not None else "")


def _capped(files: dict[str, str]) -> dict[str, str]:
    out = {}
    for path, text in files.items():
        if len(text) > MAX_PROTECTED_CHARS:
            text = text[:MAX_PROTECTED_CHARS] + f"\n... ({len(text) - MAX_PROTECTED_CHARS} more characters)\n"
        out[path] = text if text.endswith("\n") else text + "\n"
    return out


__all__ = ["LLMProposer", "parse_reply", "parse_prediction", "prompts", "error_tail"]
