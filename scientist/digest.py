"""The digest: a run folder as one JSON object holding every number the report's text may use.

The model that writes the report's sections sees only this (plus the sections it wrote
before), and the grounding check (`scientist.grounding`) accepts a number in its text
only if it is one of the digest's values, within rounding. The templated sections are
rendered from it too. So every number in the report's prose is traceable to the archive:
`report/digest.json` is written beside the report.

Values are rounded to 6 significant digits. Nothing in it changes when the same run
folder is read again (no clock), so the prompts built from it repeat exactly and a second
`scientist report` is answered from the LLM cache.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import git

from scientist.archive import Archive
from scientist.notebook import Notebook, measured_delta, reference
from scientist.promotion import CONFIRMED, IMPROVED, PROMOTED, RAW, SEALED, Promotion
from scientist.references import Reference, parse_references
from scientist.stats import CONFIDENCE, POWER
from scientist.variant import CLEAN, DONE, FAILED, INVALID, REJECTED, Variant
from scientist.workspace import Workspace

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOP = 8  # variants in the digest's top list
DIFF_LINES = 120  # lines of the best variant's diff the digest carries
NOTEBOOK_CHARS = 6000
EXAMPLES = 5  # failed variants described
LINEAGE = 24  # steps of the best's lineage (the first and the last ones of a longer one)
CONFIRMATIONS = 30  # the latest confirmations (a long run's prompt stays bounded)


def r6(x: float | None) -> float | None:
    """A value as the digest holds it: 6 significant digits (None and non-finite kept)."""
    if x is None or not math.isfinite(x):
        return x
    return float(f"{x:.6g}")


def build(run_dir: Path) -> dict[str, Any]:
    """The digest of `run_dir` (see the module docstring)."""
    run_dir = Path(run_dir)
    config = _json(run_dir / "config.json")
    archive = Archive(run_dir / "archive.sqlite")
    try:
        archive.maximize = maximize = bool(archive.get_meta("maximize", True))
        variants = archive.all()
        events = archive.events()
        promotion = Promotion.of(archive)
        best, labels = promotion.best(), promotion.labels()
        baseline = promotion.baseline()
        metric = archive.get_meta("metric") or (baseline.result.metric if baseline and baseline.result
                                                else "fitness")
        comparisons = promotion.comparisons()
        sealed = promotion.sealed()
        noise = promotion.noise()
        notebook = Notebook.from_archive(archive, metric).render(NOTEBOOK_CHARS // 4)
        meta = {k: archive.get_meta(k) for k in ("seed_name", "seed_title", "seed_summary", "status",
                                                 "elapsed_seconds", "proposer_description",
                                                 "proposer_uses_llm", "judge_learner")}
        lineage = archive.lineage(best.id) if best else []
        claim = promotion.claim(metric)
        design = promotion.design
        sealed_runs = sum(c.evaluations for c in promotion.comparisons(SEALED))
        confirm_minutes = r6(promotion.seconds() / 60)
    finally:
        archive.close()
    manifest = _manifest(run_dir, baseline)
    refs = parse_references(manifest.get("references") or [])
    by_id = {v.id: v for v in variants}
    tried = [v for v in variants if v.parent_id is not None]
    status = Counter(v.status for v in tried)
    improved = (best is not None and baseline is not None and best.id != baseline.id
                and (sealed is None or sealed.decision == IMPROVED))
    return {
        "run": {
            "id": config.get("run_id") or run_dir.name, "seed": meta["seed_name"] or "",
            "scale": config.get("scale"), "status": meta["status"],
            "proposer": meta["proposer_description"] or config.get("proposer"),
            "language_model": config.get("model") if meta["proposer_uses_llm"] else None,
            "selection": config.get("selection"), "sandbox": config.get("sandbox"),
            "iterations_planned": config.get("iterations"),
            "time_budget_minutes": r6(config["time_budget"] / 60) if config.get("time_budget") else None,
            "wall_minutes": r6(meta["elapsed_seconds"] / 60) if meta["elapsed_seconds"] else None,
            "training_seeds_per_variant": _training_seeds(variants),
            "baseline_seeds": baseline.fitness_n if baseline else 0,
            "proposals": len(tried), "evaluated": status[DONE], "failed": status[FAILED],
            "rejected_by_human": status[REJECTED], "invalid": status[INVALID],
            "judge_learner_split": meta["judge_learner"],
        },
        "seed": {"title": meta["seed_title"] or manifest.get("title", ""),
                 "summary": meta["seed_summary"] or manifest.get("summary", ""),
                 "goal": " ".join(str(manifest.get("goal", "")).split()),
                 "references": [{"key": r.key, "reference": r.plain()} for r in refs]},
        "metric": {"name": metric, "higher_is_better": maximize},
        "baseline": _variant(baseline) if baseline else None,
        "reported_baselines": _reported(baseline, best, (manifest.get("fitness") or {}).get("baselines")),
        "confirmed_best": None if best is None else {
            **_variant(best), "is_the_baseline": baseline is not None and best.id == baseline.id,
            "steps_from_baseline": max(0, len(lineage) - 1),
            "raw_difference_to_baseline": r6(best.fitness - baseline.fitness)
            if baseline is not None and best.fitness is not None and baseline.fitness is not None else None},
        "improvement_confirmed": improved,
        "claim": claim,
        "design": {"alpha": design.alpha, "max_confirm_seeds": design.max_seeds,
                   "looks_at_pairs": list(design.looks), "first_attempt_level_per_look": r6(design.level(1)),
                   "screen_standard_errors": design.screen,
                   "confidence_level_percent": round(CONFIDENCE * 100), "power_percent": round(POWER * 100)},
        "noise_floor": None if noise is None else {
            "sd_between_baseline_seeds": r6(noise.sd), "baseline_seeds": noise.n,
            "smallest_confirmable_improvement": r6(noise.detectable)},
        "confirmations": _capped([_comparison(c, maximize) for c in comparisons], CONFIRMATIONS),
        "confirmation_attempts": len(comparisons),
        "untested_leads": sum(e["kind"] == "untested" for e in events),
        "sealed_test": None if sealed is None else _comparison(sealed, maximize),
        "cost": {"training_runs_exploring": sum(len(v.result.seeds) for v in variants if v.result),
                 "training_runs_confirming": sum(c.evaluations for c in comparisons),
                 "training_runs_sealed_test": sealed_runs,
                 "confirmation_minutes": confirm_minutes},
        "lineage_of_confirmed_best": _capped([_step(v, by_id) for v in lineage], LINEAGE),
        "diff_of_confirmed_best": _diff(run_dir / "repo", baseline, best),
        "top_variants_by_raw_mean": [
            {**_variant(v, brief=True), "claim": "confirmed best" if best and v.id == best.id
             else labels.get(v.id, RAW)} for v in _top(variants, maximize)],
        "predictions": _predictions(variants, by_id, maximize),
        "failures": _failures(variants),
        "notebook": notebook,
    }


def references(run_dir: Path) -> list[Reference]:
    """The seed's references of a run (from the baseline's seed.toml in the run's repo)."""
    archive = Archive(Path(run_dir) / "archive.sqlite")
    try:
        baseline = Promotion.of(archive).baseline()
    finally:
        archive.close()
    return parse_references(_manifest(Path(run_dir), baseline).get("references") or [])


