"""Where the project's own folders are: `templates/`, `seeds/` and `sandbox/` (the Docker
image's build context), and the default runs folder.

In a source checkout (run from it, or installed with `pip install -e .`) they sit beside the
package, at the top level (DESIGN.md). A regular install (`pip install .`) has no checkout:
pyproject.toml maps them into the package as `scientist/templates`, `scientist/seeds` and
`scientist/sandbox_image`, and runs go to `./runs` of the folder `scientist` was started in.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent


def folder(top: str, installed: str | None = None) -> Path:
    """The checkout's `top` folder, or its copy inside the installed package."""
    inside = PACKAGE / (installed or top)
    return inside if inside.is_dir() else CHECKOUT / top


def is_checkout() -> bool:
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "seeds").is_dir()


TEMPLATES = folder("templates")
SEEDS = folder("seeds")
SANDBOX = folder("sandbox", "sandbox_image")
HARNESS = PACKAGE / "harness"
RUNS = CHECKOUT / "runs" if is_checkout() else Path.cwd() / "runs"
