"""Serialized records in pages, addressed by packed pointers (compiled kernel).

Owns the in-memory side of the serialized writer (reference §2.6, §3.4, §5):
already-serialized records are copied into pages as ``[4-byte length][bytes]``
and addressed by one packed pointer each (partition, page, offset), which is
then radix-sorted by partition to read the records back grouped by partition,
in insertion order within a partition. It never serializes, spills or writes
files: the writer decides when to spill (``memory_used``, ``pages_used``) and
where the bytes go.

The length prefix is little-endian, so the page bytes are the same in both
implementations and on every platform. The plain-Python twin is
``shuffle/_twins/recordbuf.py``; both give the same results and raise the same
errors.
"""

import operator
import sys

import numpy as np

from shuffle.errors import RecordTooLargeError, ShuffleError

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy

# Cimported explicitly: modules are built as shuffle._native.*, so Cython does
# not find _ext/pointers.pxd by pairing names. The .pxd holds inline code only,
# so this needs no run-time import of shuffle._native.pointers.
from pointers cimport (
    C_OFFSET_BITS, C_PAGE_BITS, C_PARTITION_BITS, C_PARTITION_DIGITS,
    c_count_partition_digits, c_offset, c_pack, c_page, c_partition, c_radix_scatter,
)

__all__ = ["LENGTH_PREFIX_BYTES", "MAX_RECORD_SIZE", "RecordBuffer"]

cdef enum:
    C_PREFIX = 4
    # Copies shorter than this are done holding the GIL: releasing it would
    # cost more than the copy (one partition of a few small records).
    C_NOGIL_COPY_BYTES = 1 << 16

LENGTH_PREFIX_BYTES = C_PREFIX
MAX_PARTITION_ID = (1 << C_PARTITION_BITS) - 1
MAX_PAGE_NUMBER = (1 << C_PAGE_BITS) - 1
MAX_PAGE_SIZE = 1 << C_OFFSET_BITS
MAX_RECORD_SIZE = MAX_PAGE_SIZE - LENGTH_PREFIX_BYTES


cdef struct Page:
    unsigned char* data
    int64_t capacity


