"""The lab notebook: complete for recent experiments, summarised for old ones, within budget."""

from __future__ import annotations

import pytest

from scientist.archive import Archive
from scientist.notebook import Notebook, approx_tokens, error_tail, measured_delta, reference, shorten
from scientist.variant import DONE, FAILED, INVALID, REJECTED, RUNNING, Result, SeedResult, Variant


def done(vid: int, parent: int | None, fitness: float, predicted: float | None = None,
         hypothesis: str = "") -> Variant:
    return Variant(vid, parent, vid, DONE, hypothesis=hypothesis or f"idea number {vid}",
                   fitness=fitness, fitness_stderr=0.01, fitness_n=2, predicted=predicted)


def failed(vid: int, parent: int, tail: str) -> Variant:
    r = Result([SeedResult(0, "crash", "exit status 1", stderr_tail=tail)], "acc")
    return Variant(vid, parent, vid, FAILED, hypothesis=f"risky idea {vid}", result=r,
                   error="seed 0: crash: exit status 1")


def book(variants, rejections=None, maximize=True) -> Notebook:
    return Notebook(variants, "acc", maximize, rejections or {})


def test_entries_record_prediction_outcome_failure_tail_and_rejection_reason():
    vs = [done(0, None, 0.50), done(1, 0, 0.55, predicted=0.04),
          failed(2, 1, "Traceback (most recent call last):\n  File train.py\nValueError: shapes differ"),
          Variant(3, 1, 3, REJECTED, hypothesis="use the test set"),
          Variant(4, 1, 4, INVALID, error="no usable reply after 4 attempt(s); last error: x")]
    text = book(vs, {3: "that would be cheating"}).render(5000)
    assert "Best so far: v0001, acc = 0.5500 (baseline 0.5000)" in text
    assert "idea number 1" in text and "predicted +0.0400" in text and "+0.0500 vs v0000" in text
    assert "about as predicted" in text
    assert "ValueError: shapes differ" in text  # the error tail
    assert "that would be cheating" in text  # the human's reason
    assert "no usable proposal" in text


def test_a_wrong_direction_is_called_out():
    vs = [done(0, None, 0.5), done(1, 0, 0.4, predicted=0.05)]
    assert "opposite direction" in book(vs).render(2000)


@pytest.mark.parametrize("budget", [300, 800, 2000])
def test_a_long_history_is_summarised_to_fit_the_budget(budget):
    vs = [done(0, None, 0.5)] + [done(i, i - 1, 0.5 + i / 1000, predicted=0.001,
                                      hypothesis="a long hypothesis " * 10 + str(i)) for i in range(1, 120)]
    text = book(vs).render(budget)
    assert approx_tokens(text) <= budget * 1.05
    assert "v0119" in text  # the newest is always there, in full
    assert "earlier experiments (v0000–" in text  # the oldest are a tally
    if budget >= 800:
        assert "one line each" in text


def test_the_same_archive_gives_the_same_text():
    vs = [done(0, None, 0.5)] + [done(i, 0, 0.5 + i / 100) for i in range(1, 30)]
    assert book(vs).render(500) == book(list(vs)).render(500)


def test_changes_are_measured_against_the_nearest_working_ancestor():
    vs = [done(0, None, 0.5), failed(1, 0, "boom"), done(2, 1, 0.6, predicted=0.1)]
    by_id = {v.id: v for v in vs}
    assert reference(vs[2], by_id).id == 0
    assert measured_delta(vs[2], by_id) == pytest.approx(0.1)


def test_lower_is_better_runs():
    vs = [done(0, None, 1.0), done(1, 0, 0.5, predicted=-0.4)]
    text = book(vs, maximize=False).render(1000)
    assert "Best so far: v0001" in text and "about as predicted" in text


# --- exact texts: each piece of an entry, each verdict, each cut of the budget ----------------


def test_token_estimate_and_shortening():
    assert [approx_tokens(s) for s in ("", "abc", "abcd", "a" * 41)] == [1, 1, 2, 11]
    assert shorten("  a\n b\t\tc  ", 10) == "a b c"
    assert shorten("abcdefghij", 10) == "abcdefghij"
    assert shorten("abcdefghijk", 10) == "abcdefghi…"
    assert shorten("abcd    efghijk", 6) == "abcd…"  # no space before the ellipsis


