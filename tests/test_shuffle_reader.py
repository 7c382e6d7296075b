"""The reader end to end over real map outputs: ranges, combining, ordering, grouping, clean-up."""

import operator
import pickle
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shuffle import Aggregator, HashPartitioner, RangePartitioner, ShuffleDependency, SortShuffleManager
from shuffle.errors import ShuffleError
from shuffle.read.group import ResultIterable

BASE = {"spark.shuffle.sync": "false", "spark.executor.memory": "64m"}
SUM = Aggregator.from_reduce(operator.add)


def write_maps(manager, dep, maps):
    handle = manager.register_shuffle(dep)
    for map_id, records in enumerate(maps):
        manager.get_writer(handle, map_id).write(records)
    return handle


def no_temp_files(directory):
    return not [p.name for p in directory.iterdir() if p.name.startswith("temp_")]


def maps_of(n_maps, n_records, keys=50):
    return [[(i % keys, m * 100000 + i) for i in range(n_records)] for m in range(n_maps)]


def test_reading_subsets_of_partitions_and_maps(tmp_path):
    maps = maps_of(4, 300)
    partitioner = HashPartitioner(6)
    with SortShuffleManager(BASE, local_dir=tmp_path) as manager:
        handle = write_maps(manager, ShuffleDependency(0, 4, partitioner), maps)
        for start, end, start_map, end_map in [(0, 6, 0, 4), (2, 4, 0, 4), (0, 6, 1, 3), (5, 6, 3, 4)]:
            reader = manager.get_reader(handle, start, end, start_map, end_map)
            got = sorted(reader.read())
            expected = sorted(r for m in maps[start_map:end_map] for r in m
                              if start <= partitioner.get_partition(r[0]) < end)
            assert got == expected
            assert reader.metrics.records_read == len(expected)
            assert reader.metrics.local_blocks_fetched > 0 and reader.metrics.bytes_read > 0


def test_bad_ranges_are_refused(tmp_path):
    with SortShuffleManager(BASE, local_dir=tmp_path) as manager:
        handle = write_maps(manager, ShuffleDependency(0, 1, HashPartitioner(3)), [[(1, 1)]])
        for args in [(2, 2), (0, 4), (-1, 1), (0, 3, 0, 2)]:
            with pytest.raises(ShuffleError):
                manager.get_reader(handle, *args)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.tuples(st.one_of(st.integers(-5, 5), st.text(max_size=2)), st.integers(-100, 100)),
                        max_size=200),
       combine=st.booleans(), force=st.sampled_from([None, 1, 7]))
def test_aggregation_equals_a_dict_oracle(tmp_path_factory, records, combine, force):
    conf = dict(BASE)
    if force:
        conf["spark.shuffle.spill.numElementsForceSpillThreshold"] = str(force)
    tmp = tmp_path_factory.mktemp("agg")
    half = len(records) // 2
    with SortShuffleManager(conf, local_dir=tmp) as manager:
        dep = ShuffleDependency(0, 2, HashPartitioner(3), aggregator=SUM, map_side_combine=combine)
        handle = write_maps(manager, dep, [records[:half], records[half:]])
        got = {}
        for p in range(3):
            for key, value in manager.get_reader(handle, p, p + 1).read():
                assert key not in got
                got[key] = value
        expected = defaultdict(int)
        for key, value in records:
            expected[key] += value
        assert got == dict(expected)
        assert no_temp_files(tmp)


def test_small_budget_spills_on_the_reduce_side_and_stays_exact(tmp_path):
    conf = {**BASE, "spark.shuffle.spill.numElementsForceSpillThreshold": "500"}
    maps = maps_of(3, 4000, keys=3000)
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 3, HashPartitioner(2), aggregator=SUM, map_side_combine=False)
        handle = write_maps(manager, dep, maps)
        reader = manager.get_reader(handle, 0, 2)
        got = dict(reader.read())
        expected = defaultdict(int)
        for m in maps:
            for k, v in m:
                expected[k] += v
        assert got == dict(expected)
        assert reader.metrics.spill_count > 0 and reader.metrics.disk_bytes_spilled > 0
        assert no_temp_files(tmp_path)


@pytest.mark.parametrize("ascending", [True, False])
def test_key_ordering_is_complete_and_ordered_across_spills(tmp_path, ascending):
    conf = {**BASE, "spark.shuffle.spill.numElementsForceSpillThreshold": "300"}
    maps = [[((i * 7919 + m) % 2000, i) for i in range(1500)] for m in range(3)]
    sample = [k for m in maps for k, _ in m[::50]]
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        partitioner = RangePartitioner(3, sample, ascending=ascending)
        dep = ShuffleDependency(0, 3, partitioner, key_ordering=True, ascending=ascending)
        handle = write_maps(manager, dep, maps)
        out = []
        for p in range(3):
            out.extend(manager.get_reader(handle, p, p + 1).read())
        keys = [k for k, _ in out]
        assert keys == sorted(keys, reverse=not ascending)
        assert sorted(out) == sorted(r for m in maps for r in m)


def test_group_by_key_spills_a_hot_keys_values_and_keeps_colliding_keys_apart(tmp_path):
    conf = {**BASE, "spark.shuffle.spill.numElementsForceSpillThreshold": "100"}
    hot = [("hot", i) for i in range(5000)]
    colliding = [(-1, "minus one"), (-2, "minus two"), (-1, "again")]   # hash(-1) == hash(-2) in CPython
    rest = [(i % 40, i) for i in range(800)]
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 2, HashPartitioner(1), aggregator=Aggregator.for_group_by())
        handle = write_maps(manager, dep, [hot[:2500] + colliding + rest, hot[2500:]])
        groups = dict(manager.get_reader(handle, 0, 1).read())
        assert isinstance(groups["hot"], ResultIterable)
        assert len(groups["hot"]) == 5000 and groups["hot"].data.spilled >= 4900
        assert sorted(groups["hot"]) == list(range(5000))
        assert sorted(groups["hot"]) == sorted(groups["hot"])        # re-iterable
        assert sorted(groups[-1]) == ["again", "minus one"] and list(groups[-2]) == ["minus two"]
        assert all(sorted(groups[k]) == [i for i in range(800) if i % 40 == k] for k in range(40))
        assert pickle.loads(pickle.dumps(groups["hot"])) == groups["hot"]
        del groups
        import gc
        gc.collect()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("temp_")]


def test_early_stop_and_errors_leave_no_temp_files(tmp_path):
    conf = {**BASE, "spark.shuffle.spill.numElementsForceSpillThreshold": "50"}
    maps = maps_of(2, 2000, keys=1500)
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 2, HashPartitioner(1), aggregator=SUM)
        handle = write_maps(manager, dep, maps)
        stream = manager.get_reader(handle, 0, 1).read()
        for _ in zip(range(5), stream):
            pass
        stream.close()
        assert no_temp_files(tmp_path)
        manager.resolver.data_file(0, 1).unlink()
        with pytest.raises(ShuffleError):
            list(manager.get_reader(handle, 0, 1).read())
        assert no_temp_files(tmp_path)
        assert manager.memory_pool.memory_used == 0
