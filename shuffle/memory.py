"""Execution memory: the pool tasks share, per-task accounting, and spill decisions.

Three layers, as in Spark:

* :class:`ExecutionMemoryPool` is one executor's shuffle memory
  (``spark.executor.memory`` x ``spark.shuffle.memoryFraction``). With N tasks
  active, each may hold up to 1/N of it and is guaranteed 1/(2N) before it has
  to spill: a request that cannot reach that floor waits for another task to
  release memory (Spark's ``ExecutionMemoryPool.acquireMemory``).
* :class:`TaskMemoryManager` hands one task's memory to its consumers (a
  writer's record buffer, a reader's spilling map). When the pool refuses a
  request it asks the task's *other* consumers to spill, largest first.
* :class:`MemoryConsumer` is what those collections derive from, and
  :class:`SpillPolicy` is Spark's ``Spillable.maybeSpill`` for collections of
  Python objects whose size is only estimated (:class:`SizeTracker`).

This module never writes files: a consumer's ``spill`` does that.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from typing import Any, Dict, List

import psutil

from shuffle.conf import ShuffleConf

__all__ = [
    "ExecutionMemoryPool",
    "TaskMemoryManager",
    "MemoryConsumer",
    "SpillPolicy",
    "SizeTracker",
    "estimate_size",
    "executor_memory_budget",
    "shuffle_pool_size",
]

logger = logging.getLogger(__name__)

# When spark.executor.memory is not set, a worker's budget is this share of the
# memory the machine has available, divided among the workers.
DEFAULT_AVAILABLE_SHARE = 0.5


def executor_memory_budget(conf: ShuffleConf, num_workers: int = 1) -> int:
    """Bytes one worker may use: ``spark.executor.memory``, else a share of free memory."""
    configured = conf.get_bytes("spark.executor.memory")
    if configured is not None:
        return configured
    available = psutil.virtual_memory().available
    return int(available * DEFAULT_AVAILABLE_SHARE / max(1, num_workers))


def shuffle_pool_size(conf: ShuffleConf, num_workers: int = 1) -> int:
    """Bytes of one worker's budget that shuffle execution may use."""
    fraction = conf.get_float("spark.shuffle.memoryFraction")
    assert fraction is not None  # has a default
    return int(executor_memory_budget(conf, num_workers) * fraction)


class ExecutionMemoryPool:
    """Memory shared fairly by the tasks running on one executor; thread-safe."""

    def __init__(self, pool_size: int) -> None:
        if pool_size <= 0:
            raise ValueError(f"pool_size must be positive, got {pool_size}")
        self.pool_size = pool_size
        self._used_by_task: Dict[int, int] = {}
        self._cond = threading.Condition()

    @property
    def memory_used(self) -> int:
        with self._cond:
            return sum(self._used_by_task.values())

    @property
    def memory_free(self) -> int:
        return self.pool_size - self.memory_used

    def used_by(self, task_id: int) -> int:
        with self._cond:
            return self._used_by_task.get(task_id, 0)

    def acquire(self, num_bytes: int, task_id: int) -> int:
        """Grant up to ``num_bytes`` to ``task_id``; may grant less, or block.

        A task is never granted more than its 1/N share. It blocks only while
        it holds less than 1/(2N) and the pool cannot cover the request, so a
        newly started task can always make progress once others release.
        """
        if num_bytes < 0:
            raise ValueError(f"num_bytes must be non-negative, got {num_bytes}")
        with self._cond:
            if task_id not in self._used_by_task:
                self._used_by_task[task_id] = 0
                # A new task changes N: waiting tasks re-check their share.
                self._cond.notify_all()
            while True:
                active = len(self._used_by_task)
                held = self._used_by_task[task_id]
                max_per_task = self.pool_size // active
                min_per_task = self.pool_size // (2 * active)
                free = self.pool_size - sum(self._used_by_task.values())
                grant = min(max(0, min(num_bytes, max_per_task - held)), free)
                if grant < num_bytes and held + grant < min_per_task:
                    logger.debug("task %d waits for memory: holds %d, floor %d", task_id, held, min_per_task)
                    self._cond.wait()
                    continue
                self._used_by_task[task_id] = held + grant
                return grant

    def release(self, num_bytes: int, task_id: int) -> None:
        with self._cond:
            held = self._used_by_task.get(task_id, 0)
            if num_bytes > held:
                logger.warning("task %d releases %d bytes but holds %d", task_id, num_bytes, held)
                num_bytes = held
            self._used_by_task[task_id] = held - num_bytes
            self._cond.notify_all()

    def release_all(self, task_id: int) -> int:
        """Release everything ``task_id`` holds and forget the task; returns the bytes freed."""
        with self._cond:
            freed = self._used_by_task.pop(task_id, 0)
            self._cond.notify_all()
            return freed


