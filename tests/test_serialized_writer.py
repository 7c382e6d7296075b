import collections
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import shuffle._twins.recordbuf as twin_recordbuf
from shuffle.blocks import BlockFormat
from shuffle.checksum import checksum_of
from shuffle.conf import ShuffleConf
from shuffle.dependency import ShuffleDependency
from shuffle.errors import RecordTooLargeError, SerializationError
from shuffle.manager import SortShuffleManager
from shuffle.memory import ExecutionMemoryPool, MemoryConsumer, TaskMemoryManager
from shuffle.metrics import WriteMetrics
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.write import serialized_sorter
from shuffle.write.serialized import SerializedShuffleWriter
from shuffle.write.serialized_sorter import ShuffleExternalSorter, page_size_for

MiB = 1 << 20
BASE_CONF = {
    "shuffle.writer.force": "serialized",
    "spark.shuffle.sync": "false",
    "spark.executor.memory": "256m",
}


def native_recordbuf():
    try:
        return __import__("shuffle._native.recordbuf", fromlist=["RecordBuffer"])
    except ImportError:
        pytest.skip("compiled recordbuf kernel not built")


@pytest.fixture(params=["native", "twin"])
def kernel(request, monkeypatch):
    """Run the test with the compiled record buffer and with its plain-Python twin."""
    module = native_recordbuf() if request.param == "native" else twin_recordbuf
    monkeypatch.setattr(serialized_sorter, "_recordbuf", module)
    return module


def run(local_dir, records, num_partitions=4, conf=None, memory_pool=None, before_write=None):
    """Write ``records`` as map 0 of shuffle 0; returns (decoded partitions, raw segments, writer, manager)."""
    manager = SortShuffleManager({**BASE_CONF, **(conf or {})}, local_dir=local_dir, memory_pool=memory_pool)
    dep = ShuffleDependency(0, 1, HashPartitioner(num_partitions), MsgpackSerializer())
    handle = manager.register_shuffle(dep)
    assert handle.kind == "serialized"
    writer = manager.get_writer(handle, 0)
    if before_write is not None:
        before_write(writer)
    status = writer.write(records)
    fmt = BlockFormat.for_shuffle(manager.conf, dep.serializer)
    raw = [manager.resolver.read_block(0, 0, p) for p in range(num_partitions)]
    assert list(status.partition_lengths) == [len(r) for r in raw]
    decoded = [list(fmt.decode(r)) for r in raw]
    assert manager.memory_pool.memory_used == 0
    return decoded, raw, writer, manager


def oracle(records, num_partitions):
    partitioner = HashPartitioner(num_partitions)
    parts = [[] for _ in range(num_partitions)]
    for key, value in records:
        parts[partitioner.get_partition(key)].append((key, value))
    return parts


def leftovers(local_dir):
    return sorted(p.name for p in Path(local_dir).iterdir() if not p.name.endswith(".lock"))


keys = st.one_of(
    st.integers(-(2**70), 2**70), st.text(max_size=8), st.binary(max_size=8), st.none(),
    st.tuples(st.integers(-5, 5), st.text(max_size=3)),
)
values = st.one_of(st.integers(), st.text(max_size=20), st.binary(max_size=20), st.lists(st.integers(), max_size=3))
record_lists = st.lists(st.tuples(keys, values), max_size=300)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=record_lists,
    num_partitions=st.sampled_from([1, 3, 300, 1000]),
    threshold=st.sampled_from([None, 1, 7, 100]),
    compress=st.booleans(),
)
@example(records=[], num_partitions=1000, threshold=None, compress=True)
@example(records=[(1, "one")], num_partitions=300, threshold=1, compress=True)
@example(records=[(7, i) for i in range(50)], num_partitions=300, threshold=None, compress=False)
@example(records=[(7, i) for i in range(50)], num_partitions=300, threshold=9, compress=True)
def test_partitions_hold_each_partitions_records_in_insertion_order(kernel, records, num_partitions, threshold,
                                                                    compress):
    conf = {"spark.shuffle.compress": str(compress).lower()}
    if threshold is not None:
        conf["spark.shuffle.spill.numElementsForceSpillThreshold"] = str(threshold)
    with tempfile.TemporaryDirectory() as local_dir:
        decoded, _, writer, manager = run(local_dir, records, num_partitions, conf)
        assert decoded == oracle(records, num_partitions)
        assert writer.metrics.records_written == len(records)
        assert not [name for name in leftovers(local_dir) if name.startswith("temp_")]
        manager.stop()


