"""rpc:// results between fastq and a real Celery 5.7 on RabbitMQ, in both directions."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
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
    name = f"fastq-interop-rpc-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues([name])


@pytest.fixture
def env(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=URL, CELERY_BROKER_URL=URL,
                FASTQ_RESULT_BACKEND="rpc://",
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                FASTQ_TEST_RUN_LOG=str(tmp_path / "runs.log"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def test_a_celery_client_reads_a_fastq_workers_reply(tmp_path, env, queue) -> None:
    from celery import Celery

    celery = Celery("interop-rpc-client", broker=URL, backend="rpc://")
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.amqp_app",
                   "-P", "solo", "-Q", queue, "-l", "info"], env,
                  str(tmp_path / "fastq-worker.log"))
    try:
        result = celery.send_task("t.add", (20, 22), queue=queue)
        assert result.get(timeout=20) == 42
        failed = celery.send_task("t.fail", ("boom", 7), queue=queue)
        with pytest.raises(KeyError) as info:
            failed.get(timeout=20)
        assert info.value.args == ("boom", 7)
        assert failed.state == "FAILURE"
    finally:
        worker.stop()
        # Celery's close() leaves its rpc result consumer's connection open (found as an
        # unclosed socket the garbage collector reported in a later test)
        with contextlib.suppress(AttributeError):
            celery.backend.result_consumer.stop()
        celery.close()
    assert "could not store" not in worker.log(), worker.log()


def test_a_fastq_client_reads_a_celery_workers_reply(tmp_path, env, queue) -> None:
    command = shutil.which("celery") or pytest.skip("the celery command is not installed")
    worker = Proc([command, "-A", "tests.apps.celery_rpc_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    fastq = App("interop-rpc-client", broker_url=URL, result_backend="rpc://")
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        results = [fastq.send_task("t.add", (n, 1), queue=queue) for n in range(3)]
        failed = fastq.send_task("t.fail", ("bad", 1), queue=queue)
        # read in the reverse order: earlier replies wait in the cache
        with pytest.raises(KeyError) as info:
            failed.get(timeout=20)
        assert info.value.args == ("bad", 1)
        assert [r.get(timeout=20) for r in reversed(results)] == [3, 2, 1]
    finally:
        worker.stop()
        fastq.close()
