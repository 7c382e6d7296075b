"""Text files in and out: input splits at line boundaries, and atomic part files.

This module owns how ``ctx.text_file`` turns paths into partitions and how
``save_as_text_file`` writes them. It never holds a whole file in memory
(only one line, or one 1 MiB block of lines, at a time) and never leaves a
half-written part visible.

**Which files.** A file; a directory's files (not recursive, skipping
"hidden" names that start with ``.`` or ``_``, as Hadoop's input listing
does, so an output directory's ``_SUCCESS`` is not read as data); a glob
(a matched directory contributes its files); or a list of these, in order.

**Splits** (Hadoop's ``FileInputFormat`` sizing with ``CombineFileInputFormat``
packing)::

    goal       = total_bytes // max(min_partitions, 1)
    split_size = max(1, min(goal, max(max_split_bytes, min_split_bytes)))

The input is treated as its files concatenated in path order and cut every
``split_size`` bytes: a large file becomes several byte ranges, and small
files (and the remainders of large ones) are packed into one split until it
holds ``split_size`` bytes, so ten thousand 1 KiB files make a handful of
partitions. The last split absorbs a tail of up to 10% of ``split_size``
(Hadoop's ``SPLIT_SLOP`` of 1.1) rather than becoming a sliver. This gives at
least ``min_partitions`` splits whenever there are that many bytes. Unlike
Hadoop, a small file may be cut where a split fills up: that keeps every
split the same size, which is what guarantees the count.
``min_split_bytes`` (64 KiB) is a floor under ``max_split_bytes`` only: a cap
written without its unit (``128`` for ``128m``) must not turn a gigabyte
into millions of splits, while an explicit ``min_partitions`` is always
honoured. Empty files contribute nothing; if every file is empty the result
is one empty split, so the dataset still has a partition.

**Lines** (Hadoop's ``LineRecordReader``, as Spark's ``textFile``): a line
ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``, and comes back without its
terminator; a last line without one is still a line, and a file ending in a
terminator has no empty line after it. A line *belongs to the range in which
it starts*: a range ``[start, end)`` yields every line starting at ``p`` with
``start <= p < end``, reading past ``end`` to finish the last one, and skips
the head of a line that began before ``start`` (the previous range yields
it). Bytes are decoded per block of whole lines; bytes that do not decode
raise ``ShuffleError`` naming the file and byte offset.

**Output**: ``part-NNNNN`` files written through a temp name in the same
directory and ``os.replace``, so a retried task replaces its part
atomically; ``commit_output_dir`` sweeps leftover temp files and writes an
empty ``_SUCCESS``, as Hadoop's output committer does. Parts are not
fsynced: atomicity against readers is promised, durability across a power
cut is not (Spark's committer does not fsync either).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from shuffle.errors import InputNotFoundError, OutputExistsError, SerializationError, ShuffleError

__all__ = ["FileRange", "TextSplit", "expand_paths", "plan_text_splits", "read_lines",
           "prepare_output_dir", "write_text_part", "commit_output_dir", "abort_output_dir",
           "MIN_SPLIT_BYTES", "SPLIT_SLOP"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

MIN_SPLIT_BYTES = 64 * 1024
SPLIT_SLOP = 1.1
_BLOCK = 1 << 20            # bytes read at once while a range's lines are being read
_TAIL_BLOCK = 64 * 1024     # read size once past a range's end, finishing its last line
_WRITE_BATCH = 4096         # records joined into one write


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[start, end)`` of one file: the lines that start there."""

    path: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad byte range [{self.start}, {self.end}) of {self.path}")


@dataclass(frozen=True)
class TextSplit:
    """One partition's input: file ranges read in order. Picklable; holds no file handles."""

    ranges: Tuple[FileRange, ...]

    @property
    def size(self) -> int:
        """Bytes covered by the ranges (lines crossing the last end are read beyond it)."""
        return sum(r.end - r.start for r in self.ranges)


# ---------------------------------------------------------------- which files

def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


def _list_directory(directory: str) -> List[str]:
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise InputNotFoundError(directory, f"cannot list the directory: {e.strerror or e}") from e
    return sorted(os.path.join(directory, name) for name in names
                  if _visible(name) and os.path.isfile(os.path.join(directory, name)))


