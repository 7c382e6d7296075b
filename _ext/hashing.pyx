"""The seed-independent key hash behind ``HashPartitioner`` (compiled kernel).

Owns PySpark's ``portable_hash`` as it behaves on PySpark's workers (which run
with ``PYTHONHASHSEED=0``), computed without depending on this process's own
hash seed, and the batch ``partition_ids`` built on it. It must never call the
built-in hash on ``str`` or ``bytes``: that is the one value that changes from
one interpreter to the next. ``shuffle/_twins/hashing.py`` is the readable
specification (and lists what each type hashes to); this module gives the same
answers and errors.

On an interpreter whose ``sys.hash_info`` is not 64-bit SipHash-1-3 without a
small-string cutoff (Python 3.10 uses SipHash-2-4), we still compute
SipHash-1-3, so results stay stable across interpreters and equal to the twin;
they then differ from that interpreter's own seed-0 ``hash()`` and
``MATCHES_CPYTHON_SEED0`` is False.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

import logging
import operator
import sys

import numpy as np

__all__ = ["MATCHES_CPYTHON_SEED0", "MAX_PARTITIONS", "partition_ids", "portable_hash"]

logger = logging.getLogger(__name__)


cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object o)
    bint PyBytes_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyTuple_Check(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)
    long PyLong_AsLongAndOverflow(object o, int* overflow) except? -1
    Py_hash_t PyObject_Hash(object o) except -1
    # Returns nonzero (1, not -1) with RecursionError set when too deep.
    int Py_EnterRecursiveCall(const char* where)
    void Py_LeaveRecursiveCall()
    const Py_ssize_t PY_SSIZE_T_MAX


cdef extern from *:
    """
    /* Strings built by the legacy (pre-PEP 393) API must be made "ready"
       before their canonical buffer can be read; from 3.12 all strings are. */
    static int shuffle_unicode_ready(PyObject *o) {
    #if PY_VERSION_HEX < 0x030C0000
        return PyUnicode_READY(o);
    #else
        (void)o;
        return 0;
    #endif
    }
    """
    int shuffle_unicode_ready(object o) except -1


MAX_PARTITIONS = 2**31 - 1
"""Largest ``num_partitions``: partition ids are returned as int32."""

MATCHES_CPYTHON_SEED0 = (
    sys.hash_info.algorithm == "siphash13"
    and sys.hash_info.cutoff == 0
    and sys.hash_info.hash_bits == 64
)
"""True when our str/bytes hash equals this interpreter's ``hash()`` under PYTHONHASHSEED=0."""

if not MATCHES_CPYTHON_SEED0:
    logger.info(
        "interpreter hash is %s (cutoff %d, %d bits), not siphash13: portable_hash still "
        "uses SipHash-1-3, so it is stable but differs from this interpreter's seed-0 hash()",
        sys.hash_info.algorithm,
        sys.hash_info.cutoff,
        sys.hash_info.hash_bits,
    )

# CPython reduces ints modulo this Mersenne prime (2**61 - 1) to hash them.
cdef uint64_t _INT_HASH_MODULUS = (<uint64_t>1 << 61) - 1


# ---------------------------------------------------------------- SipHash-1-3

cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline void _sipround(uint64_t* v) noexcept nogil:
    v[0] += v[1]
    v[2] += v[3]
    v[1] = _rotl(v[1], 13) ^ v[0]
    v[3] = _rotl(v[3], 16) ^ v[2]
    v[0] = _rotl(v[0], 32)
    v[2] += v[1]
    v[0] += v[3]
    v[1] = _rotl(v[1], 17) ^ v[2]
    v[3] = _rotl(v[3], 21) ^ v[0]
    v[2] = _rotl(v[2], 32)


