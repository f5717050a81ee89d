"""What the pages show, read from run folders: plain dicts for the templates.

Every read opens the run's archive for the length of one request (SQLite in WAL mode:
the run keeps writing meanwhile) and closes it. Texts that come from a step (log tails,
reasons, events) pass through the redactor again before they are shown; the run's secret
evaluation seed, its LLM transcript and its configuration's key names are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from scientist import approvals
from scientist.archive import Archive
from scientist.config import approval_mode
from scientist.cli import UNCONFINED, all_runs, in_use, status_of  # noqa: F401 (all_runs: the app)
from scientist.notebook import measured_delta
from scientist.promotion import CONFIRMED, PROMOTED, RAW, Promotion
from scientist.redaction import Redactor, redact
from scientist.report import duration
from scientist.run import ARCHIVE, CONFIG, SECRET, VARIANTS, read_secret
from scientist.variant import FAILED, Variant

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LOG_FILES = ("train.out", "train.err", "learner.out", "learner.err", "evaluate.out",
             "evaluate.err")
MAX_LOG_BYTES = 2_000_000  # a log is shown from its end beyond this
EVENTS_SHOWN = 200


class NotFound(Exception):
    """A run, variant, seed or file that does not exist (the app answers 404)."""


def version(run_dirs: list[Path]) -> str:
    """A tag that changes whenever what the live fragments show may have: the archive and
    its write-ahead log, the approval queue, the report folder, whether the run's process
    holds its lock. Unchanged: the page's fragment is answered 304 without being drawn."""
    h = hashlib.sha1()
    for d in run_dirs:
        h.update(d.name.encode())
        for f in (d / ARCHIVE, d / f"{ARCHIVE}-wal", d / approvals.FOLDER, d / "report"):
            try:
                st = f.stat()
                h.update(f"{st.st_mtime_ns}:{st.st_size};".encode())
            except OSError:
                h.update(b"-;")
        h.update(b"L" if in_use(d) else b"-")
    return h.hexdigest()[:20]


def run_folder(base: Path, name: str) -> Path:
    """The folder of run `name` directly under `base`; never anything else (no `..`, no
    absolute path, no symbolic link out of `base`)."""
    if not RUN_NAME.match(name) or name in (".", ".."):
        raise NotFound(name)
    base = base.resolve()
    d = (base / name)
    if d.is_symlink() or not (d / CONFIG).is_file() or not (d / ARCHIVE).is_file():
        raise NotFound(name)
    if d.resolve().parent != base:
        raise NotFound(name)
    return d


def redactor(run_dir: Path, cfg: dict[str, Any] | None = None) -> Redactor:
    """What the run itself keeps out of everything it shows: this environment's secrets, the
    run's secret evaluation seed and the value of its API key's variable, if set here."""
    cfg = _config(run_dir) if cfg is None else cfg
    extra = []
    try:
        seed = read_secret(run_dir / SECRET)
    except Exception:  # a damaged file: nothing to add, nothing shown
        seed = None
    if seed is not None:
        extra.append(str(seed))
    key_env = cfg.get("api_key_env")
    if isinstance(key_env, str) and key_env and os.environ.get(key_env):
        extra.append(os.environ[key_env])
    return Redactor.from_environment(extra)


def pending(run_dir: Path) -> list[approvals.Request]:
    """The run's proposals waiting for a decision, their texts redacted again."""
    rd = redactor(run_dir)
    return [replace(r, label=rd.text(r.label), hypothesis=rd.text(r.hypothesis),
                    rationale=rd.text(r.rationale), prediction=rd.text(r.prediction),
                    diff=rd.text(r.diff)) for r in approvals.requests(run_dir)]


@contextmanager
def opened(run_dir: Path) -> Iterator[Archive]:
    a = Archive(run_dir / ARCHIVE)
    try:
        a.maximize = bool(a.get_meta("maximize", True))
        yield a
    finally:
        a.close()


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def fitness_text(v: Variant | None) -> str:
    if v is None or v.fitness is None:
        return "—"
    return f"{v.fitness:.4f}" + (f" ± {v.fitness_stderr:.4f}" if v.fitness_stderr is not None else "")


def claim_of(v: Variant, best: Variant | None, labels: dict[int, str]) -> str:
    if best is not None and v.id == best.id:
        return "best"
    return labels.get(v.id, RAW) if v.fitness is not None else "—"


