"""``SortShuffleManager``: registers shuffles, chooses their writer, builds writers and readers.

The writer is chosen once per shuffle, as Spark's ``registerShuffle`` does
(DESIGN.md §5): **bypass** when nothing is combined on the map side and there
are at most ``spark.shuffle.sort.bypassMergeThreshold`` partitions; else
**serialized** when the serializer is relocatable, nothing is combined on the
map side and the partition ids fit the packed pointer's 24 bits; else
**sort**. ``shuffle.writer.force`` overrides the choice for study and
benchmarks, and refuses (``ConfigError``) where that writer cannot work.

The manager owns one executor's collaborators: its conf, local directory,
resolver, memory pool, and a tracker (its own, or the driver's when one is
passed in). ``stop()`` deletes every file it wrote and a temp local directory
it created.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from shuffle.columnar.batch_writer import BatchShuffleWriter
from shuffle.conf import ConfValue, ShuffleConf
from shuffle.dependency import ShuffleDependency, ShuffleHandle
from shuffle.errors import ConfigError, ShuffleError
from shuffle.kernels import load
from shuffle.map_output import BlockManagerId, MapOutputTracker
from shuffle.memory import ExecutionMemoryPool, TaskMemoryManager, shuffle_pool_size
from shuffle.resolver import IndexShuffleBlockResolver
from shuffle.write.base import ShuffleWriter, WriterContext
from shuffle.write.bypass import BypassMergeSortShuffleWriter
from shuffle.write.serialized import SerializedShuffleWriter
from shuffle.write.sort import SortShuffleWriter

__all__ = ["SortShuffleManager", "choose_writer"]

logger = logging.getLogger(__name__)

# Partition ids must fit the packed pointer's partition bits.
MAX_SERIALIZED_PARTITIONS = load("pointers").MAX_PARTITION_ID + 1

_WRITERS = {
    "bypass": BypassMergeSortShuffleWriter,
    "serialized": SerializedShuffleWriter,
    "sort": SortShuffleWriter,
    "columnar": BatchShuffleWriter,
}


def choose_writer(dep: ShuffleDependency, conf: ShuffleConf) -> Tuple[str, str]:
    """The writer kind for ``dep`` and the reason, as Spark's ``registerShuffle`` decides."""
    if getattr(dep, "record_format", "objects") == "batches":
        return "columnar", "the records are (keys, values) numpy batches"
    n = dep.num_partitions
    threshold = conf.get_int("spark.shuffle.sort.bypassMergeThreshold")
    assert threshold is not None  # has a default
    serialized_refusal = _serialized_refusal(dep)
    forced = conf.get("shuffle.writer.force")
    if forced is not None:
        refusal = {"bypass": _bypass_refusal(dep), "serialized": serialized_refusal, "sort": None}[forced]
        if refusal is not None:
            raise ConfigError("shuffle.writer.force", forced, f"a writer that can run this shuffle ({refusal})")
        return forced, "forced by shuffle.writer.force"
    if not dep.map_side_combine and n <= threshold:
        return "bypass", f"no map-side combine and {n} <= {threshold} partitions"
    if serialized_refusal is None:
        return "serialized", "relocatable serializer, no map-side combine"
    logger.debug("shuffle %d: serialized writer not used: %s", dep.shuffle_id, serialized_refusal)
    return "sort", serialized_refusal


def _bypass_refusal(dep: ShuffleDependency) -> Optional[str]:
    return "the bypass writer cannot combine on the map side" if dep.map_side_combine else None


def _serialized_refusal(dep: ShuffleDependency) -> Optional[str]:
    if not dep.serializer.relocatable:
        return f"serializer {type(dep.serializer).__name__} does not support relocation of serialized records"
    if dep.map_side_combine:
        return "the serialized writer cannot combine on the map side"
    if dep.num_partitions > MAX_SERIALIZED_PARTITIONS:
        return f"{dep.num_partitions} partitions exceed the packed pointer's {MAX_SERIALIZED_PARTITIONS}"
    return None