def spilled_and_not(tmp_path, records, compress, threshold, num_partitions=5):
    conf = {"spark.shuffle.compress": compress}
    plain = run(tmp_path / "plain", records, num_partitions, conf)
    spilled = run(tmp_path / "spilled", records, num_partitions,
                  {**conf, "spark.shuffle.spill.numElementsForceSpillThreshold": str(threshold)})
    return plain, spilled


@pytest.mark.parametrize("threshold, spills", [(1500, 1), (97, 20)])
@pytest.mark.parametrize("compress", ["true", "false"])
def test_forced_spills_give_the_same_partitions_as_no_spill(tmp_path, kernel, threshold, spills, compress):
    records = [(i % 13, "v" * (i % 7)) for i in range(2000)]
    (plain, plain_raw, plain_writer, _), (spilled, spilled_raw, writer, _) = spilled_and_not(
        tmp_path, records, compress, threshold)
    assert spilled == plain == oracle(records, 5)
    assert plain_writer.metrics.spill_count == 0
    assert writer.metrics.spill_count == spills
    if compress == "false":  # spills are merged by byte concatenation
        assert spilled_raw == plain_raw
    else:  # one compressed block per spill and partition
        assert spilled_raw != plain_raw


@pytest.mark.parametrize("threshold", [None, 1, 333])
@pytest.mark.parametrize("algorithm", ["ADLER32", "CRC32"])
def test_checksum_file_matches_every_final_segment(tmp_path, kernel, threshold, algorithm):
    conf = {"spark.shuffle.checksum.algorithm": algorithm}
    if threshold is not None:
        conf["spark.shuffle.spill.numElementsForceSpillThreshold"] = str(threshold)
    records = [(i, i * 3) for i in range(1000)]
    _, raw, _, manager = run(tmp_path, records, 6, conf)
    assert manager.resolver.read_checksums(0, 0) == [checksum_of(algorithm, segment) for segment in raw]


def test_compression_off_writes_plain_serializer_streams(tmp_path, kernel):
    records = [(0, "x" * 100)] * 50
    _, raw, _, _ = run(tmp_path, records, 1, {"spark.shuffle.compress": "false"})
    serializer = MsgpackSerializer()
    assert raw[0] == b"".join(serializer.dumps_record(k, v) for k, v in records)
    _, compressed, _, _ = run(tmp_path / "lz4", records, 1, {"spark.shuffle.compress": "true"})
    assert len(compressed[0]) < len(raw[0])


def test_metrics_count_records_spills_and_bytes_exactly(tmp_path, kernel):
    records = [(i, "value-%d" % i) for i in range(30)]
    conf = {"spark.shuffle.compress": "false", "spark.buffer.pageSize": "1m",
            "spark.shuffle.spill.numElementsForceSpillThreshold": "10"}
    _, raw, writer, _ = run(tmp_path, records, 3, conf)
    m = writer.metrics
    serializer = MsgpackSerializer()
    assert m.records_written == 30
    assert m.bytes_written == sum(map(len, raw))
    # Spills when the 11th and 21st records arrive; the last ten are the final file, not a spill.
    assert m.spill_count == 2
    assert m.disk_bytes_spilled == sum(len(serializer.dumps_record(k, v)) for k, v in records[:20])
    assert m.memory_bytes_spilled == 2 * (MiB + 4096 * 8)  # one page and the initial pointer array each


def test_threshold_zero_spills_before_every_record_but_the_first(tmp_path, kernel):
    records = [(i, i) for i in range(25)]
    decoded, _, writer, _ = run(tmp_path, records, 2, {"spark.shuffle.spill.numElementsForceSpillThreshold": "0"})
    assert decoded == oracle(records, 2)
    assert writer.metrics.spill_count == 24


