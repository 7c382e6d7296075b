"""Committed map outputs damaged on disk: the data file truncated, extended or with one byte
flipped, the index truncated or with offsets that go backwards.

Expected: the damage is found before any record of a damaged block is used
(the fetch fails: a checksum mismatch, or the data file's size disagreeing
with its index, or bad offsets, named with the file), the damaged map alone
is rerun, and the result equals the oracle. ``parallelism=1`` puts the rerun
on the executor that holds the damaged files, which is the hard case: map
outputs are named by map id, so the rerun must not keep the damaged ones.
(tests/test_fetcher.py covers the fetcher's verdicts on flipped bytes and a
truncated index; these go through the whole engine.)
"""

from __future__ import annotations

import logging
import operator
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from faults.conftest import assert_clean, committed_indexes

N = 5000
MAPS = 4
REDUCES = 5
VICTIM = 2


def records():
    return [(f"k{x % 131}", x) for x in range(N)]


def oracle():
    sums = defaultdict(int)
    for k, v in records():
        sums[k] += v
    return dict(sums)


def flip_byte(data: Path, index: Path) -> None:
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def truncate_data(data: Path, index: Path) -> None:
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) - 3])


def extend_data(data: Path, index: Path) -> None:
    with open(data, "ab") as f:
        f.write(b"\x00garbage")


def truncate_index(data: Path, index: Path) -> None:
    raw = index.read_bytes()
    index.write_bytes(raw[:-8])


def backwards_offsets(data: Path, index: Path) -> None:
    raw = index.read_bytes()
    offsets = list(struct.unpack(f">{len(raw) // 8}q", raw))
    offsets[2] = offsets[1] - 1 if offsets[1] > 0 else offsets[3] + 1  # goes back somewhere
    index.write_bytes(struct.pack(f">{len(offsets)}q", *offsets))


DAMAGE = {
    "data-flipped-byte": (flip_byte, "data"),
    "data-truncated": (truncate_data, "data"),
    "data-extended": (extend_data, "data"),
    "index-truncated": (truncate_index, "index"),
    "index-non-monotonic": (backwards_offsets, "index"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_committed_output_is_detected_and_only_its_map_rerun(make_ctx, caplog, damage):
    damage_fn, named = DAMAGE[damage]
    ctx = make_ctx(1)
    counts = ctx.parallelize(records(), MAPS).reduce_by_key(operator.add, REDUCES)
    assert dict(counts.collect()) == oracle()
    (index,) = committed_indexes(ctx.local_dir, counts.shuffle_id, VICTIM)
    data = index.with_suffix(".data")
    damage_fn(data, index)

    with caplog.at_level(logging.WARNING, logger="shuffle.engine.scheduler"):
        assert dict(counts.collect()) == oracle()

    stages = [(s.kind, s.tasks) for s in ctx.last_job_metrics.stages]
    assert ("map", 1) in stages, stages                    # the damaged map alone, once
    fetch_failures = [r.getMessage() for r in caplog.records if "fetch failed" in r.getMessage()]
    assert fetch_failures and all(f"map {VICTIM} " in m for m in fetch_failures)
    assert any((index if named == "index" else data).name in m or "corrupted" in m for m in fetch_failures)
    (rerun_index,) = committed_indexes(ctx.local_dir, counts.shuffle_id, VICTIM)
    assert data.exists() and rerun_index.with_suffix(".data").stat().st_size == struct.unpack(
        ">q", rerun_index.read_bytes()[-8:])[0]
    assert_clean(ctx)


def test_a_flipped_byte_names_a_disk_issue_and_no_record_of_the_block_reaches_the_reducer(make_ctx, caplog):
    ctx = make_ctx(1)
    seen = ctx.parallelize(records(), MAPS).partition_by(REDUCES)
    assert sorted(seen.collect()) == sorted(records())
    (index,) = committed_indexes(ctx.local_dir, seen.shuffle_id, VICTIM)
    flip_byte(index.with_suffix(".data"), index)
    with caplog.at_level(logging.WARNING, logger="shuffle.engine.scheduler"):
        # Not combined, not sorted: blocks go to the result one by one, so a corrupt one
        # that slipped through would add, drop or change records.
        assert sorted(seen.collect()) == sorted(records())
    assert any("DISK_ISSUE" in r.getMessage() for r in caplog.records)
