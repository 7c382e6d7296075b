"""``BlockFormat``: how records become the bytes of a block, and back.

A block (one partition of one map output, or one batch of a spill file) is
``codec.compress(serializer stream)``. Both layers are concatenable: the
codec frames its own blocks and the serializer's streams join end to end.
So a partition segment built from several appends, or merged from several
spill files by byte concatenation, still decodes as one stream. Every writer
and reader goes through this one class, so the two sides can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Tuple, Union

from shuffle.codec import Codec, get_codec
from shuffle.conf import ShuffleConf
from shuffle.serializer import Serializer

__all__ = ["BlockFormat"]

Buffer = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class BlockFormat:
    """A serializer and a codec (``codec.name == "none"`` for no compression)."""

    serializer: Serializer
    codec: Codec

    @classmethod
    def for_shuffle(cls, conf: ShuffleConf, serializer: Serializer) -> "BlockFormat":
        """Map output blocks: ``spark.shuffle.compress`` with ``spark.io.compression.codec``."""
        return cls(serializer, _codec(conf, "spark.shuffle.compress"))

    @classmethod
    def for_spills(cls, conf: ShuffleConf, serializer: Serializer) -> "BlockFormat":
        """Spill files: ``spark.shuffle.spill.compress`` with the same codec."""
        return cls(serializer, _codec(conf, "spark.shuffle.spill.compress"))

    @property
    def compressed(self) -> bool:
        return self.codec.name != "none"

    def encode(self, records: Iterable[Tuple[Any, Any]]) -> bytes:
        """One block holding ``records`` (possibly empty bytes for no records)."""
        encoder = self.serializer.new_encoder()
        encoder.add_all(records)
        return self.compress(encoder.take())

    def compress(self, raw: Buffer) -> bytes:
        """Compress serializer output into block bytes (empty stays empty)."""
        if not raw:
            return b""
        return self.codec.compress(raw)

    def decode(self, data: Buffer) -> Iterator[Tuple[Any, Any]]:
        """The records of one block, or of any concatenation of blocks, streamed."""
        if not data:
            return iter(())
        return self.serializer.decode(self.codec.decompress(data) if self.compressed else data)


def _codec(conf: ShuffleConf, switch: str) -> Codec:
    if not conf.get_bool(switch):
        return get_codec("none")
    name = conf.get("spark.io.compression.codec")
    block_size = conf.get_bytes("spark.io.compression.lz4.blockSize")
    level = conf.get_int("spark.io.compression.zstd.level")
    assert name is not None and block_size is not None and level is not None  # all have defaults
    return get_codec(name, block_size=block_size, zstd_level=level)
