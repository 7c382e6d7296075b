"""``ShuffleExternalSorter``: serialized records in pages, spilled as partition-sorted files.

Spark's ``ShuffleExternalSorter`` + ``ShuffleInMemorySorter`` (reference
§2.5, §2.6, §3.4 steps 3-5, §5). It owns the record buffer kernel
(``recordbuf``: ``[4-byte length][bytes]`` records in pages, one packed
pointer each) and the task memory that buffer holds, asked for *before* each
insert and exact to the byte. A spill radix-sorts the pointers by partition
and writes one file of per-partition blocks (``BlockFormat.compress`` of the
partition's record bytes, the in-memory length prefixes left out) and keeps
where each block starts; the writer later merges spill files by byte
concatenation. Whatever is checksummed is the exact block bytes, fed to the
map output's running checksums as they are written, in spill order, which is
the order the merge concatenates them in.

This module never deserializes a record, never decides what goes into the
final output (the writer does) and never holds memory it did not acquire,
apart from the bounded overshoot explained in :meth:`ShuffleExternalSorter._insert_part`.
"""

from __future__ import annotations

import errno
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from shuffle.blocks import BlockFormat
from shuffle.checksum import Checksum
from shuffle.conf import ShuffleConf
from shuffle.errors import OutOfDiskError, RecordTooLargeError
from shuffle.kernels import load
from shuffle.memory import MemoryConsumer, TaskMemoryManager
from shuffle.metrics import WriteMetrics
from shuffle.write.observer import WriteObserver
from shuffle.write.output import MapOutputWriter

__all__ = ["ShuffleExternalSorter", "SpillInfo", "page_size_for"]

logger = logging.getLogger(__name__)

# Looked up through the module at call time so tests can swap in the twin.
_recordbuf = load("recordbuf")
_pointers = load("pointers")

MIN_PAGE_SIZE = 1 << 20
MAX_DEFAULT_PAGE_SIZE = 64 << 20


