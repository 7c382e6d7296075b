import collections
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle.aggregator import Aggregator
from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.errors import ConfigError, SerializationError, ShuffleError
from shuffle.kernels import load
from shuffle.memory import ExecutionMemoryPool, MemoryConsumer, TaskMemoryManager
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.pickle_serializer import PickleSerializer
from shuffle.write.external_sorter import ExternalSorter

portable_hash = load("hashing").portable_hash
SUM = Aggregator.from_reduce(lambda a, b: a + b)
NO_FORCE = 2**31 - 1


def make_sorter(spill_dir, conf=None, pool_size=1 << 30, serializer=None, num_partitions=1, **kwargs):
    conf = ShuffleConf(conf or {})
    memory = TaskMemoryManager(ExecutionMemoryPool(pool_size), task_id=0)
    spill_format = BlockFormat.for_spills(conf, serializer or MsgpackSerializer())
    spill_dir = Path(spill_dir)
    partitioner = HashPartitioner(num_partitions)
    kwargs.setdefault("partition_ids", partitioner.partition_ids)
    sorter = ExternalSorter(
        memory, conf, spill_format, lambda: spill_dir / f"spill_{uuid.uuid4().hex}",
        num_partitions=num_partitions, **kwargs,
    )
    return sorter, partitioner


def forced(threshold, **more):
    return {"spark.shuffle.spill.numElementsForceSpillThreshold": str(threshold), **more}


def oracle(records, partitioner, aggregator=None, key_ordering=False, ascending=True, sort_key=None):
    """Partition -> expected records (for an aggregator: combined, in key-sorted order)."""
    by_partition = collections.defaultdict(list)
    for record in records:
        by_partition[partitioner.get_partition(record[0])].append(record)
    expected = {}
    for pid in sorted(by_partition):
        part = by_partition[pid]
        if aggregator is not None:
            combined = {}
            for key, value in part:
                combined[key] = aggregator.merge_value(combined[key], value) if key in combined \
                    else aggregator.create_combiner(value)
            part = list(combined.items())
        if key_ordering:
            rank = sort_key or (lambda k: k)
            part = sorted(part, key=lambda r: rank(r[0]), reverse=not ascending)
        expected[pid] = part
    return expected


def read_all(sorter):
    return {pid: list(records) for pid, records in sorter.partitioned_iterator()}


def canonical(output):
    """Per partition, the records as a sorted list: for outputs whose order within ties is free."""
    return {pid: sorted(records, key=repr) for pid, records in output.items()}


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(-20, 20), st.integers(-5, 5)), max_size=300),
    num_partitions=st.integers(1, 5),
    force=st.sampled_from([3, 17, 100, NO_FORCE]),
    combine=st.booleans(),
    key_ordering=st.booleans(),
    ascending=st.booleans(),
    fan_in=st.sampled_from([2, 3, 64]),
    batch_size=st.sampled_from([1, 7, 10000]),
)
def test_sorter_output_per_partition_equals_the_oracle(
    records, num_partitions, force, combine, key_ordering, ascending, fan_in, batch_size
):
    aggregator = SUM if combine else None
    conf = forced(force, **{"shuffle.sort.maxMergeFanIn": fan_in, "spark.shuffle.spill.batchSize": batch_size})
    with tempfile.TemporaryDirectory() as spill_dir:
        sorter, partitioner = make_sorter(spill_dir, conf, num_partitions=num_partitions, aggregator=aggregator,
                                          key_ordering=key_ordering, ascending=ascending)
        with sorter:
            sorter.insert_all(records)
            spilled = sorter.spill_count > 0
            output = read_all(sorter)
        assert list(Path(spill_dir).iterdir()) == []
    expected = oracle(records, partitioner, aggregator, key_ordering, ascending)
    assert list(output) == list(expected)  # non-empty partitions only, increasing
    if combine and not key_ordering:
        assert canonical(output) == canonical(expected)
        # Runs are hash-ordered so that spills merge; a lone in-memory run is left as it is.
        for part in output.values() if spilled else ():
            hashes = [portable_hash(k) for k, _ in part]
            assert hashes == sorted(hashes)
    else:
        assert output == expected  # insertion order, or a stable sort by key


