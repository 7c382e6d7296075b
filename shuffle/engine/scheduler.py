"""``DAGScheduler``: turns an action on a dataset into stages, runs them, recovers from failures.

A job's final dataset, followed back through narrow dependencies, ends at
sources and at shuffles; each shuffle's parent is a map stage, run first
(recursively) for the map outputs the tracker does not have. Outputs of
earlier jobs are reused. Then the result stage runs the action's function.

Failures, as Spark handles them:

* a task that raises is retried up to ``spark.task.maxFailures`` attempts in
  all; then the job fails with :class:`TaskFailedError` carrying the worker's
  exception and traceback. An ``OutOfDiskError`` fails the job at once: the
  disk is shared by every executor, so a retry would only fill it again. A worker that dies counts as a failed attempt (the
  backend replaces the worker).
* a :class:`FetchFailedError` means map output is gone: the stage stops
  launching tasks, the lost outputs are unregistered (the reported one and
  any other of that shuffle whose files no longer check out), and the job
  loop reruns just the missing map tasks, then the stage's unfinished tasks.
  A stage may be resubmitted this way ``spark.stage.maxConsecutiveAttempts``
  times before the job is aborted. A rerun map whose output differs from the
  lost one (lengths, checksums) after tasks of the job read the lost one
  aborts the job: the map side is not deterministic, and the result would mix
  both attempts.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import cloudpickle

from shuffle.conf import ShuffleConf
from shuffle.engine.backend import ExecutorBackend
from shuffle.engine.dataset import Dataset, MapPartitionsDataset, ShuffledDataset
from shuffle.engine.job_metrics import JobMetrics, StageMetrics
from shuffle.engine.tasks import ResultTask, ShuffleMapTask, Task, TaskFailure, TaskResult
from shuffle.errors import JobAbortedError, ShuffleError, TaskFailedError
from shuffle.map_output import MapOutputTracker, MapStatus
from shuffle.resolver import IndexShuffleBlockResolver

__all__ = ["DAGScheduler", "JobListener", "shuffle_dependencies"]

logger = logging.getLogger(__name__)


class JobListener:
    """Hooks for progress display; every method is optional to override."""

    def stage_started(self, stage_id: int, description: str, total_tasks: int) -> None: ...

    def task_ended(self, stage_id: int, ok: bool) -> None: ...

    def stage_ended(self, stage_id: int) -> None: ...


class _FetchFailed(Exception):
    """Internal: a stage saw a fetch failure and must be resubmitted after its parents."""

    def __init__(self, stage_key: int, failure: TaskFailure) -> None:
        super().__init__(failure.message)
        self.stage_key = stage_key
        self.failure = failure


def shuffle_dependencies(dataset: Dataset) -> List[ShuffledDataset]:
    """The shuffles read by ``dataset``'s stage: reached through narrow parents only."""
    found: List[ShuffledDataset] = []
    seen = set()
    stack = [dataset]
    while stack:
        current = stack.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        if isinstance(current, ShuffledDataset):
            found.append(current)
        else:
            stack.extend(current.parents())
    return found


