"""The pointers kernel: packed pointer limits, and a stable radix sort equal to NumPy's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle._native import pointers as native
from shuffle._twins import pointers as twin

IMPLS = [pytest.param(native, id="compiled"), pytest.param(twin, id="twin")]
MAX_U64 = 2**64 - 1


def stable_reference(ptrs: np.ndarray) -> np.ndarray:
    return ptrs[np.argsort(ptrs >> np.uint64(40), kind="stable")]


def with_insertion_order(partition_ids: np.ndarray) -> np.ndarray:
    """Pointers whose low 27 bits (the offset) number them in input order."""
    n = len(partition_ids)
    return twin.pack_array(partition_ids, np.zeros(n, np.int64), np.arange(n) % (twin.MAX_OFFSET + 1))


# --- layout constants --------------------------------------------------------


@pytest.mark.parametrize("m", IMPLS)
def test_constants_follow_sparks_packed_pointer_layout(m):
    assert (m.PARTITION_BITS, m.PAGE_BITS, m.OFFSET_BITS) == (24, 13, 27)
    assert m.PARTITION_BITS + m.PAGE_BITS + m.OFFSET_BITS == 64
    assert m.MAX_PARTITION_ID == 16777215
    assert m.MAX_PAGE_NUMBER == 8191
    assert m.MAX_OFFSET == 2**27 - 1
    assert m.MAX_PAGE_SIZE == 2**27


# --- pack / unpack -----------------------------------------------------------


@pytest.mark.parametrize("m", IMPLS)
def test_pack_at_every_limit_round_trips(m):
    ptr = m.pack(16777215, 8191, 2**27 - 1)
    assert ptr == MAX_U64
    assert m.unpack(ptr) == (16777215, 8191, 2**27 - 1)
    assert m.pack(0, 0, 0) == 0
    assert m.pack(1, 0, 0) == 1 << 40
    assert m.pack(0, 1, 0) == 1 << 27
    assert m.unpack(m.pack(3, 5, 7)) == (3, 5, 7)


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize(
    "args, field, limit",
    [
        ((16777216, 0, 0), "partition", 16777215),
        ((0, 8192, 0), "page", 8191),
        ((0, 0, 2**27), "offset", 2**27 - 1),
        ((-1, 0, 0), "partition", 16777215),
        ((0, -1, 0), "page", 8191),
        ((0, 0, -1), "offset", 2**27 - 1),
    ],
)
def test_pack_one_past_a_limit_raises_naming_field_and_limit(m, args, field, limit):
    with pytest.raises(ValueError, match=rf"{field} -?\d+ is outside \[0, {limit}\]"):
        m.pack(*args)


@pytest.mark.parametrize("m", IMPLS)
def test_pack_rejects_non_integers(m):
    with pytest.raises(TypeError, match="partition must be an int"):
        m.pack(1.0, 0, 0)
    with pytest.raises(TypeError, match="offset must be an int"):
        m.pack(0, 0, None)


@pytest.mark.parametrize("m", IMPLS)
def test_pack_accepts_numpy_integers(m):
    assert m.pack(np.int32(2), np.uint16(3), np.int64(4)) == m.pack(2, 3, 4)


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize("bad", [-1, 2**64])
def test_unpack_rejects_values_outside_64_bits(m, bad):
    with pytest.raises(ValueError, match="pointer"):
        m.unpack(bad)


@pytest.mark.parametrize("m", IMPLS)
@given(
    p=st.integers(0, 2**24 - 1),
    g=st.integers(0, 2**13 - 1),
    o=st.integers(0, 2**27 - 1),
)
def test_unpack_inverts_pack(m, p, g, o):
    assert m.unpack(m.pack(p, g, o)) == (p, g, o)


# --- pack_array / partitions_of ---------------------------------------------


@pytest.mark.parametrize("m", IMPLS)
@settings(max_examples=50)
@given(
    fields=st.lists(
        st.tuples(st.integers(0, 2**24 - 1), st.integers(0, 2**13 - 1), st.integers(0, 2**27 - 1)),
        max_size=50,
    )
)
def test_pack_array_equals_elementwise_pack(m, fields):
    p, g, o = (np.array([f[k] for f in fields], dtype=np.int64) for k in range(3))
    out = m.pack_array(p, g, o)
    assert out.dtype == np.uint64
    assert out.tolist() == [m.pack(*f) for f in fields]
    assert m.partitions_of(out).tolist() == [f[0] for f in fields]
    assert m.partitions_of(out).dtype == np.int32


@pytest.mark.parametrize("m", IMPLS)
def test_pack_array_accepts_any_integer_dtype_at_the_limits(m):
    out = m.pack_array(
        np.array([16777215], np.uint32), np.array([8191], np.int16), np.array([2**27 - 1], np.uint64)
    )
    assert out.tolist() == [MAX_U64]


@pytest.mark.parametrize("m", IMPLS)
def test_pack_array_rejects_out_of_range_bad_kinds_and_mismatched_lengths(m):
    ok = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="partition 16777216 is outside"):
        m.pack_array(np.array([0, 16777216]), ok, ok)
    with pytest.raises(ValueError, match="page -1 is outside"):
        m.pack_array(ok, np.array([0, -1]), ok)
    with pytest.raises(ValueError, match="offset 134217728 is outside"):
        m.pack_array(ok, ok, np.array([2**27, 0], np.uint64))
    with pytest.raises(ValueError, match="differ in length"):
        m.pack_array(ok, ok, np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="integer array"):
        m.pack_array(ok.astype(float), ok, ok)
    with pytest.raises(TypeError, match="got None"):
        m.pack_array(ok, None, ok)
    with pytest.raises(ValueError, match="1-D"):
        m.pack_array(ok.reshape(1, 2), ok.reshape(1, 2), ok.reshape(1, 2))


@pytest.mark.parametrize("m", IMPLS)
def test_pack_array_of_empty_arrays_is_empty_uint64(m):
    empty = np.zeros(0, np.int64)
    out = m.pack_array(empty, empty, empty)
    assert out.dtype == np.uint64 and out.shape == (0,)


# --- radix_sort_by_partition -------------------------------------------------

RNG = np.random.default_rng(20240611)
MILLION = 1_000_000

INPUTS = {
    "million_random_ids": lambda: RNG.integers(0, 2**24, MILLION),
    "all_equal": lambda: np.full(10_000, 70_000),
    "already_sorted": lambda: np.sort(RNG.integers(0, 2**24, 10_000)),
    "reverse_sorted": lambda: np.sort(RNG.integers(0, 2**24, 10_000))[::-1].copy(),
    "one_hot_partition": lambda: np.where(RNG.random(50_000) < 0.95, 12345, RNG.integers(0, 2**24, 50_000)),
    "empty": lambda: np.zeros(0, np.int64),
    "ids_using_all_three_bytes": lambda: RNG.choice(
        [0x000001, 0x000100, 0x010000, 0xFFFFFF, 0x01FF00, 0xFF00FF], 20_000
    ),
    "only_the_top_byte_varies": lambda: RNG.integers(0, 256, 20_000) << 16,
    "only_the_middle_byte_varies": lambda: (RNG.integers(0, 256, 20_000) << 8) | 0x7F,
}


@pytest.fixture(scope="module", params=sorted(INPUTS))
def ids(request):
    return INPUTS[request.param]()


@pytest.mark.parametrize("m", IMPLS)
def test_radix_sort_equals_numpy_stable_argsort(m, ids):
    ptrs = with_insertion_order(ids)
    before = ptrs.copy()
    out = m.radix_sort_by_partition(ptrs)
    assert out.dtype == np.uint64 and out.shape == ptrs.shape
    assert np.array_equal(out, stable_reference(ptrs))
    assert np.array_equal(ptrs, before), "the input must not be modified"


def test_radix_sort_compiled_equals_twin_on_random_full_width_pointers():
    ptrs = RNG.integers(0, 2**64, 200_000, dtype=np.uint64)
    assert np.array_equal(native.radix_sort_by_partition(ptrs), twin.radix_sort_by_partition(ptrs))


@pytest.mark.parametrize("m", IMPLS)
def test_radix_sort_keeps_insertion_order_within_a_partition(m):
    ids = RNG.integers(0, 256, 30_000) * 0x010101  # varies all three bytes at once
    out = m.radix_sort_by_partition(with_insertion_order(ids))
    parts = out >> np.uint64(40)
    order = out & np.uint64(twin.MAX_OFFSET)
    assert np.all(np.diff(parts.astype(np.int64)) >= 0)
    same = parts[1:] == parts[:-1]
    assert np.all(order[1:][same] > order[:-1][same])


@pytest.mark.parametrize("m", IMPLS)
@settings(max_examples=60)
@given(
    ids=st.lists(
        st.integers(0, 2**24 - 1) | st.sampled_from([0, 255, 256, 65535, 65536, 2**24 - 1]),
        max_size=300,
    )
)
def test_radix_sort_property_equals_stable_argsort(m, ids):
    ptrs = with_insertion_order(np.array(ids, dtype=np.int64))
    assert np.array_equal(m.radix_sort_by_partition(ptrs), stable_reference(ptrs))


@pytest.mark.parametrize("m", IMPLS)
def test_radix_sort_accepts_a_read_only_array(m):
    ptrs = with_insertion_order(np.array([5, 1, 5, 0]))
    ptrs.flags.writeable = False
    assert np.array_equal(m.radix_sort_by_partition(ptrs), stable_reference(ptrs))


@pytest.mark.parametrize("m", IMPLS)
@pytest.mark.parametrize("fn", ["radix_sort_by_partition", "partitions_of"])
@pytest.mark.parametrize(
    "bad, error",
    [
        (None, TypeError),
        ([1, 2, 3], TypeError),
        (np.zeros(4, np.float64), TypeError),
        (np.zeros(4, np.int64), TypeError),
        (np.zeros(4, np.uint32), TypeError),
        (np.zeros(4, ">u8"), TypeError),
        (np.zeros((2, 2), np.uint64), ValueError),
        (np.zeros(8, np.uint64)[::2], ValueError),
    ],
    ids=["none", "list", "float", "int64", "uint32", "big_endian", "2d", "strided"],
)
def test_pointer_array_functions_reject_bad_inputs(m, fn, bad, error):
    with pytest.raises(error):
        getattr(m, fn)(bad)


@pytest.mark.parametrize("m", IMPLS)
def test_int64_refusal_explains_the_view(m):
    with pytest.raises(TypeError, match=r"view\(np.uint64\)"):
        m.radix_sort_by_partition(np.zeros(3, np.int64))


@pytest.mark.parametrize("m", IMPLS)
def test_partitions_above_2_pow_23_sort_after_smaller_ones(m):
    # These set bit 63: an int64 reinterpretation would sort them first.
    ptrs = twin.pack_array([2**23, 5, 2**24 - 1, 0], [0, 0, 0, 0], [0, 1, 2, 3])
    assert m.partitions_of(m.radix_sort_by_partition(ptrs)).tolist() == [0, 5, 2**23, 2**24 - 1]


def test_compiled_and_twin_export_the_same_names_and_values():
    assert native.__all__ == twin.__all__
    for name in native.__all__:
        value = getattr(native, name)
        if isinstance(value, int):
            assert value == getattr(twin, name), name
        else:
            assert callable(getattr(twin, name)), name
