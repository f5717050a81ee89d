"""The orchestrator's own CPU while a variant trains, as a share of one core.

Two measurements, each as (CPU seconds of this process, all its threads, children not
counted) / (wall seconds), from `resource.getrusage(RUSAGE_SELF)`:

- `step`: one training step that keeps a core busy for `--seconds`, run through each
  sandbox's `run` (the local sandbox blocks on the step's pidfd; the process sandbox polls
  /proc ten times a second), once plainly and once with a cancel flag as the learner
  step has (looked at ten times a second);
- `run`: a whole run of a seed (`--seed vsml --scale test`, baseline and `--iterations`
  variants, offline proposer, no report) in this process: everything the orchestrator
  does (git, archive, judge/learner threads, heartbeat) over the run's wall time.

    python bench/orchestrator_cpu.py                       # step, 20 s per sandbox
    python bench/orchestrator_cpu.py --what run --seed vsml --scale test --iterations 1

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    sum(range(1000))\n"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn) -> tuple[float, float]:
    c, t = cpu(), time.monotonic()
    fn()
    return cpu() - c, time.monotonic() - t


def bench_step(names: list[str], seconds: float) -> None:
    from scientist.sandbox import Step, format_command, make_sandbox

    print(f"{'sandbox':<10} {'cancel flag':<12} {'wall s':>8} {'own CPU s':>10} {'% of a core':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            box = make_sandbox(name, label="bench")
            for cancellable in (False, True):
                d = Path(tmp) / f"{name}-{cancellable}"
                (d / "code").mkdir(parents=True)
                (d / "code" / "busy.py").write_text(BUSY.format(seconds=seconds))
                step = Step("train", format_command("{python} busy.py", python=box.python),
                            d / "code", d / "out", d / "o", d / "e", timeout=seconds + 60,
                            memory_mb=500)
                cancel = threading.Event() if cancellable else None
                used, wall = measure(lambda: box.run(step, cancel))  # noqa: B023
                print(f"{name:<10} {str(cancellable):<12} {wall:>8.1f} {used:>10.3f} "
                      f"{100 * used / wall:>11.2f}%")


def bench_run(seed: str, scale: str, iterations: int, sandbox: str) -> None:
    from rich.console import Console

    from scientist.config import RunConfig
    from scientist.run import Run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(seed=seed, scale=scale, iterations=iterations, runs_dir=tmp, run_id="bench",
                        report=False, sandbox=sandbox)
        run = Run.create(cfg, Console(file=sys.stderr))
        try:
            used, wall = measure(run.execute)
        finally:
            run.close()
    print(f"run of {seed} at {scale} ({iterations} variant(s), {sandbox} sandbox): {wall:.1f} s wall, "
          f"orchestrator {used:.2f} s CPU = {100 * used / wall:.2f}% of a core")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", choices=["step", "run"], default="step")
    p.add_argument("--seconds", type=float, default=20.0, help="step: how long the step trains")
    p.add_argument("--sandbox", action="append", help="step: sandboxes to measure "
                   "(default: local and process); run: the run's sandbox (default local)")
    p.add_argument("--seed", default="vsml")
    p.add_argument("--scale", default="test")
    p.add_argument("--iterations", type=int, default=1)
    a = p.parse_args()
    if a.what == "step":
        bench_step(a.sandbox or ["local", "process"], a.seconds)
    else:
        bench_run(a.seed, a.scale, a.iterations, (a.sandbox or ["local"])[0])


if __name__ == "__main__":
    main()
