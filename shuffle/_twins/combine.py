"""Plain-Python twin of ``_ext/combine.pyx``: fold ``(key, value)`` records into a dict of combiners.

The readable specification of the kernel; tests hold the two to the same answers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, Iterable, Optional, Tuple

__all__ = ["combine_values", "group_values"]


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def combine_values(records: Iterable[Tuple[Hashable, Any]], into: Dict[Hashable, Any],
                   create: Optional[Callable[[Any], Any]], merge: Callable[[Any, Any], Any]) -> int:
    """Fold ``records`` into ``into`` (key -> combiner); returns how many records were folded.

    ``create(value)`` starts a key's combiner (``None``: the value itself is the
    combiner); ``merge(combiner, value)`` folds in another. A record that is not
    an exact 2-tuple raises ``TypeError``, as does an unhashable key; records
    before it stay folded.
    """
    if not isinstance(into, dict):
        raise TypeError(f"combine_values: into must be a dict, not {type(into).__name__}")
    if create is not None and not callable(create):
        raise TypeError(f"combine_values: create must be callable or None, got {create!r}")
    if not callable(merge):
        raise TypeError(f"combine_values: merge must be callable, got {merge!r}")
    count = 0
    get = into.get
    for record in records:
        if type(record) is not tuple or len(record) != 2:
            raise TypeError(f"records must be (key, value) 2-tuples, got {type(record).__name__}")
        key, value = record
        # One dict probe on the common path: most keys repeat in a shuffle.
        current = get(key, _MISSING)
        if current is _MISSING:
            into[key] = value if create is None else create(value)
        else:
            into[key] = merge(current, value)
        count += 1
    return count


def group_values(records: Iterable[Tuple[Hashable, Any]], into: Dict[Hashable, Any]) -> int:
    """Append each record's value to its key's list in ``into``; returns records seen.

    Same errors as :func:`combine_values`; a non-list already in ``into`` is a ``TypeError``.
    """
    if not isinstance(into, dict):
        raise TypeError(f"group_values: into must be a dict, not {type(into).__name__}")
    count = 0
    get = into.get
    for record in records:
        if type(record) is not tuple or len(record) != 2:
            raise TypeError(f"records must be (key, value) 2-tuples, got {type(record).__name__}")
        key, value = record
        values = get(key, _MISSING)
        if values is _MISSING:
            into[key] = [value]
        elif type(values) is list:
            values.append(value)
        else:
            raise TypeError(f"group_values: the value of a key in into is a {type(values).__name__}, not a list")
        count += 1
    return count
