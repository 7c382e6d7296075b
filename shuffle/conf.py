"""``ShuffleConf``: Spark's configuration keys, their defaults and their parsing.

Values are kept as strings, as ``SparkConf`` keeps them, and parsed by the typed
getters. Every key this module knows is validated when it is set, so a bad value
fails where it was written, naming the key, the value and the accepted form.
Unknown keys are kept untouched (Spark does the same), so a conf written for
Spark can be handed over as it is.

Sizes follow Spark's ``byteStringAs``: an integer with an optional unit
``b, k/kb, m/mb, g/gb, t/tb, p/pb`` (powers of 1024). A number without a unit
is read in the key's own default unit, as in Spark: ``spark.shuffle.file.buffer``
counts KiB and ``spark.reducer.maxSizeInFlight`` MiB, so ``"64"`` there means
64 KiB and 64 MiB. Durations follow ``timeStringAs``: ``us, ms, s, m/min, h, d``,
a bare number in the key's default unit. Booleans are ``true`` or ``false``.

This module must never read the environment or the machine: defaults that
depend on the machine (the memory budget) are resolved by their users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

from shuffle.errors import ConfigError

__all__ = ["ShuffleConf", "ConfigKey", "KNOWN_KEYS", "parse_bytes", "parse_duration"]

ConfValue = Union[str, int, float, bool]

INT_MAX = 2**31 - 1

_SIZE_UNITS = {
    "b": 1,
    "k": 1 << 10, "kb": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40,
    "p": 1 << 50, "pb": 1 << 50,
}
_TIME_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0, "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_NUMBER_WITH_UNIT = re.compile(r"^(-?[0-9]+)([a-z]+)?$")
_SIZE_FORM = "a whole number with an optional unit b, k, m, g, t or p (e.g. 32k, 48m, 1g)"
_TIME_FORM = "a whole number with an optional unit us, ms, s, min, h or d (e.g. 10ms, 5s, 1min)"


def parse_bytes(text: str, default_unit: str = "b") -> int:
    """Bytes in a Spark size string; a bare number is in ``default_unit``.

    Raises ``ValueError`` for anything Spark's ``byteStringAs`` rejects,
    fractions included.
    """
    number, unit = _number_and_unit(text, _SIZE_UNITS, "size")
    return number * _SIZE_UNITS[unit or default_unit]


def parse_duration(text: str, default_unit: str = "ms") -> float:
    """Seconds in a Spark duration string; a bare number is in ``default_unit``."""
    number, unit = _number_and_unit(text, _TIME_UNITS, "duration")
    return number * _TIME_UNITS[unit or default_unit]


def _number_and_unit(text: str, units: Dict[str, Any], kind: str) -> Tuple[int, Optional[str]]:
    """``"32k"`` -> ``(32, "k")``; a bare number has unit None; negatives and unknown units are errors."""
    match = _NUMBER_WITH_UNIT.match(text.strip().lower())
    if match is None or (match.group(2) is not None and match.group(2) not in units):
        raise ValueError(f"not a {kind}: {text!r}")
    number = int(match.group(1))
    if number < 0:
        raise ValueError(f"negative {kind}: {text!r}")
    return number, match.group(2)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class ConfigKey:
    """One known key: its default (``None``: unset), parser and what it accepts."""

    name: str
    default: Optional[str]
    parse: Callable[[str], object]
    accepts: str
    doc: str


def _int_key(name: str, default: Optional[int], doc: str, low: int = 0, high: int = INT_MAX) -> ConfigKey:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError(f"{value} out of range")
        return value

    default_text = None if default is None else str(default)
    return ConfigKey(name, default_text, parse, f"an integer from {low} to {high}", doc)


def _size_key(
    name: str, default: Optional[str], unit: str, doc: str, low: int = 0, high: int = 2**62
) -> ConfigKey:
    def parse(text: str) -> int:
        value = parse_bytes(text, unit)
        if not low <= value <= high:
            raise ValueError(f"{value} bytes out of range")
        return value

    unit_note = f"; a bare number counts {'bytes' if unit == 'b' else unit.upper() + 'iB'}"
    return ConfigKey(name, default, parse, _SIZE_FORM + f", from {low} to {high} bytes" + unit_note, doc)


def _time_key(name: str, default: str, unit: str, doc: str) -> ConfigKey:
    return ConfigKey(
        name, default, lambda text: parse_duration(text, unit),
        _TIME_FORM + f"; a bare number counts {unit}", doc,
    )


def _bool_key(name: str, default: bool, doc: str) -> ConfigKey:
    return ConfigKey(name, "true" if default else "false", _parse_bool, "true or false", doc)


def _choice_key(name: str, default: Optional[str], choices: Tuple[str, ...], doc: str, upper: bool = False) -> ConfigKey:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} not allowed")
        return value

    return ConfigKey(name, default, parse, "one of " + ", ".join(choices), doc)


def _fraction_key(name: str, default: str, doc: str) -> ConfigKey:
    def parse(text: str) -> float:
        value = float(text)
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{value} out of range")
        return value

    return ConfigKey(name, default, parse, "a number in (0, 1]", doc)


_KEYS = [
    # map side
    _size_key("spark.shuffle.file.buffer", "32k", "k", "buffer of each shuffle output stream", 1, 2**31 - 1),
    _size_key("spark.shuffle.unsafe.file.output.buffer", "32k", "k", "buffer of the merged output file", 1, 2**31 - 1),
    _size_key("spark.shuffle.spill.diskWriteBufferSize", "1m", "b", "copy buffer of serialized spills", 1, 2**31 - 1),
    _int_key("spark.shuffle.spill.batchSize", 10000, "records per serialized batch in a spill file", 1),
    _size_key("spark.shuffle.spill.initialMemoryThreshold", "5m", "b", "memory a task may use before it first asks for more"),
    _int_key("spark.shuffle.spill.numElementsForceSpillThreshold", INT_MAX, "force a spill after this many records", 0),
    _int_key("spark.shuffle.sort.bypassMergeThreshold", 200, "partitions up to which the bypass writer is used", -INT_MAX),
    _bool_key("spark.shuffle.sort.useRadixSort", True, "radix sort (or a comparison sort) of packed pointers"),
    _int_key("spark.shuffle.sort.initialBufferSize", 4096, "initial packed-pointer array length", 1),
    _bool_key("spark.shuffle.unsafe.fastMergeEnabled", True, "merge serialized spills by byte concatenation"),
    _int_key("shuffle.sort.maxMergeFanIn", 64, "spill files merged at once; more take several passes", 2),
    _choice_key("spark.shuffle.manager", "sort", ("sort", "tungsten-sort"), "the shuffle manager (both names mean sort)"),
    _choice_key("shuffle.writer.force", None, ("bypass", "serialized", "sort"), "force one writer (study, benchmarks)"),
    _bool_key("shuffle.mapSideCombine.adaptive", True,
              "stop combining on the map side when the first records show few repeated keys"),
    _int_key("shuffle.mapSideCombine.adaptive.minRecords", 100_000,
             "records combined before the map side judges whether combining pays", 1),
    _fraction_key("shuffle.mapSideCombine.adaptive.uniqueKeysRatio", "0.8",
                  "distinct keys per record in that sample above which the rest is not combined"),
    _size_key("spark.buffer.pageSize", None, "b", "page size of the serialized writer's record buffer", 1 << 10, 1 << 27),
    _bool_key("spark.shuffle.sync", True, "fsync shuffle files before they are renamed into place"),
    # memory
    _size_key("spark.executor.memory", None, "m", "memory budget of one worker", 1 << 20),
    _fraction_key("spark.shuffle.memoryFraction", "0.2", "share of the worker budget for shuffle execution"),
    # compression and checksums
    _bool_key("spark.shuffle.compress", True, "compress map output blocks"),
    _bool_key("spark.shuffle.spill.compress", True, "compress spill files"),
    _choice_key("spark.io.compression.codec", "lz4", ("none", "lz4", "zstd", "zlib"), "block compression codec"),
    _size_key("spark.io.compression.lz4.blockSize", "32k", "b", "block size of the compression framing", 1, 64 << 20),
    _int_key("spark.io.compression.zstd.level", 1, "zstd level", -7, 22),
    _bool_key("spark.shuffle.checksum.enabled", True, "write per-partition checksum files"),
    _choice_key("spark.shuffle.checksum.algorithm", "ADLER32", ("ADLER32", "CRC32"), "checksum of each partition", upper=True),
    _bool_key("spark.shuffle.detectCorrupt", True, "verify fetched blocks against their checksums"),
    # reduce side
    _size_key("spark.reducer.maxSizeInFlight", "48m", "m", "bytes of blocks fetched at once per reader", 1),
    _int_key("spark.reducer.maxReqsInFlight", INT_MAX, "fetch requests outstanding at once", 1),
    _int_key("spark.reducer.maxBlocksInFlightPerAddress", INT_MAX, "blocks outstanding per location", 1),
    _int_key("spark.shuffle.io.maxRetries", 3, "retries of a failed fetch"),
    _time_key("spark.shuffle.io.retryWait", "5s", "s", "wait between fetch retries"),
    _time_key("spark.network.timeout", "120s", "s", "a fetch process silent this long is replaced"),
    _bool_key("spark.shuffle.readHostLocalDisk", True, "read other executors' files on this host in-process"),
    _int_key("shuffle.fetch.processes", 2, "fetch processes per reader for remote blocks", 1),
    _choice_key("shuffle.fetch.startMethod", "forkserver", ("forkserver", "spawn", "fork"), "how fetch processes start"),
    # engine
    _int_key("spark.task.maxFailures", 4, "attempts of a task before the job fails", 1),
    _int_key("spark.stage.maxConsecutiveAttempts", 4, "attempts of a stage after fetch failures", 1),
    _int_key("spark.default.parallelism", None, "default number of partitions", 1),
    ConfigKey("spark.local.dir", None, str, "a directory path", "where shuffle and spill files go"),
    ConfigKey("shuffle.task.profileDir", None, str, "a directory path",
              "when set, each task runs under cProfile and leaves its stats there (for benchmarks)"),
]

KNOWN_KEYS: Dict[str, ConfigKey] = {key.name: key for key in _KEYS}


def _to_text(value: ConfValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ShuffleConf:
    """A mapping of Spark configuration keys to string values.

    >>> conf = ShuffleConf({"spark.shuffle.sort.bypassMergeThreshold": 100})
    >>> conf.get_int("spark.shuffle.sort.bypassMergeThreshold")
    100
    >>> conf.get_bytes("spark.shuffle.file.buffer")
    32768
    """

    def __init__(self, values: Optional[Mapping[str, ConfValue]] = None) -> None:
        self._values: Dict[str, str] = {}
        for key, value in (values or {}).items():
            self.set(key, value)

    def set(self, key: str, value: ConfValue) -> "ShuffleConf":
        """Set ``key``; a known key's value is validated now. Returns self."""
        if not isinstance(key, str):
            raise ConfigError(repr(key), value, "configuration keys are strings")
        if value is None:
            raise ConfigError(key, value, "a value (None cannot be stored; leave the key out)")
        text = _to_text(value)
        parsed = self._parse(key, text)
        # Choices are stored in their canonical spelling ("crc32" -> "CRC32").
        self._values[key] = parsed if isinstance(parsed, str) else text
        return self

    def set_if_missing(self, key: str, value: ConfValue) -> "ShuffleConf":
        if key not in self._values:
            self.set(key, value)
        return self

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """The raw string for ``key``: the value set, else ``default``, else the known default."""
        if key in self._values:
            return self._values[key]
        if default is not None:
            return default
        known = KNOWN_KEYS.get(key)
        return known.default if known is not None else None

    def contains(self, key: str) -> bool:
        """Whether ``key`` was set explicitly (defaults do not count)."""
        return key in self._values

    def get_int(self, key: str, default: Optional[int] = None) -> Optional[int]:
        return self._typed(key, default, int)  # type: ignore[return-value]

    def get_float(self, key: str, default: Optional[float] = None) -> Optional[float]:
        return self._typed(key, default, float)  # type: ignore[return-value]

    def get_bytes(self, key: str, default: Optional[Union[int, str]] = None) -> Optional[int]:
        """Bytes, using the key's default unit for a bare number (bytes for unknown keys)."""
        return self._typed(key, default, lambda text: parse_bytes(text))  # type: ignore[return-value]

    def get_bool(self, key: str, default: Optional[bool] = None) -> Optional[bool]:
        return self._typed(key, default, _parse_bool)  # type: ignore[return-value]

    def get_duration(self, key: str, default: Optional[Union[float, str]] = None) -> Optional[float]:
        """Seconds, using the key's default unit for a bare number (ms for unknown keys)."""
        return self._typed(key, default, lambda text: parse_duration(text))  # type: ignore[return-value]

    def _typed(self, key: str, default: object, fallback: Callable[[str], object]) -> object:
        text = self._values.get(key)
        if text is None:
            if default is not None:
                return default if not isinstance(default, str) else self._parse(key, default, fallback)
            known = KNOWN_KEYS.get(key)
            if known is None or known.default is None:
                return None
            text = known.default
        return self._parse(key, text, fallback)

    @staticmethod
    def _parse(key: str, text: str, fallback: Optional[Callable[[str], object]] = None) -> object:
        known = KNOWN_KEYS.get(key)
        parse = known.parse if known is not None else fallback
        if parse is None:
            return text
        try:
            return parse(text)
        except (ValueError, TypeError) as e:
            accepts = known.accepts if known is not None else "a value of the requested type"
            raise ConfigError(key, text, accepts) from e

    def copy(self) -> "ShuffleConf":
        clone = ShuffleConf()
        clone._values = dict(self._values)
        return clone

    def to_dict(self) -> Dict[str, str]:
        """The keys set explicitly, as strings (picklable, for shipping to workers)."""
        return dict(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShuffleConf) and self._values == other._values

    def __repr__(self) -> str:
        return f"ShuffleConf({self._values!r})"
