"""Reading block ranges from a map output's files, verifying and diagnosing them.

The fetcher reads local blocks with these functions in its own process and
the fetch processes run the very same code for every other block, so a block
is read, checked and diagnosed identically wherever it lives. Everything here
is stateless and takes plain arguments (a directory, ids, a reduce range):
nothing is inherited from the process that asked.

A *range* is reduce partitions ``[start, end)`` of one map. Its blocks are
adjacent in the data file, so one ``pread`` of the index (``end - start + 1``
offsets) and one of the data file read them all; the offsets split the bytes
into blocks. File names and the index layout are the resolver's
(:mod:`shuffle.resolver` documents them); this module only follows them.

Verification recomputes each block's checksum with the algorithm named by the
checksum file's suffix and compares it with the stored value. On a mismatch
the block is *diagnosed* as Spark's ``ShuffleChecksumHelper`` does: the bytes
on disk are checksummed again and compared with the stored value (differs:
``DISK_ISSUE``; equal, so the bytes changed after they left the disk:
``NETWORK_ISSUE``). A map without a checksum file (checksums disabled) is not
verified. This module never raises FetchFailedError: read failures surface as
``OSError`` and verdicts as values, and the fetcher decides what they mean.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from shuffle.checksum import ALGORITHMS, checksum_of
from shuffle.resolver import IndexShuffleBlockResolver

__all__ = [
    "DISK_ISSUE",
    "NETWORK_ISSUE",
    "CHECKSUM_VERIFY_PASS",
    "UNSUPPORTED_CHECKSUM_ALGORITHM",
    "UNKNOWN_ISSUE",
    "RangeResult",
    "ReadFn",
    "Verdict",
    "read_range",
    "verify_range",
    "diagnose_corruption",
    "read_ranges",
]

logger = logging.getLogger(__name__)

DISK_ISSUE = "DISK_ISSUE"
NETWORK_ISSUE = "NETWORK_ISSUE"
CHECKSUM_VERIFY_PASS = "CHECKSUM_VERIFY_PASS"
UNSUPPORTED_CHECKSUM_ALGORITHM = "UNSUPPORTED_CHECKSUM_ALGORITHM"
UNKNOWN_ISSUE = "UNKNOWN_ISSUE"

_LONG = 8

# (diagnosis, detail) of a corrupt block; None for a block that matched or could not be checked.
Verdict = Optional[Tuple[str, str]]
# read_fn(local_dir, shuffle_id, map_id, start_reduce, end_reduce) -> (offsets, data)
ReadFn = Callable[[str, int, int, int, int], Tuple[Sequence[int], bytes]]


@dataclass(frozen=True)
class RangeResult:
    """What reading one range gave: offsets and bytes with per-block verdicts, or an error.

    ``offsets`` are absolute file offsets, ``end - start + 1`` of them; block
    ``start + i`` is ``data[offsets[i] - offsets[0]:offsets[i + 1] - offsets[0]]``.
    ``retryable`` says whether the error was an ``OSError`` (worth retrying).
    """

    offsets: Optional[Tuple[int, ...]] = None
    data: Optional[bytes] = None
    verdicts: Optional[Tuple[Verdict, ...]] = None
    error: Optional[str] = None
    retryable: bool = False


def _resolver(local_dir: str) -> IndexShuffleBlockResolver:
    # The resolver creates its directory; a reader must not resurrect a lost one.
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(errno.ENOENT, "the map output's local directory is gone", local_dir)
    return IndexShuffleBlockResolver(local_dir, checksum_algorithm=None, sync=False)


def _pread_fully(path: Path, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``, fewer only at end of file (pread may return short reads)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if length <= 0x7FFFF000:  # Linux's per-call maximum
            return os.pread(fd, length, offset)
        parts = []
        while length:
            part = os.pread(fd, min(length, 0x7FFFF000), offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def read_range(local_dir: str, shuffle_id: int, map_id: int, start: int, end: int) -> Tuple[Tuple[int, ...], bytes]:
    """Offsets ``off[start..end]`` from the index and data bytes ``[off[start], off[end])``.

    ``FileNotFoundError`` names a missing index or data file; a short or
    malformed index, and a data file whose size is not the index's last
    offset (truncated or extended since its commit), raise ``OSError``
    (``EIO``) saying which file and what was wrong.
    """
    if not 0 <= start < end:
        raise ValueError(f"bad reduce range [{start}, {end})")
    resolver = _resolver(local_dir)
    index = resolver.index_file(shuffle_id, map_id)
    count = end - start + 1
    fd = os.open(index, os.O_RDONLY)
    try:
        index_size = os.fstat(fd).st_size
        buf = os.pread(fd, count * _LONG, start * _LONG)
        # The index's last offset is the data file's size: checked for every range, so a
        # data file truncated or extended after its commit fails every read of the map,
        # not only those of the blocks it cut off (their checksums may still match).
        last = os.pread(fd, _LONG, index_size - _LONG) if index_size >= _LONG and not index_size % _LONG else b""
    finally:
        os.close(fd)
    if len(buf) != count * _LONG or not last:
        raise OSError(
            errno.EIO,
            f"index file is too short for reduce range [{start}, {end}) or not a whole number of offsets "
            f"(wanted {count * _LONG} bytes at {start * _LONG}, got {len(buf)}; it has {index_size} bytes)",
            str(index),
        )
    offsets = struct.unpack(f">{count}q", buf)
    if offsets[0] < 0 or any(b < a for a, b in zip(offsets, offsets[1:])):
        raise OSError(errno.EIO, f"index file has bad offsets {list(offsets)} for [{start}, {end})", str(index))
    data_path = resolver.data_file(shuffle_id, map_id)
    (data_size_in_index,) = struct.unpack(">q", last)
    data_size = os.stat(data_path).st_size
    if data_size != data_size_in_index:
        raise OSError(
            errno.EIO,
            f"data file has {data_size} bytes but its index {index.name} says {data_size_in_index}",
            str(data_path),
        )
    length = offsets[-1] - offsets[0]
    data = _pread_fully(data_path, length, offsets[0])
    if len(data) != length:
        raise OSError(
            errno.EIO,
            f"data file ends before reduce range [{start}, {end}) of map {map_id} "
            f"(wanted {length} bytes at {offsets[0]}, got {len(data)})",
            str(data_path),
        )
    return offsets, data


def _checksum_file(
    resolver: IndexShuffleBlockResolver, shuffle_id: int, map_id: int
) -> Tuple[Optional[str], Optional[Path]]:
    """(algorithm, path) of the map's checksum file, whatever its suffix; (None, None) when there is none."""
    for algorithm in ALGORITHMS:
        path = resolver.checksum_file(shuffle_id, map_id, algorithm)
        if path.exists():
            return algorithm, path
    stem = resolver.data_file(shuffle_id, map_id).with_suffix(".checksum").name
    for path in sorted(resolver.local_dir.glob(stem + ".*")):
        return path.suffix[1:], path
    return None, None


