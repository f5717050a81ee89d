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
import sqlite3
import subprocess
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
from scientist.proposals import Ready

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
        self.making_at: list[int] = []  # jobs ended when a proposal was in the making
        # ... when jobs in flight were outranked by queued ones (a confirmation's batch
        # queued behind exploration jobs that had the slots): a resume must start the jobs
        # that were in flight first, not the batch, to go on as the run would have
        self.outranked_at: list[int] = []
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
        if gated is not None and self.making():
            self.making_at.append(self.ended)  # a stop here finds a proposal in the making
        if self.held and self.outranked():
            self.outranked_at.append(self.ended)
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

    def outranked(self) -> bool:
        queued = self.run.archive.jobs.where("status = 'queued' AND comparison_id IS NOT NULL")
        mine = set(self.held)
        running = self.run.archive.jobs.where("status = 'running'")
        return bool(queued) and any(j.id in mine and j.comparison_id is None for j in running)

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


@pytest.mark.parametrize("when", [0.1, 0.35, 0.6, 0.85, "outranked"])
def test_a_run_stopped_anywhere_and_resumed_is_the_uninterrupted_run(noisy, runs_dir, when):
    whole, made = scripted_run(noisy, runs_dir, "whole")
    assert whole.execute() == 0
    expected = record(whole)
    whole.close()
    if when == "outranked":  # a confirmation's batch waits behind the jobs in flight
        assert made[0].outranked_at, "no moment with a batch queued behind running jobs"
        stop_after = made[0].outranked_at[len(made[0].outranked_at) // 2]
    else:
        stop_after = int(when * made[0].ended)  # that share of the run's jobs ended

    run, made = scripted_run(noisy, runs_dir, "cut", stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    in_flight = made[0].at_stop
    assert in_flight, "nothing was in flight when the run was stopped"
    run.close()

    again = Run.open(runs_dir / "cut", make_console()[0])
    attach(again)
    resumed_at = time.time()
    try:
        assert again.execute() == 0
        assert record(again) == expected
        # exactly the jobs in flight at the stop ran twice; every other job once
        jobs = again.archive.jobs.where()
        twice = {(f"v{j.variant_id:04d}", j.seed, j.eval_set) for j in jobs if j.runs == 2}
        assert twice == in_flight
        assert {j.runs for j in jobs} <= {1, 2}
        # and they were started first, before any job that had waited in the queue
        after = sorted((j for j in jobs if j.submitted_at >= resumed_at), key=lambda j: j.submitted_at)
        assert {j.runs for j in after[:len(in_flight)]} == {2}
    finally:
        again.close()


@pytest.mark.parametrize("when", [0.15, 0.5, 0.8])
def test_proposals_in_the_making_are_made_again_from_what_their_selection_saw(noisy, runs_dir,
                                                                               when):
    """With proposals made in threads (as an LLM's), results arrive while they are made; a
    stop finds some in the making. The resume makes them again from the archive as their
    selection saw it, and the run ends as the uninterrupted one did."""
    whole, made = scripted_run(noisy, runs_dir, "whole")
    whole.proposer = Gated()
    assert whole.execute() == 0
    expected = record(whole)
    staleness = whole.archive.staleness()
    whole.close()
    assert max(staleness.values()) >= 1  # some proposals did miss results still in flight
    # stop at a job's end, about `when` into the run, where a proposal is in the making
    moments = made[0].making_at
    stop_after = min(moments, key=lambda n: abs(n - when * made[0].ended))

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


# --- the real local executor and sandbox ---------------------------------------------------


def overlaps(jobs) -> int:
    """The most jobs that were running at one moment (from their start and end times)."""
    points = sorted([(j.started_at, 1) for j in jobs] + [(j.ended_at, -1) for j in jobs])
    most = now = 0
    for _, d in points:
        now += d
        most = max(most, now)
    return most


def test_jobs_of_several_variants_run_at_once(toy, make_run):
    toy.add_to_train("time.sleep(0 if 'v0000' in a.out else 1.5)")
    run, out = make_run(toy, iterations=4, workers=4)
    try:
        assert run.execute() == 0
        jobs = [j for j in run.archive.jobs.where() if j.variant_id and j.comparison_id is None]
        assert {v.status for v in run.archive.all()} == {"done"}
        # two training seeds per variant, four slots: two variants' jobs at once, never more
        # than the slots
        assert 2 < overlaps(jobs) <= 4
        assert overlaps(run.archive.jobs.where()) <= 4
        # and variants were proposed ahead: some parent was chosen with results in flight
        assert max(run.archive.staleness().values()) >= 1
    finally:
        run.close()


def test_kill_9_with_several_variants_in_flight_then_resume(toy, runs_dir, scientist_cli):
    from test_run import no_steps_left, popen_cli, reopen, run_args, variants

    toy.add_to_train("time.sleep(0 if 'v0000' in a.out else 2)")
    proc = popen_cli(*run_args(toy, runs_dir, 4, "--workers", "4"), cwd=toy.path.parent)
    run_dir = runs_dir / "r"

    def running() -> set[tuple[int, int]]:
        """Jobs submitted and not done, read without taking any lock."""
        path = run_dir / "archive.sqlite"
        if not path.exists():
            return set()
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return set(db.execute("SELECT variant_id, seed FROM jobs WHERE status = 'running'"))
        except sqlite3.OperationalError:  # not made yet
            return set()
        finally:
            db.close()

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if len({v for v, _ in running()}) >= 2:
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.communicate(timeout=60)
    in_flight = running()
    assert len({v for v, _ in in_flight}) >= 2, f"not several variants in flight: {in_flight}"
    assert no_steps_left(run_dir), "a step outlived its orchestrator"

    p = scientist_cli("resume", "r", "--runs-dir", str(runs_dir), timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    for v in {v for v, _ in in_flight}:
        assert f"v{v:04d} was in flight when the run stopped" in p.stdout
    assert {r[2] for r in variants(run_dir)} == {"done"}
    a = reopen(run_dir)
    try:
        again = {(j.variant_id, j.seed) for j in a.jobs.where() if j.runs == 2}
        assert again == in_flight  # exactly the seed-jobs in flight ran again
        assert {j.runs for j in a.jobs.where()} == {1, 2}
        keys = [(j.variant_id, j.comparison_id, j.seed, j.eval_set) for j in a.jobs.where()]
        assert len(keys) == len(set(keys))  # none was added twice
        assert a.get_meta("status") == "finished"
    finally:
        a.close()


def test_proposals_wait_for_a_decision_while_approved_ones_run(toy, runs_dir):
    """--approve with several slots: the human is asked about one proposal at a time; an
    approved variant trains while the next proposal waits for its answer, and what the run
    reports meanwhile is printed after the answer, not into the prompt."""
    from conftest import cli_argv, cli_env
    from test_run import reopen, run_args

    toy.set_scale(training_seeds=1).add_to_train("time.sleep(0 if 'v0000' in a.out else 1)")
    proc = subprocess.Popen(cli_argv(*run_args(toy, runs_dir, 3, "--approve", "--workers", "2")),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=cli_env(), cwd=toy.path.parent)
    run_dir = runs_dir / "r"
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        answer(proc, lines, "proposal for iteration 1", "a\n")
        wait(lambda: "proposal for iteration 2" in "".join(lines), proc)
        # iteration 2 waits for its answer; meanwhile v0001 trains to its end
        wait(lambda: status_of(run_dir, 1) == "done", proc)
        assert not any("v0001: neg_mse" in ln for ln in lines), "printed into the open prompt"
        answer(proc, lines, "proposal for iteration 2", "r\nnot now\n")
        answer(proc, lines, "proposal for iteration 3", "q\n")
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        proc.kill()
    text = "".join(lines)
    assert proc.returncode == 0, text
    # v0001's result, held back while iteration 2 was asked, is printed after the answer
    assert text.index("proposal for iteration 2") < text.index("v0001: neg_mse")
    a = reopen(run_dir)
    try:
        assert [v.status for v in a.all()] == ["done", "done", "rejected", "pending"]
        assert a.get(2).error == "not now" and a.get_meta("status") == "stopped"
    finally:
        a.close()


def answer(proc, lines: list[str], prompt: str, text: str) -> None:
    wait(lambda: prompt in "".join(lines), proc)
    proc.stdin.write(text)
    proc.stdin.flush()


def wait(cond, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status_of(run_dir: Path, vid: int) -> str | None:
    from test_run import variants

    return next((r[2] for r in variants(run_dir) if r[0] == vid), None)


# --- an LLM proposing ahead ------------------------------------------------------------------


@pytest.fixture
def llm(monkeypatch):
    from llm_server import FakeLLM
    from test_llm import SECRET, toy_brain

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "SCIENTIST_MODEL", "SCIENTIST_API_BASE",
                "SCIENTIST_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with FakeLLM(brain=toy_brain) as server:
        yield server


def llm_settings(server) -> dict:
    return {"model": "openai/gpt-4o-mini", "api_base": server.openai_base, "llm_backoff": 0.01}


def test_llm_calls_are_made_while_variants_train(toy, make_run, llm):
    from llm_server import Reply
    from test_llm import good_reply

    # every reply takes a second; training a second too: with proposals made ahead, the
    # slots do not wait for the LLM, and the LLM does not wait for the slots
    llm.queue(*[Reply(good_reply(), delay=1.0)] * 2)
    toy.set_scale(training_seeds=1).add_to_train("time.sleep(0 if 'v0000' in a.out else 1)")
    run, out = make_run(toy, iterations=5, workers=2, **llm_settings(llm))
    try:
        assert run.execute() == 0, out.getvalue()
        calls = [(c["at"] - c["seconds"], c["at"]) for c in transcript(run.dir) if c["reply"]]
        jobs = [(j.started_at, j.ended_at) for j in run.archive.jobs.where() if j.variant_id]
        assert any(a < d and c < b for a, b in calls for c, d in jobs), \
            "no LLM call was in flight while a variant trained"
        assert [v.status for v in run.archive.all()] == ["done"] * 6
    finally:
        run.close()


def test_the_budget_is_overshot_by_at_most_the_calls_in_flight(toy, make_run, llm, runs_dir):
    from llm_server import Reply
    from test_llm import good_reply

    # three proposals are made at once (ahead 3), each passes the budget check before any
    # reply has come back; the first reply uses up the budget: no call starts after it
    llm.queue(*[Reply(good_reply(), delay=1.0)] * 3)
    toy.set_scale(training_seeds=1)
    run, out = make_run(toy, iterations=6, workers=3, ahead=3, max_tokens=1, **llm_settings(llm))
    try:
        assert run.execute() == 0, out.getvalue()
        assert "LLM token budget reached" in out.getvalue(), out.getvalue()
        assert run.archive.get_meta("status") == "stopped"
        calls = run.archive.llm_usage().calls
        assert 1 < calls <= 3 and len(llm.requests) == calls
        # the replies that came back after the stop are paid for and cached: a resume with
        # more budget makes those proposals again without a call
        pending = [v.id for v in run.archive.all() if v.status == "pending"]
    finally:
        run.close()
    assert pending
    again = Run.open(runs_dir / "r", make_console()[0], max_tokens=10**9)
    try:
        assert again.execute() == 0
        for k in pending:
            assert again.archive.get(k).status == "done"
            used = again.archive.llm_usage(k)
            assert (used.calls, used.cached_calls) == (2, 1)  # the paid call, then the cache
    finally:
        again.close()


def transcript(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "llm" / "transcript.jsonl").read_text().splitlines()]
