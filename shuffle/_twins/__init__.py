"""Plain-Python twins of the Cython kernels in ``_ext/``.

Each module here has the same public functions, with the same arguments,
results and errors, as the compiled module of the same name. They are the
readable specification of each kernel and the fallback selected by
``SHUFFLE_PUREPYTHON=1``; tests hold both to the same answers.
"""
