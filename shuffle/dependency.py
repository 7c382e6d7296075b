"""``ShuffleDependency`` (what a shuffle is) and ``ShuffleHandle`` (how it is written).

A dependency describes one shuffle: how many maps write it, how keys are
partitioned, how records are serialized, and what the reduce side must do
(combine with an aggregator, sort by key). The manager turns it into a handle
that records, once, which writer was chosen and why; every writer and reader
of that shuffle is built from the handle, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from shuffle.aggregator import Aggregator
from shuffle.errors import ShuffleError
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import Partitioner
from shuffle.serializer import Serializer

__all__ = ["ShuffleDependency", "ShuffleHandle", "WRITER_KINDS"]

WRITER_KINDS = ("bypass", "serialized", "sort", "columnar")  # columnar: numpy batches (shuffle.columnar)


@dataclass(frozen=True)
class ShuffleDependency:
    """One shuffle's contract between its map and reduce sides; picklable.

    ``key_ordering=True`` asks readers for records sorted by key (by
    ``sort_key(key)`` when given, descending when ``ascending=False``).
    ``map_side_combine`` requires an aggregator, as in Spark.
    """

    shuffle_id: int
    num_maps: int
    partitioner: Partitioner
    serializer: Serializer = field(default_factory=MsgpackSerializer)
    aggregator: Optional[Aggregator] = None
    map_side_combine: bool = False
    key_ordering: bool = False
    ascending: bool = True
    sort_key: Optional[Callable[[Any], Any]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.shuffle_id, int) or self.shuffle_id < 0:
            raise ShuffleError(f"shuffle_id must be a non-negative int, got {self.shuffle_id!r}")
        if not isinstance(self.num_maps, int) or self.num_maps < 0:
            raise ShuffleError(f"num_maps must be a non-negative int, got {self.num_maps!r}")
        if not isinstance(self.partitioner, Partitioner):
            raise ShuffleError(f"partitioner must be a Partitioner, got {type(self.partitioner).__name__}")
        if not isinstance(self.serializer, Serializer):
            raise ShuffleError(f"serializer must be a Serializer, got {type(self.serializer).__name__}")
        if self.map_side_combine and self.aggregator is None:
            raise ShuffleError("map_side_combine=True needs an aggregator")

    @property
    def num_partitions(self) -> int:
        return self.partitioner.num_partitions


@dataclass(frozen=True)
class ShuffleHandle:
    """A registered shuffle and the writer chosen for it (``kind``), with the reason."""

    shuffle_id: int
    dependency: ShuffleDependency
    kind: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in WRITER_KINDS:
            raise ShuffleError(f"unknown writer kind {self.kind!r}; expected one of {', '.join(WRITER_KINDS)}")
