"""Spills and peak memory of one map task per writer under a fixed shuffle memory budget.

Each mode runs in a fresh interpreter so its peak RSS is its own. Records are
generated lazily ((int, int), fixed seed), so the input itself holds no
memory; "overhead" is the peak RSS minus the RSS just before writing.

    python benches/map_side_memory.py --records 5000000 --budget 64m --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

MODES = ["bypass", "serialized", "sort", "sort+combine"]


def run_one(mode: str, records: int, budget: str, partitions: int) -> dict:
    import operator

    import numpy as np
    import psutil

    from shuffle import Aggregator, HashPartitioner, ShuffleDependency, SortShuffleManager

    conf = {
        "spark.executor.memory": budget,
        "spark.shuffle.memoryFraction": "1.0",   # the whole budget is the shuffle pool
        "spark.shuffle.sync": "false",
        "shuffle.writer.force": mode.split("+")[0],
    }
    rng = np.random.default_rng(20240601)
    keys = rng.integers(0, 1_000_000, size=records).tolist()
    values = rng.integers(0, 1000, size=records).tolist()
    combine = mode.endswith("+combine")
    aggregator = Aggregator.from_reduce(operator.add) if combine else None
    with tempfile.TemporaryDirectory() as tmp, SortShuffleManager(conf, local_dir=tmp) as manager:
        dep = ShuffleDependency(0, 1, HashPartitioner(partitions), aggregator=aggregator, map_side_combine=combine)
        handle = manager.register_shuffle(dep)
        writer = manager.get_writer(handle, 0)
        before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        status = writer.write(zip(keys, values))
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    m = writer.metrics
    return {
        "mode": mode, "records": records, "budget": budget, "partitions": partitions,
        "seconds": round(seconds, 2), "records_per_s": int(records / seconds),
        "bytes_written": sum(status.partition_lengths), "spill_count": m.spill_count,
        "memory_bytes_spilled": m.memory_bytes_spilled, "disk_bytes_spilled": m.disk_bytes_spilled,
        "rss_before_write": before, "peak_rss": peak, "overhead": peak - before,
    }


def machine() -> dict:
    import msgpack
    import numpy

    import shuffle

    return {"cores": os.cpu_count(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "python": platform.python_version(), "platform": platform.platform(),
            "shuffle": shuffle.__version__, "numpy": numpy.__version__, "msgpack": ".".join(map(str, msgpack.version))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--budget", default="64m")
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.records, args.budget, args.partitions)))
        return
    rows = []
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--records", str(args.records),
                              "--budget", args.budget, "--partitions", str(args.partitions)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['mode']:>13}: {r['seconds']:6.2f} s  {r['records_per_s']:>9,} rec/s  spills {r['spill_count']:>3}  "
              f"spilled {r['memory_bytes_spilled'] / 2**20:7.1f} MiB  peak RSS {r['peak_rss'] / 2**20:6.1f} MiB  "
              f"(+{r['overhead'] / 2**20:.1f} MiB while writing)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
