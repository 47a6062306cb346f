"""Both AMQP drivers (rabbitmq-c [c], py-amqp [py]) against a real RabbitMQ on loopback.

The same tests run on both; the cross-driver tests check that what one writes the other
reads identically, and that both put the same content-header bytes on the wire.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import struct
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

from fastq.exceptions import AMQPError, BrokerConnectionLost, PublishNacked
from fastq.testing.proxy import FaultProxy, amqp_frames
from tests import servers

pytestmark = pytest.mark.integration

HOST, PORT = "127.0.0.1", 5672
DRIVERS = {"c": "fastq._speedups._amqp", "py": "fastq.brokers._amqp_py"}


servers.require("RabbitMQ", PORT, module_level=True)


def _driver_class(impl: str):
    return importlib.import_module(DRIVERS[impl]).Connection


@pytest.fixture
def connect(impl):
    """A factory of connected drivers of this test's kind; all are closed afterwards."""
    opened = []

    def make(kind: str | None = None, **kwargs):
        conn = _driver_class(kind or impl)(HOST, PORT, **kwargs)
        conn.connect()
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def queues():
    """Unique queue names, deleted after the test (through a fresh py-amqp connection)."""
    names: list[str] = []

    def make(prefix: str = "fastq-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex}"
        names.append(name)
        return name

    yield make
    cleaner = _driver_class("py")(HOST, PORT)
    try:
        cleaner.connect()
        for name in names:
            with contextlib.suppress(AMQPError):
                cleaner.delete_queue(name)
    finally:
        cleaner.close()


def _declare(conn, name: str, **kwargs) -> str:
    conn.declare_queue(name, durable=False, **kwargs)
    return name


def _drain_n(conn, n: int, timeout: float = 5.0) -> list[tuple]:
    got: list[tuple] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(conn.drain(n - len(got), 0.5))
    assert len(got) == n, got
    return got


def _ready_count(connect, queue: str) -> int:
    """Ready messages, seen from a fresh connection (after the test's own closed)."""
    other = connect()
    return other.declare_queue(queue, durable=False, passive=True)[1]


# values that must come back unchanged, header by header
HEADERS = {
    "str": "héllo ✓",
    "empty": "",
    "true": True,
    "false": False,
    "zero": 0,
    "int32_max": 2**31 - 1,
    "int32_min": -(2**31),
    "just_above_int32": 2**31,
    "just_below_int32": -(2**31) - 1,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "negative": -42,
    "float": 3.25,
    "none": None,
    "bytes_utf8": b"plain",
    "bytes_binary": b"\xff\x00\xfe",
    "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    "nested": {"list": [1, "two", None, 2**40, [True, {"deep": -1.5}]], "empty": {}},
    "tuple": (1, 2),
    "timelimit": [None, 10.5],
}
# what reading gives back: bytes that are UTF-8 become str, tuples lists
EXPECTED_HEADERS = dict(HEADERS, bytes_utf8="plain", tuple=[1, 2])
PROPERTIES = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "delivery_mode": 2,
    "priority": 3,
    "correlation_id": "c0ffee",
    "reply_to": "reply.queue",
    "expiration": "60000",
    "message_id": "m-1",
    "timestamp": 1700000000,
    "type": "task",
    "app_id": "fastq-tests",
}


# -- basics ------------------------------------------------------------------------------------
def test_publish_consume_ack_roundtrip(conn, queues):
    queue = _declare(conn, queues())
    exchange = queues("fastq-test-x")
    conn.declare_exchange(exchange, "direct", durable=False, auto_delete=True)
    conn.bind_queue(queue, exchange, "rk")
    conn.qos(10)
    tag = conn.consume(queue, "fastq-test-consumer")
    assert tag == "fastq-test-consumer"
    conn.publish(exchange, "rk", b"payload", {"content_type": "application/x-test"}, None)
    [delivery] = _drain_n(conn, 1)
    delivery_tag, redelivered, ex, rk, consumer_tag, properties, headers, body = delivery
    assert (redelivered, ex, rk, consumer_tag, body) == (False, exchange, "rk", tag, b"payload")
    assert properties == {"content_type": "application/x-test"}
    assert headers == {}
    assert isinstance(delivery_tag, int) and delivery_tag >= 1
    conn.ack(delivery_tag)
    conn.cancel(tag)
    assert conn.get(queue) is None