class DAGScheduler:
    def __init__(self, backend: ExecutorBackend, tracker: MapOutputTracker, conf: ShuffleConf,
                 listener: Optional[JobListener] = None) -> None:
        self.backend = backend
        self.tracker = tracker
        self.conf = conf
        self.listener = listener or JobListener()
        self._stage_ids = itertools.count()
        self._task_ids = itertools.count()
        max_failures = conf.get_int("spark.task.maxFailures")
        max_stage_attempts = conf.get_int("spark.stage.maxConsecutiveAttempts")
        assert max_failures is not None and max_stage_attempts is not None  # both have defaults
        self.max_task_failures = max_failures
        self.max_stage_attempts = max_stage_attempts
        self._local_host = socket.gethostname()
        checksums_on = conf.get_bool("spark.shuffle.checksum.enabled")
        self._checksum_algorithm = conf.get("spark.shuffle.checksum.algorithm") if checksums_on else None
        # (shuffle id, map id) -> hash of the committed output's lengths and checksums, and
        # the shuffles that a task of the running job has read: see _check_same_output.
        self._output_digests: Dict[Tuple[int, int], int] = {}
        self._consumed: Set[int] = set()

    def run_job(self, final: Dataset, func: Callable[[Iterator[Any]], Any],
                partitions: Optional[Sequence[int]] = None) -> tuple:
        """``func`` applied to each of ``partitions`` of ``final``, in partition order, and the job's metrics."""
        wanted = list(range(final.num_partitions)) if partitions is None else list(partitions)
        job = JobMetrics()
        started = time.perf_counter()
        results: Dict[int, Any] = {}
        self._consumed = set()
        resubmissions: Counter = Counter()
        while True:
            try:
                self._compute_shuffles(final, job)
                missing = [p for p in wanted if p not in results]
                if missing:
                    self._run_stage(final, missing, job, func=func, results=results)
                break
            except _FetchFailed as ff:
                resubmissions[ff.stage_key] += 1
                # Forgotten even when the job gives up, so that the next job recomputes them.
                self._forget_lost_outputs(ff.failure)
                if resubmissions[ff.stage_key] >= self.max_stage_attempts:
                    raise JobAbortedError(
                        f"stage of dataset {ff.stage_key} hit fetch failures {resubmissions[ff.stage_key]} times "
                        f"(spark.stage.maxConsecutiveAttempts={self.max_stage_attempts}); last: {ff.failure.message}"
                    ) from None
        job.duration_s = time.perf_counter() - started
        return [results[p] for p in wanted], job

    def _compute_shuffles(self, dataset: Dataset, job: JobMetrics) -> None:
        for shuffled in shuffle_dependencies(dataset):
            self._compute_shuffles(shuffled.parent, job)
            missing = self.tracker.missing_maps(shuffled.shuffle_id)
            if missing:
                self._run_stage(shuffled.parent, missing, job, shuffled=shuffled)

    def _run_stage(self, dataset: Dataset, partitions: List[int], job: JobMetrics, *,
                   shuffled: Optional[ShuffledDataset] = None,
                   func: Optional[Callable[[Iterator[Any]], Any]] = None,
                   results: Optional[Dict[int, Any]] = None) -> None:
        stage_id = next(self._stage_ids)
        kind = "map" if shuffled is not None else "result"
        description = (f"shuffle {shuffled.shuffle_id} map side of {dataset!r}" if shuffled is not None
                       else f"result of {dataset!r}")
        metrics = StageMetrics(stage_id, kind, description, write_mode=shuffled.handle.kind if shuffled else "")
        job.stages.append(metrics)
        started = time.perf_counter()
        statuses = {s.shuffle_id: self.tracker.get_statuses(s.shuffle_id) for s in shuffle_dependencies(dataset)}
        failures: Counter = Counter()
        fetch_failure: Optional[TaskFailure] = None
        fatal: Optional[TaskResult] = None

        def launch(partition: int, attempt: int) -> None:
            task: Task
            common = dict(stage_id=stage_id, partition=partition, dataset=dataset,
                          inputs=dataset.task_inputs(partition), statuses=statuses,
                          attempt=attempt, task_id=next(self._task_ids))
            if shuffled is not None:
                task = ShuffleMapTask(handle=shuffled.handle, **common)
            else:
                task = ResultTask(func=func, **common)
            self.backend.submit(task, _pickle_task(task))

        self.listener.stage_started(stage_id, description, len(partitions))
        finished = False
        try:
            for partition in partitions:
                launch(partition, 0)
            for result in self.backend.results():
                if result.stage_id != stage_id:
                    continue  # an abandoned task of an earlier stage answering late
                metrics.attempts += 1
                self.listener.task_ended(stage_id, result.ok)
                if result.ok:
                    metrics.tasks += 1
                    metrics.write.merge(result.write_metrics)
                    metrics.read.merge(result.read_metrics)
                    self._consumed.update(statuses)
                    if shuffled is not None:
                        self._check_same_output(shuffled.shuffle_id, result.value)
                        self.tracker.register_map_output(shuffled.shuffle_id, result.value)
                    else:
                        assert results is not None
                        results[result.partition] = result.value
                    continue
                failure = result.failure
                assert failure is not None
                if failure.fetch_failed is not None:
                    # Keep the tasks already running (their outputs stay valid); launch no more.
                    logger.warning("stage %d: %s", stage_id, failure.message)
                    fetch_failure = fetch_failure or failure
                    continue
                failures[result.partition] += 1
                logger.warning("stage %d task %d attempt %d failed: %s: %s", stage_id, result.partition,
                               result.attempt, failure.exc_type, failure.message)
                if failures[result.partition] >= self.max_task_failures or failure.exc_type in _NOT_RETRIED:
                    fatal = result
                    break  # the job has failed: the finally below abandons the rest
                if fetch_failure is None:
                    launch(result.partition, result.attempt + 1)
            finished = fatal is None
        finally:
            if not finished:
                # Nothing of this stage may run on into the next job (error, Ctrl-C, abort).
                self.backend.cancel()
            metrics.duration_s = time.perf_counter() - started
            self.listener.stage_ended(stage_id)
        if fatal is not None:
            failure = fatal.failure
            assert failure is not None
            attempts = failures[fatal.partition]
            why = (f"after {attempts} attempts" if failure.exc_type not in _NOT_RETRIED
                   else f"after {attempts} attempt{'s' if attempts > 1 else ''}, not retried (the disk is full)")
            error = TaskFailedError(f"task {fatal.partition} of stage {stage_id} ({description}) {why}",
                                    failure.exc_type, failure.message, failure.traceback_text)
            raise error from failure.exception
        if fetch_failure is not None:
            raise _FetchFailed(dataset.id, fetch_failure)

    def _forget_lost_outputs(self, failure: TaskFailure) -> None:
        """Unregister the map output a fetch failure names, and any other of that shuffle now invalid."""
        info = failure.fetch_failed
        assert info is not None
        shuffle_id, map_id = info["shuffle_id"], info["map_id"]
        if map_id is not None:
            self._remove_output_files(shuffle_id, map_id)
            self.tracker.unregister_map_output(shuffle_id, map_id)
        statuses = self.tracker.get_statuses(shuffle_id)
        lost = self.backend.lost_locations({s.location for s in statuses if s is not None})
        for status in statuses:
            if status is not None and status.location in lost:
                logger.info("map output %d of shuffle %d was on lost %s; it will be recomputed",
                            status.map_id, shuffle_id, status.location)
                self.tracker.unregister_map_output(shuffle_id, status.map_id)
        for status in self.tracker.get_statuses(shuffle_id):
            if status is None or status.location.host != self._local_host:
                continue
            resolver = IndexShuffleBlockResolver(status.location.local_dir, checksum_algorithm=None, sync=False)
            if resolver.check_index_and_data(shuffle_id, status.map_id, status.num_partitions) is None:
                logger.info("map output %d of shuffle %d is gone too; it will be recomputed", status.map_id, shuffle_id)
                self.tracker.unregister_map_output(shuffle_id, status.map_id)


    def _check_same_output(self, shuffle_id: int, status: MapStatus) -> None:
        """Refuse a recomputed map output whose bytes differ from one this job's tasks already read.

        A map rerun after its output was lost must write what the lost output held
        (Spark's determinate stages). If its input or function is not deterministic,
        tasks that read the first output and tasks that read the second would be
        mixed in one result: the lengths and stored checksums of the two outputs
        are compared, and the job stops with an explanation instead. An output no
        task of this job has read yet may differ (every reader will see the new one).
        """
        digest = hash((status.partition_lengths, self._stored_checksums(shuffle_id, status)))
        key = (shuffle_id, status.map_id)
        previous = self._output_digests.get(key)
        if previous is not None and previous != digest and shuffle_id in self._consumed:
            raise JobAbortedError(
                f"map {status.map_id} of shuffle {shuffle_id} was recomputed after its output was lost and wrote "
                "different bytes than before (partition lengths or checksums differ), but tasks of this job had "
                "already read the first output: its input or function is not deterministic, and the result "
                "would mix both attempts. Make the map side deterministic (fixed seeds, no dependence on "
                "iteration order of sets or on time) and run the job again."
            )
        self._output_digests[key] = digest

    def _stored_checksums(self, shuffle_id: int, status: MapStatus) -> Optional[Tuple[int, ...]]:
        if self._checksum_algorithm is None or status.location.host != self._local_host:
            return None
        resolver = IndexShuffleBlockResolver(status.location.local_dir, self._checksum_algorithm, sync=False)
        try:
            stored = resolver.read_checksums(shuffle_id, status.map_id)
        except (OSError, ShuffleError):
            return None
        return None if stored is None else tuple(stored)

    def _remove_output_files(self, shuffle_id: int, map_id: int) -> None:
        """Delete the files of a map output that failed a fetch, so its rerun commits afresh.

        Map outputs are named by map id, not by attempt, and the first valid commit of
        a name wins: a corrupt output whose index still checks out would otherwise be
        kept by a rerun on the same executor, and fail every read again. No task is
        running when this is called (the failed stage has drained).
        """
        statuses = self.tracker.get_statuses(shuffle_id)
        status = statuses[map_id] if 0 <= map_id < len(statuses) else None
        if status is None or status.location.host != self._local_host:
            return
        try:
            if os.path.isdir(status.location.local_dir):
                IndexShuffleBlockResolver(status.location.local_dir, checksum_algorithm=None,
                                          sync=False).remove_data_by_map(shuffle_id, map_id)
        except OSError as e:
            logger.warning("could not remove the files of shuffle %d map %d: %s", shuffle_id, map_id, e)


