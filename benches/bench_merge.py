"""The k-way merge of ``ExternalSorter``: sorted spill runs read back by partition.

The sort writer (and the reader, when it combines or sorts) inserts records
into an ``ExternalSorter``, which spills sorted runs; reading its output
merges, partition by partition, every spill with the last in-memory run. What
is timed is that read-back, over 200k (int, int) records (50k distinct keys)
in 64 partitions, spilled every 25k records (7 spill files and the in-memory
run: k = 8); the inserts and spills that build the runs are set-up, untimed.
One group, four ways of merging the same runs:

Set-up of ``concat`` and ``sorted`` partitions keys with ``HashPartitioner``
(the kernels ``shuffle.kernels`` chose); it is untimed, so they run once.

- ``concat``: no aggregator, no ordering: runs are concatenated (the decode
  cost every variant pays; the baseline);
- ``sorted``: ``key_ordering``: ``heapq.merge`` by key (no kernel involved);
- ``combined[native]`` / ``combined[twin]``: a sum aggregator: runs are
  ordered by ``portable_hash`` and merged on it, equal keys folded. The hash
  is the only kernel here; ``[twin]`` swaps the sorter's module-level
  ``_portable_hash`` for the twin's (and hands the sorter the twin's
  ``partition_ids``), which is what ``SHUFFLE_PUREPYTHON=1`` would run.

There is no compiled merge kernel: the merge is ``heapq.merge`` and
``itertools`` in C already (DESIGN.md §8).
"""

from __future__ import annotations

import operator
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import NUM_PARTITIONS, PEDANTIC_ROUNDS, per_element
from shuffle.aggregator import Aggregator
from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.memory import ExecutionMemoryPool, TaskMemoryManager
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.write import external_sorter
from shuffle.write.external_sorter import ExternalSorter

SPILL_EVERY = 25_000
GROUP = "ExternalSorter merge read-back: 200k records, 8 runs, 64 partitions"
SUM = Aggregator.from_reduce(operator.add)


def _setup(spill_dir: Path, records: list, partition_ids, **kwargs):
    """A set-up function for ``benchmark.pedantic``: a new sorter holding 8 sorted runs."""
    conf = ShuffleConf({"spark.shuffle.spill.numElementsForceSpillThreshold": str(SPILL_EVERY)})
    spill_format = BlockFormat.for_spills(conf, MsgpackSerializer())

    def setup():
        memory = TaskMemoryManager(ExecutionMemoryPool(1 << 30), task_id=0)
        sorter = ExternalSorter(
            memory, conf, spill_format, lambda: spill_dir / f"spill_{uuid.uuid4().hex}",
            num_partitions=NUM_PARTITIONS, partition_ids=partition_ids, **kwargs,
        )
        sorter.insert_all(records)
        assert sorter.spill_count == len(records) // (SPILL_EVERY + 1)
        return (sorter,), {}

    return setup


def _read_back(sorter: ExternalSorter) -> list:
    try:
        return [record for _, records in sorter.partitioned_iterator() for record in records]
    finally:
        sorter.stop()


def _partition_ids(kernels, num_partitions: int = NUM_PARTITIONS):
    partition_ids = kernels.load("hashing").partition_ids
    return lambda keys: partition_ids(keys, num_partitions)


def test_merge_concat(benchmark, tmp_path, int_records):
    benchmark.group = GROUP
    per_element(benchmark, len(int_records))
    setup = _setup(tmp_path, int_records, HashPartitioner(NUM_PARTITIONS).partition_ids)
    out = benchmark.pedantic(_read_back, setup=setup, rounds=PEDANTIC_ROUNDS)
    assert Counter(out) == Counter(int_records)
    assert not list(tmp_path.iterdir())


def test_merge_sorted(benchmark, tmp_path, int_records):
    benchmark.group = GROUP
    per_element(benchmark, len(int_records))
    setup = _setup(tmp_path, int_records, HashPartitioner(NUM_PARTITIONS).partition_ids, key_ordering=True)
    out = benchmark.pedantic(_read_back, setup=setup, rounds=PEDANTIC_ROUNDS)
    # int keys go to key % n; the sort and the merge are stable, as Python's sort is.
    assert out == sorted(int_records, key=lambda r: (r[0] % NUM_PARTITIONS, r[0]))
    assert not list(tmp_path.iterdir())


@pytest.fixture
def sorter_hash(impl, monkeypatch: pytest.MonkeyPatch):
    """Make the sorter rank combined runs with ``impl``'s portable_hash for this test."""
    monkeypatch.setattr(external_sorter, "_portable_hash", impl.load("hashing").portable_hash)
    return impl


def test_merge_combined(benchmark, tmp_path, int_records, sorter_hash):
    benchmark.group = GROUP
    per_element(benchmark, len(int_records))
    setup = _setup(tmp_path, int_records, _partition_ids(sorter_hash), aggregator=SUM)
    out = benchmark.pedantic(_read_back, setup=setup, rounds=PEDANTIC_ROUNDS)
    expected: Counter = Counter()
    for key, value in int_records:
        expected[key] += value
    assert dict(out) == dict(expected) and len(out) == len(expected)
    assert not list(tmp_path.iterdir())
