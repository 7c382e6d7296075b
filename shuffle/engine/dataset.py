"""``Dataset``: an immutable, partitioned collection built lazily, as PySpark's RDD.

A dataset knows how to compute one partition from its parents
(:meth:`Dataset.compute`); nothing runs until an action (``collect``,
``count``, ``take``, ``save_as_text_file``...) hands the lineage to the
context's scheduler. Narrow operations (``map``, ``filter``...) wrap their
parent and run in the same task; a wide one (``reduce_by_key``,
``group_by_key``, ``sort_by_key``, ``partition_by``) becomes a
:class:`ShuffledDataset`, whose map side is a stage of its own.

Datasets travel to workers with cloudpickle, without their context: what a
task needs from the driver (a partition's slice of ``parallelize`` data, the
shuffle handles, the map statuses) travels in the task, not in the dataset.
"""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Iterable, Iterator, List, Optional, Tuple

from shuffle.aggregator import Aggregator
from shuffle.dependency import ShuffleDependency, ShuffleHandle
from shuffle.engine.sampling import per_partition_sample_size, proportional_sample, sketch_keys
from shuffle.engine.textio import TextSplit, read_lines
from shuffle.errors import ShuffleError
from shuffle.partitioner import HashPartitioner, Partitioner, RangePartitioner

if TYPE_CHECKING:
    from shuffle.engine.context import Context
    from shuffle.engine.tasks import TaskContext

__all__ = ["Dataset", "ParallelCollection", "TextFileDataset", "MapPartitionsDataset",
           "UnionDataset", "ShuffledDataset"]

PartitionFunc = Callable[[int, Iterator[Any]], Iterable[Any]]


