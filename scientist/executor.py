"""Executors run seed-jobs: `local` (this machine's slots) and `slurm` (a cluster, through
submitit; `scientist.slurm`). The scheduler sees only this interface, as a
`concurrent.futures.Executor` user would: submit a job, get a handle; each finished job is
reported once, through the `notify` callback the executor was made with, as a
`JobOutcome`. Backends are chosen by short name from `EXECUTORS` and imported only when used.

A job that ran to its end has a `SeedResult` (a crash, timeout or OOM of the variant is
such a result). A job that did not (its sandbox failed, its Slurm job was lost) has only
`infra`: why, which is never the variant's fault; the scheduler runs it again or stops the
run. An exception of the framework itself is `error`, which stops the run.
"""

from __future__ import annotations

import importlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from scientist.errors import SandboxError
from scientist.variant import SeedResult

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class SeedJob:
    """One seed-job as an executor sees it: small and picklable (it travels to Slurm)."""

    key: int  # its row in the archive's jobs table
    variant: str  # vNNNN
    commit: str
    seed: int
    eval_set: str  # fitness | sealed
    folder: str  # its outputs: RUN/variants/vNNNN/[sealed-]seed-S


@dataclass
class JobOutcome:
    job: SeedJob
    result: SeedResult | None = None
    infra: str = ""  # the job did not run through, not the variant's fault: why
    error: BaseException | None = None  # the framework failed: the run stops with it
    started_at: float | None = None  # on the machine that ran it
    ended_at: float | None = None
    host: str = ""
    external_id: str = ""


class Handle(Protocol):
    job: SeedJob
    external_id: str  # the executor's own id (a Slurm job id; a slot number locally)


class Executor(Protocol):
    name: str
    slots: int  # seed-jobs it runs at once; the scheduler never submits more

    def submit(self, job: SeedJob) -> Handle: ...

    def idle(self) -> None:
        """The scheduler has nothing to do until a job ends (a test executor ends one here)."""
        ...

    def cancel_all(self) -> None:
        """End every job in flight now (Ctrl-C); their outcomes are not reported."""
        ...

    def cancel_leftovers(self) -> int:
        """End what a killed orchestrator of this run left running; returns how many."""
        ...

    def close(self) -> None: ...


# run_seed(job, gpus of its slot or None) -> its SeedResult; SandboxError when the
# sandbox itself failed
RunSeed = Callable[[SeedJob, "tuple[str, ...] | None"], SeedResult]


@dataclass
class _Local:
    job: SeedJob
    external_id: str
    thread: threading.Thread | None = None


class LocalExecutor:
    """Seed-jobs on this machine, one thread per job in flight, up to `slots`. Each slot
    owns a group of GPUs when there are any (`gpu_groups`), and every step of a job runs
    with its slot's group."""

    name = "local"

    def __init__(self, run_seed: RunSeed, slots: int, notify: Callable[[JobOutcome], None],
                 kill_all: Callable[[], None], gpu_groups: list[list[str]] | None = None):
        self.run_seed, self.notify, self.kill_all = run_seed, notify, kill_all
        self.slots = max(1, slots)
        self.groups = [tuple(g) for g in gpu_groups] if gpu_groups else None
        if self.groups is not None:
            self.slots = len(self.groups)
        self._free = list(range(self.slots))
        self._running: dict[int, _Local] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def submit(self, job: SeedJob) -> _Local:
        with self._lock:
            if not self._free:
                raise RuntimeError("LocalExecutor: every slot is busy")
            slot = self._free.pop(0)
            h = _Local(job, str(slot))
            self._running[slot] = h
        h.thread = threading.Thread(target=self._run, args=(h, slot), daemon=True,
                                    name=f"job-{job.variant}-seed-{job.seed}")
        h.thread.start()
        return h

    def _run(self, h: _Local, slot: int) -> None:
        out = JobOutcome(h.job, started_at=time.time(), host=socket.gethostname(),
                         external_id=h.external_id)
        try:
            out.result = self.run_seed(h.job, self.groups[slot] if self.groups else None)
        except SandboxError as e:
            out.infra = str(e)
        except BaseException as e:  # a bug or a damaged run folder: the run stops with it
            out.error = e
        out.ended_at = time.time()
        with self._lock:
            self._running.pop(slot, None)
            self._free.append(slot)
            cancelled = self._cancelled
        if not cancelled:
            self.notify(out)

    def idle(self) -> None:
        pass

    def cancel_all(self) -> None:
        """Kill every running step, again until no job thread is left (a thread may start
        its next step in between)."""
        with self._lock:
            self._cancelled = True
            threads = [h.thread for h in self._running.values() if h.thread]
        deadline = time.monotonic() + 30
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            self.kill_all()
            for t in threads:
                t.join(POLL_SECONDS)

    def cancel_leftovers(self) -> int:
        return 0  # the sandbox's own kill_leftovers does it for local steps

    def close(self) -> None:
        pass


EXECUTORS = {"local": "scientist.executor:LocalExecutor", "slurm": "scientist.slurm:SlurmExecutor"}


def executor_class(name: str) -> type:
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)
