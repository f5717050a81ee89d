"""The LLM scientist against local servers that speak the OpenAI and Anthropic protocols.

Nothing here mocks Python: litellm and the provider SDKs send real HTTP requests to
tests/llm_server.py, which answers from a script or from a small "brain" that reads the
prompt and proposes a real improvement to the toy seed (a larger step size).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from llm_server import FakeLLM, Garbage, Reply, Request, Status, block, reply
from conftest import make_console
from scientist.run import Run
from scientist.variant import DONE, FAILED, INVALID

SECRET = "sk-test-VERY-SECRET-4242"
LR_LINE = re.compile(r"^    lr: float = ([0-9.e+-]+)(.*)$", re.M)
MODE_LINE = re.compile(r"^    mode: str = .*$", re.M)


def toy_brain(req: Request) -> str:
    """Raise the toy seed's step size (a real improvement); repair a crash by undoing it."""
    prompt = req.first_user
    if "A failed experiment to repair" in prompt:
        line = MODE_LINE.search(prompt)[0]
        return reply("Switch the crash off again", block("train.py", line, line.replace('"crash"', '"normal"')),
                     prediction="+0.0")
    m = LR_LINE.search(prompt)
    lr = float(m[1])
    new = m[0].replace(m[1], repr(round(lr * 3, 6)))
    return reply(f"Raise the step size from {lr} to {lr * 3:.4g}: 20 small steps stop short of the optimum.",
                 block("train.py", m[0], new), prediction="+1.5")


def good_reply() -> str:
    return reply("Raise lr", block("train.py", "    lr: float = 0.01  # step size", "    lr: float = 0.03  # step size"))


@pytest.fixture
def llm():
    with FakeLLM(brain=toy_brain) as server:
        yield server


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    """Provider keys as a user would have them; the tests check they go nowhere else."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET + "-ant")
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE",
                "SCIENTIST_MODEL", "SCIENTIST_API_BASE", "SCIENTIST_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def llm_run(make_run, toy, server: FakeLLM, protocol: str = "openai", **settings):
    """A run with the LLM proposer on the toy seed. `ahead=0` (unless asked otherwise): the
    sequential loop, each proposal made after every earlier result is in, so the prompts
    these tests read are fixed (tests/test_scheduler.py makes them ahead)."""
    toy.set_scale(training_seeds=1)
    base = server.openai_base if protocol == "openai" else server.anthropic_base
    model = "openai/gpt-4o-mini" if protocol == "openai" else "anthropic/claude-haiku-4-5"
    return make_run(toy, **{"model": model, "api_base": base, "llm_backoff": 0.01, "ahead": 0,
                            **settings})


def files_of(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file()]


def assert_secret_nowhere(run_dir: Path, *secrets: str) -> None:
    for p in files_of(run_dir):
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"secret found in {p}"


# --- a whole run ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_an_llm_run_improves_the_seed(protocol, toy, make_run, llm):
    run, out = llm_run(make_run, toy, llm, protocol, iterations=3)
    assert run.execute() == 0
    vs = run.archive.all()
    assert [v.status for v in vs] == [DONE] * 4
    assert vs[-1].fitness > vs[0].fitness  # each proposal raised lr: a real improvement
    assert all(v.predicted == 1.5 for v in vs[1:])
    assert vs[1].hypothesis.startswith("Raise the step size from 0.01")
    # the requests went over the protocol asked for, with the provider's key
    assert {r.protocol for r in llm.requests} == {protocol}
    r0 = llm.requests[0]
    auth = r0.headers.get("authorization", "") + r0.headers.get("x-api-key", "")
    assert SECRET in auth
    # what the model saw: the goal, the files (protected ones marked), the format
    system, prompt = r0.messages[0]["content"], r0.first_user
    assert "SEARCH" in system and "## Prediction" in system
    assert "Lower the test error." in prompt and "Protected files" in prompt and "evaluate.py" in prompt
    assert "lr: float = 0.01" in prompt
    # the notebook of a later iteration records the earlier hypotheses and outcomes
    later = llm.requests[2].first_user
    assert "Raise the step size from 0.01" in later and "measured neg_mse" in later
    # accounting: tokens and a price from litellm's table, per iteration and for the run
    total = run.archive.llm_usage()
    assert total.calls == 3 and total.tokens > 0 and total.cost > 0 and total.unpriced_calls == 0
    assert run.archive.llm_usage(1).calls == 1
    text = out.getvalue()
    for k in (1, 2, 3):  # each iteration's line: its own call, and the run's so far
        assert re.search(rf"\(LLM: 1 call, [0-9.]+k? tokens, \$[0-9.]+; run total {k} calls?, ", text), text
    transcript = [json.loads(x) for x in (run.dir / "llm" / "transcript.jsonl").read_text().splitlines()]
    assert len(transcript) == 3 and transcript[0]["request"]["messages"][1]["content"] == prompt
    assert (run.dir / "notebook.md").is_file()
    assert_secret_nowhere(run.dir, SECRET)


def test_provider_key_and_base_url_from_the_environment(toy, make_run, llm, monkeypatch):
    """The OpenAI path as a user with OPENAI_API_KEY has it: no --api-base, a bare model name."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm.openai_base)
    toy.set_scale(training_seeds=1)
    run, _ = make_run(toy, model="gpt-4o-mini", iterations=1, llm_backoff=0.01)
    assert run.execute() == 0
    assert run.archive.get(1).status == DONE
    assert llm.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_api_key_env_names_the_variable(toy, make_run, llm, monkeypatch):
    monkeypatch.setenv("LAB_LLM_KEY", "lab-key-123456")
    run, _ = llm_run(make_run, toy, llm, iterations=1, api_key_env="LAB_LLM_KEY")
    assert run.execute() == 0
    assert llm.requests[0].headers["authorization"] == "Bearer lab-key-123456"
    assert "lab-key-123456" not in (run.dir / "config.json").read_text()
    assert "LAB_LLM_KEY" in (run.dir / "config.json").read_text()


