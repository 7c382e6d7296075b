"""shuffle: Apache Spark's sort-based shuffle, ported to Python and Cython.

Map tasks write one partition-sorted ``.data`` file and one ``.index`` file
each (Spark's layout) through the bypass, serialized or sort writer, chosen as
Spark's ``SortShuffleManager`` chooses; reduce tasks fetch their blocks by
index offsets, then aggregate and sort with bounded memory. ``Context`` runs
whole pipelines on worker processes. See README.md.
"""

__version__ = "0.1.0"

from shuffle.aggregator import Aggregator  # noqa: E402
from shuffle.conf import ShuffleConf  # noqa: E402
from shuffle.dependency import ShuffleDependency, ShuffleHandle  # noqa: E402
from shuffle.errors import (  # noqa: E402
    ConfigError,
    CorruptBlockError,
    FetchFailedError,
    InputNotFoundError,
    JobAbortedError,
    MetadataFetchFailedError,
    OutOfDiskError,
    OutputExistsError,
    RecordTooLargeError,
    SerializationError,
    ShuffleError,
    TaskFailedError,
)
from shuffle.manager import SortShuffleManager  # noqa: E402
from shuffle.map_output import BlockManagerId, MapOutputTracker, MapStatus  # noqa: E402
from shuffle.msgpack_serializer import MsgpackSerializer  # noqa: E402
from shuffle.partitioner import HashPartitioner, Partitioner, RangePartitioner  # noqa: E402
from shuffle.pickle_serializer import PickleSerializer  # noqa: E402
from shuffle.serializer import Serializer  # noqa: E402



def __getattr__(name: str) -> object:
    # The engine (worker processes, tqdm) loads on first use, so that using
    # the shuffle library alone does not pay for it.
    if name in ("Context", "Dataset"):
        from shuffle import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'shuffle' has no attribute {name!r}")


__all__ = [
    "Aggregator",
    "BlockManagerId",
    "ConfigError",
    "Context",
    "CorruptBlockError",
    "Dataset",
    "FetchFailedError",
    "HashPartitioner",
    "InputNotFoundError",
    "JobAbortedError",
    "MapOutputTracker",
    "MapStatus",
    "MetadataFetchFailedError",
    "MsgpackSerializer",
    "OutOfDiskError",
    "OutputExistsError",
    "Partitioner",
    "PickleSerializer",
    "RangePartitioner",
    "RecordTooLargeError",
    "SerializationError",
    "Serializer",
    "ShuffleConf",
    "ShuffleDependency",
    "ShuffleError",
    "ShuffleHandle",
    "SortShuffleManager",
    "TaskFailedError",
    "__version__",
]
