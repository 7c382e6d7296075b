"""Compiled Cython kernels, built from ``_ext/*.pyx`` by ``setup.py``.

Import kernels through :mod:`shuffle.kernels`, never from here directly: that
module picks between these and their plain-Python twins in ``shuffle._twins``.
"""
