"""The columnar block format: round trips over dtypes, sizes and codecs; refusals are typed."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from shuffle.codec import get_codec
from shuffle.columnar.batch_format import HEADER, ColumnSchema, as_batch, block_nbytes, decode_blocks, encode_block
from shuffle.errors import BatchSchemaError, SerializationError

KEY_DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]
VALUE_DTYPES = KEY_DTYPES + ["?", "f2", "c8"]


def column(rng, dtype, n):
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    if dtype.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    return (rng.standard_normal(n) * 1000).astype(dtype)


def encode(keys, values, codec="none"):
    schema = ColumnSchema.of(keys, values)
    return b"".join(bytes(p) for p in encode_block(keys, values, schema, get_codec(codec)))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KEY_DTYPES), st.sampled_from(VALUE_DTYPES), st.integers(0, 300),
       st.sampled_from(["none", "lz4", "zstd", "zlib"]), st.integers(0, 2**32 - 1))
def test_a_block_decodes_to_the_columns_it_was_made_of(key_dtype, value_dtype, n, codec, seed):
    rng = np.random.default_rng(seed)
    keys, values = column(rng, key_dtype, n), column(rng, value_dtype, n)
    data = encode(keys, values, codec)
    assert len(data) % 8 == 0
    if codec == "none":
        assert len(data) == block_nbytes(n, ColumnSchema.of(keys, values))
    [(k, v)] = list(decode_blocks(data))
    assert k.dtype == keys.dtype and v.dtype == values.dtype
    np.testing.assert_array_equal(k, keys)
    np.testing.assert_array_equal(v, values)


def test_structured_and_two_dimensional_values_round_trip():
    keys = np.arange(5, dtype=np.int32)
    structured = np.zeros(5, dtype=[("a", "<i8"), ("b", "<f4"), ("c", "u1", (2,))])
    structured["a"] = np.arange(5) * 7
    structured["c"][:, 1] = 3
    matrix = np.arange(15, dtype=np.float64).reshape(5, 3)
    for values in (structured, matrix):
        [(k, v)] = list(decode_blocks(encode(keys, values, "lz4")))
        np.testing.assert_array_equal(k, keys)
        assert v.dtype == values.dtype and v.shape == values.shape
        assert v.tobytes() == values.tobytes()


def test_big_endian_columns_are_written_little_endian_with_the_same_values():
    keys = np.arange(-3, 4, dtype=">i8")
    values = np.linspace(0, 1, 7).astype(">f8")
    data = encode(keys, values)
    assert np.arange(-3, 4, dtype="<i8").tobytes() in data
    [(k, v)] = list(decode_blocks(data))
    assert k.dtype == np.dtype("<i8") and v.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(k, keys)
    np.testing.assert_array_equal(v, values)


def test_any_concatenation_of_blocks_decodes_as_all_of_their_batches():
    rng = np.random.default_rng(3)
    batches = [(column(rng, "i8", n), column(rng, "f4", n)) for n in (0, 5, 1, 17)]
    data = b"".join(encode(k, v, codec) for (k, v), codec in zip(batches, ["none", "lz4", "zstd", "none"]))
    decoded = list(decode_blocks(data))
    assert len(decoded) == 4
    for (k, v), (dk, dv) in zip(batches, decoded):
        np.testing.assert_array_equal(dk, k)
        np.testing.assert_array_equal(dv, v)


def test_decoding_an_uncompressed_block_does_not_copy_the_columns():
    keys = np.arange(1000, dtype=np.int64)
    data = bytearray(encode(keys, keys))
    [(k, _)] = list(decode_blocks(data))
    assert not k.flags.owndata and k.base is not None
    assert HEADER.size == 40


@pytest.mark.parametrize("damage", ["truncate", "magic", "short_header"])
def test_a_damaged_block_is_a_serialization_error(damage):
    data = bytearray(encode(np.arange(10), np.arange(10)))
    if damage == "truncate":
        data = data[:-9]
    elif damage == "magic":
        data[0:4] = b"XXXX"
    else:
        data = data + b"\x01\x02"
    with pytest.raises(SerializationError):
        list(decode_blocks(bytes(data)))


@pytest.mark.parametrize("keys, values, what", [
    (np.zeros((2, 2), dtype=np.int64), np.zeros(2), "keys"),
    (np.array([1, 2], dtype=object), np.zeros(2), "key dtype"),
    (np.array([True, False]), np.zeros(2), "key dtype"),
    (np.array(["a", "b"]), np.zeros(2), "key dtype"),
    (np.zeros(2, dtype=np.int64), np.array([1, "x"], dtype=object), "value dtype"),
    (np.zeros(2, dtype=np.int64), np.zeros(3), "length"),
    (np.zeros(2, dtype=np.int64), [1, 2], "values"),
    (np.zeros(2, dtype=np.int64), np.zeros((2, 2, 2)), "values"),
])
def test_columns_the_format_cannot_hold_are_refused_with_a_typed_error(keys, values, what):
    with pytest.raises(BatchSchemaError, match=what):
        ColumnSchema.of(keys, values)


def test_a_dtype_change_is_refused_naming_both_schemas():
    schema = ColumnSchema.of(np.zeros(1, np.int64), np.zeros(1, np.float64))
    schema.check(np.zeros(3, ">i8"), np.zeros(3, np.float64))  # byte order alone is no change
    with pytest.raises(BatchSchemaError, match="int32") as info:
        schema.check(np.zeros(1, np.int32), np.zeros(1, np.float64), batch=4)
    assert info.value.batch == 4 and "batch 4" in str(info.value)


@pytest.mark.parametrize("item", [(1, 2), [np.zeros(1), np.zeros(1)], "ab", (np.zeros(1),), None])
def test_an_object_record_is_not_a_batch(item):
    with pytest.raises(BatchSchemaError, match="no object records"):
        as_batch(item, 0)
