"""Plain-Python twin of the ``recordbuf`` kernel: serialized records in pages.

Owns the in-memory side of the serialized writer (reference §2.6, §3.4, §5):
already-serialized records are copied into pages as ``[4-byte length][bytes]``
and addressed by one packed pointer each (partition, page, offset), which is
then sorted by partition to read the records back grouped by partition, in
insertion order within a partition. It never serializes, spills or writes
files: the writer decides when to spill (``memory_used``, ``pages_used``) and
where the bytes go.

The length prefix is little-endian, so the page bytes are the same in both
implementations and on every platform.
"""

from __future__ import annotations

import operator
import struct
import sys
from collections.abc import Iterable, Iterator

import numpy as np

from shuffle._twins.pointers import (
    MAX_PAGE_NUMBER,
    MAX_PAGE_SIZE,
    MAX_PARTITION_ID,
    pack,
    partitions_of,
    radix_sort_by_partition,
    unpack,
)
from shuffle.errors import RecordTooLargeError, ShuffleError

__all__ = ["LENGTH_PREFIX_BYTES", "MAX_RECORD_SIZE", "RecordBuffer"]

LENGTH_PREFIX_BYTES = 4
MAX_RECORD_SIZE = MAX_PAGE_SIZE - LENGTH_PREFIX_BYTES

_PREFIX = struct.Struct("<I")


