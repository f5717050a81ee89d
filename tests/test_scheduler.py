"""The scheduler: N seed-jobs in flight across variants, proposals made ahead, resume.

Two kinds of tests. With an executor that ends jobs in an order the test chooses
(`Scripted`), runs are checked for what the scheduler promises given a completion order:
the same order makes the same run, and a run stopped anywhere and resumed makes the run an
uninterrupted one makes, running again exactly the jobs that were in flight. With the
real local executor and sandbox, the toy seed checks that jobs of several variants do run
at once, and that proposals are paced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import ToySeed, make_console
from inline import InlineSandbox
from scientist.config import RunConfig
from scientist.executor import JobOutcome, SeedJob
from scientist.promotion import PROMOTED, Promotion
from scientist.run import Run
from scientist.scheduler import Ready

NOISY = Path(__file__).resolve().parent / "fixtures" / "noisyseed"


@pytest.fixture
def noisy(tmp_path: Path) -> ToySeed:
    dst = tmp_path / "noisyseed"
    shutil.copytree(NOISY, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return ToySeed(dst)


class Gated:
    """The offline proposer made slow like an LLM: each proposal is made in the scheduler's
    proposal thread, and returns only when the executor lets it (`release`), one at a time,
    after a job has ended. Results therefore arrive while proposals are being made, and a
    stop can find proposals in the making, as with an LLM, in an order the test fixes."""

    name = "offline"
    uses_llm = True  # made in a thread, as an LLM's proposals are

    def __init__(self):
        from scientist.offline import OfflineProposer

        self.inner = OfflineProposer()
        self.cond = threading.Condition()
        self.waiting: list[int] = []  # iterations whose proposal waits to be let go
        self.released: set[int] = set()
        self.aborted = False

    def describe(self) -> str:
        return "offline proposer, gated"

    def propose(self, ctx):
        with self.cond:
            self.waiting.append(ctx.iteration)
            self.cond.wait_for(lambda: ctx.iteration in self.released or self.aborted)
            if self.aborted:
                raise RuntimeError("aborted")
        return self.inner.propose(ctx)

    def release_first(self, timeout: float = 30) -> bool:
        """Let the lowest waiting iteration's proposal go (waiting for it to start, if a
        thread was started but has not reached the gate yet)."""
        with self.cond:
            if not self.waiting:
                return False
            k = min(self.waiting)
            self.waiting.remove(k)
            self.released.add(k)
            self.cond.notify_all()
            return True

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()


class Handle:
    def __init__(self, job: SeedJob):
        self.job, self.external_id = job, ""


class Scripted:
    """Runs a job when it is submitted (in this thread, in-process) and keeps its outcome;
    when the scheduler has nothing else to do, ends one: the job in flight whose
    (variant, seed, set) hashes lowest. The order is a function of what is in flight only,
    so a resumed run that has the same jobs in flight sees the same order. `stop_after`
    jobs ended, it raises KeyboardInterrupt (Ctrl-C) instead."""

    name = "scripted"

    def __init__(self, run: Run, slots: int, notify, stop_after: int | None = None):
        self.run, self.slots, self.notify, self.stop_after = run, slots, notify, stop_after
        self.held: dict[int, JobOutcome] = {}
        self.ended = 0
        self.at_stop: set[tuple[str, int, str]] = set()
        self.delivered = 0  # proposals that handed their result to the scheduler
        events = notify.__self__  # the scheduler's queue: count the proposals' results in it
        put = events.put

        def counting_put(item, *args, **kwargs):
            if isinstance(item, Ready):
                self.delivered += 1
            put(item, *args, **kwargs)

        events.put = counting_put

    def submit(self, job: SeedJob) -> Handle:
        assert len(self.held) < self.slots, "the scheduler submitted more jobs than slots"
        r = self.run.evaluator.run_seed(job.commit, job.seed, Path(job.folder), job.eval_set)
        self.held[job.key] = JobOutcome(job, r)
        return Handle(job)

    def idle(self) -> None:
        gated = self.run.proposer if isinstance(self.run.proposer, Gated) else None
        if gated is not None:
            # a proposal let go has handed its result over before anything else happens,
            # and the scheduler takes it first
            deadline = time.monotonic() + 30
            while self.delivered < len(gated.released) and time.monotonic() < deadline:
                time.sleep(0.002)
            if not self.notify.__self__.empty():
                return
            # proposal threads that were started reach the gate
            need = self.making()
            while len(gated.waiting) < need and time.monotonic() < deadline:
                time.sleep(0.002)
        if self.held:
            if self.stop_after is not None and self.ended >= self.stop_after:
                self.at_stop = {key(o.job) for o in self.held.values()}
                raise KeyboardInterrupt
            first = min(self.held.values(), key=lambda o: order(o.job))
            del self.held[first.job.key]
            self.ended += 1
            self.notify(first)
        if gated is not None:
            gated.release_first()

    def making(self) -> int:
        """Proposals the scheduler is making (its pending variants not yet let go)."""
        g = self.run.proposer
        return sum(1 for v in self.run.archive.in_flight()
                   if v.status == "pending" and v.id not in g.released)

    def cancel_all(self) -> None:
        self.held.clear()

    def cancel_leftovers(self) -> int:
        return 0

    def close(self) -> None:
        pass


def key(job: SeedJob) -> tuple[str, int, str]:
    return (job.variant, job.seed, job.eval_set)


def order(job: SeedJob) -> str:
    return hashlib.sha256(repr(key(job)).encode()).hexdigest()


def scripted_run(seed: ToySeed, runs_dir: Path, run_id: str, stop_after: int | None = None,
                 **settings) -> tuple[Run, list[Scripted]]:
    cfg = RunConfig(**{"seed": str(seed.path), "scale": "test", "runs_dir": str(runs_dir),
                       "run_id": run_id, "report": False, "iterations": 10, "rng_seed": 3,
                       "workers": 3, **settings})
    run = Run.create(cfg, make_console()[0])
    (run.dir / "secret.json").write_text(json.dumps({"eval_seed": 77}))
    return run, attach(run, stop_after)


def attach(run: Run, stop_after: int | None = None) -> list[Scripted]:
    made: list[Scripted] = []
    run.sandbox = InlineSandbox()

    def make(run, workers, threads, notify):
        made.append(Scripted(run, workers, notify, stop_after))
        return made[-1]

    run.make_executor = make
    return made


def record(run: Run) -> tuple:
    """Everything a run decided: its variants, their values, its comparisons, its claim."""
    p = Promotion.of(run.archive)
    return ([(v.id, v.parent_id, v.iteration, v.status, v.hypothesis,
              [s.metrics for s in v.result.seeds] if v.result else None)
             for v in run.archive.all()],
            [(c.kind, c.challenger_id, c.incumbent_id, c.seeds, c.values(), c.decision)
             for c in p.comparisons(None)],
            p.claim("score"))


def test_the_same_completion_order_makes_the_same_run(noisy, runs_dir):
    runs = []
    for i in range(2):
        run, _ = scripted_run(noisy, runs_dir, f"r{i}")
        assert run.execute() == 0
        runs.append(record(run))
        staleness = run.archive.staleness()
        run.close()
    variants, comparisons, _ = runs[0]
    assert runs[0] == runs[1]
    assert len(variants) == 11 and comparisons  # it explored and confirmed
    # proposals were made ahead: some parents were chosen without results still in flight,
    # never more than the pacing allows (ceil(3 slots / 2 seeds) + ahead 2 - 1)
    assert max(staleness.values()) >= 1
    assert max(staleness.values()) <= 2 + 2 - 1


@pytest.mark.parametrize("stop_after", [3, 9, 17, 26, 40])
def test_a_run_stopped_anywhere_and_resumed_is_the_uninterrupted_run(noisy, runs_dir, stop_after):
    whole, _ = scripted_run(noisy, runs_dir, "whole")
    assert whole.execute() == 0
    expected = record(whole)
    whole.close()

    run, made = scripted_run(noisy, runs_dir, "cut", stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    in_flight = made[0].at_stop
    assert in_flight, "nothing was in flight when the run was stopped"
    run.close()

    again = Run.open(runs_dir / "cut", make_console()[0])
    attach(again)
    try:
        assert again.execute() == 0
        assert record(again) == expected
        # exactly the jobs in flight at the stop ran twice; every other job once
        twice = {(f"v{j.variant_id:04d}", j.seed, j.eval_set)
                 for j in again.archive.jobs.where() if j.runs == 2}
        assert twice == in_flight
        assert {j.runs for j in again.archive.jobs.where()} <= {1, 2}
    finally:
        again.close()


@pytest.mark.parametrize("stop_after", [5, 12, 18])
def test_proposals_in_the_making_are_made_again_from_what_their_selection_saw(noisy, runs_dir,
                                                                               stop_after):
    """With proposals made in threads (as an LLM's), results arrive while they are made; a
    stop finds some in the making. The resume makes them again from the archive as their
    selection saw it, and the run ends as the uninterrupted one did."""
    whole, _ = scripted_run(noisy, runs_dir, "whole")
    whole.proposer = Gated()
    assert whole.execute() == 0
    expected = record(whole)
    staleness = whole.archive.staleness()
    whole.close()
    assert max(staleness.values()) >= 1  # some proposals did miss results still in flight

    run, made = scripted_run(noisy, runs_dir, "cut", stop_after=stop_after)
    run.proposer = gated = Gated()
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    gated.abort()
    assert any(v.status == "pending" for v in run.archive.in_flight()), "no proposal in the making"
    run.close()

    again = Run.open(runs_dir / "cut", make_console()[0])
    again.proposer = Gated()
    attach(again)
    try:
        assert again.execute() == 0
        assert record(again) == expected
    finally:
        again.close()


def test_a_confirmation_uses_the_slots_while_exploration_goes_on(noisy, runs_dir):
    noisy.only_mutable('[[mutable]]\nfile = "train.py"\nname = "boost"\ntype = "bool"\n'
                       '[[mutable]]\nfile = "train.py"\nname = "knob"\ntype = "float"\n'
                       'low = 0.0\nhigh = 10.0\n')
    run, _ = scripted_run(noisy, runs_dir, "r", iterations=8)
    try:
        assert run.execute() == 0
        p = run.promotion
        promoted = [c for c in p.comparisons() if c.decision == PROMOTED]
        assert promoted, "boost (+3 sd) was never promoted"
        jobs = run.archive.jobs.where()
        # a confirmation's seeds are ordinary jobs, of both sides, on the same fresh seeds
        c = promoted[0]
        mine = [j for j in jobs if j.comparison_id == c.id]
        assert sorted(j.seed for j in mine if j.variant_id == c.challenger_id) == c.seeds
        assert sorted(j.seed for j in mine if j.variant_id == c.incumbent_id) == c.seeds
        # and while they ran, other variants' jobs were submitted
        first, last = min(j.submitted_at for j in mine), max(j.archived_at for j in mine)
        assert any(j.comparison_id is None and j.variant_id not in (c.challenger_id, 0)
                   and first < j.submitted_at < last for j in jobs)
    finally:
        run.close()
