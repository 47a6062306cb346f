"""The Redis broker: the broker contract, kombu's wire format, leases, delays, reconnects."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from fastq.brokers import create_broker
from fastq.brokers.redis import RedisBroker
from fastq.exceptions import ConfigurationError, PublishTimeout
from fastq.testing.contracts import BrokerContract, make_message
from tests.integration.redis_support import REDIS_URL, PrivateRedis, redis_prefix  # noqa: F401

# no compiled twin in the Redis code
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture
def raw(redis_prefix):  # noqa: F811 - the fixture imported above
    """A plain redis-py client on the test DB, to look at what the broker wrote."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


class TestRedisBroker(BrokerContract):
    @pytest.fixture
    def broker_url(self, redis_prefix) -> str:  # noqa: F811
        self.prefix = redis_prefix
        return f"{REDIS_URL}?global_keyprefix={redis_prefix}"

    def test_higher_priority_first(self, broker) -> None:
        # Redis follows kombu, not AMQP: priority 0 is served first and 9 last
        # (celery-protocol.md §0 #3, §2.5); FIFO within a band.
        messages = [make_message("prio", priority=p) for p in (0, 5, 1, 9, 5, 0)]
        broker.publish_many(messages)
        got = self.drain(broker, ["prio"])
        band = {0: 0, 1: 0, 5: 3, 9: 9}
        expected = sorted(messages, key=lambda m: band[m.priority])
        assert [d.headers["id"] for d in got] == [m.headers["id"] for m in expected]

    def test_url_scheme_selects_it(self, broker) -> None:
        assert isinstance(broker, RedisBroker)
        assert {"lease", "delay", "priority", "dead_letter"} <= broker.capabilities

    def test_the_envelope_is_kombus(self, broker, raw) -> None:
        message = make_message("wire", priority=7)
        broker.publish(message)
        [stored] = raw.lrange(f"{self.prefix}wire\x06\x166", 0, -1)  # priority 7: band 6
        envelope = json.loads(stored)
        properties = envelope["properties"]
        assert envelope["content-type"] == "application/json"
        assert envelope["content-encoding"] == "utf-8"
        assert envelope["headers"]["id"] == message.headers["id"]
        assert base64.b64decode(envelope["body"]) == message.body
        assert properties["body_encoding"] == "base64"
        assert properties["delivery_info"] == {"exchange": "", "routing_key": "wire"}
        assert properties["priority"] == 7 and properties["delivery_tag"]
        [delivery] = broker.fetch(["wire"], 10, 5)
        assert delivery.tag == properties["delivery_tag"]
        # held in fastq's own keys, never in kombu's unacked/unacked_index
        assert raw.hexists(f"{self.prefix}fastq:held", delivery.tag)
        assert raw.zscore(f"{self.prefix}fastq:leases", delivery.tag) > time.time()
        assert not raw.exists(f"{self.prefix}unacked", f"{self.prefix}unacked_index")
        broker.ack_many([delivery.tag])
        assert not raw.exists(f"{self.prefix}fastq:held", f"{self.prefix}fastq:owners",
                              f"{self.prefix}fastq:leases")

    def test_a_celery_style_envelope_is_consumed(self, broker, raw) -> None:
        # as a Celery client LPUSHes it: kombu's JSON with spaces, utf-8 body
        envelope = {"body": "[[2, 3], {}, {}]", "content-encoding": "utf-8",
                    "content-type": "application/json",
                    "headers": {"task": "t.add", "id": "abc", "lang": "py"},
                    "properties": {"delivery_tag": "tag-1", "priority": 0,
                                   "body_encoding": "utf-8",
                                   "delivery_info": {"exchange": "", "routing_key": "c"}}}
        raw.lpush(f"{self.prefix}c", json.dumps(envelope))
        [delivery] = broker.fetch(["c"], 10, 5)
        assert delivery.tag == "tag-1" and delivery.body == b"[[2, 3], {}, {}]"
        assert delivery.properties["content_type"] == "application/json"
        broker.ack_many([delivery.tag])

    def test_a_malformed_envelope_is_delivered_for_dead_lettering(self, broker, raw) -> None:
        raw.lpush(f"{self.prefix}bad", b"not json at all")
        [delivery] = broker.fetch(["bad"], 10, 5)
        assert delivery.headers == {} and delivery.body == b"not json at all"
        broker.dead_letter(delivery.tag, "decode-error: not json")
        [record] = broker.dead_letters("bad")
        assert record["reason"] == "decode-error: not json"

    def test_expired_lease_returns_the_message_with_a_redelivery(self) -> None:
        holder = self.make_broker(lease_seconds=0.3)
        holder.publish(make_message(task_id="leased"))
        (first,) = holder.fetch(["celery"], 1, 1)
        holder._stop.set()  # the holder "dies": no more lease renewals
        holder._keeper.join(5)
        other = self.make_broker()
        assert other.fetch(["celery"], 1, 0) == []
        time.sleep(0.5)
        (again,) = other.fetch(["celery"], 1, 1)
        assert again.headers["id"] == "leased" and again.redeliveries == 1
        # the dead holder's late ack must not delete the message the other one now holds
        holder.ack_many([first.tag])
        other.release_many([again.tag])
        (third,) = other.fetch(["celery"], 1, 1)
        assert third.headers["id"] == "leased" and third.redeliveries == 1
        other.ack_many([third.tag])

    def test_a_live_holder_keeps_its_lease_past_the_period(self) -> None:
        holder = self.make_broker(lease_seconds=0.3)
        holder.publish(make_message())
        assert len(holder.fetch(["celery"], 1, 1)) == 1
        time.sleep(1.0)  # three lease periods, renewed by the keeper thread
        assert self.make_broker().fetch(["celery"], 1, 0) == []

    def test_kill_9_of_a_holder_loses_nothing(self) -> None:
        producer = self.make_broker()
        messages = [make_message("killed") for _ in range(3)]
        producer.publish_many(messages)
        script = textwrap.dedent(f"""
            import sys, time
            from fastq.brokers import create_broker
            broker = create_broker({self.broker_url!r}, lease_seconds=1.0)
            got = broker.fetch(["killed"], 10, 5)
            print(len(got), flush=True)
            time.sleep(60)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "3"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()
        consumer = self.make_broker()
        assert consumer.fetch(["killed"], 10, 0) == []  # still leased to the dead process
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            got += consumer.fetch(["killed"], 10, 0.5)
        assert sorted(d.headers["id"] for d in got) == sorted(m.headers["id"] for m in messages)
        assert all(d.redeliveries == 1 for d in got)
        consumer.ack_many([d.tag for d in got])

    def test_delayed_messages_wait_in_a_sorted_set(self, broker, raw) -> None:
        message = make_message("later", not_before=time.time() + 0.6)
        broker.publish(message)
        assert raw.llen(f"{self.prefix}later") == 0
        assert raw.zcard(f"{self.prefix}fastq:delayed:later") == 1
        assert broker.fetch(["later"], 10, 0.2) == []
        [delivery] = broker.fetch(["later"], 10, 5)
        assert delivery.headers["id"] == message.headers["id"]
        assert raw.zcard(f"{self.prefix}fastq:delayed:later") == 0
        broker.ack_many([delivery.tag])

    def test_defer_keeps_the_envelope_and_the_count(self, broker, raw) -> None:
        broker.publish(make_message("d"))
        [delivery] = broker.fetch(["d"], 10, 5)
        broker.reject(delivery.tag, requeue=True)
        [again] = broker.fetch(["d"], 10, 5)
        broker.defer(again, time.time() + 0.3)
        assert raw.zcard(f"{self.prefix}fastq:delayed:d") == 1
        [third] = broker.fetch(["d"], 10, 5)
        assert third.tag == again.tag and third.redeliveries == 1
        broker.ack_many([third.tag])

    def test_dead_letters_are_capped_and_expire(self, raw) -> None:
        broker = self.make_broker(dead_letter_max=3, dead_letter_ttl=600)
        broker.publish_many([make_message("capped") for _ in range(5)])
        for delivery in self.drain(broker, ["capped"]):
            broker.dead_letter(delivery.tag, "test")
        key = f"{self.prefix}fastq:dead:capped"
        assert raw.llen(key) == 3
        assert 0 < raw.ttl(key) <= 600
        assert len(broker.dead_letters()) == 3  # every queue, found by scanning

    def test_fetch_blocks_without_spinning_and_wakes_on_publish(self, broker) -> None:
        broker.fetch(["idle"], 10, 0)  # load the scripts
        started = time.process_time()
        assert broker.fetch(["idle"], 10, 1.0) == []
        assert time.process_time() - started < 0.25  # mostly blocked in Redis, not polling
        producer = self.make_broker()
        import threading

        timer = threading.Timer(0.3, producer.publish, (make_message("idle"),))
        timer.start()
        try:
            t0 = time.monotonic()
            [delivery] = broker.fetch(["idle"], 10, 5)
            assert time.monotonic() - t0 < 0.3 + 0.1  # woken by the push, not a poll tick
        finally:
            timer.join()
        broker.ack_many([delivery.tag])

    def test_unknown_option_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="unknown option.*bogus"):
            create_broker(self.broker_url, bogus=1)

    def test_visibility_timeout_is_accepted_with_one_note(self, caplog) -> None:
        from fastq.brokers import redis as redis_module

        redis_module._noted_visibility_timeout = False
        with caplog.at_level("WARNING", logger="fastq.brokers.redis"):
            for _ in range(2):
                broker = create_broker(self.broker_url, visibility_timeout=3600)
                broker.publish_many([make_message("vt")])
                broker.purge("vt")
                broker.close()
        notes = [r for r in caplog.records if "visibility_timeout" in r.getMessage()]
        assert len(notes) == 1 and "lease" in notes[0].getMessage()


def test_reconnects_across_a_restart_of_its_redis() -> None:
    server = PrivateRedis().start()
    broker = create_broker(server.url, lease_seconds=5, publish_timeout=0.5)
    try:
        broker.publish(make_message("r"))
        [delivery] = broker.fetch(["r"], 10, 5)
        assert broker.state == "consuming"
        server.stop()
        broker.ack_many([delivery.tag])  # kept, not raised: sent once Redis is back
        assert broker.fetch(["r"], 10, 0.5) == []
        assert broker.state == "reconnecting"
        with pytest.raises(PublishTimeout, match="unreachable"):
            broker.publish(make_message("r"))
        server.start()  # the same port: the broker's URL does not change
        message = make_message("r")
        deadline = time.monotonic() + 10
        got = []
        published = False
        while not got and time.monotonic() < deadline:
            if not published:
                try:
                    broker.publish(message)
                    published = True
                except PublishTimeout:
                    continue
            got = broker.fetch(["r"], 10, 0.5)
        assert [d.headers["id"] for d in got] == [message.headers["id"]]
        assert broker.state == "consuming" and not broker._pending
        broker.ack_many([got[0].tag])
    finally:
        broker.close()
        server.stop()
