"""Command line: `scientist run | resume | runs | show | report | review | sandbox build | doctor`."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from scientist.archive import Archive
from scientist.config import DEFAULT_RUNS_DIR, RunConfig, env_settings, load_config_file, parse_duration
from scientist.console import hms, shorten
from scientist.errors import ScientistError
from scientist.llm import short_count
from scientist.notebook import measured_delta
from scientist.promotion import NOT_CONFIRMED, PROMOTED, Promotion
from scientist.run import ARCHIVE, CONFIG, VARIANTS, Run
from scientist.redaction import redact
from scientist.sandbox import UNCONFINED, UNCONFINED_WARNING, check_config
from scientist.variant import Variant

console = Console(highlight=False, soft_wrap=True)  # log lines stay whole in files and CI logs


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ScientistError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except KeyboardInterrupt:
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scientist", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="start a run on a seed")
    r.add_argument("--seed", help="built-in seed name (e.g. vsml) or path to a seed folder")
    r.add_argument("--config", help="TOML file with run settings (flags override it)")
    r.add_argument("--run-id", help="name of the run folder (default: timestamp-seed)")
    _budget_flags(r)
    r.add_argument("--scale", help="seed scale: test, smoke (default) or full")
    r.add_argument("--selection", choices=["fme", "greedy", "uniform"],
                   help="parent selection policy (default fme: fitness-monotonic)")
    r.add_argument("--proposer", choices=["llm", "offline"],
                   help="what proposes edits (default: llm if a model is configured, else offline)")
    r.add_argument("--model", help="LLM as litellm names it, e.g. gpt-4o, anthropic/claude-sonnet-4-5, "
                                   "openai/NAME for a local server (env: SCIENTIST_MODEL)")
    r.add_argument("--api-base", help="base URL of an OpenAI-compatible server, e.g. "
                                      "http://localhost:11434/v1 (env: SCIENTIST_API_BASE)")
    r.add_argument("--api-key-env", help="name of the environment variable that holds the API key "
                                         "(default: the provider's own, e.g. OPENAI_API_KEY)")
    r.add_argument("--temperature", type=float, help="LLM sampling temperature (default 0.7)")
    r.add_argument("--max-repairs", type=int,
                   help="repair attempts in a row for a variant that crashed or timed out (default 2)")
    r.add_argument("--sandbox", choices=["local", "docker", "process"],
                   help="where variants run: local (default; bubblewrap: namespaces, read-only "
                        "code, no network), docker (a container per step), or process "
                        "(unconfined subprocesses; only where bubblewrap cannot run)")
    r.add_argument("--gpus", help="docker sandbox: GPU ids for the steps, e.g. 0,1 (default: CPU)")
    r.add_argument("--gpus-per-step", type=int,
                   help="docker sandbox: GPUs per running step (default 1)")
    r.add_argument("--alpha", type=float,
                   help="claims: the run's family-wise error rate over its promotions (default 0.05)")
    r.add_argument("--noise-seeds", type=int,
                   help="training seeds of the baseline, whose spread is the noise floor "
                        "(default: the scale's, max(4, 2 x training seeds))")
    r.add_argument("--max-confirm-seeds", type=int,
                   help="most fresh paired seeds one confirmation uses (default 8)")
    r.add_argument("--executor", choices=["local", "slurm"],
                   help="where seed-jobs run: local (default; this machine's slots) or slurm "
                        "(each seed-job a Slurm job; the run folder must be shared with the nodes)")
    r.add_argument("--workers", type=int,
                   help="seed-jobs in flight at once, across variants (default: one per GPU group "
                        "with --gpus, else CPU cores / --threads; 8 with --executor slurm)")
    r.add_argument("--threads", type=int, help="threads of each step (default: 1, or CPU cores / "
                                               "--workers when --workers is given)")
    r.add_argument("--ahead", type=int,
                   help="proposals made ahead of the slots (default: workers / training seeds, "
                        "rounded up); 0: one variant at a time, each proposal seeing every result")
    r.add_argument("--slurm-partition", help="slurm: the partition of the seed-jobs")
    r.add_argument("--slurm-time", type=int, metavar="MINUTES",
                   help="slurm: time limit of a seed-job (default: from the scale's timeout)")
    r.add_argument("--slurm-gpus", type=int, help="slurm: GPUs per seed-job (default: the scale's)")
    r.add_argument("--slurm-options", metavar="'--account=A ...'",
                   help="slurm: further sbatch options, e.g. '--account=lab --qos=normal'")
    r.add_argument("--rng-seed", type=int, help="seed of the run's own random choices")
    r.add_argument("--no-report", dest="report", action="store_const", const=False,
                   help="do not write the report at the end")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("resume", help="continue an interrupted run where it stopped")
    s.add_argument("run", help="run id, run folder, or 'latest'")
    _budget_flags(s)
    s.add_argument("--api-base", help="new base URL of the OpenAI-compatible server, if it moved")
    s.set_defaults(func=cmd_resume)

    ls = sub.add_parser("runs", help="list runs with their status and best fitness")
    ls.set_defaults(func=cmd_runs)

    sh = sub.add_parser("show", help="show a run, or one variant of it")
    sh.add_argument("run", help="run id, run folder, or 'latest'")
    sh.add_argument("variant", nargs="?", help="variant id (e.g. 3 or v0003)")
    sh.add_argument("--logs", action="store_true", help="print the full logs of each seed")
    sh.set_defaults(func=cmd_show)

    rep = sub.add_parser("report", help="write a run's report (report.html, report.tex, and "
                                        "report.pdf with TeX); with the run's LLM, it writes the sections")
    rv = sub.add_parser("review", help="an LLM reviews a run's report as a venue's reviewer would "
                                       "(report/review.json), and the report is written again with it")
    for q in (rep, rv):
        q.add_argument("run", help="run id, run folder, or 'latest'")
        q.add_argument("--no-pdf", action="store_true", help="do not compile report.tex")
        q.add_argument("--model", help="the LLM (default: the run's own --model)")
        q.add_argument("--api-base", help="its base URL (default: the run's, unless --model is given)")
    rep.add_argument("--no-llm", action="store_true",
                     help="templated sections, even when the run has a model")
    rep.set_defaults(func=cmd_report)
    rv.set_defaults(func=cmd_review)

    sv = sub.add_parser("serve", help="a web page to watch runs, read variants and work through "
                                      "the approval queue (runs started with --approve web)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: every "
                         "interface, anyone who can reach the port can read the runs)")
    sv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: a free one)")
    sv.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="another Host name the page is reached by (e.g. behind an SSH tunnel "
                         "or proxy); may be repeated")
    sv.set_defaults(func=cmd_serve)

    _sandbox_parsers(sub)
    for q in (r, s, ls, sh, rep, rv, sv):
        q.add_argument("--runs-dir", default=None,
                       help=f"folder of run folders (default: {DEFAULT_RUNS_DIR})")
    return p


def _budget_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", type=int, help="number of proposals after the baseline")
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="stop cleanly once the run's LLM calls have cost this much")
    p.add_argument("--max-tokens", type=int, metavar="N",
                   help="stop cleanly once the run's LLM calls have used this many tokens")
    p.add_argument("--time-budget", type=_duration,
                   help="wall-clock budget for the run, e.g. 600, 10m, 2h")
    p.add_argument("--approve", nargs="?", const="terminal", choices=("terminal", "web"),
                   default=None, metavar="{terminal,web}",
                   help="ask before each variant runs: at this terminal (the default: approve / "
                        "reject with a reason / quit), or `web`: in the approval queue of "
                        "`scientist serve`'s page")
    p.add_argument("--no-approve", dest="approve", action="store_const", const="off",
                   help="turn approval off again (on resume)")


def _duration(text: str) -> float:
    """--time-budget: a bad value is a usage error (exit 2), not a traceback."""
    try:
        return parse_duration(text)
    except ScientistError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _flock_held(path: Path) -> bool | None:
    """Whether some process holds a flock on `path`, from /proc/locks (None: unknown)."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    me = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == me
               for f in (line.split() for line in table.splitlines()))


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """One process at a time writes a run."""
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScientistError(f"{run_dir} is in use by another scientist process") from None
        yield