def expand_paths(path_or_glob: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """The files named by a file, a directory, a glob, or a list of these (see the module docstring).

    Raises ``InputNotFoundError`` when an item names nothing, a directory holds no
    files, or a file cannot be read.
    """
    items = [path_or_glob] if isinstance(path_or_glob, (str, os.PathLike)) else list(path_or_glob)
    if not items:
        raise InputNotFoundError("[]", "no path given")
    files: List[str] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"an input path must be a str or os.PathLike, not {type(item).__name__}")
        text = os.fspath(item)
        if os.path.isfile(text):
            found = [text]  # named explicitly: read even if its name looks hidden
        elif os.path.isdir(text):
            found = _list_directory(text)
            if not found:
                raise InputNotFoundError(text, "the directory has no files (hidden names starting with . or _ are skipped)")
        else:
            found = []
            for match in sorted(glob.glob(text)):
                if not _visible(os.path.basename(match)):
                    continue
                if os.path.isdir(match):
                    found.extend(_list_directory(match))
                elif os.path.isfile(match):
                    found.append(match)
            if not found:
                raise InputNotFoundError(text)
        for path in found:
            if not os.access(path, os.R_OK):
                raise InputNotFoundError(path, "the file is not readable")
        files.extend(found)
    return files


# ---------------------------------------------------------------- splits

