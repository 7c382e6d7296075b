"""``RayBackend``: the engine's tasks on a Ray cluster, through the same executor interface.

The scheduler, the stages and the datasets are the ones of the local engine;
only where tasks run changes. Each task is one Ray task (one CPU) running
:func:`run_ray_task` in a Ray worker process, which keeps one
:class:`~shuffle.manager.SortShuffleManager` (an *executor*) per context over
``<root>/node-<node id>/executor-<pid>`` on its node's local disk. A map task
commits its data, index and checksum files there and returns a ``MapStatus``
whose ``BlockManagerId.host`` is the Ray node id, so "host-local" means "on
the same node": a reducer reads the blocks of its own node straight from disk
and asks the block service of the owning node for the others
(:mod:`shuffle.engine.block_service`, with the fetcher's usual flow control,
retries and checksums).

Failures: Ray does not retry anything (``max_retries=0``); a task whose worker
or node dies comes back as a lost-worker failure and the scheduler retries it,
Ray placing it where there is room. A reducer that cannot reach a dead node's
service raises ``FetchFailedError``; the scheduler then asks
:meth:`RayBackend.lost_locations`, forgets every output of that node and reruns
only those maps. ``spark.stage.maxConsecutiveAttempts`` bounds how often.

Ray is optional (``pip install 'shuffle[ray]'``): this module imports it only
when a backend is made, and :func:`import_ray` turns its absence into a
``ConfigError`` naming the extra.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from typing import AbstractSet, Any, Dict, Iterator, List, Optional, Set

import cloudpickle

from shuffle.conf import ShuffleConf
from shuffle.engine.backend import ExecutorBackend
from shuffle.engine.block_service import SERVICE_PREFIX_KEY, node_directory, start_block_service
from shuffle.engine.tasks import Task, TaskFailure, TaskResult, dumps_result, failure_of, run_task
from shuffle.errors import ConfigError, ShuffleError
from shuffle.manager import SortShuffleManager
from shuffle.map_output import BlockManagerId, MapStatus
from shuffle.memory import ExecutionMemoryPool, shuffle_pool_size

__all__ = ["RayBackend", "import_ray", "run_ray_task", "RAY_EXTRA"]

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'shuffle[ray]'"

# How long start() waits for the block services, and stop() for each to remove its files.
_SERVICE_START_TIMEOUT_S = 120.0
_SERVICE_CALL_TIMEOUT_S = 10.0


def import_ray() -> Any:
    """The ``ray`` module, or ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("backend", "ray", f"Ray to be installed ({RAY_EXTRA} adds it): {e}") from e
    return ray


# ---------------------------------------------------------------- worker side
# One executor per Ray worker process and context (keyed by the context's root directory).
# Ray reuses worker processes across tasks, so the manager and its memory pool live on
# between the tasks of a context, as in a local worker process; a new context replaces it.
_EXECUTORS: Dict[str, SortShuffleManager] = {}


def _executor(ray: Any, root: str, conf_values: Dict[str, str], slots: int) -> SortShuffleManager:
    manager = _EXECUTORS.get(root)
    if manager is None:
        _EXECUTORS.clear()  # an earlier context's executor: its node services removed its files
        node_id = ray.get_runtime_context().get_node_id()
        executor_id = f"{node_id[:8]}-{os.getpid()}"
        directory = os.path.join(node_directory(root, node_id), f"executor-{os.getpid()}")
        os.makedirs(directory, exist_ok=True)
        conf = ShuffleConf(conf_values)
        pool = ExecutionMemoryPool(shuffle_pool_size(conf, slots))
        manager = SortShuffleManager(conf, local_dir=directory, executor_id=executor_id, memory_pool=pool)
        # The node, not the machine's name, is what "host" means on a cluster: blocks on this
        # node are read from disk, all others through their node's block service.
        manager.location = BlockManagerId(executor_id, node_id, directory)
        _EXECUTORS[root] = manager
    return manager


def run_ray_task(payload: bytes, root: str, conf_values: Dict[str, str], slots: int) -> bytes:
    """Body of every Ray task: run the cloudpickled engine task ``payload``; a cloudpickled TaskResult.

    Never raises for the task's own failures (they are in the result), as a
    local worker does; a raise here means the worker itself is broken.
    """
    import ray

    manager = _executor(ray, root, conf_values, slots)
    try:
        task: Task = cloudpickle.loads(payload)
    except Exception as e:  # a task that does not unpickle here is still a task failure
        result = TaskResult(-1, -1, -1, 0, manager.location.executor_id, failure=failure_of(e))
    else:
        result = run_task(task, manager)
    return dumps_result(result)


