"""The unconfined process sandbox (`--sandbox process`): steps as plain processes.

It is no boundary, and exists only for machines where bubblewrap cannot run, on explicit
request; the banner, `scientist show` and the report say so. What it does: each step
runs as a subprocess in its own session (process group) with a wall-clock limit (the
whole group is killed), a resident-memory limit over the whole process tree (polled ten
times a second over /proc; the group is killed when it is exceeded), an environment
built from the allow-list (no API keys or other secrets), and stdout/stderr captured to
files. Every process of a step inherits a `SCIENTIST_STEP` tag in its environment, so
one that left the session (setsid, a double fork) is still counted and killed. What it
does not do: confine file reads and writes (the run folder, the user's home and
site-packages are all in reach), the network, or the view of other processes and their
environments (`/proc/<pid>/environ` of the orchestrator holds its API keys).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid

from scientist.sandbox import POLL_SECONDS, TERM_GRACE_SECONDS, Step, StepOutcome, clean_env

TAG_VAR = "SCIENTIST_STEP"  # every process of a step inherits this tag, even outside its session
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


# Held back while a step starts: Python runs at-fork callbacks (logging's, for one) in the
# parent, and a KeyboardInterrupt raised inside one is printed and dropped, so a Ctrl-C
# or SIGTERM arriving then would be lost. The child unblocks them before exec.
START_MASK = {signal.SIGINT, signal.SIGTERM}


def _die_with_parent() -> None:
    """Runs in the child before exec: new session, no core dumps, killed if we die."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, START_MASK)
    os.setsid()
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def step_processes(sid: int, tag: str) -> dict[int, int]:
    """pid -> resident KiB of every process of a step (Linux /proc): those in its session,
    and those that left it (setsid, double fork) but still carry its SCIENTIST_STEP tag.
    Only processes started no earlier than the session leader can carry the tag, so only
    their environments are read."""
    try:
        leader_start = _stat(sid)[19]
    except (OSError, IndexError):  # the leader has exited: look at every process
        leader_start = 0
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            # after the command: state(0) ppid(1) pgrp(2) session(3) ... starttime(19) rss(21)
            stat = _stat(int(entry.name))
            member = stat[3] == sid
            if not member and stat[19] >= leader_start:
                member = tag_of(int(entry.name)) == tag
            if member:
                found[int(entry.name)] = stat[21] * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return found


def tag_of(pid: int) -> str | None:
    """The SCIENTIST_STEP tag in a process's environment, if it has one (and we may look)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    prefix = f"{TAG_VAR}=".encode()
    return next((v[len(prefix):].decode(errors="replace") for v in env
                 if v.startswith(prefix)), None)


def _stat(pid: int) -> list[int]:
    """The numeric fields of /proc/PID/stat after the command name."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return [int(x) if x.lstrip(b"-").isdigit() else 0
                for x in f.read().rsplit(b")", 1)[1].split()]


class ProcessSandbox:
    """Unconfined subprocesses on this machine; see the module docstring."""

    name = "process"

    def __init__(self, python: str | None = None, label: str = ""):
        self.python = python or sys.executable
        self.label = label  # names the run: a step's tag is LABEL:RANDOM
        self._steps: dict[int, str] = {}  # session leader pid -> the step's tag
        self._lock = threading.Lock()

    def run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        step.out.mkdir(parents=True, exist_ok=True)
        home = step.out / ".home"
        home.mkdir(exist_ok=True)
        argv = shlex.split(step.command)
        tag = f"{self.label}:{uuid.uuid4().hex}"
        start = time.monotonic()
        with open(step.stdout, "wb") as out, open(step.stderr, "wb") as err:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, START_MASK)
            try:
                proc = subprocess.Popen(argv, cwd=step.cwd, stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL,
                                        env={**clean_env(step.env, step.threads, home),
                                             TAG_VAR: tag},
                                        preexec_fn=_die_with_parent)
            except BaseException as e:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                if not isinstance(e, OSError):
                    raise
                return StepOutcome("crash", None, 0.0, 0.0, f"could not start {argv[0]!r}: {e}")
            with self._lock:
                self._steps[proc.pid] = tag
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a held-back Ctrl-C lands here
                return self._watch(proc, step, start, tag, cancel)
            finally:
                self._kill_step(proc.pid, tag)  # whatever the step left running
                with self._lock:
                    self._steps.pop(proc.pid, None)

    def _watch(self, proc: subprocess.Popen, step: Step, start: float, tag: str,
               cancel: threading.Event | None) -> StepOutcome:
        peak = 0.0
        while True:
            rc = proc.poll()
            elapsed = time.monotonic() - start
            if rc is None and cancel is not None and cancel.is_set():
                self._terminate(proc, tag)
                return StepOutcome("cancelled", proc.returncode, elapsed, peak,
                                   f"{step.kind} ended by the framework")
            if rc is not None:
                if rc == 0:
                    return StepOutcome("ok", 0, elapsed, peak)
                if rc == -signal.SIGKILL and peak > 0.9 * step.memory_mb:
                    return StepOutcome("oom", rc, elapsed, peak,
                                       f"killed near the memory limit ({step.memory_mb} MiB)")
                why = (f"killed by signal {signal.Signals(-rc).name}" if rc < 0
                       else f"exit status {rc}")
                return StepOutcome("crash", rc, elapsed, peak, f"{step.kind} failed: {why}")
            rss = sum(step_processes(proc.pid, tag).values()) / 1024
            peak = max(peak, rss)
            if rss > step.memory_mb:
                self._kill_step(proc.pid, tag)
                proc.wait()
                return StepOutcome("oom", proc.returncode, time.monotonic() - start, peak,
                                   f"{step.kind} used {rss:.0f} MiB, over the limit of "
                                   f"{step.memory_mb} MiB; killed")
            if elapsed > step.timeout:
                self._terminate(proc, tag)
                return StepOutcome("timeout", proc.returncode, time.monotonic() - start, peak,
                                   f"{step.kind} ran past its time limit of "
                                   f"{step.timeout:.0f} s; killed")
            try:  # returns as soon as the step exits: no polling latency on the way out
                proc.wait(POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass

    def _terminate(self, proc: subprocess.Popen, tag: str) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(TERM_GRACE_SECONDS)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self._kill_step(proc.pid, tag)
        proc.wait()

    @staticmethod
    def _kill_step(sid: int, tag: str) -> None:
        """SIGKILL the step's process group and every process that carries its tag."""
        try:
            os.killpg(sid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in step_processes(sid, tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_leftovers(self) -> int:
        """Kill processes that steps of this run (same label) left behind when the
        orchestrator itself was killed (kill -9 skips all cleanup). Returns how many."""
        if not self.label:
            return 0
        with self._lock:
            running = set(self._steps.values())
        killed = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            tag = tag_of(int(entry.name))
            if tag is None or not tag.startswith(f"{self.label}:") or tag in running:
                continue
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        return killed

    def kill_all(self) -> None:
        """Kill every step still running (Ctrl-C, or the orchestrator stopping)."""
        with self._lock:
            steps = list(self._steps.items())
        for sid, tag in steps:
            self._kill_step(sid, tag)