def plan_text_splits(path_or_glob: Union[PathLike, Sequence[PathLike]], min_partitions: int,
                     max_split_bytes: int = 128 << 20, *,
                     min_split_bytes: int = MIN_SPLIT_BYTES) -> List[TextSplit]:
    """Splits of the input files, in path order (the rule is in the module docstring).

    Never returns an empty list: an input of empty files gives ``[TextSplit(())]``.
    """
    for name, value in (("min_partitions", min_partitions), ("max_split_bytes", max_split_bytes),
                        ("min_split_bytes", min_split_bytes)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if max_split_bytes < 1:
        raise ValueError(f"max_split_bytes must be positive, got {max_split_bytes}")
    files = []
    for path in expand_paths(path_or_glob):
        try:
            files.append((path, os.path.getsize(path)))
        except OSError as e:
            raise InputNotFoundError(path, f"cannot stat the file: {e.strerror or e}") from e
    total = sum(size for _, size in files)
    if total == 0:
        return [TextSplit(())]
    goal = total // max(min_partitions, 1)
    split_size = max(1, min(goal, max(max_split_bytes, min_split_bytes)))
    splits = _cut_windows(files, total, split_size)
    logger.debug("planned %d text splits of ~%d bytes over %d files (%d bytes)",
                 len(splits), split_size, len(files), total)
    return splits


def _cut_windows(files: Sequence[Tuple[str, int]], total: int, split_size: int) -> List[TextSplit]:
    """Cut the concatenation of ``files`` every ``split_size`` bytes; the last split takes the slop."""
    slop = int(split_size * (SPLIT_SLOP - 1))
    splits: List[TextSplit] = []
    current: List[FileRange] = []
    room = split_size
    left = total
    for path, size in files:
        position = 0
        while position < size:
            take = min(size - position, room)
            if current and current[-1].path == path and current[-1].end == position:
                current[-1] = FileRange(path, current[-1].start, position + take)  # slop continues a range
            else:
                current.append(FileRange(path, position, position + take))
            position += take
            room -= take
            left -= take
            if room == 0:
                if 0 < left <= slop:
                    room = left  # a sliver of a tail is cheaper inside this split than as its own task
                else:
                    splits.append(TextSplit(tuple(current)))
                    current, room = [], split_size
    if current:
        splits.append(TextSplit(tuple(current)))
    return splits


# ---------------------------------------------------------------- lines

def _check_encoding(encoding: str) -> None:
    # Lines are found by their terminator bytes before decoding, which is only
    # right for encodings that write "\r" and "\n" as those single bytes.
    try:
        ascii_compatible = "\r\n".encode(encoding) == b"\r\n"
    except (LookupError, UnicodeError) as e:
        raise ValueError(f"unknown encoding {encoding!r}") from e
    if not ascii_compatible:
        raise ValueError(f"encoding {encoding!r} does not write line ends as the bytes \\r and \\n; "
                         "text input supports ASCII-compatible encodings such as utf-8 or latin-1")


def read_lines(split: TextSplit, encoding: str = "utf-8") -> Iterator[str]:
    """Every line that starts inside one of the split's ranges, in order, without its terminator.

    Streams: memory holds one block of lines (about 1 MiB) or one line if longer.
    Raises ``ShuffleError`` naming file and byte offset for bytes that do not decode,
    ``InputNotFoundError`` for a file that vanished or became unreadable since planning.
    """
    _check_encoding(encoding)
    for file_range in split.ranges:
        yield from _read_range(file_range, encoding)


def _read_range(file_range: FileRange, encoding: str) -> Iterator[str]:
    path, start, end = file_range.path, file_range.start, file_range.end
    if start == end:
        return
    try:
        f = open(path, "rb", buffering=0)  # we read large blocks ourselves
    except (FileNotFoundError, PermissionError) as e:
        raise InputNotFoundError(path, f"cannot open it to read bytes [{start}, {end}): {e.strerror}") from e
    except OSError as e:
        raise ShuffleError(f"{path}: cannot open it to read bytes [{start}, {end}): {e}") from e
    with f:
        try:
            first = 0 if start == 0 else _first_line_start(f, start, end)
            if first is not None and first < end:
                f.seek(first)
                yield from _lines_from(f, path, first, end, encoding)
        except OSError as e:
            raise ShuffleError(f"{path}: cannot read bytes [{start}, {end}): {e}") from e


def _first_terminator(data: bytes, at: int) -> int:
    """Index of the first ``\\n`` or ``\\r`` at or after ``at`` in ``data``, or -1."""
    lf = data.find(b"\n", at)
    cr = data.find(b"\r", at, lf if lf >= 0 else len(data))
    return cr if cr >= 0 else lf


def _first_line_start(f: BinaryIO, start: int, end: int) -> Optional[int]:
    """The first line start ``p >= start`` found by scanning bytes ``[start - 1, end - 1)``, or None.

    A line starts after ``\\n``, or after a ``\\r`` that no ``\\n`` follows. Only a
    terminator before ``end - 1`` can start a line inside the range, so the scan is
    bounded by the range, however long the line it lands in.
    """
    offset = start - 1
    f.seek(offset)
    while offset < end - 1:
        block = f.read(min(_BLOCK, end - 1 - offset))
        if not block:
            return None
        i = _first_terminator(block, 0)
        if i >= 0:
            at = offset + i
            if block[i] == 0x0A:
                return at + 1
            if i + 1 < len(block):
                following = block[i + 1:i + 2]
            else:
                f.seek(at + 1)
                following = f.read(1)
            return at + 2 if following == b"\n" else at + 1
        offset += len(block)
    return None


def _complete_prefix(block: bytes) -> int:
    """Length of the part of ``block`` that ends with a whole terminator (0 if none).

    A ``\\r`` as the block's last byte is held back: the next block may start
    with the ``\\n`` of a ``\\r\\n``.
    """
    lf = block.rfind(b"\n")
    cr = block.rfind(b"\r", lf + 1)
    last = max(lf, cr)
    if last == len(block) - 1 and cr == last:
        lf = block.rfind(b"\n", 0, last)
        last = max(lf, block.rfind(b"\r", lf + 1, last))
    return last + 1


def _lines_from(f: BinaryIO, path: str, offset: int, end: int, encoding: str) -> Iterator[str]:
    """Lines starting at ``offset`` (a line start) up to the last one that starts before ``end``."""
    carry: List[bytes] = []  # one line not yet terminated, starting at ``offset``
    read_to = offset
    while True:
        # Big reads inside the range; small ones once past it, to finish its last line.
        block = f.read(min(_BLOCK, max(end - read_to, _TAIL_BLOCK)))
        read_to += len(block)
        if not block:
            data = b"".join(carry)
            if data:  # the last line has no terminator (or only a held-back "\r")
                yield from _decode_lines(data, offset, path, encoding)
            return
        if carry and carry[-1].endswith(b"\r"):
            # The "\r" held back from the previous block: judge it with what follows.
            carry[-1] = carry[-1][:-1]
            block = b"\r" + block
        cut = _complete_prefix(block)
        if cut == 0:
            carry.append(block)
            continue
        carry.append(block[:cut])
        data = b"".join(carry)
        carry = [block[cut:]] if cut < len(block) else []
        if offset + len(data) > end:
            # Lines starting at or after ``end`` belong to the next range: stop
            # after the line that holds byte ``end - 1``. (If that terminator is the
            # "\r" of a "\r\n", the "\n" left out changes nothing: "\r" ends the line.)
            stop = _first_terminator(data, max(end - offset - 1, 0))
            yield from _decode_lines(data[:stop + 1], offset, path, encoding)
            return
        yield from _decode_lines(data, offset, path, encoding)
        offset += len(data)
        if offset >= end:
            return


def _decode_lines(data: bytes, offset: int, path: str, encoding: str) -> List[str]:
    """Decode whole lines at file offset ``offset`` and split them at ``\\r\\n``, ``\\r``, ``\\n``."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ShuffleError(f"{path}: cannot decode byte {offset + e.start} as {encoding} "
                           f"({e.reason}: {data[e.start:e.end]!r})") from e
    if "\r" in text:
        # "\r\n" first, so that its "\r" is not taken for a lone one.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # the terminator ends the last line; it does not start an empty one
    return lines


# ---------------------------------------------------------------- output

def prepare_output_dir(directory: PathLike, overwrite: bool = False) -> Path:
    """Create ``directory`` for a job's output.

    An existing path raises ``OutputExistsError`` unless ``overwrite``, which removes
    it first. Refuses to remove the working directory or one of its parents.
    """
    target = Path(directory)
    if os.path.lexists(target):
        if not overwrite:
            raise OutputExistsError(str(target))
        if target.is_dir() and not target.is_symlink():
            here = Path.cwd().resolve()
            resolved = target.resolve()
            if resolved == here or resolved in here.parents:
                raise ShuffleError(f"refusing to overwrite {target}: it is the working directory or contains it")
            shutil.rmtree(target)
        else:
            target.unlink()
    try:
        target.mkdir(parents=True)
    except FileExistsError as e:  # another job created it since we looked
        raise OutputExistsError(str(target)) from e
    return target


def write_text_part(directory: PathLike, index: int, records: Iterable[object]) -> Path:
    """Write ``part-{index:05d}`` in ``directory``: one ``str(record)`` per line, UTF-8, "\\n" after each.

    Written to ``.part-{index:05d}.{uuid}.tmp`` and renamed over the part, so a
    reader sees the old part or the whole new one, and a retried task replaces
    its part. If anything raises (the records included), the temp file is removed
    and the part is left as it was. A record whose text cannot be encoded raises
    ``SerializationError`` naming its position.
    """
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"part index must be a non-negative int, got {index!r}")
    folder = Path(directory)
    target = folder / f"part-{index:05d}"
    temp = folder / f".part-{index:05d}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temp, "wb") as out:
            batch: List[str] = []
            written = 0
            for record in records:
                batch.append(str(record))
                if len(batch) == _WRITE_BATCH:
                    out.write(_encode_batch(batch, written))
                    written += len(batch)
                    batch.clear()
            if batch:
                out.write(_encode_batch(batch, written))
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def _encode_batch(lines: List[str], first_position: int) -> bytes:
    lines.append("")  # so the join ends with the last line's "\n"
    try:
        return "\n".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        for i, line in enumerate(lines):  # rare: find which record it was
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as e:
                raise SerializationError("str", f"its text cannot be written as UTF-8: {e.reason}",
                                         first_position + i) from e
        raise
    finally:
        lines.pop()


def commit_output_dir(directory: PathLike) -> None:
    """Remove leftover temp files of failed attempts and mark the output complete with ``_SUCCESS``."""
    target = Path(directory)
    for temp in target.glob(".part-*.tmp"):
        temp.unlink(missing_ok=True)
    (target / "_SUCCESS").write_bytes(b"")


def abort_output_dir(directory: PathLike) -> None:
    """Remove a failed job's output directory and everything in it."""
    shutil.rmtree(directory, ignore_errors=True)
