"""``ShuffleReader``: Spark's ``BlockStoreShuffleReader`` — fetch, decode, combine, sort.

One reader reads reduce partitions ``[start, end)`` of maps
``[start_map, end_map)`` of one shuffle. The pipeline, one step each:

1. plan: the tracker's non-empty blocks for those ranges, by location;
2. fetch: :class:`ShuffleBlockFetcher` (local and host-local blocks in
   process, others through fetch processes; checksums verified);
3. decode each block with the shuffle's block format (``records_read``);
4. combine, when the dependency has an aggregator, in an ``ExternalSorter``
   with one partition (Spark's ``ExternalAppendOnlyMap``): values with
   ``create_combiner``/``merge_value``, or, when the map side combined
   already, combiners with ``merge_combiners``. It spills under memory
   pressure and, when key ordering is asked for too, sorts in the same pass;
   ``group_by_key`` groups by sorting instead (:mod:`shuffle.read.group`), so
   one key's values may exceed memory;
5. sort by key, when asked and nothing was combined, in an ``ExternalSorter``.

``read()`` is a generator. When it ends, is closed early or raises, the
fetcher is closed (its processes reaped), sorters are stopped (every sort
spill deleted) and the task's memory is given back. Groups already handed
out stay readable (their files go with them when garbage-collected) until
:meth:`ShuffleReader.close`, which deletes what is left. This module never
names files beyond asking for private ``temp_shuffle_<uuid>`` paths in the
local directory, and never touches map outputs.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from contextlib import ExitStack
from functools import partial
from itertools import chain, count, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from shuffle.aggregator import Aggregator, GroupByAggregator
from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.dependency import ShuffleHandle
from shuffle.errors import ShuffleError
from shuffle.map_output import BlockManagerId, MapOutputTracker
from shuffle.memory import TaskMemoryManager
from shuffle.metrics import ReadMetrics
from shuffle.read.fetcher import ShuffleBlockFetcher
from shuffle.read.group import ExternalGroupBy
from shuffle.write.external_sorter import ExternalSorter

__all__ = ["ShuffleReader", "new_spill_path"]

logger = logging.getLogger(__name__)

Record = Tuple[Any, Any]

_data_of = attrgetter("data")
_first = itemgetter(0)


class ShuffleReader:
    """Reads a range of reduce partitions of one shuffle; see the module docstring.

    Call order: :meth:`read` once, consume (all of it or not), then
    :meth:`close` when the groups it handed out are no longer needed (also a
    context manager). ``metrics`` is complete once the read has ended.
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
        for name, value in (("start_partition", start_partition), ("end_partition", end_partition),
                            ("start_map_index", start_map_index), ("end_map_index", end_map)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ShuffleError(f"{name} must be an int, got {value!r}")
        if not 0 <= start_partition < end_partition <= dep.num_partitions:
            raise ShuffleError(f"reduce partitions [{start_partition}, {end_partition}) are not a non-empty range "
                               f"within [0, {dep.num_partitions}) of shuffle {handle.shuffle_id}")
        # A shuffle of no maps is read as [0, 0); otherwise the map range may not be empty either.
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
        self.block_format = BlockFormat.for_shuffle(conf, dep.serializer)
        self.spill_format = BlockFormat.for_spills(conf, dep.serializer)
        self._read_once = False
        # Weak: the generator's frame holds the reader, so a strong reference would make a
        # cycle and delay the clean-up of an abandoned read until the cyclic collector runs.
        self._stream: Optional["weakref.ref[Iterator[Record]]"] = None
        self._fetcher: Optional[ShuffleBlockFetcher] = None
        self._sorters: List[ExternalSorter] = []
        self._grouper: Optional[ExternalGroupBy] = None
        self._decoded = count()  # advanced once per record decoded

    def read(self) -> Iterator[Record]:
        """The records, combined and sorted as the dependency asks; can be called once."""
        if self._read_once:
            raise ShuffleError("a ShuffleReader reads once; ask the manager for another reader")
        self._read_once = True
        stream = self._read()
        self._stream = weakref.ref(stream)
        return stream

    def _read(self) -> Iterator[Record]:
        dep = self.dependency
        try:
            plan = self.tracker.get_map_sizes_by_range(
                self.handle.shuffle_id, self.start_map, self.end_map, self.start_partition, self.end_partition)
            fetcher = self._fetcher = ShuffleBlockFetcher(
                self.handle.shuffle_id, plan, local=self.location, conf=self.conf, metrics=self.metrics)
            records = self._decode(fetcher)
            if isinstance(dep.aggregator, GroupByAggregator):
                records = self._group(records)
            elif dep.aggregator is not None:
                records = self._combine(records, dep.aggregator)
            elif dep.key_ordering:
                records = self._sort(records)
            yield from records
        finally:
            self._finish()

    def _decode(self, blocks: Iterable[Any]) -> Iterator[Record]:
        """Every record of every block; counted by zipping with a counter, with no Python frame per record."""
        records = chain.from_iterable(map(self.block_format.decode, map(_data_of, blocks)))
        # zip asks the records first, so the counter moves only when a record came.
        return map(_first, zip(records, self._decoded))

    def _combine(self, records: Iterator[Record], aggregator: Aggregator) -> Iterator[Record]:
        """Spark's ExternalAppendOnlyMap (and the key sort, when asked, in the same sorter)."""
        if self.dependency.map_side_combine:
            aggregator = _combiners_aggregator(aggregator)
        sorter = self._new_sorter(aggregator)
        sorter.insert_all(records)
        self._end_fetch()
        return sorter.iterator()

    def _sort(self, records: Iterator[Record]) -> Iterator[Record]:
        sorter = self._new_sorter(None)
        sorter.insert_all(records)
        self._end_fetch()
        return sorter.iterator()

    def _group(self, records: Iterator[Record]) -> Iterator[Record]:
        dep = self.dependency
        if dep.map_side_combine:
            records = _flatten_lists(records)  # maps gathered lists already: group their values
        # A plain function, not a bound method: groups may outlive this reader.
        grouper = self._grouper = ExternalGroupBy(
            self.memory, self.conf, self.spill_format, partial(new_spill_path, self.local_dir),
            key_ordering=dep.key_ordering, ascending=dep.ascending, sort_key=dep.sort_key)
        grouper.insert_all(records)
        self._end_fetch()
        return grouper.groups()

    def _new_sorter(self, aggregator: Optional[Aggregator]) -> ExternalSorter:
        dep = self.dependency
        sorter = ExternalSorter(
            memory=self.memory, conf=self.conf, spill_format=self.spill_format,
            new_spill_path=self._new_spill_path, num_partitions=1, aggregator=aggregator,
            key_ordering=dep.key_ordering, ascending=dep.ascending, sort_key=dep.sort_key,
        )
        self._sorters.append(sorter)
        return sorter

    def _new_spill_path(self) -> Path:
        return new_spill_path(self.local_dir)

    def _end_fetch(self) -> None:
        # Every block is in the sorter: stop the fetch processes before the long merge.
        if self._fetcher is not None:
            self._fetcher.close()

    def _finish(self) -> None:
        """End of a read, however it ended: account, close, stop, delete, give memory back."""
        metrics = self.metrics
        metrics.records_read += next(self._decoded)
        self._decoded = count()
        with ExitStack() as stack:
            # Callbacks run last-in first-out and all of them run, even if one raises.
            stack.callback(self.memory.release_all)
            for spiller in (*self._sorters, *([self._grouper] if self._grouper is not None else [])):
                stack.callback(spiller.stop)
                metrics.spill_count += spiller.spill_count
                metrics.memory_bytes_spilled += spiller.memory_bytes_spilled
                metrics.disk_bytes_spilled += spiller.disk_bytes_spilled
            if self._fetcher is not None:
                stack.callback(self._fetcher.close)
        if metrics.spill_count:
            logger.debug("shuffle %d partitions [%d, %d): %d spills, %d bytes on disk", self.handle.shuffle_id,
                         self.start_partition, self.end_partition, metrics.spill_count, metrics.disk_bytes_spilled)

    def close(self) -> None:
        """End the read if it is still going, and delete the spill files of every group it handed out."""
        stream = self._stream() if self._stream is not None else None
        if stream is not None:
            stream.close()  # type: ignore[attr-defined]
        if self._grouper is not None:
            self._grouper.delete_groups()

    def __enter__(self) -> "ShuffleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_spill_path(local_dir: Path) -> Path:
    """A private spill file's path in ``local_dir`` (Spark's ``temp_shuffle_<uuid>`` block name)."""
    return Path(local_dir) / f"temp_shuffle_{uuid.uuid4()}"


def _combiners_aggregator(aggregator: Aggregator) -> Aggregator:
    """Maps combined already: the reduce side merges combiners (Spark's identity/mergeCombiners)."""
    return Aggregator.from_reduce(aggregator.merge_combiners)


def _flatten_lists(records: Iterator[Record]) -> Iterator[Record]:
    """``(key, [v1, v2])`` -> ``(key, v1), (key, v2)``, in C loops."""
    return chain.from_iterable(map(_spread, records))


def _spread(record: Record) -> Iterator[Record]:
    key, values = record
    return zip(repeat(key), values)
