"""Budgets: what stops a run (time, LLM money and tokens), how usage is counted, which
settings are allowed, and when a failed variant is repaired instead of a new one proposed.

Nothing here calls an LLM: a budget is checked before a call, so a run whose archive says
it has spent its budget stops without one, and a missing API key fails before a request.
"""

from __future__ import annotations

import pytest

from conftest import make_console
from scientist.config import RANGES, RunConfig, parse_duration
from scientist.console import Progress
from scientist.errors import BudgetExceeded, ScientistError
from scientist.llm import LLMClient, LLMSettings, Reply, Usage, short_count
from scientist.run import Stop
from scientist.variant import DONE, FAILED, RUNNING, Result, SeedResult

# --- LLM usage and its budget --------------------------------------------------------------


def reply(pt=100, ct=20, cost=0.01, cached=False, priced=True) -> Reply:
    return Reply("text", "stop", pt, ct, cost, cached=cached, priced=priced)


def test_usage_sums_paid_calls_and_counts_cached_ones():
    u = Usage()
    u.add(reply(100, 20, 0.01))
    u.add(reply(1000, 500, 0.5, cached=True))  # paid for before: counts as a call, costs nothing now
    u.add(reply(10, 5, 0.0, priced=False))
    assert (u.calls, u.cached_calls, u.prompt_tokens, u.completion_tokens, u.unpriced_calls) == (3, 1, 110, 25, 1)
    assert u.cost == pytest.approx(0.01) and u.tokens == 135
    assert reply(7, 3).tokens == 10
    v = Usage()
    for priced in (False, False, True):
        v.add(reply(priced=priced))
    assert v.unpriced_calls == 2


@pytest.mark.parametrize("usage, text", [
    (Usage(), "no LLM calls"),
    (Usage(1, 0, 100, 20, 0.00123), "1 call, 120 tokens, $0.0012"),
    (Usage(2, 1, 999, 1, 0.5), "2 calls, 1 from cache, 1.0k tokens, $0.5000"),
    (Usage(3, 0, 1_000_000, 500_000, 2.0, 1), "3 calls, 1.50M tokens, $2.0000 + unpriced"),
])
def test_usage_as_the_console_shows_it(usage, text):
    assert str(usage) == text


@pytest.mark.parametrize("n, text", [(0, "0"), (999, "999"), (1000, "1.0k"), (1049, "1.0k"), (1050, "1.1k"),
                                     (999_999, "1000.0k"), (1_000_000, "1.00M"), (12_345_678, "12.35M"),
                                     (2_995_001, "3.00M")])
def test_short_counts(n, text):
    assert short_count(n) == text


def client(tmp_path, spent: Usage, **settings) -> LLMClient:
    recorded: list = []
    return LLMClient(LLMSettings(model="openai/test-model", **settings), tmp_path, spent=lambda: spent,
                     record=recorded.append)


@pytest.mark.parametrize("settings, spent", [
    ({}, Usage(100, 0, 10**9, 10**9, 10**6)),  # no budget: anything goes
    ({"max_cost": 1.0}, Usage(1, 0, 10, 10, 0.9999)),
    ({"max_tokens": 1000}, Usage(1, 0, 900, 99, 5.0)),
    ({"max_cost": 1.0, "max_tokens": 1000}, Usage(1, 0, 500, 499, 0.5)),
])
def test_spending_below_the_budget_goes_on(tmp_path, settings, spent):
    client(tmp_path, spent, **settings).check_budget()


