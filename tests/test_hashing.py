"""The hashing kernel: compiled and twin agree, and both equal PySpark's seed-0 hash."""

import inspect
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle._native import hashing as native
from shuffle._twins import hashing as twin

ROOT = Path(__file__).resolve().parent.parent
IMPLS = [pytest.param(native, id="compiled"), pytest.param(twin, id="twin")]

# Every code point, lone surrogates included: a str may hold them.
any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), float("nan")])
    | any_text
    | st.binary(max_size=40)
)
keys = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4).map(tuple), max_leaves=12)


def pyspark_portable_hash(x):
    """PySpark's portable_hash as its reference describes it (run under PYTHONHASHSEED=0)."""
    if x is None:
        return 0
    if isinstance(x, tuple):
        h = 0x345678
        for i in x:
            h ^= pyspark_portable_hash(i)
            h *= 1000003
            h &= sys.maxsize
        h ^= len(x)
        if h == -1:
            h = -2
        return int(h)
    return hash(x)


def run_python(script, seed, payload):
    """Run ``script`` in a fresh interpreter with PYTHONHASHSEED=seed; pickle in, pickle out."""
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script], input=pickle.dumps(payload), env=env,
        capture_output=True, cwd=ROOT, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout)


def edge_strings():
    import random

    rng = random.Random(7)
    out = ["", "a", "é", "ÿ", "Ā", "日本語", "\ud800", "\udfff", "😀", "a\ud800😀", "\x00", "\x00" * 9]
    # Every length 0..24 covers each tail size 0..7 over zero to three full blocks,
    # in each of the three PEP 393 widths.
    for widest in (0x7F, 0xFF, 0xFFFF, 0x10FFFF):
        for length in range(25):
            s = "".join(chr(rng.randint(0, widest)) for _ in range(length))
            if length:
                s = s[:-1] + chr(widest)  # force this width
            out.append(s)
    out.append("x" * 1000 + "😀")
    return out


def edge_bytes():
    return [b"", b"\x00", b"\xff" * 7, b"\xff" * 8, b"abcdefghi", bytes(range(256))] + [
        bytes(range(n)) for n in range(25)
    ]


SEED0_VALUES = (
    edge_strings()
    + edge_bytes()
    + [(), ("a",), ("a", b"b"), (("x", ("y",)), None), (1, "a", 2.5, None, True), (-1,), ("é", "😀")]
)

SEED0_SCRIPT = "import pickle, sys\n" + inspect.getsource(pyspark_portable_hash) + """
values = pickle.load(sys.stdin.buffer)
sys.stdout.buffer.write(pickle.dumps([pyspark_portable_hash(v) for v in values]))
"""


@pytest.fixture(scope="module")
def seed0_hashes():
    if not native.MATCHES_CPYTHON_SEED0:
        pytest.skip(f"interpreter hashes with {sys.hash_info.algorithm}, not siphash13")
    return run_python(SEED0_SCRIPT, 0, SEED0_VALUES)


@pytest.mark.parametrize("impl", IMPLS)
def test_str_bytes_and_tuples_equal_pyspark_workers_hash_under_seed_0(impl, seed0_hashes):
    ours = [impl.portable_hash(v) for v in SEED0_VALUES]
    mismatches = [(v, a, b) for v, a, b in zip(SEED0_VALUES, ours, seed0_hashes) if a != b]
    assert mismatches == []


def test_matches_flag_follows_the_interpreters_hash_algorithm():
    expected = sys.hash_info.algorithm == "siphash13" and sys.hash_info.cutoff == 0
    assert native.MATCHES_CPYTHON_SEED0 == twin.MATCHES_CPYTHON_SEED0 == expected


@settings(max_examples=300)
@given(key=keys)
def test_compiled_and_twin_agree_on_generated_keys(key):
    assert native.portable_hash(key) == twin.portable_hash(key)


@given(key_list=st.lists(keys, max_size=30), n=st.integers(1, 2**31 - 1) | st.integers(1, 64))
def test_compiled_and_twin_agree_on_partition_ids(key_list, n):
    a = native.partition_ids(key_list, n)
    b = twin.partition_ids(key_list, n)
    assert a.dtype == b.dtype == np.int32
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("impl", IMPLS)
@given(key_list=st.lists(keys, max_size=30), n=st.integers(1, 1000))
def test_partition_ids_are_portable_hash_mod_n(impl, key_list, n):
    ids = impl.partition_ids(key_list, n)
    assert ids.tolist() == [impl.portable_hash(k) % n for k in key_list]
    assert ((ids >= 0) & (ids < n)).all()


@pytest.mark.parametrize("impl", IMPLS)
@given(k=st.integers() | st.floats(allow_nan=False) | st.booleans())
def test_numbers_hash_as_the_builtin_hash(impl, k):
    assert impl.portable_hash(k) == hash(k)