def _int_in(value: object, name: str, lo: int, hi: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < lo or v > hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _check_partition_ids(partition_ids: object) -> np.ndarray:
    """``partition_ids`` as a 1-D int32 array, each in [0, MAX_PARTITION_ID]."""
    if partition_ids is None:
        raise TypeError("partition_ids must be a 1-D integer array, got None")
    arr = np.asarray(partition_ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"partition_ids must be a 1-D integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"partition_ids must be 1-D, got {arr.ndim} dimensions")
    if arr.size:
        bad = np.flatnonzero((arr < 0) | (arr > MAX_PARTITION_ID))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"partition id {int(arr[i])} at position {i} is outside [0, {MAX_PARTITION_ID}]"
            )
    return np.ascontiguousarray(arr, dtype=np.int32)


def _check_records(records: object) -> list:
    if records is None:
        raise TypeError("records must be a sequence of bytes, got None")
    if isinstance(records, (bytes, bytearray, str)):
        raise TypeError(f"records must be a sequence of bytes, got one {type(records).__name__}")
    return list(records)  # type: ignore[call-overload]


def _modified_error() -> RuntimeError:
    return RuntimeError(
        "RecordBuffer was inserted into or reset while sorted_partitions was being "
        "iterated; finish the iteration first"
    )


class RecordBuffer:
    """Serialized records in pages plus one packed pointer per record.

    Call order: any number of ``insert_batch``; then ``sorted_partitions`` (or
    ``partition_lengths``) to read everything back grouped by partition; then
    ``reset`` to free the memory and start again (what a spill does). Inserting
    or resetting while a ``sorted_partitions`` iterator is live makes that
    iterator raise RuntimeError. A failed ``insert_batch`` inserts nothing.

    ``memory_used`` is exact: allocated page capacities plus 8 bytes per slot of
    the pointer array. Sorting briefly needs up to 16 more bytes per record
    (result and scratch), freed when the iteration ends.
    """

    def __init__(
        self,
        page_size: int = 1 << 20,
        max_pages: int = MAX_PAGE_NUMBER + 1,
        initial_capacity: int = 4096,
    ) -> None:
        self._page_size = _int_in(page_size, "page_size", 1, MAX_PAGE_SIZE)
        self._max_pages = _int_in(max_pages, "max_pages", 1, MAX_PAGE_NUMBER + 1)
        self._initial_capacity = _int_in(initial_capacity, "initial_capacity", 1, sys.maxsize // 8)
        self._version = 0
        self._clear()

    def _clear(self) -> None:
        self._pages: list[bytearray] = []
        self._cursor = 0  # bytes used in the last page
        self._page_bytes = 0
        self._ptrs = np.empty(self._initial_capacity, dtype=np.uint64)
        self._num_records = 0
        self._data_bytes = 0
        self._version += 1

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def max_pages(self) -> int:
        return self._max_pages

    @property
    def pages_used(self) -> int:
        return len(self._pages)

    @property
    def num_records(self) -> int:
        return self._num_records

    @property
    def data_bytes(self) -> int:
        """Bytes of the records themselves, without their length prefixes."""
        return self._data_bytes

    @property
    def memory_used(self) -> int:
        """Bytes held: page capacities plus the pointer array's capacity * 8."""
        return self._page_bytes + self._ptrs.shape[0] * 8

    def insert_batch(self, partition_ids: np.ndarray, records: Iterable[bytes]) -> None:
        """Copies each record into the pages and records a pointer to it.

        ``partition_ids[i]`` is the partition of ``records[i]``. Everything is
        validated before any byte is copied: TypeError/ValueError for bad
        arguments, RecordTooLargeError (with the record's position in the batch)
        for a record longer than MAX_RECORD_SIZE, ShuffleError when the batch
        would need more than ``max_pages`` pages (spill first).
        """
        pids = _check_partition_ids(partition_ids)
        recs = _check_records(records)
        n = len(recs)
        if pids.shape[0] != n:
            raise ValueError(f"{pids.shape[0]} partition ids for {n} records")
        for i, r in enumerate(recs):
            if not isinstance(r, bytes):
                raise TypeError(f"record {i} must be bytes, got {type(r).__name__}")
            if len(r) > MAX_RECORD_SIZE:
                raise RecordTooLargeError(len(r), MAX_RECORD_SIZE, i)
        if n == 0:
            return

        # Plan the pages first so that running out of them leaves no trace.
        cap = len(self._pages[-1]) if self._pages else 0
        cursor = self._cursor
        new_caps = []
        for r in recs:
            need = len(r) + LENGTH_PREFIX_BYTES
            if cursor + need > cap:
                cap = max(self._page_size, need)
                new_caps.append(cap)
                cursor = 0
            cursor += need
        if len(self._pages) + len(new_caps) > self._max_pages:
            raise ShuffleError(
                f"record buffer needs {len(new_caps)} more page(s) but {len(self._pages)} of "
                f"max_pages={self._max_pages} are in use; spill it (sorted_partitions, then "
                "reset) before inserting more"
            )
        capacity = self._ptrs.shape[0]
        while capacity < self._num_records + n:
            capacity *= 2
        if capacity != self._ptrs.shape[0]:
            grown = np.empty(capacity, dtype=np.uint64)
            grown[: self._num_records] = self._ptrs[: self._num_records]
            self._ptrs = grown

        self._version += 1
        page_no = len(self._pages) - 1
        cap = len(self._pages[-1]) if self._pages else 0
        cursor = self._cursor
        for i, r in enumerate(recs):
            need = len(r) + LENGTH_PREFIX_BYTES
            if cursor + need > cap:
                cap = max(self._page_size, need)
                self._pages.append(bytearray(cap))
                self._page_bytes += cap
                page_no += 1
                cursor = 0
            page = self._pages[page_no]
            _PREFIX.pack_into(page, cursor, len(r))
            page[cursor + LENGTH_PREFIX_BYTES : cursor + need] = r
            self._ptrs[self._num_records + i] = pack(int(pids[i]), page_no, cursor)
            cursor += need
            self._data_bytes += len(r)
        self._cursor = cursor
        self._num_records += n

    def _check_num_partitions(self, num_partitions: object) -> int:
        k = _int_in(num_partitions, "num_partitions", 1, MAX_PARTITION_ID + 1)
        if self._num_records:
            top = int(partitions_of(self._ptrs[: self._num_records]).max())
            if top >= k:
                raise ValueError(f"a record has partition id {top}, not below num_partitions={k}")
        return k

    def _record(self, pointer: int) -> memoryview:
        _, page_no, offset = unpack(pointer)
        page = self._pages[page_no]
        (length,) = _PREFIX.unpack_from(page, offset)
        start = offset + LENGTH_PREFIX_BYTES
        return memoryview(page)[start : start + length]

    def partition_lengths(self, num_partitions: int) -> list[int]:
        """Record bytes (without prefixes) held for each partition in [0, num_partitions)."""
        k = self._check_num_partitions(num_partitions)
        lengths = [0] * k
        for ptr in self._ptrs[: self._num_records].tolist():
            lengths[unpack(ptr)[0]] += len(self._record(ptr))
        return lengths

    def sorted_partitions(self, num_partitions: int) -> Iterator[tuple[int, bytes]]:
        """``(partition, bytes)`` for each non-empty partition, in increasing partition order.

        The bytes are that partition's records concatenated without their length
        prefixes, in insertion order. Arguments are checked and the pointers
        sorted when this is called; the bytes are built as the iterator advances.
        """
        self._check_num_partitions(num_partitions)
        ordered = radix_sort_by_partition(self._ptrs[: self._num_records])
        return self._iter_sorted(ordered.tolist(), partitions_of(ordered).tolist(), self._version)

    def _iter_sorted(
        self, ordered: list[int], partitions: list[int], version: int
    ) -> Iterator[tuple[int, bytes]]:
        i, n = 0, len(ordered)
        while i < n:
            if self._version != version:
                raise _modified_error()
            partition = partitions[i]
            j = i
            while j < n and partitions[j] == partition:
                j += 1
            yield partition, b"".join([self._record(p) for p in ordered[i:j]])
            i = j

    # ------------------------------------------------ observation (for study)
    # Read-only copies for ``shuffle explain`` and tests; never used by the writer.

    def pointers(self) -> np.ndarray:
        """A copy of the packed pointers in insertion order (uint64, one per record)."""
        return self._ptrs[: self._num_records].copy()

    def page(self, page_number: int) -> bytes:
        """A copy of page ``page_number`` up to the end of its last record (prefixes included)."""
        if not self._pages:
            raise ValueError("the record buffer holds no pages")
        k = _int_in(page_number, "page_number", 0, len(self._pages) - 1)
        page, end = self._pages[k], 0
        for ptr in self._ptrs[: self._num_records].tolist():
            _, page_no, offset = unpack(ptr)
            if page_no == k:
                end = max(end, offset + LENGTH_PREFIX_BYTES + _PREFIX.unpack_from(page, offset)[0])
        return bytes(page[:end])

    def reset(self) -> None:
        """Frees every page and shrinks the pointer array back to its initial capacity."""
        self._clear()