# ---------------------------------------------------------------- driver side
class RayBackend(ExecutorBackend):
    """Tasks as Ray tasks on the cluster at ``address``; one block service per node.

    ``address``: None (``ray.init()``'s default: ``RAY_ADDRESS``, else a new
    local Ray), ``"auto"`` (the cluster this machine belongs to) or
    ``"ray://host:port"``. When Ray is already initialized in this process, it
    is used as it is and left running at :meth:`stop`; otherwise this backend
    starts the connection and shuts it down at :meth:`stop`.
    ``num_executors`` is the cluster's CPU count once started.
    """

    def __init__(self, address: Optional[str], local_dir: os.PathLike | str, conf_values: Dict[str, str],
                 keep_files: bool = False) -> None:
        self._ray = import_ray()
        self.address = address
        self.root = os.path.abspath(str(local_dir))
        self.keep_files = keep_files
        self._prefix = f"shuffle-blocks-{uuid.uuid4().hex[:12]}-"
        self.conf_values = dict(conf_values)
        self.conf_values["shuffle.fetch.transport"] = "ray"
        self.conf_values[SERVICE_PREFIX_KEY] = self._prefix
        self.num_executors = 0
        self._slots = 1
        self._remote: Any = None
        self._pending: Dict[Any, Task] = {}
        self._services: Dict[str, Any] = {}
        self._owns_ray = False
        self._started = False
        self._stopped = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            logger.info("using the Ray connection this process already has (address %r not used)", self.address)
        else:
            ray.init(address=self.address, logging_level=logging.WARNING)
            self._owns_ray = True
        self._started = True
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
        self.num_executors = sum(cpus)
        if self.num_executors < 1:
            raise ShuffleError(f"the Ray cluster at {self.address or 'the default address'} has no CPU to run tasks")
        self._slots = max(cpus)
        for node in nodes:
            self._ensure_service(node["NodeID"])
        try:
            ray.get([s.ping.remote() for s in self._services.values()], timeout=_SERVICE_START_TIMEOUT_S)
        except Exception as e:
            raise ShuffleError(f"the block services of the Ray cluster did not start: {type(e).__name__}: {e}") from e
        self._remote = ray.remote(run_ray_task).options(num_cpus=1, max_retries=0)
        logger.info("Ray backend: %d nodes, %d CPUs, files under %s", len(nodes), self.num_executors, self.root)

    def _ensure_service(self, node_id: str) -> None:
        if node_id not in self._services:
            self._services[node_id] = start_block_service(self._ray, self._prefix + node_id, self.root, node_id)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            return
        ray = self._ray
        self.cancel()
        removals = {node: s.remove.remote(self.keep_files) for node, s in self._services.items()}
        for node, ref in removals.items():
            try:
                ray.get(ref, timeout=_SERVICE_CALL_TIMEOUT_S)
            except Exception as e:  # its node is gone, and its files with it ...
                logger.debug("block service of node %s did not remove its files: %s", node, type(e).__name__)
                if not self.keep_files:  # ... unless that "node" was a process on this very machine
                    shutil.rmtree(node_directory(self.root, node), ignore_errors=True)
        for service in self._services.values():
            try:
                ray.kill(service)
            except Exception as e:
                logger.debug("could not kill a block service: %s", e)
        self._services.clear()
        if self._owns_ray:
            ray.shutdown()

    # ------------------------------------------------------------ tasks
    def submit(self, task: Task, payload: bytes) -> None:
        if self._stopped:
            raise ShuffleError("the executor backend was stopped")
        ref = self._remote.remote(payload, self.root, self.conf_values, self._slots)
        self._pending[ref] = task

    def results(self) -> Iterator[TaskResult]:
        ray = self._ray
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                task = self._pending.pop(ref, None)
                if task is not None:  # None: cancelled while we were yielding
                    yield self._result(ref, task)

    def _result(self, ref: Any, task: Task) -> TaskResult:
        try:
            message = self._ray.get(ref)
        except Exception as e:  # the worker or its node died (or Ray lost the task): retry it elsewhere
            logger.warning("Ray lost %s: %s", task.describe(), type(e).__name__)
            failure = TaskFailure("WorkerLostError", f"the Ray task of {task.describe()} was lost: "
                                  f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                                  "", None, None, worker_lost=True)
            return TaskResult(task.task_id, task.stage_id, task.partition, task.attempt, "ray", failure=failure)
        try:
            result: TaskResult = cloudpickle.loads(message)
        except Exception as e:  # the worker is fine; its answer does not unpickle here
            failure = TaskFailure(type(e).__name__, f"the task's result could not be unpickled on the driver: {e}",
                                  "", None, None)
            result = TaskResult(task.task_id, task.stage_id, task.partition, task.attempt, "ray", failure=failure)
        result.task_id, result.stage_id, result.partition, result.attempt = (
            task.task_id, task.stage_id, task.partition, task.attempt)
        if result.ok and isinstance(result.value, MapStatus):
            self._ensure_service(result.value.location.host)  # a node that joined after start()
        return result

    def cancel(self) -> None:
        pending, self._pending = self._pending, {}
        for ref in pending:
            try:
                self._ray.cancel(ref, force=True)
            except Exception as e:  # already finished, or its node is gone
                logger.debug("could not cancel a Ray task: %s", e)

    # ------------------------------------------------------------ node loss
    def lost_locations(self, locations: AbstractSet[BlockManagerId]) -> Set[BlockManagerId]:
        """Locations on nodes Ray reports dead, or whose block service no longer answers."""
        ray = self._ray
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        verdict: Dict[str, bool] = {}
        for host in {location.host for location in locations}:
            if host not in alive:
                verdict[host] = True
                continue
            service = self._services.get(host)
            try:
                if service is None:
                    service = self._ray.get_actor(self._prefix + host)
                ray.get(service.ping.remote(), timeout=_SERVICE_CALL_TIMEOUT_S)
                verdict[host] = False
            except Exception as e:
                logger.warning("block service of node %s is gone: %s", host, type(e).__name__)
                verdict[host] = True
        # Dead services stay listed: stop() still removes their directories when it can see them.
        return {location for location in locations if verdict[location.host]}

    def nodes_holding(self) -> List[str]:
        """Node ids with a block service (for diagnostics and tests)."""
        return sorted(self._services)