def in_use(run_dir: Path) -> bool:
    """Whether a scientist process holds the run's lock right now. Read from the kernel's
    table of locks where there is one: taking the lock to test it, even for an instant,
    would make a `scientist resume` started at that instant refuse (`scientist serve` asks
    every few seconds)."""
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    held = _flock_held(lock)
    if held is not None:
        return held
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def status_of(run_dir: Path, arch: Archive) -> str:
    """The archived status, corrected for a run whose process died without saying so."""
    status = arch.get_meta("status", "?")
    if status == "running" and not in_use(run_dir):
        return "killed (resume it)"
    return status


def _execute(run: Run) -> int:
    """Run the loop; the caller holds the run's lock."""
    try:
        return run.execute()
    except KeyboardInterrupt:
        return 130
    finally:
        run.close()


def cmd_run(a: argparse.Namespace) -> int:
    cfg = RunConfig()  # defaults < config file < environment < flags
    if a.config:
        cfg = cfg.merged(load_config_file(a.config))
    cfg = cfg.merged(env_settings())
    cfg = cfg.merged({k: getattr(a, k) for k in (
        "seed", "scale", "iterations", "time_budget", "selection", "proposer", "sandbox",
        "approve", "workers", "rng_seed", "run_id", "report", "runs_dir", "model", "api_base",
        "api_key_env", "temperature", "max_repairs", "max_cost", "max_tokens", "gpus",
        "gpus_per_step", "alpha", "noise_seeds", "max_confirm_seeds", "executor", "threads",
        "ahead", "slurm_partition", "slurm_time", "slurm_gpus", "slurm_options")})
    check_config(cfg)  # before the run folder exists: say now what is missing
    run = Run.create(cfg, console)
    with locked(run.dir):
        return _execute(run)


