"""Text input splits (every line exactly once, small files packed) and atomic text output."""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shuffle.engine.textio import (FileRange, TextSplit, abort_output_dir, commit_output_dir, expand_paths,
                                   plan_text_splits, prepare_output_dir, read_lines, write_text_part)
from shuffle.errors import InputNotFoundError, OutputExistsError, ShuffleError


def spark_lines(data: bytes):
    """What Spark's textFile yields for a file: lines without \\n or \\r\\n, no phantom last line."""
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


line_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.lists(line_text, max_size=40), st.booleans(), st.booleans()), min_size=1, max_size=4),
       min_partitions=st.integers(1, 50), max_split=st.integers(1, 400))
def test_every_line_is_read_exactly_once_across_splits(tmp_path_factory, files, min_partitions, max_split):
    tmp = tmp_path_factory.mktemp("text")
    expected = []
    for i, (lines, trailing, crlf) in enumerate(files):
        end = "\r\n" if crlf else "\n"
        data = (end.join(lines) + (end if trailing and lines else "")).encode("utf-8")
        (tmp / f"f{i:02d}.txt").write_bytes(data)
        expected.extend(spark_lines(data))
    splits = plan_text_splits(str(tmp), min_partitions, max_split_bytes=max_split)
    got = [line for split in splits for line in read_lines(split)]
    assert got == expected


def test_ten_thousand_small_files_become_a_handful_of_partitions(tmp_path):
    for i in range(10_000):
        (tmp_path / f"s{i:05d}.txt").write_bytes(b"x" * 1000 + b"\n")
    splits = plan_text_splits(str(tmp_path), min_partitions=2)
    assert 2 <= len(splits) <= 200
    assert sum(len(s.ranges) for s in splits) == 10_000


def test_a_large_file_is_cut_into_byte_ranges(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(200_000)))
    splits = plan_text_splits(str(path), min_partitions=8)
    assert len(splits) >= 8 and all(len(s.ranges) == 1 for s in splits)
    assert sum(s.size for s in splits) == path.stat().st_size
    assert [line for s in splits for line in read_lines(s)] == ["line %d" % i for i in range(200_000)]


def test_paths_globs_directories_and_lists(tmp_path):
    for name in ("a.txt", "b.txt", "c.log", ".hidden"):
        (tmp_path / name).write_text("1\n")
    assert expand_paths(tmp_path / "a.txt") == [str(tmp_path / "a.txt")]
    assert expand_paths(str(tmp_path / "*.txt")) == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert [os.path.basename(p) for p in expand_paths(tmp_path)] == ["a.txt", "b.txt", "c.log"]
    assert len(expand_paths([tmp_path / "a.txt", str(tmp_path / "*.log")])) == 2


@pytest.mark.parametrize("make", ["missing", "empty-glob", "empty-dir"])
def test_missing_inputs_are_typed_errors(tmp_path, make):
    target = {"missing": tmp_path / "nope.txt", "empty-glob": tmp_path / "*.csv", "empty-dir": tmp_path / "d"}[make]
    if make == "empty-dir":
        target.mkdir()
    with pytest.raises(InputNotFoundError) as info:
        plan_text_splits(str(target), 2)
    assert isinstance(info.value, FileNotFoundError) and str(target) in str(info.value)


def test_empty_files_give_one_empty_split(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    splits = plan_text_splits(str(tmp_path), 4)
    assert splits == [TextSplit(())] and list(read_lines(splits[0])) == []


def test_undecodable_bytes_name_the_file_and_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbad \xff here\n")
    with pytest.raises(ShuffleError, match=r"bad.txt.*byte 9"):
        list(read_lines(TextSplit((FileRange(str(path), 0, path.stat().st_size),))))


def test_output_parts_are_atomic_and_success_marks_the_end(tmp_path):
    out = prepare_output_dir(tmp_path / "out")
    write_text_part(out, 0, [1, "two", (3, 4)])
    write_text_part(out, 0, ["rewritten"])
    write_text_part(out, 1, [])

    def broken():
        yield "ok"
        raise RuntimeError("mid-part")

    with pytest.raises(RuntimeError):
        write_text_part(out, 2, broken())
    commit_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000", "part-00001"]
    assert (out / "part-00000").read_text() == "rewritten\n"
    with pytest.raises(OutputExistsError):
        prepare_output_dir(out)
    assert list(prepare_output_dir(out, overwrite=True).iterdir()) == []
    abort_output_dir(out)
    assert not out.exists()
