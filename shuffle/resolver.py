"""Shuffle output files on disk: names, the index layout, the atomic commit, block lookup.

This is the only module that knows file names and the index format. Writers
hand it a temporary data file and the bytes per partition; readers ask it where
a block is. It never raises FetchFailedError: missing or malformed files raise
FileNotFoundError / ShuffleError here, and the fetcher translates them.

The format (Spark's, byte for byte; one set of files per map task)::

    shuffle_{shuffleId}_{mapId}_0.data
        The map's partition segments concatenated in partition-id order; an
        empty partition takes 0 bytes. No header, no footer.
    shuffle_{shuffleId}_{mapId}_0.index
        numPartitions + 1 big-endian signed 64-bit offsets, no header.
        off[0] = 0, off[r+1] = off[r] + length(r), off[n] = size of the data file.
        Partition r is data bytes [off[r], off[r+1]); a batch of partitions
        [s, e) is the contiguous range [off[s], off[e]).
    shuffle_{shuffleId}_{mapId}_0.checksum.{ADLER32|CRC32}
        numPartitions big-endian 64-bit checksums, one per partition segment
        (an empty segment has the algorithm's initial value). Optional.

The trailing ``_0`` is Spark's NOOP_REDUCE_ID: the files hold every reduce
partition of the map. Next to them live ``shuffle_{s}_{m}_0.lock`` (the commit
lock) and, briefly, commit temporaries named ``<target>.<uuid hex>``.

A pair is *valid* when the index has exactly (n + 1) * 8 bytes, its first
offset is 0, its offsets never decrease and its last offset equals the data
file's size (a missing data file has size 0). A commit publishes the data
before the index, so the index is the commit marker: whoever sees an index
sees its data. The first valid commit of a map wins; later ones (retried or
duplicate attempts) are discarded and get the committed lengths back.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from operator import index as as_int
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from shuffle.checksum import ALGORITHMS, normalize_algorithm
from shuffle.errors import OutOfDiskError, ShuffleError

__all__ = ["IndexShuffleBlockResolver", "NOOP_REDUCE_ID"]

logger = logging.getLogger(__name__)

NOOP_REDUCE_ID = 0
_LONG = 8  # bytes per index offset and per stored checksum
_BE_INT64 = np.dtype(">i8")


def _to_be_int64(values: Sequence[int]) -> bytes:
    return np.asarray(values, dtype=np.int64).astype(_BE_INT64).tobytes()


def _from_be_int64(buf: bytes) -> list[int]:
    return np.frombuffer(buf, dtype=_BE_INT64).tolist()


class IndexShuffleBlockResolver:
    """Names, commits, looks up and removes the map output files under ``local_dir``.

    ``checksum_algorithm`` is ``"ADLER32"``, ``"CRC32"`` or None (no checksum
    files). ``sync=False`` skips fsync, for tests and benchmarks that do not
    care about surviving a power cut. Safe to use from several threads and
    processes at once: commits and removals of one map serialize on a file lock.
    """

    def __init__(
        self,
        local_dir: str | os.PathLike[str],
        checksum_algorithm: str | None = "ADLER32",
        sync: bool = True,
    ) -> None:
        self.local_dir = Path(local_dir)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.checksum_algorithm = (
            None if checksum_algorithm is None else normalize_algorithm(checksum_algorithm)
        )
        self.sync = sync

    def __repr__(self) -> str:
        return (
            f"IndexShuffleBlockResolver({str(self.local_dir)!r}, "
            f"checksum_algorithm={self.checksum_algorithm!r}, sync={self.sync})"
        )

    # ---------------------------------------------------------------- names
    # Spark spreads files over hashed sub-directories of several local dirs to
    # balance disks and keep directories small. An executor here has one local
    # dir and a few thousand files at most, so every file sits directly in it.

    def _base(self, shuffle_id: int, map_id: int) -> str:
        return f"shuffle_{shuffle_id}_{map_id}_{NOOP_REDUCE_ID}"

    def data_file(self, shuffle_id: int, map_id: int) -> Path:
        """Path of the committed data file of one map (it may not exist)."""
        return self.local_dir / (self._base(shuffle_id, map_id) + ".data")

    def index_file(self, shuffle_id: int, map_id: int) -> Path:
        """Path of the committed index file of one map (it may not exist)."""
        return self.local_dir / (self._base(shuffle_id, map_id) + ".index")

    def checksum_file(self, shuffle_id: int, map_id: int, algorithm: str | None = None) -> Path:
        """Path of the checksum file of one map, for ``algorithm`` or the resolver's own."""
        algo = algorithm if algorithm is not None else self.checksum_algorithm
        if algo is None:
            raise ShuffleError("checksums are disabled for this resolver; name an algorithm")
        return self.local_dir / (self._base(shuffle_id, map_id) + ".checksum." + normalize_algorithm(algo))

    def _lock_file(self, shuffle_id: int, map_id: int) -> Path:
        return self.local_dir / (self._base(shuffle_id, map_id) + ".lock")

    def new_temp_path(self, target: Path) -> Path:
        """A fresh temporary name beside ``target``: same directory, so renaming it is atomic."""
        target = Path(target)
        return target.with_name(f"{target.name}.{uuid.uuid4().hex}")

    # ----------------------------------------------------------------- lock
    @contextmanager
    def _map_lock(self, shuffle_id: int, map_id: int) -> Iterator[None]:
        """Hold the map's lock: exclusive across threads and processes (flock is per open file).

        Removal unlinks the lock file while holding it, so after acquiring we check
        that the path still names the file we locked; if not, someone removed it
        under us and we lock the new one instead.
        """
        path = self._lock_file(shuffle_id, map_id)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                mine = os.fstat(fd)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(fd)
                raise
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the flock

    # --------------------------------------------------------------- commit
    def write_metadata_and_commit(
        self,
        shuffle_id: int,
        map_id: int,
        lengths: Sequence[int],
        data_tmp: Path | None,
        checksums: Sequence[int] | None = None,
    ) -> list[int]:
        """Commit one map's output atomically and return the committed partition lengths.

        ``data_tmp`` holds the partitions concatenated (from :meth:`new_temp_path`),
        or is None when every length is 0. If a valid output of this map is already
        committed, it is kept, ``data_tmp`` is discarded and the committed lengths
        are returned: report those, not your own. ``data_tmp`` and every other
        temporary are gone when this returns or raises. Raises ShuffleError for
        inconsistent arguments (checked before anything is written) and
        OutOfDiskError when the disk fills up.
        """
        try:
            lens, sums = self._validate(lengths, data_tmp, checksums)
            with self._map_lock(shuffle_id, map_id):
                committed = self.check_index_and_data(shuffle_id, map_id, len(lens))
                if committed is not None:
                    self._keep_committed(shuffle_id, map_id, lens, committed, sums)
                    return committed
                self._commit(shuffle_id, map_id, lens, data_tmp, sums)
                return lens
        finally:
            if data_tmp is not None:
                Path(data_tmp).unlink(missing_ok=True)

    def _validate(
        self, lengths: Sequence[int], data_tmp: Path | None, checksums: Sequence[int] | None
    ) -> tuple[list[int], list[int] | None]:
        try:
            lens = [as_int(x) for x in lengths]
            sums = None if checksums is None else [as_int(x) for x in checksums]
        except TypeError as e:
            raise ShuffleError(f"partition lengths and checksums must be integers: {e}") from e
        negative = [r for r, n in enumerate(lens) if n < 0]
        if negative:
            raise ShuffleError(f"negative length for partition {negative[0]}: {lens[negative[0]]}")
        if sums is not None and len(sums) != len(lens):
            raise ShuffleError(f"{len(sums)} checksums given for {len(lens)} partitions")
        total = sum(lens)
        if data_tmp is None:
            if total != 0:
                raise ShuffleError(f"no data file given but the lengths add up to {total} bytes")
            return lens, sums
        data_tmp = Path(data_tmp)
        if data_tmp.parent.resolve() != self.local_dir.resolve():
            raise ShuffleError(f"{data_tmp} is not in {self.local_dir}; use new_temp_path()")
        try:
            size = data_tmp.stat().st_size
        except FileNotFoundError as e:
            raise ShuffleError(f"temporary data file {data_tmp} does not exist") from e
        if size != total:
            raise ShuffleError(f"lengths add up to {total} bytes but {data_tmp} has {size}")
        return lens, sums

    def _keep_committed(
        self,
        shuffle_id: int,
        map_id: int,
        ours: list[int],
        committed: list[int],
        sums: list[int] | None,
    ) -> None:
        logger.info(
            "shuffle %d map %d was already committed; keeping that output, discarding this attempt's",
            shuffle_id,
            map_id,
        )
        if self.checksum_algorithm is None or not sums:
            return
        try:
            stored = self.read_checksums(shuffle_id, map_id)
        except ShuffleError:
            stored = None
        # Spark rewrites a missing checksum file from the losing attempt. Our checksums
        # describe our bytes, so only do that when the two attempts' lengths agree.
        if (stored is None or len(stored) != len(committed)) and ours == committed:
            self._write_checksums(shuffle_id, map_id, sums)

    def _commit(
        self, shuffle_id: int, map_id: int, lens: list[int], data_tmp: Path | None, sums: list[int] | None
    ) -> None:
        data, index = self.data_file(shuffle_id, map_id), self.index_file(shuffle_id, map_id)
        index_tmp = self.new_temp_path(index)
        empty_tmp = self.new_temp_path(data) if data_tmp is None else None
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lens, dtype=np.int64), out=offsets[1:])
        needed = (len(lens) + 1) * _LONG
        try:
            self._write_file(index_tmp, _to_be_int64(offsets))
            if empty_tmp is not None:
                self._write_file(empty_tmp, b"")
                data_tmp = empty_tmp
            else:
                needed = sum(lens)
                self._fsync_path(data_tmp)
            # A stale, invalid index must not pair with the new data for a moment.
            index.unlink(missing_ok=True)
            os.replace(data_tmp, data)
            # Checksums before the index: whoever sees the committed index can diagnose
            # corruption against them. Their failure only loses diagnosis, as in Spark.
            if self.checksum_algorithm is not None and sums:
                self._write_checksums(shuffle_id, map_id, sums)
            os.replace(index_tmp, index)
            self._fsync_dir()
        except OSError as e:
            if e.errno == errno.ENOSPC and not isinstance(e, OutOfDiskError):
                raise OutOfDiskError(str(self.local_dir), needed, self._free_bytes()) from e
            raise
        finally:
            index_tmp.unlink(missing_ok=True)
            if empty_tmp is not None:
                empty_tmp.unlink(missing_ok=True)

    def _write_checksums(self, shuffle_id: int, map_id: int, sums: list[int]) -> None:
        target = self.checksum_file(shuffle_id, map_id)
        tmp = self.new_temp_path(target)
        try:
            self._write_file(tmp, _to_be_int64(sums))
            os.replace(tmp, target)
        except OSError as e:
            logger.warning("could not write checksum file %s: %s", target, e)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_file(self, path: Path, payload: bytes) -> None:
        with open(path, "wb") as f:
            f.write(payload)
            if self.sync:
                f.flush()
                os.fsync(f.fileno())

    def _fsync_path(self, path: Path) -> None:
        if self.sync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _fsync_dir(self) -> None:
        # Makes the renames themselves durable, not only the files' contents.
        self._fsync_path(self.local_dir)

    def _free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.local_dir).free
        except OSError:
            return None

    # ----------------------------------------------------------- validation
    def check_index_and_data(self, shuffle_id: int, map_id: int, num_partitions: int) -> list[int] | None:
        """The committed partition lengths when the index/data pair is valid, else None."""
        try:
            buf = self.index_file(shuffle_id, map_id).read_bytes()
        except FileNotFoundError:
            return None
        if len(buf) != (num_partitions + 1) * _LONG:
            return None
        offsets = np.frombuffer(buf, dtype=_BE_INT64)
        if offsets[0] != 0:
            return None
        lengths = np.diff(offsets)
        if (lengths < 0).any():
            return None
        try:
            data_size = self.data_file(shuffle_id, map_id).stat().st_size
        except FileNotFoundError:
            data_size = 0
        if int(offsets[-1]) != data_size:
            return None
        return lengths.tolist()

    # --------------------------------------------------------------- lookup
    def read_offsets(self, shuffle_id: int, map_id: int) -> list[int]:
        """Every offset in the map's index file; FileNotFoundError if there is none."""
        path = self.index_file(shuffle_id, map_id)
        buf = path.read_bytes()
        if len(buf) < _LONG or len(buf) % _LONG:
            raise ShuffleError(f"index file {path} has {len(buf)} bytes, not a positive multiple of 8")
        return _from_be_int64(buf)

    def block_location(
        self, shuffle_id: int, map_id: int, start_reduce: int, end_reduce: int
    ) -> tuple[Path, int, int]:
        """(data file, offset, length) of partitions [start_reduce, end_reduce) of one map.

        Reads only the two offsets it needs. FileNotFoundError when the index is
        missing; ShuffleError when the range lies outside it or it is malformed.
        """
        if not 0 <= start_reduce < end_reduce:
            raise ShuffleError(f"bad reduce range [{start_reduce}, {end_reduce})")
        path = self.index_file(shuffle_id, map_id)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size % _LONG or (end_reduce + 1) * _LONG > size:
                raise ShuffleError(
                    f"index file {path} has {size} bytes, too few for reduce range "
                    f"[{start_reduce}, {end_reduce}) or not a multiple of 8"
                )
            start = _from_be_int64(os.pread(f.fileno(), _LONG, start_reduce * _LONG))[0]
            end = _from_be_int64(os.pread(f.fileno(), _LONG, end_reduce * _LONG))[0]
        if start < 0 or end < start:
            raise ShuffleError(f"index file {path} has offsets {start}..{end} for [{start_reduce}, {end_reduce})")
        return self.data_file(shuffle_id, map_id), start, end - start

    def read_block(self, shuffle_id: int, map_id: int, reduce_id: int) -> bytes:
        """The bytes of one partition of one map, read from its data file."""
        path, offset, length = self.block_location(shuffle_id, map_id, reduce_id, reduce_id + 1)
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise ShuffleError(
                f"data file {path} ends before block shuffle_{shuffle_id}_{map_id}_{reduce_id} "
                f"(wanted {length} bytes at {offset}, got {len(data)})"
            )
        return data

    def read_checksums(self, shuffle_id: int, map_id: int) -> list[int] | None:
        """The stored per-partition checksums, or None when checksums are off or none were stored."""
        if self.checksum_algorithm is None:
            return None
        path = self.checksum_file(shuffle_id, map_id)
        try:
            buf = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(buf) % _LONG:
            raise ShuffleError(f"checksum file {path} has {len(buf)} bytes, not a multiple of 8")
        return _from_be_int64(buf)

    # -------------------------------------------------------------- removal
    def remove_data_by_map(self, shuffle_id: int, map_id: int) -> None:
        """Delete one map's data, index, checksum and lock files (missing ones are fine)."""
        with self._map_lock(shuffle_id, map_id):
            # Index first: without its commit marker the map reads as absent, never half there.
            self.index_file(shuffle_id, map_id).unlink(missing_ok=True)
            self.data_file(shuffle_id, map_id).unlink(missing_ok=True)
            for algo in ALGORITHMS:
                self.checksum_file(shuffle_id, map_id, algo).unlink(missing_ok=True)
            self._lock_file(shuffle_id, map_id).unlink(missing_ok=True)

    def remove_shuffle(self, shuffle_id: int) -> None:
        """Delete every file of one shuffle, stray commit temporaries included."""
        prefix = f"shuffle_{shuffle_id}_"
        map_ids: set[int] = set()
        for path in self.local_dir.glob(prefix + "*"):
            part = path.name[len(prefix):].split("_", 1)[0]
            if part.isdigit():
                map_ids.add(int(part))
        for map_id in sorted(map_ids):
            self.remove_data_by_map(shuffle_id, map_id)
        for path in self.local_dir.glob(prefix + "*"):
            path.unlink(missing_ok=True)
