"""Which block codec to use by default: write and read back the same shuffle with each.

One map task writes ``--records`` (int, int) records (fixed seed) into 64
partitions with the bypass writer, then one reader reads every partition back;
medians of ``--repeat`` runs, per codec, all in one run so the ratios hold.

    python benches/codec_choice.py --records 2000000 --json codecs.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

CODECS = ["none", "lz4", "zstd", "zlib"]


def run(codec: str, keys: list, values: list, partitions: int) -> dict:
    from shuffle import HashPartitioner, ShuffleDependency, SortShuffleManager

    conf = {"spark.shuffle.sync": "false", "spark.io.compression.codec": codec}
    with tempfile.TemporaryDirectory() as tmp, SortShuffleManager(conf, local_dir=tmp) as manager:
        handle = manager.register_shuffle(ShuffleDependency(0, 1, HashPartitioner(partitions)))
        started = time.perf_counter()
        status = manager.get_writer(handle, 0).write(zip(keys, values))
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        count = sum(1 for _ in manager.get_reader(handle, 0, partitions).read())
        read_s = time.perf_counter() - started
    assert count == len(keys)
    return {"write_s": write_s, "read_s": read_s, "bytes": sum(status.partition_lengths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(20240601)
    keys = rng.integers(0, 1_000_000, size=args.records).tolist()
    values = rng.integers(0, 1000, size=args.records).tolist()
    results = {}
    for _ in range(args.repeat):
        for codec in CODECS:  # interleaved, so drift hits every codec alike
            results.setdefault(codec, []).append(run(codec, keys, values, args.partitions))
    summary = {}
    base = None
    for codec in CODECS:
        runs = results[codec]
        row = {k: float(np.median([r[k] for r in runs])) for k in ("write_s", "read_s")}
        row["bytes"] = runs[0]["bytes"]
        total = row["write_s"] + row["read_s"]
        base = base or total
        row["total_vs_none"] = round(total / base, 3)
        summary[codec] = row
        print(f"{codec:>5}: write {row['write_s']:.3f} s  read {row['read_s']:.3f} s  "
              f"{row['bytes'] / 1e6:7.1f} MB  total {row['total_vs_none']:.2f}x of none", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": args.records, "codecs": summary}, f, indent=2)


if __name__ == "__main__":
    main()
