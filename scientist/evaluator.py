"""Evaluator: train and evaluate a variant on each training seed, in the sandbox.

Per training seed: export the variant's commit into a fresh working copy, run the seed's
train command (its results go to the `out` folder), then export the commit afresh (so
nothing training wrote beside the code reaches the evaluator), put the pristine protected
files (evaluator, data loaders, manifest, taken from the run's baseline commit) over it,
delete any metrics file the training step may have planted, and run the evaluate command.
The fitness is read only from the metrics file that the pristine evaluator wrote.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from scientist.sandbox import POLL_SECONDS, Sandbox, Step, format_command
from scientist.seed import Scale, Seed
from scientist.variant import SEED_NO_METRICS, SEED_OK, Result, SeedResult
from scientist.workspace import Workspace

TAIL_CHARS = 3000


def tail(path: Path, n: int = TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Evaluator:
    seed: Seed
    scale: Scale
    workspace: Workspace
    sandbox: Sandbox
    pristine_commit: str
    workers: int = 1
    threads: int = 1

    def evaluate(self, commit: str, folder: Path,
                 on_seed: Callable[[SeedResult], None] | None = None) -> Result:
        """Run every training seed of the variant at `commit`; outputs go into `folder`."""
        pristine = self.workspace.read(self.pristine_commit, self.seed.protected)
        seeds = range(self.scale.training_seeds)

        def one(s: int) -> SeedResult:
            r = self._one_seed(commit, s, folder / f"seed-{s}", pristine)
            if on_seed:
                on_seed(r)
            return r

        if self.workers <= 1:
            results = [one(s) for s in seeds]
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                futures = [pool.submit(one, s) for s in seeds]
                try:
                    results = [f.result() for f in futures]
                except BaseException:  # Ctrl-C: end the running steps instead of awaiting them
                    for f in futures:
                        f.cancel()
                    self.sandbox.kill_all()
                    while wait(futures, timeout=POLL_SECONDS).not_done:
                        self.sandbox.kill_all()  # again: a worker may have started a step
                    raise
        return Result(results, self.seed.metric)

    def _one_seed(self, commit: str, s: int, d: Path, pristine: dict[str, str]) -> SeedResult:
        if d.exists():  # left over from a run that was interrupted: start this seed afresh
            shutil.rmtree(d)
        work, fresh, out = d / "work", d / "eval-work", d / "out"
        out.mkdir(parents=True)
        self.workspace.export(commit, work)
        metrics_path = d / "metrics.json"
        values = dict(python=self.sandbox.python, scale=self.scale.name, seed=s,
                      out=out.resolve(), metrics=metrics_path.resolve())
        try:
            train = self.sandbox.run(self._step("train", values, work, out, d))
            res = SeedResult(s, train.status if not train.ok else SEED_OK, train.reason,
                             train_seconds=train.seconds, peak_rss_mb=train.peak_rss_mb)
            if not train.ok:
                res.stdout_tail, res.stderr_tail = tail(d / "train.out"), tail(d / "train.err")
                return res
            # Evaluate in a fresh copy of the commit: nothing training left beside the code
            # (e.g. a `json.py` the evaluator would import) reaches it; results are in out/.
            self.workspace.export(commit, fresh)
            for rel, text in pristine.items():  # the evaluator that runs is the pristine one
                (fresh / rel).parent.mkdir(parents=True, exist_ok=True)
                (fresh / rel).write_text(text)
            metrics_path.unlink(missing_ok=True)
            ev = self.sandbox.run(self._step("evaluate", values, fresh, out, d))
            res.eval_seconds, res.peak_rss_mb = ev.seconds, max(res.peak_rss_mb, ev.peak_rss_mb)
            res.stdout_tail, res.stderr_tail = tail(d / "evaluate.out"), tail(d / "evaluate.err")
            if not ev.ok:
                res.status, res.reason = ev.status, ev.reason
                return res
            res.metrics, problem = read_metrics(metrics_path, self.seed.metric)
            if problem:
                res.status, res.reason = SEED_NO_METRICS, problem
            return res
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(fresh, ignore_errors=True)

    def _step(self, kind: str, values: dict, work: Path, out: Path, d: Path) -> Step:
        template = self.seed.train_command if kind == "train" else self.seed.evaluate_command
        env = dict(self.seed.evaluate_env) if kind == "evaluate" else {}
        return Step(kind=kind, command=format_command(template, **values), cwd=work, out=out,
                    stdout=d / f"{kind}.out", stderr=d / f"{kind}.err",
                    timeout=self.scale.timeout, memory_mb=self.scale.memory_mb, env=env,
                    threads=self.threads,
                    outputs=(Path(values["metrics"]),) if kind == "evaluate" else ())


def read_metrics(path: Path, metric: str) -> tuple[dict[str, float], str]:
    """The evaluator's metrics (numbers only) and a problem description ('' if fine)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, f"the evaluator wrote no metrics file ({path.name})"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {}, f"metrics file is not valid JSON: {e}"
    if not isinstance(raw, dict):
        return {}, "metrics file must hold a JSON object"
    metrics = {k: float(v) for k, v in raw.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if metric not in metrics:
        return metrics, f"metrics file has no number {metric!r} (the fitness metric)"
    if not math.isfinite(metrics[metric]):
        return metrics, f"fitness metric {metric!r} is not finite: {metrics[metric]}"
    return metrics, ""

