"""Choose, once, between the compiled kernels and their plain-Python twins.

``SHUFFLE_PUREPYTHON=1`` selects the twins on purpose. Otherwise the compiled
modules must be present; a missing one is reported in one readable line
rather than a fallback that silently runs many times slower.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["PURE_PYTHON", "load"]

PURE_PYTHON = os.environ.get("SHUFFLE_PUREPYTHON", "") not in ("", "0")


def load(name: str) -> ModuleType:
    """The kernel module ``name``: compiled, or its twin under SHUFFLE_PUREPYTHON=1."""
    if PURE_PYTHON:
        return importlib.import_module(f"shuffle._twins.{name}")
    try:
        return importlib.import_module(f"shuffle._native.{name}")
    except ImportError as e:
        raise ImportError(
            f"shuffle's compiled kernel shuffle._native.{name} is missing ({e}); "
            "reinstall with `pip install .` to build it, or set SHUFFLE_PUREPYTHON=1 "
            "to use the plain-Python twins"
        ) from None
