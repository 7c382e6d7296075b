"""Fold ``(key, value)`` records into a dict of combiners by key (compiled kernel).

The inner loop of every map-side combine and reduce-side merge (Spark's
``AppendOnlyMap.changeValue``): per record one dict probe, then either a new
combiner or a merge into the current one. ``shuffle/_twins/combine.py`` is the
readable specification; this module gives the same answers and raises the
same errors, only without an interpreter frame per record.

Well-known merge functions are applied in C without a call: ``operator.add``
(``a + b``), and the builtins ``min`` and ``max`` (which keep the current
combiner on ties, as ``min(a, b)``/``max(a, b)`` do). Any other callable is
called. Worst case O(n) dict operations; no nogil section, because every
step touches Python objects.
"""

import builtins
import operator

from cpython.number cimport PyNumber_Add
from cpython.object cimport PyObject

__all__ = ["combine_values", "group_values"]


cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL
    bint PyTuple_CheckExact(object o)
    bint PyList_CheckExact(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)
    int PyList_Append(object lst, object item) except -1


cdef enum MergeOp:
    CALL = 0
    ADD = 1
    MIN = 2
    MAX = 3


cdef MergeOp _merge_op(object merge):
    if merge is operator.add:
        return ADD
    if merge is builtins.min:
        return MIN
    if merge is builtins.max:
        return MAX
    return CALL


def combine_values(records, dict into, create, merge):
    """Fold ``records`` into ``into`` (key -> combiner); returns how many records were folded.

    ``create(value)`` starts a key's combiner (``None``: the value itself is
    the combiner); ``merge(combiner, value)`` folds in another. Equivalent to::

        for key, value in records:
            into[key] = (value if create is None else create(value)) if key not in into \\
                else merge(into[key], value)

    A record that is not an exact 2-tuple raises ``TypeError`` (a list or a
    two-letter string is not a pair), as does an unhashable key; records
    before it stay folded.
    """
    if into is None:
        raise TypeError("combine_values: into must be a dict, not None")
    if create is not None and not callable(create):
        raise TypeError(f"combine_values: create must be callable or None, got {create!r}")
    if not callable(merge):
        raise TypeError(f"combine_values: merge must be callable, got {merge!r}")
    cdef MergeOp op = _merge_op(merge)
    cdef Py_ssize_t count = 0
    cdef PyObject* found
    cdef object key, value, current
    for record in records:
        if not PyTuple_CheckExact(record) or PyTuple_GET_SIZE(record) != 2:
            raise TypeError(f"records must be (key, value) 2-tuples, got {type(record).__name__}")
        key = (<tuple>record)[0]
        value = (<tuple>record)[1]
        found = PyDict_GetItemWithError(into, key)
        if found is NULL:
            into[key] = value if create is None else create(value)
        else:
            current = <object>found  # a new reference before any Python code can run
            if op == ADD:
                # Exactly operator.add: Cython's own `+` fast path turns 0 + -0.0 into -0.0.
                into[key] = PyNumber_Add(current, value)
            elif op == MIN:
                into[key] = value if value < current else current
            elif op == MAX:
                into[key] = value if value > current else current
            else:
                into[key] = merge(current, value)
        count += 1
    return count


def group_values(records, dict into):
    """Append each record's value to its key's list in ``into`` (key -> list); returns records seen.

    Equivalent to ``into.setdefault(key, []).append(value)`` per record, with
    the same errors as :func:`combine_values` (not an exact 2-tuple, unhashable
    key). A list found in ``into`` is appended to; anything else there is a
    ``TypeError``.
    """
    if into is None:
        raise TypeError("group_values: into must be a dict, not None")
    cdef Py_ssize_t count = 0
    cdef PyObject* found
    cdef object key, value
    for record in records:
        if not PyTuple_CheckExact(record) or PyTuple_GET_SIZE(record) != 2:
            raise TypeError(f"records must be (key, value) 2-tuples, got {type(record).__name__}")
        key = (<tuple>record)[0]
        value = (<tuple>record)[1]
        found = PyDict_GetItemWithError(into, key)
        if found is NULL:
            into[key] = [value]
        elif PyList_CheckExact(<object>found):
            PyList_Append(<object>found, value)
        else:
            raise TypeError(f"group_values: the value of a key in into is a {type(<object>found).__name__}, not a list")
        count += 1
    return count