def _stored_checksums(path: Path, start: int, end: int) -> Tuple[int, ...]:
    buf = _pread_fully(path, (end - start) * _LONG, start * _LONG)
    if len(buf) != (end - start) * _LONG:
        raise OSError(errno.EIO, f"checksum file has no checksums for reduce range [{start}, {end})", str(path))
    return struct.unpack(f">{end - start}q", buf)


def diagnose_corruption(
    local_dir: str, shuffle_id: int, map_id: int, reduce_id: int, received: bytes
) -> Tuple[str, str]:
    """Why block ``reduce_id`` of a map arrived as ``received``: (diagnosis, detail).

    Spark's checksum diagnosis: c2 = the stored checksum, c3 = the checksum of
    the block's bytes on disk now, c1 = that of ``received``. c2 != c3:
    ``DISK_ISSUE``; else c1 != c2: ``NETWORK_ISSUE``; else
    ``CHECKSUM_VERIFY_PASS``. A checksum file in an algorithm we do not know:
    ``UNSUPPORTED_CHECKSUM_ALGORITHM``; no checksum file or unreadable files:
    ``UNKNOWN_ISSUE``. Never raises for a file problem. Readers can call it
    when a block that passed (or skipped) verification fails to decode.
    """
    try:
        resolver = _resolver(local_dir)
        algorithm, path = _checksum_file(resolver, shuffle_id, map_id)
    except OSError as e:
        return UNKNOWN_ISSUE, str(e)
    if path is None or algorithm is None:
        return UNKNOWN_ISSUE, f"shuffle {shuffle_id} map {map_id} has no checksum file"
    if algorithm not in ALGORITHMS:
        return UNSUPPORTED_CHECKSUM_ALGORITHM, f"{path.name} uses {algorithm}; supported: {', '.join(ALGORITHMS)}"
    try:
        stored = _stored_checksums(path, reduce_id, reduce_id + 1)[0]
        _, on_disk = read_range(local_dir, shuffle_id, map_id, reduce_id, reduce_id + 1)
    except OSError as e:
        return UNKNOWN_ISSUE, str(e)
    disk_sum = checksum_of(algorithm, on_disk)
    if disk_sum != stored:
        return DISK_ISSUE, f"{algorithm} of the bytes on disk is {disk_sum:#x} but {stored:#x} is stored"
    received_sum = checksum_of(algorithm, received)
    if received_sum != stored:
        return NETWORK_ISSUE, (
            f"the file matches its stored {algorithm} {stored:#x}; the bytes received give {received_sum:#x}"
        )
    return CHECKSUM_VERIFY_PASS, f"the received bytes match the stored {algorithm} {stored:#x}"


