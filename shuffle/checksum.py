"""Per-partition checksums, as Spark computes them for its ``.checksum.*`` files.

This module owns the algorithms (Adler32, Spark's default, and CRC32, both
from zlib) and their running state. It knows nothing about files: the
resolver decides where checksums are stored, the fetcher when to verify them.
A checksum covers a partition's exact on-disk bytes (after compression), and
an empty partition has the algorithm's initial value: 1 for Adler32, 0 for CRC32.
"""

from __future__ import annotations

import zlib
from typing import Callable

from shuffle.errors import ConfigError

__all__ = ["ALGORITHMS", "Checksum", "new_checksum", "checksum_of", "normalize_algorithm"]

ALGORITHMS = ("ADLER32", "CRC32")

_CONF_KEY = "spark.shuffle.checksum.algorithm"

# name -> (zlib function, initial value); zlib's functions take the running value
# as their second argument, which is all a streaming checksum needs.
_IMPLS: dict[str, tuple[Callable[[bytes, int], int], int]] = {
    "ADLER32": (zlib.adler32, 1),
    "CRC32": (zlib.crc32, 0),
}


def normalize_algorithm(algorithm: str) -> str:
    """The canonical (upper-case) name of ``algorithm``; ConfigError if unsupported."""
    name = algorithm.upper() if isinstance(algorithm, str) else algorithm
    if name not in _IMPLS:
        raise ConfigError(_CONF_KEY, algorithm, "one of " + ", ".join(ALGORITHMS))
    return name


class Checksum:
    """A running checksum: feed bytes with :meth:`update`, read :attr:`value` any time."""

    __slots__ = ("algorithm", "_fn", "_value")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = normalize_algorithm(algorithm)
        self._fn, self._value = _IMPLS[self.algorithm]

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Extend the checksum with ``data`` (any contiguous bytes-like object)."""
        self._value = self._fn(data, self._value)

    @property
    def value(self) -> int:
        """The checksum of everything fed so far, an unsigned 32-bit int."""
        return self._value

    def __repr__(self) -> str:
        return f"Checksum({self.algorithm}, value={self._value})"


def new_checksum(algorithm: str) -> Checksum:
    """A fresh running checksum of ``algorithm`` (case-insensitive)."""
    return Checksum(algorithm)


def checksum_of(algorithm: str, data: bytes | bytearray | memoryview) -> int:
    """The checksum of ``data`` in one call."""
    fn, initial = _IMPLS[normalize_algorithm(algorithm)]
    return fn(data, initial)
