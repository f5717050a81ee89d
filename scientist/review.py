"""The automated reviewer: a structured review of a run's report, in the form of a major ML
venue's (NeurIPS): summary, strengths, weaknesses, questions, soundness, presentation and
contribution (1-4), overall score (1-10) and confidence (1-5).

The model reads the report's sections (as written, by it or from the templates) and the
digest of the run, and answers with one JSON object. The reply is validated
(`validate`: every field present, of its type, in its range); a malformed reply goes back
with its problems up to `retries` times, then the review is recorded as missing, with
why. `report/review.json` holds the review (or why it is missing); the report appends it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scientist.errors import BudgetExceeded
from scientist.latex import Tex, latex_escape
from scientist.llm import LLMClient, ProviderError
from scientist.writer import REPORT_ITERATION, prompts

RETRIES = 2
SCORES = {"soundness": (1, 4), "presentation": (1, 4), "contribution": (1, 4), "overall": (1, 10),
          "confidence": (1, 5)}
LISTS = ("strengths", "weaknesses", "questions")
MAX_ITEMS, MAX_CHARS = 12, 1500
SCALE_WORDS = {1: "poor", 2: "fair", 3: "good", 4: "excellent"}


def parse(text: str) -> dict[str, Any]:
    """The JSON object of a reply (inside a code fence or not); ValueError says what is wrong."""
    start = text.find("{")
    if start < 0:
        raise ValueError("The reply has no JSON object: answer with one object {...}.")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise ValueError(f"The JSON does not parse: {e.msg} at line {e.lineno} column {e.colno}.") from None
    if not isinstance(obj, dict):
        raise ValueError("The reply's JSON is not an object.")
    return obj


def validate(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The review with exactly the venue's fields, and every problem of the object."""
    problems, out = [], {}
    summary = obj.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        problems.append("`summary` must be a non-empty string.")
    elif len(summary) > 4 * MAX_CHARS:
        problems.append(f"`summary` is too long ({len(summary)} characters; at most {4 * MAX_CHARS}).")
    else:
        out["summary"] = summary.strip()
    for key in LISTS:
        items = obj.get(key)
        if not isinstance(items, list) or not items or \
                not all(isinstance(x, str) and x.strip() for x in items):
            problems.append(f"`{key}` must be a non-empty list of non-empty strings.")
        elif len(items) > MAX_ITEMS or any(len(x) > MAX_CHARS for x in items):
            problems.append(f"`{key}`: at most {MAX_ITEMS} items of at most {MAX_CHARS} characters each.")
        else:
            out[key] = [x.strip() for x in items]
    for key, (lo, hi) in SCORES.items():
        x = obj.get(key)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x != int(x) or not lo <= x <= hi:
            problems.append(f"`{key}` must be an integer from {lo} to {hi}, not {json.dumps(x)}.")
        else:
            out[key] = int(x)
    return out, problems


def write_review(run_dir: Path, client: LLMClient, retries: int = RETRIES,
                 on_progress: Any = None) -> dict[str, Any]:
    """Ask for the review of the run's report (written before: report/sections.json) and
    store it in report/review.json; returns what was stored."""
    say = on_progress or (lambda text: None)
    folder = Path(run_dir) / "report"
    sections = json.loads((folder / "sections.json").read_text())
    digest = (folder / "digest.json").read_text()
    env = prompts()
    messages = [{"role": "system", "content": env.get_template("review_system.j2").render()},
                {"role": "user", "content": env.get_template("review.j2").render(
                    sections=sections, digest=digest)}]
    attempts: list[list[str]] = []
    record: dict[str, Any] = {"model": client.settings.model}
    try:
        for attempt in range(retries + 1):
            reply = client.chat(messages, iteration=REPORT_ITERATION,
                                purpose="review" + ("-retry" if attempt else ""))
            try:
                review, problems = validate(parse(reply.text))
            except ValueError as e:
                review, problems = {}, [str(e)]
            if reply.finish_reason == "length":
                problems.insert(0, "The reply was cut off at the output limit: be more concise.")
            attempts.append(problems)
            if not problems:
                record["review"] = review
                break
            say(f"review: reply {attempt + 1} is malformed: {problems[0][:140]}")
            messages = messages + [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": env.get_template("review_retry.j2").render(
                    problems=problems, attempt=attempt + 1, retries=retries)}]
        else:
            record["missing"] = (f"the model's reply was malformed {len(attempts)} times (last: "
                                 f"{attempts[-1][0]})")
    except (BudgetExceeded, ProviderError) as e:
        record["missing"] = f"the model could not be asked: {e}"
    record["attempts"] = attempts
    (folder / "review.json").write_text(json.dumps(record, indent=1))
    return record


def review_tex(record: dict[str, Any]) -> Tex:
    """The review as a section body of the LaTeX report (all its text escaped)."""
    model = latex_escape(record.get("model") or "?")
    if "review" not in record:
        return Tex(f"\\textbf{{The automated review is missing}} ({model}): "
                   f"{latex_escape(record.get('missing') or 'no reason recorded')}.")
    r = record["review"]
    scores = ", ".join(f"{k} {r[k]}/{SCORES[k][1]}" + (f" ({SCALE_WORDS[r[k]]})" if SCORES[k][1] == 4 else "")
                       for k in SCORES)
    parts = [f"A review of this report in the form of a major ML venue's, written by the language "
             f"model \\texttt{{{model}}} from the report's sections and the run's digest; it is the "
             f"model's opinion, not checked against the data.\n\n"
             f"\\textbf{{Scores:}} {latex_escape(scores)}.\n\n"
             f"\\textbf{{Summary.}} {latex_escape(r['summary'])}"]
    for key in LISTS:
        items = "\n".join(f"\\item {latex_escape(x)}" for x in r[key])
        parts.append(f"\\textbf{{{key.title()}.}}\n\\begin{{itemize}}\n{items}\n\\end{{itemize}}")
    return Tex("\n\n".join(parts))


def read(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "report" / "review.json").read_text())
    except (OSError, ValueError):
        return None

