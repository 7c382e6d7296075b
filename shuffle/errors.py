"""Every error shuffle raises, in one place.

``ShuffleError`` is the root. Low-level failures (``OSError``, msgpack and
pickle errors, a dead fetch process) are translated into these types at one
boundary with ``raise ... from e``, so callers catch one family and the cause
stays attached. Errors carry the ids a person needs to find the broken piece.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ShuffleError",
    "ConfigError",
    "SerializationError",
    "RecordTooLargeError",
    "UnhashableKeyError",
    "BatchSchemaError",
    "FetchFailedError",
    "MetadataFetchFailedError",
    "CorruptBlockError",
    "OutOfDiskError",
    "InputNotFoundError",
    "OutputExistsError",
    "TaskFailedError",
    "JobAbortedError",
]


class ShuffleError(Exception):
    """Root of every error raised by shuffle.

    Errors pickle with their attributes (workers send them to the driver), although
    most subclasses take other arguments than their message.
    """

    def __reduce__(self) -> tuple:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type, args: tuple, state: dict) -> "ShuffleError":
    error = cls.__new__(cls, *args)  # no __init__: args and attributes are restored as they were
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(ShuffleError, ValueError):
    """A configuration value is malformed or contradicts the chosen mode."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"bad value for {key}: {value!r}; expected {expected}")


class SerializationError(ShuffleError):
    """A record could not be encoded or decoded.

    ``position`` is the record's index in the task's input when known; writers
    fill it in with :meth:`at` because encoders do not know where they are.
    """

    def __init__(self, type_name: str, reason: str, position: Optional[int] = None) -> None:
        self.type_name = type_name
        self.reason = reason
        self.position = position
        where = f"record {position}" if position is not None else "a record"
        super().__init__(f"cannot serialize {where} of type {type_name}: {reason}")

    def at(self, position: int) -> "SerializationError":
        """The same error, naming the record's position in its input."""
        err = type(self)(self.type_name, self.reason, position)
        err.__cause__ = self.__cause__
        return err


class RecordTooLargeError(ShuffleError):
    """One serialized record does not fit in a memory page of the serialized writer."""

    def __init__(self, size: int, limit: int, position: Optional[int] = None) -> None:
        self.size = size
        self.limit = limit
        self.position = position
        where = f"record {position}" if position is not None else "a record"
        super().__init__(
            f"{where} serializes to {size} bytes, more than the page limit of {limit} bytes; "
            "use the sort writer (shuffle.writer.force=sort) for records this large"
        )


class UnhashableKeyError(ShuffleError, TypeError):
    """A key that cannot be hashed (a list, a dict, a set): it has no partition and cannot be grouped."""

    def __init__(self, key: object, position: Optional[int] = None) -> None:
        self.type_name = type(key).__name__
        self.position = position
        where = f"record {position}" if position is not None else "a record"
        super().__init__(f"{where} has a key of unhashable type {self.type_name}; shuffling by key needs "
                         "hashable keys (e.g. a tuple instead of a list)")


class BatchSchemaError(ShuffleError, TypeError):
    """Input that a columnar (batch) shuffle cannot take: an object record where a
    ``(keys, values)`` batch of numpy arrays was expected, a dtype or shape the
    format cannot hold, or a batch whose dtypes differ from the shuffle's earlier ones.
    """

    def __init__(self, what: str, expected: str, got: str, batch: Optional[int] = None) -> None:
        self.what = what
        self.expected = expected
        self.got = got
        self.batch = batch
        where = f"batch {batch}: " if batch is not None else ""
        super().__init__(f"{where}{what} is {got}; expected {expected}")


class FetchFailedError(ShuffleError):
    """A shuffle block could not be fetched; the map that wrote it must be rerun."""

    def __init__(
        self,
        shuffle_id: int,
        map_id: Optional[int],
        reduce_id: Optional[int],
        location: object,
        cause: str,
    ) -> None:
        self.shuffle_id = shuffle_id
        self.map_id = map_id
        self.reduce_id = reduce_id
        self.location = location
        self.cause = cause
        super().__init__(
            f"fetch failed for shuffle {shuffle_id} map {map_id} reduce {reduce_id} "
            f"at {location}: {cause}"
        )


class MetadataFetchFailedError(FetchFailedError):
    """The tracker has no output registered for a map that a reader needs."""

    def __init__(self, shuffle_id: int, map_id: Optional[int], cause: str) -> None:
        super().__init__(shuffle_id, map_id, None, None, cause)


class CorruptBlockError(FetchFailedError):
    """A block's bytes do not match their checksum.

    ``diagnosis`` follows Spark's checksum diagnosis: ``DISK_ISSUE`` (the stored
    checksum no longer matches the file), ``NETWORK_ISSUE`` (the file is intact,
    the bytes changed in transfer), ``CHECKSUM_VERIFY_PASS``,
    ``UNSUPPORTED_CHECKSUM_ALGORITHM`` or ``UNKNOWN_ISSUE``.
    """

    def __init__(
        self,
        shuffle_id: int,
        map_id: Optional[int],
        reduce_id: Optional[int],
        location: object,
        diagnosis: str,
        detail: str = "",
    ) -> None:
        self.diagnosis = diagnosis
        cause = f"block is corrupted due to {diagnosis}" + (f" ({detail})" if detail else "")
        super().__init__(shuffle_id, map_id, reduce_id, location, cause)


class OutOfDiskError(ShuffleError, OSError):
    """A local directory has no room for what a task must write.

    ``needed`` is the size of the write that failed (at least that much more
    room is needed), None when unknown; ``free`` what the directory's file
    system reported free just after. The scheduler does not retry a task that
    failed this way: every executor shares this machine's disks.
    """

    def __init__(self, directory: str, needed: Optional[int], free: Optional[int]) -> None:
        self.directory = directory
        self.needed = needed
        self.free = free
        need = f"{needed} bytes needed, " if needed is not None else ""
        have = f"{free} bytes free" if free is not None else "no space left"
        ShuffleError.__init__(
            self,
            f"out of disk space in {directory}: {need}{have}; "
            "free space there or point spark.local.dir at a larger disk",
        )


class InputNotFoundError(ShuffleError, FileNotFoundError):
    """An input path or glob names no readable file."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        ShuffleError.__init__(self, f"no input file at {path}" + (f": {detail}" if detail else ""))


class OutputExistsError(ShuffleError, FileExistsError):
    """An output directory exists already and overwriting was not asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        ShuffleError.__init__(self, f"output directory {path} exists already; remove it or pass overwrite=True")


class TaskFailedError(ShuffleError):
    """A task failed on a worker; carries the worker's exception type, message and traceback text."""

    def __init__(self, description: str, exc_type: str, message: str, traceback_text: str) -> None:
        self.description = description
        self.exc_type = exc_type
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(f"{description} failed: {exc_type}: {message}")

    def __str__(self) -> str:
        return f"{self.args[0]}\n\nWorker traceback:\n{self.traceback_text}"


class JobAbortedError(ShuffleError):
    """A job stopped for good: a task failed too often, or a stage could not be recomputed."""
