"""Faults injected inside worker processes, by functions the tests ship to them.

A test maps its records through one of these functions. The first task to
run it *claims* the marker file (``O_CREAT | O_EXCL``: exactly one task in
the whole job wins, whatever process it runs in), patches one call site of
the shuffle code in its own worker, and lets the records through. When the
write reaches that call site the worker SIGKILLs itself (or the call raises
``ENOSPC``), after touching ``<marker>.fired`` so the test knows the fault
really happened where it was meant to. Other tasks, and every retry, run
unpatched. A SIGKILLed worker takes its patch with it; an ``ENOSPC`` patch
undoes itself after firing, so the worker stays healthy for later tasks.

This module is imported by workers (``tests/`` is on their ``sys.path``,
inherited from the test process), so everything here is module-level.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterator


def claim(marker: str) -> bool:
    """True for the first caller anywhere; False for everyone after."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _fire(marker: str) -> None:
    Path(marker + ".fired").touch()


def _die(marker: str) -> None:
    _fire(marker)
    os.kill(os.getpid(), signal.SIGKILL)


def _enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# ---------------------------------------------------------------- SIGKILL sites

def _kill_while_spilling(marker: str) -> None:
    """The first spill file write: half the block reaches the disk, then the process dies."""
    from shuffle.write import spill_file

    real_open = open

    class HalfWriter:
        def __init__(self, path: Any, mode: str) -> None:
            self._file = real_open(path, mode)

        def write(self, block: bytes) -> int:
            self._file.write(block[: len(block) // 2])
            self._file.flush()
            _die(marker)
            return 0  # never reached

        def close(self) -> None:
            self._file.close()

    spill_file.open = lambda path, mode="r", *a, **k: HalfWriter(path, mode)  # type: ignore[attr-defined]


def _kill_while_merging(marker: str) -> None:
    """The second append to the map's output file while spill files exist: the merge is under way.

    Appends are ``write`` (the sort writer encodes merged records) or
    ``copy_range`` (the serialized writer concatenates spill segments).
    """
    from shuffle.write import output

    cls = output.MapOutputWriter
    calls = [0]

    def dying(real: Callable[..., None]) -> Callable[..., None]:
        def append(self: Any, *args: Any) -> None:
            real(self, *args)
            if any(p.name.startswith("temp_") for p in Path(self.resolver.local_dir).iterdir()):
                calls[0] += 1
                if calls[0] == 2:
                    self._file.flush()
                    _die(marker)
        return append

    cls.write = dying(cls.write)  # type: ignore[method-assign]
    cls.copy_range = dying(cls.copy_range)  # type: ignore[method-assign]


def _kill_between_renames(marker: str) -> None:
    """The commit has renamed the data file into place; the process dies before the index rename."""
    real_replace = os.replace

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        if str(dst).endswith(".index"):
            assert Path(str(dst)[: -len(".index")] + ".data").exists()
            _die(marker)
        real_replace(src, dst, *a, **k)

    os.replace = replace  # type: ignore[assignment]


KILL_SITES = {
    "spill": _kill_while_spilling,
    "merge": _kill_while_merging,
    "commit": _kill_between_renames,
}


def kill_at(site: str, marker: str) -> Callable[[int, Iterator[Any]], Iterator[Any]]:
    """A ``map_partitions_with_index`` function: the first task to run it dies at ``site``."""
    def run(split: int, records: Iterator[Any]) -> Iterator[Any]:
        if claim(marker):
            KILL_SITES[site](marker)
        return records
    return run


# ---------------------------------------------------------------- ENOSPC sites

def _full_disk_at_commit(marker: str) -> None:
    """The commit's first write (the index temporary) raises ENOSPC once, then the patch is undone."""
    from shuffle import resolver

    cls = resolver.IndexShuffleBlockResolver
    real = cls._write_file

    def write_file(self: Any, path: Any, payload: bytes) -> None:
        cls._write_file = real  # type: ignore[method-assign]
        with open(path, "wb") as f:  # a partial file, as a full disk leaves it
            f.write(payload[: len(payload) // 2])
        _fire(marker)
        raise _enospc(path)

    cls._write_file = write_file  # type: ignore[method-assign]


def full_disk_at_commit(marker: str) -> Callable[[int, Iterator[Any]], Iterator[Any]]:
    """A ``map_partitions_with_index`` function: the first task's commit finds the disk full."""
    def run(split: int, records: Iterator[Any]) -> Iterator[Any]:
        if claim(marker):
            _full_disk_at_commit(marker)
        return records
    return run


# ---------------------------------------------------------------- fetch processes

def _bump(counter: str) -> int:
    """Add one to the count in ``counter`` (locked: every process shares it); the count before."""
    import fcntl

    with open(counter, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        before = int(f.read() or 0)
        f.seek(0)
        f.truncate()
        f.write(str(before + 1))
    return before


def reads(counter: str) -> int:
    try:
        with open(counter) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


def sigkill_first(counter: str, n: int, local_dir: str, shuffle_id: int, map_id: int, start: int, end: int):
    """A fetch process's read function: the first ``n`` reads anywhere SIGKILL their process."""
    from shuffle.read.block_io import read_range

    if _bump(counter) < n:
        os.kill(os.getpid(), signal.SIGKILL)
    return read_range(local_dir, shuffle_id, map_id, start, end)


def kill_fetches(counter: str, n: int) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """A ``map_partitions`` function for the reduce side: this worker's fetch processes use
    :func:`sigkill_first` (patched before the shuffle read starts: the read is lazy)."""
    def run(records: Iterator[Any]) -> Iterator[Any]:
        import functools

        from shuffle.read import fetcher

        cls = fetcher.ShuffleBlockFetcher
        if not getattr(cls, "_faults_patched", False):
            real_init = cls.__init__

            def init(self: Any, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("_read_fn", functools.partial(sigkill_first, counter, n))
                real_init(self, *args, **kwargs)

            cls.__init__ = init  # type: ignore[method-assign]
            cls._faults_patched = True  # type: ignore[attr-defined]
        return records
    return run
