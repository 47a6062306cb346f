"""The RabbitMQ broker on a real server: the broker contract on both drivers, plus
reconnects, redelivery counting, dead letters and a real worker process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fastq import App, _speedups
from fastq.brokers import create_broker
from fastq.brokers._amqp_py import Connection as PyConnection
from fastq.brokers.amqp import AMQPBroker, parse_url
from fastq.exceptions import AMQPError, BrokerConnectionLost, PublishTimeout
from fastq.testing.contracts import BrokerContract, make_message
from tests import servers
from tests.integration.conftest import amqp_worker_setup

pytestmark = pytest.mark.integration

HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}//"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

servers.require("RabbitMQ", PORT, module_level=True)

#: whether the rabbitmq-c driver is in use here (else tests needing one driver take py-amqp)
HAVE_C = _speedups.status("_amqp").available


def delete_queues(names: Iterator[str] | list[str] | set[str]) -> None:
    """Delete queues (and their exchanges' namesakes do no harm left behind)."""
    conn = PyConnection(HOST, PORT)
    conn.connect()
    try:
        for name in names:
            for queue in (name, name + ".dead"):
                try:
                    conn.delete_queue(queue)
                except AMQPError:
                    pass
    finally:
        conn.close()


def unique(prefix: str = "t") -> str:
    return f"fastq-test-{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def driver(impl: str) -> str:
    """The AMQP driver of this run: "c" (rabbitmq-c) or "py" (py-amqp)."""
    return impl


def driver_url(driver: str, **query: Any) -> str:
    query = {"driver": "rabbitmq-c" if driver == "c" else "py-amqp", **query}
    return URL + "?" + "&".join(f"{k}={v}" for k, v in query.items())


class TestAMQPBroker(BrokerContract):
    @pytest.fixture
    def broker_url(self, driver: str) -> Iterator[str]:
        # the contract's queue names are unique to each test: nothing to clear first
        yield driver_url(driver, queue_max_priority=10)
        # the contract's own teardown (closing brokers) has run: the queues are free
        declared: set[str] = set()
        for broker in getattr(self, "_made_brokers", []):
            declared |= broker.declared_queues
        delete_queues({q[:-5] if q.endswith(".dead") else q for q in declared})

    def test_url_scheme_selects_the_driver(self, broker, driver) -> None:
        assert isinstance(broker, AMQPBroker)
        assert broker.driver_name == ("rabbitmq-c" if driver == "c" else "py-amqp")
        assert {"priority", "dead_letter", "ack_multiple"} <= broker.capabilities
        assert "delay" not in broker.capabilities


# -- URLs and driver selection ---------------------------------------------------------
def test_url_parsing() -> None:
    params, query = parse_url("amqp://u%40x:p%2Fw@rabbit.local:5673/my%2Fvhost?heartbeat=10")
    assert params == {"host": "rabbit.local", "port": 5673, "vhost": "my/vhost",
                      "user": "u@x", "password": "p/w"}
    assert query == {"heartbeat": "10"}
    assert parse_url("amqp://")[0] == {"host": "localhost", "port": 5672, "vhost": "/",
                                       "user": "guest", "password": "guest"}
    assert parse_url("amqp://h//")[0]["vhost"] == "/"
    assert parse_url("amqp://h/")[0]["vhost"] == "/"
    tls = parse_url("amqps://h")[0]
    assert tls["port"] == 5671 and tls["ssl"] is True


def test_pyamqp_scheme_forces_py_amqp() -> None:
    broker = create_broker(f"pyamqp://guest:guest@{HOST}:{PORT}//")
    try:
        assert broker.driver_name == "py-amqp"
    finally:
        broker.close()


def test_unknown_option_is_a_clear_error() -> None:
    from fastq.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="prefetch_size"):
        create_broker(URL, prefetch_size=3)


# -- driver errors ---------------------------------------------------------------------
def test_driver_translates_errors() -> None:
    with pytest.raises(BrokerConnectionLost) as info:
        PyConnection(HOST, 1).connect()
    assert info.value.recoverable
    conn = PyConnection(HOST, PORT)
    conn.connect()
    queue = unique("err")
    try:
        conn.declare_queue(queue, durable=False)
        with pytest.raises(AMQPError, match="406 PRECONDITION_FAILED") as err:
            conn.declare_queue(queue, durable=True)
        assert err.value.reply_code == 406
        # the channel is reopened for the next call
        assert conn.declare_queue(queue, durable=False, passive=True)[0] == queue
        with pytest.raises(AMQPError) as missing:
            conn.declare_queue(unique("missing"), passive=True)
        assert missing.value.reply_code == 404
        conn.delete_queue(queue)
    finally:
        conn.close()
        conn.close()
    assert not conn.is_open


