"""ShuffleReader over real map outputs: ranges, combining, ordering, grouping, metrics and clean-up."""

import gc
import operator
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shuffle.aggregator import Aggregator
from shuffle.dependency import ShuffleDependency
from shuffle.errors import FetchFailedError, ShuffleError
from shuffle.kernels import load
from shuffle.manager import SortShuffleManager
from shuffle.map_output import MapOutputTracker
from shuffle.partitioner import HashPartitioner, RangePartitioner
from shuffle.pickle_serializer import PickleSerializer
from shuffle.read.group import ResultIterable

portable_hash = load("hashing").portable_hash
BASE = {"spark.shuffle.sync": "false", "spark.executor.memory": "64m"}
SUM = Aggregator.from_reduce(operator.add)
GROUP = Aggregator.for_group_by()
HYPOTHESIS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def forced(threshold, **more):
    return {**BASE, "spark.shuffle.spill.numElementsForceSpillThreshold": str(threshold), **more}


def write_maps(manager, dep, maps):
    handle = manager.register_shuffle(dep)
    statuses = [manager.get_writer(handle, map_id).write(iter(records)) for map_id, records in enumerate(maps)]
    return handle, statuses


def temp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith("temp_")]


def maps_of(n_maps, n_records, keys=50):
    return [[(i % keys, m * 100_000 + i) for i in range(n_records)] for m in range(n_maps)]


def read_all(manager, handle, num_partitions):
    out = []
    for p in range(num_partitions):
        out.extend(manager.get_reader(handle, p, p + 1).read())
    return out


def sums(records):
    expected = defaultdict(int)
    for key, value in records:
        expected[key] += value
    return dict(expected)


def groups_of(records):
    expected = defaultdict(list)
    for key, value in records:
        expected[key].append(value)
    return dict(expected)


# ---------------------------------------------------------------------- ranges and metrics


def test_subsets_of_partitions_and_maps_equal_an_oracle_and_metrics_add_up(tmp_path):
    maps = maps_of(4, 300)
    partitioner = HashPartitioner(6)
    with SortShuffleManager(BASE, local_dir=tmp_path) as manager:
        handle, statuses = write_maps(manager, ShuffleDependency(0, 4, partitioner), maps)
        for start, end, start_map, end_map in [(0, 6, 0, None), (2, 4, 0, 4), (0, 6, 1, 3), (5, 6, 3, 4)]:
            reader = manager.get_reader(handle, start, end, start_map, end_map)
            got = list(reader.read())
            chosen = maps[start_map:end_map]
            expected = [r for m in chosen for r in m if start <= partitioner.get_partition(r[0]) < end]
            assert Counter(got) == Counter(expected)
            lengths = [n for s in statuses[start_map:end_map] for n in s.partition_lengths[start:end]]
            m = reader.metrics
            assert m.records_read == len(expected)
            assert m.bytes_read == sum(lengths)
            assert m.local_blocks_fetched == sum(1 for n in lengths if n > 0) and m.remote_blocks_fetched == 0
            assert m.spill_count == 0


def test_a_partition_no_map_wrote_to_reads_as_nothing(tmp_path):
    with SortShuffleManager(BASE, local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(4)), [[(0, "a")], [(4, "b")]])
        reader = manager.get_reader(handle, 1, 4)
        assert list(reader.read()) == []
        assert reader.metrics.records_read == 0 and reader.metrics.local_blocks_fetched == 0


@pytest.mark.parametrize("args", [(2, 2), (3, 2), (0, 4), (-1, 1), (0, 3, 0, 3), (0, 3, 2, 2), (0, 3, -1, 1),
                                  (0, 3, 2, None), (0.0, 1), (False, 1), (0, 3, 0, 1.5)])
def test_bad_ranges_are_refused_with_a_shuffle_error(tmp_path, args):
    with SortShuffleManager(BASE, local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(3)), [[(1, 1)], [(2, 2)]])
        with pytest.raises(ShuffleError, match=r"shuffle 0|must be an int"):
            manager.get_reader(handle, *args)


def test_a_reader_reads_once(tmp_path):
    with SortShuffleManager(BASE, local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 1, HashPartitioner(1)), [[(1, 1)]])
        reader = manager.get_reader(handle, 0, 1)
        assert list(reader.read()) == [(1, 1)]
        with pytest.raises(ShuffleError, match="once"):
            reader.read()