def cmd_resume(a: argparse.Namespace) -> int:
    run_dir = resolve_run(a.run, a.runs_dir)
    overrides = {k: getattr(a, k) for k in ("iterations", "time_budget", "approve", "max_cost",
                                             "max_tokens", "api_base")}
    with locked(run_dir):  # before Run.open writes config.json: one writer at a time
        return _execute(Run.open(run_dir, console, **overrides))


def runs_dir(arg: str | None) -> Path:
    return Path(arg) if arg else DEFAULT_RUNS_DIR


def resolve_run(name: str, runs: str | None) -> Path:
    base = runs_dir(runs)
    if name == "latest":
        found = sorted(all_runs(base), key=lambda d: (d / ARCHIVE).stat().st_mtime)
        if not found:
            raise ScientistError(f"no runs in {base}")
        return found[-1]
    for cand in (Path(name), base / name):
        if (cand / CONFIG).is_file():
            return cand
    raise ScientistError(f"no run {name!r} (looked in {base}); `scientist runs` lists them")


def all_runs(base: Path) -> list[Path]:
    return sorted(d for d in base.glob("*") if (d / CONFIG).is_file() and (d / ARCHIVE).is_file())


def cmd_runs(a: argparse.Namespace) -> int:
    base = runs_dir(a.runs_dir)
    t = Table(title=f"runs in {base}")
    for col in ("run", "seed", "scale", "status", "variants", "failed", "best (confirmed)",
                "baseline", "promoted", "sealed test", "elapsed", "LLM"):
        t.add_column(col)
    for d in all_runs(base):
        cfg = json.loads((d / CONFIG).read_text())
        arch = Archive(d / ARCHIVE)
        try:
            arch.maximize = bool(arch.get_meta("maximize", True))
            vs = arch.all()
            promotion = Promotion.of(arch)
            best = promotion.best()
            tried = promotion.comparisons()
            base_v = next((v for v in vs if v.id == 0), None)
            t.add_row(d.name, Path(cfg["seed"]).name, cfg["scale"],
                      status_of(d, arch), str(len(vs)),
                      str(sum(v.status in ("failed", "invalid") for v in vs)),
                      f"{_pm(best)} ({best.name})" if best else "—",
                      _pm(base_v) if base_v and base_v.fitness is not None else "—",
                      f"{sum(c.decision == PROMOTED for c in tried)} of {len(tried)}",
                      _sealed_cell(promotion),
                      hms(arch.get_meta("elapsed_seconds", 0.0)), _llm_cell(arch.llm_usage()))
        finally:
            arch.close()
    console.print(t)
    return 0


