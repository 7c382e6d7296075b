import collections
import datetime
import decimal
import enum
import math
import pickle
import random
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle.errors import ConfigError, SerializationError
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.pickle_serializer import PickleSerializer
from shuffle.serializer import (
    Encoder,
    Serializer,
    serializer_from_name,
)

SERIALIZERS = [MsgpackSerializer(), PickleSerializer()]


@pytest.fixture(params=SERIALIZERS, ids=lambda s: s.name, scope="module")
def ser(request) -> Serializer:
    return request.param


def assert_same(a, b):
    """a == b with every type equal, recursively (1 vs True vs 1.0, tuple vs list, -0.0, NaN)."""
    assert type(a) is type(b), f"{a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"
    if type(a) in (list, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif type(a) is dict:
        assert len(a) == len(b)
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):  # order is kept too
            assert_same(ka, kb)
            assert_same(va, vb)
    elif type(a) is float:
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    else:
        assert a == b


def round_trip(ser: Serializer, records: list) -> list:
    enc = ser.new_encoder()
    assert enc.add_all(records) == len(records)
    return list(ser.decode(enc.take()))


# ------------------------------------------------------------ generated values

big_ints = st.integers(min_value=-(2**200), max_value=2**200)
ints = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), big_ints, st.integers())
hashable_scalars = st.one_of(st.none(), st.booleans(), ints, st.text(max_size=8), st.binary(max_size=8))
scalars = st.one_of(hashable_scalars, st.floats(allow_nan=True, allow_infinity=True))
keys = st.recursive(hashable_scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=4)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)
records = st.lists(st.tuples(keys | values, values), max_size=20)


@settings(deadline=None)
@given(records)
def test_generated_records_round_trip_with_exact_types(ser, recs):
    out = round_trip(ser, recs)
    assert_same(out, recs)


@settings(deadline=None)
@given(records, st.lists(st.integers(min_value=0, max_value=20), max_size=5), st.randoms())
def test_takes_concatenated_at_any_split_points_decode_as_one_stream(ser, recs, cuts, rnd):
    enc = ser.new_encoder()
    pieces = []
    bounds = sorted(c for c in cuts if c <= len(recs))
    start = 0
    for end in bounds + [len(recs)]:
        part = recs[start:end]
        if rnd.random() < 0.5:
            enc.add_all(part)
        else:
            for k, v in part:
                enc.add(k, v)
        assert enc.count == len(part)
        pieces.append(enc.take())
        start = end
    assert_same(list(ser.decode(b"".join(pieces))), recs)


@settings(max_examples=50, deadline=None)
@given(records)
def test_dumps_records_concatenated_in_any_order_form_a_stream(ser, recs):
    # For msgpack this is relocation; pickle frames concatenate as well.
    blobs = ser.dumps_records(recs)
    assert len(blobs) == len(recs)
    order = list(range(len(recs)))
    random.Random(len(recs)).shuffle(order)
    out = list(ser.decode(b"".join(blobs[i] for i in order)))
    assert_same(out, [recs[i] for i in order])


@settings(max_examples=50, deadline=None)
@given(records)
def test_dumps_record_equals_dumps_records_and_loads_back(ser, recs):
    for (k, v), blob in zip(recs, ser.dumps_records(recs)):
        assert ser.dumps_record(k, v) == blob
        assert_same(ser.loads_record(blob), (k, v))


def test_msgpack_records_are_key_then_value_with_no_framing():
    ser = MsgpackSerializer()
    assert ser.dumps_record(1, "a") == msgpack.packb(1) + msgpack.packb("a")
    enc = ser.new_encoder()
    enc.add_all([(1, 2), (3, b"x")])
    assert enc.take() == b"\x01\x02\x03" + msgpack.packb(b"x", use_bin_type=True)


def test_pickle_stream_is_length_prefixed_pickled_lists_of_records():
    ser = PickleSerializer()
    enc = ser.new_encoder()
    enc.add_all([(1, 2), ("a", None)])
    data = enc.take()
    (length,) = struct.unpack(">I", data[:4])
    assert len(data) == 4 + length
    assert pickle.loads(data[4:]) == [(1, 2), ("a", None)]
    blob = ser.dumps_record("k", [1])
    assert pickle.loads(blob[4:]) == [("k", [1])]


