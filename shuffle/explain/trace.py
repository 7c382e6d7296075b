"""Run a tiny deterministic shuffle through the real writers and readers and record what they did.

:func:`run_trace` builds a ``SortShuffleManager`` in a temp directory, lets it
choose (forced to ``mode``) the writer, writes each map with the real writer
and reads each reduce partition with the real fetcher and reader. It never
re-implements a step: what it records comes from

- the files the writers commit (``.data``, ``.index``, ``.checksum.*``), read
  back through the resolver;
- the writers' observation points (:class:`shuffle.write.observer.WriteObserver`):
  bypass partition files, the serialized writer's record buffer
  (``pointers()``, ``page(i)``) just before its sort, every spill file as it
  is completed — copied at once, since the writers delete them;
- the real kernels for what happens inside the buffer: the pointers after
  the sort are ``pointers.radix_sort_by_partition`` of the observed ones;
- the tracker's fetch plan, ``split_plan``'s ranges, the blocks
  ``ShuffleBlockFetcher`` hands out, and ``ShuffleReader.read()``'s output.

Spills are forced with ``spark.shuffle.spill.numElementsForceSpillThreshold``,
so a 12-record job shows spill files and their merge. Nothing of the run is
left on disk when :func:`run_trace` returns.
"""

from __future__ import annotations

import operator
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from shuffle.aggregator import Aggregator
from shuffle.blocks import BlockFormat
from shuffle.checksum import checksum_of
from shuffle.conf import ShuffleConf
from shuffle.dependency import WRITER_KINDS, ShuffleDependency
from shuffle.errors import ConfigError
from shuffle.kernels import load
from shuffle.manager import SortShuffleManager, choose_writer
from shuffle.metrics import ReadMetrics
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.partitioner import HashPartitioner
from shuffle.read.fetch_plan import split_plan
from shuffle.read.fetcher import ShuffleBlockFetcher
from shuffle.write.observer import WriteObserver
from shuffle.write.serialized_sorter import SpillInfo
from shuffle.write.spill_file import SpillFile, SpillReader

__all__ = ["Trace", "MapTrace", "ReduceTrace", "run_trace", "KEYS", "MAX_RECORDS", "MAX_PARTITIONS", "MAX_MAPS"]

_pointers = load("pointers")
_recordbuf = load("recordbuf")

KEYS = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "owl", "yak")
"""The keys a traced job draws from: few, so that keys repeat and combine."""
MAX_RECORDS = 1000
MAX_PARTITIONS = 64
MAX_MAPS = 8
SHUFFLE_ID = 0
CODECS = ("none", "lz4", "zstd", "zlib")
# Smallest page spark.buffer.pageSize allows: a few dozen records fill it.
PAGE_SIZE = "1k"

Record = Tuple[Any, Any]


@dataclass
class BufferedRecord:
    """One record as the serialized writer's buffer holds it."""

    pointer: int
    partition: int
    page: int
    offset: int
    length: int  # serialized bytes, without the 4-byte length prefix
    data: bytes
    record: Record


@dataclass
class SortTrace:
    """The record buffer just before one sort: pages, and pointers before and after."""

    pages: List[bytes]
    before: List[BufferedRecord]
    after: List[BufferedRecord]  # radix_sort_by_partition of ``before``


@dataclass
class SpillTrace:
    """One spill file, copied when it was completed.

    ``segments`` are ``(partition, offset, length, records)``: per partition
    block for the serialized writer; for the sort writer (whose batches may
    span partitions) offset and length are -1 and ``batch_sizes`` is set.
    """

    data: bytes
    segments: List[Tuple[int, int, int, List[Record]]]
    batch_sizes: List[int] = field(default_factory=list)


@dataclass
class PartitionFileTrace:
    """A bypass writer's temp file of one partition, complete, before it is copied."""

    partition: int
    data: bytes


