"""Every pool that runs jobs in the worker's own process keeps the Pool contract
(fastq.testing.contracts.PoolContract): completions, warm and cold close, terminate,
grow and shrink, concurrency.

gevent and eventlet are held to it in a process of their own: a green pool monkey-patches
the whole process, which the rest of the suite must not run under. Prefork's parent runs
no jobs (its children run solo pools): tests/unit/test_prefork_decisions.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastq.testing.contracts import PoolContract
from fastq.worker.pools import pool_class
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


#: set in the process the test below starts, patched for the green pool it names
GREEN_POOL_ENV = "POOL_CONTRACT_GREEN"

if os.environ.get(GREEN_POOL_ENV):
    class TestGreenPool(PoolContract):
        pool_class = pool_class(os.environ[GREEN_POOL_ENV])

# patched first, as `fastq worker -P gevent` is, then this file's TestGreenPool
_RUN_PATCHED = ("import sys; from fastq import _green; _green.patch(sys.argv[1]); "
                "import pytest; sys.exit(pytest.main(sys.argv[2:]))")


@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_green_pool_keeps_the_contract_in_a_patched_process(library):
    pytest.importorskip(library)
    here = Path(__file__)
    command = [sys.executable, "-c", _RUN_PATCHED, library, f"{here}::TestGreenPool",
               "-q", "-p", "no:cacheprovider",
               # Only the plugins this file needs: whatever else the interpreter has installed
               # (anyio's plugin imports trio, pytest-benchmark asks git for the project's
               # name) may not load in a monkey-patched process.
               "-p", "pytest_timeout", "-p", "fastq.testing.plugin",
               # fastq was imported to patch first: pytest cannot rewrite its asserts
               "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    environment = {**os.environ, GREEN_POOL_ENV: library, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(command, cwd=here.parents[2], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    every_test = sum(name.startswith("test_") for name in dir(PoolContract))
    assert f"{every_test} passed in" in done.stdout, done.stdout
