"""Integrity: the label each variant carries, besides its fitness.

- `violated`: the variant's learner broke the judge's protocol (a malformed, oversized or
  invalid reply: the harness's verdict), or it tampered with what it must not touch. Such a
  variant is never a parent and never best.
- `suspicious`: a fitness the seed calls implausible (past `[integrity] ceiling` in its
  seed.toml), or one that beats the seed's held-out metric (`[integrity] holdout`, measured
  the same way on data selection never sees) by more than `max_gap` in the fitness's
  direction: the variant may fit the fitness streams rather than learn. Shown everywhere;
  it may still be a parent (exploration), but it is not called best.
- `clean`: neither.
"""

from __future__ import annotations

from scientist.seed import Seed
from scientist.variant import CLEAN, SEED_VIOLATED, SUSPICIOUS, VIOLATED, Result


def label(result: Result, seed: Seed, scale: str | None = None) -> tuple[str, str]:
    """(label, reason) for a variant's evaluation `result` under `seed`'s thresholds at `scale`."""
    bad = [s for s in result.seeds if s.status == SEED_VIOLATED]
    if bad:
        return VIOLATED, "; ".join(f"seed {s.seed}: {s.reason}" for s in bad)
    if not result.ok or result.mean is None:
        return CLEAN, ""
    return suspicion(result.mean, result.mean_metrics(), seed, scale)


def suspicion(fitness: float, metrics: dict[str, float], seed: Seed,
              scale: str | None = None) -> tuple[str, str]:
    """SUSPICIOUS with the reason, or CLEAN, for a fitness and the metrics beside it."""
    rule, sign = seed.integrity_at(scale), (1.0 if seed.maximize else -1.0)
    if rule.ceiling is not None and sign * (fitness - rule.ceiling) > 0:
        return SUSPICIOUS, (f"{seed.metric} = {fitness:.4g} is past the seed's ceiling "
                            f"{rule.ceiling:g} ([integrity] in seed.toml)")
    if rule.holdout and rule.holdout in metrics and rule.max_gap is not None:
        gap = sign * (fitness - metrics[rule.holdout])
        if gap > rule.max_gap:
            return SUSPICIOUS, (f"{seed.metric} = {fitness:.4g} beats the held-out "
                                f"{rule.holdout} = {metrics[rule.holdout]:.4g} by {gap:.4g}, "
                                f"more than {rule.max_gap:g}: it may fit the fitness streams")
    return CLEAN, ""
