"""The columnar kernel and its numpy twin: same answers as Python's hash()/dict/argsort, and as each other."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from shuffle._twins import columnar as twin

native = pytest.importorskip("shuffle._native.columnar")
KERNELS = [pytest.param(native, id="native"), pytest.param(twin, id="twin")]
INT_DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", ">i8", ">u4"]
BUCKETS = st.sampled_from([1, 2, 3, 7, 64, 1000, 2**31 - 1])


def random_ints(rng, dtype, n):
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    out = rng.integers(info.min, info.max, n, dtype=dtype.newbyteorder("="), endpoint=True).astype(dtype)
    edges = [v for v in (info.min, info.max, 0, 1, -1, -2, 2**61 - 1, 2**61, -(2**61) + 1) if info.min <= v <= info.max]
    out[:min(n, len(edges))] = edges[:n]
    return out


def python_ids(keys, n):
    return np.array([hash(k) % n for k in keys.tolist()], dtype=np.int32)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(INT_DTYPES), n=BUCKETS, size=st.integers(0, 500), seed=st.integers(0, 2**32 - 1))
def test_int_partition_ids_are_pythons_hash_modulo_n(kernel, dtype, n, size, seed):
    keys = random_ints(np.random.default_rng(seed), dtype, size)
    np.testing.assert_array_equal(kernel.hash_partition_ids(keys, n), python_ids(keys, n))


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["f4", "f8"]), n=BUCKETS,
       floats=st.lists(st.floats(allow_nan=False, width=32), max_size=200))
def test_float_partition_ids_are_pythons_hash_modulo_n(kernel, dtype, n, floats):
    keys = np.array(floats + [0.0, -0.0, np.inf, -np.inf, -1.0, 5e-324 if dtype == "f8" else 1e-45, 2.0**70],
                    dtype=dtype)
    np.testing.assert_array_equal(kernel.hash_partition_ids(keys, n), python_ids(keys, n))


@pytest.mark.parametrize("kernel", KERNELS)
def test_partition_ids_refuse_nan_bad_dtypes_and_bad_counts(kernel):
    with pytest.raises(ValueError, match="NaN"):
        kernel.hash_partition_ids(np.array([1.0, np.nan]), 4)
    with pytest.raises(TypeError):
        kernel.hash_partition_ids(np.array(["a"]), 4)
    with pytest.raises(TypeError):
        kernel.hash_partition_ids([1, 2], 4)
    with pytest.raises(TypeError):
        kernel.hash_partition_ids(np.arange(3), True)
    with pytest.raises(ValueError):
        kernel.hash_partition_ids(np.arange(3), 0)
    with pytest.raises(ValueError):
        kernel.hash_partition_ids(np.zeros((2, 2), dtype=np.int64), 4)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 2, 5, 64, 300]), size=st.integers(0, 400), seed=st.integers(0, 2**32 - 1),
       shape=st.sampled_from(["uniform", "all_equal", "sorted", "one_hot"]))
def test_counting_sort_equals_a_stable_argsort_gather(kernel, n, size, seed, shape):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n, size).astype(np.int32)
    if shape == "all_equal":
        ids[:] = n - 1
    elif shape == "sorted":
        ids.sort()
    elif shape == "one_hot":
        ids[rng.random(size) < 0.9] = 0
    columns = [np.arange(size, dtype=np.int64), rng.integers(0, 255, size).astype(np.uint8),
               rng.standard_normal((size, 3)).astype(np.float32),
               np.zeros(size, dtype=[("a", "<i4"), ("b", "u1")])]
    columns[3]["a"] = np.arange(size)
    out, offsets = kernel.counting_sort(ids, n, columns)
    order = np.argsort(ids, kind="stable")
    for got, column in zip(out, columns):
        assert got.tobytes() == column[order].tobytes()
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=n))]))


@pytest.mark.parametrize("kernel", KERNELS)
def test_counting_sort_refuses_ids_out_of_range_and_ragged_columns(kernel):
    with pytest.raises(ValueError, match="lie in"):
        kernel.counting_sort(np.array([0, 4], dtype=np.int32), 4, [])
    with pytest.raises(ValueError, match="lie in"):
        kernel.counting_sort(np.array([-1], dtype=np.int32), 4, [])
    with pytest.raises(TypeError, match="int32"):
        kernel.counting_sort(np.array([0], dtype=np.int64), 4, [])
    with pytest.raises(ValueError, match="rows"):
        kernel.counting_sort(np.array([0, 1], dtype=np.int32), 4, [np.zeros(3)])
    with pytest.raises(TypeError):
        kernel.counting_sort(np.array([0], dtype=np.int32), 4, [[1]])


def dict_fold(keys, values, op):
    out = {}
    for k, v in zip(keys.tolist(), values.tolist()):
        if op == "count":
            out[k] = out.get(k, 0) + 1
        elif k not in out:
            out[k] = v
        elif op == "sum":
            out[k] = out[k] + v
        else:
            out[k] = min(out[k], v) if op == "min" else max(out[k], v)
    return out


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["sum", "min", "max", "count"]), dtype=st.sampled_from(["i8", "u8", "f8"]),
       size=st.integers(0, 400), distinct=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_hash_aggregate_equals_a_dict_fold_in_first_seen_order(kernel, op, dtype, size, distinct, seed):
    rng = np.random.default_rng(seed)
    keys = rng.integers(-distinct, distinct, size).astype(np.int64)
    keys[:1] = np.iinfo(np.int64).min if size and seed % 2 else keys[:1]
    values = rng.integers(0, 1000, size).astype(dtype)
    got_keys, got_values = kernel.hash_aggregate(keys, values, op)
    expected = dict_fold(keys, values, op)
    assert got_keys.tolist() == list(expected)
    np.testing.assert_allclose(got_values.astype(np.float64), np.array(list(expected.values()), dtype=np.float64))
    assert got_values.dtype == (np.int64 if op == "count" else values.dtype)


@pytest.mark.parametrize("kernel", KERNELS)
def test_hash_aggregate_refuses_bad_input(kernel):
    with pytest.raises(ValueError, match="op"):
        kernel.hash_aggregate(np.zeros(2, np.int64), np.zeros(2, np.int64), "median")
    with pytest.raises(TypeError, match="int64"):
        kernel.hash_aggregate(np.zeros(2, np.int32), np.zeros(2, np.int64), "sum")
    with pytest.raises(TypeError):
        kernel.hash_aggregate(np.zeros(2, np.int64), np.zeros(2, np.int32), "sum")
    with pytest.raises(ValueError, match="length"):
        kernel.hash_aggregate(np.zeros(2, np.int64), np.zeros(3, np.int64), "sum")


def test_the_kernels_agree_on_a_million_rows_with_one_hot_key():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 10**6, 10**6)
    keys[rng.random(10**6) < 0.5] = 42
    values = rng.integers(0, 1000, 10**6)
    for n in (64, 1000):
        ids = native.hash_partition_ids(keys, n)
        np.testing.assert_array_equal(ids, twin.hash_partition_ids(keys, n))
        (a, b), offsets = native.counting_sort(ids, n, [keys, values])
        (c, d), twin_offsets = twin.counting_sort(ids, n, [keys, values])
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
        np.testing.assert_array_equal(offsets, twin_offsets)
    for x, y in zip(native.hash_aggregate(keys, values, "sum"), twin.hash_aggregate(keys, values, "sum")):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kernel", KERNELS)
def test_read_only_columns_are_accepted(kernel):
    keys = np.frombuffer(np.arange(100, dtype=np.int64).tobytes(), dtype=np.int64)
    values = np.frombuffer(np.ones(100).tobytes(), dtype=np.float64)
    assert not keys.flags.writeable
    ids = kernel.hash_partition_ids(keys, 8)
    ids.flags.writeable = False
    (k,), _ = kernel.counting_sort(ids, 8, [keys])
    assert sorted(k.tolist()) == list(range(100))
    k, v = kernel.hash_aggregate(keys, values, "sum")
    assert k.tolist() == list(range(100)) and v.tolist() == [1.0] * 100
