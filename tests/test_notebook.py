"""The lab notebook: complete for recent experiments, summarised for old ones, within budget."""

from __future__ import annotations

import pytest

from scientist.notebook import Notebook, approx_tokens, measured_delta, reference
from scientist.variant import DONE, FAILED, INVALID, REJECTED, Result, SeedResult, Variant


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
