"""What the user sees while a run works: one line per event and a table at the end.

Plain lines (no live widgets) so the output reads the same in a terminal, a log file
and CI; each line carries the iteration, the variant, the best fitness and the elapsed
time.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

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


def best_table(variants: list[Variant], maximize: bool, metric: str, n: int = 10) -> Table:
    ranked = sorted((v for v in variants if v.fitness is not None),
                    key=lambda v: Fitness(v.fitness, maximize).key, reverse=True)[:n]
    t = Table(title=f"best variants by {metric} ({'higher' if maximize else 'lower'} is better)")
    for col in ("variant", "parent", metric, "± stderr", "n", "hypothesis"):
        t.add_column(col, justify="right" if col in (metric, "± stderr", "n") else "left")
    for v in ranked:
        t.add_row(v.name, "—" if v.parent_id is None else f"v{v.parent_id:04d}",
                  f"{v.fitness:.4f}",
                  "—" if v.fitness_stderr is None else f"{v.fitness_stderr:.4f}",
                  str(v.fitness_n), shorten(v.hypothesis or "baseline: the unmodified seed", 60))
    return t