def test_no_spill_writes_no_temp_file_and_a_spilled_write_leaves_none(tmp_path, kernel, monkeypatch):
    made = []
    original = SerializedShuffleWriter._write_records

    def spy(self, records, output):
        try:
            return original(self, records, output)
        finally:
            made.extend(self.context.spill_files)

    monkeypatch.setattr(SerializedShuffleWriter, "_write_records", spy)
    run(tmp_path / "a", [(i, i) for i in range(100)])
    assert made == []
    run(tmp_path / "b", [(i, i) for i in range(100)], conf={"spark.shuffle.spill.numElementsForceSpillThreshold": "30"})
    assert len(made) == 4  # three spills and the final file
    assert not any(path.exists() for path in made)
    assert leftovers(tmp_path / "b") == ["shuffle_0_0_0.checksum.ADLER32", "shuffle_0_0_0.data", "shuffle_0_0_0.index"]


def test_a_record_over_the_page_limit_names_its_position(tmp_path, kernel, monkeypatch):
    monkeypatch.setattr(kernel, "MAX_RECORD_SIZE", 100)
    records = [(i, "small") for i in range(5000)] + [(1, "x" * 200)] + [(2, "small")] * 10
    with pytest.raises(RecordTooLargeError) as info:
        run(tmp_path, records, conf={"spark.shuffle.spill.numElementsForceSpillThreshold": "1000"})
    assert info.value.position == 5000
    assert info.value.limit == 100
    assert "record 5000" in str(info.value)
    assert leftovers(tmp_path) == []


def test_the_sorter_keeps_the_position_when_the_kernel_refuses_a_record(tmp_path, kernel):
    sorter = make_sorter(tmp_path)

    class Refusing:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def insert_batch(self, pids, records):
            raise RecordTooLargeError(999, 100, 2)

    sorter._buffer = Refusing(sorter._buffer)
    with pytest.raises(RecordTooLargeError) as info:
        sorter.insert(np.zeros(4, dtype=np.int32), [b"a"] * 4, position=40)
    assert info.value.position == 42
    sorter.free()


def failing_after(n, exc):
    for i in range(n):
        yield (i, "v%d" % i)
    raise exc


def test_an_input_failing_half_way_leaves_no_output_and_no_spill_file(tmp_path, kernel):
    with pytest.raises(KeyError, match="boom"):
        run(tmp_path, failing_after(6000, KeyError("boom")),
            conf={"spark.shuffle.spill.numElementsForceSpillThreshold": "1000"})
    assert leftovers(tmp_path) == []


def test_a_record_that_cannot_be_serialized_gives_its_position(tmp_path, kernel):
    records = [(i, i) for i in range(4100)] + [("bad", lambda: 0)]
    with pytest.raises(SerializationError) as info:
        run(tmp_path, records, conf={"spark.shuffle.spill.numElementsForceSpillThreshold": "500"})
    assert info.value.position == 4100
    assert "function" in str(info.value)
    assert leftovers(tmp_path) == []


def test_a_record_that_is_not_a_pair_gives_its_position(tmp_path, kernel):
    with pytest.raises(SerializationError) as info:
        run(tmp_path, [(1, 1), (2, 2), (3, 3, 3)])
    assert info.value.position == 2


def test_memory_is_returned_after_success_and_failure(tmp_path, kernel):
    pool = ExecutionMemoryPool(512 * MiB)
    run(tmp_path / "ok", [(i, i) for i in range(10_000)], memory_pool=pool)
    assert pool.memory_used == 0
    with pytest.raises(ValueError):
        run(tmp_path / "ko", failing_after(9000, ValueError("x")), memory_pool=pool)
    assert pool.memory_used == 0


def test_a_small_pool_makes_the_writer_spill_and_still_write_everything(tmp_path, kernel):
    pool = ExecutionMemoryPool(200 * 1024)
    records = [(i % 50, "payload-%06d" % i) for i in range(20_000)]
    decoded, _, writer, _ = run(tmp_path, records, 50, {"spark.buffer.pageSize": "16k"}, memory_pool=pool)
    assert decoded == oracle(records, 50)
    assert writer.metrics.spill_count >= 2
    assert pool.memory_used == 0


def test_running_out_of_pages_spills(tmp_path, kernel, monkeypatch):
    monkeypatch.setattr(SerializedShuffleWriter, "max_pages", 2)
    records = [(i, "y" * 40) for i in range(3000)]
    decoded, _, writer, _ = run(tmp_path, records, 7, {"spark.buffer.pageSize": "4k"})
    assert decoded == oracle(records, 7)
    assert writer.metrics.spill_count >= 10


