"""The spilling group-by: ExternalList, ResultIterable, the grouping walk and ExternalGroupBy."""

import gc
import pickle
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.errors import ShuffleError
from shuffle.kernels import load
from shuffle.memory import ExecutionMemoryPool, TaskMemoryManager
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.pickle_serializer import PickleSerializer
from shuffle.read.group import ExternalGroupBy, ExternalList, ResultIterable, SpillTally, group_sorted

portable_hash = load("hashing").portable_hash
FORMAT = BlockFormat.for_spills(ShuffleConf(), MsgpackSerializer())
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def files(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def path_factory(directory):
    return lambda: Path(directory) / f"temp_shuffle_{uuid.uuid4()}"


def external_list(directory, max_values=1 << 30, max_bytes=1 << 30, batch_size=10, tally=None, fmt=FORMAT):
    return ExternalList(fmt, path_factory(directory), max_values=max_values, max_bytes=max_bytes,
                        batch_size=batch_size, tally=tally)


def oracle_groups(records):
    groups = defaultdict(list)
    for key, value in records:
        groups[key].append(value)
    return dict(groups)


# ---------------------------------------------------------------------- ExternalList


def test_external_list_below_its_limit_stays_in_memory_and_writes_no_file(tmp_path):
    values = external_list(tmp_path, max_values=10)
    values.extend(range(10))
    assert list(values) == list(range(10)) and len(values) == 10
    assert values.spilled == 0 and values.path is None and files(tmp_path) == []


def test_external_list_spills_beyond_its_limit_and_reads_everything_back_in_order(tmp_path):
    tally = SpillTally()
    values = external_list(tmp_path, max_values=100, batch_size=7, tally=tally)
    values.extend(range(1000))
    values.append(1000)
    assert len(values) == 1001
    assert values.spilled == 1000 and values.path is not None and values.path.exists()
    assert list(values) == list(range(1001))
    assert list(values) == list(range(1001))  # re-iterable
    assert tally.spill_count == 10 and tally.disk_bytes_spilled == values.path.stat().st_size > 0
    assert tally.memory_bytes_spilled > 0


def test_external_list_limit_by_bytes_spills_large_values(tmp_path):
    values = external_list(tmp_path, max_bytes=50_000)
    big = [bytes([i]) * 10_000 for i in range(20)]
    values.extend(big)
    assert values.spilled >= 15
    assert list(values) == big


@HYPOTHESIS
@given(chunks=st.lists(st.lists(st.one_of(st.integers(), st.text(max_size=3), st.tuples(st.integers())),
                                max_size=30), max_size=10),
       limit=st.integers(1, 12), batch=st.integers(1, 5), use_append=st.booleans())
def test_external_list_equals_a_list_whatever_the_limits(tmp_path_factory, chunks, limit, batch, use_append):
    directory = tmp_path_factory.mktemp("list")
    values = external_list(directory, max_values=limit, batch_size=batch)
    expected = []
    for chunk in chunks:
        if use_append:
            for v in chunk:
                values.append(v)
        else:
            values.extend(iter(chunk))
        expected.extend(chunk)
    assert list(values) == expected and len(values) == len(expected)
    assert len(values) - values.spilled <= limit
    del values
    gc.collect()
    assert files(directory) == []


def test_external_list_keeps_types_through_its_file(tmp_path):
    values = external_list(tmp_path, max_values=2, fmt=BlockFormat.for_spills(ShuffleConf(), PickleSerializer()))
    expected = [(1, 2), [3], b"x", {"a": 1}, None, 2.5]
    values.extend(expected)
    assert values.spilled == 4
    assert list(values) == expected


def test_deleting_an_external_list_removes_its_file_and_refuses_to_read_partially(tmp_path):
    values = external_list(tmp_path, max_values=3)
    values.extend(range(10))
    path = values.path
    assert path.exists()
    values.delete()
    assert not path.exists()
    with pytest.raises(ShuffleError, match="deleted"):
        list(values)
    assert len(values) == 10


def test_a_garbage_collected_external_list_deletes_its_file(tmp_path):
    values = external_list(tmp_path, max_values=3)
    values.extend(range(10))
    assert files(tmp_path)
    del values
    gc.collect()
    assert files(tmp_path) == []


def test_an_external_list_pickles_as_a_plain_list(tmp_path):
    values = external_list(tmp_path, max_values=3)
    values.extend(range(10))
    assert pickle.loads(pickle.dumps(values)) == list(range(10))


def test_external_list_refuses_non_positive_limits(tmp_path):
    with pytest.raises(ValueError):
        external_list(tmp_path, max_values=0)


# ---------------------------------------------------------------------- ResultIterable


def test_result_iterable_is_sized_reiterable_and_pickles_over_a_list(tmp_path):
    values = external_list(tmp_path, max_values=4)
    values.extend(range(50))
    group = ResultIterable(values)
    assert len(group) == 50 and list(group) == list(range(50)) and list(group) == list(range(50))
    copy = pickle.loads(pickle.dumps(group))
    assert isinstance(copy, ResultIterable) and type(copy.data) is list
    assert copy == group and copy != ResultIterable([1])


def test_result_iterable_repr_shows_values_and_abbreviates_long_groups():
    assert repr(ResultIterable([1, "a"])) == "ResultIterable([1, 'a'])"
    long = repr(ResultIterable(list(range(1000))))
    assert long == "ResultIterable([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and 990 more)"


# ---------------------------------------------------------------------- group_sorted


def hash_sorted(records):
    return sorted(records, key=lambda r: portable_hash(r[0]))  # stable: values keep their order


@HYPOTHESIS
@given(records=st.lists(st.tuples(st.one_of(st.integers(-4, 4), st.sampled_from(["a", "b", ""]), st.none()),
                                  st.integers()), max_size=80),
       limit=st.integers(1, 5))
def test_grouping_a_hash_sorted_stream_equals_a_dict_of_lists(tmp_path_factory, records, limit):
    directory = tmp_path_factory.mktemp("walk")
    got = {}
    for key, values in group_sorted(hash_sorted(records), portable_hash,
                                    lambda: external_list(directory, max_values=limit)):
        assert key not in got  # one group per key
        got[key] = list(values)
    assert got == oracle_groups(records)  # values in read order, not only as multisets


def test_keys_with_one_hash_interleaved_are_kept_apart():
    assert portable_hash(-1) == portable_hash(-2)
    records = [(-1, "a"), (-2, "b"), (-1, "c"), (-2, "d"), (-1, "e")]
    walk = group_sorted(records, portable_hash, list_factory_in_memory)
    assert [(k, list(v)) for k, v in walk] == [(-1, ["a", "c", "e"]), (-2, ["b", "d"])]


def list_factory_in_memory():
    return ExternalList(FORMAT, _no_path, max_values=1 << 30, max_bytes=1 << 30, batch_size=10)


def _no_path():
    raise AssertionError("nothing should spill")


def test_rank_is_computed_once_per_run_of_equal_keys():
    calls = []

    def rank(key):
        calls.append(key)
        return portable_hash(key)

    records = hash_sorted([(k, i) for k in (1, 2, 3) for i in range(1000)])
    groups = dict(group_sorted(records, rank, list_factory_in_memory))
    assert sorted(calls) == [1, 2, 3] and len(groups[2]) == 1000


def test_closing_the_walk_early_deletes_groups_not_handed_out(tmp_path):
    made = []

    def new_list():
        made.append(external_list(tmp_path, max_values=2))
        return made[-1]

    records = [(-1, i) for i in range(5)] + [(-2, i) for i in range(5)] + [(7, i) for i in range(5)]
    walk = group_sorted(records, portable_hash, new_list)
    key, first = next(walk)  # -1 and -2 share a hash: both were built before -1 was handed out
    walk.close()
    assert key == -1 and list(first) == list(range(5))  # handed out: still readable
    assert [p.exists() for p in (made[0].path, made[1].path)] == [True, False]


def test_an_error_during_the_walk_deletes_the_groups_being_built(tmp_path):
    made = []

    def new_list():
        made.append(external_list(tmp_path, max_values=2))
        return made[-1]

    def records():
        yield from ((5, i) for i in range(10))
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(group_sorted(records(), portable_hash, new_list))
    assert made and files(tmp_path) == []


# ---------------------------------------------------------------------- ExternalGroupBy


def make_grouper(directory, conf=None, pool=1 << 30, **kwargs):
    conf = ShuffleConf(conf or {})
    memory = TaskMemoryManager(ExecutionMemoryPool(pool), task_id=0)
    grouper = ExternalGroupBy(memory, conf, BlockFormat.for_spills(conf, MsgpackSerializer()),
                              path_factory(directory), **kwargs)
    return grouper, memory


def test_group_by_spills_runs_and_a_hot_keys_values_and_stays_exact(tmp_path):
    conf = {"spark.shuffle.spill.numElementsForceSpillThreshold": "50", "spark.shuffle.spill.batchSize": "16"}
    records = [("hot", i) for i in range(3000)] + [(i % 30, i) for i in range(600)] + [(-1, "x"), (-2, "y")]
    records = records[::2] + records[1::2]  # spread the hot key over every sorter spill
    grouper, memory = make_grouper(tmp_path, conf)
    grouper.insert_all(records)
    groups = {k: v for k, v in grouper.groups()}
    grouper.stop()
    assert {k: list(v) for k, v in groups.items()} == oracle_groups(records)
    assert groups["hot"].data.spilled >= 2950
    assert grouper.spill_count > 60 and grouper.disk_bytes_spilled > 0 and grouper.memory_bytes_spilled > 0
    assert memory.memory_used == 0
    assert len(files(tmp_path)) == 1  # only the hot key's file: sort spills are gone
    grouper.delete_groups()
    assert files(tmp_path) == []
    with pytest.raises(ShuffleError):
        list(groups["hot"])


def test_a_small_memory_pool_bounds_the_values_a_group_keeps_in_memory(tmp_path):
    grouper, _ = make_grouper(tmp_path, pool=1 << 20)  # a group may keep 128 KiB
    grouper.insert_all(("k", "v" * 1000 + str(i)) for i in range(1000))
    [(key, values)] = list(grouper.groups())
    grouper.stop()
    assert len(values) == 1000 and values.data.spilled >= 800
    assert sorted(values) == sorted("v" * 1000 + str(i) for i in range(1000))


@pytest.mark.parametrize("ascending", [True, False])
def test_group_by_with_key_ordering_hands_out_groups_in_key_order(tmp_path, ascending):
    conf = {"spark.shuffle.spill.numElementsForceSpillThreshold": "40"}
    records = [((i * 37) % 101, i) for i in range(1000)]
    grouper, _ = make_grouper(tmp_path, conf, key_ordering=True, ascending=ascending)
    grouper.insert_all(records)
    out = [(k, list(v)) for k, v in grouper.groups()]
    grouper.stop()
    assert [k for k, _ in out] == sorted(oracle_groups(records), reverse=not ascending)
    assert dict(out) == oracle_groups(records)


def test_group_by_with_a_sort_key_keeps_keys_of_equal_rank_apart(tmp_path):
    records = [("A", 1), ("b", 2), ("a", 3), ("B", 4), ("A", 5)]
    grouper, _ = make_grouper(tmp_path, key_ordering=True, sort_key=str.lower)
    grouper.insert_all(records)
    out = [(k, list(v)) for k, v in grouper.groups()]
    grouper.stop()
    assert out == [("A", [1, 5]), ("a", [3]), ("b", [2]), ("B", [4])]


def test_stopping_the_group_by_mid_walk_deletes_everything_not_handed_out(tmp_path):
    conf = {"spark.shuffle.spill.numElementsForceSpillThreshold": "20"}
    grouper, memory = make_grouper(tmp_path, conf)
    grouper.insert_all((i % 50, i) for i in range(2000))
    walk = grouper.groups()
    key, values = next(walk)
    grouper.stop()
    assert len(values) == 40 and memory.memory_used == 0
    del values, walk
    gc.collect()
    assert files(tmp_path) == []
