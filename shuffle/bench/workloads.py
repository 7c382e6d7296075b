"""W1-W5: each workload as an engine pipeline and as its plain single-process baseline.

Every run ends in a small *summary* computed where the data is (on the workers
for the engine), and a run only counts when its summary equals the baseline's:
W1 keys, total and a key-weighted digest; W2 groups, values and digest; W3 the
record count of every partition; W4 count, digest and total order; W5 distinct
words, total and digest. Records are Python objects on both sides: the
baseline's time includes turning the arrays into ``(int, int)`` tuples, as the
engine's map tasks must.
"""

from __future__ import annotations

import operator
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from shuffle.bench.data import Corpus, Table

__all__ = ["Workload", "WORKLOADS", "INPUT_SLICES", "OUTPUT_PARTITIONS"]

INPUT_SLICES = 8
OUTPUT_PARTITIONS = 64

Summary = Tuple[Any, ...]


@dataclass(frozen=True)
class Workload:
    """One benchmark: its input kind, the engine pipeline and the single-process baseline."""

    name: str
    title: str
    input_kind: str                                  # "table" or "corpus"
    engine: Callable[[Any, Any], Summary]            # (context, input) -> summary
    baseline: Callable[[Any], Summary]               # input -> summary
    baseline_name: str
    combines: bool = False                           # map-side combine: bypass and serialized cannot run it


class TableSlices:
    """Map-task input: slice ``index`` of the table, loaded by the task itself (nothing travels)."""

    def __init__(self, table: Table, slices: int) -> None:
        self.table, self.slices = table, slices

    def __call__(self, index: int, _ignored: Iterable[Any]) -> Iterator[Tuple[int, int]]:
        return self.table.records_of_slice(index, self.slices)


def table_dataset(ctx: Any, table: Table) -> Any:
    return ctx.parallelize(range(INPUT_SLICES), INPUT_SLICES).map_partitions_with_index(
        TableSlices(table, INPUT_SLICES))


# ---------------------------------------------------------------- W1 reduce_by_key
def sums_summary(items: Iterable[Tuple[int, int]]) -> List[Summary]:
    keys = total = digest = 0
    for key, value in items:
        keys += 1
        total += value
        digest += key * value
    return [(keys, total, digest)]


def add_summaries(parts: Iterable[Summary]) -> Summary:
    return tuple(sum(column) for column in zip(*parts))


def w1_engine(ctx: Any, table: Table) -> Summary:
    sums = table_dataset(ctx, table).reduce_by_key(operator.add, OUTPUT_PARTITIONS)
    return add_summaries(sums.map_partitions(sums_summary).collect())


def w1_baseline(table: Table) -> Summary:
    totals: Dict[int, int] = {}
    get = totals.get
    for key, value in table.all_records():
        totals[key] = get(key, 0) + value
    return sums_summary(totals.items())[0]


# ---------------------------------------------------------------- W2 group_by_key
def groups_summary(items: Iterable[Tuple[int, Iterable[int]]]) -> List[Summary]:
    groups = values = digest = 0
    for key, group in items:
        groups += 1
        group = list(group)
        values += len(group)
        digest += key * sum(group)
    return [(groups, values, digest)]


def w2_engine(ctx: Any, table: Table) -> Summary:
    groups = table_dataset(ctx, table).group_by_key(OUTPUT_PARTITIONS)
    return add_summaries(groups.map_partitions(groups_summary).collect())


def w2_baseline(table: Table) -> Summary:
    groups: Dict[int, List[int]] = {}
    get = groups.get
    for key, value in table.all_records():
        group = get(key)
        if group is None:
            groups[key] = [value]
        else:
            group.append(value)
    return groups_summary(groups.items())[0]


# ---------------------------------------------------------------- W3 partition_by
def counts_summary(index: int, items: Iterable[Any]) -> List[Tuple[int, int]]:
    return [(index, sum(1 for _ in items))]


