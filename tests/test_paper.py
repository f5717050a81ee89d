"""The report as a paper: sections written by a model (served by the local LLM server of
tests/llm_server.py, through litellm, both protocols) or from templates, the grounding
check and its fallback, the automated review, the HTML page, and the PDF's pages.

A hostile reply (an invented number, an unconfirmed improvement, LaTeX that reads a file,
a reply cut off at the output limit, a malformed review) must never reach the report:
each is sent back, and after the bounded rewrites the templated text stands, and the
report says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import cli_env
from llm_server import FakeLLM, Reply, Request
from scientist.grounding import check
from scientist.latex import SAFE_TEX_ENV, compile_tex, tex_engine
from scientist.paper import publish
from scientist.report import write_report
from scientist import writer
from test_report import FakeRun, require_tex  # noqa: F401 (fixtures below use them)
from test_report import full_run, run  # noqa: F401 (pytest fixtures)

SECTION = re.compile(r'Write the section "([^"]+)"')


def digest_of(req: Request) -> dict:
    """The digest the prompt carries (the model's only source of numbers)."""
    text = req.first_user
    return json.loads(text[text.index("```json\n") + 8:text.index("\n```", text.index("```json"))])


def honest(title: str, d: dict) -> str:
    """A section a careful model would write: numbers from the digest only, claims as confirmed."""
    best, base = d["confirmed_best"], d["baseline"]
    key = d["seed"]["references"][0]["key"] if d["seed"]["references"] else None
    cite = f" \\cite{{{key}}}" if key else ""
    if best["is_the_baseline"]:
        claim = "No improvement was confirmed: the unmodified seed stands."
    else:
        claim = (f"The confirmed best, {best['name']}, improves \\texttt{{acc}} over the baseline "
                 f"(raw means ${best['mean']:.3f}$ against ${base['mean']:.3f}$).")
    return f"This is the {title.lower()} written by the model{cite}. {claim}"


def brain_with(bad: dict[str, str] | None = None, always_bad: set[str] = frozenset()):
    """A model that answers each section honestly, except: for a title in `bad`, its first
    draft is that text; for a title in `always_bad`, every draft is."""
    bad = bad or {}

    def brain(req: Request) -> str:
        if "Review this report" in req.first_user:
            return json.dumps(REVIEW)
        title = SECTION.search(req.first_user)[1]
        rewrite = req.last_user.startswith("The section cannot go into the report")
        if title in always_bad or (title in bad and not rewrite):
            return bad.get(title) or always_bad_text(title)
        return honest(title, digest_of(req))

    return brain


def always_bad_text(title: str) -> str:
    return f"The {title} rose to 0.987654, a number nobody measured."


REVIEW = {"summary": "The report describes a search over learning rates.",
          "strengths": ["Claims are confirmed on fresh seeds."], "weaknesses": ["Three seeds only."],
          "questions": ["Does it hold at full scale?"], "soundness": 3, "presentation": 3,
          "contribution": 2, "overall": 5, "confidence": 4}


def with_model(r: FakeRun, server: FakeLLM, protocol: str = "openai", **cfg) -> None:
    config = json.loads((r.dir / "config.json").read_text())
    model, base = (("openai/paper-writer", server.openai_base) if protocol == "openai"
                   else ("anthropic/claude-test", server.anthropic_base))
    config.update({"model": model, "api_base": base, "llm_backoff": 0.01, "llm_retries": 0, **cfg})
    (r.dir / "config.json").write_text(json.dumps(config))


def sections(r: FakeRun) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((r.dir / "report" / "sections.json").read_text())}


# --- without a model ------------------------------------------------------------------------

def scenario_names():
    return ["improved", "baseline_best", "nothing_succeeded", "no_variants"]


def make_scenario(r: FakeRun, name: str) -> None:
    from test_report import TRAIN, result

    if name == "improved":
        r.add(0, 1, "Raise lr to 0.3", result(0.6, 0.62, 0.67), train=TRAIN.replace("0.1", "0.3"),
              predicted=0.05)
        r.promote(1, 0, sealed=(0.15, 0.17, 0.16, 0.2))
    elif name == "baseline_best":
        r.add(0, 1, "Halve the learning rate", result(0.3, 0.31, 0.35), train=TRAIN.replace("0.1", "0.05"))
    elif name == "nothing_succeeded":
        from scientist.variant import FAILED

        r.archive.update(0, status=FAILED, fitness=None, fitness_stderr=None)
    elif name == "no_variants":
        r.archive.db.execute("DELETE FROM variants")
        r.archive.set_meta("status", "created")


