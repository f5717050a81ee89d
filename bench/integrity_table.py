"""The table of attacks x seeds x sandboxes, with the fitness each hostile variant got.

    python bench/integrity_table.py [--seeds vsml,fme] [--sandboxes local,docker]

For each seed with a thief in tests/stealers/: the honest baseline is trained once at the
`test` scale; then the thief (tests/hostile.py: frames, gc, monkeypatching, atexit and signal
forgers, held-out data by variable and path, the seed's own attacks) is scored on that
checkpoint with its learner inside the judge's process (the boundary removed: what every
evaluator did before the harness), and in each sandbox. Then the learner-side protocol attacks
(NaN, wrong shape, a huge reply, garbage, a hang, forged stdout) against vsml's judge. Prints
a Markdown table: the fitness, or the outcome and its reason. The same checks, with
assertions, are tests/test_integrity.py; this prints the numbers for a note.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import hostile  # noqa: E402
import test_integrity as ti  # noqa: E402


class _Factory:
    """Enough of pytest's tmp_path_factory for tests/test_integrity.trained."""

    def __init__(self, root: Path):
        self.root, self.n = root, 0

    def mktemp(self, name: str) -> Path:
        self.n += 1
        p = self.root / f"{name}{self.n}"
        p.mkdir()
        return p


def cell(r, metric: str) -> str:
    """The fitness a scored variant got, or how its scoring ended."""
    if r.ok:
        return f"{r.metrics[metric]:.4f}"
    return f"{r.status}: {r.reason[:90]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default=",".join(sorted(hostile.STEALER)))
    p.add_argument("--sandboxes", default="local,docker")
    a = p.parse_args()
    sandboxes = [s for s in a.sandboxes.split(",") if s]
    tmp = Path(tempfile.mkdtemp(prefix="integrity-table-"))
    factory = _Factory(tmp)
    print(f"| seed | attack | honest | in the judge's process | {' | '.join(sandboxes)} |")
    print("| --- | --- | --- | --- |" + " --- |" * len(sandboxes))
    for name in [s for s in a.seeds.split(",") if s]:
        t = ti.trained(name, factory)
        honest = f"{t.honest.metrics[t.seed.metric]:.4f}"
        file, code = hostile.STEALER[name]
        commit = t.variant("stealer", file, code)
        try:
            inproc = f"{ti.inprocess_fitness(t, commit, factory.mktemp('inproc')):.4f}"
        except AssertionError as e:
            inproc = f"no metrics: {str(e)[:60]}"
        row = [cell(t.score(commit, sb, f"stealer-{sb}"), t.seed.metric) for sb in sandboxes]
        print(f"| {name} | thief ({t.seed.metric}) | {honest} | {inproc} | {' | '.join(row)} |",
              flush=True)
    if "vsml" in a.seeds.split(","):
        t = ti.trained("vsml", factory)
        for attack, code in hostile.PROTOCOL.items():
            commit = t.variant(attack, "vsml.py", code)
            row = [cell(t.score(commit, sb, f"{attack}-{sb}", timeout=30 if attack == "hang" else None),
                        "online_acc") for sb in sandboxes]
            print(f"| vsml | {attack} | {t.honest.metrics['online_acc']:.4f} | — | {' | '.join(row)} |",
                  flush=True)


if __name__ == "__main__":
    main()
