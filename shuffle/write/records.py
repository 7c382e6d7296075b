"""What a shuffle record must be, checked cheaply: exact ``(key, value)`` 2-tuples, hashable or sortable keys.

The checks run in C loops on the common path (``set(map(type, chunk))``) and
only walk records one by one, in Python, to name the first bad one on the
error path. ``gather`` reorders a list by an index list in one C call.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, List, Optional, Tuple

from shuffle.errors import SerializationError, ShuffleError

__all__ = ["gather", "refuse_nan", "all_tuples", "first_malformed", "first_unhashable", "malformed"]

Record = Tuple[Any, Any]


def gather(items: List[Record], order: List[int]) -> List[Record]:
    """``[items[i] for i in order]``; itemgetter does it in one C call."""
    if len(order) < 2:
        return [items[i] for i in order]
    return list(itemgetter(*order)(items))


def refuse_nan(keys: List[Any]) -> None:
    """NaN compares false with everything, so a sort would scatter it silently: refuse it."""
    if float in set(map(type, keys)) and any(k != k for k in keys if type(k) is float):
        raise ShuffleError("cannot sort by a NaN key: NaN has no place in an order; filter NaN keys out, "
                           "or give a sort_key that maps them to a comparable value")


def all_tuples(chunk: List[Any]) -> bool:
    """Every record an exact tuple (a C loop; lengths are checked by unpacking)."""
    return set(map(type, chunk)) <= {tuple}


def first_malformed(chunk: List[Any]) -> Optional[int]:
    """The first record that is not an exact (key, value) 2-tuple: a list or "ab" is not a pair."""
    for i, record in enumerate(chunk):
        if type(record) is not tuple or len(record) != 2:
            return i
    return None


def first_unhashable(chunk: List[Record]) -> Optional[int]:
    for i, (key, _) in enumerate(chunk):
        try:
            hash(key)
        except TypeError:
            return i
    return None


def malformed(record: object) -> SerializationError:
    return SerializationError(type(record).__name__, "records must be (key, value) 2-tuples")
