"""Spilling group-by: PySpark's ``ExternalGroupBy`` for ``group_by_key``.

A dict of lists cannot hold a key whose values do not fit in memory, so the
reader groups by sorting instead: records go through an ``ExternalSorter``
ordered by ``portable_hash(key)`` (spilling sorted runs as it must), and the
merged stream is walked one hash at a time. Records of equal hash are split
by true key equality (different keys may share a hash), and each key's
values go into an :class:`ExternalList`, which keeps values in memory up to
a limit and spills further batches to a private file.

A group's :class:`ResultIterable` stays readable after the reader has
moved on; its file is deleted when the iterable is garbage-collected (and
with the executor's directory at the latest). It pickles as a plain list.
"""

from __future__ import annotations

import os
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from shuffle.blocks import BlockFormat
from shuffle.kernels import load

__all__ = ["ExternalList", "ResultIterable", "group_hash_sorted"]

_hashing = load("hashing")

Record = Tuple[Any, Any]


class ExternalList:
    """An append-only list that moves batches of ``spill_after`` values to a file beyond that many."""

    def __init__(self, spill_format: BlockFormat, new_path: Callable[[], Path], spill_after: int) -> None:
        self._format = spill_format
        self._new_path = new_path
        self._spill_after = max(1, spill_after)
        self._memory: List[Any] = []
        self._path: Optional[Path] = None
        self._batch_sizes: List[int] = []
        self._spilled = 0
        self._finalizer: Optional[weakref.finalize] = None

    def append(self, value: Any) -> None:
        self._memory.append(value)
        if len(self._memory) >= self._spill_after:
            self._spill()

    @property
    def spilled(self) -> int:
        """Values held on disk."""
        return self._spilled

    def _spill(self) -> None:
        if self._path is None:
            self._path = self._new_path()
            self._finalizer = weakref.finalize(self, _unlink, self._path)
        block = self._format.encode((None, value) for value in self._memory)
        with open(self._path, "ab") as f:
            f.write(block)
        self._batch_sizes.append(len(block))
        self._spilled += len(self._memory)
        self._memory = []

    def __len__(self) -> int:
        return self._spilled + len(self._memory)

    def __iter__(self) -> Iterator[Any]:
        if self._path is not None:
            with open(self._path, "rb") as f:
                for size in self._batch_sizes:
                    for _, value in self._format.decode(f.read(size)):
                        yield value
        yield from self._memory

    def delete(self) -> None:
        """Remove the spill file now (iteration afterwards sees only in-memory values: do not)."""
        if self._finalizer is not None:
            self._finalizer()


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ResultIterable:
    """The values of one key, as PySpark's ``ResultIterable``: iterable, sized, re-iterable."""

    def __init__(self, values: Iterable[Any]) -> None:
        self.data = values

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __reduce__(self) -> Tuple[Any, ...]:
        return (ResultIterable, (list(self.data),))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultIterable):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"ResultIterable({list(self)!r})"


def group_hash_sorted(records: Iterator[Record], spill_format: BlockFormat, new_path: Callable[[], Path],
                      spill_after: int) -> Iterator[Tuple[Any, ResultIterable]]:
    """Group a stream of records sorted by ``portable_hash(key)``: ``(key, values)`` per key."""
    portable_hash = _hashing.portable_hash
    current_hash: Optional[int] = None
    groups: Dict[Any, ExternalList] = {}
    order: List[Any] = []
    for key, value in records:
        h = portable_hash(key)
        if h != current_hash:
            yield from ((k, ResultIterable(groups[k])) for k in order)
            groups, order, current_hash = {}, [], h
        values = groups.get(key)
        if values is None:
            values = groups[key] = ExternalList(spill_format, new_path, spill_after)
            order.append(key)
        values.append(value)
    yield from ((k, ResultIterable(groups[k])) for k in order)


def new_group_spill_path(local_dir: Path) -> Path:
    return Path(local_dir) / f"temp_group_{uuid.uuid4().hex}"
