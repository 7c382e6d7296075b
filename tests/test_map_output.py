import dataclasses
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shuffle.errors import MetadataFetchFailedError, ShuffleError
from shuffle.map_output import (
    BlockManagerId,
    MapOutputTracker,
    MapStatus,
    ShuffleBlockBatchId,
    ShuffleBlockId,
    compress_size,
    decompress_size,
)

EXEC_A = BlockManagerId("exec-a", "host-1", "/tmp/a")
EXEC_B = BlockManagerId("exec-b", "host-2", "/tmp/b")


# ------------------------------------------------------------- size bytes


@pytest.mark.parametrize("size, byte", [(0, 0), (1, 1), (2, 8), (10, 25), (10**6, 145), (10**9, 218), (10**18, 255)])
def test_compress_size_matches_sparks_examples(size, byte):
    assert compress_size(size) == byte


def test_decompress_size_inverts_within_ten_percent():
    assert decompress_size(0) == 0
    assert decompress_size(1) == 1
    assert decompress_size(145) == int(1.1**145)
    for size in (2, 10, 1000, 10**6, 10**9, 3 * 10**10):
        assert size <= decompress_size(compress_size(size)) <= size * 1.1


@given(st.integers(min_value=1, max_value=10**15))
def test_a_nonempty_size_never_compresses_to_zero(size):
    assert compress_size(size) >= 1


def test_size_byte_range_is_checked():
    with pytest.raises(ValueError):
        compress_size(-1)
    with pytest.raises(ValueError):
        decompress_size(256)


# ---------------------------------------------------------- ids and status


def test_block_ids_are_named_as_in_spark():
    assert ShuffleBlockId(1, 2, 3).name == "shuffle_1_2_3"
    assert str(ShuffleBlockBatchId(1, 2, 3, 7)) == "shuffle_1_2_3_7"
    assert ShuffleBlockId(1, 2, 3) == ShuffleBlockId(1, 2, 3)
    assert len({ShuffleBlockId(1, 2, 3), ShuffleBlockId(1, 2, 3)}) == 1


def test_block_manager_id_prints_readably():
    assert str(EXEC_A) == "executor exec-a on host-1 (/tmp/a)"


def test_map_status_stores_exact_lengths_as_a_tuple():
    status = MapStatus(EXEC_A, 0, [5, 0, 123456789])
    assert status.partition_lengths == (5, 0, 123456789)
    assert status.num_partitions == 3
    assert status.size_for_block(2) == 123456789
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.map_id = 1


def test_map_status_rejects_negative_lengths():
    with pytest.raises(ShuffleError):
        MapStatus(EXEC_A, 0, (1, -1))


# ----------------------------------------------------------------- tracker


@pytest.fixture
def tracker():
    t = MapOutputTracker()
    t.register_shuffle(7, 3)
    return t


def fill(tracker):
    tracker.register_map_output(7, MapStatus(EXEC_B, 0, (10, 0, 30, 40)))
    tracker.register_map_output(7, MapStatus(EXEC_A, 1, (0, 0, 0, 0)))
    tracker.register_map_output(7, MapStatus(EXEC_A, 2, (1, 2, 0, 4)))


def test_plan_groups_by_location_in_first_seen_order_map_then_reduce(tracker):
    fill(tracker)
    plan = tracker.get_map_sizes_by_range(7, 0, 3, 0, 4)
    assert plan == [
        (EXEC_B, [(ShuffleBlockId(7, 0, 0), 10, 0), (ShuffleBlockId(7, 0, 2), 30, 0), (ShuffleBlockId(7, 0, 3), 40, 0)]),
        (EXEC_A, [(ShuffleBlockId(7, 2, 0), 1, 2), (ShuffleBlockId(7, 2, 1), 2, 2), (ShuffleBlockId(7, 2, 3), 4, 2)]),
    ]


def test_plan_respects_map_and_partition_ranges(tracker):
    fill(tracker)
    assert tracker.get_map_sizes_by_range(7, 1, 3, 1, 3) == [(EXEC_A, [(ShuffleBlockId(7, 2, 1), 2, 2)])]
    assert tracker.get_map_sizes_by_range(7, 0, 3, 2, 2) == []


