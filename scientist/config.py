"""Run configuration: defaults < config file (TOML) < command-line flags.

The resolved configuration is saved as `config.json` in the run folder; `resume` reads
it back, so a resumed run continues with exactly the settings it started with.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from scientist.errors import ScientistError
from scientist.resources import RUNS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_RUNS_DIR = RUNS


@dataclass
class RunConfig:
    seed: str = "vsml"
    """Built-in seed name (a folder under seeds/) or a path to a folder with a seed.toml."""
    scale: str = "smoke"
    """Scale preset of the seed: `test` (seconds), `smoke` (minutes, CPU), `full` (GPU)."""
    iterations: int | None = None
    """Proposals to make after the baseline; default: the scale's `iterations` in seed.toml."""
    time_budget: float | None = None
    """Wall-clock budget in seconds for the whole run; default: the scale's `time_budget`.
    No variant starts that would, at the pace of the last one, end past it."""
    selection: str = "fme"
    """Parent selection: `fme` (fitness-monotonic, default), `greedy`, `uniform`."""
    fme_buckets: int = 10
    """FME: number of fitness buckets over the current fitness range."""
    fme_temperature: float = 0.2
    """FME: bucket b of m is chosen with weight exp(b/(m-1)/temperature); lower = greedier."""
    fme_capacity: int = 10
    """FME: each bucket's selection pool keeps its most recently used members up to this."""
    alpha: float = 0.05
    """Claims: the run's family-wise error rate, P(some variant promoted to best that is not
    better), spent over its promotion attempts (attempt j at alpha / (j (j + 1)))."""
    noise_seeds: int | None = None
    """Training seeds of the baseline, whose spread is the run's noise floor; default: the
    scale's `noise_seeds` (max(4, 2 x training seeds) unless the seed says otherwise)."""
    max_confirm_seeds: int = 8
    """Most fresh paired seeds one confirmation uses (each costs two evaluations: the
    challenger's and the confirmed best's)."""
    confirm_share: float = 0.5
    """Share of the time budget that confirmations may use; a confirmation that would go
    past it stops, not confirmed."""
    confirm_screen: float = 1.0
    """A raw lead is tested only beyond this many standard errors (from the noise floor) of
    the paired difference; 0 tests any lead."""
    sealed_seeds: int | None = None
    """Fresh paired seeds of the final sealed test (confirmed best against the baseline);
    default: the noise seeds."""
    proposer: str | None = None
    """What proposes edits: `llm` (needs `model`) or `offline` (no LLM; mutates the seed's
    declared knobs). Default: `llm` if a model is configured, else `offline`."""
    model: str | None = None
    """The LLM, as litellm names it: `gpt-4o`, `anthropic/claude-sonnet-4-5`, or
    `openai/NAME` for a local OpenAI-compatible server. Environment: SCIENTIST_MODEL."""
    api_base: str | None = None
    """Base URL of an OpenAI-compatible server (Ollama, vLLM, llama.cpp), e.g.
    http://localhost:8000/v1. Environment: SCIENTIST_API_BASE."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (the key itself is never saved).
    Default: the provider's own (OPENAI_API_KEY, ANTHROPIC_API_KEY, …) or SCIENTIST_API_KEY."""
    temperature: float = 0.7
    """Sampling temperature of the LLM."""
    max_output_tokens: int = 8192
    """Longest reply the LLM may write, in tokens."""
    llm_timeout: float = 300.0
    """Seconds one LLM request may take before it is abandoned and retried."""
    llm_retries: int = 5
    """Retries of one LLM call on rate limits, timeouts and server errors (with backoff)."""
    llm_backoff: float = 2.0
    """Seconds before the first retry; each further retry waits twice as long (at most 60)."""
    max_cost: float | None = None
    """Stop the run cleanly once its LLM calls have cost this many US dollars."""
    max_tokens: int | None = None
    """Stop the run cleanly once its LLM calls have used this many tokens (prompt + reply)."""
    price_in: float | None = None
    """USD per million prompt tokens, for a model litellm has no price for (local: 0)."""
    price_out: float | None = None
    """USD per million reply tokens, for a model litellm has no price for."""
    format_retries: int = 3
    """Times a reply that does not parse or apply goes back to the LLM with the error."""
    max_repairs: int = 2
    """Repair attempts in a row for a variant that crashed or timed out (0: none)."""
    notebook_tokens: int = 3000
    """Token budget of the lab notebook in the prompt; older entries are summarised."""
    sandbox: str = "local"
    """Where variants run: `local` (bubblewrap: own namespaces, no network, read-only code and
    Python, only its output folder writable; cgroup memory limits), `docker` (a fresh
    locked-down container per step; build its image with `scientist sandbox build`), or
    `process` (unconfined subprocesses, only where bubblewrap cannot run: said loudly)."""
    approve: bool | str = False
    """Ask a human before each variant runs: `terminal` (at the prompt of the terminal that
    started the run; `true` means this too), `web` (in the approval queue of `scientist
    serve`'s page), or `off` (`false`)."""
    executor: str = "local"
    """Where seed-jobs run: `local` (this machine's slots) or `slurm` (each seed-job a Slurm
    job through submitit, outputs in the run folder, which must be on a shared filesystem)."""
    workers: int | None = None
    """Seed-jobs in flight at once, across variants. Default: the slots of the sandbox (one
    per GPU group with `gpus`, else CPU cores / `threads`); with the slurm executor, 8."""
    threads: int | None = None
    """Threads of each step (OMP_NUM_THREADS and friends; Slurm's CPUs per task). Default:
    CPU cores / `workers` when `workers` is given (or `gpus`), else 1."""
    ahead: int | None = None
    """Proposals made ahead of the slots: at most this many are being made, waiting for a
    human or approved and waiting for a slot. Default: ceil(workers / training seeds).
    0: none; a parent is selected only when no other variant is in flight (the sequential
    loop: every proposal sees every earlier result, at the cost of idle slots)."""
    slurm_partition: str | None = None
    """Slurm: the partition of the seed-jobs (default: the cluster's default partition)."""
    slurm_time: int | None = None
    """Slurm: time limit of a seed-job in minutes (default: its steps' limits, train and
    evaluate, from the scale's `timeout`, plus 5 minutes)."""
    slurm_gpus: int | None = None
    """Slurm: GPUs of a seed-job (default: the scale's `gpus`, 0 unless the seed says)."""
    slurm_mem_mb: int | None = None
    """Slurm: memory of a seed-job in MiB (default: the scale's `memory_mb` for each of its
    steps that run at once (judge and learner), plus 1 GiB for the job itself)."""
    slurm_options: str = ""
    """Slurm: further sbatch options, e.g. `--account=lab --qos=normal --constraint=a100`."""
    slurm_poll: float = 10.0
    """Slurm: seconds between two looks at the queue (one `squeue` call for all the run's
    jobs; a finished job's result file is noticed at the same pace)."""
    rng_seed: int = 0
    """Seed of the run's own random choices (selection, offline proposals)."""
    runs_dir: str = str(DEFAULT_RUNS_DIR)
    """Folder that holds run folders."""
    run_id: str | None = None
    """Name of the run folder; default: a timestamp and the seed's name."""
    report: bool = True
    """Write (and compile, if TeX is installed) the report when the run ends."""
    gpus: str = ""
    """Docker sandbox: GPU device ids to use, e.g. `0,1` (empty: CPU only)."""
    gpus_per_step: int = 1
    """Docker sandbox: GPUs each running step gets; the `gpus` list is split into groups of
    this size, one group per concurrently running step."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Values in range, said before anything is paid for (the baseline, an LLM call)."""
        if isinstance(self.approve, str) and self.approve not in APPROVAL_MODES:
            raise ScientistError(f"setting 'approve' must be one of {', '.join(APPROVAL_MODES)} "
                                 f"(or true / false), not {self.approve!r}")
        for name, low, high, inclusive in RANGES:
            value = getattr(self, name)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            bad = value < low if inclusive else value <= low
            if bad or (high is not None and value > high):
                where = f">= {low}" if inclusive else f"> {low}"
                where += f" and <= {high}" if high is not None else ""
                raise ScientistError(f"setting {name!r} must be {where}, not {value!r}")

    @property
    def approval(self) -> str:
        """`off`, `terminal` or `web`, from `approve` (older runs stored true or false)."""
        return approval_mode(self.approve)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ScientistError(f"{source}: unknown settings {sorted(unknown)}; "
                                 f"known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("time_budget"), str):
            d["time_budget"] = parse_duration(d["time_budget"])
        for f in fields(cls):
            if f.name in d:
                _check_type(f.name, str(f.type), d[f.name], source)
        return cls(**d)

    def merged(self, overrides: dict[str, Any]) -> RunConfig:
        d = asdict(self)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return RunConfig.from_dict(d)


APPROVAL_MODES = ("off", "terminal", "web")


def approval_mode(approve: bool | str) -> str:
    """The `approve` setting as a mode; runs made before `web` existed stored true or false."""
    if isinstance(approve, bool):
        return "terminal" if approve else "off"
    return str(approve)


TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
# (setting, lowest, highest or None, whether the lowest is allowed)
RANGES = (("iterations", 0, None, True), ("time_budget", 0, None, False),
          ("fme_buckets", 1, None, True), ("fme_temperature", 0, None, False),
          ("fme_capacity", 1, None, True), ("temperature", 0, 2, True),
          ("max_output_tokens", 1, None, True), ("llm_timeout", 0, None, False),
          ("llm_retries", 0, None, True), ("llm_backoff", 0, None, True),
          ("max_cost", 0, None, True), ("max_tokens", 0, None, True), ("price_in", 0, None, True),
          ("price_out", 0, None, True), ("format_retries", 0, None, True),
          ("max_repairs", 0, None, True), ("notebook_tokens", 1, None, True),
          ("workers", 1, None, True), ("gpus_per_step", 1, None, True), ("threads", 1, None, True),
          ("ahead", 0, None, True), ("slurm_time", 1, None, True), ("slurm_gpus", 0, None, True),
          ("slurm_mem_mb", 1, None, True), ("slurm_poll", 0, None, False))


def _check_type(name: str, annotation: str, value: Any, source: str) -> None:
    """Config files are typed by hand: say which setting has the wrong type."""
    options = [t.strip() for t in annotation.split("|")]
    if value is None and "None" in options:
        return
    ok = any(isinstance(value, TYPES[t]) and not (t != "bool" and isinstance(value, bool))
             for t in options if t in TYPES)
    if not ok:
        raise ScientistError(f"{source}: setting {name!r} must be {annotation}, not {value!r}")


ENV_SETTINGS = {"SCIENTIST_MODEL": "model", "SCIENTIST_API_BASE": "api_base"}


def env_settings() -> dict[str, Any]:
    """Settings given through the environment (they override the config file)."""
    return {key: os.environ[var] for var, key in ENV_SETTINGS.items() if os.environ.get(var)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ScientistError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ScientistError(f"config file {p} is not valid TOML: {e}") from None
    return raw.get("run", raw)


def parse_duration(text: str | float) -> float:
    """`600`, `90s`, `10m`, `1.5h` -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", text)
    if not m:
        raise ScientistError(f"cannot read duration {text!r}: use e.g. 600, 90s, 10m, 2h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
