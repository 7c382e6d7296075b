"""``shuffle explain``: a tiny job traced byte by byte through the real writers and readers.

:mod:`~shuffle.explain.trace` runs the job and records a :class:`Trace`;
:mod:`~shuffle.explain.text` and :mod:`~shuffle.explain.html` render it.
"""

from shuffle.explain.trace import Trace, run_trace

__all__ = ["Trace", "run_trace"]
