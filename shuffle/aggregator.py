"""``Aggregator``: the three functions that combine values by key.

Spark's ``Aggregator[K, V, C]``: ``create_combiner(v) -> c`` starts a combiner
from a key's first value, ``merge_value(c, v) -> c`` folds in another value,
``merge_combiners(c1, c2) -> c`` joins two partial results (from different
maps or different spills). Only ``merge_combiners`` may see partial results
from other processes, so it must be associative; the order in which values
arrive is not specified (as in Spark).

This module owns the in-memory combining (through the ``combine`` kernel) and nothing about spilling:
callers (the sort writer, the reader's spilling map) decide when to spill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterable, Tuple

from shuffle.kernels import load

__all__ = ["Aggregator", "GroupByAggregator"]

# The folding loop is a kernel: one dict probe per record, and operator.add,
# min and max applied without a call (see _ext/combine.pyx).
_combine = load("combine").combine_values


@dataclass(frozen=True)
class Aggregator:
    """How to combine the values of one key; picklable when its functions are."""

    create_combiner: Callable[[Any], Any]
    merge_value: Callable[[Any, Any], Any]
    merge_combiners: Callable[[Any, Any], Any]

    def __post_init__(self) -> None:
        for name in ("create_combiner", "merge_value", "merge_combiners"):
            if not callable(getattr(self, name)):
                raise TypeError(f"Aggregator.{name} must be callable, got {getattr(self, name)!r}")

    @classmethod
    def from_reduce(cls, func: Callable[[Any, Any], Any]) -> "Aggregator":
        """The aggregator of ``reduce_by_key(func)``: the first value is its own combiner."""
        return cls(_identity, func, func)

    @classmethod
    def for_group_by(cls) -> "GroupByAggregator":
        """The aggregator of ``group_by_key``: values gathered into lists, never combined on the map side."""
        return GroupByAggregator(_new_list, _append, _extend)

    @property
    def is_reduce(self) -> bool:
        """True when a value is its own combiner (``reduce_by_key``): records need no conversion."""
        return self.create_combiner is _identity

    def combine_values(self, records: Iterable[Tuple[Hashable, Any]], into: Dict[Hashable, Any]) -> int:
        """Fold ``(key, value)`` records into ``into`` (key -> combiner); returns records seen."""
        create = None if self.is_reduce else self.create_combiner
        return _combine(records, into, create, self.merge_value)

    def combine_combiners(self, records: Iterable[Tuple[Hashable, Any]], into: Dict[Hashable, Any]) -> int:
        """Fold ``(key, combiner)`` records into ``into``; returns records seen."""
        return _combine(records, into, None, self.merge_combiners)


class GroupByAggregator(Aggregator):
    """Gathers a key's values into a list.

    Its own type, because readers treat it specially: a key may have more
    values than fit in memory, so they group by sorting and may spill one
    key's values (PySpark's ``ExternalGroupBy``) instead of growing a list.
    """


def _new_list(value: Any) -> list:
    return [value]


def _append(values: list, value: Any) -> list:
    values.append(value)
    return values


def _extend(values: list, more: list) -> list:
    values.extend(more)
    return values


def _identity(value: Any) -> Any:
    return value
