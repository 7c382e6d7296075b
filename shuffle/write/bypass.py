"""The bypass writer: one file per reduce partition, concatenated at the end.

Spark's ``BypassMergeSortShuffleWriter``, used when nothing is combined on the
map side and there are few partitions (``spark.shuffle.sort.bypassMergeThreshold``).
Records are never sorted by key: a chunk of them is grouped by partition id
(stably, so each partition keeps the input order) and each group goes to its
partition's encoder in one call. An encoder is flushed (compressed,
checksummed) to its partition's temp file whenever it holds
``spark.shuffle.file.buffer`` bytes. A partition's file is created on
its first flush, so an empty partition costs neither a file nor a descriptor.
At the end the files are copied into the output in partition order by the
kernel (``copy_file_range``), never through Python, and deleted.

Memory is bounded by one file buffer per non-empty partition, which is why
this writer is only chosen for few partitions.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Optional

import numpy as np

from shuffle.errors import SerializationError
from shuffle.write.base import Record, ShuffleWriter
from shuffle.write.output import MapOutputWriter, disk_errors
from shuffle.write.records import all_tuples, first_malformed, gather, malformed

__all__ = ["BypassMergeSortShuffleWriter"]

# Records are partitioned in chunks: one kernel call computes a chunk's
# partition ids, instead of one Python call per record.
CHUNK_RECORDS = 4096


class BypassMergeSortShuffleWriter(ShuffleWriter):
    kind = "bypass"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n = self.num_partitions
        self._encoders: List[Any] = [None] * n
        self._files: List[Optional[BinaryIO]] = [None] * n
        self._paths: List[Optional[Path]] = [None] * n
        self._sizes = [0] * n
        file_buffer = self.conf.get_bytes("spark.shuffle.file.buffer")
        assert file_buffer is not None  # has a default
        self._file_buffer = file_buffer

    def _write_records(self, records: Iterator[Record], output: MapOutputWriter) -> None:
        partition_ids = self.dependency.partitioner.partition_ids
        encoders, new_encoder = self._encoders, self.dependency.serializer.new_encoder
        file_buffer = self._file_buffer
        position = 0
        while True:
            chunk = list(itertools.islice(records, CHUNK_RECORDS))
            if not chunk:
                break
            keys = _keys_of(chunk, position)
            pids = partition_ids(keys)
            # Group the chunk by partition (stable, so each partition keeps input order):
            # then one encoder call per partition present, not one per record.
            order = np.argsort(pids, kind="stable")
            ordered_pids = pids[order]
            starts = np.flatnonzero(np.diff(ordered_pids)) + 1
            ordered = gather(chunk, order.tolist())
            bounds = [0, *starts.tolist(), len(chunk)]
            for start, end in zip(bounds, bounds[1:]):
                pid = int(ordered_pids[start])
                encoder = encoders[pid]
                if encoder is None:
                    encoder = encoders[pid] = new_encoder()
                try:
                    encoder.add_all(ordered[start:end])
                except SerializationError:
                    raise self._first_unencodable(chunk, position) from None
                if encoder.nbytes >= file_buffer:
                    self._flush(pid, output)
            position += len(chunk)
        self.metrics.records_written += position
        for pid, encoder in enumerate(encoders):
            if encoder is not None and encoder.count:
                self._flush(pid, output)
        self._close_files()
        observer = self.context.observer
        for pid, path in enumerate(self._paths):
            if path is not None:
                if observer is not None:
                    observer.partition_file(pid, path, self._sizes[pid])
                output.copy_range(pid, path, 0, self._sizes[pid])
                path.unlink()

    def _flush(self, pid: int, output: MapOutputWriter) -> None:
        """Compress what partition ``pid``'s encoder holds and append it to its temp file."""
        block = self.block_format.compress(self._encoders[pid].take())
        if not block:
            return
        file = self._files[pid]
        if file is None:
            path = self._paths[pid] = self.context.new_spill_path()
            # Unbuffered: the encoder already gathered a file buffer's worth.
            file = self._files[pid] = open(path, "wb", buffering=0)
        with disk_errors(self._paths[pid], len(block)):
            file.write(block)
        self._sizes[pid] += len(block)
        if output.checksums is not None:
            # Checksummed now, as written: the final copy never passes through Python.
            output.checksums[pid].update(block)

    def _first_unencodable(self, chunk: List[Record], position: int) -> SerializationError:
        """The error of the chunk's first record, in input order, that cannot be encoded (error path)."""
        dumps_record = self.dependency.serializer.dumps_record
        for offset, (key, value) in enumerate(chunk):
            try:
                dumps_record(key, value)
            except SerializationError as e:
                return e.at(position + offset)
        return SerializationError("record", "an encoder failed on a chunk whose records each encode alone")

    def _close_files(self) -> None:
        for pid, file in enumerate(self._files):
            if file is not None:
                file.close()
                self._files[pid] = None

    def _release(self) -> None:
        self._close_files()
        self._encoders = [None] * self.num_partitions


def _keys_of(chunk: List[Any], position: int) -> List[Any]:
    """The keys of a chunk of records; a record that is not a (key, value) pair is an error."""
    try:
        if not all_tuples(chunk):  # a list or "ab" unpacks, but is not a pair
            raise TypeError("not a tuple")
        return [key for key, _ in chunk]
    except (TypeError, ValueError):
        bad = first_malformed(chunk)
        if bad is None:
            raise
        raise malformed(chunk[bad]).at(position + bad) from None
