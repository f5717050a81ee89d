"""Per-step cost of a sandbox: a trivial step from start to removal, for the local sandbox
(bubblewrap and a cgroup), the unconfined process sandbox and Docker.

Each repetition runs the same trivial step (`python -c pass` with the sandbox's own
interpreter) through `Sandbox.run`, which for the Docker sandbox covers creating the
container, starting it, waiting for it, reading its state and removing it; for the local
sandbox, making the step's cgroup, starting bubblewrap, waiting for it and removing the
cgroup; for the process sandbox, starting the process, supervising it and killing what
it left. Wall time of the
whole call is the overhead a variant pays per step (a variant is 2 steps per training
seed). A step that prints nothing and exits at once measures only the sandbox.

    python bench/container_overhead.py            # 20 steps each
    python bench/container_overhead.py -n 50 --only docker
    python bench/container_overhead.py --only local --only process

Needs a Docker daemon and a current image (`scientist sandbox build`) for the Docker
rows. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from scientist.process_sandbox import ProcessSandbox
from scientist.sandbox import LocalSandbox, Step, format_command


PHASES: dict[str, list[float]] = defaultdict(list)


def time_docker_phases() -> None:
    """Time each Docker API call the sandbox makes (create, start, wait, ..., remove)."""
    from docker.api.client import APIClient
    from docker.models.containers import Container, ContainerCollection

    def wrap(owner, name, label):
        fn = getattr(owner, name)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                PHASES[label].append(time.perf_counter() - t)
        setattr(owner, name, timed)

    wrap(ContainerCollection, "create", "create")
    wrap(Container, "start", "start")
    wrap(Container, "wait", "wait (step runs)")
    wrap(Container, "reload", "inspect")
    wrap(Container, "logs", "logs")
    wrap(APIClient, "remove_container", "remove")


def measure(sandbox, n: int, folder: Path) -> list[float]:
    times = []
    for i in range(n):
        d = folder / f"{sandbox.name}-{i}"
        d.mkdir(mode=0o755)
        step = Step("train", format_command("{python} -c pass", python=sandbox.python), d,
                    d / "out", d / "step.out", d / "step.err", timeout=60, memory_mb=256)
        t = time.perf_counter()
        res = sandbox.run(step)
        times.append(time.perf_counter() - t)
        if not res.ok:
            raise SystemExit(f"{sandbox.name}: the trivial step failed: {res.reason}")
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=20, help="steps per sandbox")
    p.add_argument("--only", choices=["local", "process", "docker"], action="append")
    a = p.parse_args()
    only = set(a.only or ["local", "process", "docker"])
    boxes = []
    if "local" in only:
        boxes.append(LocalSandbox(label="bench"))
    if "process" in only:
        boxes.append(ProcessSandbox(label="bench"))
    if "docker" in only:
        from scientist.docker_sandbox import DockerSandbox

        boxes.append(DockerSandbox(label="bench-container-overhead"))
        time_docker_phases()
    print(f"trivial step (`python -c pass`), {a.n} runs each, start to removal, seconds")
    print(f"{'sandbox':8} {'median':>8} {'mean':>8} {'min':>8} {'max':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for box in boxes:
            box_dir = Path(tmp) / box.name
            box_dir.mkdir(mode=0o755)
            (box_dir / "warm").mkdir(mode=0o755)
            measure(box, 2, box_dir / "warm")  # warm-up: first reads of the image and caches
            PHASES.clear()
            t = measure(box, a.n, box_dir)
            print(f"{box.name:8} {statistics.median(t):8.3f} {statistics.mean(t):8.3f} "
                  f"{min(t):8.3f} {max(t):8.3f}")
            for label, xs in PHASES.items():  # Docker: seconds per step in each API call
                print(f"  {label:18} {sum(xs) / a.n:8.3f} per step ({len(xs) / a.n:.0f} calls)")


if __name__ == "__main__":
    main()
