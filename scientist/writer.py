"""The report's written sections: by a model from the digest, checked, or templated.

Sections, in the order they are written: introduction, method, results, discussion (what
failed and what the run learned), limitations, conclusion, and the abstract last (it
summarises the others). Each has a templated version (`templates/report/sections/`,
data-driven sentences rendered from the digest: never empty, always grounded), which is
the section when no model is configured.

With a model, each section is one conversation (`templates/prompts/paper_*.j2`): the
digest, the sections accepted so far, what this one must cover, and the rules. The reply
(LaTeX) goes through `scientist.grounding.check`: unsafe or broken LaTeX, a number that
is not a digest value, an improvement claimed where none was confirmed, a text over its
length. Its problems go back to the model, up to `rewrites` times; a section that still
fails, a reply cut off at the output limit every time, an exhausted LLM budget or a
provider that fails all end in the templated section, and the report says which and why.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from scientist import digest as digests
from scientist.archive import Archive
from scientist.errors import BudgetExceeded
from scientist.grounding import Context, check, sanitize
from scientist.llm import LLMClient, LLMSettings, ProviderError
from scientist.resources import TEMPLATES

REPORT_ITERATION = -1  # the llm_calls rows of the report's own calls
REWRITES = 2  # rewrites of a section after its first draft, before the templated fallback


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    words: int  # the length asked for; the check allows 1.5 times this
    brief: str  # what the section must cover (for the model)


SPECS = (
    Spec("introduction", "Introduction", 300,
         "The seed's research question and method (from seed.summary and seed.goal), why it matters, "
         "the prior work it builds on (cite every reference of seed.references with \\cite{KEY}), and "
         "what this run did: an automated search over variants of the seed's code, scored by the "
         "seed's protected judge, with claims only after confirmation on fresh paired seeds."),
    Spec("method", "Method", 300,
         "What the confirmed best changed and why: its lineage from the baseline "
         "(lineage_of_confirmed_best: each step's hypothesis and rationale, measured change) and its "
         "code change (diff_of_confirmed_best). If the confirmed best is the baseline, say that the "
         "method is the unmodified seed and describe what the run tried instead (top_variants_by_raw_mean). "
         "Also how variants were proposed, selected, trained and scored (run.proposer, run.selection, "
         "training seeds per variant, the judge)."),
    Spec("results", "Results", 400,
         "The confirmed best against the baseline (means with standard errors, number of seeds), "
         "against the seed's reported baselines (reported_baselines: e.g. online Adam or SGD on the "
         "same data), every confirmation attempt and its decision, the sealed test (difference, 95% "
         "interval, p-value) if there was one, and the noise floor with the smallest improvement the "
         "run could confirm. Refer to the figures with Figure~\\ref{LABEL}."),
    Spec("discussion", "What failed and what the run learned", 300,
         "From the notebook, failures and predictions: which changes helped, which hurt, which failed "
         "and why (failures.by_reason, failures.examples), how well the proposer predicted its own "
         "experiments (predictions), and what a next run should try."),
    Spec("limitations", "Limitations", 220,
         "What limits the conclusions: the number of training seeds, the scale (smoke runs on CPU "
         "are far smaller than the paper's setting), the noise floor and the smallest confirmable "
         "improvement, the number of proposals, the proposer, leads left untested."),
    Spec("conclusion", "Conclusion", 150,
         "The run's answer in a few sentences: exactly what was confirmed (or that nothing was), "
         "with the key numbers."),
    Spec("abstract", "Abstract", 200,
         "One paragraph: the question, what the run did (proposals, evaluations), and what it may "
         "claim, with the key numbers (confirmed improvement with its interval, or that none was "
         "confirmed). No citations, no figure references."),
)
ORDER = ("abstract", "introduction", "method", "results", "discussion", "limitations", "conclusion")


@dataclass
class Section:
    name: str
    title: str
    tex: str  # the body, LaTeX (the allowed subset), checked
    source: str  # "model" or "template"
    note: str = ""  # why the templated text stands here, if the model's did not pass
    attempts: list[dict[str, Any]] = field(default_factory=list)  # each draft's problems


# --- templated sections -------------------------------------------------------------------

def templates() -> jinja2.Environment:
    from scientist.report import latex_env

    return latex_env(TEMPLATES / "report" / "sections")


def templated(spec: Spec, digest: dict[str, Any], labels: dict[str, str]) -> str:
    """The data-driven text of a section."""
    text = templates().get_template(f"{spec.name}.tex.j2").render(
        d=digest, figures=labels, sections={s.name: s.title for s in SPECS})
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def context(digest: dict[str, Any], labels: dict[str, str], words: int) -> Context:
    """What the checks of a section of this run allow."""
    claimable = set()
    sealed = digest.get("sealed_test")
    for c in digest.get("confirmations", []):
        if c["decision"] == "promoted":
            claimable.add(c["challenger"])
    if sealed and sealed.get("decision") != "improved":
        claimable.discard(sealed["challenger"])
    return Context(values=tuple(digests.values(digest)),
                   cite_keys=frozenset(r["key"] for r in digest["seed"]["references"]),
                   labels=frozenset(labels), claimable=frozenset(claimable),
                   improvement_confirmed=bool(digest.get("improvement_confirmed")),
                   reported=tuple(r["method"] for r in digest.get("reported_baselines", [])),
                   baseline=(digest.get("baseline") or {}).get("name", "v0000"),
                   max_words=int(words * 1.5))


# --- writing ------------------------------------------------------------------------------

def write_sections(digest: dict[str, Any], labels: dict[str, str], client: LLMClient | None,
                   rewrites: int = REWRITES, on_progress: Any = None) -> list[Section]:
    """Every section (in reading order): the model's where it passed the checks, else templated."""
    say = on_progress or (lambda text: None)
    done: dict[str, Section] = {}
    stop = ""  # why the model is no longer asked (budget, provider)
    for spec in SPECS:
        fallback = templated(spec, digest, labels)
        if client is None:
            done[spec.name] = Section(spec.name, spec.title, fallback, "template")
            continue
        if stop:
            done[spec.name] = Section(spec.name, spec.title, fallback, "template", stop)
            continue
        try:
            done[spec.name] = _converse(client, spec, digest, labels, done, fallback, rewrites, say)
        except (BudgetExceeded, ProviderError) as e:
            stop = f"the model was not asked: {e}".rstrip(".")
            done[spec.name] = Section(spec.name, spec.title, fallback, "template", stop)
    return [done[n] for n in ORDER]


