"""The report's figures, drawn with matplotlib from the archive: one PDF (for LaTeX) and
one SVG (inlined in the HTML report) each.

- `fitness`: every evaluated variant's raw mean over the iterations, with error bars of
  one standard error, by claim (raw, not confirmed, confirmed), the confirmed best as a
  step line that moves only at a promotion, failures at the foot;
- `lineage`: the tree of variants (each drawn at its iteration and fitness, linked to its
  parent), the confirmed best's ancestry highlighted;
- `predictions`: each proposal's predicted change of the fitness against the measured one;
- `spread`: the per-seed values of the top variants by raw mean, with mean and standard error;
- `curves`: learning curves, from the judge's metrics where they carry them
  (`NAME_at_T`, e.g. gpicl's accuracy at position T of a sequence), else from the training
  code's own `train_log.json` (the variant's report of its meta-training, not scored; so
  labelled).

A figure with nothing to show is left out (the report says why). Text from the run (metric
names, keys of a training log) is drawn literally: matplotlib's math parser is off.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scientist.notebook import measured_delta
from scientist.promotion import CONFIRMED, CONFIRMING, PROMOTED, RAW, UNCONFIRMED
from scientist.variant import CLEAN, FAILED, Variant

MAX_LOG_BYTES = 5_000_000  # a train_log.json larger than this is not read
MAX_CURVES = 3  # keys of a training log drawn
TOP_SPREAD = 8
COLOURS = {"raw": "#1f4e9c", "not confirmed": "#8c8c8c", "confirmed": "#1a7f37",
           "best": "#d2691e", "failed": "#c0392b", "baseline": "#1f4e9c"}


@dataclass(frozen=True)
class Figure:
    label: str  # fig:NAME, what the text refers to
    stem: str  # report/<stem>.pdf and .svg
    caption: str  # LaTeX (the subset `scientist.grounding` allows)
    svg: str = ""  # the SVG text, for the HTML report


def draw(run_dir: Path, folder: Path, variants: list[Variant], labels: dict[int, str],
         best: Variant | None, promotions: list[Variant], comparisons: list[Any],
         metric: str, maximize: bool) -> tuple[list[Figure], dict[str, str]]:
    """Draw every figure that has data into `folder`; returns them and, for each figure
    left out, why."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    style = {"text.parse_math": False, "svg.fonttype": "path", "pdf.fonttype": 3,
             "svg.hashsalt": "scientist", "font.size": 9, "axes.spines.top": False,
             "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6",
             "figure.dpi": 100}
    made, missing = [], {}
    with matplotlib.rc_context(style):
        for name, fn in (("fitness", _fitness), ("lineage", _lineage), ("spread", _spread),
                         ("predictions", _predictions), ("curves", _curves)):
            fig = plt.figure(figsize=(6.4, 3.2))
            try:
                caption = fn(fig, run_dir=run_dir, variants=variants, labels=labels, best=best,
                             promotions=promotions, comparisons=comparisons, metric=metric,
                             maximize=maximize)
                if isinstance(caption, tuple):  # (None, why)
                    missing[name] = caption[1]
                    continue
                fig.tight_layout()
                stem = f"fig-{name}"
                fig.savefig(folder / f"{stem}.pdf", metadata={"CreationDate": None, "Producer": None})
                svg = folder / f"{stem}.svg"
                fig.savefig(svg, metadata={"Date": None})
                made.append(Figure(f"fig:{name}", stem, caption, svg.read_text()))
            finally:
                plt.close(fig)
    return made, missing


# what each figure shows, for the model's prompt; and the section it goes into
WHAT = {"fig:fitness": "fitness of every variant over the iterations, error bars, the confirmed best",
        "fig:lineage": "the tree of variants, the confirmed best's ancestry highlighted",
        "fig:spread": "per-seed values of the top variants by raw mean",
        "fig:predictions": "predicted against measured change of the fitness",
        "fig:curves": "learning curves of the baseline and the confirmed best"}
SECTION = {"fig:fitness": "results", "fig:spread": "results", "fig:curves": "results",
           "fig:lineage": "method", "fig:predictions": "discussion"}