@dataclass
class MapTrace:
    """One map task: its input, what its writer did, and the files it committed."""

    map_id: int
    records: List[Record]
    partitions: List[int]  # the partitioner's answer for each record
    partition_files: List[PartitionFileTrace] = field(default_factory=list)
    sorts: List[SortTrace] = field(default_factory=list)
    spills: List[SpillTrace] = field(default_factory=list)
    data: bytes = b""
    index: bytes = b""
    offsets: List[int] = field(default_factory=list)
    checksum_file: bytes = b""
    checksums: List[int] = field(default_factory=list)  # as stored in the checksum file
    recomputed: List[int] = field(default_factory=list)  # checksum_of each data segment
    segments: List[List[Record]] = field(default_factory=list)  # each partition's records, decoded
    lengths: List[int] = field(default_factory=list)  # the MapStatus's
    metrics: Dict[str, int] = field(default_factory=dict)
    file_names: Dict[str, str] = field(default_factory=dict)

    def segment(self, partition: int) -> bytes:
        return self.data[self.offsets[partition]:self.offsets[partition + 1]]


@dataclass
class FetchedTrace:
    """One block as the fetcher handed it out."""

    block: str
    map_id: int
    reduce_id: int
    data: bytes
    local: bool
    records: List[Record]


@dataclass
class ReduceTrace:
    """One reduce task (one partition): its plan, its reads and its output."""

    partition: int
    plan: List[Tuple[str, List[Tuple[str, int, int]]]]  # (location, [(block, size, map index)])
    ranges: List[Tuple[int, int, int, int]]  # in-process reads: (map id, first reduce, end reduce, bytes)
    requests: List[List[Tuple[int, int, int, int]]]  # remote requests: their ranges
    fetched: List[FetchedTrace]
    output: List[Record]
    metrics: Dict[str, int]


@dataclass
class Trace:
    """Everything one traced job did, map side then reduce side."""

    mode: str
    reason: str
    natural_mode: str  # what SortShuffleManager would choose without shuffle.writer.force
    natural_reason: str
    num_records: int
    num_partitions: int
    num_maps: int
    seed: int
    codec: str
    spill_after: int
    checksum_algorithm: str
    map_side_combine: bool
    conf: Dict[str, str]
    maps: List[MapTrace]
    reduces: List[ReduceTrace]


def job_records(num_records: int, seed: int) -> List[Record]:
    """The job's input: ``(key, value)`` with keys from :data:`KEYS` and values 1..9."""
    rng = random.Random(seed)
    return [(rng.choice(KEYS), rng.randint(1, 9)) for _ in range(num_records)]