def test_properties_and_nested_headers_roundtrip(conn, queues):
    queue = _declare(conn, queues())
    conn.publish("", queue, b"\x00body\xff", PROPERTIES, HEADERS)
    conn.consume(queue)
    [(tag, _, _, _, _, properties, headers, body)] = _drain_n(conn, 1)
    assert properties == PROPERTIES
    assert headers == EXPECTED_HEADERS
    assert type(headers["true"]) is bool and type(headers["int64_max"]) is int
    assert headers["when"].tzinfo is not None
    assert body == b"\x00body\xff"
    conn.ack(tag)


def test_properties_absent_or_none_are_not_sent(conn, queues):
    queue = _declare(conn, queues())
    conn.publish("", queue, b"", {"content_type": None, "priority": 0}, {})
    message = conn.get(queue, no_ack=True)
    assert message is not None
    assert message[5] == {"priority": 0}
    assert message[6] == {}
    assert message[7] == b""


def test_header_values_amqp_cannot_carry(conn, queues):
    queue = _declare(conn, queues())
    with pytest.raises(ValueError, match="signed 64 bits"):
        conn.publish("", queue, b"", {}, {"huge": 2**63})
    with pytest.raises(TypeError, match="cannot put a set"):
        conn.publish("", queue, b"", {}, {"outer": {"s": {1}}})
    # the connection is still fine
    conn.publish("", queue, b"after", {}, None)
    assert conn.get(queue, no_ack=True)[7] == b"after"


def test_ack_multiple(connect, queues):
    conn = connect()
    queue = _declare(conn, queues())
    for i in range(5):
        conn.publish("", queue, str(i).encode(), {}, None)
    conn.consume(queue)
    deliveries = _drain_n(conn, 5)
    assert [d[7] for d in deliveries] == [b"0", b"1", b"2", b"3", b"4"]
    conn.ack(deliveries[-1][0], multiple=True)
    conn.close()  # anything left unacked would be requeued now
    assert _ready_count(connect, queue) == 0


def test_reject_requeue_sets_redelivered(conn, queues):
    queue = _declare(conn, queues())
    conn.publish("", queue, b"again", {}, None)
    conn.consume(queue)
    [first] = _drain_n(conn, 1)
    assert first[1] is False
    conn.reject(first[0], requeue=True)
    [second] = _drain_n(conn, 1)
    assert second[1] is True and second[7] == b"again"
    conn.reject(second[0], requeue=False)
    assert conn.drain(10, 0.2) == []


def test_nack_multiple_requeue_and_drop(connect, queues):
    conn = connect()
    queue = _declare(conn, queues())
    for i in range(3):
        conn.publish("", queue, str(i).encode(), {}, None)
    conn.consume(queue)
    deliveries = _drain_n(conn, 3)
    conn.nack(deliveries[-1][0], multiple=True, requeue=True)
    again = _drain_n(conn, 3)
    assert all(d[1] for d in again)
    assert sorted(d[7] for d in again) == [b"0", b"1", b"2"]
    conn.nack(max(d[0] for d in again), multiple=True, requeue=False)
    conn.close()
    assert _ready_count(connect, queue) == 0


def test_basic_get(conn, queues):
    queue = _declare(conn, queues())
    assert conn.get(queue) is None
    conn.publish("", queue, b"one", {"message_id": "x"}, {"k": 1})
    message = conn.get(queue)
    tag, redelivered, exchange, routing_key, consumer_tag, properties, headers, body = message
    assert (redelivered, exchange, routing_key, consumer_tag) == (False, "", queue, "")
    assert (properties, headers, body) == ({"message_id": "x"}, {"k": 1}, b"one")
    conn.ack(tag)
    assert conn.get(queue) is None


def test_purge_returns_count(conn, queues):
    queue = _declare(conn, queues())
    conn.confirm_select()  # confirmed = enqueued, so the counts below are not racy
    for _ in range(7):
        conn.publish("", queue, b"x", {}, None)
    conn.wait_for_confirms(5.0)
    assert conn.declare_queue(queue, durable=False, passive=True)[1] == 7
    assert conn.purge_queue(queue) == 7
    assert conn.purge_queue(queue) == 0


