"""Confinement of a local step: the bubblewrap (`bwrap`) command line that runs it.

bubblewrap (Debian/Ubuntu package `bubblewrap`, the tool Flatpak builds on) starts the
step in new namespaces and a new, mostly empty root filesystem. What a step sees:

- its own PID namespace (it sees only its own processes: not the orchestrator, not the
  judge of the same evaluation, not their environments), IPC and UTS namespaces, and a
  network namespace with only a loopback interface (nothing on the host, not even the
  host's 127.0.0.1, is reachable); every process of the step dies with the namespace's
  first process, and that one with the orchestrator (`--die-with-parent`);
- no capabilities (`--cap-drop ALL`: root inside cannot remount, trace, or bypass file
  modes), no new privileges, a new session (no terminal to inject keystrokes into);
- read-only: the system (`/usr`, `/etc` without its password hashes, `/sys`) and the
  Python environment that runs it (the interpreter's prefix and site-packages, the
  `scientist` package for the judge/learner harness), and its working copy (`cwd`) and
  `inputs`; a root filesystem that is read-only as well;
- private and empty: `/tmp` (also its HOME), `/dev` (the usual devices; NVIDIA devices
  are passed through where they exist), `/proc` of its own namespace (the folders leading
  to a bound path under /tmp are read-only);
- writable: its `out` folder, the files in `outputs` (the judge's metrics file), and the
  judge-learner socket folder for the learner; stdout and stderr are file descriptors
  the orchestrator opened, so the log files' folder is not in view;
- not there at all: the run folder (archive, repository, LLM cache, secret seed) beyond
  the step's own paths, the user's home, every other host path; and `hidden` paths,
  covered by an empty folder even where a bound system folder holds them (the evaluation
  data under /usr/share for training and learner steps).

The step's command runs behind a one-line `sh` that first writes one byte to a pipe: the
orchestrator reads it to know the sandbox was set up, so a failure of bubblewrap itself
(a missing path, no namespaces) is told apart from the variant's own crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from scientist.errors import SandboxError

# The sandbox's first command: one byte to the orchestrator's pipe, then the step. (dash
# takes no descriptor above 9 in a redirection, hence the /proc path; the pipe stays open
# in the step, which can do nothing with it but write more bytes.)
READY = 'printf x >/proc/self/fd/{fd} && exec "$@"'
HOME = "/tmp/home"
SYSTEM = ("/usr", "/etc", "/sys", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# files under /etc a step has no business reading (root inside keeps file ownership)
MASKED = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers",
          "/etc/ssh", "/etc/ssl/private", "/etc/docker", "/etc/machine-id")
GPU_DEVICES = ("nvidia*", "dri")  # /dev entries passed through where they exist (untested: no GPU here)
FIX = ("install it with `apt-get install bubblewrap` (Debian/Ubuntu; `dnf install bubblewrap` "
       "on Fedora), or, knowing that variants then run unconfined, ask for it: "
       "`--sandbox process`")


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap")
                                          if os.access(p, os.X_OK)), None)


def python_paths() -> list[Path]:
    """What the step's interpreter (this one) needs to run, read-only: its prefixes and
    library folders, and the `scientist` package (the seeds' judge and learner import its
    harness). Not the folder `scientist` sits in: in a checkout that holds `runs/`."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[key])
    import site

    paths.update(site.getsitepackages())
    paths.add(str(package_dir()))
    # never "/": that would be the whole host
    return sorted(Path(p) for p in paths if p and p != "/" and os.path.exists(p))


def package_dir() -> Path:
    import scientist

    return Path(scientist.__file__).resolve().parent


def gpu_devices() -> list[str]:
    return sorted(str(p) for pattern in GPU_DEVICES for p in Path("/dev").glob(pattern))


def argv(cwd: Path, *, ro: Iterable[Path] = (), rw: Iterable[Path] = (),
         hidden: Iterable[Path] = (), command: list[str], ready_fd: int,
         bwrap: str = "bwrap") -> list[str]:
    """The bwrap command line that runs `command` in `cwd` with these paths bound."""
    ops: list[tuple[str, list[str]]] = []  # (mount point, bwrap arguments), ordered below

    def add(point: str, args: list[str]) -> None:
        ops.append((point, args))

    for p in SYSTEM:
        if os.path.islink(p):
            add(p, ["--symlink", os.readlink(p), p])
        elif os.path.isdir(p):
            add(p, ["--ro-bind", p, p])
    for p in MASKED:
        if os.path.isdir(p) and not os.path.islink(p):
            add(p, ["--tmpfs", p, "--remount-ro", p])
        elif os.path.exists(p):
            add(p, ["--ro-bind", "/dev/null", p])
    add("/proc", ["--proc", "/proc"])
    add("/dev", ["--dev", "/dev"])
    for d in gpu_devices():
        add(d, ["--dev-bind", d, d])
    add("/tmp", ["--tmpfs", "/tmp"])
    add(HOME, ["--dir", HOME])
    for p in python_paths():
        add(str(p), ["--ro-bind", str(p), str(p)])
    for p in [cwd, *ro]:
        p = Path(p).resolve()
        add(str(p), ["--ro-bind", str(p), str(p)])
    for p in rw:
        p = Path(p).resolve()
        add(str(p), ["--bind", str(p), str(p)])
    for p in hidden:
        p = Path(p).resolve()
        if p.is_dir():
            add(str(p), ["--tmpfs", str(p), "--remount-ro", str(p)])
        elif p.exists():
            add(str(p), ["--ro-bind", "/dev/null", str(p)])
    # Bound paths under the private /tmp (a run folder there, as in tests) get their
    # folders made in it; made read-only (no capabilities: root obeys the mode), a step
    # cannot write beside them where the run folder would be.
    points = {p for p, _ in ops}
    for p in list(points):
        if Path(p).is_relative_to("/tmp") and p != HOME:
            for parent in Path(p).parents:
                if parent == Path("/tmp"):
                    break
                if str(parent) not in points:
                    points.add(str(parent))
                    add(str(parent), ["--perms", "0555", "--dir", str(parent)])
    # A parent must be mounted before what is inside it, or it would cover it; among
    # equals, the order above (system, then the step's own paths, then what is hidden).
    ops.sort(key=lambda op: len(Path(op[0]).parts))
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL"]
    for _, a in ops:
        args += a
    args += ["--remount-ro", "/", "--chdir", str(Path(cwd).resolve()),
             "--", "/bin/sh", "-c", READY.format(fd=ready_fd), "sh", *command]
    return args


_PROBED: dict[str, str] = {}


def check() -> str:
    """The path of a working bwrap, or SandboxError naming the fix. Probed once per
    process by running `true` in the namespaces every step gets."""
    if "bwrap" in _PROBED:
        return _PROBED["bwrap"]
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxError(f"the local sandbox needs bubblewrap (bwrap), which is not installed: {FIX}")
    probe = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent",
             "--cap-drop", "ALL", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--", "/bin/true"]
    try:
        p = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxError(f"the local sandbox's bubblewrap ({bwrap}) does not run: {e}; {FIX}") from None
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise SandboxError(
            f"bubblewrap ({bwrap}) cannot make the sandbox's namespaces: {why}. As a user "
            "other than root it needs unprivileged user namespaces: `sysctl -w "
            "kernel.unprivileged_userns_clone=1` (Debian), and on Ubuntu 23.10+ "
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor "
            "profile for bwrap; inside a container, run it with --privileged or a seccomp "
            "profile that allows unshare/clone of namespaces. Or, knowing that variants "
            "then run unconfined: `--sandbox process`")
    _PROBED["bwrap"] = bwrap
    return bwrap
