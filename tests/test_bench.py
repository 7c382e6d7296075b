"""``shuffle bench``: every workload runs, is checked against its baseline, and is reported and saved."""

import json

import pytest

from shuffle.bench import data
from shuffle.bench import workloads as wl
from shuffle.bench.results import WorkloadMismatch
from shuffle.bench.runner import BenchOptions, run_bench
from shuffle.cli import main


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def test_every_workload_on_every_mode_matches_its_baseline(cache):
    options = BenchOptions(records=3000, repeat=1, modes=("auto", "bypass", "serialized", "sort"), cache_dir=cache)
    rows = run_bench(options)
    by = {(r.workload, r.system, r.mode): r for r in rows}
    for name in ("W1", "W2", "W3", "W4", "W5"):
        assert by[(name, "baseline", wl.WORKLOADS[name].baseline_name)].seconds > 0
        modes = ("auto", "sort") if wl.WORKLOADS[name].combines else ("auto", "bypass", "serialized", "sort")
        assert {m for (w, s, m) in by if w == name and s == "shuffle"} == set(modes)
        for mode in modes:
            row = by[(name, "shuffle", mode)]
            assert row.mb_shuffled > 0 and row.records == (3000 if name != "W5" else 1500)
            base = by[(name, "baseline", wl.WORKLOADS[name].baseline_name)]
            assert row.ratios["baseline"] == pytest.approx(row.runs[0] / base.runs[0])  # run by run
    assert by[("W3", "disk", "write+read")].mb_shuffled == by[("W3", "shuffle", "auto")].mb_shuffled
    assert {r.write_mode for r in rows if r.system == "shuffle" and r.mode == "serialized"} == {"serialized"}


def test_inputs_are_generated_once_and_deterministic(cache):
    first = data.table(1000, cache)
    keys, values = first.arrays()
    again = data.table(1000, cache)
    assert again == first and (again.arrays()[0] == keys).all()
    assert 0 <= keys.min() and keys.max() < data.KEY_RANGE and values.max() < data.VALUE_RANGE
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no half-built entry left


def test_a_wrong_result_does_not_count(cache, monkeypatch):
    def wrong(ctx, table):
        summary = wl.w1_engine(ctx, table)
        return (summary[0] + 1,) + summary[1:]
    monkeypatch.setitem(wl.WORKLOADS, "W1", wl.Workload("W1", "broken", "table", wrong, wl.w1_baseline, "dict"))
    with pytest.raises(WorkloadMismatch, match="W1 on shuffle"):
        run_bench(BenchOptions(workloads=("W1",), records=500, repeat=1, cache_dir=cache))


def test_the_command_prints_a_table_and_writes_json_with_a_machine_header(cache, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["bench", "--records", "2000", "--repeat", "2", "--workload", "W1,W4", "--mode", "auto",
                 "--cache-dir", str(cache), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "W1" in printed and "W4" in printed and "x baseline" in printed
    document = json.loads(out.read_text())
    assert document["machine"]["cores_logical"] >= 1 and "numpy" in document["machine"]["versions"]
    assert [r["workload"] for r in document["rows"]] == ["W1", "W1", "W4", "W4"]
    assert all(len(r["runs"]) == 2 for r in document["rows"])
    engine, baseline = document["rows"][1], document["rows"][0]
    pairwise = sorted(a / b for a, b in zip(engine["runs"], baseline["runs"]))
    assert engine["ratios"]["baseline"] == pytest.approx(sum(pairwise) / 2)  # the median of two


@pytest.mark.parametrize("argv, message", [
    (["bench", "--workload", "W9"], "unknown workload"),
    (["bench", "--mode", "fast"], "unknown mode"),
    (["bench", "--peers", "spark"], "unknown peer"),
    (["bench", "--records", "0"], "at least 1"),
])
def test_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_missing_peer_is_named_with_its_extra(monkeypatch, capsys, cache):
    import builtins
    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith("dask"):
            raise ImportError("No module named 'dask'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    assert main(["bench", "--records", "100", "--peers", "dask", "--cache-dir", str(cache)]) == 2
    assert "pip install 'shuffle[peers]'" in capsys.readouterr().err


def test_profiles_are_written_per_task_and_summed(cache, tmp_path, capsys):
    profiles = tmp_path / "profiles"
    assert main(["bench", "--records", "1000", "--repeat", "1", "--workload", "W1", "--cache-dir", str(cache),
                 "--profile", str(profiles)]) == 0
    assert list(profiles.glob("stage*-part*-attempt0.prof"))
    assert "run_task" in (profiles / "summary.txt").read_text()


def test_the_columnar_path_runs_w1_w3_w4_against_the_same_oracle(cache):
    rows = run_bench(BenchOptions(workloads=("W1", "W3", "W4", "W5"), records=2000, repeat=1, columnar=True,
                                  cache_dir=cache))
    columnar = {r.workload: r for r in rows if r.mode == "columnar"}
    assert set(columnar) == {"W1", "W3", "W4"}  # W5 (words) has no columnar form
    assert all(r.write_mode == "columnar" and "baseline" in r.ratios for r in columnar.values())


def test_the_markdown_table_has_a_row_per_system_and_its_ratios(cache, tmp_path):
    table = tmp_path / "results.md"
    assert main(["bench", "--records", "1500", "--repeat", "1", "--workload", "W3", "--cache-dir", str(cache),
                 "--markdown", str(table)]) == 0
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| workload | system |") and "vs baseline" in lines[0]
    assert [line.split(" | ")[1] for line in lines[2:]] == [
        "baseline (buckets)", "shuffle (auto, bypass)", "disk (write+read)"]