def test_the_reference_is_the_nearest_ancestor_with_a_fitness():
    vs = [done(0, None, 0.5), done(1, 0, 0.7), failed(2, 1, "x"), failed(3, 2, "y"), done(4, 3, 0.6),
          failed(5, None, "z")]
    by_id = {v.id: v for v in vs}
    assert [getattr(reference(v, by_id), "id", None) for v in vs] == [None, 0, 1, 1, 1, None]
    assert measured_delta(vs[4], by_id) == pytest.approx(-0.1)
    assert measured_delta(vs[0], by_id) is None  # the baseline has nothing to compare with
    assert measured_delta(vs[2], by_id) is None  # no fitness of its own


def test_the_error_tail_is_the_last_lines_of_the_first_seed_that_failed_with_output():
    lines = "\n".join(f"line {i}" for i in range(10))
    r = Result([SeedResult(0, "ok", stderr_tail="ok seed output"),
                SeedResult(1, "crash", stderr_tail="  \n \n"),
                SeedResult(2, "crash", stderr_tail=lines + "\n\n   \n"),
                SeedResult(3, "crash", stderr_tail="later seed")], "acc")
    v = Variant(7, 0, 7, FAILED, result=r)
    assert error_tail(v) == "\n".join(f"line {i}" for i in range(4, 10))
    assert error_tail(v, lines=2) == "line 8\nline 9"
    assert error_tail(Variant(8, 0, 8, FAILED)) == ""
    assert error_tail(Variant(9, 0, 9, FAILED, result=Result([SeedResult(0, "crash")], "acc"))) == ""


def outcome(vs, i, rejections=None, maximize=True):
    return book(vs, rejections, maximize).outcome(vs[i])


def test_outcomes_of_each_status():
    vs = [done(0, None, 0.5), done(1, 0, 0.55, predicted=0.04),
          Variant(2, 0, 2, DONE, fitness=0.45),
          Variant(3, 0, 3, FAILED, error="seed 0: crash: " + "x" * 400),
          Variant(4, 0, 4, REJECTED, error="the reason as recorded"),
          Variant(5, 0, 5, INVALID, error="first line\nsecond line"),
          Variant(6, 0, 6, INVALID),
          Variant(7, 0, 7, RUNNING)]
    assert outcome(vs, 0) == "measured acc = 0.5000 ± 0.0100"
    assert outcome(vs, 1) == "measured acc = 0.5500 ± 0.0100 (+0.0500 vs v0000); predicted +0.0400, about as predicted"
    assert outcome(vs, 2) == "measured acc = 0.4500 (-0.0500 vs v0000)"
    assert outcome(vs, 3) == "FAILED: seed 0: crash: " + "x" * 284 + "…"
    assert outcome(vs, 4) == "rejected by the human before it ran: the reason as recorded"
    assert outcome(vs, 4, {4: "the human's words"}) == "rejected by the human before it ran: the human's words"
    assert outcome(vs, 5) == "no usable proposal: first line"
    assert outcome(vs, 6) == "no usable proposal: "
    assert outcome(vs, 7) == "running"


@pytest.mark.parametrize("predicted, fitness, maximize, verdict", [
    (0.04, 0.55, True, "about as predicted"),
    (0.05, 0.4, True, "the opposite direction: the hypothesis did not hold"),
    (-0.05, 0.6, True, "the opposite direction: the hypothesis did not hold"),
    (0.3, 0.55, True, "much smaller than predicted"),
    (0.01, 0.55, True, "much larger than predicted"),
    (0.15, 0.55, True, "about as predicted"),  # measured exactly a third of it
    (0.15 / 9, 0.55, True, "much larger than predicted"),
    (-0.05, 0.45, True, "about as predicted (a loss, as expected)"),
    (-0.05, 0.45, False, "about as predicted"),
    (0.05, 0.55, False, "about as predicted (a loss, as expected)"),
    (0.0, 0.55, True, "much larger than predicted"),  # a zero prediction has no direction
    (-0.5, 1.5, True, "the opposite direction: the hypothesis did not hold"),  # measured exactly +1
    (0.75, 0.75, True, "about as predicted"),  # measured 0.25, exactly a third: not "much smaller"
    (1.2, 0.85, True, "much smaller than predicted"),  # 0.35, between a quarter and a third
    (0.25, 1.25, True, "about as predicted"),  # measured 0.75, exactly three times: not "much larger"
    (0.0, 0.5, True, "about as predicted"),  # no change, as predicted: not a loss, whichever the direction
    (0.0, 0.5, False, "about as predicted"),
])
def test_prediction_verdicts(predicted, fitness, maximize, verdict):
    vs = [done(0, None, 0.5), done(1, 0, fitness, predicted=predicted)]
    text = outcome(vs, 1, maximize=maximize)
    assert text.endswith(f", {verdict}"), text


