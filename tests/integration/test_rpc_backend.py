"""The rpc:// result backend on a real RabbitMQ: replies from a fastq worker subprocess."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from fastq.backends import create_backend
from fastq.backends.rpc import RPCBackend
from fastq.exceptions import ConfigurationError, ResultTimeout
from fastq.testing.worker import start_worker
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc

pytestmark = pytest.mark.integration


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"fastq-test-rpc-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues([name])


@pytest.fixture
def worker(tmp_path, queue) -> Iterator[Proc]:
    env = dict(os.environ, FASTQ_BROKER_URL=URL, FASTQ_RESULT_BACKEND="rpc://",
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               FASTQ_TEST_RUN_LOG=str(tmp_path / "runs.log"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.amqp_app",
                 "-P", "solo", "-Q", queue, "-l", "info"], env, str(tmp_path / "worker.log"))
    yield proc
    proc.stop()
    assert "could not store" not in proc.log(), proc.log()


def test_results_failures_and_out_of_order_replies(worker, queue, impl, monkeypatch) -> None:
    driver = impl
    if driver == "py":
        monkeypatch.setenv("FASTQ_NO_SPEEDUPS", "1")
    app = App("rpc-client", broker_url=URL, result_backend="rpc://")
    try:
        assert isinstance(app.backend, RPCBackend)
        assert app.backend.driver_name == ("py-amqp" if driver == "py" else "rabbitmq-c")
        result = app.send_task("t.add", (2, 3), queue=queue)
        assert result.get(timeout=20) == 5
        assert result.state == "SUCCESS"

        failed = app.send_task("t.fail", ("boom", 42), queue=queue)
        with pytest.raises(KeyError) as info:
            failed.get(timeout=20)
        assert info.value.args == ("boom", 42)
        assert failed.state == "FAILURE"

        # the first task sleeps, so the replies of the others arrive before its own
        slow = app.send_task("t.sleep_echo", (0.5, "slow"), queue=queue)
        quick = [app.send_task("t.add", (n, n), queue=queue) for n in range(5)]
        assert slow.get(timeout=20) == "slow"
        assert [r.get(timeout=20) for r in reversed(quick)] == [8, 6, 4, 2, 0]

        # forget drops the cached reply; nothing else is stored anywhere
        quick[0].forget()
        assert app.backend.get(quick[0].id)["status"] == "PENDING"
    finally:
        app.close()


def test_a_worker_sends_its_results_with_its_acks(queue, impl, monkeypatch) -> None:
    """With the rpc backend's RabbitMQ as its broker, a worker's replies leave on its
    consumer connection, in the write of the acks: the backend opens no connection."""
    if impl == "py":
        monkeypatch.setenv("FASTQ_NO_SPEEDUPS", "1")
    worker_app = App("rpc-worker", broker_url=URL, result_backend="rpc://")

    @worker_app.task(name="t.add")
    def add(a, b):
        return a + b

    client = App("rpc-client", broker_url=URL, result_backend="rpc://")
    try:
        with start_worker(worker_app, queues=[queue], prefetch_multiplier=8) as worker:
            results = [client.send_task("t.add", (n, 1), queue=queue) for n in range(40)]
            assert [r.get(timeout=20) for r in results] == list(range(1, 41))
            assert worker.executor._replies_with_acks is True
            assert worker_app.backend._conn is None
            failed = client.send_task("t.add", (1, "x"), queue=queue)
            with pytest.raises(TypeError):
                failed.get(timeout=20)
        assert worker.consumer.counters["acked"] == 41
    finally:
        client.close()
        worker_app.close()


def test_a_worker_without_a_result_backend_acks_its_tasks(queue) -> None:
    """The replies-with-acks path asks for the backend only once there are results."""
    worker_app = App("no-results", broker_url=URL, task_ignore_result=True)
    done = threading.Event()

    @worker_app.task(name="t.last")
    def last():
        done.set()

    try:
        with start_worker(worker_app, queues=[queue], prefetch_multiplier=8) as worker:
            for _ in range(10):
                worker_app.send_task("t.last", queue=queue)
            assert done.wait(10)
            deadline = time.monotonic() + 10
            while worker.consumer.counters["acked"] < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert worker.consumer.counters["acked"] == 10
            assert worker.executor._replies_with_acks is None
    finally:
        worker_app.close()


def test_every_thread_finds_its_own_result(worker, queue) -> None:
    app = App("rpc-client", broker_url=URL, result_backend="rpc://")
    results: dict[int, object] = {}
    try:
        sent = [app.send_task("t.add", (n, 100), queue=queue) for n in range(6)]

        def read(n: int) -> None:
            results[n] = sent[n].get(timeout=20)

        threads = [threading.Thread(target=read, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == {n: n + 100 for n in range(6)}
    finally:
        app.close()


def test_no_reply_queue_without_rpc_and_timeouts(queue) -> None:
    # other backends never declare or name a reply queue
    app = App("no-rpc", broker_url=URL, result_backend="memory://")
    try:
        message = app.build_message("t.add", (1, 2), queue=queue)
        assert message.properties.get("reply_to") is None
        assert app._backend is None
    finally:
        app.close()
    rpc = App("rpc-timeout", broker_url=URL, result_backend="rpc://")
    try:
        message = rpc.build_message("t.add", (1, 2), queue=queue)
        assert message.properties["reply_to"] == rpc.backend.reply_queue
        with pytest.raises(ResultTimeout):
            rpc.backend.wait(str(uuid.uuid4()), timeout=0.3)
    finally:
        rpc.close()


def test_rpc_needs_an_amqp_broker() -> None:
    with pytest.raises(ConfigurationError):
        create_backend("rpc://", broker_url="redis://127.0.0.1:6379/0")


def test_replies_without_reply_to_are_dropped() -> None:
    backend = create_backend("rpc://", broker_url=URL)
    try:
        backend.store_many([(str(uuid.uuid4()), "SUCCESS", 1, None, None)])
        assert backend._conn is None  # nothing to send, so not even a connection
    finally:
        backend.close()
