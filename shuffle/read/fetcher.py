"""``ShuffleBlockFetcher``: hands a reducer every block of its plan, as Spark's ShuffleBlockFetcherIterator.

It owns the fetch side of a reduce task: splitting the plan into blocks read
in-process and blocks fetched by the pool of fetch processes, sizing requests,
flow control (bytes, requests and blocks per address in flight), retries of
failed reads, checksum verification with Spark's corruption diagnosis, and the
reader's fetch metrics. It must never yield a block whose bytes failed
verification, never yield a block twice, and never leave a fetch process
running once it is closed, exhausted or failed.

Where a block is read:

- *local* (the reducer's own executor id): in this process.
- *host-local* (another executor on the same host), when
  ``spark.shuffle.readHostLocalDisk`` is true (Spark's default): in this
  process too. Spark reads a same-host executor's files straight from its
  disk directories instead of asking it over the network; on one machine a
  "remote" executor's files are just another directory, so going through a
  fetch process would only add a copy and a context switch.
- *remote* (anything else): by the :class:`~shuffle.read.fetch_pool.FetchPool`,
  started only when there is such a block.

Contiguous reduce ids of one map form one *range*, read with one ``pread``
and split by the index offsets. Remote ranges are grouped per address into
requests of about ``maxSizeInFlight / 5`` bytes and at most
``maxBlocksInFlightPerAddress`` blocks, sent in random order (to spread the
load over addresses, as Spark does) while bytes in flight stay within
``maxSizeInFlight`` (one larger request only when nothing else is in flight),
requests within ``maxReqsInFlight`` and blocks per address within
``maxBlocksInFlightPerAddress``. A block stays *in flight* until it is handed
to the consumer, so those limits bound the memory the fetcher holds.

Failures, as Spark handles them:

- An ``OSError`` of a remote read (missing or short file, bad index), or a
  fetch process that dies or misses ``spark.network.timeout``, is retried up to
  ``spark.shuffle.io.maxRetries`` times ``spark.shuffle.io.retryWait`` apart
  (only the failed ranges), then raises ``FetchFailedError``. Local and
  host-local reads are not retried: the file is where it is (Spark fails them
  at once too).
- With ``spark.shuffle.detectCorrupt``, every block is checked against the map's
  checksum file before it is handed out. A corrupt remote block is fetched once
  more (``corrupt_blocks_retried``); a corrupt local block, or a remote one that
  is corrupt twice, raises ``CorruptBlockError`` with the diagnosis.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import weakref
from collections import defaultdict, deque
from dataclasses import dataclass
from itertools import count
from typing import Deque, Dict, Iterator, List, Optional, Tuple, TypeVar

from shuffle.conf import ShuffleConf
from shuffle.errors import ConfigError, CorruptBlockError, FetchFailedError, ShuffleError
from shuffle.map_output import BlockManagerId
from shuffle.metrics import ReadMetrics
from shuffle.read.block_io import RangeResult, ReadFn, Verdict, read_ranges
from shuffle.read.fetch_plan import BlockRange, FetchRequest, Plan, split_plan
from shuffle.read.fetch_pool import FetchPool, PoolReply

__all__ = ["FetchedBlock", "ShuffleBlockFetcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class FetchedBlock:
    """One block's exact on-disk bytes (possibly compressed; never empty).

    ``local`` is True when it was read in this process (local or host-local).
    """

    shuffle_id: int
    map_id: int
    reduce_id: int
    data: bytes
    location: BlockManagerId
    local: bool


@dataclass
class _InFlight:
    request: FetchRequest
    blocks_left: int


@dataclass
class _Ready:
    block: FetchedBlock
    size: int  # planned size, released from the in-flight bytes when handed out
    request_id: Optional[int] = None  # None for in-process reads


class ShuffleBlockFetcher:
    """Iterates over every block of ``plan`` exactly once, in no particular order.

    ``plan`` is ``MapOutputTracker.get_map_sizes_by_range``'s answer: per
    location, ``(block id, size, map index)`` with sizes > 0. Fetching starts
    at the first ``next()``; :meth:`close` (also ``with``, exhaustion, any
    error, and garbage collection as a last resort) stops and reaps every
    fetch process. Raises ``FetchFailedError`` / ``CorruptBlockError`` from
    ``next()`` as described in the module docstring.

    ``_read_fn`` is for tests only: a picklable module-level callable with
    :func:`shuffle.read.block_io.read_range`'s signature that the fetch
    processes use instead of it (to inject faults); in-process reads ignore it.
    """

    def __init__(
        self,
        shuffle_id: int,
        plan: Plan,
        *,
        local: BlockManagerId,
        conf: ShuffleConf,
        metrics: ReadMetrics,
        _read_fn: Optional[ReadFn] = None,
    ) -> None:
        self.shuffle_id = shuffle_id
        self.local = local
        self.metrics = metrics
        self._max_bytes = _required(conf.get_bytes("spark.reducer.maxSizeInFlight"))
        self._max_reqs = _required(conf.get_int("spark.reducer.maxReqsInFlight"))
        self._max_blocks_per_address = _required(conf.get_int("spark.reducer.maxBlocksInFlightPerAddress"))
        self._max_retries = _required(conf.get_int("spark.shuffle.io.maxRetries"))
        self._retry_wait = _required(conf.get_duration("spark.shuffle.io.retryWait"))
        self._verify = bool(conf.get_bool("spark.shuffle.detectCorrupt"))
        read_host_local = bool(conf.get_bool("spark.shuffle.readHostLocalDisk", True))
        self._timeout = _required(conf.get_duration("spark.network.timeout", "120s"))
        self._processes = _required(conf.get_int("shuffle.fetch.processes", 2))
        if self._processes < 1:
            raise ConfigError("shuffle.fetch.processes", self._processes, "at least 1")
        self._start_method = _required(conf.get("shuffle.fetch.startMethod", "forkserver"))
        methods = multiprocessing.get_all_start_methods()
        if self._start_method not in methods:
            raise ConfigError("shuffle.fetch.startMethod", self._start_method, "one of " + ", ".join(methods))
        self._read_fn = _read_fn
        # Who reads remote blocks: local fetch processes, or the Ray backend's per-node block services.
        self._transport = _required(conf.get("shuffle.fetch.transport", "processes"))
        if self._transport not in ("processes", "ray"):
            raise ConfigError("shuffle.fetch.transport", self._transport, "processes or ray")
        self._conf = conf

        split = split_plan(
            shuffle_id, plan, local, read_host_local, max(self._max_bytes // 5, 1), self._max_blocks_per_address
        )
        self._local_ranges: Deque[Tuple[BlockManagerId, BlockRange]] = deque(split.local)
        self._queue: Deque[FetchRequest] = deque(split.remote)
        self._total = split.total_blocks
        self.host_local_blocks_fetched = 0

        self._ready: Deque[_Ready] = deque()
        self._retries: List[FetchRequest] = []  # failed requests waiting out retryWait
        self._deferred: List[FetchRequest] = []  # waiting for their address's block budget
        self._in_flight: Dict[int, _InFlight] = {}
        self._bytes_in_flight = 0
        self._reqs_in_flight = 0
        self._blocks_in_flight: Dict[BlockManagerId, int] = defaultdict(int)
        self.peak_reqs_in_flight = 0
        self.peak_blocks_in_flight_per_address = 0
        self._request_ids = count()
        self._handed_out = 0
        self._pool: Optional[FetchPool] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._closed = False

    # ------------------------------------------------------------ lifecycle
    def __iter__(self) -> Iterator[FetchedBlock]:
        return self

    def __enter__(self) -> "ShuffleBlockFetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop and reap every fetch process and drop held blocks. Idempotent."""
        self._closed = True
        self._ready.clear()
        if self._finalizer is not None:
            self._finalizer()  # runs pool.close once

    @property
    def fetch_pids(self) -> List[int]:
        """Live fetch processes (for tests and diagnostics)."""
        return [] if self._pool is None else self._pool.pids

    @property
    def fetch_processes_started(self) -> int:
        return 0 if self._pool is None else self._pool.processes_started

    def __next__(self) -> FetchedBlock:
        if self._closed:
            if self._handed_out == self._total:
                raise StopIteration
            raise ShuffleError(f"the fetcher of shuffle {self.shuffle_id} was closed before every block was read")
        try:
            return self._next()
        except StopIteration:
            self.close()
            raise
        except BaseException:  # failures, KeyboardInterrupt: no process outlives them
            self.close()
            raise

    # ---------------------------------------------------------------- loop
    def _next(self) -> FetchedBlock:
        while True:
            if self._pool is not None and self._pool.busy:
                self._handle(self._pool.poll(0))  # keep the processes busy while we read locally
            self._send()
            if self._ready:
                return self._hand_out(self._ready.popleft())
            if self._local_ranges:
                self._read_local(*self._local_ranges.popleft())
                continue
            if self._handed_out == self._total:
                raise StopIteration
            if self._pool is None or not (self._pool.busy or self._retries):
                raise ShuffleError(  # a bug: waiting now would wait forever
                    f"{self._total - self._handed_out} blocks outstanding but none in flight or waiting to retry"
                )
            waited = time.perf_counter_ns()
            replies = self._pool.poll(self._until_next_retry())
            self.metrics.fetch_wait_time_ns += time.perf_counter_ns() - waited
            self._handle(replies)

    def _hand_out(self, ready: _Ready) -> FetchedBlock:
        block = ready.block
        self._handed_out += 1
        if ready.request_id is None:
            self.metrics.local_blocks_fetched += 1
        else:
            self.metrics.remote_blocks_fetched += 1
            self._release(ready.request_id, ready.size, 1)
        self.metrics.bytes_read += len(block.data)
        return block

    def _until_next_retry(self) -> Optional[float]:
        if not self._retries:
            return None
        return max(0.0, min(r.not_before for r in self._retries) - time.monotonic())

    # ------------------------------------------------------------ in-process
    def _read_local(self, address: BlockManagerId, rng: BlockRange) -> None:
        ranges = [(rng.map_id, rng.start, rng.end)]
        (result,) = read_ranges(None, address.local_dir, self.shuffle_id, ranges, self._verify)
        if result.error is not None:
            raise FetchFailedError(self.shuffle_id, rng.map_id, rng.start, address, result.error)
        for ready, verdict in self._split(address, rng, result, None):
            if verdict is not None:
                reduce_id = ready.block.reduce_id
                raise CorruptBlockError(self.shuffle_id, rng.map_id, reduce_id, address, *verdict)
            self._ready.append(ready)
        if address.executor_id != self.local.executor_id:
            self.host_local_blocks_fetched += len(rng.blocks)

    def _split(
        self, address: BlockManagerId, rng: BlockRange, result: RangeResult, request_id: Optional[int]
    ) -> Iterator[Tuple[_Ready, Verdict]]:
        """(ready block, verdict) for each block of a successfully read range."""
        assert result.offsets is not None and result.data is not None
        offsets, data = result.offsets, result.data
        if len(offsets) != len(rng.blocks) + 1:
            raise FetchFailedError(
                self.shuffle_id, rng.map_id, rng.start, address,
                f"got {len(offsets)} offsets for reduce range [{rng.start}, {rng.end})",
            )
        base = offsets[0]
        for i, (reduce_id, size) in enumerate(rng.blocks):
            piece = data[offsets[i] - base : offsets[i + 1] - base]
            if not piece:
                raise FetchFailedError(
                    self.shuffle_id, rng.map_id, reduce_id, address,
                    f"received a zero-size block, but the plan says {size} bytes",
                )
            block = FetchedBlock(self.shuffle_id, rng.map_id, reduce_id, piece, address, request_id is None)
            verdict = result.verdicts[i] if result.verdicts is not None else None
            yield _Ready(block, size, request_id), verdict

    # ---------------------------------------------------------------- remote
    def _sendable(self, request: FetchRequest) -> bool:
        return self._bytes_in_flight == 0 or (
            self._reqs_in_flight + 1 <= self._max_reqs and self._bytes_in_flight + request.size <= self._max_bytes
        )

    def _address_fits(self, request: FetchRequest) -> bool:
        in_flight = self._blocks_in_flight[request.address]
        return in_flight == 0 or in_flight + request.num_blocks <= self._max_blocks_per_address

    def _send(self) -> None:
        """Send what the limits allow: due retries first, then deferred, then the main queue."""
        if self._retries:
            now = time.monotonic()
            due = [r for r in self._retries if r.not_before <= now]
            if due:
                self._retries = [r for r in self._retries if r.not_before > now]
                self._queue.extendleft(reversed(due))
        for request in list(self._deferred):
            if not self._has_slot() or not self._sendable(request):
                return
            if self._address_fits(request):
                self._deferred.remove(request)
                self._submit(request)
        while self._queue and self._has_slot():
            request = self._queue[0]
            if not self._sendable(request):
                return
            self._queue.popleft()
            if self._address_fits(request):
                self._submit(request)
            else:
                self._deferred.append(request)

    def _has_slot(self) -> bool:
        return self._pool is None or self._pool.free_slots > 0

    def _submit(self, request: FetchRequest) -> None:
        if self._pool is None:
            pool: FetchPool = self._new_pool()
            self._finalizer = weakref.finalize(self, pool.close)
            self._pool = pool
        request_id = next(self._request_ids)
        ranges = [(r.map_id, r.start, r.end) for r in request.ranges]
        self._pool.submit(request_id, request.address.local_dir, self.shuffle_id, ranges, self._verify,
                          address=request.address)
        self._in_flight[request_id] = _InFlight(request, request.num_blocks)
        self._bytes_in_flight += request.size
        self._reqs_in_flight += 1
        self._blocks_in_flight[request.address] += request.num_blocks
        self.metrics.peak_bytes_in_flight = max(self.metrics.peak_bytes_in_flight, self._bytes_in_flight)
        self.peak_reqs_in_flight = max(self.peak_reqs_in_flight, self._reqs_in_flight)
        self.peak_blocks_in_flight_per_address = max(
            self.peak_blocks_in_flight_per_address, self._blocks_in_flight[request.address]
        )

    def _new_pool(self) -> FetchPool:
        if self._transport == "ray":
            from shuffle.engine.block_service import RayBlockTransport  # needs Ray: only on that backend

            return RayBlockTransport(self._processes, self._timeout, self._read_fn, self._conf)  # type: ignore[return-value]
        return FetchPool(self._processes, self._start_method, self._timeout, self._read_fn)

    def _release(self, request_id: int, size: int, blocks: int) -> None:
        flight = self._in_flight[request_id]
        self._bytes_in_flight -= size
        self._blocks_in_flight[flight.request.address] -= blocks
        flight.blocks_left -= blocks
        if flight.blocks_left == 0:
            del self._in_flight[request_id]
            self._reqs_in_flight -= 1

    def _handle(self, replies: List[PoolReply]) -> None:
        for reply in replies:
            request = self._in_flight[reply.request_id].request
            if reply.failure is not None:
                self._retry(request, reply.request_id, request.ranges, reply.failure)
                continue
            assert reply.results is not None
            failed: List[BlockRange] = []
            cause = ""
            for rng, result in zip(request.ranges, reply.results):
                if result.error is None:
                    self._accept(request, reply.request_id, rng, result)
                elif result.retryable:
                    failed.append(rng)
                    cause = cause or result.error
                else:
                    raise FetchFailedError(self.shuffle_id, rng.map_id, rng.start, request.address, result.error)
            if failed:
                self._retry(request, reply.request_id, failed, cause)

    def _accept(self, request: FetchRequest, request_id: int, rng: BlockRange, result: RangeResult) -> None:
        address = request.address
        for ready, verdict in self._split(address, rng, result, request_id):
            if verdict is None:
                self._ready.append(ready)
                continue
            block = ready.block
            self._release(request_id, ready.size, 1)
            if rng.refetched:
                raise CorruptBlockError(self.shuffle_id, block.map_id, block.reduce_id, address, *verdict)
            logger.warning(
                "shuffle_%d_%d_%d from %s is corrupt (%s: %s); fetching it once more",
                self.shuffle_id, block.map_id, block.reduce_id, address, *verdict,
            )
            self.metrics.corrupt_blocks_retried += 1
            again = BlockRange(block.map_id, [(block.reduce_id, ready.size)], refetched=True)
            self._queue.appendleft(FetchRequest(address, [again]))

    def _retry(self, request: FetchRequest, request_id: int, failed: List[BlockRange], cause: str) -> None:
        for rng in failed:
            self._release(request_id, rng.size, len(rng.blocks))
        first = failed[0]
        if request.attempt >= self._max_retries:
            raise FetchFailedError(
                self.shuffle_id, first.map_id, first.start, request.address,
                f"{cause} (after {request.attempt} retries)",
            )
        logger.warning(
            "fetch of shuffle %d map %d reduce %d.. from %s failed (%s); retry %d of %d in %gs",
            self.shuffle_id, first.map_id, first.start, request.address, cause,
            request.attempt + 1, self._max_retries, self._retry_wait,
        )
        self._retries.append(
            FetchRequest(request.address, failed, request.attempt + 1, time.monotonic() + self._retry_wait)
        )


def _required(value: Optional[T]) -> T:
    # Every key read here has a default, so None would be a bug in conf handling.
    assert value is not None
    return value
