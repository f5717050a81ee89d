"""Publishing a run: the report (sections written by the run's model, if it has one), the
automated review, and the report again with the review appended.

`scientist run` calls this at the end, `scientist report RUN` and `scientist review RUN`
on demand. The second writing of the report asks the model the same questions as the
first, so it is answered from the run's LLM cache and costs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scientist.errors import ScientistError
from scientist.latex import Report
from scientist.llm import ProviderError
from scientist.report import write_report
from scientist.review import write_review
from scientist.writer import RunLLM


def publish(run_dir: Path, *, use_llm: bool = True, review: bool = True, compile_pdf: bool | None = None,
            model: str | None = None, api_base: str | None = None,
            on_progress: Any = None) -> tuple[Report, dict[str, Any] | None]:
    """Write the report of `run_dir` (and review it when asked and a model is configured).
    Returns the report and the review record (None when no review was asked for)."""
    with RunLLM(run_dir, model, api_base) as client:
        if not use_llm or client is None:
            if review and use_llm:
                raise ScientistError("a review needs a language model: this run has none "
                                     "configured; give --model NAME (and --api-base URL)")
            return write_report(run_dir, compile_pdf=compile_pdf, on_progress=on_progress), None
        if not review:
            rep = write_report(run_dir, compile_pdf=compile_pdf, client=client, on_progress=on_progress)
            return rep, None
        write_report(run_dir, compile_pdf=False, client=client, on_progress=on_progress)
        failed = _provider_failure(Path(run_dir))
        if failed:  # a budget spent or a provider down: say so, without waiting on it twice more
            client = _Refusing(client.settings, failed)
        record = write_review(run_dir, client, on_progress=on_progress)
        return write_report(run_dir, compile_pdf=compile_pdf, client=client, on_progress=on_progress), record


def _provider_failure(run_dir: Path) -> str:
    """Why the model could not be asked while the report was written ('' if it could)."""
    try:
        sections = json.loads((run_dir / "report" / "sections.json").read_text())
    except (OSError, ValueError):
        return ""
    prefix = "the model was not asked: "
    return next((s["note"][len(prefix):] for s in sections if s.get("note", "").startswith(prefix)), "")


class _Refusing:
    """A client that answers every call with the failure already met (no retries, no waits)."""

    def __init__(self, settings: Any, why: str):
        self.settings, self.why = settings, why

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        raise ProviderError(self.why)
