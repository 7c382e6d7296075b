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

from itertools import islice
from typing import Any, Iterator, Optional

from shuffle.errors import SerializationError
from shuffle.write.base import Record, ShuffleWriter
from shuffle.write.external_sorter import ExternalSorter
from shuffle.write.output import MapOutputWriter

__all__ = ["SortShuffleWriter"]

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
            sorter.insert_all(records)
            for pid, partition in sorter.partitioned_iterator():
                self.metrics.records_written += self._write_partition(pid, partition, output)
        finally:
            self.metrics.spill_count += sorter.spill_count
            self.metrics.memory_bytes_spilled += sorter.memory_bytes_spilled
            self.metrics.disk_bytes_spilled += sorter.disk_bytes_spilled

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
