"""The disk fills up (ENOSPC) during a spill, a merge or a commit.

Expected: ``OutOfDiskError`` naming the directory and the bytes the failing
write needed; no partial file of the failed attempt left; the outputs
committed before intact and readable; the engine does not retry the task
(every executor shares the disk), and the context still works once there is
room again. ENOSPC is injected at the call sites: the ``open`` a module
writes its files with returns a file whose writes fail once a small budget
of bytes is used up (a partial write reaches the disk first, as on a real
full disk), and the kernel copy of spill segments fails outright.
(tests/test_resolver.py covers ENOSPC inside the resolver's commit alone.)
"""

from __future__ import annotations

import builtins
import errno
import operator
from collections import defaultdict

import pytest

from shuffle import (Aggregator, HashPartitioner, MsgpackSerializer, ShuffleDependency, SortShuffleManager,
                     TaskFailedError)
from shuffle.errors import OutOfDiskError
from shuffle.write import bypass, output, serialized_sorter, spill_file
from shuffle import resolver as resolver_module

from faults.conftest import assert_clean, temporaries
from faults.inject import full_disk_at_commit

PARTITIONS = 4
FORCE_SPILLS = {"spark.shuffle.spill.numElementsForceSpillThreshold": "500", "spark.shuffle.sync": "false"}


class FullFile:
    """A file whose writes fail with ENOSPC once ``budget`` bytes went through."""

    def __init__(self, file, budget):
        self._file = file
        self._budget = budget

    def write(self, data):
        size = memoryview(data).nbytes
        if size > self._budget:
            self._file.write(bytes(memoryview(data)[: self._budget]))
            self._budget = 0
            raise OSError(errno.ENOSPC, "No space left on device", self._file.name)
        self._budget -= size
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def fill_disk_for(monkeypatch, module, budget=64):
    """Files ``module`` opens for writing from now on hit a full disk after ``budget`` bytes."""
    def full_open(path, mode="r", *args, **kwargs):
        file = builtins.open(path, mode, *args, **kwargs)
        return FullFile(file, budget) if any(c in mode for c in "wa") else file
    monkeypatch.setattr(module, "open", full_open, raising=False)


def fail_kernel_copies(monkeypatch):
    def copy(src_fd, dst_fd, position, count):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(output, "_copy_file_range", copy)


def records(map_id):
    return [(i % 1500, i * (map_id + 1)) for i in range(4000)]


# writer kind, where the disk fills, how to fill it
SITES = {
    "sort-spill": ("sort", lambda mp: fill_disk_for(mp, spill_file)),
    "sort-merge": ("sort", lambda mp: fill_disk_for(mp, output)),        # merged records into the output
    "serialized-spill": ("serialized", lambda mp: fill_disk_for(mp, serialized_sorter)),
    "serialized-merge": ("serialized", fail_kernel_copies),              # spill segments copied into it
    "bypass-partition-file": ("bypass", lambda mp: fill_disk_for(mp, bypass)),
    "bypass-merge": ("bypass", fail_kernel_copies),
    "commit": ("bypass", lambda mp: fill_disk_for(mp, resolver_module, budget=0)),
}


def _manager(tmp_path, kind):
    conf = {**FORCE_SPILLS, "shuffle.writer.force": kind}
    manager = SortShuffleManager(conf, local_dir=tmp_path / "local")
    aggregator = Aggregator.from_reduce(operator.add) if kind == "sort" else None
    dep = ShuffleDependency(0, 2, HashPartitioner(PARTITIONS), MsgpackSerializer(),
                            aggregator=aggregator, map_side_combine=aggregator is not None)
    return manager, manager.register_shuffle(dep)


def _read_all(manager, handle, maps=2):
    with manager.get_reader(handle, 0, PARTITIONS, 0, maps) as reader:
        return sorted(reader.read())


@pytest.mark.parametrize("site", list(SITES))
def test_a_full_disk_is_an_out_of_disk_error_and_leaves_earlier_outputs_intact(tmp_path, monkeypatch, site):
    kind, fill = SITES[site]
    manager, handle = _manager(tmp_path, kind)
    resolver = manager.resolver
    first = manager.get_writer(handle, 0).write(records(0))
    before = _read_all(manager, handle, maps=1)

    with monkeypatch.context() as mp:
        fill(mp)
        with pytest.raises(OutOfDiskError) as info:
            manager.get_writer(handle, 1).write(records(1))

    error = info.value
    assert error.directory == str(resolver.local_dir)
    assert isinstance(error.needed, int) and error.needed > 0, error
    assert f"{error.needed} bytes needed" in str(error) and str(resolver.local_dir) in str(error)
    assert isinstance(error, OSError) and isinstance(error.__cause__, OSError)
    assert error.__cause__.errno == errno.ENOSPC
    assert temporaries(tmp_path) == [] and not list(resolver.local_dir.glob("temp_*"))
    assert not resolver.index_file(0, 1).exists()                       # nothing of map 1 committed
    assert resolver.check_index_and_data(0, 0, PARTITIONS) == list(first.partition_lengths)
    assert _read_all(manager, handle, maps=1) == before                # map 0 still reads back whole
    # Room again: the same map commits, and both read back.
    manager.get_writer(handle, 1).write(records(1))
    assert _read_all(manager, handle, maps=1) == before and _read_all(manager, handle)
    manager.stop()


def test_a_full_disk_while_the_reducer_spills_is_an_out_of_disk_error_and_leaves_no_spill(tmp_path, monkeypatch):
    manager, handle = _manager(tmp_path, "sort")
    for map_id in range(2):
        manager.get_writer(handle, map_id).write(records(map_id))
    fill_disk_for(monkeypatch, spill_file)
    with pytest.raises(OutOfDiskError) as info:
        _read_all(manager, handle)
    assert info.value.directory == str(manager.local_dir) and info.value.needed > 0
    assert not list(manager.local_dir.glob("temp_*"))
    monkeypatch.undo()
    sums = defaultdict(int)
    for map_id in range(2):
        for k, v in records(map_id):
            sums[k] += v
    assert dict(_read_all(manager, handle)) == dict(sums)
    manager.stop()


def test_the_engine_does_not_retry_a_task_that_ran_out_of_disk(make_ctx, tmp_path):
    ctx = make_ctx(2)
    marker = str(tmp_path / "enospc")
    data = [(x % 11, x) for x in range(2000)]
    sums = ctx.parallelize(data, 4).map_partitions_with_index(full_disk_at_commit(marker)).reduce_by_key(
        operator.add, 3)

    # The injected fault fires once: a retry would succeed, so an error here means no retry.
    with pytest.raises(TaskFailedError) as info:
        sums.collect()

    error = info.value
    assert error.exc_type == "OutOfDiskError" and "not retried" in str(error)
    cause = error.__cause__
    assert isinstance(cause, OutOfDiskError) and cause.needed == (3 + 1) * 8   # the index it could not write
    assert cause.directory.startswith(str(ctx.local_dir)) and cause.directory in error.message
    assert_clean(ctx)
    expected = defaultdict(int)
    for k, v in data:
        expected[k] += v
    assert dict(sums.collect()) == dict(expected)                     # room again: the context works
    assert_clean(ctx)