def test_a_measured_change_of_zero_is_neither_direction():
    vs = [done(0, None, 0.5), done(1, 0, 0.5, predicted=-0.1)]
    assert outcome(vs, 1).endswith("much smaller than predicted")


def test_full_entries():
    vs = [done(0, None, 0.5), done(1, 0, 0.55, hypothesis="h " * 300),
          failed(2, 1, "a\n\nb\n  c"), Variant(3, 0, 3, INVALID, error="bad")]
    b = book(vs)
    assert b.full_entry(vs[0]) == "v0000 (baseline, the unmodified seed): measured acc = 0.5000 ± 0.0100"
    assert b.full_entry(vs[1]) == ("v0001 (from v0000): " + "h " * 199 + "h…\n  outcome: measured acc = 0.5500 ± "
                                   "0.0100 (+0.0500 vs v0000)")
    assert b.full_entry(vs[2]) == ("v0002 (from v0001): risky idea 2\n  outcome: FAILED: seed 0: crash: exit "
                                   "status 1\n  error tail:\n    a\n    b\n      c")
    assert b.full_entry(vs[3]) == "v0003 (from v0000): (no hypothesis)\n  outcome: no usable proposal: bad"


def test_short_entries():
    vs = [done(0, None, 0.5), done(1, 0, 0.55, predicted=0.04, hypothesis="raise lr"),
          Variant(2, None, 2, DONE, fitness=0.61, hypothesis="fresh"),  # no reference: its own fitness
          failed(3, 1, "x"), Variant(4, 1, 4, REJECTED, hypothesis="cheat"),
          Variant(5, 1, 5, INVALID, error="unusable " * 20), Variant(6, 1, 6, RUNNING, hypothesis="h"),
          done(7, 0, 0.45)]
    b = book(vs)
    assert [b.short_entry(v) for v in vs] == [
        "v0000 baseline: acc = 0.5",
        "v0001←v0000 +0.0500 (pred +0.0400): raise lr",
        "v0002 baseline: acc = 0.61",
        "v0003←v0001 failed: risky idea 3",
        "v0004←v0001 rejected: cheat",
        "v0005←v0001 invalid: " + shorten("unusable " * 20, 110),
        "v0006←v0001 running: h",
        "v0007←v0000 -0.0500: idea number 7",
    ]
    lone = Variant(8, 5, 8, DONE, fitness=0.7, hypothesis="after an invalid one")
    assert book(vs[:6] + [lone]).short_entry(lone) == "v0008←v0005 +0.1500: after an invalid one"
    orphan = [failed(0, None, "x"), Variant(1, 0, 1, DONE, fitness=0.7, hypothesis="no reference")]
    assert book(orphan).short_entry(orphan[1]) == "v0001←v0000 0.7000: no reference"  # nothing to compare with


def test_the_tally_counts_better_worse_failed_and_the_rest():
    vs = [done(0, None, 0.5), done(1, 0, 0.6), done(2, 0, 0.4), done(3, 0, 0.5), failed(4, 0, "x"),
          Variant(5, 0, 5, REJECTED), Variant(6, 0, 6, INVALID), Variant(7, 0, 7, RUNNING), done(8, 0, 1.5)]
    assert book(vs).tally(vs) == ("9 earlier experiments (v0000–v0008), summarised: 2 improved on their parent, "
                                  "1 were worse, 1 failed, 2 were rejected or unusable.")
    assert book(vs, maximize=False).tally(vs[1:3]) == ("2 earlier experiments (v0001–v0002), summarised: 1 improved "
                                                       "on their parent, 1 were worse, 0 failed, 0 were rejected or "
                                                       "unusable.")