def data(run_dir: Path) -> dict[str, Any]:
    """What `draw` needs, read from the run folder's archive."""
    from scientist.archive import Archive
    from scientist.promotion import Promotion

    archive = Archive(run_dir / "archive.sqlite")
    try:
        archive.maximize = maximize = bool(archive.get_meta("maximize", True))
        promotion = Promotion.of(archive)
        variants = archive.all()
        by_id = {v.id: v for v in variants}
        comparisons = promotion.comparisons()
        promotions = [by_id[c.challenger_id] for c in comparisons
                      if c.decision == PROMOTED and c.challenger_id in by_id]
        metric = archive.get_meta("metric") or "fitness"
        return {"variants": variants, "labels": promotion.labels(), "best": promotion.best(),
                "promotions": promotions, "comparisons": comparisons, "metric": metric,
                "maximize": maximize}
    finally:
        archive.close()


# --- the figures --------------------------------------------------------------------------

def _claim(v: Variant, labels: dict[int, str]) -> str:
    c = labels.get(v.id, RAW)
    return "raw" if c in (RAW, CONFIRMING) else "confirmed" if c == CONFIRMED else "not confirmed"


def _fitness(fig, *, variants, labels, promotions, metric, **_) -> str | tuple[None, str]:
    done = sorted((v for v in variants if v.fitness is not None), key=lambda v: (v.iteration, v.id))
    failed = [v for v in variants if v.status == FAILED]
    if not done:
        return None, "no variant has a fitness"
    ax = fig.add_subplot()
    for kind, marker in (("raw", "o"), ("not confirmed", "o"), ("confirmed", "s")):
        vs = [v for v in done if _claim(v, labels) == kind]
        if vs:
            ax.errorbar([v.iteration for v in vs], [v.fitness for v in vs],
                        yerr=[v.fitness_stderr or 0 for v in vs], fmt=marker, ms=5, capsize=3,
                        color=COLOURS[kind], mfc="white" if kind == "not confirmed" else COLOURS[kind],
                        label=kind, zorder=3)
    last = max(v.iteration for v in done + failed)
    base = done[0] if done[0].parent_id is None else None
    steps = ([(0, base.fitness)] if base else []) + [(v.iteration, v.fitness) for v in promotions]
    if steps:
        xs, ys = [x for x, _ in steps] + [last + 0.5], [y for _, y in steps] + [steps[-1][1]]
        ax.step(xs, ys, where="post", color=COLOURS["best"], lw=2, label="confirmed best", zorder=2)
    if failed:
        lo = min(v.fitness - (v.fitness_stderr or 0) for v in done)
        hi = max(v.fitness + (v.fitness_stderr or 0) for v in done)
        foot = lo - 0.12 * ((hi - lo) or abs(hi) or 1)
        ax.plot([v.iteration for v in failed], [foot] * len(failed), "x", color=COLOURS["failed"],
                ms=7, mew=2, label="failed (no fitness)", zorder=3)
    ax.set_xlabel("iteration (0: the baseline)")
    ax.set_ylabel(metric)
    ax.set_xlim(-0.5, last + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5, frameon=False)
    return (r"Fitness over the run: each evaluated variant's raw mean at the iteration that "
            r"proposed it, with error bars of $\pm 1$ standard error over its own training seeds. "
            r"\emph{Confirmed}: the baseline and every promoted variant; \emph{not confirmed}: "
            r"tested on fresh seeds and not promoted; \emph{raw}: never tested. The line is the "
            r"confirmed best, which moves only at a promotion; failed variants are crosses at the foot.")


def _lineage(fig, *, variants, best, labels, metric, **_) -> str | tuple[None, str]:
    by_id = {v.id: v for v in variants}
    shown = [v for v in variants if v.fitness is not None or v.status == FAILED]
    if len(shown) < 2:
        return None, "the run has fewer than two evaluated variants"
    with_fit = [v.fitness for v in shown if v.fitness is not None]
    if not with_fit:
        return None, "no variant has a fitness"
    lo, hi = min(with_fit), max(with_fit)
    foot = lo - 0.12 * ((hi - lo) or abs(hi) or 1)

    def y(v: Variant) -> float:
        return v.fitness if v.fitness is not None else foot

    path = set()
    v = best
    while v is not None:
        path.add(v.id)
        v = by_id.get(v.parent_id) if v.parent_id is not None else None
    ax = fig.add_subplot()
    for v in shown:
        p = by_id.get(v.parent_id) if v.parent_id is not None else None
        while p is not None and p not in shown:  # an invalid or rejected parent: skip to its own
            p = by_id.get(p.parent_id) if p.parent_id is not None else None
        if p is not None:
            on = v.id in path and p.id in path
            ax.plot([p.iteration, v.iteration], [y(p), y(v)], color=COLOURS["best"] if on else "#b0b0b0",
                    lw=2 if on else 0.8, zorder=1 + on)
    for v in shown:
        if v.fitness is None:
            ax.plot(v.iteration, foot, "x", color=COLOURS["failed"], ms=6, mew=2, zorder=3)
        else:
            kind = _claim(v, labels)
            ax.plot(v.iteration, v.fitness, "s" if kind == "confirmed" else "o", ms=5,
                    color=COLOURS[kind], mfc="white" if kind == "not confirmed" else COLOURS[kind],
                    zorder=3)
        if v.id in path or len(shown) <= 12:
            ax.annotate(v.name, (v.iteration, y(v)), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="#333333")
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return (r"The tree of variants: each evaluated variant at its iteration and raw mean, linked to "
            r"its parent; the confirmed best's ancestry is the thick line. Squares are confirmed, "
            r"hollow circles tested and not confirmed, filled circles raw; crosses at the foot failed.")


