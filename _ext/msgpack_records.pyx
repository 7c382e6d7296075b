"""Pack ``(key, value)`` records as msgpack, back to back, without a Python call per scalar (compiled kernel).

The serializer's hot loop: every writer turns each record into msgpack
``key`` then ``value``. Scalars of exact built-in types are encoded here, as
msgpack-python's ``Packer(use_bin_type=True, strict_types=True)`` encodes them,
byte for byte: ``None``, ``bool``, ``int`` within 64 bits (smallest form),
``float`` (float 64), ``str`` (UTF-8; str8/16/32) and ``bytes`` (bin8/16/32).
Anything else (tuples, lists, dicts, big ints, strings with lone surrogates,
other objects) goes to ``pack_other(obj) -> bytes``, the serializer's full
packer. ``shuffle/_twins/msgpack_records.py`` is the readable specification.

A record the kernel cannot take (not an exact 2-tuple, or ``pack_other``
raising) stops it: the output is cut back to the end of the last whole record
and the record's index is returned, so the caller's slow path can raise the
precise error (or pack it) and resume. Worst case O(total bytes).
"""

from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memcpy
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

__all__ = ["pack_pairs", "pack_each"]


cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyBytes_CheckExact(object o)
    bint PyTuple_CheckExact(object o)
    bint PyBool_Check(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except? NULL
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object o) except? <unsigned long long>-1
    double PyFloat_AS_DOUBLE(object o)
    void PyErr_Clear()


cdef inline int _reserve(bytearray out, Py_ssize_t extra) except -1:
    """Grow ``out`` by ``extra`` bytes at its end (amortised: bytearray over-allocates)."""
    PyByteArray_Resize(out, PyByteArray_GET_SIZE(out) + extra)
    return 0


cdef inline void _put_be(uint8_t* p, uint64_t v, int n) noexcept:
    cdef int i
    for i in range(n):
        p[i] = <uint8_t>(v >> (8 * (n - 1 - i)))


cdef int _pack_head(bytearray out, uint8_t small_base, uint8_t code8, uint8_t code16, uint8_t code32,
                    Py_ssize_t n, Py_ssize_t small_limit) except -1:
    """A str/bin header: fix form (small_base | n) when n < small_limit, else 8/16/32-bit lengths."""
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(out)
    cdef uint8_t* p
    if n < small_limit:
        _reserve(out, 1)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = small_base | <uint8_t>n
    elif n < 0x100 and code8 != 0:
        _reserve(out, 2)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = code8
        p[1] = <uint8_t>n
    elif n < 0x10000:
        _reserve(out, 3)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = code16
        _put_be(p + 1, <uint64_t>n, 2)
    else:
        _reserve(out, 5)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = code32
        _put_be(p + 1, <uint64_t>n, 4)
    return 0


cdef int _pack_raw(bytearray out, const char* data, Py_ssize_t n) except -1:
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(out)
    _reserve(out, n)
    memcpy(PyByteArray_AS_STRING(out) + at, data, n)
    return 0


cdef int _pack_uint(bytearray out, uint64_t d) except -1:
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(out)
    cdef uint8_t* p
    if d < 0x80:
        _reserve(out, 1)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = <uint8_t>d
    elif d < 0x100:
        _reserve(out, 2)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xcc
        p[1] = <uint8_t>d
    elif d < 0x10000:
        _reserve(out, 3)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xcd
        _put_be(p + 1, d, 2)
    elif d < 0x100000000:
        _reserve(out, 5)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xce
        _put_be(p + 1, d, 4)
    else:
        _reserve(out, 9)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xcf
        _put_be(p + 1, d, 8)
    return 0


cdef int _pack_negative(bytearray out, int64_t d) except -1:
    """d < 0."""
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(out)
    cdef uint8_t* p
    if d >= -32:
        _reserve(out, 1)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = <uint8_t>(<int64_t>0x100 + d)
    elif d >= -128:
        _reserve(out, 2)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xd0
        p[1] = <uint8_t>(<uint64_t>d)
    elif d >= -32768:
        _reserve(out, 3)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xd1
        _put_be(p + 1, <uint64_t>d, 2)
    elif d >= -2147483648:
        _reserve(out, 5)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xd2
        _put_be(p + 1, <uint64_t>d, 4)
    else:
        _reserve(out, 9)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xd3
        _put_be(p + 1, <uint64_t>d, 8)
    return 0


cdef union _Double:
    double d
    uint64_t u