# Failures a retry cannot fix: every executor writes to this machine's same disks.
_NOT_RETRIED = frozenset({"OutOfDiskError"})


def _pickle_task(task: Task) -> bytes:
    """Cloudpickle ``task``; a function that cannot travel is named in the error."""
    try:
        return cloudpickle.dumps(task)
    except Exception as e:
        culprit = _unpicklable_function(task)
        what = f"function {culprit}" if culprit else f"{task.describe()}"
        raise ShuffleError(f"cannot send {what} to the workers: {type(e).__name__}: {e}") from e


def _unpicklable_function(task: Task) -> Optional[str]:
    candidates: List[Any] = []
    if isinstance(task, ResultTask):
        candidates.append(task.func)
    stack = [task.dataset]
    while stack:
        current = stack.pop()
        if isinstance(current, MapPartitionsDataset):
            candidates.append(current.f)
        if isinstance(current, ShuffledDataset):
            dep = current.handle.dependency
            if dep.aggregator is not None:
                candidates.extend([dep.aggregator.create_combiner, dep.aggregator.merge_value,
                                   dep.aggregator.merge_combiners])
            candidates.append(dep.sort_key)
            stack.append(current.parent)
        stack.extend(current.parents())
    for func in candidates:
        if func is not None and not _pickles(func):
            # Dataset methods wrap the user's function in a closure: name the user's one.
            inner = [c.cell_contents for c in getattr(func, "__closure__", None) or ()
                     if callable(c.cell_contents) and not _pickles(c.cell_contents)]
            culprit = inner[0] if inner else func
            return getattr(culprit, "__qualname__", repr(culprit))
    return None


def _pickles(obj: Any) -> bool:
    try:
        cloudpickle.dumps(obj)
    except Exception:
        return False
    return True
