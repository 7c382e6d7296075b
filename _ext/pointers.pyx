"""Packed record pointers and their stable radix sort by partition (compiled kernel).

Owns the 64-bit packed pointer of the serialized writer (reference §2.6) and
the stable sort of pointers by partition (reference §3.4 step 4). It must
never guess: a field that does not fit its bits raises ValueError instead of
wrapping (Spark lets an offset overflow silently; we do not). The C-level
layout and sort live in ``pointers.pxd`` so ``recordbuf`` can use them too.

Layout of one pointer, most significant bit first::

    [ partition id : 24 ][ page number : 13 ][ offset in page : 27 ]

Pointer arrays are 1-D C-contiguous ``numpy.uint64``. ``int64`` arrays are
refused rather than reinterpreted: partition ids of 2**23 and up set the sign
bit, so an int64 array would sort those partitions first. Pass
``arr.view(np.uint64)`` if you hold the bits in an int64 array.

The plain-Python twin is ``shuffle/_twins/pointers.py``; both give the same
results and raise the same errors.
"""

import operator

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc

# Cimported explicitly: the module is built as shuffle._native.pointers, so
# Cython does not pair this file with _ext/pointers.pxd on its own.
from pointers cimport (
    C_OFFSET_BITS, C_PAGE_BITS, C_PARTITION_BITS, C_PARTITION_DIGITS,
    c_count_partition_digits, c_offset, c_pack, c_page, c_partition, c_radix_scatter,
)

__all__ = [
    "PARTITION_BITS",
    "PAGE_BITS",
    "OFFSET_BITS",
    "MAX_PARTITION_ID",
    "MAX_PAGE_NUMBER",
    "MAX_OFFSET",
    "MAX_PAGE_SIZE",
    "pack",
    "unpack",
    "pack_array",
    "partitions_of",
    "radix_sort_by_partition",
]

PARTITION_BITS = C_PARTITION_BITS
PAGE_BITS = C_PAGE_BITS
OFFSET_BITS = C_OFFSET_BITS
MAX_PARTITION_ID = (1 << PARTITION_BITS) - 1
MAX_PAGE_NUMBER = (1 << PAGE_BITS) - 1
MAX_OFFSET = (1 << OFFSET_BITS) - 1
MAX_PAGE_SIZE = 1 << OFFSET_BITS

_MAX_POINTER = (1 << 64) - 1


def _field(value, str name, limit):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < 0 or v > limit:
        raise ValueError(f"{name} {v} is outside [0, {limit}]")
    return v


def pack(partition, page, offset) -> int:
    """The pointer for (partition, page, offset); ValueError if a field exceeds its bits."""
    cdef uint64_t p = _field(partition, "partition", MAX_PARTITION_ID)
    cdef uint64_t g = _field(page, "page", MAX_PAGE_NUMBER)
    cdef uint64_t o = _field(offset, "offset", MAX_OFFSET)
    return c_pack(p, g, o)


def unpack(pointer) -> tuple:
    """(partition, page, offset) of a pointer in [0, 2**64 - 1]."""
    cdef uint64_t v = _field(pointer, "pointer", _MAX_POINTER)
    return int(c_partition(v)), int(c_page(v)), int(c_offset(v))


def _field_array(values, str name, limit):
    """``values`` as a 1-D int64 array after checking kind, shape and range."""
    if values is None:
        raise TypeError(f"{name} must be a 1-D integer array, got None")
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-D integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got {arr.ndim} dimensions")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > limit:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} {bad} is outside [0, {limit}]")
    return np.ascontiguousarray(arr, dtype=np.int64)


cdef void _pack_loop(
    const int64_t* p, const int64_t* g, const int64_t* o, uint64_t* out, Py_ssize_t n
) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = c_pack(<uint64_t>p[i], <uint64_t>g[i], <uint64_t>o[i])


