"""Build the Cython kernels in _ext/ as shuffle._native.<name>.

Compiler directives are set once here. SHUFFLE_CYTHON_DEBUG=1 turns bounds and
wraparound checks back on, for hunting a kernel bug.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SHUFFLE_CYTHON_DEBUG") == "1"

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

extensions = [
    Extension(f"shuffle._native.{pyx.stem}", [str(pyx)], extra_compile_args=["-O3"])
    for pyx in sorted(Path("_ext").glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["_ext"]))
