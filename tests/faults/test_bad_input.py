"""Bad input: each is a clear typed error, nothing is committed, and the context still works after.

Errors raised inside a task reach the caller as ``TaskFailedError`` whose
cause is the worker's typed error (it pickles with its attributes).
(tests/test_serializer.py, tests/test_serialized_writer.py and tests/test_conf.py
cover these errors for one serializer, writer or key at a time; here they go
through a running context, every known key included.)
"""

from __future__ import annotations

import operator
import threading
from pathlib import Path

import pytest

from shuffle import ConfigError, Context, SerializationError, ShuffleError, TaskFailedError
from shuffle.conf import KNOWN_KEYS, ShuffleConf
from shuffle.errors import InputNotFoundError, RecordTooLargeError

from faults.conftest import CONF, assert_clean

ONCE = {"spark.task.maxFailures": "1"}


@pytest.fixture
def ctx(make_ctx):
    context = make_ctx(2, ONCE)
    yield context
    # Still usable, and nothing of the failed shuffles committed.
    assert dict(context.parallelize(range(20), 2).map(lambda x: (x % 3, 1)).reduce_by_key(operator.add).collect()) \
        == {0: 7, 1: 7, 2: 6}
    assert_clean(context)


def committed(ctx, shuffle_id):
    return sorted(Path(ctx.local_dir).glob(f"executor-*/shuffle_{shuffle_id}_*_0.index"))


def with_a_lock(x):
    return (x, threading.Lock())          # made in the worker: msgpack and pickle both refuse it


def make_huge(x):
    from shuffle.write import serialized_sorter

    serialized_sorter._recordbuf.MAX_RECORD_SIZE = 1000      # a page limit a test can reach
    return (x, "x" * (2000 if x == 7 else 10))


def failure_of(call):
    with pytest.raises(TaskFailedError) as info:
        call()
    return info.value, info.value.__cause__


NOT_PAIRS = [pytest.param((1, 2, 3), id="3-tuple"), pytest.param(5, id="int"),
             pytest.param("ab", id="str"), pytest.param([1, 2], id="list")]


@pytest.mark.parametrize("wide", ["reduce_by_key", "group_by_key", "partition_by"])
@pytest.mark.parametrize("bad", NOT_PAIRS)
def test_records_that_are_not_pairs(ctx, wide, bad):
    data = ctx.parallelize([(0, 0)] * 3 + [bad], 2)
    shuffle = {"reduce_by_key": lambda: data.reduce_by_key(operator.add, 3),
               "group_by_key": lambda: data.group_by_key(3),
               "partition_by": lambda: data.partition_by(3)}[wide]
    error, cause = failure_of(lambda: shuffle().collect())
    assert isinstance(cause, SerializationError), error
    assert "2-tuple" in str(cause) and type(bad).__name__ in str(cause)


@pytest.mark.parametrize("bad", [(1, 2, 3), 5, "ab", [1, 2]], ids=["3-tuple", "int", "str", "list"])
def test_records_that_are_not_pairs_in_sort_by_key(ctx, bad):
    # sort_by_key samples keys on the way: the sample job refuses them first.
    data = ctx.parallelize([(0, 0)] * 3 + [bad], 2)
    error, cause = failure_of(lambda: data.sort_by_key(num_partitions=3))
    assert isinstance(cause, SerializationError) and "2-tuple" in str(cause), error


@pytest.mark.parametrize("place", ["key", "value"])
def test_unencodable_keys_or_values(ctx, place):
    make = with_a_lock if place == "value" else (lambda x: (threading.Lock(), x))
    grouped = ctx.parallelize(range(10), 2).map(make).group_by_key(3)
    error, cause = failure_of(grouped.collect)
    assert isinstance(cause, SerializationError) and "lock" in str(cause).lower(), error
    assert committed(ctx, grouped.shuffle_id) == []


def test_keys_that_cannot_be_compared_in_sort_by_key(ctx):
    data = ctx.parallelize([(1, "a"), ("b", 2)] * 50, 2)
    with pytest.raises(ShuffleError, match="cannot .*(order|sort).*str.*int|int.*str"):
        data.sort_by_key(num_partitions=3)
    error, cause = failure_of(lambda: data.sort_by_key(num_partitions=1).collect())   # no sample: the reducer sees it
    assert isinstance(cause, ShuffleError) and "cannot sort keys" in str(cause)


@pytest.mark.parametrize("partitions", [1, 3])
def test_nan_keys_in_sort_by_key(ctx, partitions):
    data = ctx.parallelize([(float("nan"), 1), (1.0, 2), (0.5, 3)] * 30, 2)
    with pytest.raises(ShuffleError, match="(?i)nan"):
        data.sort_by_key(num_partitions=partitions).collect()