@pytest.mark.parametrize("name", scenario_names())
def test_templated_sections_are_never_empty_and_pass_the_same_checks(run, name):  # noqa: F811
    make_scenario(run, name)
    write_report(run.dir, compile_pdf=False)
    d = json.loads((run.dir / "report" / "digest.json").read_text())
    labels = {"fig:fitness": "", "fig:lineage": "", "fig:spread": "", "fig:predictions": "",
              "fig:curves": "", "sec:claims": ""}
    for spec in writer.SPECS:
        text = writer.templated(spec, d, labels)
        assert text.strip(), spec.name
        assert check(text, writer.context(d, labels, spec.words * 4)) == [], (spec.name, text)
    tex = (run.dir / "report" / "report.tex").read_text()
    for title in ("Introduction", "Method", "Results", "What failed and what the run learned",
                  "Limitations", "Conclusion"):
        assert f"\\section{{{title}}}" in tex
    assert "no language model was asked" in tex


def test_the_digest_holds_the_numbers_of_the_report(full_run):  # noqa: F811
    write_report(full_run.dir, compile_pdf=False)
    d = json.loads((full_run.dir / "report" / "digest.json").read_text())
    base, best = full_run.archive.get(0), full_run.archive.get(full_run.v5)
    assert d["baseline"]["mean"] == pytest.approx(base.fitness, rel=1e-5)
    assert d["confirmed_best"]["name"] == best.name and d["improvement_confirmed"] is True
    assert d["confirmed_best"]["mean"] == pytest.approx(best.fitness, rel=1e-5)
    assert [c["decision"] for c in d["confirmations"]] == ["promoted", "promoted"]
    assert d["sealed_test"]["decision"] == "improved"
    assert d["seed"]["references"] == []  # the tiny seed has none
    assert "+lr: float = 0.3" in d["diff_of_confirmed_best"]


# --- with a model ---------------------------------------------------------------------------

def test_model_sections_are_checked_and_rewritten(full_run):  # noqa: F811
    bad = {"Results": "The confirmed best reached 0.991 on every seed.",  # an invented number
           "Method": "Variant v0002 improves acc over the baseline by a lot.",  # not confirmed (it failed)
           "Introduction": "We read \\input{/etc/passwd} and 50% & more_text.",  # unsafe LaTeX
           "Conclusion": "word " * 400}  # too long
    with FakeLLM(brain=brain_with(bad)) as server:
        with_model(full_run, server)
        rep, _ = publish(full_run.dir, review=False, compile_pdf=False)
    s = sections(full_run)
    assert all(x["source"] == "model" for x in s.values()), {k: x["note"] for k, x in s.items()}
    for name, says in (("results", "`0.991`"), ("method", "v0002"), ("introduction", r"`\input`"),
                       ("conclusion", "words; the limit is")):
        assert len(s[name]["attempts"]) == 2 and any(says in p for p in s[name]["attempts"][0]["problems"]), name
    tex = rep.tex.read_text()
    assert "0.991" not in tex and "/etc/passwd" not in tex and "improves acc over the baseline by a lot" not in tex
    assert "This is the results written by the model." in tex
    assert "Sections written by the language model openai/paper-writer" in tex
    # the rewrite request told the model what was wrong
    rewrites = [r for r in server.requests if r.last_user.startswith("The section cannot go")]
    assert len(rewrites) == 4 and any("0.991" in r.last_user for r in rewrites)


def test_a_section_that_keeps_failing_falls_back_to_the_template_and_says_so(full_run):  # noqa: F811
    with FakeLLM(brain=brain_with(always_bad={"Results"})) as server:
        with_model(full_run, server)
        rep, _ = publish(full_run.dir, review=False, compile_pdf=False)
    s = sections(full_run)
    assert s["results"]["source"] == "template" and len(s["results"]["attempts"]) == 3
    assert "failed the checks 3 times (last: numbers that are not the run's" in s["results"]["note"]
    tex = rep.tex.read_text()
    assert "0.987654" not in tex
    assert r"(Templated text: the model's text failed the checks 3 times" in tex
    assert "Templated instead: Results" in tex
    assert s["method"]["source"] == "model"