cdef inline uint64_t _load_le64(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # Byte by byte so the result is the same on any host; compilers fuse it
    # into one load on little-endian machines.
    cdef uint64_t m = 0
    cdef Py_ssize_t i
    for i in range(n):
        m |= (<uint64_t>p[i]) << (8 * i)
    return m


cdef uint64_t _siphash13_zero_key(const uint8_t* data, Py_ssize_t n) noexcept nogil:
    """SipHash-1-3 of ``data[0:n]`` with key (0, 0). O(n), no allocation."""
    cdef uint64_t v[4]
    cdef uint64_t m
    cdef Py_ssize_t full = n - n % 8
    cdef Py_ssize_t i = 0
    # The initial state is the SipHash constants xored with a zero key.
    v[0] = 0x736f6d6570736575ULL
    v[1] = 0x646f72616e646f6dULL
    v[2] = 0x6c7967656e657261ULL
    v[3] = 0x7465646279746573ULL
    while i < full:
        m = _load_le64(data + i, 8)
        v[3] ^= m
        _sipround(v)
        v[0] ^= m
        i += 8
    # Last block: the 0..7 trailing bytes, with the length's low byte on top.
    m = _load_le64(data + full, n - full) | ((<uint64_t>n) << 56)
    v[3] ^= m
    _sipround(v)
    v[0] ^= m
    v[2] ^= 0xff
    _sipround(v)
    _sipround(v)
    _sipround(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


cdef inline Py_hash_t _hash_buffer(const void* data, Py_ssize_t n) noexcept nogil:
    """CPython's seed-0 hash of a memory buffer, as a signed Py_hash_t."""
    if n == 0:
        return 0
    cdef Py_hash_t h = <Py_hash_t>_siphash13_zero_key(<const uint8_t*>data, n)
    return -2 if h == -1 else h


cdef inline Py_hash_t _hash_c_long(long v) noexcept nogil:
    """CPython's hash of an int that fits in a C long (reduction mod 2**61 - 1)."""
    cdef uint64_t magnitude
    cdef Py_hash_t h
    if v >= 0:
        return <Py_hash_t>(<uint64_t>v % _INT_HASH_MODULUS)
    # -(v + 1) + 1 avoids overflowing on LONG_MIN.
    magnitude = <uint64_t>(-(v + 1)) + 1
    h = -<Py_hash_t>(magnitude % _INT_HASH_MODULUS)
    return -2 if h == -1 else h


# ------------------------------------------------------------ portable_hash

cdef Py_hash_t _portable_hash(object obj) except -1:
    cdef int overflow = 0
    cdef long v
    cdef uint64_t h
    cdef Py_hash_t item_hash
    if obj is None:
        return 0
    if PyLong_CheckExact(obj):
        v = PyLong_AsLongAndOverflow(obj, &overflow)
        if overflow == 0:
            return _hash_c_long(v)
        return PyObject_Hash(obj)
    if PyUnicode_CheckExact(obj) or (isinstance(obj, str) and type(obj).__hash__ is str.__hash__):
        shuffle_unicode_ready(obj)
        return _hash_buffer(PyUnicode_DATA(obj),
                            PyUnicode_GET_LENGTH(obj) * PyUnicode_KIND(obj))
    if PyBytes_CheckExact(obj) or (isinstance(obj, bytes)
                                   and type(obj).__hash__ is bytes.__hash__):
        return _hash_buffer(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if PyTuple_Check(obj):
        # PySpark's combine. Python ints are unbounded, but after `&= maxsize`
        # only the low 63 bits matter, so wrapping uint64 arithmetic is exact.
        if Py_EnterRecursiveCall(" in portable_hash") != 0:
            return -1
        try:
            h = 0x345678
            for item in <tuple>obj:
                item_hash = _portable_hash(item)
                h ^= <uint64_t>item_hash
                h *= 1000003
                h &= <uint64_t>PY_SSIZE_T_MAX
        finally:
            Py_LeaveRecursiveCall()
        h ^= <uint64_t>PyTuple_GET_SIZE(obj)
        return <Py_hash_t>h  # < 2**63 and so never -1
    return PyObject_Hash(obj)


def portable_hash(obj) -> int:
    """PySpark's ``portable_hash(obj)`` as computed on a ``PYTHONHASHSEED=0`` worker.

    Python equivalent: ``shuffle._twins.hashing.portable_hash``. Algorithm:
    SipHash-1-3 (zero key) over the PEP 393 / bytes buffer for str and bytes,
    CPython's int hash for ints, PySpark's xor-multiply combine for tuples,
    ``hash()`` otherwise. Worst case O(total bytes of the key). Raises what
    ``hash()`` raises for unhashable objects (``TypeError``) and
    ``RecursionError`` for tuples nested too deep.
    """
    return _portable_hash(obj)


# ------------------------------------------------------------ partition_ids

cdef inline int32_t _non_negative_mod(Py_hash_t h, int64_t n) noexcept nogil:
    # Python's modulo: the result takes the divisor's sign.
    cdef int64_t r = (<int64_t>h) % n
    if r < 0:
        r += n
    return <int32_t>r


cdef int64_t _check_num_partitions(object num_partitions) except -1:
    if isinstance(num_partitions, bool):
        raise TypeError("num_partitions must be an int, not bool")
    try:
        n = operator.index(num_partitions)
    except TypeError:
        raise TypeError(
            f"num_partitions must be an int, not {type(num_partitions).__name__}"
        ) from None
    if not 1 <= n <= MAX_PARTITIONS:
        raise ValueError(f"num_partitions must be in [1, {MAX_PARTITIONS}], got {n}")
    return n


cdef object _as_key_list(object keys):
    if keys is None:
        raise TypeError("keys must be a list or sequence of keys, not None")
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        # Hashing each character of one key is never what the caller meant.
        raise TypeError(f"keys must be a list or sequence of keys, not {type(keys).__name__}")
    if isinstance(keys, (list, tuple)):
        return keys
    try:
        return list(keys)
    except TypeError:
        raise TypeError(
            f"keys must be a list or sequence of keys, not {type(keys).__name__}"
        ) from None


def partition_ids(keys, num_partitions) -> np.ndarray:
    """``np.array([portable_hash(k) % num_partitions for k in keys], dtype=np.int32)``.

    ``keys`` is a list or tuple (any other iterable is copied into a list first;
    None, str and bytes raise ``TypeError``). ``num_partitions`` is an int in
    ``[1, 2**31 - 1]`` (``TypeError``/``ValueError`` otherwise). The modulo is
    Python's, so ids are in ``[0, num_partitions)``.

    One C loop over the keys with inline paths for exact int (fits in a C
    long), str, bytes and None; other types go through ``portable_hash``. The
    loop holds the GIL because it reads Python objects; the SipHash core it
    calls is ``nogil``. Worst case O(total key bytes).
    """
    cdef int64_t n = _check_num_partitions(num_partitions)
    seq = _as_key_list(keys)
    cdef Py_ssize_t count = len(seq)
    out = np.empty(count, dtype=np.int32)
    cdef int32_t[::1] ids = out
    cdef Py_ssize_t i = 0
    cdef Py_hash_t h
    cdef long v
    cdef int overflow
    for key in seq:
        if i >= count:
            # A list mutated by a key's __hash__ while we iterate.
            raise RuntimeError("keys changed size during partition_ids")
        if key is None:
            h = 0
        elif PyLong_CheckExact(key):
            overflow = 0
            v = PyLong_AsLongAndOverflow(key, &overflow)
            h = _hash_c_long(v) if overflow == 0 else PyObject_Hash(key)
        elif PyUnicode_CheckExact(key):
            shuffle_unicode_ready(key)
            h = _hash_buffer(PyUnicode_DATA(key), PyUnicode_GET_LENGTH(key) * PyUnicode_KIND(key))
        elif PyBytes_CheckExact(key):
            h = _hash_buffer(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
        else:
            h = _portable_hash(key)
        ids[i] = _non_negative_mod(h, n)
        i += 1
    if i != count:
        raise RuntimeError("keys changed size during partition_ids")
    return out