def _spread(fig, *, variants, labels, best, metric, maximize, **_) -> str | tuple[None, str]:
    done = [v for v in variants if v.fitness is not None and v.result is not None and v.result.values
            and v.integrity == CLEAN]  # the report's top table: a suspicious variant is no candidate
    if not done:
        return None, "no variant has per-seed values"
    top = sorted(done, key=lambda v: (-v.fitness if maximize else v.fitness, v.id))[:TOP_SPREAD]
    ax = fig.add_subplot()
    for i, v in enumerate(top):
        vals = v.result.values
        kind = "best" if best is not None and v.id == best.id else _claim(v, labels)
        jitter = [(k - (len(vals) - 1) / 2) * 0.06 for k in range(len(vals))]
        ax.scatter([i + j for j in jitter], vals, s=14, color=COLOURS[kind], alpha=0.75, zorder=3)
        ax.errorbar([i + 0.28], [v.fitness], yerr=[v.fitness_stderr or 0], fmt="_", ms=12, capsize=3,
                    color="black", zorder=4)
    ax.set_xticks(range(len(top)))
    ax.set_xticklabels([f"{v.name}\n{'best' if best is not None and v.id == best.id else _claim(v, labels)}"
                        for v in top], fontsize=7)
    ax.set_ylabel(metric)
    ax.grid(axis="x", visible=False)
    return (r"The spread between training seeds of the top variants by raw mean: one dot per "
            r"training seed (colour: the variant's claim; the confirmed best in orange), and the "
            r"mean with $\pm 1$ standard error beside it. Means of two seeds rank by luck as much "
            r"as by merit; this is why leads are confirmed on fresh seeds.")


def _predictions(fig, *, variants, maximize, metric, **_) -> str | tuple[None, str]:
    by_id = {v.id: v for v in variants}
    pts = [(v.predicted, measured_delta(v, by_id), v.name) for v in variants
           if v.parent_id is not None and v.predicted is not None]
    pts = [(p, m, n) for p, m, n in pts if m is not None]
    if not pts:
        return None, "no proposal stated a numerical prediction that was then measured"
    ax = fig.add_subplot()
    ps, ms = [p for p, _, _ in pts], [m for _, m, _ in pts]
    lim = max(max(abs(x) for x in ps + ms), 1e-12) * 1.15
    ax.plot([-lim, lim], [-lim, lim], color="#b0b0b0", lw=1, ls="--", label="prediction = outcome")
    ax.axhline(0, color="#808080", lw=0.6)
    ax.axvline(0, color="#808080", lw=0.6)
    good = [(p, m) for p, m, _ in pts if (m > 0) == maximize and m != 0]
    bad = [(p, m) for p, m, _ in pts if not ((m > 0) == maximize and m != 0)]
    for group, colour, lab in ((good, COLOURS["confirmed"], "improved on its parent"),
                               (bad, COLOURS["failed"], "did not")):
        if group:
            ax.scatter([p for p, _ in group], [m for _, m in group], s=22, color=colour, label=lab, zorder=3)
    for p, m, n in pts[:15]:
        ax.annotate(n, (p, m), textcoords="offset points", xytext=(3, 3), fontsize=6.5, color="#444444")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel(f"predicted change of {metric}")
    ax.set_ylabel(f"measured change of {metric}")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return (r"Predicted against measured effect: each proposal's stated prediction of the change "
            r"of the fitness against its parent, and the change measured (raw means). On the "
            r"dashed diagonal a prediction was exact; in the upper right and lower left quadrants "
            r"its direction was right.")


