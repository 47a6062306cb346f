"""Every pool that runs in the worker's own process keeps the Pool contract
(fastq.testing.contracts.PoolContract): completions, warm and cold close, terminate,
grow and shrink, concurrency.

gevent and eventlet are not here: building their pool monkey-patches the whole process
(``fastq._green.patch``), which the rest of the suite in this process would then run
under. tests/integration/test_pools.py and test_worker_terminate_pools.py hold them to the
same behaviours in worker processes. Prefork's parent runs no jobs (its children run solo
pools): tests/unit/test_prefork_decisions.py.
"""

from __future__ import annotations

import pytest

from fastq.testing.contracts import PoolContract
from fastq.worker.pools.asyncio import AsyncioPool
from fastq.worker.pools.solo import SoloPool
from fastq.worker.pools.threads import ThreadPool

# the pools are the same Python code with or without the speedups
pytestmark = pytest.mark.twin_neutral


class TestSoloPool(PoolContract):
    pool_class = SoloPool
    resizable = False


class TestThreadPool(PoolContract):
    pool_class = ThreadPool
    # a thread cannot be interrupted: the task runs to its end
    terminates = False


class TestAsyncioPool(PoolContract):
    pool_class = AsyncioPool
