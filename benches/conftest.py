"""Shared fixtures and hooks of the pytest-benchmark micro-benchmarks in ``benches/``.

Owns three things, and nothing that measures:

- fixed-seed input data (``numpy.random.default_rng`` with the seeds below), built
  once per session, so every run of every benchmark sees the same bytes;
- the ``impl`` parametrization: each kernel benchmark that asks for ``impl`` runs
  once against the compiled kernel (``shuffle._native``, id ``native``) and once
  against its plain-Python twin (``shuffle._twins``, id ``twin``), whatever
  ``SHUFFLE_PUREPYTHON`` says; ``native`` is skipped, with the import error as the
  reason, when the extension is not built;
- the header of saved results: package versions, whether the compiled kernels
  are present and the kernel mode, added to pytest-benchmark's ``machine_info``;
  the load average at start and end of the run, added to the saved JSON.

A benchmark sets ``benchmark.group`` so that the two implementations of one
kernel (or the writers on one input) land in one table and compare.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psutil
import pytest

from shuffle.kernels import PURE_PYTHON

# One seed per data set: adding a data set never changes another one.
SEED_RECORDS = 20240601
SEED_POINTERS = 42
SEED_SERIALIZED = 43
SEED_KEYS = 44
SEED_INDEX = 45

NUM_RECORDS = 200_000
"""(int, int) records written by the writers and read by the reader."""
NUM_KEYS = 50_000
"""Distinct keys among those records (about 4 records per key, so combining matters)."""
NUM_PARTITIONS = 64
"""Reduce partitions of the writer and reader benchmarks (bypass applies at <= 200)."""

PEDANTIC_ROUNDS = 5
"""Timed rounds of a benchmark whose every round needs an untimed set-up."""

_LOAD_AT_START = os.getloadavg()
_PACKAGES = ("shuffle", "numpy", "msgpack", "lz4", "zstandard", "psutil", "pytest", "pytest-benchmark")


# ---------------------------------------------------------------------- kernels: native and twin


@dataclass(frozen=True)
class Kernels:
    """One implementation of the kernels: ``load("pointers")`` is its module of that name."""

    name: str  # "native" or "twin"
    package: str

    def load(self, module: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{module}")


NATIVE = Kernels("native", "shuffle._native")
TWIN = Kernels("twin", "shuffle._twins")


def _native_missing() -> str | None:
    """Why the compiled kernels cannot be imported, or None when they can."""
    try:
        for module in ("hashing", "pointers", "recordbuf"):
            NATIVE.load(module)
    except ImportError as e:
        return f"compiled kernels not built ({e}); `pip install -e .` builds them"
    return None


@pytest.fixture(scope="session", params=[NATIVE, TWIN], ids=["native", "twin"])
def impl(request: pytest.FixtureRequest) -> Kernels:
    """The compiled kernels, then their plain-Python twins (skips native when not built)."""
    kernels: Kernels = request.param
    if kernels is NATIVE:
        missing = _native_missing()
        if missing is not None:
            pytest.skip(missing)
    return kernels


def per_element(benchmark: Any, count: int, unit: str = "record") -> None:
    """Record the element count; the README divides the mean time by it."""
    benchmark.extra_info[f"{unit}s"] = count


# ---------------------------------------------------------------------- fixed data


@pytest.fixture(scope="session")
def int_records() -> list[tuple[int, int]]:
    """200k ``(key, value)`` int pairs: keys in [0, 50k), values in [0, 2**20)."""
    rng = np.random.default_rng(SEED_RECORDS)
    keys = rng.integers(0, NUM_KEYS, NUM_RECORDS).tolist()
    values = rng.integers(0, 1 << 20, NUM_RECORDS).tolist()
    return list(zip(keys, values))


@pytest.fixture(scope="session")
def int_keys() -> list[int]:
    """200k int keys in [0, 2**40)."""
    return np.random.default_rng(SEED_KEYS).integers(0, 1 << 40, 200_000).tolist()


@pytest.fixture(scope="session")
def str_keys() -> list[str]:
    """20k ASCII str keys of 5..20 characters (words of a word count)."""
    rng = np.random.default_rng(SEED_KEYS + 1)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lengths = rng.integers(5, 21, 20_000)
    flat = letters[rng.integers(0, 26, int(lengths.sum()))].tobytes().decode("ascii")
    ends = np.cumsum(lengths).tolist()
    return [flat[end - n:end] for end, n in zip(ends, lengths.tolist())]


@pytest.fixture(scope="session")
def tuple_keys(str_keys: list[str]) -> list[tuple[int, str]]:
    """20k ``(int, str)`` keys: composite keys as a join or a secondary sort makes them."""
    numbers = np.random.default_rng(SEED_KEYS + 2).integers(0, 1 << 20, len(str_keys)).tolist()
    return list(zip(numbers, str_keys))


@pytest.fixture(scope="session", params=[64, 1000, 2**24], ids=lambda n: f"{n}parts")
def pointers_1m(request: pytest.FixtureRequest) -> tuple[int, np.ndarray]:
    """1M packed pointers over ``param`` partitions (64: one radix pass; 1000: two; 2**24: three)."""
    twin = TWIN.load("pointers")
    rng = np.random.default_rng(SEED_POINTERS)
    n = 1_000_000
    pointers = twin.pack_array(
        rng.integers(0, request.param, n),
        rng.integers(0, twin.MAX_PAGE_NUMBER + 1, n),
        rng.integers(0, twin.MAX_OFFSET + 1, n),
    )
    return request.param, pointers


@pytest.fixture(scope="session")
def serialized_records() -> tuple[np.ndarray, list[bytes], int]:
    """200k serialized records of 8..40 bytes, their int32 partition ids over 1000 partitions."""
    rng = np.random.default_rng(SEED_SERIALIZED)
    num_partitions = 1000
    pids = rng.integers(0, num_partitions, NUM_RECORDS).astype(np.int32)
    records = [rng.bytes(int(k)) for k in rng.integers(8, 41, NUM_RECORDS)]
    return pids, records, num_partitions


@pytest.fixture(scope="session")
def index_lengths() -> list[int]:
    """Partition lengths of one map output with 1000 partitions, a fifth of them empty."""
    rng = np.random.default_rng(SEED_INDEX)
    lengths = rng.integers(1, 4096, 1000)
    lengths[rng.random(1000) < 0.2] = 0
    return lengths.tolist()


# ---------------------------------------------------------------------- results header


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cython_version() -> str | None:
    """The Cython that generated the kernels' C sources (Cython is a build-time-only dependency)."""
    try:
        with (Path(__file__).resolve().parent.parent / "_ext" / "hashing.c").open() as source:
            first = source.readline()
    except OSError:
        return None
    found = re.search(r"Generated by Cython (\S+)", first)
    return found.group(1) if found else None


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Name what ran, beside pytest-benchmark's CPU and Python: versions, kernels, memory.

    Only values stable on one machine go here: ``--benchmark-compare`` warns
    when the machine_info of two runs differ.
    """
    memory = psutil.virtual_memory()
    machine_info["shuffle"] = {
        "packages": {name: _version(name) for name in _PACKAGES},
        "native_kernels_built": _native_missing() is None,
        "native_kernels_cython": _cython_version(),
        "SHUFFLE_PUREPYTHON": PURE_PYTHON,
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_bytes": memory.total,
        "kernel_release": platform.release(),
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    """The machine is shared: keep how busy it was, so a noisy run can be recognised."""
    output_json["shuffle_run"] = {
        "load_average_start": list(_LOAD_AT_START),
        "load_average_end": list(os.getloadavg()),
    }