def test_the_best_line():
    assert book([]).best_line() == "No variant has a fitness yet."
    assert book([failed(0, None, "x")]).best_line() == "No variant has a fitness yet."
    vs = [done(0, None, 0.5), done(1, 0, 0.7), done(2, 0, 0.3), Variant(3, 0, 3, FAILED, fitness=9.0)]
    assert book(vs).best_line() == "Best so far: v0001, acc = 0.7000 (baseline 0.5000)."
    assert book(vs, maximize=False).best_line() == "Best so far: v0002, acc = 0.3000 (baseline 0.5000)."
    no_base = [failed(0, None, "x"), done(1, 0, 0.7)]
    assert book(no_base).best_line() == "Best so far: v0001, acc = 0.7000."


def test_render_puts_newest_in_full_older_in_one_line_and_the_oldest_in_a_tally():
    vs = [done(0, None, 0.5)] + [done(i, i - 1, 0.5 + i / 100, hypothesis=f"idea {i} " + "w" * 80)
                                 for i in range(1, 12)]
    b = book(vs)
    head, tally, short, full = b.render(300).split("\n\n", 3)
    assert head == b.best_line()
    n_tally = int(tally.split()[0])
    assert tally.startswith(f"{n_tally} earlier experiments (v0000–{vs[n_tally - 1].name}), summarised:")
    short_lines = short.split("\n")
    assert short_lines[0] == "Older experiments, one line each (Δ vs parent):"
    n_short = len(short_lines) - 1
    assert n_tally > 0 and n_short > 0
    assert short_lines[1:] == [b.short_entry(v) for v in vs[n_tally:n_tally + n_short]]  # oldest first
    assert full == "Most recent experiments:\n" + "\n\n".join(b.full_entry(v) for v in vs[n_tally + n_short:])
    assert len(vs) - n_tally - n_short > 0
    assert book(vs).render(100000) == "\n\n".join(
        [b.best_line(), "Most recent experiments:\n" + "\n\n".join(b.full_entry(v) for v in vs)])
    assert book([]).render(100) == "Nothing has been run yet."


def cut(vs, budget_tokens):
    """(entries in full, entries on one line, entries tallied) of a rendered notebook."""
    text = book(vs).render(budget_tokens)
    full = text.split("Most recent experiments:\n", 1)[1].count(" (from v") if "Most recent" in text else 0
    short = text.split("one line each (Δ vs parent):\n", 1)[1].split("\n\n")[0].count("\n") + 1 \
        if "one line each" in text else 0
    tallied = int(text.split("\n\n")[1].split()[0]) if "earlier experiments" in text else 0
    return full, short, tallied