def runs(base: Path) -> list[dict[str, Any]]:
    """The runs page: one row per run folder under `base`, newest first."""
    rows = []
    for d in all_runs(base):
        if not RUN_NAME.match(d.name) or d.is_symlink():
            continue
        cfg = _config(d)
        try:
            with opened(d) as a:
                vs = a.all()
                promotion = Promotion.of(a)
                best = promotion.best()
                base_v = next((v for v in vs if v.id == 0), None)
                usage = a.llm_usage()
                rows.append(dict(
                    name=d.name, seed=Path(str(cfg.get("seed", "?"))).name,
                    scale=cfg.get("scale", "?"), status=status_of(d, a), variants=len(vs),
                    failed=sum(v.status in ("failed", "invalid") for v in vs),
                    running=sum(v.status == "running" for v in vs),
                    best=fitness_text(best), best_name=best.name if best else "",
                    baseline=fitness_text(base_v), metric=a.get_meta("metric", "fitness"),
                    cost=usage.cost, calls=usage.calls, tokens=usage.tokens,
                    elapsed=duration(a.get_meta("elapsed_seconds", 0.0)),
                    pending=len(approvals.requests(d)), started=a.get_meta("created_at"),
                    mtime=(d / ARCHIVE).stat().st_mtime))
        except Exception as e:  # a broken run folder is shown as such, not a 500 for all
            rows.append(dict(name=d.name, seed=Path(str(cfg.get("seed", "?"))).name,
                             scale=cfg.get("scale", "?"), status=f"unreadable: {redact(str(e))[:200]}",
                             variants=0, failed=0, running=0, best="—", best_name="", baseline="—",
                             metric="", cost=0.0, calls=0, tokens=0, elapsed="—", pending=0,
                             started=None, mtime=0.0))
    return sorted(rows, key=lambda r: r["mtime"], reverse=True)


def run(run_dir: Path) -> dict[str, Any]:
    """The run page: summary, variants, charts' data, events, LLM spend, report files."""
    cfg = _config(run_dir)
    redact = redactor(run_dir, cfg).text
    with opened(run_dir) as a:
        variants = a.all()
        promotion = Promotion.of(a)
        best = promotion.best()
        labels = promotion.labels()
        metric = a.get_meta("metric", "fitness")
        noise = promotion.noise()
        usage = a.llm_usage()
        comparisons = promotion.comparisons()
        promoted = [c.challenger_id for c in comparisons if c.decision == PROMOTED]
        events = a.events()[-EVENTS_SHOWN:]
        by_id = {v.id: v for v in variants}
        rows = [dict(id=v.id, name=v.name, parent=("—" if v.parent_id is None else f"v{v.parent_id:04d}"),
                     parent_id=v.parent_id, iteration=v.iteration, status=v.status,
                     integrity=v.integrity if v.status in ("done", "failed") else "—",
                     fitness=v.fitness, stderr=v.fitness_stderr, n=v.fitness_n,
                     fitness_text=fitness_text(v), claim=claim_of(v, best, labels),
                     predicted=v.predicted, measured=measured_delta(v, by_id),
                     cost=a.llm_usage(v.iteration).cost if v.iteration else 0.0,
                     text=redact(v.error if v.status != "done" and v.error else
                                 v.hypothesis or "baseline"))
                for v in variants]
        top = sorted((r for r in rows if r["fitness"] is not None and r["integrity"] != "violated"),
                     key=lambda r: r["fitness"], reverse=bool(a.maximize))[:10]
        summary = dict(
            name=run_dir.name, title=a.get_meta("seed_title", ""), status=status_of(run_dir, a),
            seed=Path(str(cfg.get("seed", "?"))).name, scale=cfg.get("scale", "?"),
            sandbox=a.get_meta("sandbox", cfg.get("sandbox", "?")),
            unconfined=a.get_meta("sandbox") in UNCONFINED,
            proposer=redact(str(a.get_meta("proposer_description", "?"))),
            approval=approval_mode(cfg.get("approve", False)),
            elapsed=duration(a.get_meta("elapsed_seconds", 0.0)),
            metric=metric, maximize=bool(a.maximize), best=fitness_text(best),
            best_name=best.name if best else "", best_id=best.id if best else None,
            claim=redact(promotion.claim(metric)),
            noise=(f"sd {noise.sd:.4f} between the baseline's {noise.n} training seeds; smallest "
                   f"improvement the run can confirm ≈ {noise.detectable:.4f}") if noise else "",
            llm=dict(calls=usage.calls, tokens=usage.tokens, cost=usage.cost,
                     prompt=usage.prompt_tokens, completion=usage.completion_tokens,
                     unpriced=usage.unpriced_calls),
            seq=a.seq())
    return dict(summary=summary, variants=rows, top=top, promoted=promoted,
                events=[dict(at=e["at"], kind=e["kind"], text=redact(e["text"]),
                             variant=e["variant_id"]) for e in reversed(events)],
                reports=report_files(run_dir), pending=pending(run_dir))


