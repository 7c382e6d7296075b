"""Text files in and out: input splits at line boundaries, and atomic part files.

Input follows Hadoop's text input, as Spark's ``textFile`` does: the split
size is ``min(total / min_partitions, max_split_bytes)`` (never below
``MIN_SPLIT_BYTES``, so tiny inputs do not become thousands of tasks); a file
more than 10% larger than that (Hadoop's ``SPLIT_SLOP``) is cut into byte
ranges, and small files and remainders are packed in path order into one
split until it reaches the split size, so ten thousand small files make a
handful of partitions. A line belongs to the range in which it *starts*: a
range that starts mid-line skips to the next line, and a range reads on past
its end to finish its last line. Lines come back without ``\\n`` or ``\\r\\n``.

Output writes ``part-NNNNN`` through a temp name and a rename, so a reader
never sees half a part and a retried task replaces its part atomically.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Tuple, Union

from shuffle.errors import InputNotFoundError, OutputExistsError, ShuffleError

__all__ = ["FileRange", "TextSplit", "expand_paths", "plan_text_splits", "read_lines",
           "prepare_output_dir", "write_text_part", "commit_output_dir", "abort_output_dir"]

PathLike = Union[str, "os.PathLike[str]"]

MIN_SPLIT_BYTES = 64 * 1024
SPLIT_SLOP = 1.1
_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[start, end)`` of one file: the lines that start there."""

    path: str
    start: int
    end: int


@dataclass(frozen=True)
class TextSplit:
    """One partition's input: a few file ranges, read in order."""

    ranges: Tuple[FileRange, ...]

    @property
    def size(self) -> int:
        return sum(r.end - r.start for r in self.ranges)


def expand_paths(path_or_glob: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """The files named by a file, a directory (its visible files), a glob, or a list of these."""
    items = [path_or_glob] if isinstance(path_or_glob, (str, os.PathLike)) else list(path_or_glob)
    if not items:
        raise InputNotFoundError("[]", "no path given")
    files: List[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(os.path.join(text, name) for name in os.listdir(text)
                           if not name.startswith((".", "_")) and os.path.isfile(os.path.join(text, name)))
            if not found:
                raise InputNotFoundError(text, "the directory has no files")
        elif os.path.isfile(text):
            found = [text]
        else:
            found = sorted(p for p in glob.glob(text) if os.path.isfile(p))
            if not found:
                raise InputNotFoundError(text)
        for path in found:
            if not os.access(path, os.R_OK):
                raise InputNotFoundError(path, "not readable")
        files.extend(found)
    return files


def plan_text_splits(path_or_glob: Union[PathLike, Sequence[PathLike]], min_partitions: int,
                     max_split_bytes: int = 128 << 20) -> List[TextSplit]:
    """Splits of the input files (see the module docstring for the rule)."""
    sizes = [(path, os.path.getsize(path)) for path in expand_paths(path_or_glob)]
    total = sum(size for _, size in sizes)
    goal = total // max(min_partitions, 1)
    split_size = max(min(goal, max_split_bytes), min(MIN_SPLIT_BYTES, max_split_bytes), 1)
    splits: List[TextSplit] = []
    pending: List[FileRange] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            splits.append(TextSplit(tuple(pending)))
        pending, pending_bytes = [], 0

    for path, size in sizes:
        start = 0
        if size > split_size * SPLIT_SLOP:
            flush()  # keep file order: packed small files come before this file's ranges
        while size - start > split_size * SPLIT_SLOP:
            splits.append(TextSplit((FileRange(path, start, start + split_size),)))
            start += split_size
        if size - start > 0:
            pending.append(FileRange(path, start, size))
            pending_bytes += size - start
            if pending_bytes >= split_size:
                flush()
    flush()
    return splits or [TextSplit(())]


def read_lines(split: TextSplit, encoding: str = "utf-8") -> Iterator[str]:
    """Every line that starts inside one of the split's ranges, streamed."""
    for file_range in split.ranges:
        yield from _read_range(file_range, encoding)


def _read_range(file_range: FileRange, encoding: str) -> Iterator[str]:
    with open(file_range.path, "rb", buffering=_READ_BUFFER) as f:
        position = file_range.start
        if position > 0:
            # The line that crosses our start belongs to the previous range, unless
            # the byte before us ends a line: then a line starts exactly here.
            f.seek(position - 1)
            position += len(f.readline()) - 1
        while position < file_range.end:
            raw = f.readline()
            if not raw:
                return
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise ShuffleError(
                    f"{file_range.path}: cannot decode the line at byte {position + e.start} as {encoding}: {e.reason}"
                ) from e
            position += len(raw)
            if line.endswith("\n"):
                line = line[:-2] if line.endswith("\r\n") else line[:-1]
            yield line


def prepare_output_dir(directory: PathLike, overwrite: bool = False) -> Path:
    """Create ``directory`` for a job's output; an existing one is refused unless ``overwrite``."""
    target = Path(directory)
    if target.exists():
        if not overwrite:
            raise OutputExistsError(str(target))
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    target.mkdir(parents=True)
    return target


def write_text_part(directory: PathLike, index: int, records: Iterable[object]) -> Path:
    """Write ``part-{index:05d}`` (one ``str(record)`` per line) atomically; returns its path."""
    target = Path(directory) / f"part-{index:05d}"
    temp = Path(directory) / f".part-{index:05d}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as out:
            for record in records:
                out.write(str(record))
                out.write("\n")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def commit_output_dir(directory: PathLike) -> None:
    """Remove leftover temp files of failed attempts and mark the output complete (``_SUCCESS``)."""
    target = Path(directory)
    for temp in target.glob(".part-*.tmp"):
        temp.unlink(missing_ok=True)
    (target / "_SUCCESS").touch()


def abort_output_dir(directory: PathLike) -> None:
    """Remove a failed job's output directory."""
    shutil.rmtree(directory, ignore_errors=True)
