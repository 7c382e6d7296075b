"""Partition ids of a whole key column at once, equal to the partitioner's per-key answers.

``HashPartitioner`` is PySpark's ``portable_hash(key) % n``; for int and
float keys that is CPython's numeric ``hash()``, which the columnar kernel
computes for a column in one C loop (:func:`hash_partition_ids`), giving
exactly ``partitioner.get_partition(k)`` for every ``k`` of ``keys.tolist()``.
``RangePartitioner`` (without ``key_func``) is a ``searchsorted`` of the keys
in its bounds, as its ``bisect_left``. Any other partitioner is asked key by
key, which is correct but creates one Python object per key (logged once).
This module never reorders data: it only answers "which partition".
"""

from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from shuffle.errors import BatchSchemaError
from shuffle.kernels import load
from shuffle.partitioner import HashPartitioner, Partitioner, RangePartitioner

__all__ = ["partition_ids", "hash_partition_ids"]

logger = logging.getLogger(__name__)

_columnar = load("columnar")
_warned: Dict[str, bool] = {}


def hash_partition_ids(keys: np.ndarray, num_partitions: int) -> np.ndarray:
    """``[HashPartitioner(num_partitions).get_partition(k) for k in keys.tolist()]`` as int32."""
    try:
        return _columnar.hash_partition_ids(keys, num_partitions)
    except ValueError as e:  # NaN: CPython hashes it by identity, so it has no partition
        raise BatchSchemaError("a key", "a number with a stable hash", f"NaN ({e})") from e


def partition_ids(partitioner: Partitioner, keys: np.ndarray) -> np.ndarray:
    """Each key's partition under ``partitioner``, as an int32 array."""
    if type(partitioner) is HashPartitioner:
        return hash_partition_ids(keys, partitioner.num_partitions)
    if type(partitioner) is RangePartitioner and partitioner.key_func is None:
        return _range_ids(partitioner, keys)
    name = type(partitioner).__name__
    if not _warned.get(name):
        _warned[name] = True
        logger.info("%s has no vectorised form: partition ids are computed key by key", name)
    return partitioner.partition_ids(keys.tolist())


def _range_ids(partitioner: RangePartitioner, keys: np.ndarray) -> np.ndarray:
    if keys.dtype.kind == "f" and np.isnan(keys).any():
        raise BatchSchemaError("a key", "a comparable number", "NaN")
    bounds = np.asarray(partitioner.bounds, dtype=keys.dtype) if partitioner.bounds else np.empty(0, keys.dtype)
    ids = np.searchsorted(bounds, keys, side="left").astype(np.int32)
    if not partitioner.ascending:
        ids = np.int32(partitioner.num_partitions - 1) - ids
    return ids
