"""Promotion's decisions and record, on an archive built by hand (nothing is run):
who challenges, which seeds, when a confirmation promotes or stops, who is best, what
selection sees."""

from __future__ import annotations

import time

import pytest

from scientist.archive import Archive
from scientist.promotion import (CONFIRMED, CONFIRMING, IMPROVED, NOT_CONFIRMED, NOT_IMPROVED, PROMOTED,
                                 RAW, SEALED, UNCONFIRMED, Design, Promotion)
from scientist.variant import DONE, RUNNING, SEED_CRASH, SEED_OK, Result, SeedResult

DESIGN = Design(alpha=0.05, max_seeds=8, batch=2, first_look=4, sealed_seeds=4, screen=1.0)


def result(values: dict[int, float], crash: int | None = None) -> Result:
    seeds = [SeedResult(s, SEED_CRASH, reason="boom") if s == crash else
             SeedResult(s, SEED_OK, metrics={"m": x}) for s, x in values.items()]
    return Result(seeds, "m")


def add(a: Archive, parent: int | None, values: dict[int, float]) -> int:
    v = a.new_variant(parent, a.count(), status=RUNNING, commit=f"c{a.count()}")
    r = result(values)
    a.record_result(v.id, r, DONE if r.ok else "failed")
    return v.id


@pytest.fixture
def world(archive: Archive):
    """A baseline on four seeds (spread about 0.1) and a promotion over it."""
    add(archive, None, {0: 1.0, 1: 1.2, 2: 1.1, 3: 0.9})
    return archive, Promotion(archive, DESIGN)


def batch(seeds: list[int], base: float, diffs: list[float]) -> tuple[Result, Result]:
    inc = {s: base + 0.01 * s for s in seeds}
    return (result({s: inc[s] + d for s, d in zip(seeds, diffs)}), result(inc))


def test_a_challenger_must_beat_the_confirmed_best_on_the_seeds_they_share(world):
    a, p = world
    # v1's mean 1.075 beats the baseline's 1.05 over its four seeds, but on seeds 0 and 1
    # the baseline has 1.0 and 1.2: paired, v1 trails by 0.025; v2 leads by 0.1
    v1 = add(a, 0, {0: 0.95, 1: 1.2})
    v2 = add(a, 0, {0: 1.1, 1: 1.3})
    assert a.get(v1).fitness > a.get(0).fitness and p.lead(a.get(v1)) is None
    assert p.lead(a.get(v2)) == pytest.approx(0.1)
    assert p.lead(a.get(0)) is None  # the best does not challenge itself
    # is it past the noise? the baseline's sd over 4 seeds is 0.129; over 2 shared seeds one
    # standard error of a paired difference is 0.129 sqrt(2 / 2)
    assert p.margin(a.get(v2)) == pytest.approx(0.1291, abs=1e-4)
    v3 = add(a, 0, {0: 1.2, 1: 1.4})
    assert p.lead(a.get(v3)) == pytest.approx(0.2) and p.lead(a.get(v3)) > p.margin(a.get(v3))