def test_relocatable_only_for_msgpack():
    assert MsgpackSerializer().relocatable is True
    assert PickleSerializer().relocatable is False


# ------------------------------------------------------------ types that need care


@pytest.mark.parametrize(
    "value",
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64), 10**40, -(10**40), -1, 0],
)
def test_ints_at_and_beyond_64_bits_round_trip(ser, value):
    assert_same(round_trip(ser, [(value, -value)]), [(value, -value)])


class Color(enum.IntEnum):
    RED = 1


Pair = collections.namedtuple("Pair", "a b")


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


@pytest.mark.parametrize(
    "value",
    [
        {1, 2, 3},
        frozenset({"a"}),
        Color.RED,
        Pair(1, [2]),
        collections.OrderedDict(a=1),
        collections.defaultdict(list, {1: [2]}),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        decimal.Decimal("1.10"),
        Point(1, (2, 3)),
        True,
        1.0,
        -0.0,
        float("inf"),
        "\ud800 lone surrogate",
        b"",
        (),
        [],
        {},
        ((),),
        [[]],
        {(1, "a"): {(2,): [()]}},
    ],
    ids=repr,
)
def test_values_outside_the_generated_space_keep_their_exact_type(ser, value):
    out = round_trip(ser, [(value, value)])
    assert_same(out, [(value, value)])


def test_byte_buffers_come_back_as_bytes_from_msgpack_and_exact_from_pickle():
    # msgpack packs every byte buffer as bin, before any hook could see its type.
    rec = (bytearray(b"ab"), memoryview(b"cd"))
    assert_same(round_trip(MsgpackSerializer(), [rec]), [(b"ab", b"cd")])
    assert_same(round_trip(PickleSerializer(), [(bytearray(b"ab"), 1)]), [(bytearray(b"ab"), 1)])


def test_tuple_keys_stay_hashable_tuples_inside_dicts(ser):
    rec = ({(1, (2, "x")): [1]}, {(): ()})
    (out,) = round_trip(ser, [rec])
    assert_same(out, rec)
    assert out[0][(1, (2, "x"))] == [1]


def test_deep_nesting_round_trips_or_raises_serialization_error(ser):
    shallow = deep = 0
    for _ in range(300):
        shallow = (shallow, [shallow])[1:]
    for _ in range(5000):
        deep = [deep]
    assert_same(round_trip(ser, [(1, shallow)]), [(1, shallow)])
    with pytest.raises(SerializationError) as info:
        ser.new_encoder().add_all([(1, deep)])
    assert info.value.type_name == "list"


# ------------------------------------------------------------ encoder bookkeeping


def test_nbytes_and_count_describe_the_buffer_since_the_last_take(ser):
    enc = ser.new_encoder()
    assert (enc.nbytes, enc.count) == (0, 0)
    enc.add_all([(i, str(i)) for i in range(3000)])
    assert enc.count == 3000
    n = enc.nbytes
    assert n > 3000
    enc.add_all([(1, 2)])  # reading nbytes must not block further packing
    data = enc.take()
    assert len(data) == enc_bytes_after(ser, n)
    assert (enc.nbytes, enc.count) == (0, 0)
    assert enc.take() == b""
    assert isinstance(enc, Encoder)


def enc_bytes_after(ser, n):
    # One more small record; pickle adds a frame of its own.
    return n + len(ser.dumps_record(1, 2))


def test_msgpack_nbytes_is_exact_after_single_adds():
    enc = MsgpackSerializer().new_encoder()
    for i in range(100):
        enc.add(i, [i])
    assert enc.nbytes == len(enc.take())


def test_pickle_add_batches_records_into_frames_of_1024():
    enc = PickleSerializer().new_encoder()
    for i in range(2500):
        enc.add(i, i)
    assert enc.nbytes > 0  # two full frames closed, 452 records pending
    data = enc.take()
    frames = 0
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4 + length
        frames += 1
    assert frames == 3
    assert list(PickleSerializer().decode(data)) == [(i, i) for i in range(2500)]


