"""The broker contract, and what only the in-memory broker promises, on ``memory://``."""

from __future__ import annotations

import time
import uuid

import pytest

from fastq.brokers import create_broker
from fastq.brokers.memory import MemoryBroker
from fastq.testing.contracts import BrokerContract, make_message


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def broker_url(self) -> str:
        return f"memory://{uuid.uuid4()}"

    def test_url_scheme_selects_it(self, broker) -> None:
        assert isinstance(broker, MemoryBroker)
        assert broker.capabilities == {"delay", "priority", "dead_letter", "control"}

    def test_different_names_do_not_share(self, broker) -> None:
        broker.publish(make_message("q"))
        other = create_broker(f"memory://{uuid.uuid4()}")
        assert other.fetch(["q"], 10, 0) == []

    def test_close_keeps_the_queues(self) -> None:
        producer = self.make_broker()
        producer.publish(make_message("kept"))
        producer.close()
        assert len(self.make_broker().fetch(["kept"], 10, 1)) == 1

    def test_queue_sizes_reports_declared_and_used_queues(self, broker) -> None:
        broker.declare("declared")
        broker.publish(make_message("used", not_before=time.time() + 60))
        assert broker.queue_sizes() == {"declared": 0, "used": 1}

    def test_defer_keeps_the_redelivery_count(self, broker) -> None:
        broker.publish(make_message("retimed"))
        [first] = broker.fetch(["retimed"], 10, 1)
        broker.reject(first.tag, requeue=True)
        [second] = broker.fetch(["retimed"], 10, 1)
        broker.defer(second, time.time() + 0.05)
        [third] = broker.fetch(["retimed"], 10, 2)
        assert third.redeliveries == 1

    def test_dead_letters_keep_the_whole_message(self, broker) -> None:
        message = make_message("dl", body=b"\x01\x02")
        broker.publish(message)
        [delivery] = broker.fetch(["dl"], 10, 1)
        before = time.time()
        broker.dead_letter(delivery.tag, "why")
        [record] = broker.dead_letters()
        assert record["properties"] == message.properties
        assert record["headers"] == message.headers
        assert record["body"] == b"\x01\x02"
        assert before <= record["dead_lettered_at"] <= time.time()

    def test_fetch_wakes_for_a_delayed_message_published_while_waiting(self, broker) -> None:
        # the waiter computed its sleep before this message existed
        import threading

        timer = threading.Timer(0.1, broker.publish,
                                (make_message("late", not_before=time.time() + 0.3),))
        timer.start()
        started = time.monotonic()
        try:
            got = broker.fetch(["late"], 10, 5)
        finally:
            timer.join()
        assert len(got) == 1 and time.monotonic() - started < 4
