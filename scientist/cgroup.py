"""Kernel accounting of a sandbox step: one cgroup holds every process of the step.

The kernel then does what the framework used to poll `/proc` for: it limits the step's
memory (and swap) and its number of processes, counts memory as it charges it (each page
once, to the cgroup that touched it first; page cache included), remembers the peak, counts
its own OOM kills, and lists every process of the step however it detached itself (setsid,
a double fork), so that all of them are ended with the step.

Where the step's cgroup is made, in this order:
- cgroup v2, where a cgroup2 hierarchy offers the memory controller and its root is
  writable (root on a host with the unified hierarchy): `<mount>/scientist/<step>`, with
  `memory.max`, `memory.swap.max = 0`, `pids.max`; peak from `memory.peak`, OOM kills from
  `memory.events`, ended by `cgroup.kill`.
- cgroup v1, nested in the orchestrator's own memory and pids cgroups (hybrid layouts,
  older hosts, many containers): `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`
  where swap is accounted), `pids.max`; peak from `memory.max_usage_in_bytes`, OOM kills
  from `memory.oom_control`.
- neither, where no hierarchy is writable (a user without a delegated cgroup, e.g. a
  non-root login on a systemd host): `detect()` returns None and the local sandbox falls
  back to its pid namespace (which still ends every process of a step) and to sampling
  the memory of the step's process tree once a second (see `scientist.sandbox`). Such a
  user gets a cgroup with `systemd-run --user --scope -p Delegate=yes scientist ...` only
  if the scope's own processes are moved to a leaf first, which this module does not do.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT = "scientist"  # the folder under which steps' cgroups are made


@dataclass(frozen=True)
class Cgroup:
    """One step's cgroup: v2 one folder, v1 a folder in the memory and the pids hierarchies."""

    version: int
    memory: Path
    pids: Path | None  # v1 only (None: no pids hierarchy); v2 uses `memory` for everything

    @property
    def folders(self) -> list[Path]:
        return [self.memory] + ([self.pids] if self.pids is not None else [])

    def join_files(self) -> list[str]:
        """The files a process writes `0` into to move itself into this cgroup."""
        return [str(p / "cgroup.procs") for p in self.folders]

    def peak_mb(self) -> float:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        for f in (name, "memory.current", "memory.usage_in_bytes"):
            try:
                return int((self.memory / f).read_text()) / 2**20
            except (OSError, ValueError):
                continue
        return 0.0

    def oom_kills(self) -> int | None:
        """How many processes of the step the kernel killed for lack of memory; None where
        the kernel does not say (v1 before Linux 4.13)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.memory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return None

    def pids_now(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found.update(int(x) for x in (folder / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def kill(self) -> int:
        """SIGKILL every process in the cgroup, until it is empty; returns how many."""
        killed: set[int] = set()
        if self.version == 2 and (self.memory / "cgroup.kill").exists():
            try:
                killed.update(self.pids_now())
                (self.memory / "cgroup.kill").write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        while (pids := [p for p in self.pids_now() if _alive(p)]) and time.monotonic() < deadline:
            for pid in pids:  # v1: nothing freezes them, so a fork can slip in; loop
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        return len(killed)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup (the kernel refuses while processes
        remain, and a killed process leaves its cgroup only once it is reaped)."""
        self.kill()
        for folder in self.folders:
            for _ in range(200):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    self.kill()
                    time.sleep(0.01)


@dataclass(frozen=True)
class Cgroups:
    """Where this process makes its steps' cgroups."""

    version: int
    memory_parent: Path
    pids_parent: Path | None

    def create(self, name: str, memory_mb: int, pids_max: int) -> Cgroup:
        """A new cgroup for one step with its limits set; OSError if the kernel refuses."""
        limit = str(max(16, int(memory_mb)) * 2**20)
        mem = self.memory_parent / name
        mem.mkdir()
        group = Cgroup(self.version, mem, None)
        try:
            if self.version == 2:
                (mem / "memory.max").write_text(limit)
                _write_if_exists(mem / "memory.swap.max", "0")
                _write_if_exists(mem / "pids.max", str(pids_max))
                return group
            (mem / "memory.limit_in_bytes").write_text(limit)
            _write_if_exists(mem / "memory.memsw.limit_in_bytes", limit)  # swap off
            if self.pids_parent is not None:
                pids = self.pids_parent / name
                pids.mkdir()
                group = Cgroup(1, mem, pids)
                (pids / "pids.max").write_text(str(pids_max))
            return group
        except OSError:
            group.remove()
            raise

    def existing(self, prefix: str) -> list[Cgroup]:
        """Step cgroups whose names start with `prefix` (a run's, left by a killed
        orchestrator)."""
        found = []
        for mem in sorted(self.memory_parent.glob(f"{prefix}*")):
            pids = self.pids_parent / mem.name if self.pids_parent is not None else None
            found.append(Cgroup(self.version, mem, pids if pids and pids.is_dir() else None))
        return found


def _alive(pid: int) -> bool:
    """Not a zombie (a killed process stays listed in its cgroup until it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _write_if_exists(path: Path, value: str) -> None:
    if path.exists():
        path.write_text(value)


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup hierarchy mounted."""
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    out.append((parts[1].replace("\\040", " "), parts[2], set(parts[3].split(","))))
    except OSError:
        pass
    return out


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path in that v1 hierarchy ('' -> v2)."""
    paths = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    except (OSError, ValueError):
        pass
    return paths


def _v2() -> Cgroups | None:
    for point, kind, _ in _mounts():
        root = Path(point)
        if kind != "cgroup2":
            continue
        try:
            available = set((root / "cgroup.controllers").read_text().split())
            if "memory" not in available:
                continue
            wanted = [c for c in ("memory", "pids") if c in available]
            enable = " ".join(f"+{c}" for c in wanted)
            if not set(wanted) <= set((root / "cgroup.subtree_control").read_text().split()):
                (root / "cgroup.subtree_control").write_text(enable)
            parent = root / PARENT
            parent.mkdir(exist_ok=True)
            (parent / "cgroup.subtree_control").write_text(enable)
            return Cgroups(2, parent, None)
        except OSError:
            continue
    return None


def _v1() -> Cgroups | None:
    own = _own_paths()
    points = {c: Path(point) for point, kind, opts in _mounts() if kind == "cgroup"
              for c in ("memory", "pids") if c in opts}
    if "memory" not in points:
        return None

    def parent(controller: str) -> Path | None:
        if controller not in points:
            return None
        p = points[controller] / own.get(controller, "/").lstrip("/") / PARENT
        try:
            p.mkdir(exist_ok=True)
            probe = p / f".probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
            return p
        except OSError:
            return None

    memory = parent("memory")
    return Cgroups(1, memory, parent("pids")) if memory is not None else None


_DETECTED: list[Cgroups | None] = []


def detect() -> Cgroups | None:
    """Where to make step cgroups on this machine (v2, else v1), or None; probed once."""
    if not _DETECTED:
        _DETECTED.append(_v2() or _v1())
    return _DETECTED[0]
