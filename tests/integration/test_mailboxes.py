"""Each broker's own mailbox (``Broker.mailbox``): a request sent reaches a listening
worker, and brokers that keep requests hand them to a worker that starts later."""

from __future__ import annotations

import time
import uuid

import pytest

from fastq.brokers import create_broker
from fastq.control import revoke_command
from fastq.exceptions import ConfigurationError
from tests import servers
from tests.integration.redis_support import REDIS_URL, require_redis

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: impl -> the AMQP driver of that twin
AMQP_DRIVERS = {"c": "rabbitmq-c", "py": "py-amqp"}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def broker(request, tmp_path):
    kind = request.param
    if kind == "memory":
        url = f"memory://{uuid.uuid4()}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/broker.sqlite3"
    else:
        require_redis()
        # a prefix of its own, so no other test's worker hears these requests
        url = f"{REDIS_URL}?global_keyprefix=fastqtest:{uuid.uuid4().hex[:10]}:"
    made = create_broker(url)
    yield made
    made.close()


@pytest.fixture
def amqp_broker(impl):
    """RabbitMQ through the driver of each twin: rabbitmq-c ([c]) and py-amqp ([py])."""
    servers.require("RabbitMQ")
    made = create_broker(f"{AMQP_URL}?driver={AMQP_DRIVERS[impl]}")
    yield made
    made.close()


def _receive(mailbox, want: int, timeout: float = 5.0, keep=None) -> list[dict]:
    """Up to ``want`` requests, those ``keep`` accepts if given."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(filter(keep, mailbox.receive(0.1)))
    return got


def test_a_request_reaches_a_listening_worker(broker) -> None:
    _a_request_reaches_a_listening_worker(broker)


def test_a_request_reaches_a_listening_worker_on_rabbitmq(amqp_broker) -> None:
    _a_request_reaches_a_listening_worker(amqp_broker)


def _a_request_reaches_a_listening_worker(broker) -> None:
    assert "control" in broker.capabilities
    listener = broker.mailbox(60)
    sender = broker.mailbox(60)
    try:
        listener.open(f"mailbox-{uuid.uuid4().hex[:8]}@test")
        command = revoke_command(["a", str(uuid.uuid4())])
        # RabbitMQ's pidbox exchange is one for the server: other tests' requests reach
        # this listener too, so only this one is looked for
        sender.send(command)
        assert _receive(listener, 1, keep=command.__eq__) == [command]
        assert _receive(listener, 1, timeout=0.1, keep=command.__eq__) == []  # each once
    finally:
        sender.close()
        listener.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_worker_that_starts_later_gets_the_requests_still_current(kind, tmp_path) -> None:
    url = (f"memory://{uuid.uuid4()}" if kind == "memory"
           else f"sqlite:///{tmp_path}/broker.sqlite3")
    broker = create_broker(url)
    try:
        sender = broker.mailbox(60)
        before = time.time()
        sender.send(revoke_command("early"))
        sender.close()
        late = broker.mailbox(60)
        [(command, sent_at)] = late.open("late@test")
        assert command["arguments"]["task_id"] == "early"
        assert before <= sent_at <= time.time()
        assert late.receive(0.05) == []  # what open returned is not received again
        late.close()
        forgetful = broker.mailbox(0.0001)  # requests expire almost at once
        time.sleep(0.01)
        assert forgetful.open("later@test") == []
        forgetful.close()
    finally:
        broker.close()


def test_a_broker_without_control_names_itself_and_the_way_out() -> None:
    pytest.importorskip("boto3")
    broker = create_broker("sqs://fake:fake@127.0.0.1:1")  # never connected
    assert "control" not in broker.capabilities
    with pytest.raises(ConfigurationError, match="SQSBroker .*'control' capability"):
        broker.mailbox(60)
