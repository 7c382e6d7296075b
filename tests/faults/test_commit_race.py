"""Two attempts of one map, each a real writer in its own process, committing at the same moment.

Expected: exactly one attempt's output is committed; both attempts report the
winner's partition lengths; a reader polling the files during the race, the
way fetches read them (index offsets, data range, checksum verification),
sees either no output or the winner's whole output, never a mix of the two.
(tests/test_resolver.py races bare ``write_metadata_and_commit`` calls with
hand-made segments; here the full writers race, each writer kind, with
checksums, and the reader goes through the fetch path's verification.)
"""

from __future__ import annotations

import multiprocessing
import traceback

import pytest

from shuffle import HashPartitioner, MsgpackSerializer, ShuffleConf, ShuffleDependency, SortShuffleManager
from shuffle.blocks import BlockFormat
from shuffle.read.block_io import read_ranges

from faults.conftest import temporaries

ROUNDS = 8                      # map ids raced, one after another
PARTITIONS = 4
CONF = {"spark.shuffle.sync": "true", "spark.executor.memory": "64m"}


def attempt_records(tag: str, map_id: int):
    # The two attempts write different bytes (and lengths), so a mix would show.
    return [(k, f"{tag}{map_id}" * (1 + len(tag) * (k % 3))) for k in range(200)]


def _attempt(local_dir: str, tag: str, kind: str, barrier, results) -> None:
    try:
        conf = ShuffleConf({**CONF, "shuffle.writer.force": kind})
        manager = SortShuffleManager(conf, local_dir=local_dir, executor_id=tag)
        dep = ShuffleDependency(0, ROUNDS, HashPartitioner(PARTITIONS), MsgpackSerializer())
        handle = manager.register_shuffle(dep)
        resolver = manager.resolver
        commit = resolver.write_metadata_and_commit

        def at_the_same_moment(*args, **kwargs):
            barrier.wait(timeout=60)
            return commit(*args, **kwargs)

        resolver.write_metadata_and_commit = at_the_same_moment
        for map_id in range(ROUNDS):
            status = manager.get_writer(handle, map_id).write(attempt_records(tag, map_id))
            results.put((tag, map_id, list(status.partition_lengths)))
        # No manager.stop(): it would delete the shuffle's files, which the test inspects.
    except BaseException:
        results.put((tag, None, traceback.format_exc()))


def _read(local_dir: str, map_id: int, fmt: BlockFormat):
    """What a fetch of the whole map sees now: None (not committed), or {partition: records}."""
    (result,) = read_ranges(None, local_dir, 0, [(map_id, 0, PARTITIONS)], verify=True)
    if result.error is not None:
        assert "No such file" in result.error, result.error
        return None
    assert result.verdicts == (None,) * PARTITIONS, result.verdicts
    base = result.offsets[0]
    return {p: list(fmt.decode(result.data[a - base:b - base]))
            for p, (a, b) in enumerate(zip(result.offsets, result.offsets[1:]))}


def _by_partition(records):
    parts = {p: [] for p in range(PARTITIONS)}
    for k, v in records:
        parts[k % PARTITIONS].append((k, v))
    return parts


def _same_records(seen, expected) -> bool:
    return all(sorted(seen[p]) == sorted(expected[p]) for p in range(PARTITIONS))


@pytest.mark.parametrize("kind", ["bypass", "serialized", "sort"])
def test_racing_attempts_commit_one_output_and_readers_never_see_a_mix(tmp_path, kind):
    local_dir = str(tmp_path / "executor-race")
    mp = multiprocessing.get_context("forkserver")
    barrier, results = mp.Barrier(2), mp.Queue()
    procs = [mp.Process(target=_attempt, args=(local_dir, tag, kind, barrier, results)) for tag in ("a", "bb")]
    for proc in procs:
        proc.start()
    fmt = BlockFormat.for_shuffle(ShuffleConf(CONF), MsgpackSerializer())
    expected = {(tag, m): _by_partition(attempt_records(tag, m)) for tag in ("a", "bb") for m in range(ROUNDS)}
    reported = {}
    reads = 0
    try:
        while len(reported) < 2 * ROUNDS:
            # Poll the map being raced (and the finished ones) while the writers commit.
            for map_id in range(ROUNDS):
                seen = _read(local_dir, map_id, fmt) if (tmp_path / "executor-race").exists() else None
                if seen is not None:
                    reads += 1
                    assert _same_records(seen, expected["a", map_id]) or _same_records(seen, expected["bb", map_id])
            while not results.empty():
                tag, map_id, value = results.get()
                assert map_id is not None, value
                reported[tag, map_id] = value
            assert any(p.is_alive() for p in procs) or not results.empty() or len(reported) == 2 * ROUNDS
    finally:
        for proc in procs:
            proc.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert reads > 0
    for map_id in range(ROUNDS):
        assert reported["a", map_id] == reported["bb", map_id]          # the loser got the winner's lengths
        seen = _read(local_dir, map_id, fmt)
        winner = "a" if _same_records(seen, expected["a", map_id]) else "bb"
        assert _same_records(seen, expected[winner, map_id])
        offsets = _offsets(local_dir, map_id)
        assert [b - a for a, b in zip(offsets, offsets[1:])] == reported["a", map_id]
    assert temporaries(tmp_path) == []


def _offsets(local_dir: str, map_id: int):
    (result,) = read_ranges(None, local_dir, 0, [(map_id, 0, PARTITIONS)], verify=False)
    return list(result.offsets)
