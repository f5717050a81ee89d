"""Sandboxes run one step of a variant (train, learner, evaluate) and report how it ended.

`LocalSandbox`, the default, runs each step under bubblewrap (`scientist.confinement`:
its own PID, IPC and network namespaces, read-only code and Python, writable `out`
only, nothing of the run folder or the user's home in view) and, where the kernel lets
us, in a cgroup of its own (`scientist.cgroup`) that limits its memory and processes,
counts its memory and OOM kills, and ends every process of it. While a step runs the
orchestrator blocks on the step's pidfd: it wakes only at the step's end, at its time
limit, and, for a step that may be cancelled (the learner), ten times a second to look
at the cancel flag. Without a writable cgroup the pid namespace still ends every process
of the step, and the memory of its process tree is sampled once a second.

A crash, timeout or OOM of the step is an outcome, never an exception. A failure of the
sandbox itself (bubblewrap cannot set it up, the kernel refuses a cgroup) is not the
variant's fault: it raises `SandboxError`.

`ProcessSandbox` (`--sandbox process`, `scientist.process_sandbox`) runs steps as plain
processes without any of this confinement, only when asked for by name.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from scientist import cgroup, confinement
from scientist.errors import SandboxError, ScientistError

# Variables a step may inherit from the host. Everything else (API keys, tokens, cloud
# credentials, SSH agents, ...) is withheld.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "CUDA_VISIBLE_DEVICES",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SYSTEMROOT")
POLL_SECONDS = 0.1  # how often a step that may be cancelled looks at its cancel flag
SAMPLE_SECONDS = 1.0  # without a cgroup: how often the step's memory is sampled
TERM_GRACE_SECONDS = 3.0
PIDS_LIMIT = 512  # processes and threads of one step (torch starts a few dozen threads)
# Runs on the host before bubblewrap: moves itself (and so the whole step) into the step's
# cgroup(s), whose cgroup.procs files come first in its arguments, up to `--`.
JOIN = 'for f; do [ "$f" = -- ] && break; echo 0 > "$f" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Step:
    """One command to run for a variant."""

    kind: str  # "train", "learner" or "evaluate" (the judge)
    command: str  # already formatted; split with shlex
    cwd: Path  # the variant's working copy (read-only in the sandboxes that confine)
    out: Path  # the one folder the step is meant to write
    stdout: Path
    stderr: Path
    timeout: float
    memory_mb: int
    env: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1
    outputs: tuple[Path, ...] = ()  # files outside `out` the step writes (evaluate: metrics)
    inputs: tuple[Path, ...] = ()  # other paths the step may read (the learner: the checkpoint)
    ipc: Path | None = None  # the judge-learner socket folder, shared by the two steps
    ipc_writable: bool = False  # the learner's (it binds the socket); the judge only connects
    hidden: tuple[Path, ...] = ()  # host paths the step must not see even where a system
    #                                folder holds them (the evaluation data, for train/learner)
    gpus: tuple[str, ...] | None = None  # the GPUs of the seed-job's slot (None: the
    #                                      sandbox's own choice; the Docker sandbox's pool)


@dataclass(frozen=True)
class StepOutcome:
    status: str  # ok | crash | timeout | oom | cancelled (ended by the framework: a learner
    #              whose judge has finished)
    returncode: int | None
    seconds: float
    peak_rss_mb: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Sandbox(Protocol):
    name: str
    python: str

    def run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        """Run `step` to its end; if `cancel` is set meanwhile, end it (status `cancelled`).
        Raises SandboxError when the sandbox itself fails (not the step)."""
        ...

    def kill_leftovers(self) -> int:
        """Kill what this run's steps left behind when the orchestrator was killed."""
        ...

    def kill_all(self) -> None: ...


def clean_env(extra: Mapping[str, str], threads: int, home: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    n = str(max(1, threads))
    # No user site-packages: a usercustomize.py in a HOME a step could write would run
    # inside every later step.
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n,
               SCIENTIST_THREADS=n)
    env.update(extra)
    return env


