"""Report: a run folder rendered as a short paper, report.tex (a PDF when TeX is installed)
and report.html, with the run's data as appendices.

Every number in the report is read from the run folder (archive, config, git repo) and
formatted here; the template `templates/report/report.tex.j2` only lays it out. The written
sections come from `scientist.writer` (templated, or by the run's model and checked against
the digest, `scientist.digest`), the figures from `scientist.figures`, the web page from
`scientist.html`; `write_report` puts them together.

Template syntax: jinja2 with LaTeX-friendly delimiters, so TeX's own braces and `%`
stay untouched:

    \\VAR{expr}          a value            \\BLOCK{for v in top} ... \\BLOCK{endfor}
    \\#{comment}         a template comment (the template never writes TeX's `\\#{`)

Every `\\VAR{}` is LaTeX-escaped on output (jinja2 `finalize`), unless the value is a
`Tex` string, which this module builds for ready-made LaTeX (numbers with `\\pm`, the
diff listing). A missing variable is an error (`StrictUndefined`). Escaping and compiling
are `scientist.latex`.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import git
import jinja2

from scientist import resources
from scientist.archive import Archive
from scientist.notebook import measured_delta, reference
from scientist.promotion import (IMPROVED, PROMOTED, RAW, SEALED,
                                 Comparison, Promotion)
from scientist.stats import Paired
from scientist.errors import ScientistError
from scientist.latex import (MAX_DIFF_LINES, TEX_PACKAGES, Report, Tex, compile_tex, latex_escape,
                             tex_engine, verbatim_safe)
from scientist.variant import (CLEAN, DONE, FAILED, INVALID, PENDING, REJECTED, RUNNING,
                               SEED_CRASH, SEED_NO_METRICS, SEED_OOM, SEED_TIMEOUT,
                               SEED_VIOLATED, SUSPICIOUS, VIOLATED, Fitness, Variant)
from scientist.workspace import Workspace

META = ("judge_learner", "status", "started_at", "finished_at", "created_at", "seed_name", "seed_title",
        "seed_summary", "metric", "proposer_uses_llm", "proposer_description", "elapsed_seconds")
SEED_FAILURES = {SEED_CRASH: "crash (non-zero exit)", SEED_TIMEOUT: "timeout",
                 SEED_OOM: "out of memory", SEED_NO_METRICS: "no metrics (evaluator output)",
                 SEED_VIOLATED: "violated the judge's protocol"}
TEMPLATES = resources.TEMPLATES / "report"
TOP_N = 10  # rows of the top-variants table
SHORT = 110  # characters of a hypothesis in a table cell


# --- numbers -----------------------------------------------------------------------------

def num(x: float | None) -> str:
    """A measured value, for math mode: 4 decimals as the console prints it, or scientific
    notation when 4 decimals would hide it; '---' for no value (outside math mode)."""
    if x is None:
        return "---"
    if not math.isfinite(x):  # other metrics than the fitness may be anything a float can
        return r"\mathrm{NaN}" if math.isnan(x) else ("" if x > 0 else "-") + r"\infty"
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:.4f}"
    mant, exp = f"{x:.3e}".split("e")
    return rf"{mant}\times 10^{{{int(exp)}}}"


def pm(mean: float | None, stderr: float | None) -> Tex:
    """`$mean \\pm stderr$`, or the mean alone when there is no stderr (one seed)."""
    if mean is None:
        return Tex("---")
    return Tex(f"${num(mean)}$" if stderr is None else f"${num(mean)} \\pm {num(stderr)}$")


def signed(x: float | None) -> Tex:
    if x is None:
        return Tex("---")
    return Tex(f"${'+' if x >= 0 else ''}{num(x)}$")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def when(epoch: float | None) -> str:
    return "---" if not epoch else datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def plural(n: object, noun: str) -> str:
    """`1 training seed`, `3 training seeds`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def shorten(text: str, width: int = SHORT) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


# --- what the report says ----------------------------------------------------------------

