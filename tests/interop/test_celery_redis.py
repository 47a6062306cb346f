"""fastq and a real Celery 5.7 sharing Redis: tasks and results cross in both directions."""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, require_redis
from tests.interop.processes import ROOT, Proc, start_fastq_worker

pytest.importorskip("celery")

# no compiled twin in the Redis code
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

#: Task ids sent per queue, so the test's result keys can be deleted afterwards.
SENT: dict[str, list[str]] = {}



@pytest.fixture
def queue() -> Iterator[str]:
    """A queue name unique to the test; its lists and fastq's keys are deleted after."""
    require_redis()
    name = f"interop-{uuid.uuid4().hex[:10]}"
    yield name
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k for k in client.scan_iter(match=f"*{name}*", count=1000)]
        results = [f"celery-task-meta-{task_id}" for task_id in SENT.pop(name, [])]
        if keys or results:
            client.delete(*keys, *results)
        # Celery's bookkeeping of its queues' and (once no worker is left) pidbox's tables
        client.zrem("_kombu.binding_deadlines", name)
        if not client.exists("_kombu.binding.celery.pidbox"):
            client.zrem("_kombu.binding_deadlines", "celery.pidbox")
    finally:
        client.close()


@pytest.fixture
def env(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_RESULT_BACKEND=REDIS_URL,
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def fastq_worker(tmp_path, env, queue) -> Iterator[Proc]:
    worker = start_fastq_worker("tests.apps.redis_app", queue, env, str(tmp_path / "fastq-worker.log"),
                                str(tmp_path / "health.json"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_worker(tmp_path, env, queue) -> Iterator[Proc]:
    celery = shutil.which("celery") or pytest.skip("the celery command is not installed")
    worker = Proc([celery, "-A", "tests.apps.celery_redis_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_client():
    from celery import Celery

    app = Celery("interop-client", broker=REDIS_URL, backend=REDIS_URL)
    yield app
    app.close()


@pytest.fixture
def fastq_client(env, monkeypatch) -> Iterator[App]:
    monkeypatch.setenv("FASTQ_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("FASTQ_RESULT_BACKEND", REDIS_URL)
    app = App("interop-client")
    yield app
    app.close()


def test_a_celery_task_runs_on_a_fastq_worker(fastq_worker, celery_client, queue) -> None:
    result = celery_client.send_task("t.add", (2, 3), queue=queue, priority=5)
    assert result.get(timeout=20) == 5  # Celery's AsyncResult reads fastq's result
    failed = celery_client.send_task("t.fail", ("boom",), queue=queue)
    SENT[queue] = [result.id, failed.id]
    with pytest.raises(Exception, match="boom") as raised:
        failed.get(timeout=20)
    assert type(raised.value).__name__ == "Boom"
    assert failed.state == "FAILURE"


def test_a_fastq_task_runs_on_a_celery_worker(celery_worker, fastq_client, queue) -> None:
    result = fastq_client.send_task("t.add", (4, 5), queue=queue)
    assert result.get(timeout=20) == 9  # fastq's AsyncResult reads Celery's result
    prioritised = fastq_client.send_task("t.add", (1, 1), queue=queue, priority=7)
    assert prioritised.get(timeout=20) == 2  # found in kombu's priority band
    failed = fastq_client.send_task("t.fail", ("bad",), queue=queue)
    SENT[queue] = [result.id, prioritised.id, failed.id]
    with pytest.raises(Exception, match="bad"):
        failed.get(timeout=20)
    assert f"Task t.add[{result.id}] received" in celery_worker.log()


def test_results_cross_without_workers(celery_client, fastq_client, queue) -> None:
    from celery.result import AsyncResult as CeleryResult

    task_id = str(uuid.uuid4())
    fastq_client.backend.store(task_id, "SUCCESS", {"from": "fastq"})
    assert CeleryResult(task_id, app=celery_client).get(timeout=5) == {"from": "fastq"}
    other_id = str(uuid.uuid4())
    with warnings.catch_warnings():
        # Celery 5.7's redis backend calls redis-py's deprecated setex()
        warnings.simplefilter("ignore", DeprecationWarning)
        celery_client.backend.store_result(other_id, [1, "two"], "SUCCESS")
    assert fastq_client.AsyncResult(other_id).get(timeout=5) == [1, "two"]
    SENT[queue] = [task_id, other_id]
