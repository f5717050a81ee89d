"""The Slurm executor: each seed-job is a Slurm job, submitted through submitit.

On the node, the job runs the same evaluator and sandbox as a local run (`run_job`): it
exports the variant from the run's repository, trains and scores it in the sandbox
(bubblewrap, the default; Docker only where the node has a daemon and the image), and
writes the step logs and outputs into the run folder. So the run folder must be on a
filesystem the nodes share, at the same path (a home or project directory usually is;
`/tmp` is not). The job returns the seed's result, which submitit pickles into the run's
`slurm/` folder; the archive stays with the orchestrator, its only writer.

What a job asks for (`--slurm-*` flags, `slurm_*` settings): its partition; a time limit
of its steps' (train, then judge and learner side by side: twice the scale's `timeout`)
plus 5 minutes; CPUs for its steps running at once (`threads` each); their memory (the
scale's `memory_mb` each) plus 1 GiB for the job itself; the scale's `gpus`. Its
environment is an allow-list (`EXPORT`): API keys and other secrets in the orchestrator's
environment never reach the cluster. Its name is `scientist-LABEL`, the run's label.

The queue is watched without hammering the controller: one `squeue` for all of the run's
jobs every `slurm_poll` seconds (10), and a look for the result files in between. A job
that leaves the queue without a result (a node failed, it was preempted or cancelled by
someone else) is *lost*: not the variant's fault, it is run again, up to the evaluator's
`infra_retries`, and then the run stops with it in flight. Ctrl-C cancels every job of the
run (`scancel --name`); so does a resume, for jobs a killed orchestrator left behind.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scientist.errors import SandboxError, ScientistError
from scientist.executor import JobOutcome, SeedJob
from scientist.variant import SeedResult

if TYPE_CHECKING:
    from scientist.run import Run

# what a job's environment may carry over from the orchestrator's (plus SLURM_*)
EXPORT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
          "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH")
LOST_POLLS = 2  # looks at the queue that must not find a job, without a result, before it is lost
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
            "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT")


@dataclass(frozen=True)
class NodeRun:
    """What a node needs to run any seed-job of the run (pickled with each job; no secrets:
    the node reads the run's secret evaluation seed from the run folder itself)."""

    run_dir: str
    scale: str
    sandbox: str
    label: str
    threads: int
    pristine_commit: str
    pristine_sha256: dict[str, str] | None
    api_key_env: str | None = None


def run_job(node: NodeRun, job: SeedJob) -> dict[str, Any]:
    """On the node: one seed-job in the sandbox. Returns what `JobOutcome` needs: the seed's
    result, or why it did not run through (`infra`), or the framework's error (`error`)."""
    from scientist.evaluator import Evaluator
    from scientist.redaction import Redactor
    from scientist.run import PRISTINE, REPO, SECRET, read_secret
    from scientist.sandbox import sandbox_for
    from scientist.seed import load_seed
    from scientist.workspace import Workspace

    started = time.time()
    out: dict[str, Any] = {"started_at": started, "host": socket.gethostname(),
                           "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
                           "process_started_at": _process_start()}
    sandbox = None

    def cancelled(signum: int, frame: object) -> None:  # scancel: end the steps now
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, cancelled)
    try:
        run_dir = Path(node.run_dir)
        seed = load_seed(run_dir / PRISTINE)
        sandbox = sandbox_for(_Config(node.sandbox), node.label)
        eval_seed = read_secret(run_dir / SECRET)
        extra = [str(eval_seed)] if eval_seed is not None else []
        if node.api_key_env and os.environ.get(node.api_key_env):
            extra.append(os.environ[node.api_key_env])
        ev = Evaluator(seed, seed.scale(node.scale), Workspace(run_dir / REPO), sandbox,
                       node.pristine_commit, 1, node.threads, eval_seed=eval_seed,
                       pristine_sha256=node.pristine_sha256,
                       redactor=Redactor.from_environment(extra))
        r = ev.run_seed(job.commit, job.seed, Path(job.folder), job.eval_set)
        out["result"] = json.loads(json.dumps(r.__dict__))
    except SandboxError as e:
        out["infra"] = str(e)
    except ScientistError as e:
        out["error"] = str(e)
    except Exception:
        out["error"] = traceback.format_exc()
    finally:
        if sandbox is not None:
            sandbox.kill_all()
    out["ended_at"] = time.time()
    return out


