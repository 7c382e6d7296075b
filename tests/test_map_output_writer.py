import os

import pytest

from shuffle.checksum import checksum_of
from shuffle.errors import ShuffleError
from shuffle.resolver import IndexShuffleBlockResolver
from shuffle.write.output import MapOutputWriter, copy_file_range


@pytest.fixture
def resolver(tmp_path):
    return IndexShuffleBlockResolver(tmp_path, checksum_algorithm="ADLER32", sync=False)


def test_partitions_written_and_copied_commit_with_exact_lengths_and_checksums(resolver, tmp_path):
    source = tmp_path / "temp_shuffle_source"
    source.write_bytes(b"0123456789")
    out = MapOutputWriter(resolver, 0, 0, num_partitions=4, checksum_algorithm="ADLER32")
    out.write(0, b"abc")
    out.write(0, b"de")
    out.checksums[2].update(b"2345")
    out.copy_range(2, source, 2, 4)
    out.write(3, memoryview(b"xyz"))
    assert out.commit() == [5, 0, 4, 3]
    assert resolver.data_file(0, 0).read_bytes() == b"abcde2345xyz"
    assert resolver.read_checksums(0, 0) == [checksum_of("ADLER32", seg) for seg in (b"abcde", b"", b"2345", b"xyz")]
    assert sorted(p.name for p in tmp_path.iterdir() if "temp" in p.name) == ["temp_shuffle_source"]


def test_nothing_written_commits_an_index_of_zeros(resolver):
    out = MapOutputWriter(resolver, 1, 0, num_partitions=3, checksum_algorithm=None)
    assert out.commit() == [0, 0, 0]
    assert resolver.read_offsets(1, 0) == [0, 0, 0, 0]


def test_partitions_must_come_in_increasing_order(resolver):
    out = MapOutputWriter(resolver, 0, 0, num_partitions=4, checksum_algorithm=None)
    out.write(2, b"x")
    with pytest.raises(ShuffleError, match="increasing order"):
        out.write(1, b"y")
    with pytest.raises(ShuffleError):
        out.write(4, b"y")
    out.abort()


def test_abort_leaves_nothing_behind(resolver, tmp_path):
    out = MapOutputWriter(resolver, 0, 0, num_partitions=2, checksum_algorithm=None)
    out.write(0, b"half")
    out.abort()
    out.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShuffleError, match="already"):
        out.write(1, b"late")


def test_short_source_is_detected_not_silently_indexed(resolver, tmp_path):
    source = tmp_path / "short"
    source.write_bytes(b"abc")
    out = MapOutputWriter(resolver, 0, 0, num_partitions=1, checksum_algorithm=None)
    with pytest.raises(ShuffleError, match="early"):
        out.copy_range(0, source, 0, 10)
    out.abort()


def test_copy_file_range_copies_large_ranges_exactly(tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(payload)
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.write(b"head")
        d.flush()
        copy_file_range(s.fileno(), d.fileno(), 5, len(payload) - 5)
    assert dst.read_bytes() == b"head" + payload[5:]


def test_copy_falls_back_when_the_kernel_copy_is_unavailable(tmp_path, monkeypatch):
    import errno
    from shuffle.write import output

    def unavailable(*args):
        raise OSError(errno.ENOSYS, "no")

    monkeypatch.setattr(output, "_copy_file_range", unavailable)
    monkeypatch.setattr(output, "_sendfile", unavailable)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"abcdefgh")
    with open(src, "rb") as s, open(dst, "wb") as d:
        copy_file_range(s.fileno(), d.fileno(), 2, 5)
    assert dst.read_bytes() == b"cdefg"
