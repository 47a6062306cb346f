"""The default (adaptive) prefetch window on RabbitMQ: no short task is stranded behind a
long one, and a worker of short tasks opens its window deep."""

from __future__ import annotations

import time

import pytest

from fastq import App
from fastq.states import SUCCESS
from tests.integration.conftest import WorkerProcess, amqp_worker_setup
from tests.integration.test_amqp_broker import HAVE_C, delete_queues, driver_url, unique

pytestmark = pytest.mark.integration

#: How long the long task runs; the short ones must all be done well before it ends.
LONG_SECONDS = 8.0


@pytest.fixture
def two_workers(tmp_path):
    """Two solo workers with default settings on a fresh queue, and an app to send to them."""
    queue = unique("adaptive")
    url = driver_url("c" if HAVE_C else "py")
    env, results = amqp_worker_setup(tmp_path, queue, url)
    env.pop("FASTQ_WORKER_PREFETCH_MULTIPLIER", None)
    workers = [WorkerProcess(tmp_path, url, str(tmp_path / "runs.log"), env)
               for _ in range(2)]
    app = App("adaptive-prefetch", broker_url=url, result_backend=results,
              task_default_queue=queue)
    try:
        for worker in workers:
            worker.log_file = str(tmp_path / f"worker-{id(worker)}.log")
            worker.start("-A", "tests.apps.amqp_app", "-Q", queue)
        yield workers, app
    finally:
        for worker in workers:
            worker.stop()
        app.close()
        delete_queues([queue])


def test_short_tasks_are_not_stranded_behind_a_long_one(two_workers) -> None:
    workers, app = two_workers
    assert all("prefetch=adaptive" in worker.log() for worker in workers)
    long_task = app.send_task("t.sleep_echo", args=[LONG_SECONDS, "long"])
    published = time.monotonic()
    short = [app.send_task("t.sleep_echo", args=[0.001, i]) for i in range(100)]
    deadline = published + LONG_SECONDS * 0.75
    while time.monotonic() < deadline and not all(r.ready() for r in short):
        time.sleep(0.05)
    finished = [r for r in short if r.ready()]
    # with a fixed window of 4 (Celery's default) three of them wait the whole 8 s
    assert len(finished) == 100, f"{100 - len(finished)} short tasks held behind the long one"
    assert not long_task.ready()  # it really was running all along
    assert [r.state for r in short] == [SUCCESS] * 100
    assert long_task.get(timeout=LONG_SECONDS * 3) == "long"
