import errno
import multiprocessing
import os
import struct
import threading
import traceback
import zlib
from pathlib import Path

import pytest

from shuffle.checksum import checksum_of
from shuffle.errors import OutOfDiskError, ShuffleError
from shuffle.resolver import IndexShuffleBlockResolver


@pytest.fixture
def resolver(tmp_path):
    return IndexShuffleBlockResolver(tmp_path, "ADLER32", sync=False)


def stage(resolver, shuffle_id, map_id, payload):
    tmp = resolver.new_temp_path(resolver.data_file(shuffle_id, map_id))
    tmp.write_bytes(payload)
    return tmp


def commit(resolver, shuffle_id, map_id, segments, checksums=None):
    tmp = stage(resolver, shuffle_id, map_id, b"".join(segments))
    return resolver.write_metadata_and_commit(shuffle_id, map_id, [len(s) for s in segments], tmp, checksums)


def be_longs(values):
    return b"".join(struct.pack(">q", v) for v in values)


def names(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def temps(directory):
    # Commit temporaries are "<target>.<32 hex digits>".
    return [n for n in names(directory) if len(n.rsplit(".", 1)[-1]) == 32]


# ------------------------------------------------------------------ names


def test_file_names_follow_spark_and_sit_directly_in_local_dir(resolver, tmp_path):
    assert resolver.data_file(3, 7) == tmp_path / "shuffle_3_7_0.data"
    assert resolver.index_file(3, 7) == tmp_path / "shuffle_3_7_0.index"
    assert resolver.checksum_file(3, 7) == tmp_path / "shuffle_3_7_0.checksum.ADLER32"
    assert resolver.checksum_file(3, 7, "crc32") == tmp_path / "shuffle_3_7_0.checksum.CRC32"


def test_checksum_file_needs_an_algorithm_when_checksums_are_off(tmp_path):
    r = IndexShuffleBlockResolver(tmp_path, None)
    with pytest.raises(ShuffleError, match="disabled"):
        r.checksum_file(0, 0)


def test_new_temp_path_is_unique_and_beside_its_target(resolver):
    target = resolver.data_file(0, 1)
    a, b = resolver.new_temp_path(target), resolver.new_temp_path(target)
    assert a != b
    assert a.parent == b.parent == target.parent
    assert a.name.startswith(target.name + ".")


# ------------------------------------------------------------------ commit


def test_index_is_big_endian_int64_offsets_byte_for_byte(resolver):
    segments = [b"x" * 300, b"", b"y" * 70000, b"z"]
    assert commit(resolver, 0, 0, segments) == [300, 0, 70000, 1]
    assert resolver.index_file(0, 0).read_bytes() == be_longs([0, 300, 300, 70300, 70301])
    assert resolver.data_file(0, 0).read_bytes() == b"".join(segments)


def test_offsets_beyond_4_gib_encode_in_all_eight_bytes(resolver):
    tmp = resolver.new_temp_path(resolver.data_file(0, 0))
    with open(tmp, "wb") as f:
        f.truncate(5 * 2**30)
    if tmp.stat().st_blocks * 512 > 2**20:
        tmp.unlink()
        pytest.skip("file system does not make sparse files")
    lengths = [2**32 + 5, 5 * 2**30 - (2**32 + 5)]
    assert resolver.write_metadata_and_commit(0, 0, lengths, tmp) == lengths
    assert resolver.index_file(0, 0).read_bytes() == be_longs([0, 2**32 + 5, 5 * 2**30])
    assert resolver.block_location(0, 0, 1, 2) == (resolver.data_file(0, 0), 2**32 + 5, lengths[1])


def test_commit_with_fsync_on_writes_a_valid_pair(tmp_path):
    r = IndexShuffleBlockResolver(tmp_path, "CRC32", sync=True)
    assert commit(r, 1, 2, [b"ab", b"cde"], [1, 2]) == [2, 3]
    assert r.check_index_and_data(1, 2, 2) == [2, 3]
    assert temps(tmp_path) == []


def test_commit_without_data_writes_zero_index_and_empty_data_file(resolver):
    assert resolver.write_metadata_and_commit(0, 4, [0, 0, 0], None) == [0, 0, 0]
    assert resolver.index_file(0, 4).read_bytes() == be_longs([0, 0, 0, 0])
    assert resolver.data_file(0, 4).read_bytes() == b""
    assert resolver.check_index_and_data(0, 4, 3) == [0, 0, 0]


def test_second_commit_returns_the_first_lengths_and_deletes_its_temp(resolver, tmp_path):
    first = [b"aaa", b"aaaaa"]
    commit(resolver, 0, 0, first, [checksum_of("ADLER32", s) for s in first])
    second_tmp = stage(resolver, 0, 0, b"bbbbbbbb")
    got = resolver.write_metadata_and_commit(0, 0, [4, 4], second_tmp, [9, 9])
    assert got == [3, 5]
    assert not second_tmp.exists()
    assert resolver.data_file(0, 0).read_bytes() == b"aaaaaaaa"
    assert resolver.read_checksums(0, 0) == [checksum_of("ADLER32", s) for s in first]
    assert temps(tmp_path) == []


def test_losing_commit_with_equal_lengths_fills_in_a_missing_checksum_file(resolver):
    commit(resolver, 0, 0, [b"ab", b"c"])
    resolver.checksum_file(0, 0).unlink(missing_ok=True)
    commit(resolver, 0, 0, [b"ab", b"c"], [11, 22])
    assert resolver.read_checksums(0, 0) == [11, 22]


def test_commit_replaces_an_invalid_leftover_pair(resolver):
    resolver.index_file(0, 0).write_bytes(be_longs([0, 99]))  # points past a missing data file
    assert commit(resolver, 0, 0, [b"new"]) == [3]
    assert resolver.read_block(0, 0, 0) == b"new"


@pytest.mark.parametrize(
    "lengths, payload, checksums, match",
    [
        ([3, -1], b"ab", None, "negative"),
        ([2, 2], b"abc", None, "add up"),
        ([1, 2], b"abc", [1], "checksums"),
        ([1, "2"], b"abc", None, "integers"),
    ],
)
def test_inconsistent_commit_is_rejected_before_writing(resolver, tmp_path, lengths, payload, checksums, match):
    tmp = stage(resolver, 0, 0, payload)
    with pytest.raises(ShuffleError, match=match):
        resolver.write_metadata_and_commit(0, 0, lengths, tmp, checksums)
    assert names(tmp_path) == []


def test_commit_without_data_rejects_nonzero_lengths(resolver, tmp_path):
    with pytest.raises(ShuffleError, match="no data file"):
        resolver.write_metadata_and_commit(0, 0, [0, 5], None)
    assert names(tmp_path) == []


def test_commit_rejects_a_temp_outside_local_dir_and_deletes_it(resolver, tmp_path):
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    tmp = elsewhere / "data.tmp"
    tmp.write_bytes(b"abc")
    with pytest.raises(ShuffleError, match="new_temp_path"):
        resolver.write_metadata_and_commit(0, 0, [3], tmp)
    assert not tmp.exists()
    assert not resolver.index_file(0, 0).exists()


def test_commit_of_a_missing_temp_is_a_shuffle_error(resolver):
    with pytest.raises(ShuffleError, match="does not exist"):
        resolver.write_metadata_and_commit(0, 0, [3], resolver.new_temp_path(resolver.data_file(0, 0)))


def test_disk_full_becomes_out_of_disk_error_and_leaves_no_temps(tmp_path, monkeypatch):
    r = IndexShuffleBlockResolver(tmp_path, "ADLER32", sync=True)
    tmp = stage(r, 0, 0, b"abcd")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutOfDiskError) as info:
        r.write_metadata_and_commit(0, 0, [4], tmp)
    assert isinstance(info.value, OSError)
    assert info.value.directory == str(tmp_path)
    assert isinstance(info.value.__cause__, OSError)
    assert temps(tmp_path) == [] and not tmp.exists()
    assert r.check_index_and_data(0, 0, 1) is None


