"""HashPartitioner and RangePartitioner: ids in range, deterministic, ordered."""

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle.errors import ConfigError
from shuffle.partitioner import MAX_PARTITIONS, HashPartitioner, Partitioner, RangePartitioner

ROOT = Path(__file__).resolve().parent.parent

BAD_COUNTS = [0, -1, MAX_PARTITIONS + 1, "8", 2.5, None, True]

hashable_keys = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)


# ------------------------------------------------------------------ HashPartitioner

@pytest.mark.parametrize("n", BAD_COUNTS)
def test_hash_partitioner_rejects_bad_partition_counts_with_config_error(n):
    with pytest.raises(ConfigError, match="num_partitions"):
        HashPartitioner(n)


def test_hash_partitioner_accepts_int_like_counts_up_to_the_int32_limit():
    assert HashPartitioner(np.int64(3)).num_partitions == 3
    assert HashPartitioner(MAX_PARTITIONS).num_partitions == 2**31 - 1


@given(k=st.integers(-(2**61 - 2), 2**61 - 2).filter(lambda k: k != -1), n=st.integers(1, 10_000))
def test_int_keys_go_to_key_mod_n_as_in_pyspark(k, n):
    p = HashPartitioner(n)
    assert p.get_partition(k) == k % n
    assert p.partition_ids([k]).tolist() == [k % n]


def test_minus_one_hashes_to_minus_two_as_cpython_and_pyspark_do():
    p = HashPartitioner(10)
    assert p.get_partition(-1) == 8  # (-2) % 10, not -1 % 10
    assert p.partition_ids([-1]).tolist() == [8]


@given(key_list=st.lists(hashable_keys, max_size=40), n=st.integers(1, 300))
def test_hash_partition_ids_equal_get_partition_and_stay_in_range(key_list, n):
    p = HashPartitioner(n)
    ids = p.partition_ids(key_list)
    assert ids.dtype == np.int32
    assert ids.tolist() == [p.get_partition(k) for k in key_list]
    assert all(0 <= i < n for i in ids.tolist())


SEED_SCRIPT = """
import pickle, sys
from shuffle.partitioner import HashPartitioner
keys = pickle.load(sys.stdin.buffer)
p = HashPartitioner(13)
out = {"batch": p.partition_ids(keys).tolist(), "single": [p.get_partition(k) for k in keys],
       "builtin": [hash(k) for k in keys]}
sys.stdout.buffer.write(pickle.dumps(out))
"""


def partition_in_fresh_interpreter(seed, keys):
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", SEED_SCRIPT], input=pickle.dumps(keys), env=env,
        capture_output=True, cwd=ROOT, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout)


def test_hash_partitioner_is_the_same_under_different_hash_seeds():
    rng = random.Random(3)
    keys = [f"user-{i}" for i in range(200)]
    widths = [0xFF, 0xFFFF, 0x10FFFF]
    keys += ["".join(chr(rng.randint(1, widths[i % 3])) for _ in range(i % 11)) for i in range(60)]
    keys += ["é", "日本", "😀", b"bytes-key", ("tuple", "of", "str"), ("mixed", 1, None)]
    a = partition_in_fresh_interpreter(1, keys)
    b = partition_in_fresh_interpreter(4242, keys)
    # The seeds took effect: the built-in hash of str differs between the two...
    assert a["builtin"] != b["builtin"]
    # ...and the partitions do not, here or in this process.
    here = HashPartitioner(13).partition_ids(keys).tolist()
    assert a["batch"] == b["batch"] == a["single"] == b["single"] == here


def test_hash_partitioners_compare_by_partition_count():
    assert HashPartitioner(4) == HashPartitioner(4)
    assert HashPartitioner(4) != HashPartitioner(5)
    assert hash(HashPartitioner(4)) == hash(HashPartitioner(4))
    assert len({HashPartitioner(4), HashPartitioner(4), HashPartitioner(6)}) == 2
    assert HashPartitioner(4) != RangePartitioner(4, [1, 2, 3])
    assert HashPartitioner(4) != 4


def test_hash_partitioner_pickles_to_an_equal_partitioner():
    p = HashPartitioner(7)
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert q.partition_ids(["a", "b", 3]).tolist() == p.partition_ids(["a", "b", 3]).tolist()


