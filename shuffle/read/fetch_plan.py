"""Turning a reducer's fetch plan into block ranges and fetch requests.

Owns the shape of the work, not its execution: which blocks are read in the
reducer's process and which by fetch processes, how contiguous reduce ids of
one map merge into one range, and how ranges group into requests of a target
size and block count (Spark's ``createFetchRequests``). It never reads a file
and never sends anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from shuffle.errors import FetchFailedError
from shuffle.map_output import BlockManagerId, ShuffleBlockId

__all__ = ["Plan", "BlockRange", "FetchRequest", "SplitPlan", "group_requests", "split_plan"]

Plan = Sequence[Tuple[BlockManagerId, Sequence[Tuple[ShuffleBlockId, int, int]]]]

_UNLIMITED = 2**62


@dataclass
class BlockRange:
    """Blocks of one map with contiguous reduce ids, as ``(reduce id, planned size)``."""

    map_id: int
    blocks: List[Tuple[int, int]]
    refetched: bool = False  # already fetched a second time because it arrived corrupt

    @property
    def start(self) -> int:
        return self.blocks[0][0]

    @property
    def end(self) -> int:
        return self.blocks[-1][0] + 1

    @property
    def size(self) -> int:
        return sum(size for _, size in self.blocks)


@dataclass
class FetchRequest:
    """Ranges of one address fetched together; ``attempt`` counts IO retries spent."""

    address: BlockManagerId
    ranges: List[BlockRange]
    attempt: int = 0
    not_before: float = 0.0  # monotonic time before which a retry must not be sent

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    @property
    def num_blocks(self) -> int:
        return sum(len(r.blocks) for r in self.ranges)


@dataclass
class SplitPlan:
    """In-process ranges (with their address) and remote requests (in random order)."""

    local: List[Tuple[BlockManagerId, BlockRange]] = field(default_factory=list)
    remote: List[FetchRequest] = field(default_factory=list)
    total_blocks: int = 0


def group_requests(
    address: BlockManagerId, blocks: Sequence[Tuple[ShuffleBlockId, int]], target: int, max_blocks: int
) -> List[FetchRequest]:
    """Requests of ``blocks`` (in plan order), each cut once it reaches ``target`` bytes or ``max_blocks`` blocks."""
    requests: List[FetchRequest] = []
    ranges: List[BlockRange] = []
    size = num = 0
    for block, block_size in blocks:
        last = ranges[-1] if ranges else None
        if last is not None and last.map_id == block.map_id and last.end == block.reduce_id:
            last.blocks.append((block.reduce_id, block_size))
        else:
            ranges.append(BlockRange(block.map_id, [(block.reduce_id, block_size)]))
        size += block_size
        num += 1
        if size >= target or num >= max_blocks:
            requests.append(FetchRequest(address, ranges))
            ranges, size, num = [], 0, 0
    if ranges:
        requests.append(FetchRequest(address, ranges))
    return requests


def split_plan(
    shuffle_id: int,
    plan: Plan,
    local: BlockManagerId,
    read_host_local: bool,
    target: int,
    max_blocks_per_request: int,
) -> SplitPlan:
    """Split ``plan`` by where each block is read; FetchFailedError for a planned size <= 0.

    Blocks of ``local``'s executor, and of its host when ``read_host_local``,
    are read in-process: no request limits apply there, but their ranges stay
    ``target``-sized to bound the memory one read takes.
    """
    split = SplitPlan()
    for address, entries in plan:
        blocks = []
        for block, size, _map_index in entries:
            if size <= 0:
                raise FetchFailedError(
                    shuffle_id, block.map_id, block.reduce_id, address,
                    f"the plan gives block {block} {size} bytes; empty blocks must never be fetched",
                )
            blocks.append((block, size))
        split.total_blocks += len(blocks)
        if address.executor_id == local.executor_id or (read_host_local and address.host == local.host):
            for request in group_requests(address, blocks, target, _UNLIMITED):
                split.local.extend((address, r) for r in request.ranges)
        else:
            split.remote.extend(group_requests(address, blocks, target, max_blocks_per_request))
    # Spark sends requests in random order so that many reducers do not all start at the same address.
    random.shuffle(split.remote)
    return split