def test_drain_timeout_returns_empty_list_in_about_the_timeout(conn, queues):
    queue = _declare(conn, queues())
    conn.consume(queue)
    start = time.monotonic()
    assert conn.drain(100, 0.3) == []
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 1.0, elapsed
    start = time.monotonic()
    assert conn.drain(100, 0) == []
    assert time.monotonic() - start < 0.2


def test_drain_batches_what_has_arrived(conn, queues):
    queue = _declare(conn, queues())
    for i in range(50):
        conn.publish("", queue, str(i).encode(), {}, None)
    conn.qos(100)
    conn.consume(queue)
    first = conn.drain(10, 2.0)
    assert 1 <= len(first) <= 10
    rest = _drain_n(conn, 50 - len(first))
    bodies = [d[7] for d in first + rest]
    assert bodies == [str(i).encode() for i in range(50)]
    conn.ack(rest[-1][0], multiple=True)


# -- confirms ------------------------------------------------------------------------------------
def test_publisher_confirms(conn, queues):
    queue = _declare(conn, queues())
    conn.wait_for_confirms(1.0)  # nothing outstanding: returns at once
    conn.confirm_select()
    for i in range(200):
        conn.publish("", queue, str(i).encode(), {"delivery_mode": 2}, None)
    conn.wait_for_confirms(5.0)
    assert conn.declare_queue(queue, durable=False, passive=True)[1] == 200


def test_unroutable_mandatory_publish_is_reported(conn, queues):
    conn.confirm_select()
    conn.publish("", queues("fastq-test-nowhere"), b"lost", {}, None, mandatory=True)
    with pytest.raises(PublishNacked, match="312"):
        conn.wait_for_confirms(5.0)
    conn.wait_for_confirms(1.0)  # reported once


def test_publish_to_missing_exchange_closes_channel_not_connection(conn, queues):
    queue = _declare(conn, queues())
    conn.confirm_select()
    conn.publish(queues("fastq-test-no-such-exchange"), "rk", b"x", {}, None)
    with pytest.raises(AMQPError) as info:
        conn.wait_for_confirms(5.0)
    assert info.value.reply_code == 404
    assert conn.is_open
    conn.publish("", queue, b"still here", {}, None)
    assert conn.get(queue, no_ack=True)[7] == b"still here"


# -- errors --------------------------------------------------------------------------------------
def test_redeclare_with_other_arguments_raises_406_and_connection_stays_usable(conn, queues):
    queue = _declare(conn, queues(), arguments={"x-max-priority": 5})
    with pytest.raises(AMQPError) as info:
        conn.declare_queue(queue, durable=False, arguments={"x-max-priority": 9})
    assert info.value.reply_code == 406
    assert "PRECONDITION_FAILED" in info.value.reply_text
    assert info.value.scope == "channel"
    assert conn.is_open
    assert conn.declare_queue(queue, durable=False, arguments={"x-max-priority": 5})[0] == queue


def test_passive_declare_of_missing_queue_raises_404(conn, queues):
    with pytest.raises(AMQPError) as info:
        conn.declare_queue(queues(), passive=True)
    assert info.value.reply_code == 404
    assert conn.declare_queue(queues(), durable=False)[1] == 0


def test_connecting_to_a_closed_port_raises_connection_lost_quickly(impl):
    conn = _driver_class(impl)("127.0.0.1", 1, connect_timeout=2.0)
    start = time.monotonic()
    with pytest.raises(BrokerConnectionLost):
        conn.connect()
    assert time.monotonic() - start < 1.5
    assert not conn.is_open
    conn.close()


def test_wrong_password_is_refused(impl):
    conn = _driver_class(impl)(HOST, PORT, password="not-the-password")
    with pytest.raises((AMQPError, BrokerConnectionLost)):
        conn.connect()
    assert not conn.is_open
    conn.close()


def test_calls_after_close_raise_connection_lost(conn, queues):
    assert conn.is_open
    assert conn.fileno() >= 0
    conn.close()
    conn.close()  # idempotent
    assert not conn.is_open
    with pytest.raises(BrokerConnectionLost):
        conn.drain(1, 0.1)
    with pytest.raises(BrokerConnectionLost):
        conn.publish("", queues(), b"x", {}, None)


def test_connect_again_after_close(conn, queues):
    conn.close()
    conn.connect()
    queue = _declare(conn, queues())
    conn.publish("", queue, b"x", {}, None)
    assert conn.get(queue, no_ack=True)[7] == b"x"


