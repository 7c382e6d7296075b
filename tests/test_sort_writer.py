import collections

import pytest

from shuffle.aggregator import Aggregator
from shuffle.blocks import BlockFormat
from shuffle.checksum import checksum_of
from shuffle.dependency import ShuffleDependency
from shuffle.errors import SerializationError
from shuffle.manager import SortShuffleManager
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.pickle_serializer import PickleSerializer
from shuffle.write.output import MapOutputWriter
from shuffle.write.sort import SortShuffleWriter

SUM = Aggregator.from_reduce(lambda a, b: a + b)
BASE_CONF = {"shuffle.writer.force": "sort", "spark.shuffle.sync": "false", "spark.executor.memory": "64m"}


class MapTask:
    """Map 0 of shuffle 0, written through a SortShuffleManager forced to the sort writer."""

    def __init__(self, manager, num_partitions, serializer=None, **dep_kwargs):
        self.manager = manager
        self.dep = ShuffleDependency(shuffle_id=0, num_maps=1, partitioner=HashPartitioner(num_partitions),
                                     serializer=serializer or MsgpackSerializer(), **dep_kwargs)
        self.handle = manager.register_shuffle(self.dep)
        self.resolver = manager.resolver
        self.writer = manager.get_writer(self.handle, map_id=0)

    def write(self, records):
        return self.writer.write(records)

    def read(self):
        """Partition -> records read back from the committed output (non-empty partitions)."""
        block_format = BlockFormat.for_shuffle(self.manager.conf, self.dep.serializer)
        output = {}
        for pid in range(self.dep.num_partitions):
            records = list(block_format.decode(self.resolver.read_block(0, 0, pid)))
            if records:
                output[pid] = records
        return output


@pytest.fixture
def make_task(tmp_path):
    managers = []

    def make(num_partitions, conf=None, **dep_kwargs):
        manager = SortShuffleManager({**BASE_CONF, **(conf or {})}, local_dir=tmp_path)
        managers.append(manager)
        return MapTask(manager, num_partitions, **dep_kwargs)

    yield make
    for manager in managers:
        manager.stop()


def by_partition(records, num_partitions):
    partitioner = HashPartitioner(num_partitions)
    expected = collections.defaultdict(list)
    for record in records:
        expected[partitioner.get_partition(record[0])].append(record)
    return dict(sorted(expected.items()))


def forced(threshold):
    return {"spark.shuffle.spill.numElementsForceSpillThreshold": str(threshold)}


@pytest.mark.parametrize("serializer", [MsgpackSerializer(), PickleSerializer()], ids=["msgpack", "pickle"])
@pytest.mark.parametrize("force", [10**9, 97])
def test_partitions_read_back_equal_the_records_in_insertion_order(make_task, serializer, force):
    records = [(f"k{i % 301}", (i, [i] * (i % 3), b"b" * (i % 4))) for i in range(3000)]
    task = make_task(7, forced(force), serializer=serializer)
    status = task.write(records)
    assert isinstance(task.writer, SortShuffleWriter) and task.writer.kind == "sort"
    assert task.read() == by_partition(records, 7)
    assert status.partition_lengths == tuple(
        task.resolver.block_location(0, 0, pid, pid + 1)[2] for pid in range(7)
    )
    assert task.manager.tracker.get_statuses(0) == [status]


@pytest.mark.parametrize("key_ordering", [False, True])
def test_map_side_combine_with_spills_equals_a_dict_oracle(make_task, key_ordering):
    records = [(i % 997, i) for i in range(20000)]
    task = make_task(5, forced(1500), aggregator=SUM, map_side_combine=True, key_ordering=key_ordering)
    task.write(records)
    output = task.read()
    combined = collections.Counter()
    for key, value in records:
        combined[key] += value
    expected = by_partition(sorted(combined.items()), 5)
    assert {pid: sorted(part) for pid, part in output.items()} == expected
    if key_ordering:
        assert output == expected
    assert task.writer.metrics.spill_count == 13
    assert task.writer.metrics.records_written == 997


def test_an_input_that_fails_half_way_leaves_no_output_and_no_files(make_task, tmp_path):
    def failing():
        for i in range(5000):
            yield i, "v" * 20
        raise RuntimeError("input broke")

    task = make_task(4, forced(300), aggregator=SUM, map_side_combine=True)
    with pytest.raises(RuntimeError, match="input broke"):
        task.write(failing())
    assert list(tmp_path.iterdir()) == []
    assert task.writer.metrics.spill_count == 16


def test_an_output_that_fails_half_way_leaves_no_output_and_no_files(make_task, tmp_path):
    records = [(i % 3, i) for i in range(1000)]
    records[700] = (1, lambda: None)  # no spill: fails while the output is written
    task = make_task(3)
    with pytest.raises(SerializationError, match="record 700") as caught:
        task.write(records)
    assert caught.value.position == 700
    assert list(tmp_path.iterdir()) == []


def test_checksum_file_matches_every_segment(make_task):
    records = [(i, str(i) * (i % 7)) for i in range(4000)]
    task = make_task(9, {**forced(500), "spark.shuffle.file.buffer": "2k"})
    task.write(records)
    stored = task.resolver.read_checksums(0, 0)
    assert stored == [checksum_of("ADLER32", task.resolver.read_block(0, 0, pid)) for pid in range(9)]


