"""Run: the research loop over one seed, and its run folder.

    select parent -> propose -> (approve) -> apply edits + commit -> evaluate -> archive
                                                                  -> (confirm) -> ... -> sealed test

`Run` makes and opens run folders and assembles the parts; the loop itself is the
scheduler's (`scientist.scheduler`), which keeps N seed-jobs in flight across variants on
an executor (`scientist.executor`: this machine's slots, or Slurm) and is the archive's
only writer. Only a variant that fresh paired seeds confirm becomes the best
(`scientist.promotion`); its seeds are ordinary jobs.

State lives in the run folder after every step: each seed-job's result is stored when it
arrives, so Ctrl-C or `kill -9` loses at most the seed-jobs in flight, which `resume` runs
again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import random
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console

from scientist.archive import Archive
from scientist.config import RunConfig
from scientist.confirmer import Confirmer
from scientist.console import Progress, best_table
from scientist.errors import INTERRUPTED, ScientistError
from scientist.evaluator import Evaluator
from scientist.executor import Executor, LocalExecutor, SeedJob
from scientist.approvals import WebGate
from scientist.gate import AutoGate, Gate, TerminalGate
from scientist.llm import LLMClient, LLMSettings
from scientist.notebook import Notebook
from scientist.promotion import META as DESIGN_META
from scientist.promotion import Design, Promotion
from scientist.proposer import Context, Proposer, make_proposer
from scientist.redaction import Redactor
from scientist.sandbox import UNCONFINED, UNCONFINED_WARNING, Sandbox, sandbox_for
from scientist.scheduler import Ledger, Scheduler, Stop, notebook_of
from scientist.seed import MANIFEST, Scale, Seed, load_seed
from scientist.selection import Policy, make_policy
from scientist.variant import DONE, FAILED, Proposal, SeedResult, Variant
from scientist.workspace import Workspace

CONFIG, ARCHIVE, REPO, VARIANTS = "config.json", "archive.sqlite", "repo", "variants"
NOTEBOOK = "notebook.md"  # the lab notebook, for people (the LLM gets it within a token budget)
PRISTINE = "seed"  # the baseline's files, exported for resume (the run's own copy of the seed)
SECRET = "secret.json"  # the run's secret evaluation seed: given to the judge only, never shown
PRISTINE_COMMIT, PRISTINE_SHA256 = "pristine_commit", "pristine_sha256"  # archive meta keys
MODEL_NEEDED = ("the llm proposer needs a model: --model NAME, SCIENTIST_MODEL, or `model = ...` in the "
                "config file (e.g. gpt-4o, anthropic/claude-sonnet-4-5, or openai/NAME with --api-base)")


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
    # (run, workers, threads, notify) -> the executor; None: the one `executor` names. Tests
    # put an executor here that ends jobs in an order they choose.
    make_executor: Callable[..., Executor] | None = None

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
        mode = config.approval
        gate: Gate = (TerminalGate(console) if mode == "terminal" else
                      WebGate(run_dir) if mode == "web" else AutoGate())
        archive.set_meta("proposer_uses_llm", proposer.uses_llm)
        archive.set_meta("sandbox", config.sandbox)
        archive.set_meta("proposer_description", proposer.describe())
        label = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]  # see `label`
        return cls(run_dir, config, seed, archive, Workspace(run_dir / REPO),
                   sandbox_for(config, label), proposer, policy, gate, console)

    @property
    def label(self) -> str:
        """Ties every process and job the run starts to its folder, so that a resume can find
        what a killed orchestrator left behind (cgroups, containers, Slurm jobs)."""
        return hashlib.sha1(str(self.dir.resolve()).encode()).hexdigest()[:16]

    # --- the loop -----------------------------------------------------------------------
    def banner(self) -> str:
        llm = "no LLM configured" if not self.proposer.uses_llm else self.proposer.describe()
        text = (f"scientist: seed [bold]{self.seed.name}[/] at scale [bold]{self.config.scale}"
                f"[/], {self.sandbox.name} sandbox, {self.proposer.name} proposer ({llm}), "
                f"selection {self.policy.name}, run folder {self.dir}")
        if self.sandbox.name in UNCONFINED:
            text += f"\n  [bold red]warning:[/] {UNCONFINED_WARNING}"
        if self.config.approval == "web":
            text += ("\n  approval: each proposal waits for a decision in the approval queue of "
                     f"`scientist serve --runs {self.dir.parent}` (open the address it prints)")
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
        workers, threads = self.slots()
        eval_seed = read_secret(self.dir / SECRET)
        self.evaluator = Evaluator(self.seed, scale, Workspace(self.dir / REPO), self.sandbox,
                                   self.archive.get_meta(PRISTINE_COMMIT), 1, threads,
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
        if not (self.dir / PRISTINE / MANIFEST).is_file():  # the run's own seed (nodes load it)
            self.workspace.export("v0000", self.dir / PRISTINE)
        events: queue.Queue = queue.Queue()
        self.executor = self._executor(workers, threads, events)
        self.confirmer = Confirmer(self.promotion, self.archive, self.workspace, self.progress,
                                   self._duration, self.config.time_budget, self.executor.slots)
        ahead = self.config.ahead
        if ahead is None:
            ahead = math.ceil(self.executor.slots / scale.training_seeds)
        self.console.print(self.banner(), highlight=False)
        if not self.proposer.uses_llm:
            self.console.print(f"  {self.proposer.describe()}", highlight=False)
        self.archive.set_meta("status", "running")
        self.archive.set_meta("started_at", self.archive.get_meta("started_at") or time.time())
        INTERRUPTED.clear()
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        old_int = signal.signal(signal.SIGINT, _raise_interrupt)
        client = getattr(self.proposer, "client", None)
        if client is not None:  # proposals are made in threads: the scheduler writes their records
            self.ledger = Ledger(self.archive.llm_usage(), events)
            client.spent, client.record = self.ledger.spent, self.ledger.record
            client.on_retry = lambda msg: self.progress.line(None, f"[yellow]{msg}[/]")
            self.proposer.on_attempt = lambda msg: self.progress.line(None, f"[yellow]{msg}[/]")
        leftovers = self.sandbox.kill_leftovers() + self.executor.cancel_leftovers()
        if leftovers:
            self.console.print(f"  ended {leftovers} process(es) or job(s) left running by this "
                               "run's previous orchestrator")
        try:
            try:
                Scheduler(self, self.executor, events, ahead).loop()
                status = "finished"
            except Stop as e:
                self.console.print(f"[{'red' if e.failed else 'yellow'}]Stopped:[/] {e}")
                if e.failed:
                    self._finish("failed")
                    return 1
                status = "stopped"
            self._finish(status)
            return 0
        except KeyboardInterrupt:
            self.executor.cancel_all()
            self.sandbox.kill_all()
            self._finish("interrupted")
            self.console.print(f"[yellow]Interrupted.[/] The archive is intact; continue with "
                               f"`scientist resume {self.dir.name}`.")
            raise
        except BaseException:  # the framework failed (e.g. a tampered repository): end the jobs
            self.executor.cancel_all()
            raise
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            self.sandbox.kill_all()
            self.executor.close()

    def slots(self) -> tuple[int, int]:
        """Seed-jobs in flight and threads per step: `workers` and `threads` as configured,
        else one slot per GPU group (with `gpus`), else CPU cores / threads (threads 1);
        8 Slurm jobs at a time with the slurm executor."""
        cores, c = os.cpu_count() or 1, self.config
        if c.executor == "slurm":
            return c.workers or 8, c.threads or 1
        if c.gpus:
            from scientist.docker_sandbox import gpu_groups

            workers = c.workers or len(gpu_groups(c.gpus, c.gpus_per_step))
            return workers, c.threads or max(1, cores // workers)
        if c.workers:
            return c.workers, c.threads or max(1, cores // c.workers)
        threads = c.threads or 1
        return max(1, cores // threads), threads

    def _executor(self, workers: int, threads: int, events: queue.Queue) -> Executor:
        if self.make_executor is not None:
            return self.make_executor(self, workers, threads, events.put)
        if self.config.executor == "slurm":
            from scientist.slurm import SlurmExecutor

            return SlurmExecutor.for_run(self, workers, threads, events.put)
        if self.config.executor != "local":
            raise ScientistError(f"unknown executor {self.config.executor!r}; available: "
                                 "local, slurm")
        groups = None
        if self.config.gpus and self.sandbox.name == "docker":
            from scientist.docker_sandbox import gpu_groups

            groups = gpu_groups(self.config.gpus, self.config.gpus_per_step)[:workers]
        ev = self.evaluator

        def run_seed(job: SeedJob, gpus: tuple[str, ...] | None) -> SeedResult:
            return ev.run_seed(job.commit, job.seed, Path(job.folder), job.eval_set, gpus)

        return LocalExecutor(run_seed, workers, events.put, self.sandbox.kill_all, groups)

    def _redactor(self, eval_seed: int | None) -> Redactor:
        """Secrets to keep out of everything a step leaves: the environment's, the configured
        API key's value, and the run's secret evaluation seed."""
        extra = [str(eval_seed)] if eval_seed is not None else []
        if self.config.api_key_env and os.environ.get(self.config.api_key_env):
            extra.append(os.environ[self.config.api_key_env])
        return Redactor.from_environment(extra)

    def noise_seeds(self) -> int:
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
        d = Design.for_run(self.config, scale, self.noise_seeds())
        self.archive.set_meta(DESIGN_META, asdict(d))
        return d

    def over_time_budget(self) -> str | None:
        """Why no new variant may start (None: it may): at the pace of the variants that ran
        to their end (the longest; a crash in one second says nothing about how long the
        next variant will train), it would end past the time budget."""
        budget = self.config.time_budget
        if budget is None:
            return None
        finished = [v for v in self.archive.all() if v.finished_at and v.status in (DONE, FAILED)]
        done = [v for v in finished if v.status == DONE] or finished
        pace = max((self._duration(v) for v in done), default=0.0)
        if self.progress.elapsed + pace > budget:
            return (f"time budget of {budget:.0f} s reached after {self.progress.elapsed:.0f} s "
                    f"(a variant takes about {pace:.0f} s)")
        return None

    def _check_budget(self) -> None:
        why = self.over_time_budget()
        if why is not None:
            raise Stop(why)

    @staticmethod
    def _duration(v: Variant) -> float:
        if not v.result:
            return 0.0
        return max((s.train_seconds + s.eval_seconds for s in v.result.seeds), default=0.0)

    def context(self, k: int, parent_id: int) -> Context:
        """What variant `k`'s proposal is made from: the archive as it stood when its parent
        was selected (`Archive.history`), so that a resumed run makes the same proposal."""
        history = self.archive.history(self.archive.seen(k))
        by_id = {v.id: v for v in history}
        parent = by_id.get(parent_id) or self.archive.get(parent_id)
        files = self.workspace.read(parent.commit, self.seed.editable)
        rng = random.Random(f"{self.config.rng_seed}:{k}")
        state = self.archive.rng_state(k)
        if state is not None:  # where the selection left the iteration's stream
            rng.setstate((state[0], tuple(state[1]), state[2]))
        total = self.config.iterations or 0
        if not self.proposer.uses_llm:
            return Context(self.seed, parent, files, history, rng, iteration=k, total=total)
        (self.dir / NOTEBOOK).write_text(Notebook.from_archive(self.archive, self.seed.metric)
                                         .markdown())  # for people: everything so far
        book = notebook_of(history, self.archive.events(), self.seed.metric, self.seed.maximize)
        protected = self.workspace.read(self.archive.get_meta(PRISTINE_COMMIT), self.seed.protected)
        lineage, vid = [], parent.id
        while vid is not None:
            lineage.append(by_id.get(vid) or self.archive.get(vid))
            vid = lineage[-1].parent_id
        return Context(self.seed, parent, files, history, rng, iteration=k, total=total,
                       notebook=book.render(self.config.notebook_tokens),
                       lineage=tuple(reversed(lineage)), protected_files=protected)

    def usage_note(self, k: int) -> str:
        if not self.proposer.uses_llm:
            return ""
        return f" [dim](LLM: {self.archive.llm_usage(k)}; run total {self.archive.llm_usage()})[/]"

    def repair_target(self) -> tuple[Variant, int] | None:
        """The failed variant to repair next, and which attempt this is: the first (in
        the order they failed) that has no child yet, with at most `max_repairs` failures
        in a row along its lineage. (Run one at a time, that is the last variant, if it
        failed.)"""
        if self.config.max_repairs <= 0 or not hasattr(self.proposer, "repair"):
            return None
        vs = self.archive.all()
        parents = {v.parent_id for v in vs}
        failed = sorted((v for v in vs if v.status == FAILED and v.parent_id is not None
                         and v.commit and v.id not in parents), key=lambda v: v.finished_at or 0)
        for v in failed:
            depth = self.repair_depth(v)
            if depth <= self.config.max_repairs:
                return v, depth
        return None

    def repair_depth(self, v: Variant) -> int:
        """Failures in a row along `v`'s lineage, `v` included."""
        depth = 0
        while v is not None and v.status == FAILED:
            depth += 1
            v = self.archive.get(v.parent_id) if v.parent_id is not None else None
        return depth

    @staticmethod
    def message(vid: int, parent: Variant, p: Proposal) -> str:
        return _message(vid, parent, p)

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
        close = getattr(self.gate, "close", None)
        if close is not None:  # proposals still waiting on the web page stop waiting
            close()
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
    INTERRUPTED.set()
    raise KeyboardInterrupt

