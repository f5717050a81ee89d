"""Shared fixtures: a private copy of the toy seed, and ways to run the framework on it.

The toy seed (tests/fixtures/toyseed) is pure Python and trains in well under a second;
its `mode` field makes it crash, hang, hog memory, cheat or print a secret. Tests edit
their own copy in tmp_path, never the fixture, and write runs only under tmp_path.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from scientist.archive import Archive
from scientist.config import RunConfig
from scientist.run import Run

TOY = Path(__file__).resolve().parent / "fixtures" / "toyseed"
STRICT = os.environ.get("SCIENTIST_STRICT") == "1"  # CI: what a test needs is installed


def need_module(name: str):
    """`pytest.importorskip(name)` that fails instead under SCIENTIST_STRICT=1, where CI has
    installed everything: a module that cannot be imported there is a broken install, not a
    reason to skip. Works at module level (a collection error) and inside a test."""
    if not STRICT:
        return pytest.importorskip(name)
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.fail(f"SCIENTIST_STRICT=1 but {name} cannot be imported: {e}", pytrace=False)


class ToySeed:
    """A copy of the toy seed that a test may change: fields of `Args`, scales, knobs."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def train(self) -> Path:
        return self.path / "train.py"

    @property
    def manifest(self) -> Path:
        return self.path / "seed.toml"

    def set_field(self, name: str, value: object) -> ToySeed:
        """Set the default of `Args.<name>` in train.py to the Python literal of `value`."""
        text = self.train.read_text()
        pattern = rf"^(    {re.escape(name)}: [^=\n]+= )[^#\n]+?(\s*#.*)?$"
        new, n = re.subn(pattern, lambda m: f"{m[1]}{value!r}{m[2] or ''}", text, flags=re.M)
        assert n == 1, f"no field {name} in {self.train}"
        self.train.write_text(new)
        return self

    def set_mode(self, mode: str) -> ToySeed:
        return self.set_field("mode", mode)

    def set_scale(self, **values: object) -> ToySeed:
        """Change the `test` scale's limits (timeout, memory_mb, training_seeds, iterations)."""
        text = self.manifest.read_text()
        for key, value in values.items():
            text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
            assert n == 1, f"no {key} in the test scale"
        self.manifest.write_text(text)
        return self

    def replace_manifest(self, old: str, new: str) -> ToySeed:
        text = self.manifest.read_text()
        assert old in text, f"{old!r} not in seed.toml"
        self.manifest.write_text(text.replace(old, new, 1))
        return self

    def only_mutable(self, toml: str) -> ToySeed:
        """Replace every declared [[mutable]] by the given TOML text."""
        text = self.manifest.read_text()
        head = text[: text.index("[[mutable]]")]
        self.manifest.write_text(head + toml)
        return self

    def add_to_train(self, code: str) -> ToySeed:
        """Insert a line of code into train.py's main(), right after the Args are built."""
        text = self.train.read_text()
        anchor = "    args = Args()\n"
        assert anchor in text
        self.train.write_text(text.replace(anchor, anchor + f"    {code}\n", 1))
        return self


@pytest.fixture
def toy(tmp_path: Path) -> ToySeed:
    dst = tmp_path / "toyseed"
    shutil.copytree(TOY, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return ToySeed(dst)


@pytest.fixture
def archive(tmp_path: Path):
    """An empty archive in tmp_path (maximising)."""
    a = Archive(tmp_path / "archive.sqlite")
    yield a
    a.close()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


def make_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=250, highlight=False, color_system=None), buf


@pytest.fixture
def make_run(runs_dir: Path):
    """Create a Run on a seed folder with a console that writes to a string.

    Returns (run, output buffer). Defaults: scale test, no report, run id `r`.
    """
    made: list[Run] = []

    def make(seed: ToySeed | Path, **settings: object) -> tuple[Run, io.StringIO]:
        path = seed.path if isinstance(seed, ToySeed) else seed
        cfg = RunConfig(**{"seed": str(path), "scale": "test", "runs_dir": str(runs_dir),
                           "run_id": "r", "report": False, **settings})
        console, buf = make_console()
        run = Run.create(cfg, console)
        made.append(run)
        return run, buf

    yield make
    for r in made:
        r.close()


def cli_env() -> dict[str, str]:
    """Environment for `scientist` subprocesses: wide output, no colour."""
    return {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "scientist.cli", *args]


@pytest.fixture
def scientist_cli(tmp_path: Path):
    """Run the `scientist` command line as a subprocess; returns the CompletedProcess."""

    def run(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(cli_argv(*args), input=input, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path, env=cli_env())

    return run