class TaskMemoryManager:
    """One task's view of the pool: grants memory to its consumers, asks them to spill."""

    def __init__(self, pool: ExecutionMemoryPool, task_id: int) -> None:
        self.pool = pool
        self.task_id = task_id
        self._consumers: List["MemoryConsumer"] = []
        self._lock = threading.RLock()

    def register(self, consumer: "MemoryConsumer") -> None:
        with self._lock:
            self._consumers.append(consumer)

    def unregister(self, consumer: "MemoryConsumer") -> None:
        with self._lock:
            if consumer in self._consumers:
                self._consumers.remove(consumer)

    def acquire(self, num_bytes: int, requester: "MemoryConsumer") -> int:
        """Grant up to ``num_bytes`` to ``requester``, spilling the task's other consumers if needed."""
        with self._lock:
            granted = self.pool.acquire(num_bytes, self.task_id)
            if granted < num_bytes:
                others = sorted(
                    (c for c in self._consumers if c is not requester and c.used > 0),
                    key=lambda c: c.used,
                    reverse=True,
                )
                for other in others:
                    freed = other.spill(num_bytes - granted, requester)
                    if freed > 0:
                        logger.debug("%r spilled %d bytes for %r", other, freed, requester)
                        granted += self.pool.acquire(num_bytes - granted, self.task_id)
                    if granted >= num_bytes:
                        break
            return granted

    def release(self, num_bytes: int) -> None:
        self.pool.release(num_bytes, self.task_id)

    def release_all(self) -> int:
        """End of task: forget every consumer and give all memory back."""
        with self._lock:
            self._consumers.clear()
        return self.pool.release_all(self.task_id)

    @property
    def memory_used(self) -> int:
        return self.pool.used_by(self.task_id)


class MemoryConsumer:
    """Something that holds execution memory and can give it back by spilling.

    Subclasses call :meth:`acquire` before growing and :meth:`release` after
    shrinking, and override :meth:`spill` when they can write themselves out.
    """

    def __init__(self, memory: TaskMemoryManager) -> None:
        self.memory = memory
        self.used = 0
        memory.register(self)

    def acquire(self, num_bytes: int) -> int:
        granted = self.memory.acquire(num_bytes, self)
        self.used += granted
        return granted

    def release(self, num_bytes: int) -> None:
        num_bytes = min(num_bytes, self.used)
        self.used -= num_bytes
        self.memory.release(num_bytes)

    def release_all(self) -> None:
        self.release(self.used)

    def spill(self, size: int, trigger: "MemoryConsumer") -> int:
        """Write out to free at least ``size`` bytes if possible; returns bytes freed."""
        return 0

    def close(self) -> None:
        """Give back all memory and leave the task's consumer list."""
        self.release_all()
        self.memory.unregister(self)


