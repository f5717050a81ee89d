"""A test double of the local sandbox that runs a step's Python script in this process.

Statistical tests of the loop (tests/test_claims.py) make hundreds of evaluations of a
pure-Python fixture seed; as subprocesses under the local sandbox they take about half a
second each, in this process a few milliseconds. Everything else (the loop, the evaluator's
exports and pristine files, the archive, the promotion) is the real thing.

It confines nothing and must only run trusted fixture seeds: the framework never offers
it (it lives in tests/, and no `--sandbox` name reaches it). The working directory,
`sys.argv` and the environment belong to the whole process, so use it with one worker
(`RunConfig(workers=1)`): its own steps hold a lock, but another evaluator thread reading
`os.environ` (GitPython does, to export the next seed) would see it change under it.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys
import threading
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout

from scientist.sandbox import Step, StepOutcome


class InlineSandbox:
    name = "inline (tests only)"

    def __init__(self) -> None:
        self.python = sys.executable
        self._lock = threading.Lock()

    def run(self, step: Step, cancel: threading.Event | None = None) -> StepOutcome:
        argv = shlex.split(step.command)
        if argv[:1] != [self.python] or len(argv) < 2:
            raise ValueError(f"the inline sandbox runs `python SCRIPT ...` only, not {step.command!r}")
        step.out.mkdir(parents=True, exist_ok=True)
        with self._lock:
            start = time.monotonic()
            cwd, old_argv, env = os.getcwd(), sys.argv, dict(os.environ)
            try:
                os.chdir(step.cwd)
                sys.argv = argv[1:]
                os.environ.update(step.env)
                with open(step.stdout, "w") as out, open(step.stderr, "w") as err, \
                        redirect_stdout(out), redirect_stderr(err):
                    code = _run_script(argv[1])
            finally:
                os.chdir(cwd)
                sys.argv = old_argv
                os.environ.clear()
                os.environ.update(env)
            seconds = time.monotonic() - start
        if code == 0:
            return StepOutcome("ok", 0, seconds, 0.0)
        return StepOutcome("crash", code, seconds, 0.0, f"{step.kind} failed: exit status {code}")

    def kill_leftovers(self) -> int:
        return 0

    def kill_all(self) -> None:
        pass


def _run_script(path: str) -> int:
    try:
        runpy.run_path(path, run_name="__main__")
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:
        traceback.print_exc()
        return 1
