"""Tasks: the unit of work the scheduler ships to a worker, and how a worker runs one.

A :class:`ShuffleMapTask` computes one partition of a shuffle's parent and
writes it through the writer its handle chose, returning the ``MapStatus``.
A :class:`ResultTask` computes one partition of the final dataset and applies
the action's function to it. Both carry everything they need from the
driver: the partition's inputs and the map statuses of every shuffle the
partition reads, so a worker never calls back to the driver.

A task never raises out of :func:`run_task`: it returns a :class:`TaskResult`
holding either the value or the failure (type, message, traceback text, the
exception itself when it pickles, and the fetch failure's ids when it is one).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

import cloudpickle

from shuffle.dependency import ShuffleHandle
from shuffle.errors import FetchFailedError
from shuffle.manager import SortShuffleManager
from shuffle.map_output import MapStatus
from shuffle.metrics import ReadMetrics, WriteMetrics

__all__ = ["Task", "ShuffleMapTask", "ResultTask", "TaskResult", "TaskFailure", "TaskContext", "run_task",
           "dumps_result", "failure_of"]


@dataclass
class Task:
    stage_id: int
    partition: int
    dataset: Any                       # the Dataset whose partition this task computes
    inputs: Dict[int, Any]             # driver-side inputs by dataset id (parallelize slices)
    statuses: Dict[int, List[MapStatus]]  # map outputs of every shuffle this task reads
    attempt: int = 0
    task_id: int = 0

    def describe(self) -> str:
        return f"task {self.partition} of stage {self.stage_id} (attempt {self.attempt})"


@dataclass
class ShuffleMapTask(Task):
    handle: Optional[ShuffleHandle] = None


@dataclass
class ResultTask(Task):
    func: Optional[Callable[[Iterator[Any]], Any]] = None


@dataclass
class TaskFailure:
    exc_type: str
    message: str
    traceback_text: str
    exception: Optional[BaseException] = None
    fetch_failed: Optional[Dict[str, Any]] = None   # shuffle_id, map_id, reduce_id when it is one
    worker_lost: bool = False


@dataclass
class TaskResult:
    task_id: int
    stage_id: int
    partition: int
    attempt: int
    executor_id: str
    value: Any = None                  # MapStatus for a map task, the action's value for a result task
    failure: Optional[TaskFailure] = None
    write_metrics: WriteMetrics = field(default_factory=WriteMetrics)
    read_metrics: ReadMetrics = field(default_factory=ReadMetrics)
    write_mode: str = ""
    duration_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None


class TaskContext:
    """What a running task can reach on its worker: the shuffle manager and its inputs."""

    def __init__(self, manager: SortShuffleManager, task: Task) -> None:
        self.manager = manager
        self.task = task
        self.inputs = task.inputs
        self.read_metrics = ReadMetrics()
        self._streams: List[Iterator[Any]] = []
        self._readers: List[Any] = []

    def read_shuffle(self, handle: ShuffleHandle, reduce_partition: int) -> Iterator[Any]:
        """The records of ``reduce_partition`` of ``handle``'s shuffle, combined/sorted as its dependency says."""
        tracker = self.manager.tracker
        sid = handle.shuffle_id
        # The task carries the driver's current statuses: rebuild the local view from them,
        # so a rerun map (new location or lengths) is read from where it now is.
        if tracker.contains_shuffle(sid):
            tracker.unregister_shuffle(sid)
        tracker.register_shuffle(sid, handle.dependency.num_maps)
        for status in self.task.statuses.get(sid, []):
            tracker.register_map_output(sid, status)
        reader = self.manager.get_reader(handle, reduce_partition, reduce_partition + 1)
        stream = reader.read()
        self._streams.append(stream)
        self._readers.append(reader)
        # The reader's own stream, not a wrapper: no extra generator frame per record.
        return stream

    def close(self) -> None:
        """Close every reader this task opened, so its memory and spill files are freed now,
        not when a failed task's traceback is finally collected; then count what they read."""
        for stream in self._streams:
            stream.close()  # type: ignore[attr-defined]
        self._streams.clear()
        for reader in self._readers:
            self.read_metrics.merge(reader.metrics)
        self._readers.clear()


def run_task(task: Task, manager: SortShuffleManager) -> TaskResult:
    """Run ``task`` on this worker; failures are returned, never raised."""
    started = time.perf_counter_ns()
    result = TaskResult(task.task_id, task.stage_id, task.partition, task.attempt, manager.location.executor_id)
    tc = TaskContext(manager, task)
    try:
        records = task.dataset.compute(task.partition, tc)
        if isinstance(task, ShuffleMapTask):
            assert task.handle is not None
            handle = task.handle
            if not manager.tracker.contains_shuffle(handle.shuffle_id):
                manager.tracker.register_shuffle(handle.shuffle_id, handle.dependency.num_maps)
            writer = manager.get_writer(handle, task.partition, task_id=task.task_id)
            result.value = writer.write(records)
            result.write_metrics = writer.metrics
            result.write_mode = handle.kind
        else:
            assert isinstance(task, ResultTask) and task.func is not None
            result.value = task.func(records)
    except BaseException as e:  # noqa: B902 - everything goes back to the driver
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        result.failure = failure_of(e)
    finally:
        tc.close()
    result.read_metrics = tc.read_metrics
    result.duration_ns = time.perf_counter_ns() - started
    return result


def dumps_result(result: TaskResult) -> bytes:
    """``result`` pickled for the driver; a value that does not pickle becomes the task's failure."""
    try:
        return cloudpickle.dumps(result)
    except Exception as e:
        result.value = None
        result.failure = failure_of(e)
        result.failure.exception = None
        return cloudpickle.dumps(result)


def failure_of(error: BaseException) -> TaskFailure:
    """Describe ``error`` for the driver; keeps the exception itself only if it survives pickling."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    exception: Optional[BaseException] = error
    try:
        cloudpickle.loads(cloudpickle.dumps(error))
    except Exception:
        exception = None
    fetch = None
    if isinstance(error, FetchFailedError):
        fetch = {"shuffle_id": error.shuffle_id, "map_id": error.map_id, "reduce_id": error.reduce_id,
                 "location": str(error.location), "cause": error.cause}
    return TaskFailure(type(error).__name__, str(error), text, exception, fetch)
