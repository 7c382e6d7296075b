"""Record serializers: the contract every serializer keeps, and lookup by name.

How (key, value) records become bytes and back. Two serializers, as Spark has
Kryo and Java serialization, each in its own module with its stream format:
:mod:`shuffle.msgpack_serializer` (relocatable) and
:mod:`shuffle.pickle_serializer` (not relocatable). This module holds what
they share: the :class:`Serializer` and :class:`Encoder` base classes, the
error helpers, and :func:`serializer_from_name`.

Every serializer keeps one contract writers rely on: any concatenation of
encoder outputs (``take()`` results, ``dumps_record`` results, or whole
streams) is itself a stream that decodes to the concatenated records. That
lets writers flush per batch, concatenate partition segments and merge spills
by copying bytes. What is read back equals what was written, types included.

Serializers never touch files, compression or partitioning, and never keep a
large decoded stream in memory: ``decode`` returns an iterator, which may
decode a small buffer (up to about a megabyte) whole before its first record,
and streams anything larger. Decoding runs
pickle, so it must only be given bytes shuffle itself wrote.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from itertools import chain
from typing import Any, Iterable, Iterator, Optional, Union

from shuffle.errors import ConfigError, SerializationError

__all__ = [
    "Buffer",
    "Encoder",
    "Serializer",
    "serializer_from_name",
    "PICKLE_PROTOCOL",
    "type_name",
    "bad_record",
    "pickle_error",
]

Buffer = Union[bytes, bytearray, memoryview]

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
"""The pickle protocol of every pickle a serializer writes."""


def type_name(obj: object) -> str:
    """The name of ``obj``'s type as errors show it: module-qualified unless a builtin."""
    t = type(obj)
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def bad_record(record: object) -> SerializationError:
    """The error for something that is not a (key, value) 2-tuple."""
    shape = f" of length {len(record)}" if isinstance(record, tuple) else ""
    return SerializationError(
        type_name(record),
        f"a record must be a (key, value) 2-tuple, got a {type_name(record)}{shape}",
    )



def _unpicklable_part(obj: object) -> Optional[tuple[object, Exception]]:
    """The innermost object inside ``obj`` that pickle refuses, with pickle's error.

    Error path only: descends into builtin containers so the error names the
    lambda inside a list rather than the list. None when ``obj`` pickles.
    """
    try:
        pickle.dumps(obj, PICKLE_PROTOCOL)
        return None
    except Exception as e:  # pickle raises PicklingError, TypeError, AttributeError...
        err = e
    t = type(obj)
    if t is dict:
        children: Iterable[object] = chain.from_iterable(obj.items())  # type: ignore[attr-defined]
    elif t in (tuple, list, set, frozenset):
        children = obj  # type: ignore[assignment]
    else:
        children = ()
    try:
        for child in children:
            found = _unpicklable_part(child)
            if found is not None:
                return found
    except RecursionError:
        pass
    return obj, err


def pickle_error(obj: object, fallback: Exception) -> SerializationError:
    """A SerializationError naming what inside ``obj`` cannot be pickled; cause set."""
    found = _unpicklable_part(obj)
    culprit, err = found if found is not None else (obj, fallback)
    error = SerializationError(type_name(culprit), f"cannot be pickled: {err}")
    error.__cause__ = err
    return error

# --------------------------------------------------------------------------- base classes


class Encoder(ABC):
    """Appends records to a growing buffer; ``take()`` hands the bytes over.

    Contract: ``decode(take_1 + take_2 + ...)`` yields every record added, in
    order, wherever the takes fell. ``nbytes`` and ``count`` describe what is
    buffered since the last ``take()``. When ``add``/``add_all`` raise
    :class:`SerializationError`, everything buffered since the last ``take()``
    is discarded (msgpack's packer drops its buffer when a pack fails; a writer
    aborts its task on this error anyway), so a failed encoder is empty, not
    half-written. An encoder is not thread-safe.
    """

    __slots__ = ()

    @abstractmethod
    def add(self, key: Any, value: Any) -> None:
        """Buffer one record."""

    @abstractmethod
    def add_all(self, records: Iterable[tuple]) -> int:
        """Buffer many (key, value) 2-tuples; returns how many.

        A failure raises SerializationError whose ``position`` is the index of
        the offending record within ``records``.
        """

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes buffered since the last take() (cheap to read)."""

    @property
    @abstractmethod
    def count(self) -> int:
        """Records buffered since the last take()."""

    @abstractmethod
    def take(self) -> bytes:
        """Everything buffered since the last take(), as one stream; then start empty."""


class Serializer(ABC):
    """Turns (key, value) records into byte streams and back.

    ``relocatable`` says whether the bytes of single records can be reordered
    and concatenated into a valid stream (Spark's
    ``supportsRelocationOfSerializedObjects``), which the serialized writer
    needs. Serializers hold no state: they pickle small and compare equal by
    class.
    """

    name: str
    relocatable: bool

    @abstractmethod
    def new_encoder(self) -> Encoder:
        """A fresh, empty encoder."""

    @abstractmethod
    def dumps_record(self, key: Any, value: Any) -> bytes:
        """One record's standalone bytes: a stream of exactly that record."""

    @abstractmethod
    def dumps_records(self, records: list) -> list[bytes]:
        """``dumps_record`` for each of many records, in one call.

        A failure raises SerializationError with the offending index as ``position``.
        """

    @abstractmethod
    def decode(self, data: Buffer) -> Iterator[tuple]:
        """The records of a whole stream, as an iterator.

        Malformed or truncated bytes raise SerializationError: from this call
        when the buffer is small enough to be decoded whole (then no record
        of it is handed out), else while iterating.
        """

    def loads_record(self, data: Buffer) -> tuple:
        """The single record in ``data`` (as written by ``dumps_record``)."""
        it = self.decode(data)
        first = next(it, None)
        if first is None:
            raise SerializationError(f"{self.name} stream", "expected one record, found none")
        if next(it, None) is not None:
            raise SerializationError(f"{self.name} stream", "expected one record, found more")
        return first

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"



# --------------------------------------------------------------------------- lookup


def serializer_from_name(name: str) -> Serializer:
    """The serializer called ``name`` ("msgpack" or "pickle")."""
    # Imported here: the concrete serializers import this module.
    from shuffle.msgpack_serializer import MsgpackSerializer
    from shuffle.pickle_serializer import PickleSerializer

    by_name = {"msgpack": MsgpackSerializer, "pickle": PickleSerializer}
    cls = by_name.get(name)
    if cls is None:
        raise ConfigError("serializer", name, "one of " + ", ".join(by_name))
    return cls()