@dataclass
class _Config:
    sandbox: str
    gpus: str = ""


@dataclass
class _Job:
    job: SeedJob
    handle: Any  # submitit's SlurmJob
    external_id: str
    missing: int = 0  # looks at the queue that did not find it
    state: str = ""


@dataclass
class SlurmExecutor:
    """Seed-jobs as Slurm jobs; see the module docstring."""

    folder: Path
    node: NodeRun
    slots: int
    notify: Callable[[JobOutcome], None]
    parameters: dict[str, Any]
    poll: float = 10.0
    name: str = "slurm"
    job_name: str = ""
    _jobs: dict[int, _Job] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _executor: Any = None

    @classmethod
    def for_run(cls, run: Run, workers: int, threads: int,
                notify: Callable[[JobOutcome], None]) -> SlurmExecutor:
        c, scale = run.config, run.seed.scale(run.config.scale)
        steps = 2 if run.seed.learner_command else 1  # at once: the judge and the learner
        params: dict[str, Any] = {
            "time": c.slurm_time or math.ceil(2 * scale.timeout / 60) + 5,
            "cpus_per_task": threads * steps,
            "mem": f"{c.slurm_mem_mb or scale.memory_mb * steps + 1024}M",
        }
        gpus = c.slurm_gpus if c.slurm_gpus is not None else scale.gpus
        if gpus:
            params["gpus_per_node"] = gpus
        if c.slurm_partition:
            params["partition"] = c.slurm_partition
        params["additional_parameters"] = {"export": cls.export(), **parse_options(c.slurm_options)}
        node = NodeRun(str(run.dir.resolve()), scale.name, c.sandbox, run.label, threads,
                       run.archive.get_meta("pristine_commit"),
                       run.archive.get_meta("pristine_sha256"), c.api_key_env)
        return cls(run.dir.resolve() / "slurm", node, workers, notify, params, c.slurm_poll,
                   job_name=f"scientist-{run.label}")

    def __post_init__(self) -> None:
        try:
            import submitit
        except ImportError:
            raise ScientistError("--executor slurm needs submitit: pip install "
                                 "'scientist[slurm]' (or pip install submitit)") from None
        self._executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=0,
                                                python=shlex.quote(sys.executable))
        self._executor.update_parameters(job_name=self.job_name, **self.parameters)

    @staticmethod
    def export() -> str:
        """The job's environment: the allow-listed variables that are set (and SLURM_*).
        SUBMITIT_EXECUTOR is set by the batch script itself; sbatch's list becomes srun's
        (SLURM_EXPORT_ENV), so it must be named for srun to pass it on to the task."""
        return ",".join([k for k in EXPORT if k in os.environ] + ["SUBMITIT_EXECUTOR"])

    # --- the Executor interface ---------------------------------------------------------
    def submit(self, job: SeedJob) -> _Job:
        try:
            handle = self._executor.submit(run_job, self.node, job)
        except Exception as e:  # sbatch refused or the controller is down
            raise ScientistError(f"Slurm did not take the job ({_first_line(e)})") from None
        j = _Job(job, handle, str(handle.job_id))
        with self._lock:
            self._jobs[job.key] = j
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, daemon=True, name="slurm-poll")
            self._thread.start()
        return j

    def idle(self) -> None:
        pass

    def cancel_all(self) -> None:
        """Cancel every job of the run: the ones this executor submitted, and any other job
        with the run's name."""
        self._stop.set()
        with self._lock:
            ids = [j.external_id for j in self._jobs.values()]
            self._jobs.clear()
        _scancel(ids + [], self.job_name)

    def cancel_leftovers(self) -> int:
        """Jobs of this run still queued or running from an orchestrator that was killed:
        cancelled (their seed-jobs are queued again by the resume)."""
        left = [i for i, state in self.queue().items() if state not in TERMINAL]
        if left:
            _scancel(left, self.job_name)
        return len(left)

    def close(self) -> None:
        self._stop.set()

    # --- watching the queue -------------------------------------------------------------
    def queue(self) -> dict[str, str]:
        """The run's jobs the controller knows: id -> state (one squeue call). Raises
        OSError / CalledProcessError when the controller does not answer."""
        out = subprocess.run(["squeue", "-h", "--states=all", f"--name={self.job_name}",
                              "-o", "%i %T"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            self.check()

    def check(self) -> None:
        """One look: report the jobs whose result is there, and those lost."""
        with self._lock:
            live = list(self._jobs.values())
        if not live:
            return
        try:
            states = self.queue()
        except (OSError, subprocess.SubprocessError):
            states = None  # the controller did not answer: nobody is lost on that account
        for j in live:
            if j.handle.paths.result_pickle.exists():
                self._report(j, self._outcome(j))
                continue
            if states is None:
                continue
            j.state = states.get(j.external_id, "gone from the queue")
            j.missing = j.missing + 1 if j.external_id not in states or j.state in TERMINAL else 0
            if j.missing >= LOST_POLLS:
                self._report(j, JobOutcome(j.job, infra=f"the Slurm job {j.external_id} ended "
                                                         f"without a result ({j.state})",
                                           external_id=j.external_id))

    def _outcome(self, j: _Job) -> JobOutcome:
        try:
            d = j.handle.result()
        except Exception as e:  # the job failed outside run_job (e.g. python not found)
            return JobOutcome(j.job, infra=f"the Slurm job {j.external_id} failed: "
                                           f"{_first_line(e)}", external_id=j.external_id)
        out = JobOutcome(j.job, started_at=d.get("started_at"), ended_at=d.get("ended_at"),
                         host=d.get("host", ""), external_id=j.external_id)
        if "result" in d:
            out.result = SeedResult(**d["result"])
        elif "infra" in d:
            out.infra = d["infra"]
        else:
            out.error = ScientistError(f"the Slurm job {j.external_id} on {out.host} failed: "
                                       f"{d.get('error', 'no result')}")
        return out

    def _report(self, j: _Job, out: JobOutcome) -> None:
        with self._lock:
            if self._jobs.pop(j.job.key, None) is None:
                return
        self.notify(out)


def parse_options(text: str) -> dict[str, Any]:
    """`--account=lab --qos high --exclusive` -> {"account": "lab", "qos": "high",
    "exclusive": True} (sbatch's long options)."""
    out: dict[str, Any] = {}
    words = shlex.split(text or "")
    i = 0
    while i < len(words):
        w = words[i]
        if not w.startswith("--"):
            raise ScientistError(f"slurm_options: {w!r} is not a long sbatch option (--name=value)")
        if "=" in w:
            k, v = w[2:].split("=", 1)
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            k, v = w[2:], words[i + 1]
            i += 1
        else:
            k, v = w[2:], True
        out[k.replace("-", "_")] = v
        i += 1
    return out


def _process_start() -> float | None:
    """When this process started (wall clock), from /proc: what Slurm's launch took, apart
    from Python's and submitit's start (bench/slurm_overhead.py). Its age is the system's
    uptime less its start in clock ticks since boot (to 10 ms; /proc/stat's boot time is
    whole seconds)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _scancel(ids: list[str], name: str) -> None:
    cmds = [["scancel", f"--name={name}"]] + ([["scancel", *ids]] if ids else [])
    for cmd in cmds:
        try:
            subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
