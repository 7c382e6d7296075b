"""Where each map output lives and how big its blocks are: MapStatus and MapOutputTracker.

A writer reports one :class:`MapStatus` per committed map output; the tracker
keeps them per shuffle and turns them into a reducer's fetch plan (which
blocks, from which location, how many bytes). This module holds metadata only:
it never opens a shuffle file, and it never decides to rerun a map (the
scheduler does, when a reader raises MetadataFetchFailedError).

Unlike Spark, statuses keep exact byte sizes. Spark's one-byte size encoding is
provided (:func:`compress_size`, :func:`decompress_size`) for study and for
anyone who needs to exchange statuses compactly.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from operator import index as as_int
from typing import Optional

from shuffle.errors import MetadataFetchFailedError, ShuffleError

__all__ = [
    "BlockManagerId",
    "MapStatus",
    "ShuffleBlockId",
    "ShuffleBlockBatchId",
    "MapOutputTracker",
    "compress_size",
    "decompress_size",
]

_LOG_BASE = 1.1


def compress_size(size: int) -> int:
    """Spark's one-byte size: 0 -> 0, 1 -> 1, else ceil(log_1.1(size)) capped at 255.

    The byte decodes (:func:`decompress_size`) to within 10% of ``size`` up to
    about 35.9 GB; a non-empty block never encodes to 0.
    """
    if size < 0:
        raise ValueError(f"size must be non-negative, got {size}")
    if size <= 1:
        return size
    return min(255, math.ceil(math.log(size) / math.log(_LOG_BASE)))


def decompress_size(byte: int) -> int:
    """The size a one-byte encoding stands for: 0 -> 0, else floor(1.1 ** byte)."""
    if not 0 <= byte <= 255:
        raise ValueError(f"a compressed size is one byte (0..255), got {byte}")
    return 0 if byte == 0 else int(_LOG_BASE**byte)


@dataclass(frozen=True)
class BlockManagerId:
    """The executor that holds map outputs: its id, its host, and its local directory."""

    executor_id: str
    host: str
    local_dir: str

    def __str__(self) -> str:
        return f"executor {self.executor_id} on {self.host} ({self.local_dir})"


@dataclass(frozen=True)
class MapStatus:
    """One committed map output: where it is and the exact bytes of each reduce partition.

    ``partition_lengths`` are the committed lengths the resolver returned, so
    they match the index file. Any sequence is stored as a tuple of ints.
    """

    location: BlockManagerId
    map_id: int
    partition_lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        lengths = tuple(as_int(n) for n in self.partition_lengths)
        if any(n < 0 for n in lengths):
            raise ShuffleError(f"map {self.map_id} reports a negative partition length: {lengths}")
        object.__setattr__(self, "partition_lengths", lengths)

    @property
    def num_partitions(self) -> int:
        return len(self.partition_lengths)

    def size_for_block(self, reduce_id: int) -> int:
        """Bytes of partition ``reduce_id`` in this map's output."""
        return self.partition_lengths[reduce_id]


@dataclass(frozen=True)
class ShuffleBlockId:
    """One reduce partition of one map output."""

    shuffle_id: int
    map_id: int
    reduce_id: int

    @property
    def name(self) -> str:
        return f"shuffle_{self.shuffle_id}_{self.map_id}_{self.reduce_id}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ShuffleBlockBatchId:
    """Reduce partitions [start_reduce_id, end_reduce_id) of one map output, read as one range."""

    shuffle_id: int
    map_id: int
    start_reduce_id: int
    end_reduce_id: int

    @property
    def name(self) -> str:
        return f"shuffle_{self.shuffle_id}_{self.map_id}_{self.start_reduce_id}_{self.end_reduce_id}"

    def __str__(self) -> str:
        return self.name


BlockPlan = list[tuple[BlockManagerId, list[tuple[ShuffleBlockId, int, int]]]]


