"""Word count: the demo's corpus generator and the pipeline ``shuffle demo`` / ``wordcount`` run.

The corpus is deterministic: a vocabulary of random lowercase words (3 to 12
letters) and word draws from a Zipf distribution over it, both from a fixed
numpy seed, written as text files of ten words per line. Frequent words make
map-side combine pay off; the long tail of rare words makes the combine map
large enough to spill under a small memory budget.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import List, Tuple

import numpy as np

from shuffle.engine.context import Context

__all__ = ["generate_corpus", "word_count", "top_words"]

ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
WORDS_PER_LINE = 10


def make_vocabulary(size: int, rng: np.random.Generator) -> List[str]:
    """``size`` distinct random lowercase words of 3 to 12 letters."""
    words: dict = {}
    while len(words) < size:
        lengths = rng.integers(3, 13, size=size)
        letters = ALPHABET[rng.integers(0, 26, size=int(lengths.sum()))].tobytes().decode()
        ends = np.cumsum(lengths)
        for start, end in zip(ends - lengths, ends):
            words.setdefault(letters[start:end], None)
            if len(words) == size:
                break
    return list(words)


def generate_corpus(directory: Path, num_words: int, vocabulary: int = 100_000, files: int = 4,
                    seed: int = 20240602, zipf_a: float = 1.1) -> List[Path]:
    """Write ``num_words`` Zipf-distributed words into ``files`` text files; returns their paths."""
    rng = np.random.default_rng(seed)
    vocab = np.array(make_vocabulary(vocabulary, rng), dtype=object)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = -(-num_words // files)
    for index in range(files):
        count = max(0, min(per_file, num_words - index * per_file))
        ranks = rng.zipf(zipf_a, size=count)
        ranks = ranks[ranks <= vocabulary]  # Zipf has an unbounded tail: keep ranks in the vocabulary
        while len(ranks) < count:
            more = rng.zipf(zipf_a, size=count - len(ranks))
            ranks = np.concatenate([ranks, more[more <= vocabulary]])
        drawn = vocab[ranks - 1]
        path = directory / f"corpus-{index:03d}.txt"
        with open(path, "w", encoding="utf-8") as out:
            for start in range(0, len(drawn), WORDS_PER_LINE):
                out.write(" ".join(drawn[start:start + WORDS_PER_LINE]))
                out.write("\n")
        paths.append(path)
    return paths


def word_count(ctx: Context, paths: List[str], num_partitions: int) -> "object":
    """The dataset of ``(word, count)``: text -> words -> (word, 1) -> reduce_by_key(add)."""
    return (ctx.text_file(paths)
            .flat_map(str.split)
            .map(lambda word: (word, 1))
            .reduce_by_key(operator.add, num_partitions))


def top_words(counts: "object", n: int) -> List[Tuple[str, int]]:
    """The ``n`` most frequent words, through a range-partitioned sort by count (descending).

    The sort key is ``(count, word)`` so ties come out in a fixed order.
    """
    by_count = counts.map(lambda wc: ((wc[1], wc[0]), None)).sort_by_key(ascending=False)  # type: ignore[attr-defined]
    return [(word, count) for (count, word), _ in by_count.take(n)]