def _converse(client: LLMClient, spec: Spec, digest: dict[str, Any], labels: dict[str, str],
              done: dict[str, Section], fallback: str, rewrites: int, say: Any) -> Section:
    env = prompts()
    ctx = context(digest, labels, spec.words)
    messages = [{"role": "system", "content": env.get_template("paper_system.j2").render(
                    keys=sorted(ctx.cite_keys), labels=labels)},
                {"role": "user", "content": env.get_template("paper_section.j2").render(
                    spec=spec, digest=digests.dumps(digest), labels=labels,
                    previous=[s for s in done.values()], keys=sorted(ctx.cite_keys))}]
    attempts: list[dict[str, Any]] = []
    for attempt in range(rewrites + 1):
        purpose = f"report-{spec.name}" + ("-rewrite" if attempt else "")
        reply = client.chat(messages, iteration=REPORT_ITERATION, purpose=purpose)
        text = reply.text.strip()
        problems = check(_strip(text), ctx)
        if reply.finish_reason == "length":
            problems.insert(0, "The reply was cut off at the output limit: write a shorter section.")
        attempts.append({"problems": problems, "chars": len(text)})
        if not problems:
            return Section(spec.name, spec.title, sanitize(_strip(text)), "model", attempts=attempts)
        say(f"report: {spec.title}: draft {attempt + 1} has {len(problems)} problem(s): {problems[0][:140]}")
        if attempt < rewrites:
            messages = messages + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": env.get_template("paper_rewrite.j2").render(
                    problems=problems, attempt=attempt + 1, rewrites=rewrites)}]
    kinds = sorted({_kind(p) for p in attempts[-1]["problems"]})
    note = (f"the model's text failed the checks {len(attempts)} times (last: {', '.join(kinds)}; "
            "every draft's problems are in report/sections.json)")
    return Section(spec.name, spec.title, fallback, "template", note, attempts)


