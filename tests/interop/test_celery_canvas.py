"""Workflows built with fastq's canvas run on a real Celery 5.7 worker and on a fastq
worker (Redis or RabbitMQ broker, Redis results) with the same results, and fastq's
result handles point back along them."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fastq import App, GroupResult, chain, chord, group
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.interop.processes import ROOT, Proc
from tests.unit.test_canvas_api import _add, _tsum

pytest.importorskip("celery")

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]  # no compiled twin here


#: RabbitMQ as Celery users run it, results on Redis either way
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="module", params=["redis", "amqp"])
def setting(request) -> Iterator[tuple[str, str, str]]:
    """The broker, the queue and the result key prefix of the module's tests, on Redis
    and on RabbitMQ; everything under them is deleted after."""
    require_redis()
    if request.param == "amqp":
        from tests import servers

        servers.require("RabbitMQ", 5672)
    tag = uuid.uuid4().hex[:10]
    broker = REDIS_URL if request.param == "redis" else AMQP_URL
    queue, prefix = f"canvas-{tag}", f"fastqtest:{tag}:"
    yield broker, queue, prefix
    delete_keys(prefix + "*")
    if request.param == "amqp":
        from tests.integration.test_amqp_broker import delete_queues

        delete_queues([queue])
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
        client.zrem("_kombu.binding_deadlines", queue)
        if not client.exists("_kombu.binding.celery.pidbox"):
            client.zrem("_kombu.binding_deadlines", "celery.pidbox")
    finally:
        client.close()


@pytest.fixture(scope="module", params=["celery", "fastq"])
def worker(request, setting, tmp_path_factory) -> Iterator[str]:
    """One worker for the module's tests, Celery's then fastq's; gives its kind."""
    broker, queue, prefix = setting
    env = dict(os.environ, FASTQ_BROKER_URL=broker, FASTQ_RESULT_BACKEND=REDIS_URL,
               CANVAS_QUEUE=queue, CANVAS_KEY_PREFIX=prefix,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    folder = tmp_path_factory.mktemp("canvas")
    if request.param == "celery":
        celery = shutil.which("celery") or pytest.skip("the celery command is not installed")
        proc = Proc([celery, "-A", "tests.apps.celery_canvas_app", "worker", "-P", "solo",
                     "--without-gossip", "--without-mingle", "--without-heartbeat",
                     "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                    str(folder / "worker.log"))
        ready = lambda: "ready." in proc.log()  # noqa: E731
    else:
        health = folder / "health.json"
        env["FASTQ_WORKER_STATE_DIR"] = str(folder / "workers")
        proc = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.canvas_app",
                     "-Q", queue, "-l", "info", "--health-file", str(health)], env,
                    str(folder / "worker.log"))
        ready = lambda: health.exists() and b'"consuming"' in health.read_bytes()  # noqa: E731
    try:
        proc.wait_until(ready)
        yield request.param
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(setting) -> Iterator[App]:
    """A fastq client with the Celery app's task names (never run here)."""
    broker, queue, prefix = setting
    app = App("canvas-client", broker=broker, result_backend=REDIS_URL,
              task_default_queue=queue,
              result_backend_transport_options={"global_keyprefix": prefix})
    app.task(name="cv.add")(_add)
    app.task(name="cv.tsum")(_tsum)
    yield app
    app.close()


def _tasks(client: App) -> tuple[Any, Any]:
    return client.tasks["cv.add"], client.tasks["cv.tsum"]


def test_a_chord_runs_and_its_body_points_to_the_header(worker, client) -> None:
    add, tsum = _tasks(client)
    result = chord(add.s(i, i) for i in range(5))(tsum.s())
    assert result.get(timeout=20) == 20
    header = result.parent
    assert isinstance(header, GroupResult) and len(header) == 5
    assert header.join(timeout=5) == [0, 2, 4, 6, 8]


def test_group_or_sig_immutable_body_and_empty_header(worker, client) -> None:
    add, tsum = _tasks(client)
    assert (group(add.s(1, 2), add.s(3, 4)) | tsum.s()).delay().get(timeout=20) == 10
    assert chord([add.s(1, 1)], add.si(5, 5)).apply_async().get(timeout=20) == 10
    assert chord([], tsum.s()).apply_async().get(timeout=20) == 0


def test_chord_of_chains_and_nested_chord(worker, client) -> None:
    add, tsum = _tasks(client)
    inner = chord([add.s(2, 2), add.s(3, 3)], tsum.s())
    result = chord([add.s(1, 1) | add.s(1), inner, add.s(0, 1)], tsum.s()).apply_async()
    assert result.get(timeout=20) == 3 + 10 + 1


def test_chain_through_a_group_becomes_a_chord_with_parents(worker, client) -> None:
    add, tsum = _tasks(client)
    result = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), add.s(100)).apply_async()
    assert result.get(timeout=20) == 107
    summed = result.parent
    assert summed is not None and summed.get(timeout=5) == 7
    header = summed.parent
    assert isinstance(header, GroupResult) and header.join(timeout=5) == [3, 4]
    first = header.parent
    assert first is not None and first.get(timeout=5) == 2 and first.parent is None


