"""Columnar datasets: the engine's lineage over ``(keys, values)`` numpy batches.

A :class:`BatchDataset` is a :class:`~shuffle.engine.dataset.Dataset` whose
partitions are iterators of ``(keys, values)`` batches instead of records,
so the scheduler, tasks, workers and map-output tracking are the object
path's unchanged: a map task hands the batches to the writer the handle chose
(``columnar``), a reduce task reads them back through ``read_shuffle``.

Sources: :class:`ArrayDataset` (``ctx.from_arrays``: contiguous slices of two
arrays; arrays memory-mapped from a ``.npy`` file are re-mapped by each task,
others travel in the task) and :class:`ParquetDataset` (``ctx.from_parquet``:
one partition per row group, read with pyarrow). Wide operations take named
aggregations (``reduce_by_key("sum")``) and run vectorised on both sides.
Actions: ``to_numpy()`` (the partitions' rows concatenated in partition
order), ``collect()`` (Python ``(key, value)`` pairs, or ``(key, [values])``
after ``group_by_key``, as the object path returns them) and ``count()``.
"""

from __future__ import annotations

import ast
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from shuffle.columnar.aggregate import check_aggregation
from shuffle.columnar.batch_format import ColumnSchema
from shuffle.columnar.dependency import BatchShuffleDependency
from shuffle.engine.dataset import Dataset, ShuffledDataset
from shuffle.errors import BatchSchemaError, ConfigError, ShuffleError
from shuffle.partitioner import HashPartitioner, Partitioner, RangePartitioner

if TYPE_CHECKING:
    from shuffle.engine.context import Context
    from shuffle.engine.tasks import TaskContext

__all__ = ["BatchDataset", "ArrayDataset", "ParquetDataset", "BatchShuffledDataset", "MapBatchesDataset"]

Batch = Tuple[np.ndarray, np.ndarray]

# Rows per batch a source hands to the writer: the writer's memory grant is asked per batch.
SOURCE_BATCH_ROWS = 1 << 20


class BatchDataset(Dataset):
    """A dataset of ``(keys, values)`` batches; see the module docstring."""

    grouped = False  # collect() gives (key, [values]) pairs

    # ------------------------------------------------------------ narrow
    def map_batches(self, f: Callable[[np.ndarray, np.ndarray], Batch]) -> "BatchDataset":
        """``f(keys, values) -> (keys, values)`` on every batch, in the same task."""
        return MapBatchesDataset(self, f)

    # ------------------------------------------------------------ wide
    def reduce_by_key(self, aggregation: str, num_partitions: Optional[int] = None,  # type: ignore[override]
                      map_side_combine: bool = True) -> "BatchDataset":
        """One row per key: ``aggregation`` in sum, min, max, count, mean of its values."""
        name = check_aggregation(aggregation)
        partitioner = HashPartitioner(self._default_partitions(num_partitions))
        return BatchShuffledDataset(self, partitioner, "aggregate", aggregation=name, combine_on_map=map_side_combine)

    def group_by_key(self, num_partitions: Optional[int] = None) -> "BatchDataset":
        """Rows grouped by key (each key's values contiguous, keys ascending within a partition)."""
        partitioner = HashPartitioner(self._default_partitions(num_partitions))
        return BatchShuffledDataset(self, partitioner, "group")

    def partition_by(self, num_partitions: int, partitioner: Optional[Partitioner] = None) -> "BatchDataset":
        """Rows redistributed by key hash (or ``partitioner``), nothing combined."""
        partitioner = partitioner or HashPartitioner(self._default_partitions(num_partitions))
        if self.partitioner == partitioner:
            return self
        return BatchShuffledDataset(self, partitioner, "none")

    def sort_by_key(self, ascending: bool = True, num_partitions: Optional[int] = None,  # type: ignore[override]
                    key_func: Optional[Callable[[Any], Any]] = None) -> "BatchDataset":
        """A total order across partitions: sampled range bounds, then each range sorted on its reducer."""
        if key_func is not None:
            raise ShuffleError("a columnar sort_by_key orders by the key column itself; key_func is not supported")
        n = self._default_partitions(num_partitions)
        sample: List[Any] = []
        if n > 1:
            fraction = RangePartitioner.sample_fraction(n, self.count())
            if fraction > 0:
                parts = self._context().run_job(self, _sample_keys(fraction))
                sample = [key for part in parts for key in part.tolist()]
        partitioner = RangePartitioner(n, sample, ascending=ascending)
        return BatchShuffledDataset(self, partitioner, "sort", ascending=ascending)

    # ------------------------------------------------------------ actions
    def to_numpy(self) -> Batch:
        """All rows as ``(keys, values)``, partitions in order (empty arrays for an empty dataset)."""
        parts = [p for p in self._context().run_job(self, _concat) if p is not None]
        if not parts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts])

    def collect(self) -> List[Any]:
        keys, values = self.to_numpy()
        pairs = list(zip(keys.tolist(), values.tolist()))
        return _groups(pairs) if self.grouped else pairs

    def count(self) -> int:
        return int(sum(self._context().run_job(self, _count_rows)))