def _kind(problem: str) -> str:
    """What kind of problem, in words that quote nothing of the model's text (the note that
    says so is in the report, whose numbers must all be the run's)."""
    for needle, kind in (("not values of the digest", "numbers that are not the run's"),
                         ("improvement", "an improvement that was not confirmed"),
                         ("words; the limit", "too long"), ("cut off", "cut off at the output limit"),
                         ("empty", "empty")):
        if needle in problem:
            return kind
    return "LaTeX that is not allowed"


def _strip(text: str) -> str:
    from scientist.grounding import unfence

    return unfence(text)


@functools.lru_cache(maxsize=1)
def prompts() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES / "prompts"),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


# --- the client of a run -----------------------------------------------------------------

class RunLLM:
    """The LLM client a report uses, from the run's own settings (config.json): the same
    model, base URL, key variable and budget as the run, the same transcript and cache.
    A context manager: it holds the archive open to count and record calls."""

    def __init__(self, run_dir: Path, model: str | None = None, api_base: str | None = None):
        self.run_dir = Path(run_dir)
        self.config = _json(self.run_dir / "config.json")
        self.model = model or self.config.get("model")
        self.api_base = api_base if model or api_base else self.config.get("api_base")
        self.archive: Archive | None = None

    def __enter__(self) -> LLMClient | None:
        if not self.model:
            return None
        c = self.config
        settings = LLMSettings(model=self.model, api_base=self.api_base, api_key_env=c.get("api_key_env"),
                               temperature=0.2, max_output_tokens=int(c.get("max_output_tokens") or 4096),
                               timeout=float(c.get("llm_timeout") or 300),
                               retries=int(c.get("llm_retries", 5)),
                               backoff=float(c.get("llm_backoff") or 2.0), max_cost=c.get("max_cost"),
                               max_tokens=c.get("max_tokens"), price_in=c.get("price_in"),
                               price_out=c.get("price_out"))
        self.archive = Archive(self.run_dir / "archive.sqlite")
        return LLMClient(settings, self.run_dir, spent=self.archive.llm_usage,
                         record=self.archive.add_llm_call)

    def __exit__(self, *exc: object) -> None:
        if self.archive is not None:
            self.archive.close()


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def record(sections: list[Section], path: Path) -> None:
    """report/sections.json: which sections the model wrote, and every draft's problems."""
    path.write_text(json.dumps([asdict(s) for s in sections], indent=1))


def paper_context(sections: list, figures: list, missing: dict[str, str], refs: list, review: Any,
           client: Any) -> dict[str, Any]:
    """The written part of the report's context: sections, figures, bibliography, review."""
    from scientist.figures import SECTION
    from scientist.latex import Tex
    from scientist.review import review_tex

    by_model = [s.title for s in sections if s.source == "model"]
    fallback = [f"{s.title} ({s.note})" for s in sections if s.source == "template" and s.note]
    if client is None:
        note = ("The sections were written from templates filled with the run's data (no language "
                "model was asked); every number in them is in report/digest.json.")
    else:
        note = (f"Sections written by the language model {client.settings.model}"
                + (f": {', '.join(by_model)}" if by_model else ": none")
                + ", each checked against the run's data (report/digest.json)"
                + (f". Templated instead: {'; '.join(fallback)}" if fallback else "") + ".")
    numbered = []
    for i, f in enumerate((f for f in figures), 1):
        numbered.append({"label": f.label, "stem": f.stem, "caption": Tex(f.caption), "svg": f.svg,
                         "number": i, "section": SECTION.get(f.label, "results")})
    # LaTeX numbers figures in the order they appear, which is the body's section order
    order = {s.name: k for k, s in enumerate(sections)}
    numbered.sort(key=lambda f: (order.get(f["section"], 99), f["number"]))
    for i, f in enumerate(numbered, 1):
        f["number"] = i
    return {"sections": {s.name: {"title": s.title, "tex": Tex(s.tex), "note": s.note, "source": s.source}
                         for s in sections},
            "body": [{"name": s.name, "title": s.title, "tex": Tex(s.tex), "note": s.note,
                      "source": s.source} for s in sections if s.name != "abstract"],
            "written": {"note": note, "by_model": by_model},
            "figures": numbered, "missing_figures": missing,
            "bibliography": [{"key": r.key, "text": r.plain()} for r in refs],
            "review": review, "review_tex": review_tex(review) if review else Tex("")}
