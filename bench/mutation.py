"""Mutation score of the framework's core: do the tests notice when the code is wrong?

mutmut 3 makes one small change at a time in a module (an operator, a constant, a
condition, an argument dropped) and runs the fast tests that reach the changed function;
a change that no test notices (a *survivor*) is a hole in the tests, unless it changes
nothing a caller could observe (an *equivalent* mutant, listed with its reason in
bench/mutation_equivalents.toml). This prints, per module of the core, how many of its
mutants the tests kill.

    pip install -e '.[test,mutation]'
    python bench/mutation.py [--max-children 2]     # every module in SCOPES, from scratch
    python bench/mutation.py --modules edits,wire   # some of them
    python bench/mutation.py --keep --modules archive   # more modules, keeping the last run's record
    python bench/mutation.py --rerun-survivors      # after changing tests only: test the survivors again
    python bench/mutation.py --resume --modules evaluator   # a run stopped early: test the rest
    python bench/mutation.py --report [--show]      # the table of the last run; --show: survivors' diffs
    python bench/mutation.py --ci                   # CI's subset; exit 1 on a survivor not listed
    python bench/mutation.py --tests tests/test_archive.py --modules archive   # with its own tests only
                                                    # (one kept copy per set of tests: mutants-own-NAMES/)

Which files mutmut changes and which tests it runs are `[tool.mutmut]` in pyproject.toml
(the fast tests only: no seed training, no Docker). Work happens in `mutants/` at the top
of the checkout (ignored by git); subprocesses the tests start import the mutated package
from there too (PYTHONPATH). Code that runs only in a sandboxed step (a seed's judge and
learner processes) runs unmutated: the sandbox passes no MUTANT_UNDER_TEST. The harness's
functions are reached in-process by tests/test_harness.py instead.

A killed mutant is one a test failed on, or that made the tests time out (an endless loop).
The score is killed / (total - equivalent); `no tests` counts as survived.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT  # where mutmut runs: the checkout, or (--ci) a scratch copy of it
EQUIVALENTS = ROOT / "bench" / "mutation_equivalents.toml"
OWN = "mutants-own"  # --tests: kept copies of the checkout that run only the given tests


def own_copy(tests: str) -> Path:
    """The kept copy for this set of tests: one per set, since mutmut forgets every result
    when its test selection changes."""
    return ROOT / (OWN + "-" + "+".join(sorted(Path(t.strip()).stem for t in tests.split(","))))
TARGET = 0.85  # issue 19: at least this share of the core's mutants killed

# module label -> (file, mutant-name globs). Whole modules, except where only a part of a
# file belongs to the core (the budgets in run.py, llm.py and config.py).
SCOPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "edits": ("scientist/edits.py", ("scientist.edits.*",)),
    "editblocks": ("scientist/editblocks.py", ("scientist.editblocks.*",)),
    "selection": ("scientist/selection.py", ("scientist.selection.*",)),
    "archive": ("scientist/archive.py", ("scientist.archive.*",)),
    "evaluator": ("scientist/evaluator.py", ("scientist.evaluator.*",)),
    "notebook": ("scientist/notebook.py", ("scientist.notebook.*",)),
    "reply parsing": ("scientist/llm_proposer.py", ("scientist.llm_proposer.*",)),
    "redaction": ("scientist/redaction.py", ("scientist.redaction.*",)),
    "budgets: run": ("scientist/run.py", ("scientist.run.xǁRunǁ_check_budget__mutmut_*",
                                          "scientist.run.xǁRunǁover_time_budget__mutmut_*",
                                          "scientist.run.xǁRunǁ_duration__mutmut_*",
                                          "scientist.run.xǁRunǁrepair_target__mutmut_*",
                                          "scientist.run.xǁRunǁrepair_depth__mutmut_*")),
    "budgets: llm": ("scientist/llm.py", ("scientist.llm.xǁLLMClientǁcheck_budget__mutmut_*",
                                          "scientist.llm.xǁUsageǁ*",
                                          "scientist.llm.xǁReplyǁ*",
                                          "scientist.llm.x_short_count__mutmut_*")),
    "budgets: config": ("scientist/config.py", ("scientist.config.xǁRunConfigǁcheck__mutmut_*",
                                                "scientist.config.x_parse_duration__mutmut_*")),
    "promotion": ("scientist/promotion.py", ("scientist.promotion.*",)),
    "stats": ("scientist/stats.py", ("scientist.stats.*",)),
    "harness: wire": ("scientist/harness/wire.py", ("scientist.harness.wire.*",)),
    "harness: judge": ("scientist/harness/judge.py", ("scientist.harness.judge.*",)),
    "harness: learner": ("scientist/harness/learner.py", ("scientist.harness.learner.*",)),
}
# CI runs these, with only these tests, in a scratch copy of the checkout: pure text-in,
# text-out modules whose tests take seconds (the whole list takes hours). Not selection: its
# tests draw thousands of parents from SQLite, half a minute for each mutant they must test
CI_SCOPES = ("editblocks", "redaction")
CI_TESTS = ("tests/test_edits.py", "tests/test_redaction.py")

DETECTED = ("killed", "timeout", "segfault")  # segfault: mutmut's name for a SIGKILL (wall-clock limit)


@dataclass
class Tally:
    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    equivalent: int = 0
    missed: list[str] = field(default_factory=list)  # survivors not listed as equivalent

    @property
    def killed(self) -> int:
        return sum(self.by_status.get(s, 0) for s in DETECTED)

    @property
    def score(self) -> float:
        counted = self.total - self.equivalent
        return self.killed / counted if counted else 1.0


def mutmut_command() -> list[str]:
    exe = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if exe is None:
        sys.exit("mutmut is not installed: pip install -e '.[mutation]'")
    return [exe]


def mutants() -> Path:
    return WORK / "mutants"


def run_mutmut(names: list[str], max_children: int, log: Path, keep: bool = False) -> float:
    """`mutmut run NAMES` in WORK; returns its wall time in seconds."""
    if not keep:
        (mutants() / "mutmut-stats.json").unlink(missing_ok=True)  # which tests reach what: measured afresh
    env = {**os.environ, "PYTHONPATH": str(mutants())}
    env.pop("MUTANT_UNDER_TEST", None)
    cmd = [*mutmut_command(), "run", "--max-children", str(max_children), *names]
    start = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=WORK, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - start
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"mutmut failed (exit status {rc}); the end of {log}:\n{tail}")
    return seconds


def scratch_copy(labels: list[str] | None, tests: tuple[str, ...] = CI_TESTS, dst: Path | None = None,
                 tight: bool = True) -> Path:
    """A copy of the checkout's files (as they are now) whose [tool.mutmut] mutates only the
    files of `labels` (None: all of the core's, as mutmut never mutates a file it has copied
    unmutated) and runs only `tests`; in `dst` (kept, refreshed) or a new temporary folder.
    `tight`: CI's shorter limit for a mutant that loops forever."""
    if dst is None:
        dst = Path(tempfile.mkdtemp(prefix="scientist-mutation-"))
    dst.mkdir(exist_ok=True)
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    files = [f for f in listed.stdout.decode().split("\0") if f] if listed.returncode == 0 else None
    if files is None:  # not a git checkout: everything but what runs leave behind
        shutil.copytree(ROOT, dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("mutants", "runs", ".git", "__pycache__"))
    else:
        for f in files:
            if (ROOT / f).is_file():
                (dst / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, dst / f)
    text = (dst / "pyproject.toml").read_text()
    config = tomllib.loads(text)["tool"]["mutmut"]
    if labels is not None:
        config["only_mutate"] = sorted({SCOPES[label][0] for label in labels})
    config["pytest_add_cli_args_test_selection"] = list(tests)
    # a mutant that loops forever is stopped after 2 x 4 x (its tests' usual time + 1 s) of CPU,
    # not mutmut's 2 x 15 x: with these tests' tenths of a second that is 8 s instead of 30 s
    # for each of editblocks' endless loops; a stopped mutant counts as killed, so a tighter
    # limit can never fail CI by itself
    if tight:
        config["timeout_multiplier"] = 4.0
    start = text.index("[tool.mutmut]")
    end = text.find("\n[", start + 1)
    section = "[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    (dst / "pyproject.toml").write_text(text[:start] + section + (text[end:] if end != -1 else ""))
    return dst


