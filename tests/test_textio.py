"""Text input (splits at line boundaries, small files packed) and atomic text output."""

import contextlib
import os
import pickle
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from shuffle.engine import textio
from shuffle.engine.textio import (FileRange, TextSplit, abort_output_dir, commit_output_dir, expand_paths,
                                   plan_text_splits, prepare_output_dir, read_lines, write_text_part)
from shuffle.errors import InputNotFoundError, OutputExistsError, SerializationError, ShuffleError


def spark_lines(data: bytes, encoding: str = "utf-8"):
    """What Spark's textFile yields: split at \\r\\n, \\r or \\n, no empty line after a final terminator."""
    text = data.decode(encoding)
    if not text:
        return []
    lines = re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()
    return lines


def read_all(splits, encoding="utf-8"):
    return [line for split in splits for line in read_lines(split, encoding)]


@contextlib.contextmanager
def block_sizes(block, tail):
    """Shrink the reader's block sizes so that lines and terminators straddle blocks."""
    saved = textio._BLOCK, textio._TAIL_BLOCK
    textio._BLOCK, textio._TAIL_BLOCK = block, tail
    try:
        yield
    finally:
        textio._BLOCK, textio._TAIL_BLOCK = saved


def assert_ranges_tile_files(splits, sizes):
    """Every byte of every non-empty file is in exactly one range, in path order."""
    covered = {}
    order = []
    for split in splits:
        for r in split.ranges:
            assert r.start < r.end
            covered.setdefault(r.path, []).append((r.start, r.end))
            if not order or order[-1] != r.path:
                order.append(r.path)
    assert order == [p for p, size in sizes if size]
    for path, size in sizes:
        spans = covered.get(path, [])
        starts = [start for start, _ in spans]
        ends = [end for _, end in spans]
        assert starts == [0] + ends[:-1] if spans else size == 0, (path, spans)
        assert (ends[-1] if spans else 0) == size


# ---------------------------------------------------------------- every line exactly once

line_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=25)
terminator = st.sampled_from(["\n", "\r\n", "\r"])
a_file = st.tuples(st.lists(st.tuples(line_text, terminator), max_size=30), st.booleans())


@settings(max_examples=150, deadline=None)
@given(files=st.lists(a_file, min_size=1, max_size=5), min_partitions=st.integers(1, 60),
       max_split=st.integers(1, 300), block=st.integers(1, 9), tail=st.integers(1, 5))
def test_every_line_is_read_exactly_once_in_order(files, min_partitions, max_split, block, tail):
    with tempfile.TemporaryDirectory() as tmp:
        expected, sizes = [], []
        for i, (lines, terminate_last) in enumerate(files):
            text = "".join(line + end for line, end in lines)
            if lines and not terminate_last:
                text = text[: -len(lines[-1][1])]
            data = text.encode("utf-8")
            path = os.path.join(tmp, f"f{i:02d}.txt")
            Path(path).write_bytes(data)
            expected.extend(spark_lines(data))
            sizes.append((path, len(data)))
        splits = plan_text_splits(tmp, min_partitions, max_split_bytes=max_split, min_split_bytes=1)
        with block_sizes(block, tail):
            assert read_all(splits) == expected
        total = sum(size for _, size in sizes)
        assert len(splits) >= (min(min_partitions, total) if total else 1)
        assert_ranges_tile_files(splits, sizes)
        assert sum(s.size for s in splits) == total


def test_every_pair_of_cut_points_reads_each_line_once(tmp_path):
    # Cuts inside "\r\n", right after a lone "\r", on empty lines and at the ends.
    data = b"ab\r\n\r\rc\n\nd\r\r\ne\rf"
    path = tmp_path / "tricky.txt"
    path.write_bytes(data)
    expected = spark_lines(data)
    n = len(data)
    for block in (1, 2, 1 << 20):
        with block_sizes(block, 1):
            for a in range(n + 1):
                for b in range(a, n + 1):
                    ranges = [FileRange(str(path), s, e) for s, e in ((0, a), (a, b), (b, n))]
                    got = [line for r in ranges for line in read_lines(TextSplit((r,)))]
                    assert got == expected, (a, b, block)


