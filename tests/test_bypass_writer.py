from collections import defaultdict

import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from shuffle import ShuffleConf
from shuffle.blocks import BlockFormat
from shuffle.checksum import checksum_of
from shuffle.dependency import ShuffleDependency
from shuffle.errors import SerializationError
from shuffle.manager import SortShuffleManager
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.pickle_serializer import PickleSerializer

BASE = {"spark.shuffle.sync": "false", "spark.executor.memory": "256m"}


def write_and_read(tmp_path, records, num_partitions, conf=None, serializer=None):
    conf = ShuffleConf({**BASE, **(conf or {})})
    serializer = serializer or MsgpackSerializer()
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        dep = ShuffleDependency(0, 1, HashPartitioner(num_partitions), serializer)
        handle = manager.register_shuffle(dep)
        assert handle.kind == "bypass"
        writer = manager.get_writer(handle, 0)
        status = writer.write(iter(records))
        fmt = BlockFormat.for_shuffle(conf, serializer)
        parts = [list(fmt.decode(manager.resolver.read_block(0, 0, r))) for r in range(num_partitions)]
        return status, parts, writer, manager


def oracle(records, num_partitions):
    partitioner = HashPartitioner(num_partitions)
    out = defaultdict(list)
    for key, value in records:
        out[partitioner.get_partition(key)].append((key, value))
    return [out[p] for p in range(num_partitions)]


keys = st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=8), st.binary(max_size=8), st.none(),
                 st.tuples(st.integers(), st.text(max_size=3)))
records_strategy = st.lists(st.tuples(keys, st.integers()), max_size=300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=records_strategy, num_partitions=st.integers(1, 40))
def test_bypass_writer_concatenates_partitions_in_order(tmp_path_factory, records, num_partitions):
    tmp = tmp_path_factory.mktemp("bypass")
    status, parts, writer, _ = write_and_read(tmp, records, num_partitions)
    assert parts == oracle(records, num_partitions)
    assert writer.metrics.records_written == len(records)
    assert sum(status.partition_lengths) == writer.metrics.bytes_written
    assert not any(p.name.startswith("temp_") for p in tmp.iterdir())


def test_empty_input_commits_zero_lengths_and_no_temp_files(tmp_path):
    status, parts, _, _ = write_and_read(tmp_path, [], 5)
    assert status.partition_lengths == (0,) * 5 and parts == [[]] * 5
    assert not any(p.name.startswith("temp_") for p in tmp_path.iterdir())


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd", "zlib"])
def test_values_larger_than_the_file_buffer_round_trip_with_every_codec(tmp_path, codec):
    records = [(i % 7, bytes([i % 256]) * 50_000) for i in range(40)]
    conf = {"spark.shuffle.file.buffer": "1k", "spark.io.compression.codec": codec}
    _, parts, _, _ = write_and_read(tmp_path, records, 7, conf)
    assert parts == oracle(records, 7)


def test_checksum_file_holds_each_segments_checksum(tmp_path):
    records = [(i, "v" * (i % 100)) for i in range(5000)]
    conf = ShuffleConf({**BASE, "spark.shuffle.file.buffer": "2k", "spark.shuffle.checksum.algorithm": "CRC32"})
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(ShuffleDependency(3, 1, HashPartitioner(16)))
        manager.get_writer(handle, 0).write(records)
        expected = [checksum_of("CRC32", manager.resolver.read_block(3, 0, r)) for r in range(16)]
        assert manager.resolver.read_checksums(3, 0) == expected
        assert manager.resolver.checksum_file(3, 0).name == "shuffle_3_0_0.checksum.CRC32"


def test_pickle_serializer_works_through_bypass(tmp_path):
    records = [((i, "k"), [i, {i: b"x"}]) for i in range(500)]
    _, parts, _, _ = write_and_read(tmp_path, records, 9, serializer=PickleSerializer())
    assert parts == oracle(records, 9)


def failing_input(n):
    for i in range(n):
        yield (i, i)
    raise RuntimeError("input broke")


def test_input_that_raises_half_way_leaves_no_output_and_no_temp_file(tmp_path):
    conf = ShuffleConf({**BASE, "spark.shuffle.file.buffer": "1k"})
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(ShuffleDependency(0, 1, HashPartitioner(10)))
        with pytest.raises(RuntimeError, match="input broke"):
            manager.get_writer(handle, 0).write(failing_input(20_000))
        assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
        assert manager.tracker.missing_maps(0) == [0]
        assert manager.memory_pool.memory_used == 0


@pytest.mark.parametrize("bad, type_name", [((1, lambda: 0), "function"), ([1, 2, 3], "list"), (7, "int")])
def test_bad_record_names_its_position_and_type(tmp_path, bad, type_name):
    records = [(i, i) for i in range(10)] + [bad] + [(0, 0)]
    with pytest.raises(SerializationError) as info:
        write_and_read(tmp_path, records, 4)
    assert info.value.position == 10 and type_name in str(info.value)
    assert not any(p.name.startswith(("temp_", "shuffle_")) and not p.name.endswith(".lock") for p in tmp_path.iterdir())


def test_committed_status_is_registered_with_the_tracker_and_matches_the_index(tmp_path):
    with SortShuffleManager(ShuffleConf(BASE), local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(ShuffleDependency(0, 2, HashPartitioner(4)))
        status = manager.get_writer(handle, 1).write([(1, 2), (3, 4), ("x", 5)])
        assert manager.tracker.get_statuses(0) == [None, status]
        assert manager.tracker.missing_maps(0) == [0]
        assert list(status.partition_lengths) == manager.resolver.check_index_and_data(0, 1, 4)
        assert status.map_id == 1 and status.location.local_dir == str(tmp_path)
    assert list(tmp_path.iterdir()) == []   # stop() removed the shuffle's files


def test_writer_writes_only_once(tmp_path):
    with SortShuffleManager(ShuffleConf(BASE), local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(ShuffleDependency(0, 1, HashPartitioner(2)))
        writer = manager.get_writer(handle, 0)
        writer.write([(1, 1)])
        with pytest.raises(Exception, match="writes once"):
            writer.write([(1, 1)])