# --- replies that cannot be used ----------------------------------------------------------

TRAIN = "    lr: float = 0.01  # step size"
BAD_REPLIES = {
    "prose, no blocks": ("I would raise the learning rate, it should help a lot.", "missing the section"),
    "sections but no blocks": (reply("Raise lr", "I would edit train.py."), "no SEARCH/REPLACE blocks"),
    "protected file": (reply("Cheat", block("evaluate.py", "import json", "import json, os")), "protected"),
    "unknown file": (reply("New", block("model.py", "x = 1", "x = 2")), "not an editable file"),
    "empty search on an existing file": (reply("Empty", block("train.py", "", "# hi")), "already exists"),
    "search matches nothing": (reply("Nothing", block("train.py", "    lr: float = 0.5", "    lr: float = 1.0")),
                               "0.01  # step size"),
    "truncated": (Reply(reply("Cut", "train.py\n<<<<<<< SEARCH\n" + TRAIN + "\n=====")[:-3], truncated=True),
                  "cut off at the output limit"),
    "no prediction number": (reply("Raise", block("train.py", TRAIN, TRAIN.replace("0.01", "0.03")),
                                   prediction="it will be better"), "signed number"),
    "percent prediction": (reply("Raise", block("train.py", TRAIN, TRAIN.replace("0.01", "0.03")),
                                 prediction="+5%"), "not as a percentage"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_an_unusable_reply_goes_back_with_the_error(case, toy, make_run, llm):
    bad, expected = BAD_REPLIES[case]
    llm.queue(bad if isinstance(bad, Reply) else Reply(bad), Reply(good_reply()))
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    assert run.execute() == 0
    v = run.archive.get(1)
    assert v.status == DONE, v.error
    assert len(llm.requests) == 2
    correction = llm.requests[1].last_user
    assert expected in correction, correction
    assert "correction 1 of 3" in correction
    # the conversation went back with the bad reply in it
    assert llm.requests[1].messages[-2]["role"] == "assistant"
    assert run.archive.llm_usage(1).calls == 2


def test_a_block_matching_twice_names_the_count(toy, make_run, llm):
    toy.add_to_train("w = 0.0").add_to_train("w = 0.0")  # the same line twice
    twice = reply("Twice", block("train.py", "    w = 0.0", "    w = 1.0"))
    llm.queue(Reply(twice), Reply(good_reply()))
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    run.execute()
    assert "matches 2 times" in llm.requests[1].last_user


def test_a_reply_wrapped_in_extra_fences_is_accepted(toy, make_run, llm):
    wrapped = "Here is my answer:\n```markdown\n" + good_reply().replace(
        "train.py\n<<<", "```python train.py\n<<<").replace("REPLACE\n", "REPLACE\n```\n") + "```\n"
    llm.queue(Reply(wrapped))
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    assert run.execute() == 0
    assert run.archive.get(1).status == DONE and len(llm.requests) == 1


def test_which_blocks_were_fine_is_said(toy, make_run, llm):
    two = reply("Two", block("train.py", TRAIN, TRAIN.replace("0.01", "0.03"))
                + block("train.py", "    steps: int = 999", "    steps: int = 40"))
    llm.queue(Reply(two), Reply(good_reply()))
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    run.execute()
    msg = llm.requests[1].last_user
    assert "Block 2 (train.py) failed" in msg and "Block 1 (train.py) applied fine" in msg
    assert "steps: int = 20" in msg  # the closest real lines


def test_after_three_corrections_the_proposal_fails_and_the_loop_goes_on(toy, make_run, llm):
    llm.queue(*[Reply("no blocks at all")] * 4)  # then the brain answers well
    run, out = llm_run(make_run, toy, llm, iterations=2)
    assert run.execute() == 0
    v1, v2 = run.archive.get(1), run.archive.get(2)
    assert v1.status == INVALID and "after 4 attempt(s)" in v1.error
    assert v2.status == DONE
    assert run.archive.llm_usage(1).calls == 4
    assert "invalid proposal" in out.getvalue()


# --- faults of the provider ---------------------------------------------------------------


def test_rate_limits_server_errors_garbage_and_slowness_are_retried(toy, make_run, llm):
    llm.queue(Status(429, "slow down", retry_after=0), Status(500, "boom"), Garbage(),
              Reply("late", delay=3.0))
    run, out = llm_run(make_run, toy, llm, iterations=1, llm_timeout=1.0)
    assert run.execute() == 0
    assert run.archive.get(1).status == DONE
    errors = [e["error"] for e in run.archive.llm_errors(1)]
    assert len(errors) == 4, errors
    assert "429" in errors[0] and "500" in errors[1] and "imeout" in errors[3]
    assert "retry 1 of 5" in out.getvalue()
    assert run.archive.llm_usage().calls == 1  # failed attempts are not calls


def test_a_provider_that_keeps_failing_stops_the_run_and_resume_continues(toy, make_run, llm, runs_dir):
    llm.queue(*[Status(503, "overloaded")] * 3)
    run, out = llm_run(make_run, toy, llm, iterations=2, llm_retries=2)
    assert run.execute() == 1
    assert "kept failing (3 attempts)" in out.getvalue()
    assert "scientist resume r" in out.getvalue()
    assert run.archive.get_meta("status") == "failed"
    # the baseline, intact; iteration 1 selected, its proposal made again on resume
    assert [v.status for v in run.archive.all()] == [DONE, "pending"]
    run.close()
    console, out2 = make_console()
    again = Run.open(runs_dir / "r", console)
    try:
        assert again.execute() == 0
        assert [v.status for v in again.archive.all()] == [DONE] * 3
    finally:
        again.close()


def test_a_refused_request_stops_at_once_without_leaking_the_key(toy, make_run, llm):
    llm.queue(Status(401, f"Incorrect API key provided: {SECRET}"))
    run, out = llm_run(make_run, toy, llm, iterations=1)
    assert run.execute() == 1
    assert "refused the request" in out.getvalue()
    assert SECRET not in out.getvalue()
    assert len(llm.requests) == 1  # no retries of a refusal
    assert_secret_nowhere(run.dir, SECRET)


# --- budgets and resume --------------------------------------------------------------------


def test_token_budget_stops_cleanly_and_resume_goes_on_with_more(toy, make_run, llm, runs_dir):
    run, out = llm_run(make_run, toy, llm, iterations=3, max_tokens=10)
    assert run.execute() == 0
    text = out.getvalue()
    assert "LLM token budget reached" in text and "--max-tokens" in text
    assert run.archive.get_meta("status") == "stopped"
    assert run.archive.count() == 2  # the first call may overrun; no call starts after
    run.close()
    console, out2 = make_console()
    again = Run.open(runs_dir / "r", console, max_tokens=10**9)
    try:
        assert again.execute() == 0
        assert again.archive.count() == 4
    finally:
        again.close()


def test_cost_budget_with_a_price_for_a_local_model(toy, make_run, llm):
    run, out = llm_run(make_run, toy, llm, iterations=3, model="openai/my-local-model",
                       price_in=1000.0, price_out=1000.0, max_cost=0.01)
    assert run.execute() == 0
    assert "LLM cost budget reached" in out.getvalue()
    assert run.archive.llm_usage().cost >= 0.01


def test_a_local_model_without_a_price_counts_tokens(toy, make_run, llm):
    run, _ = llm_run(make_run, toy, llm, iterations=1, model="openai/my-local-model")
    assert run.execute() == 0
    u = run.archive.llm_usage()
    assert u.calls == 1 and u.cost == 0 and u.unpriced_calls == 1 and u.tokens > 0


def test_resume_replays_paid_replies_from_the_cache(toy, make_run, llm, runs_dir):
    # iteration 1 works; in iteration 2 the first reply is unusable and the correction call
    # fails for good, so the run stops in the middle of the conversation
    llm.queue(Reply(good_reply()), Reply("no blocks"), *[Status(500)] * 2)
    run, _ = llm_run(make_run, toy, llm, iterations=2, llm_retries=1)
    assert run.execute() == 1
    paid = len([r for r in llm.requests])
    first_of_2 = llm.requests[1].body
    run.close()
    console, _ = make_console()
    again = Run.open(runs_dir / "r", console)
    try:
        assert again.execute() == 0
        assert again.archive.get(2).status == DONE
        bodies = [json.dumps(r.body, sort_keys=True) for r in llm.requests[paid:]]
        # the unusable first reply of iteration 2 came from the cache: not asked again
        assert json.dumps(first_of_2, sort_keys=True) not in bodies
        assert again.archive.llm_usage(2).cached_calls == 1
    finally:
        again.close()


# --- repairs ---------------------------------------------------------------------------------


def test_a_crashing_variant_is_repaired(toy, make_run, llm):
    crash = reply("Try crash mode", block("train.py", '    mode: str = "normal"  # normal | crash | hang | hog | '
                                          'cheat | secret  (for tests)',
                                          '    mode: str = "crash"  # normal | crash | hang | hog | cheat | '
                                          'secret  (for tests)'))
    llm.queue(Reply(crash))
    run, _ = llm_run(make_run, toy, llm, iterations=2)
    assert run.execute() == 0
    v1, v2 = run.archive.get(1), run.archive.get(2)
    assert v1.status == FAILED
    assert v2.parent_id == 1 and v2.status == DONE and v2.hypothesis.startswith("Repair of v0001")
    prompt = llm.requests[1].first_user
    assert "toy seed crashed on purpose" in prompt  # the error tail
    assert "A failed experiment to repair: v0001" in prompt


MODE_NORMAL = '    mode: str = "normal"  # normal | crash | hang | hog | cheat | secret  (for tests)'
STEPS = "    steps: int = 20  # gradient steps"


def test_repairs_are_bounded(toy, make_run, llm):
    # v1 crashes; its repair v2 and v2's repair v3 crash too (each changes the step count
    # and keeps the crash): with max_repairs 2 the run gives up on that line and v4 is a new
    # proposal from a parent the selection policy picks (the baseline, the only candidate)
    crash = reply("Crash", block("train.py", MODE_NORMAL, MODE_NORMAL.replace('"normal"', '"crash"')))
    llm.queue(Reply(crash),
              Reply(reply("More steps", block("train.py", STEPS, STEPS.replace("20", "21")))),
              Reply(reply("Even more", block("train.py", STEPS.replace("20", "21"), STEPS.replace("20", "22")))))
    run, out = llm_run(make_run, toy, llm, iterations=4, max_repairs=2)
    assert run.execute() == 0
    v = run.archive.all()
    assert [x.status for x in v] == [DONE, FAILED, FAILED, FAILED, DONE]
    assert [x.parent_id for x in v] == [None, 0, 1, 2, 0]
    assert v[2].hypothesis == "Repair of v0001: More steps" and v[3].hypothesis == "Repair of v0002: Even more"
    assert v[4].hypothesis.startswith("Raise the step size")
    assert "(attempt 1 of 2)" in out.getvalue() and "(attempt 2 of 2)" in out.getvalue()
    prompts = [r.first_user for r in llm.requests]
    assert ["A failed experiment to repair" in p for p in prompts] == [False, True, True, False]


def test_no_repairs_when_they_are_switched_off(toy, make_run, llm):
    crash = reply("Crash", block("train.py", MODE_NORMAL, MODE_NORMAL.replace('"normal"', '"crash"')))
    llm.queue(Reply(crash))
    run, _ = llm_run(make_run, toy, llm, iterations=2, max_repairs=0)
    assert run.execute() == 0
    assert [(x.status, x.parent_id) for x in run.archive.all()] == [(DONE, None), (FAILED, 0), (DONE, 0)]
    assert not any("A failed experiment to repair" in r.first_user for r in llm.requests)


def test_a_failed_baseline_is_not_repaired(toy, make_run, llm):
    toy.set_mode("crash")
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    assert run.execute() == 1  # nothing to select a parent from, and no repair of the baseline
    assert run.archive.count() == 1
    assert llm.requests == []


def test_the_sandbox_never_sees_the_key(toy, make_run, llm):
    dump = reply("Print the environment", block(
        "train.py", "    args = Args()", "    args = Args()\n    print(sorted(os.environ.items()), file=sys.stderr)"))
    llm.queue(Reply(dump))
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    assert run.execute() == 0
    err = (run.dir / "variants" / "v0001" / "seed-0" / "train.err").read_text()
    assert "PATH" in err  # the environment was printed
    assert_secret_nowhere(run.dir, SECRET, SECRET + "-ant")


def test_the_report_shows_predictions_beside_outcomes_and_the_llm_bill(toy, make_run, llm):
    from test_report import require_tex

    from scientist.report import write_report

    require_tex()
    llm.queue(Reply(reply("Lower lr", block("train.py", TRAIN, TRAIN.replace("0.01", "0.001")),
                          prediction="+0.2")))
    run, _ = llm_run(make_run, toy, llm, iterations=3)
    assert run.execute() == 0
    rep = write_report(run.dir, compile_pdf=True)
    tex = rep.tex.read_text()
    assert "Predictions and outcomes" in tex
    assert "the direction was right for 2 of 3" in tex  # lowering lr hurt, against its prediction
    assert "gpt-4o-mini" in tex and "reply tokens" in tex
    assert rep.pdf is not None and rep.pdf.read_bytes()[:5] == b"%PDF-"
    assert_secret_nowhere(run.dir, SECRET)


# --- the command line --------------------------------------------------------------------------


def test_the_command_line_with_flags_env_and_config_file(toy, llm, runs_dir, scientist_cli, tmp_path,
                                                         monkeypatch):
    toy.set_scale(training_seeds=1)
    common = ("--seed", str(toy.path), "--scale", "test", "--iterations", "1", "--no-report",
              "--runs-dir", str(runs_dir))
    # flags
    p = scientist_cli("run", *common, "--run-id", "flags", "--model", "openai/gpt-4o-mini",
                      "--api-base", llm.openai_base)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"llm proposer (LLM openai/gpt-4o-mini at {llm.openai_base})" in p.stdout
    shown = scientist_cli("show", "flags", "--runs-dir", str(runs_dir)).stdout
    assert "LLM: 1 call" in shown and "predicted Δ" in shown and "+1.5000" in shown
    assert "LLM" in scientist_cli("runs", "--runs-dir", str(runs_dir)).stdout
    # the environment; a config file's model is overridden by it, and a flag by nothing
    cfg = tmp_path / "lab.toml"
    cfg.write_text('[run]\nmodel = "openai/from-the-file"\nmax_repairs = 1\n')
    monkeypatch.setenv("SCIENTIST_MODEL", "openai/gpt-4o-mini")
    monkeypatch.setenv("SCIENTIST_API_BASE", llm.openai_base)
    p = scientist_cli("run", *common, "--run-id", "env", "--config", str(cfg))
    assert p.returncode == 0, p.stdout + p.stderr
    saved = json.loads((runs_dir / "env" / "config.json").read_text())
    assert saved["model"] == "openai/gpt-4o-mini" and saved["max_repairs"] == 1
    assert saved["proposer"] == "llm" and SECRET not in json.dumps(saved)
    assert llm.requests[-1].body["model"] == "gpt-4o-mini"


def test_a_failing_provider_on_the_command_line_is_a_message_not_a_traceback(toy, llm, runs_dir,
                                                                              scientist_cli):
    toy.set_scale(training_seeds=1)
    llm.queue(*[Status(500, "down")] * 10)
    cfg = toy.path.parent / "fast.toml"
    cfg.write_text("llm_backoff = 0.01\nllm_retries = 1\n")
    p = scientist_cli("run", "--seed", str(toy.path), "--scale", "test", "--iterations", "1",
                      "--no-report", "--runs-dir", str(runs_dir), "--run-id", "r", "--config", str(cfg),
                      "--model", "openai/gpt-4o-mini", "--api-base", llm.openai_base)
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    assert "kept failing" in p.stdout and "scientist resume r" in p.stdout


def test_an_llm_proposer_without_a_model_is_a_usage_error(toy, runs_dir, scientist_cli):
    p = scientist_cli("run", "--seed", str(toy.path), "--scale", "test", "--proposer", "llm",
                      "--runs-dir", str(runs_dir))
    assert p.returncode == 2 and "needs a model" in p.stdout
    assert not any(runs_dir.iterdir())  # no run folder was left behind


def test_a_secret_a_step_prints_is_nowhere_it_could_be_read(toy, make_run, llm, monkeypatch, capsys):
    """A secret with quotes, a backslash, a newline and non-ASCII letters, printed by a
    variant as it is and JSON-escaped: it is in none of the archive, logs, notebook,
    transcript, cache, report, `scientist show`, or the prompts sent to the provider."""
    from scientist import cli
    from scientist.report import write_report

    core = "".join(random.Random(7).choice("ghijkmnopqrstuvwxyz") for _ in range(24))
    secret = f'pw-"q\\b\nñé-{core}'
    monkeypatch.setenv("LAB_DB_PASSWORD", secret)
    code = (f"    args = Args()\n    s = bytes.fromhex('{secret.encode().hex()}').decode()\n"
            "    print(s, file=sys.stderr); print(json.dumps(s), file=sys.stderr)\n"
            "    raise SystemExit('failed: ' + s)")
    llm.queue(Reply(reply("Print a secret", block("train.py", "    args = Args()", code))))
    run, _ = llm_run(make_run, toy, llm, iterations=2)  # v1 leaks and crashes; then its repair
    assert run.execute() == 0
    v1 = run.archive.get(1)
    assert v1.status == FAILED and "[redacted]" in v1.result.seeds[0].stderr_tail
    assert any("A failed experiment to repair: v0001" in r.first_user for r in llm.requests)
    assert any("[redacted]" in r.first_user for r in llm.requests)  # the tail went into the prompt
    write_report(run.dir, compile_pdf=False)
    assert cli.main(["show", str(run.dir), "1", "--logs"]) == 0
    assert cli.main(["show", str(run.dir)]) == 0
    shown = capsys.readouterr().out
    assert "[redacted]" in shown
    for text in [shown] + [json.dumps(r.body) for r in llm.requests]:
        assert core not in text
    assert (run.dir / "notebook.md").is_file() and (run.dir / "llm" / "transcript.jsonl").is_file()
    for p in files_of(run.dir):
        assert core.encode() not in p.read_bytes(), f"secret found in {p}"


def test_a_secret_in_a_reply_is_redacted_before_it_is_serialised(toy, make_run, llm, monkeypatch):
    """The transcript and the cache are JSON: a secret with a quote, a backslash or a
    newline is written escaped, so it must be redacted before, not after, serialising."""
    secret = 'pw-"q\\b\nz-' + "".join(random.Random(3).choice("ghijkmnopqrstuvwxyz") for _ in range(20))
    monkeypatch.setenv("LAB_DB_PASSWORD", secret)
    good = good_reply().replace("Raise lr", f"Raise lr (the database said {secret})")
    llm.queue(Reply(good))
    run, _ = llm_run(make_run, toy, llm, iterations=1)
    assert run.execute() == 0
    for p in (run.dir / "llm").rglob("*"):
        if p.is_file():
            data = p.read_text()
            assert secret[-20:] not in data, p
    assert "[redacted]" in (run.dir / "llm" / "transcript.jsonl").read_text()
