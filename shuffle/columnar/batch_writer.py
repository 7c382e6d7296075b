"""The columnar writer: ``(keys, values)`` numpy batches into one committed map output.

Spark's sort-based writer for fixed-width rows (Tungsten's idea, numpy's
means): no Python object per record. Each batch is checked against the
shuffle's schema (the first batch sets it; an object record or a dtype change
is a ``BatchSchemaError``) and buffered, as views, within the memory the
task's pool grants. When the pool refuses more, what is buffered is *sorted*
and spilled: partition ids computed for the whole column
(:mod:`shuffle.columnar.partitioning`), the columns counting-sorted by
partition in the kernel, each partition's slice combined with the named
aggregation when the dependency asks for map-side combine, and written as
one columnar block per partition (:mod:`shuffle.columnar.batch_format`). A
batch larger than the pool's grant is taken in chunks.

At commit, the buffered rest is sorted the same way; without spills its
blocks go straight to the :class:`MapOutputWriter`; with spills each partition
is the concatenation of its blocks from every spill, in spill order, then the
in-memory block: a merge by byte concatenation, since any concatenation of
blocks is a valid segment. Index, data and checksum files and the commit are
the object path's (``ShuffleWriter.write`` and the resolver).

Call order: ``write(batches)`` once (an iterable of ``(keys, values)``), or
``write_batch`` any number of times then ``commit()``; ``abort()`` drops an
unfinished write. The writer keeps views of the arrays it is given until it
has spilled or committed them: do not modify them in between.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from shuffle.columnar import aggregate
from shuffle.columnar.batch_format import ColumnSchema, as_batch, encode_block
from shuffle.columnar.partitioning import partition_ids
from shuffle.errors import ShuffleError
from shuffle.kernels import load
from shuffle.map_output import MapStatus
from shuffle.memory import MemoryConsumer
from shuffle.write.base import ShuffleWriter
from shuffle.write.output import MapOutputWriter, disk_errors

__all__ = ["BatchShuffleWriter"]

logger = logging.getLogger(__name__)

_columnar = load("columnar")

# Rows taken at once when the pool grants nothing: enough to make progress.
MIN_CHUNK_ROWS = 4096


@dataclass
class _Spill:
    path: Path
    offsets: List[int]  # partition p is bytes [offsets[p], offsets[p + 1])


class BatchShuffleWriter(ShuffleWriter):
    """Writes one map output of a batch shuffle; see the module docstring."""

    kind = "columnar"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dep = self.dependency
        self.schema: Optional[ColumnSchema] = None
        self._block_schema: Optional[ColumnSchema] = None  # of the blocks written: partials when combining
        self._aggregation = dep.aggregation if getattr(dep, "map_combines", False) else None
        self._consumer = MemoryConsumer(self.context.memory)
        self._buffered: List[Tuple[np.ndarray, np.ndarray]] = []
        self._buffered_bytes = 0
        self._spills: List[_Spill] = []
        self._batches = 0
        self._closed = False  # no more batches: committing, committed or aborted

    # ------------------------------------------------------------ input
    def write_batch(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Take one batch (may spill); ``BatchSchemaError`` if it does not fit the shuffle's schema."""
        if self._closed:
            raise ShuffleError(f"{type(self).__name__} for map {self.map_id} takes no more batches: "
                               "it was committed or aborted")
        index = self._batches
        self._batches += 1
        if self.schema is None:
            self.schema = ColumnSchema.of(keys, values, index)
            self._block_schema = self.schema
            if self._aggregation is not None:
                aggregate.check_aggregation(self._aggregation, self.schema.value_dtype, self.schema.value_shape)
                partial = aggregate.partial_dtype(self._aggregation, self.schema.value_dtype)
                self._block_schema = ColumnSchema(self.schema.key_dtype, partial)
        else:
            self.schema.check(keys, values, index)
        rows = keys.shape[0]
        self.metrics.records_written += rows
        row_bytes = max(1, self.schema.row_nbytes)
        start = 0
        while start < rows:
            wanted = (rows - start) * row_bytes
            granted = self._consumer.acquire(wanted)
            if granted < wanted and self._buffered:
                self._consumer.release(granted)
                self._spill()
                granted = self._consumer.acquire(wanted)
            take = min(rows - start, max(granted // row_bytes, MIN_CHUNK_ROWS))
            self._buffered.append((keys[start:start + take], values[start:start + take]))
            self._buffered_bytes += take * row_bytes
            self._consumer.release(max(0, granted - take * row_bytes))
            start += take
            if granted < take * row_bytes:  # over the grant: out it goes at once
                self._spill()

    def commit(self) -> MapStatus:
        """Commit the batches given to :meth:`write_batch`; returns the registered MapStatus."""
        return self.write(())

    def abort(self) -> None:
        """Drop everything given so far: spill files deleted, memory returned."""
        self._written = self._closed = True
        self._release()
        self.context.delete_spill_files()
        self.context.memory.release_all()

    def _write_records(self, records: Iterator[Any], output: MapOutputWriter) -> None:
        for item in records:
            self.write_batch(*as_batch(item, self._batches))
        self._closed = True
        self._merge_into(output)

    # ------------------------------------------------------------ sorting and spilling
    def _sorted_partitions(self) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        """The buffered rows by partition (combined when asked), then the buffer is empty."""
        batches, self._buffered = self._buffered, []
        if not batches:
            return
        keys = batches[0][0] if len(batches) == 1 else np.concatenate([k for k, _ in batches])
        values = batches[0][1] if len(batches) == 1 else np.concatenate([v for _, v in batches])
        del batches
        n = self.num_partitions
        if n == 1:
            sorted_keys, sorted_values, offsets = keys, values, np.array([0, keys.shape[0]], dtype=np.int64)
        else:
            ids = partition_ids(self.dependency.partitioner, keys)
            (sorted_keys, sorted_values), offsets = _columnar.counting_sort(ids, n, [keys, values])
            del ids
        del keys, values
        bounds = offsets.tolist()
        for p in np.flatnonzero(np.diff(offsets)).tolist():
            k, v = sorted_keys[bounds[p]:bounds[p + 1]], sorted_values[bounds[p]:bounds[p + 1]]
            if self._aggregation is not None:
                k, v = aggregate.combine(k, v, self._aggregation)
            yield p, k, v

    def _spill(self) -> None:
        if not self._buffered:
            return
        assert self._block_schema is not None
        path = self.context.new_spill_path()
        offsets = [0] * (self.num_partitions + 1)
        position = 0
        with disk_errors(path), open(path, "wb") as out:
            for p, k, v in self._sorted_partitions():
                for part in encode_block(k, v, self._block_schema, self.spill_format.codec):
                    out.write(part)
                    position += len(part) if not isinstance(part, memoryview) else part.nbytes
                offsets[p + 1] = position
        for p in range(1, len(offsets)):  # partitions with no rows end where the previous one did
            offsets[p] = max(offsets[p], offsets[p - 1])
        self._spills.append(_Spill(path, offsets))
        self.metrics.spill_count += 1
        self.metrics.memory_bytes_spilled += self._buffered_bytes
        self.metrics.disk_bytes_spilled += position
        logger.debug("columnar writer map %d spilled %d bytes to %s", self.map_id, position, path.name)
        self._buffered_bytes = 0
        self._consumer.release_all()

    def _merge_into(self, output: MapOutputWriter) -> None:
        """Every partition in order: its spilled blocks by concatenation, then the in-memory block."""
        assert self.schema is not None or not self._spills
        in_memory = self._sorted_partitions()
        pending = next(in_memory, None)
        files = [open(spill.path, "rb") for spill in self._spills]
        try:
            for p in range(self.num_partitions):
                for spill, f in zip(self._spills, files):
                    start, end = spill.offsets[p], spill.offsets[p + 1]
                    if end > start:
                        output.write(p, os.pread(f.fileno(), end - start, start))
                while pending is not None and pending[0] == p:
                    assert self._block_schema is not None
                    for part in encode_block(pending[1], pending[2], self._block_schema, self.block_format.codec):
                        output.write(p, part)
                    pending = next(in_memory, None)
        finally:
            for f in files:
                f.close()
            in_memory.close()

    def _release(self) -> None:
        self._buffered = []
        self._buffered_bytes = 0
        self._consumer.close()
