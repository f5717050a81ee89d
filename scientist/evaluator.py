"""Evaluator: train and evaluate a variant on each training seed, in the sandbox.

Per training seed: export the variant's commit into a fresh working copy and run the
seed's train command (its results go to the `out` folder). Then score it:

- A seed with a learner command (every built-in seed) is scored by two processes, each in
  its own sandbox step: the *learner* runs the seed's learner command in a fresh export of
  the variant (protected files pristine), with the training output read-only, no data, no
  metrics file and no network; the *judge* runs the evaluate command in a folder that holds
  only the pristine protected files (the variant's code is not there to import), with the
  evaluation data, the metrics file, and the run's secret evaluation seed. They talk over
  a Unix socket in a folder the two steps share (`scientist.harness`). When the judge ends,
  the learner is ended too.
- A seed without one runs the evaluate command alone in a fresh export of the variant
  with the pristine protected files put over it: its evaluator imports the variant's code
  into the process that writes the metrics, so its fitness can be forged (the run says so).

Any metrics file the training step may have planted is deleted first; the fitness is read
only from the metrics file the pristine evaluator wrote, with the harness's verdict on the
learner (ok, violated, crash, timeout) when there is one. The pristine files are checked
against the hashes recorded when the run was made before they are used.

Everything that leaves a step passes `Redactor` here, before anything else sees it: its
stdout and stderr files (rewritten in place as soon as the step ends), the tails, reasons
and messages of the `SeedResult`.

A failure of the sandbox itself (bubblewrap, Docker, a full disk: `SandboxError`) is not
the variant's: the training seed is run again after a pause, up to `infra_retries` times,
and then the error goes up to the run, which stops without recording the variant as failed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from scientist.harness.judge import (EVAL_SEED_ENV, EVAL_SET_ENV, HARNESS_KEY, LEARNER_EXITED,
                                     SOCKET_ENV)
from scientist.errors import SandboxError, ScientistError
from scientist.redaction import Redactor
from scientist.sandbox import POLL_SECONDS, Sandbox, Step, StepOutcome, format_command
from scientist.seed import Scale, Seed
from scientist.variant import (SEED_NO_METRICS, SEED_OK, SEED_TIMEOUT, SEED_VIOLATED, Result,
                               SeedResult)
from scientist.workspace import Workspace

SOCKET_NAME = "learner.sock"

TAIL_CHARS = 3000
DISK_FULL_BYTES = 16 * 2**20  # a step that crashed with less than this free: the disk is full


def tail(path: Path, n: int = TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Evaluator:
    seed: Seed
    scale: Scale
    workspace: Workspace
    sandbox: Sandbox
    pristine_commit: str
    workers: int = 1
    threads: int = 1
    eval_seed: int | None = None  # the run's secret seed of the evaluation streams (judge only)
    pristine_sha256: dict[str, str] | None = None  # protected file -> its hash at run creation
    redactor: Redactor = field(default_factory=Redactor.from_environment)
    infra_retries: int = 2  # runs again of a training seed whose sandbox failed
    infra_wait: float = 10.0  # seconds before the first of them (doubling)

    def evaluate(self, commit: str, folder: Path,
                 on_seed: Callable[[SeedResult], None] | None = None,
                 seeds: Sequence[int] | None = None, eval_set: str = "fitness") -> Result:
        """Run the training seeds `seeds` (default: the scale's first `training_seeds`) of
        the variant at `commit`, scored on `eval_set` (`fitness`, or `sealed`: the held-out
        set); outputs go into `folder` (`seed-S`, or `sealed-seed-S`)."""
        pristine = self.pristine()
        seeds = range(self.scale.training_seeds) if seeds is None else list(seeds)
        prefix = "" if eval_set == "fitness" else f"{eval_set}-"

        def one(s: int) -> SeedResult:
            for attempt in range(self.infra_retries + 1):
                try:
                    r = self._one_seed(commit, s, folder / f"{prefix}seed-{s}", pristine, eval_set)
                    break
                except SandboxError:
                    if attempt == self.infra_retries:
                        raise
                    time.sleep(self.infra_wait * 2**attempt)
            r = self.redactor.dataclass(r)
            if on_seed:
                on_seed(r)
            return r

        if self.workers <= 1:
            results = [one(s) for s in seeds]
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                futures = [pool.submit(one, s) for s in seeds]
                try:
                    results = [f.result() for f in futures]
                except BaseException:  # Ctrl-C: end the running steps instead of awaiting them
                    for f in futures:
                        f.cancel()
                    self.sandbox.kill_all()
                    while wait(futures, timeout=POLL_SECONDS).not_done:
                        self.sandbox.kill_all()  # again: a worker may have started a step
                    raise
        return Result(results, self.seed.metric)

    def run_seed(self, commit: str, s: int, folder: Path, eval_set: str = "fitness",
                 gpus: tuple[str, ...] | None = None) -> SeedResult:
        """One seed-job, once: train and score the variant at `commit` on training seed `s`,
        outputs in `folder` (its `seed-S` folder), every step with the GPUs `gpus` (None: the
        sandbox's own choice). Redacted. Raises SandboxError when the sandbox itself failed:
        the scheduler runs it again or stops the run (no retries here)."""
        r = self._one_seed(commit, s, folder, self.pristine(), eval_set, gpus)
        return self.redactor.dataclass(r)

    def pristine(self) -> dict[str, bytes]:
        """The protected files of the baseline commit, checked against their recorded hashes
        (a repository changed behind the run's back stops it)."""
        files = self.workspace.read_bytes(self.pristine_commit, self.seed.protected)
        if self.pristine_sha256 is not None:
            now = {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}
            if now != self.pristine_sha256:
                changed = sorted(set(now.items()) ^ set(self.pristine_sha256.items()))
                raise ScientistError(
                    "the pristine evaluator in the run's repository is not the one recorded when "
                    f"the run was made ({', '.join(sorted({p for p, _ in changed}))} changed); "
                    "the run folder was modified: this run's results cannot be trusted")
        return files

    def _one_seed(self, commit: str, s: int, d: Path, pristine: dict[str, bytes],
                  eval_set: str, gpus: tuple[str, ...] | None = None) -> SeedResult:
        try:
            return self._train_and_score(commit, s, d, pristine, eval_set, gpus)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SandboxError(f"the disk is full ({e}); free space and resume the run") from None
            raise

    def _run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        """One step in the sandbox; what it wrote to stdout and stderr is redacted at once.
        A crash with the disk full is the disk's fault, not the step's."""
        outcome = self.sandbox.run(step, cancel)
        for f in (step.stdout, step.stderr):
            self.redactor.file(f)
        if outcome.status == "crash" and _free_bytes(step.out) < DISK_FULL_BYTES:
            raise SandboxError(f"the disk holding {step.out} is full; free space and resume the run")
        return self.redactor.dataclass(outcome)

    def _train_and_score(self, commit: str, s: int, d: Path, pristine: dict[str, bytes],
                         eval_set: str, gpus: tuple[str, ...] | None = None) -> SeedResult:
        if d.exists():  # left over from a run that was interrupted: start this seed afresh
            shutil.rmtree(d)
        work, out = d / "work", d / "out"
        out.mkdir(parents=True)
        self.workspace.export(commit, work)
        # no {metrics} for training: only the judge writes the metrics file
        values = dict(python=self.sandbox.python, scale=self.scale.name, seed=s, out=out.resolve())
        try:
            train = self._run(self._step("train", values, work, out, d, gpus=gpus))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res = SeedResult(s, train.status, train.reason,  # "ok" is SEED_OK
                         train_seconds=train.seconds, peak_rss_mb=train.peak_rss_mb)
        if not train.ok:
            res.stdout_tail, res.stderr_tail = tail(d / "train.out"), tail(d / "train.err")
            return res
        return self._score(commit, res, d, out, pristine, eval_set, gpus)

    def score(self, commit: str, s: int, d: Path, out: Path, eval_set: str = "fitness") -> SeedResult:
        """Score the variant at `commit` on a training output `out` that already exists (of
        training seed `s`): the evaluate step(s) alone, logs and metrics in `d`."""
        d.mkdir(parents=True, exist_ok=True)
        res = self._score(commit, SeedResult(s, SEED_OK), d, out, self.pristine(), eval_set)
        return self.redactor.dataclass(res)

    def _score(self, commit: str, res: SeedResult, d: Path, out: Path, pristine: dict[str, bytes],
               eval_set: str, gpus: tuple[str, ...] | None = None) -> SeedResult:
        fresh, judge, metrics_path = d / "eval-work", d / "judge", d / "metrics.json"
        values = dict(python=self.sandbox.python, scale=self.scale.name, seed=res.seed,
                      out=out.resolve(), metrics=metrics_path.resolve())
        try:
            # Evaluate in a fresh copy of the commit: nothing training left beside the code
            # (e.g. a `json.py` the evaluator would import) reaches it; results are in out/.
            self.workspace.export(commit, fresh)
            _write(fresh, pristine)  # the protected files that run are the pristine ones
            metrics_path.unlink(missing_ok=True)
            if self.seed.learner_command:
                _write(judge, pristine)  # the judge's folder: protected files, nothing else
                ev, learner = self._judge_and_learner(values, fresh, judge, out, d, eval_set, gpus)
            else:
                ev, learner = self._run(self._step("evaluate", values, fresh, out, d,
                                                   eval_set, gpus=gpus)), None
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.rmtree(judge, ignore_errors=True)
        res.eval_seconds, res.peak_rss_mb = ev.seconds, max(res.peak_rss_mb, ev.peak_rss_mb)
        res.stdout_tail, res.stderr_tail = tail(d / "evaluate.out"), tail(d / "evaluate.err")
        if learner is not None:  # what the variant's code printed while it was scored
            res.peak_rss_mb = max(res.peak_rss_mb, learner.peak_rss_mb)
            res.stdout_tail = _join("judge", res.stdout_tail, "learner", tail(d / "learner.out"))
            res.stderr_tail = _join("judge", res.stderr_tail, "learner", tail(d / "learner.err"))
        verdict = read_verdict(metrics_path)
        if (learner is not None and learner.status == SEED_TIMEOUT
                and (verdict is None or verdict[0] in ("crash", "timeout"))):
            # The sandbox ended the learner at the time limit: the judge then sees it exit
            # ("crash") or stop answering; which it sees first is a race, the cause is one.
            res.status, res.reason = SEED_TIMEOUT, f"timeout: the learner: {learner.reason}"
            return res
        if verdict is not None and verdict[0] != "ok":  # the judge's word on the learner
            status, reason = verdict
            res.status = {"violated": SEED_VIOLATED}.get(status, status)
            res.reason = f"{status}: {reason}"
            return res
        if not ev.ok:
            res.status, res.reason = ev.status, ev.reason
            return res
        res.metrics, problem = read_metrics(metrics_path, self.seed.metric)
        if problem:
            res.status, res.reason = SEED_NO_METRICS, problem
        return res

    def _judge_and_learner(self, values: dict, fresh: Path, judge: Path, out: Path, d: Path,
                           eval_set: str, gpus: tuple[str, ...] | None = None
                           ) -> tuple[StepOutcome, StepOutcome]:
        """Run the learner (in the background) and the judge side by side; the learner is
        ended when the judge is done. The socket's folder is short-named under the system's
        temporary folder (Unix socket paths are limited to about 100 bytes)."""
        ipc = Path(tempfile.mkdtemp(prefix="scientist-ipc-"))
        ipc.chmod(0o777)  # the learner may run as another user (Docker as root: uid 10001)
        sock = {SOCKET_ENV: str(ipc / SOCKET_NAME)}
        learner_out = d / "learner-out"  # the learner's own scratch; the checkpoint is read-only
        lv = {**values, "out": out.resolve()}
        learner_step = Step(kind="learner", command=format_command(self.seed.learner_command, **lv),
                            cwd=fresh, out=learner_out, stdout=d / "learner.out",
                            stderr=d / "learner.err", timeout=self.scale.timeout,
                            memory_mb=self.scale.memory_mb, env=sock, threads=self.threads,
                            inputs=(out,), ipc=ipc, ipc_writable=True, hidden=self._data(),
                            gpus=gpus)
        judge_step = self._step("evaluate", values, judge, d / "judge-out", d, eval_set,
                                extra_env=sock, ipc=ipc, gpus=gpus)
        done = threading.Event()
        outcome: list[StepOutcome] = []
        # the learner's step raised: its sandbox failed (SandboxError), or the framework did;
        # raised here, in the caller's thread, not printed by the thread and blamed on the variant
        failed: list[BaseException] = []

        def learner() -> None:
            try:
                outcome.append(self._run(learner_step, cancel=done))
            except BaseException as e:
                failed.append(e)
            finally:  # tell a judge still waiting to connect that nobody will answer
                (ipc / LEARNER_EXITED).touch()

        t = threading.Thread(target=learner, name="learner", daemon=True)
        t.start()
        try:
            ev = self._run(judge_step)
        finally:
            done.set()
            t.join()
            shutil.rmtree(ipc, ignore_errors=True)
        if failed:
            raise failed[0]
        return ev, outcome[0]

    def _step(self, kind: str, values: dict, work: Path, out: Path, d: Path,
              eval_set: str = "fitness", extra_env: dict[str, str] | None = None,
              ipc: Path | None = None, gpus: tuple[str, ...] | None = None) -> Step:
        template = self.seed.train_command if kind == "train" else self.seed.evaluate_command
        env: dict[str, str] = {}
        if kind == "evaluate":  # the judge's: the data, the secret seed, the set to score
            env = {**self.seed.evaluate_env, **(extra_env or {}), EVAL_SET_ENV: eval_set}
            if self.eval_seed is not None:
                env[EVAL_SEED_ENV] = str(self.eval_seed)
        return Step(kind=kind, command=format_command(template, **values), cwd=work, out=out,
                    stdout=d / f"{kind}.out", stderr=d / f"{kind}.err",
                    timeout=self.scale.timeout, memory_mb=self.scale.memory_mb, env=env,
                    threads=self.threads,
                    outputs=(Path(values["metrics"]),) if kind == "evaluate" else (), ipc=ipc,
                    hidden=self._data() if kind != "evaluate" else (), gpus=gpus)

    def _data(self) -> tuple[Path, ...]:
        """The host paths of the evaluation data (`[data] evaluate_env`): the judge's
        alone, hidden from training and learner steps where a system folder holds them."""
        return tuple(Path(v) for v in self.seed.evaluate_env.values()
                     if os.path.isabs(v) and os.path.exists(v))


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def _join(a: str, ta: str, b: str, tb: str) -> str:
    parts = [f"[{name}]\n{t.rstrip()}" for name, t in ((a, ta), (b, tb)) if t.strip()]
    return "\n".join(parts)


def read_verdict(path: Path) -> tuple[str, str] | None:
    """The harness's verdict on the learner from the judge's metrics file: (status, reason),
    or None when the file has none (a seed without a learner, or no file)."""
    try:
        v = json.loads(path.read_text()).get(HARNESS_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(v, dict) or not isinstance(v.get("status"), str):
        return None
    return v["status"], str(v.get("reason", ""))


def read_metrics(path: Path, metric: str) -> tuple[dict[str, float], str]:
    """The evaluator's metrics (numbers only) and a problem description ('' if fine)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, f"the evaluator wrote no metrics file ({path.name})"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {}, f"metrics file is not valid JSON: {e}"
    if not isinstance(raw, dict):
        return {}, "metrics file must hold a JSON object"
    metrics = {k: float(v) for k, v in raw.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if metric not in metrics:
        return metrics, f"metrics file has no number {metric!r} (the fitness metric)"
    if not math.isfinite(metrics[metric]):
        return metrics, f"fitness metric {metric!r} is not finite: {metrics[metric]}"
    return metrics, ""

