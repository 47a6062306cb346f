"""fastq and a real Celery 5.7 sharing SQS queues (a moto server), results in Redis."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, require_redis
from tests.integration.sqs_support import moto_endpoint, sqs_prefix  # noqa: F401
from tests.interop.processes import ROOT, Proc, start_fastq_worker

pytest.importorskip("celery")
pytest.importorskip("pycurl", reason="kombu's SQS transport needs pycurl on the worker side")

# the SQS broker has no compiled twin
# kombu's SQS channels raise in __del__ when collected: Celery's noise, not fastq's
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture
def queue() -> str:
    """A queue name unique to the test (with a dot: kombu's SQS name has a hyphen)."""
    require_redis()
    return f"interop.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def options(moto_endpoint, sqs_prefix) -> dict:  # noqa: F811
    # the same queue names on both sides; short polls so the Celery worker sees work soon
    return {"region": "us-east-1", "queue_name_prefix": sqs_prefix, "wait_time_seconds": 1,
            "polling_interval": 0.1}


@pytest.fixture
def celery_url(moto_endpoint) -> str:  # noqa: F811
    # kombu's endpoint form: a host in the URL, plain http unless is_secure
    return f"sqs://testing:testing@{moto_endpoint.split('://', 1)[1]}"


@pytest.fixture
def env(tmp_path, options, celery_url) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=celery_url,
                FASTQ_BROKER_TRANSPORT_OPTIONS=json.dumps(options),
                FASTQ_RESULT_BACKEND=REDIS_URL,
                CELERY_TEST_BROKER_URL=celery_url,
                CELERY_TEST_TRANSPORT_OPTIONS=json.dumps(options),
                CELERY_TEST_RESULT_BACKEND=REDIS_URL,
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def fastq_worker(tmp_path, env, queue) -> Iterator[Proc]:
    worker = start_fastq_worker("tests.apps.sqs_app", queue, env, str(tmp_path / "fastq-worker.log"),
                                str(tmp_path / "health.json"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_worker(tmp_path, env, queue) -> Iterator[Proc]:
    celery = shutil.which("celery") or pytest.skip("the celery command is not installed")
    worker = Proc([celery, "-A", "tests.apps.celery_sqs_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    try:
        worker.wait_until(lambda: "ready." in worker.log(), timeout=40)
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_client(options, celery_url):
    from celery import Celery

    app = Celery("interop-client", broker=celery_url, backend=REDIS_URL)
    app.conf.broker_transport_options = options
    yield app
    app.close()


@pytest.fixture
def fastq_client(env, monkeypatch) -> Iterator[App]:
    for key in ("FASTQ_BROKER_URL", "FASTQ_BROKER_TRANSPORT_OPTIONS", "FASTQ_RESULT_BACKEND"):
        monkeypatch.setenv(key, env[key])
    app = App("interop-client")
    yield app
    app.close()


def _forget(app, *results) -> None:
    for result in results:
        app.backend.forget(result.id)


def test_a_celery_task_runs_on_a_fastq_worker(fastq_worker, celery_client, queue) -> None:
    result = celery_client.send_task("t.add", (2, 3), queue=queue)
    failed = celery_client.send_task("t.fail", ("boom",), queue=queue)
    try:
        assert result.get(timeout=30) == 5  # Celery's AsyncResult reads fastq's result
        with pytest.raises(Exception, match="boom") as raised:
            failed.get(timeout=30)
        assert type(raised.value).__name__ == "Boom"
    finally:
        _forget(celery_client, result, failed)


def test_a_fastq_task_runs_on_a_celery_worker(celery_worker, fastq_client, queue) -> None:
    result = fastq_client.send_task("t.add", (4, 5), queue=queue)
    failed = fastq_client.send_task("t.fail", ("bad",), queue=queue)
    later = fastq_client.send_task("t.add", (1, 1), queue=queue, countdown=1)
    try:
        assert result.get(timeout=30) == 9  # fastq's AsyncResult reads Celery's result
        with pytest.raises(Exception, match="bad"):
            failed.get(timeout=30)
        assert later.get(timeout=30) == 2  # delayed by SQS, then run by Celery
        assert f"Task t.add[{result.id}] received" in celery_worker.log()
    finally:
        _forget(fastq_client, result, failed, later)
