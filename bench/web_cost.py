"""What `scientist serve` costs the machine that trains: page latency and the server's CPU
while a run page stays open in a browser (it fetches five fragments every 2 s).

    python bench/web_cost.py [--runs-dir DIR --run NAME] [--seconds 60]

Without --runs-dir it makes a finished toy run (tests/fixtures/toyseed, 8 proposals) to
serve. Prints the median and 90th percentile of 20 requests per page, then the server's
CPU seconds per minute with one run page open in headless Chromium (needs Debian's
chromium and chromium-driver and selenium; skipped with the reason otherwise).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TOKEN = "bench-" + "t" * 24


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--run")
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    tmp = None
    if a.runs_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="scientist-webcost-"))
        seed = tmp / "toyseed"
        shutil.copytree(ROOT / "tests" / "fixtures" / "toyseed", seed)
        a.runs_dir, a.run = tmp / "runs", "toy"
        subprocess.run([sys.executable, "-m", "scientist.cli", "run", "--seed", str(seed), "--scale",
                        "test", "--iterations", "8", "--runs-dir", str(a.runs_dir), "--run-id", "toy",
                        "--no-report"], check=True, capture_output=True, timeout=1200)
    run = a.run or sorted(p.parent.name for p in a.runs_dir.glob("*/archive.sqlite"))[0]
    env = {**os.environ, "SCIENTIST_SERVE_TOKEN": TOKEN}
    server = subprocess.Popen([sys.executable, "-m", "scientist.cli", "serve", "--runs-dir",
                               str(a.runs_dir), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = ""
        while "?token=" not in line:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                raise SystemExit("the server did not start")
        base = line.split("open ", 1)[1].strip().split("?")[0].rstrip("/")
        print(f"serving {a.runs_dir} at {base}; run {run}")
        print(f"{'page':<40} {'median ms':>10} {'p90 ms':>8} {'KiB':>6}")
        for path in ("/", f"/runs/{run}", f"/runs/{run}/variants/1", f"/runs/{run}/fragment/charts",
                     f"/runs/{run}/fragment/variants", "/approvals"):
            times, size = [], 0
            for _ in range(20):
                t = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=60) as r:
                    size = len(r.read())
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            print(f"{path:<40} {statistics.median(times):>10.1f} {times[17]:>8.1f} {size / 1024:>6.1f}")
        import browser

        why = browser.missing()
        if why:
            print(f"CPU with an open page: not measured ({why})")
            return 0
        b = browser.driver()
        try:
            b.get(f"{base}/runs/{run}")
            time.sleep(3)
            c0, t0 = cpu_seconds(server.pid), time.monotonic()
            time.sleep(a.seconds)
            c1, t1 = cpu_seconds(server.pid), time.monotonic()
        finally:
            b.quit()
        print(f"server CPU with one run page open: {c1 - c0:.2f} s over {t1 - t0:.0f} s "
              f"({(c1 - c0) / (t1 - t0) * 100:.1f}% of a core)")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
