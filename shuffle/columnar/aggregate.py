"""Named aggregations over key/value columns, and the key sort, vectorised.

A named aggregation (``sum``, ``min``, ``max``, ``count``, ``mean``) runs in
three steps, as Spark's ``Aggregator`` does with functions:

- :func:`combine`: raw values -> one *partial* per distinct key (map side,
  or reduce side when the map side did not combine);
- :func:`merge`: partials -> one partial per distinct key (reduce side);
- :func:`finish`: partials -> final values (``mean`` divides; others as is).

Partials: ``sum`` of signed integers or bools is int64, of unsigned integers
uint64, of floats float64 (integer sums wrap around on overflow, as numpy's);
``min``/``max`` keep the value dtype; ``count`` is int64; ``mean`` is a
structured ``(sum float64, count int64)``. Keys come out in order of first
appearance. The fold itself is the columnar kernel's hash aggregation (one C
loop; measured faster than a stable argsort + ``reduceat``, see
:mod:`shuffle.columnar.bench`). Keys travel through it as int64: integers
widened (uint64 reinterpreted), floats by their float64 bits with ``-0.0``
folded into ``0.0``; NaN keys are refused, since Python sees each NaN as a
different key.

:func:`sort_rows` sorts rows by key: a counting sort for integer keys whose
range is small next to the row count, else a stable ``argsort``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from shuffle.errors import BatchSchemaError
from shuffle.kernels import load

__all__ = ["AGGREGATIONS", "combine", "merge", "finish", "partial_dtype", "sort_rows", "check_aggregation"]

_columnar = load("columnar")

AGGREGATIONS = ("sum", "min", "max", "count", "mean")
MEAN_PARTIAL = np.dtype([("sum", "<f8"), ("count", "<i8")])
_MERGE_OP = {"sum": "sum", "min": "min", "max": "max", "count": "sum"}
# A counting sort pays for its bucket array: take it while buckets <= this many per row.
_COUNTING_SORT_BUCKETS_PER_ROW = 2
_COUNTING_SORT_MAX_BUCKETS = 1 << 26

Columns = Tuple[np.ndarray, np.ndarray]


def check_aggregation(aggregation: object, value_dtype: Optional[np.dtype] = None,
                      value_shape: Tuple[int, ...] = ()) -> str:
    """``aggregation`` if it is a known name usable on these values, else a typed error."""
    if aggregation not in AGGREGATIONS:
        raise BatchSchemaError("the aggregation", f"one of {', '.join(AGGREGATIONS)}", repr(aggregation))
    if value_dtype is not None and aggregation != "count":
        if value_shape or value_dtype.names or value_dtype.kind not in "biuf":
            raise BatchSchemaError(f"the value column of a {aggregation!r} aggregation",
                                   "a 1-D column of integers, floats or bools", f"{value_dtype} {value_shape}")
    return str(aggregation)


def partial_dtype(aggregation: str, value_dtype: np.dtype) -> np.dtype:
    """The dtype of the partials :func:`combine` produces for values of ``value_dtype``."""
    if aggregation == "count":
        return np.dtype("<i8")
    if aggregation == "mean":
        return MEAN_PARTIAL
    if aggregation == "sum":
        return np.dtype({"u": "<u8", "f": "<f8"}.get(value_dtype.kind, "<i8"))
    return value_dtype


def _fold_values(values: np.ndarray) -> np.ndarray:
    kind = values.dtype.kind
    if kind == "u":
        return values.astype(np.uint64, copy=False)
    if kind == "f":
        return values.astype(np.float64, copy=False)
    return values.astype(np.int64, copy=False)


def _key_words(keys: np.ndarray) -> np.ndarray:
    kind, size = keys.dtype.kind, keys.dtype.itemsize
    if kind == "f":
        if np.isnan(keys).any():
            raise BatchSchemaError("a key", "a number equal to itself", "NaN")
        wide = keys.astype(np.float64)  # always a copy of the float64 column: safe to fold -0.0 in place
        wide[wide == 0] = 0.0
        return wide.view(np.int64)
    if kind == "u" and size == 8:
        return np.ascontiguousarray(keys, dtype=np.dtype("=u8")).view(np.int64)
    return keys.astype(np.int64, copy=False)


def _keys_back(words: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return words.view(np.float64).astype(dtype)
    if dtype.kind == "u" and dtype.itemsize == 8:
        return words.view(np.uint64).astype(dtype, copy=False)
    return words.astype(dtype)


def _fold(keys: np.ndarray, values: Optional[np.ndarray], op: str) -> Columns:
    words = _key_words(keys)
    out_keys, out_values = _columnar.hash_aggregate(words, values, op)
    return _keys_back(out_keys, keys.dtype), out_values


def combine(keys: np.ndarray, values: np.ndarray, aggregation: str) -> Columns:
    """Raw values -> ``(distinct keys, partials)``."""
    if aggregation == "count":
        k, counts = _fold(keys, None, "count")
        return k, counts.astype("<i8", copy=False)
    if aggregation == "mean":
        k, sums = _fold(keys, values.astype(np.float64, copy=False), "sum")
        _, counts = _fold(keys, None, "count")
        partials = np.empty(k.shape[0], dtype=MEAN_PARTIAL)
        partials["sum"], partials["count"] = sums, counts
        return k, partials
    if aggregation in ("min", "max") and values.dtype.kind == "f" and np.isnan(values).any():
        raise BatchSchemaError(f"a value of a {aggregation!r} aggregation", "a number", "NaN")
    k, folded = _fold(keys, _fold_values(values), aggregation)
    return k, folded.astype(partial_dtype(aggregation, values.dtype), copy=False)


def merge(keys: np.ndarray, partials: np.ndarray, aggregation: str) -> Columns:
    """Partials -> ``(distinct keys, partials)``, one per key."""
    if aggregation == "mean":
        k, sums = _fold(keys, np.ascontiguousarray(partials["sum"]), "sum")
        _, counts = _fold(keys, np.ascontiguousarray(partials["count"]).astype(np.int64), "sum")
        out = np.empty(k.shape[0], dtype=MEAN_PARTIAL)
        out["sum"], out["count"] = sums, counts
        return k, out
    k, folded = _fold(keys, _fold_values(partials), _MERGE_OP[aggregation])
    return k, folded.astype(partials.dtype, copy=False)


def finish(partials: np.ndarray, aggregation: str) -> np.ndarray:
    """Partials -> final values."""
    if aggregation == "mean":
        return partials["sum"] / partials["count"]
    return partials


def sort_rows(keys: np.ndarray, values: np.ndarray, ascending: bool = True) -> Columns:
    """Rows ordered by key (stable when ascending; equal keys reversed when descending)."""
    n = keys.shape[0]
    if n < 2:
        return keys, values
    ordered: Optional[Columns] = None
    if keys.dtype.kind in "iu":
        low, high = int(keys.min()), int(keys.max())
        span = high - low + 1
        if span <= min(_COUNTING_SORT_BUCKETS_PER_ROW * n + 1024, _COUNTING_SORT_MAX_BUCKETS):
            ids = (keys.astype(np.int64) - low).astype(np.int32) if low else keys.astype(np.int32)
            (k, v), _ = _columnar.counting_sort(ids, span, [keys, values])
            ordered = (k, v)
    if ordered is None:
        if keys.dtype.kind == "f" and np.isnan(keys).any():
            raise BatchSchemaError("a sort key", "a comparable number", "NaN")
        order = np.argsort(keys, kind="stable")
        ordered = (keys[order], values[order])
    if not ascending:
        ordered = (ordered[0][::-1], ordered[1][::-1])
    return ordered