def results() -> dict[str, tuple[str, str]]:
    """mutant name -> (status, source file) from mutmut's record in mutants/."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    out: dict[str, tuple[str, str]] = {}
    paths = {path for path, _ in SCOPES.values()}
    cwd = os.getcwd()
    os.chdir(WORK)
    try:
        for path in sorted(paths):
            m = SourceFileMutationData(path=path)
            m.load()
            for name, code in m.exit_code_by_key.items():
                out[name] = (status_by_exit_code[code], path)
    finally:
        os.chdir(cwd)
    return out


def in_scope(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def diff_of(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(WORK)
    try:
        return get_diff_for_mutant(name, path=path)
    finally:
        os.chdir(cwd)


def change_of(diff: str) -> str:
    """The changed lines of a mutant's diff, as the equivalents file records them."""
    lines = [ln for ln in diff.splitlines()[2:] if ln[:1] in "+-" and ln[1:].strip()]
    return " / ".join(ln[0] + " " + ln[1:].strip() for ln in lines)


def load_equivalents() -> dict[str, dict[str, str]]:
    data = tomllib.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}
    return {e["mutant"]: e for e in data.get("equivalent", [])}


def add_equivalents(entries: list[tuple[str, str]]) -> None:
    """Append entries to the equivalents file, with each mutant's change as it is now."""
    found = results()
    listed = load_equivalents()
    with open(EQUIVALENTS, "a") as f:
        for name, why in entries:
            if name not in found:
                sys.exit(f"no mutant {name} in the last run")
            if name in listed:
                sys.exit(f"{name} is listed already")
            change = change_of(diff_of(name, found[name][1]))
            f.write(f"\n[[equivalent]]\nmutant = {toml_string(name)}\nchange = {toml_string(change)}\n"
                    f"why = {toml_string(why)}\n")
            print(f"{name}: {change}")


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def tally(labels: list[str], found: dict[str, tuple[str, str]],
          equivalents: dict[str, dict[str, str]]) -> tuple[dict[str, Tally], list[str]]:
    """Counts per module, and problems with the equivalents list (stale or now killed)."""
    tallies: dict[str, Tally] = {}
    problems: list[str] = []
    for label in labels:
        path, globs = SCOPES[label]
        t = tallies[label] = Tally()
        for name, (status, where) in sorted(found.items()):
            if where != path or not in_scope(name, globs) or status == "not checked":
                continue
            t.total += 1
            t.by_status[status] = t.by_status.get(status, 0) + 1
            if status in DETECTED:
                if name in equivalents:
                    problems.append(f"{name} is listed as equivalent but a test kills it now: "
                                    "remove it from the list")
                continue
            listed = equivalents.get(name)
            if listed is None:
                t.missed.append(name)
                continue
            change = change_of(diff_of(name, path))
            if change != listed.get("change", ""):
                problems.append(f"{name} is listed as equivalent for the change {listed.get('change')!r}, "
                                f"but the mutant now is {change!r}: the code changed, look at it again")
                t.missed.append(name)
            else:
                t.equivalent += 1
    return tallies, problems


