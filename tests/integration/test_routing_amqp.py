"""Routing on RabbitMQ: task_queues' exchanges and bindings declared as kombu does, topic
and fanout exchanges, Broadcast queues, and a Celery client's exchange/routing_key."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator

import pytest

from fastq import App, Broadcast, Exchange, Queue
from tests.integration.test_amqp_broker import HOST, PORT, URL, delete_queues
from tests.interop.processes import Proc
from tests.interop.test_celery_amqp import env  # noqa: F401 - the worker environment fixture

pytestmark = pytest.mark.integration


class Names:
    """Queue and exchange names unique to one test, deleted after it."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, what: str) -> str:
        self.queues.append(f"fastq-route-{what}-{self.tag}")
        return self.queues[-1]

    def exchange(self, what: str) -> str:
        self.exchanges.append(f"fastq-route-x-{what}-{self.tag}")
        return self.exchanges[-1]

    def cleanup(self) -> None:
        import amqp

        delete_queues(self.queues)
        conn = amqp.Connection(f"{HOST}:{PORT}")
        conn.connect()
        try:
            channel = conn.channel()
            for name in self.exchanges:
                channel.exchange_delete(name)
        finally:
            conn.close()


@pytest.fixture
def names() -> Iterator[Names]:
    made = Names()
    yield made
    made.cleanup()


def app_with(queues: list[Queue], **settings) -> App:
    return App("routing", broker=URL, backend="memory://", task_queues=queues, **settings)


def fetch_all(app: App, queue: str, want: int = 1, timeout: float = 5.0) -> list:
    """Deliveries of ``queue`` (acked), waiting up to ``timeout`` for ``want`` of them."""
    import time

    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = app.broker.fetch([queue], 10, 0.2)
        app.broker.ack_many([d.tag for d in batch])
        got.extend(batch)
    return got


def test_a_topic_exchange_routes_by_pattern(names) -> None:
    exchange = Exchange(names.exchange("topic"), "topic")
    eu, us = names.queue("eu"), names.queue("us")
    queues = [Queue(eu, exchange, routing_key="eu.#"), Queue(us, exchange, routing_key="us.#")]
    producer, consumer = app_with(queues), app_with(queues)
    try:
        consumer.broker.prepare_consume(consumer.queues.consumed(None))
        consumer.broker.fetch([eu, us], 1, 0.1)  # subscribes: declares queues and bindings
        task = producer.task(name="t.region")(lambda: None)
        task.apply_async(exchange=exchange.name, routing_key="eu.fr.paris")
        task.apply_async(exchange=exchange.name, routing_key="us.ny")
        task.apply_async(exchange=exchange.name, routing_key="eu.de")
        # routed by name to a topic queue: its exchange, with the queue's own key
        producer.conf.task_routes = {"t.region": {"queue": us, "routing_key": "us.ca"}}
        task.delay()
        assert len(fetch_all(consumer, eu, 2)) == 2
        assert len(fetch_all(consumer, us, 2)) == 2
        assert fetch_all(consumer, eu, 1, 0.3) == []
    finally:
        producer.close()
        consumer.close()


def test_direct_bindings_and_max_priority_are_declared_like_kombus(names) -> None:
    exchange = Exchange(names.exchange("direct"))
    bills = names.queue("bills")
    queues = [Queue(bills, exchange, routing_key="bill.new")]
    producer, consumer = app_with(queues, task_queue_max_priority=7), app_with(queues)
    try:
        task = producer.task(name="t.bill")(lambda: None)
        # publishing declares the queue with its binding (Celery's producer does too)
        task.apply_async(exchange=exchange.name, routing_key="bill.new", priority=3)
        task.apply_async(queue=bills)
        got = fetch_all(consumer, bills, 2)
        assert len(got) == 2 and got[0].properties.get("priority") in (3, 0)
        from fastq.brokers._amqp_py import Connection

        conn = Connection(HOST, PORT)
        conn.connect()
        try:
            # the queue exists with x-max-priority 7: a declare with other arguments fails
            from fastq.exceptions import AMQPError

            with pytest.raises(AMQPError):
                conn.declare_queue(bills, durable=True, arguments={"x-max-priority": 1})
        finally:
            conn.close()
    finally:
        producer.close()
        consumer.close()