def _curves(fig, *, run_dir, variants, best, metric, **_) -> str | tuple[None, str]:
    base = next((v for v in variants if v.parent_id is None and v.fitness is not None), None)
    shown = [v for v in (base, best) if v is not None]
    if best is not None and base is not None and best.id == base.id:
        shown = [base]
    if not shown:
        return None, "neither the baseline nor a confirmed best has a fitness"
    judged = {v.id: _metric_curves(v) for v in shown}
    if any(judged.values()):
        return _draw_metric_curves(fig, shown, judged, best)
    logs = {v.id: _train_logs(run_dir, v) for v in shown}
    keys = _log_keys(logs)
    if not keys:
        return None, ("the judge's metrics carry no learning curve (metrics named NAME_at_T) and "
                      "the training code wrote no train_log.json with numeric series")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for v in shown:
            series = [(log["step"], log[key]) for log in logs[v.id] if key in log]
            if not series:
                continue
            n = min(len(s) for s, _ in series)
            steps = series[0][0][:n]
            ys = [statistics.fmean(vals[i] for _, vals in series) for i in range(n)]
            is_best = best is not None and v.id == best.id and v is not base
            colour = COLOURS["best"] if is_best else COLOURS["baseline"]
            ax.plot(steps, ys, color=colour, lw=1.4,
                    label=f"{v.name} ({'baseline' if v is base else 'confirmed best'}, {len(series)} seeds)")
        ax.set_title(key, fontsize=8)
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7, frameon=False)
    return (r"Learning curves of the baseline and the confirmed best during training, as the "
            r"training code itself logged them (\texttt{train\_log.json}, mean over training seeds). "
            r"These are the variant's own report of its training, not scored by the judge.")


def _metric_curves(v: Variant) -> dict[str, list[tuple[int, float, float | None]]]:
    """`NAME_at_T` metrics of v: for each NAME, (T, mean, s.e.) over its training seeds."""
    import re

    per: dict[str, dict[int, list[float]]] = {}
    for s in v.result.seeds if v.result else []:
        if not s.ok:
            continue
        for k, x in s.metrics.items():
            m = re.fullmatch(r"(.+)_at_(\d+)", k)
            if m and isinstance(x, (int, float)) and math.isfinite(x):
                per.setdefault(m[1], {}).setdefault(int(m[2]), []).append(float(x))
    out = {}
    for name, by_t in per.items():
        if len(by_t) >= 3:
            out[name] = [(t, statistics.fmean(xs), statistics.stdev(xs) / math.sqrt(len(xs))
                          if len(xs) > 1 else None) for t, xs in sorted(by_t.items())]
    return out


def _draw_metric_curves(fig, shown, judged, best) -> str:
    names = sorted({n for c in judged.values() for n in c})[:MAX_CURVES]
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for v in shown:
            pts = judged[v.id].get(name)
            if not pts:
                continue
            is_best = best is not None and v.id == best.id and v.parent_id is not None
            ax.errorbar([t for t, _, _ in pts], [m for _, m, _ in pts], yerr=[s or 0 for _, _, s in pts],
                        marker="o", ms=3, capsize=2, lw=1.2,
                        color=COLOURS["best"] if is_best else COLOURS["baseline"],
                        label=f"{v.name} ({'confirmed best' if is_best else 'baseline'})")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("T")
    axes[0].legend(fontsize=7, frameon=False)
    return (r"Learning curves measured by the judge (its metrics \texttt{NAME\_at\_T}: the metric "
            r"after $T$ examples), for the baseline and the confirmed best, mean with $\pm 1$ "
            r"standard error over training seeds.")


def _train_logs(run_dir: Path, v: Variant) -> list[dict[str, list[float]]]:
    """The numeric series of each training seed's train_log.json (the variant's own output:
    read defensively, size-limited, non-numbers dropped)."""
    out = []
    for path in sorted((run_dir / "variants" / v.name).glob("seed-*/out/train_log.json")):
        try:
            if path.is_symlink() or path.stat().st_size > MAX_LOG_BYTES:
                continue
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("step"), list):
            continue
        series = {k: x for k, x in data.items() if isinstance(x, list) and len(x) >= 2
                  and all(isinstance(e, (int, float)) and not isinstance(e, bool)
                          and math.isfinite(e) for e in x)}
        if "step" in series:
            out.append(series)
    return out


def _log_keys(logs: dict[int, list[dict[str, list[float]]]]) -> list[str]:
    common = None
    for runs in logs.values():
        for log in runs:
            keys = {k for k, x in log.items() if k != "step" and len(x) == len(log["step"])
                    and not k.startswith("elapsed")}
            common = keys if common is None else common & keys
    return sorted(common or [])[:MAX_CURVES]


__all__ = ["draw", "Figure", "PROMOTED", "UNCONFIRMED"]
