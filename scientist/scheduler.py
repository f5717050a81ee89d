"""Scheduler: keeps N seed-jobs in flight across variants, and is the archive's only writer.

The loop of `scientist.run`, made asynchronous. One thread (the caller's) owns the archive,
the run's git repository and every decision; the executor's jobs, the proposer's LLM calls
and a human at the approval prompt report back to it through one queue of events:

    fill the free slots from the job queue -> start proposals while pacing allows ->
    wait for an event (a job ended, a proposal is ready, a human decided) -> record it -> ...

**Jobs.** The baseline's noise seeds, each variant's training seeds, each batch of a
confirmation and the sealed test are seed-jobs in the archive's `jobs` table
(`scientist.jobs`). Confirmation and baseline jobs go first, then the exploration's, in
the order their variants were approved. A variant's result is recorded when its last job
ends; its confirmation, if it leads, is opened at once (`scientist.confirmer`).

**Pacing and staleness.** A parent is selected, and its proposal made, ahead of the slots:
a new proposal starts while fewer than `ahead` proposals are being made, waiting for a
human, or approved and waiting for a slot, and while fewer than ceil(N / T) + `ahead`
variants (T: training seeds per variant) are selected but unfinished. So a parent is
chosen from an archive that lacks the results of at most ceil(N / T) + `ahead` - 1
variants, those selected before it and still in flight; `Archive.staleness` measures it.

**Determinism and resume.** Variant ids and iteration numbers are given in selection
order. Selection draws from the random stream `rng_seed:k`, and the proposal goes on
drawing from it (the archive keeps the stream's state until the proposal is recorded);
the proposal sees the archive as it was at the selection (`Archive.history(seen)`), not as
it is when the (slow) proposer returns. So the choices are a function of the order
in which events arrive: two runs that see their jobs, proposals and decisions end in the
same order make the same variants. With one slot and the offline proposer that order is
fixed, and runs repeat exactly; with several, the order depends on timing, as it does for
any asynchronous search. A resumed run continues from what the archive records: the jobs
that were running are queued again (exactly those; finished ones keep their results), a
proposal in the making is made again from the record its selection saw (the LLM's reply,
if it had arrived, comes from the cache), and pacing restarts from the same counts, so it
makes the choices the uninterrupted run would have made given the same order of
completions after the restart. What is not reproduced: wall-clock decisions (the time
budget, the confirmation budget), and answers a human gives again.

**Stops.** Ctrl-C ends every job in flight (they stay `running` in the archive, for
resume). A clean stop (the time or LLM budget, `quit` at the prompt) starts nothing new
and lets what started finish: the variants running, and a confirmation in progress within
its budget. A failed stop (the sandbox or the LLM provider broke, the baseline failed)
ends the jobs in flight.
"""

from __future__ import annotations

import math
import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING

from scientist.console import last_line
from scientist.errors import INTERRUPTED, ScientistError, Stop
from scientist.executor import Executor, JobOutcome, SeedJob
from scientist.integrity import label as label_integrity
from scientist.jobs import QUEUED, SUBMITTED, JobRecord, job
from scientist.promotion import Comparison
from scientist.proposals import Decided, Ledger, Making, Proposals, Ready, notebook_of
from scientist.variant import CLEAN, DONE, FAILED, PENDING, RUNNING, Fitness, Result, Variant

INTERRUPT_CHECK = 0.5  # seconds: how often the loop looks for a Ctrl-C it did not receive

__all__ = ["Ledger", "Scheduler", "Stop", "notebook_of"]

if TYPE_CHECKING:
    from scientist.run import Run


