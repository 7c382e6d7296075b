"""A map task whose rerun writes different bytes (its input is not deterministic).

Expected: the scheduler compares the rerun output's lengths and checksums
with the lost output's. If tasks of the job already read the lost output,
the job fails with an explanation (never a result mixing both attempts);
if nobody had read it yet, every reader sees the rerun output alone.
"""

from __future__ import annotations

import glob
import operator
import os

import pytest

from shuffle import JobAbortedError
from shuffle.engine.scheduler import JobListener

from faults.conftest import assert_clean
from faults.inject import claim

MAPS = 4
VICTIM = 2


def drifting(changed: str):
    """A map function whose records change once ``changed`` exists (a source that moved on)."""
    def f(x):
        drift = 1000 if os.path.exists(changed) else 0
        return (x % 5, x + drift)
    return f


def lose_victim_then_read(pattern: str, once: str, changed: str):
    """Reduce side: the first task of partition 1 deletes the victim map's data file, then reads."""
    def run(split, records):
        if split == 1 and claim(once):
            open(changed, "w").close()
            for path in glob.glob(pattern):
                os.unlink(path)
        return records
    return run


def sums(data):
    out = {}
    for k, v in data:
        out[k] = out.get(k, 0) + v
    return out


def test_a_rerun_that_writes_different_bytes_after_its_output_was_read_fails_the_job(make_ctx, tmp_path):
    ctx = make_ctx(1)                     # reduce tasks run in order: partition 0 reads first
    changed, once = str(tmp_path / "changed"), str(tmp_path / "once")
    counts = ctx.parallelize(range(400), MAPS).map(drifting(changed)).reduce_by_key(operator.add, 3)
    pattern = str(ctx.local_dir / f"executor-*/shuffle_{counts.shuffle_id}_{VICTIM}_0.data")

    with pytest.raises(JobAbortedError, match="not deterministic") as info:
        counts.map_partitions_with_index(lose_victim_then_read(pattern, once, changed)).collect()

    assert f"map {VICTIM} of shuffle {counts.shuffle_id}" in str(info.value)
    assert_clean(ctx)
    # The context still works, and a deterministic job over the same data is exact.
    assert dict(ctx.parallelize(range(400), MAPS).map(lambda x: (x % 5, x)).reduce_by_key(operator.add).collect()) \
        == sums((x % 5, x) for x in range(400))


class LoseAfterMapStage(JobListener):
    def __init__(self, pattern, changed):
        self.pattern, self.changed, self.done = pattern, changed, False

    def stage_ended(self, stage_id):
        if not self.done:
            self.done = True
            open(self.changed, "w").close()
            for path in glob.glob(self.pattern):
                os.unlink(path)


def test_a_rerun_that_writes_different_bytes_before_anyone_read_is_used_alone(make_ctx, tmp_path):
    ctx = make_ctx(2)
    changed = str(tmp_path / "changed")
    counts = ctx.parallelize(range(400), MAPS).map(drifting(changed)).reduce_by_key(operator.add, 3)
    pattern = str(ctx.local_dir / f"executor-*/shuffle_{counts.shuffle_id}_{VICTIM}_0.data")
    ctx.scheduler.listener = LoseAfterMapStage(pattern, changed)

    result = dict(counts.collect())

    # Maps 0, 1 and 3 wrote before the change, map 2 after it: no reader saw its first output.
    slices = [range(i * 100, (i + 1) * 100) for i in range(MAPS)]
    expected = sums((x % 5, x + (1000 if i == VICTIM else 0)) for i, part in enumerate(slices) for x in part)
    assert result == expected
    assert ("map", 1) in [(s.kind, s.tasks) for s in ctx.last_job_metrics.stages]
    assert_clean(ctx)
