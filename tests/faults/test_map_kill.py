"""A map worker SIGKILLed while spilling, while merging, and between the data and the index rename.

Expected: the killed attempt commits nothing (no index of its own anywhere),
the rerun commits exactly once, the result equals the oracle, and the dead
worker leaves no spill file, commit temporary or index-less data file behind.
(tests/test_engine_faults.py covers a worker that exits at a map function;
these kill it inside the shuffle write itself.)
"""

from __future__ import annotations

import operator
from collections import defaultdict

import pytest

from faults.conftest import assert_clean, committed_indexes, fired
from faults.inject import kill_at

N = 20_000
MAPS = 4
KEYS = 97

# Every map spills several times, so "while spilling" and "while merging" are reachable.
SPILLY = {"spark.shuffle.spill.numElementsForceSpillThreshold": "2000"}


def records():
    return [(x % KEYS, x) for x in range(N)]


def oracle_sums():
    sums = defaultdict(int)
    for k, v in records():
        sums[k] += v
    return dict(sums)


def oracle_groups():
    groups = defaultdict(list)
    for k, v in records():
        groups[k].append(v)
    return {k: sorted(v) for k, v in groups.items()}


WRITERS = {
    # writer: (extra conf, dataset -> shuffled dataset, collect -> comparable, oracle)
    "sort": ({}, lambda ds: ds.reduce_by_key(operator.add, 3), dict, oracle_sums),
    "serialized": ({"shuffle.writer.force": "serialized"}, lambda ds: ds.partition_by(3),
                   lambda out: sorted(out), lambda: sorted(records())),
    "bypass": ({}, lambda ds: ds.group_by_key(3),
               lambda out: {k: sorted(v) for k, v in out}, oracle_groups),
}

CASES = [
    ("spill", "sort"),
    ("merge", "sort"),
    ("merge", "serialized"),
    ("commit", "sort"),
    ("commit", "serialized"),
    ("commit", "bypass"),
]


@pytest.mark.parametrize("site, writer", CASES)
def test_a_map_worker_killed_inside_the_write_commits_nothing_and_its_rerun_commits_once(make_ctx, tmp_path,
                                                                                        site, writer):
    extra, shuffle_of, comparable, oracle = WRITERS[writer]
    ctx = make_ctx(2, {**SPILLY, **extra})
    marker = str(tmp_path / "kill")
    shuffled = shuffle_of(ctx.parallelize(records(), MAPS).map_partitions_with_index(kill_at(site, marker)))
    assert shuffled.handle.kind == writer

    result = comparable(shuffled.collect())

    assert fired(marker), f"the worker was never killed at {site}"
    assert result == oracle()
    map_stage = ctx.last_job_metrics.stages[0]
    assert map_stage.kind == "map" and map_stage.tasks == MAPS and map_stage.attempts == MAPS + 1
    for map_id in range(MAPS):
        assert len(committed_indexes(ctx.local_dir, shuffled.shuffle_id, map_id)) == 1, map_id
    assert_clean(ctx)
    # The replacement worker and the rerun outputs serve the next job as well.
    assert comparable(shuffled.collect()) == oracle()