def test_a_line_longer_than_many_ranges_is_read_once_by_the_range_it_starts_in(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(b"short\n" + b"x" * 5000 + b"\nend")
    with block_sizes(64, 16):
        splits = plan_text_splits(str(path), 50, min_split_bytes=1)
        per_split = [list(read_lines(s)) for s in splits]
    assert len(splits) >= 50
    assert [line for lines in per_split for line in lines] == ["short", "x" * 5000, "end"]
    assert sum(1 for lines in per_split if lines) <= 3


# ---------------------------------------------------------------- planning

def test_ten_thousand_small_files_pack_into_few_splits(tmp_path):
    body = b"y" * 1000 + b"\n"
    for i in range(10_000):
        (tmp_path / f"s{i:05d}.txt").write_bytes(b"%05d" % i + body)
    splits = plan_text_splits(str(tmp_path), min_partitions=2)
    assert len(splits) == 2
    assert_ranges_tile_files(splits, [(str(p), p.stat().st_size) for p in sorted(tmp_path.iterdir())])
    lines = read_all(splits)
    assert [line[:5] for line in lines] == ["%05d" % i for i in range(10_000)]


def test_a_large_file_is_cut_into_byte_ranges_of_the_split_size(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(200_000)))
    size = path.stat().st_size
    by_partitions = plan_text_splits(str(path), min_partitions=8)
    by_cap = plan_text_splits(str(path), min_partitions=1, max_split_bytes=256 << 10)
    assert len(by_partitions) == 8
    assert len(by_cap) == size // (256 << 10) + (size % (256 << 10) > (256 << 10) // 10)
    for splits in (by_partitions, by_cap):
        assert all(len(s.ranges) == 1 for s in splits)
        assert read_all(splits) == ["line %d" % i for i in range(200_000)]


def test_a_file_within_ten_percent_of_the_split_size_is_not_cut(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"z\n" * 52_500)  # 105,000 bytes
    assert len(plan_text_splits(str(path), 1, max_split_bytes=100_000)) == 1
    assert len(plan_text_splits(str(path), 1, max_split_bytes=95_000)) == 2


def test_the_floor_limits_a_tiny_cap_but_not_min_partitions(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"w\n" * (512 << 10))  # 1 MiB
    assert len(plan_text_splits(str(path), 1, max_split_bytes=128)) == 16  # 64 KiB floor
    assert len(plan_text_splits(str(path), 100, max_split_bytes=128)) == 100


def test_empty_files_contribute_nothing_and_all_empty_gives_one_empty_split(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"")
    (tmp_path / "b.txt").write_bytes(b"")
    assert plan_text_splits(str(tmp_path), 4) == [TextSplit(())]
    assert read_all([TextSplit(())]) == []
    (tmp_path / "c.txt").write_bytes(b"only\n")
    [split] = plan_text_splits(str(tmp_path), 1)
    assert [r.path for r in split.ranges] == [str(tmp_path / "c.txt")]


def test_splits_are_small_picklable_values(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"1\n2\n")
    [split] = plan_text_splits(str(tmp_path), 1)
    assert split.size == 4
    assert pickle.loads(pickle.dumps(split)) == split
    with pytest.raises(ValueError):
        FileRange("x", 5, 4)


@pytest.mark.parametrize("kwargs, error", [({"min_partitions": "2"}, TypeError),
                                           ({"min_partitions": 2, "max_split_bytes": 0}, ValueError)])
def test_bad_planning_arguments_are_refused(tmp_path, kwargs, error):
    (tmp_path / "a.txt").write_bytes(b"1\n")
    with pytest.raises(error):
        plan_text_splits(str(tmp_path), **kwargs)


# ---------------------------------------------------------------- which files

def test_files_directories_globs_and_lists(tmp_path):
    for name in ("b.txt", "a.txt", "c.log", ".hidden", "_SUCCESS"):
        (tmp_path / name).write_text("1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("2\n")
    p = lambda *names: [str(tmp_path.joinpath(*name.split("/"))) for name in names]  # noqa: E731
    assert expand_paths(tmp_path / "a.txt") == p("a.txt")
    assert expand_paths(str(tmp_path)) == p("a.txt", "b.txt", "c.log")  # sorted, not hidden, not recursive
    assert expand_paths(str(tmp_path / "*.txt")) == p("a.txt", "b.txt")
    assert expand_paths(str(tmp_path / "*")) == p("a.txt", "b.txt", "c.log", "sub/inner.txt")
    assert expand_paths([tmp_path / "c.log", str(tmp_path / "*.txt")]) == p("c.log", "a.txt", "b.txt")
    assert expand_paths(str(tmp_path / "_SUCCESS")) == p("_SUCCESS")  # named explicitly


@pytest.mark.parametrize("case", ["missing", "empty-glob", "empty-dir", "only-hidden", "hidden-glob", "empty-list"])
def test_inputs_that_name_no_file_are_input_not_found(tmp_path, case):
    (tmp_path / "d").mkdir()
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / ".x").write_text("1\n")
    (tmp_path / "h" / "_SUCCESS").write_text("")
    target = {"missing": tmp_path / "nope.txt", "empty-glob": tmp_path / "*.csv", "empty-dir": tmp_path / "d",
              "only-hidden": tmp_path / "h", "hidden-glob": tmp_path / "h" / "*", "empty-list": []}[case]
    with pytest.raises(InputNotFoundError) as info:
        plan_text_splits(target if case == "empty-list" else str(target), 2)
    assert isinstance(info.value, FileNotFoundError)
    assert (str(target) if case != "empty-list" else "no path given") in str(info.value)


