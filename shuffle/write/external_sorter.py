"""``ExternalSorter``: records into sorted, spillable runs, merged back by partition.

Spark's ``ExternalSorter``, used by the sort writer and reusable by the reduce
side for key ordering: it only needs its collaborators (memory, conf, spill
format, a spill-path factory, a partition function), never a writer.

*Insert.* With an aggregator, records are combined into a dict keyed by key
(a key's partition is a function of the key, so the key alone is enough);
without, they are appended to a list. Records arrive in chunks, so the size
estimate (:class:`SizeTracker`) and the spill decision (:class:`SpillPolicy`)
cost one Python call per chunk, not per record.

*Order* of a run: by partition; within a partition by key when
``key_ordering`` (by ``sort_key(key)``, descending when not ``ascending``),
else by ``portable_hash(key)`` when aggregating (so equal keys meet in the
merge), else insertion order. Partition ids and hashes are sorted with NumPy.

*Spill*: a run is written, in that order, as one spill file in batches of
``spark.shuffle.spill.batchSize`` records; :mod:`shuffle.write.spill_file`
documents the format and owns its writer and reader.

*Merge*, partition by partition, of every spill with the in-memory run:
aggregator -> fold records whose order key is equal, combining only truly
equal keys (hashes collide); ordering -> ``heapq.merge``; else concatenation.
At most ``shuffle.sort.maxMergeFanIn`` files are open at once: more spills
are first merged, consecutive groups at a time, into bigger spill files.

This module never decides file names (``new_spill_path`` does) and never
leaves a file behind: :meth:`ExternalSorter.stop` deletes them all.
"""

from __future__ import annotations

import heapq
import logging
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from shuffle.aggregator import Aggregator
from shuffle.blocks import BlockFormat
from shuffle.conf import ShuffleConf
from shuffle.errors import ConfigError, SerializationError, ShuffleError, UnhashableKeyError
from shuffle.kernels import load
from shuffle.memory import MemoryConsumer, SizeTracker, SpillPolicy, TaskMemoryManager
from shuffle.partitioner import as_int64
from shuffle.write.merge_steps import comparing, decorate, fan_in_within_fd_limit, fold, incomparable
from shuffle.write.memory_run import MemoryRun
from shuffle.write.observer import WriteObserver
from shuffle.write.records import all_tuples, first_malformed, first_unhashable, gather, malformed, refuse_nan
from shuffle.write.spill_file import SpillFile, SpillReader, write_spill

__all__ = ["ExternalSorter", "MAX_MERGE_FAN_IN_KEY", "DEFAULT_MAX_MERGE_FAN_IN"]

logger = logging.getLogger(__name__)

_portable_hash = load("hashing").portable_hash

MAX_MERGE_FAN_IN_KEY = "shuffle.sort.maxMergeFanIn"
"""Conf key: most spill files merged (open) at once."""
DEFAULT_MAX_MERGE_FAN_IN = 64

# Insert chunks: at most this many records, and about this many bytes, between
# two size checks. A multiple of 32, because SpillPolicy checks memory every
# 32 records (Spark's Spillable).
_INSERT_CHUNK_RECORDS = 1024
_INSERT_CHUNK_BYTES = 1 << 20
# Bytes per record a list buffer adds to what its records hold (two pointers:
# the buffer and the sorted copy made when it spills).
_BUFFER_OVERHEAD = 16

Record = Tuple[Any, Any]
PartitionIds = Callable[[List[Any]], np.ndarray]
_key_of = itemgetter(0)
_record_of = itemgetter(1)


class _EntrySample:
    """The dict entries added by one chunk, as ``SizeTracker.update_many`` measures them.

    Item i is ``(key, combiner)`` for a key of the chunk: measured lazily, only
    at the tracker's sample points, and current (combiners grow).
    """

    def __init__(self, combiners: Dict[Any, Any], chunk: List[Record], added: int) -> None:
        self._combiners, self._chunk, self._added = combiners, chunk, added

    def __len__(self) -> int:
        return self._added

    def __getitem__(self, i: int) -> Record:
        key = self._chunk[len(self._chunk) - self._added + i][0]
        return key, self._combiners[key]