def gather(run_dir: Path) -> dict[str, Any]:
    """Everything the template shows, read from the run folder and formatted."""
    db = run_dir / "archive.sqlite"
    if not db.is_file():
        raise ScientistError(f"{run_dir} is not a run folder: it has no archive.sqlite")
    config = _read_json(run_dir / "config.json")
    archive = Archive(db)
    try:
        archive.maximize = maximize = bool(archive.get_meta("maximize", True))
        meta = {k: archive.get_meta(k) for k in META}
        variants, events = archive.all(), archive.events()
        top = archive.best(TOP_N)  # by raw mean; each row says what it may be called
        promotion = Promotion.of(archive)
        best = promotion.best()  # the confirmed best, the only one called best
        labels = promotion.labels()
        lineage = archive.lineage(best.id) if best else []
        llm = _llm(archive, config)
        baseline = next((v for v in variants if v.parent_id is None), None)
        metric = meta["metric"] or (baseline.result.metric if baseline and baseline.result else "")
        claims = _claims(promotion, variants, events, top[0] if top else None,
                         config.get("time_budget"))
    finally:
        archive.close()
    return {
        "run": _setup(run_dir, config, meta, baseline, variants),
        "metric": metric or "fitness",
        "direction": "higher is better" if maximize else "lower is better",
        "counts": _counts(variants),
        "baseline": _view(baseline) if baseline else None,
        "best": _view(best) if best else None,
        "best_is_baseline": best is not None and baseline is not None and best.id == baseline.id,
        "results": _results(baseline, best, metric),
        "top": [_view(v, labels, best) for v in top],
        "claims": claims,
        "lineage": _lineage(lineage, maximize),
        "failures": _failures(variants),
        "integrity": _integrity(variants, meta),
        "rejections": _rejections(events, variants),
        "diff": _diff(run_dir / "repo", baseline, best),
        "llm": llm,
        "predictions": _predictions(variants, maximize),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _setup(run_dir: Path, cfg: dict, meta: dict, baseline: Variant | None,
           variants: list[Variant]) -> dict[str, Any]:
    seed = meta["seed_name"] or cfg.get("seed_name") or Path(str(cfg.get("seed", "?"))).name
    selection = str(cfg.get("selection", "?"))
    if selection == "fme":
        b, t, c = (cfg.get(f"fme_{k}", "?") for k in ("buckets", "temperature", "capacity"))
        selection += f" (fitness-monotonic: {b} buckets, temperature {t}, capacity {c})"
    started = meta["started_at"] or meta["created_at"] or cfg.get("created_at")
    wall = meta["elapsed_seconds"]
    if wall is None and started and meta["finished_at"]:
        wall = meta["finished_at"] - started
    budget = cfg.get("time_budget")
    # seeds per variant: what the variants after the baseline had (the baseline has more,
    # for the noise floor)
    ns = Counter(v.fitness_n for v in variants if v.parent_id is not None and v.fitness_n)
    training_seeds = ns.most_common(1)[0][0] if ns else (
        baseline.fitness_n if baseline and baseline.fitness_n else
        len(baseline.result.seeds) if baseline and baseline.result else "?")
    return {
        "id": cfg.get("run_id") or run_dir.name,
        "seed": seed,
        "seed_path": cfg.get("seed_path") or cfg.get("seed") or "",
        "title": meta["seed_title"] or seed,
        "summary": meta["seed_summary"] or "",
        "scale": cfg.get("scale", "?"),
        "proposer": cfg.get("proposer", "?"),
        "proposer_description": meta["proposer_description"] or "",
        "uses_llm": meta["proposer_uses_llm"],  # None: the run did not record it
        "selection": selection,
        "sandbox": cfg.get("sandbox", "?"),
        "rng_seed": cfg.get("rng_seed", "?"),
        "iterations": cfg.get("iterations", "?"),
        "time_budget": duration(budget) if budget else "none",
        "training_seeds": training_seeds,
        "status": meta["status"] or "unknown",
        "started": when(started),
        "finished": when(meta["finished_at"]),
        "wall": duration(wall),
        "written": datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def _llm(archive: Archive, cfg: dict) -> dict[str, Any] | None:
    """Calls, tokens and cost of the run's LLM, or None if it made no calls."""
    u = archive.llm_usage()
    failed = len(archive.llm_errors())
    if not u.calls and not failed:
        return None
    cost = f"{u.cost:.4f} USD" + (f" (and {plural(u.unpriced_calls, 'call')} of a model with no known "
                                  "price, counted as 0)" if u.unpriced_calls else "")
    return {"model": str(cfg.get("model") or "?"), "calls": u.calls, "cached": u.cached_calls,
            "prompt_tokens": f"{u.prompt_tokens:,}", "completion_tokens": f"{u.completion_tokens:,}",
            "cost": cost, "failed": failed,
            "budget": ", ".join(x for x in (
                f"{cfg['max_cost']:g} USD" if cfg.get("max_cost") is not None else "",
                f"{cfg['max_tokens']:,} tokens" if cfg.get("max_tokens") is not None else "") if x)
            or "none"}


def _predictions(variants: list[Variant], maximize: bool) -> dict[str, Any] | None:
    """Each evaluated variant's predicted change of fitness beside the measured one."""
    by_id = {v.id: v for v in variants}
    rows, pairs = [], []
    for v in variants:
        if v.predicted is None or v.parent_id is None:
            continue
        d = measured_delta(v, by_id)
        ref = reference(v, by_id)
        if d is not None:
            pairs.append((v.predicted, d))
        rows.append({"name": v.name, "against": ref.name if ref else "---", "predicted": signed(v.predicted),
                     "measured": signed(d) if d is not None else Tex(f"--- ({v.status})"),
                     "hypothesis": v.hypothesis})
    if not rows:
        return None
    stats: dict[str, Any] = {"n": len(pairs)}
    if pairs:
        nonzero = [(p, m) for p, m in pairs if p != 0 and m != 0]
        stats["sign"] = (f"{sum((p > 0) == (m > 0) for p, m in nonzero)} of {len(nonzero)}"
                         if nonzero else "---")
        stats["mae"] = Tex(f"${num(statistics.fmean(abs(p - m) for p, m in pairs))}$")
        stats["mean_predicted"] = signed(statistics.fmean(p for p, _ in pairs))
        stats["mean_measured"] = signed(statistics.fmean(m for _, m in pairs))
        ps, ms = [p for p, _ in pairs], [m for _, m in pairs]
        stats["corr"] = (Tex(f"${num(statistics.correlation(ps, ms))}$") if len(pairs) >= 3
                         and len(set(ps)) > 1 and len(set(ms)) > 1 else Tex("---"))
    return {"rows": rows, "stats": stats, "good": "positive" if maximize else "negative"}


def _counts(variants: list[Variant]) -> list[tuple[str, int]]:
    tried = [v for v in variants if v.parent_id is not None]
    by = Counter(v.status for v in tried)
    rows = [("proposals after the baseline", len(tried)),
            ("evaluated successfully", by[DONE]),
            ("failed (crash, timeout, out of memory, no metrics)", by[FAILED]),
            ("rejected by a human", by[REJECTED]),
            ("invalid (edits could not be applied)", by[INVALID])]
    if by[PENDING] + by[RUNNING]:
        rows.append(("not finished (pending or running)", by[PENDING] + by[RUNNING]))
    return rows


def _view(v: Variant, labels: dict[int, str] | None = None,
          best: Variant | None = None) -> dict[str, Any]:
    claim = ("best" if best is not None and v.id == best.id else (labels or {}).get(v.id, RAW))
    return {"name": v.name, "parent": f"v{v.parent_id:04d}" if v.parent_id is not None else "---",
            "fitness": pm(v.fitness, v.fitness_stderr), "n": v.fitness_n, "status": v.status,
            "hypothesis": v.hypothesis or "baseline: the unmodified seed",
            "prediction": v.prediction, "iteration": v.iteration, "claim": claim}


def _claims(promotion: Promotion, variants: list[Variant], events: list[dict[str, Any]],
            raw_top: Variant | None, budget: float | None) -> dict[str, Any]:
    """What the run may claim: its design, noise floor, every confirmation, the sealed test,
    and what confirming cost."""
    d, maximize = promotion.design, promotion.maximize
    by_id = {v.id: v for v in variants}
    noise = promotion.noise()
    rows, promotions = [], []
    for c in promotion.comparisons():
        t = c.test(maximize)
        ch = by_id.get(c.challenger_id)
        rows.append({"challenger": f"v{c.challenger_id:04d}", "incumbent": f"v{c.incumbent_id:04d}",
                     "attempt": c.attempt, "level": Tex(f"${num(c.level)}$"), "n": t.n,
                     "diff": pm(t.mean if t.n else None, t.se), "ci": _interval(t),
                     "p": Tex(f"${num(t.p)}$") if t.n >= 2 else Tex("---"),
                     "decision": c.decision or "in progress", "reason": c.reason})
        if c.decision == PROMOTED and ch is not None:
            promotions.append(ch)
    sealed = promotion.sealed()
    best = promotion.best()
    explore = sum(len(v.result.seeds) for v in variants if v.result)
    extra = sum(c.evaluations for c in promotion.comparisons())
    sealed_runs = sum(c.evaluations for c in promotion.comparisons(SEALED))
    return {
        "alpha": Tex(f"${d.alpha:g}$"), "max_seeds": d.max_seeds, "batch": d.batch,
        "looks": ", ".join(str(n) for n in d.looks), "n_looks": len(d.looks),
        "first_level": Tex(f"${num(d.level(1))}$"), "screen": f"{d.screen:g}",
        "share": (f"confirmations may use {d.share:.0%} of the time budget" if d.share and budget
                  else "no time budget"),
        "noise": None if noise is None else {"sd": Tex(f"${num(noise.sd)}$"), "n": noise.n,
                                             "detectable": Tex(f"${num(noise.detectable)}$")},
        "rows": rows, "promotions": promotions,
        "untested": sum(e["kind"] == "untested" for e in events),
        "sealed": None if sealed is None else _sealed_view(sealed, maximize),
        "sealed_level": Tex(f"${d.alpha:g}$"),
        "sealed_due": best is not None and best.parent_id is not None and sealed is None,
        "promoted_by": next((r for r in reversed(rows) if r["decision"] == PROMOTED
                             and best is not None and r["challenger"] == best.name), None),
        "cost": {"explore": explore, "confirm": extra, "sealed": sealed_runs,
                 "seconds": duration(promotion.seconds())},
        "raw_top": None if raw_top is None or (best is not None and raw_top.id == best.id)
        else _view(raw_top, promotion.labels(), best),
    }


def _sealed_view(c: Comparison, maximize: bool) -> dict[str, Any]:
    t = c.test(maximize)
    return {"challenger": f"v{c.challenger_id:04d}", "incumbent": f"v{c.incumbent_id:04d}",
            "diff": signed(t.mean), "se": Tex(f"${num(t.se)}$") if t.se is not None else Tex("---"),
            "ci": _interval(t), "p": Tex(f"${num(t.p)}$"), "n": t.n, "decision": c.decision,
            "improved": c.decision == IMPROVED}


def _interval(t: Paired) -> Tex:
    if t.low is None or t.high is None:
        return Tex("---")
    return Tex(f"$[{num(t.low)}, {num(t.high)}]$")


def _seed_stats(v: Variant) -> dict[str, tuple[float, float | None]]:
    """Each metric's mean and standard error over the variant's successful training seeds."""
    if v.result is None:
        return {k: (x, None) for k, x in v.metrics.items()}
    per: dict[str, list[float]] = {}
    for s in v.result.seeds:
        if s.ok:
            for k, x in s.metrics.items():
                per.setdefault(k, []).append(x)
    return {k: (statistics.fmean(xs), statistics.stdev(xs) / math.sqrt(len(xs))
                if len(xs) > 1 else None) for k, xs in per.items()}


def _results(baseline: Variant | None, best: Variant | None, metric: str | None) -> list[dict]:
    """Rows of the baseline-vs-best table: the fitness first, then every other metric."""
    if baseline is None:
        return []
    other = best or baseline
    rows = [{"metric": metric or "fitness", "fitness": True,
             "baseline": pm(baseline.fitness, baseline.fitness_stderr),
             "best": pm(other.fitness, other.fitness_stderr),
             "delta": _delta(other.fitness, baseline.fitness)}]
    a, b = _seed_stats(baseline), _seed_stats(other)
    for k in sorted((set(a) | set(b)) - {metric}):
        ma, mb = a.get(k, (None, None)), b.get(k, (None, None))
        rows.append({"metric": k, "fitness": False, "baseline": pm(*ma), "best": pm(*mb),
                     "delta": _delta(mb[0], ma[0])})
    return rows


def _delta(x: float | None, ref: float | None) -> Tex:
    return signed(None if x is None or ref is None else x - ref)


def _lineage(chain: list[Variant], maximize: bool) -> list[dict[str, Any]]:
    """The best variant's ancestry, baseline first, each step measured against its parent."""
    steps = []
    for parent, v in zip([None, *chain[:-1]], chain):
        step = _view(v)
        step["delta"], step["verdict"] = Tex(""), ""
        if parent is not None and v.fitness is not None and parent.fitness is not None:
            step["delta"] = _delta(v.fitness, parent.fitness)
            new, old = Fitness(v.fitness, maximize), Fitness(parent.fitness, maximize)
            step["verdict"] = ("better" if new.better_than(old) else
                               "worse" if old.better_than(new) else "unchanged")
        steps.append(step)
    return steps


def _failures(variants: list[Variant]) -> dict[str, Any]:
    """Failed and invalid variants, counted by reason, with a few examples."""
    reasons: Counter[str] = Counter()
    bad = [v for v in variants if v.status in (FAILED, INVALID)]
    for v in bad:
        if v.status == INVALID:
            reasons["invalid proposal (edits did not apply)"] += 1
        elif v.result and any(not s.ok for s in v.result.seeds):
            for status in sorted({s.status for s in v.result.seeds if not s.ok}):
                reasons[SEED_FAILURES.get(status, status)] += 1
        else:
            reasons["error"] += 1
    examples = [{"name": v.name, "status": v.status, "hypothesis": shorten(v.hypothesis, SHORT),
                 "text": shorten(v.error or "(no message)", 240)} for v in bad[:5]]
    return {"total": len(bad), "reasons": reasons.most_common(), "examples": examples}


def _integrity(variants: list[Variant], meta: dict) -> dict[str, Any]:
    """How the fitness was protected, and the variants whose label is not clean."""
    tried = [v for v in variants if v.status in (DONE, FAILED)]
    counts = Counter(v.integrity for v in tried)
    flagged = [{"name": v.name, "label": v.integrity, "reason": shorten(v.integrity_reason, 300)}
               for v in tried if v.integrity != CLEAN]
    return {"split": meta["judge_learner"], "clean": counts[CLEAN],
            "suspicious": counts[SUSPICIOUS], "violated": counts[VIOLATED], "flagged": flagged}


def _rejections(events: list[dict[str, Any]], variants: list[Variant]) -> list[dict[str, Any]]:
    by_id = {v.id: v for v in variants}
    out = []
    for e in events:
        if e["kind"] != "rejected":
            continue
        v = by_id.get(e["variant_id"])
        out.append({"name": v.name if v else "---", "reason": e["text"] or "(no reason given)",
                    "hypothesis": shorten(v.hypothesis, SHORT) if v else ""})
    return out


def _diff(repo: Path, baseline: Variant | None, best: Variant | None) -> dict[str, Any]:
    """The best variant's code against the baseline's, as a listing (or why there is none)."""
    if best is None or baseline is None or best.id == baseline.id:
        return {"text": None, "message": ""}
    try:
        raw = Workspace(repo).diff(baseline.commit or baseline.name, best.commit or best.name)
    except (git.GitError, OSError) as e:  # a missing repo or commit is reported, not raised
        return {"text": None, "message": f"the diff could not be read from {repo}: "
                                        f"{shorten(str(e), 200)}"}
    text, total = verbatim_safe(raw)
    shown = min(total, MAX_DIFF_LINES)
    return {"text": Tex(text), "lines": total, "shown": shown, "truncated": shown < total,
            "command": f"git -C {repo.name} diff {baseline.name} {best.name}",
            "message": "" if raw.strip() else "the diff is empty"}


# --- rendering and writing ---------------------------------------------------------------

def _finalize(value: Any) -> Any:
    """Every `\\VAR{}` passes here: LaTeX-escape it unless it is LaTeX already."""
    if isinstance(value, Tex):
        return value
    if value is None:
        return Tex("---")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return Tex(f"${num(value)}$")
    if isinstance(value, int):
        return str(value)
    return latex_escape(value)


@functools.lru_cache(maxsize=4)  # compiled templates are kept: a report renders several
def latex_env(folder: Path = TEMPLATES) -> jinja2.Environment:
    """jinja2 with LaTeX-friendly delimiters (module docstring); every value escaped unless
    it is `Tex`; filters for the numbers of the digest (`pm`, `signed`, `interval`, `g`)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
        block_start_string=r"\BLOCK{", block_end_string="}",
        variable_start_string=r"\VAR{", variable_end_string="}",
        comment_start_string=r"\#{", comment_end_string="}",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        autoescape=False, finalize=_finalize)
    env.filters.update(latex_escape=latex_escape, shorten=shorten, plural=plural, pm=pm, signed=signed,
                       tex=Tex, g=lambda x: Tex(f"${x:g}$"),
                       interval=lambda lo, hi: Tex("---") if lo is None or hi is None
                       else Tex(f"$[{num(lo)}, {num(hi)}]$"))
    return env


def render(context: dict[str, Any], template: str = "report.tex.j2") -> str:
    return latex_env().get_template(template).render(**context)


def write_report(run_dir: Path, *, compile_pdf: bool | None = None, client: Any = None,
                 on_progress: Any = None) -> Report:
    """Write `run_dir/report/`: report.tex (compiled to report.pdf), report.html (the same
    content for a reader without TeX), the figures, references.bib, digest.json (every
    number the text may use) and sections.json (who wrote each section, every draft's
    problems).

    client: an LLMClient writes the sections (`scientist.writer`); None: templated text.
    compile_pdf: None compiles when a TeX engine (latexmk or pdflatex) is on PATH; True
    requires one (ScientistError if there is none, after writing the .tex); False skips.
    """
    from scientist import digest as digests
    from scientist import figures as figs
    from scientist import writer
    from scientist.references import bibtex

    run_dir = Path(run_dir)
    context = gather(run_dir)
    folder = run_dir / "report"
    folder.mkdir(exist_ok=True)
    d = digests.build(run_dir)
    (folder / "digest.json").write_text(digests.dumps(d))
    made, missing = figs.draw(run_dir, folder, **figs.data(run_dir))
    labels = {f.label: figs.WHAT[f.label] for f in made}
    sections = writer.write_sections(d, {**labels, "sec:claims": "the appendix on claims"}, client,
                                     on_progress=on_progress)
    writer.record(sections, folder / "sections.json")
    refs = digests.references(run_dir)
    (folder / "references.bib").write_text(bibtex(refs), encoding="ascii")
    review = _review(folder)
    context.update(writer.paper_context(sections, made, missing, refs, review, client))
    tex = folder / "report.tex"
    tex.write_text(render(context), encoding="ascii")
    from scientist.html import write_html

    write_html(folder / "report.html", context)
    if compile_pdf is False:
        return Report(tex, None, "PDF not requested", html=folder / "report.html")
    command = tex_engine()
    if command is None:
        hint = ("no TeX engine on PATH (latexmk or pdflatex); on Debian: apt-get install "
                f"{' '.join(TEX_PACKAGES)}; the same report is in report.html")
        if compile_pdf:
            raise ScientistError(f"cannot compile {tex}: {hint}")
        return Report(tex, None, hint, html=folder / "report.html")
    rep = compile_tex(tex, command)
    if rep.pdf is None and any(s.source == "model" for s in sections):
        # a model's text that passed the checks and still broke TeX: never lose the report
        why = f"TeX failed on the model's text ({rep.message.splitlines()[0][:160]})"
        sections = [s if s.source == "template" else
                    writer.Section(s.name, s.title, writer.templated(
                        next(x for x in writer.SPECS if x.name == s.name), d, labels),
                        "template", why, s.attempts) for s in sections]
        writer.record(sections, folder / "sections.json")
        context.update(writer.paper_context(sections, made, missing, refs, review, client))
        tex.write_text(render(context), encoding="ascii")
        write_html(folder / "report.html", context)
        rep = compile_tex(tex, command)
    return Report(rep.tex, rep.pdf, rep.message, rep.log, html=folder / "report.html")


def _review(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "review.json").read_text())
    except (OSError, ValueError):
        return None