@dataclass
class _Running:
    proc: subprocess.Popen
    group: cgroup.Cgroup | None


class LocalSandbox:
    """Steps under bubblewrap on this machine; see the module docstring."""

    name = "local"

    def __init__(self, python: str | None = None, label: str = "", pids_limit: int = PIDS_LIMIT):
        self.bwrap = confinement.check()  # SandboxError naming the fix if it cannot work
        self.python = python or sys.executable
        self.label = label or uuid.uuid4().hex[:16]  # names the run: step cgroups are LABEL-...
        self.pids_limit = pids_limit
        self.cgroups = cgroup.detect()
        self._running: dict[str, _Running] = {}  # step id -> its process and cgroup
        self._lock = threading.Lock()

    def run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        sid = f"{self.label}-{uuid.uuid4().hex[:12]}"
        rw = [step.out, *step.outputs] + ([step.ipc] if step.ipc and step.ipc_writable else [])
        ro = [*step.inputs] + ([step.ipc] if step.ipc and not step.ipc_writable else [])
        # the judge's data: host paths among its environment's values, read-only (not those
        # in view already, such as the learner's socket in the ipc folder)
        seen = [step.cwd, *ro, *rw]
        ro += [Path(v) for v in step.env.values() if os.path.isabs(v) and os.path.exists(v)
               and not any(Path(v).is_relative_to(p) for p in seen)]
        step.out.mkdir(parents=True, exist_ok=True)
        for f in step.outputs:  # a file must exist to be bound; the step truncates it
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"")
        try:
            group = (self.cgroups.create(sid, step.memory_mb, self.pids_limit)
                     if self.cgroups else None)
        except OSError as e:
            raise SandboxError(f"the kernel refused a cgroup for the {step.kind} step: {e}") from None
        ready_r, ready_w = os.pipe()
        os.set_blocking(ready_r, False)
        argv = confinement.argv(step.cwd, ro=ro, rw=rw, hidden=step.hidden,
                                command=shlex.split(step.command), bwrap=self.bwrap,
                                ready_fd=ready_w)
        if group is not None:
            argv = ["/bin/sh", "-c", JOIN, "sh", *group.join_files(), "--", *argv]
        start = time.monotonic()
        try:
            with open(step.stdout, "wb") as out, open(step.stderr, "wb") as err:
                try:
                    proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env=self._env(step), pass_fds=(ready_w,),
                                            start_new_session=True)
                except OSError as e:
                    raise SandboxError(f"could not start bubblewrap ({self.bwrap}): {e}") from None
                finally:
                    os.close(ready_w)
            with self._lock:
                self._running[sid] = _Running(proc, group)
            try:
                ended, peak = self._wait(proc, step, start, cancel, group)
                seconds = time.monotonic() - start
                self._end(proc, group)
                return self._outcome(step, proc.returncode, ended, seconds,
                                     max(peak, group.peak_mb() if group else 0.0),
                                     group.oom_kills() if group else None, ready_r)
            finally:
                self._end(proc, group)
                with self._lock:
                    self._running.pop(sid, None)
        finally:
            os.close(ready_r)
            if group is not None:
                group.remove()
            for f in step.outputs:  # nothing written: as if there were no file
                if f.is_file() and f.stat().st_size == 0:
                    f.unlink()

    def _env(self, step: Step) -> dict[str, str]:
        env = clean_env(step.env, step.threads, Path(confinement.HOME))
        bindir = os.path.dirname(self.python)
        env.update(TMPDIR="/tmp", PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin")
        # the judge and learner import scientist.harness: the orchestrator's own copy
        pkg = str(confinement.package_dir().parent)
        env["PYTHONPATH"] = pkg + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
        return env

    def _wait(self, proc: subprocess.Popen, step: Step, start: float,
              cancel: threading.Event | None, group: cgroup.Cgroup | None) -> tuple[str, float]:
        """Block until the step exits (""), or end it at its time limit ("timeout"), on
        cancel ("cancelled") or, without a cgroup, over its memory ("memory"). Returns
        that and the peak memory sampled (0 with a cgroup: the kernel keeps the peak)."""
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None  # before Linux 5.3: Popen.wait in slices
        peak = 0.0
        try:
            while True:
                left = step.timeout - (time.monotonic() - start)
                if left <= 0:
                    return "timeout", peak
                tick = left
                if cancel is not None:
                    tick = min(tick, POLL_SECONDS)
                if group is None:
                    tick = min(tick, SAMPLE_SECONDS)
                if _exited(proc, pidfd, tick):
                    return "", peak
                if cancel is not None and cancel.is_set():
                    return "cancelled", peak
                if group is None:
                    rss = tree_memory_mb(proc.pid)
                    peak = max(peak, rss)
                    if rss > step.memory_mb:
                        return "memory", peak
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _outcome(self, step: Step, rc: int | None, ended: str, seconds: float, peak: float,
                 oom_kills: int | None, ready_r: int) -> StepOutcome:
        if ended == "cancelled":
            return StepOutcome("cancelled", rc, seconds, peak, f"{step.kind} ended by the framework")
        if ended == "timeout":
            return StepOutcome("timeout", rc, seconds, peak, f"{step.kind} ran past its time "
                               f"limit of {step.timeout:.0f} s; killed")
        if ended == "memory":
            return StepOutcome("oom", rc, seconds, peak, f"{step.kind} used {peak:.0f} MiB, over "
                               f"the limit of {step.memory_mb} MiB; killed")
        if rc == 0:
            return StepOutcome("ok", 0, seconds, peak)
        if oom_kills:
            return StepOutcome("oom", rc, seconds, max(peak, step.memory_mb),
                               f"{step.kind} was killed by the kernel at its memory limit of "
                               f"{step.memory_mb} MiB")
        if not _ready(ready_r):
            raise SandboxError(f"bubblewrap could not set up the {step.kind} step's sandbox "
                               f"(exit status {rc}): {_last_line(step.stderr)}")
        if rc == 127 and ": exec: " in _last_line(step.stderr):
            return StepOutcome("crash", rc, seconds, peak, f"could not start "
                               f"{shlex.split(step.command)[0]!r}: {_last_line(step.stderr)}")
        why = f"exit status {rc}"
        if rc is not None and rc > 128:  # bubblewrap reports a signal as 128 + its number
            why = f"killed by signal {_signal_name(rc - 128)}"
        elif rc is not None and rc < 0:
            why = f"killed by signal {_signal_name(-rc)}"
        return StepOutcome("crash", rc, seconds, peak, f"{step.kind} failed: {why}")

    @staticmethod
    def _end(proc: subprocess.Popen, group: cgroup.Cgroup | None) -> None:
        """Kill the step if it still runs. bubblewrap's death takes its namespace's first
        process with it (--die-with-parent), and the kernel then kills every process left
        in the namespace; the cgroup is emptied as well, for anything that got out."""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if group is not None:
            group.kill()
        proc.wait()

    def kill_leftovers(self) -> int:
        """Kill processes in cgroups that steps of this run (same label) left when the
        orchestrator itself was killed, and remove the cgroups. (bubblewrap dies with the
        orchestrator and takes the step's namespace with it; this is for what remains, e.g.
        a step started while the orchestrator was dying.) Returns how many were killed."""
        if self.cgroups is None:
            return 0
        with self._lock:
            mine = set(self._running)
        killed = 0
        for g in self.cgroups.existing(f"{self.label}-"):
            if g.memory.name not in mine:
                killed += g.kill()
                g.remove()
        return killed

    def kill_all(self) -> None:
        """Kill every step still running (Ctrl-C, or the orchestrator stopping)."""
        with self._lock:
            running = list(self._running.values())
        for r in running:
            try:
                os.kill(r.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if r.group is not None:
                r.group.kill()


def _exited(proc: subprocess.Popen, pidfd: int | None, timeout: float) -> bool:
    if pidfd is None:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    return bool(select.select([pidfd], [], [], max(0.0, timeout))[0])


def _ready(fd: int) -> bool:
    """Whether the sandbox's first command wrote its byte: bubblewrap had set it up."""
    try:
        return os.read(fd, 1) == b"x"
    except BlockingIOError:
        return False


def tree_memory_mb(root: int) -> float:
    """Proportional set size (shared pages divided among their users) of `root` and all
    its descendants. In a pid namespace every process of the step descends from
    bubblewrap, orphans included (they are re-parented to the namespace's first process)."""
    total_kb, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total_kb += _pss_kb(pid)
        try:
            for task in os.scandir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task.name}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return total_kb / 1024


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _last_line(path: Path, n: int = 2000) -> str:
    try:
        lines = path.read_bytes()[-n:].decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)


