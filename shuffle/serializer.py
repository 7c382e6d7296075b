"""Record serializers: how (key, value) records become bytes and back.

Two serializers, as Spark has Kryo and Java serialization:

- :class:`MsgpackSerializer` (relocatable): a stream is key, value, key, value...
  packed back to back with msgpack, no per-record framing, so the bytes of any
  record can be cut out and concatenated with others (what the serialized
  writer needs to sort records as bytes).
- :class:`PickleSerializer` (not relocatable): a stream is frames
  ``[4-byte big-endian length][pickle of a list of (key, value) tuples]``, the
  shape PySpark's batched serializer uses.

Both keep one contract writers rely on: any concatenation of encoder outputs
(``take()`` results, ``dumps_record`` results, or whole streams) is
itself a stream that decodes to the concatenated records. That lets writers
flush per batch, concatenate partition segments and merge spills by copying
bytes. What is read back equals what was written, types included.

This module never touches files, compression or partitioning, and never keeps
a whole decoded stream in memory: ``decode`` is a generator. Decoding runs
pickle, so it must only be given bytes shuffle itself wrote.
"""

from __future__ import annotations

import logging
import pickle
import struct
import threading
from abc import ABC, abstractmethod
from itertools import chain, islice
from typing import Any, Iterable, Iterator, Optional, Union

import msgpack
from msgpack import ExtType

from shuffle.errors import ConfigError, SerializationError

__all__ = [
    "Encoder",
    "Serializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "serializer_from_name",
]

log = logging.getLogger(__name__)

Buffer = Union[bytes, bytearray, memoryview]

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _type_name(obj: object) -> str:
    t = type(obj)
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def _bad_record(record: object) -> SerializationError:
    """The error for something that is not a (key, value) 2-tuple."""
    shape = f" of length {len(record)}" if isinstance(record, tuple) else ""
    return SerializationError(
        _type_name(record),
        f"a record must be a (key, value) 2-tuple, got a {_type_name(record)}{shape}",
    )


def _first_bad_shape(records: list) -> int:
    """Index of the first record that is not an exact 2-tuple (error path only)."""
    for i, rec in enumerate(records):
        if type(rec) is not tuple or len(rec) != 2:
            return i
    raise AssertionError("no malformed record")  # pragma: no cover - callers checked first


def _unpicklable_part(obj: object) -> Optional[tuple[object, Exception]]:
    """The innermost object inside ``obj`` that pickle refuses, with pickle's error.

    Error path only: descends into builtin containers so the error names the
    lambda inside a list rather than the list. None when ``obj`` pickles.
    """
    try:
        pickle.dumps(obj, _PICKLE_PROTOCOL)
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