def values(digest: Any) -> list[float]:
    """Every number the digest holds: its numeric values and the numbers written in its texts."""
    out: list[float] = []
    if isinstance(digest, bool) or digest is None:
        return out
    if isinstance(digest, (int, float)):
        return [float(digest)] if math.isfinite(digest) else []
    if isinstance(digest, str):
        from scientist.grounding import numbers_in  # the same reader as the check's

        return [n.value for n in numbers_in(digest, plain=True)]
    if isinstance(digest, dict):
        for v in digest.values():
            out += values(v)
    elif isinstance(digest, (list, tuple)):
        for v in digest:
            out += values(v)
    return out


def dumps(digest: dict[str, Any]) -> str:
    return json.dumps(digest, indent=1, ensure_ascii=False)


# --- parts ---------------------------------------------------------------------------------

def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _manifest(run_dir: Path, baseline: Variant | None) -> dict[str, Any]:
    """The seed.toml the run began with (the baseline's commit), or the run's exported seed."""
    text = None
    if baseline is not None:
        try:
            text = Workspace(run_dir / "repo").read(baseline.commit or baseline.name,
                                                    ["seed.toml"]).get("seed.toml")
        except (git.GitError, OSError, ValueError):
            text = None
    if text is None and (run_dir / "seed" / "seed.toml").is_file():
        text = (run_dir / "seed" / "seed.toml").read_text()
    try:
        return tomllib.loads(text or "")
    except tomllib.TOMLDecodeError:
        return {}


def _training_seeds(variants: list[Variant]) -> int | None:
    ns = Counter(v.fitness_n for v in variants if v.parent_id is not None and v.fitness_n)
    return ns.most_common(1)[0][0] if ns else None


def _per_seed(v: Variant) -> list[float]:
    return [r6(x) for x in v.result.values] if v.result else []


def _variant(v: Variant, brief: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"name": v.name, "parent": f"v{v.parent_id:04d}" if v.parent_id is not None else None,
                         "iteration": v.iteration, "status": v.status, "mean": r6(v.fitness),
                         "standard_error": r6(v.fitness_stderr), "seeds": v.fitness_n,
                         "integrity": v.integrity}
    d["hypothesis"] = _short(v.hypothesis, 300)  # "" for the baseline
    if not brief:
        d["per_seed"] = _per_seed(v)
        d["other_metrics_mean"] = {k: r6(x) for k, x in sorted(v.metrics.items())
                                   if v.result is None or k != v.result.metric}
    return d


