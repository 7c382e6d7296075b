"""Serialized-writer kernels, compiled against their Python twins, side by side.

Run and save (pytest-benchmark records the machine: CPU, cores, Python, versions)::

    .venv/bin/python -m pytest benches/bench_kernels.py --benchmark-enable \
        --benchmark-json=benches/results/kernels-$(date +%F).json

Without ``--benchmark-enable`` (the project default) each case runs once as a
smoke test. Inputs use fixed seeds so runs compare.
"""

import numpy as np
import pytest

from shuffle._native import pointers as native_pointers
from shuffle._native import recordbuf as native_recordbuf
from shuffle._twins import pointers as twin_pointers
from shuffle._twins import recordbuf as twin_recordbuf

POINTERS = [pytest.param(native_pointers, id="compiled"), pytest.param(twin_pointers, id="twin")]
RECORDBUF = [pytest.param(native_recordbuf, id="compiled"), pytest.param(twin_recordbuf, id="twin")]

NUM_POINTERS = 1_000_000
NUM_RECORDS = 200_000
NUM_PARTITIONS = 1000


@pytest.fixture(scope="module", params=[1000, 2**24], ids=["1000_partitions", "2^24_partitions"])
def pointers_1m(request):
    """1M pointers over ``param`` partitions (1000: two radix passes; 2**24: three)."""
    rng = np.random.default_rng(42)
    n = NUM_POINTERS
    return twin_pointers.pack_array(
        rng.integers(0, request.param, n),
        rng.integers(0, twin_pointers.MAX_PAGE_NUMBER + 1, n),
        rng.integers(0, twin_pointers.MAX_OFFSET + 1, n),
    )


@pytest.fixture(scope="module")
def small_records():
    """200k records of 8..40 bytes over 1000 partitions."""
    rng = np.random.default_rng(43)
    pids = rng.integers(0, NUM_PARTITIONS, NUM_RECORDS).astype(np.int32)
    records = [rng.bytes(int(k)) for k in rng.integers(8, 41, NUM_RECORDS)]
    return pids, records


@pytest.mark.parametrize("m", POINTERS)
def test_radix_sort_by_partition_1m(benchmark, m, pointers_1m):
    out = benchmark(m.radix_sort_by_partition, pointers_1m)
    expected = pointers_1m[np.argsort(pointers_1m >> np.uint64(40), kind="stable")]
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("m", RECORDBUF)
def test_insert_batch_and_sorted_partitions_200k(benchmark, m, small_records):
    pids, records = small_records

    def insert_and_drain():
        buf = m.RecordBuffer()
        buf.insert_batch(pids, records)
        total = sum(len(chunk) for _, chunk in buf.sorted_partitions(NUM_PARTITIONS))
        buf.reset()
        return total

    assert benchmark(insert_and_drain) == sum(len(r) for r in records)
