"""The benchmark harness behind ``shuffle bench``: workloads W1-W5, baselines and peers in one run.

``data`` generates and caches the inputs, ``workloads`` defines each workload
on the engine and as its plain single-process baseline, ``measure`` times runs
and samples memory, ``results`` holds a result row and the check that makes it
count, ``peers`` runs PySpark, Dask, DuckDB and Polars when installed,
``runner`` puts them side by side, ``report`` prints and saves the results,
``command`` is the ``shuffle bench`` command line. Nothing is imported here,
so the ``shuffle`` command starts without the harness's dependencies.
"""
