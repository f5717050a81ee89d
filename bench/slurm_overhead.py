"""What a Slurm job costs a seed-job: from submission to its start, from its end to its result
in the archive; and the orchestrator's CPU while 8 jobs are in flight.

The sleeping toy seed of bench/throughput.py runs through `--executor slurm` with N slots.
Per seed-job (the archive's jobs table): `queue + start` is sbatch's return to the job's
first line of Python on the node (the controller's scheduling, the node's launch, Python
and submitit starting, the call unpickled); `notice + archive` is the job's last line to
the result stored by the orchestrator (the poll interval, reading the result, the archive
write). The orchestrator's CPU is this process's (all threads; steps and Slurm not counted).

    .ci/slurm-up.sh && python bench/slurm_overhead.py                 # poll 10 s and 1 s
    python bench/slurm_overhead.py --poll 10 --slots 8 --train 10

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cpu, sleep_seed  # noqa: E402

from scientist.config import RunConfig  # noqa: E402
from scientist.run import Run  # noqa: E402


def run_once(seed: Path, runs: Path, slots: int, poll: float, variants: int) -> None:
    import io
    import time

    from rich.console import Console

    cfg = RunConfig(seed=str(seed), scale="test", iterations=variants, runs_dir=str(runs),
                    run_id=f"poll{poll:g}", report=False, workers=slots, executor="slurm",
                    slurm_poll=poll)
    run = Run.create(cfg, Console(file=io.StringIO()))
    run.heartbeat_seconds = 3600
    c0, t0 = cpu(), time.monotonic()
    try:
        run.execute()
        jobs = [j for j in run.archive.jobs.where() if j.result]
    finally:
        run.close()
    used, wall = cpu() - c0, time.monotonic() - t0
    start = [j.started_at - j.submitted_at for j in jobs]
    end = [j.archived_at - j.ended_at for j in jobs]
    # where the start went: Slurm's scheduling and launch (to the job's Python process), then
    # Python, submitit and the call's imports (from the job's own record of its process)
    launched = {}
    for j in jobs:
        with open(run.dir / "slurm" / j.external_id / f"{j.external_id}_0_result.pkl", "rb") as f:
            launched[j.id] = pickle.load(f)[1].get("process_started_at")
    slurm = [launched[j.id] - j.submitted_at for j in jobs if launched[j.id]]
    python = [j.started_at - launched[j.id] for j in jobs if launched[j.id]]
    print(f"poll {poll:g} s, {slots} slots, {len(jobs)} seed-jobs in {wall:.0f} s; orchestrator "
          f"CPU {used:.2f} s = {100 * used / wall:.2f}% of a core")
    for name, xs in (("queue + start", start), ("  of which Slurm", slurm),
                     ("  of which Python", python), ("notice + archive", end)):
        xs = sorted(xs)
        print(f"  {name:<18} median {statistics.median(xs):6.2f} s, 90th percentile "
              f"{xs[int(0.9 * (len(xs) - 1))]:6.2f} s, max {xs[-1]:6.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--poll", type=float, nargs="+", default=[10.0, 1.0])
    p.add_argument("--train", type=float, default=5.0)
    p.add_argument("--evaluate", type=float, default=1.0)
    p.add_argument("--variants", type=int, default=16)
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores; steps sleep "
          f"{a.train:g} s + {a.evaluate:g} s")
    # the run folder must be on a filesystem the nodes see: here, the one machine
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCIENTIST_BENCH_DIR")) as tmp:
        seed = sleep_seed(Path(tmp) / "sleepseed", a.train, a.evaluate)
        for poll in a.poll:
            run_once(seed, Path(tmp) / "runs", a.slots, poll, a.variants)


if __name__ == "__main__":
    sys.exit(main())
