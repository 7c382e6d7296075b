"""A sorted in-memory run of the external sorter, handed out partition by partition in chunks.

Kept apart from :mod:`shuffle.write.external_sorter` (which builds runs,
spills and merges them): this class only hands a run out, and switches to
reading the rest from a spill file when the run is spilled while being read.
"""

from __future__ import annotations

from itertools import accumulate, chain
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from shuffle.write.merge_steps import READ_CHUNK_RECORDS, list_range
from shuffle.write.spill_file import SpillReader

__all__ = ["MemoryRun"]

Record = Tuple[Any, Any]


class MemoryRun:
    """A sorted in-memory run, handed out by partition in chunks.

    After :meth:`switch_to` (a spill while reading) the rest comes from the
    spill file, even for a partition half handed out. ``original`` is the
    insertion-ordered buffer (no aggregator), kept to name input positions.
    """

    def __init__(self, records: List[Record], parts: List[int], counts: List[int],
                 original: Optional[List[Record]], base: int) -> None:
        self.records: Optional[List[Record]] = records
        self.parts = parts
        self.ends = list(accumulate(counts))
        self.starts = [end - count for end, count in zip(self.ends, counts)]
        self.original = original
        self.base = base
        self.pos = 0  # first record not handed out yet
        self.cursor = 0  # index in parts of the partition being handed out
        self.reader: Optional[SpillReader] = None

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def partition(self, pid: int) -> Optional[Iterator[Record]]:
        if self.reader is not None:
            return self.reader.partition(pid)
        while self.cursor < len(self.parts) and self.parts[self.cursor] < pid:
            self.cursor += 1
        if self.cursor == len(self.parts) or self.parts[self.cursor] != pid:
            return None
        self.pos = self.starts[self.cursor]
        return chain.from_iterable(self._chunks(self.cursor))

    def _chunks(self, index: int) -> Iterator[Iterable[Record]]:
        end = self.ends[index]
        while True:
            if self.reader is not None:
                rest = self.reader.partition(self.parts[index])
                if rest is not None:
                    yield rest
                return
            if self.pos >= end or self.records is None:
                return
            stop = min(self.pos + READ_CHUNK_RECORDS, end)
            chunk = self.records[self.pos:stop]
            self.pos = stop
            yield chunk

    def remaining(self) -> Iterator[Tuple[int, Iterator[Record]]]:
        """What is not handed out yet, by partition."""
        records = self.records
        assert records is not None
        for i in range(self.cursor, len(self.parts)):
            start = max(self.starts[i], self.pos)
            if start < self.ends[i]:
                yield self.parts[i], list_range(records, start, self.ends[i])

    def switch_to(self, reader: Optional[SpillReader]) -> None:
        """The rest now lives in a spill file (None: there was no rest)."""
        self.records = None
        self.original = None
        self.reader = reader
        self.cursor = len(self.parts)

    def position_of(self, record: object) -> Optional[int]:
        """Input position of ``record`` (by identity), error path only."""
        if self.original is None:
            return None
        for i, candidate in enumerate(self.original):
            if candidate is record:
                return self.base + i
        return None
