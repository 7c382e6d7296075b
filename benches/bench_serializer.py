"""Serializer throughput: encode and decode 200k (int, int) records, msgpack vs pickle.

Run (results carry pytest-benchmark's machine header: CPU, Python, versions)::

    .venv/bin/python -m pytest benches/bench_serializer.py --benchmark-enable

(benches/README.md says how to save and compare results.)

Without ``--benchmark-enable`` (the repo's default) each case runs once, as a
smoke test. DESIGN.md §8 explains why per-record Python work is what counts.
"""

import random

import pytest

from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.pickle_serializer import PickleSerializer

N_RECORDS = 200_000
SEED = 20240601


@pytest.fixture(scope="module")
def records() -> list[tuple[int, int]]:
    rnd = random.Random(SEED)
    return [(rnd.randrange(1 << 40), rnd.randrange(1 << 20)) for _ in range(N_RECORDS)]


@pytest.fixture(params=[MsgpackSerializer(), PickleSerializer()], ids=lambda s: s.name, scope="module")
def serializer(request):
    return request.param


def test_encode(benchmark, serializer, records):
    def encode() -> bytes:
        enc = serializer.new_encoder()
        enc.add_all(records)
        return enc.take()

    benchmark.group = "serializer encode: 200k (int, int) records"
    data = benchmark(encode)
    benchmark.extra_info["bytes"] = len(data)
    benchmark.extra_info["records"] = N_RECORDS


def test_decode(benchmark, serializer, records):
    enc = serializer.new_encoder()
    enc.add_all(records)
    data = enc.take()

    def decode() -> int:
        n = 0
        for _ in serializer.decode(data):
            n += 1
        return n

    benchmark.group = "serializer decode: 200k (int, int) records"
    assert benchmark(decode) == N_RECORDS
    benchmark.extra_info["bytes"] = len(data)
    benchmark.extra_info["records"] = N_RECORDS
