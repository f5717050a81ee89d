"""Proposals: parents selected and proposals made ahead of the slots, for the scheduler.

`Proposals` is the scheduler's side that selects (a parent, or a failed variant to repair),
makes the proposal (here for the offline proposer, in a thread of its own for an LLM,
from the archive as the selection saw it), has it reviewed (the approval queue: one
question at a time, in a thread, while the jobs go on) and records it: committed with its
seed-jobs queued, rejected, or invalid. Pacing (how many proposals ahead, how stale a
parent may get) is `can_propose`; see `scientist.scheduler` for the whole loop. Only the
scheduler's thread touches the archive: proposal threads get a `Context` made before they
start, and their LLM call records go through the `Ledger`.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scientist.edits import apply_edits, unified_diff
from scientist.errors import (BudgetExceeded, EditError, FormatError, ProposalError,
                              ScientistError, Stop)
from scientist.gate import APPROVE, QUIT, Decision
from scientist.jobs import job
from scientist.llm import ProviderError, Usage, redact
from scientist.notebook import Notebook
from scientist.proposer import Context
from scientist.selection import NoParentError
from scientist.variant import INVALID, PENDING, REJECTED, RUNNING, Fitness, Proposal, Variant

if TYPE_CHECKING:
    from scientist.run import Run


@dataclass
class Making:
    """A proposal being made (or waiting for a human) for the selected variant `k`."""

    k: int
    parent: Variant
    repair: int | None  # the attempt number when it repairs a failed parent
    ctx: Context
    proposal: Proposal | None = None
    files: dict[str, str] = field(default_factory=dict)  # the new editable files


@dataclass
class Ready:
    """A proposer finished (or failed): the event a proposal thread posts."""

    making: Making
    error: BaseException | None = None


@dataclass
class Decided:
    making: Making
    decision: Decision


class Ledger:
    """LLM calls recorded by proposal threads, written to the archive by the scheduler.
    `spent` is what the budget checks: every call recorded so far."""

    def __init__(self, spent: Usage, wake: queue.Queue):
        self._usage, self._rows, self._wake = spent, [], wake
        self._lock = threading.Lock()

    def spent(self) -> Usage:
        with self._lock:
            return Usage(**self._usage.__dict__)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(entry)
            if not entry.get("error"):
                u = self._usage
                u.calls += 1
                if entry.get("cached"):
                    u.cached_calls += 1
                else:
                    u.prompt_tokens += entry.get("prompt_tokens") or 0
                    u.completion_tokens += entry.get("completion_tokens") or 0
                    u.cost += entry.get("cost") or 0.0
                    u.unpriced_calls += not entry.get("priced", True)
        self._wake.put(None)

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows


class Proposals:
    """The proposal side of the `Scheduler` (a mixin: it shares the scheduler's state)."""

    def can_propose(self, check: bool = True) -> bool:
        """Whether a new parent may be selected now (pacing, budgets, iterations). With
        `check`, a budget that is reached stops the run cleanly."""
        run = self.run
        if self.stop is not None or self.next_iteration() > (run.config.iterations or 0):
            return False
        base = self.a.get(0) if self.a.count() else None
        if base is None or base.status in (PENDING, RUNNING):
            return False
        if self.ahead == 0:  # sequential: each proposal sees every earlier result
            if self.making or self.unfinished() or self.confirming is not None:
                return False
        else:
            waiting = sum(1 for v in self.unfinished() if v.id not in self.started)
            if (waiting + len(self.making) >= self.ahead
                    or len(self.unfinished()) + len(self.making) >= self.cap):
                return False
        if not check:
            return True
        if not self.budget_allows():
            return False
        client = getattr(run.proposer, "client", None)
        if client is not None:
            try:
                client.check_budget()
            except BudgetExceeded as e:
                self.fail(Stop(f"{e}. Raise it to go on: `scientist resume {run.dir.name} "
                               "--max-cost USD` (or --max-tokens N)"))
                return False
        return True

    def unfinished(self) -> list[Variant]:
        """Variants selected and not finished: being proposed (not counted here: see
        `making`), approved and waiting for a slot, or running."""
        return [v for v in self.a.in_flight() if v.parent_id is not None and v.status == RUNNING]

    def budget_allows(self) -> bool:
        """Whether a new variant fits the time budget at the pace of those that ran to
        their end; if not, the run stops cleanly."""
        why = self.run.over_time_budget()
        if why is None:
            return True
        self.fail(Stop(why))
        return False

    def next_iteration(self) -> int:
        return self.a.last_iteration() + 1

    def select(self) -> None:
        """Select the next parent (or the failed variant to repair) and start its proposal."""
        k = self.next_iteration()
        rng = random.Random(f"{self.run.config.rng_seed}:{k}")
        repair = self.run.repair_target()
        if repair is not None:
            parent, attempt = repair
        else:
            try:
                parent = self.run.policy.select(self.a, rng)
            except NoParentError as e:
                self.fail(Stop(str(e), failed=True, drain=False))
                return
            self.a.touch(parent.id)
            attempt = None
        v = self.a.select(parent.id, k, rng.getstate())
        if v.id != k:  # only one process may write a run at a time
            raise ScientistError(f"variant id {v.id} does not match its iteration {k}; "
                                 "is another process writing to this run?")
        self.start_proposal(v, parent, attempt)

    def start_proposal(self, v: Variant, parent: Variant, repair: int | None) -> None:
        m = Making(v.id, parent, repair, self.run.context(v.id, parent.id))
        self.making[v.id] = m
        if repair is not None:
            self.run.progress.line(v.id, f"{parent.name} failed; asking the LLM to repair it "
                                         f"(attempt {repair} of {self.run.config.max_repairs})")
        if not self.run.proposer.uses_llm:  # fast and deterministic: made here, in order
            self.proposal_ready(propose(self.run, m))
            return
        # a daemon thread: a Ctrl-C does not wait for an LLM call in flight (its reply, if
        # it comes, is cached for the resume); at most `ahead` of them at a time
        self.calling.add(m.k)
        threading.Thread(target=lambda: self.events.put(propose(self.run, m)), daemon=True,
                         name=f"proposal-v{m.k:04d}").start()

    def proposal_ready(self, ev: Ready) -> None:
        m, e = ev.making, ev.error
        self.calling.discard(m.k)
        if m.k not in self.making:
            return  # abandoned (a stop)
        run = self.run
        if isinstance(e, (FormatError, EditError, ProposalError, ValueError)):
            del self.making[m.k]
            error = redact(str(e))
            self.a.propose(m.k, INVALID, error=error, proposer=run.proposer.name,
                           finished_at=time.time())
            run.progress.line(m.k, f"v{m.k:04d} from {m.parent.name}: [red]invalid proposal[/] — "
                                   f"{(error.splitlines() or [type(e).__name__])[0]}"
                                   f"{run.usage_note(m.k)}")
            return
        if isinstance(e, BudgetExceeded):
            del self.making[m.k]  # stays pending: a resume with more budget makes it again
            self.fail(Stop(f"{e}. Raise it to go on: `scientist resume {run.dir.name} "
                           "--max-cost USD` (or --max-tokens N)"))
            return
        if isinstance(e, ProviderError):
            del self.making[m.k]
            self.fail(Stop(f"{e}\nThe archive is intact; `scientist resume {run.dir.name}` "
                           "continues the run (replies received so far are cached).", failed=True))
            return
        if e is not None:
            raise e
        diff = unified_diff(m.ctx.files, {**m.ctx.files, **m.files})
        label = f"iteration {m.k}, parent {m.parent.name} (fitness {Fitness(m.parent.fitness)})"
        if not getattr(run.gate, "interactive", False):
            self.decided(m, run.gate.review(m.proposal, diff, label))
            return
        if getattr(run.gate, "concurrent", False):  # the web page's queue: all wait at once
            threading.Thread(target=lambda: self.events.put(Decided(m, run.gate.review(
                m.proposal, diff, label, variant_id=m.k, parent=m.parent.name))),
                daemon=True, name=f"approval-v{m.k:04d}").start()
            return
        if self.review is None:
            self.review = queue.Queue()
            threading.Thread(target=self.reviewer, daemon=True, name="approval").start()
        self.review.put((m, diff, label))

    def reviewer(self) -> None:
        """Asks the human about one proposal at a time, while the loop goes on; the lines
        the loop prints meanwhile are held back until the answer."""
        assert self.review is not None
        while True:
            m, diff, label = self.review.get()
            if self.stop is not None:
                continue
            with self.run.progress.held():
                d = self.run.gate.review(m.proposal, diff, label)
            self.events.put(Decided(m, d))
            if d.action == QUIT:
                return

    def decided(self, m: Making, d: Decision) -> None:
        if m.k not in self.making or self.stop is not None:
            return
        del self.making[m.k]
        run, p = self.run, m.proposal
        diff = unified_diff(m.ctx.files, {**m.ctx.files, **m.files})
        if d.action == QUIT:  # not decided: stays pending, made and asked again on resume
            self.fail(Stop(d.reason))
            return
        fields = dict(hypothesis=p.hypothesis, rationale=p.rationale, prediction=p.prediction,
                      proposer=p.proposer, predicted=p.predicted)
        if d.action != APPROVE:
            self.a.propose(m.k, REJECTED, diff=diff, error=d.reason, finished_at=time.time(),
                           **fields)
            self.a.log("rejected", d.reason, m.k)
            run.progress.line(m.k, f"v{m.k:04d}: rejected by the user — {d.reason}")
            return
        if d.reason:  # who approved it, where (the web page's queue)
            self.a.log("approved", d.reason, m.k)
        sha = run.workspace.commit(m.parent.commit, m.files, run.message(m.k, m.parent, p),
                                   f"v{m.k:04d}")
        self.a.propose(m.k, RUNNING, commit=sha, diff=run.workspace.diff(m.parent.commit, sha),
                       jobs=[job(m.k, s) for s in range(self.scale.training_seeds)], **fields)
        run.progress.line(m.k, f"v{m.k:04d} from {m.parent.name}: {p.hypothesis}"
                               + (f" [dim](predicted {p.predicted:+.4g})[/]"
                                  if p.predicted is not None else "") + run.usage_note(m.k))
        self.enqueue(self.a.jobs.of_variant(m.k))


def propose(run: Run, m: Making) -> Ready:
    """Make `m`'s proposal and apply its edits in memory (in a proposal thread for an LLM);
    never touches the archive."""
    try:
        if m.repair is not None:
            m.proposal = run.proposer.repair(m.ctx, m.parent, m.repair, run.config.max_repairs)
        else:
            m.proposal = run.proposer.propose(m.ctx)
        m.files = apply_edits(m.ctx.files, m.proposal.edits, editable=run.seed.editable,
                              protected=run.seed.protected)
        return Ready(m)
    except BaseException as e:  # reported to the loop, which decides
        return Ready(m, e)


def notebook_of(history: list[Variant], events: list[dict], metric: str,
                maximize: bool) -> Notebook:
    ids = {v.id for v in history}
    rejections = {e["variant_id"]: e["text"] for e in events
                  if e["kind"] == "rejected" and e["variant_id"] in ids}
    return Notebook(history, metric, maximize, rejections)
