"""Index read: finding and reading the blocks of one committed map output.

One map output of 1000 partitions (a fifth empty, the others 1..4095 bytes,
about 1.6 MB; ADLER32 checksums) is committed once through the resolver. Each
benchmark then looks blocks up or reads them as one of the library's callers
does; all sit in one group so their costs compare. ``extra_info`` holds the
number of calls (or blocks) a round makes: mean / calls = time per call.

- ``read_offsets``: the whole index as a list (the resolver's lookup);
- ``check_index_and_data``: the validation a commit runs before keeping an
  output (index + data size);
- ``block_location`` x1000: open the index, two ``pread`` of 8 bytes, per block;
- ``read_block`` x1000: the same plus one ``pread`` of the data, per block;
- ``read_range``: all 1000 blocks as the fetcher reads a range: one ``pread`` of
  the index slice and one of the data;
- ``read_range + verify_range``: that, with every block's checksum checked
  (what a reader does with ``spark.shuffle.detectCorrupt``).

No compiled kernel is involved: these are file-system calls and NumPy / struct
decoding of big-endian int64.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import per_element
from shuffle.checksum import checksum_of
from shuffle.read.block_io import read_range, verify_range
from shuffle.resolver import IndexShuffleBlockResolver

GROUP = "index read: one map output, 1000 partitions"
SHUFFLE, MAP = 0, 0


@pytest.fixture(scope="module")
def committed(tmp_path_factory, index_lengths):
    """(resolver, lengths, data) of one committed map output with checksums."""
    local_dir = tmp_path_factory.mktemp("index")
    resolver = IndexShuffleBlockResolver(local_dir, checksum_algorithm="ADLER32", sync=False)
    data = np.random.default_rng(7).bytes(sum(index_lengths))
    ends = np.cumsum(index_lengths).tolist()
    segments = [data[end - n:end] for end, n in zip(ends, index_lengths)]
    tmp = resolver.new_temp_path(resolver.data_file(SHUFFLE, MAP))
    tmp.write_bytes(data)
    sums = [checksum_of("ADLER32", segment) for segment in segments]
    assert resolver.write_metadata_and_commit(SHUFFLE, MAP, index_lengths, tmp, sums) == index_lengths
    return resolver, index_lengths, segments


def test_read_offsets(benchmark, committed):
    resolver, lengths, _ = committed
    benchmark.group = GROUP
    per_element(benchmark, 1, "call")
    offsets = benchmark(resolver.read_offsets, SHUFFLE, MAP)
    assert np.diff(offsets).tolist() == lengths


def test_check_index_and_data(benchmark, committed):
    resolver, lengths, _ = committed
    benchmark.group = GROUP
    per_element(benchmark, 1, "call")
    assert benchmark(resolver.check_index_and_data, SHUFFLE, MAP, len(lengths)) == lengths


def test_block_location_each_partition(benchmark, committed):
    resolver, lengths, _ = committed
    benchmark.group = GROUP
    per_element(benchmark, len(lengths), "call")

    def locate_all() -> list[int]:
        return [resolver.block_location(SHUFFLE, MAP, r, r + 1)[2] for r in range(len(lengths))]

    assert benchmark(locate_all) == lengths


def test_read_block_each_partition(benchmark, committed):
    resolver, lengths, segments = committed
    benchmark.group = GROUP
    per_element(benchmark, len(lengths), "call")

    def read_all() -> list[bytes]:
        return [resolver.read_block(SHUFFLE, MAP, r) for r in range(len(lengths))]

    assert benchmark(read_all) == segments


def test_read_range_all_partitions(benchmark, committed):
    resolver, lengths, segments = committed
    benchmark.group = GROUP
    per_element(benchmark, len(lengths), "block")
    offsets, data = benchmark(read_range, str(resolver.local_dir), SHUFFLE, MAP, 0, len(lengths))
    assert np.diff(offsets).tolist() == lengths and data == b"".join(segments)


def test_read_and_verify_range_all_partitions(benchmark, committed):
    resolver, lengths, _ = committed
    benchmark.group = GROUP
    per_element(benchmark, len(lengths), "block")
    local_dir = str(resolver.local_dir)

    def read_and_verify() -> tuple:
        offsets, data = read_range(local_dir, SHUFFLE, MAP, 0, len(lengths))
        return verify_range(local_dir, SHUFFLE, MAP, 0, offsets, data)

    assert benchmark(read_and_verify) == (None,) * len(lengths)