@pytest.mark.parametrize("impl", IMPLS)
def test_int_hash_is_the_int_except_minus_one(impl):
    for k in (0, 1, 5, -2, -5, 2**61 - 2, -(2**61 - 2), 2**31, -(2**31)):
        assert impl.portable_hash(k) == k
    assert impl.portable_hash(-1) == -2
    # C-long extremes take the kernel's inline path; beyond them, hash().
    for k in (2**63 - 1, -(2**63), 2**61 - 1, -(2**61 - 1), 2**64, -(2**64) - 1, 10**40):
        assert impl.portable_hash(k) == hash(k)


@pytest.mark.parametrize("impl", IMPLS)
def test_none_and_empty_buffers_hash_to_zero(impl):
    assert impl.portable_hash(None) == 0
    assert impl.portable_hash("") == 0
    assert impl.portable_hash(b"") == 0


@pytest.mark.parametrize("impl", IMPLS)
@given(items=st.lists(st.integers(-(2**62), 2**62) | st.none(), max_size=6))
def test_tuples_of_numbers_use_pysparks_combine(impl, items):
    t = tuple(items)
    assert impl.portable_hash(t) == pyspark_portable_hash(t)


@pytest.mark.parametrize("impl", IMPLS)
def test_tuple_subclasses_combine_like_tuples(impl):
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    assert impl.portable_hash(Pair("x", 1)) == impl.portable_hash(("x", 1))


@pytest.mark.parametrize("impl", IMPLS)
def test_str_subclass_keeps_str_hash_unless_it_overrides_it(impl):
    class Plain(str):
        pass

    class Custom(str):
        def __hash__(self):
            return 12345

    assert impl.portable_hash(Plain("héllo")) == impl.portable_hash("héllo")
    assert impl.portable_hash(Custom("héllo")) == 12345


@pytest.mark.parametrize("impl", IMPLS)
def test_bytes_and_str_of_the_same_latin1_text_hash_alike(impl):
    # CPython hashes memory: a 1-byte-per-char str is the same buffer as its latin-1 bytes.
    assert impl.portable_hash("café") == impl.portable_hash("café".encode("latin-1"))


@pytest.mark.parametrize("impl", IMPLS)
def test_other_hashable_types_fall_back_to_builtin_hash(impl):
    for obj in (frozenset({1, 2}), 3 + 4j, range(3)):
        assert impl.portable_hash(obj) == hash(obj)


@pytest.mark.parametrize("impl", IMPLS)
def test_unhashable_keys_raise_type_error(impl):
    for bad in ([1], {"a": 1}, ("ok", [1])):
        with pytest.raises(TypeError):
            impl.portable_hash(bad)
        with pytest.raises(TypeError):
            impl.partition_ids(["fine", bad], 4)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_hash_that_raises_propagates(impl):
    class Boom:
        def __hash__(self):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        impl.portable_hash(("a", Boom()))
    with pytest.raises(ValueError, match="boom"):
        impl.partition_ids([1, Boom()], 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_too_deeply_nested_tuple_raises_recursion_error(impl):
    t = ()
    for _ in range(100_000):
        t = (t,)
    with pytest.raises(RecursionError):
        impl.portable_hash(t)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keys_arg", [None, "abc", b"abc", 42, object()])
def test_partition_ids_rejects_non_sequences(impl, keys_arg):
    with pytest.raises(TypeError):
        impl.partition_ids(keys_arg, 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [0, -1, 2**31, 10**30])
def test_partition_ids_rejects_out_of_range_partition_counts(impl, n):
    with pytest.raises(ValueError):
        impl.partition_ids([1, 2], n)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [None, "4", 4.0, True])
def test_partition_ids_rejects_non_int_partition_counts(impl, n):
    with pytest.raises(TypeError):
        impl.partition_ids([1, 2], n)


@pytest.mark.parametrize("impl", IMPLS)
def test_partition_ids_accepts_any_sequence_and_int_like_counts(impl):
    expected = impl.partition_ids(["a", "b", "c"], 5).tolist()
    assert impl.partition_ids(("a", "b", "c"), np.int64(5)).tolist() == expected
    assert impl.partition_ids(iter(["a", "b", "c"]), 5).tolist() == expected
    assert impl.partition_ids([], 5).dtype == np.int32
    assert impl.partition_ids([], 5).shape == (0,)
    assert impl.partition_ids([-1, 3], 2**31 - 1).tolist() == [2**31 - 3, 3]


@pytest.mark.parametrize("impl", IMPLS)
def test_partition_ids_of_numpy_ints_equal_python_ints(impl):
    arr = np.arange(-50, 50, dtype=np.int64)
    assert impl.partition_ids(arr, 7).tolist() == impl.partition_ids(arr.tolist(), 7).tolist()


def test_compiled_partition_ids_of_a_million_ints_equal_numpy_mod():
    k = np.arange(-500_000, 500_000, dtype=np.int64)
    k = k[k != -1]
    ids = native.partition_ids(k.tolist(), 64)
    assert np.array_equal(ids, (k % 64).astype(np.int32))


@pytest.mark.parametrize("impl", IMPLS)
def test_all_equal_keys_land_in_one_partition(impl):
    ids = impl.partition_ids(["same"] * 2000, 13)
    assert (ids == ids[0]).all()