def test_another_consumer_of_the_task_makes_the_buffer_spill(tmp_path, kernel):
    pool = ExecutionMemoryPool(8 * MiB)
    state = {}

    def records():
        for i in range(10_000):
            if i == 6000:  # the first chunk is in the buffer by now
                other = MemoryConsumer(state["writer"].context.memory)
                state["spills_before"] = state["writer"].metrics.spill_count
                state["granted"] = other.acquire(pool.pool_size)
                state["spills_after"] = state["writer"].metrics.spill_count
                other.close()
            yield (i, i)

    decoded, _, writer, _ = run(tmp_path, records(), 3, {"spark.buffer.pageSize": "1m"}, memory_pool=pool,
                                before_write=lambda w: state.setdefault("writer", w))
    assert (state["spills_before"], state["spills_after"]) == (0, 1)
    assert state["granted"] == pool.pool_size
    assert decoded == oracle(list((i, i) for i in range(10_000)), 3)


def make_sorter(tmp_path, pool_size=1 << 30, conf=None, page_size=4096, max_pages=None):
    memory = TaskMemoryManager(ExecutionMemoryPool(pool_size), task_id=0)
    counter = iter(range(10**6))
    return ShuffleExternalSorter(
        memory, ShuffleConf(conf or {}), 8, BlockFormat.for_shuffle(ShuffleConf({}), MsgpackSerializer()),
        lambda: Path(tmp_path) / f"spill_{next(counter)}", None, WriteMetrics(), page_size, max_pages,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, 9000), max_size=60), max_size=8),
       page_size=st.sampled_from([1024, 4096, 1 << 16]))
def test_memory_acquired_before_each_insert_is_exactly_what_the_buffer_holds(kernel, batches, page_size):
    with tempfile.TemporaryDirectory() as spill_dir:
        sorter = make_sorter(spill_dir, page_size=page_size, conf={"spark.shuffle.sort.initialBufferSize": "8"})
        for lengths in batches:
            records = [b"r" * n for n in lengths]
            planned = sorter._plan(np.array(lengths, dtype=np.int64)).memory
            sorter.insert(np.zeros(len(records), dtype=np.int32), records, position=0)
            assert planned == sorter._buffer.memory_used
            if sorter.num_records:
                assert sorter.used == sorter._buffer.memory_used
        assert not sorter.spills
        sorter.free()
        assert sorter.memory.memory_used == 0


@pytest.mark.parametrize("pool, expected", [
    (16 * MiB, MiB), (1 * MiB, MiB), (100 * MiB, 8 * MiB), (10 << 30, 64 * MiB),
])
def test_default_page_size_is_sparks_rule(pool, expected):
    assert page_size_for(ShuffleConf({}), pool) == expected


@pytest.mark.parametrize("configured, expected", [("4k", 4096), ("128m", 128 * MiB), ("3000", 3000)])
def test_configured_page_size_wins(configured, expected):
    assert page_size_for(ShuffleConf({"spark.buffer.pageSize": configured}), 10 << 30) == expected


def test_turning_radix_sort_off_is_logged_as_ignored(tmp_path, kernel, caplog):
    with caplog.at_level(logging.INFO, logger="shuffle.write.serialized"):
        decoded, _, _, _ = run(tmp_path, [(1, 1), (2, 2)], 2, {"spark.shuffle.sort.useRadixSort": "false"})
    assert "useRadixSort=false ignored" in caplog.text
    assert decoded == oracle([(1, 1), (2, 2)], 2)


def test_records_of_any_size_up_to_the_limit_round_trip(tmp_path, kernel):
    records = [(i, b"z" * size) for i, size in enumerate([0, 1, 5000, 70_000, 3, 2 * MiB])]
    decoded, _, _, _ = run(tmp_path, records, 2, {"spark.buffer.pageSize": "64k",
                                                  "spark.shuffle.spill.numElementsForceSpillThreshold": "2"})
    assert decoded == oracle(records, 2)
    assert collections.Counter(type(v) for part in decoded for _, v in part) == {bytes: 6}