def test_attempts_spend_alpha_and_use_fresh_seeds_for_both(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    assert (c.attempt, c.incumbent_id) == (1, 0)
    assert c.level == pytest.approx(0.05 / 2 / 3)  # attempt 1 at alpha/2, three looks (4, 6, 8)
    assert p.next_seeds(c) == [4, 5]  # seeds 0-3 are the baseline's: never reused
    p.record(c, *batch([4, 5], 1.0, [0.5, 0.6]))
    assert p.next_seeds(c) == [6, 7]
    with pytest.raises(ValueError, match="unpaired"):
        p.record(c, result({6: 1.0, 7: 1.0}), result({8: 1.0, 9: 1.0}))
    c2 = p.stop(c, "test over")
    w = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c3 = p.open(w)
    assert c2.decision == NOT_CONFIRMED and c3.attempt == 2
    assert c3.level == pytest.approx(0.05 / 6 / 3)
    assert p.next_seeds(c3) == [6, 7]  # 4-5 were used by the stopped attempt


def test_promotion_happens_only_at_a_look_and_moves_the_best(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    c = p.record(c, *batch([4, 5], 1.0, [0.50, 0.52]))
    assert not c.decided and c.test(True).p < c.level  # 2 pairs is not a look
    assert p.best().id == 0 and p.labels()[v.id] == CONFIRMING
    c = p.record(c, *batch([6, 7], 1.0, [0.49, 0.51]))
    assert c.decision == PROMOTED and "4 fresh seeds" in c.reason
    assert p.best().id == v.id
    assert p.labels() == {0: CONFIRMED, v.id: CONFIRMED}
    assert [e["kind"] for e in a.events(v.id)] == [PROMOTED]


def test_futility_max_seeds_and_failures_end_a_confirmation_unpromoted(world):
    a, p = world
    futile = p.open(a.get(add(a, 0, {0: 2.0, 1: 2.0})))
    futile = p.record(futile, *batch(p.next_seeds(futile), 1.0, [-0.2, 0.1]))
    assert futile.decision == NOT_CONFIRMED and futile.reason.startswith("futility")

    weak = p.open(a.get(add(a, 0, {0: 2.0, 1: 2.0})))
    for diffs in ([0.3, -0.1], [0.2, -0.1], [0.3, -0.2], [0.1, 0.0]):
        assert not weak.decided
        weak = p.record(weak, *batch(p.next_seeds(weak), 1.0, diffs))
    assert weak.decision == NOT_CONFIRMED and weak.reason.startswith("8 fresh seeds")
    assert len(weak.seeds) == 8 and weak.evaluations == 16

    broken = p.open(a.get(add(a, 0, {0: 2.0, 1: 2.0})))
    seeds = p.next_seeds(broken)
    ok_inc = result({s: 1.0 for s in seeds})
    broken = p.record(broken, result({s: 2.0 for s in seeds}, crash=seeds[1]), ok_inc)
    assert broken.decision == NOT_CONFIRMED and "challenger failed" in broken.reason
    assert p.best().id == 0
    assert {p.labels()[c.challenger_id] for c in (futile, weak, broken)} == {UNCONFIRMED}


def test_each_variant_challenges_once(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    p.stop(p.open(v), "budget")
    assert p.lead(v) is None and p.labels()[v.id] == UNCONFIRMED


def test_selection_does_not_take_a_lucky_two_seed_lead_for_sure(world):
    a, p = world
    lucky = add(a, 0, {0: 1.2, 1: 1.3})  # +0.2 over 1.05: inside 2 s.e. of the noise floor
    far = add(a, 0, {0: 3.0, 1: 3.1})  # far outside it
    below = add(a, 0, {0: 0.5, 1: 0.6})
    keys = p.selection_keys()
    noise = p.noise()
    se = noise.sd * (1 / 2 + 1 / 4) ** 0.5
    assert keys[lucky] == pytest.approx(keys[0])  # ties with the confirmed best
    assert keys[far] == pytest.approx(keys[0] + (3.05 - 1.05) - 2 * se)
    assert keys[below] == pytest.approx(0.55)
    assert p.labels()[lucky] == RAW
    p.stop(p.open(a.get(far)), "budget")  # tested, not confirmed: no lead left at all
    assert p.selection_keys()[far] == pytest.approx(keys[0])


def test_the_sealed_test_compares_the_confirmed_best_with_the_baseline(world):
    a, p = world
    assert not p.sealed_due()  # the baseline is the best: nothing to test
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.1]))
    assert c.decision == PROMOTED and p.sealed_due()
    s = p.open_sealed()
    assert (s.challenger_id, s.incumbent_id, s.level) == (v.id, 0, 0.05)
    assert p.next_seeds(s) == [8, 9, 10, 11]  # fresh again, sealed_seeds of them at once
    s = p.record(s, *batch([8, 9, 10, 11], 1.0, [0.9, 1.0, 1.1, 1.2]))
    assert s.decision == IMPROVED and "95% CI" in s.reason
    assert not p.sealed_due() and p.sealed().id == s.id
    assert "Sealed test against v0000: +1.0500" in p.claim("m")


