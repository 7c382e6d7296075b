"""``ShuffleReader``: Spark's ``BlockStoreShuffleReader`` — fetch, decode, combine, sort.

One reader reads reduce partitions ``[start, end)`` of maps
``[start_map, end_map)`` of one shuffle. The pipeline, one step each:

1. plan: the tracker's non-empty blocks for those ranges, by location;
2. fetch: :class:`ShuffleBlockFetcher` (local and host-local blocks in
   process, others through fetch processes; checksums verified);
3. decode each block with the shuffle's block format;
4. combine, when the dependency has an aggregator: values (or, when the map
   side already combined, combiners) are folded in an ``ExternalSorter``
   with one partition, which spills under memory pressure and orders by key
   when the dependency also asks for key ordering; ``group_by_key`` groups by
   hash-sorting instead, so one key's values may exceed memory;
5. sort by key, when asked and nothing was combined, in the same sorter.

``read()`` is a generator; when it ends, is closed early or raises, the
fetcher's processes are reaped, sorter spills deleted and memory returned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

from shuffle.aggregator import Aggregator, GroupByAggregator
from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.dependency import ShuffleHandle
from shuffle.errors import ShuffleError
from shuffle.kernels import load
from shuffle.map_output import BlockManagerId, MapOutputTracker
from shuffle.memory import TaskMemoryManager
from shuffle.metrics import ReadMetrics
from shuffle.read.fetcher import ShuffleBlockFetcher
from shuffle.read.group import group_hash_sorted, new_group_spill_path
from shuffle.write.external_sorter import ExternalSorter

__all__ = ["ShuffleReader"]

logger = logging.getLogger(__name__)

Record = Tuple[Any, Any]

# A key's grouped values stay in memory up to this many before batches go to disk,
# unless spark.shuffle.spill.numElementsForceSpillThreshold asks for fewer.
GROUP_VALUES_IN_MEMORY = 100_000


class ShuffleReader:
    """Reads a range of reduce partitions of one shuffle; see the module docstring."""

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
            raise ShuffleError(f"reduce partitions [{start_partition}, {end_partition}) are not within "
                               f"[0, {dep.num_partitions}) of shuffle {handle.shuffle_id}")
        if not 0 <= start_map_index <= end_map <= dep.num_maps:
            raise ShuffleError(f"maps [{start_map_index}, {end_map}) are not within "
                               f"[0, {dep.num_maps}) of shuffle {handle.shuffle_id}")
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
        self.block_format = BlockFormat.for_shuffle(conf, dep.serializer)
        self.spill_format = BlockFormat.for_spills(conf, dep.serializer)
        self._spill_files: list = []

    def read(self) -> Iterator[Record]:
        """The records, combined and sorted as the dependency asks."""
        dep = self.dependency
        plan = self.tracker.get_map_sizes_by_range(
            self.handle.shuffle_id, self.start_map, self.end_map, self.start_partition, self.end_partition)
        fetcher = ShuffleBlockFetcher(self.handle.shuffle_id, plan, local=self.location,
                                      conf=self.conf, metrics=self.metrics)
        sorter: Optional[ExternalSorter] = None
        try:
            records = self._decode(fetcher)
            if isinstance(dep.aggregator, GroupByAggregator):
                sorter = self._sorter(None, key_ordering=True, sort_key=load("hashing").portable_hash)
                sorter.insert_all(records)
                fetcher.close()
                # Group spill files belong to their ResultIterables, which may outlive
                # this generator; they are deleted when those are garbage-collected.
                yield from group_hash_sorted(sorter.iterator(), self.spill_format,
                                             lambda: new_group_spill_path(self.local_dir),
                                             self._group_values_in_memory())
            elif dep.aggregator is not None:
                aggregator = (_combiners_aggregator(dep.aggregator) if dep.map_side_combine else dep.aggregator)
                sorter = self._sorter(aggregator, dep.key_ordering, dep.sort_key)
                sorter.insert_all(records)
                fetcher.close()
                yield from sorter.iterator()
            elif dep.key_ordering:
                sorter = self._sorter(None, True, dep.sort_key)
                sorter.insert_all(records)
                fetcher.close()
                yield from sorter.iterator()
            else:
                yield from records
        finally:
            fetcher.close()
            if sorter is not None:
                self.metrics.spill_count += sorter.spill_count
                self.metrics.memory_bytes_spilled += sorter.memory_bytes_spilled
                self.metrics.disk_bytes_spilled += sorter.disk_bytes_spilled
                sorter.stop()
            for path in self._spill_files:
                path.unlink(missing_ok=True)
            self.memory.release_all()

    def close(self) -> None:
        """Nothing to do beyond what ``read()``'s generator does when closed; kept for symmetry."""

    def _decode(self, fetcher: ShuffleBlockFetcher) -> Iterator[Record]:
        decode = self.block_format.decode
        for block in fetcher:
            count = 0
            for record in decode(block.data):
                count += 1
                yield record
            self.metrics.records_read += count

    def _sorter(self, aggregator: Optional[Aggregator], key_ordering: bool, sort_key: Any) -> ExternalSorter:
        return ExternalSorter(
            memory=self.memory, conf=self.conf, spill_format=self.spill_format,
            new_spill_path=self._new_spill_path, num_partitions=1, aggregator=aggregator,
            key_ordering=key_ordering, ascending=self.dependency.ascending if key_ordering else True,
            sort_key=sort_key,
        )

    def _new_spill_path(self) -> Path:
        path = new_group_spill_path(self.local_dir)
        self._spill_files.append(path)
        return path

    def _group_values_in_memory(self) -> int:
        forced = self.conf.get_int("spark.shuffle.spill.numElementsForceSpillThreshold")
        assert forced is not None  # has a default
        return max(1, min(GROUP_VALUES_IN_MEMORY, forced))


def _combiners_aggregator(aggregator: Aggregator) -> Aggregator:
    """Maps combined already: the reduce side merges combiners (Spark's identity/mergeCombiners)."""
    return Aggregator(_identity, aggregator.merge_combiners, aggregator.merge_combiners)


def _identity(value: Any) -> Any:
    return value
