"""The recordbuf kernel: records come back grouped by partition, in insertion order, with exact memory."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle._native import recordbuf as native
from shuffle._twins import recordbuf as twin
from shuffle.errors import RecordTooLargeError, ShuffleError

IMPLS = [pytest.param(native, id="compiled"), pytest.param(twin, id="twin")]
PTR = 8  # bytes per pointer slot
PREFIX = 4
INITIAL = 4096 * PTR  # memory_used of an empty buffer with the default initial capacity


def oracle(batches):
    """partition -> concatenated record bytes, in insertion order."""
    out = {}
    for pids, recs in batches:
        for p, r in zip(pids, recs):
            out[p] = out.get(p, b"") + r
    return out


def fill(m, batches, **kwargs):
    buf = m.RecordBuffer(**kwargs)
    for pids, recs in batches:
        buf.insert_batch(np.array(pids, dtype=np.int32), recs)
    return buf


batch = st.lists(st.tuples(st.integers(0, 19), st.binary(max_size=30)), max_size=40).map(
    lambda pairs: ([p for p, _ in pairs], [r for _, r in pairs])
)


@pytest.mark.parametrize("m", IMPLS)
@settings(max_examples=60, deadline=None)
@given(batches=st.lists(batch, max_size=5), page_size=st.sampled_from([1, 7, 64, 1 << 20]))
def test_sorted_partitions_equal_a_dict_of_lists_oracle(m, batches, page_size):
    buf = fill(m, batches, page_size=page_size, initial_capacity=4)
    expected = oracle(batches)
    assert list(buf.sorted_partitions(20)) == sorted(expected.items())
    assert buf.num_records == sum(len(r) for _, r in batches)
    assert buf.data_bytes == sum(len(x) for _, r in batches for x in r)
    assert buf.partition_lengths(20) == [len(expected.get(p, b"")) for p in range(20)]


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(batch, max_size=5), page_size=st.sampled_from([1, 16, 100, 4096]))
def test_compiled_and_twin_are_byte_identical(batches, page_size):
    bufs = [fill(m, batches, page_size=page_size, initial_capacity=2) for m in (native, twin)]
    assert list(bufs[0].sorted_partitions(20)) == list(bufs[1].sorted_partitions(20))
    for attr in ("memory_used", "pages_used", "num_records", "data_bytes"):
        assert getattr(bufs[0], attr) == getattr(bufs[1], attr), attr


def test_compiled_and_twin_agree_on_a_large_random_batch():
    rng = np.random.default_rng(7)
    pids = rng.integers(0, 1000, 20_000).astype(np.int32)
    recs = [rng.bytes(int(k)) for k in rng.integers(0, 50, 20_000)]
    outs = []
    for m in (native, twin):
        buf = m.RecordBuffer(page_size=4096)
        buf.insert_batch(pids, recs)
        outs.append((list(buf.sorted_partitions(1000)), buf.memory_used, buf.pages_used))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("m", IMPLS)
def test_tiny_pages_roll_over_and_memory_used_is_exact(m):
    buf = m.RecordBuffer(page_size=16, initial_capacity=2)
    assert buf.memory_used == 2 * PTR
    # 10 + 4 bytes fit a 16-byte page once; a 30-byte record gets a page of its own size.
    buf.insert_batch(np.array([1, 0, 1], np.int32), [b"a" * 10, b"b" * 10, b"c" * 30])
    assert buf.pages_used == 3
    assert buf.memory_used == 16 + 16 + (30 + PREFIX) + 4 * PTR  # pointer array doubled 2 -> 4
    # 1 + 4 bytes still fit nowhere: the last page is full, so a fourth opens.
    buf.insert_batch(np.array([0, 0], np.int32), [b"d", b"e"])
    assert buf.pages_used == 4
    assert buf.memory_used == 16 + 16 + 34 + 16 + 8 * PTR
    assert buf.data_bytes == 52
    assert list(buf.sorted_partitions(2)) == [(0, b"b" * 10 + b"de"), (1, b"a" * 10 + b"c" * 30)]


@pytest.mark.parametrize("m", IMPLS)
def test_reset_frees_pages_and_memory_drops_to_initial(m):
    buf = m.RecordBuffer(page_size=1024)
    assert buf.memory_used == INITIAL
    buf.insert_batch(np.zeros(5000, np.int32), [b"xy"] * 5000)
    assert buf.memory_used == 30 * 1024 + 8192 * PTR  # 5000 * 6 bytes in 1 KiB pages
    buf.reset()
    assert (buf.memory_used, buf.pages_used, buf.num_records, buf.data_bytes) == (INITIAL, 0, 0, 0)
    assert list(buf.sorted_partitions(1)) == []
    buf.insert_batch(np.array([0], np.int32), [b"again"])
    assert list(buf.sorted_partitions(1)) == [(0, b"again")]


@pytest.mark.parametrize("m", IMPLS)
def test_oversized_record_raises_with_its_position_and_inserts_nothing(m):
    buf = m.RecordBuffer(page_size=64)
    buf.insert_batch(np.array([0], np.int32), [b"kept"])
    before = (buf.memory_used, buf.pages_used, buf.num_records, buf.data_bytes)
    too_big = bytes(m.MAX_RECORD_SIZE + 1)  # 4 + len = 2**27 + 1 > MAX_PAGE_SIZE
    with pytest.raises(RecordTooLargeError) as info:
        buf.insert_batch(np.array([1, 2, 3], np.int32), [b"ok", b"ok", too_big])
    assert (info.value.size, info.value.limit, info.value.position) == (2**27 - 3, 2**27 - 4, 2)
    assert (buf.memory_used, buf.pages_used, buf.num_records, buf.data_bytes) == before
    assert list(buf.sorted_partitions(4)) == [(0, b"kept")]


@pytest.mark.parametrize("m", IMPLS)
def test_a_record_of_the_largest_size_fills_one_maximal_page(m):
    buf = m.RecordBuffer(page_size=16, initial_capacity=1)
    record = b"\x01" * m.MAX_RECORD_SIZE
    buf.insert_batch(np.array([3], np.int32), [record])
    assert buf.memory_used == 2**27 + PTR
    ((partition, data),) = list(buf.sorted_partitions(4))
    assert partition == 3 and data == record


@pytest.mark.parametrize("m", IMPLS)
def test_running_out_of_pages_raises_shuffle_error_and_inserts_nothing(m):
    buf = m.RecordBuffer(page_size=8, max_pages=3)
    buf.insert_batch(np.array([0, 0], np.int32), [b"1234", b"5678"])
    assert buf.pages_used == 2
    with pytest.raises(ShuffleError, match="spill") as info:
        buf.insert_batch(np.array([1, 1], np.int32), [b"abcd", b"efgh"])
    assert not isinstance(info.value, RecordTooLargeError)
    assert (buf.pages_used, buf.max_pages, buf.num_records) == (2, 3, 2)
    buf.insert_batch(np.array([1], np.int32), [b"abcd"])
    assert list(buf.sorted_partitions(2)) == [(0, b"12345678"), (1, b"abcd")]


@pytest.mark.parametrize("m", IMPLS)
def test_partitions_holding_only_empty_records_still_appear(m):
    buf = m.RecordBuffer()
    buf.insert_batch(np.array([2, 0, 2], np.int32), [b"", b"z", b""])
    assert list(buf.sorted_partitions(3)) == [(0, b"z"), (2, b"")]
    assert buf.partition_lengths(3) == [1, 0, 0]


@pytest.mark.parametrize("m", IMPLS)
def test_large_partitions_and_the_highest_partition_id(m):
    buf = m.RecordBuffer(page_size=1 << 16)
    big = bytes(range(256)) * 1000
    top = 2**24 - 1
    buf.insert_batch(np.array([top, 5, top], np.int64), [big, b"s", big[::-1]])
    assert list(buf.sorted_partitions(2**24)) == [(5, b"s"), (top, big + big[::-1])]


@pytest.mark.parametrize("m", IMPLS)
def test_an_empty_batch_and_an_empty_buffer_do_nothing(m):
    buf = m.RecordBuffer()
    buf.insert_batch(np.zeros(0, np.int32), [])
    assert (buf.num_records, buf.pages_used, buf.memory_used) == (0, 0, INITIAL)
    assert list(buf.sorted_partitions(1)) == []
    assert buf.partition_lengths(2) == [0, 0]


@pytest.mark.parametrize("m", IMPLS)
def test_partition_ids_may_be_any_integer_array_like(m):
    buf = m.RecordBuffer()
    buf.insert_batch([1, 0], [b"a", b"b"])
    buf.insert_batch(np.array([1], np.uint8), (b"c",))
    assert list(buf.sorted_partitions(2)) == [(0, b"b"), (1, b"ac")]


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize(
    "pids, recs, error, message",
    [
        (None, [b"a"], TypeError, "partition_ids"),
        (np.array([0.0]), [b"a"], TypeError, "integer"),
        (np.zeros((1, 1), np.int32), [b"a"], ValueError, "1-D"),
        (np.array([0, -1]), [b"a", b"b"], ValueError, "partition id -1 at position 1"),
        (np.array([0, 2**24]), [b"a", b"b"], ValueError, "partition id 16777216 at position 1"),
        (np.array([0, 1]), [b"a"], ValueError, "2 partition ids for 1 records"),
        (np.array([0]), None, TypeError, "records"),
        (np.array([0]), b"a", TypeError, "records"),
        (np.array([0, 0]), [b"a", "b"], TypeError, "record 1 must be bytes, got str"),
        (np.array([0]), [bytearray(b"a")], TypeError, "record 0 must be bytes"),
    ],
)
def test_insert_batch_rejects_bad_arguments_and_inserts_nothing(m, pids, recs, error, message):
    buf = m.RecordBuffer()
    with pytest.raises(error, match=message):
        buf.insert_batch(pids, recs)
    assert (buf.num_records, buf.pages_used, buf.memory_used) == (0, 0, INITIAL)


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"page_size": 0}, ValueError),
        ({"page_size": 2**27 + 1}, ValueError),
        ({"page_size": "1m"}, TypeError),
        ({"max_pages": 0}, ValueError),
        ({"max_pages": 8193}, ValueError),
        ({"initial_capacity": 0}, ValueError),
    ],
)
def test_constructor_rejects_out_of_range_settings(m, kwargs, error):
    with pytest.raises(error):
        m.RecordBuffer(**kwargs)


@pytest.mark.parametrize("m", IMPLS)
def test_constructor_accepts_its_limits(m):
    buf = m.RecordBuffer(page_size=2**27, max_pages=8192)
    assert (buf.page_size, buf.max_pages, buf.pages_used) == (2**27, 8192, 0)


@pytest.mark.parametrize("m", IMPLS)
def test_num_partitions_must_cover_every_inserted_partition(m):
    buf = m.RecordBuffer()
    buf.insert_batch(np.array([0, 4], np.int32), [b"a", b"b"])
    with pytest.raises(ValueError, match="partition id 4, not below num_partitions=4"):
        buf.sorted_partitions(4)
    with pytest.raises(ValueError, match="num_partitions=4"):
        buf.partition_lengths(4)
    with pytest.raises(ValueError, match="num_partitions"):
        buf.sorted_partitions(0)
    with pytest.raises(TypeError, match="num_partitions"):
        buf.sorted_partitions(None)


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize("change", ["insert", "reset"])
def test_changing_the_buffer_during_iteration_raises(m, change):
    buf = m.RecordBuffer()
    buf.insert_batch(np.array([0, 1, 2], np.int32), [b"a", b"b", b"c"])
    it = buf.sorted_partitions(3)
    assert next(it) == (0, b"a")
    if change == "insert":
        buf.insert_batch(np.array([0], np.int32), [b"d"])
    else:
        buf.reset()
    with pytest.raises(RuntimeError, match="finish the iteration"):
        next(it)


@pytest.mark.parametrize("m", IMPLS)
def test_records_are_copied_not_referenced(m):
    buf = m.RecordBuffer()
    recs = [b"one", b"two"]
    buf.insert_batch(np.array([0, 0], np.int32), recs)
    recs.clear()
    del recs
    assert list(buf.sorted_partitions(1)) == [(0, b"onetwo")]


def test_compiled_and_twin_export_the_same_names_and_methods():
    assert native.__all__ == twin.__all__
    assert native.LENGTH_PREFIX_BYTES == twin.LENGTH_PREFIX_BYTES == 4
    assert native.MAX_RECORD_SIZE == twin.MAX_RECORD_SIZE == 2**27 - 4
    public = {n for n in dir(twin.RecordBuffer) if not n.startswith("_")}
    assert public == {n for n in dir(native.RecordBuffer) if not n.startswith("_")}
