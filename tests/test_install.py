"""A regular install (`pip install .`, not editable) finds its templates, seeds and image
build context, and puts runs in the folder it is started from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import json, sys
from pathlib import Path
import scientist
from scientist import resources
from scientist.seed import load_seed
print(json.dumps({
    "package": scientist.__file__,
    "vsml": str(load_seed("vsml").path),
    "prompt": (resources.TEMPLATES / "prompts" / "propose.j2").is_file(),
    "report": (resources.TEMPLATES / "report" / "report.tex.j2").is_file()
    and (resources.TEMPLATES / "report" / "report.html.j2").is_file()
    and (resources.TEMPLATES / "report" / "sections" / "abstract.tex.j2").is_file()
    and (resources.TEMPLATES / "prompts" / "paper_section.j2").is_file(),
    "dockerfile": (resources.SANDBOX / "Dockerfile").is_file(),
    "runs": str(resources.RUNS),
}))
"""


def test_a_regular_install_finds_its_templates_and_seeds(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("scientist-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    p = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                       cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(target)})
    assert p.returncode == 0, p.stderr
    import json

    got = json.loads(p.stdout)
    assert got["package"].startswith(str(target))
    assert got["vsml"] == str(target / "scientist" / "seeds" / "vsml")
    assert got["prompt"] and got["report"] and got["dockerfile"]
    assert got["runs"] == str(elsewhere / "runs")