def unchecked(labels: list[str], found: dict[str, tuple[str, str]]) -> list[str]:
    """The mutants of `labels` that the last run did not reach."""
    return sorted(name for label in labels for name, (status, where) in found.items()
                  if where == SCOPES[label][0] and in_scope(name, SCOPES[label][1])
                  and status == "not checked")


def print_table(tallies: dict[str, Tally]) -> None:
    cols = ("killed", "timeout", "survived", "no tests", "suspicious")
    print(f"{'module':<18} {'total':>6} " + " ".join(f"{c:>10}" for c in cols)
          + f" {'equivalent':>10} {'missed':>7} {'score':>7}")
    overall = Tally()
    for label, t in tallies.items():
        n = t.by_status.get
        counts = [n("killed", 0), n("timeout", 0) + n("segfault", 0), n("survived", 0), n("no tests", 0),
                  n("suspicious", 0)]
        print(f"{label:<18} {t.total:>6} " + " ".join(f"{c:>10}" for c in counts)
              + f" {t.equivalent:>10} {len(t.missed):>7} {t.score:>7.1%}")
        overall.total += t.total
        overall.equivalent += t.equivalent
        overall.missed += t.missed
        for k, v in t.by_status.items():
            overall.by_status[k] = overall.by_status.get(k, 0) + v
    raw = overall.killed / overall.total if overall.total else 1.0
    print(f"\nall: {overall.killed} of {overall.total} mutants killed ({raw:.1%}); {overall.equivalent} "
          f"equivalent; score {overall.score:.1%} (target {TARGET:.0%}); {len(overall.missed)} "
          "survivors not listed as equivalent")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modules", help=f"comma-separated labels of SCOPES (default: all): {', '.join(SCOPES)}")
    p.add_argument("--ci", action="store_true", help=f"the CI subset ({', '.join(CI_SCOPES)}); "
                   "exit 1 if a survivor is not listed as equivalent")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 1,
                   help="mutants tested at once (default: one per CPU core)")
    p.add_argument("--report", action="store_true", help="no run: the table of the last run")
    p.add_argument("--keep", action="store_true",
                   help="keep mutants/ and its record: test the named modules and add them to the last run's "
                   "(to measure module by module; the code must not have changed in between)")
    p.add_argument("--rerun-survivors", action="store_true",
                   help="test only the last run's survivors again (after changing tests, not code)")
    p.add_argument("--resume", action="store_true",
                   help="test only the mutants the last run did not reach (it was stopped early); the code "
                   "and tests must not have changed since")
    p.add_argument("--tests", help="comma-separated test files: run only these (a module's own tests: "
                   "minutes instead of hours), in a copy of the checkout kept in mutants-own-NAMES/; pass "
                   "the same --tests again to --report, --keep, --rerun-survivors and --equivalent")
    p.add_argument("--show", action="store_true", help="print the diff of every survivor not listed")
    p.add_argument("--equivalent", nargs=2, action="append", metavar=("NAME", "WHY"), default=[],
                   help="list surviving mutant NAME as equivalent, for the one-line reason WHY (no run)")
    a = p.parse_args(argv)
    global WORK
    if a.equivalent:
        if a.tests:
            WORK = own_copy(a.tests)
        add_equivalents(a.equivalent)
        return 0

    if a.ci:
        labels = list(CI_SCOPES)
    else:
        labels = [s.strip() for s in a.modules.split(",")] if a.modules else list(SCOPES)
    unknown = [x for x in labels if x not in SCOPES]
    if unknown:
        p.error(f"unknown module(s) {unknown}; known: {', '.join(SCOPES)}")
    if a.ci and not a.report:
        WORK = scratch_copy(labels)
    elif a.tests:
        WORK = own_copy(a.tests)
        if not a.report:  # the copy's files as they are now (mutmut remakes mutants of changed ones)
            tests = tuple(t.strip() for t in a.tests.split(","))
            scratch_copy(None, tests, dst=WORK, tight=False)
    try:
        return measure(a, labels)
    finally:
        if a.ci and WORK != ROOT:
            shutil.rmtree(WORK, ignore_errors=True)


