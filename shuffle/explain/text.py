"""Render a :class:`~shuffle.explain.trace.Trace` as text, step by step.

Only presentation lives here: every byte and number shown comes from the
trace, i.e. from the real writers' files and observation points. Where the
text states a relation between two things (a checksum matches its segment, a
partition of the data file is the concatenation of spill blocks), it checks
that relation on the recorded bytes and says "MISMATCH" if it does not hold.
Output is deterministic: no temp names, times or paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from shuffle.explain.trace import BufferedRecord, MapTrace, ReduceTrace, SortTrace, SpillTrace, Trace

__all__ = ["Section", "sections", "render_text", "hexdump"]

_WHY = {
    "bypass": "one temp file per reduce partition, records appended as they come, files concatenated",
    "serialized": "records serialized at once into pages; 8-byte packed pointers radix-sorted by partition; "
                  "spills merged by byte concatenation",
    "sort": "records combined by key in memory, spilled as runs sorted by (partition, key), runs merged",
}


@dataclass
class Section:
    """A titled block of lines, and what it is about (for the HTML page's figures).

    ``kind`` is one of job, input, partition_files, sort, spill, merge, files,
    reduce; ``index`` numbers sorts and spills of one map from 0.
    """

    title: str
    kind: str
    lines: List[str] = field(default_factory=list)
    map_id: Optional[int] = None
    partition: Optional[int] = None
    index: Optional[int] = None


def hexdump(data: bytes, base: int = 0, indent: str = "    ") -> List[str]:
    """16 bytes a line: offset (from ``base``), hex, and printable ASCII."""
    if not data:
        return [f"{indent}(0 bytes)"]
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start:start + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{indent}{base + start:04x}: {chunk.hex(' '):<47}  |{text}|")
    return lines


def _records(records: Sequence[Any]) -> str:
    return " ".join(f"({k!r}, {v!r})" for k, v in records) if records else "(none)"


def _ok(good: bool) -> str:
    return "ok" if good else "MISMATCH"


def sections(trace: Trace) -> List[Section]:
    """The whole explanation: job, then each map, then each reduce partition."""
    out = [_job(trace)]
    for m in trace.maps:
        out.extend(_map(trace, m))
    for r in trace.reduces:
        out.append(_reduce(trace, r))
    return out


def render_text(trace: Trace) -> str:
    parts = []
    for section in sections(trace):
        parts.append(f"== {section.title} ==")
        parts.extend(section.lines)
        parts.append("")
    return "\n".join(parts)


# ------------------------------------------------------------------ the job


def _job(t: Trace) -> Section:
    s = Section(f"shuffle explain: {t.mode} writer", "job")
    s.lines += [
        f"job: reduce_by_key(add) of {t.num_records} records (seed {t.seed}) in {t.num_maps} map task(s) "
        f"into {t.num_partitions} reduce partitions, output sorted by key",
        f"partitioner: HashPartitioner({t.num_partitions}) = portable_hash(key) % {t.num_partitions}; "
        f"serializer: msgpack (relocatable); codec: {t.codec}; checksums: {t.checksum_algorithm or 'off'}",
        f"writer: {t.mode} ({t.reason}); SortShuffleManager would choose {t.natural_mode} "
        f"here ({t.natural_reason})",
        f"  {t.mode}: {_WHY[t.mode]}",
        f"map-side combine: {'yes' if t.map_side_combine else 'no (the reader combines)'}; spills forced "
        f"after {t.spill_after} records (spark.shuffle.spill.numElementsForceSpillThreshold)",
        "configuration:",
    ]
    s.lines += [f"  {k} = {v}" for k, v in sorted(t.conf.items())]
    return s


# ------------------------------------------------------------------ map side


def _map(t: Trace, m: MapTrace) -> List[Section]:
    out = []
    s = Section(f"map {m.map_id}: input records and their partitions", "input", map_id=m.map_id)
    for i, ((key, value), pid) in enumerate(zip(m.records, m.partitions)):
        s.lines.append(f"  record {i:>3}: ({key!r}, {value!r}) -> partition {pid}")
    if not m.records:
        s.lines.append("  (no records)")
    out.append(s)
    if t.mode == "bypass":
        out.append(_bypass_files(m))
    if t.mode == "serialized":
        for k, sort in enumerate(m.sorts):
            out.append(_sort_section(m, k, sort, spilled=k < len(m.spills)))
    for k, spill in enumerate(m.spills):
        out.append(_spill_section(t, m, k, spill))
    out.append(_merge_section(t, m))
    out.append(_files_section(t, m))
    return out


def _bypass_files(m: MapTrace) -> Section:
    s = Section(f"map {m.map_id}: one temp file per partition (bypass)", "partition_files", map_id=m.map_id)
    s.lines.append("  each record was appended to its partition's encoder; a partition's file is created at "
                   "its first flush, so empty partitions have none")
    for f in m.partition_files:
        s.lines.append(f"  partition {f.partition}: temp_shuffle_<uuid>, {len(f.data)} bytes")
        s.lines += hexdump(f.data)
    return s


def _pointer_row(r: BufferedRecord) -> str:
    return (f"  {r.pointer:016x}  partition {r.partition:>2}  page {r.page}  offset {r.offset:>4}  "
            f"{r.length:>3} bytes  {r.data.hex(' ')}  = ({r.record[0]!r}, {r.record[1]!r})")


def _sort_section(m: MapTrace, k: int, sort: SortTrace, spilled: bool) -> Section:
    s = Section(f"map {m.map_id}: record buffer, sort #{k + 1}", "sort", map_id=m.map_id, index=k)
    where = "a spill file" if spilled else "the data file directly (nothing was spilled)"
    s.lines.append(f"  {len(sort.before)} records in {len(sort.pages)} page(s); each record is "
                   f"[4-byte little-endian length][msgpack bytes]; sorted now, written to {where}")
    for i, page in enumerate(sort.pages):
        s.lines.append(f"  page {i} ({len(page)} bytes used):")
        s.lines += hexdump(page)
    s.lines.append("  packed pointers in insertion order [partition:24 | page:13 | offset:27]:")
    s.lines += [_pointer_row(r) for r in sort.before]
    s.lines.append("  after the radix sort by partition (stable: insertion order within a partition):")
    s.lines += [_pointer_row(r) for r in sort.after]
    ordered = [r.partition for r in sort.after]
    s.lines.append(f"  partitions after the sort: {ordered} ({_ok(ordered == sorted(ordered))})")
    return s


def _spill_section(t: Trace, m: MapTrace, k: int, spill: SpillTrace) -> Section:
    s = Section(f"map {m.map_id}: spill file #{k + 1}", "spill", map_id=m.map_id, index=k)
    s.lines.append(f"  temp_shuffle_<uuid>, {len(spill.data)} bytes")
    if spill.batch_sizes:  # the sort writer's format: batches, record counts per partition
        s.lines.append(f"  batches of at most spark.shuffle.spill.batchSize records, sizes {spill.batch_sizes}; "
                       "partition ids are not stored: kept in memory as record counts")
        for pid, _, _, records in spill.segments:
            s.lines.append(f"  partition {pid}: {len(records)} record(s) {_records(records)}")
        s.lines += hexdump(spill.data)
    else:  # the serialized writer's format: one block per non-empty partition
        s.lines.append("  one block per non-empty partition, in partition order; (partition, offset, length) "
                       "kept in memory")
        for pid, off, n, records in spill.segments:
            s.lines.append(f"  partition {pid}: bytes [{off}, {off + n}) = {n} bytes: {_records(records)}")
            s.lines += hexdump(spill.data[off:off + n], base=off)
    return s


def _merge_section(t: Trace, m: MapTrace) -> Section:
    s = Section(f"map {m.map_id}: how the data file was assembled", "merge", map_id=m.map_id)
    n = t.num_partitions
    if t.mode == "bypass":
        files = {f.partition: f.data for f in m.partition_files}
        for r in range(n):
            data = files.get(r, b"")
            s.lines.append(f"  partition {r}: its temp file, {len(data)} bytes, copied by the kernel "
                           f"({_ok(data == m.segment(r))})")
    elif t.mode == "serialized" and m.spills:
        s.lines.append("  fast merge: for each partition, its block of each spill in spill order, "
                       "concatenated byte for byte (copy_file_range), never decoded")
        for r in range(n):
            pieces, joined = [], b""
            for k, spill in enumerate(m.spills):
                for pid, off, length, _ in spill.segments:
                    if pid == r:
                        pieces.append(f"spill #{k + 1}[{off}:{off + length}]")
                        joined += spill.data[off:off + length]
            s.lines.append(f"  partition {r} = {' + '.join(pieces) or '(empty)'} "
                           f"({_ok(joined == m.segment(r))})")
    elif t.mode == "serialized":
        s.lines.append("  nothing spilled: each partition's records went from the pages into the data file")
    else:
        runs = f"{len(m.spills)} spill file(s) and the in-memory run" if m.spills else "the in-memory run"
        how = ("combining equal keys (merge_combiners) in key order" if t.map_side_combine
               else "by partition")
        s.lines.append(f"  merged {runs} partition by partition, {how}; each partition encoded into "
                       "the data file")
    return s


def _files_section(t: Trace, m: MapTrace) -> Section:
    s = Section(f"map {m.map_id}: committed files", "files", map_id=m.map_id)
    names = m.file_names
    s.lines.append(f"  {names['data']}: {len(m.data)} bytes, partitions concatenated in id order")
    for r in range(t.num_partitions):
        a, b = m.offsets[r], m.offsets[r + 1]
        s.lines.append(f"  partition {r}: bytes [{a}, {b}) = {b - a} bytes: {_records(m.segments[r])}")
        s.lines += hexdump(m.data[a:b], base=a)
    s.lines.append(f"  {names['index']}: {len(m.index)} bytes = {t.num_partitions + 1} big-endian int64 "
                   f"offsets {m.offsets}")
    s.lines += hexdump(m.index)
    if m.checksum_file:
        s.lines.append(f"  {names['checksum']}: {len(m.checksum_file)} bytes = {t.num_partitions} big-endian "
                       f"int64 {t.checksum_algorithm} checksums, one per partition segment")
        s.lines += hexdump(m.checksum_file)
        for r, stored in enumerate(m.checksums):
            again = m.recomputed[r] if r < len(m.recomputed) else None
            s.lines.append(f"  partition {r}: stored {stored} (0x{stored:08x}); {t.checksum_algorithm} of the "
                           f"segment = {again} ({_ok(stored == again)})")
    s.lines.append(f"  MapStatus: bytes per partition {m.lengths} ({_ok(m.lengths == _lengths(m.offsets))} "
                   "against the index)")
    s.lines.append("  metrics: " + ", ".join(f"{k} {v}" for k, v in m.metrics.items()))
    return s


def _lengths(offsets: List[int]) -> List[int]:
    return [b - a for a, b in zip(offsets, offsets[1:])]


# ------------------------------------------------------------------ reduce side


def _reduce(t: Trace, r: ReduceTrace) -> Section:
    s = Section(f"reduce partition {r.partition}: fetch, decode, combine, sort", "reduce", partition=r.partition)
    blocks = [entry for _, entries in r.plan for entry in entries]
    s.lines.append(f"  fetch plan from the MapOutputTracker: {len(blocks)} non-empty block(s), "
                   f"{sum(size for _, size, _ in blocks)} bytes (empty blocks are never fetched)")
    for location, entries in r.plan:
        for name, size, index in entries:
            s.lines.append(f"    {name}: {size} bytes from map {index} on executor {location}")
    s.lines.append(f"  in-process reads (blocks on this executor; contiguous reduce ids of one map are one "
                   f"pread): {len(r.ranges)}")
    for map_id, start, end, size in r.ranges:
        s.lines.append(f"    map {map_id} reduce [{start}, {end}): {size} bytes")
    s.lines.append(f"  remote requests (fetch processes, bounded by spark.reducer.maxSizeInFlight): "
                   f"{len(r.requests) or 'none, every block is local'}")
    for i, request in enumerate(r.requests):
        s.lines.append(f"    request {i}: " + ", ".join(f"map {m} reduce [{a}, {b}) {n} bytes"
                                                     for m, a, b, n in request))
    s.lines.append("  blocks the fetcher handed out (checksum-verified):")
    for f in r.fetched:
        s.lines.append(f"    {f.block}: {len(f.data)} bytes ({'local' if f.local else 'remote'}): "
                       f"{_records(f.records)}")
        s.lines += hexdump(f.data, indent="      ")
    combined = "merge_combiners (maps combined already)" if t.map_side_combine else "create_combiner/merge_value"
    s.lines.append(f"  aggregated with {combined}, sorted by key: {_records(r.output)}")
    s.lines.append("  metrics: " + ", ".join(f"{k} {v}" for k, v in r.metrics.items() if v))
    return s
