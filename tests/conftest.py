"""Shared test setup.

The probes' voice measurements run many small complex matrix products; with OpenBLAS's default
thread pool on a small, busy machine these are an order of magnitude slower than single-threaded
(the threads fight the other pytest worker / process for the same cores). Pin the pools to one
thread before numpy is first imported; an explicit setting in the environment still wins.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
