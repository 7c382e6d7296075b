"""The shuffle reader reading back the writers' output: fetch, decode, combine, sort.

The same 200k ``(int, int)`` records as ``bench_writers.py``, cut into 4 map
tasks of 50k, are written once (bypass writer, 64 partitions, msgpack + lz4,
ADLER32 checksums, no fsync) into three shuffles that differ only in what the
reduce side is asked to do. A round is one reader over all 64 partitions of
all 4 maps, consumed to the end: every block is local, so it is read in
process (no fetch processes), checksum-verified and decoded.

- ``plain``: records as they come;
- ``sum``: a sum aggregator on the reduce side (200k records -> 50k keys);
- ``sorted``: ``key_ordering=True`` (an external sort of all 200k by key).

Records per second = ``extra_info["records"]`` (records read) / mean.
"""

from __future__ import annotations

import operator
from collections import Counter

import pytest

from conftest import NUM_PARTITIONS, per_element
from shuffle.aggregator import Aggregator
from shuffle.dependency import ShuffleDependency
from shuffle.manager import SortShuffleManager
from shuffle.partitioner import HashPartitioner

NUM_MAPS = 4
SUM = Aggregator.from_reduce(operator.add)
KINDS = {
    "plain": {},
    "sum": {"aggregator": SUM},
    "sorted": {"key_ordering": True},
}


@pytest.fixture(scope="module")
def written(tmp_path_factory, int_records):
    """(manager, {kind: handle}) with the records written once per kind."""
    local_dir = tmp_path_factory.mktemp("reader")
    per_map = len(int_records) // NUM_MAPS
    maps = [int_records[m * per_map:(m + 1) * per_map] for m in range(NUM_MAPS)]
    with SortShuffleManager({"spark.shuffle.sync": "false"}, local_dir=local_dir) as manager:
        handles = {}
        for shuffle_id, (kind, options) in enumerate(KINDS.items()):
            dep = ShuffleDependency(shuffle_id, NUM_MAPS, HashPartitioner(NUM_PARTITIONS), **options)
            handle = handles[kind] = manager.register_shuffle(dep)
            for map_id, records in enumerate(maps):
                manager.get_writer(handle, map_id).write(iter(records))
        yield manager, handles
    assert not list(local_dir.iterdir())


@pytest.mark.parametrize("kind", list(KINDS))
def test_read_all_partitions(benchmark, written, int_records, kind):
    manager, handles = written
    benchmark.group = "reader: 4 maps x 50k (int, int) records, 64 partitions, all local"
    per_element(benchmark, len(int_records))
    readers = []

    def read() -> list:
        reader = manager.get_reader(handles[kind], 0, NUM_PARTITIONS)
        readers.append(reader)
        return list(reader.read())

    out = benchmark(read)
    assert all(r.metrics.records_read == len(int_records) for r in readers)
    assert readers[-1].metrics.local_blocks_fetched == NUM_MAPS * NUM_PARTITIONS
    if kind == "sum":
        expected: Counter = Counter()
        for key, value in int_records:
            expected[key] += value
        assert dict(out) == dict(expected) and len(out) == len(expected)
    elif kind == "sorted":
        assert [k for k, _ in out] == sorted(k for k, _ in int_records)
        assert Counter(out) == Counter(int_records)
    else:
        assert Counter(out) == Counter(int_records)
    assert not [p for p in manager.local_dir.iterdir() if p.name.startswith("temp_")]