def per_partition(pairs: Iterable[Tuple[int, int]]) -> Summary:
    counts = [0] * OUTPUT_PARTITIONS
    for index, count in pairs:
        counts[index] += count
    return tuple(counts)


def w3_engine(ctx: Any, table: Table) -> Summary:
    moved = table_dataset(ctx, table).partition_by(OUTPUT_PARTITIONS)
    return per_partition(moved.map_partitions_with_index(counts_summary).collect())


def w3_baseline(table: Table) -> Summary:
    # hash() is PySpark's portable_hash for ints, so these are HashPartitioner's buckets.
    buckets: List[List[Tuple[int, int]]] = [[] for _ in range(OUTPUT_PARTITIONS)]
    n = OUTPUT_PARTITIONS
    for record in table.all_records():
        buckets[hash(record[0]) % n].append(record)
    return tuple(len(bucket) for bucket in buckets)


# ---------------------------------------------------------------- W4 sort_by_key
def order_summary(index: int, items: Iterable[Tuple[int, int]]) -> List[Summary]:
    """(partition, count, digest, first key, last key, sorted within)."""
    count = digest = 0
    first: Optional[int] = None
    last: Optional[int] = None
    ordered = True
    for key, value in items:
        if last is not None and key < last:
            ordered = False
        if first is None:
            first = key
        last = key
        count += 1
        digest += key * value
    return [(index, count, digest, first, last, ordered)]


def total_order(parts: Iterable[Summary]) -> Summary:
    """(count, digest, totally ordered) from the per-partition summaries in partition order."""
    count = digest = 0
    ordered = True
    previous_last: Optional[int] = None
    for _, n, d, first, last, within in sorted(parts):
        count += n
        digest += d
        ordered = ordered and within
        if n:
            if previous_last is not None and first < previous_last:
                ordered = False
            previous_last = last
    return (count, digest, ordered)


def w4_engine(ctx: Any, table: Table) -> Summary:
    ordered = table_dataset(ctx, table).sort_by_key(num_partitions=OUTPUT_PARTITIONS)
    return total_order(ordered.map_partitions_with_index(order_summary).collect())


def w4_baseline(table: Table) -> Summary:
    records = sorted(table.all_records(), key=operator.itemgetter(0))
    return total_order(order_summary(0, records))


# ---------------------------------------------------------------- W5 word count
def words_summary(items: Iterable[Tuple[str, int]]) -> List[Summary]:
    distinct = total = digest = 0
    for word, count in items:
        distinct += 1
        total += count
        digest += count * zlib.crc32(word.encode())
    return [(distinct, total, digest)]


def to_pair(word: str) -> Tuple[str, int]:
    return (word, 1)


def w5_engine(ctx: Any, corpus: Corpus) -> Summary:
    counts = (ctx.text_file(list(corpus.paths), min_partitions=INPUT_SLICES)
              .flat_map(str.split)
              .map(to_pair)
              .reduce_by_key(operator.add, OUTPUT_PARTITIONS))
    return add_summaries(counts.map_partitions(words_summary).collect())


def w5_baseline(corpus: Corpus) -> Summary:
    counts: Dict[str, int] = {}
    get = counts.get
    for path in corpus.paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                for word in line.split():
                    counts[word] = get(word, 0) + 1
    return words_summary(counts.items())[0]


WORKLOADS: Dict[str, Workload] = {w.name: w for w in [
    Workload("W1", "reduce_by_key(add)", "table", w1_engine, w1_baseline, "dict", combines=True),
    Workload("W2", "group_by_key", "table", w2_engine, w2_baseline, "dict of lists"),
    Workload("W3", "partition_by(64) + count", "table", w3_engine, w3_baseline, "buckets"),
    Workload("W4", "sort_by_key(64)", "table", w4_engine, w4_baseline, "sorted"),
    Workload("W5", "word count", "corpus", w5_engine, w5_baseline, "dict", combines=True),
]}