@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("combine", [False, True])
def test_sort_key_orders_keys_within_partitions(tmp_path, ascending, combine):
    records = [(f"k{i % 37}" * (i % 5 + 1), i) for i in range(500)]
    aggregator = SUM if combine else None
    sorter, partitioner = make_sorter(tmp_path, forced(60), num_partitions=3, aggregator=aggregator,
                                      key_ordering=True, ascending=ascending, sort_key=len)
    with sorter:
        sorter.insert_all(records)
        output = read_all(sorter)
        assert sorter.spill_count == 8
    expected = oracle(records, partitioner, aggregator, True, ascending, sort_key=len)
    assert canonical(output) == canonical(expected)
    for part in output.values():
        lengths = [len(k) for k, _ in part]
        assert lengths == sorted(lengths, reverse=not ascending)


def test_one_forced_spill_then_memory_merge(tmp_path):
    records = [(i % 10, 1) for i in range(15)]
    sorter, partitioner = make_sorter(tmp_path, forced(9), num_partitions=2, aggregator=SUM)
    with sorter:
        sorter.insert_all(records)
        assert sorter.spill_count == 1 and len(list(tmp_path.iterdir())) == 1
        output = read_all(sorter)
    assert canonical(output) == canonical(oracle(records, partitioner, SUM))


def test_mixed_type_keys_combine_exactly_with_hash_collisions(tmp_path):
    # -1 and -2 share a portable_hash; 1, 1.0 and True are one dict key.
    assert portable_hash(-1) == portable_hash(-2)
    keys = [-1, -2, 1, 1.0, True, "a", b"a", (1, "x"), None, 2.5, "", frozenset({3})]
    records = [(keys[i % len(keys)], i) for i in range(2000)]
    sorter, partitioner = make_sorter(tmp_path, forced(50, **{"shuffle.sort.maxMergeFanIn": 4}),
                                      serializer=PickleSerializer(), num_partitions=3, aggregator=SUM)
    with sorter:
        sorter.insert_all(records)
        output = read_all(sorter)
        assert sorter.spill_count == 39
    assert canonical(output) == canonical(oracle(records, partitioner, SUM))
    combined = dict(record for part in output.values() for record in part)
    assert combined[-1] == sum(range(0, 2000, 12)) and combined[-2] == sum(range(1, 2000, 12))
    for part in output.values():
        hashes = [portable_hash(k) for k, _ in part]
        assert hashes == sorted(hashes)


def test_colliding_keys_only_are_kept_apart_through_many_spills(tmp_path):
    records = [(-1 - (i % 2), 1) for i in range(1000)]
    sorter, _ = make_sorter(tmp_path, forced(7), aggregator=SUM)
    with sorter:
        sorter.insert_all(records)
        assert dict(sorter.iterator()) == {-1: 500, -2: 500}


def test_more_spills_than_fan_in_merge_in_passes_with_bounded_open_files(tmp_path, monkeypatch):
    fan_in = 3
    records = [((i * 7919) % 211, i) for i in range(2000)]
    open_at_once = []
    original = ExternalSorter._open_reader

    def counting(self, spill):
        reader = original(self, spill)
        open_at_once.append(len(self._readers))
        return reader

    monkeypatch.setattr(ExternalSorter, "_open_reader", counting)
    sorter, partitioner = make_sorter(tmp_path, forced(29, **{"shuffle.sort.maxMergeFanIn": fan_in}),
                                      num_partitions=4, key_ordering=True)
    with sorter:
        sorter.insert_all(records)
        assert sorter.spill_count == 66
        partitions = sorter.partitioned_iterator()
        pid, first = next(partitions)
        # Intermediate merge files are gone: what is left fits one merge with memory.
        assert len(list(tmp_path.iterdir())) <= fan_in - 1
        output = {pid: list(first), **{p: list(part) for p, part in partitions}}
    assert max(open_at_once) <= fan_in
    assert output == oracle(records, partitioner, key_ordering=True)
    assert list(tmp_path.iterdir()) == []


def test_fan_in_below_two_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="maxMergeFanIn"):
        make_sorter(tmp_path, {"shuffle.sort.maxMergeFanIn": 1})


