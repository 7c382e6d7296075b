"""Fixtures of the Ray backend suite: local multi-node Ray clusters that leave nothing behind.

A cluster here is ``ray.cluster_utils.Cluster`` on this machine: a head and two
more nodes, each with one CPU and a 100 MiB object store, bound to the
loopback address, with node failure detected within about 1.5 s. Every
cluster is shut down by its fixture, which then checks that no process it
started (GCS, raylets, Ray workers, orphans included: the test process is a
child subreaper meanwhile) is still running, and removes Ray's session files.

Tests that need a cluster are marked ``ray`` and run only with
``SHUFFLE_RAY_TESTS=1`` and Ray installed (``pip install 'shuffle[ray]'``).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Iterator, List

import psutil
import pytest


NODE_ARGS: Dict[str, Any] = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
# Heartbeats every 0.5 s, a node dead after 3 missed: a killed node is noticed in ~1.5 s, not ~15 s.
HEAD_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}

_PR_SET_CHILD_SUBREAPER = 36


def ray_tests_enabled() -> bool:
    return os.environ.get("SHUFFLE_RAY_TESTS") == "1"


if ray_tests_enabled():
    # Ray's nodes bind to the loopback address only with this, read when ray is imported.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _descendants() -> Dict[int, psutil.Process]:
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    return found


def _survivors(before: set, timeout: float) -> List[str]:
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid, proc in _descendants().items():
            if pid in before:
                continue
            try:
                alive.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.Error:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _reap_adopted(before: set) -> None:
    """Collect the exit status of orphans we adopted as subreaper (the workers of killed nodes).

    Ray has waited for every process it started itself by now; left alone, these
    would stay zombies of the test process, and of init after it.
    """
    for proc in psutil.Process().children():
        try:
            if proc.pid not in before and proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


class LocalCluster:
    """A started 3-node Cluster; ``kill(node)`` removes a node as a crash would."""

    def __init__(self, nodes: int = 3) -> None:
        from ray.cluster_utils import Cluster

        # Short: Ray's socket paths must fit in 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="shray-")
        head = dict(NODE_ARGS, temp_dir=self.temp_dir, _system_config=HEAD_CONFIG)
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.workers = [self.cluster.add_node(**NODE_ARGS) for _ in range(nodes - 1)]
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return self.cluster.address

    def kill(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def make_cluster() -> Iterator[Any]:
    """``make_cluster()``: a fresh local cluster, shut down and checked for leftover processes."""
    _set_subreaper(True)
    before = set(_descendants())
    made: List[LocalCluster] = []

    def make(nodes: int = 3) -> LocalCluster:
        made.append(LocalCluster(nodes))
        return made[-1]

    try:
        yield make
    finally:
        for cluster in made:
            cluster.shutdown()
        alive = _survivors(before, timeout=20.0)
        _reap_adopted(before)
        _set_subreaper(False)
    assert not alive, f"Ray processes left running: {alive}"
    for cluster in made:
        assert not os.path.exists(cluster.temp_dir)
