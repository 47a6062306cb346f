"""The SQS broker's wire helpers and options: URLs, kombu's queue names, bodies, no server."""

from __future__ import annotations

import base64
import json

import pytest

from fastq.brokers import _sqs_wire as wire
from fastq.exceptions import ConfigurationError
from fastq.protocol import Message


def make(headers=None, properties=None, body=b"[[1], {}, {}]", queue="celery") -> Message:
    return Message(headers={"id": "abc", "task": "t.add", **(headers or {})},
                   properties={"content_type": "application/json",
                               "content_encoding": "utf-8", **(properties or {})},
                   body=body, queue=queue)


@pytest.mark.parametrize("queue, prefix, expected", [
    ("celery", "", "celery"),
    ("tasks.high", "", "tasks-high"),
    ("a/b:c", "dev-", "dev-a_b_c"),
    ("orders.eu.fifo", "", "orders-eu.fifo"),
    ("jobs", "p.", "p-jobs"),
])
def test_queue_names_are_kombus(queue, prefix, expected):
    assert wire.sqs_queue_name(queue, prefix) == expected


def test_dead_queue_names():
    assert wire.dead_queue_of("jobs") == "jobs-dead"
    assert wire.dead_queue_of("orders.fifo") == "orders-dead.fifo"
    assert wire.is_dead_queue("p-jobs-dead") and wire.is_dead_queue("orders-dead.fifo")
    assert not wire.is_dead_queue("jobs") and not wire.is_dead_queue("orders.fifo")
    assert wire.queue_of_dead("p-jobs-dead", "p-") == "jobs"
    assert wire.queue_of_dead("orders-dead.fifo") == "orders.fifo"


def test_a_queue_name_too_long_for_sqs_is_refused():
    with pytest.raises(ConfigurationError, match="80 characters"):
        wire.check_queue_name("x" * 81, "x" * 81)


def test_url_credentials_host_and_options():
    parsed = wire.parse_url("sqs://AKIA123:se%2Fcret@localhost:4566?region=eu-west-1"
                            "&queue_name_prefix=dev-&is_secure=true&wait_time_seconds=5")
    assert parsed["access_key_id"] == "AKIA123"
    assert parsed["secret_access_key"] == "se/cret"
    assert (parsed["host"], parsed["port"]) == ("localhost", 4566)
    assert parsed["options"] == {"region": "eu-west-1", "queue_name_prefix": "dev-",
                                 "is_secure": True, "wait_time_seconds": 5}


def test_a_bare_url_leaves_credentials_and_endpoint_to_boto3():
    parsed = wire.parse_url("sqs://")
    assert parsed["access_key_id"] is None and parsed["secret_access_key"] is None
    assert parsed["host"] is None and parsed["options"] == {}


@pytest.mark.parametrize("url, match", [
    ("redis://x", "not an SQS URL"),
    ("sqs://?colour=blue", "unknown option 'colour'"),
    ("sqs://?wait_time_seconds=soon", "bad value for wait_time_seconds"),
])
def test_bad_urls_say_what_is_wrong(url, match):
    with pytest.raises(ConfigurationError, match=match):
        wire.parse_url(url)


def test_body_is_base64_of_kombus_envelope_and_reads_back():
    message = make(headers={"retries": 0}, properties={"priority": 0}, body=b"\x00\xffbin")
    raw = wire.encode_body(message)
    envelope = json.loads(base64.b64decode(raw))
    assert envelope["content-type"] == "application/json"
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert envelope["properties"]["body_encoding"] == "base64"
    headers, properties, body = wire.decode_body(raw)
    assert headers == message.headers and body == b"\x00\xffbin"
    assert properties["content_type"] == "application/json"
    # kombu with sqs_base64_encoding off: the JSON itself
    assert wire.decode_body(wire.encode_body(message, base64_encoding=False))[2] == b"\x00\xffbin"


@pytest.mark.parametrize("raw", ["not json, not base64!", base64.b64encode(b"[1, 2]").decode(),
                                 "{\"body\": 1}"])
def test_what_is_not_an_envelope_raises_value_error(raw):
    with pytest.raises(ValueError):
        wire.decode_body(raw)