# -- the two drivers agree -----------------------------------------------------------------------
def test_both_drivers_write_messages_that_read_back_identically(impl, connect, queues):
    """c and py publish the same message; this test's driver reads both back."""
    queue_c, queue_py = queues("fastq-test-c"), queues("fastq-test-py")
    writers = {"c": connect("c"), "py": connect("py")}
    for kind, queue in (("c", queue_c), ("py", queue_py)):
        _declare(writers[kind], queue)
        writers[kind].confirm_select()
        writers[kind].publish("", queue, b"same body", PROPERTIES, HEADERS)
        writers[kind].wait_for_confirms(5.0)  # enqueued before the reader looks
    reader = connect(impl)
    got_c, got_py = reader.get(queue_c, no_ack=True), reader.get(queue_py, no_ack=True)
    assert got_c is not None and got_py is not None
    # everything but the delivery tag and the routing key (the queue name) must match,
    # types included
    same_c = got_c[1:3] + got_c[4:]
    same_py = got_py[1:3] + got_py[4:]
    assert same_c == same_py
    assert repr(same_c) == repr(same_py)
    assert got_c[5] == PROPERTIES and got_c[6] == EXPECTED_HEADERS


def _client_frames(proxy: FaultProxy) -> list[bytes]:
    """The frames the client sent through ``proxy``, after the protocol header."""
    return amqp_frames(bytes(proxy.sent[8:]))[0]  # after "AMQP\0\0\x09\x01"


def _content_headers(proxy: FaultProxy) -> list[bytes]:
    """Payloads of the content-header frames (type 2) the client sent."""
    return [frame[7:-1] for frame in _client_frames(proxy) if frame[0] == 2]


def _publish_frames(proxy: FaultProxy) -> list[bytes]:
    """Every frame of the client's basic.publish calls: method, header, body frames."""
    return [frame for frame in _client_frames(proxy)
            if frame[0] in (2, 3) or (frame[0] == 1 and frame[7:11] == b"\x00\x3c\x00\x28")]


