"""Reduce-side read throughput against plain reads of the same files, in one run.

Writes 4 maps x 64 partitions holding ``--records`` (int, int) records in all
(fixed seed), then times, over the same committed files:

* ``reader``: every partition through ``SortShuffleManager.get_reader`` (fetch
  by index offsets, checksum verification, decode), counting records;
* ``plain bytes``: each ``.data`` file read sequentially, nothing decoded;
* ``plain decode``: each ``.data`` file read and decoded by the same block
  format in one go, without the reader (no fetch plan, no checksums).

    python benches/read_throughput.py --records 10000000 --json read.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--maps", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    from shuffle import HashPartitioner, ShuffleConf, ShuffleDependency, SortShuffleManager
    from shuffle.blocks import BlockFormat

    conf = ShuffleConf({"spark.shuffle.sync": "false"})
    rng = np.random.default_rng(20240601)
    per_map = args.records // args.maps
    with tempfile.TemporaryDirectory() as tmp, SortShuffleManager(conf, local_dir=tmp) as manager:
        dep = ShuffleDependency(0, args.maps, HashPartitioner(args.partitions))
        handle = manager.register_shuffle(dep)
        for map_id in range(args.maps):
            keys = rng.integers(0, 1_000_000, size=per_map).tolist()
            values = rng.integers(0, 1000, size=per_map).tolist()
            manager.get_writer(handle, map_id).write(zip(keys, values))
        data_files = [manager.resolver.data_file(0, m) for m in range(args.maps)]
        total_bytes = sum(p.stat().st_size for p in data_files)
        fmt = BlockFormat.for_shuffle(conf, dep.serializer)

        def via_reader() -> int:
            reader = manager.get_reader(handle, 0, args.partitions)
            count = sum(1 for _ in reader.read())
            return count

        def plain_bytes() -> int:
            size = 0
            for path in data_files:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        size += len(chunk)
            return size

        def plain_decode() -> int:
            count = 0
            for path in data_files:
                count += sum(1 for _ in fmt.decode(path.read_bytes()))
            return count

        rows = {}
        for name, run in (("reader", via_reader), ("plain bytes", plain_bytes), ("plain decode", plain_decode)):
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = run()
                times.append(time.perf_counter() - started)
            seconds = float(np.median(times))
            rows[name] = {"seconds": round(seconds, 3), "MB_per_s": round(total_bytes / seconds / 1e6, 1),
                          "records_per_s": int(args.records / seconds), "result": result}
            print(f"{name:>13}: {seconds:6.3f} s  {total_bytes / seconds / 1e6:8.1f} MB/s  "
                  f"{args.records / seconds:12,.0f} records/s", flush=True)
        ratio = rows["reader"]["seconds"] / rows["plain decode"]["seconds"]
        print(f"reader / plain decode: {ratio:.2f}x; {total_bytes / 1e6:.1f} MB in {args.maps} data files")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"records": args.records, "bytes": total_bytes, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
