"""``Context``: the entry point of the engine, PySpark's ``SparkContext`` for one machine.

A context starts ``parallelism`` worker processes (executors, each with its
own directory under the local dir), keeps the driver's ``MapOutputTracker``,
builds datasets (``parallelize``, ``text_file``) and runs their actions
through the :class:`DAGScheduler`. Closing it (``with``, ``stop()``, garbage
collection, interpreter exit, Ctrl-C inside ``with``) stops every worker and
deletes every file it made, unless the caller gave ``local_dir`` and asked
``keep_files=True`` (then only temp and spill files are removed).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from shuffle.conf import ConfValue, ShuffleConf
from shuffle.dependency import ShuffleDependency, ShuffleHandle
from shuffle.engine.backend import ExecutorBackend, LocalProcessBackend
from shuffle.engine.dataset import Dataset, ParallelCollection, TextFileDataset
from shuffle.engine.job_metrics import JobMetrics
from shuffle.engine.progress import progress_listener
from shuffle.engine.scheduler import DAGScheduler
from shuffle.engine.textio import abort_output_dir, commit_output_dir, plan_text_splits, prepare_output_dir, write_text_part
from shuffle.errors import ConfigError, ShuffleError
from shuffle.manager import choose_writer
from shuffle.map_output import MapOutputTracker
from shuffle.msgpack_serializer import MsgpackSerializer
from shuffle.serializer import Serializer

__all__ = ["Context"]

logger = logging.getLogger(__name__)


class Context:
    """Runs datasets on local worker processes; use it as a context manager.

    ``backend``: None or ``"local"`` (worker processes), ``"ray"`` (Ray tasks on
    the cluster at ``address``: None, ``"auto"`` or ``"ray://host:port"``; see
    :mod:`shuffle.engine.ray_backend`; needs ``pip install 'shuffle[ray]'``),
    or an :class:`ExecutorBackend` object.
    """

    def __init__(
        self,
        parallelism: Optional[int] = None,
        conf: Union[ShuffleConf, Mapping[str, ConfValue], None] = None,
        local_dir: Union[str, os.PathLike, None] = None,
        *,
        keep_files: bool = False,
        progress: Optional[bool] = False,
        serializer: Optional[Serializer] = None,
        start_method: str = "forkserver",
        backend: Union[ExecutorBackend, str, None] = None,
        address: Optional[str] = None,
    ) -> None:
        self.conf = conf.copy() if isinstance(conf, ShuffleConf) else ShuffleConf(conf)
        self.parallelism = parallelism if parallelism is not None else (os.cpu_count() or 1)
        if not isinstance(self.parallelism, int) or self.parallelism < 1:
            raise ShuffleError(f"parallelism must be a positive int, got {parallelism!r}")
        self.serializer = serializer or MsgpackSerializer()
        if backend == "ray":
            from shuffle.engine import ray_backend

            ray_backend.import_ray()  # before any directory is made: a missing Ray names the extra
        elif isinstance(backend, str) and backend != "local":
            raise ConfigError("backend", backend, "'local', 'ray' or an ExecutorBackend")
        elif address is not None:
            raise ConfigError("address", address, "no address: only backend='ray' connects to a cluster")
        if backend in (None, "local") and start_method not in multiprocessing.get_all_start_methods():
            raise ConfigError("start_method", start_method, "one of " + ", ".join(multiprocessing.get_all_start_methods()))
        self._owns_dir = local_dir is None
        self.local_dir = _usable_local_dir(local_dir, self.conf.get("spark.local.dir"))
        self.keep_files = keep_files and not self._owns_dir
        self.tracker = MapOutputTracker()
        self.last_job_metrics: Optional[JobMetrics] = None
        self._dataset_ids = itertools.count()
        self._shuffle_ids = itertools.count()
        if backend == "ray":
            self.backend: ExecutorBackend = ray_backend.RayBackend(address, self.local_dir, self.conf.to_dict(),
                                                                   keep_files=self.keep_files)
        elif isinstance(backend, ExecutorBackend):
            self.backend = backend
        else:
            self.backend = LocalProcessBackend(self.parallelism, self.local_dir, self.conf.to_dict(), start_method)
        self.scheduler = DAGScheduler(self.backend, self.tracker, self.conf, progress_listener(progress))
        self._finalizer = weakref.finalize(self, _shutdown, self.backend, self.local_dir, self._owns_dir, self.keep_files)
        try:
            self.backend.start()
        except BaseException:
            self.stop()
            raise
        if backend == "ray" and parallelism is None:
            self.parallelism = self.backend.num_executors  # the cluster's CPUs, known once connected

    # ------------------------------------------------------------ datasets
    @property
    def default_parallelism(self) -> int:
        configured = self.conf.get_int("spark.default.parallelism")
        return configured if configured is not None else self.parallelism

    def parallelize(self, data: Iterable[Any], num_slices: Optional[int] = None) -> Dataset:
        """A dataset of ``data`` in ``num_slices`` contiguous slices (default: the parallelism)."""
        self._check_running()
        items = list(data)
        n = num_slices if num_slices is not None else self.default_parallelism
        if not isinstance(n, int) or n < 1:
            raise ShuffleError(f"num_slices must be a positive int, got {num_slices!r}")
        return ParallelCollection(self, items, n)

    def text_file(self, path: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                  min_partitions: Optional[int] = None) -> Dataset:
        """Lines of a file, directory, glob or list of them; big files split, small ones packed."""
        self._check_running()
        minimum = min_partitions if min_partitions is not None else min(self.default_parallelism, 2)
        return TextFileDataset(self, plan_text_splits(path, minimum))

    def from_arrays(self, keys: Any, values: Any, num_slices: Optional[int] = None) -> Any:
        """A columnar dataset of two numpy columns in ``num_slices`` contiguous slices (shuffle.columnar)."""
        from shuffle.columnar.dataset import ArrayDataset

        self._check_running()
        n = num_slices if num_slices is not None else self.default_parallelism
        if not isinstance(n, int) or n < 1:
            raise ShuffleError(f"num_slices must be a positive int, got {num_slices!r}")
        return ArrayDataset(self, keys, values, n)

    def from_parquet(self, path: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                     key: str, value: str) -> Any:
        """A columnar dataset of two columns of Parquet files, one partition per row group (needs pyarrow)."""
        from shuffle.columnar.dataset import ParquetDataset

        self._check_running()
        paths = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
        return ParquetDataset(self, paths, key, value)

    # ------------------------------------------------------------ running
    def run_job(self, dataset: Dataset, func: Callable[[Iterator[Any]], Any],
                partitions: Optional[Sequence[int]] = None) -> List[Any]:
        """``func`` over each partition of ``dataset`` on the workers; results in partition order."""
        self._check_running()
        results, metrics = self.scheduler.run_job(dataset, func, partitions)
        self.last_job_metrics = metrics
        return results

    def save_as_text_file(self, dataset: Dataset, directory: Union[str, os.PathLike], overwrite: bool = False) -> None:
        target = prepare_output_dir(directory, overwrite)
        try:
            self.run_job(dataset.map_partitions_with_index(_part_writer(str(target))), _drain)
        except BaseException:
            abort_output_dir(target)
            raise
        commit_output_dir(target)

    # ------------------------------------------------------------ internals used by datasets
    def _next_dataset_id(self) -> int:
        return next(self._dataset_ids)

    def _next_shuffle_id(self) -> int:
        return next(self._shuffle_ids)

    def _register_shuffle(self, dependency: ShuffleDependency) -> ShuffleHandle:
        kind, reason = choose_writer(dependency, self.conf)
        handle = ShuffleHandle(dependency.shuffle_id, dependency, kind, reason)
        self.tracker.register_shuffle(dependency.shuffle_id, dependency.num_maps)
        return handle

    # ------------------------------------------------------------ lifecycle
    def _check_running(self) -> None:
        if not self._finalizer.alive:
            raise ShuffleError("this Context was stopped")

    def stop(self) -> None:
        """Stop the workers and delete the context's files. Idempotent."""
        self._finalizer()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._finalizer.alive else "stopped"
        return f"Context(parallelism={self.parallelism}, local_dir={str(self.local_dir)!r}, {state})"