class Dataset:
    """A lazily computed, partitioned collection; see the module docstring."""

    def __init__(self, ctx: "Context", num_partitions: int) -> None:
        self.ctx: Optional["Context"] = ctx
        self.id = ctx._next_dataset_id()
        self._num_partitions = num_partitions
        self.partitioner: Optional[Partitioner] = None

    # ------------------------------------------------------------ structure
    @property
    def num_partitions(self) -> int:
        return self._num_partitions

    def get_num_partitions(self) -> int:
        return self._num_partitions

    def parents(self) -> List["Dataset"]:
        """Datasets this one reads in the same task (narrow dependencies)."""
        return []

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Any]:
        raise NotImplementedError

    def task_inputs(self, split: int) -> Dict[int, Any]:
        """What a task computing ``split`` needs from the driver, by dataset id."""
        inputs: Dict[int, Any] = {}
        for parent, parent_split in self._parent_splits(split):
            inputs.update(parent.task_inputs(parent_split))
        return inputs

    def _parent_splits(self, split: int) -> List[Tuple["Dataset", int]]:
        return [(parent, split) for parent in self.parents()]

    def _context(self) -> "Context":
        if self.ctx is None:
            raise ShuffleError("this dataset was shipped to a worker; actions run on the driver only")
        return self.ctx

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["ctx"] = None  # the context holds processes; workers never need it
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id}, partitions={self.num_partitions})"

    # ------------------------------------------------------------ narrow operations
    def map_partitions_with_index(self, f: PartitionFunc, preserves_partitioning: bool = False) -> "Dataset":
        return MapPartitionsDataset(self, f, preserves_partitioning)

    def map_partitions(self, f: Callable[[Iterator[Any]], Iterable[Any]], preserves_partitioning: bool = False) -> "Dataset":
        return self.map_partitions_with_index(lambda _, it: f(it), preserves_partitioning)

    def map(self, f: Callable[[Any], Any]) -> "Dataset":
        return self.map_partitions_with_index(lambda _, it: map(f, it))

    def flat_map(self, f: Callable[[Any], Iterable[Any]]) -> "Dataset":
        return self.map_partitions_with_index(lambda _, it: itertools.chain.from_iterable(map(f, it)))

    def filter(self, f: Callable[[Any], bool]) -> "Dataset":
        return self.map_partitions_with_index(lambda _, it: filter(f, it), preserves_partitioning=True)

    def key_by(self, f: Callable[[Any], Any]) -> "Dataset":
        return self.map(lambda x: (f(x), x))

    def map_values(self, f: Callable[[Any], Any]) -> "Dataset":
        return self.map_partitions_with_index(
            lambda _, it: ((k, f(v)) for k, v in it), preserves_partitioning=True)

    def flat_map_values(self, f: Callable[[Any], Iterable[Any]]) -> "Dataset":
        return self.map_partitions_with_index(
            lambda _, it: ((k, x) for k, v in it for x in f(v)), preserves_partitioning=True)

    def keys(self) -> "Dataset":
        return self.map(operator.itemgetter(0))

    def values(self) -> "Dataset":
        return self.map(operator.itemgetter(1))

    def union(self, other: "Dataset") -> "Dataset":
        return UnionDataset(self, other)

    # ------------------------------------------------------------ wide operations
    def _default_partitions(self, num_partitions: Optional[int]) -> int:
        if num_partitions is not None:
            if not isinstance(num_partitions, int) or num_partitions < 1:
                raise ShuffleError(f"num_partitions must be a positive int, got {num_partitions!r}")
            return num_partitions
        configured = self._context().conf.get_int("spark.default.parallelism")
        return configured if configured is not None else self.num_partitions

    def combine_by_key(
        self,
        create_combiner: Callable[[Any], Any],
        merge_value: Callable[[Any, Any], Any],
        merge_combiners: Callable[[Any, Any], Any],
        num_partitions: Optional[int] = None,
    ) -> "Dataset":
        """Combine values by key, on the map side first (as PySpark's ``combineByKey``)."""
        aggregator = Aggregator(create_combiner, merge_value, merge_combiners)
        partitioner = HashPartitioner(self._default_partitions(num_partitions))
        return ShuffledDataset(self, partitioner, aggregator=aggregator, map_side_combine=True)

    def reduce_by_key(self, f: Callable[[Any, Any], Any], num_partitions: Optional[int] = None) -> "Dataset":
        aggregator = Aggregator.from_reduce(f)
        partitioner = HashPartitioner(self._default_partitions(num_partitions))
        return ShuffledDataset(self, partitioner, aggregator=aggregator, map_side_combine=True)

    def group_by_key(self, num_partitions: Optional[int] = None) -> "Dataset":
        """Group values by key; never combined on the map side (as Spark). Values are iterables."""
        partitioner = HashPartitioner(self._default_partitions(num_partitions))
        return ShuffledDataset(self, partitioner, aggregator=Aggregator.for_group_by(), map_side_combine=False)

    def partition_by(self, num_partitions: int, partitioner: Optional[Partitioner] = None) -> "Dataset":
        """Redistribute ``(key, value)`` records by key hash (or ``partitioner``), nothing combined."""
        partitioner = partitioner or HashPartitioner(self._default_partitions(num_partitions))
        if self.partitioner == partitioner:
            return self  # already partitioned this way: PySpark's no-op
        return ShuffledDataset(self, partitioner)

    def sort_by_key(
        self,
        ascending: bool = True,
        num_partitions: Optional[int] = None,
        key_func: Optional[Callable[[Any], Any]] = None,
    ) -> "Dataset":
        """A total order across partitions: sampled range bounds, then a sorted read of each range."""
        n = self._default_partitions(num_partitions)
        sample: List[Any] = []
        if n > 1:
            k = per_partition_sample_size(n, self.num_partitions)
            sketches = self.map_partitions_with_index(sketch_keys(k)).collect()
            sample = proportional_sample(sketches, RangePartitioner.sample_size(n))
        try:
            partitioner = RangePartitioner(n, sample, ascending=ascending, key_func=key_func)
        except TypeError as e:
            raise ShuffleError(f"sort_by_key cannot order the keys: {e}; keys must be comparable with each "
                               "other (a key_func can map them to comparable values)") from e
        return ShuffledDataset(self, partitioner, key_ordering=True, ascending=ascending, sort_key=key_func)

    def join(self, other: "Dataset", num_partitions: Optional[int] = None) -> "Dataset":
        """Inner join by key: ``(k, (v, w))`` for every pair of values sharing a key (via cogroup)."""
        # As PySpark: a group_by_key of the tagged union, so by default its partition
        # count is spark.default.parallelism, else the sum of both inputs' partitions.
        tagged = self.map_values(_tag(0)).union(other.map_values(_tag(1)))
        return tagged.group_by_key(num_partitions).flat_map_values(_pairs_of_cogroup)

    def distinct(self, num_partitions: Optional[int] = None) -> "Dataset":
        return (self.map(lambda x: (x, None))
                .reduce_by_key(lambda a, _: a, num_partitions)
                .map(operator.itemgetter(0)))

    # ------------------------------------------------------------ actions
    def collect(self) -> List[Any]:
        return [x for part in self._context().run_job(self, list) for x in part]

    def count(self) -> int:
        return sum(self._context().run_job(self, _count))

    def take(self, n: int) -> List[Any]:
        """The first ``n`` elements, scanning as few partitions as it can (as PySpark's ``take``)."""
        if n <= 0:
            return []
        taken: List[Any] = []
        scanned = 0
        batch = 1
        while len(taken) < n and scanned < self.num_partitions:
            partitions = list(range(scanned, min(scanned + batch, self.num_partitions)))
            want = n - len(taken)
            for part in self._context().run_job(self, _take_first(want), partitions):
                taken.extend(part)
            scanned += len(partitions)
            batch *= 4  # grow like PySpark: few partitions first, then more
        return taken[:n]

    def first(self) -> Any:
        items = self.take(1)
        if not items:
            raise ShuffleError("first() of an empty dataset")
        return items[0]

    def reduce(self, f: Callable[[Any, Any], Any]) -> Any:
        partials = [p for p in self._context().run_job(self, _reduce_partition(f)) if p is not _EMPTY]
        if not partials:
            raise ShuffleError("reduce() of an empty dataset")
        result = partials[0]
        for value in partials[1:]:
            result = f(result, value)
        return result

    def count_by_key(self) -> Dict[Hashable, int]:
        """``{key: number of records}``, counted per partition and merged on the driver."""
        total: Counter = Counter()
        for part in self._context().run_job(self, _count_keys):
            total.update(part)
        return dict(total)

    def save_as_text_file(self, directory: str, overwrite: bool = False) -> None:
        """One ``part-NNNNN`` file per partition, each written atomically, then ``_SUCCESS``."""
        self._context().save_as_text_file(self, directory, overwrite)


