"""Plain-Python twin of ``_ext/hashing.pyx``: the seed-independent key hash.

Owns PySpark's ``portable_hash`` as it behaves on PySpark's workers (which run
with ``PYTHONHASHSEED=0``), computed without depending on this process's own
hash seed, and the batch ``partition_ids`` built on it. It must never call the
built-in ``hash()`` on ``str`` or ``bytes``: that is the one value that changes
from one interpreter to the next.

What each type hashes to:

- ``None`` -> 0.
- ``int``, ``float``, ``bool`` -> built-in ``hash()`` (never seeded in CPython;
  so an int ``k`` with ``|k| < 2**61 - 1`` hashes to ``k``, except ``-1`` -> ``-2``).
  ``float('nan')`` hashes by identity since Python 3.10, so NaN keys are not
  deterministic (as in PySpark).
- ``tuple`` (and subclasses, as PySpark's ``isinstance`` test) -> PySpark's
  combine: ``h = 0x345678``; per item ``h ^= portable_hash(item); h *= 1000003;
  h &= sys.maxsize``; then ``h ^= len``; ``-1`` -> ``-2``.
- ``str`` and ``bytes`` (whose type keeps the base ``__hash__``) -> SipHash-1-3
  with an all-zero key over the object's memory, which is what CPython 3.11+
  ``hash()`` returns under ``PYTHONHASHSEED=0``: bytes hash their raw bytes; a
  str hashes its PEP 393 buffer (1, 2 or 4 bytes per code point, chosen by the
  largest code point, in this machine's byte order); empty -> 0; ``-1`` -> ``-2``.
- anything else -> built-in ``hash()``: deterministic only where that type's
  hash is (e.g. a ``frozenset`` of str is not).

On an interpreter whose ``sys.hash_info`` is not 64-bit SipHash-1-3 without a
small-string cutoff (Python 3.10 uses SipHash-2-4), we still compute
SipHash-1-3, so results stay the same across our supported interpreters and
between this twin and the compiled kernel; they then no longer equal that
interpreter's own ``hash()`` under ``PYTHONHASHSEED=0``, and
``MATCHES_CPYTHON_SEED0`` is False.
"""

from __future__ import annotations

import logging
import operator
import sys
from typing import Any, Iterable

import numpy as np

__all__ = ["MATCHES_CPYTHON_SEED0", "MAX_PARTITIONS", "partition_ids", "portable_hash"]

logger = logging.getLogger(__name__)

MAX_PARTITIONS = 2**31 - 1
"""Largest ``num_partitions``: partition ids are returned as int32."""

MATCHES_CPYTHON_SEED0 = (
    sys.hash_info.algorithm == "siphash13"
    and sys.hash_info.cutoff == 0
    and sys.hash_info.hash_bits == 64
)
"""True when our str/bytes hash equals this interpreter's ``hash()`` under PYTHONHASHSEED=0."""

if not MATCHES_CPYTHON_SEED0:  # pragma: no cover - depends on the interpreter build
    logger.info(
        "interpreter hash is %s (cutoff %d, %d bits), not siphash13: portable_hash still "
        "uses SipHash-1-3, so it is stable but differs from this interpreter's seed-0 hash()",
        sys.hash_info.algorithm,
        sys.hash_info.cutoff,
        sys.hash_info.hash_bits,
    )

_MASK64 = (1 << 64) - 1
_STR_HASH = str.__hash__
_BYTES_HASH = bytes.__hash__
# Byte order of CPython's in-memory PEP 393 buffer; SipHash reads that memory.
_UTF16 = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
_UTF32 = "utf-32-le" if sys.byteorder == "little" else "utf-32-be"


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK64