@pytest.mark.parametrize("bad", [None, "abc", b"abc", 5])
def test_partition_ids_of_a_non_sequence_raise_type_error(bad):
    for p in (HashPartitioner(3), RangePartitioner(3, [1, 2, 3])):
        with pytest.raises(TypeError):
            p.partition_ids(bad)


def test_unhashable_key_raises_type_error():
    with pytest.raises(TypeError):
        HashPartitioner(3).get_partition([1, 2])


def test_partitioner_base_is_abstract():
    with pytest.raises(TypeError):
        Partitioner()


# ----------------------------------------------------------------- RangePartitioner

def test_range_bounds_split_the_sorted_sample_evenly():
    sample = list(range(100))
    random.Random(0).shuffle(sample)
    p = RangePartitioner(4, sample)
    assert p.bounds == [25, 50, 75]
    assert p.num_partitions == 4
    # A key equal to a bound belongs to the partition on its left (bisect_left).
    assert [p.get_partition(k) for k in (0, 25, 26, 50, 51, 75, 76, 10_000, -5)] == [0, 0, 1, 1, 2, 2, 3, 3, 0]


def test_range_bounds_are_raw_sample_keys_chosen_by_key_func_order():
    p = RangePartitioner(2, ["b", "A", "c", "D"], key_func=str.lower)
    assert p.bounds == ["c"]  # sorted by lower(): A b c D -> index int(4 * 1 / 2) = 2
    assert p.get_partition("B") == 0
    assert p.get_partition("C") == 0
    assert p.get_partition("d") == 1


def test_range_key_func_can_reverse_the_order():
    p = RangePartitioner(3, range(30), key_func=lambda k: -k)
    assert p.bounds == [19, 9]
    assert p.get_partition(29) == 0
    assert p.get_partition(0) == 2


def test_descending_reverses_partition_numbers():
    asc = RangePartitioner(4, range(100))
    desc = RangePartitioner(4, range(100), ascending=False)
    assert desc.bounds == asc.bounds
    for k in (-1, 0, 25, 26, 60, 99, 500):
        assert desc.get_partition(k) == 3 - asc.get_partition(k)
    assert desc.partition_ids([0, 99]).tolist() == [3, 0]


def test_empty_sample_puts_every_key_in_one_partition():
    p = RangePartitioner(5, [])
    assert p.bounds == []
    assert p.num_partitions == 5
    assert p.partition_ids([3, -1, 100]).tolist() == [0, 0, 0]
    d = RangePartitioner(5, [], ascending=False)
    assert d.partition_ids([3, -1, 100]).tolist() == [4, 4, 4]
    assert d.partition_ids([]).tolist() == []


def test_fewer_sample_keys_than_partitions_repeat_bounds_and_stay_in_range():
    p = RangePartitioner(8, [5, 1])
    assert p.bounds == [1, 1, 1, 5, 5, 5, 5]
    ids = p.partition_ids(list(range(-3, 10)))
    assert ((ids >= 0) & (ids < 8)).all()


def test_one_partition_has_no_bounds():
    p = RangePartitioner(1, [3, 1, 2])
    assert p.bounds == []
    assert p.partition_ids([0, 5]).tolist() == [0, 0]


def assert_ordered(p, keys, key_func=lambda k: k):
    ids = p.partition_ids(keys)
    assert ids.tolist() == [p.get_partition(k) for k in keys]
    assert ((ids >= 0) & (ids < p.num_partitions)).all()
    by_partition = {}
    for k, i in zip(keys, ids.tolist()):
        by_partition.setdefault(i, []).append(key_func(k))
    ordered = sorted(by_partition) if p.ascending else sorted(by_partition, reverse=True)
    # Every key in a partition is <= every key of the partition read after it.
    for lo, hi in zip(ordered, ordered[1:]):
        assert max(by_partition[lo]) <= min(by_partition[hi])


@given(
    sample=st.lists(st.integers(-1000, 1000), max_size=60),
    keys=st.lists(st.integers(-1200, 1200), max_size=80),
    n=st.integers(1, 12),
    ascending=st.booleans(),
)
def test_range_partitions_of_ints_are_ordered(sample, keys, n, ascending):
    assert_ordered(RangePartitioner(n, sample, ascending=ascending), keys)


