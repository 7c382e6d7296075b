"""``BatchShuffleDependency``: a shuffle whose records are ``(keys, values)`` numpy batches.

The manager sees ``record_format == "batches"`` and registers the shuffle
with the ``columnar`` writer and reader (``shuffle.columnar``), which share
the object path's resolver, index and checksum files, tracker and fetcher.
What the reduce side does is named, not given as functions, so it runs
vectorised: ``reduce_op`` is ``"none"`` (partition only), ``"aggregate"``
(the named ``aggregation``, combined on the map side when
``combine_on_map``), ``"group"`` (rows sorted so each key's values are
contiguous) or ``"sort"`` (rows sorted by key, ``ascending`` or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from shuffle.columnar.aggregate import check_aggregation
from shuffle.dependency import ShuffleDependency
from shuffle.errors import ShuffleError

__all__ = ["BatchShuffleDependency", "REDUCE_OPS"]

REDUCE_OPS = ("none", "aggregate", "group", "sort")


@dataclass(frozen=True)
class BatchShuffleDependency(ShuffleDependency):
    """A :class:`ShuffleDependency` of numpy batches; see the module docstring."""

    reduce_op: str = "none"
    aggregation: Optional[str] = None
    combine_on_map: bool = True

    record_format = "batches"  # class attribute, read by the manager's choose_writer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduce_op not in REDUCE_OPS:
            raise ShuffleError(f"reduce_op must be one of {', '.join(REDUCE_OPS)}, got {self.reduce_op!r}")
        if (self.reduce_op == "aggregate") != (self.aggregation is not None):
            raise ShuffleError("an aggregation is named exactly when reduce_op is 'aggregate'")
        if self.aggregation is not None:
            check_aggregation(self.aggregation)
        if self.aggregator is not None or self.map_side_combine:
            raise ShuffleError("a batch shuffle takes a named aggregation, not an Aggregator of functions")

    @property
    def map_combines(self) -> bool:
        """Whether map outputs hold partials (combined) rather than raw values."""
        return self.reduce_op == "aggregate" and self.combine_on_map
