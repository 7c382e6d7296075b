"""The msgpack serializer: records packed back to back; relocatable.

A stream is key, value, key, value... packed back to back with msgpack, no
per-record framing, so the bytes of any record can be cut out and
concatenated with others (what the serialized writer needs to sort records as
bytes). Values msgpack has no exact type for travel in extension types (a
tuple tag, big ints, pickle): see the notes below.

The serializer contract (concatenated streams decode to the concatenated
records, exact round trips) is in :mod:`shuffle.serializer`. This module never
touches files, compression or partitioning.
"""

from __future__ import annotations

import logging
import pickle
import threading
from typing import Any, Iterable, Iterator

import msgpack
from msgpack import ExtType

from shuffle.errors import SerializationError
from shuffle.kernels import load
from shuffle.serializer import PICKLE_PROTOCOL, Buffer, Encoder, Serializer, bad_record, pickle_error, type_name

__all__ = ["MsgpackSerializer"]

log = logging.getLogger(__name__)

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
_records = load("msgpack_records")
_pack_pairs, _pack_each = _records.pack_pairs, _records.pack_each

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
        log.debug("msgpack: %s has no native encoding; packing it with pickle", type_name(obj))
    try:
        return ExtType(_EXT_PICKLE, pickle.dumps(obj, PICKLE_PROTOCOL))
    except Exception as e:
        err = pickle_error(obj, e)
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
    return SerializationError(type_name(culprit), f"msgpack cannot pack it: {type(error).__name__}: {error}")


def _pack_other(obj: Any) -> bytes:
    """One object through the full packer (the kernel's fallback for non-scalars)."""
    packer = _scratch.packer
    try:
        packer.pack(obj)
        return packer.bytes()
    finally:
        packer.reset()


def _pack_record_slowly(key: Any, value: Any) -> bytes:
    """Key and value through the full packer, failures described (the error path)."""
    try:
        return _pack_other(key) + _pack_other(value)
    except SerializationError:  # from our default hook, cause attached
        raise
    except Exception as e:
        raise _msgpack_failure(key, value, e) from e


def _checked_record(record: Any, n: int) -> bytes:
    """Record ``n`` of a batch the kernel stopped at: its bytes, or the precise error at ``n``."""
    if record.__class__ is not tuple or len(record) != 2:
        raise bad_record(record).at(n)
    try:
        return _pack_record_slowly(record[0], record[1])
    except SerializationError as e:
        raise e.at(n) from e.__cause__


class _MsgpackEncoder(Encoder):
    """Records packed into one bytearray: plain scalars by the ``msgpack_records`` kernel, the rest by msgpack."""

    __slots__ = ("_buffer", "_count")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._count = 0

    def add(self, key: Any, value: Any) -> None:
        if _pack_pairs([(key, value)], self._buffer, _pack_other) == 0:
            try:
                self._buffer += _pack_record_slowly(key, value)
            except BaseException:  # leave the encoder empty, as add_all does
                self._discard()
                raise
        self._count += 1

    def add_all(self, records: Iterable[tuple]) -> int:
        batch = records if type(records) is list else list(records)
        buffer, n, start = self._buffer, len(batch), 0
        try:
            while True:
                # The kernel stops at a record it cannot take; the slow path then packs
                # it or raises the precise error, and the kernel goes on after it.
                start = _pack_pairs(batch, buffer, _pack_other, start)
                if start == n:
                    break
                buffer += _checked_record(batch[start], start)
                start += 1
        except BaseException:  # the input itself failed: leave the encoder empty, as promised
            self._discard()
            raise
        self._count += n
        return n

    @property
    def nbytes(self) -> int:
        return len(self._buffer)

    @property
    def count(self) -> int:
        return self._count

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._discard()
        return data

    def _discard(self) -> None:
        self._buffer = bytearray()
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
        batch = records if type(records) is list else list(records)
        out: list[bytes] = []
        start, n = 0, len(batch)
        while True:
            out, start = _pack_each(batch, _pack_other, start, out)
            if start == n:
                return out
            out.append(_checked_record(batch[start], start))
            start += 1

    def dumps_record(self, key: Any, value: Any) -> bytes:
        return _pack_record_slowly(key, value)

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
            # A small block is decoded whole, in C, and handed out as a list iterator:
            # no generator frame per record, and a damaged block fails before any record is used.
            unpacker = msgpack.Unpacker(None, **options)
            unpacker.feed(view)
            return iter(_unpack_all(unpacker, total))
        # stream in chunks rather than copy everything into the unpacker
        return _unpack_stream(msgpack.Unpacker(_ViewReader(view), read_size=_READ_SIZE, **options), total)


def _unpack_all(unpacker: msgpack.Unpacker, total: int) -> list:
    try:
        # zip pairs key, value in C; strict=True turns a key without a value
        # (a stream cut at an object boundary) into an error.
        records = list(zip(unpacker, unpacker, strict=True))
    except Exception as e:
        raise _stream_error(unpacker, total, e) from e
    if not _unpacker_is_idle(unpacker):
        raise SerializationError("msgpack stream", f"truncated: the last record of {total} bytes is incomplete")
    return records


def _unpack_stream(unpacker: msgpack.Unpacker, total: int) -> Iterator[tuple]:
    try:
        yield from zip(unpacker, unpacker, strict=True)
    except Exception as e:
        raise _stream_error(unpacker, total, e) from e
    if not _unpacker_is_idle(unpacker):
        raise SerializationError("msgpack stream", f"truncated: the last record of {total} bytes is incomplete")


def _stream_error(unpacker: msgpack.Unpacker, total: int, error: Exception) -> SerializationError:
    at = unpacker.tell()
    if type(error) is ValueError and str(error).startswith("zip()"):  # from strict=True
        reason = f"truncated: the stream ends after a key (byte {at} of {total}) without a whole value"
    else:
        reason = f"malformed data near byte {at} of {total}: {type(error).__name__}: {error}"
    return SerializationError("msgpack stream", reason)


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