cdef inline uint32_t _read_prefix(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline void _write_prefix(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef Py_ssize_t _plan_pages(
    const int64_t* lens, Py_ssize_t n, int64_t cursor, int64_t cap, int64_t page_size,
    int64_t* new_caps
) noexcept nogil:
    """Capacities of the pages a batch opens, in order; returns how many.

    Must decide exactly as ``_copy_records`` does: a record opens a new page of
    max(page_size, its size + prefix) when it does not fit in the current one.
    """
    cdef Py_ssize_t i, count = 0
    cdef int64_t need
    for i in range(n):
        need = lens[i] + C_PREFIX
        if cursor + need > cap:
            cap = page_size if page_size > need else need
            new_caps[count] = cap
            count += 1
            cursor = 0
        cursor += need
    return count


cdef int64_t _copy_records(
    const Page* pages, Py_ssize_t page_no, int64_t cursor,
    const unsigned char** data, const int64_t* lens, const int32_t* pids,
    uint64_t* ptrs_out, Py_ssize_t n
) noexcept nogil:
    """Copies ``n`` records as [prefix][bytes] and writes their pointers; returns the cursor.

    ``page_no`` is the current (last) page, -1 when there is none; the pages
    planned by ``_plan_pages`` must already follow it in ``pages``.
    """
    cdef Py_ssize_t i
    cdef int64_t need
    cdef int64_t cap = pages[page_no].capacity if page_no >= 0 else 0
    cdef unsigned char* dst
    for i in range(n):
        need = lens[i] + C_PREFIX
        if cursor + need > cap:
            page_no += 1
            cap = pages[page_no].capacity
            cursor = 0
        dst = pages[page_no].data + cursor
        _write_prefix(dst, <uint32_t>lens[i])
        memcpy(dst + C_PREFIX, data[i], <size_t>lens[i])
        ptrs_out[i] = c_pack(<uint64_t>pids[i], <uint64_t>page_no, <uint64_t>cursor)
        cursor += need
    return cursor


cdef inline const unsigned char* _record_at(const Page* pages, uint64_t ptr) noexcept nogil:
    """The length prefix of the record ``ptr`` points to."""
    return pages[c_page(ptr)].data + c_offset(ptr)


cdef Py_ssize_t _scan_partition(
    const uint64_t* ptrs, Py_ssize_t i, Py_ssize_t n, const Page* pages, int64_t* total
) noexcept nogil:
    """End of the run of sorted pointers starting at ``i`` with the same partition."""
    cdef uint64_t partition = c_partition(ptrs[i])
    cdef int64_t t = 0
    while i < n and c_partition(ptrs[i]) == partition:
        t += _read_prefix(_record_at(pages, ptrs[i]))
        i += 1
    total[0] = t
    return i


cdef void _gather(
    const uint64_t* ptrs, Py_ssize_t i, Py_ssize_t j, const Page* pages, unsigned char* dst
) noexcept nogil:
    cdef const unsigned char* rec
    cdef uint32_t length
    while i < j:
        rec = _record_at(pages, ptrs[i])
        length = _read_prefix(rec)
        memcpy(dst, rec + C_PREFIX, length)
        dst += length
        i += 1


cdef void _lengths_by_partition(
    const uint64_t* ptrs, Py_ssize_t n, const Page* pages, int64_t* out
) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[c_partition(ptrs[i])] += _read_prefix(_record_at(pages, ptrs[i]))


cdef uint64_t _max_partition(const uint64_t* ptrs, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint64_t top = 0, p
    for i in range(n):
        p = c_partition(ptrs[i])
        if p > top:
            top = p
    return top


def _int_in(value, str name, lo, hi):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < lo or v > hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _check_partition_ids(partition_ids):
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


def _check_records(records):
    if records is None:
        raise TypeError("records must be a sequence of bytes, got None")
    if isinstance(records, (bytes, bytearray, str)):
        raise TypeError(f"records must be a sequence of bytes, got one {type(records).__name__}")
    # A private list holds a reference to every record while the copy runs
    # without the GIL, whatever the caller does to its own sequence meanwhile.
    return list(records)


def _modified_error():
    return RuntimeError(
        "RecordBuffer was inserted into or reset while sorted_partitions was being "
        "iterated; finish the iteration first"
    )


cdef class RecordBuffer:
    """Serialized records in pages plus one packed pointer per record.

    Call order: any number of ``insert_batch``; then ``sorted_partitions`` (or
    ``partition_lengths``) to read everything back grouped by partition; then
    ``reset`` to free the memory and start again (what a spill does). Inserting
    or resetting while a ``sorted_partitions`` iterator is live makes that
    iterator raise RuntimeError. A failed ``insert_batch`` inserts nothing.

    ``memory_used`` is exact: allocated page capacities plus 8 bytes per slot of
    the pointer array. Sorting briefly needs up to 16 more bytes per record
    (result and scratch), freed when the iteration ends. Not thread-safe; a
    call made while another thread is inside a copy raises RuntimeError.
    """

    cdef Page* _pages
    cdef Py_ssize_t _num_pages
    cdef Py_ssize_t _max_pages
    cdef int64_t _page_size
    cdef int64_t _cursor          # bytes used in the last page
    cdef int64_t _page_bytes
    cdef int64_t _data_bytes
    cdef uint64_t* _ptrs
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _initial_capacity
    cdef Py_ssize_t _num_records
    cdef unsigned long long _version
    cdef bint _busy

    def __init__(self, page_size=1 << 20, max_pages=MAX_PAGE_NUMBER + 1, initial_capacity=4096):
        page_size = _int_in(page_size, "page_size", 1, MAX_PAGE_SIZE)
        max_pages = _int_in(max_pages, "max_pages", 1, MAX_PAGE_NUMBER + 1)
        initial_capacity = _int_in(initial_capacity, "initial_capacity", 1, sys.maxsize // 8)
        if self._busy:
            raise RuntimeError("RecordBuffer is in use by another thread")
        self._free_all()
        self._page_size = page_size
        self._max_pages = max_pages
        self._initial_capacity = initial_capacity
        self._pages = <Page*>calloc(self._max_pages, sizeof(Page))
        if self._pages == NULL:
            raise MemoryError("cannot allocate the record buffer's page table")
        self._clear()

    def __dealloc__(self):
        self._free_all()

    cdef void _free_pages(self) noexcept:
        cdef Py_ssize_t k
        if self._pages != NULL:
            for k in range(self._num_pages):
                free(self._pages[k].data)
                self._pages[k].data = NULL
                self._pages[k].capacity = 0
        self._num_pages = 0
        self._page_bytes = 0
        self._cursor = 0

    cdef void _free_all(self) noexcept:
        self._free_pages()
        free(self._pages)
        self._pages = NULL
        free(self._ptrs)
        self._ptrs = NULL
        self._capacity = 0
        self._num_records = 0
        self._data_bytes = 0

    cdef _clear(self):
        self._free_pages()
        free(self._ptrs)
        self._ptrs = NULL
        self._capacity = 0
        self._num_records = 0
        self._data_bytes = 0
        self._version += 1
        self._ptrs = <uint64_t*>malloc(self._initial_capacity * sizeof(uint64_t))
        if self._ptrs == NULL:
            raise MemoryError(f"cannot allocate {self._initial_capacity} record pointers")
        self._capacity = self._initial_capacity

    cdef _check_idle(self):
        if self._pages == NULL or self._ptrs == NULL:
            raise RuntimeError("RecordBuffer was not initialised (its __init__ did not run)")
        if self._busy:
            raise RuntimeError("RecordBuffer is in use by another thread")

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def max_pages(self) -> int:
        return self._max_pages

    @property
    def pages_used(self) -> int:
        return self._num_pages

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
        return self._page_bytes + self._capacity * 8

    def insert_batch(self, partition_ids, records) -> None:
        """Copies each record into the pages and records a pointer to it.

        ``partition_ids[i]`` is the partition of ``records[i]``. Everything is
        validated before any byte is copied: TypeError/ValueError for bad
        arguments, RecordTooLargeError (with the record's position in the batch)
        for a record longer than MAX_RECORD_SIZE, ShuffleError when the batch
        would need more than ``max_pages`` pages (spill first).

        Cost: one pass with the GIL to collect record addresses, one C pass
        without it to copy; pointer array doubling is amortised O(1) a record.
        """
        self._check_idle()
        pids = _check_partition_ids(partition_ids)
        recs = _check_records(records)
        cdef Py_ssize_t n = len(recs)
        if pids.shape[0] != n:
            raise ValueError(f"{pids.shape[0]} partition ids for {n} records")
        cdef Py_ssize_t i
        for i in range(n):
            r = recs[i]
            if not isinstance(r, bytes):
                raise TypeError(f"record {i} must be bytes, got {type(r).__name__}")
            if PyBytes_GET_SIZE(r) > MAX_RECORD_SIZE:
                raise RecordTooLargeError(PyBytes_GET_SIZE(r), MAX_RECORD_SIZE, i)
        if n == 0:
            return

        cdef const int32_t[::1] pv = pids
        lens = np.empty(n, dtype=np.int64)
        new_caps = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] lv = lens
        cdef int64_t[::1] cv = new_caps
        cdef const unsigned char** data = <const unsigned char**>malloc(n * sizeof(unsigned char*))
        if data == NULL:
            raise MemoryError(f"cannot allocate the addresses of {n} records")
        cdef int64_t batch_bytes = 0
        cdef int64_t cap0
        cdef Py_ssize_t count, k, first_new = self._num_pages, capacity
        cdef unsigned char* mem
        cdef uint64_t* grown
        try:
            for i in range(n):
                r = recs[i]
                data[i] = <const unsigned char*>PyBytes_AS_STRING(r)
                lv[i] = PyBytes_GET_SIZE(r)
                batch_bytes += lv[i]

            # Plan the pages first so that running out of them leaves no trace.
            cap0 = self._pages[first_new - 1].capacity if first_new > 0 else 0
            count = _plan_pages(&lv[0], n, self._cursor, cap0, self._page_size, &cv[0])
            if first_new + count > self._max_pages:
                raise ShuffleError(
                    f"record buffer needs {count} more page(s) but {first_new} of "
                    f"max_pages={self._max_pages} are in use; spill it (sorted_partitions, "
                    "then reset) before inserting more"
                )
            for k in range(count):
                mem = <unsigned char*>malloc(<size_t>cv[k])
                if mem == NULL:
                    self._drop_new_pages(first_new, k)
                    raise MemoryError(f"cannot allocate a page of {cv[k]} bytes")
                self._pages[first_new + k].data = mem
                self._pages[first_new + k].capacity = cv[k]
            capacity = self._capacity
            while capacity < self._num_records + n:
                capacity *= 2
            if capacity != self._capacity:
                grown = <uint64_t*>realloc(self._ptrs, capacity * sizeof(uint64_t))
                if grown == NULL:
                    self._drop_new_pages(first_new, count)
                    raise MemoryError(f"cannot grow the pointer array to {capacity} slots")
                self._ptrs = grown
                self._capacity = capacity

            # Past this point nothing can fail: commit.
            for k in range(count):
                self._page_bytes += cv[k]
            self._num_pages = first_new + count
            self._version += 1
            self._busy = True
            with nogil:
                self._cursor = _copy_records(
                    self._pages, first_new - 1, self._cursor, data, &lv[0], &pv[0],
                    self._ptrs + self._num_records, n,
                )
            self._busy = False
            self._num_records += n
            self._data_bytes += batch_bytes
        finally:
            free(data)

    cdef void _drop_new_pages(self, Py_ssize_t first_new, Py_ssize_t count) noexcept:
        cdef Py_ssize_t k
        for k in range(count):
            free(self._pages[first_new + k].data)
            self._pages[first_new + k].data = NULL
            self._pages[first_new + k].capacity = 0

    cdef Py_ssize_t _check_num_partitions(self, num_partitions) except -1:
        k = _int_in(num_partitions, "num_partitions", 1, MAX_PARTITION_ID + 1)
        cdef uint64_t top
        if self._num_records:
            top = _max_partition(self._ptrs, self._num_records)
            if top >= <uint64_t>k:
                raise ValueError(f"a record has partition id {top}, not below num_partitions={k}")
        return k

    def partition_lengths(self, num_partitions) -> list:
        """Record bytes (without prefixes) held for each partition in [0, num_partitions)."""
        self._check_idle()
        cdef Py_ssize_t k = self._check_num_partitions(num_partitions)
        out = np.zeros(k, dtype=np.int64)
        cdef int64_t[::1] ov = out
        _lengths_by_partition(self._ptrs, self._num_records, self._pages, &ov[0])
        return out.tolist()

    def sorted_partitions(self, num_partitions):
        """``(partition, bytes)`` for each non-empty partition, in increasing partition order.

        The bytes are that partition's records concatenated without their length
        prefixes, in insertion order, each copied by C into a bytes object of
        the exact size. Arguments are checked and the pointers radix-sorted
        (``pointers.radix_sort_by_partition``) when this is called; the bytes
        are built as the iterator advances.
        """
        self._check_idle()
        self._check_num_partitions(num_partitions)
        cdef Py_ssize_t n = self._num_records
        ordered = np.empty(n, dtype=np.uint64)
        if n == 0:
            return self._iter_sorted(ordered, self._version)
        cdef uint64_t[::1] ov = ordered
        cdef Py_ssize_t counts[C_PARTITION_DIGITS * 256]
        cdef int passes[C_PARTITION_DIGITS]
        cdef int npass
        cdef uint64_t* scratch = NULL
        cdef bint no_memory = False
        self._busy = True
        with nogil:
            npass = c_count_partition_digits(self._ptrs, n, counts, passes)
            if npass >= 2:
                scratch = <uint64_t*>malloc(n * sizeof(uint64_t))
                no_memory = scratch == NULL
            if not no_memory:
                c_radix_scatter(self._ptrs, &ov[0], scratch, n, counts, passes, npass)
            free(scratch)
        self._busy = False
        if no_memory:
            raise MemoryError(f"cannot allocate radix sort scratch for {n} pointers")
        return self._iter_sorted(ordered, self._version)

    def _iter_sorted(self, ordered, unsigned long long version):
        cdef const uint64_t[::1] s = ordered
        cdef Py_ssize_t i = 0, j, n = s.shape[0]
        cdef int64_t total = 0
        cdef unsigned char* dst
        while i < n:
            if self._version != version:
                raise _modified_error()
            j = _scan_partition(&s[0], i, n, self._pages, &total)
            chunk = PyBytes_FromStringAndSize(NULL, total)
            dst = <unsigned char*>PyBytes_AS_STRING(chunk)
            if total >= C_NOGIL_COPY_BYTES:
                self._busy = True
                with nogil:
                    _gather(&s[0], i, j, self._pages, dst)
                self._busy = False
            else:
                _gather(&s[0], i, j, self._pages, dst)
            yield int(c_partition(s[i])), chunk
            i = j

    # ------------------------------------------------ observation (for study)
    # Read-only copies for ``shuffle explain`` and tests; never used by the writer.

    def pointers(self):
        """A copy of the packed pointers in insertion order (uint64, one per record)."""
        self._check_idle()
        out = np.empty(self._num_records, dtype=np.uint64)
        cdef uint64_t[::1] ov = out
        if self._num_records:
            memcpy(&ov[0], self._ptrs, self._num_records * sizeof(uint64_t))
        return out

    def page(self, page_number) -> bytes:
        """A copy of page ``page_number`` up to the end of its last record (prefixes included)."""
        self._check_idle()
        if self._num_pages == 0:
            raise ValueError("the record buffer holds no pages")
        cdef Py_ssize_t k = _int_in(page_number, "page_number", 0, self._num_pages - 1)
        cdef int64_t end = 0, stop
        cdef uint64_t offset
        cdef Py_ssize_t i
        for i in range(self._num_records):
            if c_page(self._ptrs[i]) == <uint64_t>k:
                offset = c_offset(self._ptrs[i])
                stop = <int64_t>offset + C_PREFIX + _read_prefix(self._pages[k].data + offset)
                if stop > end:
                    end = stop
        return PyBytes_FromStringAndSize(<char*>self._pages[k].data, end)

    def reset(self) -> None:
        """Frees every page and shrinks the pointer array back to its initial capacity."""
        self._check_idle()
        self._clear()