def test_blocks_of_another_executor_are_fetched_remotely_and_counted(tmp_path):
    conf = {**BASE, "spark.shuffle.readHostLocalDisk": "false"}
    maps = maps_of(2, 200)
    tracker = MapOutputTracker()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with SortShuffleManager(conf, local_dir=tmp_path / "a", executor_id="a", tracker=tracker) as writer_side, \
            SortShuffleManager(conf, local_dir=tmp_path / "b", executor_id="b", tracker=tracker) as reader_side:
        dep = ShuffleDependency(0, 2, HashPartitioner(3), aggregator=SUM)
        handle, statuses = write_maps(writer_side, dep, maps)
        reader = reader_side.get_reader(reader_side.register_shuffle(dep), 0, 3)
        assert dict(reader.read()) == sums(r for m in maps for r in m)
        m = reader.metrics
        assert m.local_blocks_fetched == 0 and m.remote_blocks_fetched == 6
        assert m.bytes_read == sum(sum(s.partition_lengths) for s in statuses)
        assert m.records_read == 400


# ---------------------------------------------------------------------- combining


@HYPOTHESIS
@given(records=st.lists(st.tuples(st.one_of(st.integers(-5, 5), st.text(max_size=2)), st.integers(-100, 100)),
                        max_size=200),
       map_side_combine=st.booleans(), force=st.sampled_from([None, 1, 7]), num_maps=st.integers(1, 3))
def test_aggregation_equals_a_dict_oracle(tmp_path_factory, records, map_side_combine, force, num_maps):
    conf = forced(force) if force else BASE
    tmp = tmp_path_factory.mktemp("agg")
    maps = [records[i::num_maps] for i in range(num_maps)]
    with SortShuffleManager(conf, local_dir=tmp) as manager:
        dep = ShuffleDependency(0, num_maps, HashPartitioner(3), aggregator=SUM, map_side_combine=map_side_combine)
        handle, _ = write_maps(manager, dep, maps)
        got = read_all(manager, handle, 3)
        assert len(got) == len(dict(got))  # one record per key
        assert dict(got) == sums(records)
        assert temp_files(tmp) == []


def test_map_side_combined_outputs_are_merged_as_combiners(tmp_path):
    # combine_by_key into (count, total): merging combiners is not merging values.
    average = Aggregator(lambda v: (1, v), lambda c, v: (c[0] + 1, c[1] + v),
                         lambda a, b: (a[0] + b[0], a[1] + b[1]))
    maps = maps_of(3, 500, keys=7)
    with SortShuffleManager(forced(5), local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 3, HashPartitioner(2), aggregator=average, map_side_combine=True)
        handle, _ = write_maps(manager, dep, maps)
        got = dict(read_all(manager, handle, 2))
    flat = [r for m in maps for r in m]
    assert got == {k: (sum(1 for q, _ in flat if q == k), total) for k, total in sums(flat).items()}


def test_forced_spills_on_the_reduce_side_are_exact_and_counted(tmp_path):
    maps = maps_of(3, 4000, keys=3000)
    with SortShuffleManager(forced(500), local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 3, HashPartitioner(2), aggregator=SUM), maps)
        reader = manager.get_reader(handle, 0, 2)
        assert dict(reader.read()) == sums(r for m in maps for r in m)
        m = reader.metrics
        assert m.spill_count >= 12000 // 501 and m.disk_bytes_spilled > 0 and m.memory_bytes_spilled > 0
        assert m.records_read == 12000
        assert temp_files(tmp_path) == [] and manager.memory_pool.memory_used == 0


def test_a_small_memory_budget_makes_the_reader_spill(tmp_path):
    conf = {**BASE, "spark.executor.memory": "2m", "spark.shuffle.spill.initialMemoryThreshold": "32k"}
    maps = [[(f"key-{i}-{m}", "x" * 50) for i in range(3000)] for m in range(2)]
    concat = Aggregator(lambda v: v, operator.add, operator.add)
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(1), aggregator=concat), maps)
        reader = manager.get_reader(handle, 0, 1)
        got = dict(reader.read())
        assert got == {k: v for m in maps for k, v in m}
        assert reader.metrics.spill_count > 0
        assert temp_files(tmp_path) == [] and manager.memory_pool.memory_used == 0


