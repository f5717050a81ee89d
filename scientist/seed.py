"""Seed: a baseline research codebase and its contract (`seed.toml`) with the framework.

A seed folder holds the research code, a fixed evaluator and a `seed.toml` that says
what may be edited, how to train and evaluate, which metric is the fitness and in which
direction it improves, and the scales (`test`, `smoke`, `full`) with their limits.
`load_seed` validates the manifest and names the field at fault when it is wrong, so a
researcher can point `scientist run --seed PATH` at their own folder.
"""

from __future__ import annotations

import math
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scientist.errors import SeedError
from scientist.resources import SEEDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEEDS_DIR = SEEDS
MANIFEST = "seed.toml"
PLACEHOLDERS = {"python", "scale", "seed", "out", "metrics"}
MUTABLE_TYPES = {"float", "int", "choice", "bool"}


@dataclass(frozen=True)
class Scale:
    """Size preset of a seed: the seed's code reads `--scale NAME`; these are its limits."""

    name: str
    timeout: float
    """Wall-clock seconds allowed for one step (one train or one evaluate)."""
    memory_mb: int
    """Resident memory allowed for the step's whole process tree."""
    training_seeds: int
    """Independent training runs per evaluation of a variant; fitness is their mean."""
    iterations: int
    """Default number of proposals for a run at this scale."""
    time_budget: float | None = None
    """Default wall-clock budget in seconds for a whole run at this scale (None: no limit)."""
    noise_seeds: int = 4
    """Training seeds of the baseline at the start of a run: its spread between them is the
    run's noise floor (default: max(4, 2 x training_seeds); at least training_seeds)."""
    gpus: int = 0
    """GPUs a seed-job wants at this scale: what a Slurm job asks for by default."""
    integrity: "Integrity | None" = None
    """`[scales.NAME.integrity]`: this scale's own thresholds, each field falling back to the
    seed's `[integrity]` (a gap calibrated on smoke's 32 lanes is noise on test's 2)."""


@dataclass(frozen=True)
class Mutable:
    """A hyperparameter the offline proposer may change: one `NAME: TYPE = LITERAL` line."""

    file: str
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class Integrity:
    """What makes a fitness implausible for this seed (`[integrity]` in seed.toml): a variant
    is labelled `suspicious` when its fitness is past `ceiling`, or when it beats the
    `holdout` metric (measured the same way on data selection never sees) by more than
    `max_gap` in the fitness's direction (`inf`: no gap check, e.g. at a scale too small for
    the gap to be more than noise)."""

    ceiling: float | None = None
    holdout: str = ""
    max_gap: float | None = None


@dataclass(frozen=True)
class Seed:
    """A validated seed folder."""

    path: Path
    name: str
    title: str
    summary: str
    goal: str
    references: tuple[str, ...]
    editable: tuple[str, ...]
    protected: tuple[str, ...]
    train_command: str
    evaluate_command: str
    metric: str
    maximize: bool
    scales: dict[str, Scale]
    mutables: tuple[Mutable, ...] = ()
    evaluate_env: dict[str, str] = field(default_factory=dict)
    learner_command: str = ""
    """Starts the learner process that serves the variant's code to the judge (the evaluate
    command); empty for a seed whose evaluator still imports the variant's code itself."""
    integrity: Integrity = field(default_factory=lambda: Integrity())

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise SeedError(
                f"{self.name}: no scale {name!r} in {MANIFEST}; it has: {', '.join(self.scales)}"
            )
        return self.scales[name]

    def integrity_at(self, scale: str | None) -> Integrity:
        """The integrity thresholds at `scale`: its own `[scales.NAME.integrity]` over the seed's."""
        own = self.scales[scale].integrity if scale in self.scales else None
        return own if own is not None else self.integrity

    def files(self) -> list[str]:
        """Every file of the seed, relative to its folder (caches and VCS folders skipped)."""
        skip = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache"}
        out = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path)
            if p.is_file() and not (set(rel.parts) & skip) and p.suffix != ".pyc":
                out.append(rel.as_posix())
        return out


def resolve_seed_path(name_or_path: str) -> Path:
    """A built-in seed name (`vsml`) or a path to a folder with a seed.toml."""
    p = Path(name_or_path).expanduser()
    if (p / MANIFEST).is_file():
        return p.resolve()
    builtin = SEEDS_DIR / name_or_path
    if "/" not in name_or_path and (builtin / MANIFEST).is_file():
        return builtin
    known = sorted(d.name for d in SEEDS_DIR.glob("*") if (d / MANIFEST).is_file())
    raise SeedError(
        f"no seed {name_or_path!r}: not a folder with a {MANIFEST} and not a built-in seed "
        f"(built-in: {', '.join(known) or 'none'})"
    )


