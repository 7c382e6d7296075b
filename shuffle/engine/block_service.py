"""The Ray backend's per-node block service, and the fetch transport that asks it for blocks.

On a Ray cluster a map output lives on the disk of the node whose task wrote
it. One :class:`BlockService` actor pinned on each node (the counterpart of
Spark's external shuffle service) owns that node's directory for one context,
``<root>/node-<node id>``, under which every executor of the node writes:

- it serves byte ranges of the map outputs there by their index offsets and
  checks them against their checksum files, with the very code the local
  fetch processes run (:func:`shuffle.read.block_io.read_ranges`), so a block
  is read, verified and diagnosed the same way on one machine and on many;
- it deletes the directory when the context stops (or, when files are kept,
  only the spill files and commit temporaries of interrupted tasks).

It never writes a shuffle file (tasks do) and never decides what a failed read
means (the reducer's fetcher does). It outlives the tasks of its node, so map
outputs stay readable after the worker process that wrote them has gone, but
not its node: a lost node takes its service and its outputs with it.

:class:`RayBlockTransport` is the reducer's side. It has the methods the
fetcher uses on a :class:`~shuffle.read.fetch_pool.FetchPool` and is chosen
by ``shuffle.fetch.transport=ray``; it sends each request to the service of
the node that holds the blocks (on this backend ``BlockManagerId.host`` is the
Ray node id) instead of to a local process. A service that cannot be found,
fails, or misses ``spark.network.timeout`` comes back as a failed request,
which the fetcher retries and then turns into ``FetchFailedError``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from shuffle.conf import ShuffleConf
from shuffle.errors import ConfigError
from shuffle.map_output import BlockManagerId
from shuffle.read.block_io import RangeResult, ReadFn, read_ranges
from shuffle.read.fetch_pool import PoolReply

__all__ = ["BlockService", "RayBlockTransport", "node_directory", "start_block_service", "SERVICE_PREFIX_KEY"]

logger = logging.getLogger(__name__)

# Conf key the Ray backend sets for its tasks: the name prefix of this context's services.
SERVICE_PREFIX_KEY = "shuffle.ray.blockServicePrefix"

# Requests one service runs at once: reads release the GIL, so reducers do not queue behind each other.
_SERVICE_CONCURRENCY = 4

# What an interrupted task can leave (the names the writers, sorters and resolver use).
_TEMP_PATTERNS = ("temp_*", "shuffle_*_0.data.*", "shuffle_*_0.index.*", "shuffle_*_0.checksum.*.*")


def node_directory(root: str, node_id: str) -> str:
    """The directory of node ``node_id`` under a context's ``root``: every executor of the node writes below it."""
    return os.path.join(root, f"node-{node_id}")


class BlockService:
    """One node's map outputs of one context: served by byte range, removed at the end.

    Made a Ray actor by :func:`start_block_service`; a plain object otherwise
    (tests call it directly). ``read_ranges`` refuses a directory that is not
    under this node's directory: a request routed to the wrong node must fail,
    not read whatever happens to be at that path.
    """

    def __init__(self, root: str, node_id: str) -> None:
        self.root = root
        self.node_id = node_id
        self.directory = node_directory(root, node_id)
        os.makedirs(self.directory, exist_ok=True)

    def ping(self) -> str:
        return self.node_id

    def read_ranges(
        self, read_fn: Optional[ReadFn], local_dir: str, shuffle_id: int,
        ranges: Sequence[Tuple[int, int, int]], verify: bool,
    ) -> List[RangeResult]:
        """:func:`shuffle.read.block_io.read_ranges` on this node; never raises."""
        inside = os.path.commonpath([os.path.abspath(local_dir), self.directory]) == self.directory
        if not inside:
            error = f"{local_dir} is not a directory of node {self.node_id} (its service serves {self.directory})"
            return [RangeResult(error=error) for _ in ranges]
        return read_ranges(read_fn, local_dir, shuffle_id, ranges, verify)

    def remove(self, keep_files: bool) -> None:
        """Delete this node's directory (or, keeping files, only what interrupted tasks left)."""
        if keep_files:
            base = Path(self.directory)
            for pattern in _TEMP_PATTERNS:
                for temp in base.glob(f"executor-*/{pattern}"):
                    temp.unlink(missing_ok=True)
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            os.rmdir(self.root)  # on another machine the root holds nothing else; on the driver's it may
        except OSError:
            pass


