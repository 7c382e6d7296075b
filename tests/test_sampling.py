"""sort_by_key's one-pass sample: exact counts, uniform fixed-size samples, shares by partition size."""

import statistics

import pytest

from shuffle.engine.sampling import per_partition_sample_size, proportional_sample, sketch_keys
from shuffle.errors import SerializationError


def sketch(records, k, split=0):
    [(count, keys)] = list(sketch_keys(k)(split, iter(records)))
    return count, keys


def test_a_sketch_counts_every_record_and_keeps_k_of_its_keys():
    records = [(i, None) for i in range(200_000)]
    count, keys = sketch(records, 500)
    assert count == 200_000 and len(keys) == 500 and len(set(keys)) == 500
    assert all(0 <= k < 200_000 for k in keys)
    assert sketch(records, 500) == (count, keys)  # a rerun samples the same keys


def test_the_sample_is_uniform_over_the_whole_partition_not_its_start():
    count, keys = sketch([(i, None) for i in range(300_000)], 2000)
    assert 140_000 < statistics.mean(keys) < 160_000
    assert max(keys) > 290_000 and min(keys) < 10_000
    prefix = keys[:200]  # lowest priorities first: a prefix is uniform too
    assert 110_000 < statistics.mean(prefix) < 190_000


def test_a_small_partition_keeps_all_its_keys():
    assert sorted(sketch([(i, 0) for i in range(7)], 50)[1]) == list(range(7))
    assert sketch([], 50) == (0, [])


def test_shares_follow_the_partition_sizes():
    sketches = [(9000, list(range(100))), (1000, list(range(100, 200))), (0, [])]
    sample = proportional_sample(sketches, 100)
    assert len([k for k in sample if k < 100]) == 90 and len([k for k in sample if k >= 100]) == 10
    assert proportional_sample([(0, []), (0, [])], 100) == []


def test_oversampling_is_three_times_the_share():
    assert per_partition_sample_size(64, 8) == 3 * 20 * 64 // 8
    assert per_partition_sample_size(2, 1000) == 1


@pytest.mark.parametrize("bad", [(1, 2, 3), [1, 2], "ab", 5])
def test_a_record_that_is_not_a_pair_is_named_with_its_position(bad):
    records = [(i, i) for i in range(70_000)] + [bad]
    with pytest.raises(SerializationError) as info:
        sketch(records, 10)
    assert info.value.position == 70_000 and type(bad).__name__ in str(info.value)
