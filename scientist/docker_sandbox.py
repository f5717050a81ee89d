"""Docker sandbox: each train or evaluate step runs in a fresh, locked-down container.

What a step's container gets (and nothing more):
- the image `scientist-sandbox:latest`, refused if stale (see `scientist.image`);
- no network (`network_mode=none`: only a loopback interface, no route out);
- a read-only root filesystem and a size-limited tmpfs at /scratch, its HOME and TMPDIR
  (not /tmp: host paths under /tmp are mounted at the same place, and a write beside
  them must fail rather than vanish into a tmpfs);
- the variant's working copy, read-only, as its working directory; for the evaluate step
  this copy holds the pristine evaluator and data code (the evaluator put them there);
- one writable folder, the step's `out`, plus the files the step is meant to write: its
  stdout/stderr logs and, for the evaluate step, the metrics file;
- the data named by the evaluate step's environment (`[data] evaluate_env` values that are
  host paths), read-only, for the evaluate step only;
- memory (swap off), shared memory, process and CPU limits from the seed's scale; a
  non-root user, all capabilities dropped, no privilege escalation;
- an environment built from the local sandbox's allow-list (no API keys or secrets);
- GPUs only when asked for: a `DeviceRequest` for the group of device ids of the step's
  seed-job (each of the scheduler's slots owns one group of the user's `--gpus` list, and
  every step of a job, train, judge and learner, gets its slot's), CPU-only otherwise.

Host paths are mounted at the same paths inside the container, so the seed's commands
run unchanged. A container that outlives its wall-clock limit is killed; whether the
kernel OOM-killed it is read from the container's state. Every container is removed when
its step ends, when the orchestrator is interrupted (`kill_all`), and, because each one
carries the run's label, on the next start or resume of the run (`kill_leftovers`),
which covers an orchestrator that was itself killed.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from scientist.errors import SandboxError, ScientistError
from scientist.image import CONTAINER_UID, LATEST, client, status
from scientist.sandbox import TERM_GRACE_SECONDS, Step, StepOutcome, clean_env

LABEL_RUN, LABEL_STEP = "scientist.run", "scientist.step"
PYTHON = "/opt/venv/bin/python"  # the image's interpreter, with the seeds' requirements
RUNNER = "/opt/scientist/runner.py"
PIDS_LIMIT = 512  # processes and threads of one step (torch starts a few dozen threads)
WAIT_SECONDS = 1.0  # at most this long between checks of a running step's memory and clock
SCRATCH = "/scratch"  # the step's tmpfs: HOME and TMPDIR
HOST_ONLY_ENV = ("PATH", "TMPDIR", "CUDA_VISIBLE_DEVICES", "SYSTEMROOT")  # meaningless inside


def gpu_request(device_ids: Sequence[str]):
    """The device request for these GPUs, as the Docker SDK documents it for the NVIDIA
    runtime (the same as `docker run --gpus '"device=0,1"'`)."""
    from docker.types import DeviceRequest

    return DeviceRequest(device_ids=[str(d) for d in device_ids], capabilities=[["gpu"]])


def gpu_request_all():
    """Every GPU (`docker run --gpus all`): used only by `scientist doctor` to list them."""
    from docker.types import DeviceRequest

    return DeviceRequest(count=-1, capabilities=[["gpu"]])


def gpu_groups(gpus: str | Sequence[str] | None, per_step: int = 1) -> list[list[str]]:
    """Split the user's GPU list (`"0,1,2,3"`) into groups of `per_step` ids, one group per
    concurrently running step. An empty list means CPU only."""
    ids = [g.strip() for g in (gpus.split(",") if isinstance(gpus, str) else gpus or [])]
    ids = [g for g in ids if g]
    if not ids:
        return []
    if per_step < 1 or len(ids) % per_step:
        raise ScientistError(f"--gpus {','.join(ids)}: {len(ids)} GPU(s) do not split into "
                             f"groups of {per_step} per step")
    if len(set(ids)) != len(ids):
        raise ScientistError(f"--gpus {','.join(ids)}: a GPU is listed twice")
    return [ids[i:i + per_step] for i in range(0, len(ids), per_step)]


def preflight() -> None:
    """Raise a ScientistError saying what is missing: the daemon, or a current image."""
    st = status(client())
    if not (st.present and st.current):
        raise ScientistError(f"Docker sandbox: {st.describe()}")


class GpuPool:
    """Hands each running step a group of GPUs of its own; a step waits for a free one."""

    def __init__(self, groups: list[list[str]]):
        self.free = list(groups)
        self.cond = threading.Condition()

    def acquire(self) -> list[str]:
        with self.cond:
            while not self.free:
                self.cond.wait()
            return self.free.pop(0)

    def release(self, group: list[str]) -> None:
        with self.cond:
            self.free.append(group)
            self.cond.notify()


def peak_memory_mb(container_id: str) -> float:
    """Peak memory of the container's cgroup so far (page cache included), from the host's
    cgroup files; 0 where they cannot be read (a remote daemon, another cgroup layout)."""
    for path in (f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak",
                 f"/sys/fs/cgroup/docker/{container_id}/memory.peak"):
        try:
            with open(path) as f:
                return int(f.read().strip()) / 2**20
        except (OSError, ValueError):
            continue
    return 0.0


class DockerSandbox:
    """Containers from `scientist-sandbox:latest`; see the module docstring."""

    name = "docker"
    python = PYTHON

    def __init__(self, label: str = "", gpus: str | Sequence[str] | None = None,
                 gpus_per_step: int = 1, image: str | None = None,
                 pids_limit: int = PIDS_LIMIT):
        self.label = label or uuid.uuid4().hex[:16]
        self.docker = client()
        if image is None:
            st = status(self.docker)
            if not (st.present and st.current):
                raise ScientistError(f"Docker sandbox: {st.describe()}")
            image = LATEST
        self.image = image
        self.pids_limit = pids_limit
        self.gpus = GpuPool(gpu_groups(gpus, gpus_per_step)) if gpus else None
        self._running: set[str] = set()  # ids of this sandbox's live containers
        self._lock = threading.Lock()

    # --- one step ---------------------------------------------------------------------
    def run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        import docker.errors
        import requests

        # the GPUs of the step's seed-job (its executor slot's), else one group of the pool;
        # waiting for GPUs is not the step's time
        pooled = step.gpus is None and self.gpus is not None
        group = list(step.gpus) if step.gpus else self.gpus.acquire() if pooled else None
        start = time.monotonic()
        container = None
        try:
            uid, gid = self._user()
            writable = [step.stdout, step.stderr, *step.outputs]
            step.out.mkdir(parents=True, exist_ok=True)
            for f in writable:  # a file must exist to be bind-mounted; the step truncates it
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(b"")
            if os.getuid() == 0:  # root's files: hand the writable ones to the step's user
                for p in (step.out, *writable):
                    os.chown(p, uid, gid)
            container = self._create(step, uid, gid, group)
            container.start()
            return self._watch(container, step, start, cancel)
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as e:
            # the daemon is gone, the image missing, a mount refused: not the variant's fault
            raise SandboxError(f"Docker could not run the {step.kind} step: {_first_line(e)}") from None
        finally:
            if container is not None:
                try:
                    self._remove(container.id)
                except docker.errors.DockerException:
                    pass  # carries the run's label: the next start or resume removes it
            for f in step.outputs:  # nothing written: as if there were no file (as locally)
                if f.is_file() and f.stat().st_size == 0:
                    f.unlink()
            if pooled and group is not None:
                self.gpus.release(group)

    def _user(self) -> tuple[int, int]:
        """Steps run as the host's own user, or as the image's unprivileged one for root."""
        if os.getuid() != 0:
            return os.getuid(), os.getgid()
        return CONTAINER_UID, CONTAINER_UID

    def _create(self, step: Step, uid: int, gid: int, group: list[str] | None):
        from docker.types import LogConfig, Mount

        ro = [step.cwd, *step.inputs] + [Path(v) for v in step.env.values()
                                         if os.path.isabs(v) and os.path.exists(v)]
        rw = [step.out, step.stdout, step.stderr, *step.outputs]
        if step.ipc is not None:
            (rw if step.ipc_writable else ro).append(step.ipc)
        mounts = [Mount(str(p.resolve()), str(p.resolve()), type="bind", read_only=True)
                  for p in ro]
        mounts += [Mount(str(p.resolve()), str(p.resolve()), type="bind", read_only=False)
                   for p in rw]
        env = {k: v for k, v in clean_env(step.env, step.threads, Path(SCRATCH)).items()
               if k not in HOST_ONLY_ENV}
        env["TMPDIR"] = SCRATCH
        mb = max(16, int(step.memory_mb))
        argv = ["--stdout", str(step.stdout.resolve()), "--stderr", str(step.stderr.resolve()),
                "--", *shlex.split(step.command)]
        with self._lock:  # registered before it starts, so kill_all can always find it
            c = self.docker.containers.create(
                self.image, argv, name=f"scientist-{self.label[:8]}-{step.kind}-{uuid.uuid4().hex[:8]}",
                labels={LABEL_RUN: self.label, LABEL_STEP: step.kind},
                working_dir=str(step.cwd.resolve()), user=f"{uid}:{gid}", environment=env,
                network_mode="none", read_only=True, mounts=mounts,
                tmpfs={SCRATCH: f"rw,nosuid,nodev,size={max(64, mb // 4)}m,mode=1777"},
                mem_limit=f"{mb}m", memswap_limit=f"{mb}m", shm_size=f"{max(64, mb // 4)}m",
                pids_limit=self.pids_limit, nano_cpus=int(max(1, step.threads) * 1e9),
                cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
                ipc_mode="private", stdin_open=False, tty=False,
                log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m"}),
                device_requests=[gpu_request(group)] if group else None)
            self._running.add(c.id)
        return c

    def _watch(self, c, step: Step, start: float, cancel: threading.Event | None) -> StepOutcome:
        import docker.errors
        import requests

        peak, timed_out, cancelled, wait = 0.0, False, False, 0.05
        while True:
            left = step.timeout - (time.monotonic() - start)
            cancelled = cancel is not None and cancel.is_set()
            if left <= 0 or cancelled:
                timed_out = not cancelled
                try:  # SIGTERM to the step (forwarded by the container's init), then SIGKILL
                    c.stop(timeout=TERM_GRACE_SECONDS)
                except Exception:  # already gone
                    pass
                break
            try:
                c.wait(timeout=min(wait, left + 0.05))
                break
            except docker.errors.NotFound:  # removed while it ran: kill_all (below)
                break
            except requests.exceptions.RequestException:  # still running, or the daemon gone
                self._ping()
                peak = max(peak, peak_memory_mb(c.id))
                wait = min(WAIT_SECONDS, 2 * wait)  # short steps still get a reading
        peak = max(peak, peak_memory_mb(c.id))
        elapsed = time.monotonic() - start
        try:
            c.reload()
        except docker.errors.NotFound:  # kill_all removed it (Ctrl-C, shutdown): ended, not broken
            return StepOutcome("crash", None, elapsed, peak,
                               f"{step.kind} failed: its container was removed while it ran")
        state = c.attrs.get("State", {})
        rc, oom = state.get("ExitCode"), bool(state.get("OOMKilled"))
        self._append_container_log(c, step)
        if oom:
            return StepOutcome("oom", rc, elapsed, max(peak, step.memory_mb),
                               f"{step.kind} was killed by the kernel at the container's memory "
                               f"limit of {step.memory_mb} MiB")
        if cancelled:
            return StepOutcome("cancelled", rc, elapsed, peak, f"{step.kind} ended by the framework")
        if timed_out:
            return StepOutcome("timeout", rc, elapsed, peak,
                               f"{step.kind} ran past its time limit of {step.timeout:.0f} s; "
                               "its container was killed")
        if rc == 0:
            return StepOutcome("ok", 0, elapsed, peak)
        if rc == 127 and "could not start" in _tail(step.stderr):
            return StepOutcome("crash", rc, elapsed, peak, f"{step.kind}: {_tail(step.stderr)}")
        why = f"exit status {rc}"
        if rc and rc > 128:
            why = f"killed by signal {_signal_name(rc - 128)}"
        return StepOutcome("crash", rc, elapsed, peak, f"{step.kind} failed: {why}")

    def _ping(self) -> None:
        """SandboxError if the daemon no longer answers (a wait that timed out looks the
        same as one whose daemon went away)."""
        try:
            self.docker.ping()
        except Exception as e:
            raise SandboxError(f"the Docker daemon stopped answering: {_first_line(e)}") from None

    @staticmethod
    def _append_container_log(c, step: Step) -> None:
        """What the container printed outside the step's own files (the runner's or
        Docker's errors) goes to the end of the step's stderr."""
        try:
            extra = c.logs(stdout=True, stderr=True)
        except Exception:
            return
        if extra:
            with open(step.stderr, "ab") as f:
                f.write(extra)

    def _remove(self, cid: str) -> None:
        import docker.errors

        try:
            self.docker.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                raise
        with self._lock:
            self._running.discard(cid)

    # --- cleanup ------------------------------------------------------------------------
    def kill_all(self) -> None:
        """Remove every container of this run still there (Ctrl-C, shutdown): those this
        sandbox started, found by the run's label too, so that one created while the
        interrupt arrived (before it was registered) goes as well."""
        with self._lock:
            ids = set(self._running)
        try:
            ids |= {c.id for c in self.docker.containers.list(
                all=True, filters={"label": f"{LABEL_RUN}={self.label}"})}
        except Exception:  # the daemon went away: remove what we know of, if we can
            pass
        for cid in ids:
            try:
                self._remove(cid)
            except Exception:
                pass

    def kill_leftovers(self) -> int:
        """Remove containers a previous orchestrator of this run left (it was killed)."""
        with self._lock:
            mine = set(self._running)
        found = self.docker.containers.list(all=True, filters={"label": f"{LABEL_RUN}={self.label}"})
        removed = 0
        for c in found:
            if c.id not in mine:
                self._remove(c.id)
                removed += 1
        return removed


def _tail(path: Path, n: int = 500) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def _signal_name(n: int) -> str:
    import signal

    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)
