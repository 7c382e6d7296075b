import threading
import time

import pytest

from shuffle.conf import ShuffleConf
from shuffle.memory import (ExecutionMemoryPool, MemoryConsumer, SizeTracker, SpillPolicy, TaskMemoryManager,
                            estimate_size, executor_memory_budget, shuffle_pool_size)


def test_single_task_may_take_the_whole_pool_but_no_more():
    pool = ExecutionMemoryPool(1000)
    assert pool.acquire(600, task_id=1) == 600
    assert pool.acquire(600, task_id=1) == 400
    assert pool.memory_free == 0
    pool.release(300, task_id=1)
    assert pool.used_by(1) == 700
    assert pool.release_all(1) == 700 and pool.memory_used == 0


def test_two_tasks_are_each_capped_at_half_the_pool():
    pool = ExecutionMemoryPool(1000)
    pool.acquire(0, task_id=2)  # task 2 becomes active
    assert pool.acquire(900, task_id=1) == 500
    assert pool.acquire(900, task_id=2) == 500


def test_task_below_its_floor_waits_until_another_task_releases():
    pool = ExecutionMemoryPool(1000)
    assert pool.acquire(1000, task_id=1) == 1000
    granted = []

    def second_task():
        granted.append(pool.acquire(400, task_id=2))

    thread = threading.Thread(target=second_task)
    thread.start()
    time.sleep(0.2)
    assert granted == []          # holds 0 < 1000 / (2 * 2): must wait
    pool.release(600, task_id=1)
    thread.join(timeout=5)
    assert granted == [400]


def test_task_at_or_above_its_floor_gets_a_partial_grant_without_waiting():
    pool = ExecutionMemoryPool(1000)
    pool.acquire(0, task_id=1)
    assert pool.acquire(300, task_id=2) == 300   # floor is 250
    assert pool.acquire(700, task_id=1) == 500   # capped at its 1/N share
    assert pool.acquire(400, task_id=2) == 200   # what is free, without waiting: 300 >= floor


def test_negative_requests_and_sizes_are_rejected():
    with pytest.raises(ValueError):
        ExecutionMemoryPool(0)
    with pytest.raises(ValueError):
        ExecutionMemoryPool(10).acquire(-1, task_id=1)


class Recorder(MemoryConsumer):
    def __init__(self, memory, name):
        super().__init__(memory)
        self.name = name
        self.spills = []

    def spill(self, size, trigger):
        self.spills.append((size, trigger.name))
        freed = self.used
        self.release(freed)
        return freed


def test_refused_request_spills_the_tasks_other_consumers_largest_first():
    tmm = TaskMemoryManager(ExecutionMemoryPool(1000), task_id=7)
    small, big, asker = Recorder(tmm, "small"), Recorder(tmm, "big"), Recorder(tmm, "asker")
    assert small.acquire(200) == 200 and big.acquire(700) == 700
    assert asker.acquire(500) == 500
    assert big.spills == [(400, "asker")] and small.spills == []
    assert asker.used == 500 and tmm.memory_used == 700


def test_release_all_forgets_the_task():
    pool = ExecutionMemoryPool(100)
    tmm = TaskMemoryManager(pool, task_id=1)
    consumer = MemoryConsumer(tmm)
    consumer.acquire(60)
    assert tmm.release_all() == 60 and pool.memory_used == 0


def test_spill_policy_asks_for_double_and_spills_when_refused():
    tmm = TaskMemoryManager(ExecutionMemoryPool(1000), task_id=1)
    consumer = MemoryConsumer(tmm)
    policy = SpillPolicy(consumer, initial_threshold=100, force_after=10**9)
    assert not policy.should_spill(31, 10**6)     # only every 32 records
    assert not policy.should_spill(32, 50)        # under the free threshold
    assert not policy.should_spill(32, 400)       # asks 700, gets it: threshold 800
    assert consumer.used == 700
    assert not policy.should_spill(64, 900)       # asks 1000, gets the 300 left: threshold 1100 > 900
    assert policy.should_spill(96, 2000)          # asks 2900, gets nothing: 2000 >= 1100, spill
    policy.after_spill()
    assert consumer.used == 0 and policy.threshold == 100


def test_spill_policy_forces_a_spill_after_the_element_threshold():
    tmm = TaskMemoryManager(ExecutionMemoryPool(1000), task_id=1)
    policy = SpillPolicy.from_conf(MemoryConsumer(tmm), ShuffleConf({"spark.shuffle.spill.numElementsForceSpillThreshold": 5}))
    assert not policy.should_spill(5, 0)
    assert policy.should_spill(6, 0)


def test_size_tracker_estimates_within_a_factor_of_the_true_size():
    tracker = SizeTracker()
    records = [(i, "x" * (i % 50)) for i in range(20000)]
    for record in records[:10000]:
        tracker.update(record)
    tracker.update_many(records[10000:])
    true_size = sum(estimate_size(r) for r in records)
    assert tracker.count == 20000
    assert 0.5 * true_size <= tracker.estimated_size <= 2 * true_size
    tracker.reset()
    assert tracker.estimated_size == 0


def test_estimate_size_follows_containers():
    assert estimate_size((1, "abc")) > estimate_size(())
    assert estimate_size([b"x" * 1000] * 100) > 100 * 1000
    assert estimate_size({i: str(i) for i in range(1000)}) > estimate_size({})


def test_budget_comes_from_executor_memory_and_memory_fraction():
    conf = ShuffleConf({"spark.executor.memory": "512m", "spark.shuffle.memoryFraction": "0.25"})
    assert executor_memory_budget(conf) == 512 * 1024**2
    assert shuffle_pool_size(conf) == 128 * 1024**2
    assert 0 < executor_memory_budget(ShuffleConf(), num_workers=2) < executor_memory_budget(ShuffleConf())
