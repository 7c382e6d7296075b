"""Write the data-flow diagrams of docs/ as plain SVG text (no dependency).

Run ``python docs/make_diagrams.py`` after changing a diagram; it rewrites
``docs/img/*.svg``, which are checked in. Each diagram is a list of boxes (a
grid position and lines of text) and arrows between boxes, so it stays easy to
edit; the layout is a fixed grid of columns and rows.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

OUT = Path(__file__).resolve().parent / "img"

COL_W, ROW_H, BOX_W, BOX_H, MARGIN = 210, 92, 180, 64, 20
COLOURS = {"input": "#e8eef7", "memory": "#fdf0d5", "disk": "#e3f1df", "output": "#dfe9e2", "read": "#f3e1e6"}

Box = Tuple[str, int, int, str, Sequence[str]]  # id, column, row, kind, lines
Arrow = Tuple[str, str, str]  # from id, to id, label


def _centre(col: int, row: int) -> Tuple[float, float]:
    return MARGIN + col * COL_W + BOX_W / 2, MARGIN + 30 + row * ROW_H + BOX_H / 2


def _edge(a: Tuple[float, float], b: Tuple[float, float]) -> Tuple[float, float, float, float]:
    """Start and end of an arrow from box centre ``a`` to box centre ``b``, on the boxes' borders."""
    (x1, y1), (x2, y2) = a, b
    dx, dy = x2 - x1, y2 - y1
    def clip(dx: float, dy: float) -> Tuple[float, float]:
        tx = (BOX_W / 2) / abs(dx) if dx else float("inf")
        ty = (BOX_H / 2) / abs(dy) if dy else float("inf")
        t = min(tx, ty)
        return dx * t, dy * t
    sx, sy = clip(dx, dy)
    return x1 + sx, y1 + sy, x2 - sx, y2 - sy