class ArrayDataset(BatchDataset):
    """``ctx.from_arrays(keys, values, n)``: ``n`` contiguous slices of the two columns."""

    def __init__(self, ctx: "Context", keys: np.ndarray, values: np.ndarray, num_slices: int) -> None:
        super().__init__(ctx, num_slices)
        self.schema = ColumnSchema.of(keys, values)
        self.rows = keys.shape[0]
        self._sources = (_source(keys), _source(values))
        self._arrays: Optional[Batch] = (keys, values)

    def _bounds(self, split: int) -> Tuple[int, int]:
        return split * self.rows // self.num_partitions, (split + 1) * self.rows // self.num_partitions

    def task_inputs(self, split: int) -> Dict[int, Any]:
        lo, hi = self._bounds(split)
        inputs = []
        for source, array in zip(self._sources, self._arrays or (None, None)):
            inputs.append(source if source is not None else np.ascontiguousarray(array[lo:hi]))
        return {self.id: (lo, hi, inputs)}

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Batch]:
        lo, hi, inputs = tc.inputs[self.id]
        columns = [_open(item, lo, hi) for item in inputs]
        for start in range(0, hi - lo, SOURCE_BATCH_ROWS):
            yield columns[0][start:start + SOURCE_BATCH_ROWS], columns[1][start:start + SOURCE_BATCH_ROWS]

    def count(self) -> int:
        return self.rows

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["_arrays"] = None  # each task carries only its own slice
        return state


def _source(array: np.ndarray) -> Optional[Tuple[str, int, str, Tuple[int, ...]]]:
    """``(path, offset, dtype, shape)`` of an array memory-mapped from a file, to re-map in tasks."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base if isinstance(base.base, np.ndarray) else None
    if base is None or getattr(base, "filename", None) is None or not array.flags.c_contiguous:
        return None
    try:
        start = array.__array_interface__["data"][0] - base.__array_interface__["data"][0] + base.offset
    except (AttributeError, TypeError):
        return None
    return (os.fspath(base.filename), int(start), array.dtype.str if not array.dtype.names else
            repr(np.lib.format.dtype_to_descr(array.dtype)), tuple(array.shape))


def _open(item: Any, lo: int, hi: int) -> np.ndarray:
    if not isinstance(item, tuple):
        return item  # the slice itself travelled in the task
    path, offset, dtype_text, shape = item
    dtype = (np.dtype(dtype_text) if not dtype_text.startswith("[")
             else np.lib.format.descr_to_dtype(ast.literal_eval(dtype_text)))
    mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return mapped[lo:hi]


class ParquetDataset(BatchDataset):
    """``ctx.from_parquet(paths, key, value)``: one partition per row group of each file."""

    def __init__(self, ctx: "Context", paths: Sequence[str], key: str, value: str) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("from_parquet", str(paths), "pyarrow installed: pip install 'shuffle[columnar-peers]'") \
                from None
        pieces = []
        for path in paths:
            metadata = pq.ParquetFile(path).metadata
            names = set(metadata.schema.names)
            for column in (key, value):
                if column not in names:
                    raise BatchSchemaError(f"column {column!r} of {path}", f"one of {sorted(names)}", "missing")
            pieces.extend((path, group) for group in range(metadata.num_row_groups))
        super().__init__(ctx, max(1, len(pieces)))
        self.pieces = pieces
        self.key, self.value = key, value

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Batch]:
        if split >= len(self.pieces):
            return
        import pyarrow.parquet as pq

        path, group = self.pieces[split]
        table = pq.ParquetFile(path).read_row_group(group, columns=[self.key, self.value])
        keys = table.column(self.key).to_numpy()
        values = table.column(self.value).to_numpy()
        yield keys, values


class MapBatchesDataset(BatchDataset):
    def __init__(self, parent: BatchDataset, f: Callable[[np.ndarray, np.ndarray], Batch]) -> None:
        super().__init__(parent._context(), parent.num_partitions)
        self.parent = parent
        self.f = f

    def parents(self) -> List[Dataset]:
        return [self.parent]

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Batch]:
        f = self.f
        for keys, values in self.parent.compute(split, tc):
            yield f(keys, values)


class BatchShuffledDataset(ShuffledDataset, BatchDataset):
    """The reduce side of a batch shuffle: the scheduler runs ``parent`` through the columnar writer."""

    def __init__(self, parent: BatchDataset, partitioner: Partitioner, reduce_op: str, *,
                 aggregation: Optional[str] = None, combine_on_map: bool = True, ascending: bool = True) -> None:
        ctx = parent._context()
        Dataset.__init__(self, ctx, partitioner.num_partitions)
        self.parent = parent
        self.partitioner = partitioner
        self.grouped = reduce_op == "group"
        dependency = BatchShuffleDependency(
            ctx._next_shuffle_id(), parent.num_partitions, partitioner, ctx.serializer,
            key_ordering=reduce_op in ("group", "sort"), ascending=ascending,
            reduce_op=reduce_op, aggregation=aggregation, combine_on_map=combine_on_map)
        self.handle = ctx._register_shuffle(dependency)


# Functions shipped to workers: module level, so cloudpickle stays cheap.

def _concat(batches: Iterator[Batch]) -> Optional[Batch]:
    parts = list(batches)
    if not parts:
        return None
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0][0]), np.ascontiguousarray(parts[0][1])
    return np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts])


def _count_rows(batches: Iterator[Batch]) -> int:
    return sum(keys.shape[0] for keys, _ in batches)


def _sample_keys(fraction: float) -> Callable[[Iterator[Batch]], np.ndarray]:
    def run(batches: Iterator[Batch]) -> np.ndarray:
        rng = np.random.default_rng(0)  # fixed: a rerun samples the same keys
        picked = [keys[rng.random(keys.shape[0]) < fraction] for keys, _ in batches]
        return np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
    return run


def _groups(pairs: List[Tuple[Any, Any]]) -> List[Tuple[Any, List[Any]]]:
    out: List[Tuple[Any, List[Any]]] = []
    for key, value in pairs:
        if out and out[-1][0] == key:
            out[-1][1].append(value)
        else:
            out.append((key, [value]))
    return out
