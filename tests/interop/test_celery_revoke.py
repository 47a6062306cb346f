"""Revokes cross between fastq and a real Celery 5.7 on RabbitMQ, both ways (pidbox)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc

pytest.importorskip("celery")

# no code with a compiled twin beyond what the first CI pass covers on both drivers;
# Celery's control client leaves sockets for the garbage collector (see collect_celery_leftovers)
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral,
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture(autouse=True)
def collect_celery_leftovers() -> Iterator[None]:
    """Finalize what Celery's control client left open here, under this module's warning
    filters, instead of in whichever later test the garbage collector happens to run."""
    yield
    import gc

    gc.collect()


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"fastq-interop-revoke-{uuid.uuid4().hex[:10]}"
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


def test_celery_revokes_reach_a_fastq_worker(tmp_path, env, queue) -> None:
    from celery import Celery

    hostname = f"{queue}@test"
    celery = Celery("interop-client", broker=URL)
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.amqp_app",
                   "-P", "solo", "-Q", queue, "-n", hostname, "-l", "info"], env,
                  str(tmp_path / "fastq-worker.log"))
    fastq = App("interop-reader", broker_url=URL, result_backend=env["FASTQ_RESULT_BACKEND"])
    try:
        # the fastq worker answers Celery's ping through the reply exchange
        replies: list = []
        worker.wait_until(lambda: replies.extend(
            celery.control.ping(destination=[hostname], timeout=0.5)) or replies)
        assert replies == [{hostname: {"ok": "pong"}}]

        by_api, by_cli = str(uuid.uuid4()), str(uuid.uuid4())
        celery.control.revoke(by_api)
        command = shutil.which("celery") or pytest.skip("the celery command is not installed")
        cli = subprocess.run(
            [command, "-A", "tests.apps.celery_amqp_app", "control", "revoke", by_cli,
             "-d", hostname, "--timeout", "5"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert f"tasks {by_cli} flagged as revoked" in cli.stdout + cli.stderr
        for task_id in (by_api, by_cli):
            celery.send_task("t.add", (1, 2), queue=queue, task_id=task_id)
        normal = celery.send_task("t.add", (2, 3), queue=queue)
        assert fastq.AsyncResult(normal.id).get(timeout=20) == 5
        for task_id in (by_api, by_cli):
            meta = fastq.backend.wait(task_id, timeout=20)
            assert meta["status"] == "REVOKED"
            assert meta["result"]["exc_type"] == "TaskRevokedError"
    finally:
        worker.stop()
        celery.close()
        fastq.close()
    log = worker.log()
    assert "Traceback" not in log, log
    assert f"Task t.add[{by_api}] revoked: not run" in log


def test_fastq_revokes_reach_a_celery_worker(tmp_path, env, queue) -> None:
    command = shutil.which("celery") or pytest.skip("the celery command is not installed")
    worker = Proc([command, "-A", "tests.apps.celery_amqp_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    fastq = App("interop-client", broker_url=URL)
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        revoked_id = str(uuid.uuid4())
        fastq.control.revoke(revoked_id)
        time.sleep(0.2)  # the revoke and the task travel through different queues
        fastq.send_task("t.record", (1,), queue=queue, task_id=revoked_id)
        kept = fastq.send_task("t.record", (2,), queue=queue)
        worker.wait_until((tmp_path / f"{kept.id}.json").exists)
        worker.wait_until(lambda: f"Discarding revoked task: t.record[{revoked_id}]"
                          in worker.log())
        assert not (tmp_path / f"{revoked_id}.json").exists()
        assert f"Tasks flagged as revoked: {revoked_id}" in worker.log()
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()  # nothing to keep, and its warm shutdown takes ~10 s
            worker.proc.wait(5)
        worker.stop()
        fastq.close()