# ---------------------------------------------------------------------- ordering


@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("aggregate", [False, True])
def test_key_ordering_is_complete_and_ordered_across_spills(tmp_path, ascending, aggregate):
    maps = [[((i * 7919 + m) % 2000, i) for i in range(1500)] for m in range(3)]
    sample = [k for m in maps for k, _ in m[::50]]
    flat = [r for m in maps for r in m]
    with SortShuffleManager(forced(300), local_dir=tmp_path) as manager:
        partitioner = RangePartitioner(3, sample, ascending=ascending)
        dep = ShuffleDependency(0, 3, partitioner, aggregator=SUM if aggregate else None,
                                key_ordering=True, ascending=ascending)
        handle, _ = write_maps(manager, dep, maps)
        readers = [manager.get_reader(handle, p, p + 1) for p in range(3)]
        out = [r for reader in readers for r in reader.read()]
        keys = [k for k, _ in out]
        assert keys == sorted(keys, reverse=not ascending)
        if aggregate:
            assert dict(out) == sums(flat) and len(out) == len(set(keys))
        else:
            assert Counter(out) == Counter(flat)
        assert sum(r.metrics.spill_count for r in readers) > 0
        assert temp_files(tmp_path) == []


def test_key_ordering_follows_the_dependencys_sort_key(tmp_path):
    words = ["b", "A", "c", "B", "a", "C"] * 50
    with SortShuffleManager(forced(40), local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 2, HashPartitioner(1), key_ordering=True, sort_key=str.lower)
        handle, _ = write_maps(manager, dep, [[(w, i) for i, w in enumerate(words)]] * 2)
        keys = [k for k, _ in manager.get_reader(handle, 0, 1).read()]
        assert [k.lower() for k in keys] == sorted(k.lower() for k in keys) and len(keys) == 600


# ---------------------------------------------------------------------- group_by_key


@HYPOTHESIS
@given(records=st.lists(st.tuples(st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"])), st.integers()),
                        max_size=150),
       force=st.sampled_from([None, 2, 9]))
def test_group_by_key_equals_an_oracle(tmp_path_factory, records, force):
    tmp = tmp_path_factory.mktemp("group")
    with SortShuffleManager(forced(force) if force else BASE, local_dir=tmp) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(2), aggregator=GROUP),
                               [records[::2], records[1::2]])
        pairs = read_all(manager, handle, 2)
        assert all(isinstance(values, ResultIterable) for _, values in pairs)
        assert len({key for key, _ in pairs}) == len(pairs)  # one group per key
        assert {k: Counter(v) for k, v in pairs} == {k: Counter(v) for k, v in groups_of(records).items()}
        del pairs
        gc.collect()
        assert temp_files(tmp) == []


def test_group_by_key_spills_a_hot_keys_values_and_keeps_colliding_keys_apart(tmp_path):
    assert portable_hash(-1) == portable_hash(-2)
    hot = [("hot", i) for i in range(5000)]
    colliding = [(-1, "minus one"), (-2, "minus two"), (-1, "again")]
    rest = [(i % 40, i) for i in range(800)]
    maps = [hot[:2500] + colliding + rest, hot[2500:]]
    with SortShuffleManager(forced(100), local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(1), aggregator=GROUP), maps)
        reader = manager.get_reader(handle, 0, 1)
        groups = dict(reader.read())
        assert groups["hot"].data.spilled >= 4900 and len(groups["hot"]) == 5000
        assert list(groups["hot"]) == list(range(5000))  # read order: map 0's values, then map 1's
        assert sorted(groups[-1]) == ["again", "minus one"] and list(groups[-2]) == ["minus two"]
        assert {k: sorted(groups[k]) for k in range(40)} == {k: list(range(k, 800, 40)) for k in range(40)}
        assert reader.metrics.spill_count > 0 and reader.metrics.records_read == 5803
        assert len(temp_files(tmp_path)) == 1  # the hot key's values, until the group is collected
        del groups
        gc.collect()
        assert temp_files(tmp_path) == []


def test_closing_the_reader_deletes_the_files_of_groups_it_handed_out(tmp_path):
    with SortShuffleManager(forced(10), local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 1, HashPartitioner(1), aggregator=GROUP),
                               [[("k", i) for i in range(100)]])
        with manager.get_reader(handle, 0, 1) as reader:
            [(key, values)] = list(reader.read())
            assert len(temp_files(tmp_path)) == 1 and sorted(values) == list(range(100))
        assert temp_files(tmp_path) == []
        with pytest.raises(ShuffleError, match="closed"):
            list(values)


