"""W1 (sum), W3 (partition + count) and W4 (sort) on the columnar path, and on DuckDB and Polars.

Every function takes the benchmark table (``shuffle.bench.data.table``) or its arrays and
returns the workload's summary in the same form as ``shuffle.bench.workloads``
(so the object path's baseline is the oracle for all of them):

- W1: ``(keys, total, digest)`` of ``reduce_by_key(sum)``, digest = sum(key * sum);
- W3: the row count of each of the 64 hash partitions (``HashPartitioner(64)``);
- W4: ``(count, digest, totally ordered)`` of the rows sorted by key.

The columnar runs take a :class:`~shuffle.engine.context.Context` and the
table, whose ``.npy`` files their map tasks memory-map; summaries are
computed where the data is (on the workers). The peers take the same arrays
already in memory (``keys, values``; wrapped without copy as a pyarrow table
or a Polars frame) and run on their own threads (this machine's cores); DuckDB materialises its result
(``CREATE TEMP TABLE ... AS``) and summarises it in SQL, Polars in its
expression engine. Peers are optional (``pip install 'shuffle[columnar-peers]'``).

``python -m shuffle.columnar.bench --records N`` runs all of them and prints
one table with time, peak RSS and the ratio to each peer.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

from shuffle.bench.data import Table

__all__ = ["COLUMNAR", "PEERS", "columnar_w1", "columnar_w3", "columnar_w4",
           "duckdb_w1", "duckdb_w3", "duckdb_w4", "polars_w1", "polars_w3", "polars_w4"]

logger = logging.getLogger(__name__)

INPUT_SLICES = 8
OUTPUT_PARTITIONS = 64
Summary = Tuple[Any, ...]


# ---------------------------------------------------------------- columnar
def _dataset(ctx: Any, table: Table) -> Any:
    keys, values = table.arrays()
    return ctx.from_arrays(keys, values, INPUT_SLICES)


def _sums(batches: Iterator[Tuple[np.ndarray, np.ndarray]]) -> Summary:
    keys = total = digest = 0
    for k, v in batches:
        keys += k.shape[0]
        total += int(v.sum())
        digest += int(np.dot(k.astype(np.int64), v.astype(np.int64)))  # |key * sum| < 2**63 for W1's ranges
    return keys, total, digest


def columnar_w1(ctx: Any, table: Table) -> Summary:
    sums = _dataset(ctx, table).reduce_by_key("sum", OUTPUT_PARTITIONS)
    parts = ctx.run_job(sums, _sums)
    return tuple(sum(column) for column in zip(*parts))


def _rows(batches: Iterator[Tuple[np.ndarray, np.ndarray]]) -> int:
    return sum(k.shape[0] for k, _ in batches)


def columnar_w3(ctx: Any, table: Table) -> Summary:
    moved = _dataset(ctx, table).partition_by(OUTPUT_PARTITIONS)
    return tuple(ctx.run_job(moved, _rows))


def _order(batches: Iterator[Tuple[np.ndarray, np.ndarray]]) -> Summary:
    count = digest = 0
    first = last = None
    ordered = True
    for k, v in batches:
        if not k.shape[0]:
            continue
        ordered = ordered and bool((k[1:] >= k[:-1]).all()) and (last is None or k[0] >= last)
        first = int(k[0]) if first is None else first
        last = int(k[-1])
        count += k.shape[0]
        digest += int(np.dot(k.astype(np.int64), v.astype(np.int64)))
    return count, digest, first, last, ordered


def columnar_w4(ctx: Any, table: Table) -> Summary:
    ordered = _dataset(ctx, table).sort_by_key(num_partitions=OUTPUT_PARTITIONS)
    parts = ctx.run_job(ordered, _order)
    count = digest = 0
    within = True
    previous = None
    for n, d, first, last, inside in parts:
        count += n
        digest += d
        within = within and inside
        if n:
            within = within and (previous is None or first >= previous)
            previous = last
    return count, digest, within


# ---------------------------------------------------------------- DuckDB
def _duck(keys: np.ndarray, values: np.ndarray) -> Tuple[Any, Any]:
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    data = pa.table({"k": keys, "v": values})
    con.register("t", data)
    return con, data


def duckdb_w1(keys: np.ndarray, values: np.ndarray) -> Summary:
    con, _ = _duck(keys, values)
    con.execute("CREATE TEMP TABLE r AS SELECT k, sum(v) AS s FROM t GROUP BY k")
    keys, total, digest = con.execute("SELECT count(*), sum(s), sum(k * s) FROM r").fetchone()
    con.close()
    return int(keys), int(total), int(digest)


def duckdb_w3(keys: np.ndarray, values: np.ndarray) -> Summary:
    con, _ = _duck(keys, values)
    # Materialise the rows partition by partition, as a shuffle does, then count each partition.
    con.execute(f"CREATE TEMP TABLE m AS SELECT k % {OUTPUT_PARTITIONS} AS p, k, v FROM t ORDER BY p")
    counts = dict(con.execute("SELECT p, count(*) FROM m GROUP BY p").fetchall())
    con.close()
    return tuple(int(counts.get(p, 0)) for p in range(OUTPUT_PARTITIONS))


def duckdb_w4(keys: np.ndarray, values: np.ndarray) -> Summary:
    con, _ = _duck(keys, values)
    con.execute("CREATE TEMP TABLE s AS SELECT k, v FROM t ORDER BY k")
    count, digest = con.execute("SELECT count(*), sum(k * v) FROM s").fetchone()
    out_of_order = con.execute(
        "SELECT count(*) FROM (SELECT k, lag(k) OVER (ORDER BY rowid) AS prev FROM s) WHERE k < prev").fetchone()[0]
    con.close()
    return int(count), int(digest), out_of_order == 0


# ---------------------------------------------------------------- Polars
def _polars(keys: np.ndarray, values: np.ndarray) -> Any:
    import polars as pl

    return pl.DataFrame({"k": keys, "v": values})


def polars_w1(keys: np.ndarray, values: np.ndarray) -> Summary:
    import polars as pl

    sums = _polars(keys, values).group_by("k").agg(pl.col("v").sum().alias("s"))
    row = sums.select(pl.len(), pl.col("s").sum(), (pl.col("k") * pl.col("s")).sum()).row(0)
    return int(row[0]), int(row[1]), int(row[2])


def polars_w3(keys: np.ndarray, values: np.ndarray) -> Summary:
    import polars as pl

    df = _polars(keys, values).with_columns((pl.col("k") % OUTPUT_PARTITIONS).alias("p"))
    parts = df.partition_by("p", as_dict=True)
    counts = {int(key[0]): part.height for key, part in parts.items()}
    return tuple(counts.get(p, 0) for p in range(OUTPUT_PARTITIONS))


def polars_w4(keys: np.ndarray, values: np.ndarray) -> Summary:
    import polars as pl

    ordered = _polars(keys, values).sort("k")
    count, digest = ordered.select(pl.len(), (pl.col("k") * pl.col("v")).sum()).row(0)
    return int(count), int(digest), bool(ordered["k"].is_sorted())


COLUMNAR: Dict[str, Callable[[Any, Table], Summary]] = {"W1": columnar_w1, "W3": columnar_w3, "W4": columnar_w4}
PEERS: Dict[str, Dict[str, Callable[[np.ndarray, np.ndarray], Summary]]] = {
    "duckdb": {"W1": duckdb_w1, "W3": duckdb_w3, "W4": duckdb_w4},
    "polars": {"W1": polars_w1, "W3": polars_w3, "W4": polars_w4},
}


def main(argv: List[str] | None = None) -> int:  # pragma: no cover - a measuring script
    """Run every workload on the columnar path and the installed peers; print one table."""
    from pathlib import Path

    from shuffle.bench.data import default_cache_dir, table as make_table
    from shuffle.bench.measure import median, repeat
    from shuffle.engine.context import Context

    parser = argparse.ArgumentParser(prog="python -m shuffle.columnar.bench")
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", help="spark.executor.memory of the columnar run, e.g. 16m")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    table = make_table(args.records, args.cache_dir or default_cache_dir())
    conf = {"spark.executor.memory": args.memory} if args.memory else {}
    results: Dict[str, Dict[str, Tuple[float, float]]] = {}
    summaries: Dict[str, Summary] = {}
    with Context(parallelism=2, conf=conf) as ctx:
        for name, run in COLUMNAR.items():
            runs, summaries[name] = repeat(lambda: run(ctx, table), args.repeat)
            spills = sum(s.write.spill_count for s in ctx.last_job_metrics.stages)
            results.setdefault(name, {})["columnar"] = (median([r.seconds for r in runs]),
                                                        max(r.peak_rss_total for r in runs) / 1e6)
            print(f"{name} columnar: {results[name]['columnar'][0]:.3f}s, spills {spills}", flush=True)
    keys, values = (np.load(path) for path in (table.keys_path, table.values_path))  # in memory, untimed
    for peer, jobs in PEERS.items():
        try:
            __import__(peer)
        except ImportError:
            print(f"{peer} not installed: skipped")
            continue
        for name, job in jobs.items():
            runs, summary = repeat(lambda: job(keys, values), args.repeat)
            if summary != summaries[name]:
                raise SystemExit(f"{name} on {peer}: {summary!r} differs from the columnar {summaries[name]!r}")
            results[name][peer] = (median([r.seconds for r in runs]), max(r.peak_rss_total for r in runs) / 1e6)
    input_mb = 2 * 8 * args.records / 1e6
    print(f"\n{args.records:,} rows, input arrays {input_mb:.0f} MB")
    print("| workload | system | seconds | peak RSS MB | vs DuckDB | vs Polars |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        for system, (seconds, rss) in rows.items():
            ratios = [f"{seconds / rows[p][0]:.2f}x" if p in rows else "-" for p in ("duckdb", "polars")]
            print(f"| {name} | {system} | {seconds:.3f} | {rss:.0f} | {ratios[0]} | {ratios[1]} |")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
