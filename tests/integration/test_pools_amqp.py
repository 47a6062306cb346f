"""Each in-process pool on RabbitMQ, with both AMQP drivers: results, failures, overlap,
and a warm shutdown under load that loses nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from fastq import App
from tests.integration.conftest import amqp_worker_setup, read_runs
from tests.integration.test_amqp_broker import delete_queues, driver_url, unique

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

POOLS = ["threads", "gevent", "eventlet", "asyncio"]


@pytest.mark.parametrize("pool", POOLS)
def test_pool_on_rabbitmq(tmp_path, pool, impl) -> None:
    driver = impl
    queue = unique(f"pool-{pool}")
    run_log = tmp_path / "runs.log"
    env, results_url = amqp_worker_setup(tmp_path, queue, driver_url(driver))
    app = App("amqp-pools", broker_url=driver_url(driver), result_backend=results_url,
              task_default_queue=queue)
    log_path = tmp_path / "worker.log"

    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app",
                 "-P", pool, "-c", "8", "-Q", queue, "-l", "info"],
                env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)

    proc = start()
    try:
        adds = [app.send_task("t.add", (i, i)) for i in range(300)]
        failed = app.send_task("t.fail", ("no", 7))
        sleeps = [app.send_task("t.sleep_echo", (0.6, i)) for i in range(8)]
        assert [r.get(timeout=30) for r in adds] == [2 * i for i in range(300)]
        with pytest.raises(KeyError):
            failed.get(timeout=30)
        assert [r.get(timeout=30) for r in sleeps] == list(range(8))
        starts = sorted(float(row[3]) for row in read_runs(run_log) if row[1] == "t.sleep_echo")
        assert len(starts) == 8 and starts[-1] - starts[0] < 0.5, starts

        # warm shutdown with work in flight: nothing lost, nothing run twice
        batch = [app.send_task("t.sleep_echo", (0.2, i)) for i in range(40)]
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        proc = start()
        assert [r.get(timeout=30) for r in batch] == list(range(40))
        ids = [row[0] for row in read_runs(run_log)]
        assert all(ids.count(r.id) == 1 for r in batch), "a task ran twice"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        app.close()
        delete_queues([queue])
