"""Executor backends: where tasks run. The scheduler only sees :class:`ExecutorBackend`.

:class:`LocalProcessBackend` runs N worker processes on this machine, each an
executor with its own id and directory under the context's local dir. A task
goes to an idle worker as cloudpickled bytes; its result comes back the same
way. A worker that dies mid-task is noticed through its process sentinel, its
task is reported as failed (``worker_lost``) and a fresh worker takes its
place, so the scheduler can retry. Another backend (Ray) implements the same
four methods without touching the stage logic.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import AbstractSet, Any, Deque, Dict, Iterator, List, Optional, Set

import cloudpickle

from shuffle.engine.tasks import Task, TaskFailure, TaskResult
from shuffle.engine.worker import STOP, worker_main
from shuffle.errors import ShuffleError
from shuffle.map_output import BlockManagerId
from shuffle.processes import start_process

__all__ = ["ExecutorBackend", "LocalProcessBackend"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 2.0

# What a worker killed mid-task can leave in its directory (names as the writers, the
# reader and the resolver make them): spill files, commit temporaries ("<target>.<uuid
# hex>"), and a data or checksum file renamed into place before the index, which is the
# commit marker, so without it they are no output at all.
_SPILL_PREFIX = "temp_"
_COMMIT_TEMP = re.compile(r"^shuffle_\d+_\d+_0\.(data|index|checksum\.[A-Za-z0-9]+)\.[0-9a-f]{32}$")
_UNMARKED = re.compile(r"^(shuffle_\d+_\d+_0)\.(data|checksum\.[A-Za-z0-9]+)$")


class ExecutorBackend(ABC):
    """Runs tasks somewhere; results come back in completion order."""

    num_executors: int

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def submit(self, task: Task, payload: bytes) -> None:
        """Queue ``task`` (already cloudpickled as ``payload``)."""

    @abstractmethod
    def results(self) -> Iterator[TaskResult]:
        """Yield results as tasks finish, until nothing is queued or running."""

    @abstractmethod
    def cancel(self) -> None:
        """Drop queued tasks and abandon running ones; their results never come back."""

    @abstractmethod
    def stop(self) -> None:
        """Stop every worker; idempotent; leaves no process behind."""

    def lost_locations(self, locations: AbstractSet[BlockManagerId]) -> Set[BlockManagerId]:
        """Those of ``locations`` whose map outputs can no longer be served at all (their node is gone).

        The scheduler asks after a fetch failure and forgets every output held
        there, so they rerun together rather than one fetch failure at a time.
        Here every executor writes to this machine's disk, which outlives them.
        """
        return set()


@dataclass
class _Worker:
    executor_id: str
    process: Any
    conn: Connection
    task: Optional[Task] = None


class LocalProcessBackend(ExecutorBackend):
    """N worker processes on this machine (``forkserver`` by default, ``spawn`` works too)."""

    def __init__(self, num_executors: int, local_dir: Path, conf_values: Dict[str, str],
                 start_method: str = "forkserver") -> None:
        if num_executors < 1:
            raise ShuffleError(f"parallelism must be at least 1, got {num_executors}")
        self.num_executors = num_executors
        self.local_dir = Path(local_dir)
        self.conf_values = conf_values
        self._mp = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that has already imported the heavy modules.
            self._mp.set_forkserver_preload(["shuffle.engine.worker"])
        self._workers: List[_Worker] = []
        self._queue: Deque[tuple] = deque()
        self._generation = 0
        self._stopped = False

    def start(self) -> None:
        for index in range(self.num_executors):
            self._workers.append(self._spawn(index))

    def _spawn(self, index: int) -> _Worker:
        self._generation += 1
        executor_id = f"{index}.{self._generation}"
        directory = self.local_dir / f"executor-{executor_id}"
        directory.mkdir(parents=True, exist_ok=True)
        parent_end, child_end = self._mp.Pipe()
        process = self._mp.Process(
            target=worker_main,
            args=(child_end, executor_id, str(directory), self.conf_values, self.num_executors, os.getpid()),
            name=f"shuffle-executor-{executor_id}",
            # Not daemonic: a worker's reader may start fetch processes of its own, which
            # daemonic processes may not. stop() and the context's finalizer reap workers.
            daemon=False,
        )
        start_process(process)
        child_end.close()
        logger.debug("started executor %s (pid %s)", executor_id, process.pid)
        return _Worker(executor_id, process, parent_end)

    def submit(self, task: Task, payload: bytes) -> None:
        if self._stopped:
            raise ShuffleError("the executor backend was stopped")
        self._queue.append((task, payload))

    def _dispatch(self) -> None:
        for worker in self._workers:
            if not self._queue:
                return
            if worker.task is None:
                task, payload = self._queue.popleft()
                worker.task = task
                try:
                    worker.conn.send_bytes(payload)
                except OSError:
                    pass  # the worker is dying; its sentinel reports the loss

    def results(self) -> Iterator[TaskResult]:
        while True:
            self._dispatch()
            busy = [w for w in self._workers if w.task is not None]
            if not busy:
                return
            waitables: Dict[Any, _Worker] = {}
            for worker in busy:
                waitables[worker.conn] = worker
                waitables[worker.process.sentinel] = worker
            for ready in wait(list(waitables)):
                worker = waitables[ready]
                if worker.task is None:
                    continue  # answered through its pipe in this same round
                if ready is worker.conn:
                    result = self._receive(worker)
                else:
                    result = self._receive(worker) if worker.conn.poll() else self._lost(worker)
                if result is not None:
                    yield result

    def _receive(self, worker: _Worker) -> Optional[TaskResult]:
        task = worker.task
        assert task is not None
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):
            return self._lost(worker)
        worker.task = None
        try:
            result: TaskResult = cloudpickle.loads(message)
        except Exception as e:  # the worker is fine; its answer does not unpickle here
            failure = TaskFailure(type(e).__name__, f"the task's result could not be unpickled on the driver: {e}",
                                  "", None, None)
            result = TaskResult(task.task_id, task.stage_id, task.partition, task.attempt,
                                worker.executor_id, failure=failure)
        # The worker cannot know the driver's ids if the task did not unpickle; take them from the task.
        result.task_id, result.stage_id, result.partition, result.attempt = (
            task.task_id, task.stage_id, task.partition, task.attempt)
        return result

    def _lost(self, worker: _Worker) -> TaskResult:
        task = worker.task
        assert task is not None
        worker.task = None
        worker.process.join(timeout=_JOIN_TIMEOUT_S)
        code = worker.process.exitcode
        logger.warning("executor %s died (exit code %s) running %s; replacing it",
                       worker.executor_id, code, task.describe())
        worker.conn.close()
        if code is not None:
            self._sweep(worker)
        index = self._workers.index(worker)
        self._workers[index] = self._spawn(index)
        failure = TaskFailure("WorkerLostError", f"executor {worker.executor_id} exited with code {code}",
                              "", None, None, worker_lost=True)
        return TaskResult(task.task_id, task.stage_id, task.partition, task.attempt,
                          worker.executor_id, failure=failure)

    def cancel(self) -> None:
        self._queue.clear()
        for index, worker in enumerate(self._workers):
            if worker.task is not None:
                # A task cannot be interrupted inside a worker: replace the worker.
                logger.debug("abandoning %s on executor %s", worker.task.describe(), worker.executor_id)
                worker.process.kill()
                worker.process.join(timeout=_JOIN_TIMEOUT_S)
                worker.conn.close()
                if worker.process.exitcode is not None:
                    self._sweep(worker)
                self._workers[index] = self._spawn(index)

    def _sweep(self, worker: _Worker) -> None:
        """Delete what a dead worker's unfinished task left in its directory; committed outputs stay.

        Only called once the process has exited, so nothing in that directory is
        being written any more (each executor writes only its own directory).
        """
        directory = self.local_dir / f"executor-{worker.executor_id}"
        try:
            entries = list(directory.iterdir())
        except FileNotFoundError:
            return
        for path in entries:
            unmarked = _UNMARKED.match(path.name)
            if (path.name.startswith(_SPILL_PREFIX) or _COMMIT_TEMP.match(path.name)
                    or (unmarked and not (directory / f"{unmarked.group(1)}.index").exists())):
                logger.debug("removing %s, left by dead executor %s", path.name, worker.executor_id)
                path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._queue.clear()
        for worker in self._workers:
            try:
                worker.conn.send_bytes(STOP)
            except OSError:
                pass
        for worker in self._workers:
            worker.process.join(timeout=_JOIN_TIMEOUT_S if worker.task is None else 0.1)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=_JOIN_TIMEOUT_S)
            worker.conn.close()
        self._workers.clear()