def load_seed(name_or_path: str | Path) -> Seed:
    path = resolve_seed_path(str(name_or_path))
    try:
        raw = tomllib.loads((path / MANIFEST).read_text())
    except tomllib.TOMLDecodeError as e:
        raise SeedError(f"{path / MANIFEST}: not valid TOML: {e}") from None
    return parse_manifest(raw, path)


def parse_manifest(raw: dict[str, Any], path: Path) -> Seed:
    where = str(path / MANIFEST)
    get = _Getter(raw, where)
    name = get.str("name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SeedError(f"{where}: field 'name' must be letters, digits, '_', '.', '-': {name!r}")
    editable = get.paths("files.editable", path)
    protected = get.paths("files.protected", path)
    both = set(editable) & set(protected)
    if both:
        raise SeedError(f"{where}: files both editable and protected: {sorted(both)}")
    if not editable:
        raise SeedError(f"{where}: field 'files.editable' must name at least one file")
    train = get.command("commands.train")
    evaluate = get.command("commands.evaluate")
    learner = get.command("commands.learner", required=False)
    for key, command in (("commands.train", train), ("commands.learner", learner)):
        if command and "{metrics}" in command:
            raise SeedError(f"{where}: field '{key}' must not get {{metrics}}: only the "
                            "judge (the evaluate command) writes the metrics file")
    if "{metrics}" not in evaluate:
        raise SeedError(f"{where}: field 'commands.evaluate' must pass {{metrics}} to the evaluator")
    direction = get.str("fitness.direction")
    if direction not in ("max", "min"):
        raise SeedError(f"{where}: field 'fitness.direction' must be 'max' or 'min', not {direction!r}")
    scales_raw = get.table("scales")
    if not scales_raw:
        raise SeedError(f"{where}: field 'scales' must define at least one scale (test, smoke, full)")
    integrity = _integrity(get)
    scales = {n: _scale(n, get, integrity) for n in scales_raw}
    env = get.table("data.evaluate_env", required=False)
    for k, v in env.items():
        if not isinstance(v, str):
            raise SeedError(f"{where}: field 'data.evaluate_env.{k}' must be a string")
    mutables = tuple(_mutable(i, m, where, editable) for i, m in enumerate(raw.get("mutable", [])))
    return Seed(
        path=path, name=name, title=get.str("title"), summary=get.str("summary"),
        goal=get.str("goal", required=False) or get.str("summary"),
        references=tuple(get.list("references", required=False)),
        editable=editable, protected=protected, train_command=train, evaluate_command=evaluate,
        metric=get.str("fitness.metric"), maximize=direction == "max", scales=scales,
        mutables=mutables, evaluate_env=dict(env), learner_command=learner,
        integrity=integrity,
    )


def _integrity(get: _Getter, key: str = "integrity", base: Integrity | None = None) -> Integrity:
    """`[integrity]`, or a scale's `[scales.NAME.integrity]` whose missing fields are `base`'s."""
    get.table(key, required=False)
    base = base or Integrity()
    nan = math.nan
    ceiling = get.number(f"{key}.ceiling", required=False,
                         default=nan if base.ceiling is None else base.ceiling)
    gap = get.number(f"{key}.max_gap", required=False, infinite=True,  # inf: no gap check
                     default=nan if base.max_gap is None else base.max_gap)
    holdout = get.str(f"{key}.holdout", required=False) or base.holdout
    if holdout and math.isnan(gap):
        raise SeedError(f"{get.where}: field '{key}.holdout' needs '{key}.max_gap'")
    if not math.isnan(gap) and gap < 0:
        raise SeedError(f"{get.where}: field '{key}.max_gap' must be at least 0, not {gap}")
    return Integrity(None if math.isnan(ceiling) else float(ceiling), holdout,
                     None if math.isnan(gap) else float(gap))


def _scale(name: str, get: _Getter, integrity: Integrity) -> Scale:
    key = f"scales.{name}"
    timeout = get.number(f"{key}.timeout")
    memory = get.number(f"{key}.memory_mb")
    seeds = get.number(f"{key}.training_seeds")
    iterations = get.number(f"{key}.iterations", required=False, default=10)
    budget = get.number(f"{key}.time_budget", required=False, default=math.inf)
    noise = get.number(f"{key}.noise_seeds", required=False, default=max(4, 2 * int(seeds)))
    gpus = get.number(f"{key}.gpus", required=False, default=0)
    for f, v, lo in (("timeout", timeout, 1), ("memory_mb", memory, 64),
                     ("training_seeds", seeds, 1), ("iterations", iterations, 0),
                     ("time_budget", budget, 1), ("noise_seeds", noise, max(2, seeds)),
                     ("gpus", gpus, 0)):
        if v < lo:
            raise SeedError(f"{get.where}: field '{key}.{f}' must be at least {lo}, not {v}")
    own = None
    if isinstance(get.table(key).get("integrity"), dict):
        own = _integrity(get, f"{key}.integrity", integrity)
    return Scale(name, float(timeout), int(memory), int(seeds), int(iterations),
                 None if budget == math.inf else float(budget), int(noise), int(gpus), own)


def _mutable(i: int, m: Any, where: str, editable: tuple[str, ...]) -> Mutable:
    key = f"mutable[{i}]"
    if not isinstance(m, dict):
        raise SeedError(f"{where}: field '{key}' must be a table")
    for f in ("file", "name", "type"):
        if not isinstance(m.get(f), str):
            raise SeedError(f"{where}: field '{key}.{f}' is missing or not a string")
    if m["file"] not in editable:
        raise SeedError(f"{where}: field '{key}.file' ({m['file']}) is not an editable file")
    if m["type"] not in MUTABLE_TYPES:
        raise SeedError(f"{where}: field '{key}.type' must be one of {sorted(MUTABLE_TYPES)}")
    low, high, values = m.get("low"), m.get("high"), tuple(m.get("values", ()))
    if m["type"] in ("float", "int"):
        if not all(isinstance(x, (int, float)) for x in (low, high)) or not low < high:
            raise SeedError(f"{where}: field '{key}' needs numbers low < high for type {m['type']}")
        if m.get("log") and low <= 0:
            raise SeedError(f"{where}: field '{key}.low' must be > 0 when log = true")
    if m["type"] == "choice" and len(values) < 2:
        raise SeedError(f"{where}: field '{key}.values' needs at least two values for type choice")
    return Mutable(m["file"], m["name"], m["type"], low, high, bool(m.get("log", False)),
                   values, str(m.get("why", "")))


class _Getter:
    """Typed access to dotted manifest keys with errors that name the field."""

    def __init__(self, raw: dict[str, Any], where: str):
        self.raw, self.where = raw, where

    def _get(self, key: str, required: bool) -> Any:
        node: Any = self.raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if required:
                    raise SeedError(f"{self.where}: missing field '{key}'")
                return None
            node = node[part]
        return node

    def str(self, key: str, required: bool = True) -> str:
        v = self._get(key, required)
        if v is None:
            return ""
        if not isinstance(v, str) or (required and not v.strip()):
            raise SeedError(f"{self.where}: field '{key}' must be a non-empty string")
        return v.strip()

    def number(self, key: str, required: bool = True, default: float = 0,
               infinite: bool = False) -> float:
        """A finite number (or, with `infinite`, also TOML's `inf`)."""
        v = self._get(key, required)
        if v is None:
            return default
        ok = math.isfinite(v) or (infinite and v == math.inf) if isinstance(v, (int, float)) else False
        if isinstance(v, bool) or not ok:
            raise SeedError(f"{self.where}: field '{key}' must be a number, not {v!r}")
        return v

    def list(self, key: str, required: bool = True) -> list:
        v = self._get(key, required)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise SeedError(f"{self.where}: field '{key}' must be a list of strings")
        return v

    def table(self, key: str, required: bool = True) -> dict:
        v = self._get(key, required)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise SeedError(f"{self.where}: field '{key}' must be a table")
        return v

    def paths(self, key: str, root: Path) -> tuple[str, ...]:
        out = []
        for rel in self.list(key):
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise SeedError(f"{self.where}: field '{key}': {rel!r} must be relative, inside the seed")
            if not (root / rel).is_file():
                raise SeedError(f"{self.where}: field '{key}': no file {rel!r} in {root}")
            out.append(Path(rel).as_posix())
        return tuple(out)

    def command(self, key: str, required: bool = True) -> str:
        cmd = self.str(key, required)
        if not cmd:
            return ""
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(cmd) if f is not None}
        except ValueError as e:
            raise SeedError(f"{self.where}: field '{key}': bad placeholder syntax: {e}") from None
        unknown = names - PLACEHOLDERS
        if unknown:
            raise SeedError(
                f"{self.where}: field '{key}': unknown placeholders {sorted(unknown)}; "
                f"known: {sorted(PLACEHOLDERS)}"
            )
        return cmd
