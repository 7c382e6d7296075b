"""The pickle serializer: frames of pickled record batches; not relocatable.

A stream is frames ``[4-byte big-endian length][pickle of a list of (key,
value) tuples]``, the shape PySpark's batched serializer uses; a frame holds
a bounded batch of records.

The serializer contract (concatenated streams decode to the concatenated
records, exact round trips) is in :mod:`shuffle.serializer`. This module never
touches files, compression or partitioning. Decoding runs pickle, so it must
only be given bytes shuffle itself wrote.
"""

from __future__ import annotations

import pickle
import struct
from itertools import islice
from typing import Any, Iterable, Iterator

from shuffle.errors import SerializationError
from shuffle.serializer import PICKLE_PROTOCOL, Buffer, Encoder, Serializer, bad_record, pickle_error, type_name

__all__ = ["PickleSerializer"]

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
        payload = pickle.dumps(records, PICKLE_PROTOCOL)
    except Exception as e:
        for i, rec in enumerate(records):
            try:
                pickle.dumps(rec, PICKLE_PROTOCOL)
            except Exception as e_rec:
                err = pickle_error(rec, e_rec)
                raise err.at(base + i) from err.__cause__
        raise SerializationError("list", f"a batch of records cannot be pickled: {e}").at(base) from e
    if len(payload) > _MAX_FRAME:
        if len(records) == 1:
            raise SerializationError(
                type_name(records[0][1]),
                f"the record pickles to {len(payload)} bytes, more than a frame's limit of {_MAX_FRAME}",
            ).at(base)
        half = len(records) // 2
        return _pickle_frames(records[:half], base, out) + _pickle_frames(records[half:], base + half, out)
    out.append(_FRAME_HEADER.pack(len(payload)))
    out.append(payload)
    return _FRAME_HEADER.size + len(payload)


def _first_bad_shape(records: list) -> int:
    """Index of the first record that is not an exact 2-tuple (error path only)."""
    for i, rec in enumerate(records):
        if type(rec) is not tuple or len(rec) != 2:
            return i
    raise AssertionError("no malformed record")  # pragma: no cover - callers checked first


def _check_shapes(records: list, base: int) -> None:
    # set(map(...)) runs in C: cheaper than a Python-level check per record.
    if records and (set(map(type, records)) != {tuple} or set(map(len, records)) != {2}):
        i = _first_bad_shape(records)
        raise bad_record(records[i]).at(base + i)


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
                    "pickle stream", f"frame at byte {start - header} holds a {type_name(batch)}, not a list of records"
                )
            yield from batch
