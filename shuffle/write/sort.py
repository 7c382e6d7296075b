"""The sort writer: records through an ExternalSorter, streamed into the map output.

Spark's ``SortShuffleWriter``, the writer for everything the other two
cannot do: map-side combine (the sorter combines by key, ordered by key when
the dependency asks for ordering) or too many partitions for bypass with a
serializer that is not relocatable. Without map-side combine the sorter
neither combines nor orders keys: the reader sorts (as Spark).

Each non-empty partition streams out of the sorter into one encoder, which is
compressed and appended to the output whenever it holds
``spark.shuffle.file.buffer`` bytes, so a partition is never built whole in
memory. This module owns only that loop: sorting, spilling and merging are the
sorter's, the commit is the base class's.
"""

from __future__ import annotations

import logging
from itertools import chain, islice
from typing import Any, Iterator, Optional

from shuffle.errors import SerializationError
from shuffle.write.base import Record, ShuffleWriter
from shuffle.write.bypass import BypassMergeSortShuffleWriter as _PassThrough
from shuffle.write.external_sorter import ExternalSorter
from shuffle.write.output import MapOutputWriter
from shuffle.write.records import malformed

__all__ = ["SortShuffleWriter"]

logger = logging.getLogger(__name__)

# Records encoded per call, at most; fewer when records are big, so the
# encoder overshoots the file buffer by little.
_WRITE_CHUNK_RECORDS = 1024


class SortShuffleWriter(ShuffleWriter):
    kind = "sort"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        file_buffer = self.conf.get_bytes("spark.shuffle.file.buffer")
        assert file_buffer is not None  # has a default
        self._file_buffer = file_buffer
        self._sorter: Optional[ExternalSorter] = None
        # Records per encoder call: starts at one to measure them, then adapts.
        self._chunk_records = 1

    def _write_records(self, records: Iterator[Record], output: MapOutputWriter) -> None:
        dep = self.dependency
        combine = dep.map_side_combine
        sorter = self._sorter = ExternalSorter(
            memory=self.context.memory,
            conf=self.conf,
            spill_format=self.spill_format,
            new_spill_path=self.context.new_spill_path,
            num_partitions=self.num_partitions,
            partition_ids=dep.partitioner.partition_ids,
            aggregator=dep.aggregator if combine else None,
            key_ordering=dep.key_ordering and combine,
            ascending=dep.ascending,
            sort_key=dep.sort_key,
            observer=self.context.observer,
        )
        try:
            if combine and self._judges_combining():
                sample_size = self.conf.get_int("shuffle.mapSideCombine.adaptive.minRecords")
                sorter.insert_all(islice(records, sample_size))  # streamed: the sorter accounts and spills
                if self._combining_does_not_pay(sorter, sorter.inserted, sample_size):
                    self._write_uncombined(sorter, records, output)
                    return
            sorter.insert_all(records)
            for pid, partition in sorter.partitioned_iterator():
                self.metrics.records_written += self._write_partition(pid, partition, output)
        finally:
            self.metrics.spill_count += sorter.spill_count
            self.metrics.memory_bytes_spilled += sorter.memory_bytes_spilled
            self.metrics.disk_bytes_spilled += sorter.disk_bytes_spilled

    # Adaptive partial aggregation (as Trino's adaptive-partial-aggregation; Spark's
    # RDD writer always combines): combining pays only when keys repeat within a map.
    # After the first records, if most of their keys were distinct, the rest go out
    # uncombined as (key, create_combiner(value)); the reducer merges combiners
    # either way, so the result is the same, and the map saves a large dict.

    def _judges_combining(self) -> bool:
        dep = self.dependency
        threshold = self.conf.get_int("spark.shuffle.sort.bypassMergeThreshold") or 0
        return (self.conf.get_bool("shuffle.mapSideCombine.adaptive") is True and not dep.key_ordering
                and self.num_partitions <= threshold  # the uncombined rest goes out the bypass way
                and self.context.observer is None)  # explain traces show the plain algorithm

    def _combining_does_not_pay(self, sorter: ExternalSorter, seen: int, sample_size: Optional[int]) -> bool:
        if seen < (sample_size or 0) or sorter.spill_count:
            return False  # a short input, or one that spilled already: combine as Spark does
        ratio = self.conf.get_float("shuffle.mapSideCombine.adaptive.uniqueKeysRatio")
        distinct = sorter.combined_keys
        if distinct <= seen * (ratio or 1.0):
            return False
        logger.debug("map %d: %d distinct keys in the first %d records; the rest is not combined",
                     self.map_id, distinct, seen)
        return True

    def _write_uncombined(self, sorter: ExternalSorter, rest: Iterator[Record], output: MapOutputWriter) -> None:
        """What was combined so far, then every other record as its own combiner, by partition."""
        aggregator = self.dependency.aggregator
        assert aggregator is not None
        first = sorter.inserted  # the input position of the first record of ``rest``
        combined = list(sorter.take_combined())
        tail = rest if aggregator.is_reduce else _as_combiners(rest, aggregator.create_combiner, first)
        passthrough = _PassThrough(self.handle, self.map_id, self.context)
        try:
            passthrough._write_records(chain(combined, tail), output)
        except SerializationError as e:
            if e.position is None or e.position < len(combined):
                raise
            # The pass-through counted the combined items first: name the record's input position.
            raise e.at(first + e.position - len(combined)) from e.__cause__
        finally:
            passthrough._release()
            self.metrics.records_written += passthrough.metrics.records_written

    def _write_partition(self, pid: int, records: Iterator[Record], output: MapOutputWriter) -> int:
        """Encode one partition's records into ``output`` a file buffer at a time; returns their count."""
        assert self._sorter is not None
        encoder = self.dependency.serializer.new_encoder()
        compress, file_buffer = self.block_format.compress, self._file_buffer
        written = 0
        while True:
            chunk = list(islice(records, self._chunk_records))
            if not chunk:
                break
            before = encoder.nbytes
            try:
                encoder.add_all(chunk)
            except SerializationError as e:
                raise self._sorter.locate(e, chunk) from e.__cause__
            written += len(chunk)
            per_record = max(1, (encoder.nbytes - before) // len(chunk))
            self._chunk_records = max(1, min(_WRITE_CHUNK_RECORDS, file_buffer // per_record))
            if encoder.nbytes >= file_buffer:
                output.write(pid, compress(encoder.take()))
        if encoder.count:
            output.write(pid, compress(encoder.take()))
        return written

    def _release(self) -> None:
        if self._sorter is not None:
            self._sorter.stop()


def _as_combiners(records: Iterator[Record], create: Any, first: int) -> Iterator[Record]:
    """``(key, create(value))`` per record; a record that is not an exact 2-tuple is named by position."""
    for position, record in enumerate(records, first):
        if type(record) is not tuple or len(record) != 2:
            raise malformed(record).at(position)
        yield record[0], create(record[1])
