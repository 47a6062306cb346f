"""group(...) and GroupResult on the in-memory broker and backend, with a worker in a thread."""

from __future__ import annotations

import threading
import uuid

import pytest

import fastq
from fastq import App, GroupResult, group
from fastq.backends.rpc import RPCBackend
from fastq.worker._consumer_py import Consumer
from fastq.worker.executor import Executor
from fastq.worker.pools.solo import SoloPool


@pytest.fixture
def app():
    app = App("grp", broker=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)

    @app.task(name="g.add")
    def add(x, y):
        return x + y

    @app.task(name="g.fail")
    def fail(message):
        raise KeyError(message)

    yield app
    app.close()


@pytest.fixture
def worker(app):
    executor = Executor(app, "grp@test")
    consumer = Consumer(app, app.broker, executor, SoloPool(executor), ["celery"], 8,
                        ack_batch_size=64, ack_interval=0.01, hostname="grp@test")
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    yield consumer
    consumer.stop()
    thread.join(10)


def test_group_sends_members_with_the_group_id_and_index(app):
    add = app.tasks["g.add"]
    result = group(add.s(1, 1), add.s(2, 2).set(queue="other"), add.si(3, 3)).apply_async(
        (10,), priority=3)
    assert isinstance(result, GroupResult) and len(result) == 3
    deliveries = sorted(app.broker.fetch(["celery"], 10, 1) + app.broker.fetch(["other"], 10, 1),
                        key=lambda d: d.headers["group_index"])
    assert [d.headers["id"] for d in deliveries] == [r.id for r in result]
    assert [d.headers["group"] for d in deliveries] == [result.id] * 3
    assert [d.headers["group_index"] for d in deliveries] == [0, 1, 2]
    assert [d.queue for d in deliveries] == ["celery", "other", "celery"]
    assert all(d.properties["priority"] == 3 for d in deliveries)
    # partial args are prepended except for the immutable signature
    assert [d.body.startswith(expected) for d, expected in zip(
        deliveries, (b"[[10,1,1]", b"[[10,2,2]", b"[[3,3]"))] == [True] * 3


def test_group_results_join_in_order(app, worker):
    add = app.tasks["g.add"]
    result = group(add.s(i, i) for i in range(20)).delay()
    assert result.join(timeout=10) == [2 * i for i in range(20)]
    assert result.ready() and result.successful() and result.completed_count() == 20


def test_group_join_raises_the_failure(app, worker):
    add, fail = app.tasks["g.add"], app.tasks["g.fail"]
    result = group(add.s(1, 2), fail.s("nope"), add.s(3, 4)).apply_async()
    with pytest.raises(KeyError, match="nope"):
        result.get(timeout=10)
    values = result.join(timeout=10, propagate=False)
    assert values[0] == 3 and isinstance(values[1], KeyError) and values[2] == 7
    assert result.failed() and result.completed_count() == 2


def test_app_group_result_saves_and_restores(app, worker):
    add = app.tasks["g.add"]
    sent = group(add.s(i, 1) for i in range(3)).delay().save()
    restored = app.GroupResult.restore(sent.id)
    assert isinstance(restored, fastq.GroupResult) and restored == sent
    assert restored.app is app and restored.join(timeout=10) == [1, 2, 3]
    made = app.GroupResult("gid", [app.AsyncResult("a")])
    assert made.app is app and made.id == "gid"
    restored.delete()
    assert app.GroupResult.restore(sent.id) is None


def test_eager_group_runs_in_the_caller():
    app = App("eager", broker=f"memory://{uuid.uuid4()}", task_always_eager=True)

    @app.task(name="e.mul")
    def mul(x, y):
        return x * y

    try:
        result = group(mul.s(i, 2) for i in range(4)).apply_async()
        assert result.join() == [0, 2, 4, 6] and result.completed_count() == 4
    finally:
        app.close()


def test_an_empty_group_is_an_error():
    with pytest.raises(ValueError, match="empty group"):
        group().apply_async()


def test_rpc_cannot_hold_groups():
    assert "groups" not in RPCBackend.capabilities
    backend = object.__new__(RPCBackend)
    with pytest.raises(NotImplementedError, match="cannot store group results"):
        backend.save_group("g", [["g", None], []])


def test_public_names():
    assert fastq.GroupResult.__module__ == "fastq.result"
    assert fastq.group.__module__ == "fastq.canvas"
    assert {"GroupResult", "group"} <= set(fastq.__all__)
