import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shuffle.checksum import ALGORITHMS, checksum_of, new_checksum, normalize_algorithm
from shuffle.errors import ConfigError

ZLIB = {"ADLER32": zlib.adler32, "CRC32": zlib.crc32}


def test_algorithms_are_spark_3_5s():
    assert ALGORITHMS == ("ADLER32", "CRC32")


@pytest.mark.parametrize("algorithm, initial", [("ADLER32", 1), ("CRC32", 0)])
def test_empty_input_has_the_initial_value(algorithm, initial):
    assert new_checksum(algorithm).value == initial
    assert checksum_of(algorithm, b"") == initial


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_shot_matches_zlib(algorithm):
    data = bytes(range(256)) * 40
    assert checksum_of(algorithm, data) == ZLIB[algorithm](data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_streaming_updates_equal_one_checksum_of_the_concatenation(algorithm, chunks):
    running = new_checksum(algorithm)
    for chunk in chunks:
        running.update(chunk)
    assert running.value == checksum_of(algorithm, b"".join(chunks))


def test_update_accepts_memoryview_and_bytearray():
    c = new_checksum("CRC32")
    c.update(memoryview(b"abc"))
    c.update(bytearray(b"def"))
    assert c.value == zlib.crc32(b"abcdef")


def test_algorithm_names_are_case_insensitive():
    assert normalize_algorithm("adler32") == "ADLER32"
    assert new_checksum("crc32").algorithm == "CRC32"


@pytest.mark.parametrize("bad", ["MD5", "CRC32C", "", None])
def test_unknown_algorithm_raises_config_error_naming_the_key(bad):
    with pytest.raises(ConfigError, match="spark.shuffle.checksum.algorithm") as info:
        new_checksum(bad)
    assert info.value.key == "spark.shuffle.checksum.algorithm"
    with pytest.raises(ConfigError):
        checksum_of(bad, b"x")
