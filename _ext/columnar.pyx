"""Columnar kernels: hash partition ids, counting sort by bucket, hash aggregation (compiled).

The per-record loops of the columnar shuffle (``shuffle/columnar/``), over
numpy columns, with no Python object per record. ``shuffle/_twins/columnar.py``
is the readable numpy specification; this module gives the same answers and
raises the same errors (``TypeError``/``ValueError`` from the ``def``
wrappers, which validate dtype, length and limits before any ``nogil`` loop).

- :func:`hash_partition_ids`: ``[hash(k) % n for k in keys.tolist()]`` as int32,
  i.e. PySpark's ``portable_hash`` of int and float keys (CPython's numeric
  hash modulo the Mersenne prime ``2**61 - 1``, ``-1 -> -2``) with Python's
  floored modulo. One pass, O(n).
- :func:`counting_sort`: a stable counting sort of several columns by bucket
  ids in ``[0, num_buckets)``; equals gathering each column with
  ``np.argsort(ids, kind="stable")``. Two passes per column, O(n + buckets),
  worst case the same (no comparison).
- :func:`hash_aggregate`: sum/min/max/count of values per distinct int64 key,
  keys in order of first appearance; equals a dict fold over the pairs.
  Open addressing with linear probing at load <= 1/2; O(n) expected, O(n^2)
  only for keys built to collide under the multiplicative hash.
"""

from libc.math cimport frexp, ldexp, isnan, isinf
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

__all__ = ["AGGREGATIONS", "MAX_BUCKETS", "counting_sort", "hash_aggregate", "hash_partition_ids"]

MAX_BUCKETS = 2**31 - 1
"""Most buckets (partitions) a counting sort takes: bucket ids are int32."""

AGGREGATIONS = ("sum", "min", "max", "count")
"""The folds :func:`hash_aggregate` computes (``count`` ignores the values)."""

cdef uint64_t MODULUS = (<uint64_t>1 << 61) - 1   # CPython's _PyHASH_MODULUS on 64-bit builds
cdef int64_t INF_HASH = 314159

ctypedef fused int_key:
    int8_t
    int16_t
    int32_t
    int64_t

ctypedef fused uint_key:
    uint8_t
    uint16_t
    uint32_t
    uint64_t

ctypedef fused float_key:
    float
    double

ctypedef fused agg_value:
    int64_t
    uint64_t
    double


cdef inline int32_t _floor_mod(int64_t h, int64_t n) noexcept nogil:
    # Division is the cost here: a power of two is a mask (also floored for
    # negative h, in two's complement), and a small h takes 32-bit division.
    cdef int64_t r
    if (n & (n - 1)) == 0:
        return <int32_t>(h & (n - 1))
    if h >= 0 and h <= <int64_t>0xFFFFFFFF:
        return <int32_t>(<uint32_t>h % <uint32_t>n)
    r = h % n
    if r < 0:
        r += n
    return <int32_t>r


cdef inline int64_t _hash_signed(int64_t v) noexcept nogil:
    cdef uint64_t magnitude
    cdef int64_t h
    if v >= 0:
        return v if <uint64_t>v < MODULUS else <int64_t>(<uint64_t>v % MODULUS)
    magnitude = <uint64_t>0 - <uint64_t>v        # |v|, also for INT64_MIN
    h = -<int64_t>(magnitude % MODULUS) if magnitude >= MODULUS else -<int64_t>magnitude
    return -2 if h == -1 else h


cdef inline uint64_t _reduce_unsigned(uint64_t v) noexcept nogil:
    return v if v < MODULUS else v % MODULUS


cdef inline int64_t _hash_double(double v) noexcept nogil:
    # |v| = M * 2**e with M a 53-bit integer; 2**61 == 1 (mod 2**61 - 1), so
    # M * 2**e mod P is M rotated left by e mod 61 within 61 bits.
    cdef int e
    cdef double m
    cdef uint64_t mant, x
    cdef int64_t r, h
    if isinf(v):
        return INF_HASH if v > 0 else -INF_HASH
    m = frexp(v, &e)
    if m == 0.0:
        return 0
    if m < 0:
        mant = <uint64_t>ldexp(-m, 53)
    else:
        mant = <uint64_t>ldexp(m, 53)
    r = (<int64_t>e - 53) % 61
    if r < 0:
        r += 61
    x = ((mant << r) & MODULUS) | (mant >> (61 - r)) if r else mant
    h = -<int64_t>x if m < 0 else <int64_t>x
    return -2 if h == -1 else h


