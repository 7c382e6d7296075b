"""Block compression of shuffle streams (``spark.io.compression.codec``).

A codec turns bytes into self-delimiting blocks and back::

    block = [4-byte BE compressed length][4-byte BE raw length][payload]

with at most ``block_size`` raw bytes per block (32 KiB by default, as Spark's
``spark.io.compression.lz4.blockSize``). We frame blocks ourselves instead of
using each library's own container because then *any* concatenation of
``compress()`` outputs decodes as one stream, for every codec alike: writers
concatenate per-partition segments and merge spills by copying compressed
bytes (Spark's codecs promise the same, ``supportsConcatenationOfSerializedStreams``).
zlib streams, for one, do not concatenate on their own. A block that does not
shrink is stored raw, marked by compressed length == raw length (as lz4-java's
LZ4Block does), so incompressible data costs 8 bytes per block and no work.

This module owns only bytes-to-bytes transforms: no files, no checksums (the
resolver checksums partitions on disk), no knowledge of records. Codec
libraries are imported when a codec is first asked for, so a missing optional
library only matters to someone who chose that codec.
"""

from __future__ import annotations

import logging
import struct
import zlib
from typing import Callable, Union

from shuffle.errors import ConfigError, SerializationError

__all__ = ["Codec", "get_codec", "CODEC_NAMES", "DEFAULT_BLOCK_SIZE", "DEFAULT_ZSTD_LEVEL", "MAX_BLOCK_SIZE"]

log = logging.getLogger(__name__)

Buffer = Union[bytes, bytearray, memoryview]

DEFAULT_BLOCK_SIZE = 32 * 1024
MAX_BLOCK_SIZE = 64 * 1024 * 1024  # also caps what a corrupt header can make us allocate
CODEC_NAMES = ("none", "lz4", "zstd", "zlib")

_CONF_KEY = "spark.io.compression.codec"
_HEADER = struct.Struct(">II")
DEFAULT_ZSTD_LEVEL = 1  # Spark's spark.io.compression.zstd.level default
_MIN_ZSTD_LEVEL = -(1 << 17)  # zstd's fastest negative level
_ZLIB_LEVEL = 1  # what PySpark uses for its compressed spills

# Spark's class names for the codecs we share, so a copied Spark conf works.
_SPARK_CLASS_NAMES = {
    "org.apache.spark.io.lz4compressioncodec": "lz4",
    "org.apache.spark.io.zstdcompressioncodec": "zstd",
}


def _corrupt(reason: str) -> SerializationError:
    return SerializationError("compressed block", reason)


class Codec:
    """Compresses bytes into concatenable blocks; ``name`` is the conf value.

    ``decompress`` accepts any concatenation of ``compress`` outputs (of this
    codec, whatever block size wrote them) and raises SerializationError for a
    malformed block: truncated, inconsistent lengths, or a payload the library
    rejects. Codecs are stateless, thread-safe, picklable and compare equal by
    class and settings (block size; zstd's level).
    """

    name = "abstract"

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if type(block_size) is not int or not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ConfigError("block_size", block_size, f"an integer number of bytes in [1, {MAX_BLOCK_SIZE}]")
        self.block_size = block_size

    def compress(self, data: Buffer) -> bytes:
        """``data`` as blocks of at most ``block_size`` raw bytes; b"" for empty input."""
        view = _byte_view(data)
        compress_block = self._block_compressor()
        header = _HEADER.pack
        parts: list[bytes] = []
        step = self.block_size
        for start in range(0, view.nbytes, step):
            raw = view[start : start + step]
            payload = compress_block(raw)
            if len(payload) >= len(raw):  # stored: never larger than the input
                payload = bytes(raw)
            parts.append(header(len(payload), len(raw)))
            parts.append(payload)
        return b"".join(parts)

    def decompress(self, data: Buffer) -> bytes:
        """The raw bytes of any concatenation of ``compress`` outputs."""
        view = _byte_view(data)
        total = view.nbytes
        decompress_block = self._block_decompressor()
        unpack = _HEADER.unpack_from
        parts: list[bytes] = []
        pos = 0
        while pos < total:
            if pos + _HEADER.size > total:
                raise _corrupt(f"truncated block header at byte {pos} of {total}")
            clen, rlen = unpack(view, pos)
            start = pos + _HEADER.size
            end = start + clen
            if not 0 < clen <= rlen <= MAX_BLOCK_SIZE:
                raise _corrupt(
                    f"bad block header at byte {pos}: compressed length {clen}, raw length {rlen} "
                    f"(need 0 < compressed <= raw <= {MAX_BLOCK_SIZE})"
                )
            if end > total:
                raise _corrupt(f"truncated block at byte {pos}: needs {clen} payload bytes, has {total - start}")
            payload = view[start:end]
            if clen == rlen:
                parts.append(bytes(payload))
            else:
                try:
                    raw = decompress_block(payload, rlen)
                except Exception as e:  # each library has its own error type
                    raise _corrupt(f"{self.name} rejects the block at byte {pos}: {e}") from e
                if len(raw) != rlen:
                    raise _corrupt(f"block at byte {pos} decompresses to {len(raw)} bytes, header says {rlen}")
                parts.append(raw)
            pos = end
        return b"".join(parts)

    # Subclasses provide one-block functions; built per call so codecs hold no
    # library objects (zstd contexts are neither thread-safe nor picklable).
    def _block_compressor(self) -> Callable[[memoryview], bytes]:
        raise NotImplementedError

    def _block_decompressor(self) -> Callable[[memoryview, int], bytes]:
        raise NotImplementedError

    def _settings(self) -> dict:
        return {"block_size": self.block_size}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._settings() == other._settings()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self._settings().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"


