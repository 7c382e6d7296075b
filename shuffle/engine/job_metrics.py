"""Per-stage metrics of the last job, printable as a table (``ctx.last_job_metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from shuffle.metrics import ReadMetrics, WriteMetrics

__all__ = ["StageMetrics", "JobMetrics"]


@dataclass
class StageMetrics:
    stage_id: int
    kind: str                      # "map" (writes a shuffle) or "result"
    description: str
    tasks: int = 0
    attempts: int = 0              # task attempts, retries included
    write_mode: str = ""
    write: WriteMetrics = field(default_factory=WriteMetrics)
    read: ReadMetrics = field(default_factory=ReadMetrics)
    duration_s: float = 0.0

    def as_dict(self) -> Dict[str, object]:
        return {
            "stage": self.stage_id, "kind": self.kind, "description": self.description,
            "tasks": self.tasks, "attempts": self.attempts, "write_mode": self.write_mode,
            **{f"write_{k}": v for k, v in self.write.as_dict().items()},
            **{f"read_{k}": v for k, v in self.read.as_dict().items()},
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class JobMetrics:
    stages: List[StageMetrics] = field(default_factory=list)
    duration_s: float = 0.0

    def stage(self, stage_id: int) -> StageMetrics:
        for stage in self.stages:
            if stage.stage_id == stage_id:
                return stage
        raise KeyError(stage_id)

    def table(self) -> str:
        """A plain-text table, one row per stage."""
        header = ["stage", "kind", "mode", "tasks", "rec written", "MB written", "rec read",
                  "MB read", "spills", "fetch wait ms", "seconds"]
        rows = [header]
        for s in self.stages:
            spills = s.write.spill_count + s.read.spill_count
            rows.append([
                str(s.stage_id), s.kind, s.write_mode or "-", str(s.tasks),
                f"{s.write.records_written:,}", f"{s.write.bytes_written / 1e6:.2f}",
                f"{s.read.records_read:,}", f"{s.read.bytes_read / 1e6:.2f}",
                str(spills), f"{s.read.fetch_wait_time_ns / 1e6:.1f}", f"{s.duration_s:.2f}",
            ])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"job: {self.duration_s:.2f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