@given(
    sample=st.lists(st.text(max_size=5), max_size=40),
    keys=st.lists(st.text(max_size=5), max_size=60),
    n=st.integers(1, 9),
    ascending=st.booleans(),
)
def test_range_partitions_of_strings_under_key_func_are_ordered(sample, keys, n, ascending):
    p = RangePartitioner(n, sample, ascending=ascending, key_func=str.casefold)
    assert_ordered(p, keys, key_func=str.casefold)


@pytest.mark.parametrize("n", BAD_COUNTS)
def test_range_partitioner_rejects_bad_partition_counts_with_config_error(n):
    with pytest.raises(ConfigError):
        RangePartitioner(n, [1, 2])


@pytest.mark.parametrize("sample", [None, "abc", 7])
def test_range_partitioner_rejects_a_sample_that_is_not_a_key_collection(sample):
    with pytest.raises(TypeError):
        RangePartitioner(3, sample)


def test_range_partitioner_rejects_a_key_func_that_is_not_callable():
    with pytest.raises(TypeError, match="key_func"):
        RangePartitioner(3, [1], key_func="lower")


def test_range_partitioner_with_incomparable_keys_raises_type_error():
    with pytest.raises(TypeError):
        RangePartitioner(2, [1, "a"])
    with pytest.raises(TypeError):
        RangePartitioner(2, [1, 2, 3]).get_partition("a")


def test_range_partitioners_compare_by_bounds_direction_and_key_func():
    a = RangePartitioner(3, range(30))
    assert a == RangePartitioner(3, list(range(30)))
    assert hash(a) == hash(RangePartitioner(3, range(30)))
    assert a != RangePartitioner(3, range(60))
    assert a != RangePartitioner(3, range(30), ascending=False)
    assert a != RangePartitioner(3, range(30), key_func=abs)
    assert RangePartitioner(3, range(30), key_func=abs) == RangePartitioner(3, range(30), key_func=abs)


def test_range_partitioner_pickles_with_a_named_key_func_and_cloudpickles_a_lambda():
    p = RangePartitioner(4, ["b", "a", "D", "c"], ascending=False, key_func=str.lower)
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    keys = ["A", "b", "Z", "c"]
    assert q.partition_ids(keys).tolist() == p.partition_ids(keys).tolist()
    r = RangePartitioner(4, range(40), key_func=lambda k: -k)
    s = cloudpickle.loads(cloudpickle.dumps(r))
    assert s.bounds == r.bounds
    assert s.partition_ids(list(range(40))).tolist() == r.partition_ids(list(range(40))).tolist()


def test_sample_size_is_twenty_keys_per_partition():
    assert RangePartitioner.sample_size(1) == 20
    assert RangePartitioner.sample_size(8) == 160
    with pytest.raises(ConfigError):
        RangePartitioner.sample_size(0)


def test_sample_fraction_follows_pysparks_rule():
    assert RangePartitioner.sample_fraction(4, 800) == 0.1
    assert RangePartitioner.sample_fraction(4, 50) == 1.0
    assert RangePartitioner.sample_fraction(4, 0) == 0.0
    with pytest.raises(ValueError):
        RangePartitioner.sample_fraction(4, -1)
    with pytest.raises(TypeError):
        RangePartitioner.sample_fraction(4, 1.5)


@settings(max_examples=150, deadline=None)
@given(sample=st.lists(st.integers(-2**70, 2**70), max_size=60),
       keys=st.lists(st.one_of(st.integers(-2**70, 2**70), st.integers(-50, 50), st.booleans()), max_size=80),
       n=st.integers(1, 9), ascending=st.booleans())
def test_range_partition_ids_of_int_keys_equal_get_partition_key_by_key(sample, keys, n, ascending):
    partitioner = RangePartitioner(n, sample, ascending=ascending)
    assert partitioner.partition_ids(keys).tolist() == [partitioner.get_partition(k) for k in keys]


def test_an_unhashable_key_is_a_typed_error_that_is_still_a_type_error():
    from shuffle.errors import ShuffleError, UnhashableKeyError
    partitioner = HashPartitioner(4)
    for call in (lambda: partitioner.partition_ids([1, [2], 3]), lambda: partitioner.get_partition({1: 2})):
        with pytest.raises(UnhashableKeyError) as info:
            call()
        assert isinstance(info.value, ShuffleError) and isinstance(info.value, TypeError)
    assert "list" in str(pytest.raises(UnhashableKeyError, partitioner.partition_ids, [[2]]).value)
    assert pickle.loads(pickle.dumps(UnhashableKeyError([1], 7))).position == 7
