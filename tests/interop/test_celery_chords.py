"""A real Celery 5.7 client's chords, chunks, map and starmap run on fastq workers (Redis
broker, and RabbitMQ broker with Redis results); a chord split between a Celery worker
and a fastq worker joins once."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.interop.processes import ROOT, Proc, start_fastq_worker
from tests.servers import require

pytest.importorskip("celery")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.twin_neutral,  # the join is in the Redis backend: no compiled twin
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    # Celery's results unsubscribe in __del__ on a connection Celery never closes
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["redis", "amqp"])
def broker(request) -> str:
    require_redis()
    if request.param == "amqp":
        require("RabbitMQ")
        return AMQP_URL
    return REDIS_URL


@pytest.fixture
def queue(broker) -> Iterator[str]:
    name = f"chords-interop-{uuid.uuid4().hex[:10]}"
    yield name
    if broker == AMQP_URL:
        from tests.integration.test_amqp_broker import delete_queues
        delete_queues([name])
    delete_keys(f"*{name}*")


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"fastqtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    delete_keys(prefix + "*")


@pytest.fixture
def env(tmp_path, broker, queue, prefix) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=broker, FASTQ_RESULT_BACKEND=REDIS_URL,
                FASTQ_TASK_DEFAULT_QUEUE=queue, FASTQ_RESULT_EXPIRES="600",
                FASTQ_TEST_COUNTER_PREFIX=prefix,
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def fastq_worker(tmp_path, env, queue) -> Iterator[Proc]:
    worker = start_fastq_worker("tests.apps.chord_app", queue, env,
                                str(tmp_path / "fastq-worker.log"), str(tmp_path / "health.json"))
    try:
        yield worker
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()


@pytest.fixture
def celery(broker, queue) -> Iterator:
    from celery import Celery

    app = Celery("chords-client", broker=broker, backend=REDIS_URL)
    app.conf.task_default_queue = queue
    app.conf.result_expires = 600
    try:
        yield app
    finally:
        gc.collect()
        app.backend.result_consumer.stop()
        app.close()


@pytest.fixture
def counter(prefix) -> Iterator:
    connection = redis.Redis.from_url(REDIS_URL)
    yield lambda name: int(connection.get(prefix + name) or 0)
    connection.close()


def test_a_celery_chord_runs_on_a_fastq_worker(fastq_worker, celery, counter) -> None:
    from celery import chord

    add, tsum = celery.signature("ch.add"), celery.signature("ch.tsum")
    result = chord([add.clone((i, i)) for i in range(10)])(tsum.clone(kwargs={"tag": "c"}))
    assert result.get(timeout=20) == sum(2 * i for i in range(10))
    # an immutable body gets no results; an empty header runs the body with []
    immutable = chord([add.clone((1, 1))])(celery.signature("ch.add", (5, 5), immutable=True))
    assert immutable.get(timeout=20) == 10
    empty = chord([])(tsum.clone(kwargs={"tag": "empty"}))
    assert empty.get(timeout=20) == 0
    time.sleep(0.3)
    assert counter("body:c") == 1


def test_a_failing_member_of_a_celery_chord_raises_chord_error(fastq_worker, celery,
                                                               counter) -> None:
    from celery import chord
    from celery.exceptions import ChordError

    header = [celery.signature("ch.add", (1, 1)), celery.signature("ch.fail", ("no",))]
    body = celery.signature("ch.tsum", kwargs={"tag": "f"})
    body.link_error(celery.signature("ch.on_error"))
    result = chord(header)(body)
    # the body's own result (Celery's result.get() raises the header's error first)
    with pytest.raises(ChordError, match="raised ValueError"):
        celery.AsyncResult(result.id).get(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not counter(f"errback:{result.id}"):
        time.sleep(0.05)
    time.sleep(0.3)
    assert counter("body:f") == 0 and counter(f"errback:{result.id}") == 1


def test_celery_chunks_map_and_starmap_run_on_a_fastq_worker(fastq_worker, celery) -> None:
    from celery import chunks, xmap, xstarmap

    add, tsum = celery.signature("ch.add"), celery.signature("ch.tsum")
    parts = chunks(add, zip(range(7), range(7)), 3, app=celery).apply_async()
    assert parts.get(timeout=20) == [[0, 2, 4], [6, 8, 10], [12]]
    assert xstarmap(add, [(1, 2), (3, 4)], app=celery).apply_async().get(timeout=20) == [3, 7]
    assert xmap(tsum, [[1, 2], [3, 4]], app=celery).apply_async().get(timeout=20) == [3, 7]
    # the celery.chunks task itself, as a task's callback: it sends the starmap parts
    parent = add.clone((0, 0), link=chunks(add, [(1, 1), (2, 2)], 1, app=celery)).apply_async()
    assert parent.get(timeout=20) == 0
    # 3 parts + 1 xstarmap + the 2 parts the celery.chunks task sent
    fastq_worker.wait_until(lambda: _succeeded(fastq_worker, "celery.starmap") == 6)
    assert _succeeded(fastq_worker, "celery.chunks") == 1


def _succeeded(worker: Proc, name: str) -> int:
    return sum(1 for line in worker.log().splitlines()
               if f"Task {name}[" in line and " succeeded in " in line)


def test_a_chord_split_between_celery_and_fastq_workers_joins_once(
        tmp_path, env, queue, broker, fastq_worker, celery, counter) -> None:
    command = shutil.which("celery") or shutil.which(
        "celery", path=os.path.dirname(sys.executable)) or pytest.skip(
        "the celery command is not installed")
    from celery import chord

    worker = Proc([command, "-A", "tests.apps.celery_chord_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        results = [chord([celery.signature("ch.add", (i, n)) for i in range(10)])(
            celery.signature("ch.tsum", kwargs={"tag": f"split{n}"})) for n in range(6)]
        assert [r.get(timeout=30) for r in results] == [
            sum(range(10)) + 10 * n for n in range(6)]
        time.sleep(0.3)
        assert [counter(f"body:split{n}") for n in range(6)] == [1] * 6
        # both kinds of worker ran members
        assert " succeeded in " in worker.log()
    finally:
        worker.stop()


def test_chains_inside_a_celery_chord_join_and_fail_it(fastq_worker, celery) -> None:
    from celery import chord
    from celery.exceptions import ChordError

    add, tsum = celery.signature("ch.add"), celery.signature("ch.tsum")
    joined = chord([add.clone((1, 1)) | add.clone((2,)), add.clone((3, 3))])(
        tsum.clone(kwargs={"tag": "chains"}))
    assert joined.get(timeout=20) == 10
    # the chain's first step fails: its last step, the chord member, fails with it
    failed = chord([celery.signature("ch.fail", ("early",)) | add.clone((1,)),
                    add.clone((1, 1))])(tsum.clone(kwargs={"tag": "chains-fail"}))
    with pytest.raises(ChordError, match="raised ValueError"):
        celery.AsyncResult(failed.id).get(timeout=20)
