"""``WriteObserver``: read-only observation points inside the writers, for study.

``shuffle explain`` (:mod:`shuffle.explain`) shows what a writer does step by
step by running the real writer with an observer set on its context
(``writer.context.observer = ...`` between ``manager.get_writer`` and
``write``). The writers call these methods at a few points, at most once per
file or per sort, never per record, and only when an observer is set.

An observer must only look: it may read the objects and files it is handed
(copying what it needs, since files are deleted soon after), never change
them. What it is handed is valid only during the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["WriteObserver"]


class WriteObserver:
    """No-op base class; override what you want to see."""

    def partition_file(self, partition_id: int, path: Path, size: int) -> None:
        """Bypass writer: partition ``partition_id``'s temp file is complete (``size`` bytes), about to be copied."""

    def sorting(self, buffer: Any) -> None:
        """Serialized writer: the record buffer (``pointers()``, ``page(i)``) just before its pointers are sorted."""

    def spill_written(self, path: Path, layout: Any) -> None:
        """A spill file is complete. ``layout`` is its in-memory description:
        ``SpillInfo`` (serialized writer) or ``SpillFile`` (sort writer's ``ExternalSorter``)."""
