"""Statistics of claims: the paired test, its sequential looks, the correction for many
attempts, and the smallest improvement a run can detect.

Every comparison here is *paired*. The two variants were trained on the same training-seed
indices and scored on the same evaluation streams (the run's secret), so their difference
at one seed, d_i = challenger_i - incumbent_i, cancels what the two share at that seed
(the data order, the initialisation scheme, the streams). The d_i are in the metric's own
units; `alternative` says which side is an improvement (`less` for a loss).

- **The test** (`paired_t`): Student's one-sample t-test on the d_i (the paired t-test),
  one-sided, H0: mean d = 0 against H1: mean d > 0 (or < 0 for a metric to minimise;
  `scipy.stats.t`); with the
  two-sided 95% t confidence interval of the mean d. It assumes the d_i are independent
  (fresh training seeds) and roughly normal. With 4 to 10 seeds, the heavy tails of the t
  distribution are what keep it honest about a variance estimated from so few values.

- **Sequential looks** (`looks`, `look_level`): a confirmation adds paired seeds in batches
  and tests after every batch once it has `first` pairs, up to `most`. Each of the L
  planned looks is tested at alpha_j / L (Bonferroni across the looks), so by the union
  bound P(some look rejects | H0) <= alpha_j, whatever the dependence between the looks
  and wherever the confirmation stops early (the seed cap, the time budget, the futility
  stop). It is conservative next to Pocock's or O'Brien-Fleming's group-sequential
  boundaries (Jennison & Turnbull 2000, *Group Sequential Methods with Applications to
  Clinical Trials*, ch. 2-3, 6), but exact for a t statistic at n = 4..10 without a
  numerical boundary search. We preferred it to an anytime-valid e-process (the sequential
  t-test of Cox 1952 as in Perez-Ortiz, Lardy, de Heide & Grunwald 2024, "E-statistics,
  group invariance and anytime-valid testing", Ann. Statist. 52(4)): simulated at 8 paired
  seeds, alpha = 0.025, the e-process needed larger effects for the same power
  (effect 1.5 sd of d: power 0.75 against 0.85 here).

- **Many attempts** (`attempt_level`): a run makes an unknown number of promotion attempts,
  one after another, each decided before the next starts, so Holm's step-down (which needs
  all p-values at once) does not apply. We spend alpha online (alpha-spending, the online
  Bonferroni rule): attempt j is tested at alpha_j = alpha / (j (j + 1)); these sum to alpha,
  so P(some false promotion in the whole run) <= alpha. Each attempt's test is valid given
  everything before it because its seeds are fresh. References: Foster & Stine (2008),
  "alpha-investing", JRSS-B 70(2); Tian & Ramdas (2021), "Online control of the
  familywise error rate", Stat. Methods Med. Res. 30(4).

- **The smallest detectable improvement** (`detectable`): the true mean difference that a
  first attempt promotes with 80% probability at its last look, from the exact power of
  the one-sided t-test (noncentral t, `scipy.stats.nct`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import optimize, stats

CONFIDENCE = 0.95  # of every interval the tool states
POWER = 0.80  # of the smallest detectable improvement


@dataclass(frozen=True)
class Paired:
    """The paired t-test on differences d_i (d > 0: an improvement)."""

    n: int
    mean: float
    se: float | None  # standard error of the mean difference (None below 2 pairs)
    t: float | None
    p: float  # one-sided p-value of H0: mean d = 0 against H1: an improvement
    low: float | None  # two-sided 95% t confidence interval of the mean difference
    high: float | None

    def interval(self, digits: int = 4) -> str:
        if self.low is None or self.high is None:
            return "—"
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_t(diffs: Sequence[float], alternative: str = "greater",
             confidence: float = CONFIDENCE) -> Paired:
    """Student's paired t-test, one-sided for an improvement (`alternative`: `greater`, or
    `less` when lower is better), with its two-sided t interval.

    Zero spread (every difference the same, as a deterministic seed gives) is decided by
    the sign: a constant improvement is p = 0, anything else p = 1."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', not {alternative!r}")
    sign = 1.0 if alternative == "greater" else -1.0
    d = [float(x) for x in diffs]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, None, None, 1.0, None, None)
    mean = statistics.fmean(d)
    if n < 2:
        return Paired(1, mean, None, None, 1.0, None, None)
    sd = statistics.stdev(d)
    if sd == 0.0 or sd <= 1e-12 * max(1.0, abs(mean)):
        t = math.inf if mean > 0 else -math.inf if mean < 0 else 0.0
        return Paired(n, mean, 0.0, t, 0.0 if sign * mean > 0 else 1.0, mean, mean)
    se = sd / math.sqrt(n)
    t = mean / se  # what scipy.stats.ttest_1samp(d, 0, alternative=...) computes, 10x faster
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    return Paired(n, mean, se, t, float(stats.t.sf(sign * t, n - 1)), mean - half, mean + half)


def attempt_level(alpha: float, attempt: int) -> float:
    """alpha_j of the j-th promotion attempt of a run (j = 1, 2, ...): alpha / (j (j + 1)).
    Online Bonferroni (alpha-spending): sum over all j is alpha."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    return alpha / (attempt * (attempt + 1))


def looks(batch: int, first: int, most: int) -> tuple[int, ...]:
    """The numbers of pairs at which a confirmation tests: after each batch of `batch`
    pairs (the last one cut to end at `most`), once there are at least `first`."""
    if most < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, not {most}")
    batch = max(1, batch)
    sizes = sorted({min(k * batch, most) for k in range(1, math.ceil(most / batch) + 1)})
    tested = tuple(n for n in sizes if n >= max(2, first))
    return tested or (most,)


def look_level(alpha_attempt: float, n_looks: int) -> float:
    """Level of each look of an attempt: Bonferroni across its planned looks."""
    return alpha_attempt / max(1, n_looks)


def detectable(sd_diff: float, level: float, n: int, power: float = POWER) -> float:
    """The smallest true mean difference a one-sided t-test at `level` over `n` pairs
    detects with probability `power`, if the differences have standard deviation
    `sd_diff`: solves P(T'(n-1, delta sqrt n) > t_crit) = power for delta (noncentral t)."""
    if n < 2 or not math.isfinite(sd_diff):
        return math.inf
    if sd_diff == 0:
        return 0.0
    crit = stats.t.ppf(1 - level, n - 1)
    delta = optimize.brentq(lambda x: stats.nct.sf(crit, n - 1, x * math.sqrt(n)) - power,
                            0.0, 1000.0)
    return delta * sd_diff


def spread(values: Sequence[float]) -> float | None:
    """The standard deviation between training seeds (None below 2 values)."""
    return statistics.stdev(values) if len(values) >= 2 else None
