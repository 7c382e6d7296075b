import pickle
import random
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle.codec import CODEC_NAMES, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, Codec, get_codec
from shuffle.errors import ConfigError, SerializationError

FRAMED = [n for n in CODEC_NAMES if n != "none"]


@pytest.fixture(params=CODEC_NAMES, scope="module")
def codec(request) -> Codec:
    return get_codec(request.param)


@pytest.fixture(params=FRAMED, scope="module")
def framed(request) -> Codec:
    return get_codec(request.param)


def mixed_bytes(n: int, seed: int = 0) -> bytes:
    """Half text-like (compressible), half random (not)."""
    rnd = random.Random(seed)
    words = [b"shuffle", b"partition", b"spill", b"\x00\x01\x02", b"index"]
    text = b" ".join(rnd.choice(words) for _ in range(n // 12))
    return (text + rnd.randbytes(n))[:n]


def blocks(data: bytes) -> list[tuple[int, int]]:
    """(compressed length, raw length) of each block, walking the headers."""
    out = []
    pos = 0
    while pos < len(data):
        clen, rlen = struct.unpack_from(">II", data, pos)
        out.append((clen, rlen))
        pos += 8 + clen
    assert pos == len(data)
    return out


@settings(deadline=None)
@given(data=st.binary(max_size=3000), block_size=st.integers(min_value=1, max_value=700))
def test_every_codec_round_trips_any_bytes_at_any_block_size(data, block_size):
    for name in CODEC_NAMES:
        codec = get_codec(name, block_size)
        assert codec.decompress(codec.compress(data)) == data


@settings(deadline=None)
@given(pieces=st.lists(st.binary(max_size=500) | st.just(b"ab" * 300), max_size=6))
def test_concatenated_outputs_decompress_as_one_stream(pieces):
    for name in CODEC_NAMES:
        codec = get_codec(name, 64)
        joined = b"".join(codec.compress(p) for p in pieces)
        assert codec.decompress(joined) == b"".join(pieces)


def test_empty_input_gives_empty_output(codec):
    assert codec.compress(b"") == b""
    assert codec.decompress(b"") == b""
    assert codec.decompress(codec.compress(b"") + codec.compress(b"x")) == b"x"


def test_large_input_is_split_into_blocks_of_block_size(framed):
    data = mixed_bytes(5 * DEFAULT_BLOCK_SIZE + 123)
    packed = framed.compress(data)
    raw_lengths = [rlen for _, rlen in blocks(packed)]
    assert raw_lengths == [DEFAULT_BLOCK_SIZE] * 5 + [123]
    assert framed.decompress(memoryview(packed)) == data
    assert framed.decompress(bytearray(packed)) == data


def test_compressible_blocks_shrink_and_random_blocks_are_stored_raw(framed):
    text = b"abcdefgh" * 4096
    noise = random.Random(1).randbytes(4096)
    (text_block,) = blocks(framed.compress(text))
    (noise_block,) = blocks(framed.compress(noise))
    assert text_block[0] < text_block[1] // 10
    assert noise_block == (4096, 4096)  # stored: compressed length == raw length
    assert framed.compress(noise)[8:] == noise


def test_blocks_written_with_one_block_size_read_with_another(framed):
    data = mixed_bytes(10_000)
    small = get_codec(framed.name, 100)
    assert framed.decompress(small.compress(data)) == data


def test_none_codec_is_the_identity_without_framing():
    codec = get_codec("none")
    assert codec.compress(b"abc") == b"abc"
    assert codec.compress(memoryview(b"abc")) == b"abc"
    assert codec.decompress(b"anything at all") == b"anything at all"


# ------------------------------------------------------------ corrupt input


def test_every_cut_through_a_block_is_an_error(framed):
    packed = framed.compress(mixed_bytes(300)) + framed.compress(b"z" * 200)
    ends = set()
    pos = 0
    for clen, _ in blocks(packed):
        pos += 8 + clen
        ends.add(pos)
    for cut in range(1, len(packed)):
        if cut in ends:
            framed.decompress(packed[:cut])
        else:
            with pytest.raises(SerializationError) as info:
                framed.decompress(packed[:cut])
            assert info.value.type_name == "compressed block"


@pytest.mark.parametrize(
    "clen, rlen, why",
    [(0, 10, "empty payload"), (11, 10, "payload longer than raw"), (5, MAX_BLOCK_SIZE + 1, "raw too large")],
)
def test_inconsistent_block_header_is_an_error(framed, clen, rlen, why):
    bad = struct.pack(">II", clen, rlen) + b"\x00" * clen
    with pytest.raises(SerializationError, match="bad block header"):
        framed.decompress(bad)


def test_payload_the_library_rejects_is_an_error(framed):
    # 0xff bytes are not a valid lz4 sequence, zlib header or zstd frame.
    bad = struct.pack(">II", 20, 4096) + b"\xff" * 20
    with pytest.raises(SerializationError) as info:
        framed.decompress(bad)
    assert info.value.__cause__ is not None or "decompresses to" in info.value.reason


def test_raw_length_that_disagrees_with_the_payload_is_an_error(framed):
    packed = framed.compress(b"hello " * 1000)
    (clen, rlen), = blocks(packed)
    for wrong in (rlen - 1, rlen + 1):
        bad = struct.pack(">II", clen, wrong) + packed[8:]
        with pytest.raises(SerializationError):
            framed.decompress(bad)


def test_one_corrupt_block_fails_the_whole_stream(framed):
    good = framed.compress(b"a" * 1000)
    with pytest.raises(SerializationError):
        framed.decompress(good + struct.pack(">II", 3, 2) + b"abc" + good)


# ------------------------------------------------------------ lookup


@pytest.mark.parametrize(
    "name, expected",
    [
        ("lz4", "lz4"),
        ("LZ4", "lz4"),
        (" zstd ", "zstd"),
        ("zlib", "zlib"),
        ("none", "none"),
        ("org.apache.spark.io.LZ4CompressionCodec", "lz4"),
        ("org.apache.spark.io.ZStdCompressionCodec", "zstd"),
    ],
)
def test_get_codec_by_name(name, expected):
    codec = get_codec(name)
    assert codec.name == expected
    assert codec.block_size == DEFAULT_BLOCK_SIZE == 32768


@pytest.mark.parametrize("name", ["snappy", "lzf", "", "gzip", None, 3])
def test_unknown_codec_is_a_config_error(name):
    with pytest.raises(ConfigError) as info:
        get_codec(name)
    assert info.value.key == "spark.io.compression.codec"
    assert info.value.value == name
    assert info.value.expected == "one of none, lz4, zstd, zlib"


@pytest.mark.parametrize("block_size", [0, -1, MAX_BLOCK_SIZE + 1, 1.5, "32k", True])
def test_bad_block_size_is_a_config_error(block_size):
    with pytest.raises(ConfigError):
        get_codec("zlib", block_size)


@pytest.mark.parametrize("name, modules, package", [("lz4", ["lz4", "lz4.block"], "lz4"), ("zstd", ["zstandard"], "zstandard")])
def test_missing_codec_library_names_the_package_to_install(monkeypatch, name, modules, package):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigError) as info:
        get_codec(name)
    assert info.value.key == "spark.io.compression.codec"
    assert f"pip install {package}" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)
    # Codecs from the standard library still work.
    assert get_codec("zlib").decompress(get_codec("zlib").compress(b"ok")) == b"ok"


def test_codecs_pickle_and_compare_by_name_and_block_size(codec):
    clone = pickle.loads(pickle.dumps(codec))
    assert clone == codec and hash(clone) == hash(codec)
    assert clone.decompress(codec.compress(b"data" * 100)) == b"data" * 100
    assert get_codec(codec.name, 1024) != codec
    assert f"block_size={DEFAULT_BLOCK_SIZE}" in repr(codec)


def test_zstd_level_is_a_setting_of_its_own():
    fast, strong = get_codec("zstd", zstd_level=1), get_codec("zstd", zstd_level=19)
    assert fast != strong and "level=19" in repr(strong)
    data = mixed_bytes(100_000)
    assert fast.decompress(strong.compress(data)) == data
    for bad in (23, 1.0, "1"):
        with pytest.raises(ConfigError) as info:
            get_codec("zstd", zstd_level=bad)
        assert info.value.key == "spark.io.compression.zstd.level"