class MapOutputTracker:
    """The map statuses of every registered shuffle; safe to share between threads.

    Scheduler-side calls (register, unregister, missing_maps) raise ShuffleError
    for a shuffle that is not registered. Reader-side lookups (get_statuses,
    get_map_sizes_by_range) raise MetadataFetchFailedError instead, since a
    reader that cannot find an output needs its maps rerun.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[int, list[Optional[MapStatus]]] = {}

    def __repr__(self) -> str:
        with self._lock:
            return f"MapOutputTracker(shuffles={sorted(self._statuses)})"

    def _known(self, shuffle_id: int) -> list[Optional[MapStatus]]:
        try:
            return self._statuses[shuffle_id]
        except KeyError:
            raise ShuffleError(f"shuffle {shuffle_id} is not registered") from None

    def register_shuffle(self, shuffle_id: int, num_maps: int) -> None:
        """Start tracking a shuffle of ``num_maps`` map tasks; ShuffleError if already tracked."""
        if as_int(num_maps) < 0:
            raise ShuffleError(f"num_maps must be non-negative, got {num_maps}")
        with self._lock:
            if shuffle_id in self._statuses:
                raise ShuffleError(f"shuffle {shuffle_id} is already registered")
            self._statuses[shuffle_id] = [None] * num_maps

    def register_map_output(self, shuffle_id: int, status: MapStatus) -> None:
        """Record (or replace) the output of map ``status.map_id``."""
        with self._lock:
            statuses = self._known(shuffle_id)
            if not 0 <= status.map_id < len(statuses):
                raise ShuffleError(
                    f"map {status.map_id} is out of range for shuffle {shuffle_id} "
                    f"of {len(statuses)} maps"
                )
            statuses[status.map_id] = status

    def unregister_map_output(
        self, shuffle_id: int, map_id: int, location: Optional[BlockManagerId] = None
    ) -> None:
        """Forget one map's output, so it is reported missing.

        With ``location``, only an output at that location is forgotten: a newer
        output registered by a rerun elsewhere survives a late failure report.
        """
        with self._lock:
            statuses = self._known(shuffle_id)
            if not 0 <= map_id < len(statuses):
                raise ShuffleError(f"map {map_id} is out of range for shuffle {shuffle_id}")
            current = statuses[map_id]
            if current is not None and (location is None or current.location == location):
                statuses[map_id] = None

    def unregister_outputs_on_executor(self, executor_id: str) -> int:
        """Forget every output held by ``executor_id`` (it was lost); returns how many."""
        removed = 0
        with self._lock:
            for statuses in self._statuses.values():
                for i, status in enumerate(statuses):
                    if status is not None and status.location.executor_id == executor_id:
                        statuses[i] = None
                        removed += 1
        return removed

    def unregister_shuffle(self, shuffle_id: int) -> None:
        """Stop tracking a shuffle; unknown ids are ignored."""
        with self._lock:
            self._statuses.pop(shuffle_id, None)

    def contains_shuffle(self, shuffle_id: int) -> bool:
        with self._lock:
            return shuffle_id in self._statuses

    def missing_maps(self, shuffle_id: int) -> list[int]:
        """Map ids with no registered output, ascending."""
        with self._lock:
            return [i for i, s in enumerate(self._known(shuffle_id)) if s is None]

    def get_statuses(self, shuffle_id: int) -> list[Optional[MapStatus]]:
        """A copy of the shuffle's statuses by map id (None where missing)."""
        with self._lock:
            statuses = self._statuses.get(shuffle_id)
            if statuses is None:
                raise MetadataFetchFailedError(shuffle_id, None, f"shuffle {shuffle_id} is not registered")
            return list(statuses)

    def get_map_sizes_by_range(
        self,
        shuffle_id: int,
        start_map: int,
        end_map: int,
        start_partition: int,
        end_partition: int,
    ) -> BlockPlan:
        """The fetch plan for maps [start_map, end_map) x partitions [start_partition, end_partition).

        One entry per location, in the order its first non-empty block is met; within it,
        ``(block id, size, map index)`` map by map, then reduce id ascending.
        Empty blocks are left out. A missing map output raises
        MetadataFetchFailedError naming the shuffle and the map.
        """
        statuses = self.get_statuses(shuffle_id)
        if not 0 <= start_map <= end_map <= len(statuses):
            raise ShuffleError(
                f"map range [{start_map}, {end_map}) is outside shuffle {shuffle_id} of {len(statuses)} maps"
            )
        if not 0 <= start_partition <= end_partition:
            raise ShuffleError(f"bad partition range [{start_partition}, {end_partition})")
        plan: dict[BlockManagerId, list[tuple[ShuffleBlockId, int, int]]] = {}
        for map_index in range(start_map, end_map):
            status = statuses[map_index]
            if status is None:
                raise MetadataFetchFailedError(
                    shuffle_id, map_index, f"missing an output location for shuffle {shuffle_id} map {map_index}"
                )
            if end_partition > status.num_partitions:
                raise ShuffleError(
                    f"partition range [{start_partition}, {end_partition}) is outside map {map_index} "
                    f"of shuffle {shuffle_id}, which has {status.num_partitions} partitions"
                )
            lengths = status.partition_lengths
            for reduce_id in range(start_partition, end_partition):
                size = lengths[reduce_id]
                if size:
                    block = ShuffleBlockId(shuffle_id, status.map_id, reduce_id)
                    plan.setdefault(status.location, []).append((block, size, map_index))
        return list(plan.items())