def test_chain_parents_and_collect_walk_the_stored_children(worker, client) -> None:
    add, _ = _tasks(client)
    result = (add.s(1, 2) | add.s(3) | add.s(4)).apply_async()
    assert result.get(timeout=20) == 10
    second = result.parent
    assert second is not None and second.parent is not None
    first = second.parent
    assert [first.get(timeout=5), second.get(timeout=5)] == [3, 6]
    if worker == "celery":  # a fastq worker does not store children (README)
        # collect() walks the children the Celery worker stored with each result
        assert [value for _, value in first.collect(timeout=5)] == [3, 6, 10]


def test_chunks_map_and_starmap_run_the_builtins(worker, client) -> None:
    add, tsum = _tasks(client)
    parts = add.chunks(zip(range(6), range(6)), 2).apply_async()
    assert parts.join(timeout=20) == [[0, 2], [4, 6], [8, 10]]
    assert add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=20) == [3, 7]
    assert tsum.map([[1, 2], [3]]).delay().get(timeout=20) == [3, 3]


def test_join_native_gives_what_join_and_celerys_give(worker, client,
                                                      setting) -> None:
    from celery import Celery
    from celery.result import AsyncResult as CeleryResult
    from celery.result import GroupResult as CeleryGroupResult

    add, _ = _tasks(client)
    grouped = group([add.s(i, 1) for i in range(3)] + [add.s(10, 0)]).apply_async()
    assert grouped.join_native(timeout=20) == grouped.join(timeout=5) == [1, 2, 3, 10]
    celery_app = Celery("canvas-join", broker="memory://", backend=REDIS_URL)
    celery_app.conf.result_backend_transport_options = {"global_keyprefix": setting[2]}
    try:
        theirs = CeleryGroupResult(grouped.id, [CeleryResult(r.id, app=celery_app)
                                                for r in grouped], app=celery_app)
        assert theirs.join_native(timeout=5) == grouped.join_native(timeout=5)
    finally:
        celery_app.backend.result_consumer.stop()
        celery_app.close()


def test_a_failing_member_fails_the_chord_and_calls_its_errback(worker,
                                                                 client) -> None:
    from fastq import Signature
    from fastq.exceptions import ChordError

    add, tsum = _tasks(client)
    errback_id = str(uuid.uuid4())
    # a one-argument task: Celery sends it as a task (one taking more it calls in the
    # worker with request, exception and traceback, storing no result to wait for)
    result = chord([add.s(1, 1), Signature("cv.fail", ("boom",), app=client)],
                   tsum.s()).apply_async(link_error=tsum.si([7, 7]).set(task_id=errback_id))
    with pytest.raises(ChordError, match="boom"):
        result.get(timeout=20)
    assert client.AsyncResult(errback_id).get(timeout=20) == 14