def _usable_local_dir(local_dir: Union[str, os.PathLike, None], parent: Optional[str]) -> Path:
    """``local_dir`` (created if missing), or a new temp dir under ``spark.local.dir``; writable.

    A directory that cannot be created or written to is a ConfigError naming it,
    raised before any worker starts.
    """
    key, value = ("local_dir", local_dir) if local_dir is not None else ("spark.local.dir", parent)
    try:
        if local_dir is None:
            path = Path(tempfile.mkdtemp(prefix="shuffle-context-", dir=parent))
        else:
            path = Path(local_dir)
            path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(key, str(value), f"a directory that exists or can be created, and is writable ({e})") from e
    return path


def _shutdown(backend: ExecutorBackend, local_dir: Path, owns_dir: bool, keep_files: bool) -> None:
    """Stop workers, then remove files: everything, or only temp/spill files when keeping."""
    try:
        backend.stop()
    finally:
        if not keep_files:
            if owns_dir:
                shutil.rmtree(local_dir, ignore_errors=True)
            else:
                for executor_dir in local_dir.glob("executor-*"):
                    shutil.rmtree(executor_dir, ignore_errors=True)
        else:
            # Spill files, and commit temporaries ("<target>.<uuid hex>") of interrupted tasks.
            for pattern in _TEMP_PATTERNS:
                for temp in local_dir.glob(f"executor-*/{pattern}"):
                    temp.unlink(missing_ok=True)


_TEMP_PATTERNS = ("temp_*", "shuffle_*_0.data.*", "shuffle_*_0.index.*", "shuffle_*_0.checksum.*.*")


def _part_writer(directory: str) -> Callable[[int, Iterator[Any]], Iterator[str]]:
    def write(index: int, records: Iterator[Any]) -> Iterator[str]:
        yield str(write_text_part(directory, index, records))
    return write


def _drain(it: Iterator[Any]) -> int:
    return sum(1 for _ in it)