def test_an_unreadable_file_is_input_not_found(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("1\n")
    monkeypatch.setattr(textio.os, "access", lambda path, mode: False)
    with pytest.raises(InputNotFoundError, match="secret.txt: the file is not readable"):
        expand_paths(str(tmp_path))


def test_a_file_removed_after_planning_is_input_not_found_when_read(tmp_path):
    path = tmp_path / "gone.txt"
    path.write_text("1\n")
    [split] = plan_text_splits(str(path), 1)
    path.unlink()
    with pytest.raises(InputNotFoundError, match="gone.txt"):
        read_all([split])


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize("block", [3, 1 << 20])
def test_undecodable_bytes_name_the_file_and_byte_offset(tmp_path, block):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nstill fine\nbad \xff here\n")
    with block_sizes(block, 2):
        with pytest.raises(ShuffleError, match=r"bad\.txt: cannot decode byte 20 as utf-8"):
            read_all(plan_text_splits(str(path), 1))
        # A range that starts after the bad line never decodes it.
        assert read_all([TextSplit((FileRange(str(path), 18, path.stat().st_size),))]) == []


def test_other_ascii_compatible_encodings_read_and_others_are_refused(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café\r\nnaïve\n".encode("latin-1"))
    split = TextSplit((FileRange(str(path), 0, path.stat().st_size),))
    assert list(read_lines(split, "latin-1")) == ["café", "naïve"]
    with pytest.raises(ValueError, match="utf-16"):
        list(read_lines(split, "utf-16"))


# ---------------------------------------------------------------- output

def test_parts_hold_one_str_per_line_and_commit_writes_success(tmp_path):
    out = prepare_output_dir(tmp_path / "nested" / "out")
    records = [1, "two", (3, "ü"), None] + list(range(textio._WRITE_BATCH + 5))
    assert write_text_part(out, 0, iter(records)) == out / "part-00000"
    write_text_part(out, 12, [])
    commit_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000", "part-00012"]
    assert (out / "part-00000").read_text(encoding="utf-8") == "".join(f"{r}\n" for r in records)
    assert (out / "part-00012").read_bytes() == b"" and (out / "_SUCCESS").read_bytes() == b""
    assert read_all(plan_text_splits(str(out), 2)) == [str(r) for r in records]  # _SUCCESS is not data


def test_a_rewrite_of_the_same_part_replaces_it(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    write_text_part(out, 3, ["first attempt", "longer than the second"])
    write_text_part(out, 3, ["second"])
    assert (out / "part-00003").read_text() == "second\n"
    assert os.listdir(out) == ["part-00003"]


def test_a_failing_record_iterator_leaves_no_temp_file_and_the_old_part_intact(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    write_text_part(out, 0, ["kept"])

    def broken():
        yield from range(textio._WRITE_BATCH * 2)  # a batch is on disk when it fails
        raise RuntimeError("mid-part")

    with pytest.raises(RuntimeError, match="mid-part"):
        write_text_part(out, 0, broken())
    with pytest.raises(RuntimeError, match="mid-part"):
        write_text_part(out, 1, broken())
    assert os.listdir(out) == ["part-00000"]
    assert (out / "part-00000").read_text() == "kept\n"


def test_a_record_that_cannot_be_encoded_names_its_position(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    with pytest.raises(SerializationError, match=r"record 4101 .*UTF-8"):
        write_text_part(out, 0, ["ok"] * 4101 + ["\ud800"])
    assert os.listdir(out) == []
    with pytest.raises(ValueError):
        write_text_part(out, -1, [])


def test_commit_removes_leftover_temp_files_of_dead_attempts(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    (out / ".part-00001.deadbeef.tmp").write_text("half")
    write_text_part(out, 1, ["whole"])
    commit_output_dir(out)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00001"]


def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    write_text_part(out, 0, ["old"])
    with pytest.raises(OutputExistsError) as info:
        prepare_output_dir(out)
    assert isinstance(info.value, FileExistsError) and str(out) in str(info.value)
    assert (out / "part-00000").exists()
    assert list(prepare_output_dir(out, overwrite=True).iterdir()) == []
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputExistsError):
        prepare_output_dir(a_file)
    assert prepare_output_dir(a_file, overwrite=True).is_dir()


def test_overwrite_refuses_to_remove_the_working_directory(tmp_path, monkeypatch):
    out = prepare_output_dir(tmp_path / "out")
    (out / "precious").write_text("1")
    monkeypatch.chdir(out)
    for target in (out, tmp_path, Path(".")):
        with pytest.raises(ShuffleError, match="working directory"):
            prepare_output_dir(target, overwrite=True)
    assert (out / "precious").exists()


def test_abort_removes_the_output_directory(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    write_text_part(out, 0, ["x"])
    abort_output_dir(out)
    assert not out.exists()
    abort_output_dir(out)  # idempotent
