"""A pool of fetch processes: they read block ranges of other executors' map outputs.

This plays the part of Spark's network transport and the serving executor's
block manager: a request names a local directory, a shuffle and some reduce
ranges; a fetch process reads them by index offsets (``block_io.read_ranges``),
checks them against the checksum file and sends back the bytes with one
verdict per block. Nothing crosses the process boundary but plain values: a
process opens its own files and never uses a handle of its parent, and a read
error comes back as text rather than as an exception.

Each process serves one request at a time over its own pipe, so a request's
age is its time in that process. The pool owns the processes' lives: started
lazily from a ``multiprocessing`` context (``forkserver`` or ``spawn``), killed
when they exceed the timeout, reaped when they die, replaced on demand, and
all stopped and reaped by :meth:`FetchPool.close`. It never retries anything
and never decides what a failure means: it reports, the fetcher decides.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple, Optional, Sequence, Tuple

from shuffle.errors import ConfigError
from shuffle.read.block_io import RangeResult, ReadFn, read_ranges
from shuffle.processes import start_process

__all__ = ["FetchPool", "PoolReply"]

logger = logging.getLogger(__name__)

# How long close() lets an idle process exit on its own before killing it.
_EXIT_GRACE_S = 2.0


def _serve(conn: Connection, read_fn: Optional[ReadFn]) -> None:
    """A fetch process: answer requests until the pipe closes or None arrives."""
    # Ctrl-C reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        request_id, local_dir, shuffle_id, ranges, verify = message
        results = read_ranges(read_fn, local_dir, shuffle_id, ranges, verify)
        # Bytes go raw after a small pickled header: no pickling copy of the data.
        header = [replace(r, data=None) for r in results]
        try:
            conn.send((request_id, header))
            for r in results:
                if r.data is not None:
                    conn.send_bytes(r.data)
        except OSError:  # the parent is gone
            return


class PoolReply(NamedTuple):
    """The answer to one request: ``results`` (one per range, in order) or a ``failure`` text."""

    request_id: int
    results: Optional[list[RangeResult]]
    failure: Optional[str]


@dataclass
class _Worker:
    process: Any  # a multiprocessing BaseProcess
    conn: Connection
    request_id: Optional[int] = None
    deadline: float = float("inf")


class FetchPool:
    """Up to ``size`` fetch processes; one request in flight per process.

    Call order: :meth:`submit` while :attr:`free_slots` > 0, :meth:`poll` for
    replies, :meth:`close` once (idempotent). A process that dies or does not
    answer within ``timeout`` seconds is killed and reaped, and its request
    comes back from :meth:`poll` as a failure; a new process takes its slot at
    the next :meth:`submit`. ``read_fn`` (a picklable module-level callable)
    replaces the processes' read function: for fault-injection tests only.
    """

    def __init__(self, size: int, start_method: str, timeout: float, read_fn: Optional[ReadFn] = None) -> None:
        if size < 1:
            raise ConfigError("shuffle.fetch.processes", size, "at least 1")
        methods = multiprocessing.get_all_start_methods()
        if start_method not in methods:
            raise ConfigError("shuffle.fetch.startMethod", start_method, "one of " + ", ".join(methods))
        self.size = size
        self.timeout = timeout
        self._context = multiprocessing.get_context(start_method)
        self._read_fn = read_fn
        self._workers: list[_Worker] = []
        self._started_count = 0
        self._closed = False

    @property
    def free_slots(self) -> int:
        """Requests that can be submitted now (slots without a process count as free)."""
        return self.size - sum(1 for w in self._workers if w.request_id is not None)

    @property
    def busy(self) -> bool:
        return any(w.request_id is not None for w in self._workers)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live processes (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers]

    @property
    def processes_started(self) -> int:
        """How many processes this pool has started, replacements included."""
        return self._started_count

    def submit(
        self, request_id: int, local_dir: str, shuffle_id: int, ranges: Sequence[Tuple[int, int, int]], verify: bool,
        address: Any = None,
    ) -> None:
        """Send one request of ``(map_id, start, end)`` ranges to an idle process.

        ``address`` (the blocks' ``BlockManagerId``) is not needed here: every
        ``local_dir`` is on this machine. Transports that route by it take it too.
        """
        if self._closed:
            raise RuntimeError("the fetch pool is closed")
        if self.free_slots <= 0:
            raise RuntimeError("no free fetch process; wait for a reply first")
        message = (request_id, local_dir, shuffle_id, list(ranges), verify)
        worker = self._idle_worker()
        try:
            worker.conn.send(message)
        except OSError as e:
            # It died while idle: take a fresh one. A second failure is a real problem.
            logger.warning("fetch process %d was gone (%s); starting another", worker.process.pid, e)
            self._reap(worker, kill=True)
            worker = self._start()
            worker.conn.send(message)
        worker.request_id = request_id
        worker.deadline = time.monotonic() + self.timeout

    def _idle_worker(self) -> _Worker:
        for worker in self._workers:
            if worker.request_id is None:
                return worker
        return self._start()

    def _start(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(child_end, self._read_fn), name="shuffle-fetch", daemon=True
        )
        try:
            start_process(process)
        except BaseException:
            parent_end.close()
            child_end.close()
            raise
        # Only the child may hold this end, so the child sees EOF when we close ours.
        child_end.close()
        worker = _Worker(process, parent_end)
        self._workers.append(worker)
        self._started_count += 1
        logger.debug("started fetch process %d", process.pid)
        return worker

    def poll(self, timeout: Optional[float]) -> list[PoolReply]:
        """Replies and failures that arrive within ``timeout`` seconds (None: until one does).

        Also returns early when a busy process passes its deadline; it is
        killed and its request reported as failed.
        """
        if self._closed:
            return []
        now = time.monotonic()
        deadlines = [w.deadline for w in self._workers if w.request_id is not None]
        limit = timeout
        if deadlines:
            until_deadline = max(0.0, min(deadlines) - now)
            limit = until_deadline if limit is None else min(limit, until_deadline)
        if not self._workers:
            if limit:
                time.sleep(limit)
            return []
        waitables: list[Any] = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        ready = set(wait(waitables, limit))
        replies: list[PoolReply] = []
        for worker in list(self._workers):
            if worker.conn in ready:
                reply = self._receive(worker)
                if reply is not None:
                    replies.append(reply)
            elif worker.process.sentinel in ready:
                self._lost(worker, "exited", replies)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.request_id is not None and worker.deadline <= now:
                self._lost(worker, f"did not answer within {self.timeout:g}s (spark.network.timeout)", replies)
        return replies

    def _receive(self, worker: _Worker) -> Optional[PoolReply]:
        if worker.request_id is None:  # an idle process has nothing to say: readable means EOF
            self._reap(worker, kill=True)
            return None
        try:
            request_id, header = worker.conn.recv()
            results = [r if r.error is not None else replace(r, data=worker.conn.recv_bytes()) for r in header]
        except (EOFError, OSError):
            lost: list[PoolReply] = []
            self._lost(worker, "exited", lost)
            return lost[0] if lost else None
        worker.request_id = None
        worker.deadline = float("inf")
        return PoolReply(request_id, results, None)

    def _lost(self, worker: _Worker, what: str, replies: list[PoolReply]) -> None:
        request_id = worker.request_id
        pid = worker.process.pid
        code = self._reap(worker, kill=True)
        how = f"exited with code {code}" if what == "exited" else f"{what}; killed"
        logger.warning("fetch process %d %s", pid, how)
        if request_id is not None:
            replies.append(PoolReply(request_id, None, f"fetch process {pid} {how}"))

    def _reap(self, worker: _Worker, kill: bool) -> Optional[int]:
        """Stop (killing if asked or if it lingers), join and release one process; its exit code."""
        if worker in self._workers:
            self._workers.remove(worker)
        worker.conn.close()
        process = worker.process
        if kill and process.exitcode is None:
            process.kill()
        process.join(None if kill else _EXIT_GRACE_S)
        if process.exitcode is None:
            process.kill()
            process.join()
        code = process.exitcode
        process.close()
        return code

    def close(self) -> None:
        """Stop and reap every process. Idempotent; safe in ``finally`` and finalizers."""
        if self._closed:
            return
        self._closed = True
        workers, self._workers = self._workers, []
        # Busy ones are killed (their answers are no longer wanted); idle ones see EOF and exit.
        for worker in workers:
            worker.conn.close()
            if worker.request_id is not None and worker.process.exitcode is None:
                worker.process.kill()
        for worker in workers:
            self._reap(worker, kill=False)
        if workers:
            logger.debug("stopped %d fetch processes", len(workers))

    def __repr__(self) -> str:
        return f"FetchPool(size={self.size}, live={len(self._workers)}, closed={self._closed})"
