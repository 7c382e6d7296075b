"""The msgpack record-packing kernel gives its twin's bytes (msgpack's own) and stops where it does."""

import pytest
from hypothesis import given, settings, strategies as st

from shuffle._native import msgpack_records as native
from shuffle._twins import msgpack_records as twin
from shuffle.msgpack_serializer import MsgpackSerializer, _pack_other

KERNELS = [pytest.param(native, id="cython"), pytest.param(twin, id="twin")]

EDGES = [None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63,
         2**64 - 1, 2**64, -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63, -2**63 - 1,
         0.0, -0.0, -1.5, float("inf"), "", "a", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 65535,
         "x" * 65536, "é漢🙂", "\udc80", b"", b"a", b"x" * 255, b"x" * 256, b"x" * 65536, (1, "a"), [1], {1: 2}]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=40), st.binary(max_size=300))
objects = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner)),
                       max_leaves=5)
records = st.lists(st.one_of(st.tuples(objects, objects), st.just((1, 2, 3)), st.just([1, 2]), st.just(7)),
                   max_size=30)


def expected_bytes(record):
    return _pack_other(record[0]) + _pack_other(record[1])


def test_every_scalar_edge_packs_as_msgpack_does():
    batch = [(a, b) for a in EDGES for b in EDGES[:12]]
    for kernel in (native, twin):
        out = bytearray()
        assert kernel.pack_pairs(batch, out, _pack_other) == len(batch)
        assert bytes(out) == b"".join(map(expected_bytes, batch))
        each, stop = kernel.pack_each(batch, _pack_other)
        assert stop == len(batch) and each == list(map(expected_bytes, batch))


@settings(max_examples=300, deadline=None)
@given(batch=records, start=st.integers(0, 5))
def test_kernel_and_twin_agree_on_bytes_and_on_where_they_stop(batch, start):
    start = min(start, len(batch))
    results = []
    for kernel in (native, twin):
        out = bytearray(b"prefix")
        stop = kernel.pack_pairs(batch, out, _pack_other, start)
        each, each_stop = kernel.pack_each(batch, _pack_other, start)
        results.append((stop, bytes(out), each_stop, each))
    assert results[0] == results[1]
    stop, out, _, each = results[0]
    assert out == b"prefix" + b"".join(map(expected_bytes, batch[start:stop]))
    assert stop == len(batch) or not (type(batch[stop]) is tuple and len(batch[stop]) == 2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_failing_fallback_cuts_the_output_back_to_the_last_whole_record(kernel):
    def fails_on_lists(obj):
        if isinstance(obj, list):
            raise ValueError("no lists")
        return _pack_other(obj)
    out = bytearray()
    assert kernel.pack_pairs([(1, "a"), (2, [3]), (4, "b")], out, fails_on_lists) == 1
    assert bytes(out) == expected_bytes((1, "a"))
    assert kernel.pack_pairs([(1, "a"), (2, [3]), (4, "b")], out, fails_on_lists, 2) == 3


@pytest.mark.parametrize("kernel", KERNELS)
def test_bad_arguments_are_type_and_value_errors(kernel):
    with pytest.raises(TypeError):
        kernel.pack_pairs(None, bytearray(), _pack_other)
    with pytest.raises(TypeError):
        kernel.pack_pairs([], b"", _pack_other)
    with pytest.raises(TypeError):
        kernel.pack_pairs([], bytearray(), None)
    with pytest.raises(ValueError):
        kernel.pack_pairs([(1, 2)], bytearray(), _pack_other, 5)
    with pytest.raises(ValueError):
        kernel.pack_each([(1, 2)], _pack_other, -1)
    with pytest.raises(TypeError):
        kernel.pack_each((1, 2), _pack_other)


def test_the_serializer_round_trips_through_the_kernel():
    serializer = MsgpackSerializer()
    batch = [(a, b) for a in EDGES for b in EDGES[:6]]
    encoder = serializer.new_encoder()
    encoder.add_all(batch)
    encoder.add("k", ("v", 1))
    assert list(serializer.decode(encoder.take())) == batch + [("k", ("v", 1))]
    assert b"".join(serializer.dumps_records(batch)) == b"".join(map(expected_bytes, batch))
