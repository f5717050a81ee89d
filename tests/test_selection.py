"""Parent selection: fitness-monotonic (FME) buckets and LRU pools, greedy, uniform."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from scientist.archive import Archive
from scientist.selection import (FitnessMonotonic, Greedy, NoParentError, Uniform,
                                 make_policy)
from scientist.variant import DONE, FAILED, RUNNING, SEED_CRASH, SEED_OK, Result, SeedResult


def add(a: Archive, value: float | None) -> int:
    """A variant with this fitness; None makes a failed one."""
    v = a.new_variant(None if a.count() == 0 else 0, a.count(), status=RUNNING)
    if value is None:
        a.record_result(v.id, Result([SeedResult(0, SEED_CRASH, reason="boom")], "m"), FAILED)
    else:
        a.record_result(v.id, Result([SeedResult(0, SEED_OK, metrics={"m": value})], "m"), DONE)
    return v.id


def frequencies(policy, archive, n=500, seed=0) -> Counter:
    rng = random.Random(seed)
    return Counter(policy.select(archive, rng).id for _ in range(n))


def test_bucket_probabilities_grow_with_rank_and_sum_to_one(archive):
    for value in range(10):
        add(archive, float(value))
    probs = FitnessMonotonic(buckets=10, temperature=0.5).probabilities(archive)
    assert len(probs) == 10
    assert sum(probs) == pytest.approx(1.0)
    assert all(a < b for a, b in zip(probs, probs[1:]))


def test_empty_buckets_get_nothing(archive):
    add(archive, 0.0)
    add(archive, 10.0)
    probs = FitnessMonotonic(buckets=5).probabilities(archive)
    assert probs[1:4] == [0.0, 0.0, 0.0]
    assert probs[0] > 0 and probs[4] > probs[0]
    assert sum(probs) == pytest.approx(1.0)


def test_low_temperature_approaches_greedy(archive):
    ids = [add(archive, float(v)) for v in (0.0, 5.0, 8.0, 10.0)]  # the best alone in its bucket
    cold = FitnessMonotonic(temperature=1e-3)
    assert cold.probabilities(archive)[-1] == pytest.approx(1.0)
    assert frequencies(cold, archive, n=300) == Counter({ids[-1]: 300})
    warm = FitnessMonotonic(temperature=1.0)
    assert len(frequencies(warm, archive, n=300)) > 1


def test_many_bad_variants_do_not_crowd_out_one_good_one(archive):
    bad = [add(archive, random.Random(i).uniform(0.0, 0.9)) for i in range(50)]
    good = add(archive, 10.0)
    n = 1000
    uniform = frequencies(Uniform(), archive, n)[good] / n
    fme = frequencies(FitnessMonotonic(), archive, n)
    assert uniform < 0.05  # one of 51
    assert fme[good] / n > 0.5 > 10 * uniform
    assert sum(fme[b] for b in bad) > 0  # the bad ones still get some compute: not greedy


def test_direction_min_favours_the_lowest_value(tmp_path):
    a = Archive(tmp_path / "min.sqlite", maximize=False)
    try:
        ids = [add(a, float(v)) for v in (10.0, 9.0, 8.0, 0.0)]
        probs = FitnessMonotonic(buckets=10, temperature=0.2).probabilities(a)
        assert probs[-1] == max(probs)
        assert frequencies(FitnessMonotonic(), a, 1000).most_common(1)[0][0] == ids[-1]
        assert Greedy().select(a, random.Random(0)).id == ids[-1]
    finally:
        a.close()


def test_lru_capacity_evicts_from_the_pool_but_not_the_archive(archive):
    ids = [add(archive, 1.0) for _ in range(5)]  # all in the same bucket
    fme = FitnessMonotonic(buckets=4, capacity=3)
    pool = {v.id for p in fme.pools(archive) for v in p}
    assert pool == set(ids[2:])  # the three most recently created
    archive.touch(ids[0])  # selected as a parent: used again
    pool = {v.id for p in fme.pools(archive) for v in p}
    assert pool == {ids[0], ids[3], ids[4]}
    assert {v.id for v in archive.candidates()} == set(ids)  # evicted ones stay archived
    assert set(frequencies(fme, archive, 300)) == pool


def test_failed_variants_are_never_parents(archive):
    add(archive, None)
    good = add(archive, 1.0)
    for _ in range(5):
        add(archive, None)
    for policy in (FitnessMonotonic(), Greedy(), Uniform()):
        assert set(frequencies(policy, archive, 200)) == {good}


def test_greedy_takes_the_best_and_the_oldest_on_ties(archive):
    add(archive, 1.0)
    first_best = add(archive, 5.0)
    add(archive, 5.0)
    add(archive, 2.0)
    assert set(frequencies(Greedy(), archive, 50)) == {first_best}


def test_uniform_gives_every_candidate_a_fair_share(archive):
    ids = [add(archive, float(v)) for v in (0.0, 1.0, 100.0, 1000.0)]
    freq = frequencies(Uniform(), archive, 4000)
    assert set(freq) == set(ids)
    assert all(700 < freq[i] < 1300 for i in ids)


@pytest.mark.parametrize("policy", [FitnessMonotonic(), Greedy(), Uniform()],
                         ids=["fme", "greedy", "uniform"])
def test_no_parent_when_nothing_succeeded(archive, policy):
    with pytest.raises(NoParentError):
        policy.select(archive, random.Random(0))
    add(archive, None)
    with pytest.raises(NoParentError) as e:
        policy.select(archive, random.Random(0))
    assert str(e.value) == ("no successfully evaluated variant with a clean integrity label to select a "
                            "parent from: the baseline itself failed or was labelled suspicious (see "
                            "`scientist show RUN 0`)")  # the run stops with it: the user's next step


def test_same_rng_seed_same_choices(archive):
    for v in range(20):
        add(archive, float(v % 7))
    fme = FitnessMonotonic(temperature=1.0)
    first, second = (frequencies_list(fme, archive, random.Random(42)) for _ in range(2))
    assert first == second
    assert len(set(first)) > 1
    assert frequencies_list(fme, archive, random.Random(43)) != first


def frequencies_list(policy, archive, rng, n=30) -> list[int]:
    return [policy.select(archive, rng).id for _ in range(n)]


def test_make_policy_by_name():
    assert make_policy("fme", buckets=3, temperature=0.1, capacity=2) == FitnessMonotonic(3, 0.1, 2)
    assert make_policy("greedy", buckets=3).name == "greedy"
    with pytest.raises(ValueError, match="unknown selection policy 'best'"):
        make_policy("best")


# --- exact numbers: FME's buckets and weights, the pools, the tie-breaks ------------------------


def test_bucket_probabilities_are_the_softmax_of_rank_over_temperature(archive):
    for value in (0.0, 1.0, 2.0, 3.0):
        add(archive, value)
    for buckets, temperature in ((4, 0.5), (4, 2.0), (2, 1.0), (7, 0.3)):
        fme = FitnessMonotonic(buckets=buckets, temperature=temperature)
        pools = fme.pools(archive)
        m = max(buckets - 1, 1)
        w = [math.exp(b / m / temperature) if pools[b] else 0.0 for b in range(buckets)]
        assert fme.probabilities(archive) == pytest.approx([x / sum(w) for x in w])


def test_one_bucket_takes_everything(archive):
    ids = [add(archive, v) for v in (0.0, 5.0, 9.0)]
    fme = FitnessMonotonic(buckets=1)
    assert fme.probabilities(archive) == [1.0]
    assert {v.id for v in fme.pools(archive)[0]} == set(ids)


def test_buckets_split_the_fitness_range_evenly(archive):
    ids = [add(archive, v) for v in (0.0, 2.4, 2.5, 4.9, 5.0, 7.49, 7.5, 10.0)]
    pools = FitnessMonotonic(buckets=4).pools(archive)  # width 2.5: [0, 2.5) [2.5, 5) [5, 7.5) [7.5, 10]
    assert [sorted(v.id for v in p) for p in pools] == [ids[0:2], ids[2:4], ids[4:6], ids[6:8]]


def test_equal_fitnesses_share_the_lowest_bucket(archive):
    ids = [add(archive, 3.0) for _ in range(3)]
    fme = FitnessMonotonic(buckets=5)
    pools = fme.pools(archive)
    assert sorted(v.id for v in pools[0]) == ids and all(not p for p in pools[1:])
    assert fme.probabilities(archive) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_minimising_puts_the_lowest_value_in_the_top_bucket(tmp_path):
    a = Archive(tmp_path / "min.sqlite", maximize=False)
    try:
        ids = [add(a, v) for v in (10.0, 0.0, 5.0)]
        pools = FitnessMonotonic(buckets=3).pools(a)
        assert [[v.id for v in p] for p in pools] == [[ids[0]], [ids[2]], [ids[1]]]
    finally:
        a.close()


def test_a_pool_lists_its_members_most_recently_used_first(archive):
    ids = [add(archive, 1.0) for _ in range(4)]
    archive.touch(ids[1])
    (pool, *_) = FitnessMonotonic(buckets=2, capacity=10).pools(archive)
    assert [v.id for v in pool] == [ids[1], ids[3], ids[2], ids[0]]
    (pool, *_) = FitnessMonotonic(buckets=2, capacity=1).pools(archive)
    assert [v.id for v in pool] == [ids[1]]


def test_selection_draws_a_bucket_by_its_probability_then_a_member_uniformly(archive):
    low = [add(archive, 0.0) for _ in range(2)]
    high = add(archive, 1.0)
    fme = FitnessMonotonic(buckets=2, temperature=1.0)
    p_high = math.e / (1 + math.e)
    n = 4000
    freq = frequencies(fme, archive, n, seed=1)
    assert abs(freq[high] / n - p_high) < 0.03
    for i in low:
        assert abs(freq[i] / n - (1 - p_high) / 2) < 0.03


def test_greedy_in_both_directions(tmp_path):
    for maximize, expected in ((True, 1), (False, 2)):
        a = Archive(tmp_path / f"{maximize}.sqlite", maximize=maximize)
        try:
            ids = [add(a, v) for v in (1.0, 3.0, -2.0, 3.0, -2.0)]
            assert Greedy().select(a, random.Random(0)).id == ids[expected]
        finally:
            a.close()


def test_suspicious_and_violated_variants_are_never_parents(archive):
    good = add(archive, 1.0)
    for label in ("suspicious", "violated"):
        v = add(archive, 100.0)
        archive.update(v, integrity=label)
    for policy in (FitnessMonotonic(), Greedy(), Uniform()):
        assert set(frequencies(policy, archive, 50)) == {good}


def test_make_policy_passes_settings_to_fme_only():
    assert make_policy("fme") == FitnessMonotonic()
    assert make_policy("uniform", buckets=3) == Uniform()
    with pytest.raises(ValueError, match="choose from fme, greedy, uniform"):
        make_policy("")
