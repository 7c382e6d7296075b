"""The columnar reader: a reduce task's ``(keys, values)`` batches of one batch shuffle.

The object path's ``ShuffleReader`` with columns instead of records, one step
per line: plan from the tracker, fetch with the same
:class:`~shuffle.read.fetcher.ShuffleBlockFetcher` (local reads, fetch
processes, flow control, retries, checksum verification), decode each
fetched segment's blocks (:func:`~shuffle.columnar.batch_format.decode_blocks`),
then what the dependency's ``reduce_op`` asks:

- ``none``: the batches as they arrive (streamed; nothing held);
- ``aggregate``: partials merged as blocks arrive (memory bounded by the
  distinct keys, not the rows), then finished, as one batch;
- ``group`` / ``sort``: the partition's rows sorted by key, as one batch.

A ``group``/``sort`` partition is held whole in memory, acquired from the
task's pool; when the pool grants less, the shortfall is logged (there is no
external columnar sort yet). ``read()`` and ``read_batches()`` are the same
generator; when it ends, is closed early or raises, the fetcher is closed and
the task's memory returned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from shuffle.columnar import aggregate
from shuffle.columnar.batch_format import decode_blocks
from shuffle.conf import ShuffleConf
from shuffle.dependency import ShuffleHandle
from shuffle.errors import ShuffleError
from shuffle.map_output import BlockManagerId, MapOutputTracker
from shuffle.memory import MemoryConsumer, TaskMemoryManager
from shuffle.metrics import ReadMetrics
from shuffle.read.fetcher import ShuffleBlockFetcher

__all__ = ["BatchShuffleReader"]

logger = logging.getLogger(__name__)

Batch = Tuple[np.ndarray, np.ndarray]

# Merge pending partials once they outnumber the merged ones by this factor (and this many rows).
_MERGE_FACTOR = 2
_MERGE_MIN_ROWS = 1 << 16


class BatchShuffleReader:
    """Reads reduce partitions ``[start, end)`` of maps ``[start_map, end_map)`` of a batch shuffle.

    Call order: :meth:`read_batches` (or :meth:`read`) once and consume it;
    ``metrics`` is complete once the read has ended.
    """

    def __init__(
        self,
        handle: ShuffleHandle,
        start_partition: int,
        end_partition: int,
        start_map_index: int = 0,
        end_map_index: Optional[int] = None,
        *,
        conf: ShuffleConf,
        tracker: MapOutputTracker,
        location: BlockManagerId,
        memory: TaskMemoryManager,
        local_dir: Path,
    ) -> None:
        dep = handle.dependency
        end_map = dep.num_maps if end_map_index is None else end_map_index
        if not 0 <= start_partition < end_partition <= dep.num_partitions:
            raise ShuffleError(f"reduce partitions [{start_partition}, {end_partition}) are not a non-empty range "
                               f"within [0, {dep.num_partitions}) of shuffle {handle.shuffle_id}")
        if not (0 <= start_map_index < end_map <= dep.num_maps or start_map_index == end_map == dep.num_maps == 0):
            raise ShuffleError(f"maps [{start_map_index}, {end_map}) are not a non-empty range "
                               f"within [0, {dep.num_maps}) of shuffle {handle.shuffle_id}")
        self.handle = handle
        self.dependency = dep
        self.start_partition, self.end_partition = start_partition, end_partition
        self.start_map, self.end_map = start_map_index, end_map
        self.conf = conf
        self.tracker = tracker
        self.location = location
        self.memory = memory
        self.local_dir = Path(local_dir)
        self.metrics = ReadMetrics()
        self._read_once = False
        self._fetcher: Optional[ShuffleBlockFetcher] = None

    def read_batches(self) -> Iterator[Batch]:
        """The partitions' ``(keys, values)`` batches, reduced as the dependency asks; once."""
        if self._read_once:
            raise ShuffleError("a BatchShuffleReader reads once; ask the manager for another reader")
        self._read_once = True
        return self._read()

    read = read_batches  # what the engine's TaskContext.read_shuffle calls

    def _read(self) -> Iterator[Batch]:
        consumer = MemoryConsumer(self.memory)
        try:
            plan = self.tracker.get_map_sizes_by_range(
                self.handle.shuffle_id, self.start_map, self.end_map, self.start_partition, self.end_partition)
            self._fetcher = ShuffleBlockFetcher(
                self.handle.shuffle_id, plan, local=self.location, conf=self.conf, metrics=self.metrics)
            batches = self._decode(self._fetcher)
            op = self.dependency.reduce_op
            if op == "aggregate":
                yield from self._aggregate(batches)
            elif op in ("group", "sort"):
                yield from self._sorted(batches, consumer)
            else:
                yield from batches
        finally:
            if self._fetcher is not None:
                self._fetcher.close()
            consumer.close()
            self.memory.release_all()

    def _decode(self, blocks: ShuffleBlockFetcher) -> Iterator[Batch]:
        for block in blocks:
            for keys, values in decode_blocks(block.data):
                self.metrics.records_read += keys.shape[0]
                yield keys, values

    def _aggregate(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        dep = self.dependency
        name = dep.aggregation
        combined = dep.map_combines
        merged: Optional[Batch] = None
        pending: List[Batch] = []
        pending_rows = 0
        for keys, values in batches:
            if not combined:
                keys, values = aggregate.combine(keys, values, name)
            pending.append((keys, values))
            pending_rows += keys.shape[0]
            merged_rows = merged[0].shape[0] if merged is not None else 0
            if pending_rows >= max(_MERGE_MIN_ROWS, _MERGE_FACTOR * merged_rows):
                merged = self._merge(merged, pending, name)
                pending, pending_rows = [], 0
        if pending or merged is not None:
            merged = self._merge(merged, pending, name)
        if merged is not None and merged[0].shape[0]:
            yield merged[0], aggregate.finish(merged[1], name)

    @staticmethod
    def _merge(merged: Optional[Batch], pending: List[Batch], name: str) -> Batch:
        parts = ([merged] if merged is not None else []) + pending
        if len(parts) == 1 and merged is not None:
            return merged
        keys = np.concatenate([k for k, _ in parts])
        values = np.concatenate([v for _, v in parts])
        return aggregate.merge(keys, values, name)

    def _sorted(self, batches: Iterator[Batch], consumer: MemoryConsumer) -> Iterator[Batch]:
        parts = list(batches)
        if self._fetcher is not None:
            self._fetcher.close()  # every block is here: stop the fetch processes before sorting
        if not parts:
            return
        size = sum(k.nbytes + v.nbytes for k, v in parts)
        granted = consumer.acquire(2 * size)  # the rows, and their sorted copy
        if granted < 2 * size:
            logger.info("shuffle %d partitions [%d, %d): sorting %d bytes in memory, %d granted by the pool "
                           "(columnar sorts do not spill)", self.handle.shuffle_id, self.start_partition,
                           self.end_partition, 2 * size, granted)
        keys = np.concatenate([k for k, _ in parts])
        values = np.concatenate([v for _, v in parts])
        del parts
        yield aggregate.sort_rows(keys, values, self.dependency.ascending)