@pytest.mark.parametrize("settings, spent, message", [
    ({"max_cost": 1.0}, Usage(2, 0, 600, 400, 1.0),
     "LLM cost budget reached: $1.0000 spent of --max-cost $1 (2 calls, 1.0k tokens, $1.0000)"),
    ({"max_cost": 0.25}, Usage(1, 0, 10, 10, 3.0), "LLM cost budget reached: $3.0000 spent of --max-cost $0.25"),
    ({"max_tokens": 1000}, Usage(1, 0, 600, 400, 0.0),
     "LLM token budget reached: 1,000 tokens used of --max-tokens 1,000 (1 call, 1.0k tokens, $0.0000)"),
    ({"max_tokens": 0}, Usage(), "LLM token budget reached: 0 tokens used of --max-tokens 0"),
    ({"max_cost": 0.0}, Usage(), "LLM cost budget reached"),
])
def test_spending_up_to_the_budget_stops(tmp_path, settings, spent, message):
    with pytest.raises(BudgetExceeded) as e:
        client(tmp_path, spent, **settings).check_budget()
    assert str(e.value).startswith(message)


def test_a_cached_reply_is_given_past_the_budget_but_no_new_call_starts(tmp_path):
    c = client(tmp_path, Usage(5, 0, 10**6, 0, 9.0), max_cost=1.0)
    messages = [{"role": "user", "content": "propose"}]
    c._store(c.key(c.request(messages)), reply(100, 20, 0.5))  # paid for before the budget ran out
    got = c.chat(messages, iteration=1, purpose="propose")
    assert (got.text, got.cached, got.cost, got.prompt_tokens) == ("text", True, 0.0, 100)
    with pytest.raises(BudgetExceeded):
        c.chat([{"role": "user", "content": "something new"}], iteration=2, purpose="propose")


# --- the run's budgets ----------------------------------------------------------------------


def llm_run(make_run, toy, **settings):
    """A run with an LLM proposer whose provider is never reached (nothing listens there)."""
    toy.set_scale(training_seeds=1)
    return make_run(toy, model="openai/test-model", api_base="http://127.0.0.1:9/v1", llm_retries=0, **settings)


def spend(run, tokens: int, cost: float) -> None:
    run.archive.add_llm_call({"at": 0.0, "iteration": 0, "purpose": "propose", "key": "k", "model": "m",
                              "prompt_tokens": tokens, "completion_tokens": 0, "cost": cost})


@pytest.mark.parametrize("setting, flag", [({"max_tokens": 100}, "token"), ({"max_cost": 0.5}, "cost")])
def test_a_run_that_has_spent_its_llm_budget_stops_cleanly(toy, make_run, setting, flag):
    run, out = llm_run(make_run, toy, iterations=3, **setting)
    spend(run, 100, 0.5)
    assert run.execute() == 0  # a clean stop: the baseline is evaluated, no proposal is made
    text = out.getvalue()
    assert f"Stopped: LLM {flag} budget reached" in text
    assert "Raise it to go on: `scientist resume r --max-cost USD` (or --max-tokens N)" in text
    assert run.archive.count() == 1 and run.archive.get_meta("status") == "stopped"


def test_a_provider_that_fails_for_good_stops_the_run_as_failed(toy, make_run, monkeypatch):
    monkeypatch.delenv("LAB_KEY", raising=False)
    run, out = llm_run(make_run, toy, iterations=3, api_key_env="LAB_KEY")
    assert run.execute() == 1
    text = out.getvalue()
    assert "Stopped: the API key variable LAB_KEY (api_key_env) is not set" in text
    assert "The archive is intact; `scientist resume r` continues the run" in text
    # proposals started ahead (the scheduler's) stay pending, uncommitted, for resume to remake
    vs = run.archive.all()
    assert vs[0].status == "done" and run.archive.get_meta("status") == "failed"
    assert all(v.status == "pending" and not v.commit for v in vs[1:])


def test_a_run_makes_exactly_its_iterations(toy, make_run):
    toy.set_scale(training_seeds=1)
    for n in (0, 2):
        run, _ = make_run(toy, iterations=n, run_id=f"it{n}")
        assert run.execute() == 0
        assert [v.iteration for v in run.archive.all()] == list(range(n + 1))


def done(a, parent, seconds: tuple[float, float], status=DONE, iteration=0):
    v = a.new_variant(parent, iteration, status=RUNNING)
    ok = status == DONE
    seed = SeedResult(0, "ok" if ok else "crash", "" if ok else "exit status 1", train_seconds=seconds[0],
                      eval_seconds=seconds[1], metrics={"neg_mse": -1.0} if ok else {})
    a.record_result(v.id, Result([seed], "neg_mse"), status)
    return v