REPORTS = {"pdf": ("report/report.pdf", "application/pdf"),
           "html": ("report/report.html", "text/html; charset=utf-8"),
           "tex": ("report/report.tex", "text/plain; charset=utf-8")}


def report_files(run_dir: Path) -> list[str]:
    return [k for k, (rel, _) in REPORTS.items() if (run_dir / rel).is_file()]


def variant(run_dir: Path, vid: int) -> dict[str, Any]:
    """The variant page."""
    redact = redactor(run_dir).text
    with opened(run_dir) as a:
        try:
            v = a.get(vid)
        except KeyError:
            raise NotFound(f"v{vid:04d}") from None
        promotion = Promotion.of(a)
        best = promotion.best()
        labels = promotion.labels()
        metric = a.get_meta("metric", "fitness")
        by_id = {x.id: x for x in a.all()}
        comps = []
        for c in promotion.comparisons(None):
            if v.id not in (c.challenger_id, c.incumbent_id):
                continue
            t = c.test(promotion.maximize)
            ca, cb = c.values()
            kind = "sealed test" if c.kind == "sealed" else f"confirmation (attempt {c.attempt})"
            comps.append(dict(kind=kind,
                              challenger=c.challenger_id, incumbent=c.incumbent_id, seeds=c.seeds,
                              decision=c.decision or "in progress", reason=redact(c.reason),
                              a=ca, b=cb, mean=t.mean if ca and cb else None,
                              se=t.se if ca and cb else None, p=t.p if ca and cb else None,
                              interval=t.interval() if ca and cb and t.se is not None else ""))
        seeds = []
        for s in (v.result.seeds if v.result else []):
            folder = run_dir / VARIANTS / v.name / f"seed-{s.seed}"
            seeds.append(dict(seed=s.seed, status=s.status, reason=redact(s.reason),
                              train=s.train_seconds, eval=s.eval_seconds, peak=s.peak_rss_mb,
                              metrics=s.metrics, stdout=redact(s.stdout_tail),
                              stderr=redact(s.stderr_tail),
                              logs=[f for f in LOG_FILES if (folder / f).is_file()]))
        used = a.llm_usage(v.iteration) if v.iteration else None
        info = dict(
            id=v.id, name=v.name, parent_id=v.parent_id,
            parent=("—" if v.parent_id is None else f"v{v.parent_id:04d}"),
            children=[x.id for x in by_id.values() if x.parent_id == v.id],
            iteration=v.iteration, status=v.status, proposer=v.proposer, commit=v.commit or "",
            hypothesis=redact(v.hypothesis), rationale=redact(v.rationale),
            prediction=redact(v.prediction), error=redact(v.error), integrity=v.integrity,
            integrity_reason=redact(v.integrity_reason), fitness=fitness_text(v),
            n=v.fitness_n, claim=claim_of(v, best, labels), confirmed=labels.get(v.id) == CONFIRMED,
            predicted=v.predicted, measured=measured_delta(v, by_id),
            metrics={k: x for k, x in (v.metrics or {}).items()}, metric=metric,
            diff=redact(v.diff), comparisons=comps, seeds=seeds,
            llm=dict(calls=used.calls, tokens=used.tokens, cost=used.cost) if used and used.calls else None,
            events=[dict(at=e["at"], kind=e["kind"], text=redact(e["text"])) for e in a.events(v.id)],
            created=v.created_at, finished=v.finished_at, failed=v.status == FAILED)
    return dict(run=run_dir.name, v=info)


def log_file(run_dir: Path, vid: int, seed: int, name: str) -> str:
    """One of a seed's logs, redacted; only the files in LOG_FILES, only inside the run."""
    redact = redactor(run_dir).text
    if name not in LOG_FILES or vid < 0 or seed < 0:
        raise NotFound(name)
    folder = (run_dir / VARIANTS / f"v{vid:04d}" / f"seed-{seed}")
    path = folder / name
    if not path.is_file() or path.is_symlink():
        raise NotFound(name)
    if not path.resolve().is_relative_to(run_dir.resolve()):
        raise NotFound(name)
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - MAX_LOG_BYTES))
        text = f.read().decode("utf-8", errors="replace")
    head = f"[… the first {size - MAX_LOG_BYTES:,} bytes are not shown]\n" if size > MAX_LOG_BYTES else ""
    return redact(head + text)
