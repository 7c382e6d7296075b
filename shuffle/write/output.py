"""``MapOutputWriter``: one map task's partitions into one temp data file, then the commit.

Spark's ``LocalDiskShuffleMapOutputWriter``. Partitions are appended in
increasing id order (a partition may receive several appends in a row, e.g.
one per spill); an id never seen has length 0. Bytes arrive either in memory
(:meth:`write`) or as a byte range of another file (:meth:`copy_range`,
done by the kernel with ``copy_file_range``/``sendfile`` so they never pass
through Python). After every append the file position must equal the bytes
accounted for, so a short copy can never produce a silently wrong index.

Checksums are per partition, over the exact bytes on disk. ``write`` updates
them itself; bytes that arrive by ``copy_range`` were checksummed by whoever
wrote them first, into :attr:`checksums` (Spark's writers do the same), which
is why the running checksum objects are handed out at construction.

This class never decides the file names or the index layout: it hands the
temp file and the lengths to the resolver's commit.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import BinaryIO, List, Optional, Union

from shuffle.checksum import Checksum, new_checksum
from shuffle.errors import OutOfDiskError, ShuffleError
from shuffle.resolver import IndexShuffleBlockResolver

__all__ = ["MapOutputWriter", "copy_file_range", "disk_errors"]

logger = logging.getLogger(__name__)

Buffer = Union[bytes, bytearray, memoryview]

_COPY_CHUNK = 1 << 30


class MapOutputWriter:
    """Appends partition segments in id order to one temp file; commits or aborts once."""

    def __init__(
        self,
        resolver: IndexShuffleBlockResolver,
        shuffle_id: int,
        map_id: int,
        num_partitions: int,
        checksum_algorithm: Optional[str],
        buffer_size: int = 32 * 1024,
    ) -> None:
        self.resolver = resolver
        self.shuffle_id = shuffle_id
        self.map_id = map_id
        self.num_partitions = num_partitions
        self.lengths: List[int] = [0] * num_partitions
        self.checksums: Optional[List[Checksum]] = (
            [new_checksum(checksum_algorithm) for _ in range(num_partitions)] if checksum_algorithm else None
        )
        self._buffer_size = buffer_size
        self._tmp: Optional[Path] = None
        self._file: Optional[BinaryIO] = None
        self._last_partition = -1
        self._position = 0
        self._done = False

    @property
    def bytes_written(self) -> int:
        return self._position

    def _open(self, partition_id: int) -> BinaryIO:
        if self._done:
            raise ShuffleError(f"map output {self.shuffle_id}/{self.map_id} was already committed or aborted")
        if not 0 <= partition_id < self.num_partitions or partition_id < self._last_partition:
            raise ShuffleError(
                f"partition {partition_id} appended after partition {self._last_partition} "
                f"(of {self.num_partitions}): partitions must come in increasing order"
            )
        self._last_partition = partition_id
        if self._file is None:
            self._tmp = self.resolver.new_temp_path(self.resolver.data_file(self.shuffle_id, self.map_id))
            self._file = open(self._tmp, "wb", buffering=self._buffer_size)
        return self._file

    def write(self, partition_id: int, data: Buffer) -> None:
        """Append ``data`` to partition ``partition_id`` and checksum it."""
        if not data:
            return
        out = self._open(partition_id)
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        with disk_errors(self._tmp, size):
            out.write(data)
        self._advance(partition_id, size)
        if self.checksums is not None:
            self.checksums[partition_id].update(data)

    def copy_range(self, partition_id: int, source: Union[str, Path], offset: int, length: int) -> None:
        """Append ``length`` bytes of ``source`` from ``offset`` to partition ``partition_id``.

        The caller has already fed these bytes to ``checksums[partition_id]``.
        """
        if length == 0:
            return
        out = self._open(partition_id)
        with disk_errors(self._tmp, length):
            out.flush()
            with open(source, "rb") as src:
                copy_file_range(src.fileno(), out.fileno(), offset, length)
            position = os.lseek(out.fileno(), 0, os.SEEK_END)
            out.seek(position)
        self._advance(partition_id, length)
        if position != self._position:
            raise ShuffleError(
                f"after copying {length} bytes of {source} the output is at {position}, "
                f"expected {self._position}: the copy was short"
            )

    def _advance(self, partition_id: int, size: int) -> None:
        self.lengths[partition_id] += size
        self._position += size

    def commit(self) -> List[int]:
        """Commit through the resolver; returns the committed lengths (maybe an earlier attempt's)."""
        data_tmp = self._close()
        self._done = True
        checksums = [c.value for c in self.checksums] if self.checksums is not None else None
        try:
            return self.resolver.write_metadata_and_commit(
                self.shuffle_id, self.map_id, self.lengths, data_tmp, checksums
            )
        finally:
            if data_tmp is not None and data_tmp.exists():
                data_tmp.unlink()

    def abort(self) -> None:
        """Delete the temp file; nothing of this attempt becomes visible. Safe to call twice."""
        self._done = True
        try:
            tmp = self._close()
        except OSError:
            tmp = self._tmp
        if tmp is not None:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    def _close(self) -> Optional[Path]:
        if self._file is not None:
            file, self._file = self._file, None
            with disk_errors(self._tmp):
                file.close()
        return self._tmp


def copy_file_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes from ``src_fd`` at ``offset`` to the end of ``dst_fd``, in the kernel.

    ``os.copy_file_range`` first (Linux, same or different file systems on
    recent kernels), then ``os.sendfile``, then a plain read/write loop.
    """
    remaining = length
    position = offset
    for copy in (_copy_file_range, _sendfile, _read_write):
        try:
            while remaining > 0:
                copied = copy(src_fd, dst_fd, position, min(remaining, _COPY_CHUNK))
                if copied == 0:
                    raise ShuffleError(f"source ended {remaining} bytes early at offset {position}")
                position += copied
                remaining -= copied
            return
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            logger.debug("%s unavailable here (%s), trying the next copy method", copy.__name__, e)
    raise ShuffleError("no copy method worked")  # _read_write does not raise the errnos above


def _copy_file_range(src_fd: int, dst_fd: int, position: int, count: int) -> int:
    return os.copy_file_range(src_fd, dst_fd, count, position)


def _sendfile(src_fd: int, dst_fd: int, position: int, count: int) -> int:
    return os.sendfile(dst_fd, src_fd, position, count)


def _read_write(src_fd: int, dst_fd: int, position: int, count: int) -> int:
    data = os.pread(src_fd, min(count, 1 << 20), position)
    view = memoryview(data)
    while view:
        written = os.write(dst_fd, view)
        view = view[written:]
    return len(data)


class disk_errors:
    """``with disk_errors(path, needed):`` turns ENOSPC into OutOfDiskError naming ``path``'s
    directory and ``needed``, the bytes the failing write wanted to put there (None: unknown).

    Every writer of shuffle and spill files uses it around its writes, so a full disk is
    one typed error wherever it strikes.
    """

    def __init__(self, path: Optional[Union[str, Path]], needed: Optional[int] = None) -> None:
        self.path = Path(path) if path is not None else None
        self.needed = needed

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not isinstance(exc, OutOfDiskError):
            directory = str(self.path.parent) if self.path is not None else "?"
            free = _free_bytes(directory)
            raise OutOfDiskError(directory, self.needed, free) from exc
        return False


def _free_bytes(directory: str) -> Optional[int]:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize
