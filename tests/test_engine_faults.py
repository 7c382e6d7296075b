"""The engine under failures: task retries, dead workers, lost map outputs, Ctrl-C, clean shutdown."""

import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from shuffle import Context, ShuffleError, TaskFailedError

CONF = {"spark.shuffle.sync": "false", "spark.executor.memory": "256m"}


def children():
    return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


def fail_once(marker: str):
    """A map function that raises the first time any task runs it, then works."""
    def f(x):
        if x == 7 and not os.path.exists(marker):
            open(marker, "w").close()
            raise ValueError("transient failure")
        return (x % 5, x)
    return f


def die_once(marker: str):
    def f(x):
        if x == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(17)
        return (x % 5, x)
    return f


@pytest.fixture
def ctx(tmp_path):
    with Context(parallelism=2, conf=CONF, local_dir=tmp_path / "local") as context:
        yield context


def expected_sums(n=100):
    return {k: sum(x for x in range(n) if x % 5 == k) for k in range(5)}


def test_a_task_that_fails_once_succeeds_on_retry(ctx, tmp_path):
    result = dict(ctx.parallelize(range(100), 4).map(fail_once(str(tmp_path / "m"))).reduce_by_key(operator.add).collect())
    assert result == expected_sums()
    map_stage = ctx.last_job_metrics.stages[0]
    assert map_stage.tasks == 4 and map_stage.attempts == 5


def test_a_worker_killed_mid_task_is_replaced_and_its_task_rerun(ctx, tmp_path):
    before = {p.pid for p in children()}
    result = dict(ctx.parallelize(range(100), 4).map(die_once(str(tmp_path / "m"))).reduce_by_key(operator.add).collect())
    assert result == expected_sums()
    after = {p.pid for p in children()}
    assert before - after, "the dead worker should be gone"
    assert ctx.parallelize(range(10), 2).count() == 10      # the replacement works


def test_a_task_that_always_fails_reaches_the_user_with_its_message_and_traceback(ctx):
    def broken(x):
        raise KeyError(f"no such thing: {x}")

    with pytest.raises(TaskFailedError) as info:
        ctx.parallelize(range(10), 2).map(broken).collect()
    error = info.value
    assert error.exc_type == "KeyError" and "no such thing" in error.message
    assert "broken" in error.traceback_text and "4 attempts" in str(error)
    assert isinstance(error.__cause__, KeyError)
    assert ctx.parallelize(range(3), 1).collect() == [0, 1, 2]   # the context still works


def test_a_deleted_map_output_reruns_just_that_map(ctx):
    ds = ctx.parallelize(range(100), 4).map(lambda x: (x % 5, x)).reduce_by_key(operator.add, 3)
    assert dict(ds.collect()) == expected_sums()
    data_files = sorted(ctx.local_dir.glob("executor-*/shuffle_*_2_0.data"))
    assert len(data_files) == 1
    data_files[0].unlink()
    assert dict(ds.collect()) == expected_sums()
    kinds = [(s.kind, s.tasks) for s in ctx.last_job_metrics.stages]
    assert ("map", 1) in kinds, kinds


def test_a_function_that_cannot_be_pickled_is_named(ctx):
    import threading

    lock = threading.Lock()

    def uses_a_lock(x):
        with lock:
            return x

    with pytest.raises(ShuffleError, match="uses_a_lock"):
        ctx.parallelize(range(4), 2).map(uses_a_lock).collect()


def test_no_child_process_or_file_survives_the_context(tmp_path):
    before = {p.pid for p in children()}
    with Context(parallelism=2, conf=CONF) as context:
        local_dir = context.local_dir
        context.parallelize(range(1000), 4).map(lambda x: (x % 7, 1)).reduce_by_key(operator.add).collect()
        assert {p.pid for p in children()} - before
    deadline = time.time() + 5
    while {p.pid for p in children()} - before - _forkserver_pids() and time.time() < deadline:
        time.sleep(0.05)
    assert not ({p.pid for p in children()} - before - _forkserver_pids())
    assert not local_dir.exists()
    with pytest.raises(ShuffleError, match="stopped"):
        context.parallelize([1])


def test_keep_files_keeps_shuffle_outputs_but_not_temp_files(tmp_path):
    with Context(parallelism=1, conf=CONF, local_dir=tmp_path, keep_files=True) as context:
        context.parallelize(range(100), 2).map(lambda x: (x, x)).group_by_key(2).count()
    kept = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert any(name.endswith(".index") for name in kept)
    assert not any(name.startswith("temp_") for name in kept)


def _forkserver_pids():
    """multiprocessing's forkserver and resource tracker serve every context of this process and outlive one."""
    return {p.pid for p in children() if any(name in " ".join(p.cmdline()) for name in ("forkserver", "resource_tracker"))}


SIGINT_SCRIPT = textwrap.dedent("""
    import sys, time
    from shuffle import Context
    def slow(x):
        time.sleep(0.05)
        return (x % 3, x)
    with Context(parallelism=2, conf={"spark.shuffle.sync": "false"}, local_dir=sys.argv[1]) as ctx:
        print("started", flush=True)
        ctx.parallelize(range(100000), 8).map(slow).reduce_by_key(lambda a, b: a + b).collect()
""")


def test_sigint_during_a_job_stops_workers_and_removes_files(tmp_path):
    local = tmp_path / "ctx"
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT, str(local)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(1.0)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert family
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive
    assert not any(Path(local).glob("executor-*"))


def test_a_failed_job_leaves_nothing_running_into_the_next_one(ctx):
    import time as _time

    def slow_then_fail(x):
        if x == 0:
            raise ValueError("first partition fails")
        _time.sleep(0.3)
        return "STALE"

    started = _time.time()
    with pytest.raises(TaskFailedError):
        ctx.parallelize(range(12), 12).map(slow_then_fail).collect()
    assert _time.time() - started < 3.0          # the other tasks were abandoned, not waited for
    assert ctx.parallelize(["a", "b"], 2).collect() == ["a", "b"]


def test_reading_through_fetch_processes_works_from_workers(tmp_path):
    conf = {**CONF, "spark.shuffle.readHostLocalDisk": "false", "spark.shuffle.io.retryWait": "10ms"}
    with Context(parallelism=2, conf=conf, local_dir=tmp_path) as context:
        result = dict(context.parallelize(range(100), 4).map(lambda x: (x % 5, x)).reduce_by_key(operator.add, 3).collect())
    assert result == expected_sums()


def test_a_failing_reduce_task_returns_its_memory_and_spill_files(tmp_path):
    conf = {**CONF, "spark.executor.memory": "64m", "spark.task.maxFailures": "1",
            "spark.shuffle.spill.numElementsForceSpillThreshold": "100"}

    def boom(kv):
        raise RuntimeError("reduce side failure")

    with Context(parallelism=1, conf=conf, local_dir=tmp_path) as context:
        grouped = context.parallelize([(i % 50, i) for i in range(5000)], 2).group_by_key(1)
        with pytest.raises(TaskFailedError):
            grouped.map(boom).collect()
        assert not list(tmp_path.glob("executor-*/temp_shuffle_*"))
        assert context.parallelize(range(5), 1).map(lambda x: x).count() == 5
