"""``shuffle explain``: the trace must show exactly what the real writers and readers do.

Each mode's trace is compared with the files a plain run of the same job
(no observer) commits, byte for byte, and with independent oracles
(partitioner, zlib checksums, a dict sum), so the explanation cannot drift
from the code.
"""

import importlib
import importlib.util
import operator
import re
import struct
import zlib
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import psutil
import pytest

from shuffle import Aggregator, ConfigError, HashPartitioner, MsgpackSerializer, ShuffleDependency, SortShuffleManager
from shuffle.cli import main
from shuffle.explain.html import render_html
from shuffle.explain.text import hexdump, render_text
from shuffle.explain.trace import job_conf, job_records, run_trace, split_among_maps
from shuffle.kernels import load

MODES = ("bypass", "serialized", "sort")


def children():
    return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    work = tmp_path_factory.mktemp("explain")
    before = {p.pid for p in children()}  # e.g. a fork server an earlier test started
    out = {(mode, codec): run_trace(mode, codec=codec, work_dir=work) for mode in MODES for codec in ("none", "lz4")}
    assert list(work.iterdir()) == []  # the job's files are gone
    assert [p for p in children() if p.pid not in before] == []
    return out


def plain_run(trace, tmp_path):
    """The same job through the manager with no observer: the committed files of each map."""
    conf = job_conf(trace.mode, trace.codec, trace.spill_after)
    dep = ShuffleDependency(
        shuffle_id=0, num_maps=trace.num_maps, partitioner=HashPartitioner(trace.num_partitions),
        serializer=MsgpackSerializer(), aggregator=Aggregator.from_reduce(operator.add),
        map_side_combine=trace.mode == "sort", key_ordering=True,
    )
    files = []
    with SortShuffleManager(conf, local_dir=tmp_path) as manager:
        handle = manager.register_shuffle(dep)
        assert handle.kind == trace.mode
        inputs = split_among_maps(job_records(trace.num_records, trace.seed), trace.num_maps)
        for map_id, records in enumerate(inputs):
            manager.get_writer(handle, map_id).write(records)
            r = manager.resolver
            files.append({
                "data": r.data_file(0, map_id).read_bytes(),
                "index": r.index_file(0, map_id).read_bytes(),
                "checksum": r.checksum_file(0, map_id).read_bytes(),
            })
    return files


@pytest.mark.parametrize("codec", ["none", "lz4"])
@pytest.mark.parametrize("mode", MODES)
def test_trace_bytes_equal_the_files_a_plain_run_commits(traces, mode, codec, tmp_path):
    trace = traces[mode, codec]
    assert trace.mode == mode
    files = plain_run(trace, tmp_path)
    text = render_text(trace)
    for m, real in zip(trace.maps, files):
        assert m.data == real["data"] and m.index == real["index"] and m.checksum_file == real["checksum"]
        offsets = list(struct.unpack(f">{trace.num_partitions + 1}q", real["index"]))
        assert m.offsets == offsets and offsets[0] == 0 and offsets[-1] == len(real["data"])
        stored = list(struct.unpack(f">{trace.num_partitions}q", real["checksum"]))
        segments = [real["data"][a:b] for a, b in zip(offsets, offsets[1:])]
        assert m.checksums == stored == [zlib.adler32(seg) for seg in segments]
        assert m.lengths == [len(seg) for seg in segments]
        # The text shows the real bytes: each segment's hex dump and the index's.
        for r, (a, seg) in enumerate(zip(offsets, segments)):
            for line in hexdump(seg, base=a):
                assert line in text
        for line in hexdump(real["index"]) + hexdump(real["checksum"]):
            assert line in text
    assert "MISMATCH" not in text


@pytest.mark.parametrize("mode", MODES)
def test_partition_ids_are_the_partitioners_answers(traces, mode):
    trace = traces[mode, "none"]
    partitioner = HashPartitioner(trace.num_partitions)
    records = [record for m in trace.maps for record in m.records]
    assert records == job_records(trace.num_records, trace.seed)
    for m in trace.maps:
        assert m.partitions == [partitioner.get_partition(key) for key, _ in m.records]


@pytest.mark.parametrize("mode", MODES)
def test_reduce_output_equals_a_dict_oracle(traces, mode):
    trace = traces[mode, "none"]
    partitioner = HashPartitioner(trace.num_partitions)
    sums = defaultdict(int)
    for key, value in job_records(trace.num_records, trace.seed):
        sums[key] += value
    for r in trace.reduces:
        expected = sorted((k, v) for k, v in sums.items() if partitioner.get_partition(k) == r.partition)
        assert r.output == expected
        planned = [block for _, entries in r.plan for block, _, _ in entries]
        assert sorted(f.block for f in r.fetched) == sorted(planned)
        for f in r.fetched:  # each fetched block is its map's data segment
            assert f.data == trace.maps[f.map_id].segment(f.reduce_id)


def test_serialized_pointers_are_sorted_by_partition_and_address_the_spilled_bytes(traces):
    trace = traces["serialized", "none"]
    pointers = load("pointers")
    for m in trace.maps:
        assert len(m.sorts) == len(m.spills) == 2  # one forced spill, one last spill
        for sort, spill in zip(m.sorts, m.spills):
            after = [r.pointer for r in sort.after]
            parts = [r.partition for r in sort.after]
            assert parts == sorted(parts)
            assert sorted(after) == sorted(r.pointer for r in sort.before)
            for r in sort.before:
                assert pointers.unpack(r.pointer) == (r.partition, r.page, r.offset)
                prefix = sort.pages[r.page][r.offset:r.offset + 4]
                assert struct.unpack("<I", prefix)[0] == r.length == len(r.data)
            # Following the sorted pointers gives each partition's block of the spill file.
            for pid, off, length, _ in spill.segments:
                joined = b"".join(r.data for r in sort.after if r.partition == pid)
                assert spill.data[off:off + length] == joined
        # The merge: partition r of the data file is its blocks of every spill, in spill order.
        for r in range(trace.num_partitions):
            joined = b"".join(s.data[o:o + n] for s in m.spills for pid, o, n, _ in s.segments if pid == r)
            assert joined == m.segment(r)