def test_celery_queue_declared_as_celery_does(driver) -> None:
    """A queue fastq declares matches kombu's flags: a Celery-style redeclare passes."""
    queue = unique("celery-shape")
    broker = create_broker(driver_url(driver))
    conn = PyConnection(HOST, PORT)
    conn.connect()
    try:
        broker.declare(queue)
        # RabbitMQ refuses a redeclare whose flags differ with 406 PRECONDITION_FAILED and
        # closes the channel: kombu's flags (queue durable, not auto-delete, no arguments;
        # exchange direct durable) must therefore pass ...
        conn.declare_queue(queue, durable=True, exclusive=False, auto_delete=False)
        conn.declare_exchange(queue, "direct", durable=True, auto_delete=False)
        conn.bind_queue(queue, queue, queue)
        # ... while other flags are refused: the check above can fail
        with pytest.raises(AMQPError) as refused:
            conn.declare_queue(queue, durable=False, exclusive=False, auto_delete=False)
        assert refused.value.reply_code == 406
    finally:
        conn.close()
        broker.close()
        delete_queues([queue])


# -- publishing with the broker down ---------------------------------------------------
def test_publish_to_a_down_broker_raises_publish_timeout_in_time() -> None:
    app = App("amqp-down", broker_url=f"amqp://guest:guest@{HOST}:1//",
              broker_connection_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(PublishTimeout, match="within 1.0s"):
            app.send_task("t.add", (1, 2))
        assert time.monotonic() - started < 3
    finally:
        app.close()


# -- redelivery counting ---------------------------------------------------------------
def test_a_dead_holder_makes_the_next_delivery_count(driver) -> None:
    queue = unique("crash")
    holder = create_broker(driver_url(driver))
    other = create_broker(driver_url(driver))
    try:
        message = make_message(queue)
        holder.publish(message)
        [first] = holder.fetch([queue], 10, 5)
        assert first.redeliveries == 0
        # the holder dies with the message unacked: RabbitMQ requeues it (redelivered)
        holder.close()
        [again] = other.fetch([queue], 10, 5)
        assert again.headers["id"] == message.headers["id"]
        assert again.redeliveries == 1
        other.ack_many([again.tag])
        assert other.fetch([queue], 10, 0.2) == []
    finally:
        holder.close()
        other.close()
        delete_queues([queue])


def test_crash_looping_message_reaches_the_redelivery_limit(driver) -> None:
    queue = unique("loop")
    publisher = create_broker(driver_url(driver))
    try:
        publisher.publish(make_message(queue))
        counts = []
        for _ in range(3):
            holder = create_broker(driver_url(driver))
            [delivery] = holder.fetch([queue], 10, 5)
            counts.append(delivery.redeliveries)
            holder.close()
        assert counts == [0, 1, 2]
    finally:
        publisher.close()
        delete_queues([queue])


def test_dead_letters_keep_reason_and_stay(driver) -> None:
    queue = unique("dl")
    broker = create_broker(driver_url(driver))
    try:
        message = make_message(queue, custom="kept")
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        broker.dead_letter(delivery.tag, "redelivery-limit: delivered 6 times")
        for _ in range(2):  # peeking leaves them in place
            [record] = broker.dead_letters(queue=queue)
            assert record["reason"] == "redelivery-limit: delivered 6 times"
            assert record["queue"] == queue
            assert record["headers"]["id"] == message.headers["id"]
            assert record["headers"]["custom"] == "kept"
            assert record["body"] == message.body
            assert record["dead_lettered_at"] <= time.time()
        assert broker.queue_sizes()[queue] == 0
    finally:
        broker.close()
        delete_queues([queue])


class _SelectCounter:
    """A real driver connection that counts its confirm.select calls."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.selects = 0

    def confirm_select(self) -> None:
        self.selects += 1
        self._conn.confirm_select()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_consumer_channel_enters_confirm_mode_only_for_a_republish(driver) -> None:
    """Results sent with the acks are not confirmed (a frame per task for nothing waited
    on); a republish that must land before its original is acked (a dead letter) still
    is: the channel goes into confirm mode then, once."""
    queue, replies = unique("confirm"), unique("replies")
    broker = create_broker(driver_url(driver))
    opened: list[_SelectCounter] = []
    make = broker._new_connection
    broker._new_connection = lambda: opened.append(_SelectCounter(make())) or opened[-1]
    try:
        broker.declare(replies)
        for n in range(3):
            broker.publish(make_message(queue, n=n))
        first, second, third = broker.fetch([queue], 1, 5) + broker.fetch([queue], 1, 5) \
            + broker.fetch([queue], 1, 5)
        assert broker.ack_many_with_replies([first.tag], [(replies, b"r1", {})])
        assert broker.ack_many_with_replies([second.tag], [(replies, b"r2", {})])
        consumer = broker._consumer
        assert consumer.selects == 0
        # the copy in the dead-letter queue is confirmed before the original is acked
        broker.dead_letter(third.tag, "test: republished")
        assert consumer.selects == 1
        assert [r["headers"]["n"] for r in broker.dead_letters(queue=queue)] == [2]
        assert broker.queue_sizes()[queue] == 0
        assert broker.queue_sizes()[replies] == 2
    finally:
        broker.close()
        delete_queues([queue, replies])


# -- reconnecting ----------------------------------------------------------------------
def _close_connections(name: str = "test") -> None:
    subprocess.run(["rabbitmqctl", "close_all_connections", name], check=True,
                   capture_output=True, timeout=30)


# closes every connection on the server, other tests' too: run alone (CI's serial run)
@pytest.mark.serial
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None or os.geteuid() != 0,
                    reason="needs rabbitmqctl as root")
def test_consumer_survives_connections_being_closed(driver) -> None:
    queue = unique("reconnect")
    total = 300
    producer = create_broker(driver_url(driver))
    consumer = create_broker(driver_url(driver))
    done: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set() and len(done) < total:
                batch = consumer.fetch([queue], 20, 0.2)
                for delivery in batch:
                    time.sleep(0.01)  # a little work, so the close lands mid-run
                    done[delivery.headers["id"]] = done.get(delivery.headers["id"], 0) + 1
                consumer.ack_many([d.tag for d in batch])
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    try:
        messages = [make_message(queue) for _ in range(total)]
        producer.publish_many(messages)
        thread = threading.Thread(target=work)
        thread.start()
        deadline = time.monotonic() + 10
        while len(done) < total // 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        _close_connections()
        thread.join(40)
        stop.set()
        assert not errors, errors
        assert not thread.is_alive()
        # every message completed; some may have run twice (at least once), none lost
        assert set(done) == {m.headers["id"] for m in messages}
        assert consumer._gen >= 2, "the consumer never reconnected"
        assert consumer.state == "consuming"
        # what is left are redeliveries of messages whose ack the close cut off: run them
        # too (at least once), then nothing may remain
        while batch := consumer.fetch([queue], 50, 0.5):
            for delivery in batch:
                done[delivery.headers["id"]] += 1
            consumer.ack_many([d.tag for d in batch])
        assert sum(done.values()) < total + 100
        publisher_after = create_broker(driver_url(driver))
        try:
            publisher_after.declare(queue)
            assert publisher_after.queue_sizes()[queue] == 0
        finally:
            publisher_after.close()
    finally:
        stop.set()
        consumer.close()
        producer.close()
        delete_queues([queue])


# -- a real worker process ---------------------------------------------------------------
def test_worker_process_runs_200_tasks(tmp_path, driver) -> None:
    queue = unique("worker")
    env, results_url = amqp_worker_setup(tmp_path, queue, driver_url(driver))
    log_path = tmp_path / "worker.log"
    app = App("amqp-e2e", broker_url=driver_url(driver), result_backend=results_url,
              task_default_queue=queue)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.amqp_app",
             "-P", "solo", "-Q", queue, "-l", "info"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        results = [app.send_task("t.add", (i, i)) for i in range(200)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(200)]
    finally:
        proc.terminate()
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        app.close()
        delete_queues([queue])
    assert code == 0, log_path.read_text()


def test_a_deferred_message_waits_in_delay_queues_not_in_circulation(driver) -> None:
    queue = unique("delay")
    broker = create_broker(driver_url(driver))
    try:
        message = make_message(queue)
        broker.publish(message)
        [delivery] = broker.fetch([queue], 10, 5)
        due = time.time() + 1.5
        hops = 0
        early_sightings = 0
        while True:  # what the consumer does: defer while early, run when due
            broker.defer(delivery, due)
            hops += 1
            [delivery] = broker.fetch([queue], 10, 5)
            if time.time() < due - 1.0:
                early_sightings += 1
            if time.time() >= due - 0.002:
                break
        assert delivery.headers["id"] == message.headers["id"]
        assert delivery.body == message.body
        assert delivery.redeliveries == 0  # deferring is not a failed delivery
        # 1,500 ms = 1024 + 256 + 128 + 64 + 16 + 8 + 4: a handful of hops, not a spin
        assert hops <= 12, hops
        assert early_sightings <= 1
        broker.ack_many([delivery.tag])
        assert broker.fetch([queue], 10, 0.2) == []
        delays = {q for q in broker.declared_queues if ".delay." in q}
        assert f"{queue}.delay.1024ms" in delays
    finally:
        declared = broker.declared_queues
        broker.close()
        delete_queues({q for q in declared if not q.endswith(".dead")})


def test_quorum_queues_count_deliveries_and_dead_letter_at_the_limit(driver) -> None:
    queue = unique("quorum")
    broker = create_broker(driver_url(driver, queue_type="quorum"), max_redeliveries=2)
    try:
        broker.declare(queue)
        message = make_message(queue)
        broker.publish(message)
        counts = []
        for _ in range(3):  # a worker that dies holding it, three times over
            [delivery] = broker.fetch([queue], 10, 5)
            counts.append(delivery.redeliveries)
            broker.reject(delivery.tag, requeue=True)
        [delivery] = broker.fetch([queue], 10, 5)
        counts.append(delivery.redeliveries)
        assert counts == [0, 1, 2, 3]
        assert delivery.headers["id"] == message.headers["id"]
        broker.dead_letter(delivery.tag, "redelivery-limit")
        assert broker.dead_letters(queue=queue)[0]["reason"] == "redelivery-limit"
    finally:
        broker.close()
        delete_queues([queue])


def test_quorum_with_priorities_is_a_clear_error() -> None:
    from fastq.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="quorum queues have no priorities"):
        create_broker(driver_url("py", queue_type="quorum", queue_max_priority=10))
