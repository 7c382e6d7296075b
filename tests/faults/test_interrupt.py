"""Ctrl-C during a job: the terminal sends SIGINT to the whole process group.

Expected: the driver raises KeyboardInterrupt; every worker and every fetch
process ends; temporary and spill files are removed (with ``keep_files``,
committed outputs stay and nothing else). (tests/test_engine_faults.py sends
SIGINT to the driver alone during a map stage with no spill; these send it
to the group, during a map stage that is spilling and during a reduce stage
reading through fetch processes.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from faults.conftest import executor_dirs, temporaries

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from shuffle import Context

    local_dir, phase, keep = sys.argv[1], sys.argv[2], sys.argv[3] == "keep"
    started = os.path.join(local_dir, "..", "started")

    def slow_map(split, records):
        open(started, "w").close()
        for record in records:
            time.sleep(0.0005)
            yield record

    def slow_reduce(split, records):
        for record in records:
            open(started, "w").close()
            time.sleep(0.01)
            yield record

    conf = {"spark.shuffle.sync": "false", "spark.executor.memory": "256m",
            "spark.shuffle.spill.numElementsForceSpillThreshold": "500",
            "spark.shuffle.readHostLocalDisk": "false", "spark.reducer.maxSizeInFlight": "2k",
            "shuffle.writer.force": "sort"}
    with Context(parallelism=2, conf=conf, local_dir=local_dir, keep_files=keep) as ctx:
        data = ctx.parallelize([(x % 997, x) for x in range(60000)], 4)
        if phase == "map":
            data.map_partitions_with_index(slow_map).partition_by(8).count()
        else:
            moved = data.partition_by(8)
            moved.count()                      # map outputs first, quickly
            moved.map_partitions_with_index(slow_reduce).count()
""")


def _interrupt(tmp_path: Path, phase: str, keep: str):
    local = tmp_path / "ctx"
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(local), phase, keep],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.02)
        time.sleep(0.5)
        family = psutil.Process(proc.pid).children(recursive=True)
        parents = {p.pid: p.ppid() for p in family}
        spills = list(local.glob("executor-*/temp_*"))
        os.killpg(proc.pid, signal.SIGINT)                 # what Ctrl-C in a terminal does
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _, alive = psutil.wait_procs(family, timeout=10)
    # Workers are children of the driver's fork server; deeper processes were started by workers.
    deep = [pid for pid, ppid in parents.items() if ppid != proc.pid and parents.get(ppid) != proc.pid]
    return proc, stderr, deep, alive, spills, local


def test_ctrl_c_while_maps_spill_ends_every_worker_and_removes_spills(tmp_path):
    proc, stderr, _, alive, spills, local = _interrupt(tmp_path, "map", "keep")
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr, stderr[-3000:]
    assert not alive, [p.pid for p in alive]
    assert spills, "the maps were not spilling when interrupted"
    assert temporaries(local) == []                         # kept outputs only, no spill or temp file
    assert all(p.name.endswith((".data", ".index", ".lock")) or ".checksum." in p.name
               for d in executor_dirs(local) for p in d.iterdir())


def test_ctrl_c_while_reducers_fetch_ends_every_fetch_process_and_removes_files(tmp_path):
    proc, stderr, deep, alive, _, local = _interrupt(tmp_path, "reduce", "nokeep")
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr, stderr[-3000:]
    assert deep, "no fetch process was running when interrupted"
    assert not alive, [p.pid for p in alive]
    assert executor_dirs(local) == []
