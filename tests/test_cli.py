import subprocess
import sys

import pytest

from shuffle import HashPartitioner, ShuffleDependency, SortShuffleManager, __version__
from shuffle.cli import main


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "shuffle", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"shuffle {__version__}"


def test_demo_prints_top_words_and_the_stage_table(capsys):
    assert main(["demo", "--words", "30000", "--quiet", "--partitions", "4", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "word count of 30,000" in out and "top 5" in out
    assert "stage" in out and "mode" in out and "rec written" in out
    rows = [line for line in out.splitlines() if line.startswith("  ") and line.strip().split()[-1].replace(",", "").isdigit()]
    assert len(rows) >= 5


def test_demo_output_is_deterministic(capsys):
    main(["demo", "--words", "5000", "--quiet", "--top", "3"])
    first = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")][:3]
    main(["demo", "--words", "5000", "--quiet", "--top", "3", "--mode", "sort"])
    second = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")][:3]
    assert first == second


def test_wordcount_counts_files(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("b a b\nc b a\n")
    (tmp_path / "b.txt").write_text("a z\n")
    assert main(["wordcount", str(tmp_path / "*.txt"), "--quiet", "--partitions", "3"]) == 0
    out = capsys.readouterr().out
    assert "  b  " in out and "4 distinct words" in out
    lines = [line.split() for line in out.splitlines() if line.startswith("  ") and len(line.split()) == 2]
    assert [w for w, _ in lines[:2]] in (["a", "b"], ["b", "a"]) and dict(lines)["b"] == "3"


@pytest.mark.parametrize("args, fragment", [
    (["wordcount", "/no/such/file.txt"], "no input file"),
    (["wordcount", "x", "--memory", "lots"], "spark.executor.memory"),
    (["wordcount", "x", "--conf", "novalue"], "KEY=VALUE"),
    (["wordcount", "x", "--partitions", "0"], "must be at least 1"),
    (["inspect", "/no/such/dir"], "not a directory"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_are_one_line_and_exit_2(args, fragment):
    code, _, err = run_cli(*args)
    assert code == 2, err
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_inspect_lists_files_and_catches_a_flipped_byte(tmp_path, capsys):
    with SortShuffleManager({"spark.shuffle.sync": False}, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(ShuffleDependency(5, 2, HashPartitioner(3)))
        for m in range(2):
            manager.get_writer(handle, m).write([(i, "v" * i) for i in range(50)])
        assert main(["inspect", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert out.count("checksums OK") == 2 and "shuffle_5_1_0: 3 partitions" in out
        data = manager.resolver.data_file(5, 1)
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
        assert main(["inspect", str(tmp_path)]) == 1
        assert "MISMATCH" in capsys.readouterr().out


def test_inspect_of_an_empty_directory(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 0
    assert "no shuffle files" in capsys.readouterr().out
