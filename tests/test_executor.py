"""The local executor: slots, their GPU groups, outcomes, Ctrl-C."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from scientist.errors import SandboxError
from scientist.executor import LocalExecutor, SeedJob
from scientist.variant import SeedResult


def job(i: int) -> SeedJob:
    return SeedJob(i, f"v{i:04d}", "c0ffee", i, "fitness", f"/nowhere/{i}")


def test_each_slot_owns_a_gpu_group_and_no_two_running_jobs_share_one():
    running: dict[int, tuple[str, ...]] = {}
    clash: list[str] = []
    lock = threading.Lock()
    events: queue.Queue = queue.Queue()

    def run_seed(j: SeedJob, gpus):
        with lock:
            if gpus in running.values():
                clash.append(f"{j.variant} got {gpus}, in use")
            running[j.key] = gpus
        time.sleep(0.05)
        with lock:
            del running[j.key]
        return SeedResult(j.seed, "ok", metrics={"x": float(len(gpus))})

    ex = LocalExecutor(run_seed, 99, events.put, lambda: None, [["0", "1"], ["2", "3"], ["4", "5"]])
    assert ex.slots == 3  # as many slots as groups, whatever was asked
    seen = []
    for i in range(12):
        while len(seen) < i - 2:  # keep the three slots busy
            seen.append(events.get(timeout=10))
        ex.submit(job(i))
    while len(seen) < 12:
        seen.append(events.get(timeout=10))
    assert not clash
    assert sorted(o.job.key for o in seen) == list(range(12))
    assert all(o.result.metrics["x"] == 2.0 and o.started_at <= o.ended_at for o in seen)


def test_a_full_executor_refuses_a_job():
    gate = threading.Event()
    ex = LocalExecutor(lambda j, g: gate.wait(10) and SeedResult(j.seed, "ok"), 1,
                       lambda o: None, lambda: None)
    ex.submit(job(0))
    with pytest.raises(RuntimeError, match="every slot is busy"):
        ex.submit(job(1))
    gate.set()


def test_a_sandbox_failure_and_a_bug_are_outcomes_not_exceptions_in_a_thread():
    events: queue.Queue = queue.Queue()

    def run_seed(j: SeedJob, gpus):
        if j.key == 0:
            raise SandboxError("bubblewrap could not set up the sandbox")
        raise KeyError("a bug")

    ex = LocalExecutor(run_seed, 2, events.put, lambda: None)
    ex.submit(job(0))
    ex.submit(job(1))
    out = {o.job.key: o for o in (events.get(timeout=10), events.get(timeout=10))}
    assert out[0].result is None and "bubblewrap" in out[0].infra and out[0].error is None
    assert out[1].result is None and isinstance(out[1].error, KeyError)


def test_cancel_all_kills_until_no_job_is_left_and_reports_none():
    stop = threading.Event()
    kills = []
    events: queue.Queue = queue.Queue()

    def run_seed(j: SeedJob, gpus):
        stop.wait(30)  # a step that runs until killed
        return SeedResult(j.seed, "crash", "killed")

    def kill_all():
        kills.append(1)
        stop.set()

    ex = LocalExecutor(run_seed, 2, events.put, kill_all)
    ex.submit(job(0))
    ex.submit(job(1))
    t = time.monotonic()
    ex.cancel_all()
    assert time.monotonic() - t < 5 and kills
    time.sleep(0.1)
    assert events.empty()  # a cancelled job's outcome is not reported
