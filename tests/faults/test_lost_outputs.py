"""A map output's data or index file deleted after the map stage, before the reduce stage reads it.

Expected: the reducer's fetch fails with ``FetchFailedError`` naming that
map, only that map is rerun, and the result equals the oracle.
(tests/test_engine_faults.py deletes a data file *between two jobs*; here the
files go in the middle of one job, and the index, the marker of a commit, is
covered as well.)
"""

from __future__ import annotations

import logging
import operator
from collections import defaultdict

import pytest

from shuffle.engine.scheduler import JobListener

from faults.conftest import assert_clean, committed_indexes

MAPS = 4
VICTIM = 1


class DeleteAfterMapStage(JobListener):
    """Deletes the victim map's files when the first map stage of the job has ended."""

    def __init__(self, ctx, suffixes):
        self.ctx = ctx
        self.suffixes = suffixes
        self.map_stages = set()
        self.deleted = []
        self.shuffle_id = None

    def stage_started(self, stage_id, description, total_tasks):
        if "map side" in description:
            self.map_stages.add(stage_id)

    def stage_ended(self, stage_id):
        if stage_id in self.map_stages and not self.deleted:
            (index,) = committed_indexes(self.ctx.local_dir, self.shuffle_id, VICTIM)
            for suffix in self.suffixes:
                path = index.with_suffix(suffix)
                path.unlink()
                self.deleted.append(path)


def records():
    return [(x % 23, x) for x in range(4000)]


def oracle():
    sums = defaultdict(int)
    for k, v in records():
        sums[k] += v
    return dict(sums)


@pytest.mark.parametrize("suffixes", [(".data",), (".index",), (".data", ".index")],
                         ids=["data", "index", "both"])
def test_a_file_deleted_before_the_reduce_stage_reruns_only_its_map(make_ctx, caplog, suffixes):
    ctx = make_ctx(2)
    sums = ctx.parallelize(records(), MAPS).reduce_by_key(operator.add, 3)
    listener = ctx.scheduler.listener = DeleteAfterMapStage(ctx, suffixes)
    listener.shuffle_id = sums.shuffle_id

    with caplog.at_level(logging.WARNING, logger="shuffle.engine.scheduler"):
        assert dict(sums.collect()) == oracle()

    assert listener.deleted
    stages = [(s.kind, s.tasks) for s in ctx.last_job_metrics.stages]
    assert stages[0] == ("map", MAPS) and ("map", 1) in stages[1:], stages
    failures = [r.getMessage() for r in caplog.records if "fetch failed" in r.getMessage()]
    assert failures and all(f"map {VICTIM} " in m for m in failures)
    assert len(committed_indexes(ctx.local_dir, sums.shuffle_id, VICTIM)) == 1
    assert_clean(ctx)
