"""Run: the research loop over one seed, and its run folder.

    select parent -> propose -> (approve) -> apply edits + commit -> evaluate -> archive
                                                                  -> (confirm) -> ... -> sealed test

Only a variant that fresh paired seeds confirm becomes the best (`scientist.promotion`):
the loop evaluates the seeds a confirmation asks for and hands the results back; the
decisions and the record are the promotion's.

State lives in the run folder after every step: the variant row is written (with its
commit) before it is evaluated and again when its result is known, so Ctrl-C or
`kill -9` loses at most the variant in flight, which `resume` evaluates again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import random
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console

from scientist.archive import Archive
from scientist.config import RunConfig
from scientist.confirmer import Confirmer
from scientist.console import Progress, best_table, heartbeat
from scientist.edits import apply_edits, unified_diff
from scientist.errors import (BudgetExceeded, EditError, FormatError, ProposalError, SandboxError,
                              ScientistError)
from scientist.evaluator import Evaluator
from scientist.gate import APPROVE, QUIT, AutoGate, Gate, TerminalGate
from scientist.integrity import label as label_integrity
from scientist.llm import LLMClient, LLMSettings, ProviderError, redact
from scientist.notebook import Notebook
from scientist.promotion import META as DESIGN_META
from scientist.promotion import Design, Promotion
from scientist.proposer import Context, Proposer, make_proposer
from scientist.redaction import Redactor
from scientist.sandbox import UNCONFINED, UNCONFINED_WARNING, Sandbox, sandbox_for
from scientist.seed import MANIFEST, Scale, Seed, load_seed
from scientist.selection import NoParentError, Policy, make_policy
from scientist.variant import (CLEAN, DONE, FAILED, INVALID, REJECTED, RUNNING, Fitness,
                               Proposal, Result, SeedResult, Variant)
from scientist.workspace import Workspace

CONFIG, ARCHIVE, REPO, VARIANTS = "config.json", "archive.sqlite", "repo", "variants"
NOTEBOOK = "notebook.md"  # the lab notebook, for people (the LLM gets it within a token budget)
PRISTINE = "seed"  # the baseline's files, exported for resume (the run's own copy of the seed)
SECRET = "secret.json"  # the run's secret evaluation seed: given to the judge only, never shown
PRISTINE_COMMIT, PRISTINE_SHA256 = "pristine_commit", "pristine_sha256"  # archive meta keys
MODEL_NEEDED = ("the llm proposer needs a model: --model NAME, SCIENTIST_MODEL, or `model = ...` in the "
                "config file (e.g. gpt-4o, anthropic/claude-sonnet-4-5, or openai/NAME with --api-base)")


class Stop(Exception):
    """The loop stops early (user quit, budget reached); the archive is intact.

    `failed` marks a stop because the run cannot go on (nothing to select a parent from)."""

    def __init__(self, message: str, failed: bool = False):
        super().__init__(message)
        self.failed = failed


@dataclass
class Run:
    dir: Path
    config: RunConfig
    seed: Seed
    archive: Archive
    workspace: Workspace
    sandbox: Sandbox
    proposer: Proposer
    policy: Policy
    gate: Gate
    console: Console
    heartbeat_seconds: float = 30.0  # how often a running variant reports what it is doing
    infra_wait: float = 10.0  # seconds before a training seed whose sandbox failed runs again

    # --- construction -----------------------------------------------------------------
    @classmethod
    def create(cls, config: RunConfig, console: Console) -> Run:
        seed = load_seed(config.seed)
        scale = seed.scale(config.scale)
        if config.iterations is None:
            config.iterations = scale.iterations
        if config.time_budget is None:
            config.time_budget = scale.time_budget
        config.proposer = config.proposer or ("llm" if config.model else "offline")
        if config.proposer == "llm" and not config.model:
            raise ScientistError(MODEL_NEEDED)
        run_id = config.run_id or f"{datetime.now():%Y%m%d-%H%M%S}-{seed.name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", run_id):
            raise ScientistError(f"run id {run_id!r}: use letters, digits, '_', '.', '-' "
                                 "(it names a folder inside the runs folder)")
        run_dir = Path(config.runs_dir) / run_id
        if run_dir.exists():
            raise ScientistError(f"run folder {run_dir} exists already; pick another --run-id "
                                 f"or continue it with `scientist resume {run_id}`")
        config.run_id, config.seed = run_id, str(seed.path)
        run_dir.mkdir(parents=True)
        (run_dir / CONFIG).write_text(config.to_json())
        ws = Workspace.create(run_dir / REPO, seed)
        _write_secret(run_dir / SECRET)
        archive = Archive(run_dir / ARCHIVE, maximize=seed.maximize)
        for k, v in dict(seed_name=seed.name, seed_title=seed.title, seed_summary=seed.summary,
                         metric=seed.metric, maximize=seed.maximize, status="created",
                         judge_learner=bool(seed.learner_command),
                         created_at=time.time(), elapsed_seconds=0.0).items():
            archive.set_meta(k, v)
        _record_pristine(archive, ws, seed)
        return cls._assemble(run_dir, config, seed, archive, console)

    @classmethod
    def open(cls, run_dir: Path, console: Console, **overrides: object) -> Run:
        cfg_path = run_dir / CONFIG
        if not cfg_path.is_file():
            raise ScientistError(f"{run_dir} is not a run folder (no {CONFIG})")
        config = RunConfig.from_dict(json.loads(cfg_path.read_text()), str(cfg_path))
        config = config.merged(overrides)
        (run_dir / CONFIG).write_text(config.to_json())
        # The run's seed is the one it started with: the baseline commit, not the seed
        # folder as it is now (it may have been edited or deleted since).
        pristine = run_dir / PRISTINE
        if not (pristine / MANIFEST).is_file():
            Workspace(run_dir / REPO).export("v0000", pristine)
        seed = load_seed(pristine)
        archive = Archive(run_dir / ARCHIVE, maximize=seed.maximize)
        if archive.get_meta(PRISTINE_COMMIT) is None:  # a run made before hashes were recorded
            _record_pristine(archive, Workspace(run_dir / REPO), seed)
        return cls._assemble(run_dir, config, seed, archive, console)

    @classmethod
    def _assemble(cls, run_dir: Path, config: RunConfig, seed: Seed, archive: Archive,
                  console: Console) -> Run:
        proposer = _make_proposer(config, seed, run_dir, archive)
        policy = make_policy(config.selection, buckets=config.fme_buckets,
                             temperature=config.fme_temperature, capacity=config.fme_capacity)
        gate: Gate = TerminalGate(console) if config.approve else AutoGate()
        archive.set_meta("proposer_uses_llm", proposer.uses_llm)
        archive.set_meta("sandbox", config.sandbox)
        archive.set_meta("proposer_description", proposer.describe())
        # the label ties every process the run starts to this run folder, so a resume
        # can find what a killed orchestrator left behind
        label = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        return cls(run_dir, config, seed, archive, Workspace(run_dir / REPO),
                   sandbox_for(config, label), proposer, policy, gate, console)

    # --- the loop -----------------------------------------------------------------------
    def banner(self) -> str:
        llm = "no LLM configured" if not self.proposer.uses_llm else self.proposer.describe()
        text = (f"scientist: seed [bold]{self.seed.name}[/] at scale [bold]{self.config.scale}"
                f"[/], {self.sandbox.name} sandbox, {self.proposer.name} proposer ({llm}), "
                f"selection {self.policy.name}, run folder {self.dir}")
        if self.sandbox.name in UNCONFINED:
            text += f"\n  [bold red]warning:[/] {UNCONFINED_WARNING}"
        promotion = getattr(self, "promotion", None)
        if promotion is not None:
            d = promotion.design
            text += (f"\n  claims: a variant is the best only once fresh paired seeds confirm it "
                     f"(α = {d.alpha:g} over the run's attempts; at most {d.max_seeds} paired seeds "
                     f"each" + (f", {d.share:.0%} of the time budget" if d.share and
                                self.config.time_budget else "") + ")")
            noise = promotion.noise()
            if noise is not None:
                text += "\n  " + noise.describe(self.seed.metric, self.promotion.design)
        if not self.seed.learner_command:
            text += ("\n  [bold red]warning:[/] this seed has no learner command: its evaluator "
                     "imports the variant's code into the process that writes the fitness, so a "
                     "variant can forge its fitness (see README, 'Writing a seed')")
        return text

    def execute(self) -> int:
        """Run the loop to its end; returns the exit status (0, or 1 if the run cannot go on)."""
        scale = self.seed.scale(self.config.scale)
        workers = self.config.workers or max(1, min(scale.training_seeds, os.cpu_count() or 1))
        threads = max(1, (os.cpu_count() or 1) // workers)
        eval_seed = read_secret(self.dir / SECRET)
        self.evaluator = Evaluator(self.seed, scale, self.workspace, self.sandbox,
                                   self.archive.get_meta(PRISTINE_COMMIT), workers, threads,
                                   eval_seed=eval_seed,
                                   pristine_sha256=self.archive.get_meta(PRISTINE_SHA256),
                                   redactor=self._redactor(eval_seed), infra_wait=self.infra_wait)
        self.progress = Progress(self.console, self.config.iterations or 0,
                                 self.archive.get_meta("elapsed_seconds", 0.0))
        self.promotion = Promotion(self.archive, self._design(scale))
        best = self.promotion.best()  # a resumed run keeps its confirmed best
        if best is not None:  # (a run from before confirmations may have tagged a raw one)
            self.progress.best = self.archive.fitness(best)
            self.workspace.tag_best(best.commit)
        self.confirmer = Confirmer(
            self.promotion, self.archive, self.workspace, self.progress,
            lambda v, seeds, eval_set: self._run_seeds(v, seeds, eval_set, quiet=True),
            self._duration, self.config.time_budget, workers)
        self.console.print(self.banner(), highlight=False)
        if not self.proposer.uses_llm:
            self.console.print(f"  {self.proposer.describe()}", highlight=False)
        self.archive.set_meta("status", "running")
        self.archive.set_meta("started_at", self.archive.get_meta("started_at") or time.time())
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        client = getattr(self.proposer, "client", None)
        if client is not None:  # say so when the provider makes us wait
            client.on_retry = lambda msg: self.progress.line(None, f"[yellow]{msg}[/]")
            self.proposer.on_attempt = lambda msg: self.progress.line(None, f"[yellow]{msg}[/]")
        leftovers = self.sandbox.kill_leftovers()
        if leftovers:
            self.console.print(f"  killed {leftovers} process(es) left running by this run's "
                               "previous orchestrator")
        try:
            try:
                self._baseline()
                unfinished = self.promotion.in_progress()
                if unfinished is not None:  # interrupted in the middle of a confirmation
                    self.confirmer.confirm(unfinished)
                for v in self.archive.in_flight():  # interrupted by a crash or kill: run again
                    self.progress.line(v.iteration, f"{v.name} was in flight when the run "
                                                    "stopped; evaluating it again")
                    self._evaluate(v)
                self._loop()
                status = "finished"
            except Stop as e:
                self.console.print(f"[{'red' if e.failed else 'yellow'}]Stopped:[/] {e}")
                if e.failed:
                    self._finish("failed")
                    return 1
                status = "stopped"
            self.confirmer.sealed_test()
            self._finish(status)
            return 0
        except KeyboardInterrupt:
            self.sandbox.kill_all()
            self._finish("interrupted")
            self.console.print(f"[yellow]Interrupted.[/] The archive is intact; continue with "
                               f"`scientist resume {self.dir.name}`.")
            raise
        finally:
            signal.signal(signal.SIGTERM, old_term)
            self.sandbox.kill_all()

    def _redactor(self, eval_seed: int | None) -> Redactor:
        """Secrets to keep out of everything a step leaves: the environment's, the configured
        API key's value, and the run's secret evaluation seed."""
        extra = [str(eval_seed)] if eval_seed is not None else []
        if self.config.api_key_env and os.environ.get(self.config.api_key_env):
            extra.append(os.environ[self.config.api_key_env])
        return Redactor.from_environment(extra)

    def _baseline(self) -> None:
        if self.archive.count():
            return
        v = self.archive.new_variant(None, 0, status=RUNNING, commit=self.archive.get_meta(PRISTINE_COMMIT),
                                     hypothesis="", proposer="baseline")
        n = self._noise_seeds()
        self.progress.line(0, f"{v.name}: evaluating the unmodified seed on {n} training seeds "
                              "(its spread between them is the run's noise floor)")
        self._evaluate(v, seeds=range(n))
        noise = self.promotion.noise()
        if noise is not None:
            self.progress.line(0, noise.describe(self.seed.metric, self.promotion.design))

    def _noise_seeds(self) -> int:
        scale = self.seed.scale(self.config.scale)
        n = self.config.noise_seeds or scale.noise_seeds
        if n < scale.training_seeds:
            raise ScientistError(f"noise_seeds ({n}) must be at least the scale's training seeds "
                                 f"({scale.training_seeds}): the baseline is paired with every "
                                 "variant on those")
        return n

    def _design(self, scale: Scale) -> Design:
        """The run's confirmation design: saved when the run starts, read back on resume."""
        saved = self.archive.get_meta(DESIGN_META)
        if isinstance(saved, dict):
            return Design.from_dict(saved)
        d = Design.for_run(self.config, scale, self._noise_seeds())
        self.archive.set_meta(DESIGN_META, asdict(d))
        return d

    def _loop(self) -> None:
        total = self.config.iterations or 0
        while (k := self._next_iteration()) <= total:
            self._check_budget()
            try:
                self._iteration(k)
            except BudgetExceeded as e:
                raise Stop(f"{e}. Raise it to go on: `scientist resume {self.dir.name} "
                           "--max-cost USD` (or --max-tokens N)") from None
            except ProviderError as e:
                raise Stop(f"{e}\nThe archive is intact; `scientist resume {self.dir.name}` continues "
                           "the run (replies received so far are cached).", failed=True) from None

    def _next_iteration(self) -> int:
        return max((v.iteration for v in self.archive.all()), default=0) + 1

    def _check_budget(self) -> None:
        budget = self.config.time_budget
        if budget is None:
            return
        # the pace of a variant that ran to its end: the longest done so far (a crash in
        # one second says nothing about how long the next variant will train)
        finished = [v for v in self.archive.all() if v.finished_at and v.status in (DONE, FAILED)]
        done = [v for v in finished if v.status == DONE] or finished
        pace = max((self._duration(v) for v in done), default=0.0)
        if self.progress.elapsed + pace > budget:
            raise Stop(f"time budget of {budget:.0f} s reached after "
                       f"{self.progress.elapsed:.0f} s (a variant takes about {pace:.0f} s)")

    @staticmethod
    def _duration(v: Variant) -> float:
        if not v.result:
            return 0.0
        return max((s.train_seconds + s.eval_seconds for s in v.result.seeds), default=0.0)

    def _iteration(self, k: int) -> None:
        rng = random.Random(f"{self.config.rng_seed}:{k}")
        client = getattr(self.proposer, "client", None)
        if client is not None:
            client.check_budget()
        repair = self._repair_target()
        if repair is not None:
            parent, attempt = repair
        else:
            try:
                parent = self.policy.select(self.archive, rng)
            except NoParentError as e:
                raise Stop(str(e), failed=True) from None
        files = self.workspace.read(parent.commit, self.seed.editable)
        ctx = self._context(k, parent, files, rng)
        try:
            if repair is not None:
                self.progress.line(k, f"{parent.name} failed; asking the LLM to repair it "
                                      f"(attempt {attempt} of {self.config.max_repairs})")
                proposal = self.proposer.repair(ctx, parent, attempt, self.config.max_repairs)
            else:
                proposal = self.proposer.propose(ctx)
            new_files = apply_edits(files, proposal.edits, editable=self.seed.editable,
                                    protected=self.seed.protected)
        except (FormatError, EditError, ProposalError, ValueError) as e:
            self._used(parent, repair)
            error = redact(str(e))
            v = self.archive.new_variant(parent.id, k, status=INVALID, error=error,
                                         proposer=self.proposer.name, finished_at=time.time())
            self.progress.line(k, f"{v.name} from {parent.name}: [red]invalid proposal[/] — "
                                  f"{(error.splitlines() or [type(e).__name__])[0]}{self._usage_note(k)}")
            return
        self._used(parent, repair)
        diff = unified_diff(files, {**files, **new_files})
        label = f"iteration {k}, parent {parent.name} (fitness {Fitness(parent.fitness)})"
        decision = self.gate.review(proposal, diff, label)
        if decision.action == QUIT:
            raise Stop(decision.reason)
        if decision.action != APPROVE:
            v = self._record(parent, k, proposal, REJECTED, diff=diff, error=decision.reason)
            self.archive.log("rejected", decision.reason, v.id)
            self.progress.line(k, f"{v.name}: rejected by the user — {decision.reason}")
            return
        vid = self.archive.next_id()
        sha = self.workspace.commit(parent.commit, new_files,
                                    _message(vid, parent, proposal), f"v{vid:04d}")
        v = self._record(parent, k, proposal, RUNNING, commit=sha,
                         diff=self.workspace.diff(parent.commit, sha))
        if v.id != vid:  # only one process may write a run at a time
            raise ScientistError(f"variant id {v.id} does not match its branch v{vid:04d}; "
                                 "is another process writing to this run?")
        self.progress.line(k, f"{v.name} from {parent.name}: {proposal.hypothesis}"
                              + (f" [dim](predicted {proposal.predicted:+.4g})[/]"
                                 if proposal.predicted is not None else "") + self._usage_note(k))
        self._evaluate(v)

    def _used(self, parent: Variant, repair: object) -> None:
        """Mark a selected parent as just used (LRU order of the selection pools) once its
        proposal is made, not before: a run stopped during the LLM call then resumes with the
        same state, so it selects the same parent and sends the same (cached) request."""
        if repair is None:
            self.archive.touch(parent.id)

    def _usage_note(self, k: int) -> str:
        if not self.proposer.uses_llm:
            return ""
        return f" [dim](LLM: {self.archive.llm_usage(k)}; run total {self.archive.llm_usage()})[/]"

    def _context(self, k: int, parent: Variant, files: dict[str, str], rng: random.Random) -> Context:
        history = self.archive.all()
        if not self.proposer.uses_llm:
            return Context(self.seed, parent, files, history, rng, iteration=k,
                           total=self.config.iterations or 0)
        book = Notebook.from_archive(self.archive, self.seed.metric)
        (self.dir / NOTEBOOK).write_text(book.markdown())
        protected = self.workspace.read(self.archive.get_meta(PRISTINE_COMMIT), self.seed.protected)
        return Context(self.seed, parent, files, history, rng, iteration=k,
                       total=self.config.iterations or 0,
                       notebook=book.render(self.config.notebook_tokens),
                       lineage=tuple(self.archive.lineage(parent.id)), protected_files=protected)

    def _repair_target(self) -> tuple[Variant, int] | None:
        """The variant to repair next, and which attempt this is: the last variant, if it
        failed when run, with at most `max_repairs` failures in a row along its lineage."""
        if self.config.max_repairs <= 0 or not hasattr(self.proposer, "repair"):
            return None
        vs = self.archive.all()
        last = vs[-1] if vs else None
        if last is None or last.status != FAILED or last.parent_id is None or not last.commit:
            return None
        by_id = {v.id: v for v in vs}
        depth, v = 0, last
        while v is not None and v.status == FAILED:
            depth += 1
            v = by_id.get(v.parent_id) if v.parent_id is not None else None
        return (last, depth) if depth <= self.config.max_repairs else None

    def _record(self, parent: Variant, k: int, p: Proposal, status: str, **kw: object) -> Variant:
        return self.archive.new_variant(parent.id, k, status=status, hypothesis=p.hypothesis,
                                        rationale=p.rationale, prediction=p.prediction,
                                        proposer=p.proposer, predicted=p.predicted, **kw)

    def _evaluate(self, v: Variant, seeds: Iterable[int] | None = None) -> None:
        self.archive.update(v.id, status=RUNNING)
        if v.parent_id is None and seeds is None:  # the baseline, evaluated again on resume
            seeds = range(self._noise_seeds())
        result = self._run_seeds(v, seeds)
        integrity = label_integrity(result, self.seed, self.config.scale)
        self.archive.record_result(v.id, result, DONE if result.ok else FAILED, integrity)
        self.archive.set_meta("elapsed_seconds", self.progress.elapsed)
        fit = Fitness(result.mean, self.seed.maximize)
        if integrity[0] != CLEAN:
            self.archive.log("integrity", f"{integrity[0]}: {integrity[1]}", v.id)
            self.progress.line(v.iteration, f"{v.name}: [bold red]{integrity[0]}[/] — {integrity[1]}")
        if not result.ok:
            self.progress.line(v.iteration, f"{v.name}: [red]failed[/] — {result.reason}")
            return
        se = f" ± {result.stderr:.4f}" if result.stderr is not None else ""
        self.progress.line(v.iteration, f"{v.name}: {self.seed.metric} = {fit}{se} (s.e.) over "
                                        f"{len(result.values)} seeds")
        if integrity[0] != CLEAN:  # never best, so never a challenger either
            return
        if v.parent_id is None:
            if self.progress.best is None:  # the baseline is the first confirmed best
                self.progress.best = fit
                self.workspace.tag_best(v.commit)
        else:
            self.confirmer.challenge(self.archive.get(v.id))

    def _run_seeds(self, v: Variant, seeds: Iterable[int] | None = None,
                   eval_set: str = "fitness", quiet: bool = False) -> Result:
        """Train and score `v` on `seeds` (default: the scale's), with a heartbeat."""
        folder = self.dir / VARIANTS / v.name
        seeds = None if seeds is None else list(seeds)

        def seed_done(r: SeedResult) -> None:
            done.add(r.seed)
            if not quiet:
                self.progress.seed_done(v.iteration, v, r, self.seed.metric)

        try:
            with heartbeat(self.progress, v.iteration, v, folder, self.heartbeat_seconds,
                           seeds, "sealed-" if eval_set == "sealed" else "") as done:
                return self.evaluator.evaluate(v.commit, folder, on_seed=seed_done, seeds=seeds,
                                               eval_set=eval_set)
        except SandboxError as e:  # not the variant's fault: it stays in flight, not failed
            raise Stop(f"the {self.sandbox.name} sandbox failed while running {v.name}, which is "
                       f"not the variant's fault: {e}\nThe archive is intact; once that is fixed, "
                       f"`scientist resume {self.dir.name}` runs those seeds again.",
                       failed=True) from None

    def _finish(self, status: str) -> None:
        a = self.archive
        a.set_meta("status", status)
        a.set_meta("elapsed_seconds", self.progress.elapsed)
        a.set_meta("finished_at", time.time())
        promotion = Promotion.of(a)
        best = promotion.best()
        self.console.print(best_table(a.all(), self.seed.maximize, self.seed.metric,
                                      labels=promotion.labels(), best_id=best.id if best else None))
        self.console.print(promotion.claim(self.seed.metric), highlight=False, markup=False)
        if status != "interrupted" and self.config.report:
            from scientist.paper import publish

            # with an LLM, it writes the sections and reviews the report (paper.py)
            rep, _ = publish(self.dir, use_llm=self.proposer.uses_llm, review=self.proposer.uses_llm,
                             on_progress=lambda text: self.console.print(text, style="dim", markup=False))
            self.console.print(f"report: {rep.html} and {rep.tex}" + (f" and {rep.pdf}" if rep.pdf else
                                                                      f" (no PDF: {rep.message})"))
        if status != "interrupted":
            self.console.print(f"[dim]look closer: scientist show {self.dir.name} [VARIANT]; "
                               f"git -C {self.dir / REPO} log --graph --all --oneline[/]")

    def close(self) -> None:
        self.archive.close()


