"""``ShuffleWriter``: the life of one map task's output, shared by the three writers.

Call order: build, ``write(records)`` exactly once, read ``metrics``. ``write``
either returns the committed ``MapStatus`` (already registered with the
tracker) or raises; in both cases every temp and spill file of the attempt is
gone and its memory is back in the pool when it returns. A subclass only
turns records into partition segments (``_write_records``) and lists the
files it made (``new_spill_path``); the commit, abort and clean-up live here
once.
"""

from __future__ import annotations

import logging
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.dependency import ShuffleHandle
from shuffle.errors import ShuffleError
from shuffle.map_output import BlockManagerId, MapOutputTracker, MapStatus
from shuffle.memory import TaskMemoryManager
from shuffle.metrics import WriteMetrics
from shuffle.resolver import IndexShuffleBlockResolver
from shuffle.write.observer import WriteObserver
from shuffle.write.output import MapOutputWriter

__all__ = ["ShuffleWriter", "WriterContext", "Record"]

logger = logging.getLogger(__name__)

Record = Tuple[Any, Any]


@dataclass
class WriterContext:
    """The collaborators a writer needs, passed in (never fetched from a global)."""

    conf: ShuffleConf
    resolver: IndexShuffleBlockResolver
    location: BlockManagerId
    memory: TaskMemoryManager
    tracker: Optional[MapOutputTracker] = None
    spill_files: List[Path] = field(default_factory=list)
    observer: Optional[WriteObserver] = None  # for study (shuffle explain); see shuffle.write.observer

    def new_spill_path(self) -> Path:
        """A fresh private file in the local dir, deleted when the task ends."""
        path = Path(self.resolver.local_dir) / f"temp_shuffle_{uuid.uuid4().hex}"
        self.spill_files.append(path)
        return path

    def delete_spill_files(self) -> None:
        for path in self.spill_files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.spill_files.clear()


class ShuffleWriter(ABC):
    """Writes one map output once; see the module docstring for the contract."""

    kind = ""

    def __init__(self, handle: ShuffleHandle, map_id: int, context: WriterContext) -> None:
        dep = handle.dependency
        if not 0 <= map_id < max(dep.num_maps, 1):
            raise ShuffleError(f"map_id {map_id} out of range for shuffle {handle.shuffle_id} with {dep.num_maps} maps")
        self.handle = handle
        self.dependency = dep
        self.map_id = map_id
        self.context = context
        self.conf = context.conf
        self.num_partitions = dep.num_partitions
        self.metrics = WriteMetrics()
        self.block_format = BlockFormat.for_shuffle(context.conf, dep.serializer)
        self.spill_format = BlockFormat.for_spills(context.conf, dep.serializer)
        self._written = False

    def write(self, records: Iterable[Record]) -> MapStatus:
        """Write every ``(key, value)`` record, commit, register and return the MapStatus."""
        if self._written:
            raise ShuffleError(f"{type(self).__name__} for map {self.map_id} was already used: a writer writes once")
        self._written = True
        started = time.perf_counter_ns()
        # The resolver names the checksum file, so its algorithm is the one to use.
        checksum = self.context.resolver.checksum_algorithm
        buffer_size = self.conf.get_bytes("spark.shuffle.unsafe.file.output.buffer")
        assert buffer_size is not None  # has a default
        output = MapOutputWriter(
            self.context.resolver, self.handle.shuffle_id, self.map_id, self.num_partitions, checksum, buffer_size
        )
        try:
            self._write_records(iter(records), output)
            lengths = output.commit()
        except BaseException:
            output.abort()
            raise
        finally:
            self._release()
            self.context.delete_spill_files()
            self.context.memory.release_all()
        self.metrics.bytes_written += output.bytes_written
        self.metrics.write_time_ns += time.perf_counter_ns() - started
        status = MapStatus(self.context.location, self.map_id, tuple(lengths))
        if self.context.tracker is not None:
            self.context.tracker.register_map_output(self.handle.shuffle_id, status)
        logger.debug("%s writer committed shuffle %d map %d: %d records, %d bytes",
                     self.kind, self.handle.shuffle_id, self.map_id, self.metrics.records_written, sum(lengths))
        return status

    @abstractmethod
    def _write_records(self, records: Iterator[Record], output: MapOutputWriter) -> None:
        """Turn every record into partition segments appended to ``output`` in partition order."""

    def _release(self) -> None:
        """Free in-memory buffers (called after success and failure alike)."""
