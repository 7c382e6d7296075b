"""The engine on a local 3-node Ray cluster: W1 and W5 exact, node loss recovered, nothing left behind.

Marked ``ray``; runs only with ``SHUFFLE_RAY_TESTS=1`` and Ray installed.
"""

from __future__ import annotations

import operator
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

if os.environ.get("SHUFFLE_RAY_TESTS") != "1":
    pytest.skip("Ray cluster tests: set SHUFFLE_RAY_TESTS=1", allow_module_level=True)
ray = pytest.importorskip("ray")

from shuffle import Context  # noqa: E402
from shuffle.bench import data, workloads  # noqa: E402
from shuffle.errors import JobAbortedError  # noqa: E402

pytestmark = pytest.mark.ray

CONF = {
    "spark.shuffle.sync": "false",
    "spark.executor.memory": "256m",
    "spark.shuffle.io.retryWait": "100ms",
}


def _outputs_by_node(ctx: Context, shuffle_id: int) -> Dict[str, List[int]]:
    by_node: Dict[str, List[int]] = {}
    for status in ctx.tracker.get_statuses(shuffle_id):
        if status is not None:
            by_node.setdefault(status.location.host, []).append(status.map_id)
    return by_node


def _named_actors(address: str) -> List[str]:
    ray.init(address=address, logging_level="WARNING")
    try:
        return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    finally:
        ray.shutdown()


def _wait_until_gone(ctx: Context, node_id: str, timeout: float = 30.0) -> None:
    """Until Ray reports the node dead and its block service no longer answers (its processes are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ctx.backend.lost_locations({_location_on(ctx, node_id)}):
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node_id} still serves blocks {timeout}s after it was killed")


def _location_on(ctx: Context, node_id: str) -> Any:
    for sid in range(4):
        if ctx.tracker.contains_shuffle(sid):
            for status in ctx.tracker.get_statuses(sid):
                if status is not None and status.location.host == node_id:
                    return status.location
    raise AssertionError(f"no map output on node {node_id}")


def _sums(records: List[tuple]) -> Dict[int, int]:
    expected: Dict[int, int] = {}
    for key, value in records:
        expected[key] = expected.get(key, 0) + value
    return expected


def test_w1_and_w5_are_exact_on_three_nodes_and_leave_nothing(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster()
    table = data.table(20_000, tmp_path / "cache")
    corpus = data.corpus(20_000, tmp_path / "cache")
    local_dir = tmp_path / "ctx"
    with Context(backend="ray", address=cluster.address, conf=CONF, local_dir=local_dir) as ctx:
        assert ctx.parallelism == 3  # the cluster's CPUs
        assert workloads.w1_engine(ctx, table) == workloads.w1_baseline(table)
        w1 = ctx.last_job_metrics
        # Map outputs on more than one node; reducers read their own node's blocks from disk
        # and the others' through the owning node's block service.
        assert len(_outputs_by_node(ctx, 0)) >= 2
        read = w1.stages[-1].read
        assert read.remote_blocks_fetched > 0 and read.local_blocks_fetched > 0
        assert read.records_read == w1.stages[0].write.records_written
        assert workloads.w5_engine(ctx, corpus) == workloads.w5_baseline(corpus)
        assert len(ctx.backend.nodes_holding()) == 3
        assert list(local_dir.glob("node-*/executor-*/shuffle_0_*_0.index"))
    # Closed: every node's directory is gone and no block service is left.
    assert list(local_dir.glob("node-*")) == []
    assert not [name for name in _named_actors(cluster.address) if name.startswith("shuffle-blocks-")]


def test_a_lost_node_loses_its_outputs_and_only_those_maps_rerun(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster()
    records = [(i % 101, i) for i in range(30_000)]
    with Context(backend="ray", address=cluster.address, conf=CONF, local_dir=tmp_path / "ctx") as ctx:
        sums = ctx.parallelize(records, 6).reduce_by_key(operator.add, 8)
        assert dict(sums.collect()) == _sums(records)
        by_node = _outputs_by_node(ctx, 0)
        victim = next(node for node in cluster.workers if node.node_id in by_node)
        lost_maps = sorted(by_node[victim.node_id])
        cluster.kill(victim)
        _wait_until_gone(ctx, victim.node_id)

        # The second job reuses the map outputs: reading the lost ones fails, they alone rerun.
        assert dict(sums.collect()) == _sums(records)
        stages = ctx.last_job_metrics.stages
        assert [s.kind for s in stages] == ["result", "map", "result"]
        assert stages[0].tasks == 0 and stages[0].attempts == 8  # every reducer hit the lost node
        assert stages[1].tasks == len(lost_maps)
        assert victim.node_id not in _outputs_by_node(ctx, 0)
        assert sorted(m for ms in _outputs_by_node(ctx, 0).values() for m in ms) == list(range(6))
    assert list((tmp_path / "ctx").glob("node-*")) == []  # the dead node's directory too (same machine)


def test_a_node_killed_mid_job_still_gives_exact_results(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster()
    records = [(i % 53, i) for i in range(9_000)]
    killed: List[str] = []

    def slow(index: int, items: Any) -> Any:
        time.sleep(1.0)  # long enough for the node to be killed while maps still run
        return items

    with Context(backend="ray", address=cluster.address, conf=CONF, local_dir=tmp_path / "ctx") as ctx:
        sums = ctx.parallelize(records, 9).map_partitions_with_index(slow).reduce_by_key(operator.add, 6)
        workers = {node.node_id: node for node in cluster.workers}

        def kill_first_worker_node_with_output() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                try:
                    holders = _outputs_by_node(ctx, 0)
                except Exception:
                    holders = {}
                for node_id in holders:
                    if node_id in workers:
                        cluster.kill(workers[node_id])
                        killed.append(node_id)
                        return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_first_worker_node_with_output)
        killer.start()
        try:
            result = dict(sums.collect())
        finally:
            killer.join()
        assert killed, "no map output landed on a worker node"
        assert result == _sums(records)
        stages = ctx.last_job_metrics.stages
        map_runs = sum(s.tasks for s in stages if s.kind == "map")
        failed_attempts = sum(s.attempts - s.tasks for s in stages)
        assert map_runs > 9 or failed_attempts > 0  # the loss was noticed and recovered from
        assert killed[0] not in _outputs_by_node(ctx, 0)
    assert list((tmp_path / "ctx").glob("node-*")) == []


def test_a_job_that_keeps_losing_nodes_stops_at_the_stage_attempt_limit(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster()
    records = [(i % 31, i) for i in range(6_000)]
    conf = dict(CONF, **{"spark.stage.maxConsecutiveAttempts": "1"})
    with Context(backend="ray", address=cluster.address, conf=conf, local_dir=tmp_path / "ctx") as ctx:
        sums = ctx.parallelize(records, 6).reduce_by_key(operator.add, 4)
        sums.count()
        by_node = _outputs_by_node(ctx, 0)
        victim = next(node for node in cluster.workers if node.node_id in by_node)
        cluster.kill(victim)
        _wait_until_gone(ctx, victim.node_id)
        with pytest.raises(JobAbortedError) as caught:
            sums.count()
        message = str(caught.value)
        assert "spark.stage.maxConsecutiveAttempts=1" in message
        assert "fetch failed" in message and victim.node_id in message
        # The context stays usable, and the lost outputs are recomputed by the next job.
        assert dict(sums.collect()) == _sums(records)
        assert [s.kind for s in ctx.last_job_metrics.stages] == ["map", "result"]
    assert list((tmp_path / "ctx").glob("node-*")) == []