class ParallelCollection(Dataset):
    """``ctx.parallelize(data, n)``: contiguous slices of a driver-side sequence."""

    def __init__(self, ctx: "Context", data: List[Any], num_slices: int) -> None:
        super().__init__(ctx, num_slices)
        size = len(data)
        self._slices = [data[i * size // num_slices:(i + 1) * size // num_slices] for i in range(num_slices)]

    def task_inputs(self, split: int) -> Dict[int, Any]:
        return {self.id: self._slices[split]}

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Any]:
        return iter(tc.inputs[self.id])

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["_slices"] = None  # each task carries only its own slice
        return state


class TextFileDataset(Dataset):
    """``ctx.text_file(...)``: lines of the files, one planned split per partition."""

    def __init__(self, ctx: "Context", splits: List[TextSplit]) -> None:
        super().__init__(ctx, len(splits))
        self.splits = splits

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Any]:
        return read_lines(self.splits[split])


class MapPartitionsDataset(Dataset):
    def __init__(self, parent: Dataset, f: PartitionFunc, preserves_partitioning: bool) -> None:
        super().__init__(parent._context(), parent.num_partitions)
        self.parent = parent
        self.f = f
        if preserves_partitioning:
            self.partitioner = parent.partitioner

    def parents(self) -> List[Dataset]:
        return [self.parent]

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Any]:
        return iter(self.f(split, self.parent.compute(split, tc)))


class UnionDataset(Dataset):
    """The partitions of ``first`` followed by those of ``second``."""

    def __init__(self, first: Dataset, second: Dataset) -> None:
        super().__init__(first._context(), first.num_partitions + second.num_partitions)
        self.first = first
        self.second = second

    def parents(self) -> List[Dataset]:
        return [self.first, self.second]

    def _parent_splits(self, split: int) -> List[Tuple[Dataset, int]]:
        if split < self.first.num_partitions:
            return [(self.first, split)]
        return [(self.second, split - self.first.num_partitions)]

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Any]:
        [(parent, parent_split)] = self._parent_splits(split)
        return parent.compute(parent_split, tc)


class ShuffledDataset(Dataset):
    """The reduce side of a shuffle of ``parent``: one partition per reduce partition.

    Creating it registers nothing and runs nothing; the scheduler runs the map
    stage (``parent``'s partitions through the chosen writer) when an action
    needs it, and reuses its outputs in later jobs.
    """

    def __init__(
        self,
        parent: Dataset,
        partitioner: Partitioner,
        aggregator: Optional[Aggregator] = None,
        map_side_combine: bool = False,
        key_ordering: bool = False,
        ascending: bool = True,
        sort_key: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        ctx = parent._context()
        super().__init__(ctx, partitioner.num_partitions)
        self.parent = parent
        self.partitioner = partitioner
        dependency = ShuffleDependency(
            ctx._next_shuffle_id(), parent.num_partitions, partitioner, ctx.serializer,
            aggregator, map_side_combine, key_ordering, ascending, sort_key,
        )
        self.handle: ShuffleHandle = ctx._register_shuffle(dependency)

    @property
    def shuffle_id(self) -> int:
        return self.handle.shuffle_id

    def task_inputs(self, split: int) -> Dict[int, Any]:
        return {}  # a stage boundary: the map side's inputs belong to the map tasks

    def compute(self, split: int, tc: "TaskContext") -> Iterator[Any]:
        return tc.read_shuffle(self.handle, split)


# Functions shipped to workers are module-level or small closures, so cloudpickle stays cheap.

class _Empty:
    """Marks a partition with nothing to reduce; unpickles as the one module-level instance."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()


def _count(it: Iterator[Any]) -> int:
    return sum(1 for _ in it)


def _take_first(n: int) -> Callable[[Iterator[Any]], List[Any]]:
    return lambda it: list(itertools.islice(it, n))


def _reduce_partition(f: Callable[[Any, Any], Any]) -> Callable[[Iterator[Any]], Any]:
    def run(it: Iterator[Any]) -> Any:
        result: Any = _EMPTY
        for value in it:
            result = value if result is _EMPTY else f(result, value)
        return result
    return run


def _count_keys(it: Iterator[Any]) -> Counter:
    return Counter(key for key, _ in it)


def _tag(side: int) -> Callable[[Any], Tuple[int, Any]]:
    return lambda value: (side, value)


def _pairs_of_cogroup(tagged: Iterable[Tuple[int, Any]]) -> Iterator[Tuple[Any, Any]]:
    left: List[Any] = []
    right: List[Any] = []
    for side, value in tagged:
        (left if side == 0 else right).append(value)
    return ((v, w) for v in left for w in right)
