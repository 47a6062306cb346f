"""Each broker's own mailbox (``Broker.mailbox``): a request sent reaches a listening
worker, and brokers that keep requests hand them to a worker that starts later."""

from __future__ import annotations

import importlib.util
import os
import time
import uuid

import pytest

from fastq.brokers import create_broker
from fastq.control import revoke_command
from fastq.exceptions import ConfigurationError
from tests.integration.redis_support import REDIS_URL, require_redis

pytestmark = pytest.mark.integration

HAVE_C = (os.environ.get("FASTQ_NO_SPEEDUPS") != "1"
          and importlib.util.find_spec("fastq._speedups._amqp") is not None)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def broker_urls() -> list:
    urls = [pytest.param("memory", id="memory"), pytest.param("sqlite", id="sqlite"),
            pytest.param(f"{AMQP_URL}?driver=py-amqp", id="amqp-py-amqp"),
            pytest.param("redis", id="redis")]
    if HAVE_C:
        urls.append(pytest.param(f"{AMQP_URL}?driver=rabbitmq-c", id="amqp-rabbitmq-c"))
    return urls


@pytest.fixture(params=broker_urls())
def broker(request, tmp_path):
    url = request.param
    if url == "memory":
        url = f"memory://{uuid.uuid4()}"
    elif url == "sqlite":
        url = f"sqlite:///{tmp_path}/broker.sqlite3"
    elif url == "redis":
        require_redis()
        # a prefix of its own, so no other test's worker hears these requests
        url = f"{REDIS_URL}?global_keyprefix=fastqtest:{uuid.uuid4().hex[:10]}:"
    made = create_broker(url)
    yield made
    made.close()


def _receive(mailbox, want: int, timeout: float = 5.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(mailbox.receive(0.1))
    return got


def test_a_request_reaches_a_listening_worker(broker) -> None:
    assert "control" in broker.capabilities
    listener = broker.mailbox(60)
    sender = broker.mailbox(60)
    try:
        listener.open(f"mailbox-{uuid.uuid4().hex[:8]}@test")
        command = revoke_command(["a", str(uuid.uuid4())])
        sender.send(command)
        assert _receive(listener, 1) == [command]
        assert listener.receive(0.1) == []  # each request once
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
