"""Columnar datasets on the engine: the same answers as the object path on the same data, spilling
at a tenth of the input, Parquet input, and nothing left behind (files, processes)."""

import collections
import operator

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shuffle import Context
from shuffle.errors import BatchSchemaError, TaskFailedError

CONF = {"spark.shuffle.sync": "false", "spark.executor.memory": "128m"}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    with Context(parallelism=2, conf=CONF, local_dir=tmp_path_factory.mktemp("engine")) as context:
        yield context


def temporaries(ctx):
    return [p.name for p in ctx.local_dir.glob("executor-*/*") if p.name.startswith("temp_")]


def data(dtype, n, seed, skew=False):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    keys = np.full(n, 7, dtype) if skew else rng.integers(0, 100, n).astype(dtype)
    if dtype.kind == "i" and not skew:
        keys = keys - dtype.type(50)
    return keys, rng.integers(0, 50, n).astype(np.int64)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["i1", "i4", "i8", "u2", "u8", "f4", "f8"]), n=st.sampled_from([0, 1, 50, 3000]),
       skew=st.booleans(), seed=st.integers(0, 1000))
def test_reduce_group_sort_and_partition_equal_the_object_path(ctx, dtype, n, skew, seed):
    keys, values = data(dtype, n, seed, skew)
    records = list(zip(keys.tolist(), values.tolist()))
    columnar = ctx.from_arrays(keys, values, 3)
    objects = ctx.parallelize(records, 3)

    assert dict(columnar.reduce_by_key("sum", 4).collect()) == dict(objects.reduce_by_key(operator.add, 4).collect())
    grouped = {k: sorted(vs) for k, vs in columnar.group_by_key(4).collect()}
    assert grouped == {k: sorted(vs) for k, vs in objects.group_by_key(4).collect()}
    ordered_keys, ordered_values = columnar.sort_by_key(num_partitions=4).to_numpy()
    assert ordered_keys.tolist() == sorted(keys.tolist())
    assert sorted(zip(ordered_keys.tolist(), ordered_values.tolist())) == sorted(records)
    assert columnar.sort_by_key(ascending=False, num_partitions=3).to_numpy()[0].tolist() == \
        sorted(keys.tolist(), reverse=True)
    # partition_by: the same rows in the same partitions (HashPartitioner for int and float keys).
    moved = ctx.run_job(columnar.partition_by(5), _rows)
    expected = ctx.run_job(objects.partition_by(5), _sorted_records)
    assert moved == expected
    assert columnar.count() == n
    assert temporaries(ctx) == []


def _rows(batches):
    return sorted(pair for k, v in batches for pair in zip(k.tolist(), v.tolist()))


def _sorted_records(records):
    return sorted(records)


@pytest.mark.parametrize("name", ["min", "max", "count", "mean"])
def test_other_named_aggregations(ctx, name):
    keys, values = data("i8", 5000, 3)
    got = dict(ctx.from_arrays(keys, values, 4).reduce_by_key(name, 3).collect())
    groups = collections.defaultdict(list)
    for k, v in zip(keys.tolist(), values.tolist()):
        groups[k].append(v)
    fold = {"min": min, "max": max, "count": len, "mean": lambda vs: sum(vs) / len(vs)}[name]
    assert got == pytest.approx({k: fold(vs) for k, vs in groups.items()})
    assert ctx.last_job_metrics.stages[0].write_mode == "columnar"


def test_map_batches_and_a_second_shuffle_chain(ctx):
    keys, values = data("i8", 4000, 9)
    doubled = ctx.from_arrays(keys, values, 4).map_batches(lambda k, v: (k % 10, v * 2))
    totals = dict(doubled.reduce_by_key("sum", 3).reduce_by_key("max", 2).collect())
    expected = collections.Counter()
    for k, v in zip(keys.tolist(), values.tolist()):
        expected[k % 10] += 2 * v
    assert totals == dict(expected)


def test_memory_mapped_input_is_re_mapped_by_the_tasks(ctx, tmp_path):
    keys, values = data("i8", 10_000, 4)
    np.save(tmp_path / "k.npy", keys)
    np.save(tmp_path / "v.npy", values)
    mapped = ctx.from_arrays(np.load(tmp_path / "k.npy", mmap_mode="r"), np.load(tmp_path / "v.npy", mmap_mode="r"), 4)
    assert all(source is not None for source in mapped._sources)
    expected = collections.Counter()
    for k, v in zip(keys.tolist(), values.tolist()):
        expected[k] += v
    assert dict(mapped.reduce_by_key("sum", 4).collect()) == dict(expected)


def test_an_object_record_in_a_batch_shuffle_fails_the_job_with_the_typed_error(ctx):
    objects = ctx.parallelize([(1, 2), (3, 4)], 2)
    from shuffle.columnar.dataset import BatchDataset, BatchShuffledDataset
    from shuffle.partitioner import HashPartitioner

    wrong = BatchShuffledDataset(objects, HashPartitioner(2), "none")  # type: ignore[arg-type]
    assert isinstance(wrong, BatchDataset)
    with pytest.raises(TaskFailedError) as info:
        wrong.to_numpy()
    assert isinstance(info.value.__cause__, BatchSchemaError)
    assert temporaries(ctx) == []


def test_a_budget_of_a_tenth_of_the_input_spills_and_completes(tmp_path):
    rng = np.random.default_rng(1)
    keys, values = rng.integers(0, 50_000, 1_000_000), rng.integers(0, 1000, 1_000_000)  # 16 MB of rows
    conf = dict(CONF, **{"spark.executor.memory": "1600k"})
    with Context(parallelism=2, conf=conf, local_dir=tmp_path / "small") as small:
        ds = small.from_arrays(keys, values, 2)
        k, v = ds.reduce_by_key("sum", 8).to_numpy()
        spills = sum(stage.write.spill_count for stage in small.last_job_metrics.stages)
        ordered, _ = ds.sort_by_key(num_partitions=8).to_numpy()
        assert temporaries(small) == []
        workers = psutil.Process().children(recursive=True)
    assert spills > 0
    expected = np.bincount(keys, weights=values, minlength=50_000)
    np.testing.assert_array_equal(v, expected[k].astype(np.int64))
    assert len(k) == len(np.unique(keys))
    np.testing.assert_array_equal(ordered, np.sort(keys))
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                and "forkserver" not in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]
    assert not (tmp_path / "small").exists() or not list((tmp_path / "small").glob("executor-*"))


def test_from_parquet_reads_row_groups_as_partitions(ctx, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    keys, values = data("i8", 3000, 8)
    pq.write_table(pa.table({"k": keys, "v": values, "other": values}), tmp_path / "t.parquet", row_group_size=1000)
    ds = ctx.from_parquet(tmp_path / "t.parquet", key="k", value="v")
    assert ds.num_partitions == 3
    expected = collections.Counter()
    for k, v in zip(keys.tolist(), values.tolist()):
        expected[k] += v
    assert dict(ds.reduce_by_key("sum", 2).collect()) == dict(expected)
    with pytest.raises(BatchSchemaError, match="missing"):
        ctx.from_parquet(tmp_path / "t.parquet", key="nope", value="v")