def svg(title: str, boxes: Sequence[Box], arrows: Sequence[Arrow]) -> str:
    cols = max(b[1] for b in boxes) + 1
    rows = max(b[2] for b in boxes) + 1
    width, height = 2 * MARGIN + (cols - 1) * COL_W + BOX_W, 2 * MARGIN + 30 + (rows - 1) * ROW_H + BOX_H + 20
    where: Dict[str, Tuple[float, float]] = {b[0]: _centre(b[1], b[2]) for b in boxes}
    out: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#444"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 8}" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for src, dst, label in arrows:
        x1, y1, x2, y2 = _edge(where[src], where[dst])
        out.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="#444" '
                   'stroke-width="1.4" marker-end="url(#arrow)"/>')
        if label:
            out.append(f'<text x="{(x1 + x2) / 2 + 4:.0f}" y="{(y1 + y2) / 2 - 4:.0f}" font-size="10" '
                       f'fill="#333">{escape(label)}</text>')
    for ident, col, row, kind, lines in boxes:
        cx, cy = where[ident]
        x, y = cx - BOX_W / 2, cy - BOX_H / 2
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="6" '
                   f'fill="{COLOURS[kind]}" stroke="#555"/>')
        top = cy - (len(lines) - 1) * 7.5
        for i, line in enumerate(lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(f'<text x="{cx:.0f}" y="{top + i * 15 + 4:.0f}" text-anchor="middle"{weight}>'
                       f'{escape(line)}</text>')
    legend_y = height - 12
    for i, (kind, colour) in enumerate(COLOURS.items()):
        x = MARGIN + i * 110
        out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}" stroke="#555"/>')
        out.append(f'<text x="{x + 17}" y="{legend_y}" font-size="11">{kind}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


DIAGRAMS: Dict[str, Tuple[str, List[Box], List[Arrow]]] = {
    "bypass": ("bypass writer (BypassMergeSortShuffleWriter)", [
        ("in", 0, 0, "input", ["records (k, v)", "in chunks of 4096"]),
        ("pid", 1, 0, "memory", ["partition_ids(keys)", "one kernel call a chunk"]),
        ("enc", 2, 0, "memory", ["one encoder per", "partition (msgpack)"]),
        ("tmp", 2, 1, "disk", ["temp_shuffle_<uuid>", "one file per partition", "flushed at file.buffer"]),
        ("cat", 1, 1, "disk", ["MapOutputWriter", "copy_file_range", "in partition order"]),
        ("commit", 0, 1, "output", ["resolver commit", ".data .index .checksum"]),
        ("status", 0, 2, "output", ["MapStatus", "-> MapOutputTracker"]),
    ], [("in", "pid", ""), ("pid", "enc", ""), ("enc", "tmp", "compress + checksum"),
        ("tmp", "cat", ""), ("cat", "commit", ""), ("commit", "status", "")]),
    "serialized": ("serialized writer (UnsafeShuffleWriter)", [
        ("in", 0, 0, "input", ["records (k, v)", "in chunks"]),
        ("ser", 1, 0, "memory", ["dumps_records", "+ partition_ids"]),
        ("pages", 2, 0, "memory", ["RecordBuffer pages", "[len:4][bytes] ..."]),
        ("ptrs", 3, 0, "memory", ["packed pointers", "part:24 page:13 off:27"]),
        ("sort", 3, 1, "memory", ["radix sort", "by partition (stable)"]),
        ("spill", 2, 1, "disk", ["spill file", "one block per partition", "(pid, offset, length)"]),
        ("merge", 1, 1, "disk", ["fast merge: per partition", "its block of each spill", "byte copy"]),
        ("commit", 0, 1, "output", ["resolver commit", ".data .index .checksum"]),
        ("status", 0, 2, "output", ["MapStatus", "-> MapOutputTracker"]),
    ], [("in", "ser", ""), ("ser", "pages", "insert_batch"), ("pages", "ptrs", ""), ("ptrs", "sort", "spill / end"),
        ("sort", "spill", "compress + checksum"), ("spill", "merge", ""), ("merge", "commit", ""),
        ("commit", "status", "")]),
    "sort": ("sort writer (SortShuffleWriter + ExternalSorter)", [
        ("in", 0, 0, "input", ["records (k, v)", "in chunks"]),
        ("map", 1, 0, "memory", ["dict key -> combiner", "(or a list buffer)"]),
        ("est", 2, 0, "memory", ["SizeTracker estimate", "SpillPolicy"]),
        ("run", 3, 0, "memory", ["sorted run", "by (partition, key)"]),
        ("spill", 3, 1, "disk", ["spill file", "batches of batchSize", "counts per partition"]),
        ("merge", 2, 1, "memory", ["merge per partition", "spills + last run", "merge_combiners"]),
        ("commit", 1, 1, "output", ["encode per partition", "resolver commit"]),
        ("status", 0, 1, "output", ["MapStatus", "-> MapOutputTracker"]),
    ], [("in", "map", "combine"), ("map", "est", ""), ("est", "run", "spill?"), ("run", "spill", ""),
        ("spill", "merge", "SpillReader"), ("run", "merge", "last run"), ("merge", "commit", ""),
        ("commit", "status", "")]),
    "architecture": ("shuffle: modules and data flow", [
        ("mgr", 0, 0, "input", ["SortShuffleManager", "manager.py"]),
        ("w", 1, 0, "memory", ["ShuffleWriter", "write/ (3 kinds)"]),
        ("res", 2, 0, "disk", ["IndexShuffleBlockResolver", "resolver.py"]),
        ("mot", 3, 0, "output", ["MapOutputTracker", "map_output.py"]),
        ("rd", 3, 1, "read", ["ShuffleReader", "read/reader.py"]),
        ("fet", 2, 1, "read", ["ShuffleBlockFetcher", "read/fetcher.py"]),
        ("ext", 1, 1, "memory", ["ExternalSorter / GroupBy", "aggregate, sort"]),
        ("mem", 0, 1, "memory", ["ExecutionMemoryPool", "memory.py"]),
    ], [("mgr", "w", "get_writer"), ("w", "res", "commit"), ("res", "mot", "MapStatus"),
        ("mot", "rd", "fetch plan"), ("rd", "fet", ""), ("fet", "res", "read ranges"),
        ("fet", "ext", "blocks"), ("ext", "mem", "acquire / spill")]),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (title, boxes, arrows) in DIAGRAMS.items():
        (OUT / f"{name}.svg").write_text(svg(title, boxes, arrows), encoding="utf-8")
        print(f"wrote {OUT / (name + '.svg')}")


if __name__ == "__main__":
    main()
