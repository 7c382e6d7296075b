"""The columnar block: one batch of ``(keys, values)`` numpy columns as self-describing bytes.

A partition segment of a columnar map output (and of a columnar spill file)
is a concatenation of blocks; any concatenation of blocks is valid, which is
what lets spills merge by copying bytes. One block is::

    fixed header, little-endian, 40 bytes:
        magic  b"SHCB"        4s
        version (1)           u8
        codec id              u8   0 none, 1 lz4, 2 zstd, 3 zlib
        reserved (0)          u16
        schema length         u32  bytes of the schema text below
        (padding)             4 bytes
        rows                  u64
        key payload length    u64  bytes stored (compressed or not)
        value payload length  u64
    schema: repr((key descr, value descr, value shape)) in ASCII, numpy's
            ``dtype_to_descr`` form, all little-endian; padded with spaces to 8
    key payload, zero-padded to 8
    value payload, zero-padded to 8

Uncompressed payloads are the columns' raw little-endian bytes, so decoding
is ``np.frombuffer`` without a copy; a compressed payload is the shuffle
codec's framed stream (:mod:`shuffle.codec`). Column dtypes are fixed-width
numbers: keys 1-D signed/unsigned integers or float32/float64; values 1-D of
such a dtype (bool and complex too), a structured dtype of them, or 2-D of
one dtype. This module owns only bytes; it never opens files.
"""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from shuffle.codec import Codec, get_codec
from shuffle.errors import BatchSchemaError, SerializationError

__all__ = ["ColumnSchema", "MAGIC", "HEADER", "encode_block", "decode_blocks", "as_batch", "block_nbytes"]

MAGIC = b"SHCB"
VERSION = 1
HEADER = struct.Struct("<4sBBHI4xQQQ")  # 40 bytes: the columns start 8-aligned
_CODEC_IDS = {"none": 0, "lz4": 1, "zstd": 2, "zlib": 3}
_CODEC_NAMES = {v: k for k, v in _CODEC_IDS.items()}
_PAD = b"\0" * 8
_MAX_SCHEMA = 1 << 16

Buffer = Union[bytes, bytearray, memoryview]


def _pad8(n: int) -> int:
    return -n % 8


