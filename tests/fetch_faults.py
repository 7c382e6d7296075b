"""Faulty read functions for fetch processes (``ShuffleBlockFetcher(_read_fn=...)``).

Each takes a counter file first (bind it with ``functools.partial``), then
``read_range``'s arguments. The counter file is shared by every fetch process,
so "the first N reads" means the first N reads anywhere; it is locked while
counted. This module is imported by spawned fetch processes: ``tests/`` is on
their ``sys.path`` because it is on the test process's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from shuffle.read.block_io import read_range


def bump(counter: str) -> int:
    """Add one to the count in ``counter``; return the count before."""
    with open(counter, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        before = int(text) if text else 0
        f.seek(0)
        f.truncate()
        f.write(str(before + 1))
    return before


def count(counter: str) -> int:
    """How many reads went through ``counter`` so far."""
    try:
        with open(counter) as f:
            text = f.read()
    except FileNotFoundError:
        return 0
    return int(text) if text else 0


def counting(counter, local_dir, shuffle_id, map_id, start, end):
    """Count the read, then read normally."""
    bump(counter)
    return read_range(local_dir, shuffle_id, map_id, start, end)


def recording(log, local_dir, shuffle_id, map_id, start, end):
    """Append ``map_id start end`` to ``log``, then read normally."""
    with open(log, "a") as f:
        f.write(f"{map_id} {start} {end}\n")
    return read_range(local_dir, shuffle_id, map_id, start, end)


def fail_first(counter, n, local_dir, shuffle_id, map_id, start, end):
    """The first ``n`` reads raise a transient OSError."""
    if bump(counter) < n:
        raise OSError(errno.EIO, "injected transient read error")
    return read_range(local_dir, shuffle_id, map_id, start, end)


def exit_first(counter, n, local_dir, shuffle_id, map_id, start, end):
    """The first ``n`` reads kill their fetch process on the spot."""
    if bump(counter) < n:
        os._exit(1)
    return read_range(local_dir, shuffle_id, map_id, start, end)


def hang_first(counter, n, local_dir, shuffle_id, map_id, start, end):
    """The first ``n`` reads never return."""
    if bump(counter) < n:
        time.sleep(3600)
    return read_range(local_dir, shuffle_id, map_id, start, end)


def flip_first(counter, n, local_dir, shuffle_id, map_id, start, end):
    """The first ``n`` reads flip a bit of the first byte "in transfer" (the file is untouched)."""
    offsets, data = read_range(local_dir, shuffle_id, map_id, start, end)
    if bump(counter) < n:
        data = bytes([data[0] ^ 0x01]) + data[1:]
    return offsets, data
