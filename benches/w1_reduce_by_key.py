"""W1: ``reduce_by_key(add)`` over 10M (int, int) records, against a single-process dict, in one run.

Keys uniform over [0, 1,000,000), values over [0, 1000), from
``numpy.random.default_rng(20240601)`` drawing keys then values; 8 input
partitions, 64 output partitions. Each map task draws the whole sequence and
takes its slice, so no data travels from the driver. The result is checked
(number of keys and total) before its time counts.

    python benches/w1_reduce_by_key.py --records 10000000 --parallelism 2
"""

from __future__ import annotations

import argparse
import operator
import time

import numpy as np

SEED = 20240601


def draw(records: int) -> tuple:
    rng = np.random.default_rng(SEED)
    return rng.integers(0, 1_000_000, size=records), rng.integers(0, 1000, size=records)


def input_slice(records: int, slices: int):
    def run(index: int, _ignored):
        keys, values = draw(records)
        lo, hi = index * records // slices, (index + 1) * records // slices
        return zip(keys[lo:hi].tolist(), values[lo:hi].tolist())
    return run


def baseline(records: int) -> tuple:
    keys, values = draw(records)
    started = time.perf_counter()
    totals: dict = {}
    get = totals.get
    for k, v in zip(keys.tolist(), values.tolist()):
        totals[k] = get(k, 0) + v
    return time.perf_counter() - started, len(totals), sum(totals.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--mode", default="auto")
    args = parser.parse_args()

    from shuffle import Context

    conf = {"spark.shuffle.sync": "false"}
    if args.mode != "auto":
        conf["shuffle.writer.force"] = args.mode
    keys, values = draw(args.records)
    expected_keys, expected_total = len(np.unique(keys)), int(values.sum())
    with Context(parallelism=args.parallelism, conf=conf) as ctx:
        started = time.perf_counter()
        ds = ctx.parallelize(range(8), 8).map_partitions_with_index(input_slice(args.records, 8))
        counts = ds.reduce_by_key(operator.add, 64)
        result = counts.map_partitions(_summarise).collect()
        elapsed = time.perf_counter() - started
        print(ctx.last_job_metrics.table())
    n_keys, total = sum(r[0] for r in result), sum(r[1] for r in result)
    assert (n_keys, total) == (expected_keys, expected_total), (n_keys, total, expected_keys, expected_total)
    base_s, base_keys, base_total = baseline(args.records)
    assert (base_keys, base_total) == (expected_keys, expected_total)
    print(f"W1 reduce_by_key {args.records:,} records, parallelism {args.parallelism}: {elapsed:.2f} s; "
          f"single-process dict: {base_s:.2f} s; ratio {elapsed / base_s:.2f}x")


def _summarise(it):
    n = total = 0
    for _, v in it:
        n += 1
        total += v
    return [(n, total)]


if __name__ == "__main__":
    main()
