"""Plain-Python twin of ``_ext/msgpack_records.pyx``: records packed as msgpack key, value, ...

The specification of the kernel: every object goes through ``pack_other`` (the
serializer's full packer); the kernel must give the same bytes while encoding
plain scalars itself. Same stopping rule: at the first record that is not an
exact 2-tuple, or whose key or value ``pack_other`` cannot pack, the output
ends at the previous record and that record's index is returned.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

__all__ = ["pack_pairs", "pack_each"]


def _check(records: Any, out: Any, pack_other: Any) -> None:
    if not isinstance(records, list):
        raise TypeError(f"records must be a list, got {type(records).__name__}")
    if not isinstance(out, bytearray):
        raise TypeError(f"out must be a bytearray, got {type(out).__name__}")
    if not callable(pack_other):
        raise TypeError(f"pack_other must be callable, got {pack_other!r}")


def _pack_record(record: Any, pack_other: Callable[[Any], bytes]) -> Optional[bytes]:
    if type(record) is not tuple or len(record) != 2:
        return None
    try:
        key, value = pack_other(record[0]), pack_other(record[1])
    except Exception:
        return None
    for packed in (key, value):
        if type(packed) is not bytes:
            return None
    return key + value


def pack_pairs(records: List[Any], out: bytearray, pack_other: Callable[[Any], bytes], start: int = 0) -> int:
    """Append key then value of ``records[start:]`` to ``out``; returns the index it stopped at."""
    _check(records, out, pack_other)
    if start < 0 or start > len(records):
        raise ValueError(f"start {start} outside 0..{len(records)}")
    for i in range(start, len(records)):
        packed = _pack_record(records[i], pack_other)
        if packed is None:
            return i
        out += packed
    return len(records)


def pack_each(records: List[Any], pack_other: Callable[[Any], bytes], start: int = 0,
              into: Optional[List[bytes]] = None) -> Tuple[List[bytes], int]:
    """Each record of ``records[start:]`` as its own bytes, appended to ``into``; ``(into, stopped_at)``."""
    if into is None:
        into = []
    _check(records, bytearray(), pack_other)
    if start < 0 or start > len(records):
        raise ValueError(f"start {start} outside 0..{len(records)}")
    for i in range(start, len(records)):
        packed = _pack_record(records[i], pack_other)
        if packed is None:
            return into, i
        into.append(packed)
    return into, len(records)
