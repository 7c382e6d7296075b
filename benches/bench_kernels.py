"""The Cython kernels against their plain-Python twins, side by side.

Each benchmark runs twice, ``[native]`` and ``[twin]`` (see ``conftest.impl``),
in one ``benchmark.group``, so pytest-benchmark's table puts the two together
and the ratio of their means is the kernel's speed-up. Both see the same input
(fixed seeds) and are checked against the NumPy or Python equivalent once.

- ``pointers.radix_sort_by_partition``: 1M packed pointers over 64, 1000 and
  2**24 partitions (one, two and three radix passes in the compiled kernel; the
  twin is NumPy's stable argsort).
- ``recordbuf.RecordBuffer``: ``insert_batch`` of 200k serialized records,
  ``sorted_partitions`` of the filled buffer, and both in a row as the
  serialized writer does them.
- ``hashing``: ``partition_ids`` of 200k int keys, 20k str keys and 20k
  (int, str) keys; ``portable_hash`` mapped over 200k int and 20k str keys
  (what the sort writer does when it orders a combined run by hash).

Run from the repo root (see benches/README.md for saving and comparing)::

    .venv/bin/python -m pytest benches/bench_kernels.py --benchmark-enable
"""

from __future__ import annotations

import numpy as np

from conftest import per_element
from shuffle._twins.hashing import portable_hash as reference_hash


# ---------------------------------------------------------------------- pointers


def test_radix_sort_by_partition_1m(benchmark, impl, pointers_1m):
    num_partitions, pointers = pointers_1m
    kernel = impl.load("pointers").radix_sort_by_partition
    benchmark.group = f"pointers.radix_sort_by_partition: 1M pointers, {num_partitions} partitions"
    per_element(benchmark, len(pointers), "pointer")
    out = benchmark(kernel, pointers)
    expected = pointers[np.argsort(pointers >> np.uint64(40), kind="stable")]
    assert np.array_equal(out, expected)


# ---------------------------------------------------------------------- recordbuf


def test_record_buffer_insert_200k(benchmark, impl, serialized_records):
    pids, records, _ = serialized_records
    RecordBuffer = impl.load("recordbuf").RecordBuffer
    benchmark.group = "recordbuf.insert_batch: 200k records of 8..40 bytes"
    per_element(benchmark, len(records))

    def insert() -> object:
        buf = RecordBuffer()
        buf.insert_batch(pids, records)
        return buf

    buf = benchmark(insert)
    assert buf.num_records == len(records)
    assert buf.data_bytes == sum(map(len, records))  # record bytes, without length prefixes


def test_record_buffer_sorted_partitions_200k(benchmark, impl, serialized_records):
    pids, records, num_partitions = serialized_records
    buf = impl.load("recordbuf").RecordBuffer()
    buf.insert_batch(pids, records)
    benchmark.group = "recordbuf.sorted_partitions: 200k records over 1000 partitions"
    per_element(benchmark, len(records))

    def drain() -> int:
        return sum(len(chunk) for _, chunk in buf.sorted_partitions(num_partitions))

    assert benchmark(drain) == buf.data_bytes


def test_record_buffer_insert_and_drain_200k(benchmark, impl, serialized_records):
    pids, records, num_partitions = serialized_records
    RecordBuffer = impl.load("recordbuf").RecordBuffer
    benchmark.group = "recordbuf insert_batch + sorted_partitions: 200k records"
    per_element(benchmark, len(records))

    def insert_and_drain() -> int:
        buf = RecordBuffer()
        buf.insert_batch(pids, records)
        total = sum(len(chunk) for _, chunk in buf.sorted_partitions(num_partitions))
        buf.reset()
        return total

    assert benchmark(insert_and_drain) == sum(map(len, records))


# ---------------------------------------------------------------------- hashing


def _check_partition_ids(out: np.ndarray, keys: list, num_partitions: int) -> None:
    """Spot-check 500 keys against the twin's per-key definition (all keys would be slow)."""
    assert out.dtype == np.int32 and len(out) == len(keys)
    sample = range(0, len(keys), max(1, len(keys) // 500))
    assert all(out[i] == reference_hash(keys[i]) % num_partitions for i in sample)


def test_partition_ids_int_keys_200k(benchmark, impl, int_keys):
    partition_ids = impl.load("hashing").partition_ids
    benchmark.group = "hashing.partition_ids: 200k int keys, 64 partitions"
    per_element(benchmark, len(int_keys), "key")
    out = benchmark(partition_ids, int_keys, 64)
    _check_partition_ids(out, int_keys, 64)


def test_partition_ids_str_keys_20k(benchmark, impl, str_keys):
    partition_ids = impl.load("hashing").partition_ids
    benchmark.group = "hashing.partition_ids: 20k str keys, 64 partitions"
    per_element(benchmark, len(str_keys), "key")
    out = benchmark(partition_ids, str_keys, 64)
    _check_partition_ids(out, str_keys, 64)


def test_partition_ids_tuple_keys_20k(benchmark, impl, tuple_keys):
    partition_ids = impl.load("hashing").partition_ids
    benchmark.group = "hashing.partition_ids: 20k (int, str) keys, 64 partitions"
    per_element(benchmark, len(tuple_keys), "key")
    out = benchmark(partition_ids, tuple_keys, 64)
    _check_partition_ids(out, tuple_keys, 64)


def test_portable_hash_map_int_keys_200k(benchmark, impl, int_keys):
    portable_hash = impl.load("hashing").portable_hash
    benchmark.group = "hashing.portable_hash per key: 200k int keys"
    per_element(benchmark, len(int_keys), "key")

    def hashes() -> np.ndarray:
        return np.fromiter(map(portable_hash, int_keys), dtype=np.int64, count=len(int_keys))

    out = benchmark(hashes)
    assert out.tolist() == [hash(k) for k in int_keys]  # small ints hash to themselves


def test_portable_hash_map_str_keys_20k(benchmark, impl, str_keys):
    portable_hash = impl.load("hashing").portable_hash
    benchmark.group = "hashing.portable_hash per key: 20k str keys"
    per_element(benchmark, len(str_keys), "key")

    def hashes() -> np.ndarray:
        return np.fromiter(map(portable_hash, str_keys), dtype=np.int64, count=len(str_keys))

    out = benchmark(hashes)
    assert all(out[i] == reference_hash(str_keys[i]) for i in range(0, len(str_keys), 200))
