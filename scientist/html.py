"""The report as one self-contained HTML page: the same sections, figures (inline SVG),
tables and review as the PDF, readable in any browser with nothing installed.

Why both: the PDF needs TeX (about 86 MB of Debian packages and two and a half minutes
to install, `scientist.latex.TEX_PACKAGES`), which the README's first command does not
install; a newcomer's first run still ends with a report to read. The page is rendered from
the same context as report.tex (`scientist.report.gather` and the written sections), with
the LaTeX of the sections and of the formatted numbers turned into HTML by
`scientist.texhtml`. Every value is HTML-escaped (jinja2 autoescape).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from scientist.latex import Tex
from scientist.resources import TEMPLATES
from scientist.texhtml import to_html

APPENDIX = {"sec:setup": "A", "sec:claims": "B"}  # the appendix letters the text may refer to


def write_html(path: Path, context: dict[str, Any]) -> None:
    cites = _cite_numbers(context)
    refs = {f["label"]: str(f["number"]) for f in context["figures"]}
    refs.update(APPENDIX)
    refs.update({f"sec:{s['name']}": str(i) for i, s in enumerate(context["body"], 1)})
    refs["tab:results"] = "1"

    def tex(value: Any, paragraphs: bool = False) -> Markup:
        return Markup(to_html(str(value), cites, refs, paragraphs=paragraphs))

    def finalize(value: Any) -> Any:
        if isinstance(value, Tex):
            return tex(value)
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.4f}"
        return value

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES / "report"),
                             undefined=jinja2.StrictUndefined, autoescape=True, finalize=finalize,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["tex"] = tex
    env.filters["svg"] = _svg
    env.filters["listing"] = _listing
    from scientist.report import plural, shorten

    env.filters["plural"] = plural
    env.filters["shorten"] = shorten
    order = sorted(context["bibliography"], key=lambda r: cites.get(r["key"], 10**6))
    page = env.get_template("report.html.j2").render(**context, cites=cites, bib=order)
    path.write_text(page, encoding="utf-8")


def _cite_numbers(context: dict[str, Any]) -> dict[str, int]:
    """Bibliography numbers as BibTeX's unsrt style gives them: in the order of first
    citation, then the uncited references (\\nocite{*}) in the seed's order."""
    order: list[str] = []
    texts = [context["sections"]["abstract"]["tex"]] + [s["tex"] for s in context["body"]]
    for text in texts:
        for m in re.finditer(r"\\cite[pt]?\s*(?:\[[^\]]*\])?\{([^{}]*)\}", str(text)):
            for key in (k.strip() for k in m[1].split(",")):
                if key not in order:
                    order.append(key)
    for r in context["bibliography"]:
        if r["key"] not in order:
            order.append(r["key"])
    return {k: i for i, k in enumerate(order, 1)}


def _svg(text: str) -> Markup:
    """matplotlib's SVG (our own output) inlined: the XML prologue and DOCTYPE dropped."""
    start = text.find("<svg")
    return Markup(text[start:] if start >= 0 else "")


def _listing(text: Any) -> str:
    """The diff listing's body (made for TeX's listings) as plain text for a <pre>."""
    s = str(text)
    return (s.replace(r"(*@\reportcont@*)", "↪ ").replace(r"(*@\reportopen@*)", "(*@")
            .replace(r"(*@\reportbs@*)", "\\"))
