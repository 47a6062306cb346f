"""Revokes cross between fastq and a real Celery 5.7 on Redis, both ways (kombu's fanout)."""

from __future__ import annotations

import shutil
import sys
import time
import uuid

import pytest

from tests.interop.processes import Proc
from tests.interop.test_celery_redis import (  # noqa: F401 - fixtures
    SENT,
    celery_client,
    env,
    fastq_client,
    queue,
)

pytest.importorskip("celery")

# no code with a compiled twin beyond what the first CI pass covers on both drivers
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def test_celery_revokes_reach_a_fastq_worker_on_redis(
        tmp_path, env, queue, celery_client, fastq_client) -> None:  # noqa: F811 - fixtures
    hostname = f"{queue}@test"
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.redis_app",
                   "-Q", queue, "-n", hostname, "-l", "info"], env,
                  str(tmp_path / "fastq-worker.log"))
    try:
        replies: list = []
        worker.wait_until(lambda: replies.extend(
            celery_client.control.ping(destination=[hostname], timeout=0.5)) or replies)
        assert replies == [{hostname: {"ok": "pong"}}]
        revoked_id = str(uuid.uuid4())
        celery_client.control.revoke(revoked_id)
        time.sleep(0.2)  # pub/sub and the queue are separate paths
        revoked = celery_client.send_task("t.add", (1, 2), queue=queue, task_id=revoked_id)
        kept = celery_client.send_task("t.add", (2, 3), queue=queue)
        SENT.setdefault(queue, []).extend([revoked.id, kept.id])
        assert kept.get(timeout=20) == 5
        meta = fastq_client.backend.wait(revoked_id, timeout=20)
        assert meta["status"] == "REVOKED"
        assert meta["result"]["exc_type"] == "TaskRevokedError"
    finally:
        worker.stop()
    assert f"Task t.add[{revoked_id}] revoked: not run" in worker.log()


def test_fastq_revokes_reach_a_celery_worker_on_redis(
        tmp_path, env, queue, fastq_client) -> None:  # noqa: F811 - fixtures
    command = shutil.which("celery") or pytest.skip("the celery command is not installed")
    worker = Proc([command, "-A", "tests.apps.celery_redis_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        revoked_id = str(uuid.uuid4())
        fastq_client.control.revoke(revoked_id)
        time.sleep(0.2)
        fastq_client.send_task("t.add", (1, 2), queue=queue, task_id=revoked_id)
        kept = fastq_client.send_task("t.add", (2, 3), queue=queue)
        SENT.setdefault(queue, []).extend([revoked_id, kept.id])
        assert kept.get(timeout=20) == 5
        worker.wait_until(lambda: f"Discarding revoked task: t.add[{revoked_id}]"
                          in worker.log())
        assert fastq_client.AsyncResult(revoked_id).state == "REVOKED"
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()  # nothing to keep, and its warm shutdown is slow
            worker.proc.wait(5)
        worker.stop()
