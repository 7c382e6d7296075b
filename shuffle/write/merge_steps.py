"""How the external sorter merges sorted runs: rank decoration, folding equal keys, fan-in.

Helpers of :mod:`shuffle.write.external_sorter`, kept apart so the sorter
module holds the algorithm and this one the record-level steps of a merge.
Everything here runs in C loops where it can (``tee``, ``map``, ``zip``,
``groupby``): a Python frame per record is what makes a merge slow.
"""

from __future__ import annotations

import logging
import os
import re
from itertools import chain, groupby, tee
from operator import itemgetter
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from shuffle.errors import ShuffleError

__all__ = ["list_range", "decorate", "fold", "comparing", "incomparable", "fan_in_within_fd_limit",
           "READ_CHUNK_RECORDS"]

logger = logging.getLogger(__name__)

Record = Tuple[Any, Any]
_key_of = itemgetter(0)

# Records handed out at a time from an in-memory run; a forced spill while
# reading takes effect at the next hand-out.
READ_CHUNK_RECORDS = 1024

_TYPES_IN_MESSAGE = re.compile(r"instances of '([^']+)' and '([^']+)'")

# Descriptors left for everything else a task holds open while merging
# (the output file, a fetch connection, the interpreter's own).
_FD_RESERVE = 16


def list_range(records: List[Record], start: int, end: int) -> Iterator[Record]:
    """``records[start:end]`` without copying it whole."""
    step = READ_CHUNK_RECORDS
    return chain.from_iterable(records[i:min(i + step, end)] for i in range(start, end, step))


def decorate(stream: Iterator[Record], rank: Optional[Callable[[Any], Any]]) -> Iterator[Tuple[Any, Record]]:
    """``(rank(key), record)`` pairs (the key itself for no rank), in C loops: no Python frame per record."""
    keys, records = tee(stream)
    ranks = map(_key_of, keys)
    return zip(ranks if rank is None else map(rank, ranks), records)


def fold(merged: Iterator[Tuple[Any, Record]], merge_combiners: Callable[[Any, Any], Any]) -> Iterator[Record]:
    """Combine records with truly equal keys among those of equal rank."""
    for _, group in groupby(merged, key=_key_of):
        first = next(group)
        second = next(group, None)
        if second is None:
            yield first[1]
            continue
        combined: Dict[Any, Any] = {}
        for _, (key, combiner) in chain((first, second), group):
            if key in combined:
                combined[key] = merge_combiners(combined[key], combiner)
            else:
                combined[key] = combiner
        yield from combined.items()


def comparing(merged: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from merged
    except TypeError as e:
        raise incomparable(e, []) from e


def incomparable(error: TypeError, keys: List[Any]) -> ShuffleError:
    found = _TYPES_IN_MESSAGE.search(str(error))
    if found is not None:
        first, second = found.groups()
    else:
        names = list(dict.fromkeys(type(k).__name__ for k in keys))
        first, second = (names + ["?", "?"])[:2]
    return ShuffleError(
        f"cannot sort keys of type {first} and {second} together ({error}); "
        "give the shuffle a sort_key that maps every key to one comparable type"
    )


def fan_in_within_fd_limit(fan_in: int) -> int:
    """``fan_in``, lowered so a merge's readers fit in the descriptors this process has left."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    except (ImportError, OSError):
        return fan_in
    if soft == resource.RLIM_INFINITY:
        return fan_in
    usable = max(2, soft - open_now - _FD_RESERVE)
    if usable < fan_in:
        logger.info("merge fan-in lowered from %d to %d: RLIMIT_NOFILE is %d with %d open",
                    fan_in, usable, soft, open_now)
    return min(fan_in, usable)