def _pickle_error(obj: object, fallback: Exception) -> SerializationError:
    """A SerializationError naming what inside ``obj`` cannot be pickled; cause set."""
    found = _unpicklable_part(obj)
    culprit, err = found if found is not None else (obj, fallback)
    error = SerializationError(_type_name(culprit), f"cannot be pickled: {err}")
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
        """The records of a whole stream, one at a time (a generator).

        Malformed or truncated bytes raise SerializationError while iterating.
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


# --------------------------------------------------------------------------- msgpack

# msgpack has one array type, and Packer(strict_types=True) packs only exact
# lists as arrays natively: tuples (and every subclass of a native type) are
# handed to ``default``. So lists are the native array (decoded with
# use_list=True) and a tuple is packed as the array [TUPLE_TAG, *items], whose
# items msgpack still packs in C. That choice keeps the common cases in C:
# scalar keys and values never reach Python, the record's own tuple is never
# packed (key and value are packed one after the other), and tagging a tuple
# costs one Python call instead of a nested pack. On decode, ``list_hook`` turns
# tagged arrays back into tuples (dict keys included, so tuple keys stay
# hashable). Streaming with use_list=True is cheap per object; DESIGN's slow
# ``unpackb(use_list=True)`` figure is for one giant array, which we never build.
_EXT_TUPLE_TAG = 1  # zero-length ext heading an array that was a tuple
_EXT_BIGINT = 2  # int outside msgpack's 64-bit range: signed big-endian two's complement
_EXT_PICKLE = 3  # anything else: pickle, so the stream stays relocatable
_TUPLE_TAG = ExtType(_EXT_TUPLE_TAG, b"")


class _TupleMark:
    """What the tuple tag decodes to, before list_hook folds it away."""

    __slots__ = ()


_TUPLE_MARK = _TupleMark()
_pickled_types_seen: set[type] = set()


def _msgpack_default(obj: object) -> object:
    """Packer hook for everything msgpack does not pack natively under strict_types."""
    t = type(obj)
    if t is tuple:
        return [_TUPLE_TAG, *obj]  # type: ignore[misc]
    if t is int:  # strict_types hands over ints beyond 64 bits
        n: int = obj  # type: ignore[assignment]
        return ExtType(_EXT_BIGINT, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))
    if t not in _pickled_types_seen:
        _pickled_types_seen.add(t)
        log.debug("msgpack: %s has no native encoding; packing it with pickle", _type_name(obj))
    try:
        return ExtType(_EXT_PICKLE, pickle.dumps(obj, _PICKLE_PROTOCOL))
    except Exception as e:
        err = _pickle_error(obj, e)
        raise err from err.__cause__


def _msgpack_ext_hook(code: int, data: bytes) -> object:
    if code == _EXT_TUPLE_TAG:
        return _TUPLE_MARK
    if code == _EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    if code == _EXT_PICKLE:
        return pickle.loads(data)
    raise ValueError(f"unknown msgpack extension type {code}")


def _msgpack_list_hook(items: list) -> object:
    if items and items[0] is _TUPLE_MARK:
        return tuple(items[1:])
    return items


def _new_packer() -> msgpack.Packer:
    # surrogatepass: any Python str round-trips (os.fsdecode'd names carry lone
    # surrogates); the bytes are only ever read back by this module.
    return msgpack.Packer(
        default=_msgpack_default,
        autoreset=False,
        use_bin_type=True,
        strict_types=True,
        unicode_errors="surrogatepass",
    )


_READ_SIZE = 1 << 20  # bytes handed to the Unpacker at a time when streaming


class _ViewReader:
    """A file-like ``read`` over a buffer, so the Unpacker pulls chunks on demand."""

    __slots__ = ("_view", "_pos")

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, n: int) -> bytes:
        pos = self._pos
        self._pos = pos + n
        return bytes(self._view[pos : pos + n])  # msgpack insists on bytes


def _msgpack_failure(key: Any, value: Any, error: Exception) -> SerializationError:
    """Describe an exception msgpack itself raised while packing a record (error path).

    Names whichever of key and value fails on its own; the caller chains ``error``.
    """
    culprit: object = (key, value)
    for part in (key, value):
        try:
            _new_packer().pack(part)
        except Exception:
            culprit = part
            break
    return SerializationError(_type_name(culprit), f"msgpack cannot pack it: {type(error).__name__}: {error}")


class _MsgpackEncoder(Encoder):
    __slots__ = ("_packer", "_count")

    def __init__(self) -> None:
        self._packer = _new_packer()
        self._count = 0

    def add(self, key: Any, value: Any) -> None:
        packer = self._packer
        try:
            packer.pack(key)
            packer.pack(value)
        except SerializationError:  # from our default hook, cause attached
            self._discard()
            raise
        except Exception as e:
            self._discard()
            raise _msgpack_failure(key, value, e) from e
        except BaseException:
            self._discard()
            raise
        self._count += 1

    def add_all(self, records: Iterable[tuple]) -> int:
        pack = self._packer.pack
        n = -1
        try:
            for n, rec in enumerate(records):
                if rec.__class__ is not tuple:
                    raise _bad_record(rec)
                try:  # free in CPython 3.11+ until something raises
                    key, value = rec  # a tuple of the wrong length raises here
                    pack(key)
                    pack(value)
                except SerializationError:  # from our default hook, cause attached
                    raise
                except Exception as e:
                    if len(rec) != 2:
                        raise _bad_record(rec) from None
                    raise _msgpack_failure(key, value, e) from e
        except SerializationError as e:
            self._discard()
            raise e.at(n) from e.__cause__
        except BaseException:  # the input itself failed: leave the encoder empty, as promised
            self._discard()
            raise
        self._count += n + 1
        return n + 1

    @property
    def nbytes(self) -> int:
        # A live view would block pack(); CPython releases this one as soon as
        # len() returns (3x cheaper than a with-block, and writers ask often).
        return len(self._packer.getbuffer())

    @property
    def count(self) -> int:
        return self._count

    def take(self) -> bytes:
        data = self._packer.bytes()
        self._discard()
        return data

    def _discard(self) -> None:
        self._packer.reset()
        self._count = 0


class _Scratch(threading.local):
    """One packer per thread for dumps_record(s); serializers themselves stay stateless."""

    def __init__(self) -> None:
        self.packer = _new_packer()


_scratch = _Scratch()


class MsgpackSerializer(Serializer):
    """msgpack records, back to back; relocatable.

    Exact Python types round-trip: tuple vs list, bytes vs str, bool, None,
    float, dicts with any hashable keys (tuple keys included, insertion order
    kept), ints of any size (beyond 64 bits through an extension type), str
    with lone surrogates. Any other picklable object (set, datetime, Decimal,
    subclasses of builtins, user classes) is carried as pickle inside an
    extension type: exact, but slower than native values. Two exceptions:
    bytearray and memoryview come back as bytes (msgpack packs every byte
    buffer as bin before any hook sees it), and ``msgpack.ExtType`` objects
    inside records are not supported (they would be read as ours).
    """

    name = "msgpack"
    relocatable = True

    def new_encoder(self) -> Encoder:
        return _MsgpackEncoder()

    def dumps_records(self, records: list) -> list[bytes]:
        packer = _scratch.packer
        pack, take, reset = packer.pack, packer.bytes, packer.reset
        out: list[bytes] = []
        append = out.append
        for n, rec in enumerate(records):
            if rec.__class__ is not tuple:
                raise _bad_record(rec).at(n)
            try:
                key, value = rec
                pack(key)
                pack(value)
                append(take())
                reset()
            except SerializationError as e:
                reset()
                raise e.at(n) from e.__cause__
            except Exception as e:
                reset()
                if len(rec) != 2:
                    raise _bad_record(rec).at(n) from None
                raise _msgpack_failure(key, value, e).at(n) from e
        return out

    def dumps_record(self, key: Any, value: Any) -> bytes:
        packer = _scratch.packer
        try:
            packer.pack(key)
            packer.pack(value)
            return packer.bytes()
        except SerializationError:
            raise
        except Exception as e:
            raise _msgpack_failure(key, value, e) from e
        finally:
            packer.reset()

    def decode(self, data: Buffer) -> Iterator[tuple]:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        total = view.nbytes
        # Nothing inside can be longer than the whole buffer: that bounds the
        # unpacker's limits, and read_size may not exceed max_buffer_size.
        limit = max(total, 1)
        options = dict(
            use_list=True,
            raw=False,
            strict_map_key=False,
            unicode_errors="surrogatepass",
            ext_hook=_msgpack_ext_hook,
            list_hook=_msgpack_list_hook,
            max_buffer_size=limit,
        )
        if total <= _READ_SIZE:
            unpacker = msgpack.Unpacker(None, **options)
            unpacker.feed(view)
        else:  # stream in chunks rather than copy everything into the unpacker
            unpacker = msgpack.Unpacker(_ViewReader(view), read_size=_READ_SIZE, **options)
        try:
            # zip pairs key, value in C; strict=True turns a key without a value
            # (a stream cut at an object boundary) into an error.
            yield from zip(unpacker, unpacker, strict=True)
        except Exception as e:
            at = unpacker.tell()
            if type(e) is ValueError and str(e).startswith("zip()"):  # from strict=True
                reason = f"truncated: the stream ends after a key (byte {at} of {total}) without a whole value"
            else:
                reason = f"malformed data near byte {at} of {total}: {type(e).__name__}: {e}"
            raise SerializationError("msgpack stream", reason) from e
        if not _unpacker_is_idle(unpacker):
            raise SerializationError("msgpack stream", f"truncated: the last record of {total} bytes is incomplete")


def _unpacker_is_idle(unpacker: msgpack.Unpacker) -> bool:
    """After iteration ended: True if no object was left half-parsed.

    The Unpacker keeps a half-parsed object silently (its ``tell()`` even counts
    the header bytes), so feed one nil: from a clean state it unpacks to None;
    otherwise it completes or extends the partial object, or fails. (Once a
    file-like source is exhausted the Unpacker accepts ``feed``.)
    """
    unpacker.feed(b"\xc0")
    try:
        return unpacker.unpack() is None
    except Exception:
        return False


# --------------------------------------------------------------------------- pickle

_FRAME_RECORDS = 1024  # records per pickle frame: PySpark-sized batches, bounded decode memory
_FRAME_HEADER = struct.Struct(">I")
_MAX_FRAME = (1 << 32) - 1


def _pickle_frames(records: list, base: int, out: list) -> int:
    """Append header and payload of frames holding ``records`` (exact 2-tuples) to ``out``.

    Returns the bytes appended. ``base`` is the index of ``records[0]`` in the
    caller's input, for error positions. A frame too big for its 4-byte length
    is split in two.
    """
    try:
        payload = pickle.dumps(records, _PICKLE_PROTOCOL)
    except Exception as e:
        for i, rec in enumerate(records):
            try:
                pickle.dumps(rec, _PICKLE_PROTOCOL)
            except Exception as e_rec:
                err = _pickle_error(rec, e_rec)
                raise err.at(base + i) from err.__cause__
        raise SerializationError("list", f"a batch of records cannot be pickled: {e}").at(base) from e
    if len(payload) > _MAX_FRAME:
        if len(records) == 1:
            raise SerializationError(
                _type_name(records[0][1]),
                f"the record pickles to {len(payload)} bytes, more than a frame's limit of {_MAX_FRAME}",
            ).at(base)
        half = len(records) // 2
        return _pickle_frames(records[:half], base, out) + _pickle_frames(records[half:], base + half, out)
    out.append(_FRAME_HEADER.pack(len(payload)))
    out.append(payload)
    return _FRAME_HEADER.size + len(payload)


def _check_shapes(records: list, base: int) -> None:
    # set(map(...)) runs in C: cheaper than a Python-level check per record.
    if records and (set(map(type, records)) != {tuple} or set(map(len, records)) != {2}):
        i = _first_bad_shape(records)
        raise _bad_record(records[i]).at(base + i)


class _PickleEncoder(Encoder):
    """Frames of up to _FRAME_RECORDS records.

    ``add`` collects records and pickles them as a frame once _FRAME_RECORDS
    are pending or at ``take()``: so ``nbytes`` does not count the pending
    records, and an unpicklable record given to ``add`` raises at that later
    call (without a position). ``add_all`` pickles what it is given at once.
    """

    __slots__ = ("_parts", "_nbytes", "_count", "_pending")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._nbytes = 0
        self._count = 0
        self._pending: list[tuple] = []

    def add(self, key: Any, value: Any) -> None:
        self._pending.append((key, value))
        self._count += 1
        if len(self._pending) >= _FRAME_RECORDS:
            self._close_pending()

    def add_all(self, records: Iterable[tuple]) -> int:
        self._close_pending()  # earlier add()s come first in the stream
        it = iter(records)
        n = 0
        try:
            while True:
                chunk = list(islice(it, _FRAME_RECORDS))
                if not chunk:
                    break
                _check_shapes(chunk, n)
                self._nbytes += _pickle_frames(chunk, n, self._parts)
                n += len(chunk)
        except BaseException:  # a bad record, or the input itself failed: leave the encoder empty
            self._discard()
            raise
        self._count += n
        return n

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def count(self) -> int:
        return self._count

    def take(self) -> bytes:
        self._close_pending()
        data = b"".join(self._parts)
        self._discard()
        return data

    def _close_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            self._nbytes += _pickle_frames(pending, 0, self._parts)
        except SerializationError as e:
            self._discard()
            # Positions within the pending batch mean nothing to the caller.
            raise SerializationError(e.type_name, e.reason) from e.__cause__

    def _discard(self) -> None:
        self._parts = []
        self._pending = []
        self._nbytes = 0
        self._count = 0


class PickleSerializer(Serializer):
    """Pickle frames of record batches; not relocatable (a frame is one pickle).

    Anything pickle handles round-trips exactly; lambdas and other objects
    pickle refuses raise SerializationError naming them.
    """

    name = "pickle"
    relocatable = False

    def new_encoder(self) -> Encoder:
        return _PickleEncoder()

    def dumps_record(self, key: Any, value: Any) -> bytes:
        out: list[bytes] = []
        try:
            _pickle_frames([(key, value)], 0, out)
        except SerializationError as e:
            raise SerializationError(e.type_name, e.reason) from e.__cause__
        return b"".join(out)

    def dumps_records(self, records: list) -> list[bytes]:
        records = list(records)
        _check_shapes(records, 0)
        out: list[bytes] = []
        for i, rec in enumerate(records):
            parts: list[bytes] = []
            _pickle_frames([rec], i, parts)
            out.append(b"".join(parts))
        return out

    def decode(self, data: Buffer) -> Iterator[tuple]:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        total = view.nbytes
        header = _FRAME_HEADER.size
        pos = 0
        while pos < total:
            if pos + header > total:
                raise SerializationError("pickle stream", f"truncated frame header at byte {pos} of {total}")
            (length,) = _FRAME_HEADER.unpack_from(view, pos)
            start, pos = pos + header, pos + header + length
            if pos > total:
                raise SerializationError(
                    "pickle stream", f"truncated frame at byte {start - header}: needs {length} bytes, has {total - start}"
                )
            try:
                batch = pickle.loads(view[start:pos])
            except Exception as e:
                raise SerializationError("pickle stream", f"malformed frame at byte {start - header}: {e}") from e
            if type(batch) is not list:
                raise SerializationError(
                    "pickle stream", f"frame at byte {start - header} holds a {_type_name(batch)}, not a list of records"
                )
            yield from batch


# --------------------------------------------------------------------------- lookup

_BY_NAME = {"msgpack": MsgpackSerializer, "pickle": PickleSerializer}


def serializer_from_name(name: str) -> Serializer:
    """The serializer called ``name`` ("msgpack" or "pickle")."""
    cls = _BY_NAME.get(name)
    if cls is None:
        raise ConfigError("serializer", name, "one of " + ", ".join(_BY_NAME))
    return cls()