class SortShuffleManager:
    """One executor's shuffle service; a context manager whose exit calls :meth:`stop`."""

    def __init__(
        self,
        conf: Union[ShuffleConf, Mapping[str, ConfValue], None] = None,
        local_dir: Union[str, Path, None] = None,
        *,
        executor_id: str = "driver",
        tracker: Optional[MapOutputTracker] = None,
        memory_pool: Optional[ExecutionMemoryPool] = None,
    ) -> None:
        self.conf = conf if isinstance(conf, ShuffleConf) else ShuffleConf(conf)
        self._owns_local_dir = local_dir is None and self.conf.get("spark.local.dir") is None
        if local_dir is None:
            parent = self.conf.get("spark.local.dir")
            local_dir = tempfile.mkdtemp(prefix="shuffle-", dir=parent)
        self.local_dir = Path(local_dir)
        algorithm = (
            self.conf.get("spark.shuffle.checksum.algorithm")
            if self.conf.get_bool("spark.shuffle.checksum.enabled") else None
        )
        self.resolver = IndexShuffleBlockResolver(
            self.local_dir, checksum_algorithm=algorithm, sync=bool(self.conf.get_bool("spark.shuffle.sync"))
        )
        self.tracker = tracker if tracker is not None else MapOutputTracker()
        self.location = BlockManagerId(executor_id, socket.gethostname(), str(self.local_dir))
        self.memory_pool = memory_pool if memory_pool is not None else ExecutionMemoryPool(shuffle_pool_size(self.conf))
        self._handles: Dict[int, ShuffleHandle] = {}
        self._task_ids = itertools.count()
        self._stopped = False

    def register_shuffle(self, dependency: ShuffleDependency) -> ShuffleHandle:
        """Choose the writer for ``dependency`` and register it with the tracker."""
        self._check_running()
        kind, reason = choose_writer(dependency, self.conf)
        handle = ShuffleHandle(dependency.shuffle_id, dependency, kind, reason)
        self._handles[dependency.shuffle_id] = handle
        if not self.tracker.contains_shuffle(dependency.shuffle_id):
            self.tracker.register_shuffle(dependency.shuffle_id, dependency.num_maps)
        logger.debug("shuffle %d uses the %s writer: %s", dependency.shuffle_id, kind, reason)
        return handle

    def get_writer(self, handle: ShuffleHandle, map_id: int, task_id: Optional[int] = None) -> ShuffleWriter:
        """A writer for map ``map_id`` of ``handle``'s shuffle, of the kind the handle chose."""
        self._check_running()
        memory = TaskMemoryManager(self.memory_pool, next(self._task_ids) if task_id is None else task_id)
        context = WriterContext(self.conf, self.resolver, self.location, memory, self.tracker)
        return _WRITERS[handle.kind](handle, map_id, context)

    def get_reader(
        self,
        handle: ShuffleHandle,
        start_partition: int,
        end_partition: int,
        start_map_index: int = 0,
        end_map_index: Optional[int] = None,
        task_id: Optional[int] = None,
    ) -> "ShuffleReader":
        """A reader of partitions ``[start_partition, end_partition)`` of maps ``[start_map_index, end_map_index)``."""
        from shuffle.read.reader import ShuffleReader  # the read side imports the manager's collaborators

        self._check_running()
        memory = TaskMemoryManager(self.memory_pool, next(self._task_ids) if task_id is None else task_id)
        if handle.kind == "columnar":
            from shuffle.columnar.batch_reader import BatchShuffleReader
            reader: Any = BatchShuffleReader
        else:
            reader = ShuffleReader
        return reader(
            handle, start_partition, end_partition, start_map_index, end_map_index,
            conf=self.conf, tracker=self.tracker, location=self.location, memory=memory,
            local_dir=self.local_dir,
        )

    def unregister_shuffle(self, shuffle_id: int) -> bool:
        """Forget shuffle ``shuffle_id`` and delete its files; False if it was not registered."""
        known = self._handles.pop(shuffle_id, None) is not None
        if self.tracker.contains_shuffle(shuffle_id):
            self.tracker.unregister_shuffle(shuffle_id)
        self.resolver.remove_shuffle(shuffle_id)
        return known

    def stop(self) -> None:
        """Delete every shuffle's files (and the local dir if the manager created it). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for shuffle_id in list(self._handles):
            self.unregister_shuffle(shuffle_id)
        if self._owns_local_dir:
            shutil.rmtree(self.local_dir, ignore_errors=True)

    def _check_running(self) -> None:
        if self._stopped:
            raise ShuffleError("SortShuffleManager was stopped")

    def __enter__(self) -> "SortShuffleManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