def test_add_all_accepts_any_iterable_and_splits_large_input_into_frames(ser):
    recs = ((i, -i) for i in range(5000))
    enc = ser.new_encoder()
    assert enc.add_all(recs) == 5000
    assert list(ser.decode(enc.take())) == [(i, -i) for i in range(5000)]


def test_decode_streams_large_inputs_and_records_larger_than_a_read_chunk(ser):
    big = b"\x07" * (3 << 20)
    recs = [(i, i * 7) for i in range(60_000)] + [("big", big)] + [(i, str(i)) for i in range(60_000)]
    enc = ser.new_encoder()
    enc.add_all(recs)
    data = enc.take()
    assert len(data) > 3 << 20
    out = ser.decode(memoryview(data))
    assert next(out) == (0, 0)
    assert list(out) == recs[1:]


def test_decode_accepts_bytes_bytearray_and_memoryview(ser):
    blob = ser.dumps_record("k", (1, [2]))
    for form in (blob, bytearray(blob), memoryview(blob)):
        assert list(ser.decode(form)) == [("k", (1, [2]))]
    assert list(ser.decode(b"")) == []


def test_garbage_after_good_records_is_an_error_before_or_after_them(ser):
    good = ser.dumps_records([(1, 1), (2, 2)])
    got = []
    with pytest.raises(SerializationError):
        got.extend(ser.decode(b"".join(good) + b"\xc1\xc1\xc1\xc1\xc1"))
    assert got in ([], [(1, 1), (2, 2)])  # a small buffer is refused whole; a streamed one after its records


def test_a_large_stream_is_decoded_lazily_records_before_garbage_come_out_first():
    ser = MsgpackSerializer()
    good = b"".join(ser.dumps_records([(i, "x" * 100) for i in range(20_000)]))  # over 1 MB: streamed
    stream = ser.decode(good + b"\xc1\xc1\xc1\xc1\xc1")
    assert next(stream) == (0, "x" * 100)
    with pytest.raises(SerializationError):
        for _ in stream:
            pass


# ------------------------------------------------------------ errors on encode


class RefusesPickle:
    def __reduce__(self):
        raise TypeError("RefusesPickle cannot be pickled")


@pytest.mark.parametrize(
    "bad_value, type_name",
    [
        (lambda: 1, "function"),
        ([1, (2, lambda: 3)], "function"),
        (RefusesPickle(), f"{__name__}.RefusesPickle"),
        ({"k": {RefusesPickle()}}, f"{__name__}.RefusesPickle"),
    ],
    ids=["lambda", "nested lambda", "failing __reduce__", "nested failing __reduce__"],
)
def test_unencodable_value_names_its_position_and_innermost_type(ser, bad_value, type_name):
    enc = ser.new_encoder()
    enc.add(0, 0)
    with pytest.raises(SerializationError) as info:
        enc.add_all([(1, 1), (2, 2), (3, bad_value), (4, 4)])
    err = info.value
    assert err.position == 2
    assert err.type_name == type_name
    assert "record 2" in str(err) and type_name in str(err)
    assert err.__cause__ is not None
    # The failed encoder is left empty, and still works.
    assert (enc.count, enc.nbytes) == (0, 0)
    enc.add_all([(5, 5)])
    assert list(ser.decode(enc.take())) == [(5, 5)]


def test_failing_reduce_keeps_its_own_error_as_the_cause(ser):
    with pytest.raises(SerializationError) as info:
        ser.dumps_records([(1, 2), (RefusesPickle(), 3)])
    assert info.value.position == 1
    assert isinstance(info.value.__cause__, TypeError)
    assert "RefusesPickle cannot be pickled" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "record, type_name",
    [([1, 2], "list"), ((1, 2, 3), "tuple"), ((1,), "tuple"), (7, "int"), ("ab", "str"), (None, "NoneType")],
)
def test_a_record_that_is_not_a_2_tuple_is_an_error_naming_its_type(ser, record, type_name):
    for call in (lambda recs: ser.new_encoder().add_all(recs), ser.dumps_records):
        with pytest.raises(SerializationError) as info:
            call([(0, 0), (1, 1), (2, 2), record])
        assert info.value.position == 3
        assert info.value.type_name == type_name
        assert "2-tuple" in info.value.reason


