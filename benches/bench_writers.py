"""The three shuffle writers on the same fixed data: one map task, committed output.

Every benchmark writes the same 200k ``(int, int)`` records (50k distinct keys;
``conftest.int_records``) into 64 partitions through ``SortShuffleManager``,
with the mode forced by ``shuffle.writer.force``, msgpack + lz4 (the defaults),
ADLER32 checksums and ``spark.shuffle.sync=false`` (fsync measures the disk, not
the writer). A round is ``writer.write(records)`` up to the committed index;
registering a fresh shuffle for it is set-up, untimed.

Two groups:

- ``writers``: ``bypass``, ``serialized``, ``sort`` (no combine) and
  ``sort+combine`` (a sum aggregator with map-side combine: 200k records
  become 50k), all without spilling;
- ``writers, spilling``: ``serialized`` and ``sort`` with a forced spill every
  50k records (3 spills, then the merge), and ``sort+combine`` likewise.

Records per second = ``extra_info["records"]`` / mean. The kernels are the ones
``shuffle.kernels`` chose (run with ``SHUFFLE_PUREPYTHON=1`` for the twins).
"""

from __future__ import annotations

import itertools
import operator

import pytest

from conftest import NUM_PARTITIONS, PEDANTIC_ROUNDS, per_element
from shuffle.aggregator import Aggregator
from shuffle.dependency import ShuffleDependency
from shuffle.manager import SortShuffleManager
from shuffle.partitioner import HashPartitioner

SUM = Aggregator.from_reduce(operator.add)
BASE_CONF = {"spark.shuffle.sync": "false"}
SPILL_CONF = {"spark.shuffle.spill.numElementsForceSpillThreshold": "50000"}

# (id, forced mode, combine on the map side)
WRITERS = [
    ("bypass", "bypass", False),
    ("serialized", "serialized", False),
    ("sort", "sort", False),
    ("sort+combine", "sort", True),
]
SPILLING = [w for w in WRITERS if w[0] != "bypass"]


def _bench_write(benchmark, tmp_path, records, mode: str, combine: bool, extra_conf: dict) -> None:
    conf = {**BASE_CONF, **extra_conf, "shuffle.writer.force": mode}
    shuffle_ids = itertools.count()
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        state: dict = {}

        def setup():
            if "shuffle_id" in state:
                manager.unregister_shuffle(state["shuffle_id"])
            shuffle_id = state["shuffle_id"] = next(shuffle_ids)
            dep = ShuffleDependency(shuffle_id, 1, HashPartitioner(NUM_PARTITIONS),
                                    aggregator=SUM if combine else None, map_side_combine=combine)
            handle = manager.register_shuffle(dep)
            assert handle.kind == mode
            state["writer"] = manager.get_writer(handle, 0)
            return (state["writer"], iter(records)), {}

        def write(writer, it):
            return writer.write(it)

        status = benchmark.pedantic(write, setup=setup, rounds=PEDANTIC_ROUNDS)
        writer, shuffle_id = state["writer"], state["shuffle_id"]
        assert writer.metrics.records_written == (len({k for k, _ in records}) if combine else len(records))
        assert sum(status.partition_lengths) == manager.resolver.data_file(shuffle_id, 0).stat().st_size
        benchmark.extra_info["bytes_written"] = writer.metrics.bytes_written
        benchmark.extra_info["spill_count"] = writer.metrics.spill_count
    assert not list(tmp_path.iterdir())  # stop() deleted every output, lock and temp file


@pytest.mark.parametrize("name, mode, combine", WRITERS, ids=[w[0] for w in WRITERS])
def test_writer(benchmark, tmp_path, int_records, name, mode, combine):
    benchmark.group = "writers: 200k (int, int) records, 64 partitions, one map"
    per_element(benchmark, len(int_records))
    _bench_write(benchmark, tmp_path, int_records, mode, combine, {})


@pytest.mark.parametrize("name, mode, combine", SPILLING, ids=[w[0] for w in SPILLING])
def test_writer_spilling(benchmark, tmp_path, int_records, name, mode, combine):
    benchmark.group = "writers, spilling every 50k records: 200k (int, int) records, 64 partitions"
    per_element(benchmark, len(int_records))
    _bench_write(benchmark, tmp_path, int_records, mode, combine, SPILL_CONF)
    assert benchmark.extra_info["spill_count"] == 3
