"""`scientist serve` end to end in a real headless Chromium: a live `--approve web` run is
watched, a new variant appears without a reload, one proposal is approved and another
rejected with a reason from the page, and the run does what was decided.

Needs Debian's chromium and chromium-driver and selenium; without them the test skips,
except under SCIENTIST_REQUIRE_BROWSER=1 (CI installs them) where it fails.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import browser
from conftest import cli_argv, cli_env
from scientist.archive import Archive

TOKEN = "browser-token-" + "y" * 16


@pytest.fixture
def chromium():
    why = browser.missing()
    if why:
        if os.environ.get("SCIENTIST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SCIENTIST_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    d = browser.driver()
    try:
        yield d
    finally:
        d.quit()


def until(cond, proc=None, timeout: float = 180, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except Exception:  # an element replaced by a live update while it was read
            got = None
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended while waiting for {what}: {proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_watch_a_live_run_approve_one_proposal_and_reject_another(chromium, toy, runs_dir):
    from selenium.webdriver.common.by import By

    # the baseline's seeds take a few seconds: the page is open before v0001 exists
    toy.set_scale(training_seeds=1).add_to_train("time.sleep(3 if 'v0000' in a.out else 0)")
    proc = subprocess.Popen(cli_argv("run", "--seed", str(toy.path), "--scale", "test",
                                     "--iterations", "2", "--runs-dir", str(runs_dir), "--run-id",
                                     "live", "--no-report", "--approve", "web"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=toy.path.parent)
    b = chromium
    try:
        until(lambda: (runs_dir / "live" / "archive.sqlite").exists(), proc, what="the run folder")
        with browser.served(runs_dir, TOKEN) as base:
            b.get(f"{base}/?token={TOKEN}")  # the address `scientist serve` prints
            assert "token" not in b.current_url  # kept in a cookie, gone from the address bar
            row = until(lambda: b.find_element(By.CSS_SELECTOR, 'tr[data-run="live"] a'), proc,
                        what="the run in the runs table")
            row.click()
            assert b.current_url.endswith("/runs/live")
            ids = lambda: {e.get_attribute("data-variant") for e in  # noqa: E731
                           b.find_elements(By.CSS_SELECTOR, "#variant-table tr[data-variant]")}
            assert "1" not in ids()
            # v0001 is selected and waits for a decision: it appears on the open page by itself
            until(lambda: "1" in ids(), proc, what="v0001 to appear on the run page")
            note = until(lambda: b.find_element(By.CSS_SELECTOR, "#queue .queue-note"), proc,
                         what="the queue note")
            assert "v0001" in note.text
            note.find_element(By.LINK_TEXT, "open the queue").click()
            until(lambda: b.find_element(By.ID, "v0001"), proc, what="v0001 in the queue")
            diff = b.find_element(By.CSS_SELECTOR, "#v0001 .diffbox")
            assert diff.text.strip(), "the proposal's diff is shown"
            b.find_element(By.CSS_SELECTOR, "#v0001 button.approve").click()
            until(lambda: "approved v0001" in b.find_element(By.CSS_SELECTOR, ".flash").text, proc,
                  what="the approval's confirmation")
            # v0002 arrives in the open queue without a reload
            art = until(lambda: b.find_element(By.ID, "v0002"), proc, what="v0002 in the queue")
            art.find_element(By.NAME, "reason").send_keys("the step size is fine as it is")
            art.find_element(By.CSS_SELECTOR, "button.reject").click()
            until(lambda: "rejected v0002" in b.find_element(By.CSS_SELECTOR, ".flash").text,
                  what="the rejection's confirmation")  # (the run may end meanwhile)
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
            # the run page shows what happened
            b.get(f"{base}/runs/live")
            until(lambda: "rejected" in b.find_element(
                By.CSS_SELECTOR, '#variant-table tr[data-variant="2"]').text, what="v0002 rejected")
            b.find_element(By.CSS_SELECTOR, 'svg.lineage a[data-variant="1"]').click()
            assert b.current_url.endswith("/runs/live/variants/1")
            assert "Hypothesis" in b.find_element(By.TAG_NAME, "main").text
    finally:
        proc.kill()
    a = Archive(runs_dir / "live" / "archive.sqlite")
    try:
        v1, v2 = a.get(1), a.get(2)
        assert v1.status == "done" and v1.fitness is not None  # approved: it ran
        assert v2.status == "rejected" and v2.error.startswith("the step size is fine as it is")
        assert v2.commit is None or v2.commit == ""  # rejected: never committed, never run
    finally:
        a.close()