def test_the_claim_says_plainly_when_nothing_was_confirmed(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    p.stop(p.open(v), "budget")
    assert p.claim("m").startswith("No improvement was confirmed: the best is the baseline v0000")


def test_a_failed_baseline_leaves_nothing_to_claim(archive):
    add(archive, None, {0: 1.0, 1: 1.0, 2: 1.0})
    archive.update(0, status="failed", fitness=None)
    p = Promotion(archive, DESIGN)
    assert p.best() is None and p.noise() is None and p.claim("m").startswith("No claim:")
    archive.update(0, status=RUNNING)  # interrupted while the baseline was evaluated
    assert p.claim("m") == "No claim yet: the baseline has not been evaluated."


def test_a_suspicious_baseline_is_not_called_confirmed_and_the_claim_says_why(archive):
    """CI saw gla's baseline labelled suspicious at test scale: the table called it `confirmed`
    and the claim said it was not evaluated successfully; neither was true."""
    add(archive, None, {0: 1.0, 1: 1.2})
    p = Promotion(archive, DESIGN)
    assert p.labels()[0] == CONFIRMED
    archive.update(0, integrity="suspicious")
    assert p.best() is None and p.labels()[0] == RAW
    assert p.claim("m").startswith("No claim: the baseline itself was labelled suspicious")


def test_the_design_is_read_back_from_the_archive(archive):
    archive.set_meta("promotion", {"alpha": 0.01, "max_seeds": 6, "batch": 3, "future": 1})
    d = Promotion.of(archive).design
    assert (d.alpha, d.max_seeds, d.batch, d.looks) == (0.01, 6, 3, (6,))


def test_a_stopped_comparison_is_recorded_and_logged(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    t0 = time.time()
    c = p.stop(p.open(v), "the confirmation budget is used up")
    (stored,) = p.comparisons()
    assert (stored.decision, stored.reason) == (NOT_CONFIRMED, "the confirmation budget is used up")
    assert stored.finished_at == c.finished_at and t0 <= c.finished_at <= time.time()
    assert [(e["kind"], e["text"], e["variant_id"]) for e in a.events()] == [
        (NOT_CONFIRMED, "the confirmation budget is used up", v.id)]
    sealed = p.stop(p.open_sealed(), "no time left for the sealed test")
    assert sealed.decision == NOT_IMPROVED
    assert [c.decision for c in p.comparisons(SEALED)] == [NOT_IMPROVED]


def test_the_margin_counts_the_seeds_shared_with_the_best_and_is_zero_without_a_noise_floor(world):
    a, p = world
    sd = 0.12909944487358055  # the baseline's four seeds
    three = a.get(add(a, 0, {0: 2.0, 1: 2.0, 9: 2.0}))  # seed 9 is not the baseline's: 2 shared
    assert p.margin(three) == pytest.approx(sd * (2 / 2) ** 0.5)
    apart = a.get(add(a, 0, {7: 2.0, 8: 2.0, 9: 2.0}))  # none shared: its own 3 seeds count
    assert p.margin(apart) == pytest.approx(sd * (2 / 3) ** 0.5)
    alone = a.get(add(a, 0, {9: 2.0}))
    assert p.margin(alone) == pytest.approx(sd * 2 ** 0.5)
    assert Promotion(a, Design(screen=0.0)).margin(three) == 0.0  # screen 0: any lead is tested
    a.update(0, integrity="suspicious")  # no confirmed best: nothing to be a margin over
    assert p.margin(three) == 0.0


def test_a_one_seed_baseline_has_no_noise_floor_and_no_margin(archive):
    add(archive, None, {0: 1.0})
    p = Promotion(archive, DESIGN)
    v = archive.get(add(archive, 0, {0: 2.0}))
    assert p.noise() is None and p.margin(v) == 0.0
    assert p.lead(v) == pytest.approx(1.0)


def test_the_confirmation_in_progress_is_the_open_one(world):
    a, p = world
    assert p.in_progress() is None
    c = p.open(a.get(add(a, 0, {0: 2.0, 1: 2.0})))
    assert p.in_progress().id == c.id
    p.stop(c, "budget")
    assert p.in_progress() is None


def test_the_design_a_runs_settings_ask_for_and_the_settings_it_refuses():
    from scientist.config import RunConfig
    from scientist.errors import ScientistError
    from scientist.seed import Scale

    scale = Scale("test", timeout=60, memory_mb=512, training_seeds=3, iterations=2)
    d = Design.for_run(RunConfig(alpha=0.1, max_confirm_seeds=6, confirm_share=0.25, confirm_screen=0.5,
                                 sealed_seeds=5), scale, noise_seeds=4)
    assert d == Design(alpha=0.1, max_seeds=6, batch=3, first_look=4, share=0.25, sealed_seeds=5, screen=0.5)
    assert Design.for_run(RunConfig(), scale, noise_seeds=7).sealed_seeds == 7  # default: the noise seeds
    assert Design.for_run(RunConfig(confirm_share=1.0, max_confirm_seeds=2, sealed_seeds=2), scale, 4).share == 1.0
    for settings, message in (
            ({"alpha": 0.0}, "alpha must be between 0 and 1, not 0.0"),
            ({"alpha": 1.0}, "alpha must be between 0 and 1, not 1.0"),
            ({"max_confirm_seeds": 1}, "max_confirm_seeds must be at least 2 (a paired t-test needs two pairs), not 1"),
            ({"confirm_share": 0.0}, "confirm_share must be in (0, 1], not 0.0"),
            ({"confirm_share": 1.5}, "confirm_share must be in (0, 1], not 1.5"),
            ({"sealed_seeds": 1}, "sealed_seeds must be at least 2, not 1")):
        with pytest.raises(ScientistError) as e:
            config = RunConfig()
            for k, v in settings.items():
                object.__setattr__(config, k, v)  # past RunConfig's own range check
            Design.for_run(config, scale, noise_seeds=4)
        assert str(e.value) == message
    with pytest.raises(ScientistError, match="sealed_seeds must be at least 2, not 1"):
        Design.for_run(RunConfig(), scale, noise_seeds=1)  # no sealed_seeds: the noise seeds', 1


def test_the_noise_floor_and_what_the_run_can_detect(world):
    from scientist.stats import detectable

    a, p = world
    n = p.noise()
    assert (n.sd, n.n) == (pytest.approx(0.12909944487358055), 4)
    assert n.detectable == pytest.approx(detectable(2 ** 0.5 * n.sd, DESIGN.level(1), DESIGN.max_seeds))
    assert n.describe("m", DESIGN) == (
        "noise floor: m has sd 0.1291 between the baseline's 4 training seeds; the smallest improvement this run "
        f"can confirm is about {n.detectable:.4f} (80% power at a first attempt with 8 paired seeds)")


def test_what_the_claim_says_of_a_promotion_and_a_failed_sealed_test(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    c = p.record(c, *batch(p.next_seeds(c), 1.0, [0.5, 0.5]), seconds=3.0)
    c = p.record(c, *batch(p.next_seeds(c), 1.0, [0.5, 0.5]), seconds=4.5)
    assert (c.decision, c.reason) == (PROMOTED, "paired difference +0.5 over 4 fresh seeds, p = 0 ≤ 0.00833")
    assert (c.evaluations, p.seconds(), p.next_seeds(c)) == (8, 7.5, [])  # decided: no more seeds
    a.log("untested", "a lead left untested: the confirmation budget is used up", 2)
    claim = ("Confirmed best: v0001, m 2.0000 (raw, 2 seeds); promoted against v0000 by +0.5000 over 4 fresh "
             "paired seeds, p = 0 (1 raw lead tested on fresh paired seeds (8 extra training runs), 1 more left "
             "untested (budget)).")
    assert p.claim("m") == claim + " No sealed test yet."
    s = p.open_sealed()
    assert p.open_sealed().id == s.id and p.sealed() is None  # an open one is continued, not decided yet
    s = p.record(s, *batch(p.next_seeds(s), 1.0, [-0.1] * 4))
    sealed = "paired difference -0.1, 95% CI [-0.1000, -0.1000], one-sided p = 1 > 0.05 over 4 fresh seeds"
    assert (s.decision, s.reason) == (NOT_IMPROVED, sealed)
    assert p.claim("m") == claim + (" Sealed test against v0000: -0.1000, 95% CI [-0.1000, -0.1000], one-sided "
                                    "p = 1 over 4 fresh seeds: not improved.")
    assert (a.events()[-1]["kind"], a.events()[-1]["text"]) == ("sealed: not improved", sealed)


def test_a_seed_failing_in_the_sealed_test_is_no_improvement(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    s = p.open_sealed()
    seeds = p.next_seeds(s)
    s = p.record(s, result({k: 2.0 for k in seeds}), result({k: 1.0 for k in seeds}, crash=seeds[2]))
    assert (s.decision, s.reason) == (NOT_IMPROVED, "the incumbent failed on a fresh seed: seed 10: crash: boom")


def test_when_lower_is_better(tmp_path):
    a = Archive(tmp_path / "min.sqlite", maximize=False)
    try:
        add(a, None, {0: 1.0, 1: 1.2, 2: 1.1, 3: 0.9})
        p = Promotion(a, DESIGN)
        worse, better = add(a, 0, {0: 1.5, 1: 1.5}), add(a, 0, {0: 0.5, 1: 0.6})
        assert p.lead(a.get(worse)) is None and p.lead(a.get(better)) == pytest.approx(0.55)
        keys = p.selection_keys()  # larger is better: minus the value, a lucky lead reduced
        se = p.noise().sd * (1 / 2 + 1 / 4) ** 0.5
        assert keys[worse] == -1.5 and keys[better] == pytest.approx(-1.05 + 0.5 - 2 * se)
        c = p.open(a.get(better))
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [-0.3, -0.3]))
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [-0.3, -0.3]))
        assert c.decision == PROMOTED and p.best().id == better
        futile = p.open(a.get(add(a, 0, {0: 0.1, 1: 0.1})))
        futile = p.record(futile, *batch(p.next_seeds(futile), 1.0, [0.2, 0.1]))
        assert futile.decision == NOT_CONFIRMED and futile.reason.startswith("futility: paired difference +0.15")
    finally:
        a.close()


