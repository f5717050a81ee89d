"""Image: the Docker sandbox's execution image, built offline and tagged by its inputs.

`build` assembles a build context in a temporary folder: `sandbox/Dockerfile`, the
in-container `sandbox/runner.py`, the requirements (`sandbox/requirements.txt` plus every
`seeds/*/requirements.txt`), `sandbox/nodeps.txt`, the pins of `sandbox/constraints.txt`,
and the wheels of all of them, downloaded on the host with `pip download` (or taken from
a folder the user filled). The image is built with no network (`network_mode=none`) and
installs with `pip --no-index`, so it builds where no registry is reachable.

The tag is a hash of those inputs and of the build settings (base image, torch source),
`scientist-sandbox:<hash>`, and the newest build is also `scientist-sandbox:latest`. An
image whose hash differs from what the inputs hash to now is stale: the sandbox refuses
it and `scientist sandbox build` rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scientist.errors import ScientistError
from scientist.resources import HARNESS, SANDBOX, SEEDS

SANDBOX_DIR = SANDBOX
SEEDS_DIR = SEEDS
REPO = "scientist-sandbox"
LATEST = f"{REPO}:latest"
DEFAULT_BASE = "python:3.11-slim-bookworm"
CONTAINER_UID = 10001  # the image's unprivileged user; steps run as it when the host user is root
LABEL_HASH, LABEL_BASE, LABEL_TORCH = "scientist.hash", "scientist.base", "scientist.torch"
LABEL_STAGE = "scientist.stage-of"  # on the untagged build stage: the digest it was built for
TORCH_PIN, TORCH_BASE = "pin", "base"


@dataclass(frozen=True)
class Inputs:
    """Everything the image is made of, as text; `digest` names it."""

    base: str
    torch: str  # "pin": torch from constraints.txt; "base": the base image's own torch
    requirements: list[str]
    nodeps: list[str]
    constraints: list[str]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name in ("Dockerfile", "runner.py"):
            h.update(name.encode() + b"\0" + (SANDBOX_DIR / name).read_bytes() + b"\0")
        for path in harness_files():  # the judge-learner harness runs in the containers
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        for part in (self.base, self.torch, *self.requirements, "|", *self.nodeps, "|",
                     *self.constraints, str(CONTAINER_UID)):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:16]

    @property
    def tag(self) -> str:
        return f"{REPO}:{self.digest}"


def harness_files() -> list[Path]:
    """The modules of `scientist.harness`: the image carries them (at /opt/scientist/pkg,
    on its PYTHONPATH) for the judge's and the learner's processes."""
    return sorted(HARNESS.glob("*.py"))


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", req, maxsplit=1)[0].lower().replace("_", "-")


def default_torch(base: str) -> str:
    """A PyTorch base image brings the torch that matches its CUDA: use it."""
    return TORCH_BASE if "pytorch" in base.lower() else TORCH_PIN


def inputs(base: str, torch: str | None = None, seeds_dir: Path = SEEDS_DIR) -> Inputs:
    torch = torch or default_torch(base)
    if torch not in (TORCH_PIN, TORCH_BASE):
        raise ScientistError(f"torch source must be {TORCH_PIN!r} or {TORCH_BASE!r}, not {torch!r}")
    nodeps = _lines(SANDBOX_DIR / "nodeps.txt")
    skip = {_name(r) for r in nodeps}
    reqs: list[str] = []
    for path in [SANDBOX_DIR / "requirements.txt", *sorted(seeds_dir.glob("*/requirements.txt"))]:
        for r in _lines(path):
            if r not in reqs and _name(r) not in skip:
                reqs.append(r)
    constraints = _lines(SANDBOX_DIR / "constraints.txt")
    if torch == TORCH_BASE:  # neither download nor pin torch: the base image has it
        reqs = [r for r in reqs if _name(r) != "torch"]
        constraints = [c for c in constraints if _name(c) != "torch"]
    return Inputs(base, torch, reqs, nodeps, constraints)


def client():
    """A Docker client, or a ScientistError saying why there is none."""
    try:
        import docker
    except ImportError:
        raise ScientistError("the Docker sandbox needs the `docker` Python package: "
                             "pip install docker") from None
    try:
        c = docker.from_env(timeout=600)
        c.ping()
        return c
    except Exception as e:  # the SDK raises DockerException or requests' errors
        raise ScientistError(f"no Docker daemon reachable ({_short(e)}); start it "
                             "(`systemctl start docker`, or `dockerd &` as root) or set "
                             "DOCKER_HOST") from None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


@dataclass(frozen=True)
class Status:
    present: bool
    current: bool
    tag: str  # what the inputs hash to now
    image_tag: str | None = None  # the `latest` image's own hash tag
    base: str = DEFAULT_BASE
    torch: str = TORCH_PIN

    def describe(self) -> str:
        if not self.present:
            return f"no image {LATEST}: build it with `scientist sandbox build`"
        if not self.current:
            return (f"{LATEST} is stale ({self.image_tag}; sandbox/ or the seeds' requirements "
                    f"now hash to {self.tag}): rebuild it with `scientist sandbox build`")
        return f"{LATEST} = {self.tag} is current (base {self.base}, torch from {self.torch})"


def status(docker_client, seeds_dir: Path = SEEDS_DIR) -> Status:
    """Whether `scientist-sandbox:latest` exists and was built from today's inputs."""
    import docker.errors

    try:
        labels = docker_client.images.get(LATEST).labels or {}
    except docker.errors.ImageNotFound:
        want = inputs(DEFAULT_BASE, seeds_dir=seeds_dir)
        return Status(False, False, want.tag, base=want.base, torch=want.torch)
    base = labels.get(LABEL_BASE, DEFAULT_BASE)
    want = inputs(base, labels.get(LABEL_TORCH), seeds_dir)
    have = f"{REPO}:{labels.get(LABEL_HASH, '?')}"
    return Status(True, have == want.tag, want.tag, have, base, want.torch)


