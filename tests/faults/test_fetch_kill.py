"""Fetch processes SIGKILLed in the middle of a request, inside a real job.

Reducers read every block through fetch processes
(``spark.shuffle.readHostLocalDisk=false``), whose read function kills its
own process for the first few reads. Expected: a killed process is replaced
and its request retried, up to ``spark.shuffle.io.maxRetries``; past that the
fetch fails, the map is rerun and the job still ends exact. No fetch process
outlives the job (the subreaper check sees orphans too).
(tests/test_fetcher.py covers a killed and a hung fetch process for the
fetcher alone; these run them under workers and the scheduler.)
"""

from __future__ import annotations

import operator
from collections import defaultdict

from faults.conftest import assert_clean
from faults.inject import kill_fetches, reads

MAPS = 4
REDUCES = 3
REMOTE = {"spark.shuffle.readHostLocalDisk": "false"}


def records():
    return [(x % 17, x) for x in range(3000)]


def oracle():
    sums = defaultdict(int)
    for k, v in records():
        sums[k] += v
    return dict(sums)


def test_a_killed_fetch_process_is_replaced_and_its_request_retried(make_ctx, tmp_path):
    ctx = make_ctx(2, REMOTE)
    counter = str(tmp_path / "reads")
    sums = ctx.parallelize(records(), MAPS).reduce_by_key(operator.add, REDUCES)

    assert dict(sums.map_partitions(kill_fetches(counter, 2)).collect()) == oracle()

    stages = ctx.last_job_metrics.stages
    assert [(s.kind, s.tasks, s.attempts) for s in stages] == [("map", MAPS, MAPS), ("result", REDUCES, REDUCES)]
    # Both workers start with a map each, so every reducer has blocks on the other executor.
    assert stages[1].read.remote_blocks_fetched > 0
    assert reads(counter) >= 3                 # two reads died with their process, later ones answered
    assert_clean(ctx)


def test_kills_past_max_retries_fail_the_fetch_and_rerun_the_map(make_ctx, tmp_path):
    ctx = make_ctx(2, {**REMOTE, "spark.shuffle.io.maxRetries": "1"})
    counter = str(tmp_path / "reads")
    # One reducer: its remote maps go in one request, whose first read and one retry both die.
    sums = ctx.parallelize(records(), MAPS).reduce_by_key(operator.add, 1)

    assert dict(sums.map_partitions(kill_fetches(counter, 2)).collect()) == oracle()

    kinds = [(s.kind, s.tasks) for s in ctx.last_job_metrics.stages]
    assert kinds[0] == ("map", MAPS) and ("map", 1) in kinds[1:], kinds
    assert_clean(ctx)