def test_unhashable_keys_in_reduce_by_key(ctx):
    sums = ctx.parallelize([([1], 1), ([1], 2)], 2).reduce_by_key(operator.add, 3)
    error, cause = failure_of(sums.collect)
    assert isinstance(cause, ShuffleError) and "list" in str(cause), error


@pytest.mark.parametrize("wide", ["group_by_key", "partition_by", "sort_writer_reduce"])
def test_unhashable_keys_in_every_keyed_shuffle_are_typed(make_ctx, wide):
    ctx = make_ctx(2, {**ONCE, **({"shuffle.writer.force": "sort"} if wide == "sort_writer_reduce" else {})})
    data = ctx.parallelize([([1], 1), ((2,), 2)], 2)
    shuffled = {"group_by_key": lambda: data.group_by_key(3), "partition_by": lambda: data.partition_by(3),
                "sort_writer_reduce": lambda: data.reduce_by_key(operator.add, 3)}[wide]()
    error, cause = failure_of(shuffled.collect)
    assert isinstance(cause, ShuffleError) and isinstance(cause, TypeError) and "list" in str(cause), error


def test_a_record_larger_than_a_page_in_serialized_mode(make_ctx):
    ctx = make_ctx(2, {**ONCE, "shuffle.writer.force": "serialized"})
    moved = ctx.parallelize(range(10), 1).map(make_huge).partition_by(3)
    error, cause = failure_of(moved.collect)
    assert isinstance(cause, RecordTooLargeError) and cause.limit == 1000 and cause.position == 7, error
    assert "record 7" in str(cause) and "shuffle.writer.force=sort" in str(cause)
    assert committed(ctx, moved.shuffle_id) == []
    assert_clean(ctx)


@pytest.mark.parametrize("n", [0, -1])
def test_num_partitions_not_positive(ctx, n):
    data = ctx.parallelize([(1, 1)], 1)
    for wide in (lambda: data.reduce_by_key(operator.add, n), lambda: data.group_by_key(n),
                 lambda: data.partition_by(n), lambda: data.sort_by_key(num_partitions=n),
                 lambda: data.combine_by_key(list, operator.add, operator.add, n), lambda: data.join(data, n),
                 lambda: data.distinct(n), lambda: ctx.parallelize([1], n)):
        with pytest.raises(ShuffleError, match=f"positive int, got {n}"):
            wide()


def _malformed(key):
    """A value ``key`` refuses (every known key but the directory paths refuses one of these)."""
    for value in ("not-a-value", "-5", "2.5", "0", "99999999999999999999p"):
        try:
            ShuffleConf({key: value})
        except ConfigError:
            return value
    return None


@pytest.mark.parametrize("key", sorted(k for k, spec in KNOWN_KEYS.items() if spec.parse is not str))
def test_every_config_key_with_a_malformed_value(tmp_path, key):
    value = _malformed(key)
    assert value is not None, f"{key} accepts every malformed value tried"
    with pytest.raises(ConfigError) as info:
        Context(parallelism=1, conf={**CONF, key: value}, local_dir=tmp_path / "never")
    assert info.value.key == key and key in str(info.value) and repr(value) in str(info.value)
    assert not (tmp_path / "never").exists()                   # refused before anything was made


@pytest.mark.parametrize("how", ["local_dir", "spark.local.dir"])
@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_a_local_dir_that_cannot_be_made_or_written(tmp_path, how, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = str(blocker / "sub") if where == "under-a-file" else "/proc/shuffle-cannot-be-here"
    kwargs = {"local_dir": path} if how == "local_dir" else {"conf": {**CONF, "spark.local.dir": path}}
    with pytest.raises(ConfigError) as info:
        Context(parallelism=1, **kwargs)
    assert info.value.key == how and path in str(info.value)


def test_a_local_dir_that_does_not_exist_yet_is_made(tmp_path):
    target = tmp_path / "not" / "yet"
    with Context(parallelism=1, conf=CONF, local_dir=target) as context:
        assert context.parallelize(range(5), 1).map(lambda x: (x, x)).group_by_key(2).count() == 5
    assert target.is_dir() and list(target.iterdir()) == []


def test_text_file_on_a_path_that_matches_nothing(ctx, tmp_path):
    with pytest.raises(InputNotFoundError) as info:
        ctx.text_file(str(tmp_path / "nothing" / "*.txt"))
    assert "nothing" in str(info.value)
