"""Run a seed's judge with its learner IN THE SAME PROCESS: the boundary removed, on purpose.

    python tests/inprocess.py SEED_DIR LEARNER_ARG... -- EVALUATE_ARG...

The hostile-variant tests use this to show that an attack is potent: the same hostile code
that the framework scores honestly (judge and learner in separate processes and sandboxes)
forges the fitness when the learner shares the judge's process, as every seed's evaluator
did before the harness. It runs, in SEED_DIR, the seed's `learner.py` with LEARNER_ARGs
(its `serve` call captures the learner object instead of listening), then the seed's
`evaluate.py` with EVALUATE_ARGs, whose `judge.connect` returns a proxy that calls the
object's methods directly: one process, one stack, one set of modules, as before.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

import numpy as np

from scientist.harness import judge, learner, wire


class InProcessLearner:
    """The judge's learner handle, calling the learner object in this very process."""

    def __init__(self, obj: object):
        self.obj, self.calls, self.seconds = obj, 0, 0.0

    def call(self, op: str, *, timeout: float | None = None, max_bytes: int | None = None,
             **payload: Any) -> judge.Reply:
        self.calls += 1
        try:
            result = getattr(self.obj, op)(**payload) or {}
        except Exception as e:
            raise judge.LearnerError(f"the learner failed in {op!r}: {e!r}") from e
        data = {}
        for k, v in result.items():
            a = wire._as_array(v)
            data[k] = np.asarray(a) if a is not None else v
        return judge.Reply(op, data)

    def send(self, op: str, **payload: Any) -> None:
        self.call(op, **payload)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> InProcessLearner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def main(argv: list[str]) -> None:
    seed_dir, rest = argv[0], argv[1:]
    split = rest.index("--")
    learner_args, evaluate_args = rest[:split], rest[split + 1:]
    os.chdir(seed_dir)
    sys.path.insert(0, seed_dir)
    captured: list[object] = []
    learner.serve = captured.append  # learner.py calls serve(obj): keep obj, do not listen
    sys.argv = ["learner.py", *learner_args]
    runpy.run_path("learner.py", run_name="__main__")
    if not captured:
        sys.exit("inprocess: learner.py did not call serve()")
    obj = captured[0]
    judge.connect = lambda *a, **k: InProcessLearner(obj)
    sys.argv = ["evaluate.py", *evaluate_args]
    runpy.run_path("evaluate.py", run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