def test_without_a_noise_floor_a_lead_is_reduced_by_the_two_variants_own_errors(archive):
    add(archive, None, {0: 1.0})  # one seed: no spread, no noise floor
    p = Promotion(archive, DESIGN)
    v = add(archive, 0, {0: 2.0, 1: 2.4})
    se = (0.2 ** 2 + 0.0) ** 0.5  # v's standard error 0.2; the baseline has none
    assert p.selection_keys()[v] == pytest.approx(1.0 + (1.2 - 2 * se))
    archive.update(0, integrity="violated")  # no confirmed best left
    with pytest.raises(ValueError) as e:
        p.open(archive.get(v))
    assert str(e.value) == "there is no confirmed best to challenge"


# --- edges of the record: an empty archive, no best, ties, stored fields --------------------------


def test_an_empty_archive_has_no_baseline_no_floor_and_no_claim(archive):
    p = Promotion.of(archive)  # nothing saved: the default design
    assert p.design == Design() and p.baseline() is None and p.best() is None and p.noise() is None
    assert p.selection_keys() == {} and not p.sealed_due()
    assert p.claim("m") == "No claim: the baseline was not evaluated successfully."


def test_without_a_confirmed_best_nothing_challenges_and_selection_sees_means(world):
    a, p = world
    v = add(a, 0, {0: 2.0, 1: 2.0})
    a.update(0, integrity="suspicious")
    assert p.lead(a.get(v)) is None and not p.sealed_due()
    assert p.selection_keys() == {v: 2.0}  # the baseline is no candidate; v's mean is not reduced