def split_among_maps(records: List[Record], num_maps: int) -> List[List[Record]]:
    """Contiguous, nearly equal slices, one per map."""
    n = len(records)
    return [records[m * n // num_maps:(m + 1) * n // num_maps] for m in range(num_maps)]


def _check(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(name, value, f"a whole number from {lo} to {hi}")
    return value


def job_conf(mode: str, codec: str, spill_after: int) -> Dict[str, str]:
    """The configuration of a traced job."""
    if mode not in WRITER_KINDS:
        raise ConfigError("mode", mode, "one of " + ", ".join(WRITER_KINDS))
    if codec not in CODECS:
        raise ConfigError("codec", codec, "one of " + ", ".join(CODECS))
    compress = "false" if codec == "none" else "true"
    conf = {} if codec == "none" else {"spark.io.compression.codec": codec}
    return {
        **conf,
        "shuffle.writer.force": mode,
        "spark.shuffle.compress": compress,
        "spark.shuffle.spill.compress": compress,
        "spark.shuffle.checksum.enabled": "true",
        "spark.shuffle.checksum.algorithm": "ADLER32",
        "spark.shuffle.spill.numElementsForceSpillThreshold": str(spill_after),
        "spark.buffer.pageSize": PAGE_SIZE,
        "spark.executor.memory": "64m",
    }


def run_trace(
    mode: str = "sort",
    num_records: int = 12,
    num_partitions: int = 3,
    num_maps: int = 2,
    seed: int = 0,
    codec: str = "none",
    spill_after: Optional[int] = None,
    work_dir: Optional[Path] = None,
) -> Trace:
    """Run the traced job; ConfigError names an argument out of range.

    ``spill_after`` is ``numElementsForceSpillThreshold`` (default: half of
    the largest map's records, so every map spills). ``codec="none"`` keeps
    the bytes readable; the others compress exactly as a normal job does.
    The job's files live in a temp directory (under ``work_dir`` when given),
    deleted before this returns.
    """
    _check("records", num_records, 1, MAX_RECORDS)
    _check("partitions", num_partitions, 1, MAX_PARTITIONS)
    _check("maps", num_maps, 1, MAX_MAPS)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", seed, "a whole number")
    num_maps = min(num_maps, num_records)
    inputs = split_among_maps(job_records(num_records, seed), num_maps)
    if spill_after is None:
        spill_after = max(1, (max(len(chunk) for chunk in inputs) + 1) // 2)
    _check("spill_after", spill_after, 1, (1 << 31) - 1)
    conf_values = job_conf(mode, codec, spill_after)
    conf = ShuffleConf(conf_values)
    # reduce_by_key(add): the sort writer combines on the map side (it is the writer that can).
    dep = ShuffleDependency(
        shuffle_id=SHUFFLE_ID, num_maps=num_maps, partitioner=HashPartitioner(num_partitions),
        serializer=MsgpackSerializer(), aggregator=Aggregator.from_reduce(operator.add),
        map_side_combine=mode == "sort", key_ordering=True,
    )
    natural = {k: v for k, v in conf_values.items() if k != "shuffle.writer.force"}
    natural_mode, natural_reason = choose_writer(dep, ShuffleConf(natural))
    with tempfile.TemporaryDirectory(prefix="shuffle-explain-", dir=work_dir) as tmp:
        with SortShuffleManager(conf, local_dir=tmp) as manager:
            handle = manager.register_shuffle(dep)
            maps = [_write_map(manager, handle, m, records) for m, records in enumerate(inputs)]
            reduces = [_read_partition(manager, handle, r) for r in range(num_partitions)]
    algorithm = manager.resolver.checksum_algorithm or ""
    return Trace(
        mode=handle.kind, reason=handle.reason, natural_mode=natural_mode, natural_reason=natural_reason,
        num_records=num_records, num_partitions=num_partitions, num_maps=num_maps, seed=seed, codec=codec,
        spill_after=spill_after, checksum_algorithm=algorithm, map_side_combine=dep.map_side_combine,
        conf=conf_values, maps=maps, reduces=reduces,
    )


# ------------------------------------------------------------------ map side


class _Recorder(WriteObserver):
    """Copies what the writer shows at its observation points."""

    def __init__(self, block_format: BlockFormat, spill_format: BlockFormat, serializer: Any) -> None:
        self.block_format = block_format
        self.spill_format = spill_format
        self.serializer = serializer
        self.partition_files: List[PartitionFileTrace] = []
        self.sorts: List[SortTrace] = []
        self.spills: List[SpillTrace] = []

    def partition_file(self, partition_id: int, path: Path, size: int) -> None:
        with open(path, "rb") as f:
            self.partition_files.append(PartitionFileTrace(partition_id, f.read(size)))

    def sorting(self, buffer: Any) -> None:
        pages = [buffer.page(i) for i in range(buffer.pages_used)]
        before = buffer.pointers()
        after = _pointers.radix_sort_by_partition(before)
        self.sorts.append(SortTrace(pages, self._deref(before, pages), self._deref(after, pages)))

    def _deref(self, pointers: Any, pages: List[bytes]) -> List[BufferedRecord]:
        out = []
        prefix = _recordbuf.LENGTH_PREFIX_BYTES
        for pointer in pointers.tolist():
            partition, page_no, offset = _pointers.unpack(pointer)
            page = pages[page_no]
            length = int.from_bytes(page[offset:offset + prefix], "little")  # the buffer's documented prefix
            data = bytes(page[offset + prefix:offset + prefix + length])
            (record,) = list(self.serializer.decode(data))
            out.append(BufferedRecord(pointer, partition, page_no, offset, length, data, record))
        return out

    def spill_written(self, path: Path, layout: Any) -> None:
        data = path.read_bytes()
        if isinstance(layout, SpillInfo):
            segments = [(pid, off, n, list(self.block_format.decode(data[off:off + n])))
                        for pid, off, n in layout.segments]
            self.spills.append(SpillTrace(data, segments))
        elif isinstance(layout, SpillFile):
            reader = SpillReader(layout, self.spill_format)
            try:
                segments = [(pid, -1, -1, list(reader.partition(pid) or ())) for pid in layout.parts]
            finally:
                reader.close()
            self.spills.append(SpillTrace(data, segments, list(layout.batch_sizes)))


def _write_map(manager: SortShuffleManager, handle: Any, map_id: int, records: List[Record]) -> MapTrace:
    dep = handle.dependency
    writer = manager.get_writer(handle, map_id)
    recorder = _Recorder(writer.block_format, writer.spill_format, dep.serializer)
    writer.context.observer = recorder
    partitions = dep.partitioner.partition_ids([key for key, _ in records]).tolist() if records else []
    status = writer.write(records)
    resolver = manager.resolver
    data_path = resolver.data_file(SHUFFLE_ID, map_id)
    index_path = resolver.index_file(SHUFFLE_ID, map_id)
    checksum_path = resolver.checksum_file(SHUFFLE_ID, map_id)
    trace = MapTrace(map_id, list(records), partitions, recorder.partition_files, recorder.sorts, recorder.spills)
    trace.data = data_path.read_bytes() if data_path.exists() else b""
    trace.index = index_path.read_bytes()
    trace.offsets = resolver.read_offsets(SHUFFLE_ID, map_id)
    trace.checksum_file = checksum_path.read_bytes() if checksum_path.exists() else b""
    trace.checksums = resolver.read_checksums(SHUFFLE_ID, map_id) or []
    algorithm = resolver.checksum_algorithm
    trace.recomputed = [checksum_of(algorithm, trace.segment(r)) for r in range(dep.num_partitions)] if algorithm else []
    trace.segments = [list(writer.block_format.decode(trace.segment(r))) for r in range(dep.num_partitions)]
    trace.lengths = list(status.partition_lengths)
    trace.metrics = {k: v for k, v in writer.metrics.as_dict().items() if k != "write_time_ns"}
    trace.file_names = {"data": data_path.name, "index": index_path.name, "checksum": checksum_path.name}
    return trace


# ------------------------------------------------------------------ reduce side


def _read_partition(manager: SortShuffleManager, handle: Any, partition: int) -> ReduceTrace:
    """One reduce task: the tracker's plan, the fetcher's blocks, the reader's output."""
    conf = manager.conf
    num_maps = handle.dependency.num_maps
    plan = manager.tracker.get_map_sizes_by_range(SHUFFLE_ID, 0, num_maps, partition, partition + 1)
    # The fetcher's own split of that plan, with the fetcher's parameters.
    max_bytes = conf.get_bytes("spark.reducer.maxSizeInFlight") or 1
    split = split_plan(
        SHUFFLE_ID, plan, manager.location, bool(conf.get_bool("spark.shuffle.readHostLocalDisk", True)),
        max(max_bytes // 5, 1), conf.get_int("spark.reducer.maxBlocksInFlightPerAddress") or 1,
    )
    block_format = BlockFormat.for_shuffle(conf, handle.dependency.serializer)
    fetch_metrics = ReadMetrics()
    fetched = []
    with ShuffleBlockFetcher(SHUFFLE_ID, plan, local=manager.location, conf=conf, metrics=fetch_metrics) as fetcher:
        for block in fetcher:
            name = f"shuffle_{block.shuffle_id}_{block.map_id}_{block.reduce_id}"
            fetched.append(FetchedTrace(name, block.map_id, block.reduce_id, block.data, block.local,
                                        list(block_format.decode(block.data))))
    reader = manager.get_reader(handle, partition, partition + 1)
    with reader:
        output = list(reader.read())
    metrics = {k: v for k, v in reader.metrics.as_dict().items() if not k.endswith("_time_ns")}
    return ReduceTrace(
        partition=partition,
        plan=[(address.executor_id, [(block.name, size, index) for block, size, index in entries])
              for address, entries in plan],
        ranges=[(r.map_id, r.start, r.end, r.size) for _, r in split.local],
        requests=[[(r.map_id, r.start, r.end, r.size) for r in request.ranges] for request in split.remote],
        fetched=fetched,
        output=output,
        metrics=metrics,
    )
