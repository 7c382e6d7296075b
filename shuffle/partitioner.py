"""Partitioners: which reduce partition each key goes to.

Owns the mapping key -> partition id in ``[0, num_partitions)`` for the two
partitioners Spark ships: ``HashPartitioner`` (PySpark's ``portable_hash`` of
the key modulo n, deterministic across processes whatever ``PYTHONHASHSEED``
is) and ``RangePartitioner`` (bounds from a sample of keys, as PySpark's
``sortByKey``). It must never depend on the process it runs in: a partitioner
is pickled to worker processes and must give the same answer there.

Sampling itself (which records, which seed) belongs to the engine; this module
only says how many keys a sample should hold and turns a sample into bounds.
"""

from __future__ import annotations

import logging
import operator
from abc import ABC, abstractmethod
from bisect import bisect_left
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from shuffle.errors import ConfigError, UnhashableKeyError
from shuffle.kernels import load

__all__ = ["MAX_PARTITIONS", "HashPartitioner", "Partitioner", "RangePartitioner", "as_int64"]

logger = logging.getLogger(__name__)

_hashing = load("hashing")

MAX_PARTITIONS: int = _hashing.MAX_PARTITIONS
"""Most partitions a partitioner may have (2**31 - 1): partition ids are int32."""


def _validate_num_partitions(num_partitions: Any) -> int:
    # bool is an int subclass, but Partitioner(True) is always a mistake.
    if isinstance(num_partitions, bool):
        raise ConfigError("num_partitions", num_partitions, f"an int in [1, {MAX_PARTITIONS}]")
    try:
        n = operator.index(num_partitions)
    except TypeError:
        raise ConfigError(
            "num_partitions", num_partitions, f"an int in [1, {MAX_PARTITIONS}]"
        ) from None
    if not 1 <= n <= MAX_PARTITIONS:
        raise ConfigError("num_partitions", num_partitions, f"an int in [1, {MAX_PARTITIONS}]")
    return n


def _unhashable(error: TypeError, keys: Iterable[Any]) -> Exception:
    """The typed error naming the first key that will not hash (error path); else ``error`` itself."""
    if "unhashable" not in str(error):
        return error
    for key in keys if isinstance(keys, (list, tuple)) else ():
        try:
            _hashing.portable_hash(key)
        except TypeError:
            return UnhashableKeyError(key)
    return error


def _key_sequence(keys: Any) -> list | tuple:
    if keys is None or isinstance(keys, (str, bytes, bytearray)):
        raise TypeError(
            f"keys must be a list or sequence of keys, not {type(keys).__name__}"
        )
    return keys if isinstance(keys, (list, tuple)) else list(keys)