def _pm(v: Variant) -> str:
    """A fitness with its interval: mean ± standard error."""
    if v.fitness is None:
        return "—"
    return f"{v.fitness:.4f}" + (f" ± {v.fitness_stderr:.4f}" if v.fitness_stderr is not None else "")


def _sealed_cell(promotion: Promotion) -> str:
    sealed = promotion.sealed()
    if sealed is None:
        return "—"
    t = sealed.test(promotion.maximize)
    return f"{t.mean:+.4f} {t.interval()}, p={t.p:.2g}"


def cmd_show(a: argparse.Namespace) -> int:
    run_dir = resolve_run(a.run, a.runs_dir)
    arch = Archive(run_dir / ARCHIVE)
    try:
        arch.maximize = bool(arch.get_meta("maximize", True))
        if a.variant is None:
            return _show_run(run_dir, arch)
        vid = int(a.variant.lstrip("v"))
        try:
            v = arch.get(vid)
        except KeyError as e:
            raise ScientistError(str(e)) from None
        return _show_variant(run_dir, arch, v, a.logs)
    except ValueError:
        raise ScientistError(f"variant must be a number like 3 or v0003, not {a.variant!r}") from None
    finally:
        arch.close()


def _show_run(run_dir: Path, arch: Archive) -> int:
    metric = arch.get_meta("metric", "fitness")
    console.print(f"[bold]{run_dir.name}[/]: {arch.get_meta('seed_title', '')} — status "
                  f"{status_of(run_dir, arch)}, {hms(arch.get_meta('elapsed_seconds', 0.0))} elapsed, "
                  f"proposer: {arch.get_meta('proposer_description', '?')}")
    if arch.get_meta("sandbox") in UNCONFINED:
        console.print(f"[bold red]warning:[/] {UNCONFINED_WARNING}")
    total = arch.llm_usage()
    if total.calls or arch.llm_errors():
        console.print(f"LLM: {total} ({total.prompt_tokens:,} prompt + {total.completion_tokens:,} "
                      f"reply tokens); transcript in {run_dir / 'llm' / 'transcript.jsonl'}")
    llm = bool(total.calls)
    promotion = Promotion.of(arch)
    noise, best = promotion.noise(), promotion.best()
    if noise is not None:
        console.print(f"noise floor: sd {noise.sd:.4f} between the baseline's {noise.n} training "
                      f"seeds; smallest improvement the run can confirm ≈ {noise.detectable:.4f}")
    labels = promotion.labels()
    t = Table()
    cols = ["variant", "parent", "iter", "status", "integrity", metric, "± se", "n", "claim"]
    cols += ["predicted Δ", "measured Δ", "LLM"] if llm else []
    for col in cols + ["hypothesis / error"]:
        t.add_column(col)
    variants = arch.all()
    by_id = {v.id: v for v in variants}
    for v in variants:
        row = [v.name, "—" if v.parent_id is None else f"v{v.parent_id:04d}", str(v.iteration),
               v.status, v.integrity if v.status in ("done", "failed") else "—",
               "—" if v.fitness is None else f"{v.fitness:.4f}",
               "—" if v.fitness_stderr is None else f"{v.fitness_stderr:.4f}",
               str(v.fitness_n) if v.fitness is not None else "—",
               "best" if best is not None and v.id == best.id else labels.get(v.id, "—")]
        if llm:
            d = measured_delta(v, by_id)
            row += ["—" if v.predicted is None else f"{v.predicted:+.4f}",
                    "—" if d is None else f"{d:+.4f}", _llm_cell(arch.llm_usage(v.iteration))
                    if v.iteration else "—"]
        t.add_row(*row, shorten(v.error if v.status != "done" and v.error else
                                v.hypothesis or "baseline", 70))
    console.print(t)
    console.print(promotion.claim(metric), markup=False)
    return 0


