"""Fuzzing both AMQP drivers' frame readers through a proxy that damages what RabbitMQ
sends: every damaged session ends in a result or a broker error, in bounded time, never
a hang or a stray exception (short deterministic profile; ``python -m bench.fuzz
--frames N`` is the long run). Also the damages the fuzzer found, one test each."""

from __future__ import annotations

import struct
import time
import uuid

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from fastq.exceptions import BrokerConnectionLost  # noqa: E402
from fastq.testing import fuzzing  # noqa: E402
from fastq.testing.proxy import FaultProxy  # noqa: E402
from tests import servers  # noqa: E402
from tests.integration.test_amqp_driver import HOST, PORT, _driver_class  # noqa: E402

pytestmark = pytest.mark.integration

servers.require("RabbitMQ", PORT, module_level=True)

#: what a damaged session may end in (fuzzing.damaged_session)
OUTCOMES = {"whole", "altered", "lost", "refused", "unconfirmed", "short"}
#: a session's own waits (rpc 0.3 s, confirms 0.5 s, reading 0.8 s, close 2 s) and slack
SESSION_BOUND = 6.0


@settings(max_examples=50, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damage=fuzzing.frame_damages())
def test_a_damaged_frame_ends_in_a_result_or_a_broker_error_in_bounded_time(impl, damage):
    started = time.monotonic()
    outcome = fuzzing.damaged_session(_driver_class(impl), (HOST, PORT), damage)
    elapsed = time.monotonic() - started
    assert outcome in OUTCOMES, (damage, outcome)
    assert elapsed < SESSION_BOUND, (damage, outcome, elapsed)


def _session(impl: str, rewrite, queue_name: str, messages: int = 1):
    """Publish ``messages`` to ``queue_name`` directly, then consume them through a proxy
    applying ``rewrite``; returns (the exception drain raised, seconds it took)."""
    publisher = _driver_class(impl)(HOST, PORT)
    publisher.connect()
    try:
        publisher.declare_queue(queue_name, durable=False, auto_delete=False)
        for n in range(messages):
            publisher.publish("", queue_name, b"x" * 100 + bytes([n]), {}, None)
    finally:
        publisher.close()
    proxy = FaultProxy((HOST, PORT), rewrite=rewrite)
    conn = _driver_class(impl)("127.0.0.1", proxy.port, rpc_timeout=0.5)
    started = time.monotonic()
    try:
        conn.connect()
        with pytest.raises(BrokerConnectionLost) as raised:
            conn.consume(queue_name)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                conn.drain(1, 0.2)
        return raised.value, time.monotonic() - started
    finally:
        conn.close()
        proxy.close()
        cleaner = _driver_class("py")(HOST, PORT)
        cleaner.connect()
        cleaner.delete_queue(queue_name)
        cleaner.close()


def test_body_frames_that_never_come_lose_the_connection_within_rpc_timeout(impl):
    def rewrite(frame: bytes) -> bytes:
        return b"" if frame[0] == 3 else frame

    error, took = _session(impl, rewrite, f"fastq-frames-{uuid.uuid4().hex}")
    assert took < 3.0, error


def test_a_content_header_announcing_an_impossible_size_loses_the_connection(impl):
    def rewrite(frame: bytes) -> bytes:
        if frame[0] != 2:
            return frame
        # payload: class id, weight, then the 64-bit body size
        return frame[:11] + struct.pack(">Q", 2**62) + frame[19:]

    error, took = _session(impl, rewrite, f"fastq-frames-{uuid.uuid4().hex}")
    assert took < 3.0, error


def test_a_lost_consume_ok_does_not_keep_the_consumer_waiting(impl):
    """py-amqp rejects deliveries for a consumer it has not seen confirmed, RabbitMQ sends
    them again at once: a wait bounded per read never ended."""

    def rewrite(frame: bytes) -> bytes:
        return b"" if frame[0] == 1 and frame[7:11] == b"\x00\x3c\x00\x15" else frame

    error, took = _session(impl, rewrite, f"fastq-frames-{uuid.uuid4().hex}", messages=3)
    assert took < 3.0, error
