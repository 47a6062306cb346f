"""The SQS broker on a moto server: the broker contract, kombu's wire format, visibility, FIFO."""

from __future__ import annotations

import base64
import json
import time

import pytest

from fastq.brokers import create_broker
from fastq.testing.contracts import BrokerContract, make_message
from tests.integration.sqs_support import moto_endpoint, sqs_client, sqs_prefix  # noqa: F401

# the SQS broker has no compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def queue_url(client, name: str) -> str:
    return client.get_queue_url(QueueName=name)["QueueUrl"]


class TestSQSBroker(BrokerContract):
    # moto's ReceiveMessage and ChangeMessageVisibility scan the whole queue, about a
    # millisecond per message on this machine: a thousand held messages take minutes to
    # drain there (real SQS answers in milliseconds whatever the depth)
    bulk_messages = 200
    concurrent_messages = 200
    # A standard queue delivers at least once: "visibility timeout isn't a guarantee
    # against receiving a message twice" (AWS's SQS guide). moto shows it for its own
    # reason: ReceiveMessage tests a message's visibility and then marks it received
    # with no lock, so two receives served at the same moment can both return it, one
    # MessageId with ApproximateReceiveCount 2 to both consumers, milliseconds apart,
    # with 30 s of visibility asked. Plain boto3 against moto 5.2.6 does it in about one
    # run of this test in twenty; with moto's receive_message serialised, never. The
    # no-copy-while-held promise that fastq's keeper makes is tested one receive at a
    # time, where no such race exists: test_a_live_holder_keeps_its_messages_invisible.
    concurrent_copies = True

    @pytest.fixture
    def broker_url(self, moto_endpoint, sqs_prefix) -> str:  # noqa: F811
        self.prefix = sqs_prefix
        host = moto_endpoint.split("://", 1)[1]
        # a host in the URL is the endpoint, as in kombu; credentials from the environment
        return f"sqs://{host}?queue_name_prefix={sqs_prefix}"

    def test_release_does_not_count_a_delivery(self, broker) -> None:
        # Deviation, on purpose: release is ChangeMessageVisibility(0), as kombu releases,
        # and SQS counts every receive (ApproximateReceiveCount), so the released message
        # comes back counted once. The contract's other redelivery counts hold.
        message = make_message("release")
        broker.publish(message)
        [delivery] = broker.fetch(["release"], 10, 5)
        broker.release_many([delivery.tag])
        [again] = broker.fetch(["release"], 10, 5)
        assert again.headers["id"] == message.headers["id"]
        assert (delivery.redeliveries, again.redeliveries) == (0, 1)
        broker.ack_many([again.tag])

    def test_capabilities(self, broker) -> None:
        assert type(broker).__name__ == "SQSBroker"
        assert broker.capabilities == {"delay", "lease", "dead_letter"}  # no priorities

    def test_the_body_is_kombus_base64_envelope(self, broker, sqs_client) -> None:  # noqa: F811
        message = make_message("wire.names", priority=3)
        broker.publish(message)
        # kombu's name: prefix + queue, dots as hyphens
        url = queue_url(sqs_client, f"{self.prefix}wire-names")
        [raw] = sqs_client.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
        envelope = json.loads(base64.b64decode(raw["Body"]))
        assert envelope["content-type"] == "application/json"
        assert envelope["content-encoding"] == "utf-8"
        assert envelope["headers"]["id"] == message.headers["id"]
        assert base64.b64decode(envelope["body"]) == message.body
        properties = envelope["properties"]
        assert properties["body_encoding"] == "base64"
        assert properties["delivery_info"] == {"exchange": "", "routing_key": "wire.names"}
        assert properties["priority"] == 3 and properties["delivery_tag"]
        assert "MessageAttributes" not in raw  # nothing of fastq's on a plain message

    @pytest.mark.parametrize("encode", [True, False], ids=["base64", "plain-json"])
    def test_a_celery_style_message_is_consumed(self, broker, sqs_client, encode) -> None:  # noqa: F811
        # as kombu's SQS transport sends it (JSON with spaces, a utf-8 body inside)
        envelope = json.dumps({
            "body": "[[2, 3], {}, {}]", "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": "t.add", "id": "abc", "lang": "py"},
            "properties": {"delivery_tag": "tag-1", "priority": 0, "body_encoding": "utf-8",
                           "delivery_info": {"exchange": "", "routing_key": "celery"}}})
        broker.declare("celery")
        body = base64.b64encode(envelope.encode()).decode() if encode else envelope
        sqs_client.send_message(QueueUrl=queue_url(sqs_client, f"{self.prefix}celery"),
                                MessageBody=body)
        [delivery] = broker.fetch(["celery"], 10, 5)
        assert delivery.headers["id"] == "abc" and delivery.body == b"[[2, 3], {}, {}]"
        assert delivery.properties["content_type"] == "application/json"
        assert delivery.queue == "celery" and delivery.redeliveries == 0
        broker.ack_many([delivery.tag])

    def test_a_malformed_body_is_delivered_for_dead_lettering(self, broker, sqs_client) -> None:  # noqa: F811
        broker.declare("bad")
        sqs_client.send_message(QueueUrl=queue_url(sqs_client, f"{self.prefix}bad"),
                                MessageBody="not json, not base64!")
        [delivery] = broker.fetch(["bad"], 10, 5)
        assert delivery.headers == {} and delivery.body == b"not json, not base64!"
        broker.dead_letter(delivery.tag, "decode-error: not json")
        [record] = broker.dead_letters("bad")
        assert record["reason"] == "decode-error: not json" and record["queue"] == "bad"

    def test_fetch_takes_more_than_ten_in_one_call(self, broker) -> None:
        broker.publish_many([make_message("many") for _ in range(25)])
        got = broker.fetch(["many"], 25, 5)
        assert len(got) == 25  # three ReceiveMessage calls of at most ten
        broker.ack_many([d.tag for d in got])

    def test_a_long_poll_returns_as_soon_as_a_message_arrives(self) -> None:
        import threading

        consumer, producer = self.make_broker(), self.make_broker()
        consumer.declare("poll")
        timer = threading.Timer(0.5, producer.publish, (make_message("poll"),))
        started = time.monotonic()
        timer.start()
        try:
            [delivery] = consumer.fetch(["poll"], 10, 10)
        finally:
            timer.join()
        assert time.monotonic() - started < 5
        consumer.ack_many([delivery.tag])

    # -- visibility ------------------------------------------------------------------
    def test_a_live_holder_keeps_its_messages_invisible(self) -> None:
        holder = self.make_broker(lease_seconds=1)
        holder.publish(make_message("kept"))
        [delivery] = holder.fetch(["kept"], 1, 5)
        time.sleep(3.5)  # three and a half visibility periods, renewed by the keeper
        assert self.make_broker().fetch(["kept"], 1, 0) == []
        holder.ack_many([delivery.tag])

    def test_a_dead_holders_messages_come_back_counted(self) -> None:
        holder = self.make_broker(lease_seconds=1)
        holder.publish(make_message("lapsed", task_id="lapsed-1"))
        [first] = holder.fetch(["lapsed"], 1, 5)
        holder._stop.set()  # the holder "dies": its keeper stops renewing
        holder._keeper.join(5)
        other = self.make_broker()
        assert other.fetch(["lapsed"], 1, 0) == []
        [again] = other.fetch(["lapsed"], 1, 5)
        assert again.headers["id"] == "lapsed-1" and again.redeliveries == 1
        other.ack_many([again.tag])

    # -- delays ----------------------------------------------------------------------
    def test_a_delay_beyond_fifteen_minutes_waits_in_sqs(self, broker, sqs_client) -> None:  # noqa: F811
        broker.publish(make_message("far", not_before=time.time() + 3600))
        url = queue_url(sqs_client, f"{self.prefix}far")
        counts = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        assert counts["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
        assert broker.fetch(["far"], 10, 0.2) == []

    def test_a_message_due_later_than_its_delay_is_sent_back(self, broker, sqs_client) -> None:  # noqa: F811
        # what a 15-minute DelaySeconds hop of a longer delay looks like when it ends
        broker.declare("hop")
        url = queue_url(sqs_client, f"{self.prefix}hop")
        message = make_message("hop")
        from fastq.brokers import _sqs_wire as wire

        due = time.time() + 1.5
        sqs_client.send_message(QueueUrl=url, MessageBody=wire.encode_body(message),
                                MessageAttributes={
                                    wire.ATTR_NOT_BEFORE: wire.number_attribute(due)})
        assert broker.fetch(["hop"], 10, 0.5) == []
        [delivery] = broker.fetch(["hop"], 10, 5)
        assert time.time() >= due - 0.01
        assert delivery.headers["id"] == message.headers["id"]
        assert delivery.redeliveries == 0  # the wait was no delivery
        broker.ack_many([delivery.tag])

    def test_deferring_keeps_the_redelivery_count(self, broker) -> None:
        broker.publish(make_message("keep-count"))
        [first] = broker.fetch(["keep-count"], 1, 5)
        broker.reject(first.tag, requeue=True)
        [second] = broker.fetch(["keep-count"], 1, 5)
        assert second.redeliveries == 1
        broker.defer(second, time.time() + 1)
        [third] = broker.fetch(["keep-count"], 1, 5)
        assert third.redeliveries == 1  # a re-sent copy, with the count carried over
        broker.ack_many([third.tag])

    # -- dead letters ----------------------------------------------------------------
    def test_queues_get_a_redrive_policy_to_their_dead_queue(self, broker, sqs_client) -> None:  # noqa: F811
        broker.declare("redriven")
        url = queue_url(sqs_client, f"{self.prefix}redriven")
        attributes = sqs_client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"])["Attributes"]
        policy = json.loads(attributes["RedrivePolicy"])
        assert policy["deadLetterTargetArn"].endswith(f":{self.prefix}redriven-dead")
        assert int(policy["maxReceiveCount"]) == broker.max_redeliveries + 2
        assert attributes["VisibilityTimeout"] == "1800"  # kombu's, for Celery workers

    def test_sqs_redrive_moves_a_message_received_too_often(self, sqs_client) -> None:  # noqa: F811
        broker = self.make_broker(max_redeliveries=0)  # maxReceiveCount 2
        message = make_message("poison")
        broker.publish(message)
        for expected in (0, 1):
            [delivery] = broker.fetch(["poison"], 1, 5)
            assert delivery.redeliveries == expected
            broker.reject(delivery.tag, requeue=True)  # e.g. a worker that keeps crashing
        assert broker.fetch(["poison"], 1, 0.5) == []  # SQS moved it on the third receive
        [record] = broker.dead_letters("poison")
        assert record["reason"].startswith("max-receive-count")
        assert record["headers"]["id"] == message.headers["id"]
        assert record["queue"] == "poison"

    def test_dead_letter_sends_the_reason_as_a_message_attribute(self, broker, sqs_client) -> None:  # noqa: F811
        message = make_message("explicit")
        broker.publish(message)
        [delivery] = broker.fetch(["explicit"], 1, 5)
        broker.dead_letter(delivery.tag, "unknown-task: contract.task")
        url = queue_url(sqs_client, f"{self.prefix}explicit-dead")
        [raw] = sqs_client.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                                           VisibilityTimeout=0)["Messages"]
        attributes = raw["MessageAttributes"]
        assert attributes["fastq-reason"]["StringValue"] == "unknown-task: contract.task"
        assert attributes["fastq-queue"]["StringValue"] == "explicit"
        assert json.loads(base64.b64decode(raw["Body"]))["headers"]["id"] == \
            message.headers["id"]
        # listing them leaves them there
        assert len(broker.dead_letters("explicit")) == 1
        assert len(broker.dead_letters("explicit")) == 1
        assert [r["queue"] for r in broker.dead_letters()] == ["explicit"]


