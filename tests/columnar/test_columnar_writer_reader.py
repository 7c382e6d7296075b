"""The columnar writer and reader through the manager: same rows in the same partitions as the
object path, spills at a tiny budget, typed refusals, checksums, and no file left behind."""

import collections
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shuffle import HashPartitioner, ShuffleDependency, SortShuffleManager
from shuffle.columnar import BatchShuffleDependency
from shuffle.errors import BatchSchemaError, CorruptBlockError, ShuffleError

CONF = {"spark.shuffle.sync": "false", "spark.executor.memory": "64m"}
DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]


def leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith("temp_") or name.count(".") > 1
            and not name.endswith(".ADLER32")]


def keys_of(rng, dtype, n, skew):
    dtype = np.dtype(dtype)
    if skew:
        return np.full(n, 3, dtype=dtype)
    if dtype.kind == "f":
        return (rng.integers(-40, 40, n) / 4).astype(dtype)
    low = max(np.iinfo(dtype).min, -1000)
    return rng.integers(low, min(np.iinfo(dtype).max, 1000), n, endpoint=True).astype(dtype)


def object_partitions(manager, shuffle_id, batches, n):
    """What the object path puts in each partition, as sorted (key, value) lists."""
    dep = ShuffleDependency(shuffle_id, len(batches), HashPartitioner(n))
    handle = manager.register_shuffle(dep)
    for map_id, (k, v) in enumerate(batches):
        manager.get_writer(handle, map_id).write(zip(k.tolist(), v.tolist()))
    return [sorted(manager.get_reader(handle, p, p + 1).read()) for p in range(n)]


def batch_partitions(manager, handle, n):
    out = []
    for p in range(n):
        rows = []
        for k, v in manager.get_reader(handle, p, p + 1).read_batches():
            rows.extend(zip(k.tolist(), v.tolist()))
        out.append(sorted(rows))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(DTYPES), value_dtype=st.sampled_from(["i8", "f4", "u1"]),
       sizes=st.lists(st.integers(0, 300), min_size=1, max_size=3), n=st.sampled_from([1, 3, 16]),
       skew=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_rows_land_in_the_same_partitions_as_on_the_object_path(tmp_path_factory, dtype, value_dtype, sizes, n,
                                                                skew, seed):
    rng = np.random.default_rng(seed)
    batches = [(keys_of(rng, dtype, size, skew), rng.integers(0, 100, size).astype(value_dtype)) for size in sizes]
    directory = tmp_path_factory.mktemp("local")
    with SortShuffleManager(CONF, local_dir=directory) as manager:
        handle = manager.register_shuffle(BatchShuffleDependency(0, len(batches), HashPartitioner(n)))
        assert handle.kind == "columnar"
        for map_id, (k, v) in enumerate(batches):
            writer = manager.get_writer(handle, map_id)
            half = len(k) // 2
            writer.write_batch(k[:half], v[:half])
            writer.write_batch(k[half:], v[half:])  # an empty batch too, when size < 2
            status = writer.commit()
            assert sum(status.partition_lengths) == os.path.getsize(manager.resolver.data_file(0, map_id))
            assert writer.metrics.records_written == len(k)
        assert batch_partitions(manager, handle, n) == object_partitions(manager, 1, batches, n)
        assert leftovers(directory) == []


AGGREGATIONS = {
    "sum": lambda vs: sum(vs), "min": min, "max": max, "count": len, "mean": lambda vs: sum(vs) / len(vs),
}


@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize("name", list(AGGREGATIONS))
def test_named_aggregations_equal_python_folds(tmp_path, name, combine):
    rng = np.random.default_rng(5)
    batches = [(rng.integers(-30, 30, 500), rng.integers(-100, 100, 500).astype(np.float64)) for _ in range(3)]
    with SortShuffleManager(CONF, local_dir=tmp_path) as manager:
        dep = BatchShuffleDependency(0, 3, HashPartitioner(4), reduce_op="aggregate", aggregation=name,
                                     combine_on_map=combine)
        handle = manager.register_shuffle(dep)
        for map_id, batch in enumerate(batches):
            manager.get_writer(handle, map_id).write([batch])
        got = dict(row for part in batch_partitions(manager, handle, 4) for row in part)
    groups = collections.defaultdict(list)
    for k, v in batches:
        for a, b in zip(k.tolist(), v.tolist()):
            groups[a].append(b)
    expected = {k: AGGREGATIONS[name](vs) for k, vs in groups.items()}
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k])