def _method_frame(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def test_c_connection_blocked_between_content_frames_is_passed_over(queues):
    """RabbitMQ may send connection.blocked at any point, also between a delivery's
    header and body frames: the delivery must read back whole."""

    def rewrite(frame: bytes) -> bytes:
        if frame[0] == 2:  # after each content header: blocked, then unblocked
            return (frame + _method_frame(0, 10, 60, b"\x09low disk!")
                    + _method_frame(0, 10, 61, b""))
        return frame

    proxy = FaultProxy((HOST, PORT), rewrite=rewrite)
    conn = _driver_class("c")("127.0.0.1", proxy.port, frame_max=4096)
    try:
        conn.connect()
        queue = _declare(conn, queues())
        big = bytes(range(256)) * 40  # three body frames
        conn.publish("", queue, big, PROPERTIES, HEADERS)
        conn.publish("", queue, b"small", {}, None)
        conn.consume(queue, no_ack=True)
        got = _drain_n(conn, 2)
        assert [d[7] for d in got] == [big, b"small"]
        assert got[0][5] == PROPERTIES and got[0][6] == EXPECTED_HEADERS
        assert conn.get(queue, no_ack=True) is None
    finally:
        conn.close()
        proxy.close()


def test_c_a_delivery_without_its_body_frames_loses_the_connection(queues):
    """A broken stream (here: body frames missing) is reported, not misread."""

    def rewrite(frame: bytes) -> bytes:
        return b"" if frame[0] == 3 else frame

    proxy = FaultProxy((HOST, PORT), rewrite=rewrite)
    conn = _driver_class("c")("127.0.0.1", proxy.port)
    try:
        conn.connect()
        queue = _declare(conn, queues())
        conn.publish("", queue, b"first", {}, None)
        conn.publish("", queue, b"second", {}, None)
        conn.consume(queue)
        with pytest.raises(BrokerConnectionLost, match="expected a content frame of type 3"):
            _drain_n(conn, 2)
        assert not conn.is_open
    finally:
        conn.close()
        proxy.close()


QUEUE_DECLARE_OK = b"\x00\x32\x00\x0b"  # class 50, method 11


@pytest.mark.parametrize("damage", ["cut short", "never sent"])
def test_a_reply_that_never_arrives_whole_loses_the_connection_within_rpc_timeout(
        impl, damage, queues):
    """A synchronous method (here queue.declare) whose reply frame is cut short or lost
    must not wait for ever: past rpc_timeout the connection counts as lost."""

    def rewrite(frame: bytes) -> bytes:
        if frame[0] == 1 and frame[7:11] == QUEUE_DECLARE_OK:
            return frame[:len(frame) // 2] if damage == "cut short" else b""
        return frame

    proxy = FaultProxy((HOST, PORT), rewrite=rewrite)
    conn = _driver_class(impl)("127.0.0.1", proxy.port, rpc_timeout=0.5)
    try:
        conn.connect()
        started = time.monotonic()
        with pytest.raises(BrokerConnectionLost, match="declare"):
            conn.declare_queue(queues(), durable=False)
        assert time.monotonic() - started < 3.0
        assert not conn.is_open
    finally:
        conn.close()
        proxy.close()


def test_direct_frames_equal_rabbitmq_c_basic_publish_on_the_wire(queues):
    """The C driver frames publishes itself (one write per batch); the bytes must be
    rabbitmq-c's own amqp_basic_publish bytes, body split over frames included."""
    Connection = _driver_class("c")
    queue = queues()
    big = bytes(range(256)) * 40  # 10 KiB: three body frames at frame_max 4096
    wire = {}
    for direct in (False, True):
        proxy = FaultProxy((HOST, PORT))
        conn = Connection("127.0.0.1", proxy.port, frame_max=4096)
        conn.direct_writes = direct
        try:
            conn.connect()
            _declare(conn, queue)
            conn.publish("", queue, b"same body", PROPERTIES, HEADERS)
            conn.publish("", queue, b"", {"delivery_mode": 1}, None)
            conn.publish("", queue, big, {"content_type": "application/octet-stream"}, None,
                         mandatory=True)
            conn.publish_batch([("", queue, b"one", PROPERTIES, HEADERS),
                                ("amq.direct", "nowhere", big, {}, {"n": 2}),
                                ("", queue, b"three", {}, None)])
        finally:
            conn.close()
            proxy.close()
        wire[direct] = _publish_frames(proxy)
    # three publishes with one body frame, one with none, two with three
    assert len(wire[False]) == 3 * 3 + 2 + 2 * 5
    assert wire[True] == wire[False]


def _random_header_value(rng, depth: int):
    kinds = ["str", "none", "bool", "int32", "int64", "float", "bytes", "when", "surrogate"]
    if depth < 3:
        kinds += ["dict", "list", "tuple"]
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice("aé✓ z0") for _ in range(rng.randrange(0, 40)))
    if kind == "surrogate":
        return "lone \udc80 surrogate"
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int32":
        return rng.randint(-(2**31), 2**31 - 1)
    if kind == "int64":
        return rng.choice([1, -1]) * rng.randint(2**31, 2**63 - 1)
    if kind == "float":
        return rng.uniform(-1e9, 1e9)
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
    if kind == "when":
        return datetime.fromtimestamp(rng.randrange(0, 2**32), timezone.utc)
    if kind == "dict":
        return _random_table(rng, depth + 1)
    items = [_random_header_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return items if kind == "list" else tuple(items)


def _random_table(rng, depth: int = 0) -> dict:
    table = {}
    for _ in range(rng.randrange(0, 8)):
        name = rng.choice(["id", "task", "root_id", "ñame", "x" * rng.randrange(1, 256), 7])
        table[name] = _random_header_value(rng, depth)
    return table


def _random_properties(rng) -> dict:
    properties = {}
    for name in ("content_type", "content_encoding", "correlation_id", "reply_to",
                 "message_id", "type", "app_id"):
        if rng.random() < 0.5:
            properties[name] = rng.choice(["", "application/json", "ü" * 100, 12345])
    # RabbitMQ refuses an expiration that is not a number and a delivery mode not 1 or 2
    if rng.random() < 0.5:
        properties["expiration"] = rng.choice(["60000", 1000])
    if rng.random() < 0.5:
        properties["delivery_mode"] = rng.choice([1, 2, 258])
    if rng.random() < 0.5:
        properties["priority"] = rng.choice([0, 9, 255, 300])
    if rng.random() < 0.3:
        properties["timestamp"] = rng.choice([0, 1700000000, datetime(2030, 1, 2)])
    if rng.random() < 0.2:
        properties["user_id"] = "ignored by both"  # neither writes it
    return properties


def test_direct_properties_equal_rabbitmq_c_for_random_tables(queues):
    """The C driver writes properties and header tables itself; for 300 random ones
    (every kind it writes, nested, non-str names, a dict subclass) the content headers
    must be rabbitmq-c's amqp_encode_properties bytes, and the py-amqp twin's."""
    import collections
    import random

    queue = queues()
    rng = random.Random(20261207)
    messages = []
    for i in range(300):
        headers = _random_table(rng)
        if i % 50 == 7:
            headers = collections.OrderedDict(headers)  # a mapping that is not a dict
        messages.append(("", queue, b"b%d" % i, _random_properties(rng), headers))
    wire = {}
    for kind, direct in (("c", False), ("c", True), ("py", False)):
        proxy = FaultProxy((HOST, PORT))
        conn = _driver_class(kind)("127.0.0.1", proxy.port)
        if kind == "c":
            conn.direct_writes = direct
        try:
            conn.connect()
            _declare(conn, queue)
            conn.publish_batch(messages)
            conn.purge_queue(queue)
        finally:
            conn.close()
            proxy.close()
        wire[kind, direct] = _content_headers(proxy)
    assert len(wire["c", False]) == 300
    assert wire["c", True] == wire["c", False]
    assert wire["py", False] == wire["c", False]


@pytest.mark.parametrize("properties, headers, error, match", [
    ({}, {"bad": object()}, TypeError, "header 'bad': cannot put a object"),
    ({}, {"deep": {"bad": {1, 2}}}, TypeError, "header 'deep': header 'bad': cannot put a set"),
    ({}, {"list": [1, [object()]]}, TypeError, "header 'list': cannot put a object"),
    ({}, {"huge": 2**64}, ValueError, "header 'huge': integer 18446744073709551616 does not"),
    ({}, {"n" * 256: 1}, ValueError, "AMQP header name longer than 255 bytes"),
    ({"reply_to": "r" * 256}, None, ValueError, "AMQP property 'reply_to' is longer than 255"),
    ({"content_type": "x" * 300}, {"bad": object()}, ValueError, "property 'content_type'"),
])
def test_both_c_paths_refuse_a_bad_message_alike(queues, properties, headers, error, match):
    """Writing the properties directly must refuse what rabbitmq-c's path refuses, with
    the same error, and leave the connection usable: nothing of the message is sent."""
    _refused_and_still_usable(queues, properties, headers, error, match, (False, True))


def test_c_direct_path_refuses_headers_bigger_than_a_frame(queues):
    """(rabbitmq-c's own path gives the connection up instead: it finds out mid-write.)"""
    _refused_and_still_usable(queues, {}, {"big": "x" * 200_000}, ValueError,
                              "do not fit one AMQP frame", (True,))


def _refused_and_still_usable(queues, properties, headers, error, match, paths) -> None:
    for direct in paths:
        conn = _driver_class("c")(HOST, PORT)
        conn.direct_writes = direct
        try:
            conn.connect()
            queue = _declare(conn, queues())
            with pytest.raises(error, match=match):
                conn.publish("", queue, b"refused", properties, headers)
            conn.publish("", queue, b"after", {}, None)
            assert conn.get(queue, no_ack=True)[7] == b"after"
            assert conn.get(queue, no_ack=True) is None
        finally:
            conn.close()


def test_publish_batch_sends_in_order_and_stops_at_a_bad_message(conn, queues):
    queue = _declare(conn, queues())
    conn.confirm_select()
    conn.publish_batch([("", queue, str(i).encode(), {}, {"i": i}) for i in range(500)])
    conn.wait_for_confirms(5.0)
    with pytest.raises(TypeError, match="header 'bad'"):
        conn.publish_batch([("", queue, b"kept", {}, None),
                            ("", queue, b"refused", {}, {"bad": object()}),
                            ("", queue, b"never", {}, None)])
    conn.wait_for_confirms(5.0)  # what went out before the bad message is confirmed
    got = [conn.get(queue, no_ack=True) for _ in range(502)]
    assert [d[7] for d in got[:500]] == [str(i).encode() for i in range(500)]
    assert [d[6]["i"] for d in got[:500]] == list(range(500))
    assert got[500][7] == b"kept" and got[501] is None
    assert conn.get(queue, no_ack=True) is None


def test_publish_and_ack_sends_the_messages_then_the_acks(connect, queues):
    """A worker's results and its acks in one call: every message arrives, every acked
    delivery is gone, a bad message is left out (its error raised after the rest went)."""
    conn = connect()
    tasks, replies = _declare(conn, queues()), _declare(conn, queues())
    for i in range(6):
        conn.publish("", tasks, str(i).encode(), {}, None)
    conn.consume(tasks)
    deliveries = _drain_n(conn, 6)
    conn.publish_and_ack([("", replies, b"r0", {"correlation_id": "0"}, None),
                          ("", replies, b"r1", {}, None)],
                         deliveries[2][0], [deliveries[4][0]])
    with pytest.raises(ValueError):
        conn.publish_and_ack([("", "q" * 300, b"unroutable name", {}, None),
                              ("", replies, b"r2", {}, None)], None, [deliveries[5][0]])
    got = [conn.get(replies, no_ack=True) for _ in range(4)]
    assert [d[7] for d in got[:3]] == [b"r0", b"r1", b"r2"] and got[3] is None
    assert got[0][5]["correlation_id"] == "0"
    conn.close()  # the unacked delivery (3) is requeued now
    check = connect()
    assert check.get(tasks, no_ack=True)[7] == b"3"
    assert check.get(tasks, no_ack=True) is None


def test_c_publish_and_ack_writes_rabbitmq_c_bytes_in_one_send(queues):
    """The basic.ack the C driver frames itself (to send results and acks in one write)
    is byte for byte rabbitmq-c's amqp_basic_ack, after the result on the wire."""
    Connection = _driver_class("c")
    queue = queues()
    wire = {}
    for direct in (False, True):
        proxy = FaultProxy((HOST, PORT))
        conn = Connection("127.0.0.1", proxy.port)
        conn.direct_writes = direct
        try:
            conn.connect()
            _declare(conn, queue)
            for i in range(3):
                conn.publish("", queue, str(i).encode(), {}, None)
            conn.consume(queue)
            tags = [d[0] for d in _drain_n(conn, 3)]
            conn.publish_and_ack([("", queue, b"result", {"correlation_id": "c"}, None)],
                                 tags[1], [tags[2]])
        finally:
            conn.close()
            proxy.close()
        frames = _client_frames(proxy)
        # from the last basic.publish (the result) on: its three frames, then the acks
        last = max(i for i, f in enumerate(frames) if f[0] == 1 and f[7:11] == b"\x00\x3c\x00\x28")
        wire[direct] = frames[last:last + 5]
    assert wire[True] == wire[False]
    assert [f[7:11] for f in wire[True][3:]] == [b"\x00\x3c\x00\x50"] * 2
    assert wire[True][4][-2] == 0 and wire[True][3][-2] == 1  # the multiple bit


def test_c_signal_during_a_stalled_publish_raises_and_drops_the_connection(queues):
    """A publish blocked because RabbitMQ stopped reading (a resource alarm) must still
    see Ctrl-C; the frame may be half written, so the connection is given up."""
    conn = _driver_class("c")("127.0.0.1", (proxy := FaultProxy((HOST, PORT))).port)
    try:
        conn.connect()
        queue = _declare(conn, queues())
        proxy.stalled.set()

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        start = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                conn.publish_batch([("", queue, b"x" * 65536, {}, None)] * 400)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert time.monotonic() - start < 3
        assert not conn.is_open
        with pytest.raises(BrokerConnectionLost):
            conn.publish("", queue, b"after", {}, None)
    finally:
        proxy.stalled.clear()
        conn.close()
        proxy.close()


def test_both_drivers_put_identical_content_headers_on_the_wire(queues):
    wire = {}
    queue = queues()
    for kind in ("c", "py"):
        proxy = FaultProxy((HOST, PORT))
        conn = _driver_class(kind)("127.0.0.1", proxy.port)
        try:
            conn.connect()
            _declare(conn, queue)
            conn.publish("", queue, b"same body", PROPERTIES, HEADERS)
            conn.publish("", queue, b"", {"delivery_mode": 1}, None)
        finally:
            conn.close()
            proxy.close()
        wire[kind] = _content_headers(proxy)
    assert len(wire["c"]) == 2
    assert wire["c"] == wire["py"]


# -- asynchronous frames and resources -----------------------------------------------------------
def test_channel_error_arriving_during_drain(conn, queues):
    queue = _declare(conn, queues())
    conn.consume(queue)
    conn.ack(999_999)  # unknown delivery tag: RabbitMQ closes the channel, asynchronously
    with pytest.raises(AMQPError) as info:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.drain(10, 0.5)
    assert info.value.reply_code == 406
    assert conn.is_open
    conn.publish("", queue, b"x", {}, None)
    assert conn.get(queue, no_ack=True)[7] == b"x"


def test_deliveries_arriving_while_waiting_for_confirms_are_kept(conn, queues):
    queue = _declare(conn, queues())
    conn.consume(queue)
    conn.confirm_select()
    for i in range(20):
        conn.publish("", queue, str(i).encode(), {}, None)
    conn.wait_for_confirms(5.0)
    deliveries = _drain_n(conn, 20)
    assert [d[7] for d in deliveries] == [str(i).encode() for i in range(20)]
    conn.ack(deliveries[-1][0], multiple=True)


def test_queue_deleted_under_a_consumer(connect, queues):
    conn = connect()
    queue = _declare(conn, queues())
    conn.consume(queue)
    connect().delete_queue(queue)
    # basic.cancel from the server: both drivers report the connection lost, so that
    # the broker's reconnect logic declares the queue and subscribes again
    with pytest.raises(BrokerConnectionLost, match="cancel"):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.drain(10, 0.5)
    assert not conn.is_open
    conn.connect()
    assert conn.declare_queue(queue, durable=False)[0] == queue


def test_large_body_spanning_frames(conn, queues):
    queue = _declare(conn, queues())
    body = os.urandom(1_000_003)
    conn.publish("", queue, body, {}, {"n": 1})
    message = conn.get(queue, no_ack=True)
    assert message[7] == body


def test_heartbeats_keep_an_idle_consumer_alive(connect, queues):
    conn = connect(heartbeat=1)
    queue = _declare(conn, queues())
    conn.consume(queue)
    # idle in drain for several heartbeat intervals; each side must hear from the other
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        assert conn.drain(10, 0.7) == []
    conn.publish("", queue, b"alive", {}, None)
    assert _drain_n(conn, 1)[0][7] == b"alive"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_c_dropped_connections_release_their_sockets():
    """rabbitmq-c only: __dealloc__ destroys the connection. (A py-amqp connection that
    is never closed leaves its socket to the garbage collector, with a ResourceWarning.)"""
    cls = _driver_class("c")
    before = _open_fds()
    for _ in range(10):
        conn = cls(HOST, PORT)
        conn.connect()
        del conn  # never closed: the driver must free it when collected
    import gc

    gc.collect()
    assert _open_fds() <= before + 1


def test_c_close_from_another_thread_wakes_a_blocked_drain(queues):
    """rabbitmq-c only: py-amqp has no safe cross-thread close, by its own design."""
    conn = _driver_class("c")(HOST, PORT)
    conn.connect()
    queue = _declare(conn, queues())
    conn.consume(queue)
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(conn.drain(10, 30.0))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    with pytest.raises(RuntimeError, match="another thread"):
        conn.publish("", queue, b"x", {}, None)
    start = time.monotonic()
    conn.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - start < 2
    assert isinstance(outcome[0], BrokerConnectionLost), outcome
    assert not conn.is_open
    conn.close()



def test_py_amqp_publish_without_confirms_reads_nothing_when_nothing_came(queues,
                                                                        monkeypatch):
    # py-amqp polls the socket with timeout 0 before every basic_publish; a read attempt
    # there waits the socket's smallest timeout, a millisecond, per publish
    conn = _driver_class("py")(HOST, PORT)
    conn.connect()
    try:
        name = _declare(conn, queues())
        reads = []
        transport = conn._conn.transport
        real_read_frame = transport.read_frame
        monkeypatch.setattr(transport, "read_frame",
                            lambda *a, **k: reads.append(1) or real_read_frame(*a, **k))
        for i in range(20):
            conn.publish("", name, b"%d" % i, {"delivery_mode": 2}, {})
        assert reads == []
        conn.consume(name)
        assert len(_drain_n(conn, 20)) == 20  # reading still works when something came
        assert reads
    finally:
        conn.close()
