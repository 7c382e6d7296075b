"""Render a :class:`~shuffle.explain.trace.Trace` as one self-contained HTML page.

The page holds the same sections as the text rendering (:mod:`shuffle.explain.text`)
and draws every file the job produced as a byte bar in inline SVG: one box per
partition segment (data file, spill files, bypass partition files), one per
8-byte entry (index and checksum files), each box as wide as its bytes. No
scripts, no external resources, no dependency: standard library only.
"""

from __future__ import annotations

from html import escape
from typing import List, Sequence, Tuple

from shuffle.explain.text import Section, sections
from shuffle.explain.trace import MapTrace, SpillTrace, Trace

__all__ = ["render_html", "byte_bar"]

# Colour of partition p is _PALETTE[p % len(_PALETTE)].
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac")
_GREY = "#d0d0d0"
_WIDTH = 760
_BAR_HEIGHT = 26

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 64em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; line-height: 1.35; }
figure { margin: .4em 0; } figcaption { font-size: 12px; color: #555; }
svg text { font-family: ui-monospace, monospace; font-size: 11px; }
"""

Segment = Tuple[str, int, int, str]  # label, start, end, colour


def _colour(partition: int) -> str:
    return _PALETTE[partition % len(_PALETTE)]


def byte_bar(caption: str, total: int, segments: Sequence[Segment]) -> str:
    """An SVG bar of ``total`` bytes with ``segments`` drawn as labelled boxes, offsets below."""
    scale = (_WIDTH - 20) / max(total, 1)
    parts = [f'<rect x="10" y="4" width="{_WIDTH - 20}" height="{_BAR_HEIGHT}" fill="#fff" stroke="#999"/>']
    ticks = {0, total}
    for label, start, end, colour in segments:
        x, w = 10 + start * scale, max((end - start) * scale, 1.0)
        parts.append(f'<rect x="{x:.1f}" y="4" width="{w:.1f}" height="{_BAR_HEIGHT}" fill="{colour}" '
                     f'stroke="#333" stroke-width="0.5"><title>{escape(label)}: bytes [{start}, {end})</title></rect>')
        if w >= 7 * len(label):
            parts.append(f'<text x="{x + w / 2:.1f}" y="{4 + _BAR_HEIGHT / 2 + 4:.1f}" text-anchor="middle" '
                         f'fill="#fff">{escape(label)}</text>')
        ticks.update((start, end))
    last_x = -100.0
    for tick in sorted(ticks):
        x = 10 + tick * scale
        if x - last_x >= 24 or tick == total:
            parts.append(f'<text x="{x:.1f}" y="{_BAR_HEIGHT + 18}" text-anchor="middle" fill="#555">{tick}</text>')
            last_x = x
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_BAR_HEIGHT + 24}" '
           f'role="img" aria-label="{escape(caption)}">{"".join(parts)}</svg>')
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _data_bar(m: MapTrace) -> str:
    segments = [(f"p{r}", a, b, _colour(r)) for r, (a, b) in enumerate(zip(m.offsets, m.offsets[1:])) if b > a]
    return byte_bar(f"{m.file_names['data']}: {len(m.data)} bytes, one segment per partition", len(m.data), segments)


def _entries_bar(caption: str, count: int, label: str) -> str:
    segments = [(label.format(i), 8 * i, 8 * i + 8, _colour(i) if label.startswith("p") else _GREY)
                for i in range(count)]
    return byte_bar(caption, 8 * count, segments)


def _spill_bar(k: int, spill: SpillTrace) -> str:
    if spill.batch_sizes:
        segments, start = [], 0
        for i, size in enumerate(spill.batch_sizes):
            segments.append((f"batch {i}", start, start + size, _GREY))
            start += size
        caption = f"spill file #{k + 1}: {len(spill.data)} bytes in {len(spill.batch_sizes)} batch(es)"
    else:
        segments = [(f"p{pid}", off, off + n, _colour(pid)) for pid, off, n, _ in spill.segments]
        caption = f"spill file #{k + 1}: {len(spill.data)} bytes, one block per partition"
    return byte_bar(caption, len(spill.data), segments)


def _figures(trace: Trace, section: Section) -> List[str]:
    """The byte bars that belong with ``section``."""
    if section.map_id is None:
        return []
    m = trace.maps[section.map_id]
    if section.kind == "files":
        figures = [_data_bar(m),
                   _entries_bar(f"{m.file_names['index']}: {trace.num_partitions + 1} offsets of 8 bytes",
                                trace.num_partitions + 1, "off[{}]")]
        if m.checksum_file:
            figures.append(_entries_bar(f"{m.file_names['checksum']}: one 8-byte checksum per partition",
                                        trace.num_partitions, "p{}"))
        return figures
    if section.kind == "spill" and section.index is not None:
        return [_spill_bar(section.index, m.spills[section.index])]
    if section.kind == "partition_files":
        return [byte_bar(f"partition {f.partition}'s temp file: {len(f.data)} bytes", len(f.data),
                         [(f"p{f.partition}", 0, len(f.data), _colour(f.partition))])
                for f in m.partition_files]
    if section.kind == "sort" and section.index is not None:
        sort = m.sorts[section.index]
        figures = []
        for page_no, page in enumerate(sort.pages):
            segments = [(f"p{r.partition}", r.offset, r.offset + 4 + r.length, _colour(r.partition))
                        for r in sort.before if r.page == page_no]
            figures.append(byte_bar(f"page {page_no}: {len(page)} bytes used, [length][record] per record, "
                                    "coloured by partition", len(page), segments))
        return figures
    return []


def render_html(trace: Trace) -> str:
    """The whole explanation as one HTML document (a string)."""
    body = []
    for i, section in enumerate(sections(trace)):
        heading = "h1" if i == 0 else "h2"
        body.append(f"<section><{heading}>{escape(section.title)}</{heading}>")
        body.extend(_figures(trace, section))
        body.append(f"<pre>{escape(chr(10).join(section.lines))}</pre></section>")
    title = f"shuffle explain: {trace.mode} writer"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