def test_a_tiny_budget_spills_and_the_merge_by_concatenation_gives_the_same_rows(tmp_path):
    rng = np.random.default_rng(11)
    keys, values = rng.integers(0, 10_000, 400_000), rng.integers(0, 9, 400_000).astype(np.int32)
    conf = dict(CONF, **{"spark.executor.memory": "2m"})  # 400 KB of shuffle memory for 4.8 MB of rows
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(BatchShuffleDependency(0, 1, HashPartitioner(8)))
        writer = manager.get_writer(handle, 0)
        writer.write((keys[i:i + 100_000], values[i:i + 100_000]) for i in range(0, 400_000, 100_000))
        assert writer.metrics.spill_count >= 4
        assert writer.metrics.disk_bytes_spilled > 0
        assert leftovers(tmp_path) == []
        got = batch_partitions(manager, handle, 8)
        agg = manager.register_shuffle(BatchShuffleDependency(1, 1, HashPartitioner(8), reduce_op="aggregate",
                                                              aggregation="sum"))
        agg_writer = manager.get_writer(agg, 0)
        agg_writer.write([(keys, values)])
        assert agg_writer.metrics.spill_count >= 1
        sums = dict(row for part in batch_partitions(manager, agg, 8) for row in part)
    assert sum(len(part) for part in got) == 400_000
    assert sorted(row for part in got for row in part) == sorted(zip(keys.tolist(), values.tolist()))
    expected = collections.Counter()
    for k, v in zip(keys.tolist(), values.tolist()):
        expected[k] += v
    assert sums == dict(expected)


def test_sort_and_group_read_rows_ordered_by_key(tmp_path):
    rng = np.random.default_rng(2)
    keys, values = rng.integers(-50, 50, 2000), np.arange(2000)
    with SortShuffleManager(CONF, local_dir=tmp_path) as manager:
        for shuffle_id, op, ascending in ((0, "sort", True), (1, "sort", False), (2, "group", True)):
            dep = BatchShuffleDependency(shuffle_id, 2, HashPartitioner(3), reduce_op=op, ascending=ascending,
                                         key_ordering=True)
            handle = manager.register_shuffle(dep)
            manager.get_writer(handle, 0).write([(keys[:1000], values[:1000])])
            manager.get_writer(handle, 1).write([(keys[1000:], values[1000:])])
            rows = []
            for p in range(3):
                [(k, v)] = list(manager.get_reader(handle, p, p + 1).read_batches())
                assert (np.diff(k) >= 0).all() if ascending else (np.diff(k) <= 0).all()
                rows.extend(zip(k.tolist(), v.tolist()))
            assert sorted(rows) == sorted(zip(keys.tolist(), values.tolist()))


@pytest.mark.parametrize("bad", ["object_record", "dtype_change", "value_dtype_change", "object_dtype"])
def test_mixed_input_is_refused_with_a_typed_error_and_leaves_nothing(tmp_path, bad):
    good = (np.arange(10, dtype=np.int64), np.arange(10, dtype=np.float64))
    second = {
        "object_record": (1, 2.0),
        "dtype_change": (np.arange(10, dtype=np.int32), np.arange(10, dtype=np.float64)),
        "value_dtype_change": (np.arange(10, dtype=np.int64), np.arange(10, dtype=np.float32)),
        "object_dtype": (np.arange(10, dtype=np.int64), np.array([None] * 10)),
    }[bad]
    with SortShuffleManager(CONF, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(BatchShuffleDependency(0, 1, HashPartitioner(4)))
        with pytest.raises(BatchSchemaError) as info:
            manager.get_writer(handle, 0).write([good, second])
        assert info.value.batch == 1
        assert os.listdir(tmp_path) == [] or leftovers(tmp_path) == []
        assert not manager.resolver.index_file(0, 0).exists()
        assert manager.memory_pool.memory_used == 0


def test_write_batch_after_commit_and_abort_are_refused(tmp_path):
    with SortShuffleManager(CONF, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(BatchShuffleDependency(0, 2, HashPartitioner(2)))
        writer = manager.get_writer(handle, 0)
        writer.write_batch(np.arange(3), np.arange(3))
        writer.commit()
        with pytest.raises(ShuffleError, match="no more batches"):
            writer.write_batch(np.arange(3), np.arange(3))
        other = manager.get_writer(handle, 1)
        other.write_batch(np.arange(3), np.arange(3))
        other.abort()
        with pytest.raises(ShuffleError):
            other.write_batch(np.arange(3), np.arange(3))
        assert leftovers(tmp_path) == [] and manager.memory_pool.memory_used == 0


def test_an_aggregation_of_structured_values_is_refused(tmp_path):
    values = np.zeros(3, dtype=[("a", "<i8"), ("b", "<f8")])
    with SortShuffleManager(CONF, local_dir=tmp_path) as manager:
        dep = BatchShuffleDependency(0, 1, HashPartitioner(2), reduce_op="aggregate", aggregation="sum")
        handle = manager.register_shuffle(dep)
        with pytest.raises(BatchSchemaError, match="aggregation"):
            manager.get_writer(handle, 0).write([(np.arange(3), values)])
    with pytest.raises(BatchSchemaError):
        BatchShuffleDependency(0, 1, HashPartitioner(2), reduce_op="aggregate", aggregation="median")


def test_a_corrupt_columnar_block_fails_its_checksum(tmp_path):
    with SortShuffleManager(CONF, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(BatchShuffleDependency(0, 1, HashPartitioner(1)))
        manager.get_writer(handle, 0).write([(np.arange(1000), np.arange(1000))])
        path = manager.resolver.data_file(0, 0)
        data = bytearray(path.read_bytes())
        data[-20] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptBlockError):
            list(manager.get_reader(handle, 0, 1).read_batches())
