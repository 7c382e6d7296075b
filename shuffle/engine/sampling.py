"""The sample behind ``sort_by_key``'s range bounds: one pass, a fixed-size uniform sample per partition.

PySpark counts the dataset, then samples each record with probability
``20 n / count``: two passes over the input, and a random draw per record.
This module does what Spark's own ``RangePartitioner.sketch`` does instead:
one pass in which each input partition keeps a uniform sample of a fixed size
(three times its share of ``20 n`` keys) and counts its records. The driver
then takes from each partition a share of the ``20 n`` keys proportional to
its count, so a big partition weighs as much as it should.

Records are read in chunks and sampled with numpy ("bottom-k": each record
draws a uniform priority, the k lowest are kept), so no Python frame runs per
record. Seeds are fixed per partition: a rerun samples the same keys.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import Any, Callable, Iterator, List, Tuple

import numpy as np

from shuffle.partitioner import RangePartitioner
from shuffle.write.records import all_tuples, first_malformed, malformed

__all__ = ["per_partition_sample_size", "sketch_keys", "proportional_sample"]

_CHUNK = 65536

Sketch = Tuple[int, List[Any]]  # (records in the partition, its sampled keys)


def per_partition_sample_size(num_partitions: int, input_partitions: int) -> int:
    """Keys each input partition keeps: three times its share of the target (Spark's oversampling)."""
    target = RangePartitioner.sample_size(num_partitions)
    return max(1, math.ceil(3 * target / max(1, input_partitions)))


def sketch_keys(k: int) -> Callable[[int, Iterator[Any]], Iterator[Sketch]]:
    """A partition function yielding one ``(count, keys)``: the partition's size and up to ``k`` of its keys."""
    def run(split: int, records: Iterator[Any]) -> Iterator[Sketch]:
        rng = np.random.default_rng(split)
        kept_priority = np.empty(0)
        kept_keys: List[Any] = []
        count = 0
        while True:
            chunk = list(islice(records, _CHUNK))
            if not chunk:
                break
            _check_pairs(chunk, count)
            priority = rng.random(len(chunk))
            if len(kept_keys) == k:  # only records that beat the current k-th can enter
                chosen = np.flatnonzero(priority < kept_priority.max())
            else:
                chosen = np.arange(len(chunk))
            if len(chosen):
                keys = kept_keys + [chunk[i][0] for i in chosen.tolist()]
                priorities = np.concatenate([kept_priority, priority[chosen]])
                if len(keys) > k:
                    best = np.argpartition(priorities, k - 1)[:k]
                    kept_keys = [keys[i] for i in best.tolist()]
                    kept_priority = priorities[best]
                else:
                    kept_keys, kept_priority = keys, priorities
            count += len(chunk)
        # Lowest priority first: then any prefix is itself a bottom-k, i.e. uniform, sample.
        order = np.argsort(kept_priority, kind="stable").tolist()
        yield count, [kept_keys[i] for i in order]
    return run


def proportional_sample(sketches: List[Sketch], target: int) -> List[Any]:
    """About ``target`` keys in all, each partition contributing in proportion to its record count."""
    total = sum(count for count, _ in sketches)
    if total == 0:
        return []
    sample: List[Any] = []
    for count, keys in sketches:
        share = min(len(keys), math.ceil(target * count / total))
        sample.extend(keys[:share])  # keys come lowest priority first: a prefix is a uniform subsample
    return sample


def _check_pairs(chunk: List[Any], position: int) -> None:
    """Every record a (key, value) 2-tuple, checked in C loops; the first that is not is named."""
    if all_tuples(chunk) and set(map(len, chunk)) <= {2}:
        return
    bad = first_malformed(chunk)
    assert bad is not None  # a non-tuple or a tuple of another length is there
    raise malformed(chunk[bad]).at(position + bad)
