"""What the user sees while a run works: one line per event and a table at the end.

Plain lines (no live widgets) so the output reads the same in a terminal, a log file
and CI; each line carries the iteration, the variant, the best fitness and the elapsed
time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scientist.redaction import redact
from scientist.variant import Fitness, SeedResult, Variant


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def shorten(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class Progress:
    def __init__(self, console: Console, total: int, elapsed_before: float = 0.0):
        self.console = console
        self.total = total
        self.start = time.monotonic() - elapsed_before
        self.best: Fitness | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def line(self, k: int | None, text: str) -> None:
        it = "baseline" if k == 0 else f"iter {k}/{self.total}" if k else "        "
        best = f"best {self.best}" if self.best is not None else "best —"
        self.console.print(f"[dim]{hms(self.elapsed)}[/] [bold]{it:>11}[/] {text}  [dim]({best})[/]",
                           highlight=False)

    def seed_done(self, k: int, v: Variant, r: SeedResult, metric: str) -> None:
        if r.ok:
            self.line(k, f"{v.name} training seed {r.seed}: {metric} = "
                         f"{r.metrics[metric]:.4f} (train {r.train_seconds:.0f} s, "
                         f"eval {r.eval_seconds:.0f} s)")
        else:
            self.line(k, f"{v.name} training seed {r.seed}: [red]{r.status}[/] — {r.reason}")


def last_line(path: Path, n: int = 4096) -> str:
    """The last non-empty line of a log (read from its end), shortened."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return shorten(redact(lines[-1]), 90) if lines else ""  # a running step's log: not yet redacted


@contextmanager
def heartbeat(progress: Progress, k: int, v: Variant, folder: Path, every: float = 30.0,
              seeds: Iterable[int] | None = None, prefix: str = "") -> Iterator[set[int]]:
    """While a variant runs, print every `every` seconds what each training seed is doing:
    its running step and the last line that step printed. Only `seeds` are watched (default:
    every seed folder); add a seed to the yielded set when it is done, and it is left out.
    `prefix` names the folders of another evaluation set (`sealed-`)."""
    stop = threading.Event()
    done: set[int] = set()
    watched = None if seeds is None else set(seeds)

    def beat() -> None:
        while not stop.wait(every):
            for d in sorted(folder.glob(f"{prefix}seed-*")):
                logs = [p for p in (d / "train.out", d / "evaluate.out") if p.exists()]
                s = int(d.name.rsplit("-", 1)[1])
                if not logs or s in done or (watched is not None and s not in watched):
                    continue
                log = max(logs, key=lambda p: p.stat().st_mtime)
                step = "training" if log.name == "train.out" else "evaluating"
                progress.line(k, f"{v.name} {d.name.replace('-', ' ')} {step}: "
                                 f"[dim]{last_line(log) or '(no output yet)'}[/]")

    t = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{v.name}")
    t.start()
    try:
        yield done
    finally:
        stop.set()
        t.join()


def best_table(variants: list[Variant], maximize: bool, metric: str, n: int = 10,
               labels: dict[int, str] | None = None, best_id: int | None = None) -> Table:
    """The top `n` variants by raw mean, each marked with what it may be called: the
    confirmed best, confirmed (promoted once), not confirmed, or raw (never tested)."""
    ranked = sorted((v for v in variants if v.fitness is not None),
                    key=lambda v: Fitness(v.fitness, maximize).key, reverse=True)[:n]
    t = Table(title=f"variants by {metric} ({'higher' if maximize else 'lower'} is better; "
                    "raw means: only a confirmed variant is called best)")
    for col in ("variant", "parent", metric, "± s.e.", "n", "claim", "hypothesis"):
        t.add_column(col, justify="right" if col in (metric, "± s.e.", "n") else "left")
    labels = labels or {}
    for v in ranked:
        claim = "best" if v.id == best_id else labels.get(v.id, "raw")
        t.add_row(v.name, "—" if v.parent_id is None else f"v{v.parent_id:04d}",
                  f"{v.fitness:.4f}",
                  "—" if v.fitness_stderr is None else f"{v.fitness_stderr:.4f}",
                  str(v.fitness_n), claim, shorten(v.hypothesis or "baseline: the unmodified seed", 60))
    return t