def build(docker_client, base: str | None = None, torch: str | None = None,
          wheels: Path | None = None, python_version: str | None = None, force: bool = False,
          log: Callable[[str], None] = print, seeds_dir: Path = SEEDS_DIR) -> Inputs:
    """Build (or just re-tag) the image for today's inputs; returns them (`.tag`)."""
    import docker.errors

    if base is None:  # keep the base of the previous build
        try:
            base = (docker_client.images.get(LATEST).labels or {}).get(LABEL_BASE)
        except docker.errors.ImageNotFound:
            pass
    want = inputs(base or DEFAULT_BASE, torch, seeds_dir)
    if not force:
        try:
            docker_client.images.get(want.tag).tag(REPO, "latest")
            log(f"{want.tag} is up to date (base {want.base}); tagged {LATEST}")
            return want
        except docker.errors.ImageNotFound:
            pass
    with tempfile.TemporaryDirectory(prefix="scientist-image-") as tmp:
        ctx = Path(tmp)
        for name in ("Dockerfile", "runner.py"):
            shutil.copy(SANDBOX_DIR / name, ctx / name)
        pkg = ctx / "pkg" / "scientist"
        (pkg / "harness").mkdir(parents=True)
        (pkg / "__init__.py").write_text('"""The parts of scientist that run in the sandbox."""\n')
        for path in harness_files():
            shutil.copy(path, pkg / "harness" / path.name)
        for name, lines in (("requirements.txt", want.requirements), ("nodeps.txt", want.nodeps),
                            ("constraints.txt", want.constraints)):
            (ctx / name).write_text("".join(f"{x}\n" for x in lines))
        (ctx / "wheels").mkdir()
        if wheels is not None:
            for w in Path(wheels).iterdir():
                if w.is_file():
                    _link_or_copy(w, ctx / "wheels" / w.name)
        else:
            download_wheels(ctx, python_version, log)
        log(f"building {want.tag} on {want.base} (no network; torch from {want.torch})")
        labels = {LABEL_HASH: want.digest, LABEL_BASE: want.base, LABEL_TORCH: want.torch}
        try:
            image, lines = docker_client.images.build(
                path=str(ctx), tag=want.tag, buildargs={"BASE": want.base,
                                                        "UID": str(CONTAINER_UID),
                                                        "INPUTS": want.digest},
                labels=labels, network_mode="none", rm=True, forcerm=True, pull=False)
        except docker.errors.BuildError as e:
            tail = "".join(str(x.get("stream", x.get("error", ""))) for x in e.build_log)[-3000:]
            raise ScientistError(f"image build failed: {e.msg}\n{tail}") from None
        except docker.errors.APIError as e:
            raise ScientistError(f"image build failed: {_short(e)}") from None
    image.tag(REPO, "latest")
    log(f"built {want.tag}; tagged {LATEST}")
    freed = remove_old_stages(docker_client, keep=want.digest)
    if freed:
        log(f"removed {len(freed)} build stage(s) of earlier inputs")
    return want


def remove_old_stages(docker_client, keep: str) -> list[str]:
    """Remove the untagged build stages left by builds for inputs other than `keep`.

    Each multi-stage build leaves its first stage behind (1-2 GB with torch); the one of
    the current inputs is the cache of a rebuild, the others are never used again. An
    image still used by a container or as a parent is left alone. Returns the ids removed.
    """
    import docker.errors

    removed = []
    for img in docker_client.images.list(filters={"label": LABEL_STAGE, "dangling": True}):
        if (img.labels or {}).get(LABEL_STAGE) == keep:
            continue
        try:
            docker_client.images.remove(img.id, noprune=False)
            removed.append(img.id)
        except docker.errors.APIError:
            pass
    return removed


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def download_wheels(ctx: Path, python_version: str | None, log: Callable[[str], None]) -> None:
    """`pip download` every requirement's wheels on the host into the context's wheels/."""
    base = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            "-d", str(ctx / "wheels")]
    if python_version:  # the image's Python differs from the host's: binary wheels only
        base += ["--python-version", python_version, "--only-binary=:all:"]
    runs = [base + ["-c", str(ctx / "constraints.txt"), "-r", str(ctx / "requirements.txt")]]
    if (ctx / "nodeps.txt").read_text().strip():
        runs.append(base + ["--no-deps", "-r", str(ctx / "nodeps.txt")])
    log("downloading wheels on the host (pip download)")
    for argv in runs:
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode:
            raise ScientistError(f"pip download failed ({' '.join(argv[3:])}):\n"
                                 f"{p.stderr.strip()[-2000:]}")
