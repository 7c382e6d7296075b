"""The same workloads on PySpark's RDD API (``local[N]``) and on Dask, when they are installed.

Each peer is started once per workload, its start-up time reported apart,
then timed like the engine and checked against the same oracle. A workload a
peer has no counterpart for (Dask bags cannot sort or partition by a given
partitioner) is skipped with a log line, not approximated.
"""

from __future__ import annotations

import logging
import operator
import os
import sys
import time
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from shuffle.bench import workloads as wl
from shuffle.bench.data import Corpus, Table
from shuffle.bench.results import check, make_row
from shuffle.errors import ConfigError

__all__ = ["run_peer", "require"]

logger = logging.getLogger(__name__)


_MODULES = {"pyspark": "pyspark", "dask": "dask.bag", "duckdb": "duckdb", "polars": "polars"}
COLUMNAR_PEERS = ("duckdb", "polars")


def require(name: str) -> None:
    """Raise ``ConfigError`` naming the extra when peer ``name`` is not installed."""
    if name not in _MODULES:
        raise ConfigError("--peers", name, "pyspark, dask, duckdb or polars")
    try:
        __import__(_MODULES[name])
    except ImportError:
        needs = " and Java 17+" if name == "pyspark" else ""
        extra = "columnar-peers" if name in COLUMNAR_PEERS else "peers"
        raise ConfigError("--peers", name, f"an installed peer: pip install 'shuffle[{extra}]'{needs}") from None


def run_peer(name: str, workload: wl.Workload, inputs: Any, records: int, oracle: Any, options: Any) -> Optional[Any]:
    """A measured row for ``name`` on ``workload``, or None when the peer has no such workload."""
    from shuffle.bench.measure import repeat

    if name in COLUMNAR_PEERS:
        return _columnar_peer(name, workload, inputs, records, oracle, options)
    if name == "pyspark":
        session: Any = _PySpark(options.parallelism, options.memory)
    elif name == "dask":
        session = _Dask(options.parallelism)
    else:
        raise ConfigError("--peers", name, "pyspark, dask, duckdb or polars")
    job = session.jobs.get(workload.name)
    if job is None:
        logger.warning("%s has no counterpart of %s (%s): skipped", name, workload.name, workload.title)
        return None
    started = time.perf_counter()
    session.start()
    try:
        startup = time.perf_counter() - started
        runs, summary = repeat(lambda: job(session, inputs), options.peer_repeat or options.repeat)
    finally:
        session.stop()
    check(workload.name, name, summary, oracle)
    return make_row(workload.name, name, session.label, records, runs, startup_s=startup)


def _columnar_peer(name: str, workload: wl.Workload, table: Any, records: int, oracle: Any, options: Any) -> Optional[Any]:
    """DuckDB or Polars on the table's arrays, loaded into memory before the clock starts."""
    import numpy as np

    from shuffle.bench.measure import repeat
    from shuffle.columnar.bench import PEERS

    job = PEERS[name].get(workload.name)
    if job is None or not isinstance(table, Table):
        logger.warning("%s runs only the columnar workloads (W1, W3, W4): %s skipped", name, workload.name)
        return None
    keys, values = np.load(table.keys_path), np.load(table.values_path)
    runs, summary = repeat(lambda: job(keys, values), options.peer_repeat or options.repeat)
    check(workload.name, name, summary, oracle)
    return make_row(workload.name, name, "same arrays", records, runs)


# ---------------------------------------------------------------- PySpark
class _PySpark:
    def __init__(self, parallelism: int, memory: Optional[str]) -> None:
        require("pyspark")
        self.parallelism, self.memory = parallelism, memory
        self.label = f"RDD local[{parallelism}]"
        self.sc: Any = None
        self.jobs: Dict[str, Callable[[Any, Any], Any]] = {
            "W1": _spark_w1, "W2": _spark_w2, "W3": _spark_w3, "W4": _spark_w4, "W5": _spark_w5}

    def start(self) -> None:
        from pyspark import SparkConf, SparkContext

        # Python workers must import this package: run them on this interpreter.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        conf = (SparkConf().setMaster(f"local[{self.parallelism}]").setAppName("shuffle-bench")
                .set("spark.ui.enabled", "false").set("spark.ui.showConsoleProgress", "false"))
        if self.memory:
            conf = conf.set("spark.driver.memory", self.memory)
        self.sc = SparkContext(conf=conf)
        self.sc.setLogLevel("ERROR")
        self.sc.parallelize([0], 1).count()  # the first job starts the Python workers

    def stop(self) -> None:
        from pyspark import SparkContext

        if self.sc is not None:
            self.sc.stop()
            self.sc = None
        # sc.stop() leaves the JVM running for the next context; nothing may outlive the run.
        gateway = SparkContext._gateway
        if gateway is not None:
            process = getattr(gateway, "proc", None)
            gateway.shutdown()
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
            SparkContext._gateway = None
            SparkContext._jvm = None

    def table(self, table: Table) -> Any:
        return self.sc.parallelize(range(wl.INPUT_SLICES), wl.INPUT_SLICES).mapPartitionsWithIndex(
            wl.TableSlices(table, wl.INPUT_SLICES))