cdef int _pack_one(bytearray out, object obj, object pack_other) except -1:
    """Append obj's msgpack form; may raise whatever pack_other raises."""
    cdef int overflow = 0
    cdef long long v
    cdef Py_ssize_t n
    cdef const char* s
    cdef _Double u
    cdef Py_ssize_t at
    cdef uint8_t* p
    if obj is None:
        return _pack_raw(out, b"\xc0", 1)
    if PyBool_Check(obj):
        return _pack_raw(out, b"\xc3" if obj is True else b"\xc2", 1)
    if PyLong_CheckExact(obj):
        v = PyLong_AsLongLongAndOverflow(obj, &overflow)
        if overflow == 0:
            return _pack_uint(out, <uint64_t>v) if v >= 0 else _pack_negative(out, v)
        if overflow > 0 and obj <= 0xFFFFFFFFFFFFFFFF:
            return _pack_uint(out, PyLong_AsUnsignedLongLong(obj))
        # beyond 64 bits: the full packer's extension type
    elif PyFloat_CheckExact(obj):
        u.d = PyFloat_AS_DOUBLE(obj)
        at = PyByteArray_GET_SIZE(out)
        _reserve(out, 9)
        p = <uint8_t*>PyByteArray_AS_STRING(out) + at
        p[0] = 0xcb
        _put_be(p + 1, u.u, 8)
        return 0
    elif PyUnicode_CheckExact(obj):
        try:
            s = PyUnicode_AsUTF8AndSize(obj, &n)
        except UnicodeError:  # lone surrogates: the full packer's surrogatepass
            s = NULL
        if s != NULL and n <= 0xFFFFFFFF:
            _pack_head(out, 0xa0, 0xd9, 0xda, 0xdb, n, 32)
            return _pack_raw(out, s, n)
    elif PyBytes_CheckExact(obj):
        n = PyBytes_GET_SIZE(obj)
        if n <= 0xFFFFFFFF:
            _pack_head(out, 0, 0xc4, 0xc5, 0xc6, n, 0)
            return _pack_raw(out, PyBytes_AS_STRING(obj), n)
    packed = pack_other(obj)
    if not PyBytes_CheckExact(packed):
        raise TypeError(f"pack_other must return bytes, got {type(packed).__name__}")
    return _pack_raw(out, PyBytes_AS_STRING(packed), PyBytes_GET_SIZE(packed))


def _check(records, out, pack_other):
    if not isinstance(records, list):
        raise TypeError(f"records must be a list, got {type(records).__name__}")
    if not isinstance(out, bytearray):
        raise TypeError(f"out must be a bytearray, got {type(out).__name__}")
    if not callable(pack_other):
        raise TypeError(f"pack_other must be callable, got {pack_other!r}")


def pack_pairs(list records, bytearray out, pack_other, Py_ssize_t start=0):
    """Append key then value of ``records[start:]`` to ``out``; returns the index it stopped at.

    Returns ``len(records)`` when every record was packed; otherwise the index
    of the first record it could not take (not an exact 2-tuple, or
    ``pack_other`` raised), with ``out`` ending at the previous record.
    """
    _check(records, out, pack_other)
    if start < 0 or start > len(records):
        raise ValueError(f"start {start} outside 0..{len(records)}")
    cdef Py_ssize_t i, n = len(records), mark
    for i in range(start, n):
        record = records[i]
        if not PyTuple_CheckExact(record) or PyTuple_GET_SIZE(record) != 2:
            return i
        mark = PyByteArray_GET_SIZE(out)
        try:
            _pack_one(out, (<tuple>record)[0], pack_other)
            _pack_one(out, (<tuple>record)[1], pack_other)
        except Exception:
            PyByteArray_Resize(out, mark)
            return i
    return n


def pack_each(list records, pack_other, Py_ssize_t start=0, list into=None):
    """Each record of ``records[start:]`` as its own bytes, appended to ``into`` (a new list by default).

    Returns ``(into, stopped_at)`` with the same stopping rule as :func:`pack_pairs`.
    """
    if into is None:
        into = []
    _check(records, bytearray(), pack_other)
    if start < 0 or start > len(records):
        raise ValueError(f"start {start} outside 0..{len(records)}")
    cdef bytearray scratch = bytearray()
    cdef Py_ssize_t i, n = len(records)
    for i in range(start, n):
        record = records[i]
        if not PyTuple_CheckExact(record) or PyTuple_GET_SIZE(record) != 2:
            return into, i
        PyByteArray_Resize(scratch, 0)
        try:
            _pack_one(scratch, (<tuple>record)[0], pack_other)
            _pack_one(scratch, (<tuple>record)[1], pack_other)
        except Exception:
            return into, i
        into.append(bytes(scratch))
    return into, n