class Partitioner(ABC):
    """Maps a key to a partition id in ``[0, num_partitions)``.

    Contract: ``get_partition`` is a pure function of the key and the
    partitioner's state, so the same partitioner gives the same id in any
    process; ``partition_ids(keys)`` equals ``[get_partition(k) for k in keys]``
    as an int32 array. Two partitioners compare equal exactly when they place
    every key in the same partition, which lets the engine skip a shuffle whose
    input is already partitioned that way. Partitioners pickle.
    """

    @property
    @abstractmethod
    def num_partitions(self) -> int:
        """How many partitions keys are spread over."""

    @abstractmethod
    def get_partition(self, key: Any) -> int:
        """The partition of ``key``, in ``[0, num_partitions)``."""

    def partition_ids(self, keys: Iterable[Any]) -> np.ndarray:
        """``np.array([self.get_partition(k) for k in keys], dtype=np.int32)``."""
        seq = _key_sequence(keys)
        get = self.get_partition
        return np.fromiter((get(k) for k in seq), dtype=np.int32, count=len(seq))

    @abstractmethod
    def _identity(self) -> tuple:
        """What makes two partitioners of the same class place keys alike."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._identity() == other._identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.num_partitions))


class HashPartitioner(Partitioner):
    """``portable_hash(key) % num_partitions``, as PySpark's default partitioner.

    Deterministic across processes and runs whatever ``PYTHONHASHSEED`` is
    (see ``shuffle._twins.hashing`` for what each key type hashes to). An int
    key ``k`` with ``|k| < 2**61 - 1`` goes to ``k % n`` (Python's modulo),
    except ``-1``, whose hash is ``-2`` as in CPython and PySpark. NaN float
    keys hash by identity and so are not deterministic, as in PySpark.
    """

    def __init__(self, num_partitions: int) -> None:
        self._n = _validate_num_partitions(num_partitions)

    @property
    def num_partitions(self) -> int:
        return self._n

    def get_partition(self, key: Any) -> int:
        try:
            return _hashing.portable_hash(key) % self._n
        except TypeError as e:
            raise _unhashable(e, [key]) from e

    def partition_ids(self, keys: Iterable[Any]) -> np.ndarray:
        """All keys' partitions at once, in the kernel's C loop; an unhashable key is an ``UnhashableKeyError``."""
        try:
            return _hashing.partition_ids(keys, self._n)
        except TypeError as e:
            raise _unhashable(e, keys) from e

    def _identity(self) -> tuple:
        return (self._n,)

    def __repr__(self) -> str:
        return f"HashPartitioner({self._n})"


def _identity_key(key: Any) -> Any:
    return key


class RangePartitioner(Partitioner):
    """Ranges of keys from a sample, as PySpark's ``sortByKey``.

    The sample is sorted by ``key_func`` and split into ``num_partitions``
    equal runs: ``bounds[i] = sample[int(len(sample) * (i + 1) / n)]`` for
    ``i < n - 1`` (bounds are sample keys, so they may repeat; an empty sample
    gives ``bounds == []`` and every key lands in one partition). A key goes to
    ``bisect_left([key_func(b) for b in bounds], key_func(key))``: a key equal
    to a bound belongs to the partition on its left. With ``ascending=False``
    partition ``p`` becomes ``n - 1 - p``, so reading partitions in order gives
    descending keys. ``num_partitions`` stays as requested even when there are
    fewer distinct bounds (PySpark does the same; Spark's Scala partitioner
    shrinks instead), so some partitions may stay empty.

    Keys must be comparable with each other under ``key_func``; a key that is
    not raises ``TypeError`` from the comparison. ``key_func`` must pickle for
    the partitioner to reach worker processes (use cloudpickle for lambdas).
    """

    SAMPLE_PER_PARTITION = 20
    """Keys to sample per partition (PySpark's sortByKey and Spark's RangePartitioner)."""

    def __init__(
        self,
        num_partitions: int,
        sample: Iterable[Any],
        ascending: bool = True,
        key_func: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self._n = _validate_num_partitions(num_partitions)
        if sample is None or isinstance(sample, (str, bytes, bytearray)):
            raise TypeError(f"sample must be an iterable of keys, not {type(sample).__name__}")
        if key_func is not None and not callable(key_func):
            raise TypeError(f"key_func must be callable or None, not {type(key_func).__name__}")
        self._ascending = bool(ascending)
        self._key_func = key_func
        kf = key_func if key_func is not None else _identity_key
        ordered = sorted(sample, key=kf)
        if ordered:
            size = len(ordered)
            self._bounds = [ordered[int(size * (i + 1) / self._n)] for i in range(self._n - 1)]
        else:
            logger.debug("RangePartitioner built from an empty sample: all keys in one partition")
            self._bounds = []
        # Compared against key_func(key); computed once, not per key.
        self._bound_keys = [kf(b) for b in self._bounds]
        # Plain int bounds within int64 let int keys be placed by one searchsorted.
        self._int_bounds = as_int64(self._bound_keys) if key_func is None else None

    @staticmethod
    def sample_size(num_partitions: int) -> int:
        """Keys a sample should hold for ``num_partitions``: about 20 per partition.

        PySpark's ``sortByKey`` samples each record with probability
        ``min(20 * n / count, 1.0)`` (see :meth:`sample_fraction`), which
        yields about ``20 * n`` keys, or every key when there are fewer.
        """
        return RangePartitioner.SAMPLE_PER_PARTITION * _validate_num_partitions(num_partitions)

    @staticmethod
    def sample_fraction(num_partitions: int, count: int) -> float:
        """The per-record sampling probability for ``count`` records: ``min(20n/count, 1)``.

        ``count == 0`` gives 0.0: there is nothing to sample (PySpark returns
        the empty dataset unshuffled).
        """
        if isinstance(count, bool):
            raise TypeError("count must be an int, not bool")
        try:
            count = operator.index(count)
        except TypeError:
            raise TypeError(f"count must be an int, not {type(count).__name__}") from None
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count == 0:
            return 0.0
        return min(RangePartitioner.sample_size(num_partitions) / count, 1.0)

    @property
    def num_partitions(self) -> int:
        return self._n

    @property
    def bounds(self) -> list:
        """The upper bounds (sample keys, inclusive) of partitions ``0 .. len(bounds) - 1``."""
        return list(self._bounds)

    @property
    def ascending(self) -> bool:
        return self._ascending

    @property
    def key_func(self) -> Optional[Callable[[Any], Any]]:
        return self._key_func

    def get_partition(self, key: Any) -> int:
        kf = self._key_func
        p = bisect_left(self._bound_keys, kf(key) if kf is not None else key)
        return p if self._ascending else self._n - 1 - p

    def partition_ids(self, keys: Iterable[Any]) -> np.ndarray:
        """All keys' partitions at once: ``bisect_left`` per key, or one ``searchsorted`` for int keys."""
        seq = _key_sequence(keys)
        bound_keys = self._bound_keys
        kf = self._key_func
        int_keys = as_int64(seq) if self._int_bounds is not None and seq else None
        if int_keys is not None:
            # bisect_left over sorted bounds is searchsorted(side="left"), for every key at once.
            out = np.searchsorted(self._int_bounds, int_keys, side="left").astype(np.int32)
            return out if self._ascending else np.int32(self._n - 1) - out
        if kf is not None:
            ids = [bisect_left(bound_keys, kf(k)) for k in seq]
        else:
            ids = [bisect_left(bound_keys, k) for k in seq]
        out = np.array(ids, dtype=np.int32) if ids else np.empty(0, dtype=np.int32)
        if not self._ascending:
            out = np.int32(self._n - 1) - out
        return out

    def _identity(self) -> tuple:
        return (self._n, self._ascending, self._key_func, self._bounds)

    def __repr__(self) -> str:
        direction = "ascending" if self._ascending else "descending"
        return f"RangePartitioner({self._n}, bounds={self._bounds!r}, {direction})"


def as_int64(values: Sequence[Any]) -> Optional[np.ndarray]:
    """``values`` as an int64 array when every one is a plain int (not bool) that fits; else None.

    Such keys are searched or sorted by numpy with exactly Python's answers
    (``bisect_left`` is ``searchsorted(side="left")``; a stable sort is a stable argsort).
    """
    if set(map(type, values)) - {int}:
        return None
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return None
