"""Screenshots of `scientist serve`'s main pages, taken in headless Chromium, to look at.

    python tests/web_screenshots.py --out shots/                     # a demo made here
    python tests/web_screenshots.py --out shots/ --runs-dir runs/ [--run NAME] [--variant N]

Without --runs-dir it makes a runs folder of its own: a finished run of the toy seed
(tests/fixtures/toyseed, 6 proposals) and a second one started with `--approve web`, left
waiting for its first decision, so that the queue has something in it (stopped at the end).
Writes runs.png, run.png, variant.png and queue.png (full page height) and prints their paths.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import browser  # noqa: E402

from scientist import approvals  # noqa: E402
from scientist.archive import Archive  # noqa: E402
from scientist.promotion import Promotion  # noqa: E402

TOKEN = "screenshots-" + "z" * 20


def scientist(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scientist.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def demo(root: Path) -> tuple[Path, subprocess.Popen]:
    seed = root / "toyseed"
    shutil.copytree(HERE / "fixtures" / "toyseed", seed, ignore=shutil.ignore_patterns("__pycache__"))
    runs = root / "runs"
    p = scientist("run", "--seed", str(seed), "--scale", "test", "--iterations", "6",
                  "--runs-dir", str(runs), "--run-id", "toy-demo", "--no-report")
    out, _ = p.communicate(timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"the demo run failed:\n{out}")
    live = scientist("run", "--seed", str(seed), "--scale", "test", "--iterations", "3",
                     "--runs-dir", str(runs), "--run-id", "toy-approve-web", "--no-report",
                     "--approve", "web", stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not approvals.requests(runs / "toy-approve-web"):
        if live.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the --approve web run did not ask: {live.stdout.read()}")
        time.sleep(0.2)
    return runs, live


def shoot(b, url: str, path: Path, width: int = 1400) -> None:
    b.get(url)
    time.sleep(0.6)
    height = b.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight, 600)")
    b.set_window_size(width, min(int(height) + 160, 6000))
    time.sleep(0.3)
    b.save_screenshot(str(path))
    print(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs-dir", type=Path, help="an existing runs folder (default: a demo made here)")
    ap.add_argument("--run", help="the run to show (default: the one with most variants)")
    ap.add_argument("--variant", type=int, help="the variant to show (default: the run's confirmed best)")
    a = ap.parse_args()
    why = browser.missing()
    if why:
        print(f"cannot take screenshots: {why}", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    tmp, live = None, None
    try:
        if a.runs_dir is None:
            tmp = Path(tempfile.mkdtemp(prefix="scientist-shots-"))
            runs, live = demo(tmp)
        else:
            runs = a.runs_dir
        names = sorted(p.parent.name for p in runs.glob("*/archive.sqlite"))
        if not names:
            print(f"no runs in {runs}", file=sys.stderr)
            return 1
        counts = {}
        for n in names:
            arch = Archive(runs / n / "archive.sqlite")
            try:
                counts[n] = (len(arch.all()), Promotion.of(arch).best())
            finally:
                arch.close()
        run = a.run or max(names, key=lambda n: counts[n][0])
        best = counts[run][1]
        vid = a.variant if a.variant is not None else (best.id if best is not None and best.id else 1)
        b = browser.driver()
        try:
            with browser.served(runs, TOKEN) as base:
                b.get(f"{base}/?token={TOKEN}")
                shoot(b, f"{base}/", a.out / "runs.png")
                shoot(b, f"{base}/runs/{run}", a.out / "run.png")
                shoot(b, f"{base}/runs/{run}/variants/{vid}", a.out / "variant.png")
                shoot(b, f"{base}/approvals", a.out / "queue.png")
        finally:
            b.quit()
    finally:
        if live is not None:
            live.terminate()
            live.wait(timeout=60)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