def test_a_reply_cut_off_at_the_output_limit_is_not_used(full_run):  # noqa: F811
    def brain(req: Request) -> str | Reply:
        title = SECTION.search(req.first_user)[1]
        text = honest(title, digest_of(req))
        return Reply(text[:30], truncated=True) if title == "Abstract" else text

    with FakeLLM(brain=brain) as server:
        with_model(full_run, server)
        publish(full_run.dir, review=False, compile_pdf=False)
    s = sections(full_run)
    assert s["abstract"]["source"] == "template" and len(s["abstract"]["attempts"]) == 3
    assert "cut off at the output limit" in s["abstract"]["attempts"][0]["problems"][0]
    assert s["results"]["source"] == "model"


def test_an_exhausted_budget_leaves_templated_sections_that_say_why(full_run):  # noqa: F811
    with FakeLLM(brain=brain_with()) as server:
        with_model(full_run, server, max_tokens=1)
        full_run.archive.add_llm_call({"at": 1.7e9, "key": "k", "iteration": 1, "purpose": "propose", "prompt_tokens": 10,
                                       "completion_tokens": 10, "cost": 0.0, "model": "x"})
        rep, _ = publish(full_run.dir, review=False, compile_pdf=False)
        assert server.requests == []
    s = sections(full_run)
    assert all(x["source"] == "template" for x in s.values())
    assert "token budget reached" in s["introduction"]["note"]
    assert "the model was not asked: LLM token budget reached" in rep.tex.read_text()


def test_a_second_report_is_answered_from_the_cache(full_run):  # noqa: F811
    with FakeLLM(brain=brain_with()) as server:
        with_model(full_run, server)
        publish(full_run.dir, review=False, compile_pdf=False)
        n = len(server.requests)
        publish(full_run.dir, review=False, compile_pdf=False)
        assert n == 7 and len(server.requests) == n


# --- the review ------------------------------------------------------------------------------

def test_a_malformed_review_is_retried_then_appended(full_run):  # noqa: F811
    with FakeLLM(brain=brain_with()) as server:
        bad = [json.dumps({**REVIEW, "overall": 11}), "Here is my review: it is good."]
        answers = iter(bad)

        def brain(req: Request) -> str:
            if "Review this report" in req.first_user:
                return next(answers, json.dumps(REVIEW))
            return brain_with()(req)

        server.brain = brain
        with_model(full_run, server, protocol="anthropic")
        rep, record = publish(full_run.dir, review=True)
    assert record["review"]["overall"] == 5 and len(record["attempts"]) == 3
    assert "`overall` must be an integer from 1 to 10, not 11" in record["attempts"][0][0]
    assert "no JSON object" in record["attempts"][1][0]
    tex = rep.tex.read_text()
    assert r"\section{Automated review}" in tex and "Three seeds only." in tex
    assert "overall 5/10" in tex
    html = rep.html.read_text()
    assert "Automated review" in html and "Three seeds only." in html


def test_a_review_that_stays_malformed_is_reported_missing(full_run):  # noqa: F811
    def brain(req: Request) -> str:
        if "Review this report" in req.first_user:
            return '{"summary": "fine", "strengths": []}'
        return brain_with()(req)

    with FakeLLM(brain=brain) as server:
        with_model(full_run, server)
        rep, record = publish(full_run.dir, review=True, compile_pdf=False)
    assert "review" not in record and "malformed 3 times" in record["missing"]
    assert r"\textbf{The automated review is missing}" in rep.tex.read_text()