def pack_array(partitions, pages, offsets):
    """Element-wise :func:`pack` of three equally long 1-D integer arrays, as uint64.

    NumPy equivalent: ``(p << 40) | (g << 27) | o`` in uint64, after range
    checks (which run first, so the C loop never sees an out-of-range field).
    One pass, O(n).
    """
    p = _field_array(partitions, "partition", MAX_PARTITION_ID)
    g = _field_array(pages, "page", MAX_PAGE_NUMBER)
    o = _field_array(offsets, "offset", MAX_OFFSET)
    if not (len(p) == len(g) == len(o)):
        raise ValueError(
            f"partitions, pages and offsets differ in length: {len(p)}, {len(g)}, {len(o)}"
        )
    cdef Py_ssize_t n = len(p)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    cdef const int64_t[::1] pv = p
    cdef const int64_t[::1] gv = g
    cdef const int64_t[::1] ov = o
    cdef uint64_t[::1] outv = out
    with nogil:
        _pack_loop(&pv[0], &gv[0], &ov[0], &outv[0], n)
    return out


def _check_pointer_array(pointers):
    if pointers is None:
        raise TypeError("pointers must be a 1-D uint64 numpy array, got None")
    if not isinstance(pointers, np.ndarray):
        raise TypeError(f"pointers must be a 1-D uint64 numpy array, got {type(pointers).__name__}")
    if pointers.dtype != np.uint64:
        raise TypeError(
            f"pointers must have dtype uint64, got {pointers.dtype}"
            " (an int64 array holding pointer bits can be passed as arr.view(np.uint64))"
        )
    if pointers.ndim != 1:
        raise ValueError(f"pointers must be 1-D, got {pointers.ndim} dimensions")
    if not pointers.flags.c_contiguous:
        raise ValueError("pointers must be C-contiguous (use np.ascontiguousarray)")
    return pointers


cdef void _partitions_loop(const uint64_t* ptrs, int32_t* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <int32_t>c_partition(ptrs[i])


def partitions_of(pointers):
    """The partition id of each pointer, as int32. NumPy: ``(pointers >> 40).astype(np.int32)``."""
    arr = _check_pointer_array(pointers)
    cdef Py_ssize_t n = arr.shape[0]
    out = np.empty(n, dtype=np.int32)
    if n == 0:
        return out
    cdef const uint64_t[::1] src = arr
    cdef int32_t[::1] dst = out
    with nogil:
        _partitions_loop(&src[0], &dst[0], n)
    return out


def radix_sort_by_partition(pointers):
    """A new array of ``pointers`` stably sorted by partition id; the input is not modified.

    Pointers of one partition keep their input (insertion) order.
    NumPy equivalent: ``pointers[np.argsort(pointers >> 40, kind="stable")]``.

    Algorithm: one counting pass histograms the three partition bytes (bits
    40..63), then one stable LSD scatter pass per byte, least significant
    first, skipping a byte whose value is the same in every key (as Spark's
    RadixSort does). Worst case O(4n) time when all three bytes vary, 2n
    words of memory (result + one scratch buffer, allocated only when two or
    more passes are needed); already-sorted or single-partition input costs
    the same as any other.
    """
    arr = _check_pointer_array(pointers)
    cdef Py_ssize_t n = arr.shape[0]
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    cdef const uint64_t[::1] src = arr
    cdef uint64_t[::1] dst = out
    cdef Py_ssize_t counts[C_PARTITION_DIGITS * 256]
    cdef int passes[C_PARTITION_DIGITS]
    cdef int npass
    cdef uint64_t* scratch = NULL
    cdef bint no_memory = False
    with nogil:
        npass = c_count_partition_digits(&src[0], n, counts, passes)
        if npass >= 2:
            scratch = <uint64_t*>malloc(n * sizeof(uint64_t))
            no_memory = scratch == NULL
        if not no_memory:
            c_radix_scatter(&src[0], &dst[0], scratch, n, counts, passes, npass)
        free(scratch)
    if no_memory:
        raise MemoryError(f"cannot allocate radix sort scratch for {n} pointers")
    return out