def test_bypass_partition_files_are_the_data_segments(traces):
    trace = traces["bypass", "none"]
    for m in trace.maps:
        by_partition = {f.partition: f.data for f in m.partition_files}
        assert sorted(by_partition) == [r for r in range(trace.num_partitions) if m.segment(r)]
        for r, data in by_partition.items():
            assert data == m.segment(r)


def test_sort_spills_hold_sorted_combined_runs(traces):
    trace = traces["sort", "none"]
    for m in trace.maps:
        assert m.spills and not m.sorts and not m.partition_files
        for spill in m.spills:
            assert sum(spill.batch_sizes) == len(spill.data)
            pids = [pid for pid, _, _, _ in spill.segments]
            assert pids == sorted(set(pids))
            for _, _, _, records in spill.segments:
                keys = [k for k, _ in records]
                assert keys == sorted(set(keys))  # combined: one record per key, in key order
        assert m.metrics["spill_count"] == len(m.spills)


def test_record_buffer_observation_is_the_same_in_kernel_and_twin():
    twin = importlib.import_module("shuffle._twins.recordbuf")
    try:
        native = importlib.import_module("shuffle._native.recordbuf")
    except ImportError:
        pytest.skip("compiled kernels not built")
    records = [b"abc", b"defghij", b"x" * 10, b"", b"yz"]
    pids = np.array([2, 0, 1, 0, 2], dtype=np.int32)
    seen = []
    for module in (twin, native):
        buf = module.RecordBuffer(page_size=16, initial_capacity=2)
        with pytest.raises(ValueError):
            buf.page(0)
        buf.insert_batch(pids, records)
        pointers = buf.pointers()
        assert pointers.dtype == np.uint64 and len(pointers) == len(records)
        pointers[0] = 0  # a copy: the buffer is not changed
        seen.append((buf.pointers().tolist(), [buf.page(i) for i in range(buf.pages_used)]))
        with pytest.raises(ValueError):
            buf.page(buf.pages_used)
    assert seen[0] == seen[1]
    assert seen[0][1][0] == b"\x03\x00\x00\x00abc"


def test_text_is_deterministic(traces, tmp_path):
    again = run_trace("serialized", work_dir=tmp_path)
    assert render_text(again) == render_text(traces["serialized", "none"])
    assert "temp_shuffle_<uuid>" in render_text(again)


@pytest.mark.parametrize("mode", MODES)
def test_cli_prints_the_explanation_and_writes_an_html_page(mode, tmp_path, capsys):
    page = tmp_path / "explain.html"
    assert main(["explain", "--mode", mode, "--records", "8", "--partitions", "2", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"shuffle explain: {mode} writer" in out and "reduce partition 1" in out
    assert "index" in out and "checksum" in out and out.strip().endswith(f"wrote {page}")
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 3
    for svg in svgs:
        ElementTree.fromstring(svg)  # well-formed
    trace = run_trace(mode, 8, 2, work_dir=tmp_path)
    assert render_html(trace).count("<section>") == html.count("<section>")


@pytest.mark.parametrize("args, fragment", [
    (["--records", "0"], "--records"),
    (["--records", "many"], "not a whole number"),
    (["--partitions", "65"], "--partitions"),
    (["--mode", "tungsten"], "--mode"),
    (["--codec", "snappy"], "--codec"),
])
def test_bad_options_are_one_line_errors(args, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_html_into_a_missing_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["explain", "--html", str(tmp_path / "no" / "page.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--html" in err


@pytest.mark.parametrize("kwargs, key", [
    ({"mode": "fast"}, "mode"),
    ({"num_records": 0}, "records"),
    ({"num_partitions": 10_000}, "partitions"),
    ({"num_maps": 0}, "maps"),
    ({"codec": "snappy"}, "codec"),
    ({"spill_after": 0}, "spill_after"),
])
def test_run_trace_refuses_bad_arguments(kwargs, key, tmp_path):
    with pytest.raises(ConfigError) as info:
        run_trace(**{"work_dir": tmp_path, **kwargs})
    assert info.value.key == key
    assert list(tmp_path.iterdir()) == []


DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_quote_real_explain_output(traces):
    """Every line the docs quote from `shuffle explain` is in today's output: the docs cannot drift either."""
    outputs = [render_text(traces[mode, "none"]) for mode in MODES] + [render_text(traces["sort", "lz4"])]
    known = {line.strip() for text in outputs for line in text.splitlines()}
    quoted = 0
    for page in ("bypass.md", "serialized.md", "sort.md", "formats.md", "writer-choice.md"):
        text = (DOCS / page).read_text()
        for block in re.findall(r"^ *```\n(.*?)^ *```", text, flags=re.S | re.M):
            for line in block.splitlines():
                if line.strip():
                    assert line.strip() in known, f"{page}: {line.strip()!r} is not what shuffle explain prints"
                    quoted += 1
    assert quoted > 50


def test_checked_in_diagrams_are_what_make_diagrams_writes():
    spec = importlib.util.spec_from_file_location("make_diagrams", DOCS / "make_diagrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.DIAGRAMS) == {"bypass", "serialized", "sort", "architecture"}
    for name, (title, boxes, arrows) in module.DIAGRAMS.items():
        expected = module.svg(title, boxes, arrows)
        assert (DOCS / "img" / f"{name}.svg").read_text() == expected
        ElementTree.fromstring(expected)
