"""Plain-Python (numpy) twin of ``_ext/columnar.pyx``: the columnar shuffle's per-record loops.

The readable specification of the kernel, vectorised with numpy instead of
looping in Python; tests hold the two to the same answers.

- ``hash_partition_ids(keys, n)``: ``[hash(k) % n for k in keys.tolist()]``.
  CPython hashes numbers modulo the Mersenne prime ``P = 2**61 - 1``: an int
  ``k`` hashes to ``sign(k) * (|k| mod P)``, a finite float ``x = M * 2**e``
  (``M`` a 53-bit integer) to ``sign(x) * (M * 2**e mod P)``, which is ``M``
  rotated left by ``e mod 61`` within 61 bits because ``2**61 == 1 (mod P)``;
  ``inf`` to ``+-314159``; and ``-1`` becomes ``-2``. The modulo by ``n`` is
  Python's (floored). NaN is refused: CPython hashes it by identity.
- ``counting_sort(ids, n, columns)``: each column gathered by
  ``np.argsort(ids, kind="stable")``, plus the bucket offsets.
- ``hash_aggregate(keys, values, op)``: a fold per distinct key, keys in order
  of first appearance; here by a stable sort and ``ufunc.reduceat``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["AGGREGATIONS", "MAX_BUCKETS", "counting_sort", "hash_aggregate", "hash_partition_ids"]

MAX_BUCKETS = 2**31 - 1
AGGREGATIONS = ("sum", "min", "max", "count")

_P = np.uint64((1 << 61) - 1)
_INF_HASH = 314159


def _check_buckets(num_buckets: object, what: str) -> int:
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, (int, np.integer)):
        raise TypeError(f"{what} must be an int, not {type(num_buckets).__name__}")
    if not 1 <= num_buckets <= MAX_BUCKETS:
        raise ValueError(f"{what} must be in [1, {MAX_BUCKETS}], got {num_buckets}")
    return int(num_buckets)


def _check_column(array: object, what: str) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, not {type(array).__name__}")
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got {array.ndim}-D")


def _int_hashes(keys: np.ndarray) -> np.ndarray:
    if keys.dtype.kind == "u":
        return (keys.astype(np.uint64) % _P).astype(np.int64)
    signed = keys.astype(np.int64)
    negative = signed < 0
    # |k| as uint64: two's complement negation is exact there, INT64_MIN included.
    magnitude = np.where(negative, np.uint64(0) - signed.view(np.uint64), signed.view(np.uint64))
    reduced = (magnitude % _P).astype(np.int64)
    return np.where(negative, -reduced, reduced)


def _float_hashes(keys: np.ndarray) -> np.ndarray:
    values = keys.astype(np.float64)
    mantissa, exponent = np.frexp(values)
    magnitude = np.ldexp(np.abs(mantissa), 53).astype(np.uint64)
    shift = ((exponent.astype(np.int64) - 53) % 61).astype(np.uint64)
    with np.errstate(over="ignore"):
        rotated = ((magnitude << shift) & _P) | np.where(shift == 0, np.uint64(0),
                                                        magnitude >> (np.uint64(61) - shift))
    hashes = rotated.astype(np.int64)
    hashes = np.where(mantissa < 0, -hashes, hashes)
    hashes[values == 0] = 0
    hashes[np.isposinf(values)] = _INF_HASH
    hashes[np.isneginf(values)] = -_INF_HASH
    return hashes


def hash_partition_ids(keys: np.ndarray, num_partitions: int) -> np.ndarray:
    """``np.array([hash(k) % num_partitions for k in keys.tolist()], dtype=np.int32)``.

    ``keys``: 1-D, a signed or unsigned integer dtype or float32/float64 with no NaN.
    """
    n = _check_buckets(num_partitions, "num_partitions")
    _check_column(keys, "keys")
    kind = keys.dtype.kind
    if kind not in "iuf" or (kind == "f" and keys.dtype.itemsize not in (4, 8)):
        raise TypeError(f"keys must have an integer or float32/float64 dtype, not {keys.dtype}")
    if kind == "f":
        if np.isnan(keys).any():
            raise ValueError("keys hold NaN, which has no stable hash partition")
        with np.errstate(invalid="ignore"):
            hashes = _float_hashes(keys)
    else:
        hashes = _int_hashes(keys)
    hashes[hashes == -1] = -2
    return np.mod(hashes, n).astype(np.int32)  # numpy's integer mod is floored, as Python's


def counting_sort(ids: np.ndarray, num_buckets: int,
                  columns: Sequence[np.ndarray]) -> Tuple[List[np.ndarray], np.ndarray]:
    """Each column in stable order of ``ids`` (int32 in ``[0, num_buckets)``), and the bucket offsets."""
    nb = _check_buckets(num_buckets, "num_buckets")
    _check_column(ids, "ids")
    if ids.dtype != np.int32:
        raise TypeError(f"ids must be int32, not {ids.dtype}")
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
    np.cumsum(np.bincount(ids, minlength=nb), out=offsets[1:])
    order = np.argsort(ids, kind="stable")
    return [np.ascontiguousarray(column[order]) for column in columns], offsets


def hash_aggregate(keys: np.ndarray, values: Optional[np.ndarray], op: str) -> Tuple[np.ndarray, np.ndarray]:
    """Fold ``values`` per distinct int64 key (``op`` in :data:`AGGREGATIONS`), keys in first-appearance order."""
    _check_column(keys, "keys")
    if keys.dtype != np.int64:
        raise TypeError(f"keys must be int64, not {keys.dtype}")
    if op not in AGGREGATIONS:
        raise ValueError(f"op must be one of {', '.join(AGGREGATIONS)}, not {op!r}")
    n = keys.shape[0]
    if op == "count":
        values = np.ones(n, dtype=np.int64)
    _check_column(values, "values")
    assert values is not None
    if values.dtype not in (np.int64, np.uint64, np.float64):
        raise TypeError(f"values must be int64, uint64 or float64, not {values.dtype}")
    if values.shape[0] != n:
        raise ValueError(f"keys and values differ in length: {n} and {values.shape[0]}")
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=values.dtype)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    fold = {"sum": np.add, "count": np.add, "min": np.minimum, "max": np.maximum}[op]
    folded = fold.reduceat(values[order], starts)
    first_seen = np.argsort(order[starts], kind="stable")
    return ordered[starts][first_seen], folded[first_seen].astype(values.dtype, copy=False)