def test_spill_file_holds_independent_batches_of_batch_size_records(tmp_path):
    records = [(i, "v" * (i % 13)) for i in range(95)]
    conf = forced(94, **{"spark.shuffle.spill.batchSize": 20})
    sorter, _ = make_sorter(tmp_path, conf, num_partitions=4)
    sorter.insert_all(records)
    assert sorter.spill_count == 1
    (path,) = list(tmp_path.iterdir())
    (spill,) = sorter._spills
    data = path.read_bytes()
    assert len(data) == sum(spill.batch_sizes) and len(spill.batch_sizes) == 5
    offset, batches = 0, []
    for size in spill.batch_sizes:
        batches.append(list(sorter.spill_format.decode(data[offset:offset + size])))
        offset += size
    assert [len(b) for b in batches] == [20, 20, 20, 20, 15]
    flat = [record for batch in batches for record in batch]
    assert flat == sorted(records, key=lambda r: r[0] % 4)  # by partition, stable
    assert sum(spill.counts) == 95 and spill.parts == [0, 1, 2, 3]
    sorter.stop()
    assert not path.exists()


def test_spill_files_are_gone_after_stop_and_stop_is_idempotent(tmp_path):
    sorter, _ = make_sorter(tmp_path, forced(10), num_partitions=2, aggregator=SUM)
    sorter.insert_all((i, i) for i in range(100))
    assert len(list(tmp_path.iterdir())) == 9
    sorter.stop()
    sorter.stop()
    assert list(tmp_path.iterdir()) == []
    assert sorter.memory.memory_used == 0


def test_spill_files_are_gone_after_the_input_fails_half_way(tmp_path):
    def failing():
        for i in range(100):
            yield i, i
        raise RuntimeError("input broke")

    with pytest.raises(RuntimeError, match="input broke"):
        with make_sorter(tmp_path, forced(10))[0] as sorter:
            sorter.insert_all(failing())
    assert sorter.spill_count == 9
    assert list(tmp_path.iterdir()) == []


def test_spill_files_are_gone_when_reading_stops_half_way(tmp_path):
    sorter, _ = make_sorter(tmp_path, forced(10), num_partitions=5)
    sorter.insert_all((i, i) for i in range(100))
    partitions = sorter.partitioned_iterator()
    _, records = next(partitions)
    next(records)
    sorter.stop()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShuffleError, match="stopped"):
        next(partitions)


def test_incomparable_keys_raise_shuffle_error_naming_both_types_in_memory(tmp_path):
    sorter, _ = make_sorter(tmp_path, key_ordering=True)
    with sorter:
        sorter.insert_all([(1, 0), ("a", 0)])
        with pytest.raises(ShuffleError, match=r"str.*int|int.*str"):
            read_all(sorter)


def test_incomparable_keys_raise_shuffle_error_naming_both_types_in_the_merge(tmp_path):
    # Each spill is homogeneous: only the merge compares an int with a str.
    sorter, _ = make_sorter(tmp_path, forced(9), key_ordering=True, aggregator=SUM)
    with sorter:
        sorter.insert_all([(i, 0) for i in range(10)] + [(str(i), 0) for i in range(10)])
        assert sorter.spill_count == 2
        with pytest.raises(ShuffleError, match=r"str.*int|int.*str"):
            read_all(sorter)
    assert list(tmp_path.iterdir()) == []


def test_memory_pressure_spills_without_a_forced_threshold(tmp_path):
    records = [(i % 3000, "x" * 50) for i in range(20000)]
    conf = {"spark.shuffle.spill.initialMemoryThreshold": "64k"}
    sorter, partitioner = make_sorter(tmp_path, conf, pool_size=256 * 1024, num_partitions=3)
    with sorter:
        sorter.insert_all(records)
        assert sorter.spill_count >= 2
        assert sorter.memory_bytes_spilled > 0 and sorter.disk_bytes_spilled > 0
        output = read_all(sorter)
    assert output == oracle(records, partitioner)
    assert sorter.memory.memory_used == 0


def test_another_consumer_makes_the_sorter_spill_while_inserting(tmp_path):
    records = [(i % 500, i) for i in range(5000)]
    conf = {"spark.shuffle.spill.initialMemoryThreshold": "1k"}
    sorter, partitioner = make_sorter(tmp_path, conf, pool_size=4 << 20, num_partitions=2, aggregator=SUM)
    with sorter:
        sorter.insert_all(records)
        assert sorter.used > 0 and sorter.spill_count == 0
        neighbour = MemoryConsumer(sorter.memory)
        assert neighbour.acquire(4 << 20) == 4 << 20
        assert sorter.spill_count == 1 and sorter.used == 0
        assert sorter.spill(1, neighbour) == 0  # nothing left to give
        neighbour.release_all()
        sorter.insert_all(records)
        output = read_all(sorter)
    assert canonical(output) == canonical(oracle(records + records, partitioner, SUM))


