"""Variants per hour against slots: the scheduler keeps N seed-jobs in flight.

A toy seed whose steps only sleep (training `--train` seconds, the judge `--evaluate`
seconds; the fitness is a constant, so nothing is ever confirmed and every job is
exploration) runs through the real loop, the offline proposer and the local sandbox
(bubblewrap; `--sandbox process` for the unconfined one), with N = 1, 2, 4, 8 slots and
two training seeds per variant. For each N, `rounds` slot-fulls of variants: the
throughput is variants over the wall time from the first variant's first job to the last
variant's result (the baseline before it is not counted), against N = 1; ideal is N times.
The orchestrator's own CPU (this process, all threads, steps not counted) over the same
run is printed as a share of one core.

    python bench/throughput.py                      # N = 1 2 4 8, 5 s + 1 s steps
    python bench/throughput.py --slots 1 8 --train 10 --executor slurm

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from scientist.config import RunConfig
from scientist.run import Run

TRAIN = '''import argparse, json, os, time
from dataclasses import dataclass


@dataclass
class Args:
    knob: float = 1.0  # does nothing


p = argparse.ArgumentParser()
p.add_argument("--seed", type=int)
p.add_argument("--out")
a = p.parse_args()
time.sleep({train})
os.makedirs(a.out, exist_ok=True)
json.dump({{"knob": Args().knob}}, open(os.path.join(a.out, "model.json"), "w"))
'''
EVALUATE = '''import argparse, json, time
p = argparse.ArgumentParser()
p.add_argument("--seed", type=int)
p.add_argument("--out")
p.add_argument("--metrics")
a = p.parse_args()
time.sleep({evaluate})
json.dump({{"fitness": 1.0}}, open(a.metrics, "w"))
'''
MANIFEST = '''name = "sleep"
title = "Sleeping toy seed"
summary = "Steps that only sleep: for measuring the scheduler."
goal = "None."
references = []

[files]
editable = ["train.py"]
protected = ["evaluate.py", "seed.toml"]

[commands]
train = "{{python}} train.py --seed {{seed}} --out {{out}}"
evaluate = "{{python}} evaluate.py --seed {{seed}} --out {{out}} --metrics {{metrics}}"

[fitness]
metric = "fitness"
direction = "max"

[scales.test]
timeout = {timeout}
memory_mb = 300
training_seeds = 2
noise_seeds = 2
iterations = 1

[[mutable]]
file = "train.py"
name = "knob"
type = "float"
low = 0.0
high = 1000.0
'''


def sleep_seed(folder: Path, train: float, evaluate: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN.format(train=train))
    (folder / "evaluate.py").write_text(EVALUATE.format(evaluate=evaluate))
    (folder / "seed.toml").write_text(MANIFEST.format(timeout=int(train + evaluate + 120)))
    return folder


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(seed: Path, runs: Path, slots: int, rounds: int, **settings) -> dict:
    """One run with `slots` slots; its throughput and the orchestrator's CPU."""
    variants = max(2, math.ceil(rounds * slots / 2))
    cfg = RunConfig(seed=str(seed), scale="test", iterations=variants, runs_dir=str(runs),
                    run_id=f"n{slots}", report=False, workers=slots, **settings)
    run = Run.create(cfg, Console(file=io.StringIO()))
    run.heartbeat_seconds = 3600
    c0, t0 = cpu(), time.monotonic()
    try:
        run.execute()
        jobs = [j for j in run.archive.jobs.where() if j.variant_id]
        done = [v for v in run.archive.all() if v.parent_id is not None and v.status == "done"]
        start = min(j.submitted_at for j in jobs)
        end = max(j.archived_at for j in jobs)
    finally:
        run.close()
    return {"slots": slots, "variants": len(done), "wall": end - start,
            "per_hour": len(done) / (end - start) * 3600,
            "cpu": cpu() - c0, "run_wall": time.monotonic() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--train", type=float, default=5.0, help="seconds a training step sleeps")
    p.add_argument("--evaluate", type=float, default=1.0, help="seconds a judge step sleeps")
    p.add_argument("--rounds", type=int, default=4, help="slot-fulls of variants per run")
    p.add_argument("--sandbox", default="local")
    p.add_argument("--executor", default="local")
    a = p.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCIENTIST_BENCH_DIR")) as tmp:
        seed = sleep_seed(Path(tmp) / "sleepseed", a.train, a.evaluate)
        rows = [measure(seed, Path(tmp) / "runs", n, a.rounds, sandbox=a.sandbox,
                        executor=a.executor, ahead=None) for n in a.slots]
    job = a.train + a.evaluate
    print(f"sleep seed: train {a.train:g} s + judge {a.evaluate:g} s per seed-job, 2 seeds per "
          f"variant, {a.sandbox} sandbox, {a.executor} executor; {os.cpu_count()} cores, load "
          f"average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'N':>3} {'variants':>9} {'wall s':>8} {'variants/h':>11} {'x N=1':>7} "
          f"{'ideal/h':>8} {'orch. CPU s':>12} {'% of a core':>12}")
    base = rows[0]["per_hour"] / rows[0]["slots"]
    for r in rows:
        ideal = r["slots"] / 2 / job * 3600
        print(f"{r['slots']:>3} {r['variants']:>9} {r['wall']:>8.1f} {r['per_hour']:>11.0f} "
              f"{r['per_hour'] / base:>7.2f} {ideal:>8.0f} {r['cpu']:>12.2f} "
              f"{100 * r['cpu'] / r['run_wall']:>12.2f}")
    print("x N=1: throughput over the N = 1 throughput per slot (ideal: N)")


if __name__ == "__main__":
    sys.exit(main())
