"""The three writers produce the same partition contents, in the same order, for the same input."""

from hypothesis import HealthCheck, given, settings, strategies as st

from shuffle import HashPartitioner, ShuffleConf, ShuffleDependency, SortShuffleManager
from shuffle.blocks import BlockFormat

keys = st.one_of(st.integers(-10**12, 10**12), st.text(max_size=6), st.binary(max_size=6), st.none(),
                 st.booleans(), st.floats(allow_nan=False), st.tuples(st.integers(0, 3), st.text(max_size=2)))
values = st.one_of(st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3))


def partitions_written(tmp, mode, records, num_partitions, force_spill):
    conf = {"spark.shuffle.sync": "false", "shuffle.writer.force": mode}
    if force_spill:
        conf["spark.shuffle.spill.numElementsForceSpillThreshold"] = str(force_spill)
    conf = ShuffleConf(conf)
    with SortShuffleManager(conf, local_dir=tmp / mode) as manager:
        dep = ShuffleDependency(0, 1, HashPartitioner(num_partitions))
        handle = manager.register_shuffle(dep)
        assert handle.kind == mode
        manager.get_writer(handle, 0).write(records)
        fmt = BlockFormat.for_shuffle(conf, dep.serializer)
        return [list(fmt.decode(manager.resolver.read_block(0, 0, r))) for r in range(num_partitions)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.tuples(keys, values), max_size=150), num_partitions=st.integers(1, 12),
       force_spill=st.sampled_from([None, 1, 10]))
def test_bypass_serialized_and_sort_writers_agree(tmp_path_factory, records, num_partitions, force_spill):
    tmp = tmp_path_factory.mktemp("agree")
    results = {mode: partitions_written(tmp, mode, records, num_partitions, force_spill)
               for mode in ("bypass", "serialized", "sort")}
    assert results["bypass"] == results["serialized"] == results["sort"]
    assert sum(map(len, results["bypass"])) == len(records)


def test_all_records_in_one_partition(tmp_path):
    records = [("same", i) for i in range(1000)]
    results = {mode: partitions_written(tmp_path, mode, records, 8, 100) for mode in ("bypass", "serialized", "sort")}
    assert results["bypass"] == results["serialized"] == results["sort"]
    assert sorted(map(len, results["sort"])) == [0] * 7 + [1000]
