"""The columnar path: ``(keys, values)`` numpy batches through the shuffle, no Python object per record.

The same manager, handles, resolver, index and checksum files, tracker and
fetcher as the object path; a ``BatchShuffleDependency`` makes the manager
choose the ``columnar`` writer (:mod:`.batch_writer`) and reader
(:mod:`.batch_reader`). Columns travel as self-describing blocks
(:mod:`.batch_format`); partition ids (:mod:`.partitioning`), the sort by
partition and the named aggregations (:mod:`.aggregate`) run in the
``columnar`` kernel. The engine's datasets are in :mod:`.dataset`
(``Context.from_arrays`` / ``from_parquet``).
"""

from shuffle.columnar.batch_format import ColumnSchema
from shuffle.columnar.dependency import BatchShuffleDependency

__all__ = ["BatchShuffleDependency", "ColumnSchema"]