def _siphash13_zero_key(data: bytes) -> int:
    """SipHash-1-3 of ``data`` with key (0, 0), as an unsigned 64-bit int."""
    # The initial state is the SipHash constants xored with a zero key.
    v0 = 0x736F6D6570736575
    v1 = 0x646F72616E646F6D
    v2 = 0x6C7967656E657261
    v3 = 0x7465646279746573

    def sipround() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK64
        v2 = (v2 + v3) & _MASK64
        v1 = _rotl(v1, 13) ^ v0
        v3 = _rotl(v3, 16) ^ v2
        v0 = _rotl(v0, 32)
        v2 = (v2 + v1) & _MASK64
        v0 = (v0 + v3) & _MASK64
        v1 = _rotl(v1, 17) ^ v2
        v3 = _rotl(v3, 21) ^ v0
        v2 = _rotl(v2, 32)

    n = len(data)
    full = n - n % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sipround()
        v0 ^= m
    # Last block: the 0..7 trailing bytes, with the length's low byte on top.
    last = int.from_bytes(data[full:], "little") | ((n & 0xFF) << 56)
    v3 ^= last
    sipround()
    v0 ^= last
    v2 ^= 0xFF
    sipround()
    sipround()
    sipround()
    return v0 ^ v1 ^ v2 ^ v3


def _hash_buffer(data: bytes) -> int:
    """CPython's seed-0 hash of a memory buffer, as a signed Py_hash_t."""
    if not data:
        return 0
    h = _siphash13_zero_key(data)
    if h >= 1 << 63:
        h -= 1 << 64
    return -2 if h == -1 else h


def _pep393_buffer(s: str) -> bytes:
    """The canonical in-memory representation CPython keeps for ``s``."""
    widest = max(map(ord, s)) if s else 0
    if widest < 0x100:
        return s.encode("latin-1")
    # surrogatepass: a str may hold lone surrogates, stored as plain code units.
    if widest < 0x10000:
        return s.encode(_UTF16, "surrogatepass")
    return s.encode(_UTF32, "surrogatepass")


def portable_hash(obj: Any) -> int:
    """PySpark's ``portable_hash(obj)`` as computed on a ``PYTHONHASHSEED=0`` worker.

    Independent of this process's hash seed for None, int, float, bool, str,
    bytes and tuples of those. Raises what ``hash()`` raises for unhashable
    objects (``TypeError``) and ``RecursionError`` for tuples nested too deep.
    """
    if obj is None:
        return 0
    if isinstance(obj, tuple):
        h = 0x345678
        for item in obj:
            h ^= portable_hash(item)
            h *= 1000003
            h &= sys.maxsize
        h ^= len(obj)
        return -2 if h == -1 else h
    t = type(obj)
    if t is str or (isinstance(obj, str) and t.__hash__ is _STR_HASH):
        return _hash_buffer(_pep393_buffer(obj))
    if t is bytes or (isinstance(obj, bytes) and t.__hash__ is _BYTES_HASH):
        return _hash_buffer(bytes(obj))
    return hash(obj)


def _check_num_partitions(num_partitions: Any) -> int:
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


def _as_key_list(keys: Any) -> list | tuple:
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


def partition_ids(keys: Iterable[Any], num_partitions: int) -> np.ndarray:
    """``np.array([portable_hash(k) % num_partitions for k in keys], dtype=np.int32)``.

    ``keys`` is a list or tuple (any other iterable is copied into a list first;
    None, str and bytes raise ``TypeError``). ``num_partitions`` is an int in
    ``[1, 2**31 - 1]`` (``TypeError``/``ValueError`` otherwise). The modulo is
    Python's, so ids are in ``[0, num_partitions)``. One pass, O(total key bytes).
    """
    n = _check_num_partitions(num_partitions)
    seq = _as_key_list(keys)
    count = len(seq)
    out = np.empty(count, dtype=np.int32)
    i = 0
    for key in seq:
        if i >= count:
            # A list mutated by a key's __hash__ while we iterate.
            raise RuntimeError("keys changed size during partition_ids")
        out[i] = portable_hash(key) % n
        i += 1
    if i != count:
        raise RuntimeError("keys changed size during partition_ids")
    return out
