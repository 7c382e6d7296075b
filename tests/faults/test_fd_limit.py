"""Few file descriptors: ``RLIMIT_NOFILE`` 64, with 1000 reduce partitions.

Each job runs in a subprocess that lowers its own limit before it starts a
context (workers inherit it). Expected: the job completes and is exact; the
bypass writer, which holds one open file per partition, is not chosen past
``spark.shuffle.sort.bypassMergeThreshold``; merges of spill files keep at most
the merge fan-in open at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from faults.conftest import executor_dirs

SCRIPT = textwrap.dedent("""
    import json, operator, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    from shuffle import Context

    local_dir, extra = sys.argv[1], json.loads(sys.argv[2])
    conf = {"spark.shuffle.sync": "false", "spark.executor.memory": "256m", "spark.task.maxFailures": "1", **extra}
    out = {}
    with Context(parallelism=2, conf=conf, local_dir=local_dir) as ctx:
        data = ctx.parallelize(range(30000), 4).map(lambda x: (x % 5000, x))
        sums = data.reduce_by_key(operator.add, 1000)
        result = dict(sums.collect())
        out["reduce_by_key"] = [sums.handle.kind, result == {k: sum(range(k, 30000, 5000)) for k in range(5000)},
                                ctx.last_job_metrics.stages[0].write.spill_count]
        moved = data.partition_by(1000)
        rows = moved.collect()
        out["partition_by"] = [moved.handle.kind, sorted(rows) == [(x % 5000, x) for x in sorted(range(30000),
                               key=lambda x: (x % 5000, x))], ctx.last_job_metrics.stages[0].write.spill_count]
    print(json.dumps(out))
""")


def run_job(tmp_path, conf):
    local = tmp_path / "local"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(local), json.dumps(conf)],
                          capture_output=True, text=True, timeout=300)
    assert executor_dirs(local) == []
    return proc


def assert_completes(proc, spilled):
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["reduce_by_key"][:2] == ["sort", True]           # 1000 > 200 partitions: no bypass
    assert out["partition_by"][:2] == ["serialized", True]
    if spilled:
        assert out["reduce_by_key"][2] > 0 and out["partition_by"][2] > 0


def test_a_job_of_1000_partitions_completes_with_64_file_descriptors(tmp_path):
    # A few spills per map task: merges happen, within the default fan-in.
    assert_completes(run_job(tmp_path, {"spark.shuffle.spill.numElementsForceSpillThreshold": "2000"}), True)


def test_many_spills_merge_within_a_configured_fan_in_under_64_file_descriptors(tmp_path):
    conf = {"spark.shuffle.spill.numElementsForceSpillThreshold": "100", "shuffle.sort.maxMergeFanIn": "16"}
    assert_completes(run_job(tmp_path, conf), True)


def test_many_spills_merge_within_the_default_fan_in_under_64_file_descriptors(tmp_path):
    proc = run_job(tmp_path, {"spark.shuffle.spill.numElementsForceSpillThreshold": "100"})
    assert "Too many open files" not in proc.stderr
    assert_completes(proc, True)