def start_block_service(ray: Any, name: str, root: str, node_id: str) -> Any:
    """Start the named service actor on node ``node_id`` (hard affinity: it must die with its node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_class = ray.remote(BlockService)
    return actor_class.options(
        name=name, num_cpus=0, max_restarts=0, max_concurrency=_SERVICE_CONCURRENCY,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(root, node_id)


class RayBlockTransport:
    """Up to ``size`` requests in flight to the block services of other nodes.

    The same call order and answers as ``FetchPool``: :meth:`submit` while
    :attr:`free_slots` > 0 (``address`` names the node), :meth:`poll` for
    replies, :meth:`close` once. There are no processes to start or reap: a
    request is a call on the owning node's service actor.
    """

    def __init__(self, size: int, timeout: float, read_fn: Optional[ReadFn], conf: ShuffleConf) -> None:
        import ray  # only reached on the Ray backend, where Ray is installed

        if size < 1:
            raise ConfigError("shuffle.fetch.processes", size, "at least 1")
        prefix = conf.get(SERVICE_PREFIX_KEY)
        if not prefix:
            raise ConfigError(SERVICE_PREFIX_KEY, prefix, "the block service name prefix the Ray backend sets")
        self._ray = ray
        self.size = size
        self.timeout = timeout
        self._read_fn = read_fn
        self._prefix = prefix
        self._services: Dict[str, Any] = {}
        self._pending: Dict[Any, Tuple[int, str, float]] = {}  # ref -> (request id, node, deadline)
        self._failed: List[PoolReply] = []                      # failures known at submit time
        self._closed = False

    @property
    def free_slots(self) -> int:
        return self.size - len(self._pending) - len(self._failed)

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._failed)

    @property
    def pids(self) -> List[int]:
        return []

    @property
    def processes_started(self) -> int:
        return 0

    def submit(
        self, request_id: int, local_dir: str, shuffle_id: int, ranges: Sequence[Tuple[int, int, int]],
        verify: bool, address: Optional[BlockManagerId] = None,
    ) -> None:
        if self._closed:
            raise RuntimeError("the block transport is closed")
        if self.free_slots <= 0:
            raise RuntimeError("no free request slot; wait for a reply first")
        if address is None:
            raise ValueError("the Ray transport needs the address (node) of the blocks")
        node = address.host
        try:
            service = self._service(node)
            ref = service.read_ranges.remote(self._read_fn, local_dir, shuffle_id, list(ranges), verify)
        except Exception as e:  # no such actor (its node is gone) or the call could not be made
            self._failed.append(PoolReply(request_id, None, f"no block service for node {node}: {e}"))
            return
        self._pending[ref] = (request_id, node, time.monotonic() + self.timeout)

    def _service(self, node: str) -> Any:
        service = self._services.get(node)
        if service is None:
            service = self._services[node] = self._ray.get_actor(self._prefix + node)
        return service

    def poll(self, timeout: Optional[float]) -> List[PoolReply]:
        """Replies that arrive within ``timeout`` seconds (None: until one does); past-deadline requests fail."""
        if self._closed:
            return []
        replies, self._failed = self._failed, []
        if replies:
            timeout = 0.0
        if not self._pending:
            if timeout:
                time.sleep(timeout)
            return replies
        now = time.monotonic()
        limit = max(0.0, min(deadline for _, _, deadline in self._pending.values()) - now)
        if timeout is not None:
            limit = min(limit, timeout)
        refs = list(self._pending)
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=limit)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            replies.append(self._receive(ref))
        now = time.monotonic()
        for ref, (request_id, node, deadline) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[ref]
                self._cancel(ref)
                replies.append(PoolReply(request_id, None, f"the block service of node {node} did not answer "
                                                           f"within {self.timeout:g}s (spark.network.timeout)"))
        return replies

    def _receive(self, ref: Any) -> PoolReply:
        request_id, node, _ = self._pending.pop(ref)
        try:
            results = self._ray.get(ref)
        except Exception as e:  # the actor died (its node is gone) or raised: a failed request
            self._services.pop(node, None)  # look it up again next time: it may have been replaced
            what = type(e).__name__
            logger.warning("block service of node %s failed request %d: %s", node, request_id, what)
            return PoolReply(request_id, None, f"block service of node {node} failed: {what}: {_first_line(e)}")
        return PoolReply(request_id, results, None)

    def _cancel(self, ref: Any) -> None:
        try:
            self._ray.cancel(ref)
        except Exception as e:  # best effort: its answer is dropped anyway
            logger.debug("could not cancel a block request: %s", e)

    def close(self) -> None:
        """Drop every outstanding request. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for ref in list(self._pending):
            self._cancel(ref)
        self._pending.clear()
        self._failed.clear()
        self._services.clear()

    def __repr__(self) -> str:
        return f"RayBlockTransport(size={self.size}, pending={len(self._pending)}, closed={self._closed})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