def test_a_thousand_partitions_most_of_them_empty_or_small(make_task):
    records = [(i * 4, i) for i in range(2500)]  # keys land in the 250 partitions divisible by 4
    task = make_task(1000, forced(700))
    status = task.write(records)
    assert task.read() == by_partition(records, 1000)
    assert [pid for pid, length in enumerate(status.partition_lengths) if length] == list(range(0, 1000, 4))


def test_values_larger_than_the_file_buffer_stream_out_one_append_each(make_task, monkeypatch):
    appends = collections.Counter()
    original = MapOutputWriter.write

    def counting(self, partition_id, data):
        appends[partition_id] += 1
        return original(self, partition_id, data)

    monkeypatch.setattr(MapOutputWriter, "write", counting)
    records = [(i % 4, bytes([i % 256]) * 5000) for i in range(60)]
    task = make_task(2, {**forced(20), "spark.shuffle.file.buffer": "1k"})
    task.write(records)
    assert task.read() == by_partition(records, 2)
    assert appends == {0: 30, 1: 30}  # a file buffer's worth at a time, never a whole partition


def test_a_small_memory_budget_makes_the_writer_spill(make_task):
    records = [(i % 5000, "x" * 40) for i in range(30000)]
    task = make_task(6, {"spark.executor.memory": "2m", "spark.shuffle.spill.initialMemoryThreshold": "64k"})
    task.write(records)
    assert task.writer.metrics.spill_count >= 3
    assert task.read() == by_partition(records, 6)
    assert task.manager.memory_pool.memory_used == 0


def test_metrics_count_records_bytes_and_spills(make_task):
    records = [(i, i) for i in range(1000)]
    task = make_task(4, forced(99))
    status = task.write(records)
    metrics = task.writer.metrics
    assert metrics.records_written == 1000
    assert metrics.bytes_written == sum(status.partition_lengths) > 0
    assert metrics.spill_count == 10
    assert metrics.memory_bytes_spilled > 0 and metrics.disk_bytes_spilled > 0
    assert metrics.write_time_ns > 0


def test_empty_input_commits_an_empty_output(make_task):
    task = make_task(3, aggregator=SUM, map_side_combine=True)
    status = task.write([])
    assert status.partition_lengths == (0, 0, 0)
    assert task.read() == {}
    assert task.writer.metrics.records_written == 0


ADAPTIVE = {"shuffle.mapSideCombine.adaptive.minRecords": "200"}


def read_merged(task, aggregator):
    """Key -> the merge of every combiner the map wrote for it (what a reducer computes)."""
    merged = {}
    for records in task.read().values():
        for key, combiner in records:
            merged[key] = aggregator.merge_combiners(merged[key], combiner) if key in merged else combiner
    return merged


def test_mostly_distinct_keys_stop_the_map_side_combine_after_the_sample(make_task):
    records = [(i, 1) for i in range(1000)] + [(i, 1) for i in range(100)]  # repeats only after the sample
    task = make_task(8, ADAPTIVE, aggregator=SUM, map_side_combine=True)
    task.write(records)
    assert task.writer.metrics.records_written == 1100  # keys 0..99 written twice: not combined
    assert read_merged(task, SUM) == {i: 2 if i < 100 else 1 for i in range(1000)}


def test_repeated_keys_keep_the_map_side_combine(make_task):
    records = [(i % 50, 1) for i in range(1000)]
    task = make_task(8, ADAPTIVE, aggregator=SUM, map_side_combine=True)
    task.write(records)
    assert task.writer.metrics.records_written == 50
    assert read_merged(task, SUM) == {i: 20 for i in range(50)}


def test_the_adaptive_switch_can_be_turned_off(make_task):
    records = [(i, 1) for i in range(1000)] + [(i, 1) for i in range(100)]
    task = make_task(8, {**ADAPTIVE, "shuffle.mapSideCombine.adaptive": "false"}, aggregator=SUM,
                     map_side_combine=True)
    task.write(records)
    assert task.writer.metrics.records_written == 1000


def test_uncombined_records_become_combiners_through_create_combiner(make_task):
    lists = Aggregator(lambda v: [v], lambda c, v: c + [v], lambda a, b: a + b)
    records = [(i, i) for i in range(1000)] + [(3, -3)]
    task = make_task(4, ADAPTIVE, aggregator=lists, map_side_combine=True)
    task.write(records)
    merged = read_merged(task, lists)
    assert sorted(merged[3]) == [-3, 3] and all(merged[i] == [i] for i in range(1000) if i != 3)


@pytest.mark.parametrize("aggregator", [SUM, Aggregator(lambda v: [v], lambda c, v: c + [v], lambda a, b: a + b)],
                         ids=["reduce", "lists"])
@pytest.mark.parametrize("bad", ["ab", [1, 2], (1, 2, 3)])
def test_a_bad_record_after_the_switch_is_named_at_its_input_position(make_task, tmp_path, aggregator, bad):
    records = [(i, 1) for i in range(1000)] + [bad] + [(5, 5)]
    task = make_task(8, ADAPTIVE, aggregator=aggregator, map_side_combine=True)
    with pytest.raises(SerializationError, match="2-tuples") as caught:
        task.write(records)
    assert caught.value.position == 1000
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
