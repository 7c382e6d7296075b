"""shuffle: Apache Spark's sort-based shuffle, ported to Python and Cython.

Map tasks write one partition-sorted ``.data`` file and one ``.index`` file
each (Spark's layout) through the bypass, serialized or sort writer, chosen as
Spark's ``SortShuffleManager`` chooses; reduce tasks fetch their blocks by
index offsets, then aggregate and sort with bounded memory. See README.md.
"""

from shuffle.aggregator import Aggregator
from shuffle.conf import ShuffleConf
from shuffle.errors import (
    ConfigError,
    CorruptBlockError,
    FetchFailedError,
    MetadataFetchFailedError,
    OutOfDiskError,
    RecordTooLargeError,
    SerializationError,
    ShuffleError,
)

__version__ = "0.1.0"

__all__ = [
    "Aggregator",
    "ConfigError",
    "CorruptBlockError",
    "FetchFailedError",
    "MetadataFetchFailedError",
    "OutOfDiskError",
    "RecordTooLargeError",
    "SerializationError",
    "ShuffleConf",
    "ShuffleError",
    "__version__",
]
