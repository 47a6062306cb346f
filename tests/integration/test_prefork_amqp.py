"""The prefork pool on RabbitMQ: each child its own connection; a killed child's
messages come back when its channel closes."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest

from fastq import App
from tests.integration.conftest import WorkerProcess, amqp_worker_setup
from tests.integration.test_amqp_broker import HAVE_C, delete_queues, driver_url, unique

# supervision around the same consumer the solo tests run on both twins
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture
def amqp_prefork(tmp_path):
    """A prefork worker (-c 2) on a fresh queue, and an app to send to it."""
    queue = unique("prefork")
    url = driver_url("c" if HAVE_C else "py")
    env, results = amqp_worker_setup(tmp_path, queue, url)
    worker = WorkerProcess(tmp_path, url, str(tmp_path / "runs.log"), env)
    app = App("prefork-amqp", broker_url=url, result_backend=results, task_default_queue=queue)
    try:
        worker.start("-A", "tests.apps.amqp_app", "-P", "prefork", "-c", "2", "-Q", queue)
        yield worker, app
    finally:
        code = worker.stop()
        app.close()
        delete_queues([queue])
    assert code == 0, worker.log()


def test_prefork_runs_tasks_and_stores_results(amqp_prefork):
    worker, app = amqp_prefork
    results = [app.send_task("t.add", (i, i)) for i in range(200)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(200)]
    with pytest.raises(KeyError):
        app.send_task("t.fail", ("no", 1)).get(timeout=20)
    assert "; consumer: compiled; AMQP driver: rabbitmq-c " in worker.log() or not HAVE_C


def test_killed_child_s_message_returns_when_its_channel_closes(amqp_prefork):
    worker, app = amqp_prefork
    result = app.send_task("t.sleep_echo", (3.0, "once more"))
    deadline = time.monotonic() + 20
    holder = None
    # the child's report names the task; the run log says its body began
    while (holder is None or not worker.runs(result.id)) and time.monotonic() < deadline:
        with open(worker.health_file, "rb") as fh:
            report = orjson.loads(fh.read())
        holder = next((c["pid"] for c in report["children"] if c["running"] == result.id),
                      None)
        time.sleep(0.02)
    assert holder is not None, worker.log()
    os.kill(holder, signal.SIGKILL)
    assert result.get(timeout=30) == "once more"
    assert len(worker.runs(result.id)) == 2
    assert f"child {holder} died (killed by SIGKILL)" in worker.log()
