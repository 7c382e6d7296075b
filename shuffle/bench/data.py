"""The benchmark inputs: generated from fixed seeds once, then read from a disk cache.

W1-W4 share one table of ``records`` int64 keys (uniform over [0, 1,000,000))
and int64 values (uniform over [0, 1000)), drawn keys first then values from
``numpy.random.default_rng(20240601)``; W5 is a text corpus of Zipf(1.1) words
over 100,000 random lowercase words (``default_rng(20240602)``).

Each cache entry is written under a temporary name and renamed, so a run
interrupted while generating never leaves a half-written input behind for the
next one. Generation time is never part of a measured run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np

from shuffle.wordcount import generate_corpus

__all__ = ["KEY_RANGE", "VALUE_RANGE", "TABLE_SEED", "CORPUS_SEED", "CORPUS_VOCABULARY",
           "Table", "Corpus", "default_cache_dir", "table", "corpus"]

KEY_RANGE = 1_000_000
VALUE_RANGE = 1000
TABLE_SEED = 20240601
CORPUS_SEED = 20240602
CORPUS_VOCABULARY = 100_000
CORPUS_ZIPF_A = 1.1
CORPUS_FILES = 8


def default_cache_dir() -> Path:
    """``$SHUFFLE_BENCH_CACHE``, else ``$XDG_CACHE_HOME/shuffle-bench``, else ``~/.cache/shuffle-bench``."""
    explicit = os.environ.get("SHUFFLE_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shuffle-bench"


@dataclass(frozen=True)
class Table:
    """``records`` (key, value) int64 pairs in two ``.npy`` files; picklable, so tasks load their own slice."""

    keys_path: str
    values_path: str
    records: int

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """Both columns, memory-mapped read-only."""
        return np.load(self.keys_path, mmap_mode="r"), np.load(self.values_path, mmap_mode="r")

    def slice_bounds(self, index: int, slices: int) -> Tuple[int, int]:
        return index * self.records // slices, (index + 1) * self.records // slices

    def records_of_slice(self, index: int, slices: int) -> Iterator[Tuple[int, int]]:
        """Slice ``index`` of ``slices`` as Python ``(int, int)`` tuples (the object path)."""
        lo, hi = self.slice_bounds(index, slices)
        keys, values = self.arrays()
        return zip(keys[lo:hi].tolist(), values[lo:hi].tolist())

    def all_records(self) -> Iterator[Tuple[int, int]]:
        return self.records_of_slice(0, 1)


@dataclass(frozen=True)
class Corpus:
    """Text files of Zipf-distributed words, ten per line."""

    paths: Tuple[str, ...]
    words: int


def table(records: int, cache_dir: Path) -> Table:
    """The W1-W4 input of ``records`` rows, generated on first use."""
    if records < 1:
        raise ValueError(f"records must be at least 1, got {records}")
    directory = cache_dir / f"table-{TABLE_SEED}-{records}"
    keys, values = directory / "keys.npy", directory / "values.npy"
    if not (keys.exists() and values.exists()):
        with _building(directory) as tmp:
            rng = np.random.default_rng(TABLE_SEED)
            np.save(tmp / "keys.npy", rng.integers(0, KEY_RANGE, size=records, dtype=np.int64))
            np.save(tmp / "values.npy", rng.integers(0, VALUE_RANGE, size=records, dtype=np.int64))
    return Table(str(keys), str(values), records)


def corpus(words: int, cache_dir: Path) -> Corpus:
    """The W5 input of ``words`` words, generated on first use."""
    if words < 1:
        raise ValueError(f"words must be at least 1, got {words}")
    directory = cache_dir / f"corpus-{CORPUS_SEED}-{words}"
    if not directory.exists():
        with _building(directory) as tmp:
            generate_corpus(tmp, words, vocabulary=CORPUS_VOCABULARY, files=CORPUS_FILES,
                            seed=CORPUS_SEED, zipf_a=CORPUS_ZIPF_A)
    paths: List[str] = sorted(str(p) for p in directory.glob("corpus-*.txt"))
    return Corpus(tuple(paths), words)


class _building:
    """A temporary directory beside ``target``, renamed onto it on success, removed on failure."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            try:
                os.rename(self.tmp, self.target)
            except OSError:
                if not self.target.exists():  # not a concurrent run that finished first
                    raise
        shutil.rmtree(self.tmp, ignore_errors=True)
