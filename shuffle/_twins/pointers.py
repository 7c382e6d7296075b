"""Plain-Python twin of the ``pointers`` kernel: packed record pointers and their sort.

Owns the 64-bit packed pointer of the serialized writer (reference §2.6) and
the stable sort of pointers by partition. It must never guess: a field that
does not fit its bits raises ValueError instead of wrapping (Spark lets an
offset overflow silently; we do not).

Layout of one pointer, most significant bit first::

    [ partition id : 24 ][ page number : 13 ][ offset in page : 27 ]

Pointer arrays are 1-D C-contiguous ``numpy.uint64``. ``int64`` arrays are
refused rather than reinterpreted: partition ids of 2**23 and up set the sign
bit, so an int64 array would sort those partitions first. Pass
``arr.view(np.uint64)`` if you hold the bits in an int64 array.
"""

from __future__ import annotations

import operator

import numpy as np

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

PARTITION_BITS = 24
PAGE_BITS = 13
OFFSET_BITS = 27
MAX_PARTITION_ID = (1 << PARTITION_BITS) - 1
MAX_PAGE_NUMBER = (1 << PAGE_BITS) - 1
MAX_OFFSET = (1 << OFFSET_BITS) - 1
MAX_PAGE_SIZE = 1 << OFFSET_BITS

_PARTITION_SHIFT = PAGE_BITS + OFFSET_BITS
_PAGE_SHIFT = OFFSET_BITS
_MAX_POINTER = (1 << 64) - 1


def _field(value: object, name: str, limit: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if v < 0 or v > limit:
        raise ValueError(f"{name} {v} is outside [0, {limit}]")
    return v


def pack(partition: int, page: int, offset: int) -> int:
    """The pointer for (partition, page, offset); ValueError if a field exceeds its bits."""
    p = _field(partition, "partition", MAX_PARTITION_ID)
    g = _field(page, "page", MAX_PAGE_NUMBER)
    o = _field(offset, "offset", MAX_OFFSET)
    return (p << _PARTITION_SHIFT) | (g << _PAGE_SHIFT) | o


def unpack(pointer: int) -> tuple[int, int, int]:
    """(partition, page, offset) of a pointer in [0, 2**64 - 1]."""
    v = _field(pointer, "pointer", _MAX_POINTER)
    return v >> _PARTITION_SHIFT, (v >> _PAGE_SHIFT) & MAX_PAGE_NUMBER, v & MAX_OFFSET


def _field_array(values: object, name: str, limit: int) -> np.ndarray:
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


def pack_array(partitions: np.ndarray, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Element-wise :func:`pack` of three equally long 1-D integer arrays, as uint64.

    NumPy equivalent: ``(p << 40) | (g << 27) | o`` in uint64, after range checks.
    """
    p = _field_array(partitions, "partition", MAX_PARTITION_ID)
    g = _field_array(pages, "page", MAX_PAGE_NUMBER)
    o = _field_array(offsets, "offset", MAX_OFFSET)
    if not (len(p) == len(g) == len(o)):
        raise ValueError(
            f"partitions, pages and offsets differ in length: {len(p)}, {len(g)}, {len(o)}"
        )
    out = p.astype(np.uint64) << np.uint64(_PARTITION_SHIFT)
    out |= g.astype(np.uint64) << np.uint64(_PAGE_SHIFT)
    out |= o.astype(np.uint64)
    return out


def _check_pointer_array(pointers: object) -> np.ndarray:
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


def partitions_of(pointers: np.ndarray) -> np.ndarray:
    """The partition id of each pointer, as int32. NumPy: ``(pointers >> 40).astype(np.int32)``."""
    arr = _check_pointer_array(pointers)
    return (arr >> np.uint64(_PARTITION_SHIFT)).astype(np.int32)


def radix_sort_by_partition(pointers: np.ndarray) -> np.ndarray:
    """A new array of ``pointers`` stably sorted by partition id; the input is not modified.

    Pointers of one partition keep their input (insertion) order. The compiled
    kernel does a stable LSD radix sort over the three partition bytes, skipping
    a byte that is equal in every key; this twin states the same result with
    NumPy: ``pointers[np.argsort(pointers >> 40, kind="stable")]``.
    """
    arr = _check_pointer_array(pointers)
    return arr[np.argsort(arr >> np.uint64(_PARTITION_SHIFT), kind="stable")]