def _make_proposer(config: RunConfig, seed: Seed, run_dir: Path, archive: Archive) -> Proposer:
    name = config.proposer or ("llm" if config.model else "offline")
    if name != "llm":
        return make_proposer(name)
    if not config.model:
        raise ScientistError(MODEL_NEEDED)
    settings = LLMSettings(model=config.model, api_base=config.api_base, api_key_env=config.api_key_env,
                           temperature=config.temperature, max_output_tokens=config.max_output_tokens,
                           timeout=config.llm_timeout, retries=config.llm_retries,
                           backoff=config.llm_backoff, max_cost=config.max_cost,
                           max_tokens=config.max_tokens, price_in=config.price_in,
                           price_out=config.price_out)
    client = LLMClient(settings, run_dir, spent=archive.llm_usage, record=archive.add_llm_call)
    return make_proposer("llm", client=client, seed=seed, scale=seed.scale(config.scale),
                         format_retries=config.format_retries,
                         max_output_tokens=config.max_output_tokens)


def _record_pristine(archive: Archive, ws: Workspace, seed: Seed) -> None:
    """The baseline's commit and the hash of each protected file, as the run was made: the
    evaluator checks the pristine files against them before each use."""
    commit = ws.head_of("v0000")
    files = ws.read_bytes(commit, seed.protected)
    archive.set_meta(PRISTINE_COMMIT, commit)
    archive.set_meta(PRISTINE_SHA256, {p: hashlib.sha256(b).hexdigest() for p, b in files.items()})


def _write_secret(path: Path) -> None:
    """Draw the run's secret evaluation seed. It stays in the run folder, outside the
    variants' repository (and out of every step's view); only the judge gets it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"eval_seed": secrets.randbits(62)}, f)


def read_secret(path: Path) -> int | None:
    """The run's secret evaluation seed; None for a run made before there was one (its
    judge then uses the seed's fixed default streams, as it did when the run began)."""
    try:
        return int(json.loads(path.read_text())["eval_seed"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ScientistError(f"{path} is damaged ({e}); the run's evaluation seed is lost") from None


def _message(vid: int, parent: Variant, p: Proposal) -> str:
    return (f"v{vid:04d}: {p.hypothesis}\n\nparent: {parent.name}\nproposer: {p.proposer}\n\n"
            f"Rationale: {p.rationale}\nPredicted: {p.prediction}\n")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

