"""Doctor: what this machine has for running `scientist`, one line per capability.

The local sandbox (bubblewrap, and where the kernel accounts a step: cgroup v2, v1 or
none), the Docker daemon, the sandbox image (present and current), GPUs visible to Docker
(the NVIDIA runtime), a TeX engine for the report, and the configured LLM. Each check says
what is missing and how to get it; none of them changes anything.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

OK, MISSING, INFO = "ok", "missing", "info"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | missing | info
    detail: str


def checks(config: object | None = None) -> list[Check]:
    out = _local()
    docker_client = None
    try:
        from scientist.image import client

        docker_client = client()
        v = docker_client.version()
        out.append(Check("Docker daemon", OK, f"reachable, Docker {v.get('Version', '?')} "
                                              f"(API {v.get('ApiVersion', '?')})"))
    except Exception as e:  # ScientistError with the reason, or the SDK missing
        out.append(Check("Docker daemon", MISSING, f"{e} (only the Docker sandbox needs it)"))
    if docker_client is not None:
        from scientist.image import status

        st = status(docker_client)
        out.append(Check("sandbox image", OK if st.present and st.current else MISSING,
                         st.describe()))
        out.append(_gpus(docker_client))
    else:
        out.append(Check("sandbox image", MISSING, "needs the Docker daemon"))
        out.append(Check("GPUs for Docker", MISSING, "needs the Docker daemon"))
    out.append(_tex())
    out.append(_llm(config))
    return out


def _local() -> list[Check]:
    """bubblewrap (the default sandbox needs it) and the cgroup its steps would get."""
    from scientist import cgroup, confinement
    from scientist.errors import SandboxError

    try:
        out = [Check("local sandbox", OK, f"bubblewrap {confinement.check()} makes the namespaces")]
    except SandboxError as e:
        out = [Check("local sandbox", MISSING, str(e))]
    groups = cgroup.detect()
    if groups is None:
        out.append(Check("step cgroups", INFO, "none writable: a step's memory is sampled once a "
                                               "second and its processes are not limited "
                                               "(README, The local sandbox)"))
    else:
        out.append(Check("step cgroups", OK, f"cgroup v{groups.version} under {groups.memory_parent}"
                                             + ("" if groups.version == 2 or groups.pids_parent
                                                else " (no pids controller: no process limit)")))
    return out


def _gpus(docker_client) -> Check:
    """GPUs as Docker would give them to a step: the NVIDIA runtime lists them."""
    runtimes = set((docker_client.info().get("Runtimes") or {}).keys())
    host_has = shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")
    if "nvidia" not in runtimes and not host_has:
        return Check("GPUs for Docker", INFO, "none: steps run on the CPU (no NVIDIA driver "
                                              "or runtime on this machine)")
    from scientist.docker_sandbox import gpu_request_all
    from scientist.image import LATEST

    try:  # the NVIDIA Container Toolkit mounts nvidia-smi into a GPU container
        text = docker_client.containers.run(
            LATEST, [], entrypoint=["nvidia-smi", "-L"], remove=True, network_mode="none",
            device_requests=[gpu_request_all()], stdout=True, stderr=True)
        gpus = [line for line in text.decode(errors="replace").splitlines() if line.startswith("GPU")]
        return Check("GPUs for Docker", OK if gpus else MISSING,
                     "; ".join(gpus) or "nvidia-smi in a container listed no GPU")
    except Exception as e:
        return Check("GPUs for Docker", MISSING,
                     f"a GPU container failed ({str(e).strip()[:200]}); install the NVIDIA "
                     "Container Toolkit and restart dockerd (see README, GPU setup)")


def _tex() -> Check:
    from scientist.latex import tex_engine

    engine = tex_engine()
    if engine:
        return Check("TeX engine", OK, " ".join(engine[:2]) + " (the report compiles to PDF)")
    from scientist.latex import TEX_PACKAGES

    return Check("TeX engine", MISSING, "no pdflatex: reports are written as report.html and .tex, "
                                        f"no PDF (apt-get install {' '.join(TEX_PACKAGES)})")


def _llm(config: object | None) -> Check:
    """The LLM the next run would use: the model, where it is served, and whether a key is set
    (by the variable's name; a key's value is never printed)."""
    from scientist.llm import _provider_key_env

    model = getattr(config, "model", None) or os.environ.get("SCIENTIST_MODEL")
    if not model:
        return Check("LLM", INFO, "none configured: the offline proposer is used (set --model or "
                                  "SCIENTIST_MODEL for an LLM proposer)")
    base = getattr(config, "api_base", None) or os.environ.get("SCIENTIST_API_BASE")
    names = [n for n in (getattr(config, "api_key_env", None), "SCIENTIST_API_KEY",
                         _provider_key_env(model)) if n]
    found = next((n for n in names if os.environ.get(n)), None)
    where = f" at {base}" if base else ""
    if found:
        return Check("LLM", OK, f"configured: {model}{where}; key from ${found}")
    if base:
        return Check("LLM", OK, f"configured: {model}{where}; no key set (fine for a local server)")
    return Check("LLM", INFO, f"configured: {model}, but none of {', '.join('$' + n for n in names)} "
                              "is set: calls will be refused")
