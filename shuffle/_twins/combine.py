"""Plain-Python twin of ``_ext/combine.pyx``: fold ``(key, value)`` records into a dict of combiners.

The readable specification of the kernel; tests hold the two to the same answers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, Iterable, Optional, Tuple

__all__ = ["combine_values"]


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def combine_values(records: Iterable[Tuple[Hashable, Any]], into: Dict[Hashable, Any],
                   create: Optional[Callable[[Any], Any]], merge: Callable[[Any, Any], Any]) -> int:
    """Fold ``records`` into ``into`` (key -> combiner); returns how many records were folded.

    ``create(value)`` starts a key's combiner (``None``: the value itself is the
    combiner); ``merge(combiner, value)`` folds in another. A record that is not
    a pair raises as tuple unpacking does; records before it stay folded.
    """
    if not isinstance(into, dict):
        raise TypeError(f"combine_values: into must be a dict, not {type(into).__name__}")
    if create is not None and not callable(create):
        raise TypeError(f"combine_values: create must be callable or None, got {create!r}")
    if not callable(merge):
        raise TypeError(f"combine_values: merge must be callable, got {merge!r}")
    count = 0
    get = into.get
    for key, value in records:
        # One dict probe on the common path: most keys repeat in a shuffle.
        current = get(key, _MISSING)
        if current is _MISSING:
            into[key] = value if create is None else create(value)
        else:
            into[key] = merge(current, value)
        count += 1
    return count
