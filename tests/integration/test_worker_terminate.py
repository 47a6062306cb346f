"""revoke(terminate=True) stops a running task on worker processes (RabbitMQ pidbox)."""

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

#: A task long enough that only a termination can end it within the test.
LONG = 60.0


def _wait_for_run(path, task_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not any(run[0] == task_id for run in read_runs(path)):
        assert time.monotonic() < deadline, f"task {task_id} never started"
        time.sleep(0.02)


def _celery_revoke(task_id: str) -> None:
    celery_module = pytest.importorskip("celery")
    client = celery_module.Celery("terminate-client", broker=URL)
    try:
        client.control.revoke(task_id, terminate=True, signal="SIGKILL")
    finally:
        client.close()


@pytest.mark.parametrize(("pool", "task_name", "sender"), [
    (["-P", "prefork", "-c", "2"], "t.sleep_echo", "fastq"),
    (["-P", "asyncio", "-c", "2"], "t.async_sleep_echo", "fastq"),
    (["-P", "prefork", "-c", "2"], "t.sleep_echo", "celery"),
    (["-P", "asyncio", "-c", "2"], "t.async_sleep_echo", "celery"),
], ids=["prefork", "asyncio", "prefork-celery-client", "asyncio-celery-client"])
def test_a_running_task_is_terminated_revoked_and_acked(tmp_path, pool, task_name, sender):
    queue = unique("terminate")
    hostname = f"{queue}@test"
    run_log = tmp_path / "runs.log"
    env, results_url = amqp_worker_setup(tmp_path, queue, URL)
    from tests.interop.test_events import EventCapture

    capture = EventCapture(URL)
    app = App("amqp-terminate", broker_url=URL, result_backend=results_url,
              task_default_queue=queue)
    long = app.send_task(task_name, (LONG, "long"))
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", *pool,
             "-Q", queue, "-n", hostname, "-l", "info", "-E"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_run(run_log, long.id)
        asked = time.monotonic()
        if sender == "celery":
            _celery_revoke(long.id)
        else:
            long.revoke(terminate=True)
        with pytest.raises(TaskRevokedError, match="terminated"):
            long.get(timeout=10)
        assert time.monotonic() - asked < 2.0
        after = app.send_task("t.add", (2, 3))
        assert after.get(timeout=20) == 5  # the worker goes on
        proc.terminate()
        assert proc.wait(15) == 0
        # the message was acked: one left unacked would be back in the queue now
        assert app.broker.queue_sizes()[queue] == 0
        assert len([r for r in read_runs(run_log) if r[0] == long.id]) == 1
        deadline = time.monotonic() + 10
        while not (revoked := [e for e in capture.of(hostname, "task-revoked")
                               if e["uuid"] == long.id]):
            assert time.monotonic() < deadline, capture.events
            time.sleep(0.02)
        signum = 9 if sender == "celery" else 15
        assert [(e["terminated"], e["signum"], e["expired"]) for e in revoked] \
            == [(True, signum, False)]
    finally:
        proc.terminate()
        proc.wait(15)
        capture.stop()
        app.close()
        delete_queues([queue])
    output = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in output, output
    assert f"Task {task_name}[{long.id}] terminated" in output, output
    assert f"[{long.id}] revoked: not run" not in output, output
    assert long.state == "REVOKED"


def test_the_threads_pool_says_it_cannot_interrupt_and_lets_the_task_finish(tmp_path):
    queue = unique("terminate-threads")
    run_log = tmp_path / "runs.log"
    env, results_url = amqp_worker_setup(tmp_path, queue, URL)
    app = App("amqp-terminate-threads", broker_url=URL, result_backend=results_url,
              task_default_queue=queue)
    task = app.send_task("t.sleep_echo", (1.5, "finished"))
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", "-P",
             "threads", "-c", "2", "-Q", queue, "-n", f"{queue}@test", "-l", "info"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_run(run_log, task.id)
        task.revoke(terminate=True)
        assert task.get(timeout=20) == "finished"
    finally:
        proc.terminate()
        proc.wait(15)
        app.close()
        delete_queues([queue])
    output = (tmp_path / "worker.log").read_text()
    assert f"Task {task.id} cannot be interrupted by the ThreadPool" in output, output
