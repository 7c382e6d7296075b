# The packed record pointer at C level, shared by the kernels that cimport it
# (pointers.pyx, recordbuf.pyx). Only inline code and constants live here, so
# cimporting this file needs no run-time import of another compiled module.
#
# Layout of one uint64 pointer (reference §2.6):
#   bits 63..40  partition id (24 bits)
#   bits 39..27  page number  (13 bits)
#   bits 26..0   offset of the record's length prefix inside its page (27 bits)

from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

cdef enum:
    C_PARTITION_BITS = 24
    C_PAGE_BITS = 13
    C_OFFSET_BITS = 27
    C_PARTITION_SHIFT = C_PAGE_BITS + C_OFFSET_BITS   # 40
    C_PAGE_SHIFT = C_OFFSET_BITS                      # 27
    # How many 8-bit digits the partition id spans; the radix sort looks at these only.
    C_PARTITION_DIGITS = C_PARTITION_BITS // 8


cdef inline uint64_t c_pack(uint64_t partition, uint64_t page, uint64_t offset) noexcept nogil:
    """Packs fields the caller has already checked against their limits."""
    return (partition << C_PARTITION_SHIFT) | (page << C_PAGE_SHIFT) | offset


cdef inline uint64_t c_partition(uint64_t pointer) noexcept nogil:
    return pointer >> C_PARTITION_SHIFT


cdef inline uint64_t c_page(uint64_t pointer) noexcept nogil:
    return (pointer >> C_PAGE_SHIFT) & ((<uint64_t>1 << C_PAGE_BITS) - 1)


cdef inline uint64_t c_offset(uint64_t pointer) noexcept nogil:
    return pointer & ((<uint64_t>1 << C_OFFSET_BITS) - 1)


cdef inline int c_count_partition_digits(
    const uint64_t* keys, Py_ssize_t n, Py_ssize_t* counts, int* passes
) noexcept nogil:
    """Histograms the partition digits of ``keys`` and picks the digits worth a pass.

    ``counts`` holds C_PARTITION_DIGITS * 256 entries (digit d at counts[d * 256]);
    ``passes`` receives the digit numbers, least significant first, whose value is
    not the same in every key. Returns how many passes the sort needs (0..3).
    """
    cdef Py_ssize_t i
    cdef int d, npass = 0
    cdef uint64_t key, first
    memset(counts, 0, C_PARTITION_DIGITS * 256 * sizeof(Py_ssize_t))
    if n == 0:
        return 0
    for i in range(n):
        key = keys[i] >> C_PARTITION_SHIFT
        counts[key & 0xFF] += 1
        counts[256 + ((key >> 8) & 0xFF)] += 1
        counts[512 + ((key >> 16) & 0xFF)] += 1
    # A digit whose value is identical in every key cannot reorder anything:
    # skipping it is what makes sorting few or dense partitions cheap.
    first = keys[0] >> C_PARTITION_SHIFT
    for d in range(C_PARTITION_DIGITS):
        if counts[d * 256 + ((first >> (8 * d)) & 0xFF)] != n:
            passes[npass] = d
            npass += 1
    return npass


cdef inline void c_radix_scatter(
    const uint64_t* src, uint64_t* out, uint64_t* scratch, Py_ssize_t n,
    const Py_ssize_t* counts, const int* passes, int npass
) noexcept nogil:
    """Stable LSD passes over the digits chosen by ``c_count_partition_digits``.

    Reads ``src`` (never written), leaves the sorted keys in ``out``. ``scratch``
    (n slots) is used only when npass >= 2 and may be NULL otherwise. The passes
    alternate between ``out`` and ``scratch`` so that the last one lands in ``out``.
    """
    cdef Py_ssize_t offsets[256]
    cdef Py_ssize_t i, total
    cdef int p, v, shift
    cdef const uint64_t* cur = src
    cdef uint64_t* dst
    if npass == 0:
        if n > 0:
            memcpy(out, src, n * sizeof(uint64_t))
        return
    for p in range(npass):
        dst = out if (npass - 1 - p) % 2 == 0 else scratch
        total = 0
        for v in range(256):
            offsets[v] = total
            total += counts[passes[p] * 256 + v]
        shift = C_PARTITION_SHIFT + 8 * passes[p]
        for i in range(n):
            v = <int>((cur[i] >> shift) & 0xFF)
            dst[offsets[v]] = cur[i]
            offsets[v] += 1
        cur = dst