def _byte_view(data: Buffer) -> memoryview:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


class NoneCodec(Codec):
    """No compression and no framing: bytes pass through, and concatenate trivially."""

    name = "none"

    def compress(self, data: Buffer) -> bytes:
        return bytes(data)

    def decompress(self, data: Buffer) -> bytes:
        return bytes(data)


class Lz4Codec(Codec):
    """LZ4 blocks (``lz4.block``, fast mode), as Spark's default codec."""

    name = "lz4"

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        super().__init__(block_size)
        _import_lz4_block()

    def _block_compressor(self) -> Callable[[memoryview], bytes]:
        compress = _import_lz4_block().compress
        return lambda raw: compress(raw, store_size=False)

    def _block_decompressor(self) -> Callable[[memoryview, int], bytes]:
        decompress = _import_lz4_block().decompress
        return lambda payload, rlen: decompress(payload, uncompressed_size=rlen)


class ZstdCodec(Codec):
    """Zstandard, level 1 by default as Spark's ``spark.io.compression.zstd.level``."""

    name = "zstd"

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, level: int = DEFAULT_ZSTD_LEVEL) -> None:
        super().__init__(block_size)
        zstandard = _import_zstandard()
        if type(level) is not int or not _MIN_ZSTD_LEVEL <= level <= zstandard.MAX_COMPRESSION_LEVEL:
            raise ConfigError(
                "spark.io.compression.zstd.level",
                level,
                f"an integer in [{_MIN_ZSTD_LEVEL}, {zstandard.MAX_COMPRESSION_LEVEL}]",
            )
        self.level = level

    def _settings(self) -> dict:
        return {"block_size": self.block_size, "level": self.level}

    def _block_compressor(self) -> Callable[[memoryview], bytes]:
        # Our header carries the raw length, so the frame need not.
        compressor = _import_zstandard().ZstdCompressor(level=self.level, write_content_size=False)
        return compressor.compress

    def _block_decompressor(self) -> Callable[[memoryview, int], bytes]:
        decompressor = _import_zstandard().ZstdDecompressor()
        return lambda payload, rlen: decompressor.decompress(payload, max_output_size=rlen)


class ZlibCodec(Codec):
    """zlib (deflate) at level 1, as PySpark compresses its spills; standard library only."""

    name = "zlib"

    def _block_compressor(self) -> Callable[[memoryview], bytes]:
        return lambda raw: zlib.compress(raw, _ZLIB_LEVEL)

    def _block_decompressor(self) -> Callable[[memoryview, int], bytes]:
        def decompress(payload: memoryview, rlen: int) -> bytes:
            d = zlib.decompressobj()
            raw = d.decompress(payload, rlen)
            if not d.eof or d.unused_data or d.unconsumed_tail:
                raise ValueError("the deflate stream does not end exactly at the block's end")
            return raw

        return decompress


def _import_lz4_block():  # type: ignore[no-untyped-def]
    try:
        import lz4.block
    except ImportError as e:
        raise ConfigError(_CONF_KEY, "lz4", "an installed codec: the lz4 package is missing (pip install lz4)") from e
    return lz4.block


def _import_zstandard():  # type: ignore[no-untyped-def]
    try:
        import zstandard
    except ImportError as e:
        raise ConfigError(
            _CONF_KEY, "zstd", "an installed codec: the zstandard package is missing (pip install zstandard)"
        ) from e
    return zstandard


_CODECS: dict[str, type[Codec]] = {
    "none": NoneCodec,
    "lz4": Lz4Codec,
    "zstd": ZstdCodec,
    "zlib": ZlibCodec,
}


def get_codec(name: str, block_size: int = DEFAULT_BLOCK_SIZE, *, zstd_level: int = DEFAULT_ZSTD_LEVEL) -> Codec:
    """The codec called ``name`` (case-insensitive; Spark's lz4/zstd class names work too).

    ``zstd_level`` only matters to zstd. Raises ConfigError for an unknown
    name, a bad block size or level, or a codec whose library is not installed
    (naming the package to pip install).
    """
    cls = None
    if isinstance(name, str):
        key = name.strip().lower()
        cls = _CODECS.get(_SPARK_CLASS_NAMES.get(key, key))
    if cls is None:
        raise ConfigError(_CONF_KEY, name, "one of " + ", ".join(CODEC_NAMES))
    if cls is ZstdCodec:
        return ZstdCodec(block_size, zstd_level)
    return cls(block_size)
