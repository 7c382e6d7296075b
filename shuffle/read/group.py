"""Spilling group-by: PySpark's ``ExternalGroupBy``, for readers of ``group_by_key`` shuffles.

When every record fits in memory and no key order is asked for, records are
grouped in a dict of lists (one kernel pass). Otherwise, since a dict of
lists cannot hold a key whose values do not fit in memory,
:class:`ExternalGroupBy` groups by *sorting*: records go through an
``ExternalSorter`` without an aggregator, ordered by ``portable_hash(key)``
(by key, ``sort_key`` and direction when the shuffle asks for key ordering),
which spills sorted runs as memory requires and merges them back. The merged
stream is then walked once: equal keys are adjacent within a stretch of equal
*rank* (hash or sort key), but different keys may share a rank (``-1`` and
``-2`` hash alike), so keys are told apart by true equality inside a stretch.
A key's values keep their read order (the sort and the merge are stable).
The sorter takes its memory from the task's pool; a list does not ask the
pool, it bounds itself to a share of it.

Each key's values go into an :class:`ExternalList`: values in memory up to a
limit (a share of the task's memory pool, or
``spark.shuffle.spill.numElementsForceSpillThreshold`` values for tests), the
earlier ones spilled to a private ``temp_shuffle_<uuid>`` file in batches and
streamed back on iteration. Groups are handed out as :class:`ResultIterable`,
which is sized, re-iterable and pickles as a plain list.

Files: the sorter's spills are deleted by :meth:`ExternalGroupBy.stop`; a
group's file belongs to its list and is deleted when the list is
garbage-collected, or at once by :meth:`ExternalGroupBy.delete_groups` (a
group read after that raises ``ShuffleError`` rather than lose values).
Groups never handed out (the walk stopped early or failed) are deleted when
the walk ends. This module never decides file names: ``new_spill_path`` does.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import weakref
from collections import deque
from dataclasses import dataclass
from itertools import chain, groupby, islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.errors import OutOfDiskError, ShuffleError, UnhashableKeyError
from shuffle.kernels import load
from shuffle.memory import TaskMemoryManager, estimate_size
from shuffle.write.external_sorter import ExternalSorter
from shuffle.write.records import first_unhashable

__all__ = ["ExternalGroupBy", "ExternalList", "ResultIterable", "SpillTally", "group_sorted"]

logger = logging.getLogger(__name__)

_portable_hash = load("hashing").portable_hash
_group_values = load("combine").group_values
# Groups of more values than this are measured before they are handed out in memory.
_SIZED_GROUP = 32

Record = Tuple[Any, Any]

# One group keeps at most this share of the task's memory pool in memory (PySpark keeps
# a fixed 10240 values); the rest of its values wait on disk.
LIST_MEMORY_SHARE = 8
# A list slot holds a pointer to its value.
_SLOT_BYTES = 8
# A repr shows at most this many values.
_REPR_VALUES = 10

_key_of = itemgetter(0)
_value_of = itemgetter(1)
_END = object()


@dataclass
class SpillTally:
    """Spill counters shared by the lists of one group-by (names as in ``ReadMetrics``)."""

    spill_count: int = 0
    memory_bytes_spilled: int = 0
    disk_bytes_spilled: int = 0


class ExternalList:
    """An append-only sequence that keeps at most a bounded number of values in memory.

    Beyond ``max_values`` values, or about ``max_bytes`` of them (estimated
    from the first value of each batch), the values in memory are written to
    the list's file as ``batch_size``-value blocks of ``spill_format`` and
    memory starts again. Iteration yields the file's values, then memory's,
    in insertion order, and can be repeated. Appending while iterating is not
    supported. The file is deleted when the list is garbage-collected or
    :meth:`delete` is called.
    """

    def __init__(
        self,
        spill_format: BlockFormat,
        new_path: Callable[[], Path],
        *,
        max_values: int,
        max_bytes: int,
        batch_size: int,
        tally: Optional[SpillTally] = None,
    ) -> None:
        if max_values < 1 or max_bytes < 1 or batch_size < 1:
            raise ValueError(f"limits must be positive: max_values={max_values}, max_bytes={max_bytes}, "
                             f"batch_size={batch_size}")
        self._format = spill_format
        self._new_path = new_path
        self._max_values = max_values
        self._max_bytes = max_bytes
        self._batch_size = batch_size
        self._tally = tally
        self._values: List[Any] = []
        self._capacity = 0  # set from the first value of each batch
        self._value_bytes = 0
        self._path: Optional[Path] = None
        self._batch_sizes: List[int] = []
        self._spilled = 0
        self._finalizer: Optional[weakref.finalize] = None
        self._deleted = False

    # ------------------------------------------------------------------ grow

    def append(self, value: Any) -> None:
        if len(self._values) >= self._capacity:
            self._make_room(value)
        self._values.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        """Append every value; memory is filled and spilled in C-level slices, not value by value."""
        it = iter(values)
        while True:
            room = self._capacity - len(self._values)
            if room > 0:
                self._values.extend(islice(it, room))
                if len(self._values) < self._capacity:
                    return  # ``it`` ran out first
            value = next(it, _END)
            if value is _END:
                return
            self._make_room(value)
            self._values.append(value)

    def _make_room(self, value: Any) -> None:
        """Memory is full (or the list is new) and ``value`` comes next: spill, then size the next batch."""
        if self._values:
            self._spill()
        self._value_bytes = estimate_size(value) + _SLOT_BYTES
        self._capacity = max(1, min(self._max_values, self._max_bytes // self._value_bytes))

    def _spill(self) -> None:
        if self._deleted:
            raise ShuffleError("ExternalList: cannot add values after its file was deleted")
        if self._path is None:
            self._path = self._new_path()
            # Registered before the file exists, so even a failed first write is cleaned up.
            self._finalizer = weakref.finalize(self, _unlink, self._path)
            logger.debug("a group holds more than %d values in memory; spilling to %s", len(self._values), self._path)
        values = self._values
        written = 0
        try:
            with open(self._path, "ab") as f:
                for start in range(0, len(values), self._batch_size):
                    chunk = values[start:start + self._batch_size]
                    block = self._format.encode(zip(repeat(None), chunk))
                    f.write(block)
                    self._batch_sizes.append(len(block))
                    written += len(block)
        except OSError as e:
            if e.errno == errno.ENOSPC and not isinstance(e, OutOfDiskError):
                directory = str(self._path.parent)
                raise OutOfDiskError(directory, None, shutil.disk_usage(directory).free) from e
            raise
        self._spilled += len(values)
        if self._tally is not None:
            self._tally.spill_count += 1
            self._tally.memory_bytes_spilled += len(values) * self._value_bytes
            self._tally.disk_bytes_spilled += written
        self._values = []

    # ------------------------------------------------------------------ read

    @property
    def spilled(self) -> int:
        """Values held on disk."""
        return self._spilled

    @property
    def path(self) -> Optional[Path]:
        """The spill file, once there is one."""
        return self._path

    def __len__(self) -> int:
        return self._spilled + len(self._values)

    def __iter__(self) -> Iterator[Any]:
        if self._spilled == 0:
            return iter(self._values)
        if self._deleted:
            raise ShuffleError(f"the {self._spilled} spilled values of this group were deleted when its reader "
                               "was closed; read groups before closing the reader")
        return chain(chain.from_iterable(self._spilled_batches()), self._values)

    def _spilled_batches(self) -> Iterator[Iterator[Any]]:
        assert self._path is not None
        try:
            f = open(self._path, "rb")
        except FileNotFoundError as e:
            raise ShuffleError(f"spill file {self._path} of a group's values is gone") from e
        with f:
            for size in self._batch_sizes:
                data = f.read(size)
                if len(data) != size:
                    raise ShuffleError(f"spill file {self._path} ends inside a batch: {len(data)} of {size} bytes")
                yield map(_value_of, self._format.decode(data))

    def delete(self) -> None:
        """Delete the spill file now; iterating afterwards raises ``ShuffleError`` if values were spilled."""
        self._deleted = True
        if self._finalizer is not None:
            self._finalizer()

    def __reduce__(self) -> Tuple[Any, ...]:
        # Pickled, a list is its values: the file does not travel.
        return (list, (list(self),))


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ResultIterable:
    """The values of one key, as PySpark's ``ResultIterable``: sized and re-iterable.

    ``data`` is what holds them (an :class:`ExternalList`, or a list after
    unpickling). Pickles as a ``ResultIterable`` over a plain list.
    """

    __slots__ = ("data",)

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __reduce__(self) -> Tuple[Any, ...]:
        return (ResultIterable, (list(self.data),))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultIterable):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by content, and mutable underneath

    def __repr__(self) -> str:
        n = len(self)
        shown = list(islice(self, _REPR_VALUES))
        if n <= _REPR_VALUES:
            return f"ResultIterable({shown!r})"
        return f"ResultIterable({shown!r} and {n - _REPR_VALUES} more)"


def group_sorted(
    records: Iterable[Record],
    rank: Callable[[Any], Any],
    new_list: Callable[[], ExternalList],
) -> Iterator[Tuple[Any, ResultIterable]]:
    """``(key, values)`` for each key of ``records``, which are ordered by ``rank(key)``.

    Records of equal rank are contiguous but may hold several keys in any
    interleaving; those are told apart by equality, in first-seen order.
    ``rank`` is called once per run of equal keys, not per record. Lists not
    handed out when the generator is closed or fails are deleted.
    """
    pending: Dict[Any, ExternalList] = {}  # keys of the current rank, in first-seen order
    ready: Deque[Tuple[Any, ExternalList]] = deque()  # being handed out
    current: Any = None
    started = False
    try:
        for key, run in groupby(records, key=_key_of):
            r = rank(key)
            if not started or r != current:
                ready, pending = deque(pending.items()), {}
                while ready:
                    k, values = ready.popleft()
                    yield k, ResultIterable(values)
                current, started = r, True
            values = pending.get(key)
            if values is None:
                values = pending[key] = new_list()
            values.extend(map(_value_of, run))
        ready, pending = deque(pending.items()), {}
        while ready:
            k, values = ready.popleft()
            yield k, ResultIterable(values)
    finally:
        for _, values in chain(ready, pending.items()):
            values.delete()


class ExternalGroupBy:
    """Groups ``(key, value)`` records by key when one key's values may not fit in memory.

    Call order: :meth:`insert_all` (once or more), :meth:`groups` once, then
    :meth:`stop` (also after a failure; idempotent), which deletes the
    sorter's spills and frees its memory. Handed-out groups stay readable
    after ``stop()`` until garbage-collected or :meth:`delete_groups`.
    Spill counters cover the sorter and the lists.
    """

    def __init__(
        self,
        memory: TaskMemoryManager,
        conf: ShuffleConf,
        spill_format: BlockFormat,
        new_spill_path: Callable[[], Path],
        *,
        key_ordering: bool = False,
        ascending: bool = True,
        sort_key: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self.key_ordering = key_ordering
        # Hash order needs no comparable keys; key order is what the shuffle asked for.
        sorter_key = sort_key if key_ordering else _portable_hash
        self._rank: Callable[[Any], Any] = sorter_key if sorter_key is not None else _identity
        self._sorter = ExternalSorter(
            memory=memory, conf=conf, spill_format=spill_format, new_spill_path=new_spill_path,
            num_partitions=1, aggregator=None, key_ordering=True,
            ascending=ascending if key_ordering else True, sort_key=sorter_key,
        )
        self._format = spill_format
        self._new_spill_path = new_spill_path
        self._max_values = max(1, group_values_in_memory(conf))
        self._max_bytes = max(1, memory.pool.pool_size // LIST_MEMORY_SHARE)
        batch_size = conf.get_int("spark.shuffle.spill.batchSize")
        assert batch_size is not None  # has a default
        self._batch_size = batch_size
        self._tally = SpillTally()
        self._lists: "weakref.WeakSet[ExternalList]" = weakref.WeakSet()
        self._walk: Optional["weakref.ref[Iterator[Tuple[Any, ResultIterable]]]"] = None

    def insert_all(self, records: Iterable[Record]) -> None:
        self._sorter.insert_all(records)

    def groups(self) -> Iterator[Tuple[Any, ResultIterable]]:
        """``(key, ResultIterable)`` per key: by key when key ordering was asked for, else in no set order.

        When nothing spilled and no order is asked for, records are grouped in a
        dict of lists (one kernel pass, like PySpark's in-memory ExternalGroupBy)
        instead of sorted by hash and walked; a group longer than a list may
        hold in memory still gets a spilling :class:`ExternalList`.
        """
        records = None if self.key_ordering else self._sorter.take_unspilled()
        if records is not None:
            walk = self._hash_groups(records)
        else:
            walk = group_sorted(self._sorter.iterator(), self._rank, self._new_list)
        self._walk = weakref.ref(walk)
        return walk

    def _hash_groups(self, records: List[Record]) -> Iterator[Tuple[Any, ResultIterable]]:
        grouped: Dict[Any, List[Any]] = {}
        try:
            _group_values(records, grouped)
        except TypeError as e:
            bad = first_unhashable(records)
            if bad is None:
                raise
            raise UnhashableKeyError(records[bad][0]) from e
        del records[:]  # the values live on in the lists; the record tuples can go now
        max_values, max_bytes = self._max_values, self._max_bytes
        for key, values in grouped.items():
            n = len(values)
            # Sizes are estimated only for long groups: short ones are cheap to keep whole.
            if n > max_values or (n > _SIZED_GROUP and estimate_size(values) > max_bytes):
                spilling = self._new_list()
                spilling.extend(values)
                yield key, ResultIterable(spilling)
            else:
                yield key, ResultIterable(values)

    def _new_list(self) -> ExternalList:
        values = ExternalList(self._format, self._new_spill_path, max_values=self._max_values,
                              max_bytes=self._max_bytes, batch_size=self._batch_size, tally=self._tally)
        self._lists.add(values)
        return values

    @property
    def spill_count(self) -> int:
        return self._sorter.spill_count + self._tally.spill_count

    @property
    def memory_bytes_spilled(self) -> int:
        return self._sorter.memory_bytes_spilled + self._tally.memory_bytes_spilled

    @property
    def disk_bytes_spilled(self) -> int:
        return self._sorter.disk_bytes_spilled + self._tally.disk_bytes_spilled

    def stop(self) -> None:
        """End the walk (deleting groups not handed out), delete the sorter's spills, free its memory."""
        walk = self._walk() if self._walk is not None else None
        if walk is not None:
            walk.close()  # type: ignore[attr-defined]
        self._sorter.stop()

    def delete_groups(self) -> None:
        """Delete the file of every group still alive, handed out or not."""
        for values in list(self._lists):
            values.delete()


def group_values_in_memory(conf: ShuffleConf) -> int:
    """Values one group keeps in memory at most by count (memory limits it too)."""
    forced = conf.get_int("spark.shuffle.spill.numElementsForceSpillThreshold")
    assert forced is not None  # has a default
    return forced


def _identity(value: Any) -> Any:
    return value
