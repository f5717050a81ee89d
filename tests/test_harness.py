"""The judge's handle on the learner, over a real socket pair and a real learner process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scientist.harness import judge

LEARNER = """
import sys
from scientist.harness.learner import serve

class Counter:
    def __init__(self):
        self.n = 0
    def learn(self, y):
        self.n += 1
        if self.n == {fail_at}:
            raise RuntimeError("learn failed at " + str(self.n))
        return {{}}
    def count(self):
        return {{"n": self.n}}

serve(Counter())
"""

JUDGE = """
import sys
from scientist.harness import judge

def evaluate(learner):
    for i in range(5):
        learner.send("learn", y=float(i))
    n = learner.call("count").number("n")
    for i in range(3):
        learner.send("learn", y=float(i))
    return {{"n": n}}

judge.main(evaluate, sys.argv[1], standalone=[sys.executable, {learner!r}])
"""


def run_judge(tmp_path, fail_at):
    learner = tmp_path / "learner.py"
    learner.write_text(textwrap.dedent(LEARNER.format(fail_at=fail_at)))
    script = tmp_path / "judge.py"
    script.write_text(textwrap.dedent(JUDGE.format(learner=str(learner))))
    metrics = tmp_path / "metrics.json"
    env = dict(os.environ, PYTHONPATH=str(Path(judge.__file__).parents[2]))
    proc = subprocess.run([sys.executable, str(script), str(metrics)], capture_output=True,
                          text=True, timeout=120, env=env)
    return proc, metrics


def test_sent_requests_are_answered_in_order_before_a_call(tmp_path):
    proc, metrics = run_judge(tmp_path, fail_at=0)
    assert proc.returncode == judge.EXIT_OK, proc.stderr
    assert json.loads(metrics.read_text())["n"] == 5


@pytest.mark.parametrize("fail_at", [2, 8])
def test_a_failed_sent_request_is_the_learners_failure(tmp_path, fail_at):
    """A `learn` that fails mid-stream (read at the next call) or last (read only at the
    end, when the judge flushes) fails the evaluation: no metrics are written."""
    proc, metrics = run_judge(tmp_path, fail_at=fail_at)
    assert proc.returncode == judge.EXIT_LEARNER, proc.stderr
    m = json.loads(metrics.read_text())
    assert "n" not in m and m[judge.HARNESS_KEY]["status"] != "ok"
    assert f"learn failed at {fail_at}" in m[judge.HARNESS_KEY]["reason"]