def exact_fit():
    """Six variants and a budget in which the newest entry fills exactly half the budget and
    two one-line entries exactly fill the rest but 200 characters."""
    base = [done(i, i - 1 if i else None, 0.5, hypothesis="x" * 30) for i in range(4)]
    v4 = done(4, 3, 0.5, hypothesis="x" * 50)
    prefix3 = len(book(base).short_entry(base[3])) - 30
    for pad in range(200):
        v5 = done(5, 4, 0.5, hypothesis="y" * (200 + pad))
        b = book(base + [v4, v5])
        head, newest = len(b.best_line()), len(b.full_entry(v5))
        tokens = -(-(2 * newest + head) // 4)
        if (tokens * 4 - head) // 2 != newest:
            continue
        need = tokens * 4 - head - 200 - newest - len(b.short_entry(v4)) - prefix3
        if 1 <= need <= 100:
            v3 = done(3, 2, 0.5, hypothesis="z" * need)
            return base[:3] + [v3, v4, v5], tokens
    pytest.fail("no exact fit found")


def test_entries_that_fit_exactly_are_kept():
    vs, tokens = exact_fit()
    assert cut(vs, tokens) == (1, 2, 3)
    longer_newest = vs[:5] + [done(5, 4, 0.5, hypothesis=vs[5].hypothesis + "y")]
    assert cut(longer_newest, tokens)[0] == 0  # one character over half the budget: not in full
    longer_short = vs[:3] + [done(3, 2, 0.5, hypothesis=vs[3].hypothesis + "z")] + vs[4:]
    assert cut(longer_short, tokens) == (1, 1, 4)  # one character over: tallied


def test_markdown_is_the_whole_notebook():
    vs = [done(0, None, 0.5), done(1, 0, 0.6, hypothesis="raise lr"), failed(2, 1, "Trace\nError: x")]
    vs[1].rationale = "twenty steps stop short"
    md = book(vs).markdown()
    assert md == ("# Lab notebook\n\nBest so far: v0001, acc = 0.6000 (baseline 0.5000).\n\n"
                  "## v0000 (baseline, the unmodified seed): measured acc = 0.5000 ± 0.0100\n\n"
                  "## v0001 (from v0000): raise lr\n\n  outcome: measured acc = 0.6000 ± 0.0100 (+0.1000 vs v0000)\n\n"
                  "Rationale: twenty steps stop short\n\n"
                  "## v0002 (from v0001): risky idea 2\n\n  outcome: FAILED: seed 0: crash: exit status 1\n"
                  "  error tail:\n    Trace\n    Error: x\n")


def test_from_archive_takes_the_rejection_reasons_and_the_direction(tmp_path):
    a = Archive(tmp_path / "a.sqlite", maximize=False)
    try:
        a.new_variant(None, 0, status=DONE, fitness=1.0)
        v = a.new_variant(0, 1, status=REJECTED, error="stored error")
        a.log("rejected", "the human's reason", v.id)
        a.log("rejected", "no variant", None)
        a.log("integrity", "not a rejection", 0)
        b = Notebook.from_archive(a, "loss")
        assert (b.metric, b.maximize, b.rejections) == ("loss", False, {1: "the human's reason"})
        assert [x.id for x in b.variants] == [0, 1]
    finally:
        a.close()


def test_long_texts_are_cut_at_400_and_200_characters():
    b = book([done(0, None, 0.5), done(1, 0, 0.5, hypothesis="x" * 500),
              Variant(2, 0, 2, INVALID, error="e" * 300 + "\nsecond line")])
    assert b.full_entry(b.variants[1]).split("\n")[0] == "v0001 (from v0000): " + "x" * 399 + "…"
    assert b.outcome(b.variants[2]) == "no usable proposal: " + "e" * 199 + "…"


def test_the_error_tail_keeps_indentation_and_drops_trailing_spaces():
    r = Result([SeedResult(0, "crash", stderr_tail="  File train.py\nValueError: x   \n")], "acc")
    assert error_tail(Variant(1, 0, 1, FAILED, result=r)) == "  File train.py\nValueError: x"


def test_a_finished_variant_shows_no_error_tail():
    # one of its seeds crashed with output, but the variant finished: no error tail in its entry
    r = Result([SeedResult(0, "crash", stderr_tail="boom"), SeedResult(1, "ok", metrics={"acc": 0.6})], "acc")
    v = Variant(1, 0, 1, DONE, hypothesis="h", fitness=0.6, fitness_stderr=0.0, fitness_n=1, result=r)
    b = book([done(0, None, 0.5), v])
    assert "error tail" not in b.full_entry(v) and "boom" not in b.full_entry(v)


def test_the_best_line_without_any_baseline_in_the_list():
    assert book([done(1, 0, 0.7)]).best_line() == "Best so far: v0001, acc = 0.7000."


def test_the_oldest_entry_is_on_one_line_when_it_fits_and_tallied_alone_when_not():
    vs = [done(0, None, 0.5)] + [done(i, i - 1, 0.5, hypothesis="w" * 150) for i in (1, 2)]
    cuts = {cut(vs, tokens) for tokens in range(40, 400)}
    assert (1, 2, 0) in cuts  # the newest in full, both older ones on one line, nothing tallied
    assert (1, 1, 1) in cuts  # the baseline alone in the tally