def budget_run(make_run, toy, budget, elapsed_before):
    run, _ = make_run(toy, iterations=5, time_budget=budget)
    run.progress = Progress(make_console()[0], 5, elapsed_before=elapsed_before)
    return run


def test_no_time_budget_never_stops(toy, make_run):
    run = budget_run(make_run, toy, None, 10**9)
    run.config.time_budget = None
    done(run.archive, None, (1000, 0))
    run._check_budget()


def test_the_pace_is_the_slowest_variant_that_ran_to_its_end(toy, make_run):
    run = budget_run(make_run, toy, 100.0, 30.0)
    a = run.archive
    done(a, None, (20, 5))
    done(a, 0, (40, 10), iteration=1)  # the slowest finished variant: 50 s
    done(a, 0, (1000, 0), status=FAILED, iteration=2)  # a failure says nothing of the pace while one is done
    a.new_variant(0, 3, status=RUNNING)  # in flight: not finished
    run._check_budget()  # 30 + 50 <= 100
    run.config.time_budget = 79.0
    with pytest.raises(Stop, match=r"time budget of 79 s reached after 30 s \(a variant takes about 50 s\)"):
        run._check_budget()


def test_when_every_variant_failed_the_pace_is_the_slowest_failure(toy, make_run):
    run = budget_run(make_run, toy, 65.0, 10.0)
    done(run.archive, None, (60, 0), status=FAILED)
    done(run.archive, 0, (30, 5), status=FAILED, iteration=1)
    with pytest.raises(Stop, match=r"about 60 s"):
        run._check_budget()
    run.config.time_budget = 75.0
    run._check_budget()  # 10 + 60 <= 75


def test_with_nothing_finished_only_the_elapsed_time_counts(toy, make_run):
    run = budget_run(make_run, toy, 100.0, 90.0)
    run.archive.new_variant(None, 0, status=RUNNING)
    run._check_budget()
    run.progress = Progress(make_console()[0], 5, elapsed_before=101.0)
    with pytest.raises(Stop, match=r"reached after 101 s \(a variant takes about 0 s\)"):
        run._check_budget()


def test_a_variants_duration_is_its_slowest_seed(toy, make_run):
    run, _ = make_run(toy, iterations=1)
    a = run.archive
    v = a.new_variant(None, 0, status=RUNNING)
    a.record_result(v.id, Result([SeedResult(0, "ok", train_seconds=10, eval_seconds=2, metrics={"neg_mse": 1.0}),
                                  SeedResult(1, "ok", train_seconds=7, eval_seconds=9, metrics={"neg_mse": 1.0})],
                                 "neg_mse"), DONE)
    assert run._duration(a.get(v.id)) == 16
    assert run._duration(a.new_variant(0, 1)) == 0.0  # no result yet
    w = a.new_variant(0, 2, status=RUNNING)
    a.record_result(w.id, Result([], "neg_mse"), FAILED)
    assert run._duration(a.get(w.id)) == 0.0  # a result without seeds took no time


# --- which failed variant gets repaired -------------------------------------------------------


def lineage(run, statuses: list[str], commit: str | None = "c0ffee"):
    """v0 done, then a chain v1 <- v2 <- ... with these statuses."""
    a = run.archive
    base = a.new_variant(None, 0, status=DONE, commit="base", fitness=1.0)
    parent = base.id
    for k, status in enumerate(statuses, 1):
        parent = a.new_variant(parent, k, status=status, commit=commit).id
    return a