def page_size_for(conf: ShuffleConf, pool_size: int) -> int:
    """``spark.buffer.pageSize``, else Spark's default: nextPow2(pool / 16) in [1 MiB, 64 MiB].

    Never above the packed pointer's 27 offset bits (128 MiB).
    """
    configured = conf.get_bytes("spark.buffer.pageSize")
    if configured is not None:
        return min(configured, _pointers.MAX_PAGE_SIZE)
    target = max(1, pool_size // 16)
    return min(max(1 << (target - 1).bit_length(), MIN_PAGE_SIZE), MAX_DEFAULT_PAGE_SIZE)


@dataclass
class SpillInfo:
    """One spill file: ``segments`` are ``(partition, offset, length)`` in partition order."""

    path: Path
    segments: List[Tuple[int, int, int]] = field(default_factory=list)
    size: int = 0


@dataclass
class _Plan:
    """What an insert will do to the buffer, computed exactly as the kernel decides."""

    new_pages: List[int]  # capacities of the pages it opens, in order
    slots: int  # pointer array slots afterwards
    cursor: int  # bytes used in the last page afterwards
    last_cap: int  # capacity of the last page afterwards
    memory: int  # RecordBuffer.memory_used afterwards


class ShuffleExternalSorter(MemoryConsumer):
    """The serialized writer's record buffer, its memory and its spill files.

    Call order: :meth:`insert` any number of times; then either
    :meth:`write_partitions` (nothing was spilled: straight into the output)
    or :meth:`close_and_get_spills`; :meth:`free` at the end, also on failure.
    Another consumer of the same task may make it spill between inserts
    (:meth:`spill`).
    """

    def __init__(
        self,
        memory: TaskMemoryManager,
        conf: ShuffleConf,
        num_partitions: int,
        block_format: BlockFormat,
        new_spill_path: Callable[[], Path],
        checksums: Optional[Sequence[Checksum]],
        metrics: WriteMetrics,
        page_size: int,
        max_pages: Optional[int] = None,
        observer: Optional[WriteObserver] = None,
    ) -> None:
        super().__init__(memory)
        self.observer = observer
        self.num_partitions = num_partitions
        self.block_format = block_format
        self.new_spill_path = new_spill_path
        self.checksums = checksums
        self.metrics = metrics
        self.page_size = page_size
        initial = conf.get_int("spark.shuffle.sort.initialBufferSize")
        force = conf.get_int("spark.shuffle.spill.numElementsForceSpillThreshold")
        write_buffer = conf.get_bytes("spark.shuffle.spill.diskWriteBufferSize")
        assert initial is not None and force is not None and write_buffer is not None  # defaults
        # Spark spills when the buffer already holds the threshold's number of
        # records, so it never holds more; a threshold of 0 still lets one in.
        self.max_records = max(1, force)
        self._write_buffer = write_buffer
        self._initial_slots = initial
        kwargs = {} if max_pages is None else {"max_pages": max_pages}
        self._buffer: Any = _recordbuf.RecordBuffer(page_size=page_size, initial_capacity=initial, **kwargs)
        self.spills: List[SpillInfo] = []
        self._forget_pages()

    def _forget_pages(self) -> None:
        """The mirror of the kernel's page state after a reset."""
        self._cursor = 0
        self._last_cap = 0
        self._page_bytes = 0
        self._slots = self._initial_slots

    @property
    def num_records(self) -> int:
        return int(self._buffer.num_records) if self._buffer is not None else 0

    # ------------------------------------------------------------ inserting

    def insert(self, partition_ids: np.ndarray, records: List[bytes], position: int) -> int:
        """Copy serialized ``records`` (partition ``partition_ids[i]``) into the buffer; returns their bytes.

        ``position`` is the index of ``records[0]`` in the task's input, for
        :class:`RecordTooLargeError`. Spills first when memory, pages or the
        force-spill threshold say so.
        """
        n = len(records)
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=n)
        limit = _recordbuf.MAX_RECORD_SIZE
        if n and int(lengths.max()) > limit:
            i = int(np.flatnonzero(lengths > limit)[0])
            raise RecordTooLargeError(int(lengths[i]), limit, position + i)
        start = 0
        while start < n:
            if self._buffer.num_records >= self.max_records:
                logger.debug("%d records reached numElementsForceSpillThreshold: spilling", self._buffer.num_records)
                self.spill_now()
            stop = min(n, start + self.max_records - self._buffer.num_records)
            if start == 0 and stop == n:
                self._insert_part(partition_ids, records, lengths, position)
            else:
                self._insert_part(partition_ids[start:stop], records[start:stop], lengths[start:stop], position + start)
            start = stop
        return int(lengths.sum())

    def _insert_part(self, pids: np.ndarray, records: List[bytes], lengths: np.ndarray, position: int) -> None:
        plan = self._plan(lengths)
        if self._buffer.pages_used + len(plan.new_pages) > self._buffer.max_pages:
            if self._buffer.num_records:
                logger.debug("record buffer out of pages (%d in use): spilling", self._buffer.pages_used)
                self.spill_now()
                plan = self._plan(lengths)
            if len(plan.new_pages) > self._buffer.max_pages and len(records) > 1:
                # Even an empty buffer cannot take them all: one record always fits.
                half = len(records) // 2
                self._insert_part(pids[:half], records[:half], lengths[:half], position)
                self._insert_part(pids[half:], records[half:], lengths[half:], position + half)
                return
        wanted = plan.memory - self.used
        if wanted > 0 and self.acquire(wanted) < wanted and self._buffer.num_records:
            # Refused: write out what we hold, then ask again for an empty buffer plus this part.
            self.spill_now()
            plan = self._plan(lengths)
            self.acquire(max(0, plan.memory - self.used))
            # Whatever was granted, the part is inserted now: it is at most one
            # chunk of records (the writer sizes chunks to a few MiB) plus the
            # page it opens, into a buffer that was just emptied, and the next
            # insert asks for the shortfall again and spills if still refused.
            # So memory held beyond the grant never exceeds one chunk's pages
            # and pointer slots; refusing instead would fail tasks that Spark runs.
        try:
            self._buffer.insert_batch(pids, records)
        except RecordTooLargeError as e:  # the limit changed under us; keep the input position
            raise RecordTooLargeError(e.size, e.limit, position + (e.position or 0)) from e
        self._cursor, self._last_cap, self._slots = plan.cursor, plan.last_cap, plan.slots
        self._page_bytes += sum(plan.new_pages)
        actual = self._buffer.memory_used
        if actual != plan.memory:  # the kernel's page policy changed: keep the books right anyway
            logger.warning("record buffer holds %d bytes, %d were planned", actual, plan.memory)
            self._page_bytes += actual - plan.memory
            if actual > self.used:
                self.acquire(actual - self.used)

    def _plan(self, lengths: np.ndarray) -> _Plan:
        """The kernel's page decision for these records, one ``searchsorted`` per page opened.

        A record that does not fit in the rest of the current page opens a
        page of ``max(page_size, length + prefix)``; the pointer array doubles
        until every record has a slot. Mirrors ``recordbuf``'s own planning.
        """
        needs = lengths + _recordbuf.LENGTH_PREFIX_BYTES
        ends = np.cumsum(needs)
        n = len(needs)
        new_pages: List[int] = []
        cursor, cap, before = self._cursor, self._last_cap, 0
        while n:
            # First record whose end passes the current page's capacity.
            j = int(np.searchsorted(ends, before + cap - cursor, side="right"))
            if j >= n:
                cursor += int(ends[-1]) - before
                break
            cap = max(self.page_size, int(needs[j]))
            new_pages.append(cap)
            cursor = 0
            before = int(ends[j - 1]) if j else 0
        slots = self._slots
        while slots < self._buffer.num_records + n:
            slots *= 2
        memory = self._page_bytes + sum(new_pages) + slots * 8
        return _Plan(new_pages, slots, cursor, cap, memory)

    # ------------------------------------------------------------ spilling

    def spill(self, size: int, trigger: MemoryConsumer) -> int:
        """Spill when another consumer of the task needs memory; returns the bytes freed.

        Spark's sorter only spills for itself; here any consumer of the task
        may ask, because everything else in a Python task is sized by estimates.
        """
        if trigger is self or self._buffer is None or self._buffer.num_records == 0:
            return 0
        freed = self.used
        logger.debug("spilling %d bytes for %r (it asked for %d)", freed, trigger, size)
        self.spill_now()
        return freed

    def spill_now(self) -> None:
        """Write the buffer out as one more spill file, then empty it and give its memory back."""
        held = self._buffer.memory_used
        info = self._write_sorted_file()
        self._reset()
        if info is not None:
            self.spills.append(info)
            self.metrics.spill_count += 1
            self.metrics.memory_bytes_spilled += held
            self.metrics.disk_bytes_spilled += info.size

    def _write_sorted_file(self) -> Optional[SpillInfo]:
        """Spark's writeSortedFile: one block per non-empty partition, in partition order."""
        if self._buffer.num_records == 0:
            return None  # no records, no file
        info = SpillInfo(self.new_spill_path())
        compress, checksums = self.block_format.compress, self.checksums
        if self.observer is not None:
            self.observer.sorting(self._buffer)
        block = b""
        try:
            with open(info.path, "wb", buffering=self._write_buffer) as out:
                for pid, raw in self._buffer.sorted_partitions(self.num_partitions):
                    block = compress(raw)
                    out.write(block)
                    info.segments.append((pid, info.size, len(block)))
                    info.size += len(block)
                    if checksums is not None:
                        checksums[pid].update(block)
        except OSError as e:
            if e.errno == errno.ENOSPC and not isinstance(e, OutOfDiskError):
                directory = str(info.path.parent)
                raise OutOfDiskError(directory, len(block) or None, shutil.disk_usage(directory).free) from e
            raise
        if self.observer is not None:
            self.observer.spill_written(info.path, info)
        return info

    def _reset(self) -> None:
        self._buffer.reset()
        self._forget_pages()
        self.release_all()

    # ------------------------------------------------------------ the end

    def write_partitions(self, output: MapOutputWriter) -> None:
        """Nothing was spilled: append each partition's block straight to ``output``."""
        assert not self.spills, "write_partitions is for a sorter that never spilled"
        compress = self.block_format.compress
        if self._buffer.num_records:
            if self.observer is not None:
                self.observer.sorting(self._buffer)
            for pid, raw in self._buffer.sorted_partitions(self.num_partitions):
                output.write(pid, compress(raw))
        self._reset()

    def close_and_get_spills(self) -> List[SpillInfo]:
        """Write what is left as the last spill file (not counted as a spill) and return them all."""
        info = self._write_sorted_file()
        self._reset()
        if info is not None:
            self.spills.append(info)
        return self.spills

    def free(self) -> None:
        """Drop the buffer and every byte of memory; safe to call twice."""
        self._buffer = None
        self.close()