def _little(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.byteorder not in ("|", "<") else dtype


def _numeric(dtype: np.dtype) -> bool:
    if dtype.names:
        return all(_numeric(dtype.fields[name][0]) for name in dtype.names)
    if dtype.subdtype is not None:
        return _numeric(dtype.subdtype[0])
    return dtype.kind in "biufc"


@dataclass(frozen=True)
class ColumnSchema:
    """The dtypes of a batch shuffle's columns: keys, values, and the values' trailing shape."""

    key_dtype: np.dtype
    value_dtype: np.dtype
    value_shape: Tuple[int, ...] = ()

    @classmethod
    def of(cls, keys: np.ndarray, values: np.ndarray, batch: Optional[int] = None) -> "ColumnSchema":
        """The schema of one batch, or ``BatchSchemaError`` naming what the format cannot hold."""
        for name, column in (("keys", keys), ("values", values)):
            if not isinstance(column, np.ndarray):
                raise BatchSchemaError(name, "a numpy array", type(column).__name__, batch)
        kd, vd = keys.dtype, values.dtype
        if keys.ndim != 1:
            raise BatchSchemaError("keys", "a 1-D array", f"{keys.ndim}-D", batch)
        if kd.kind not in "iu" and not (kd.kind == "f" and kd.itemsize in (4, 8)):
            raise BatchSchemaError("the key dtype", "a signed/unsigned integer or float32/float64", str(kd), batch)
        if values.ndim not in (1, 2) or (values.ndim == 2 and vd.names):
            raise BatchSchemaError("values", "a 1-D array or a 2-D array of one dtype", f"{values.ndim}-D", batch)
        if not _numeric(vd) or vd.hasobject:
            raise BatchSchemaError("the value dtype", "fixed-width numbers (or a structured dtype of them)",
                                   str(vd), batch)
        if values.shape[0] != keys.shape[0]:
            raise BatchSchemaError("the values' length", f"{keys.shape[0]} (the keys' length)",
                                   str(values.shape[0]), batch)
        return cls(_little(kd), _little(vd), tuple(values.shape[1:]))

    def check(self, keys: np.ndarray, values: np.ndarray, batch: Optional[int] = None) -> None:
        """Raise ``BatchSchemaError`` unless the batch has exactly this schema (byte order aside)."""
        other = ColumnSchema.of(keys, values, batch)
        if other != self:
            what = "the key dtype" if other.key_dtype != self.key_dtype else "the value dtype/shape"
            raise BatchSchemaError(what, f"{self.describe()} (as the shuffle's earlier batches)",
                                   other.describe(), batch)

    def describe(self) -> str:
        shape = f", values shape (n, {', '.join(map(str, self.value_shape))})" if self.value_shape else ""
        return f"keys {self.key_dtype}, values {self.value_dtype}{shape}"

    @property
    def row_nbytes(self) -> int:
        """Raw bytes of one row (key + value)."""
        return self.key_dtype.itemsize + self.value_dtype.itemsize * int(np.prod(self.value_shape, dtype=np.int64))

    def empty(self) -> Tuple[np.ndarray, np.ndarray]:
        return np.empty(0, self.key_dtype), np.empty((0, *self.value_shape), self.value_dtype)

    def text(self) -> bytes:
        descr = (np.lib.format.dtype_to_descr(self.key_dtype),
                 np.lib.format.dtype_to_descr(self.value_dtype), self.value_shape)
        raw = repr(descr).encode("ascii")
        return raw + b" " * _pad8(len(raw))


_SCHEMAS: Dict[bytes, ColumnSchema] = {}


def _parse_schema(raw: bytes) -> ColumnSchema:
    schema = _SCHEMAS.get(raw)
    if schema is None:
        try:
            key_descr, value_descr, shape = ast.literal_eval(raw.decode("ascii").rstrip(" "))
            schema = ColumnSchema(np.lib.format.descr_to_dtype(key_descr),
                                  np.lib.format.descr_to_dtype(value_descr), tuple(int(s) for s in shape))
        except (ValueError, TypeError, SyntaxError, UnicodeDecodeError) as e:
            raise SerializationError("columnar block", f"unreadable schema {raw[:80]!r}: {e}") from e
        if len(_SCHEMAS) < 1024:
            _SCHEMAS[raw] = schema
    return schema


def as_batch(item: object, batch: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``item`` as a ``(keys, values)`` pair of arrays, or ``BatchSchemaError`` (an object record)."""
    if type(item) is tuple and len(item) == 2 and isinstance(item[0], np.ndarray) \
            and isinstance(item[1], np.ndarray):
        return item[0], item[1]
    got = f"{type(item).__name__} {item!r:.60}"
    raise BatchSchemaError("an input item", "a (keys, values) batch of numpy arrays: this is a columnar shuffle, "
                           "which takes no object records", got, batch)


def encode_block(keys: np.ndarray, values: np.ndarray, schema: ColumnSchema, codec: Codec) -> List[Buffer]:
    """One block holding the batch, as buffers to write in order (no copy when uncompressed)."""
    key_bytes = _column_bytes(keys, schema.key_dtype)
    value_bytes = _column_bytes(values, schema.value_dtype)
    codec_id = _CODEC_IDS.get(codec.name)
    if codec_id is None:
        raise SerializationError("columnar block", f"codec {codec.name!r} has no id in the columnar format")
    if codec_id:
        key_bytes = codec.compress(key_bytes)
        value_bytes = codec.compress(value_bytes)
    schema_text = schema.text()
    header = HEADER.pack(MAGIC, VERSION, codec_id, 0, len(schema_text), keys.shape[0],
                         len(key_bytes), len(value_bytes))
    parts: List[Buffer] = [header + schema_text, key_bytes]
    if _pad8(len(key_bytes)):
        parts.append(_PAD[:_pad8(len(key_bytes))])
    parts.append(value_bytes)
    if _pad8(len(value_bytes)):
        parts.append(_PAD[:_pad8(len(value_bytes))])
    return parts


def _column_bytes(column: np.ndarray, dtype: np.dtype) -> memoryview:
    column = np.ascontiguousarray(column, dtype=dtype)
    return memoryview(column.reshape(-1).view(np.uint8)) if column.size else memoryview(b"")


def block_nbytes(rows: int, schema: ColumnSchema) -> int:
    """Bytes of an uncompressed block of ``rows`` rows."""
    key = rows * schema.key_dtype.itemsize
    value = rows * schema.row_nbytes - key
    return HEADER.size + len(schema.text()) + key + _pad8(key) + value + _pad8(value)


def decode_blocks(data: Buffer) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Every batch of a concatenation of blocks, as read-only arrays over ``data`` when uncompressed.

    A truncated or malformed block raises ``SerializationError`` naming what was wrong.
    """
    view = memoryview(data)
    position, end = 0, view.nbytes
    codecs: Dict[int, Codec] = {}
    while position < end:
        if end - position < HEADER.size:
            raise SerializationError("columnar block", f"{end - position} trailing bytes, less than a header")
        magic, version, codec_id, _, schema_len, rows, key_len, value_len = HEADER.unpack_from(view, position)
        if magic != MAGIC or version != VERSION or codec_id not in _CODEC_NAMES or schema_len > _MAX_SCHEMA:
            raise SerializationError("columnar block", f"bad header at byte {position} "
                                     f"(magic {magic!r}, version {version}, codec {codec_id})")
        position += HEADER.size
        schema = _parse_schema(bytes(view[position:position + schema_len]))
        position += schema_len
        key_end = position + key_len
        value_start = key_end + _pad8(key_len)
        value_end = value_start + value_len
        if value_end > end:
            raise SerializationError("columnar block", f"block of {rows} rows runs past the end of its segment")
        key_raw, value_raw = view[position:key_end], view[value_start:value_end]
        if codec_id:
            codec = codecs.get(codec_id) or codecs.setdefault(codec_id, get_codec(_CODEC_NAMES[codec_id]))
            key_raw, value_raw = memoryview(codec.decompress(key_raw)), memoryview(codec.decompress(value_raw))
        keys = _column(key_raw, schema.key_dtype, (rows,))
        values = _column(value_raw, schema.value_dtype, (rows, *schema.value_shape))
        position = value_end + _pad8(value_len)
        yield keys, values


def _column(raw: memoryview, dtype: np.dtype, shape: Tuple[int, ...]) -> np.ndarray:
    expected = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if raw.nbytes != expected:
        raise SerializationError("columnar block", f"column of shape {shape} and dtype {dtype} holds "
                                 f"{raw.nbytes} bytes, expected {expected}")
    if not expected:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
