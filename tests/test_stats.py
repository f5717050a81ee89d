"""The statistics of claims: the paired t-test, its looks, the correction for many
attempts, the smallest detectable improvement. Checked against hand computations and
against simulation (fixed random generators, so these never flake)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy import stats

from scientist.stats import attempt_level, detectable, look_level, looks, paired_t, spread


def test_paired_t_matches_the_textbook_formula():
    d = [0.3, 0.1, 0.4, 0.2, 0.5]
    t = paired_t(d)
    mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(5)
    assert t.n == 5 and t.mean == pytest.approx(mean) and t.se == pytest.approx(se)
    assert t.t == pytest.approx(mean / se)
    # t = 4.2426 with 4 degrees of freedom: one-sided p from the t table, 0.0066
    assert t.p == pytest.approx(0.00662, abs=5e-5)
    # 95% interval: mean ± t(0.975, 4) se, t(0.975, 4) = 2.776
    assert t.low == pytest.approx(mean - 2.7764 * se, abs=1e-4)
    assert t.high == pytest.approx(mean + 2.7764 * se, abs=1e-4)


def test_paired_t_is_scipys_one_sided_t_test():
    d = [0.3, -0.1, 0.4, 0.2, 0.05, 0.6]
    ref = stats.ttest_1samp(d, 0.0, alternative="greater")
    assert paired_t(d).t == pytest.approx(ref.statistic) and paired_t(d).p == pytest.approx(ref.pvalue)
    assert paired_t([-x for x in d]).p == pytest.approx(1 - ref.pvalue)
    # lower is better: the same test the other way, the interval in the metric's units
    less = paired_t([-x for x in d], "less")
    assert less.p == pytest.approx(ref.pvalue) and less.mean < 0 < less.high


@pytest.mark.parametrize("d, p", [([0.2, 0.2, 0.2], 0.0), ([-0.2, -0.2], 1.0), ([0.0, 0.0], 1.0)])
def test_no_spread_is_decided_by_the_sign(d, p):
    t = paired_t(d)
    assert t.p == p and t.low == t.high == t.mean


def test_fewer_than_two_pairs_prove_nothing():
    assert paired_t([5.0]).p == 1.0 and paired_t([5.0]).low is None
    assert paired_t([]).p == 1.0


def test_attempt_levels_sum_to_alpha():
    levels = [attempt_level(0.05, j) for j in range(1, 100_001)]
    assert levels[:3] == pytest.approx([0.025, 0.05 / 6, 0.05 / 12])
    assert sum(levels) == pytest.approx(0.05, rel=1e-4) and sum(levels) < 0.05
    with pytest.raises(ValueError):
        attempt_level(0.05, 0)


@pytest.mark.parametrize("batch, first, most, expected", [
    (2, 4, 8, (4, 6, 8)), (3, 4, 8, (6, 8)), (1, 4, 6, (4, 5, 6)), (2, 4, 3, (3,)),
    (5, 4, 8, (5, 8)), (2, 4, 9, (4, 6, 8, 9)),
])
def test_looks_come_after_each_batch_from_the_first_look(batch, first, most, expected):
    assert looks(batch, first, most) == expected


def test_the_sequential_test_keeps_its_level_under_h0():
    """Looks at 4, 6, 8 pairs, each at alpha / 3, with the futility stop: simulated under
    H0 (normal differences, mean 0) the attempt rejects at most alpha of the time."""
    alpha, plan = 0.025, looks(2, 4, 8)
    rng = random.Random(3)
    rejected, trials = 0, 10000
    for _ in range(trials):
        d: list[float] = []
        while len(d) < 8:
            d += [rng.gauss(0, 1) for _ in range(2)]
            if statistics.fmean(d) <= 0:  # futility (and no look could reject)
                break
            if len(d) in plan and paired_t(d).p <= look_level(alpha, len(plan)):
                rejected += 1
                break
    # binomial sd at 0.025 over 10000 trials is 0.0016; the design is conservative (~0.019)
    assert rejected / trials < alpha


def test_detectable_improvement_has_the_stated_power():
    sd, level, n = 1.0, 0.01, 8
    delta = detectable(sd, level, n)
    rng = random.Random(5)
    hits = sum(paired_t([rng.gauss(delta, sd) for _ in range(n)]).p <= level for _ in range(8000))
    assert hits / 8000 == pytest.approx(0.80, abs=0.015)  # binomial sd 0.0045
    assert detectable(2 * sd, level, n) == pytest.approx(2 * delta)
    assert detectable(0.0, level, n) == 0.0 and detectable(sd, level, 1) == math.inf


def test_an_unknown_alternative_is_an_error():
    with pytest.raises(ValueError, match="'greater' or 'less'.*'two-sided'"):
        paired_t([0.1, 0.2], "two-sided")


def test_no_pairs_and_one_pair_say_so():
    empty = paired_t([])
    assert (empty.n, empty.se, empty.t, empty.p, empty.low, empty.high) == (0, None, None, 1.0, None, None)
    assert math.isnan(empty.mean)
    one = paired_t([5.0])
    assert (one.n, one.mean, one.se, one.t, one.p, one.high) == (1, 5.0, None, None, 1.0, None)
    assert one.interval() == "—" and empty.interval() == "—"


@pytest.mark.parametrize("d, t", [([0.2, 0.2, 0.2], math.inf), ([-0.2, -0.2], -math.inf), ([0.0, 0.0], 0.0)])
def test_no_spread_has_an_infinite_or_zero_t_and_no_error(d, t):
    r = paired_t(d)
    assert r.n == len(d) and r.t == t and r.se == 0.0


def test_no_spread_is_the_sign_for_a_metric_to_minimise_too():
    assert paired_t([-0.2, -0.2], "less").p == 0.0 and paired_t([0.2, 0.2], "less").p == 1.0


def test_differences_equal_up_to_rounding_have_no_spread():
    """Two seeds that differ in the last bit of a large metric (1 ulp of 1e6 is 1.2e-10):
    rounding, not a spread to divide by, so the sign decides."""
    big = 1e6
    r = paired_t([big, math.nextafter(big, math.inf)])
    assert r.p == 0.0 and r.low == r.high == r.mean and r.se == 0.0


def test_the_tolerance_for_rounding_is_inclusive_and_no_wider():
    """A spread of exactly 1e-12 (of a metric of scale 1) counts as none; a spread just over
    it, even of a metric near 0, is tested as any other."""
    assert paired_t([0.0, 1e-12, 2e-12]).p == 0.0
    tiny = paired_t([0.0, 2.5e-12])  # t = 1 with 1 degree of freedom: p = 1/4
    assert tiny.p == pytest.approx(0.25) and tiny.low < 0 < tiny.high


def test_a_spread_of_exactly_one_is_tested_as_any_other():
    d = [0.0, 1.0, 2.0]  # stdev exactly 1.0
    ref = stats.ttest_1samp(d, 0.0, alternative="greater")
    assert paired_t(d).p == pytest.approx(ref.pvalue) and 0 < paired_t(d).p < 0.2


def test_two_pairs_with_a_spread_get_a_t_test():
    d = [0.1, 0.3]
    ref = stats.ttest_1samp(d, 0.0, alternative="greater")
    r = paired_t(d)
    assert r.n == 2 and r.p == pytest.approx(ref.pvalue) and r.low < 0.2 < r.high


def test_the_interval_is_printed_with_signs_and_the_asked_digits():
    t = paired_t([0.3, 0.1, 0.4, 0.2, 0.5])  # mean 0.3, half-width 2.7764 * 0.0707 = 0.1963
    assert t.interval() == "[+0.1037, +0.4963]"
    assert t.interval(2) == "[+0.10, +0.50]"
    assert paired_t([-0.3, -0.1, -0.4, -0.2, -0.5]).interval(1) == "[-0.5, -0.1]"


def test_a_narrower_confidence_gives_a_narrower_interval():
    d = [0.3, 0.1, 0.4, 0.2, 0.5]
    wide, narrow = paired_t(d), paired_t(d, confidence=0.80)
    # t(0.90, 4) = 1.5332
    assert narrow.high - narrow.mean == pytest.approx(1.5332 * narrow.se, abs=1e-4)
    assert narrow.high < wide.high and narrow.low > wide.low


def test_attempt_level_message_names_the_attempt():
    with pytest.raises(ValueError, match="from 1, not -2"):
        attempt_level(0.05, -2)
    assert attempt_level(0.05, 1) == 0.025


@pytest.mark.parametrize("batch, first, most, expected", [
    (2, 4, 2, (2,)), (0, 2, 3, (2, 3)), (1, 1, 3, (2, 3)), (-3, 1, 2, (2,)),
])
def test_looks_at_the_edges(batch, first, most, expected):
    """At least 2 pairs for a t-test; a batch below 1 counts as 1; a first look below 2 is 2."""
    assert looks(batch, first, most) == expected


def test_looks_need_two_pairs():
    with pytest.raises(ValueError, match="at least 2 pairs, not 1"):
        looks(2, 4, 1)


def test_each_look_gets_its_share_of_the_attempts_level():
    assert look_level(0.03, 3) == pytest.approx(0.01)
    assert look_level(0.03, 1) == 0.03 and look_level(0.03, 0) == 0.03


def test_detectable_at_the_edges():
    assert detectable(math.inf, 0.01, 8) == math.inf and detectable(math.nan, 0.01, 8) == math.inf
    assert math.isfinite(detectable(1.0, 0.01, 2))
    # many pairs: an improvement well under one sd is detectable
    many = detectable(1.0, 0.025, 64)
    # normal approximation: (z_0.975 + z_0.80) / sqrt(64) = (1.96 + 0.8416) / 8 = 0.350
    assert many == pytest.approx(0.350, abs=0.01)
    assert detectable(1.0, 0.025, 64, power=0.5) == pytest.approx(1.9983 / 8, abs=0.01)


@pytest.mark.parametrize("n", [3, 5])
def test_detectable_solves_the_power_of_the_t_test_with_n_minus_1_degrees_of_freedom(n):
    level = 0.05
    delta = detectable(1.0, level, n)
    crit = stats.t.ppf(1 - level, n - 1)
    assert stats.nct.sf(crit, n - 1, delta * math.sqrt(n)) == pytest.approx(0.80, abs=1e-6)


def test_spread_is_the_sample_standard_deviation():
    assert spread([1.0, 2.0, 3.0]) == 1.0 and spread([1.0, 3.0]) == pytest.approx(math.sqrt(2))
    assert spread([4.0]) is None and spread([]) is None