def test_plan_drops_empty_blocks_and_locations_with_nothing_to_fetch(tracker):
    fill(tracker)
    assert tracker.get_map_sizes_by_range(7, 1, 2, 0, 4) == []


def test_plan_with_a_missing_map_raises_metadata_fetch_failed_naming_it(tracker):
    fill(tracker)
    tracker.unregister_map_output(7, 1)
    assert tracker.get_map_sizes_by_range(7, 2, 3, 0, 4)  # maps outside the gap still plan
    with pytest.raises(MetadataFetchFailedError, match="shuffle 7 map 1") as info:
        tracker.get_map_sizes_by_range(7, 0, 3, 0, 4)
    assert (info.value.shuffle_id, info.value.map_id) == (7, 1)


def test_plan_of_an_unknown_shuffle_raises_metadata_fetch_failed(tracker):
    with pytest.raises(MetadataFetchFailedError, match="shuffle 8"):
        tracker.get_map_sizes_by_range(8, 0, 1, 0, 1)
    with pytest.raises(MetadataFetchFailedError):
        tracker.get_statuses(8)


@pytest.mark.parametrize("maps, parts", [((0, 4), (0, 4)), ((2, 1), (0, 4)), ((0, 3), (0, 5)), ((0, 3), (3, 2))])
def test_plan_rejects_ranges_outside_the_shuffle(tracker, maps, parts):
    fill(tracker)
    with pytest.raises(ShuffleError):
        tracker.get_map_sizes_by_range(7, *maps, *parts)


def test_missing_maps_and_statuses_follow_registration(tracker):
    assert tracker.missing_maps(7) == [0, 1, 2]
    tracker.register_map_output(7, MapStatus(EXEC_A, 1, (1,)))
    assert tracker.missing_maps(7) == [0, 2]
    statuses = tracker.get_statuses(7)
    assert statuses[0] is None and statuses[1].location == EXEC_A
    statuses[0] = "not the tracker's list"
    assert tracker.get_statuses(7)[0] is None


def test_register_map_output_checks_shuffle_and_map_range(tracker):
    with pytest.raises(ShuffleError, match="out of range"):
        tracker.register_map_output(7, MapStatus(EXEC_A, 3, (1,)))
    with pytest.raises(ShuffleError, match="not registered"):
        tracker.register_map_output(9, MapStatus(EXEC_A, 0, (1,)))
    with pytest.raises(ShuffleError, match="already registered"):
        tracker.register_shuffle(7, 3)


def test_unregister_with_a_location_spares_a_newer_output_elsewhere(tracker):
    tracker.register_map_output(7, MapStatus(EXEC_B, 0, (1,)))
    tracker.unregister_map_output(7, 0, location=EXEC_A)
    assert tracker.missing_maps(7) == [1, 2]
    tracker.unregister_map_output(7, 0, location=EXEC_B)
    assert tracker.missing_maps(7) == [0, 1, 2]


def test_losing_an_executor_forgets_its_outputs_in_every_shuffle(tracker):
    tracker.register_shuffle(8, 2)
    fill(tracker)
    tracker.register_map_output(8, MapStatus(EXEC_A, 1, (5,)))
    assert tracker.unregister_outputs_on_executor("exec-a") == 3
    assert tracker.missing_maps(7) == [1, 2]
    assert tracker.missing_maps(8) == [0, 1]


def test_unregister_shuffle_forgets_it(tracker):
    assert tracker.contains_shuffle(7)
    tracker.unregister_shuffle(7)
    tracker.unregister_shuffle(7)
    assert not tracker.contains_shuffle(7)
    with pytest.raises(ShuffleError):
        tracker.missing_maps(7)


def test_concurrent_registrations_are_all_kept():
    tracker = MapOutputTracker()
    tracker.register_shuffle(0, 400)

    def register(first):
        for m in range(first, 400, 4):
            tracker.register_map_output(0, MapStatus(EXEC_A, m, (m + 1,)))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracker.missing_maps(0) == []
    (location, blocks), = tracker.get_map_sizes_by_range(0, 0, 400, 0, 1)
    assert [size for _, size, _ in blocks] == list(range(1, 401))
