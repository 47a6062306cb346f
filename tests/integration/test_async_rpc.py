"""Awaiting rpc:// results (replies on the caller's AMQP queue) from asyncio code, from a real worker."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid

import pytest

from fastq import App
from tests.apps.async_app import Boom, define_tasks
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc, read_health

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(tmp_path):
    queue = f"fastq-test-async-rpc-{uuid.uuid4().hex[:10]}"
    health = str(tmp_path / "health.json")
    env = dict(os.environ, FASTQ_BROKER_URL=URL, FASTQ_RESULT_BACKEND="rpc://",
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.async_app",
                   "-P", "asyncio", "-c", "200", "-Q", queue, "--health-file", health],
                  env, str(tmp_path / "worker.log"))
    app = App("async-rpc-client", broker=URL, backend="rpc://", task_default_queue=queue)
    try:
        worker.wait_until(lambda: read_health(health).get("state") == "consuming")
        yield app, define_tasks(app)
    finally:
        app.close()
        worker.stop()
        delete_queues([queue])


def test_rpc_results_are_awaited_without_a_thread_per_wait(deployment) -> None:
    _app, tasks = deployment

    async def main():
        first = await tasks.add.adelay(2, 3)
        failed = await tasks.fail.adelay("over rpc")
        naps = [await tasks.nap.adelay(0.5, i) for i in range(200)]
        started = time.monotonic()
        values = await asyncio.gather(*(r.aget(timeout=20) for r in naps))
        elapsed = time.monotonic() - started
        with pytest.raises(Boom, match="over rpc"):
            await failed
        return await first, values, elapsed, [t.name for t in threading.enumerate()]

    first, values, elapsed, threads = asyncio.run(asyncio.wait_for(main(), 60))
    assert first == 5
    assert values == list(range(200))
    assert elapsed < 5.0
    assert sum(name.startswith("fastq-result-poll") for name in threads) <= 1