def _spark_w1(s: _PySpark, table: Table) -> Any:
    sums = s.table(table).reduceByKey(operator.add, wl.OUTPUT_PARTITIONS)
    return wl.add_summaries(sums.mapPartitions(wl.sums_summary).collect())


def _spark_w2(s: _PySpark, table: Table) -> Any:
    groups = s.table(table).groupByKey(wl.OUTPUT_PARTITIONS)
    return wl.add_summaries(groups.mapPartitions(wl.groups_summary).collect())


def _spark_w3(s: _PySpark, table: Table) -> Any:
    moved = s.table(table).partitionBy(wl.OUTPUT_PARTITIONS)
    return wl.per_partition(moved.mapPartitionsWithIndex(wl.counts_summary).collect())


def _spark_w4(s: _PySpark, table: Table) -> Any:
    ordered = s.table(table).sortByKey(numPartitions=wl.OUTPUT_PARTITIONS)
    return wl.total_order(ordered.mapPartitionsWithIndex(wl.order_summary).collect())


def _spark_w5(s: _PySpark, corpus: Corpus) -> Any:
    counts = (s.sc.textFile(",".join(corpus.paths), wl.INPUT_SLICES)
              .flatMap(str.split).map(wl.to_pair).reduceByKey(operator.add, wl.OUTPUT_PARTITIONS))
    return wl.add_summaries(counts.mapPartitions(wl.words_summary).collect())


# ---------------------------------------------------------------- Dask
class _Dask:
    def __init__(self, parallelism: int) -> None:
        require("dask")
        self.parallelism = parallelism
        self.label = f"bag, {parallelism} processes"
        self.jobs: Dict[str, Callable[[Any, Any], Any]] = {"W1": _dask_w1, "W2": _dask_w2, "W5": _dask_w5}
        self._config: Any = None

    def start(self) -> None:
        import dask

        self._config = dask.config.set(scheduler="processes", num_workers=self.parallelism)
        self._config.__enter__()

    def stop(self) -> None:
        if self._config is not None:
            self._config.__exit__(None, None, None)
            self._config = None

    def table(self, table: Table) -> Any:
        import dask.bag as db

        return db.from_sequence(range(wl.INPUT_SLICES), npartitions=wl.INPUT_SLICES).map_partitions(
            _DaskSlices(table))


class _DaskSlices:
    def __init__(self, table: Table) -> None:
        self.table = table

    def __call__(self, indexes: Iterable[int]) -> List[Tuple[int, int]]:
        return list(chain.from_iterable(self.table.records_of_slice(i, wl.INPUT_SLICES) for i in indexes))


def _value_plus(total: int, record: Tuple[int, int]) -> int:
    return total + record[1]


def _values_of(group: Tuple[int, List[Tuple[int, int]]]) -> Tuple[int, List[int]]:
    return group[0], [value for _, value in group[1]]


def _dask_w1(s: _Dask, table: Table) -> Any:
    sums = s.table(table).foldby(operator.itemgetter(0), _value_plus, 0, operator.add, 0)
    return wl.add_summaries(sums.map_partitions(wl.sums_summary).compute())


def _dask_w2(s: _Dask, table: Table) -> Any:
    groups = s.table(table).groupby(operator.itemgetter(0), npartitions=wl.OUTPUT_PARTITIONS, shuffle="tasks")
    return wl.add_summaries(groups.map(_values_of).map_partitions(wl.groups_summary).compute())


def _dask_w5(s: _Dask, corpus: Corpus) -> Any:
    import dask.bag as db

    counts = db.read_text(list(corpus.paths)).str.split().flatten().frequencies()
    return wl.add_summaries(counts.map_partitions(wl.words_summary).compute())