class TestSQSFifo:
    """FIFO queues: order per group, group ids, deduplication by task id, delays in place."""

    @pytest.fixture
    def broker(self, moto_endpoint, sqs_prefix):  # noqa: F811
        self.prefix = sqs_prefix
        broker = create_broker("sqs://", endpoint_url=moto_endpoint,
                               queue_name_prefix=sqs_prefix, region="us-east-1")
        yield broker
        broker.close()

    def test_order_groups_and_deduplication(self, broker, sqs_client) -> None:  # noqa: F811
        a = [make_message("jobs.fifo", MessageGroupId="a") for _ in range(4)]
        b = [make_message("jobs.fifo", MessageGroupId="b") for _ in range(3)]
        broker.publish_many(a[:2] + b + a[2:])
        broker.publish(a[0])  # sent twice (say, a producer retry): SQS keeps one
        retry = make_message("jobs.fifo", task_id=a[1].headers["id"], retries=1,
                             MessageGroupId="a")
        broker.publish(retry)  # a retry keeps the task id but is no duplicate
        url = queue_url(sqs_client, f"{self.prefix}jobs.fifo")
        attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        assert attributes["Attributes"]["FifoQueue"] == "true"
        got = []
        while batch := broker.fetch(["jobs.fifo"], 10, 0.5):
            got += batch
            broker.ack_many([d.tag for d in batch])
        ids = [(d.headers["MessageGroupId"], d.headers["id"], d.headers.get("retries"))
               for d in got]
        assert [i for i in ids if i[0] == "a"] == \
            [("a", m.headers["id"], None) for m in a] + [("a", a[1].headers["id"], 1)]
        assert [i for i in ids if i[0] == "b"] == [("b", m.headers["id"], None) for m in b]

    def test_the_queue_name_is_the_default_group(self, broker, sqs_client) -> None:  # noqa: F811
        broker.publish(make_message("plain.fifo"))
        url = queue_url(sqs_client, f"{self.prefix}plain.fifo")
        [raw] = sqs_client.receive_message(QueueUrl=url, VisibilityTimeout=0,
                                           MessageSystemAttributeNames=["MessageGroupId"]
                                           )["Messages"]
        assert raw["Attributes"]["MessageGroupId"] == "plain.fifo"

    def test_release_keeps_the_order(self, broker) -> None:
        messages = [make_message("ordered.fifo") for _ in range(3)]
        broker.publish_many(messages)
        first = broker.fetch(["ordered.fifo"], 10, 5)
        broker.release_many([d.tag for d in first])
        again = broker.fetch(["ordered.fifo"], 10, 5)
        assert [d.headers["id"] for d in again] == [m.headers["id"] for m in messages]
        broker.ack_many([d.tag for d in again])

    def test_a_delayed_message_waits_by_visibility(self, broker) -> None:
        due = time.time() + 1.5
        message = make_message("later.fifo", not_before=due)
        broker.publish(message)
        assert broker.fetch(["later.fifo"], 10, 0.5) == []
        [delivery] = broker.fetch(["later.fifo"], 10, 5)
        assert time.time() >= due - 0.01
        assert delivery.headers["id"] == message.headers["id"]
        broker.ack_many([delivery.tag])

    def test_dead_letters_go_to_a_fifo_dead_queue(self, broker, sqs_client) -> None:  # noqa: F811
        broker.publish_many([make_message("dl.fifo"), make_message("dl.fifo")])
        got = broker.fetch(["dl.fifo"], 10, 5)
        for delivery in got:
            broker.dead_letter(delivery.tag, "rejected")
        assert queue_url(sqs_client, f"{self.prefix}dl-dead.fifo")
        records = broker.dead_letters("dl.fifo")
        assert sorted(r["headers"]["id"] for r in records) == \
            sorted(d.headers["id"] for d in got)


def test_an_unreachable_endpoint_times_out_publishes_and_idles_fetches(moto_endpoint):  # noqa: F811
    import socket

    from fastq.exceptions import PublishTimeout

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = create_broker(f"sqs://127.0.0.1:{port}", publish_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(PublishTimeout, match="unreachable"):
            broker.publish(make_message("nowhere"))
        assert time.monotonic() - started < 5
        started = time.monotonic()
        assert broker.fetch(["nowhere"], 10, 0.3) == []
        assert broker.state == "reconnecting"
        assert time.monotonic() - started < 5  # past the timeout by botocore's one retry
    finally:
        broker.close()