def _show_variant(run_dir: Path, arch: Archive, v: Variant, logs: bool) -> int:
    console.print(f"[bold]{v.name}[/] (parent {'—' if v.parent_id is None else f'v{v.parent_id:04d}'},"
                  f" iteration {v.iteration}, status {v.status}, proposer {v.proposer or '—'},"
                  f" commit {v.commit or '—'})")
    if v.created_at:
        console.print(f"created {datetime.fromtimestamp(v.created_at):%Y-%m-%d %H:%M:%S}")
    integrity = f"{v.integrity}: {v.integrity_reason}" if v.integrity != "clean" else ""
    for label, text in (("Hypothesis", v.hypothesis), ("Rationale", v.rationale),
                        ("Predicted", v.prediction), ("Error", v.error), ("Integrity", integrity)):
        if text:
            console.print(f"[bold]{label}:[/] {text}")
    if v.fitness is not None:
        se = f" ± {v.fitness_stderr:.4f} (s.e.)" if v.fitness_stderr is not None else ""
        promotion = Promotion.of(arch)
        best = promotion.best()
        claim = ("best (confirmed)" if best is not None and best.id == v.id
                 else promotion.labels().get(v.id, "raw"))
        console.print(f"[bold]Fitness:[/] {v.fitness:.4f}{se} (n={v.fitness_n}, raw mean); "
                      f"claim: {claim}")
    if v.metrics:
        console.print("[bold]Metrics (mean over seeds):[/] " +
                      ", ".join(f"{k}={x:.4g}" for k, x in v.metrics.items()))
    used = arch.llm_usage(v.iteration) if v.iteration else None
    if used is not None and (used.calls or arch.llm_errors(v.iteration)):
        console.print(f"[bold]LLM:[/] {used}" + "".join(
            f"\n  failed attempt ({e['purpose']}): {e['error']}" for e in arch.llm_errors(v.iteration)))
    if v.predicted is not None:
        d = measured_delta(v, {x.id: x for x in arch.all()})
        console.print(f"[bold]Predicted Δ:[/] {v.predicted:+.4f}; measured Δ: "
                      + ("—" if d is None else f"{d:+.4f}"))
    for e in arch.events(v.id):
        if e["kind"] in (PROMOTED, NOT_CONFIRMED) or e["kind"].startswith("sealed"):
            continue  # the comparisons below say it with their numbers
        console.print(f"[bold]{e['kind']}:[/] {e['text']}")
    _show_comparisons(arch, v)
    if v.diff:
        console.print(Syntax(v.diff, "diff", theme="ansi_dark", word_wrap=True))
    for s in (v.result.seeds if v.result else []):
        console.print(f"[bold]training seed {s.seed}:[/] {s.status} {s.reason} — train "
                      f"{s.train_seconds:.1f} s, eval {s.eval_seconds:.1f} s, peak "
                      f"{s.peak_rss_mb:.0f} MiB; metrics {s.metrics}")
        folder = run_dir / VARIANTS / v.name / f"seed-{s.seed}"
        if logs:
            for f in sorted(folder.glob("*.out")) + sorted(folder.glob("*.err")):
                console.print(f"[dim]── {f} ──[/]")
                console.print(redact(f.read_text(errors="replace")), markup=False)
        elif s.stderr_tail.strip() and not s.ok:
            console.print(f"[dim]stderr (tail; --logs for all, in {folder}):[/]")
            console.print(s.stderr_tail, markup=False)
    return 0


def _show_comparisons(arch: Archive, v: Variant) -> None:
    """The paired comparisons `v` took part in: seeds, both sides' values, the test."""
    promotion = Promotion.of(arch)
    for c in promotion.comparisons(None):
        if v.id not in (c.challenger_id, c.incumbent_id):
            continue
        what = "sealed test" if c.kind == "sealed" else f"confirmation (attempt {c.attempt})"
        t = c.test(promotion.maximize)
        console.print(f"[bold]{what}:[/] v{c.challenger_id:04d} against v{c.incumbent_id:04d} on "
                      f"fresh seeds {c.seeds}: {c.decision or 'in progress'}"
                      + (f" — {c.reason}" if c.reason else ""))
        a, b = c.values()
        if a and b:
            console.print(f"  v{c.challenger_id:04d}: {', '.join(f'{x:.4f}' for x in a)}\n"
                          f"  v{c.incumbent_id:04d}: {', '.join(f'{x:.4f}' for x in b)}\n"
                          f"  paired difference {t.mean:+.4f}"
                          + (f" ± {t.se:.4f} (s.e.), 95% CI {t.interval()}, one-sided p = {t.p:.3g}"
                             if t.se is not None else ""), markup=False)