def test_who_may_challenge_and_by_how_much(world):
    a, p = world
    same = add(a, 0, {0: 1.0, 1: 1.2})  # equal to the baseline on the seeds both have: no lead
    assert p.lead(a.get(same)) is None
    apart = add(a, 0, {7: 2.0, 8: 2.0})  # no seed shared: the means are compared
    assert p.lead(a.get(apart)) == pytest.approx(2.0 - 1.05)
    sus = add(a, 0, {0: 3.0, 1: 3.0})
    a.update(sus, integrity="suspicious")
    assert p.lead(a.get(sus)) is None
    zero = Archive(a.path.with_name("zero.sqlite"))
    try:
        add(zero, None, {0: -1.0, 1: 1.0})  # a best whose mean is exactly 0
        assert Promotion(zero, DESIGN).lead(zero.get(add(zero, 0, {5: 0.5}))) == pytest.approx(0.5)
    finally:
        zero.close()


def test_the_stored_comparison_is_the_decided_one(world):
    a, p = world
    c = p.open(a.get(add(a, 0, {0: 2.0, 1: 2.0})))
    c = p.record(c, *batch(p.next_seeds(c), 1.0, [0.0, 0.0]))  # no gain at all: futile
    (stored,) = p.comparisons()
    assert (stored.decision, stored.reason) == (NOT_CONFIRMED, c.reason)
    assert c.reason == "futility: paired difference +0, no improvement over 2 fresh seeds"
    assert stored.finished_at == c.finished_at
    assert stored.finished_at is not None and p.seconds() == 0.0 and p.in_progress() is None