@pytest.mark.parametrize("statuses, max_repairs, expected", [
    ([FAILED], 2, (1, 1)),
    ([FAILED, FAILED], 2, (2, 2)),
    ([FAILED, FAILED, FAILED], 2, None),  # two repairs in a row failed: give up on the line
    ([FAILED, FAILED, FAILED], 3, (3, 3)),
    ([DONE, FAILED], 1, (2, 1)),  # depth counts failures in a row only
    ([FAILED, DONE, FAILED], 1, (3, 1)),
    ([FAILED], 0, None),  # repairs switched off
    ([DONE], 2, None),  # the last variant did not fail
    (["invalid"], 2, None),
    ([FAILED, "rejected"], 2, None),
])
def test_the_repair_target_is_the_last_failure_within_max_repairs(toy, make_run, statuses, max_repairs, expected):
    run, _ = llm_run(make_run, toy, max_repairs=max_repairs)
    lineage(run, statuses)
    got = run.repair_target()
    assert (None if got is None else (got[0].id, got[1])) == expected


def test_a_failure_without_a_commit_or_a_parent_is_not_repaired(toy, make_run):
    run, _ = llm_run(make_run, toy, max_repairs=2)
    lineage(run, [FAILED], commit=None)  # failed before it was committed: nothing to repair
    assert run.repair_target() is None
    run2, _ = llm_run(make_run, toy, max_repairs=2, run_id="r2")
    run2.archive.new_variant(None, 0, status=FAILED, commit="base")  # the baseline itself
    assert run2.repair_target() is None
    assert run2.repair_depth(run2.archive.get(0)) == 1  # its lineage ends with it
    run3, _ = llm_run(make_run, toy, max_repairs=2, run_id="r3")
    assert run3.repair_target() is None  # an empty archive


def test_a_proposer_that_cannot_repair_never_does(toy, make_run):
    run, _ = make_run(toy, max_repairs=2)  # offline proposer: no repair()
    lineage(run, [FAILED])
    assert run.repair_target() is None


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, low, high, inclusive", RANGES)
def test_every_range_is_checked_at_its_edges(name, low, high, inclusive):
    kind = type(getattr(RunConfig(), name)) if getattr(RunConfig(), name) is not None else float
    cast = int if kind is int or name in ("iterations", "max_tokens", "workers") else float
    ok = [cast(low)] if inclusive else [cast(low) + (1 if cast is int else 0.001)]
    bad = [cast(low) - (1 if cast is int else 0.001)] + ([] if inclusive else [cast(low)])
    if high is not None:
        ok.append(cast(high))
        bad.append(cast(high) + (1 if cast is int else 0.001))
    for value in ok:
        RunConfig(**{name: value})
    for value in bad:
        with pytest.raises(ScientistError) as e:
            RunConfig(**{name: value})
        where = (f">= {low}" if inclusive else f"> {low}") + (f" and <= {high}" if high is not None else "")
        assert str(e.value) == f"setting {name!r} must be {where}, not {value!r}"


def test_unset_and_non_numeric_settings_are_not_range_checked():
    RunConfig(time_budget=None, max_cost=None, workers=None)
    cfg = RunConfig()
    cfg.iterations = True  # a bool is not a number of iterations; its type check is elsewhere
    cfg.fme_buckets = False  # below the range if it were read as 0: its type is the problem, said elsewhere
    cfg.check()


@pytest.mark.parametrize("text, seconds", [
    ("600", 600.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("2d", 172800.0), (" 45 s ", 45.0),
    (".5m", 30.0), (120, 120.0), (2.5, 2.5),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10 minutes", "-5", "1h30m", "5x", "1.2.3"])
def test_durations_that_are_refused(text):
    with pytest.raises(ScientistError, match=f"cannot read duration {text!r}: use e.g. 600, 90s, 10m, 2h"):
        parse_duration(text)


def test_the_first_failure_to_end_is_repaired_first(toy, make_run):
    run, _ = llm_run(make_run, toy, max_repairs=2)
    a = lineage(run, [FAILED])  # v1 failed
    late = a.get(1)
    early = a.new_variant(0, 2, status=FAILED, commit="c0ffee")
    a.update(early.id, finished_at=100.0)
    a.update(late.id, finished_at=200.0)  # v1 ended after v2
    assert run.repair_target()[0].id == early.id