def _llm_cell(u) -> str:
    if not u.calls:
        return "—"
    return f"${u.cost:.4f}" + ("+?" if u.unpriced_calls else "") + f" / {short_count(u.tokens)} tok"


def cmd_serve(a: argparse.Namespace) -> int:
    from scientist.web.app import serve

    base = runs_dir(a.runs_dir)
    if not base.is_dir():
        raise ScientistError(f"no runs folder {base}: start a run first (`scientist run`), or "
                             "name the folder with --runs-dir")
    if not 0 <= a.port <= 65535:
        raise ScientistError(f"--port must be between 0 and 65535, not {a.port}")
    try:
        serve(base, a.host, a.port, token=os.environ.get("SCIENTIST_SERVE_TOKEN") or None,
              allow_hosts=tuple(h.lower() for h in a.allow_host))
    except OSError as e:
        raise ScientistError(f"cannot serve on {a.host}:{a.port}: {e.strerror or e}") from None
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from scientist.paper import publish

    run_dir = resolve_run(a.run, a.runs_dir)
    rep, _ = publish(run_dir, use_llm=not a.no_llm, review=False, compile_pdf=False if a.no_pdf else None,
                     model=a.model, api_base=a.api_base, on_progress=_progress)
    _wrote(rep)
    return 0


def cmd_review(a: argparse.Namespace) -> int:
    from scientist.paper import publish

    run_dir = resolve_run(a.run, a.runs_dir)
    rep, record = publish(run_dir, review=True, compile_pdf=False if a.no_pdf else None,
                          model=a.model, api_base=a.api_base, on_progress=_progress)
    if record and "review" in record:
        r = record["review"]
        console.print(f"review by {record['model']}: overall {r['overall']}/10, soundness "
                      f"{r['soundness']}/4, presentation {r['presentation']}/4, contribution "
                      f"{r['contribution']}/4, confidence {r['confidence']}/5", markup=False)
    else:
        console.print(f"the review is missing: {(record or {}).get('missing', '?')}", markup=False)
    _wrote(rep)
    return 0 if record and "review" in record else 1


def _progress(text: str) -> None:
    console.print(text, style="dim", markup=False)


def _wrote(rep) -> None:
    console.print(f"wrote {rep.html} and {rep.tex}" + (f" and {rep.pdf}" if rep.pdf else
                                                      f" (no PDF: {rep.message})"), markup=False)


def _sandbox_parsers(sub: argparse._SubParsersAction) -> None:
    sb = sub.add_parser("sandbox", help="the Docker sandbox's image")
    sbsub = sb.add_subparsers(required=True, metavar="ACTION")
    b = sbsub.add_parser("build", help="build the image (offline: wheels are downloaded on "
                                       "the host); does nothing if it is current")
    b.add_argument("--base", help="base image: a CUDA PyTorch image for GPUs, default "
                                  "python:3.11-slim-bookworm or the previous build's base")
    b.add_argument("--torch", choices=["pin", "base"],
                   help="torch from sandbox/constraints.txt (pin) or from the base image "
                        "(base; default for pytorch/* bases)")
    b.add_argument("--wheels", help="folder of wheels to use instead of downloading them")
    b.add_argument("--python-version", help="the base image's Python (e.g. 3.12) when it "
                                            "differs from the host's")
    b.add_argument("--force", action="store_true", help="rebuild even if the image is current")
    b.set_defaults(func=cmd_sandbox_build)
    d = sub.add_parser("doctor", help="check Docker, the sandbox image, GPUs, TeX and the LLM")
    d.add_argument("--config", help="TOML file with run settings (for the configured LLM)")
    d.set_defaults(func=cmd_doctor)


def cmd_sandbox_build(a: argparse.Namespace) -> int:
    from scientist.image import build, client

    build(client(), base=a.base, torch=a.torch, wheels=Path(a.wheels) if a.wheels else None,
          python_version=a.python_version, force=a.force, log=console.print)
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    from scientist.doctor import checks

    cfg = RunConfig().merged(load_config_file(a.config)) if a.config else RunConfig()
    style = {"ok": "green", "missing": "red", "info": "yellow"}
    for c in checks(cfg):
        console.print(f"[{style[c.state]}]{c.state:>7}[/]  {c.name}: {c.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