def test_group_by_key_with_map_side_combine_groups_the_maps_lists(tmp_path):
    maps = maps_of(3, 90, keys=4)
    with SortShuffleManager(forced(8), local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 3, HashPartitioner(2), aggregator=GROUP, map_side_combine=True)
        handle, _ = write_maps(manager, dep, maps)
        got = {k: sorted(v) for k, v in read_all(manager, handle, 2)}
    assert got == {k: sorted(v) for k, v in groups_of(r for m in maps for r in m).items()}


@pytest.mark.parametrize("ascending", [True, False])
def test_group_by_key_with_key_ordering_hands_out_keys_in_order(tmp_path, ascending):
    maps = [[((i * 31) % 97, i) for i in range(400)] for _ in range(2)]
    with SortShuffleManager(forced(50), local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 2, HashPartitioner(1), aggregator=GROUP, key_ordering=True, ascending=ascending)
        handle, _ = write_maps(manager, dep, maps)
        out = list(manager.get_reader(handle, 0, 1).read())
        assert [k for k, _ in out] == sorted(range(97), reverse=not ascending)
        assert {k: Counter(v) for k, v in out} == {k: Counter(v) for k, v in groups_of(maps[0] + maps[1]).items()}


# ---------------------------------------------------------------------- clean-up


@pytest.mark.parametrize("aggregator", [None, SUM, GROUP], ids=["plain", "combine", "group"])
def test_a_consumer_that_stops_early_leaves_no_temp_file(tmp_path, aggregator):
    maps = [[(i % 1500, i) for i in range(2000)] for _ in range(2)]
    with SortShuffleManager(forced(50, **{"spark.shuffle.spill.batchSize": "20"}), local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 2, HashPartitioner(1), aggregator=aggregator, key_ordering=aggregator is None)
        handle, _ = write_maps(manager, dep, maps)
        reader = manager.get_reader(handle, 0, 1)
        for n, _ in enumerate(reader.read()):
            if n == 5:
                break
        gc.collect()  # the loop's last group may hold a file until it is collected
        assert temp_files(tmp_path) == [] and manager.memory_pool.memory_used == 0
        assert reader.metrics.spill_count > 0 and reader.metrics.records_read == 4000


def test_an_exception_mid_read_leaves_no_temp_file(tmp_path):
    calls = []

    def merge(a, b):
        calls.append(1)
        if len(calls) == 1000:
            raise ValueError("merge failed")
        return a + b

    failing = Aggregator(lambda v: v, merge, merge)
    with SortShuffleManager(forced(50), local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(1), aggregator=failing),
                               maps_of(2, 2000, keys=100))
        with pytest.raises(ValueError, match="merge failed"):
            list(manager.get_reader(handle, 0, 1).read())
        assert temp_files(tmp_path) == [] and manager.memory_pool.memory_used == 0


def test_a_missing_map_output_fails_the_read_and_leaves_no_temp_file(tmp_path):
    with SortShuffleManager(forced(50), local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 2, HashPartitioner(1), aggregator=GROUP),
                               maps_of(2, 2000, keys=5))
        manager.resolver.data_file(0, 1).unlink()
        reader = manager.get_reader(handle, 0, 1)
        with pytest.raises(FetchFailedError):
            list(reader.read())
        gc.collect()
        assert temp_files(tmp_path) == [] and manager.memory_pool.memory_used == 0
        assert reader.metrics.records_read == 2000  # map 0's, before map 1 failed


def test_records_keep_their_types_through_the_reader(tmp_path):
    records = [((1, "a"), [1, 2]), (b"k", (3, 4)), ("s", {"d": 1}), (2.5, None)]
    with SortShuffleManager(forced(1), local_dir=tmp_path) as manager:
        handle, _ = write_maps(manager, ShuffleDependency(0, 1, HashPartitioner(2), serializer=PickleSerializer(),
                                                          aggregator=GROUP), [records])
        got = {k: list(v) for k, v in read_all(manager, handle, 2)}
    assert got == {k: [v] for k, v in records}
    assert type(got[b"k"][0]) is tuple and type(got[(1, "a")][0]) is list
