"""How often the loop claims an improvement that is not there, and finds one that is.

Runs the real loop (offline proposer, FME selection, promotion, sealed test) on the noisy
seed of the tests (tests/fixtures/noisyseed: between-seed sd 1, part shared by all variants
at a training seed, part drawn for every evaluation), each run with its own rng seed and
secret evaluation seed:

- null: only `knob` may change, and it does nothing. A run that promotes anything has made
  a false discovery; the share of such runs is the run's family-wise error rate (α = 0.05).
  Beside it: how often the highest raw mean is not the baseline (what "best" meant before).
- power: only `boost` may change (+3 between-seed sd). The share of runs whose confirmed best
  has it on.
- mixed: both knobs; the share of runs whose confirmed best has boost on, and of runs that
  promoted a variant without it.

    python bench/claims.py                          # 100 null, 50 power, 50 mixed runs
    python bench/claims.py --null 400 --power 200 --mixed 0
    python bench/claims.py --sandbox local --null 20 --power 10 --mixed 0   # real subprocesses

The in-process sandbox (tests/inline.py) changes nothing but speed. Prints numbers with
95% Clopper-Pearson intervals; asserts nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's scientist, and the test sandbox

from inline import InlineSandbox  # noqa: E402

from scientist.config import RunConfig  # noqa: E402
from scientist.promotion import PROMOTED, Design  # noqa: E402
from scientist.run import Run  # noqa: E402

SCREEN: float | None = None
NOISY = ROOT / "tests" / "fixtures" / "noisyseed"
KNOB = '[[mutable]]\nfile = "train.py"\nname = "knob"\ntype = "float"\nlow = 0.0\nhigh = 10.0\n'
BOOST = '[[mutable]]\nfile = "train.py"\nname = "boost"\ntype = "bool"\n'


def seed_with(folder: Path, knobs: str) -> Path:
    dst = folder / "seed"
    shutil.copytree(NOISY, dst)
    manifest = dst / "seed.toml"
    text = manifest.read_text()
    manifest.write_text(text[: text.index("[[mutable]]")] + knobs)
    return dst


def one_run(seed: Path, runs: Path, i: int, offset: int, iterations: int, sandbox: str) -> dict:
    cfg = RunConfig(seed=str(seed), scale="test", runs_dir=str(runs), run_id=f"r{i}",
                    report=False, iterations=iterations, rng_seed=offset + i,
                    workers=1 if sandbox == "inline" else None)  # see tests/inline.py
    run = Run.create(cfg, Console(file=io.StringIO()))
    (run.dir / "secret.json").write_text(json.dumps({"eval_seed": 10_000 * offset + i}))
    if sandbox == "inline":
        run.sandbox = InlineSandbox()
    if SCREEN is not None:
        run.archive.set_meta("promotion", {**asdict(Design(batch=2, sealed_seeds=4)), "screen": SCREEN})
    start = time.monotonic()
    run.execute()
    p = run.promotion
    tried = p.comparisons()
    best = p.best()
    boosted = "boost: bool = True" in run.workspace.read(best.commit, ["train.py"])["train.py"]
    promoted = [c for c in tried if c.decision == PROMOTED]
    false = [c for c in promoted if "boost: bool = True" not in
             run.workspace.read(run.archive.get(c.challenger_id).commit, ["train.py"])["train.py"]]
    out = {
        "promoted": bool(promoted), "false": bool(false), "boost_best": boosted and best.id != 0,
        "raw_not_baseline": run.archive.best(1)[0].id != 0,
        "attempts": len(tried), "untested": sum(e["kind"] == "untested" for e in run.archive.events()),
        "explore": sum(len(v.result.seeds) for v in run.archive.all() if v.result),
        "confirm": sum(c.evaluations for c in tried),
        "sealed": sum(c.evaluations for c in p.comparisons("sealed")),
        "pairs": [len(c.seeds) for c in tried],
        "seconds": time.monotonic() - start,
    }
    run.close()
    shutil.rmtree(run.dir)
    return out


def rate(k: int, n: int) -> str:
    if n == 0:
        return "—"
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k}/{n} = {k / n:.3f} (95% CI {ci.low:.3f}–{ci.high:.3f})"


def experiment(name: str, knobs: str, n: int, offset: int, args: argparse.Namespace) -> list[dict]:
    if n == 0:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        seed = seed_with(Path(tmp), knobs)
        results = []
        for i in range(n):
            results.append(one_run(seed, Path(tmp) / "runs", i, offset, args.iterations, args.sandbox))
            if (i + 1) % 10 == 0:
                print(f"  {name}: {i + 1}/{n} runs", file=sys.stderr, flush=True)
    return results


def cost(results: list[dict]) -> str:
    pairs = [p for r in results for p in r["pairs"]]
    return (f"per run: {statistics.fmean(r['explore'] for r in results):.1f} training runs to "
            f"explore (baseline's noise seeds included), "
            f"{statistics.fmean(r['confirm'] for r in results):.1f} to confirm "
            f"({statistics.fmean(r['attempts'] for r in results):.2f} attempts, "
            f"{statistics.fmean(pairs) if pairs else 0:.1f} paired seeds each on average), "
            f"{statistics.fmean(r['sealed'] for r in results):.1f} for the sealed test; "
            f"{statistics.fmean(r['seconds'] for r in results):.1f} s of wall time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--null", type=int, default=100, help="runs where nothing helps")
    ap.add_argument("--power", type=int, default=50, help="runs where boost (+3 sd) is the only knob")
    ap.add_argument("--mixed", type=int, default=50, help="runs with both knobs")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--sandbox", choices=["inline", "local"], default="inline")
    ap.add_argument("--screen", type=float, default=None,
                    help="confirm a raw lead only beyond this many noise-floor s.e. (default: the design's)")
    args = ap.parse_args()
    global SCREEN
    SCREEN = args.screen
    print(f"noisy seed, {args.iterations} offline-proposer iterations per run, alpha = 0.05, "
          f"{args.sandbox} sandbox")
    null = experiment("null", KNOB, args.null, 1, args)
    if null:
        print(f"null (no effect):  runs that promoted anything: "
              f"{rate(sum(r['promoted'] for r in null), len(null))}")
        print(f"                   runs whose highest raw mean is not the baseline: "
              f"{rate(sum(r['raw_not_baseline'] for r in null), len(null))}")
        print(f"                   {cost(null)}")
    power = experiment("power", BOOST, args.power, 2, args)
    if power:
        print(f"power (+3 sd):     runs whose confirmed best has boost: "
              f"{rate(sum(r['boost_best'] for r in power), len(power))}")
        print(f"                   {cost(power)}")
    mixed = experiment("mixed", KNOB + "\n" + BOOST, args.mixed, 3, args)
    if mixed:
        print(f"mixed (both):      runs whose confirmed best has boost: "
              f"{rate(sum(r['boost_best'] for r in mixed), len(mixed))}")
        print(f"                   runs that promoted a variant without boost: "
              f"{rate(sum(r['false'] for r in mixed), len(mixed))}")
        print(f"                   {cost(mixed)}")


if __name__ == "__main__":
    main()
