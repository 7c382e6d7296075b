import pickle

import pytest
from hypothesis import given, strategies as st

from shuffle.conf import KNOWN_KEYS, ShuffleConf, parse_bytes, parse_duration
from shuffle.errors import ConfigError, ShuffleError

UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
         "t": 1024**4, "tb": 1024**4, "p": 1024**5, "pb": 1024**5}


def test_defaults_are_sparks():
    conf = ShuffleConf()
    assert conf.get_bytes("spark.shuffle.file.buffer") == 32 * 1024
    assert conf.get_bytes("spark.reducer.maxSizeInFlight") == 48 * 1024**2
    assert conf.get_int("spark.shuffle.sort.bypassMergeThreshold") == 200
    assert conf.get_int("spark.shuffle.spill.batchSize") == 10000
    assert conf.get_int("spark.shuffle.io.maxRetries") == 3
    assert conf.get_duration("spark.shuffle.io.retryWait") == 5.0
    assert conf.get_float("spark.shuffle.memoryFraction") == 0.2
    assert conf.get_bool("spark.shuffle.checksum.enabled") is True
    assert conf.get("spark.shuffle.checksum.algorithm") == "ADLER32"
    assert conf.get("spark.shuffle.manager") == "sort"
    assert conf.get_int("spark.task.maxFailures") == 4
    assert conf.get_bytes("spark.executor.memory") is None


def test_bare_numbers_use_the_keys_default_unit_as_spark_does():
    conf = ShuffleConf({"spark.shuffle.file.buffer": "64", "spark.reducer.maxSizeInFlight": 8,
                        "spark.shuffle.io.retryWait": "2", "spark.executor.memory": "512"})
    assert conf.get_bytes("spark.shuffle.file.buffer") == 64 * 1024
    assert conf.get_bytes("spark.reducer.maxSizeInFlight") == 8 * 1024**2
    assert conf.get_duration("spark.shuffle.io.retryWait") == 2.0
    assert conf.get_bytes("spark.executor.memory") == 512 * 1024**2


def test_explicit_byte_unit_gives_plain_bytes():
    assert ShuffleConf({"spark.shuffle.file.buffer": "4096b"}).get_bytes("spark.shuffle.file.buffer") == 4096


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS)), st.booleans())
def test_parse_bytes_accepts_every_unit_in_any_case(number, unit, upper):
    text = f"{number}{unit.upper() if upper else unit}"
    assert parse_bytes(text) == number * UNITS[unit]


@given(st.integers(min_value=0, max_value=10**6),
       st.sampled_from([("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("min", 60.0), ("h", 3600.0), ("d", 86400.0)]))
def test_parse_duration_accepts_every_unit(number, unit):
    suffix, seconds = unit
    assert parse_duration(f"{number}{suffix}") == pytest.approx(number * seconds)


@given(st.text(max_size=8).filter(lambda s: not s.strip().lower().rstrip("bkmgtp").isdigit()))
def test_parse_bytes_rejects_non_sizes(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


@pytest.mark.parametrize("key, value", [
    ("spark.shuffle.file.buffer", "1.5k"),
    ("spark.shuffle.file.buffer", "32q"),
    ("spark.shuffle.file.buffer", "0"),
    ("spark.shuffle.file.buffer", "-1k"),
    ("spark.shuffle.io.retryWait", "5 parsecs"),
    ("spark.shuffle.io.maxRetries", "three"),
    ("spark.shuffle.io.maxRetries", "-1"),
    ("spark.shuffle.compress", "yes"),
    ("spark.shuffle.memoryFraction", "1.5"),
    ("spark.io.compression.codec", "snappy-ish"),
    ("spark.shuffle.checksum.algorithm", "MD5"),
    ("shuffle.writer.force", "fastest"),
    ("spark.shuffle.manager", "hash"),
])
def test_bad_value_raises_config_error_naming_key_value_and_form(key, value):
    with pytest.raises(ConfigError) as info:
        ShuffleConf({key: value})
    message = str(info.value)
    assert key in message and repr(value) in message and "expected" in message
    assert isinstance(info.value, ShuffleError) and isinstance(info.value, ValueError)
    assert info.value.expected == KNOWN_KEYS[key].accepts


def test_unknown_keys_are_kept_and_parsed_on_demand():
    conf = ShuffleConf({"spark.my.custom": "12m", "spark.sql.whatever": "x"})
    assert conf.get("spark.sql.whatever") == "x"
    assert conf.get_bytes("spark.my.custom") == 12 * 1024**2
    assert conf.get("spark.not.set") is None
    with pytest.raises(ConfigError):
        conf.get_int("spark.sql.whatever")


def test_values_may_be_given_as_python_types():
    conf = ShuffleConf({"spark.shuffle.compress": False, "spark.shuffle.sort.bypassMergeThreshold": 7})
    assert conf.get_bool("spark.shuffle.compress") is False
    assert conf.get("spark.shuffle.compress") == "false"
    assert conf.get_int("spark.shuffle.sort.bypassMergeThreshold") == 7


def test_none_value_and_non_string_key_are_rejected():
    with pytest.raises(ConfigError):
        ShuffleConf({"spark.shuffle.compress": None})
    with pytest.raises(ConfigError):
        ShuffleConf({3: "x"})


def test_choices_are_stored_in_their_canonical_spelling():
    conf = ShuffleConf({"spark.shuffle.checksum.algorithm": "crc32", "spark.io.compression.codec": "ZSTD"})
    assert conf.get("spark.shuffle.checksum.algorithm") == "CRC32"
    assert conf.get("spark.io.compression.codec") == "zstd"


def test_set_copy_contains_and_pickle_round_trip():
    conf = ShuffleConf().set("spark.shuffle.spill.batchSize", 10)
    clone = conf.copy().set("spark.shuffle.spill.batchSize", 20)
    assert conf.get_int("spark.shuffle.spill.batchSize") == 10
    assert clone.get_int("spark.shuffle.spill.batchSize") == 20
    assert conf.contains("spark.shuffle.spill.batchSize") and not conf.contains("spark.shuffle.compress")
    assert pickle.loads(pickle.dumps(conf)) == conf
    assert ShuffleConf(conf.to_dict()) == conf
