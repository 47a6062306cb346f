"""fastq and a real Celery 5.7 sharing RabbitMQ: tasks cross in both directions."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc

pytest.importorskip("celery")

pytestmark = pytest.mark.integration



@pytest.fixture
def queue() -> Iterator[str]:
    name = f"fastq-interop-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues([name])


@pytest.fixture
def env(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=URL, CELERY_BROKER_URL=URL,
                FASTQ_RESULT_BACKEND=f"sqlite:///{tmp_path / 'results.sqlite3'}",
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                FASTQ_TEST_RUN_LOG=str(tmp_path / "runs.log"),
                CELERY_OUT_DIR=str(tmp_path),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def test_a_celery_task_runs_on_a_fastq_worker(tmp_path, env, queue) -> None:
    from celery import Celery

    celery = Celery("interop-client", broker=URL)
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.amqp_app",
                   "-P", "solo", "-Q", queue, "-l", "info"], env,
                  str(tmp_path / "fastq-worker.log"))
    fastq = App("interop-reader", broker_url=URL, result_backend=env["FASTQ_RESULT_BACKEND"])
    try:
        sent = time.time()
        result = celery.send_task("t.echo", (2, "three", {"four": [4]}), {"five": 5.5},
                                  queue=queue, countdown=1, expires=60)
        value = fastq.AsyncResult(result.id).get(timeout=20)
        assert value["args"] == [2, "three", {"four": [4]}]
        assert value["kwargs"] == {"five": 5.5}
        with open(env["FASTQ_TEST_RUN_LOG"]) as fh:
            [run] = [line.split() for line in fh if line.startswith(result.id)]
        assert float(run[3]) >= sent + 1 - 0.05, "ran before its countdown"
        # an already expired task is revoked, not run
        late = celery.send_task("t.echo", (1,), queue=queue, expires=-1)
        meta = fastq.backend.wait(late.id, timeout=20)
        assert meta["status"] == "REVOKED"
    finally:
        worker.stop()
        celery.close()
        fastq.close()
    assert "Traceback" not in worker.log(), worker.log()


def test_a_fastq_task_runs_on_a_celery_worker(tmp_path, env, queue) -> None:
    command = shutil.which("celery") or pytest.skip("the celery command is not installed")
    worker = Proc([command, "-A", "tests.apps.celery_amqp_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    fastq = App("interop-client", broker_url=URL)
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        result = fastq.send_task("t.record", (1, "two", [3.5, None], {"k": True}),
                                 {"big": 2 ** 40}, queue=queue)
        out = tmp_path / f"{result.id}.json"
        worker.wait_until(out.exists)
        data = json.loads(out.read_text())
        assert data["args"] == [1, "two", [3.5, None], {"k": True}]
        assert data["kwargs"] == {"big": 2 ** 40}
        assert data["retries"] == 0
    finally:
        worker.stop()
        fastq.close()
    assert f"Task t.record[{result.id}] received" in worker.log()
