"""What the judge-learner split costs: a seed's evaluation with the learner in the judge's
process (as every evaluator ran before the harness) against the learner in its own process
behind the harness's socket (as now), on one checkpoint, alternately, on this machine.

    python bench/eval_split.py [--seed-name vsml] [--scale smoke] [--out DIR] [--runs 5]

Trains the seed's baseline first (training seed 0) unless DIR already has its output. Both
arms run the same protected judge (evaluate.py) on the same streams; only the learner's
place differs (tests/inprocess.py puts it in the judge's process). The sandbox's own cost per
step is not in these figures (bench/container_overhead.py measures it). Prints each run's
wall time, the medians and the median of the pairwise ratios split / in-process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scientist.seed import load_seed  # noqa: E402


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {shlex.join(argv)}\n{p.stderr[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-name", default="vsml")
    p.add_argument("--scale", default="smoke")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-eval-split"))
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    seed = load_seed(a.seed_name)
    cwd, out = seed.path, a.out.resolve() / a.seed_name / a.scale
    env = {**os.environ, **seed.evaluate_env, "PYTHONPATH": str(ROOT)}
    fill = dict(python=sys.executable, scale=a.scale, seed=0, out=out, metrics=out / "m.json")
    if not (out / "checkpoint.pt").exists() and not any(out.glob("*")):
        out.mkdir(parents=True, exist_ok=True)
        print(f"training {a.seed_name} at {a.scale} (seed 0) into {out} ...", flush=True)
        print(f"  {timed(shlex.split(seed.train_command.format(**fill)), cwd, env):.1f} s", flush=True)
    evaluate = shlex.split(seed.evaluate_command.format(**fill))
    learner = shlex.split(seed.learner_command.format(**fill))
    inproc = [sys.executable, str(ROOT / "tests" / "inprocess.py"), str(cwd), *learner[2:], "--",
              *evaluate[2:]]
    split_s, inproc_s = [], []
    timed(evaluate, cwd, env)  # warm-up: file caches, first imports
    for i in range(a.runs):
        inproc_s.append(timed(inproc, cwd, env))
        split_s.append(timed(evaluate, cwd, env))
        print(f"run {i + 1}: in-process {inproc_s[-1]:6.2f} s   split {split_s[-1]:6.2f} s", flush=True)
    ratios = [s / i for s, i in zip(split_s, inproc_s)]
    print(f"{a.seed_name} {a.scale} evaluation, {a.runs} pairs, load average "
          f"{os.getloadavg()[0]:.1f}:")
    print(f"  in-process median {statistics.median(inproc_s):.2f} s "
          f"(min {min(inproc_s):.2f}, max {max(inproc_s):.2f})")
    print(f"  split      median {statistics.median(split_s):.2f} s "
          f"(min {min(split_s):.2f}, max {max(split_s):.2f})")
    print(f"  split / in-process, median of pairs: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