def test_an_undecided_batch_leaves_no_reason_and_the_last_batch_is_cut_to_max_seeds(world):
    a, p5 = world[0], Promotion(world[0], Design(max_seeds=5, batch=2, first_look=4))
    c = p5.open(a.get(add(a, 0, {0: 2.0, 1: 2.0})))
    c = p5.record(c, *batch(p5.next_seeds(c), 1.0, [0.3, -0.1]))
    assert (c.decision, c.reason) == ("", "") and p5.comparisons()[0].reason == ""
    c = p5.record(c, *batch(p5.next_seeds(c), 1.0, [0.2, -0.1]))
    assert not c.decided and p5.next_seeds(c) == [8]  # 4 pairs of at most 5: one more


def test_the_sealed_tests_reason_says_which_side_of_the_level_p_is(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    s = p.record(p.open_sealed(), *batch([8, 9, 10, 11], 1.0, [0.5] * 4))
    assert (s.decision, s.reason) == (
        IMPROVED, "paired difference +0.5, 95% CI [+0.5000, +0.5000], one-sided p = 0 ≤ 0.05 over 4 fresh seeds")


def test_a_sealed_test_stopped_before_any_seed_is_claimed_as_such(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    p.stop(p.open_sealed(), "no time left for the sealed test")
    assert p.claim("m").endswith("over 0 fresh seeds: not improved.")


def test_a_new_best_gets_its_own_sealed_test(world):
    a, p = world
    v1 = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v1)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    s1 = p.record(p.open_sealed(), *batch(p.next_seeds(p.open_sealed()), 1.0, [1.0] * 4))
    assert s1.decision == IMPROVED and not p.sealed_due()
    old_open = a.add_comparison(kind=SEALED, challenger_id=v1.id, incumbent_id=0,
                                                               level=0.05, started_at=0.0)
    v2 = a.get(add(a, v1.id, {0: 4.0, 1: 4.0}))
    c2 = p.open(v2)
    for _ in range(2):
        c2 = p.record(c2, *batch(p.next_seeds(c2), 1.0, [1.0, 1.0]))
    assert p.best().id == v2.id and p.sealed_due()  # v1's sealed test is not v2's
    s2 = p.open_sealed()
    assert s2.challenger_id == v2.id and s2.id != old_open  # v1's open one is not continued for v2


def test_the_claim_names_the_promotion_of_the_best_even_after_a_later_one_was_disqualified(world):
    a, p = world
    v1 = a.get(add(a, 0, {0: 2.0, 1: 2.0}))
    c = p.open(v1)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    v2 = a.get(add(a, v1.id, {0: 4.0, 1: 4.0}))
    c2 = p.open(v2)
    for _ in range(2):
        c2 = p.record(c2, *batch(p.next_seeds(c2), 1.0, [2.0, 2.0]))
    a.update(v2.id, integrity="violated")  # found out later: v1 is the best again
    assert p.best().id == v1.id
    assert "promoted against v0000 by +1.0000" in p.claim("m")


def test_the_claim_when_nothing_was_tested(world):
    assert world[1].claim("m") == ("No improvement was confirmed: the best is the baseline v0000 (0 raw leads "
                                   "tested on fresh paired seeds; none promoted at α = 0.05).")


def test_selection_after_a_failed_confirmation_still_reduces_later_leads(world):
    a, p = world
    far = add(a, 0, {0: 3.0, 1: 3.1})
    p.stop(p.open(a.get(far)), "budget")
    later = add(a, 0, {0: 3.0, 1: 3.1})  # the same lead, untested
    one = add(a, 0, {0: 3.0})  # one seed: a larger standard error
    keys, sd = p.selection_keys(), p.noise().sd
    assert keys[far] == pytest.approx(1.05)
    assert keys[later] == pytest.approx(1.05 + (3.05 - 1.05) - 2 * sd * (1 / 2 + 1 / 4) ** 0.5)
    assert keys[one] == pytest.approx(1.05 + (3.0 - 1.05) - 2 * sd * (1 / 1 + 1 / 4) ** 0.5)


def test_without_a_noise_floor_both_standard_errors_count(archive):
    add(archive, None, {0: 1.0})  # one seed: no noise floor
    p = Promotion(archive, DESIGN)
    v = archive.get(add(archive, 0, {0: 2.0, 1: 2.4}))  # standard error 0.2
    c = p.open(v)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    assert p.best().id == v.id
    w = add(archive, v.id, {0: 5.0, 1: 5.6})  # standard error 0.3
    one = add(archive, v.id, {0: 5.0})  # none
    keys = p.selection_keys()
    assert keys[w] == pytest.approx(2.2 + (5.3 - 2.2) - 2 * (0.3 ** 2 + 0.2 ** 2) ** 0.5)
    assert keys[one] == pytest.approx(2.2 + (5.0 - 2.2) - 2 * 0.2)


def test_a_one_seed_best_counts_its_one_seed_in_the_standard_error(world):
    a, p = world
    v = a.get(add(a, 0, {0: 2.0}))  # trained on one seed, then confirmed
    c = p.open(v)
    for _ in range(2):
        c = p.record(c, *batch(p.next_seeds(c), 1.0, [1.0, 1.0]))
    assert p.best().id == v.id
    w = add(a, v.id, {0: 5.0, 1: 5.2})
    assert p.selection_keys()[w] == pytest.approx(2.0 + (5.1 - 2.0) - 2 * p.noise().sd * (1 / 2 + 1 / 1) ** 0.5)
