"""Progress bars for stages and tasks on a terminal (tqdm), and nothing elsewhere.

Bars go to stderr and only when stderr is a terminal, so piped output and
logs stay clean; ``Context(progress=False)`` or ``shuffle --quiet`` turn them
off everywhere.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional

from shuffle.engine.scheduler import JobListener

__all__ = ["ProgressBars", "progress_listener"]


class ProgressBars(JobListener):
    """One tqdm bar per running stage, counting finished tasks."""

    def __init__(self) -> None:
        from tqdm import tqdm  # imported here: only terminals pay for it

        self._tqdm = tqdm
        self._bars: Dict[int, Any] = {}

    def stage_started(self, stage_id: int, description: str, total_tasks: int) -> None:
        self._bars[stage_id] = self._tqdm(total=total_tasks, desc=f"stage {stage_id}", unit="task",
                                          leave=False, file=sys.stderr, dynamic_ncols=True)

    def task_ended(self, stage_id: int, ok: bool) -> None:
        bar = self._bars.get(stage_id)
        if bar is not None and ok:
            bar.update(1)

    def stage_ended(self, stage_id: int) -> None:
        bar = self._bars.pop(stage_id, None)
        if bar is not None:
            bar.close()


def progress_listener(progress: Optional[bool]) -> JobListener:
    """Bars when asked (True), or when ``None`` and stderr is a terminal; else a silent listener."""
    wanted = sys.stderr.isatty() if progress is None else progress
    return ProgressBars() if wanted else JobListener()