def measure(a: argparse.Namespace, labels: list[str]) -> int:
    equivalents = load_equivalents()
    log = mutants() / "mutmut.log"
    seconds = None
    if not a.report:
        if a.rerun_survivors:
            previous, _ = tally(labels, results(), {})
            names = sorted(n for t in previous.values() for n in t.missed)
            if not names:
                print("no survivors to test again")
        elif a.resume:  # named one by one: mutmut tests again every mutant a pattern names
            names = unchecked(labels, results())
            if not names:
                print("every mutant of these modules has a result already")
        else:
            if not a.keep:
                shutil.rmtree(mutants(), ignore_errors=True)  # from scratch: mutants of the code as it is
            names = [g for label in labels for g in SCOPES[label][1]]
        # made before mutmut's Python starts: an absent PYTHONPATH entry is never looked at again
        mutants().mkdir(exist_ok=True)
        if names:
            print(f"mutmut: {len(names)} mutant name(s)/pattern(s), {a.max_children} at a time; log in {log}",
                  flush=True)
            # --rerun-survivors: which tests reach which function is measured again, since changed tests
            # may reach more (mutmut's record of a test it has seen is not renewed when the test changes)
            seconds = run_mutmut(names, a.max_children, log, keep=a.keep or a.resume)
    tallies, problems = tally(labels, results(), equivalents)
    print_table(tallies)
    if seconds is not None:
        print(f"wall time {seconds / 60:.1f} min with --max-children {a.max_children}")
    for msg in problems:
        print(f"equivalents list: {msg}")
    missed = [(n, SCOPES[label][0]) for label, t in tallies.items() for n in t.missed]
    if a.show or (a.ci and missed):  # --ci: the scratch copy goes away, so the diffs are shown now
        for name, path in missed:
            print(f"\n# {name}\n{diff_of(name, path)}")
    elif missed:
        print("survivors not listed as equivalent (diffs: --show, or `mutmut show NAME`):")
        for name, _ in missed:
            print(f"  {name}")
    if a.ci and (missed or problems):
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