def _reported(baseline: Variant | None, best: Variant | None, declared: Any) -> list[dict[str, Any]]:
    """The judge's own baselines, as the seed declares them in seed.toml (`[fitness]
    baselines = { "online Adam" = "adam_online_acc" }`: a name and the metric holding its
    score on the same data), with their means in the baseline's and the best's runs."""
    out = []
    if baseline is None or not isinstance(declared, dict):
        return out
    for name, key in declared.items():
        if isinstance(key, str) and key in baseline.metrics:
            out.append({"method": str(name), "metric": key, "mean_with_baseline": r6(baseline.metrics[key]),
                        "mean_with_confirmed_best": r6(best.metrics.get(key)) if best else None})
    return out


def _comparison(c: Any, maximize: bool) -> dict[str, Any]:
    t = c.test(maximize)
    return {"challenger": f"v{c.challenger_id:04d}", "incumbent": f"v{c.incumbent_id:04d}",
            "attempt": c.attempt, "level": r6(c.level), "pairs": t.n,
            "mean_difference": r6(t.mean) if t.n else None, "standard_error": r6(t.se),
            "ci95_low": r6(t.low), "ci95_high": r6(t.high), "p_one_sided": r6(t.p) if t.n >= 2 else None,
            "decision": c.decision or "in progress", "reason": _short(c.reason, 200)}


def _step(v: Variant, by_id: dict[int, Variant]) -> dict[str, Any]:
    d = _variant(v, brief=True)
    if v.parent_id is not None:
        d.update(rationale=_short(v.rationale, 400), prediction=_short(v.prediction, 200),
                 predicted_change=r6(v.predicted), measured_change=r6(measured_delta(v, by_id)))
    return d


def _top(variants: list[Variant], maximize: bool) -> list[Variant]:
    """By raw mean, as the report's table ranks them: clean variants only (a suspicious or
    violated one is never a candidate, `scientist.integrity`)."""
    done = [v for v in variants if v.fitness is not None and v.integrity == CLEAN]
    return sorted(done, key=lambda v: (-v.fitness if maximize else v.fitness, v.id))[:TOP]


def _predictions(variants: list[Variant], by_id: dict[int, Variant], maximize: bool) -> dict[str, Any] | None:
    pairs = []
    for v in variants:
        d = measured_delta(v, by_id) if v.parent_id is not None else None
        if v.predicted is not None and d is not None:
            pairs.append((v.predicted, d))
    if not pairs:
        return None
    nonzero = [(p, m) for p, m in pairs if p and m]
    ps, ms = [p for p, _ in pairs], [m for _, m in pairs]
    corr = (r6(statistics.correlation(ps, ms)) if len(pairs) >= 3 and len(set(ps)) > 1
            and len(set(ms)) > 1 else None)
    return {"evaluated_predictions": len(pairs),
            "direction_right": sum((p > 0) == (m > 0) for p, m in nonzero), "with_a_direction": len(nonzero),
            "mean_absolute_error": r6(statistics.fmean(abs(p - m) for p, m in pairs)),
            "mean_predicted_change": r6(statistics.fmean(ps)),
            "mean_measured_change": r6(statistics.fmean(ms)),
            "correlation": corr, "improvements": sum((m > 0) == maximize and m != 0 for m in ms)}


def _failures(variants: list[Variant]) -> dict[str, Any]:
    bad = [v for v in variants if v.status in (FAILED, INVALID)]
    reasons: Counter[str] = Counter()
    for v in bad:
        if v.status == INVALID:
            reasons["edits could not be applied"] += 1
        elif v.result is not None:
            for s in sorted({s.status for s in v.result.seeds if not s.ok}):
                reasons[s] += 1
        else:
            reasons["error"] += 1
    return {"total": len(bad), "by_reason": dict(reasons.most_common()),
            "examples": [{"name": v.name, "status": v.status, "hypothesis": _short(v.hypothesis, 200),
                          "error": _short(v.error, 300)} for v in bad[:EXAMPLES]]}


def _diff(repo: Path, baseline: Variant | None, best: Variant | None) -> str:
    if best is None or baseline is None or best.id == baseline.id:
        return ""
    try:
        raw = Workspace(repo).diff(baseline.commit or baseline.name, best.commit or best.name)
    except (git.GitError, OSError):
        return ""
    lines = raw.splitlines()
    return "\n".join(lines[:DIFF_LINES]) + (f"\n... ({len(lines) - DIFF_LINES} more lines)"
                                            if len(lines) > DIFF_LINES else "")


def _capped(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """At most n items: the first and the last n - 1, with a marker of what was left out."""
    if len(items) <= n:
        return items
    return [items[0], {"left_out": len(items) - n}] + items[-(n - 1):]


def _short(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


__all__ = ["build", "values", "references", "dumps", "r6", "reference", "CONFIRMED", "PROMOTED"]
