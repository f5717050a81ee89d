"""`scientist serve` without a browser: the pages, the token, traversal attempts, secrets,
the approval queue's files, and `--approve web` driving a real run.

The browser end to end (Chromium) is tests/test_web_browser.py.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest

from conftest import TOY, cli_argv, cli_env
from scientist import approvals
from scientist.archive import Archive
from scientist.cli import _flock_held, in_use
from scientist.gate import APPROVE, REJECT
from scientist.variant import Proposal
from scientist.web.app import COOKIE, create_app

TOKEN = "test-token-" + "x" * 20
SECRET_ENV = "SCIENTIST_WEBTEST_TOKEN"
SECRET = "hunter2-web-secret"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished toy run (4 proposals) in a runs folder of its own; read-only for tests."""
    root = tmp_path_factory.mktemp("web")
    seed = root / "toyseed"
    shutil.copytree(TOY, seed, ignore=shutil.ignore_patterns("__pycache__"))
    runs = root / "runs"
    p = subprocess.run(cli_argv("run", "--seed", str(seed), "--scale", "test", "--iterations", "4",
                                "--runs-dir", str(runs), "--run-id", "demo", "--no-report"),
                       capture_output=True, text=True, env=cli_env(), cwd=root, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return runs


@pytest.fixture
def runs(finished, tmp_path) -> Path:
    """A private copy of the finished run's folder, to change."""
    dst = tmp_path / "runs"
    shutil.copytree(finished, dst, symlinks=True)
    return dst


@pytest.fixture
def client(runs, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    app = create_app(runs, TOKEN)
    app.testing = True
    return app.test_client()


def signed_in(client):
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 303
    return client


def eval_seed(run_dir: Path) -> str:
    return str(json.loads((run_dir / "secret.json").read_text())["eval_seed"])


def links(html: str, base: str) -> list[str]:
    return [urljoin(base, h) for h in re.findall(r'href="([^"]+)"', html)]


# --- pages -----------------------------------------------------------------------------------

def test_the_runs_page_lists_the_run_with_its_confirmed_best(client, runs):
    a = Archive(runs / "demo" / "archive.sqlite")
    try:
        n, base = len(a.all()), a.get(0)
    finally:
        a.close()
    html = client.get("/").get_data(as_text=True)
    assert 'href="/runs/demo"' in html and "toyseed" in html and "finished" in html
    assert f"{base.fitness:.4f}" in html  # the baseline's fitness
    frag = client.get("/fragment/runs").get_data(as_text=True)
    row = frag[frag.index('data-run="demo"'):]
    assert f'<td class="num">{n}</td>' in row


def test_the_run_page_draws_every_evaluated_variant_and_links_the_lineage(client, runs):
    a = Archive(runs / "demo" / "archive.sqlite")
    try:
        vs = a.all()
    finally:
        a.close()
    html = client.get("/runs/demo").get_data(as_text=True)
    assert html.count('class="pt"') == sum(v.fitness is not None or v.status == "failed" for v in vs)
    for v in vs:  # every variant is a node of the lineage tree, linked to its page
        assert f'<a href="/runs/demo/variants/{v.id}" class="node"' in html
        assert f'data-variant="{v.id}"' in html
    for part in ("summary", "charts", "variants", "events", "queue"):
        assert f'data-live="/runs/demo/fragment/{part}"' in html
        assert client.get(f"/runs/demo/fragment/{part}").status_code == 200
    assert "Confirmed best" in html or "confirmed" in html


def test_the_variant_page_shows_hypothesis_diff_seeds_and_claim(client, runs):
    a = Archive(runs / "demo" / "archive.sqlite")
    try:
        v = next(x for x in a.all() if x.diff and x.result is not None)
    finally:
        a.close()
    html = client.get(f"/runs/demo/variants/{v.id}").get_data(as_text=True)
    assert v.hypothesis.split()[0] in html
    assert 'class="diff"' in html and '<span class="gi">' in html  # highlighted added lines
    for s in v.result.seeds:
        assert f'<td class="num">{s.seed}</td>' in html
    assert f"integrity: {v.integrity}" in html and "claim:" in html
    assert client.get("/runs/demo/variants/999").status_code == 404


def test_logs_and_pages_never_show_a_secret(client, runs):
    """A log holding this environment's secret and the run's secret evaluation seed is shown
    redacted; no page reachable from the run page contains either."""
    run_dir = runs / "demo"
    seed = eval_seed(run_dir)
    log = run_dir / "variants" / "v0001" / "seed-0" / "train.out"
    log.write_text(f"token {SECRET} and eval seed {seed}\n")
    r = client.get("/runs/demo/variants/1/seeds/0/train.out")
    assert r.status_code == 200 and "[redacted]" in r.get_data(as_text=True)
    seen, todo = set(), ["/", "/runs/demo", "/approvals"]
    while todo:
        url = todo.pop()
        if url in seen or not url.startswith("http://localhost/") and not url.startswith("/"):
            continue
        seen.add(url)
        page = client.get(url)
        body = page.get_data(as_text=True)
        assert SECRET not in body and seed not in body, url
        if page.mimetype == "text/html":
            todo += [u.replace("http://localhost", "") for u in links(body, "http://localhost" + url)]
    assert len(seen) > 10


@pytest.mark.parametrize("url", [
    "/runs/../secret.json", "/runs/%2e%2e/secret.json", "/runs/demo/../../etc/passwd",
    "/runs/demo/variants/1/seeds/0/..%2f..%2f..%2fsecret.json",
    "/runs/demo/variants/1/seeds/0/secret.json", "/runs/demo/variants/1/seeds/0/metrics.json",
    "/runs/demo/report.json", "/runs/demo/report.sqlite", "/static/../../run.py",
    "/runs/.demo", "/runs/demo%00/", "/runs/demo/variants/-1",
])
def test_traversal_attempts_reach_nothing(client, runs, url):
    r = client.get(url)
    body = r.get_data(as_text=True)
    assert r.status_code in (404, 400, 308), (url, r.status_code)
    assert eval_seed(runs / "demo") not in body and "root:" not in body


def test_a_run_folder_that_is_a_symbolic_link_out_is_not_served(client, runs, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(runs / "demo", outside)
    (runs / "linked").symlink_to(outside)
    assert client.get("/runs/linked").status_code == 404
    assert "linked" not in client.get("/").get_data(as_text=True)


def test_a_log_that_is_a_symbolic_link_is_not_followed(client, runs):
    log = runs / "demo" / "variants" / "v0001" / "seed-0" / "train.err"
    log.unlink(missing_ok=True)
    log.symlink_to(runs / "demo" / "secret.json")
    assert client.get("/runs/demo/variants/1/seeds/0/train.err").status_code == 404


def test_a_foreign_host_is_refused(client):
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "127.0.0.1:8765"}).status_code == 200


def test_pages_forbid_inline_scripts_and_framing(client):
    r = client.get("/runs/demo")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["X-Frame-Options"] == "DENY" and "<script>" not in r.get_data(as_text=True)


# --- the token and the queue ---------------------------------------------------------------

def post_request(runs: Path, vid: int = 7, hypothesis: str = "raise the learning rate") -> approvals.Request:
    p = Proposal(hypothesis, "it is too small", "neg_mse goes up", (), "offline", 0.1)
    return approvals.post(runs / "demo", vid, p, "--- a/train.py\n+++ b/train.py\n@@\n-lr = 1\n+lr = 2\n",
                          f"iteration {vid}, parent v0000", "v0000")


def test_the_printed_address_sets_an_httponly_strict_cookie(client):
    r = client.get(f"/runs/demo?token={TOKEN}")
    assert r.status_code == 303 and r.headers["Location"].endswith("/runs/demo")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/?token=wrong").status_code == 403


def test_the_queue_shows_forms_only_with_the_token(client, runs):
    req = post_request(runs)
    html = client.get("/runs/demo/approvals").get_data(as_text=True)
    assert req.hypothesis in html and "Approve v0007" not in html and "Read-only" in html
    html = signed_in(client).get("/runs/demo/approvals").get_data(as_text=True)
    assert "Approve v0007" in html and f'value="{req.digest}"' in html
    assert client.get("/approvals").get_data(as_text=True).count('class="proposal"') == 1


@pytest.mark.parametrize("how", ["none", "cookie-only", "wrong", "other-origin"])
def test_a_decision_without_the_token_changes_nothing(client, runs, how):
    req = post_request(runs)
    form = {"digest": req.digest, "action": "approve"}
    headers = {}
    if how != "none":
        signed_in(client)  # the cookie alone is not enough: a cross-site form would send it too
    if how == "wrong":
        form["token"] = "not-" + TOKEN
    if how == "other-origin":
        form["token"] = TOKEN
        headers["Origin"] = "http://evil.example"
    r = client.post("/runs/demo/approvals/7", data=form, headers=headers)
    assert r.status_code == 403
    assert not (runs / "demo" / "approvals" / "v0007.decision.json").exists()
    assert [q.variant_id for q in approvals.requests(runs / "demo")] == [7]


def test_approve_and_reject_through_the_app(client, runs):
    a, b = post_request(runs, 7), post_request(runs, 8, "drop the bias")
    r = client.post("/runs/demo/approvals/7", data={"token": TOKEN, "digest": a.digest,
                                                    "action": "approve"})
    assert r.status_code == 303 and "approved" in r.headers["Location"]
    r = client.post("/runs/demo/approvals/8", data={"token": TOKEN, "digest": b.digest,
                                                    "action": "reject", "reason": "no, keep the bias"},
                    headers={"Origin": "http://localhost"})
    assert r.status_code == 303 and "rejected+v0008" in r.headers["Location"]
    assert approvals.take(runs / "demo", a).action == APPROVE
    d = approvals.take(runs / "demo", b)
    assert d.action == REJECT and d.reason.startswith("no, keep the bias")
    assert approvals.requests(runs / "demo") == []


def test_a_second_decision_is_refused(client, runs):
    req = post_request(runs)
    form = {"token": TOKEN, "digest": req.digest, "action": "approve"}
    assert client.post("/runs/demo/approvals/7", data=form).status_code == 303
    r = client.post("/runs/demo/approvals/7", data={**form, "action": "reject", "reason": "late"})
    assert r.status_code == 409
    assert approvals.take(runs / "demo", req).action == APPROVE


def test_bad_decisions_are_refused_with_a_reason(client, runs):
    req = post_request(runs)
    for form, code in (({"action": "maybe"}, 400), ({"action": "approve", "digest": "0" * 64}, 409),
                       ({"action": "reject", "reason": "x" * 5000}, 400)):
        r = client.post("/runs/demo/approvals/7", data={"token": TOKEN, "digest": req.digest, **form})
        assert r.status_code == code, form
    assert client.post("/runs/nope/approvals/7", data={"token": TOKEN}).status_code == 404
    assert approvals.requests(runs / "demo") == [req]


# --- the queue's files ---------------------------------------------------------------------

def test_a_decision_answers_only_the_proposal_it_was_made_for(runs):
    run_dir = runs / "demo"
    first = post_request(runs, 7, "first idea")
    approvals.decide(run_dir, 7, first.digest, REJECT, "no")
    # the run stopped; the resumed run makes a different proposal for iteration 7
    approvals.clear(run_dir)
    second = post_request(runs, 7, "second idea")
    assert approvals.take(run_dir, second) is None  # the old decision was for another proposal
    assert [r.digest for r in approvals.requests(run_dir)] == [second.digest]
    approvals.decide(run_dir, 7, second.digest, APPROVE)
    assert approvals.take(run_dir, second).action == APPROVE


def test_a_decision_made_while_the_run_was_stopped_is_taken_on_resume(runs):
    run_dir = runs / "demo"
    req = post_request(runs)
    approvals.decide(run_dir, 7, req.digest, REJECT, "not this one")
    approvals.clear(run_dir)  # the run restarts; its proposal for 7 is made again, the same
    again = post_request(runs)
    assert again.digest == req.digest
    assert approvals.take(run_dir, again).reason.startswith("not this one")


def test_two_deciders_at_once_one_wins(runs):
    run_dir = runs / "demo"
    req = post_request(runs)
    outcomes: list[str] = []

    def decide(action: str) -> None:
        try:
            approvals.decide(run_dir, 7, req.digest, action, "r")
            outcomes.append(action)
        except approvals.AlreadyDecided:
            outcomes.append("refused")

    threads = [threading.Thread(target=decide, args=(a,)) for a in (APPROVE, REJECT) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if o != "refused"]
    assert len(won) == 1 and approvals.take(run_dir, req).action == won[0]


def test_requests_are_redacted_when_posted(runs, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    req = post_request(runs, 9, f"use the key {SECRET}")
    assert SECRET not in (runs / "demo" / "approvals" / "v0009.request.json").read_text()
    assert "[redacted]" in req.hypothesis


# --- the run's lock, read without taking it -----------------------------------------------

def test_whether_a_run_is_in_use_is_read_without_taking_its_lock(runs):
    run_dir = runs / "demo"
    lock = run_dir / ".lock"
    lock.touch()
    assert _flock_held(lock) is False and not in_use(run_dir)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _flock_held(lock) is True and in_use(run_dir)
    assert _flock_held(lock) is False


# --- --approve web drives a real run -------------------------------------------------------

def wait_for(cond, proc, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert proc.poll() is None, "the run ended early: " + (proc.stdout.read() if proc.stdout else "")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_run_with_approve_web_does_what_was_decided(toy, runs_dir):
    """The run waits for decisions in the queue (no terminal input at all); an approved
    proposal runs, a rejected one is recorded with its reason, and the run ends."""
    toy.set_scale(training_seeds=1)
    proc = subprocess.Popen(cli_argv("run", "--seed", str(toy.path), "--scale", "test",
                                     "--iterations", "2", "--runs-dir", str(runs_dir), "--run-id", "w",
                                     "--no-report", "--approve", "web"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=cli_env(), cwd=toy.path.parent)
    run_dir = runs_dir / "w"
    try:
        first = wait_for(lambda: approvals.request(run_dir, 1), proc)
        time.sleep(1.0)  # it waits: nothing runs until a decision
        assert approvals.request(run_dir, 1) is not None
        approvals.decide(run_dir, 1, first.digest, APPROVE, by="test")
        second = wait_for(lambda: approvals.request(run_dir, 2), proc)
        approvals.decide(run_dir, 2, second.digest, REJECT, "keep the step size", by="test")
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "scientist serve --runs" in out  # the banner says where to decide
    a = Archive(run_dir / "archive.sqlite")
    try:
        assert a.get(1).status == "done" and a.get(1).fitness is not None
        assert a.get(2).status == "rejected" and a.get(2).error.startswith("keep the step size")
        assert any(e["kind"] == "approved" and "from test" in e["text"] for e in a.events(1))
    finally:
        a.close()
    assert not list((run_dir / "approvals").glob("*.json"))  # both taken


def test_serve_refuses_a_missing_runs_folder(tmp_path):
    p = subprocess.run(cli_argv("serve", "--runs-dir", str(tmp_path / "none")), capture_output=True,
                       text=True, env=cli_env(), timeout=120)
    assert p.returncode != 0 and "no runs folder" in p.stderr + p.stdout and "Traceback" not in p.stderr


def test_serve_prints_its_address_with_the_token_and_answers(finished, tmp_path):
    env = {**cli_env(), "SCIENTIST_SERVE_TOKEN": TOKEN}
    proc = subprocess.Popen(cli_argv("serve", "--runs-dir", str(finished), "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any("?token=" in ln for ln in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        url = next(ln for ln in lines if "?token=" in ln).split("open ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(f"?token={TOKEN}")
        import urllib.request

        with urllib.request.urlopen(url.split("?")[0] + "runs/demo", timeout=30) as r:
            assert r.status == 200 and b"demo" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_decision_for_an_older_proposal_that_lands_late_is_not_taken(runs):
    """The race decide() cannot close: it checked the old request, then the run posted a new
    proposal for the same iteration, then the old decision landed. The run must not take it."""
    run_dir = runs / "demo"
    old = post_request(runs, 7, "first idea")
    new = post_request(runs, 7, "second idea")
    stale = {"variant_id": 7, "digest": old.digest, "action": APPROVE, "reason": "", "by": "", "at": 0}
    (run_dir / "approvals" / "v0007.decision.json").write_text(json.dumps(stale))
    assert approvals.take(run_dir, new) is None
    assert [r.digest for r in approvals.requests(run_dir)] == [new.digest]


def test_an_unchanged_fragment_is_answered_304_and_a_change_is_not(client, runs):
    first = client.get("/runs/demo/fragment/queue")
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag
    again = client.get("/runs/demo/fragment/queue", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.get_data() == b""
    post_request(runs)  # a proposal starts waiting: the queue fragment must be drawn again
    changed = client.get("/runs/demo/fragment/queue", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and "v0007" in changed.get_data(as_text=True)
    runs_tag = client.get("/fragment/runs").headers["ETag"]
    assert client.get("/fragment/runs", headers={"If-None-Match": runs_tag}).status_code == 304
    with open(runs / "demo" / ".lock", "w") as f:  # the run's process is alive again
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert client.get("/fragment/runs", headers={"If-None-Match": runs_tag}).status_code == 200
