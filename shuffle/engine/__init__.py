"""The engine: ``Context`` and ``Dataset``, PySpark's RDD API on local worker processes.

``context`` (entry point, lifecycle), ``dataset`` (lazy lineage and the
operations), ``scheduler`` (stages, retries), ``backend`` and ``worker``
(where tasks run), ``tasks`` (what travels), ``textio`` (text files in and
out), ``job_metrics`` and ``progress`` (what the user sees).
"""

from shuffle.engine.context import Context
from shuffle.engine.dataset import Dataset

__all__ = ["Context", "Dataset"]