def test_another_consumer_makes_the_sorter_spill_the_unread_rest_of_its_output(tmp_path):
    records = [(i % 1000, i) for i in range(6000)]
    conf = {"spark.shuffle.spill.initialMemoryThreshold": "1k"}
    sorter, partitioner = make_sorter(tmp_path, conf, pool_size=8 << 20, key_ordering=True)
    with sorter:
        sorter.insert_all(records)
        assert sorter.used > 0 and sorter.spill_count == 0
        partitions = sorter.partitioned_iterator()
        pid, part = next(partitions)
        head = [next(part) for _ in range(1500)]
        assert sorter.spill(1, sorter) == 0  # never for itself
        neighbour = MemoryConsumer(sorter.memory)
        assert neighbour.acquire(8 << 20) == 8 << 20
        assert sorter.spill_count == 1 and sorter.used == 0
        assert len(list(tmp_path.iterdir())) == 1
        output = head + list(part)
        assert next(partitions, None) is None
    assert pid == 0 and output == oracle(records, partitioner, key_ordering=True)[0]
    assert list(tmp_path.iterdir()) == []


def test_empty_input_has_no_partitions_and_writes_nothing(tmp_path):
    sorter, _ = make_sorter(tmp_path, forced(0), num_partitions=3, aggregator=SUM)
    with sorter:
        sorter.insert_all([])
        assert read_all(sorter) == {}
        assert sorter.spill_count == 0
    assert list(tmp_path.iterdir()) == []


def test_iterator_is_every_partition_flattened_in_order(tmp_path):
    records = [(i, -i) for i in range(50)]
    sorter, partitioner = make_sorter(tmp_path, forced(6), num_partitions=4, key_ordering=True, ascending=False)
    with sorter:
        sorter.insert_all(records)
        flat = list(sorter.iterator())
    expected = oracle(records, partitioner, key_ordering=True, ascending=False)
    assert flat == [record for pid in sorted(expected) for record in expected[pid]]


def test_no_partition_function_puts_everything_in_partition_zero(tmp_path):
    sorter, _ = make_sorter(tmp_path, forced(4), num_partitions=3, partition_ids=None, key_ordering=True)
    with sorter:
        sorter.insert_all([(3, "c"), (1, "a"), (2, "b")] * 3)
        assert [(pid, list(part)) for pid, part in sorter.partitioned_iterator()] == [
            (0, [(1, "a")] * 3 + [(2, "b")] * 3 + [(3, "c")] * 3)
        ]


def test_output_is_read_once_and_inserts_after_reading_are_refused(tmp_path):
    sorter, _ = make_sorter(tmp_path)
    with sorter:
        sorter.insert_all([(1, 1)])
        assert list(sorter.iterator()) == [(1, 1)]
        with pytest.raises(ShuffleError):
            sorter.partitioned_iterator()
        with pytest.raises(ShuffleError):
            sorter.insert_all([(2, 2)])


def test_a_record_that_is_not_a_pair_names_its_position(tmp_path):
    sorter, _ = make_sorter(tmp_path, num_partitions=2)
    with sorter, pytest.raises(SerializationError, match="record 7"):
        sorter.insert_all([(i, i) for i in range(7)] + [(1, 2, 3)])


def test_an_unserializable_value_spilled_names_its_input_position(tmp_path):
    records = [(i % 3, i) for i in range(20)]
    records[13] = (1, lambda: None)
    sorter, _ = make_sorter(tmp_path, forced(15), serializer=PickleSerializer(), num_partitions=3)
    with sorter, pytest.raises(SerializationError, match="record 13") as caught:
        sorter.insert_all(records)
    assert caught.value.position == 13
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=80, deadline=None)
@given(keys=st.lists(st.one_of(st.integers(-5, 5), st.integers(-2**63, 2**63 - 1), st.integers(-2**70, 2**70)),
                     max_size=80),
       ascending=st.booleans(), num_partitions=st.integers(1, 4))
def test_int_keys_sort_stably_in_both_directions_as_python_sorts_them(keys, ascending, num_partitions):
    records = [(k, i) for i, k in enumerate(keys)]  # the value is the input position: shows stability
    with tempfile.TemporaryDirectory() as spill_dir:
        sorter, partitioner = make_sorter(spill_dir, num_partitions=num_partitions, key_ordering=True,
                                          ascending=ascending)
        with sorter:
            sorter.insert_all(records)
            output = read_all(sorter)
    assert output == oracle(records, partitioner, key_ordering=True, ascending=ascending)