class Scheduler(Proposals):
    """The run's loop; see the module docstring. Its proposal side is `Proposals`."""

    def __init__(self, run: Run, executor: Executor, events: queue.Queue, ahead: int):
        self.run, self.executor, self.events = run, executor, events
        self.a = run.archive
        self.scale = run.seed.scale(run.config.scale)
        self.slots = executor.slots
        self.ahead = ahead
        self.cap = math.ceil(self.slots / self.scale.training_seeds) + self.ahead
        self.queue: list[JobRecord] = []  # jobs to submit, in order of priority
        self.flight: dict[int, JobRecord] = {}  # job id -> job running
        self.not_before: dict[int, float] = {}  # job id -> when it may run again (infra)
        self.infra: dict[int, int] = {}  # job id -> sandbox failures so far
        self.making: dict[int, Making] = {}  # variant id -> proposal being made or reviewed
        self.calling: set[int] = set()  # variant ids whose proposer thread is still working
        self.started: set[int] = set()  # exploration variants with a job submitted
        self.confirming: Comparison | None = None
        self.batch_start = 0.0
        self.sealing: Comparison | None = None
        self.stop: Stop | None = None
        self.review: queue.Queue | None = None  # proposals for the human, one at a time
        self.last_beat = time.monotonic()
        self.resumed: set[int] = set()  # jobs that were running when the run stopped

    # --- the loop --------------------------------------------------------------------
    def loop(self) -> None:
        """Run until nothing is left to do; raises Stop (after a clean stop has drained)."""
        try:
            self.restore()
            while True:
                self.drain_ledger()
                if self.stop is not None and not self.stop.drain:
                    self.executor.cancel_all()
                    raise self.stop
                self.fill()
                if self.stop is not None and not self.stop.drain:
                    continue
                if self.finished():
                    if (self.stop is None or not self.stop.failed) and self.begin_sealed():
                        continue
                    if self.stop is not None:
                        raise self.stop
                    return
                self.wait()
        finally:
            self.drain_ledger()

    def wait(self) -> None:
        """Until the next event (or the next heartbeat, or a job's retry is due)."""
        if time.monotonic() - self.last_beat >= self.run.heartbeat_seconds:
            self.beat()  # also when events keep coming
        self.executor.idle()
        if INTERRUPTED.is_set():  # a Ctrl-C whose KeyboardInterrupt was swallowed (run.py)
            raise KeyboardInterrupt
        try:  # at most INTERRUPT_CHECK s per wait, so such a Ctrl-C is not lost for long
            ev = self.events.get(timeout=min(self.timeout(), INTERRUPT_CHECK))
        except queue.Empty:
            return
        self.handle(ev)

    def handle(self, ev: object) -> None:
        if isinstance(ev, JobOutcome):
            self.job_ended(ev)
        elif isinstance(ev, Ready):
            self.proposal_ready(ev)
        elif isinstance(ev, Decided):
            self.decided(ev.making, ev.decision)

    def timeout(self) -> float:
        t = self.run.heartbeat_seconds - (time.monotonic() - self.last_beat)
        if self.not_before:
            t = min(t, min(self.not_before.values()) - time.monotonic())
        return max(0.01, t)

    def finished(self) -> bool:
        if self.flight or self.confirming is not None or self.sealing is not None:
            return False
        if self.calling:  # LLM calls in flight are paid for: their replies are recorded
            return False
        if self.stop is None and (self.making or self.queue or self.can_propose(check=False)):
            return False
        # stopping: only the jobs of what already started still run
        return not any(self.may_start(j) for j in self.queue)

    def fail(self, stop: Stop) -> None:
        """Stop the run: the first reason stands, unless a harder one comes (ending the jobs
        in flight beats letting them finish; a failure beats a clean stop)."""
        def rank(s: Stop) -> tuple[bool, bool]:
            return (not s.drain, s.failed)

        if self.stop is None or rank(stop) > rank(self.stop):
            self.stop = stop

    # --- jobs --------------------------------------------------------------------------
    def enqueue(self, jobs: list[JobRecord]) -> None:
        self.queue += jobs
        self.queue.sort(key=self.priority)

    def priority(self, j: JobRecord) -> tuple[int, int]:
        """Jobs that were running when the run stopped first (a resume starts exactly those
        again before anything else), then the baseline's and the confirmations', then the
        exploration's in the order their variants were approved."""
        if j.id in self.resumed:
            return (0, j.id)
        first = j.comparison_id is not None or j.variant_id == 0
        return (1 if first else 2, j.id)

    def may_start(self, j: JobRecord) -> bool:
        """Under a stop only the jobs of what already started: a variant begun, a
        confirmation's batch, the baseline."""
        return (self.stop is None or j.comparison_id is not None or j.variant_id == 0
                or j.variant_id in self.started)

    def fill(self) -> None:
        progress = True
        while progress and (self.stop is None or self.stop.drain):
            progress = False
            while len(self.flight) < self.slots:
                j = self.next_job()
                if j is None:
                    break
                self.submit(j)
                progress = True
            if self.can_propose():
                self.select()
                progress = True

    def next_job(self) -> JobRecord | None:
        now = time.monotonic()
        for j in self.queue:
            if self.not_before.get(j.id, 0) > now or not self.may_start(j):
                continue
            if (j.comparison_id is None and j.variant_id != 0 and j.variant_id not in self.started
                    and not self.budget_allows()):
                continue  # a new variant would overrun the time budget (a stop is set)
            return j
        return None

    def submit(self, j: JobRecord) -> None:
        v = self.a.get(j.variant_id)
        spec = SeedJob(j.id, v.name, v.commit, j.seed, j.eval_set, str(self.folder(v, j)))
        self.queue.remove(j)
        self.not_before.pop(j.id, None)
        self.a.jobs.submitted(j.id, self.executor.name)
        try:
            handle = self.executor.submit(spec)
        except ScientistError as e:  # e.g. sbatch refused: as if the sandbox failed
            self.job_ended(JobOutcome(spec, infra=str(e)), submitted=False)
            return
        if handle.external_id:
            self.a.jobs.started(j.id, handle.external_id)
        self.flight[j.id] = j
        if j.comparison_id is None and j.variant_id != 0:
            self.started.add(j.variant_id)

    def job_ended(self, out: JobOutcome, submitted: bool = True) -> None:
        j = self.flight.pop(out.job.key, None) if submitted else self.a.jobs.get(out.job.key)
        if j is None:
            return  # a job cancelled or reported twice
        if out.error is not None:
            raise out.error
        v = self.a.get(j.variant_id)
        if out.result is None:
            self.infra_failed(j, v, out.infra)
            return
        r = self.run.evaluator.redactor.dataclass(out.result)
        self.a.jobs.done(j.id, r, out.started_at, out.ended_at, out.host)
        self.infra.pop(j.id, None)
        if j.comparison_id is None:  # a variant's own seed: say so
            self.run.progress.seed_done(v.iteration, v, r, self.run.seed.metric)
            if not any(x.variant_id == v.id and x.comparison_id is None
                       for x in [*self.queue, *self.flight.values()]):
                self.variant_done(v)
        else:
            self.batch_done(j.comparison_id)

    def infra_failed(self, j: JobRecord, v: Variant, why: str) -> None:
        """The job did not run through, not the variant's fault: run it again after a
        pause, up to the evaluator's `infra_retries`, then stop the run with it in flight."""
        n = self.infra[j.id] = self.infra.get(j.id, 0) + 1
        ev = self.run.evaluator
        if n > ev.infra_retries:
            self.fail(Stop(f"the {self.run.sandbox.name} sandbox failed while running {v.name}, "
                           f"which is not the variant's fault: {why}\nThe archive is intact; once "
                           f"that is fixed, `scientist resume {self.run.dir.name}` runs those "
                           "seeds again.", failed=True, drain=False))
            return
        wait = ev.infra_wait * 2 ** (n - 1)
        self.run.progress.line(v.iteration, f"{v.name} seed {j.seed}: [yellow]not run through[/] "
                                            f"({why.splitlines()[0][:200]}); again in {wait:.0f} s")
        self.a.jobs.queue_again(j.id)
        j.status = QUEUED
        self.not_before[j.id] = time.monotonic() + wait
        self.enqueue([j])

    # --- a variant's result ------------------------------------------------------------
    def variant_done(self, v: Variant) -> None:
        seeds = sorted((j for j in self.a.jobs.of_variant(v.id) if j.result is not None),
                       key=lambda j: (j.eval_set, j.seed))
        result = Result([j.result for j in seeds], self.run.seed.metric)
        self.started.discard(v.id)
        integrity = label_integrity(result, self.run.seed, self.run.config.scale)
        self.a.finish(v.id, result, DONE if result.ok else FAILED, integrity)
        self.a.set_meta("elapsed_seconds", self.run.progress.elapsed)
        p = self.run.progress
        fit = Fitness(result.mean, self.run.seed.maximize)
        if integrity[0] != CLEAN:
            self.a.log("integrity", f"{integrity[0]}: {integrity[1]}", v.id)
            p.line(v.iteration, f"{v.name}: [bold red]{integrity[0]}[/] — {integrity[1]}")
        if not result.ok:
            p.line(v.iteration, f"{v.name}: [red]failed[/] — {result.reason}")
            return
        se = f" ± {result.stderr:.4f}" if result.stderr is not None else ""
        p.line(v.iteration, f"{v.name}: {self.run.seed.metric} = {fit}{se} (s.e.) over "
                            f"{len(result.values)} seeds")
        if integrity[0] != CLEAN:
            return
        if v.parent_id is None:
            noise = self.run.promotion.noise()
            if noise is not None:
                p.line(0, noise.describe(self.run.seed.metric, self.run.promotion.design))
            if p.best is None:  # the baseline is the first confirmed best
                p.best = fit
                self.run.workspace.tag_best(v.commit)
            return
        c = self.run.confirmer.challenge(self.a.get(v.id), busy=self.confirming is not None)
        if c is not None:
            self.next_batch(c)

    # --- confirmations and the sealed test ----------------------------------------------
    def next_batch(self, c: Comparison) -> None:
        """Queue `c`'s next batch, or conclude it (and start the next waiting lead's)."""
        confirmer = self.run.confirmer
        seeds = confirmer.next_batch(c)
        if not seeds:
            if c.kind == "sealed":
                self.sealing = None
                return
            confirmer.conclude(self.run.promotion._get(c.id))
            self.confirming = None
            nxt = confirmer.next_waiting()
            if nxt is not None:
                self.next_batch(nxt)
            return
        self.a.jobs.add([job(side, s, c.id, "sealed" if c.kind == "sealed" else "fitness")
                         for side in (c.challenger_id, c.incumbent_id) for s in seeds])
        self.set_active(c)
        self.batch_start = time.monotonic()
        self.enqueue([j for j in self.a.jobs.of_comparison(c.id) if j.status == QUEUED])

    def set_active(self, c: Comparison) -> None:
        if c.kind == "sealed":
            self.sealing = c
        else:
            self.confirming = c

    def batch_done(self, cid: int) -> None:
        c = self.run.promotion._get(cid)
        batch = [j for j in self.a.jobs.of_comparison(cid) if j.seed not in c.seeds]
        if any(j.result is None for j in batch):
            return
        side = {x: Result([j.result for j in sorted(batch, key=lambda j: j.seed)
                           if j.variant_id == x], self.run.seed.metric)
                for x in (c.challenger_id, c.incumbent_id)}
        c = self.run.confirmer.record(c, side[c.challenger_id], side[c.incumbent_id],
                                      time.monotonic() - self.batch_start)
        self.next_batch(c)

    def begin_sealed(self) -> bool:
        c = self.run.confirmer.sealed()
        if c is None:
            return False
        self.next_batch(c)
        return self.sealing is not None

    # --- start and resume ------------------------------------------------------------------
    def restore(self) -> None:
        """Pick up where the archive says the run is: the baseline to evaluate, jobs that
        were queued or running (run again), proposals to make again, a confirmation or the
        sealed test in progress."""
        run, a = self.run, self.a
        if not a.count():
            v = a.new_variant(None, 0, status=PENDING, commit=a.get_meta("pristine_commit"),
                              hypothesis="", proposer="baseline")
            n = run.noise_seeds()
            a.propose(v.id, RUNNING, jobs=[job(v.id, s) for s in range(n)])
            run.progress.line(0, f"{v.name}: evaluating the unmodified seed on {n} training seeds "
                                 "(its spread between them is the run's noise floor)")
        again: dict[int, int] = {}
        for j in a.jobs.unfinished():
            if j.status == SUBMITTED:
                a.jobs.queue_again(j.id)
                j.status = QUEUED
                self.resumed.add(j.id)
                again[j.variant_id] = again.get(j.variant_id, 0) + 1
            self.enqueue([j])
        for vid, n in sorted(again.items()):
            run.progress.line(a.get(vid).iteration, f"v{vid:04d} was in flight when the run stopped; "
                                                    f"running its {n} unfinished seed-job(s) again")
        for v in a.in_flight():
            own = a.jobs.of_variant(v.id)
            if v.parent_id is not None and any(j.runs for j in own):
                self.started.add(v.id)
            if v.status == RUNNING and not own:  # a run from before jobs
                n = run.noise_seeds() if v.parent_id is None else self.scale.training_seeds
                a.jobs.add([job(v.id, s) for s in range(n)])
                run.progress.line(v.iteration, f"{v.name} was in flight when the run stopped; "
                                               "evaluating it again")
                self.enqueue(a.jobs.of_variant(v.id))
            elif v.status == RUNNING and all(j.result is not None for j in own):
                self.variant_done(v)  # its last job's result was stored, not yet its own
        for c in run.promotion.comparisons(None):
            if c.decided:
                continue
            if c.kind == "sealed":
                self.sealing = c
            else:
                self.confirming = c
            if any(j.seed not in c.seeds for j in a.jobs.of_comparison(c.id)):
                self.batch_start = time.monotonic()
                self.batch_done(c.id)  # records it if its jobs had all ended
            else:
                self.next_batch(c)
        for v in a.in_flight():
            if v.status == PENDING and v.parent_id is not None:
                parent = a.get(v.parent_id)
                repair = run.repair_depth(parent) if parent.status == FAILED else None
                self.start_proposal(v, parent, repair)

    # --- the console ---------------------------------------------------------------------
    def beat(self) -> None:
        """Every `heartbeat_seconds`: what each running job is doing (its last log line)."""
        self.last_beat = time.monotonic()
        for j in sorted(self.flight.values(), key=lambda j: (j.variant_id, j.seed)):
            v = self.a.get(j.variant_id)
            d = self.folder(v, j)
            logs = [p for p in (d / "train.out", d / "evaluate.out") if p.exists()]
            if not logs:
                continue
            log = max(logs, key=lambda p: p.stat().st_mtime)
            step = "training" if log.name == "train.out" else "evaluating"
            self.run.progress.line(v.iteration, f"{v.name} {j.prefix}seed {j.seed} {step}: "
                                                f"[dim]{last_line(log) or '(no output yet)'}[/]")

    def folder(self, v: Variant, j: JobRecord) -> Path:
        return self.run.dir / "variants" / v.name / f"{j.prefix}seed-{j.seed}"

    def drain_ledger(self) -> None:
        ledger = getattr(self.run, "ledger", None)
        for row in ledger.drain() if ledger else ():
            self.a.add_llm_call(row)