cdef void _ids_signed(const int_key[::1] keys, int32_t[::1] out, int64_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(keys.shape[0]):
        out[i] = _floor_mod(_hash_signed(<int64_t>keys[i]), n)


cdef void _ids_unsigned(const uint_key[::1] keys, int32_t[::1] out, int64_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(keys.shape[0]):
        out[i] = _floor_mod(<int64_t>_reduce_unsigned(<uint64_t>keys[i]), n)


cdef void _ids_float(const float_key[::1] keys, int32_t[::1] out, int64_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(keys.shape[0]):
        out[i] = _floor_mod(_hash_double(<double>keys[i]), n)


def _check_buckets(num_buckets, what):
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, (int, np.integer)):
        raise TypeError(f"{what} must be an int, not {type(num_buckets).__name__}")
    if not 1 <= num_buckets <= MAX_BUCKETS:
        raise ValueError(f"{what} must be in [1, {MAX_BUCKETS}], got {num_buckets}")
    return int(num_buckets)


def _check_column(array, what):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, not {type(array).__name__}")
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got {array.ndim}-D")


def hash_partition_ids(keys, num_partitions):
    """``np.array([hash(k) % num_partitions for k in keys.tolist()], dtype=np.int32)``.

    ``keys`` is a 1-D array of a signed or unsigned integer dtype (1-8 bytes)
    or float32/float64 without NaN (NaN hashes by identity in CPython, so it
    has no stable partition: ``ValueError``). Byte order may be either.
    """
    n = _check_buckets(num_partitions, "num_partitions")
    _check_column(keys, "keys")
    kind = keys.dtype.kind
    if kind not in "iuf" or (kind == "f" and keys.dtype.itemsize not in (4, 8)):
        raise TypeError(f"keys must have an integer or float32/float64 dtype, not {keys.dtype}")
    keys = np.ascontiguousarray(keys, dtype=keys.dtype.newbyteorder("="))
    out = np.empty(keys.shape[0], dtype=np.int32)
    cdef int32_t[::1] ids = out
    cdef int64_t nn = n
    if kind == "f":
        if np.isnan(keys).any():
            raise ValueError("keys hold NaN, which has no stable hash partition")
        if keys.dtype.itemsize == 4:
            _ids_float[float](keys, ids, nn)
        else:
            _ids_float[double](keys, ids, nn)
    elif kind == "i":
        size = keys.dtype.itemsize
        if size == 1:
            _ids_signed[int8_t](keys, ids, nn)
        elif size == 2:
            _ids_signed[int16_t](keys, ids, nn)
        elif size == 4:
            _ids_signed[int32_t](keys, ids, nn)
        else:
            _ids_signed[int64_t](keys, ids, nn)
    else:
        size = keys.dtype.itemsize
        if size == 1:
            _ids_unsigned[uint8_t](keys, ids, nn)
        elif size == 2:
            _ids_unsigned[uint16_t](keys, ids, nn)
        elif size == 4:
            _ids_unsigned[uint32_t](keys, ids, nn)
        else:
            _ids_unsigned[uint64_t](keys, ids, nn)
    return out


# ---------------------------------------------------------------- counting sort
cdef void _count(const int32_t[::1] ids, int64_t[::1] offsets) noexcept nogil:
    cdef Py_ssize_t i, b
    cdef int64_t running = 0
    for i in range(ids.shape[0]):
        offsets[ids[i] + 1] += 1
    for b in range(1, offsets.shape[0]):
        running += offsets[b]
        offsets[b] = running


ctypedef fused word:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef void _scatter_words(const int32_t[::1] ids, int64_t[::1] cursor, const word* src, word* dst) noexcept nogil:
    cdef Py_ssize_t i
    cdef int32_t b
    for i in range(ids.shape[0]):
        b = ids[i]
        dst[cursor[b]] = src[i]
        cursor[b] += 1


cdef void _scatter_bytes(const int32_t[::1] ids, int64_t[::1] cursor, const uint8_t* src, uint8_t* dst,
                         Py_ssize_t width) noexcept nogil:
    cdef Py_ssize_t i
    cdef int32_t b
    for i in range(ids.shape[0]):
        b = ids[i]
        memcpy(dst + cursor[b] * width, src + i * width, width)
        cursor[b] += 1


def counting_sort(ids, num_buckets, columns):
    """Stable sort of ``columns`` by ``ids``; returns ``(sorted columns, offsets)``.

    ``ids`` is int32 in ``[0, num_buckets)`` (checked: ``ValueError``);
    ``columns`` a sequence of arrays (any dtype, ``len == len(ids)`` along
    axis 0). Each result equals ``column[np.argsort(ids, kind="stable")]``;
    ``offsets`` (int64, ``num_buckets + 1``) bounds bucket ``b`` at
    ``[offsets[b], offsets[b + 1])``.
    """
    nb = _check_buckets(num_buckets, "num_buckets")
    _check_column(ids, "ids")
    if ids.dtype != np.int32:
        raise TypeError(f"ids must be int32, not {ids.dtype}")
    ids = np.ascontiguousarray(ids)
    n = ids.shape[0]
    if n and (ids.min() < 0 or ids.max() >= nb):
        raise ValueError(f"ids must lie in [0, {nb}), got [{ids.min()}, {ids.max()}]")
    columns = list(columns)
    for column in columns:
        if not isinstance(column, np.ndarray):
            raise TypeError(f"columns must be numpy arrays, not {type(column).__name__}")
        if column.ndim < 1 or column.shape[0] != n:
            raise ValueError(f"every column must have {n} rows, got shape {column.shape}")
    offsets = np.zeros(nb + 1, dtype=np.int64)
    cdef const int32_t[::1] idv = ids
    cdef int64_t[::1] offv = offsets
    with nogil:
        _count(idv, offv)
    out = []
    cdef int64_t[::1] cursor
    cdef Py_ssize_t width
    cdef const uint8_t[::1] src
    cdef uint8_t[::1] dst
    for column in columns:
        column = np.ascontiguousarray(column)
        result = np.empty_like(column)
        width = column.dtype.itemsize * (column.size // n if n else 1)
        cursor = offsets[:nb].copy()
        if n:
            src = column.reshape(-1).view(np.uint8)
            dst = result.reshape(-1).view(np.uint8)
            with nogil:
                if width == 8:
                    _scatter_words[uint64_t](idv, cursor, <const uint64_t*>&src[0], <uint64_t*>&dst[0])
                elif width == 4:
                    _scatter_words[uint32_t](idv, cursor, <const uint32_t*>&src[0], <uint32_t*>&dst[0])
                elif width == 2:
                    _scatter_words[uint16_t](idv, cursor, <const uint16_t*>&src[0], <uint16_t*>&dst[0])
                elif width == 1:
                    _scatter_words[uint8_t](idv, cursor, &src[0], &dst[0])
                else:
                    _scatter_bytes(idv, cursor, &src[0], &dst[0], width)
        out.append(result)
    return out, offsets


# ---------------------------------------------------------------- hash aggregation
cdef inline uint64_t _slot(int64_t key, int shift) noexcept nogil:
    return (<uint64_t>key * <uint64_t>0x9E3779B97F4A7C15) >> shift


cdef Py_ssize_t _aggregate(const int64_t[::1] keys, const agg_value[::1] values, int op,
                           int32_t[::1] table, int shift, int64_t[::1] out_keys,
                           agg_value[::1] out_values) noexcept nogil:
    cdef Py_ssize_t i, groups = 0
    cdef uint64_t mask = table.shape[0] - 1
    cdef uint64_t s
    cdef int32_t g
    cdef int64_t key
    cdef agg_value v
    for i in range(keys.shape[0]):
        key = keys[i]
        s = _slot(key, shift)
        while True:
            g = table[s]
            if g < 0 or out_keys[g] == key:
                break
            s = (s + 1) & mask
        if op == 3:
            v = 1
        else:
            v = values[i]
        if g < 0:
            g = <int32_t>groups
            groups += 1
            table[s] = g
            out_keys[g] = key
            out_values[g] = v
        elif op == 0 or op == 3:
            out_values[g] = out_values[g] + v
        elif op == 1:
            if v < out_values[g]:
                out_values[g] = v
        else:
            if v > out_values[g]:
                out_values[g] = v
    return groups


def hash_aggregate(keys, values, op):
    """Fold ``values`` per distinct key; returns ``(keys, folded)`` in order of first appearance.

    ``keys`` is int64 (callers widen narrower keys and map float bits);
    ``values`` int64, uint64 or float64 of the same length (ignored for
    ``count``, which may pass None). ``op`` is one of :data:`AGGREGATIONS`:
    ``sum`` wraps around on integer overflow (as numpy), ``min``/``max`` keep the
    first of equal values, ``count`` gives int64 counts. Equals::

        out = {}
        for k, v in zip(keys.tolist(), values.tolist()):
            out[k] = v if k not in out else fold(out[k], v)
    """
    _check_column(keys, "keys")
    if keys.dtype != np.int64:
        raise TypeError(f"keys must be int64, not {keys.dtype}")
    if op not in AGGREGATIONS:
        raise ValueError(f"op must be one of {', '.join(AGGREGATIONS)}, not {op!r}")
    cdef int code = AGGREGATIONS.index(op)
    n = keys.shape[0]
    if code == 3:
        values = np.zeros(n, dtype=np.int64)
    _check_column(values, "values")
    if values.dtype not in (np.int64, np.uint64, np.float64):
        raise TypeError(f"values must be int64, uint64 or float64, not {values.dtype}")
    if values.shape[0] != n:
        raise ValueError(f"keys and values differ in length: {n} and {values.shape[0]}")
    if n >= 2**30:
        raise ValueError(f"at most {2**30 - 1} rows per call, got {n}")
    keys = np.ascontiguousarray(keys, dtype=np.dtype("=i8"))
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))
    capacity = 16
    while capacity < 2 * n:
        capacity *= 2
    cdef int shift = 64 - (capacity.bit_length() - 1)
    table = np.full(capacity, -1, dtype=np.int32)
    out_keys = np.empty(n, dtype=np.int64)
    out_values = np.empty(n, dtype=values.dtype)
    cdef int32_t[::1] tv = table
    cdef const int64_t[::1] kv = keys
    cdef int64_t[::1] okv = out_keys
    cdef Py_ssize_t groups
    if values.dtype == np.int64:
        groups = _run_i64(kv, values, code, tv, shift, okv, out_values)
    elif values.dtype == np.uint64:
        groups = _run_u64(kv, values, code, tv, shift, okv, out_values)
    else:
        groups = _run_f64(kv, values, code, tv, shift, okv, out_values)
    return out_keys[:groups].copy(), out_values[:groups].copy()


cdef Py_ssize_t _run_i64(const int64_t[::1] kv, const int64_t[::1] vv, int code, int32_t[::1] tv, int shift,
                         int64_t[::1] okv, int64_t[::1] ov):
    with nogil:
        return _aggregate[int64_t](kv, vv, code, tv, shift, okv, ov)


cdef Py_ssize_t _run_u64(const int64_t[::1] kv, const uint64_t[::1] vv, int code, int32_t[::1] tv, int shift,
                         int64_t[::1] okv, uint64_t[::1] ov):
    with nogil:
        return _aggregate[uint64_t](kv, vv, code, tv, shift, okv, ov)


cdef Py_ssize_t _run_f64(const int64_t[::1] kv, const double[::1] vv, int code, int32_t[::1] tv, int shift,
                         int64_t[::1] okv, double[::1] ov):
    with nogil:
        return _aggregate[double](kv, vv, code, tv, shift, okv, ov)
