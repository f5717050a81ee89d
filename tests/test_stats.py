"""The statistics of claims: the paired t-test, its looks, the correction for many
attempts, the smallest detectable improvement. Checked against hand computations and
against simulation (fixed random generators, so these never flake)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy import stats

from scientist.stats import attempt_level, detectable, look_level, looks, paired_t


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