def test_scientist_review_on_the_command_line(full_run, tmp_path):  # noqa: F811
    with FakeLLM(brain=brain_with()) as server:
        out = subprocess.run(["python", "-m", "scientist.cli", "review", str(full_run.dir), "--no-pdf",
                              "--model", "openai/reviewer", "--api-base", server.openai_base],
                             capture_output=True, text=True, env=cli_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "review by openai/reviewer: overall 5/10" in out.stdout
    assert (full_run.dir / "report" / "review.json").is_file()
    no_model = subprocess.run(["python", "-m", "scientist.cli", "review", str(full_run.dir)],
                              capture_output=True, text=True, env=cli_env(), timeout=300)
    assert no_model.returncode == 2 and "needs a language model" in no_model.stderr + no_model.stdout


# --- the HTML page ---------------------------------------------------------------------------

def test_the_html_report_is_self_contained_with_the_same_content(full_run):  # noqa: F811
    rep = write_report(full_run.dir, compile_pdf=False)
    page = rep.html.read_text()
    tex = rep.tex.read_text()
    assert page.count("<svg") == tex.count(r"\includegraphics") >= 3
    assert not re.search(r'(src|href)="(?!#)', page)  # nothing fetched from elsewhere
    for title in ("Introduction", "Method", "Results", "Limitations", "Conclusion", "Appendix B. Claims"):
        assert title in page
    best = full_run.archive.get(full_run.v5)
    assert f"{best.fitness:.4f} ± {best.fitness_stderr:.4f}" in page
    assert "Raise lr to 50% &amp; $x_1$ \\alpha → ~{} # ^_^" in page  # the hostile hypothesis, escaped
    assert "+lr: float = 0.3" in page


# --- the PDF ---------------------------------------------------------------------------------

def colour_pixels(pdf: Path, page: int, box: tuple[float, float, float, float]) -> int:
    """Clearly coloured pixels (the figures' data; text, axes and grid are black or grey) of
    a region of a page image (x, y, width, height in points from the top left)."""
    import numpy as np

    x, y, w, h = (int(round(v)) for v in box)
    ppm = subprocess.run(["pdftoppm", "-r", "72", "-f", str(page), "-l", str(page), "-x", str(x), "-y",
                          str(y), "-W", str(w), "-H", str(h), str(pdf)], capture_output=True, check=True).stdout
    header = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", ppm)
    pw, ph = int(header[1]), int(header[2])
    img = np.frombuffer(ppm[header.end():], dtype=np.uint8)[: pw * ph * 3].reshape(ph, pw, 3).astype(int)
    return int(((img.max(axis=2) - img.min(axis=2)) > 60).sum())


def figure_boxes(pdf: Path, report: Path) -> dict[int, tuple[int, tuple[float, float, float, float]]]:
    """Figure number -> (page, the region above its caption where the figure is drawn): the
    caption's position from pdftotext, the figure's height from its own PDF at the text width."""
    stems = re.findall(r"\\includegraphics\[width=\\linewidth\]\{([^}]+)\}", report.read_text())
    out = {}
    n = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                                                         text=True).stdout)[1])
    for page in range(1, n + 1):
        xml = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(pdf), "-"],
                             capture_output=True, text=True).stdout
        words = re.findall(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="[\d.]+" yMax="[\d.]+">([^<]*)</word>', xml)
        for (x0, y0, w0), (_, _, w1) in zip(words, words[1:]):
            m = re.fullmatch(r"(\d+):", w1)
            if w0 == "Figure" and m:
                number = int(m[1])
                size = subprocess.run(["pdfinfo", str(report.parent / stems[number - 1])],
                                      capture_output=True, text=True).stdout
                fw, fh = map(float, re.search(r"Page size:\s+([\d.]+) x ([\d.]+)", size).groups())
                width = 595.28 - 2 * 62.36  # A4, 2.2 cm margins: \linewidth in points
                height = width * fh / fw
                out[number] = (page, (float(x0) - 20, float(y0) - height - 8, width, height))
    return out


def require_poppler() -> None:
    if not shutil.which("pdftoppm"):
        import os

        if os.environ.get("SCIENTIST_STRICT") == "1" or os.environ.get("SCIENTIST_REQUIRE_TEX") == "1":
            pytest.fail("pdftoppm (poppler-utils) is missing")
        pytest.skip("pdftoppm (poppler-utils) is missing")


@pytest.mark.parametrize("with_llm", [False, True], ids=["templated", "model"])
def test_the_pdf_has_every_section_and_non_empty_figures(full_run, with_llm):  # noqa: F811
    require_tex()
    require_poppler()
    if with_llm:
        with FakeLLM(brain=brain_with()) as server:
            with_model(full_run, server)
            rep, _ = publish(full_run.dir, review=True, compile_pdf=True)
    else:
        rep, _ = publish(full_run.dir, use_llm=False, review=False, compile_pdf=True)
    assert rep.pdf is not None, rep.message
    text = subprocess.run(["pdftotext", str(rep.pdf), "-"], capture_output=True, text=True).stdout
    for title in ("Abstract", "Introduction", "Method", "Results", "What failed and what the run learned",
                  "Limitations", "Conclusion", "Claims", "Code of the best variant"):
        assert title in text
    if with_llm:
        assert "written by the model" in text and "Automated review" in text
    boxes = figure_boxes(rep.pdf, full_run.dir / "report" / "report.tex")
    figs = (full_run.dir / "report" / "report.tex").read_text().count(r"\includegraphics")
    assert sorted(boxes) == list(range(1, figs + 1)) and figs >= 3
    for number, (page, box) in boxes.items():
        assert colour_pixels(rep.pdf, page, box) > 25, f"figure {number} on page {page} looks empty"


def test_tex_cannot_read_files_outside_the_report_folder(tmp_path):
    """The second wall: even TeX that got past the checks cannot read /etc/passwd."""
    require_tex()
    tex = tmp_path / "report.tex"
    tex.write_text("\\documentclass{article}\\begin{document}\\input{/etc/hostname}\\end{document}\n")
    rep = compile_tex(tex, tex_engine())
    assert rep.pdf is None and "/etc/hostname" in rep.message
    assert SAFE_TEX_ENV["openin_any"] == "p"


def test_a_run_with_a_model_ends_with_its_paper_and_review(toy, make_run):
    """The loop's end: a toy run whose proposals, sections and review all come from the
    local LLM server; the report is written by the model, reviewed, and compiled."""
    from test_llm import toy_brain

    def brain(req: Request) -> str:
        if SECTION.search(req.first_user) or "Review this report" in req.first_user:
            return brain_with()(req)
        return toy_brain(req)

    toy.set_scale(training_seeds=1)
    with FakeLLM(brain=brain) as server:
        run, out = make_run(toy, model="openai/gpt-4o-mini", api_base=server.openai_base,
                            llm_backoff=0.01, iterations=2, report=True)
        run.execute()
    folder = run.dir / "report"
    s = json.loads((folder / "sections.json").read_text())
    assert [x["source"] for x in s] == ["model"] * 7
    assert json.loads((folder / "review.json").read_text())["review"]["overall"] == 5
    assert (folder / "report.html").is_file() and "Automated review" in (folder / "report.tex").read_text()
    assert f"report: {folder / 'report.html'}" in out.getvalue()
    if tex_engine() is not None and shutil.which("pdftoppm"):
        assert (folder / "report.pdf").is_file(), out.getvalue()[-2000:]
        boxes = figure_boxes(folder / "report.pdf", folder / "report.tex")
        assert len(boxes) >= 3
        for number, (page, box) in boxes.items():
            assert colour_pixels(folder / "report.pdf", page, box) > 25, f"figure {number} looks empty"


def test_a_long_lineage_keeps_the_prompt_bounded(run):  # noqa: F811
    from test_report import TRAIN, result

    parent = 0
    for i in range(1, 31):
        parent = run.add(parent, i, f"Step {i}", result(0.5 + i / 100, 0.51 + i / 100, 0.52 + i / 100),
                         train=TRAIN.replace("0.1", f"0.1{i}"))
    run.promote(parent, 0)
    write_report(run.dir, compile_pdf=False)
    d = json.loads((run.dir / "report" / "digest.json").read_text())
    chain = d["lineage_of_confirmed_best"]
    assert len(chain) == 25 and chain[1] == {"left_out": 7}  # 24 steps and the marker and chain[-1]["name"] == "v0030"
    assert d["confirmed_best"]["steps_from_baseline"] == 30
    tex = (run.dir / "report" / "report.tex").read_text()
    assert "v0030 is 30 steps from the baseline" in tex and "(7 more steps left out here)" in tex


def test_a_provider_that_is_down_is_asked_once_not_for_every_part(full_run):  # noqa: F811
    from llm_server import Status

    with FakeLLM() as server:
        server.queue(*[Status(503, "overloaded")] * 20)
        with_model(full_run, server, llm_retries=1)
        rep, record = publish(full_run.dir, review=True, compile_pdf=False)
        assert len(server.requests) == 2  # the first section, retried once; then nothing more
    assert "could not be asked" in record["missing"] and "503" in record["missing"]
    s = sections(full_run)
    assert all(x["source"] == "template" and "kept failing" in x["note"] for x in s.values())
    assert r"\textbf{The automated review is missing}" in rep.tex.read_text()
