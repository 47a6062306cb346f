"""Revoking tasks on worker processes: SQLite (the control table) and RabbitMQ (pidbox)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fastq import App, TaskRevokedError
from tests.integration.conftest import amqp_worker_setup, read_runs
from tests.integration.test_amqp_broker import URL, delete_queues, unique

# no code with a compiled twin beyond what the first CI pass covers on both drivers
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def _wait_for_run(runs, task_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not any(run[0] == task_id for run in runs()):
        assert time.monotonic() < deadline, f"task {task_id} never started"
        time.sleep(0.02)


def test_sqlite_a_prefetched_task_revoked_while_it_waits_is_not_run(worker, producer):
    long = producer.send_task("t.sleep", (2.0,))
    held = producer.send_task("t.add", (1, 2))
    w = worker("-P", "solo", "--prefetch-multiplier", "4")
    _wait_for_run(w.runs, long.id)
    held.revoke()  # the worker polls the control table about once a second
    with pytest.raises(TaskRevokedError, match="revoked"):
        held.get(timeout=20)
    assert long.get(timeout=20) == 2.0
    assert w.runs(held.id) == []
    # a worker that starts after the revoke learns of it from the table
    w.stop()
    late = producer.send_task("t.add", (5, 5))
    producer.control.revoke(late.id)
    ok = producer.send_task("t.add", (1, 1))
    w2 = worker("-P", "prefork", "-c", "2")
    assert ok.get(timeout=20) == 2
    assert late.state == "REVOKED"
    assert w2.runs(late.id) == []
    assert f"Task t.add[{held.id}] revoked: not run" in w.log()


def test_rabbitmq_a_prefetched_task_revoked_while_it_waits_is_not_run(tmp_path):
    queue = unique("revoke")
    hostname = f"{queue}@test"
    run_log = tmp_path / "runs.log"
    env, results_url = amqp_worker_setup(tmp_path, queue, URL)
    app = App("amqp-revoke", broker_url=URL, result_backend=results_url,
              task_default_queue=queue)
    health = tmp_path / "health.json"
    long = app.send_task("t.sleep_echo", (1.0, "long"))
    held = app.send_task("t.add", (1, 2))
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", "-P", "solo",
             "-Q", queue, "-n", hostname, "-l", "info", "--health-file", str(health)],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_run(lambda: read_runs(run_log), long.id)
        held.revoke()
        with pytest.raises(TaskRevokedError):
            held.get(timeout=20)
        assert long.get(timeout=20) == "long"
        assert [r for r in read_runs(run_log) if r[0] == held.id] == []
    finally:
        proc.terminate()
        proc.wait(15)
        app.close()
        delete_queues([queue])
    output = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in output, output
    assert f"{hostname}: tasks flagged as revoked: {held.id}" in output
