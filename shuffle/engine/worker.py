"""The worker process: one executor, running one task at a time for the driver.

A worker owns a :class:`SortShuffleManager` over its own directory, receives
cloudpickled tasks on its end of a pipe and answers with cloudpickled
:class:`TaskResult` objects. It never deletes shuffle files (the driver owns
their lifetime) and it never outlives the driver: it exits on end-of-file on
its pipe, and a watchdog thread ends it if the driver process goes away while a task
is running. Ctrl-C is the driver's to handle, so workers ignore SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Dict

import cloudpickle

from shuffle.conf import ShuffleConf
from shuffle.engine.tasks import Task, TaskResult, dumps_result, failure_of, run_task
from shuffle.manager import SortShuffleManager
from shuffle.memory import ExecutionMemoryPool, shuffle_pool_size

__all__ = ["worker_main", "STOP"]

logger = logging.getLogger(__name__)

STOP = b"stop"
_WATCHDOG_INTERVAL_S = 0.5


def worker_main(conn: Connection, executor_id: str, local_dir: str, conf_values: Dict[str, str],
                num_workers: int, driver_pid: int) -> None:
    """Serve tasks from ``conn`` until told to stop or the driver disappears."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_watchdog(driver_pid)
    conf = ShuffleConf(conf_values)
    pool = ExecutionMemoryPool(shuffle_pool_size(conf, num_workers))
    manager = SortShuffleManager(conf, local_dir=local_dir, executor_id=executor_id, memory_pool=pool)
    profile_dir = conf.get("shuffle.task.profileDir")
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            break
        if message == STOP:
            break
        try:
            task: Task = cloudpickle.loads(message)
        except Exception as e:  # a task that does not unpickle here is still a task failure
            conn.send_bytes(cloudpickle.dumps(_unreadable(message, e, executor_id)))
            continue
        result = run_task(task, manager) if profile_dir is None else _profiled(task, manager, profile_dir)
        conn.send_bytes(dumps_result(result))
    conn.close()


def _profiled(task: Task, manager: SortShuffleManager, profile_dir: str) -> TaskResult:
    """``run_task`` under cProfile; the stats go to ``stage<S>-part<P>-attempt<A>.prof`` in ``profile_dir``."""
    import cProfile

    profiler = cProfile.Profile()
    result = profiler.runcall(run_task, task, manager)
    name = f"stage{task.stage_id}-part{task.partition}-attempt{task.attempt}.prof"
    try:
        os.makedirs(profile_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(profile_dir, name))
    except OSError as e:  # a profile is a diagnostic: losing one must not fail the task
        logger.warning("could not write the task profile %s: %s", name, e)
    return result


def _unreadable(message: bytes, error: Exception, executor_id: str) -> TaskResult:
    result = TaskResult(-1, -1, -1, 0, executor_id)
    result.failure = failure_of(error)
    return result


def _start_watchdog(driver_pid: int) -> None:
    # The parent may be multiprocessing's fork server, which outlives the driver
    # while workers hold it open: watch the driver itself.
    def watch() -> None:
        while True:
            time.sleep(_WATCHDOG_INTERVAL_S)
            try:
                os.kill(driver_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass  # alive, owned by someone else

    threading.Thread(target=watch, name="shuffle-worker-watchdog", daemon=True).start()