def test_failed_index_rename_leaves_no_commit_and_a_retry_succeeds(resolver, tmp_path, monkeypatch):
    real_replace = os.replace

    def refuse_index(src, dst):
        if str(dst).endswith(".index"):
            raise PermissionError(errno.EACCES, "denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_index)
    with pytest.raises(PermissionError):
        commit(resolver, 0, 0, [b"ab"])
    assert temps(tmp_path) == []
    assert resolver.check_index_and_data(0, 0, 1) is None
    monkeypatch.setattr(os, "replace", real_replace)
    assert commit(resolver, 0, 0, [b"cd", b"e"]) == [2, 1]
    assert resolver.read_block(0, 0, 1) == b"e"


# --------------------------------------------------------------- checksums


@pytest.mark.parametrize("algorithm, fn, empty", [("ADLER32", zlib.adler32, 1), ("CRC32", zlib.crc32, 0)])
def test_checksum_file_holds_one_big_endian_checksum_per_segment(tmp_path, algorithm, fn, empty):
    r = IndexShuffleBlockResolver(tmp_path, algorithm, sync=False)
    segments = [b"hello", b"", b"world" * 100]
    commit(r, 2, 0, segments, [checksum_of(algorithm, s) for s in segments])
    expected = [fn(segments[0]), empty, fn(segments[2])]
    assert r.checksum_file(2, 0).read_bytes() == be_longs(expected)
    assert r.read_checksums(2, 0) == expected


def test_no_checksum_file_when_checksums_are_off(tmp_path):
    r = IndexShuffleBlockResolver(tmp_path, None, sync=False)
    commit(r, 0, 0, [b"a"], [5])
    assert names(tmp_path) == ["shuffle_0_0_0.data", "shuffle_0_0_0.index", "shuffle_0_0_0.lock"]
    assert r.read_checksums(0, 0) is None


def test_read_checksums_is_none_when_no_file_was_stored(resolver):
    commit(resolver, 0, 0, [b"a"])
    assert resolver.read_checksums(0, 0) is None


def test_malformed_checksum_file_is_a_shuffle_error(resolver):
    resolver.checksum_file(0, 0).write_bytes(b"\x00" * 9)
    with pytest.raises(ShuffleError, match="multiple of 8"):
        resolver.read_checksums(0, 0)


# -------------------------------------------------------------- validation


def write_pair(resolver, offsets, data=b"0123456789", index_bytes=None):
    resolver.index_file(0, 0).write_bytes(be_longs(offsets) if index_bytes is None else index_bytes)
    if data is not None:
        resolver.data_file(0, 0).write_bytes(data)


@pytest.mark.parametrize(
    "offsets, data, index_bytes",
    [
        pytest.param([0, 4, 10], b"0123456789", None, id="short-index"),
        pytest.param([0, 4, 6, 10, 10], b"0123456789", None, id="long-index"),
        pytest.param(None, b"0123456789", be_longs([0, 4, 6, 10])[:-1], id="truncated-index"),
        pytest.param([1, 4, 6, 10], b"0123456789", None, id="first-offset-not-0"),
        pytest.param([0, 6, 4, 10], b"0123456789", None, id="decreasing-offsets"),
        pytest.param([0, 4, 6, 11], b"0123456789", None, id="last-offset-past-data"),
        pytest.param([0, 4, 6, 9], b"0123456789", None, id="last-offset-short-of-data"),
        pytest.param([0, 4, 6, 10], None, None, id="missing-data-file"),
    ],
)
def test_malformed_pairs_are_rejected(resolver, offsets, data, index_bytes):
    write_pair(resolver, offsets, data, index_bytes)
    assert resolver.check_index_and_data(0, 0, 3) is None


def test_missing_index_is_rejected(resolver):
    resolver.data_file(0, 0).write_bytes(b"0123456789")
    assert resolver.check_index_and_data(0, 0, 3) is None


def test_valid_pair_gives_its_lengths(resolver):
    write_pair(resolver, [0, 4, 4, 10])
    assert resolver.check_index_and_data(0, 0, 3) == [4, 0, 6]


def test_missing_data_file_counts_as_empty(resolver):
    write_pair(resolver, [0, 0, 0], data=None)
    assert resolver.check_index_and_data(0, 0, 2) == [0, 0]


# ------------------------------------------------------------------ lookup


def test_a_hand_written_spark_index_is_read_by_offset(resolver):
    write_pair(resolver, [0, 4, 4, 10])
    assert resolver.read_offsets(0, 0) == [0, 4, 4, 10]
    assert resolver.read_block(0, 0, 0) == b"0123"
    assert resolver.read_block(0, 0, 1) == b""
    assert resolver.read_block(0, 0, 2) == b"456789"


def test_block_location_covers_a_contiguous_batch(resolver):
    commit(resolver, 0, 0, [b"ab", b"cde", b"", b"fghi"])
    path, offset, length = resolver.block_location(0, 0, 1, 4)
    assert (path, offset, length) == (resolver.data_file(0, 0), 2, 7)
    assert path.read_bytes()[offset : offset + length] == b"cdefghi"


@pytest.mark.parametrize("start, end", [(0, 0), (2, 1), (-1, 1), (0, 5), (4, 5)])
def test_block_location_outside_the_index_is_a_shuffle_error(resolver, start, end):
    commit(resolver, 0, 0, [b"ab", b"cde", b"", b"fghi"])
    with pytest.raises(ShuffleError):
        resolver.block_location(0, 0, start, end)


def test_lookups_of_a_missing_output_raise_file_not_found(resolver):
    with pytest.raises(FileNotFoundError):
        resolver.read_block(0, 9, 0)
    with pytest.raises(FileNotFoundError):
        resolver.read_offsets(0, 9)


def test_reading_past_a_truncated_data_file_is_a_shuffle_error(resolver):
    commit(resolver, 0, 0, [b"ab", b"cdef"])
    resolver.data_file(0, 0).write_bytes(b"abc")
    with pytest.raises(ShuffleError, match="ends before block shuffle_0_0_1"):
        resolver.read_block(0, 0, 1)


def test_read_offsets_rejects_a_ragged_index(resolver):
    resolver.index_file(0, 0).write_bytes(b"\x00" * 12)
    with pytest.raises(ShuffleError, match="multiple of 8"):
        resolver.read_offsets(0, 0)


# ----------------------------------------------------------------- removal


def test_remove_data_by_map_leaves_nothing_of_that_map(resolver, tmp_path):
    commit(resolver, 0, 0, [b"a"], [1])
    commit(resolver, 0, 1, [b"b"], [1])
    resolver.remove_data_by_map(0, 0)
    assert all(n.startswith("shuffle_0_1_0.") for n in names(tmp_path))
    assert resolver.read_block(0, 1, 0) == b"b"
    resolver.remove_data_by_map(0, 0)  # already gone: fine


def test_a_map_can_be_committed_again_after_removal(resolver):
    commit(resolver, 0, 0, [b"old"])
    resolver.remove_data_by_map(0, 0)
    assert commit(resolver, 0, 0, [b"new!"]) == [4]
    assert resolver.read_block(0, 0, 0) == b"new!"


def test_remove_shuffle_deletes_its_files_and_stray_temps_only(resolver, tmp_path):
    for shuffle_id in (1, 11, 2):
        for map_id in (0, 1):
            commit(resolver, shuffle_id, map_id, [b"ab", b"c"], [1, 2])
    stray = stage(resolver, 1, 5, b"half-written")
    resolver.remove_shuffle(1)
    left = names(tmp_path)
    assert not stray.exists()
    assert not [n for n in left if n.startswith("shuffle_1_")]
    assert len([n for n in left if n.startswith("shuffle_11_")]) == 8
    assert len([n for n in left if n.startswith("shuffle_2_")]) == 8
    resolver.remove_shuffle(1)  # nothing left to remove: fine
    resolver.remove_shuffle(11)
    resolver.remove_shuffle(2)
    assert names(tmp_path) == []


# ------------------------------------------------------------- concurrency

SEGMENTS = {"a": [b"a" * 3, b"a" * 5], "b": [b"b" * 4, b"b" * 4]}
ROUNDS = 12


def _race_worker(local_dir, tag, barrier, results):
    try:
        r = IndexShuffleBlockResolver(local_dir, "ADLER32", sync=True)
        segments = SEGMENTS[tag]
        for map_id in range(ROUNDS):
            tmp = r.new_temp_path(r.data_file(0, map_id))
            tmp.write_bytes(b"".join(segments))
            barrier.wait(timeout=60)
            got = r.write_metadata_and_commit(
                0, map_id, [len(s) for s in segments], tmp, [checksum_of("ADLER32", s) for s in segments]
            )
            results.put((tag, map_id, got))
    except BaseException:
        results.put((tag, None, traceback.format_exc()))


def _check_consistent(r, map_id):
    """What a reader sees of one map: nothing yet, or one whole committed output."""
    try:
        offsets = r.read_offsets(0, map_id)
    except FileNotFoundError:
        return
    lengths = [b - a for a, b in zip(offsets, offsets[1:])]
    data = r.data_file(0, map_id).read_bytes()
    assert (lengths, data) in (([3, 5], b"a" * 8), ([4, 4], b"b" * 8))


def test_two_processes_committing_the_same_map_agree_on_one_output(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path), tag, barrier, results)) for tag in "ab"]
    for p in procs:
        p.start()
    reader = IndexShuffleBlockResolver(tmp_path, "ADLER32", sync=False)
    try:
        got: dict[int, dict[str, list[int]]] = {}
        for _ in range(2 * ROUNDS):
            while results.empty():
                for map_id in range(ROUNDS):
                    _check_consistent(reader, map_id)
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
            tag, map_id, value = results.get(timeout=60)
            assert map_id is not None, value
            got.setdefault(map_id, {})[tag] = value
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    for map_id in range(ROUNDS):
        assert got[map_id]["a"] == got[map_id]["b"]
        winner = "a" if got[map_id]["a"] == [3, 5] else "b"
        assert reader.check_index_and_data(0, map_id, 2) == got[map_id]["a"]
        assert reader.data_file(0, map_id).read_bytes() == b"".join(SEGMENTS[winner])
        assert reader.read_checksums(0, map_id) == [checksum_of("ADLER32", s) for s in SEGMENTS[winner]]
    expected = sorted(f"shuffle_0_{m}_0.{ext}" for m in range(ROUNDS) for ext in ("data", "index", "checksum.ADLER32", "lock"))
    assert names(tmp_path) == expected


def test_threads_committing_the_same_map_agree_on_one_output(resolver, tmp_path):
    start = threading.Barrier(6)
    got = []

    def attempt(i):
        tmp = stage(resolver, 0, 0, bytes([65 + i]) * (i + 1))
        start.wait(timeout=30)
        got.append(resolver.write_metadata_and_commit(0, 0, [i + 1], tmp))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 6 and all(g == got[0] for g in got)
    (n,) = got[0]
    assert resolver.data_file(0, 0).read_bytes() == bytes([64 + n]) * n
    assert temps(tmp_path) == []
