"""The sort writer's spill file: its format, its writer and its batch-by-batch reader.

*Format* (reference §2.5). A spill file holds one sorted run: its records in
the run's order (by partition, then as the sorter orders them), without
partition ids. Records are written in batches of
``spark.shuffle.spill.batchSize`` records, each batch an independent
``spill_format`` block (serialized, then compressed), so a reader can decode
one batch without the others. A batch may span partitions. What is needed to
read the file back is kept in memory, not in the file (:class:`SpillFile`):
the byte size of each batch (offsets are their prefix sums) and the record
count of each non-empty partition, in increasing partition order. A run with
no records writes no file. Reading streams one batch at a time.

This module never decides file names (the caller's ``new_path`` does), never
orders or combines records (the caller hands them over in order), and never
deletes a file: whoever asked for the path owns it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple

from shuffle.blocks import BlockFormat
from shuffle.errors import SerializationError, ShuffleError
from shuffle.write.output import disk_errors

__all__ = ["SpillFile", "SpillReader", "write_spill"]

Record = Tuple[Any, Any]


@dataclass
class SpillFile:
    """One spill file and what is kept of it in memory."""

    path: Path
    batch_sizes: List[int]
    parts: List[int]  # non-empty partitions, increasing
    counts: List[int]  # records of each

    @property
    def nbytes(self) -> int:
        return sum(self.batch_sizes)


class SpillReader:
    """Streams a spill file batch by batch; hands out its partitions in increasing order.

    A partition's iterator must be used before the next partition is asked
    for; whatever it did not yield is skipped then.
    """

    def __init__(self, spill: SpillFile, spill_format: BlockFormat) -> None:
        self.spill = spill
        self._format = spill_format
        self._batches = self._read_batches()
        self._records = chain.from_iterable(self._batches)
        self._next = 0
        self._current: Optional[Iterator[Record]] = None

    def _read_batches(self) -> Iterator[Iterator[Record]]:
        # Opened at the first record asked for; closed when the generator ends or is closed.
        with open(self.spill.path, "rb") as f:
            for size in self.spill.batch_sizes:
                data = f.read(size)
                if len(data) != size:
                    raise ShuffleError(f"spill file {self.spill.path} ends inside a batch: {len(data)} of {size} bytes")
                yield self._format.decode(data)

    def partition(self, pid: int) -> Optional[Iterator[Record]]:
        """The records of partition ``pid`` (None when it has none); ``pid`` never decreases."""
        if self._current is not None:
            deque(self._current, maxlen=0)
            self._current = None
        parts, counts = self.spill.parts, self.spill.counts
        while self._next < len(parts) and parts[self._next] < pid:
            deque(islice(self._records, counts[self._next]), maxlen=0)
            self._next += 1
        if self._next == len(parts) or parts[self._next] != pid:
            return None
        self._current = islice(self._records, counts[self._next])
        self._next += 1
        return self._current

    def close(self) -> None:
        self._batches.close()  # type: ignore[attr-defined]


def write_spill(
    partitions: Iterable[Tuple[int, Iterable[Record]]],
    spill_format: BlockFormat,
    batch_size: int,
    new_path: Callable[[], Path],
    locate: Callable[[SerializationError, List[Any]], SerializationError],
) -> Optional[SpillFile]:
    """Write records, by partition in increasing order, as batches of one spill file.

    ``new_path`` is called once, just before the first batch is written, so
    the caller owns the path (and deletes it) even if writing then fails.
    A record that does not encode raises ``locate(error, chunk)``, ``chunk``
    being the records whose encoding failed. Returns None (and writes no
    file) when there are no records.
    """
    fmt = spill_format
    encoder = fmt.serializer.new_encoder()
    in_batch = 0
    path: Optional[Path] = None
    file: Optional[BinaryIO] = None
    batch_sizes: List[int] = []
    parts: List[int] = []
    counts: List[int] = []

    def flush() -> None:
        nonlocal path, file, in_batch
        block = fmt.compress(encoder.take())
        if file is None:
            path = new_path()
            with disk_errors(path, len(block)):
                file = open(path, "wb")
        with disk_errors(path, len(block)):
            file.write(block)
        batch_sizes.append(len(block))
        in_batch = 0

    try:
        for pid, records in partitions:
            it = iter(records)
            in_partition = 0
            while True:
                chunk = list(islice(it, batch_size - in_batch))
                if not chunk:
                    break
                try:
                    encoder.add_all(chunk)
                except SerializationError as e:
                    raise locate(e, chunk) from e.__cause__
                in_batch += len(chunk)
                in_partition += len(chunk)
                if in_batch >= batch_size:
                    flush()
            if in_partition:
                parts.append(pid)
                counts.append(in_partition)
        if in_batch:
            flush()
    finally:
        if file is not None:
            file.close()
    if path is None:
        return None
    return SpillFile(path, batch_sizes, parts, counts)
