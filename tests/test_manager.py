import logging
import os

import pytest

from shuffle import Aggregator, ConfigError, ShuffleConf, ShuffleError
from shuffle.dependency import ShuffleDependency
from shuffle.manager import MAX_SERIALIZED_PARTITIONS, SortShuffleManager, choose_writer
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.pickle_serializer import PickleSerializer

SUM = Aggregator.from_reduce(lambda a, b: a + b)


def dep(n, serializer=None, aggregator=None, combine=False):
    return ShuffleDependency(0, 1, HashPartitioner(n), serializer or MsgpackSerializer(), aggregator, combine)


@pytest.mark.parametrize("dependency, kind", [
    (dep(200), "bypass"),
    (dep(201), "serialized"),
    (dep(201, PickleSerializer()), "sort"),
    (dep(10, aggregator=SUM, combine=True), "sort"),
    (dep(10, aggregator=SUM, combine=False), "bypass"),
    (dep(1000, aggregator=SUM, combine=False), "serialized"),   # Spark: aggregation without map-side combine is reduce-side
    (dep(MAX_SERIALIZED_PARTITIONS + 1), "sort"),
])
def test_writer_is_chosen_as_spark_chooses(dependency, kind):
    assert choose_writer(dependency, ShuffleConf())[0] == kind


def test_bypass_threshold_is_configurable():
    conf = ShuffleConf({"spark.shuffle.sort.bypassMergeThreshold": 5})
    assert choose_writer(dep(5), conf)[0] == "bypass"
    assert choose_writer(dep(6), conf)[0] == "serialized"


def test_turning_down_the_serialized_writer_is_logged_with_the_reason(caplog):
    with caplog.at_level(logging.DEBUG, logger="shuffle.manager"):
        kind, reason = choose_writer(dep(500, PickleSerializer()), ShuffleConf())
    assert kind == "sort" and "relocation" in reason
    assert any("relocation" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("forced", ["bypass", "serialized", "sort"])
def test_force_picks_any_mode_whose_conditions_hold(forced):
    assert choose_writer(dep(500), ShuffleConf({"shuffle.writer.force": forced}))[0] == forced


@pytest.mark.parametrize("forced, dependency", [
    ("serialized", dep(10, PickleSerializer())),
    ("serialized", dep(10, aggregator=SUM, combine=True)),
    ("bypass", dep(10, aggregator=SUM, combine=True)),
])
def test_force_refuses_a_mode_whose_conditions_do_not_hold(forced, dependency):
    with pytest.raises(ConfigError, match="shuffle.writer.force"):
        choose_writer(dependency, ShuffleConf({"shuffle.writer.force": forced}))


def test_map_side_combine_needs_an_aggregator():
    with pytest.raises(ShuffleError, match="aggregator"):
        ShuffleDependency(0, 1, HashPartitioner(2), map_side_combine=True)


def test_handle_records_the_kind_and_registers_the_shuffle(tmp_path):
    with SortShuffleManager({"spark.shuffle.sync": False}, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(dep(201))
        assert handle.kind == "serialized" and handle.reason
        assert manager.tracker.missing_maps(0) == [0]
        assert type(manager.get_writer(handle, 0)).kind == "serialized"


def test_unregister_deletes_only_that_shuffles_files(tmp_path):
    with SortShuffleManager({"spark.shuffle.sync": False}, local_dir=tmp_path) as manager:
        for sid in (0, 1):
            handle = manager.register_shuffle(ShuffleDependency(sid, 1, HashPartitioner(3)))
            manager.get_writer(handle, 0).write([(i, i) for i in range(100)])
        assert manager.unregister_shuffle(0) is True
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names and all(name.startswith("shuffle_1_") for name in names)
        assert manager.unregister_shuffle(0) is False
        assert not manager.tracker.contains_shuffle(0)


def test_stop_removes_a_temp_local_dir_it_created_and_refuses_further_use():
    manager = SortShuffleManager({"spark.shuffle.sync": False})
    local_dir = manager.local_dir
    handle = manager.register_shuffle(dep(4))
    manager.get_writer(handle, 0).write([(1, 1)])
    manager.stop()
    manager.stop()
    assert not os.path.exists(local_dir)
    with pytest.raises(ShuffleError, match="stopped"):
        manager.register_shuffle(dep(4))


def test_bad_conf_value_fails_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="spark.shuffle.file.buffer"):
        SortShuffleManager({"spark.shuffle.file.buffer": "lots"}, local_dir=tmp_path)


def test_map_id_out_of_range_is_refused(tmp_path):
    with SortShuffleManager({"spark.shuffle.sync": False}, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(dep(4))
        with pytest.raises(ShuffleError, match="map_id 3"):
            manager.get_writer(handle, 3)
