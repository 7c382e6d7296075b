"""Starting helper processes (workers, fetch processes) without re-running the user's script.

With ``spawn`` and ``forkserver``, multiprocessing makes every child import
the parent's ``__main__`` module, so a script that creates a ``Context`` at
top level, without an ``if __name__ == "__main__"`` guard, would start
contexts inside its own workers. Our children never need ``__main__``:
their entry points live in this package and tasks travel cloudpickled (which
carries ``__main__`` functions by value). So :func:`start_process` hides
``__main__``'s location from multiprocessing for the moment of ``start()``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["start_process"]

_lock = threading.Lock()
_MISSING = object()


def start_process(process: Any) -> None:
    """``process.start()``, without the child importing the parent's ``__main__``."""
    main = sys.modules.get("__main__")
    if main is None:
        process.start()
        return
    with _lock:
        saved_file = main.__dict__.get("__file__", _MISSING)
        saved_spec = main.__dict__.get("__spec__", _MISSING)
        try:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
            process.start()
        finally:
            if saved_file is not _MISSING:
                main.__dict__["__file__"] = saved_file
            if saved_spec is _MISSING:
                main.__dict__.pop("__spec__", None)
            else:
                main.__dict__["__spec__"] = saved_spec