def test_deduplication_ids():
    assert wire.deduplication_id(make()) == "abc"
    # a retry keeps the task id: it must not be dropped as a duplicate of the first send
    assert wire.deduplication_id(make(headers={"retries": 2})) == "abc-retry-2"
    assert wire.deduplication_id(make(properties={"MessageDeduplicationId": "x"})) == "x"
    assert wire.deduplication_id(make(headers={"id": None})) != \
        wire.deduplication_id(make(headers={"id": None}))


def test_attributes_round_trip_into_send_shape():
    received = {"a": {"DataType": "Number", "StringValue": "1.5", "StringListValues": [],
                      "BinaryListValues": []}}
    sendable = wire.sendable_attributes(received)
    assert sendable == {"a": {"DataType": "Number", "StringValue": "1.5"}}
    assert wire.number_of(sendable, "a") == 1.5 and wire.number_of(sendable, "b") is None
    assert wire.string_attribute("")["StringValue"]  # SQS refuses empty values


class TestOptions:
    """The broker checks its options when built, before any request."""

    def build(self, url="sqs://", **options):
        pytest.importorskip("boto3")
        from fastq.brokers import create_broker

        return create_broker(url, **options)

    def test_defaults_and_visibility_in_whole_seconds(self):
        broker = self.build(lease_seconds=1.5)
        assert broker.visibility == 2 and broker.queue_visibility_timeout == 1800
        assert broker.max_receive_count == broker.max_redeliveries + 2
        assert broker.endpoint_url is None

    def test_a_host_in_the_url_is_the_endpoint(self):
        assert self.build("sqs://k:s@127.0.0.1:4566").endpoint_url == "http://127.0.0.1:4566"
        assert self.build("sqs://h?is_secure=1").endpoint_url == "https://h"
        assert self.build("sqs://h", endpoint_url="http://x:1").endpoint_url == "http://x:1"

    def test_unknown_and_unsupported_options_are_errors(self):
        with pytest.raises(ConfigurationError, match="unknown option"):
            self.build(visiblity_timeout=5)
        with pytest.raises(ConfigurationError, match="not supported by fastq: sts_role_arn"):
            self.build(sts_role_arn="arn:aws:iam::1:role/x")
        with pytest.raises(ConfigurationError, match="wait_time_seconds"):
            self.build(wait_time_seconds=30)


class TestErrors:
    """What SQS answers becomes a fastq error that says whether trying again can help."""

    def call_failing_with(self, code, status):
        pytest.importorskip("boto3")
        import botocore.exceptions

        from fastq.brokers import create_broker

        def refuse(**kwargs):
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": code, "Message": "no"},
                 "ResponseMetadata": {"HTTPStatusCode": status}}, "SendMessageBatch")

        broker = create_broker("sqs://k:s@127.0.0.1:1")
        with pytest.raises(Exception) as info:
            broker._call("send", refuse)
        return info.value

    @pytest.mark.parametrize("code, status", [
        ("RequestThrottled", 403), ("ThrottlingException", 400),
        ("AWS.SimpleQueueService.RequestThrottled", 400), ("Anything", 503),
        ("InternalError", 500)])
    def test_throttles_and_server_errors_are_retried_like_a_lost_connection(self, code,
                                                                            status):
        from fastq.brokers.sqs import SQSUnavailable
        from fastq.exceptions import BrokerConnectionLost

        error = self.call_failing_with(code, status)
        assert isinstance(error, SQSUnavailable) and isinstance(error, BrokerConnectionLost)
        assert error.recoverable and "could not serve send now" in str(error)

    def test_a_refusal_is_not_retried(self):
        from fastq.brokers.sqs import SQSError, SQSUnavailable

        error = self.call_failing_with("AWS.SimpleQueueService.NonExistentQueue", 400)
        assert type(error) is SQSError and not isinstance(error, SQSUnavailable)
        assert not error.recoverable and error.code == "NonExistentQueue"

    def test_botocore_makes_one_attempt_so_publish_timeout_bounds_the_wait(self):
        pytest.importorskip("boto3")
        from fastq.brokers import create_broker
        from fastq.exceptions import BrokerConnectionLost

        broker = create_broker("sqs://k:s@127.0.0.1:1")  # nothing listens on port 1
        try:
            client = broker._client()
            sent = []
            client.meta.events.register("before-send.sqs", lambda **kw: sent.append(1))
            with pytest.raises(BrokerConnectionLost, match="unreachable during lookup"):
                broker._call("lookup", client.get_queue_url, QueueName="q")
            assert len(sent) == 1
        finally:
            broker.close()