def format_command(template: str, **values: object) -> str:
    """Fill a seed command's placeholders, quoting each value for the shell splitter."""
    return template.format(**{k: shlex.quote(str(v)) for k, v in values.items()})


def _process(**kwargs: object) -> Sandbox:
    from scientist.process_sandbox import ProcessSandbox

    return ProcessSandbox(**kwargs)


def _docker(**kwargs: object) -> Sandbox:
    from scientist.docker_sandbox import DockerSandbox  # imports the docker SDK: only when used

    return DockerSandbox(**kwargs)


SANDBOXES = {"local": LocalSandbox, "docker": _docker, "process": _process}
UNCONFINED = ("process",)  # sandboxes that are no boundary: said loudly wherever a run shows
UNCONFINED_WARNING = ("the process sandbox does not confine variants: their code runs as you, "
                      "with your files, network and processes in reach (asked for with "
                      "--sandbox process; the default local sandbox needs bubblewrap)")


def make_sandbox(name: str, **kwargs: object) -> Sandbox:
    if name not in SANDBOXES:
        raise ValueError(f"unknown sandbox {name!r}; available: {', '.join(SANDBOXES)}")
    return SANDBOXES[name](**kwargs)


def check_config(config: object) -> None:
    """Say what is wrong with a run's sandbox settings before its run folder is made:
    an unknown sandbox, GPUs without Docker, no working bubblewrap, no Docker daemon or no
    current image."""
    name = getattr(config, "sandbox", "local")
    gpus = getattr(config, "gpus", "") or ""
    if name not in SANDBOXES:
        raise ScientistError(f"unknown sandbox {name!r}; available: {', '.join(SANDBOXES)}")
    if getattr(config, "executor", "local") == "slurm":  # steps run on the nodes, not here
        if gpus:
            raise ScientistError("--gpus is for this machine's GPUs; on Slurm a seed-job gets "
                                 "its GPUs from the cluster (--slurm-gpus, default the scale's)")
        return
    if gpus and name != "docker":
        raise ScientistError(f"--gpus needs --sandbox docker (the {name} sandbox does not "
                             "assign GPUs)")
    if name == "local":
        confinement.check()
    if name == "docker":
        from scientist.docker_sandbox import gpu_groups, preflight

        gpu_groups(gpus, getattr(config, "gpus_per_step", 1))
        preflight()


class OnNodes:
    """The sandbox of a run whose steps run on Slurm nodes (`scientist.slurm`): each job makes
    the real one there; the orchestrator runs no step."""

    python = sys.executable

    def __init__(self, name: str):
        self.name = name

    def run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        raise SandboxError(f"the {self.name} sandbox of this run runs steps on its Slurm nodes")

    def kill_leftovers(self) -> int:
        return 0

    def kill_all(self) -> None:
        pass


def sandbox_for(config: object, label: str) -> Sandbox:
    """The sandbox a run's configuration asks for (GPUs only in Docker containers)."""
    name = getattr(config, "sandbox", "local")
    if getattr(config, "executor", "local") == "slurm":
        check_config(config)
        return OnNodes(name)
    if name != "docker":
        check_config(config)
        return make_sandbox(name, label=label)
    return make_sandbox(name, label=label, gpus=getattr(config, "gpus", "") or "",
                        gpus_per_step=getattr(config, "gpus_per_step", 1))