def worker(tmp_path, environ: dict, name: str, *extra: str) -> Proc:
    proc = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.routing_app",
                 "-P", "solo", "-l", "info", "--health-file", str(tmp_path / f"{name}.json"),
                 *extra], environ, str(tmp_path / f"{name}.log"))

    def consuming() -> bool:
        try:
            with open(tmp_path / f"{name}.json") as fh:
                return json.load(fh)["state"] == "consuming"
        except (OSError, ValueError):
            return False

    proc.wait_until(consuming, timeout=30)
    return proc


def runs(environ: dict, task_id: str) -> int:
    try:
        with open(environ["FASTQ_TEST_RUN_LOG"]) as fh:
            return sum(line.startswith(task_id) for line in fh)
    except OSError:
        return 0


def test_a_broadcast_reaches_every_worker(tmp_path, env, names) -> None:  # noqa: F811
    fanout = names.exchange("bcast")
    env = dict(env, ROUTING_BROADCAST=fanout)
    workers = [worker(tmp_path, env, "w1"), worker(tmp_path, env, "w2")]
    producer = App("producer", broker=URL, backend=env["FASTQ_RESULT_BACKEND"],
                   task_queues=[Broadcast(fanout)],
                   task_routes={"t.add": {"queue": fanout, "exchange": fanout}})
    try:
        result = producer.send_task("t.add", (1, 2))
        workers[0].wait_until(lambda: runs(env, result.id) == 2, timeout=20)
        assert all("Traceback" not in w.log() for w in workers)
    finally:
        producer.close()
        for proc in workers:
            proc.stop()


def test_a_broadcast_queue_exists_before_the_worker_says_it_consumes(names) -> None:
    """What a worker's health file reports as consumed is declared before its first
    fetch, so a broadcast sent once the worker is ready is not dropped by RabbitMQ."""
    from fastq.brokers._amqp_py import Connection

    fanout = names.exchange("ready")
    consumer = app_with([Broadcast(fanout)])
    conn = Connection(HOST, PORT)
    conn.connect()
    try:
        queues = consumer.broker.prepare_consume(consumer.queues.consumed(None))
        consumer.broker.declare_consumed(queues)
        names.queues.extend(queues)
        assert [conn.declare_queue(q, durable=False, passive=True)[1] for q in queues] == [0]
        producer = App("producer", broker=URL, backend="memory://",
                       task_queues=[Broadcast(fanout)],
                       task_routes={"t.add": {"queue": fanout, "exchange": fanout}})
        try:
            producer.send_task("t.add", (1, 2))
        finally:
            producer.close()
        assert len(fetch_all(consumer, queues[0], 1)) == 1
    finally:
        conn.close()
        consumer.close()


def test_a_celery_clients_exchange_and_routing_key_reach_a_fastq_worker(
        tmp_path, env, names) -> None:  # noqa: F811
    pytest.importorskip("celery")
    from celery import Celery

    exchange, queue = names.exchange("celery"), names.queue("celery")
    env = dict(env, ROUTING_QUEUES=json.dumps([[queue, exchange, "topic", "jobs.*"]]))
    proc = worker(tmp_path, env, "w")
    celery = Celery("interop-client", broker=URL)
    fastq = App("reader", broker=URL, backend=env["FASTQ_RESULT_BACKEND"])
    try:
        result = celery.send_task("t.add", (2, 3), exchange=exchange, routing_key="jobs.add",
                                  exchange_type="topic")
        assert fastq.AsyncResult(result.id).get(timeout=20) == 5
    finally:
        proc.stop()
        celery.close()
        fastq.close()
    assert "Traceback" not in proc.log(), proc.log()
