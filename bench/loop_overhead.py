"""What the loop itself costs per variant, next to the experiment it runs.

Runs a real `scientist` loop (offline proposer, local sandbox) on a seed and times each
stage of every iteration by wrapping the stage's function: parent selection, proposing,
applying edits, committing, archiving, and the sandbox's own cost (everything inside
evaluation that is not the seed's train/evaluate processes: exporting the working copy,
restoring the pristine evaluator, process start-up and supervision, reading metrics).
The experiment time is the train + evaluate steps as the sandbox measured them.

    python bench/loop_overhead.py                       # toy seed (pure Python), 10 iterations
    python bench/loop_overhead.py --seed vsml --scale test --iterations 3

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console

import scientist.scheduler as scheduler_mod
from scientist.config import RunConfig
from scientist.evaluator import Evaluator
from scientist.run import Run
from scientist.sandbox import LocalSandbox

ROOT = Path(__file__).resolve().parent.parent
TIMES: dict[str, list[float]] = defaultdict(list)


def timed(label: str, fn):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            TIMES[label].append(time.perf_counter() - t)
    return wrapper


def instrument(run: Run) -> None:
    run.policy.select = timed("select parent", run.policy.select)
    run.proposer.propose = timed("propose", run.proposer.propose)
    scheduler_mod.apply_edits = timed("apply edits", scheduler_mod.apply_edits)
    run.workspace.commit = timed("git commit", run.workspace.commit)
    run.workspace.diff = timed("git diff", run.workspace.diff)
    for name in ("new_variant", "select", "propose", "finish", "update", "touch", "set_meta"):
        setattr(run.archive, name, timed("archive writes", getattr(run.archive, name)))
    for name in ("add", "submitted", "started", "done", "queue_again"):
        setattr(run.archive.jobs, name, timed("archive writes", getattr(run.archive.jobs, name)))
    run.sandbox.run = timed("sandbox step (wall)", run.sandbox.run)
    Evaluator.run_seed = timed("evaluate (wall)", Evaluator.run_seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", default=str(ROOT / "tests" / "fixtures" / "toyseed"))
    p.add_argument("--scale", default="test")
    p.add_argument("--iterations", type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(seed=a.seed, scale=a.scale, iterations=a.iterations, runs_dir=tmp,
                        run_id="bench", report=False, workers=1)  # one seed-job at a time
        run = Run.create(cfg, Console(file=io.StringIO()))
        instrument(run)
        t0 = time.perf_counter()
        run.execute()
        total = time.perf_counter() - t0
        variants = [v for v in run.archive.all() if v.result]
        # every seed-job: the variants' own seeds, and those of confirmations and the sealed test
        jobs = [j.result for j in run.archive.jobs.where() if j.result]
        experiment = [sum(s.train_seconds + s.eval_seconds for s in v.result.seeds)
                      for v in variants]
        run.close()
    n = len(variants)
    steps = TIMES.pop("sandbox step (wall)")
    evaluate = TIMES.pop("evaluate (wall)")
    per_job = (sum(evaluate) - sum(s.train_seconds + s.eval_seconds for s in jobs)) / len(jobs)
    sandbox_overhead = per_job * sum(len(v.result.seeds) for v in variants) / n
    print(f"seed {Path(a.seed).name}, scale {a.scale}: {n} variants evaluated "
          f"({n - 1} proposals + baseline), {len(jobs)} seed-jobs (with confirmations and the "
          f"sealed test), {len(steps)} sandbox steps, {total:.2f} s in all")
    print(f"sandbox cost per seed-job (export, pristine files, start-up, metrics): "
          f"{per_job * 1000:.1f} ms")
    print(f"{'stage':<28}{'per variant (ms)':>18}{'median call (ms)':>18}")
    loop_cost = 0.0
    for label, ts in sorted(TIMES.items()):
        per_variant = sum(ts) / n * 1000
        loop_cost += per_variant
        print(f"{label:<28}{per_variant:>18.2f}{statistics.median(ts) * 1000:>18.2f}")
    print(f"{'sandbox (not the seed)':<28}{sandbox_overhead * 1000:>18.2f}")
    loop_cost += sandbox_overhead * 1000
    print(f"{'= loop cost':<28}{loop_cost:>18.2f}")
    print(f"{'experiment (train+evaluate)':<28}{statistics.fmean(experiment) * 1000:>18.2f}")
    print(f"loop cost is {loop_cost / 10 / statistics.fmean(experiment):.2f}% of the experiment "
          "time per variant")
    # A step that does nothing shows the sandbox's fixed cost per process.
    sb = LocalSandbox()
    with tempfile.TemporaryDirectory() as tmp:
        from scientist.sandbox import Step
        d = Path(tmp)
        ts = []
        for _ in range(10):
            step = Step("train", "true", d, d / "out", d / "o", d / "e", 10, 100)
            t = time.perf_counter()
            sb.run(step)
            ts.append(time.perf_counter() - t)
    print(f"sandbox start+stop of `true`: median {statistics.median(ts) * 1000:.2f} ms "
          f"over {len(ts)} runs")


if __name__ == "__main__":
    sys.exit(main())