def verify_range(
    local_dir: str, shuffle_id: int, map_id: int, start: int, offsets: Sequence[int], data: bytes
) -> Tuple[Verdict, ...]:
    """One verdict per block of a range read as (``offsets``, ``data``): None when it matches.

    Blocks of a map without a readable checksum file in a known algorithm are
    not checked (None): a missing checksum only loses diagnosis, as in Spark.
    """
    count = len(offsets) - 1
    unchecked: Tuple[Verdict, ...] = (None,) * count
    try:
        algorithm, path = _checksum_file(_resolver(local_dir), shuffle_id, map_id)
        if path is None or algorithm not in ALGORITHMS:
            if path is not None:
                logger.warning("cannot verify %s: unsupported checksum algorithm %s", path, algorithm)
            return unchecked
        assert algorithm is not None
        stored = _stored_checksums(path, start, start + count)
    except OSError as e:
        logger.warning("cannot verify shuffle %d map %d: %s", shuffle_id, map_id, e)
        return unchecked
    view = memoryview(data)
    base = offsets[0]
    verdicts: list[Verdict] = []
    for i in range(count):
        block = view[offsets[i] - base : offsets[i + 1] - base]
        if checksum_of(algorithm, block) == stored[i]:
            verdicts.append(None)
        else:
            verdicts.append(diagnose_corruption(local_dir, shuffle_id, map_id, start + i, bytes(block)))
    return tuple(verdicts)


def read_ranges(
    read_fn: Optional[ReadFn],
    local_dir: str,
    shuffle_id: int,
    ranges: Sequence[Tuple[int, int, int]],
    verify: bool,
) -> list[RangeResult]:
    """Read (and, with ``verify``, check) each ``(map_id, start, end)`` range; never raises.

    ``read_fn`` replaces :func:`read_range` (tests inject faults with it);
    verification and diagnosis always look at the real files.
    """
    read = read_fn if read_fn is not None else read_range
    results = []
    for map_id, start, end in ranges:
        try:
            offsets, data = read(local_dir, shuffle_id, map_id, start, end)
            offsets = tuple(offsets)
            verdicts = verify_range(local_dir, shuffle_id, map_id, start, offsets, data) if verify else None
        except OSError as e:
            results.append(RangeResult(error=str(e), retryable=True))
        except Exception as e:  # a bug or a bad read_fn: report it, do not retry it
            results.append(RangeResult(error=f"{type(e).__name__}: {e}"))
        else:
            results.append(RangeResult(offsets, bytes(data), verdicts))
    return results