class SpillPolicy:
    """Spark's ``Spillable.maybeSpill`` for a consumer holding Python objects.

    The consumer may use ``initial_threshold`` bytes without asking the pool
    (Spark's ``spark.shuffle.spill.initialMemoryThreshold``). Every 32 records,
    once the estimate passes the threshold, it asks for enough to double its
    size; if the pool grants less, it spills. ``force_after`` records force a
    spill whatever the memory (``numElementsForceSpillThreshold``, for tests).
    """

    def __init__(self, consumer: MemoryConsumer, initial_threshold: int, force_after: int) -> None:
        self.consumer = consumer
        self.initial_threshold = initial_threshold
        self.threshold = initial_threshold
        self.force_after = force_after

    @classmethod
    def from_conf(cls, consumer: MemoryConsumer, conf: ShuffleConf) -> "SpillPolicy":
        initial = conf.get_bytes("spark.shuffle.spill.initialMemoryThreshold")
        force = conf.get_int("spark.shuffle.spill.numElementsForceSpillThreshold")
        assert initial is not None and force is not None  # both have defaults
        return cls(consumer, initial, force)

    def should_spill(self, records_since_spill: int, estimated_size: int) -> bool:
        if records_since_spill > self.force_after:
            return True
        if records_since_spill % 32 == 0 and estimated_size >= self.threshold:
            wanted = 2 * estimated_size - self.threshold
            self.threshold += self.consumer.acquire(wanted)
            return estimated_size >= self.threshold
        return False

    def after_spill(self) -> None:
        """The collection was written out: give back what was acquired for it."""
        self.consumer.release_all()
        self.threshold = self.initial_threshold


class SizeTracker:
    """Estimates the bytes held by a growing collection of records, cheaply.

    Measuring every record would cost more than storing it, so, as Spark's
    ``SizeTracker`` does, records are measured at exponentially spaced
    updates (the 1st, then each ``ceil(n * 1.1)``-th) and the mean size of the
    measured ones stands for all.
    """

    SAMPLE_GROWTH = 1.1

    def __init__(self, per_record_overhead: int = 0) -> None:
        self.per_record_overhead = per_record_overhead
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._next_sample = 1
        self._sampled = 0
        self._sampled_bytes = 0

    def update(self, record: Any) -> None:
        self.count += 1
        if self.count >= self._next_sample:
            self._sampled += 1
            self._sampled_bytes += estimate_size(record)
            self._next_sample = math.ceil(self.count * self.SAMPLE_GROWTH)

    def update_many(self, records: List[Any]) -> None:
        """Count a batch of records, measuring those that fall on sample points."""
        start = self.count
        self.count += len(records)
        while self._next_sample <= self.count:
            self._sampled += 1
            self._sampled_bytes += estimate_size(records[self._next_sample - start - 1])
            self._next_sample = math.ceil(self._next_sample * self.SAMPLE_GROWTH)

    @property
    def estimated_size(self) -> int:
        if self._sampled == 0:
            return 0
        return int(self.count * (self._sampled_bytes / self._sampled + self.per_record_overhead))


_ATOMIC = (int, float, bool, type(None), str, bytes, complex)


def estimate_size(obj: Any, _depth: int = 0) -> int:
    """Approximate bytes held by ``obj`` and what it contains (``sys.getsizeof``, recursive).

    Follows tuples, lists, sets and dicts up to a few levels; deeper or exotic
    objects count their shallow size. Shared small ints and interned strings
    are counted each time: an overestimate, which only makes spills earlier.
    """
    size = sys.getsizeof(obj)
    if isinstance(obj, _ATOMIC) or _depth >= 4:
        return size
    if isinstance(obj, (tuple, list, set, frozenset)):
        items = list(obj)
        if len(items) > 64:
            # Sample long containers: scale the mean size of the first 64.
            sampled = sum(estimate_size(x, _depth + 1) for x in items[:64])
            return size + sampled * len(items) // 64
        return size + sum(estimate_size(x, _depth + 1) for x in items)
    if isinstance(obj, dict):
        pairs = list(obj.items())[:64]
        sampled = sum(estimate_size(k, _depth + 1) + estimate_size(v, _depth + 1) for k, v in pairs)
        return size + (sampled * len(obj) // len(pairs) if pairs else 0)
    return size