def test_positions_count_within_the_call_across_frames(ser):
    recs = [(i, i) for i in range(3000)] + [(3000, lambda: 0)]
    with pytest.raises(SerializationError) as info:
        ser.new_encoder().add_all(iter(recs))
    assert info.value.position == 3000


def test_single_record_errors_carry_no_position(ser):
    with pytest.raises(SerializationError) as info:
        ser.dumps_record(1, lambda: 0)
    assert info.value.position is None and info.value.type_name == "function"
    enc = ser.new_encoder()
    with pytest.raises(SerializationError) as info:
        enc.add(lambda: 0, 1)
        enc.take()  # pickle's add() defers pickling to its frame
    assert info.value.position is None and info.value.type_name == "function"
    assert enc.count == 0


def test_an_error_raised_by_the_input_itself_propagates_unchanged(ser):
    def recs():
        yield (1, 1)
        raise KeyError("upstream")

    enc = ser.new_encoder()
    with pytest.raises(KeyError):
        enc.add_all(recs())
    assert enc.count == 0


# ------------------------------------------------------------ errors on decode


@settings(deadline=None)
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=6), st.data())
def test_any_cut_inside_a_record_is_an_error_and_cuts_between_records_are_not(ser, recs, data):
    blobs = ser.dumps_records(recs)
    stream = b"".join(blobs)
    bounds = {0}
    pos = 0
    for b in blobs:
        pos += len(b)
        bounds.add(pos)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)))
    if cut in bounds:
        done = sorted(bounds).index(cut)
        assert_same(list(ser.decode(stream[:cut])), recs[:done])
    else:
        with pytest.raises(SerializationError):
            list(ser.decode(stream[:cut]))


def test_msgpack_garbage_raises_serialization_error():
    ser = MsgpackSerializer()
    cases = [
        b"\xc1",  # never used in msgpack
        b"\x01" + msgpack.packb(msgpack.ExtType(99, b"")),  # an extension we never write
        b"\x01" + msgpack.packb(msgpack.ExtType(3, b"not a pickle")),
        b"\x01\x02\x03",  # a key without a value
        b"\x01\xdb\xff\xff\xff\xff",  # a str longer than the buffer
    ]
    for data in cases:
        with pytest.raises(SerializationError) as info:
            list(ser.decode(data))
        assert info.value.type_name == "msgpack stream"


def test_pickle_garbage_raises_serialization_error():
    ser = PickleSerializer()
    not_a_list = pickle.dumps({"a": 1})
    cases = [
        b"\x00\x00",  # half a header
        b"\x00\x00\x00\x09abc",  # a frame longer than the data
        b"\x00\x00\x00\x03abc",  # not a pickle
        struct.pack(">I", len(not_a_list)) + not_a_list,
    ]
    for data in cases:
        with pytest.raises(SerializationError) as info:
            list(ser.decode(data))
        assert info.value.type_name == "pickle stream"


def test_loads_record_wants_exactly_one_record(ser):
    with pytest.raises(SerializationError):
        ser.loads_record(b"")
    with pytest.raises(SerializationError):
        ser.loads_record(b"".join(ser.dumps_records([(1, 1), (2, 2)])))


# ------------------------------------------------------------ identity


def test_serializers_compare_by_class_and_pickle(ser):
    assert ser == type(ser)()
    assert hash(ser) == hash(type(ser)())
    assert ser != next(s for s in SERIALIZERS if type(s) is not type(ser))
    clone = pickle.loads(pickle.dumps(ser))
    assert clone == ser
    assert list(clone.decode(ser.dumps_record(1, (2,)))) == [(1, (2,))]


def test_serializer_from_name():
    assert serializer_from_name("msgpack") == MsgpackSerializer()
    assert serializer_from_name("pickle") == PickleSerializer()
    with pytest.raises(ConfigError) as info:
        serializer_from_name("kryo")
    assert "msgpack" in info.value.expected and info.value.value == "kryo"