class ExternalSorter(MemoryConsumer):
    """Sorts and optionally combines records by (partition, key), spilling to disk.

    Call order: :meth:`insert_all` any number of times, then one of
    :meth:`partitioned_iterator` or :meth:`iterator` once, then :meth:`stop`
    (also after a failure; idempotent), which deletes every spill file and
    gives the memory back. While its output is being read, another consumer
    of the task may make it spill the rest of its in-memory run.
    """

    def __init__(
        self,
        memory: TaskMemoryManager,
        conf: ShuffleConf,
        spill_format: BlockFormat,
        new_spill_path: Callable[[], Path],
        num_partitions: int,
        partition_ids: Optional[PartitionIds] = None,
        aggregator: Optional[Aggregator] = None,
        key_ordering: bool = False,
        ascending: bool = True,
        sort_key: Optional[Callable[[Any], Any]] = None,
        observer: Optional[WriteObserver] = None,
    ) -> None:
        super().__init__(memory)
        self.observer = observer  # for study (shuffle explain); see shuffle.write.observer
        if num_partitions < 1:
            raise ShuffleError(f"num_partitions must be positive, got {num_partitions}")
        self.conf = conf
        self.spill_format = spill_format
        self.new_spill_path = new_spill_path
        self.num_partitions = num_partitions
        self.partition_ids = partition_ids if num_partitions > 1 else None
        self.aggregator = aggregator
        self.key_ordering = key_ordering
        self.ascending = ascending
        self.sort_key = sort_key
        batch_size = conf.get_int("spark.shuffle.spill.batchSize")
        fan_in = conf.get_int(MAX_MERGE_FAN_IN_KEY, DEFAULT_MAX_MERGE_FAN_IN)
        assert batch_size is not None and fan_in is not None
        if fan_in < 2:
            raise ConfigError(MAX_MERGE_FAN_IN_KEY, fan_in, "an integer >= 2")
        self.batch_size = batch_size
        # The narrowest type: NumPy's stable argsort is a radix sort up to 16 bits.
        self._pid_dtype = np.uint8 if num_partitions <= 1 << 8 else np.uint16 if num_partitions <= 1 << 16 else np.int32
        self.max_fan_in = fan_in
        self.spill_count = 0
        self.memory_bytes_spilled = 0
        self.disk_bytes_spilled = 0
        self._policy = SpillPolicy.from_conf(self, conf)
        self._tracker = SizeTracker(0 if aggregator is not None else _BUFFER_OVERHEAD)
        self._combiners: Dict[Any, Any] = {}
        self._buffer: List[Record] = []
        self._pid_chunks: List[np.ndarray] = []
        self._keys: List[Any] = []
        self._inserted = 0
        self._run_base = 0  # input position of the first record in memory
        self._since_spill = 0
        self._spills: List[SpillFile] = []
        self._files: List[Path] = []
        self._readers: List[SpillReader] = []
        self._run: Optional[MemoryRun] = None
        self._reading = False
        self._stopped = False

    # ------------------------------------------------------------------ insert

    def insert_all(self, records: Iterable[Record]) -> None:
        """Add (or combine) every record; spills when memory runs out."""
        if self._reading or self._stopped:
            raise ShuffleError("ExternalSorter.insert_all after its output was read or it was stopped")
        it = iter(records)
        force_after = self._policy.force_after
        size = self._chunk_size()
        while True:
            # Cut chunks so a forced spill happens exactly after force_after + 1 records.
            chunk = list(islice(it, max(1, min(size, force_after + 1 - self._since_spill))))
            if not chunk:
                return
            if self.aggregator is not None:
                self._combine(chunk)
            else:
                self._append(chunk)
            self._inserted += len(chunk)
            self._since_spill += len(chunk)
            if self._policy.should_spill(self._since_spill, self._tracker.estimated_size):
                self._spill_collection()
            size = self._chunk_size()

    def _combine(self, chunk: List[Record]) -> None:
        combiners = self._combiners
        before = len(combiners)
        try:
            self.aggregator.combine_values(chunk, combiners)  # type: ignore[union-attr]
        except (TypeError, ValueError) as e:
            bad = first_malformed(chunk)
            if bad is not None:
                raise malformed(chunk[bad]).at(self._inserted + bad) from e
            bad = first_unhashable(chunk)
            if bad is not None:
                raise UnhashableKeyError(chunk[bad][0], self._inserted + bad) from e
            raise
        added = len(combiners) - before
        if added:
            self._tracker.update_many(_EntrySample(combiners, chunk, added))  # type: ignore[arg-type]

    def _append(self, chunk: List[Record]) -> None:
        if self.partition_ids is not None or self.key_ordering:
            try:
                if not all_tuples(chunk):
                    raise TypeError("not a tuple")
                keys = [key for key, _ in chunk]
            except (TypeError, ValueError) as e:
                bad = first_malformed(chunk)
                if bad is None:
                    raise
                raise malformed(chunk[bad]).at(self._inserted + bad) from e
            pids = self._partitions_of(keys)
            if pids is not None:
                self._pid_chunks.append(pids)
            if self.key_ordering:
                self._keys.extend(keys)
        self._buffer.extend(chunk)
        self._tracker.update_many(chunk)

    def _chunk_size(self) -> int:
        tracker = self._tracker
        if tracker.count == 0:
            return 32  # sizes unknown yet: a small chunk measures them
        per_record = max(1, tracker.estimated_size // tracker.count)
        return max(32, min(_INSERT_CHUNK_RECORDS, _INSERT_CHUNK_BYTES // per_record // 32 * 32))

    @property
    def _held(self) -> int:
        return len(self._combiners) if self.aggregator is not None else len(self._buffer)

    # ------------------------------------------------------------------ sort

    def _sorted_run(self, final: bool = False) -> MemoryRun:
        """Sort what memory holds into a run and start an empty collection.

        ``final``: the only run, with no spill to merge it with. Ordering by key
        hash exists only so that equal keys meet in a merge; without a merge, a
        combined run needs its partition order alone (Spark's
        ``ExternalAppendOnlyMap`` likewise returns its map as is when nothing spilled).
        """
        base = self._run_base
        if self.aggregator is not None:
            items: List[Record] = list(self._combiners.items())
            keys: List[Any] = list(self._combiners)
            pids = self._partitions_of(keys)
            original = None
        else:
            items, keys, original = self._buffer, self._keys, self._buffer
            pids = np.concatenate(self._pid_chunks) if self._pid_chunks else None
        self._combiners, self._buffer, self._keys, self._pid_chunks = {}, [], [], []
        self._run_base = self._inserted
        if not items:
            return MemoryRun([], [], [], None, base)
        if pids is None and not self.key_ordering and (self.aggregator is None or final):
            return MemoryRun(items, [0], [len(items)], original, base)  # nothing to sort
        order, parts, counts = self._order(keys, pids, len(items), by_hash=not final)
        return MemoryRun(gather(items, order), parts, counts, original, base)

    def _partitions_of(self, keys: List[Any]) -> Optional[np.ndarray]:
        if self.partition_ids is None or not keys:
            return None
        return np.asarray(self.partition_ids(keys), dtype=self._pid_dtype)

    def _order(self, keys: List[Any], pids: Optional[np.ndarray], n: int,
               by_hash: bool = True) -> Tuple[List[int], List[int], List[int]]:
        """The run's order (indices into the collection), its non-empty partitions and their counts."""
        if self.aggregator is not None and not self.key_ordering and by_hash:
            hashes = np.fromiter(map(_portable_hash, keys), dtype=np.int64, count=n)
            order = np.argsort(hashes, kind="stable") if pids is None else np.lexsort((hashes, pids))
        else:
            order = np.arange(n) if pids is None else np.argsort(pids, kind="stable")
        if pids is None:
            parts, counts = [0], [n]
        else:
            unique, sizes = np.unique(pids[order], return_counts=True)
            parts, counts = unique.tolist(), sizes.tolist()
        order_list: List[int] = order.tolist()
        if self.key_ordering:
            self._order_by_key(order_list, keys, counts)
        return order_list, parts, counts

    def _order_by_key(self, order: List[int], keys: List[Any], counts: List[int]) -> None:
        """Sort each partition's stretch of ``order`` (indices into ``keys``) by key, in place (stably)."""
        ranked = keys if self.sort_key is None else list(map(self.sort_key, keys))
        refuse_nan(ranked)
        by_key = ranked.__getitem__
        reverse = not self.ascending
        int_ranks = as_int64(ranked)
        if int_ranks is not None and reverse and len(int_ranks) and int_ranks.min() == np.iinfo(np.int64).min:
            int_ranks = None  # negating it would overflow: Python's sort below
        start = 0
        for count in counts:
            if count > 1:
                stretch = order[start:start + count]
                if int_ranks is not None:
                    # Plain int keys: numpy's stable argsort gives Python's stable order, in C.
                    index = np.asarray(stretch)
                    ranks = int_ranks[index]
                    order[start:start + count] = index[np.argsort(-ranks if reverse else ranks, kind="stable")].tolist()
                else:
                    try:
                        stretch.sort(key=by_key, reverse=reverse)
                    except TypeError as e:
                        raise incomparable(e, [ranked[i] for i in stretch]) from e
                    order[start:start + count] = stretch
            start += count

    # ------------------------------------------------------------------ spill

    def _spill_collection(self) -> None:
        """Write the in-memory collection as one sorted spill file and free its memory."""
        held_bytes = self._tracker.estimated_size
        run = self._sorted_run()
        self._run = run
        try:
            spill = self._write_spill(run.remaining())
        finally:
            self._run = None
        if spill is not None:
            self._spills.append(spill)
        self.spill_count += 1
        self.memory_bytes_spilled += held_bytes
        logger.debug("sorter spilled %d records (%d bytes in memory) to %s", len(run), held_bytes,
                     spill.path if spill else "nothing")
        self._tracker.reset()
        self._since_spill = 0
        self._policy.after_spill()

    def spill(self, size: int, trigger: MemoryConsumer) -> int:
        """Spill for another consumer of the task: the collection, or the unread rest of the output."""
        if trigger is self or self.used == 0 or self._stopped:
            return 0
        freed = self.used
        run = self._run
        if run is None:  # still inserting, or reading has not started
            if not self._held:
                return 0
            self._spill_collection()
            return freed
        if run.records is None:
            return 0
        spill = self._write_spill(run.remaining())
        reader = self._open_reader(spill) if spill is not None else None
        run.switch_to(reader)
        self.spill_count += 1
        self.memory_bytes_spilled += freed
        self._policy.after_spill()
        logger.debug("sorter spilled the unread rest of its output for %r", trigger)
        return freed

    def _write_spill(self, partitions: Iterable[Tuple[int, Iterable[Record]]]) -> Optional[SpillFile]:
        """Write records, by partition in increasing order, as one spill file (None: no records)."""
        spill = write_spill(partitions, self.spill_format, self.batch_size, self._new_spill_file, self.locate)
        if spill is not None:
            self.disk_bytes_spilled += spill.nbytes
            if self.observer is not None:
                self.observer.spill_written(spill.path, spill)
        return spill

    def _new_spill_file(self) -> Path:
        # Recorded before the file is opened, so stop() deletes it even if the write fails.
        path = self.new_spill_path()
        self._files.append(path)
        return path

    # ------------------------------------------------------------------ merge

    def partitioned_iterator(self) -> Iterator[Tuple[int, Iterator[Record]]]:
        """``(partition, records)`` for each non-empty partition, in increasing order.

        Each partition's records must be used before asking for the next
        partition. Can be called once.
        """
        if self._reading or self._stopped:
            raise ShuffleError("ExternalSorter output can be read once, before stop()")
        self._reading = True
        return self._partitions()

    @property
    def inserted(self) -> int:
        """Records inserted so far."""
        return self._inserted

    @property
    def combined_keys(self) -> int:
        """Keys combined in memory now (0 without an aggregator)."""
        return len(self._combiners)

    def take_combined(self) -> Iterator[Record]:
        """Hand over the in-memory ``(key, combiner)`` items, unsorted; nothing may have spilled.

        The sorter's output then counts as read; its memory stays reserved until :meth:`stop`.
        """
        if self.aggregator is None or self.spill_count or self._spills or self._reading or self._stopped:
            raise ShuffleError("ExternalSorter.take_combined needs a combining sorter that has not spilled or been read")
        self._reading = True
        combiners, self._combiners = self._combiners, {}
        return iter(combiners.items())

    def take_unspilled(self) -> Optional[List[Record]]:
        """The records in insertion order, handed over unsorted, if all are still in memory.

        For a caller that needs no order (a hash group-by): None when anything
        spilled or was combined; otherwise the sorter's output counts as read,
        and its memory stays reserved until :meth:`stop`.
        """
        if self.spill_count or self._spills or self.aggregator is not None or self._reading or self._stopped:
            return None
        self._reading = True
        records = self._buffer
        self._buffer, self._keys, self._pid_chunks = [], [], []
        return records

    def iterator(self) -> Iterator[Record]:
        """Every record, partition after partition."""
        return chain.from_iterable(records for _, records in self.partitioned_iterator())

    def _partitions(self) -> Iterator[Tuple[int, Iterator[Record]]]:
        run = self._run = self._sorted_run(final=not self._spills)
        self.max_fan_in = fan_in_within_fd_limit(self.max_fan_in)
        self._merge_spills_down(self.max_fan_in - (1 if len(run) else 0))
        readers = [self._open_reader(spill) for spill in self._spills]
        sources: List[Any] = [*readers, run]
        parts = sorted(set(run.parts).union(*(spill.parts for spill in self._spills)))
        for pid in parts:
            if self._stopped:
                raise ShuffleError("ExternalSorter was stopped while its output was being read")
            streams = [s for s in (source.partition(pid) for source in sources) if s is not None]
            if streams:
                yield pid, self._merge(streams)
        # Done: give back the memory and the disk now rather than at stop().
        self._run = None
        self._close_readers()
        self._delete_files()
        self._spills = []
        self._policy.after_spill()

    def _merge(self, streams: List[Iterator[Record]]) -> Iterator[Record]:
        """One partition's records from several sorted runs, in the run order."""
        if len(streams) == 1:
            return streams[0]  # every run is already combined within itself
        if self.aggregator is None and not self.key_ordering:
            return chain.from_iterable(streams)
        reverse = self.key_ordering and not self.ascending
        if self.aggregator is None and self.sort_key is None:
            return comparing(heapq.merge(*streams, key=_key_of, reverse=reverse))
        rank = self.sort_key if self.key_ordering else _portable_hash
        decorated = [decorate(stream, rank) for stream in streams]
        merged = heapq.merge(*decorated, key=_key_of, reverse=reverse)
        if self.key_ordering:
            merged = comparing(merged)
        if self.aggregator is None:
            return map(_record_of, merged)
        return fold(merged, self.aggregator.merge_combiners)

    def _merge_spills_down(self, limit: int) -> None:
        """Merge consecutive spills until at most ``max(limit, 1)`` remain (never more than fan-in open)."""
        limit = max(limit, 1)
        while len(self._spills) > limit:
            excess = len(self._spills) - limit
            merged: List[SpillFile] = []
            i = 0
            while i < len(self._spills):
                take = min(self.max_fan_in, excess + 1) if excess > 0 else 1
                group = self._spills[i:i + take]
                i += len(group)
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                excess -= len(group) - 1
                merged_spill = self._merge_group(group)
                if merged_spill is not None:
                    merged.append(merged_spill)
            self._spills = merged
            logger.debug("sorter merged spills down to %d files", len(self._spills))

    def _merge_group(self, group: List[SpillFile]) -> Optional[SpillFile]:
        readers = [self._open_reader(spill) for spill in group]
        parts = sorted(set().union(*(spill.parts for spill in group)))

        def partitions() -> Iterator[Tuple[int, Iterator[Record]]]:
            for pid in parts:
                streams = [s for s in (r.partition(pid) for r in readers) if s is not None]
                yield pid, self._merge(streams)

        try:
            return self._write_spill(partitions())
        finally:
            for reader in readers:
                reader.close()
                self._readers.remove(reader)
            for spill in group:
                _unlink(spill.path)
                self._files.remove(spill.path)

    def _open_reader(self, spill: SpillFile) -> SpillReader:
        reader = SpillReader(spill, self.spill_format)
        self._readers.append(reader)
        return reader

    # ------------------------------------------------------------------ errors, end

    def locate(self, error: SerializationError, chunk: List[Any]) -> SerializationError:
        """``error`` (raised encoding ``chunk``) naming its record's input position when known."""
        position = None
        if error.position is not None and 0 <= error.position < len(chunk) and self._run is not None:
            position = self._run.position_of(chunk[error.position])
        if position is not None:
            return error.at(position)
        located = SerializationError(error.type_name, error.reason)
        located.__cause__ = error.__cause__
        return located

    def stop(self) -> None:
        """Delete every spill file and give back all memory; safe to call again, and after a failure."""
        if self._stopped:
            return
        self._stopped = True
        self._close_readers()
        self._delete_files()
        self._spills = []
        self._run = None
        self._combiners, self._buffer, self._keys, self._pid_chunks = {}, [], [], []
        self.close()

    def _close_readers(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers = []

    def _delete_files(self) -> None:
        for path in self._files:
            _unlink(path)
        self._files = []

    def __enter__(self) -> "ExternalSorter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
