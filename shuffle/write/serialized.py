"""The serialized writer: records serialized at once, sorted as bytes by partition.

Spark's ``UnsafeShuffleWriter`` (reference §3.4; DESIGN.md §1, §5). Chosen when
the serializer is relocatable (a record's bytes can be cut out and
concatenated with others), nothing is combined on the map side and partition
ids fit the packed pointer's 24 bits. Records are taken in chunks: one kernel
call gives the chunk's partition ids, one serializer call its records' bytes,
one kernel call copies them into the record buffer
(:class:`~shuffle.write.serialized_sorter.ShuffleExternalSorter`). No record
object is kept once serialized, so memory is bytes, counted exactly.

At the end, if nothing was spilled, each partition's bytes go from memory
straight into the map output. Otherwise the rest of the buffer becomes the
last spill file and the spills are merged by byte concatenation (Spark's fast
merge): for each partition in order, its block from each spill in spill
order, copied by the kernel. Both layers of a block are concatenable
(``shuffle.blocks``), so records are never deserialized on the map side, and
the checksums computed while the spills were written are those of the output.

This module never decodes records and never names files: spill paths come
from the task's context, output files from the resolver.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Any, Iterator, List, Optional, Tuple

from shuffle.errors import SerializationError
from shuffle.write.base import Record, ShuffleWriter
from shuffle.write.output import MapOutputWriter
from shuffle.write.serialized_sorter import ShuffleExternalSorter, SpillInfo, page_size_for

__all__ = ["SerializedShuffleWriter"]

logger = logging.getLogger(__name__)

# Records per chunk: enough to amortise the kernel and serializer calls...
CHUNK_RECORDS = 4096
# ...but a chunk of large records is cut to about this many bytes, which bounds
# both the serialized chunk held in Python and the memory overshoot of an
# insert the pool refused (see ShuffleExternalSorter._insert_part).
CHUNK_BYTES = 4 << 20


class SerializedShuffleWriter(ShuffleWriter):
    kind = "serialized"

    # Pages the record buffer may use; None is the kernel's maximum (the
    # packed pointer's 13 page bits). Tests lower it to exercise page spills.
    max_pages: Optional[int] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page_size = page_size_for(self.conf, self.context.memory.pool.pool_size)
        if not self.conf.get_bool("spark.shuffle.sort.useRadixSort"):
            logger.info("spark.shuffle.sort.useRadixSort=false ignored: the record buffer only radix-sorts "
                        "(the output is the same: both sorts are stable by partition)")
        if not self.conf.get_bool("spark.shuffle.unsafe.fastMergeEnabled"):
            logger.info("spark.shuffle.unsafe.fastMergeEnabled=false ignored: every codec here is "
                        "concatenable, so spills are always merged by byte concatenation")
        self._sorter: Optional[ShuffleExternalSorter] = None

    def _write_records(self, records: Iterator[Record], output: MapOutputWriter) -> None:
        sorter = self._sorter = ShuffleExternalSorter(
            self.context.memory, self.conf, self.num_partitions, self.block_format,
            self.context.new_spill_path, output.checksums, self.metrics, self.page_size, self.max_pages,
            observer=self.context.observer,
        )
        dumps_records = self.dependency.serializer.dumps_records
        partition_ids = self.dependency.partitioner.partition_ids
        position, chunk_size = 0, CHUNK_RECORDS
        while True:
            chunk = list(itertools.islice(records, chunk_size))
            if not chunk:
                break
            try:
                serialized = dumps_records(chunk)  # also checks every record is a (key, value) pair
            except SerializationError as e:
                raise e.at(position + (e.position or 0)) from e.__cause__
            pids = partition_ids([record[0] for record in chunk])
            nbytes = sorter.insert(pids, serialized, position)
            position += len(chunk)
            chunk_size = max(1, min(CHUNK_RECORDS, CHUNK_BYTES * len(chunk) // max(nbytes, 1)))
        self.metrics.records_written += position
        if not sorter.spills:
            sorter.write_partitions(output)
        else:
            self._merge(sorter.close_and_get_spills(), output)

    def _merge(self, spills: List[SpillInfo], output: MapOutputWriter) -> None:
        """Per partition, that partition's block of each spill in spill order, by byte copy."""
        logger.debug("merging %d spills of map %d by concatenation", len(spills), self.map_id)
        # (partition, spill index) orders the segments exactly as the output needs them.
        segments = heapq.merge(*(_tagged(spill, i) for i, spill in enumerate(spills)))
        last_partition = [spill.segments[-1][0] for spill in spills]
        for pid, i, offset, length in segments:
            output.copy_range(pid, spills[i].path, offset, length)
            if pid == last_partition[i]:
                spills[i].path.unlink()  # done with this spill: free its disk now

    def _release(self) -> None:
        if self._sorter is not None:
            self._sorter.free()
            self._sorter = None


def _tagged(spill: SpillInfo, index: int) -> Iterator[Tuple[int, int, int, int]]:
    """``(partition, spill index, offset, length)`` for each segment of one spill."""
    for pid, offset, length in spill.segments:
        yield pid, index, offset, length
