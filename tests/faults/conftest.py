"""Shared fixtures of the reliability suite: contexts that are checked for leftovers.

Every test here ends with the same two checks, run by the fixtures:

* **processes**: no process started during the test outlives it. The test
  process is made a *child subreaper* for the test's duration
  (``prctl(PR_SET_CHILD_SUBREAPER)``), so a fetch process orphaned by a
  SIGKILLed worker is re-parented to us and still seen, instead of escaping
  to init. multiprocessing's fork server and resource tracker serve every
  context of the session and are the only processes allowed to stay.
* **files**: while a context runs, no spill file or commit temporary is left
  in any executor directory once a job has ended (:func:`temporaries`), and
  no data file sits there without its index (:func:`uncommitted`); once it
  is stopped, no executor directory is left at all.
"""

from __future__ import annotations

import ctypes
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import re
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import psutil
import pytest

from shuffle import Context

CONF = {
    "spark.shuffle.sync": "false",
    "spark.executor.memory": "256m",
    "spark.shuffle.io.retryWait": "10ms",
}

_PR_SET_CHILD_SUBREAPER = 36
_COMMIT_TEMP = re.compile(r"^shuffle_\d+_\d+_0\.(data|index|checksum\.[A-Z0-9]+)\.[0-9a-f]{32}$")
_DATA = re.compile(r"^shuffle_(\d+)_(\d+)_0\.data$")


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def session_helpers() -> set:
    """multiprocessing's fork server and resource tracker of this process: they serve every context."""
    pids = {getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
            getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)}
    return {pid for pid in pids if pid is not None}


def descendants() -> Dict[int, psutil.Process]:
    """Live (non-zombie) descendants of the test process, the session's helpers excluded."""
    helpers = session_helpers()
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid not in helpers and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    return found


def wait_for_no_new_processes(before: set, timeout: float = 10.0) -> List[psutil.Process]:
    """Processes started since ``before`` that are still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        new = [p for pid, p in descendants().items() if pid not in before]
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.05)


def executor_dirs(root: Path) -> List[Path]:
    return sorted(Path(root).glob("executor-*"))


def temporaries(root: Path) -> List[Path]:
    """Spill files and commit temporaries in any executor directory under ``root``."""
    return [p for d in executor_dirs(root) for p in d.iterdir()
            if p.name.startswith("temp_") or _COMMIT_TEMP.match(p.name)]


def uncommitted(root: Path) -> List[Path]:
    """Data files without their index (the commit marker) in any executor directory."""
    return [p for d in executor_dirs(root) for p in d.iterdir()
            if _DATA.match(p.name) and not p.with_suffix(".index").exists()]


def committed_indexes(root: Path, shuffle_id: int, map_id: int) -> List[Path]:
    """Every committed index of one map, over all executor directories."""
    return sorted(Path(root).glob(f"executor-*/shuffle_{shuffle_id}_{map_id}_0.index"))


def assert_clean(ctx: Context) -> None:
    """Between jobs: nothing temporary or half-committed in the context's directories."""
    assert temporaries(ctx.local_dir) == []
    assert uncommitted(ctx.local_dir) == []


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every test: no process started during it survives it (orphans included)."""
    _set_subreaper(True)
    before = set(descendants())
    try:
        yield
        alive = wait_for_no_new_processes(before)
        assert not alive, f"processes left running: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        _set_subreaper(False)


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[Callable[..., Context]]:
    """``make_ctx(parallelism=2, conf={...})``: a Context under ``tmp_path``; checked for files at teardown."""
    made: List[Context] = []

    def make(parallelism: int = 2, conf: Optional[Dict[str, str]] = None, keep_files: bool = False) -> Context:
        ctx = Context(parallelism=parallelism, conf={**CONF, **(conf or {})},
                      local_dir=tmp_path / f"ctx{len(made)}", keep_files=keep_files)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.stop()
        assert executor_dirs(ctx.local_dir) == [] or ctx.keep_files
        assert temporaries(ctx.local_dir) == []


def marker_path(tmp_path: Path, name: str) -> str:
    return str(tmp_path / name)


def fired(marker: str) -> bool:
    return os.path.exists(marker + ".fired")
