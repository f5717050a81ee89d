"""Publishing a run: the report (sections written by the run's model, if it has one), the
automated review, and the report again with the review appended.

`scientist run` calls this at the end, `scientist report RUN` and `scientist review RUN`
on demand. The second writing of the report asks the model the same questions as the
first, so it is answered from the run's LLM cache and costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scientist.errors import ScientistError
from scientist.latex import Report
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
        record = write_review(run_dir, client, on_progress=on_progress)
        return write_report(run_dir, compile_pdf=compile_pdf, client=client, on_progress=on_progress), record
